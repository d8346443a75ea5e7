//! The task that polls one librdkafka consumer.
//!
//! It takes a prefetch permit before each record, so at most `prefetch`
//! deliveries are unsettled at once; it serves rewinds (nack with
//! requeue) between polls, so a seek always happens before the next
//! record is taken; and every [`STORE_INTERVAL`] it hands the offsets that
//! moved to librdkafka's offset store, whose auto-commit commits them —
//! no call per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bindery_core::binder::Delivery;
use bindery_core::routing::{RoutingPattern, matches_any};
use futures::StreamExt;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::context::ConsumerCtx;
use super::delivery::KafkaDelivery;
use super::{Command, Shared};
use crate::mapping::{HeaderLimits, from_record};

/// How often settled offsets go to librdkafka's offset store.
pub(crate) const STORE_INTERVAL: Duration = Duration::from_millis(100);

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
            let mut permit: Option<OwnedSemaphorePermit> = None;
            let closed = self.closed.clone();
            let polling = self.polling.clone();
            loop {
                let cancelled = polling.is_cancelled();
                tokio::select! {
                    biased;
                    () = closed.cancelled() => break,
                    Some(command) = self.commands.recv() => self.command(command),
                    _ = store.tick() => self.store(),
                    acquired = self.permits.clone().acquire_owned(), if permit.is_none() && !cancelled => {
                        permit = acquired.ok();
                    }
                    // After `cancel` the consumer still polls, so it takes
                    // part in rebalances until dropped, but takes nothing.
                    item = stream.next(), if permit.is_some() || cancelled => match item {
                        Some(Ok(record)) if cancelled => {
                            debug!(binding = %self.shared.binding, "cancelled: leaving {}@{} to the group", record.partition(), record.offset());
                        }
                        Some(Ok(record)) => {
                            if !self.take(&record, &mut permit) {
                                break;
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
    fn take(
        &mut self,
        record: &BorrowedMessage<'_>,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> bool {
        self.consumer.context().client.reporter.up();
        let (partition, offset) = (record.partition(), record.offset());
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

    fn command(&mut self, command: Command) {
        match command {
            Command::Rewind(ticket) => {
                if !self.shared.tracker.lock().rewind(ticket) {
                    return;
                }
                self.not_before.remove(&ticket.partition);
                debug!(binding = %self.shared.binding, "rewinding partition {} to {}", ticket.partition, ticket.offset);
                // A zero timeout seeks asynchronously; librdkafka drops what
                // it fetched before the seek.
                if let Err(e) = self.consumer.seek(
                    &self.shared.topic,
                    ticket.partition,
                    Offset::Offset(ticket.offset),
                    Duration::ZERO,
                ) {
                    warn!(binding = %self.shared.binding, "cannot rewind partition {}: {e}", ticket.partition);
                }
            }
        }
    }

    /// Stops fetching (after `cancel`): what was fetched is left unstored,
    /// so the group gets it again.
    fn pause(&self) {
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(e) = self.consumer.pause(&assignment) {
                    debug!(binding = %self.shared.binding, "pausing after cancel: {e}");
                }
            }
            Err(e) => debug!(binding = %self.shared.binding, "reading the assignment: {e}"),
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
