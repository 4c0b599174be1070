//! The in-memory time-series store: a series index with postings per label pair, and
//! per series a window of compressed chunks holding a time-based retention window.
//!
//! The store is split into shards by series hash; each shard has its own lock, index
//! and windows, so writers of different series and readers rarely meet on one lock and
//! no lock is global. A batch append takes each shard's lock once.
//!
//! Invariants: a series is identified by its sorted label set (hash plus an equality
//! check, so a hash collision never merges two series); samples in a window are
//! strictly increasing in time; the number of series never exceeds the configured
//! limit, and no series is created once the estimated bytes reach `max_bytes`. The
//! store never blocks on I/O and never reads the clock: callers pass times in.

mod chunk;
mod index;
pub mod labels;
pub mod matcher;
pub mod window;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use index::Postings;
pub use labels::{is_valid_label_name, is_valid_metric_name, Label, LabelSet, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use window::{Appended, SeriesWindow, ALLOC_OVERHEAD, CHUNK_SAMPLES};

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
    /// The series is new and the store's estimated bytes reached `storage.max_bytes`.
    #[error("store memory limit reached")]
    MemoryLimit,
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
    /// When set, no new series is created once the store's estimated heap bytes
    /// ([`Store::bytes`]) reach this; existing series keep appending.
    pub max_bytes: Option<usize>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_ms: 6 * 3600 * 1000,
            max_series: 1_000_000,
            shards: 64,
            max_bytes: None,
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
    pub memory_limit: u64,
}

impl AppendStats {
    /// Samples rejected for any reason.
    pub fn rejected(&self) -> u64 {
        self.out_of_order + self.duplicate_timestamp + self.series_limit + self.memory_limit
    }

    fn count(&mut self, e: AppendError, n: u64) {
        match e {
            AppendError::OutOfOrder => self.out_of_order += n,
            AppendError::DuplicateTimestamp => self.duplicate_timestamp += n,
            AppendError::SeriesLimit => self.series_limit += n,
            AppendError::MemoryLimit => self.memory_limit += n,
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
        self.memory_limit += o.memory_limit;
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
    /// Estimated heap bytes: chunks, label sets, series keys, index, interned
    /// strings and the shards' tables.
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
    window: SeriesWindow,
}

impl Series {
    /// Heap bytes of the series' own allocations besides its window: the key and
    /// the label array (the strings are the interner's, shared).
    fn label_bytes(&self) -> usize {
        self.key.len()
            + self.labels.len() * size_of::<Label>()
            + 2 * size_of::<usize>()
            + 2 * ALLOC_OVERHEAD
    }

    /// What the series adds to the store's running byte count: its window, its own
    /// allocations, and (estimated) its postings entries and hash-table entry.
    fn accounted_bytes(&self) -> usize {
        self.window.heap_bytes() + self.label_bytes() + series_index_bytes(self.labels.len())
    }
}

/// Estimated index bytes per series: a slot number in the postings of each label and
/// of all series, a hash-table entry, and its slab slot.
fn series_index_bytes(labels: usize) -> usize {
    (labels + 1) * size_of::<u32>() + 16 + size_of::<Option<Series>>()
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
    /// Running estimate of the bytes the series hold (windows, keys, labels, index
    /// entries); with the interner's bytes, what `max_bytes` is checked against.
    series_bytes: AtomicI64,
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
            series_bytes: AtomicI64::new(0),
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

    /// The running estimate of the store's heap bytes that `max_bytes` is checked
    /// against: the series' windows, keys, labels and index entries plus interned
    /// strings. [`Store::stats`] adds the shards' tables, walking every series.
    pub fn bytes(&self) -> usize {
        self.series_bytes.load(Ordering::Relaxed).max(0) as usize + self.interner.heap_bytes()
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
                grown += push_counted(
                    &mut series.window,
                    t,
                    v,
                    self.config.retention_ms,
                    &mut stats,
                );
            }
        }
        if grown != 0 {
            self.series_bytes.fetch_add(grown as i64, Ordering::Relaxed);
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
        } else if stats.memory_limit > 0 {
            Err(AppendError::MemoryLimit)
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
            grown += push_counted(&mut series.window, t, v, self.config.retention_ms, stats);
        }
        if grown != 0 {
            self.series_bytes.fetch_add(grown as i64, Ordering::Relaxed);
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
        if self.config.max_bytes.is_some_and(|max| self.bytes() >= max) {
            self.series_count.fetch_sub(1, Ordering::AcqRel);
            return Err(AppendError::MemoryLimit);
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
            window: SeriesWindow::default(),
        };
        self.series_bytes
            .fetch_add(series.accounted_bytes() as i64, Ordering::Relaxed);
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
    /// `[mint, maxt]`, under the shard's read lock. The path for scans: `f` decodes
    /// what it needs with [`SeriesWindow::copy_range`] into buffers it reuses.
    pub fn visit(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(SeriesId, &LabelSet, &SeriesWindow),
    ) {
        for shard in self.shards.iter() {
            let shard = shard.read();
            for slot in shard.postings.select(matchers, |slot| {
                shard.slots[slot as usize].as_ref().map(|s| &s.labels)
            }) {
                if let Some(s) = &shard.slots[slot as usize] {
                    if s.window.overlaps(mint, maxt) {
                        f(s.id, &s.labels, &s.window);
                    }
                }
            }
        }
    }

    /// Series matching all `matchers`, with their samples in `[mint, maxt]`. Series
    /// without a sample in the range are left out. Sorted by labels.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        self.visit(matchers, mint, maxt, |_, labels, window| {
            let mut s = SeriesSamples {
                labels: labels.clone(),
                timestamps: Vec::new(),
                values: Vec::new(),
            };
            window.copy_range(mint, maxt, &mut s.timestamps, &mut s.values);
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
    /// state kept about them elsewhere (detectors) can be dropped too. Removing many
    /// series at once costs one pass over the postings lists they were in, not one
    /// per series.
    pub fn gc(&self, now_ms: i64) -> Vec<SeriesId> {
        let min_t = now_ms.saturating_sub(self.config.retention_ms);
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let mut freed_bytes = 0isize;
            let mut dead = Vec::new();
            for (slot, s) in shard.slots.iter_mut().enumerate() {
                if let Some(s) = s {
                    freed_bytes += s.window.evict_before(min_t);
                    if s.window.is_empty() {
                        dead.push(slot as u32);
                    } else {
                        freed_bytes += s.window.shrink();
                    }
                }
            }
            let mut gone = Vec::with_capacity(dead.len());
            for slot in dead {
                if let Some(series) = unlink(&mut shard, slot) {
                    freed_bytes -= series.accounted_bytes() as isize;
                    removed.push(series.id);
                    gone.push((slot, series.labels));
                }
            }
            shard.postings.remove_all(&gone);
            self.series_bytes
                .fetch_add(freed_bytes as i64, Ordering::Relaxed);
        }
        if !removed.is_empty() {
            self.series_count.fetch_sub(removed.len(), Ordering::AcqRel);
            self.interner.purge_unused();
        }
        removed
    }

    /// Series, sample and byte counts. Walks every series under the shards' read
    /// locks (what `/metrics` calls on a scrape).
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            series: self.series_count(),
            ..Default::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.read();
            stats.bytes += shard.slots.capacity() * size_of::<Option<Series>>()
                + shard.free.capacity() * size_of::<u32>()
                + shard.by_hash.capacity() * (size_of::<u64>() + size_of::<u32>() + 1)
                + shard.postings.heap_bytes();
            for s in shard.slots.iter().flatten() {
                stats.samples += s.window.len();
                stats.bytes += s.window.heap_bytes() + s.label_bytes();
            }
        }
        stats.bytes += self.interner.heap_bytes();
        stats
    }
}

/// Pushes one sample, counting the outcome; returns the window's growth in bytes.
fn push_counted(
    window: &mut SeriesWindow,
    t: i64,
    v: f64,
    retention_ms: i64,
    stats: &mut AppendStats,
) -> isize {
    match window.push(t, v, retention_ms) {
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

/// Unlinks a series from its shard, postings included, and returns it.
#[cfg(test)]
fn remove_series(shard: &mut Shard, slot: u32) -> Option<Series> {
    let series = unlink(shard, slot)?;
    shard.postings.remove_all(&[(slot, series.labels.clone())]);
    Some(series)
}

/// Unlinks a series from its shard's slab and hash maps (not from the postings:
/// the caller removes a whole batch from those at once) and returns it.
fn unlink(shard: &mut Shard, slot: u32) -> Option<Series> {
    let series = shard.slots[slot as usize].take()?;
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
