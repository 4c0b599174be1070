//! `/api/v1/rules` and `/api/v1/alerts` in Prometheus's JSON shapes (Grafana's
//! alert list reads them). Both are empty when no rules engine runs.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::App;

#[derive(serde::Deserialize)]
pub(crate) struct RulesQuery {
    /// `alert` or `record`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub(crate) async fn rules(State(app): State<Arc<App>>, Query(q): Query<RulesQuery>) -> Response {
    if let Some(k) = &q.kind {
        if k != "alert" && k != "record" {
            return super::error::ApiError::bad_data(format!(
                "invalid rule type {k:?}: use alert or record"
            ))
            .into_response();
        }
    }
    let data = match app.rules() {
        Some(m) => m.rules_json(q.kind.as_deref()),
        None => json!({"groups": []}),
    };
    Json(json!({"status": "success", "data": data})).into_response()
}

pub(crate) async fn alerts(State(app): State<Arc<App>>) -> Response {
    let data = match app.rules() {
        Some(m) => m.alerts_json(),
        None => json!({"alerts": []}),
    };
    Json(json!({"status": "success", "data": data})).into_response()
}
