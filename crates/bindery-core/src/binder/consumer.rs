//! The consumer side of the contract: a stream of deliveries, each settled
//! once through its acknowledger.

use std::fmt;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::BinderError;
use crate::message::{DeliveryId, DeliveryInfo, Headers, Message};

/// A stream of deliveries from one consumer binding.
#[async_trait]
pub trait Consumer: Send + 'static {
    /// The next delivery; `None` once the consumer was cancelled. A binder
    /// that loses its connection keeps waiting and reconnects rather than
    /// ending the stream. Must be cancel-safe: the runtime polls it in
    /// `select!`, and dropping the future must lose no message.
    async fn recv(&mut self) -> Option<Delivery>;

    /// A delivery that is ready now, without waiting; `None` when there is
    /// none (or the binder does not buffer). The runtime calls it before
    /// [`recv`](Self::recv) to skip a wake-up per message.
    fn try_recv(&mut self) -> Option<Delivery> {
        None
    }

    /// Stops new deliveries. Deliveries already handed out can still be
    /// acknowledged until the consumer is dropped; dropping it gives every
    /// unacknowledged one back to the group.
    async fn cancel(&mut self) -> Result<(), BinderError>;
}

/// One consumed message and the means to settle it with the broker.
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    acknowledger: Acknowledger,
}

impl Delivery {
    /// A delivery of `message`, settled through `handle`. Its facts (the
    /// handle's id, whether it was redelivered) are taken once, here, as a
    /// [`DeliveryInfo`]: functions read them as data, and the acknowledger
    /// stays with the runtime.
    pub fn new(message: Message, handle: Box<dyn DeliveryHandle>) -> Self {
        let info = DeliveryInfo::new(handle.id(), handle.redelivered());
        Self {
            message,
            acknowledger: Acknowledger { handle, info },
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The delivery's facts.
    pub fn info(&self) -> &DeliveryInfo {
        self.acknowledger.info()
    }

    /// The broker's identity of this delivery, for logs.
    pub fn id(&self) -> DeliveryId {
        self.acknowledger.id()
    }

    /// Splits into the message and its acknowledger.
    pub fn into_parts(self) -> (Message, Acknowledger) {
        (self.message, self.acknowledger)
    }

    /// Acknowledges: the broker may forget the message.
    pub async fn ack(self) -> Result<(), BinderError> {
        self.acknowledger.ack().await
    }

    /// Rejects: with `requeue` the message goes back to its group, without
    /// it the broker drops it (or dead-letters it, where the broker does).
    pub async fn nack(self, requeue: bool) -> Result<(), BinderError> {
        self.acknowledger.nack(requeue).await
    }
}

/// Settles one delivery. Dropping it unsettled leaves the message
/// unacknowledged until its consumer goes away.
pub struct Acknowledger {
    handle: Box<dyn DeliveryHandle>,
    info: DeliveryInfo,
}

impl Acknowledger {
    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), BinderError> {
        let mut handle = self.handle;
        match handle.ack_now() {
            Some(settled) => settled,
            None => handle.ack().await,
        }
    }

    /// Rejects the delivery, requeueing it or not.
    pub async fn nack(self, requeue: bool) -> Result<(), BinderError> {
        self.handle.nack(requeue).await
    }

    /// The delivery's facts, taken when it was made.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    /// The broker's identity of this delivery, for logs.
    pub fn id(&self) -> DeliveryId {
        self.info.id.clone()
    }

    /// Whether the broker delivered the message before.
    pub fn redelivered(&self) -> bool {
        self.info.redelivered
    }

    /// Adds the broker-specific headers a dead letter carries.
    pub fn dead_letter_headers(&self, headers: &mut Headers) {
        self.handle.dead_letter_headers(headers);
    }

    /// Whether `nack(false)` hands this delivery to the broker's own
    /// dead-lettering (a RabbitMQ queue with a dead-letter exchange), so
    /// rejecting it parks the message rather than dropping it.
    pub fn broker_dead_letters(&self) -> bool {
        self.handle.broker_dead_letters()
    }
}

impl fmt::Debug for Acknowledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Acknowledger").field(&self.info.id).finish()
    }
}

/// The binder's side of an [`Acknowledger`].
pub trait DeliveryHandle: Send + Sync + 'static {
    /// Acknowledges the delivery.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>>;

    /// Rejects the delivery, requeueing it or not.
    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>>;

    /// Acknowledges at once when that needs no waiting, sparing the boxed
    /// future of [`ack`](Self::ack) on the hot path. `None`: not done; the
    /// runtime then calls `ack`. After `Some` the handle is dropped with no
    /// further call, so dropping it must not settle the delivery again.
    /// Default: `None`.
    fn ack_now(&mut self) -> Option<Result<(), BinderError>> {
        None
    }

    /// The broker's identity of this delivery (a sequence, a delivery tag,
    /// a partition and offset). Called once per delivery: make it cheap.
    fn id(&self) -> DeliveryId;

    /// Whether the broker delivered the message before.
    fn redelivered(&self) -> bool {
        false
    }

    /// Adds broker-specific headers to a dead letter made from this delivery
    /// (`x-original-exchange`, `x-original-partition`, ...).
    fn dead_letter_headers(&self, headers: &mut Headers) {
        let _ = headers;
    }

    /// Whether `nack(false)` routes this delivery to a dead-letter
    /// destination kept by the broker itself (RabbitMQ's `x-dead-letter-exchange`).
    /// The runtime falls back to it when its own dead-letter publish keeps
    /// failing. Default: false (a reject drops or commits the message).
    fn broker_dead_letters(&self) -> bool {
        false
    }
}
