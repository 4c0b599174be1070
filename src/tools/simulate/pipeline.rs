//! The real pipeline, run on simulated time: each step's readings are encoded as a
//! remote-write 1.0 request (protobuf, snappy) and go through the same
//! negotiate → decompress → decode → append → detectors path as `POST
//! /api/v1/write`; then every rule group due at that timestamp is evaluated by the
//! engine over the store, and the alerts that turned firing or resolved are
//! collected.
//!
//! Invariants: nothing here reads the wall clock — every timestamp is the simulated
//! one; the store, analyzer and rule groups are the service's own types, unchanged;
//! series that vanish from one step's readings get a staleness marker, as
//! Prometheus writes when a target's series disappear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::anomaly::{Analyzer, IncidentConfig};
use crate::decide::conditions::StaticConditions;
use crate::decide::IncidentOpened;
use crate::ingest::{self, proto::v1, SampleBounds, WriteOutcome};
use crate::metrics::Metrics;
use crate::promql::{Engine, EngineOptions};
use crate::rules::group::{AlertState, EvalContext, LocalSource};
use crate::rules::{AlertTransition, Group, GroupSpec, RuleKind, Severity};
use crate::storage::{LabelSet, Store, StoreConfig, STALE_NAN_BITS};

use super::world::Reading;
use super::SimulateError;

/// Evaluation interval of a rule group that sets none (as `global.evaluation_interval`).
const DEFAULT_INTERVAL_MS: i64 = 60_000;
/// History the simulated store keeps per series.
const RETENTION_MS: i64 = 2 * 3_600_000;
/// How often idle series are collected, in simulated time.
const GC_EVERY_MS: i64 = 10 * 60_000;

/// An alert that turned firing or resolved.
#[derive(Debug, Clone)]
pub struct AlertChange {
    pub firing: bool,
    /// The alerting rule's name.
    pub rule: String,
    /// Index of the rule's group, and of the rule in it.
    pub group: usize,
    pub rule_index: usize,
    /// The alert's labels (with `alertname`).
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Simulated epoch ms: when the condition started, and of this change.
    pub active_at_ms: i64,
    pub at_ms: i64,
}

/// Store, detectors and rules.
pub struct Pipeline {
    store: Arc<Store>,
    engine: Engine,
    analyzer: Analyzer,
    metrics: Arc<Metrics>,
    groups: Vec<Group>,
    previous: HashSet<Vec<(&'static str, String)>>,
    external_labels: BTreeMap<String, String>,
    last_gc: Option<i64>,
    /// Incidents the analyzer opened since the last look.
    opened: Arc<parking_lot::Mutex<Vec<IncidentOpened>>>,
    /// Incidents open at the last look.
    open_incidents: HashSet<u64>,
    pub writes: WriteTotals,
}

/// What went through the remote-write path.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct WriteTotals {
    pub requests: u64,
    pub samples_received: u64,
    pub samples_written: u64,
    pub samples_rejected: u64,
}

impl Pipeline {
    /// A pipeline over `groups`; every group's interval must be a multiple of `step_ms`.
    pub fn new(groups: Vec<GroupSpec>, step_ms: i64) -> Result<Pipeline, SimulateError> {
        let metrics = Arc::new(Metrics::new().map_err(|e| SimulateError::Setup(e.to_string()))?);
        let analyzer = Analyzer::new(
            metrics.detections.clone(),
            metrics.anomaly_outputs_dropped.clone(),
            IncidentConfig::default(),
        );
        let opened: Arc<parking_lot::Mutex<Vec<IncidentOpened>>> = Arc::default();
        let sink = opened.clone();
        analyzer.set_incident_sink(Box::new(move |inc| {
            sink.lock().push(IncidentOpened {
                id: inc.id,
                group: inc.group.clone(),
                severity: Severity::parse(&inc.severity),
                start_ms: inc.start_ms,
                opened_ms: inc.last_update_ms,
                seen: std::time::Instant::now(),
                context: None,
            })
        }));
        let detectors: Vec<_> = groups
            .iter()
            .flat_map(|g| g.detectors.iter().cloned())
            .collect();
        analyzer
            .reload(&detectors)
            .map_err(|e| SimulateError::Rules(e.to_string()))?;
        let mut built = Vec::with_capacity(groups.len());
        for g in groups {
            if g.datasource.is_some() {
                return Err(SimulateError::Rules(format!(
                    "{}: group {:?}: a remote datasource cannot run on simulated time",
                    g.file.display(),
                    g.name
                )));
            }
            let group = Group::new(Arc::new(g), DEFAULT_INTERVAL_MS);
            if group.interval_ms % step_ms != 0 {
                return Err(SimulateError::Rules(format!(
                    "{}: group {:?}: interval {}ms is not a multiple of the scenario's step {}ms",
                    group.spec.file.display(),
                    group.spec.name,
                    group.interval_ms,
                    step_ms
                )));
            }
            built.push(group);
        }
        Ok(Pipeline {
            store: Arc::new(Store::new(StoreConfig {
                retention_ms: RETENTION_MS,
                max_series: 200_000,
                shards: 8,
                ..StoreConfig::default()
            })),
            engine: Engine::new(EngineOptions::default()),
            analyzer,
            metrics,
            groups: built,
            previous: HashSet::new(),
            external_labels: BTreeMap::new(),
            last_gc: None,
            opened,
            open_incidents: HashSet::new(),
            writes: WriteTotals::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Sends one step's readings at `t_ms` through the remote-write path, with
    /// staleness markers for the series that disappeared since the last step.
    pub fn ingest(
        &mut self,
        readings: &[Reading],
        t_ms: i64,
    ) -> Result<WriteOutcome, SimulateError> {
        let mut now = HashSet::with_capacity(readings.len());
        let mut series = Vec::with_capacity(readings.len() + 8);
        let stale = f64::from_bits(STALE_NAN_BITS);
        for (labels, v) in readings {
            series.push(time_series(labels, t_ms, *v));
            now.insert(labels.clone());
        }
        for gone in self.previous.difference(&now) {
            series.push(time_series(gone, t_ms, stale));
        }
        self.previous = now;
        let body = v1::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec();
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&body)
            .map_err(|e| SimulateError::Setup(format!("snappy: {e}")))?;
        // The receiver's own path, from the headers Prometheus sends.
        let protocol = ingest::negotiate(
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            Some("snappy"),
        )?;
        let decoded = ingest::decompress(&compressed, 256 << 20)?;
        let outcome = ingest::write(
            &self.store,
            Some(&self.analyzer),
            protocol,
            decoded,
            SampleBounds::unbounded(),
        )?;
        self.metrics.observe_write(protocol, &outcome);
        self.writes.requests += 1;
        self.writes.samples_received += outcome.samples_received;
        self.writes.samples_written += outcome.samples_written();
        self.writes.samples_rejected += outcome.rejections().iter().map(|(_, n)| n).sum::<u64>();
        if self.last_gc.is_none_or(|last| t_ms - last >= GC_EVERY_MS) {
            let removed = self.store.gc(t_ms);
            self.analyzer.forget(&removed);
            self.last_gc = Some(t_ms);
        }
        Ok(outcome)
    }

    /// The incidents opened since the last call; `conditions` learns which
    /// incidents are open at `t_ms`.
    pub fn take_incidents(
        &mut self,
        t_ms: i64,
        conditions: &StaticConditions,
    ) -> Vec<IncidentOpened> {
        let now: HashSet<u64> = self.analyzer.incidents(t_ms).iter().map(|i| i.id).collect();
        for gone in self.open_incidents.difference(&now) {
            conditions.set_incident(*gone, false);
        }
        for id in &now {
            conditions.set_incident(*id, true);
        }
        self.open_incidents = now;
        std::mem::take(&mut *self.opened.lock())
    }

    /// Evaluates every group due at `t_ms` (aligned to `origin_ms`) and returns
    /// the alerts that turned firing or resolved (as the report counts them, and
    /// as the rules engine hands them to Decide), and the rule errors.
    /// `conditions` learns, per alerting rule, the alerts whose condition holds.
    pub fn evaluate(
        &mut self,
        t_ms: i64,
        origin_ms: i64,
        conditions: &StaticConditions,
    ) -> (Vec<AlertChange>, Vec<AlertTransition>, Vec<String>) {
        let source = LocalSource {
            engine: self.engine.clone(),
            store: &*self.store,
        };
        let ctx = EvalContext {
            source: &source,
            appender: &*self.store,
            external_labels: &self.external_labels,
            external_url: "http://closedloop.simulated",
        };
        let mut changes = Vec::new();
        let mut transitions = Vec::new();
        let mut errors = Vec::new();
        for (gi, g) in self.groups.iter_mut().enumerate() {
            if (t_ms - origin_ms) % g.interval_ms != 0 {
                continue;
            }
            let before: Vec<HashMap<LabelSet, AlertState>> = g
                .rules
                .iter()
                .map(|r| r.active.iter().map(|(l, a)| (l.clone(), a.state)).collect())
                .collect();
            for (rule, e) in g.eval(t_ms, &ctx) {
                errors.push(format!("group {:?}, rule {rule}: {e}", g.spec.name));
            }
            let (spec, interval) = (g.spec.clone(), g.interval_ms);
            for r in g.rules.iter_mut().filter(|r| r.is_alert()) {
                conditions.set_alerts(&spec.name, r.spec.name(), r.holding_labels());
                transitions.extend(r.take_transitions(&spec, interval));
            }
            for (ri, r) in g.rules.iter().enumerate() {
                let RuleKind::Alert(name) = &r.spec.kind else {
                    continue;
                };
                let was = &before[ri];
                for (ls, a) in &r.active {
                    let prev = was.get(ls).copied().unwrap_or(AlertState::Inactive);
                    let change = match (prev, a.state) {
                        (AlertState::Firing, AlertState::Inactive) => Some(false),
                        (p, AlertState::Firing) if p != AlertState::Firing => Some(true),
                        _ => None,
                    };
                    if let Some(firing) = change {
                        changes.push(AlertChange {
                            firing,
                            rule: name.clone(),
                            group: gi,
                            rule_index: ri,
                            labels: ls
                                .iter()
                                .map(|l| (l.name.to_string(), l.value.to_string()))
                                .collect(),
                            value: a.value,
                            active_at_ms: a.active_at_ms,
                            at_ms: t_ms,
                        });
                    }
                }
                // A firing alert dropped from `active` in the same evaluation.
                for (ls, prev) in was {
                    if *prev == AlertState::Firing && !r.active.contains_key(ls) {
                        changes.push(AlertChange {
                            firing: false,
                            rule: name.clone(),
                            group: gi,
                            rule_index: ri,
                            labels: ls
                                .iter()
                                .map(|l| (l.name.to_string(), l.value.to_string()))
                                .collect(),
                            value: f64::NAN,
                            active_at_ms: t_ms,
                            at_ms: t_ms,
                        });
                    }
                }
            }
        }
        (changes, transitions, errors)
    }

    /// The detectors' threshold crossings so far.
    pub fn detections(&self) -> u64 {
        use prometheus::core::Collector;
        self.metrics
            .detections
            .collect()
            .iter()
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
            })
            .sum()
    }

    /// An instant query at `t_ms` (the timeline reads the detectors' outputs).
    pub fn query(&self, q: &str, t_ms: i64) -> Vec<crate::promql::Sample> {
        match self.engine.instant_query(&*self.store, q, t_ms) {
            Ok(r) => match r.value {
                crate::promql::Value::Vector(v) => v,
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }
}

fn time_series(labels: &[(&'static str, String)], t: i64, v: f64) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, val)| v1::Label {
                name: Bytes::from_static(n.as_bytes()),
                value: Bytes::copy_from_slice(val.as_bytes()),
            })
            .collect(),
        samples: vec![v1::Sample {
            value: v,
            timestamp: t,
        }],
        ..Default::default()
    }
}
