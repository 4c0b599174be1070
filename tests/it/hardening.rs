//! The reproducers against the real binary: requests and rule files that
//! once crashed, stalled or bloated the service get a clear error, and the service
//! stays up and keeps its data.

use std::time::{Duration, Instant};

use crate::common::{http, wait_until, Closedloop};

/// POSTs a query as a form (long queries do not fit in a URL) and returns the status
/// and JSON body.
fn post_query(cl: &Closedloop, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let resp = http().post(cl.url(path)).form(form).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

fn assert_healthy(cl: &Closedloop) {
    let resp = http().get(cl.url("/-/healthy")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "log:\n{}", cl.log());
}

#[test]
fn deep_and_long_queries_get_a_clear_error_and_the_server_stays_up() {
    let cl = Closedloop::start("");
    let reproducers = [
        format!("1{}", " + 1".repeat(1200)),
        format!("{}vector(1){}", "abs(".repeat(1000), ")".repeat(1000)),
        format!("{}1{}", "(".repeat(35_000), ")".repeat(35_000)),
        format!("vector(1){}", " + vector(1)".repeat(1999)),
    ];
    for q in &reproducers {
        for path in ["/api/v1/query", "/api/v1/query_range"] {
            let (status, body) = post_query(
                &cl,
                path,
                &[("query", q), ("start", "0"), ("end", "60"), ("step", "15")],
            );
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["errorType"], "bad_data", "{body}");
            let msg = body["error"].as_str().unwrap();
            assert!(
                msg.contains("over the limit of 1000 (query.max_depth)"),
                "{msg}"
            );
        }
        assert_healthy(&cl);
    }
    // The 1,200-term query also as the issue sent it: a GET.
    let resp = http()
        .get(cl.url("/api/v1/query"))
        .query(&[("query", reproducers[0].as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // A 1.3 MB `or` chain (once 7 minutes of parsing) is refused by its length at once.
    let long = format!("up{}", " or up".repeat(220_000));
    let start = Instant::now();
    let (status, body) = post_query(&cl, "/api/v1/query", &[("query", &long)]);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("(query.max_length)"),
        "{body}"
    );
    assert!(start.elapsed() < Duration::from_secs(20));

    // Within the limits, a long chain is answered.
    let chain = format!("1{}", " + 1".repeat(900));
    let (status, body) = post_query(&cl, "/api/v1/query", &[("query", &chain)]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][1], "901");
    assert_healthy(&cl);
}

#[test]
fn a_rule_file_evaluation_cannot_run_is_refused_and_the_server_stays_up() {
    let deep = format!("vector(1){}", " + vector(1)".repeat(1999));
    let bad = format!(
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: deep\n        expr: '{deep}'\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: shallow\n        expr: vector(1) + vector(1)\n",
    )
    .unwrap();

    // `check rules` refuses what evaluation cannot run, with file:line and the limit.
    let bad_path = dir.path().join("bad.yml");
    std::fs::write(&bad_path, &bad).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_closedloop"))
        .args(["check", "rules"])
        .arg(&bad_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.yml:5: group \"g\", rule \"deep\"")
            && text.contains("over the limit of 1000 (query.max_depth)"),
        "{text}"
    );

    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\nrules:\n  watch_interval: 1s\n  state_file: ''\n",
    );
    wait_until(
        "the shallow rule to record",
        Duration::from_secs(20),
        || {
            cl.api("/api/v1/query?query=shallow")["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );
    // The watched file changes to the reproducer: the reload is refused and the
    // running rules keep going. (The server used to die about 3 s later.)
    std::fs::write(&rules, &bad).unwrap();
    wait_until("the reload to be refused", Duration::from_secs(20), || {
        cl.metric("closedloop_config_last_reload_successful", "") == 0.0
    });
    assert!(cl.log().contains("query.max_depth"), "{}", cl.log());
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_healthy(&cl);
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = cl.api("/api/v1/rules");
    assert_eq!(r["groups"][0]["rules"][0]["name"], "shallow", "{r}");
    assert_eq!(r["groups"][0]["rules"][0]["health"], "ok", "{r}");
}

/// Every read route of the service, as a GET path with a valid query.
const READ_ROUTES: &[&str] = &[
    "/api/v1/query?query=up",
    "/api/v1/query_range?query=up&start=0&end=60&step=15",
    "/api/v1/series?match[]=up",
    "/api/v1/labels",
    "/api/v1/label/job/values",
    "/api/v1/status/buildinfo",
    "/api/v1/metadata",
    "/api/v1/rules",
    "/api/v1/alerts",
    "/api/v1/anomalies",
    "/api/v1/actions",
    "/api/v1/approvals",
];

fn get_status(cl: &Closedloop, path: &str, auth: Option<&str>) -> u16 {
    let mut req = http().get(cl.url(path));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().unwrap().status().as_u16()
}

#[test]
fn the_read_guard_covers_every_read_route_with_its_own_credentials() {
    let dir = tempfile::tempdir().unwrap();
    for (file, secret) in [("read", "r3ader"), ("write", "wr1ter"), ("admin", "adm1n")] {
        std::fs::write(dir.path().join(file), secret).unwrap();
    }
    let cl = Closedloop::start_in(
        dir,
        "auth:\n  read: {bearer_token_file: read}\n  write: {bearer_token_file: write}\n  admin: {bearer_token_file: admin}\n",
    );
    let (read, write, admin) = ("Bearer r3ader", "Bearer wr1ter", "Bearer adm1n");
    for path in READ_ROUTES.iter().chain(&["/metrics"]) {
        assert_eq!(get_status(&cl, path, None), 401, "{path}");
        // The other guards' credentials do not open reads.
        assert_eq!(get_status(&cl, path, Some(write)), 401, "{path}");
        assert_eq!(get_status(&cl, path, Some(admin)), 401, "{path}");
        assert_eq!(get_status(&cl, path, Some(read)), 200, "{path}");
    }
    // POST forms of the query endpoints are guarded too.
    let resp = http()
        .post(cl.url("/api/v1/query"))
        .form(&[("query", "up")])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Probes stay open; the read credential opens neither writes nor reloads.
    for path in ["/-/healthy", "/-/ready"] {
        assert_eq!(get_status(&cl, path, None), 200, "{path}");
    }
    let resp = http()
        .post(cl.url("/-/reload"))
        .header("Authorization", read)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http()
        .post(cl.url("/api/v1/write"))
        .header("Authorization", read)
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(!cl.log().contains("r3ader"), "a secret was logged");
}

#[test]
fn metrics_can_be_left_open_for_a_scraper() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("read"), "r3ader").unwrap();
    let cl = Closedloop::start_in(
        dir,
        "auth:\n  read: {bearer_token_file: read}\n  protect_metrics: false\n",
    );
    assert_eq!(get_status(&cl, "/metrics", None), 200);
    assert_eq!(get_status(&cl, "/api/v1/query?query=up", None), 401);
}

/// Reads from `s` until EOF or error; true when the server closed the connection
/// within `within`.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return start.elapsed() < within,
        }
    }
}

#[test]
fn idle_and_slow_connections_are_closed_and_the_cap_holds() {
    use std::io::Write;
    let cl = Closedloop::start(
        "http: {max_connections: 8, idle_timeout: 2s, read_header_timeout: 1s}\n",
    );
    let addr = cl.addr.clone();
    let connect = || std::net::TcpStream::connect(&addr).unwrap();
    // Eight half-open connections fill the cap: a ninth is closed at once.
    let mut idle: Vec<_> = (0..8).map(|_| connect()).collect();
    // (A probe would take a slot; give the server a moment to accept all eight.)
    std::thread::sleep(Duration::from_millis(300));
    let mut ninth = connect();
    assert!(
        closed_within(&mut ninth, Duration::from_secs(5)),
        "over the cap"
    );
    // The idle ones are closed after the idle timeout.
    let start = Instant::now();
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(30)),
            "idle connection kept"
        );
    }
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // A request head trickling in is cut at the read-header timeout.
    let mut slow = connect();
    slow.write_all(b"GET /-/healthy HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(30)));
    assert!(start.elapsed() < Duration::from_secs(15));
    // Slots are free again: probes answer, and the closes were counted.
    assert_healthy(&cl);
    assert!(cl.metric("closedloop_http_connections_refused_total", "") >= 1.0);
    assert!(cl.metric("closedloop_http_connections_timed_out_total", "") >= 9.0);
}

/// User and system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A query that would run for hours: one series, a million steps, windows of a
/// million points.
const ENDLESS: &str = "sum_over_time(sum_over_time(vector(1)[1000s:1ms])[1000s:1ms])";

#[test]
fn a_query_stops_when_its_client_goes_away() {
    use std::io::Write;
    let cl = Closedloop::start("");
    let mut s = std::net::TcpStream::connect(&cl.addr).unwrap();
    let body = format!("query={}", urlencode(ENDLESS));
    write!(
        s,
        "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Let it start, then hang up.
    let cpu_before = cpu_seconds(cl.pid());
    wait_until("the query to burn CPU", Duration::from_secs(30), || {
        cpu_seconds(cl.pid()) - cpu_before > 0.3
    });
    drop(s);
    wait_until("the cancellation", Duration::from_secs(30), || {
        cl.log().contains("read cancelled: the client went away")
    });
    // Nothing keeps running: the process goes quiet.
    let quiet = cpu_seconds(cl.pid());
    std::thread::sleep(Duration::from_secs(2));
    assert!(cpu_seconds(cl.pid()) - quiet < 0.5);
    assert_healthy(&cl);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn queries_beyond_max_concurrency_queue_and_probes_stay_fast() {
    // (A query that waits out its whole timeout in the queue gets 503 naming
    // query.max_concurrency: see http/admission.rs's tests.)
    let cl = Closedloop::start("query: {max_concurrency: 1, timeout: 3s}\n");
    // One endless query holds the only slot until its 3s timeout.
    let url = cl.url("/api/v1/query");
    let started = Instant::now();
    let long = std::thread::spawn(move || {
        let resp = http().post(url).form(&[("query", ENDLESS)]).send().unwrap();
        (
            resp.status().as_u16(),
            resp.json::<serde_json::Value>().unwrap(),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile probes answer at once.
    for path in ["/-/healthy", "/-/ready"] {
        let probe = Instant::now();
        assert_eq!(get_status(&cl, path, None), 200);
        assert!(
            probe.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            probe.elapsed()
        );
    }
    // A second query waits for the slot, then is answered.
    let (status, body) = post_query(&cl, "/api/v1/query", &[("query", "vector(1)")]);
    let answered = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        answered >= Duration::from_millis(2500),
        "the second query ran beside the first: answered after {answered:?}"
    );
    let (long_status, long_body) = long.join().unwrap();
    assert_eq!(long_status, 503, "{long_body}");
    assert_eq!(long_body["errorType"], "timeout", "{long_body}");
}
