//! Knowledge: the loop's durable memory — the audit log of every decision and action,
//! pending approvals, cooldown and rate-limit state, and the rules' alert for-state —
//! behind one store trait with an embedded implementation.
//!
//! The data model is three tables (see `sqlite.rs` for the SQL,
//! ARCHITECTURE.md for how to read them with the `sqlite3` CLI):
//! - `actions`: one row per action the loop considered — what, on what, why, and
//!   where it stands ([`Outcome`], [`Verification`]); each row also keeps the
//!   policy marks its decision set (cooldown, rate-limit and blast-radius windows,
//!   dedup key), so they are written with the decision;
//! - `audit`: append-only events of each action (decided, refused, approved,
//!   execution started, succeeded, verified, rolled back…) with who caused them;
//! - `alert_state`: the rules' pending/firing alerts (their `for` state).
//!
//! Invariants: an [`IntentReceipt`] exists only once the intent it names is durable;
//! only this module (and its children) can create one, and `act::Approved` cannot be
//! made without one. The store hands out at most one receipt per action, ever: an
//! action whose intent was written is never made executable again (a crash leaves it
//! `unknown`, not retried). Must never: import from `decide/`.

mod sqlite;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::act::{Action, ActionKind, Effect};

pub use sqlite::SqliteStore;

/// `knowledge:` — where the loop's memory lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// The SQLite database file (relative to the configuration file). It holds the
    /// audit log, pending approvals, policy state and the rules' alert state.
    pub path: std::path::PathBuf,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig {
            path: std::path::PathBuf::from("data/closedloop.db"),
        }
    }
}

/// Why the knowledge store failed.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// The database could not be opened, read or written.
    #[error("knowledge store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode (written by a newer version, or edited by hand).
    #[error("knowledge store: row {id}: {reason}")]
    Corrupt { id: i64, reason: String },
    /// The requested change does not apply to the row's current state (e.g. a
    /// second intent for an action that already ran).
    #[error("knowledge store: action {id}: {reason}")]
    Conflict { id: i64, reason: String },
    /// The row does not exist.
    #[error("knowledge store: no action {0}")]
    NotFound(i64),
    /// The database file's directory could not be created.
    #[error("knowledge store: {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = KnowledgeError> = std::result::Result<T, E>;

/// Where an action stands: the `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The policy refused it (the reason says which check).
    Refused,
    /// Decided and audited; not executed (dry-run).
    DryRun,
    /// Waiting for a human.
    PendingApproval,
    /// A human rejected it.
    Rejected,
    /// Nobody approved it in time.
    Expired,
    /// Dropped before it ran: the condition cleared, or the re-check failed.
    Cancelled,
    /// The intent is durable and the actuator was (or is being) called.
    Executing,
    /// The actuator reported success.
    Succeeded,
    /// The actuator reported an error.
    Failed,
    /// The process stopped while it was executing: it may or may not have run.
    /// Never retried; checked against the world at start.
    Unknown,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Refused,
        Outcome::DryRun,
        Outcome::PendingApproval,
        Outcome::Rejected,
        Outcome::Expired,
        Outcome::Cancelled,
        Outcome::Executing,
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::DryRun => "dry_run",
            Outcome::PendingApproval => "pending_approval",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Cancelled => "cancelled",
            Outcome::Executing => "executing",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        by_name(&Outcome::ALL, Outcome::as_str, s)
    }

    /// Whether an intent was ever written for it (it ran, or may have).
    pub fn was_attempted(self) -> bool {
        matches!(
            self,
            Outcome::Executing | Outcome::Succeeded | Outcome::Failed | Outcome::Unknown
        )
    }
}

/// Whether the condition cleared after the action: the `verification` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// The verify window is running.
    Pending,
    /// The condition cleared: the action worked.
    Cleared,
    /// The condition still held at the end of the window.
    NotCleared,
}

impl Verification {
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Pending => "pending",
            Verification::Cleared => "cleared",
            Verification::NotCleared => "not_cleared",
        }
    }

    pub fn parse(s: &str) -> Option<Verification> {
        by_name(
            &[
                Verification::Pending,
                Verification::Cleared,
                Verification::NotCleared,
            ],
            Verification::as_str,
            s,
        )
    }
}

/// What the action was taken for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// `alert`, `incident`, `rollback` or `escalation`.
    pub trigger: String,
    /// The rule (`group/name`), or empty.
    pub rule: String,
    /// The alert's (or incident's group) labels.
    pub labels: BTreeMap<String, String>,
    /// Identifies the alert instance or incident (dedup key); empty for rollbacks.
    pub instance: String,
    /// The step of the rule's action list (0-based).
    pub step: u32,
}

/// A new row of `actions`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    pub at_ms: i64,
    pub cause: Cause,
    pub action: Action,
    pub dry_run: bool,
    pub outcome: Outcome,
    /// Refusal or error reason.
    pub reason: Option<String>,
    /// When a pending approval expires.
    pub approval_expires_ms: Option<i64>,
    /// The action this one undoes. Inserting a rollback as `executing` marks that
    /// action `rolled_back_by` in the same transaction, and fails with
    /// [`KnowledgeError::Conflict`] if it was rolled back already.
    pub rollback_of: Option<AuditId>,
}

/// Changes to an existing row (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionUpdate {
    pub outcome: Option<Outcome>,
    pub verification: Option<Verification>,
    pub reason: Option<String>,
    pub effect: Option<Effect>,
    pub decided_by: Option<String>,
    /// The action as it will run (e.g. a pod restart with the UID it must match).
    pub action: Option<Action>,
}

/// What kind of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Refused,
    DryRun,
    ApprovalRequested,
    Approved,
    Rejected,
    ApprovalExpired,
    Cancelled,
    /// The intent: written, and durable, before the actuator runs.
    ExecutionStarted,
    Succeeded,
    Failed,
    /// Found `executing` at start: the process died while it ran.
    OutcomeUnknown,
    /// The target as the actuator read it (after a crash, or before acting).
    Observed,
    Verified,
    NotCleared,
    RollbackRequested,
    Escalated,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Refused,
        EventKind::DryRun,
        EventKind::ApprovalRequested,
        EventKind::Approved,
        EventKind::Rejected,
        EventKind::ApprovalExpired,
        EventKind::Cancelled,
        EventKind::ExecutionStarted,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::OutcomeUnknown,
        EventKind::Observed,
        EventKind::Verified,
        EventKind::NotCleared,
        EventKind::RollbackRequested,
        EventKind::Escalated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Refused => "refused",
            EventKind::DryRun => "dry_run",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::Approved => "approved",
            EventKind::Rejected => "rejected",
            EventKind::ApprovalExpired => "approval_expired",
            EventKind::Cancelled => "cancelled",
            EventKind::ExecutionStarted => "execution_started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::OutcomeUnknown => "outcome_unknown",
            EventKind::Observed => "observed",
            EventKind::Verified => "verified",
            EventKind::NotCleared => "not_cleared",
            EventKind::RollbackRequested => "rollback_requested",
            EventKind::Escalated => "escalated",
        }
    }

    fn parse(s: &str) -> Option<EventKind> {
        by_name(&EventKind::ALL, EventKind::as_str, s)
    }
}

/// The value of `all` named `s`.
fn by_name<T: Copy>(all: &[T], name: fn(T) -> &'static str, s: &str) -> Option<T> {
    all.iter().copied().find(|v| name(*v) == s)
}

/// One audit event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub at_ms: i64,
    pub kind: EventKind,
    /// Who or what caused it: `rule:group/name`, `user:alice`, `policy`, `system`.
    pub actor: String,
    /// Details (reason, effect, observation…).
    pub detail: serde_json::Value,
}

/// A policy window or key (cooldown, rate limit, blast radius, dedup), kept until
/// `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMark {
    /// `cooldown`, `rate`, `blast` or `dedup`.
    pub scope: String,
    pub key: String,
    pub at_ms: i64,
    pub until_ms: i64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new action with its first event. With outcome `executing` this is an
    /// intent: a receipt is handed out once the batch is durable.
    Insert {
        action: NewAction,
        event: NewEvent,
        marks: Vec<PolicyMark>,
    },
    /// An update of an action with its event. An update to `executing` is an
    /// intent: it is accepted only from `pending_approval` (an action that never
    /// ran), else the whole batch fails with [`KnowledgeError::Conflict`].
    Update {
        id: AuditId,
        update: ActionUpdate,
        event: NewEvent,
        marks: Vec<PolicyMark>,
    },
}

/// The result of one change: the action's id and, for an intent, its receipt.
#[derive(Debug)]
pub struct Applied {
    pub id: AuditId,
    pub receipt: Option<IntentReceipt>,
}

/// A row of `actions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    pub id: AuditId,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub cause: Cause,
    pub kind: ActionKind,
    pub target: String,
    pub action: Action,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub verification: Option<Verification>,
    pub reason: Option<String>,
    pub effect: Option<Effect>,
    pub approval_expires_ms: Option<i64>,
    pub decided_by: Option<String>,
    pub rollback_of: Option<AuditId>,
    pub rolled_back_by: Option<AuditId>,
}

/// A row of `audit`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub action_id: AuditId,
    pub at_ms: i64,
    pub kind: EventKind,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// Filters of `GET /api/v1/actions` (all optional), newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionQuery {
    pub rule: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    pub kind: Option<ActionKind>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Only ids below this (the previous page's last id).
    pub before: Option<AuditId>,
    pub limit: usize,
}

/// One saved pending or firing alert of the rules engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertStateRow {
    /// The group (`file;name`).
    pub group: String,
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    pub active_at_ms: i64,
    pub fired_at_ms: Option<i64>,
}

/// The loop's durable memory. Every write method is durable when it returns.
pub trait KnowledgeStore: Send + Sync {
    /// Applies the changes in one transaction (one fsync), all or nothing.
    fn apply(&self, changes: Vec<Change>) -> Result<Vec<Applied>>;
    /// One action.
    fn action(&self, id: AuditId) -> Result<Option<ActionRecord>>;
    /// An action's audit events, oldest first.
    fn events(&self, id: AuditId) -> Result<Vec<AuditEvent>>;
    /// Actions matching `q`, newest first, at most `q.limit`.
    fn actions(&self, q: &ActionQuery) -> Result<Vec<ActionRecord>>;
    /// Actions whose outcome is one of `outcomes`, oldest first.
    fn actions_in(&self, outcomes: &[Outcome]) -> Result<Vec<ActionRecord>>;
    /// Policy marks still in force at `now_ms` (from every decision's marks).
    fn marks(&self, now_ms: i64) -> Result<Vec<PolicyMark>>;
    /// The rules' saved alert state.
    fn alert_states(&self) -> Result<Vec<AlertStateRow>>;
    /// Replaces the rules' saved alert state.
    fn replace_alert_states(&self, rows: &[AlertStateRow]) -> Result<()>;
}

/// Identifies one entry of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuditId(pub i64);

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Proof that an action's intent has been written durably to the audit log.
#[derive(Debug, PartialEq, Eq)]
pub struct IntentReceipt {
    id: AuditId,
}

impl IntentReceipt {
    /// Made by a store implementation right after the intent's write is durable.
    fn durable(id: AuditId) -> Self {
        IntentReceipt { id }
    }

    /// The intent's audit entry.
    pub fn id(&self) -> AuditId {
        self.id
    }

    /// A receipt for unit tests of actuators, which have no store.
    #[cfg(test)]
    pub(crate) fn for_test(id: i64) -> Self {
        IntentReceipt { id: AuditId(id) }
    }
}
