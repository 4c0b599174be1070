//! Notifications: one typed payload per receiver kind, built from the typed
//! [`Notification`] before sending (never inside the retry loop), sent to the
//! channel the service config names:
//!
//! - `webhook`: closedloop's own JSON ([`WebhookPayload`]);
//! - `slack`: an incoming-webhook message (`text` plus one attachment with colour,
//!   title, link and fields), which Slack and Slack-compatible receivers accept;
//! - `pagerduty`: an Events API v2 event, `trigger` for firing and `resolve` for
//!   resolved, with a `dedup_key` derived from the title and labels so the
//!   resolve closes the incident the trigger opened;
//! - `alertmanager`: one alert in Alertmanager's API v2 shape (the rules
//!   notifier's [`AmAlert`]), so Alertmanager routes, groups and silences it.
//!
//! Sends are retried on transient errors (timeouts, 408/429/5xx, connection
//! errors): PagerDuty's dedup key and Alertmanager's label identity make a repeat
//! harmless; a chat message may at worst appear twice. Each channel counts its
//! sends in `closedloop_actuator_notifications_total{channel,kind,result}`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use super::config::{timeout, NotifyChannelConfig, NotifyKind};
use super::outbound::{send, Request};
use super::retry::RetryPolicy;
use super::{ActError, Action, Approved, Effect, Notification};
use crate::config::Secret;
use crate::rules::notifier::{alerts_endpoint, rfc3339, AmAlert};

/// Largest answer read from a receiver.
const MAX_RESPONSE_BYTES: usize = 64 << 10;
/// PagerDuty limits `payload.summary` to 1024 characters and `dedup_key` to 255.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// A configured channel, its secrets loaded.
struct Channel {
    kind: NotifyKind,
    url: String,
    routing_key: Option<Secret>,
    timeout: Duration,
}

/// Sends notifications to the configured channels.
pub struct NotifyActuator {
    channels: BTreeMap<String, Channel>,
    client: reqwest::Client,
    retry: RetryPolicy,
    retries: IntCounter,
    sent: IntCounterVec,
}

/// The generic webhook's JSON body.
#[derive(Debug, Serialize, PartialEq)]
pub struct WebhookPayload<'a> {
    /// The payload's format version.
    pub version: &'static str,
    pub status: &'a str,
    pub title: &'a str,
    pub summary: &'a str,
    pub severity: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    pub url: &'a str,
}

/// A Slack incoming-webhook message.
#[derive(Debug, Serialize, PartialEq)]
pub struct SlackMessage {
    pub text: String,
    pub attachments: Vec<SlackAttachment>,
}

/// One Slack message attachment.
#[derive(Debug, Serialize, PartialEq)]
pub struct SlackAttachment {
    pub fallback: String,
    pub color: &'static str,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_link: Option<String>,
    pub text: String,
    pub fields: Vec<SlackField>,
    pub footer: &'static str,
    /// Seconds since the epoch.
    pub ts: i64,
}

/// One field of a Slack attachment.
#[derive(Debug, Serialize, PartialEq)]
pub struct SlackField {
    pub title: String,
    pub value: String,
    pub short: bool,
}

/// A PagerDuty Events API v2 event.
#[derive(Debug, Serialize, PartialEq)]
pub struct PagerDutyEvent {
    pub routing_key: String,
    /// `trigger` or `resolve`.
    pub event_action: &'static str,
    pub dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<PagerDutyPayload>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<PagerDutyLink>,
    pub client: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
}

/// The `payload` of a PagerDuty trigger event.
#[derive(Debug, Serialize, PartialEq)]
pub struct PagerDutyPayload {
    pub summary: String,
    pub source: String,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: &'static str,
    pub timestamp: String,
    pub custom_details: Value,
}

/// A link shown with a PagerDuty incident.
#[derive(Debug, Serialize, PartialEq)]
pub struct PagerDutyLink {
    pub href: String,
    pub text: String,
}

fn firing(n: &Notification) -> Result<bool, ActError> {
    match n.status.as_str() {
        "firing" => Ok(true),
        "resolved" => Ok(false),
        s => Err(ActError::Invalid(format!(
            "notification status {s:?}: expected firing or resolved"
        ))),
    }
}

/// The generic webhook body.
pub fn webhook_payload(n: &Notification) -> Result<WebhookPayload<'_>, ActError> {
    firing(n)?;
    Ok(WebhookPayload {
        version: "1",
        status: &n.status,
        title: &n.title,
        summary: &n.summary,
        severity: &n.severity,
        labels: &n.labels,
        annotations: &n.annotations,
        starts_at: rfc3339(n.starts_at_ms),
        url: &n.url,
    })
}

/// The Slack message: `[FIRING] title: summary`, coloured by status and severity.
pub fn slack_message(n: &Notification) -> Result<SlackMessage, ActError> {
    let is_firing = firing(n)?;
    let color = match (is_firing, n.severity.as_str()) {
        (false, _) => "good",
        (true, "critical" | "error" | "page") => "danger",
        (true, _) => "warning",
    };
    let head = format!("[{}] {}", n.status.to_uppercase(), n.title);
    let mut fields = vec![SlackField {
        title: "severity".into(),
        value: n.severity.clone(),
        short: true,
    }];
    fields.extend(n.labels.iter().map(|(k, v)| SlackField {
        title: k.clone(),
        value: v.clone(),
        short: true,
    }));
    Ok(SlackMessage {
        text: format!("{head}: {}", n.summary),
        attachments: vec![SlackAttachment {
            fallback: format!("{head}: {}", n.summary),
            color,
            title: head,
            title_link: (!n.url.is_empty()).then(|| n.url.clone()),
            text: n.summary.clone(),
            fields,
            footer: "closedloop",
            ts: n.starts_at_ms.div_euclid(1000),
        }],
    })
}

/// A stable key for one alert: the title and labels, hashed (FNV-1a).
pub fn dedup_key(n: &Notification) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(n.title.as_bytes());
    for (k, v) in &n.labels {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    let title: String = n.title.chars().take(200).collect();
    format!("closedloop/{title}/{h:016x}")
}

/// The PagerDuty event: `trigger` with a payload, or `resolve` with the same key.
pub fn pagerduty_event(n: &Notification, routing_key: &str) -> Result<PagerDutyEvent, ActError> {
    let is_firing = firing(n)?;
    let payload = is_firing.then(|| {
        let severity = match n.severity.as_str() {
            "critical" | "page" => "critical",
            "error" => "error",
            "warning" => "warning",
            _ => "info",
        };
        let source = ["instance", "job", "namespace"]
            .iter()
            .find_map(|k| n.labels.get(*k))
            .cloned()
            .unwrap_or_else(|| "closedloop".into());
        let summary: String = format!("{}: {}", n.title, n.summary)
            .chars()
            .take(PAGERDUTY_SUMMARY_MAX)
            .collect();
        PagerDutyPayload {
            summary,
            source,
            severity,
            timestamp: rfc3339(n.starts_at_ms),
            custom_details: json!({"labels": n.labels, "annotations": n.annotations}),
        }
    });
    let link = (!n.url.is_empty()).then(|| n.url.clone());
    Ok(PagerDutyEvent {
        routing_key: routing_key.to_owned(),
        event_action: if is_firing { "trigger" } else { "resolve" },
        dedup_key: dedup_key(n),
        payload,
        links: link
            .iter()
            .map(|href| PagerDutyLink {
                href: href.clone(),
                text: "closedloop".into(),
            })
            .collect(),
        client: "closedloop",
        client_url: link,
    })
}

/// The Alertmanager alert: labels plus `alertname` and `severity`, annotations
/// plus `summary`; a resolved one ends now.
pub fn alertmanager_alert(n: &Notification, now_ms: i64) -> Result<AmAlert, ActError> {
    let is_firing = firing(n)?;
    let mut labels = n.labels.clone();
    labels
        .entry("alertname".into())
        .or_insert_with(|| n.title.clone());
    if !n.severity.is_empty() {
        labels
            .entry("severity".into())
            .or_insert_with(|| n.severity.clone());
    }
    let mut annotations = n.annotations.clone();
    if !n.summary.is_empty() {
        annotations
            .entry("summary".into())
            .or_insert_with(|| n.summary.clone());
    }
    Ok(AmAlert {
        labels,
        annotations,
        starts_at: rfc3339(n.starts_at_ms),
        // Go's zero time: Alertmanager applies its resolve_timeout to a firing
        // alert without an end.
        ends_at: if is_firing {
            "0001-01-01T00:00:00Z".into()
        } else {
            rfc3339(now_ms)
        },
        generator_url: n.url.clone(),
    })
}

impl NotifyActuator {
    /// Builds the channels; URLs and routing keys are read from files/env now.
    pub fn new(
        channels: &BTreeMap<String, NotifyChannelConfig>,
        retry: RetryPolicy,
        retries: IntCounter,
        sent: IntCounterVec,
    ) -> Result<Self, (String, String)> {
        let mut built = BTreeMap::new();
        for (name, c) in channels {
            let key = format!("actuators.notify.{name}");
            let url = c.resolve_url(&key).map_err(|e| (key.clone(), e))?;
            let routing_key = c.routing_key(&key).map_err(|e| (key.clone(), e))?;
            built.insert(
                name.clone(),
                Channel {
                    kind: c.kind,
                    url,
                    routing_key,
                    timeout: timeout(&c.timeout),
                },
            );
        }
        Ok(NotifyActuator {
            channels: built,
            client: super::outbound::client(),
            retry,
            retries,
            sent,
        })
    }

    /// The request body for `channel`, rendered once.
    fn render(&self, c: &Channel, n: &Notification) -> Result<(String, Bytes), ActError> {
        let json = |v: Result<Vec<u8>, serde_json::Error>| {
            v.map(Bytes::from)
                .map_err(|e| ActError::Invalid(e.to_string()))
        };
        Ok(match c.kind {
            NotifyKind::Webhook => (
                c.url.clone(),
                json(serde_json::to_vec(&webhook_payload(n)?))?,
            ),
            NotifyKind::Slack => (c.url.clone(), json(serde_json::to_vec(&slack_message(n)?))?),
            NotifyKind::Pagerduty => {
                let key = c.routing_key.as_ref().ok_or_else(|| {
                    ActError::NotConfigured("pagerduty channel without a routing key".into())
                })?;
                let event = pagerduty_event(n, key.expose())?;
                (c.url.clone(), json(serde_json::to_vec(&event))?)
            }
            NotifyKind::Alertmanager => {
                let now = chrono::Utc::now().timestamp_millis();
                let alert = alertmanager_alert(n, now)?;
                (alerts_endpoint(&c.url), json(serde_json::to_vec(&[alert]))?)
            }
        })
    }
}

#[async_trait::async_trait]
impl super::Actuator for NotifyActuator {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn handles(&self, action: &Action) -> bool {
        matches!(action, Action::Notify { channel, .. } if self.channels.contains_key(channel))
    }

    async fn execute(&self, approved: &Approved) -> Result<Effect, ActError> {
        let Action::Notify {
            channel,
            notification,
        } = approved.action()
        else {
            return Err(ActError::NotConfigured(
                approved.action().kind().to_string(),
            ));
        };
        let c = self
            .channels
            .get(channel)
            .ok_or_else(|| ActError::NotConfigured(format!("notify channel {channel:?}")))?;
        let kind = c.kind.as_str();
        let (url, body) = self.render(c, notification)?;
        let headers = HeaderMap::new();
        let req = Request {
            method: Method::POST,
            url: &url,
            headers: &headers,
            body: Some(body),
            timeout: c.timeout,
            max_response_bytes: MAX_RESPONSE_BYTES,
            idempotent: true,
        };
        let what = format!("notifying {channel} ({kind})");
        let r = send(&self.client, &req, &what, &self.retry, &self.retries).await;
        let result = match &r {
            Ok(_) => "sent",
            Err(e) => e.reason(),
        };
        self.sent.with_label_values(&[channel, kind, result]).inc();
        let (status, _) = r?;
        Ok(Effect {
            summary: format!(
                "notified {channel} ({kind}): {} {}",
                notification.status, notification.title
            ),
            details: json!({"kind": kind, "status": status.as_u16()}),
            undo: None,
        })
    }

    async fn observe(&self, action: &Action) -> Result<Value, ActError> {
        let Action::Notify { channel, .. } = action else {
            return Err(ActError::NotConfigured(action.kind().to_string()));
        };
        let c = self
            .channels
            .get(channel)
            .ok_or_else(|| ActError::NotConfigured(format!("notify channel {channel:?}")))?;
        // Sending has no state to read back.
        Ok(json!({"kind": c.kind.as_str()}))
    }
}

#[cfg(test)]
mod tests;
