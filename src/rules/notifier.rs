//! Sends firing and resolved alerts to Alertmanager API v2 (`POST
//! <url>/api/v2/alerts`), as Prometheus's notifier does: alerts are queued, sent in
//! batches of at most `max_batch` to every configured Alertmanager concurrently,
//! with external labels added (alert labels win) and a `generatorURL` pointing at
//! the rule's expression.
//!
//! Invariants: the queue is bounded (`queue_capacity`); when full the oldest
//! alerts are dropped and counted, never blocking rule evaluation. A failing
//! Alertmanager does not hold up the others. Resending is the rules' job (every
//! `resend_delay`), so a failed send is not retried here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde::Serialize;
use tokio::sync::Notify;

use super::config::{AlertingConfig, GlobalConfig};

/// One alert in Alertmanager's v2 JSON shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AmAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// Where an Alertmanager at `base` takes alerts: `<base>/api/v2/alerts`.
pub fn alerts_endpoint(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim_end_matches('/'))
}

/// An alert's `generatorURL`. By default Prometheus's link,
/// `<external_url>/graph?g0.expr=<expr>&g0.tab=1` (closedloop serves `/graph`);
/// with `alerting.generator_url` set, that template with `{{expr}}` replaced by
/// the URL-encoded expression and `{{expr_json}}` by the URL-encoded JSON string
/// of it (what Grafana Explore's `panes` parameter holds).
pub fn generator_url(template: Option<&str>, external_url: &str, expr: &str) -> String {
    let encode = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    match template {
        None => format!(
            "{}/graph?g0.expr={}&g0.tab=1",
            external_url.trim_end_matches('/'),
            encode(expr)
        ),
        Some(t) => {
            let json = serde_json::Value::String(expr.to_owned()).to_string();
            t.replace("{{expr_json}}", &encode(&json))
                .replace("{{expr}}", &encode(expr))
        }
    }
}

/// The notifier's metrics.
#[derive(Clone)]
pub struct NotifierMetrics {
    pub sent: IntCounterVec,
    pub errors: IntCounterVec,
    pub dropped: IntCounter,
    pub queue_length: IntGauge,
}

impl NotifierMetrics {
    pub fn new(r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let sent = IntCounterVec::new(
            Opts::new(
                "closedloop_notifications_sent_total",
                "Alerts sent to each Alertmanager.",
            ),
            &["alertmanager"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "closedloop_notifications_errors_total",
                "Alerts whose sending to an Alertmanager failed.",
            ),
            &["alertmanager"],
        )?;
        let dropped = IntCounter::new(
            "closedloop_notifications_dropped_total",
            "Alerts dropped because the queue was full.",
        )?;
        let queue_length = IntGauge::new(
            "closedloop_notifications_queue_length",
            "Alerts waiting to be sent.",
        )?;
        r.register(Box::new(sent.clone()))?;
        r.register(Box::new(errors.clone()))?;
        r.register(Box::new(dropped.clone()))?;
        r.register(Box::new(queue_length.clone()))?;
        Ok(NotifierMetrics {
            sent,
            errors,
            dropped,
            queue_length,
        })
    }
}

/// The alert queue and its sender.
pub struct Notifier {
    queue: Mutex<VecDeque<AmAlert>>,
    wake: Notify,
    config: RwLock<(AlertingConfig, GlobalConfig)>,
    client: reqwest::Client,
    metrics: NotifierMetrics,
    /// The outcome of the last send to each Alertmanager, by configured URL.
    health: Mutex<BTreeMap<String, SendOutcome>>,
}

/// The last send to one Alertmanager.
#[derive(Debug, Clone, Default)]
struct SendOutcome {
    ok: bool,
    at_ms: i64,
    error: Option<String>,
}

/// An Alertmanager as `/api/v1/alertmanagers` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerStatus {
    /// The endpoint alerts are posted to (`<url>/api/v2/alerts`).
    pub url: String,
    /// `up` (last send succeeded), `down` (it failed) or `unknown` (none yet).
    pub health: &'static str,
    pub last_error: String,
    /// RFC 3339 time of the last send, or Prometheus's zero time.
    pub last_send: String,
}

impl Notifier {
    pub fn new(
        alerting: AlertingConfig,
        global: GlobalConfig,
        metrics: NotifierMetrics,
    ) -> Arc<Self> {
        Arc::new(Notifier {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            config: RwLock::new((alerting, global)),
            client: reqwest::Client::builder()
                .user_agent(concat!("closedloop/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            metrics,
            health: Mutex::new(BTreeMap::new()),
        })
    }

    /// The configured Alertmanagers with the outcome of their last send.
    pub fn alertmanagers(&self) -> Vec<AlertmanagerStatus> {
        let health = self.health.lock();
        self.config
            .read()
            .0
            .alertmanagers
            .iter()
            .map(|am| {
                let last = health.get(&am.url);
                AlertmanagerStatus {
                    url: alerts_endpoint(&am.url),
                    health: match last {
                        None => "unknown",
                        Some(o) if o.ok => "up",
                        Some(_) => "down",
                    },
                    last_error: last.and_then(|o| o.error.clone()).unwrap_or_default(),
                    last_send: rfc3339(last.map_or(i64::MIN, |o| o.at_ms)),
                }
            })
            .collect()
    }

    fn record(&self, url: &str, error: Option<String>) {
        self.health.lock().insert(
            url.to_owned(),
            SendOutcome {
                ok: error.is_none(),
                at_ms: chrono::Utc::now().timestamp_millis(),
                error,
            },
        );
    }

    /// Applies a reloaded configuration.
    pub fn set_config(&self, alerting: AlertingConfig, global: GlobalConfig) {
        *self.config.write() = (alerting, global);
    }

    /// Whether any Alertmanager is configured.
    pub fn enabled(&self) -> bool {
        !self.config.read().0.alertmanagers.is_empty()
    }

    /// Queues alerts (external labels added); drops the oldest beyond capacity.
    pub fn enqueue(&self, alerts: Vec<AmAlert>) {
        if alerts.is_empty() || !self.enabled() {
            return;
        }
        let (cap, ext) = {
            let c = self.config.read();
            (c.0.queue_capacity, c.1.external_labels.clone())
        };
        let mut q = self.queue.lock();
        for mut a in alerts {
            for (k, v) in &ext {
                a.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            q.push_back(a);
        }
        while q.len() > cap {
            q.pop_front();
            self.metrics.dropped.inc();
        }
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    /// Sends queued alerts until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let (batch, ams) = {
                    let c = self.config.read();
                    let mut q = self.queue.lock();
                    let n = q.len().min(c.0.max_batch);
                    let batch: Vec<AmAlert> = q.drain(..n).collect();
                    self.metrics.queue_length.set(q.len() as i64);
                    (batch, c.0.alertmanagers.clone())
                };
                if batch.is_empty() {
                    break;
                }
                let body = Arc::new(batch);
                let mut tasks = Vec::with_capacity(ams.len());
                for am in ams {
                    let client = self.client.clone();
                    let body = body.clone();
                    let m = self.metrics.clone();
                    let this = self.clone();
                    tasks.push(tokio::spawn(async move {
                        let url = alerts_endpoint(&am.url);
                        let timeout = Duration::from_millis(am.timeout.as_millis().max(1) as u64);
                        let r = client
                            .post(&url)
                            .timeout(timeout)
                            .json(&*body)
                            .send()
                            .await
                            .and_then(|r| r.error_for_status());
                        match r {
                            Ok(_) => {
                                m.sent
                                    .with_label_values(&[&am.url])
                                    .inc_by(body.len() as u64);
                                this.record(&am.url, None);
                            }
                            Err(e) => {
                                m.errors
                                    .with_label_values(&[&am.url])
                                    .inc_by(body.len() as u64);
                                tracing::warn!(alertmanager = %am.url, error = %e, "sending alerts failed");
                                this.record(&am.url, Some(e.to_string()));
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str) -> AmAlert {
        AmAlert {
            labels: [("alertname".to_string(), name.to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: rfc3339(0),
            ends_at: rfc3339(0),
            generator_url: String::new(),
        }
    }

    #[test]
    fn queue_is_bounded_and_adds_external_labels() {
        let r = prometheus::Registry::new();
        let m = NotifierMetrics::new(&r).unwrap();
        let alerting = AlertingConfig {
            alertmanagers: vec![super::super::config::AlertmanagerConfig {
                url: "http://127.0.0.1:1".into(),
                timeout: crate::duration::PromDuration::from_secs(1),
            }],
            queue_capacity: 2,
            ..Default::default()
        };
        let global = GlobalConfig {
            external_labels: [
                ("cluster".to_string(), "eu".to_string()),
                ("alertname".to_string(), "never-overrides".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let n = Notifier::new(alerting, global, m.clone());
        n.enqueue(vec![alert("a"), alert("b"), alert("c")]);
        let q = n.queue.lock();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].labels["alertname"], "b", "oldest dropped first");
        assert_eq!(q[0].labels["cluster"], "eu");
        assert_eq!(m.dropped.get(), 1);
    }

    #[test]
    fn no_alertmanager_means_nothing_queued() {
        let r = prometheus::Registry::new();
        let n = Notifier::new(
            AlertingConfig::default(),
            GlobalConfig::default(),
            NotifierMetrics::new(&r).unwrap(),
        );
        n.enqueue(vec![alert("a")]);
        assert!(n.queue.lock().is_empty());
    }

    #[test]
    fn generator_url_is_prometheus_shaped() {
        assert_eq!(
            generator_url(None, "http://cl:9096/", "up == 0"),
            "http://cl:9096/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
        );
        // A Grafana Explore link: the expression as a JSON string, URL-encoded.
        assert_eq!(
            generator_url(
                Some("https://g/explore?panes=%7B%22a%22:%7B%22queries%22:%5B%7B%22expr%22:{{expr_json}}%7D%5D%7D%7D&x={{expr}}"),
                "http://cl:9096",
                "a{b=\"c\"}"
            ),
            "https://g/explore?panes=%7B%22a%22:%7B%22queries%22:%5B%7B%22expr%22:%22a%7Bb%3D%5C%22c%5C%22%7D%22%7D%5D%7D%7D&x=a%7Bb%3D%22c%22%7D"
        );
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }
}
