//! Root-cause analysis endpoints: `GET /api/v1/topology` (JSON, DOT or Mermaid),
//! `GET /api/v1/incidents` and `GET /api/v1/incidents/<id>`. Analyses run on the
//! blocking pool; errors become statuses in `error.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{rca_error, ApiError};
use super::params::Params;
use super::App;
use crate::rca::render::{self, View};
use crate::rca::{RcaEngine, RcaError};

fn engine(app: &App) -> Result<Arc<RcaEngine>, ApiError> {
    app.rca().cloned().ok_or_else(|| rca_error(&RcaError::Disabled))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("analysis task failed: {e}")))
}

/// `GET /api/v1/topology?format=json|dot|mermaid&view=all|units`.
pub(crate) async fn topology(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    let params = Params::from_request(&uri, &headers, &Bytes::new());
    let result = (|| {
        let engine = engine(&app)?;
        let format = params.get("format").unwrap_or("json");
        let view = match params.get("view") {
            None | Some("all") => View::All,
            Some("units") => View::Units,
            Some(v) => {
                return Err(ApiError::bad_data(format!(
                    "invalid view {v:?}: use all or units"
                )))
            }
        };
        let topo = engine.topology();
        Ok(match format {
            "json" => Json(json!({"status": "success", "data": render::to_json(&topo, view)}))
                .into_response(),
            "dot" => (
                [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
                render::to_dot(&topo, view),
            )
                .into_response(),
            "mermaid" => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                render::to_mermaid(&topo, view),
            )
                .into_response(),
            f => {
                return Err(ApiError::bad_data(format!(
                    "invalid format {f:?}: use json, dot or mermaid"
                )))
            }
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/incidents`: open incidents, newest first, with their latest analysis.
pub(crate) async fn incidents(State(app): State<Arc<App>>) -> Response {
    let result = async {
        let engine = engine(&app)?;
        let list = blocking(move || engine.incidents(now_ms())).await?;
        Ok::<_, ApiError>(Json(json!({"status": "success", "data": {"incidents": list}})))
    }
    .await;
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// `GET /api/v1/incidents/<id>`: one incident with an up-to-date analysis.
pub(crate) async fn incident(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let result = async {
        let engine = engine(&app)?;
        let id: u64 = id
            .parse()
            .map_err(|_| ApiError::bad_data(format!("invalid incident id {id:?}")))?;
        let view = blocking(move || engine.incident(id, now_ms()))
            .await?
            .map_err(|e| rca_error(&e))?;
        Ok::<_, ApiError>(Json(json!({"status": "success", "data": view})))
    }
    .await;
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}
