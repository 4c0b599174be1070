//! Rolling z-score: |x − mean| / std over a time window, scored before the sample is
//! added (so a spike does not dilute its own baseline).
//!
//! The window is kept as `buckets` time buckets per series, each holding (count,
//! mean, M2) of its samples. Completed buckets are merged once per bucket rotation
//! with Chan's pairwise formula into a cached baseline. The current bucket keeps
//! plain sums of `x − shift`, where `shift` is the baseline's mean when the bucket
//! starts (or the bucket's first value when there is no baseline), so adding a
//! sample costs no division; a sample is scored against baseline ⊕ current bucket,
//! both taken around `shift` (one division for 1/n, one square root and one for the
//! ratio). Sums restart every bucket and completed buckets are merged pairwise, so
//! there is no cancellation drift however long a series runs: the only subtraction
//! that can cancel is within one bucket against a shift near its values, and when
//! the bucket sits far from the baseline the between-bucket term it leaves intact
//! dominates the variance anyway. A bucket older than the window is simply not
//! merged, which also handles gaps. Without a window the baseline grows
//! over all history (plain Welford). The effective window is between
//! (buckets−1)/buckets·window and window. With a season, only the buckets at the same
//! phase of earlier seasons (same hour of previous days, say) are merged, so a daily
//! pattern is not an anomaly; the current bucket always counts.
//!
//! Invariants: all state arrays are per slot (`slot * buckets` for the bucket ring);
//! NaN/±Inf inputs are skipped, a staleness marker resets the slot; outputs are finite.

use super::kernel::{classify, directed, ensure, ratio, Input, Outputs, Slots};
use super::Direction;

/// Settings of a z-score kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ZScoreConfig {
    /// Window length in ms; `None` for a growing window over all history.
    pub(crate) window_ms: Option<i64>,
    /// Buckets per window (≥ 2).
    pub(crate) buckets: u32,
    /// Season length in ms: when set, only buckets at the same phase of earlier
    /// seasons form the baseline (a multiple of the bucket length).
    pub(crate) season_ms: Option<i64>,
    /// Band half-width in standard deviations (for `anomaly_upper`/`lower`).
    pub(crate) threshold: f64,
    /// Samples seen before scores are emitted.
    pub(crate) warmup: u32,
    pub(crate) direction: Direction,
}

/// Struct-of-arrays state of every series of one z-score detector.
#[derive(Debug, Clone)]
pub(crate) struct ZScore {
    cfg: ZScoreConfig,
    bucket_ms: i64,
    /// Buckets per season, when seasonal.
    season_buckets: Option<i64>,
    k: usize,
    slots: Slots,
    // current bucket: count and sums of (x - shift), (x - shift)²
    cur_id: Vec<i64>,
    cur_n: Vec<f64>,
    cur_sum: Vec<f64>,
    cur_sq: Vec<f64>,
    shift: Vec<f64>,
    // merged completed buckets inside the window
    base_n: Vec<f64>,
    base_mean: Vec<f64>,
    base_m2: Vec<f64>,
    // ring of completed buckets, `k` per slot
    ring_id: Vec<i64>,
    ring_n: Vec<f64>,
    ring_mean: Vec<f64>,
    ring_m2: Vec<f64>,
    /// First time after the current bucket (rotation is a compare, not a divide).
    cur_end: Vec<i64>,
}

/// Chan et al.'s pairwise merge of (n, mean, M2) statistics, one division. An empty
/// side returns the other exactly.
#[inline]
fn merge(na: f64, ma: f64, qa: f64, nb: f64, mb: f64, qb: f64) -> (f64, f64, f64) {
    if na <= 0.0 {
        return (nb, mb, qb);
    }
    if nb <= 0.0 {
        return (na, ma, qa);
    }
    let n = na + nb;
    let inv = 1.0 / n;
    let d = mb - ma;
    (n, ma + d * (nb * inv), qa + qb + d * d * (na * nb * inv))
}

impl ZScore {
    pub(crate) fn new(cfg: ZScoreConfig) -> Self {
        let k = cfg.buckets.max(2) as usize;
        let bucket_ms = match cfg.window_ms {
            Some(w) if w > 0 => (w / k as i64).max(1),
            _ => i64::MAX,
        };
        let season_buckets = cfg
            .season_ms
            .filter(|&s| s > 0 && bucket_ms != i64::MAX)
            .map(|s| (s / bucket_ms).max(1));
        ZScore {
            cfg,
            bucket_ms,
            season_buckets,
            k,
            slots: Slots::default(),
            cur_id: Vec::new(),
            cur_n: Vec::new(),
            cur_sum: Vec::new(),
            cur_sq: Vec::new(),
            shift: Vec::new(),
            base_n: Vec::new(),
            base_mean: Vec::new(),
            base_m2: Vec::new(),
            ring_id: Vec::new(),
            ring_n: Vec::new(),
            ring_mean: Vec::new(),
            ring_m2: Vec::new(),
            cur_end: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        for v in [
            &mut self.cur_n,
            &mut self.cur_sum,
            &mut self.cur_sq,
            &mut self.shift,
            &mut self.base_n,
            &mut self.base_mean,
            &mut self.base_m2,
        ] {
            ensure(v, s, 1, 0.0);
        }
        ensure(&mut self.cur_id, s, 1, i64::MIN);
        ensure(&mut self.cur_end, s, 1, i64::MIN);
        for v in [&mut self.ring_n, &mut self.ring_mean, &mut self.ring_m2] {
            ensure(v, s, self.k, 0.0);
        }
        ensure(&mut self.ring_id, s, self.k, i64::MIN);
        self.reset(s as usize);
        s
    }

    pub(crate) fn free(&mut self, slot: u32) {
        if (slot as usize) < self.cur_end.len() {
            self.reset(slot as usize);
        }
        self.slots.free(slot);
    }

    fn reset(&mut self, s: usize) {
        self.cur_id[s] = i64::MIN;
        self.cur_n[s] = 0.0;
        self.cur_sum[s] = 0.0;
        self.cur_sq[s] = 0.0;
        self.shift[s] = 0.0;
        self.base_n[s] = 0.0;
        self.base_mean[s] = 0.0;
        self.base_m2[s] = 0.0;
        self.cur_end[s] = i64::MIN;
        let r = s * self.k..(s + 1) * self.k;
        self.ring_id[r.clone()].fill(i64::MIN);
        self.ring_n[r].fill(0.0);
    }

    /// Moves the current bucket into the ring and re-merges the baseline from the
    /// buckets still inside the window. Runs once per bucket per series.
    #[cold]
    fn rotate(&mut self, s: usize, id: i64) {
        let k = self.k as i64;
        let old = self.cur_id[s];
        let cn = self.cur_n[s];
        if old != i64::MIN && cn > 0.0 {
            let p = s * self.k + old.rem_euclid(k) as usize;
            let (sum, sq) = (self.cur_sum[s], self.cur_sq[s]);
            self.ring_id[p] = old;
            self.ring_n[p] = cn;
            self.ring_mean[p] = self.shift[s] + sum / cn;
            self.ring_m2[p] = (sq - sum * sum / cn).max(0.0);
        }
        self.cur_id[s] = id;
        self.cur_end[s] = id.saturating_add(1).saturating_mul(self.bucket_ms);
        self.cur_n[s] = 0.0;
        self.cur_sum[s] = 0.0;
        self.cur_sq[s] = 0.0;
        let (mut n, mut m, mut q) = (0.0, 0.0, 0.0);
        for p in s * self.k..(s + 1) * self.k {
            let bid = self.ring_id[p];
            let in_window = bid != i64::MIN && bid > id.saturating_sub(k) && bid < id;
            // (id - bid cannot overflow once in_window holds)
            let same_phase = || {
                self.season_buckets
                    .is_none_or(|sb| (id - bid).rem_euclid(sb) == 0)
            };
            if in_window && same_phase() {
                (n, m, q) = merge(n, m, q, self.ring_n[p], self.ring_mean[p], self.ring_m2[p]);
            }
        }
        self.base_n[s] = n;
        self.base_mean[s] = m;
        self.base_m2[s] = q;
        // an empty baseline: the bucket's first value becomes the shift
        self.shift[s] = if n > 0.0 { m } else { f64::NAN };
    }

    /// Scores then adds one sample per entry, in order. `out` is pre-sized.
    ///
    /// Warm-up counts the samples inside the window. Samples arrive after the store
    /// accepted them, so they are in time order per series; an older sample would
    /// only join the current bucket.
    pub(crate) fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let dir = self.cfg.direction.weights();
        let thr = self.cfg.threshold;
        let warmup = f64::from(self.cfg.warmup);
        let n_items = slots.len().min(ts.len()).min(vs.len()).min(out.len());
        let (score, upper) = (&mut out.score[..n_items], &mut out.upper[..n_items]);
        let (lower, forecast) = (&mut out.lower[..n_items], &mut out.forecast[..n_items]);
        for i in 0..n_items {
            let s = slots[i] as usize;
            if s >= self.cur_end.len() {
                continue;
            }
            let (t, x) = (ts[i], vs[i]);
            match classify(x) {
                Input::Value => {}
                Input::Stale => {
                    self.reset(s);
                    continue;
                }
                Input::Skip => continue,
            }
            if t >= self.cur_end[s] {
                self.rotate(s, t.div_euclid(self.bucket_ms));
            }
            let mut shift = self.shift[s];
            if shift.is_nan() {
                shift = x;
                self.shift[s] = x;
            }
            let (cn, cs, cq) = (self.cur_n[s], self.cur_sum[s], self.cur_sq[s]);
            let (bn, bm, bq) = (self.base_n[s], self.base_mean[s], self.base_m2[s]);
            // baseline ⊕ current bucket, both around `shift` (the baseline's mean
            // unless the baseline was empty when the bucket started: then e = 0 as
            // bn = 0)
            let n = bn + cn;
            let e = if bn > 0.0 { bm - shift } else { 0.0 };
            let sum = bn * e + cs;
            let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
            let mean = shift + sum * inv;
            let m2 = (bq + bn * e * e + cq - sum * sum * inv).max(0.0);
            let std = (m2 * inv).sqrt();
            score[i] = if n >= warmup && n > 0.0 {
                ratio(directed(x - mean, dir), std, mean)
            } else {
                0.0
            };
            if n > 0.0 {
                forecast[i] = mean;
                upper[i] = mean + thr * std;
                lower[i] = mean - thr * std;
            }
            let d = x - shift;
            self.cur_n[s] = cn + 1.0;
            self.cur_sum[s] = cs + d;
            self.cur_sq[s] = cq + d * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window_ms: Option<i64>) -> ZScoreConfig {
        ZScoreConfig {
            window_ms,
            buckets: 8,
            season_ms: None,
            threshold: 3.0,
            warmup: 10,
            direction: Direction::Both,
        }
    }

    fn run(z: &mut ZScore, slot: u32, samples: &[(i64, f64)]) -> Vec<f64> {
        let slots = vec![slot; samples.len()];
        let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let vs: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let mut out = Outputs::default();
        out.reset(samples.len());
        z.update(&slots, &ts, &vs, &mut out);
        out.score
    }

    #[test]
    fn week_of_15s_samples_with_large_offset_has_no_drift() {
        // 40k samples/week at 15 s, values around 1e9 with ±1 noise: naive sums lose
        // all precision here; the bucketed Welford keeps mean and std exact.
        let mut z = ZScore::new(cfg(Some(3_600_000)));
        let s = z.alloc();
        let mut samples = Vec::new();
        for i in 0..40_320i64 {
            let noise = if i % 2 == 0 { 1.0 } else { -1.0 };
            samples.push((i * 15_000, 1e9 + noise));
        }
        let scores = run(&mut z, s, &samples);
        assert!(scores.iter().all(|v| v.is_finite()));
        // std is 1, deviation 1: the score stays at ~1 to the end.
        let last = scores[scores.len() - 1];
        assert!((last - 1.0).abs() < 1e-2, "{last}");
        let out = run(&mut z, s, &[(40_320 * 15_000, 1e9 + 10.0)]);
        assert!((out[0] - 10.0).abs() < 0.1, "{}", out[0]);
    }

    #[test]
    fn scores_match_a_brute_force_window_with_a_large_offset() {
        // 3 samples per 1 s bucket, 8 buckets per window: the baseline is every earlier
        // sample whose bucket is one of the last 8 (the current one included)
        let mut c = cfg(Some(8_000));
        c.warmup = 2;
        let mut z = ZScore::new(c);
        let s = z.alloc();
        let mut x: u64 = 99;
        let samples: Vec<(i64, f64)> = (0..600i64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let level = if i < 300 { 1e7 } else { 1e7 + 50.0 };
                (i * 333, level + (x % 1000) as f64 / 100.0)
            })
            .collect();
        let scores = run(&mut z, s, &samples);
        for (i, &(t, v)) in samples.iter().enumerate().skip(30) {
            let id = t / 1000;
            let base: Vec<f64> = samples[..i]
                .iter()
                .filter(|(tj, _)| tj / 1000 > id - 8)
                .map(|p| p.1)
                .collect();
            let n = base.len() as f64;
            let mean = base.iter().sum::<f64>() / n;
            let std = (base.iter().map(|b| (b - mean) * (b - mean)).sum::<f64>() / n).sqrt();
            let want = (v - mean).abs() / std;
            assert!(
                (scores[i] - want).abs() < 1e-6 * want.max(1.0),
                "sample {i}: {} vs {want}",
                scores[i]
            );
        }
    }

    #[test]
    fn constant_series_scores_zero_then_finite_on_change() {
        let mut z = ZScore::new(cfg(None));
        let s = z.alloc();
        let samples: Vec<(i64, f64)> = (0..50).map(|i| (i * 1000, 7.0)).collect();
        let scores = run(&mut z, s, &samples);
        assert!(scores.iter().all(|&v| v == 0.0));
        let out = run(&mut z, s, &[(50_000, 8.0)]);
        assert!(out[0].is_finite() && out[0] > 3.0);
    }

    #[test]
    fn nan_inf_and_staleness_never_poison_state() {
        let mut z = ZScore::new(cfg(None));
        let s = z.alloc();
        let mut samples: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, (i % 3) as f64)).collect();
        samples.push((20_000, f64::NAN));
        samples.push((21_000, f64::INFINITY));
        samples.push((22_000, f64::NEG_INFINITY));
        samples.push((23_000, 1.0));
        let scores = run(&mut z, s, &samples);
        assert!(scores[20].is_nan() && scores[21].is_nan() && scores[22].is_nan());
        assert!(scores[23].is_finite());
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        let out = run(&mut z, s, &[(24_000, stale), (25_000, 100.0)]);
        assert!(out[0].is_nan());
        assert_eq!(out[1], 0.0, "state reset by staleness: warming up again");
    }

    #[test]
    fn gap_longer_than_window_forgets_old_baseline() {
        let mut z = ZScore::new(cfg(Some(80_000)));
        let s = z.alloc();
        let a: Vec<(i64, f64)> = (0..100).map(|i| (i * 1000, (i % 2) as f64)).collect();
        run(&mut z, s, &a);
        // after a gap of 10 windows, the baseline holds only the new samples
        let b: Vec<(i64, f64)> = (0..100)
            .map(|i| (1_000_000 + i * 1000, 100.0 + (i % 2) as f64))
            .collect();
        let scores = run(&mut z, s, &b);
        assert!(scores[99] < 2.0, "{}", scores[99]);
    }

    #[test]
    fn direction_up_ignores_drops() {
        let mut c = cfg(None);
        c.direction = Direction::Up;
        let mut z = ZScore::new(c);
        let s = z.alloc();
        let a: Vec<(i64, f64)> = (0..30).map(|i| (i * 1000, (i % 2) as f64)).collect();
        run(&mut z, s, &a);
        let out = run(&mut z, s, &[(30_000, -50.0), (31_000, 50.0)]);
        assert_eq!(out[0], 0.0);
        assert!(out[1] > 3.0);
    }

    #[test]
    fn seasonal_baseline_compares_with_the_same_phase() {
        // a square wave: 2 buckets high, 2 low; season = 4 buckets, window = 4 seasons.
        // A high value in a low phase is within the window's overall range (plain
        // z ≈ 1) but far from what that phase looked like in earlier seasons.
        let bucket = 1000;
        let wave = |t: i64, i: i64| {
            let high = (t / bucket) % 4 < 2;
            (if high { 100.0 } else { 0.0 }) + (i % 3) as f64
        };
        let xs: Vec<(i64, f64)> = (0..400).map(|i| (i * 100, wave(i * 100, i))).collect();
        let mut c = cfg(Some(16 * bucket));
        c.buckets = 16;
        c.warmup = 0;
        let mut plain = ZScore::new(c);
        c.season_ms = Some(4 * bucket);
        let mut seasonal = ZScore::new(c);
        let (sp, ss) = (plain.alloc(), seasonal.alloc());
        run(&mut plain, sp, &xs);
        run(&mut seasonal, ss, &xs);
        // t = 42_000 is in bucket 42, a low phase (42 % 4 == 2)
        let t = 42_000;
        assert!(wave(t, 0) < 50.0);
        let p = run(&mut plain, sp, &[(t, 100.0)])[0];
        let q = run(&mut seasonal, ss, &[(t, 100.0)])[0];
        assert!(p < 3.0, "plain {p}");
        assert!(q > 10.0, "seasonal {q}");
        // and the normal low value scores low with the seasonal baseline
        let q = run(&mut seasonal, ss, &[(t + 100, 1.0)])[0];
        assert!(q < 3.0, "seasonal normal {q}");
    }
}
