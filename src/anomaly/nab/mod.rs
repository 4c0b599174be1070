//! The Numenta Anomaly Benchmark: reading its data and labels, streaming each file
//! through the service's own [`Detector`] code, and scoring the result with NAB's
//! rules ([`score`]).
//!
//! A detector's raw score becomes NAB's anomaly score in [0, 1) through
//! [`Detector::unit_score`] (monotone, 0.5 at the detector's threshold), so NAB's
//! threshold sweep applies unchanged. One configuration and one threshold per profile
//! serve every file, as NAB requires.
//!
//! Invariants: files are processed in sorted key order, so output is deterministic;
//! a file missing from the label file is an error, not silently skipped; the last
//! line written is always `nab: standard=S reward_low_fp=F reward_low_fn=N files=K`.

pub mod ops;
pub mod score;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use self::ops::{FileView, Operational};
use self::score::{CostMatrix, LabelledFile, PROFILE_NAMES};
use super::{Detector, DetectorSpec, Outputs, SpecError};

/// The detector `closedloop nab` scores when none is named: the documented default.
pub const DEFAULT_DETECTOR: &str = "auto";

/// Unit-score thresholds at which operational figures are also reported (0.5 is
/// the likelihood's default threshold and a raw detector's own threshold).
pub const OPERATING_POINTS: [f64; 6] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.99];

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct NabArgs {
    /// A NAB `data` directory, or any subset of its category directories (keys are
    /// `<category>/<file>.csv`).
    pub data_dir: PathBuf,
    /// NAB's `combined_windows.json`.
    pub labels_file: PathBuf,
    /// NAB's `profiles.json`; when absent, `profiles.json` beside the label file, or
    /// NAB's published cost matrices.
    pub profiles_file: Option<PathBuf>,
    /// The algorithm name as in a rule file (`auto`, `zscore`, `holt_winters`,
    /// `ensemble`, …); see [`DEFAULT_DETECTOR`].
    pub detector: String,
    /// Detector fields as `key=value`; values are YAML scalars or flow collections
    /// (`window=1d`, `threshold=4`, `members=[{algorithm: zscore}]`). The key `spec`
    /// names a YAML file holding the whole detector spec instead.
    pub params: Vec<(String, String)>,
    /// Where to write per-file detections (`<dir>/<detector>/<category>/<detector>_<file>.csv`).
    pub output_dir: Option<PathBuf>,
    /// Score existing NAB results files instead of running a detector: the
    /// `anomaly_score` column of `<results_dir>/<category>/<detector>_<file>.csv`
    /// (e.g. NAB's `results/windowedGaussian` with `detector = "windowedGaussian"`).
    pub results_dir: Option<PathBuf>,
    /// Categories (data subdirectories) to hold out: thresholds are swept on the
    /// other files only, and the held-out files are scored at them.
    pub holdout: Vec<String>,
}

/// One profile's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProfileScore {
    /// Profile name as in `profiles.json`.
    pub profile: String,
    /// The swept threshold.
    pub threshold: f64,
    /// Corpus raw score.
    pub raw: f64,
    /// Normalised score (null 0, perfect 100).
    pub score: f64,
}

/// Result of a NAB run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NabSummary {
    /// Files scored.
    pub files: usize,
    /// Windows counted.
    pub windows: usize,
    /// Standard, reward-low-FP and reward-low-FN, in that order.
    pub profiles: Vec<ProfileScore>,
    /// Operational figures at each profile's threshold, in the same order.
    pub operational: Vec<Operational>,
    /// Per category, each profile's normalised score at the corpus thresholds
    /// (`None` for a category without windows).
    pub categories: Vec<(String, Vec<Option<f64>>)>,
    /// With held-out categories: each profile's normalised score of the held-out
    /// files at thresholds swept on the others, and those thresholds.
    pub holdout: Vec<ProfileScore>,
    /// Operational figures and the standard score at fixed unit-score thresholds
    /// ([`OPERATING_POINTS`]), for choosing a service threshold.
    pub operating_points: Vec<(f64, Operational, f64)>,
}

impl NabSummary {
    /// Normalised score of a profile by name.
    pub fn score(&self, profile: &str) -> Option<f64> {
        self.profiles
            .iter()
            .find(|p| p.profile == profile)
            .map(|p| p.score)
    }
}

/// Errors of the NAB runner.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A data or results CSV is malformed.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The label or profile file is malformed or lacks a data file.
    #[error("labels: {0}")]
    Labels(String),
    /// The detector and its parameters do not form a valid spec.
    #[error("detector parameters: {0}")]
    Params(String),
    /// The detector spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// No CSV files under the data directory.
    #[error("no .csv files under {0}")]
    NoFiles(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NabError + '_ {
    move |source| NabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A data file: its label key and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// `<category>/<file>.csv`.
    pub key: String,
    /// Timestamps as written (`YYYY-MM-DD HH:MM:SS`).
    pub timestamps: Vec<String>,
    /// Values.
    pub values: Vec<f64>,
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` as UTC milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b' ' && b[10] != b'T') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // days from civil (Howard Hinnant's algorithm)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000)
}

/// Columns read from a CSV: timestamps, values, and the optional extra column.
pub type CsvColumns = (Vec<String>, Vec<f64>, Vec<f64>);

/// Reads a CSV whose first two columns are `timestamp,value` (a NAB data file or a
/// results file); returns the timestamps, the values and, if present, the column
/// named `column` as f64.
pub fn read_csv(path: &Path, column: Option<&str>) -> Result<CsvColumns, NabError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let header = lines.next().unwrap_or("");
    let cols: Vec<&str> = header.split(',').collect();
    let csv_err = |line: usize, reason: String| NabError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    if cols.len() < 2 || cols[0] != "timestamp" {
        return Err(csv_err(
            1,
            format!("expected a header starting with timestamp, got {header:?}"),
        ));
    }
    let extra = match column {
        Some(c) => Some(
            cols.iter()
                .position(|h| *h == c)
                .ok_or_else(|| csv_err(1, format!("no column {c:?}")))?,
        ),
        None => None,
    };
    let (mut ts, mut vs, mut xs) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let num = |j: usize| -> Result<f64, NabError> {
            let s = f
                .get(j)
                .ok_or_else(|| csv_err(i + 2, format!("missing column {j}")))?;
            s.trim()
                .parse::<f64>()
                .map_err(|_| csv_err(i + 2, format!("not a number: {s:?}")))
        };
        ts.push(f[0].to_string());
        vs.push(num(1)?);
        if let Some(j) = extra {
            xs.push(num(j)?);
        }
    }
    Ok((ts, vs, xs))
}

/// NAB's windows, by file key, as timestamp pairs.
pub type Windows = BTreeMap<String, Vec<(String, String)>>;

/// Reads `combined_windows.json`.
pub fn load_windows(path: &Path) -> Result<Windows, NabError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let raw: BTreeMap<String, Vec<Vec<String>>> = serde_json::from_str(&text)
        .map_err(|e| NabError::Labels(format!("{}: {e}", path.display())))?;
    raw.into_iter()
        .map(|(k, ws)| {
            let pairs = ws
                .into_iter()
                .map(|w| match w.as_slice() {
                    [a, b] => Ok((a.clone(), b.clone())),
                    _ => Err(NabError::Labels(format!(
                        "{k}: a window must be [start, end]"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((k, pairs))
        })
        .collect()
}

/// Reads `profiles.json` into the three profiles, in [`PROFILE_NAMES`] order.
pub fn load_profiles(path: &Path) -> Result<Vec<(String, CostMatrix)>, NabError> {
    #[derive(serde::Deserialize)]
    struct P {
        #[serde(rename = "CostMatrix")]
        cost: CostMatrix,
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let map: BTreeMap<String, P> = serde_json::from_str(&text)
        .map_err(|e| NabError::Labels(format!("{}: {e}", path.display())))?;
    PROFILE_NAMES
        .iter()
        .map(|n| {
            map.get(*n)
                .map(|p| (n.to_string(), p.cost))
                .ok_or_else(|| NabError::Labels(format!("{}: no profile {n}", path.display())))
        })
        .collect()
}

/// NAB's published cost matrices.
pub fn default_profiles() -> Vec<(String, CostMatrix)> {
    let m = |fp: f64, fn_: f64| CostMatrix {
        tp: 1.0,
        fn_,
        fp,
        tn: 1.0,
    };
    vec![
        (PROFILE_NAMES[0].into(), m(0.11, 1.0)),
        (PROFILE_NAMES[1].into(), m(0.22, 1.0)),
        (PROFILE_NAMES[2].into(), m(0.11, 2.0)),
    ]
}

/// Turns timestamp windows into row windows by matching the first 19 characters.
pub fn label_file(
    key: &str,
    timestamps: &[String],
    windows: &Windows,
) -> Result<LabelledFile, NabError> {
    let ws = windows
        .get(key)
        .ok_or_else(|| NabError::Labels(format!("{key} is not in the label file")))?;
    let index: BTreeMap<&str, usize> = timestamps
        .iter()
        .enumerate()
        .map(|(i, t)| (t.get(..19).unwrap_or(t), i))
        .collect();
    let row = |t: &str| -> Result<usize, NabError> {
        index
            .get(t.get(..19).unwrap_or(t))
            .copied()
            .ok_or_else(|| NabError::Labels(format!("{key}: window edge {t} is not a row")))
    };
    let windows = ws
        .iter()
        .map(|(a, b)| Ok((row(a)?, row(b)?)))
        .collect::<Result<Vec<_>, NabError>>()?;
    if let Some((a, b)) = windows.iter().find(|(a, b)| a > b) {
        return Err(NabError::Labels(format!(
            "{key}: window rows {a}..{b} end before they start"
        )));
    }
    if windows.windows(2).any(|w| w[1].0 <= w[0].1) {
        return Err(NabError::Labels(format!(
            "{key}: windows overlap or are not sorted"
        )));
    }
    Ok(LabelledFile {
        rows: timestamps.len(),
        windows,
    })
}

/// All `.csv` files under `dir` with their label keys (`<parent dir>/<file>`), sorted.
pub fn list_data_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, NabError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let p = e.map_err(io_err(&d))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "csv") {
                let file = p.file_name().map(|f| f.to_string_lossy().into_owned());
                let cat = p
                    .parent()
                    .and_then(Path::file_name)
                    .map(|f| f.to_string_lossy().into_owned());
                if let (Some(c), Some(f)) = (cat, file) {
                    out.push((format!("{c}/{f}"), p));
                }
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(NabError::NoFiles(dir.to_path_buf()));
    }
    Ok(out)
}

/// Builds the detector spec from a name and `key=value` parameters.
pub fn build_spec(detector: &str, params: &[(String, String)]) -> Result<DetectorSpec, NabError> {
    use serde_yaml::{Mapping, Value};
    if let Some((_, path)) = params.iter().find(|(k, _)| k == "spec") {
        let p = Path::new(path);
        let text = std::fs::read_to_string(p).map_err(io_err(p))?;
        let mut spec: DetectorSpec =
            serde_yaml::from_str(&text).map_err(|e| NabError::Params(format!("{path}: {e}")))?;
        if spec.name.is_empty() {
            spec.name = "nab".into();
        }
        if spec.selector.is_empty() {
            spec.selector = "nab".into();
        }
        return Ok(spec);
    }
    let mut m = Mapping::new();
    m.insert("name".into(), Value::String("nab".into()));
    m.insert("selector".into(), Value::String("nab".into()));
    m.insert("algorithm".into(), Value::String(detector.into()));
    for (k, v) in params {
        let val: Value = serde_yaml::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
        m.insert(Value::String(k.clone()), val);
    }
    serde_yaml::from_value(Value::Mapping(m)).map_err(|e| NabError::Params(e.to_string()))
}

/// One file's detections: NAB's anomaly scores (the detector's unit scores), the
/// detector's outputs, and its raw kernel scores (before the likelihood, the band
/// alarm and the hold-off).
#[derive(Debug, Clone, Default)]
pub struct Detections {
    /// NAB anomaly scores in [0, 1].
    pub unit: Vec<f64>,
    /// The detector's outputs (score, band, forecast), NaN where absent.
    pub outputs: Outputs,
    /// The kernel's own scores.
    pub raw: Vec<f64>,
}

/// Row times in ms (a row whose timestamp does not parse is placed 5 minutes after
/// the previous one).
pub fn row_times(timestamps: &[String]) -> Vec<i64> {
    let mut last = 0;
    timestamps
        .iter()
        .map(|t| {
            last = parse_timestamp(t).unwrap_or(last + 300_000);
            last
        })
        .collect()
}

/// Streams one file's values through a fresh detector built from `spec`.
pub fn detect_file(spec: &DetectorSpec, file: &DataFile) -> Result<Detections, NabError> {
    let mut d = Detector::from_spec(spec)?;
    let slot = d.alloc_slot();
    let ts = row_times(&file.timestamps);
    let slots = vec![slot; file.values.len()];
    let mut det = Detections::default();
    d.update_keeping_raw(&slots, &ts, &file.values, &mut det.outputs, &mut det.raw);
    det.unit = det.outputs.score.iter().map(|&s| d.unit_score(s)).collect();
    Ok(det)
}

/// Runs a detector over NAB and scores it; writes progress and a final
/// `nab: standard=S reward_low_fp=F reward_low_fn=N files=K` line to `out`.
pub fn run_nab(args: &NabArgs, out: &mut dyn Write) -> Result<NabSummary, NabError> {
    let spec = match &args.results_dir {
        Some(_) => None,
        None => {
            let spec = build_spec(&args.detector, &args.params)?;
            spec.validate()?;
            Some(spec)
        }
    };
    let windows = load_windows(&args.labels_file)?;
    let profiles = match &args.profiles_file {
        Some(p) => load_profiles(p)?,
        None => {
            let beside = args
                .labels_file
                .parent()
                .map(|d| d.join("profiles.json"))
                .filter(|p| p.exists());
            match beside {
                Some(p) => load_profiles(&p)?,
                None => default_profiles(),
            }
        }
    };
    let w = |out: &mut dyn Write, s: String| -> Result<(), NabError> {
        writeln!(out, "{s}").map_err(io_err(Path::new("<output>")))
    };
    let files = list_data_files(&args.data_dir)?;
    let mut labelled = Vec::with_capacity(files.len());
    let mut scores = Vec::with_capacity(files.len());
    let mut times = Vec::with_capacity(files.len());
    for (key, path) in &files {
        let (timestamps, values, _) = read_csv(path, None)?;
        let lf = label_file(key, &timestamps, &windows)?;
        let file = DataFile {
            key: key.clone(),
            timestamps,
            values,
        };
        let unit = match (&spec, &args.results_dir) {
            (Some(spec), _) => {
                let det = detect_file(spec, &file)?;
                if let Some(dir) = &args.output_dir {
                    write_results(dir, &args.detector, &file, &lf, &det)?;
                }
                det.unit
            }
            (None, Some(dir)) => {
                let (cat, name) = key.split_once('/').unwrap_or(("", key.as_str()));
                let p = dir.join(cat).join(format!("{}_{name}", args.detector));
                let (ts, _, scores) = read_csv(&p, Some("anomaly_score"))?;
                if ts.len() != file.timestamps.len() {
                    return Err(NabError::Csv {
                        path: p,
                        line: 1,
                        reason: format!(
                            "{} rows, the data file has {}",
                            ts.len(),
                            file.timestamps.len()
                        ),
                    });
                }
                scores
            }
            (None, None) => Vec::new(),
        };
        times.push(row_times(&file.timestamps));
        labelled.push(lf);
        scores.push(unit);
    }
    let mut summary = NabSummary {
        files: files.len(),
        windows: labelled
            .iter()
            .map(LabelledFile::counted_window_count)
            .sum(),
        profiles: Vec::new(),
        operational: Vec::new(),
        categories: Vec::new(),
        holdout: Vec::new(),
        operating_points: Vec::new(),
    };
    let category = |k: usize| files[k].0.split_once('/').map_or("", |c| c.0);
    let views: Vec<FileView<'_>> = (0..files.len())
        .map(|k| FileView {
            labels: &labelled[k],
            times: &times[k],
            scores: &scores[k],
        })
        .collect();
    match &spec {
        Some(spec) => w(
            out,
            format!(
                "detector: {}",
                serde_json::to_string(spec).unwrap_or_default()
            ),
        )?,
        None => w(out, format!("results: {}", args.detector))?,
    }
    for (name, cost) in &profiles {
        let r = score::sweep(&labelled, &scores, cost);
        w(
            out,
            format!(
                "profile {name}: threshold={} raw={:.6} score={:.2}",
                r.threshold, r.raw, r.normalised
            ),
        )?;
        summary.profiles.push(ProfileScore {
            profile: name.clone(),
            threshold: r.threshold,
            raw: r.raw,
            score: r.normalised,
        });
        let o = ops::operational(&views, r.threshold);
        let delay = match (o.median_delay(), o.mean_delay()) {
            (Some(m), Some(a)) => format!("median {m:.0}, mean {a:.1}"),
            _ => "none detected".to_string(),
        };
        w(
            out,
            format!(
                "  operational {name}: alerts={} true={} false={} ({:.1}% of alerts); \
                 false alerts per series per day: no-anomaly files {:.3} ({:.1} days), \
                 quiet stretches {:.3} ({:.1} days); windows detected {}/{}; \
                 delay in rows after window start: {delay}",
                o.alerts,
                o.true_alerts,
                o.false_alerts,
                100.0 * o.false_share(),
                o.no_anomaly_rate(),
                o.no_anomaly_days,
                o.quiet_rate(),
                o.quiet_days,
                o.detected,
                o.windows,
            ),
        )?;
        summary.operational.push(o);
    }
    // per category, at the corpus thresholds
    let mut cats: Vec<&str> = (0..files.len()).map(category).collect();
    cats.dedup();
    for cat in &cats {
        let idx: Vec<usize> = (0..files.len()).filter(|&k| category(k) == *cat).collect();
        let lfs: Vec<LabelledFile> = idx.iter().map(|&k| labelled[k].clone()).collect();
        let nw: usize = lfs.iter().map(LabelledFile::counted_window_count).sum();
        let mut per = Vec::new();
        let mut text = Vec::new();
        for ((name, cost), p) in profiles.iter().zip(&summary.profiles) {
            let raw: f64 = idx
                .iter()
                .map(|&k| score::score_file(&labelled[k], &scores[k], cost, p.threshold).score)
                .sum();
            let norm = (nw > 0).then(|| score::normalise(raw, &lfs, cost));
            text.push(match norm {
                Some(v) => format!("{name}={v:.2}"),
                None => format!("{name}: raw {raw:.3}"),
            });
            per.push(norm);
        }
        w(
            out,
            format!(
                "category {cat} ({} files, {nw} windows, at the corpus thresholds): {}",
                idx.len(),
                text.join(" ")
            ),
        )?;
        summary.categories.push((cat.to_string(), per));
    }
    let standard = profiles.first().map(|p| p.1);
    for t in OPERATING_POINTS {
        let o = ops::operational(&views, t);
        let std_score = standard.map_or(0.0, |cost| {
            score::normalise(
                score::score_corpus(&labelled, &scores, &cost, t),
                &labelled,
                &cost,
            )
        });
        w(
            out,
            format!(
                "operating point {t}: standard={std_score:.2} alerts={} false={} ({:.1}%) \
                 quiet false alerts/series/day={:.3} windows detected {}/{} median delay {}",
                o.alerts,
                o.false_alerts,
                100.0 * o.false_share(),
                o.quiet_rate(),
                o.detected,
                o.windows,
                o.median_delay()
                    .map_or_else(|| "-".to_string(), |d| format!("{d:.0}")),
            ),
        )?;
        summary.operating_points.push((t, o, std_score));
    }
    if !args.holdout.is_empty() {
        let held = args.holdout.join(",");
        if let Some(c) = args.holdout.iter().find(|c| !cats.contains(&c.as_str())) {
            return Err(NabError::Labels(format!(
                "holdout: no category {c:?} under {}",
                args.data_dir.display()
            )));
        }
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..files.len()).partition(|&k| args.holdout.iter().any(|c| c == category(k)));
        if train.is_empty() {
            return Err(NabError::Labels(
                "holdout: nothing left to sweep the thresholds on".into(),
            ));
        }
        let pick = |ix: &[usize]| -> (Vec<LabelledFile>, Vec<Vec<f64>>) {
            (
                ix.iter().map(|&k| labelled[k].clone()).collect(),
                ix.iter().map(|&k| scores[k].clone()).collect(),
            )
        };
        let (train_l, train_s) = pick(&train);
        let (test_l, test_s) = pick(&test);
        for (name, cost) in &profiles {
            let r = score::sweep(&train_l, &train_s, cost);
            let raw = score::score_corpus(&test_l, &test_s, cost, r.threshold);
            let norm = score::normalise(raw, &test_l, cost);
            w(
                out,
                format!(
                    "holdout {held} {name}: threshold={} (swept on the other categories: {:.2}) \
                     held-out raw={raw:.6} score={norm:.2}",
                    r.threshold, r.normalised
                ),
            )?;
            summary.holdout.push(ProfileScore {
                profile: name.clone(),
                threshold: r.threshold,
                raw,
                score: norm,
            });
        }
    }
    let get = |n: &str| summary.score(n).unwrap_or(0.0);
    w(
        out,
        format!(
            "nab: standard={:.2} reward_low_fp={:.2} reward_low_fn={:.2} files={}",
            get(PROFILE_NAMES[0]),
            get(PROFILE_NAMES[1]),
            get(PROFILE_NAMES[2]),
            summary.files
        ),
    )?;
    Ok(summary)
}

/// Writes one file's detections like NAB's results files, plus what explains each
/// score: the kernel's raw score and the band and forecast written back (empty
/// where the detector writes none).
fn write_results(
    dir: &Path,
    detector: &str,
    file: &DataFile,
    lf: &LabelledFile,
    det: &Detections,
) -> Result<(), NabError> {
    let (cat, name) = file.key.split_once('/').unwrap_or(("", file.key.as_str()));
    let d = dir.join(detector).join(cat);
    std::fs::create_dir_all(&d).map_err(io_err(&d))?;
    let p = d.join(format!("{detector}_{name}"));
    let mut s = String::from(
        "timestamp,value,anomaly_score,label,raw_score,anomaly_upper,anomaly_lower,anomaly_forecast\n",
    );
    let cell = |c: &[f64], i: usize| match c.get(i) {
        Some(v) if v.is_finite() => v.to_string(),
        _ => String::new(),
    };
    let mut wi = 0;
    for i in 0..file.values.len() {
        while wi < lf.windows.len() && lf.windows[wi].1 < i {
            wi += 1;
        }
        let label = lf.windows.get(wi).is_some_and(|&(a, b)| a <= i && i <= b);
        let o = &det.outputs;
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            file.timestamps[i],
            file.values[i],
            det.unit.get(i).copied().unwrap_or(0.0),
            u8::from(label),
            cell(&det.raw, i),
            cell(&o.upper, i),
            cell(&o.lower, i),
            cell(&o.forecast, i),
        ));
    }
    std::fs::write(&p, s).map_err(io_err(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_utc() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp("2014-07-01 00:30:00"),
            Some(1_404_174_600_000)
        );
        assert_eq!(
            parse_timestamp("2014-11-25 12:00:00.000000"),
            Some(1_416_916_800_000)
        );
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("garbage"), None);
    }

    #[test]
    fn params_become_a_spec() {
        let s = build_spec(
            "zscore",
            &[
                ("window".into(), "1d".into()),
                ("threshold".into(), "4".into()),
            ],
        )
        .unwrap();
        assert_eq!(s.window.map(|w| w.0), Some(86_400_000));
        assert_eq!(s.threshold, Some(4.0));
        assert!(build_spec("zscore", &[("nope".into(), "1".into())]).is_err());
        let e = build_spec(
            "ensemble",
            &[(
                "members".into(),
                "[{algorithm: zscore}, {algorithm: iqr}]".into(),
            )],
        )
        .unwrap();
        e.validate().unwrap();
    }
}
