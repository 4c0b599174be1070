//! A zero-allocation reader for the remote-write 1.0 wire format.
//!
//! The hot path of ingest: it walks the protobuf bytes of a `WriteRequest` once and
//! hands out label strings as slices of the request buffer and samples as plain
//! values, so decoding allocates nothing per series or sample. The message layout is
//! the one in proto/remote_v1.proto; the prost-generated types remain the reference
//! (tests encode with them and compare). Unknown fields are skipped, as protobuf
//! requires; proto3 defaults (absent value or timestamp) read as zero.

/// A malformed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct WireError(pub(crate) &'static str);

type Result<T> = std::result::Result<T, WireError>;

pub(crate) const VARINT: u8 = 0;
const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;
/// Deepest nesting of (deprecated) groups skipped, as prost limits recursion.
const MAX_GROUP_DEPTH: u32 = 100;

/// A cursor over protobuf bytes.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(WireError("varint overflows 64 bits"));
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError("truncated or overlong varint"))
    }

    /// The next field number and wire type.
    pub(crate) fn key(&mut self) -> Result<(u64, u8)> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(WireError("invalid field number 0"));
        }
        Ok((field, (key & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(WireError("field extends past the end of the message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A length-delimited field's bytes, after its key was read with wire type LEN.
    pub(crate) fn bytes(&mut self, wire: u8) -> Result<&'a [u8]> {
        if wire != LEN {
            return Err(WireError("expected a length-delimited field"));
        }
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| WireError("length too large"))?)
    }

    pub(crate) fn double(&mut self, wire: u8) -> Result<f64> {
        if wire != FIXED64 {
            return Err(WireError("expected a 64-bit field for a double"));
        }
        let b = self.take(8)?;
        Ok(f64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    pub(crate) fn int64(&mut self, wire: u8) -> Result<i64> {
        if wire != VARINT {
            return Err(WireError("expected a varint field for an int64"));
        }
        Ok(self.varint()? as i64)
    }

    /// Skips a field of an unknown number.
    pub(crate) fn skip(&mut self, field: u64, wire: u8) -> Result<()> {
        self.skip_nested(wire, field, 0)
    }

    fn skip_nested(&mut self, wire: u8, field: u64, depth: u32) -> Result<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes(LEN).map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(WireError("groups nested too deeply"));
                }
                loop {
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == END_GROUP {
                        return if inner == field {
                            Ok(())
                        } else {
                            Err(WireError("mismatched end group"))
                        };
                    }
                    self.skip_nested(inner_wire, inner, depth + 1)?;
                }
            }
            _ => Err(WireError("invalid wire type")),
        }
    }
}

/// What a `TimeSeries` message holds, with labels and samples passed to callbacks
/// as they are read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesCounts {
    pub(crate) samples: usize,
    pub(crate) exemplars: usize,
    pub(crate) histograms: usize,
}

/// Calls `on_series` with each `TimeSeries` message's bytes in a `WriteRequest`.
pub(crate) fn for_each_series<'a>(
    body: &'a [u8],
    mut on_series: impl FnMut(&'a [u8]) -> Result<()>,
) -> Result<()> {
    let mut r = Reader::new(body);
    while !r.is_empty() {
        match r.key()? {
            (1, wire) => on_series(r.bytes(wire)?)?,
            (f, wire) => r.skip(f, wire)?, // metadata (3) and anything newer
        }
    }
    Ok(())
}

/// Reads one `TimeSeries`: each label as (name, value) bytes and each sample as
/// (timestamp, value); exemplars and histograms are only counted.
pub(crate) fn read_series<'a>(
    series: &'a [u8],
    mut on_label: impl FnMut(&'a [u8], &'a [u8]),
    mut on_sample: impl FnMut(i64, f64),
) -> Result<SeriesCounts> {
    let mut counts = SeriesCounts::default();
    let mut r = Reader::new(series);
    while !r.is_empty() {
        match r.key()? {
            (1, wire) => {
                let mut l = Reader::new(r.bytes(wire)?);
                let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
                while !l.is_empty() {
                    match l.key()? {
                        (1, w) => name = l.bytes(w)?,
                        (2, w) => value = l.bytes(w)?,
                        (f, w) => l.skip(f, w)?,
                    }
                }
                on_label(name, value);
            }
            (2, wire) => {
                let mut s = Reader::new(r.bytes(wire)?);
                let (mut t, mut v) = (0i64, 0f64);
                while !s.is_empty() {
                    match s.key()? {
                        (1, w) => v = s.double(w)?,
                        (2, w) => t = s.int64(w)?,
                        (f, w) => s.skip(f, w)?,
                    }
                }
                counts.samples += 1;
                on_sample(t, v);
            }
            (3, wire) => {
                r.bytes(wire)?;
                counts.exemplars += 1;
            }
            (4, wire) => {
                r.bytes(wire)?;
                counts.histograms += 1;
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
    use crate::ingest::proto::v1;

    type Decoded = Vec<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(i64, u64)>, SeriesCounts)>;

    fn decode(body: &[u8]) -> Result<Decoded> {
        let mut out = Vec::new();
        for_each_series(body, |s| {
            let (mut labels, mut samples) = (Vec::new(), Vec::new());
            let counts = read_series(
                s,
                |n, v| labels.push((n.to_vec(), v.to_vec())),
                |t, v| samples.push((t, v.to_bits())),
            )?;
            out.push((labels, samples, counts));
            Ok(())
        })?;
        Ok(out)
    }

    fn reference(req: &v1::WriteRequest) -> Decoded {
        req.timeseries
            .iter()
            .map(|ts| {
                (
                    ts.labels
                        .iter()
                        .map(|l| (l.name.to_vec(), l.value.to_vec()))
                        .collect(),
                    ts.samples
                        .iter()
                        .map(|s| (s.timestamp, s.value.to_bits()))
                        .collect(),
                    SeriesCounts {
                        samples: ts.samples.len(),
                        exemplars: ts.exemplars.len(),
                        histograms: ts.histograms.len(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn agrees_with_prost_including_defaults_and_unknown_fields() {
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![
                    v1::Label {
                        name: Bytes::from_static(b"__name__"),
                        value: Bytes::from_static(b"up"),
                    },
                    v1::Label {
                        name: Bytes::from_static(b"empty"),
                        value: Bytes::new(),
                    },
                ],
                samples: vec![
                    v1::Sample {
                        value: 0.0,
                        timestamp: 0,
                    },
                    v1::Sample {
                        value: -1.5,
                        timestamp: -7,
                    },
                    v1::Sample {
                        value: f64::from_bits(0x7ff0_0000_0000_0002),
                        timestamp: i64::MAX,
                    },
                ],
                exemplars: vec![v1::Exemplar::default()],
                histograms: vec![v1::Histogram::default(), v1::Histogram::default()],
            }],
            metadata: vec![v1::MetricMetadata {
                r#type: 1,
                ..Default::default()
            }],
        };
        let mut body = req.encode_to_vec();
        // An unknown field (number 9, varint) at the top level is skipped.
        body.extend_from_slice(&[0x48, 0x01]);
        assert_eq!(decode(&body).unwrap(), reference(&req));
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![v1::Label {
                    name: Bytes::from_static(b"__name__"),
                    value: Bytes::from_static(b"x"),
                }],
                samples: vec![v1::Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let body = req.encode_to_vec();
        for cut in 1..body.len() {
            assert!(
                decode(&body[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_agree_with_prost_on_success(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let ours = decode(&body);
            if let Ok(theirs) = v1::WriteRequest::decode(&body[..]) {
                // Where prost accepts, we must decode the same content.
                proptest::prop_assert_eq!(ours.ok(), Some(reference(&theirs)));
            }
        }
    }
}
