//! Engine tests named by scenario, most of them small versions of cases in
//! Prometheus's own test scripts.

use super::*;
use crate::storage::{LabelSet, StoreConfig, STALE_NAN_BITS};

/// Labels and samples of one test series.
type TestSeries<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

fn store_with(series: &[TestSeries<'_>]) -> Store {
    let store = Store::new(StoreConfig {
        retention_ms: i64::MAX / 4,
        max_series: 1000,
        shards: 2,
        ..StoreConfig::default()
    });
    for (labels, samples) in series {
        let ls = LabelSet::from_pairs(labels.iter().copied());
        for &(t, v) in *samples {
            store.append(&ls, t, v).unwrap();
        }
    }
    store
}

fn vector(r: QueryResult) -> Vec<(String, f64)> {
    match r.value {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("expected a vector, got {other:?}"),
    }
}

const M: i64 = 60_000;

#[test]
fn rate_extrapolates_to_edges_within_the_threshold() {
    // Counter sampled every minute from 1m to 4m, rate over 5m at 5m: the window
    // (0, 5m] holds 4 samples; the 1m gaps at both ends are within 1.1 intervals, so
    // the increase is extrapolated to both edges: 30 * (180 + 60 + 60) / 180 / 300.
    let samples: Vec<(i64, f64)> = (1..=4).map(|i| (i * M, i as f64 * 10.0)).collect();
    let store = store_with(&[(&[("__name__", "c_total")], &samples)]);
    let e = Engine::default();
    let r = vector(e.instant_query(&store, "rate(c_total[5m])", 5 * M).unwrap());
    assert_eq!(r.len(), 1);
    let want = 30.0 * (180.0 + 60.0 + 60.0) / 180.0 / 300.0;
    assert!((r[0].1 - want).abs() < 1e-12, "{} vs {want}", r[0].1);
    assert_eq!(r[0].0, "{}");
}

#[test]
fn rate_with_one_sample_in_window_is_empty() {
    let store = store_with(&[(&[("__name__", "c_total")], &[(M, 1.0)])]);
    let r = Engine::default()
        .instant_query(&store, "rate(c_total[5m])", 2 * M)
        .unwrap();
    assert!(vector(r).is_empty());
}

#[test]
fn lookback_ends_at_staleness_marker() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let store = store_with(&[(&[("__name__", "g")], &[(0, 1.0), (M, 2.0), (2 * M, stale)])]);
    let e = Engine::default();
    assert_eq!(
        vector(e.instant_query(&store, "g", M + 30_000).unwrap()).len(),
        1
    );
    // The marker hides the older sample although it is within the lookback.
    assert!(vector(e.instant_query(&store, "g", 2 * M + 30_000).unwrap()).is_empty());
    // Range vectors skip the marker.
    let r = e
        .instant_query(&store, "count_over_time(g[10m])", 3 * M)
        .unwrap();
    assert_eq!(vector(r)[0].1, 2.0);
}

#[test]
fn lookback_window_is_left_open() {
    let store = store_with(&[(&[("__name__", "g")], &[(0, 1.0)])]);
    let e = Engine::default();
    assert_eq!(
        vector(e.instant_query(&store, "g", 5 * M - 1).unwrap()).len(),
        1
    );
    assert!(vector(e.instant_query(&store, "g", 5 * M).unwrap()).is_empty());
}

#[test]
fn one_to_one_match_with_duplicate_rhs_is_many_to_many_error() {
    let store = store_with(&[
        (&[("__name__", "a"), ("job", "x")], &[(0, 1.0)]),
        (&[("__name__", "b"), ("job", "x"), ("i", "1")], &[(0, 1.0)]),
        (&[("__name__", "b"), ("job", "x"), ("i", "2")], &[(0, 1.0)]),
    ]);
    let err = Engine::default()
        .instant_query(&store, "a + on(job) b", 0)
        .unwrap_err();
    assert_eq!(err.kind(), "execution");
    assert!(err.to_string().starts_with(
        "found duplicate series for the match group {job=\"x\"} on the right hand-side"
    ));
}

#[test]
fn many_to_one_without_group_left_is_an_error() {
    let store = store_with(&[
        (&[("__name__", "a"), ("job", "x"), ("i", "1")], &[(0, 1.0)]),
        (&[("__name__", "a"), ("job", "x"), ("i", "2")], &[(0, 1.0)]),
        (&[("__name__", "b"), ("job", "x")], &[(0, 2.0)]),
    ]);
    let e = Engine::default();
    let err = e.instant_query(&store, "a * on(job) b", 0).unwrap_err();
    assert!(err
        .to_string()
        .contains("many-to-one matching must be explicit"));
    let r = vector(
        e.instant_query(&store, "a * on(job) group_left b", 0)
            .unwrap(),
    );
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|(_, v)| *v == 2.0));
}

#[test]
fn comparison_filters_and_bool_returns_zero_one() {
    let store = store_with(&[
        (&[("__name__", "m"), ("i", "1")], &[(0, 1.0)]),
        (&[("__name__", "m"), ("i", "2")], &[(0, 5.0)]),
    ]);
    let e = Engine::default();
    let r = vector(e.instant_query(&store, "m > 2", 0).unwrap());
    assert_eq!(r, vec![("m{i=\"2\"}".to_string(), 5.0)]);
    let r = vector(e.instant_query(&store, "m > bool 2", 0).unwrap());
    assert_eq!(
        r,
        vec![("{i=\"1\"}".into(), 0.0), ("{i=\"2\"}".into(), 1.0)]
    );
}

#[test]
fn subquery_steps_align_to_multiples_of_the_step() {
    // Samples every 10s; a 1m subquery at 20s resolution evaluated at 95s sees the
    // inner steps 40s, 60s, 80s (left-open at 35s).
    let samples: Vec<(i64, f64)> = (0..20).map(|i| (i * 10_000, i as f64)).collect();
    let store = store_with(&[(&[("__name__", "x")], &samples)]);
    let r = Engine::default()
        .instant_query(&store, "count_over_time(x[1m:20s])", 95_000)
        .unwrap();
    assert_eq!(vector(r)[0].1, 3.0);
}

#[test]
fn at_modifier_pins_the_evaluation_time() {
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * M, i as f64)).collect();
    let store = store_with(&[(&[("__name__", "x")], &samples)]);
    let r = Engine::default()
        .range_query(&store, "x @ 120", 0, 5 * M, M)
        .unwrap();
    match r.value {
        Value::Matrix(m) => {
            assert_eq!(m.len(), 1);
            assert!(m[0].points.iter().all(|p| p.1 == 2.0));
            assert_eq!(m[0].points.len(), 6);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn range_query_result_is_sorted_matrix_json() {
    let store = store_with(&[
        (&[("__name__", "x"), ("a", "2")], &[(0, 1.0)]),
        (&[("__name__", "x"), ("a", "1")], &[(0, 0.5)]),
    ]);
    let r = Engine::default()
        .range_query(&store, "x", 0, 1000, 1000)
        .unwrap();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(
        json,
        r#"{"resultType":"matrix","result":[{"metric":{"__name__":"x","a":"1"},"values":[[0,"0.5"],[1,"0.5"]]},{"metric":{"__name__":"x","a":"2"},"values":[[0,"1"],[1,"1"]]}]}"#
    );
}

#[test]
fn parse_errors_are_bad_data_and_never_panic() {
    let store = store_with(&[]);
    let e = Engine::default();
    for q in [
        "sum(",
        "rate(x)",
        "x[5m] + 1",
        "",
        "{}",
        "label_replace(x, \"\\xff\", \"\", \"\", \"\")",
    ] {
        if let Err(err) = e.instant_query(&store, q, 0) {
            assert!(
                ["bad_data", "execution"].contains(&err.kind()),
                "{q}: {err}"
            );
        }
    }
    assert_eq!(
        e.range_query(&store, "x", 0, 10, 0).unwrap_err().kind(),
        "bad_data"
    );
}

#[test]
fn extreme_times_offsets_and_resolutions_do_not_panic() {
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * M, i as f64)).collect();
    let store = store_with(&[(&[("__name__", "x")], &samples)]);
    let e = Engine::new(EngineOptions {
        max_samples: 100_000,
        ..Default::default()
    });
    for q in [
        "x offset 100000y",
        "x offset -100000y",
        "rate(x[100000y])",
        "x @ 9999999999",
        "x @ -9999999999",
        "max_over_time(x[1y:1ms])",
        "count_over_time(x[10m:1ms] offset 500y)",
        "topk(1e300, x)",
        "bottomk(-1e300, x)",
        "quantile(Inf, x)",
        "histogram_quantile(0.5, x)",
        "label_replace(x, \"a\", \"$1$2$name\", \"__name__\", \"(.*)\")",
        "round(x, 0)",
        "x % 0",
        "x ^ 1e308 * 1e308",
        "year(vector(1e300))",
        "predict_linear(x[1h], 1e300)",
    ] {
        if let Err(err) = e.instant_query(&store, q, 5 * M) {
            assert!(!err.kind().is_empty(), "{q}");
        }
    }
    assert!(e.instant_query(&store, "x", i64::MAX).is_err());
    assert!(e.range_query(&store, "x", i64::MIN, 0, 1).is_err());
}

#[test]
fn sample_limit_is_an_execution_error() {
    let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 1000, 1.0)).collect();
    let store = store_with(&[(&[("__name__", "x")], &samples)]);
    let e = Engine::new(EngineOptions {
        max_samples: 10,
        ..Default::default()
    });
    let err = e
        .instant_query(&store, "sum_over_time(x[100s])", 100_000)
        .unwrap_err();
    assert_eq!(err.kind(), "execution");
    assert!(err.to_string().contains("too many samples"));
}

#[test]
fn metric_name_is_dropped_by_functions_but_kept_by_last_over_time() {
    let store = store_with(&[(&[("__name__", "x")], &[(0, -1.0)])]);
    let e = Engine::default();
    assert_eq!(
        vector(e.instant_query(&store, "abs(x)", 0).unwrap())[0].0,
        "{}"
    );
    assert_eq!(
        vector(e.instant_query(&store, "last_over_time(x[1m])", 0).unwrap())[0].0,
        "x{}"
    );
}

/// Rough timing of the hot paths on 10k series (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn timing_range_queries_over_10k_series() {
    let store = Store::new(StoreConfig::default());
    let (n_series, n_samples) = (10_000, 240);
    for s in 0..n_series {
        let ls = LabelSet::from_pairs([
            ("__name__", "http_requests_total".to_string()),
            ("job", format!("job{}", s % 10)),
            ("instance", format!("i{s}")),
        ]);
        for k in 0..n_samples {
            store
                .append(&ls, k * 15_000, (k * (s % 7 + 1)) as f64)
                .unwrap();
        }
    }
    let e = Engine::default();
    let end = (n_samples - 1) * 15_000;
    for q in [
        "rate(http_requests_total[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "http_requests_total / on(instance) http_requests_total",
        "http_requests_total",
    ] {
        let t = std::time::Instant::now();
        let r = e.range_query(&store, q, 0, end, 15_000).unwrap();
        let n = match &r.value {
            Value::Matrix(m) => m.len(),
            _ => 0,
        };
        println!("{q}: {n} series in {:?}", t.elapsed());
    }
}

#[test]
fn holt_winters_is_the_old_name_of_double_exponential_smoothing() {
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * M, (i * i) as f64)).collect();
    let store = store_with(&[(&[("__name__", "x")], &samples)]);
    let e = Engine::default();
    let a = vector(
        e.instant_query(&store, "holt_winters(x[10m], 0.5, 0.5)", 9 * M)
            .unwrap(),
    );
    let b = vector(
        e.instant_query(
            &store,
            "double_exponential_smoothing(x[10m], 0.5, 0.5)",
            9 * M,
        )
        .unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 1);
}

#[test]
fn rate_over_a_non_counter_name_adds_an_info() {
    let samples: Vec<(i64, f64)> = (0..5).map(|i| (i * M, i as f64)).collect();
    let store = store_with(&[
        (&[("__name__", "metric")], &samples),
        (&[("__name__", "requests_total")], &samples),
    ]);
    let e = Engine::default();
    let r = e.instant_query(&store, "rate(metric[5m])", 4 * M).unwrap();
    assert_eq!(
        r.infos,
        vec![
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"metric\" (1:6)"
        ]
    );
    let r = e
        .instant_query(&store, "rate(requests_total[5m])", 4 * M)
        .unwrap();
    assert!(r.infos.is_empty());
}

#[test]
fn selectors_parse_into_matcher_sets() {
    let sets = crate::promql::parse_selector(r#"up{job=~"a.*",x!="y"}"#).unwrap();
    let text: Vec<String> = sets[0].iter().map(|m| m.to_string()).collect();
    assert_eq!(text, vec![r#"__name__="up""#, r#"job=~"a.*""#, r#"x!="y""#]);
    assert_eq!(
        crate::promql::parse_selector(r#"{a="1" or b="2"}"#)
            .unwrap()
            .len(),
        2
    );
    for bad in ["sum(up)", "up{", r#"{job=""}"#, "up offset 5m"] {
        assert!(
            crate::promql::parse_selector(bad).is_err(),
            "{bad} accepted"
        );
    }
}

/// Runs `f` on a thread with a 512 KiB stack, a quarter of a default thread's: the
/// engine must not depend on the stack of whoever calls it.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn expressions_nested_up_to_the_depth_limit_evaluate_on_any_stack() {
    let max = QueryLimits::default().max_depth;
    // Every shape that recurses: operator chains, calls, brackets, unary minus.
    let queries = [
        (format!("1{}", " + 1".repeat(max - 1)), max as f64),
        (
            format!("vector(1){}", " + vector(1)".repeat(max - 2)),
            (max - 1) as f64,
        ),
        (
            format!("{}vector(1){}", "abs(".repeat(max - 2), ")".repeat(max - 2)),
            1.0,
        ),
        (
            format!("{}7{}", "(".repeat(max - 1), ")".repeat(max - 1)),
            7.0,
        ),
        (format!("{}1", "-".repeat(max - 2)), 1.0),
    ];
    for (q, want) in queries {
        let got = on_small_stack(move || {
            let store = store_with(&[]);
            let r = Engine::default().instant_query(&store, &q, 0).unwrap();
            match r.value {
                Value::Scalar(_, v) => v,
                Value::Vector(v) => v[0].v,
                other => panic!("{other:?}"),
            }
        });
        assert_eq!(got, want);
    }
}

#[test]
fn the_issues_deep_reproducers_get_a_clear_error() {
    for q in [
        format!("1{}", " + 1".repeat(1200)),
        format!("{}vector(1){}", "abs(".repeat(1000), ")".repeat(1000)),
        format!("{}1{}", "(".repeat(35_000), ")".repeat(35_000)),
    ] {
        let e = on_small_stack(move || {
            let store = store_with(&[]);
            Engine::default().instant_query(&store, &q, 0).unwrap_err()
        });
        assert_eq!(e.kind(), "bad_data");
        assert!(e.to_string().contains("query.max_depth"), "{e}");
    }
}

#[test]
fn an_expression_built_deeper_than_the_limit_is_refused_at_evaluation() {
    // Parsed within a raised limit, evaluated by an engine with the default one.
    let q = format!("1{}", " + 1".repeat(1500));
    let raised = QueryLimits {
        max_depth: 2000,
        ..QueryLimits::default()
    };
    let e = std::thread::spawn(move || {
        let expr = parse_limited(&q, &raised).unwrap();
        let store = store_with(&[]);
        Engine::default()
            .instant_query_expr(&store, &expr, &q, 0)
            .unwrap_err()
    })
    .join()
    .unwrap();
    assert!(e.to_string().contains("query.max_depth"), "{e}");
}

#[test]
fn a_cancelled_query_stops_with_the_canceled_class() {
    let store = store_with(&[(&[("__name__", "up")], &[(0, 1.0)])]);
    let cancel = QueryContext::background();
    cancel.cancel();
    let e = Engine::default()
        .instant_query_with(&store, "sum(up)", 0, &cancel)
        .unwrap_err();
    assert_eq!(e.kind(), "canceled");
    let e = Engine::default()
        .range_query_with(&store, "up", 0, 60_000, 1_000, &cancel)
        .unwrap_err();
    assert_eq!(e.kind(), "canceled");
    // Dropping an armed guard cancels; a disarmed one does not.
    let c = QueryContext::background();
    c.on_drop().disarm();
    assert!(!c.is_cancelled());
    drop(c.on_drop());
    assert!(c.is_cancelled());
}

#[test]
fn a_context_deadline_shortens_the_timeout() {
    let store = store_with(&[]);
    let ctx = QueryContext::with_deadline(std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(2));
    let e = Engine::default()
        .instant_query_with(&store, "vector(1)", 0, &ctx)
        .unwrap_err();
    assert_eq!(e.kind(), "timeout");
}

#[test]
fn the_timeout_covers_parsing() {
    // A long chain takes a while to parse; with a timeout shorter than that, the
    // query times out without being evaluated.
    let engine = Engine::new(EngineOptions {
        timeout: std::time::Duration::from_nanos(1),
        ..EngineOptions::default()
    });
    let store = store_with(&[]);
    let q = format!("1{}", " + 1".repeat(500));
    let e = engine.instant_query(&store, &q, 0).unwrap_err();
    assert_eq!(e.kind(), "timeout");
    assert!(e.to_string().contains("parsing"), "{e}");
}

#[test]
fn a_huge_sliding_window_stops_at_the_timeout() {
    // One series, a million steps, windows of a million points: 10^12 visits that
    // only a check inside the window loop can interrupt.
    let engine = Engine::new(EngineOptions {
        timeout: std::time::Duration::from_millis(200),
        ..EngineOptions::default()
    });
    let store = store_with(&[]);
    let start = std::time::Instant::now();
    let e = engine
        .instant_query(
            &store,
            "sum_over_time(sum_over_time(vector(1)[1000s:1ms])[1000s:1ms])",
            0,
        )
        .unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
