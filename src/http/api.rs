//! The Prometheus-compatible read API (series, labels, label values, build info,
//! metadata), health and readiness, `/metrics`, and `/-/reload`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::params::Params;
use super::App;
use crate::storage::{LabelSet, Matcher, Store};

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

/// The `match[]` selectors of a request, each expanded into its alternatives.
fn matcher_sets(params: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut sets = Vec::new();
    for m in params.all("match[]") {
        sets.extend(
            crate::promql::parse_selector(m).map_err(|e| ApiError::bad_data(e.to_string()))?,
        );
    }
    Ok(sets)
}

fn time_range(params: &Params) -> Result<(i64, i64), ApiError> {
    let start = params.time_ms("start", i64::MIN)?;
    let end = params.time_ms("end", i64::MAX)?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    Ok((start, end))
}

fn labels_json(labels: &LabelSet) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|l| (l.name.to_string(), Value::String(l.value.to_string())))
        .collect();
    Value::Object(map)
}

/// The shape every read endpoint shares: parse `match[]`, `start` and `end`, run
/// `read` and encode its answer off the async workers once a query slot is free
/// (selections over many series and their JSON take a while).
async fn read_endpoint(
    app: Arc<App>,
    params: Params,
    require_match: bool,
    read: impl FnOnce(&Store, &[Vec<Matcher>], i64, i64) -> Vec<Value> + Send + 'static,
) -> Response {
    let parsed = (|| {
        let sets = matcher_sets(&params)?;
        if require_match && sets.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (start, end) = time_range(&params)?;
        Ok((sets, start, end))
    })();
    let (sets, start, end) = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let timeout = app.engine.options().timeout;
    let gate = app.clone();
    let result = gate
        .queries
        .run(timeout, move |_| {
            let values = read(&app.store, &sets, start, end);
            serde_json::to_vec(&json!({"status": "success", "data": values}))
                .map_err(|e| ApiError::internal(format!("encoding the result: {e}")))
        })
        .await;
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The union of `f` over the matcher sets, or `f(None)` (no filter) when none is given.
fn union_over<T: Ord>(
    sets: &[Vec<Matcher>],
    f: impl Fn(Option<&[Matcher]>) -> BTreeSet<T>,
) -> BTreeSet<T> {
    if sets.is_empty() {
        return f(None);
    }
    sets.iter().flat_map(|set| f(Some(set))).collect()
}

fn strings(set: BTreeSet<Arc<str>>) -> Vec<Value> {
    set.into_iter()
        .map(|v| Value::String(v.to_string()))
        .collect()
}

pub(crate) async fn series(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    read_endpoint(app, params, true, |store, sets, start, end| {
        let all: BTreeSet<LabelSet> = sets
            .iter()
            .flat_map(|set| store.series(set, start, end))
            .collect();
        all.iter().map(labels_json).collect()
    })
    .await
}

pub(crate) async fn labels(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    read_endpoint(app, params, false, |store, sets, start, end| {
        strings(union_over(sets, |set| store.label_names(set, start, end)))
    })
    .await
}

pub(crate) async fn label_values(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if name.is_empty() {
        return ApiError::bad_data("invalid label name: empty").into_response();
    }
    let params = Params::from_request(&uri, &headers, &Bytes::new());
    read_endpoint(app, params, false, move |store, sets, start, end| {
        strings(union_over(sets, |set| {
            store.label_values(&name, set, start, end)
        }))
    })
    .await
}

/// What Grafana reads to learn the server's flavour and version.
pub(crate) async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "closedloop",
    }))
}

/// Metric metadata is not collected (remote-write 1.0 metadata is ignored): an empty
/// object, as Prometheus returns when it knows no metadata.
pub(crate) async fn metadata() -> Response {
    success(json!({}))
}

/// Current anomaly incidents: one per fault, with member series and scores.
pub(crate) async fn anomalies(State(app): State<Arc<App>>) -> Response {
    let incidents = app
        .analyzer
        .incidents(chrono::Utc::now().timestamp_millis());
    success(json!({ "incidents": incidents }))
}

pub(crate) async fn healthy() -> &'static str {
    "closedloop is Healthy.\n"
}

pub(crate) async fn ready() -> &'static str {
    "closedloop is Ready.\n"
}

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    // The store's figures walk every series: off the async workers.
    let text = match tokio::task::spawn_blocking(move || app.metrics.render(app.store.stats()))
        .await
    {
        Ok(text) => text,
        Err(e) => return ApiError::internal(format!("metrics task failed: {e}")).into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn reload(State(app): State<Arc<App>>) -> Response {
    // Reading and validating rule files is blocking work: off the async workers.
    match app.reload_blocking().await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}
