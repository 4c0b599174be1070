//! Rolling interquartile range with Tukey fences.
//!
//! Per series a bounded window of at most `capacity` samples is kept twice in one
//! contiguous block each: in arrival order (a ring of times and values, for expiry)
//! and sorted (for quartiles). Insertion and expiry are a binary search plus one
//! `copy_within` in the sorted block, so an update costs O(capacity) memory moves and
//! no allocation. A sample is scored before it enters the window: with quartiles
//! q1, q3 (linear interpolation) and IQR = q3 − q1, the score is the distance beyond
//! the fence `q3 + k·IQR` (or below `q1 − k·IQR`) in IQR units, 0 inside the fences.
//! When the IQR is 0 (more than half the window holds one value) the window's
//! half-range is the unit instead, so a square wave or a mostly-idle series does not
//! turn every excursion into an astronomically large score.
//!
//! Invariants: `sorted[slot*cap .. slot*cap+len]` is sorted and holds exactly the
//! ring's values; samples older than the window are dropped before scoring; NaN/±Inf
//! are skipped, staleness resets; a zero IQR uses a floor, so outputs stay finite.

use super::kernel::{classify, directed, ensure, ratio, Input, Outputs, Slots};
use super::Direction;

/// Settings of an IQR kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IqrConfig {
    /// Window length in ms; `None` keeps the last `capacity` samples.
    pub(crate) window_ms: Option<i64>,
    /// Most samples per series in the window.
    pub(crate) capacity: u32,
    /// Tukey's fence multiplier.
    pub(crate) k: f64,
    pub(crate) warmup: u32,
    pub(crate) direction: Direction,
}

/// Struct-of-arrays state of every series of one IQR detector.
#[derive(Debug, Clone)]
pub(crate) struct Iqr {
    cfg: IqrConfig,
    cap: usize,
    slots: Slots,
    ring_t: Vec<i64>,
    ring_v: Vec<f64>,
    sorted: Vec<f64>,
    head: Vec<u32>,
    len: Vec<u32>,
    seen: Vec<u32>,
    last_t: Vec<i64>,
}

/// Linear-interpolated quantile of the `n` values of sorted `row` that remain when
/// index `skip` (if any) is left out; `n ≥ 1`.
#[inline]
fn quantile(row: &[f64], n: usize, skip: Option<usize>, q: f64) -> f64 {
    let at = |k: usize| match skip {
        Some(r) if k >= r => row[k + 1],
        _ => row[k],
    };
    let pos = q * (n - 1) as f64;
    let lo = pos as usize; // non-negative: truncation is floor, without a libm call
    let hi = (lo + 1).min(n - 1);
    let frac = pos - lo as f64;
    let a = at(lo);
    a + (at(hi) - a) * frac
}

/// Index of one occurrence of `v` in the sorted first `len` values of `row`.
#[inline]
fn find_sorted(row: &[f64], len: usize, v: f64) -> usize {
    row[..len].partition_point(|&y| y < v).min(len - 1)
}

/// Replaces `row[r]` by `v` in the sorted first `len` values of `row`, moving only
/// the values between the old and the new position.
#[inline]
fn replace_sorted(row: &mut [f64], len: usize, r: usize, v: f64) {
    let p = row[..len].partition_point(|&y| y <= v);
    if p > r {
        row.copy_within(r + 1..p, r);
        row[p - 1] = v;
    } else {
        row.copy_within(p..r, p + 1);
        row[p] = v;
    }
}

/// Removes one occurrence of `v` from the first `len` values of `row`.
#[inline]
fn remove_sorted(row: &mut [f64], len: usize, v: f64) {
    let pos = find_sorted(row, len, v);
    row.copy_within(pos + 1..len, pos);
}

/// Inserts `v` into the first `len` values of `row` (which has room for one more).
#[inline]
fn insert_sorted(row: &mut [f64], len: usize, v: f64) {
    let pos = row[..len].partition_point(|&y| y <= v);
    row.copy_within(pos..len, pos + 1);
    row[pos] = v;
}

impl Iqr {
    pub(crate) fn new(cfg: IqrConfig) -> Self {
        Iqr {
            cap: cfg.capacity.max(4) as usize,
            cfg,
            slots: Slots::default(),
            ring_t: Vec::new(),
            ring_v: Vec::new(),
            sorted: Vec::new(),
            head: Vec::new(),
            len: Vec::new(),
            seen: Vec::new(),
            last_t: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        ensure(&mut self.ring_t, s, self.cap, 0);
        ensure(&mut self.ring_v, s, self.cap, 0.0);
        ensure(&mut self.sorted, s, self.cap, 0.0);
        ensure(&mut self.head, s, 1, 0);
        ensure(&mut self.len, s, 1, 0);
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
        self.head[s] = 0;
        self.len[s] = 0;
        self.seen[s] = 0;
        self.last_t[s] = i64::MIN;
    }

    /// Drops the oldest sample of slot `s`.
    #[inline]
    fn pop_oldest(&mut self, s: usize) {
        let cap = self.cap;
        let len = self.len[s] as usize;
        if len == 0 {
            return;
        }
        let h = self.head[s] as usize;
        let v = self.ring_v[s * cap + h];
        remove_sorted(&mut self.sorted[s * cap..(s + 1) * cap], len, v);
        self.head[s] = if h + 1 == cap { 0 } else { (h + 1) as u32 };
        self.len[s] = (len - 1) as u32;
    }

    pub(crate) fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let dir = self.cfg.direction.weights();
        let k = self.cfg.k;
        let cap = self.cap;
        let n_items = slots.len().min(ts.len()).min(vs.len()).min(out.len());
        // Look-ahead: plain loads from the window of the series LOOKAHEAD items on,
        // so its cache misses overlap with this item's work (a safe stand-in for a
        // prefetch instruction); their sum only feeds `black_box`.
        const LOOKAHEAD: usize = 6;
        let mut touch = 0.0f64;
        for i in 0..n_items {
            if let Some(&ahead) = slots.get(i + LOOKAHEAD) {
                let a = ahead as usize;
                if let (Some(&h), Some(&l)) = (self.head.get(a), self.len.get(a)) {
                    let b = a * cap;
                    let l = l as usize;
                    touch += self.ring_v.get(b + h as usize).copied().unwrap_or(0.0);
                    touch += self.ring_t.get(b + h as usize).copied().unwrap_or(0) as f64;
                    // one load per cache line of the sorted window
                    if let Some(w) = self.sorted.get(b..b + l) {
                        touch += w.iter().step_by(8).sum::<f64>();
                    }
                }
            }
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
            if t < self.last_t[s] {
                continue;
            }
            self.last_t[s] = t;
            // Expired samples, plus the oldest when the window is full. All but the
            // last are dropped now; the last is replaced by `x` in one move below,
            // and left out of the quantiles meanwhile.
            let base = s * cap;
            let mut len = self.len[s] as usize;
            let mut expire = 0;
            if let Some(w) = self.cfg.window_ms {
                let (h, cut) = (self.head[s] as usize, t.saturating_sub(w));
                while expire < len {
                    let j = if h + expire >= cap {
                        h + expire - cap
                    } else {
                        h + expire
                    };
                    if self.ring_t[base + j] > cut {
                        break;
                    }
                    expire += 1;
                }
            }
            if len - expire == cap {
                expire += 1;
            }
            for _ in 1..expire {
                self.pop_oldest(s);
            }
            len = self.len[s] as usize;
            let h = self.head[s] as usize;
            let skip = (expire > 0)
                .then(|| find_sorted(&self.sorted[base..base + cap], len, self.ring_v[base + h]));
            let n = len - usize::from(expire > 0);
            if n > 0 {
                let row = &self.sorted[base..base + len];
                let (q1, med, q3) = (
                    quantile(row, n, skip, 0.25),
                    quantile(row, n, skip, 0.5),
                    quantile(row, n, skip, 0.75),
                );
                let iqr = q3 - q1;
                let (hi, lo) = (q3 + k * iqr, q1 - k * iqr);
                let d = if x > hi {
                    x - hi
                } else if x < lo {
                    x - lo
                } else {
                    0.0
                };
                // more than half the window equal: the half-range stands in for the IQR
                let spread = if iqr > 0.0 {
                    iqr
                } else {
                    let (first, last) = (quantile(row, n, skip, 0.0), quantile(row, n, skip, 1.0));
                    0.5 * (last - first)
                };
                out.score[i] = if self.seen[s] >= self.cfg.warmup {
                    ratio(directed(d, dir), spread, med)
                } else {
                    0.0
                };
                out.upper[i] = hi;
                out.lower[i] = lo;
                out.forecast[i] = med;
            } else {
                out.score[i] = 0.0;
            }
            let row = &mut self.sorted[base..base + cap];
            match skip {
                Some(r) => {
                    // the oldest leaves and `x` enters: ring head moves on, sorted shifts once
                    replace_sorted(row, len, r, x);
                    let tail = if h + len >= cap {
                        h + len - cap
                    } else {
                        h + len
                    };
                    self.ring_t[base + tail] = t;
                    self.ring_v[base + tail] = x;
                    self.head[s] = if h + 1 == cap { 0 } else { (h + 1) as u32 };
                }
                None => {
                    insert_sorted(row, len, x);
                    let tail = if h + len >= cap {
                        h + len - cap
                    } else {
                        h + len
                    };
                    self.ring_t[base + tail] = t;
                    self.ring_v[base + tail] = x;
                    self.len[s] = (len + 1) as u32;
                }
            }
            self.seen[s] = self.seen[s].saturating_add(1);
        }
        std::hint::black_box(touch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IqrConfig {
        IqrConfig {
            window_ms: Some(100_000),
            capacity: 64,
            k: 1.5,
            warmup: 8,
            direction: Direction::Both,
        }
    }

    fn run(q: &mut Iqr, slot: u32, samples: &[(i64, f64)]) -> Outputs {
        let slots = vec![slot; samples.len()];
        let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let vs: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let mut out = Outputs::default();
        out.reset(samples.len());
        q.update(&slots, &ts, &vs, &mut out);
        out
    }

    #[test]
    fn sorted_window_matches_ring_after_long_run() {
        let mut q = Iqr::new(cfg());
        let s = q.alloc();
        let xs: Vec<(i64, f64)> = (0..10_000)
            .map(|i| (i * 1000, ((i * 7919) % 101) as f64))
            .collect();
        run(&mut q, s, &xs);
        let len = q.len[0] as usize;
        assert!(len <= 64);
        let mut ring: Vec<f64> = (0..len)
            .map(|j| q.ring_v[(q.head[0] as usize + j) % 64])
            .collect();
        ring.sort_by(f64::total_cmp);
        assert_eq!(&q.sorted[..len], &ring[..]);
    }

    #[test]
    fn outlier_beyond_fence_scores_in_iqr_units() {
        let mut q = Iqr::new(cfg());
        let s = q.alloc();
        let xs: Vec<(i64, f64)> = (0..40).map(|i| (i * 1000, (i % 5) as f64)).collect();
        run(&mut q, s, &xs);
        // quartiles 1 and 3: IQR 2, upper fence 6; 10 is 2 IQRs beyond
        let o = run(&mut q, s, &[(40_000, 10.0), (41_000, 2.0)]);
        assert!((o.score[0] - 2.0).abs() < 1e-9, "{}", o.score[0]);
        assert_eq!(o.score[1], 0.0);
    }

    #[test]
    fn constant_series_zero_iqr_is_finite() {
        let mut q = Iqr::new(cfg());
        let s = q.alloc();
        let xs: Vec<(i64, f64)> = (0..40).map(|i| (i * 1000, 3.0)).collect();
        let o = run(&mut q, s, &xs);
        assert!(o.score.iter().all(|&v| v == 0.0));
        let o = run(&mut q, s, &[(40_000, 4.0)]);
        assert!(o.score[0].is_finite() && o.score[0] > 1.0);
    }

    #[test]
    fn nan_inf_staleness_and_gap_expiry() {
        let mut q = Iqr::new(cfg());
        let s = q.alloc();
        let xs: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, (i % 5) as f64)).collect();
        run(&mut q, s, &xs);
        let o = run(&mut q, s, &[(20_000, f64::NAN), (21_000, f64::INFINITY)]);
        assert!(o.score[0].is_nan() && o.score[1].is_nan());
        assert_eq!(q.len[0], 20);
        run(&mut q, s, &[(1_000_000, 1.0)]);
        assert_eq!(q.len[0], 1, "the gap expired the whole window");
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        run(&mut q, s, &[(1_001_000, stale)]);
        assert_eq!(q.len[0], 0);
    }

    #[test]
    fn scores_match_brute_force_with_irregular_steps() {
        for (window_ms, capacity) in [(Some(20_000), 64), (Some(1_000_000), 16), (None, 8)] {
            let c = IqrConfig {
                window_ms,
                capacity,
                k: 1.5,
                warmup: 0,
                direction: Direction::Both,
            };
            let mut q = Iqr::new(c);
            let s = q.alloc();
            let mut x: u64 = 7;
            let mut t = 0i64;
            let mut hist: Vec<(i64, f64)> = Vec::new();
            for _ in 0..3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += 1 + (x % 3000) as i64;
                let v = (x % 97) as f64 + if x % 50 == 0 { 500.0 } else { 0.0 };
                let got = run(&mut q, s, &[(t, v)]).score[0];
                // brute force over the window before this sample
                let mut w: Vec<f64> = hist
                    .iter()
                    .filter(|(ht, _)| window_ms.is_none_or(|wm| *ht > t - wm))
                    .map(|p| p.1)
                    .collect();
                let keep = w.len().saturating_sub(capacity as usize - 1);
                let start = if w.len() >= capacity as usize {
                    keep
                } else {
                    0
                };
                w.drain(..start);
                let want = if w.is_empty() {
                    0.0
                } else {
                    w.sort_by(f64::total_cmp);
                    let n = w.len();
                    let (q1, q3) = (quantile(&w, n, None, 0.25), quantile(&w, n, None, 0.75));
                    let iqr = q3 - q1;
                    let spread = if iqr > 0.0 {
                        iqr
                    } else {
                        0.5 * (w[n - 1] - w[0])
                    };
                    let d = if v > q3 + 1.5 * iqr {
                        v - q3 - 1.5 * iqr
                    } else if v < q1 - 1.5 * iqr {
                        q1 - 1.5 * iqr - v
                    } else {
                        0.0
                    };
                    ratio(d, spread, quantile(&w, n, None, 0.5))
                };
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{window_ms:?} t={t}: {got} vs {want}"
                );
                hist.push((t, v));
            }
        }
    }
}
