//! Crash safety: the real binary is killed with SIGKILL while an action is in flight
//! (a dynamic-config endpoint served here holds its answer), while an approval is
//! pending and while a cooldown runs; a new process over the same knowledge store
//! loses none of them and repeats nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use closedloop::act::testing::peers::WebhookReceiver;

use crate::common::*;

/// A config endpoint whose GET answers at once and whose PUT is held until the
/// endpoint is dropped: an action against it stays in flight.
struct SlowEndpoint {
    addr: SocketAddr,
    puts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SlowEndpoint {
    fn start() -> SlowEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let puts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (puts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (p, s) = (p.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, &p, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SlowEndpoint { addr, puts, stop }
    }

    fn url(&self) -> String {
        format!("http://{}/config", self.addr)
    }

    fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

impl Drop for SlowEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Answers requests on one connection: GETs at once, PUTs only when stopping.
fn serve(conn: TcpStream, puts: &AtomicUsize, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let method = line.split_whitespace().next().unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if method != "GET" {
            puts.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let answer = "{\"provider\":\"a\"}";
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
    }
}

const RULES: &str = r#"groups:
  - name: crash
    interval: 1s
    rules:
      - alert: SwitchProvider
        expr: provider_errors > 0
        actions:
          - {type: http_config, endpoint: slow, body: {provider: b}}
      - alert: NeedsHuman
        expr: queue_stuck > 0
        actions:
          - {type: http_config, endpoint: fast, body: {drain: true}}
        approval: {required: true, timeout: 1h}
      - alert: Flaky
        expr: flaky > 0
        actions:
          - {type: notify, channel: hook}
        cooldown: 1h
"#;

fn write_all(cl: &Closedloop, provider: f64, queue: f64, flaky: f64) {
    let t = now_ms();
    let body = v1_body(&[
        (&[("__name__", "provider_errors")], &[(t, provider)]),
        (&[("__name__", "queue_stuck")], &[(t, queue)]),
        (&[("__name__", "flaky")], &[(t, flaky)]),
    ]);
    assert_eq!(post_write(cl, body, "application/x-protobuf").0, 204);
}

fn actions(cl: &Closedloop) -> Vec<serde_json::Value> {
    cl.api("/api/v1/actions?limit=1000")["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn of_rule<'a>(all: &'a [serde_json::Value], rule: &str) -> Vec<&'a serde_json::Value> {
    all.iter()
        .filter(|a| a["cause"]["rule"] == format!("crash/{rule}"))
        .collect()
}

#[test]
fn sigkill_loses_no_decision_approval_or_cooldown_and_repeats_nothing() {
    let slow = SlowEndpoint::start();
    let fast = WebhookReceiver::start();
    let hook = WebhookReceiver::start();
    let keep = tempfile::tempdir().unwrap();
    let rules = keep.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let token = keep.path().join("admin-token");
    std::fs::write(&token, "admin-s3cret\n").unwrap();
    let config = format!(
        "rule_files: ['{}']\nauth: {{admin: {{bearer_token_file: '{}'}}}}\nknowledge: {{path: '{}'}}\ndecide:\n  dry_run: false\n  allow: {{actions: [http_config], http_endpoints: [slow, fast]}}\nactuators:\n  http_config:\n    slow: {{url: '{}', get_url: '{}', timeout: 5m}}\n    fast: {{url: '{}'}}\n  notify:\n    hook: {{kind: webhook, url: '{}'}}\n",
        rules.display(),
        token.display(),
        keep.path().join("closedloop.db").display(),
        slow.url(),
        slow.url(),
        fast.url("/drain"),
        hook.url("/hook"),
    );

    let cl = Closedloop::start(&config);
    let mut before = Vec::new();
    wait_until(
        "an action in flight, one pending, one done",
        Duration::from_secs(60),
        || {
            write_all(&cl, 1.0, 1.0, 1.0);
            before = actions(&cl);
            slow.puts() == 1
                && of_rule(&before, "SwitchProvider")
                    .first()
                    .is_some_and(|a| a["outcome"] == "executing")
                && of_rule(&before, "NeedsHuman")
                    .first()
                    .is_some_and(|a| a["outcome"] == "pending_approval")
                && of_rule(&before, "Flaky")
                    .first()
                    .is_some_and(|a| a["outcome"] == "succeeded")
        },
    );
    assert_eq!(hook.received().len(), 1);
    // The three alerts' firing state is saved too (every few seconds), so the next
    // process sees the same alert instances rather than new ones.
    let db = keep.path().join("closedloop.db");
    wait_until("the alert state saved", Duration::from_secs(30), || {
        write_all(&cl, 1.0, 1.0, 1.0);
        rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM alert_state WHERE state = 'firing'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .is_ok_and(|n| n == 3)
    });
    let in_flight = of_rule(&before, "SwitchProvider")[0]["id"]
        .as_i64()
        .unwrap();
    let pending = of_rule(&before, "NeedsHuman")[0]["id"].as_i64().unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", &cl.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(cl);

    let cl = Closedloop::start(&config);
    // The action in flight is reported `unknown` and its target read, not re-run.
    let mut events = serde_json::Value::Null;
    wait_until(
        "the in-flight action checked",
        Duration::from_secs(30),
        || {
            events = cl.api(&format!("/api/v1/actions/{in_flight}"));
            events["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "observed"))
        },
    );
    assert_eq!(events["action"]["outcome"], "unknown", "{events}");
    let observed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "observed")
        .unwrap()
        .clone();
    assert_eq!(
        observed["detail"]["target"]["current"]["provider"], "a",
        "{observed}"
    );
    // Nothing written before the kill was lost.
    let after = actions(&cl);
    for a in &before {
        assert!(
            after.iter().any(|b| b["id"] == a["id"]),
            "action {} lost: {after:?}",
            a["id"]
        );
    }
    // However long the alerts keep firing, the in-flight action is not repeated.
    let iterations = cl.metric("closedloop_rule_group_iterations_total", "crash");
    wait_until("several evaluations", Duration::from_secs(30), || {
        write_all(&cl, 1.0, 1.0, 1.0);
        cl.metric("closedloop_rule_group_iterations_total", "crash") >= iterations + 5.0
    });
    assert_eq!(slow.puts(), 1, "the in-flight action ran once");
    let again = actions(&cl);
    for a in of_rule(&again, "SwitchProvider") {
        assert!(
            a["id"].as_i64() == Some(in_flight) || a["outcome"] == "refused",
            "{a}"
        );
    }
    assert_eq!(
        cl.metric(
            "closed_loop_remediations_total",
            "action=\"http_config\",result=\"unknown\""
        ),
        1.0
    );

    // The approval survived and still works.
    let queue = cl.api("/api/v1/approvals");
    assert_eq!(
        queue["approvals"][0]["id"].as_i64(),
        Some(pending),
        "{queue}"
    );
    assert_eq!(cl.metric("closed_loop_approvals_pending", ""), 1.0);
    let r = http()
        .post(cl.url(&format!("/api/v1/approvals/{pending}/approve")))
        .bearer_auth("admin-s3cret")
        .form(&[("by", "alice")])
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    wait_until("the approved action", Duration::from_secs(30), || {
        write_all(&cl, 1.0, 1.0, 1.0);
        fast.received().iter().any(|r| r.body["drain"] == true)
    });

    // The cooldown survived: the alert resolves and fires again, and is refused.
    wait_until("Flaky resolved", Duration::from_secs(30), || {
        write_all(&cl, 1.0, 1.0, 0.0);
        !cl.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "Flaky")
    });
    let mut refused = None;
    wait_until(
        "Flaky firing again, refused",
        Duration::from_secs(30),
        || {
            write_all(&cl, 1.0, 1.0, 1.0);
            refused = of_rule(&actions(&cl), "Flaky")
                .into_iter()
                .find(|a| a["outcome"] == "refused")
                .cloned();
            refused.is_some()
        },
    );
    let r = refused.unwrap();
    assert!(r["reason"].as_str().unwrap().starts_with("cooldown"), "{r}");
    assert_eq!(hook.received().len(), 1, "notified once");
}
