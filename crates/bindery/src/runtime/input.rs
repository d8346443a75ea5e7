//! An input binding: takes deliveries and runs each through the stages of
//! [`super::pipeline`]; this module only strings them together.
//!
//! Invocations within a lane run one after another, so order is kept;
//! confirmations are awaited alongside, so many are in flight at once, and
//! a delivery whose confirmations are already in is settled inline. With
//! `concurrency > 1` deliveries are spread over lanes by key, so messages
//! that share a key keep their order. After a message is handed back for
//! redelivery, its lane finishes everything in flight before it takes the
//! next message, so what overtakes the requeued message is bounded by the
//! confirmations that were in flight (audit A9).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bindery_core::binder::{Acknowledger, Binder, BinderExt, Consumer, Delivery};
use bindery_core::config::InputPlan;
use bindery_core::error::Error;
use bindery_core::message::Message;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::health::BindingWatch;
use super::pipeline::dead_letter::DeadLetters;
use super::pipeline::invoke::Invoke;
use super::pipeline::retry::{Next, Retry};
use super::pipeline::settle::Settle;
use super::pipeline::{Confirmations, Disposition, Failure, Settlement, confirm};
use super::stats::{Counters, Event};

/// The stages of one input binding.
pub(crate) struct InputBinding {
    pub(crate) plan: InputPlan,
    pub(crate) invoke: Invoke,
    pub(crate) retry: Retry,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) settle: Settle,
    pub(crate) counters: Arc<Counters>,
    pub(crate) watch: Arc<BindingWatch>,
    pub(crate) shutdown: CancellationToken,
}

/// A delivery whose outputs are sent and whose confirmations are awaited.
struct InFlight {
    confirmations: Confirmations,
    attempts: u32,
}

impl InputBinding {
    /// Runs the attempts `message` gets until one publishes its outputs
    /// (returned with the attempt's number) or the message is decided.
    async fn attempts(
        &self,
        message: &Message,
        acker: &Acknowledger,
    ) -> Result<InFlight, Disposition> {
        let mut attempt = 1;
        loop {
            let error = match self.invoke.attempt(message, acker.info(), attempt).await {
                Ok(confirmations) => {
                    return Ok(InFlight {
                        confirmations,
                        attempts: attempt,
                    });
                }
                Err(Failure::Transient(reason)) => return Err(Disposition::Requeue { reason }),
                Err(Failure::Function(error)) => error,
            };
            tracing::debug!(binding = %self.plan.binding, id = %acker.id(), attempt, "attempt failed: {}", error.chain_text());
            match self.retry.after_failure(attempt, &error).await {
                Next::Attempt(next) => {
                    self.counters.bump(Event::Retried);
                    attempt = next;
                }
                Next::GiveUp => {
                    return Err(Disposition::DeadLetter {
                        error,
                        attempts: attempt,
                    });
                }
                Next::Interrupted => {
                    return Err(Disposition::Requeue {
                        reason: "shutdown during back-off".into(),
                    });
                }
            }
        }
    }

    /// Waits for the confirmations of `in_flight`, then finishes.
    async fn confirm_and_finish(
        self: Arc<Self>,
        in_flight: InFlight,
        message: Message,
        acker: Acknowledger,
    ) -> bool {
        let sent = in_flight.confirmations.sent();
        let outcome = in_flight.confirmations.wait().await;
        self.record_sent(sent, &outcome);
        let disposition = confirm::disposition(outcome, in_flight.attempts);
        self.finish(disposition, &message, acker).await
    }

    /// Parks a failed message, then settles the delivery. Returns whether
    /// the delivery was handed back for redelivery.
    async fn finish(
        &self,
        disposition: Disposition,
        message: &Message,
        acker: Acknowledger,
    ) -> bool {
        let settlement = match disposition {
            Disposition::Ack => Settlement::Ack,
            Disposition::Requeue { reason } => Settlement::Requeue { reason },
            Disposition::DeadLetter { error, attempts } => {
                self.dead_letters
                    .park(message, &acker, error, attempts)
                    .await
            }
        };
        let requeued = matches!(settlement, Settlement::Requeue { .. });
        self.settle.apply(settlement, acker).await;
        requeued
    }

    fn record_sent(&self, sent: usize, outcome: &Result<(), bindery_core::BinderError>) {
        if let Some(output) = &self.invoke.output {
            output.record(sent, outcome);
        }
    }
}

/// Processes deliveries one at a time while confirming earlier ones.
struct Lane {
    binding: Arc<InputBinding>,
    index: usize,
    /// Settlements waiting for confirmations; each says whether it
    /// requeued its delivery.
    in_flight: FuturesUnordered<BoxFuture<'static, bool>>,
}

impl Lane {
    fn new(binding: Arc<InputBinding>, index: usize) -> Self {
        Self {
            binding,
            index,
            in_flight: FuturesUnordered::new(),
        }
    }

    async fn handle(&mut self, delivery: Delivery) {
        let binding = self.binding.clone();
        binding.counters.bump(Event::Received);
        let (message, acker) = delivery.into_parts();
        let mut requeued = false;
        let attempts = {
            let _busy = binding.watch.busy(self.index);
            let attempts = binding.attempts(&message, &acker);
            tokio::pin!(attempts);
            loop {
                // Biased: the call first; tokio's random start costs a
                // thread-local RNG draw per poll on the hot path.
                tokio::select! {
                    biased;
                    attempts = &mut attempts => break attempts,
                    Some(handed_back) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                        requeued |= handed_back;
                    }
                }
            }
        };
        let disposition = match attempts {
            Ok(mut in_flight) => match in_flight.confirmations.try_now() {
                Some(outcome) => {
                    binding.record_sent(in_flight.confirmations.sent(), &outcome);
                    confirm::disposition(outcome, in_flight.attempts)
                }
                None => {
                    let settling = binding
                        .clone()
                        .confirm_and_finish(in_flight, message, acker);
                    self.in_flight.push(Box::pin(settling));
                    return self.hold_if(requeued).await;
                }
            },
            Err(disposition @ Disposition::DeadLetter { .. }) => {
                // Parking may take retries: it must not hold up the
                // messages behind this one (audit A2).
                let parking = async move { binding.finish(disposition, &message, acker).await };
                self.in_flight.push(Box::pin(parking));
                return self.hold_if(requeued).await;
            }
            Err(disposition) => disposition,
        };
        match disposition {
            // The common case skips `finish` and its parking state.
            Disposition::Ack => binding.settle.apply(Settlement::Ack, acker).await,
            disposition => requeued |= binding.finish(disposition, &message, acker).await,
        }
        self.hold_if(requeued).await;
    }

    /// After a requeue, finishes everything in flight before the next
    /// delivery is taken, so the requeued message comes back first.
    async fn hold_if(&mut self, requeued: bool) {
        if requeued {
            self.drain().await;
        }
    }

    /// Completes when one settlement finishes; never while there are none.
    async fn settle_one(&mut self) {
        match self.in_flight.next().await {
            Some(true) => self.drain().await,
            Some(false) => {}
            None => std::future::pending::<()>().await,
        }
    }

    async fn drain(&mut self) {
        while self.in_flight.next().await.is_some() {}
    }
}

/// Runs `consumer` until shutdown, then finishes what is in flight. A
/// consumer that ends while the app runs is an error the app reports.
pub(crate) async fn consume(
    binding: Arc<InputBinding>,
    mut consumer: Box<dyn Consumer>,
) -> Result<(), Error> {
    let concurrency = binding.plan.consumer.concurrency.get();
    let result = if concurrency == 1 {
        consume_in_one_lane(&binding, consumer.as_mut()).await
    } else {
        consume_in_lanes(&binding, consumer.as_mut(), concurrency).await
    };
    let _ = consumer.cancel().await;
    // Dropping the consumer hands back anything still unacknowledged.
    drop(consumer);
    if let Err(Error::BindingEnded { reason, .. } | Error::TaskFailed(reason)) = &result {
        binding.watch.end(reason.clone());
    }
    result
}

/// The next delivery; `None` at shutdown, an error when the consumer ended.
async fn next_delivery(
    binding: &InputBinding,
    consumer: &mut dyn Consumer,
) -> Result<Option<Delivery>, Error> {
    if binding.shutdown.is_cancelled() {
        return Ok(None);
    }
    if let Some(delivery) = consumer.try_recv() {
        return Ok(Some(delivery));
    }
    tokio::select! {
        biased;
        () = binding.shutdown.cancelled() => Ok(None),
        delivery = consumer.recv() => match delivery {
            Some(delivery) => Ok(Some(delivery)),
            None if binding.shutdown.is_cancelled() => Ok(None),
            None => Err(Error::BindingEnded {
                binding: binding.plan.binding.clone(),
                reason: "its consumer stopped delivering (cancelled by the broker or the binder)".into(),
            }),
        },
    }
}

async fn consume_in_one_lane(
    binding: &Arc<InputBinding>,
    consumer: &mut dyn Consumer,
) -> Result<(), Error> {
    let mut lane = Lane::new(binding.clone(), 0);
    let result = loop {
        // Settlements first: they free prefetch for the next delivery.
        tokio::select! {
            biased;
            () = lane.settle_one() => {}
            next = next_delivery(binding, consumer) => match next {
                Ok(Some(delivery)) => lane.handle(delivery).await,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            },
        }
    };
    lane.drain().await;
    result
}

/// Spreads deliveries over `concurrency` lane tasks by key. The lanes are
/// children of this task: aborting it aborts them (audit A20).
async fn consume_in_lanes(
    binding: &Arc<InputBinding>,
    consumer: &mut dyn Consumer,
    concurrency: usize,
) -> Result<(), Error> {
    let capacity = binding.plan.consumer.prefetch.get();
    let mut lanes = Vec::with_capacity(concurrency);
    let mut workers = JoinSet::new();
    for index in 0..concurrency {
        let (tx, rx) = mpsc::channel(capacity);
        lanes.push(tx);
        workers.spawn(run_lane(Lane::new(binding.clone(), index), rx));
    }
    let mut next_lane = 0usize;
    let mut result = loop {
        let delivery = match next_delivery(binding, consumer).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        };
        let lane = match delivery.message().key() {
            Some(key) => lane_of(key, concurrency),
            None => {
                next_lane = (next_lane + 1) % concurrency;
                next_lane
            }
        };
        if lanes[lane].send(delivery).await.is_err() {
            // The lane is gone: its task says why below.
            break Ok(());
        }
    };
    drop(lanes);
    while let Some(joined) = workers.join_next().await {
        if let Err(join_error) = joined {
            workers.abort_all();
            result = Err(Error::TaskFailed(format!(
                "a lane of binding `{}` failed: {join_error}",
                binding.plan.binding
            )));
        }
    }
    result
}

/// A lane task: takes deliveries until the dispatcher stops or shutdown
/// comes. Deliveries still queued at shutdown are not processed; they go
/// back to the broker with the consumer.
async fn run_lane(mut lane: Lane, mut deliveries: mpsc::Receiver<Delivery>) {
    let shutdown = lane.binding.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = lane.settle_one() => {}
            delivery = deliveries.recv() => match delivery {
                Some(delivery) => lane.handle(delivery).await,
                None => break,
            },
        }
    }
    lane.drain().await;
}

fn lane_of(key: &[u8], lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Binds the consumer of an input binding, retrying while the broker is away.
pub(crate) async fn bind_consumer(
    binder: &Arc<dyn Binder>,
    binding: &InputBinding,
) -> Result<Option<Box<dyn Consumer>>, Error> {
    let spec = &binding.plan.consumer;
    let what = format!(
        "binding `{}` (destination `{}`)",
        binding.plan.binding, spec.destination
    );
    super::bind::with_retry(&what, &binding.shutdown, || binder.consumer(spec)).await
}
