//! Side-by-side remote-write ingest: closedloop vs Prometheus vs VictoriaMetrics.
//!
//! Pre-encodes identical remote-write 1.0 payloads (N series with 8 labels each,
//! 2,000 samples per request, one sample per series per request, as Prometheus sends),
//! then, for each server in turn on a loopback port, posts them all with C connections
//! and reports samples/s, samples per server CPU-second (from /proc/PID/stat), request
//! latency (p50, p99) and the server's resident memory (VmRSS and peak VmHWM from
//! /proc/PID/status).
//!
//! Run: `cargo bench --bench ingest_compare -- [--series N] [--rounds R]
//!       [--connections C] [--only closedloop,prometheus,victoriametrics]`
//! Set CLOSEDLOOP_BENCH_CONFIG to a YAML file to run closedloop with that config.
//! Bounded: it stops after R rounds; every server is killed when its run ends.

use std::sync::Arc;
use std::time::Duration;

use peers::{cpu_seconds, memory_kib, Server};

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

/// The payloads in send order, ending a minute ago.
fn payloads(args: &Args) -> Vec<Vec<u8>> {
    let t0 = peers::now_ms() - 60_000 - args.rounds as i64 * 15_000;
    peers::series::k8s_payloads(args.series, args.rounds, t0, PER_REQUEST)
}

struct Result {
    name: &'static str,
    samples: usize,
    failed: usize,
    wall: f64,
    cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: f64,
    hwm_mib: f64,
}

fn run(
    server: &Server,
    payloads: &Arc<Vec<Vec<u8>>>,
    connections: usize,
    rounds: usize,
    samples: usize,
) -> Result {
    let pid = server.pid();
    let cpu0 = cpu_seconds(pid);
    let per_round = payloads.len() / rounds.max(1);
    let posted = peers::post_all(&server.write_url(), payloads, connections, per_round);
    if let Some(f) = &posted.first_failure {
        eprintln!("{}: first failed request: {f}", server.name);
    }
    // Let background work the writes caused (flushes, compaction of the head) show
    // in CPU; closedloop's queued detector scoring is waited for (at most 10 min).
    std::thread::sleep(Duration::from_secs(2));
    if server.name == "closedloop" {
        let start = std::time::Instant::now();
        while peers::scrape_metric(&server.base, "closed_loop_anomaly_queue_samples") > 0.0
            && start.elapsed() < Duration::from_secs(600)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let lag_sum =
            peers::scrape_metric(&server.base, "closed_loop_anomaly_scoring_lag_seconds_sum");
        let lag_n = peers::scrape_metric(
            &server.base,
            "closed_loop_anomaly_scoring_lag_seconds_count",
        );
        eprintln!(
            "closedloop: scored {} samples, dropped {}, mean arrival-to-score lag {:.3} s",
            peers::scrape_metric(&server.base, "closed_loop_anomaly_samples_scored_total"),
            peers::scrape_metric(&server.base, "closed_loop_anomaly_samples_dropped_total"),
            lag_sum / lag_n.max(1.0)
        );
    }
    Result {
        name: server.name,
        samples,
        failed: posted.failed,
        wall: posted.wall,
        cpu: cpu_seconds(pid) - cpu0,
        p50_ms: peers::quantile(&posted.latencies, 0.5) * 1e3,
        p99_ms: peers::quantile(&posted.latencies, 0.99) * 1e3,
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
        let server = peers::start_server(name, &[], &[]);
        eprintln!("{name}: sending ...");
        let r = run(&server, &payloads, args.connections, args.rounds, samples);
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
    println!("| server | samples/s | samples per CPU-second | request p50 (ms) | request p99 (ms) | RSS after (MiB) | peak RSS (MiB) | failed requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            r.name,
            r.samples as f64 / r.wall,
            r.samples as f64 / r.cpu.max(0.01),
            r.p50_ms,
            r.p99_ms,
            r.rss_mib,
            r.hwm_mib,
            r.failed
        );
    }
}
