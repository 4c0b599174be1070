//! criterion micro-benchmarks of the PromQL engine's hot paths over an in-memory
//! store of realistic size: 10,010 series (385 instances × 26 series, ten jobs) at a
//! 15 s interval over 70 minutes, as `query_compare` loads.
//!
//! Each case is one query through `Engine` (parse, select, evaluate; no HTTP, no JSON),
//! as an instant query and as a range query over the last hour at 15 s steps:
//! rate over a window, sum by, one-to-one matching and group_left matching; and the
//! JSON encoding of a large range result.
//!
//! Run: `cargo bench --bench promql`
//! Profile one case: `cargo bench --bench promql -- --profile-time 20 'rate/range'`
//! under `perf record --call-graph dwarf`.

use std::hint::black_box;

use closedloop::promql::{Engine, EngineOptions};
use closedloop::storage::{LabelSet, Store, StoreConfig};
use criterion::{criterion_group, criterion_main, Criterion};

const INSTANCES: usize = 385;
const SAMPLES: i64 = 280;
const INTERVAL_MS: i64 = 15_000;
const ORIGIN_MS: i64 = 1_700_000_000_000;

/// The store: per instance six request counters (method × code), eight CPU counters,
/// eight histogram buckets with sum and count, a memory gauge and an info metric.
fn populated() -> Store {
    let store = Store::new(StoreConfig {
        retention_ms: i64::MAX / 4,
        ..Default::default()
    });
    let mut series: Vec<(LabelSet, f64)> = Vec::new();
    for i in 0..INSTANCES {
        let job = format!("job-{}", i % 10);
        let instance = format!("10.0.{}.{}:9100", i / 256, i % 256);
        let base = |name: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("__name__", name.to_owned()),
                ("cluster", "prod-eu-1".to_owned()),
                ("instance", instance.clone()),
                ("job", job.clone()),
            ];
            pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            LabelSet::from_pairs(pairs)
        };
        for method in ["get", "post", "put"] {
            for code in ["200", "500"] {
                let rate = if code == "200" { 40.0 } else { 2.0 };
                series.push((
                    base("http_requests_total", &[("method", method), ("code", code)]),
                    rate,
                ));
            }
        }
        for cpu in ["0", "1"] {
            for mode in ["user", "system", "idle", "iowait"] {
                series.push((
                    base("node_cpu_seconds_total", &[("cpu", cpu), ("mode", mode)]),
                    15.0,
                ));
            }
        }
        for le in ["0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"] {
            series.push((
                base("http_request_duration_seconds_bucket", &[("le", le)]),
                9.0,
            ));
        }
        series.push((base("http_request_duration_seconds_sum", &[]), 3.0));
        series.push((base("http_request_duration_seconds_count", &[]), 9.0));
        series.push((base("node_memory_available_bytes", &[]), 0.0));
        series.push((
            base("node_info", &[("version", &format!("1.{}", i % 4))]),
            0.0,
        ));
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut unit = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut values = vec![0.0; series.len()];
    for k in 0..SAMPLES {
        for (s, (labels, rate)) in series.iter().enumerate() {
            values[s] = if *rate > 0.0 {
                values[s] + unit() * rate
            } else {
                4e9 + (k as f64 / 20.0).sin() * 3e8 + unit() * 1e7
            };
            let phase = (s as i64 / 26 * 7_919) % INTERVAL_MS + 1;
            store
                .append(labels, ORIGIN_MS + k * INTERVAL_MS + phase, values[s])
                .expect("append");
        }
    }
    store
}

const CASES: &[(&str, &str)] = &[
    ("rate", "rate(http_requests_total[5m])"),
    ("sum_by", "sum by (job, code) (rate(http_requests_total[5m]))"),
    (
        "match_one_to_one",
        "rate(http_requests_total{code=\"500\"}[5m]) / ignoring(code) rate(http_requests_total{code=\"200\"}[5m])",
    ),
    (
        "match_group_left",
        "rate(http_requests_total[5m]) * on(job, instance) group_left(version) node_info",
    ),
];

fn engine_benches(c: &mut Criterion) {
    let store = populated();
    let engine = Engine::new(EngineOptions::default());
    let end = ORIGIN_MS + SAMPLES * INTERVAL_MS - 60_000;
    let start = end - 3_600_000;
    for (name, query) in CASES {
        let mut group = c.benchmark_group(*name);
        group.sample_size(20);
        group.bench_function("instant", |b| {
            b.iter(|| black_box(engine.instant_query(&store, query, end).unwrap()))
        });
        group.bench_function("range", |b| {
            b.iter(|| {
                black_box(
                    engine
                        .range_query(&store, query, start, end, 15_000)
                        .unwrap(),
                )
            })
        });
        group.finish();
    }
    // Encoding a large range result as the query API does (2,310 series × 241 points).
    let result = engine
        .range_query(&store, CASES[0].1, start, end, 15_000)
        .unwrap();
    let mut group = c.benchmark_group("json");
    group.sample_size(20);
    group.bench_function("rate_range_result", |b| {
        b.iter(|| black_box(serde_json::to_vec(&result.value).unwrap()))
    });
    group.finish();
}

/// Parsing at the edge of the limits: promql-parser's type checks are quadratic in
/// the length of operator chains, so these are the slowest texts the service
/// accepts (and one it refuses, parsed directly). Run:
/// `cargo bench --bench promql -- limits`.
fn limit_benches(c: &mut Criterion) {
    let limits = closedloop::promql::QueryLimits::default();
    let nest = |groups: usize, terms: usize| {
        let group = format!("(1{})", " + 1".repeat(terms - 1));
        vec![group; groups].join(" + ")
    };
    // One chain as long as the depth limit allows.
    let chain = format!("1{}", " + 1".repeat(limits.max_depth - 1));
    // Chains of chains just under the parse-work budget.
    let accepted = nest(120, 120);
    // Refused by the budget (within the length and depth limits).
    let refused = nest(260, 250);
    let mut g = c.benchmark_group("limits");
    g.sample_size(10);
    for (name, text, ok) in [
        ("chain_at_max_depth", &chain, true),
        ("nest_120x120_accepted", &accepted, true),
        ("nest_260x250_refused_parsed_anyway", &refused, false),
    ] {
        assert_eq!(closedloop::promql::parse(text).is_ok(), ok, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| black_box(promql_parser::parser::parse(text).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, engine_benches, limit_benches);
criterion_main!(benches);
