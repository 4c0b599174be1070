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
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
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
