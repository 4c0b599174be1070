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
