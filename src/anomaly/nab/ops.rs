//! Operational figures of a NAB run, beyond NAB's score: what a loop that acts on
//! every alert would see at a profile's threshold.
//!
//! Definitions (all over scorable rows, i.e. after the probationary period):
//! * a *detection* is a row whose score is at or above the threshold; an *alert* is
//!   a detection whose previous row is not one (one alert per run of detections);
//! * an alert is *true* when its row lies inside a labelled window, *false*
//!   otherwise (NAB also penalises those, less so just after a window);
//! * *quiet stretches* are runs of rows outside every window and outside the
//!   recovery span after one (a window's width past its end, where NAB's penalty
//!   is still fading), lasting at least a day; the false alerts in them per day are
//!   the false-positive rate of a series that has nothing to report;
//! * *delay* is, for each window with a detection, the rows from the window's
//!   first row to the first detection inside it.
//!
//! Invariants: pure functions of the labels, times and scores; no panics on
//! mismatched lengths (missing scores count as 0, missing times end a stretch).

use super::score::LabelledFile;

/// One scored file, as the figures need it.
#[derive(Debug, Clone, Copy)]
pub struct FileView<'a> {
    /// Its windows and length.
    pub labels: &'a LabelledFile,
    /// Row times in ms.
    pub times: &'a [i64],
    /// NAB anomaly scores in [0, 1].
    pub scores: &'a [f64],
}

/// Operational figures at one threshold.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Operational {
    /// Alerts raised.
    pub alerts: usize,
    /// Alerts inside a window.
    pub true_alerts: usize,
    /// Alerts outside every window.
    pub false_alerts: usize,
    /// False alerts in files without any window (e.g. artificialNoAnomaly).
    pub no_anomaly_false_alerts: usize,
    /// Scored days of those files, summed over files.
    pub no_anomaly_days: f64,
    /// False alerts in quiet stretches of files that have windows.
    pub quiet_false_alerts: usize,
    /// Days of those stretches, summed.
    pub quiet_days: f64,
    /// Windows that count, and those with a detection.
    pub windows: usize,
    /// Windows with at least one detection.
    pub detected: usize,
    /// Delay in rows of each detected window, ascending.
    pub delays: Vec<usize>,
}

/// A quiet stretch must last this long to count.
const MIN_QUIET_MS: i64 = 86_400_000;
const DAY_MS: f64 = 86_400_000.0;

impl Operational {
    /// False alerts as a share of all alerts (0 when there were none).
    pub fn false_share(&self) -> f64 {
        if self.alerts == 0 {
            0.0
        } else {
            self.false_alerts as f64 / self.alerts as f64
        }
    }

    /// False alerts per series per day in files without windows.
    pub fn no_anomaly_rate(&self) -> f64 {
        per_day(self.no_anomaly_false_alerts, self.no_anomaly_days)
    }

    /// False alerts per series per day in quiet stretches.
    pub fn quiet_rate(&self) -> f64 {
        per_day(self.quiet_false_alerts, self.quiet_days)
    }

    /// Median delay in rows, if any window was detected.
    pub fn median_delay(&self) -> Option<f64> {
        let d = &self.delays;
        match d.len() {
            0 => None,
            n if n % 2 == 1 => Some(d[n / 2] as f64),
            n => Some((d[n / 2 - 1] + d[n / 2]) as f64 / 2.0),
        }
    }

    /// Mean delay in rows, if any window was detected.
    pub fn mean_delay(&self) -> Option<f64> {
        (!self.delays.is_empty())
            .then(|| self.delays.iter().sum::<usize>() as f64 / self.delays.len() as f64)
    }
}

fn per_day(n: usize, days: f64) -> f64 {
    if days > 0.0 {
        n as f64 / days
    } else {
        0.0
    }
}

/// The figures for `files` at threshold `t`.
pub fn operational(files: &[FileView<'_>], t: f64) -> Operational {
    let mut o = Operational::default();
    for f in files {
        let lf = f.labels;
        let p = lf.probation();
        let n = lf.rows;
        let detected = |i: usize| f.scores.get(i).is_some_and(|&a| a >= t);
        let time = |i: usize| f.times.get(i).copied();
        // where each row stands: inside window k, recovering after one, or quiet
        let mut inside = vec![false; n];
        let mut quiet = vec![true; n];
        for &(s, e) in &lf.windows {
            let width = e.saturating_sub(s) + 1;
            for i in s..=e.min(n.saturating_sub(1)) {
                inside[i] = true;
                quiet[i] = false;
            }
            for q in quiet
                .iter_mut()
                .take(e.saturating_add(width + 1).min(n))
                .skip(e + 1)
            {
                *q = false;
            }
        }
        for (i, &is_inside) in inside.iter().enumerate().skip(p) {
            if !detected(i) || (i > p && detected(i - 1)) {
                continue;
            }
            o.alerts += 1;
            if is_inside {
                o.true_alerts += 1;
            } else {
                o.false_alerts += 1;
                if lf.windows.is_empty() {
                    o.no_anomaly_false_alerts += 1;
                }
            }
        }
        if lf.windows.is_empty() {
            if let (Some(a), Some(b)) = (time(p), time(n.saturating_sub(1))) {
                o.no_anomaly_days += (b - a).max(0) as f64 / DAY_MS;
            }
        } else {
            // quiet stretches of at least a day
            let mut i = p;
            while i < n {
                if !quiet[i] {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < n && quiet[i] {
                    i += 1;
                }
                let (Some(a), Some(b)) = (time(start), time(i - 1)) else {
                    continue;
                };
                if b - a < MIN_QUIET_MS {
                    continue;
                }
                o.quiet_days += (b - a) as f64 / DAY_MS;
                o.quiet_false_alerts += (start..i)
                    .filter(|&j| detected(j) && (j == p || !detected(j - 1)))
                    .count();
            }
        }
        for &(s, e) in &lf.windows {
            if e < p || s > e {
                continue;
            }
            o.windows += 1;
            if let Some(d) = (s.max(p)..=e.min(n.saturating_sub(1))).find(|&i| detected(i)) {
                o.detected += 1;
                o.delays.push(d - s);
            }
        }
    }
    o.delays.sort_unstable();
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_stretches_and_delays() {
        // 5-minute rows over 4 days; probation = 172 rows; one window at 600..=699
        let n = 1152;
        let times: Vec<i64> = (0..n as i64).map(|i| i * 300_000).collect();
        let lf = LabelledFile {
            rows: n,
            windows: vec![(600, 699)],
        };
        let mut scores = vec![0.0; n];
        scores[100] = 1.0; // in probation: ignored
        scores[300] = 1.0; // false, in a quiet stretch (172..599 is 35.5 h)
        scores[301] = 1.0; // same alert
        scores[610] = 1.0; // true, delay 10
        scores[750] = 1.0; // false, in the recovery span (700..=799)
        scores[1000] = 1.0; // false, after recovery: quiet stretch 800..1151 is 29 h
        let o = operational(
            &[FileView {
                labels: &lf,
                times: &times,
                scores: &scores,
            }],
            0.5,
        );
        assert_eq!((o.alerts, o.true_alerts, o.false_alerts), (4, 1, 3));
        assert_eq!(o.quiet_false_alerts, 2);
        assert!((o.quiet_days - (427.0 + 351.0) * 300.0 / 86_400.0).abs() < 1e-9);
        assert_eq!((o.windows, o.detected), (1, 1));
        assert_eq!(o.delays, vec![10]);
        assert_eq!(o.median_delay(), Some(10.0));
        assert!((o.false_share() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn files_without_windows_count_per_day() {
        let n = 2880; // 10 days of 5-minute rows; probation 432 rows
        let times: Vec<i64> = (0..n as i64).map(|i| i * 300_000).collect();
        let lf = LabelledFile {
            rows: n,
            windows: vec![],
        };
        let mut scores = vec![0.0; n];
        scores[1000] = 0.9;
        let o = operational(
            &[FileView {
                labels: &lf,
                times: &times,
                scores: &scores[..10], // short scores: the rest count as 0
            }],
            0.5,
        );
        assert_eq!(o.alerts, 0);
        let o = operational(
            &[FileView {
                labels: &lf,
                times: &times,
                scores: &scores,
            }],
            0.5,
        );
        assert_eq!(o.no_anomaly_false_alerts, 1);
        assert!((o.no_anomaly_days - 2447.0 * 300.0 / 86_400.0).abs() < 1e-9);
        assert_eq!(o.median_delay(), None);
    }
}
