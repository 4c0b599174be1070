//! The decider end to end in one process: real policy, real SQLite store (in
//! memory), real executor, a recording actuator and a manual clock.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;

use parking_lot::Mutex;
use serde_json::Value;

use super::*;
use crate::act::{Actuator, Approved, ReplicaChange};
use crate::decide::clock::ManualClock;
use crate::decide::conditions::StaticConditions;
use crate::decide::config::AllowConfig;
use crate::knowledge::SqliteStore;
use crate::rules::file::{parse_file, LoadOptions};
use crate::rules::{RuleId, RuleSpec};

/// Records every call; fails on demand; pods have the UID it is told.
#[derive(Default)]
struct Recorder {
    executed: Mutex<Vec<Action>>,
    observed: Mutex<Vec<Action>>,
    fail: AtomicBool,
    pod_uid: Mutex<String>,
}

#[async_trait::async_trait]
impl Actuator for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn handles(&self, a: &Action) -> bool {
        !matches!(a, Action::Notify { channel, .. } if channel == "nowhere")
    }

    async fn execute(&self, a: &Approved) -> Result<Effect, ActError> {
        self.executed.lock().push(a.action().clone());
        if self.fail.load(Ordering::SeqCst) && a.action().kind().mutates() {
            return Err(ActError::Refused("the test says no".into()));
        }
        let undo = match a.action() {
            Action::Scale {
                workload, bounds, ..
            } => Some(Action::Scale {
                workload: workload.clone(),
                change: ReplicaChange::To(2),
                bounds: *bounds,
            }),
            _ => None,
        };
        Ok(Effect {
            summary: format!("did {}", a.action().target()),
            details: json!({}),
            undo,
        })
    }

    async fn observe(&self, a: &Action) -> Result<Value, ActError> {
        self.observed.lock().push(a.clone());
        Ok(json!({ "uid": self.pod_uid.lock().clone() }))
    }
}

struct H {
    _rt: tokio::runtime::Runtime,
    d: Decider,
    rx: Receiver<Input>,
    clock: Arc<ManualClock>,
    store: Arc<dyn KnowledgeStore>,
    rec: Arc<Recorder>,
    cond: Arc<StaticConditions>,
    metrics: Arc<DecideMetrics>,
}

const T0: i64 = 1_700_000_000_000;

fn policy() -> DecideConfig {
    DecideConfig {
        dry_run: false,
        allow: AllowConfig {
            actions: ActionKind::ALL.to_vec(),
            namespaces: vec!["prod".into()],
            nodes: vec!["*".into()],
            redis_patterns: vec!["*".into()],
            http_endpoints: vec!["flags".into()],
        },
        escalate_to: "oncall".into(),
        ..Default::default()
    }
}

fn harness_on(cfg: DecideConfig, store: Arc<dyn KnowledgeStore>) -> H {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let rec = Arc::new(Recorder::default());
    let cond = Arc::new(StaticConditions::default());
    let clock = Arc::new(ManualClock::new(T0));
    let metrics = Arc::new(DecideMetrics::new(&prometheus::Registry::new(), 3_600_000).unwrap());
    let actuators: Vec<Arc<dyn Actuator>> = vec![rec.clone()];
    let executor = Executor::new(
        store.clone(),
        Arc::new(parking_lot::RwLock::new(actuators)),
        rt.handle().clone(),
        tx,
    );
    let d = Decider::new(
        cfg,
        store.clone(),
        executor,
        cond.clone(),
        clock.clone(),
        metrics.clone(),
        Arc::new(AtomicUsize::new(0)),
        false,
    );
    H {
        _rt: rt,
        d,
        rx,
        clock,
        store,
        rec,
        cond,
        metrics,
    }
}

fn harness(cfg: DecideConfig) -> H {
    harness_on(cfg, Arc::new(SqliteStore::in_memory().unwrap()))
}

/// An alerting rule `g/A` with the given extra YAML (actions, approval…).
fn rule(extra: &str) -> Arc<RuleSpec> {
    let text = format!("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n{extra}");
    let groups = parse_file(&text, Path::new("r.yml"), LoadOptions::default()).unwrap();
    Arc::new(groups[0].rules[0].clone())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert("alertname".into(), "A".into());
    m
}

fn transition(
    spec: &Arc<RuleSpec>,
    l: &BTreeMap<String, String>,
    kind: TransitionKind,
    at_ms: i64,
) -> AlertTransition {
    AlertTransition {
        kind,
        rule: RuleId {
            file: "r.yml".into(),
            group: "g".into(),
            name: "A".into(),
        },
        spec: spec.clone(),
        labels: l.clone(),
        annotations: BTreeMap::new(),
        value: 1.0,
        severity: Severity::Warning,
        active_at_ms: T0 - 60_000,
        at_ms,
        interval_ms: 10_000,
        seen: Instant::now(),
    }
}

impl H {
    fn set_active(&self, l: &[BTreeMap<String, String>]) {
        self.cond.set_alerts("g", "A", l.to_vec());
    }

    fn fire(&mut self, spec: &Arc<RuleSpec>, l: &BTreeMap<String, String>) {
        let now = self.clock.now_ms();
        self.d.step(Input::Alert(transition(
            spec,
            l,
            TransitionKind::Firing,
            now,
        )));
        self.settle();
    }

    fn resolve(&mut self, spec: &Arc<RuleSpec>, l: &BTreeMap<String, String>) {
        let now = self.clock.now_ms();
        self.d.step(Input::Alert(transition(
            spec,
            l,
            TransitionKind::Resolved,
            now,
        )));
        self.settle();
    }

    /// Feeds the executor's reports back until nothing runs.
    fn settle(&mut self) {
        while !self.d.running.is_empty() {
            let input = self
                .rx
                .recv_timeout(Duration::from_secs(20))
                .expect("an actuator report");
            self.d.step(input);
        }
    }

    /// Moves the clock and runs the timers.
    fn advance(&mut self, ms: i64) {
        self.clock.advance(ms);
        self.d.step_timers();
        self.settle();
    }

    fn command(&mut self, c: Command) -> Result<ActionRecord, DecideError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.d.step(Input::Command(c, tx));
        self.settle();
        rx.try_recv().expect("an answer once durable")
    }

    /// Every action, oldest first.
    fn actions(&self) -> Vec<ActionRecord> {
        let mut a = self
            .store
            .actions(&ActionQuery {
                limit: 1000,
                ..Default::default()
            })
            .unwrap();
        a.reverse();
        a
    }

    fn events(&self, id: AuditId) -> Vec<EventKind> {
        self.store
            .events(id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    fn executed(&self) -> Vec<Action> {
        self.rec.executed.lock().clone()
    }
}

use crate::knowledge::ActionQuery;

const SCALE: &str =
    "    actions:\n    - {type: scale_up, target: prod/deployment/web, replicas: '+2'}\n";

#[test]
fn an_action_runs_once_intent_first_and_is_verified() {
    let mut h = harness(policy());
    let spec = rule(SCALE);
    let l = labels(&[("job", "web")]);
    h.set_active(std::slice::from_ref(&l));
    h.fire(&spec, &l);
    assert_eq!(h.executed().len(), 1);
    let a = &h.actions()[0];
    assert_eq!(a.outcome, Outcome::Succeeded);
    assert_eq!(a.verification, Some(Verification::Pending));
    assert_eq!(a.target, "prod/deployment/web");
    assert_eq!(
        h.events(a.id),
        vec![EventKind::ExecutionStarted, EventKind::Succeeded]
    );
    assert_eq!(h.metrics.decision_latency.get_sample_count(), 1);
    // The same transition again (a resend, a reload) does not act twice.
    h.fire(&spec, &l);
    assert_eq!(h.executed().len(), 1);
    // The condition clears; after the verify window (3 x 10s) the action is verified.
    h.set_active(&[]);
    h.advance(29_000);
    assert_eq!(h.actions()[0].verification, Some(Verification::Pending));
    h.advance(2_000);
    let a = &h.actions()[0];
    assert_eq!(a.verification, Some(Verification::Cleared));
    assert_eq!(h.metrics.success_rate.get(), 1.0);
    assert_eq!(
        h.metrics
            .remediations
            .with_label_values(&["scale", "succeeded"])
            .get(),
        1
    );
}

#[test]
fn a_failed_verification_falls_back_to_the_next_action_then_escalates() {
    let mut h = harness(policy());
    let spec = rule(
        "    actions:\n    - {type: scale_up, target: prod/deployment/web}\n    - {type: restart_pod, target: 'prod/{{ $labels.pod }}'}\n",
    );
    let l = labels(&[("pod", "web-7d9f8c6b5-aaaaa")]);
    h.set_active(std::slice::from_ref(&l));
    h.fire(&spec, &l);
    assert_eq!(h.executed().len(), 1);
    // Still firing after the window: not cleared, the restart runs (never the scale again).
    h.advance(31_000);
    let kinds: Vec<ActionKind> = h.executed().iter().map(Action::kind).collect();
    assert_eq!(kinds, vec![ActionKind::Scale, ActionKind::RestartPod]);
    assert_eq!(h.actions()[0].verification, Some(Verification::NotCleared));
    // The restart does not clear it either: the ladder is exhausted, on-call is told.
    h.advance(31_000);
    let kinds: Vec<ActionKind> = h.executed().iter().map(Action::kind).collect();
    assert_eq!(
        kinds,
        vec![
            ActionKind::Scale,
            ActionKind::RestartPod,
            ActionKind::Notify
        ]
    );
    let last = h.actions().pop().unwrap();
    assert_eq!(last.cause.trigger, "escalation");
    assert_eq!(last.target, "notify:oncall");
    // Nothing more, however long it stays.
    h.advance(600_000);
    assert_eq!(h.executed().len(), 3);
    assert_eq!(h.metrics.success_rate.get(), 0.0);
}

#[test]
fn a_failed_action_falls_back_at_once() {
    let mut h = harness(policy());
    let spec = rule(
        "    actions:\n    - {type: scale_up, target: prod/deployment/web}\n    - {type: notify, channel: team}\n",
    );
    let l = labels(&[]);
    h.set_active(std::slice::from_ref(&l));
    h.rec.fail.store(true, Ordering::SeqCst);
    h.fire(&spec, &l);
    let actions = h.actions();
    assert_eq!(actions[0].outcome, Outcome::Failed);
    assert!(actions[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("the test says no"));
    assert_eq!(actions[1].target, "notify:team");
    // The team was told: no escalation beyond the rule's own notification.
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(h.executed().len(), 2);
}

#[test]
fn nothing_runs_when_the_condition_is_gone_at_the_recheck() {
    let mut h = harness(policy());
    let spec = rule(SCALE);
    let l = labels(&[("job", "web")]);
    h.set_active(&[]);
    h.fire(&spec, &l);
    assert!(h.executed().is_empty());
    let a = &h.actions()[0];
    assert_eq!(a.outcome, Outcome::Cancelled);
    assert!(a.reason.as_deref().unwrap().contains("no longer holds"));
}

#[test]
fn an_alert_resolved_during_the_approval_wait_does_not_act() {
    let mut h = harness(policy());
    let spec = rule(&format!(
        "{SCALE}    approval: {{required: true, timeout: 10m}}\n"
    ));
    let l = labels(&[]);
    h.set_active(std::slice::from_ref(&l));
    h.fire(&spec, &l);
    let id = h.actions()[0].id;
    assert_eq!(h.actions()[0].outcome, Outcome::PendingApproval);
    assert_eq!(h.metrics.approvals_pending.get(), 1);
    h.set_active(&[]);
    h.resolve(&spec, &l);
    assert_eq!(h.actions()[0].outcome, Outcome::Cancelled);
    assert_eq!(h.metrics.approvals_pending.get(), 0);
    // Approving now is too late.
    let r = h.command(Command::Approve {
        id,
        by: "alice".into(),
    });
    assert!(matches!(r, Err(DecideError::Conflict(_))), "{r:?}");
    assert!(h.executed().is_empty());
}

#[test]
fn approve_runs_it_once_and_records_who() {
    let mut h = harness(policy());
    let spec = rule(&format!(
        "{SCALE}    approval: {{required: true, approvers: [alice, bob]}}\n"
    ));
    let l = labels(&[]);
    h.set_active(std::slice::from_ref(&l));
    h.fire(&spec, &l);
    assert!(h.executed().is_empty());
    let id = h.actions()[0].id;
    let r = h.command(Command::Approve {
        id,
        by: "mallory".into(),
    });
    assert!(matches!(r, Err(DecideError::Forbidden(_))), "{r:?}");
    let rec = h
        .command(Command::Approve {
            id,
            by: "alice".into(),
        })
        .unwrap();
    assert_eq!(rec.decided_by.as_deref(), Some("alice"));
    assert_eq!(h.executed().len(), 1);
    assert_eq!(h.actions()[0].outcome, Outcome::Succeeded);
    assert_eq!(
        h.events(id),
        vec![
            EventKind::ApprovalRequested,
            EventKind::Approved,
            EventKind::Succeeded
        ]
    );
    // A second approval cannot run it again.
    let again = h.command(Command::Approve {
        id,
        by: "bob".into(),
    });
    assert!(matches!(again, Err(DecideError::Conflict(_))));
    assert_eq!(h.executed().len(), 1);
    assert_eq!(
        h.metrics
            .human_interventions
            .with_label_values(&["approve"])
            .get(),
        1
    );
}

#[test]
fn reject_and_expiry_never_run_it() {
    let mut h = harness(policy());
    // One workload per alert, so each gets its own approval request.
    let spec = rule(
        "    actions:\n    - {type: scale_up, target: 'prod/deployment/web-{{ $labels.i }}'}\n    - {type: notify, channel: team}\n    approval: {required: true, timeout: 1m}\n",
    );
    let a = labels(&[("i", "1")]);
    let b = labels(&[("i", "2")]);
    h.set_active(&[a.clone(), b.clone()]);
    h.fire(&spec, &a);
    h.fire(&spec, &b);
    let pending: Vec<AuditId> = h.actions().iter().map(|r| r.id).collect();
    assert_eq!(pending.len(), 2);
    let rec = h
        .command(Command::Reject {
            id: pending[0],
            by: "bob".into(),
            reason: "not now".into(),
        })
        .unwrap();
    assert_eq!(rec.outcome, Outcome::Rejected);
    assert_eq!(rec.decided_by.as_deref(), Some("bob"));
    // The other one expires; its ladder goes on to the notification.
    h.advance(61_000);
    let all = h.actions();
    assert_eq!(all[1].outcome, Outcome::Expired);
    assert_eq!(h.metrics.approvals_pending.get(), 0);
    let executed = h.executed();
    assert_eq!(executed.len(), 1, "{executed:?}");
    assert_eq!(executed[0].kind(), ActionKind::Notify);
}

#[test]
fn a_restart_pins_the_pod_uid_and_spares_a_replaced_pod() {
    let mut h = harness(policy());
    let spec = rule("    actions:\n    - {type: restart_pod, target: 'prod/{{ $labels.pod }}'}\n");
    // The alert names the pod's UID; the pod of that name now has another one.
    let l = labels(&[("pod", "web-0"), ("uid", "u-old")]);
    h.set_active(std::slice::from_ref(&l));
    *h.rec.pod_uid.lock() = "u-new".into();
    h.fire(&spec, &l);
    let restarts = |h: &H| -> Vec<Action> {
        h.executed()
            .into_iter()
            .filter(|a| a.kind() == ActionKind::RestartPod)
            .collect()
    };
    assert!(restarts(&h).is_empty());
    let a = &h.actions()[0];
    assert_eq!(a.outcome, Outcome::Failed);
    assert!(
        a.reason.as_deref().unwrap().contains("different pod"),
        "{a:?}"
    );
    // Without a UID in the alert, the restart carries the UID it read.
    let l2 = labels(&[("pod", "web-1")]);
    h.set_active(std::slice::from_ref(&l2));
    h.fire(&spec, &l2);
    match &restarts(&h)[0] {
        Action::RestartPod { uid, pod } => {
            assert_eq!(uid.as_deref(), Some("u-new"));
            assert_eq!(pod.name, "web-1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rollback_runs_the_inverse_once_through_the_audit_log() {
    let mut h = harness(policy());
    let spec = rule(SCALE);
    let l = labels(&[]);
    h.set_active(std::slice::from_ref(&l));
    h.fire(&spec, &l);
    let id = h.actions()[0].id;
    let rec = h
        .command(Command::Rollback {
            id,
            by: "carol".into(),
        })
        .unwrap();
    assert_eq!(rec.rollback_of, Some(id));
    let undo = h.executed().pop().unwrap();
    assert!(matches!(
        undo,
        Action::Scale {
            change: ReplicaChange::To(2),
            ..
        }
    ));
    assert_eq!(
        h.store.action(id).unwrap().unwrap().rolled_back_by,
        Some(rec.id)
    );
    let again = h.command(Command::Rollback {
        id,
        by: "carol".into(),
    });
    assert!(matches!(again, Err(DecideError::Conflict(_))), "{again:?}");
    // A refused or missing action cannot be rolled back.
    assert!(matches!(
        h.command(Command::Rollback {
            id: AuditId(999),
            by: "carol".into()
        }),
        Err(DecideError::NotFound(_))
    ));
    assert_eq!(h.executed().len(), 2);
}

#[test]
fn dry_run_decides_and_counts_but_never_calls() {
    let mut cfg = policy();
    cfg.dry_run = true;
    let mut h = harness(cfg);
    let spec = rule(&format!("{SCALE}    - {{type: notify, channel: team}}\n"));
    let l = labels(&[]);
    h.set_active(std::slice::from_ref(&l));
    h.fire(&spec, &l);
    assert!(h.executed().is_empty());
    let a = h.actions();
    assert_eq!(
        a.len(),
        1,
        "the dry ladder stops at the first changing step"
    );
    assert_eq!(a[0].outcome, Outcome::DryRun);
    assert!(a[0].dry_run);
    assert_eq!(
        h.metrics
            .remediations
            .with_label_values(&["scale", "dry_run"])
            .get(),
        1
    );
}

#[test]
fn cooldown_refusals_and_unconfigured_targets_are_audited() {
    let mut h = harness(policy());
    let spec = rule(&format!(
        "{SCALE}    - {{type: notify, channel: nowhere}}\n    cooldown: 10m\n"
    ));
    let a = labels(&[("i", "1")]);
    let b = labels(&[("i", "2")]);
    h.set_active(&[a.clone(), b.clone()]);
    h.fire(&spec, &a);
    h.fire(&spec, &b);
    let all = h.actions();
    assert_eq!(all[0].outcome, Outcome::Succeeded);
    assert_eq!(all[1].outcome, Outcome::Refused);
    assert!(all[1].reason.as_deref().unwrap().starts_with("cooldown"));
    // The second alert's ladder went on to its notify step: no such channel.
    assert!(all.iter().any(|r| r.outcome == Outcome::Refused
        && r.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("not_configured")));
    assert_eq!(h.metrics.refused.with_label_values(&["cooldown"]).get(), 1);
    assert_eq!(h.executed().len(), 1);
}

#[test]
fn after_a_crash_an_action_in_flight_is_unknown_and_never_rerun() {
    let store: Arc<dyn KnowledgeStore> = Arc::new(SqliteStore::in_memory().unwrap());
    // A previous process wrote the intent and died before the outcome.
    let action = Action::Scale {
        workload: crate::act::ObjectRef {
            kind: crate::act::ObjectKind::Deployment,
            namespace: "prod".into(),
            name: "web".into(),
        },
        change: ReplicaChange::By(1),
        bounds: crate::act::ReplicaBounds { min: 1, max: 5 },
    };
    let applied = store
        .apply(vec![Change::Insert {
            action: NewAction {
                at_ms: T0,
                cause: Cause {
                    trigger: "alert".into(),
                    rule: "g/A".into(),
                    labels: BTreeMap::new(),
                    instance: "x".into(),
                    step: 0,
                },
                action,
                dry_run: false,
                outcome: Outcome::Executing,
                reason: None,
                approval_expires_ms: None,
                rollback_of: None,
            },
            event: ev(T0, EventKind::ExecutionStarted, "rule:g/A", json!({})),
            marks: vec![],
        }])
        .unwrap();
    let id = applied[0].id;
    let mut h = harness_on(policy(), store);
    h.d.recover();
    // Its observation comes back through the queue.
    let input = h.rx.recv_timeout(Duration::from_secs(20)).unwrap();
    h.d.step(input);
    let rec = h.store.action(id).unwrap().unwrap();
    assert_eq!(rec.outcome, Outcome::Unknown);
    assert!(h.executed().is_empty());
    assert_eq!(h.rec.observed.lock().len(), 1);
    assert_eq!(
        h.events(id),
        vec![
            EventKind::ExecutionStarted,
            EventKind::OutcomeUnknown,
            EventKind::Observed
        ]
    );
    // Recovering again changes nothing and runs nothing.
    h.d.recover();
    assert!(h.executed().is_empty());
    assert_eq!(
        h.store.action(id).unwrap().unwrap().outcome,
        Outcome::Unknown
    );
}

#[test]
fn the_intake_drops_and_counts_beyond_its_capacity() {
    let (tx, _rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(DecideMetrics::new(&prometheus::Registry::new(), 1).unwrap());
    let intake = crate::decide::Intake::new(tx, Arc::new(AtomicUsize::new(0)), 2, metrics.clone());
    let spec = rule(SCALE);
    for i in 0..5 {
        crate::rules::AlertSink::send(
            &intake,
            transition(&spec, &labels(&[]), TransitionKind::Firing, i),
        );
    }
    assert_eq!(
        metrics.intake_dropped.with_label_values(&["alert"]).get(),
        3
    );
}

#[test]
fn one_approval_request_per_rule_action_and_target_at_a_time() {
    let mut h = harness(policy());
    let spec = rule(&format!("{SCALE}    approval: true\n"));
    let a = labels(&[("i", "1")]);
    let b = labels(&[("i", "2")]);
    h.set_active(&[a.clone(), b.clone()]);
    h.fire(&spec, &a);
    h.fire(&spec, &b);
    let all = h.actions();
    assert_eq!(all[0].outcome, Outcome::PendingApproval);
    assert_eq!(all[1].outcome, Outcome::Refused);
    assert!(all[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("already pending"));
    assert_eq!(h.metrics.approvals_pending.get(), 1);
}

fn incident(id: u64, severity: Severity, at_ms: i64) -> IncidentOpened {
    IncidentOpened {
        id,
        group: [("service".to_string(), "web".to_string())].into(),
        severity,
        start_ms: at_ms - 45_000,
        opened_ms: at_ms,
        seen: Instant::now(),
        context: Some(json!({"causes": [{"series": "db_latency", "score": 0.9}]})),
    }
}

#[test]
fn an_incident_drives_its_actions_through_the_policy_and_the_recheck() {
    let mut cfg = policy();
    cfg.incidents.actions = serde_yaml::from_str(
        "- {type: scale_up, target: 'prod/deployment/{{ $labels.service }}', replicas: '+1'}\n- {type: notify, channel: oncall}\n",
    )
    .unwrap();
    let mut h = harness(cfg);
    // Open: the scale runs once, with the incident as its cause and its context.
    h.cond.set_incident(7, true);
    let now = h.clock.now_ms();
    h.d.step(Input::Incident(incident(7, Severity::Warning, now)));
    h.settle();
    assert_eq!(h.executed().len(), 1);
    let a = &h.actions()[0];
    assert_eq!(a.kind, ActionKind::Scale);
    assert_eq!(a.target, "prod/deployment/web");
    assert_eq!(a.cause.trigger, "incident");
    assert_eq!(a.outcome, Outcome::Succeeded);
    assert_eq!(h.metrics.mttd.get_sample_count(), 1);
    assert!((h.metrics.mttd.get_sample_sum() - 45.0).abs() < 1e-9);
    // The same incident again does not act twice.
    h.d.step(Input::Incident(incident(7, Severity::Warning, now)));
    h.settle();
    assert_eq!(h.executed().len(), 1);
    // The incident closes within the verify window: cleared, the ladder stops.
    h.cond.set_incident(7, false);
    h.advance(cfg_verify_ms() + 1_000);
    assert_eq!(h.actions()[0].verification, Some(Verification::Cleared));
    assert_eq!(h.executed().len(), 1);

    // Below decide.incidents.min_severity (warning): recorded by the anomaly stage,
    // never acted on.
    h.cond.set_incident(8, true);
    let now = h.clock.now_ms();
    h.d.step(Input::Incident(incident(8, Severity::Info, now)));
    h.settle();
    assert_eq!(h.executed().len(), 1);

    // Over before the action could run: the re-check cancels it, nothing executes.
    let now = h.clock.now_ms();
    h.d.step(Input::Incident(IncidentOpened {
        group: [("service".to_string(), "api".to_string())].into(),
        ..incident(9, Severity::Critical, now)
    }));
    h.settle();
    assert_eq!(h.executed().len(), 1);
    let last = h.actions().pop().unwrap();
    assert_eq!(last.target, "prod/deployment/api");
    assert_eq!(last.outcome, Outcome::Cancelled, "{last:?}");
}

/// `decide.incidents.verify_for`'s default, in ms.
fn cfg_verify_ms() -> i64 {
    DecideConfig::default().incidents.verify_for.as_millis()
}
