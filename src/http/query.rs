//! `/api/v1/query` and `/api/v1/query_range` (GET and form POST) with Prometheus's
//! JSON: `{"status":"success","data":{"resultType":..,"result":..},"warnings":[..]}`
//! or `{"status":"error","errorType":..,"error":..}`. Queries wait for a query slot
//! and run off the async workers (`admission.rs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::params::Params;
use super::App;
use crate::duration::parse_duration;
use crate::promql::{QueryContext, QueryError, QueryResult, Value};

/// The status Prometheus answers for each error class.
fn query_error(e: QueryError) -> ApiError {
    let status = match e.kind() {
        "bad_data" => StatusCode::BAD_REQUEST,
        "execution" => StatusCode::UNPROCESSABLE_ENTITY,
        "timeout" => StatusCode::SERVICE_UNAVAILABLE,
        "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError {
        status,
        error_type: e.kind(),
        message: e.to_string(),
    }
}

/// The success envelope, serialized straight from the result: building a JSON tree
/// first would allocate a map per series and a string per point.
#[derive(serde::Serialize)]
struct Success<'a> {
    status: &'static str,
    data: &'a Value,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    infos: &'a [String],
}

fn encode(r: &QueryResult) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&Success {
        status: "success",
        data: &r.value,
        warnings: &r.warnings,
        infos: &r.infos,
    })
    .map_err(|e| ApiError::internal(format!("encoding the result: {e}")))
}

/// A step or timeout: a Prometheus duration (`15s`) or a float of seconds (`15`).
fn parse_seconds_or_duration(key: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs > 0.0 && secs < 1e15 {
            return Ok((secs * 1000.0).round() as i64);
        }
    } else if let Ok(d) = parse_duration(v) {
        return Ok(d.as_millis().min(i64::MAX as u128) as i64);
    }
    Err(ApiError::bad_data(format!(
        "invalid parameter \"{key}\": cannot parse {v:?} to a valid duration"
    )))
}

fn query_text(params: &Params) -> Result<String, ApiError> {
    match params.get("query") {
        Some(q) if !q.trim().is_empty() => Ok(q.to_owned()),
        _ => Err(ApiError::bad_data(
            "invalid parameter \"query\": empty query",
        )),
    }
}

/// Runs a query and encodes its answer off the async workers (both are heavy for a
/// large range query), once a query slot is free; cancelled if the client leaves.
async fn run_query(
    app: Arc<App>,
    f: impl FnOnce(&App, &QueryContext) -> Result<QueryResult, ApiError> + Send + 'static,
) -> Response {
    let timeout = app.engine.options().timeout;
    let gate = app.clone();
    let result = gate
        .queries
        .run(timeout, move |ctx| f(&app, ctx).and_then(|r| encode(&r)))
        .await;
    match result {
        Err(e) => e.into_response(),
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
    }
}

pub(crate) async fn instant(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    let parsed = (|| {
        let query = query_text(&params)?;
        let t = params.time_ms("time", chrono::Utc::now().timestamp_millis())?;
        Ok::<_, ApiError>((query, t))
    })();
    match parsed {
        Err(e) => e.into_response(),
        Ok((query, t)) => {
            run_query(app, move |app, ctx| {
                app.engine
                    .instant_query_with(app.store.as_ref(), &query, t, ctx)
                    .map_err(query_error)
            })
            .await
        }
    }
}

pub(crate) async fn range(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    let parsed = (|| {
        let query = query_text(&params)?;
        let need = |key: &str| {
            params
                .get(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{key}\": missing")))
        };
        need("start")?;
        need("end")?;
        let start = params.time_ms("start", 0)?;
        let end = params.time_ms("end", 0)?;
        let step = parse_seconds_or_duration("step", need("step")?)?;
        Ok::<_, ApiError>((query, start, end, step))
    })();
    match parsed {
        Err(e) => e.into_response(),
        Ok((query, start, end, step)) => {
            run_query(app, move |app, ctx| {
                app.engine
                    .range_query_with(app.store.as_ref(), &query, start, end, step, ctx)
                    .map_err(query_error)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_as_seconds_or_durations() {
        assert_eq!(parse_seconds_or_duration("step", "15").unwrap(), 15_000);
        assert_eq!(parse_seconds_or_duration("step", "0.5").unwrap(), 500);
        assert_eq!(parse_seconds_or_duration("step", "1m").unwrap(), 60_000);
        assert!(parse_seconds_or_duration("step", "0").is_err());
        assert!(parse_seconds_or_duration("step", "-1").is_err());
        assert!(parse_seconds_or_duration("step", "soon").is_err());
    }
}
