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

use std::net::SocketAddr;

/// An axum app served on a loopback port from its own thread and runtime, so it
/// works under any test (async or not); stopped and joined on drop.
pub(crate) struct LocalServer {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalServer {
    pub(crate) fn start(app: axum::Router) -> LocalServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the test server");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        LocalServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub use kube_double::{fixtures, Fault, KubeDouble, Recorded};
