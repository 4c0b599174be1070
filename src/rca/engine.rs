//! The running RCA stage: keeps the topology fresh, turns anomaly events and firing
//! alerts into incidents, analyses incidents that changed (off the ingest path, on
//! the blocking pool), and answers the API, the alert annotations and Decide.
//!
//! Data flow: `anomaly::Analyzer`'s broadcast feed and the notifier's alert hook →
//! [`RcaEngine::observe_event`] / [`RcaEngine::observe_alert`] (a hash lookup and a
//! short lock) → incidents; a timer every `analysis.interval` analyses the incidents
//! whose version moved; discovery every `discovery.refresh_interval`. Reports are
//! cached by incident version, so reading one twice costs nothing.
//!
//! Must never: analyse while holding the incidents lock or a store lock; block an
//! async worker (the loops hand work to `spawn_blocking`); grow without bound
//! (incidents and cached reports are bounded by `incidents.max_incidents`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use serde::Serialize;

use super::analysis::{self, RcaReport, Request};
use super::config::RcaConfig;
use super::discover;
use super::identity::Identity;
use super::incident::{Correlator, Incident, Signal};
use super::topology::{ComponentId, Topology, TopologyBuilder};
use super::RcaError;
use crate::anomaly::{Analyzer, AnomalyEvent};
use crate::storage::Store;

/// The `closed_loop_rca_*` metrics.
#[derive(Clone)]
pub struct RcaMetrics {
    pub analyses: IntCounter,
    pub duration: Histogram,
    pub confidence: Histogram,
    pub incidents_open: IntGauge,
    pub components: IntGaugeVec,
    pub edges: IntGaugeVec,
    pub refreshes: IntCounter,
    pub refresh_seconds: prometheus::Gauge,
    pub signals: IntCounterVec,
    pub events_dropped: IntCounter,
}

impl RcaMetrics {
    pub fn new(r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let m = RcaMetrics {
            analyses: IntCounter::new(
                "closed_loop_rca_analyses_total",
                "Root-cause analyses run.",
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "closed_loop_rca_analysis_duration_seconds",
                    "Time one root-cause analysis took.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
            confidence: Histogram::with_opts(
                HistogramOpts::new(
                    "closed_loop_rca_top_cause_confidence",
                    "Confidence of the top-ranked cause of each analysis.",
                )
                .buckets(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]),
            )?,
            incidents_open: IntGauge::new(
                "closed_loop_rca_incidents",
                "Open root-cause-analysis incidents.",
            )?,
            components: IntGaugeVec::new(
                Opts::new(
                    "closed_loop_rca_topology_components",
                    "Components in the dependency topology, by kind.",
                ),
                &["kind"],
            )?,
            edges: IntGaugeVec::new(
                Opts::new(
                    "closed_loop_rca_topology_edges",
                    "Edges in the dependency topology, by the source that reported them.",
                ),
                &["source"],
            )?,
            refreshes: IntCounter::new(
                "closed_loop_rca_topology_refreshes_total",
                "Topology discoveries run.",
            )?,
            refresh_seconds: prometheus::Gauge::new(
                "closed_loop_rca_topology_refresh_duration_seconds",
                "Time the last topology discovery took.",
            )?,
            signals: IntCounterVec::new(
                Opts::new(
                    "closed_loop_rca_signals_total",
                    "Anomaly events and alerts seen, by kind and whether a component was found for them.",
                ),
                &["kind", "outcome"],
            )?,
            events_dropped: IntCounter::new(
                "closed_loop_rca_events_dropped_total",
                "Anomaly events the RCA stage missed because it fell behind the feed.",
            )?,
        };
        r.register(Box::new(m.analyses.clone()))?;
        r.register(Box::new(m.duration.clone()))?;
        r.register(Box::new(m.confidence.clone()))?;
        r.register(Box::new(m.incidents_open.clone()))?;
        r.register(Box::new(m.components.clone()))?;
        r.register(Box::new(m.edges.clone()))?;
        r.register(Box::new(m.refreshes.clone()))?;
        r.register(Box::new(m.refresh_seconds.clone()))?;
        r.register(Box::new(m.signals.clone()))?;
        r.register(Box::new(m.events_dropped.clone()))?;
        Ok(m)
    }
}

/// An incident with its latest analysis (for the API).
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    /// The latest analysis; `null` until the first one has run.
    #[serde(serialize_with = "ser_report")]
    pub rca: Option<Arc<RcaReport>>,
}

fn ser_report<S: serde::Serializer>(r: &Option<Arc<RcaReport>>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => r.as_ref().serialize(s),
        None => s.serialize_none(),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The RCA stage of a running service.
pub struct RcaEngine {
    store: Arc<Store>,
    config: RwLock<Arc<RcaConfig>>,
    configured: RwLock<TopologyBuilder>,
    discovered: Mutex<TopologyBuilder>,
    topology: RwLock<Arc<Topology>>,
    incidents: Mutex<Correlator>,
    reports: Mutex<HashMap<u64, (u64, Arc<RcaReport>)>>,
    metrics: RcaMetrics,
}

impl RcaEngine {
    /// An engine with the configured topology (discovery runs once [`Self::start`]
    /// is called, or on [`Self::refresh`]).
    pub fn new(
        cfg: &RcaConfig,
        store: Arc<Store>,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, RcaError> {
        let engine = Arc::new(RcaEngine {
            store,
            config: RwLock::new(Arc::new(cfg.clone())),
            configured: RwLock::new(discover::configured(&cfg.topology)),
            discovered: Mutex::new(TopologyBuilder::new()),
            topology: RwLock::new(Arc::new(Topology::default())),
            incidents: Mutex::new(Correlator::new(cfg.incidents.clone())),
            reports: Mutex::new(HashMap::new()),
            metrics: RcaMetrics::new(registry)?,
        });
        engine.rebuild(now_ms());
        Ok(engine)
    }

    /// Applies a reloaded configuration: the configured topology is rebuilt at once
    /// (with the last discovery), open incidents stay.
    pub fn reload(&self, cfg: &RcaConfig) {
        *self.configured.write() = discover::configured(&cfg.topology);
        *self.config.write() = Arc::new(cfg.clone());
        self.incidents.lock().set_config(cfg.incidents.clone());
        self.reports.lock().clear();
        self.rebuild(now_ms());
    }

    pub fn config(&self) -> Arc<RcaConfig> {
        self.config.read().clone()
    }

    /// The current topology.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// Runs discovery over the store now and rebuilds the topology (blocking).
    pub fn refresh(&self, now_ms: i64) {
        let cfg = self.config();
        let started = Instant::now();
        let (found, stats) = discover::discover(&self.store, &cfg.discovery, now_ms);
        tracing::debug!(?stats, components = found.len(), "topology discovered");
        *self.discovered.lock() = found;
        self.rebuild(now_ms);
        self.metrics.refreshes.inc();
        self.metrics
            .refresh_seconds
            .set(started.elapsed().as_secs_f64());
    }

    fn rebuild(&self, now_ms: i64) {
        let cfg = self.config();
        let mut b = self.configured.read().clone();
        b.merge(&self.discovered.lock());
        b.link_services_by_name();
        let topo = b.build(
            cfg.discovery.max_components,
            cfg.discovery.max_edges,
            now_ms,
        );
        if topo.truncated {
            tracing::warn!(
                components = topo.len(),
                "topology truncated at rca.discovery.max_components / max_edges"
            );
        }
        let (kinds, sources) = topo.counts();
        self.metrics.components.reset();
        for (k, n) in kinds {
            self.metrics
                .components
                .with_label_values(&[k.as_str()])
                .set(n as i64);
        }
        self.metrics.edges.reset();
        for (s, n) in sources {
            self.metrics
                .edges
                .with_label_values(&[s.as_str()])
                .set(n as i64);
        }
        *self.topology.write() = Arc::new(topo);
    }

    /// Records an anomaly event (from the analyzer's feed).
    pub fn observe_event(&self, ev: &AnomalyEvent) -> Option<u64> {
        let topo = self.topology();
        let cfg = self.config();
        let component = Identity::new(&topo, &cfg.identity.service_labels).of_series(&ev.labels);
        let Some(component) = component else {
            self.metrics
                .signals
                .with_label_values(&["anomaly", "unattributed"])
                .inc();
            return None;
        };
        self.metrics
            .signals
            .with_label_values(&["anomaly", "recorded"])
            .inc();
        let signal = Signal::Anomaly {
            detector: ev.detector.clone(),
            severity: ev.severity.clone(),
        };
        let mut inc = self.incidents.lock();
        let id = inc.record(&topo, &component, ev.t, &signal);
        self.metrics.incidents_open.set(inc.len() as i64);
        Some(id)
    }

    /// Records a firing alert by its labels at `t_ms`; returns its incident.
    pub fn observe_alert(&self, labels: &BTreeMap<String, String>, t_ms: i64) -> Option<u64> {
        let topo = self.topology();
        let cfg = self.config();
        let Some(component) = Identity::new(&topo, &cfg.identity.service_labels).of_labels(labels)
        else {
            self.metrics
                .signals
                .with_label_values(&["alert", "unattributed"])
                .inc();
            return None;
        };
        self.metrics
            .signals
            .with_label_values(&["alert", "recorded"])
            .inc();
        let signal = Signal::Alert {
            name: labels.get("alertname").cloned().unwrap_or_default(),
            severity: labels.get("severity").cloned().unwrap_or_default(),
        };
        let mut inc = self.incidents.lock();
        let id = inc.record(&topo, &component, t_ms, &signal);
        self.metrics.incidents_open.set(inc.len() as i64);
        Some(id)
    }

    /// The report of incident `id` at `now_ms`: the cached one if the incident has
    /// not changed since, else a fresh analysis (blocking; milliseconds).
    pub fn analyze(&self, id: u64, now_ms: i64) -> Result<Arc<RcaReport>, RcaError> {
        let incident = self
            .incidents
            .lock()
            .get(id)
            .cloned()
            .ok_or(RcaError::NotFound(id))?;
        if let Some((v, r)) = self.reports.lock().get(&id) {
            if *v == incident.version {
                return Ok(r.clone());
            }
        }
        let topo = self.topology();
        let cfg = self.config();
        let touches = incident.touches();
        let req = Request {
            incident: id,
            touched: &touches,
            start_ms: incident.start_ms,
            now_ms,
        };
        let started = Instant::now();
        let report = Arc::new(analysis::analyze(&self.store, &topo, &cfg, &req));
        self.metrics.analyses.inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        if let Some(top) = report.top() {
            self.metrics.confidence.observe(top.confidence);
        }
        let mut reports = self.reports.lock();
        reports.insert(id, (incident.version, report.clone()));
        Ok(report)
    }

    /// The report for the incident a component (e.g. an alert's target) is part of:
    /// the typed entry point for Decide.
    pub fn report_for(&self, component: &ComponentId, now_ms: i64) -> Option<Arc<RcaReport>> {
        let topo = self.topology();
        let id = self.incidents.lock().find(&topo, component)?.id;
        self.analyze(id, now_ms).ok()
    }

    /// The component an alert's (or an action's) labels name.
    pub fn component_of(&self, labels: &BTreeMap<String, String>) -> Option<ComponentId> {
        let topo = self.topology();
        let cfg = self.config();
        Identity::new(&topo, &cfg.identity.service_labels).of_labels(labels)
    }

    /// The RCA annotations for an alert: `rca_cause`, `rca_confidence`, `rca_path`,
    /// `rca_incident`, `rca_summary`. A firing alert is recorded as a signal first
    /// (it may open an incident); a resolved one gets the last report, if any.
    /// Empty when the alert names no component or nothing was found.
    pub fn annotations_for_alert(
        &self,
        labels: &BTreeMap<String, String>,
        firing: bool,
        now_ms: i64,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let report = if firing {
            self.observe_alert(labels, now_ms)
                .and_then(|id| self.analyze(id, now_ms).ok())
        } else {
            let topo = self.topology();
            self.component_of(labels).and_then(|c| {
                let id = self.incidents.lock().find(&topo, &c)?.id;
                self.reports.lock().get(&id).map(|(_, r)| r.clone())
            })
        };
        let Some(report) = report else { return out };
        let Some(top) = report.top() else { return out };
        let topo = self.topology();
        let target = self.component_of(labels).map(|c| topo.unit_id(&c));
        let path = match &target {
            Some(t) => report.path_to(t),
            None => top.path.clone(),
        };
        out.insert("rca_cause".into(), top.component.to_string());
        out.insert("rca_confidence".into(), format!("{:.2}", top.confidence));
        out.insert(
            "rca_path".into(),
            path.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" -> "),
        );
        out.insert("rca_incident".into(), report.incident.to_string());
        out.insert("rca_summary".into(), top.summary.clone());
        out
    }

    /// Open incidents, newest first, with their latest (cached) analyses.
    pub fn incidents(&self, now_ms: i64) -> Vec<IncidentView> {
        let list: Vec<Incident> = {
            let mut inc = self.incidents.lock();
            let gone = inc.expire(now_ms);
            self.metrics.incidents_open.set(inc.len() as i64);
            if !gone.is_empty() {
                let mut reports = self.reports.lock();
                for id in gone {
                    reports.remove(&id);
                }
            }
            inc.list().into_iter().cloned().collect()
        };
        let reports = self.reports.lock();
        list.into_iter()
            .map(|incident| {
                let rca = reports.get(&incident.id).map(|(_, r)| r.clone());
                IncidentView { incident, rca }
            })
            .collect()
    }

    /// One incident with an up-to-date analysis.
    pub fn incident(&self, id: u64, now_ms: i64) -> Result<IncidentView, RcaError> {
        let report = self.analyze(id, now_ms)?;
        let incident = self
            .incidents
            .lock()
            .get(id)
            .cloned()
            .ok_or(RcaError::NotFound(id))?;
        Ok(IncidentView {
            incident,
            rca: Some(report),
        })
    }

    /// Analyses every open incident whose version moved since its last analysis.
    pub fn analyze_changed(&self, now_ms: i64) -> usize {
        let versions = {
            let mut inc = self.incidents.lock();
            let gone = inc.expire(now_ms);
            self.metrics.incidents_open.set(inc.len() as i64);
            let mut reports = self.reports.lock();
            for id in gone {
                reports.remove(&id);
            }
            inc.versions()
        };
        let stale: Vec<u64> = {
            let reports = self.reports.lock();
            versions
                .into_iter()
                .filter(|(id, v)| reports.get(id).is_none_or(|(rv, _)| rv != v))
                .map(|(id, _)| id)
                .collect()
        };
        for &id in &stale {
            let _ = self.analyze(id, now_ms);
        }
        stale.len()
    }

    /// Starts the background loops: discovery, the analyzer's event feed, analyses
    /// of changed incidents. Must run inside a tokio runtime.
    pub fn start(self: &Arc<Self>, analyzer: Option<&Analyzer>) {
        tokio::spawn(discovery_loop(Arc::downgrade(self)));
        tokio::spawn(analysis_loop(Arc::downgrade(self)));
        if let Some(analyzer) = analyzer {
            tokio::spawn(event_loop(Arc::downgrade(self), analyzer.subscribe()));
        }
    }
}

async fn discovery_loop(engine: std::sync::Weak<RcaEngine>) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let every = e.config().discovery.refresh_interval.as_duration();
        let _ = tokio::task::spawn_blocking(move || e.refresh(now_ms())).await;
        tokio::time::sleep(every.max(Duration::from_secs(1))).await;
    }
}

async fn analysis_loop(engine: std::sync::Weak<RcaEngine>) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let every = e.config().analysis.interval.as_duration();
        let _ = tokio::task::spawn_blocking(move || e.analyze_changed(now_ms())).await;
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
    }
}

async fn event_loop(
    engine: std::sync::Weak<RcaEngine>,
    mut events: tokio::sync::broadcast::Receiver<AnomalyEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(ev) => {
                let Some(e) = engine.upgrade() else { return };
                e.observe_event(&ev);
            }
            Err(RecvError::Lagged(n)) => {
                if let Some(e) = engine.upgrade() {
                    e.metrics.events_dropped.inc_by(n);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests;
