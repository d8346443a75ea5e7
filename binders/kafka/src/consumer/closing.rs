//! Closing consumers off the async workers, and waiting for them.
//!
//! Closing a librdkafka consumer commits and leaves the group, which takes
//! round trips (and longer while the broker is away), so it runs on a
//! thread of its own. A consumer of the same group bound afterwards waits
//! for it, so it starts from the offsets just committed.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Shared;
use super::context::ConsumerCtx;

/// Consumers of one binder that are still closing.
#[derive(Debug, Default)]
pub(crate) struct Closings {
    /// Group (None for anonymous) and a receiver whose sender drops when
    /// the close is done.
    pending: Mutex<Vec<(Option<String>, watch::Receiver<()>)>>,
}

impl Closings {
    /// Closes `consumer` on a thread of its own: commits what was settled,
    /// then leaves the group.
    pub(crate) fn close(
        &self,
        consumer: Arc<StreamConsumer<ConsumerCtx>>,
        shared: Arc<Shared>,
        commit: bool,
    ) {
        let (done, receiver) = watch::channel(());
        {
            let mut pending = self.pending.lock();
            pending.retain(|(_, r)| r.has_changed().is_ok());
            pending.push((shared.group.clone(), receiver));
        }
        let spawned = std::thread::Builder::new()
            .name("bindery-kafka-close".into())
            .spawn(move || {
                close(consumer, &shared, commit);
                drop(done);
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread to close a Kafka consumer: {e}");
        }
    }

    /// Waits until the consumers of `group` (every consumer when `None`)
    /// closed, at most `timeout`.
    pub(crate) async fn wait(&self, group: Option<&str>, timeout: Duration) {
        let waiting: Vec<watch::Receiver<()>> = self
            .pending
            .lock()
            .iter()
            .filter(|(g, _)| group.is_none() || g.as_deref() == group)
            .map(|(_, r)| r.clone())
            .collect();
        let all = futures::future::join_all(waiting.into_iter().map(|mut r| async move {
            // Ends with an error once the sender (the closing thread) is gone.
            while r.changed().await.is_ok() {}
        }));
        if tokio::time::timeout(timeout, all).await.is_err() {
            warn!("Kafka consumers still closing after {timeout:?}");
        }
    }
}

fn close(consumer: Arc<StreamConsumer<ConsumerCtx>>, shared: &Shared, commit: bool) {
    let offsets = shared.tracker.lock().revoke_all();
    if commit && !offsets.is_empty() {
        // Closing unassigns, and librdkafka commits stored offsets when it
        // unassigns. No synchronous commit here: it would wait on a group
        // rebalance that only polling this consumer can complete.
        if let Err(e) = consumer.store_offsets(&shared.offset_list(&offsets)) {
            debug!(binding = %shared.binding, "storing final offsets {offsets:?}: {e}");
        }
    }
    // The last reference: librdkafka commits, leaves the group and closes,
    // serving rebalance events meanwhile.
    drop(consumer);
    debug!(binding = %shared.binding, "consumer of `{}` closed, committed {offsets:?}", shared.topic);
}
