//! Act: the actuators that carry decisions out — Kubernetes (pods, workloads, scale,
//! ConfigMaps, nodes), Argo Rollouts, Redis, dynamic configuration over HTTP and
//! notifications — behind one [`Actuator`] trait.
//!
//! Invariants:
//! - An actuator only ever receives an [`Approved`] action. `Approved` can only be
//!   made from an [`IntentReceipt`], which only the knowledge store hands out once the
//!   audit entry for the intent is durable; the policy layer (`decide/`) is the one
//!   place that asks for receipts. So nothing mutates the outside world without
//!   passing the policy and the audit log, by construction.
//! - Every [`Action`] here is concrete: targets are resolved names (templates were
//!   rendered against the alert's labels before the action was built), parameters
//!   are parsed and typed. Nothing downstream of rule loading handles raw YAML.
//! - Every outbound call has a timeout and bounded retries with backoff; an
//!   actuator reports what it did and, where one exists, the action that undoes it.
//!
//! Must never: import from `decide/`; run an action it was not handed as `Approved`;
//! retry a non-idempotent call blindly.

use std::collections::BTreeMap;
use std::fmt;

pub mod argo;
pub mod config;
pub mod http_config;
pub mod kube;
pub mod notify;
mod outbound;
pub mod redis;
pub mod retry;
pub mod set;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use set::{ActuatorMetrics, ActuatorSet, BuildError};

use serde::{Deserialize, Serialize};

use crate::knowledge::IntentReceipt;

/// The kinds of action, a fixed set: used for allow-lists, metric labels
/// (`closed_loop_remediations_total{action}`) and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    RestartPod,
    RolloutRestart,
    Scale,
    PatchConfigMap,
    CordonNode,
    RolloutAbort,
    RolloutRetry,
    RolloutUndo,
    DeploymentRollback,
    ClearCache,
    HttpConfig,
    Notify,
}

impl ActionKind {
    pub const ALL: [ActionKind; 12] = [
        ActionKind::RestartPod,
        ActionKind::RolloutRestart,
        ActionKind::Scale,
        ActionKind::PatchConfigMap,
        ActionKind::CordonNode,
        ActionKind::RolloutAbort,
        ActionKind::RolloutRetry,
        ActionKind::RolloutUndo,
        ActionKind::DeploymentRollback,
        ActionKind::ClearCache,
        ActionKind::HttpConfig,
        ActionKind::Notify,
    ];

    /// The snake_case name used in metrics, the audit log and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::RestartPod => "restart_pod",
            ActionKind::RolloutRestart => "rollout_restart",
            ActionKind::Scale => "scale",
            ActionKind::PatchConfigMap => "patch_configmap",
            ActionKind::CordonNode => "cordon_node",
            ActionKind::RolloutAbort => "rollout_abort",
            ActionKind::RolloutRetry => "rollout_retry",
            ActionKind::RolloutUndo => "rollout_undo",
            ActionKind::DeploymentRollback => "deployment_rollback",
            ActionKind::ClearCache => "clear_cache",
            ActionKind::HttpConfig => "http_config",
            ActionKind::Notify => "notify",
        }
    }

    /// Whether the action changes the outside world (everything but `notify`).
    pub fn mutates(self) -> bool {
        self != ActionKind::Notify
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Kubernetes kinds an action can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ConfigMap,
    Node,
    /// Argo Rollouts' `Rollout` (argoproj.io/v1alpha1).
    Rollout,
}

impl ObjectKind {
    /// The lower-case name `kubectl` accepts (`deployment/web`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pod",
            ObjectKind::Deployment => "deployment",
            ObjectKind::StatefulSet => "statefulset",
            ObjectKind::DaemonSet => "daemonset",
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Node => "node",
            ObjectKind::Rollout => "rollout",
        }
    }
}

/// One Kubernetes object: kind, namespace (empty for cluster-scoped kinds such as
/// nodes) and name, all resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{}/{}/{}", self.namespace, self.kind.as_str(), self.name)
        }
    }
}

/// How a scale action changes the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaChange {
    /// `+N` / `-N`: relative to the current count.
    By(i32),
    /// `N`: an absolute count.
    To(u32),
}

/// The configured bounds a scale action is clamped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBounds {
    pub min: u32,
    pub max: u32,
}

/// What a notification says, rendered before it is sent (never inside a retry loop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert (or incident) name.
    pub title: String,
    /// One line for a human.
    pub summary: String,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Milliseconds since the epoch when the condition started.
    pub starts_at_ms: i64,
    /// Where to look (a link to the query or the incident).
    pub url: String,
}

/// A concrete action: every target resolved, every parameter typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Delete a pod so its controller recreates it. When `uid` is known the delete
    /// carries it as a precondition, so a different pod of the same name is never hit.
    RestartPod { pod: ObjectRef, uid: Option<String> },
    /// `kubectl rollout restart` of a Deployment, StatefulSet or DaemonSet: patch the
    /// pod template's `kubectl.kubernetes.io/restartedAt` annotation.
    RolloutRestart { workload: ObjectRef },
    /// Change a Deployment's or StatefulSet's replicas through the scale subresource,
    /// clamped to `bounds`.
    Scale {
        workload: ObjectRef,
        change: ReplicaChange,
        bounds: ReplicaBounds,
    },
    /// Set (`Some`) or remove (`None`) keys of a ConfigMap's `data`.
    PatchConfigMap {
        configmap: ObjectRef,
        data: BTreeMap<String, Option<String>>,
    },
    /// Mark a node unschedulable (`uncordon` is its undo: `cordon: false`).
    CordonNode { node: String, cordon: bool },
    /// Argo Rollouts: abort the rollout in progress (back to the stable version).
    RolloutAbort { rollout: ObjectRef },
    /// Argo Rollouts: retry an aborted rollout.
    RolloutRetry { rollout: ObjectRef },
    /// Argo Rollouts: roll back to a previous revision (`None`: the one before the
    /// current).
    RolloutUndo {
        rollout: ObjectRef,
        revision: Option<u64>,
    },
    /// A plain Deployment: put back the pod template of its previous ReplicaSet
    /// (`None`: the revision before the current).
    DeploymentRollback {
        deployment: ObjectRef,
        revision: Option<u64>,
    },
    /// Redis: delete keys matching `pattern` with SCAN + UNLINK in bounded batches,
    /// at most `max_keys`. `target` names a Redis in the service config.
    ClearCache {
        target: String,
        pattern: String,
        db: Option<u32>,
        max_keys: u64,
    },
    /// Dynamic configuration: send `body` to the endpoint the service config names
    /// `endpoint` (method, URL, credentials and timeout come from there).
    HttpConfig {
        endpoint: String,
        body: serde_json::Value,
    },
    /// Send a notification to the channel the service config names `channel`
    /// (webhook, Slack, PagerDuty or Alertmanager).
    Notify {
        channel: String,
        notification: Notification,
    },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::RestartPod { .. } => ActionKind::RestartPod,
            Action::RolloutRestart { .. } => ActionKind::RolloutRestart,
            Action::Scale { .. } => ActionKind::Scale,
            Action::PatchConfigMap { .. } => ActionKind::PatchConfigMap,
            Action::CordonNode { .. } => ActionKind::CordonNode,
            Action::RolloutAbort { .. } => ActionKind::RolloutAbort,
            Action::RolloutRetry { .. } => ActionKind::RolloutRetry,
            Action::RolloutUndo { .. } => ActionKind::RolloutUndo,
            Action::DeploymentRollback { .. } => ActionKind::DeploymentRollback,
            Action::ClearCache { .. } => ActionKind::ClearCache,
            Action::HttpConfig { .. } => ActionKind::HttpConfig,
            Action::Notify { .. } => ActionKind::Notify,
        }
    }

    /// The Kubernetes object the action acts on, for the kinds that name one
    /// (not nodes, Redis, HTTP endpoints or channels).
    pub fn object(&self) -> Option<&ObjectRef> {
        match self {
            Action::RestartPod { pod: o, .. }
            | Action::RolloutRestart { workload: o }
            | Action::Scale { workload: o, .. }
            | Action::PatchConfigMap { configmap: o, .. }
            | Action::RolloutAbort { rollout: o }
            | Action::RolloutRetry { rollout: o }
            | Action::RolloutUndo { rollout: o, .. }
            | Action::DeploymentRollback { deployment: o, .. } => Some(o),
            _ => None,
        }
    }

    /// What the action acts on, in one string (`prod/deployment/web`,
    /// `redis:cache/session:*`, `http:ratelimit`, `notify:slack`): the key for
    /// cooldowns, rate limits and the audit log's `target` column.
    pub fn target(&self) -> String {
        match self {
            Action::RestartPod { pod: o, .. }
            | Action::RolloutRestart { workload: o }
            | Action::Scale { workload: o, .. }
            | Action::PatchConfigMap { configmap: o, .. }
            | Action::RolloutAbort { rollout: o }
            | Action::RolloutRetry { rollout: o }
            | Action::RolloutUndo { rollout: o, .. }
            | Action::DeploymentRollback { deployment: o, .. } => o.to_string(),
            Action::CordonNode { node, .. } => format!("node/{node}"),
            Action::ClearCache {
                target, pattern, ..
            } => format!("redis:{target}/{pattern}"),
            Action::HttpConfig { endpoint, .. } => format!("http:{endpoint}"),
            Action::Notify { channel, .. } => format!("notify:{channel}"),
        }
    }
}

/// An action the policy let through and whose intent is durable in the audit log.
/// The only thing an [`Actuator`] accepts.
#[derive(Debug)]
pub struct Approved {
    action: Action,
    receipt: IntentReceipt,
}

impl Approved {
    /// Pairs an action with the receipt of its durable intent. `decide::executor` is
    /// the one caller.
    #[allow(dead_code)] // until decide/ lands
    pub(crate) fn new(action: Action, receipt: IntentReceipt) -> Self {
        Approved { action, receipt }
    }

    pub fn action(&self) -> &Action {
        &self.action
    }

    /// The audit entry this execution belongs to.
    pub fn receipt(&self) -> &IntentReceipt {
        &self.receipt
    }
}

/// What an actuator did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// One line for the audit log and the API (`scaled prod/deployment/web 3 -> 5`).
    pub summary: String,
    /// Structured details (previous and new values, keys removed, HTTP status…).
    pub details: serde_json::Value,
    /// The action that undoes this one, when there is one (scale back, the previous
    /// ConfigMap values, the previous config body, uncordon, Argo retry/undo).
    pub undo: Option<Action>,
}

/// Why an actuator could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// No actuator is configured for this kind or target (e.g. no Redis named so).
    #[error("no actuator configured for {0}")]
    NotConfigured(String),
    /// The target does not exist (404), or is not the object the action named
    /// (UID precondition failed).
    #[error("target not found: {0}")]
    NotFound(String),
    /// The request was refused by the other side (403, 409, 422, a Redis error
    /// reply): retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// A timeout, connection error or 5xx after the bounded retries.
    #[error("unavailable after {attempts} attempt(s): {reason}")]
    Unavailable { attempts: u32, reason: String },
    /// The action's parameters cannot be carried out (e.g. scale of a DaemonSet).
    #[error("invalid action: {0}")]
    Invalid(String),
}

impl ActError {
    /// A short label for metrics and the audit log (`not_found`, `refused`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            ActError::NotConfigured(_) => "not_configured",
            ActError::NotFound(_) => "not_found",
            ActError::Refused(_) => "refused",
            ActError::Unavailable { .. } => "unavailable",
            ActError::Invalid(_) => "invalid",
        }
    }
}

/// Carries out approved actions of some kinds. Implementations live beside this
/// file (`kube.rs`, `argo.rs`, `redis.rs`, `http_config.rs`, `notify.rs`); the
/// simulation binds the same trait to its simulated world.
#[async_trait::async_trait]
pub trait Actuator: Send + Sync {
    /// A short name for logs and metrics (`kubernetes`, `redis`, …).
    fn name(&self) -> &'static str;

    /// Whether this actuator carries out `action` (its kind, and for named
    /// targets — Redis, HTTP endpoints, notify channels — whether it knows the name).
    fn handles(&self, action: &Action) -> bool;

    /// Carries the action out once (with bounded retries of idempotent calls) and
    /// reports what it did and how to undo it.
    async fn execute(&self, action: &Approved) -> Result<Effect, ActError>;

    /// Reads the target's current state without changing it (replicas, the pod's
    /// UID and phase, ConfigMap values, the endpoint's current config…): recorded
    /// before acting, and used after a crash to report an `outcome unknown` action
    /// against the world.
    async fn observe(&self, action: &Action) -> Result<serde_json::Value, ActError>;
}
