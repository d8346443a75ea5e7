//! What the runtime knows about each input binding's health beyond its
//! binder's connection: whether it ended, whether its dead letters cannot
//! be published, and whether a lane has been busy for too long (audit A24).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The health of one input binding, updated by its stages.
#[derive(Debug)]
pub(crate) struct BindingWatch {
    binding: String,
    epoch: Instant,
    /// When each lane's current invocation started, in milliseconds after
    /// `epoch` plus one; 0 while the lane is idle.
    busy_since: Box<[AtomicU64]>,
    /// A lane busy for longer than this counts as hung.
    hung_after: Option<Duration>,
    /// Messages whose dead letter cannot be published right now.
    stalled: AtomicUsize,
    stall_reason: Mutex<String>,
    ended: Mutex<Option<String>>,
}

impl BindingWatch {
    pub(crate) fn new(binding: &str, lanes: usize, hung_after: Option<Duration>) -> Self {
        Self {
            binding: binding.to_owned(),
            epoch: Instant::now(),
            busy_since: (0..lanes.max(1)).map(|_| AtomicU64::new(0)).collect(),
            hung_after,
            stalled: AtomicUsize::new(0),
            stall_reason: Mutex::new(String::new()),
            ended: Mutex::new(None),
        }
    }

    /// Marks lane `lane` busy until the guard is dropped. Without an
    /// invocation timeout nothing can hang, so the clock is not read.
    pub(crate) fn busy(&self, lane: usize) -> Option<BusyGuard<'_>> {
        self.hung_after?;
        let since = self.epoch.elapsed().as_millis() as u64 + 1;
        let slot = &self.busy_since[lane % self.busy_since.len()];
        slot.store(since, Ordering::Relaxed);
        Some(BusyGuard(slot))
    }

    /// One more message whose dead letter cannot be published.
    pub(crate) fn stall(&self, reason: String) {
        *self.stall_reason.lock() = reason;
        self.stalled.fetch_add(1, Ordering::Relaxed);
    }

    /// That message's dead letter went through (or it was handed back).
    pub(crate) fn unstall(&self) {
        self.stalled.fetch_sub(1, Ordering::Relaxed);
    }

    /// The binding stopped for good.
    pub(crate) fn end(&self, reason: String) {
        *self.ended.lock() = Some(reason);
    }

    /// Why the binding is not healthy, if it is not.
    pub(crate) fn problem(&self) -> Option<String> {
        let binding = &self.binding;
        if let Some(reason) = self.ended.lock().as_ref() {
            return Some(format!("binding `{binding}` ended: {reason}"));
        }
        let stalled = self.stalled.load(Ordering::Relaxed);
        if stalled > 0 {
            let reason = self.stall_reason.lock();
            return Some(format!(
                "binding `{binding}`: {stalled} message(s) cannot be dead-lettered: {reason}"
            ));
        }
        let limit = self.hung_after?;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let longest = self
            .busy_since
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|since| *since > 0)
            .map(|since| now.saturating_sub(since))
            .max()?;
        (Duration::from_millis(longest) > limit).then(|| {
            format!(
                "binding `{binding}`: a call has run for {:?}, longer than its invocation-timeout of {limit:?}",
                Duration::from_millis(longest)
            )
        })
    }
}

/// Marks a lane idle again when dropped.
#[derive(Debug)]
pub(crate) struct BusyGuard<'a>(&'a AtomicU64);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a24_a_lane_busy_past_its_invocation_timeout_shows() {
        let watch = BindingWatch::new("f-in-0", 2, Some(Duration::from_secs(5)));
        assert_eq!(watch.problem(), None);
        let busy = watch.busy(1);
        tokio::time::advance(Duration::from_secs(6)).await;
        let problem = watch.problem().expect("hung");
        assert!(problem.contains("invocation-timeout"), "{problem}");
        drop(busy);
        assert_eq!(watch.problem(), None);
    }

    #[test]
    fn a24_stalled_dead_letters_and_an_ended_binding_show() {
        let watch = BindingWatch::new("f-in-0", 1, None);
        watch.stall("dead-letter queue refused it".into());
        assert!(watch.problem().unwrap().contains("cannot be dead-lettered"));
        watch.unstall();
        assert_eq!(watch.problem(), None);
        watch.end("the consumer was cancelled".into());
        assert!(watch.problem().unwrap().contains("ended"));
    }
}
