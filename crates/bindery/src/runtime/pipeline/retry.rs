//! The retry stage: after a failed attempt, waits out the back-off the
//! policy asks for, or says to give up. Like tower's `retry::Policy`, the
//! decision is the policy's ([`RetryPolicy::decide`]); this stage only
//! waits, and gives the message back when shutdown interrupts the wait.

use bindery_core::error::FunctionError;
use bindery_core::policy::{RetryDecision, RetryPolicy};
use tokio_util::sync::CancellationToken;

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Invoke again; this is the attempt's number.
    Attempt(u32),
    /// No attempt left, or the error cannot be helped by retrying.
    GiveUp,
    /// Shutdown came during the back-off: hand the message back.
    Interrupted,
}

/// Retries per one binding's policy.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    shutdown: CancellationToken,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy, shutdown: CancellationToken) -> Self {
        Self { policy, shutdown }
    }

    /// Decides after attempt `attempt` failed with `error`, waiting out the
    /// back-off before a further attempt.
    pub(crate) async fn after_failure(&self, attempt: u32, error: &FunctionError) -> Next {
        match self.policy.decide(attempt, error) {
            RetryDecision::Exhausted | RetryDecision::NotRetryable => Next::GiveUp,
            RetryDecision::RetryAfter(pause) => {
                tokio::select! {
                    () = tokio::time::sleep(pause) => Next::Attempt(attempt + 1),
                    () = self.shutdown.cancelled() => Next::Interrupted,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bindery_core::policy::Backoff;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    fn retry(max_attempts: u32) -> (Retry, CancellationToken) {
        let backoff = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(60)).unwrap();
        let shutdown = CancellationToken::new();
        let policy = RetryPolicy::new(max_attempts, backoff).unwrap();
        (Retry::new(policy, shutdown.clone()), shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn waits_the_back_off_then_gives_up_when_attempts_are_used() {
        let (retry, _) = retry(3);
        let error = FunctionError::new(Boom);
        let started = tokio::time::Instant::now();
        assert_eq!(retry.after_failure(1, &error).await, Next::Attempt(2));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(retry.after_failure(2, &error).await, Next::Attempt(3));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(retry.after_failure(3, &error).await, Next::GiveUp);
        assert_eq!(
            retry
                .after_failure(1, &FunctionError::non_retryable(Boom))
                .await,
            Next::GiveUp
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_back_off() {
        let (retry, shutdown) = retry(3);
        shutdown.cancel();
        let next = retry.after_failure(1, &FunctionError::new(Boom)).await;
        assert_eq!(next, Next::Interrupted);
    }
}
