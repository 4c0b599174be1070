//! Side-by-side remote-write ingest: closedloop vs Prometheus vs VictoriaMetrics.
//!
//! Pre-encodes identical remote-write 1.0 payloads (N series with 8 labels each,
//! 2,000 samples per request, one sample per series per request, as Prometheus sends),
//! then, for each server in turn on a loopback port, posts them all with C connections
//! and reports samples/s, samples per server CPU-second (from /proc/PID/stat), and the
//! server's resident memory (VmRSS and peak VmHWM from /proc/PID/status).
//!
//! Run: `cargo bench --bench ingest_compare -- [--series N] [--rounds R]
//!       [--connections C] [--only closedloop,prometheus,victoriametrics]`
//! Set CLOSEDLOOP_BENCH_CONFIG to a YAML file to run closedloop with that config.
//! Bounded: it stops after R rounds; every server is killed when its run ends.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use closedloop::ingest::proto::v1;
use peers::{cpu_seconds, free_port, memory_kib, require};
use prost::Message;

mod peers;

const PER_REQUEST: usize = 2_000;

struct Args {
    series: usize,
    rounds: usize,
    connections: usize,
}

fn parse_args() -> Args {
    Args {
        series: peers::flag("--series", 100_000),
        rounds: peers::flag("--rounds", 20),
        connections: peers::flag("--connections", 4),
    }
}

fn label_pairs(i: usize) -> [(String, String); 8] {
    [
        ("__name__".into(), format!("metric_{}", i % 100)),
        ("cluster".into(), "prod-eu-1".into()),
        (
            "instance".into(),
            format!("10.0.{}.{}:9100", i / 250 % 256, i % 250),
        ),
        ("job".into(), format!("job_{}", i % 10)),
        ("namespace".into(), format!("ns_{}", i % 20)),
        ("pod".into(), format!("pod-{}", i / 100)),
        ("service".into(), format!("svc_{}", i % 50)),
        ("zone".into(), format!("zone-{}", i % 3)),
    ]
}

/// Snappy-compressed payloads in send order: round by round, each round covering
/// every series once, 15 s apart, ending a minute ago.
fn payloads(args: &Args) -> Vec<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - 60_000 - args.rounds as i64 * 15_000;
    let labels: Vec<Vec<v1::Label>> = (0..args.series)
        .map(|i| {
            label_pairs(i)
                .into_iter()
                .map(|(n, v)| v1::Label {
                    name: Bytes::from(n),
                    value: Bytes::from(v),
                })
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for round in 0..args.rounds {
        let t = t0 + round as i64 * 15_000;
        for first in (0..args.series).step_by(PER_REQUEST) {
            let req = v1::WriteRequest {
                timeseries: (first..(first + PER_REQUEST).min(args.series))
                    .map(|i| v1::TimeSeries {
                        labels: labels[i].clone(),
                        samples: vec![v1::Sample {
                            value: (i * 31 + round) as f64,
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

struct Server {
    name: &'static str,
    child: Child,
    write_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &'static str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (mut cmd, ready, write) = match name {
        "closedloop" => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_closedloop"));
            c.args(["serve", "--listen", &addr]);
            if let Ok(cfg) = std::env::var("CLOSEDLOOP_BENCH_CONFIG") {
                c.args(["--config", &cfg]);
            }
            (c, "/-/ready", "/api/v1/write")
        }
        "prometheus" => {
            let cfg = dir.path().join("prometheus.yml");
            std::fs::write(&cfg, "global: {scrape_interval: 1m}\n").unwrap();
            let mut c = Command::new(require("/usr/bin/prometheus", "prometheus"));
            c.arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-remote-write-receiver");
            (c, "/-/ready", "/api/v1/write")
        }
        "victoriametrics" => {
            let mut c = Command::new(require("/usr/bin/victoria-metrics", "victoria-metrics"));
            c.arg(format!("-httpListenAddr={addr}"))
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg("-retentionPeriod=1");
            (c, "/health", "/api/v1/write")
        }
        other => panic!("unknown server {other}"),
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::new();
    let start = Instant::now();
    while !client
        .get(format!("http://{addr}{ready}"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Server {
        name,
        child,
        write_url: format!("http://{addr}{write}"),
        _dir: dir,
    }
}

struct Result {
    name: &'static str,
    samples: usize,
    failed: usize,
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    hwm_mib: f64,
}

fn run(
    server: &Server,
    payloads: &Arc<Vec<Vec<u8>>>,
    connections: usize,
    samples: usize,
) -> Result {
    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (payloads, next, failed, url) = (
                payloads.clone(),
                next.clone(),
                failed.clone(),
                server.write_url.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = payloads.get(i) else { break };
                    let ok = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body.clone())
                        .send()
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    // Let background work the writes caused (flushes, compaction of the head) show in CPU.
    std::thread::sleep(Duration::from_secs(2));
    Result {
        name: server.name,
        samples,
        failed: failed.load(Ordering::Relaxed),
        wall,
        cpu: cpu_seconds(pid) - cpu0,
        rss_mib: memory_kib(pid, "VmRSS:") as f64 / 1024.0,
        hwm_mib: memory_kib(pid, "VmHWM:") as f64 / 1024.0,
    }
}

fn main() {
    let args = parse_args();
    let names = peers::only(&["closedloop", "prometheus", "victoriametrics"]);
    eprintln!(
        "encoding {} rounds x {} series ...",
        args.rounds, args.series
    );
    let payloads = Arc::new(payloads(&args));
    let samples = args.rounds * args.series;
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    eprintln!(
        "{} requests, {:.1} MiB compressed",
        payloads.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let mut results = Vec::new();
    for name in names {
        let server = start(name);
        eprintln!("{name}: sending ...");
        let r = run(&server, &payloads, args.connections, samples);
        eprintln!(
            "{name}: {:.1}s wall, {:.1} CPU-s, {} failed requests",
            r.wall, r.cpu, r.failed
        );
        results.push(r);
    }
    println!(
        "\n{} series x {} rounds = {} samples, {} per request, {} connections\n",
        args.series, args.rounds, samples, PER_REQUEST, args.connections
    );
    println!("| server | samples/s | samples per CPU-second | RSS after (MiB) | peak RSS (MiB) | failed requests |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.name,
            r.samples as f64 / r.wall,
            r.samples as f64 / r.cpu.max(0.01),
            r.rss_mib,
            r.hwm_mib,
            r.failed
        );
    }
}
