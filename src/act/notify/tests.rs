//! Notify channels against a local webhook receiver (checking the Slack and
//! PagerDuty payload shapes those services document) and a real Alertmanager.

use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::*;
use crate::act::testing::peers::{Alertmanager, WebhookReceiver};
use crate::act::Actuator;
use crate::duration::PromDuration;
use crate::knowledge::IntentReceipt;

fn notification(status: &str) -> Notification {
    Notification {
        status: status.into(),
        title: "HighLatency".into(),
        summary: "p99 above 2s on checkout".into(),
        severity: "critical".into(),
        labels: [
            ("service".to_string(), "checkout".to_string()),
            ("instance".to_string(), "10.0.0.7:8080".to_string()),
        ]
        .into(),
        annotations: [(
            "runbook".to_string(),
            "https://runbooks/latency".to_string(),
        )]
        .into(),
        starts_at_ms: 1_700_000_000_000,
        url: "http://closedloop:9096/graph?g0.expr=up".into(),
    }
}

fn channel(kind: NotifyKind, url: String) -> NotifyChannelConfig {
    NotifyChannelConfig {
        kind,
        url: Some(url),
        url_file: None,
        url_env: None,
        routing_key_file: None,
        routing_key_env: None,
        timeout: PromDuration::from_secs(10),
    }
}

fn actuator(channels: Vec<(&str, NotifyChannelConfig)>) -> (NotifyActuator, IntCounterVec) {
    let sent =
        IntCounterVec::new(Opts::new("sent", "sent"), &["channel", "kind", "result"]).unwrap();
    let retry = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    let map = channels
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect();
    let a = NotifyActuator::new(
        &map,
        retry,
        IntCounter::new("r", "r").unwrap(),
        sent.clone(),
    )
    .unwrap();
    (a, sent)
}

fn notify(channel: &str, n: Notification) -> Approved {
    Approved::new(
        Action::Notify {
            channel: channel.into(),
            notification: n,
        },
        IntentReceipt::for_test(3),
    )
}

#[tokio::test]
async fn slack_gets_an_incoming_webhook_message() {
    let rx = WebhookReceiver::start();
    let (a, sent) = actuator(vec![(
        "chat",
        channel(NotifyKind::Slack, rx.url("/services/T0/B0/x")),
    )]);
    a.execute(&notify("chat", notification("firing")))
        .await
        .unwrap();
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        (m.method.as_str(), m.path.as_str()),
        ("POST", "/services/T0/B0/x")
    );
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    // Slack's incoming webhooks: `text` (the notification fallback) and legacy
    // attachments with color, title, title_link, text, fields {title,value,short}.
    assert_eq!(
        m.body["text"],
        "[FIRING] HighLatency: p99 above 2s on checkout"
    );
    let att = &m.body["attachments"][0];
    assert_eq!(att["color"], "danger");
    assert_eq!(att["title"], "[FIRING] HighLatency");
    assert_eq!(att["title_link"], "http://closedloop:9096/graph?g0.expr=up");
    assert_eq!(att["ts"], 1_700_000_000);
    let fields = att["fields"].as_array().unwrap();
    assert!(fields
        .iter()
        .all(|f| f["title"].is_string() && f["value"].is_string() && f["short"].is_boolean()));
    assert_eq!(fields[0]["title"], "severity");
    assert!(fields
        .iter()
        .any(|f| f["title"] == "service" && f["value"] == "checkout"));
    assert_eq!(sent.with_label_values(&["chat", "slack", "sent"]).get(), 1);
    a.execute(&notify("chat", notification("resolved")))
        .await
        .unwrap();
    assert_eq!(rx.received()[1].body["attachments"][0]["color"], "good");
}

#[tokio::test]
async fn pagerduty_gets_events_v2_trigger_and_resolve_with_one_dedup_key() {
    let rx = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pd-key");
    std::fs::write(&key_file, "R0UTINGKEY0123456789012345678901\n").unwrap();
    let mut c = channel(NotifyKind::Pagerduty, rx.url("/v2/enqueue"));
    c.routing_key_file = Some(key_file);
    let (a, sent) = actuator(vec![("oncall", c)]);
    let e = a
        .execute(&notify("oncall", notification("firing")))
        .await
        .unwrap();
    assert_eq!(e.details["status"], 202);
    a.execute(&notify("oncall", notification("resolved")))
        .await
        .unwrap();
    let got = rx.received();
    let (trigger, resolve) = (&got[0].body, &got[1].body);
    assert_eq!(got[0].path, "/v2/enqueue");
    assert_eq!(trigger["routing_key"], "R0UTINGKEY0123456789012345678901");
    assert_eq!(trigger["event_action"], "trigger");
    let key = trigger["dedup_key"].as_str().unwrap();
    assert!(!key.is_empty() && key.len() <= 255, "{key}");
    let p = &trigger["payload"];
    assert_eq!(p["summary"], "HighLatency: p99 above 2s on checkout");
    assert_eq!(p["source"], "10.0.0.7:8080");
    assert!(["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap()));
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(p["custom_details"]["labels"]["service"], "checkout");
    assert_eq!(
        trigger["links"][0]["href"],
        "http://closedloop:9096/graph?g0.expr=up"
    );
    assert_eq!(trigger["client"], "closedloop");
    // The resolve names the same incident and carries no payload.
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], key);
    assert!(resolve.get("payload").is_none());
    assert_eq!(
        sent.with_label_values(&["oncall", "pagerduty", "sent"])
            .get(),
        2
    );
    // A long summary is cut to PagerDuty's 1024 characters.
    let mut long = notification("firing");
    long.summary = "x".repeat(5000);
    let ev = pagerduty_event(&long, "k").unwrap();
    assert_eq!(ev.payload.unwrap().summary.chars().count(), 1024);
}

#[tokio::test]
async fn webhook_gets_the_notification_and_transient_failures_are_retried() {
    let rx = WebhookReceiver::start();
    rx.answer_with(&[503, 502]);
    let (a, sent) = actuator(vec![(
        "hook",
        channel(NotifyKind::Webhook, rx.url("/hook")),
    )]);
    a.execute(&notify("hook", notification("firing")))
        .await
        .unwrap();
    let got = rx.received();
    assert_eq!(got.len(), 3, "two failures, then delivered");
    assert_eq!(got[2].body["version"], "1");
    assert_eq!(got[2].body["title"], "HighLatency");
    assert_eq!(got[2].body["labels"]["service"], "checkout");
    assert_eq!(got[2].body["startsAt"], "2023-11-14T22:13:20.000Z");
    assert_eq!(got[0].body, got[2].body, "rendered once, sent identically");
    // A 400 is a refusal: not retried.
    rx.answer_with(&[400]);
    let r = a.execute(&notify("hook", notification("firing"))).await;
    assert!(matches!(r, Err(ActError::Refused(_))), "{r:?}");
    assert_eq!(rx.received().len(), 4);
    assert_eq!(
        sent.with_label_values(&["hook", "webhook", "refused"])
            .get(),
        1
    );
    // An unknown channel is not handled; a bad status is invalid before sending.
    assert!(!a.handles(notify("nope", notification("firing")).action()));
    let r = a.execute(&notify("hook", notification("pending"))).await;
    assert!(matches!(r, Err(ActError::Invalid(_))), "{r:?}");
    assert_eq!(rx.received().len(), 4);
}

#[tokio::test]
async fn alertmanager_receives_the_alert_and_its_resolution() {
    let am = Alertmanager::start();
    let (a, sent) = actuator(vec![("am", channel(NotifyKind::Alertmanager, am.url()))]);
    let mut n = notification("firing");
    n.starts_at_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    a.execute(&notify("am", n.clone())).await.unwrap();
    let find = |alerts: &[serde_json::Value]| {
        alerts
            .iter()
            .find(|x| x["labels"]["alertname"] == "HighLatency")
            .cloned()
    };
    let start = Instant::now();
    let alert = loop {
        if let Some(x) = find(&am.alerts()) {
            break x;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alert never showed up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["service"], "checkout");
    assert_eq!(alert["annotations"]["summary"], "p99 above 2s on checkout");
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(
        alert["generatorURL"],
        "http://closedloop:9096/graph?g0.expr=up"
    );
    n.status = "resolved".into();
    a.execute(&notify("am", n)).await.unwrap();
    let start = Instant::now();
    while find(&am.alerts()).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alert never resolved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sent.with_label_values(&["am", "alertmanager", "sent"])
            .get(),
        2
    );
}
