//! Decide through the real binary: the closed_loop_* families, dry-run decisions in
//! the audit log (API and CLI), refusals, approvals, rejections, verification and
//! rollback through the API and the CLI, the guards on approvals, rollbacks and the
//! views, and `closedloop replay` against a running service's store.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_closedloop"));
    c.args(args)
        .env_remove("CLOSEDLOOP_TOKEN")
        .env_remove("CLOSEDLOOP_READ_TOKEN");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_closed_loop_family_is_exported_from_start() {
    let cl = Closedloop::start("");
    let text = http()
        .get(cl.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for family in [
        "closed_loop_detections_total",
        "closed_loop_remediations_total",
        "closed_loop_decision_latency_seconds",
        "closed_loop_success_rate",
        "closed_loop_mttd_seconds",
        "closed_loop_mttr_seconds",
        "closed_loop_human_interventions_total",
        "closed_loop_actions_refused_total",
        "closed_loop_approvals_pending",
        "closed_loop_intake_dropped_total",
        "closed_loop_audit_write_failures_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} "))
                && text.contains(&format!("# TYPE {family} ")),
            "{family} missing from /metrics:\n{text}"
        );
    }
    assert!(
        text.contains("closed_loop_remediations_total{action=\"scale\",result=\"succeeded\"} 0")
    );
}

const DOWN_RULES: &str = r#"groups:
  - name: web
    interval: 1s
    rules:
      - alert: WebDown
        expr: up{job="web"} == 0
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.job }} is down"
        actions:
          - type: scale_up
            target: deployment/web
            namespace: prod
            replicas: "+2"
          - type: notify
            channel: team
        cooldown: 10m
"#;

#[test]
fn dry_run_decisions_reach_the_audit_log_api_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), DOWN_RULES).unwrap();
    // dry_run is on by default: the policy decides, nothing runs.
    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\ndecide:\n  allow: {actions: [scale], namespaces: [prod]}\n",
    );
    let body = v1_body(&[(&[("__name__", "up"), ("job", "web")], &[(now_ms(), 0.0)])]);
    assert_eq!(post_write(&cl, body, "application/x-protobuf").0, 204);
    let mut actions = serde_json::Value::Null;
    wait_until("a dry-run decision", Duration::from_secs(30), || {
        actions = cl.api("/api/v1/actions?outcome=dry_run");
        !actions["actions"].as_array().unwrap().is_empty()
    });
    let a = &actions["actions"][0];
    assert_eq!(a["kind"], "scale", "{a}");
    assert_eq!(a["target"], "prod/deployment/web", "{a}");
    assert_eq!(a["cause"]["rule"], "web/WebDown", "{a}");
    assert_eq!(a["cause"]["labels"]["job"], "web", "{a}");
    assert_eq!(a["dry_run"], true, "{a}");
    // Filters: nothing for another rule; the one action by target.
    assert!(cl.api("/api/v1/actions?rule=other/Rule")["actions"]
        .as_array()
        .unwrap()
        .is_empty());
    let by_target = cl.api("/api/v1/actions?target=prod/deployment/web&limit=1");
    assert_eq!(by_target["actions"].as_array().unwrap().len(), 1);
    let bad = http()
        .get(cl.url("/api/v1/actions?outcome=exploded"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("invalid outcome"));
    // One action with its events.
    let id = a["id"].as_i64().unwrap();
    let one = cl.api(&format!("/api/v1/actions/{id}"));
    assert_eq!(one["events"][0]["kind"], "dry_run", "{one}");
    assert_eq!(one["events"][0]["actor"], "rule:web/WebDown", "{one}");
    // The CLI lists and shows it.
    let url = cl.url("");
    let (ok, out) = cli(
        &[
            "actions",
            "--url",
            &url,
            "list",
            "--filter",
            "outcome=dry_run",
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("prod/deployment/web") && out.contains("dry_run"),
        "{out}"
    );
    let (ok, out) = cli(&["actions", "--url", &url, "show", &id.to_string()], &[]);
    assert!(ok && out.contains("rule:web/WebDown"), "{out}");
    assert_eq!(
        cl.metric(
            "closed_loop_remediations_total",
            "action=\"scale\",result=\"dry_run\""
        ),
        1.0
    );
    assert!(cl.metric("closed_loop_mttd_seconds_count", "") >= 1.0);
}

#[test]
fn approvals_and_rollbacks_always_need_the_admin_credential() {
    // Without auth.admin they are refused outright (the read views stay open).
    let cl = Closedloop::start("");
    for path in [
        "/api/v1/approvals/1/approve",
        "/api/v1/approvals/1/reject",
        "/api/v1/actions/1/rollback",
    ] {
        let r = http().post(cl.url(path)).send().unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().unwrap().contains("configure auth.admin"), "{path}");
    }
    assert!(cl.api("/api/v1/approvals")["approvals"]
        .as_array()
        .unwrap()
        .is_empty());
    let url = cl.url("");
    let (ok, out) = cli(&["approvals", "--url", &url, "approve", "7"], &[]);
    assert!(
        !ok && out.contains("403") && out.contains("auth.admin"),
        "{out}"
    );
}

#[test]
fn approvals_and_rollbacks_sit_behind_the_admin_guard_and_views_behind_the_read_guard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("read-token"), "r3ader\n").unwrap();
    let cl = Closedloop::start_in(
        dir,
        "auth:\n  admin:\n    bearer_token_file: token\n  read:\n    bearer_token_file: read-token\n",
    );
    for path in [
        "/api/v1/approvals/1/approve",
        "/api/v1/approvals/1/reject",
        "/api/v1/actions/1/rollback",
    ] {
        let r = http().post(cl.url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
        // The read credential is not enough to change anything.
        let r = http()
            .post(cl.url(path))
            .bearer_auth("r3ader")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = http()
        .post(cl.url("/api/v1/approvals/1/approve"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"], "no action 1", "{body}");
    let r = http()
        .post(cl.url("/api/v1/approvals/x/approve"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // The audit log and the approval queue are read routes.
    for path in ["/api/v1/approvals", "/api/v1/actions", "/api/v1/actions/1"] {
        let r = http().get(cl.url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = http()
        .get(cl.url("/api/v1/approvals"))
        .bearer_auth("r3ader")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = cl.url("");
    let (ok, out) = cli(&["approvals", "--url", &url, "list"], &[]);
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = cli(
        &["approvals", "--url", &url, "list"],
        &[("CLOSEDLOOP_READ_TOKEN", "r3ader")],
    );
    assert!(ok && out.contains("no actions are waiting"), "{out}");
    let (ok, out) = cli(
        &["actions", "--url", &url, "list"],
        &[("CLOSEDLOOP_READ_TOKEN", "r3ader")],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &["approvals", "--url", &url, "approve", "7"],
        &[("CLOSEDLOOP_READ_TOKEN", "r3ader")],
    );
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = cli(
        &["approvals", "--url", &url, "approve", "7"],
        &[
            ("CLOSEDLOOP_TOKEN", "s3cret"),
            ("CLOSEDLOOP_READ_TOKEN", "r3ader"),
        ],
    );
    assert!(!ok && out.contains("no action 7"), "{out}");
    let (ok, out) = cli(
        &["actions", "--url", &url, "rollback", "7"],
        &[("CLOSEDLOOP_TOKEN", "s3cret")],
    );
    assert!(!ok && out.contains("no action 7"), "{out}");
}

const OPS_RULES: &str = r#"groups:
  - name: ops
    interval: 1s
    rules:
      - alert: RateLimitHot
        expr: ratelimit_errors > 0
        approval: {required: true, timeout: 30m}
        actions:
          - {type: http_config, endpoint: ratelimit, body: {limit: 50}, verify_for: 2s}
      - alert: RateLimitPanic
        expr: ratelimit_errors > 0
        approval: {required: true, timeout: 30m}
        actions:
          - {type: http_config, endpoint: ratelimit, body: {limit: 1}}
      - alert: FlagFlip
        expr: ratelimit_errors > 0
        actions:
          - {type: http_config, endpoint: flags, body: {degrade: true}}
"#;

/// The outcome of the newest action of rule `ops/<name>`.
fn newest_of<'a>(actions: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    actions["actions"]
        .as_array()?
        .iter()
        .find(|a| a["cause"]["rule"] == format!("ops/{name}"))
}

#[test]
fn refusals_approvals_rejections_verification_and_rollback_through_api_and_cli() {
    let endpoint = closedloop::act::testing::peers::WebhookReceiver::start();
    endpoint.set_current(serde_json::json!({"limit": 100}));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), OPS_RULES).unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let cl = Closedloop::start_in(
        dir,
        &format!(
            "rule_files: ['rules.yml']\nglobal: {{evaluation_interval: 1s}}\nauth:\n  admin: {{bearer_token_file: token}}\ndecide:\n  dry_run: false\n  allow: {{actions: [http_config], http_endpoints: [ratelimit]}}\nactuators:\n  http_config:\n    ratelimit: {{url: '{0}', get_url: '{0}'}}\n    flags: {{url: '{1}'}}\n",
            endpoint.url("/ratelimit"),
            endpoint.url("/flags"),
        ),
    );
    let url = cl.url("");
    let admin = [("CLOSEDLOOP_TOKEN", "s3cret")];
    let fire = || {
        let body = v1_body(&[(&[("__name__", "ratelimit_errors")], &[(now_ms(), 3.0)])]);
        assert_eq!(post_write(&cl, body, "application/x-protobuf").0, 204);
    };

    // The flag endpoint is not on the allow-list: refused, audited with its reason,
    // counted; the API and the CLI show it; nothing reached the endpoint.
    let mut all = serde_json::Value::Null;
    wait_until(
        "a refusal and two approval requests",
        Duration::from_secs(60),
        || {
            fire();
            all = cl.api("/api/v1/actions");
            newest_of(&all, "FlagFlip").is_some()
                && newest_of(&all, "RateLimitHot").is_some()
                && newest_of(&all, "RateLimitPanic").is_some()
        },
    );
    let refused = newest_of(&all, "FlagFlip").unwrap();
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("decide.allow.http_endpoints"),
        "{refused}"
    );
    assert_eq!(
        cl.metric(
            "closed_loop_actions_refused_total",
            "reason=\"not_allowed\""
        ),
        1.0
    );
    let (ok, out) = cli(
        &[
            "actions",
            "--url",
            &url,
            "list",
            "--filter",
            "outcome=refused",
        ],
        &[],
    );
    assert!(
        ok && out.contains("flags") && out.contains("refused"),
        "{out}"
    );
    assert!(endpoint
        .received()
        .iter()
        .all(|r| !r.path.starts_with("/flags")));

    // Both rate-limit actions wait for a human; nothing ran yet.
    let hot = newest_of(&all, "RateLimitHot").unwrap()["id"]
        .as_i64()
        .unwrap();
    let panic = newest_of(&all, "RateLimitPanic").unwrap()["id"]
        .as_i64()
        .unwrap();
    let queue = cl.api("/api/v1/approvals");
    assert_eq!(queue["approvals"].as_array().unwrap().len(), 2, "{queue}");
    assert_eq!(cl.metric("closed_loop_approvals_pending", ""), 2.0);
    let (ok, out) = cli(&["approvals", "--url", &url, "list"], &[]);
    assert!(
        ok && out.contains("ops/RateLimitHot") && out.contains("ops/RateLimitPanic"),
        "{out}"
    );
    assert!(endpoint.received().iter().all(|r| r.method == "GET"));

    // Rejected by CLI, with who and why.
    let (ok, out) = cli(
        &[
            "approvals",
            "--url",
            &url,
            "reject",
            &panic.to_string(),
            "--by",
            "bob",
            "--reason",
            "too aggressive",
        ],
        &admin,
    );
    assert!(
        ok && out.contains("rejected") && out.contains("bob"),
        "{out}"
    );
    // Approved through the API: the change runs once.
    let r = http()
        .post(cl.url(&format!("/api/v1/approvals/{hot}/approve")))
        .bearer_auth("s3cret")
        .form(&[("by", "alice")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    wait_until("the approved change", Duration::from_secs(30), || {
        fire();
        cl.api(&format!("/api/v1/actions/{hot}"))["action"]["outcome"] == "succeeded"
    });
    assert_eq!(endpoint.current(), serde_json::json!({"limit": 50}));
    let writes = |e: &closedloop::act::testing::peers::WebhookReceiver| {
        e.received().iter().filter(|r| r.method != "GET").count()
    };
    assert_eq!(writes(&endpoint), 1, "only the approved change ran");
    assert_eq!(cl.metric("closed_loop_approvals_pending", ""), 0.0);
    let rejected = cl.api(&format!("/api/v1/actions/{panic}"))["action"].clone();
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert_eq!(rejected["decided_by"], "bob", "{rejected}");
    let approved = cl.api(&format!("/api/v1/actions/{hot}"))["action"].clone();
    assert_eq!(approved["decided_by"], "alice", "{approved}");
    assert_eq!(
        cl.metric("closed_loop_human_interventions_total", "kind=\"approve\""),
        1.0
    );
    assert_eq!(
        cl.metric("closed_loop_human_interventions_total", "kind=\"reject\""),
        1.0
    );

    // Still firing after its 2 s verify window: the change did not clear it.
    wait_until("the verification", Duration::from_secs(30), || {
        fire();
        cl.api(&format!("/api/v1/actions/{hot}"))["action"]["verification"] == "not_cleared"
    });
    let (ok, out) = cli(&["actions", "--url", &url, "show", &hot.to_string()], &[]);
    assert!(
        ok && out.contains("not_cleared") && out.contains("rollback"),
        "{out}"
    );

    // Rolled back through the API: the previous value is restored, once.
    let r = http()
        .post(cl.url(&format!("/api/v1/actions/{hot}/rollback")))
        .bearer_auth("s3cret")
        .form(&[("by", "carol")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let rb: serde_json::Value = r.json().unwrap();
    let rb_id = rb["data"]["action"]["id"].as_i64().unwrap();
    assert_eq!(
        rb["data"]["action"]["rollback_of"].as_i64(),
        Some(hot),
        "{rb}"
    );
    wait_until("the rollback", Duration::from_secs(30), || {
        cl.api(&format!("/api/v1/actions/{rb_id}"))["action"]["outcome"] == "succeeded"
    });
    assert_eq!(endpoint.current(), serde_json::json!({"limit": 100}));
    assert_eq!(writes(&endpoint), 2);
    let again = http()
        .post(cl.url(&format!("/api/v1/actions/{hot}/rollback")))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(again.status(), 409);
    let (ok, out) = cli(
        &["actions", "--url", &url, "rollback", &hot.to_string()],
        &admin,
    );
    assert!(!ok && out.contains("409"), "{out}");
    assert_eq!(writes(&endpoint), 2, "a rollback runs once");
}

#[test]
fn replay_shows_when_alerts_would_fire_and_what_the_policy_would_do() {
    // The history lives in a running closedloop's store: two bursts of errors.
    let source = Closedloop::start("");
    let now = now_ms();
    let start = now - 40 * 60_000;
    let mut samples = Vec::new();
    let mut t = start;
    while t <= now {
        let m = (t - start) / 60_000;
        let bad = (5..10).contains(&m) || (15..20).contains(&m);
        samples.push((t, if bad { 10.0 } else { 0.0 }));
        t += 15_000;
    }
    let body = v1_body(&[(&[("__name__", "errors"), ("job", "api")], &samples)]);
    assert_eq!(post_write(&source, body, "application/x-protobuf").0, 204);

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: api\n    interval: 30s\n    detectors:\n      - {name: errors_high, selector: errors, algorithm: threshold, upper: 5}\n    rules:\n      - alert: Errors\n        expr: errors > 5\n        for: 1m\n        labels: {severity: warning}\n        actions:\n          - {type: scale_up, target: prod/deployment/api}\n        cooldown: 20m\n",
    )
    .unwrap();
    let config = dir.path().join("c.yml");
    std::fs::write(
        &config,
        "decide:\n  allow: {actions: [scale], namespaces: [prod]}\n",
    )
    .unwrap();
    let from = format!("{}", start / 1000);
    let (ok, out) = cli(
        &[
            "replay",
            "--rules",
            rules.to_str().unwrap(),
            "--from",
            &from,
            "--to",
            "now",
            "--datasource",
            &source.url(""),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    let firing = out.lines().filter(|l| l.contains("FIRING")).count();
    let resolved = out.lines().filter(|l| l.contains("RESOLVED")).count();
    assert_eq!((firing, resolved), (2, 2), "{out}");
    assert!(
        out.contains("api/Errors{job=\"api\", severity=\"warning\"} value=10"),
        "{out}"
    );
    // The first firing would scale; the second meets the rule's 20m cooldown.
    assert!(
        out.contains("-> scale prod/deployment/api: would run"),
        "{out}"
    );
    assert!(out.contains("refused: cooldown"), "{out}");
    assert!(out.contains("summary: 2 firing, 2 resolved"), "{out}");
    // The group's detector ran over the same history: each burst is an incident.
    assert!(out.contains("detectors: 1 over their selectors"), "{out}");
    assert!(
        out.lines().filter(|l| l.contains("INCIDENT")).count() >= 1,
        "{out}"
    );
}
