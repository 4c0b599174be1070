//! The service's own metrics, served on `/metrics` for Prometheus to scrape.
//!
//! Naming: `closedloop_*` describes the process (ingest, store, HTTP, config), the way
//! `prometheus_*` describes Prometheus; `closed_loop_*` is reserved for the loop's
//! domain figures (detections, remediations, decision latency, MTTD/MTTR).
//! One `Metrics` value with its own registry is shared behind an `Arc`; no globals.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::anomaly::ScoringMetrics;
use crate::ingest::{Protocol, WriteOutcome};
use crate::storage::StoreStats;

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub remote_write_requests: IntCounterVec,
    pub remote_write_series_received: IntCounterVec,
    pub remote_write_samples_received: IntCounterVec,
    pub remote_write_samples_written: IntCounter,
    pub remote_write_samples_rejected: IntCounterVec,
    pub remote_write_histograms_dropped: IntCounter,
    pub remote_write_exemplars_dropped: IntCounter,
    pub remote_write_request_duration: HistogramVec,
    pub store_series: IntGauge,
    pub store_samples: IntGauge,
    pub store_bytes: IntGauge,
    pub store_series_created: IntCounter,
    pub store_series_removed: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub config_last_reload_successful: IntGauge,
    /// `closed_loop_detections_total{detector,severity}`: anomaly threshold crossings.
    pub detections: IntCounterVec,
    /// Detector output samples not written because the store is near its series limit.
    pub anomaly_outputs_dropped: IntCounter,
    pub config_last_reload_success_timestamp: IntGauge,
    /// The anomaly scoring queue: scored, dropped and queued samples, and the lag.
    pub scoring: ScoringMetrics,
}

/// Labelled families whose label values are not known before their first event
/// (detector names): the exposition still shows their `# HELP` / `# TYPE` from
/// start, as every `closed_loop_*` family must.
const ANNOUNCED: &[(&str, &str, &str)] = &[(DETECTIONS.0, DETECTIONS.1, "counter")];

const DETECTIONS: (&str, &str) = (
    "closed_loop_detections_total",
    "Anomaly detections (threshold crossings) by detector and severity.",
);

/// Errors only at startup, when a metric is registered twice (a programming error).
#[derive(Debug, thiserror::Error)]
#[error("registering metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn reg<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> Result<C, MetricsError> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "closedloop_build_info",
                "A metric with a constant 1 value labelled by version.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        reg(&r, build_info)?;
        Ok(Metrics {
            remote_write_requests: reg(
                &r,
                counter_vec(
                    "closedloop_remote_write_requests_total",
                    "Remote-write requests by protocol and status code.",
                    &["protocol", "code"],
                )?,
            )?,
            remote_write_series_received: reg(
                &r,
                counter_vec(
                    "closedloop_remote_write_series_received_total",
                    "Series received in remote-write requests.",
                    &["protocol"],
                )?,
            )?,
            remote_write_samples_received: reg(
                &r,
                counter_vec(
                    "closedloop_remote_write_samples_received_total",
                    "Float samples received in remote-write requests.",
                    &["protocol"],
                )?,
            )?,
            remote_write_samples_written: reg(
                &r,
                IntCounter::new(
                    "closedloop_remote_write_samples_written_total",
                    "Float samples written to the store.",
                )?,
            )?,
            remote_write_samples_rejected: reg(
                &r,
                counter_vec(
                    "closedloop_remote_write_samples_rejected_total",
                    "Float samples rejected, by reason.",
                    &["reason"],
                )?,
            )?,
            remote_write_histograms_dropped: reg(
                &r,
                IntCounter::new(
                    "closedloop_remote_write_histograms_dropped_total",
                    "Native histogram samples received and dropped (not supported yet).",
                )?,
            )?,
            remote_write_exemplars_dropped: reg(
                &r,
                IntCounter::new(
                    "closedloop_remote_write_exemplars_dropped_total",
                    "Exemplars received and dropped (not stored).",
                )?,
            )?,
            remote_write_request_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "closedloop_remote_write_request_duration_seconds",
                        "Time to decode and store a remote-write request.",
                    )
                    .buckets(latency_buckets.clone()),
                    &["protocol"],
                )?,
            )?,
            store_series: reg(
                &r,
                IntGauge::new("closedloop_store_series", "Series held in the store.")?,
            )?,
            store_samples: reg(
                &r,
                IntGauge::new("closedloop_store_samples", "Samples held in the store.")?,
            )?,
            store_bytes: reg(
                &r,
                IntGauge::new(
                    "closedloop_store_bytes",
                    "Estimated heap bytes held by the store (rings, labels, index).",
                )?,
            )?,
            store_series_created: reg(
                &r,
                IntCounter::new(
                    "closedloop_store_series_created_total",
                    "Series created in the store.",
                )?,
            )?,
            store_series_removed: reg(
                &r,
                IntCounter::new(
                    "closedloop_store_series_removed_total",
                    "Series removed from the store after being idle for the retention.",
                )?,
            )?,
            http_requests: reg(
                &r,
                counter_vec(
                    "closedloop_http_requests_total",
                    "HTTP requests by route and status code.",
                    &["handler", "code"],
                )?,
            )?,
            http_request_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "closedloop_http_request_duration_seconds",
                        "HTTP request latency by route.",
                    )
                    .buckets(latency_buckets),
                    &["handler"],
                )?,
            )?,
            config_last_reload_successful: reg(
                &r,
                IntGauge::new(
                    "closedloop_config_last_reload_successful",
                    "Whether the last configuration reload succeeded.",
                )?,
            )?,
            config_last_reload_success_timestamp: reg(
                &r,
                IntGauge::new(
                    "closedloop_config_last_reload_success_timestamp_seconds",
                    "Time of the last successful configuration reload.",
                )?,
            )?,
            detections: reg(
                &r,
                counter_vec(DETECTIONS.0, DETECTIONS.1, &["detector", "severity"])?,
            )?,
            anomaly_outputs_dropped: reg(
                &r,
                IntCounter::new(
                    "closed_loop_anomaly_outputs_dropped_total",
                    "Detector output samples not written: the store is at 90% of its series limit (headroom kept for ingested series).",
                )?,
            )?,
            scoring: ScoringMetrics {
                scored: reg(
                    &r,
                    IntCounter::new(
                        "closed_loop_anomaly_samples_scored_total",
                        "Stored samples handed to the anomaly detectors by the scoring worker.",
                    )?,
                )?,
                dropped: reg(
                    &r,
                    IntCounter::new(
                        "closed_loop_anomaly_samples_dropped_total",
                        "Stored samples never scored: dropped from the full scoring queue (scoring fell behind ingest).",
                    )?,
                )?,
                queued: reg(
                    &r,
                    IntGauge::new(
                        "closed_loop_anomaly_queue_samples",
                        "Stored samples waiting in the scoring queue.",
                    )?,
                )?,
                lag: reg(
                    &r,
                    Histogram::with_opts(
                        HistogramOpts::new(
                            "closed_loop_anomaly_scoring_lag_seconds",
                            "Time from a remote-write batch being stored to its samples being scored.",
                        )
                        .buckets(vec![
                            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                            5.0, 10.0, 30.0, 60.0,
                        ]),
                    )?,
                )?,
            },
            registry: r,
        })
    }

    /// Counts one remote-write request's outcome.
    pub fn observe_write(&self, protocol: Protocol, outcome: &WriteOutcome) {
        let p = protocol.as_str();
        self.remote_write_series_received
            .with_label_values(&[p])
            .inc_by(outcome.series_received);
        self.remote_write_samples_received
            .with_label_values(&[p])
            .inc_by(outcome.samples_received);
        self.remote_write_samples_written
            .inc_by(outcome.samples_written());
        self.remote_write_histograms_dropped
            .inc_by(outcome.histograms_dropped);
        self.remote_write_exemplars_dropped
            .inc_by(outcome.exemplars_dropped);
        self.store_series_created
            .inc_by(outcome.append.series_created);
        for (reason, n) in outcome.rejections() {
            if n > 0 {
                self.remote_write_samples_rejected
                    .with_label_values(&[reason])
                    .inc_by(n);
            }
        }
    }

    /// Renders the text exposition format, refreshing the store gauges first.
    pub fn render(&self, store: StoreStats) -> String {
        self.store_series.set(store.series as i64);
        self.store_samples.set(store.samples as i64);
        self.store_bytes.set(store.bytes as i64);
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        for (name, help, kind) in ANNOUNCED {
            if !text.contains(&format!("# TYPE {name} ")) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }

    /// The registry, for modules that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
