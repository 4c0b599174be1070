//! Side-by-side rule evaluation: one evaluation cycle of 500 recording + 500
//! alerting rules over 10k series — closedloop vs vmalert (with VictoriaMetrics as
//! its datasource) vs Prometheus, on the same data and the same rule file.
//!
//! Data: 10,000 counters `http_requests_total{job, instance, shard}` (500 shards of
//! 20 series), one sample every 15 s for 10 minutes ending now, remote-written to
//! each engine (VictoriaMetrics for vmalert). Rules (one group, `interval: 5s`):
//! `record: bench:shard<i>:rate5m` = `sum by (job) (rate(http_requests_total{shard="s<i>"}[5m]))`
//! and `alert: BenchHigh<i>` = `rate(http_requests_total{shard="s<i>"}[5m]) > 0.3`
//! (`for: 10m`, so nothing is sent).
//!
//! Time per cycle comes from each engine's own metrics, as the mean of the cycles
//! measured after the first one (warm-up): Prometheus
//! `prometheus_rule_group_duration_seconds_{sum,count}`, vmalert
//! `vmalert_iteration_duration_seconds_{sum,count}`, closedloop
//! `closedloop_rule_group_evaluation_seconds_total` / `_iterations_total`.
//!
//! Run: `cargo bench --bench rules_compare -- [--cycles N] [--only closedloop,vmalert,prometheus]`
//! Bounded: each engine is given at most 3 minutes; every process is killed when
//! its run ends. Loopback only.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use closedloop::ingest::proto::v1;
use prost::Message;

mod peers;
use peers::{free_port, now_ms, require, wait_ready, Proc};

const SERIES: usize = 10_000;
const SHARDS: usize = 500;
const STEP_MS: i64 = 15_000;
const POINTS: i64 = 41;
const PER_REQUEST: usize = 2_000;

fn rule_file() -> String {
    let mut s = String::from("groups:\n  - name: bench\n    interval: 5s\n    rules:\n");
    for i in 0..SHARDS {
        s.push_str(&format!(
            "      - record: bench:shard{i}:rate5m\n        expr: sum by (job) (rate(http_requests_total{{shard=\"s{i}\"}}[5m]))\n"
        ));
    }
    for i in 0..SHARDS {
        s.push_str(&format!(
            "      - alert: BenchHigh{i}\n        expr: rate(http_requests_total{{shard=\"s{i}\"}}[5m]) > 0.3\n        for: 10m\n        labels: {{severity: warning}}\n        annotations: {{summary: \"{{{{ $labels.instance }}}} at {{{{ $value }}}}\"}}\n"
        ));
    }
    s
}

/// Remote-write 1.0 payloads, oldest round first, ending at `end`.
fn payloads(end: i64) -> Vec<Vec<u8>> {
    let t0 = end - (POINTS - 1) * STEP_MS;
    let labels: Vec<Vec<v1::Label>> = (0..SERIES)
        .map(|i| {
            [
                ("__name__", "http_requests_total".to_string()),
                ("instance", format!("inst-{i}")),
                ("job", format!("job_{}", i % 10)),
                ("shard", format!("s{}", i % SHARDS)),
            ]
            .into_iter()
            .map(|(n, v)| v1::Label {
                name: Bytes::from(n),
                value: Bytes::from(v),
            })
            .collect()
        })
        .collect();
    let mut out = Vec::new();
    for round in 0..POINTS {
        let t = t0 + round * STEP_MS;
        for first in (0..SERIES).step_by(PER_REQUEST) {
            let req = v1::WriteRequest {
                timeseries: (first..(first + PER_REQUEST).min(SERIES))
                    .map(|i| v1::TimeSeries {
                        labels: labels[i].clone(),
                        samples: vec![v1::Sample {
                            value: (round as usize * (1 + i % 7)) as f64,
                            timestamp: t,
                        }],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            };
            out.push(
                snap::raw::Encoder::new()
                    .compress_vec(&req.encode_to_vec())
                    .unwrap(),
            );
        }
    }
    out
}

fn write_all(url: &str, bodies: &[Vec<u8>]) {
    let client = reqwest::blocking::Client::new();
    for b in bodies {
        let r = client
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(b.clone())
            .send()
            .expect("remote write");
        assert!(
            r.status().is_success(),
            "remote write to {url}: {}",
            r.status()
        );
    }
}

/// Sum of the samples of `name` (any labels) in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `/metrics` and returns the mean seconds per cycle over `cycles` cycles
/// after the first, plus each cycle's time.
fn measure(metrics_url: &str, sum: &str, count: &str, cycles: usize) -> (f64, Vec<f64>) {
    let client = reqwest::blocking::Client::new();
    let read = || -> (f64, f64) {
        let text = client
            .get(metrics_url)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        (metric(&text, sum), metric(&text, count))
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    // Skip the first cycle (warm-up).
    let (mut s0, mut c0) = read();
    while c0 < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no evaluation seen at {metrics_url}"
        );
        std::thread::sleep(Duration::from_millis(200));
        (s0, c0) = read();
    }
    let mut per_cycle = Vec::new();
    while per_cycle.len() < cycles && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let (s, c) = read();
        if c > c0 {
            let d = (s - s0) / (c - c0);
            for _ in 0..(c - c0) as usize {
                per_cycle.push(d);
            }
            (s0, c0) = (s, c);
        }
    }
    assert!(!per_cycle.is_empty(), "no cycles measured at {metrics_url}");
    let mean = per_cycle.iter().sum::<f64>() / per_cycle.len() as f64;
    (mean, per_cycle)
}

fn run_closedloop(dir: &Path, bodies: &[Vec<u8>], cycles: usize) -> (f64, Vec<f64>) {
    let port = free_port();
    std::fs::write(
        dir.join("closedloop.yml"),
        "rule_files: ['rules.yml']\nrules: {state_file: ''}\nglobal: {rule_query_offset: 0s}\n",
    )
    .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_closedloop"));
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
    ])
    .arg(dir.join("closedloop.yml"));
    let _p = Proc::spawn(c);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready"));
    write_all(&format!("{base}/api/v1/write"), bodies);
    measure(
        &format!("{base}/metrics"),
        "closedloop_rule_group_evaluation_seconds_total",
        "closedloop_rule_group_iterations_total",
        cycles,
    )
}

fn run_prometheus(dir: &Path, bodies: &[Vec<u8>], cycles: usize) -> (f64, Vec<f64>) {
    let port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global: {evaluation_interval: 5s}\nrule_files: ['rules.yml']\n",
    )
    .unwrap();
    let mut c = Command::new(require("/usr/bin/prometheus", "prometheus"));
    c.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("prom-data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .arg("--web.enable-remote-write-receiver");
    let _p = Proc::spawn(c);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready"));
    write_all(&format!("{base}/api/v1/write"), bodies);
    measure(
        &format!("{base}/metrics"),
        "prometheus_rule_group_duration_seconds_sum",
        "prometheus_rule_group_duration_seconds_count",
        cycles,
    )
}

fn run_vmalert(dir: &Path, bodies: &[Vec<u8>], cycles: usize) -> (f64, Vec<f64>) {
    let vm_port = free_port();
    let mut c = Command::new(require("/usr/bin/victoria-metrics", "victoria-metrics"));
    c.arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg(format!(
            "-storageDataPath={}",
            dir.join("vm-data").display()
        ))
        .arg("-retentionPeriod=1");
    let _vm = Proc::spawn(c);
    let vm = format!("http://127.0.0.1:{vm_port}");
    wait_ready(&format!("{vm}/health"));
    write_all(&format!("{vm}/api/v1/write"), bodies);
    // Make the samples searchable before the first evaluation.
    let _ = reqwest::blocking::get(format!("{vm}/internal/force_flush"));
    std::thread::sleep(Duration::from_secs(2));
    let port = free_port();
    let mut c = Command::new(require("/usr/bin/vmalert", "victoria-metrics"));
    c.arg(format!("-rule={}", dir.join("rules.yml").display()))
        .arg(format!("-datasource.url={vm}"))
        .arg(format!("-remoteWrite.url={vm}"))
        // Nothing fires (for: 10m); the notifier is never called.
        .arg(format!("-notifier.url=http://127.0.0.1:{}", free_port()))
        .arg("-evaluationInterval=5s")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"));
    let _p = Proc::spawn(c);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/healthy"));
    measure(
        &format!("{base}/metrics"),
        "vmalert_iteration_duration_seconds_sum",
        "vmalert_iteration_duration_seconds_count",
        cycles,
    )
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut cycles = 6usize;
    let mut only: Vec<String> = vec!["closedloop".into(), "vmalert".into(), "prometheus".into()];
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--cycles" => {
                cycles = argv.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(6);
                i += 2;
            }
            "--only" => {
                only = argv
                    .get(i + 1)
                    .map(|v| v.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                i += 2;
            }
            _ => i += 1, // cargo passes --bench
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), rule_file()).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "benchmark rule file is invalid");
    println!(
        "rules_compare: {SHARDS} recording + {SHARDS} alerting rules, {SERIES} series x {POINTS} samples, {cycles} cycles after warm-up"
    );
    let mut results = Vec::new();
    for name in &only {
        // Fresh data ending now for each engine, so every one evaluates the same
        // window relative to its evaluation time.
        let bodies = payloads(now_ms() - 5_000);
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(dir.path().join("rules.yml"), sub.join("rules.yml")).unwrap();
        let (mean, per) = match name.as_str() {
            "closedloop" => run_closedloop(&sub, &bodies, cycles),
            "prometheus" => run_prometheus(&sub, &bodies, cycles),
            "vmalert" => run_vmalert(&sub, &bodies, cycles),
            other => panic!("unknown engine {other}"),
        };
        let mut sorted = per.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{name:>11}: mean {:.1} ms/cycle, min {:.1} ms, max {:.1} ms over {} cycles",
            mean * 1e3,
            sorted[0] * 1e3,
            sorted[sorted.len() - 1] * 1e3,
            per.len()
        );
        results.push((name.clone(), mean));
    }
    println!("\n| engine | time per cycle (mean) |\n|---|---|");
    for (n, m) in &results {
        println!("| {n} | {:.1} ms |", m * 1e3);
    }
    if let Some((_, cl)) = results.iter().find(|(n, _)| n == "closedloop") {
        if let Some(best) = results
            .iter()
            .filter(|(n, _)| n != "closedloop")
            .map(|(_, m)| *m)
            .min_by(f64::total_cmp)
        {
            println!(
                "\nclosedloop / faster peer = {:.2} (target <= 0.5)",
                cl / best
            );
        }
    }
}
