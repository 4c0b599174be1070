//! The audit log and the approval queue over HTTP:
//! - `GET /api/v1/actions` pages through the audit log, newest first, with filters
//!   `rule`, `target`, `outcome`, `kind`, `start`/`end` (RFC 3339 or Unix seconds),
//!   `limit` (default 100, at most 1000) and `before` (the previous page's `next`);
//! - `GET /api/v1/actions/<id>`: one action with its audit events;
//! - `GET /api/v1/approvals`: the actions waiting for a human;
//! - `POST /api/v1/approvals/<id>/approve|reject` and
//!   `POST /api/v1/actions/<id>/rollback` (behind the admin guard) with `by` (who;
//!   default: the basic-auth user, else `admin`) and, for reject, `reason`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use super::error::ApiError;
use super::params::Params;
use super::App;
use crate::act::ActionKind;
use crate::decide::Decide;
use crate::knowledge::{ActionQuery, AuditId, Outcome};

/// Most actions one page may hold.
const MAX_LIMIT: usize = 1000;

fn decide(app: &App) -> Result<Arc<Decide>, ApiError> {
    app.decide()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("the decide stage is not running"))
}

fn success(data: serde_json::Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

/// Runs a knowledge-store read like every other read: in a `query.max_concurrency`
/// slot on the blocking pool, under the query timeout.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce() -> Result<T, crate::decide::DecideError> + Send + 'static,
) -> Result<T, ApiError> {
    let timeout = app.engine.options().timeout;
    app.queries
        .run(timeout, move |_| f().map_err(ApiError::from))
        .await
}

fn query(params: &Params) -> Result<ActionQuery, ApiError> {
    let opt = |k: &str| params.get(k).filter(|v| !v.is_empty()).map(str::to_owned);
    let outcome = match opt("outcome") {
        None => None,
        Some(o) => Some(Outcome::parse(&o).ok_or_else(|| {
            let known: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            ApiError::bad_data(format!(
                "invalid outcome {o:?} (one of {})",
                known.join(", ")
            ))
        })?),
    };
    let kind = match opt("kind") {
        None => None,
        Some(k) => Some(
            ActionKind::ALL
                .into_iter()
                .find(|x| x.as_str() == k)
                .ok_or_else(|| ApiError::bad_data(format!("invalid kind {k:?}")))?,
        ),
    };
    let limit = match opt("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_data(format!("invalid limit {l:?} (1..{MAX_LIMIT})")))?,
    };
    let before = match opt("before") {
        None => None,
        Some(b) => Some(AuditId(b.parse::<i64>().map_err(|_| {
            ApiError::bad_data(format!("invalid before {b:?}: an action id"))
        })?)),
    };
    let start = params.time_ms("start", i64::MIN)?;
    let end = params.time_ms("end", i64::MAX)?;
    if end < start {
        return Err(ApiError::bad_data("end must not be before start"));
    }
    Ok(ActionQuery {
        rule: opt("rule"),
        target: opt("target"),
        outcome,
        kind,
        from_ms: (start != i64::MIN).then_some(start),
        to_ms: (end != i64::MAX).then_some(end),
        before,
        limit,
    })
}

pub(crate) async fn list(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let params = Params::from_request(&uri, &HeaderMap::new(), &Bytes::new());
    let r = async {
        let q = query(&params)?;
        let d = decide(&app)?;
        let limit = q.limit;
        let actions = blocking(&app, move || d.actions(&q)).await?;
        let next = (actions.len() == limit)
            .then(|| actions.last().map(|a| a.id.0))
            .flatten();
        Ok::<_, ApiError>(success(json!({ "actions": actions, "next": next })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

fn parse_id(id: &str) -> Result<AuditId, ApiError> {
    id.parse::<i64>()
        .map(AuditId)
        .map_err(|_| ApiError::bad_data(format!("invalid action id {id:?}")))
}

pub(crate) async fn one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let r = async {
        let id = parse_id(&id)?;
        let d = decide(&app)?;
        let (action, events) = blocking(&app, move || d.action(id)).await?;
        Ok::<_, ApiError>(success(json!({ "action": action, "events": events })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn approvals(State(app): State<Arc<App>>) -> Response {
    let r = async {
        let d = decide(&app)?;
        let pending = blocking(&app, move || d.approvals()).await?;
        Ok::<_, ApiError>(success(json!({ "approvals": pending })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// Who is asking: `by`, else the basic-auth user, else `admin`.
fn requester(params: &Params, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(by) = params.get("by").filter(|b| !b.trim().is_empty()) {
        if by.len() > 128 || by.chars().any(char::is_control) {
            return Err(ApiError::bad_data("by: at most 128 printable characters"));
        }
        return Ok(by.trim().to_string());
    }
    let basic_user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()));
    Ok(basic_user.unwrap_or_else(|| "admin".into()))
}

/// The action id, who asks, and the parameters of an admin POST.
fn admin_request(
    id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(AuditId, String, Params), ApiError> {
    let params = Params::from_request(uri, headers, body);
    let id = parse_id(id)?;
    let by = requester(&params, headers)?;
    Ok((id, by, params))
}

pub(crate) async fn decide_approval(
    State(app): State<Arc<App>>,
    Path((id, verb)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, by, params) = admin_request(&id, &uri, &headers, &body)?;
        let d = decide(&app)?;
        let rec = match verb.as_str() {
            "approve" => d.approve(id, by).await?,
            "reject" => {
                let reason = params
                    .get("reason")
                    .unwrap_or("")
                    .chars()
                    .take(1024)
                    .collect();
                d.reject(id, by, reason).await?
            }
            other => {
                return Err(ApiError::not_found(format!(
                    "unknown approval verb {other:?}: use approve or reject"
                )))
            }
        };
        Ok::<_, ApiError>(success(json!({ "action": rec })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn rollback(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, by, _) = admin_request(&id, &uri, &headers, &body)?;
        let d = decide(&app)?;
        let rec = d.rollback(id, by).await?;
        Ok::<_, ApiError>(success(json!({ "action": rec })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}
