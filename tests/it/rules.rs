//! The rules engine end to end: remote-written samples make an alert fire in
//! closedloop, a real Alertmanager receives it with the right labels and
//! annotations, and it is resolved there when the condition clears. Reloads keep
//! the last good rules.

use std::time::Duration;

use crate::common::*;

fn write(cl: &Closedloop, value: f64) {
    let t = now_ms();
    let body = v1_body(&[(
        &[("__name__", "errors_total"), ("job", "api")],
        &[(t, value)],
    )]);
    let (status, text) = post_write(cl, body, "application/x-protobuf");
    assert_eq!(status, 204, "{text}");
}

const RULES: &str = r#"groups:
  - name: api
    interval: 1s
    rules:
      - record: job:errors:max
        expr: max by (job) (errors_total)
      - alert: HighErrors
        expr: job:errors:max > 5
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} has {{ $value }} errors"
          runbook: "{{ $externalURL }}/runbooks/{{ $labels.job | toUpper }}"
        actions:
          - type: notify
            channel: slack
            dry_run: true
"#;

#[test]
fn alert_fires_in_alertmanager_and_resolves() {
    let am = Alertmanager::start();
    // A second Alertmanager gets every alert too.
    let am2 = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let config = format!(
        "rule_files: ['rules.yml']\nglobal:\n  evaluation_interval: 1s\n  rule_query_offset: 0s\n  external_labels: {{cluster: it}}\n  external_url: http://closedloop.example:9096\nalerting:\n  resend_delay: 1m\n  alertmanagers:\n    - url: {}\n    - url: {}\n",
        am.url(""),
        am2.url("")
    );
    let cl = Closedloop::start_in(dir, &config);
    write(&cl, 10.0);

    let mut found = None;
    wait_until("the alert in Alertmanager", Duration::from_secs(30), || {
        found = am
            .alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "HighErrors");
        found.is_some()
    });
    let a = found.unwrap();
    assert_eq!(a["labels"]["job"], "api", "{a}");
    assert_eq!(a["labels"]["severity"], "page", "{a}");
    assert_eq!(a["labels"]["cluster"], "it", "external label: {a}");
    assert_eq!(a["annotations"]["summary"], "api has 10 errors", "{a}");
    assert_eq!(
        a["annotations"]["runbook"], "http://closedloop.example:9096/runbooks/API",
        "{a}"
    );
    let gen = a["generatorURL"].as_str().unwrap_or_default();
    assert!(
        gen.starts_with("http://closedloop.example:9096/graph?g0.expr=job%3Aerrors%3Amax+%3E+5"),
        "{gen}"
    );

    wait_until(
        "the alert in the second Alertmanager",
        Duration::from_secs(10),
        || {
            am2.alerts().iter().any(|a| {
                a["labels"]["alertname"] == "HighErrors"
                    && a["annotations"]["summary"] == "api has 10 errors"
            })
        },
    );

    // closedloop's own views agree.
    let alerts = cl.api("/api/v1/alerts");
    assert_eq!(alerts["alerts"][0]["state"], "firing", "{alerts}");
    let rules = cl.api("/api/v1/rules");
    let group = &rules["groups"][0];
    assert_eq!(group["name"], "api");
    assert_eq!(group["rules"][0]["type"], "recording");
    assert_eq!(group["rules"][1]["type"], "alerting");
    assert_eq!(group["rules"][1]["state"], "firing");
    assert_eq!(group["rules"][1]["health"], "ok", "{rules}");
    let only_alerts = cl.api("/api/v1/rules?type=alert&exclude_alerts=true");
    assert_eq!(
        only_alerts["groups"][0]["rules"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        only_alerts["groups"][0]["rules"][0]["alerts"],
        serde_json::json!([])
    );
    let by_name = cl.api("/api/v1/rules?rule_name[]=job:errors:max");
    assert_eq!(by_name["groups"][0]["rules"][0]["name"], "job:errors:max");
    let none = cl.api("/api/v1/rules?rule_group[]=nope");
    assert_eq!(none["groups"], serde_json::json!([]));
    // ALERTS is queryable like any series.
    let q = cl.api("/api/v1/query?query=ALERTS%7Balertstate%3D%22firing%22%7D");
    assert_eq!(q["result"][0]["metric"]["alertname"], "HighErrors", "{q}");
    assert!(cl.metric("closedloop_rule_group_iterations_total", "api") >= 1.0);
    assert!(cl.metric("closedloop_notifications_sent_total", "") >= 1.0);

    // The condition clears: resolved in Alertmanager (no longer listed as active).
    // With resend_delay 1m the alert's endsAt is 4 minutes ahead, so only the
    // resolved notification can end it within the wait below.
    write(&cl, 0.0);
    wait_until(
        "the alert to resolve in Alertmanager",
        Duration::from_secs(30),
        || {
            !am.alerts().iter().any(|a| {
                a["labels"]["alertname"] == "HighErrors" && a["status"]["state"] == "active"
            })
        },
    );
    wait_until(
        "closedloop to drop the alert",
        Duration::from_secs(10),
        || {
            cl.api("/api/v1/alerts")["alerts"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        },
    );
    // As Prometheus's `ActiveAlerts`: the resolved alert (still kept to be re-sent
    // as resolved) is not listed under its rule either.
    let rules = cl.api("/api/v1/rules");
    assert_eq!(
        rules["groups"][0]["rules"][1]["alerts"],
        serde_json::json!([]),
        "{rules}"
    );
    assert_eq!(
        rules["groups"][0]["rules"][1]["state"], "inactive",
        "{rules}"
    );
}

#[test]
fn bad_rule_reload_keeps_the_last_good_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\nrules:\n  watch_interval: 1s\n",
    );
    assert_eq!(cl.api("/api/v1/rules")["groups"][0]["name"], "api");

    // A bad file: /-/reload refuses it, the running rules stay.
    std::fs::write(
        &rules,
        "groups:\n  - name: api\n    rules:\n      - alert: X\n        expr: 'sum('\n",
    )
    .unwrap();
    let resp = http().post(cl.url("/-/reload")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let text = resp.text().unwrap();
    assert!(text.contains("rules.yml:4:"), "{text}");
    assert_eq!(
        cl.metric("closedloop_config_last_reload_successful", ""),
        0.0
    );
    let r = cl.api("/api/v1/rules");
    assert_eq!(r["groups"][0]["rules"].as_array().unwrap().len(), 2, "{r}");

    // A good file on disk is picked up by the watcher.
    std::fs::write(
        &rules,
        "groups:\n  - name: other\n    rules:\n      - record: one\n        expr: '1'\n",
    )
    .unwrap();
    wait_until("the watcher to reload", Duration::from_secs(15), || {
        cl.api("/api/v1/rules")["groups"][0]["name"] == "other"
    });
    assert_eq!(
        cl.metric("closedloop_config_last_reload_successful", ""),
        1.0
    );
}

#[test]
fn a_bad_rule_file_at_start_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        actions: [{type: launch_missiles}]\n",
    )
    .unwrap();
    let path = dir.path().join("closedloop.yml");
    std::fs::write(&path, "rule_files: ['rules.yml']\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rules.yml:4: group \"g\", rule \"A\": actions[0]: unknown action type \"launch_missiles\""),
        "{err}"
    );
}

#[test]
fn pending_state_survives_a_restart() {
    const SLOW: &str = "groups:\n  - name: slow\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: vector(1)\n        for: 1h\n";
    // The knowledge store lives outside each instance's directory, as a data dir
    // would.
    let keep = tempfile::tempdir().unwrap();
    let state = keep.path().join("closedloop.db");
    let rules = keep.path().join("rules.yml");
    std::fs::write(&rules, SLOW).unwrap();
    let config = format!(
        "rule_files: ['{}']\nknowledge:\n  path: {}\n",
        rules.display(),
        state.display()
    );
    let start = || Closedloop::start(&config);
    let cl = start();
    let mut active_at = serde_json::Value::Null;
    wait_until("the alert to be pending", Duration::from_secs(15), || {
        let a = cl.api("/api/v1/alerts");
        active_at = a["alerts"][0]["activeAt"].clone();
        a["alerts"][0]["state"] == "pending"
    });
    assert!(cl.terminate().success());
    assert!(state.exists(), "the knowledge store holds the state");

    // A new process restores the alert with its original activeAt, so `for` keeps
    // counting from then. It stays while the condition holds.
    let cl = start();
    let a = cl.api("/api/v1/alerts");
    assert_eq!(a["alerts"][0]["activeAt"], active_at, "restored: {a}");
    wait_until(
        "an evaluation after the restart",
        Duration::from_secs(10),
        || cl.metric("closedloop_rule_group_iterations_total", "slow") >= 2.0,
    );
    let a = cl.api("/api/v1/alerts");
    assert_eq!(a["alerts"][0]["state"], "pending", "{a}");
    assert_eq!(a["alerts"][0]["activeAt"], active_at, "kept: {a}");
}

#[test]
fn a_legacy_state_file_is_imported_once() {
    const SLOW: &str = "groups:\n  - name: slow\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: vector(1)\n        for: 1h\n";
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, SLOW).unwrap();
    // What `rules.state_file` held before the knowledge store.
    let active_at = now_ms() - 600_000;
    let legacy = dir.path().join("rules-state.json");
    let key = format!("{};slow", rules.display());
    std::fs::write(
        &legacy,
        serde_json::json!({ key: { "Slow": [{
            "labels": {"alertname": "Slow"}, "state": "pending", "active_at_ms": active_at
        }]}})
        .to_string(),
    )
    .unwrap();
    let config = format!(
        "rule_files: ['{}']\nrules:\n  state_file: {}\n",
        rules.display(),
        legacy.display()
    );
    let cl = Closedloop::start_in(dir, &config);
    let a = cl.api("/api/v1/alerts");
    assert_eq!(
        a["alerts"][0]["activeAt"],
        closedloop::rules::notifier::rfc3339(active_at),
        "{a}"
    );
    assert!(!legacy.exists(), "the imported file is renamed");
    assert!(legacy.with_extension("imported").exists());
}

#[test]
fn remote_datasource_group_queries_prometheus() {
    let prom = Prometheus::start(
        |_| "global: {scrape_interval: 1m}\n".to_string(),
        &["--web.enable-remote-write-receiver"],
    );
    // The data lives only in Prometheus.
    let body = v1_body(&[(
        &[("__name__", "remote_only"), ("job", "far")],
        &[(now_ms() - 1000, 42.0)],
    )]);
    let r = http()
        .post(prom.url("/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        format!(
            "groups:\n  - name: remote\n    interval: 1s\n    datasource: {}\n    rules:\n      - record: job:remote_only:sum\n        expr: sum by (job) (remote_only) * 2\n",
            prom.url("")
        ),
    )
    .unwrap();
    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\nglobal: {rule_query_offset: 0s}\n",
    );
    let mut got = serde_json::Value::Null;
    wait_until(
        "the remote rule's result in closedloop",
        Duration::from_secs(20),
        || {
            got = cl.api("/api/v1/query?query=job:remote_only:sum");
            got["result"][0]["value"][1] == "84"
        },
    );
    assert_eq!(got["result"][0]["metric"]["job"], "far", "{got}");
}

#[test]
fn rule_file_detectors_score_ingested_samples() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: watch\n    detectors:\n      - name: errors_high\n        selector: errors_total\n        algorithm: threshold\n        upper: 5\n    rules: []\n",
    )
    .unwrap();
    let cl = Closedloop::start_in(dir, "rule_files: ['rules.yml']\n");
    write(&cl, 10.0);
    let mut got = serde_json::Value::Null;
    wait_until("a detector output series", Duration::from_secs(10), || {
        got = cl.api("/api/v1/query?query=anomaly_score%7Bdetector%3D%22errors_high%22%7D");
        got["result"].as_array().is_some_and(|r| !r.is_empty())
    });
    assert_eq!(got["result"][0]["metric"]["job"], "api", "{got}");
}

#[test]
fn sighup_reloads_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    // No file watching: only the signal can reload.
    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\nrules:\n  watch_interval: 0s\n",
    );
    std::fs::write(
        &rules,
        "groups:\n  - name: after_hup\n    rules:\n      - record: one\n        expr: '1'\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cl.api("/api/v1/rules")["groups"][0]["name"], "api");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &cl.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(
        "SIGHUP to reload the rules",
        Duration::from_secs(10),
        || cl.api("/api/v1/rules")["groups"][0]["name"] == "after_hup",
    );
}
