//! Runs every promtool fixture of `testdata/prometheus/promtool/` (vendored, unmodified) through `closedloop test rules` / `check rules` and checks each
//! outcome its README names, with the options the real `promtool` CLI uses (the @
//! modifier and negative offsets on).
//!
//! One documented divergence: `unittest.yml` must pass, but three of its
//! `promql_expr_test` cases compare native histograms, which closedloop's float-only
//! store does not hold; the test checks that those three — and nothing else — fail.

use std::path::{Path, PathBuf};

use closedloop::rules::manager::check_files;
use closedloop::rules::unittest::{run_file, TestOptions};

fn dir() -> PathBuf {
    let d = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/prometheus/promtool"
    ));
    assert!(
        d.is_dir(),
        "promtool fixtures not found at {} (they are part of the repository: restore testdata/)",
        d.display()
    );
    d
}

fn run(file: &str, run: &[&str], ignore_unknown_fields: bool) -> Result<(), Vec<String>> {
    run_file(
        &dir().join(file),
        &TestOptions {
            run: run.iter().map(|s| s.to_string()).collect(),
            ignore_unknown_fields,
        },
    )
}

#[test]
fn promtool_test_rules_fixtures() {
    // (file, --run filters, --ignore-unknown-fields, must pass)
    let cases: &[(&str, &[&str], bool, bool)] = &[
        ("long-period.yml", &[], false, true),
        ("no-test-group-interval.yml", &[], false, true),
        ("start-time-test.yml", &[], false, true),
        ("at-modifier-test.yml", &[], false, true),
        ("negative-offset-test.yml", &[], false, true),
        ("bad-input-series.yml", &[], false, false),
        ("bad-promql.yml", &[], false, false),
        ("bad-rules-syntax-test.yml", &[], false, false),
        ("bad-rules-error-test.yml", &[], false, false),
        ("failing.yml", &[], false, false),
        ("rules_run.yml", &[], false, false),
        ("rules_run.yml", &["correct"], false, true),
        ("rules_run.yml", &["wrong"], false, false),
        ("rules_run.yml", &["correct", "wrong"], false, false),
        ("rules_run_extrafields.yml", &[], true, true),
        ("rules_run_extrafields.yml", &[], false, false),
        ("rules_run_fuzzy.yml", &["correct"], false, true),
        ("rules_run_fuzzy.yml", &["wrong"], false, false),
        ("rules_run_fuzzy.yml", &[], false, false),
        ("rules_run_no_fuzzy.yml", &[], false, false),
    ];
    let mut wrong = Vec::new();
    for (file, filters, ignore, must_pass) in cases {
        let r = run(file, filters, *ignore);
        if r.is_ok() != *must_pass {
            wrong.push(format!(
                "{file} --run {filters:?} ignore_unknown_fields={ignore}: expected {}, got {:?}",
                if *must_pass { "pass" } else { "fail" },
                r
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    eprintln!(
        "promtool test-rules fixtures: {} of {} outcomes as expected",
        cases.len(),
        cases.len()
    );
}

#[test]
fn unittest_yml_fails_only_on_native_histograms() {
    let errs = run("unittest.yml", &[], false).expect_err("histogram cases cannot pass");
    let cases: Vec<&String> = errs.iter().filter(|e| e.contains("expr:")).collect();
    assert_eq!(cases.len(), 3, "{errs:#?}");
    for c in cases {
        assert!(
            c.contains("native histograms are not supported"),
            "unexpected failure: {c}"
        );
    }
}

fn check(file: &str) -> Result<(usize, Vec<String>), String> {
    let p: PathBuf = dir().join(file);
    let mut r = check_files(&[p]);
    r.pop()
        .map(|(_, r)| r.map_err(|problems| problems.join("\n")))
        .unwrap_or(Err("no result".into()))
}

#[test]
fn promtool_check_rules_fixtures() {
    let (n, dups) = check("rules.yml").expect("rules.yml is valid");
    assert_eq!(n, 5);
    assert!(dups.is_empty());

    let e = check("check_rules/rules-bad.yml").expect_err("undefined $label");
    assert!(e.contains("undefined variable \"$label\""), "{e}");
    assert!(e.contains("rules-bad.yml:6:"), "{e}");

    let (_, dups) = check("check_rules/prometheus-rules.lint.yml").unwrap();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert!(dups[0].contains("HighRequestLatency"));

    let (_, dups) = check("check_rules/rules_duplicates.yml").unwrap();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert!(dups[0].contains("job:test:count_over_time1m"), "{dups:?}");

    // Needs experimental PromQL features, which closedloop does not enable.
    assert!(check("check_rules/features.yml").is_err());
}

#[test]
fn check_rules_cli_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_closedloop");
    let d = dir();
    let code = |args: &[&str], file: &Path| {
        std::process::Command::new(bin)
            .args(["check", "rules"])
            .args(args)
            .arg(file)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&[], &d.join("rules.yml")), Some(0));
    assert_eq!(code(&[], &d.join("check_rules/rules-bad.yml")), Some(1));
    assert_eq!(
        code(
            &["--lint=duplicate-rules", "--lint-fatal"],
            &d.join("check_rules/prometheus-rules.lint.yml")
        ),
        Some(3)
    );
    let t = std::process::Command::new(bin)
        .args(["test", "rules", "--run", "correct"])
        .arg(d.join("rules_run.yml"))
        .output()
        .unwrap();
    assert_eq!(t.status.code(), Some(0));
    let t = std::process::Command::new(bin)
        .args(["test", "rules"])
        .arg(d.join("failing.yml"))
        .output()
        .unwrap();
    assert_eq!(t.status.code(), Some(1));
}

#[test]
fn example_rule_files_are_valid() {
    let pattern = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/*.yml").to_string();
    let files = closedloop::rules::file::expand_patterns(&[pattern]).unwrap();
    assert!(!files.is_empty(), "no example rule files in rules/");
    let groups =
        closedloop::rules::load_files(&files, Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let actions: Vec<_> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .flat_map(|r| &r.actions)
        .collect();
    assert!(!actions.is_empty());
    // Every example action that changes something is a dry run.
    for a in actions.iter().filter(|a| a.kind.mutates()) {
        assert!(a.dry_run, "{a:?}");
    }
    assert!(groups.iter().any(|g| !g.detectors.is_empty()));
}
