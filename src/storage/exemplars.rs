//! Exemplars from remote write, kept in one fixed-size circular buffer as
//! Prometheus's `CircularExemplarStorage` keeps them: each new exemplar takes the
//! oldest slot, and every series links its own exemplars oldest to newest through
//! the buffer, so a series' exemplars are read without scanning the rest.
//! Served by `/api/v1/query_exemplars`.
//!
//! Invariants: memory is fixed by the capacity (slots are allocated once, labels
//! are accounted as they come and go); per series, exemplars are appended in time
//! order — an older or equal timestamp is refused as out of order, a repeat of the
//! newest as a duplicate (Prometheus's rules); an exemplar's labels are at most
//! [`MAX_LABELS_LENGTH`] characters. Capacity 0 stores nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{LabelSet, Matcher};

/// Longest exemplar label set, in characters of names and values together
/// (Prometheus's `ExemplarMaxLabelSetLength`, from OpenMetrics).
pub const MAX_LABELS_LENGTH: usize = 128;

const NONE: usize = usize::MAX;

/// Why an exemplar was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExemplarError {
    /// The store's capacity is 0.
    #[error("exemplar storage is disabled")]
    Disabled,
    /// Not newer than the series' newest exemplar.
    #[error("out of order exemplar")]
    OutOfOrder,
    /// The same as the series' newest exemplar.
    #[error("duplicate exemplar")]
    Duplicate,
    /// Labels longer than [`MAX_LABELS_LENGTH`] characters.
    #[error("exemplar label set is longer than {MAX_LABELS_LENGTH} characters")]
    LabelsTooLong,
}

/// One exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: LabelSet,
    pub value: f64,
    pub t: i64,
}

struct Slot {
    series: LabelSet,
    exemplar: Exemplar,
    /// The series' next newer exemplar's slot, or [`NONE`].
    next: usize,
}

#[derive(Clone, Copy)]
struct Chain {
    oldest: usize,
    newest: usize,
}

struct Ring {
    slots: Vec<Option<Slot>>,
    /// The slot the next exemplar takes.
    next: usize,
    series: HashMap<LabelSet, Chain>,
    label_bytes: usize,
}

/// The exemplar store.
pub struct ExemplarStore {
    ring: Mutex<Ring>,
    stored: AtomicU64,
    refused: AtomicU64,
}

fn label_bytes(l: &LabelSet) -> usize {
    l.iter()
        .map(|l| l.name.len() + l.value.len())
        .sum::<usize>()
        + l.len() * std::mem::size_of::<super::Label>()
}

impl ExemplarStore {
    /// A store of `capacity` exemplars.
    pub fn new(capacity: usize) -> Self {
        ExemplarStore {
            ring: Mutex::new(Ring {
                slots: (0..capacity).map(|_| None).collect(),
                next: 0,
                series: HashMap::new(),
                label_bytes: 0,
            }),
            stored: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Adds an exemplar of `series`.
    pub fn add(&self, series: &LabelSet, exemplar: Exemplar) -> Result<(), ExemplarError> {
        let r = self.add_inner(series, exemplar);
        match r {
            Ok(()) => self.stored.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.refused.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    fn add_inner(&self, series: &LabelSet, e: Exemplar) -> Result<(), ExemplarError> {
        let chars: usize = e
            .labels
            .iter()
            .map(|l| l.name.chars().count() + l.value.chars().count())
            .sum();
        if chars > MAX_LABELS_LENGTH {
            return Err(ExemplarError::LabelsTooLong);
        }
        let mut ring = self.ring.lock();
        let ring = &mut *ring;
        if ring.slots.is_empty() {
            return Err(ExemplarError::Disabled);
        }
        if let Some(chain) = ring.series.get(series) {
            if let Some(newest) = &ring.slots[chain.newest] {
                let n = &newest.exemplar;
                if n.t == e.t && n.labels == e.labels && n.value.to_bits() == e.value.to_bits() {
                    return Err(ExemplarError::Duplicate);
                }
                if e.t <= n.t {
                    return Err(ExemplarError::OutOfOrder);
                }
            }
        }
        let at = ring.next;
        // The slot's old exemplar is its series' oldest: unlink it.
        if let Some(old) = ring.slots[at].take() {
            ring.label_bytes -= label_bytes(&old.exemplar.labels);
            if old.next == NONE {
                ring.series.remove(&old.series);
            } else if let Some(chain) = ring.series.get_mut(&old.series) {
                chain.oldest = old.next;
            }
        }
        ring.label_bytes += label_bytes(&e.labels);
        let newest = ring.series.get(series).map(|c| c.newest);
        ring.slots[at] = Some(Slot {
            series: series.clone(),
            exemplar: e,
            next: NONE,
        });
        match newest {
            Some(prev) => {
                if let Some(p) = ring.slots[prev].as_mut() {
                    p.next = at;
                }
                if let Some(chain) = ring.series.get_mut(series) {
                    chain.newest = at;
                }
            }
            None => {
                ring.series.insert(
                    series.clone(),
                    Chain {
                        oldest: at,
                        newest: at,
                    },
                );
            }
        }
        ring.next = (at + 1) % ring.slots.len();
        Ok(())
    }

    /// Exemplars in `[start, end]` of the series matching any of the matcher sets,
    /// by series (sorted by labels), each series' exemplars oldest first.
    pub fn select(
        &self,
        sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Vec<(LabelSet, Vec<Exemplar>)> {
        let ring = self.ring.lock();
        let mut out = Vec::new();
        for (series, chain) in &ring.series {
            let matches = sets.iter().any(|set| {
                set.iter()
                    .all(|m| m.matches(series.get(&m.name).unwrap_or("")))
            });
            if !matches {
                continue;
            }
            let mut found = Vec::new();
            let mut at = chain.oldest;
            while let Some(slot) = ring.slots.get(at).and_then(Option::as_ref) {
                if (start..=end).contains(&slot.exemplar.t) {
                    found.push(slot.exemplar.clone());
                }
                at = slot.next;
            }
            if !found.is_empty() {
                out.push((series.clone(), found));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Capacity in exemplars.
    pub fn capacity(&self) -> usize {
        self.ring.lock().slots.len()
    }

    /// Estimated heap bytes: the slots, the series index and the labels held.
    pub fn bytes(&self) -> usize {
        let ring = self.ring.lock();
        ring.slots.len() * std::mem::size_of::<Option<Slot>>()
            + ring.series.capacity()
                * (std::mem::size_of::<LabelSet>() + std::mem::size_of::<Chain>())
            + ring.label_bytes
    }

    /// Exemplars stored since start.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Exemplars refused since start (out of order, duplicate, too long, disabled).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(trace: &str, t: i64, v: f64) -> Exemplar {
        Exemplar {
            labels: LabelSet::from_pairs([("trace_id", trace)]),
            value: v,
            t,
        }
    }

    fn series(job: &str) -> LabelSet {
        LabelSet::from_pairs([("__name__", "req_seconds_bucket"), ("job", job)])
    }

    #[test]
    fn oldest_slots_are_reused_and_chains_stay_linked() {
        let s = ExemplarStore::new(3);
        s.add(&series("a"), ex("1", 10, 1.0)).unwrap();
        s.add(&series("b"), ex("2", 11, 2.0)).unwrap();
        s.add(&series("a"), ex("3", 12, 3.0)).unwrap();
        // The fourth evicts a's first; the fifth b's only one.
        s.add(&series("a"), ex("4", 13, 4.0)).unwrap();
        s.add(&series("c"), ex("5", 14, 5.0)).unwrap();
        let all = s.select(
            &[vec![Matcher::equal("__name__", "req_seconds_bucket")]],
            0,
            100,
        );
        let traces: Vec<(String, Vec<String>)> = all
            .iter()
            .map(|(l, e)| {
                (
                    l.get("job").unwrap().to_owned(),
                    e.iter()
                        .map(|e| e.labels.get("trace_id").unwrap().to_owned())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            traces,
            vec![
                ("a".into(), vec!["3".into(), "4".into()]),
                ("c".into(), vec!["5".into()])
            ]
        );
        let a = s.select(&[vec![Matcher::equal("job", "a")]], 13, 13);
        assert_eq!(a[0].1, vec![ex("4", 13, 4.0)]);
        assert_eq!(s.stored(), 5);
    }

    #[test]
    fn prometheus_rules_for_order_duplicates_and_length() {
        let s = ExemplarStore::new(10);
        s.add(&series("a"), ex("1", 10, 1.0)).unwrap();
        assert_eq!(
            s.add(&series("a"), ex("1", 10, 1.0)),
            Err(ExemplarError::Duplicate)
        );
        assert_eq!(
            s.add(&series("a"), ex("2", 10, 2.0)),
            Err(ExemplarError::OutOfOrder)
        );
        assert_eq!(
            s.add(&series("a"), ex("2", 9, 2.0)),
            Err(ExemplarError::OutOfOrder)
        );
        let long = "x".repeat(MAX_LABELS_LENGTH);
        assert_eq!(
            s.add(&series("a"), ex(&long, 11, 1.0)),
            Err(ExemplarError::LabelsTooLong)
        );
        assert_eq!(s.refused(), 4);
        assert_eq!(
            ExemplarStore::new(0).add(&series("a"), ex("1", 1, 1.0)),
            Err(ExemplarError::Disabled)
        );
    }

    #[test]
    fn memory_is_fixed_by_capacity_and_labels_held() {
        let s = ExemplarStore::new(4);
        let empty = s.bytes();
        for t in 0..100 {
            s.add(&series("a"), ex(&format!("{t:08}"), t, 1.0)).unwrap();
        }
        // Four exemplars of 8-character trace ids are held, whatever came before.
        let held = s.bytes();
        assert!(held > empty && held < empty + 4 * 200, "{empty} {held}");
    }
}
