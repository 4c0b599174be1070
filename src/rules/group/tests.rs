//! The alert state machine, recording rules and the closed-loop holds, driven by a
//! scripted source so each case states exactly what the expression returns when.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::rules::file::{parse_file, LoadOptions};
use crate::storage::{Matcher, StoreConfig};

/// Scripted samples: label pairs and value.
type Samples = Vec<(Vec<(&'static str, &'static str)>, f64)>;

/// Returns, per expression text, the samples `f(text, t)` gives.
struct Script<F: Fn(&str, i64) -> Samples + Send + Sync>(F);

impl<F> Source for Script<F>
where
    F: Fn(&str, i64) -> Samples + Send + Sync,
{
    fn query(&self, _e: &Expr, text: &str, t: i64) -> Result<Vec<Sample>, QueryError> {
        Ok((self.0)(text, t)
            .into_iter()
            .map(|(l, v)| Sample {
                labels: LabelSet::from_pairs(l),
                t,
                v,
            })
            .collect())
    }
}

fn group(yaml: &str) -> Group {
    let specs = parse_file(yaml, Path::new("t.yml"), LoadOptions::default()).unwrap();
    Group::new(Arc::new(specs.into_iter().next().unwrap()), 60_000)
}

fn store() -> Store {
    Store::new(StoreConfig {
        retention_ms: i64::MAX / 4,
        max_series: 1000,
        shards: 1,
        ..StoreConfig::default()
    })
}

const M: i64 = 60_000;

/// Runs the group at 0, 1m, ... and returns the state of the single alert after
/// each step ('-' none, 'P' pending, 'F' firing, 'I' inactive).
fn states(yaml: &str, steps: i64, src: &dyn Source) -> String {
    let mut g = group(yaml);
    let st = store();
    let ext = BTreeMap::new();
    let ctx = EvalContext {
        source: src,
        appender: &st,
        external_labels: &ext,
        external_url: "",
    };
    let mut out = String::new();
    for i in 0..steps {
        assert!(g.eval(i * M, &ctx).is_empty());
        let a = g.rules[0].active.values().next();
        out.push(match a.map(|a| a.state) {
            None => '-',
            Some(AlertState::Pending) => 'P',
            Some(AlertState::Firing) => 'F',
            Some(AlertState::Inactive) => 'I',
        });
    }
    out
}

/// The condition is true during the minutes in `on`.
fn on(minutes: &'static [i64]) -> impl Fn(&str, i64) -> Samples + Send + Sync {
    move |text, t| {
        if text.starts_with("up") && minutes.contains(&(t / M)) {
            vec![(vec![("__name__", "up"), ("job", "a")], 0.0)]
        } else {
            vec![]
        }
    }
}

#[test]
fn pending_then_firing_after_for_then_resolved() {
    let y = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 2m\n";
    // Active 0..=4: pending at 0 and 1, firing from 2; clear at 5 → inactive.
    assert_eq!(states(y, 7, &Script(on(&[0, 1, 2, 3, 4]))), "PPFFFII");
    // A pending alert whose condition clears is dropped, never resolved.
    assert_eq!(states(y, 3, &Script(on(&[0]))), "P--");
}

#[test]
fn zero_for_fires_at_once() {
    let y = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n";
    assert_eq!(states(y, 3, &Script(on(&[0, 1]))), "FFI");
}

#[test]
fn keep_firing_for_holds_firing_alerts() {
    let y =
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    keep_firing_for: 2m\n";
    // Clear at 1: held at 1 and 2 (less than 2m since 1), resolved at 3.
    assert_eq!(states(y, 5, &Script(on(&[0]))), "FFFII");
    // Comes back at 2 while held: the hold restarts when it clears again.
    assert_eq!(states(y, 6, &Script(on(&[0, 2]))), "FFFFFI");
}

#[test]
fn resolve_for_needs_the_condition_clear_that_long() {
    let y = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    resolve_for: 3m\n";
    // Flapping (on at 0, 2, 4) never resolves; then clear from 5, resolved at 8.
    assert_eq!(states(y, 9, &Script(on(&[0, 2, 4]))), "FFFFFFFFI");
}

#[test]
fn resolve_expr_is_hysteresis() {
    // Fires above 0.9, resolves only when below 0.7.
    let y = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up > 0.9\n    resolve_expr: up >= 0.7\n";
    let level = |t: i64| [0.95, 0.8, 0.75, 0.6, 0.8][(t / M) as usize];
    let src = Script(move |text: &str, t: i64| {
        let v = level(t);
        let hit = if text.contains("> 0.9") {
            v > 0.9
        } else {
            v >= 0.7
        };
        if hit {
            vec![(vec![("__name__", "up"), ("job", "a")], v)]
        } else {
            vec![]
        }
    });
    // 0.95 fires; 0.8 and 0.75 are above the resolve level; 0.6 resolves; 0.8 does
    // not fire again (below 0.9).
    assert_eq!(states(y, 5, &src), "FFFII");
}

#[test]
fn alerts_series_and_templates() {
    let y = "groups:\n- name: g\n  labels: {team: db}\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n    labels: {severity: '{{ if gt $value 0.5 }}page{{ else }}ticket{{ end }}'}\n    annotations: {summary: '{{ $labels.job }} down ({{ $value }})'}\n";
    let mut g = group(y);
    let st = store();
    let ext = BTreeMap::new();
    let src = Script(on(&[0, 1]));
    let ctx = EvalContext {
        source: &src,
        appender: &st,
        external_labels: &ext,
        external_url: "",
    };
    g.eval(0, &ctx);
    g.eval(M, &ctx);
    let a = g.rules[0].active.values().next().unwrap();
    assert_eq!(a.labels.get("severity"), Some("ticket"));
    assert_eq!(a.labels.get("team"), Some("db"));
    assert_eq!(a.labels.get("alertname"), Some("A"));
    assert_eq!(a.annotations, vec![("summary".into(), "a down (0)".into())]);
    let sel = |name: &str| {
        st.select(
            &[Matcher::new(crate::storage::MatchOp::Equal, "__name__", name).unwrap()],
            0,
            M,
        )
    };
    let alerts = sel("ALERTS");
    // pending at 0 then firing at 1m; the pending series got a staleness marker.
    assert_eq!(alerts.len(), 2);
    let pending = alerts
        .iter()
        .find(|s| s.labels.get("alertstate") == Some("pending"))
        .unwrap();
    assert_eq!(pending.values[0], 1.0);
    assert!(crate::storage::is_stale_marker(pending.values[1]));
    let fs = sel("ALERTS_FOR_STATE");
    assert_eq!(fs[0].values, vec![0.0, 0.0]);
    // Sending: firing alerts only, re-sent after the resend delay.
    assert_eq!(g.rules[0].alerts_to_send(M, M, M).len(), 1);
    assert_eq!(g.rules[0].alerts_to_send(M + 1, M, M).len(), 0);
    assert_eq!(g.rules[0].alerts_to_send(2 * M, M, M).len(), 1);
}

#[test]
fn recording_results_are_visible_to_later_rules() {
    let y = "groups:\n- name: g\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Low\n    expr: job:up:sum < 2\n";
    let specs = parse_file(y, Path::new("t.yml"), LoadOptions::default()).unwrap();
    let mut g = Group::new(Arc::new(specs.into_iter().next().unwrap()), M);
    let st = store();
    for (i, inst) in ["x", "y"].iter().enumerate() {
        st.append(
            &LabelSet::from_pairs([("__name__", "up"), ("job", "a"), ("instance", inst)]),
            0,
            i as f64,
        )
        .unwrap();
    }
    let engine = Engine::default();
    let src = LocalSource {
        engine: engine.clone(),
        store: &st,
    };
    let ext = BTreeMap::new();
    let ctx = EvalContext {
        source: &src,
        appender: &st,
        external_labels: &ext,
        external_url: "",
    };
    assert!(g.eval(10_000, &ctx).is_empty());
    // The alert saw job:up:sum (= 1) at the same timestamp.
    assert_eq!(g.rules[1].active.len(), 1);
    let a = g.rules[1].active.values().next().unwrap();
    assert_eq!(a.value, 1.0);
}

#[test]
fn duplicate_labelsets_are_an_evaluation_error() {
    let y = "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    labels: {job: same}\n";
    let mut g = group(y);
    let st = store();
    let ext = BTreeMap::new();
    let src = Script(|_: &str, _| {
        vec![
            (vec![("__name__", "up"), ("job", "a")], 1.0),
            (vec![("__name__", "up"), ("job", "b")], 1.0),
        ]
    });
    let ctx = EvalContext {
        source: &src,
        appender: &st,
        external_labels: &ext,
        external_url: "",
    };
    let errs = g.eval(0, &ctx);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].1.contains("same labelset"), "{errs:?}");
    assert_eq!(g.rules[0].failures, 1);
}

#[test]
fn state_survives_snapshot_and_restore() {
    let y = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 3m\n";
    let src = Script(on(&[0, 1, 2, 3, 4]));
    let st = store();
    let ext = BTreeMap::new();
    let ctx = EvalContext {
        source: &src,
        appender: &st,
        external_labels: &ext,
        external_url: "",
    };
    let mut g = group(y);
    g.eval(0, &ctx);
    g.eval(M, &ctx);
    let saved = g.rules[0].snapshot();
    assert_eq!(saved.len(), 1);
    // "Restart": a new group restored from the snapshot keeps active_at = 0, so it
    // fires at 3m, not 3m after the restart.
    let mut g2 = group(y);
    g2.rules[0].restore(&saved);
    let st2 = store();
    let ctx2 = EvalContext {
        source: &src,
        appender: &st2,
        external_labels: &ext,
        external_url: "",
    };
    g2.eval(2 * M, &ctx2);
    assert_eq!(
        g2.rules[0].active.values().next().unwrap().state,
        AlertState::Pending
    );
    g2.eval(3 * M, &ctx2);
    assert_eq!(
        g2.rules[0].active.values().next().unwrap().state,
        AlertState::Firing
    );
}
