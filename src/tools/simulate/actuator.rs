//! The simulated world behind the same [`Actuator`] trait the real actuators
//! implement: the Decide stage's executor calls it exactly as it calls the
//! Kubernetes, Redis, HTTP-config and notify actuators, and the world reacts.
//!
//! Invariants: it only acts on an [`Approved`] action (so, as everywhere, only after
//! the policy passed it and its intent is durable); it never blocks on anything but
//! the world's lock, which the simulation holds only between steps.

use std::sync::Arc;

use parking_lot::Mutex;

use super::world::World;
use crate::act::{ActError, Action, Actuator, Approved, Effect};

/// Carries out every action kind on the simulated world.
pub struct SimActuator {
    world: Arc<Mutex<World>>,
}

impl SimActuator {
    pub fn new(world: Arc<Mutex<World>>) -> Self {
        SimActuator { world }
    }
}

#[async_trait::async_trait]
impl Actuator for SimActuator {
    fn name(&self) -> &'static str {
        "simulated-world"
    }

    fn handles(&self, _action: &Action) -> bool {
        true
    }

    async fn execute(&self, action: &Approved) -> Result<Effect, ActError> {
        self.world.lock().apply(action.action())
    }

    async fn observe(&self, action: &Action) -> Result<serde_json::Value, ActError> {
        self.world.lock().observe(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{ObjectKind, ObjectRef};
    use crate::knowledge::IntentReceipt;
    use crate::tools::simulate::scenario::Loaded;

    #[tokio::test]
    async fn executes_approved_actions_on_the_world() {
        let mut sc = Loaded::builtin().unwrap().scenario;
        sc.faults.retain(|f| f.name == "backend-memory-leak");
        let world = Arc::new(Mutex::new(World::new(&sc)));
        world.lock().step(2 * 3_600_000);
        let act = SimActuator::new(world.clone());
        let action = Action::RolloutRestart {
            workload: ObjectRef {
                kind: ObjectKind::Deployment,
                namespace: "shop".into(),
                name: "backend".into(),
            },
        };
        assert!(act.handles(&action));
        let before = act.observe(&action).await.unwrap();
        assert_eq!(before["replicas"], 4);
        let effect = act
            .execute(&Approved::new(action.clone(), IntentReceipt::for_test(1)))
            .await
            .unwrap();
        assert_eq!(
            effect.details["fixes"],
            serde_json::json!(["backend-memory-leak"])
        );
        assert_eq!(
            world.lock().faults()[0].phase,
            crate::tools::simulate::world::FaultPhase::Ended
        );
    }
}
