//! `histogram_quantile` and `histogram_fraction` over classic histograms: series with
//! an `le` bucket label, grouped by their other labels. Native histograms are not
//! stored, so the native-only functions (`histogram_count`, `histogram_sum`, ...) see
//! only floats, which they ignore, and return nothing.

use std::collections::HashMap;

use promql_parser::parser::Expr;

use super::math::nth;
use super::{scalar_arg, vector_arg};
use crate::promql::aggregate::go_float;
use crate::promql::eval::{drop_name, Evaluator, Steps, VSeries, Val};
use crate::promql::Result;
use crate::storage::{LabelSet, METRIC_NAME};

const BUCKET_LABEL: &str = "le";

pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Option<Val>> {
    match name {
        "histogram_quantile" => {
            let q = scalar_arg(ev, nth(args, 0)?, steps)?;
            if let Some(x) = q.iter().find(|x| x.is_nan() || **x < 0.0 || **x > 1.0) {
                ev.warn(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        go_float(*x)
                    ),
                    name,
                );
            }
            let arg = nth(args, 1)?;
            let v = vector_arg(ev, arg, steps)?;
            let out = by_buckets(ev, name, arg, v, steps, |i, b| bucket_quantile(q[i], b))?;
            Ok(Some(Val::Vector(out)))
        }
        "histogram_quantiles" => {
            let arg = nth(args, 0)?;
            let v = vector_arg(ev, arg, steps)?;
            let label = super::string_arg(ev, nth(args, 1)?, steps)?;
            let mut qs = Vec::new();
            for a in args.iter().skip(2) {
                let q = scalar_arg(ev, a, steps)?;
                if let Some(x) = q.iter().find(|x| x.is_nan() || **x < 0.0 || **x > 1.0) {
                    ev.warn(
                        format!(
                            "quantile value should be between 0 and 1, got {}",
                            go_float(*x)
                        ),
                        name,
                    );
                }
                qs.push(q);
            }
            let mut out = Vec::new();
            for q in &qs {
                let part = by_buckets(ev, name, arg, v.clone(), steps, |i, b| {
                    bucket_quantile(q[i], b)
                })?;
                let text = quantile_label(q.first().copied().unwrap_or(f64::NAN));
                for mut s in part {
                    s.labels = crate::promql::eval::set_label(&s.labels, &label, Some(&text));
                    out.push(s);
                }
            }
            Ok(Some(Val::Vector(out)))
        }
        "histogram_fraction" => {
            let lo = scalar_arg(ev, nth(args, 0)?, steps)?;
            let hi = scalar_arg(ev, nth(args, 1)?, steps)?;
            let arg = nth(args, 2)?;
            let v = vector_arg(ev, arg, steps)?;
            let out = by_buckets(ev, name, arg, v, steps, |i, b| {
                (bucket_fraction(lo[i], hi[i], b), false)
            })?;
            Ok(Some(Val::Vector(out)))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Evaluate the argument for its errors; floats yield no output.
            let _ = vector_arg(ev, nth(args, 0)?, steps)?;
            Ok(Some(Val::Vector(vec![])))
        }
        _ => Ok(None),
    }
}

/// Groups bucket series by their labels without `le` and applies `f` to each group's
/// buckets at each step. `f` returns the value and whether monotonicity was forced.
fn by_buckets(
    ev: &mut Evaluator<'_>,
    func: &str,
    arg: &Expr,
    input: Vec<VSeries>,
    steps: Steps,
    f: impl Fn(usize, &mut Vec<(f64, f64)>) -> (f64, bool),
) -> Result<Vec<VSeries>> {
    let arg_text = arg.to_string();
    let mut groups: Vec<(LabelSet, Vec<(f64, usize)>)> = Vec::new();
    let mut index: HashMap<LabelSet, usize> = HashMap::new();
    for (i, s) in input.iter().enumerate() {
        // Grouped by all labels but `le`, the name included even when it is to be
        // dropped (Prometheus groups before delayed name removal); the output has no
        // name, so histograms of two metrics with equal labels collide.
        let labels = s.labels.clone();
        let le = labels.get(BUCKET_LABEL).unwrap_or("");
        let Some(upper) = parse_le(le) else {
            let metric = labels.get(METRIC_NAME).unwrap_or("").to_string();
            let msg = format!(
                "bucket label \"le\" is missing or has a malformed value of \"{le}\" for metric name \"{metric}\""
            );
            ev.warn_arg(msg, func, &arg_text);
            continue;
        };
        let key = crate::promql::eval::set_label(&labels, BUCKET_LABEL, None);
        match index.get(&key) {
            Some(&g) => groups[g].1.push((upper, i)),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![(upper, i)]));
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut buf = Vec::new();
    for (labels, members) in groups {
        let mut vals = vec![None; steps.n];
        let mut forced_any = false;
        for (i, slot) in vals.iter_mut().enumerate() {
            buf.clear();
            buf.extend(
                members
                    .iter()
                    .filter_map(|&(ub, m)| input[m].vals[i].map(|c| (ub, c))),
            );
            if buf.is_empty() {
                continue;
            }
            let (v, forced) = f(i, &mut buf);
            forced_any |= forced;
            *slot = Some(v);
        }
        if forced_any {
            let metric = labels.get(METRIC_NAME).unwrap_or("").to_string();
            ev.info_arg(
                format!("input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"{metric}\""),
                func,
                &arg_text,
            );
        }
        if vals.iter().any(Option::is_some) {
            out.push(VSeries {
                labels: drop_name(&labels),
                drop_name: false,
                vals,
            });
        }
    }
    // The name is gone, so two metrics' histograms may now collide.
    Ok(out)
}

/// The label value for a quantile in `histogram_quantiles`: always with a decimal
/// point (`0.0`, `1.0`, `0.25`), as Prometheus writes it.
fn quantile_label(q: f64) -> String {
    let s = crate::promql::value::format_value(q);
    if s.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
        format!("{s}.0")
    } else {
        s
    }
}

/// Parses an `le` value as Go's `strconv.ParseFloat` would (`+Inf`, `Inf`, `1e3`).
fn parse_le(s: &str) -> Option<f64> {
    let v = match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        "nan" => f64::NAN,
        _ => {
            if s.is_empty() || s.contains(|c: char| c.is_alphabetic() && c != 'e' && c != 'E') {
                return None;
            }
            s.parse().ok()?
        }
    };
    Some(v)
}

fn sort_and_coalesce(b: &mut Vec<(f64, f64)>) {
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(ub, c) in b.iter() {
        match out.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => out.push((ub, c)),
        }
    }
    *b = out;
}

/// Prometheus `bucketQuantile` over cumulative classic buckets `(upper bound, count)`:
/// linear interpolation within the bucket holding the rank, a natural lower bound of
/// 0, and the second-highest bound when the rank falls into the +Inf bucket. Also
/// returns whether bucket counts had to be forced monotonic.
pub(crate) fn bucket_quantile(q: f64, b: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    sort_and_coalesce(b);
    match b.last() {
        Some(&(ub, _)) if ub == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    // Float precision errors first (relative tolerance 1e-12), then the envelope.
    let mut prev = b[0].1;
    for x in b.iter_mut().skip(1) {
        let delta = (x.1 - prev).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / x.1 <= 1e-12 {
            x.1 = prev;
        } else {
            prev = x.1;
        }
    }
    let mut forced = false;
    let mut max = b[0].1;
    for x in b.iter_mut().skip(1) {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
            forced = true;
        }
    }
    if b.len() < 2 {
        return (f64::NAN, false);
    }
    let observations = b[b.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, false);
    }
    let mut rank = q * observations;
    let n = b.len();
    let idx = b[..n - 1].partition_point(|x| x.1 < rank);
    if idx == n - 1 {
        return (b[n - 2].0, forced);
    }
    if idx == 0 && b[0].0 <= 0.0 {
        return (b[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, b[idx].0, b[idx].1);
    if idx > 0 {
        start = b[idx - 1].0;
        count -= b[idx - 1].1;
        rank -= b[idx - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// The fraction of observations between `lower` and `upper` in cumulative classic
/// buckets, interpolating linearly inside buckets (the classic-bucket counterpart of
/// Prometheus `histogramFraction`, with the same natural lower bound of 0).
pub(crate) fn bucket_fraction(lower: f64, upper: f64, b: &mut Vec<(f64, f64)>) -> f64 {
    sort_and_coalesce(b);
    match b.last() {
        Some(&(ub, _)) if ub == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    let count = b[b.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, &(ub, c)) in b.iter().enumerate() {
        let lb = if i > 0 {
            b[i - 1].0
        } else if ub > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        // A bucket of infinite width is not interpolated: its observations sit at
        // its infinite edge (all below a point in (-Inf, ub], all above one in
        // (lb, +Inf]).
        let interpolate = |v: f64| {
            if lb.is_infinite() {
                c
            } else if ub.is_infinite() {
                rank
            } else {
                rank + (c - rank) * (v - lb) / (ub - lb)
            }
        };
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = c;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_within_bucket() {
        let mut b = vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.5, &mut b).0, 1.0);
        let mut b = vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.75, &mut b).0, 1.5);
    }

    #[test]
    fn quantile_without_inf_bucket_is_nan() {
        let mut b = vec![(1.0, 10.0), (2.0, 20.0)];
        assert!(bucket_quantile(0.5, &mut b).0.is_nan());
    }

    #[test]
    fn non_monotonic_buckets_are_forced() {
        let mut b = vec![(1.0, 10.0), (2.0, 5.0), (f64::INFINITY, 20.0)];
        assert!(bucket_quantile(0.5, &mut b).1);
    }
}
