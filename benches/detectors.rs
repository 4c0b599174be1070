//! Detector update throughput: sample updates per second per core over 100k series,
//! fed as remote-write requests carry them (batches of 2,000 series, one sample
//! each). One iteration scores one sample of every series (50 batches).
//!
//! The `detector_update` group measures the benchmark thread's CPU time, not wall
//! time: the machine is shared, and CPU time is what "per core" means. (Other
//! processes still share caches and memory bandwidth, so figures are pessimistic.)

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use closedloop::anomaly::{
    Algorithm, Detector, DetectorSet, DetectorSpec, Outputs, PromDuration, SeriesBatch,
};
use closedloop::storage::{LabelSet, SeriesId, Store, StoreConfig};

const SERIES: usize = 100_000;

/// Criterion measurement: CPU time of the benchmark thread, in nanoseconds.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats CPU nanoseconds as CPU time, and elements per CPU-second.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e3, "µs cpu")
        } else if typical < 1e9 {
            (1e6, "ms cpu")
        } else {
            (1e9, "s cpu")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            _ => 1.0,
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v / 1e6);
        "M/cpu-s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
const BATCH: usize = 2_000;
const STEP_MS: i64 = 15_000;

fn spec(alg: Algorithm, short: bool) -> DetectorSpec {
    let mut s = DetectorSpec::new("bench", "up", alg);
    let d = |x: &str| x.parse::<PromDuration>().ok();
    match alg {
        Algorithm::Zscore => s.window = d("30m"),
        Algorithm::Iqr if short => {
            s.window = d("5m"); // 20 samples at 15 s
            s.capacity = Some(24);
        }
        Algorithm::Iqr => {
            s.window = d("30m"); // 120 samples at 15 s
            s.capacity = Some(128);
        }
        Algorithm::HoltWinters => {
            s.season_samples = Some(60); // 15m at 15s: 480 B of seasonal terms per series
            s.alpha = Some(0.3);
            s.beta = Some(0.01);
            s.gamma = Some(0.1);
        }
        Algorithm::Threshold => {
            s.upper = Some(0.9);
            s.for_ = d("1m");
        }
        Algorithm::Trend => s.window = d("1h"),
        Algorithm::Sequence | Algorithm::Auto | Algorithm::Ensemble => {}
    }
    s
}

/// `spec(alg, short)` read through the anomaly likelihood.
fn with_likelihood(alg: Algorithm, short: bool) -> DetectorSpec {
    let mut s = spec(alg, short);
    s.likelihood = Some(true);
    s
}

struct Fixture {
    det: Detector,
    slots: Vec<u32>,
    vs: Vec<f64>,
    ts: Vec<i64>,
    out: Outputs,
    round: i64,
}

impl Fixture {
    /// `shuffled`: series arrive in a random order unrelated to their slots (worst
    /// case for locality). Otherwise they arrive in the order they were first seen,
    /// as with Prometheus's remote-write shards, which keep each series' position.
    fn new(spec: &DetectorSpec, warm_rounds: i64, shuffled: bool, series: usize) -> Self {
        let mut det = Detector::from_spec(spec).expect("valid bench spec");
        let slots: Vec<u32> = (0..series).map(|_| det.alloc_slot()).collect();
        let mut order = slots.clone();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..order.len()).rev() {
            if !shuffled {
                break;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let vs: Vec<f64> = (0..series)
            .map(|i| ((i * 7919) % 1000) as f64 / 1000.0)
            .collect();
        let mut f = Fixture {
            det,
            slots: order,
            vs,
            ts: vec![0; BATCH],
            out: Outputs::default(),
            round: 0,
        };
        for _ in 0..warm_rounds {
            f.round_all();
        }
        f
    }

    /// One sample for every series, in batches of `BATCH`.
    fn round_all(&mut self) {
        self.round += 1;
        let t = self.round * STEP_MS;
        self.ts.fill(t);
        let wiggle = (self.round % 7) as f64 * 0.01;
        for (b, chunk) in self.slots.chunks(BATCH).enumerate() {
            let vs = &mut self.vs[b * BATCH..b * BATCH + chunk.len()];
            vs.iter_mut().for_each(|v| {
                let y = *v + wiggle;
                *v = if y >= 1.0 { y - 1.0 } else { y };
            });
            self.det
                .update(chunk, &self.ts[..chunk.len()], vs, &mut self.out);
            black_box(&self.out.score);
        }
    }
}

fn detectors(c: &mut Criterion<ThreadCpu>) {
    let mut g = c.benchmark_group("detector_update");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.sample_size(20);
    // the likelihood variants warm past its learning + estimation (388 scores), the
    // sequence ones past their 600-sample warm-up, so the steady-state path is timed
    let plain = |alg| spec(alg, false);
    for (name, spec, warm) in [
        ("zscore", plain(Algorithm::Zscore), 130),
        ("holt_winters", plain(Algorithm::HoltWinters), 250),
        ("iqr", plain(Algorithm::Iqr), 130),
        ("iqr_5m", spec(Algorithm::Iqr, true), 30),
        ("trend", plain(Algorithm::Trend), 20),
        ("threshold", plain(Algorithm::Threshold), 5),
        ("sequence", plain(Algorithm::Sequence), 650),
        ("auto", plain(Algorithm::Auto), 650),
        (
            "zscore+likelihood",
            with_likelihood(Algorithm::Zscore, false),
            400,
        ),
        (
            "trend+likelihood",
            with_likelihood(Algorithm::Trend, false),
            400,
        ),
        (
            "sequence+likelihood",
            with_likelihood(Algorithm::Sequence, false),
            650,
        ),
    ] {
        for shuffled in [false, true] {
            // built on first use, so a filtered run only warms what it measures
            let mut fixture = None;
            let order = if shuffled { "shuffled" } else { "arrival" };
            g.bench_function(format!("{name}/{order}"), |b| {
                let f = fixture.get_or_insert_with(|| Fixture::new(&spec, warm, shuffled, SERIES));
                b.iter(|| f.round_all())
            });
        }
    }
    g.finish();
    // the same with 10,000 series, whose state stays in cache (a detector watching
    // a selection of series rather than all of them)
    const FEW: usize = 10_000;
    let mut g = c.benchmark_group("detector_update_10k");
    g.throughput(Throughput::Elements(FEW as u64));
    g.sample_size(20);
    for (name, spec, warm) in [
        ("zscore", plain(Algorithm::Zscore), 130),
        ("sequence", plain(Algorithm::Sequence), 650),
        ("auto", plain(Algorithm::Auto), 650),
        (
            "zscore+likelihood",
            with_likelihood(Algorithm::Zscore, false),
            400,
        ),
    ] {
        let mut fixture = None;
        g.bench_function(format!("{name}/arrival"), |b| {
            let f = fixture.get_or_insert_with(|| Fixture::new(&spec, warm, false, FEW));
            b.iter(|| f.round_all())
        });
    }
    g.finish();
}

/// The runtime path ingest calls: 10 zscore detectors whose selectors match every
/// series, fed one remote-write-shaped batch (2,000 series, one sample each) at a
/// time. Counts samples appended, not detector updates (10 per sample).
fn detector_set(c: &mut Criterion) {
    let labels: Vec<LabelSet> = (0..SERIES)
        .map(|i| {
            LabelSet::from_pairs([
                ("__name__", "http_requests_total"),
                ("job", if i % 2 == 0 { "api" } else { "web" }),
                ("instance", &format!("10.0.{}.{}:9090", i / 256, i % 256)),
            ])
        })
        .collect();
    let specs: Vec<DetectorSpec> = (0..10)
        .map(|k| {
            let mut s =
                DetectorSpec::new(&format!("d{k}"), "http_requests_total", Algorithm::Zscore);
            s.window = "30m".parse::<PromDuration>().ok();
            s
        })
        .collect();
    let mut g = c.benchmark_group("detector_set");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.sample_size(10);
    for (name, n_detectors, write) in [
        ("10_zscore_all_series", 10, false),
        ("1_zscore_all_series_with_writeback", 1, true),
    ] {
        let store = Store::new(StoreConfig::default());
        let mut set = DetectorSet::new(&specs[..n_detectors]).expect("valid specs");
        let mut run = one_round(&labels, write.then_some(&store));
        for _ in 0..20 {
            run(&mut set);
        }
        g.bench_function(name, |b| b.iter(|| run(&mut set)));
    }
    g.finish();
}

/// A closure feeding one sample of every series through `set` (and writing the
/// outputs to `store` when given).
fn one_round<'a>(
    labels: &'a [LabelSet],
    store: Option<&'a Store>,
) -> impl FnMut(&mut DetectorSet) -> usize + 'a {
    let mut samples: Vec<[(i64, f64); 1]> = vec![[(0, 0.0)]; labels.len()];
    let mut round = 0i64;
    move |set: &mut DetectorSet| {
        round += 1;
        for (i, s) in samples.iter_mut().enumerate() {
            s[0] = (round * STEP_MS, ((i as i64 * 7919 + round) % 1000) as f64);
        }
        let mut events = 0;
        for (b, chunk) in labels.chunks(BATCH).enumerate() {
            let batch: Vec<SeriesBatch<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(j, l)| {
                    let k = b * BATCH + j;
                    SeriesBatch {
                        id: SeriesId(k as u64),
                        labels: l,
                        samples: &samples[k],
                    }
                })
                .collect();
            events += set.process(&batch).len();
            if let Some(store) = store {
                set.write_outputs(store, &batch);
            }
        }
        black_box(events)
    }
}

criterion_group! {
    name = per_core;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = detectors
}
criterion_group!(benches, detector_set);
criterion_main!(per_core, benches);
