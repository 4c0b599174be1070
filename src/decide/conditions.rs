//! How the decider re-checks a condition in the running service: an alert's rule is
//! evaluated now by the rules engine; an incident is open while the anomaly stage
//! still lists it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};

use crate::anomaly::Analyzer;
use crate::rules::RuleManager;

use super::Conditions;

/// The rules engine and the analyzer as the decider's [`Conditions`]. The rules
/// engine is attached after it starts (it needs Decide's intake first).
pub struct ServiceConditions {
    rules: OnceLock<Weak<RuleManager>>,
    analyzer: Arc<Analyzer>,
}

impl ServiceConditions {
    pub fn new(analyzer: Arc<Analyzer>) -> Self {
        ServiceConditions {
            rules: OnceLock::new(),
            analyzer,
        }
    }

    /// Attaches the running rules engine (once).
    pub fn set_rules(&self, rules: &Arc<RuleManager>) {
        let _ = self.rules.set(Arc::downgrade(rules));
    }
}

impl Conditions for ServiceConditions {
    fn alerts_now(
        &self,
        group: &str,
        rule: &str,
    ) -> Result<Option<Vec<BTreeMap<String, String>>>, String> {
        match self.rules.get().and_then(Weak::upgrade) {
            Some(m) => m.alerts_now(group, rule),
            None => Err("the rules engine is not running".into()),
        }
    }

    fn incident_open(&self, id: u64) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        self.analyzer.incidents(now).iter().any(|i| i.id == id)
    }
}

type Labels = BTreeMap<String, String>;

/// Conditions told from outside: which alerts of which rule hold, which incidents
/// are open. `replay`, the simulation, tests and benchmarks set them step by step.
#[derive(Debug, Default)]
pub struct StaticConditions {
    alerts: parking_lot::Mutex<std::collections::HashMap<(String, String), Vec<Labels>>>,
    incidents: parking_lot::Mutex<std::collections::HashSet<u64>>,
}

impl StaticConditions {
    /// The alerts of rule `group`/`rule` whose condition holds from now on.
    pub fn set_alerts(&self, group: &str, rule: &str, alerts: Vec<BTreeMap<String, String>>) {
        self.alerts
            .lock()
            .insert((group.to_string(), rule.to_string()), alerts);
    }

    /// Marks an incident open or over.
    pub fn set_incident(&self, id: u64, open: bool) {
        let mut i = self.incidents.lock();
        if open {
            i.insert(id);
        } else {
            i.remove(&id);
        }
    }
}

impl Conditions for StaticConditions {
    fn alerts_now(
        &self,
        group: &str,
        rule: &str,
    ) -> Result<Option<Vec<BTreeMap<String, String>>>, String> {
        Ok(Some(
            self.alerts
                .lock()
                .get(&(group.to_string(), rule.to_string()))
                .cloned()
                .unwrap_or_default(),
        ))
    }

    fn incident_open(&self, id: u64) -> bool {
        self.incidents.lock().contains(&id)
    }
}
