//! Decide benchmarks.
//!
//! `latency`: decision latency — from an alert turning firing to its actuator being
//! called — with 1,000 alerts firing at once (one rule group's evaluation hands them
//! over together) and the whole policy on: allow-list, cooldown, dedup, rate limits,
//! blast radius, the re-check of each alert's condition, the durable intent (one
//! fsync'd SQLite transaction per batch, on disk) and the executor handing each
//! action to its actuator. The actuator itself does nothing (its own I/O is
//! excluded, as the target says). Each round fires 1,000 new alerts on 1,000
//! targets; the figure is the median and p99 over every alert of every round.
//!
//! `steady`: then, with those alerts still firing (their cases, marks and audit rows
//! in place), 500 new alerts arrive one at a time, 10 ms apart — a busy loop's
//! steady state — each measured the same way.
//!
//! `audit`: audit writes per second the knowledge store sustains on disk, for
//! `--seconds` each: batched (1,000 actions per transaction) and fsync'd each (one
//! action per transaction). Each write is a new action row with its audit event.
//!
//! Run: `cargo bench --bench decide -- [--rounds 20] [--seconds 5] [--only latency,audit]`
//! Bounded in time; writes only under a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use closedloop::act::{ActError, Action, Actuator, Approved, Effect};
use closedloop::decide::conditions::StaticConditions;
use closedloop::decide::{Decide, DecideConfig, DecideDeps, DecideMetrics, SystemClock};
use closedloop::knowledge::{
    Cause, Change, EventKind, KnowledgeStore, NewAction, NewEvent, Outcome, SqliteStore,
};
use closedloop::rules::file::{parse_file, LoadOptions};
use closedloop::rules::{AlertSink, AlertTransition, RuleId, Severity, TransitionKind};

mod peers;
use peers::{flag, only};

const ALERTS: usize = 1_000;

/// Notes when each target's action reached the actuator.
#[derive(Default)]
struct Stopwatch {
    called: Mutex<Vec<(String, Instant)>>,
}

#[async_trait::async_trait]
impl Actuator for Stopwatch {
    fn name(&self) -> &'static str {
        "stopwatch"
    }
    fn handles(&self, _: &Action) -> bool {
        true
    }
    async fn execute(&self, a: &Approved) -> Result<Effect, ActError> {
        let now = Instant::now();
        self.called.lock().push((a.action().target(), now));
        Ok(Effect {
            summary: String::new(),
            details: serde_json::Value::Null,
            undo: None,
        })
    }
    async fn observe(&self, _: &Action) -> Result<serde_json::Value, ActError> {
        Ok(serde_json::Value::Null)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(dir: &Path, rounds: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let store: Arc<dyn KnowledgeStore> =
        Arc::new(SqliteStore::open(&dir.join("latency.db")).unwrap());
    let stopwatch = Arc::new(Stopwatch::default());
    // Every alert of the round holds (the re-check passes, as it would for real).
    let conditions = Arc::new(StaticConditions::default());
    let mut cfg: DecideConfig = serde_yaml::from_str(
        "dry_run: false\nallow: {actions: [scale], namespaces: [prod]}\nrate_limit: {global_per_hour: 1000000, per_target_per_hour: 1000}\n",
    )
    .unwrap();
    cfg.queue_capacity = 100_000;
    let metrics = Arc::new(DecideMetrics::new(&prometheus::Registry::new(), 3_600_000).unwrap());
    let decide = Decide::start(
        cfg,
        DecideDeps {
            store: store.clone(),
            actuators: vec![stopwatch.clone()],
            conditions: conditions.clone(),
            clock: Arc::new(SystemClock),
            metrics,
            runtime: rt.handle().clone(),
        },
    )
    .unwrap();
    let intake = decide.intake();
    let text = "groups:\n- name: bench\n  rules:\n  - alert: Saturated\n    expr: up == 0\n    labels: {severity: warning}\n    actions:\n    - {type: scale_up, target: 'prod/deployment/{{ $labels.app }}', replicas: '+1'}\n    cooldown: 1h\n";
    let spec = Arc::new(
        parse_file(text, Path::new("bench.yml"), LoadOptions::default()).unwrap()[0].rules[0]
            .clone(),
    );
    let mut all = Vec::with_capacity(rounds * ALERTS);
    let bench_start = Instant::now();
    for round in 0..rounds {
        let labels: Vec<BTreeMap<String, String>> = (0..ALERTS)
            .map(|i| {
                BTreeMap::from([
                    ("alertname".to_string(), "Saturated".to_string()),
                    ("app".to_string(), format!("app-{round}-{i}")),
                    ("severity".to_string(), "warning".to_string()),
                ])
            })
            .collect();
        conditions.set_alerts("bench", "Saturated", labels.clone());
        stopwatch.called.lock().clear();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut sent = std::collections::HashMap::with_capacity(ALERTS);
        for l in labels {
            let seen = Instant::now();
            sent.insert(format!("prod/deployment/{}", l["app"]), seen);
            intake.send(AlertTransition {
                kind: TransitionKind::Firing,
                rule: RuleId {
                    file: "bench.yml".into(),
                    group: "bench".into(),
                    name: "Saturated".into(),
                },
                spec: spec.clone(),
                labels: l,
                annotations: BTreeMap::new(),
                value: 0.0,
                severity: Severity::Warning,
                active_at_ms: now_ms,
                at_ms: now_ms,
                interval_ms: 15_000,
                seen,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while stopwatch.called.lock().len() < ALERTS {
            assert!(Instant::now() < deadline, "round {round}: actions missing");
            std::thread::sleep(Duration::from_millis(5));
        }
        for (target, at) in stopwatch.called.lock().iter() {
            all.push(at.duration_since(sent[target]).as_secs_f64() * 1000.0);
        }
        // Let the outcomes land before the next round.
        std::thread::sleep(Duration::from_millis(300));
    }
    all.sort_by(f64::total_cmp);
    println!(
        "decision latency, {ALERTS} alerts firing at once, {rounds} rounds ({} actions, {:.1}s): median {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: p99 < 10 ms)",
        all.len(),
        bench_start.elapsed().as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );

    // Steady state: the alerts above keep firing; new ones arrive one by one.
    let mut steady = Vec::with_capacity(500);
    for i in 0..500 {
        let l = BTreeMap::from([
            ("alertname".to_string(), "Saturated".to_string()),
            ("app".to_string(), format!("steady-{i}")),
            ("severity".to_string(), "warning".to_string()),
        ]);
        conditions.set_alerts("bench", "Saturated", vec![l.clone()]);
        stopwatch.called.lock().clear();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let seen = Instant::now();
        intake.send(AlertTransition {
            kind: TransitionKind::Firing,
            rule: RuleId {
                file: "bench.yml".into(),
                group: "bench".into(),
                name: "Saturated".into(),
            },
            spec: spec.clone(),
            labels: l,
            annotations: BTreeMap::new(),
            value: 0.0,
            severity: Severity::Warning,
            active_at_ms: now_ms,
            at_ms: now_ms,
            interval_ms: 15_000,
            seen,
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let at = loop {
            if let Some((_, at)) = stopwatch.called.lock().first() {
                break *at;
            }
            assert!(Instant::now() < deadline, "steady alert {i}: no action");
            std::thread::sleep(Duration::from_micros(200));
        };
        steady.push(at.duration_since(seen).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(10));
    }
    decide.stop();
    steady.sort_by(f64::total_cmp);
    println!(
        "decision latency, steady state ({} alerts firing, 500 new ones 10 ms apart): median {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: p99 < 10 ms)",
        rounds * ALERTS,
        percentile(&steady, 0.5),
        percentile(&steady, 0.99),
        steady[steady.len() - 1]
    );
}

fn change(i: u64) -> Change {
    let action = Action::Scale {
        workload: closedloop::act::ObjectRef {
            kind: closedloop::act::ObjectKind::Deployment,
            namespace: "prod".into(),
            name: format!("app-{i}"),
        },
        change: closedloop::act::ReplicaChange::By(1),
        bounds: closedloop::act::ReplicaBounds { min: 1, max: 10 },
    };
    Change::Insert {
        action: NewAction {
            at_ms: i as i64,
            cause: Cause {
                trigger: "alert".into(),
                rule: "bench/Saturated".into(),
                labels: BTreeMap::from([("app".to_string(), format!("app-{i}"))]),
                instance: format!("alert:{i}"),
                step: 0,
            },
            action,
            dry_run: false,
            outcome: Outcome::Executing,
            reason: None,
            approval_expires_ms: None,
            rollback_of: None,
        },
        event: NewEvent {
            at_ms: i as i64,
            kind: EventKind::ExecutionStarted,
            actor: "rule:bench/Saturated".into(),
            detail: serde_json::json!({}),
        },
        marks: Vec::new(),
    }
}

fn audit(dir: &Path, seconds: f64) {
    for (name, per_tx) in [
        ("batched (1,000 per transaction)", 1_000u64),
        ("fsync'd each", 1),
    ] {
        let path = dir.join(format!("audit-{per_tx}.db"));
        let store = SqliteStore::open(&path).unwrap();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            let batch: Vec<Change> = (n..n + per_tx).map(change).collect();
            store.apply(batch).unwrap();
            n += per_tx;
        }
        let secs = start.elapsed().as_secs_f64();
        let target = if per_tx > 1 { 10_000 } else { 1_000 };
        println!(
            "audit writes, {name}: {:.0}/s ({n} in {secs:.1}s; target >= {target}/s)",
            n as f64 / secs
        );
    }
}

fn main() {
    let rounds: usize = flag("--rounds", 20);
    let seconds: f64 = flag("--seconds", 5.0);
    let dir = tempfile::tempdir().unwrap();
    for what in only(&["latency", "audit"]) {
        match what {
            "latency" => latency(dir.path(), rounds),
            "audit" => audit(dir.path(), seconds),
            _ => unreachable!(),
        }
    }
}
