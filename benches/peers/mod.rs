//! What the side-by-side benchmarks share: loopback ports, the peer binaries from
//! Debian (a missing one is a failure naming its package), processes killed on drop,
//! readiness waits, and the /proc figures a run reports.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its own part

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
