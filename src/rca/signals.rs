//! From a component's raw series to **signals** and their **changes**: the numbers
//! the ranking reads.
//!
//! A signal is one metric of one component on a fixed time grid, combined across
//! the component's pods and instances: series with the same name and the same
//! labels once `instance`, `pod`, `uid`, IPs and the like are dropped are one signal
//! (a rolling deploy replaces pods without breaking it). Counters (`_total`,
//! `_count`, `_sum`) become per-second rates and are summed across instances;
//! gauges are averaged; each `X_sum` / `X_count` pair also gives the mean
//! `rate(X_sum) / rate(X_count)` (the mean latency of a histogram or summary).
//!
//! A change is measured against the signal's own history with robust statistics:
//! the baseline (before the analysis window) gives the median and the MAD; each
//! point of the window gets a robust z-score `(x − median) / (1.4826·MAD)`; the
//! **onset** is the first point starting a run where at least 3 of 4 points are
//! beyond `theta` on the same side *and* the median of the 8 points from there is
//! too, and the **score** is that median's robust z (capped). So a lone spike is not
//! an onset, and a sustained shift is scored by its size, not by its worst point.
//! A signal whose series stop reporting inside the window *vanished* (a crashed
//! target); one with no history that starts reporting *appeared* (a new error
//! series); both get fixed scores.
//!
//! Must never: let NaN, ±Inf or staleness markers reach a median; allocate per grid
//! point beyond the signal's own vectors.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::storage::{is_stale_marker, LabelSet, METRIC_NAME};

/// Labels that tell instances of one component apart; dropped when grouping.
const INSTANCE_LABELS: [&str; 12] = [
    "instance",
    "pod",
    "pod_name",
    "uid",
    "container_id",
    "id",
    "pod_ip",
    "host_ip",
    "node",
    "pod_template_hash",
    "replicaset",
    "endpoint",
];

/// Whether a metric is metadata, the loop's own output, or too fine-grained to be a
/// health signal. Metadata (`_info`, `_owner`, `_labels`, generations, creation
/// times) is read as change events instead.
pub fn is_excluded(name: &str) -> bool {
    const SUFFIXES: [&str; 9] = [
        "_info",
        "_owner",
        "_labels",
        "_annotations",
        "_created",
        "_generation",
        "_bucket",
        "_start_time_seconds",
        "_timestamp_seconds",
    ];
    name.starts_with("anomaly_")
        || name.starts_with("ALERTS")
        || name.starts_with("scrape_")
        || name.starts_with("traces_service_graph_")
        || name.starts_with("closed_loop_")
        || name.starts_with("closedloop_")
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a counter counts events (requests, errors, restarts) rather than
/// amounts (seconds, bytes), by the Prometheus unit-suffix conventions.
fn counts_events(signal: &str) -> bool {
    let name = signal
        .trim_start_matches("rate(")
        .split(['{', ')'])
        .next()
        .unwrap_or("");
    !(name.ends_with("_sum") || name.ends_with("_seconds_total") || name.ends_with("_bytes_total"))
}

/// Counters by the Prometheus naming conventions.
pub fn is_counter(name: &str) -> bool {
    name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_sum")
}

/// The aligned time grid of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Time of point 0 (ms).
    pub start_ms: i64,
    pub step_ms: i64,
    /// Number of points.
    pub len: usize,
    /// Index of the first point of the analysis window (points before are baseline).
    pub split: usize,
}

impl Grid {
    /// A grid from `start` to `end` (inclusive) with the window starting at `split_ms`.
    pub fn new(start_ms: i64, split_ms: i64, end_ms: i64, step_ms: i64) -> Self {
        let step_ms = step_ms.max(1);
        let start_ms = start_ms.div_euclid(step_ms) * step_ms;
        let len = ((end_ms - start_ms).max(0) / step_ms) as usize + 1;
        let split = (((split_ms - start_ms).max(0) + step_ms - 1) / step_ms) as usize;
        Grid {
            start_ms,
            step_ms,
            len,
            split: split.min(len),
        }
    }

    pub fn t(&self, i: usize) -> i64 {
        self.start_ms + i as i64 * self.step_ms
    }

    pub fn end_ms(&self) -> i64 {
        self.t(self.len.saturating_sub(1))
    }
}

/// One series' samples.
#[derive(Debug, Clone)]
pub struct SeriesData {
    pub labels: LabelSet,
    pub ts: Vec<i64>,
    pub vs: Vec<f64>,
}

/// How a signal was derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// A gauge, averaged across instances.
    Gauge,
    /// A counter's per-second rate, summed across instances.
    Rate,
    /// `rate(X_sum) / rate(X_count)`.
    Mean,
}

/// One signal on the grid (`NaN` where there is no data).
#[derive(Debug, Clone)]
pub struct Signal {
    /// A PromQL-like description: `rate(http_requests_total{code="500"})`.
    pub name: String,
    pub kind: SignalKind,
    pub values: Vec<f64>,
}

/// What a signal did in the analysis window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    /// Its series stopped reporting.
    Vanished,
    /// It had no history and started reporting.
    Appeared,
}

/// A signal's change against its own history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The signal (PromQL-like).
    pub signal: String,
    pub direction: Direction,
    /// Robust z-score of the sustained change (capped), or the fixed score of a
    /// vanished / appeared signal; below `theta` when there was no onset.
    pub score: f64,
    /// When the change started (ms), if it did.
    #[serde(rename = "onset", serialize_with = "ser_opt_secs")]
    pub onset_ms: Option<i64>,
    /// The baseline median.
    pub baseline: f64,
    /// The level after the onset (median of the following points), or the last value.
    pub level: f64,
    /// Whether the signal is back near its baseline at the end of the window (a
    /// transient that is over).
    pub recovered: bool,
}

fn ser_opt_secs<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(ms) => s.serialize_f64(*ms as f64 / 1000.0),
        None => s.serialize_none(),
    }
}

/// Thresholds of change detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeParams {
    /// |robust z| beyond which a point is abnormal.
    pub theta: f64,
    /// Scores are capped here.
    pub cap: f64,
    /// The MAD is floored at this fraction of |median| (flat series).
    pub rel_floor: f64,
    /// Score of a signal whose series vanished.
    pub vanished_score: f64,
    /// Score of a signal that appeared.
    pub appeared_score: f64,
}

impl Default for ChangeParams {
    fn default() -> Self {
        ChangeParams {
            theta: 4.0,
            cap: 50.0,
            rel_floor: 0.01,
            vanished_score: 8.0,
            appeared_score: 6.0,
        }
    }
}

/// Points needed in the baseline.
const MIN_BASELINE: usize = 8;
/// An onset needs `PERSIST` of `RUN` points beyond theta.
const RUN: usize = 4;
const PERSIST: usize = 3;
/// Points whose median is the level after an onset.
const LEVEL: usize = 8;
/// Trailing points without data that make a signal vanished.
const GONE: usize = 4;

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn finite(v: &[f64]) -> Vec<f64> {
    v.iter().copied().filter(|x| x.is_finite()).collect()
}

/// The series' values on the grid: last sample at or before each point within the
/// lookback (gauges), or the per-second rate between consecutive samples
/// (counters; a decrease is a reset).
fn on_grid(s: &SeriesData, grid: &Grid, counter: bool) -> Vec<f64> {
    // Points (t, v) cleaned of staleness markers and non-finite values.
    let mut pts: Vec<(i64, f64)> = Vec::with_capacity(s.ts.len());
    let mut prev: Option<(i64, f64)> = None;
    // The typical sample interval: the mean gap between consecutive samples.
    let (mut gap_sum, mut gaps) = (0i64, 0i64);
    for (&t, &v) in s.ts.iter().zip(&s.vs) {
        if is_stale_marker(v) || !v.is_finite() {
            prev = None;
            continue;
        }
        if let Some((pt, _)) = prev {
            gap_sum += t - pt;
            gaps += 1;
        }
        if counter {
            if let Some((pt, pv)) = prev {
                let dt = (t - pt) as f64 / 1000.0;
                if dt > 0.0 {
                    let inc = if v >= pv { v - pv } else { v };
                    pts.push((t, inc / dt));
                }
            }
        } else {
            pts.push((t, v));
        }
        prev = Some((t, v));
    }
    let interval = if gaps == 0 {
        grid.step_ms
    } else {
        gap_sum / gaps
    };
    let lookback = (2 * grid.step_ms).max(interval + interval / 2);
    let mut out = vec![f64::NAN; grid.len];
    let mut k = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        let g = grid.t(i);
        while k < pts.len() && pts[k].0 <= g {
            k += 1;
        }
        if k > 0 && pts[k - 1].0 > g - lookback {
            *slot = pts[k - 1].1;
        }
    }
    out
}

/// A signal's grouping key: the metric name and labels without instance labels.
fn group_key(labels: &LabelSet) -> (String, Vec<(String, String)>) {
    let name = labels.metric_name().unwrap_or("").to_string();
    let rest = labels
        .iter()
        .filter(|l| l.name.as_ref() != METRIC_NAME && !INSTANCE_LABELS.contains(&l.name.as_ref()))
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect();
    (name, rest)
}

fn describe(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The signals of a component's series, at most `max_signals` (the rest dropped in
/// name order).
pub fn extract(series: &[SeriesData], grid: &Grid, max_signals: usize) -> Vec<Signal> {
    struct Acc {
        counter: bool,
        sum: Vec<f64>,
        n: Vec<u32>,
    }
    let mut groups: BTreeMap<(String, Vec<(String, String)>), Acc> = BTreeMap::new();
    for s in series {
        let (name, rest) = group_key(&s.labels);
        if name.is_empty() || is_excluded(&name) {
            continue;
        }
        let counter = is_counter(&name);
        let vals = on_grid(s, grid, counter);
        let acc = groups.entry((name, rest)).or_insert_with(|| Acc {
            counter,
            sum: vec![0.0; grid.len],
            n: vec![0; grid.len],
        });
        for (i, v) in vals.iter().enumerate() {
            if v.is_finite() {
                acc.sum[i] += v;
                acc.n[i] += 1;
            }
        }
    }
    let combine = |acc: &Acc| -> Vec<f64> {
        acc.sum
            .iter()
            .zip(&acc.n)
            .map(|(&s, &n)| match n {
                0 => f64::NAN,
                _ if acc.counter => s,
                _ => s / n as f64,
            })
            .collect()
    };
    let mut out = Vec::new();
    for ((name, labels), acc) in &groups {
        if out.len() >= max_signals {
            break;
        }
        if let Some(base) = name.strip_suffix("_sum") {
            // The mean from the matching `_count`; the `_sum` rate alone says little.
            let count_key = (format!("{base}_count"), labels.clone());
            if let Some(count) = groups.get(&count_key) {
                let (s, c) = (combine(acc), combine(count));
                let values = s
                    .iter()
                    .zip(&c)
                    .map(|(&s, &c)| if c > 0.0 { s / c } else { f64::NAN })
                    .collect();
                out.push(Signal {
                    name: format!(
                        "rate({}) / rate({})",
                        describe(name, labels),
                        describe(&count_key.0, labels)
                    ),
                    kind: SignalKind::Mean,
                    values,
                });
                continue;
            }
        }
        let (kind, text) = if acc.counter {
            (
                SignalKind::Rate,
                format!("rate({})", describe(name, labels)),
            )
        } else {
            (SignalKind::Gauge, describe(name, labels))
        };
        out.push(Signal {
            name: text,
            kind,
            values: combine(acc),
        });
    }
    out
}

/// The change of one signal in the grid's window, or `None` when it has no usable
/// history and did not appear, or vanished before the window.
pub fn change(signal: &Signal, grid: &Grid, p: &ChangeParams) -> Option<Change> {
    let x = &signal.values;
    let split = grid.split.min(x.len());
    let mut base = finite(&x[..split]);
    let test_finite = x[split..].iter().filter(|v| v.is_finite()).count();
    if base.len() < MIN_BASELINE {
        if base.is_empty() && test_finite >= RUN {
            let first = (split..x.len()).find(|&i| x[i].is_finite())?;
            let mut after = finite(&x[first..]);
            return Some(Change {
                signal: signal.name.clone(),
                direction: Direction::Appeared,
                score: p.appeared_score,
                onset_ms: Some(grid.t(first)),
                baseline: f64::NAN,
                level: median(&mut after),
                recovered: false,
            });
        }
        return None;
    }
    let scale = base.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let m = median(&mut base);
    let mut dev: Vec<f64> = base.iter().map(|v| (v - m).abs()).collect();
    let mad = median(&mut dev);
    let mut sigma = (1.4826 * mad)
        .max(p.rel_floor * m.abs())
        .max(1e-3 * scale)
        .max(1e-12);
    if signal.kind == SignalKind::Rate && counts_events(&signal.name) {
        // Counting noise: a rate of sporadic events (a few errors a minute) is
        // Poisson; one more or less per step is not a change.
        let dt = grid.step_ms as f64 / 1000.0;
        sigma = sigma.max((m.max(0.0) * dt + 1.0).sqrt() / dt);
    }
    let z = |v: f64| (v - m) / sigma;
    // Back near the baseline over the last RUN points?
    let tail: Vec<f64> = x[split..]
        .iter()
        .rev()
        .copied()
        .filter(|v| v.is_finite())
        .take(RUN)
        .collect();
    let recovered = {
        let mut t = tail.clone();
        !t.is_empty() && z(median(&mut t)).abs() < p.theta
    };
    // Vanished: no data for the last GONE points after reporting in the window.
    let last = (0..x.len()).rev().find(|&i| x[i].is_finite());
    let vanished = match last {
        Some(l) if l + GONE < x.len() && l + 1 >= split => Some(l + 1),
        Some(l) if l + GONE < x.len() => return None, // gone before the window
        _ => None,
    };
    let mut best: Option<Change> = None;
    let mut weak = 0.0f64;
    let mut i = split;
    while i < x.len() {
        let zi = z(x[i]);
        if !zi.is_finite() || zi.abs() < p.theta {
            i += 1;
            continue;
        }
        let sign = zi.signum();
        let run: Vec<f64> = x[i..x.len().min(i + RUN)]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let hits = run.iter().filter(|&&v| z(v) * sign >= p.theta).count();
        let enough = if run.len() >= RUN {
            hits >= PERSIST
        } else {
            run.len() >= 2 && hits == run.len()
        };
        let mut level_pts = finite(&x[i..x.len().min(i + LEVEL)]);
        let level = median(&mut level_pts);
        let score = z(level) * sign;
        weak = weak.max(score.min(p.cap));
        if enough && score >= p.theta {
            best = Some(Change {
                signal: signal.name.clone(),
                direction: if sign > 0.0 {
                    Direction::Up
                } else {
                    Direction::Down
                },
                score: score.min(p.cap),
                onset_ms: Some(grid.t(i)),
                baseline: m,
                level,
                recovered,
            });
            break;
        }
        i += 1;
    }
    if let Some(v) = vanished {
        let earlier = best
            .as_ref()
            .and_then(|b| b.onset_ms)
            .is_some_and(|t| t < grid.t(v));
        if !earlier {
            return Some(Change {
                signal: signal.name.clone(),
                direction: Direction::Vanished,
                score: p.vanished_score.max(best.as_ref().map_or(0.0, |b| b.score)),
                onset_ms: Some(grid.t(v)),
                baseline: m,
                level: f64::NAN,
                recovered: false,
            });
        }
    }
    if best.is_some() {
        return best;
    }
    // No onset: the largest sustained deviation, for the record; level = last value.
    let level = x[split..]
        .iter()
        .rev()
        .copied()
        .find(|v| v.is_finite())
        .unwrap_or(f64::NAN);
    Some(Change {
        signal: signal.name.clone(),
        direction: if z(level) >= 0.0 {
            Direction::Up
        } else {
            Direction::Down
        },
        score: weak.min(p.theta * 0.999),
        onset_ms: None,
        baseline: m,
        level,
        recovered,
    })
}

/// A component's evidence: its strongest changes and the onset they agree on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentChange {
    /// The largest change score among its signals.
    pub score: f64,
    /// Earliest onset among the signals scoring at least `max(theta, score / 2)`
    /// that are still changed (or among all of them, when every one is over).
    #[serde(rename = "onset", serialize_with = "ser_opt_secs")]
    pub onset_ms: Option<i64>,
    /// Signals read.
    pub signals: usize,
    /// Whether every strong change is over (the component is back to normal).
    pub recovered: bool,
    /// The strongest changes, best first.
    pub changes: Vec<Change>,
}

/// Summarises a component's changes, keeping the `keep` strongest.
pub fn summarize(
    mut changes: Vec<Change>,
    signals: usize,
    theta: f64,
    keep: usize,
) -> ComponentChange {
    changes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let score = changes.first().map_or(0.0, |c| c.score);
    let bar = theta.max(score / 2.0);
    let strong: Vec<&Change> = changes
        .iter()
        .filter(|c| c.score >= bar && c.onset_ms.is_some())
        .collect();
    // The onset of what is still going on: a burst that is over does not date an
    // ongoing change that started later.
    let ongoing = strong
        .iter()
        .filter(|c| !c.recovered)
        .filter_map(|c| c.onset_ms)
        .min();
    let onset_ms = ongoing.or_else(|| strong.iter().filter_map(|c| c.onset_ms).min());
    let recovered = !strong.is_empty() && strong.iter().all(|c| c.recovered);
    changes.truncate(keep);
    ComponentChange {
        score,
        onset_ms,
        signals,
        recovered,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 15_000;

    fn grid() -> Grid {
        // 40 baseline points, 40 window points.
        Grid::new(0, 40 * STEP, 79 * STEP, STEP)
    }

    fn series(labels: &[(&str, &str)], f: impl Fn(usize) -> Option<f64>) -> SeriesData {
        let mut s = SeriesData {
            labels: LabelSet::from_pairs(labels.iter().copied()),
            ts: Vec::new(),
            vs: Vec::new(),
        };
        for i in 0..80 {
            if let Some(v) = f(i) {
                s.ts.push(i as i64 * STEP);
                s.vs.push(v);
            }
        }
        s
    }

    fn noise(i: usize) -> f64 {
        // Deterministic jitter in [-1, 1].
        ((i * 7919 % 101) as f64 / 50.0) - 1.0
    }

    #[test]
    fn a_sustained_shift_has_its_onset_and_size() {
        let g = grid();
        let s = series(&[("__name__", "latency_seconds"), ("pod", "a")], |i| {
            Some(0.1 + 0.005 * noise(i) + if i >= 50 { 0.1 } else { 0.0 })
        });
        let sig = extract(&[s], &g, 10);
        assert_eq!(sig.len(), 1);
        let c = change(&sig[0], &g, &ChangeParams::default()).unwrap();
        assert_eq!(c.direction, Direction::Up);
        assert_eq!(c.onset_ms, Some(50 * STEP));
        assert!(c.score > 20.0, "{c:?}");
        assert!((c.level - 0.2).abs() < 0.01);
    }

    #[test]
    fn a_burst_that_ended_is_recovered() {
        let g = grid();
        let s = series(&[("__name__", "latency_seconds")], |i| {
            Some(0.1 + 0.005 * noise(i) + if (50..62).contains(&i) { 0.2 } else { 0.0 })
        });
        let c = change(&extract(&[s], &g, 10)[0], &g, &ChangeParams::default()).unwrap();
        assert_eq!(c.onset_ms, Some(50 * STEP));
        assert!(c.recovered, "{c:?}");
    }

    #[test]
    fn sporadic_errors_are_counting_noise_not_a_change() {
        let g = grid();
        // Zero errors in the baseline, then one or two every few scrapes.
        let s = series(&[("__name__", "errors_total")], |i| {
            Some(if i < 45 { 0.0 } else { ((i - 45) / 2) as f64 })
        });
        let c = change(&extract(&[s], &g, 10)[0], &g, &ChangeParams::default()).unwrap();
        assert_eq!(c.onset_ms, None, "{c:?}");
        // A real error burst still is one.
        let s = series(&[("__name__", "errors_total")], |i| {
            Some(if i < 45 { 0.0 } else { (i - 45) as f64 * 60.0 })
        });
        let c = change(&extract(&[s], &g, 10)[0], &g, &ChangeParams::default()).unwrap();
        assert!(c.onset_ms.is_some() && c.score > 20.0, "{c:?}");
    }

    #[test]
    fn a_lone_spike_is_not_an_onset() {
        let g = grid();
        let s = series(&[("__name__", "latency_seconds")], |i| {
            Some(0.1 + 0.005 * noise(i) + if i == 55 || i == 56 { 1.0 } else { 0.0 })
        });
        let c = change(&extract(&[s], &g, 10)[0], &g, &ChangeParams::default()).unwrap();
        assert_eq!(c.onset_ms, None);
        assert!(c.score < 4.0, "{c:?}");
    }

    #[test]
    fn counters_become_rates_summed_across_pods_and_survive_a_rollout() {
        let g = grid();
        // Two pods at 10/s each; pod b is replaced by pod c at point 30 (a deploy);
        // from point 60 pod a's rate doubles.
        let a = series(
            &[
                ("__name__", "requests_total"),
                ("pod", "a"),
                ("code", "200"),
            ],
            |i| {
                Some(if i < 60 {
                    150.0 * i as f64
                } else {
                    150.0 * 60.0 + 300.0 * (i - 60) as f64
                })
            },
        );
        let b = series(
            &[
                ("__name__", "requests_total"),
                ("pod", "b"),
                ("code", "200"),
            ],
            |i| (i < 30).then_some(150.0 * i as f64),
        );
        let c = series(
            &[
                ("__name__", "requests_total"),
                ("pod", "c"),
                ("code", "200"),
            ],
            |i| (i >= 30).then(|| 150.0 * (i - 30) as f64),
        );
        let sig = extract(&[a, b, c], &g, 10);
        assert_eq!(sig.len(), 1);
        assert_eq!(sig[0].name, "rate(requests_total{code=\"200\"})");
        assert_eq!(sig[0].kind, SignalKind::Rate);
        assert!(
            (sig[0].values[20] - 20.0).abs() < 1e-9,
            "{:?}",
            sig[0].values
        );
        let ch = change(&sig[0], &g, &ChangeParams::default()).unwrap();
        assert_eq!(ch.direction, Direction::Up);
        assert_eq!(ch.onset_ms, Some(61 * STEP));
        assert!((ch.level - 30.0).abs() < 1e-9);
    }

    #[test]
    fn sum_and_count_give_a_mean() {
        let g = grid();
        let sum = series(&[("__name__", "rpc_seconds_sum")], |i| {
            Some(if i < 50 {
                1.0 * i as f64
            } else {
                50.0 + 5.0 * (i - 50) as f64
            })
        });
        let count = series(&[("__name__", "rpc_seconds_count")], |i| {
            Some(10.0 * i as f64)
        });
        let sig = extract(&[sum, count], &g, 10);
        let names: Vec<&str> = sig.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "rate(rpc_seconds_count)",
                "rate(rpc_seconds_sum) / rate(rpc_seconds_count)"
            ]
        );
        let mean = &sig[1];
        assert!((mean.values[20] - 0.1).abs() < 1e-9);
        assert!((mean.values[70] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn vanished_and_appeared_series() {
        let g = grid();
        let p = ChangeParams::default();
        let gone = series(&[("__name__", "up")], |i| (i < 60).then_some(1.0));
        let c = change(&extract(&[gone], &g, 10)[0], &g, &p).unwrap();
        assert_eq!(c.direction, Direction::Vanished);
        // The last sample still counts for one lookback, so the gap shows a step later.
        assert_eq!(c.onset_ms, Some(61 * STEP));
        // Gone long before the window: not this incident's business.
        let old = series(&[("__name__", "up")], |i| (i < 20).then_some(1.0));
        assert!(change(&extract(&[old], &g, 10)[0], &g, &p).is_none());
        let new = series(&[("__name__", "errors_total")], |i| {
            (i >= 50).then(|| (i - 50) as f64 * 30.0)
        });
        let c = change(&extract(&[new], &g, 10)[0], &g, &p).unwrap();
        assert_eq!(c.direction, Direction::Appeared);
        assert_eq!(c.onset_ms, Some(51 * STEP));
    }

    #[test]
    fn staleness_markers_and_non_finite_values_are_ignored() {
        let g = grid();
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let s = series(&[("__name__", "x")], |i| {
            Some(match i % 9 {
                0 => stale,
                1 => f64::INFINITY,
                _ => 5.0,
            })
        });
        let c = change(&extract(&[s], &g, 10)[0], &g, &ChangeParams::default()).unwrap();
        assert!(c.score.is_finite() && c.score < 4.0, "{c:?}");
        assert_eq!(c.baseline, 5.0);
    }

    #[test]
    fn metadata_and_own_outputs_are_not_signals() {
        for n in [
            "kube_pod_info",
            "kube_replicaset_owner",
            "kube_deployment_metadata_generation",
            "anomaly_score",
            "ALERTS",
            "http_request_duration_seconds_bucket",
            "process_start_time_seconds",
        ] {
            assert!(is_excluded(n), "{n}");
        }
        assert!(!is_excluded("up"));
        assert!(!is_excluded("http_requests_total"));
    }

    #[test]
    fn component_onset_comes_from_its_strong_signals() {
        let ch = |score: f64, onset: i64| Change {
            signal: format!("s{score}"),
            direction: Direction::Up,
            score,
            onset_ms: Some(onset),
            baseline: 0.0,
            level: 0.0,
            recovered: false,
        };
        let s = summarize(vec![ch(4.5, 100), ch(30.0, 500), ch(20.0, 400)], 3, 4.0, 2);
        assert!(!s.recovered);
        assert_eq!(s.score, 30.0);
        assert_eq!(
            s.onset_ms,
            Some(400),
            "the weak early signal does not set the onset"
        );
        assert_eq!(s.changes.len(), 2);
        // An earlier burst that is over does not date the ongoing change.
        let mut burst = ch(40.0, 50);
        burst.recovered = true;
        let s = summarize(vec![burst, ch(30.0, 500)], 2, 4.0, 2);
        assert_eq!(s.onset_ms, Some(500));
        assert!(!s.recovered);
    }
}
