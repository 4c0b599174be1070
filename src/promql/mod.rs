//! The PromQL engine: parses a query with `promql-parser` and evaluates its AST over a
//! [`Queryable`] (the ring store, or later a remote Prometheus), with Prometheus 3.x
//! float semantics.
//!
//! Evaluation works on whole step ranges, as Prometheus's range evaluation does: every
//! node produces its value at every output step at once. A selector reads each series'
//! samples once for the whole span `[start - offset - lookback/range, end - offset]` and
//! slides over them per step; it never goes back to the store per step. An instant query
//! is a range query with one step.
//!
//! Invariants: no input (query text, data, parameters) makes the engine panic; errors
//! come back as [`QueryError`] with Prometheus's error class. The sample limit and the
//! timeout are checked while evaluating, so a runaway query stops early.
//! Native histograms are not supported: the store holds floats only.

mod aggregate;
mod ast_json;
mod binary;
mod durations;
mod eval;
mod functions;
mod kernels;
pub mod stats;
pub mod testscript;
pub(crate) mod value;

use std::time::{Duration, Instant};

use crate::storage::{Matcher, SeriesSamples, Store};

pub use ast_json::ast_json;
pub use stats::{QueryStats, StatsLevel};
pub use value::{format_value, QueryResult, Sample, Series, Value};

/// Where the engine reads series from.
pub trait Queryable: Send + Sync {
    /// Series matching all `matchers` with their samples in `[mint, maxt]` (inclusive,
    /// milliseconds), staleness markers included.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, QueryError>;
}

impl Queryable for Store {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, QueryError> {
        Ok(Store::select(self, matchers, mint, maxt))
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold at once (Prometheus's `--query.max-samples`).
    pub max_samples: usize,
    /// Longest a query may run.
    pub timeout: Duration,
    /// Step of a subquery written without one (`x[5m:]`); Prometheus uses the rule
    /// group interval or, for queries, 1m.
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60 * 1000,
        }
    }
}

/// Why a query failed, in Prometheus's error classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse (errorType `bad_data`).
    #[error("{0}")]
    Parse(String),
    /// Bad query parameters or an evaluation error in the data (errorType `bad_data`
    /// for parameters; Prometheus reports evaluation errors as `execution`).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed: duplicate series, many-to-many matching, invalid arguments.
    #[error("{0}")]
    Execution(String),
    /// The query would hold more samples than allowed.
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The query ran longer than the timeout.
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query was canceled.
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// Reading from the data source failed.
    #[error("{0}")]
    Storage(String),
    /// A feature this engine does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl QueryError {
    /// Prometheus's `errorType` for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Parse(_) | QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_)
            | QueryError::TooManySamples(_)
            | QueryError::Storage(_)
            | QueryError::Unsupported(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Canceled(_) => "canceled",
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// The PromQL engine. Cheap to share; holds only settings.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    /// Whether queries count timings and samples (the API's `stats` parameter).
    stats: Option<StatsLevel>,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts, stats: None }
    }

    /// This engine, with queries returning statistics at `level` (or none).
    pub fn with_stats(mut self, level: Option<StatsLevel>) -> Self {
        self.stats = level;
        self
    }

    /// Adds the timings only the engine's entry points see to a result's stats.
    fn time(&self, r: &mut QueryResult, started: Instant, parsed: Instant) {
        if let Some(s) = &mut r.stats {
            let t = &mut s.timings;
            t.query_preparation_time = (parsed - started).as_secs_f64();
            t.eval_total_time = t.query_preparation_time + t.inner_eval_time + t.result_sort_time;
            t.exec_total_time = started.elapsed().as_secs_f64();
        }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant_query(
        &self,
        store: &dyn Queryable,
        query: &str,
        t_ms: i64,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let q = parse_extended(query, 0, 0)?;
        check_time(t_ms)?;
        let parsed = Instant::now();
        let mut r = eval::run(
            &self.opts, store, &q.expr, &q.text, &q.modes, t_ms, t_ms, 1, true, self.stats,
        )?;
        self.time(&mut r, started, parsed);
        Ok(r)
    }

    /// Evaluates an already parsed expression at `t_ms` (rules parse once and
    /// evaluate on every tick). `query` is its text, used to position annotations.
    pub fn instant_query_expr(
        &self,
        store: &dyn Queryable,
        expr: &promql_parser::parser::Expr,
        query: &str,
        t_ms: i64,
    ) -> Result<QueryResult> {
        check_time(t_ms)?;
        eval::run(
            &self.opts,
            store,
            expr,
            query,
            &[],
            t_ms,
            t_ms,
            1,
            true,
            self.stats,
        )
    }

    /// Evaluates `query` at `start_ms, start_ms + step_ms, ...` up to `end_ms`.
    pub fn range_query(
        &self,
        store: &dyn Queryable,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        check_time(start_ms)?;
        check_time(end_ms)?;
        if step_ms <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        if (end_ms - start_ms) / step_ms > 11_000 {
            return Err(QueryError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        let q = parse_extended(query, step_ms, end_ms - start_ms)?;
        match q.expr.value_type() {
            promql_parser::parser::value::ValueType::Vector
            | promql_parser::parser::value::ValueType::Scalar => {}
            other => {
                return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                value::type_name(other)
            )))
            }
        }
        let parsed = Instant::now();
        let mut r = eval::run(
            &self.opts, store, &q.expr, &q.text, &q.modes, start_ms, end_ms, step_ms, false,
            self.stats,
        )?;
        self.time(&mut r, started, parsed);
        Ok(r)
    }
}

/// Query times are kept within ±2^52 ms (about 140,000 years) so that offsets,
/// ranges and lookback arithmetic can never overflow.
fn check_time(t_ms: i64) -> Result<()> {
    const LIMIT: i64 = 1 << 52;
    if !(-LIMIT..=LIMIT).contains(&t_ms) {
        return Err(QueryError::BadData(format!(
            "time {t_ms}ms is out of the supported range"
        )));
    }
    Ok(())
}

/// Parses a series selector (`up{job="api"}`, or `{a="1" or b="2"}`) into store
/// matcher sets, one per `or` alternative: what `match[]` parameters and detector
/// selectors use. Refuses anything but a plain vector selector, and a set whose
/// matchers all match the empty string (it would select every series).
pub fn parse_selector(input: &str) -> Result<Vec<Vec<Matcher>>> {
    use promql_parser::parser::Expr;
    let invalid = |why: &str| QueryError::BadData(format!("invalid selector {input:?}: {why}"));
    let Expr::VectorSelector(vs) = parse(input)? else {
        return Err(invalid("not a series selector"));
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(invalid("offset and @ are not allowed here"));
    }
    let sets = eval::selector_matchers(&vs)?;
    if sets.iter().any(|set| set.iter().all(|m| m.matches(""))) {
        return Err(invalid(
            "needs at least one matcher that does not match the empty string",
        ));
    }
    Ok(sets)
}

/// The matcher sets of every selector in `query` (each `or` alternative its own
/// set), as Prometheus's `parser.ExtractSelectors`: what `/api/v1/query_exemplars`
/// looks exemplars up by.
pub fn query_selectors(query: &str) -> Result<Vec<Vec<Matcher>>> {
    use promql_parser::parser::Expr;
    fn walk(e: &Expr, out: &mut Vec<Vec<Matcher>>) -> Result<()> {
        match e {
            Expr::VectorSelector(vs) => out.extend(eval::selector_matchers(vs)?),
            Expr::MatrixSelector(m) => out.extend(eval::selector_matchers(&m.vs)?),
            Expr::Aggregate(a) => {
                walk(&a.expr, out)?;
                if let Some(p) = &a.param {
                    walk(p, out)?;
                }
            }
            Expr::Unary(u) => walk(&u.expr, out)?,
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)?;
            }
            Expr::Paren(p) => walk(&p.expr, out)?,
            Expr::Subquery(s) => walk(&s.expr, out)?,
            Expr::Call(c) => {
                for a in &c.args.args {
                    walk(a, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&parse_extended(query, 0, 0)?.expr, &mut out)?;
    Ok(out)
}

/// Parses a query, wrapping the parser's string error.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr> {
    register_functions();
    let query = decode_byte_escapes(query)?;
    promql_parser::parser::parse(&query).map_err(QueryError::Parse)
}

/// Go reads `\xHH` (and octal `\OOO`) escapes in PromQL strings as raw bytes, so
/// `"\xc3\xa9"` is `é`; promql-parser reads each as the code point U+00HH. This
/// rewrites runs of such escapes of bytes 0x80 and above into the characters they
/// encode before parsing, and refuses a run that is not UTF-8 (`"\xff"`): names
/// and values are UTF-8 strings here, and Prometheus 3 refuses such a label name
/// too. Raw (backtick) strings have no escapes and are left alone.
fn decode_byte_escapes(query: &str) -> Result<std::borrow::Cow<'_, str>> {
    if !query.contains('\\') {
        return Ok(std::borrow::Cow::Borrowed(query));
    }
    let b = query.as_bytes();
    let (mut out, mut pending) = (String::with_capacity(query.len()), Vec::new());
    let mut quote: Option<u8> = None;
    let flush = |out: &mut String, pending: &mut Vec<u8>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8(std::mem::take(pending)).map_err(|e| {
            QueryError::Parse(format!(
                "string escapes {:x?} are not UTF-8: names and values must be UTF-8",
                e.as_bytes()
            ))
        })?;
        out.push_str(&text);
        Ok(())
    };
    let hex = |c: u8| (c as char).to_digit(16);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if q != b'`' && c == b'\\' && i + 1 < b.len() => {
                let byte = match b[i + 1] {
                    b'x' if i + 3 < b.len() => hex(b[i + 2])
                        .zip(hex(b[i + 3]))
                        .map(|(h, l)| (h * 16 + l, 4)),
                    b'0'..=b'7' if i + 3 < b.len() => {
                        let d = |k: usize| (b[i + k] as char).to_digit(8);
                        match (d(1), d(2), d(3)) {
                            (Some(x), Some(y), Some(z)) => Some((x * 64 + y * 8 + z, 4)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match byte {
                    Some((v, len)) if (0x80..=0xff).contains(&v) => {
                        pending.push(v as u8);
                        i += len;
                    }
                    _ => {
                        flush(&mut out, &mut pending)?;
                        // Any other escape is copied as is (two bytes).
                        out.push('\\');
                        out.push(b[i + 1] as char);
                        i += 2;
                    }
                }
                continue;
            }
            Some(q) if c == q => quote = None,
            None if c == b'"' || c == b'\'' || c == b'`' => quote = Some(c),
            _ => {}
        }
        flush(&mut out, &mut pending)?;
        // Copy one UTF-8 character.
        let len = query[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&query[i..i + len]);
        i += len;
    }
    flush(&mut out, &mut pending)?;
    Ok(std::borrow::Cow::Owned(out))
}

/// A parsed query: the expression, the text it was parsed from, and the modes of its
/// range selectors when it used Prometheus 3's `anchored`/`smoothed` modifiers.
struct ParsedQuery {
    expr: promql_parser::parser::Expr,
    text: String,
    modes: Vec<durations::RangeMode>,
}

/// Parses a query; when the parser rejects it, tries again with Prometheus 3's
/// duration expressions computed (`x[26m+4m]`, `offset step()`), given what `step()`
/// and `range()` mean for this query, and with `anchored`/`smoothed` range
/// modifiers taken out and remembered.
fn parse_extended(query: &str, step_ms: i64, range_ms: i64) -> Result<ParsedQuery> {
    let err = match parse(query) {
        Ok(expr) => {
            return Ok(ParsedQuery {
                expr,
                text: query.to_string(),
                modes: Vec::new(),
            })
        }
        Err(e) => e,
    };
    let text = durations::rewrite(query, step_ms, range_ms).unwrap_or_else(|| query.to_string());
    if let Ok(expr) = parse(&text) {
        return Ok(ParsedQuery {
            expr,
            text,
            modes: Vec::new(),
        });
    }
    let (text, modes) = match durations::strip_range_modifiers(&text) {
        Some((stripped, modes)) => {
            if let Ok(expr) = parse(&stripped) {
                return Ok(ParsedQuery {
                    expr,
                    text: stripped,
                    modes,
                });
            }
            (stripped, modes)
        }
        None => (text, Vec::new()),
    };
    if let Some(marked) = durations::mark_info_selectors(&text) {
        if let Ok(expr) = parse(&marked) {
            return Ok(ParsedQuery {
                expr,
                text: marked,
                modes,
            });
        }
    }
    Err(err)
}

/// Parses a query the way the engine would (extended syntax included), for analysis
/// such as the test runner's native-histogram rule. `None` when it does not parse.
pub(crate) fn parse_for_analysis(query: &str) -> Option<promql_parser::parser::Expr> {
    parse_extended(query, 0, 0).ok().map(|q| q.expr)
}

/// Teaches the parser the functions it lacks but Prometheus 2.x users still write:
/// `holt_winters`, the name `double_exponential_smoothing` had before Prometheus 3.
fn register_functions() {
    use promql_parser::parser::function::{register_extra_functions, Function};
    use promql_parser::parser::value::ValueType;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // A name clash with a built-in only means the parser already knows it.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

#[cfg(test)]
mod tests;
