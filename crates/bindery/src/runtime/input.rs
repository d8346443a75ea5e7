//! An input binding: takes deliveries, invokes the function under the retry
//! policy, publishes outputs, and settles each delivery once its outputs
//! (or its dead letter) are confirmed.
//!
//! Invocations within a lane run one after another, so order is kept;
//! settling runs alongside, so many confirms are in flight at once. With
//! `concurrency > 1` deliveries are spread over lanes by key, so messages
//! that share a key keep their order.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bindery_core::binder::{Acknowledger, Binder, Consumer, Delivery, Producer};
use bindery_core::codec::{Codec, DecodeError};
use bindery_core::config::InputPlan;
use bindery_core::error::{BinderError, Error, FunctionError};
use bindery_core::function::{Context, Function, Input, Outcome};
use bindery_core::message::Message;
use bindery_core::policy::{DeadLetter, RetryDecision};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::output::{Output, Pending};
use super::stats::{Counters, Event};

/// What remains to do for one delivery after its function returned:
/// await confirmations, then ack (or nack).
type Settlement = BoxFuture<'static, ()>;

/// Everything an input binding needs to process deliveries.
pub(crate) struct InputBinding {
    pub(crate) plan: InputPlan,
    pub(crate) function: Arc<dyn Function>,
    pub(crate) output: Option<Arc<Output>>,
    pub(crate) dead_letters: Option<Arc<dyn Producer>>,
    pub(crate) dead_letter_destination: String,
    pub(crate) context: Arc<Context>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: CancellationToken,
}

impl InputBinding {
    fn default_codec(&self) -> Codec {
        Codec::for_content_type(&self.plan.content_type).unwrap_or(Codec::Json)
    }

    /// The codec of `message`: its `contentType`, else the binding's.
    fn codec_of(&self, message: &Message) -> Result<Codec, FunctionError> {
        match message.content_type() {
            None => Ok(self.default_codec()),
            Some(ct) => Codec::for_content_type(ct)
                .map_err(|e| FunctionError::non_retryable(DecodeError::unsupported("payload", &e))),
        }
    }

    /// Processes one delivery through every attempt it gets. Returns the
    /// settlement to await, or `None` when shutdown interrupted a back-off
    /// (the delivery was handed back).
    ///
    /// The first attempt runs inline; retries and dead-lettering live in a
    /// boxed slow path, which keeps this future small on the hot path.
    async fn process(self: &Arc<Self>, delivery: Delivery) -> Option<Settlement> {
        self.counters.bump(Event::Received);
        let (message, acker) = delivery.into_parts();
        let codec = match self.codec_of(&message) {
            Ok(codec) => codec,
            Err(error) => return Some(Box::pin(self.give_up(message, acker, error, 1)).await),
        };
        match self.attempt(&message, &acker, codec, 1).await {
            Ok(pending) => self.settle(pending, message, acker, 1).await,
            Err(error) => Box::pin(self.retry(message, acker, codec, error)).await,
        }
    }

    /// After a failed first attempt: retries per the policy, then gives up.
    async fn retry(
        self: &Arc<Self>,
        message: Message,
        acker: Acknowledger,
        codec: Codec,
        mut error: FunctionError,
    ) -> Option<Settlement> {
        let mut attempt = 1;
        loop {
            match self.plan.retry.decide(attempt, &error) {
                RetryDecision::RetryAfter(pause) => {
                    debug!(
                        binding = %self.plan.binding,
                        id = %acker.id(),
                        attempt,
                        "attempt failed, retrying in {pause:?}: {}",
                        error.chain_text()
                    );
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => {
                            self.requeue(acker, "shutdown during back-off").await;
                            return None;
                        }
                    }
                    self.counters.bump(Event::Retried);
                    attempt += 1;
                }
                RetryDecision::Exhausted | RetryDecision::NotRetryable => {
                    return Some(self.give_up(message, acker, error, attempt).await);
                }
            }
            match self.attempt(&message, &acker, codec, attempt).await {
                Ok(pending) => return self.settle(pending, message, acker, attempt).await,
                Err(next) => error = next,
            }
        }
    }

    /// One invocation and the sending of its outputs.
    async fn attempt(
        &self,
        message: &Message,
        acker: &Acknowledger,
        codec: Codec,
        attempt: u32,
    ) -> Result<Pending, FunctionError> {
        let output_codec = self.output.as_ref().map_or(Codec::Json, |o| o.codec());
        let input = Input::new(message, codec, attempt, &self.context).with_acknowledger(acker);
        let outcome = self.function.call(&input, output_codec).await?;
        let mut pending = Pending::default();
        match &self.output {
            Some(output) => output.publish(outcome, Some(message), &mut pending).await?,
            None if !matches!(outcome, Outcome::Nothing) => {
                warn!(binding = %self.plan.binding, "the function produced a message but has no output binding; it is dropped");
            }
            None => {}
        }
        if pending.is_empty() && self.output.is_some() {
            self.counters.bump(Event::Filtered);
        }
        Ok(pending)
    }

    /// Acks once every output is confirmed. A transient failure hands the
    /// message back for redelivery; a permanent one (the broker refused or
    /// could not route an output) is a failure like any other. When every
    /// confirmation is already in, this settles inline and returns `None`.
    async fn settle(
        self: &Arc<Self>,
        mut pending: Pending,
        message: Message,
        acker: Acknowledger,
        attempts: u32,
    ) -> Option<Settlement> {
        let sent = pending.len();
        match pending.try_now() {
            Some(Ok(())) => {
                self.record_sent(sent, &Ok(()));
                self.ack(acker).await;
                None
            }
            Some(Err(error)) => {
                let result = Err(error);
                self.record_sent(sent, &result);
                let Err(error) = result else { unreachable!() };
                Some(
                    self.after_failed_confirmation(error, message, acker, attempts)
                        .await,
                )
            }
            None => {
                let this = self.clone();
                Some(Box::pin(async move {
                    let result = pending.wait().await;
                    this.record_sent(sent, &result);
                    match result {
                        Ok(()) => this.ack(acker).await,
                        Err(error) => {
                            this.after_failed_confirmation(error, message, acker, attempts)
                                .await
                                .await
                        }
                    }
                }))
            }
        }
    }

    fn record_sent(&self, sent: usize, result: &Result<(), BinderError>) {
        if let Some(output) = &self.output {
            output.record(sent, result);
        }
    }

    async fn after_failed_confirmation(
        self: &Arc<Self>,
        error: BinderError,
        message: Message,
        acker: Acknowledger,
        attempts: u32,
    ) -> Settlement {
        if error.is_transient() {
            self.requeue(acker, &format!("an output was not confirmed: {error}"))
                .await;
            Box::pin(std::future::ready(()))
        } else {
            self.give_up(
                message,
                acker,
                FunctionError::non_retryable(error),
                attempts,
            )
            .await
        }
    }

    /// After the last attempt: send to the dead-letter destination, or drop.
    async fn give_up(
        self: &Arc<Self>,
        message: Message,
        acker: Acknowledger,
        error: FunctionError,
        attempts: u32,
    ) -> Settlement {
        let binding = &self.plan.binding;
        let Some(dead_letters) = &self.dead_letters else {
            error!(
                binding = %binding,
                id = %acker.id(),
                attempts,
                "message dropped (dead-letter is off): {}",
                error.chain_text()
            );
            self.counters.bump(Event::Dropped);
            return Box::pin(async move {
                if let Err(e) = acker.nack(false).await {
                    warn!("could not reject a dropped message: {e}");
                }
            });
        };
        let spec = &self.plan.consumer;
        let dead_letter = DeadLetter {
            destination: &spec.destination,
            group: spec.group.as_deref().unwrap_or_default(),
            attempts,
        }
        .build(&message, &error, &acker);
        warn!(
            binding = %binding,
            id = %acker.id(),
            attempts,
            "sending to dead-letter destination `{}`: {}",
            self.dead_letter_destination,
            error.chain_text()
        );
        let sent = dead_letters.send(dead_letter).await;
        let this = self.clone();
        Box::pin(async move {
            let confirmed = match sent {
                Ok(confirmation) => confirmation.await,
                Err(e) => Err(e),
            };
            match confirmed {
                Ok(()) => {
                    this.counters.bump(Event::DeadLettered);
                    this.ack(acker).await;
                }
                Err(e) => {
                    this.requeue(acker, &format!("the dead letter was not confirmed: {e}"))
                        .await
                }
            }
        })
    }

    async fn ack(&self, acker: Acknowledger) {
        match acker.ack().await {
            Ok(()) => self.counters.bump(Event::Acked),
            Err(e) => {
                warn!(binding = %self.plan.binding, "ack failed; the broker will redeliver: {e}")
            }
        }
    }

    async fn requeue(&self, acker: Acknowledger, why: &str) {
        warn!(binding = %self.plan.binding, id = %acker.id(), "handing the message back for redelivery: {why}");
        self.counters.bump(Event::Requeued);
        if let Err(e) = acker.nack(true).await {
            warn!(binding = %self.plan.binding, "nack failed; the broker will redeliver: {e}");
        }
    }
}

/// Processes deliveries one at a time while settling earlier ones.
struct Lane {
    binding: Arc<InputBinding>,
    settling: FuturesUnordered<Settlement>,
}

impl Lane {
    fn new(binding: Arc<InputBinding>) -> Self {
        Self {
            binding,
            settling: FuturesUnordered::new(),
        }
    }

    async fn handle(&mut self, delivery: Delivery) {
        let processing = self.binding.process(delivery);
        tokio::pin!(processing);
        let settlement = loop {
            tokio::select! {
                settlement = &mut processing => break settlement,
                Some(()) = self.settling.next(), if !self.settling.is_empty() => {}
            }
        };
        if let Some(settlement) = settlement {
            self.settling.push(settlement);
        }
    }

    /// Completes when one settlement finishes; never while there are none.
    async fn settle_one(&mut self) {
        if self.settling.is_empty() {
            std::future::pending::<()>().await;
        }
        self.settling.next().await;
    }

    async fn drain(&mut self) {
        while self.settling.next().await.is_some() {}
    }
}

/// Runs `consumer` until shutdown, then finishes what is in flight.
pub(crate) async fn consume(
    binding: Arc<InputBinding>,
    mut consumer: Box<dyn Consumer>,
) -> Result<(), Error> {
    let shutdown = binding.shutdown.clone();
    let concurrency = binding.plan.consumer.concurrency.max(1);
    if concurrency == 1 {
        let mut lane = Lane::new(binding.clone());
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if let Some(delivery) = consumer.try_recv() {
                lane.handle(delivery).await;
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                delivery = consumer.recv() => match delivery {
                    Some(delivery) => lane.handle(delivery).await,
                    None => break,
                },
                () = lane.settle_one() => {}
            }
        }
        let _ = consumer.cancel().await;
        lane.drain().await;
    } else {
        let capacity = binding.plan.consumer.prefetch.max(1);
        let mut lanes = Vec::with_capacity(concurrency);
        let mut workers = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let (tx, rx) = mpsc::channel(capacity);
            lanes.push(tx);
            workers.push(tokio::spawn(run_lane(Lane::new(binding.clone()), rx)));
        }
        let mut next = 0usize;
        loop {
            let delivery = match consumer.try_recv() {
                Some(delivery) if !shutdown.is_cancelled() => delivery,
                _ => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    delivery = consumer.recv() => match delivery {
                        Some(delivery) => delivery,
                        None => break,
                    },
                },
            };
            let lane = match delivery.message().key() {
                Some(key) => lane_of(key, concurrency),
                None => {
                    next = (next + 1) % concurrency;
                    next
                }
            };
            if lanes[lane].send(delivery).await.is_err() {
                break;
            }
        }
        let _ = consumer.cancel().await;
        drop(lanes);
        for worker in workers {
            let _ = worker.await;
        }
    }
    // Dropping the consumer hands back anything still unacknowledged.
    drop(consumer);
    Ok(())
}

async fn run_lane(mut lane: Lane, mut deliveries: mpsc::Receiver<Delivery>) {
    loop {
        tokio::select! {
            delivery = deliveries.recv() => match delivery {
                Some(delivery) => lane.handle(delivery).await,
                None => break,
            },
            () = lane.settle_one() => {}
        }
    }
    lane.drain().await;
}

fn lane_of(key: &[u8], lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Binds what an input binding needs, in order: its output, its
/// dead-letter destination, then its consumer.
pub(crate) async fn bind_consumer(
    binder: &Arc<dyn Binder>,
    binding: &InputBinding,
) -> Result<Option<Box<dyn Consumer>>, Error> {
    let spec = &binding.plan.consumer;
    let what = format!(
        "binding `{}` (destination `{}`)",
        binding.plan.binding, spec.destination
    );
    super::bind::with_retry(&what, &binding.shutdown, || binder.bind_consumer(spec)).await
}
