//! `*_over_time` aggregations of a window, plus the other window kernels that look at
//! every sample: `changes`, `resets`, `deriv`, `predict_linear`,
//! `double_exponential_smoothing` and `absent_over_time`.

use promql_parser::parser::Expr;

use super::{apply_range, matrix_arg, scalar_arg, Window};
use crate::promql::aggregate::go_float;
use crate::promql::eval::{Evaluator, Steps, VSeries, Val};
use crate::promql::kernels::{kahan_sum, linear_regression, mean, quantile, variance};
use crate::promql::{QueryError, Result};

pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Option<Val>> {
    // (kernel, index of the range-vector argument, keeps the metric name)
    let (kernel, matrix_at, keep_name): (super::RangeKernel, usize, bool) = match name {
        "avg_over_time" => (|w| Ok(Some(mean(w.vs))), 0, false),
        "sum_over_time" => (|w| Ok(Some(kahan_sum(w.vs))), 0, false),
        "count_over_time" => (|w| Ok(Some(w.vs.len() as f64)), 0, false),
        "min_over_time" => (|w| Ok(Some(min_max(w.vs, false).1)), 0, false),
        "max_over_time" => (|w| Ok(Some(min_max(w.vs, true).1)), 0, false),
        "ts_of_min_over_time" => (
            |w| Ok(Some(w.ts[min_max(w.vs, false).0] as f64 / 1000.0)),
            0,
            false,
        ),
        "ts_of_max_over_time" => (
            |w| Ok(Some(w.ts[min_max(w.vs, true).0] as f64 / 1000.0)),
            0,
            false,
        ),
        "last_over_time" => (|w| Ok(w.vs.last().copied()), 0, true),
        "first_over_time" => (|w| Ok(w.vs.first().copied()), 0, true),
        "ts_of_last_over_time" => (|w| Ok(w.ts.last().map(|&t| t as f64 / 1000.0)), 0, false),
        "ts_of_first_over_time" => (|w| Ok(w.ts.first().map(|&t| t as f64 / 1000.0)), 0, false),
        "present_over_time" => (|_| Ok(Some(1.0)), 0, false),
        "stddev_over_time" => (|w| Ok(Some(variance(w.vs).sqrt())), 0, false),
        "stdvar_over_time" => (|w| Ok(Some(variance(w.vs))), 0, false),
        "mad_over_time" => (|w| Ok(Some(mad(w.vs))), 0, false),
        "quantile_over_time" => (
            |w| {
                let mut v = w.vs.to_vec();
                Ok(Some(quantile(w.args[0], &mut v)))
            },
            1,
            false,
        ),
        "changes" => (|w| Ok(extended(w).map(|v| changes(&v))), 0, false),
        "resets" => (|w| Ok(extended(w).map(|v| resets(&v))), 0, false),
        "deriv" => (
            |w| {
                if w.ts.len() < 2 {
                    return Ok(None);
                }
                Ok(Some(linear_regression(w.ts, w.vs, w.ts[0]).0))
            },
            0,
            false,
        ),
        "predict_linear" => (
            |w| {
                if w.ts.len() < 2 {
                    return Ok(None);
                }
                let (slope, intercept) = linear_regression(w.ts, w.vs, w.eval_t);
                Ok(Some(slope * w.args[0] + intercept))
            },
            0,
            false,
        ),
        "double_exponential_smoothing" | "holt_winters" => (smoothing, 0, false),
        "absent_over_time" => return absent_over_time(ev, args, steps).map(Some),
        _ => return Ok(None),
    };
    let Some(m_expr) = args.get(matrix_at) else {
        return Ok(None);
    };
    let mut scalars = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i != matrix_at {
            scalars.push(scalar_arg(ev, a, steps)?);
        }
    }
    let needed = match name {
        "quantile_over_time" | "predict_linear" => 1,
        "double_exponential_smoothing" | "holt_winters" => 2,
        _ => 0,
    };
    if scalars.len() < needed {
        return Err(QueryError::BadData(format!(
            "expected {needed} scalar argument(s) in call to function \"{name}\""
        )));
    }
    if name == "quantile_over_time" {
        if let Some(q) = scalars[0]
            .iter()
            .find(|q| q.is_nan() || **q < 0.0 || **q > 1.0)
        {
            ev.warn(
                format!(
                    "quantile value should be between 0 and 1, got {}",
                    go_float(*q)
                ),
                name,
            );
        }
    }
    let m = matrix_arg(ev, m_expr, steps)?;
    Ok(Some(Val::Vector(apply_range(
        ev, &m, steps, &scalars, keep_name, kernel,
    )?)))
}

/// Index and value of the minimum (or maximum); a NaN is replaced by any number.
fn min_max(vs: &[f64], max: bool) -> (usize, f64) {
    let mut best = (0, vs[0]);
    for (i, &v) in vs.iter().enumerate() {
        let better = if max { v > best.1 } else { v < best.1 };
        if better || (best.1.is_nan() && !v.is_nan()) {
            best = (i, v);
        }
    }
    best
}

fn mad(vs: &[f64]) -> f64 {
    // A NaN sample makes the result NaN rather than being ranked.
    if vs.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let mut v = vs.to_vec();
    let median = quantile(0.5, &mut v);
    let mut dev: Vec<f64> = vs.iter().map(|x| (x - median).abs()).collect();
    quantile(0.5, &mut dev)
}

/// The window's values; with `anchored`, the anchor value at the window start comes
/// first (Prometheus `extendFloats`). `None` when no sample is inside the window.
fn extended(w: &Window<'_>) -> Option<Vec<f64>> {
    use crate::promql::durations::RangeMode;
    if w.mode == RangeMode::Plain {
        return Some(w.vs.to_vec());
    }
    let (ts, vs) = (w.ts, w.vs);
    let n = ts.len();
    if n == 0 {
        return None;
    }
    let last = n - 1;
    let first = ts[..last]
        .partition_point(|&t| t <= w.start)
        .saturating_sub(1);
    if ts[last] <= w.start {
        return None;
    }
    let mut out = Vec::with_capacity(n - first + 1);
    out.push(vs[first]);
    let inner_first = if ts[first] <= w.start {
        first + 1
    } else {
        first
    };
    out.extend_from_slice(&vs[inner_first..=last]);
    Some(out)
}

fn changes(vs: &[f64]) -> f64 {
    let mut n = 0;
    for w in vs.windows(2) {
        if w[1] != w[0] && !(w[1].is_nan() && w[0].is_nan()) {
            n += 1;
        }
    }
    n as f64
}

fn resets(vs: &[f64]) -> f64 {
    vs.windows(2).filter(|w| w[1] < w[0]).count() as f64
}

/// Holt's linear (double exponential) smoothing; Prometheus
/// `double_exponential_smoothing` (formerly `holt_winters`).
fn smoothing(w: &Window<'_>) -> Result<Option<f64>> {
    let (sf, tf) = (w.args[0], w.args[1]);
    if sf <= 0.0 || sf >= 1.0 || sf.is_nan() {
        return Err(QueryError::Execution(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
        )));
    }
    if tf <= 0.0 || tf >= 1.0 || tf.is_nan() {
        return Err(QueryError::Execution(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
        )));
    }
    let v = w.vs;
    if v.len() < 2 {
        return Ok(None);
    }
    let (mut s0, mut s1) = (0.0, v[0]);
    let mut b = v[1] - v[0];
    for (i, &x) in v.iter().enumerate().skip(1) {
        let scaled = sf * x;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let next = scaled + (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = next;
    }
    Ok(Some(s1))
}

/// `absent_over_time(sel[r])`: 1 at steps where no series has a sample in the
/// window, labelled by the selector's equality matchers.
fn absent_over_time(ev: &mut Evaluator<'_>, args: &[&Expr], steps: Steps) -> Result<Val> {
    let Some(arg) = args.first() else {
        return Err(QueryError::BadData(
            "absent_over_time needs an argument".into(),
        ));
    };
    let m = matrix_arg(ev, arg, steps)?;
    let mut vals = vec![Some(1.0); steps.n];
    for s in &m.series {
        for (i, slot) in vals.iter_mut().enumerate() {
            let end = m.ends[i];
            let start = end - m.range;
            let lo = s.ts.partition_point(|&t| t <= start);
            let hi = s.ts.partition_point(|&t| t <= end);
            if hi > lo {
                *slot = None;
            }
        }
    }
    let labels = match &m.selector {
        Some(vs) => super::labels::absent_labels(vs),
        None => Default::default(),
    };
    if vals.iter().all(Option::is_none) {
        return Ok(Val::Vector(vec![]));
    }
    Ok(Val::Vector(vec![VSeries {
        labels,
        drop_name: false,
        vals,
    }]))
}
