//! Drop-in compatibility, checked with real material: published rule collections
//! (kube-prometheus' mixins, awesome-prometheus-alerts) and widely used Grafana
//! dashboards (kube-prometheus', Node Exporter Full), vendored under
//! `testdata/compat/` (see `testdata/README.md`), loaded side by side into a real
//! Prometheus 2.42 and closedloop fed by the same remote write.
//!
//! The data: every series the material's selectors ask for, generated from the
//! selectors themselves (a value that satisfies each matcher; two of each
//! "identity" — instance, node, pod, namespace, container, uid — so joins match;
//! counters, histograms with `le` buckets, info metrics, gauges), an hour of history
//! plus the minutes the rules run, all written before the rules load so both sides
//! evaluate over the same samples. Sample times sit off the whole second and off
//! every group's evaluation phase, so no sample lies on a window boundary (where
//! 2.x's closed and 3.x's open windows differ).
//!
//! The rules: each group gets one probe recording rule (`compat_probe`) appended, so
//! the slots each side evaluated are visible as samples. closedloop evaluates a
//! group at Prometheus's timestamps (same hash of file and name), so the two sides'
//! evaluations line up one to one. Compared:
//! - `/api/v1/rules`: every group and rule (name, file, interval, normalised
//!   `query`, `duration`, labels, annotations), and — whenever both sides report the
//!   same last evaluation slot for a rule — its health, error and alerts (labels,
//!   state, `activeAt`, value, rendered annotations);
//! - recorded values, `ALERTS` and `ALERTS_FOR_STATE`: every sample at every
//!   evaluation slot both sides ran;
//! - every dashboard panel query as a range query over the data.
//!
//! Numbers are compared as values (within 1e-9 relative), also inside rendered
//! annotations: the last bit of a sum depends on the order of its terms, and
//! Prometheus 3 and closedloop sum with compensation where 2.42 does not.
//!
//! Known differences are listed with their reason in
//! `testdata/compat/known-differences.txt`; anything else fails the test, and so
//! does a listed difference that no longer occurs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr;
use serde_json::Value;

use crate::answers::*;
use crate::common::*;

const MATERIAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/compat");
/// Evaluation interval of groups without their own (both sides).
const INTERVAL_MS: i64 = 15_000;
/// Sample interval of the generated series.
const SCRAPE_MS: i64 = 15_000;
/// Data before the rules start.
const HISTORY_MS: i64 = 60 * 60_000;
/// How long the rules run.
const WINDOW_MS: i64 = 135_000;
/// Identity labels get this many values, consistent across metrics (joins match).
const FAN_OUT: usize = 2;
const IDENTITY: [&str; 6] = ["instance", "node", "pod", "namespace", "container", "uid"];
/// The probe rule appended to every group.
const PROBE: &str = "compat_probe";

// ------------------------------------------------------------------ material

struct GroupInfo {
    name: String,
    records: Vec<String>,
    /// The group's alerting rules: name and expression.
    alerts: Vec<(String, String)>,
    exprs: Vec<String>,
}

struct RuleFile {
    /// Path under `testdata/compat/rules/`.
    rel: String,
    yaml: serde_yaml::Value,
    groups: Vec<GroupInfo>,
}

struct Dashboard {
    rel: String,
    /// Template variables in order: name and `label_values(...)` query, if any.
    vars: Vec<(String, Option<String>)>,
    exprs: Vec<String>,
}

fn read_dir_sorted(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

fn load_rule_files() -> Vec<RuleFile> {
    let mut out = Vec::new();
    for coll in read_dir_sorted(&Path::new(MATERIAL).join("rules")) {
        for f in read_dir_sorted(&coll) {
            if f.extension().and_then(|e| e.to_str()) != Some("yml") {
                continue;
            }
            let rel = f
                .strip_prefix(Path::new(MATERIAL).join("rules"))
                .unwrap()
                .display()
                .to_string();
            let text = std::fs::read_to_string(&f).unwrap();
            let yaml: serde_yaml::Value =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let mut groups = Vec::new();
            for g in yaml["groups"].as_sequence().expect("groups") {
                let rules = g["rules"].as_sequence().expect("rules");
                groups.push(GroupInfo {
                    name: g["name"].as_str().unwrap().to_owned(),
                    alerts: rules
                        .iter()
                        .filter_map(|r| {
                            let expr = r["expr"].as_str().unwrap_or_default().to_owned();
                            r["alert"].as_str().map(|a| (a.to_owned(), expr))
                        })
                        .collect(),
                    records: rules
                        .iter()
                        .filter_map(|r| r["record"].as_str().map(str::to_owned))
                        .collect(),
                    exprs: rules
                        .iter()
                        .map(|r| match &r["expr"] {
                            serde_yaml::Value::String(s) => s.clone(),
                            other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
                        })
                        .collect(),
                });
            }
            out.push(RuleFile { rel, yaml, groups });
        }
    }
    out
}

fn load_dashboards() -> Vec<Dashboard> {
    let mut out = Vec::new();
    for coll in read_dir_sorted(&Path::new(MATERIAL).join("dashboards")) {
        for f in read_dir_sorted(&coll) {
            if f.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let rel = f
                .strip_prefix(Path::new(MATERIAL).join("dashboards"))
                .unwrap()
                .display()
                .to_string();
            let j: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{rel}: {e}"));
            let mut exprs = Vec::new();
            fn walk(p: &Value, out: &mut Vec<String>) {
                for t in p["targets"].as_array().into_iter().flatten() {
                    if let Some(e) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                        out.push(e.to_owned());
                    }
                }
                for sub in p["panels"].as_array().into_iter().flatten() {
                    walk(sub, out);
                }
            }
            for p in j["panels"].as_array().into_iter().flatten() {
                walk(p, &mut exprs);
            }
            for row in j["rows"].as_array().into_iter().flatten() {
                walk(row, &mut exprs);
            }
            let vars = j["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let q = match &v["query"] {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(o) => {
                            o.get("query").and_then(|q| q.as_str()).map(str::to_owned)
                        }
                        _ => None,
                    };
                    (
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        q.filter(|q| q.starts_with("label_values(")),
                    )
                })
                .collect();
            out.push(Dashboard { rel, vars, exprs });
        }
    }
    out
}

/// Grafana's built-in variables, as a dashboard at a 1h range would see them.
fn substitute_builtins(expr: &str) -> String {
    let mut s = expr.to_owned();
    for (k, v) in [
        ("__rate_interval", "1m"),
        ("__interval_ms", "60000"),
        ("__interval", "1m"),
        ("__range_s", "3600"),
        ("__range_ms", "3600000"),
        ("__range", "1h"),
    ] {
        s = s
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    s
}

/// Replaces `$var`, `${var}`, `${var:fmt}` and `[[var]]` by `value(var)`.
fn substitute_vars(expr: &str, value: impl Fn(&str) -> String) -> String {
    let re = regex::Regex::new(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]").unwrap();
    re.replace_all(expr, |c: &regex::Captures<'_>| {
        let name = c.get(1).or(c.get(2)).or(c.get(3)).unwrap().as_str();
        value(name)
    })
    .into_owned()
}

/// Placeholder values while the data does not exist yet: label values matchers
/// do not constrain (`VAR_`), and durations for duration-like names.
fn placeholder(name: &str) -> String {
    if name.contains("interval") || name.contains("range") || name == "resolution" {
        "5m".into()
    } else {
        format!("VAR_{name}")
    }
}

// ------------------------------------------------------------------ selectors

/// Every vector selector of `e`: metric name (if fixed) and matchers.
fn selectors(e: &Expr, out: &mut Vec<(String, Vec<Matcher>)>) {
    match e {
        Expr::VectorSelector(vs) => {
            let name = vs.name.clone().or_else(|| {
                vs.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                    .map(|m| m.value.clone())
            });
            if let Some(name) = name {
                let ms = vs
                    .matchers
                    .matchers
                    .iter()
                    .filter(|m| m.name != "__name__")
                    .cloned()
                    .collect();
                out.push((name, ms));
            }
        }
        Expr::MatrixSelector(m) => selectors(&Expr::VectorSelector(m.vs.clone()), out),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                selectors(a, out);
            }
        }
        _ => {}
    }
}

/// A string the regex `re` (Go RE2 syntax, anchored by the matcher) accepts.
fn sample_regex(re: &str) -> Option<String> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn walk(h: &Hir, out: &mut String) {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.push_str(&String::from_utf8_lossy(&l.0)),
            HirKind::Class(Class::Unicode(c)) => {
                let pick = c
                    .ranges()
                    .iter()
                    .find_map(|r| {
                        ['a', 'x', '0', '-']
                            .into_iter()
                            .find(|ch| (r.start()..=r.end()).contains(ch))
                            .or_else(|| (r.start() > ' ').then_some(r.start()))
                    })
                    .unwrap_or('a');
                out.push(pick);
            }
            HirKind::Class(Class::Bytes(c)) => {
                let b = c
                    .ranges()
                    .first()
                    .map(|r| r.start().max(b'a'))
                    .unwrap_or(b'a');
                out.push(b as char);
            }
            HirKind::Repetition(r) => {
                for _ in 0..r.min.min(3) {
                    walk(&r.sub, out);
                }
            }
            HirKind::Capture(c) => walk(&c.sub, out),
            HirKind::Concat(v) => v.iter().for_each(|h| walk(h, out)),
            HirKind::Alternation(v) => {
                if let Some(first) = v.first() {
                    walk(first, out);
                }
            }
        }
    }
    let hir = regex_syntax::Parser::new().parse(re).ok()?;
    let mut s = String::new();
    walk(&hir, &mut s);
    Some(s)
}

/// The identity labels' values for fan-out index `i`.
fn identity(label: &str, i: usize) -> String {
    let n = i + 1;
    match label {
        "instance" => format!("10.0.0.{n}:9100"),
        "node" => format!("node-{n}"),
        "pod" => format!("pod-{n}"),
        "namespace" => format!("ns-{n}"),
        "container" => format!("app-{n}"),
        _ => format!("{label}-{n}"),
    }
}

/// The `job` a metric family usually carries, for selectors that do not set one.
fn default_job(name: &str) -> &'static str {
    for (prefix, job) in [
        ("node_", "node-exporter"),
        ("kube_", "kube-state-metrics"),
        ("container_", "kubelet"),
        ("kubelet_", "kubelet"),
        ("apiserver_", "apiserver"),
        ("prometheus_", "prometheus-k8s"),
        ("alertmanager_", "alertmanager-main"),
        ("probe_", "blackbox"),
    ] {
        if name.starts_with(prefix) {
            return job;
        }
    }
    "app"
}

/// A value for `label` that `m` accepts, if one can be found.
fn satisfy(m: &Matcher) -> Option<String> {
    let mut candidates = vec![
        match &m.op {
            MatchOp::Equal => m.value.clone(),
            MatchOp::Re(_) => sample_regex(&m.value).unwrap_or_default(),
            _ => format!("x-{}", m.name),
        },
        format!("x-{}", m.name),
        "other".into(),
        String::new(),
    ];
    if let MatchOp::Re(_) = m.op {
        // A few common shapes of regexes the sampler may get wrong.
        candidates.extend(m.value.split('|').map(|s| s.replace(".*", "")));
    }
    candidates.into_iter().find(|c| m.is_match(c))
}

/// The generated series of one metric: label sets that together satisfy every
/// selector of it seen in the material.
#[derive(Default)]
struct Generator {
    variants: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Generator {
    fn add(&mut self, name: &str, matchers: &[Matcher]) {
        // Placeholder values (dashboard variables) do not constrain.
        let constraining: Vec<&Matcher> = matchers
            .iter()
            .filter(|m| !m.value.contains("VAR_"))
            .filter(|m| {
                // Identity labels are set by the fan-out; keep matchers it satisfies
                // out of the variant.
                !(IDENTITY.contains(&m.name.as_str())
                    && (0..FAN_OUT).all(|i| m.is_match(&identity(&m.name, i))))
            })
            .collect();
        let variants = self.variants.entry(name.to_owned()).or_default();
        let fits = |v: &BTreeMap<String, String>| {
            constraining
                .iter()
                .all(|m| m.is_match(v.get(&m.name).map(String::as_str).unwrap_or("")))
        };
        if variants.iter().any(fits) {
            return;
        }
        let mut v = BTreeMap::new();
        for m in &constraining {
            if let Some(value) = satisfy(m) {
                if !value.is_empty() {
                    v.insert(m.name.clone(), value);
                }
            }
        }
        variants.push(v);
    }

    /// Every series: variants × fan-out, with `le` buckets for `_bucket` metrics.
    fn series(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let mut out = Vec::new();
        for (name, variants) in &self.variants {
            let mut seen = BTreeSet::new();
            for v in variants {
                for i in 0..FAN_OUT {
                    let mut labels = v.clone();
                    for l in IDENTITY {
                        labels.entry(l.to_owned()).or_insert_with(|| identity(l, i));
                    }
                    labels
                        .entry("job".into())
                        .or_insert_with(|| default_job(name).into());
                    let les: Vec<Option<&str>> =
                        if name.ends_with("_bucket") && !labels.contains_key("le") {
                            ["0.1", "0.5", "1", "5", "+Inf"]
                                .into_iter()
                                .map(Some)
                                .collect()
                        } else {
                            vec![None]
                        };
                    for le in les {
                        let mut l = labels.clone();
                        if let Some(le) = le {
                            l.insert("le".into(), le.into());
                        }
                        if seen.insert(l.clone()) {
                            out.push((name.clone(), l));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The kind of values a metric gets, from its name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Info,
    Timestamp,
    Up,
    Gauge,
}

fn kind(name: &str) -> Kind {
    if name == "up" {
        Kind::Up
    } else if name.ends_with("_info") || name.ends_with("_labels") || name.contains("_info_") {
        Kind::Info
    } else if name.ends_with("_timestamp_seconds")
        || name.ends_with("_time_seconds")
        || name.ends_with("boot_time_seconds")
        || name.ends_with("_created")
    {
        Kind::Timestamp
    } else if name.ends_with("_total")
        || name.ends_with("_count")
        || name.ends_with("_sum")
        || name.ends_with("_bucket")
    {
        Kind::Counter
    } else {
        Kind::Gauge
    }
}

/// Samples of one series from `from` (inclusive) to `to` (exclusive), at `phase`
/// ms past each scrape slot. Deterministic per series (seeded by its labels).
fn samples(
    name: &str,
    labels: &BTreeMap<String, String>,
    from: i64,
    to: i64,
    phase: i64,
) -> Vec<(i64, f64)> {
    let seed = labels.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, (k, v)| {
        k.bytes()
            .chain(v.bytes())
            .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    }) ^ name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng = Rng(seed);
    let instance_two = labels
        .get("instance")
        .is_some_and(|i| i.ends_with(".2:9100"));
    // Buckets scale one underlying count, so the histogram stays cumulative.
    let bucket_share = match labels.get("le").map(String::as_str) {
        Some("0.1") => 0.3,
        Some("0.5") => 0.6,
        Some("1") => 0.8,
        Some("5") => 0.95,
        _ => 1.0,
    };
    let mut out = Vec::new();
    let mut counter = 1e6 + rng.unit() * 1e5;
    let base = rng.unit() * 100.0;
    let speed = 1.0 + rng.unit() * 20.0;
    let mut t = from - from.rem_euclid(SCRAPE_MS) + phase;
    if t < from {
        t += SCRAPE_MS;
    }
    let mut count_rng = Rng(seed ^ 0x5151);
    while t < to {
        let v = match kind(name) {
            Kind::Up => {
                if instance_two {
                    0.0
                } else {
                    1.0
                }
            }
            Kind::Info => 1.0,
            Kind::Timestamp => (t / 1000 - 3600) as f64,
            Kind::Counter => {
                // Buckets of one series share the increments (same seed without le).
                counter += count_rng.unit() * speed;
                (counter * bucket_share).floor()
            }
            Kind::Gauge => (base + (t as f64 / 600_000.0).sin() * 40.0 + rng.unit() * 10.0).abs(),
        };
        out.push((t, v));
        t += SCRAPE_MS;
    }
    out
}

// ------------------------------------------------------------------ known differences

fn known_differences() -> BTreeMap<String, String> {
    let path = format!("{MATERIAL}/known-differences.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeMap::new();
    let mut pending: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(item) = line.strip_prefix("item:") {
            assert!(pending.is_none(), "{path}:{}: item without a reason", n + 1);
            pending = Some(item.trim().to_owned());
        } else if let Some(r) = line.strip_prefix("reason:") {
            let item = pending
                .take()
                .unwrap_or_else(|| panic!("{path}:{}: reason without an item", n + 1));
            assert!(!r.trim().is_empty(), "{path}:{}: empty reason", n + 1);
            out.insert(item, r.trim().to_owned());
        } else {
            panic!("{path}:{}: expected `item:` or `reason:`", n + 1);
        }
    }
    assert!(pending.is_none(), "{path}: last item has no reason");
    out
}

/// Differences found, by item; the test passes when each is a listed one.
#[derive(Default)]
struct Findings {
    by_item: BTreeMap<String, Vec<String>>,
    compared: usize,
}

impl Findings {
    fn check(&mut self, item: String, diff: Option<String>) {
        self.compared += 1;
        if let Some(d) = diff {
            self.by_item.entry(item).or_default().push(d);
        }
    }
}

// ------------------------------------------------------------------ API helpers

fn post_form(url: &str, params: &[(&str, String)]) -> Value {
    http()
        .post(url)
        .form(params)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// The median time of three reloads that fail (the configuration names an
/// invalid rule file last), in milliseconds.
fn reload_latency(url: &str) -> i64 {
    let mut times: Vec<i64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let r = http()
                .post(url)
                .send()
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            assert!(
                !r.status().is_success(),
                "POST {url}: the invalid rule file was accepted"
            );
            start.elapsed().as_millis() as i64
        })
        .collect();
    times.sort();
    times[1]
}

fn reload(url: &str) {
    let r = http()
        .post(url)
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(r.status().is_success(), "POST {url}: {}", r.status());
}

fn millis(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
        .filter(|&t| t > 0)
}

/// The evaluation slot a time falls in, for a group with offset `off`.
fn slot(t: i64, off: i64, interval: i64) -> i64 {
    (t - off).div_euclid(interval) * interval + off
}

/// The raw samples of `selector` between `from` and `to` (inclusive), by series.
fn raw_samples(
    base: &str,
    selector: &str,
    from: i64,
    to: i64,
) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
    let range_s = (to - from) / 1000 + 1;
    let body = post_form(
        &format!("{base}/api/v1/query"),
        &[
            ("query", format!("{selector}[{range_s}s]")),
            ("time", format!("{}", to as f64 / 1000.0)),
        ],
    );
    assert_eq!(body["status"], "success", "{base} {selector}: {body}");
    let mut out = BTreeMap::new();
    for s in body["data"]["result"].as_array().into_iter().flatten() {
        let points = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let (t, v) = point(p);
                ((t * 1000.0).round() as i64, v)
            })
            .filter(|&(t, _)| t >= from)
            .collect();
        out.insert(metric(&s["metric"]), points);
    }
    out
}

// ------------------------------------------------------------------ the test

#[test]
fn published_rules_and_dashboards_agree_with_prometheus() {
    let started = Instant::now();
    let files = load_rule_files();
    let dashboards = load_dashboards();
    let n_rules: usize = files
        .iter()
        .flat_map(|f| &f.groups)
        .map(|g| g.exprs.len())
        .sum();
    let n_panels: usize = dashboards.iter().map(|d| d.exprs.len()).sum();
    assert!(
        n_rules >= 300 && n_panels >= 400,
        "{n_rules} rules, {n_panels} panel queries"
    );

    // The shared rule directory: both sides load the same paths, so their group
    // hashes (and evaluation phases) are the same. A directory whose phases put a
    // group that reads a recorded series less than 2s after the group writing it
    // would make the comparison depend on evaluation speed: try another.
    let (rules_dir, offsets) = (0..100)
        .find_map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let offsets = group_offsets(&files, dir.path());
            dependencies_are_apart(&files, &offsets).then_some((dir, offsets))
        })
        .expect("no rule directory gives well-separated group phases");

    // Generate the data from every selector of the material.
    let mut gen = Generator::default();
    let mut all_exprs: Vec<String> = files
        .iter()
        .flat_map(|f| &f.groups)
        .flat_map(|g| g.exprs.clone())
        .collect();
    for d in &dashboards {
        for e in &d.exprs {
            all_exprs.push(substitute_vars(&substitute_builtins(e), placeholder));
        }
        for (_, q) in &d.vars {
            if let Some(q) = q {
                let inner = q.trim_start_matches("label_values(").trim_end_matches(')');
                if let Some((sel, _)) = inner.rsplit_once(',') {
                    all_exprs.push(substitute_vars(sel, placeholder));
                }
            }
        }
    }
    for e in &all_exprs {
        if let Ok(expr) = closedloop::promql::parse(e) {
            let mut sels = Vec::new();
            selectors(&expr, &mut sels);
            for (name, ms) in sels {
                gen.add(&name, &ms);
            }
        }
    }
    // Recorded series come from the rules, not the generator.
    let recorded: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| &f.groups)
        .flat_map(|g| g.records.iter().map(String::as_str))
        .collect();
    gen.variants
        .retain(|name, _| !recorded.contains(name.as_str()));
    let series = gen.series();
    // Sample phases: off the whole second and off every group's phase.
    let forbidden: BTreeSet<i64> = offsets
        .values()
        .map(|o| o.rem_euclid(1000))
        .chain([0])
        .collect();
    let phases: Vec<i64> = (1..1000).filter(|p| !forbidden.contains(p)).collect();

    let cl = Closedloop::start(
        "global: {evaluation_interval: 15s, rule_query_offset: 0s}\nrules: {state_file: '', watch_interval: 0s}\n",
    );
    let prom = Prometheus::start(
        |_| "global: {evaluation_interval: 15s}\n".to_owned(),
        &[
            "--web.enable-remote-write-receiver",
            "--web.enable-lifecycle",
        ],
    );
    let now = now_ms();
    let data_from = (now - HISTORY_MS) / 60_000 * 60_000;
    let data_to = now + WINDOW_MS + 60_000;
    let data: Vec<OwnedSeries> = series
        .iter()
        .enumerate()
        .map(|(i, (name, labels))| {
            let mut l: Vec<(String, String)> = labels.clone().into_iter().collect();
            l.push(("__name__".into(), name.clone()));
            l.sort();
            let phase = phases[(i * 7919) % phases.len()] + (i as i64 % 15) * 1000;
            (
                l,
                samples(name, labels, data_from, data_to, phase % SCRAPE_MS),
            )
        })
        .collect();
    let n_samples: usize = data.iter().map(|(_, s)| s.len()).sum();
    for body in remote_write_bodies(&data, 10 * 60_000) {
        write_to(&prom.url("/api/v1/write"), body.clone());
        write_to(&cl.url("/api/v1/write"), body);
    }
    let stored = cl.metric("closedloop_remote_write_samples_written_total", "");
    assert_eq!(stored as usize, n_samples, "{}", cl.log());

    // The rule files, each group with its probe, loaded on both sides at a moment
    // between group phases, so both start every group at the same slot.
    let mut rule_paths = Vec::new();
    for f in &files {
        let path = rules_dir.path().join(f.rel.replace('/', "__"));
        let mut yaml = f.yaml.clone();
        for g in yaml["groups"].as_sequence_mut().unwrap() {
            let name = g["name"].as_str().unwrap().to_owned();
            // Every group runs at the test's interval, so each evaluates several
            // times within the window (one group of the material says 3m).
            if let Some(m) = g.as_mapping_mut() {
                m.remove("interval");
            }
            let probe: serde_yaml::Value = serde_yaml::from_str(&format!(
                "{{record: {PROBE}, expr: vector(1), labels: {{compat_group: {:?}}}}}",
                name
            ))
            .unwrap();
            g["rules"].as_sequence_mut().unwrap().push(probe);
        }
        std::fs::write(&path, serde_yaml::to_string(&yaml).unwrap()).unwrap();
        rule_paths.push(path.display().to_string());
    }
    let list = rule_paths
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let prom_config =
        |list: &str| format!("global: {{evaluation_interval: 15s}}\nrule_files: [{list}]\n");
    let cl_config = |list: &str| {
        format!("global: {{evaluation_interval: 15s, rule_query_offset: 0s}}\nrules: {{state_file: '', watch_interval: 0s}}\nrule_files: [{list}]\n")
    };
    let (prom_yml, cl_yml) = (
        prom.dir.path().join("prometheus.yml"),
        cl.dir.path().join("closedloop.yml"),
    );
    // How long each side takes to load the files, measured by reloads that read
    // them all and then fail on one more, invalid file (nothing starts): each side
    // is then asked to load the real set that much before the quiet moment, so
    // both start their groups at about the same instant.
    let bad = rules_dir.path().join("zz-invalid.yml");
    std::fs::write(
        &bad,
        "groups: [{name: x, rules: [{record: x, expr: 'sum('}]}]\n",
    )
    .unwrap();
    let with_bad = format!("{list}, '{}'", bad.display());
    std::fs::write(&prom_yml, prom_config(&with_bad)).unwrap();
    std::fs::write(&cl_yml, cl_config(&with_bad)).unwrap();
    let prom_latency = reload_latency(&prom.url("/-/reload"));
    let cl_latency = reload_latency(&cl.url("/-/reload"));
    std::fs::write(&prom_yml, prom_config(&list)).unwrap();
    std::fs::write(&cl_yml, cl_config(&list)).unwrap();
    let at = quiet_moment(&offsets, now_ms() + prom_latency.max(cl_latency) + 200);
    let reload_at = at - prom_latency.max(cl_latency);
    std::thread::scope(|s| {
        for (url, latency) in [
            (prom.url("/-/reload"), prom_latency),
            (cl.url("/-/reload"), cl_latency),
        ] {
            s.spawn(move || {
                let wait = at - latency - now_ms();
                if wait > 0 {
                    std::thread::sleep(Duration::from_millis(wait as u64));
                }
                reload(&url);
            });
        }
    });
    eprintln!("real_material: rule loading takes {prom_latency} ms in Prometheus, {cl_latency} ms in closedloop");
    eprintln!(
        "real_material: {} rule files ({n_rules} rules), {} dashboards ({n_panels} panel queries), {} series, {n_samples} samples; rules loaded {:.1}s after start",
        files.len(),
        dashboards.len(),
        data.len(),
        started.elapsed().as_secs_f64()
    );

    let mut findings = Findings::default();
    // While the rules run: static rule attributes, then health and alerts at
    // matching slots.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS as u64));
    let relaxed = Relaxed::new(&prom, &cl, &files, reload_at);
    compare_rule_definitions(&prom, &cl, &mut findings);
    let run_until = reload_at + WINDOW_MS;
    compare_rule_states(&prom, &cl, &offsets, &relaxed, run_until, &mut findings);
    let wait = run_until - now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
    // After: every sample the rules wrote, at the slots both sides evaluated.
    let until = now_ms() - 2_000;
    compare_recorded(
        &prom,
        &cl,
        &files,
        &relaxed,
        reload_at,
        until,
        &mut findings,
    );
    // Dashboards: range queries over the history and the rule window.
    compare_dashboards(
        &prom,
        &cl,
        &dashboards,
        data_from + 10 * 60_000,
        until,
        &mut findings,
    );

    let known = known_differences();
    let mut failures = Vec::new();
    let mut listed = 0;
    for (item, diffs) in &findings.by_item {
        if known.contains_key(item) {
            listed += 1;
        } else {
            failures.push(format!("{item}\n  {}", diffs.join("\n  ")));
        }
    }
    for item in known.keys() {
        if !findings.by_item.contains_key(item) {
            failures.push(format!(
                "{item}\n  listed in testdata/compat/known-differences.txt but agrees now (or was not compared): remove it"
            ));
        }
    }
    eprintln!(
        "real_material: {} comparisons, {} items differ ({listed} known), {} failures, {:.0}s",
        findings.compared,
        findings.by_item.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} differences from Prometheus 2.42 not in testdata/compat/known-differences.txt:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// What the comparison cannot hold to the evaluation: groups that started a slot
/// apart on the two sides (they loaded the rules on either side of the group's
/// slot; the harness reloads at a quiet moment so this stays rare), and alerting
/// rules that read `ALERTS` (their input is every group's latest evaluation, so
/// it depends on which groups finished first within the interval).
struct Relaxed {
    /// Group names.
    straddled: BTreeSet<String>,
    /// Alert names.
    timing_dependent: BTreeSet<String>,
    /// Alert names of the straddled groups.
    straddled_alerts: BTreeSet<String>,
}

impl Relaxed {
    fn new(prom: &Prometheus, cl: &Closedloop, files: &[RuleFile], from: i64) -> Relaxed {
        let to = now_ms();
        let pp = raw_samples(&prom.url(""), PROBE, from, to);
        let cp = raw_samples(&cl.url(""), PROBE, from, to);
        let mut straddled = BTreeSet::new();
        for (labels, ps) in &pp {
            let first_c = cp.get(labels).and_then(|c| c.first()).map(|p| p.0);
            if ps.first().map(|p| p.0) != first_c {
                straddled.insert(labels.get("compat_group").cloned().unwrap_or_default());
            }
        }
        assert!(
            straddled.len() * 10 <= pp.len().max(1),
            "{} of {} groups started at different slots on the two sides: {straddled:?}",
            straddled.len(),
            pp.len()
        );
        let groups = || files.iter().flat_map(|f| &f.groups);
        let timing_dependent = groups()
            .flat_map(|g| &g.alerts)
            .filter(|(_, e)| e.contains("ALERTS"))
            .map(|(a, _)| a.clone())
            .collect();
        let straddled_alerts = groups()
            .filter(|g| straddled.contains(&g.name))
            .flat_map(|g| g.alerts.iter().map(|(a, _)| a.clone()))
            .collect();
        eprintln!(
            "real_material: {} groups started a slot apart {straddled:?}; alerts reading ALERTS, compared by definition only: {timing_dependent:?}",
            straddled.len()
        );
        Relaxed {
            straddled,
            timing_dependent,
            straddled_alerts,
        }
    }

    fn skips_alert(&self, name: &str) -> bool {
        self.timing_dependent.contains(name) || self.straddled_alerts.contains(name)
    }
}

/// Each group's evaluation offset (Prometheus's), by `file;name`, for rule files
/// written into `dir`.
fn group_offsets(files: &[RuleFile], dir: &Path) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for f in files {
        let path = dir.join(f.rel.replace('/', "__")).display().to_string();
        for g in &f.groups {
            out.insert(
                format!("{path};{}", g.name),
                closedloop::rules::manager::eval_offset_ms(&path, &g.name, INTERVAL_MS),
            );
        }
    }
    out
}

/// Whether every group that reads a series another group records evaluates at
/// least 2s after it (within the interval), so both sides read the fresh value
/// however long the writer takes.
fn dependencies_are_apart(files: &[RuleFile], offsets: &BTreeMap<String, i64>) -> bool {
    let mut by_group: Vec<(&GroupInfo, i64)> = Vec::new();
    for f in files {
        for g in &f.groups {
            let off = offsets
                .iter()
                .find(|(k, _)| k.ends_with(&format!("{};{}", f.rel.replace('/', "__"), g.name)))
                .map(|(_, v)| *v)
                .unwrap();
            by_group.push((g, off));
        }
    }
    for (writer, w_off) in &by_group {
        for (reader, r_off) in &by_group {
            if std::ptr::eq(*writer, *reader) {
                continue;
            }
            let reads = reader
                .exprs
                .iter()
                .any(|e| writer.records.iter().any(|r| e.contains(r.as_str())));
            let gap = (r_off - w_off).rem_euclid(INTERVAL_MS);
            if reads && gap < 2_000 {
                return false;
            }
        }
    }
    true
}

/// The first time from `not_before` in the middle of the longest stretch without a
/// group evaluation.
fn quiet_moment(offsets: &BTreeMap<String, i64>, not_before: i64) -> i64 {
    let mut phases: Vec<i64> = offsets.values().map(|o| o % INTERVAL_MS).collect();
    phases.sort();
    let mut best = (0, 0);
    for (i, &p) in phases.iter().enumerate() {
        let next = phases
            .get(i + 1)
            .copied()
            .unwrap_or(phases[0] + INTERVAL_MS);
        if next - p > best.1 {
            best = (p, next - p);
        }
    }
    let target = (best.0 + best.1 / 2) % INTERVAL_MS;
    let mut at = not_before - not_before.rem_euclid(INTERVAL_MS) + target;
    if at < not_before {
        at += INTERVAL_MS;
    }
    at
}

/// The groups of `/api/v1/rules`, keyed by file name (without directory) and name.
fn rule_groups(base: &str) -> BTreeMap<(String, String), Value> {
    let data = api_get(&format!("{base}/api/v1/rules"));
    data["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let file = Path::new(g["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            ((file, g["name"].as_str().unwrap().to_owned()), g.clone())
        })
        .collect()
}

fn rule_item(file: &str, group: &str, rule: &Value, index: usize) -> String {
    format!(
        "rule {}/{group}/{}#{index}",
        file.replace("__", "/"),
        rule["name"].as_str().unwrap_or_default()
    )
}

/// What a rule is, as each side lists it: everything but its runtime state.
fn compare_rule_definitions(prom: &Prometheus, cl: &Closedloop, findings: &mut Findings) {
    let p = rule_groups(&prom.url(""));
    let c = rule_groups(&cl.url(""));
    for (key, pg) in &p {
        let Some(cg) = c.get(key) else {
            findings.check(
                format!("group {}/{}", key.0, key.1),
                Some("missing in closedloop".into()),
            );
            continue;
        };
        for field in ["interval", "limit"] {
            findings.check(
                format!("group {}/{}", key.0.replace("__", "/"), key.1),
                (pg[field] != cg[field])
                    .then(|| format!("{field}: prom {}, ours {}", pg[field], cg[field])),
            );
        }
        let (pr, cr) = (
            pg["rules"].as_array().unwrap(),
            cg["rules"].as_array().unwrap(),
        );
        findings.check(
            format!("group {}/{}", key.0.replace("__", "/"), key.1),
            (pr.len() != cr.len()).then(|| format!("{} rules vs {}", pr.len(), cr.len())),
        );
        for (i, (a, b)) in pr.iter().zip(cr).enumerate() {
            let item = rule_item(&key.0, &key.1, a, i);
            let mut diffs = Vec::new();
            for field in ["name", "type", "query", "duration", "labels", "annotations"] {
                let (x, y) = (&a[field], &b[field]);
                // Prometheus leaves out empty label maps of recording rules.
                let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
                if x != y && !(empty(x) && empty(y)) {
                    diffs.push(format!("{field}: prom {x}, ours {y}"));
                }
            }
            findings.check(item, (!diffs.is_empty()).then(|| diffs.join("; ")));
        }
    }
    for key in c.keys() {
        if !p.contains_key(key) {
            findings.check(
                format!("group {}/{}", key.0, key.1),
                Some("only in closedloop".into()),
            );
        }
    }
}

/// Health, errors and alerts of every rule, compared whenever both sides last
/// evaluated it in the same slot (snapshots repeat until each rule was seen so, or
/// `until`).
fn compare_rule_states(
    prom: &Prometheus,
    cl: &Closedloop,
    offsets: &BTreeMap<String, i64>,
    relaxed: &Relaxed,
    until: i64,
    findings: &mut Findings,
) {
    let offset_of = |file: &str, group: &str| {
        offsets
            .iter()
            .find(|(k, _)| k.ends_with(&format!("{file};{group}")))
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let p = rule_groups(&prom.url(""));
        let c = rule_groups(&cl.url(""));
        let mut left = 0;
        for (key, pg) in &p {
            let Some(cg) = c.get(key) else { continue };
            let interval = (pg["interval"].as_f64().unwrap_or(15.0) * 1000.0) as i64;
            let off = offset_of(&key.0, &key.1);
            for (i, (a, b)) in pg["rules"]
                .as_array()
                .unwrap()
                .iter()
                .zip(cg["rules"].as_array().unwrap())
                .enumerate()
            {
                let item = rule_item(&key.0, &key.1, a, i);
                if done.contains(&item) {
                    continue;
                }
                let sp = a["lastEvaluation"]
                    .as_str()
                    .and_then(millis)
                    .map(|t| slot(t, off, interval));
                let sc = b["lastEvaluation"]
                    .as_str()
                    .and_then(millis)
                    .map(|t| slot(t, off, interval));
                if sp.is_none() || sp != sc {
                    left += 1;
                    continue;
                }
                done.insert(item.clone());
                pending.remove(&item);
                let name = a["name"].as_str().unwrap_or_default();
                if relaxed.timing_dependent.contains(name) {
                    continue;
                }
                let for_state = !relaxed.straddled.contains(&key.1);
                findings.check(format!("{item} state"), rule_state_diff(a, b, for_state));
            }
        }
        if left == 0 || now_ms() > until {
            for item in p.iter().flat_map(|(key, pg)| {
                pg["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, a)| rule_item(&key.0, &key.1, a, i))
                    .collect::<Vec<_>>()
            }) {
                if !done.contains(&item) {
                    pending.insert(item, "never seen at the same slot on both sides".into());
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    for (item, why) in pending {
        findings.check(format!("{item} state"), Some(why));
    }
}

/// Differences in a rule's state at one slot. Without `for_state` (the group
/// started a slot apart on the two sides) alert states and `activeAt` are left
/// out: they count evaluations since the start.
fn rule_state_diff(a: &Value, b: &Value, for_state: bool) -> Option<String> {
    let mut diffs = Vec::new();
    if a["health"] != b["health"] {
        diffs.push(format!(
            "health: prom {} ({}), ours {} ({})",
            a["health"], a["lastError"], b["health"], b["lastError"]
        ));
    } else if a["lastError"] != b["lastError"] {
        diffs.push(format!(
            "lastError: prom {}, ours {}",
            a["lastError"], b["lastError"]
        ));
    }
    if a["type"] == "alerting" {
        if for_state && a["state"] != b["state"] {
            diffs.push(format!("state: prom {}, ours {}", a["state"], b["state"]));
        }
        let alerts = |r: &Value| -> BTreeMap<String, Value> {
            r["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| (x["labels"].to_string(), x.clone()))
                .collect()
        };
        let (pa, ca) = (alerts(a), alerts(b));
        let pk: BTreeSet<_> = pa.keys().collect();
        let ck: BTreeSet<_> = ca.keys().collect();
        for l in pk.difference(&ck).take(2) {
            diffs.push(format!("alert only in prom: {l}"));
        }
        for l in ck.difference(&pk).take(2) {
            diffs.push(format!("alert only in ours: {l}"));
        }
        let mut shown = 0;
        for (l, x) in &pa {
            let Some(y) = ca.get(l) else { continue };
            let mut d = Vec::new();
            if for_state && x["state"] != y["state"] {
                d.push(format!("state {} vs {}", x["state"], y["state"]));
            }
            let at = |v: &Value| v["activeAt"].as_str().and_then(millis);
            if for_state && at(x) != at(y) {
                d.push(format!("activeAt {} vs {}", x["activeAt"], y["activeAt"]));
            }
            let val = |v: &Value| v["value"].as_str().map(parse_float);
            // Numerically: sums may differ in the last bit with the order of
            // their terms, and the text shows every bit.
            if !matches!((val(x), val(y)), (Some(p), Some(q)) if same_value(p, q)) {
                d.push(format!("value {} vs {}", x["value"], y["value"]));
            }
            if !same_annotations(&x["annotations"], &y["annotations"]) {
                d.push(format!(
                    "annotations {} vs {}",
                    x["annotations"], y["annotations"]
                ));
            }
            if !d.is_empty() && shown < 2 {
                shown += 1;
                diffs.push(format!("alert {l}: {}", d.join(", ")));
            }
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("\n    "))
}

/// Rendered annotations agree when their text does, numbers compared as values: a
/// `{{ $value }}` prints every digit, and the last bit of a sum depends on the
/// order of its terms (Prometheus 3 and closedloop sum with compensation, 2.42
/// does not).
fn same_annotations(a: &Value, b: &Value) -> bool {
    let number = regex::Regex::new(r"[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?").unwrap();
    let split = |v: &Value| -> Vec<(String, Vec<f64>)> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, t)| {
                let t = t.as_str().unwrap_or_default();
                let nums = number
                    .find_iter(t)
                    .map(|m| m.as_str().parse().unwrap_or(f64::NAN))
                    .collect();
                (format!("{k}={}", number.replace_all(t, "#")), nums)
            })
            .collect()
    };
    let (x, y) = (split(a), split(b));
    x.len() == y.len()
        && x.iter().zip(&y).all(|((tx, nx), (ty, ny))| {
            tx == ty && nx.len() == ny.len() && nx.iter().zip(ny).all(|(p, q)| same_value(*p, *q))
        })
}

/// Every sample the rules wrote (recorded series, `ALERTS`, `ALERTS_FOR_STATE`) from
/// the first slot both sides evaluated, series by series.
fn compare_recorded(
    prom: &Prometheus,
    cl: &Closedloop,
    files: &[RuleFile],
    relaxed: &Relaxed,
    from: i64,
    to: i64,
    findings: &mut Findings,
) {
    // The probes give each side's evaluated slots per group.
    let pp = raw_samples(&prom.url(""), PROBE, from, to);
    let cp = raw_samples(&cl.url(""), PROBE, from, to);
    let mut first_common = BTreeMap::new();
    for (labels, ps) in &pp {
        let group = labels.get("compat_group").cloned().unwrap_or_default();
        let Some(cs) = cp.get(labels) else {
            findings.check(
                format!("probe {group}"),
                Some("no evaluations in closedloop".into()),
            );
            continue;
        };
        let (p0, c0) = (ps.first().map(|p| p.0), cs.first().map(|p| p.0));
        let first = p0.max(c0).unwrap_or(i64::MAX);
        // Both must have evaluated every slot since the common first one.
        let slots = |s: &[(i64, f64)]| {
            s.iter()
                .map(|p| p.0)
                .filter(|&t| t >= first)
                .collect::<Vec<_>>()
        };
        findings.check(
            format!("probe {group}"),
            (slots(ps) != slots(cs)).then(|| {
                format!(
                    "evaluation slots differ: prom {:?}, ours {:?}",
                    slots(ps),
                    slots(cs)
                )
            }),
        );
        first_common.insert(group, first);
    }
    let latest_first = first_common.values().copied().max().unwrap_or(from);
    let mut names: Vec<String> = files
        .iter()
        .flat_map(|f| &f.groups)
        .flat_map(|g| g.records.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.push("ALERTS".into());
    names.push("ALERTS_FOR_STATE".into());
    for name in names {
        let sel = format!("{{__name__=\"{name}\"}}");
        let skip = |l: &BTreeMap<String, String>| {
            l.get("alertname").is_some_and(|a| relaxed.skips_alert(a))
        };
        let mut p = raw_samples(&prom.url(""), &sel, latest_first, to);
        let mut c = raw_samples(&cl.url(""), &sel, latest_first, to);
        p.retain(|l, _| !skip(l));
        c.retain(|l, _| !skip(l));
        let mut diffs = Vec::new();
        let pk: BTreeSet<_> = p.keys().collect();
        let ck: BTreeSet<_> = c.keys().collect();
        for l in pk.difference(&ck).take(2) {
            diffs.push(format!("only in prom: {}", fmt_labels(l)));
        }
        for l in ck.difference(&pk).take(2) {
            diffs.push(format!("only in ours: {}", fmt_labels(l)));
        }
        let mut shown = 0;
        for (l, ps) in &p {
            let Some(cs) = c.get(l) else { continue };
            let bad = if ps.len() != cs.len() || ps.iter().zip(cs).any(|(a, b)| a.0 != b.0) {
                Some(format!(
                    "timestamps differ: prom {:?}, ours {:?}",
                    ps.iter().map(|p| p.0).collect::<Vec<_>>(),
                    cs.iter().map(|p| p.0).collect::<Vec<_>>()
                ))
            } else {
                ps.iter()
                    .zip(cs)
                    .find(|(a, b)| !same_value(a.1, b.1))
                    .map(|(a, b)| format!("at {}: prom {}, ours {}", a.0, a.1, b.1))
            };
            if let Some(b) = bad {
                if shown < 2 {
                    diffs.push(format!("{}: {b}", fmt_labels(l)));
                }
                shown += 1;
            }
        }
        let empty = p.is_empty() && c.is_empty();
        findings.check(
            format!("recorded {name}"),
            (!diffs.is_empty()).then(|| diffs.join("\n    ")),
        );
        if empty {
            findings.by_item.remove(&format!("recorded {name}"));
        }
    }
}

/// Every panel query as a range query on both sides, with the dashboard's
/// variables set as Grafana would: each `label_values` query asked of Prometheus,
/// its first value taken.
fn compare_dashboards(
    prom: &Prometheus,
    cl: &Closedloop,
    dashboards: &[Dashboard],
    from: i64,
    to: i64,
    findings: &mut Findings,
) {
    let mut empty = 0;
    let mut total = 0;
    for d in dashboards {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for (name, q) in &d.vars {
            let v = q
                .as_deref()
                .and_then(|q| {
                    label_values_first(
                        &prom.url(""),
                        &substitute_vars(q, |n| values.get(n).cloned().unwrap_or_default()),
                    )
                })
                .unwrap_or_default();
            values.insert(name.clone(), v);
        }
        for (i, e) in d.exprs.iter().enumerate() {
            let q = substitute_vars(&substitute_builtins(e), |n| {
                values.get(n).cloned().unwrap_or_else(|| placeholder(n))
            });
            let params = [
                ("query", q.clone()),
                ("start", (from / 1000).to_string()),
                ("end", (to / 1000).to_string()),
                ("step", "60".to_owned()),
            ];
            let theirs = query(&prom.url(""), "/api/v1/query_range", &params);
            let ours = query(&cl.url(""), "/api/v1/query_range", &params);
            total += 1;
            if matches!(&theirs, Answer::Series(_, s) if s.is_empty()) {
                empty += 1;
            }
            let mut item = format!("dashboard {}#{i}", d.rel);
            let _ = write!(item, ": {}", e.replace('\n', " "));
            findings.check(
                item,
                compare(&theirs, &ours, false).map(|d| format!("{q}\n{d}")),
            );
        }
    }
    // Agreeing on nothing proves nothing: most panels must show data.
    assert!(
        empty * 3 <= total,
        "{empty} of {total} panel queries returned no series from Prometheus; is the generated data complete?"
    );
}

/// The first value of a Grafana `label_values(selector, label)` or
/// `label_values(label)` query, as Prometheus answers it.
fn label_values_first(base: &str, q: &str) -> Option<String> {
    let inner = q.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = match inner.rsplit_once(',') {
        Some((s, l)) => (Some(s.trim()), l.trim()),
        None => (None, inner.trim()),
    };
    let mut url = format!("{base}/api/v1/label/{label}/values");
    if let Some(s) = selector {
        url.push_str("?match[]=");
        url.push_str(&form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>());
    }
    let data = http().get(&url).send().ok()?.json::<Value>().ok()?;
    data["data"]
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_owned)
}
