//! Helpers shared by the integration tests: start the real closedloop binary and real
//! peers (Prometheus, VictoriaMetrics, ...) on loopback ports, wait for them, and stop
//! them on `Drop`. A missing peer binary fails the test with what to install.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use closedloop::ingest::proto::v1;
use prost::Message;

/// Path of a peer binary, or a panic naming the Debian package to install.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}` (apt-get install -y {package}), or run the README's test command, which installs it");
}

/// A free loopback port (bound and released; the peer binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A running closedloop, killed on drop.
pub struct Closedloop {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl Closedloop {
    /// Starts `closedloop serve` with `config` (YAML) written to a temp dir, on a
    /// port chosen by the OS.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        let path = dir.path().join("closedloop.yml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_closedloop"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting closedloop");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Plain (`address=host:port`) or JSON (`"address":"host:port"`) logs.
                let found = line
                    .split("address=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .or_else(|| {
                        line.split("\"address\":\"")
                            .nth(1)
                            .and_then(|a| a.split('"').next())
                    });
                if let Some(addr) = found {
                    let _ = tx.send(addr.to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("closedloop did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Closedloop {
            child,
            addr,
            dir,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "closedloop did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `data` of a successful Prometheus-API GET.
    pub fn api(&self, path_and_query: &str) -> serde_json::Value {
        api_get(&self.url(path_and_query))
    }

    /// A metric's value from `/metrics` (summed over label sets matching `filter`).
    pub fn metric(&self, name: &str, filter: &str) -> f64 {
        let text = http()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Closedloop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs a Prometheus-API URL and returns `data`, failing on an error status.
pub fn api_get(url: &str) -> serde_json::Value {
    let resp = http()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
    assert!(
        status.is_success() && body["status"] == "success",
        "GET {url}: {status} {body}"
    );
    body["data"].clone()
}

/// A running peer server (Prometheus, Alertmanager) on a loopback port, its log in
/// its temp dir, killed on drop.
pub struct Peer {
    child: Child,
    name: &'static str,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Peer {
    /// Starts `bin` (from Debian `package`) with the flags `args(port, dir)` gives and
    /// waits for its `/-/ready`.
    fn start(
        name: &'static str,
        package: &str,
        args: impl FnOnce(u16, &std::path::Path) -> Vec<String>,
    ) -> Self {
        let bin = require_binary(name, package);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .args(args(port, dir.path()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let peer = Peer {
            child,
            name,
            port,
            dir,
        };
        let ready = peer.url("/-/ready");
        wait_until(
            &format!("{name} to be ready"),
            Duration::from_secs(30),
            || {
                http()
                    .get(&ready)
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            },
        );
        peer
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running Prometheus (Debian `prometheus`).
pub struct Prometheus(Peer);

impl Prometheus {
    /// Starts Prometheus with the config `config(port)` returns (YAML; the port is
    /// Prometheus's own) and extra flags.
    pub fn start(config: impl FnOnce(u16) -> String, extra_flags: &[&str]) -> Self {
        Prometheus(Peer::start("prometheus", "prometheus", |port, dir| {
            let config_path = dir.join("prometheus.yml");
            std::fs::write(&config_path, config(port)).unwrap();
            let mut args = vec![
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ];
            args.extend(extra_flags.iter().map(|f| f.to_string()));
            args
        }))
    }
}

impl std::ops::Deref for Prometheus {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.0
    }
}

/// One series of a test request: labels and samples.
pub type TestSeries<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

/// Builds a remote-write 1.0 body (protobuf, snappy-compressed).
pub fn v1_body(series: &[TestSeries<'_>]) -> Vec<u8> {
    let req = v1::WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| v1::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| v1::Label {
                        name: Bytes::copy_from_slice(n.as_bytes()),
                        value: Bytes::copy_from_slice(v.as_bytes()),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(t, v)| v1::Sample {
                        value: v,
                        timestamp: t,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

/// POSTs a remote-write 1.0 body; returns status and response text.
pub fn post_write(cl: &Closedloop, body: Vec<u8>, content_type: &str) -> (u16, String) {
    let resp = http()
        .post(cl.url("/api/v1/write"))
        .header("Content-Type", content_type)
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A running Alertmanager (Debian `prometheus-alertmanager`).
pub struct Alertmanager(Peer);

impl Alertmanager {
    /// Starts Alertmanager with a route to a receiver that sends nowhere, clustering
    /// off, storage in its temp dir.
    pub fn start() -> Self {
        Alertmanager(Peer::start(
            "prometheus-alertmanager",
            "prometheus-alertmanager",
            |port, dir| {
                let config = dir.join("alertmanager.yml");
                std::fs::write(
                &config,
                "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: blackhole\n",
            )
            .unwrap();
                vec![
                    format!("--config.file={}", config.display()),
                    format!("--storage.path={}", dir.join("data").display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    "--cluster.listen-address=".to_owned(),
                ]
            },
        ))
    }

    /// `GET /api/v2/alerts` (active alerts, as Alertmanager lists them).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        http()
            .get(self.url("/api/v2/alerts"))
            .send()
            .and_then(|r| r.json::<Vec<serde_json::Value>>())
            .unwrap_or_default()
    }
}

impl std::ops::Deref for Alertmanager {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.0
    }
}
