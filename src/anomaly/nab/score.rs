//! NAB's scoring rules, reimplemented from the description in `testdata/nab/NOTES.md`:
//! probationary period, window-relative scaled-sigmoid weights, one window term per
//! window (its best detection, or −A_FN), a summed false-positive term, an exhaustive
//! threshold sweep shared by all files, and normalisation between the null and the
//! perfect detector.
//!
//! Invariants: weights depend only on a file's windows and a profile, so they are
//! computed once per (file, profile); the sweep walks all scorable rows of all files
//! once, in descending score order, and evaluates the corpus score only after every
//! row sharing one score value has been applied (ties resolve to the highest
//! threshold, as NAB's sweeper does). Nothing here panics on any input: rows and
//! windows out of range are clamped or ignored.

use serde::Deserialize;

/// One cost profile (NAB's `CostMatrix`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct CostMatrix {
    /// Reward for a true positive (at a window's first row).
    #[serde(rename = "tpWeight")]
    pub tp: f64,
    /// Cost of a missed window.
    #[serde(rename = "fnWeight")]
    pub fn_: f64,
    /// Cost of one false-positive row.
    #[serde(rename = "fpWeight")]
    pub fp: f64,
    /// Unused by NAB's scoring.
    #[serde(rename = "tnWeight", default)]
    pub tn: f64,
}

/// NAB's three profiles, in the order they are reported.
pub const PROFILE_NAMES: [&str; 3] = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"];

/// The scaled sigmoid: 2/(1+e^{5y}) − 1 for y ≤ 3, −1 beyond.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// The probationary period of a file of `n` rows: min(floor(0.15·n), 750).
pub fn probationary_period(n: usize) -> usize {
    ((0.15 * n as f64).floor() as usize).min(750)
}

/// A file prepared for scoring: its length and windows as inclusive row ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledFile {
    /// Number of rows.
    pub rows: usize,
    /// Windows as inclusive `[start, end]` row indices, sorted, not overlapping
    /// (windows that break this are ignored, never a panic).
    pub windows: Vec<(usize, usize)>,
}

impl LabelledFile {
    /// Rows at or after this index are scorable.
    pub fn probation(&self) -> usize {
        probationary_period(self.rows)
    }

    /// Windows that have at least one scorable row (the ones that count).
    fn counted_windows(&self) -> impl Iterator<Item = (usize, (usize, usize))> + '_ {
        let p = self.probation();
        self.windows
            .iter()
            .copied()
            .enumerate()
            .filter(move |&(_, (s, e))| e >= p && s <= e && s < self.rows)
    }

    /// Number of counted windows.
    pub fn counted_window_count(&self) -> usize {
        self.counted_windows().count()
    }

    /// Per-row weight and window membership for one profile: `(w_i, Some(window))`
    /// inside a window, `(w_i, None)` outside.
    fn weights(&self, cost: &CostMatrix) -> Vec<(f64, Option<u32>)> {
        let mut out = Vec::with_capacity(self.rows);
        let sig_m1 = scaled_sigmoid(-1.0);
        let mut next = 0usize; // index of the next window not yet passed
        for i in 0..self.rows {
            while next < self.windows.len() && self.windows[next].1 < i {
                next += 1;
            }
            let inside = self
                .windows
                .get(next)
                .is_some_and(|&(s, e)| s <= i && i <= e);
            if inside {
                let (s, e) = self.windows[next];
                let width = (e - s + 1) as f64;
                let y = -((e - i + 1) as f64) / width;
                // (s <= i <= e here, so no subtraction can underflow)
                out.push((cost.tp * scaled_sigmoid(y) / sig_m1, Some(next as u32)));
            } else if next == 0 {
                out.push((-cost.fp, None));
            } else {
                let (s, e) = self.windows[next - 1];
                let width = (e.saturating_sub(s) + 1) as f64;
                let y = i.saturating_sub(e) as f64 / (width - 1.0).max(1.0);
                out.push((cost.fp * scaled_sigmoid(y), None));
            }
        }
        out
    }
}

/// Counts and raw score of one file at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FileScore {
    /// Raw (unnormalised) score.
    pub score: f64,
    /// Detected scorable rows inside windows.
    pub tp: usize,
    /// Undetected scorable rows outside windows.
    pub tn: usize,
    /// Detected scorable rows outside windows.
    pub fp: usize,
    /// Undetected scorable rows inside windows.
    pub fn_: usize,
}

/// Scores one file at threshold `t`. `scores` shorter than the file count as 0.
pub fn score_file(file: &LabelledFile, scores: &[f64], cost: &CostMatrix, t: f64) -> FileScore {
    let weights = file.weights(cost);
    let p = file.probation();
    let mut best: Vec<Option<f64>> = vec![None; file.windows.len()];
    let mut res = FileScore::default();
    let mut fp_sum = 0.0;
    for (i, &(w, win)) in weights.iter().enumerate().skip(p) {
        let a = scores.get(i).copied().unwrap_or(0.0);
        let detected = a >= t;
        match (win, detected) {
            (Some(k), true) => {
                res.tp += 1;
                let b = &mut best[k as usize];
                *b = Some(b.map_or(w, |b| b.max(w)));
            }
            (Some(_), false) => res.fn_ += 1,
            (None, true) => {
                res.fp += 1;
                fp_sum += w;
            }
            (None, false) => res.tn += 1,
        }
    }
    let mut total = 0.0;
    for (k, _) in file.counted_windows() {
        total += best[k].unwrap_or(-cost.fn_);
    }
    res.score = total + fp_sum;
    res
}

/// Result of a threshold sweep over a corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepResult {
    /// The best threshold (highest among equal scores).
    pub threshold: f64,
    /// The corpus raw score at that threshold.
    pub raw: f64,
    /// The normalised score (null = 0, perfect = 100).
    pub normalised: f64,
}

/// Null and perfect raw scores of a corpus for a profile.
pub fn null_and_perfect(files: &[LabelledFile], cost: &CostMatrix) -> (f64, f64) {
    let windows: usize = files.iter().map(LabelledFile::counted_window_count).sum();
    (-cost.fn_ * windows as f64, cost.tp * windows as f64)
}

/// Normalises a corpus raw score: 100·(S − null)/(perfect − null).
pub fn normalise(raw: f64, files: &[LabelledFile], cost: &CostMatrix) -> f64 {
    let (null, perfect) = null_and_perfect(files, cost);
    if perfect == null {
        return 0.0;
    }
    100.0 * (raw - null) / (perfect - null)
}

/// Scores every file at one threshold and returns the corpus raw score.
pub fn score_corpus(files: &[LabelledFile], scores: &[Vec<f64>], cost: &CostMatrix, t: f64) -> f64 {
    files
        .iter()
        .zip(scores)
        .map(|(f, s)| score_file(f, s, cost, t).score)
        .sum()
}

/// NAB's exhaustive threshold sweep: candidates are 1.1 (nothing detected) and every
/// distinct score among scorable rows of all files; returns the best.
/// `scores[k]` belongs to `files[k]`.
pub fn sweep(files: &[LabelledFile], scores: &[Vec<f64>], cost: &CostMatrix) -> SweepResult {
    // (score, weight, global window id or u32::MAX)
    let mut rows: Vec<(f64, f64, u32)> = Vec::new();
    let mut window_base = 0u32;
    let mut counted: Vec<bool> = Vec::new();
    for (f, s) in files.iter().zip(scores) {
        let weights = f.weights(cost);
        let p = f.probation();
        for (i, &(w, win)) in weights.iter().enumerate().skip(p) {
            let a = s.get(i).copied().unwrap_or(0.0);
            let a = if a.is_nan() { 0.0 } else { a };
            rows.push((a, w, win.map_or(u32::MAX, |k| window_base + k)));
        }
        counted.extend((0..f.windows.len()).map(|_| false));
        for (k, _) in f.counted_windows() {
            counted[window_base as usize + k] = true;
        }
        window_base += f.windows.len() as u32;
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (null, _) = null_and_perfect(files, cost);
    let mut best: Vec<Option<f64>> = vec![None; counted.len()];
    let mut total = null; // every counted window is a miss at t = 1.1
    let mut best_t = 1.1;
    let mut best_raw = total;
    let mut i = 0;
    while i < rows.len() {
        let a = rows[i].0;
        while i < rows.len() && rows[i].0 == a {
            let (_, w, win) = rows[i];
            if win == u32::MAX {
                total += w;
            } else if counted[win as usize] {
                let b = &mut best[win as usize];
                let old = b.unwrap_or(-cost.fn_);
                if b.is_none() || w > old {
                    total += w - old;
                    *b = Some(w);
                }
            }
            i += 1;
        }
        if a <= 1.1 && total > best_raw {
            best_raw = total;
            best_t = a;
        }
    }
    SweepResult {
        threshold: best_t,
        raw: best_raw,
        normalised: normalise(best_raw, files, cost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: CostMatrix = CostMatrix {
        tp: 1.0,
        fn_: 1.0,
        fp: 0.11,
        tn: 1.0,
    };

    #[test]
    fn sigmoid_matches_published_points() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn first_row_of_window_earns_full_tp() {
        let f = LabelledFile {
            rows: 100,
            windows: vec![(50, 59)],
        };
        let mut s = vec![0.0; 100];
        s[50] = 1.0;
        let r = score_file(&f, &s, &STANDARD, 0.5);
        assert!((r.score - 1.0).abs() < 1e-12);
        assert_eq!(r.tp, 1);
    }

    #[test]
    fn missed_window_and_early_fp() {
        let f = LabelledFile {
            rows: 100,
            windows: vec![(50, 59)],
        };
        let mut s = vec![0.0; 100];
        s[20] = 1.0; // before any window, after probation (15)
        s[5] = 1.0; // in probation, ignored
        let r = score_file(&f, &s, &STANDARD, 0.5);
        assert!((r.score - (-1.0 - 0.11)).abs() < 1e-12);
        assert_eq!(r.fp, 1);
    }

    #[test]
    fn sweep_prefers_highest_threshold_on_ties() {
        let f = LabelledFile {
            rows: 100,
            windows: vec![(50, 59)],
        };
        let mut s = vec![0.1; 100];
        s[50] = 0.9;
        let r = sweep(
            std::slice::from_ref(&f),
            std::slice::from_ref(&s),
            &STANDARD,
        );
        assert_eq!(r.threshold, 0.9);
        assert!((r.raw - 1.0).abs() < 1e-12);
        assert!((r.normalised - 100.0).abs() < 1e-9);
        assert!((score_corpus(&[f], &[s], &STANDARD, 0.9) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sweep_of_constant_scores_is_null() {
        let f = LabelledFile {
            rows: 100,
            windows: vec![(50, 59)],
        };
        let r = sweep(&[f], &[vec![0.5; 100]], &STANDARD);
        assert_eq!(r.threshold, 1.1);
        assert_eq!(r.normalised, 0.0);
    }
}
