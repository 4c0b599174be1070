//! `/api/v1/rules` and `/api/v1/alerts` in Prometheus's JSON shapes (Grafana's
//! alert list reads them). Both are empty when no rules engine runs.
//! `/api/v1/rules` takes Prometheus's filters: `type=alert|record`, `rule_name[]`,
//! `rule_group[]`, `file[]` and `exclude_alerts`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::params::Params;
use super::App;
use crate::rules::manager::RuleFilter;

pub(crate) async fn rules(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let params = Params::from_request(&uri, &Default::default(), &Default::default());
    let kind = params.get("type").map(str::to_owned);
    if let Some(k) = &kind {
        if k != "alert" && k != "record" {
            return super::error::ApiError::bad_data(format!(
                "invalid rule type {k:?}: use alert or record"
            ))
            .into_response();
        }
    }
    let exclude_alerts = match params.get("exclude_alerts") {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return super::error::ApiError::bad_data(format!(
                "invalid exclude_alerts {other:?}: use true or false"
            ))
            .into_response()
        }
    };
    let owned = |k: &str| -> Vec<String> { params.all(k).into_iter().map(str::to_owned).collect() };
    let filter = RuleFilter {
        kind,
        rule_names: owned("rule_name[]"),
        groups: owned("rule_group[]"),
        files: owned("file[]"),
        exclude_alerts,
    };
    let data = match app.rules() {
        Some(m) => m.rules_json(&filter),
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
