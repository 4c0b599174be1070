//! Function calls: argument evaluation and dispatch to one file per function family.
//!
//! Range-vector functions are kernels over one window's samples ([`Window`]); the
//! driver here slides each series' window over the steps, so the kernels never see the
//! store. Instant-vector functions map values or rewrite labels.

mod histogram;
mod info;
mod labels;
mod math;
mod over_time;
mod rate;

use promql_parser::parser::{Call, Expr};

use super::durations::RangeMode;
use super::eval::{Evaluator, MatrixVal, Steps, VSeries, Val};
use super::{QueryError, Result};

/// One step's window of a series for a range-vector function: the samples with
/// timestamps in `(start, end]`, plus the step's scalar arguments.
pub(crate) struct Window<'a> {
    pub(crate) ts: &'a [i64],
    pub(crate) vs: &'a [f64],
    /// Exclusive lower bound of the window.
    pub(crate) start: i64,
    /// Inclusive upper bound of the window.
    pub(crate) end: i64,
    /// The range of the selector or subquery, in ms.
    pub(crate) range: i64,
    /// The evaluation time of the step (before offset).
    pub(crate) eval_t: i64,
    /// The function's scalar arguments at this step, in argument order.
    pub(crate) args: &'a [f64],
    /// With `anchored`/`smoothed`, `ts`/`vs` also hold the samples within the
    /// lookback before `start` (and, smoothed, after `end`).
    pub(crate) mode: RangeMode,
    /// Where the value drops inside the window (`vs[j] < vs[j - 1]`), ascending, as
    /// positions `first + j` in the series: counter resets, found once per series
    /// instead of once per step.
    pub(crate) drops: &'a [u32],
    /// Position of `ts[0]` in the series.
    pub(crate) first: u32,
}

/// Positions where a series' value drops (`vs[j] < vs[j - 1]`), ascending.
pub(super) fn drop_positions(vs: &[f64], out: &mut Vec<u32>) {
    out.clear();
    for (j, pair) in vs.windows(2).enumerate() {
        if pair[1] < pair[0] {
            out.push(j as u32 + 1);
        }
    }
}

pub(crate) type RangeKernel = fn(&Window<'_>) -> Result<Option<f64>>;

/// Evaluates a scalar argument at every step.
pub(crate) fn scalar_arg(ev: &mut Evaluator<'_>, e: &Expr, steps: Steps) -> Result<Vec<f64>> {
    match ev.eval(e, steps)? {
        Val::Scalar(v) => Ok(v),
        _ => Err(QueryError::BadData("expected a scalar argument".into())),
    }
}

pub(crate) fn vector_arg(ev: &mut Evaluator<'_>, e: &Expr, steps: Steps) -> Result<Vec<VSeries>> {
    match ev.eval(e, steps)? {
        Val::Vector(v) => Ok(v),
        _ => Err(QueryError::BadData(
            "expected an instant vector argument".into(),
        )),
    }
}

pub(crate) fn string_arg(ev: &mut Evaluator<'_>, e: &Expr, steps: Steps) -> Result<String> {
    match ev.eval(e, steps)? {
        Val::Str(s) => Ok(s),
        _ => Err(QueryError::BadData("expected a string argument".into())),
    }
}

pub(crate) fn matrix_arg(ev: &mut Evaluator<'_>, e: &Expr, steps: Steps) -> Result<MatrixVal> {
    match ev.eval(e, steps)? {
        Val::Matrix(m) => Ok(m),
        _ => Err(QueryError::BadData(
            "expected a range vector argument".into(),
        )),
    }
}

/// Applies `kernel` to every series' window at every step. `keep_name` is false for
/// functions whose result is no longer the input metric (Prometheus drops the name).
pub(crate) fn apply_range(
    ev: &mut Evaluator<'_>,
    m: &MatrixVal,
    steps: Steps,
    scalar_args: &[Vec<f64>],
    keep_name: bool,
    kernel: RangeKernel,
) -> Result<Vec<VSeries>> {
    let mut out = Vec::with_capacity(m.series.len());
    let mut args = vec![0.0; scalar_args.len()];
    let mut per_step = vec![0usize; steps.n];
    let lookback = ev.opts.lookback_delta_ms;
    let (before, after) = match m.mode {
        RangeMode::Plain => (0, 0),
        RangeMode::Anchored => (lookback, 0),
        RangeMode::Smoothed => (lookback, lookback),
    };
    let mut drops = Vec::new();
    let mut work = 0usize;
    for s in &m.series {
        ev.check_deadline()?;
        drop_positions(&s.vs, &mut drops);
        let mut vals = vec![None; steps.n];
        let mut any = false;
        // Window bounds slide forward with the steps: `lo` is the first sample after
        // the window's start, `hi` one past the last sample at or before its end.
        // Steps' window ends never decrease, so each bound only moves forward (a
        // binary search restarts them if they ever did).
        let (mut lo, mut hi) = (0usize, 0usize);
        let (mut d_lo, mut d_hi) = (0usize, 0usize);
        let mut prev_end = i64::MIN;
        for (i, slot) in vals.iter_mut().enumerate() {
            let end = m.ends[i];
            let start = end.saturating_sub(m.range);
            let (from, to) = (start - before, end + after);
            if end < prev_end {
                lo = s.ts.partition_point(|&t| t <= from);
                hi = s.ts.partition_point(|&t| t <= to);
                d_lo = 0;
                d_hi = 0;
            }
            prev_end = end;
            while lo < s.ts.len() && s.ts[lo] <= from {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < s.ts.len() && s.ts[hi] <= to {
                hi += 1;
            }
            if lo >= hi {
                continue;
            }
            // Drops strictly inside the window: positions in (lo, hi).
            while d_lo < drops.len() && drops[d_lo] as usize <= lo {
                d_lo += 1;
            }
            d_hi = d_hi.max(d_lo);
            while d_hi < drops.len() && (drops[d_hi] as usize) < hi {
                d_hi += 1;
            }
            per_step[i] += hi - lo;
            // Windows overlap, so the work is not bounded by the samples held: look
            // at the clock (and the cancel flag) every million samples visited.
            work += hi - lo + 1;
            if work >= 1 << 20 {
                work = 0;
                ev.check_deadline()?;
            }
            for (a, v) in args.iter_mut().zip(scalar_args) {
                *a = v[i];
            }
            let w = Window {
                ts: &s.ts[lo..hi],
                vs: &s.vs[lo..hi],
                start,
                end,
                range: m.range,
                eval_t: steps.t(i),
                args: &args,
                mode: m.mode,
                drops: &drops[d_lo..d_hi],
                first: lo as u32,
            };
            *slot = kernel(&w)?;
            any |= slot.is_some();
        }
        if any {
            out.push(VSeries {
                labels: s.labels.clone(),
                drop_name: s.drop_name || !keep_name,
                vals,
            });
        }
    }
    ev.check_samples(per_step.into_iter().max().unwrap_or(0))?;
    Ok(out)
}

/// `anchored` and `smoothed` are only defined for some functions (Prometheus
/// `AnchoredSafeFunctions` and its smoothed counterpart).
fn check_range_modes(ev: &Evaluator<'_>, name: &str, args: &[&Expr]) -> Result<()> {
    for a in args {
        let Expr::MatrixSelector(ms) = a else {
            continue;
        };
        match ev.range_mode(ms) {
            RangeMode::Plain => {}
            RangeMode::Anchored => {
                if !matches!(name, "changes" | "delta" | "increase" | "rate" | "resets") {
                    return Err(QueryError::BadData(format!(
                        "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with {name}"
                    )));
                }
            }
            RangeMode::Smoothed => {
                if !matches!(name, "delta" | "increase" | "rate") {
                    return Err(QueryError::BadData(format!(
                        "smoothed modifier can only be used with: delta, increase, rate - not with {name}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Maps every value of every series; the name is dropped.
pub(crate) fn map_values(series: Vec<VSeries>, f: impl Fn(f64) -> f64) -> Vec<VSeries> {
    series
        .into_iter()
        .map(|mut s| {
            for v in s.vals.iter_mut().flatten() {
                *v = f(*v);
            }
            s.drop_name = true;
            s
        })
        .collect()
}

pub(crate) fn eval_call(ev: &mut Evaluator<'_>, c: &Call, steps: Steps) -> Result<Val> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|b| b.as_ref()).collect();
    check_range_modes(ev, name, &args)?;
    if let Some(v) = rate::call(ev, name, &args, steps)? {
        return Ok(v);
    }
    if let Some(v) = over_time::call(ev, name, &args, steps)? {
        return Ok(v);
    }
    if let Some(v) = math::call(ev, name, &args, steps)? {
        return Ok(v);
    }
    if let Some(v) = labels::call(ev, name, &args, steps)? {
        return Ok(v);
    }
    if let Some(v) = histogram::call(ev, name, &args, steps)? {
        return Ok(v);
    }
    if let Some(v) = info::call(ev, name, &args, steps)? {
        return Ok(v);
    }
    Err(QueryError::Unsupported(format!(
        "function \"{name}\" is not supported"
    )))
}
