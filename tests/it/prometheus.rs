//! A real Prometheus (Debian's 2.42) scrapes itself and remote-writes to closedloop,
//! plain, with basic auth, and with a bearer token over TLS; closedloop then reports
//! the same series, labels and latest values (through `/api/v1/query`) as Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;

fn scrape_self(port: u16) -> String {
    format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
}

fn remote_write(url: &str, extra: &str) -> String {
    format!(
        "remote_write:\n  - url: {url}\n    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}\n    metadata_config: {{send: false}}\n{extra}"
    )
}

/// Series as sorted label-set strings.
fn series_set(data: &serde_json::Value) -> BTreeSet<String> {
    data.as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// An instant query's vector as label set (JSON text) → (timestamp, value text).
fn latest_values(data: &serde_json::Value) -> BTreeMap<String, (f64, String)> {
    assert_eq!(data["resultType"], "vector", "{data}");
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"].to_string(),
                (
                    s["value"][0].as_f64().unwrap(),
                    s["value"][1].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// What differs between Prometheus's and closedloop's answer; empty when they agree.
/// Values are the same stored floats, so their text is compared exactly.
fn diff_values(
    theirs: &BTreeMap<String, (f64, String)>,
    ours: &BTreeMap<String, (f64, String)>,
) -> String {
    let mut out = Vec::new();
    for (labels, v) in theirs {
        match ours.get(labels) {
            None => out.push(format!("missing in closedloop: {labels}")),
            Some(o) if o != v => out.push(format!("{labels}: Prometheus {v:?}, closedloop {o:?}")),
            Some(_) => {}
        }
    }
    for labels in ours.keys().filter(|l| !theirs.contains_key(*l)) {
        out.push(format!("extra in closedloop: {labels}"));
    }
    out.truncate(10);
    out.join("\n")
}

fn wait_for_samples(cl: &Closedloop, prom: &Prometheus) {
    wait_until(
        "remote-written samples to reach closedloop",
        Duration::from_secs(60),
        || cl.metric("closedloop_remote_write_samples_written_total", "") > 500.0,
    );
    assert!(prom.log().contains("remote") || !prom.log().is_empty());
}

#[test]
fn series_match_what_prometheus_reports() {
    let cl = Closedloop::start("");
    let write_url = cl.url("/api/v1/write");
    let prom = Prometheus::start(
        |port| scrape_self(port) + &remote_write(&write_url, ""),
        &[],
    );
    wait_for_samples(&cl, &prom);
    // Let a few more scrapes through, then compare a window that both have complete.
    std::thread::sleep(Duration::from_secs(4));
    let end = now_ms() as f64 / 1000.0 - 2.5;
    let start = end - 1.5;
    let query = format!("/api/v1/series?match[]={{job=\"prometheus\"}}&start={start}&end={end}");
    let theirs = series_set(&api_get(&prom.url(&query)));
    let ours = series_set(&cl.api(&query));
    assert!(
        theirs.len() > 100,
        "Prometheus reports only {} series",
        theirs.len()
    );
    let missing: Vec<_> = theirs.difference(&ours).take(5).collect();
    let extra: Vec<_> = ours.difference(&theirs).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing in closedloop: {missing:?}\nextra in closedloop: {extra:?}"
    );

    // Label names and values agree as well.
    let names_q = format!("/api/v1/labels?match[]={{job=\"prometheus\"}}&start={start}&end={end}");
    assert_eq!(api_get(&prom.url(&names_q)), cl.api(&names_q));
    let values_q = format!(
        "/api/v1/label/__name__/values?match[]={{job=\"prometheus\"}}&start={start}&end={end}"
    );
    assert_eq!(api_get(&prom.url(&values_q)), cl.api(&values_q));

    // The latest values agree too: both engines evaluate the same instant query at
    // the same time. Remote write trails the scrapes by up to a batch deadline, so a
    // mismatch is retried at a later time a few times before it counts.
    let mut last_diff = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let t = (now_ms() - 3_000) as f64 / 1000.0;
        let query = format!("/api/v1/query?query={{job=\"prometheus\"}}&time={t}");
        let theirs = latest_values(&api_get(&prom.url(&query)));
        let ours = latest_values(&cl.api(&query));
        assert!(theirs.len() > 100, "Prometheus returned {}", theirs.len());
        last_diff = diff_values(&theirs, &ours);
        if last_diff.is_empty() {
            break;
        }
    }
    assert!(
        last_diff.is_empty(),
        "latest values differ from Prometheus's /api/v1/query:\n{last_diff}"
    );

    assert_eq!(
        cl.metric("closedloop_remote_write_requests_total", "code=\"400\""),
        0.0,
        "{}",
        cl.log()
    );
    assert!(cl.metric("closedloop_store_bytes", "") > 0.0);
}

#[test]
fn prometheus_sends_basic_auth_and_strangers_get_401() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "correct horse\n").unwrap();
    let cl = Closedloop::start_in(
        dir,
        "auth:\n  write:\n    basic_auth: {username: prom, password_file: pw}\n",
    );
    let pw_file = cl.dir.path().join("pw");
    let write_url = cl.url("/api/v1/write");
    let auth = format!(
        "    basic_auth: {{username: prom, password_file: {}}}\n",
        pw_file.display()
    );
    let prom = Prometheus::start(
        |port| scrape_self(port) + &remote_write(&write_url, &auth),
        &[],
    );
    wait_for_samples(&cl, &prom);

    let body = v1_body(&[(&[("__name__", "intruder")], &[(now_ms(), 1.0)])]);
    let (status, _) = post_write(&cl, body, "application/x-protobuf");
    assert_eq!(status, 401);
    assert!(cl
        .api("/api/v1/series?match[]=intruder")
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn prometheus_sends_bearer_token_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("token"), "t0ken").unwrap();
    let cl = Closedloop::start_in(
        dir,
        "tls: {cert_file: cert.pem, key_file: key.pem}\nauth:\n  write: {bearer_token_file: token}\n",
    );
    let d = cl.dir.path().to_owned();
    let write_url = format!("https://{}/api/v1/write", cl.addr);
    let extra = format!(
        "    authorization: {{type: Bearer, credentials_file: {}}}\n    tls_config: {{ca_file: {}}}\n",
        d.join("token").display(),
        d.join("cert.pem").display()
    );
    let prom = Prometheus::start(
        |port| scrape_self(port) + &remote_write(&write_url, &extra),
        &[],
    );

    let tls = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let metric = |name: &str| -> f64 {
        let text = tls
            .get(format!("https://{}/metrics", cl.addr))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    wait_until("samples over TLS", Duration::from_secs(60), || {
        metric("closedloop_remote_write_samples_written_total") > 500.0
    });
    // Plain HTTP to a TLS port does not get through, and a wrong token is refused.
    assert!(http()
        .get(cl.url("/-/healthy"))
        .send()
        .map(|r| !r.status().is_success())
        .unwrap_or(true));
    let status = tls
        .post(&write_url)
        .header("Authorization", "Bearer wrong")
        .header("Content-Type", "application/x-protobuf")
        .body(v1_body(&[(&[("__name__", "x")], &[(now_ms(), 1.0)])]))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    drop(prom);
}
