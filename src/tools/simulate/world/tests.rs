use std::path::Path;

use super::*;
use crate::act::{ReplicaBounds, ReplicaChange};
use crate::tools::simulate::scenario::{parse, Loaded};

fn builtin() -> Scenario {
    Loaded::builtin().unwrap().scenario
}

/// The built-in world with only the named faults (and no harmless events unless kept).
fn with_faults(names: &[&str], keep_benign: bool) -> Scenario {
    let mut sc = builtin();
    sc.faults.retain(|f| names.contains(&f.name.as_str()));
    if !keep_benign {
        sc.benign.clear();
    }
    sc
}

fn obj(kind: ObjectKind, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn idx(w: &World, name: &str) -> usize {
    w.service_names().position(|n| n == name).unwrap()
}

/// Steps the world from its current time to `until` (ms since the start).
fn run_to(w: &mut World, until: i64) {
    let step = w.scenario().step.as_millis();
    let mut t = w.now();
    while t < until {
        t += step;
        w.step(t);
    }
}

/// Steps the world `ms` further.
fn advance(w: &mut World, ms: i64) {
    let until = w.now() + ms;
    run_to(w, until);
}

#[test]
fn same_seed_same_world_other_seed_other_world() {
    let sc = builtin();
    let mut a = World::new(&sc);
    let mut b = World::new(&sc);
    let mut other = sc.clone();
    other.seed += 1;
    let mut c = World::new(&other);
    let mut differs = false;
    for k in 1..=200 {
        let t = k * 15_000;
        a.step(t);
        b.step(t);
        c.step(t);
        let (sa, sb, sc) = (a.samples(), b.samples(), c.samples());
        assert_eq!(sa, sb, "step {k}");
        differs |= sa != sc;
    }
    assert!(differs, "another seed gave the same samples");
}

#[test]
fn a_day_without_faults_stays_healthy_through_the_peak_and_the_noise() {
    let sc = with_faults(&[], true);
    let mut w = World::new(&sc);
    let step = sc.step.as_millis();
    for k in 1..=(sc.duration.as_millis() / step) {
        w.step(k * step);
        for (s, t) in w.truth().iter().enumerate() {
            assert!(
                t.healthy,
                "{} unhealthy at {}s: {t:?} (slo latency {}s)",
                sc.services[s].name,
                k * step / 1000,
                w.slo_latency_s()[s]
            );
        }
    }
    // The seasonal swing is there: the entry's rate at 14:00 is twice the 02:00 one.
    assert!(w.entry_rate(14 * 3_600_000) > 1.9 * w.entry_rate(2 * 3_600_000));
}

#[test]
fn a_restart_clears_a_memory_leak() {
    let sc = with_faults(&["backend-memory-leak"], false);
    let mut w = World::new(&sc);
    let b = idx(&w, "backend");
    run_to(&mut w, 3_600_000 + 50 * 60_000);
    assert!(w.truth()[b].memory_ratio > 0.85, "{:?}", w.truth()[b]);
    // Left alone, the pods are OOM-killed and the leak goes on.
    run_to(&mut w, 3_600_000 + 70 * 60_000);
    assert!(w.events().iter().any(|e| e.what.contains("OOM-killed")));
    assert_eq!(w.faults()[0].phase, FaultPhase::Active);
    let effect = w
        .apply(&Action::RolloutRestart {
            workload: obj(ObjectKind::Deployment, "backend"),
        })
        .unwrap();
    assert_eq!(
        effect.details["fixes"],
        serde_json::json!(["backend-memory-leak"])
    );
    assert_eq!(w.faults()[0].phase, FaultPhase::Ended);
    advance(&mut w, 5 * 60_000);
    assert!(w.truth()[b].memory_ratio < 0.5, "{:?}", w.truth()[b]);
    assert!(w.truth()[b].healthy);
}

#[test]
fn scaling_up_lowers_latency_under_load() {
    let sc = with_faults(&["backend-latency-spike"], false);
    let mut w = World::new(&sc);
    let b = idx(&w, "backend");
    run_to(&mut w, 11 * 3_600_000 + 30 * 60_000 + 3 * 60_000);
    let before = w.truth()[b];
    assert!(!before.healthy && before.utilization > 1.0, "{before:?}");
    let effect = w
        .apply(&Action::Scale {
            workload: obj(ObjectKind::Deployment, "backend"),
            change: ReplicaChange::By(3),
            bounds: ReplicaBounds { min: 1, max: 20 },
        })
        .unwrap();
    assert_eq!(effect.summary, "scaled shop/deployment/backend 4 -> 7");
    assert!(effect.undo.is_some());
    // The cause goes on (a slow node), the new pods absorb it.
    advance(&mut w, 3 * 60_000);
    let after = w.truth()[b];
    assert!(
        after.healthy && after.latency_s < before.latency_s / 2.0,
        "{after:?}"
    );
    assert_eq!(w.faults()[0].phase, FaultPhase::Active);
    assert_eq!(w.faults()[0].fixes.len(), 1);
}

#[test]
fn clearing_the_cache_restores_the_hit_ratio() {
    let sc = with_faults(&["cache-pollution"], false);
    let mut w = World::new(&sc);
    let c = idx(&w, "cache");
    run_to(&mut w, 3 * 3_600_000 + 5 * 60_000);
    assert!(w.truth()[c].hit_ratio < 0.4);
    assert!(
        !w.truth()[idx(&w, "database")].healthy,
        "the database behind it saturates"
    );
    w.apply(&Action::ClearCache {
        target: "cache".into(),
        pattern: "*".into(),
        db: None,
        max_keys: 10_000,
    })
    .unwrap();
    // Cold at first, then warm again.
    w.step(w.now() + 15_000);
    assert!(w.truth()[c].hit_ratio < 0.5);
    advance(&mut w, 5 * 60_000);
    assert!(w.truth()[c].hit_ratio > 0.9, "{:?}", w.truth()[c]);
    assert!(w.truth().iter().all(|t| t.healthy));
}

#[test]
fn switching_provider_ends_the_outage_and_the_wrong_action_costs() {
    let sc = with_faults(&["payments-outage"], false);
    let mut w = World::new(&sc);
    let b = idx(&w, "backend");
    run_to(&mut w, 5 * 3_600_000 + 2 * 60_000);
    let during = w.truth()[b];
    assert!(during.error_ratio > 0.1, "{during:?}");
    // Restarting the backend does not help, and drops what its pods were serving.
    let restart = w
        .apply(&Action::RolloutRestart {
            workload: obj(ObjectKind::Deployment, "backend"),
        })
        .unwrap();
    assert_eq!(restart.details["fixes"], serde_json::json!([]));
    let failed_before = w.services[b].requests_failed;
    w.step(w.now() + 15_000);
    assert!(
        w.truth()[b].error_ratio > during.error_ratio,
        "in-flight requests were dropped"
    );
    assert!(w.services[b].requests_failed > failed_before);
    advance(&mut w, 3 * 60_000);
    assert_eq!(w.faults()[0].phase, FaultPhase::Active);
    let patch = w
        .apply(&Action::PatchConfigMap {
            configmap: obj(ObjectKind::ConfigMap, "backend-config"),
            data: [("provider".to_string(), Some("secondary".to_string()))].into(),
        })
        .unwrap();
    assert_eq!(patch.details["previous"]["provider"], "primary");
    assert_eq!(w.faults()[0].phase, FaultPhase::Ended);
    advance(&mut w, 2 * 60_000);
    assert!(w.truth()[b].healthy, "{:?}", w.truth()[b]);
}

#[test]
fn a_rollback_ends_a_bad_deploy_and_there_is_nothing_to_roll_back_before() {
    let sc = with_faults(&["backend-bad-deploy"], false);
    let mut w = World::new(&sc);
    let rollback = Action::DeploymentRollback {
        deployment: obj(ObjectKind::Deployment, "backend"),
        revision: None,
    };
    run_to(&mut w, 3_600_000);
    assert!(matches!(w.apply(&rollback), Err(ActError::Refused(_))));
    run_to(&mut w, 7 * 3_600_000 + 35 * 60_000);
    let b = idx(&w, "backend");
    assert!(w.truth()[b].error_ratio > 0.1);
    let effect = w.apply(&rollback).unwrap();
    assert_eq!(
        effect.summary,
        "rolled back shop/deployment/backend from revision 2 to 1"
    );
    advance(&mut w, 3 * 60_000);
    assert!(w.truth()[b].healthy, "{:?}", w.truth()[b]);
}

#[test]
fn a_crash_loop_ends_when_its_flag_is_turned_off() {
    let sc = with_faults(&["frontend-crash-loop"], false);
    let mut w = World::new(&sc);
    let f = idx(&w, "frontend");
    run_to(&mut w, 9 * 3_600_000 + 36 * 60_000);
    assert_eq!(w.truth()[f].ready_pods, 1);
    assert!(!w.truth()[f].healthy);
    w.apply(&Action::PatchConfigMap {
        configmap: obj(ObjectKind::ConfigMap, "frontend-config"),
        data: [("new_checkout".to_string(), Some("false".to_string()))].into(),
    })
    .unwrap();
    advance(&mut w, 2 * 60_000);
    assert_eq!(w.truth()[f].ready_pods, 3);
    assert!(w.truth()[f].healthy);
}

#[test]
fn targets_outside_the_world_are_refused() {
    let sc = builtin();
    let mut w = World::new(&sc);
    w.step(15_000);
    let other_ns = Action::RolloutRestart {
        workload: ObjectRef {
            kind: ObjectKind::Deployment,
            namespace: "prod".into(),
            name: "backend".into(),
        },
    };
    assert!(matches!(w.apply(&other_ns), Err(ActError::NotFound(_))));
    let unknown = Action::RolloutRestart {
        workload: obj(ObjectKind::Deployment, "nope"),
    };
    assert!(matches!(w.apply(&unknown), Err(ActError::NotFound(_))));
    let wrong_kind = Action::RolloutRestart {
        workload: obj(ObjectKind::Deployment, "database"),
    };
    assert!(matches!(w.apply(&wrong_kind), Err(ActError::NotFound(_))));
    let no_cache = Action::ClearCache {
        target: "backend".into(),
        pattern: "*".into(),
        db: None,
        max_keys: 1,
    };
    assert!(matches!(
        w.apply(&no_cache),
        Err(ActError::NotConfigured(_))
    ));
    assert!(w.observe(&unknown).is_err());
    let state = w
        .observe(&Action::RolloutRestart {
            workload: obj(ObjectKind::StatefulSet, "database"),
        })
        .unwrap();
    assert_eq!(state["replicas"], 2);
}

#[test]
fn readings_carry_the_labels_rules_select_on() {
    let sc = builtin();
    let mut w = World::new(&sc);
    w.step(15_000);
    let samples = w.samples();
    let has = |name: &str, label: &str, value: &str| {
        samples.iter().any(|(l, _)| {
            l.iter().any(|(k, v)| *k == "__name__" && v == name)
                && l.iter().any(|(k, v)| *k == label && v == value)
        })
    };
    assert!(has("http_request_duration_seconds", "quantile", "0.99"));
    assert!(has("upstream_requests_total", "upstream", "payments"));
    assert!(has("cache_hits_total", "service", "cache"));
    assert!(has(
        "container_memory_working_set_bytes",
        "service",
        "backend"
    ));
    assert!(
        !has("http_requests_total", "service", "payments"),
        "an external service exports nothing"
    );
    for (labels, v) in &samples {
        assert!(v.is_finite(), "{labels:?}");
        assert!(
            labels.windows(2).all(|p| p[0].0 < p[1].0),
            "labels sorted: {labels:?}"
        );
    }
}

#[test]
fn a_custom_scenario_with_a_shift_fault_runs() {
    let text = "duration: 1h\nservices:\n  - {name: web, calls: {db: 1}}\n  - {name: db, kind: database}\n\
                faults:\n  - {name: lag, kind: shift, service: db, signal: latency, factor: 50, start: 10m, duration: 10m}\n";
    let sc = parse(text, Path::new("s.yml"), None).unwrap().scenario;
    let mut w = World::new(&sc);
    run_to(&mut w, 15 * 60_000);
    assert!(
        !w.truth()[0].healthy,
        "the database's latency shows at its caller"
    );
    run_to(&mut w, 25 * 60_000);
    assert!(w.truth().iter().all(|t| t.healthy));
}
