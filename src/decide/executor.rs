//! The executor: the only caller of actuators. It writes a batch of decisions to the
//! knowledge store (one transaction, durable on return), takes the intent receipts
//! the store hands back, makes each [`Approved`] action from its receipt and runs it
//! on the async runtime; the outcome comes back to the decider, which records it.
//!
//! Invariants: no actuator is called without a receipt, so without a durable intent;
//! an action runs at most once (the store refuses a second intent); a pod restart
//! first reads the pod and pins its UID, so a different pod of the same name is never
//! hit; every call is bounded by a timeout.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use crate::act::{ActError, Action, Actuator, Approved};
use crate::knowledge::{Applied, Change, IntentReceipt, KnowledgeStore, Result as StoreResult};

use super::intake::{Executed, Input};

/// Longest an actuator may take for one action (its own timeouts and retries are
/// shorter; this only guards against a hung call).
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs approved actions through the actuators.
pub(super) struct Executor {
    store: Arc<dyn KnowledgeStore>,
    /// Replaced whole on a reload; an action keeps the actuator it started with.
    actuators: Arc<parking_lot::RwLock<Vec<Arc<dyn Actuator>>>>,
    runtime: tokio::runtime::Handle,
    tx: Sender<Input>,
}

impl Executor {
    pub(super) fn new(
        store: Arc<dyn KnowledgeStore>,
        actuators: Arc<parking_lot::RwLock<Vec<Arc<dyn Actuator>>>>,
        runtime: tokio::runtime::Handle,
        tx: Sender<Input>,
    ) -> Self {
        Executor {
            store,
            actuators,
            runtime,
            tx,
        }
    }

    fn actuator(&self, action: &Action) -> Option<Arc<dyn Actuator>> {
        self.actuators
            .read()
            .iter()
            .find(|a| a.handles(action))
            .cloned()
    }

    /// Whether some actuator carries out `action`.
    pub(super) fn handles(&self, action: &Action) -> bool {
        self.actuator(action).is_some()
    }

    /// Writes the changes in one durable transaction; the intents among them come
    /// back with their receipts.
    pub(super) fn commit(&self, changes: Vec<Change>) -> StoreResult<Vec<Applied>> {
        self.store.apply(changes)
    }

    /// Runs `action`, whose intent `receipt` proves durable, and reports to the
    /// decider. `expect_uid`: the pod UID the alert names, if it names one.
    pub(super) fn execute(
        &self,
        receipt: IntentReceipt,
        action: Action,
        expect_uid: Option<String>,
    ) {
        let id = receipt.id();
        let tx = self.tx.clone();
        let Some(actuator) = self.actuator(&action) else {
            let _ = tx.send(Input::Executed(Box::new(Executed {
                id,
                result: Err(ActError::NotConfigured(action.target())),
                action: None,
                observed: None,
            })));
            return;
        };
        self.runtime.spawn(async move {
            let (action, observed, result) = match tokio::time::timeout(
                EXECUTE_TIMEOUT,
                run(actuator, receipt, action, expect_uid),
            )
            .await
            {
                Ok((a, o, r)) => (Some(a), o, r),
                Err(_) => (
                    None,
                    None,
                    Err(ActError::Unavailable {
                        attempts: 1,
                        reason: format!("no answer within {}s", EXECUTE_TIMEOUT.as_secs()),
                    }),
                ),
            };
            let _ = tx.send(Input::Executed(Box::new(Executed {
                id,
                action,
                result,
                observed,
            })));
        });
    }

    /// Reads the target of an action whose outcome is unknown and reports it.
    pub(super) fn observe(&self, id: crate::knowledge::AuditId, action: Action) {
        let tx = self.tx.clone();
        let Some(actuator) = self.actuator(&action) else {
            let _ = tx.send(Input::Observed {
                id,
                result: Err(format!("no actuator configured for {}", action.target())),
            });
            return;
        };
        self.runtime.spawn(async move {
            let r = tokio::time::timeout(EXECUTE_TIMEOUT, actuator.observe(&action)).await;
            let result = match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer".into()),
            };
            let _ = tx.send(Input::Observed { id, result });
        });
    }
}

/// One execution: pin a pod's UID first, then call the actuator once.
async fn run(
    actuator: Arc<dyn Actuator>,
    receipt: IntentReceipt,
    mut action: Action,
    expect_uid: Option<String>,
) -> (
    Action,
    Option<serde_json::Value>,
    Result<crate::act::Effect, ActError>,
) {
    let mut observed = None;
    if let Action::RestartPod { uid: None, pod } = &action {
        let seen = match actuator.observe(&action).await {
            Ok(v) => v,
            Err(e) => return (action, None, Err(e)),
        };
        if seen.get("exists") == Some(&serde_json::Value::Bool(false)) {
            let reason = format!("{pod} is gone: nothing to restart");
            return (action, Some(seen), Err(ActError::NotFound(reason)));
        }
        let uid = seen
            .get("uid")
            .or_else(|| seen.get("metadata").and_then(|m| m.get("uid")))
            .and_then(|u| u.as_str())
            .map(str::to_owned);
        if let (Some(want), Some(have)) = (&expect_uid, &uid) {
            if want != have {
                let reason = format!(
                    "{pod} is now a different pod (uid {have}, the alert names {want}): not restarted"
                );
                return (action, Some(seen), Err(ActError::NotFound(reason)));
            }
        }
        let pod = pod.clone();
        action = Action::RestartPod { pod, uid };
        observed = Some(seen);
    }
    let approved = Approved::new(action, receipt);
    let result = actuator.execute(&approved).await;
    (approved.action().clone(), observed, result)
}
