//! Steady-state memory side by side: closedloop vs Prometheus 2.42 vs VictoriaMetrics
//! 1.79 holding the same full retention window.
//!
//! Pre-encodes a full window (default 10,000 series × 1,440 samples at 15 s = 6 h,
//! ending now) as remote-write 1.0 bodies, one sample per series per body and 2,000
//! series per body, oldest first, as Prometheus sends at steady state. Then, for each
//! server in turn (the order rotating from one repetition to the next): start it on a
//! loopback port, post every body over 4 connections, wait `--settle` seconds (so
//! background work settles: Prometheus compacts its head into a block once it spans
//! 3 h), and read its resident memory (VmRSS, /proc/PID/status) and peak (VmHWM).
//! Bytes per sample = RSS / samples sent. closedloop also reports its own estimate,
//! `closedloop_store_bytes`.
//!
//! Series shapes (`--values`): `k8s` (default) is the ingest benchmark's (8 labels,
//! value `31 i + round`); `mixed` is the query benchmark's realistic shapes
//! (counters with fractional increments, histogram buckets, a noisy gauge, an info
//! metric).
//!
//! closedloop runs with `storage.retention` = `--closedloop-retention` (default
//! 6h30m): with the default 6 h, the oldest samples would be refused as too old
//! while the servers before it take their turn. It holds the same samples either
//! way (retention only drops samples older than the newest minus the retention).
//!
//! Run: `cargo bench --bench memory_compare -- [--series N] [--samples S]
//!       [--values k8s|mixed] [--reps R] [--settle SECONDS] [--connections C]
//!       [--closedloop-retention D] [--only closedloop,prometheus,victoriametrics]`
//! Bounded: each request has a 60 s timeout, each server is killed after its turn,
//! and the run stops after R repetitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use closedloop::ingest::proto::v1;
use peers::series::{encode, generate, k8s_payloads, Walk, INTERVAL_MS};
use peers::{cpu_seconds, median, memory_kib, start_server};

mod peers;

/// Most series per body (Prometheus's default `max_samples_per_send`).
const MAX_PER_REQUEST: usize = 2_000;

struct Args {
    series: usize,
    samples: usize,
    values: String,
    reps: usize,
    settle: u64,
    connections: usize,
    closedloop_retention: String,
}

fn parse_args() -> Args {
    Args {
        series: peers::flag("--series", 10_000),
        samples: peers::flag("--samples", 1_440),
        values: peers::flag("--values", "k8s".to_owned()),
        reps: peers::flag("--reps", 3),
        settle: peers::flag("--settle", 90),
        connections: peers::flag("--connections", 4),
        closedloop_retention: peers::flag("--closedloop-retention", "6h30m".to_owned()),
    }
}

/// Series per body: at most [`MAX_PER_REQUEST`], with a multiple of the connections
/// bodies per round, so every connection carries the same share and they advance
/// through time together (a lagging one would send samples Prometheus has already
/// compacted past).
fn per_request(series: usize, connections: usize) -> usize {
    let c = connections.max(1);
    let bodies = series.div_ceil(MAX_PER_REQUEST * c) * c;
    series.div_ceil(bodies)
}

/// The bodies and the number of samples they carry; the last sample is at `end`.
fn payloads(args: &Args, end: i64) -> (Vec<Vec<u8>>, usize) {
    let t0 = end - (args.samples as i64 - 1) * INTERVAL_MS;
    match args.values.as_str() {
        "k8s" => (
            k8s_payloads(
                args.series,
                args.samples,
                t0,
                per_request(args.series, args.connections),
            ),
            args.series * args.samples,
        ),
        "mixed" => {
            let series = generate(args.series);
            let per = per_request(series.len(), args.connections);
            let mut walk = Walk::new(&series);
            let mut values = Vec::new();
            let mut out = Vec::new();
            for k in 0..args.samples as i64 {
                walk.step(&series, k, &mut values);
                for first in (0..series.len()).step_by(per) {
                    let last = (first + per).min(series.len());
                    out.push(encode(
                        (first..last)
                            .map(|s| v1::TimeSeries {
                                labels: series[s].labels.clone(),
                                samples: vec![v1::Sample {
                                    value: values[s],
                                    timestamp: t0 + k * INTERVAL_MS + series[s].phase - INTERVAL_MS,
                                }],
                                ..Default::default()
                            })
                            .collect(),
                    ));
                }
            }
            (out, series.len() * args.samples)
        }
        other => panic!("--values must be k8s or mixed, not {other}"),
    }
}

struct Turn {
    name: &'static str,
    rss_mib: f64,
    /// The anonymous part of the RSS (heap, stacks), the rest being mapped files
    /// (the binary, shared libraries, and for the peers their mmapped data files).
    anon_mib: f64,
    hwm_mib: f64,
    load_seconds: f64,
    samples_per_cpu_second: f64,
    failed: usize,
    /// closedloop only: `closedloop_store_bytes` and `closedloop_store_samples`.
    store_mib: Option<f64>,
    store_samples: Option<f64>,
}

fn turn(name: &'static str, args: &Args, bodies: &Arc<Vec<Vec<u8>>>, samples: usize) -> Turn {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "storage: {{retention: {}, max_series: {}}}\n",
            args.closedloop_retention,
            samples.max(1_000_000)
        ),
    )
    .unwrap();
    let config_path = config.path().display().to_string();
    let server = start_server(name, &["--config", &config_path], &[]);
    let pid = server.pid();
    let cpu0 = cpu_seconds(pid);
    eprintln!("{name}: posting {} bodies ...", bodies.len());
    let per_round = bodies.len() / args.samples.max(1);
    let posted = peers::post_all(&server.write_url(), bodies, args.connections, per_round);
    let cpu = cpu_seconds(pid) - cpu0;
    if let Some(f) = &posted.first_failure {
        eprintln!("{name}: {} failed requests; first: {f}", posted.failed);
    }
    eprintln!(
        "{name}: loaded in {:.1} s; settling {} s ...",
        posted.wall, args.settle
    );
    let settle_end = Instant::now() + Duration::from_secs(args.settle);
    while Instant::now() < settle_end {
        std::thread::sleep(Duration::from_secs(5));
        eprintln!(
            "{name}:   RSS {:.1} MiB",
            memory_kib(pid, "VmRSS:") as f64 / 1024.0
        );
    }
    let (store_mib, store_samples) = if name == "closedloop" {
        (
            Some(peers::scrape_metric(&server.base, "closedloop_store_bytes") / (1 << 20) as f64),
            Some(peers::scrape_metric(
                &server.base,
                "closedloop_store_samples",
            )),
        )
    } else {
        (None, None)
    };
    Turn {
        name,
        rss_mib: memory_kib(pid, "VmRSS:") as f64 / 1024.0,
        anon_mib: memory_kib(pid, "RssAnon:") as f64 / 1024.0,
        hwm_mib: memory_kib(pid, "VmHWM:") as f64 / 1024.0,
        load_seconds: posted.wall,
        samples_per_cpu_second: samples as f64 / cpu.max(0.01),
        failed: posted.failed,
        store_mib,
        store_samples,
    }
}

fn main() {
    let args = parse_args();
    let names = peers::only(&["closedloop", "prometheus", "victoriametrics"]);
    let mut turns: Vec<Turn> = Vec::new();
    let mut samples = 0;
    for rep in 0..args.reps {
        let t = Instant::now();
        // Fresh timestamps every repetition: the window ends now.
        let (bodies, n) = payloads(&args, peers::now_ms() - 30_000);
        samples = n;
        let bytes: usize = bodies.iter().map(Vec::len).sum();
        eprintln!(
            "repetition {}: {} bodies, {:.1} MiB, {} samples, encoded in {:.1} s",
            rep + 1,
            bodies.len(),
            bytes as f64 / (1 << 20) as f64,
            n,
            t.elapsed().as_secs_f64()
        );
        let bodies = Arc::new(bodies);
        let mut order = names.clone();
        order.rotate_left(rep % names.len().max(1));
        for name in order {
            let r = turn(name, &args, &bodies, n);
            println!(
                "rep {} {}: RSS {:.1} MiB ({:.2} B/sample; anonymous {:.1} MiB), peak {:.1} MiB, load {:.1} s, {:.0} samples/CPU-s, {} failed{}",
                rep + 1,
                r.name,
                r.rss_mib,
                r.rss_mib * (1 << 20) as f64 / n as f64,
                r.anon_mib,
                r.hwm_mib,
                r.load_seconds,
                r.samples_per_cpu_second,
                r.failed,
                match (r.store_mib, r.store_samples) {
                    (Some(b), Some(s)) => format!(", closedloop_store_bytes {b:.1} MiB, {s} samples held"),
                    _ => String::new(),
                }
            );
            turns.push(r);
        }
    }
    println!(
        "\n{} series x {} samples at 15 s ({} samples, values {}), {} repetitions, {} s settle; medians\n",
        samples / args.samples.max(1),
        args.samples,
        samples,
        args.values,
        args.reps,
        args.settle
    );
    println!("| server | RSS (MiB) | bytes per sample (RSS) | of which anonymous (MiB) | peak RSS (MiB) | RSS / Prometheus | load (s) | samples per CPU-second | failed requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let med = |name: &str, f: &dyn Fn(&Turn) -> f64| {
        median(
            &turns
                .iter()
                .filter(|t| t.name == name)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    let prom_rss = med("prometheus", &|t| t.rss_mib);
    for name in &names {
        let rss = med(name, &|t| t.rss_mib);
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} | {:.0} |",
            name,
            rss,
            rss * (1 << 20) as f64 / samples as f64,
            med(name, &|t| t.anon_mib),
            med(name, &|t| t.hwm_mib),
            rss / prom_rss,
            med(name, &|t| t.load_seconds),
            med(name, &|t| t.samples_per_cpu_second),
            med(name, &|t| t.failed as f64),
        );
    }
    if names.contains(&"closedloop") {
        let store = med("closedloop", &|t| t.store_mib.unwrap_or(f64::NAN));
        println!(
            "\nclosedloop_store_bytes: {store:.1} MiB ({:.2} B/sample)",
            store * (1 << 20) as f64 / samples as f64
        );
    }
}
