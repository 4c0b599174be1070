//! `closedloop rca-bench`: the fault-injection benchmark of root-cause analysis.
//!
//! Each case is a [`Scenario`] (10–50 services, one injected fault, distractors)
//! streamed scrape by scrape through the same path production uses: a batch append
//! into a real [`Store`], the anomaly [`Analyzer`] scoring p99 latencies as they
//! arrive (a z-score detector) and `up` (a threshold), two alerting expressions
//! (error ratio > 5 %, `up == 0`) evaluated by the PromQL engine every 30 s, the
//! topology rediscovered from the store every minute, and the incident correlator
//! grouping events and alerts. Eight minutes after the fault, the incident with the
//! most components that was active since the fault is analysed: its evidence is
//! gathered once and ranked by the runtime's method and by the two baselines
//! (earliest onset, largest robust z-score of change). A case without such an
//! incident is a miss for every method.
//!
//! Measures, as RCAEval defines them: AC@k = share of cases whose true cause is
//! among the top k; Avg@5 = mean of AC@1..AC@5; plus the analysis time (gather and
//! rank) of the runtime's method.

use std::io::Write;
use std::time::Instant;

use crate::anomaly::{Analyzer, DetectorSpec, IncidentConfig, SeriesBatch};
use crate::promql::{Engine, EngineOptions, Value};
use crate::rca::analysis::{self, Method, Request};
use crate::rca::discover;
use crate::rca::identity::Identity;
use crate::rca::incident::{Correlator, Signal};
use crate::rca::{ComponentId, RcaConfig, Topology};
use crate::storage::{SeriesId, SeriesWrite, Store, StoreConfig};

use super::world::{FaultKind, Scenario};

/// Steps after the fault until the analysis (8 minutes).
const POST_STEPS: usize = 32;

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Number of cases (fault types rotate, so a multiple of 6 balances them).
    pub cases: usize,
    /// Base seed; case `i` uses a seed derived from it and `i`.
    pub seed: u64,
    pub min_services: usize,
    pub max_services: usize,
    /// Print one line per case.
    pub verbose: bool,
    /// Run only the case with this index (for investigating one case).
    pub only: Option<usize>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            cases: 120,
            seed: 1,
            min_services: 10,
            max_services: 50,
            verbose: false,
            only: None,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("detector setup: {0}")]
    Detectors(String),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

/// The ranks (1-based) of the true cause per method; `None` = not ranked.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub seed: u64,
    pub kind: FaultKind,
    pub services: usize,
    pub cause: String,
    pub detected: bool,
    pub candidates: usize,
    /// Components in the topology the analysis ran on (services, workloads, pods,
    /// nodes).
    pub components: usize,
    pub ranks: [Option<usize>; 3],
    /// Gather + rank of the runtime's method (ms), first run.
    pub analysis_ms: f64,
    /// The fastest of five runs (ms): the cost with the least interference from
    /// other processes on a shared machine.
    pub analysis_best_ms: f64,
    /// CPU time the analysing thread spent in the first run (ms), from the kernel's
    /// scheduler statistics; `NaN` where they are not available. Unlike the wall
    /// time, it does not grow when other processes take the CPU.
    pub analysis_cpu_ms: f64,
    pub confidence: f64,
    /// Whether the cause's measured onset was strictly the earliest among the
    /// abnormal candidates.
    pub cause_first: bool,
    /// The runtime method's top three and the cause, with their features (for
    /// `--verbose`).
    pub notes: String,
}

const METHODS: [Method; 3] = [Method::Bayes, Method::EarliestOnset, Method::LargestChange];

fn detectors() -> Result<Vec<DetectorSpec>, BenchError> {
    let specs: Vec<DetectorSpec> = serde_yaml::from_str(
        r#"
- name: latency_p99
  selector: 'http_request_duration_seconds{quantile="0.99"}'
  algorithm: zscore
  window: 30m
  threshold: 4
  warmup: 100
  outputs: [anomaly_score]
- name: memory
  selector: container_memory_working_set_bytes
  algorithm: zscore
  window: 30m
  threshold: 5
  warmup: 100
  outputs: [anomaly_score]
- name: target_down
  selector: up
  algorithm: threshold
  lower: 0.5
  severity: critical
  outputs: [anomaly_score]
"#,
    )
    .map_err(|e| BenchError::Detectors(e.to_string()))?;
    for s in &specs {
        s.validate()
            .map_err(|e| BenchError::Detectors(e.to_string()))?;
    }
    Ok(specs)
}

/// The alerting expressions, with their alert names.
const ALERTS: [(&str, &str); 2] = [
    (
        "HighErrorRatio",
        r#"sum by (service) (rate(http_requests_total{code="500"}[2m])) / sum by (service) (rate(http_requests_total[2m])) > 0.05"#,
    ),
    ("TargetDown", "up == 0"),
];

fn case_seed(base: u64, i: usize) -> u64 {
    // SplitMix64 of (base, i): distinct, well-spread case seeds.
    let mut z = base
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64 + 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn topology(store: &Store, cfg: &RcaConfig, now: i64) -> Topology {
    let (mut b, _) = discover::discover(store, &cfg.discovery, now);
    b.link_services_by_name();
    b.build(cfg.discovery.max_components, cfg.discovery.max_edges, now)
}

/// Runs one case.
pub fn run_case(seed: u64, services: usize, kind: FaultKind) -> Result<CaseResult, BenchError> {
    let sc = Scenario::generate(seed, services, kind, POST_STEPS);
    let store = Store::new(StoreConfig {
        retention_ms: 3 * 3600 * 1000,
        max_series: 1_000_000,
        ..Default::default()
    });
    let registry = prometheus::Registry::new();
    let detections = prometheus::IntCounterVec::new(
        prometheus::Opts::new("detections", "d"),
        &["detector", "severity"],
    )
    .map_err(|e| BenchError::Detectors(e.to_string()))?;
    registry
        .register(Box::new(detections.clone()))
        .map_err(|e| BenchError::Detectors(e.to_string()))?;
    let dropped = prometheus::IntCounter::new("dropped", "d")
        .map_err(|e| BenchError::Detectors(e.to_string()))?;
    let analyzer = Analyzer::new(detections, dropped, IncidentConfig::default());
    analyzer
        .reload(&detectors()?)
        .map_err(|e| BenchError::Detectors(e.to_string()))?;
    let mut events = analyzer.subscribe();
    let cfg = RcaConfig::default();
    let mut correlator = Correlator::new(cfg.incidents.clone());
    let mut topo = Topology::default();
    let engine = Engine::new(EngineOptions::default());
    sc.scrape(|k, samples| {
        let now = sc.t(k);
        let points: Vec<[(i64, f64); 1]> = samples.iter().map(|(_, v)| [(now, *v)]).collect();
        let writes: Vec<SeriesWrite<'_>> = samples
            .iter()
            .zip(&points)
            .map(|((labels, _), p)| SeriesWrite {
                labels,
                samples: p.as_slice(),
            })
            .collect();
        let mut stored: Vec<(usize, SeriesId, crate::storage::LabelSet)> = Vec::new();
        store.append_batch_observed(&writes, &mut |i, id, labels| {
            stored.push((i, id.id(), labels.clone()))
        });
        let batch: Vec<SeriesBatch<'_>> = stored
            .iter()
            .map(|(i, id, labels)| SeriesBatch {
                id: *id,
                labels,
                samples: writes[*i].samples,
            })
            .collect();
        analyzer.observe(&store, &batch);
        if k % 4 == 0 {
            topo = topology(&store, &cfg, now);
        }
        let identity = Identity::new(&topo, &cfg.identity.service_labels);
        while let Ok(ev) = events.try_recv() {
            if let Some(c) = identity.of_series(&ev.labels) {
                let signal = Signal::Anomaly {
                    detector: ev.detector.clone(),
                    severity: ev.severity.clone(),
                };
                correlator.record(&topo, &c, ev.t, &signal);
            }
        }
        if k % 2 == 0 && k >= 40 {
            for (name, expr) in ALERTS {
                let Ok(result) = engine.instant_query(&store, expr, now) else {
                    continue;
                };
                if let Value::Vector(samples) = result.value {
                    for s in samples {
                        if let Some(c) = identity.of_series(&s.labels) {
                            let signal = Signal::Alert {
                                name: name.into(),
                                severity: "critical".into(),
                            };
                            correlator.record(&topo, &c, now, &signal);
                        }
                    }
                }
            }
        }
    });
    let now = sc.t(sc.steps - 1);
    let cause = ComponentId::service(sc.cause());
    let incident = correlator
        .list()
        .into_iter()
        .filter(|i| i.last_ms >= sc.fault_ms())
        .max_by(|a, b| {
            a.members
                .len()
                .cmp(&b.members.len())
                .then_with(|| b.start_ms.cmp(&a.start_ms))
        })
        .cloned();
    let mut result = CaseResult {
        seed,
        kind,
        services,
        cause: sc.cause().to_string(),
        detected: incident.is_some(),
        candidates: 0,
        components: topo.len(),
        ranks: [None; 3],
        analysis_ms: 0.0,
        analysis_best_ms: 0.0,
        analysis_cpu_ms: f64::NAN,
        confidence: 0.0,
        cause_first: false,
        notes: String::new(),
    };
    let Some(incident) = incident else {
        return Ok(result);
    };
    let touches = incident.touches();
    let req = Request {
        incident: incident.id,
        touched: &touches,
        start_ms: incident.start_ms,
        now_ms: now,
    };
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    let gathered = analysis::gather(&store, &topo, &cfg, &req);
    let bayes = Method::Bayes.rank(&gathered.evidence);
    result.analysis_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let (Some(a), Some(b)) = (cpu_before, thread_cpu_ns()) {
        result.analysis_cpu_ms = b.saturating_sub(a) as f64 / 1e6;
    }
    result.analysis_best_ms = result.analysis_ms;
    for _ in 0..4 {
        let again = Instant::now();
        let g = analysis::gather(&store, &topo, &cfg, &req);
        let _ = Method::Bayes.rank(&g.evidence);
        result.analysis_best_ms = result
            .analysis_best_ms
            .min(again.elapsed().as_secs_f64() * 1000.0);
    }
    let ev = &gathered.evidence;
    result.candidates = ev.candidates.len();
    result.confidence = bayes.first().map_or(0.0, |r| r.confidence);
    for (m, method) in METHODS.iter().enumerate() {
        let ranked = if *method == Method::Bayes {
            bayes.clone()
        } else {
            method.rank(ev)
        };
        result.ranks[m] = ranked
            .iter()
            .position(|r| ev.candidates[r.index].id == cause)
            .map(|p| p + 1);
    }
    let p = crate::rca::rank::RankParams::default();
    let fault = sc.fault_ms();
    let describe = |i: usize| {
        let strongest: Vec<String> = ev.candidates[i]
            .change
            .as_ref()
            .map(|c| {
                c.changes
                    .iter()
                    .take(2)
                    .map(|x| {
                        format!(
                            "{} {:.1}@{}",
                            x.signal,
                            x.score,
                            x.onset_ms
                                .map_or("-".into(), |o| format!("{:+}s", (o - fault) / 1000))
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let names = |v: &[usize]| {
            v.iter()
                .map(|&j| ev.candidates[j].id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let dependents: Vec<usize> = (0..ev.candidates.len())
            .filter(|&j| ev.deps[j].contains(&i))
            .collect();
        format!(
            "{} deps=[{}] dependents=[{}] a={:.2} onset={} z={:.1}{} <{}>",
            ev.candidates[i].id,
            names(&ev.deps[i]),
            names(&dependents),
            ev.anomaly(i, &p).unwrap_or(f64::NAN),
            ev.onset(i)
                .map_or("-".into(), |o| format!("{:+}s", (o - fault) / 1000)),
            ev.candidates[i].change.as_ref().map_or(0.0, |c| c.score),
            if ev.candidates[i].touched {
                " touched"
            } else {
                ""
            },
            strongest.join("; ")
        )
    };
    let top: Vec<String> = bayes
        .iter()
        .take(3)
        .map(|r| format!("[{} c={:.2}]", describe(r.index), r.confidence))
        .collect();
    result.notes = format!(
        "top {} | cause {}",
        top.join(" "),
        ev.candidates
            .iter()
            .position(|c| c.id == cause)
            .map_or("not a candidate".into(), describe)
    );
    if let Some(ci) = ev.candidates.iter().position(|c| c.id == cause) {
        let onset = ev.onset(ci);
        result.cause_first = onset.is_some_and(|o| {
            (0..ev.candidates.len()).all(|j| {
                j == ci
                    || !ev.anomaly(j, &p).is_some_and(|a| a >= 0.5)
                    || ev.onset(j).is_none_or(|oj| oj > o)
            })
        });
    }
    Ok(result)
}

/// Nanoseconds the calling thread has run on a CPU (Linux: the first field of
/// `/proc/thread-self/schedstat`), or `None` where the kernel does not say.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// AC@k for k = 1..=5 over `ranks`.
fn accuracy(ranks: &[Option<usize>]) -> [f64; 5] {
    let mut ac = [0.0; 5];
    if ranks.is_empty() {
        return ac;
    }
    for (k, slot) in ac.iter_mut().enumerate() {
        let hits = ranks
            .iter()
            .filter(|r| r.is_some_and(|r| r <= k + 1))
            .count();
        *slot = hits as f64 / ranks.len() as f64;
    }
    ac
}

fn avg5(ac: &[f64; 5]) -> f64 {
    ac.iter().sum::<f64>() / 5.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The benchmark's totals.
#[derive(Debug, Clone)]
pub struct Summary {
    pub cases: Vec<CaseResult>,
    /// AC@1..5 per method, in [`METHODS`] order.
    pub overall: [[f64; 5]; 3],
}

/// Runs the benchmark and prints its table to `out`.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<Summary, BenchError> {
    if args.cases == 0 {
        return Err(BenchError::Args("--cases must be at least 1".into()));
    }
    if args.min_services < 4 || args.max_services < args.min_services || args.max_services > 500 {
        return Err(BenchError::Args(
            "services must satisfy 4 <= min <= max <= 500".into(),
        ));
    }
    let started = Instant::now();
    let mut cases = Vec::with_capacity(args.cases);
    for i in 0..args.cases {
        if args.only.is_some_and(|o| o != i) {
            continue;
        }
        let seed = case_seed(args.seed, i);
        let span = (args.max_services - args.min_services + 1) as u64;
        let services = args.min_services + (case_seed(seed, 7) % span) as usize;
        let kind = FaultKind::ALL[i % FaultKind::ALL.len()];
        let r = run_case(seed, services, kind)?;
        if args.verbose {
            writeln!(
                out,
                "case {i:>3} seed {seed:>20} {:<10} n={:<2} cause={:<14} cand={:<3} ranks bayes={:?} earliest={:?} largest={:?} conf={:.2} {:.1} ms",
                kind.as_str(),
                services,
                r.cause,
                r.candidates,
                r.ranks[0],
                r.ranks[1],
                r.ranks[2],
                r.confidence,
                r.analysis_ms
            )?;
            if r.ranks[0] != Some(1) {
                writeln!(out, "           {}", r.notes)?;
            }
        }
        cases.push(r);
    }
    let ranks = |m: usize, filter: &dyn Fn(&CaseResult) -> bool| -> Vec<Option<usize>> {
        cases
            .iter()
            .filter(|c| filter(c))
            .map(|c| c.ranks[m])
            .collect()
    };
    let all = |_: &CaseResult| true;
    let overall = [
        accuracy(&ranks(0, &all)),
        accuracy(&ranks(1, &all)),
        accuracy(&ranks(2, &all)),
    ];
    let names = ["closedloop (bayes)", "earliest onset", "largest change"];
    writeln!(
        out,
        "rca-bench: {} cases, base seed {}, {}–{} services, analysis 8 min after the fault ({:.1} s)",
        cases.len(),
        args.seed,
        args.min_services,
        args.max_services,
        started.elapsed().as_secs_f64()
    )?;
    writeln!(out)?;
    writeln!(out, "| method | AC@1 | AC@3 | Avg@5 |")?;
    writeln!(out, "|---|---|---|---|")?;
    for (m, name) in names.iter().enumerate() {
        let ac = &overall[m];
        writeln!(
            out,
            "| {name} | {:.3} | {:.3} | {:.3} |",
            ac[0],
            ac[2],
            avg5(ac)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "| fault | cases | bayes AC@1 | AC@3 | Avg@5 | earliest AC@1 | AC@3 | Avg@5 | largest AC@1 | AC@3 | Avg@5 |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for kind in FaultKind::ALL {
        let f = |c: &CaseResult| c.kind == kind;
        let n = cases.iter().filter(|c| f(c)).count();
        if n == 0 {
            continue;
        }
        let acs = [
            accuracy(&ranks(0, &f)),
            accuracy(&ranks(1, &f)),
            accuracy(&ranks(2, &f)),
        ];
        write!(out, "| {} | {n} |", kind.as_str())?;
        for ac in &acs {
            write!(out, " {:.3} | {:.3} | {:.3} |", ac[0], ac[2], avg5(ac))?;
        }
        writeln!(out)?;
    }
    writeln!(out)?;
    // Timing: every detected case, and the largest worlds (the top fifth of the
    // services range).
    let big_from = args.max_services - (args.max_services - args.min_services) / 5;
    type Timing = fn(&CaseResult) -> f64;
    let sorted = |big: bool, f: Timing| -> Vec<f64> {
        let mut v: Vec<f64> = cases
            .iter()
            .filter(|c| c.detected && (!big || c.services >= big_from))
            .map(f)
            .filter(|x| !x.is_nan())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let timings: [(&str, Timing); 3] = [
        ("wall time, first run", |c| c.analysis_ms),
        ("wall time, fastest of 5 runs", |c| c.analysis_best_ms),
        ("CPU time of the analysing thread", |c| c.analysis_cpu_ms),
    ];
    writeln!(out, "analysis time (gather + rank):")?;
    for (name, f) in timings {
        let (all, big) = (sorted(false, f), sorted(true, f));
        writeln!(
            out,
            "  {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {big_from}–{} services: p50 {:.2} ms, p99 {:.2} ms ({} cases)",
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            all.last().copied().unwrap_or(f64::NAN),
            args.max_services,
            percentile(&big, 0.5),
            percentile(&big, 0.99),
            big.len()
        )?;
    }
    let detected = cases.iter().filter(|c| c.detected).count();
    let candidates: f64 =
        cases.iter().map(|c| c.candidates as f64).sum::<f64>() / detected.max(1) as f64;
    let chance: f64 = cases
        .iter()
        .filter(|c| c.detected && c.candidates > 0)
        .map(|c| 1.0 / c.candidates as f64)
        .sum::<f64>()
        / cases.len() as f64;
    writeln!(
        out,
        "incidents found for {detected} of {} cases (the rest count as misses); {candidates:.1} candidates on average (random AC@1 {chance:.3})",
        cases.len()
    )?;
    let sizes = cases.iter().map(|c| c.components);
    writeln!(
        out,
        "topology: {}–{} components (services, workloads, pods, nodes)",
        sizes.clone().min().unwrap_or(0),
        sizes.max().unwrap_or(0)
    )?;
    let first = cases.iter().filter(|c| c.cause_first).count();
    writeln!(
        out,
        "the cause's measured onset was strictly the earliest among abnormal candidates in {first} of {} cases",
        cases.len()
    )?;
    let (right, wrong): (Vec<&CaseResult>, Vec<&CaseResult>) = cases
        .iter()
        .filter(|c| c.detected)
        .partition(|c| c.ranks[0] == Some(1));
    let mean =
        |v: &[&CaseResult]| v.iter().map(|c| c.confidence).sum::<f64>() / v.len().max(1) as f64;
    writeln!(
        out,
        "top-cause confidence: mean {:.2} when right ({} cases), {:.2} when wrong ({} cases)",
        mean(&right),
        right.len(),
        mean(&wrong),
        wrong.len()
    )?;
    Ok(Summary { cases, overall })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_follows_rcaeval() {
        let ranks = [Some(1), Some(2), None, Some(4)];
        let ac = accuracy(&ranks);
        assert_eq!(ac, [0.25, 0.5, 0.5, 0.75, 0.75]);
        assert!((avg5(&ac) - 0.55).abs() < 1e-12);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mut sink = Vec::new();
        let args = BenchArgs {
            cases: 0,
            ..BenchArgs::default()
        };
        assert!(run(&args, &mut sink).is_err());
        let args = BenchArgs {
            min_services: 30,
            max_services: 20,
            ..BenchArgs::default()
        };
        assert!(run(&args, &mut sink).is_err());
    }
}
