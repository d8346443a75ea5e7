//! The task that polls one librdkafka consumer.
//!
//! - It takes a prefetch permit before each record, so at most `prefetch`
//!   deliveries are unsettled at once. When every permit has been held for
//!   a while ([`pause_after`]: a slow function, an in-process back-off), it pauses
//!   the assigned partitions and goes on polling, so the member never
//!   exceeds `max.poll.interval.ms` and answers rebalances at once (audit
//!   B6, A14); it resumes them when a permit is free again.
//! - It serves rewinds (nack with requeue) between polls, so a seek always
//!   happens before the next record is taken. The records are forgotten by
//!   the tracker only once the seek succeeded; a failed seek is retried
//!   and meanwhile nothing is committed past the nacked record (audit B1).
//! - Every [`STORE_INTERVAL`] it hands the offsets that moved to
//!   librdkafka's offset store, whose auto-commit commits them — no call
//!   per message.
//! - For an anonymous subscription it looks for partitions added to the
//!   topic and assigns them from their start (audit B7).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bindery_core::binder::Delivery;
use bindery_core::routing::{RoutingPattern, matches_any};
use futures::StreamExt;
use parking_lot::Mutex;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::context::ConsumerCtx;
use super::delivery::KafkaDelivery;
use super::tracker::{OffsetTracker, Ticket};
use super::{Command, Shared};
use crate::mapping::{HeaderLimits, from_record};

/// How often settled offsets go to librdkafka's offset store.
pub(crate) const STORE_INTERVAL: Duration = Duration::from_millis(100);

/// How long every permit may be held before the partitions are paused: a
/// tenth of `max_poll_interval`, from half a second to five. Pausing drops
/// what librdkafka prefetched (fetched again on resume), so it waits out
/// the gaps of a busy binding; a rebalance waits for this member that long
/// at most.
pub(crate) fn pause_after(max_poll_interval: Duration) -> Duration {
    (max_poll_interval / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// How long a rewind's seek may take before it counts as failed.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a failed rewind is tried again.
const REWIND_RETRY: Duration = Duration::from_secs(1);

/// How an anonymous subscription looks for partitions added later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartitionCheck {
    /// librdkafka's `topic.metadata.refresh.interval.ms`: what a group
    /// member would wait for the same news.
    pub(crate) interval: Duration,
    /// How long the metadata request may take.
    pub(crate) timeout: Duration,
}

/// What [`rewind_with`] did.
#[derive(Debug)]
pub(crate) enum Rewound {
    /// Sought back; the tracker forgot the record and what followed.
    Done,
    /// The ticket is no longer ours to rewind (settled, rewound, revoked).
    Stale,
    /// The seek failed: the tracker still has the record, unsettled, so
    /// nothing after it is committed until a retry succeeds.
    Failed(KafkaError),
}

/// Rewinds the ticket's partition with `seek`, telling the tracker only
/// once the seek succeeded (audit B1). The seam for tests of seek failures.
pub(crate) async fn rewind_with(
    tracker: &Mutex<OffsetTracker>,
    ticket: Ticket,
    seek: impl Future<Output = KafkaResult<()>>,
) -> Rewound {
    if !tracker.lock().is_rewindable(ticket) {
        return Rewound::Stale;
    }
    if let Err(e) = seek.await {
        return Rewound::Failed(e);
    }
    if tracker.lock().rewind(ticket) {
        Rewound::Done
    } else {
        // Revoked while seeking: the partition's next owner has it.
        Rewound::Stale
    }
}

/// What the polling loop keeps between iterations.
#[derive(Debug, Default)]
pub(crate) struct DriverState {
    /// Whether the assigned partitions are paused for want of permits.
    paused: bool,
    /// Records that arrived while no permit was free (librdkafka may hand
    /// over a few fetched before the pause took effect), delivered first,
    /// with the rebalance count when they arrived: after a rebalance the
    /// partition starts again from its committed offset, so they are dropped.
    held: VecDeque<(u64, OwnedMessage)>,
    /// Rewinds whose seek failed, to try again.
    failed_rewinds: Vec<Ticket>,
    /// When failed rewinds were last tried.
    last_retry: Option<Instant>,
}

/// Everything the polling task owns.
pub(crate) struct Driver {
    pub(crate) consumer: Arc<StreamConsumer<ConsumerCtx>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) deliveries: mpsc::Sender<Delivery>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// `None` when every routing key is wanted.
    pub(crate) routing_keys: Option<Vec<RoutingPattern>>,
    /// Partitions still skipping records older than this (milliseconds):
    /// an anonymous subscription starting at the end, see
    /// `anonymous-timestamp-filter`.
    pub(crate) not_before: HashMap<i32, i64>,
    /// How many inbound headers of a record are read.
    pub(crate) header_limits: HeaderLimits,
    /// How long every permit may be held before fetching pauses.
    pub(crate) pause_after: Duration,
    /// For an anonymous subscription: looking for added partitions.
    pub(crate) partition_check: Option<PartitionCheck>,
    pub(crate) state: DriverState,
    /// Cancelled by `Consumer::cancel`: take no more records.
    pub(crate) polling: CancellationToken,
    /// Cancelled when the consumer is dropped.
    pub(crate) closed: CancellationToken,
}

impl Driver {
    /// Runs until the consumer is dropped; returns the librdkafka consumer
    /// to close.
    pub(crate) async fn run(mut self) -> (Arc<StreamConsumer<ConsumerCtx>>, Arc<Shared>) {
        let consumer = self.consumer.clone();
        {
            let mut stream = consumer.stream();
            let mut store = tokio::time::interval(STORE_INTERVAL);
            store.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let check_every = self
                .partition_check
                .map_or(Duration::from_secs(3600), |c| c.interval);
            let mut partition_check =
                tokio::time::interval_at(Instant::now() + check_every, check_every);
            partition_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut permit: Option<OwnedSemaphorePermit> = None;
            // When the last free permit was taken.
            let mut starved_since = Instant::now();
            let closed = self.closed.clone();
            let polling = self.polling.clone();
            'polling: loop {
                let cancelled = polling.is_cancelled();
                let waiting = permit.is_none() && !cancelled;
                let paused = self.state.paused;
                tokio::select! {
                    biased;
                    () = closed.cancelled() => break,
                    Some(command) = self.commands.recv() => self.command(command).await,
                    _ = store.tick() => {
                        self.store();
                        self.retry_rewinds().await;
                    }
                    _ = partition_check.tick(), if self.partition_check.is_some() && !cancelled => {
                        self.check_partitions().await;
                    }
                    acquired = self.permits.clone().acquire_owned(), if waiting => {
                        permit = acquired.ok();
                        if paused {
                            self.resume();
                        }
                        // Records held while paused go first, in order.
                        while permit.is_some() {
                            let Some((rebalances, record)) = self.state.held.pop_front() else {
                                break;
                            };
                            if rebalances != self.shared.rebalances.load(Ordering::SeqCst) {
                                continue;
                            }
                            if !self.take(&record, &mut permit) {
                                break 'polling;
                            }
                        }
                        if permit.is_none() {
                            starved_since = Instant::now();
                        }
                    }
                    // Every permit held for a while: stop fetching but go on
                    // polling, so the group does not wait for this member.
                    () = tokio::time::sleep_until(starved_since + self.pause_after), if waiting && !paused => {
                        self.pause_fetching();
                    }
                    // After `cancel` the consumer still polls, so it takes
                    // part in rebalances until dropped, but takes nothing.
                    item = stream.next(), if permit.is_some() || cancelled || paused => match item {
                        Some(Ok(record)) if cancelled => {
                            debug!(binding = %self.shared.binding, "cancelled: leaving {}@{} to the group", record.partition(), record.offset());
                        }
                        Some(Ok(record)) if permit.is_none() => {
                            let rebalances = self.shared.rebalances.load(Ordering::SeqCst);
                            self.state.held.push_back((rebalances, record.detach()));
                        }
                        Some(Ok(record)) => {
                            if !self.take(&record, &mut permit) {
                                break;
                            }
                            if permit.is_none() {
                                starved_since = Instant::now();
                            }
                        }
                        Some(Err(error)) => self.consumer_error(&error),
                        None => break,
                    },
                    () = polling.cancelled(), if !cancelled => self.pause(),
                }
            }
        }
        self.store();
        (self.consumer, self.shared)
    }

    /// Turns a record into a delivery, or settles it at once when nobody
    /// wants it. False when the consumer side is gone.
    fn take(&mut self, record: &impl Message, permit: &mut Option<OwnedSemaphorePermit>) -> bool {
        self.consumer.context().client.reporter.up();
        let (partition, offset) = (record.partition(), record.offset());
        if !self.shared.tracker.lock().is_tracked(partition) {
            // Held while its partition was revoked: the next owner has it.
            return true;
        }
        if let Some(&not_before) = self.not_before.get(&partition) {
            if record
                .timestamp()
                .to_millis()
                .is_some_and(|t| t < not_before)
            {
                debug!(binding = %self.shared.binding, "skipping {partition}@{offset}: sent before the subscription");
                self.shared.tracker.lock().skip(partition, offset);
                return true;
            }
            self.not_before.remove(&partition);
        }
        let (message, origin) = from_record(record, self.header_limits);
        if let Some(patterns) = &self.routing_keys {
            if !matches_any(patterns, message.routing_key().unwrap_or_default()) {
                self.shared.tracker.lock().skip(partition, offset);
                return true;
            }
        }
        let Some(permit) = permit.take() else {
            unreachable!("a record is taken only with a permit");
        };
        let ticket = self.shared.tracker.lock().track(partition, offset);
        let handle = KafkaDelivery {
            shared: self.shared.clone(),
            ticket,
            origin,
            permit,
        };
        // Never full: the channel holds as many deliveries as there are permits.
        self.deliveries
            .try_send(Delivery::new(message, Box::new(handle)))
            .is_ok()
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Rewind(ticket) => self.rewind(ticket, true).await,
        }
    }

    /// Seeks the ticket's partition back to its offset; a failed seek is
    /// kept for [`Driver::retry_rewinds`].
    async fn rewind(&mut self, ticket: Ticket, first: bool) {
        let consumer = self.consumer.clone();
        let topic = self.shared.topic.clone();
        // With a timeout the seek reports its outcome; it blocks, so off
        // the workers. librdkafka drops what it fetched before the seek.
        let seek = async move {
            tokio::task::spawn_blocking(move || {
                consumer.seek(
                    &topic,
                    ticket.partition,
                    Offset::Offset(ticket.offset),
                    SEEK_TIMEOUT,
                )
            })
            .await
            .unwrap_or(Err(KafkaError::Canceled))
        };
        match rewind_with(&self.shared.tracker, ticket, seek).await {
            Rewound::Done => {
                self.not_before.remove(&ticket.partition);
                // What was held of the partition comes again after the seek.
                self.state
                    .held
                    .retain(|(_, r)| r.partition() != ticket.partition);
                debug!(binding = %self.shared.binding, "rewound partition {} to {}", ticket.partition, ticket.offset);
            }
            Rewound::Stale => {}
            Rewound::Failed(e) => {
                if first {
                    warn!(binding = %self.shared.binding, "cannot rewind partition {} to {}, trying again; nothing after it is committed meanwhile: {e}", ticket.partition, ticket.offset);
                } else {
                    debug!(binding = %self.shared.binding, "rewinding partition {} to {} failed again: {e}", ticket.partition, ticket.offset);
                }
                self.state.failed_rewinds.push(ticket);
            }
        }
    }

    /// Tries failed rewinds again, at most every [`REWIND_RETRY`].
    async fn retry_rewinds(&mut self) {
        if self.state.failed_rewinds.is_empty()
            || self
                .state
                .last_retry
                .is_some_and(|t| t.elapsed() < REWIND_RETRY)
        {
            return;
        }
        self.state.last_retry = Some(Instant::now());
        for ticket in std::mem::take(&mut self.state.failed_rewinds) {
            self.rewind(ticket, false).await;
        }
    }

    /// Pauses every assigned partition for want of permits (see the module
    /// docs); partitions assigned meanwhile are paused by the context.
    fn pause_fetching(&mut self) {
        debug!(binding = %self.shared.binding, "every delivery unsettled for {:?}: pausing the partitions, polling on", self.pause_after);
        self.set_paused();
    }

    /// Resumes the partitions paused by [`Driver::pause_fetching`].
    fn resume(&mut self) {
        self.state.paused = false;
        self.shared.paused.store(false, Ordering::SeqCst);
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(e) = self.consumer.resume(&assignment) {
                    warn!(binding = %self.shared.binding, "resuming the partitions: {e}");
                }
            }
            Err(e) => warn!(binding = %self.shared.binding, "reading the assignment: {e}"),
        }
    }

    /// Stops fetching for good (after `cancel`): what was fetched or held
    /// is left unstored, so the group gets it again.
    fn pause(&mut self) {
        self.state.held.clear();
        self.set_paused();
    }

    fn set_paused(&mut self) {
        self.state.paused = true;
        self.shared.paused.store(true, Ordering::SeqCst);
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(e) = self.consumer.pause(&assignment) {
                    debug!(binding = %self.shared.binding, "pausing: {e}");
                }
            }
            Err(e) => debug!(binding = %self.shared.binding, "reading the assignment: {e}"),
        }
    }

    /// Assigns partitions added to the topic since the last look, from
    /// their start: they did not exist when the subscription began, so
    /// everything in them came after it (audit B7).
    async fn check_partitions(&mut self) {
        let Some(check) = self.partition_check else {
            return;
        };
        let consumer = self.consumer.clone();
        let topic = self.shared.topic.clone();
        let paused = self.state.paused;
        let shared = self.shared.clone();
        // Metadata requests block: off the workers.
        let added = tokio::task::spawn_blocking(move || -> KafkaResult<Vec<i32>> {
            let metadata = consumer.fetch_metadata(Some(&topic), check.timeout)?;
            let assigned = consumer.assignment()?;
            let added: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .filter(|p| assigned.find_partition(&topic, *p).is_none())
                .collect();
            if added.is_empty() {
                return Ok(added);
            }
            let mut list = TopicPartitionList::with_capacity(added.len());
            for &partition in &added {
                list.add_partition_offset(&topic, partition, Offset::Beginning)?;
            }
            // Tracked before any of their records can arrive.
            shared.tracker.lock().assign(added.iter().copied());
            consumer.incremental_assign(&list)?;
            if paused {
                consumer.pause(&list)?;
            }
            Ok(added)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled));
        match added {
            Ok(added) if added.is_empty() => {}
            Ok(added) => {
                info!(binding = %self.shared.binding, "partitions {added:?} added to `{}`: consuming them from their start", self.shared.topic);
            }
            Err(e) => warn!(binding = %self.shared.binding, "looking for added partitions: {e}"),
        }
    }

    /// Hands the offsets that moved to librdkafka's offset store.
    fn store(&self) {
        let moved = self.shared.tracker.lock().take_unstored();
        if moved.is_empty() {
            return;
        }
        if let Err(e) = self
            .consumer
            .store_offsets(&self.shared.offset_list(&moved))
        {
            // The partition was revoked in the meantime: its new owner
            // starts from the last commit.
            debug!(binding = %self.shared.binding, "storing offsets {moved:?}: {e}");
        }
    }

    fn consumer_error(&self, error: &KafkaError) {
        // Connection errors also reach the context, which tracks health;
        // librdkafka keeps reconnecting on its own.
        match error {
            KafkaError::PartitionEOF(_) => {}
            KafkaError::MessageConsumptionFatal(_) => {
                self.consumer.context().client.reporter.down(error);
                warn!(binding = %self.shared.binding, "fatal consumer error: {error}");
            }
            _ => debug!(binding = %self.shared.binding, "consumer error: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn failing_seek() -> impl Future<Output = KafkaResult<()>> {
        std::future::ready(Err(KafkaError::Seek("Local: Erroneous state".into())))
    }

    #[tokio::test]
    async fn b01_a_failed_seek_keeps_the_records_and_nothing_is_committed_past_them() {
        let tracker = Mutex::new(OffsetTracker::default());
        tracker.lock().assign([0]);
        let tickets: Vec<Ticket> = (0..4).map(|o| tracker.lock().track(0, o)).collect();
        tracker.lock().settle(tickets[0]);
        // Offset 1 is nacked with requeue, and the seek fails.
        let rewound = rewind_with(&tracker, tickets[1], failing_seek()).await;
        assert!(matches!(rewound, Rewound::Failed(_)), "{rewound:?}");
        // Fetching went on past the position: later records are tracked
        // and settled, yet the nacked record holds the committable offset.
        for ticket in &tickets[2..] {
            tracker.lock().settle(*ticket);
        }
        let next = tracker.lock().track(0, 4);
        tracker.lock().settle(next);
        assert_eq!(
            tracker.lock().take_unstored(),
            [(0, 1)],
            "nothing past the nacked record"
        );
        // The retry succeeds: now the record and what follows are forgotten,
        // to be delivered again.
        let rewound = rewind_with(&tracker, tickets[1], std::future::ready(Ok(()))).await;
        assert!(matches!(rewound, Rewound::Done), "{rewound:?}");
        let again = tracker.lock().track(0, 1);
        tracker.lock().settle(again);
        assert_eq!(tracker.lock().committable(), [(0, 2)]);
    }

    #[test]
    fn b06_fetching_pauses_well_within_max_poll_interval() {
        let secs = Duration::from_secs;
        assert_eq!(pause_after(secs(300)), secs(5), "librdkafka's default");
        assert_eq!(pause_after(secs(20)), secs(2));
        assert_eq!(
            pause_after(Duration::from_millis(1000)),
            Duration::from_millis(500)
        );
    }

    #[tokio::test]
    async fn a_stale_rewind_does_not_seek() {
        let tracker = Mutex::new(OffsetTracker::default());
        tracker.lock().assign([0]);
        let ticket = tracker.lock().track(0, 0);
        tracker.lock().settle(ticket);
        let sought = AtomicBool::new(false);
        let seek = async {
            sought.store(true, Ordering::SeqCst);
            Ok(())
        };
        assert!(matches!(
            rewind_with(&tracker, ticket, seek).await,
            Rewound::Stale
        ));
        assert!(
            !sought.load(Ordering::SeqCst),
            "a settled record is not sought"
        );
    }
}
