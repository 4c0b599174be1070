//! Anomaly likelihood: a post-processor that turns any detector's scores into how
//! unusual the *recent* scores are given their own history.
//!
//! The method is the one Numenta published for NAB (NuPIC's `AnomalyLikelihood`, as
//! its NAB detector configures it), rebuilt here with bounded per-series state:
//!
//! 1. Each raw score is mapped into [0, 1] (the detector's unit score) and averaged
//!    over the last [`SHORT`] scores (a ring per series).
//! 2. The distribution of that average is estimated from the series' own history:
//!    the first [`LEARNING`] scores are skipped (a detector's early scores describe
//!    its warm-up, not the series), and after [`ESTIMATION`] more the estimate is
//!    made and then refreshed every [`REESTIMATE`] scores. NuPIC keeps the last 8640
//!    averages to re-estimate from; here each block of [`REESTIMATE`] averages is
//!    folded into running sums that forget at the same rate (a block replaces
//!    `REESTIMATE / HISTORY` of the weight once [`HISTORY`] averages are in), so the
//!    state is a few words. Mean and variance have NuPIC's floors (0.03 and 0.0003)
//!    so a detector that is almost always 0 does not alarm on its first blip.
//! 3. The likelihood is the two-sided Gaussian tail of the current average,
//!    `tail = Q(|avg − mean| / std)`. An average far *below* its history (a noisy
//!    series going flat) is as unusual as one far above it.
//! 4. Only the first of consecutive extreme values counts: when this tail and the
//!    previous one are both ≤ 1e-5 ("red"), this one is reported as 1e-3 ("yellow").
//!    One report per episode, which is what a loop that acts needs.
//! 5. The score is NuPIC's log-likelihood `ln(tail + 1e-10) / ln(1e-10)` in [0, 1]:
//!    0.5 is a one-in-100,000 event, 0.3 one in 1,000, 1.0 one in 10^10 or rarer.
//!    Before the estimate exists the score is that of tail 0.5 (0.03).
//!
//! Invariants: state is per slot in struct-of-arrays form, slot numbers are the
//! detector's; NaN in means "no score" and stays NaN; a staleness marker resets the
//! slot; nothing allocates per sample; every output is finite and in [0, 1].

use super::kernel::ensure;
use crate::storage::is_stale_marker;

/// Raw scores averaged into the recent score (NuPIC's `averagingWindow`).
pub(crate) const SHORT: usize = 10;
/// Scores skipped before the history starts (NuPIC's `learningPeriod` default).
pub(crate) const LEARNING: u32 = 288;
/// Averages collected before the first estimate (NuPIC's `estimationSamples`).
pub(crate) const ESTIMATION: u32 = 100;
/// Scores between re-estimates (NuPIC's `reestimationPeriod`).
pub(crate) const REESTIMATE: u32 = 100;
/// Averages the history spans (NuPIC's `historicWindowSize`).
pub(crate) const HISTORY: f64 = 8640.0;

/// A tail at or below this is "red".
const RED_TAIL: f64 = 1e-5;
/// What a red tail right after a red tail is reported as.
const YELLOW_TAIL: f64 = 1e-3;
/// NuPIC's floors on the estimated distribution.
const MIN_MEAN: f64 = 0.03;
const MIN_VARIANCE: f64 = 0.0003;

/// The log-likelihood score of a tail probability: `ln(tail + 1e-10) / ln(1e-10)`.
pub(crate) fn log_likelihood(tail: f64) -> f64 {
    ((tail.max(0.0) + 1e-10).ln() / 1e-10f64.ln()).clamp(0.0, 1.0)
}

/// The one-sided standard normal tail Q(z) = P(Z > z).
fn q(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// `z` beyond which the score is computed exactly instead of from the table.
const TABLE_MAX_Z: f32 = 8.0;
/// Table entries per unit of z.
const TABLE_STEP: f32 = 128.0;

/// Precomputed score of |z| (linear interpolation between exact points, so the
/// mapping stays monotone), and the z of the red tail.
struct ScoreTable {
    score: Vec<f32>,
    red_z: f32,
    yellow: f64,
    before: f64,
}

static TABLE: std::sync::LazyLock<ScoreTable> = std::sync::LazyLock::new(|| {
    let n = (TABLE_MAX_Z * TABLE_STEP) as usize + 2;
    let score = (0..n)
        .map(|k| log_likelihood(q(k as f64 / f64::from(TABLE_STEP))) as f32)
        .collect();
    // bisection for Q(z) = RED_TAIL
    let (mut lo, mut hi) = (0.0f64, f64::from(TABLE_MAX_Z));
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if q(mid) > RED_TAIL {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    ScoreTable {
        score,
        red_z: hi as f32,
        yellow: log_likelihood(YELLOW_TAIL),
        before: log_likelihood(0.5),
    }
});

/// The score of a two-sided deviation of `z` standard deviations (z ≥ 0).
#[inline]
fn score_of(table: &ScoreTable, z: f32) -> f64 {
    if z < TABLE_MAX_Z {
        let f = z * TABLE_STEP;
        let k = f as usize;
        let (a, b) = (table.score[k], table.score[k + 1]);
        f64::from(a + (f - k as f32) * (b - a))
    } else {
        log_likelihood(q(f64::from(z)))
    }
}

/// How raw scores become the [0, 1] scores that are averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RawScale {
    /// The detector's score already lies in [0, 1] (clamped).
    Unit,
    /// `s / (s + scale)`: 0.5 at the detector's default threshold.
    Ratio(f64),
}

impl RawScale {
    #[inline]
    pub(crate) fn apply(self, s: f64) -> f64 {
        match self {
            RawScale::Unit => s.clamp(0.0, 1.0),
            RawScale::Ratio(scale) => super::unit_score(s, scale),
        }
    }
}

/// Unit scores are kept as 16-bit fractions of this, so sums are exact integers.
const UNIT: f64 = 65535.0;
/// The sum of a full ring of unit scores equals `SUM_UNIT` times their average.
const SUM_UNIT: f64 = SHORT as f64 * UNIT;
/// Scores seen before the likelihood is ready (the first estimate).
const READY: u16 = (LEARNING + ESTIMATION) as u16;

/// What one sample touches, in one cache line: the ring of recent unit scores and
/// their sum, the distribution in ring-sum units, the current block's sums.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Recent {
    /// Mean of the ring sum, and 1 / its standard deviation.
    mean_sum: f32,
    inv_std_sum: f32,
    /// Σ ring sum and Σ ring sum² since the last estimate (exact integers).
    block_sum: u64,
    block_sq: u64,
    /// Σ ring.
    sum: u32,
    ring: [u16; SHORT],
    /// Scores seen, saturating at [`READY`].
    seen: u16,
    /// Scores until the next estimate, once ready.
    until_estimate: u8,
    pos: u8,
}

/// Likelihood state of every series of one detector (slots are the detector's):
/// one [`Recent`] per slot, touched by every score, and the history (count, Σavg,
/// Σavg²), touched once per estimate.
#[derive(Debug, Clone)]
pub(crate) struct Likelihood {
    scale: RawScale,
    recent: Vec<Recent>,
    history: Vec<[f64; 3]>,
}

impl Likelihood {
    pub(crate) fn new(scale: RawScale) -> Self {
        // build the score table now, not in the middle of the first batch
        std::sync::LazyLock::force(&TABLE);
        Likelihood {
            scale,
            recent: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Makes room for `slot` and clears it (a new series or a freed one).
    pub(crate) fn reset(&mut self, slot: u32) {
        ensure(&mut self.recent, slot, 1, Recent::default());
        ensure(&mut self.history, slot, 1, [0.0; 3]);
        self.recent[slot as usize] = Recent::default();
        self.history[slot as usize] = [0.0; 3];
    }

    /// Clears `slot` if it exists.
    pub(crate) fn clear(&mut self, slot: u32) {
        if (slot as usize) < self.recent.len() {
            self.reset(slot);
        }
    }

    /// Replaces each score by its likelihood score. Entry `i` belongs to slot
    /// `slots[i]` and input value `vs[i]` (for staleness); NaN scores stay NaN.
    pub(crate) fn update(&mut self, slots: &[u32], vs: &[f64], score: &mut [f64]) {
        let table = &*TABLE;
        let scale = self.scale;
        let n = slots.len().min(vs.len()).min(score.len());
        for i in 0..n {
            let s = slots[i] as usize;
            let raw = score[i];
            if raw.is_nan() {
                // kernels give no score for a staleness marker: the series ended
                if is_stale_marker(vs[i]) && s < self.recent.len() {
                    self.reset(s as u32);
                }
                continue;
            }
            let (Some(r), Some(h)) = (self.recent.get_mut(s), self.history.get_mut(s)) else {
                continue;
            };
            let u = (scale.apply(raw) * UNIT + 0.5) as u16;
            let pos = usize::from(r.pos) % SHORT;
            let prev = r.sum;
            let sum = prev - u32::from(r.ring[pos]) + u32::from(u);
            r.ring[pos] = u;
            r.pos = if pos + 1 == SHORT { 0 } else { pos as u8 + 1 };
            r.sum = sum;
            let it = r.seen;
            if it < READY {
                r.seen = it + 1;
                score[i] = table.before;
            } else {
                if r.until_estimate == 0 {
                    estimate(r, h);
                }
                r.until_estimate -= 1;
                let z = (sum as f32 - r.mean_sum).abs() * r.inv_std_sum;
                let zp = (prev as f32 - r.mean_sum).abs() * r.inv_std_sum;
                score[i] = if z >= table.red_z && zp >= table.red_z {
                    table.yellow
                } else {
                    score_of(table, z)
                };
            }
            if it >= LEARNING as u16 {
                let sum = u64::from(sum);
                r.block_sum += sum;
                r.block_sq += sum * sum;
            }
        }
    }
}

/// Folds the block into the history and re-estimates the distribution.
#[cold]
fn estimate(r: &mut Recent, history: &mut [f64; 3]) {
    let [hn, hs, hq] = *history;
    let bn = f64::from(if hn == 0.0 { ESTIMATION } else { REESTIMATE });
    let bs = r.block_sum as f64 / SUM_UNIT;
    let bq = r.block_sq as f64 / (SUM_UNIT * SUM_UNIT);
    let keep = if hn + bn > HISTORY {
        (1.0 - bn / HISTORY).max(0.0)
    } else {
        1.0
    };
    let (n, sum, sq) = (hn * keep + bn, hs * keep + bs, hq * keep + bq);
    *history = [n, sum, sq];
    r.block_sum = 0;
    r.block_sq = 0;
    let mean = sum / n;
    let var = (sq / n - mean * mean).max(MIN_VARIANCE);
    r.mean_sum = (mean.max(MIN_MEAN) * SUM_UNIT) as f32;
    r.inv_std_sum = (1.0 / (var.sqrt() * SUM_UNIT)) as f32;
    r.until_estimate = REESTIMATE as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(l: &mut Likelihood, raw: &[f64]) -> Vec<f64> {
        let slots = vec![0u32; raw.len()];
        let vs = vec![1.0; raw.len()];
        let mut s = raw.to_vec();
        l.update(&slots, &vs, &mut s);
        s
    }

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f64 / 4000.0 // uniform in [0, 0.25)
            })
            .collect()
    }

    #[test]
    fn published_score_points() {
        assert!((log_likelihood(0.5) - 0.0301029996).abs() < 1e-9);
        assert!((log_likelihood(1e-5) - 0.5).abs() < 1e-6);
        assert!((log_likelihood(1e-3) - 0.3).abs() < 1e-6);
        assert!(
            (f64::from(TABLE.red_z) - 4.264890793922825).abs() < 1e-6,
            "{}",
            TABLE.red_z
        );
        // interpolation stays close to the exact value and monotone
        let mut last = 0.0;
        for k in 0..2000 {
            let z = k as f32 * 0.0041;
            let a = score_of(&TABLE, z);
            assert!((a - log_likelihood(q(f64::from(z)))).abs() < 1e-5, "z={z}");
            assert!(a >= last);
            last = a;
        }
    }

    #[test]
    fn sustained_rise_fires_once_then_is_held_yellow() {
        let mut l = Likelihood::new(RawScale::Unit);
        l.reset(0);
        let mut raw = noise(1000, 7);
        raw.extend(std::iter::repeat_n(1.0, 30));
        let s = run(&mut l, &raw);
        assert!(s[..388].iter().all(|&v| (v - 0.0301).abs() < 1e-3));
        assert!(s[400..1000].iter().all(|&v| v < 0.5), "quiet noise");
        let red: Vec<usize> = (1000..1030).filter(|&i| s[i] >= 0.5).collect();
        assert_eq!(red.len(), 1, "one red per episode: {red:?}");
        assert!(s[red[0] + 1..1030].iter().all(|&v| v <= 0.3 + 1e-9));
        assert!(s.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn a_noisy_series_going_flat_is_unusual() {
        let mut l = Likelihood::new(RawScale::Unit);
        l.reset(0);
        let mut raw: Vec<f64> = noise(2000, 3).iter().map(|v| v * 4.0).collect();
        raw.extend(std::iter::repeat_n(0.0, 40));
        let s = run(&mut l, &raw);
        assert!(s[2000..].iter().any(|&v| v >= 0.5));
    }

    #[test]
    fn nan_stays_nan_and_staleness_resets() {
        let mut l = Likelihood::new(RawScale::Ratio(3.0));
        l.reset(0);
        let mut s = vec![1.0, f64::NAN, 50.0];
        l.update(&[0, 0, 0], &[1.0, 1.0, 1.0], &mut s);
        assert!(s[1].is_nan());
        assert_eq!(l.recent[0].seen, 2);
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        let mut s = vec![f64::NAN];
        l.update(&[0], &[stale], &mut s);
        assert_eq!(l.recent[0].seen, 0);
        // an unknown slot is ignored
        let mut s = vec![1.0];
        l.update(&[9], &[1.0], &mut s);
        assert_eq!(s[0], 1.0);
    }

    #[test]
    fn one_cache_line_per_series_is_touched() {
        assert_eq!(std::mem::size_of::<Recent>(), 64);
        // the ring sum is exact: a long run of awkward values leaves no residue
        let mut l = Likelihood::new(RawScale::Unit);
        l.reset(0);
        run(&mut l, &noise(100_003, 5));
        run(&mut l, &[0.0; SHORT]);
        assert_eq!(l.recent[0].sum, 0);
    }

    #[test]
    fn long_runs_forget_at_the_history_rate() {
        let mut l = Likelihood::new(RawScale::Unit);
        l.reset(0);
        let raw = noise(40_000, 11);
        let s = run(&mut l, &raw);
        assert!(l.history[0][0] <= HISTORY + f64::from(REESTIMATE));
        assert!(s.iter().all(|v| (0.0..=1.0).contains(v)));
        // a stationary series raises (almost) no red
        assert!(s.iter().filter(|&&v| v >= 0.5).count() < 5);
    }
}
