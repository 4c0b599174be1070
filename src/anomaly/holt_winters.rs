//! Additive Holt-Winters (triple exponential smoothing) with a prediction band.
//!
//! Per series: level, trend, one seasonal term per phase (`season` samples per
//! cycle), and an exponentially weighted residual variance. A sample is compared with
//! the one-step forecast `level + trend + season[phase]` before it updates the state;
//! the score is the residual in units of the residual standard deviation, and the band
//! is `forecast ± threshold·σ`. The first cycle initialises level and seasonal terms
//! (the seasonal array itself is the buffer). When α, β or γ are not given they are
//! fitted per series by a small grid search minimising the one-step squared error on
//! the warm-up samples, which are buffered only for that series and only until the fit.
//!
//! Invariants: `season.len() == slots * max(season, 1)`; NaN/±Inf inputs are skipped,
//! staleness and gaps longer than `max_gap_ms` reset the series; outputs are finite.

use super::kernel::{classify, directed, ensure, ratio, Input, Outputs, Slots};
use super::Direction;

/// Settings of a Holt-Winters kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HoltWintersConfig {
    /// Samples per seasonal cycle; 0 or 1 for no seasonality (Holt's linear method).
    pub(crate) season: u32,
    pub(crate) alpha: Option<f64>,
    pub(crate) beta: Option<f64>,
    pub(crate) gamma: Option<f64>,
    /// Smoothing factor of the residual variance.
    pub(crate) rho: f64,
    /// Band half-width in residual standard deviations.
    pub(crate) threshold: f64,
    /// Samples before scores are emitted (and the fitting length, if fitting).
    pub(crate) warmup: u32,
    pub(crate) direction: Direction,
    /// A gap longer than this (ms) resets the series.
    pub(crate) max_gap_ms: Option<i64>,
}

const ALPHAS: [f64; 5] = [0.05, 0.1, 0.2, 0.4, 0.7];
const BETAS: [f64; 4] = [0.0, 0.01, 0.05, 0.15];
const GAMMAS: [f64; 4] = [0.05, 0.1, 0.3, 0.5];

/// Struct-of-arrays state of every series of one Holt-Winters detector.
#[derive(Debug, Clone)]
pub(crate) struct HoltWinters {
    cfg: HoltWintersConfig,
    m: usize,
    fit: bool,
    slots: Slots,
    level: Vec<f64>,
    trend: Vec<f64>,
    season: Vec<f64>,
    /// EW residual variance; negative until the first residual.
    var: Vec<f64>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    gamma: Vec<f64>,
    /// Samples learned since the last reset (saturating).
    seen: Vec<u32>,
    /// Seasonal phase of the next sample, in `0..m`.
    phase: Vec<u32>,
    /// Time of the last sample; kept only when `max_gap_ms` is set.
    last_t: Vec<i64>,
    /// Warm-up samples of series still waiting for their fit (empty otherwise).
    fit_buf: Vec<Vec<f64>>,
}

/// One Holt-Winters step; returns (level, trend, seasonal term).
#[inline]
fn step(l: f64, b: f64, s: f64, x: f64, a: f64, be: f64, g: f64) -> (f64, f64, f64) {
    let nl = a * (x - s) + (1.0 - a) * (l + b);
    let nb = be * (nl - l) + (1.0 - be) * b;
    let ns = g * (x - nl) + (1.0 - g) * s;
    (nl, nb, ns)
}

/// Sum of squared one-step errors of `xs` after the first cycle.
fn sse(xs: &[f64], m: usize, a: f64, be: f64, g: f64, season: &mut Vec<f64>) -> f64 {
    let m1 = m.max(1);
    if xs.len() <= m1 {
        return 0.0;
    }
    let init = &xs[..m1];
    let l0 = init.iter().sum::<f64>() / m1 as f64;
    season.clear();
    if m > 1 {
        season.extend(init.iter().map(|x| x - l0));
    } else {
        season.push(0.0);
    }
    let (mut l, mut b) = (l0, 0.0);
    let mut err = 0.0;
    for (i, &x) in xs.iter().enumerate().skip(m1) {
        let p = if m > 1 { i % m } else { 0 };
        let f = l + b + season[p];
        err += (x - f) * (x - f);
        (l, b, season[p]) = step(l, b, season[p], x, a, be, g);
    }
    err
}

impl HoltWinters {
    pub(crate) fn new(cfg: HoltWintersConfig) -> Self {
        let fit = cfg.alpha.is_none() || cfg.beta.is_none() || cfg.gamma.is_none();
        HoltWinters {
            m: cfg.season.max(1) as usize,
            fit,
            cfg,
            slots: Slots::default(),
            level: Vec::new(),
            trend: Vec::new(),
            season: Vec::new(),
            var: Vec::new(),
            alpha: Vec::new(),
            beta: Vec::new(),
            gamma: Vec::new(),
            seen: Vec::new(),
            phase: Vec::new(),
            last_t: Vec::new(),
            fit_buf: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    /// Samples buffered for fitting: at least two cycles.
    fn fit_len(&self) -> usize {
        (self.cfg.warmup as usize).max(2 * self.m).max(8)
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        for v in [
            &mut self.level,
            &mut self.trend,
            &mut self.var,
            &mut self.alpha,
            &mut self.beta,
            &mut self.gamma,
        ] {
            ensure(v, s, 1, 0.0);
        }
        ensure(&mut self.season, s, self.m, 0.0);
        ensure(&mut self.seen, s, 1, 0);
        ensure(&mut self.phase, s, 1, 0);
        ensure(&mut self.last_t, s, 1, i64::MIN);
        if self.fit_buf.len() <= s as usize {
            self.fit_buf.resize_with(s as usize + 1, Vec::new);
        }
        self.reset(s as usize);
        s
    }

    pub(crate) fn free(&mut self, slot: u32) {
        if (slot as usize) < self.seen.len() {
            self.reset(slot as usize);
            self.fit_buf[slot as usize] = Vec::new();
        }
        self.slots.free(slot);
    }

    fn reset(&mut self, s: usize) {
        self.level[s] = 0.0;
        self.trend[s] = 0.0;
        self.var[s] = -1.0;
        self.alpha[s] = self.cfg.alpha.unwrap_or(0.2);
        self.beta[s] = self.cfg.beta.unwrap_or(0.01);
        self.gamma[s] = self.cfg.gamma.unwrap_or(0.1);
        self.seen[s] = 0;
        self.phase[s] = 0;
        self.last_t[s] = i64::MIN;
        self.season[s * self.m..(s + 1) * self.m].fill(0.0);
        self.fit_buf[s].clear();
    }

    /// Grid-searches the parameters not given on the buffered warm-up samples, then
    /// replays the buffer to build the state. Runs once per series.
    #[cold]
    fn fit_and_replay(&mut self, s: usize) {
        let xs = std::mem::take(&mut self.fit_buf[s]);
        let one = |given: Option<f64>, grid: &'static [f64]| -> Vec<f64> {
            given.map_or_else(|| grid.to_vec(), |v| vec![v])
        };
        let mut scratch = Vec::with_capacity(self.m);
        let mut best = (f64::INFINITY, self.alpha[s], self.beta[s], self.gamma[s]);
        for &a in &one(self.cfg.alpha, &ALPHAS) {
            for &b in &one(self.cfg.beta, &BETAS) {
                for &g in &one(self.cfg.gamma, &GAMMAS) {
                    let e = sse(&xs, self.m, a, b, g, &mut scratch);
                    if e < best.0 {
                        best = (e, a, b, g);
                    }
                }
            }
        }
        (self.alpha[s], self.beta[s], self.gamma[s]) = (best.1, best.2, best.3);
        self.seen[s] = 0;
        self.phase[s] = 0;
        for &x in &xs {
            let params = (self.alpha[s], self.beta[s], self.gamma[s]);
            self.learn(s, x, params);
        }
        // keep the allocation for a later reset of this slot only if small
        self.fit_buf[s] = xs;
        self.fit_buf[s].clear();
        self.fit_buf[s].shrink_to(0);
    }

    /// Updates state with `x` and returns the prior forecast and residual σ (NaN
    /// while the first cycle initialises, σ NaN before the first residual).
    #[inline]
    fn learn(&mut self, s: usize, x: f64, (a, be, g): (f64, f64, f64)) -> (f64, f64) {
        let m = self.m;
        let seen = self.seen[s] as usize;
        self.seen[s] = self.seen[s].saturating_add(1);
        let ph = self.phase[s] as usize;
        self.phase[s] = if ph + 1 >= m { 0 } else { (ph + 1) as u32 };
        let p = s * m + ph;
        if seen < m {
            // first cycle: the seasonal array buffers the raw values
            self.season[p] = x;
            self.level[s] += x;
            if seen + 1 == m {
                let l0 = self.level[s] / m as f64;
                self.level[s] = l0;
                let row = &mut self.season[s * m..(s + 1) * m];
                if m > 1 {
                    row.iter_mut().for_each(|v| *v -= l0);
                } else {
                    row[0] = 0.0;
                }
            }
            return (f64::NAN, f64::NAN);
        }
        let (l, b, sv) = (self.level[s], self.trend[s], self.season[p]);
        let f = l + b + sv;
        let r = x - f;
        (self.level[s], self.trend[s], self.season[p]) = step(l, b, sv, x, a, be, g);
        let rho = self.cfg.rho;
        let v = self.var[s];
        let (sigma, nv) = if v < 0.0 {
            (f64::NAN, r * r)
        } else {
            (v.sqrt(), (1.0 - rho) * v + rho * r * r)
        };
        self.var[s] = nv;
        (f, sigma)
    }

    pub(crate) fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let dir = self.cfg.direction.weights();
        let thr = self.cfg.threshold;
        let warmup = self.cfg.warmup.max(self.m as u32 + 1);
        let fit_len = self.fit_len();
        let fixed = (
            self.cfg.alpha.unwrap_or(0.2),
            self.cfg.beta.unwrap_or(0.01),
            self.cfg.gamma.unwrap_or(0.1),
        );
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
            if let Some(g) = self.cfg.max_gap_ms {
                let last = self.last_t[s];
                if t < last {
                    continue;
                }
                if last != i64::MIN && t - last > g {
                    self.reset(s);
                }
                self.last_t[s] = t;
            }
            if self.fit && self.seen[s] == 0 && self.fit_buf[s].len() < fit_len {
                self.fit_buf[s].push(x);
                out.score[i] = 0.0;
                if self.fit_buf[s].len() == fit_len {
                    self.fit_and_replay(s);
                }
                continue;
            }
            let seen = self.seen[s];
            let params = if self.fit {
                (self.alpha[s], self.beta[s], self.gamma[s])
            } else {
                fixed
            };
            let (f, sigma) = self.learn(s, x, params);
            if f.is_nan() {
                out.score[i] = 0.0;
                continue;
            }
            let sig = if sigma.is_nan() { 0.0 } else { sigma };
            out.score[i] = if seen >= warmup && !sigma.is_nan() {
                ratio(directed(x - f, dir), sig, f)
            } else {
                0.0
            };
            out.forecast[i] = f;
            out.upper[i] = f + thr * sig;
            out.lower[i] = f - thr * sig;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(season: u32) -> HoltWintersConfig {
        HoltWintersConfig {
            season,
            alpha: Some(0.3),
            beta: Some(0.01),
            gamma: Some(0.2),
            rho: 0.05,
            threshold: 3.0,
            warmup: 0,
            direction: Direction::Both,
            max_gap_ms: None,
        }
    }

    fn run(h: &mut HoltWinters, slot: u32, samples: &[(i64, f64)]) -> Outputs {
        let slots = vec![slot; samples.len()];
        let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let vs: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let mut out = Outputs::default();
        out.reset(samples.len());
        h.update(&slots, &ts, &vs, &mut out);
        out
    }

    fn seasonal(i: i64) -> f64 {
        100.0 + 10.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin() + (i % 3) as f64 * 0.1
    }

    #[test]
    fn seasonal_series_forecast_tracks_and_spike_scores_high() {
        let mut h = HoltWinters::new(cfg(24));
        let s = h.alloc();
        let xs: Vec<(i64, f64)> = (0..24 * 20).map(|i| (i * 1000, seasonal(i))).collect();
        let out = run(&mut h, s, &xs);
        let n = xs.len();
        assert!((out.forecast[n - 1] - xs[n - 1].1).abs() < 1.0);
        assert!(out.score[n - 1] < 3.0);
        let i = n as i64;
        let spike = run(&mut h, s, &[(i * 1000, seasonal(i) + 20.0)]);
        assert!(spike.score[0] > 5.0, "{}", spike.score[0]);
        assert!(spike.upper[0] > spike.forecast[0] && spike.lower[0] < spike.forecast[0]);
    }

    #[test]
    fn fitted_parameters_on_warmup() {
        let mut c = cfg(24);
        c.alpha = None;
        c.beta = None;
        c.gamma = None;
        c.warmup = 24 * 4;
        let mut h = HoltWinters::new(c);
        let s = h.alloc();
        let xs: Vec<(i64, f64)> = (0..24 * 10).map(|i| (i * 1000, seasonal(i))).collect();
        let out = run(&mut h, s, &xs);
        assert!(out.score.iter().all(|v| v.is_finite()));
        assert!(out.score[24 * 9] < 3.0);
        assert!(h.fit_buf[s as usize].capacity() == 0);
    }

    #[test]
    fn constant_series_zero_variance_is_finite() {
        let mut h = HoltWinters::new(cfg(0));
        let s = h.alloc();
        let xs: Vec<(i64, f64)> = (0..100).map(|i| (i * 1000, 5.0)).collect();
        let out = run(&mut h, s, &xs);
        assert!(out.score.iter().all(|&v| v == 0.0));
        let o = run(&mut h, s, &[(100_000, 6.0)]);
        assert!(o.score[0].is_finite() && o.score[0] > 3.0);
    }

    #[test]
    fn nan_inf_staleness_and_gap_reset() {
        let mut c = cfg(4);
        c.max_gap_ms = Some(10_000);
        let mut h = HoltWinters::new(c);
        let s = h.alloc();
        let mut xs: Vec<(i64, f64)> = (0..40).map(|i| (i * 1000, (i % 4) as f64)).collect();
        xs.push((40_000, f64::NAN));
        xs.push((41_000, f64::NEG_INFINITY));
        let out = run(&mut h, s, &xs);
        assert!(out.score[40].is_nan() && out.score[41].is_nan());
        let o = run(&mut h, s, &[(42_000, 2.0)]);
        assert!(o.score[0].is_finite());
        let o = run(&mut h, s, &[(100_000, 50.0)]);
        assert_eq!(o.score[0], 0.0, "gap resets: initialising again");
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        let o = run(&mut h, s, &[(101_000, stale)]);
        assert!(o.score[0].is_nan());
        assert_eq!(h.seen[s as usize], 0);
    }

    #[test]
    fn month_of_seasonal_samples_stays_bounded_and_accurate() {
        // 30 days at 5 min with a daily season and a large offset
        let mut c = cfg(288);
        c.alpha = Some(0.1);
        let mut h = HoltWinters::new(c);
        let s = h.alloc();
        let n = 288 * 30;
        let day = |i: i64| {
            1e7 + 100.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin()
                + if i % 2 == 0 { 1.0 } else { -1.0 }
        };
        let xs: Vec<(i64, f64)> = (0..n).map(|i| (i * 300_000, day(i))).collect();
        let out = run(&mut h, s, &xs);
        assert!(out.score.iter().all(|v| v.is_finite()));
        assert!(out.forecast.iter().skip(288).all(|v| v.is_finite()));
        let last = n as usize - 1;
        assert!((out.forecast[last] - xs[last].1).abs() < 5.0);
        assert!(out.score[last] < 4.0, "{}", out.score[last]);
    }
}
