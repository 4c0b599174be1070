//! Cause ranking over one incident's candidates: a single-fault Bayesian model over
//! the dependency graph, and the two simple baselines the benchmark compares it
//! with.
//!
//! The model. Each candidate `v` has a probability `a(v)` of being abnormal, read
//! from its strongest change (`a = σ((score − z0) / width)`; when a detector or
//! alert fired on it, at least `touched_floor` without series, or
//! `touched_with_data_floor` when its series show nothing), and an onset. For each
//! hypothesis "the fault is at `r`":
//! - `r` itself should be abnormal: `P = p_root`;
//! - a component depending on `r` (transitively) is abnormal through its
//!   dependencies on the fault's path: a noisy-OR `1 − (1 − eps)·Π(1 − pi·a(u)·t(u))`
//!   over those dependencies `u` (`a(r) = 1` under the hypothesis; `pi` = 0.5: a
//!   dependency's fault shows in a given dependent about half the time), where `t(u)`
//!   discounts a `u` whose onset is more than `tol` *after* the component's own
//!   (`exp(−lead / tau)`: effects do not precede causes, but measured onsets are
//!   noisy), or more than `late_tol` before it (`exp(−extra / late_tau)`: faults
//!   reach callers within minutes, not a quarter of an hour later). So a chain of abnormal components is explained link by link, without
//!   penalising a deep cause for its distance, and an abnormal component behind a
//!   normal one is not explained;
//! - a node hosting `r`'s pods may be abnormal too (`P = pi_host`: a node's usage
//!   is the sum of its pods', so a pod's CPU hog shows on its node);
//! - anything else should be normal: `P = eps` for an ongoing change (less for a
//!   large one: `eps · eps_size / score`, at least `eps / 5` — noise makes small
//!   changes more often than large ones), `eps_transient` for one that is over
//!   (background anomalies; short bursts are common).
//!
//! A cause whose every strong change is over by the end of the window (a burst
//! that came and went) costs `recovered_root`: the cause of an ongoing incident is
//! usually still abnormal; and an ongoing change is explained by a dependency whose
//! change is over only with `recovered_parent`.
//!
//! The soft evidence enters as `a·P + (1 − a)·(1 − P)` per candidate (a candidate
//! without series adds nothing, except as the hypothesised cause itself, which
//! costs `unobserved_root`); the prior is
//! uniform, times `change_boost` when `r` was deployed or reconfigured shortly
//! before its onset. The posterior over candidates is the confidence. This one
//! product combines the three signals the issue names: position in the graph (a
//! cause explains its anomalous dependents and is not explained by an anomalous
//! dependency), onset order, and the size of the change.
//!
//! Baselines: *earliest onset* (the component whose change started first) and
//! *largest change* (the largest robust z-score), over the same candidates and the
//! same features.
//!
//! Must never: depend on the candidates' order for anything but exact ties (broken
//! by component id); produce NaN confidences.

use std::collections::VecDeque;

use serde::Serialize;

use super::signals::ComponentChange;
use super::topology::{ComponentId, ComponentKind};

/// A deploy or configuration change seen in the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeEvent {
    /// When (ms).
    #[serde(rename = "at", serialize_with = "ser_secs")]
    pub at_ms: i64,
    /// What changed, e.g. `new ReplicaSet shop/checkout-7d9f8b6c5`.
    pub what: String,
}

fn ser_secs<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*v as f64 / 1000.0)
}

/// One candidate cause with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The unit (its representative component).
    pub id: ComponentId,
    /// Its signals' changes; `None` when no series of it was found.
    pub change: Option<ComponentChange>,
    /// Whether a detector or an alert fired on it in this incident.
    pub touched: bool,
    /// Its first detector event or alert (ms).
    pub first_signal_ms: Option<i64>,
    /// Deploys and config changes.
    pub changes: Vec<ChangeEvent>,
}

/// The candidates and their dependencies (`deps[u]` = candidates `u` depends on).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub candidates: Vec<Candidate>,
    pub deps: Vec<Vec<usize>>,
    /// The incident's start (ms), for change events of components without an onset.
    pub start_ms: i64,
}

/// The model's parameters (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankParams {
    pub eps: f64,
    /// Unexplained ongoing changes larger than this robust z are rarer than `eps`
    /// (background noise makes small changes more often than large ones): `eps`
    /// scales by `eps_size / score`, down to a fifth.
    pub eps_size: f64,
    pub p_root: f64,
    pub pi: f64,
    pub pi_host: f64,
    pub tol_ms: i64,
    pub tau_ms: f64,
    pub z0: f64,
    pub width: f64,
    pub touched_floor: f64,
    /// The floor when the touched component's own series show no change (a
    /// detector firing on one noisy series is weaker evidence than no data at all).
    pub touched_with_data_floor: f64,
    /// Likelihood factor of a cause whose every strong change is over: the cause of
    /// an ongoing incident is usually still abnormal.
    pub recovered_root: f64,
    /// Background rate of abnormal components the hypothesis does not explain whose
    /// change is over (short bursts are common); `eps` is for ongoing ones.
    pub eps_transient: f64,
    /// An ongoing change is explained by a dependency whose change is over only
    /// with this factor.
    pub recovered_parent: f64,
    /// Propagation that shows up later than this after its source is discounted…
    pub late_tol_ms: i64,
    /// …by `exp(−extra / late_tau)`.
    pub late_tau_ms: f64,
    pub change_boost: f64,
    /// Likelihood factor of a cause without any series (an external API, a node
    /// without node metrics): it can be the cause only on its dependents' evidence.
    pub unobserved_root: f64,
    /// A change this long before the onset (or less) boosts the prior.
    pub change_lead_ms: i64,
}

impl Default for RankParams {
    fn default() -> Self {
        RankParams {
            eps: 0.05,
            eps_size: 10.0,
            p_root: 0.99,
            pi: 0.5,
            pi_host: 0.25,
            tol_ms: 30_000,
            tau_ms: 60_000.0,
            z0: 5.0,
            width: 1.2,
            touched_floor: 0.7,
            touched_with_data_floor: 0.4,
            recovered_root: 0.2,
            eps_transient: 0.3,
            recovered_parent: 0.2,
            late_tol_ms: 5 * 60_000,
            late_tau_ms: 600_000.0,
            change_boost: 3.0,
            unobserved_root: 0.2,
            change_lead_ms: 20 * 60_000,
        }
    }
}

/// A ranked candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Index into [`Evidence::candidates`].
    pub index: usize,
    /// Log posterior (unnormalised) or the baseline's key.
    pub score: f64,
    /// Posterior probability (0 for the baselines).
    pub confidence: f64,
}

impl Evidence {
    /// `rdeps[v]` = candidates depending directly on `v`.
    fn dependents(&self) -> Vec<Vec<usize>> {
        let mut r = vec![Vec::new(); self.candidates.len()];
        for (u, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                if d != u && !r[d].contains(&u) {
                    r[d].push(u);
                }
            }
        }
        r
    }

    /// Hop distance from `from` to every candidate depending on it (transitively).
    fn distances(&self, rdeps: &[Vec<usize>], from: usize) -> Vec<Option<u32>> {
        let mut dist = vec![None; self.candidates.len()];
        dist[from] = Some(0);
        let mut q = VecDeque::from([from]);
        while let Some(u) = q.pop_front() {
            let d = dist[u].unwrap_or(0);
            for &v in &rdeps[u] {
                if dist[v].is_none() {
                    dist[v] = Some(d + 1);
                    q.push_back(v);
                }
            }
        }
        dist
    }

    /// The probability that candidate `i` is abnormal, or `None` without data.
    pub fn anomaly(&self, i: usize, p: &RankParams) -> Option<f64> {
        let c = &self.candidates[i];
        let from_change = c
            .change
            .as_ref()
            .map(|ch| 1.0 / (1.0 + (-(ch.score - p.z0) / p.width).exp()));
        match (from_change, c.touched) {
            (Some(a), true) => Some(a.max(p.touched_with_data_floor)),
            (Some(a), false) => Some(a),
            (None, true) => Some(p.touched_floor),
            (None, false) => None,
        }
    }

    /// The candidate's onset: its signals' onset, else its first detector event or
    /// alert.
    pub fn onset(&self, i: usize) -> Option<i64> {
        let c = &self.candidates[i];
        c.change
            .as_ref()
            .and_then(|ch| ch.onset_ms)
            .or(c.first_signal_ms)
    }

    /// The path the fault takes from `cause` to `symptom` (cause first), if the
    /// symptom depends on the cause.
    pub fn path(&self, cause: usize, symptom: usize) -> Option<Vec<usize>> {
        let rdeps = self.dependents();
        let mut prev = vec![usize::MAX; self.candidates.len()];
        prev[cause] = cause;
        let mut q = VecDeque::from([cause]);
        while let Some(u) = q.pop_front() {
            if u == symptom {
                let mut path = vec![u];
                let mut x = u;
                while x != cause {
                    x = prev[x];
                    path.push(x);
                }
                path.reverse();
                return Some(path);
            }
            for &v in &rdeps[u] {
                if prev[v] == usize::MAX {
                    prev[v] = u;
                    q.push_back(v);
                }
            }
        }
        None
    }

    /// Candidates depending on `cause` (transitively), with their hop distance.
    pub fn affected(&self, cause: usize) -> Vec<(usize, u32)> {
        let rdeps = self.dependents();
        self.distances(&rdeps, cause)
            .into_iter()
            .enumerate()
            .filter_map(|(v, d)| d.filter(|&d| d > 0).map(|d| (v, d)))
            .collect()
    }
}

fn sort_ranked(ev: &Evidence, mut out: Vec<Ranked>) -> Vec<Ranked> {
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| ev.candidates[a.index].id.cmp(&ev.candidates[b.index].id))
    });
    out
}

/// The single-fault Bayesian ranking (see the module docs), best first.
pub fn bayes(ev: &Evidence, p: &RankParams) -> Vec<Ranked> {
    let n = ev.candidates.len();
    if n == 0 {
        return Vec::new();
    }
    let rdeps = ev.dependents();
    let a: Vec<Option<f64>> = (0..n).map(|i| ev.anomaly(i, p)).collect();
    let onset: Vec<Option<i64>> = (0..n).map(|i| ev.onset(i)).collect();
    let recovered: Vec<bool> = ev
        .candidates
        .iter()
        .map(|c| c.change.as_ref().is_some_and(|ch| ch.recovered))
        .collect();
    let soft = |a: f64, prob: f64| (a * prob + (1.0 - a) * (1.0 - prob)).max(1e-12).ln();
    let mut out = Vec::with_capacity(n);
    for r in 0..n {
        let dist = ev.distances(&rdeps, r);
        let hosts: Vec<usize> = if ev.candidates[r].id.kind == ComponentKind::Node {
            Vec::new()
        } else {
            ev.deps[r]
                .iter()
                .copied()
                .filter(|&d| ev.candidates[d].id.kind == ComponentKind::Node)
                .collect()
        };
        let anchor = onset[r].unwrap_or(ev.start_ms);
        let boosted = ev.candidates[r]
            .changes
            .iter()
            .any(|c| c.at_ms >= anchor - p.change_lead_ms && c.at_ms <= anchor + p.tol_ms);
        let mut ll = if boosted { p.change_boost.ln() } else { 0.0 };
        ll += match a[r] {
            Some(ar) => soft(ar, p.p_root),
            None => p.unobserved_root.ln(),
        };
        if recovered[r] {
            ll += p.recovered_root.ln();
        }
        // Components depending on r, nearest first: each is abnormal through its
        // dependencies on the fault's path (noisy-OR over them, weighted by how
        // abnormal they look and whether they started first).
        let mut order: Vec<usize> = (0..n).filter(|&v| v != r && dist[v].is_some()).collect();
        order.sort_by_key(|&v| dist[v]);
        let mut under: Vec<f64> = vec![f64::NAN; n];
        under[r] = 1.0;
        for &v in &order {
            let mut none = 1.0 - p.eps;
            for &u in &ev.deps[v] {
                if u != r && dist[u].is_none() {
                    continue;
                }
                let au = if u == r {
                    1.0
                } else {
                    a[u].unwrap_or(if under[u].is_nan() { p.pi } else { under[u] })
                };
                let timing = match (onset[u], onset[v]) {
                    (Some(ou), Some(ov)) if ou - p.tol_ms > ov => {
                        (-((ou - p.tol_ms - ov) as f64) / p.tau_ms).exp()
                    }
                    (Some(ou), Some(ov)) if ov - ou > p.late_tol_ms => {
                        (-((ov - ou - p.late_tol_ms) as f64) / p.late_tau_ms).exp()
                    }
                    _ => 1.0,
                };
                let ended = if recovered[u] && !recovered[v] {
                    p.recovered_parent
                } else {
                    1.0
                };
                none *= 1.0 - p.pi * au * timing * ended;
            }
            let prob = (1.0 - none).max(p.eps);
            under[v] = prob;
            if let Some(av) = a[v] {
                ll += soft(av, prob);
            }
        }
        for v in 0..n {
            if v == r || dist[v].is_some() {
                continue;
            }
            if let Some(av) = a[v] {
                let prob = if hosts.contains(&v) {
                    p.pi_host
                } else if recovered[v] {
                    p.eps_transient
                } else {
                    let size = ev.candidates[v].change.as_ref().map_or(0.0, |c| c.score);
                    p.eps * (p.eps_size / size.max(1e-9)).clamp(0.2, 1.0)
                };
                ll += soft(av, prob);
            }
        }
        out.push(Ranked {
            index: r,
            score: ll,
            confidence: 0.0,
        });
    }
    let max = out
        .iter()
        .map(|r| r.score)
        .fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = out.iter().map(|r| (r.score - max).exp()).sum();
    for r in &mut out {
        r.confidence = (r.score - max).exp() / total;
    }
    sort_ranked(ev, out)
}

/// Baseline: the candidate whose change started first (ties and candidates without
/// an onset by the size of their change).
pub fn earliest_onset(ev: &Evidence) -> Vec<Ranked> {
    let mut idx: Vec<usize> = (0..ev.candidates.len()).collect();
    let size = |i: usize| ev.candidates[i].change.as_ref().map_or(0.0, |c| c.score);
    idx.sort_by(|&a, &b| {
        let (oa, ob) = (ev.onset(a), ev.onset(b));
        match (oa, ob) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| size(b).total_cmp(&size(a)))
        .then_with(|| ev.candidates[a].id.cmp(&ev.candidates[b].id))
    });
    let n = idx.len();
    idx.into_iter()
        .enumerate()
        .map(|(k, i)| Ranked {
            index: i,
            score: (n - k) as f64,
            confidence: 0.0,
        })
        .collect()
}

/// Baseline: the candidate with the largest robust z-score of change.
pub fn largest_change(ev: &Evidence) -> Vec<Ranked> {
    let out = (0..ev.candidates.len())
        .map(|i| Ranked {
            index: i,
            score: ev.candidates[i].change.as_ref().map_or(0.0, |c| c.score),
            confidence: 0.0,
        })
        .collect();
    sort_ranked(ev, out)
}

#[cfg(test)]
mod tests;
