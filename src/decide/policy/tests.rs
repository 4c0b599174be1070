use std::collections::BTreeMap;

use super::*;
use crate::act::{ObjectKind, ObjectRef, ReplicaBounds, ReplicaChange};
use crate::decide::config::AllowConfig;

fn cfg() -> DecideConfig {
    DecideConfig {
        dry_run: false,
        allow: AllowConfig {
            actions: vec![
                ActionKind::RestartPod,
                ActionKind::Scale,
                ActionKind::ClearCache,
            ],
            namespaces: vec!["prod".into()],
            redis_patterns: vec!["session:*".into()],
            ..Default::default()
        },
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str) -> Action {
    Action::RestartPod {
        pod: ObjectRef {
            kind: ObjectKind::Pod,
            namespace: ns.into(),
            name: name.into(),
        },
        uid: None,
    }
}

fn scale(name: &str) -> Action {
    Action::Scale {
        workload: ObjectRef {
            kind: ObjectKind::Deployment,
            namespace: "prod".into(),
            name: name.into(),
        },
        change: ReplicaChange::By(1),
        bounds: ReplicaBounds { min: 1, max: 5 },
    }
}

fn proposal<'a>(
    action: &'a Action,
    instance: &'a str,
    labels: &'a BTreeMap<String, String>,
) -> Proposal<'a> {
    Proposal {
        action,
        rule: "g/R",
        instance,
        labels,
        severity: Severity::Warning,
        cooldown_ms: 60_000,
        dry_run: false,
        approval_required: false,
        approval_timeout_ms: None,
        approved: false,
        automatic: true,
    }
}

/// Evaluates and, if admitted (or dry-run), records the marks, as the decider does.
fn decide(p: &mut Policy, prop: &Proposal<'_>, now: i64) -> Verdict {
    let v = p.evaluate(prop, now);
    match &v {
        Verdict::Admit { marks } | Verdict::DryRun { marks, .. } => p.record(marks),
        _ => {}
    }
    v
}

fn refused(v: &Verdict) -> Option<RefusalReason> {
    match v {
        Verdict::Refuse(r) => Some(r.reason),
        _ => None,
    }
}

#[test]
fn allow_list_refuses_kinds_namespaces_and_patterns_not_listed() {
    let p = Policy::new(cfg());
    let l = BTreeMap::new();
    assert!(matches!(
        p.evaluate(&proposal(&pod("prod", "a"), "i", &l), 0),
        Verdict::Admit { .. }
    ));
    let v = p.evaluate(&proposal(&pod("dev", "a"), "i", &l), 0);
    assert_eq!(refused(&v), Some(RefusalReason::NotAllowed));
    let cordon = Action::CordonNode {
        node: "n1".into(),
        cordon: true,
    };
    assert_eq!(
        refused(&p.evaluate(&proposal(&cordon, "i", &l), 0)),
        Some(RefusalReason::NotAllowed)
    );
    let cache = |pattern: &str| Action::ClearCache {
        target: "c".into(),
        pattern: pattern.into(),
        db: None,
        max_keys: 10,
    };
    assert!(p.allowed(&cache("session:user1:*")).is_ok());
    assert!(p.allowed(&cache("*")).is_err());
    assert!(p.allowed(&cache("sess*")).is_err());
    // Notifications never need an allow-list entry.
    let notify = Action::Notify {
        channel: "x".into(),
        notification: crate::act::Notification {
            status: "firing".into(),
            title: "t".into(),
            summary: String::new(),
            severity: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at_ms: 0,
            url: String::new(),
        },
    };
    assert!(p.allowed(&notify).is_ok());
}

#[test]
fn cooldown_per_rule_action_and_target() {
    let mut p = Policy::new(cfg());
    let l = BTreeMap::new();
    let a = scale("web");
    assert!(matches!(
        decide(&mut p, &proposal(&a, "i1", &l), 0),
        Verdict::Admit { .. }
    ));
    // Another alert of the same rule on the same target: cooldown.
    let v = decide(&mut p, &proposal(&a, "i2", &l), 30_000);
    assert_eq!(refused(&v), Some(RefusalReason::Cooldown));
    // Another target is not in cooldown.
    let b = scale("api");
    assert!(matches!(
        decide(&mut p, &proposal(&b, "i2", &l), 30_000),
        Verdict::Admit { .. }
    ));
    // Another rule on the same target is not either.
    let mut other = proposal(&a, "i3", &l);
    other.rule = "g/Other";
    assert!(matches!(
        decide(&mut p, &other, 30_000),
        Verdict::Admit { .. }
    ));
    // After the cooldown, the first rule may act again.
    assert!(matches!(
        decide(&mut p, &proposal(&a, "i4", &l), 60_001),
        Verdict::Admit { .. }
    ));
}

#[test]
fn dedup_per_alert_instance() {
    let mut p = Policy::new(cfg());
    let l = BTreeMap::new();
    let a = scale("web");
    let mut prop = proposal(&a, "alert-1", &l);
    prop.cooldown_ms = 1; // cooldown out of the way
    assert!(matches!(decide(&mut p, &prop, 0), Verdict::Admit { .. }));
    assert_eq!(
        refused(&decide(&mut p, &prop, 10)),
        Some(RefusalReason::Duplicate)
    );
    let prop2 = Proposal {
        instance: "alert-2",
        ..prop.clone()
    };
    assert!(matches!(decide(&mut p, &prop2, 10), Verdict::Admit { .. }));
}

#[test]
fn rate_limits_global_and_per_target() {
    let mut c = cfg();
    c.rate_limit.global_per_hour = 3;
    c.rate_limit.per_target_per_hour = 2;
    let mut p = Policy::new(c);
    let l = BTreeMap::new();
    let web = scale("web");
    let mut prop = proposal(&web, "", &l);
    prop.cooldown_ms = 1;
    assert!(matches!(decide(&mut p, &prop, 0), Verdict::Admit { .. }));
    assert!(matches!(decide(&mut p, &prop, 10), Verdict::Admit { .. }));
    assert_eq!(
        refused(&decide(&mut p, &prop, 20)),
        Some(RefusalReason::RateLimitTarget)
    );
    let api = scale("api");
    let prop_api = Proposal {
        action: &api,
        ..prop.clone()
    };
    assert!(matches!(
        decide(&mut p, &prop_api, 30),
        Verdict::Admit { .. }
    ));
    assert_eq!(
        refused(&decide(&mut p, &prop_api, 40)),
        Some(RefusalReason::RateLimitGlobal)
    );
    // An hour later the window has moved on.
    assert!(matches!(
        decide(&mut p, &prop, 3_600_001),
        Verdict::Admit { .. }
    ));
}

#[test]
fn blast_radius_counts_pods_of_one_workload() {
    let mut c = cfg();
    c.blast_radius.max_pods_per_workload = 2;
    let mut p = Policy::new(c);
    let l = BTreeMap::new();
    let pods = [
        "web-7d9f8c6b5-x2x4q",
        "web-7d9f8c6b5-bbbbb",
        "web-7d9f8c6b5-ccccc",
    ];
    let actions: Vec<Action> = pods.iter().map(|n| pod("prod", n)).collect();
    assert!(matches!(
        decide(&mut p, &proposal(&actions[0], "1", &l), 0),
        Verdict::Admit { .. }
    ));
    assert!(matches!(
        decide(&mut p, &proposal(&actions[1], "2", &l), 1),
        Verdict::Admit { .. }
    ));
    assert_eq!(
        refused(&decide(&mut p, &proposal(&actions[2], "3", &l), 2)),
        Some(RefusalReason::BlastRadius)
    );
    // A pod of another workload is fine.
    let db = pod("prod", "db-0");
    assert!(matches!(
        decide(&mut p, &proposal(&db, "4", &l), 3),
        Verdict::Admit { .. }
    ));
    assert_eq!(pod_workload("db-0"), "db");
    assert_eq!(pod_workload("web-7d9f8c6b5-x2x4q"), "web");
    assert_eq!(pod_workload("node-exporter-x2x4q"), "node-exporter");
    // An owner label wins over the name.
    let owned = BTreeMap::from([("owner_name".to_string(), "web-7d9f8c6b5".to_string())]);
    assert_eq!(
        blast_key(&actions[0], &owned).as_deref(),
        Some("prod/web-7d9f8c6b5")
    );
}

#[test]
fn dry_run_marks_never_restrict_real_actions() {
    let mut c = cfg();
    c.dry_run = true;
    let mut p = Policy::new(c.clone());
    let l = BTreeMap::new();
    let a = scale("web");
    assert!(matches!(
        decide(&mut p, &proposal(&a, "1", &l), 0),
        Verdict::DryRun { .. }
    ));
    // A dry run meets the cooldown its earlier dry run would have set...
    assert_eq!(
        refused(&decide(&mut p, &proposal(&a, "2", &l), 10)),
        Some(RefusalReason::Cooldown)
    );
    // ...but once dry-run is off, real actions do not.
    c.dry_run = false;
    p.set_config(c);
    assert!(matches!(
        decide(&mut p, &proposal(&a, "3", &l), 20),
        Verdict::Admit { .. }
    ));
    // A rule's own dry_run applies with the global switch off.
    let mut prop = proposal(&a, "4", &l);
    prop.dry_run = true;
    prop.rule = "g/Other";
    assert!(matches!(p.evaluate(&prop, 30), Verdict::DryRun { .. }));
}

#[test]
fn approval_by_rule_severity_and_kind() {
    let mut c = cfg();
    c.allow.actions.push(ActionKind::CordonNode);
    c.allow.nodes = vec!["*".into()];
    c.approval.min_severity = Some(Severity::Critical);
    let p = Policy::new(c);
    let l = BTreeMap::new();
    let a = scale("web");
    let mut prop = proposal(&a, "1", &l);
    assert!(matches!(p.evaluate(&prop, 0), Verdict::Admit { .. }));
    prop.severity = Severity::Critical;
    assert_eq!(
        p.evaluate(&prop, 0),
        Verdict::NeedsApproval {
            expires_ms: 30 * 60_000
        }
    );
    prop.severity = Severity::Warning;
    prop.approval_required = true;
    prop.approval_timeout_ms = Some(5_000);
    assert_eq!(
        p.evaluate(&prop, 100),
        Verdict::NeedsApproval { expires_ms: 5_100 }
    );
    prop.approved = true;
    assert!(matches!(p.evaluate(&prop, 100), Verdict::Admit { .. }));
    // Cordoning a node always waits for a human.
    let cordon = Action::CordonNode {
        node: "n1".into(),
        cordon: true,
    };
    assert!(matches!(
        p.evaluate(&proposal(&cordon, "2", &l), 0),
        Verdict::NeedsApproval { .. }
    ));
}
