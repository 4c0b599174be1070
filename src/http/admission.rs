//! Admission control: how many reads run at once, and how many decoded remote-write
//! bytes are in memory at once, across all requests.
//!
//! Reads (queries, series, labels) wait for one of `query.max_concurrency` slots, as
//! Prometheus's `--query.max-concurrency` queues queries; the wait counts against the
//! query's timeout, and a read that times out in the queue gets 503. The work then
//! runs on the blocking pool, never on the async workers, and is cancelled when the
//! client goes away (the handler's future is dropped). Remote writes reserve their
//! decoded size before decompressing; when the reservations of requests in flight
//! would exceed `remote_write.max_decoded_bytes`, the request gets 503 with
//! `Retry-After` (senders retry it) instead of growing memory.
//!
//! Must never: hold a slot or a reservation after its request is done; run read or
//! decode work on an async worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::promql::QueryContext;

/// The slots concurrent reads share.
pub(crate) struct QueryGate {
    slots: Arc<Semaphore>,
    max: usize,
}

impl QueryGate {
    pub(crate) fn new(max: usize) -> Self {
        QueryGate {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Waits for a slot until `deadline`.
    async fn enter(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, ApiError> {
        let wait = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned());
        match wait.await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error_type: "timeout",
                message: format!(
                    "query timed out in query queue: all {} query slots were busy (query.max_concurrency)",
                    self.max
                ),
            }),
        }
    }

    /// Runs `read` on the blocking pool once a slot is free, with a context that
    /// times out `timeout` after now (queueing included) and is cancelled if the
    /// returned future is dropped before it finishes.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&QueryContext) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let deadline = Instant::now() + timeout;
        let permit = self.enter(deadline).await?;
        let ctx = QueryContext::with_deadline(deadline);
        let cancel_if_dropped = ctx.on_drop();
        let result = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let result = read(&ctx);
            if ctx.is_cancelled() {
                tracing::info!("read cancelled: the client went away");
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("query task failed: {e}"))));
        cancel_if_dropped.disarm();
        result
    }
}

/// Decoded remote-write bytes in flight, counted in KiB (a semaphore counts in
/// `u32`s).
pub(crate) struct DecodeBudget {
    kib: Arc<Semaphore>,
    capacity_kib: u32,
}

/// The budget is spent: the request should be retried later.
#[derive(Debug)]
pub(crate) struct BudgetFull {
    pub(crate) wanted: usize,
    pub(crate) capacity: usize,
}

impl DecodeBudget {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        let capacity_kib = u32::try_from(capacity_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        // Tokio caps a semaphore's permits well above any u32.
        DecodeBudget {
            kib: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
        }
    }

    /// Reserves `bytes` (at most the whole budget) without waiting.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, BudgetFull> {
        let want = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_kib.max(1));
        self.kib
            .clone()
            .try_acquire_many_owned(want)
            .map_err(|_| BudgetFull {
                wanted: bytes,
                capacity: self.capacity_kib as usize * 1024,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_budget_is_shared_and_given_back() {
        let b = DecodeBudget::new(10 << 20);
        let first = b.try_reserve(6 << 20).unwrap();
        let full = b.try_reserve(6 << 20).unwrap_err();
        assert_eq!((full.wanted, full.capacity), (6 << 20, 10 << 20));
        let small = b.try_reserve(4 << 20).unwrap();
        drop(first);
        drop(small);
        // A request as large as the whole budget fits once the rest is back.
        let whole = b.try_reserve(10 << 20).unwrap();
        assert!(b.try_reserve(1).is_err());
        drop(whole);
        assert!(b.try_reserve(usize::MAX).is_ok());
    }

    #[tokio::test]
    async fn reads_wait_for_a_slot_and_time_out_in_the_queue() {
        let gate = Arc::new(QueryGate::new(1));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let first = tokio::spawn(async move {
            g.run(Duration::from_secs(60), move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(1)
            })
            .await
        });
        started_rx.await.unwrap();
        let e = gate
            .run(Duration::from_millis(50), |_| Ok(2))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("query.max_concurrency"), "{}", e.message);
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        // The slot is free again.
        assert_eq!(
            gate.run(Duration::from_secs(5), |_| Ok(3)).await.unwrap(),
            3
        );
    }

    #[tokio::test]
    async fn dropping_the_request_cancels_its_read() {
        let gate = Arc::new(QueryGate::new(1));
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let g = gate.clone();
        let request = tokio::spawn(async move {
            g.run(Duration::from_secs(60), move |ctx| {
                let _ = started_tx.send(());
                let start = Instant::now();
                while !ctx.is_cancelled() && start.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = seen_tx.send(ctx.is_cancelled());
                Ok(())
            })
            .await
        });
        started_rx.await.unwrap();
        request.abort();
        let cancelled = tokio::task::spawn_blocking(move || seen_rx.recv().unwrap())
            .await
            .unwrap();
        assert!(cancelled);
    }
}
