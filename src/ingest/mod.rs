//! Remote-write ingest: content negotiation, snappy decompression, protobuf decoding,
//! validation, and the batch append into the store.
//!
//! Everything here is synchronous; the HTTP handler calls it with the request body.
//! Label strings are sliced out of the decompressed buffer (no copy per label) and
//! checked for UTF-8 here. Valid series of a request are stored even when others are
//! rejected; the outcome counts every rejection by reason so the reply can say so.
//! Nothing in this module panics on input.

pub mod proto;
mod wire;
mod wire_v2;

use std::ops::Range;

use bytes::Bytes;

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
    /// The receiver failed, not the request (500).
    #[error("{0}")]
    Internal(String),
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

/// The size a snappy block says it decompresses to, refused when over `max_decoded`
/// bytes. Reads only the block's header.
pub fn decoded_len(body: &[u8], max_decoded: usize) -> Result<usize> {
    let len = snap::raw::decompress_len(body)?;
    if len > max_decoded {
        return Err(IngestError::TooLarge(format!(
            "decompressed body would be {len} bytes, over the limit of {max_decoded}"
        )));
    }
    Ok(len)
}

/// Decompresses a snappy block, refusing (before allocating) one that claims to be
/// larger than `max_decoded` bytes.
pub fn decompress(body: &[u8], max_decoded: usize) -> Result<Bytes> {
    let len = decoded_len(body, max_decoded)?;
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
    pub exemplars_dropped: u64,
    /// Series refused for their labels (bad UTF-8, invalid or duplicate names, no
    /// metric name, bad symbol references).
    pub invalid_series: u64,
    /// Samples of those series.
    pub invalid_series_samples: u64,
    /// Series refused for a label limit (`remote_write.label_limit`, ...).
    pub over_limit_series: u64,
    /// Samples of those series.
    pub over_limit_samples: u64,
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
            && self.over_limit_series == 0
            && self.too_old == 0
            && self.too_far_in_future == 0
            && self.append.rejected() == 0
    }

    /// Rejected sample counts by reason, for metrics and the reply.
    pub fn rejections(&self) -> [(&'static str, u64); 8] {
        [
            ("invalid_labels", self.invalid_series_samples),
            ("label_limits", self.over_limit_samples),
            ("too_old", self.too_old),
            ("too_far_in_future", self.too_far_in_future),
            ("out_of_order", self.append.out_of_order),
            ("duplicate_timestamp", self.append.duplicate_timestamp),
            ("series_limit", self.append.series_limit),
            ("memory_limit", self.append.memory_limit),
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

/// Limits on a series' labels, as Prometheus's `label_limit`,
/// `label_name_length_limit` and `label_value_length_limit` (0: no limit). A series
/// over one is refused with the limit's name; the rest of the request is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    /// Most labels per series, the metric name included.
    pub max_labels: usize,
    /// Longest label name in bytes.
    pub max_name_bytes: usize,
    /// Longest label value in bytes.
    pub max_value_bytes: usize,
}

impl LabelLimits {
    /// No limits: for loaders replaying trusted data.
    pub fn unlimited() -> Self {
        LabelLimits {
            max_labels: 0,
            max_name_bytes: 0,
            max_value_bytes: 0,
        }
    }
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            max_labels: 64,
            max_name_bytes: 1024,
            max_value_bytes: 4096,
        }
    }
}

/// What a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    pub bounds: SampleBounds,
    pub labels: LabelLimits,
}

/// Why a series was refused.
enum SeriesProblem {
    /// Its labels break the data model (bad UTF-8, invalid or duplicate names, no
    /// metric name, bad symbol references).
    Invalid(String),
    /// Its labels are over a configured limit.
    OverLimit(String),
}

/// A label or a name quoted for a message, cut to a readable length.
fn quoted_prefix(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

/// Checks and normalises one series' labels in place: names valid, sorted and
/// unique, empty values dropped, a metric name present, every limit kept. The
/// same rules for both protocol versions.
fn finish_labels(
    labels: &mut Vec<(&str, &str)>,
    limits: &LabelLimits,
) -> Result<(), SeriesProblem> {
    use SeriesProblem::{Invalid, OverLimit};
    for &(name, value) in labels.iter() {
        if !is_valid_label_name(name) {
            return Err(Invalid(format!(
                "invalid label name {}",
                quoted_prefix(name)
            )));
        }
        if limits.max_name_bytes > 0 && name.len() > limits.max_name_bytes {
            return Err(OverLimit(format!(
                "label name {} is {} bytes long, over the limit of {} (remote_write.label_name_length_limit)",
                quoted_prefix(name),
                name.len(),
                limits.max_name_bytes
            )));
        }
        if limits.max_value_bytes > 0 && value.len() > limits.max_value_bytes {
            return Err(OverLimit(format!(
                "value of label {name:?} is {} bytes long, over the limit of {} (remote_write.label_value_length_limit)",
                value.len(),
                limits.max_value_bytes
            )));
        }
    }
    if !labels.windows(2).all(|w| w[0].0 < w[1].0) {
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Invalid(format!("duplicate label name {:?}", w[0].0)));
        }
    }
    // Empty values mean "no such label"; Prometheus drops them too (after checking
    // their names).
    labels.retain(|(_, v)| !v.is_empty());
    if !labels.iter().any(|(n, _)| *n == METRIC_NAME) {
        return Err(Invalid(
            "missing or empty metric name (__name__)".to_owned(),
        ));
    }
    if limits.max_labels > 0 && labels.len() > limits.max_labels {
        return Err(OverLimit(format!(
            "series has {} labels, over the limit of {} (remote_write.label_limit)",
            labels.len(),
            limits.max_labels
        )));
    }
    Ok(())
}

/// Samples (and labels) a [`Writer`] holds before appending them: 64 Ki samples
/// are 1 MiB, so a request's working memory stays small whatever its size.
const FLUSH_SAMPLES: usize = 1 << 16;
const FLUSH_LABELS: usize = 1 << 16;

/// Takes a request's series one at a time and appends them to the store in batches
/// of bounded size: labels and samples of a batch live in two flat vectors, each
/// series refers to ranges of them, and label strings stay slices of the request
/// buffer. A series longer than a batch is split across batches.
struct Writer<'a, 's> {
    store: &'s Store,
    analyzer: Option<&'s Analyzer>,
    limits: WriteLimits,
    outcome: WriteOutcome,
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<(i64, f64)>,
    series: Vec<(Range<usize>, Range<usize>)>,
    /// The series being filled: its labels in `labels` and where its samples start.
    open: Option<(Range<usize>, usize)>,
}

impl<'a, 's> Writer<'a, 's> {
    fn new(store: &'s Store, analyzer: Option<&'s Analyzer>, limits: WriteLimits) -> Self {
        Writer {
            store,
            analyzer: analyzer.filter(|a| a.is_active()),
            limits,
            outcome: WriteOutcome::default(),
            labels: Vec::new(),
            samples: Vec::new(),
            series: Vec::new(),
            open: None,
        }
    }

    /// Counts a series as received.
    fn received(&mut self, samples: usize, histograms: usize, exemplars: usize) {
        self.outcome.series_received += 1;
        self.outcome.samples_received += samples as u64;
        self.outcome.histograms_dropped += histograms as u64;
        self.outcome.exemplars_dropped += exemplars as u64;
    }

    /// Refuses a series (with `samples` samples) for `problem`.
    fn refuse(&mut self, problem: SeriesProblem, samples: usize) {
        let reason = match problem {
            SeriesProblem::Invalid(r) => {
                self.outcome.invalid_series += 1;
                self.outcome.invalid_series_samples += samples as u64;
                r
            }
            SeriesProblem::OverLimit(r) => {
                self.outcome.over_limit_series += 1;
                self.outcome.over_limit_samples += samples as u64;
                r
            }
        };
        self.outcome.first_invalid.get_or_insert(reason);
    }

    /// Starts a series with checked labels; its samples follow through `sample`.
    fn open_series(&mut self, labels: &[(&'a str, &'a str)]) {
        let start = self.labels.len();
        self.labels.extend_from_slice(labels);
        self.open = Some((start..self.labels.len(), self.samples.len()));
    }

    /// Adds a sample of the open series if it is within the time bounds.
    fn sample(&mut self, t: i64, v: f64) {
        let bounds = self.limits.bounds;
        if t < bounds.min_t {
            self.outcome.too_old += 1;
        } else if t > bounds.max_t {
            self.outcome.too_far_in_future += 1;
        } else {
            self.samples.push((t, v));
            if self.samples.len() >= FLUSH_SAMPLES {
                self.flush();
            }
        }
    }

    fn close_series(&mut self) {
        if let Some((labels, first)) = self.open.take() {
            if first < self.samples.len() {
                self.series.push((labels, first..self.samples.len()));
            }
        }
        if self.labels.len() >= FLUSH_LABELS {
            self.flush();
        }
    }

    /// Appends what is collected; an open series continues in the next batch.
    fn flush(&mut self) {
        let open = self.open.take();
        let reopen: Vec<(&'a str, &'a str)> = match &open {
            Some((labels, first)) => {
                if *first < self.samples.len() {
                    self.series
                        .push((labels.clone(), *first..self.samples.len()));
                }
                self.labels[labels.clone()].to_vec()
            }
            None => Vec::new(),
        };
        if !self.series.is_empty() {
            self.outcome.append += self.append();
        }
        self.labels.clear();
        self.samples.clear();
        self.series.clear();
        if open.is_some() {
            self.open_series(&reopen);
        }
    }

    /// Appends the batch; when detectors are loaded, hands them each stored series'
    /// samples right after.
    fn append(&self) -> AppendStats {
        let writes: Vec<SeriesWrite<'_>> = self
            .series
            .iter()
            .map(|(l, s)| SeriesWrite {
                labels: &self.labels[l.clone()],
                samples: &self.samples[s.clone()],
            })
            .collect();
        let Some(analyzer) = self.analyzer else {
            return self.store.append_batch(&writes);
        };
        let mut stored: Vec<(usize, SeriesId, LabelSet)> = Vec::with_capacity(writes.len());
        let stats = self
            .store
            .append_batch_observed(&writes, &mut |i, id, labels| {
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
        analyzer.observe(self.store, &batch);
        stats
    }

    fn finish(mut self) -> WriteOutcome {
        self.close_series();
        self.flush();
        self.outcome
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> std::result::Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("invalid UTF-8 in {what}"))
}

/// Decodes a decompressed remote-write body, appends its samples, and (when given
/// and loaded) runs the detectors over them, with the default label limits.
pub fn write(
    store: &Store,
    analyzer: Option<&Analyzer>,
    protocol: Protocol,
    body: Bytes,
    bounds: SampleBounds,
) -> Result<WriteOutcome> {
    let limits = WriteLimits {
        bounds,
        labels: LabelLimits::default(),
    };
    write_with(store, analyzer, protocol, &body, limits)
}

/// [`write`] with explicit limits. A request whose protobuf is malformed anywhere is
/// refused whole before anything is stored.
pub fn write_with(
    store: &Store,
    analyzer: Option<&Analyzer>,
    protocol: Protocol,
    body: &[u8],
    limits: WriteLimits,
) -> Result<WriteOutcome> {
    match protocol {
        Protocol::V1 => write_v1(store, analyzer, body, limits),
        Protocol::V2 => write_v2(store, analyzer, body, limits),
    }
}

/// Remote write 1.0 through the zero-allocation wire reader: label strings stay
/// slices of `body`.
fn write_v1(
    store: &Store,
    analyzer: Option<&Analyzer>,
    body: &[u8],
    limits: WriteLimits,
) -> Result<WriteOutcome> {
    let protobuf = |e: wire::WireError| IngestError::Protobuf(e.to_string());
    // Check the whole message first, so that a malformed request stores nothing.
    wire::for_each_series(body, |s| {
        wire::read_series(s, |_, _| {}, |_, _| {}).map(drop)
    })
    .map_err(protobuf)?;
    let mut writer = Writer::new(store, analyzer, limits);
    let mut labels: Vec<(&str, &str)> = Vec::new();
    wire::for_each_series(body, |series| {
        // Labels first (they may follow the samples on the wire), then samples.
        labels.clear();
        let mut bad: Option<String> = None;
        let counts = wire::read_series(
            series,
            |name, value| {
                if bad.is_none() {
                    match (utf8(name, "label name"), utf8(value, "label value")) {
                        (Ok(n), Ok(v)) => labels.push((n, v)),
                        (Err(e), _) | (_, Err(e)) => bad = Some(e),
                    }
                }
            },
            |_, _| {},
        )?;
        writer.received(counts.samples, counts.histograms, counts.exemplars);
        let checked = match bad {
            Some(reason) => Err(SeriesProblem::Invalid(reason)),
            None => finish_labels(&mut labels, &limits.labels),
        };
        match checked {
            Err(problem) => writer.refuse(problem, counts.samples),
            Ok(()) => {
                writer.open_series(&labels);
                wire::read_series(series, |_, _| {}, |t, v| writer.sample(t, v))?;
                writer.close_series();
            }
        }
        Ok(())
    })
    .map_err(protobuf)?;
    Ok(writer.finish())
}

/// Remote write 2.0 through the streaming reader: symbols stay slices of `body`,
/// nothing is built per series or sample beyond the bounded batch.
fn write_v2(
    store: &Store,
    analyzer: Option<&Analyzer>,
    body: &[u8],
    limits: WriteLimits,
) -> Result<WriteOutcome> {
    let req = wire_v2::Request::index(body).map_err(|e| match e {
        wire_v2::IndexError::Wire(e) => IngestError::Protobuf(e.to_string()),
        wire_v2::IndexError::Utf8(i) => {
            IngestError::Invalid(format!("invalid UTF-8 in symbol {i}"))
        }
        wire_v2::IndexError::TooLarge => {
            IngestError::TooLarge("a remote-write 2.0 body must be under 4 GiB".to_owned())
        }
    })?;
    if req.symbol(0).is_some_and(|s| !s.is_empty()) {
        return Err(IngestError::Invalid(
            "symbols[0] must be the empty string".to_owned(),
        ));
    }
    let mut writer = Writer::new(store, analyzer, limits);
    let mut refs: Vec<u32> = Vec::new();
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let mut n = 0usize;
    req.for_each_series(|series| {
        refs.clear();
        labels.clear();
        // Checked whole by `index`: reading cannot fail.
        let counts = wire_v2::read_series(series, |r| refs.push(r), |_, _| {}).unwrap_or_default();
        writer.received(counts.samples, counts.histograms, counts.exemplars);
        let checked = (|| {
            if counts.samples == 0 && counts.histograms == 0 {
                return Err(SeriesProblem::Invalid(format!(
                    "series {n} has no samples and no histograms"
                )));
            }
            if refs.len() % 2 != 0 {
                return Err(SeriesProblem::Invalid(format!(
                    "series {n}: odd number of labels_refs"
                )));
            }
            for pair in refs.chunks_exact(2) {
                let sym = |r: u32| {
                    req.symbol(r).ok_or_else(|| {
                        SeriesProblem::Invalid(format!(
                            "series {n}: symbol reference {r} out of range ({} symbols)",
                            req.symbol_count()
                        ))
                    })
                };
                let (name, value) = (sym(pair[0])?, sym(pair[1])?);
                if name.is_empty() {
                    return Err(SeriesProblem::Invalid(format!(
                        "series {n}: empty label name"
                    )));
                }
                labels.push((name, value));
            }
            finish_labels(&mut labels, &limits.labels)
        })();
        match checked {
            Err(problem) => writer.refuse(problem, counts.samples),
            Ok(()) => {
                writer.open_series(&labels);
                let _ = wire_v2::read_series(series, |_| {}, |t, v| writer.sample(t, v));
                writer.close_series();
            }
        }
        n += 1;
    });
    Ok(writer.finish())
}

#[cfg(test)]
mod tests;
