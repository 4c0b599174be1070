//! Static bounds with a minimum duration: the score is 1 while a value has been above
//! `upper` (or below `lower`) for at least `for`, and 0 otherwise.
//!
//! Invariants: one start time per slot (`i64::MIN` when inside the bounds); NaN/±Inf
//! are skipped without ending a violation, staleness and out-of-bounds-free samples
//! end it.

use super::kernel::{classify, ensure, Input, Outputs, Slots};

/// Settings of a static-threshold kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ThresholdConfig {
    pub(crate) upper: Option<f64>,
    pub(crate) lower: Option<f64>,
    /// Minimum time (ms) a bound must be crossed before the score becomes 1.
    pub(crate) for_ms: i64,
}

/// Struct-of-arrays state of every series of one threshold detector.
#[derive(Debug, Clone)]
pub(crate) struct Threshold {
    cfg: ThresholdConfig,
    slots: Slots,
    since: Vec<i64>,
    last_t: Vec<i64>,
}

impl Threshold {
    pub(crate) fn new(cfg: ThresholdConfig) -> Self {
        Threshold {
            cfg,
            slots: Slots::default(),
            since: Vec::new(),
            last_t: Vec::new(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.live()
    }

    pub(crate) fn alloc(&mut self) -> u32 {
        let (s, _) = self.slots.alloc();
        ensure(&mut self.since, s, 1, i64::MIN);
        ensure(&mut self.last_t, s, 1, i64::MIN);
        self.since[s as usize] = i64::MIN;
        self.last_t[s as usize] = i64::MIN;
        s
    }

    pub(crate) fn free(&mut self, slot: u32) {
        if (slot as usize) < self.since.len() {
            self.since[slot as usize] = i64::MIN;
            self.last_t[slot as usize] = i64::MIN;
        }
        self.slots.free(slot);
    }

    pub(crate) fn update(&mut self, slots: &[u32], ts: &[i64], vs: &[f64], out: &mut Outputs) {
        let upper = self.cfg.upper.unwrap_or(f64::INFINITY);
        let lower = self.cfg.lower.unwrap_or(f64::NEG_INFINITY);
        let n_items = slots.len().min(ts.len()).min(vs.len()).min(out.len());
        for i in 0..n_items {
            let s = slots[i] as usize;
            if s >= self.since.len() {
                continue;
            }
            let (t, x) = (ts[i], vs[i]);
            match classify(x) {
                Input::Value => {}
                Input::Stale => {
                    self.since[s] = i64::MIN;
                    self.last_t[s] = i64::MIN;
                    continue;
                }
                Input::Skip => continue,
            }
            if t < self.last_t[s] {
                continue;
            }
            self.last_t[s] = t;
            let outside = x > upper || x < lower;
            if !outside {
                self.since[s] = i64::MIN;
            } else if self.since[s] == i64::MIN {
                self.since[s] = t;
            }
            let held = outside && t.saturating_sub(self.since[s]) >= self.cfg.for_ms;
            out.score[i] = if held { 1.0 } else { 0.0 };
            if let Some(u) = self.cfg.upper {
                out.upper[i] = u;
            }
            if let Some(l) = self.cfg.lower {
                out.lower[i] = l;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_must_hold_for_the_minimum_duration() {
        let mut th = Threshold::new(ThresholdConfig {
            upper: Some(10.0),
            lower: None,
            for_ms: 2000,
        });
        let s = th.alloc();
        let vs = [11.0, 12.0, f64::NAN, 13.0, 5.0, 11.0];
        let ts = [0, 1000, 1500, 2000, 3000, 4000];
        let mut out = Outputs::default();
        out.reset(6);
        th.update(&[s; 6], &ts, &vs, &mut out);
        assert_eq!(out.score[0], 0.0);
        assert_eq!(out.score[1], 0.0);
        assert!(out.score[2].is_nan());
        assert_eq!(out.score[3], 1.0);
        assert_eq!(out.score[4], 0.0);
        assert_eq!(out.score[5], 0.0);
    }
}
