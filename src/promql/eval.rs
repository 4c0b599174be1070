//! The evaluator: walks the AST and produces every node's value at all output steps.
//!
//! Values inside the evaluator are dense per step: an instant vector is a list of
//! series, each with one optional value per output step, so binary operators and
//! aggregations line steps up by index. Range vectors exist only as function inputs
//! (or as an instant query's result): the raw samples of each series plus the window
//! end of every step, and functions slide over them.
//!
//! Invariants: windows are left-open `(end - range, end]` (Prometheus 3); an instant
//! selector takes the newest sample in `(t - lookback, t]` unless it is a staleness
//! marker; range vectors never contain staleness markers.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::QueryContext;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use super::durations::{RangeMode, MODE_LABEL};
use super::value::{QueryResult, Sample, Series, Value};
use super::{EngineOptions, QueryError, Queryable, Result};
use crate::storage::{is_stale_marker, Label, LabelSet, MatchOp, Matcher, METRIC_NAME};

/// The output steps a node is evaluated at: `start, start + step, ..., end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steps {
    pub(crate) start: i64,
    pub(crate) step: i64,
    pub(crate) n: usize,
}

impl Steps {
    pub(crate) fn new(start: i64, end: i64, step: i64) -> Steps {
        let step = step.max(1);
        let n = if end < start {
            0
        } else {
            ((end - start) / step) as usize + 1
        };
        Steps { start, step, n }
    }

    pub(crate) fn t(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// An instant-vector series with one optional value per step. `drop_name` marks a
/// series whose metric name is removed when the result is returned (Prometheus's
/// delayed name removal).
#[derive(Debug, Clone)]
pub(crate) struct VSeries {
    pub(crate) labels: LabelSet,
    pub(crate) drop_name: bool,
    pub(crate) vals: Vec<Option<f64>>,
}

impl VSeries {
    /// The labels as later operators see them: without the name when it is dropped.
    pub(crate) fn effective_labels(&self) -> LabelSet {
        if self.drop_name {
            drop_name(&self.labels)
        } else {
            self.labels.clone()
        }
    }
}

/// Raw samples of one series (no staleness markers) for range-vector functions.
#[derive(Debug, Clone)]
pub(crate) struct RawSeries {
    pub(crate) labels: LabelSet,
    pub(crate) drop_name: bool,
    pub(crate) ts: Vec<i64>,
    pub(crate) vs: Vec<f64>,
}

/// A range vector evaluated for every step: per step, the window `(end - range, end]`.
#[derive(Debug, Clone)]
pub(crate) struct MatrixVal {
    pub(crate) series: Vec<RawSeries>,
    pub(crate) range: i64,
    /// Window end per output step.
    pub(crate) ends: Vec<i64>,
    /// The selector, when the range vector came from one (for `absent_over_time`).
    pub(crate) selector: Option<VectorSelector>,
    /// `anchored`/`smoothed`: windows reach back (and for `smoothed` forward) by
    /// the lookback delta so kernels can see the samples around the edges.
    pub(crate) mode: RangeMode,
}

/// A node's value over all steps.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<VSeries>),
    Matrix(MatrixVal),
}

/// Evaluation state shared by all nodes of one query.
pub(crate) struct Evaluator<'a> {
    pub(crate) opts: &'a EngineOptions,
    store: &'a dyn Queryable,
    pub(crate) query: &'a str,
    deadline: Instant,
    ctx: &'a QueryContext,
    /// Nodes being evaluated, outermost to innermost (bounded by `query.max_depth`).
    depth: usize,
    /// The query's own start and end, for `@ start()` / `@ end()`.
    pub(crate) q_start: i64,
    pub(crate) q_end: i64,
    /// The query's step; 0 for an instant query (Prometheus `step()`).
    pub(crate) q_step: i64,
    pub(crate) warnings: Vec<String>,
    pub(crate) infos: Vec<String>,
    /// Range selectors with an `anchored`/`smoothed` modifier, by node address (the
    /// parser's AST has no field for it; the tree is not moved while evaluating).
    modes: HashMap<usize, RangeMode>,
}

/// What one evaluation is asked: the expression, its text, the modes of its range
/// selectors, the steps, and what stops it early.
pub(crate) struct Run<'a> {
    pub(crate) expr: &'a Expr,
    pub(crate) query: &'a str,
    pub(crate) modes: &'a [RangeMode],
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
    pub(crate) instant: bool,
    /// When the query times out (its clock started before parsing).
    pub(crate) deadline: Instant,
    pub(crate) ctx: &'a QueryContext,
}

/// Runs a query over `[start, end]` at `step` and shapes the result: a vector, scalar,
/// string or matrix for an instant query, a matrix for a range query.
pub(crate) fn run(opts: &EngineOptions, store: &dyn Queryable, r: Run<'_>) -> Result<QueryResult> {
    let Run {
        expr,
        query,
        modes,
        start,
        end,
        step,
        instant,
        deadline,
        ctx,
    } = r;
    let mut selectors = Vec::new();
    matrix_selectors(expr, &mut selectors);
    let modes: HashMap<usize, RangeMode> = selectors
        .into_iter()
        .zip(modes.iter().copied())
        .filter(|(_, m)| *m != RangeMode::Plain)
        .collect();
    let mut ev = Evaluator {
        modes,
        opts,
        store,
        query,
        deadline,
        ctx,
        depth: 0,
        q_start: start,
        q_end: end,
        q_step: if instant { 0 } else { step },
        warnings: Vec::new(),
        infos: Vec::new(),
    };
    let steps = Steps::new(start, end, step);
    let val = ev.eval(expr, steps)?;
    let value = match val {
        Val::Scalar(v) => {
            if instant {
                Value::Scalar(start, v.first().copied().unwrap_or(f64::NAN))
            } else {
                Value::Matrix(vec![Series {
                    labels: LabelSet::default(),
                    points: v
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| (steps.t(i), x))
                        .collect(),
                }])
            }
        }
        Val::Str(s) => Value::String(start, s),
        Val::Vector(series) => {
            let series = finalize_names(series)?;
            if instant {
                Value::Vector(
                    series
                        .into_iter()
                        .filter_map(|s| {
                            s.vals.first().copied().flatten().map(|v| Sample {
                                labels: s.labels,
                                t: start,
                                v,
                            })
                        })
                        .collect(),
                )
            } else {
                let mut out: Vec<Series> = series
                    .into_iter()
                    .filter_map(|s| {
                        let points: Vec<(i64, f64)> = s
                            .vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| v.map(|v| (steps.t(i), v)))
                            .collect();
                        (!points.is_empty()).then_some(Series {
                            labels: s.labels,
                            points,
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(out)
            }
        }
        Val::Matrix(m) => {
            let mut out = Vec::new();
            let end = m.ends.first().copied().unwrap_or(start);
            let mut names: HashMap<LabelSet, ()> = HashMap::new();
            for s in m.series {
                let labels = if s.drop_name {
                    drop_name(&s.labels)
                } else {
                    s.labels
                };
                if names.insert(labels.clone(), ()).is_some() {
                    return Err(QueryError::Execution(
                        "vector cannot contain metrics with the same labelset".into(),
                    ));
                }
                let points: Vec<(i64, f64)> =
                    s.ts.iter()
                        .zip(&s.vs)
                        .filter(|(&t, _)| t > end - m.range && t <= end)
                        .map(|(&t, &v)| (t, v))
                        .collect();
                if !points.is_empty() {
                    out.push(Series { labels, points });
                }
            }
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Matrix(out)
        }
    };
    Ok(QueryResult {
        value,
        warnings: ev.warnings,
        infos: ev.infos,
    })
}

/// Addresses of the range selectors in `e`, in the order they appear in the text.
/// Iterative (an explicit stack), so a deep tree needs no deep call stack.
fn matrix_selectors(e: &Expr, out: &mut Vec<usize>) {
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        // Children are pushed last-first so they come off the stack in text order.
        match e {
            Expr::MatrixSelector(ms) => out.push(ms as *const parser::MatrixSelector as usize),
            Expr::Aggregate(a) => {
                todo.push(&a.expr);
                if let Some(p) = &a.param {
                    todo.push(p);
                }
            }
            Expr::Unary(u) => todo.push(&u.expr),
            Expr::Binary(b) => {
                todo.push(&b.rhs);
                todo.push(&b.lhs);
            }
            Expr::Paren(p) => todo.push(&p.expr),
            Expr::Subquery(s) => todo.push(&s.expr),
            Expr::Call(c) => todo.extend(c.args.args.iter().rev().map(|a| &**a)),
            _ => {}
        }
    }
}

/// Applies delayed name removal and checks that no two series now share labels at
/// the same step (Prometheus: "vector cannot contain metrics with the same labelset").
/// Series that end up with equal labels but disjoint steps are merged.
pub(crate) fn finalize_names(series: Vec<VSeries>) -> Result<Vec<VSeries>> {
    let mut out: Vec<VSeries> = Vec::with_capacity(series.len());
    let mut index: HashMap<LabelSet, usize> = HashMap::new();
    for mut s in series {
        if s.drop_name {
            s.labels = drop_name(&s.labels);
            s.drop_name = false;
        }
        match index.get(&s.labels) {
            Some(&i) => {
                let o = &mut out[i];
                for (a, b) in o.vals.iter_mut().zip(&s.vals) {
                    if b.is_some() {
                        if a.is_some() {
                            return Err(dup_labelset());
                        }
                        *a = *b;
                    }
                }
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

pub(crate) fn dup_labelset() -> QueryError {
    QueryError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Labels that describe the metric name and go with it: the name itself and the
/// `__type__`/`__unit__` labels of Prometheus's type-and-unit metadata.
const NAME_LABELS: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

/// A copy of `labels` without the metric name (and its type and unit labels).
pub(crate) fn drop_name(labels: &LabelSet) -> LabelSet {
    if !NAME_LABELS.iter().any(|n| labels.get(n).is_some()) {
        return labels.clone();
    }
    LabelSet::from_sorted(
        labels
            .iter()
            .filter(|l| !NAME_LABELS.contains(&&*l.name))
            .cloned()
            .collect(),
    )
}

/// Prometheus's `labels.String()`: `{__name__="a", b="c"}`.
pub(crate) fn labels_string(labels: &LabelSet) -> String {
    let mut s = String::from("{");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&l.name);
        s.push('=');
        s.push_str(&go_quote(&l.value));
    }
    s.push('}');
    s
}

/// Go's `strconv.Quote` for the common cases.
pub(crate) fn go_quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A duration in ms, capped at 2^60 so that sums of times, offsets, ranges and the
/// lookback stay far from overflow.
pub(crate) fn duration_ms(d: &std::time::Duration) -> i64 {
    const CAP: i64 = 1 << 60;
    i64::try_from(d.as_millis()).unwrap_or(CAP).min(CAP)
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// Converts a parsed selector into store matcher sets, one per `or` alternative.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    fn conv(m: &promql_parser::label::Matcher) -> Result<Matcher> {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        Matcher::new(op, m.name.clone(), m.value.clone())
            .map_err(|e| QueryError::BadData(e.to_string()))
    }
    let mut base = Vec::new();
    if let Some(name) = &vs.name {
        base.push(Matcher::equal(METRIC_NAME, name.clone()));
    }
    for m in &vs.matchers.matchers {
        if m.name == MODE_LABEL {
            continue;
        }
        base.push(conv(m)?);
    }
    if vs.matchers.or_matchers.is_empty() {
        return Ok(vec![base]);
    }
    let mut out = Vec::new();
    for group in &vs.matchers.or_matchers {
        let mut ms = base.clone();
        for m in group {
            ms.push(conv(m)?);
        }
        out.push(ms);
    }
    Ok(out)
}

impl Evaluator<'_> {
    /// Stops the query when it ran out of time or its client went away.
    pub(crate) fn check_deadline(&self) -> Result<()> {
        if self.ctx.is_cancelled() {
            return Err(QueryError::Canceled("expression evaluation"));
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout("expression evaluation"));
        }
        Ok(())
    }

    pub(crate) fn check_samples(&self, n: usize) -> Result<()> {
        if n > self.opts.max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
        Ok(())
    }

    /// A warning annotation for the expression starting at the first occurrence of
    /// `needle` in the query (positions are 1-based line:column, as Prometheus's).
    pub(crate) fn warn(&mut self, msg: String, needle: &str) {
        let pos = self.position(needle);
        let w = format!("PromQL warning: {msg} ({pos})");
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// A warning positioned at a function's argument: the first occurrence of
    /// `arg` after the first occurrence of `func`.
    pub(crate) fn warn_arg(&mut self, msg: String, func: &str, arg: &str) {
        let pos = self.arg_position(func, arg);
        let w = format!("PromQL warning: {msg} ({pos})");
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    pub(crate) fn info_arg(&mut self, msg: String, func: &str, arg: &str) {
        let pos = self.arg_position(func, arg);
        let w = format!("PromQL info: {msg} ({pos})");
        if !self.infos.contains(&w) {
            self.infos.push(w);
        }
    }

    fn arg_position(&self, func: &str, arg: &str) -> String {
        let f = self.query.find(func).unwrap_or(0);
        let off = self.query[f..].find(arg).map(|o| o + f).unwrap_or(f);
        self.pos_of(off)
    }

    fn pos_of(&self, off: usize) -> String {
        let before = &self.query[..off];
        let line = before.matches('\n').count() + 1;
        let col = before[before.rfind('\n').map(|i| i + 1).unwrap_or(0)..]
            .chars()
            .count()
            + 1;
        format!("{line}:{col}")
    }

    fn position(&self, needle: &str) -> String {
        let off = self.query.find(needle).unwrap_or(0);
        self.pos_of(off)
    }

    /// The `anchored`/`smoothed` mode of a range selector of this query.
    pub(crate) fn range_mode(&self, ms: &parser::MatrixSelector) -> RangeMode {
        self.modes
            .get(&(ms as *const parser::MatrixSelector as usize))
            .copied()
            .unwrap_or(RangeMode::Plain)
    }

    fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.q_start),
            Some(AtModifier::End) => Some(self.q_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Evaluates `expr` at every step of `steps`, on a stack with room for it.
    pub(crate) fn eval(&mut self, expr: &Expr, steps: Steps) -> Result<Val> {
        self.check_deadline()?;
        // Parsed queries are already within the limit; an expression built some
        // other way is checked here.
        if self.depth >= self.opts.limits.max_depth {
            return Err(QueryError::Limit(format!(
                "expression is nested deeper than the limit of {} (query.max_depth)",
                self.opts.limits.max_depth
            )));
        }
        self.depth += 1;
        let val = super::limits::with_eval_stack(|| self.eval_node(expr, steps));
        self.depth -= 1;
        val
    }

    fn eval_node(&mut self, expr: &Expr, steps: Steps) -> Result<Val> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; steps.n])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, steps),
            Expr::Unary(u) => match self.eval(&u.expr, steps)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(vs) => Ok(Val::Vector(
                    vs.into_iter()
                        .map(|mut s| {
                            for v in s.vals.iter_mut().flatten() {
                                *v = -*v;
                            }
                            s.drop_name = true;
                            s
                        })
                        .collect(),
                )),
                _ => Err(QueryError::BadData(
                    "unary expression only allowed on expressions of type scalar or instant vector"
                        .into(),
                )),
            },
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, steps, false),
            Expr::MatrixSelector(ms) => {
                let range = duration_ms(&ms.range);
                let mode = self.range_mode(ms);
                self.eval_matrix_selector(&ms.vs, range, mode, steps)
            }
            Expr::Subquery(sq) => self.eval_subquery(sq, steps),
            Expr::Binary(b) => super::binary::eval_binary(self, b, steps),
            Expr::Aggregate(a) => super::aggregate::eval_aggregate(self, a, steps),
            Expr::Call(c) => super::functions::eval_call(self, c, steps),
            Expr::Extension(_) => Err(QueryError::Unsupported(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// Reads the series of a selector in `[mint, maxt]`, merging `or` alternatives.
    fn select(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<crate::storage::SeriesSamples>> {
        let sets = selector_matchers(vs)?;
        if sets.len() == 1 {
            return self.store.select(&sets[0], mint, maxt);
        }
        let mut all = Vec::new();
        for ms in &sets {
            all.extend(self.store.select(ms, mint, maxt)?);
        }
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        all.dedup_by(|a, b| a.labels == b.labels);
        Ok(all)
    }

    /// An instant selector at every step. With `want_ts`, the value is the sample's
    /// timestamp in seconds (for `timestamp()`).
    pub(crate) fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        steps: Steps,
        want_ts: bool,
    ) -> Result<Val> {
        let offset = offset_ms(&vs.offset);
        let at = self.at_time(&vs.at);
        let lookback = self.opts.lookback_delta_ms;
        let eff = |i: usize| at.unwrap_or_else(|| steps.t(i)) - offset;
        // `smoothed` (Prometheus 3, experimental): the value is interpolated between
        // the samples around the evaluation time, so read ahead by the lookback too.
        let smoothed = vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == MODE_LABEL && m.value == "smoothed");
        let ahead = if smoothed { lookback } else { 0 };
        let (lo, hi) = if steps.n == 0 {
            (0, 0)
        } else {
            (eff(0).min(eff(steps.n - 1)), eff(0).max(eff(steps.n - 1)))
        };
        let selected = self.select(vs, lo - lookback + 1, hi + ahead)?;
        let mut out = Vec::with_capacity(selected.len());
        let mut total = 0usize;
        for s in selected {
            let mut vals = vec![None; steps.n];
            let mut j = 0usize;
            let mut any = false;
            for (i, slot) in vals.iter_mut().enumerate() {
                let t = eff(i);
                while j < s.timestamps.len() && s.timestamps[j] <= t {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let (st, mut sv) = (s.timestamps[j - 1], s.values[j - 1]);
                if st > t - lookback && !is_stale_marker(sv) {
                    if smoothed && st < t && j < s.timestamps.len() {
                        let (nt, nv) = (s.timestamps[j], s.values[j]);
                        if nt <= t + lookback && !is_stale_marker(nv) {
                            sv = sv + (nv - sv) * (t - st) as f64 / (nt - st) as f64;
                        }
                    }
                    *slot = Some(if want_ts { st as f64 / 1000.0 } else { sv });
                    any = true;
                    total += 1;
                }
            }
            if any {
                out.push(VSeries {
                    labels: s.labels,
                    drop_name: false,
                    vals,
                });
            }
            // Checked as series are added, so a huge selection stops early.
            self.check_samples(total)?;
        }
        Ok(Val::Vector(out))
    }

    pub(crate) fn eval_matrix_selector(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        mode: RangeMode,
        steps: Steps,
    ) -> Result<Val> {
        let offset = offset_ms(&vs.offset);
        let at = self.at_time(&vs.at);
        let ends: Vec<i64> = (0..steps.n)
            .map(|i| at.unwrap_or_else(|| steps.t(i)) - offset)
            .collect();
        let (lo, hi) = match (ends.iter().min(), ends.iter().max()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => (0, -1),
        };
        // Extended windows also read the lookback before the window (the anchor) and,
        // when smoothed, after it.
        let lookback = self.opts.lookback_delta_ms;
        let (before, after) = match mode {
            RangeMode::Plain => (0, 0),
            RangeMode::Anchored => (lookback, 0),
            RangeMode::Smoothed => (lookback, lookback),
        };
        let selected = self.select(vs, lo - range - before + 1, hi + after)?;
        let mut series = Vec::with_capacity(selected.len());
        let mut total = 0usize;
        for s in selected {
            let mut ts = Vec::with_capacity(s.timestamps.len());
            let mut vals = Vec::with_capacity(s.values.len());
            for (&t, &v) in s.timestamps.iter().zip(&s.values) {
                if !is_stale_marker(v) {
                    ts.push(t);
                    vals.push(v);
                }
            }
            total += ts.len();
            self.check_samples(total)?;
            if !ts.is_empty() {
                series.push(RawSeries {
                    labels: s.labels,
                    drop_name: false,
                    ts,
                    vs: vals,
                });
            }
        }
        self.check_samples(total)?;
        Ok(Val::Matrix(MatrixVal {
            series,
            range,
            ends,
            selector: Some(vs.clone()),
            mode,
        }))
    }

    fn eval_subquery(&mut self, sq: &parser::SubqueryExpr, steps: Steps) -> Result<Val> {
        let offset = offset_ms(&sq.offset);
        let range = duration_ms(&sq.range);
        let step = match &sq.step {
            Some(d) if !d.is_zero() => duration_ms(d),
            _ => self.opts.default_subquery_step_ms,
        }
        .max(1);
        let at = self.at_time(&sq.at);
        let ends: Vec<i64> = (0..steps.n)
            .map(|i| at.unwrap_or_else(|| steps.t(i)) - offset)
            .collect();
        let (first, last) = match (ends.iter().min(), ends.iter().max()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => {
                return Ok(Val::Matrix(MatrixVal {
                    series: vec![],
                    range,
                    ends,
                    selector: None,
                    mode: RangeMode::Plain,
                }))
            }
        };
        // Prometheus: start at the first multiple of the step strictly after
        // `start - offset - range` (Go's truncating division, as upstream).
        let lower = first - range;
        let mut start = step * (lower / step);
        if start <= lower {
            start += step;
        }
        let inner = Steps::new(start, last, step);
        // Every inner step holds at least one value per series: refuse a subquery
        // whose resolution alone exceeds the sample limit.
        self.check_samples(inner.n)?;
        let val = self.eval(&sq.expr, inner)?;
        let series = match val {
            Val::Vector(vs) => vs
                .into_iter()
                .filter_map(|s| {
                    let mut ts = Vec::new();
                    let mut vals = Vec::new();
                    for (i, v) in s.vals.iter().enumerate() {
                        if let Some(v) = v {
                            ts.push(inner.t(i));
                            vals.push(*v);
                        }
                    }
                    (!ts.is_empty()).then_some(RawSeries {
                        labels: s.labels,
                        drop_name: s.drop_name,
                        ts,
                        vs: vals,
                    })
                })
                .collect(),
            Val::Scalar(v) => vec![RawSeries {
                labels: LabelSet::default(),
                drop_name: false,
                ts: (0..inner.n).map(|i| inner.t(i)).collect(),
                vs: v,
            }],
            _ => {
                return Err(QueryError::BadData(
                    "subquery is only allowed on instant vector".into(),
                ))
            }
        };
        Ok(Val::Matrix(MatrixVal {
            series,
            range,
            ends,
            selector: None,
            mode: RangeMode::Plain,
        }))
    }
}

/// Builds a label set from labels with one changed (`None` value or empty removes).
pub(crate) fn set_label(labels: &LabelSet, name: &str, value: Option<&str>) -> LabelSet {
    let mut v: Vec<Label> = labels
        .iter()
        .filter(|l| &*l.name != name)
        .cloned()
        .collect();
    if let Some(val) = value.filter(|v| !v.is_empty()) {
        v.push(Label {
            name: name.into(),
            value: val.into(),
        });
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }
    LabelSet::from_sorted(v)
}
