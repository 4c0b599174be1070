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
mod binary;
mod durations;
mod eval;
mod functions;
mod kernels;
mod limits;
pub mod testscript;
pub(crate) mod value;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::{Matcher, SeriesSamples, Store};

pub use limits::{QueryLimits, DEFAULT_MAX_DEPTH, DEFAULT_MAX_LENGTH, MAX_DEPTH_CEILING};
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
    /// Bounds on the query text, checked before parsing.
    pub limits: QueryLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60 * 1000,
            limits: QueryLimits::default(),
        }
    }
}

/// Why a query failed, in Prometheus's error classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse (errorType `bad_data`).
    #[error("{0}")]
    Parse(String),
    /// The query text is longer or nests deeper than allowed (errorType
    /// `bad_data`); the message names the limit's configuration key.
    #[error("{0}")]
    Limit(String),
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
            QueryError::Parse(_) | QueryError::Limit(_) | QueryError::BadData(_) => "bad_data",
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

/// What stops a running query from outside: a cancel flag, set when the query's
/// client goes away, and optionally a deadline set before the query reached the
/// engine (time spent queueing counts). The evaluator polls both as often as it
/// checks the engine's own timeout.
#[derive(Debug, Clone, Default)]
pub struct QueryContext {
    cancelled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl QueryContext {
    /// No deadline but the engine's timeout, and nobody cancels (rules, tools).
    pub fn background() -> Self {
        QueryContext::default()
    }

    /// A query that must be done by `deadline` (and within the engine's timeout).
    pub fn with_deadline(deadline: Instant) -> Self {
        QueryContext {
            deadline: Some(deadline),
            ..QueryContext::default()
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// A guard that cancels the query when dropped unless [`CancelOnDrop::disarm`]ed:
    /// held by the future waiting for the answer, so dropping that future (the
    /// client disconnected) stops the work.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// Cancels its query when dropped; see [`QueryContext::on_drop`].
#[derive(Debug)]
pub struct CancelOnDrop(Option<QueryContext>);

impl CancelOnDrop {
    /// The answer arrived: dropping the guard no longer cancels anything.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

/// The PromQL engine. Cheap to share; holds only settings.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// When a query starting now times out: parsing and evaluation share the
    /// engine's timeout, and the context's deadline if it is earlier.
    fn deadline(&self, ctx: &QueryContext) -> Instant {
        let own = Instant::now() + self.opts.timeout;
        ctx.deadline.map_or(own, |d| d.min(own))
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant_query(
        &self,
        store: &dyn Queryable,
        query: &str,
        t_ms: i64,
    ) -> Result<QueryResult> {
        self.instant_query_with(store, query, t_ms, &QueryContext::background())
    }

    /// Evaluates `query` at `t_ms`, stopping early when `ctx` says so.
    pub fn instant_query_with(
        &self,
        store: &dyn Queryable,
        query: &str,
        t_ms: i64,
        ctx: &QueryContext,
    ) -> Result<QueryResult> {
        let deadline = self.deadline(ctx);
        let q = parse_extended(query, 0, 0, &self.opts.limits)?;
        check_time(t_ms)?;
        self.run(store, &q, t_ms, t_ms, 1, true, deadline, ctx)
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
        let run = eval::Run {
            expr,
            query,
            modes: &[],
            start: t_ms,
            end: t_ms,
            step: 1,
            instant: true,
            deadline: self.deadline(&QueryContext::background()),
            ctx: &QueryContext::background(),
        };
        eval::run(&self.opts, store, run)
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
        self.range_query_with(
            store,
            query,
            start_ms,
            end_ms,
            step_ms,
            &QueryContext::background(),
        )
    }

    /// [`Engine::range_query`], stopping early when `ctx` says so.
    pub fn range_query_with(
        &self,
        store: &dyn Queryable,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        ctx: &QueryContext,
    ) -> Result<QueryResult> {
        let deadline = self.deadline(ctx);
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
        let q = parse_extended(query, step_ms, end_ms - start_ms, &self.opts.limits)?;
        match limits::with_tree_stack(q.depth, || q.expr.value_type()) {
            promql_parser::parser::value::ValueType::Vector
            | promql_parser::parser::value::ValueType::Scalar => {}
            other => {
                return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                value::type_name(other)
            )))
            }
        }
        self.run(store, &q, start_ms, end_ms, step_ms, false, deadline, ctx)
    }

    /// Evaluates a parsed query, after checking that parsing left time for it.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        store: &dyn Queryable,
        q: &ParsedQuery,
        start: i64,
        end: i64,
        step: i64,
        instant: bool,
        deadline: Instant,
        ctx: &QueryContext,
    ) -> Result<QueryResult> {
        if ctx.is_cancelled() {
            return Err(QueryError::Canceled("query parsing"));
        }
        if Instant::now() > deadline {
            return Err(QueryError::Timeout("query parsing"));
        }
        let run = eval::Run {
            expr: &q.expr,
            query: &q.text,
            modes: &q.modes,
            start,
            end,
            step,
            instant,
            deadline,
            ctx,
        };
        eval::run(&self.opts, store, run)
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

/// Parses a query within the default [`QueryLimits`], wrapping the parser's string
/// error.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr> {
    parse_limited(query, &QueryLimits::default())
}

/// Parses a query after checking its length and nesting against `limits`, on a
/// stack sized for its nesting.
pub fn parse_limited(query: &str, limits: &QueryLimits) -> Result<promql_parser::parser::Expr> {
    let depth = limits::check_text(query, limits)?;
    parse_checked(query, depth)
}

/// Parses text that passed [`limits::check_text`] with nesting bound `depth`.
fn parse_checked(query: &str, depth: usize) -> Result<promql_parser::parser::Expr> {
    register_functions();
    limits::with_tree_stack(depth, || promql_parser::parser::parse(query))
        .map_err(QueryError::Parse)
}

/// A parsed query: the expression, the text it was parsed from, and the modes of its
/// range selectors when it used Prometheus 3's `anchored`/`smoothed` modifiers.
struct ParsedQuery {
    expr: promql_parser::parser::Expr,
    text: String,
    modes: Vec<durations::RangeMode>,
    /// The nesting bound of the text (sizes the stack of walks over `expr`).
    depth: usize,
}

/// Parses a query; when the parser rejects it, tries again with Prometheus 3's
/// duration expressions computed (`x[26m+4m]`, `offset step()`), given what `step()`
/// and `range()` mean for this query, and with `anchored`/`smoothed` range
/// modifiers taken out and remembered.
fn parse_extended(
    query: &str,
    step_ms: i64,
    range_ms: i64,
    limits: &QueryLimits,
) -> Result<ParsedQuery> {
    let depth = limits::check_text(query, limits)?;
    // The rewrites below change durations and modifiers, never the nesting.
    let parse = |text: &str| parse_checked(text, depth);
    let err = match parse(query) {
        Ok(expr) => {
            return Ok(ParsedQuery {
                expr,
                text: query.to_string(),
                modes: Vec::new(),
                depth,
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
            depth,
        });
    }
    let (text, modes) = match durations::strip_range_modifiers(&text) {
        Some((stripped, modes)) => {
            if let Ok(expr) = parse(&stripped) {
                return Ok(ParsedQuery {
                    expr,
                    text: stripped,
                    modes,
                    depth,
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
                depth,
            });
        }
    }
    Err(err)
}

/// Parses a query the way the engine would (extended syntax included), for analysis
/// such as the test runner's native-histogram rule. `None` when it does not parse.
pub(crate) fn parse_for_analysis(query: &str) -> Option<promql_parser::parser::Expr> {
    parse_extended(query, 0, 0, &QueryLimits::default())
        .ok()
        .map(|q| q.expr)
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
