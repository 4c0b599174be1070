//! Shared pieces of the update kernels: input classification, directional deviation,
//! the zero-variance-safe ratio, slot allocation and the batch output buffers.

use crate::storage::is_stale_marker;

/// Largest score a kernel emits; keeps every output finite.
pub(crate) const MAX_SCORE: f64 = 1e12;

/// Values with a larger magnitude are skipped: their square would overflow.
const MAX_ABS_VALUE: f64 = 1e150;

/// What a kernel does with one input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// A usable finite value.
    Value,
    /// Prometheus's staleness marker: the series ended; reset its state.
    Stale,
    /// NaN, ±Inf or too large: skipped, state untouched.
    Skip,
}

#[inline]
pub(crate) fn classify(v: f64) -> Input {
    if v.is_finite() && v.abs() < MAX_ABS_VALUE {
        Input::Value
    } else if is_stale_marker(v) {
        Input::Stale
    } else {
        Input::Skip
    }
}

/// Direction of deviations that count as anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Only values above the baseline.
    Up,
    /// Only values below the baseline.
    Down,
    /// Both sides.
    #[default]
    Both,
}

impl Direction {
    /// Weights (up, down) applied to a signed deviation, so the kernel stays branch-free.
    #[inline]
    pub(crate) fn weights(self) -> (f64, f64) {
        match self {
            Direction::Up => (1.0, 0.0),
            Direction::Down => (0.0, 1.0),
            Direction::Both => (1.0, 1.0),
        }
    }
}

/// The part of signed deviation `d` that counts under direction weights `(up, down)`.
#[inline]
pub(crate) fn directed(d: f64, (up, down): (f64, f64)) -> f64 {
    (d * up).max(0.0) + (-d * down).max(0.0)
}

/// `dev / spread` with a floor on the spread relative to the baseline's magnitude:
/// zero deviation is 0 even with zero spread, and the result is always finite.
#[inline]
pub(crate) fn ratio(dev: f64, spread: f64, center: f64) -> f64 {
    if dev.is_nan() || dev <= 0.0 {
        return 0.0;
    }
    let floor = 1e-9 * center.abs().max(1.0);
    (dev / spread.max(floor)).min(MAX_SCORE)
}

/// Maps a non-negative raw score into [0, 1): `s / (s + scale)`. Monotone, 0.5 at
/// `s == scale`, never saturates to 1 for finite scores (so a threshold sweep keeps
/// its resolution). NaN maps to 0.
#[inline]
pub fn unit_score(s: f64, scale: f64) -> f64 {
    if s.is_nan() || s <= 0.0 {
        0.0
    } else {
        s / (s + scale.max(f64::MIN_POSITIVE))
    }
}

/// Slot allocation for a struct-of-arrays state: freed slots are reused. Allocating
/// and freeing are O(1), so dropping many series at once costs O(series).
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    len: u32,
    free: Vec<u32>,
    /// Per slot: whether it is in `free` (a second free of a slot is ignored).
    is_free: Vec<bool>,
}

impl Slots {
    /// Returns `(slot, is_new)`; a new slot extends the arrays by one.
    pub(crate) fn alloc(&mut self) -> (u32, bool) {
        match self.free.pop() {
            Some(s) => {
                self.is_free[s as usize] = false;
                (s, false)
            }
            None => {
                self.len += 1;
                self.is_free.push(false);
                (self.len - 1, true)
            }
        }
    }

    pub(crate) fn free(&mut self, slot: u32) {
        if let Some(f) = self.is_free.get_mut(slot as usize).filter(|f| !**f) {
            *f = true;
            self.free.push(slot);
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.len as usize - self.free.len()
    }
}

/// Per-sample outputs of one batch update, index-aligned with the input. NaN means
/// "no output for this sample" (a skipped input, or an output the detector lacks).
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `anomaly_score`.
    pub score: Vec<f64>,
    /// `anomaly_upper`: upper edge of the normal band.
    pub upper: Vec<f64>,
    /// `anomaly_lower`: lower edge of the normal band.
    pub lower: Vec<f64>,
    /// `anomaly_forecast`: the expected value.
    pub forecast: Vec<f64>,
}

impl Outputs {
    /// Clears and sizes every column to `n`, filled with NaN.
    pub fn reset(&mut self, n: usize) {
        for c in [
            &mut self.score,
            &mut self.upper,
            &mut self.lower,
            &mut self.forecast,
        ] {
            c.clear();
            c.resize(n, f64::NAN);
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.score.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.score.is_empty()
    }
}

/// Grows `v` so that index `slot` of a per-slot block of `width` exists.
#[inline]
pub(crate) fn ensure<T: Copy>(v: &mut Vec<T>, slot: u32, width: usize, fill: T) {
    let need = (slot as usize + 1) * width;
    if v.len() < need {
        v.resize(need, fill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeing_many_slots_at_once_is_linear_and_reuses_each_once() {
        let mut slots = Slots::default();
        let n = 200_000u32;
        for _ in 0..n {
            slots.alloc();
        }
        let start = std::time::Instant::now();
        for s in 0..n {
            slots.free(s);
            slots.free(s); // a double free is ignored
        }
        // Quadratic bookkeeping took minutes here; linear takes milliseconds.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(slots.live(), 0);
        let mut again: Vec<u32> = (0..n).map(|_| slots.alloc().0).collect();
        again.sort_unstable();
        again.dedup();
        assert_eq!(again.len(), n as usize);
        assert_eq!(slots.alloc(), (n, true));
    }

    #[test]
    fn ratio_of_zero_deviation_with_zero_spread_is_zero() {
        assert_eq!(ratio(0.0, 0.0, 5.0), 0.0);
        assert!(ratio(1.0, 0.0, 5.0).is_finite());
        assert!(ratio(f64::MAX, 0.0, 0.0) <= MAX_SCORE);
    }

    #[test]
    fn staleness_marker_is_recognised() {
        assert_eq!(
            classify(f64::from_bits(crate::storage::STALE_NAN_BITS)),
            Input::Stale
        );
        assert_eq!(classify(f64::NAN), Input::Skip);
        assert_eq!(classify(f64::INFINITY), Input::Skip);
        assert_eq!(classify(1.0), Input::Value);
    }

    #[test]
    fn unit_score_is_monotone_and_bounded() {
        assert_eq!(unit_score(0.0, 3.0), 0.0);
        assert_eq!(unit_score(3.0, 3.0), 0.5);
        assert!(unit_score(1e12, 3.0) < 1.0);
        assert!(unit_score(4.0, 3.0) > unit_score(3.9, 3.0));
        assert_eq!(unit_score(f64::NAN, 3.0), 0.0);
    }
}
