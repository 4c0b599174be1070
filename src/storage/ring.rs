//! A per-series ring buffer of samples, struct-of-arrays: one array of timestamps and
//! one of values, so range scans and detectors read plain `&[i64]` / `&[f64]` slices.
//!
//! Invariants: timestamps are strictly increasing from the oldest sample to the newest;
//! capacity is a power of two (index arithmetic is a mask); retention is time-based and
//! relative to the newest sample, so the ring never reads a clock.

use super::AppendError;

/// Smallest capacity a ring grows to on its first sample.
const MIN_CAPACITY: usize = 8;

/// Samples of one series, oldest first, in a growable power-of-two ring.
#[derive(Debug, Default)]
pub struct RingBuffer {
    timestamps: Box<[i64]>,
    values: Box<[f64]>,
    /// Index of the oldest sample.
    head: usize,
    len: usize,
}

/// What happened to one appended sample that was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The sample was stored.
    Stored,
    /// The same timestamp and value (bit for bit) was already the newest sample: a
    /// resent sample, accepted without storing it twice.
    Duplicate,
}

impl RingBuffer {
    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the ring holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated sample slots.
    pub fn capacity(&self) -> usize {
        self.timestamps.len()
    }

    /// Bytes held by the sample arrays.
    pub fn heap_bytes(&self) -> usize {
        self.capacity() * (size_of::<i64>() + size_of::<f64>())
    }

    fn mask(&self) -> usize {
        self.capacity() - 1
    }

    /// Timestamp of the oldest sample.
    pub fn first_timestamp(&self) -> Option<i64> {
        (self.len > 0).then(|| self.timestamps[self.head])
    }

    /// The newest sample.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.len > 0).then(|| {
            let i = (self.head + self.len - 1) & self.mask();
            (self.timestamps[i], self.values[i])
        })
    }

    /// Appends a sample newer than every held one, then drops samples older than
    /// `t - retention_ms`. Returns the change in allocated bytes alongside the outcome.
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
        self.evict_before(t.saturating_sub(retention_ms));
        let mut grown = 0isize;
        if self.len == self.capacity() {
            let before = self.heap_bytes();
            self.resize((self.capacity() * 2).max(MIN_CAPACITY));
            grown = self.heap_bytes() as isize - before as isize;
        }
        let i = (self.head + self.len) & self.mask();
        self.timestamps[i] = t;
        self.values[i] = v;
        self.len += 1;
        Ok((Appended::Stored, grown))
    }

    /// Drops every sample with a timestamp before `min_t`.
    pub fn evict_before(&mut self, min_t: i64) {
        while self.len > 0 && self.timestamps[self.head] < min_t {
            self.head = (self.head + 1) & self.mask();
            self.len -= 1;
        }
    }

    /// Shrinks the allocation when at most a quarter of it is used. Returns the change
    /// in allocated bytes (zero or negative).
    pub fn shrink(&mut self) -> isize {
        let cap = self.capacity();
        if cap > MIN_CAPACITY && self.len <= cap / 4 {
            let before = self.heap_bytes();
            self.resize((self.len.next_power_of_two()).max(MIN_CAPACITY) * 2);
            return self.heap_bytes() as isize - before as isize;
        }
        0
    }

    fn resize(&mut self, new_cap: usize) {
        debug_assert!(new_cap.is_power_of_two() && new_cap >= self.len);
        let mut ts = vec![0i64; new_cap].into_boxed_slice();
        let mut vs = vec![0f64; new_cap].into_boxed_slice();
        let (t1, t2, v1, v2) = self.slices();
        ts[..t1.len()].copy_from_slice(t1);
        ts[t1.len()..self.len].copy_from_slice(t2);
        vs[..v1.len()].copy_from_slice(v1);
        vs[v1.len()..self.len].copy_from_slice(v2);
        self.timestamps = ts;
        self.values = vs;
        self.head = 0;
    }

    /// The samples as two runs of timestamps and two of values, oldest run first
    /// (`t1`/`v1` then `t2`/`v2`); the second run is empty unless the ring wrapped.
    pub fn slices(&self) -> (&[i64], &[i64], &[f64], &[f64]) {
        if self.len == 0 {
            return (&[], &[], &[], &[]);
        }
        let end = self.head + self.len;
        if end <= self.capacity() {
            (
                &self.timestamps[self.head..end],
                &[],
                &self.values[self.head..end],
                &[],
            )
        } else {
            let wrap = end - self.capacity();
            (
                &self.timestamps[self.head..],
                &self.timestamps[..wrap],
                &self.values[self.head..],
                &self.values[..wrap],
            )
        }
    }

    /// Appends to `ts`/`vs` every sample with `mint <= t <= maxt`, oldest first.
    pub fn copy_range(&self, mint: i64, maxt: i64, ts: &mut Vec<i64>, vs: &mut Vec<f64>) {
        let (t1, t2, v1, v2) = self.slices();
        for (t, v) in [(t1, v1), (t2, v2)] {
            let lo = t.partition_point(|&x| x < mint);
            let hi = t.partition_point(|&x| x <= maxt);
            if lo < hi {
                ts.extend_from_slice(&t[lo..hi]);
                vs.extend_from_slice(&v[lo..hi]);
            }
        }
    }

    /// True when some sample lies in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        match (self.first_timestamp(), self.last()) {
            (Some(first), Some((last, _))) => {
                if first > maxt || last < mint {
                    return false;
                }
                let (t1, t2, _, _) = self.slices();
                [t1, t2].iter().any(|t| {
                    let lo = t.partition_point(|&x| x < mint);
                    lo < t.len() && t[lo] <= maxt
                })
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn collect(r: &RingBuffer) -> (Vec<i64>, Vec<f64>) {
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        r.copy_range(i64::MIN, i64::MAX, &mut ts, &mut vs);
        (ts, vs)
    }

    #[test]
    fn wraps_around_and_keeps_order() {
        let mut r = RingBuffer::default();
        // Retention of 10 samples at 1ms: the ring settles at a fixed capacity and wraps.
        for t in 0..1000 {
            r.push(t, t as f64, 9).unwrap();
        }
        let (ts, vs) = collect(&r);
        assert_eq!(ts, (990..1000).collect::<Vec<_>>());
        assert_eq!(vs, (990..1000).map(|x| x as f64).collect::<Vec<_>>());
        assert!(
            r.capacity() <= 16,
            "capacity {} grew past the window",
            r.capacity()
        );
        let (t1, t2, _, _) = r.slices();
        assert_eq!(t1.len() + t2.len(), 10);
    }

    #[test]
    fn retention_is_relative_to_newest_sample() {
        let mut r = RingBuffer::default();
        r.push(1_000, 1.0, 5_000).unwrap();
        r.push(4_000, 2.0, 5_000).unwrap();
        r.push(6_000, 3.0, 5_000).unwrap(); // 1_000 == 6_000 - 5_000 is kept
        assert_eq!(collect(&r).0, vec![1_000, 4_000, 6_000]);
        r.push(6_001, 4.0, 5_000).unwrap();
        assert_eq!(collect(&r).0, vec![4_000, 6_000, 6_001]);
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let mut r = RingBuffer::default();
        r.push(10, 1.0, 1000).unwrap();
        assert_eq!(r.push(5, 1.0, 1000), Err(AppendError::OutOfOrder));
        assert_eq!(r.push(10, 1.0, 1000), Ok((Appended::Duplicate, 0)));
        assert_eq!(r.push(10, 2.0, 1000), Err(AppendError::DuplicateTimestamp));
        assert_eq!(collect(&r), (vec![10], vec![1.0]));
    }

    #[test]
    fn staleness_markers_are_kept_bit_exact() {
        let mut r = RingBuffer::default();
        r.push(1, 1.0, 1000).unwrap();
        r.push(2, f64::from_bits(STALE_NAN), 1000).unwrap();
        // A resent stale marker is a duplicate, not a conflict.
        assert_eq!(
            r.push(2, f64::from_bits(STALE_NAN), 1000),
            Ok((Appended::Duplicate, 0))
        );
        assert_eq!(r.last().map(|(_, v)| v.to_bits()), Some(STALE_NAN));
    }

    #[test]
    fn copy_range_across_the_wrap() {
        let mut r = RingBuffer::default();
        for t in 0..13 {
            r.push(t * 10, t as f64, 75).unwrap();
        }
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        r.copy_range(65, 105, &mut ts, &mut vs);
        assert_eq!(ts, vec![70, 80, 90, 100]);
        assert!(!r.overlaps(95, 96) && r.overlaps(95, 100));
    }

    #[test]
    fn shrinks_after_eviction() {
        let mut r = RingBuffer::default();
        for t in 0..1000 {
            r.push(t, 0.0, 10_000).unwrap();
        }
        assert_eq!(r.capacity(), 1024);
        r.evict_before(990);
        assert!(r.shrink() < 0);
        assert!(r.capacity() <= 32);
        assert_eq!(collect(&r).0, (990..1000).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #[test]
        fn matches_a_vec_model(steps in proptest::collection::vec((0i64..50, -1e9f64..1e9), 1..400), retention in 0i64..500) {
            let mut r = RingBuffer::default();
            let mut model: Vec<(i64, f64)> = Vec::new();
            let mut t = 0i64;
            for (dt, v) in steps {
                t += dt;
                let res = r.push(t, v, retention);
                match model.last() {
                    Some(&(lt, lv)) if lt == t => {
                        if lv.to_bits() == v.to_bits() { proptest::prop_assert!(res.is_ok()); }
                        else { proptest::prop_assert_eq!(res, Err(AppendError::DuplicateTimestamp)); }
                    }
                    _ => {
                        proptest::prop_assert!(res.is_ok());
                        model.push((t, v));
                        model.retain(|&(mt, _)| mt >= t - retention);
                    }
                }
            }
            let (ts, vs) = collect(&r);
            proptest::prop_assert_eq!(ts, model.iter().map(|p| p.0).collect::<Vec<_>>());
            proptest::prop_assert_eq!(vs, model.iter().map(|p| p.1).collect::<Vec<_>>());
        }
    }
}
