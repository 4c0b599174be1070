//! The retention window of one series: closed compressed chunks plus one open head
//! chunk that samples are appended to (see [`super::chunk`] for the encoding).
//!
//! The head is written in place, a few bit operations per sample: it is compressed
//! as it fills and grows in small steps, so an idle or new series costs little. It
//! closes after [`CHUNK_SAMPLES`] samples, or once it spans an eighth of the
//! retention (so a sparse series still drops its old samples in small steps), and
//! becomes an exactly sized immutable chunk. Retention drops whole closed chunks; the
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

/// A closed chunk's trailer after the chunk bytes: its newest timestamp (8 bytes).
const TRAILER_BYTES: usize = 8;

/// Bytes a heap allocation costs beyond its payload (glibc: an 8-byte header and
/// 16-byte size classes), counted in [`SeriesWindow::heap_bytes`].
pub const ALLOC_OVERHEAD: usize = 16;

/// Bytes the head grows by when full: a sample's worst case is 19 bytes.
const HEAD_STEP: usize = 32;

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
#[derive(Debug)]
pub struct SeriesWindow {
    /// Closed chunks, oldest first: chunk bytes then the newest timestamp.
    closed: Vec<Box<[u8]>>,
    /// Sum of the closed chunks' lengths.
    closed_bytes: usize,
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
            closed_bytes: 0,
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

fn closed_view(c: &[u8]) -> ChunkView<'_> {
    let (min_t, count) = header(c);
    let split = c.len().saturating_sub(TRAILER_BYTES);
    let mut max = [0u8; 8];
    max.copy_from_slice(&c[split..]);
    ChunkView {
        bytes: &c[..split],
        count,
        min_t,
        max_t: i64::from_le_bytes(max),
    }
}

impl SeriesWindow {
    /// Samples held, including those of a partly expired chunk that reads no longer
    /// see.
    pub fn len(&self) -> usize {
        self.closed
            .iter()
            .map(|c| usize::from(header(c).1))
            .sum::<usize>()
            + usize::from(self.app.count())
    }

    /// True when the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.app.count() == 0
    }

    /// Number of chunks, the open head included.
    pub fn chunks(&self) -> usize {
        self.closed.len() + usize::from(self.app.count() > 0)
    }

    /// Bytes held on the heap: the chunks, the head's allocation and the chunk
    /// list, each allocation with [`ALLOC_OVERHEAD`].
    pub fn heap_bytes(&self) -> usize {
        let allocs = self.closed.len()
            + usize::from(self.closed.capacity() > 0)
            + usize::from(self.head.capacity() > 0);
        self.closed_bytes
            + self.closed.capacity() * size_of::<Box<[u8]>>()
            + self.head.capacity()
            + allocs * ALLOC_OVERHEAD
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
        self.closed.iter().map(|c| closed_view(c)).chain(head)
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
                self.close_head();
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

    /// Seals the head into an exactly sized closed chunk.
    fn close_head(&mut self) {
        self.app.seal(&mut self.head);
        let max_t = self.app.last().0;
        let mut bytes = std::mem::take(&mut self.head);
        bytes.extend_from_slice(&max_t.to_le_bytes());
        let bytes = bytes.into_boxed_slice();
        self.closed_bytes += bytes.len();
        if self.closed.len() == self.closed.capacity() {
            self.closed.reserve_exact(1);
        }
        self.closed.push(bytes);
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
        let dead = self
            .closed
            .iter()
            .take_while(|c| closed_view(c).max_t < min_t)
            .count();
        if dead > 0 {
            self.closed_bytes -= self.closed[..dead].iter().map(|c| c.len()).sum::<usize>();
            self.closed.drain(..dead);
        }
        if self.closed.is_empty() && self.app.count() > 0 && self.app.last().0 < min_t {
            self.head = Vec::new();
            self.app = Appender::default();
        }
    }

    /// Frees spare capacity of the chunk list (after a series went quiet).
    pub fn shrink(&mut self) -> isize {
        if self.closed.capacity() > self.closed.len() + 4 {
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
