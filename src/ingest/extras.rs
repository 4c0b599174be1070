//! What a remote-write request carries besides samples and is worth keeping: metric
//! metadata (1.0's `WriteRequest.metadata`, 2.0's per-series `metadata`) and
//! exemplars (both versions' per-series `exemplars`), handed to the metadata and
//! exemplar stores.
//!
//! Remote write 1.0 is decoded on the zero-copy path without these; this module
//! reads them in a second, cheap pass over the same bytes: the top level is walked
//! key by key (series skipped by length) for metadata, and only series known to
//! hold exemplars are decoded again. Remote write 2.0 hands each stored series'
//! exemplar and metadata messages over while its samples are read (`wire_v2`), and
//! only those small messages are decoded.
//!
//! Invariants: never fails a write — a malformed or refused entry is counted and
//! skipped; exemplars are kept only for series whose labels are valid (what the
//! sample path stores).

use prost::Message;

use super::proto::{v1, v2};
use super::wire::Reader;
use super::wire_v2::{self, SeriesExtra};
use crate::storage::exemplars::{Exemplar, ExemplarStore};
use crate::storage::metadata::{metric_type, MetadataStore};
use crate::storage::{is_valid_label_name, LabelSet, METRIC_NAME};

/// Where the extras go.
#[derive(Clone, Copy)]
pub struct ExtrasSink<'a> {
    pub metadata: &'a MetadataStore,
    pub exemplars: &'a ExemplarStore,
}

/// Exemplars stored and refused by one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExtrasOutcome {
    pub exemplars_stored: u64,
    pub exemplars_refused: u64,
    pub metadata_received: u64,
}

/// A series' labels as a label set, if they are valid (names non-empty and
/// unique, a metric name present).
fn valid_labels<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<LabelSet> {
    let pairs: Vec<(&str, &str)> = pairs.filter(|(_, v)| !v.is_empty()).collect();
    if pairs.iter().any(|(n, _)| !is_valid_label_name(n))
        || !pairs
            .iter()
            .any(|(n, v)| *n == METRIC_NAME && !v.is_empty())
    {
        return None;
    }
    let ls = LabelSet::from_pairs(pairs.iter().copied());
    (ls.len() == pairs.len()).then_some(ls)
}

impl ExtrasSink<'_> {
    fn exemplar(
        &self,
        series: &LabelSet,
        labels: LabelSet,
        value: f64,
        t: i64,
        out: &mut ExtrasOutcome,
    ) {
        match self.exemplars.add(series, Exemplar { labels, value, t }) {
            Ok(()) => out.exemplars_stored += 1,
            Err(_) => out.exemplars_refused += 1,
        }
    }

    /// Remote write 1.0: the request's metadata, and the exemplars of its series
    /// (decoded again only when `has_exemplars`).
    pub fn read_v1(&self, body: &[u8], has_exemplars: bool) -> ExtrasOutcome {
        let mut out = ExtrasOutcome::default();
        let mut r = Reader::new(body);
        while !r.is_empty() {
            let Ok((field, wire)) = r.key() else { break };
            match field {
                1 | 3 => {
                    let Ok(bytes) = r.bytes(wire) else { break };
                    if field == 3 {
                        if let Ok(m) = v1::MetricMetadata::decode(bytes) {
                            out.metadata_received += 1;
                            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                            self.metadata.record(
                                &text(&m.metric_family_name),
                                metric_type(m.r#type),
                                &text(&m.help),
                                &text(&m.unit),
                            );
                        }
                    } else if has_exemplars {
                        self.series_v1(bytes, &mut out);
                    }
                }
                _ => {
                    if r.skip(field, wire).is_err() {
                        break;
                    }
                }
            }
        }
        out
    }

    fn series_v1(&self, bytes: &[u8], out: &mut ExtrasOutcome) {
        let Ok(ts) = v1::TimeSeries::decode(bytes) else {
            return;
        };
        if ts.exemplars.is_empty() {
            return;
        }
        fn utf8(b: &bytes::Bytes) -> Option<&str> {
            std::str::from_utf8(b).ok()
        }
        let pairs: Option<Vec<(&str, &str)>> = ts
            .labels
            .iter()
            .map(|l| Some((utf8(&l.name)?, utf8(&l.value)?)))
            .collect();
        let Some(series) = pairs.and_then(|p| valid_labels(p.into_iter())) else {
            out.exemplars_refused += ts.exemplars.len() as u64;
            return;
        };
        for e in &ts.exemplars {
            let pairs: Option<Vec<(&str, &str)>> = e
                .labels
                .iter()
                .map(|l| Some((utf8(&l.name)?, utf8(&l.value)?)))
                .collect();
            match pairs {
                Some(p) => {
                    self.exemplar(&series, LabelSet::from_pairs(p), e.value, e.timestamp, out)
                }
                None => out.exemplars_refused += 1,
            }
        }
    }

    /// Remote write 2.0: one exemplar or the metadata of a stored series, read
    /// while its samples are (`labels` are the series' checked labels, `req` holds
    /// the symbols the message refers to).
    pub(super) fn read_v2(
        &self,
        req: &wire_v2::Request<'_>,
        labels: &[(&str, &str)],
        extra: SeriesExtra<'_>,
        out: &mut ExtrasOutcome,
    ) {
        let sym = |r: u32| req.symbol(r);
        match extra {
            SeriesExtra::Metadata(bytes) => {
                let Ok(m) = v2::Metadata::decode(bytes) else {
                    return;
                };
                let (help, unit) = (sym(m.help_ref), sym(m.unit_ref));
                if m.r#type != 0 || help.is_some_and(|h| !h.is_empty()) {
                    out.metadata_received += 1;
                    let name = labels.iter().find(|(n, _)| *n == METRIC_NAME);
                    self.metadata.record(
                        name.map_or("", |(_, v)| v),
                        metric_type(m.r#type),
                        help.unwrap_or_default(),
                        unit.unwrap_or_default(),
                    );
                }
            }
            SeriesExtra::Exemplar(bytes) => {
                let pairs = v2::Exemplar::decode(bytes).ok().and_then(|e| {
                    if e.labels_refs.len() % 2 != 0 {
                        return None;
                    }
                    let pairs: Option<Vec<(&str, &str)>> = e
                        .labels_refs
                        .chunks_exact(2)
                        .map(|p| Some((sym(p[0])?, sym(p[1])?)))
                        .collect();
                    Some((pairs?, e.value, e.timestamp))
                });
                match pairs {
                    Some((p, value, t)) => {
                        let series = LabelSet::from_pairs(labels.iter().copied());
                        self.exemplar(&series, LabelSet::from_pairs(p), value, t, out)
                    }
                    None => out.exemplars_refused += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::Matcher;

    fn label(n: &str, v: &str) -> v1::Label {
        v1::Label {
            name: Bytes::copy_from_slice(n.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    #[test]
    fn v1_metadata_requests_and_exemplars() {
        let (meta, ex) = (MetadataStore::new(10), ExemplarStore::new(10));
        let sink = ExtrasSink {
            metadata: &meta,
            exemplars: &ex,
        };
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![label("__name__", "req_seconds_bucket"), label("le", "1")],
                samples: vec![v1::Sample {
                    value: 3.0,
                    timestamp: 5,
                }],
                exemplars: vec![v1::Exemplar {
                    labels: vec![label("trace_id", "abc")],
                    value: 0.7,
                    timestamp: 4,
                }],
                histograms: vec![],
            }],
            metadata: vec![v1::MetricMetadata {
                r#type: 3,
                metric_family_name: Bytes::from_static(b"req_seconds"),
                help: Bytes::from_static(b"Request latency."),
                unit: Bytes::from_static(b"seconds"),
            }],
        };
        let out = sink.read_v1(&req.encode_to_vec(), true);
        assert_eq!(out.exemplars_stored, 1);
        assert_eq!(out.metadata_received, 1);
        let m = meta.query(None, None, None);
        assert_eq!(m["req_seconds"][0].kind, "histogram");
        assert_eq!(m["req_seconds"][0].unit, "seconds");
        let got = ex.select(&[vec![Matcher::equal("le", "1")]], 0, 10);
        assert_eq!(got[0].1[0].labels.get("trace_id"), Some("abc"));
    }

    #[test]
    fn v2_inline_metadata_and_exemplars() {
        let (meta, ex) = (MetadataStore::new(10), ExemplarStore::new(10));
        let sink = ExtrasSink {
            metadata: &meta,
            exemplars: &ex,
        };
        let symbols = [
            "",
            "__name__",
            "http_requests_total",
            "Requests.",
            "trace_id",
            "t1",
        ];
        let req = v2::Request {
            symbols: symbols
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: 9,
                    ..Default::default()
                }],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![4, 5],
                    value: 1.0,
                    timestamp: 9,
                }],
                metadata: Some(v2::Metadata {
                    r#type: 1,
                    help_ref: 3,
                    unit_ref: 0,
                }),
                ..Default::default()
            }],
        };
        let store = crate::storage::Store::new(crate::storage::StoreConfig::default());
        let write = |req: &v2::Request| {
            let limits = crate::ingest::WriteLimits {
                bounds: crate::ingest::SampleBounds::unbounded(),
                labels: crate::ingest::LabelLimits::default(),
            };
            let body = req.encode_to_vec();
            crate::ingest::write_with_extras(
                &store,
                None,
                Some(sink),
                crate::ingest::Protocol::V2,
                &body,
                limits,
            )
            .unwrap()
        };
        let out = write(&req);
        assert_eq!((out.exemplars_written, out.exemplars_dropped), (1, 0));
        assert_eq!(
            meta.query(Some("http_requests_total"), None, None)["http_requests_total"][0].help,
            "Requests."
        );
        let got = ex.select(
            &[vec![Matcher::equal("__name__", "http_requests_total")]],
            0,
            10,
        );
        assert_eq!(got[0].1[0].labels.get("trace_id"), Some("t1"));
        // A bad symbol reference refuses the exemplar, not the request.
        let mut bad = req.clone();
        bad.timeseries[0].exemplars[0].labels_refs = vec![4, 99];
        bad.timeseries[0].exemplars[0].timestamp = 10;
        bad.timeseries[0].samples[0].timestamp = 10;
        let out = write(&bad);
        assert_eq!((out.exemplars_written, out.exemplars_dropped), (0, 1));
        assert_eq!(out.samples_received, 1);
    }
}
