//! The whole loop through the real binary: remote-written samples make a rule fire,
//! the decide stage passes its actions through the policy and the audit log, and
//! the actuators act on real peers — a real Redis, a real Alertmanager, a local
//! webhook receiver — and on the Kubernetes API double (the production `kube`
//! client pointed at it). Approvals and rollbacks go through the API and the CLI.

use std::process::Command;
use std::time::Duration;

use closedloop::act::testing::peers::{Alertmanager, RedisServer, WebhookReceiver};
use closedloop::act::testing::{fixtures, KubeDouble};

use crate::common::*;

const TOKEN: &str = "admin-s3cret";

/// Runs the CLI against `cl` with the admin token.
fn cli(cl: &Closedloop, args: &[&str]) -> (bool, String) {
    let url = cl.url("");
    let out = Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(args)
        .args(["--url", &url])
        .env("CLOSEDLOOP_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Writes one sample of `name{labels}` now.
fn set(cl: &Closedloop, name: &str, labels: &[(&str, &str)], v: f64) {
    let mut all = vec![("__name__", name)];
    all.extend_from_slice(labels);
    let body = v1_body(&[(&all, &[(now_ms(), v)])]);
    let (status, text) = post_write(cl, body, "application/x-protobuf");
    assert_eq!(status, 204, "{text}");
}

/// Keeps writing `name{labels} = v` every 500 ms until `f` holds (so the rule sees
/// fresh samples however long the decision takes).
fn hold_until(
    cl: &Closedloop,
    name: &str,
    labels: &[(&str, &str)],
    v: f64,
    what: &str,
    mut f: impl FnMut() -> bool,
) {
    wait_until(what, Duration::from_secs(60), || {
        set(cl, name, labels, v);
        f()
    });
}

/// The audit log's actions (newest first) matching `query`.
fn actions(cl: &Closedloop, query: &str) -> Vec<serde_json::Value> {
    cl.api(&format!("/api/v1/actions?{query}"))["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn config(rules: &str, extra: &str) -> String {
    format!(
        "rule_files: ['{rules}']\nglobal: {{evaluation_interval: 1s}}\nauth:\n  admin:\n    bearer_token_env: CL_ADMIN_TOKEN\n{extra}"
    )
}

fn start(dir: tempfile::TempDir, rules: &str, extra: &str) -> Closedloop {
    std::env::set_var("CL_ADMIN_TOKEN", TOKEN);
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    Closedloop::start_in(dir, &config("rules.yml", extra))
}

const CACHE_RULES: &str = r#"groups:
  - name: cache
    interval: 1s
    rules:
      - alert: StaleSessions
        expr: session_errors > 0
        labels: {severity: warning}
        actions:
          - type: clear_cache
            target: sessions
            pattern: "session:*"
            max_keys: 10000
"#;

fn redis_config(redis: &RedisServer, dry_run: bool) -> String {
    format!(
        "decide:\n  dry_run: {dry_run}\n  allow: {{actions: [clear_cache], redis_patterns: ['session:*']}}\nactuators:\n  redis:\n    sessions: {{url: '{}', batch_size: 100}}\n",
        redis.url()
    )
}

fn count(c: &mut redis::Connection, pattern: &str) -> usize {
    redis::cmd("KEYS")
        .arg(pattern)
        .query::<Vec<String>>(c)
        .unwrap()
        .len()
}

#[test]
fn a_firing_rule_clears_redis_keys_in_batches_and_dry_run_removes_nothing() {
    let redis = RedisServer::start();
    let mut c = redis.connection(0);
    for i in 0..1_200 {
        let _: () = redis::cmd("SET")
            .arg(format!("session:{i}"))
            .arg("x")
            .query(&mut c)
            .unwrap();
    }
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("profile:{i}"))
            .arg("x")
            .query(&mut c)
            .unwrap();
    }

    // Dry run first: decided, audited, counted — and nothing removed.
    let cl = start(
        tempfile::tempdir().unwrap(),
        CACHE_RULES,
        &redis_config(&redis, true),
    );
    hold_until(
        &cl,
        "session_errors",
        &[],
        3.0,
        "a dry-run decision",
        || !actions(&cl, "outcome=dry_run").is_empty(),
    );
    assert_eq!(count(&mut c, "session:*"), 1_200);
    assert_eq!(
        cl.metric(
            "closed_loop_remediations_total",
            "action=\"clear_cache\",result=\"dry_run\""
        ),
        1.0
    );
    drop(cl);

    // For real: the keys go, in batches of 100; the others stay.
    let cl = start(
        tempfile::tempdir().unwrap(),
        CACHE_RULES,
        &redis_config(&redis, false),
    );
    let mut done = Vec::new();
    hold_until(&cl, "session_errors", &[], 3.0, "the cache cleared", || {
        done = actions(&cl, "outcome=succeeded&kind=clear_cache");
        !done.is_empty()
    });
    assert_eq!(count(&mut c, "session:*"), 0);
    assert_eq!(count(&mut c, "profile:*"), 10, "unrelated keys remain");
    let a = &done[0];
    assert_eq!(a["target"], "redis:sessions/session:*", "{a}");
    assert_eq!(a["cause"]["rule"], "cache/StaleSessions", "{a}");
    assert_eq!(a["dry_run"], false, "{a}");
    assert!(
        a["effect"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("1200"),
        "{a}"
    );
    let id = a["id"].as_i64().unwrap();
    let one = cl.api(&format!("/api/v1/actions/{id}"));
    let kinds: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds[..2], ["execution_started", "succeeded"], "{one}");
    assert_eq!(
        cl.metric(
            "closed_loop_remediations_total",
            "action=\"clear_cache\",result=\"succeeded\""
        ),
        1.0
    );
    // Still firing: the same alert never clears the cache again; the condition did
    // not clear, which the verification records.
    wait_until("the verification", Duration::from_secs(30), || {
        set(&cl, "session_errors", &[], 3.0);
        cl.api(&format!("/api/v1/actions/{id}"))["action"]["verification"] == "not_cleared"
    });
    assert_eq!(actions(&cl, "kind=clear_cache").len(), 1);
}

const INCIDENT_RULES: &str = r#"groups:
  - name: sessions
    interval: 1s
    detectors:
      - {name: session_errors_high, selector: session_errors, algorithm: threshold, upper: 0.5}
"#;

#[test]
fn an_anomaly_incident_clears_redis_keys_through_the_policy() {
    let redis = RedisServer::start();
    let mut c = redis.connection(0);
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("session:{i}"))
            .arg("x")
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("profile:1")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let extra = format!(
        "decide:\n  dry_run: false\n  allow: {{actions: [clear_cache], redis_patterns: ['session:*']}}\n  incidents:\n    actions:\n      - {{type: clear_cache, target: sessions, pattern: 'session:*'}}\n    verify_for: 2s\nactuators:\n  redis:\n    sessions: {{url: '{}'}}\n",
        redis.url()
    );
    let cl = start(tempfile::tempdir().unwrap(), INCIDENT_RULES, &extra);
    let mut done = Vec::new();
    hold_until(
        &cl,
        "session_errors",
        &[],
        3.0,
        "the incident's action",
        || {
            done = actions(&cl, "kind=clear_cache");
            !done.is_empty()
        },
    );
    let a = &done[0];
    assert_eq!(a["cause"]["trigger"], "incident", "{a}");
    assert_eq!(a["target"], "redis:sessions/session:*", "{a}");
    wait_until("the cache cleared", Duration::from_secs(30), || {
        actions(&cl, "kind=clear_cache")[0]["outcome"] == "succeeded"
    });
    assert_eq!(count(&mut c, "session:*"), 0);
    assert_eq!(count(&mut c, "profile:*"), 1, "unrelated keys remain");
    assert!(cl.metric("closed_loop_detections_total", "") >= 1.0);
    assert!(cl.metric("closed_loop_mttd_seconds_count", "") >= 1.0);
    assert_eq!(
        cl.metric(
            "closed_loop_remediations_total",
            "action=\"clear_cache\",result=\"succeeded\""
        ),
        1.0
    );
    // The incident stays open while errors keep coming: one action, never repeated.
    for _ in 0..4 {
        set(&cl, "session_errors", &[], 3.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(actions(&cl, "kind=clear_cache").len(), 1);
}

const SCALE_RULES: &str = r#"groups:
  - name: web
    interval: 1s
    rules:
      - alert: WebSlow
        expr: web_latency_seconds > 2
        labels: {severity: warning}
        annotations: {summary: "web p99 {{ $value }}s"}
        actions:
          - type: scale_up
            target: deployment/web
            namespace: prod
            replicas: "+2"
            max_replicas: 10
            verify_for: 2s
          - type: notify
            channel: slack
"#;

#[test]
fn scale_on_the_kubernetes_double_verify_fall_back_to_slack_and_roll_back_by_cli() {
    let double = KubeDouble::start();
    double.insert(fixtures::deployment("prod", "web", 3, "web:1", 1));
    let slack = WebhookReceiver::start();
    let extra = format!(
        "decide:\n  dry_run: false\n  allow: {{actions: [scale], namespaces: [prod]}}\nactuators:\n  kubernetes: {{kubeconfig: '{}'}}\n  notify:\n    slack: {{kind: slack, url: '{}'}}\n",
        double.kubeconfig().display(),
        slack.url("/hooks/slack")
    );
    let cl = start(tempfile::tempdir().unwrap(), SCALE_RULES, &extra);
    let replicas = || double.get("deployments", "prod", "web").unwrap()["spec"]["replicas"].clone();
    hold_until(&cl, "web_latency_seconds", &[], 3.5, "the scale-up", || {
        replicas() == 5
    });
    // It stays slow: after its verify window the scale-up counts as not cleared
    // and the next step, the Slack notification, runs.
    hold_until(
        &cl,
        "web_latency_seconds",
        &[],
        3.5,
        "the Slack fallback",
        || !slack.received().is_empty(),
    );
    let msg = &slack.received()[0];
    assert_eq!(msg.method, "POST");
    assert!(
        msg.body["text"].as_str().unwrap_or("").contains("WebSlow"),
        "{:?}",
        msg.body
    );
    let scale = &actions(&cl, "kind=scale")[0];
    assert_eq!(scale["verification"], "not_cleared", "{scale}");
    assert_eq!(scale["outcome"], "succeeded", "{scale}");
    assert_eq!(replicas(), 5, "never scaled twice for one alert");

    // A person rolls it back with the CLI: same policy and audit path.
    let id = scale["id"].as_i64().unwrap().to_string();
    let (ok, out) = cli(&cl, &["actions", "rollback", &id, "--by", "carol"]);
    assert!(ok, "{out}");
    wait_until("the rollback", Duration::from_secs(30), || replicas() == 3);
    let rb = &actions(&cl, "kind=scale")[0];
    assert_eq!(rb["rollback_of"].as_i64(), scale["id"].as_i64(), "{rb}");
    assert_eq!(rb["cause"]["trigger"], "rollback", "{rb}");
    let (ok, out) = cli(&cl, &["actions", "rollback", &id]);
    assert!(!ok && out.contains("already rolled back"), "{out}");
    assert_eq!(
        cl.metric("closed_loop_human_interventions_total", "kind=\"rollback\""),
        1.0
    );
    // The double saw exactly the requests a scale and its undo need.
    let puts: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/scale"))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
}

const POD_RULES: &str = r#"groups:
  - name: pods
    interval: 1s
    rules:
      - alert: PodWedged
        expr: pod_wedged > 0
        labels: {severity: critical}
        actions:
          - type: restart_pod
            target: "{{ $labels.namespace }}/{{ $labels.pod }}"
        approval:
          required: true
          timeout: 10m
"#;

#[test]
fn a_pod_restart_waits_for_approval_by_cli_and_hits_only_that_pod() {
    let double = KubeDouble::start();
    double.insert(fixtures::pod("prod", "web-7d9f8c6b5-x2x4q", "uid-1"));
    double.insert(fixtures::pod("prod", "web-7d9f8c6b5-bbbbb", "uid-2"));
    let extra = format!(
        "decide:\n  dry_run: false\n  allow: {{actions: [restart_pod], namespaces: [prod]}}\nactuators:\n  kubernetes: {{kubeconfig: '{}'}}\n",
        double.kubeconfig().display()
    );
    let cl = start(tempfile::tempdir().unwrap(), POD_RULES, &extra);
    let labels = [("namespace", "prod"), ("pod", "web-7d9f8c6b5-x2x4q")];
    let mut pending = Vec::new();
    hold_until(
        &cl,
        "pod_wedged",
        &labels,
        1.0,
        "an approval request",
        || {
            pending = cl.api("/api/v1/approvals")["approvals"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            !pending.is_empty()
        },
    );
    assert_eq!(cl.metric("closed_loop_approvals_pending", ""), 1.0);
    let id = pending[0]["id"].as_i64().unwrap().to_string();
    let (ok, out) = cli(&cl, &["approvals", "list"]);
    assert!(ok && out.contains("prod/pod/web-7d9f8c6b5-x2x4q"), "{out}");
    assert!(double.get("pods", "prod", "web-7d9f8c6b5-x2x4q").is_some());
    let (ok, out) = cli(&cl, &["approvals", "approve", &id, "--by", "alice"]);
    assert!(ok && out.contains("decided by: alice"), "{out}");
    wait_until("the pod deleted", Duration::from_secs(30), || {
        set(&cl, "pod_wedged", &labels, 1.0);
        double.get("pods", "prod", "web-7d9f8c6b5-x2x4q").is_none()
    });
    assert!(
        double.get("pods", "prod", "web-7d9f8c6b5-bbbbb").is_some(),
        "the other pod is untouched"
    );
    let delete = double
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(
        delete.body["preconditions"]["uid"], "uid-1",
        "the delete is pinned to the pod's UID: {:?}",
        delete.body
    );
    let a = cl.api(&format!("/api/v1/actions/{id}"));
    assert_eq!(a["action"]["decided_by"], "alice", "{a}");
    assert_eq!(a["action"]["outcome"], "succeeded", "{a}");
    assert_eq!(cl.metric("closed_loop_approvals_pending", ""), 0.0);
    assert_eq!(
        cl.metric("closed_loop_human_interventions_total", "kind=\"approve\""),
        1.0
    );
}

#[test]
fn notify_reaches_a_real_alertmanager() {
    let am = Alertmanager::start();
    let rules = "groups:\n  - name: n\n    interval: 1s\n    rules:\n      - alert: DiskFull\n        expr: disk_used_ratio > 0.9\n        labels: {severity: critical}\n        annotations: {summary: 'disk {{ $labels.device }} full'}\n        actions:\n          - {type: notify, channel: am}\n";
    let extra = format!(
        "decide:\n  dry_run: false\nactuators:\n  notify:\n    am: {{kind: alertmanager, url: '{}'}}\n",
        am.url()
    );
    let cl = start(tempfile::tempdir().unwrap(), rules, &extra);
    let mut found = None;
    hold_until(
        &cl,
        "disk_used_ratio",
        &[("device", "sda")],
        0.95,
        "the alert in Alertmanager",
        || {
            found = am
                .alerts()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "DiskFull");
            found.is_some()
        },
    );
    let a = found.unwrap();
    assert_eq!(a["labels"]["device"], "sda", "{a}");
    let n = &actions(&cl, "kind=notify")[0];
    assert_eq!(n["outcome"], "succeeded", "{n}");
    assert_eq!(n["target"], "notify:am", "{n}");
}
