//! The actuators the service config asks for, behind one [`Actuator`]: an
//! [`ActuatorSet`] hands an approved action to the first actuator that handles it
//! (its kind, and for named targets whether it knows the name), and answers
//! "no actuator configured" when none does. It times and counts every call.
//!
//! The decide stage's executor holds one; a reload builds a new one from the new
//! config with the same [`ActuatorMetrics`].

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::Value;

use super::argo::RolloutsActuator;
use super::config::ActuatorsConfig;
use super::http_config::HttpConfigActuator;
use super::kube::{KubeActuator, KubeApi};
use super::notify::NotifyActuator;
use super::redis::RedisActuator;
use super::{ActError, Action, Actuator, Approved, Effect};

/// The actuators' own metrics (process figures, hence `closedloop_`).
#[derive(Clone)]
pub struct ActuatorMetrics {
    /// `closedloop_actuator_calls_total{actuator,action,result}`.
    pub calls: IntCounterVec,
    /// `closedloop_actuator_call_duration_seconds{actuator,action}`.
    pub duration: HistogramVec,
    /// `closedloop_actuator_retries_total{actuator}`.
    pub retries: IntCounterVec,
    /// `closedloop_actuator_notifications_total{channel,kind,result}`.
    pub notifications: IntCounterVec,
}

impl ActuatorMetrics {
    pub fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "closedloop_actuator_calls_total",
                "Actions carried out by actuators, by result (ok, not_found, refused, unavailable, invalid, not_configured).",
            ),
            &["actuator", "action", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "closedloop_actuator_call_duration_seconds",
                "Time an actuator took to carry out an action, retries included.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["actuator", "action"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "closedloop_actuator_retries_total",
                "Outbound calls of actuators tried again after a transient failure.",
            ),
            &["actuator"],
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "closedloop_actuator_notifications_total",
                "Notifications sent to each notify channel, by result.",
            ),
            &["channel", "kind", "result"],
        )?;
        r.register(Box::new(calls.clone()))?;
        r.register(Box::new(duration.clone()))?;
        r.register(Box::new(retries.clone()))?;
        r.register(Box::new(notifications.clone()))?;
        Ok(ActuatorMetrics {
            calls,
            duration,
            retries,
            notifications,
        })
    }
}

/// Building the actuators failed: `key` is the config key path.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct BuildError {
    pub key: String,
    pub reason: String,
}

impl From<(String, String)> for BuildError {
    fn from((key, reason): (String, String)) -> Self {
        BuildError { key, reason }
    }
}

/// Every configured actuator, dispatching each action to the one that handles it.
pub struct ActuatorSet {
    actuators: Vec<Box<dyn Actuator>>,
    metrics: ActuatorMetrics,
}

impl ActuatorSet {
    /// Builds the actuators `config` configures: connects the Kubernetes client
    /// (no request is made yet) and reads every secret. Must run inside a tokio
    /// runtime.
    pub async fn build(
        config: &ActuatorsConfig,
        metrics: ActuatorMetrics,
    ) -> Result<ActuatorSet, BuildError> {
        let retry = config.retry.policy();
        let retries = |name: &str| metrics.retries.with_label_values(&[name]);
        let mut actuators: Vec<Box<dyn Actuator>> = Vec::new();
        if let Some(k) = &config.kubernetes {
            let api = KubeApi::connect(k, retry, retries("kubernetes"))
                .await
                .map_err(|reason| BuildError {
                    key: "actuators.kubernetes".into(),
                    reason,
                })?;
            actuators.push(Box::new(KubeActuator::new(api.clone())));
            actuators.push(Box::new(RolloutsActuator::new(api)));
        }
        if !config.redis.is_empty() {
            actuators.push(Box::new(RedisActuator::new(
                &config.redis,
                retry,
                retries("redis"),
            )?));
        }
        if !config.http_config.is_empty() {
            actuators.push(Box::new(HttpConfigActuator::new(
                &config.http_config,
                retry,
                retries("http_config"),
            )?));
        }
        if !config.notify.is_empty() {
            actuators.push(Box::new(NotifyActuator::new(
                &config.notify,
                retry,
                retries("notify"),
                metrics.notifications.clone(),
            )?));
        }
        Ok(ActuatorSet::from_actuators(actuators, metrics))
    }

    /// A set of the given actuators (the simulation binds its own).
    pub fn from_actuators(actuators: Vec<Box<dyn Actuator>>, metrics: ActuatorMetrics) -> Self {
        ActuatorSet { actuators, metrics }
    }

    fn find(&self, action: &Action) -> Result<&dyn Actuator, ActError> {
        self.actuators
            .iter()
            .find(|a| a.handles(action))
            .map(|a| a.as_ref())
            .ok_or_else(|| ActError::NotConfigured(action.target()))
    }
}

#[async_trait::async_trait]
impl Actuator for ActuatorSet {
    fn name(&self) -> &'static str {
        "set"
    }

    fn handles(&self, action: &Action) -> bool {
        self.actuators.iter().any(|a| a.handles(action))
    }

    async fn execute(&self, approved: &Approved) -> Result<Effect, ActError> {
        let action = approved.action();
        let kind = action.kind().as_str();
        let actuator = match self.find(action) {
            Ok(a) => a,
            Err(e) => {
                self.metrics
                    .calls
                    .with_label_values(&["none", kind, e.reason()])
                    .inc();
                return Err(e);
            }
        };
        let start = Instant::now();
        let r = actuator.execute(approved).await;
        let name = actuator.name();
        self.metrics
            .duration
            .with_label_values(&[name, kind])
            .observe(start.elapsed().as_secs_f64());
        let result = match &r {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        };
        self.metrics
            .calls
            .with_label_values(&[name, kind, result])
            .inc();
        match &r {
            Ok(effect) => tracing::info!(
                audit_id = %approved.receipt().id(),
                actuator = name,
                action = kind,
                summary = %effect.summary,
                "action carried out"
            ),
            Err(e) => tracing::warn!(
                audit_id = %approved.receipt().id(),
                actuator = name,
                action = kind,
                error = %e,
                "action failed"
            ),
        }
        r
    }

    async fn observe(&self, action: &Action) -> Result<Value, ActError> {
        self.find(action)?.observe(action).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use redis::Commands;
    use serde_json::json;

    use super::*;
    use crate::act::testing::peers::{RedisServer, WebhookReceiver};
    use crate::act::testing::{fixtures, KubeDouble};
    use crate::act::{ObjectKind, ObjectRef};
    use crate::knowledge::IntentReceipt;

    fn approved(a: Action) -> Approved {
        Approved::new(a, IntentReceipt::for_test(9))
    }

    #[tokio::test]
    async fn the_set_built_from_config_dispatches_by_kind_and_name() {
        let double = KubeDouble::start();
        double.insert(fixtures::deployment("prod", "web", 2, "web:1", 1));
        let redis = RedisServer::start();
        let rx = WebhookReceiver::start();
        let text = format!(
            "actuators:\n  retry: {{attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}\n  \
             kubernetes: {{kubeconfig: {kc}}}\n  redis:\n    cache: {{url: '{redis}'}}\n  \
             notify:\n    hook: {{kind: webhook, url: '{hook}'}}\n",
            kc = double.kubeconfig().display(),
            redis = redis.url(),
            hook = rx.url("/hook"),
        );
        let config = crate::config::Config::parse(&text, Path::new("t.yml")).unwrap();
        let registry = Registry::new();
        let metrics = ActuatorMetrics::new(&registry).unwrap();
        let set = ActuatorSet::build(&config.actuators, metrics.clone())
            .await
            .unwrap();

        let scale = Action::Scale {
            workload: ObjectRef {
                kind: ObjectKind::Deployment,
                namespace: "prod".into(),
                name: "web".into(),
            },
            change: crate::act::ReplicaChange::By(1),
            bounds: crate::act::ReplicaBounds { min: 1, max: 5 },
        };
        assert_eq!(set.observe(&scale).await.unwrap()["scale"], 2);
        set.execute(&approved(scale)).await.unwrap();
        assert_eq!(
            double.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
            3
        );

        let mut c = redis.connection(0);
        let _: () = c.set("s:1", "v").unwrap();
        let clear = Action::ClearCache {
            target: "cache".into(),
            pattern: "s:*".into(),
            db: None,
            max_keys: 10,
        };
        let e = set.execute(&approved(clear)).await.unwrap();
        assert_eq!(e.details["removed"], 1);

        let n = crate::act::Notification {
            status: "firing".into(),
            title: "T".into(),
            summary: "s".into(),
            severity: "warning".into(),
            labels: Default::default(),
            annotations: Default::default(),
            starts_at_ms: 0,
            url: String::new(),
        };
        set.execute(&approved(Action::Notify {
            channel: "hook".into(),
            notification: n.clone(),
        }))
        .await
        .unwrap();
        assert_eq!(rx.received().len(), 1);

        // Names the config does not know, and kinds nothing handles.
        for a in [
            Action::Notify {
                channel: "slack".into(),
                notification: n,
            },
            Action::ClearCache {
                target: "sessions".into(),
                pattern: "x".into(),
                db: None,
                max_keys: 1,
            },
            Action::HttpConfig {
                endpoint: "ratelimit".into(),
                body: json!({}),
            },
        ] {
            assert!(!set.handles(&a));
            let r = set.execute(&approved(a)).await;
            assert!(matches!(r, Err(ActError::NotConfigured(_))), "{r:?}");
        }
        let calls = |actuator: &str, action: &str, result: &str| {
            metrics
                .calls
                .with_label_values(&[actuator, action, result])
                .get()
        };
        assert_eq!(calls("kubernetes", "scale", "ok"), 1);
        assert_eq!(calls("redis", "clear_cache", "ok"), 1);
        assert_eq!(calls("notify", "notify", "ok"), 1);
        assert_eq!(calls("none", "http_config", "not_configured"), 1);
        assert_eq!(
            metrics
                .duration
                .with_label_values(&["kubernetes", "scale"])
                .get_sample_count(),
            1
        );
    }

    #[tokio::test]
    async fn build_errors_name_the_key() {
        let registry = Registry::new();
        let metrics = ActuatorMetrics::new(&registry).unwrap();
        let text = "actuators:\n  notify:\n    slack: {kind: slack, url_env: CLOSEDLOOP_TEST_UNSET_SLACK_URL}\n";
        let config = crate::config::Config::parse(text, Path::new("t.yml")).unwrap();
        let e = ActuatorSet::build(&config.actuators, metrics.clone())
            .await
            .err()
            .unwrap();
        assert_eq!(e.key, "actuators.notify.slack");
        assert!(e.reason.contains("CLOSEDLOOP_TEST_UNSET_SLACK_URL"), "{e}");
        let text = "actuators:\n  kubernetes: {kubeconfig: /nonexistent/kubeconfig}\n";
        let config = crate::config::Config::parse(text, Path::new("t.yml")).unwrap();
        let e = ActuatorSet::build(&config.actuators, metrics)
            .await
            .err()
            .unwrap();
        assert_eq!(e.key, "actuators.kubernetes");
        assert!(e.reason.contains("/nonexistent/kubeconfig"), "{e}");
    }
}
