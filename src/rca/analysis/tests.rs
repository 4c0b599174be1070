//! Whole analyses over a real store: series written as exporters write them,
//! topology discovered from them, the report's shape.

use super::*;
use crate::rca::discover;
use crate::storage::{LabelSet, StoreConfig};

const STEP: i64 = 15_000;
/// The fault starts at this point of the series (2 h of 15 s samples).
const FAULT: usize = 400;
const POINTS: usize = 460;
const T0: i64 = 1_700_000_000_000;

fn t(i: usize) -> i64 {
    T0 + i as i64 * STEP
}

/// Deterministic noise in [-1, 1].
fn noise(i: usize, k: usize) -> f64 {
    let x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add((k as u64).wrapping_mul(1442695040888963407));
    ((x >> 33) % 2001) as f64 / 1000.0 - 1.0
}

struct World {
    store: Store,
}

impl World {
    fn new() -> Self {
        World {
            store: Store::new(StoreConfig::default()),
        }
    }

    fn series(&self, labels: &[(&str, &str)], f: impl Fn(usize) -> Option<f64>) {
        let ls = LabelSet::from_pairs(labels.iter().copied());
        for i in 0..POINTS {
            if let Some(v) = f(i) {
                self.store.append(&ls, t(i), v).unwrap();
            }
        }
    }

    /// A service's latency gauge and request counter, per pod.
    fn service(&self, name: &str, k: usize, extra_latency: impl Fn(usize) -> f64) {
        let pod = format!("{name}-5d8f7-abc{k}");
        let base = 0.05 + 0.01 * k as f64;
        self.series(
            &[
                ("__name__", "http_request_duration_seconds"),
                ("quantile", "0.99"),
                ("service", name),
                ("namespace", "shop"),
                ("pod", &pod),
            ],
            |i| Some(base * (1.0 + 0.05 * noise(i, k)) + extra_latency(i)),
        );
        self.series(
            &[
                ("__name__", "http_requests_total"),
                ("code", "200"),
                ("service", name),
                ("namespace", "shop"),
                ("pod", &pod),
            ],
            |i| Some(i as f64 * 15.0 * (100.0 + k as f64)),
        );
        self.series(
            &[
                ("__name__", "kube_pod_info"),
                ("namespace", "shop"),
                ("pod", &pod),
                ("node", if k % 2 == 0 { "n1" } else { "n2" }),
            ],
            |_| Some(1.0),
        );
        self.series(
            &[
                ("__name__", "kube_pod_owner"),
                ("namespace", "shop"),
                ("pod", &pod),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", &format!("{name}-5d8f7")),
            ],
            |_| Some(1.0),
        );
        self.series(
            &[
                ("__name__", "kube_replicaset_owner"),
                ("namespace", "shop"),
                ("replicaset", &format!("{name}-5d8f7")),
                ("owner_kind", "Deployment"),
                ("owner_name", name),
            ],
            |_| Some(1.0),
        );
    }

    /// node-exporter's load average of both nodes, flat.
    fn nodes(&self) {
        for (k, n) in ["n1", "n2"].into_iter().enumerate() {
            self.series(
                &[
                    ("__name__", "node_load1"),
                    ("instance", n),
                    ("job", "node-exporter"),
                ],
                |i| Some(1.0 + 0.05 * noise(i, 10 + k)),
            );
        }
    }

    fn edge(&self, client: &str, server: &str) {
        self.series(
            &[
                ("__name__", "traces_service_graph_request_total"),
                ("client", client),
                ("server", server),
            ],
            |i| Some(i as f64 * 100.0),
        );
    }

    fn topology(&self, cfg: &RcaConfig) -> Topology {
        let (mut b, _) = discover::discover(&self.store, &cfg.discovery, t(POINTS - 1));
        b.link_services_by_name();
        b.build(1000, 1000, t(POINTS - 1))
    }
}

/// frontend → api → db, and search (healthy, called by frontend). db's latency
/// rises at FAULT; api's 1–2 points later; the frontend's 2–3 later and most.
fn upstream_fault() -> World {
    let w = World::new();
    let step = |from: usize, by: f64| move |i: usize| if i >= from { by } else { 0.0 };
    w.service("frontend", 0, step(FAULT + 2, 0.6));
    w.service("api", 1, step(FAULT + 1, 0.4));
    w.service("db", 2, step(FAULT, 0.3));
    w.service("search", 3, |_| 0.0);
    w.edge("frontend", "api");
    w.edge("frontend", "search");
    w.edge("api", "db");
    w
}

fn request(touched: &[Touch]) -> Request<'_> {
    Request {
        incident: 7,
        touched,
        start_ms: t(FAULT + 3),
        now_ms: t(FAULT + 40),
    }
}

#[test]
fn finds_the_upstream_cause_with_its_path_and_evidence() {
    let w = upstream_fault();
    let cfg = RcaConfig::default();
    let topo = w.topology(&cfg);
    // Only the frontend alerted: db and api are candidates as its dependencies.
    let touched = [Touch {
        component: ComponentId::service("frontend"),
        first_ms: t(FAULT + 3),
    }];
    let report = analyze(&w.store, &topo, &cfg, &request(&touched));
    let top = report.top().unwrap();
    assert_eq!(top.component.to_string(), "service:db", "{report:#?}");
    assert!(top.confidence > 0.5, "{}", top.confidence);
    assert_eq!(
        top.path.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["service:db", "service:api", "service:frontend"]
    );
    // Onsets are grid points: the first at or after the sample that changed.
    let onset = top.onset.unwrap();
    assert!(onset >= t(FAULT) && onset < t(FAULT) + STEP, "{onset}");
    let e = &top.evidence[0];
    assert!(
        e.signal.starts_with("http_request_duration_seconds{"),
        "{e:?}"
    );
    assert!(e.score > 10.0);
    // The nodes are candidates too (the pods run on them), and ranked below.
    assert_eq!(report.candidates, 6, "{:?}", report.causes);
    let explained: Vec<String> = top
        .explains
        .iter()
        .map(|e| e.component.to_string())
        .collect();
    assert_eq!(explained, vec!["service:api", "service:frontend"]);
    assert!(top
        .summary
        .starts_with("service:db: rise of http_request_duration_seconds"));

    // The baselines rank the same candidates with the same features.
    let g = gather(&w.store, &topo, &cfg, &request(&touched));
    assert_eq!(Method::LargestChange.rank(&g.evidence).len(), 6);
    assert_eq!(Method::EarliestOnset.rank(&g.evidence).len(), 6);
}

#[test]
fn the_report_serialises_in_the_api_shape() {
    let w = upstream_fault();
    let cfg = RcaConfig::default();
    let topo = w.topology(&cfg);
    let touched = [Touch {
        component: ComponentId::service("frontend"),
        first_ms: t(FAULT + 3),
    }];
    let report = analyze(&w.store, &topo, &cfg, &request(&touched));
    let v = serde_json::to_value(&report).unwrap();
    for key in [
        "incident",
        "analyzedAt",
        "durationSeconds",
        "method",
        "window",
        "candidates",
        "symptoms",
        "causes",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["method"], "bayes_single_fault");
    let cause = &v["causes"][0];
    for key in [
        "rank",
        "component",
        "confidence",
        "anomaly",
        "onset",
        "score",
        "path",
        "explains",
        "evidence",
        "changes",
        "summary",
    ] {
        assert!(cause.get(key).is_some(), "{key} missing: {cause}");
    }
    assert_eq!(cause["component"], "service:db");
    let onset = report.top().unwrap().onset.unwrap();
    assert_eq!(cause["onset"], serde_json::json!(onset as f64 / 1000.0));
    let ev = &cause["evidence"][0];
    for key in ["signal", "direction", "score", "onset", "baseline", "level"] {
        assert!(ev.get(key).is_some(), "{key} missing: {ev}");
    }
    assert_eq!(ev["direction"], "up");
    assert_eq!(v["window"]["stepSeconds"], 15.0);
}

#[test]
fn a_deploy_is_evidence_and_named_in_the_report() {
    let w = World::new();
    let step = |from: usize, by: f64| move |i: usize| if i >= from { by } else { 0.0 };
    // frontend calls checkout and cart; both slow down alike; checkout was deployed
    // two minutes before.
    w.service("frontend", 0, step(FAULT + 2, 0.5));
    w.service("checkout", 1, step(FAULT, 0.3));
    w.service("cart", 3, step(FAULT, 0.3));
    w.edge("frontend", "checkout");
    w.edge("frontend", "cart");
    w.nodes();
    w.series(
        &[
            ("__name__", "kube_replicaset_owner"),
            ("namespace", "shop"),
            ("replicaset", "checkout-66b9c"),
            ("owner_kind", "Deployment"),
            ("owner_name", "checkout"),
        ],
        |i| (i >= FAULT - 8).then_some(1.0),
    );
    w.series(
        &[
            ("__name__", "kube_deployment_metadata_generation"),
            ("namespace", "shop"),
            ("deployment", "checkout"),
        ],
        |i| Some(if i >= FAULT - 8 { 5.0 } else { 4.0 }),
    );
    let cfg = RcaConfig::default();
    let topo = w.topology(&cfg);
    let touched = [Touch {
        component: ComponentId::service("frontend"),
        first_ms: t(FAULT + 3),
    }];
    let report = analyze(&w.store, &topo, &cfg, &request(&touched));
    let top = report.top().unwrap();
    assert_eq!(top.component.to_string(), "service:checkout", "{report:#?}");
    let what: Vec<&str> = top.changes.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        what,
        vec![
            "deployment shop/checkout generation 4 -> 5",
            "new ReplicaSet shop/checkout-66b9c"
        ]
    );
    assert!(
        top.summary.contains("new ReplicaSet shop/checkout-66b9c"),
        "{}",
        top.summary
    );
}

#[test]
fn without_any_topology_the_analysis_still_ranks_what_it_sees() {
    let w = upstream_fault();
    let cfg = RcaConfig::default();
    let empty = Topology::default();
    let touched = [
        Touch {
            component: ComponentId::service("frontend"),
            first_ms: t(FAULT + 3),
        },
        Touch {
            component: ComponentId::service("db"),
            first_ms: t(FAULT + 4),
        },
    ];
    let report = analyze(&w.store, &empty, &cfg, &request(&touched));
    assert_eq!(report.candidates, 2);
    assert_eq!(report.causes.len(), 2);
    assert!(report.causes.iter().all(|c| c.path.len() == 1));
}

#[test]
fn limits_bound_the_candidates_and_the_series_read() {
    let w = upstream_fault();
    let mut cfg = RcaConfig::default();
    cfg.analysis.max_candidates = 2;
    cfg.analysis.max_series_per_component = 1;
    let topo = w.topology(&cfg);
    let touched = [Touch {
        component: ComponentId::service("frontend"),
        first_ms: t(FAULT + 3),
    }];
    let g = gather(&w.store, &topo, &cfg, &request(&touched));
    assert_eq!(g.evidence.candidates.len(), 2);
    for c in &g.evidence.candidates {
        assert!(c.change.as_ref().is_none_or(|ch| ch.signals <= 1));
    }
}
