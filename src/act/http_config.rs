//! Dynamic configuration over HTTP: send a JSON body to a configured endpoint
//! (switch a provider, change a rate limit, enter degrade mode). When the endpoint
//! has a `get_url`, the current value is read first and recorded, and the undo
//! action sends it back; if it cannot be read, nothing is changed.
//!
//! Must never: take a URL or a secret from an action (actions name an endpoint;
//! URL, method, headers and credentials come from the service config); retry a
//! POST after an ambiguous failure; read an unbounded response.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Value};

use super::config::{timeout, HttpEndpointConfig, HttpMethod};
use super::outbound::{send, Request};
use super::retry::RetryPolicy;
use super::{ActError, Action, Approved, Effect};
use crate::config::Credentials;

/// One configured endpoint, its secrets loaded.
struct Endpoint {
    url: String,
    method: HttpMethod,
    get_url: Option<String>,
    headers: HeaderMap,
    timeout: Duration,
    max_response_bytes: usize,
}

/// Sends configuration changes to the configured endpoints.
pub struct HttpConfigActuator {
    endpoints: BTreeMap<String, Endpoint>,
    client: reqwest::Client,
    retry: RetryPolicy,
    retries: IntCounter,
}

fn sensitive(value: &str, key: &str) -> Result<HeaderValue, (String, String)> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| (key.to_owned(), "not a valid header value".to_owned()))?;
    v.set_sensitive(true);
    Ok(v)
}

impl HttpConfigActuator {
    /// Builds the endpoints; header secrets and credentials are read now.
    pub fn new(
        endpoints: &BTreeMap<String, HttpEndpointConfig>,
        retry: RetryPolicy,
        retries: IntCounter,
    ) -> Result<Self, (String, String)> {
        let mut built = BTreeMap::new();
        for (name, e) in endpoints {
            let key = format!("actuators.http_config.{name}");
            let mut headers = HeaderMap::new();
            for (h, v) in &e.headers {
                let hkey = format!("{key}.headers.{h}");
                let (value, secret) = v.resolve(&hkey).map_err(|r| (hkey.clone(), r))?;
                let name = HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| (hkey.clone(), "not a valid header name".to_owned()))?;
                let value = if secret {
                    sensitive(&value, &hkey)?
                } else {
                    HeaderValue::from_str(&value)
                        .map_err(|_| (hkey, "not a valid header value".to_owned()))?
                };
                headers.insert(name, value);
            }
            if let Some(auth) = &e.auth {
                let akey = format!("{key}.auth");
                let value = match auth.resolve(&akey).map_err(|r| (akey.clone(), r))? {
                    Credentials::Bearer(t) => format!("Bearer {}", t.expose()),
                    Credentials::Basic { username, password } => {
                        use base64::Engine;
                        let raw = format!("{username}:{}", password.expose());
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(raw)
                        )
                    }
                };
                headers.insert(AUTHORIZATION, sensitive(&value, &akey)?);
            }
            built.insert(
                name.clone(),
                Endpoint {
                    url: e.url.clone(),
                    method: e.method,
                    get_url: e.get_url.clone(),
                    headers,
                    timeout: timeout(&e.timeout),
                    max_response_bytes: e.max_response_bytes,
                },
            );
        }
        Ok(HttpConfigActuator {
            endpoints: built,
            client: super::outbound::client(),
            retry,
            retries,
        })
    }

    fn endpoint(&self, name: &str) -> Result<&Endpoint, ActError> {
        self.endpoints
            .get(name)
            .ok_or_else(|| ActError::NotConfigured(format!("http_config endpoint {name:?}")))
    }

    /// The endpoint's current value (`None` when it has no `get_url`).
    async fn current(&self, name: &str, e: &Endpoint) -> Result<Option<Value>, ActError> {
        let Some(url) = &e.get_url else {
            return Ok(None);
        };
        let req = Request {
            method: Method::GET,
            url,
            headers: &e.headers,
            body: None,
            timeout: e.timeout,
            max_response_bytes: e.max_response_bytes,
            idempotent: true,
        };
        let what = format!("reading the current value of {name}");
        let (_, body) = send(&self.client, &req, &what, &self.retry, &self.retries).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|err| ActError::Refused(format!("{what}: not JSON: {err}")))
    }
}

#[async_trait::async_trait]
impl super::Actuator for HttpConfigActuator {
    fn name(&self) -> &'static str {
        "http_config"
    }

    fn handles(&self, action: &Action) -> bool {
        matches!(action, Action::HttpConfig { endpoint, .. } if self.endpoints.contains_key(endpoint))
    }

    async fn execute(&self, approved: &Approved) -> Result<Effect, ActError> {
        let Action::HttpConfig { endpoint, body } = approved.action() else {
            return Err(ActError::NotConfigured(approved.action().kind().to_string()));
        };
        let e = self.endpoint(endpoint)?;
        // Recorded first: without it there is no undo, so a failure here stops the
        // change.
        let previous = self.current(endpoint, e).await?;
        if previous.as_ref() == Some(body) {
            return Ok(Effect {
                summary: format!("http_config {endpoint}: already as asked"),
                details: json!({"previous": previous}),
                undo: None,
            });
        }
        let bytes = serde_json::to_vec(body)
            .map(Bytes::from)
            .map_err(|err| ActError::Invalid(err.to_string()))?;
        let (method, idempotent) = match e.method {
            HttpMethod::Put => (Method::PUT, true),
            HttpMethod::Post => (Method::POST, false),
        };
        let req = Request {
            method: method.clone(),
            url: &e.url,
            headers: &e.headers,
            body: Some(bytes),
            timeout: e.timeout,
            max_response_bytes: e.max_response_bytes,
            idempotent,
        };
        let what = format!("{method} to http_config {endpoint}");
        let (status, answer) = send(&self.client, &req, &what, &self.retry, &self.retries).await?;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        Ok(Effect {
            summary: format!("http_config {endpoint}: {method} answered {status}"),
            details: json!({
                "status": status.as_u16(),
                "previous": previous,
                "sent": body,
                "answer": answer,
            }),
            undo: previous.map(|p| Action::HttpConfig {
                endpoint: endpoint.clone(),
                body: p,
            }),
        })
    }

    async fn observe(&self, action: &Action) -> Result<Value, ActError> {
        let Action::HttpConfig { endpoint, .. } = action else {
            return Err(ActError::NotConfigured(action.kind().to_string()));
        };
        let e = self.endpoint(endpoint)?;
        Ok(match self.current(endpoint, e).await? {
            Some(v) => json!({"current": v}),
            None => json!({"observable": false}),
        })
    }
}

