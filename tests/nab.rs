//! NAB scorer checked against NAB's published windowed-Gaussian outputs and scores
//! (shared split: 35 files, 55 windows), vendored in `testdata/nab`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use closedloop::anomaly::nab::score::{self, LabelledFile};
use closedloop::anomaly::nab::{self, NabArgs};

fn nab_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nab"));
    assert!(
        dir.is_dir(),
        "NAB files not found at {} (they are part of the repository: restore testdata/)",
        dir.display()
    );
    dir
}

/// Per-file published raw scores: profile -> file key -> score.
fn published_scores(dir: &Path) -> BTreeMap<String, BTreeMap<String, (f64, f64)>> {
    let mut out = BTreeMap::new();
    for profile in score::PROFILE_NAMES {
        let p = dir.join(format!(
            "reference/windowedGaussian/windowedGaussian_{profile}_scores.shared.csv"
        ));
        let text = std::fs::read_to_string(&p).unwrap();
        let mut m = BTreeMap::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            m.insert(
                f[2].to_string(),
                (f[3].parse::<f64>().unwrap(), f[4].parse::<f64>().unwrap()),
            );
        }
        out.insert(profile.to_string(), m);
    }
    out
}

/// The reference outputs, labelled: (key, file, anomaly scores).
fn reference_outputs(dir: &Path) -> Vec<(String, LabelledFile, Vec<f64>)> {
    let windows = nab::load_windows(&dir.join("combined_windows.json")).unwrap();
    let mut out = Vec::new();
    for (key, _) in nab::list_data_files(&dir.join("data")).unwrap() {
        let (cat, name) = key.split_once('/').unwrap();
        let p = dir.join(format!(
            "reference/windowedGaussian/{cat}/windowedGaussian_{name}"
        ));
        let (ts, _, scores) = nab::read_csv(&p, Some("anomaly_score")).unwrap();
        let lf = nab::label_file(&key, &ts, &windows).unwrap();
        out.push((key, lf, scores));
    }
    out
}

#[test]
fn windowed_gaussian_reference_per_file_and_total_scores() {
    let dir = nab_dir();
    let profiles = nab::load_profiles(&dir.join("profiles.json")).unwrap();
    let published = published_scores(&dir);
    let files = reference_outputs(&dir);
    assert_eq!(files.len(), 35);
    let labelled: Vec<LabelledFile> = files.iter().map(|f| f.1.clone()).collect();
    let scores: Vec<Vec<f64>> = files.iter().map(|f| f.2.clone()).collect();
    assert_eq!(
        labelled
            .iter()
            .map(LabelledFile::counted_window_count)
            .sum::<usize>(),
        55
    );
    // published thresholds (1.0): per-file raw scores and the normalised totals
    let expect_total = [21.93, 4.87, 29.17];
    let expect_raw = [-30.873644, -49.643379, -61.873644];
    let expect_sweep = [21.97, 4.87, 29.80];
    for (pi, (name, cost)) in profiles.iter().enumerate() {
        let pub_files = &published[name];
        assert_eq!(pub_files.len(), 35, "{name}");
        let mut total = 0.0;
        for (key, lf, s) in &files {
            let (thr, want) = pub_files[key];
            let got = score::score_file(lf, s, cost, thr).score;
            assert!((got - want).abs() < 1e-6, "{name} {key}: {got} vs {want}");
            total += got;
        }
        assert!((total - expect_raw[pi]).abs() < 1e-5, "{name}: raw {total}");
        let norm = score::normalise(total, &labelled, cost);
        assert!((norm - expect_total[pi]).abs() < 0.01, "{name}: {norm}");
        let sw = score::sweep(&labelled, &scores, cost);
        assert!(
            (sw.normalised - expect_sweep[pi]).abs() < 0.01,
            "{name}: sweep {} at {}",
            sw.normalised,
            sw.threshold
        );
    }
}

#[test]
fn run_nab_reports_one_summary_line() {
    let dir = nab_dir();
    let args = NabArgs {
        data_dir: dir.join("data/artificialWithAnomaly"),
        labels_file: dir.join("combined_windows.json"),
        detector: "zscore".into(),
        params: vec![("window".into(), "1d".into())],
        ..Default::default()
    };
    let mut out = Vec::new();
    let s = nab::run_nab(&args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("nab: standard="), "{last}");
    assert!(last.ends_with("files=6"), "{last}");
    assert_eq!(s.files, 6);
    assert_eq!(s.profiles.len(), 3);
}

/// The floor of the default configuration's standard score on the shared split: it
/// only ever rises (raise it when the default improves; never lower it).
fn default_floor(dir: &Path) -> f64 {
    let p = dir.join("../nab-default-floor.txt");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no floor", p.display()))
}

#[test]
fn default_configuration_keeps_its_shared_split_score() {
    let dir = nab_dir();
    let args = NabArgs {
        data_dir: dir.join("data"),
        labels_file: dir.join("combined_windows.json"),
        detector: nab::DEFAULT_DETECTOR.into(),
        holdout: vec!["realKnownCause".into()],
        ..Default::default()
    };
    let mut out = Vec::new();
    let s = nab::run_nab(&args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(s.files, 35);
    assert_eq!(s.windows, 55);
    let standard = s.score("standard").unwrap();
    let floor = default_floor(&dir);
    assert!(
        standard >= floor,
        "auto scores {standard:.2} standard, below its floor {floor}\n{text}"
    );
    // the target, and the held-out category keeps its figure too
    assert!(standard >= 60.0);
    assert!(s.holdout[0].score >= 50.0, "{text}");
    // operational figures are reported for every profile
    assert_eq!(s.operational.len(), 3);
    assert_eq!(s.operational[0].windows, 55);
    assert_eq!(s.operational[0].no_anomaly_false_alerts, 0, "{text}");
    assert!(text.contains("operating point 0.5:"), "{text}");
}

#[test]
fn per_file_outputs_explain_the_scores() {
    let dir = nab_dir();
    let tmp = tempfile::tempdir().unwrap();
    let args = NabArgs {
        data_dir: dir.join("data/artificialWithAnomaly"),
        labels_file: dir.join("combined_windows.json"),
        detector: nab::DEFAULT_DETECTOR.into(),
        output_dir: Some(tmp.path().to_path_buf()),
        ..Default::default()
    };
    nab::run_nab(&args, &mut std::io::sink()).unwrap();
    let p = tmp
        .path()
        .join("auto/artificialWithAnomaly/auto_art_daily_jumpsup.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "timestamp,value,anomaly_score,label,raw_score,anomaly_upper,anomaly_lower,anomaly_forecast"
    );
    // every score of 1 is a value outside the band written beside it
    let mut band_alarms = 0;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let (v, score): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        if score == 1.0 {
            let (hi, lo): (f64, f64) = (f[5].parse().unwrap(), f[6].parse().unwrap());
            assert!(v > hi || v < lo, "{l}");
            band_alarms += 1;
        }
    }
    assert!(
        band_alarms > 0,
        "the jump above the seen range is a band alarm"
    );
}
