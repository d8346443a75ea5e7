//! In-process retry with exponential back-off.

use std::time::Duration;

use crate::config::ConsumerSettings;
use crate::error::FunctionError;

/// Exponential back-off: `initial`, then each pause `multiplier` times the
/// last, never above `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
}

impl Backoff {
    /// Validates and builds a back-off.
    pub fn new(initial: Duration, multiplier: f64, max: Duration) -> Result<Self, InvalidPolicy> {
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(InvalidPolicy::Multiplier(multiplier));
        }
        if max < initial {
            return Err(InvalidPolicy::MaxBelowInitial { initial, max });
        }
        Ok(Self {
            initial,
            multiplier,
            max,
        })
    }

    /// The pause after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let seconds = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if !seconds.is_finite() || seconds >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(seconds)
        }
    }
}

/// How many attempts a message gets and how long to wait between them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Invoke again after this pause.
    RetryAfter(Duration),
    /// Give up: every attempt was used.
    Exhausted,
    /// Give up: the error says retrying cannot help.
    NotRetryable,
}

impl RetryPolicy {
    /// Validates and builds a policy; `max_attempts` counts the first.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Result<Self, InvalidPolicy> {
        if max_attempts == 0 {
            return Err(InvalidPolicy::NoAttempts);
        }
        Ok(Self {
            max_attempts,
            backoff,
        })
    }

    /// The policy a binding's consumer settings describe.
    pub fn from_settings(settings: &ConsumerSettings) -> Result<Self, InvalidPolicy> {
        let backoff = Backoff::new(
            settings.back_off_initial_interval,
            settings.back_off_multiplier,
            settings.back_off_max_interval,
        )?;
        Self::new(settings.max_attempts, backoff)
    }

    /// One attempt, no retry.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff {
                initial: Duration::ZERO,
                multiplier: 1.0,
                max: Duration::ZERO,
            },
        }
    }

    /// Invocations per message, counting the first.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The back-off between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Decides after attempt `attempt` (1-based) failed with `error`.
    pub fn decide(&self, attempt: u32, error: &FunctionError) -> RetryDecision {
        if !error.is_retryable() {
            RetryDecision::NotRetryable
        } else if attempt >= self.max_attempts {
            RetryDecision::Exhausted
        } else {
            RetryDecision::RetryAfter(self.backoff.delay(attempt))
        }
    }
}

/// Settings that do not make a policy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPolicy {
    /// `max-attempts` is 0.
    #[error("max-attempts must be at least 1 (1 means no retry)")]
    NoAttempts,
    /// `back-off-multiplier` below 1 or not a number.
    #[error("back-off-multiplier must be a number of at least 1.0, not {0}")]
    Multiplier(f64),
    /// `back-off-max-interval` below `back-off-initial-interval`.
    #[error("back-off-max-interval ({max:?}) is below back-off-initial-interval ({initial:?})")]
    MaxBelowInitial {
        /// The initial interval.
        initial: Duration,
        /// The maximum interval.
        max: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[test]
    fn delays_follow_multiplier_and_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(10)).unwrap();
        let delays: Vec<u64> = (1..=6).map(|a| backoff.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn decides_by_attempt_and_retryability() {
        let policy = RetryPolicy::new(
            3,
            Backoff::new(Duration::from_millis(100), 3.0, Duration::from_secs(1)).unwrap(),
        )
        .unwrap();
        let error = FunctionError::new(Boom);
        assert_eq!(
            policy.decide(1, &error),
            RetryDecision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            policy.decide(2, &error),
            RetryDecision::RetryAfter(Duration::from_millis(300))
        );
        assert_eq!(policy.decide(3, &error), RetryDecision::Exhausted);
        assert_eq!(
            policy.decide(1, &FunctionError::non_retryable(Boom)),
            RetryDecision::NotRetryable
        );
    }

    #[test]
    fn rejects_invalid_settings() {
        assert_eq!(
            Backoff::new(Duration::ZERO, 0.5, Duration::ZERO),
            Err(InvalidPolicy::Multiplier(0.5))
        );
        assert!(Backoff::new(Duration::from_secs(2), 2.0, Duration::from_secs(1)).is_err());
        let backoff = Backoff::new(Duration::ZERO, 1.0, Duration::ZERO).unwrap();
        assert_eq!(RetryPolicy::new(0, backoff), Err(InvalidPolicy::NoAttempts));
    }
}
