//! Regression tests of the drop-in compatibility items, each against the behaviour
//! of the real Prometheus 2.42 / promtool 2.42 where one runs here, or the
//! Prometheus 3 behaviour it matches (named in each test):
//! - the status and tooling endpoints answer in Prometheus's shapes, with the same
//!   cardinality figures for the same data, and `format_query` prints as 2.42 does;
//! - `check rules` reports duplicate rules as promtool does (same name and labels,
//!   whatever the expression), with promtool's output and exit codes;
//! - an alert's default `generatorURL` points at a page closedloop serves;
//! - UTF-8 metric and label names (Prometheus 3) are ingested, queried with the
//!   quoted selector syntax and used in rule files.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::answers::write_to;
use crate::common::*;

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The same series written to both; status endpoints compared.
#[test]
fn status_endpoints_answer_like_prometheus() {
    let am = Alertmanager::start();
    let cl = Closedloop::start(&format!(
        "alerting: {{alertmanagers: [{{url: '{}'}}]}}\n",
        am.url("")
    ));
    let prom = Prometheus::start(
        |_| {
            format!(
                "alerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['127.0.0.1:{}']}}]\n      api_version: v2\n",
                am.port
            )
        },
        &["--web.enable-remote-write-receiver"],
    );
    let now = now_ms();
    let mut series = Vec::new();
    for (name, n) in [("a_total", 3), ("b", 2), ("c_info", 1)] {
        for i in 0..n {
            series.push((
                vec![
                    ("__name__".to_string(), name.to_string()),
                    ("instance".to_string(), format!("host-{i}")),
                    ("job".to_string(), "j".to_string()),
                ],
                vec![(now - 1000, 1.0)],
            ));
        }
    }
    for body in crate::answers::remote_write_bodies(&series, 60_000) {
        write_to(&prom.url("/api/v1/write"), body.clone());
        write_to(&cl.url("/api/v1/write"), body);
    }

    // buildinfo: exactly Prometheus's keys, closedloop's version.
    let (p, c) = (
        api_get(&prom.url("/api/v1/status/buildinfo")),
        cl.api("/api/v1/status/buildinfo"),
    );
    assert_eq!(keys(&p), keys(&c), "{p} vs {c}");
    assert_eq!(c["version"], env!("CARGO_PKG_VERSION"));
    // runtimeinfo: every key 2.42 reports.
    let (p, c) = (
        api_get(&prom.url("/api/v1/status/runtimeinfo")),
        cl.api("/api/v1/status/runtimeinfo"),
    );
    assert!(keys(&p).is_subset(&keys(&c)), "{p} vs {c}");
    assert_eq!(c["reloadConfigSuccess"], true);
    assert_eq!(c["storageRetention"], "6h");
    // config: the YAML text; flags: a map of strings.
    let c = cl.api("/api/v1/status/config");
    assert!(c["yaml"].as_str().unwrap().contains("alertmanagers"), "{c}");
    let c = cl.api("/api/v1/status/flags");
    assert!(
        c.as_object().unwrap().values().all(|v| v.is_string()),
        "{c}"
    );
    assert_eq!(c["listen"], cl.addr.as_str());
    // tsdb: the same head cardinality for the same series.
    let (p, c) = (
        api_get(&prom.url("/api/v1/status/tsdb")),
        cl.api("/api/v1/status/tsdb"),
    );
    assert_eq!(keys(&p), keys(&c), "{p} vs {c}");
    assert_eq!(keys(&p["headStats"]), keys(&c["headStats"]));
    // Prometheus orders equal counts as its heap leaves them (by chance);
    // closedloop by name: compare the lists sorted.
    let sorted = |v: &serde_json::Value| {
        let mut items: Vec<(i64, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (-i["value"].as_i64().unwrap(), i["name"].to_string()))
            .collect();
        items.sort();
        items
    };
    for k in [
        "seriesCountByMetricName",
        "labelValueCountByLabelName",
        "memoryInBytesByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        assert_eq!(sorted(&p[k]), sorted(&c[k]), "{k}");
    }
    assert_eq!(p["headStats"]["numSeries"], c["headStats"]["numSeries"]);
    for k in ["numLabelPairs", "chunkCount", "minTime", "maxTime"] {
        assert_eq!(p["headStats"][k], c["headStats"][k], "{k}: {p} vs {c}");
    }
    let e = http()
        .get(cl.url("/api/v1/status/tsdb?limit=0"))
        .send()
        .unwrap();
    assert_eq!(e.status(), 400);
    // targets, their metadata, scrape pools: neither scrapes anything; no WAL
    // to replay in either (Prometheus's was replayed at start).
    for path in [
        "/api/v1/targets",
        "/api/v1/targets/metadata",
        "/api/v1/scrape_pools",
        "/api/v1/status/walreplay",
    ] {
        assert_eq!(api_get(&prom.url(path)), cl.api(path), "{path}");
    }
    // Bad parameters: the same status, error type and message.
    for path in [
        "/api/v1/query",
        "/api/v1/query?query=up&time=abc",
        "/api/v1/query?query=%20",
        "/api/v1/query_range?query=%20&start=0&end=10&step=1",
        "/api/v1/query_range?query=up",
        "/api/v1/query_range?query=up&start=0&end=x",
        "/api/v1/query_range?query=up&start=0&end=10",
        "/api/v1/query_range?start=0&end=10&step=1",
        "/api/v1/query_range?query=up&start=0&end=100000&step=1",
        "/api/v1/series",
        "/api/v1/series?match[]=up&start=soon",
        "/api/v1/labels?end=soon",
        "/api/v1/query_exemplars?query=up&start=10&end=5",
    ] {
        let answer = |url: String| {
            let r = http().get(url).send().unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().unwrap())
        };
        assert_eq!(answer(prom.url(path)), answer(cl.url(path)), "{path}");
    }
    // An unknown path: Go's plain-text 404 from both.
    for base in [prom.url(""), cl.url("")] {
        let r = http()
            .get(format!("{base}/api/v1/no_such_thing"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.text().unwrap(), "404 page not found\n");
    }
    // alertmanagers: the same endpoint listed; closedloop adds its health.
    wait_until(
        "Prometheus to discover the Alertmanager",
        Duration::from_secs(20),
        || api_get(&prom.url("/api/v1/alertmanagers"))["activeAlertmanagers"][0]["url"].is_string(),
    );
    let p = api_get(&prom.url("/api/v1/alertmanagers"));
    let c = cl.api("/api/v1/alertmanagers");
    assert_eq!(
        p["activeAlertmanagers"][0]["url"], c["activeAlertmanagers"][0]["url"],
        "{p} vs {c}"
    );
    assert_eq!(c["activeAlertmanagers"][0]["health"], "unknown");
    assert_eq!(c["droppedAlertmanagers"], serde_json::json!([]));
}

/// `format_query` pretty-prints as Prometheus 2.42 does (`parser.Prettify`), and
/// both refuse a query that does not parse with `bad_data`.
#[test]
fn format_query_prints_as_prometheus() {
    let cl = Closedloop::start("");
    let prom = Prometheus::start(|_| String::new(), &[]);
    for q in [
        "up",
        "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / ignoring (code) group_left sum by (job) (rate(http_requests_total[5m]))",
        "histogram_quantile(0.99, sum without (instance, pod) (rate(apiserver_request_duration_seconds_bucket{job=\"apiserver\",verb!~\"LIST|WATCH\"}[5m]))) > 1",
        "max_over_time(deriv(rate(distance_covered_total[5s])[30s:5s])[10m:])",
        "-a offset 5m + b @ 100 unless on (x) c",
        "topk(5, count by (__name__) ({__name__=~\".+\"}))",
    ] {
        let get = |base: String| {
            http()
                .post(format!("{base}/api/v1/format_query"))
                .form(&[("query", q)])
                .send()
                .unwrap()
                .json::<serde_json::Value>()
                .unwrap()
        };
        let (p, c) = (get(prom.url("")), get(cl.url("")));
        assert_eq!(p["data"], c["data"], "{q}");
    }
    let bad = http()
        .get(cl.url("/api/v1/format_query?query=sum("))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().unwrap();
    assert_eq!(body["errorType"], "bad_data");
    // parse_query (newer Prometheus): the syntax tree.
    let tree = cl.api("/api/v1/parse_query?query=rate%28up%5B5m%5D%29");
    assert_eq!(tree["type"], "call");
    assert_eq!(tree["args"][0]["type"], "matrixSelector");
}

/// promtool's `duplicate-rules` lint (`checkDuplicates`): rules with the same
/// name and labels are duplicates whatever their expressions; findings go under
/// "FAILED:" and only `--lint-fatal` turns them into exit code 3.
#[test]
fn check_rules_lint_matches_promtool() {
    let promtool = require_binary("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let dup = dir.path().join("dup.yml");
    std::fs::write(
        &dup,
        "groups:\n  - name: a\n    rules:\n      - record: job:x:sum\n        expr: sum by (job) (x)\n      - alert: Down\n        expr: up == 0\n        labels: {severity: page}\n  - name: b\n    rules:\n      - record: job:x:sum\n        expr: sum by (job) (x offset 1m)\n      - alert: Down\n        expr: up < 1\n        labels: {severity: page}\n      - alert: Down\n        expr: up < 1\n        labels: {severity: ticket}\n",
    )
    .unwrap();
    let material = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/compat/rules/kube-prometheus/kubernetesControlPlane.yml"
    );
    for file in [dup.to_str().unwrap(), material] {
        for flags in [&[][..], &["--lint-fatal"][..], &["--lint=none"][..]] {
            let run = |bin: &std::path::Path, pre: &[&str]| {
                let out = std::process::Command::new(bin)
                    .args(pre)
                    .args(["check", "rules"])
                    .args(flags)
                    .arg(file)
                    .output()
                    .unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            };
            let theirs = run(&promtool, &[]);
            let ours = run(std::path::Path::new(env!("CARGO_BIN_EXE_closedloop")), &[]);
            assert_eq!(theirs, ours, "{file} {flags:?}");
        }
    }
}

/// An alert's default `generatorURL` (`<external_url>/graph?g0.expr=...`) opens a
/// page closedloop serves, showing the expression and its current value.
#[test]
fn generator_url_points_at_a_page_that_exists() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Always\n        expr: vector(42) > 1\n",
    )
    .unwrap();
    let cl = Closedloop::start_in(
        dir,
        &format!(
            "rule_files: ['rules.yml']\nglobal: {{rule_query_offset: 0s}}\nalerting: {{alertmanagers: [{{url: '{}'}}]}}\n",
            am.url("")
        ),
    );
    let mut url = String::new();
    wait_until("the alert in Alertmanager", Duration::from_secs(30), || {
        if let Some(a) = am
            .alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "Always")
        {
            url = a["generatorURL"].as_str().unwrap_or_default().to_owned();
        }
        !url.is_empty()
    });
    // The default external URL is the listen address itself.
    let path = url
        .split_once("/graph")
        .map(|(_, p)| format!("/graph{p}"))
        .unwrap();
    let page = http().get(cl.url(&path)).send().unwrap();
    assert_eq!(page.status(), 200, "{url}");
    let html = page.text().unwrap();
    assert!(html.contains("vector(42) &gt; 1"), "{html}");
    assert!(html.contains("<td>42</td>"), "{html}");
}

/// Prometheus 3 accepts UTF-8 metric and label names (OpenTelemetry's
/// `http.server.request.duration`, `service.name`) on ingest and selects them with
/// the quoted syntax, in queries and rule files alike.
#[test]
fn utf8_names_are_ingested_queried_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: otel\n    interval: 1s\n    rules:\n      - record: 'service:http.server.request.duration:sum'\n        expr: 'sum by (\"service.name\") ({\"http.server.request.duration\"})'\n        labels: {\"source.kind\": otel}\n",
    )
    .unwrap();
    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\nglobal: {rule_query_offset: 0s}\n",
    );
    let now = now_ms();
    let body = v1_body(&[
        (
            &[
                ("__name__", "http.server.request.duration"),
                ("service.name", "checkout"),
                ("http.route", "/pay"),
            ],
            &[(now - 500, 2.0)],
        ),
        (
            &[
                ("__name__", "http.server.request.duration"),
                ("service.name", "checkout"),
                ("http.route", "/cart"),
            ],
            &[(now - 500, 3.0)],
        ),
    ]);
    let (status, text) = post_write(&cl, body, "application/x-protobuf");
    assert_eq!(status, 204, "{text}");
    let q = |query: &str| {
        let url = format!(
            "/api/v1/query?query={}",
            form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        cl.api(&url)
    };
    let r = q(r#"{"http.server.request.duration", "http.route"="/pay"}"#);
    assert_eq!(r["result"][0]["metric"]["service.name"], "checkout", "{r}");
    assert_eq!(r["result"][0]["value"][1], "2");
    let r = q(r#"sum by ("service.name") ({"http.server.request.duration"})"#);
    assert_eq!(r["result"][0]["metric"]["service.name"], "checkout", "{r}");
    assert_eq!(r["result"][0]["value"][1], "5");
    let mut got = serde_json::Value::Null;
    wait_until("the recorded UTF-8 series", Duration::from_secs(20), || {
        got = q(r#"{"service:http.server.request.duration:sum"}"#);
        got["result"][0]["value"][1] == "5"
    });
    assert_eq!(got["result"][0]["metric"]["source.kind"], "otel", "{got}");
    let labels = cl.api("/api/v1/labels");
    assert!(
        labels
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "service.name"),
        "{labels}"
    );
}

/// Prometheus scrapes itself and remote-writes to closedloop with metadata on
/// (`metadata_config.send`): closedloop's `/api/v1/metadata` then lists the same
/// type, help and unit as Prometheus's own, and honours `metric`, `limit` and
/// `limit_per_metric`.
#[test]
fn metadata_from_remote_write_matches_prometheus() {
    let cl = Closedloop::start("");
    let write_url = cl.url("/api/v1/write");
    let prom = Prometheus::start(
        |port| {
            format!(
                "global: {{scrape_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
                 remote_write:\n  - url: {write_url}\n    queue_config: {{batch_send_deadline: 500ms}}\n    metadata_config: {{send: true, send_interval: 1s}}\n"
            )
        },
        &[],
    );
    let metric = "prometheus_http_requests_total";
    let mut theirs = serde_json::Value::Null;
    let mut ours = serde_json::Value::Null;
    wait_until(
        "the same metadata on both sides",
        Duration::from_secs(40),
        || {
            theirs = api_get(&prom.url(&format!("/api/v1/metadata?metric={metric}")));
            ours = cl.api(&format!("/api/v1/metadata?metric={metric}"));
            !theirs[metric].is_null() && theirs == ours
        },
    );
    assert_eq!(ours[metric][0]["type"], "counter", "{ours}");
    // Many names arrived; `limit` and `limit_per_metric` cut the answer.
    let all = cl.api("/api/v1/metadata");
    assert!(all.as_object().unwrap().len() > 20, "{all}");
    assert_eq!(
        cl.api("/api/v1/metadata?limit=2")
            .as_object()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(cl.api("/api/v1/metadata?limit=0"), serde_json::json!({}));
    let one = cl.api("/api/v1/metadata?limit_per_metric=1");
    assert!(one
        .as_object()
        .unwrap()
        .values()
        .all(|v| v.as_array().unwrap().len() == 1));
    let bad = http()
        .get(cl.url("/api/v1/metadata?limit=x"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(cl.metric("closedloop_metadata_metrics", "") > 20.0);
}

/// The same exemplars remote-written to Prometheus (exemplar storage on) and to
/// closedloop: `/api/v1/query_exemplars` answers the same for the same queries,
/// and the v2 response header counts the stored exemplars.
#[test]
fn exemplars_from_remote_write_match_prometheus() {
    let cl = Closedloop::start("");
    let prom = Prometheus::start(
        |_| String::new(),
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
        ],
    );
    use bytes::Bytes;
    use closedloop::ingest::proto::v1;
    use prost::Message;
    let now = now_ms() / 1000 * 1000;
    let label = |n: &str, v: &str| v1::Label {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    };
    let series = |le: &str, job: &str, traces: &[(&str, i64, f64)]| v1::TimeSeries {
        labels: vec![
            label("__name__", "request_seconds_bucket"),
            label("job", job),
            label("le", le),
        ],
        samples: vec![v1::Sample {
            value: 10.0,
            timestamp: now - 1000,
        }],
        exemplars: traces
            .iter()
            .map(|(trace, dt, v)| v1::Exemplar {
                labels: vec![label("trace_id", trace)],
                value: *v,
                timestamp: now - 60_000 + dt,
            })
            .collect(),
        histograms: vec![],
    };
    let req = v1::WriteRequest {
        timeseries: vec![
            series("0.5", "api", &[("a1", 0, 0.31), ("a2", 1500, 0.42)]),
            series("1", "api", &[("a3", 2250, 0.9)]),
            series("0.5", "db", &[("d1", 10_000, 0.25), ("d1", 10_000, 0.25)]),
        ],
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    crate::answers::write_to(&prom.url("/api/v1/write"), body.clone());
    let resp = http()
        .post(cl.url("/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 204);
    // Four stored; the repeated d1 is a duplicate.
    assert_eq!(
        resp.headers()["x-prometheus-remote-write-exemplars-written"],
        "4"
    );
    for (q, start, end) in [
        ("request_seconds_bucket", now - 120_000, now),
        (
            "sum(rate(request_seconds_bucket{job=\"api\"}[5m]))",
            now - 120_000,
            now,
        ),
        (
            "request_seconds_bucket{le=\"0.5\"}",
            now - 59_000,
            now - 50_000,
        ),
        ("nothing_here", now - 120_000, now),
    ] {
        let params = [
            ("query", q.to_owned()),
            ("start", format!("{}", start as f64 / 1000.0)),
            ("end", format!("{}", end as f64 / 1000.0)),
        ];
        let get = |base: String| -> serde_json::Value {
            http()
                .post(format!("{base}/api/v1/query_exemplars"))
                .form(&params)
                .send()
                .unwrap()
                .json()
                .unwrap()
        };
        let (p, c) = (get(prom.url("")), get(cl.url("")));
        assert_eq!(p, c, "{q}");
    }
    assert_eq!(
        cl.metric("closedloop_remote_write_exemplars_written_total", ""),
        4.0
    );
    assert!(cl.metric("closedloop_exemplar_store_bytes", "") > 0.0);
}

/// Responses are gzip- or deflate-compressed when the client asks, as
/// Prometheus's compression handler does, and CORS follows `--web.cors.origin`
/// (default `.*`: `*`; another regex: the matching origin or no header).
#[test]
fn compression_and_cors_as_prometheus() {
    let cl = Closedloop::start("");
    let strict = Closedloop::start("web: {cors_origin: 'https://grafana\\.example'}\n");
    let prom = Prometheus::start(|_| String::new(), &["--web.enable-remote-write-receiver"]);
    let series: Vec<_> = (0..200)
        .map(|i| {
            (
                vec![
                    ("__name__".to_string(), "m".to_string()),
                    ("instance".to_string(), format!("host-{i}.example.com:9100")),
                ],
                vec![(now_ms() - 1000, 1.0)],
            )
        })
        .collect();
    for body in crate::answers::remote_write_bodies(&series, 60_000) {
        write_to(&cl.url("/api/v1/write"), body.clone());
        write_to(&prom.url("/api/v1/write"), body);
    }
    // No automatic decompression: look at the bytes on the wire.
    let raw = reqwest::blocking::Client::builder()
        .no_gzip()
        .no_deflate()
        .build()
        .unwrap();
    for encoding in ["gzip", "deflate"] {
        let get = |base: String| {
            raw.get(format!("{base}/api/v1/series?match[]=m"))
                .header("Accept-Encoding", encoding)
                .send()
                .unwrap()
        };
        let (p, c) = (get(prom.url("")), get(cl.url("")));
        assert_eq!(
            p.headers()["content-encoding"],
            c.headers()["content-encoding"],
            "{encoding}"
        );
        // The same listing, about the same size on the wire (it was 22 times
        // Prometheus's before compression).
        let theirs = p.bytes().unwrap().len();
        let plain = raw
            .get(cl.url("/api/v1/series?match[]=m"))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        let packed = c.bytes().unwrap();
        assert!(
            packed.len() * 5 < plain.len(),
            "{encoding}: {} vs {}",
            packed.len(),
            plain.len()
        );
        eprintln!(
            "compat_api: /api/v1/series of 200 series, {encoding}: {} bytes ({} plain), Prometheus {theirs}",
            packed.len(),
            plain.len()
        );
        assert!(
            packed.len() < theirs * 3 / 2,
            "{encoding}: {} bytes vs Prometheus's {theirs}",
            packed.len()
        );
    }
    let plain = raw.get(cl.url("/api/v1/labels")).send().unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    // CORS.
    let origin = |base: String, o: &str| {
        raw.get(format!("{base}/api/v1/labels"))
            .header("Origin", o)
            .send()
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        origin(prom.url(""), "https://a.example"),
        origin(cl.url(""), "https://a.example")
    );
    assert_eq!(
        origin(cl.url(""), "https://a.example").as_deref(),
        Some("*")
    );
    assert_eq!(
        origin(strict.url(""), "https://grafana.example").as_deref(),
        Some("https://grafana.example")
    );
    assert_eq!(origin(strict.url(""), "https://evil.example"), None);
    // Preflight: the same methods and headers allowed as Prometheus's (its
    // status is 204, closedloop's 200: browsers accept either). Under a read
    // guard it needs no credentials (browsers send none with it).
    let guarded = Closedloop::start_in(
        {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("read"), "r3ader").unwrap();
            dir
        },
        "auth:\n  read: {bearer_token_file: read}\n",
    );
    let preflight = |base: String| {
        let r = raw
            .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/query"))
            .header("Origin", "https://a.example")
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{base}: {}", r.status());
        let list = |name: &str| -> BTreeSet<String> {
            r.headers()[name]
                .to_str()
                .unwrap()
                .split(',')
                .map(|v| v.trim().to_ascii_lowercase())
                .collect()
        };
        (
            list("access-control-allow-methods"),
            list("access-control-allow-headers"),
            r.headers()["access-control-allow-origin"].clone(),
        )
    };
    let theirs = preflight(prom.url(""));
    assert_eq!(preflight(cl.url("")), theirs);
    assert_eq!(preflight(guarded.url("")), theirs);
    let unauthenticated = raw
        .get(guarded.url("/api/v1/labels"))
        .header("Origin", "https://a.example")
        .send()
        .unwrap();
    // The read guard still holds for the request itself.
    assert_eq!(unauthenticated.status(), 401);
    let e = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["check", "config"])
        .arg({
            let p = cl.dir.path().join("bad.yml");
            std::fs::write(&p, "web: {cors_origin: '('}\n").unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("web.cors_origin"));
}
