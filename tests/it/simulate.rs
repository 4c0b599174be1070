//! `closedloop simulate` as a user runs it: a scenario file from testdata/ with its own
//! seed, the report files it writes, and the same run twice giving the same figures.

use std::process::Command;

fn simulate(args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .arg("simulate")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (o, out)
}

fn report(dir: &tempfile::TempDir) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap()
}

/// The seed's targets, checked on a report: MTTD < 1 min, MTTR < 5 min, false
/// positives < 10%, auto-remediation success > 90%, human intervention < 20% — and
/// the loop really acted: actions ran on the world through the audit log.
fn assert_targets(r: &serde_json::Value) {
    let fig = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} is absent: {}", r["targets"]))
    };
    let summary = format!("targets: {}\nfaults: {}", r["targets"], r["faults"]);
    assert!(fig("mttd_seconds") < 60.0, "MTTD missed; {summary}");
    assert!(fig("mttr_seconds") < 300.0, "MTTR missed; {summary}");
    assert!(
        fig("false_positive_rate") < 0.10,
        "FP rate missed; {summary}"
    );
    assert!(
        fig("remediation_success_rate") > 0.90,
        "remediation success missed; {summary}"
    );
    assert!(
        fig("human_intervention_rate") < 0.20,
        "human intervention missed; {summary}"
    );
    for t in r["targets"].as_array().unwrap() {
        assert_eq!(t["met"], true, "{t}");
    }
    assert_eq!(r["faults_detected"], r["faults_with_impact"], "{summary}");
    let actions = r["actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["outcome"] == "executed" && a["actor"] == "loop"),
        "no action ran: {}",
        r["actions"]
    );
    let audit = &r["pipeline"]["audit"];
    assert!(
        audit["actions"].as_u64().unwrap() >= actions.len() as u64 / 2,
        "{audit}"
    );
    assert!(
        audit["events"].as_u64().unwrap() > audit["actions"].as_u64().unwrap(),
        "{audit}"
    );
}

#[test]
fn the_builtin_scenario_meets_the_targets() {
    let (o, dir) = simulate(&["--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = report(&dir);
    assert_targets(&r);
    // The bad deploy's rollback waited for the simulated on-call's approval.
    assert!(
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["actor"] == "loop_approved" && a["action"] == "deployment_rollback"),
        "{}",
        r["actions"]
    );
    assert!(stdout.contains("mttr_seconds"), "{stdout}");
}

#[test]
fn a_testdata_scenario_runs_and_writes_its_report() {
    let args = [
        "--scenario",
        "testdata/simulate/scenario-orders-friday.yml",
        "--seed",
        "11",
        "--quiet",
    ];
    let (o, dir) = simulate(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("scenario \"orders-friday\", seed 11"),
        "{stdout}"
    );
    for line in [
        "mttd_seconds",
        "mttr_seconds",
        "false_positive_rate",
        "remediation_success_rate",
        "human_intervention_rate",
    ] {
        assert!(stdout.contains(line), "summary lacks {line}: {stdout}");
    }
    let r = report(&dir);
    for key in [
        "mttd_seconds",
        "mttr_seconds",
        "false_positive_rate",
        "remediation_success_rate",
        "human_intervention_rate",
        "incidents",
        "actions",
        "refused",
        "faults",
        "definitions",
        "targets",
    ] {
        assert!(r.get(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(r["seed"], 11);
    assert_targets(&r);
    let faults = r["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 4);
    for f in faults {
        for key in [
            "detected_s",
            "detection_seconds",
            "recovered_s",
            "recovery_seconds",
            "onset_s",
            "resolution",
        ] {
            assert!(f.get(key).is_some(), "fault lacks {key}: {f}");
        }
    }
    // Every sample went through the remote-write path, none refused.
    let rw = &r["pipeline"]["remote_write"];
    assert_eq!(rw["requests"], 12 * 120);
    assert_eq!(rw["samples_rejected"], 0);
    assert_eq!(r["pipeline"]["rule_errors"], serde_json::json!([]));
    // The database lock contention is detected by the detector-backed alert, quickly.
    let db = faults
        .iter()
        .find(|f| f["name"] == "db-lock-contention")
        .unwrap();
    assert!(
        db["detection_seconds"].as_f64().is_some_and(|d| d <= 120.0),
        "{db}"
    );
    let svg = std::fs::read_to_string(dir.path().join("timeline.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("gateway") && svg.contains("<polyline"),
        "timeline.svg"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("<svg")
            && html.contains("db-lock-contention")
            && html.contains("Definitions")
    );

    // Same scenario and seed: the same figures.
    let (o2, dir2) = simulate(&args);
    assert!(o2.status.success());
    let r2 = report(&dir2);
    for key in [
        "mttd_seconds",
        "mttr_seconds",
        "false_positive_rate",
        "incidents",
        "faults",
    ] {
        assert_eq!(
            r[key], r2[key],
            "{key} differs between two runs of one seed"
        );
    }
}

#[test]
fn bad_scenarios_are_refused_with_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.yml");
    std::fs::write(&p, "services:\n  - name: web\nfaults:\n  - {name: f, kind: memory_leak, service: web, start: 1h}\n").unwrap();
    let (o, _) = simulate(&["--scenario", p.to_str().unwrap(), "--check"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("faults[0].leak_mib_per_hour: memory_leak needs leak_mib_per_hour"),
        "{err}"
    );
    let (o, _) = simulate(&["--check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, _) = simulate(&["--print-scenario"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("name: shop-day"));
}
