//! The status and tooling endpoints of Prometheus's HTTP API that dashboards and
//! tools call besides queries: `/api/v1/status/{config,flags,runtimeinfo,tsdb}`,
//! `/api/v1/status/walreplay`, `/api/v1/targets`, `/api/v1/targets/metadata`,
//! `/api/v1/scrape_pools`, `/api/v1/alertmanagers`, `/api/v1/format_query` and
//! `/api/v1/parse_query`. Each answers in Prometheus's JSON shape with closedloop's
//! own facts; where a Prometheus concept has no counterpart here the answer says
//! so in Prometheus's terms (no scrape targets: empty lists).
//!
//! Invariants: nothing here changes state; the cardinality scan of `status/tsdb`
//! runs off the async workers and reads the store only through its public API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::RwLock;
use serde_json::{json, Value};

use super::api::{encode_success, json_body};
use super::error::ApiError;
use super::params::Params;
use super::App;

/// What the status endpoints report about the running process.
pub(crate) struct RuntimeStatus {
    started: SystemTime,
    /// The configuration file's text as last loaded successfully.
    config_text: RwLock<String>,
    /// The address the server is bound to, once it is.
    listen_address: std::sync::OnceLock<String>,
}

impl RuntimeStatus {
    pub(crate) fn new(config_path: Option<&std::path::Path>) -> Self {
        let text = match config_path {
            Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
            None => NO_CONFIG_FILE.to_owned(),
        };
        RuntimeStatus {
            started: SystemTime::now(),
            config_text: RwLock::new(text),
            listen_address: std::sync::OnceLock::new(),
        }
    }

    /// Records the address the server is bound to (once, at start).
    pub(crate) fn set_listen_address(&self, addr: String) {
        let _ = self.listen_address.set(addr);
    }

    /// Records the text of a configuration that was just applied.
    pub(crate) fn set_config_text(&self, text: String) {
        *self.config_text.write() = text;
    }
}

const NO_CONFIG_FILE: &str =
    "# closedloop runs without a configuration file: every setting has its default\n# (deploy/closedloop.yml lists them).\n";

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// `{"yaml": "..."}`: the configuration file as loaded (secrets are never in it:
/// the file names where they are).
pub(crate) async fn config(State(app): State<Arc<App>>) -> Response {
    success(json!({ "yaml": *app.status.config_text.read() }))
}

/// The command-line flags, as a map of name to value.
pub(crate) async fn flags(State(app): State<Arc<App>>) -> Response {
    let config = app
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let listen = app.status.listen_address.get().cloned().unwrap_or_default();
    success(json!({ "config": config, "listen": listen }))
}

/// Prometheus's runtime information keys, with closedloop's values: the Go
/// runtime's figures become the tokio runtime's (tasks for goroutines, worker
/// threads for `GOMAXPROCS`); there is no garbage collector and no on-disk TSDB to
/// be corrupt.
pub(crate) async fn runtimeinfo(State(app): State<Arc<App>>) -> Response {
    let rt = tokio::runtime::Handle::current().metrics();
    let last_config = app.metrics.config_last_reload_success_timestamp.get();
    success(json!({
        "startTime": rfc3339(app.status.started),
        "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": app.metrics.config_last_reload_successful.get() == 1,
        "lastConfigTime": chrono::DateTime::from_timestamp(last_config, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default(),
        "corruptionCount": 0,
        "goroutineCount": rt.num_alive_tasks(),
        "GOMAXPROCS": rt.num_workers(),
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": crate::duration::PromDuration(app.settings().retention_ms).to_string(),
    }))
}

/// Largest `limit` `status/tsdb` accepts (Prometheus's bound).
const MAX_TSDB_LIMIT: usize = 10_000;

/// Head cardinality: series by metric name, distinct values by label name, bytes
/// of values by label name, series by label pair (the top `limit` of each, 10 by
/// default), as Prometheus's `status/tsdb` (`MemPostings.Stats`).
pub(crate) async fn tsdb(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    let limit = match params.get("limit") {
        None | Some("") => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(0) => return ApiError::bad_data("limit must be a positive number").into_response(),
            Ok(n) if n > MAX_TSDB_LIMIT => {
                return ApiError::bad_data(format!("limit must not exceed {MAX_TSDB_LIMIT}"))
                    .into_response()
            }
            Ok(n) => n,
            Err(_) => return ApiError::bad_data("limit must be a positive number").into_response(),
        },
    };
    let result = app
        .read(move |app, _| encode_success(&cardinality(&app.store, limit)))
        .await;
    json_body(result)
}

/// Counts over every stored series through [`crate::storage::Store::visit`].
fn cardinality(store: &crate::storage::Store, limit: usize) -> Value {
    // label name -> value -> series count
    let mut pairs: HashMap<Arc<str>, HashMap<Arc<str>, u64>> = HashMap::new();
    let (mut series, mut chunks, mut min_t, mut max_t) = (0u64, 0u64, i64::MAX, i64::MIN);
    store.visit(&[], i64::MIN, i64::MAX, |_, labels, window| {
        series += 1;
        chunks += window.chunks() as u64;
        if let Some(t) = window.first_timestamp() {
            min_t = min_t.min(t);
        }
        if let Some((t, _)) = window.last() {
            max_t = max_t.max(t);
        }
        for l in labels.iter() {
            *pairs
                .entry(l.name.clone())
                .or_default()
                .entry(l.value.clone())
                .or_default() += 1;
        }
    });
    let mut by_metric = Vec::new();
    let mut values_by_name = Vec::new();
    let mut bytes_by_name = Vec::new();
    let mut by_pair = Vec::new();
    let mut num_pairs = 0usize;
    for (name, values) in &pairs {
        num_pairs += values.len();
        values_by_name.push((name.to_string(), values.len() as u64));
        bytes_by_name.push((
            name.to_string(),
            values.keys().map(|v| v.len() as u64).sum::<u64>(),
        ));
        for (value, &n) in values {
            if &**name == crate::storage::METRIC_NAME {
                by_metric.push((value.to_string(), n));
            }
            by_pair.push((format!("{name}={value}"), n));
        }
    }
    let top = |mut v: Vec<(String, u64)>| -> Value {
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        Value::Array(
            v.into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect(),
        )
    };
    let (min_t, max_t) = if series == 0 {
        (i64::MAX, i64::MIN)
    } else {
        (min_t, max_t)
    };
    json!({
        "headStats": {
            "numSeries": series,
            "numLabelPairs": num_pairs,
            // Closed compressed chunks plus each series' open head chunk.
            "chunkCount": chunks,
            "minTime": min_t,
            "maxTime": max_t,
        },
        "seriesCountByMetricName": top(by_metric),
        "labelValueCountByLabelName": top(values_by_name),
        "memoryInBytesByLabelName": top(bytes_by_name),
        "seriesCountByLabelValuePair": top(by_pair),
    })
}

/// closedloop receives samples by remote write and scrapes nothing: no targets,
/// in Prometheus's shape (`state` filters nothing out of nothing).
pub(crate) async fn targets() -> Response {
    success(json!({ "activeTargets": [], "droppedTargets": [] }))
}

/// No targets, so no target metadata (`/api/v1/targets/metadata`); metric metadata
/// from remote write is at `/api/v1/metadata`.
pub(crate) async fn targets_metadata() -> Response {
    success(json!([]))
}

/// No scrape configuration, so no scrape pools (`/api/v1/scrape_pools`).
pub(crate) async fn scrape_pools() -> Response {
    success(json!({ "scrapePools": [] }))
}

/// The store is in memory: there is no write-ahead log to replay at start, so
/// the replay is always complete (`/api/v1/status/walreplay`, polled by
/// Prometheus's UI while starting).
pub(crate) async fn walreplay() -> Response {
    success(json!({ "min": 0, "max": 0, "current": 0 }))
}

/// The configured Alertmanagers, in Prometheus's shape (`url` is the endpoint
/// alerts are posted to), each with closedloop's record of its health.
pub(crate) async fn alertmanagers(State(app): State<Arc<App>>) -> Response {
    let active: Vec<Value> = app
        .rules()
        .map(|r| r.alertmanagers())
        .unwrap_or_default()
        .into_iter()
        .map(|am| {
            json!({
                "url": am.url,
                "health": am.health,
                "lastError": am.last_error,
                "lastSend": am.last_send,
            })
        })
        .collect();
    success(json!({ "activeAlertmanagers": active, "droppedAlertmanagers": [] }))
}

/// Parses the `query` parameter within the engine's limits and answers `show(query,
/// limits)`'s JSON text as `data`, off the async workers (printing a deeply nested
/// query takes a while).
async fn show_query(
    app: Arc<App>,
    params: Params,
    show: fn(&str, &crate::promql::QueryLimits) -> crate::promql::Result<String>,
) -> Response {
    let query = params.get("query").unwrap_or_default().to_owned();
    let result = app
        .read(move |app, _| {
            let data = show(&query, &app.engine.options().limits)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
            Ok(format!(r#"{{"status":"success","data":{data}}}"#).into_bytes())
        })
        .await;
    json_body(result)
}

/// The query pretty-printed as Prometheus prints it (`parser.Prettify`).
pub(crate) async fn format_query(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    show_query(app, params, |q, limits| {
        crate::promql::format_query(q, limits).map(|text| Value::String(text).to_string())
    })
    .await
}

/// The query's syntax tree as JSON, in the shape of Prometheus's `parse_query`.
pub(crate) async fn parse_query(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    show_query(app, params, crate::promql::parse_query_json).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LabelSet, Store, StoreConfig};

    #[test]
    fn cardinality_counts_like_mem_postings_stats() {
        let store = Store::new(StoreConfig::default());
        for (name, job, inst) in [("up", "a", "1"), ("up", "a", "2"), ("x", "b", "1")] {
            let ls = LabelSet::from_pairs([("__name__", name), ("job", job), ("instance", inst)]);
            store.append(&ls, 1_000, 1.0).unwrap();
        }
        store
            .append(
                &LabelSet::from_pairs([("__name__", "x"), ("job", "b"), ("instance", "1")]),
                5_000,
                2.0,
            )
            .unwrap();
        let v = cardinality(&store, 2);
        assert_eq!(v["headStats"]["numSeries"], 3);
        // __name__ {up, x}, job {a, b}, instance {1, 2}.
        assert_eq!(v["headStats"]["numLabelPairs"], 6);
        assert_eq!(v["headStats"]["minTime"], 1_000);
        assert_eq!(v["headStats"]["maxTime"], 5_000);
        assert_eq!(
            v["seriesCountByMetricName"],
            json!([{"name": "up", "value": 2}, {"name": "x", "value": 1}])
        );
        // Top two by count, ties by name.
        assert_eq!(
            v["seriesCountByLabelValuePair"],
            json!([{"name": "__name__=up", "value": 2}, {"name": "instance=1", "value": 2}])
        );
        // Bytes of the distinct values: "up" + "x" = 3.
        assert_eq!(
            v["memoryInBytesByLabelName"][0],
            json!({"name": "__name__", "value": 3})
        );
    }
}
