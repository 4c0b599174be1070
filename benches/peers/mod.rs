//! What the side-by-side benchmarks share: loopback ports, the peer binaries from
//! Debian (a missing one is a failure naming its package), processes killed on drop,
//! readiness waits, and the /proc figures a run reports.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its own part

pub mod series;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bin` if it exists, else a panic naming the Debian package to install.
pub fn require(bin: &str, package: &str) -> String {
    assert!(
        Path::new(bin).exists(),
        "{bin} not found: install the Debian package `{package}` (apt-get install -y {package})"
    );
    bin.to_owned()
}

/// A child process with its output discarded, killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(mut c: Command) -> Proc {
        Proc(
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning a benchmark server"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to a minute) until `url` answers 2xx.
pub fn wait_ready(url: &str) {
    let client = reqwest::blocking::Client::new();
    let start = Instant::now();
    while !client
        .get(url)
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at ")".
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // CLK_TCK is 100 on Linux
}

/// A `/proc/PID/status` memory field (`VmRSS:`, `VmHWM:`) in KiB.
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of `--name V` among the benchmark's arguments, or `default`.
/// Arguments that are not ours (cargo passes `--bench`) are ignored.
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let argv: Vec<String> = std::env::args().collect();
    match argv.iter().position(|a| a == name) {
        Some(i) => argv
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a value of the right type")),
        None => default,
    }
}

/// `--only a,b`: the servers to run, all of `names` when absent.
pub fn only<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let only: String = flag("--only", String::new());
    let wanted: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    names
        .iter()
        .copied()
        .filter(|n| wanted.is_empty() || wanted.contains(n))
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A server under test on a loopback port, with its data directory; killed (and the
/// directory removed) when dropped.
pub struct Server {
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }
}

/// Starts `name` (`closedloop`, `prometheus` or `victoriametrics`, the latter two
/// from their Debian packages) on a free loopback port and waits until it is ready.
/// closedloop gets `closedloop_args` after `serve --listen ADDR` (and
/// `--config $CLOSEDLOOP_BENCH_CONFIG` when that is set); VictoriaMetrics gets
/// `vm_flags`.
pub fn start_server(name: &'static str, closedloop_args: &[&str], vm_flags: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let (cmd, ready) = match name {
        "closedloop" => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_closedloop"));
            c.args(["serve", "--listen", &addr]);
            if let Ok(cfg) = std::env::var("CLOSEDLOOP_BENCH_CONFIG") {
                c.args(["--config", &cfg]);
            }
            c.args(closedloop_args);
            (c, "/-/ready")
        }
        "prometheus" => {
            let cfg = dir.path().join("prometheus.yml");
            std::fs::write(&cfg, "global: {scrape_interval: 1m}\n").unwrap();
            let mut c = Command::new(require("/usr/bin/prometheus", "prometheus"));
            c.arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-remote-write-receiver");
            (c, "/-/ready")
        }
        "victoriametrics" => {
            let mut c = Command::new(require("/usr/bin/victoria-metrics", "victoria-metrics"));
            c.arg(format!("-httpListenAddr={addr}"))
                .arg(format!("-storageDataPath={}", data.display()))
                .arg("-retentionPeriod=1")
                .args(vm_flags);
            (c, "/health")
        }
        other => panic!("unknown server {other}"),
    };
    let proc = Proc::spawn(cmd);
    wait_ready(&format!("http://{addr}{ready}"));
    Server {
        name,
        base: format!("http://{addr}"),
        proc,
        _dir: dir,
    }
}

/// What [`post_all`] saw.
pub struct Posted {
    /// Wall time of the whole load, seconds.
    pub wall: f64,
    /// Latency of every request, seconds, in completion order.
    pub latencies: Vec<f64>,
    /// Requests that failed or were not answered 2xx.
    pub failed: usize,
    /// The first failure's status and body, for the report.
    pub first_failure: Option<String>,
}

/// Posts every snappy-compressed remote-write 1.0 body to `url` over `connections`
/// connections, 60 s timeout per request. Bodies come in rounds of `per_round`, body
/// `j` of a round carrying the same series in every round; as in Prometheus's
/// sharded queues, each connection owns a fixed set of those positions and posts
/// its bodies in order, so no series' samples ever arrive out of order.
pub fn post_all(
    url: &str,
    bodies: &std::sync::Arc<Vec<Vec<u8>>>,
    connections: usize,
    per_round: usize,
) -> Posted {
    use std::sync::{Arc, Mutex};
    let connections = connections.clamp(1, per_round.max(1));
    let out = Arc::new(Mutex::new(Posted {
        wall: 0.0,
        latencies: Vec::with_capacity(bodies.len()),
        failed: 0,
        first_failure: None,
    }));
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let (bodies, out, url) = (bodies.clone(), out.clone(), url.to_owned());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let mine = (0..bodies.len()).filter(|j| j % per_round.max(1) % connections == c);
                for i in mine {
                    let body = &bodies[i];
                    let t0 = Instant::now();
                    let result = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body.clone())
                        .send();
                    let failure = match result {
                        Ok(r) if r.status().is_success() => None,
                        Ok(r) => Some(format!("{}: {}", r.status(), r.text().unwrap_or_default())),
                        Err(e) => Some(e.to_string()),
                    };
                    let took = t0.elapsed().as_secs_f64();
                    let mut o = out.lock().unwrap();
                    o.latencies.push(took);
                    if let Some(f) = failure {
                        o.failed += 1;
                        o.first_failure.get_or_insert(f);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut posted = std::mem::replace(
        &mut *out.lock().unwrap(),
        Posted {
            wall: 0.0,
            latencies: Vec::new(),
            failed: 0,
            first_failure: None,
        },
    );
    posted.wall = start.elapsed().as_secs_f64();
    posted
}

/// The `q`-quantile (0..=1, nearest rank) of `v`; NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((q * (n - 1) as f64).round() as usize).min(n - 1)],
    }
}

/// The median of `v` (mean of the middle two when even); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[m],
        _ => (v[m - 1] + v[m]) / 2.0,
    }
}

/// A sample of a metric without labels (or the sum over its label sets) from a
/// Prometheus text exposition; 0 when absent.
pub fn scrape_metric(base: &str, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{base}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
