//! The binder toolkit: pieces every binder needs, written once so that no
//! binder writes its own.
//!
//! - [`Pauses`]: one validated exponential back-off for reconnect, rebind
//!   and resend loops.
//! - [`anonymous_name`]: the name of an anonymous subscription's queue,
//!   group or consumer, unique across processes and restarts.
//! - [`delivery_channel`]: the cancel-safe hand-over from a client task to
//!   the consumer, bounded by prefetch permits.

mod channel;

pub use channel::{DeliveryReceiver, DeliverySender, ReceiverGone, delivery_channel};

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::policy::retry::Backoff;

/// The pauses of one reconnect (or rebind, or resend) loop: the first
/// pause after the first failure, each next one longer by the back-off's
/// multiplier up to its maximum, and back to the first after a success.
///
/// ```
/// use std::time::Duration;
/// use bindery_core::binder::kit::Pauses;
///
/// let mut pauses = Pauses::doubling(Duration::from_millis(100), Duration::from_millis(250));
/// assert_eq!(pauses.next_pause(), Duration::from_millis(100));
/// assert_eq!(pauses.next_pause(), Duration::from_millis(200));
/// assert_eq!(pauses.next_pause(), Duration::from_millis(250));
/// assert_eq!(pauses.failures(), 3);
/// pauses.reset();
/// assert_eq!(pauses.next_pause(), Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct Pauses {
    backoff: Backoff,
    failures: u32,
}

impl Pauses {
    /// Pauses following `backoff` (already validated by its constructor).
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures: 0,
        }
    }

    /// Pauses from `first`, doubling up to `longest`; a `longest` below
    /// `first` is raised to it.
    pub fn doubling(first: Duration, longest: Duration) -> Self {
        let backoff = Backoff::new(first, 2.0, longest.max(first))
            .expect("a multiplier of 2 with longest >= first is a valid back-off");
        Self::new(backoff)
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn next_pause(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// Failures counted since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits the first pause again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A name for an anonymous subscription: `<prefix>.<16 hex digits>`,
/// distinct for every call in this process and, with overwhelming
/// likelihood, from every name another process or an earlier run made.
/// Brokers keep such names apart (an anonymous queue, group or consumer
/// per subscriber), so a name must never be reused.
pub fn anonymous_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded per process; the counter and the time make
    // every name of this process distinct too.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    format!("{prefix}.{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn pauses_never_exceed_the_longest_even_after_many_failures() {
        let mut pauses = Pauses::doubling(Duration::from_millis(500), Duration::from_secs(30));
        let all: Vec<Duration> = (0..200).map(|_| pauses.next_pause()).collect();
        assert_eq!(all[0], Duration::from_millis(500));
        assert!(all.iter().all(|p| *p <= Duration::from_secs(30)));
        assert_eq!(*all.last().unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn a_longest_below_the_first_is_raised_to_it() {
        let mut pauses = Pauses::doubling(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(pauses.next_pause(), Duration::from_secs(2));
        assert_eq!(pauses.next_pause(), Duration::from_secs(2));
    }

    #[test]
    fn anonymous_names_are_distinct_and_prefixed() {
        let names: HashSet<String> = (0..10_000).map(|_| anonymous_name("anonymous")).collect();
        assert_eq!(names.len(), 10_000);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("anonymous.") && n.len() == 26)
        );
    }
}
