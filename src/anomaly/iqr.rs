//! Rolling interquartile range with Tukey fences, in bounded memory.
//!
//! Per series the window of at most `capacity` samples is kept as blocks of
//! `L = g·S` samples: the open (newest) block holds its values exactly, sorted; a
//! full block is closed and kept as its `S` stratum medians (the middle value of
//! each run of `g` consecutive sorted values), each standing for `g` samples. With
//! `S = min(16, ⌈capacity/16⌉)` and `g = ⌈capacity/(16·S)⌉`, a window has at most
//! about sixteen blocks, so a series costs about 9 bytes per kept median plus 8 per
//! open value: at most ≈ 2.5 KiB whatever the capacity (≈ 1.6 KiB at capacity 288
//! and 2.5 KiB at 256, against 24 bytes per sample, 6.9 and 6.1 KiB, for the exact
//! window this replaces). Up to capacity 256, `g = 1`: quantiles are exact. Beyond,
//! the value at any rank is off by at most `g/2` positions per closed block (at
//! capacity 288, `g = 2`: at most 8 of 288 ranks, about 3%). Either way the window
//! expires whole blocks: by count it holds between `capacity − L` and
//! `capacity − 1` samples before the new one, by time every block whose newest
//! sample left the window.
//!
//! A sample is scored before it enters the window: with quartiles q1, q3 (linear
//! interpolation over the window's ranks, each closed median counting `g` times) and
//! IQR = q3 − q1, the score is the distance beyond the fence `q3 + k·IQR` (or below
//! `q1 − k·IQR`) in IQR units, 0 inside the fences. When the IQR is 0 (more than half
//! the window holds one value) the window's half-range is the unit instead, so a
//! square wave or a mostly-idle series does not turn every excursion into an
//! astronomically large score.
//!
//! Invariants: `merged[slot]` holds the medians of exactly the live closed blocks,
//! sorted, each tagged with its block's sequence number; `open[slot]` is sorted; NaN
//! and ±Inf are skipped, staleness resets; a zero IQR uses a floor, so outputs stay
//! finite. An update allocates nothing.

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

/// Blocks per window, and most medians kept per closed block.
const BLOCKS: usize = 16;

/// The block layout for a capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    cap: usize,
    /// Medians kept per closed block.
    s: usize,
    /// Samples each median stands for.
    g: usize,
    /// Samples per block (`g·s`).
    l: usize,
    /// Closed blocks a slot has room for.
    blocks: usize,
}

impl Layout {
    /// The block sequence number `by` after `seq`. Numbers wrap at the largest
    /// multiple of `blocks` that fits a byte, so `seq % blocks` (the block's place
    /// in `block_t`) stays distinct among the live blocks across the wrap.
    fn seq_after(&self, seq: u8, by: usize) -> u8 {
        let period = self.blocks * (256 / self.blocks);
        ((usize::from(seq) + by) % period) as u8
    }
}

impl Layout {
    fn new(capacity: u32) -> Layout {
        let cap = capacity.max(4) as usize;
        let s = cap.div_ceil(BLOCKS).min(BLOCKS);
        let g = cap.div_ceil(BLOCKS * s);
        let l = g * s;
        Layout {
            cap,
            s,
            g,
            l,
            blocks: cap.div_ceil(l),
        }
    }
}

/// Struct-of-arrays state of every series of one IQR detector.
#[derive(Debug, Clone)]
pub(crate) struct Iqr {
    cfg: IqrConfig,
    lay: Layout,
    slots: Slots,
    /// Per slot, `blocks·s` medians of the closed blocks, sorted, and the sequence
    /// number of the block each came from.
    merged: Vec<f64>,
    merged_block: Vec<u8>,
    /// Per slot, `blocks` newest times of the closed blocks, by sequence number
    /// modulo `blocks`.
    block_t: Vec<i64>,
    /// Sequence number of the oldest closed block, and how many there are.
    oldest: Vec<u8>,
    closed: Vec<u8>,
    /// Per slot, `l` values of the open block, sorted, and its newest time.
    open: Vec<f64>,
    open_len: Vec<u32>,
    open_t: Vec<i64>,
    seen: Vec<u32>,
    last_t: Vec<i64>,
}

/// The values at the (ascending) ranks `ks` of the window made of `closed` (sorted,
/// each counting `g` times) and `open` (sorted, each once), written to `out`.
#[inline]
fn values_at(closed: &[f64], g: usize, open: &[f64], ks: &[usize], out: &mut [f64]) {
    let (mut i, mut j, mut below, mut p) = (0, 0, 0usize, 0);
    while p < ks.len() {
        let (v, width) = match (closed.get(i), open.get(j)) {
            (Some(&c), Some(&o)) if c <= o => {
                i += 1;
                (c, g)
            }
            (Some(&c), None) => {
                i += 1;
                (c, g)
            }
            (_, Some(&o)) => {
                j += 1;
                (o, 1)
            }
            (None, None) => {
                // Past the end (not reached for ranks below the window's size).
                out[p..].fill(f64::NAN);
                return;
            }
        };
        below += width;
        while p < ks.len() && ks[p] < below {
            out[p] = v;
            p += 1;
        }
    }
}

/// Linear-interpolated quantiles 0.25, 0.5, 0.75 of a window of `n ≥ 1` samples.
#[inline]
fn quartiles(closed: &[f64], g: usize, open: &[f64], n: usize) -> [f64; 3] {
    let mut ks = [0usize; 6];
    let mut frac = [0f64; 3];
    for (i, q) in [0.25, 0.5, 0.75].into_iter().enumerate() {
        let pos = q * (n - 1) as f64;
        let lo = pos as usize; // non-negative: truncation is floor, without a libm call
        ks[2 * i] = lo;
        ks[2 * i + 1] = (lo + 1).min(n - 1);
        frac[i] = pos - lo as f64;
    }
    // The ranks ascending (the pairs overlap when n is small): 0, 2, 4 are
    // ascending, and so are 1, 3, 5, each at most one above its partner.
    let mut order = [0usize, 2, 4, 1, 3, 5];
    order.sort_by_key(|&i| ks[i]); // six elements, stable
    let sorted = order.map(|i| ks[i]);
    let mut at = [0f64; 6];
    values_at(closed, g, open, &sorted, &mut at);
    let mut v = [0f64; 6];
    for (slot, &i) in order.iter().enumerate() {
        v[i] = at[slot];
    }
    [0, 1, 2].map(|i| v[2 * i] + (v[2 * i + 1] - v[2 * i]) * frac[i])
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
            lay: Layout::new(cfg.capacity),
            cfg,
            slots: Slots::default(),
            merged: Vec::new(),
            merged_block: Vec::new(),
            block_t: Vec::new(),
            oldest: Vec::new(),
            closed: Vec::new(),
            open: Vec::new(),
            open_len: Vec::new(),
            open_t: Vec::new(),
            seen: Vec::new(),
            last_t: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    /// Heap bytes of one series' state.
    #[cfg(test)]
    fn bytes_per_series(&self) -> usize {
        let m = self.lay.blocks * self.lay.s;
        m * (8 + 1) + self.lay.blocks * 8 + self.lay.l * 8 + 2 + 4 + 8 + 4 + 8
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        let m = self.lay.blocks * self.lay.s;
        ensure(&mut self.merged, s, m, 0.0);
        ensure(&mut self.merged_block, s, m, 0);
        ensure(&mut self.block_t, s, self.lay.blocks, i64::MIN);
        ensure(&mut self.oldest, s, 1, 0);
        ensure(&mut self.closed, s, 1, 0);
        ensure(&mut self.open, s, self.lay.l, 0.0);
        ensure(&mut self.open_len, s, 1, 0);
        ensure(&mut self.open_t, s, 1, i64::MIN);
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
        self.oldest[s] = 0;
        self.closed[s] = 0;
        self.open_len[s] = 0;
        self.open_t[s] = i64::MIN;
        self.seen[s] = 0;
        self.last_t[s] = i64::MIN;
    }

    /// Drops the oldest closed block of slot `s`.
    fn drop_oldest(&mut self, s: usize) {
        let lay = self.lay;
        let n = usize::from(self.closed[s]);
        if n == 0 {
            return;
        }
        let m = lay.blocks * lay.s;
        let seq = self.oldest[s];
        let (vals, ids) = (
            &mut self.merged[s * m..s * m + n * lay.s],
            &mut self.merged_block[s * m..s * m + n * lay.s],
        );
        let mut kept = 0;
        for r in 0..vals.len() {
            if ids[r] != seq {
                vals[kept] = vals[r];
                ids[kept] = ids[r];
                kept += 1;
            }
        }
        self.oldest[s] = lay.seq_after(seq, 1);
        self.closed[s] = (n - 1) as u8;
    }

    /// Turns the full open block of slot `s` into a closed one (its stratum medians).
    fn close_open(&mut self, s: usize) {
        let lay = self.lay;
        let m = lay.blocks * lay.s;
        if usize::from(self.closed[s]) == lay.blocks {
            self.drop_oldest(s); // not reached: count expiry keeps a free block
        }
        let n = usize::from(self.closed[s]);
        let seq = lay.seq_after(self.oldest[s], n);
        let open = s * lay.l;
        for j in 0..lay.s {
            let len = n * lay.s + j;
            let v = self.open[open + j * lay.g + (lay.g - 1) / 2];
            let row = &mut self.merged[s * m..(s + 1) * m];
            let pos = row[..len].partition_point(|&y| y <= v);
            row.copy_within(pos..len, pos + 1);
            row[pos] = v;
            let ids = &mut self.merged_block[s * m..(s + 1) * m];
            ids.copy_within(pos..len, pos + 1);
            ids[pos] = seq;
        }
        self.block_t[s * lay.blocks + usize::from(seq) % lay.blocks] = self.open_t[s];
        self.closed[s] = (n + 1) as u8;
        self.open_len[s] = 0;
    }

    /// Drops the blocks that leave the window when a sample at `t` arrives.
    #[inline]
    fn expire(&mut self, s: usize, t: i64) {
        let lay = self.lay;
        if let Some(w) = self.cfg.window_ms {
            let cut = t.saturating_sub(w);
            while self.closed[s] > 0
                && self.block_t[s * lay.blocks + usize::from(self.oldest[s]) % lay.blocks] <= cut
            {
                self.drop_oldest(s);
            }
            if self.closed[s] == 0 && self.open_len[s] > 0 && self.open_t[s] <= cut {
                self.open_len[s] = 0;
            }
        }
        while self.closed[s] > 0
            && usize::from(self.closed[s]) * lay.l + self.open_len[s] as usize >= lay.cap
        {
            self.drop_oldest(s);
        }
    }

    pub(crate) fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let dir = self.cfg.direction.weights();
        let k = self.cfg.k;
        let lay = self.lay;
        let m = lay.blocks * lay.s;
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
            if t < self.last_t[s] {
                continue;
            }
            self.last_t[s] = t;
            self.expire(s, t);
            let closed = &self.merged[s * m..s * m + usize::from(self.closed[s]) * lay.s];
            let open = &self.open[s * lay.l..s * lay.l + self.open_len[s] as usize];
            let n = closed.len() * lay.g + open.len();
            if n > 0 {
                let [q1, med, q3] = quartiles(closed, lay.g, open, n);
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
                    let first = match (closed.first(), open.first()) {
                        (Some(&a), Some(&b)) => a.min(b),
                        (Some(&a), None) | (None, Some(&a)) => a,
                        (None, None) => 0.0,
                    };
                    let last = match (closed.last(), open.last()) {
                        (Some(&a), Some(&b)) => a.max(b),
                        (Some(&a), None) | (None, Some(&a)) => a,
                        (None, None) => 0.0,
                    };
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
            let len = self.open_len[s] as usize;
            insert_sorted(&mut self.open[s * lay.l..(s + 1) * lay.l], len, x);
            self.open_len[s] = (len + 1) as u32;
            self.open_t[s] = t;
            if len + 1 == lay.l {
                self.close_open(s);
            }
            self.seen[s] = self.seen[s].saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IqrConfig {
        cfg_with(64, Some(100_000))
    }

    fn cfg_with(capacity: u32, window_ms: Option<i64>) -> IqrConfig {
        IqrConfig {
            window_ms,
            capacity,
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

    /// Samples in slot `s`'s window (closed medians count `g` times).
    fn window_len(q: &Iqr, s: usize) -> usize {
        usize::from(q.closed[s]) * q.lay.l + q.open_len[s] as usize
    }

    #[test]
    fn layout_bounds_memory_whatever_the_capacity() {
        for (cap, s, g, l) in [
            (4, 1, 1, 1),
            (16, 1, 1, 1),
            (64, 4, 1, 4),
            (256, 16, 1, 16),
            (288, 16, 2, 32),
        ] {
            let lay = Layout::new(cap);
            assert_eq!((lay.s, lay.g, lay.l), (s, g, l), "capacity {cap}");
            assert!(lay.blocks * lay.l >= lay.cap && lay.blocks <= 17, "{lay:?}");
        }
        let q = Iqr::new(cfg_with(256, None));
        assert!(q.bytes_per_series() <= 2_600, "{}", q.bytes_per_series());
        let q = Iqr::new(cfg_with(288, None));
        assert!(q.bytes_per_series() <= 1_700, "{}", q.bytes_per_series());
        let q = Iqr::new(cfg_with(65_536, None));
        assert!(q.bytes_per_series() <= 36_000, "{}", q.bytes_per_series());
    }

    #[test]
    fn merged_medians_stay_sorted_and_match_the_live_blocks() {
        let mut q = Iqr::new(cfg_with(256, Some(3_000_000)));
        let s = q.alloc();
        let xs: Vec<(i64, f64)> = (0..10_000)
            .map(|i| (i * 1000, ((i * 7919) % 101) as f64))
            .collect();
        run(&mut q, s, &xs);
        let m = q.lay.blocks * q.lay.s;
        let n = usize::from(q.closed[0]) * q.lay.s;
        let vals = &q.merged[..n];
        assert!(vals.windows(2).all(|w| w[0] <= w[1]));
        let ids = &q.merged_block[..n];
        for b in 0..q.closed[0] {
            let seq = q.lay.seq_after(q.oldest[0], usize::from(b));
            assert_eq!(ids.iter().filter(|&&x| x == seq).count(), q.lay.s);
        }
        // After the newest sample went in: at most the capacity.
        assert!((256 - q.lay.l..=256).contains(&window_len(&q, 0)));
        assert!(m >= n);
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
        assert_eq!(window_len(&q, 0), 20);
        run(&mut q, s, &[(1_000_000, 1.0)]);
        assert_eq!(window_len(&q, 0), 1, "the gap expired the whole window");
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        run(&mut q, s, &[(1_001_000, stale)]);
        assert_eq!(window_len(&q, 0), 0);
    }

    /// A plain model of the summarised window: blocks as vectors, expiry and
    /// summaries as described in the module docs, quantiles over the expanded
    /// multiset by sorting.
    struct Model {
        lay: Layout,
        window_ms: Option<i64>,
        closed: Vec<(i64, Vec<f64>)>,
        open: Vec<(i64, f64)>,
    }

    impl Model {
        fn expanded(&self) -> Vec<f64> {
            let mut w: Vec<f64> = self
                .closed
                .iter()
                .flat_map(|(_, m)| m.iter().flat_map(|&v| std::iter::repeat_n(v, self.lay.g)))
                .chain(self.open.iter().map(|p| p.1))
                .collect();
            w.sort_by(f64::total_cmp);
            w
        }

        fn score_then_add(&mut self, t: i64, v: f64, k: f64) -> f64 {
            if let Some(wm) = self.window_ms {
                self.closed.retain(|(bt, _)| *bt > t - wm);
                if self.closed.is_empty() && self.open.last().is_some_and(|p| p.0 <= t - wm) {
                    self.open.clear();
                }
            }
            while !self.closed.is_empty()
                && self.closed.len() * self.lay.l + self.open.len() >= self.lay.cap
            {
                self.closed.remove(0);
            }
            let w = self.expanded();
            let want = if w.is_empty() {
                0.0
            } else {
                let n = w.len();
                let quant = |q: f64| {
                    let pos = q * (n - 1) as f64;
                    let lo = pos as usize;
                    let hi = (lo + 1).min(n - 1);
                    w[lo] + (w[hi] - w[lo]) * (pos - lo as f64)
                };
                let (q1, q3) = (quant(0.25), quant(0.75));
                let iqr = q3 - q1;
                let spread = if iqr > 0.0 {
                    iqr
                } else {
                    0.5 * (w[n - 1] - w[0])
                };
                let d = if v > q3 + k * iqr {
                    v - q3 - k * iqr
                } else if v < q1 - k * iqr {
                    q1 - k * iqr - v
                } else {
                    0.0
                };
                ratio(d, spread, quant(0.5))
            };
            self.open.push((t, v));
            if self.open.len() == self.lay.l {
                let mut vals: Vec<f64> = self.open.iter().map(|p| p.1).collect();
                vals.sort_by(f64::total_cmp);
                let medians = (0..self.lay.s)
                    .map(|j| vals[j * self.lay.g + (self.lay.g - 1) / 2])
                    .collect();
                self.closed.push((t, medians));
                self.open.clear();
            }
            want
        }
    }

    #[test]
    fn scores_match_a_plain_model_with_irregular_steps() {
        for (window_ms, capacity) in [
            (Some(20_000), 64),
            (Some(1_000_000), 16),
            (None, 8),
            (None, 288),
            (Some(200_000), 256),
        ] {
            let mut q = Iqr::new(IqrConfig {
                warmup: 0,
                ..cfg_with(capacity, window_ms)
            });
            let s = q.alloc();
            let mut model = Model {
                lay: q.lay,
                window_ms,
                closed: Vec::new(),
                open: Vec::new(),
            };
            let mut x: u64 = 7;
            let mut t = 0i64;
            for _ in 0..3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += 1 + (x % 3000) as i64;
                let v = (x % 97) as f64 + if x % 50 == 0 { 500.0 } else { 0.0 };
                let got = run(&mut q, s, &[(t, v)]).score[0];
                let want = model.score_then_add(t, v, 1.5);
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{window_ms:?}/{capacity} t={t}: {got} vs {want}"
                );
            }
        }
    }

    /// The summarised quartiles stay within the documented rank error of the exact
    /// window's.
    #[test]
    fn quartiles_stay_within_the_rank_bound_of_the_exact_window() {
        let lay = Layout::new(288);
        let mut q = Iqr::new(IqrConfig {
            warmup: 0,
            ..cfg_with(288, None)
        });
        let s = q.alloc();
        let mut x: u64 = 11;
        let mut hist: Vec<f64> = Vec::new();
        for i in 0..5_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 10_000) as f64 / 100.0;
            if i > 400 {
                let m = q.lay.blocks * q.lay.s;
                let closed = &q.merged[..usize::from(q.closed[0]) * q.lay.s];
                let open = &q.open[..q.open_len[0] as usize];
                let n = closed.len() * q.lay.g + open.len();
                let [q1, _, q3] = quartiles(closed, q.lay.g, open, n);
                // The exact window of the same n newest samples.
                let mut w: Vec<f64> = hist[hist.len() - n..].to_vec();
                w.sort_by(f64::total_cmp);
                let bound = usize::from(q.closed[0]) * lay.g.div_ceil(2) + 1;
                for (got, quant) in [(q1, 0.25), (q3, 0.75)] {
                    let rank = w.partition_point(|&y| y < got) as f64;
                    let want = quant * (n - 1) as f64;
                    assert!(
                        (rank - want).abs() <= bound as f64,
                        "rank {rank} vs {want} (bound {bound}, n {n}, m {m})"
                    );
                }
            }
            run(&mut q, s, &[(i * 1000, v)]);
            hist.push(v);
        }
    }
}
