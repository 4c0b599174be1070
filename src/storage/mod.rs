//! The in-memory time-series store: a series index with postings per label pair, and
//! one ring buffer of samples per series holding a time-based retention window.
//!
//! The store is split into shards by series hash; each shard has its own lock, index
//! and rings, so writers of different series and readers rarely meet on one lock and
//! no lock is global. A batch append takes each shard's lock once.
//!
//! Invariants: a series is identified by its sorted label set (hash plus an equality
//! check, so a hash collision never merges two series); samples in a ring are strictly
//! increasing in time; the number of series never exceeds the configured limit. The
//! store never blocks on I/O and never reads the clock: callers pass times in.

pub mod exemplars;
mod index;
pub mod labels;
pub mod matcher;
pub mod metadata;
pub mod ring;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use index::Postings;
pub use labels::{is_valid_label_name, is_valid_metric_name, Label, LabelSet, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use ring::{Appended, RingBuffer};

/// The staleness marker Prometheus writes when a series disappears: a NaN with this
/// exact bit pattern. Kept as is by the store; compare with `f64::to_bits`.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is Prometheus's staleness marker.
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Older than the newest sample of its series.
    #[error("out of order sample")]
    OutOfOrder,
    /// Same timestamp as the newest sample of its series but a different value.
    #[error("duplicate sample for timestamp")]
    DuplicateTimestamp,
    /// The series is new and the store already holds the configured maximum.
    #[error("series limit reached")]
    SeriesLimit,
}

/// Store sizing.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Samples older than the newest sample of their series minus this are dropped,
    /// and series idle for longer are removed by [`Store::gc`].
    pub retention_ms: i64,
    /// Most series held at once.
    pub max_series: usize,
    /// Number of lock shards (rounded up to a power of two).
    pub shards: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_ms: 6 * 3600 * 1000,
            max_series: 1_000_000,
            shards: 64,
        }
    }
}

/// A process-unique series identity, stable while the series lives. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u64);

/// A direct handle to a live series, for writers that append to the same series
/// over and over (detector outputs): appending through it skips hashing and the
/// label comparison. A handle is checked on use: once its series is removed (and the
/// slot perhaps reused), appends through it are refused as stale, never misrouted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesRef {
    shard: u32,
    slot: u32,
    id: SeriesId,
}

impl SeriesRef {
    /// The series' identity.
    pub fn id(&self) -> SeriesId {
        self.id
    }
}

/// One series of a batch append: labels sorted by name with unique names and no empty
/// values (ingest guarantees this), and samples oldest first.
#[derive(Debug, Clone, Copy)]
pub struct SeriesWrite<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub samples: &'a [(i64, f64)],
}

/// Counts from a batch append.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendStats {
    pub samples_stored: u64,
    pub samples_duplicate: u64,
    pub series_created: u64,
    pub out_of_order: u64,
    pub duplicate_timestamp: u64,
    pub series_limit: u64,
}

impl AppendStats {
    /// Samples rejected for any reason.
    pub fn rejected(&self) -> u64 {
        self.out_of_order + self.duplicate_timestamp + self.series_limit
    }

    fn count(&mut self, e: AppendError, n: u64) {
        match e {
            AppendError::OutOfOrder => self.out_of_order += n,
            AppendError::DuplicateTimestamp => self.duplicate_timestamp += n,
            AppendError::SeriesLimit => self.series_limit += n,
        }
    }
}

impl std::ops::AddAssign for AppendStats {
    fn add_assign(&mut self, o: AppendStats) {
        self.samples_stored += o.samples_stored;
        self.samples_duplicate += o.samples_duplicate;
        self.series_created += o.series_created;
        self.out_of_order += o.out_of_order;
        self.duplicate_timestamp += o.duplicate_timestamp;
        self.series_limit += o.series_limit;
    }
}

/// A selected series with its samples in the requested time range.
#[derive(Debug, Clone)]
pub struct SeriesSamples {
    pub labels: LabelSet,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Size figures for the metrics endpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub series: usize,
    pub samples: usize,
    /// Estimated heap bytes: rings, label sets, index and interned strings.
    pub bytes: usize,
}

struct Series {
    id: SeriesId,
    hash: u64,
    /// The label pairs as one contiguous byte string (`name 0xff value 0xff ...`):
    /// the hash-collision check on every append compares this one allocation
    /// instead of chasing a pointer per interned string.
    key: Box<[u8]>,
    labels: LabelSet,
    ring: RingBuffer,
}

fn series_key(pairs: &[(&str, &str)]) -> Box<[u8]> {
    let mut key = Vec::with_capacity(pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
    for (n, v) in pairs {
        key.extend_from_slice(n.as_bytes());
        key.push(0xff);
        key.extend_from_slice(v.as_bytes());
        key.push(0xff);
    }
    key.into_boxed_slice()
}

/// True when `key` (from [`series_key`]) encodes exactly `pairs`. 0xff never occurs
/// in UTF-8, so the separators cannot be confused with label bytes.
fn key_matches(mut key: &[u8], pairs: &[(&str, &str)]) -> bool {
    for (n, v) in pairs {
        for part in [n.as_bytes(), v.as_bytes()] {
            match key.strip_prefix(part) {
                Some([0xff, rest @ ..]) => key = rest,
                _ => return false,
            }
        }
    }
    key.is_empty()
}

/// One lock's worth of the store.
#[derive(Default)]
struct Shard {
    /// Slab of series; `None` marks a free slot listed in `free`.
    slots: Vec<Option<Series>>,
    free: Vec<u32>,
    /// Series hash -> slot of the first series with that hash.
    by_hash: HashMap<u64, u32, ahash::RandomState>,
    /// Further slots whose series share a hash with the one in `by_hash` (64-bit
    /// collisions: practically never, but never merged either).
    collisions: HashMap<u64, Vec<u32>, ahash::RandomState>,
    postings: Postings,
}

/// The store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    interner: labels::Interner,
    config: StoreConfig,
    series_count: AtomicUsize,
    ring_bytes: AtomicI64,
    next_id: AtomicU64,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let n = config.shards.max(1).next_power_of_two();
        Store {
            shards: (0..n).map(|_| RwLock::new(Shard::default())).collect(),
            interner: labels::Interner::default(),
            config,
            series_count: AtomicUsize::new(0),
            ring_bytes: AtomicI64::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Number of live series.
    pub fn series_count(&self) -> usize {
        self.series_count.load(Ordering::Relaxed)
    }

    fn shard_of(&self, hash: u64) -> usize {
        // The low bits pick the hash-map bucket inside a shard; use the high ones here.
        (hash >> 48) as usize & (self.shards.len() - 1)
    }

    /// Appends a batch, taking each shard's lock once. Valid series are stored even
    /// when others are rejected; the returned counts say what happened.
    pub fn append_batch(&self, batch: &[SeriesWrite<'_>]) -> AppendStats {
        self.append_batch_observed(batch, &mut |_, _, _| {})
    }

    /// Appends `(handle, t, v)` samples, each shard locked once. Samples whose handle
    /// is stale (series removed) are not stored; their indices go to `stale` so the
    /// caller can write them by labels instead.
    pub fn append_refs(
        &self,
        samples: &[(SeriesRef, i64, f64)],
        stale: &mut Vec<usize>,
    ) -> AppendStats {
        let mut stats = AppendStats::default();
        let mut order: Vec<u32> = (0..samples.len() as u32).collect();
        // Stable: samples of one series keep their order.
        order.sort_by_key(|&i| samples[i as usize].0.shard);
        let mut grown = 0isize;
        for run in
            order.chunk_by(|&a, &b| samples[a as usize].0.shard == samples[b as usize].0.shard)
        {
            let mut shard = self.shards[samples[run[0] as usize].0.shard as usize].write();
            for &i in run {
                let (r, t, v) = samples[i as usize];
                let Some(series) = shard
                    .slots
                    .get_mut(r.slot as usize)
                    .and_then(Option::as_mut)
                    .filter(|s| s.id == r.id)
                else {
                    stale.push(i as usize);
                    continue;
                };
                grown += push_counted(&mut series.ring, t, v, self.config.retention_ms, &mut stats);
            }
        }
        if grown != 0 {
            self.ring_bytes.fetch_add(grown as i64, Ordering::Relaxed);
        }
        stats
    }

    /// [`Store::append_batch`], calling `observe(index in batch, id, labels)` for each
    /// series that stored at least one sample. `observe` runs under a shard lock: it
    /// must be quick (the detectors' path clones the `LabelSet`, a refcount bump).
    pub fn append_batch_observed(
        &self,
        batch: &[SeriesWrite<'_>],
        observe: &mut dyn FnMut(usize, SeriesRef, &LabelSet),
    ) -> AppendStats {
        self.append_batch_capped(batch, observe, self.config.max_series)
    }

    /// [`Store::append_batch_observed`] creating new series only while the store
    /// holds fewer than `cap` (at most the configured limit): derived writers (detector
    /// outputs) use a lower cap so they leave headroom for ingested series.
    pub fn append_batch_capped(
        &self,
        batch: &[SeriesWrite<'_>],
        observe: &mut dyn FnMut(usize, SeriesRef, &LabelSet),
        cap: usize,
    ) -> AppendStats {
        let cap = cap.min(self.config.max_series);
        let mut stats = AppendStats::default();
        if batch.is_empty() {
            return stats;
        }
        // Group the batch by shard (a counting sort of indices), then visit each shard once.
        let hashes: Vec<(u64, usize)> = batch
            .iter()
            .map(|w| {
                let h = labels::hash_pairs(w.labels.iter().copied());
                (h, self.shard_of(h))
            })
            .collect();
        let mut starts = vec![0usize; self.shards.len() + 1];
        for &(_, s) in &hashes {
            starts[s + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut order = vec![0u32; batch.len()];
        let mut fill = starts.clone();
        for (i, &(_, s)) in hashes.iter().enumerate() {
            order[fill[s]] = i as u32;
            fill[s] += 1;
        }
        for s in 0..self.shards.len() {
            let members = &order[starts[s]..starts[s + 1]];
            if members.is_empty() {
                continue;
            }
            let mut shard = self.shards[s].write();
            for &i in members {
                let w = &batch[i as usize];
                let stored = stats.samples_stored;
                let slot = self.append_series(&mut shard, hashes[i as usize].0, w, cap, &mut stats);
                if let Some(series) = slot
                    .filter(|_| stats.samples_stored > stored)
                    .and_then(|slot| shard.slots[slot as usize].as_ref())
                {
                    let handle = SeriesRef {
                        shard: s as u32,
                        slot: slot.unwrap_or_default(),
                        id: series.id,
                    };
                    observe(i as usize, handle, &series.labels);
                }
            }
        }
        stats
    }

    /// Appends one sample to the series with these labels (any order; empty values
    /// dropped), creating it if needed. For the loop's own writers: recording rules,
    /// detector outputs, test loaders.
    pub fn append(&self, labels: &LabelSet, t: i64, v: f64) -> Result<Appended, AppendError> {
        let pairs: Vec<(&str, &str)> = labels.iter().map(|l| (&*l.name, &*l.value)).collect();
        let samples = [(t, v)];
        let stats = self.append_batch(&[SeriesWrite {
            labels: &pairs,
            samples: &samples,
        }]);
        if stats.samples_stored == 1 {
            Ok(Appended::Stored)
        } else if stats.samples_duplicate == 1 {
            Ok(Appended::Duplicate)
        } else if stats.series_limit > 0 {
            Err(AppendError::SeriesLimit)
        } else if stats.out_of_order > 0 {
            Err(AppendError::OutOfOrder)
        } else {
            Err(AppendError::DuplicateTimestamp)
        }
    }

    fn append_series(
        &self,
        shard: &mut Shard,
        hash: u64,
        w: &SeriesWrite<'_>,
        cap: usize,
        stats: &mut AppendStats,
    ) -> Option<u32> {
        if w.samples.is_empty() {
            return None; // Never create a series without a sample.
        }
        let slot = match find_slot(shard, hash, w.labels) {
            Some(slot) => slot,
            None => match self.create_series(shard, hash, w.labels, cap) {
                Ok(slot) => {
                    stats.series_created += 1;
                    slot
                }
                Err(e) => {
                    stats.count(e, w.samples.len() as u64);
                    return None;
                }
            },
        };
        let series = shard.slots[slot as usize]
            .as_mut()
            .expect("slot from index is live");
        let mut grown = 0isize;
        for &(t, v) in w.samples {
            grown += push_counted(&mut series.ring, t, v, self.config.retention_ms, stats);
        }
        if grown != 0 {
            self.ring_bytes.fetch_add(grown as i64, Ordering::Relaxed);
        }
        Some(slot)
    }

    fn create_series(
        &self,
        shard: &mut Shard,
        hash: u64,
        pairs: &[(&str, &str)],
        cap: usize,
    ) -> Result<u32, AppendError> {
        // Reserve a place under the limit first, so concurrent creators cannot overshoot.
        let reserved = self
            .series_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(AppendError::SeriesLimit);
        }
        let labels = LabelSet::from_sorted(
            pairs
                .iter()
                .map(|&(n, v)| Label {
                    name: self.interner.intern(n),
                    value: self.interner.intern(v),
                })
                .collect(),
        );
        let series = Series {
            id: SeriesId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            hash,
            key: series_key(pairs),
            labels,
            ring: RingBuffer::default(),
        };
        let slot = match shard.free.pop() {
            Some(slot) => {
                shard.slots[slot as usize] = Some(series);
                slot
            }
            None => {
                shard.slots.push(Some(series));
                (shard.slots.len() - 1) as u32
            }
        };
        let labels = shard.slots[slot as usize]
            .as_ref()
            .map(|s| s.labels.clone())
            .unwrap_or_default();
        shard.postings.add(slot, &labels);
        match shard.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(slot);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                shard.collisions.entry(hash).or_default().push(slot)
            }
        }
        Ok(slot)
    }

    /// Calls `f` with every series matching all `matchers` that has a sample in
    /// `[mint, maxt]`, under the shard's read lock. The zero-copy path for scans.
    pub fn visit(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(SeriesId, &LabelSet, &RingBuffer),
    ) {
        for shard in self.shards.iter() {
            let shard = shard.read();
            for slot in shard.postings.select(matchers, |slot| {
                shard.slots[slot as usize].as_ref().map(|s| &s.labels)
            }) {
                if let Some(s) = &shard.slots[slot as usize] {
                    if s.ring.overlaps(mint, maxt) {
                        f(s.id, &s.labels, &s.ring);
                    }
                }
            }
        }
    }

    /// Series matching all `matchers`, with their samples in `[mint, maxt]`. Series
    /// without a sample in the range are left out. Sorted by labels.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        self.visit(matchers, mint, maxt, |_, labels, ring| {
            let mut s = SeriesSamples {
                labels: labels.clone(),
                timestamps: Vec::new(),
                values: Vec::new(),
            };
            ring.copy_range(mint, maxt, &mut s.timestamps, &mut s.values);
            out.push(s);
        });
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Label sets of the series matching all `matchers` with a sample in `[mint, maxt]`.
    pub fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<LabelSet> {
        let mut out = Vec::new();
        self.visit(matchers, mint, maxt, |_, labels, _| {
            out.push(labels.clone())
        });
        out.sort_unstable();
        out
    }

    /// Label names used by series with a sample in `[mint, maxt]` and, when given,
    /// matching all of `matchers`.
    pub fn label_names(
        &self,
        matchers: Option<&[Matcher]>,
        mint: i64,
        maxt: i64,
    ) -> BTreeSet<Arc<str>> {
        let mut out = BTreeSet::new();
        match matchers {
            None if mint == i64::MIN && maxt == i64::MAX => {
                for shard in self.shards.iter() {
                    out.extend(shard.read().postings.names().cloned());
                }
            }
            _ => self.visit(matchers.unwrap_or(&[]), mint, maxt, |_, labels, _| {
                for l in labels {
                    if !out.contains(&l.name) {
                        out.insert(l.name.clone());
                    }
                }
            }),
        }
        out
    }

    /// Values of label `name` among series with a sample in `[mint, maxt]` and, when
    /// given, matching all of `matchers`.
    pub fn label_values(
        &self,
        name: &str,
        matchers: Option<&[Matcher]>,
        mint: i64,
        maxt: i64,
    ) -> BTreeSet<Arc<str>> {
        let mut out = BTreeSet::new();
        match matchers {
            None if mint == i64::MIN && maxt == i64::MAX => {
                for shard in self.shards.iter() {
                    out.extend(shard.read().postings.values(name).cloned());
                }
            }
            _ => self.visit(matchers.unwrap_or(&[]), mint, maxt, |_, labels, _| {
                if let Some(l) = labels.iter().find(|l| &*l.name == name) {
                    if !out.contains(&l.value) {
                        out.insert(l.value.clone());
                    }
                }
            }),
        }
        out
    }

    /// Drops samples older than `now_ms - retention` and removes series left empty
    /// (idle for longer than the retention). Returns the removed series' ids, so
    /// state kept about them elsewhere (detectors) can be dropped too.
    pub fn gc(&self, now_ms: i64) -> Vec<SeriesId> {
        let min_t = now_ms.saturating_sub(self.config.retention_ms);
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let mut freed_bytes = 0isize;
            let mut dead = Vec::new();
            for (slot, s) in shard.slots.iter_mut().enumerate() {
                if let Some(s) = s {
                    s.ring.evict_before(min_t);
                    if s.ring.is_empty() {
                        dead.push(slot as u32);
                    } else {
                        freed_bytes += s.ring.shrink();
                    }
                }
            }
            for slot in dead {
                if let Some(series) = remove_series(&mut shard, slot) {
                    freed_bytes -= series.ring.heap_bytes() as isize;
                    removed.push(series.id);
                }
            }
            self.ring_bytes
                .fetch_add(freed_bytes as i64, Ordering::Relaxed);
        }
        if !removed.is_empty() {
            self.series_count.fetch_sub(removed.len(), Ordering::AcqRel);
            self.interner.purge_unused();
        }
        removed
    }

    /// Series, sample and byte counts.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            series: self.series_count(),
            ..Default::default()
        };
        let mut label_bytes = 0usize;
        for shard in self.shards.iter() {
            let shard = shard.read();
            label_bytes += shard.slots.len() * size_of::<Option<Series>>()
                + shard.by_hash.capacity() * (size_of::<u64>() + size_of::<u32>() + 1)
                + shard.postings.heap_bytes();
            for s in shard.slots.iter().flatten() {
                stats.samples += s.ring.len();
                label_bytes +=
                    s.labels.len() * size_of::<Label>() + 2 * size_of::<usize>() + s.key.len();
            }
        }
        stats.bytes = self.ring_bytes.load(Ordering::Relaxed).max(0) as usize
            + label_bytes
            + self.interner.heap_bytes();
        stats
    }
}

/// Pushes one sample, counting the outcome; returns the ring's growth in bytes.
fn push_counted(
    ring: &mut RingBuffer,
    t: i64,
    v: f64,
    retention_ms: i64,
    stats: &mut AppendStats,
) -> isize {
    match ring.push(t, v, retention_ms) {
        Ok((Appended::Stored, grown)) => {
            stats.samples_stored += 1;
            grown
        }
        Ok((Appended::Duplicate, _)) => {
            stats.samples_duplicate += 1;
            0
        }
        Err(e) => {
            stats.count(e, 1);
            0
        }
    }
}

fn find_slot(shard: &Shard, hash: u64, pairs: &[(&str, &str)]) -> Option<u32> {
    let first = *shard.by_hash.get(&hash)?;
    let is_match = |slot: u32| {
        shard.slots[slot as usize]
            .as_ref()
            .is_some_and(|s| key_matches(&s.key, pairs))
    };
    if is_match(first) {
        return Some(first);
    }
    shard
        .collisions
        .get(&hash)?
        .iter()
        .copied()
        .find(|&slot| is_match(slot))
}

/// Unlinks a series from its shard and returns it.
fn remove_series(shard: &mut Shard, slot: u32) -> Option<Series> {
    let series = shard.slots[slot as usize].take()?;
    shard.postings.remove(slot, &series.labels);
    let hash = series.hash;
    if shard.by_hash.get(&hash) == Some(&slot) {
        // Promote a colliding series, if any, into the main map.
        let next = shard.collisions.get_mut(&hash).and_then(Vec::pop);
        match next {
            Some(other) => {
                shard.by_hash.insert(hash, other);
            }
            None => {
                shard.by_hash.remove(&hash);
            }
        }
    } else if let Some(list) = shard.collisions.get_mut(&hash) {
        list.retain(|&x| x != slot);
    }
    if shard.collisions.get(&hash).is_some_and(Vec::is_empty) {
        shard.collisions.remove(&hash);
    }
    shard.free.push(slot);
    Some(series)
}

#[cfg(test)]
mod tests;
