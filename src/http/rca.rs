//! Root-cause analysis endpoints: `GET /api/v1/topology` (JSON, DOT or Mermaid),
//! `GET /api/v1/incidents` and `GET /api/v1/incidents/<id>`. They sit behind the
//! read guard with the other read routes, and like them wait for a query slot and
//! run (store reads, analyses, rendering and encoding) on the blocking pool; errors
//! become statuses in `error.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{rca_error, ApiError};
use super::params::Params;
use super::App;
use crate::rca::render::{self, View};
use crate::rca::{RcaEngine, RcaError};

fn engine(app: &App) -> Result<Arc<RcaEngine>, ApiError> {
    app.rca()
        .cloned()
        .ok_or_else(|| rca_error(&RcaError::Disabled))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A response body and its content type.
type Body = (&'static str, Vec<u8>);

fn success(data: impl serde::Serialize) -> Result<Body, ApiError> {
    serde_json::to_vec(&json!({"status": "success", "data": data}))
        .map(|body| ("application/json", body))
        .map_err(|e| ApiError::internal(format!("encoding the result: {e}")))
}

/// Runs `read` as every read route does: once a query slot is free, on the
/// blocking pool, within the query timeout.
async fn run_read(
    app: Arc<App>,
    read: impl FnOnce(&RcaEngine) -> Result<Body, ApiError> + Send + 'static,
) -> Response {
    let engine = match engine(&app) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let timeout = app.engine.options().timeout;
    match app.queries.run(timeout, move |_| read(&engine)).await {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/topology?format=json|dot|mermaid&view=all|units`.
pub(crate) async fn topology(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = Params::from_request(&uri, &headers, &Bytes::new());
    let view = match params.get("view") {
        None | Some("all") => View::All,
        Some("units") => View::Units,
        Some(v) => {
            return ApiError::bad_data(format!("invalid view {v:?}: use all or units"))
                .into_response()
        }
    };
    let format = params.get("format").unwrap_or("json").to_owned();
    if !matches!(format.as_str(), "json" | "dot" | "mermaid") {
        return ApiError::bad_data(format!(
            "invalid format {format:?}: use json, dot or mermaid"
        ))
        .into_response();
    }
    run_read(app, move |engine| {
        let topo = engine.topology();
        Ok(match format.as_str() {
            "dot" => (
                "text/vnd.graphviz; charset=utf-8",
                render::to_dot(&topo, view).into_bytes(),
            ),
            "mermaid" => (
                "text/plain; charset=utf-8",
                render::to_mermaid(&topo, view).into_bytes(),
            ),
            _ => return success(render::to_json(&topo, view)),
        })
    })
    .await
}

/// `GET /api/v1/incidents`: open incidents, newest first, with their latest analysis.
pub(crate) async fn incidents(State(app): State<Arc<App>>) -> Response {
    run_read(app, |engine| {
        success(json!({"incidents": engine.incidents(now_ms())}))
    })
    .await
}

/// `GET /api/v1/incidents/<id>`: one incident with an up-to-date analysis.
pub(crate) async fn incident(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return ApiError::bad_data(format!("invalid incident id {id:?}")).into_response();
    };
    run_read(app, move |engine| {
        let view = engine.incident(id, now_ms()).map_err(|e| rca_error(&e))?;
        success(view)
    })
    .await
}
