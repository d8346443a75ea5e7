//! The consumer's librdkafka context: rebalances move offsets and
//! tracking; health and logs go to [`ClientCtx`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bindery_core::error::BinderErrorKind;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use tracing::{debug, info, warn};

use super::Shared;
use crate::health::ClientCtx;

/// Context of one consumer.
pub(crate) struct ConsumerCtx {
    pub(crate) client: ClientCtx,
    pub(crate) shared: Arc<Shared>,
}

impl ConsumerCtx {
    fn our_partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.shared.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.client.stats_raw(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = self.our_partitions(list);
        self.shared.rebalances.fetch_add(1, Ordering::SeqCst);
        // Late settlements of revoked records are ignored from here on: the
        // records go to the partitions' next owner.
        let offsets = self
            .shared
            .tracker
            .lock()
            .revoke(partitions.iter().copied());
        // Nothing to commit when nothing settled since the last store (or a
        // close already stored it), or when the partitions are gone.
        let commit = !offsets.is_empty() && !consumer.assignment_lost();
        let committing = if commit {
            format!("; committing {offsets:?}")
        } else {
            String::new()
        };
        info!(
            binding = %self.shared.binding,
            "partitions {partitions:?} of `{}` revoked{committing}",
            self.shared.topic
        );
        if !commit {
            return;
        }
        // librdkafka commits stored offsets when it unassigns, right after
        // this callback.
        if let Err(e) = consumer.store_offsets(&self.shared.offset_list(&offsets)) {
            warn!(binding = %self.shared.binding, "storing offsets of revoked partitions: {e}");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.our_partitions(list);
                info!(
                    binding = %self.shared.binding,
                    "partitions {partitions:?} of `{}` assigned",
                    self.shared.topic
                );
                self.shared.tracker.lock().assign(partitions);
                self.shared.assigned.send_replace(true);
                // The driver is out of permits (or cancelled): these wait too.
                if self.shared.paused.load(Ordering::SeqCst) {
                    if let Err(e) = consumer.pause(list) {
                        warn!(binding = %self.shared.binding, "pausing assigned partitions: {e}");
                    }
                } else if let Err(e) = consumer.resume(list) {
                    // librdkafka keeps an application's pause on a partition
                    // across its revocation and assignment. A partition
                    // paused for want of permits, revoked (a lost session, a
                    // rebalance) before the driver resumed the assignment it
                    // had then, would come back paused for good: the driver
                    // resumes only what is assigned when a permit frees.
                    warn!(binding = %self.shared.binding, "resuming assigned partitions: {e}");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(binding = %self.shared.binding, "rebalance failed: {e}"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(binding = %self.shared.binding, "committed {offsets:?}"),
            // Auto-commit found nothing new to commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // While the coordinator is away every auto-commit fails alike.
            Err(e) if crate::error::kind_of(&e) == BinderErrorKind::Connection => {
                debug!(binding = %self.shared.binding, "commit failed, will commit again later: {e}");
            }
            Err(e) => {
                warn!(binding = %self.shared.binding, "commit failed, will commit again later: {e}")
            }
        }
    }
}
