//! The running Analyze stage: the detectors of the loaded rule groups, fed by ingest
//! with every appended remote-write batch.
//!
//! In the service, scoring runs off the request path: [`Analyzer::observe`] copies
//! the batch ingest just appended (series ids, label handles, samples) into a bounded
//! queue and returns; one scoring worker thread takes the queued batches, oldest
//! first and several at a time, and scores them. When scoring falls behind, the
//! queue keeps at most `capacity` samples: the oldest queued batches are dropped
//! to make room (ingest never waits), counted in
//! `closed_loop_anomaly_samples_dropped_total` and reported in a warning at most
//! every 10 s. The time from a batch's arrival to its scoring is exported as
//! `closed_loop_anomaly_scoring_lag_seconds`. Built with [`Analyzer::new`] instead
//! (tools, tests), the analyzer scores on the caller's thread.
//!
//! Scoring writes the outputs back to the store; each threshold crossing counts in
//! `closed_loop_detections_total{detector,severity}`, joins an incident and is
//! broadcast to subscribers (the Decide stage). When no detector is loaded, ingest
//! skips all of this with one atomic load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use tokio::sync::broadcast;

use super::{
    AnomalyEvent, DetectorSet, DetectorSpec, Incident, IncidentConfig, Incidents, Result,
    SeriesBatch,
};
use crate::storage::{LabelSet, SeriesId, Store};

/// Events kept for slow subscribers before the oldest are dropped.
const EVENT_BUFFER: usize = 4096;

/// Detector outputs create new series only while the store is below this share of
/// its series limit; the rest is headroom for ingested series.
const OUTPUT_SERIES_SHARE: f64 = 0.9;

/// The worker scores queued batches together up to about this many samples, so a
/// backlog is worked off in large batches (fewer locks, better locality).
const MAX_SCORING_BATCH: usize = 65_536;

/// At most one "scoring fell behind" warning per this interval.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The metrics of the scoring queue.
#[derive(Clone)]
pub struct ScoringMetrics {
    /// Samples scored (handed to the detectors, watched or not).
    pub scored: IntCounter,
    /// Samples stored but never scored: dropped from a full queue.
    pub dropped: IntCounter,
    /// Samples waiting in the queue.
    pub queued: IntGauge,
    /// Seconds from a batch's arrival (after its append) to its scoring.
    pub lag: Histogram,
}

/// Detectors, incidents and the event feed, shared by ingest, HTTP and Decide.
pub struct Analyzer {
    scorer: Arc<Scorer>,
    /// Set when scoring runs on the worker.
    queue: Option<Arc<ScoringQueue>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// What scoring needs: the detectors and where their findings go.
struct Scorer {
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

impl Scorer {
    /// Scores a batch just appended to `store`, writes the detector outputs back to
    /// it, and records the threshold crossings. Returns the number of crossings.
    fn score(&self, store: &Store, batch: &[SeriesBatch<'_>]) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let events: Vec<AnomalyEvent> = {
            let mut set = self.set.lock();
            let events = set.process(batch).to_vec();
            let cap = (store.config().max_series as f64 * OUTPUT_SERIES_SHARE) as usize;
            let written = set.write_outputs_within(store, batch, cap);
            if written.series_limit + written.memory_limit > 0 {
                self.outputs_dropped
                    .inc_by(written.series_limit + written.memory_limit);
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
}

/// One appended batch waiting to be scored, owning what it needs: the series'
/// ids and label handles (a refcount each) and a copy of the samples.
struct Job {
    arrived: Instant,
    /// Per series: id, labels and the end of its samples in `samples`.
    series: Vec<(SeriesId, LabelSet, usize)>,
    samples: Vec<(i64, f64)>,
}

impl Job {
    fn new(batch: &[SeriesBatch<'_>]) -> Job {
        let mut samples = Vec::with_capacity(batch.iter().map(|b| b.samples.len()).sum());
        let series = batch
            .iter()
            .map(|b| {
                samples.extend_from_slice(b.samples);
                (b.id, b.labels.clone(), samples.len())
            })
            .collect();
        Job {
            arrived: Instant::now(),
            series,
            samples,
        }
    }
}

/// The bounded queue between ingest and the scoring worker.
struct ScoringQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Most samples held.
    capacity: usize,
    metrics: ScoringMetrics,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    samples: usize,
    closed: bool,
    /// Dropped since the last warning, and when that was.
    unreported: u64,
    last_report: Option<Instant>,
}

impl ScoringQueue {
    /// Queues a batch, dropping the oldest queued batches (or this one, if it alone
    /// is over the capacity) to stay within the capacity. Never waits for the worker.
    fn push(&self, job: Job) {
        let n = job.samples.len();
        let mut st = self.state.lock();
        let mut dropped = 0usize;
        if n > self.capacity {
            dropped = n;
        } else {
            while st.samples + n > self.capacity {
                let Some(old) = st.jobs.pop_front() else {
                    break;
                };
                st.samples -= old.samples.len();
                dropped += old.samples.len();
            }
            st.samples += n;
            st.jobs.push_back(job);
        }
        self.metrics.queued.set(st.samples as i64);
        if dropped > 0 {
            self.metrics.dropped.inc_by(dropped as u64);
            st.unreported += dropped as u64;
            if st
                .last_report
                .is_none_or(|t| t.elapsed() >= DROP_LOG_INTERVAL)
            {
                tracing::warn!(
                    dropped_samples = st.unreported,
                    queue_capacity_samples = self.capacity,
                    "anomaly scoring fell behind ingest: the oldest queued samples were dropped unscored"
                );
                st.unreported = 0;
                st.last_report = Some(Instant::now());
            }
        }
        drop(st);
        self.ready.notify_one();
    }

    /// Waits for queued batches and takes the oldest, up to [`MAX_SCORING_BATCH`]
    /// samples (at least one batch). `None` once closed and empty.
    fn take(&self) -> Option<Vec<Job>> {
        let mut st = self.state.lock();
        while st.jobs.is_empty() {
            if st.closed {
                return None;
            }
            self.ready.wait(&mut st);
        }
        let mut out = Vec::new();
        let mut taken = 0;
        while let Some(front) = st.jobs.front() {
            if !out.is_empty() && taken + front.samples.len() > MAX_SCORING_BATCH {
                break;
            }
            taken += front.samples.len();
            out.extend(st.jobs.pop_front());
        }
        st.samples -= taken;
        self.metrics.queued.set(st.samples as i64);
        Some(out)
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
    }
}

/// The worker: scores queued batches until the queue is closed and drained.
fn run_worker(scorer: &Scorer, queue: &ScoringQueue, store: &Store) {
    while let Some(jobs) = queue.take() {
        let mut batch: Vec<SeriesBatch<'_>> =
            Vec::with_capacity(jobs.iter().map(|j| j.series.len()).sum());
        for job in &jobs {
            let mut start = 0;
            for (id, labels, end) in &job.series {
                batch.push(SeriesBatch {
                    id: *id,
                    labels,
                    samples: &job.samples[start..*end],
                });
                start = *end;
            }
        }
        scorer.score(store, &batch);
        drop(batch);
        for job in &jobs {
            queue
                .metrics
                .lag
                .observe(job.arrived.elapsed().as_secs_f64());
            queue.metrics.scored.inc_by(job.samples.len() as u64);
        }
    }
}

impl Analyzer {
    /// An analyzer with no detectors that scores on the caller's thread;
    /// `detections` is the `closed_loop_detections_total{detector,severity}` counter
    /// and `outputs_dropped` counts output samples not written (store at its series
    /// limit or headroom, or at its byte limit).
    pub fn new(
        detections: IntCounterVec,
        outputs_dropped: IntCounter,
        incidents: IncidentConfig,
    ) -> Self {
        Analyzer {
            scorer: Arc::new(Scorer {
                set: Mutex::new(DetectorSet::default()),
                incidents: Mutex::new(Incidents::new(incidents)),
                active: AtomicBool::new(false),
                events: broadcast::channel(EVENT_BUFFER).0,
                detections,
                outputs_dropped,
                incident_sink: std::sync::OnceLock::new(),
            }),
            queue: None,
            worker: None,
        }
    }

    /// [`Analyzer::new`], scoring on a worker thread fed by a queue of at most
    /// `capacity` samples; scores are written to `store`. The worker stops when the
    /// analyzer is dropped, after scoring what is queued.
    pub fn with_worker(
        detections: IntCounterVec,
        outputs_dropped: IntCounter,
        incidents: IncidentConfig,
        store: Arc<Store>,
        capacity: usize,
        metrics: ScoringMetrics,
    ) -> std::io::Result<Self> {
        let mut a = Analyzer::new(detections, outputs_dropped, incidents);
        let queue = Arc::new(ScoringQueue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            capacity,
            metrics,
        });
        let (scorer, q) = (a.scorer.clone(), queue.clone());
        a.worker = Some(
            std::thread::Builder::new()
                .name("anomaly-scoring".into())
                .spawn(move || run_worker(&scorer, &q, &store))?,
        );
        a.queue = Some(queue);
        Ok(a)
    }

    /// Sets where new incidents are reported (once, at start).
    pub fn set_incident_sink(&self, sink: IncidentSink) {
        let _ = self.scorer.incident_sink.set(sink);
    }

    /// Replaces the detectors (from a rule reload). Unchanged detectors keep their
    /// state; on error the running set stays as it was.
    pub fn reload(&self, specs: &[DetectorSpec]) -> Result<()> {
        let mut set = self.scorer.set.lock();
        set.reload(specs)?;
        self.scorer
            .active
            .store(!specs.is_empty(), Ordering::Release);
        Ok(())
    }

    /// True when at least one detector is loaded.
    pub fn is_active(&self) -> bool {
        self.scorer.active.load(Ordering::Acquire)
    }

    /// Hands a batch just appended to `store` to the detectors: queued for the
    /// worker (which writes to the store it was given), or scored right here.
    /// Returns the number of threshold crossings found here (0 when queued).
    pub fn observe(&self, store: &Store, batch: &[SeriesBatch<'_>]) -> usize {
        if batch.is_empty() {
            return 0;
        }
        match &self.queue {
            Some(q) => {
                q.push(Job::new(batch));
                0
            }
            None => self.scorer.score(store, batch),
        }
    }

    /// Drops detector state of series the store removed.
    pub fn forget(&self, ids: &[SeriesId]) {
        if ids.is_empty() || !self.is_active() {
            return;
        }
        let mut set = self.scorer.set.lock();
        for &id in ids {
            set.forget_series(id);
        }
    }

    /// Current incidents (expired ones dropped first).
    pub fn incidents(&self, now_ms: i64) -> Vec<Incident> {
        let mut incidents = self.scorer.incidents.lock();
        incidents.expire(now_ms);
        incidents.current(now_ms)
    }

    /// A feed of anomaly events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AnomalyEvent> {
        self.scorer.events.subscribe()
    }

    /// Number of (detector, series) pairs holding state.
    pub fn live_series(&self) -> usize {
        self.scorer.set.lock().live_series()
    }
}

impl Drop for Analyzer {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            q.close();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::{Algorithm, DetectorSpec};
    use crate::storage::{Matcher, SeriesWrite, StoreConfig};

    fn metrics() -> ScoringMetrics {
        ScoringMetrics {
            scored: IntCounter::new("s", "s").unwrap(),
            dropped: IntCounter::new("d", "d").unwrap(),
            queued: IntGauge::new("q", "q").unwrap(),
            lag: Histogram::with_opts(prometheus::HistogramOpts::new("l", "l")).unwrap(),
        }
    }

    /// Appends one sample to each of `n` series and hands the batch to `a`.
    fn ingest(store: &Store, a: &Analyzer, n: usize, t: i64, v: f64) {
        let labels: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
        let pairs: Vec<[(&str, &str); 2]> = labels
            .iter()
            .map(|i| [("__name__", "m"), ("i", i.as_str())])
            .collect();
        let samples = [(t, v)];
        let writes: Vec<SeriesWrite<'_>> = pairs
            .iter()
            .map(|p| SeriesWrite {
                labels: p,
                samples: &samples,
            })
            .collect();
        let mut stored = Vec::new();
        store.append_batch_observed(&writes, &mut |i, r, l| stored.push((i, r.id(), l.clone())));
        let batch: Vec<SeriesBatch<'_>> = stored
            .iter()
            .map(|(_, id, labels)| SeriesBatch {
                id: *id,
                labels,
                samples: &samples,
            })
            .collect();
        a.observe(store, &batch);
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(60), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A burst larger than the queue while the worker is held up: ingest never
    /// waits, the oldest batches are dropped and counted, and once the worker runs
    /// again it scores what is queued, newest included.
    #[test]
    fn a_burst_over_the_queue_drops_the_oldest_and_scoring_catches_up() {
        let store = Arc::new(Store::new(StoreConfig {
            retention_ms: i64::MAX,
            ..StoreConfig::default()
        }));
        let m = metrics();
        let a = Analyzer::with_worker(
            IntCounterVec::new(prometheus::Opts::new("x", "x"), &["detector", "severity"]).unwrap(),
            IntCounter::new("o", "o").unwrap(),
            IncidentConfig::default(),
            store.clone(),
            500,
            m.clone(),
        )
        .unwrap();
        // A threshold detector scores every sample (0 or 1).
        let mut spec = DetectorSpec::new("over", "m", Algorithm::Threshold);
        spec.upper = Some(100.0);
        a.reload(&[spec]).unwrap();
        let scores = |t: i64| {
            store
                .select(&[Matcher::equal("__name__", "anomaly_score")], t, t)
                .len()
        };
        // Hold the worker up: it cannot take the detectors' lock. The first batch is
        // taken by the worker, which then blocks on the lock (waiting for that makes
        // the test independent of when the worker thread gets scheduled).
        let held = a.scorer.set.lock();
        ingest(&store, &a, 100, 0, 0.0);
        wait_for("the worker to take the first batch", || m.queued.get() == 0);
        let start = Instant::now();
        for k in 1..20 {
            ingest(&store, &a, 100, k * 15_000, k as f64);
        }
        // 1,900 more samples into a queue of 500, none waiting for the worker.
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(m.queued.get(), 500);
        drop(held);
        wait_for("the queue to drain", || {
            m.queued.get() == 0 && m.scored.get() + m.dropped.get() == 2_000
        });
        // The first batch and the newest 500 samples were scored; the 1,400 between
        // were dropped.
        assert_eq!((m.dropped.get(), m.scored.get()), (1_400, 600));
        // The newest batches were scored, and exactly the batches counted as scored.
        wait_for("the newest scores", || scores(19 * 15_000) == 100);
        let scored_batches = (0..20).filter(|&k| scores(k * 15_000) == 100).count();
        assert_eq!(scored_batches as u64, m.scored.get() / 100);
        assert_eq!(m.lag.get_sample_count(), m.scored.get() / 100);
        // A later batch is scored promptly.
        ingest(&store, &a, 100, 20 * 15_000, 1.0);
        wait_for("scoring the next batch", || scores(20 * 15_000) == 100);
    }

    #[test]
    fn a_batch_larger_than_the_queue_is_dropped_whole() {
        let store = Arc::new(Store::new(StoreConfig::default()));
        let m = metrics();
        let a = Analyzer::with_worker(
            IntCounterVec::new(prometheus::Opts::new("x", "x"), &["detector", "severity"]).unwrap(),
            IntCounter::new("o", "o").unwrap(),
            IncidentConfig::default(),
            store.clone(),
            50,
            m.clone(),
        )
        .unwrap();
        a.reload(&[DetectorSpec::new("z", "m", Algorithm::Zscore)])
            .unwrap();
        ingest(&store, &a, 60, 1_000, 1.0);
        assert_eq!((m.dropped.get(), m.queued.get()), (60, 0));
        ingest(&store, &a, 40, 2_000, 1.0);
        wait_for("scoring", || m.scored.get() == 40);
        drop(a); // joins the worker
    }
}
