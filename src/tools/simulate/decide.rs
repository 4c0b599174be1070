//! The Decide stage on simulated time: the real decider (policy, re-check,
//! approvals, verification, escalation) over a real SQLite knowledge store in a
//! temporary directory, acting on the world through [`SimActuator`] — the same
//! executor and `Actuator` trait as the service. Simulated people answer approval
//! requests after `human.approval_delay` and, once paged (a notification ran), fix
//! by hand what is still broken after `human.response_time`.
//!
//! Invariants: the decider's clock is the simulation's; the actuators run on a
//! current-thread runtime driven only here, so a run is deterministic; every action
//! the report lists is read back from the audit log, never from what this module
//! asked for. Must never: act on the world except through the decider, or (as the
//! simulated human) by hand outside it, recorded as such.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::actuator::SimActuator;
use super::measure::{ActionRecord, Actor, Refusal};
use super::world::{FaultPhase, World};
use super::SimulateError;
use crate::act::{ActionKind, Actuator};
use crate::decide::conditions::StaticConditions;
use crate::decide::{Clock, Command, DecideConfig, DecideMetrics, Decider, Input, ManualClock};
use crate::knowledge::{ActionQuery, AuditId, EventKind, KnowledgeStore, Outcome, SqliteStore};
use crate::rules::AlertTransition;

/// Longest wait, in wall time, for an actuator call on the simulated world (they
/// take microseconds; this only turns a bug into an error instead of a hang).
const ACTUATOR_WAIT: Duration = Duration::from_secs(60);

/// Who approves, in the audit log.
const APPROVER: &str = "sim-oncall";

/// What the audit log held at the end: actions with when each ran (ms since the
/// start), refusals, and counts by outcome.
pub type Audited = (Vec<(i64, ActionRecord)>, Vec<Refusal>, serde_json::Value);

/// The decider and what it needs, on the simulated clock.
pub struct SimDecide {
    decider: Decider,
    reports: Receiver<Input>,
    store: Arc<dyn KnowledgeStore>,
    pub conditions: Arc<StaticConditions>,
    clock: Arc<ManualClock>,
    runtime: tokio::runtime::Runtime,
    world: Arc<Mutex<World>>,
    approval_delay_ms: i64,
    response_ms: i64,
    /// Approval requests seen, and when the simulated human answers each.
    approvals: BTreeMap<AuditId, i64>,
    /// Pages (ms since the start): when the on-call was paged.
    pages: Vec<i64>,
    last_seen: AuditId,
    /// Fixes done by hand: (ms since start, action, target, summary, faults).
    pub manual: Vec<(i64, ActionRecord)>,
    /// Where the knowledge store lives (removed with it).
    _dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
}

impl SimDecide {
    pub fn new(
        cfg: DecideConfig,
        world: Arc<Mutex<World>>,
        registry: &prometheus::Registry,
        start_ms: i64,
    ) -> Result<SimDecide, SimulateError> {
        let setup = |e: &dyn std::fmt::Display| SimulateError::Setup(e.to_string());
        let dir = tempfile::Builder::new()
            .prefix("closedloop-simulate-")
            .tempdir()
            .map_err(|e| setup(&e))?;
        let path = dir.path().join("knowledge.db");
        let store: Arc<dyn KnowledgeStore> =
            Arc::new(SqliteStore::open(&path).map_err(|e| setup(&e))?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(&e))?;
        let metrics = Arc::new(
            DecideMetrics::new(registry, cfg.success_rate_window.as_millis())
                .map_err(|e| setup(&e))?,
        );
        let conditions = Arc::new(StaticConditions::default());
        let clock = Arc::new(ManualClock::new(start_ms));
        let (human, response) = {
            let w = world.lock();
            let h = &w.scenario().human;
            (h.approval_delay.as_millis(), h.response_time.as_millis())
        };
        let actuators: Vec<Arc<dyn Actuator>> = vec![Arc::new(SimActuator::new(world.clone()))];
        let (decider, reports) = crate::decide::stepped_decider(
            cfg,
            store.clone(),
            actuators,
            conditions.clone(),
            clock.clone(),
            metrics,
            runtime.handle().clone(),
        );
        Ok(SimDecide {
            decider,
            reports,
            store,
            conditions,
            clock,
            runtime,
            world,
            approval_delay_ms: human,
            response_ms: response,
            approvals: BTreeMap::new(),
            pages: Vec::new(),
            last_seen: AuditId(0),
            manual: Vec::new(),
            _dir: dir,
            path,
        })
    }

    /// One step at `t_abs` (epoch ms; `t` since the start): the alert transitions
    /// and incidents of this step, then due timers, answers to approvals and the
    /// on-call's manual fixes.
    pub fn step(
        &mut self,
        t: i64,
        t_abs: i64,
        transitions: Vec<AlertTransition>,
        incidents: Vec<crate::decide::IncidentOpened>,
    ) -> Result<(), SimulateError> {
        self.clock.set(t_abs);
        for i in incidents {
            self.decider.step(Input::Incident(i));
            self.settle()?;
        }
        for tr in transitions {
            self.decider.step(Input::Alert(tr));
            self.settle()?;
        }
        self.decider.step_timers();
        self.settle()?;
        let due: Vec<AuditId> = self
            .approvals
            .iter()
            .filter(|(_, at)| **at <= t_abs)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.approvals.remove(&id);
            let (reply, _answer) = tokio::sync::oneshot::channel();
            self.decider.step(Input::Command(
                Command::Approve {
                    id,
                    by: APPROVER.into(),
                },
                reply,
            ));
            self.settle()?;
        }
        self.read_new(t)?;
        self.fix_by_hand(t);
        Ok(())
    }

    /// Hands every actuator report back to the decider until none is out.
    fn settle(&mut self) -> Result<(), SimulateError> {
        let started = Instant::now();
        while self.decider.in_flight() > 0 {
            // The actuators' tasks run while the runtime is driven.
            self.runtime.block_on(tokio::task::yield_now());
            while let Ok(report) = self.reports.try_recv() {
                self.decider.step(report);
            }
            if started.elapsed() > ACTUATOR_WAIT {
                return Err(SimulateError::Setup(format!(
                    "{} simulated action(s) did not finish within {}s",
                    self.decider.in_flight(),
                    ACTUATOR_WAIT.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// Looks at the actions recorded since the last look: approval requests get a
    /// simulated answer; notifications that ran page the on-call.
    fn read_new(&mut self, t: i64) -> Result<(), SimulateError> {
        let t_abs = self.clock.now_ms();
        // Newest first; a step records far fewer than this.
        let fresh = self
            .store
            .actions(&ActionQuery {
                limit: 4096,
                ..Default::default()
            })
            .map_err(|e| SimulateError::Setup(e.to_string()))?;
        for a in fresh.iter().filter(|a| a.id > self.last_seen) {
            if a.outcome == Outcome::PendingApproval {
                self.approvals.insert(a.id, t_abs + self.approval_delay_ms);
            }
        }
        // Notifications run at once: a page is one that succeeded since the last look.
        for a in &fresh {
            if a.id > self.last_seen
                && a.kind == ActionKind::Notify
                && a.outcome == Outcome::Succeeded
            {
                self.pages.push(t);
            }
        }
        if let Some(max) = fresh.iter().map(|a| a.id).max() {
            self.last_seen = self.last_seen.max(max);
        }
        Ok(())
    }

    /// The paged on-call, `response_time` after the page, fixes by hand every fault
    /// that started before the page and is still active.
    fn fix_by_hand(&mut self, t: i64) {
        let response = self.response_ms;
        let Some(paged_at) = self
            .pages
            .iter()
            .copied()
            .filter(|&p| p + response <= t)
            .min()
        else {
            return;
        };
        self.pages.retain(|&p| p + response > t);
        let mut world = self.world.lock();
        let active: Vec<usize> = world
            .faults()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.phase == FaultPhase::Active && f.start <= paged_at)
            .map(|(i, _)| i)
            .collect();
        for i in active {
            let Some((action, result)) = world.fix_by_hand(i) else {
                continue;
            };
            let (outcome, summary, fixes) = match result {
                Ok(e) => ("executed", e.summary.clone(), fixes_of(&e.details)),
                Err(e) => ("failed", e.to_string(), Vec::new()),
            };
            self.manual.push((
                t,
                ActionRecord {
                    at_s: t as f64 / 1000.0,
                    rule: "(on-call, by hand)".into(),
                    action: action.kind().as_str().into(),
                    target: action.target(),
                    actor: Actor::Human,
                    outcome: outcome.into(),
                    summary,
                    fixes,
                    success: None,
                },
            ));
        }
    }

    /// Everything the audit log holds, as the report lists it: actions (with when
    /// each ran, ms since the start) and refusals.
    pub fn finish(&mut self, start_ms: i64) -> Result<Audited, SimulateError> {
        let err = |e: crate::knowledge::KnowledgeError| SimulateError::Setup(e.to_string());
        let mut all = self
            .store
            .actions(&ActionQuery {
                limit: 1_000_000,
                ..Default::default()
            })
            .map_err(err)?;
        all.sort_by_key(|a| a.id);
        let mut actions = Vec::new();
        let mut refused = Vec::new();
        let mut by_outcome: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut events = 0usize;
        let mut approved = BTreeSet::new();
        for a in &all {
            *by_outcome.entry(a.outcome.as_str()).or_default() += 1;
            let evs = self.store.events(a.id).map_err(err)?;
            events += evs.len();
            let rule = a.cause.rule.clone();
            let secs = |ms: i64| (ms - start_ms) as f64 / 1000.0;
            match a.outcome {
                Outcome::Refused | Outcome::Cancelled | Outcome::Expired | Outcome::Rejected => {
                    refused.push(Refusal {
                        at_s: secs(a.created_ms),
                        rule,
                        action: a.kind.as_str().into(),
                        target: a.target.clone(),
                        reason: format!(
                            "{}: {}",
                            a.outcome.as_str(),
                            a.reason.clone().unwrap_or_default()
                        ),
                    });
                }
                Outcome::Succeeded | Outcome::Failed | Outcome::DryRun | Outcome::Unknown => {
                    let ran_at = evs
                        .iter()
                        .find(|e| e.kind == EventKind::ExecutionStarted)
                        .map(|e| e.at_ms)
                        .unwrap_or(a.created_ms);
                    let was_approved = evs.iter().any(|e| e.kind == EventKind::Approved);
                    if was_approved {
                        approved.insert(a.id);
                    }
                    let (outcome, summary) = match (&a.outcome, &a.effect) {
                        (Outcome::Succeeded, Some(e)) => ("executed", e.summary.clone()),
                        (Outcome::DryRun, _) => ("dry_run", String::new()),
                        _ => ("failed", a.reason.clone().unwrap_or_default()),
                    };
                    let fixes = a
                        .effect
                        .as_ref()
                        .map(|e| fixes_of(&e.details))
                        .unwrap_or_default();
                    actions.push((
                        ran_at - start_ms,
                        ActionRecord {
                            at_s: secs(ran_at),
                            rule,
                            action: a.kind.as_str().into(),
                            target: a.target.clone(),
                            actor: if was_approved {
                                Actor::LoopApproved
                            } else {
                                Actor::Loop
                            },
                            outcome: outcome.into(),
                            summary,
                            fixes,
                            success: None,
                        },
                    ));
                }
                Outcome::PendingApproval | Outcome::Executing => {}
            }
        }
        actions.append(&mut self.manual);
        actions.sort_by_key(|(t, _)| *t);
        let audit = serde_json::json!({
            "store": "sqlite (temporary file, removed at the end)",
            "actions": all.len(),
            "events": events,
            "by_outcome": by_outcome,
            "approved_by_human": approved.len(),
        });
        Ok((actions, refused, audit))
    }
}

fn fixes_of(details: &serde_json::Value) -> Vec<String> {
    details
        .get("fixes")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
