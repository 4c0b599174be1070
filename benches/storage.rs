//! criterion micro-benchmarks of the ingest hot path and the index:
//! decode + append per sample, series lookup, matcher selection over 100k series.
//!
//! Run: `cargo bench --bench storage`

use std::hint::black_box;

use bytes::Bytes;
use closedloop::ingest::{self, proto::v1, Protocol, SampleBounds};
use closedloop::storage::{LabelSet, MatchOp, Matcher, Store, StoreConfig};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;

const SERIES: usize = 100_000;
const PER_REQUEST: usize = 2_000;

/// The benchmark's label shape: 8 labels, as a scraped Kubernetes metric carries.
fn labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), format!("metric_{}", i % 100)),
        ("cluster".into(), "prod-eu-1".into()),
        (
            "instance".into(),
            format!("10.0.{}.{}:9100", i / 250 % 256, i % 250),
        ),
        ("job".into(), format!("job_{}", i % 10)),
        ("namespace".into(), format!("ns_{}", i % 20)),
        ("pod".into(), format!("pod-{}", i / 100)),
        ("service".into(), format!("svc_{}", i % 50)),
        ("zone".into(), format!("zone-{}", i % 3)),
    ]
}

/// A remote-write 1.0 request body (decompressed) for series `first..first+n` at `t`.
fn request(first: usize, n: usize, t: i64) -> Bytes {
    let req = v1::WriteRequest {
        timeseries: (first..first + n)
            .map(|i| v1::TimeSeries {
                labels: labels(i)
                    .into_iter()
                    .map(|(n, v)| v1::Label {
                        name: Bytes::from(n),
                        value: Bytes::from(v),
                    })
                    .collect(),
                samples: vec![v1::Sample {
                    value: i as f64,
                    timestamp: t,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    Bytes::from(req.encode_to_vec())
}

fn populated() -> Store {
    let store = Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: SERIES * 2,
        shards: 64,
        ..StoreConfig::default()
    });
    for first in (0..SERIES).step_by(PER_REQUEST) {
        ingest::write(
            &store,
            None,
            Protocol::V1,
            request(first, PER_REQUEST, 0),
            SampleBounds::unbounded(),
        )
        .unwrap();
    }
    store
}

fn bench_ingest(c: &mut Criterion) {
    let store = populated();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(PER_REQUEST as u64));
    let body = request(0, PER_REQUEST, 0);
    let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let mut t = 0i64;
    // One request of 2,000 existing series, one sample each, as Prometheus sends.
    g.bench_function("decode_append_existing_series", |b| {
        b.iter_batched(
            || {
                t += 1000;
                request(0, PER_REQUEST, t)
            },
            |body| {
                ingest::write(&store, None, Protocol::V1, body, SampleBounds::unbounded()).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("snappy_decompress", |b| {
        b.iter(|| ingest::decompress(black_box(&compressed), 1 << 30).unwrap())
    });
    g.finish();
}

fn bench_index(c: &mut Criterion) {
    let store = populated();
    let mut g = c.benchmark_group("index");
    let existing = LabelSet::from_pairs(labels(12_345));
    let mut t = 0;
    g.bench_function("append_one_existing_series", |b| {
        b.iter(|| {
            t += 1;
            store.append(&existing, t, 1.0).unwrap()
        })
    });
    let selectors: Vec<(&str, Vec<Matcher>)> = vec![
        ("eq_name_1k", vec![Matcher::equal("__name__", "metric_7")]),
        (
            "eq_name_and_job_1k",
            vec![
                Matcher::equal("__name__", "metric_7"),
                Matcher::equal("job", "job_7"),
            ],
        ),
        (
            "eq_name_regex_zone_333",
            vec![
                Matcher::equal("__name__", "metric_7"),
                Matcher::new(MatchOp::Regex, "zone", "zone-(0|1)").unwrap(),
            ],
        ),
        (
            "regex_pod_prefix_1k",
            vec![Matcher::new(MatchOp::Regex, "pod", "pod-1.").unwrap()],
        ),
        (
            "literal_alternation_3k",
            vec![Matcher::new(MatchOp::Regex, "service", "svc_1|svc_2|svc_3").unwrap()],
        ),
        (
            "not_equal_all_but_10k",
            vec![
                Matcher::equal("cluster", "prod-eu-1"),
                Matcher::new(MatchOp::NotEqual, "job", "job_1").unwrap(),
            ],
        ),
    ];
    for (name, matchers) in &selectors {
        g.bench_function(format!("select_{name}"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                store.visit(matchers, i64::MIN, i64::MAX, |_, _, _| n += 1);
                n
            })
        });
    }
    g.finish();
}

/// The ingest path with 10 detectors watching every series (the issue's throughput
/// check): without detectors, then with them, outputs written back to the store.
fn bench_ingest_with_detectors(c: &mut Criterion) {
    use closedloop::anomaly::{Algorithm, Analyzer, DetectorSpec, IncidentConfig, OutputKind};
    let mut g = c.benchmark_group("ingest_detectors");
    g.throughput(Throughput::Elements(PER_REQUEST as u64));
    g.sample_size(20);
    let algorithms = [
        Algorithm::Zscore,
        Algorithm::Iqr,
        Algorithm::HoltWinters,
        Algorithm::Trend,
        Algorithm::Zscore,
        Algorithm::Iqr,
        Algorithm::HoltWinters,
        Algorithm::Trend,
        Algorithm::Zscore,
        Algorithm::Trend,
    ];
    // (label, detectors, outputs written: None = all that apply)
    let runs: [(&str, usize, Option<Vec<OutputKind>>); 4] = [
        ("0_detectors", 0, None),
        ("10_detectors_no_outputs", 10, Some(vec![])),
        ("10_detectors_score_only", 10, Some(vec![OutputKind::Score])),
        ("10_detectors_all_outputs", 10, None),
    ];
    for (label, detectors, outputs) in runs {
        let store = Store::new(StoreConfig {
            retention_ms: 3_600_000,
            max_series: SERIES * 50,
            shards: 64,
            ..StoreConfig::default()
        });
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("d", "d"),
            &["detector", "severity"],
        )
        .unwrap();
        let dropped = prometheus::IntCounter::new("o", "o").unwrap();
        let analyzer = Analyzer::new(counter, dropped, IncidentConfig::default());
        let specs: Vec<DetectorSpec> = algorithms[..detectors]
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let mut s = DetectorSpec::new(&format!("d{i}"), r#"{cluster="prod-eu-1"}"#, a);
                if a == Algorithm::HoltWinters {
                    s.season_samples = Some(24);
                }
                s.outputs = outputs.clone();
                s
            })
            .collect();
        analyzer.reload(&specs).unwrap();
        // 10k series in flight: 5 requests per 15 s round, as one Prometheus sends.
        // Warm up past every detector's warm-up (Holt-Winters: two seasons), so the
        // measurement sees the steady state: every output series exists.
        let mut k = 0usize;
        while k < 5 * 60 {
            k += 1;
            let body = request((k % 5) * PER_REQUEST, PER_REQUEST, (k / 5) as i64 * 15_000);
            ingest::write(
                &store,
                Some(&analyzer),
                Protocol::V1,
                body,
                SampleBounds::unbounded(),
            )
            .unwrap();
        }
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    k += 1;
                    request((k % 5) * PER_REQUEST, PER_REQUEST, (k / 5) as i64 * 15_000)
                },
                |body| {
                    ingest::write(
                        &store,
                        Some(&analyzer),
                        Protocol::V1,
                        body,
                        SampleBounds::unbounded(),
                    )
                    .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_ingest,
    bench_index,
    bench_ingest_with_detectors
);
criterion_main!(benches);
