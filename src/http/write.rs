//! `POST /api/v1/write`: the remote-write receiver (protocol 1.0 and 2.0).
//!
//! Status codes as Prometheus senders expect: 204 stored; 400 for data that will never
//! be accepted (undecodable, invalid labels, or a partial write with counts by
//! reason); 413 over a size limit; 415 for an unsupported content type or encoding;
//! 503 with `Retry-After` while other requests hold the decode budget. Decoding and
//! appending run on the blocking pool.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::admission::BudgetFull;
use super::error::ingest_status;
use super::App;
use crate::ingest::{self, IngestError, Protocol, SampleBounds, WriteLimits, WriteOutcome};

const SAMPLES_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-samples-written");
const HISTOGRAMS_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-histograms-written");
const EXEMPLARS_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-exemplars-written");

pub(crate) async fn remote_write(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let protocol =
        match ingest::negotiate(text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING)) {
            Ok(p) => p,
            Err(e) => return refuse(&app, None, &e),
        };
    let start = Instant::now();
    let settings = app.settings();
    // Reserve the decoded size (read from the snappy header) before allocating it:
    // when requests in flight hold the whole budget, the sender retries later.
    let decoded_len = match ingest::decoded_len(&body, settings.max_decoded_bytes) {
        Ok(n) => n,
        Err(e) => return refuse(&app, Some(protocol), &e),
    };
    let reservation = match app.decode_budget.try_reserve(decoded_len) {
        Ok(r) => r,
        Err(full) => return busy(&app, protocol, &full),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let limits = WriteLimits {
        bounds: SampleBounds {
            min_t: now.saturating_sub(settings.retention_ms),
            max_t: now.saturating_add(settings.max_future_ms),
        },
        labels: settings.label_limits,
    };
    // Decoding and appending are CPU work: off the async workers.
    let worker = app.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _reservation = reservation;
        ingest::decompress(&body, settings.max_decoded_bytes).and_then(|decoded| {
            ingest::write_with(
                &worker.store,
                Some(&worker.analyzer),
                protocol,
                &decoded,
                limits,
            )
        })
    })
    .await
    .unwrap_or_else(|e| Err(IngestError::Internal(format!("write task failed: {e}"))));
    app.metrics
        .remote_write_request_duration
        .with_label_values(&[protocol.as_str()])
        .observe(start.elapsed().as_secs_f64());
    match result {
        Err(e) => refuse(&app, Some(protocol), &e),
        Ok(outcome) => {
            app.metrics.observe_write(protocol, &outcome);
            let (status, body) = if outcome.is_complete() {
                (StatusCode::NO_CONTENT, String::new())
            } else {
                tracing::debug!(summary = %outcome.summary(), "partial remote write");
                (StatusCode::BAD_REQUEST, outcome.summary() + "\n")
            };
            count(&app, protocol, status);
            (status, written_headers(&outcome), body).into_response()
        }
    }
}

/// 503 with `Retry-After`: decoded bytes in flight are at the budget. Senders retry
/// a 5xx with backoff (Prometheus 2.x drops data on a 429 unless told to retry it).
fn busy(app: &App, protocol: Protocol, full: &BudgetFull) -> Response {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    count(app, protocol, status);
    tracing::debug!(
        wanted = full.wanted,
        capacity = full.capacity,
        "remote write deferred: decode budget in use"
    );
    let line = format!(
        "too many decoded bytes in flight: this request needs {} of the {} bytes \
         remote_write.max_decoded_bytes allows across requests; retry later\n",
        full.wanted, full.capacity
    );
    let mut resp = (status, written_headers(&WriteOutcome::default()), line).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

fn count(app: &App, protocol: Protocol, status: StatusCode) {
    app.metrics
        .remote_write_requests
        .with_label_values(&[protocol.as_str(), status.as_str()])
        .inc();
}

/// The v2 response headers, sent on every answer past content negotiation (v1 too,
/// as Prometheus's own receiver does).
fn written_headers(outcome: &WriteOutcome) -> [(HeaderName, String); 3] {
    [
        (SAMPLES_WRITTEN, outcome.samples_written().to_string()),
        (HISTOGRAMS_WRITTEN, "0".to_owned()),
        (EXEMPLARS_WRITTEN, "0".to_owned()),
    ]
}

fn refuse(app: &App, protocol: Option<Protocol>, e: &IngestError) -> Response {
    let status = ingest_status(e);
    let label = protocol.map_or("unknown", Protocol::as_str);
    app.metrics
        .remote_write_requests
        .with_label_values(&[label, status.as_str()])
        .inc();
    tracing::debug!(error = %e, status = status.as_u16(), "remote write refused");
    let line = format!("{e}\n");
    match protocol {
        // Past negotiation: say how much was written (nothing).
        Some(_) => (status, written_headers(&WriteOutcome::default()), line).into_response(),
        None => (status, line).into_response(),
    }
}
