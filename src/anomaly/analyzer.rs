//! The running Analyze stage: the detectors of the loaded rule groups, fed by ingest
//! with every appended remote-write batch.
//!
//! Ingest calls [`Analyzer::observe`] right after a batch lands in the store, on the
//! request's own thread, so a sample is scored within the request that carried it.
//! Outputs are written back to the store; each threshold crossing counts in
//! `closed_loop_detections_total{detector,severity}`, joins an incident and is
//! broadcast to subscribers (the Decide stage). When no detector is loaded, ingest
//! skips all of this with one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::broadcast;

use super::{
    AnomalyEvent, DetectorSet, DetectorSpec, Incident, IncidentConfig, Incidents, Result,
    SeriesBatch,
};
use crate::storage::{SeriesId, Store};

/// Events kept for slow subscribers before the oldest are dropped.
const EVENT_BUFFER: usize = 4096;

/// Detectors, incidents and the event feed, shared by ingest, HTTP and Decide.
pub struct Analyzer {
    set: Mutex<DetectorSet>,
    incidents: Mutex<Incidents>,
    active: AtomicBool,
    events: broadcast::Sender<AnomalyEvent>,
    detections: IntCounterVec,
    outputs_dropped: IntCounter,
    /// Told of each incident as it opens (the Decide stage).
    incident_sink: std::sync::OnceLock<IncidentSink>,
}

/// Receives each incident when it opens; must return at once.
pub type IncidentSink = Box<dyn Fn(&Incident) + Send + Sync>;

/// Detector outputs create new series only while the store is below this share of
/// its series limit; the rest is headroom for ingested series.
const OUTPUT_SERIES_SHARE: f64 = 0.9;

impl Analyzer {
    /// An analyzer with no detectors; `detections` is the
    /// `closed_loop_detections_total{detector,severity}` counter and `outputs_dropped`
    /// counts output samples not written (store at its series limit or headroom).
    pub fn new(
        detections: IntCounterVec,
        outputs_dropped: IntCounter,
        incidents: IncidentConfig,
    ) -> Self {
        Analyzer {
            set: Mutex::new(DetectorSet::default()),
            incidents: Mutex::new(Incidents::new(incidents)),
            active: AtomicBool::new(false),
            events: broadcast::channel(EVENT_BUFFER).0,
            detections,
            outputs_dropped,
            incident_sink: std::sync::OnceLock::new(),
        }
    }

    /// Sets where new incidents are reported (once, at start).
    pub fn set_incident_sink(&self, sink: IncidentSink) {
        let _ = self.incident_sink.set(sink);
    }

    /// Replaces the detectors (from a rule reload). Unchanged detectors keep their
    /// state; on error the running set stays as it was.
    pub fn reload(&self, specs: &[DetectorSpec]) -> Result<()> {
        let mut set = self.set.lock();
        set.reload(specs)?;
        self.active.store(!specs.is_empty(), Ordering::Release);
        Ok(())
    }

    /// True when at least one detector is loaded.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Scores a batch just appended to `store`, writes the detector outputs back to
    /// it, and records the threshold crossings. Returns the number of crossings.
    pub fn observe(&self, store: &Store, batch: &[SeriesBatch<'_>]) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let events: Vec<AnomalyEvent> = {
            let mut set = self.set.lock();
            let events = set.process(batch).to_vec();
            let cap = (store.config().max_series as f64 * OUTPUT_SERIES_SHARE) as usize;
            let written = set.write_outputs_within(store, batch, cap);
            if written.series_limit > 0 {
                self.outputs_dropped.inc_by(written.series_limit);
            }
            events
        };
        if !events.is_empty() {
            let mut incidents = self.incidents.lock();
            for ev in &events {
                self.detections
                    .with_label_values(&[&ev.detector, &ev.severity])
                    .inc();
                let id = incidents.record(ev);
                if let Some(sink) = self.incident_sink.get() {
                    if let Some(opened) = incidents.get(id).filter(|i| i.events == 1) {
                        sink(opened);
                    }
                }
                // No subscriber is not an error: the event is still counted and grouped.
                let _ = self.events.send(ev.clone());
            }
        }
        events.len()
    }

    /// Drops detector state of series the store removed.
    pub fn forget(&self, ids: &[SeriesId]) {
        if ids.is_empty() || !self.is_active() {
            return;
        }
        let mut set = self.set.lock();
        for &id in ids {
            set.forget_series(id);
        }
    }

    /// Current incidents (expired ones dropped first).
    pub fn incidents(&self, now_ms: i64) -> Vec<Incident> {
        let mut incidents = self.incidents.lock();
        incidents.expire(now_ms);
        incidents.current(now_ms)
    }

    /// A feed of anomaly events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AnomalyEvent> {
        self.events.subscribe()
    }

    /// Number of (detector, series) pairs holding state.
    pub fn live_series(&self) -> usize {
        self.set.lock().live_series()
    }
}
