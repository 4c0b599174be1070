//! Remote-write ingest: content negotiation, snappy decompression, protobuf decoding,
//! validation, and the batch append into the store.
//!
//! Everything here is synchronous; the HTTP handler calls it with the request body.
//! Label strings are sliced out of the decompressed buffer (no copy per label) and
//! checked for UTF-8 here. Valid series of a request are stored even when others are
//! rejected; the outcome counts every rejection by reason so the reply can say so.
//! Nothing in this module panics on input.

pub mod extras;
pub mod proto;
mod wire;

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use crate::anomaly::{Analyzer, SeriesBatch};
use crate::storage::{
    is_valid_label_name, AppendStats, LabelSet, SeriesId, SeriesWrite, Store, METRIC_NAME,
};

/// The two remote-write protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "1.0",
            Protocol::V2 => "2.0",
        }
    }
}

/// Why a request was refused as a whole. Mapped to HTTP status codes in `http`.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Content-Type or Content-Encoding this receiver does not speak (415).
    #[error("{0}")]
    Unsupported(String),
    /// The body is larger than allowed, before or after decompression (413).
    #[error("{0}")]
    TooLarge(String),
    /// The snappy block could not be decoded (400).
    #[error("snappy decode error: {0}")]
    Snappy(#[from] snap::Error),
    /// The protobuf message could not be decoded (400).
    #[error("protobuf decode error: {0}")]
    Protobuf(String),
    /// The message decoded but breaks a rule of the protocol as a whole (400).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Chooses the protocol from `Content-Type` (never from the version header), as the
/// Prometheus receiver does, but trimming spaces around parameters.
pub fn negotiate(content_type: Option<&str>, content_encoding: Option<&str>) -> Result<Protocol> {
    match content_encoding.map(str::trim) {
        None | Some("") => {}
        Some(e) if e.eq_ignore_ascii_case("snappy") => {}
        Some(e) => {
            return Err(IngestError::Unsupported(format!(
                "unsupported Content-Encoding {e:?}; only snappy"
            )))
        }
    }
    let Some(ct) = content_type else {
        return Ok(Protocol::V1);
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(IngestError::Unsupported(format!(
            "unsupported Content-Type {media:?}; expected application/x-protobuf"
        )));
    }
    let mut protocol = Protocol::V1;
    for param in parts {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if key.trim() != "proto" {
            continue;
        }
        protocol = match value.trim() {
            "prometheus.WriteRequest" => Protocol::V1,
            "io.prometheus.write.v2.Request" => Protocol::V2,
            other => {
                return Err(IngestError::Unsupported(format!(
                    "unsupported remote-write proto {other:?}"
                )))
            }
        };
    }
    Ok(protocol)
}

/// Decompresses a snappy block, refusing (before allocating) one that claims to be
/// larger than `max_decoded` bytes.
pub fn decompress(body: &[u8], max_decoded: usize) -> Result<Bytes> {
    let len = snap::raw::decompress_len(body)?;
    if len > max_decoded {
        return Err(IngestError::TooLarge(format!(
            "decompressed body would be {len} bytes, over the limit of {max_decoded}"
        )));
    }
    let mut out = vec![0u8; len];
    let n = snap::raw::Decoder::new().decompress(body, &mut out)?;
    out.truncate(n);
    Ok(Bytes::from(out))
}

/// Limits checked per sample, by the service's clock.
#[derive(Debug, Clone, Copy)]
pub struct SampleBounds {
    /// Samples older than this are too old (outside the retention window).
    pub min_t: i64,
    /// Samples newer than this are too far in the future.
    pub max_t: i64,
}

impl SampleBounds {
    /// Accepts everything: for loaders replaying historical data.
    pub fn unbounded() -> Self {
        SampleBounds {
            min_t: i64::MIN,
            max_t: i64::MAX,
        }
    }
}

/// What happened to one request.
#[derive(Debug, Default, Clone)]
pub struct WriteOutcome {
    pub series_received: u64,
    pub samples_received: u64,
    pub histograms_dropped: u64,
    /// Exemplars received and not stored (no exemplar store, or refused by it).
    pub exemplars_dropped: u64,
    /// Exemplars stored (see `extras`).
    pub exemplars_written: u64,
    /// Series refused for their labels (bad UTF-8, invalid or duplicate names, no
    /// metric name, bad symbol references).
    pub invalid_series: u64,
    /// Samples of those series.
    pub invalid_series_samples: u64,
    /// The first label problem, for the reply.
    pub first_invalid: Option<String>,
    pub too_old: u64,
    pub too_far_in_future: u64,
    pub append: AppendStats,
}

impl WriteOutcome {
    /// Samples written to the store (including resent duplicates, which are stored).
    pub fn samples_written(&self) -> u64 {
        self.append.samples_stored + self.append.samples_duplicate
    }

    /// True when every sample was accepted.
    pub fn is_complete(&self) -> bool {
        self.invalid_series == 0
            && self.too_old == 0
            && self.too_far_in_future == 0
            && self.append.rejected() == 0
    }

    /// Rejected sample counts by reason, for metrics and the reply.
    pub fn rejections(&self) -> [(&'static str, u64); 6] {
        [
            ("invalid_labels", self.invalid_series_samples),
            ("too_old", self.too_old),
            ("too_far_in_future", self.too_far_in_future),
            ("out_of_order", self.append.out_of_order),
            ("duplicate_timestamp", self.append.duplicate_timestamp),
            ("series_limit", self.append.series_limit),
        ]
    }

    /// A one-line description of a partial write.
    pub fn summary(&self) -> String {
        let reasons: Vec<String> = self
            .rejections()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let mut line = format!(
            "partial write: stored {} of {} samples; rejected samples by reason: {}",
            self.samples_written(),
            self.samples_received,
            reasons.join(" ")
        );
        if let Some(first) = &self.first_invalid {
            line.push_str("; first invalid series: ");
            line.push_str(first);
        }
        line
    }
}

/// Request-scoped buffers: every label and sample of a request lives in two flat
/// vectors, and each series refers to ranges of them. Two allocations per request,
/// none per sample.
#[derive(Default)]
struct Batch<'a> {
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<(i64, f64)>,
    series: Vec<(Range<usize>, Range<usize>)>,
}

impl<'a> Batch<'a> {
    /// Checks and normalises the labels just pushed from `start`: sorts them if the
    /// sender did not, drops empty values, refuses duplicates and a missing name.
    fn finish_labels(&mut self, start: usize) -> std::result::Result<Range<usize>, String> {
        let labels = &mut self.labels[start..];
        if !labels.windows(2).all(|w| w[0].0 < w[1].0) {
            labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
            if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(format!("duplicate label name {:?}", w[0].0));
            }
        }
        // Empty values mean "no such label"; Prometheus drops them too.
        let mut kept = start;
        for i in start..self.labels.len() {
            if !self.labels[i].1.is_empty() {
                self.labels[kept] = self.labels[i];
                kept += 1;
            }
        }
        self.labels.truncate(kept);
        let range = start..kept;
        if !self.labels[range.clone()]
            .iter()
            .any(|(n, _)| *n == METRIC_NAME)
        {
            return Err("missing or empty metric name (__name__)".to_owned());
        }
        Ok(range)
    }

    /// Completes the series whose labels start at `label_start` and samples at
    /// `sample_start`: keeps it with its in-bounds samples, or drops it whole when its
    /// labels were refused.
    fn finish_series(
        &mut self,
        labels: std::result::Result<Range<usize>, String>,
        label_start: usize,
        sample_start: usize,
        bounds: SampleBounds,
        outcome: &mut WriteOutcome,
    ) {
        match labels {
            Ok(labels) => {
                let mut kept = sample_start;
                for i in sample_start..self.samples.len() {
                    let (t, _) = self.samples[i];
                    if t < bounds.min_t {
                        outcome.too_old += 1;
                    } else if t > bounds.max_t {
                        outcome.too_far_in_future += 1;
                    } else {
                        self.samples[kept] = self.samples[i];
                        kept += 1;
                    }
                }
                self.samples.truncate(kept);
                self.series.push((labels, sample_start..kept));
            }
            Err(reason) => {
                outcome.invalid_series += 1;
                outcome.invalid_series_samples += (self.samples.len() - sample_start) as u64;
                outcome.first_invalid.get_or_insert(reason);
                self.labels.truncate(label_start);
                self.samples.truncate(sample_start);
            }
        }
    }

    /// Appends the batch; when detectors are loaded, hands them each stored series'
    /// samples right after.
    fn append_to(&self, store: &Store, analyzer: Option<&Analyzer>) -> AppendStats {
        let writes: Vec<SeriesWrite<'_>> = self
            .series
            .iter()
            .map(|(l, s)| SeriesWrite {
                labels: &self.labels[l.clone()],
                samples: &self.samples[s.clone()],
            })
            .collect();
        let Some(analyzer) = analyzer.filter(|a| a.is_active()) else {
            return store.append_batch(&writes);
        };
        let mut stored: Vec<(usize, SeriesId, LabelSet)> = Vec::with_capacity(writes.len());
        let stats = store.append_batch_observed(&writes, &mut |i, id, labels| {
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
        analyzer.observe(store, &batch);
        stats
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> std::result::Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("invalid UTF-8 in {what}"))
}

/// Decodes a decompressed remote-write body, appends its samples, and (when given
/// and loaded) runs the detectors over them.
pub fn write(
    store: &Store,
    analyzer: Option<&Analyzer>,
    protocol: Protocol,
    body: Bytes,
    bounds: SampleBounds,
) -> Result<WriteOutcome> {
    write_with_extras(store, analyzer, None, protocol, body, bounds)
}

/// [`write`], also keeping the request's metadata and exemplars in `extras`.
pub fn write_with_extras(
    store: &Store,
    analyzer: Option<&Analyzer>,
    extras: Option<extras::ExtrasSink<'_>>,
    protocol: Protocol,
    body: Bytes,
    bounds: SampleBounds,
) -> Result<WriteOutcome> {
    let mut outcome = match protocol {
        Protocol::V1 => {
            let mut outcome = write_v1(store, analyzer, &body, bounds)?;
            if let Some(sink) = extras {
                let got = sink.read_v1(&body, outcome.exemplars_dropped > 0);
                outcome.exemplars_written = got.exemplars_stored;
            }
            outcome
        }
        Protocol::V2 => {
            let req = proto::v2::Request::decode(body)
                .map_err(|e| IngestError::Protobuf(e.to_string()))?;
            write_v2(store, analyzer, extras, req, bounds)?
        }
    };
    outcome.exemplars_dropped = outcome
        .exemplars_dropped
        .saturating_sub(outcome.exemplars_written);
    Ok(outcome)
}

/// Remote write 1.0 through the zero-allocation wire reader: label strings stay
/// slices of `body`.
fn write_v1(
    store: &Store,
    analyzer: Option<&Analyzer>,
    body: &[u8],
    bounds: SampleBounds,
) -> Result<WriteOutcome> {
    let mut outcome = WriteOutcome::default();
    let mut batch = Batch::default();
    wire::for_each_series(body, |series| {
        let label_start = batch.labels.len();
        let sample_start = batch.samples.len();
        let mut bad_label: Option<String> = None;
        let (labels, samples) = (&mut batch.labels, &mut batch.samples);
        let counts = wire::read_series(
            series,
            |name, value| {
                if bad_label.is_some() {
                    return;
                }
                match (utf8(name, "label name"), utf8(value, "label value")) {
                    (Ok(n), Ok(v)) if is_valid_label_name(n) || n == METRIC_NAME => {
                        labels.push((n, v))
                    }
                    (Ok(n), Ok(_)) => bad_label = Some(format!("invalid label name {n:?}")),
                    (Err(e), _) | (_, Err(e)) => bad_label = Some(e),
                }
            },
            |t, v| samples.push((t, v)),
        )?;
        outcome.series_received += 1;
        outcome.samples_received += counts.samples as u64;
        outcome.histograms_dropped += counts.histograms as u64;
        outcome.exemplars_dropped += counts.exemplars as u64;
        let labels = match bad_label {
            Some(reason) => Err(reason),
            None => batch.finish_labels(label_start),
        };
        batch.finish_series(labels, label_start, sample_start, bounds, &mut outcome);
        Ok(())
    })
    .map_err(|e| IngestError::Protobuf(e.to_string()))?;
    outcome.append = batch.append_to(store, analyzer);
    Ok(outcome)
}

fn write_v2(
    store: &Store,
    analyzer: Option<&Analyzer>,
    extras: Option<extras::ExtrasSink<'_>>,
    req: proto::v2::Request,
    bounds: SampleBounds,
) -> Result<WriteOutcome> {
    // Every symbol is checked for UTF-8 once; series then borrow them by index.
    let symbols: Vec<&str> = req
        .symbols
        .iter()
        .enumerate()
        .map(|(i, s)| {
            std::str::from_utf8(s)
                .map_err(|_| IngestError::Invalid(format!("invalid UTF-8 in symbol {i}")))
        })
        .collect::<Result<_>>()?;
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(IngestError::Invalid(
            "symbols[0] must be the empty string".to_owned(),
        ));
    }
    let mut outcome = WriteOutcome::default();
    let mut batch = Batch::default();
    for (n, ts) in req.timeseries.iter().enumerate() {
        outcome.series_received += 1;
        outcome.samples_received += ts.samples.len() as u64;
        outcome.histograms_dropped += ts.histograms.len() as u64;
        outcome.exemplars_dropped += ts.exemplars.len() as u64;
        let label_start = batch.labels.len();
        let checked: std::result::Result<(), String> = (|| {
            if ts.samples.is_empty() && ts.histograms.is_empty() {
                return Err(format!("series {n} has no samples and no histograms"));
            }
            if ts.labels_refs.len() % 2 != 0 {
                return Err(format!("series {n}: odd number of labels_refs"));
            }
            for pair in ts.labels_refs.chunks_exact(2) {
                let sym = |r: u32| {
                    symbols.get(r as usize).copied().ok_or_else(|| {
                        format!(
                            "series {n}: symbol reference {r} out of range ({} symbols)",
                            symbols.len()
                        )
                    })
                };
                let (name, value) = (sym(pair[0])?, sym(pair[1])?);
                if name.is_empty() {
                    return Err(format!("series {n}: empty label name"));
                }
                batch.labels.push((name, value));
            }
            Ok(())
        })();
        let labels = checked.and_then(|()| batch.finish_labels(label_start));
        let sample_start = batch.samples.len();
        batch
            .samples
            .extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
        batch.finish_series(labels, label_start, sample_start, bounds, &mut outcome);
    }
    outcome.append = batch.append_to(store, analyzer);
    if let Some(sink) = extras {
        outcome.exemplars_written = sink.read_v2(&req, &symbols).exemplars_stored;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests;
