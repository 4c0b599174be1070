//! Change detection with a two-sided CUSUM on standardised deviations from an
//! exponentially weighted baseline.
//!
//! Per series: EW mean and variance with time constant `window` (decay
//! `1 − e^{−Δt/window}`, so irregular sampling and gaps are weighted by time), and the
//! cumulative sums `S⁺ = max(0, S⁺ + z − k)`, `S⁻ = max(0, S⁻ − z − k)`. The score is
//! S⁺, S⁻ or their maximum by direction; when it exceeds the threshold the sums
//! restart at 0 (one alarm per change). A sustained level shift or a slope change
//! accumulates; single noisy points do not.
//!
//! Invariants: the EW weights are a convex combination, so the state cannot grow
//! without bound; NaN/±Inf are skipped, staleness resets; outputs are finite.

use super::kernel::{classify, ensure, Input, Outputs, Slots, MAX_SCORE};
use super::Direction;

/// Settings of a CUSUM kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TrendConfig {
    /// Baseline time constant in ms; `None` uses a per-sample factor of 0.01.
    pub(crate) window_ms: Option<i64>,
    /// Allowed slack per sample, in standard deviations.
    pub(crate) k: f64,
    /// Alarm level of the sums.
    pub(crate) threshold: f64,
    pub(crate) warmup: u32,
    pub(crate) direction: Direction,
}

/// Struct-of-arrays state of every series of one trend detector.
#[derive(Debug, Clone)]
pub(crate) struct Trend {
    cfg: TrendConfig,
    slots: Slots,
    mean: Vec<f64>,
    var: Vec<f64>,
    pos: Vec<f64>,
    neg: Vec<f64>,
    seen: Vec<u32>,
    last_t: Vec<i64>,
}

impl Trend {
    pub(crate) fn new(cfg: TrendConfig) -> Self {
        Trend {
            cfg,
            slots: Slots::default(),
            mean: Vec::new(),
            var: Vec::new(),
            pos: Vec::new(),
            neg: Vec::new(),
            seen: Vec::new(),
            last_t: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        for v in [&mut self.mean, &mut self.var, &mut self.pos, &mut self.neg] {
            ensure(v, s, 1, 0.0);
        }
        ensure(&mut self.seen, s, 1, 0);
        ensure(&mut self.last_t, s, 1, i64::MIN);
        self.reset(s as usize);
        s
    }

    pub(crate) fn free(&mut self, slot: u32) {
        if (slot as usize) < self.seen.len() {
            self.reset(slot as usize);
        }
        self.slots.free(slot);
    }

    fn reset(&mut self, s: usize) {
        self.mean[s] = 0.0;
        self.var[s] = 0.0;
        self.pos[s] = 0.0;
        self.neg[s] = 0.0;
        self.seen[s] = 0;
        self.last_t[s] = i64::MIN;
    }

    pub(crate) fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let (up, down) = self.cfg.direction.weights();
        let (k, h) = (self.cfg.k, self.cfg.threshold);
        let n_items = slots.len().min(ts.len()).min(vs.len()).min(out.len());
        for i in 0..n_items {
            let s = slots[i] as usize;
            if s >= self.seen.len() {
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
            let last = self.last_t[s];
            if t < last {
                continue;
            }
            self.last_t[s] = t;
            if self.seen[s] == 0 {
                self.mean[s] = x;
                self.var[s] = 0.0;
                self.seen[s] = 1;
                out.score[i] = 0.0;
                out.forecast[i] = x;
                continue;
            }
            let a = match self.cfg.window_ms {
                Some(w) if w > 0 => 1.0 - (-((t - last) as f64) / w as f64).exp(),
                _ => 0.01,
            }
            // a running average until the window is worth more than the samples
            // seen, so the baseline is not biased towards the first sample
            .max(1.0 / (f64::from(self.seen[s]) + 1.0));
            let (m, v) = (self.mean[s], self.var[s]);
            let floor = 1e-9 * m.abs().max(1.0);
            let z = ((x - m) / v.max(0.0).sqrt().max(floor)).clamp(-MAX_SCORE, MAX_SCORE);
            let warm = self.seen[s] >= self.cfg.warmup;
            if warm {
                self.pos[s] = (self.pos[s] + z - k).max(0.0);
                self.neg[s] = (self.neg[s] - z - k).max(0.0);
            }
            let score = (self.pos[s] * up).max(self.neg[s] * down).min(MAX_SCORE);
            out.score[i] = score;
            out.forecast[i] = m;
            if score > h {
                self.pos[s] = 0.0;
                self.neg[s] = 0.0;
            }
            let d = x - m;
            self.mean[s] = m + a * d;
            self.var[s] = (1.0 - a) * (v + a * d * d);
            self.seen[s] = self.seen[s].saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_shift_accumulates_and_noise_does_not() {
        let mut tr = Trend::new(TrendConfig {
            window_ms: Some(600_000),
            k: 0.5,
            threshold: 5.0,
            warmup: 20,
            direction: Direction::Both,
        });
        let s = tr.alloc();
        let n = 400;
        let ts: Vec<i64> = (0..n).map(|i| i * 10_000).collect();
        let vs: Vec<f64> = (0..n)
            .map(|i| {
                if i < 300 {
                    (i % 2) as f64
                } else {
                    2.0 + (i % 2) as f64
                }
            })
            .collect();
        let mut out = Outputs::default();
        out.reset(n as usize);
        tr.update(&vec![s; n as usize], &ts, &vs, &mut out);
        assert!(out.score[..300].iter().all(|&v| v <= 5.0));
        assert!(out.score[300..310].iter().any(|&v| v > 5.0));
        assert!(out.score.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn constant_series_and_bad_inputs_stay_finite() {
        let mut tr = Trend::new(TrendConfig {
            window_ms: None,
            k: 0.5,
            threshold: 5.0,
            warmup: 0,
            direction: Direction::Up,
        });
        let s = tr.alloc();
        let vs = [1.0, 1.0, 1.0, f64::NAN, f64::INFINITY, 1.0, 2.0];
        let ts = [0, 1, 2, 3, 4, 5, 6];
        let mut out = Outputs::default();
        out.reset(7);
        tr.update(&[s; 7], &ts, &vs, &mut out);
        assert_eq!(out.score[5], 0.0);
        assert!(out.score[6].is_finite() && out.score[6] > 5.0);
    }

    #[test]
    fn week_of_noise_raises_few_alarms_and_stays_finite() {
        let mut tr = Trend::new(TrendConfig {
            window_ms: Some(3_600_000),
            k: 0.5,
            threshold: 5.0,
            warmup: 10,
            direction: Direction::Both,
        });
        let s = tr.alloc();
        let n = 40_320usize;
        let mut x: u64 = 42;
        let vs: Vec<f64> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1e9 + (x % 1000) as f64 / 100.0
            })
            .collect();
        let ts: Vec<i64> = (0..n as i64).map(|i| i * 15_000).collect();
        let mut out = Outputs::default();
        out.reset(n);
        tr.update(&vec![s; n], &ts, &vs, &mut out);
        assert!(out.score.iter().all(|v| v.is_finite()));
        let alarms = out.score.iter().filter(|&&v| v > 5.0).count();
        assert!(alarms < n / 100, "{alarms} alarms on pure noise");
        assert!((tr.mean[0] - (1e9 + 5.0)).abs() < 1.0);
    }
}
