//! [`DetectorSet`]: the runtime ingest calls after appending a remote-write batch.
//!
//! For each detector it decides once per [`SeriesId`] whether the series matches the
//! detector's selector (the decision is cached, so the matchers run once per series,
//! not per request), gathers the batch's samples of matching series into three flat
//! arrays (slot, time, value), runs the detector's kernel over them, records threshold
//! crossings as [`AnomalyEvent`]s, and keeps the outputs until the next batch so
//! [`DetectorSet::write_outputs`] can append them to the store.
//!
//! Invariants: a series has at most one slot per detector; a slot is freed when the
//! series is forgotten or its detector is replaced; a reload keeps the detector (and
//! all its state) when its spec is unchanged. Buffers are reused across batches, so
//! a steady stream of requests does not allocate in the set itself.

use std::collections::HashMap;

use super::{AnomalyEvent as Event, Detector, DetectorSpec, Error, Outputs, Result};
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
    /// The series.
    #[serde(skip)]
    pub series: SeriesId,
    /// The series' labels.
    #[serde(skip)]
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

/// One detector inside a set, with its match cache and last batch's outputs.
#[derive(Debug)]
struct Entry {
    detector: Detector,
    matchers: Vec<Matcher>,
    /// Cached match decision per series: `Some(slot)` when it matches.
    slot_of: HashMap<SeriesId, Option<u32>, ahash::RandomState>,
    /// Whether each slot's last score was above the threshold.
    above: Vec<bool>,
    /// Per slot, handles of its output series (score, upper, lower, forecast) once
    /// written, so later outputs append without hashing or building labels.
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
            detector,
            matchers,
            slot_of: HashMap::default(),
            above: Vec::new(),
            out_refs: Vec::new(),
            owner: Vec::new(),
            slots: Vec::new(),
            ts: Vec::new(),
            vs: Vec::new(),
            out: Outputs::default(),
        })
    }

    fn matches(&self, labels: &LabelSet) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
    }

    fn slot(&mut self, id: SeriesId, labels: &LabelSet) -> Option<u32> {
        if let Some(&s) = self.slot_of.get(&id) {
            return s;
        }
        let s = if self.matches(labels) {
            let s = self.detector.alloc_slot();
            if self.above.len() <= s as usize {
                self.above.resize(s as usize + 1, false);
                self.out_refs.resize(s as usize + 1, [None; 4]);
            }
            self.above[s as usize] = false;
            self.out_refs[s as usize] = [None; 4];
            Some(s)
        } else {
            None
        };
        self.slot_of.insert(id, s);
        s
    }

    fn process(&mut self, batch: &[SeriesBatch<'_>], events: &mut Vec<Event>) {
        self.owner.clear();
        self.slots.clear();
        self.ts.clear();
        self.vs.clear();
        for (k, sb) in batch.iter().enumerate() {
            let Some(slot) = self.slot(sb.id, sb.labels) else {
                continue;
            };
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

    fn forget(&mut self, id: SeriesId) {
        if let Some(Some(slot)) = self.slot_of.remove(&id) {
            self.detector.free_slot(slot);
            self.above[slot as usize] = false;
            self.out_refs[slot as usize] = [None; 4];
        }
    }
}

/// The detectors of all loaded rule groups and the state of every series they watch.
#[derive(Debug, Default)]
pub struct DetectorSet {
    entries: Vec<Entry>,
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
        let mut old: Vec<Option<Entry>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        let mut entries = Vec::with_capacity(specs.len());
        for s in specs {
            let kept = old
                .iter_mut()
                .find(|e| e.as_ref().is_some_and(|e| e.detector.spec() == s))
                .and_then(Option::take);
            match kept {
                Some(e) => entries.push(e),
                None => match Entry::new(s) {
                    Ok(e) => entries.push(e),
                    Err(err) => {
                        // cannot happen after validate(); keep the old set regardless
                        self.entries = old.into_iter().flatten().collect();
                        return Err(err);
                    }
                },
            }
        }
        self.entries = entries;
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
        for e in &mut self.entries {
            e.process(batch, &mut self.events);
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
    /// An output series is found by labels once; after that its handle is cached per
    /// slot and later samples are appended through it.
    pub fn write_outputs(&mut self, store: &Store, batch: &[SeriesBatch<'_>]) -> AppendStats {
        // (entry, output row, column) of every finite output, split by whether its
        // series handle is known.
        let mut direct: Vec<(SeriesRef, i64, f64)> = Vec::new();
        let mut direct_src: Vec<(usize, usize, usize)> = Vec::new();
        let mut by_labels: Vec<(usize, usize, usize)> = Vec::new();
        for (e_idx, e) in self.entries.iter().enumerate() {
            let cols = [&e.out.score, &e.out.upper, &e.out.lower, &e.out.forecast];
            for (c, col) in cols.iter().enumerate() {
                for (i, &v) in col.iter().enumerate() {
                    if !v.is_finite() {
                        continue;
                    }
                    match e.out_refs[e.slots[i] as usize][c] {
                        Some(r) => {
                            direct.push((r, e.ts[i], v));
                            direct_src.push((e_idx, i, c));
                        }
                        None => by_labels.push((e_idx, i, c)),
                    }
                }
            }
        }
        let mut stale = Vec::new();
        let mut stats = store.append_refs(&direct, &mut stale);
        for k in stale {
            let (e_idx, i, c) = direct_src[k];
            let e = &mut self.entries[e_idx];
            e.out_refs[e.slots[i] as usize][c] = None;
            by_labels.push((e_idx, i, c));
        }
        if by_labels.is_empty() {
            return stats;
        }
        let entries = &self.entries;
        by_labels.retain(|&(e_idx, i, _)| (entries[e_idx].owner[i] as usize) < batch.len());
        let rows: Vec<(LabelSet, [(i64, f64); 1])> = by_labels
            .iter()
            .map(|&(e_idx, i, c)| {
                let e = &entries[e_idx];
                let cols = [&e.out.score, &e.out.upper, &e.out.lower, &e.out.forecast];
                let source = &batch[e.owner[i] as usize];
                let labels = output_labels(source.labels, &e.detector.spec().name, OUTPUT_NAMES[c]);
                (labels, [(e.ts[i], cols[c][i])])
            })
            .collect();
        let pairs: Vec<Vec<(&str, &str)>> = rows
            .iter()
            .map(|(l, _)| l.iter().map(|l| (&*l.name, &*l.value)).collect())
            .collect();
        let writes: Vec<SeriesWrite<'_>> = pairs
            .iter()
            .zip(&rows)
            .map(|(p, (_, s))| SeriesWrite {
                labels: p,
                samples: s,
            })
            .collect();
        let mut learned: Vec<(usize, SeriesRef)> = Vec::new();
        let by_label_stats =
            store.append_batch_observed(&writes, &mut |k, r, _| learned.push((k, r)));
        for (k, r) in learned {
            let (e_idx, i, c) = by_labels[k];
            let e = &mut self.entries[e_idx];
            e.out_refs[e.slots[i] as usize][c] = Some(r);
        }
        stats += by_label_stats;
        stats
    }

    /// Drops all state of a series (call when the store removes it).
    pub fn forget_series(&mut self, id: SeriesId) {
        for e in &mut self.entries {
            e.forget(id);
        }
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
