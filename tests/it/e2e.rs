//! End to end with real components only: a real Prometheus 2.42 scrapes a small
//! test app (an HTTP server inside this test whose cache hit ratio the test can
//! make drop) and remote-writes it to the real closedloop binary, which runs a
//! detector and an alert whose actions notify a real Alertmanager and clear keys on
//! a real Redis. Prometheus also scrapes closedloop's own `/metrics`, so the test
//! reads the loop's counters the way an SRE would: through Prometheus. A second
//! pass with `dry_run: true` makes the same decisions and leaves Redis untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use closedloop::act::testing::peers::{Alertmanager, RedisServer};

use crate::common::*;

/// Generous: Prometheus scrapes every second and remote-writes in half-second
/// batches, but the machine running the tests may be heavily loaded.
const PATIENCE: Duration = Duration::from_secs(180);

const HEALTHY: f64 = 0.95;
const POLLUTED: f64 = 0.2;

/// The small app Prometheus scrapes: `/metrics` in the Prometheus text format with
/// one gauge, `cache_hit_ratio{cache="sessions"}`, which the test sets.
struct TestApp {
    addr: std::net::SocketAddr,
    hit_ratio: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestApp {
    fn start(hit_ratio: f64) -> TestApp {
        let ratio = Arc::new(AtomicU64::new(hit_ratio.to_bits()));
        let served = ratio.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let v = f64::from_bits(served.load(Ordering::SeqCst));
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        format!(
                            "# HELP cache_hit_ratio Share of lookups served from the cache.\n# TYPE cache_hit_ratio gauge\ncache_hit_ratio{{cache=\"sessions\"}} {v}\n"
                        ),
                    )
                }
            }),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        TestApp {
            addr,
            hit_ratio: ratio,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn set_hit_ratio(&self, v: f64) {
        self.hit_ratio.store(v.to_bits(), Ordering::SeqCst);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A detector that scores a hit ratio below 0.5, and an alert on the same condition
/// whose ladder notifies Alertmanager (and goes on at once) and then clears the
/// polluted session keys.
const RULES: &str = r#"groups:
  - name: cache
    interval: 1s
    detectors:
      - {name: hit_ratio_low, selector: 'cache_hit_ratio{job="app"}', algorithm: threshold, lower: 0.5}
    rules:
      - alert: CacheHitRatioLow
        expr: cache_hit_ratio{job="app"} < 0.5
        labels: {severity: warning}
        annotations: {summary: "cache {{ $labels.cache }} hit ratio {{ $value }}"}
        actions:
          - {type: notify, channel: am}
          - type: clear_cache
            target: sessions
            pattern: "session:*"
            max_keys: 10000
            verify_for: 20s
"#;

/// One run of the loop: the app, closedloop (its rules and actuators bound to the
/// shared Redis and Alertmanager) and a Prometheus scraping both and remote-writing
/// to closedloop. Dropped in reverse order of start: Prometheus first.
struct Loop {
    prom: Prometheus,
    cl: Closedloop,
    app: TestApp,
}

impl Loop {
    fn start(redis: &RedisServer, am: &Alertmanager, dry_run: bool) -> Loop {
        let app = TestApp::start(HEALTHY);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
        let config = format!(
            "rule_files: ['rules.yml']\nglobal: {{evaluation_interval: 1s}}\ndecide:\n  dry_run: {dry_run}\n  allow: {{actions: [clear_cache], redis_patterns: ['session:*']}}\nactuators:\n  redis:\n    sessions: {{url: '{}', batch_size: 100}}\n  notify:\n    am: {{kind: alertmanager, url: '{}'}}\n",
            redis.url(),
            am.url()
        );
        let cl = Closedloop::start_in(dir, &config);
        let (app_addr, cl_addr, write_url) = (app.addr, cl.addr.clone(), cl.url("/api/v1/write"));
        let prom = Prometheus::start(
            |_| {
                format!(
                    "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                     scrape_configs:\n\
                     \x20 - job_name: app\n\
                     \x20   static_configs: [{{targets: ['{app_addr}']}}]\n\
                     \x20 - job_name: closedloop\n\
                     \x20   static_configs: [{{targets: ['{cl_addr}']}}]\n\
                     remote_write:\n\
                     \x20 - url: {write_url}\n\
                     \x20   queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}\n\
                     \x20   metadata_config: {{send: false}}\n"
                )
            },
            &[],
        );
        Loop { prom, cl, app }
    }

    /// The first value of an instant query against closedloop, if any series matched.
    fn closedloop_value(&self, query: &str) -> Option<f64> {
        first_value(&self.cl.url("/api/v1/query"), query)
    }

    /// The first value of an instant query against Prometheus, if any series matched.
    fn prometheus_value(&self, query: &str) -> Option<f64> {
        first_value(&self.prom.url("/api/v1/query"), query)
    }

    fn alert_firing(&self) -> bool {
        self.cl.api("/api/v1/alerts")["alerts"]
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["alertname"] == "CacheHitRatioLow" && x["state"] == "firing"
                })
            })
    }

    /// The audit log's actions (newest first) matching `query`.
    fn actions(&self, query: &str) -> Vec<serde_json::Value> {
        self.cl.api(&format!("/api/v1/actions?{query}"))["actions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits, with the peers' logs in the failure message.
    fn wait(&self, what: &str, f: impl FnMut() -> bool) {
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, PATIENCE, f)
        }));
        if let Err(e) = done {
            eprintln!(
                "closedloop log:\n{}\nprometheus log:\n{}",
                self.cl.log(),
                self.prom.log()
            );
            std::panic::resume_unwind(e);
        }
    }

    /// Waits until closedloop has the app's healthy samples, scored, and nothing fired.
    fn wait_healthy(&self) {
        self.wait("the app's samples in closedloop via Prometheus", || {
            self.closedloop_value("cache_hit_ratio{job=\"app\"}") == Some(HEALTHY)
        });
        self.wait("the detector's score of the healthy app", || {
            self.closedloop_value("anomaly_score{detector=\"hit_ratio_low\"}")
                .is_some()
        });
        assert_eq!(
            self.closedloop_value("anomaly_score{detector=\"hit_ratio_low\"}"),
            Some(0.0),
            "a healthy ratio scores 0"
        );
        assert!(!self.alert_firing());
        assert!(self.actions("").is_empty(), "{:?}", self.actions(""));
    }
}

fn first_value(url: &str, query: &str) -> Option<f64> {
    let url = reqwest::Url::parse_with_params(url, &[("query", query)]).unwrap();
    let data = api_get(url.as_str());
    data["result"][0]["value"][1].as_str()?.parse().ok()
}

fn seed(c: &mut redis::Connection) {
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("session:{i}"))
            .arg("polluted")
            .query(c)
            .unwrap();
    }
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("profile:{i}"))
            .arg("x")
            .query(c)
            .unwrap();
    }
}

fn count(c: &mut redis::Connection, pattern: &str) -> usize {
    redis::cmd("KEYS")
        .arg(pattern)
        .query::<Vec<String>>(c)
        .unwrap()
        .len()
}

#[test]
fn prometheus_scrapes_an_app_closedloop_detects_notifies_clears_redis_and_verifies() {
    let redis = RedisServer::start();
    let am = Alertmanager::start();
    let mut c = redis.connection(0);
    seed(&mut c);

    // ---- For real.
    let run = Loop::start(&redis, &am, false);
    run.wait_healthy();

    // The fault: the cache fills with junk and its hit ratio drops.
    run.app.set_hit_ratio(POLLUTED);
    run.wait("the detector's anomaly_score to rise", || {
        run.closedloop_value("anomaly_score{detector=\"hit_ratio_low\"}") == Some(1.0)
    });
    run.wait("the alert to fire", || run.alert_firing());
    run.wait("the alert in Alertmanager", || {
        am.alerts()
            .iter()
            .any(|a| a["labels"]["alertname"] == "CacheHitRatioLow")
    });
    let in_am = am
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "CacheHitRatioLow")
        .unwrap();
    assert_eq!(in_am["labels"]["cache"], "sessions", "{in_am}");
    run.wait("the session keys cleared on Redis", || {
        count(&mut c, "session:*") == 0
    });
    assert_eq!(count(&mut c, "profile:*"), 10, "unrelated keys remain");
    // Clearing the polluted cache restores the hit ratio.
    run.app.set_hit_ratio(HEALTHY);

    // The audit log: the notification, then the cache clear and its verification.
    let notify = &run.actions("kind=notify")[0];
    assert_eq!(notify["outcome"], "succeeded", "{notify}");
    assert_eq!(notify["target"], "notify:am", "{notify}");
    let clear = run.actions("kind=clear_cache");
    assert_eq!(clear.len(), 1, "{clear:?}");
    let clear = &clear[0];
    assert_eq!(clear["target"], "redis:sessions/session:*", "{clear}");
    assert_eq!(clear["cause"]["rule"], "cache/CacheHitRatioLow", "{clear}");
    assert_eq!(clear["dry_run"], false, "{clear}");
    let id = clear["id"].as_i64().unwrap();
    run.wait("the cache clear to succeed", || {
        run.cl.api(&format!("/api/v1/actions/{id}"))["action"]["outcome"] == "succeeded"
    });
    run.wait("the cache clear's verification", || {
        run.cl.api(&format!("/api/v1/actions/{id}"))["action"]["verification"] != "pending"
    });
    let one = run.cl.api(&format!("/api/v1/actions/{id}"));
    assert_eq!(one["action"]["verification"], "cleared", "{one}");

    // Prometheus, scraping closedloop's /metrics, sees the remediation.
    run.wait("Prometheus to see closed_loop_remediations_total", || {
        run.prometheus_value(
            "sum(closed_loop_remediations_total{job=\"closedloop\",action=\"clear_cache\",result=\"succeeded\"})",
        )
        .is_some_and(|v| v >= 1.0)
    });
    // The fault is gone: the alert resolves.
    run.wait("the alert to resolve", || !run.alert_firing());
    drop(run);

    // ---- Dry run, in a fresh closedloop: the same decisions, audited as dry-run,
    // and Redis untouched.
    seed(&mut c);
    let run = Loop::start(&redis, &am, true);
    run.wait_healthy();
    run.app.set_hit_ratio(POLLUTED);
    run.wait("the alert to fire (dry run)", || run.alert_firing());
    run.wait("the dry-run cache clear in the audit log", || {
        !run.actions("kind=clear_cache&outcome=dry_run").is_empty()
    });
    let clear = run.actions("kind=clear_cache");
    assert_eq!(clear.len(), 1, "{clear:?}");
    assert_eq!(clear[0]["dry_run"], true, "{}", clear[0]);
    assert_eq!(
        clear[0]["target"], "redis:sessions/session:*",
        "{}",
        clear[0]
    );
    assert_eq!(
        run.actions("kind=notify").len(),
        1,
        "the same notify decision"
    );
    run.wait("Prometheus to see the dry-run remediation", || {
        run.prometheus_value(
            "sum(closed_loop_remediations_total{job=\"closedloop\",action=\"clear_cache\",result=\"dry_run\"})",
        )
        .is_some_and(|v| v >= 1.0)
    });
    assert_eq!(count(&mut c, "session:*"), 300, "a dry run removes nothing");
    assert_eq!(count(&mut c, "profile:*"), 10);
}
