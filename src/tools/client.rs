//! `closedloop approvals …` and `closedloop actions …`: a small client of a running
//! service's `/api/v1/approvals` and `/api/v1/actions` endpoints.

use std::time::Duration;

use serde_json::Value;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service could not be reached.
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    /// The service answered with an error.
    #[error("{url}: {status}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
    },
    /// The credentials could not be read.
    #[error("{0}")]
    Credentials(String),
}

/// How to reach the service.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    /// `Authorization` header value of changes (approve, reject, roll back): the
    /// admin credential.
    pub authorization: Option<String>,
    /// `Authorization` header value of reads (`auth.read`); `None`: the admin one.
    pub read_authorization: Option<String>,
    http: reqwest::Client,
}

/// An `Authorization` header value from a bearer token or a basic-auth user and
/// password (at most one of them).
pub fn authorization(
    bearer: Option<String>,
    basic: Option<(String, String)>,
) -> Result<Option<String>, ClientError> {
    use base64::Engine as _;
    match (bearer, basic) {
        (Some(_), Some(_)) => Err(ClientError::Credentials(
            "give a bearer token or a basic-auth user, not both".into(),
        )),
        (Some(t), None) => Ok(Some(format!("Bearer {}", t.trim()))),
        (None, Some((u, p))) => Ok(Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ))),
        (None, None) => Ok(None),
    }
}

impl Client {
    /// `base`: the service URL; `admin` and `read`: `Authorization` header values
    /// (see [`authorization`]); reads use `admin` when `read` is `None`.
    pub fn new(
        base: &str,
        admin: Option<String>,
        read: Option<String>,
    ) -> Result<Client, ClientError> {
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            authorization: admin,
            read_authorization: read,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|source| ClientError::Http {
                    url: base.to_string(),
                    source,
                })?,
        })
    }

    async fn call(
        &self,
        post: bool,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = if post {
            self.http.post(&url).form(form)
        } else {
            self.http.get(&url).query(form)
        };
        let credential = match (post, &self.read_authorization) {
            (false, Some(read)) => Some(read),
            _ => self.authorization.as_ref(),
        };
        if let Some(a) = credential {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let http = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(http)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) || body["status"] != "success" {
            let message = body["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| text.trim().to_string());
            return Err(ClientError::Api {
                url,
                status,
                message,
            });
        }
        Ok(body["data"].clone())
    }

    /// `GET /api/v1/approvals`, as a table.
    pub async fn approvals(&self) -> Result<String, ClientError> {
        let data = self.call(false, "/api/v1/approvals", &[]).await?;
        Ok(table(
            data["approvals"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            true,
        ))
    }

    /// `POST /api/v1/approvals/<id>/approve|reject`.
    pub async fn decide(
        &self,
        id: i64,
        approve: bool,
        by: Option<&str>,
        reason: Option<&str>,
    ) -> Result<String, ClientError> {
        let verb = if approve { "approve" } else { "reject" };
        let mut form = Vec::new();
        if let Some(b) = by {
            form.push(("by", b));
        }
        if let Some(r) = reason {
            form.push(("reason", r));
        }
        let data = self
            .call(true, &format!("/api/v1/approvals/{id}/{verb}"), &form)
            .await?;
        Ok(describe(&data["action"]))
    }

    /// `GET /api/v1/actions` with filters (`key=value`), as a table.
    pub async fn actions(&self, filters: &[(String, String)]) -> Result<String, ClientError> {
        let form: Vec<(&str, &str)> = filters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let data = self.call(false, "/api/v1/actions", &form).await?;
        let mut out = table(
            data["actions"].as_array().map(Vec::as_slice).unwrap_or(&[]),
            false,
        );
        if let Some(n) = data["next"].as_i64() {
            out.push_str(&format!("more: --filter before={n}\n"));
        }
        Ok(out)
    }

    /// `GET /api/v1/actions/<id>`: the action and its audit events.
    pub async fn show(&self, id: i64) -> Result<String, ClientError> {
        let data = self
            .call(false, &format!("/api/v1/actions/{id}"), &[])
            .await?;
        let mut out = describe(&data["action"]);
        for e in data["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            out.push_str(&format!(
                "  {}  {:<20} {:<24} {}\n",
                time(&e["at_ms"]),
                e["kind"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
                e["detail"]
            ));
        }
        Ok(out)
    }

    /// `POST /api/v1/actions/<id>/rollback`.
    pub async fn rollback(&self, id: i64, by: Option<&str>) -> Result<String, ClientError> {
        let form: Vec<(&str, &str)> = by.map(|b| vec![("by", b)]).unwrap_or_default();
        let data = self
            .call(true, &format!("/api/v1/actions/{id}/rollback"), &form)
            .await?;
        Ok(describe(&data["action"]))
    }
}

fn time(v: &Value) -> String {
    v.as_i64()
        .map(crate::rules::notifier::rfc3339)
        .unwrap_or_default()
}

/// One action in a few lines.
fn describe(a: &Value) -> String {
    let mut s = format!(
        "action {}: {} {} — {}{}\n",
        a["id"],
        a["kind"].as_str().unwrap_or(""),
        a["target"].as_str().unwrap_or(""),
        a["outcome"].as_str().unwrap_or(""),
        a["verification"]
            .as_str()
            .map(|v| format!(", verification {v}"))
            .unwrap_or_default()
    );
    s.push_str(&format!(
        "  rule {} ({}), created {}\n",
        a["cause"]["rule"].as_str().unwrap_or(""),
        a["cause"]["trigger"].as_str().unwrap_or(""),
        time(&a["created_ms"])
    ));
    if let Some(r) = a["reason"].as_str() {
        s.push_str(&format!("  reason: {r}\n"));
    }
    if let Some(b) = a["decided_by"].as_str() {
        s.push_str(&format!("  decided by: {b}\n"));
    }
    if let Some(e) = a["effect"]["summary"].as_str() {
        s.push_str(&format!("  effect: {e}\n"));
    }
    if !a["effect"]["undo"].is_null() && a["rolled_back_by"].is_null() {
        s.push_str(&format!(
            "  can be rolled back: closedloop actions rollback {}\n",
            a["id"]
        ));
    }
    s
}

fn table(rows: &[Value], approvals: bool) -> String {
    if rows.is_empty() {
        return if approvals {
            "no actions are waiting for approval\n".into()
        } else {
            "no actions\n".into()
        };
    }
    let mut out = format!(
        "{:<6} {:<24} {:<17} {:<20} {:<36} {}\n",
        "ID",
        "CREATED",
        "OUTCOME",
        "ACTION",
        "TARGET",
        if approvals {
            "EXPIRES / RULE"
        } else {
            "RULE / REASON"
        }
    );
    for a in rows {
        let extra = if approvals {
            format!(
                "{}  {}",
                time(&a["approval_expires_ms"]),
                a["cause"]["rule"].as_str().unwrap_or("")
            )
        } else {
            format!(
                "{}{}",
                a["cause"]["rule"].as_str().unwrap_or(""),
                a["reason"]
                    .as_str()
                    .map(|r| format!("  {r}"))
                    .unwrap_or_default()
            )
        };
        out.push_str(&format!(
            "{:<6} {:<24} {:<17} {:<20} {:<36} {}\n",
            a["id"],
            time(&a["created_ms"]),
            a["outcome"].as_str().unwrap_or(""),
            a["kind"].as_str().unwrap_or(""),
            a["target"].as_str().unwrap_or(""),
            extra
        ));
    }
    out
}
