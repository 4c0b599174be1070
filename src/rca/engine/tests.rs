//! The running stage without timers: signals in, incidents and reports out, the
//! alert annotations, the API views.

use super::*;
use crate::storage::{LabelSet, SeriesId, StoreConfig};

const STEP: i64 = 15_000;
const T0: i64 = 1_700_000_000_000;
const FAULT: i64 = 300;
const POINTS: i64 = 340;

fn t(i: i64) -> i64 {
    T0 + i * STEP
}

fn put(store: &Store, labels: &[(&str, &str)], f: impl Fn(i64) -> f64) {
    let ls = LabelSet::from_pairs(labels.iter().copied());
    for i in 0..POINTS {
        store.append(&ls, t(i), f(i)).unwrap();
    }
}

/// web → api → db; db's latency rises at FAULT, the callers' a little later.
fn store() -> Arc<Store> {
    let store = Arc::new(Store::new(StoreConfig::default()));
    for (k, (svc, delay, by)) in [("web", 2, 0.5), ("api", 1, 0.4), ("db", 0, 0.3)]
        .into_iter()
        .enumerate()
    {
        put(
            &store,
            &[("__name__", "latency_seconds"), ("service", svc)],
            |i| {
                let wobble = ((i * 37 + k as i64 * 11) % 17) as f64 / 17.0 - 0.5;
                0.1 + 0.004 * wobble + if i >= FAULT + delay { by } else { 0.0 }
            },
        );
    }
    for (c, s) in [("web", "api"), ("api", "db")] {
        put(
            &store,
            &[
                ("__name__", "traces_service_graph_request_total"),
                ("client", c),
                ("server", s),
            ],
            |i| i as f64,
        );
    }
    store
}

fn engine(store: Arc<Store>) -> Arc<RcaEngine> {
    let e = RcaEngine::new(&RcaConfig::default(), store, &prometheus::Registry::new()).unwrap();
    e.refresh(t(POINTS));
    e
}

fn event(service: &str, at: i64) -> AnomalyEvent {
    let labels = LabelSet::from_pairs([("__name__", "latency_seconds"), ("service", service)]);
    AnomalyEvent {
        detector: "lat".into(),
        severity: "warning".into(),
        series: SeriesId(labels.series_hash()),
        labels,
        t: at,
        value: 1.0,
        score: 5.0,
        threshold: 3.0,
    }
}

#[test]
fn events_on_neighbours_are_one_incident_with_a_ranked_cause() {
    let e = engine(store());
    assert_eq!(e.topology().len(), 3);
    let a = e.observe_event(&event("web", t(FAULT + 3))).unwrap();
    let b = e.observe_event(&event("db", t(FAULT + 4))).unwrap();
    assert_eq!(a, b);
    // Series of no component are counted, not recorded.
    let nobody = AnomalyEvent {
        labels: LabelSet::from_pairs([("__name__", "x")]),
        ..event("web", t(FAULT))
    };
    assert!(e.observe_event(&nobody).is_none());

    let r = e.analyze(a, t(FAULT + 20)).unwrap();
    assert_eq!(r.top().unwrap().component.to_string(), "service:db");
    // Unchanged incident: the cached report.
    let again = e.analyze(a, t(FAULT + 30)).unwrap();
    assert!(Arc::ptr_eq(&r, &again));
    assert_eq!(e.metrics.analyses.get(), 1);
    // A new signal makes it stale; the background pass redoes exactly that one.
    e.observe_event(&event("api", t(FAULT + 5)));
    assert_eq!(e.analyze_changed(t(FAULT + 30)), 1);
    assert_eq!(e.analyze_changed(t(FAULT + 31)), 0);
    assert_eq!(e.metrics.analyses.get(), 2);

    let list = e.incidents(t(FAULT + 31));
    assert_eq!(list.len(), 1);
    let v = serde_json::to_value(&list).unwrap();
    assert_eq!(v[0]["id"], a);
    assert_eq!(v[0]["members"].as_array().unwrap().len(), 3);
    assert_eq!(v[0]["rca"]["causes"][0]["component"], "service:db");
    assert!(matches!(
        e.incident(999, t(FAULT)),
        Err(RcaError::NotFound(999))
    ));
    assert!(e
        .report_for(&ComponentId::service("api"), t(FAULT + 31))
        .is_some());
}

#[test]
fn firing_alerts_get_annotations_and_open_incidents() {
    let e = engine(store());
    let labels: BTreeMap<String, String> = [
        ("alertname", "HighLatency"),
        ("service", "web"),
        ("severity", "page"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ann = e.annotations_for_alert(&labels, true, t(FAULT + 10));
    assert_eq!(ann["rca_cause"], "service:db", "{ann:?}");
    assert_eq!(ann["rca_path"], "service:db -> service:api -> service:web");
    let conf: f64 = ann["rca_confidence"].parse().unwrap();
    assert!(conf > 0.5 && conf <= 1.0);
    assert!(ann["rca_summary"].starts_with("service:db:"), "{ann:?}");
    let list = e.incidents(t(FAULT + 10));
    assert_eq!(list[0].incident.severity, "page");
    assert!(list[0].incident.members[0].alerts.contains("HighLatency"));
    // Resolved: the last report, no new signal.
    let before = list[0].incident.version;
    let ann = e.annotations_for_alert(&labels, false, t(FAULT + 12));
    assert_eq!(ann["rca_cause"], "service:db");
    assert_eq!(e.incidents(t(FAULT + 12))[0].incident.version, before);
    // An alert naming nothing gets nothing.
    let bare: BTreeMap<String, String> = [("alertname".to_string(), "Watchdog".to_string())].into();
    assert!(e
        .annotations_for_alert(&bare, true, t(FAULT + 10))
        .is_empty());
}

#[test]
fn a_reload_replaces_the_configured_topology_and_keeps_incidents() {
    let e = engine(store());
    e.observe_event(&event("web", t(FAULT + 3)));
    let cfg: RcaConfig = serde_yaml::from_str(
        "topology:\n  services:\n    - {name: db, depends_on: [disk], owners: [team-data]}\n",
    )
    .unwrap();
    e.reload(&cfg);
    let topo = e.topology();
    assert!(topo.contains(&ComponentId::service("disk")));
    assert!(
        topo.contains(&ComponentId::service("web")),
        "discovery kept"
    );
    assert_eq!(e.incidents(t(FAULT + 3)).len(), 1);
}
