//! Consumers: a task per consumer owns its channel, re-subscribes when the
//! channel, the connection or the consumer itself (a deleted queue) goes
//! away, and hands deliveries over a channel, which makes
//! [`Consumer::recv`] cancel-safe and lets it wait across reconnects.
//!
//! The broker sends at most `prefetch` unacknowledged messages
//! (`basic.qos`), so the hand-over buffer never holds more. Dropping the
//! consumer ends the task, which closes the channel: the broker requeues
//! whatever was not acknowledged. While the buffer is full the task still
//! answers [`Consumer::cancel`] and notices a dropped consumer; a
//! delivery waiting for room when its channel dies is dropped (the broker
//! redelivers it).
//!
//! `basic.qos` counts per consumer, so after the broker cancels the
//! consumer (a deleted queue) the task subscribes again on the same
//! channel only once every delivery of the old consumer is settled: the
//! two never hold more than `prefetch` between them. A subscription that
//! fails for a reason other than a lost connection (the queue declared
//! again with other arguments) makes the binder's health down, naming the
//! queue, until it succeeds.
//!
//! A nack with requeue hands the delivery back in front of this consumer
//! rather than to the broker: the message stays unacknowledged on its
//! channel (so still counted by prefetch, and requeued by the broker if
//! the consumer goes away) and is received again before anything newer,
//! which keeps the order a broker-side requeue would break (the broker
//! has usually pushed later messages already).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Consumer, Delivery, DeliveryHandle};
use bindery_core::error::BinderError;
use bindery_core::message::{DeliveryId, Headers, Message};
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Channel};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::connection::{Connector, Patience, unless_lost};
use crate::error::{RabbitError, Result};
use crate::mapping;
use crate::topology::{Topology, short};

/// Dead-letter header: the exchange a message was consumed from.
pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
/// Dead-letter header: the routing key a message was consumed with.
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routingKey";

/// What a consumer subscribes to, kept to subscribe again.
pub(crate) struct Subscription {
    pub(crate) binding: String,
    pub(crate) connector: Arc<Connector>,
    pub(crate) topology: Topology,
    pub(crate) queue: Arc<str>,
    pub(crate) prefetch: u16,
    /// Pause between failed subscriptions while the connection is up.
    pub(crate) retry_pause: Duration,
    /// Whether the queue was declared with a dead-letter exchange, so a
    /// reject without requeue dead-letters on the broker.
    pub(crate) dead_lettering: bool,
    /// Where a subscription that keeps failing reports itself.
    pub(crate) stuck: Arc<Stuck>,
}

/// Consumers that cannot subscribe for a reason other than a lost
/// connection, by consumer, with the reason: the binder is down while
/// any is.
#[derive(Debug, Default)]
pub(crate) struct Stuck(Mutex<BTreeMap<u64, String>>);

impl Stuck {
    fn set(&self, consumer: u64, reason: String) {
        self.0.lock().insert(consumer, reason);
    }

    fn clear(&self, consumer: u64) {
        self.0.lock().remove(&consumer);
    }

    /// Every reason, or none while all consumers are subscribed.
    pub(crate) fn reasons(&self) -> Option<String> {
        let stuck = self.0.lock();
        if stuck.is_empty() {
            return None;
        }
        Some(stuck.values().cloned().collect::<Vec<_>>().join("; "))
    }
}

/// A live subscription: its channel, lapin's consumer, and how many of
/// its deliveries are not settled yet.
struct Session {
    channel: Channel,
    consumer: lapin::Consumer,
    unsettled: Arc<watch::Sender<usize>>,
}

/// Counts one unsettled delivery of a session until dropped (settled,
/// skipped, or dropped unsettled).
struct Held(Arc<watch::Sender<usize>>);

impl Held {
    fn new(unsettled: &Arc<watch::Sender<usize>>) -> Self {
        unsettled.send_modify(|n| *n += 1);
        Self(unsettled.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Subscription {
    async fn open(&self, patience: Patience) -> Result<Session> {
        let connection = self.connector.live(patience).await?;
        let channel = unless_lost(
            || connection.status().connected(),
            connection.create_channel(),
        )
        .await
        .map_err(|e| RabbitError::channel("opening a channel", e))?;
        let open = || channel.status().connected();
        unless_lost(
            open,
            channel.basic_qos(self.prefetch, BasicQosOptions::default()),
        )
        .await
        .map_err(|e| RabbitError::channel("setting the prefetch (basic.qos)", e))?;
        self.consume_on(channel).await
    }

    /// Declares the topology and consumes on `channel`.
    async fn consume_on(&self, channel: Channel) -> Result<Session> {
        self.topology.declare(&channel).await?;
        let consuming = channel.basic_consume(
            short("queue", &self.queue)?,
            consumer_tag(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let consumer = unless_lost(|| channel.status().connected(), consuming)
            .await
            .map_err(|e| {
                RabbitError::channel(format!("consuming from queue `{}`", self.queue), e)
            })?;
        Ok(Session {
            channel,
            consumer,
            unsettled: Arc::new(watch::Sender::new(0)),
        })
    }

    fn incoming(
        &self,
        delivery: lapin::message::Delivery,
        unsettled: &Arc<watch::Sender<usize>>,
        requeue: &mpsc::UnboundedSender<Incoming>,
    ) -> Incoming {
        let message = mapping::incoming(delivery.data, &delivery.properties, &delivery.routing_key);
        let handle = RabbitDelivery {
            acker: delivery.acker,
            queue: self.queue.clone(),
            tag: delivery.delivery_tag,
            redelivered: delivery.redelivered,
            exchange: delivery.exchange,
            routing_key: delivery.routing_key,
            dead_lettering: self.dead_lettering,
            held: Some(Held::new(unsettled)),
            requeue: Some((message.clone(), requeue.clone())),
        };
        Incoming { message, handle }
    }
}

/// A unique consumer tag, so the channel can cancel exactly this one.
fn consumer_tag() -> ShortString {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "bindery-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
    .into()
}

/// A delivery on its way to [`Consumer::recv`].
struct Incoming {
    message: Message,
    handle: RabbitDelivery,
}

enum Control {
    Cancel(oneshot::Sender<()>),
}

/// A consumer of the RabbitMQ binder.
pub(crate) struct RabbitConsumer {
    deliveries: mpsc::Receiver<Incoming>,
    redeliveries: mpsc::UnboundedReceiver<Incoming>,
    control: mpsc::Sender<Control>,
    cancelled: bool,
    dropped: Arc<AtomicBool>,
}

impl RabbitConsumer {
    /// Subscribes now (one attempt, so binding errors surface), then keeps
    /// the subscription alive in a task.
    pub(crate) async fn start(subscription: Subscription) -> Result<(Self, ConsumerTask)> {
        let session = subscription.open(Patience::Once).await?;
        let buffer = usize::from(subscription.prefetch.max(1));
        let (deliveries_tx, deliveries) = mpsc::channel(buffer);
        let (redeliveries_tx, redeliveries) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::channel(1);
        let task = tokio::spawn(run(
            Arc::new(subscription),
            session,
            deliveries_tx,
            redeliveries_tx,
            control_rx,
        ));
        let dropped = Arc::new(AtomicBool::new(false));
        let consumer = Self {
            deliveries,
            redeliveries,
            control,
            cancelled: false,
            dropped: dropped.clone(),
        };
        Ok((consumer, ConsumerTask { task, dropped }))
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
    }
}

/// A consumer's task, as the binder sees it: at shutdown it waits for the
/// tasks of dropped consumers to close their channels before it closes
/// the connection (lapin logs an error for a connection closed under a
/// closing channel).
#[derive(Debug)]
pub(crate) struct ConsumerTask {
    task: tokio::task::JoinHandle<()>,
    dropped: Arc<AtomicBool>,
}

impl ConsumerTask {
    /// Whether the task is over.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Whether its consumer was dropped, so the task is ending.
    pub(crate) fn is_ending(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// Waits for the task to end.
    pub(crate) async fn join(self) {
        let _ = self.task.await;
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        loop {
            if self.cancelled {
                return None;
            }
            // Both receives are cancel-safe, so this is too.
            let incoming = tokio::select! {
                biased;
                Some(incoming) = self.redeliveries.recv() => incoming,
                incoming = self.deliveries.recv() => incoming?,
            };
            // Its channel died on the way here: acknowledging it would
            // fail, and the broker redelivers it anyway.
            if incoming.handle.acker.poisoned() {
                continue;
            }
            return Some(Delivery::new(incoming.message, Box::new(incoming.handle)));
        }
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        if std::mem::replace(&mut self.cancelled, true) {
            return Ok(());
        }
        let (done, cancelled) = oneshot::channel();
        if self.control.send(Control::Cancel(done)).await.is_ok() {
            let _ = cancelled.await;
        }
        Ok(())
    }
}

/// Where a consumer's task stands.
enum State {
    Live(Session),
    /// The broker cancelled the consumer; the channel still works and
    /// holds deliveries of the old consumer not settled yet.
    Draining {
        channel: Channel,
        unsettled: Arc<watch::Sender<usize>>,
    },
    /// No channel: subscribe again.
    Gone,
}

/// Keeps a subscription alive until the consumer is dropped.
async fn run(
    subscription: Arc<Subscription>,
    session: Session,
    deliveries: mpsc::Sender<Incoming>,
    redeliveries: mpsc::UnboundedSender<Incoming>,
    mut control: mpsc::Receiver<Control>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let queue = subscription.queue.clone();
    let binding = &subscription.binding;
    let mut state = State::Live(session);
    // A delivery taken from lapin, waiting for room in the hand-over
    // buffer.
    let mut waiting: Option<Incoming> = None;
    // lapin may miss telling a consumer that its connection died (see
    // `unless_lost`); a look now and then catches that.
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match &mut state {
            State::Gone => {
                waiting = None;
                let opened = tokio::select! {
                    () = deliveries.closed() => break,
                    Some(Control::Cancel(done)) = control.recv() => {
                        // Nothing consumes while disconnected.
                        let _ = done.send(());
                        deliveries.closed().await;
                        break;
                    }
                    opened = subscription.open(Patience::Forever) => opened,
                };
                match opened {
                    Ok(opened) => {
                        info!(binding = %binding, queue = %queue, "consuming again");
                        subscription.stuck.clear(id);
                        state = State::Live(opened);
                    }
                    Err(error) => {
                        if !error.is_transient() {
                            subscription.stuck.set(
                                id,
                                format!(
                                    "the consumer of queue `{queue}` cannot subscribe: {error}"
                                ),
                            );
                        }
                        error!(binding = %binding, queue = %queue, "cannot consume, trying again in {:?}: {error}", subscription.retry_pause);
                        tokio::select! {
                            () = deliveries.closed() => break,
                            () = tokio::time::sleep(subscription.retry_pause) => {}
                        }
                    }
                }
            }
            State::Draining { channel, unsettled } => {
                let mut settled = unsettled.subscribe();
                tokio::select! {
                    () = deliveries.closed() => break,
                    Some(Control::Cancel(done)) = control.recv() => {
                        let _ = done.send(());
                        deliveries.closed().await;
                        break;
                    }
                    _ = check.tick() => {
                        if !channel.status().connected() {
                            warn!(binding = %binding, queue = %queue, "the consumer's channel was closed, subscribing again");
                            state = State::Gone;
                        }
                    }
                    // The `Ref` is not `Send`: drop it before the arm runs.
                    _ = async { settled.wait_for(|n| *n == 0).await.map(|_| ()) } => {
                        let channel = channel.clone();
                        match subscription.consume_on(channel).await {
                            Ok(again) => {
                                info!(binding = %binding, queue = %queue, "consuming again");
                                subscription.stuck.clear(id);
                                state = State::Live(again);
                            }
                            Err(error) => {
                                warn!(binding = %binding, queue = %queue, "subscribing on the same channel failed: {error}");
                                if !error.is_transient() {
                                    subscription.stuck.set(
                                        id,
                                        format!("the consumer of queue `{queue}` cannot subscribe: {error}"),
                                    );
                                }
                                state = State::Gone;
                            }
                        }
                    }
                }
            }
            State::Live(current) => {
                tokio::select! {
                    biased;
                    () = deliveries.closed() => break,
                    command = control.recv() => {
                        if let Some(Control::Cancel(done)) = command {
                            let tag = current.consumer.tag();
                            let channel = &current.channel;
                            let cancelling = channel.basic_cancel(tag, BasicCancelOptions::default());
                            if let Err(error) = unless_lost(|| channel.status().connected(), cancelling).await {
                                warn!(binding = %binding, queue = %queue, "basic.cancel failed: {error}");
                            }
                            let _ = done.send(());
                        }
                        // Not handed out: the broker requeues it when the
                        // channel closes.
                        waiting = None;
                        // Deliveries handed out stay acknowledgeable until the
                        // consumer is dropped.
                        deliveries.closed().await;
                        break;
                    }
                    _ = check.tick() => {
                        if !current.channel.status().connected() {
                            warn!(binding = %binding, queue = %queue, "the consumer's channel is no longer open, subscribing again");
                            state = State::Gone;
                        }
                    }
                    permit = deliveries.reserve(), if waiting.is_some() => match permit {
                        Ok(permit) => permit.send(waiting.take().expect("guarded")),
                        Err(_) => break,
                    },
                    next = current.consumer.next(), if waiting.is_none() => match next {
                        Some(Ok(delivery)) => {
                            waiting = Some(subscription.incoming(delivery, &current.unsettled, &redeliveries));
                        }
                        Some(Err(error)) => {
                            warn!(binding = %binding, queue = %queue, "the consumer's channel was lost, subscribing again: {error}");
                            state = State::Gone;
                        }
                        None => {
                            if !current.channel.status().connected() {
                                warn!(binding = %binding, queue = %queue, "the consumer's channel was closed, subscribing again");
                                state = State::Gone;
                            } else {
                                // Keep the channel: deliveries handed out on
                                // it stay acknowledgeable.
                                warn!(binding = %binding, queue = %queue, "the broker cancelled the consumer (queue deleted?); declaring and subscribing again once its deliveries are settled");
                                state = State::Draining {
                                    channel: current.channel.clone(),
                                    unsettled: current.unsettled.clone(),
                                };
                            }
                        }
                    },
                }
            }
        }
    }
    subscription.stuck.clear(id);
    drop(waiting);
    let channel = match state {
        State::Live(session) => Some(session.channel),
        State::Draining { channel, .. } => Some(channel),
        State::Gone => None,
    };
    if let Some(channel) = channel {
        // Closing hands every unacknowledged delivery back to the queue.
        let closing = channel.close(200, "consumer dropped".into());
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
}

/// Settles one delivery through lapin's acker.
struct RabbitDelivery {
    acker: Acker,
    queue: Arc<str>,
    tag: u64,
    redelivered: bool,
    exchange: ShortString,
    routing_key: ShortString,
    /// Whether the queue dead-letters rejected messages itself.
    dead_lettering: bool,
    /// Counts this delivery as unsettled on its session until dropped.
    held: Option<Held>,
    /// The message and the way back to the consumer, for a nack with
    /// requeue.
    requeue: Option<(Message, mpsc::UnboundedSender<Incoming>)>,
}

impl RabbitDelivery {
    fn gone(&self) -> BinderError {
        RabbitError::ChannelGone {
            id: self.id().to_string(),
        }
        .into()
    }

    fn settled(&self, done: lapin::Result<bool>, action: &str) -> Result<(), BinderError> {
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.gone()),
            Err(error) => Err(RabbitError::channel(
                format!("{action} of delivery {}", self.id()),
                error,
            )
            .into()),
        }
    }
}

impl DeliveryHandle for RabbitDelivery {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        Box::pin(async move {
            // lapin completes an ack whose command never runs (channel
            // gone), so no guard is needed here.
            let done = self.acker.ack(BasicAckOptions::default()).await;
            self.settled(done, "ack")
        })
    }

    fn nack(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        Box::pin(async move {
            if requeue && self.acker.usable() {
                if let Some((message, consumer)) = self.requeue.take() {
                    let handle = RabbitDelivery {
                        acker: self.acker.clone(),
                        queue: self.queue.clone(),
                        tag: self.tag,
                        redelivered: true,
                        exchange: self.exchange.clone(),
                        routing_key: self.routing_key.clone(),
                        dead_lettering: self.dead_lettering,
                        held: self.held.take(),
                        requeue: Some((message.clone(), consumer.clone())),
                    };
                    if consumer.send(Incoming { message, handle }).is_ok() {
                        return Ok(());
                    }
                }
            }
            let options = BasicNackOptions {
                multiple: false,
                requeue,
            };
            let done = self.acker.nack(options).await;
            self.settled(done, "nack")
        })
    }

    fn id(&self) -> DeliveryId {
        DeliveryId::in_queue(self.queue.clone(), self.tag)
    }

    fn redelivered(&self) -> bool {
        self.redelivered
    }

    fn broker_dead_letters(&self) -> bool {
        self.dead_lettering
    }

    fn dead_letter_headers(&self, headers: &mut Headers) {
        // A redriven message comes through the default exchange (""); it
        // keeps the exchange it first came from.
        if !self.exchange.as_str().is_empty() || !headers.contains(ORIGINAL_EXCHANGE) {
            headers.insert(ORIGINAL_EXCHANGE, self.exchange.as_str().to_owned());
        }
        if !self.exchange.as_str().is_empty() || !headers.contains(ORIGINAL_ROUTING_KEY) {
            headers.insert(ORIGINAL_ROUTING_KEY, self.routing_key.as_str().to_owned());
        }
    }
}
