//! The binder contract: what a broker integration provides.
//!
//! A binder binds *consumers* (a destination, a group or none) that hand out
//! [`Delivery`]s to acknowledge, and *producers* whose sends complete in two
//! steps: [`Producer::send`] returns once the message is handed to the client
//! in order, and the returned [`Confirmation`] completes when the broker has
//! it (a publisher confirm on RabbitMQ, a delivery report on Kafka). Splitting
//! the two lets the runtime keep many confirms in flight while preserving
//! publish order.
//!
//! Retry, dead-lettering and concurrency live in the runtime, once for all
//! binders; a binder only names and provisions its dead-letter destination
//! and adds its broker-specific dead-letter headers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::BinderError;
use crate::message::{Headers, Message};
use crate::routing::RoutingPattern;

/// A broker integration: binds consumers and producers to destinations.
#[async_trait]
pub trait Binder: Send + Sync + fmt::Debug + 'static {
    /// The `type` this binder registers, such as `memory` or `rabbitmq`.
    fn binder_type(&self) -> &'static str;

    /// What this binder can do; see [`Capabilities`].
    fn capabilities(&self) -> Capabilities;

    /// Binds a consumer to `spec.destination` in `spec.group` (or an
    /// anonymous subscription), provisioning what it needs. Returns once the
    /// subscription is in effect: a message sent after this returns reaches
    /// the consumer (or its group).
    async fn bind_consumer(&self, spec: &ConsumerSpec) -> Result<Box<dyn Consumer>, BinderError>;

    /// Binds a producer to `spec.destination`, provisioning it and any
    /// `required-groups`.
    async fn bind_producer(&self, spec: &ProducerSpec) -> Result<Arc<dyn Producer>, BinderError>;

    /// The name of the dead-letter destination for a consumer binding,
    /// following the broker's Spring Cloud Stream convention.
    fn dead_letter_destination(&self, spec: &ConsumerSpec) -> String;

    /// Provisions the dead-letter destination of `spec` and binds a producer
    /// that publishes to it.
    async fn bind_dead_letter_producer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<Arc<dyn Producer>, BinderError>;

    /// Binds a consumer that reads the dead letters of `spec` (for redrive
    /// and for tests).
    async fn bind_dead_letter_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<Box<dyn Consumer>, BinderError>;

    /// Binds a producer that puts messages back in front of the group of
    /// `spec` (redrive). Where the broker cannot address one group, this
    /// publishes to the destination and [`Capabilities::group_redrive`] is false.
    async fn bind_redrive_producer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<Arc<dyn Producer>, BinderError>;

    /// Whether the binder is connected.
    fn health(&self) -> Health {
        Health::Up
    }

    /// Flushes producers and closes connections. Not final: a binder
    /// shared by several apps may be used again and then reconnects.
    async fn shutdown(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// Real differences between brokers, declared rather than hidden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// A nack with requeue returns just that message to its queue. Kafka
    /// cannot: it can only rewind a partition.
    pub requeue_single: bool,
    /// A free consumer takes the next message (fair dispatch with prefetch
    /// 1). On Kafka work is split by partition, not by speed.
    pub fair_dispatch: bool,
    /// Redrive can put dead letters back in front of one group only. On
    /// Kafka they are republished to the topic and every group sees them.
    pub group_redrive: bool,
}

impl Capabilities {
    /// Every capability (RabbitMQ, memory).
    pub const fn all() -> Self {
        Self {
            requeue_single: true,
            fair_dispatch: true,
            group_redrive: true,
        }
    }

    /// What a partitioned log such as Kafka offers.
    pub const fn partitioned_log() -> Self {
        Self {
            requeue_single: false,
            fair_dispatch: false,
            group_redrive: false,
        }
    }
}

/// Connection state reported by a binder.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Connected and working.
    Up,
    /// Not connected; the binder is trying to reconnect.
    Down(String),
}

impl Health {
    /// Whether the binder is up.
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }
}

/// What a consumer binding asks of the binder.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerSpec {
    /// The binding's name, for logs (`enrich-in-0`).
    pub binding: String,
    /// The destination (exchange, topic, channel).
    pub destination: String,
    /// The consumer group; `None` is an anonymous, non-durable subscription.
    pub group: Option<String>,
    /// At most this many unacknowledged deliveries at once.
    pub prefetch: usize,
    /// How many messages the runtime processes in parallel.
    pub concurrency: usize,
    /// Only messages whose routing key matches one of these are delivered.
    pub routing_keys: Vec<RoutingPattern>,
    /// Whether failed messages go to a dead-letter destination.
    pub dead_letter: bool,
    /// The binder-specific section `[bindings.X.<type>]`, already validated.
    pub options: serde_json::Value,
}

impl ConsumerSpec {
    /// A spec with defaults: anonymous, prefetch 16, concurrency 1, every
    /// routing key, no dead letters, no binder options.
    pub fn new(binding: impl Into<String>, destination: impl Into<String>) -> Self {
        Self {
            binding: binding.into(),
            destination: destination.into(),
            group: None,
            prefetch: 16,
            concurrency: 1,
            routing_keys: vec![RoutingPattern::any()],
            dead_letter: false,
            options: serde_json::Value::Null,
        }
    }

    /// Sets the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the prefetch bound.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Sets the concurrency.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets the routing-key patterns.
    pub fn routing_keys<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.routing_keys = patterns
            .into_iter()
            .map(|p| RoutingPattern::new(p.as_ref()))
            .collect();
        self
    }

    /// Turns dead-lettering on or off.
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// Sets the binder-specific options.
    pub fn options(mut self, options: serde_json::Value) -> Self {
        self.options = options;
        self
    }
}

/// What a producer binding asks of the binder.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerSpec {
    /// The binding's name, for logs (`enrich-out-0`).
    pub binding: String,
    /// The destination.
    pub destination: String,
    /// Groups to provision now so that messages sent before their consumers
    /// start are kept.
    pub required_groups: Vec<String>,
    /// The number of partitions the producer expects (Kafka).
    pub partition_count: usize,
    /// The binder-specific section `[bindings.X.<type>]`, already validated.
    pub options: serde_json::Value,
}

impl ProducerSpec {
    /// A spec with defaults: no required groups, one partition.
    pub fn new(binding: impl Into<String>, destination: impl Into<String>) -> Self {
        Self {
            binding: binding.into(),
            destination: destination.into(),
            required_groups: Vec::new(),
            partition_count: 1,
            options: serde_json::Value::Null,
        }
    }

    /// Sets the required groups.
    pub fn required_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the binder-specific options.
    pub fn options(mut self, options: serde_json::Value) -> Self {
        self.options = options;
        self
    }

    /// Sets the partition count.
    pub fn partition_count(mut self, count: usize) -> Self {
        self.partition_count = count.max(1);
        self
    }
}

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

/// Sends messages to one destination.
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    /// Hands `message` to the broker client. Returns once the message is
    /// queued for sending, so calls made one after another are published in
    /// that order; await the [`Confirmation`] to know the broker has it.
    /// Waits while the client's buffers are full (back-pressure).
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError>;

    /// Waits until every message sent so far is confirmed or failed.
    async fn flush(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// Completes when the broker has confirmed a sent message.
#[must_use = "a send is confirmed only once its Confirmation completes"]
pub struct Confirmation(ConfirmationState);

enum ConfirmationState {
    Ready(Option<Result<(), BinderError>>),
    Pending(BoxFuture<'static, Result<(), BinderError>>),
}

impl Confirmation {
    /// Already confirmed (the message is in the broker's hands).
    pub fn confirmed() -> Self {
        Self(ConfirmationState::Ready(Some(Ok(()))))
    }

    /// Already failed.
    pub fn failed(error: BinderError) -> Self {
        Self(ConfirmationState::Ready(Some(Err(error))))
    }

    /// Confirmed when `future` completes.
    pub fn pending(future: impl Future<Output = Result<(), BinderError>> + Send + 'static) -> Self {
        Self(ConfirmationState::Pending(Box::pin(future)))
    }
}

impl Future for Confirmation {
    type Output = Result<(), BinderError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            ConfirmationState::Ready(result) => {
                Poll::Ready(result.take().expect("Confirmation polled after completion"))
            }
            ConfirmationState::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            ConfirmationState::Ready(_) => "ready",
            ConfirmationState::Pending(_) => "pending",
        };
        f.debug_tuple("Confirmation").field(&state).finish()
    }
}

/// One consumed message and the means to settle it with the broker.
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    acknowledger: Acknowledger,
}

impl Delivery {
    /// A delivery of `message`, settled through `handle`.
    pub fn new(message: Message, handle: Box<dyn DeliveryHandle>) -> Self {
        Self {
            message,
            acknowledger: Acknowledger(handle),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The broker's identity of this delivery, for logs.
    pub fn id(&self) -> String {
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
pub struct Acknowledger(Box<dyn DeliveryHandle>);

impl Acknowledger {
    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), BinderError> {
        self.0.ack().await
    }

    /// Rejects the delivery, requeueing it or not.
    pub async fn nack(self, requeue: bool) -> Result<(), BinderError> {
        self.0.nack(requeue).await
    }

    /// The broker's identity of this delivery, for logs.
    pub fn id(&self) -> String {
        self.0.id()
    }

    /// Whether the broker delivered the message before.
    pub fn redelivered(&self) -> bool {
        self.0.redelivered()
    }

    /// Adds the broker-specific headers a dead letter carries.
    pub fn dead_letter_headers(&self, headers: &mut Headers) {
        self.0.dead_letter_headers(headers);
    }

    /// Whether `nack(false)` hands this delivery to the broker's own
    /// dead-lettering (a RabbitMQ queue with a dead-letter exchange), so
    /// rejecting it parks the message rather than dropping it.
    pub fn broker_dead_letters(&self) -> bool {
        self.0.broker_dead_letters()
    }
}

impl fmt::Debug for Acknowledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Acknowledger").field(&self.0.id()).finish()
    }
}

/// The binder's side of an [`Acknowledger`].
pub trait DeliveryHandle: Send + Sync + 'static {
    /// Acknowledges the delivery.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>>;

    /// Rejects the delivery, requeueing it or not.
    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>>;

    /// The broker's identity of this delivery (a sequence, delivery tag or
    /// `topic/partition@offset`), for logs.
    fn id(&self) -> String;

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
