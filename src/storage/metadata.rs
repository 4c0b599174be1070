//! Metric metadata (type, help, unit) as remote-write senders send it: remote
//! write 1.0's separate metadata requests and 2.0's metadata inline in each series.
//! Served by `/api/v1/metadata` the way Prometheus serves its targets' metadata: per
//! metric name, the distinct entries seen.
//!
//! Invariants: bounded — at most `max_metrics` names and [`MAX_PER_METRIC`] distinct
//! entries per name (a new entry for a full name replaces its oldest), each string
//! cut at [`MAX_TEXT_BYTES`]; names beyond the bound are dropped and counted, never
//! stored. Recording an entry already held costs a hash lookup and no allocation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use serde::Serialize;

/// Distinct entries kept per metric name.
pub const MAX_PER_METRIC: usize = 8;
/// Longest help or unit text kept, in bytes (longer text is cut at a character
/// boundary).
pub const MAX_TEXT_BYTES: usize = 1024;

/// One metadata entry, as `/api/v1/metadata` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`,
    /// `stateset` or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

/// The metric type of remote write's `MetricType` enum value (1.0 and 2.0 number
/// the types alike; 0 is unknown / unspecified).
pub fn metric_type(v: i32) -> &'static str {
    match v {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_TEXT_BYTES {
        return s;
    }
    let mut end = MAX_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The metadata store.
#[derive(Debug)]
pub struct MetadataStore {
    max_metrics: usize,
    by_metric: RwLock<BTreeMap<String, Vec<Metadata>>>,
    bytes: AtomicUsize,
    dropped: AtomicU64,
}

impl MetadataStore {
    /// A store of at most `max_metrics` metric names (0 keeps nothing).
    pub fn new(max_metrics: usize) -> Self {
        MetadataStore {
            max_metrics,
            by_metric: RwLock::new(BTreeMap::new()),
            bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records that `metric` has this type, help and unit. Returns false when the
    /// store is full and `metric` is new (the entry is dropped and counted).
    pub fn record(&self, metric: &str, kind: &'static str, help: &str, unit: &str) -> bool {
        if metric.is_empty() {
            return true;
        }
        let (help, unit) = (cut(help), cut(unit));
        let known = |entries: &Vec<Metadata>| {
            entries
                .iter()
                .any(|m| m.kind == kind && m.help == help && m.unit == unit)
        };
        if self.by_metric.read().get(metric).is_some_and(known) {
            return true;
        }
        let mut map = self.by_metric.write();
        if !map.contains_key(metric) && map.len() >= self.max_metrics {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let size = |m: &Metadata| m.help.len() + m.unit.len() + std::mem::size_of::<Metadata>();
        let entries = map.entry(metric.to_owned()).or_insert_with(|| {
            self.bytes.fetch_add(
                metric.len() + 2 * std::mem::size_of::<Vec<Metadata>>(),
                Ordering::Relaxed,
            );
            Vec::new()
        });
        if known(entries) {
            return true;
        }
        if entries.len() >= MAX_PER_METRIC {
            let old = entries.remove(0);
            self.bytes.fetch_sub(size(&old), Ordering::Relaxed);
        }
        let m = Metadata {
            kind,
            help: help.to_owned(),
            unit: unit.to_owned(),
        };
        self.bytes.fetch_add(size(&m), Ordering::Relaxed);
        entries.push(m);
        true
    }

    /// `/api/v1/metadata`: per metric name (only `metric` when given), at most
    /// `limit` names and `limit_per_metric` entries each (`None`: no limit).
    pub fn query(
        &self,
        metric: Option<&str>,
        limit: Option<usize>,
        limit_per_metric: Option<usize>,
    ) -> BTreeMap<String, Vec<Metadata>> {
        let map = self.by_metric.read();
        let pick = |entries: &Vec<Metadata>| {
            entries
                .iter()
                .take(limit_per_metric.unwrap_or(usize::MAX))
                .cloned()
                .collect::<Vec<_>>()
        };
        match metric {
            Some(m) => map
                .get(m)
                .map(|e| BTreeMap::from([(m.to_owned(), pick(e))]))
                .unwrap_or_default(),
            None => map
                .iter()
                .take(limit.unwrap_or(usize::MAX))
                .map(|(k, e)| (k.clone(), pick(e)))
                .collect(),
        }
    }

    /// Metric names held.
    pub fn len(&self) -> usize {
        self.by_metric.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated heap bytes.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries of new metric names dropped because the store was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_entries_per_metric_and_bounds() {
        let s = MetadataStore::new(2);
        assert!(s.record("up", "gauge", "Up.", ""));
        assert!(s.record("up", "gauge", "Up.", ""));
        assert!(s.record("up", "gauge", "Up again.", ""));
        assert!(s.record("x_total", "counter", "X.", "seconds"));
        assert!(!s.record("y", "gauge", "", ""), "a third name is dropped");
        assert_eq!(s.dropped(), 1);
        let all = s.query(None, None, None);
        assert_eq!(all["up"].len(), 2);
        assert_eq!(all["x_total"][0].unit, "seconds");
        assert_eq!(s.query(None, Some(1), None).len(), 1);
        assert_eq!(s.query(None, None, Some(1))["up"].len(), 1);
        assert_eq!(s.query(Some("x_total"), None, None).len(), 1);
        assert!(s.query(Some("nope"), None, None).is_empty());
        for i in 0..20 {
            s.record("up", "gauge", &format!("v{i}"), "");
        }
        assert_eq!(s.query(Some("up"), None, None)["up"].len(), MAX_PER_METRIC);
        assert_eq!(
            s.query(Some("up"), None, None)["up"].last().unwrap().help,
            "v19"
        );
        assert!(s.bytes() > 0);
        let long = "é".repeat(MAX_TEXT_BYTES);
        s.record("x_total", "counter", &long, "");
        assert!(s.query(Some("x_total"), None, None)["x_total"]
            .iter()
            .all(|m| m.help.len() <= MAX_TEXT_BYTES));
    }

    #[test]
    fn serializes_as_prometheus() {
        let m = Metadata {
            kind: metric_type(1),
            help: "Requests.".into(),
            unit: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"counter","help":"Requests.","unit":""}"#
        );
    }
}
