//! The inverted index of one shard: for every label name and value, the sorted slots
//! of the series carrying that pair, plus the sorted list of all slots.
//!
//! Selection picks the most selective matcher the postings can answer directly (an
//! equality or a literal alternation, else any matcher that rejects the empty string),
//! then checks the remaining matchers against each candidate's labels. A matcher that
//! accepts the empty string also accepts series without the label, as in Prometheus.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use smallvec::SmallVec;

use super::labels::LabelSet;
use super::matcher::Matcher;

/// Slots of one label pair. Most values (instance, pod) belong to one or two series,
/// so short lists live inline without a heap allocation.
type Slots = SmallVec<[u32; 2]>;
type Values = HashMap<Arc<str>, Slots, ahash::RandomState>;

#[derive(Default)]
pub(super) struct Postings {
    by_name: HashMap<Arc<str>, Values, ahash::RandomState>,
    all: Slots,
}

fn insert_sorted(list: &mut Slots, slot: u32) {
    match list.last() {
        Some(&last) if last < slot => list.push(slot),
        None => list.push(slot),
        _ => {
            if let Err(pos) = list.binary_search(&slot) {
                list.insert(pos, slot);
            }
        }
    }
}

impl Postings {
    pub(super) fn add(&mut self, slot: u32, labels: &LabelSet) {
        for l in labels {
            let values = self.by_name.entry(l.name.clone()).or_default();
            insert_sorted(values.entry(l.value.clone()).or_default(), slot);
        }
        insert_sorted(&mut self.all, slot);
    }

    /// Removes a batch of series (slot and labels). Each list they were in is
    /// filtered once, so dropping many series that share a label (`job="api"`) costs
    /// one pass over its list, not one shift of it per series.
    pub(super) fn remove_all(&mut self, gone: &[(u32, LabelSet)]) {
        if gone.is_empty() {
            return;
        }
        let mut slots: Vec<u32> = gone.iter().map(|g| g.0).collect();
        slots.sort_unstable();
        let is_gone = |s: &u32| slots.binary_search(s).is_ok();
        let mut touched: HashSet<(&str, &str)> = HashSet::new();
        for (_, labels) in gone {
            for l in labels {
                if !touched.insert((&*l.name, &*l.value)) {
                    continue;
                }
                let Some(values) = self.by_name.get_mut(&*l.name) else {
                    continue;
                };
                if let Some(list) = values.get_mut(&*l.value) {
                    list.retain(|s| !is_gone(s));
                    if list.is_empty() {
                        values.remove(&*l.value);
                    }
                }
                if values.is_empty() {
                    self.by_name.remove(&*l.name);
                }
            }
        }
        self.all.retain(|s| !is_gone(s));
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_name.keys()
    }

    pub(super) fn values(&self, name: &str) -> impl Iterator<Item = &Arc<str>> {
        self.by_name.get(name).into_iter().flat_map(|v| v.keys())
    }

    pub(super) fn heap_bytes(&self) -> usize {
        let lists: usize = self
            .by_name
            .values()
            .map(|vals| {
                vals.values()
                    .map(|l| if l.spilled() { l.capacity() * 4 } else { 0 } + 48)
                    .sum::<usize>()
                    + 48
            })
            .sum();
        lists + self.all.capacity() * 4
    }

    /// Slots of the series matching every matcher, ascending. `labels_of` gives a
    /// slot's labels for the matchers the postings did not answer.
    pub(super) fn select<'a>(
        &self,
        matchers: &[Matcher],
        labels_of: impl Fn(u32) -> Option<&'a LabelSet>,
    ) -> Vec<u32> {
        let (driver, mut slots) = self.driver(matchers);
        let mut rest: Vec<&Matcher> = Vec::new();
        for (i, m) in matchers.iter().enumerate() {
            if Some(i) == driver || slots.is_empty() {
                continue;
            }
            // A label with few values against many candidates: answer from postings
            // (one matcher test per value) instead of testing every candidate.
            let values = self.by_name.get(m.name.as_str());
            if values.map_or(0, |v| v.len()) > slots.len() / 8 {
                rest.push(m);
                continue;
            }
            let lists = |keep: bool| {
                values.into_iter().flat_map(move |vals| {
                    vals.iter()
                        .filter(move |(v, _)| m.matches(v) == keep)
                        .map(|(_, l)| l)
                })
            };
            slots = if m.matches("") {
                // Series lacking the label match too: drop those whose value fails.
                difference(&slots, &union(lists(false)))
            } else {
                intersection(&slots, &union(lists(true)))
            };
        }
        if !rest.is_empty() {
            slots.retain(|&slot| {
                labels_of(slot).is_some_and(|ls| {
                    rest.iter()
                        .all(|m| m.matches(ls.get(&m.name).unwrap_or("")))
                })
            });
        }
        slots
    }

    /// The matcher answered from postings (its index) and the candidate slots.
    fn driver(&self, matchers: &[Matcher]) -> (Option<usize>, Vec<u32>) {
        let mut best: Option<(usize, Vec<u32>)> = None;
        for (i, m) in matchers.iter().enumerate() {
            if let Some(wanted) = m.exact_values() {
                let values = self.by_name.get(m.name.as_str());
                let lists = wanted
                    .iter()
                    .filter_map(|v| values.and_then(|vals| vals.get(*v)));
                let slots = union(lists);
                if best.as_ref().is_none_or(|(_, b)| slots.len() < b.len()) {
                    best = Some((i, slots));
                }
            }
        }
        if best.is_none() {
            if let Some((i, m)) = matchers.iter().enumerate().find(|(_, m)| !m.matches("")) {
                let lists = self
                    .by_name
                    .get(m.name.as_str())
                    .into_iter()
                    .flat_map(|vals| vals.iter().filter(|(v, _)| m.matches(v)).map(|(_, l)| l));
                best = Some((i, union(lists)));
            }
        }
        match best {
            Some((i, slots)) => (Some(i), slots),
            None => (None, self.all.to_vec()),
        }
    }
}

/// Elements of sorted `a` that are not in sorted `b`.
fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j == b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Elements in both sorted `a` and sorted `b`.
fn intersection(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Union of disjoint sorted lists (the postings of distinct values of one name).
fn union<'a>(lists: impl Iterator<Item = &'a Slots>) -> Vec<u32> {
    let lists: Vec<&Slots> = lists.collect();
    match lists.as_slice() {
        [] => Vec::new(),
        [one] => one.to_vec(),
        _ => {
            let mut out: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
            out.sort_unstable();
            out
        }
    }
}
