//! Settling one consumed record.
//!
//! An ack marks the record settled in the [`OffsetTracker`]; its offset is
//! stored (and then committed by librdkafka) once every earlier record of
//! the partition is settled too. A nack without requeue settles as well:
//! the runtime dead-lettered or dropped the message already. A nack with
//! requeue rewinds the partition to the record — Kafka cannot requeue one
//! message, so the records after it come again too.
//!
//! [`OffsetTracker`]: super::tracker::OffsetTracker

use std::sync::Arc;

use bindery_core::binder::DeliveryHandle;
use bindery_core::error::BinderError;
use bindery_core::message::{DeliveryId, Headers};
use futures::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

use super::tracker::{Settled, Ticket};
use super::{Command, Shared};
use crate::mapping::Origin;

/// The binder's handle of one delivery. It holds one prefetch permit,
/// given back when the delivery is settled or dropped.
pub(crate) struct KafkaDelivery {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ticket: Ticket,
    pub(crate) origin: Origin,
    pub(crate) permit: OwnedSemaphorePermit,
}

impl KafkaDelivery {
    fn settle(self) -> Result<(), BinderError> {
        let settled = self.mark_settled();
        drop(self.permit);
        settled
    }

    /// Settles the record in the tracker; the permit goes with the handle.
    fn mark_settled(&self) -> Result<(), BinderError> {
        match self.shared.tracker.lock().settle(self.ticket) {
            Settled::Moved | Settled::Waiting | Settled::Superseded => Ok(()),
            Settled::Revoked => Err(BinderError::closed(format!(
                "partition {} of topic `{}` was revoked from this consumer (or it closed); offset {} will be delivered again",
                self.ticket.partition, self.origin.topic, self.ticket.offset
            ))),
        }
    }
}

impl DeliveryHandle for KafkaDelivery {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        Box::pin(std::future::ready(self.settle()))
    }

    fn ack_now(&mut self) -> Option<Result<(), BinderError>> {
        // Settling is bookkeeping under a lock: nothing to wait for.
        Some(self.mark_settled())
    }

    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        if !requeue {
            return self.ack();
        }
        // The driver rewinds: it is the one polling, so no record fetched
        // before the seek can slip through after it.
        let this = *self;
        let _ = this.shared.commands.send(Command::Rewind(this.ticket));
        drop(this.permit);
        Box::pin(std::future::ready(Ok(())))
    }

    fn id(&self) -> DeliveryId {
        DeliveryId::in_partition(
            self.origin.topic.as_str().into(),
            self.origin.partition,
            self.origin.offset,
        )
    }

    fn dead_letter_headers(&self, headers: &mut Headers) {
        self.origin.dead_letter_headers(headers);
    }
}
