use std::path::Path;

use super::*;

const MINIMAL: &str = "services:\n  - name: web\n";

fn err(text: &str) -> String {
    match parse(text, Path::new("s.yml"), None) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn builtin_scenario_is_valid() {
    let l = Loaded::builtin().unwrap();
    let sc = &l.scenario;
    assert_eq!(sc.name, "shop-day");
    assert_eq!(sc.step.as_millis(), 15_000);
    assert!(sc.faults.len() >= 8);
    assert_eq!(sc.entry(), Some("frontend"));
    assert!(
        l.rule_files().is_empty(),
        "the built-in scenario runs the built-in rules"
    );
    // 2025-01-06T00:00:00Z
    assert_eq!(l.start_ms, 1_736_121_600_000);
}

#[test]
fn minimal_scenario_gets_defaults() {
    let l = parse(MINIMAL, Path::new("s.yml"), None).unwrap();
    let sc = &l.scenario;
    assert_eq!(sc.duration.as_millis(), 86_400_000);
    assert_eq!(sc.seed, 1);
    assert_eq!(sc.targets.mttd.as_millis(), 60_000);
    assert_eq!(sc.targets.remediation_success_rate, 0.9);
    assert_eq!(sc.services[0].kind, ServiceKind::Web);
}

#[test]
fn schema_errors_name_the_key_and_line() {
    let e = err("services:\n  - name: web\n    replicaz: 3\n");
    assert!(
        e.starts_with("s.yml:3: services[0].replicaz: unknown field `replicaz`"),
        "{e}"
    );
    let e = err("services:\n  - name: web\nduration: 5 minutes\n");
    assert!(
        e.contains("duration") && e.contains("invalid duration"),
        "{e}"
    );
    let e = err("services:\n  - name: web\nfaults:\n  - name: f\n    kind: meteor\n    service: web\n    start: 1h\n");
    assert!(
        e.contains("faults[0].kind") && e.contains("unknown variant `meteor`"),
        "{e}"
    );
}

#[test]
fn validation_errors_name_the_key_path() {
    let cases: &[(&str, &str)] = &[
        ("step: 100ms\nservices: [{name: web}]\n", "s.yml: step: must be between 1s and 5m"),
        ("duration: 31d\nservices: [{name: web}]\n", "s.yml: duration: must be at least one step and at most 30d"),
        ("services: []\n", "services: at least one service is needed"),
        ("services: [{name: Web}]\n", "services[0].name: \"Web\" must be"),
        ("services: [{name: web}, {name: web}]\n", "services[1].name: \"web\" is declared twice"),
        ("services: [{name: web, calls: {db: 1}}]\n", "services[0].calls.db: unknown service"),
        ("services: [{name: web, replicas: 0}]\n", "services[0].replicas: must be 1..=200"),
        ("services: [{name: web, capacity: -1}]\n", "services[0].capacity: -1 is outside"),
        ("services: [{name: web, hit_ratio: 0.9}]\n", "services[0].hit_ratio: only applies to cache services"),
        ("services: [{name: web}, {name: c, kind: cache, misses_to: web}]\n", "services[1].hit_ratio: a cache needs hit_ratio"),
        ("services: [{name: web, memory_mib: 600}]\n", "services[0].memory_limit_mib: must be above memory_mib"),
        ("services: [{name: web}, {name: p, kind: external, replicas: 2}]\n", "services[1].replicas: an external service has no pods"),
        (
            "services: [{name: a, calls: {b: 1}}, {name: b, calls: {a: 1}}]\n",
            "is part of a call cycle",
        ),
        ("traffic: {entry: nope}\nservices: [{name: web}]\n", "traffic.entry: unknown service \"nope\""),
        ("traffic: {daily_amplitude: 2}\nservices: [{name: web}]\n", "traffic.daily_amplitude: 2 is outside"),
        ("metrics: {noise: {cpu: 0.1}}\nservices: [{name: web}]\n", "metrics.noise.cpu: unknown metric"),
        (
            "services: [{name: web}]\nfaults: [{name: f, kind: load_surge, service: nope, start: 1h, factor: 2}]\n",
            "faults[0].service: unknown service \"nope\"",
        ),
        (
            "services: [{name: web}]\nfaults: [{name: f, kind: load_surge, service: web, start: 1h}]\n",
            "faults[0].factor: load_surge needs factor",
        ),
        (
            "services: [{name: web}]\nfaults: [{name: f, kind: load_surge, service: web, start: 1h, factor: 2, hit_ratio: 0.1}]\n",
            "faults[0].hit_ratio: does not apply to load_surge (it takes: factor, ramp)",
        ),
        (
            "services: [{name: web}]\nfaults: [{name: f, kind: cache_pollution, service: web, start: 1h, hit_ratio: 0.1}]\n",
            "faults[0].service: cache_pollution needs a cache service",
        ),
        (
            "duration: 2h\nservices: [{name: web}]\nfaults: [{name: f, kind: crash_loop, service: web, start: 3h}]\n",
            "faults[0].start: must be within the run (0s to 2h)",
        ),
        (
            "services: [{name: web}]\nfaults: [{name: f, kind: crash_loop, service: web, start: 1h, fixed_by: [{type: reboot}]}]\n",
            "faults[0].fixed_by[0].type: unknown action type \"reboot\"",
        ),
        (
            "services: [{name: web}]\nfaults: [{name: f, kind: crash_loop, service: web, start: 1h}, {name: f, kind: crash_loop, service: web, start: 2h}]\n",
            "faults[1].name: \"f\" is empty or used twice",
        ),
        (
            "services: [{name: web}, {name: p, kind: external}]\nfaults: [{name: f, kind: memory_leak, service: p, start: 1h, leak_mib_per_hour: 10}]\n",
            "faults[0].kind: memory_leak needs pods; \"p\" is external",
        ),
        (
            "services: [{name: web}]\nbenign: [{name: b, kind: peak, start: 1h, duration: 1h}]\n",
            "benign[0].factor: peak needs factor",
        ),
        (
            "services: [{name: web}]\nbenign: [{name: b, kind: noise, service: web, signal: latency, start: 1h, duration: 1h, magnitude: 2, factor: 2}]\n",
            "benign[0].factor: does not apply to noise",
        ),
        ("services: [{name: web}]\nslo: {error_ratio: 2}\n", "slo.error_ratio: 2 is outside"),
        ("services: [{name: web}]\nmeasure: {service_label: \"1x\"}\n", "measure.service_label: not a valid label name"),
        ("services: [{name: web}]\nstart: yesterday\n", "start: \"yesterday\" is not an RFC 3339 time"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "for:\n{text}\nwant {want:?}\ngot  {e:?}");
    }
}

#[test]
fn call_order_puts_callers_first() {
    let l = parse(
        "services:\n  - {name: db, kind: database}\n  - {name: web, calls: {api: 1}}\n  - {name: api, calls: {db: 2}}\n",
        Path::new("s.yml"),
        None,
    )
    .unwrap();
    let order = l.scenario.call_order().unwrap();
    let names: Vec<&str> = order
        .iter()
        .map(|&i| l.scenario.services[i].name.as_str())
        .collect();
    assert_eq!(names, ["web", "api", "db"]);
}

#[test]
fn rule_files_resolve_against_the_scenario_directory() {
    let l = parse(
        "rule_files: [rules.yml]\nservices: [{name: web}]\n",
        Path::new("dir/s.yml"),
        Some("dir/s.yml".into()),
    )
    .unwrap();
    assert_eq!(
        l.rule_files(),
        vec![Path::new("dir/rules.yml").to_path_buf()]
    );
}

#[test]
fn testdata_scenarios_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/simulate");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with("scenario-"))
        {
            Loaded::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no scenario-*.yml in {}", dir.display());
}

#[test]
fn builtin_rules_load_with_detectors_and_actions() {
    let l = Loaded::builtin().unwrap();
    let groups = crate::tools::simulate::load_rules(&l).unwrap();
    assert!(groups.iter().any(|g| !g.detectors.is_empty()));
    assert!(groups
        .iter()
        .flat_map(|g| &g.rules)
        .any(|r| !r.actions.is_empty()));
}
