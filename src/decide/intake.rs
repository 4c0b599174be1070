//! The decider's intake: alert transitions from the rules engine and incident
//! openings from the anomaly stage arrive here, through one queue, with the
//! decider's commands (approvals, rollbacks) and the executor's reports.
//!
//! Invariants: producers never block — when `decide.queue_capacity` inputs from the
//! rules and anomaly stages are waiting, further ones are dropped and counted in
//! `closed_loop_intake_dropped_total{source}`; commands and reports are never
//! dropped (they are bounded by requests in flight and actions running).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use crate::act::{ActError, Action, Effect};
use crate::knowledge::{ActionRecord, AuditId};
use crate::rules::{AlertSink, AlertTransition, Severity};

use super::events::{Emit, IntakeDropped};
use super::metrics::DecideMetrics;
use super::DecideError;

/// An anomaly incident that just opened.
#[derive(Debug, Clone)]
pub struct IncidentOpened {
    pub id: u64,
    /// The grouping label and value (`{service="checkout"}`).
    pub group: BTreeMap<String, String>,
    pub severity: Severity,
    /// The first anomalous sample's time (ms).
    pub start_ms: i64,
    /// When the incident was opened (ms).
    pub opened_ms: i64,
    /// When it was seen (monotonic): decision latency runs from here.
    pub seen: Instant,
    /// Root-cause context (the RCA stage's ranked causes), carried into the audit
    /// log with every decision taken for the incident. `None` until RCA feeds it.
    pub context: Option<serde_json::Value>,
}

/// What a person asks of the decider.
#[derive(Debug, Clone)]
pub enum Command {
    Approve {
        id: AuditId,
        by: String,
    },
    Reject {
        id: AuditId,
        by: String,
        reason: String,
    },
    Rollback {
        id: AuditId,
        by: String,
    },
}

/// Answers a command once its audit entries are durable.
pub type Reply = tokio::sync::oneshot::Sender<Result<ActionRecord, DecideError>>;

/// An actuator's report: `action` as it ran (e.g. with the pod's UID; `None` when
/// the call timed out), its result, and what it observed of the target.
pub struct Executed {
    pub id: AuditId,
    pub action: Option<Action>,
    pub result: Result<Effect, ActError>,
    pub observed: Option<serde_json::Value>,
}

/// Everything the decider reacts to.
pub enum Input {
    Alert(AlertTransition),
    Incident(IncidentOpened),
    Command(Command, Reply),
    /// An actuator finished.
    Executed(Box<Executed>),
    /// What an actuator read of the target of an action found `unknown` at start.
    Observed {
        id: AuditId,
        result: Result<serde_json::Value, String>,
    },
    /// Replace the policy configuration (reload).
    Reconfigure(Box<super::DecideConfig>),
    Stop,
}

/// The producers' side of the queue: the rules' alert sink and the anomaly stage's
/// incident sink.
pub struct Intake {
    tx: Sender<Input>,
    /// Alert and incident inputs queued and not yet taken.
    depth: Arc<AtomicUsize>,
    capacity: usize,
    metrics: Arc<DecideMetrics>,
}

impl Intake {
    pub(super) fn new(
        tx: Sender<Input>,
        depth: Arc<AtomicUsize>,
        capacity: usize,
        metrics: Arc<DecideMetrics>,
    ) -> Self {
        Intake {
            tx,
            depth,
            capacity,
            metrics,
        }
    }

    fn offer(&self, input: Input, source: &'static str) {
        if self.depth.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            IntakeDropped { source }.emit(&self.metrics);
            return;
        }
        if self.tx.send(input).is_err() {
            // The decider stopped (shutdown): nothing will act on it.
            self.depth.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// An anomaly incident opened.
    pub fn incident(&self, incident: IncidentOpened) {
        self.offer(Input::Incident(incident), "incident");
    }
}

impl AlertSink for Intake {
    fn send(&self, transition: AlertTransition) {
        self.offer(Input::Alert(transition), "alert");
    }
}
