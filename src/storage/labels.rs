//! Label sets: the identity of a series. Strings are interned (one `Arc<str>` per
//! distinct name or value across the store), label sets are sorted by name and shared
//! behind an `Arc`, so cloning a series' labels for a query result is a refcount bump.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// One label pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: Arc<str>,
    pub value: Arc<str>,
}

/// A series' labels, sorted by name, names unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LabelSet(Arc<[Label]>);

impl LabelSet {
    /// Builds a label set from pairs in any order. Pairs with an empty value are
    /// dropped (an empty label value means "no such label" in Prometheus). When a name
    /// repeats, the last pair wins.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .filter(|(_, v)| !v.as_ref().is_empty())
            .map(|(n, v)| Label {
                name: Arc::from(n.as_ref()),
                value: Arc::from(v.as_ref()),
            })
            .collect();
        labels.reverse();
        labels.sort_by(|a, b| a.name.cmp(&b.name)); // stable: the last given pair comes first
        labels.dedup_by(|later, earlier| later.name == earlier.name);
        LabelSet(labels.into())
    }

    /// Builds a label set from labels already sorted by name with unique names.
    pub fn from_sorted(labels: Vec<Label>) -> Self {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        LabelSet(labels.into())
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_ref().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_ref())
    }

    /// The metric name, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// The labels as owned pairs, for building a changed copy.
    pub fn to_vec(&self) -> Vec<Label> {
        self.0.to_vec()
    }

    /// Hash of the label set, identical to [`hash_pairs`] over the same pairs.
    pub fn series_hash(&self) -> u64 {
        hash_pairs(self.0.iter().map(|l| (l.name.as_ref(), l.value.as_ref())))
    }
}

impl std::fmt::Display for LabelSet {
    /// Prometheus notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| &*l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, &*l.value)?;
        }
        f.write_str("}")
    }
}

impl<'a> IntoIterator for &'a LabelSet {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Fixed seeds: a series hash is stable for the life of the process, which is all the
/// store needs (hashes are never persisted).
fn hasher() -> ahash::AHasher {
    ahash::RandomState::with_seeds(0x5eed_0001, 0x5eed_0002, 0x5eed_0003, 0x5eed_0004)
        .build_hasher()
}

/// Hashes sorted label pairs. Names and values are separated by a byte that cannot
/// occur in UTF-8 (0xff), so `{a="bc"}` and `{ab="c"}` hash apart.
pub fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = hasher();
    for (n, v) in pairs {
        h.write(n.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// Checks a label name against Prometheus's legacy charset `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a metric name against `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

const INTERNER_SHARDS: usize = 16;

/// Deduplicates label strings across the store. Only the series-creation path uses
/// it; appends to existing series never touch it.
#[derive(Debug)]
pub struct Interner {
    shards: Box<[Mutex<HashSet<Arc<str>>>]>,
    /// Estimated heap bytes of the strings held (see [`Interner::heap_bytes`]).
    bytes: AtomicUsize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            shards: (0..INTERNER_SHARDS).map(|_| Mutex::default()).collect(),
            bytes: AtomicUsize::new(0),
        }
    }
}

/// Heap bytes one interned string costs: its `Arc` allocation (two counts and the
/// text, with the allocator's overhead) and its entry in the set.
fn string_bytes(s: &str) -> usize {
    s.len() + 2 * size_of::<usize>() + super::ALLOC_OVERHEAD + size_of::<Arc<str>>() + 1
}

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut h = hasher();
        h.write(s.as_bytes());
        let mut shard = self.shards[h.finish() as usize % INTERNER_SHARDS].lock();
        if let Some(found) = shard.get(s) {
            return found.clone();
        }
        let owned: Arc<str> = Arc::from(s);
        shard.insert(owned.clone());
        self.bytes.fetch_add(string_bytes(s), Ordering::Relaxed);
        owned
    }

    /// Forgets strings no live series uses any more (held only by the interner).
    pub fn purge_unused(&self) {
        for shard in self.shards.iter() {
            let mut freed = 0;
            shard.lock().retain(|s| {
                let keep = Arc::strong_count(s) > 1;
                if !keep {
                    freed += string_bytes(s);
                }
                keep
            });
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when no string is held.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().is_empty())
    }

    /// Estimated heap bytes held by interned strings and their sets (one atomic
    /// load: kept up to date as strings come and go).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_drops_empty_and_keeps_last_duplicate() {
        let ls = LabelSet::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        let pairs: Vec<_> = ls.iter().map(|l| (&*l.name, &*l.value)).collect();
        assert_eq!(pairs, vec![("a", "3"), ("b", "2")]);
        assert_eq!(ls.get("b"), Some("2"));
        assert_eq!(ls.get("c"), None);
    }

    #[test]
    fn hash_separates_name_and_value_boundaries() {
        assert_ne!(
            hash_pairs([("a", "bc")].into_iter()),
            hash_pairs([("ab", "c")].into_iter())
        );
        let ls = LabelSet::from_pairs([("x", "1"), ("__name__", "up")]);
        assert_eq!(
            ls.series_hash(),
            hash_pairs([("__name__", "up"), ("x", "1")].into_iter())
        );
    }

    #[test]
    fn display_uses_prometheus_notation() {
        let ls = LabelSet::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(ls.to_string(), r#"up{job="a\"b"}"#);
    }

    #[test]
    fn names_validate() {
        assert!(is_valid_label_name("_a1"));
        assert!(!is_valid_label_name("1a"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name(""));
        assert!(is_valid_metric_name("a:b_c"));
        assert!(!is_valid_metric_name("a-b"));
    }

    #[test]
    fn interner_shares_and_purges() {
        let i = Interner::default();
        let a = i.intern("job");
        let b = i.intern("job");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        i.intern("tmp");
        i.purge_unused();
        assert_eq!(i.len(), 0);
    }
}
