//! Bounded retries with exponential backoff for the actuators' outbound calls.
//!
//! The caller decides what may be retried: each attempt returns either a result, a
//! [`Attempt::Transient`] failure (a timeout, a dropped connection, a 5xx or 429) or
//! a [`Attempt::Final`] one. Transient failures are retried up to the policy's
//! attempt count, sleeping `initial_backoff · 2^n` (capped at `max_backoff`) in
//! between; whatever remains is reported as [`ActError::Unavailable`] with the
//! number of attempts made.
//!
//! Must never: retry a call the caller marked final; loop without bound. Whether a
//! call is idempotent is the caller's knowledge — a non-idempotent call classifies
//! its ambiguous failures (timeout after sending) as final.

use std::future::Future;
use std::time::Duration;

use super::ActError;

/// How often and how patiently a failed call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per call, the first included (1 = no retry).
    pub attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest pause between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed try number `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The outcome of one failed try.
#[derive(Debug)]
pub enum Attempt {
    /// Worth another try (timeout, connection error, 5xx, 429): the reason is kept
    /// for the final error.
    Transient(String),
    /// Retrying will not help, or is not safe.
    Final(ActError),
}

impl From<ActError> for Attempt {
    fn from(e: ActError) -> Self {
        Attempt::Final(e)
    }
}

/// Runs `call` until it succeeds, fails finally, or the policy's attempts are used
/// up. `call` gets the 1-based attempt number; `on_retry` is told before each retry
/// (for a metric).
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    mut on_retry: impl FnMut(),
    mut call: F,
) -> Result<T, ActError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        match call(attempt).await {
            Ok(v) => return Ok(v),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Transient(reason)) if attempt >= attempts => {
                return Err(ActError::Unavailable { attempts, reason })
            }
            Err(Attempt::Transient(reason)) => {
                tracing::debug!(attempt, %reason, "actuator call failed; retrying");
                on_retry();
                tokio::time::sleep(policy.backoff(attempt - 1)).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
        };
        let pauses: Vec<u128> = (0..5).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 700, 700]);
        assert_eq!(p.backoff(40), Duration::from_millis(700));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let retries = AtomicU32::new(0);
        let r = with_retries(
            &fast(3),
            || {
                retries.fetch_add(1, Ordering::Relaxed);
            },
            |n| async move {
                if n < 3 {
                    Err(Attempt::Transient(format!("try {n}")))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_reported() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(
            &fast(4),
            || {},
            |_| {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err(Attempt::Transient("503".into())) }
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        match r {
            Err(ActError::Unavailable { attempts, reason }) => {
                assert_eq!((attempts, reason.as_str()), (4, "503"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn final_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(
            &fast(5),
            || {},
            |_| {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err(Attempt::Final(ActError::Refused("403".into()))) }
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(matches!(r, Err(ActError::Refused(_))));
    }
}
