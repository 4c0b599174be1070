//! The service as an operator meets it: config errors, admin auth, reload, shutdown.

use crate::common::*;

#[test]
fn bad_config_is_rejected_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, "storage:\n  retention: 6 hours\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.retention") && err.contains("invalid duration"),
        "{err}"
    );

    std::fs::write(&path, "listen_adress: 127.0.0.1:1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_adress"));
}

#[test]
fn unauthenticated_writes_never_touch_the_store() {
    std::env::set_var("CLOSEDLOOP_IT_TOKEN", "");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let cl = Closedloop::start_in(dir, "auth:\n  write: {bearer_token_file: token}\n");
    let body = || v1_body(&[(&[("__name__", "x")], &[(now_ms(), 1.0)])]);
    for auth in [None, Some("Bearer nope"), Some("Basic czNjcmV0Og==")] {
        let mut req = http()
            .post(cl.url("/api/v1/write"))
            .header("Content-Type", "application/x-protobuf")
            .body(body());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        assert!(resp.headers().contains_key("www-authenticate"));
    }
    assert_eq!(cl.metric("closedloop_store_samples", ""), 0.0);
    assert_eq!(cl.metric("closedloop_remote_write_requests_total", ""), 0.0);
    let resp = http()
        .post(cl.url("/api/v1/write"))
        .header("Authorization", "Bearer s3cret")
        .header("Content-Type", "application/x-protobuf")
        .body(body())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(!cl.log().contains("s3cret"), "a secret was logged");
}

#[test]
fn reload_needs_admin_rights_and_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin"), "adm1n").unwrap();
    std::fs::write(dir.path().join("writer"), "first").unwrap();
    let cl = Closedloop::start_in(
        dir,
        "auth:\n  admin: {bearer_token_file: admin}\n  write: {bearer_token_file: writer}\n",
    );
    let reload = |token: Option<&str>| {
        let mut req = http().post(cl.url("/-/reload"));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req.send().unwrap().status().as_u16()
    };
    let write = |token: &str| {
        http()
            .post(cl.url("/api/v1/write"))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/x-protobuf")
            .body(v1_body(&[(&[("__name__", "x")], &[(now_ms(), 1.0)])]))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(reload(None), 401);
    assert_eq!(reload(Some("wrong")), 401);
    // Rotate the write token: a reload picks it up without a restart.
    std::fs::write(cl.dir.path().join("writer"), "second").unwrap();
    assert_eq!(write("first"), 204);
    assert_eq!(reload(Some("adm1n")), 200);
    assert_eq!(write("first"), 401);
    assert_eq!(write("second"), 204);
    assert_eq!(
        cl.metric("closedloop_config_last_reload_successful", ""),
        1.0
    );
    // A broken config is refused; the running one stays.
    std::fs::write(
        cl.dir.path().join("closedloop.yml"),
        "storage: {retention: forever}\n",
    )
    .unwrap();
    assert_eq!(reload(Some("adm1n")), 500);
    assert_eq!(
        cl.metric("closedloop_config_last_reload_successful", ""),
        0.0
    );
    assert_eq!(write("second"), 204);
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let cl = Closedloop::start("log: {format: json}\n");
    assert!(http()
        .get(cl.url("/-/ready"))
        .send()
        .unwrap()
        .status()
        .is_success());
    let status = cl.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/closedloop.yml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["check", "config", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_promql_runs_scripts_and_fails_on_failures() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.test");
    std::fs::write(
        &good,
        "load 1m\n  up{job=\"a\"} 1 2 3\n\neval instant at 2m sum(up)\n  {} 3\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.test");
    std::fs::write(
        &bad,
        "load 1m\n  up{job=\"a\"} 1 2 3\n\neval instant at 2m sum(up)\n  {} 4\n",
    )
    .unwrap();
    let run = |f: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
            .args(["test", "promql"])
            .arg(f)
            .output()
            .unwrap()
    };
    let out = run(&good);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("1 passed, 0 failed, 0 skipped\n"));
    let out = run(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 passed, 1 failed"));
}

#[test]
fn nab_subcommand_scores_a_detector_on_the_shared_benchmark() {
    let nab = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nab");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args([
            "nab",
            "--data",
            &format!("{nab}/data"),
            "--labels",
            &format!("{nab}/combined_windows.json"),
        ])
        .args([
            "--detector",
            "trend",
            "--param",
            "window=2d",
            "--param",
            "k=0.5",
            "--param",
            "threshold=15",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("nab: standard=") && last.ends_with(" files=35"),
        "{last}"
    );
    let standard: f64 = last["nab: standard=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        standard >= 37.0,
        "standard score {standard} below the 37 target"
    );
}

/// What Grafana's Prometheus data source calls on "Save & test" and when building
/// queries, answered in Prometheus's shapes (Grafana itself is not packaged here).
#[test]
fn grafana_datasource_endpoints_answer_in_prometheus_shapes() {
    let cl = Closedloop::start("");
    let now = now_ms();
    let samples = [(now - 30_000, 1.0), (now - 15_000, 2.0)];
    let body = v1_body(&[(&[("__name__", "up"), ("job", "api")], &samples)]);
    assert_eq!(post_write(&cl, body, "application/x-protobuf").0, 204);
    let t = (now - 15_000) as f64 / 1000.0;

    let info = cl.api("/api/v1/status/buildinfo");
    assert!(info["version"].is_string(), "{info}");
    let health = cl.api(&format!("/api/v1/query?query=1%2B1&time={t}"));
    assert_eq!(health["resultType"], "scalar");
    assert_eq!(health["result"][1], "2");
    // Grafana sends queries as form POSTs by default.
    let form = |path: &str, body: String| -> serde_json::Value {
        let resp = http()
            .post(cl.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let v: serde_json::Value = resp.json().unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"].clone()
    };
    let instant = form("/api/v1/query", format!("query=up&time={t}"));
    assert_eq!(instant["resultType"], "vector");
    assert_eq!(
        instant["result"][0]["metric"],
        serde_json::json!({"__name__": "up", "job": "api"})
    );
    assert_eq!(instant["result"][0]["value"][1], "2");
    let range = form(
        "/api/v1/query_range",
        format!("query=up&start={}&end={t}&step=15", t - 15.0),
    );
    assert_eq!(range["resultType"], "matrix");
    assert_eq!(range["result"][0]["values"].as_array().unwrap().len(), 2);
    assert!(cl
        .api("/api/v1/labels")
        .as_array()
        .unwrap()
        .contains(&"job".into()));
    assert_eq!(
        cl.api("/api/v1/label/__name__/values"),
        serde_json::json!(["up"])
    );
    assert_eq!(cl.api("/api/v1/series?match[]=up")[0]["job"], "api");
    assert_eq!(cl.api("/api/v1/metadata"), serde_json::json!({}));
    // Errors in Prometheus's shape.
    let resp = http()
        .get(cl.url("/api/v1/query?query=sum("))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: serde_json::Value = resp.json().unwrap();
    assert_eq!(
        (err["status"].as_str(), err["errorType"].as_str()),
        (Some("error"), Some("bad_data"))
    );
}
