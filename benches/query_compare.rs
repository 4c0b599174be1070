//! Side-by-side query latency: closedloop vs Prometheus vs VictoriaMetrics on the same
//! data and the same PromQL.
//!
//! Generates N series of realistic shape (counters per method and code, CPU-seconds
//! counters, classic histogram buckets, a memory gauge, an info metric; 26 series per
//! instance, ten jobs) at a 15 s interval over the last 70 minutes (ending two minutes
//! ago), remote-writes them oldest first into each server in turn on a loopback port,
//! then runs the query set as instant queries (at the end) and as range queries
//! (the last hour at 15 s steps). All servers run at once; each query goes to every
//! server in turn (the order rotating), so the shared machine's noise falls on all
//! alike. Each round runs every query once per server; a round's total is the sum of
//! its latencies (HTTP round trip including the response body). It reports per query
//! and per server the median over the rounds, and the median round total.
//!
//! Answers are compared with Prometheus's (same series, values within 1e-6 relative).
//! A server whose answer differs is marked in the table; VictoriaMetrics's own
//! semantics (no extrapolation in `rate`, different window edges) make several of its
//! answers differ, and its totals count only the queries where it agrees.
//!
//! Run: `cargo bench --bench query_compare -- [--series N] [--rounds R]
//!       [--only closedloop,prometheus,victoriametrics]`
//! Bounded: R rounds, every request has a 120 s timeout, and every server is killed
//! when the run ends (or the benchmark panics).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use closedloop::ingest::proto::v1;

mod peers;
use peers::series::{generate, GenSeries, Walk, INTERVAL_MS, SERIES_PER_INSTANCE};
use peers::{median, start_server, Server};

/// 70 minutes: the range queries' first windows reach back before the hour.
const SAMPLES: i64 = 280;
/// Samples per series per request, and series per request.
const SLICE_SAMPLES: i64 = 20;
const SERIES_PER_REQUEST: usize = 2_000;

const QUERIES: &[&str] = &[
    "rate(http_requests_total[5m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum by (job, code) (rate(http_requests_total[5m]))",
    "topk(10, rate(http_requests_total[5m]))",
    "histogram_quantile(0.99, sum by (le, job) (rate(http_request_duration_seconds_bucket[5m])))",
    "sum by (job, instance) (rate(http_requests_total{code=\"500\"}[5m])) / on(job, instance) sum by (job, instance) (rate(http_requests_total[5m]))",
    "rate(http_requests_total[5m]) * on(job, instance) group_left(version) node_info",
    "sum without (cpu) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))",
    "increase(http_requests_total[1h])",
    "avg_over_time(node_memory_available_bytes[10m])",
    "max_over_time(node_memory_available_bytes[30m])",
    "quantile_over_time(0.9, node_memory_available_bytes[10m])",
    "deriv(node_memory_available_bytes[10m])",
    "node_memory_available_bytes / 1024 / 1024 > 4000",
    "count by (job) (node_info)",
    "avg by (job) (rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m]))",
];

struct Args {
    series: usize,
    rounds: usize,
}

fn parse_args() -> Args {
    Args {
        series: peers::flag("--series", 10_000),
        rounds: peers::flag("--rounds", 7),
    }
}

/// Snappy-compressed remote-write bodies, oldest slice first.
fn payloads(series: &[GenSeries], origin: i64) -> Vec<Vec<u8>> {
    let mut walk = Walk::new(series);
    let mut values = Vec::new();
    let mut out = Vec::new();
    let mut k0 = 0;
    while k0 < SAMPLES {
        let k1 = (k0 + SLICE_SAMPLES).min(SAMPLES);
        // Samples of this slice, per series.
        let mut slice: Vec<Vec<v1::Sample>> = vec![Vec::new(); series.len()];
        for k in k0..k1 {
            walk.step(series, k, &mut values);
            for (s, gs) in series.iter().enumerate() {
                slice[s].push(v1::Sample {
                    value: values[s],
                    timestamp: origin + k * INTERVAL_MS + gs.phase,
                });
            }
        }
        for first in (0..series.len()).step_by(SERIES_PER_REQUEST) {
            let last = (first + SERIES_PER_REQUEST).min(series.len());
            out.push(peers::series::encode(
                (first..last)
                    .map(|s| v1::TimeSeries {
                        labels: series[s].labels.clone(),
                        samples: std::mem::take(&mut slice[s]),
                        ..Default::default()
                    })
                    .collect(),
            ));
        }
        k0 = k1;
    }
    out
}

/// An answer reduced for comparison: label set (JSON) → points `(t_ms, v)`.
type Answer = BTreeMap<String, Vec<(i64, f64)>>;

fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    let point = |p: &serde_json::Value| -> (i64, f64) {
        let t = (p[0].as_f64().unwrap_or(f64::NAN) * 1000.0).round() as i64;
        let v = match p[1].as_str().unwrap_or("NaN") {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().unwrap_or(f64::NAN),
        };
        (t, v)
    };
    let mut out = Answer::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let points = match s.get("values") {
            Some(vals) => vals.as_array().unwrap().iter().map(point).collect(),
            None => vec![point(&s["value"])],
        };
        out.insert(s["metric"].to_string(), points);
    }
    Ok(out)
}

/// `None` when `b` agrees with the reference `a`; else a short reason.
fn disagreement(a: &Answer, b: &Answer) -> Option<String> {
    if a.len() != b.len() || a.keys().ne(b.keys()) {
        let only_a = a.keys().find(|k| !b.contains_key(*k));
        let only_b = b.keys().find(|k| !a.contains_key(*k));
        return Some(format!(
            "{} vs {} series; only in the reference: {only_a:?}; only here: {only_b:?}",
            a.len(),
            b.len()
        ));
    }
    for (l, pa) in a {
        let pb = &b[l];
        if pa.len() != pb.len() {
            return Some(format!("{} vs {} points in {l}", pa.len(), pb.len()));
        }
        for (x, y) in pa.iter().zip(pb) {
            let same = x.0 == y.0
                && ((x.1.is_nan() && y.1.is_nan())
                    || x.1 == y.1
                    || (x.1 - y.1).abs() <= 1e-6 * x.1.abs().max(y.1.abs()));
            if !same {
                return Some(format!("{l} at {}: {} vs {}", x.0, x.1, y.1));
            }
        }
    }
    None
}

/// One query of the set, instant or range.
struct Case {
    query: &'static str,
    range: bool,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} `{}`",
            if self.range { "range" } else { "instant" },
            self.query.replace('|', "\\|")
        )
    }
}

struct ServerRun {
    name: &'static str,
    /// Latencies in seconds, per case, one per round.
    latencies: Vec<Vec<f64>>,
    /// Round totals in seconds.
    totals: Vec<f64>,
    answers: Vec<Result<Answer, String>>,
    load_seconds: f64,
}

/// Starts a server and loads the data into it; returns once every sample is
/// queryable, with the load time.
fn load(name: &'static str, bodies: &[Vec<u8>], end_s: i64, info_samples: f64) -> (Server, f64) {
    // Every round must compute its answer, as the others do.
    let server = start_server(name, &[], &["-search.disableCache"]);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    eprintln!("{name}: loading {} requests ...", bodies.len());
    let t0 = Instant::now();
    for body in bodies {
        let resp = client
            .post(format!("{}/api/v1/write", server.base))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone())
            .send()
            .expect("remote write");
        assert!(
            resp.status().is_success(),
            "{name}: write failed: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }
    if name == "victoriametrics" {
        let _ = client
            .get(format!("{}/internal/force_flush", server.base))
            .send();
    }
    // Wait until every sample is queryable: count them a minute after the data ends.
    let check = format!(
        "{}/api/v1/query?query=sum(count_over_time(node_info[2h]))&time={}",
        server.base,
        end_s + 120
    );
    let wait = Instant::now();
    loop {
        let n = client
            .get(&check)
            .send()
            .ok()
            .and_then(|r| r.bytes().ok())
            .and_then(|b| parse_answer(&b).ok())
            .and_then(|a| a.values().next().map(|p| p[0].1))
            .unwrap_or(0.0);
        if n >= info_samples {
            break;
        }
        assert!(
            wait.elapsed() < Duration::from_secs(120),
            "{name}: only {n} of {info_samples} node_info samples became queryable"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let load_seconds = t0.elapsed().as_secs_f64();
    eprintln!("{name}: loaded in {load_seconds:.1}s");
    (server, load_seconds)
}

fn case_url(base: &str, c: &Case, end_s: i64) -> String {
    let q: String = form_urlencoded::byte_serialize(c.query.as_bytes()).collect();
    if c.range {
        format!(
            "{base}/api/v1/query_range?query={q}&start={}&end={end_s}&step=15",
            end_s - 3600
        )
    } else {
        format!("{base}/api/v1/query?query={q}&time={end_s}")
    }
}

/// Loads every server, then measures. All servers run at once and every query goes
/// to each server in turn (the order rotating per round), so the machine's noise
/// falls on all of them alike.
fn run_all(
    names: &[&'static str],
    bodies: &[Vec<u8>],
    cases: &[Case],
    end_s: i64,
    rounds: usize,
    info_samples: f64,
) -> Vec<ServerRun> {
    let servers: Vec<(Server, f64)> = names
        .iter()
        .map(|name| load(name, bodies, end_s, info_samples))
        .collect();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    eprintln!("querying: a warm-up round, then {rounds} rounds ...");
    let mut runs: Vec<ServerRun> = names
        .iter()
        .zip(&servers)
        .map(|(name, (server, load_seconds))| ServerRun {
            name,
            latencies: vec![Vec::new(); cases.len()],
            totals: vec![0.0; rounds],
            // The warm-up round keeps the answers.
            answers: cases
                .iter()
                .map(|c| {
                    client
                        .get(case_url(&server.base, c, end_s))
                        .send()
                        .and_then(|r| r.bytes())
                        .map_err(|e| e.to_string())
                        .and_then(|b| parse_answer(&b))
                })
                .collect(),
            load_seconds: *load_seconds,
        })
        .collect();
    for round in 0..rounds {
        for (i, c) in cases.iter().enumerate() {
            for k in 0..servers.len() {
                let s = (k + round + i) % servers.len();
                let url = case_url(&servers[s].0.base, c, end_s);
                let t = Instant::now();
                let body = client.get(&url).send().and_then(|r| r.bytes());
                let dt = t.elapsed().as_secs_f64();
                assert!(body.is_ok(), "{}: {url}: {:?}", names[s], body.err());
                runs[s].latencies[i].push(dt);
                runs[s].totals[round] += dt;
            }
        }
    }
    runs
}

fn main() {
    let args = parse_args();
    let names = peers::only(&["closedloop", "prometheus", "victoriametrics"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The data ends two minutes ago; queries end a minute before that, on a whole
    // minute (a multiple of the step, so no server shifts the range to align it).
    let origin = (now - SAMPLES * INTERVAL_MS - 2 * 60_000) / 60_000 * 60_000;
    let end_s = (origin + SAMPLES * INTERVAL_MS) / 1000 - 60;
    let series = generate(args.series);
    let instances = series.len().div_ceil(SERIES_PER_INSTANCE);
    eprintln!("encoding {} series x {SAMPLES} samples ...", series.len());
    let bodies = payloads(&series, origin);
    let cases: Vec<Case> = QUERIES
        .iter()
        .flat_map(|q| [false, true].map(|range| Case { query: q, range }))
        .collect();
    let info_samples = (instances as i64 * SAMPLES) as f64;
    let runs = run_all(&names, &bodies, &cases, end_s, args.rounds, info_samples);

    let reference = runs.iter().find(|r| r.name == "prometheus");
    // agrees[server][case]
    let agrees: Vec<Vec<bool>> = runs
        .iter()
        .map(|r| {
            r.answers
                .iter()
                .enumerate()
                .map(|(i, a)| match (reference, a) {
                    (_, Err(e)) => {
                        eprintln!("{}: {}: error {e}", r.name, cases[i].label());
                        false
                    }
                    (None, Ok(_)) => true,
                    (Some(p), Ok(a)) => match &p.answers[i] {
                        Err(_) => false,
                        Ok(pa) => match disagreement(pa, a) {
                            None => true,
                            Some(why) => {
                                eprintln!("{}: {} differs: {why}", r.name, cases[i].label());
                                false
                            }
                        },
                    },
                })
                .collect()
        })
        .collect();

    println!(
        "\n{} series ({} instances) x {} samples at 15 s; instant queries at the end, range queries over 1 h at 15 s steps; {} rounds; median latency in ms\n",
        series.len(),
        instances,
        SAMPLES,
        args.rounds
    );
    let mut header = "| query |".to_owned();
    let mut rule = "|---|".to_owned();
    for r in &runs {
        header += &format!(" {} |", r.name);
        rule += "---:|";
    }
    if reference.is_some() && runs.iter().any(|r| r.name == "closedloop") {
        header += " closedloop / prometheus |";
        rule += "---:|";
    }
    println!("{header}\n{rule}");
    let ms = |s: f64| s * 1000.0;
    for (i, c) in cases.iter().enumerate() {
        let mut row = format!("| {} |", c.label());
        for (s, r) in runs.iter().enumerate() {
            let mark = if agrees[s][i] { "" } else { " ≠" };
            row += &format!(" {:.1}{mark} |", ms(median(&r.latencies[i])));
        }
        if let (Some(p), Some(cl)) = (reference, runs.iter().find(|r| r.name == "closedloop")) {
            row += &format!(
                " {:.2} |",
                median(&cl.latencies[i]) / median(&p.latencies[i])
            );
        }
        println!("{row}");
    }
    // Totals: median of round totals over all cases, and (for servers that disagree
    // somewhere) over the cases where they agree with Prometheus.
    let mut row = "| **total, median of rounds** |".to_owned();
    for r in &runs {
        row += &format!(" **{:.1}** |", ms(median(&r.totals)));
    }
    if let (Some(p), Some(cl)) = (reference, runs.iter().find(|r| r.name == "closedloop")) {
        row += &format!(" **{:.2}** |", median(&cl.totals) / median(&p.totals));
    }
    println!("{row}");
    let mut row = "| total over queries where the server agrees with Prometheus |".to_owned();
    for (s, r) in runs.iter().enumerate() {
        let per_round: Vec<f64> = (0..args.rounds)
            .map(|k| {
                (0..cases.len())
                    .filter(|&i| agrees[s][i])
                    .map(|i| r.latencies[i][k])
                    .sum()
            })
            .collect();
        let n = agrees[s].iter().filter(|a| **a).count();
        row += &format!(" {:.1} ({n}/{}) |", ms(median(&per_round)), cases.len());
    }
    if reference.is_some() && runs.iter().any(|r| r.name == "closedloop") {
        row += " |";
    }
    println!("{row}");
    println!("\n≠: the answer differs from Prometheus's (see stderr); load = remote write of all data until queryable:");
    for r in &runs {
        println!("- {}: load {:.1}s", r.name, r.load_seconds);
    }
}
