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
            return Err(ActError::NotConfigured(
                approved.action().kind().to_string(),
            ));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::IntCounter;
    use serde_json::json;

    use super::*;
    use crate::act::config::{HeaderValueConfig, SecretSourceConfig};
    use crate::act::testing::peers::WebhookReceiver;
    use crate::act::Actuator;
    use crate::duration::PromDuration;
    use crate::knowledge::IntentReceipt;

    fn endpoint(url: String, get_url: Option<String>, method: HttpMethod) -> HttpEndpointConfig {
        HttpEndpointConfig {
            url,
            method,
            get_url,
            headers: BTreeMap::new(),
            auth: None,
            timeout: PromDuration::from_secs(10),
            max_response_bytes: 1 << 20,
        }
    }

    fn actuator(endpoints: Vec<(&str, HttpEndpointConfig)>) -> (HttpConfigActuator, IntCounter) {
        let retries = IntCounter::new("r", "r").unwrap();
        let retry = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        };
        let map = endpoints
            .into_iter()
            .map(|(n, e)| (n.to_owned(), e))
            .collect();
        (
            HttpConfigActuator::new(&map, retry, retries.clone()).unwrap(),
            retries,
        )
    }

    fn send_config(endpoint: &str, body: Value) -> Approved {
        Approved::new(
            Action::HttpConfig {
                endpoint: endpoint.into(),
                body,
            },
            IntentReceipt::for_test(5),
        )
    }

    #[tokio::test]
    async fn the_previous_value_is_recorded_and_the_undo_puts_it_back() {
        let rx = WebhookReceiver::start();
        rx.set_current(json!({"limit": 100}));
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("api-key");
        std::fs::write(&key, "k3y\n").unwrap();
        let mut e = endpoint(
            rx.url("/config/ratelimit"),
            Some(rx.url("/config/ratelimit")),
            HttpMethod::Put,
        );
        e.headers
            .insert("X-Team".into(), HeaderValueConfig::Plain("sre".into()));
        e.headers.insert(
            "X-Api-Key".into(),
            HeaderValueConfig::Secret(SecretSourceConfig {
                file: Some(key),
                env: None,
            }),
        );
        let (a, _) = actuator(vec![("ratelimit", e)]);
        let effect = a
            .execute(&send_config("ratelimit", json!({"limit": 10})))
            .await
            .unwrap();
        assert_eq!(rx.current(), json!({"limit": 10}));
        let got = rx.received();
        assert_eq!(
            got.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
            ["GET", "PUT"]
        );
        assert_eq!(got[1].content_type.as_deref(), Some("application/json"));
        assert_eq!(got[1].headers["x-api-key"], "k3y");
        assert_eq!(got[1].headers["x-team"], "sre");
        assert_eq!(effect.details["previous"], json!({"limit": 100}));
        let undo = effect.undo.unwrap();
        assert_eq!(
            undo,
            Action::HttpConfig {
                endpoint: "ratelimit".into(),
                body: json!({"limit": 100})
            }
        );
        a.execute(&Approved::new(undo, IntentReceipt::for_test(6)))
            .await
            .unwrap();
        assert_eq!(rx.current(), json!({"limit": 100}));
        // Observe reads the current value.
        let o = a
            .observe(send_config("ratelimit", json!({})).action())
            .await
            .unwrap();
        assert_eq!(o, json!({"current": {"limit": 100}}));
    }

    #[tokio::test]
    async fn nothing_changes_when_the_previous_value_cannot_be_read() {
        let rx = WebhookReceiver::start();
        rx.answer_with(&[404]);
        let (a, _) = actuator(vec![(
            "mode",
            endpoint(rx.url("/mode"), Some(rx.url("/mode")), HttpMethod::Put),
        )]);
        let r = a
            .execute(&send_config("mode", json!({"degraded": true})))
            .await;
        assert!(matches!(r, Err(ActError::NotFound(_))), "{r:?}");
        assert_eq!(rx.received().len(), 1, "only the GET");
    }

    #[tokio::test]
    async fn put_is_retried_after_5xx_post_is_not() {
        let rx = WebhookReceiver::start();
        let (a, retries) = actuator(vec![
            ("put", endpoint(rx.url("/put"), None, HttpMethod::Put)),
            ("post", endpoint(rx.url("/post"), None, HttpMethod::Post)),
        ]);
        rx.answer_with(&[503]);
        let e = a
            .execute(&send_config("put", json!({"a": 1})))
            .await
            .unwrap();
        assert_eq!(e.undo, None, "no get_url: no undo");
        assert_eq!(rx.received().len(), 2);
        assert_eq!(retries.get(), 1);
        rx.answer_with(&[503]);
        let r = a.execute(&send_config("post", json!({"a": 1}))).await;
        assert!(
            matches!(r, Err(ActError::Unavailable { attempts: 1, .. })),
            "{r:?}"
        );
        assert_eq!(rx.received().len(), 3, "the POST was sent once");
        // A POST whose connection cannot be made is retried (nothing was sent).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (b, retries) = actuator(vec![(
            "down",
            endpoint(
                format!("http://127.0.0.1:{closed}/x"),
                None,
                HttpMethod::Post,
            ),
        )]);
        let r = b.execute(&send_config("down", json!({}))).await;
        assert!(
            matches!(r, Err(ActError::Unavailable { attempts: 3, .. })),
            "{r:?}"
        );
        assert_eq!(retries.get(), 2);
        assert!(!b.handles(send_config("other", json!({})).action()));
    }
}
