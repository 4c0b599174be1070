//! deploy/grafana/closedloop.json: importable (a Prometheus data-source variable that
//! every panel uses, unique ids, a valid grid), and every panel's PromQL parses with
//! closedloop's engine and names only metrics closedloop exports on /metrics (read
//! from a running closedloop) or writes into its store.

use std::collections::BTreeSet;

use promql_parser::parser::Expr;

use crate::common::{http, now_ms, post_write, v1_body, wait_until, Closedloop};

/// Series closedloop writes into its store (detector outputs, alert state).
const WRITTEN: &[&str] = &[
    "anomaly_score",
    "anomaly_upper",
    "anomaly_lower",
    "anomaly_forecast",
    "ALERTS",
    "ALERTS_FOR_STATE",
];

/// The Decide stage's families: on /metrics with `# HELP`/`# TYPE` from start,
/// before their first event (checked against the running service below).
const DECIDE_FAMILIES: &[&str] = &[
    "closed_loop_remediations_total",
    "closed_loop_decision_latency_seconds",
    "closed_loop_success_rate",
    "closed_loop_mttd_seconds",
    "closed_loop_mttr_seconds",
    "closed_loop_human_interventions_total",
    "closed_loop_actions_refused_total",
    "closed_loop_approvals_pending",
];

/// A detector that fires on any `up` sample above 0.5, an alert, and a group over its
/// limit (so the failure counter has a child).
/// Families that get their first series only when their event first happens (a
/// missed rule-group iteration cannot be caused reliably in a test): checked to be
/// registered under this name in the source instead.
const ON_FIRST_EVENT: &[(&str, &str)] =
    &[("closedloop_rule_group_iterations_missed_total", "src/rules")];

const RULES: &str = "groups:\n- name: g\n  interval: 1s\n  detectors:\n  - {name: d, selector: up, algorithm: threshold, upper: 0.5}\n  rules:\n  - record: r\n    expr: vector(1)\n  - alert: A\n    expr: vector(1)\n- name: over_limit\n  interval: 1s\n  limit: 1\n  rules:\n  - record: two\n    expr: vector(1) or label_replace(vector(1), \"a\", \"b\", \"\", \"\")\n";

fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/closedloop.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Metric names an expression selects (`foo`, `{__name__="foo"}`).
fn metric_names(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::VectorSelector(vs) => {
            if let Some(n) = &vs.name {
                out.insert(n.clone());
            }
            for m in &vs.matchers.matchers {
                if m.name == "__name__" {
                    out.insert(m.value.clone());
                }
            }
        }
        Expr::MatrixSelector(ms) => metric_names(&Expr::VectorSelector(ms.vs.clone()), out),
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                metric_names(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Every `.rs` file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Grafana's variables replaced by values a query can parse with.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$detector", "latency")
}

#[test]
fn dashboard_is_importable_with_a_datasource_variable() {
    let d = dashboard();
    assert_eq!(d["uid"], "closedloop");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data-source variable");
    assert_eq!(ds["query"], "prometheus");
    let name = ds["name"].as_str().unwrap();
    let uid = format!("${{{name}}}");
    let mut ids = BTreeSet::new();
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap() > 0,
            "panel {} off the grid",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], uid.as_str(), "panel {}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], uid.as_str(), "panel {}", p["title"]);
            assert!(
                t["refId"].is_string() && t["expr"].is_string(),
                "panel {}",
                p["title"]
            );
        }
    }
    // The panels the issue asks for.
    let titles: Vec<String> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for want in [
        "detections",
        "remediations by action and result",
        "success rate",
        "decision latency",
        "mttd / mttr",
        "refused actions by reason",
        "approvals pending",
        "samples written",
        "rule evaluation",
        "forecast band and score",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel for {want:?}"
        );
    }
}

#[test]
fn every_panel_query_parses_and_names_a_closedloop_metric() {
    // A rule file beside the config, so the rule metrics register.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let cl = Closedloop::start_in(dir, "rule_files: [rules.yml]\nrules: {state_file: ''}\n");
    // Labelled families show up once they have a child: one detection, one refused
    // sample (a second value at the same timestamp), one rule evaluation.
    let t = now_ms();
    let ct = "application/x-protobuf;proto=prometheus.WriteRequest";
    let labels: &[(&str, &str)] = &[("__name__", "up"), ("job", "j")];
    post_write(&cl, v1_body(&[(labels, &[(t, 1.0)])]), ct);
    post_write(&cl, v1_body(&[(labels, &[(t, 2.0)])]), ct);
    let mut text = String::new();
    wait_until(
        "every family on /metrics",
        std::time::Duration::from_secs(60),
        || {
            text = http()
                .get(cl.url("/metrics"))
                .send()
                .unwrap()
                .text()
                .unwrap();
            [
                "closed_loop_detections_total",
                "closedloop_remote_write_samples_rejected_total",
                "closedloop_rule_group_last_duration_seconds",
                "closedloop_rule_evaluation_failures_total",
            ]
            .iter()
            .all(|f| text.contains(&format!("# TYPE {f} ")))
        },
    );
    let mut known: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (name, kind) = (it.next()?, it.next()?);
            Some(match kind {
                // A histogram is queried through its series.
                "histogram" => vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ],
                _ => vec![name.to_string()],
            })
        })
        .flatten()
        .collect();
    for f in DECIDE_FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {f} ")) && text.contains(&format!("# HELP {f} ")),
            "{f} is not on /metrics"
        );
    }
    known.extend(WRITTEN.iter().map(|s| s.to_string()));
    for (family, dir) in ON_FIRST_EVENT {
        let literal = format!("\"{family}\"");
        let found = walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&literal)));
        assert!(found, "{family} is not registered anywhere under {dir}");
        known.insert(family.to_string());
    }
    assert!(
        known.contains("closedloop_rule_group_last_duration_seconds"),
        "rule metrics registered"
    );

    let d = dashboard();
    let mut checked = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let raw = t["expr"].as_str().unwrap();
            // The watched-series panel draws whatever selector the user types into the
            // `series` variable: a user's metric, checked only to parse.
            let user_series = raw.trim() == "$series";
            let expr = if user_series {
                d["templating"]["list"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "series")
                    .and_then(|v| v["query"].as_str())
                    .unwrap()
                    .to_string()
            } else {
                substitute(raw)
            };
            let parsed = closedloop::promql::parse(&expr)
                .unwrap_or_else(|e| panic!("panel {}: {expr:?} does not parse: {e}", p["title"]));
            let mut names = BTreeSet::new();
            metric_names(&parsed, &mut names);
            assert!(
                !names.is_empty(),
                "panel {}: {expr:?} names no metric",
                p["title"]
            );
            if user_series {
                continue;
            }
            for n in names {
                assert!(
                    known.contains(&n),
                    "panel {}: {n} is neither exported by closedloop nor written by it",
                    p["title"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} queries checked");
}
