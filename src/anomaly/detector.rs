//! [`Detector`]: one declared detector's algorithm and the state of all its series,
//! built from a validated [`DetectorSpec`]. Dispatches a batch to the algorithm's
//! kernel (one `match` per batch, not per sample), then applies, in this order, the
//! optional anomaly likelihood, `auto`'s out-of-band alarm and the hold-off; for
//! `ensemble` it combines its members' scores as the maximum of their unit scores.

use super::holt_winters::{HoltWinters, HoltWintersConfig};
use super::iqr::{Iqr, IqrConfig};
use super::kernel::{classify, unit_score, Input, Outputs};
use super::likelihood::{Likelihood, RawScale};
use super::sequence::{Sequence, SequenceConfig};
use super::spec::{AUTO_BINS, AUTO_BLOCK, AUTO_TOLERANCE, AUTO_WARMUP};
use super::threshold::{Threshold, ThresholdConfig};
use super::trend::{Trend, TrendConfig};
use super::zscore::{ZScore, ZScoreConfig};
use super::{Algorithm, DetectorSpec, SpecError};

/// An algorithm's kernel.
#[derive(Debug, Clone)]
enum Kernel {
    ZScore(ZScore),
    Iqr(Iqr),
    HoltWinters(HoltWinters),
    Threshold(Threshold),
    Trend(Trend),
    Sequence(Sequence),
    Ensemble(Box<Ensemble>),
}

/// Members of an ensemble share slot numbers with the ensemble.
#[derive(Debug, Clone)]
struct Ensemble {
    /// Each member's kernel and how its raw score becomes a unit score.
    members: Vec<(Kernel, RawScale)>,
    scratch: Outputs,
}

/// The scale that maps a raw score to a unit score: the threshold, or 1 when the
/// threshold is 0.
fn scale_of(threshold: f64) -> f64 {
    if threshold > 0.0 {
        threshold
    } else {
        1.0
    }
}

/// How `spec`'s raw kernel scores become unit scores: unit-score algorithms are
/// clamped, the others map their `threshold` (raw units) to 0.5. With the
/// likelihood on, `threshold` is the likelihood's, so the algorithm's default
/// threshold sets the raw scale.
fn raw_scale(spec: &DetectorSpec) -> RawScale {
    if spec.algorithm.raw_is_unit() {
        RawScale::Unit
    } else {
        RawScale::Ratio(scale_of(spec.raw_threshold()))
    }
}

impl Kernel {
    fn build(spec: &DetectorSpec) -> Kernel {
        let thr = spec.raw_threshold();
        let warmup = spec.warmup.unwrap_or(0);
        let window_ms = spec.window.map(|w| w.0);
        match spec.algorithm {
            Algorithm::Zscore => Kernel::ZScore(ZScore::new(ZScoreConfig {
                window_ms,
                buckets: spec.buckets.unwrap_or(8),
                season_ms: spec.season.map(|d| d.0),
                threshold: thr,
                warmup,
                direction: spec.direction,
            })),
            Algorithm::Iqr => Kernel::Iqr(Iqr::new(IqrConfig {
                window_ms,
                capacity: spec.capacity.unwrap_or(256),
                k: spec.k.unwrap_or(1.5),
                warmup,
                direction: spec.direction,
            })),
            Algorithm::HoltWinters => Kernel::HoltWinters(HoltWinters::new(HoltWintersConfig {
                season: spec.season_len(),
                alpha: spec.alpha,
                beta: spec.beta,
                gamma: spec.gamma,
                rho: 0.05,
                threshold: thr,
                warmup,
                direction: spec.direction,
                max_gap_ms: spec.max_gap.map(|g| g.0),
            })),
            Algorithm::Threshold => Kernel::Threshold(Threshold::new(ThresholdConfig {
                upper: spec.upper,
                lower: spec.lower,
                for_ms: spec.for_.map_or(0, |d| d.0),
            })),
            Algorithm::Trend => Kernel::Trend(Trend::new(TrendConfig {
                window_ms,
                k: spec.k.unwrap_or(0.5),
                threshold: thr,
                warmup,
                direction: spec.direction,
            })),
            Algorithm::Sequence => Kernel::Sequence(Sequence::new(SequenceConfig {
                bins: spec.bins.unwrap_or(AUTO_BINS),
                block: spec.block.unwrap_or(AUTO_BLOCK),
                warmup: spec.warmup.unwrap_or(AUTO_WARMUP),
                tolerance: spec.tolerance.unwrap_or(AUTO_TOLERANCE),
            })),
            Algorithm::Auto => Kernel::Sequence(Sequence::new(SequenceConfig {
                bins: AUTO_BINS,
                block: AUTO_BLOCK,
                warmup: spec.warmup.unwrap_or(AUTO_WARMUP),
                tolerance: AUTO_TOLERANCE,
            })),
            Algorithm::Ensemble => Kernel::Ensemble(Box::new(Ensemble {
                members: spec
                    .members
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| (Kernel::build(m), raw_scale(m)))
                    .collect(),
                scratch: Outputs::default(),
            })),
        }
    }

    fn alloc(&mut self) -> u32 {
        match self {
            Kernel::ZScore(k) => k.alloc(),
            Kernel::Iqr(k) => k.alloc(),
            Kernel::HoltWinters(k) => k.alloc(),
            Kernel::Threshold(k) => k.alloc(),
            Kernel::Trend(k) => k.alloc(),
            Kernel::Sequence(k) => k.alloc(),
            Kernel::Ensemble(e) => {
                // members allocate in lockstep, so their slot numbers agree
                let mut slot = 0;
                for (m, _) in &mut e.members {
                    slot = m.alloc();
                }
                slot
            }
        }
    }

    fn free(&mut self, slot: u32) {
        match self {
            Kernel::ZScore(k) => k.free(slot),
            Kernel::Iqr(k) => k.free(slot),
            Kernel::HoltWinters(k) => k.free(slot),
            Kernel::Threshold(k) => k.free(slot),
            Kernel::Trend(k) => k.free(slot),
            Kernel::Sequence(k) => k.free(slot),
            Kernel::Ensemble(e) => e.members.iter_mut().for_each(|(m, _)| m.free(slot)),
        }
    }

    fn live(&self) -> usize {
        match self {
            Kernel::ZScore(k) => k.live(),
            Kernel::Iqr(k) => k.live(),
            Kernel::HoltWinters(k) => k.live(),
            Kernel::Threshold(k) => k.live(),
            Kernel::Trend(k) => k.live(),
            Kernel::Sequence(k) => k.live(),
            Kernel::Ensemble(e) => e.members.first().map_or(0, |(m, _)| m.live()),
        }
    }

    /// `out` must already be reset to the batch length.
    fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        match self {
            Kernel::ZScore(k) => k.update(slots, ts, vs, out),
            Kernel::Iqr(k) => k.update(slots, ts, vs, out),
            Kernel::HoltWinters(k) => k.update(slots, ts, vs, out),
            Kernel::Threshold(k) => k.update(slots, ts, vs, out),
            Kernel::Trend(k) => k.update(slots, ts, vs, out),
            Kernel::Sequence(k) => k.update(slots, ts, vs, out),
            Kernel::Ensemble(e) => {
                let Ensemble { members, scratch } = &mut **e;
                for (j, (m, scale)) in members.iter_mut().enumerate() {
                    scratch.reset(out.len());
                    m.update(slots, ts, vs, scratch);
                    combine_max(&mut out.score, &scratch.score, *scale);
                    if j == 0 {
                        out.upper.copy_from_slice(&scratch.upper);
                        out.lower.copy_from_slice(&scratch.lower);
                        out.forecast.copy_from_slice(&scratch.forecast);
                    }
                }
            }
        }
    }
}

/// `acc[i] = max(acc[i], unit(member[i]))`, NaN (no output) on both sides stays NaN.
fn combine_max(acc: &mut [f64], member: &[f64], scale: RawScale) {
    for (a, &m) in acc.iter_mut().zip(member) {
        if !m.is_nan() {
            let u = scale.apply(m);
            *a = if a.is_nan() { u } else { a.max(u) };
        }
    }
}

/// One declared detector: its spec, its algorithm's kernel, and per-series state.
#[derive(Debug, Clone)]
pub struct Detector {
    spec: DetectorSpec,
    kernel: Kernel,
    threshold: f64,
    likelihood: Option<Likelihood>,
    /// Values outside the band score 1, on the sides `direction` allows (`auto`,
    /// `band_alarm: true`).
    band_alarm: Option<(f64, f64)>,
    holdoff_ms: i64,
    holdoff_until: Vec<i64>,
}

impl Detector {
    /// Validates `spec` and builds an empty detector.
    pub fn from_spec(spec: &DetectorSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Detector {
            kernel: Kernel::build(spec),
            threshold: spec.threshold_or_default(),
            likelihood: spec
                .uses_likelihood()
                .then(|| Likelihood::new(raw_scale(spec))),
            band_alarm: spec.uses_band_alarm().then(|| spec.direction.weights()),
            holdoff_ms: spec.holdoff.map_or(0, |h| h.0),
            holdoff_until: Vec::new(),
            spec: spec.clone(),
        })
    }

    /// The spec this detector was built from.
    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    /// Scores above this are anomalies.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Series currently holding state.
    pub fn live_series(&self) -> usize {
        self.kernel.live()
    }

    /// Allocates state for a new series and returns its slot.
    pub fn alloc_slot(&mut self) -> u32 {
        let s = self.kernel.alloc();
        if let Some(l) = &mut self.likelihood {
            l.reset(s);
        }
        if self.holdoff_until.len() <= s as usize {
            self.holdoff_until.resize(s as usize + 1, i64::MIN);
        }
        self.holdoff_until[s as usize] = i64::MIN;
        s
    }

    /// Drops a series' state; the slot is reused by a later [`Detector::alloc_slot`].
    pub fn free_slot(&mut self, slot: u32) {
        self.kernel.free(slot);
        if let Some(l) = &mut self.likelihood {
            l.clear(slot);
        }
        if let Some(h) = self.holdoff_until.get_mut(slot as usize) {
            *h = i64::MIN;
        }
    }

    /// Maps a score of this detector into [0, 1]: 0.5 at the threshold (1 when the
    /// threshold is 0); scores of ensembles, sequence, auto and likelihoods already
    /// are unit scores. NaN maps to 0.
    pub fn unit_score(&self, score: f64) -> f64 {
        if score.is_nan() {
            0.0
        } else if self.spec.score_is_unit() {
            score.clamp(0.0, 1.0)
        } else {
            unit_score(score, scale_of(self.threshold))
        }
    }

    /// [`Detector::update`], also copying the kernel's own scores (before the
    /// likelihood, the band alarm and the hold-off) into `raw`, to explain a score.
    pub fn update_keeping_raw(
        &mut self,
        slots: &[u32],
        ts: &[i64],
        vs: &[f64],
        out: &mut Outputs,
        raw: &mut Vec<f64>,
    ) {
        self.update_inner(slots, ts, vs, out, Some(raw));
    }

    /// Scores one batch: entry `i` is sample `(ts[i], vs[i])` of the series in slot
    /// `slots[i]`; entries of one slot must be in time order. `out` is resized to the
    /// batch; NaN in an output means none for that sample.
    pub fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        self.update_inner(slots, ts, vs, out, None);
    }

    fn update_inner(
        &mut self,
        slots: &[u32],
        ts: &[i64],
        vs: &[f64],
        out: &mut Outputs,
        raw: Option<&mut Vec<f64>>,
    ) {
        let n = slots.len().min(ts.len()).min(vs.len());
        out.reset(n);
        self.kernel.update(&slots[..n], &ts[..n], &vs[..n], out);
        if let Some(raw) = raw {
            raw.clear();
            raw.extend_from_slice(&out.score);
        }
        if let Some(l) = &mut self.likelihood {
            l.update(&slots[..n], &vs[..n], &mut out.score);
        }
        if let Some(dir) = self.band_alarm {
            band_alarm(&vs[..n], out, dir);
        }
        if self.holdoff_ms > 0 {
            apply_holdoff(
                &mut self.holdoff_until,
                &slots[..n],
                &ts[..n],
                &mut out.score,
                self.threshold,
                self.holdoff_ms,
            );
        }
    }
}

/// Scores 1 for every value outside the band (`upper`/`lower`; NaN means no band),
/// on the sides the direction weights `(up, down)` allow.
fn band_alarm(vs: &[f64], out: &mut Outputs, (up, down): (f64, f64)) {
    let Outputs {
        score,
        upper,
        lower,
        ..
    } = out;
    for (i, &x) in vs.iter().enumerate() {
        if classify(x) != Input::Value || score[i].is_nan() {
            continue;
        }
        if (up > 0.0 && x > upper[i]) || (down > 0.0 && x < lower[i]) {
            score[i] = 1.0;
        }
    }
}

/// Zeroes scores of a series for `holdoff_ms` after it crossed `threshold`.
fn apply_holdoff(
    until: &mut [i64],
    slots: &[u32],
    ts: &[i64],
    score: &mut [f64],
    threshold: f64,
    holdoff_ms: i64,
) {
    for ((&s, &t), sc) in slots.iter().zip(ts).zip(score.iter_mut()) {
        let Some(u) = until.get_mut(s as usize) else {
            continue;
        };
        if sc.is_nan() {
            continue;
        }
        if t < *u {
            *sc = 0.0;
        } else if *sc > threshold {
            *u = t.saturating_add(holdoff_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::PromDuration;

    #[test]
    fn ensemble_is_max_of_unit_scores_and_slots_agree() {
        let mut z = DetectorSpec::new("", "", Algorithm::Zscore);
        z.threshold = Some(3.0);
        let mut q = DetectorSpec::new("", "", Algorithm::Iqr);
        q.threshold = Some(1.0);
        let mut e = DetectorSpec::new("e", "up", Algorithm::Ensemble);
        e.members = Some(vec![z, q]);
        let mut d = Detector::from_spec(&e).unwrap();
        let a = d.alloc_slot();
        let b = d.alloc_slot();
        assert_ne!(a, b);
        let n = 60;
        let slots: Vec<u32> = (0..n).map(|i| if i % 2 == 0 { a } else { b }).collect();
        let ts: Vec<i64> = (0..n).map(|i| (i / 2) as i64 * 1000).collect();
        let vs: Vec<f64> = (0..n).map(|i| ((i / 2) % 3) as f64).collect();
        let mut out = Outputs::default();
        d.update(&slots, &ts, &vs, &mut out);
        assert!(out.score.iter().all(|&s| (0.0..1.0).contains(&s)));
        d.update(&[a], &[100_000], &[50.0], &mut out);
        assert!(out.score[0] > 0.9);
        assert_eq!(d.live_series(), 2);
    }

    /// A daily-ish wave with noise, `n` samples one minute apart.
    fn wave(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                50.0 + 20.0 * ((i % 96) as f64 / 96.0 * std::f64::consts::TAU).sin()
                    + (x % 100) as f64 / 50.0
            })
            .collect()
    }

    #[test]
    fn auto_flags_a_value_beyond_the_band_once_and_explains_it() {
        let spec = DetectorSpec::new("a", "up", Algorithm::Auto);
        let mut d = Detector::from_spec(&spec).unwrap();
        assert_eq!(d.threshold(), crate::anomaly::LIKELIHOOD_THRESHOLD);
        let s = d.alloc_slot();
        let mut vs = wave(3000, 9);
        vs.push(500.0);
        let ts: Vec<i64> = (0..vs.len() as i64).map(|i| i * 60_000).collect();
        let mut out = Outputs::default();
        let mut raw = Vec::new();
        d.update_keeping_raw(&vec![s; vs.len()], &ts, &vs, &mut out, &mut raw);
        let last = vs.len() - 1;
        assert_eq!(out.score[last], 1.0);
        // the band written back shows why: the value is above anomaly_upper
        assert!(out.upper[last] < 500.0 && out.lower[last] > 0.0);
        assert!(out.upper[..600].iter().all(|v| v.is_nan()));
        assert!(raw.iter().all(|v| (0.0..=1.0).contains(v)));
        let fired = out.score[..last]
            .iter()
            .filter(|&&v| v > d.threshold())
            .count();
        assert!(fired <= 2, "{fired} alarms on a clean wave");
        assert_eq!(d.unit_score(out.score[last]), 1.0);
    }

    #[test]
    fn likelihood_turns_raw_scores_into_a_bounded_probability_score() {
        let mut spec = DetectorSpec::new("z", "up", Algorithm::Zscore);
        spec.likelihood = Some(true);
        let mut d = Detector::from_spec(&spec).unwrap();
        assert_eq!(d.threshold(), 0.5);
        let s = d.alloc_slot();
        let mut vs = wave(2000, 4);
        vs.extend(std::iter::repeat_n(120.0, 20));
        let ts: Vec<i64> = (0..vs.len() as i64).map(|i| i * 60_000).collect();
        let mut out = Outputs::default();
        d.update(&vec![s; vs.len()], &ts, &vs, &mut out);
        assert!(out.score.iter().all(|v| (0.0..=1.0).contains(v)));
        let red = out.score[2000..].iter().filter(|&&v| v > 0.5).count();
        assert_eq!(red, 1, "one report for the episode");
        // a threshold at or above 1 cannot fire: rejected
        spec.threshold = Some(1.0);
        assert_eq!(Detector::from_spec(&spec).unwrap_err().field, "threshold");
    }

    #[test]
    fn auto_is_sequence_with_likelihood_and_band_alarm() {
        let mut seq = DetectorSpec::new("s", "up", Algorithm::Sequence);
        seq.likelihood = Some(true);
        seq.band_alarm = Some(true);
        let mut a = Detector::from_spec(&DetectorSpec::new("a", "up", Algorithm::Auto)).unwrap();
        let mut b = Detector::from_spec(&seq).unwrap();
        let (sa, sb) = (a.alloc_slot(), b.alloc_slot());
        let mut vs = wave(2500, 5);
        vs.extend([300.0, 50.0, -200.0]);
        let ts: Vec<i64> = (0..vs.len() as i64).map(|i| i * 60_000).collect();
        let (mut oa, mut ob) = (Outputs::default(), Outputs::default());
        a.update(&vec![sa; vs.len()], &ts, &vs, &mut oa);
        b.update(&vec![sb; vs.len()], &ts, &vs, &mut ob);
        assert_eq!(oa.score, ob.score);
        assert_eq!(a.threshold(), b.threshold());
    }

    #[test]
    fn auto_is_one_configuration() {
        let mut spec = DetectorSpec::new("a", "up", Algorithm::Auto);
        spec.bins = Some(8);
        assert_eq!(Detector::from_spec(&spec).unwrap_err().field, "bins");
        let mut spec = DetectorSpec::new("a", "up", Algorithm::Auto);
        spec.likelihood = Some(false);
        assert_eq!(Detector::from_spec(&spec).unwrap_err().field, "likelihood");
        let mut e = DetectorSpec::new("e", "up", Algorithm::Ensemble);
        e.members = Some(vec![DetectorSpec::new("", "", Algorithm::Auto)]);
        assert_eq!(
            Detector::from_spec(&e).unwrap_err().field,
            "members[0].algorithm"
        );
    }

    #[test]
    fn holdoff_reports_once_per_episode() {
        let mut s = DetectorSpec::new("h", "up", Algorithm::Threshold);
        s.upper = Some(10.0);
        s.holdoff = Some(PromDuration(5000));
        let mut d = Detector::from_spec(&s).unwrap();
        let slot = d.alloc_slot();
        let ts: Vec<i64> = (0..10).map(|i| i * 1000).collect();
        let mut out = Outputs::default();
        d.update(&[slot; 10], &ts, &[20.0; 10], &mut out);
        assert_eq!(
            out.score,
            vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::anomaly::PromDuration;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => -1e3f64..1e3,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(f64::from_bits(crate::storage::STALE_NAN_BITS)),
            1 => Just(1e300),
            1 => Just(0.0),
        ]
    }

    fn specs() -> Vec<DetectorSpec> {
        let mut out = Vec::new();
        for alg in [
            Algorithm::Zscore,
            Algorithm::Iqr,
            Algorithm::HoltWinters,
            Algorithm::Threshold,
            Algorithm::Trend,
            Algorithm::Sequence,
            Algorithm::Auto,
        ] {
            let mut s = DetectorSpec::new("p", "up", alg);
            match alg {
                Algorithm::Zscore | Algorithm::Trend => s.window = Some(PromDuration(50)),
                Algorithm::Iqr => {
                    s.window = Some(PromDuration(50));
                    s.capacity = Some(8);
                }
                Algorithm::HoltWinters => {
                    s.season_samples = Some(3);
                    s.max_gap = Some(PromDuration(40));
                    s.warmup = Some(7);
                }
                Algorithm::Threshold => {
                    s.upper = Some(10.0);
                    s.for_ = Some(PromDuration(5));
                }
                Algorithm::Sequence => {
                    s.bins = Some(4);
                    s.block = Some(3);
                    s.warmup = Some(5);
                }
                Algorithm::Auto => s.warmup = Some(5),
                Algorithm::Ensemble => {}
            }
            s.holdoff = Some(PromDuration(3));
            out.push(s);
        }
        // every algorithm read through the likelihood
        let with_likelihood: Vec<DetectorSpec> = out
            .iter()
            .filter(|s| s.algorithm != Algorithm::Auto)
            .map(|s| {
                let mut s = s.clone();
                s.likelihood = Some(true);
                s
            })
            .collect();
        let mut e = DetectorSpec::new("e", "up", Algorithm::Ensemble);
        e.members = Some(
            out.iter()
                .filter(|m| m.algorithm != Algorithm::Auto)
                .map(|m| {
                    let mut m = m.clone();
                    m.name.clear();
                    m.selector.clear();
                    m.holdoff = None;
                    m
                })
                .collect(),
        );
        out.push(e);
        out.extend(with_likelihood);
        out
    }

    proptest! {
        #[test]
        fn any_input_never_panics_and_outputs_are_finite_or_absent(
            items in proptest::collection::vec((0u32..4, -100i64..100, value()), 0..300),
            frees in proptest::collection::vec(0u32..6, 0..3),
        ) {
            for spec in specs() {
                let mut d = Detector::from_spec(&spec).unwrap();
                for _ in 0..4 {
                    d.alloc_slot();
                }
                // times roughly increasing, with jitter, repeats and gaps
                let slots: Vec<u32> = items.iter().map(|x| x.0).collect();
                let ts: Vec<i64> = items.iter().enumerate().map(|(i, x)| i as i64 * 10 + x.1).collect();
                let vs: Vec<f64> = items.iter().map(|x| x.2).collect();
                let mut out = Outputs::default();
                for chunk in 0..3 {
                    let a = items.len() * chunk / 3;
                    let b = items.len() * (chunk + 1) / 3;
                    d.update(&slots[a..b], &ts[a..b], &vs[a..b], &mut out);
                    for col in [&out.score, &out.upper, &out.lower, &out.forecast] {
                        prop_assert!(col.iter().all(|v| v.is_nan() || v.is_finite()));
                    }
                    prop_assert!(out.score.iter().all(|v| v.is_nan() || *v >= 0.0));
                    if spec.score_is_unit() {
                        prop_assert!(out.score.iter().all(|v| v.is_nan() || *v <= 1.0));
                    }
                    for &f in &frees {
                        d.free_slot(f);
                    }
                    for _ in &frees {
                        d.alloc_slot();
                    }
                }
                // a slot never allocated is ignored, not a panic
                d.update(&[1000], &[0], &[1.0], &mut out);
            }
        }
    }
}
