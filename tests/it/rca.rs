//! Root-cause analysis end to end: an hour of remote-written history in which a
//! database slows down and the slowness travels up to the web tier; the topology
//! is discovered from remote-written service-graph series; an alert on the web
//! tier reaches a real Alertmanager carrying the RCA annotations (cause: the
//! database, with the propagation path); the incident and topology APIs answer.

use std::time::Duration;

use crate::common::*;

const STEP: i64 = 15_000;
const POINTS: i64 = 240;

const RULES: &str = r#"groups:
  - name: web
    interval: 1s
    rules:
      - alert: WebSlow
        expr: latency_seconds{service="web"} > 0.3
        labels:
          severity: page
        annotations:
          summary: "web p99 is {{ $value }}s"
"#;

/// Latency of `service`: 0.1 s with a little wobble, plus `by` from `fault_at`
/// points before the end.
fn latency(i: i64, k: i64, fault_at: i64, by: f64) -> f64 {
    let wobble = ((i * 37 + k * 11) % 17) as f64 / 17.0 - 0.5;
    0.1 + 0.004 * wobble + if i >= POINTS - fault_at { by } else { 0.0 }
}

/// Writes an hour of 15 s samples ending now: web → api → db, db slow for the
/// last 8 points, api for 7, web for 6.
fn write_history(cl: &Closedloop) {
    let end = now_ms() - 1_000;
    let t = |i: i64| end - (POINTS - 1 - i) * STEP;
    let mut labels: Vec<Vec<(&str, &str)>> = Vec::new();
    let mut samples: Vec<Vec<(i64, f64)>> = Vec::new();
    for (k, (svc, fault_at, by)) in [("web", 6, 0.5), ("api", 7, 0.4), ("db", 8, 0.3)]
        .into_iter()
        .enumerate()
    {
        labels.push(vec![
            ("__name__", "latency_seconds"),
            ("service", svc),
            ("job", svc),
        ]);
        samples.push(
            (0..POINTS)
                .map(|i| (t(i), latency(i, k as i64, fault_at, by)))
                .collect(),
        );
    }
    for (client, server) in [("web", "api"), ("api", "db")] {
        labels.push(vec![
            ("__name__", "traces_service_graph_request_total"),
            ("client", client),
            ("server", server),
            ("job", "tempo"),
        ]);
        samples.push((0..POINTS).map(|i| (t(i), (i * 100) as f64)).collect());
    }
    let series: Vec<TestSeries<'_>> = labels
        .iter()
        .zip(&samples)
        .map(|(l, s)| (l.as_slice(), s.as_slice()))
        .collect();
    let (status, text) = post_write(cl, v1_body(&series), "application/x-protobuf");
    assert_eq!(status, 204, "{text}");
}

fn get(url: &str) -> (u16, String) {
    let resp = http().get(url).send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

#[test]
fn alerts_carry_the_ranked_cause_to_alertmanager() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let config = format!(
        "rule_files: ['rules.yml']\nalerting:\n  resend_delay: 1s\n  alertmanagers:\n    - url: {}\nrca:\n  discovery: {{refresh_interval: 1s}}\n  analysis: {{interval: 1s}}\n",
        am.url("")
    );
    let cl = Closedloop::start_in(dir, &config);
    write_history(&cl);

    // The alert reaches Alertmanager; once the topology is discovered (every
    // second), the resent alert names the database as the cause.
    let mut found = serde_json::Value::Null;
    wait_until(
        "the alert with its RCA annotations in Alertmanager",
        Duration::from_secs(60),
        || {
            found = am
                .alerts()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "WebSlow")
                .unwrap_or_default();
            found["annotations"]["rca_cause"] == "service:db"
        },
    );
    let ann = &found["annotations"];
    assert_eq!(
        ann["rca_path"], "service:db -> service:api -> service:web",
        "{found}"
    );
    let confidence: f64 = ann["rca_confidence"].as_str().unwrap().parse().unwrap();
    assert!(confidence > 0.5 && confidence <= 1.0, "{found}");
    assert!(
        ann["rca_summary"]
            .as_str()
            .unwrap()
            .starts_with("service:db: rise of latency_seconds"),
        "{found}"
    );
    assert!(
        ann["summary"].as_str().unwrap().starts_with("web p99 is"),
        "rule annotations kept: {found}"
    );
    let incident: u64 = ann["rca_incident"].as_str().unwrap().parse().unwrap();

    // The incident API: the list, and the incident with its ranked causes.
    let list = api_get(&cl.url("/api/v1/incidents"));
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{list}");
    assert_eq!(incidents[0]["id"], incident);
    assert_eq!(incidents[0]["severity"], "page");
    assert_eq!(incidents[0]["members"][0]["component"], "service:web");
    assert!(incidents[0]["members"][0]["alerts"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("WebSlow")));
    let one = api_get(&cl.url(&format!("/api/v1/incidents/{incident}")));
    let causes = one["rca"]["causes"].as_array().unwrap();
    assert_eq!(causes[0]["component"], "service:db", "{one}");
    assert_eq!(causes[0]["rank"], 1);
    assert_eq!(
        causes[0]["path"],
        serde_json::json!(["service:db", "service:api", "service:web"])
    );
    let evidence = &causes[0]["evidence"][0];
    assert!(
        evidence["signal"]
            .as_str()
            .unwrap()
            .starts_with("latency_seconds{"),
        "{evidence}"
    );
    assert!(evidence["score"].as_f64().unwrap() > 4.0);
    assert!(evidence["onset"].as_f64().is_some());
    assert_eq!(one["rca"]["symptoms"], serde_json::json!(["service:web"]));
    let (status, body) = get(&cl.url("/api/v1/incidents/987654"));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"), "{body}");
    let (status, body) = get(&cl.url("/api/v1/incidents/abc"));
    assert_eq!(status, 400, "{body}");

    // The topology in its three renderings.
    let topo = api_get(&cl.url("/api/v1/topology"));
    let edges = topo["edges"].as_array().unwrap();
    assert!(
        edges.iter().any(|e| e["from"] == "service:web"
            && e["to"] == "service:api"
            && e["kind"] == "calls"
            && e["sources"] == serde_json::json!(["servicegraph"])),
        "{topo}"
    );
    let (status, dot) = get(&cl.url("/api/v1/topology?format=dot&view=units"));
    assert_eq!(status, 200);
    assert!(
        dot.contains("\"service:api\" -> \"service:db\" [label=\"calls\"];"),
        "{dot}"
    );
    let (status, mermaid) = get(&cl.url("/api/v1/topology?format=mermaid"));
    assert_eq!(status, 200);
    assert!(mermaid.starts_with("graph LR"), "{mermaid}");
    let (status, body) = get(&cl.url("/api/v1/topology?format=svg"));
    assert_eq!(status, 400, "{body}");

    // The loop's own figures.
    assert!(cl.metric("closed_loop_rca_analyses_total", "") >= 1.0);
    assert!(cl.metric("closed_loop_rca_topology_edges", "source=\"servicegraph\"") >= 2.0);
    assert!(cl.metric("closed_loop_rca_incidents", "") >= 1.0);
}

#[test]
fn disabled_rca_answers_503() {
    let cl = Closedloop::start("rca: {enabled: false}\n");
    for path in [
        "/api/v1/topology",
        "/api/v1/incidents",
        "/api/v1/incidents/1",
    ] {
        let (status, body) = get(&cl.url(path));
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("rca.enabled"), "{body}");
    }
}
