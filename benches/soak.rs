//! Soak: closedloop under a steady remote-write load, a mixed query load and a rule
//! set for a fixed time, to show that memory stays flat once the retention window is
//! full, that latencies hold, that nothing fails and that `/-/ready` always answers
//! quickly.
//!
//! The server (release build) keeps 3 minutes of history, so the window fills within
//! the first third of a 10-minute run. Load, all at once:
//! - remote write 1.0: `--series` series (8 labels each), one sample per series
//!   every `--interval` seconds, in requests of 2,000 samples, over 4 connections;
//! - queries, over 2 connections, round-robin: an instant aggregation with `rate`,
//!   a 2-minute range query at 15 s steps, a `topk`, `/api/v1/series` for one metric
//!   and `/api/v1/labels`;
//! - rules: 3 recording and 2 alerting rules every 5 s, plus a zscore detector on 3%
//!   of the series;
//! - a probe of `/-/ready` every 200 ms.
//!
//! Reports the server's RSS every 30 s, p50/p99/max latency per request kind,
//! errors by kind, and the slowest `/-/ready`.
//!
//! Run: `cargo bench --bench soak -- [--minutes M] [--series N] [--interval S]`
//! (defaults: 10 minutes, 20,000 series, 2 s). Bounded: it stops after M minutes and
//! kills the server.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use closedloop::ingest::proto::v1;
use peers::{free_port, memory_kib, now_ms, wait_ready, Proc};
use prost::Message;

mod peers;

const PER_REQUEST: usize = 2_000;

const RULES: &str = r#"groups:
  - name: soak
    interval: 5s
    detectors:
      - name: soak_zscore
        selector: 'metric_7{zone="zone-1", job="job_7"}'
        algorithm: zscore
        window: 2m
        threshold: 4
    rules:
      - record: job:metric:rate1m
        expr: sum by (job) (rate(metric_1[1m]))
      - record: zone:metric:avg
        expr: avg by (zone) (metric_2)
      - record: ns:metric:max
        expr: max by (namespace) (metric_3)
      - alert: SoakHigh
        expr: job:metric:rate1m > 1e12
        for: 30s
      - alert: SoakAbsent
        expr: absent(metric_4)
"#;

fn labels(i: usize) -> Vec<v1::Label> {
    [
        ("__name__".to_owned(), format!("metric_{}", i % 10)),
        ("cluster".to_owned(), "prod-eu-1".to_owned()),
        (
            "instance".to_owned(),
            format!("10.0.{}.{}:9100", i / 250 % 256, i % 250),
        ),
        ("job".to_owned(), format!("job_{}", i % 10)),
        ("namespace".to_owned(), format!("ns_{}", i % 20)),
        ("pod".to_owned(), format!("pod-{}", i / 10)),
        ("service".to_owned(), format!("svc_{}", i % 50)),
        ("zone".to_owned(), format!("zone-{}", i % 3)),
    ]
    .into_iter()
    .map(|(n, v)| v1::Label {
        name: Bytes::from(n),
        value: Bytes::from(v),
    })
    .collect()
}

/// Latencies (µs) and errors per request kind.
#[derive(Default)]
struct Stats {
    latencies: BTreeMap<&'static str, Vec<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn record(&mut self, kind: &'static str, took: Duration, error: Option<String>) {
        self.latencies
            .entry(kind)
            .or_default()
            .push(took.as_micros() as u64);
        if let Some(e) = error {
            *self.errors.entry(format!("{kind}: {e}")).or_default() += 1;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let minutes: u64 = peers::flag("--minutes", 10);
    let series: usize = peers::flag("--series", 20_000);
    let interval: u64 = peers::flag("--interval", 2);
    let run_for = Duration::from_secs(minutes * 60);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let config = dir.path().join("closedloop.yml");
    std::fs::write(
        &config,
        "storage: {retention: 3m}\nrule_files: [rules.yml]\nrules: {state_file: ''}\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_closedloop"));
    cmd.args(["serve", "--listen", &addr, "--config"])
        .arg(&config);
    let server = Proc::spawn(cmd);
    let base = format!("http://{addr}");
    wait_ready(&format!("{base}/-/ready"));
    let pid = server.pid();
    println!(
        "soak: {minutes} min, {series} series every {interval}s ({} samples/s), retention 3m",
        series as u64 / interval
    );

    let labels: Arc<Vec<Vec<v1::Label>>> = Arc::new((0..series).map(labels).collect());
    let stats = Arc::new(Mutex::new(Stats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut workers = Vec::new();

    // Writers: each owns a quarter of the series and sends its share every interval.
    const WRITERS: usize = 4;
    for w in 0..WRITERS {
        let (labels, stats, stop) = (labels.clone(), stats.clone(), stop.clone());
        let url = format!("{base}/api/v1/write");
        workers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mine: Vec<usize> = (w..labels.len()).step_by(WRITERS).collect();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = start + Duration::from_secs(round * interval);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let t = now_ms();
                for chunk in mine.chunks(PER_REQUEST) {
                    let req = v1::WriteRequest {
                        timeseries: chunk
                            .iter()
                            .map(|&i| v1::TimeSeries {
                                labels: labels[i].clone(),
                                samples: vec![v1::Sample {
                                    value: ((i as u64 * 31 + round * 7) % 1000) as f64,
                                    timestamp: t,
                                }],
                                ..Default::default()
                            })
                            .collect(),
                        metadata: vec![],
                    };
                    let body = snap::raw::Encoder::new()
                        .compress_vec(&req.encode_to_vec())
                        .unwrap();
                    let sent = Instant::now();
                    let r = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body)
                        .send();
                    let error = match r {
                        Ok(resp) if resp.status().as_u16() == 204 => None,
                        Ok(resp) => Some(format!("status {}", resp.status().as_u16())),
                        Err(e) => Some(e.to_string()),
                    };
                    stats.lock().unwrap().record("write", sent.elapsed(), error);
                }
                round += 1;
            }
        }));
    }

    // Queries, round-robin over the kinds, back to back on two connections.
    let queries: Arc<Vec<(&'static str, String)>> = Arc::new(vec![
        (
            "instant rate",
            "/api/v1/query?query=sum+by+(job)+(rate(metric_5%5B1m%5D))".into(),
        ),
        (
            "range 2m",
            "/api/v1/query_range?query=avg+by+(zone)+(metric_6)&start={s}&end={e}&step=15".into(),
        ),
        (
            "topk",
            "/api/v1/query?query=topk(5,+max+by+(pod)+(metric_8))".into(),
        ),
        (
            "series",
            "/api/v1/series?match%5B%5D=metric_9%7Bzone%3D%22zone-2%22%7D".into(),
        ),
        ("labels", "/api/v1/labels".into()),
    ]);
    for q in 0..2 {
        let (queries, stats, stop, base) =
            (queries.clone(), stats.clone(), stop.clone(), base.clone());
        workers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut i = q;
            while !stop.load(Ordering::Relaxed) {
                let (kind, path) = &queries[i % queries.len()];
                let now = now_ms() / 1000;
                let path = path
                    .replace("{s}", &(now - 120).to_string())
                    .replace("{e}", &now.to_string());
                let sent = Instant::now();
                let error = match client.get(format!("{base}{path}")).send() {
                    Ok(resp) if resp.status().is_success() => None,
                    Ok(resp) => Some(format!("status {}", resp.status().as_u16())),
                    Err(e) => Some(e.to_string()),
                };
                stats.lock().unwrap().record(kind, sent.elapsed(), error);
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }

    // Readiness probe.
    {
        let (stats, stop, base) = (stats.clone(), stop.clone(), base.clone());
        workers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let error = match client.get(format!("{base}/-/ready")).send() {
                    Ok(resp) if resp.status().is_success() => None,
                    Ok(resp) => Some(format!("status {}", resp.status().as_u16())),
                    Err(e) => Some(e.to_string()),
                };
                stats
                    .lock()
                    .unwrap()
                    .record("/-/ready", sent.elapsed(), error);
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }

    // RSS every 30 s.
    println!("{:>6} {:>9} {:>12}", "t (s)", "RSS MiB", "store MiB");
    let mut next = Duration::ZERO;
    let mut rss = Vec::new();
    while start.elapsed() < run_for {
        if start.elapsed() >= next {
            let kib = memory_kib(pid, "VmRSS:");
            let store = store_mib(&base);
            println!(
                "{:>6} {:>9.0} {:>12.1}",
                start.elapsed().as_secs(),
                kib as f64 / 1024.0,
                store
            );
            rss.push(kib);
            next += Duration::from_secs(30);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let stats = stats.lock().unwrap();
    println!(
        "\n{:<14} {:>8} {:>9} {:>9} {:>9}",
        "kind", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (kind, lat) in &stats.latencies {
        let mut sorted = lat.clone();
        sorted.sort_unstable();
        println!(
            "{:<14} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            kind,
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0)
        );
    }
    let errors: u64 = stats.errors.values().sum();
    println!("\nerrors: {errors}");
    for (e, n) in &stats.errors {
        println!("  {n} x {e}");
    }
    // Flat after warm-up: compare the second half of the run with the middle.
    let half = rss.len() / 2;
    if half > 0 {
        let (lo, hi) = rss[half..]
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "RSS over the second half: {:.0}..{:.0} MiB",
            lo as f64 / 1024.0,
            hi as f64 / 1024.0
        );
    }
}

/// `closedloop_store_bytes` in MiB.
fn store_mib(base: &str) -> f64 {
    reqwest::blocking::get(format!("{base}/metrics"))
        .and_then(|r| r.text())
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("closedloop_store_bytes "))
                .and_then(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / (1 << 20) as f64
}
