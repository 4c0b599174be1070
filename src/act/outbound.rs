//! One outbound HTTP request with a timeout, a bounded response body and bounded
//! retries, for the actuators that speak HTTP (dynamic config, notifications).
//!
//! Classification: 2xx is success; 404 is "not found"; other 4xx (but 408 and 429)
//! are refusals, never retried; 408, 429, 5xx and timeouts are transient and
//! retried only when the request is idempotent; a connection that could not be
//! made is always retried (nothing was sent).

use bytes::Bytes;
use prometheus::IntCounter;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use super::retry::{with_retries, Attempt, RetryPolicy};
use super::ActError;

/// A request to send, built once (rendered before the retry loop).
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    /// A JSON body, already serialized.
    pub body: Option<Bytes>,
    pub timeout: std::time::Duration,
    /// Response bodies longer than this are an error.
    pub max_response_bytes: usize,
    /// Whether repeating the request is harmless.
    pub idempotent: bool,
}

/// The client every HTTP actuator shares: one connection pool.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("closedloop/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Sends `req` until it succeeds or the retries are used up; returns the status
/// and the body of the successful answer. `what` names the request in errors (it
/// must not contain a secret URL).
pub(crate) async fn send(
    client: &reqwest::Client,
    req: &Request<'_>,
    what: &str,
    retry: &RetryPolicy,
    retries: &IntCounter,
) -> Result<(StatusCode, Bytes), ActError> {
    with_retries(
        retry,
        || retries.inc(),
        |attempt| async move {
            let mut b = client
                .request(req.method.clone(), req.url)
                .headers(req.headers.clone())
                .timeout(req.timeout);
            if let Some(body) = &req.body {
                b = b
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let ambiguous = |reason: String| {
                if req.idempotent {
                    Attempt::Transient(reason)
                } else {
                    Attempt::Final(ActError::Unavailable {
                        attempts: attempt,
                        reason: format!(
                            "{reason} (not retried: a {} is not idempotent)",
                            req.method
                        ),
                    })
                }
            };
            let resp = match b.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    return Err(Attempt::Transient(format!(
                        "{what}: cannot connect: {}",
                        bare(&e)
                    )))
                }
                Err(e) => return Err(ambiguous(format!("{what}: {}", bare(&e)))),
            };
            let status = resp.status();
            let body = read_bounded(resp, req.max_response_bytes)
                .await
                .map_err(|e| ambiguous(format!("{what}: reading the answer: {e}")))?;
            if status.is_success() {
                return Ok((status, body));
            }
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            let reason = format!("{what}: {status}: {}", text.trim());
            Err(match status.as_u16() {
                404 => Attempt::Final(ActError::NotFound(reason)),
                408 | 429 | 500..=599 => ambiguous(reason),
                _ => Attempt::Final(ActError::Refused(reason)),
            })
        },
    )
    .await
}

/// The error without the URL reqwest puts in it (a webhook URL may be a secret).
fn bare(e: &reqwest::Error) -> String {
    let e = e.to_string();
    match e.find(" for url (") {
        Some(i) => e[..i].to_owned(),
        None => e,
    }
}

/// Reads a response body, failing once it grows past `max` bytes.
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| bare(&e))? {
        if buf.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}
