//! Test support for the actuators, shared by the crate's unit tests and (through
//! the `testing` cargo feature) integration tests, so there is one copy of each:
//!
//! - [`KubeDouble`]: an HTTP double of the Kubernetes API server that serves the
//!   real REST paths and JSON, authorizes every request against the actuators'
//!   RBAC table, applies merge / strategic-merge / JSON patches, honours
//!   `resourceVersion` and UID preconditions, and records each request (verb,
//!   path, content type, body) for the tests to check. The production `kube`
//!   client reaches it through a kubeconfig file, as it would reach a cluster.
//! - [`peers`]: a real `redis-server` and a real Alertmanager on loopback ports,
//!   and a local webhook receiver, each stopped on drop.
//!
//! Never compiled into the service: `cfg(any(test, feature = "testing"))`.

mod kube_double;
pub mod peers;

pub use kube_double::{fixtures, Fault, KubeDouble, Recorded};
