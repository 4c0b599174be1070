//! The conformance runner: executes Prometheus `promqltest` scripts (`.test` files)
//! against the engine, loading data through the same [`Store`] the service uses.
//!
//! The script language is the one `promql/promqltest/test.go` reads, as described in
//! the corpus's INDEX.md: `load`/`load_with_nhcb`, `clear`, `eval instant|range` with
//! `expect` lines, and the series notation (`0+10x100`, `_`, `stale`, ...).
//! Every `eval` is one case. Evals that touch native histograms (a `{{...}}` literal
//! in the block, a native-only function, or a selector matching a series that has
//! histogram samples, NHCB series included) are skipped, never counted as passed.
//! Instant evals are re-checked in range mode (`t-1m..t+1m` step 1m) as upstream
//! does; the `@`-invariance re-check is not run.
//!
//! Invariants: a script error or an engine error fails one case, never the run; the
//! runner itself never panics on any script text.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use promql_parser::parser::{AtModifier, Expr, VectorSelector};
use regex::Regex;

use super::durations::parse_duration;
use super::kernels::almost_equal;
use super::{Engine, EngineOptions, QueryResult, Value};
use crate::storage::{LabelSet, Store, StoreConfig, METRIC_NAME, STALE_NAN_BITS};

/// Counts for one script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// The script's file name.
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// One line per failed case: line number, query and reason.
    pub failures: Vec<String>,
    /// One line per skipped case: line number, query and why it touches histograms.
    pub skips: Vec<String>,
}

/// Counts over all scripts run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub files: Vec<FileSummary>,
}

/// Runner settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print each failure under its file's line.
    pub verbose: bool,
    /// Also print each skipped case.
    pub show_skipped: bool,
}

/// Runs the scripts at `paths`, printing one line per file and a closing total line
/// `N passed, M failed, K skipped`.
pub fn run_files(paths: &[PathBuf], out: &mut dyn Write) -> io::Result<Summary> {
    run_files_with(paths, out, &RunOptions::default())
}

/// [`run_files`] with options (verbose failure details).
pub fn run_files_with(
    paths: &[PathBuf],
    out: &mut dyn Write,
    opts: &RunOptions,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let fs = run_script(&name, &text);
        writeln!(
            out,
            "{}: {} passed, {} failed, {} skipped",
            fs.name, fs.passed, fs.failed, fs.skipped
        )?;
        if opts.verbose {
            for f in &fs.failures {
                writeln!(out, "    {f}")?;
            }
        }
        if opts.show_skipped {
            for f in &fs.skips {
                writeln!(out, "    skipped {f}")?;
            }
        }
        summary.passed += fs.passed;
        summary.failed += fs.failed;
        summary.skipped += fs.skipped;
        summary.files.push(fs);
    }
    writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        summary.passed, summary.failed, summary.skipped
    )?;
    Ok(summary)
}

/// Runs one script's text.
pub fn run_script(name: &str, text: &str) -> FileSummary {
    let mut r = Runner::new(name);
    r.run(text);
    r.summary
}

/// Runs a script file.
pub fn run_file(path: &Path) -> io::Result<FileSummary> {
    let text = std::fs::read_to_string(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(run_script(&name, &text))
}

fn new_store() -> Store {
    Store::new(StoreConfig {
        retention_ms: i64::MAX / 4,
        max_series: 10_000_000,
        shards: 4,
        ..StoreConfig::default()
    })
}

fn test_engine() -> Engine {
    Engine::new(EngineOptions {
        lookback_delta_ms: 5 * 60 * 1000,
        max_samples: 10_000,
        timeout: std::time::Duration::from_secs(100),
        default_subquery_step_ms: 60 * 1000,
        ..EngineOptions::default()
    })
}

struct Runner {
    summary: FileSummary,
    store: Store,
    engine: Engine,
    /// Label sets of series that hold native-histogram samples (NHCB included).
    histogram_series: Vec<LabelSet>,
}

/// A series of a `load` block: labels, samples, and whether it had histograms.
type LoadedSeries = (LabelSet, Vec<(i64, f64)>, bool);

/// How an expected message is matched.
#[derive(Debug, Clone)]
enum MsgMatch {
    Any,
    Exact(String),
    Regex(String),
}

impl MsgMatch {
    fn matches(&self, s: &str) -> bool {
        match self {
            MsgMatch::Any => true,
            MsgMatch::Exact(m) => m == s,
            MsgMatch::Regex(r) => Regex::new(r).map(|re| re.is_match(s)).unwrap_or(false),
        }
    }
}

/// One expected series: labels and a value per slot (`None` is `_`).
#[derive(Debug, Clone)]
struct ExpectedSeries {
    labels: LabelSet,
    values: Vec<Option<f64>>,
}

#[derive(Debug, Default)]
struct EvalCmd {
    expr: String,
    /// Instant time, or range start.
    start: i64,
    end: i64,
    step: i64,
    range: bool,
    fail: Option<MsgMatch>,
    warns: Vec<MsgMatch>,
    infos: Vec<MsgMatch>,
    no_warn: bool,
    no_info: bool,
    ordered: bool,
    range_vector: Option<(i64, i64, i64)>,
    string: Option<String>,
    scalar: Option<f64>,
    series: Vec<ExpectedSeries>,
    has_histogram_literal: bool,
    error: Option<String>,
}

impl Runner {
    fn new(name: &str) -> Runner {
        Runner {
            summary: FileSummary {
                name: name.to_string(),
                ..Default::default()
            },
            store: new_store(),
            engine: test_engine(),
            histogram_series: Vec::new(),
        }
    }

    fn fail(&mut self, line: usize, expr: &str, why: String) {
        self.summary.failed += 1;
        self.summary
            .failures
            .push(format!("line {line}: {expr}: {why}"));
    }

    fn run(&mut self, text: &str) {
        let lines: Vec<String> = text
            .split('\n')
            .map(|l| {
                let t = l.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
                if t.starts_with('#') {
                    String::new()
                } else {
                    t.to_string()
                }
            })
            .collect();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].is_empty() {
                i += 1;
                continue;
            }
            let header = lines[i].clone();
            let header_line = i + 1;
            let cmd = header
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let mut body = Vec::new();
            i += 1;
            if cmd == "clear" {
                self.store = new_store();
                self.histogram_series.clear();
                continue;
            }
            while i < lines.len() && !lines[i].is_empty() {
                let l = lines[i].clone();
                i += 1;
                let ends = cmd.starts_with("eval")
                    && (l.starts_with("expected_fail_message")
                        || l.starts_with("expected_fail_regexp"));
                body.push((i, l));
                if ends {
                    break;
                }
            }
            if cmd.starts_with("load") {
                if let Err(e) = self.load(&header, &body, cmd == "load_with_nhcb") {
                    self.fail(header_line, &header, format!("load error: {e}"));
                }
            } else if cmd.starts_with("eval") {
                self.eval(header_line, &header, &body);
            } else {
                self.fail(header_line, &header, "unknown command".into());
            }
        }
    }

    fn load(&mut self, header: &str, body: &[(usize, String)], nhcb: bool) -> Result<(), String> {
        let gap = header
            .split_whitespace()
            .nth(1)
            .ok_or("load needs an interval")?;
        let gap = parse_duration(gap)?;
        // Series in this block, later lines with the same labels replacing earlier.
        let mut block: Vec<LoadedSeries> = Vec::new();
        let mut pending_st = false;
        for (_, line) in body {
            let (labels_text, rest) = split_series_line(line)?;
            if labels_text.ends_with("@st") || rest.starts_with("@st") {
                // Start-timestamp lines only matter for start-timestamp-aware rate.
                pending_st = true;
                continue;
            }
            pending_st = false;
            let labels = parse_labels(labels_text)?;
            let (values, hist) = parse_values(rest, true)?;
            let samples: Vec<(i64, f64)> = values
                .into_iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| (k as i64 * gap, v)))
                .collect();
            block.retain(|(l, _, _)| *l != labels);
            block.push((labels, samples, hist));
        }
        let _ = pending_st;
        for (labels, samples, hist) in &block {
            if *hist {
                self.histogram_series.push(labels.clone());
            }
            for &(t, v) in samples {
                // Later loads never go back in time in the corpus; a rejected sample is
                // reported by the evals that miss it.
                let _ = self.store.append(labels, t, v);
            }
            if nhcb {
                if let Some(name) = labels.get(METRIC_NAME) {
                    for suffix in ["_bucket", "_count", "_sum"] {
                        if let Some(base) = name.strip_suffix(suffix) {
                            if suffix == "_bucket" && labels.get("le").is_none() {
                                continue;
                            }
                            let b = super::eval::set_label(
                                &super::eval::set_label(labels, "le", None),
                                METRIC_NAME,
                                Some(base),
                            );
                            if !self.histogram_series.contains(&b) {
                                self.histogram_series.push(b);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn parse_eval(&self, line: usize, header: &str, body: &[(usize, String)]) -> EvalCmd {
        let _ = line;
        let mut cmd = EvalCmd::default();
        let toks: Vec<&str> = header.split_whitespace().collect();
        let kind = toks.first().copied().unwrap_or("");
        match kind {
            "eval_fail" => cmd.fail = Some(MsgMatch::Any),
            "eval_warn" => cmd.warns.push(MsgMatch::Any),
            "eval_info" => cmd.infos.push(MsgMatch::Any),
            "eval_ordered" => cmd.ordered = true,
            "eval" => {}
            other => {
                cmd.error = Some(format!("unknown eval variant {other}"));
                return cmd;
            }
        }
        let rest_after = |n: usize| -> String {
            // The text after the first n whitespace-separated tokens, spacing kept.
            let mut s = header.trim_start();
            for _ in 0..n {
                s = s.trim_start();
                let end = s.find(char::is_whitespace).unwrap_or(s.len());
                s = &s[end..];
            }
            s.trim().to_string()
        };
        let parsed = match toks.get(1).copied() {
            Some("instant") if toks.get(2) == Some(&"at") => {
                match toks.get(3).map(|t| parse_duration(t)) {
                    Some(Ok(t)) => {
                        cmd.start = t;
                        cmd.end = t;
                        cmd.expr = rest_after(4);
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    None => Err("missing time".to_string()),
                }
            }
            Some("range")
                if toks.get(2) == Some(&"from")
                    && toks.get(4) == Some(&"to")
                    && toks.get(6) == Some(&"step") =>
            {
                let s = toks.get(3).map(|t| parse_duration(t));
                let e = toks.get(5).map(|t| parse_duration(t));
                let st = toks.get(7).map(|t| parse_duration(t));
                match (s, e, st) {
                    (Some(Ok(s)), Some(Ok(e)), Some(Ok(st))) => {
                        cmd.start = s;
                        cmd.end = e;
                        cmd.step = st;
                        cmd.range = true;
                        cmd.expr = rest_after(8);
                        if e < s {
                            Err("end before start".into())
                        } else {
                            Ok(())
                        }
                    }
                    _ => Err("bad range times".to_string()),
                }
            }
            _ => Err(format!("invalid eval header {header:?}")),
        };
        if let Err(e) = parsed {
            cmd.error = Some(e);
            return cmd;
        }
        for (_, l) in body {
            if l.contains("{{") {
                cmd.has_histogram_literal = true;
            }
            if let Some(rest) = l.strip_prefix("expected_fail_message") {
                cmd.fail = Some(MsgMatch::Exact(rest.trim().to_string()));
                continue;
            }
            if let Some(rest) = l.strip_prefix("expected_fail_regexp") {
                cmd.fail = Some(MsgMatch::Regex(rest.trim().to_string()));
                continue;
            }
            if let Some(rest) = l.strip_prefix("expect ") {
                if let Err(e) = parse_expect(&mut cmd, rest.trim()) {
                    cmd.error = Some(e);
                }
                continue;
            }
            if let Some(v) = parse_scalar_line(l) {
                cmd.scalar = Some(v);
                break;
            }
            match split_series_line(l).and_then(|(lt, rest)| {
                let labels = parse_labels(lt)?;
                let (values, hist) = parse_values(rest, false)?;
                if hist {
                    cmd.has_histogram_literal = true;
                }
                Ok(ExpectedSeries { labels, values })
            }) {
                Ok(s) => cmd.series.push(s),
                Err(e) => {
                    if !cmd.has_histogram_literal {
                        cmd.error = Some(format!("bad expected series {l:?}: {e}"));
                    }
                }
            }
        }
        cmd
    }

    fn eval(&mut self, line: usize, header: &str, body: &[(usize, String)]) {
        let cmd = self.parse_eval(line, header, body);
        let expr_text = cmd.expr.clone();
        let parsed = super::parse_for_analysis(&cmd.expr).ok_or(());
        // The native-histogram rule comes first: such evals are skipped, whatever else.
        let reason = if cmd.has_histogram_literal {
            Some("histogram literal in the block".to_string())
        } else {
            match parsed.as_ref() {
                Ok(e) => self.touches_histograms(e),
                // Unparseable here (e.g. the histogram trim operators `</`, `>/`): the
                // native-only function rule can still be read off the text.
                Err(()) => NATIVE_ONLY_FUNCTIONS
                    .iter()
                    .find(|f| cmd.expr.contains(&format!("{f}(")))
                    .map(|f| format!("native-only function {f}")),
            }
        };
        if let Some(reason) = reason {
            self.summary.skipped += 1;
            self.summary
                .skips
                .push(format!("line {line}: {expr_text}: {reason}"));
            return;
        }
        if let Some(e) = &cmd.error {
            self.fail(line, &expr_text, format!("script error: {e}"));
            return;
        }
        let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.check(&cmd)));
        match guarded {
            Ok(Ok(())) => self.summary.passed += 1,
            Ok(Err(why)) => self.fail(line, &expr_text, why),
            Err(_) => self.fail(line, &expr_text, "engine panicked".into()),
        }
    }

    fn touches_histograms(&self, e: &Expr) -> Option<String> {
        let mut hit: Option<String> = None;
        walk(e, &mut |node| match node {
            Expr::Call(c) if NATIVE_ONLY_FUNCTIONS.contains(&c.func.name) => {
                hit = Some(format!("native-only function {}", c.func.name))
            }
            Expr::VectorSelector(vs) => {
                if let Some(h) = self.selects_histogram(vs) {
                    hit = Some(h)
                }
            }
            Expr::MatrixSelector(ms) => {
                if let Some(h) = self.selects_histogram(&ms.vs) {
                    hit = Some(h)
                }
            }
            _ => {}
        });
        hit
    }

    /// INDEX.md's NH-any rule: the selector names a metric (its name, or an
    /// `__name__="..."` matcher) that has histogram samples since the last `clear`.
    /// Regex and nameless selectors do not count: such evals run, and fail where
    /// their expected output holds histograms.
    fn selects_histogram(&self, vs: &VectorSelector) -> Option<String> {
        let mut names: Vec<&str> = Vec::new();
        if let Some(n) = &vs.name {
            names.push(n);
        }
        for m in &vs.matchers.matchers {
            if m.name == METRIC_NAME && matches!(m.op, promql_parser::label::MatchOp::Equal) {
                names.push(&m.value);
            }
        }
        names.into_iter().find_map(|n| {
            self.histogram_series
                .iter()
                .any(|ls| ls.get(METRIC_NAME) == Some(n))
                .then(|| format!("selects histogram metric {n}"))
        })
    }

    fn check(&self, cmd: &EvalCmd) -> Result<(), String> {
        let store: &Store = &self.store;
        let (eval_t, is_range) = match (cmd.range, cmd.range_vector) {
            (false, Some((_, end, _))) => (end, false),
            _ => (cmd.start, cmd.range),
        };
        let res = if is_range {
            self.engine
                .range_query(store, &cmd.expr, cmd.start, cmd.end, cmd.step)
        } else {
            self.engine.instant_query(store, &cmd.expr, eval_t)
        };
        let res = match (res, &cmd.fail) {
            (Err(e), Some(m)) => {
                let msg = e.to_string();
                return if m.matches(&msg) {
                    Ok(())
                } else {
                    Err(format!("error {msg:?} does not match the expected {m:?}"))
                };
            }
            (Err(e), None) => return Err(format!("unexpected error: {e}")),
            (Ok(_), Some(_)) => return Err("expected an error, the query succeeded".into()),
            (Ok(r), None) => r,
        };
        check_annotations(cmd, &res)?;
        if is_range {
            self.compare_range(cmd, &res.value, cmd.start, cmd.step)?;
        } else if let Some((s, _, st)) = cmd.range_vector {
            self.compare_range(cmd, &res.value, s, st)?;
        } else {
            compare_instant(cmd, &res.value)?;
            self.range_mode_check(cmd, &cmd.expr, cmd.start)?;
        }
        if !is_range {
            // It walks, rewrites and prints the whole tree: give it room.
            let depth = super::QueryLimits::default().max_depth;
            super::limits::with_tree_stack(depth, || self.at_invariance_check(cmd, eval_t))?;
        }
        Ok(())
    }

    /// Upstream's `@`-invariance check: `@ <eval time>` is added to every selector
    /// and outermost subquery lacking one, and the query must give the same result
    /// at other evaluation times.
    fn at_invariance_check(&self, cmd: &EvalCmd, t: i64) -> Result<(), String> {
        let Ok(mut expr) = super::parse(&cmd.expr) else {
            return Ok(());
        };
        let mut unsafe_fn = false;
        walk(&expr, &mut |n| {
            if let Expr::Call(c) = n {
                unsafe_fn |= AT_UNSAFE_FUNCTIONS.contains(&c.func.name);
            }
        });
        if unsafe_fn {
            return Ok(());
        }
        let Some(at) = at_from_ms(t) else {
            return Ok(());
        };
        set_at(&mut expr, &at);
        let text = expr.to_string();
        let times: Vec<i64> = if t == 0 {
            vec![-1000, 0, 1000]
        } else {
            vec![-10 * t, 0, t / 5, t, 10 * t]
        };
        for et in times {
            let res = self
                .engine
                .instant_query_expr(&self.store, &expr, &text, et);
            let res = match (res, &cmd.fail) {
                (Err(e), Some(m)) => {
                    let msg = e.to_string();
                    if m.matches(&msg) {
                        continue;
                    }
                    return Err(format!(
                        "@ check at {et}ms: error {msg:?} does not match {m:?}"
                    ));
                }
                (Err(e), None) => {
                    return Err(format!("@ check {text} at {et}ms: unexpected error: {e}"))
                }
                (Ok(_), Some(_)) => {
                    return Err(format!("@ check {text} at {et}ms: expected an error"))
                }
                (Ok(r), None) => r,
            };
            let ctx = |e: String| format!("@ check {text} at {et}ms: {e}");
            if cmd.range_vector.is_some() {
                let (s, _, st) = cmd.range_vector.unwrap_or_default();
                self.compare_range(cmd, &res.value, s, st).map_err(ctx)?;
            } else {
                compare_instant(cmd, &res.value).map_err(ctx)?;
            }
            check_annotations(cmd, &res).map_err(ctx)?;
            if cmd.range_vector.is_none() && super::parse(&text).is_ok() {
                self.range_mode_check(cmd, &text, et).map_err(ctx)?;
            }
        }
        Ok(())
    }

    /// Upstream re-runs every instant eval as a range query around its time and checks
    /// the middle point.
    fn range_mode_check(&self, cmd: &EvalCmd, expr: &str, t: i64) -> Result<(), String> {
        if cmd.string.is_some() || cmd.ordered {
            return Ok(());
        }
        for f in ["start()", "end()", "range()", "step()"] {
            if cmd.expr.contains(f) {
                return Ok(());
            }
        }
        let res = self
            .engine
            .range_query(&self.store, expr, t - 60_000, t + 60_000, 60_000)
            .map_err(|e| format!("range mode: unexpected error: {e}"))?;
        let Value::Matrix(m) = res.value else {
            return Err("range mode: result is not a matrix".into());
        };
        let vec: Vec<super::Sample> = m
            .iter()
            .filter_map(|s| {
                s.points
                    .iter()
                    .find(|p| p.0 == t)
                    .map(|&(t, v)| super::Sample {
                        labels: s.labels.clone(),
                        t,
                        v,
                    })
            })
            .collect();
        let value = if cmd.scalar.is_some() {
            match vec.first() {
                Some(s) => Value::Scalar(t, s.v),
                None => Value::Vector(vec![]),
            }
        } else {
            Value::Vector(vec)
        };
        compare_instant(cmd, &value).map_err(|e| format!("range mode: {e}"))
    }

    fn compare_range(&self, cmd: &EvalCmd, v: &Value, start: i64, step: i64) -> Result<(), String> {
        let m = match v {
            Value::Matrix(m) => m,
            other => return Err(format!("expected a matrix, got {}", other.result_type())),
        };
        for w in m.windows(2) {
            if w[0].labels >= w[1].labels {
                return Err("matrix result is not sorted by labels".into());
            }
        }
        let mut used = vec![false; m.len()];
        for exp in &cmd.series {
            let want: Vec<(i64, f64)> = exp
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (start + i as i64 * step, v)))
                .collect();
            match m.iter().position(|s| s.labels == exp.labels) {
                Some(k) => {
                    used[k] = true;
                    let got = &m[k].points;
                    if got.len() != want.len()
                        || got
                            .iter()
                            .zip(&want)
                            .any(|(g, w)| g.0 != w.0 || !float_eq(w.1, g.1))
                    {
                        return Err(format!(
                            "series {} expected {:?}, got {:?}",
                            exp.labels, want, got
                        ));
                    }
                }
                None if want.is_empty() => {}
                None => return Err(format!("missing series {}", exp.labels)),
            }
        }
        if let Some(k) = used.iter().position(|u| !u) {
            return Err(format!(
                "unexpected series {} {:?}",
                m[k].labels, m[k].points
            ));
        }
        Ok(())
    }
}

fn check_annotations(cmd: &EvalCmd, res: &QueryResult) -> Result<(), String> {
    for (kind, expected, none, got) in [
        ("warning", &cmd.warns, cmd.no_warn, &res.warnings),
        ("info", &cmd.infos, cmd.no_info, &res.infos),
    ] {
        if none && !got.is_empty() {
            return Err(format!("expected no {kind}, got {got:?}"));
        }
        if expected.is_empty() {
            continue;
        }
        for e in expected.iter() {
            if !got.iter().any(|g| e.matches(g)) {
                return Err(format!("expected {kind} {e:?}, got {got:?}"));
            }
        }
        for g in got.iter() {
            if !expected.iter().any(|e| e.matches(g)) {
                return Err(format!("unexpected {kind} {g:?}"));
            }
        }
    }
    Ok(())
}

fn compare_instant(cmd: &EvalCmd, v: &Value) -> Result<(), String> {
    if let Some(s) = &cmd.string {
        return match v {
            Value::String(_, got) if got == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    if let Some(want) = cmd.scalar {
        return match v {
            Value::Scalar(_, got) if float_eq(want, *got) => Ok(()),
            other => Err(format!("expected scalar {want}, got {other:?}")),
        };
    }
    let samples = match v {
        Value::Vector(s) => s,
        other => {
            return Err(format!(
                "expected a vector, got {}: {other:?}",
                other.result_type()
            ))
        }
    };
    if samples.len() != cmd.series.len() {
        return Err(format!(
            "expected {} series, got {}: {}",
            cmd.series.len(),
            samples.len(),
            samples
                .iter()
                .map(|s| format!("{} {}", s.labels, s.v))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    for (i, exp) in cmd.series.iter().enumerate() {
        let want = exp.values.first().copied().flatten();
        let found = if cmd.ordered {
            samples.get(i).filter(|s| s.labels == exp.labels)
        } else {
            samples.iter().find(|s| s.labels == exp.labels)
        };
        match (found, want) {
            (Some(s), Some(w)) if float_eq(w, s.v) => {}
            (Some(s), _) => {
                return Err(format!(
                    "series {} expected {:?}, got {}",
                    exp.labels, want, s.v
                ))
            }
            (None, _) => {
                return Err(format!(
                    "missing series {}{}",
                    exp.labels,
                    if cmd.ordered {
                        " (at its position)"
                    } else {
                        ""
                    }
                ))
            }
        }
    }
    Ok(())
}

/// Upstream's float comparison: relative tolerance 1e-6, NaN equals NaN, the stale
/// marker only equals itself.
fn float_eq(want: f64, got: f64) -> bool {
    let ws = want.to_bits() == STALE_NAN_BITS;
    let gs = got.to_bits() == STALE_NAN_BITS;
    if ws || gs {
        return ws && gs;
    }
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    almost_equal(want, got, 1e-6)
}

fn parse_expect(cmd: &mut EvalCmd, rest: &str) -> Result<(), String> {
    let (kind, tail) = match rest.split_once(char::is_whitespace) {
        Some((k, t)) => (k, t.trim()),
        None => (rest, ""),
    };
    let msg = if let Some(m) = tail.strip_prefix("msg:") {
        MsgMatch::Exact(m.trim().to_string())
    } else if let Some(r) = tail.strip_prefix("regex:") {
        MsgMatch::Regex(r.trim().to_string())
    } else {
        MsgMatch::Any
    };
    match kind {
        "fail" => cmd.fail = Some(msg),
        "warn" => cmd.warns.push(msg),
        "info" => cmd.infos.push(msg),
        "no_warn" => cmd.no_warn = true,
        "no_info" => cmd.no_info = true,
        "ordered" => cmd.ordered = true,
        "string" => cmd.string = Some(unquote(tail).ok_or_else(|| format!("bad string {tail:?}"))?),
        "range" => {
            // range vector from <start> to <end> step <step>
            let t: Vec<&str> = tail.split_whitespace().collect();
            if t.len() == 7 && t[0] == "vector" && t[1] == "from" && t[3] == "to" && t[5] == "step"
            {
                cmd.range_vector = Some((
                    parse_duration(t[2])?,
                    parse_duration(t[4])?,
                    parse_duration(t[6])?,
                ));
            } else {
                return Err(format!("bad expect range line {rest:?}"));
            }
        }
        other => return Err(format!("unknown expectation {other:?}")),
    }
    Ok(())
}

/// A Go-quoted string literal (double quotes with escapes, or backquotes).
fn unquote(s: &str) -> Option<String> {
    if s.len() >= 2 && s.starts_with('`') && s.ends_with('`') {
        return Some(s[1..s.len() - 1].to_string());
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        return serde_json::from_str::<String>(s).ok();
    }
    None
}

/// A line that is just a number means an expected scalar.
fn parse_scalar_line(l: &str) -> Option<f64> {
    let t = l.trim();
    if t.contains(char::is_whitespace) {
        return None;
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    parse_float(t)
}

/// Go's `strconv.ParseFloat` for the forms the corpus uses.
fn parse_float(t: &str) -> Option<f64> {
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
    {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// Splits a series line into its label part and the rest.
fn split_series_line(line: &str) -> Result<(&str, &str), String> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] != b'{' && !b[i].is_ascii_whitespace() {
        i += 1;
    }
    if i < b.len() && b[i] == b'{' {
        let mut quote: Option<u8> = None;
        let mut escaped = false;
        while i < b.len() {
            let c = b[i];
            i += 1;
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if c == b'\\' {
                        escaped = true;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    b'"' | b'\'' | b'`' => quote = Some(c),
                    b'}' => break,
                    _ => {}
                },
            }
        }
    }
    Ok((line[..i].trim(), line[i..].trim()))
}

/// Parses series notation labels (`name{a="b"}`, `{__name__="x"}`, `{}`).
pub(crate) fn parse_labels(text: &str) -> Result<LabelSet, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("missing labels".into());
    }
    if t == "{}" {
        return Ok(LabelSet::default());
    }
    let expr = super::parse(t).map_err(|e| format!("bad labels {t:?}: {e}"))?;
    let vs = match expr {
        Expr::VectorSelector(vs) => vs,
        _ => return Err(format!("bad labels {t:?}")),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(n) = &vs.name {
        pairs.push((METRIC_NAME.to_string(), n.clone()));
    }
    for m in &vs.matchers.matchers {
        pairs.push((m.name.clone(), m.value.clone()));
    }
    Ok(LabelSet::from_pairs(pairs))
}

/// Splits values on whitespace, keeping `{{ ... }}` histogram literals whole.
fn value_tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if c == '}' && chars.get(i + 1) == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands a value sequence. Returns the slots and whether any was a histogram.
pub(crate) fn parse_values(s: &str, loading: bool) -> Result<(Vec<Option<f64>>, bool), String> {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let mut out = Vec::new();
    let mut hist = false;
    for tok in value_tokens(s) {
        if tok.starts_with("{{") {
            hist = true;
            // Histogram slots hold no float; `...}}xN` spans N+1 slots.
            let n = tok
                .rsplit_once("}}x")
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .map(|n| n + 1)
                .unwrap_or(1);
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if tok == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad value {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if tok == "stale" {
            out.push(Some(stale));
            continue;
        }
        // `a`, `axN`, `a+bxN`, `a-bxN`.
        let (base, times) = match tok.rfind('x') {
            Some(p)
                if p > 0
                    && tok[p + 1..].chars().all(|c| c.is_ascii_digit())
                    && p + 1 < tok.len() =>
            {
                let n: usize = tok[p + 1..]
                    .parse()
                    .map_err(|_| format!("bad value {tok:?}"))?;
                (&tok[..p], Some(n))
            }
            _ => (tok.as_str(), None),
        };
        let bb = base.as_bytes();
        let mut split = None;
        for k in 1..bb.len() {
            if (bb[k] == b'+' || bb[k] == b'-') && !matches!(bb[k - 1], b'e' | b'E') {
                split = Some(k);
                break;
            }
        }
        let (start, delta) = match split {
            Some(k) => {
                let a = parse_float(&base[..k]).ok_or_else(|| format!("bad value {tok:?}"))?;
                let d = parse_float(&base[k + 1..]).ok_or_else(|| format!("bad value {tok:?}"))?;
                (a, if bb[k] == b'-' { -d } else { d })
            }
            None => (
                parse_float(base).ok_or_else(|| format!("bad value {tok:?}"))?,
                0.0,
            ),
        };
        match times {
            None => {
                if split.is_some() {
                    return Err(format!("bad value {tok:?}"));
                }
                out.push(Some(start));
            }
            Some(n) => {
                let mut v = start;
                out.push(Some(v));
                for _ in 0..n {
                    // Upstream adds the delta repeatedly; keep its rounding.
                    v += delta;
                    out.push(Some(v));
                }
            }
        }
    }
    let _ = loading;
    Ok((out, hist))
}

/// Functions that only read native histograms (INDEX.md's NH-explicit rule).
const NATIVE_ONLY_FUNCTIONS: &[&str] = &[
    "histogram_count",
    "histogram_sum",
    "histogram_avg",
    "histogram_stddev",
    "histogram_stdvar",
];

/// Functions whose result depends on the evaluation time even with `@` arguments.
const AT_UNSAFE_FUNCTIONS: &[&str] = &[
    "time",
    "timestamp",
    "predict_linear",
    "start",
    "end",
    "range",
    "step",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

fn at_from_ms(t: i64) -> Option<AtModifier> {
    let d = std::time::Duration::from_millis(t.unsigned_abs());
    let st = if t >= 0 {
        std::time::SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        std::time::SystemTime::UNIX_EPOCH.checked_sub(d)
    };
    st.map(AtModifier::At)
}

/// Sets `@` on selectors and outermost subqueries that have none; nodes inside a
/// subquery are left alone.
fn set_at(e: &mut Expr, at: &AtModifier) {
    match e {
        Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = Some(at.clone()),
        Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ms.vs.at = Some(at.clone()),
        Expr::Subquery(sq) if sq.at.is_none() => sq.at = Some(at.clone()),
        Expr::Aggregate(a) => {
            if let Some(p) = &mut a.param {
                set_at(p, at);
            }
            set_at(&mut a.expr, at);
        }
        Expr::Unary(u) => set_at(&mut u.expr, at),
        Expr::Binary(b) => {
            set_at(&mut b.lhs, at);
            set_at(&mut b.rhs, at);
        }
        Expr::Paren(p) => set_at(&mut p.expr, at),
        Expr::Call(c) => {
            for a in &mut c.args.args {
                set_at(a, at);
            }
        }
        _ => {}
    }
}

/// Calls `f` on every node of the expression tree, parameters included.
fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, f);
            }
            walk(&a.expr, f);
        }
        Expr::Unary(u) => walk(&u.expr, f),
        Expr::Binary(b) => {
            walk(&b.lhs, f);
            walk(&b.rhs, f);
        }
        Expr::Paren(p) => walk(&p.expr, f),
        Expr::Subquery(s) => walk(&s.expr, f),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_notation_expands() {
        let (v, _) = parse_values("0+10x2 _ stale 1x1 _x2 -1-1x1", true).unwrap();
        assert_eq!(v.len(), 3 + 1 + 1 + 2 + 2 + 2);
        assert_eq!(v[2], Some(20.0));
        assert!(v[4].is_some_and(crate::storage::is_stale_marker));
        assert_eq!(v[10], Some(-2.0));
        let (v, _) = parse_values("0x59", true).unwrap();
        assert_eq!(v.len(), 60);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("10s53ms").unwrap(), 10_053);
        assert_eq!(parse_duration("0").unwrap(), 0);
    }

    #[test]
    fn expectations_are_checked() {
        let script = "load 1m\n  m{a=\"1\"} 1\n  m{a=\"2\"} 2\n\n\
            eval instant at 0 sort_desc(m)\n  expect ordered\n  m{a=\"2\"} 2\n  m{a=\"1\"} 1\n\n\
            eval instant at 0 sort(m)\n  expect ordered\n  m{a=\"2\"} 2\n  m{a=\"1\"} 1\n\n\
            eval instant at 0 m + on() m\n  expect fail msg: wrong message\n\n\
            eval instant at 0 m + on() m\n  expect fail regex: many-to-many matching not allowed\n\n\
            eval range from 0 to 1m step 1m sort(m)\n  expect warn regex: sort is ineffective\n  m{a=\"1\"} 1 1\n  m{a=\"2\"} 2 2\n\n\
            eval instant at 0 42\n  42\n";
        let s = run_script("t", script);
        assert_eq!(
            (s.passed, s.failed, s.skipped),
            (4, 2, 0),
            "{:?}",
            s.failures
        );
        assert!(s.failures[0].contains("sort(m)"), "{:?}", s.failures);
        assert!(s.failures[1].contains("wrong message"), "{:?}", s.failures);
    }

    #[test]
    fn histogram_evals_are_skipped_never_passed() {
        let script = "load 1m\n  h {{schema:0 sum:1 count:1}}\n  f 1\n\n\
            eval instant at 0 h\n  h {{schema:0 sum:1 count:1}}\n\n\
            eval instant at 0 count(h)\n  {} 1\n\n\
            eval instant at 0 histogram_count(f)\n\n\
            eval instant at 0 f\n  f 1\n";
        let s = run_script("t", script);
        assert_eq!(
            (s.passed, s.failed, s.skipped),
            (1, 0, 3),
            "{:?}",
            s.failures
        );
    }

    #[test]
    fn small_script_passes() {
        let s = run_script(
            "t",
            "load 5m\n  x{a=\"b\"} 0+10x10\n\neval instant at 50m x\n  x{a=\"b\"} 100\n\neval instant at 55m x\n\neval range from 0 to 10m step 5m x * 2\n  {a=\"b\"} 0 20 40\n",
        );
        assert_eq!((s.passed, s.failed), (3, 0), "{:?}", s.failures);
    }
}
