//! Compressed chunks of samples, in the scheme of Facebook's Gorilla paper: timestamps
//! as delta-of-delta, values as the XOR with the previous value.
//!
//! A chunk is a byte string: a 10-byte header (the first timestamp, 8 bytes little
//! endian, then the sample count, 2 bytes little endian) followed by a bit stream,
//! most significant bit first. The first value is stored raw (64 bits); every later
//! sample adds a timestamp code and a value code:
//!
//! - timestamp: `dod = (t - t_prev) - (t_prev - t_prev2)` (the delta before the
//!   first is 0), with wrapping arithmetic, so any pair of `i64`s encodes exactly:
//!   `0` when the dod is 0 (a regular scrape); `10` + 7 bits, `110` + 12 bits,
//!   `1110` + 20 bits, `11110` + 32 bits (two's complement); `11111` + 64 bits.
//! - value: `x = bits(v) ^ bits(v_prev)`: `0` when equal; `10` + the meaningful bits
//!   when they fit in the previous window (at least as many leading and trailing
//!   zeros); else `11` + leading zeros (5 bits, at most 31) + meaningful length − 1
//!   (6 bits) + the meaningful bits. Values round-trip bit for bit: NaN payloads,
//!   staleness markers, ±0 and ±Inf included.
//!
//! [`Appender`] writes a chunk one sample at a time (the open head of a series keeps
//! its state, so an append is a few bit operations); [`Decoder`] reads one back. The
//! decoder never panics: a truncated stream ends the iteration early.

/// Bytes before the bit stream: first timestamp and sample count.
pub(super) const HEADER_BYTES: usize = 10;

/// Sentinel "no previous window": no XOR has 64 leading zeros, so it never fits.
const NO_WINDOW: u8 = 64;

/// The state of a chunk being written: everything the next sample's encoding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Appender {
    t: i64,
    delta: i64,
    v: u64,
    lead: u8,
    trail: u8,
    /// Unused low bits of the last byte.
    free: u8,
    count: u16,
}

impl Default for Appender {
    fn default() -> Self {
        Appender {
            t: 0,
            delta: 0,
            v: 0,
            lead: NO_WINDOW,
            trail: 0,
            free: 0,
            count: 0,
        }
    }
}

impl Appender {
    /// Samples written so far.
    pub(super) fn count(&self) -> u16 {
        self.count
    }

    /// The newest sample written (meaningless before the first).
    pub(super) fn last(&self) -> (i64, u64) {
        (self.t, self.v)
    }

    /// Appends `(t, v)` to `buf`, which holds this chunk (empty before the first
    /// sample). The caller keeps timestamps increasing and the count below `u16::MAX`.
    pub(super) fn append(&mut self, buf: &mut Vec<u8>, t: i64, v: f64) {
        let bits = v.to_bits();
        if self.count == 0 {
            buf.clear();
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&[0, 0]);
            self.free = 0;
            self.write(buf, bits, 64);
            *self = Appender {
                t,
                v: bits,
                count: 1,
                free: self.free,
                ..Appender::default()
            };
            return;
        }
        let delta = t.wrapping_sub(self.t);
        let dod = delta.wrapping_sub(self.delta);
        if dod == 0 {
            self.write(buf, 0, 1);
        } else if let Some((prefix, prefix_len, width)) = dod_bucket(dod) {
            self.write(buf, prefix, prefix_len);
            self.write(buf, dod as u64 & mask(width), width);
        } else {
            self.write(buf, 0b11111, 5);
            self.write(buf, dod as u64, 64);
        }
        let x = bits ^ self.v;
        if x == 0 {
            self.write(buf, 0, 1);
        } else {
            let lead = (x.leading_zeros() as u8).min(31);
            let trail = x.trailing_zeros() as u8;
            if lead >= self.lead && trail >= self.trail {
                let len = 64 - u32::from(self.lead) - u32::from(self.trail);
                self.write(buf, 0b10, 2);
                self.write(buf, x >> self.trail, len);
            } else {
                let len = 64 - u32::from(lead) - u32::from(trail);
                self.write(buf, 0b11, 2);
                self.write(buf, u64::from(lead), 5);
                self.write(buf, u64::from(len - 1), 6);
                self.write(buf, x >> trail, len);
                self.lead = lead;
                self.trail = trail;
            }
        }
        self.t = t;
        self.delta = delta;
        self.v = bits;
        self.count += 1;
    }

    /// Writes the count into the header: the chunk is complete as it stands.
    pub(super) fn seal(&self, buf: &mut [u8]) {
        if let Some(h) = buf.get_mut(8..HEADER_BYTES) {
            h.copy_from_slice(&self.count.to_le_bytes());
        }
    }

    /// Writes the low `n` bits of `x` (n ≤ 64), most significant first.
    #[inline]
    fn write(&mut self, buf: &mut Vec<u8>, x: u64, mut n: u32) {
        while n > 0 {
            if self.free == 0 {
                buf.push(0);
                self.free = 8;
            }
            let take = n.min(u32::from(self.free));
            let part = (x >> (n - take)) & mask(take);
            if let Some(last) = buf.last_mut() {
                *last |= (part as u8) << (u32::from(self.free) - take);
            }
            self.free -= take as u8;
            n -= take;
        }
    }
}

/// `(prefix, prefix length, payload width)` of the smallest bucket holding `dod`, or
/// `None` when it needs all 64 bits.
#[inline]
fn dod_bucket(dod: i64) -> Option<(u64, u32, u32)> {
    const BUCKETS: [(u64, u32, u32); 4] = [
        (0b10, 2, 7),
        (0b110, 3, 12),
        (0b1110, 4, 20),
        (0b11110, 5, 32),
    ];
    BUCKETS.into_iter().find(|&(_, _, w)| {
        let half = 1i64 << (w - 1);
        (-half..half).contains(&dod)
    })
}

#[inline]
fn mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// The first timestamp and the sample count from a chunk's header.
pub(super) fn header(chunk: &[u8]) -> (i64, u16) {
    let mut t = [0u8; 8];
    let mut c = [0u8; 2];
    if let Some(h) = chunk.get(..HEADER_BYTES) {
        t.copy_from_slice(&h[..8]);
        c.copy_from_slice(&h[8..]);
    }
    (i64::from_le_bytes(t), u16::from_le_bytes(c))
}

/// Reads the samples of one chunk, oldest first.
pub(super) struct Decoder<'a> {
    bits: BitReader<'a>,
    left: u16,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    lead: u8,
    trail: u8,
}

impl<'a> Decoder<'a> {
    /// Decodes the first `count` samples of `chunk` (its header's first timestamp is
    /// used; the header's count is ignored, so an open chunk can be read too).
    pub(super) fn new(chunk: &'a [u8], count: u16) -> Self {
        let (t, _) = header(chunk);
        Decoder {
            bits: BitReader::new(chunk.get(HEADER_BYTES..).unwrap_or(&[])),
            left: count,
            first: true,
            t,
            delta: 0,
            v: 0,
            lead: NO_WINDOW,
            trail: 0,
        }
    }

    fn next_sample(&mut self) -> Option<(i64, u64)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.first {
            self.first = false;
            self.v = self.bits.read(64)?;
            return Some((self.t, self.v));
        }
        let dod = if !self.bits.read_bit()? {
            0
        } else {
            // Count further 1s of the prefix (at most 4).
            let mut ones = 1;
            while ones < 5 && self.bits.read_bit()? {
                ones += 1;
            }
            let width = [7, 12, 20, 32, 64][ones - 1];
            let raw = self.bits.read(width)?;
            if width == 64 {
                raw as i64
            } else {
                let shift = 64 - width;
                ((raw << shift) as i64) >> shift
            }
        };
        self.delta = self.delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.delta);
        if self.bits.read_bit()? {
            let x = if !self.bits.read_bit()? {
                if self.lead == NO_WINDOW {
                    return None; // a window reference before any window: corrupt
                }
                let len = 64 - u32::from(self.lead) - u32::from(self.trail);
                self.bits.read(len)? << self.trail
            } else {
                let lead = self.bits.read(5)? as u32;
                let len = self.bits.read(6)? as u32 + 1;
                if lead + len > 64 {
                    return None;
                }
                let trail = 64 - lead - len;
                self.lead = lead as u8;
                self.trail = trail as u8;
                self.bits.read(len)? << trail
            };
            self.v ^= x;
        }
        Some((self.t, self.v))
    }
}

impl Iterator for Decoder<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        match self.next_sample() {
            Some((t, v)) => Some((t, f64::from_bits(v))),
            None => {
                self.left = 0;
                None
            }
        }
    }
}

/// Reads bits most significant first, refilling a 64-bit accumulator bytewise.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Pending bits, left-aligned.
    acc: u64,
    have: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            pos: 0,
            acc: 0,
            have: 0,
        }
    }

    #[inline]
    fn refill(&mut self) {
        while self.have <= 56 {
            let Some(&b) = self.bytes.get(self.pos) else {
                return;
            };
            self.acc |= u64::from(b) << (56 - self.have);
            self.have += 8;
            self.pos += 1;
        }
    }

    #[inline]
    fn read_bit(&mut self) -> Option<bool> {
        Some(self.read(1)? == 1)
    }

    /// The next `n` bits (1 ≤ n ≤ 64), or `None` past the end.
    #[inline]
    fn read(&mut self, n: u32) -> Option<u64> {
        if n > 56 {
            let hi = self.read(n - 32)?;
            let lo = self.read(32)?;
            return Some(hi << 32 | lo);
        }
        if self.have < n {
            self.refill();
            if self.have < n {
                return None;
            }
        }
        let x = self.acc >> (64 - n);
        self.acc <<= n;
        self.have -= n;
        Some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::STALE_NAN_BITS;

    fn encode(samples: &[(i64, f64)]) -> (Vec<u8>, Appender) {
        let mut buf = Vec::new();
        let mut a = Appender::default();
        for &(t, v) in samples {
            a.append(&mut buf, t, v);
        }
        a.seal(&mut buf);
        (buf, a)
    }

    fn decode(buf: &[u8]) -> Vec<(i64, u64)> {
        let (_, n) = header(buf);
        Decoder::new(buf, n)
            .map(|(t, v)| (t, v.to_bits()))
            .collect()
    }

    fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn regular_scrapes_of_a_constant_cost_two_bits_a_sample() {
        let samples: Vec<(i64, f64)> = (0..120).map(|i| (1_000 + i * 15_000, 1.0)).collect();
        let (buf, _) = encode(&samples);
        assert_eq!(decode(&buf), bits(&samples));
        // header, raw first value, the first delta (20-bit bucket), 2 bits after.
        let body_bits: usize = 64 + (4 + 20 + 1) + 118 * 2;
        assert_eq!(buf.len(), HEADER_BYTES + body_bits.div_ceil(8));
    }

    #[test]
    fn special_values_round_trip_bit_for_bit() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let quiet_nan_payload = f64::from_bits(0x7ff8_dead_beef_0001);
        let samples = [
            (i64::MIN, 0.0),
            (i64::MIN + 1, -0.0),
            (-5, f64::INFINITY),
            (0, f64::NEG_INFINITY),
            (1, stale),
            (2, stale),
            (3, quiet_nan_payload),
            (i64::MAX - 1, f64::MIN_POSITIVE),
            (i64::MAX, f64::MAX),
        ];
        let (buf, _) = encode(&samples);
        assert_eq!(decode(&buf), bits(&samples));
    }

    #[test]
    fn a_truncated_stream_ends_early_without_panicking() {
        let samples: Vec<(i64, f64)> = (0..50).map(|i| (i * 7, i as f64 * 1.37)).collect();
        let (buf, _) = encode(&samples);
        for cut in 0..buf.len() {
            let got: Vec<_> = Decoder::new(&buf[..cut], 50).collect();
            assert!(got.len() < 50);
            assert_eq!(
                got.iter()
                    .map(|&(t, v)| (t, v.to_bits()))
                    .collect::<Vec<_>>(),
                bits(&samples[..got.len()])
            );
        }
    }

    #[test]
    fn every_dod_bucket_edge_round_trips() {
        // Deltas alternate around a large base, so each dod is +e then -e.
        let base = 1i64 << 40;
        let mut samples = vec![(0i64, 0.0)];
        for w in [7u32, 12, 20, 32] {
            let half = 1i64 << (w - 1);
            for e in [half - 1, -half, half, -half - 1] {
                for d in [base + e, base] {
                    let t = samples.last().map_or(0, |p| p.0) + d;
                    samples.push((t, e as f64));
                }
            }
        }
        let (buf, _) = encode(&samples);
        assert_eq!(decode(&buf), bits(&samples));
    }

    fn sample_strategy() -> impl proptest::strategy::Strategy<Value = Vec<(i64, f64)>> {
        use proptest::prelude::*;
        let delta = prop_oneof![
            Just(15_000i64),
            1i64..100,
            1i64..100_000_000,
            1i64..i64::MAX / 1024,
        ];
        let value = prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            (0u32..1000).prop_map(f64::from),
        ];
        (
            any::<i64>(),
            proptest::collection::vec((delta, value), 1..300),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                let mut out = Vec::with_capacity(steps.len());
                for (i, (d, v)) in steps.into_iter().enumerate() {
                    if i > 0 {
                        match t.checked_add(d) {
                            Some(n) => t = n,
                            None => break,
                        }
                    }
                    out.push((t, v));
                }
                out
            })
    }

    proptest::proptest! {
        #[test]
        fn any_increasing_sequence_round_trips(samples in sample_strategy()) {
            let (buf, a) = encode(&samples);
            proptest::prop_assert_eq!(usize::from(a.count()), samples.len());
            proptest::prop_assert_eq!(header(&buf).1 as usize, samples.len());
            proptest::prop_assert_eq!(decode(&buf), bits(&samples));
            // An open chunk reads back at every length.
            let n = samples.len() / 2;
            let got: Vec<_> = Decoder::new(&buf, n as u16).map(|(t, v)| (t, v.to_bits())).collect();
            proptest::prop_assert_eq!(got, bits(&samples[..n]));
        }
    }
}
