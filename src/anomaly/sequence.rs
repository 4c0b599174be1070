//! Contextual sequence memory: how novel is this step of the series, at two time
//! resolutions? A bounded, per-series cousin of the contextual detectors that top
//! NAB's scoreboard (HTM's sequence memory, CAD OSE's contexts).
//!
//! Values are quantized into `bins` levels across the range seen during warm-up
//! (the quantizer then freezes, so levels keep their meaning). Beyond that range
//! there are [`EXTRA`] more levels on each side whose width doubles outward, so a
//! value 1000 ranges away still gets its own level without unbounded state. A step
//! is the pair (level now, jump from the previous level), the jump clamped to
//! ±[`JUMP`] with one "further" class per side. Each series keeps a count of every
//! step it has taken, saturating at 15 (4 bits), for two memories:
//!
//! * the fast memory sees every sample's step;
//! * the slow memory sees the step of the series' `block`-sample means (the last
//!   complete block's mean, so between block ends it sees that level stay put): it
//!   learns which levels the series *dwells* at, and notices a slow drift into a
//!   level it rarely holds even when every single step looks ordinary.
//!
//! The score is the average novelty of the two, `½/(1 + fast count) + ½/(1 + slow
//! count)`, in (0, 1]: 1 for a step never taken at either resolution, near 0.06
//! for a well-worn one. Raw novelty is noisy by nature; it is meant to be read
//! through the likelihood post-processor (`likelihood: true`, or `algorithm:
//! auto`), which asks whether the recent novelty is unusual for this series.
//!
//! The band (`anomaly_upper`/`anomaly_lower`) is the range seen so far widened by
//! `tolerance` of its width on each side (NuPIC's "spatial anomaly" bounds): `auto`
//! also reports any value outside it as an anomaly (score 1), since a value beyond
//! everything seen is what people label first. The band is written only once the
//! warm-up is over and the range is not empty.
//!
//! Invariants: state per slot is a few words plus `(bins + 2·EXTRA) · (2·JUMP + 3)`
//! bytes of counts (both memories share each byte: low and high nibble); NaN/±Inf
//! are skipped, staleness resets the slot; scores are in [0, 1] and the band finite.

use super::kernel::{classify, ensure, Input, Outputs, Slots};

/// Levels beyond the warm-up range on each side (their width doubles outward).
pub(crate) const EXTRA: i64 = 8;
/// Jumps of up to this many levels have their own class.
pub(crate) const JUMP: i64 = 3;
/// Step classes: jumps −JUMP..=JUMP plus one "further" class per side.
const CLASSES: usize = (2 * JUMP + 3) as usize;
/// Counts saturate here (4 bits).
const CAP: u8 = 15;
/// Marks "no previous level".
const NONE: u8 = u8::MAX;
/// Entries ahead whose count cells are loaded early, so their cache misses overlap
/// with the work on this one (a safe stand-in for a prefetch instruction).
const AHEAD: usize = 8;

/// Novelty of a count at half weight: `0.5 / (1 + count)`.
const HALF_NOVELTY: [f64; 16] = {
    let mut t = [0.0; 16];
    let mut c = 0;
    while c < 16 {
        t[c] = 0.5 / (1.0 + c as f64);
        c += 1;
    }
    t
};

/// Settings of a sequence kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SequenceConfig {
    /// Levels across the warm-up range (2..=64).
    pub(crate) bins: u32,
    /// Samples per block of the slow memory (≥ 1).
    pub(crate) block: u32,
    /// Samples after which the quantizer freezes and the band is written (≥ 1).
    pub(crate) warmup: u32,
    /// Band margin as a share of the seen range.
    pub(crate) tolerance: f64,
}

/// Struct-of-arrays state of every series of one sequence detector.
#[derive(Debug, Clone)]
pub(crate) struct Sequence {
    cfg: SequenceConfig,
    /// Count cells per slot.
    cells: usize,
    slots: Slots,
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Quantizer: level = floor((x − origin) · inv_width).
    inv_width: Vec<f64>,
    origin: Vec<f64>,
    seen: Vec<u32>,
    /// Previous level of the fast and slow memory.
    prev: Vec<[u8; 2]>,
    block_sum: Vec<f64>,
    block_len: Vec<u32>,
    /// The last complete block's mean (the slow memory's value).
    slow: Vec<f64>,
    /// `cells` bytes per slot: fast count in the low nibble, slow in the high.
    counts: Vec<u8>,
}

/// The step class of a move from level `prev` to level `now`.
#[inline]
fn class(prev: u8, now: usize) -> usize {
    ((now as i64 - i64::from(prev)).clamp(-JUMP - 1, JUMP + 1) + JUMP + 1) as usize
}

/// floor(log2(y)) for y ≥ 1 (the exponent of a normal float).
#[inline]
fn floor_log2(y: f64) -> i64 {
    ((y.to_bits() >> 52) & 0x7ff) as i64 - 1023
}

impl Sequence {
    pub(crate) fn new(cfg: SequenceConfig) -> Self {
        let cfg = SequenceConfig {
            bins: cfg.bins.clamp(2, 64),
            block: cfg.block.max(1),
            warmup: cfg.warmup.max(1),
            tolerance: if cfg.tolerance.is_finite() {
                cfg.tolerance.max(0.0)
            } else {
                0.0
            },
        };
        Sequence {
            cells: (cfg.bins as usize + 2 * EXTRA as usize) * CLASSES,
            cfg,
            slots: Slots::default(),
            lo: Vec::new(),
            hi: Vec::new(),
            inv_width: Vec::new(),
            origin: Vec::new(),
            seen: Vec::new(),
            prev: Vec::new(),
            block_sum: Vec::new(),
            block_len: Vec::new(),
            slow: Vec::new(),
            counts: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        for v in [
            &mut self.lo,
            &mut self.hi,
            &mut self.inv_width,
            &mut self.origin,
            &mut self.block_sum,
            &mut self.slow,
        ] {
            ensure(v, s, 1, 0.0);
        }
        ensure(&mut self.seen, s, 1, 0);
        ensure(&mut self.block_len, s, 1, 0);
        ensure(&mut self.prev, s, 1, [NONE; 2]);
        ensure(&mut self.counts, s, self.cells, 0);
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
        self.lo[s] = 0.0;
        self.hi[s] = 0.0;
        self.inv_width[s] = 0.0;
        self.origin[s] = 0.0;
        self.seen[s] = 0;
        self.prev[s] = [NONE; 2];
        self.block_sum[s] = 0.0;
        self.block_len[s] = 0;
        self.slow[s] = 0.0;
        self.counts[s * self.cells..(s + 1) * self.cells].fill(0);
    }

    /// The level of quantized position `u` (see the module docs).
    #[inline]
    fn level(&self, u: f64) -> usize {
        let bins = i64::from(self.cfg.bins);
        let l = if u < 0.0 {
            -1 - floor_log2(1.0 - u)
        } else if u < bins as f64 {
            u as i64
        } else {
            bins + floor_log2(u - bins as f64 + 1.0)
        };
        (l.clamp(-EXTRA, bins + EXTRA - 1) + EXTRA) as usize
    }

    /// Loads the two count cells sample `x` of slot `s` would touch, as the state is
    /// now, so that they are in cache when the sample is scored.
    #[inline]
    fn touch(&self, s: usize, x: f64) {
        if s >= self.seen.len() || !x.is_finite() {
            return;
        }
        let (o, k) = (self.origin[s], self.inv_width[s]);
        let [pf, ps] = self.prev[s];
        let base = s * self.cells;
        let fast = self.level((x - o) * k);
        let slow = self.level((self.slow[s] - o) * k);
        let at = |level: usize, prev: u8| {
            (base + level * CLASSES + class(prev, level)).min(self.counts.len() - 1)
        };
        std::hint::black_box(self.counts[at(fast, pf)]);
        std::hint::black_box(self.counts[at(slow, ps)]);
    }

    /// Scores then learns one sample per entry, in order. `out` is pre-sized.
    pub(crate) fn update(&mut self, slots: &[u32], _ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let cfg = self.cfg;
        let bins = f64::from(cfg.bins);
        let n_items = slots.len().min(vs.len()).min(out.len());
        for i in 0..n_items {
            if i + AHEAD < n_items {
                self.touch(slots[i + AHEAD] as usize, vs[i + AHEAD]);
            }
            let s = slots[i] as usize;
            if s >= self.seen.len() {
                continue;
            }
            let x = vs[i];
            match classify(x) {
                Input::Value => {}
                Input::Stale => {
                    self.reset(s);
                    continue;
                }
                Input::Skip => continue,
            }
            let seen = self.seen[s];
            if seen == 0 {
                self.lo[s] = x;
                self.hi[s] = x;
                self.slow[s] = x;
            }
            let (lo, hi) = (self.lo[s], self.hi[s]);
            if seen >= cfg.warmup && hi > lo {
                let margin = cfg.tolerance * (hi - lo);
                out.upper[i] = hi + margin;
                out.lower[i] = lo - margin;
            }
            let (lo, hi) = (lo.min(x), hi.max(x));
            self.lo[s] = lo;
            self.hi[s] = hi;
            if seen < cfg.warmup {
                let floor = 1e-9 * hi.abs().max(lo.abs()).max(1.0);
                self.inv_width[s] = 1.0 / ((hi - lo) / bins).max(floor);
                self.origin[s] = lo;
            }
            self.seen[s] = seen.saturating_add(1);
            let blen = self.block_len[s] + 1;
            let bsum = self.block_sum[s] + x;
            if blen >= cfg.block {
                self.slow[s] = bsum / f64::from(blen);
                self.block_sum[s] = 0.0;
                self.block_len[s] = 0;
            } else {
                self.block_sum[s] = bsum;
                self.block_len[s] = blen;
            }
            let (o, k) = (self.origin[s], self.inv_width[s]);
            let fast = self.level((x - o) * k);
            let slow = self.level((self.slow[s] - o) * k);
            let [pf, ps] = self.prev[s];
            self.prev[s] = [fast as u8, slow as u8];
            if pf == NONE {
                out.score[i] = 0.0;
                continue;
            }
            let base = s * self.cells;
            let kf = base + fast * CLASSES + class(pf, fast);
            let b = self.counts[kf];
            let cf = b & 0x0f;
            if cf < CAP {
                self.counts[kf] = b + 1;
            }
            let ks = base + slow * CLASSES + class(ps, slow);
            let b = self.counts[ks];
            let cs = b >> 4;
            if cs < CAP {
                self.counts[ks] = b + 0x10;
            }
            out.score[i] = HALF_NOVELTY[cf as usize] + HALF_NOVELTY[cs as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SequenceConfig {
        SequenceConfig {
            bins: 12,
            block: 4,
            warmup: 50,
            tolerance: 0.05,
        }
    }

    fn run(q: &mut Sequence, slot: u32, vs: &[f64]) -> Outputs {
        let mut out = Outputs::default();
        out.reset(vs.len());
        let ts: Vec<i64> = (0..vs.len() as i64).collect();
        q.update(&vec![slot; vs.len()], &ts, vs, &mut out);
        out
    }

    #[test]
    fn levels_cover_the_range_then_double_outward() {
        let q = Sequence::new(cfg());
        assert_eq!(q.level(0.0), 8);
        assert_eq!(q.level(11.99), 19);
        assert_eq!(q.level(12.0), 20);
        assert_eq!(q.level(13.0), 21);
        assert_eq!(q.level(14.9), 21);
        assert_eq!(q.level(15.0), 22);
        assert_eq!(q.level(1e300), 27);
        assert_eq!(q.level(-0.5), 7);
        assert_eq!(q.level(-1.0), 6);
        assert_eq!(q.level(-1e300), 0);
        assert_eq!(q.level(f64::INFINITY), 27);
    }

    #[test]
    fn a_repeated_pattern_becomes_familiar_and_a_new_one_is_novel() {
        let mut q = Sequence::new(cfg());
        let s = q.alloc();
        let wave: Vec<f64> = (0..400).map(|i| [0.0, 5.0, 10.0, 5.0][i % 4]).collect();
        let out = run(&mut q, s, &wave);
        assert!(
            out.score[300..].iter().all(|&v| v < 0.1),
            "{:?}",
            &out.score[300..310]
        );
        // a step never taken: 0 -> 2.5 (a level the wave never visits)
        let out = run(&mut q, s, &[0.0, 2.5]);
        assert!(out.score[0] < 0.1 && out.score[1] >= 0.5, "{:?}", out.score);
        // the band is the range widened by 5% on each side
        assert!((out.upper[0] - 10.5).abs() < 1e-9 && (out.lower[0] + 0.5).abs() < 1e-9);
    }

    #[test]
    fn slow_drift_into_a_rare_level_is_novel_at_the_slow_resolution() {
        let mut q = Sequence::new(SequenceConfig { block: 8, ..cfg() });
        let s = q.alloc();
        // noise over 0..12 for a long time, dwelling mostly in 4..8
        let mut x: u64 = 5;
        let mut vs = Vec::new();
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x % 1000) as f64 / 1000.0;
            vs.push(if r < 0.01 {
                0.5
            } else if r > 0.99 {
                11.5
            } else {
                4.0 + 4.0 * r
            });
        }
        run(&mut q, s, &vs);
        // now hold near 0.5: the fast memory soon knows the step 0.5 -> 0.5, but the
        // block means reach a level they never held before
        let out = run(&mut q, s, &[0.5; 64]);
        let fast_only = 0.5 / 8.0 + 0.5 / 16.0; // fast count ≥ 7 by then, slow worn
        assert!(
            out.score[7..16].iter().any(|&v| v > fast_only + 0.3),
            "{:?}",
            &out.score[..32]
        );
    }

    #[test]
    fn bad_inputs_never_poison_state_and_staleness_resets() {
        let mut q = Sequence::new(cfg());
        let s = q.alloc();
        let vs = [
            1.0,
            2.0,
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            1e300,
            3.0,
        ];
        let out = run(&mut q, s, &vs);
        assert!(out.score[2].is_nan() && out.score[3].is_nan() && out.score[5].is_nan());
        assert!(out.score[6].is_finite());
        assert!(q.hi[s as usize] == 3.0 && q.lo[s as usize] == 1.0);
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        run(&mut q, s, &[stale]);
        assert_eq!(q.seen[s as usize], 0);
        assert!(q.counts.iter().all(|&c| c == 0));
        let out = run(&mut q, s, &[7.0]);
        assert_eq!(out.score[0], 0.0);
    }

    #[test]
    fn constant_series_stays_quiet_and_has_no_band() {
        let mut q = Sequence::new(cfg());
        let s = q.alloc();
        let out = run(&mut q, s, &[5.0; 200]);
        assert!(out.score[50..].iter().all(|&v| v < 0.07));
        assert!(out.upper.iter().all(|v| v.is_nan()));
    }
}
