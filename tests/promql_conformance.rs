//! Runs Prometheus's PromQL test scripts (vendored in `testdata/prometheus/promql`) against the
//! engine and guards the number of passing stable cases with a committed floor.

use std::path::PathBuf;

use closedloop::promql::testscript::{run_files_with, RunOptions};

const STABLE: &[&str] = &[
    "aggregators.test",
    "collision.test",
    "functions.test",
    "histograms.test",
    "operators.test",
    "range_queries.test",
    "subquery.test",
];

const EXPERIMENTAL: &[&str] = &[
    "duration_expression.test",
    "extended_vectors.test",
    "fill-modifier.test",
    "info.test",
    "limit.test",
    "name_label_dropping.test",
    "native_histograms.test",
    "start_timestamps.test",
    "type_and_unit.test",
];

#[test]
fn promql_conformance_corpus() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/prometheus/promql"
    ));
    assert!(
        dir.is_dir(),
        "PromQL corpus not found at {} (it is part of the repository: restore testdata/)",
        dir.display()
    );
    let paths: Vec<PathBuf> = STABLE
        .iter()
        .chain(EXPERIMENTAL)
        .map(|f| dir.join(f))
        .collect();
    let verbose = std::env::var_os("PROMQL_CONFORMANCE_VERBOSE").is_some();
    let show_skipped = std::env::var_os("PROMQL_CONFORMANCE_SKIPPED").is_some();
    let mut out = Vec::new();
    let summary = run_files_with(
        &paths,
        &mut out,
        &RunOptions {
            verbose,
            show_skipped,
        },
    )
    .expect("corpus is readable");
    print!("{}", String::from_utf8_lossy(&out));

    let (mut sp, mut sf, mut ss) = (0, 0, 0);
    let (mut ep, mut ef, mut es) = (0, 0, 0);
    for f in &summary.files {
        if STABLE.contains(&f.name.as_str()) {
            (sp, sf, ss) = (sp + f.passed, sf + f.failed, ss + f.skipped);
        } else {
            (ep, ef, es) = (ep + f.passed, ef + f.failed, es + f.skipped);
        }
    }
    let rate = |p: usize, f: usize| 100.0 * p as f64 / (p + f).max(1) as f64;
    println!(
        "stable: {sp} passed, {sf} failed, {ss} skipped ({:.1}% of non-skipped)",
        rate(sp, sf)
    );
    println!(
        "experimental: {ep} passed, {ef} failed, {es} skipped ({:.1}% of non-skipped)",
        rate(ep, ef)
    );
    let floor: usize = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/promql-conformance-floor.txt"
    ))
    .expect("floor file")
    .trim()
    .parse()
    .expect("floor is a number");
    assert!(
        sp >= floor,
        "stable conformance dropped: {sp} passed, floor is {floor}"
    );
}
