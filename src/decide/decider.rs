//! The decider: one thread that owns the loop's working state — the cases (alerts and
//! incidents being handled, each walking its rule's actions as an escalation
//! ladder), pending approvals, running actions, verification timers — and turns
//! inputs into audited decisions. It reads like a small reconciler: take what
//! arrived, judge each proposal with the policy, write every decision of the batch
//! in one durable transaction, then start what was admitted.
//!
//! The ladder: a rule's `actions:` run in order. A `notify` step runs and the ladder
//! goes on at once; a step that changes something runs, then the condition is
//! re-checked after its verify window — cleared: success, the ladder stops;
//! still there (or the step failed, or was refused): the next step runs. When the
//! steps are exhausted after a failure, `decide.escalate_to` is notified. A step is
//! never repeated for the same alert.
//!
//! Invariants: nothing runs without passing the policy and the re-check, and without
//! its intent durable first (the executor enforces the latter); time comes only from
//! the injected clock; a command is answered only once its audit entries are
//! durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::act::{ActError, Action, ActionKind, Effect};
use crate::knowledge::{
    ActionRecord, ActionUpdate, Applied, AuditId, Cause, Change, EventKind, KnowledgeStore,
    NewAction, NewEvent, Outcome, Verification,
};
use crate::rules::{AlertTransition, RenderContext, RuleAction, Severity, TransitionKind};

use super::clock::Clock;
use super::events::*;
use super::executor::Executor;
use super::intake::{Command, Executed, IncidentOpened, Input, Reply};
use super::metrics::DecideMetrics;
use super::policy::{Policy, Proposal, RefusalReason, Verdict};
use super::{DecideConfig, DecideError};

/// How often timers (verification, approval expiry) are looked at when idle.
const TICK: Duration = Duration::from_millis(200);
/// Most inputs decided (and written) in one batch: larger batches write faster,
/// smaller ones start their first actions sooner.
const MAX_BATCH: usize = 256;
/// How often a verification whose re-check failed is retried before it counts as
/// not cleared.
const VERIFY_RETRIES: u32 = 3;

/// What the decider asks of the rules and anomaly stages.
pub trait Conditions: Send + Sync {
    /// The label sets for which rule `group`/`rule`'s condition holds now (its
    /// expression evaluated now). `Ok(None)`: no such rule is loaded.
    #[allow(clippy::type_complexity)]
    fn alerts_now(
        &self,
        group: &str,
        rule: &str,
    ) -> Result<Option<Vec<BTreeMap<String, String>>>, String>;

    /// Whether the anomaly incident is still open.
    fn incident_open(&self, id: u64) -> bool;
}

/// What triggered a case.
#[derive(Debug, Clone)]
enum Trigger {
    Alert {
        group: String,
        rule: String,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        value: f64,
        severity: Severity,
        fired_at_ms: i64,
        interval_ms: i64,
        cooldown_ms: Option<i64>,
        dry_run: bool,
        approval_required: bool,
        approval_timeout_ms: Option<i64>,
        approvers: Vec<String>,
    },
    Incident {
        id: u64,
        group: BTreeMap<String, String>,
        severity: Severity,
        opened_ms: i64,
        context: Option<serde_json::Value>,
    },
}

impl Trigger {
    fn rule_name(&self) -> String {
        match self {
            Trigger::Alert { group, rule, .. } => format!("{group}/{rule}"),
            Trigger::Incident { .. } => "incident".into(),
        }
    }

    fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            Trigger::Alert { labels, .. } => labels,
            Trigger::Incident { group, .. } => group,
        }
    }

    fn severity(&self) -> Severity {
        match self {
            Trigger::Alert { severity, .. } | Trigger::Incident { severity, .. } => *severity,
        }
    }
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// May take its next step.
    Idle,
    /// A decision is in the batch being written.
    Committing,
    /// Waiting for an approval, an execution or a verification.
    Waiting(AuditId),
}

/// An alert or incident being handled.
struct Case {
    trigger: Trigger,
    instance: String,
    steps: Arc<Vec<RuleAction>>,
    next: usize,
    busy: Busy,
    done: bool,
    resolved: bool,
    /// A changing step failed or did not clear the condition, and nothing since has.
    unresolved_failure: bool,
    escalated: bool,
    /// A human was waited for: decision latency is not observed.
    human_waited: bool,
    seen: Instant,
}

impl Case {
    /// A case at its first step, nothing run yet.
    fn new(trigger: Trigger, instance: String, steps: Arc<Vec<RuleAction>>, seen: Instant) -> Self {
        Case {
            trigger,
            instance,
            steps,
            next: 0,
            busy: Busy::Idle,
            done: false,
            resolved: false,
            unresolved_failure: false,
            escalated: false,
            human_waited: false,
            seen,
        }
    }
}

/// A pending approval.
struct Pending {
    case: Option<String>,
    action: Action,
    rule: String,
    instance: String,
    labels: BTreeMap<String, String>,
    severity: Severity,
    cooldown_ms: i64,
    expires_ms: i64,
    approvers: Vec<String>,
    verify_ms: Option<i64>,
}

/// An action running in an actuator.
struct Running {
    case: Option<String>,
    kind: ActionKind,
    target: String,
    /// Verify after this long (None: not verified — notify, rollbacks).
    verify_ms: Option<i64>,
    check: Option<Check>,
}

/// What a verification re-checks.
#[derive(Debug, Clone)]
enum Check {
    Alert {
        group: String,
        rule: String,
        labels: BTreeMap<String, String>,
    },
    Incident(u64),
}

/// A verification timer.
struct Verify {
    id: AuditId,
    case: Option<String>,
    target: String,
    check: Check,
    retries: u32,
}

/// What runs once a batch is durable, given what the store handed back.
type AfterFn = Box<dyn FnOnce(&mut Decider, Applied) + Send>;

/// The alerts of one rule that hold now (`None`: the rule is not loaded), or why
/// the re-check could not tell.
type Recheck = Result<Option<HashSet<BTreeMap<String, String>>>, String>;

/// Work to do once a batch is durable.
struct After {
    case: Option<String>,
    run: AfterFn,
}

/// Runs the loop's decisions.
pub struct Decider {
    policy: Policy,
    store: Arc<dyn KnowledgeStore>,
    executor: Executor,
    conditions: Arc<dyn Conditions>,
    clock: Arc<dyn Clock>,
    metrics: Arc<DecideMetrics>,
    /// Alert and incident inputs queued in the intake.
    depth: Arc<AtomicUsize>,
    incident_steps: Arc<Vec<RuleAction>>,
    /// `replay`: there are no actuators; every action counts as handled.
    assume_handled: bool,
    cases: HashMap<String, Case>,
    approvals: HashMap<AuditId, Pending>,
    running: HashMap<AuditId, Running>,
    verifying: BTreeMap<(i64, AuditId), Verify>,
    changes: Vec<Change>,
    after: Vec<After>,
    /// Re-check results of this batch, per (group, rule).
    recheck: HashMap<(String, String), Recheck>,
    last_prune_ms: i64,
    stop: bool,
}

fn ev(at_ms: i64, kind: EventKind, actor: &str, detail: serde_json::Value) -> NewEvent {
    NewEvent {
        at_ms,
        kind,
        actor: actor.to_string(),
        detail,
    }
}

/// The key of an alert instance: rule, labels and when it became active.
fn alert_instance(t: &AlertTransition) -> String {
    let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!(
        "alert:{}/{}{{{}}}@{}",
        t.rule.group,
        t.rule.name,
        labels.join(","),
        t.active_at_ms
    )
}

impl Decider {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: DecideConfig,
        store: Arc<dyn KnowledgeStore>,
        executor: Executor,
        conditions: Arc<dyn Conditions>,
        clock: Arc<dyn Clock>,
        metrics: Arc<DecideMetrics>,
        depth: Arc<AtomicUsize>,
        assume_handled: bool,
    ) -> Self {
        let incident_steps = Arc::new(incident_steps(&cfg));
        Decider {
            policy: Policy::new(cfg),
            store,
            executor,
            conditions,
            clock,
            metrics,
            depth,
            incident_steps,
            assume_handled,
            cases: HashMap::new(),
            approvals: HashMap::new(),
            running: HashMap::new(),
            verifying: BTreeMap::new(),
            changes: Vec::new(),
            after: Vec::new(),
            recheck: HashMap::new(),
            last_prune_ms: 0,
            stop: false,
        }
    }

    /// Runs until [`Input::Stop`] or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Input>) {
        self.recover();
        while !self.stop {
            match rx.recv_timeout(self.wait()) {
                Ok(first) => {
                    self.handle(first);
                    let mut n = 1;
                    while n < MAX_BATCH && !self.stop {
                        match rx.try_recv() {
                            Ok(more) => self.handle(more),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.stop = true,
            }
            self.tick();
            self.commit();
        }
    }

    /// Handles one input, then timers, then writes the batch (the replay and the
    /// simulation drive the decider this way, on their own clock).
    pub fn step(&mut self, input: Input) {
        self.handle(input);
        self.tick();
        self.commit();
    }

    /// Runs due timers on the current clock and writes what they decided.
    pub fn step_timers(&mut self) {
        self.tick();
        self.commit();
    }

    /// Actions handed to an actuator whose report has not come back yet.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    fn wait(&self) -> Duration {
        let now = self.clock.now_ms();
        let next = self
            .verifying
            .keys()
            .next()
            .map(|(due, _)| *due)
            .into_iter()
            .chain(self.approvals.values().map(|p| p.expires_ms))
            .min();
        match next {
            Some(t) if t > now => Duration::from_millis((t - now) as u64).min(TICK),
            Some(_) => Duration::ZERO,
            None => TICK,
        }
    }

    /// One intake input taken off the queue (inputs handed to [`Decider::step`]
    /// directly were never counted).
    fn taken(&self) {
        let _ = self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                Some(d.saturating_sub(1))
            });
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Alert(t) => {
                self.taken();
                self.on_alert(t);
            }
            Input::Incident(i) => {
                self.taken();
                self.on_incident(i);
            }
            Input::Command(c, reply) => self.on_command(c, reply),
            Input::Executed(e) => {
                let Executed {
                    id,
                    action,
                    result,
                    observed,
                } = *e;
                self.on_executed(id, action, result, observed)
            }
            Input::Observed { id, result } => {
                let now = self.clock.now_ms();
                let detail = match result {
                    Ok(v) => json!({ "target": v }),
                    Err(e) => json!({ "error": e }),
                };
                self.update(
                    id,
                    ActionUpdate::default(),
                    ev(now, EventKind::Observed, "system", detail),
                    None,
                    |_, _| {},
                );
            }
            Input::Reconfigure(cfg) => {
                self.incident_steps = Arc::new(incident_steps(&cfg));
                self.policy.set_config(*cfg);
            }
            Input::Stop => self.stop = true,
        }
    }

    // ------------------------------------------------------------- batching

    fn insert(
        &mut self,
        action: NewAction,
        event: NewEvent,
        marks: Vec<crate::knowledge::PolicyMark>,
        case: Option<String>,
        run: impl FnOnce(&mut Decider, Applied) + Send + 'static,
    ) {
        self.changes.push(Change::Insert {
            action,
            event,
            marks,
        });
        self.after.push(After {
            case,
            run: Box::new(run),
        });
    }

    fn update(
        &mut self,
        id: AuditId,
        update: ActionUpdate,
        event: NewEvent,
        case: Option<String>,
        run: impl FnOnce(&mut Decider, Applied) + Send + 'static,
    ) {
        self.update_marked(id, update, event, Vec::new(), case, run);
    }

    fn update_marked(
        &mut self,
        id: AuditId,
        update: ActionUpdate,
        event: NewEvent,
        marks: Vec<crate::knowledge::PolicyMark>,
        case: Option<String>,
        run: impl FnOnce(&mut Decider, Applied) + Send + 'static,
    ) {
        self.changes.push(Change::Update {
            id,
            update,
            event,
            marks,
        });
        self.after.push(After {
            case,
            run: Box::new(run),
        });
    }

    /// Writes the batch in one transaction, then runs what waited for it.
    fn commit(&mut self) {
        self.recheck.clear();
        while !self.changes.is_empty() {
            let changes = std::mem::take(&mut self.changes);
            let after = std::mem::take(&mut self.after);
            let n = changes.len();
            match self.executor.commit(changes) {
                Ok(applied) => {
                    for (a, f) in applied.into_iter().zip(after) {
                        (f.run)(self, a);
                    }
                }
                Err(e) => {
                    AuditWriteFailed {
                        error: &e.to_string(),
                        changes: n,
                    }
                    .emit(&self.metrics);
                    // Nothing of the batch is durable, so nothing of it runs; the
                    // cases it carried stop here (their alerts are still firing and
                    // visible, and Alertmanager still hears of them).
                    for f in after {
                        if let Some(c) = f.case.and_then(|k| self.cases.get_mut(&k)) {
                            c.busy = Busy::Idle;
                            c.done = true;
                        }
                    }
                }
            }
            // Work run after the commit may have added changes (a case's next step).
            self.recheck.clear();
        }
    }

    // ------------------------------------------------------------- inputs

    fn on_alert(&mut self, t: AlertTransition) {
        let key = alert_instance(&t);
        match t.kind {
            TransitionKind::Firing => {
                self.metrics
                    .mttd
                    .observe((t.at_ms - t.active_at_ms).max(0) as f64 / 1000.0);
                if t.spec.actions.is_empty() || self.cases.contains_key(&key) {
                    return;
                }
                let spec = &t.spec;
                let case = Case::new(
                    Trigger::Alert {
                        group: t.rule.group.clone(),
                        rule: t.rule.name.clone(),
                        labels: t.labels.clone(),
                        annotations: t.annotations.clone(),
                        value: t.value,
                        severity: t.severity,
                        fired_at_ms: t.at_ms,
                        interval_ms: t.interval_ms,
                        cooldown_ms: spec.cooldown_ms,
                        dry_run: spec.dry_run,
                        approval_required: spec.approval.required,
                        approval_timeout_ms: spec.approval.timeout_ms,
                        approvers: spec.approval.approvers.clone(),
                    },
                    key.clone(),
                    Arc::new(spec.actions.clone()),
                    t.seen,
                );
                self.cases.insert(key.clone(), case);
                self.advance(&key);
            }
            TransitionKind::Resolved => {
                let Some(case) = self.cases.get_mut(&key) else {
                    return;
                };
                case.resolved = true;
                if let Trigger::Alert { fired_at_ms, .. } = case.trigger {
                    self.metrics
                        .mttr
                        .observe((t.at_ms - fired_at_ms).max(0) as f64 / 1000.0);
                }
                match case.busy {
                    Busy::Waiting(id) if self.approvals.contains_key(&id) => {
                        self.approvals.remove(&id);
                        case.done = true;
                        let now = self.clock.now_ms();
                        self.update(
                            id,
                            ActionUpdate {
                                outcome: Some(Outcome::Cancelled),
                                reason: Some("the alert resolved before approval".into()),
                                ..Default::default()
                            },
                            ev(
                                now,
                                EventKind::Cancelled,
                                "system",
                                json!({"reason": "alert resolved"}),
                            ),
                            Some(key.clone()),
                            move |d, a| {
                                ApprovalClosed {
                                    id: a.id,
                                    how: "cancelled (alert resolved)",
                                    by: None,
                                }
                                .emit(&d.metrics);
                                d.cases.remove(&key);
                            },
                        );
                    }
                    Busy::Idle => {
                        self.cases.remove(&key);
                    }
                    // Running or verifying: the verification will see it resolved.
                    _ => {}
                }
            }
        }
    }

    fn on_incident(&mut self, inc: IncidentOpened) {
        self.metrics
            .mttd
            .observe((inc.opened_ms - inc.start_ms).max(0) as f64 / 1000.0);
        let min = self.policy.config().incidents.min_severity;
        if self.incident_steps.is_empty() || inc.severity < min {
            return;
        }
        let key = format!("incident:{}@{}", inc.id, inc.start_ms);
        if self.cases.contains_key(&key) {
            return;
        }
        let case = Case::new(
            Trigger::Incident {
                id: inc.id,
                group: inc.group,
                severity: inc.severity,
                opened_ms: inc.opened_ms,
                context: inc.context,
            },
            key.clone(),
            self.incident_steps.clone(),
            inc.seen,
        );
        self.cases.insert(key.clone(), case);
        self.advance(&key);
    }

    // ------------------------------------------------------------- the ladder

    /// Takes the case's next steps until one has to wait, or none is left.
    fn advance(&mut self, key: &str) {
        loop {
            let Some(case) = self.cases.get_mut(key) else {
                return;
            };
            if case.busy != Busy::Idle || case.done {
                return;
            }
            if case.next >= case.steps.len() {
                case.done = true;
                let escalate = case.unresolved_failure
                    && !case.escalated
                    && !self.policy.config().escalate_to.is_empty();
                if escalate {
                    case.escalated = true;
                    self.escalate(key);
                } else if case.resolved {
                    self.cases.remove(key);
                }
                return;
            }
            let i = case.next;
            case.next += 1;
            let step = case.steps[i].clone();
            let action = self.render(key, &step);
            let go_on = self.propose(key, i as u32, "alert", action, &step);
            if !go_on {
                return;
            }
        }
    }

    fn render(&self, key: &str, step: &RuleAction) -> Result<Action, String> {
        let Some(case) = self.cases.get(key) else {
            return Err("case gone".into());
        };
        let empty = BTreeMap::new();
        let (annotations, value, title, starts) = match &case.trigger {
            Trigger::Alert {
                annotations,
                value,
                rule,
                fired_at_ms,
                ..
            } => (annotations, *value, rule.clone(), *fired_at_ms),
            Trigger::Incident { opened_ms, .. } => {
                (&empty, 0.0, "incident".to_string(), *opened_ms)
            }
        };
        let severity = case.trigger.severity();
        step.render(&RenderContext {
            value,
            status: "firing",
            title: &title,
            severity: severity.as_str(),
            starts_at_ms: starts,
            url: "",
            ..RenderContext::new(case.trigger.labels(), annotations)
        })
    }

    fn cause(&self, key: &str, step: u32, trigger: &str) -> Cause {
        let case = &self.cases[key];
        Cause {
            trigger: match (&case.trigger, trigger) {
                (Trigger::Incident { .. }, "alert") => "incident".into(),
                _ => trigger.into(),
            },
            rule: case.trigger.rule_name(),
            labels: case.trigger.labels().clone(),
            instance: case.instance.clone(),
            step,
        }
    }

    fn check_of(trigger: &Trigger) -> Check {
        match trigger {
            Trigger::Alert {
                group,
                rule,
                labels,
                ..
            } => Check::Alert {
                group: group.clone(),
                rule: rule.clone(),
                labels: labels.clone(),
            },
            Trigger::Incident { id, .. } => Check::Incident(*id),
        }
    }

    /// Whether the condition holds now (cached per batch and rule).
    fn holds(&mut self, check: &Check) -> Result<bool, String> {
        match check {
            Check::Incident(id) => Ok(self.conditions.incident_open(*id)),
            Check::Alert {
                group,
                rule,
                labels,
            } => {
                let conditions = self.conditions.clone();
                let entry = self
                    .recheck
                    .entry((group.clone(), rule.clone()))
                    .or_insert_with(|| {
                        conditions
                            .alerts_now(group, rule)
                            .map(|o| o.map(|v| v.into_iter().collect()))
                    });
                match entry {
                    Ok(Some(set)) => Ok(set.contains(labels)),
                    Ok(None) => Ok(false),
                    Err(e) => Err(e.clone()),
                }
            }
        }
    }

    /// Judges one step of a case and records the decision. Returns whether the
    /// ladder goes on to the next step at once.
    fn propose(
        &mut self,
        key: &str,
        step_index: u32,
        trigger: &str,
        action: Result<Action, String>,
        step: &RuleAction,
    ) -> bool {
        let now = self.clock.now_ms();
        let cause = self.cause(key, step_index, trigger);
        let case = &self.cases[key];
        let actor = format!("rule:{}", case.trigger.rule_name());
        let context = match &case.trigger {
            Trigger::Incident {
                context: Some(c), ..
            } => c.clone(),
            _ => serde_json::Value::Null,
        };
        let action = match action {
            Ok(a) => a,
            Err(e) => {
                // Record what could be rendered: a notify placeholder names the step.
                self.refuse_unrendered(key, cause, step, &e, now, &actor);
                return true;
            }
        };
        let kind = action.kind();
        let target = action.target();
        let handled = self.assume_handled || self.executor.handles(&action);
        let (cooldown_ms, rule_dry, approval_required, approval_timeout_ms, approvers, verify_ms) =
            match &case.trigger {
                Trigger::Alert {
                    cooldown_ms,
                    dry_run,
                    approval_required,
                    approval_timeout_ms,
                    approvers,
                    interval_ms,
                    ..
                } => (
                    cooldown_ms.unwrap_or(self.policy.config().default_cooldown.as_millis()),
                    *dry_run,
                    *approval_required,
                    *approval_timeout_ms,
                    approvers.clone(),
                    step.verify_for_ms.unwrap_or(
                        interval_ms.max(&1) * self.policy.config().verify_intervals as i64,
                    ),
                ),
                Trigger::Incident { .. } => (
                    self.policy.config().incidents.cooldown.as_millis(),
                    false,
                    false,
                    None,
                    Vec::new(),
                    step.verify_for_ms
                        .unwrap_or(self.policy.config().incidents.verify_for.as_millis()),
                ),
            };
        let severity = case.trigger.severity();
        let labels = case.trigger.labels().clone();
        let check = Self::check_of(&case.trigger);
        let verdict = self.policy.evaluate(
            &Proposal {
                action: &action,
                rule: &cause.rule,
                instance: &cause.instance,
                labels: &labels,
                severity,
                cooldown_ms,
                dry_run: rule_dry || step.dry_run,
                approval_required,
                approval_timeout_ms,
                approved: false,
                automatic: true,
            },
            now,
        );
        let base = NewAction {
            at_ms: now,
            cause,
            action: action.clone(),
            dry_run: false,
            outcome: Outcome::Refused,
            reason: None,
            approval_expires_ms: None,
            rollback_of: None,
        };
        let k = key.to_string();
        // An action nothing could carry out is refused before anyone waits for it;
        // a dry run still shows what would be decided, noting the missing actuator.
        let verdict = match verdict {
            Verdict::Admit { .. } | Verdict::NeedsApproval { .. } if !handled => {
                Verdict::Refuse(super::policy::Refusal {
                    reason: RefusalReason::NotConfigured,
                    detail:
                        "no actuator is configured for it (see actuators: in the service config)"
                            .into(),
                })
            }
            Verdict::NeedsApproval { .. } => match self.approvals.iter().find(|(_, p)| {
                p.rule == base.cause.rule && p.action.kind() == kind && p.action.target() == target
            }) {
                // One question to a human per rule, action and target at a time.
                Some((id, _)) => Verdict::Refuse(super::policy::Refusal {
                    reason: RefusalReason::Duplicate,
                    detail: format!("an approval for it is already pending (action {id})"),
                }),
                None => verdict,
            },
            v => v,
        };
        match verdict {
            Verdict::Refuse(r) => {
                self.refuse(key, base.cause, action, r.reason, &r.detail, now, &actor);
                true
            }
            Verdict::DryRun { marks, approval } => {
                self.policy.record(&marks);
                let detail = json!({
                    "would_wait_for_approval": approval,
                    "actuator_configured": handled,
                    "context": context,
                });
                let rule = base.cause.rule.clone();
                self.insert(
                    NewAction {
                        dry_run: true,
                        outcome: Outcome::DryRun,
                        ..base
                    },
                    ev(now, EventKind::DryRun, &actor, detail),
                    marks,
                    Some(k),
                    move |d, a| {
                        ActionDryRun {
                            id: a.id,
                            kind,
                            target: &target,
                            rule: &rule,
                        }
                        .emit(&d.metrics);
                    },
                );
                // What a changing step would have done cannot be verified: the dry
                // ladder stops there; notifications go on.
                if kind.mutates() {
                    if let Some(c) = self.cases.get_mut(key) {
                        c.done = true;
                    }
                    false
                } else {
                    true
                }
            }
            Verdict::NeedsApproval { expires_ms } => {
                if let Some(c) = self.cases.get_mut(key) {
                    c.busy = Busy::Committing;
                    c.human_waited = true;
                }
                let pending = Pending {
                    case: Some(k.clone()),
                    action: action.clone(),
                    rule: base.cause.rule.clone(),
                    instance: base.cause.instance.clone(),
                    labels,
                    severity,
                    cooldown_ms,
                    expires_ms,
                    approvers,
                    verify_ms: kind.mutates().then_some(verify_ms),
                };
                self.insert(
                    NewAction {
                        outcome: Outcome::PendingApproval,
                        approval_expires_ms: Some(expires_ms),
                        ..base
                    },
                    ev(
                        now,
                        EventKind::ApprovalRequested,
                        &actor,
                        json!({ "expires_ms": expires_ms, "context": context }),
                    ),
                    Vec::new(),
                    Some(k.clone()),
                    move |d, a| {
                        ApprovalRequested {
                            id: a.id,
                            kind,
                            target: &target,
                            expires_ms,
                        }
                        .emit(&d.metrics);
                        d.approvals.insert(a.id, pending);
                        if let Some(c) = d.cases.get_mut(&k) {
                            c.busy = Busy::Waiting(a.id);
                        }
                    },
                );
                false
            }
            Verdict::Admit { marks } => {
                match self.holds(&check) {
                    Ok(true) => {}
                    other => {
                        let reason = match other {
                            Err(e) => format!("re-check failed: {e}"),
                            _ => "the condition no longer holds".into(),
                        };
                        if let Some(c) = self.cases.get_mut(key) {
                            c.done = true;
                        }
                        self.insert(
                            NewAction {
                                outcome: Outcome::Cancelled,
                                reason: Some(reason.clone()),
                                ..base
                            },
                            ev(
                                now,
                                EventKind::Cancelled,
                                &actor,
                                json!({ "reason": reason }),
                            ),
                            Vec::new(),
                            Some(k),
                            move |d, a| {
                                ActionCancelled {
                                    id: a.id,
                                    reason: &reason,
                                }
                                .emit(&d.metrics);
                            },
                        );
                        return false;
                    }
                }
                self.policy.record(&marks);
                let seen = self.cases[key].seen;
                if let Some(c) = self.cases.get_mut(key) {
                    c.busy = Busy::Committing;
                }
                let human_waited = self.cases[key].human_waited;
                let expect_uid = self.cases[key].trigger.labels().get("uid").cloned();
                self.insert(
                    NewAction {
                        outcome: Outcome::Executing,
                        ..base
                    },
                    ev(
                        now,
                        EventKind::ExecutionStarted,
                        &actor,
                        json!({ "context": context }),
                    ),
                    marks,
                    Some(k.clone()),
                    move |d, a| {
                        let id = a.id;
                        if let Some(c) = d.cases.get_mut(&k) {
                            c.busy = Busy::Waiting(id);
                        }
                        d.start(
                            a,
                            action,
                            expect_uid,
                            Running {
                                case: Some(k),
                                kind,
                                target,
                                verify_ms: kind.mutates().then_some(verify_ms),
                                check: Some(check),
                            },
                            (!human_waited).then(|| seen.elapsed()),
                        );
                    },
                );
                false
            }
        }
    }

    /// Hands an admitted action, whose intent is now durable, to the executor.
    fn start(
        &mut self,
        applied: Applied,
        action: Action,
        expect_uid: Option<String>,
        running: Running,
        latency: Option<Duration>,
    ) {
        let Some(receipt) = applied.receipt else {
            // Not an intent (cannot happen for an `executing` change): never run.
            return;
        };
        ActionStarted {
            id: applied.id,
            kind: running.kind,
            target: &running.target,
            latency,
        }
        .emit(&self.metrics);
        self.running.insert(applied.id, running);
        self.executor.execute(receipt, action, expect_uid);
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        key: &str,
        cause: Cause,
        action: Action,
        reason: RefusalReason,
        detail: &str,
        now: i64,
        actor: &str,
    ) {
        let kind = action.kind();
        let target = action.target();
        let rule = cause.rule.clone();
        let detail_s = detail.to_string();
        self.insert(
            NewAction {
                at_ms: now,
                cause,
                action,
                dry_run: false,
                outcome: Outcome::Refused,
                reason: Some(format!("{}: {detail}", reason.as_str())),
                approval_expires_ms: None,
                rollback_of: None,
            },
            ev(
                now,
                EventKind::Refused,
                actor,
                json!({ "reason": reason.as_str(), "detail": detail }),
            ),
            Vec::new(),
            Some(key.to_string()),
            move |d, a| {
                ActionRefused {
                    id: Some(a.id),
                    kind,
                    target: &target,
                    rule: &rule,
                    reason,
                    detail: &detail_s,
                }
                .emit(&d.metrics);
            },
        );
    }

    /// A step whose templates did not render: audited with a stand-in action that
    /// names the step's kind.
    fn refuse_unrendered(
        &mut self,
        key: &str,
        cause: Cause,
        step: &RuleAction,
        error: &str,
        now: i64,
        actor: &str,
    ) {
        let stand_in = Action::Notify {
            channel: format!("(unrendered {})", step.kind),
            notification: crate::act::Notification {
                status: "firing".into(),
                title: cause.rule.clone(),
                summary: error.to_string(),
                severity: String::new(),
                labels: cause.labels.clone(),
                annotations: BTreeMap::new(),
                starts_at_ms: now,
                url: String::new(),
            },
        };
        self.refuse(
            key,
            cause,
            stand_in,
            RefusalReason::InvalidTarget,
            &format!("{} step: {error}", step.kind),
            now,
            actor,
        );
    }

    fn escalate(&mut self, key: &str) {
        let channel = self.policy.config().escalate_to.clone();
        let case = &self.cases[key];
        let title = case.trigger.rule_name();
        let labels = case.trigger.labels().clone();
        Escalated {
            rule: &title,
            channel: &channel,
        }
        .emit(&self.metrics);
        let step = RuleAction {
            kind: ActionKind::Notify,
            step: crate::rules::action::Step::Notify {
                channel: channel.clone(),
            },
            dry_run: false,
            verify_for_ms: None,
        };
        let annotations = BTreeMap::from([(
            "summary".to_string(),
            format!("closedloop: the actions of {title} did not clear it; a human is needed"),
        )]);
        let starts_at_ms = match &case.trigger {
            Trigger::Alert { fired_at_ms, .. } => *fired_at_ms,
            Trigger::Incident { opened_ms, .. } => *opened_ms,
        };
        let action = step.render(&RenderContext {
            status: "firing",
            title: &title,
            severity: case.trigger.severity().as_str(),
            starts_at_ms,
            ..RenderContext::new(&labels, &annotations)
        });
        let n = case.steps.len() as u32;
        self.propose(key, n, "escalation", action, &step);
    }

    // ------------------------------------------------------------- executions

    fn on_executed(
        &mut self,
        id: AuditId,
        ran: Option<Action>,
        result: Result<Effect, ActError>,
        observed: Option<serde_json::Value>,
    ) {
        let now = self.clock.now_ms();
        let run = self.running.remove(&id);
        let (kind, target) = match &run {
            Some(r) => (r.kind, r.target.clone()),
            None => (
                ran.as_ref().map(Action::kind).unwrap_or(ActionKind::Notify),
                ran.as_ref().map(Action::target).unwrap_or_default(),
            ),
        };
        let verify_ms = run.as_ref().and_then(|r| r.verify_ms);
        let verify = result.is_ok() && verify_ms.is_some();
        let (update, event) = match &result {
            Ok(effect) => (
                ActionUpdate {
                    outcome: Some(Outcome::Succeeded),
                    verification: verify.then_some(Verification::Pending),
                    effect: Some(effect.clone()),
                    action: ran,
                    ..Default::default()
                },
                ev(
                    now,
                    EventKind::Succeeded,
                    "system",
                    json!({ "effect": effect, "observed": observed }),
                ),
            ),
            Err(e) => (
                ActionUpdate {
                    outcome: Some(Outcome::Failed),
                    reason: Some(e.to_string()),
                    action: ran,
                    ..Default::default()
                },
                ev(
                    now,
                    EventKind::Failed,
                    "system",
                    json!({ "error": e.to_string(), "observed": observed }),
                ),
            ),
        };
        let summary = match &result {
            Ok(e) => Ok(e.summary.clone()),
            Err(e) => Err(e.to_string()),
        };
        let case = run.as_ref().and_then(|r| r.case.clone());
        let check = run.and_then(|r| r.check);
        self.update(id, update, event, case.clone(), move |d, a| {
            ActionFinished {
                id: a.id,
                kind,
                target: &target,
                result: match &summary {
                    Ok(s) => Ok(s.as_str()),
                    Err(e) => Err(e.as_str()),
                },
            }
            .emit(&d.metrics);
            match (verify, verify_ms, check) {
                (true, Some(ms), Some(check)) => {
                    d.verifying.insert(
                        (now + ms, id),
                        Verify {
                            id,
                            case,
                            target,
                            check,
                            retries: 0,
                        },
                    );
                }
                _ => {
                    if let Some(k) = case {
                        if let Some(c) = d.cases.get_mut(&k) {
                            c.busy = Busy::Idle;
                            match (&summary, kind.mutates()) {
                                (Err(_), true) => c.unresolved_failure = true,
                                // A person was told: that is the escalation.
                                (Ok(_), false) => c.unresolved_failure = false,
                                _ => {}
                            }
                        }
                        d.advance(&k);
                    }
                }
            }
        });
    }
}

fn incident_steps(cfg: &DecideConfig) -> Vec<RuleAction> {
    cfg.incidents
        .actions
        .iter()
        .filter_map(|a| RuleAction::parse(a).ok())
        .collect()
}

mod commands;
mod recovery;
mod timers;

#[cfg(test)]
mod tests;
