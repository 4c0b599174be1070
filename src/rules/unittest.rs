//! `closedloop test rules`: rule unit tests in `promtool test rules` format
//! (`rule_files`, `evaluation_interval`, `group_eval_order`, `fuzzy_compare`, and
//! test groups with `input_series`, `alert_rule_test`, `promql_expr_test`,
//! `external_labels`, `external_url`, `start_timestamp`).
//!
//! A test group runs as promtool runs it: a fresh store; at every evaluation step
//! from the start to the largest `eval_time` the input samples up to that step are
//! appended and every rule group is evaluated (in `group_eval_order`); alert tests
//! look at the firing alerts of the step at or before their `eval_time`; PromQL
//! tests query the store after the last step. An evaluation error fails the group.
//!
//! Not supported: native histograms (the store holds floats) — a test that needs
//! one fails with a message saying so.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::PromDuration;
use crate::promql::testscript::{parse_labels, parse_values};
use crate::promql::{Engine, EngineOptions, Value};
use crate::storage::{LabelSet, Store, StoreConfig, METRIC_NAME};

use super::file::{expand_patterns, load_files, LoadOptions};
use super::group::{AlertState, EvalContext, Group, LocalSource};

/// Options of `closedloop test rules`.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Only run test groups whose name matches one of these regexes.
    pub run: Vec<String>,
    /// Ignore unknown keys in the rule files.
    pub ignore_unknown_fields: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<PromDuration>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    fuzzy_compare: bool,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<PromDuration>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<PromqlTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    start_timestamp: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: serde_yaml::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    #[serde(default)]
    eval_time: PromDuration,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromqlTest {
    expr: String,
    #[serde(default)]
    eval_time: PromDuration,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: f64,
    #[serde(default)]
    histogram: String,
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// Runs every test file, writing promtool-style reports to `out`. Returns whether
/// all passed.
pub fn run_files(files: &[PathBuf], opts: &TestOptions, out: &mut dyn Write) -> bool {
    let mut ok = true;
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        match run_file(f, opts) {
            Ok(()) => {
                let _ = writeln!(out, "  SUCCESS\n");
            }
            Err(errs) => {
                ok = false;
                let _ = writeln!(out, "  FAILED:");
                for e in errs {
                    let _ = writeln!(out, "{e}");
                }
                let _ = writeln!(out);
            }
        }
    }
    ok
}

/// Runs one test file; the error lists every failure.
pub fn run_file(path: &Path, opts: &TestOptions) -> Result<(), Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("    {e}")])?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let tf: TestFile = serde_path_to_error::deserialize(de)
        .map_err(|e| vec![format!("    {}: {}", path.display(), e.inner())])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let patterns: Vec<String> = tf
        .rule_files
        .iter()
        .map(|p| {
            if Path::new(p).is_relative() {
                base.join(p).to_string_lossy().into_owned()
            } else {
                p.clone()
            }
        })
        .collect();
    let files = expand_patterns(&patterns).map_err(|e| vec![format!("    {e}")])?;
    let specs = load_files(
        &files,
        LoadOptions {
            ignore_unknown_fields: opts.ignore_unknown_fields,
            ..LoadOptions::default()
        },
    )
    .map_err(|e| vec![format!("    {e}")])?;
    let eval_interval = tf
        .evaluation_interval
        .map(|d| d.as_millis())
        .unwrap_or(60_000)
        .max(1);
    // group_eval_order: listed groups by rank, the rest share rank 0.
    let mut rank: HashMap<&str, usize> = HashMap::new();
    for (i, g) in tf.group_eval_order.iter().enumerate() {
        if rank.insert(g.as_str(), i).is_some() {
            return Err(vec![format!(
                "    group_eval_order: group {g:?} is listed twice"
            )]);
        }
    }
    for g in &tf.group_eval_order {
        if !specs.iter().any(|s| &s.name == g) {
            return Err(vec![format!(
                "    group_eval_order: group {g:?} is not in the rule files"
            )]);
        }
    }
    let mut specs = specs;
    specs.sort_by_key(|s| rank.get(s.name.as_str()).copied().unwrap_or(0));
    let filters: Vec<regex::Regex> = opts
        .run
        .iter()
        .map(|r| regex::Regex::new(r))
        .collect::<Result<_, _>>()
        .map_err(|e| vec![format!("    --run: {e}")])?;
    let mut errors = Vec::new();
    for (i, tg) in tf.tests.iter().enumerate() {
        if !filters.is_empty() && !filters.iter().any(|f| f.is_match(&tg.name)) {
            continue;
        }
        let specs: Vec<std::sync::Arc<_>> =
            specs.iter().cloned().map(std::sync::Arc::new).collect();
        if let Err(mut es) = run_group(tg, &specs, eval_interval, tf.fuzzy_compare) {
            let name = if tg.name.is_empty() {
                format!("#{}", i + 1)
            } else {
                tg.name.clone()
            };
            errors.push(format!("  in group {name}:"));
            errors.append(&mut es);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn fmt_dur(ms: i64) -> String {
    crate::duration::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

fn start_ms(v: &Option<serde_yaml::Value>) -> Result<i64, String> {
    match v {
        None => Ok(0),
        Some(serde_yaml::Value::Number(n)) => n
            .as_f64()
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| format!("bad start_timestamp {n}")),
        Some(serde_yaml::Value::String(s)) => {
            if let Ok(n) = s.parse::<f64>() {
                return Ok((n * 1000.0) as i64);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("bad start_timestamp {s:?}: {e}"))
        }
        Some(other) => Err(format!("bad start_timestamp {other:?}")),
    }
}

fn float_eq(a: f64, b: f64, fuzzy: bool) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    if fuzzy && a.is_finite() && b.is_finite() && a.signum() == b.signum() {
        let (x, y) = (a.to_bits() as i64, b.to_bits() as i64);
        return (x - y).abs() <= 1;
    }
    false
}

fn run_group(
    tg: &TestGroup,
    specs: &[std::sync::Arc<super::GroupSpec>],
    eval_interval: i64,
    fuzzy: bool,
) -> Result<(), Vec<String>> {
    let one = |s: String| vec![format!("    {s}")];
    let start = start_ms(&tg.start_timestamp).map_err(one)?;
    let interval = tg
        .interval
        .map(|d| d.as_millis())
        .unwrap_or(eval_interval)
        .max(1);
    let store = Store::new(StoreConfig {
        retention_ms: i64::MAX / 4,
        max_series: 10_000_000,
        shards: 4,
        ..StoreConfig::default()
    });
    let engine = Engine::new(EngineOptions {
        lookback_delta_ms: 5 * 60 * 1000,
        max_samples: 50_000_000,
        timeout: std::time::Duration::from_secs(120),
        default_subquery_step_ms: eval_interval,
        ..EngineOptions::default()
    });
    // Input series: labels and (timestamp, value) in order.
    // Labels, points, and how many points are already appended.
    type Input = (LabelSet, Vec<(i64, f64)>, usize);
    let mut inputs: Vec<Input> = Vec::new();
    let mut has_histograms = false;
    for s in &tg.input_series {
        let labels =
            parse_labels(&s.series).map_err(|e| one(format!("series {:?}: {e}", s.series)))?;
        let (vals, hist) = parse_values(&yaml_scalar(&s.values), true)
            .map_err(|e| one(format!("series {:?}: {e}", s.series)))?;
        has_histograms |= hist;
        let pts = vals
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (start + i as i64 * interval, v)))
            .collect();
        inputs.push((labels, pts, 0));
    }
    let max_eval = tg
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time.as_millis())
        .chain(tg.promql_expr_test.iter().map(|p| p.eval_time.as_millis()))
        .max()
        .unwrap_or(0);
    let mut groups: Vec<Group> = specs
        .iter()
        .map(|s| Group::new(s.clone(), eval_interval))
        .collect();
    let source = LocalSource {
        engine: engine.clone(),
        store: &store,
    };
    let ctx = EvalContext {
        source: &source,
        appender: &store,
        external_labels: &tg.external_labels,
        external_url: &tg.external_url,
    };
    let mut alert_tests: Vec<&AlertTest> = tg.alert_rule_test.iter().collect();
    alert_tests.sort_by_key(|a| a.eval_time.as_millis());
    for a in &alert_tests {
        if a.alertname.is_empty() {
            return Err(one("alertname is required in alert_rule_test".into()));
        }
    }
    let mut next_alert = 0;
    let mut errors = Vec::new();
    let mut ts = start;
    while ts <= start + max_eval {
        for (labels, pts, cur) in inputs.iter_mut() {
            while *cur < pts.len() && pts[*cur].0 <= ts {
                let _ = store.append(labels, pts[*cur].0, pts[*cur].1);
                *cur += 1;
            }
        }
        let mut eval_errs = Vec::new();
        for g in groups.iter_mut() {
            for (rule, e) in g.eval(ts, &ctx) {
                eval_errs.push(format!(
                    "    rule: {rule}, time: {}, err: {e}",
                    fmt_dur(ts - start)
                ));
            }
        }
        if !eval_errs.is_empty() {
            return Err(eval_errs);
        }
        while next_alert < alert_tests.len() {
            let at = alert_tests[next_alert];
            let t = at.eval_time.as_millis();
            if !(ts - start <= t && t < ts - start + eval_interval) {
                break;
            }
            next_alert += 1;
            if let Err(e) = check_alerts(at, &groups) {
                errors.push(e);
            }
        }
        ts = match ts.checked_add(eval_interval) {
            Some(t) => t,
            None => break,
        };
    }
    for pt in &tg.promql_expr_test {
        let t = start + pt.eval_time.as_millis();
        if let Err(e) = check_promql(pt, &engine, &store, t, fuzzy, has_histograms) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

type AlertView = (BTreeMap<String, String>, BTreeMap<String, String>);

fn show_alerts(v: &[AlertView]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|(l, a)| format!("{{Labels:{} Annotations:{}}}", show_map(l), show_map(a)))
        .collect();
    format!("[{}]", items.join(" "))
}

fn show_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", items.join(", "))
}

fn check_alerts(at: &AlertTest, groups: &[Group]) -> Result<(), String> {
    let mut got: Vec<AlertView> = Vec::new();
    for g in groups {
        for r in &g.rules {
            if r.spec.name() != at.alertname || !r.is_alert() {
                continue;
            }
            for a in r.active.values() {
                if a.state == AlertState::Firing {
                    got.push((
                        a.labels
                            .iter()
                            .map(|l| (l.name.to_string(), l.value.to_string()))
                            .collect(),
                        a.annotations.iter().cloned().collect(),
                    ));
                }
            }
        }
    }
    let mut want: Vec<AlertView> = at
        .exp_alerts
        .iter()
        .map(|e| {
            let mut l = e.exp_labels.clone();
            l.insert("alertname".into(), at.alertname.clone());
            (l, e.exp_annotations.clone())
        })
        .collect();
    got.sort();
    want.sort();
    if got == want {
        return Ok(());
    }
    Err(format!(
        "    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
        at.alertname,
        fmt_dur(at.eval_time.as_millis()),
        show_alerts(&want),
        show_alerts(&got)
    ))
}

fn check_promql(
    pt: &PromqlTest,
    engine: &Engine,
    store: &Store,
    t: i64,
    fuzzy: bool,
    has_histograms: bool,
) -> Result<(), String> {
    let head = format!(
        "    expr: {:?}, time: {}",
        pt.expr,
        fmt_dur(pt.eval_time.as_millis())
    );
    if pt.exp_samples.iter().any(|s| !s.histogram.is_empty()) {
        return Err(format!(
            "{head},\n        err: native histograms are not supported by closedloop's store"
        ));
    }
    let res = engine
        .instant_query(store, &pt.expr, t)
        .map_err(|e| format!("{head},\n        err: {e}"))?;
    let mut got: Vec<(LabelSet, f64)> = match res.value {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.v)).collect(),
        Value::Scalar(_, v) => vec![(LabelSet::default(), v)],
        other => {
            return Err(format!(
                "{head},\n        err: expression returned a {}, want a vector or scalar",
                other.result_type()
            ))
        }
    };
    let mut want: Vec<(LabelSet, f64)> = Vec::new();
    for s in &pt.exp_samples {
        let l = if s.labels.trim().is_empty() {
            LabelSet::default()
        } else {
            parse_labels(&s.labels).map_err(|e| format!("{head},\n        err: labels: {e}"))?
        };
        want.push((l, s.value));
    }
    let key = |l: &LabelSet| -> Vec<(String, String)> {
        l.iter()
            .map(|x| (x.name.to_string(), x.value.to_string()))
            .collect()
    };
    got.sort_by_key(|(l, _)| key(l));
    want.sort_by_key(|(l, _)| key(l));
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|((gl, gv), (wl, wv))| gl == wl && float_eq(*wv, *gv, fuzzy));
    if same {
        return Ok(());
    }
    let show = |v: &[(LabelSet, f64)]| -> String {
        let items: Vec<String> = v
            .iter()
            .map(|(l, val)| {
                let name = l.get(METRIC_NAME).unwrap_or("");
                let rest: Vec<String> = l
                    .iter()
                    .filter(|x| &*x.name != METRIC_NAME)
                    .map(|x| format!("{}={:?}", x.name, &*x.value))
                    .collect();
                format!("{{Labels:{name}{{{}}} Value:{}}}", rest.join(", "), val)
            })
            .collect();
        format!("[{}]", items.join(" "))
    };
    let note = if has_histograms {
        " (this group's input has native histograms, which closedloop's store does not hold)"
    } else {
        ""
    };
    Err(format!(
        "{head},\n        exp: {}\n        got: {}{note}",
        show(&want),
        show(&got)
    ))
}
