//! Memory under a burst of huge remote-write 2.0 requests (issue #14's reproducer):
//! one request that decodes to about 240 MiB, then two such requests at once (the
//! second gets 503 + Retry-After while the first holds the decode budget, and is
//! retried as a sender would). Reports the server's resident memory (VmRSS) before,
//! its peak (VmHWM) and RSS after each burst next to the store's own estimate
//! (`closedloop_store_bytes`), and the slowest `/-/ready` answer during the run.
//!
//! Run: `cargo bench --bench write_burst -- [--series N] [--samples S] [--repeated]`
//! (defaults 14,000 series x 1,000 distinct samples 15 s apart; `--repeated` sends
//! every series' samples at one timestamp and value, 9 bytes each on the wire and
//! highly compressible, the shape that costs a decoder most per byte: try
//! `--repeated --samples 2000`). Bounded: three requests, then it stops and kills
//! the server.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use closedloop::ingest::proto::v2;
use peers::{free_port, memory_kib, now_ms, wait_ready, Proc};
use prost::Message;

mod peers;

/// A v2 request of `series` series (names `burst_<tag>`), `samples` samples each,
/// 15 s apart and ending now (or all at one time and value when `repeated`):
/// returns (compressed, decoded size).
fn request(tag: &str, series: usize, samples: usize, repeated: bool) -> (Vec<u8>, usize) {
    let symbols: Vec<String> = ["", "__name__", &format!("burst_{tag}"), "instance"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..series).map(|i| format!("host-{i:05}:9100")))
        .collect();
    let now = now_ms();
    let t0 = now - samples as i64 * 15_000;
    let timeseries = (0..series)
        .map(|i| v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4 + i as u32],
            samples: (0..samples)
                .map(|j| match repeated {
                    false => v2::Sample {
                        value: (j % 100) as f64,
                        timestamp: t0 + j as i64 * 15_000,
                        start_timestamp: 0,
                    },
                    true => v2::Sample {
                        value: 0.0,
                        timestamp: now - 60_000,
                        start_timestamp: 0,
                    },
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let req = v2::Request {
        symbols: symbols.into_iter().map(Bytes::from).collect(),
        timeseries,
    };
    let raw = req.encode_to_vec();
    let compressed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    (compressed, raw.len())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Posts a v2 body, retrying on 503 after its Retry-After as Prometheus does;
/// returns the statuses seen.
fn send(url: &str, body: &[u8]) -> Vec<u16> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    loop {
        let resp = client
            .post(url)
            .header(
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            )
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "2.0.0")
            .body(body.to_vec())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        statuses.push(status);
        if status != 503 {
            return statuses;
        }
        let wait: u64 = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(1);
        std::thread::sleep(Duration::from_secs(wait));
    }
}

fn store_bytes(base: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("closedloop_store_bytes "))
        .and_then(|l| l.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let series: usize = peers::flag("--series", 14_000);
    let samples: usize = peers::flag("--samples", 1_000);
    let repeated = std::env::args().any(|a| a == "--repeated");
    let bodies: Vec<(Vec<u8>, usize)> = ["a", "b", "c"]
        .iter()
        .map(|t| request(t, series, samples, repeated))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("closedloop.yml");
    // Room for the compressed bodies; decoded bodies are capped at 256 MiB (default).
    std::fs::write(&config, "remote_write: {max_body_bytes: 134217728}\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_closedloop"));
    cmd.args(["serve", "--listen", &addr, "--config"])
        .arg(&config);
    let server = Proc::spawn(cmd);
    let base = format!("http://{addr}");
    wait_ready(&format!("{base}/-/ready"));
    let pid = server.pid();
    println!(
        "requests: {series} series x {samples} samples = {:.1} M samples each; {:.1} MB compressed, {:.1} MiB decoded",
        (series * samples) as f64 / 1e6,
        bodies[0].0.len() as f64 / 1e6,
        bodies[0].1 as f64 / (1 << 20) as f64
    );

    // Probe readiness throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let prober = {
        let (stop, slowest_us, url) = (stop.clone(), slowest_us.clone(), format!("{base}/-/ready"));
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = client
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                let us = t.elapsed().as_micros() as u64;
                slowest_us.fetch_max(if ok { us } else { u64::MAX }, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let write = format!("{base}/api/v1/write");
    let rss0 = memory_kib(pid, "VmRSS:");
    println!("RSS before: {:.0} MiB", mib(rss0));

    let t = Instant::now();
    let st = send(&write, &bodies[0].0);
    let took = t.elapsed();
    let hwm1 = memory_kib(pid, "VmHWM:");
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "one request: status {st:?} in {:.1}s; peak RSS {:.0} MiB; RSS after {:.0} MiB; store estimate {:.0} MiB",
        took.as_secs_f64(),
        mib(hwm1),
        mib(memory_kib(pid, "VmRSS:")),
        store_bytes(&base) / (1 << 20) as f64
    );

    let t = Instant::now();
    let two: Vec<_> = [1, 2]
        .into_iter()
        .map(|i| {
            let (url, body) = (write.clone(), bodies[i].0.clone());
            std::thread::spawn(move || send(&url, &body))
        })
        .collect();
    let statuses: Vec<Vec<u16>> = two.into_iter().map(|h| h.join().unwrap()).collect();
    let took = t.elapsed();
    let hwm2 = memory_kib(pid, "VmHWM:");
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "two at once: statuses {statuses:?} in {:.1}s; peak RSS {:.0} MiB; RSS after {:.0} MiB; store estimate {:.0} MiB",
        took.as_secs_f64(),
        mib(hwm2),
        mib(memory_kib(pid, "VmRSS:")),
        store_bytes(&base) / (1 << 20) as f64
    );
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    let slowest = slowest_us.load(Ordering::Relaxed);
    if slowest == u64::MAX {
        println!("slowest /-/ready: a probe failed");
    } else {
        println!("slowest /-/ready: {:.1} ms", slowest as f64 / 1000.0);
    }
}
