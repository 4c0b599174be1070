//! A streaming reader for the remote-write 2.0 wire format (`io.prometheus.write.v2.
//! Request`, proto/remote_v2.proto).
//!
//! Decoding a 2.0 request with the generated types builds a `Vec` per series and a
//! struct per sample, many times the request's size (a 256 MiB request once peaked at
//! 4.5 GB). This reader instead walks the bytes: one pass checks the whole message and
//! indexes the symbol table (4 bytes per symbol, pointing into the buffer), a second
//! hands out each series' label references and samples through callbacks, so memory
//! beyond the request buffer is the index plus whatever the caller keeps.
//!
//! Invariants: after [`Request::index`] succeeded, reading a series never fails on
//! the wire format (the first pass checked every field ingest reads); symbols are
//! checked for UTF-8 once, in the first pass. Unknown fields are skipped; proto3
//! defaults read as zero; `labels_refs` is read packed or unpacked.

use super::wire::{Reader, WireError, LEN, VARINT};

type Result<T> = std::result::Result<T, WireError>;

/// Field numbers of the messages read here.
const REQUEST_SYMBOLS: u64 = 4;
const REQUEST_TIMESERIES: u64 = 5;
const SERIES_LABELS_REFS: u64 = 1;
const SERIES_SAMPLES: u64 = 2;
const SERIES_HISTOGRAMS: u64 = 3;
const SERIES_EXEMPLARS: u64 = 4;
const SAMPLE_VALUE: u64 = 1;
const SAMPLE_TIMESTAMP: u64 = 2;

/// A checked request: its buffer and where each symbol's length prefix starts.
pub(crate) struct Request<'a> {
    body: &'a [u8],
    symbols: Vec<u32>,
}

/// Why a request was refused as a whole.
#[derive(Debug)]
pub(crate) enum IndexError {
    /// Malformed protobuf.
    Wire(WireError),
    /// A symbol is not UTF-8 (its index).
    Utf8(usize),
    /// The buffer is too large to index with 32-bit offsets.
    TooLarge,
}

impl From<WireError> for IndexError {
    fn from(e: WireError) -> Self {
        IndexError::Wire(e)
    }
}

impl<'a> Request<'a> {
    /// Checks the whole message and indexes its symbols.
    pub(crate) fn index(body: &'a [u8]) -> std::result::Result<Self, IndexError> {
        if u32::try_from(body.len()).is_err() {
            return Err(IndexError::TooLarge);
        }
        let mut symbols = Vec::new();
        let mut r = Reader::new(body);
        while !r.is_empty() {
            let at = body.len() - r.remaining();
            match r.key()? {
                (REQUEST_SYMBOLS, wire) => {
                    let len_at = at + key_len(body, at);
                    let s = r.bytes(wire)?;
                    if std::str::from_utf8(s).is_err() {
                        return Err(IndexError::Utf8(symbols.len()));
                    }
                    // In range: the length was checked against `u32` above.
                    symbols.push(len_at as u32);
                }
                (REQUEST_TIMESERIES, wire) => check_series(r.bytes(wire)?)?,
                (f, wire) => r.skip(f, wire)?,
            }
        }
        Ok(Request { body, symbols })
    }

    pub(crate) fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// Symbol `i`, or `None` when out of range.
    pub(crate) fn symbol(&self, i: u32) -> Option<&'a str> {
        let at = *self.symbols.get(i as usize)? as usize;
        let mut r = Reader::new(self.body.get(at..)?);
        let s = r.bytes(LEN).ok()?;
        // Checked in `index`; a second check is cheap and keeps this free of `unsafe`.
        std::str::from_utf8(s).ok()
    }

    /// Calls `on_series` with each series' bytes, in order.
    pub(crate) fn for_each_series(&self, mut on_series: impl FnMut(&'a [u8])) {
        let mut r = Reader::new(self.body);
        while !r.is_empty() {
            // The message was checked whole in `index`.
            let Ok((field, wire)) = r.key() else { return };
            let next = if field == REQUEST_TIMESERIES {
                r.bytes(wire).map(&mut on_series)
            } else {
                r.skip(field, wire)
            };
            if next.is_err() {
                return;
            }
        }
    }
}

/// The length of the varint key at `at` (1 to 10 bytes).
fn key_len(body: &[u8], at: usize) -> usize {
    body[at..]
        .iter()
        .take(10)
        .position(|b| b & 0x80 == 0)
        .map_or(10, |p| p + 1)
}

/// What a series holds besides its labels and samples.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesCounts {
    pub(crate) samples: usize,
    pub(crate) histograms: usize,
    pub(crate) exemplars: usize,
}

/// Checks a `TimeSeries` message: every field ingest reads has the right wire type
/// and fits.
fn check_series(series: &[u8]) -> Result<()> {
    read_series(series, |_| {}, |_, _| {}).map(drop)
}

/// Reads one `TimeSeries`: its label references in order, its samples as
/// (timestamp, value); histograms and exemplars are only counted.
pub(crate) fn read_series(
    series: &[u8],
    mut on_ref: impl FnMut(u32),
    mut on_sample: impl FnMut(i64, f64),
) -> Result<SeriesCounts> {
    let mut counts = SeriesCounts::default();
    let mut r = Reader::new(series);
    while !r.is_empty() {
        match r.key()? {
            (SERIES_LABELS_REFS, LEN) => {
                let mut packed = Reader::new(r.bytes(LEN)?);
                while !packed.is_empty() {
                    on_ref(packed.varint()? as u32);
                }
            }
            (SERIES_LABELS_REFS, wire) => {
                if wire != VARINT {
                    return Err(WireError("labels_refs must be varints"));
                }
                on_ref(r.varint()? as u32);
            }
            (SERIES_SAMPLES, wire) => {
                let mut s = Reader::new(r.bytes(wire)?);
                let (mut t, mut v) = (0i64, 0f64);
                while !s.is_empty() {
                    match s.key()? {
                        (SAMPLE_VALUE, w) => v = s.double(w)?,
                        (SAMPLE_TIMESTAMP, w) => t = s.int64(w)?,
                        (f, w) => s.skip(f, w)?,
                    }
                }
                counts.samples += 1;
                on_sample(t, v);
            }
            (SERIES_HISTOGRAMS, wire) => {
                r.bytes(wire)?;
                counts.histograms += 1;
            }
            (SERIES_EXEMPLARS, wire) => {
                r.bytes(wire)?;
                counts.exemplars += 1;
            }
            (f, wire) => r.skip(f, wire)?,
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use super::*;
    use crate::ingest::proto::v2;

    type Decoded = (Vec<String>, Vec<(Vec<u32>, Vec<(i64, u64)>, SeriesCounts)>);

    fn decode(body: &[u8]) -> std::result::Result<Decoded, String> {
        let req = Request::index(body).map_err(|e| format!("{e:?}"))?;
        let symbols = (0..req.symbol_count() as u32)
            .map(|i| req.symbol(i).unwrap().to_owned())
            .collect();
        let mut series = Vec::new();
        let mut failed = None;
        req.for_each_series(|s| {
            let (mut refs, mut samples) = (Vec::new(), Vec::new());
            match read_series(s, |r| refs.push(r), |t, v| samples.push((t, v.to_bits()))) {
                Ok(c) => series.push((refs, samples, c)),
                Err(e) => failed = Some(e.to_string()),
            }
        });
        match failed {
            Some(e) => Err(format!("read after a successful index: {e}")),
            None => Ok((symbols, series)),
        }
    }

    fn reference(req: &v2::Request) -> Option<Decoded> {
        let symbols = req
            .symbols
            .iter()
            .map(|s| String::from_utf8(s.to_vec()).ok())
            .collect::<Option<Vec<_>>>()?;
        let series = req
            .timeseries
            .iter()
            .map(|ts| {
                (
                    ts.labels_refs.clone(),
                    ts.samples
                        .iter()
                        .map(|s| (s.timestamp, s.value.to_bits()))
                        .collect(),
                    SeriesCounts {
                        samples: ts.samples.len(),
                        histograms: ts.histograms.len(),
                        exemplars: ts.exemplars.len(),
                    },
                )
            })
            .collect();
        Some((symbols, series))
    }

    #[test]
    fn agrees_with_prost_including_defaults_unpacked_refs_and_unknown_fields() {
        let req = v2::Request {
            symbols: ["", "__name__", "up", "job", "é"]
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    v2::Sample::default(),
                    v2::Sample {
                        value: -1.5,
                        timestamp: -7,
                        start_timestamp: 3,
                    },
                ],
                histograms: vec![v2::Histogram::default()],
                exemplars: vec![v2::Exemplar::default(), v2::Exemplar::default()],
                metadata: Some(v2::Metadata::default()),
            }],
        };
        let mut body = req.encode_to_vec();
        // An unknown top-level field, then a series with unpacked label refs (field 1
        // as separate varints, which decoders must accept).
        body.extend_from_slice(&[0x48, 0x01]);
        body.extend_from_slice(&[0x2a, 0x04, 0x08, 0x01, 0x08, 0x02]);
        let mut want = reference(&req).unwrap();
        want.1.push((vec![1, 2], vec![], SeriesCounts::default()));
        assert_eq!(decode(&body).unwrap(), want);
        assert_eq!(
            v2::Request::decode(&body[..]).unwrap().timeseries[1].labels_refs,
            vec![1, 2]
        );
    }

    #[test]
    fn bad_utf8_in_a_symbol_names_it() {
        let req = v2::Request {
            symbols: vec![Bytes::new(), Bytes::from_static(b"\xff")],
            timeseries: vec![],
        };
        assert!(matches!(
            Request::index(&req.encode_to_vec()),
            Err(IndexError::Utf8(1))
        ));
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let req = v2::Request {
            symbols: vec![Bytes::new(), Bytes::from_static(b"__name__")],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 1],
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: 5,
                    start_timestamp: 0,
                }],
                ..Default::default()
            }],
        };
        let body = req.encode_to_vec();
        // Cut anywhere but at a field boundary, the message is malformed.
        for cut in 1..body.len() {
            if v2::Request::decode(&body[..cut]).is_err() {
                assert!(
                    Request::index(&body[..cut]).is_err(),
                    "prefix of {cut} bytes indexed"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_agree_with_prost_on_success(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let ours = decode(&body);
            if let Ok(theirs) = v2::Request::decode(&body[..]) {
                // Where prost accepts (and the symbols are text), we decode the same.
                if let Some(want) = reference(&theirs) {
                    proptest::prop_assert_eq!(ours, Ok(want));
                }
            }
            if let Ok(ours) = &decode(&body) {
                // And never read more than is there.
                proptest::prop_assert!(ours.1.len() <= body.len());
            }
        }
    }
}
