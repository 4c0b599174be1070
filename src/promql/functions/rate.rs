//! `rate`, `increase`, `delta` (Prometheus's extrapolated rate) and `irate`, `idelta`
//! (the last two samples).

use promql_parser::parser::Expr;

use super::{apply_range, matrix_arg, Window};
use crate::promql::durations::RangeMode;
use crate::promql::eval::{Evaluator, Steps, Val};
use crate::promql::Result;

pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Option<Val>> {
    let kernel: super::RangeKernel = match name {
        "rate" => |w| Ok(extrapolated_rate(w, true, true)),
        "increase" => |w| Ok(extrapolated_rate(w, true, false)),
        "delta" => |w| Ok(extrapolated_rate(w, false, false)),
        "irate" => |w| Ok(instant_delta(w.ts, w.vs, true)),
        "idelta" => |w| Ok(instant_delta(w.ts, w.vs, false)),
        _ => return Ok(None),
    };
    let Some(arg) = args.first() else {
        return Ok(None);
    };
    let m = matrix_arg(ev, arg, steps)?;
    if matches!(name, "rate" | "increase") {
        // Prometheus's hint for a counter function over a name that does not look
        // like a counter.
        let arg_text = arg.to_string();
        for s in &m.series {
            let Some(metric) = s.labels.get(crate::storage::METRIC_NAME) else {
                continue;
            };
            if !["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|suffix| metric.ends_with(suffix))
            {
                ev.info_arg(
                    format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"{metric}\""),
                    name,
                    &arg_text,
                );
            }
        }
    }
    let out = apply_range(ev, &m, steps, &[], false, kernel)?;
    Ok(Some(Val::Vector(out)))
}

/// Prometheus `extrapolatedRate`: the increase between the first and last sample in
/// the window (counter resets added back for counters), extrapolated towards the
/// window edges by at most half an average sample interval, and — for counters — not
/// below zero at the start. Divided by the range in seconds for a rate.
pub(crate) fn extrapolated_rate(w: &Window<'_>, is_counter: bool, is_rate: bool) -> Option<f64> {
    if w.mode != RangeMode::Plain {
        return extended_rate(w, is_counter, is_rate);
    }
    let (ts, vs) = (w.ts, w.vs);
    if ts.len() < 2 {
        return None;
    }
    let n = ts.len();
    let (first_t, last_t) = (ts[0], ts[n - 1]);
    let mut result = vs[n - 1] - vs[0];
    if is_counter {
        // Each reset adds back the value before it, in order, as a scan would.
        for &j in w.drops {
            result += vs[(j - w.first) as usize - 1];
        }
    }
    let range_start = w.start;
    let range_end = w.end;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled_interval / (n - 1) as f64;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last_t) as f64 / 1000.0;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if is_counter && result > 0.0 && vs[0] >= 0.0 {
        // A counter cannot have been below zero: do not extrapolate past the point
        // where it would have been zero.
        let to_zero = sampled_interval * (vs[0] / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled_interval + to_start + to_end) / sampled_interval;
    if is_rate {
        factor /= w.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Prometheus `extendedRate`: `rate`/`increase`/`delta` over an `anchored` or
/// `smoothed` window. The value at the window start is the last sample at or before it
/// (anchored) or the value interpolated there (smoothed); likewise at the end for
/// smoothed. No extrapolation; counter resets inside are added back.
fn extended_rate(w: &Window<'_>, is_counter: bool, is_rate: bool) -> Option<f64> {
    let (ts, vs) = (w.ts, w.vs);
    let (start, end) = (w.start, w.end);
    let smoothed = w.mode == RangeMode::Smoothed;
    let n = ts.len();
    if n == 0 {
        return None;
    }
    let mut last = n - 1;
    let mut first = ts[..last]
        .partition_point(|&t| t <= start)
        .saturating_sub(1);
    if smoothed {
        last = ts[..last].partition_point(|&t| t < end);
    }
    // Nothing when the data lies only before or only after the window.
    if ts[last] <= start || ts[first] > end {
        return None;
    }
    let left = edge_left(ts, vs, first, start, smoothed, is_counter);
    let right = edge_right(ts, vs, last, end, smoothed, is_counter);
    let mut result = right - left;
    if is_counter {
        // Resets at the edges are handled by the interpolation; count the ones
        // between samples strictly inside the window.
        if ts[first] <= start {
            first += 1;
        }
        let mut hi = last as isize;
        if ts[last] >= end {
            hi -= 1;
        }
        let inside: &[f64] = if hi >= first as isize {
            &vs[first..=hi as usize]
        } else {
            &[]
        };
        result += counter_reset_correction(left, right, inside);
    }
    if is_rate {
        result /= w.range as f64 / 1000.0;
    }
    Some(result)
}

/// The value at the window start: the first sample, or with `smoothed` and a sample
/// before the start, the interpolation between it and the next.
pub(crate) fn edge_left(
    ts: &[i64],
    vs: &[f64],
    first: usize,
    start: i64,
    smoothed: bool,
    is_counter: bool,
) -> f64 {
    if smoothed && ts[first] < start && first + 1 < ts.len() {
        return interpolate(
            (ts[first], vs[first]),
            (ts[first + 1], vs[first + 1]),
            start,
            is_counter,
        );
    }
    vs[first]
}

/// The value at the window end: the last sample, or with `smoothed` and a sample after
/// the end, the interpolation between it and the one before.
pub(crate) fn edge_right(
    ts: &[i64],
    vs: &[f64],
    last: usize,
    end: i64,
    smoothed: bool,
    is_counter: bool,
) -> f64 {
    if smoothed && last > 0 && ts[last] > end {
        return interpolate(
            (ts[last - 1], vs[last - 1]),
            (ts[last], vs[last]),
            end,
            is_counter,
        );
    }
    vs[last]
}

/// Linear interpolation at `t`. For a counter that reset between the points, the
/// counter is taken to have restarted from 0 at the first point (the corpus's
/// Prometheus models both edges this way).
pub(crate) fn interpolate(p1: (i64, f64), p2: (i64, f64), t: i64, is_counter: bool) -> f64 {
    let (mut y1, y2) = (p1.1, p2.1);
    if is_counter && y2 < y1 {
        y1 = 0.0;
    }
    y1 + (y2 - y1) * (t - p1.0) as f64 / (p2.0 - p1.0) as f64
}

/// What counter resets between `left`, the samples and `right` add back.
fn counter_reset_correction(left: f64, right: f64, inside: &[f64]) -> f64 {
    let mut correction = 0.0;
    let mut prev = left;
    for &v in inside {
        if v < prev {
            correction += prev;
        }
        prev = v;
    }
    if right < prev {
        correction += prev;
    }
    correction
}

/// Prometheus `instantValue`: the difference of the last two samples (for `irate`, a
/// drop counts as a reset, and the result is per second).
pub(crate) fn instant_delta(ts: &[i64], vs: &[f64], is_rate: bool) -> Option<f64> {
    let n = ts.len();
    if n < 2 {
        return None;
    }
    let (lt, lv) = (ts[n - 1], vs[n - 1]);
    let (pt, pv) = (ts[n - 2], vs[n - 2]);
    let mut result = if is_rate && lv < pv { lv } else { lv - pv };
    let interval = lt - pt;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's drop positions, leaked: tests build few windows.
    fn drops_of(vs: &[f64]) -> &'static [u32] {
        let mut out = Vec::new();
        super::super::drop_positions(vs, &mut out);
        Box::leak(out.into_boxed_slice())
    }

    fn window<'a>(ts: &'a [i64], vs: &'a [f64], end: i64, range: i64) -> Window<'a> {
        Window {
            ts,
            vs,
            start: end - range,
            end,
            range,
            eval_t: end,
            args: &[],
            mode: RangeMode::Plain,
            drops: drops_of(vs),
            first: 0,
        }
    }

    #[test]
    fn rate_extrapolates_to_window_edges() {
        // Samples every 60s from 60s to 240s in a (0, 300s] window: each edge is one
        // interval away, within the 1.1-interval threshold, so the increase is
        // extrapolated all the way to both edges: 30 * 300 / 180.
        let ts = [60_000, 120_000, 180_000, 240_000];
        let vs = [10.0, 20.0, 30.0, 40.0];
        let w = window(&ts, &vs, 300_000, 300_000);
        let inc = extrapolated_rate(&w, true, false).unwrap();
        assert!((inc - 50.0).abs() < 1e-9, "{inc}");
        let rate = extrapolated_rate(&w, true, true).unwrap();
        assert!((rate - 50.0 / 300.0).abs() < 1e-12);
        // Samples at 150s..240s every 30s: the 150s gap at the start exceeds the
        // threshold, so only half an interval (15s) is added there.
        let ts = [150_000, 180_000, 210_000, 240_000];
        let vs = [10.0, 20.0, 30.0, 40.0];
        let w = window(&ts, &vs, 300_000, 300_000);
        let inc = extrapolated_rate(&w, false, false).unwrap();
        assert!(
            (inc - 30.0 * (90.0 + 15.0 + 15.0) / 90.0).abs() < 1e-9,
            "{inc}"
        );
    }

    #[test]
    fn rate_counter_reset_adds_previous_value() {
        let ts = [0, 60_000, 120_000];
        let vs = [10.0, 20.0, 5.0];
        let w = window(&ts, &vs, 120_000, 120_000);
        // 5 - 10, plus 20 added back at the reset = 15; the first sample sits on the
        // window's start, so nothing is extrapolated at either edge.
        let inc = extrapolated_rate(&w, true, false).unwrap();
        assert!((inc - 15.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn irate_needs_two_samples() {
        assert_eq!(instant_delta(&[0], &[1.0], true), None);
        assert_eq!(instant_delta(&[0, 10_000], &[1.0, 11.0], true), Some(1.0));
        assert_eq!(instant_delta(&[0, 10_000], &[5.0, 2.0], true), Some(0.2));
    }
}
