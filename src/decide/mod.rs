//! Decide: turns firing alerts and anomaly incidents into actions, safely.
//!
//! - `intake`: the one queue alert transitions, incidents, people's commands and
//!   actuators' reports arrive through; producers never block.
//! - `policy`: allow-lists, cooldown, dedup, rate limits, blast radius, dry-run,
//!   approval — a pure function of its marks and the time it is given.
//! - `decider`: the thread that owns the cases and walks each rule's actions as an
//!   escalation ladder, verifies each action and falls back or escalates.
//! - `executor`: the only caller of actuators; intent durable first, outcome after.
//! - `events`, `metrics`: what the loop reports (`closed_loop_*`).
//! - `clock`: injected time (the simulation and `replay` bring their own).
//!
//! Invariants: nothing mutates the outside world without passing the policy, the
//! re-check of its condition and a durable intent in the knowledge store; a crash
//! never repeats an action; the rules and anomaly stages are never blocked by
//! Decide. Must never: be imported by `act/` or `knowledge/`.

pub mod clock;
pub mod conditions;
pub mod config;
mod decider;
mod events;
mod executor;
pub mod intake;
pub mod metrics;
pub mod policy;

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::act::Actuator;
use crate::knowledge::{
    ActionQuery, ActionRecord, AuditEvent, AuditId, KnowledgeError, KnowledgeStore, Outcome,
};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::DecideConfig;
pub use decider::{Conditions, Decider};
pub use intake::{Command, IncidentOpened, Input, Intake};
pub use metrics::DecideMetrics;

/// Why a request to Decide failed.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No action has this id.
    #[error("no action {0}")]
    NotFound(AuditId),
    /// The action is not in a state the request applies to.
    #[error("{0}")]
    Conflict(String),
    /// The requester may not do this (not among the rule's approvers).
    #[error("{0}")]
    Forbidden(String),
    /// The knowledge store failed.
    #[error(transparent)]
    Store(#[from] KnowledgeError),
    /// The decider is not running (shutting down), or its write failed.
    #[error("the decider is not running, or its audit write failed")]
    Unavailable,
}

/// A decider for `replay` and the simulation: dry-run forced, an in-memory
/// knowledge store (returned, to read its decisions), every action counted as
/// handled, driven with [`Decider::step`] on `clock`. Must be called inside a tokio
/// runtime.
pub fn replay_decider(
    mut cfg: DecideConfig,
    conditions: Arc<dyn Conditions>,
    clock: Arc<dyn Clock>,
) -> Result<(Decider, Arc<dyn KnowledgeStore>), KnowledgeError> {
    cfg.dry_run = true;
    let store: Arc<dyn KnowledgeStore> = Arc::new(crate::knowledge::SqliteStore::in_memory()?);
    let (tx, _rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(
        DecideMetrics::new(
            &prometheus::Registry::new(),
            cfg.success_rate_window.as_millis(),
        )
        .map_err(|e| KnowledgeError::Corrupt {
            id: 0,
            reason: e.to_string(),
        })?,
    );
    let executor = executor::Executor::new(
        store.clone(),
        Arc::default(),
        tokio::runtime::Handle::current(),
        tx,
    );
    let decider = Decider::new(
        cfg,
        store.clone(),
        executor,
        conditions,
        clock,
        metrics,
        Arc::new(AtomicUsize::new(0)),
        true,
    );
    Ok((decider, store))
}

/// A decider that acts, driven step by step on `clock` (the simulation): actions
/// pass the policy and the re-check, their intents are written to `store`, and
/// they run through `actuators` on `runtime`. Each actuator's report arrives on the
/// returned receiver, to be handed back with [`Decider::step`];
/// [`Decider::in_flight`] says how many are still out.
pub fn stepped_decider(
    cfg: DecideConfig,
    store: Arc<dyn KnowledgeStore>,
    actuators: Vec<Arc<dyn Actuator>>,
    conditions: Arc<dyn Conditions>,
    clock: Arc<dyn Clock>,
    metrics: Arc<DecideMetrics>,
    runtime: tokio::runtime::Handle,
) -> (Decider, std::sync::mpsc::Receiver<Input>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let executor = executor::Executor::new(
        store.clone(),
        Arc::new(parking_lot::RwLock::new(actuators)),
        runtime,
        tx,
    );
    let decider = Decider::new(
        cfg,
        store,
        executor,
        conditions,
        clock,
        metrics,
        Arc::new(AtomicUsize::new(0)),
        false,
    );
    (decider, rx)
}

/// The running Decide stage: its intake for the rules and anomaly stages, and the
/// operations the API and CLI call.
pub struct Decide {
    tx: Sender<Input>,
    actuators: Arc<parking_lot::RwLock<Vec<Arc<dyn Actuator>>>>,
    intake: Arc<Intake>,
    store: Arc<dyn KnowledgeStore>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What Decide is built from.
pub struct DecideDeps {
    pub store: Arc<dyn KnowledgeStore>,
    pub actuators: Vec<Arc<dyn Actuator>>,
    pub conditions: Arc<dyn Conditions>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<DecideMetrics>,
    /// Where actuators run (async I/O).
    pub runtime: tokio::runtime::Handle,
}

impl Decide {
    /// Starts the decider thread: it first recovers what a previous process left
    /// (unknown outcomes, pending approvals, verifications, policy marks).
    pub fn start(cfg: DecideConfig, deps: DecideDeps) -> std::io::Result<Decide> {
        let (tx, rx) = std::sync::mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let intake = Arc::new(Intake::new(
            tx.clone(),
            depth.clone(),
            cfg.queue_capacity,
            deps.metrics.clone(),
        ));
        let actuators = Arc::new(parking_lot::RwLock::new(deps.actuators));
        let executor = executor::Executor::new(
            deps.store.clone(),
            actuators.clone(),
            deps.runtime,
            tx.clone(),
        );
        let decider = Decider::new(
            cfg,
            deps.store.clone(),
            executor,
            deps.conditions,
            deps.clock,
            deps.metrics,
            depth,
            false,
        );
        let thread = std::thread::Builder::new()
            .name("decider".into())
            .spawn(move || decider.run(rx))?;
        Ok(Decide {
            tx,
            actuators,
            intake,
            store: deps.store,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Where the rules engine sends alert transitions and the anomaly stage
    /// incidents.
    pub fn intake(&self) -> Arc<Intake> {
        self.intake.clone()
    }

    async fn command(&self, c: Command) -> Result<ActionRecord, DecideError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Input::Command(c, reply))
            .map_err(|_| DecideError::Unavailable)?;
        rx.await.map_err(|_| DecideError::Unavailable)?
    }

    /// Approves a pending action; it runs once it passes the policy and the re-check
    /// again. Answers once the decision is durable.
    pub async fn approve(&self, id: AuditId, by: String) -> Result<ActionRecord, DecideError> {
        self.command(Command::Approve { id, by }).await
    }

    /// Rejects a pending action.
    pub async fn reject(
        &self,
        id: AuditId,
        by: String,
        reason: String,
    ) -> Result<ActionRecord, DecideError> {
        self.command(Command::Reject { id, by, reason }).await
    }

    /// Runs the inverse of a succeeded action, through the policy and the audit log.
    pub async fn rollback(&self, id: AuditId, by: String) -> Result<ActionRecord, DecideError> {
        self.command(Command::Rollback { id, by }).await
    }

    /// Replaces the policy configuration (a reload).
    pub fn reconfigure(&self, cfg: DecideConfig) {
        let _ = self.tx.send(Input::Reconfigure(Box::new(cfg)));
    }

    /// Replaces the actuators (a reload); actions already running keep theirs.
    pub fn set_actuators(&self, actuators: Vec<Arc<dyn Actuator>>) {
        *self.actuators.write() = actuators;
    }

    /// Actions of the audit log (blocking: a store read).
    pub fn actions(&self, q: &ActionQuery) -> Result<Vec<ActionRecord>, DecideError> {
        Ok(self.store.actions(q)?)
    }

    /// One action with its audit events (blocking).
    pub fn action(&self, id: AuditId) -> Result<(ActionRecord, Vec<AuditEvent>), DecideError> {
        let rec = self.store.action(id)?.ok_or(DecideError::NotFound(id))?;
        Ok((rec, self.store.events(id)?))
    }

    /// Actions waiting for approval, oldest first (blocking).
    pub fn approvals(&self) -> Result<Vec<ActionRecord>, DecideError> {
        Ok(self.store.actions_in(&[Outcome::PendingApproval])?)
    }

    /// Stops the decider after the batch in hand is written.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}
