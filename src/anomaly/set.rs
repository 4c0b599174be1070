//! [`DetectorSet`]: the runtime ingest calls after appending a remote-write batch.
//!
//! It keeps one row per [`SeriesId`] holding, for every detector, the series' slot
//! or "no match" (decided once, the first time the series is seen, so matchers run
//! once per series, and a batch costs one hash lookup per series whatever the number
//! of detectors). For each detector it gathers the batch's samples of matching series into three flat
//! arrays (slot, time, value), runs the detector's kernel over them, records threshold
//! crossings as [`AnomalyEvent`]s, and keeps the outputs until the next batch so
//! [`DetectorSet::write_outputs`] can append them to the store.
//!
//! Invariants: a series has at most one slot per detector; a slot is freed when the
//! series is forgotten or its detector is replaced; a reload keeps the detector (and
//! all its state) when its spec is unchanged. Buffers are reused across batches, so
//! a steady stream of requests does not allocate in the set itself.

use std::collections::HashMap;

use super::{AnomalyEvent as Event, Detector, DetectorSpec, Error, OutputKind, Outputs, Result};
use crate::storage::{
    AppendStats, Label, LabelSet, Matcher, SeriesId, SeriesRef, SeriesWrite, Store, METRIC_NAME,
};

/// The output series names, in the order of [`Outputs`]' columns.
pub const OUTPUT_NAMES: [&str; 4] = [
    "anomaly_score",
    "anomaly_upper",
    "anomaly_lower",
    "anomaly_forecast",
];

/// The samples one series received in the batch just appended.
#[derive(Debug, Clone, Copy)]
pub struct SeriesBatch<'a> {
    /// The series' identity in the store.
    pub id: SeriesId,
    /// Its labels.
    pub labels: &'a LabelSet,
    /// Its appended samples, oldest first.
    pub samples: &'a [(i64, f64)],
}

/// One crossing of a detector's threshold (the score went from at or below the
/// threshold to above it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnomalyEvent {
    /// The detector's name.
    pub detector: String,
    /// The detector's severity.
    pub severity: String,
    /// The series (serialised as its number).
    #[serde(serialize_with = "ser_series_id")]
    pub series: SeriesId,
    /// The series' labels (serialised as a name → value map).
    #[serde(serialize_with = "ser_labels")]
    pub labels: LabelSet,
    /// Sample time (ms).
    pub t: i64,
    /// Sample value.
    pub value: f64,
    /// The detector's raw score.
    pub score: f64,
    /// The threshold it crossed.
    pub threshold: f64,
}

fn ser_series_id<S: serde::Serializer>(id: &SeriesId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(id.0)
}

fn ser_labels<S: serde::Serializer>(labels: &LabelSet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(labels.iter().map(|l| (&*l.name, &*l.value)))
}

/// Builds the label set of an output series: the source labels with `__name__`
/// replaced by `output` and `detector="<detector>"` added (replacing any source
/// `detector` label).
pub fn output_labels(source: &LabelSet, detector: &str, output: &str) -> LabelSet {
    let mut v: Vec<Label> = source
        .iter()
        .filter(|l| &*l.name != METRIC_NAME && &*l.name != "detector")
        .cloned()
        .collect();
    v.push(Label {
        name: METRIC_NAME.into(),
        value: output.into(),
    });
    v.push(Label {
        name: "detector".into(),
        value: detector.into(),
    });
    v.sort_by(|a, b| a.name.cmp(&b.name));
    LabelSet::from_sorted(v)
}

/// The series has not been checked against this detector yet.
const UNDECIDED: u32 = u32::MAX - 1;
/// The series does not match this detector.
const NO_MATCH: u32 = u32::MAX;

/// Appends the sorted label pairs of an output series (see [`output_labels`]).
fn push_output_pairs<'a>(
    pairs: &mut Vec<(&'a str, &'a str)>,
    source: &'a LabelSet,
    detector: &'a str,
    output: &'static str,
) {
    let start = pairs.len();
    pairs.extend(
        source
            .iter()
            .filter(|l| &*l.name != METRIC_NAME && &*l.name != "detector")
            .map(|l| (&*l.name, &*l.value)),
    );
    for extra in [(METRIC_NAME, output), ("detector", detector)] {
        let at = start + pairs[start..].partition_point(|p| p.0 < extra.0);
        pairs.insert(at, extra);
    }
}

/// One detector inside a set, with its last batch's outputs.
#[derive(Debug)]
struct Entry {
    detector: Detector,
    matchers: Vec<Matcher>,
    /// Which output columns are written back.
    writes: [bool; 4],
    /// Whether each slot's last score was above the threshold.
    above: Vec<bool>,
    /// Per slot, handles of its output series (score, upper, lower, forecast) once
    /// written, so later outputs append without building labels or hashing them.
    out_refs: Vec<[Option<SeriesRef>; 4]>,
    // the last batch, flattened: which input series each sample came from
    owner: Vec<u32>,
    slots: Vec<u32>,
    ts: Vec<i64>,
    vs: Vec<f64>,
    out: Outputs,
}

impl Entry {
    fn new(spec: &DetectorSpec) -> Result<Self> {
        let detector = Detector::from_spec(spec)?;
        let matchers = spec.matchers()?;
        Ok(Entry {
            writes: OutputKind::ALL.map(|k| spec.writes(k)),
            detector,
            matchers,
            above: Vec::new(),
            out_refs: Vec::new(),
            owner: Vec::new(),
            slots: Vec::new(),
            ts: Vec::new(),
            vs: Vec::new(),
            out: Outputs::default(),
        })
    }

    /// Matches `labels` and allocates a slot when they match.
    fn decide(&mut self, labels: &LabelSet) -> u32 {
        let matches = self
            .matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")));
        if !matches {
            return NO_MATCH;
        }
        let s = self.detector.alloc_slot();
        if self.above.len() <= s as usize {
            self.above.resize(s as usize + 1, false);
            self.out_refs.resize(s as usize + 1, [None; 4]);
        }
        self.above[s as usize] = false;
        self.out_refs[s as usize] = [None; 4];
        s
    }

    /// Scores the batch. `cells[k]` is this detector's cell of batch item k's row.
    fn process(
        &mut self,
        batch: &[SeriesBatch<'_>],
        table: &mut [u32],
        cells: &[usize],
        events: &mut Vec<Event>,
    ) {
        self.owner.clear();
        self.slots.clear();
        self.ts.clear();
        self.vs.clear();
        for (k, sb) in batch.iter().enumerate() {
            let cell = &mut table[cells[k]];
            if *cell == UNDECIDED {
                *cell = self.decide(sb.labels);
            }
            let slot = *cell;
            if slot == NO_MATCH {
                continue;
            }
            for &(t, v) in sb.samples {
                self.owner.push(k as u32);
                self.slots.push(slot);
                self.ts.push(t);
                self.vs.push(v);
            }
        }
        self.detector
            .update(&self.slots, &self.ts, &self.vs, &mut self.out);
        let thr = self.detector.threshold();
        for (i, &score) in self.out.score.iter().enumerate() {
            if score.is_nan() {
                continue;
            }
            let slot = self.slots[i] as usize;
            let now_above = score > thr;
            if now_above && !self.above[slot] {
                let sb = &batch[self.owner[i] as usize];
                let spec = self.detector.spec();
                events.push(Event {
                    detector: spec.name.clone(),
                    severity: spec.severity.clone(),
                    series: sb.id,
                    labels: sb.labels.clone(),
                    t: self.ts[i],
                    value: self.vs[i],
                    score,
                    threshold: thr,
                });
            }
            self.above[slot] = now_above;
        }
    }

    fn free(&mut self, slot: u32) {
        if slot < UNDECIDED {
            self.detector.free_slot(slot);
            if let Some(a) = self.above.get_mut(slot as usize) {
                *a = false;
            }
            if let Some(r) = self.out_refs.get_mut(slot as usize) {
                *r = [None; 4];
            }
        }
    }
}

/// The detectors of all loaded rule groups and the state of every series they watch.
#[derive(Debug, Default)]
pub struct DetectorSet {
    entries: Vec<Entry>,
    /// Row of each known series in `table`.
    rows: HashMap<SeriesId, u32, ahash::RandomState>,
    /// `entries.len()` cells per row: a slot, `NO_MATCH` or `UNDECIDED`.
    table: Vec<u32>,
    /// Rows of forgotten series, for reuse.
    free_rows: Vec<u32>,
    /// Newest sample time per row (for [`DetectorSet::gc`]).
    last_seen: Vec<i64>,
    /// Per batch: the table index of each item's row start.
    row_starts: Vec<usize>,
    cells: Vec<usize>,
    events: Vec<Event>,
}

impl DetectorSet {
    /// Builds a set; fails (naming detector, field and reason) if any spec is invalid
    /// or two share a name.
    pub fn new(specs: &[DetectorSpec]) -> Result<Self> {
        let mut set = DetectorSet::default();
        set.reload(specs)?;
        Ok(set)
    }

    /// Replaces the detectors. A detector whose spec is unchanged keeps its state;
    /// changed, new and removed ones start from scratch or are dropped. On error
    /// nothing changes.
    pub fn reload(&mut self, specs: &[DetectorSpec]) -> Result<()> {
        for (i, s) in specs.iter().enumerate() {
            s.validate()?;
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(Error::DuplicateName(s.name.clone()));
            }
        }
        let mut new_entries = Vec::with_capacity(specs.len());
        // for each new column, the old column it keeps (if any)
        let mut from: Vec<Option<usize>> = Vec::with_capacity(specs.len());
        for s in specs {
            let kept = self
                .entries
                .iter()
                .position(|e| e.detector.spec() == s)
                .filter(|c| !from.contains(&Some(*c)));
            match kept {
                Some(c) => {
                    from.push(Some(c));
                    new_entries.push(None);
                }
                None => {
                    from.push(None);
                    new_entries.push(Some(Entry::new(s)?));
                }
            }
        }
        let old_stride = self.entries.len();
        let new_stride = specs.len();
        let n_rows = self
            .table
            .len()
            .checked_div(old_stride)
            .unwrap_or(self.rows.len() + self.free_rows.len());
        let mut table = vec![UNDECIDED; n_rows * new_stride];
        for r in 0..n_rows {
            for (c, f) in from.iter().enumerate() {
                if let Some(oc) = f {
                    table[r * new_stride + c] = self.table[r * old_stride + oc];
                }
            }
        }
        let mut old: Vec<Option<Entry>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        self.entries = new_entries
            .into_iter()
            .zip(&from)
            .filter_map(|(e, f)| match (e, f) {
                (Some(e), _) => Some(e),
                (None, Some(oc)) => old[*oc].take(),
                (None, None) => None,
            })
            .collect();
        self.table = table;
        Ok(())
    }

    /// The detectors' specs, in declaration order.
    pub fn specs(&self) -> impl Iterator<Item = &DetectorSpec> + '_ {
        self.entries.iter().map(|e| e.detector.spec())
    }

    /// Number of (detector, series) pairs holding state.
    pub fn live_series(&self) -> usize {
        self.entries.iter().map(|e| e.detector.live_series()).sum()
    }

    /// Scores a just-appended batch with every detector and returns the threshold
    /// crossings. The outputs stay available for [`DetectorSet::write_outputs`] and
    /// [`DetectorSet::outputs`] until the next call.
    pub fn process(&mut self, batch: &[SeriesBatch<'_>]) -> &[Event] {
        self.events.clear();
        let stride = self.entries.len();
        if stride == 0 {
            return &self.events;
        }
        self.row_starts.clear();
        for sb in batch {
            let row = match self.rows.get(&sb.id) {
                Some(&r) => r,
                None => {
                    let r = match self.free_rows.pop() {
                        Some(r) => {
                            let start = r as usize * stride;
                            self.table[start..start + stride].fill(UNDECIDED);
                            r
                        }
                        None => {
                            let r = (self.table.len() / stride) as u32;
                            self.table.resize(self.table.len() + stride, UNDECIDED);
                            r
                        }
                    };
                    self.rows.insert(sb.id, r);
                    r
                }
            };
            if self.last_seen.len() <= row as usize {
                self.last_seen.resize(row as usize + 1, i64::MIN);
            }
            if let Some(&(t, _)) = sb.samples.last() {
                let seen = &mut self.last_seen[row as usize];
                *seen = (*seen).max(t);
            }
            self.row_starts.push(row as usize * stride);
        }
        for (c, e) in self.entries.iter_mut().enumerate() {
            self.cells.clear();
            self.cells.extend(self.row_starts.iter().map(|&s| s + c));
            e.process(batch, &mut self.table, &self.cells, &mut self.events);
        }
        &self.events
    }

    /// Visits every output sample of the last batch:
    /// `(detector name, input index into the batch, output name, t, value)`.
    pub fn outputs(&self, mut f: impl FnMut(&str, usize, &'static str, i64, f64)) {
        for e in &self.entries {
            let name = e.detector.spec().name.as_str();
            let cols = [&e.out.score, &e.out.upper, &e.out.lower, &e.out.forecast];
            for (c, col) in cols.iter().enumerate() {
                for (i, &v) in col.iter().enumerate() {
                    if v.is_finite() {
                        f(name, e.owner[i] as usize, OUTPUT_NAMES[c], e.ts[i], v);
                    }
                }
            }
        }
    }

    /// Appends the last batch's outputs to `store` as series labelled with
    /// [`output_labels`]. `batch` must be the slice given to the last `process`.
    /// An output series is found by its labels once (label pairs borrowed, one
    /// `append_batch` call); its handle is then cached per slot, and later samples
    /// are appended through it without building or hashing labels.
    pub fn write_outputs(&mut self, store: &Store, batch: &[SeriesBatch<'_>]) -> AppendStats {
        self.write_outputs_within(store, batch, usize::MAX)
    }

    /// [`DetectorSet::write_outputs`] creating output series only while the store
    /// holds fewer than `cap` series; outputs that would need a new series beyond it
    /// are not written (counted as `series_limit`), so detector outputs cannot crowd
    /// ingested series out of the store's series limit.
    pub fn write_outputs_within(
        &mut self,
        store: &Store,
        batch: &[SeriesBatch<'_>],
        cap: usize,
    ) -> AppendStats {
        // Samples whose output series has a handle.
        let mut direct: Vec<(SeriesRef, i64, f64)> = Vec::new();
        // (entry, slot, column, output row) of each direct sample, and of those to
        // write by labels.
        let mut direct_src: Vec<(usize, u32, usize, usize)> = Vec::new();
        let mut by_labels: Vec<(usize, u32, usize, usize)> = Vec::new();
        for (e_idx, e) in self.entries.iter().enumerate() {
            let cols = [&e.out.score, &e.out.upper, &e.out.lower, &e.out.forecast];
            for (c, col) in cols.iter().enumerate() {
                if !e.writes[c] {
                    continue;
                }
                for (i, &v) in col.iter().enumerate() {
                    if !v.is_finite() || e.owner[i] as usize >= batch.len() {
                        continue;
                    }
                    let slot = e.slots[i];
                    match e.out_refs[slot as usize][c] {
                        Some(r) => {
                            direct.push((r, e.ts[i], v));
                            direct_src.push((e_idx, slot, c, i));
                        }
                        None => by_labels.push((e_idx, slot, c, i)),
                    }
                }
            }
        }
        let mut stale = Vec::new();
        let mut stats = store.append_refs(&direct, &mut stale);
        // Series removed from the store since: forget the handle, write by labels.
        for k in stale {
            let (e_idx, slot, c, i) = direct_src[k];
            self.entries[e_idx].out_refs[slot as usize][c] = None;
            by_labels.push((e_idx, slot, c, i));
        }
        if by_labels.is_empty() {
            return stats;
        }
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let mut samples: Vec<(i64, f64)> = Vec::with_capacity(by_labels.len());
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(by_labels.len());
        for &(e_idx, _, c, i) in &by_labels {
            let e = &self.entries[e_idx];
            let cols = [&e.out.score, &e.out.upper, &e.out.lower, &e.out.forecast];
            let p0 = pairs.len();
            let sb = &batch[e.owner[i] as usize];
            push_output_pairs(
                &mut pairs,
                sb.labels,
                e.detector.spec().name.as_str(),
                OUTPUT_NAMES[c],
            );
            spans.push((p0, pairs.len()));
            samples.push((e.ts[i], cols[c][i]));
        }
        let writes: Vec<SeriesWrite<'_>> = spans
            .iter()
            .zip(&samples)
            .map(|(&(p0, p1), s)| SeriesWrite {
                labels: &pairs[p0..p1],
                samples: std::slice::from_ref(s),
            })
            .collect();
        let mut learned: Vec<(usize, SeriesRef)> = Vec::new();
        stats += store.append_batch_capped(&writes, &mut |k, r, _| learned.push((k, r)), cap);
        drop(writes);
        for (k, r) in learned {
            let (e_idx, slot, c, _) = by_labels[k];
            self.entries[e_idx].out_refs[slot as usize][c] = Some(r);
        }
        stats
    }

    /// Drops the state of every series whose newest sample is older than
    /// `now_ms - idle_ms` (call with the store's retention, after `Store::gc`), so
    /// memory stays bounded as series come and go. Returns how many were dropped.
    pub fn gc(&mut self, now_ms: i64, idle_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(idle_ms);
        let idle: Vec<SeriesId> = self
            .rows
            .iter()
            .filter(|(_, &r)| self.last_seen.get(r as usize).is_none_or(|&t| t < cutoff))
            .map(|(&id, _)| id)
            .collect();
        for &id in &idle {
            self.forget_series(id);
        }
        idle.len()
    }

    /// Number of series the set knows (matching any detector or not).
    pub fn known_series(&self) -> usize {
        self.rows.len()
    }

    /// Drops all state of a series (call when the store removes it).
    pub fn forget_series(&mut self, id: SeriesId) {
        let Some(r) = self.rows.remove(&id) else {
            return;
        };
        if let Some(t) = self.last_seen.get_mut(r as usize) {
            *t = i64::MIN;
        }
        let stride = self.entries.len();
        let start = r as usize * stride;
        for (c, e) in self.entries.iter_mut().enumerate() {
            if let Some(&slot) = self.table.get(start + c) {
                e.free(slot);
            }
        }
        if stride > 0 {
            self.table[start..start + stride].fill(UNDECIDED);
        }
        self.free_rows.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::{Algorithm, PromDuration};
    use crate::storage::StoreConfig;

    fn spec(name: &str, sel: &str) -> DetectorSpec {
        let mut s = DetectorSpec::new(name, sel, Algorithm::Zscore);
        s.window = Some(PromDuration(3_600_000));
        s.warmup = Some(10);
        s
    }

    fn feed(set: &mut DetectorSet, labels: &[LabelSet], t: i64, v: impl Fn(usize) -> f64) -> usize {
        let samples: Vec<[(i64, f64); 1]> = (0..labels.len()).map(|i| [(t, v(i))]).collect();
        let batch: Vec<SeriesBatch<'_>> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| SeriesBatch {
                id: SeriesId(i as u64),
                labels: l,
                samples: &samples[i],
            })
            .collect();
        set.process(&batch).len()
    }

    fn series(n: usize) -> Vec<LabelSet> {
        (0..n)
            .map(|i| {
                let job = if i % 2 == 0 { "api" } else { "db" };
                LabelSet::from_pairs([
                    ("__name__", "latency"),
                    ("job", job),
                    ("instance", &format!("i{i}")),
                ])
            })
            .collect()
    }

    #[test]
    fn only_matching_series_get_state_and_spikes_become_events() {
        let labels = series(10);
        let mut set = DetectorSet::new(&[spec("api_lat", "latency{job=\"api\"}")]).unwrap();
        for k in 0..50 {
            assert_eq!(
                feed(&mut set, &labels, k * 15_000, |i| (i + k as usize % 3)
                    as f64),
                0
            );
        }
        assert_eq!(set.live_series(), 5);
        let n = feed(&mut set, &labels, 50 * 15_000, |i| {
            if i == 2 || i == 3 {
                1e3
            } else {
                (i + 1) as f64
            }
        });
        assert_eq!(n, 1, "series 3 is job=db and not watched");
        assert_eq!(set.events[0].series, SeriesId(2));
        assert_eq!(set.events[0].detector, "api_lat");
        let json = serde_json::to_string(&set.events[0]).unwrap();
        assert!(
            json.contains(r#""series":2"#) && json.contains(r#""instance":"i2""#),
            "{json}"
        );
    }

    #[test]
    fn reload_keeps_state_of_unchanged_detectors_only() {
        let labels = series(4);
        let a = spec("a", "latency");
        let b = spec("b", "latency");
        let mut set = DetectorSet::new(&[a.clone(), b.clone()]).unwrap();
        for k in 0..20 {
            feed(&mut set, &labels, k * 15_000, |i| {
                (i + k as usize % 2) as f64
            });
        }
        let mut b2 = b.clone();
        b2.threshold = Some(4.0);
        set.reload(&[a.clone(), b2]).unwrap();
        assert_eq!(set.entries[0].detector.live_series(), 4);
        assert_eq!(set.entries[1].detector.live_series(), 0);
        // the kept detector carries on (no warm-up again: a spike is an event at once),
        // the changed one re-decides and allocates for the known series
        let n = feed(&mut set, &labels, 20 * 15_000, |i| {
            if i == 0 {
                1e3
            } else {
                i as f64 + 0.5
            }
        });
        assert_eq!(n, 1);
        assert_eq!(set.entries[1].detector.live_series(), 4);
        let mut bad = spec("c", "latency{");
        bad.window = None;
        assert!(set.reload(&[a.clone(), bad]).is_err());
        assert_eq!(set.entries.len(), 2, "a bad reload keeps the last good set");
        assert!(matches!(
            set.reload(&[a.clone(), a]),
            Err(Error::DuplicateName(_))
        ));
    }

    #[test]
    fn outputs_are_written_back_with_detector_label() {
        let store = Store::new(StoreConfig::default());
        let labels = series(2);
        let mut set = DetectorSet::new(&[spec("z", "latency")]).unwrap();
        let samples = [[(1000i64, 1.0f64)], [(1000, 2.0)]];
        let batch: Vec<SeriesBatch<'_>> = (0..2)
            .map(|i| SeriesBatch {
                id: SeriesId(i as u64),
                labels: &labels[i],
                samples: &samples[i],
            })
            .collect();
        set.process(&batch);
        let stats = set.write_outputs(&store, &batch);
        // first sample: a score (0) only, no baseline yet for the band
        assert_eq!(stats.samples_stored, 2);
        let got = store.select(
            &[
                Matcher::equal("__name__", "anomaly_score"),
                Matcher::equal("detector", "z"),
            ],
            0,
            i64::MAX,
        );
        assert_eq!(got.len(), 2);
        let want: Vec<LabelSet> = labels
            .iter()
            .map(|l| output_labels(l, "z", "anomaly_score"))
            .collect();
        assert!(got.iter().all(|g| want.contains(&g.labels)));
        // a second batch adds the band outputs as well, under the same series
        let samples = [[(2000i64, 1.5f64)], [(2000, 2.5)]];
        let batch: Vec<SeriesBatch<'_>> = (0..2)
            .map(|i| SeriesBatch {
                id: SeriesId(i as u64),
                labels: &labels[i],
                samples: &samples[i],
            })
            .collect();
        set.process(&batch);
        let stats = set.write_outputs(&store, &batch);
        assert_eq!(stats.samples_stored, 8);
        assert_eq!(store.series_count(), 8);
        assert!(got[0].labels.get("job").is_some());
        let l = output_labels(&labels[0], "z", "anomaly_upper");
        assert_eq!(l.metric_name(), Some("anomaly_upper"));
        assert_eq!(l.get("detector"), Some("z"));
        assert_eq!(l.get("instance"), Some("i0"));
    }

    #[test]
    fn forgotten_series_free_their_slot() {
        let labels = series(3);
        let mut set = DetectorSet::new(&[spec("z", "latency")]).unwrap();
        feed(&mut set, &labels, 0, |_| 1.0);
        assert_eq!(set.live_series(), 3);
        set.forget_series(SeriesId(1));
        assert_eq!(set.live_series(), 2);
        // series 0 keeps reporting, series 2 goes quiet: gc drops only series 2
        let l0 = [labels[0].clone()];
        feed(&mut set, &l0, 3_600_000, |_| 1.0);
        assert_eq!(set.gc(3_600_000, 600_000), 1);
        assert_eq!(set.live_series(), 1);
        assert_eq!(set.known_series(), 1);
        // a returning series gets a fresh slot (reusing the freed row)
        feed(&mut set, &labels, 3_700_000, |_| 1.0);
        assert_eq!(set.live_series(), 3);
    }

    #[test]
    fn nan_inf_and_staleness_batches_never_emit_events_or_outputs() {
        let labels = series(4);
        let mut set = DetectorSet::new(&[spec("z", "latency")]).unwrap();
        for k in 0..30 {
            feed(&mut set, &labels, k * 15_000, |i| {
                (i + k as usize % 2) as f64
            });
        }
        let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, stale];
        assert_eq!(feed(&mut set, &labels, 30 * 15_000, |i| bad[i]), 0);
        let mut n = 0;
        set.outputs(|_, _, _, _, _| n += 1);
        assert_eq!(n, 0);
        // after staleness series 3 warms up again; the others carry on
        assert_eq!(feed(&mut set, &labels, 31 * 15_000, |i| (i + 1) as f64), 0);
    }
}
