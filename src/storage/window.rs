//! The retention window of one series: closed compressed chunks plus one open head
//! chunk that samples are appended to (see [`super::chunk`] for the encoding).
//!
//! The head is written in place, a few bit operations per sample: it is compressed
//! as it fills and grows in small steps, so an idle or new series costs little. It
//! closes after [`CHUNK_SAMPLES`] samples, or once it spans an eighth of the
//! retention (so a sparse series still drops its old samples in small steps), and
//! moves to the end of the series' closed chunks, which share one allocation (a few
//! bytes of framing per chunk). Retention drops whole closed chunks; the
//! samples of a partly expired chunk stay allocated until the whole chunk expires but
//! are hidden from every read, so reads see exactly the samples within the window.
//!
//! Reads decode only the chunks overlapping the requested range, straight into the
//! caller's buffers (which the caller reuses across series); decoding allocates
//! nothing.
//!
//! Invariants: timestamps are strictly increasing across the closed chunks and the
//! head, oldest first; a closed chunk holds at least one sample; the window never
//! reads a clock (retention is relative to the newest sample, or to the time `gc`
//! is given).

use super::chunk::{header, Appender, Decoder, HEADER_BYTES};
use super::AppendError;

/// Samples in a full chunk (as in Prometheus: about 30 minutes at a 15 s interval).
pub const CHUNK_SAMPLES: u16 = 120;

/// Bytes a heap allocation costs beyond its payload (glibc: an 8-byte header and
/// 16-byte size classes), counted in [`SeriesWindow::heap_bytes`].
pub const ALLOC_OVERHEAD: usize = 16;

/// Bytes the head grows by when full: a sample's worst case is 19 bytes.
const HEAD_STEP: usize = 32;

/// Most chunks the first closed chunk reserves room for (see [`growth`]).
const MAX_PREDICTED_CHUNKS: usize = 64;

/// Most bytes a LEB128 varint of a `u64` takes.
const VARINT_MAX: usize = 10;

/// What happened to one appended sample that was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The sample was stored.
    Stored,
    /// The same timestamp and value (bit for bit) was already the newest sample: a
    /// resent sample, accepted without storing it twice.
    Duplicate,
}

/// The samples of one series within its retention window.
///
/// The closed chunks live back to back in one allocation, oldest first, each as a
/// varint of its byte length, a varint of its newest timestamp minus its first
/// (wrapping, as `u64`), then the chunk bytes: about 5 bytes of framing per chunk
/// instead of a pointer, an allocation and a fixed trailer each. Dropping expired
/// chunks moves the rest to the front (a few KiB every [`CHUNK_SAMPLES`] samples) and
/// keeps the capacity for the chunks that follow, so a series at steady state does not
/// reallocate.
#[derive(Debug)]
pub struct SeriesWindow {
    /// Closed chunks, framed as above.
    closed: Vec<u8>,
    /// The open chunk (empty when the window holds no sample).
    head: Vec<u8>,
    app: Appender,
    /// Reads see no sample older than this (the retention cutoff last applied).
    visible_from: i64,
}

impl Default for SeriesWindow {
    fn default() -> Self {
        SeriesWindow {
            closed: Vec::new(),
            head: Vec::new(),
            app: Appender::default(),
            visible_from: i64::MIN,
        }
    }
}

/// One chunk as the readers see it.
#[derive(Clone, Copy)]
struct ChunkView<'a> {
    bytes: &'a [u8],
    count: u16,
    min_t: i64,
    max_t: i64,
}

impl ChunkView<'_> {
    fn samples(&self) -> Decoder<'_> {
        Decoder::new(self.bytes, self.count)
    }
}

fn put_varint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push(x as u8 | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

/// Bytes [`put_varint`] writes for `x`.
fn varint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes to add to the closed chunks, which need `framed` more for a chunk spanning
/// `span` ms. Growing a buffer by exactly what each chunk needs would move it a dozen
/// times while a window fills, all series in step, and leave the allocator holes no
/// later request fits. So the first chunk sizes the buffer for the whole window (the
/// chunks that fit in the retention, at most [`MAX_PREDICTED_CHUNKS`]), and later
/// growth is by an eighth at least. Spare capacity of a series that went quiet is
/// given back by [`SeriesWindow::shrink`].
fn growth(closed: &[u8], framed: usize, span: u64, retention_ms: i64) -> usize {
    if closed.is_empty() {
        let chunks = u64::try_from(retention_ms).unwrap_or(0) / span.max(1);
        let chunks = usize::try_from(chunks).unwrap_or(MAX_PREDICTED_CHUNKS);
        framed * chunks.clamp(1, MAX_PREDICTED_CHUNKS)
    } else {
        framed.max(closed.len() / 8)
    }
}

/// Reads a varint from the front of `buf`: the value and the bytes it took.
fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &b) in buf.iter().enumerate().take(VARINT_MAX) {
        x |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

/// The closed chunks of a window, oldest first, with the bytes each takes in the
/// framed list. Stops early on malformed framing (never written; never panics).
struct ClosedChunks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ClosedChunks<'a> {
    type Item = (ChunkView<'a>, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let (len, a) = get_varint(self.rest)?;
        let (span, b) = get_varint(self.rest.get(a..)?)?;
        let start = a + b;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let bytes = self.rest.get(start..end)?;
        self.rest = &self.rest[end..];
        let (min_t, count) = header(bytes);
        let view = ChunkView {
            bytes,
            count,
            min_t,
            max_t: min_t.wrapping_add(span as i64),
        };
        Some((view, end))
    }
}

impl SeriesWindow {
    fn closed_chunks(&self) -> ClosedChunks<'_> {
        ClosedChunks { rest: &self.closed }
    }

    /// Samples held, including those of a partly expired chunk that reads no longer
    /// see.
    pub fn len(&self) -> usize {
        self.closed_chunks()
            .map(|(c, _)| usize::from(c.count))
            .sum::<usize>()
            + usize::from(self.app.count())
    }

    /// True when the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.app.count() == 0
    }

    /// Number of chunks, the open head included.
    pub fn chunks(&self) -> usize {
        self.closed_chunks().count() + usize::from(self.app.count() > 0)
    }

    /// Bytes held on the heap: the closed chunks' and the head's allocations, each
    /// with [`ALLOC_OVERHEAD`].
    pub fn heap_bytes(&self) -> usize {
        let allocs =
            usize::from(self.closed.capacity() > 0) + usize::from(self.head.capacity() > 0);
        self.closed.capacity() + self.head.capacity() + allocs * ALLOC_OVERHEAD
    }

    /// Timestamp of the oldest sample reads see.
    pub fn first_timestamp(&self) -> Option<i64> {
        let c = self.views().find(|c| c.max_t >= self.visible_from)?;
        if c.min_t >= self.visible_from {
            return Some(c.min_t);
        }
        c.samples()
            .map(|(t, _)| t)
            .find(|&t| t >= self.visible_from)
    }

    /// The newest sample.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.app.count() > 0).then(|| {
            let (t, v) = self.app.last();
            (t, f64::from_bits(v))
        })
    }

    fn views(&self) -> impl Iterator<Item = ChunkView<'_>> + '_ {
        let head = (self.app.count() > 0).then(|| ChunkView {
            bytes: &self.head,
            count: self.app.count(),
            min_t: header(&self.head).0,
            max_t: self.app.last().0,
        });
        self.closed_chunks().map(|(c, _)| c).chain(head)
    }

    /// Appends a sample newer than every held one, then drops the chunks entirely
    /// older than `t - retention_ms`. Returns the change in heap bytes alongside the
    /// outcome.
    pub fn push(
        &mut self,
        t: i64,
        v: f64,
        retention_ms: i64,
    ) -> Result<(Appended, isize), AppendError> {
        if let Some((last_t, last_v)) = self.last() {
            if t < last_t {
                return Err(AppendError::OutOfOrder);
            }
            if t == last_t {
                return if last_v.to_bits() == v.to_bits() {
                    Ok((Appended::Duplicate, 0))
                } else {
                    Err(AppendError::DuplicateTimestamp)
                };
            }
        }
        let before = self.heap_bytes();
        let cutoff = t.saturating_sub(retention_ms);
        self.expire(cutoff);
        if self.app.count() > 0 {
            let head_start = header(&self.head).0;
            let span_limit = (retention_ms / 8).max(1);
            if self.app.count() >= CHUNK_SAMPLES || t.saturating_sub(head_start) >= span_limit {
                self.close_head(retention_ms);
            }
        }
        if self.head.capacity() - self.head.len() < HEAD_STEP {
            let step = if self.head.is_empty() {
                HEADER_BYTES + HEAD_STEP
            } else {
                HEAD_STEP
            };
            self.head.reserve_exact(step);
        }
        self.app.append(&mut self.head, t, v);
        Ok((
            Appended::Stored,
            self.heap_bytes() as isize - before as isize,
        ))
    }

    /// Seals the head and moves it to the end of the closed chunks.
    fn close_head(&mut self, retention_ms: i64) {
        self.app.seal(&mut self.head);
        let min_t = header(&self.head).0;
        let span = self.app.last().0.wrapping_sub(min_t) as u64;
        let len = self.head.len() as u64;
        let framed = varint_len(len) + varint_len(span) + self.head.len();
        if self.closed.capacity() - self.closed.len() < framed {
            self.closed
                .reserve_exact(growth(&self.closed, framed, span, retention_ms));
        }
        put_varint(&mut self.closed, len);
        put_varint(&mut self.closed, span);
        self.closed.extend_from_slice(&self.head);
        self.head = Vec::new();
        self.app = Appender::default();
    }

    /// Hides every sample older than `min_t` and frees the chunks holding nothing
    /// newer. Returns the change in heap bytes (zero or negative).
    pub fn evict_before(&mut self, min_t: i64) -> isize {
        let before = self.heap_bytes();
        self.expire(min_t);
        self.heap_bytes() as isize - before as isize
    }

    fn expire(&mut self, min_t: i64) {
        if min_t <= self.visible_from {
            return;
        }
        self.visible_from = min_t;
        let dead: usize = self
            .closed_chunks()
            .take_while(|(c, _)| c.max_t < min_t)
            .map(|(_, framed)| framed)
            .sum();
        if dead > 0 {
            self.closed.drain(..dead);
        }
        if self.closed.is_empty() && self.app.count() > 0 && self.app.last().0 < min_t {
            self.head = Vec::new();
            self.app = Appender::default();
        }
    }

    /// Frees spare capacity of the closed chunks when the series went quiet: its
    /// newest sample is older than `quiet_before`. (An active series keeps the room
    /// [`growth`] reserved for its window.)
    pub fn shrink(&mut self, quiet_before: i64) -> isize {
        let quiet = self.last().is_none_or(|(t, _)| t < quiet_before);
        if quiet && self.closed.capacity() > self.closed.len() + self.closed.len() / 8 + 64 {
            let before = self.heap_bytes();
            self.closed.shrink_to_fit();
            return self.heap_bytes() as isize - before as isize;
        }
        0
    }

    /// Appends to `ts`/`vs` every visible sample with `mint <= t <= maxt`, oldest
    /// first, decoding only the chunks that overlap the range.
    pub fn copy_range(&self, mint: i64, maxt: i64, ts: &mut Vec<i64>, vs: &mut Vec<f64>) {
        let lo = mint.max(self.visible_from);
        if lo > maxt {
            return;
        }
        let touched = || {
            self.views()
                .skip_while(move |c| c.max_t < lo)
                .take_while(move |c| c.min_t <= maxt)
        };
        let upper: usize = touched().map(|c| usize::from(c.count)).sum();
        ts.reserve(upper);
        vs.reserve(upper);
        for c in touched() {
            if c.min_t >= lo && c.max_t <= maxt {
                for (t, v) in c.samples() {
                    ts.push(t);
                    vs.push(v);
                }
            } else {
                for (t, v) in c.samples() {
                    if t > maxt {
                        break;
                    }
                    if t >= lo {
                        ts.push(t);
                        vs.push(v);
                    }
                }
            }
        }
    }

    /// True when some visible sample lies in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        let lo = mint.max(self.visible_from);
        if lo > maxt {
            return false;
        }
        for c in self.views() {
            if c.max_t < lo {
                continue;
            }
            if c.min_t > maxt {
                return false;
            }
            // Either end of the chunk inside the range settles it without decoding.
            if (c.min_t >= lo) || c.max_t <= maxt {
                return true;
            }
            return c.samples().any(|(t, _)| t >= lo && t <= maxt);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::STALE_NAN_BITS;
    use proptest::strategy::Strategy;

    fn collect(w: &SeriesWindow) -> (Vec<i64>, Vec<f64>) {
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        w.copy_range(i64::MIN, i64::MAX, &mut ts, &mut vs);
        (ts, vs)
    }

    #[test]
    fn retention_is_relative_to_newest_sample() {
        let mut w = SeriesWindow::default();
        w.push(1_000, 1.0, 5_000).unwrap();
        w.push(4_000, 2.0, 5_000).unwrap();
        w.push(6_000, 3.0, 5_000).unwrap(); // 1_000 == 6_000 - 5_000 is kept
        assert_eq!(collect(&w).0, vec![1_000, 4_000, 6_000]);
        w.push(6_001, 4.0, 5_000).unwrap();
        assert_eq!(collect(&w).0, vec![4_000, 6_000, 6_001]);
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let mut w = SeriesWindow::default();
        w.push(10, 1.0, 1000).unwrap();
        assert_eq!(w.push(5, 1.0, 1000), Err(AppendError::OutOfOrder));
        assert_eq!(w.push(10, 1.0, 1000), Ok((Appended::Duplicate, 0)));
        assert_eq!(w.push(10, 2.0, 1000), Err(AppendError::DuplicateTimestamp));
        assert_eq!(collect(&w), (vec![10], vec![1.0]));
    }

    #[test]
    fn staleness_markers_are_kept_bit_exact() {
        let mut w = SeriesWindow::default();
        let stale = f64::from_bits(STALE_NAN_BITS);
        w.push(1, 1.0, 1000).unwrap();
        w.push(2, stale, 1000).unwrap();
        // A resent stale marker is a duplicate, not a conflict.
        assert_eq!(w.push(2, stale, 1000), Ok((Appended::Duplicate, 0)));
        assert_eq!(w.last().map(|(_, v)| v.to_bits()), Some(STALE_NAN_BITS));
        assert_eq!(collect(&w).1[1].to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn full_window_holds_whole_chunks_and_drops_the_oldest() {
        let mut w = SeriesWindow::default();
        let retention = 6 * 3600 * 1000;
        for i in 0..10_000i64 {
            w.push(i * 15_000, (i % 7) as f64, retention).unwrap();
        }
        let (ts, _) = collect(&w);
        // 6 h at 15 s: 1,441 samples in [newest - 6h, newest].
        assert_eq!(ts.len(), 1_441);
        assert_eq!(ts[0], 9_999 * 15_000 - retention);
        // The window holds at most one chunk beyond it.
        assert!(w.len() <= 1_441 + usize::from(CHUNK_SAMPLES), "{}", w.len());
        assert!(w.chunks() <= 14, "{}", w.chunks());
    }

    #[test]
    fn reads_across_chunk_boundaries() {
        let mut w = SeriesWindow::default();
        for i in 0..500i64 {
            w.push(i * 10, i as f64, i64::MAX).unwrap();
        }
        assert_eq!(w.chunks(), 5);
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        w.copy_range(1_195, 2_405, &mut ts, &mut vs);
        assert_eq!(ts, (120..=240).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(vs, (120..=240).map(|i| i as f64).collect::<Vec<_>>());
        assert!(!w.overlaps(1_191, 1_199) && w.overlaps(1_191, 1_200));
        assert!(!w.overlaps(5_000, 6_000) && w.overlaps(4_990, 6_000));
        assert!(!w.overlaps(-10, -1));
    }

    #[test]
    fn a_sparse_series_closes_chunks_by_time_span() {
        let mut w = SeriesWindow::default();
        let retention = 8_000;
        for i in 0..100i64 {
            w.push(i * 500, 1.0, retention).unwrap();
        }
        // Each chunk spans at most retention / 8 = 1 s, i.e. 2 samples here.
        assert!(w.len() <= 16 + 2, "{}", w.len());
        assert_eq!(collect(&w).0.len(), 17);
    }

    #[test]
    fn chunk_framing_survives_extreme_timestamps() {
        // Chunks whose spans need 9-byte varints, near the bottom of the range.
        let mut w = SeriesWindow::default();
        let ts = [i64::MIN, i64::MIN + (1 << 59), i64::MIN + (1 << 61), -1];
        for &t in &ts {
            w.push(t, t as f64, i64::MAX).unwrap();
        }
        assert_eq!(w.chunks(), 3);
        assert_eq!(collect(&w).0, ts);
        let (mut got, mut vs) = (Vec::new(), Vec::new());
        w.copy_range(i64::MIN + 1, i64::MIN + (1 << 61), &mut got, &mut vs);
        assert_eq!(got, ts[1..3]);
        // Across zero to the top: the newest sample's retention hides the oldest.
        let mut w = SeriesWindow::default();
        for t in [
            i64::MIN,
            i64::MIN + 1,
            -5,
            0,
            1 << 40,
            i64::MAX - 1,
            i64::MAX,
        ] {
            w.push(t, t as f64, i64::MAX).unwrap();
        }
        assert_eq!(w.chunks(), 2);
        assert_eq!(collect(&w).0, [0, 1 << 40, i64::MAX - 1, i64::MAX]);
        for x in [0, 1, 127, 128, 16_383, 16_384, u64::MAX / 3, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, x);
            assert_eq!(buf.len(), varint_len(x));
            assert_eq!(get_varint(&buf), Some((x, buf.len())));
        }
    }

    #[test]
    fn a_full_window_stops_growing() {
        let mut w = SeriesWindow::default();
        let retention = 6 * 3600 * 1000;
        let mut peak = 0;
        for i in 0..20_000i64 {
            w.push(i * 15_000, (i * 31) as f64, retention).unwrap();
            if i == 5_000 {
                peak = w.heap_bytes();
            }
            if i > 5_000 {
                // The chunks' allocation is reused as the oldest chunk expires: what
                // varies is the head's fill (within one chunk's bytes).
                assert!(
                    w.heap_bytes() <= peak * 11 / 10,
                    "{} > {peak}",
                    w.heap_bytes()
                );
            }
        }
        assert_eq!(w.shrink(i64::MIN), 0);
        // Once quiet, the spare room goes back.
        let last = w.last().unwrap().0;
        assert!(w.shrink(last + 1) <= 0);
        assert!(w.heap_bytes() <= peak * 11 / 10);
    }

    #[test]
    fn gc_eviction_hides_then_frees() {
        let mut w = SeriesWindow::default();
        for i in 0..300i64 {
            w.push(i, 0.0, i64::MAX).unwrap();
        }
        let bytes = w.heap_bytes();
        assert_eq!(
            w.evict_before(130),
            -(w.heap_bytes() as isize - bytes as isize).abs()
        );
        assert_eq!(collect(&w).0, (130..300).collect::<Vec<_>>());
        assert!(w.evict_before(1_000) < 0);
        assert!(w.is_empty());
        assert!(collect(&w).0.is_empty());
        // An emptied window starts over.
        w.push(2_000, 1.0, i64::MAX).unwrap();
        assert_eq!(collect(&w).0, vec![2_000]);
    }

    #[test]
    fn heap_bytes_track_every_push() {
        let mut w = SeriesWindow::default();
        let mut total = 0isize;
        for i in 0..2_000i64 {
            let (_, grown) = w.push(i * 1_000, (i * 31 % 97) as f64, 600_000).unwrap();
            total += grown;
            assert_eq!(total, w.heap_bytes() as isize);
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_a_vec_model(
            steps in proptest::collection::vec(
                (0i64..50, proptest::prop_oneof![
                    (-1e9f64..1e9),
                    proptest::prelude::any::<u64>().prop_map(f64::from_bits),
                    proptest::prelude::Just(f64::from_bits(STALE_NAN_BITS)),
                ]),
                1..800,
            ),
            retention in 0i64..3_000,
            start in -1_000_000i64..1_000_000,
            window in (0i64..3_000, 0i64..3_000),
        ) {
            let mut w = SeriesWindow::default();
            let mut model: Vec<(i64, u64)> = Vec::new();
            let mut t = start;
            for (dt, v) in steps {
                t += dt;
                let res = w.push(t, v, retention);
                match model.last() {
                    Some(&(lt, lv)) if lt == t => {
                        if lv == v.to_bits() { proptest::prop_assert!(res.is_ok()); }
                        else { proptest::prop_assert_eq!(res, Err(AppendError::DuplicateTimestamp)); }
                    }
                    _ => {
                        proptest::prop_assert!(res.is_ok());
                        model.push((t, v.to_bits()));
                        model.retain(|&(mt, _)| mt >= t - retention);
                    }
                }
            }
            let (ts, vs) = collect(&w);
            proptest::prop_assert_eq!(ts, model.iter().map(|p| p.0).collect::<Vec<_>>());
            proptest::prop_assert_eq!(
                vs.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                model.iter().map(|p| p.1).collect::<Vec<_>>()
            );
            // Any sub-range, and overlap, agree with the model.
            let (mint, maxt) = (start + window.0, start + window.0 + window.1);
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            w.copy_range(mint, maxt, &mut ts, &mut vs);
            let want: Vec<&(i64, u64)> = model.iter().filter(|p| p.0 >= mint && p.0 <= maxt).collect();
            proptest::prop_assert_eq!(ts, want.iter().map(|p| p.0).collect::<Vec<_>>());
            proptest::prop_assert_eq!(w.overlaps(mint, maxt), !want.is_empty());
        }
    }
}
