//! The ranking on hand-built cases with a known answer.

use super::*;
use crate::rca::signals::{Change, Direction};

fn change(score: f64, onset_s: i64) -> ComponentChange {
    ComponentChange {
        score,
        onset_ms: (score >= 4.0).then_some(onset_s * 1000),
        signals: 5,
        recovered: false,
        changes: vec![Change {
            signal: "latency".into(),
            direction: Direction::Up,
            score,
            onset_ms: (score >= 4.0).then_some(onset_s * 1000),
            baseline: 0.1,
            level: 0.2,
            recovered: false,
        }],
    }
}

fn cand(name: &str, c: Option<ComponentChange>) -> Candidate {
    Candidate {
        id: ComponentId::parse(name).unwrap(),
        change: c,
        touched: false,
        first_signal_ms: None,
        changes: Vec::new(),
    }
}

fn names(ev: &Evidence, r: &[Ranked]) -> Vec<String> {
    r.iter()
        .map(|x| ev.candidates[x.index].id.to_string())
        .collect()
}

/// frontend → api → db, plus an unrelated healthy search service. The fault is at
/// db; the frontend shows the biggest change and (by measurement noise) the
/// earliest onset, so both baselines miss.
fn upstream() -> Evidence {
    Evidence {
        candidates: vec![
            cand("service:frontend", Some(change(25.0, 90))),
            cand("service:api", Some(change(9.0, 130))),
            cand("service:db", Some(change(12.0, 100))),
            cand("service:search", Some(change(1.5, 0))),
        ],
        deps: vec![vec![1], vec![2], vec![], vec![]],
        start_ms: 60_000,
    }
}

#[test]
fn upstream_cause_beats_its_louder_dependents() {
    let ev = upstream();
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "service:db");
    assert!(r[0].confidence > 0.6, "{r:?}");
    let sum: f64 = r.iter().map(|x| x.confidence).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    let path: Vec<String> = ev
        .path(2, 0)
        .unwrap()
        .into_iter()
        .map(|i| ev.candidates[i].id.to_string())
        .collect();
    assert_eq!(path, vec!["service:db", "service:api", "service:frontend"]);
    assert_eq!(ev.affected(2), vec![(0, 2), (1, 1)]);
    // The baselines fall for the symptom.
    assert_eq!(names(&ev, &largest_change(&ev))[0], "service:frontend");
    assert_eq!(names(&ev, &earliest_onset(&ev))[0], "service:frontend");
}

#[test]
fn a_dependent_starting_long_before_the_cause_is_evidence_against_it() {
    // Same graph, but the frontend changed 10 minutes before a weakly abnormal db:
    // db cannot have caused that, so the frontend is the better explanation.
    let mut ev = upstream();
    ev.candidates[0].change = Some(change(25.0, -500));
    ev.candidates[1].change = Some(change(2.0, 0));
    ev.candidates[2].change = Some(change(5.0, 100));
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "service:frontend");
}

#[test]
fn a_shared_node_explains_unrelated_services() {
    // a, b and c do not call each other but all run on node n1, whose CPU is only
    // mildly abnormal; d runs on n2 and is fine.
    let ev = Evidence {
        candidates: vec![
            cand("service:a", Some(change(10.0, 100))),
            cand("service:b", Some(change(9.0, 110))),
            cand("service:c", Some(change(11.0, 95))),
            cand("service:d", Some(change(1.0, 0))),
            cand("node:n1", Some(change(6.0, 100))),
            cand("node:n2", Some(change(0.5, 0))),
        ],
        deps: vec![vec![4], vec![4], vec![4], vec![5], vec![], vec![]],
        start_ms: 60_000,
    };
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "node:n1", "{r:?}");
    assert_eq!(names(&ev, &largest_change(&ev))[0], "service:c");
}

#[test]
fn a_bad_deploy_tips_a_tie() {
    // frontend calls checkout and cart; both changed alike; checkout got a new
    // ReplicaSet a minute before its onset.
    let mut ev = Evidence {
        candidates: vec![
            cand("service:frontend", Some(change(8.0, 130))),
            cand("service:checkout", Some(change(9.0, 100))),
            cand("service:cart", Some(change(9.0, 100))),
        ],
        deps: vec![vec![1, 2], vec![], vec![]],
        start_ms: 60_000,
    };
    let without = bayes(&ev, &RankParams::default());
    assert!((without[0].confidence - without[1].confidence).abs() < 1e-9);
    ev.candidates[1].changes.push(ChangeEvent {
        at_ms: 40_000,
        what: "new ReplicaSet shop/checkout-7d9f8b6c5".into(),
    });
    let with = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &with)[0], "service:checkout");
    // A deploy long before the onset is not evidence.
    ev.candidates[1].changes[0].at_ms = 100_000 - 3_600_000;
    let old = bayes(&ev, &RankParams::default());
    assert!((old[0].confidence - old[1].confidence).abs() < 1e-9);
}

#[test]
fn an_unobserved_dependency_can_explain_its_callers() {
    // Two services calling an external API without metrics both fail: the API is
    // the best explanation; with only one failing caller, the caller is.
    let mut ev = Evidence {
        candidates: vec![
            cand("service:checkout", Some(change(12.0, 100))),
            cand("service:billing", Some(change(11.0, 105))),
            cand("service:api.stripe.com", None),
        ],
        deps: vec![vec![2], vec![2], vec![]],
        start_ms: 60_000,
    };
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "service:api.stripe.com");
    ev.candidates[1].change = Some(change(1.0, 0));
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "service:checkout");
}

#[test]
fn touched_components_without_series_count_as_abnormal() {
    let mut ev = Evidence {
        candidates: vec![cand("service:web", None), cand("service:db", None)],
        deps: vec![vec![1], vec![]],
        start_ms: 0,
    };
    ev.candidates[0].touched = true;
    ev.candidates[0].first_signal_ms = Some(5_000);
    let p = RankParams::default();
    assert_eq!(ev.anomaly(0, &p), Some(p.touched_floor));
    assert_eq!(ev.anomaly(1, &p), None);
    assert_eq!(ev.onset(0), Some(5_000));
    let r = bayes(&ev, &p);
    assert!(r.iter().all(|x| x.confidence.is_finite()));
    assert_eq!(names(&ev, &r)[0], "service:web");
}

#[test]
fn empty_evidence_ranks_nothing() {
    let ev = Evidence {
        candidates: vec![],
        deps: vec![],
        start_ms: 0,
    };
    assert!(bayes(&ev, &RankParams::default()).is_empty());
    assert!(earliest_onset(&ev).is_empty());
    assert!(largest_change(&ev).is_empty());
}

#[test]
fn a_cpu_hog_shows_on_its_node_without_blaming_the_node() {
    // hog runs on n1 with two healthy neighbours; its CPU fault raises n1's load
    // and slows its caller.
    let ev = Evidence {
        candidates: vec![
            cand("service:web", Some(change(9.0, 110))),
            cand("service:hog", Some(change(30.0, 100))),
            cand("node:n1", Some(change(20.0, 100))),
            cand("service:quiet-1", Some(change(1.0, 0))),
            cand("service:quiet-2", Some(change(0.5, 0))),
        ],
        deps: vec![vec![1], vec![2], vec![], vec![2], vec![2]],
        start_ms: 60_000,
    };
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "service:hog", "{r:?}");
    assert_eq!(names(&ev, &r)[1], "node:n1");
}

#[test]
fn a_burst_that_is_over_is_a_weaker_cause_than_an_ongoing_fault() {
    // A datastore had a burst 3 minutes before the fault and slowed its callers,
    // auth among them; billing, which calls auth, has an ongoing fault. The burst
    // explains everything by the graph, but it is over.
    let over = |score: f64, onset: i64| {
        let mut c = change(score, onset);
        c.recovered = true;
        Some(c)
    };
    let ev = Evidence {
        candidates: vec![
            cand("service:mongo", over(50.0, -190)),
            cand("service:geo", over(9.0, -180)),
            cand("service:auth", over(8.0, -175)),
            cand("service:billing", Some(change(40.0, 19))),
            cand("service:gateway", Some(change(12.0, 40))),
        ],
        deps: vec![vec![], vec![0], vec![0], vec![2], vec![3]],
        start_ms: -200_000,
    };
    let r = bayes(&ev, &RankParams::default());
    assert_eq!(names(&ev, &r)[0], "service:billing", "{r:?}");
}
