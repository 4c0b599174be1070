//! Real peers for the actuators' tests — `redis-server` and Alertmanager from their
//! Debian packages — on loopback ports, and a local webhook receiver. A missing
//! binary fails the test with the package to install; every process is killed on
//! drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use parking_lot::Mutex;

use super::LocalServer;
use serde_json::Value;

/// The path of a peer binary, or a panic naming the Debian package to install.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}` (apt-get install -y {package}), or run ./scripts/test.sh, which installs it");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `ready` every 50 ms until it holds, or panics after `limit`.
fn wait_for(what: &str, limit: Duration, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} not ready after {limit:?}; log:\n{log}");
}

/// A child process with its temp dir, killed on drop.
struct Process {
    child: Child,
    dir: tempfile::TempDir,
}

impl Process {
    fn spawn(bin: &Path, args: &[String], dir: tempfile::TempDir, log: &str) -> Process {
        let log = std::fs::File::create(dir.path().join(log)).expect("a log file");
        let child = Command::new(bin)
            .args(args)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Process { child, dir }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `redis-server` (Debian `redis-server`), no persistence.
pub struct RedisServer {
    process: Process,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let bin = require_binary("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = Process::spawn(&bin, &args, dir, "redis.log");
        let log = process.dir.path().join("redis.log");
        let server = RedisServer { process, port };
        let url = server.url();
        wait_for("redis-server", Duration::from_secs(30), &log, || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A blocking connection to `db`, for seeding and checking keys.
    pub fn connection(&self, db: i64) -> redis::Connection {
        let mut c = redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(10)))
            .expect("connecting to redis-server");
        redis::cmd("SELECT")
            .arg(db)
            .query::<()>(&mut c)
            .expect("SELECT");
        c
    }

    pub fn dir(&self) -> &Path {
        self.process.dir.path()
    }
}

/// A running Alertmanager (Debian `prometheus-alertmanager`) routing everything to
/// a receiver that sends nowhere; clustering off.
pub struct Alertmanager {
    _process: Process,
    pub port: u16,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        let bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: blackhole\n",
        )
        .expect("writing alertmanager.yml");
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_owned(),
        ];
        let process = Process::spawn(&bin, &args, dir, "alertmanager.log");
        let log = process.dir.path().join("alertmanager.log");
        let am = Alertmanager {
            _process: process,
            port,
        };
        let ready = am.url() + "/-/ready";
        wait_for("alertmanager", Duration::from_secs(30), &log, || {
            http_get(&ready).is_some_and(|(status, _)| status == 200)
        });
        am
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds.
    pub fn alerts(&self) -> Vec<Value> {
        http_get(&(self.url() + "/api/v2/alerts"))
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }
}

/// A minimal blocking HTTP/1.1 GET over loopback (status, body), `None` on any error.
fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Value,
}

/// A local HTTP receiver recording every request and answering with the queued
/// statuses (then 200, or 202 for paths ending in `/enqueue` as PagerDuty does),
/// with `body` as JSON for GETs.
pub struct WebhookReceiver {
    server: LocalServer,
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<Vec<u16>>>,
    current: Arc<Mutex<Value>>,
}

impl WebhookReceiver {
    pub fn start() -> WebhookReceiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let current = Arc::new(Mutex::new(Value::Null));
        let (r, a, c) = (received.clone(), answers.clone(), current.clone());
        let app = axum::Router::new().fallback(
            move |m: axum::http::Method, u: Uri, h: HeaderMap, b: Bytes| {
                let (r, a, c) = (r.clone(), a.clone(), c.clone());
                async move {
                    let body: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    let is_get = m == axum::http::Method::GET;
                    if !is_get && body != Value::Null {
                        *c.lock() = body.clone();
                    }
                    r.lock().push(Received {
                        method: m.to_string(),
                        path: u.path().to_owned(),
                        content_type: h
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        headers: h
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body,
                    });
                    let queued = {
                        let mut q = a.lock();
                        (!q.is_empty()).then(|| q.remove(0))
                    };
                    let default = if u.path().ends_with("/enqueue") {
                        202
                    } else {
                        200
                    };
                    let status =
                        StatusCode::from_u16(queued.unwrap_or(default)).unwrap_or(StatusCode::OK);
                    let answer = if is_get {
                        c.lock().to_string()
                    } else {
                        "{\"status\":\"success\"}".to_owned()
                    };
                    (status, [("content-type", "application/json")], answer)
                }
            },
        );
        WebhookReceiver {
            server: LocalServer::start(app),
            received,
            answers,
            current,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    /// Answers the next requests with these statuses, in order.
    pub fn answer_with(&self, statuses: &[u16]) {
        self.answers.lock().extend_from_slice(statuses);
    }

    /// Sets the JSON GETs return (a config endpoint's current value); every
    /// non-GET request with a JSON body replaces it, as a config endpoint would.
    pub fn set_current(&self, v: Value) {
        *self.current.lock() = v;
    }

    pub fn current(&self) -> Value {
        self.current.lock().clone()
    }
}
