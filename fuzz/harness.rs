//! The fuzz targets' bodies, shared by cargo-fuzz (`fuzz/fuzz_targets/*.rs`, long
//! runs outside the suite) and the suite's bounded run (`tests/fuzz.rs`, which also
//! replays every input kept under `fuzz/regressions/`).
//!
//! Each body feeds one input to a public entry point and checks what must hold for
//! any input: no panic, no stack overflow, no runaway time or memory (the runner's
//! limits catch those), and a few cross-checks against the reference decoders.

#![allow(dead_code, unreachable_pub)] // each runner uses its own part

use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use closedloop::ingest::proto::{v1, v2};
use closedloop::ingest::{
    write_with, IngestError, LabelLimits, Protocol, SampleBounds, WriteLimits,
};
use closedloop::promql::{Engine, EngineOptions};
use closedloop::storage::{LabelSet, Store, StoreConfig, STALE_NAN_BITS};
use prost::Message;

fn small_store() -> Store {
    Store::new(StoreConfig {
        retention_ms: i64::MAX / 4,
        max_series: 64,
        shards: 2,
        ..Default::default()
    })
}

/// Remote write 1.0 or 2.0: the decoded body of a request, written to an empty
/// store with tight label limits.
pub fn remote_write(protocol: Protocol, data: &[u8]) {
    let store = small_store();
    let limits = WriteLimits {
        bounds: SampleBounds::unbounded(),
        labels: LabelLimits {
            max_labels: 8,
            max_name_bytes: 32,
            max_value_bytes: 64,
        },
    };
    let ours = write_with(&store, None, protocol, data, limits);
    // Where the generated decoder accepts the message, ours must too (it may accept
    // more: it skips the contents of histograms and exemplars).
    let reference_series = match protocol {
        Protocol::V1 => v1::WriteRequest::decode(data)
            .ok()
            .map(|r| r.timeseries.len()),
        Protocol::V2 => v2::Request::decode(data).ok().map(|r| r.timeseries.len()),
    };
    match (&ours, reference_series) {
        (Err(IngestError::Protobuf(e)), Some(_)) => {
            panic!("prost decodes this {protocol:?} message but ingest says: {e}")
        }
        (Ok(outcome), Some(n)) => assert_eq!(outcome.series_received, n as u64),
        _ => {}
    }
    if let Ok(outcome) = &ours {
        assert!(outcome.samples_written() <= outcome.samples_received);
        assert!(store.series_count() as u64 <= outcome.series_received);
    }
}

/// A rule file: loaded strictly and in `check rules` mode; every template of what
/// loads is expanded once.
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yml");
    let strict = closedloop::rules::file::parse_file(text, path, Default::default());
    let all = closedloop::rules::file::parse_file_all(text, path);
    // The two modes agree on whether the file is valid.
    assert_eq!(
        strict.is_ok(),
        all.is_ok(),
        "strict and check modes disagree"
    );
    if let Ok(groups) = strict {
        let data = closedloop::rules::template::TemplateData {
            labels: [("instance".to_owned(), "a:1".to_owned())].into(),
            external_labels: Default::default(),
            external_url: "http://x".to_owned(),
            value: 1.5,
            query: None,
        };
        for g in &groups {
            for r in &g.rules {
                for (_, _, t) in r.labels.iter().chain(&r.annotations) {
                    let _ = t.expand(&data);
                }
            }
        }
    }
}

/// A test series: labels, and its value at sample `i`.
type TestSeries = (&'static [(&'static str, &'static str)], fn(i64) -> f64);

/// The store PromQL inputs run against: counters with a reset, gauges with NaN,
/// a staleness marker, histogram buckets, two jobs.
fn promql_store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = small_store();
        let series: [TestSeries; 7] = [
            (
                &[("__name__", "up"), ("job", "api"), ("instance", "a")],
                |_| 1.0,
            ),
            (
                &[("__name__", "up"), ("job", "db"), ("instance", "b")],
                |i| (i % 2) as f64,
            ),
            (
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "200"),
                ],
                |i| (i % 7 * 10) as f64,
            ),
            (&[("__name__", "temp"), ("job", "db")], |i| {
                if i % 5 == 0 {
                    f64::NAN
                } else {
                    i as f64 * -0.5
                }
            }),
            (&[("__name__", "rq_bucket"), ("le", "0.1")], |i| i as f64),
            (&[("__name__", "rq_bucket"), ("le", "1")], |i| {
                i as f64 * 2.0
            }),
            (&[("__name__", "rq_bucket"), ("le", "+Inf")], |i| {
                i as f64 * 3.0
            }),
        ];
        for (labels, value) in series {
            let ls = LabelSet::from_pairs(labels.iter().copied());
            for i in 0..40 {
                let _ = s.append(&ls, i * 15_000, value(i));
            }
        }
        let stale = LabelSet::from_pairs([("__name__", "up"), ("job", "api"), ("instance", "a")]);
        let _ = s.append(&stale, 40 * 15_000, f64::from_bits(STALE_NAN_BITS));
        s
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(EngineOptions {
            max_samples: 200_000,
            timeout: std::time::Duration::from_secs(2),
            ..EngineOptions::default()
        })
    })
}

/// A PromQL query: the input's first byte chooses raw text or an expression
/// generated from the rest; it runs as an instant and as a range query.
pub fn promql(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let query = if mode % 4 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let mut g = Gen {
            u: &mut u,
            depth: 0,
        };
        match g.expr(Kind::Vector) {
            Ok(q) => q,
            Err(_) => return,
        }
    };
    let t = i64::from(mode) * 7_000;
    let _ = engine().instant_query(promql_store(), &query, t);
    let _ = engine().range_query(promql_store(), &query, 0, 600_000, 15_000 + t);
}

/// The type of expression to generate.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Scalar,
    Vector,
    Matrix,
    Str,
}

/// Builds PromQL text from fuzz bytes, mostly well-typed so that evaluation (not
/// only the parser) is exercised.
struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    depth: usize,
}

type R<T> = arbitrary::Result<T>;

const METRICS: &[&str] = &["up", "http_requests_total", "temp", "rq_bucket", "nope"];
const LABELS: &[&str] = &["job", "instance", "code", "le"];
const VALUES: &[&str] = &[
    "api", "db", "a", "200", "+Inf", "", ".*", "a|b", "[", "(?i)API",
];
const DURATIONS: &[&str] = &["1m", "5m", "30s", "1h", "15s", "10m", "1ms"];
const NUMBERS: &[&str] = &[
    "0", "1", "-1", "0.5", "2", "NaN", "Inf", "-Inf", "1e308", "3",
];
const BINARY: &[&str] = &[
    "+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless", "atan2",
];
const AGGREGATIONS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "group",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];
/// Functions by argument kinds.
const FUNCTIONS: &[(&str, &[Kind])] = {
    use Kind::*;
    &[
        ("rate", &[Matrix]),
        ("irate", &[Matrix]),
        ("increase", &[Matrix]),
        ("delta", &[Matrix]),
        ("idelta", &[Matrix]),
        ("deriv", &[Matrix]),
        ("changes", &[Matrix]),
        ("resets", &[Matrix]),
        ("predict_linear", &[Matrix, Scalar]),
        ("holt_winters", &[Matrix, Scalar, Scalar]),
        ("avg_over_time", &[Matrix]),
        ("sum_over_time", &[Matrix]),
        ("count_over_time", &[Matrix]),
        ("max_over_time", &[Matrix]),
        ("stddev_over_time", &[Matrix]),
        ("last_over_time", &[Matrix]),
        ("present_over_time", &[Matrix]),
        ("absent_over_time", &[Matrix]),
        ("quantile_over_time", &[Scalar, Matrix]),
        ("abs", &[Vector]),
        ("ceil", &[Vector]),
        ("exp", &[Vector]),
        ("ln", &[Vector]),
        ("sqrt", &[Vector]),
        ("round", &[Vector, Scalar]),
        ("clamp", &[Vector, Scalar, Scalar]),
        ("clamp_min", &[Vector, Scalar]),
        ("histogram_quantile", &[Scalar, Vector]),
        ("label_replace", &[Vector, Str, Str, Str, Str]),
        ("label_join", &[Vector, Str, Str, Str, Str]),
        ("sort_desc", &[Vector]),
        ("timestamp", &[Vector]),
        ("absent", &[Vector]),
        ("scalar", &[Vector]),
        ("vector", &[Scalar]),
        ("sgn", &[Vector]),
        ("day_of_week", &[Vector]),
        ("time", &[]),
        ("pi", &[]),
    ]
};

impl Gen<'_, '_> {
    fn pick<'s>(&mut self, from: &[&'s str]) -> R<&'s str> {
        Ok(*self.u.choose(from)?)
    }

    fn selector(&mut self) -> R<String> {
        if self.u.ratio(1, 10)? {
            return Ok(format!(
                "{{__name__=~\"{}\"}}",
                self.pick(&["up|temp", "rq_.*", ".+"])?
            ));
        }
        let mut s = self.pick(METRICS)?.to_owned();
        if self.u.arbitrary::<bool>()? {
            let op = self.pick(&["=", "!=", "=~", "!~"])?;
            s = format!(
                "{s}{{{}{op}\"{}\"}}",
                self.pick(LABELS)?,
                self.pick(VALUES)?
            );
        }
        Ok(s)
    }

    fn modifiers(&mut self, mut s: String) -> R<String> {
        if self.u.ratio(1, 6)? {
            s = format!("{s} offset {}", self.pick(&["0s", "-1m", "5m", "1h"])?);
        }
        if self.u.ratio(1, 8)? {
            s = format!("{s} @ {}", self.pick(&["start()", "end()", "100", "-5"])?);
        }
        Ok(s)
    }

    fn expr(&mut self, kind: Kind) -> R<String> {
        self.depth += 1;
        let deep = self.depth > 12;
        let out = match kind {
            Kind::Str => Ok(format!("\"{}\"", self.pick(VALUES)?)),
            Kind::Scalar if deep || self.u.ratio(1, 2)? => Ok(self.pick(NUMBERS)?.to_owned()),
            Kind::Matrix if deep || self.u.ratio(2, 3)? => {
                let s = format!("{}[{}]", self.selector()?, self.pick(DURATIONS)?);
                self.modifiers(s)
            }
            Kind::Matrix => {
                let inner = self.expr(Kind::Vector)?;
                let s = format!(
                    "({inner})[{}:{}]",
                    self.pick(DURATIONS)?,
                    self.pick(&["", "1m", "15s", "7s"])?
                );
                self.modifiers(s)
            }
            Kind::Vector if deep => self.selector(),
            Kind::Scalar | Kind::Vector => match self.u.int_in_range(0..=6)? {
                0 => {
                    let s = self.selector()?;
                    self.modifiers(s)
                }
                1 | 2 => {
                    let (l, r) = if kind == Kind::Scalar {
                        (Kind::Scalar, Kind::Scalar)
                    } else {
                        (Kind::Vector, *self.u.choose(&[Kind::Vector, Kind::Scalar])?)
                    };
                    let lhs = self.expr(l)?;
                    let rhs = self.expr(r)?;
                    let op = self.pick(BINARY)?;
                    let comparison = ["==", "!=", ">", "<", ">=", "<="].contains(&op);
                    let both_vectors = l == Kind::Vector && r == Kind::Vector;
                    let modifier = match self.u.int_in_range(0..=5)? {
                        0 if comparison => " bool".to_owned(),
                        1 if both_vectors => format!(" on({})", self.pick(LABELS)?),
                        2 if both_vectors => {
                            format!(" ignoring({}) group_left", self.pick(LABELS)?)
                        }
                        3 if both_vectors => " on() group_right(job)".to_owned(),
                        _ => String::new(),
                    };
                    Ok(format!("{lhs} {op}{modifier} {rhs}"))
                }
                3 => {
                    let op = self.pick(AGGREGATIONS)?;
                    let param = match op {
                        "topk" | "bottomk" | "quantile" | "limitk" | "limit_ratio" => {
                            format!("{}, ", self.expr(Kind::Scalar)?)
                        }
                        "count_values" => "\"v\", ".to_owned(),
                        _ => String::new(),
                    };
                    let grouping = match self.u.int_in_range(0..=2)? {
                        0 => format!(" by ({})", self.pick(LABELS)?),
                        1 => format!(" without ({})", self.pick(LABELS)?),
                        _ => String::new(),
                    };
                    let inner = self.expr(Kind::Vector)?;
                    Ok(format!("{op}{grouping}({param}{inner})"))
                }
                4 => Ok(format!("-({})", self.expr(kind)?)),
                _ => {
                    let (name, args) = *self.u.choose(FUNCTIONS)?;
                    let args = args.iter().map(|&k| self.expr(k)).collect::<R<Vec<_>>>()?;
                    Ok(format!("{name}({})", args.join(", ")))
                }
            },
        };
        self.depth -= 1;
        out
    }
}
