//! The series shapes the side-by-side benchmarks send.
//!
//! - [`k8s_labels`]: the ingest benchmark's series, 8 labels as a scraped Kubernetes
//!   metric carries.
//! - [`generate`] and [`Walk`]: series of realistic shape and movement (counters per
//!   method and code, CPU-seconds counters, classic histogram buckets, a memory
//!   gauge, an info metric; 26 series per instance, ten jobs).

use bytes::Bytes;
use closedloop::ingest::proto::v1;

/// The scrape interval of every generated series.
pub const INTERVAL_MS: i64 = 15_000;
pub const SERIES_PER_INSTANCE: usize = 26;
const BUCKETS: [&str; 8] = ["0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];

/// Labels of series `i` of the ingest benchmark, sorted by name.
pub fn k8s_labels(i: usize) -> Vec<v1::Label> {
    [
        ("__name__", format!("metric_{}", i % 100)),
        ("cluster", "prod-eu-1".into()),
        (
            "instance",
            format!("10.0.{}.{}:9100", i / 250 % 256, i % 250),
        ),
        ("job", format!("job_{}", i % 10)),
        ("namespace", format!("ns_{}", i % 20)),
        ("pod", format!("pod-{}", i / 100)),
        ("service", format!("svc_{}", i % 50)),
        ("zone", format!("zone-{}", i % 3)),
    ]
    .into_iter()
    .map(|(n, v)| v1::Label {
        name: Bytes::from_static(n.as_bytes()),
        value: Bytes::from(v),
    })
    .collect()
}

/// The ingest benchmark's load: `rounds` rounds 15 s apart from `t0`, each covering
/// `series` series of [`k8s_labels`] once (series `i` in round `r` has the value
/// `31 i + r`), `per_request` series per snappy-compressed remote-write 1.0 body,
/// as Prometheus sends at steady state.
pub fn k8s_payloads(series: usize, rounds: usize, t0: i64, per_request: usize) -> Vec<Vec<u8>> {
    let labels: Vec<Vec<v1::Label>> = (0..series).map(k8s_labels).collect();
    let mut out = Vec::with_capacity(rounds * series.div_ceil(per_request));
    for round in 0..rounds {
        let t = t0 + round as i64 * INTERVAL_MS;
        for first in (0..series).step_by(per_request) {
            out.push(encode(
                (first..(first + per_request).min(series))
                    .map(|i| v1::TimeSeries {
                        labels: labels[i].clone(),
                        samples: vec![v1::Sample {
                            value: (i * 31 + round) as f64,
                            timestamp: t,
                        }],
                        ..Default::default()
                    })
                    .collect(),
            ));
        }
    }
    out
}

/// A snappy-compressed remote-write 1.0 body.
pub fn encode(timeseries: Vec<v1::TimeSeries>) -> Vec<u8> {
    use prost::Message;
    let req = v1::WriteRequest {
        timeseries,
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

/// A small deterministic generator (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One generated series: labels (sorted) and how its value moves.
pub struct GenSeries {
    pub labels: Vec<v1::Label>,
    pub kind: Kind,
    /// Scrape phase within the interval; never a whole second, so no sample sits on
    /// a window boundary (Prometheus 2.42's windows are closed on the left, 3.x's open).
    pub phase: i64,
}

pub enum Kind {
    /// A counter growing by up to `rate` per interval.
    Counter {
        rate: f64,
    },
    /// A histogram bucket: a share of the instance's observations.
    Bucket {
        share: f64,
    },
    Gauge {
        base: f64,
    },
    Constant,
}

pub fn label(n: &str, v: &str) -> v1::Label {
    v1::Label {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

pub fn generate(n: usize) -> Vec<GenSeries> {
    let instances = n.div_ceil(SERIES_PER_INSTANCE);
    // Whole instances: N rounded up to a multiple of the series per instance.
    let mut out = Vec::with_capacity(instances * SERIES_PER_INSTANCE);
    for i in 0..instances {
        let job = format!("job-{}", i % 10);
        let instance = format!("10.{}.{}.{}:9100", i / 65536 % 256, i / 256 % 256, i % 256);
        // Instances differ in traffic, so their histograms differ.
        let traffic = 1.0 + (i % 5) as f64 * 0.1;
        let phase = {
            let p = (i as i64 * 7_919) % INTERVAL_MS;
            if p % 1000 == 0 {
                p + 137
            } else {
                p
            }
        };
        let mut push = |name: &str, extra: &[(&str, &str)], kind: Kind| {
            let mut labels = vec![
                ("__name__", name.to_owned()),
                ("cluster", "prod-eu-1".to_owned()),
                ("instance", instance.clone()),
                ("job", job.clone()),
            ];
            labels.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            labels.sort();
            out.push(GenSeries {
                labels: labels.iter().map(|(k, v)| label(k, v)).collect(),
                kind,
                phase,
            });
        };
        for method in ["get", "post", "put"] {
            for code in ["200", "500"] {
                let rate = if code == "200" { 40.0 } else { 2.0 };
                push(
                    "http_requests_total",
                    &[("method", method), ("code", code)],
                    Kind::Counter { rate },
                );
            }
        }
        for cpu in ["0", "1"] {
            for mode in ["user", "system", "idle", "iowait"] {
                push(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    Kind::Counter { rate: 15.0 },
                );
            }
        }
        for (b, le) in BUCKETS.iter().enumerate() {
            push(
                "http_request_duration_seconds_bucket",
                &[("le", le)],
                Kind::Bucket {
                    share: traffic * (b + 1) as f64 / BUCKETS.len() as f64,
                },
            );
        }
        push(
            "http_request_duration_seconds_sum",
            &[],
            Kind::Counter { rate: 3.0 },
        );
        push(
            "http_request_duration_seconds_count",
            &[],
            Kind::Bucket { share: traffic },
        );
        push(
            "node_memory_available_bytes",
            &[],
            Kind::Gauge {
                base: 4e9 + (i % 17) as f64 * 1e8,
            },
        );
        let version = format!("1.{}", i % 4);
        push("node_info", &[("version", &version)], Kind::Constant);
    }
    out
}

/// How the generated series move from one scrape to the next: deterministic, the
/// same for every server.
pub struct Walk {
    rng: Rng,
    values: Vec<f64>,
    observations: f64,
}

impl Walk {
    pub fn new(series: &[GenSeries]) -> Self {
        let mut rng = Rng(7);
        // Per series: current value (observations for buckets are per instance, but
        // a share of a shared random walk keeps buckets cumulative and monotone).
        let values = series.iter().map(|_| rng.unit() * 1000.0).collect();
        Walk {
            rng,
            values,
            observations: 0.0,
        }
    }

    /// The value of every series at scrape `k` (call with k = 0, 1, 2, ...).
    pub fn step(&mut self, series: &[GenSeries], k: i64, out: &mut Vec<f64>) {
        self.observations += 50.0 + self.rng.unit() * 50.0;
        out.clear();
        for (s, gs) in series.iter().enumerate() {
            let v = match gs.kind {
                Kind::Counter { rate } => {
                    self.values[s] += self.rng.unit() * rate;
                    self.values[s]
                }
                Kind::Bucket { share } => (self.observations * share).floor(),
                Kind::Gauge { base } => {
                    base + (k as f64 / 20.0).sin() * 3e8 + self.rng.unit() * 1e7
                }
                Kind::Constant => 1.0,
            };
            out.push(v);
        }
    }
}
