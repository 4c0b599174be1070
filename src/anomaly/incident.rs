//! Incident grouping: anomaly events on series that share a grouping label (by
//! default `service`, else `job`) within a short window become one [`Incident`], so
//! one fault is one incident, not fifty events.
//!
//! Invariants: an event joins the open incident of its group if that incident was
//! updated no longer than `window_ms` before the event, otherwise it opens a new one;
//! incidents idle for longer than `resolve_after_ms` are dropped by
//! [`Incidents::expire`]; at most `max_incidents` incidents and `max_members` members
//! per incident are kept (the oldest incident is dropped first), so memory is bounded.

use std::collections::BTreeMap;

use serde::Serialize;

use super::AnomalyEvent;
use crate::storage::SeriesId;

/// Grouping settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentConfig {
    /// Labels tried in order; the first one an event's series has is its group.
    /// Series with none of them form a group of their own.
    pub group_by: Vec<String>,
    /// Events within this long (ms) of an incident's last update join it.
    pub window_ms: i64,
    /// Incidents idle for this long (ms) are over.
    pub resolve_after_ms: i64,
    /// Most incidents kept.
    pub max_incidents: usize,
    /// Most member series per incident.
    pub max_members: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            group_by: vec!["service".into(), "job".into()],
            window_ms: 5 * 60_000,
            resolve_after_ms: 15 * 60_000,
            max_incidents: 1000,
            max_members: 200,
        }
    }
}

/// One series taking part in an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentMember {
    /// The series' identity in the store (members are matched by it, not by labels).
    #[serde(skip)]
    pub series: SeriesId,
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// The detector that flagged it.
    pub detector: String,
    /// The score of its latest event.
    pub score: f64,
    /// The highest score of its events.
    pub max_score: f64,
    /// Time (ms) of its first event.
    pub first_ms: i64,
    /// Time (ms) of its latest event.
    pub last_ms: i64,
}

/// Events grouped as one fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Process-unique id.
    pub id: u64,
    /// The grouping label and value (empty for an ungrouped series).
    pub group: BTreeMap<String, String>,
    /// The highest severity among its events (critical > warning > info > other).
    pub severity: String,
    /// Time (ms) of the first event.
    pub start_ms: i64,
    /// Time (ms) of the latest event.
    pub last_update_ms: i64,
    /// Number of events.
    pub events: u64,
    /// The member series.
    pub members: Vec<IncidentMember>,
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" | "page" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

/// Open incidents.
#[derive(Debug, Clone, Default)]
pub struct Incidents {
    cfg: IncidentConfig,
    open: Vec<(String, Incident)>,
    next_id: u64,
}

impl Incidents {
    /// An empty grouping with these settings.
    pub fn new(cfg: IncidentConfig) -> Self {
        Incidents {
            cfg,
            open: Vec::new(),
            next_id: 1,
        }
    }

    /// Adds an event: it joins its group's incident or opens one. Returns the id.
    pub fn record(&mut self, ev: &AnomalyEvent) -> u64 {
        let (key, group) = match self
            .cfg
            .group_by
            .iter()
            .find_map(|g| ev.labels.get(g).map(|v| (g.clone(), v.to_string())))
        {
            Some((g, v)) => (format!("{g}\u{0}{v}"), BTreeMap::from([(g, v)])),
            None => (
                format!("\u{1}{:x}", ev.labels.series_hash()),
                BTreeMap::new(),
            ),
        };
        let labels = || -> BTreeMap<String, String> {
            ev.labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect()
        };
        let window = self.cfg.window_ms;
        let max_members = self.cfg.max_members;
        if let Some((_, inc)) = self
            .open
            .iter_mut()
            .rev()
            .find(|(k, inc)| *k == key && ev.t.saturating_sub(inc.last_update_ms) <= window)
        {
            inc.events += 1;
            inc.last_update_ms = inc.last_update_ms.max(ev.t);
            if severity_rank(&ev.severity) > severity_rank(&inc.severity) {
                inc.severity = ev.severity.clone();
            }
            let n_members = inc.members.len();
            match inc
                .members
                .iter_mut()
                .find(|m| m.series == ev.series && m.detector == ev.detector)
            {
                Some(m) => {
                    m.score = ev.score;
                    m.max_score = m.max_score.max(ev.score);
                    m.last_ms = m.last_ms.max(ev.t);
                }
                None if n_members < max_members => inc.members.push(IncidentMember {
                    series: ev.series,
                    labels: labels(),
                    detector: ev.detector.clone(),
                    score: ev.score,
                    max_score: ev.score,
                    first_ms: ev.t,
                    last_ms: ev.t,
                }),
                None => {}
            }
            return inc.id;
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.open.len() >= self.cfg.max_incidents.max(1) {
            self.open.remove(0);
        }
        self.open.push((
            key,
            Incident {
                id,
                group,
                severity: ev.severity.clone(),
                start_ms: ev.t,
                last_update_ms: ev.t,
                events: 1,
                members: vec![IncidentMember {
                    series: ev.series,
                    labels: labels(),
                    detector: ev.detector.clone(),
                    score: ev.score,
                    max_score: ev.score,
                    first_ms: ev.t,
                    last_ms: ev.t,
                }],
            },
        ));
        id
    }

    /// The open incident `id`.
    pub fn get(&self, id: u64) -> Option<&Incident> {
        self.open.iter().rev().map(|(_, i)| i).find(|i| i.id == id)
    }

    /// Drops incidents idle for longer than `resolve_after_ms` at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        let after = self.cfg.resolve_after_ms;
        self.open
            .retain(|(_, i)| now_ms.saturating_sub(i.last_update_ms) <= after);
    }

    /// The incidents still current at `now_ms`, oldest first (what
    /// `/api/v1/anomalies` lists).
    pub fn current(&self, now_ms: i64) -> Vec<Incident> {
        let after = self.cfg.resolve_after_ms;
        self.open
            .iter()
            .filter(|(_, i)| now_ms.saturating_sub(i.last_update_ms) <= after)
            .map(|(_, i)| i.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LabelSet, SeriesId};

    fn ev(job: &str, inst: &str, t: i64, sev: &str) -> AnomalyEvent {
        let labels = LabelSet::from_pairs([("__name__", "x"), ("job", job), ("instance", inst)]);
        AnomalyEvent {
            detector: "d".into(),
            severity: sev.into(),
            series: SeriesId(labels.series_hash()),
            labels,
            t,
            value: 1.0,
            score: 4.0,
            threshold: 3.0,
        }
    }

    #[test]
    fn fifty_events_of_one_job_are_one_incident() {
        let mut inc = Incidents::new(IncidentConfig::default());
        for i in 0..50 {
            inc.record(&ev("api", &format!("i{}", i % 10), 1000 * i, "warning"));
        }
        inc.record(&ev("db", "x", 10_000, "critical"));
        let cur = inc.current(60_000);
        assert_eq!(cur.len(), 2);
        assert_eq!(cur[0].members.len(), 10);
        assert_eq!(cur[0].events, 50);
        assert_eq!(cur[0].group.get("job").map(String::as_str), Some("api"));
        assert_eq!(cur[1].severity, "critical");
        let json = serde_json::to_string(&cur).unwrap();
        assert!(json.contains("\"members\""));
    }

    #[test]
    fn events_far_apart_open_new_incidents_and_old_ones_expire() {
        let mut inc = Incidents::new(IncidentConfig::default());
        let a = inc.record(&ev("api", "a", 0, "warning"));
        let b = inc.record(&ev("api", "a", 10 * 60_000, "warning"));
        assert_ne!(a, b);
        inc.expire(20 * 60_000);
        assert_eq!(inc.current(20 * 60_000).len(), 1);
        assert!(inc.current(60 * 60_000).is_empty());
    }
}
