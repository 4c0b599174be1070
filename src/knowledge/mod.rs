//! Knowledge: the loop's durable memory — the audit log of every decision and action,
//! pending approvals, cooldown and rate-limit state, and the rules' alert for-state —
//! behind one store trait with an embedded implementation.
//!
//! Invariants: an [`IntentReceipt`] exists only once the intent it names is durable;
//! only this module (and its children) can create one, and `act::Approved` cannot be
//! made without one. Must never: import from `decide/`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one entry of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuditId(pub i64);

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Proof that an action's intent has been written durably to the audit log.
#[derive(Debug, PartialEq, Eq)]
pub struct IntentReceipt {
    id: AuditId,
}

impl IntentReceipt {
    /// Made by a store implementation right after the intent's write is durable.
    #[allow(dead_code)] // the embedded store is the first caller
    fn durable(id: AuditId) -> Self {
        IntentReceipt { id }
    }

    /// The intent's audit entry.
    pub fn id(&self) -> AuditId {
        self.id
    }

    /// A receipt for unit tests of actuators, which have no store.
    #[cfg(test)]
    pub(crate) fn for_test(id: i64) -> Self {
        IntentReceipt { id: AuditId(id) }
    }
}
