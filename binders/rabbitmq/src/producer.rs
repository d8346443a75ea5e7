//! Producers: one confirm-mode channel each, many confirms in flight.
//!
//! [`Producer::send`] publishes under the producer's lock (so sends keep
//! their order and lapin's confirm numbering matches the broker's) and
//! returns once the frames are written; the [`Confirmation`] completes
//! when the broker confirms.
//!
//! A *pump* task per channel awaits that channel's publisher confirms and
//! settles each send. It also fixes an attribution problem: lapin hands a
//! returned (unroutable) message to whichever confirm completes next,
//! which under RabbitMQ's batched and out-of-order confirms may be another
//! message's. So every publish carries its sequence number as
//! `message_id`, and the pump files returns by that number. lapin gives a
//! return to the first confirm it completes after the return arrived,
//! which is never later than the owner's own confirm unless several
//! returns wait at once; so the pump takes every confirm that has completed
//! before it decides any, and once a channel has seen a return it also
//! waits a short grace period before deciding, for the rest of a batch
//! that lapin may still be completing. Channels without unroutable traffic
//! never pay that latency.
//!
//! When a channel dies with sends unconfirmed, each of those
//! confirmations publishes its message again on a new channel (after
//! reconnecting, with back-off, in a task of its own) until
//! `confirm-timeout` from the first send; then it fails as transient and the runtime hands the input back.
//! A message may so reach the broker twice (at-least-once), never zero
//! times unnoticed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Confirmation, Producer};
use bindery_core::error::BinderError;
use bindery_core::message::Message;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::closing::Closings;
use crate::connection::{Connector, Patience, unless_lost};
use crate::error::{RabbitError, Result};
use crate::mapping::{self, Outgoing};
use crate::topology::Topology;

/// How long the pump waits after a confirm before deciding it, on a
/// channel that has seen returns, for a return attributed to another
/// confirm of the same batch.
const RETURN_GRACE: Duration = Duration::from_millis(2);

/// Where a producer publishes.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// The exchange (`""` is the default exchange).
    pub(crate) exchange: ShortString,
    /// A routing key for every message (dead letters, redrive), else each
    /// message's own, else `default_routing_key`.
    pub(crate) fixed_routing_key: Option<ShortString>,
    /// The destination's name, Spring's default routing key.
    pub(crate) default_routing_key: ShortString,
}

/// The shared part of a producer: what its confirmations need to publish
/// again.
pub(crate) struct Publisher {
    binding: String,
    connector: Arc<Connector>,
    topology: Topology,
    route: Route,
    confirm_timeout: Duration,
    retry_pause: Duration,
    current: tokio::sync::Mutex<Option<PublishChannel>>,
    closings: Arc<Closings>,
}

/// A channel in confirm mode and its pump.
struct PublishChannel {
    channel: Channel,
    next_seq: u64,
    pump: mpsc::UnboundedSender<PumpCommand>,
}

enum PumpCommand {
    Track {
        seq: u64,
        confirm: PublisherConfirm,
        reply: oneshot::Sender<Outcome>,
    },
    Flush(oneshot::Sender<()>),
}

/// What became of one publish.
#[derive(Debug)]
enum Outcome {
    Acked,
    Nacked,
    Returned {
        exchange: String,
        routing_key: String,
        code: u16,
        text: String,
    },
    /// The channel died first; the message may or may not be on the broker.
    Lost(String),
}

impl Publisher {
    pub(crate) fn new(
        binding: String,
        connector: Arc<Connector>,
        topology: Topology,
        route: Route,
        confirm_timeout: Duration,
        retry_pause: Duration,
        closings: Arc<Closings>,
    ) -> Arc<Self> {
        Arc::new(Self {
            binding,
            connector,
            topology,
            route,
            confirm_timeout,
            retry_pause,
            current: tokio::sync::Mutex::new(None),
            closings,
        })
    }

    /// Opens the channel now, declaring the topology: binding reports
    /// provisioning errors at once.
    pub(crate) async fn open_now(&self) -> Result<()> {
        let mut current = self.current.lock().await;
        *current = Some(self.open(Patience::Once).await?);
        Ok(())
    }

    async fn open(&self, patience: Patience) -> Result<PublishChannel> {
        loop {
            let connection = self.connector.live(patience).await?;
            let result: Result<Channel> = async {
                let up = || connection.status().connected();
                let channel = unless_lost(up, connection.create_channel())
                    .await
                    .map_err(|e| RabbitError::channel("opening a channel", e))?;
                let open = || channel.status().connected();
                unless_lost(
                    open,
                    channel.confirm_select(ConfirmSelectOptions::default()),
                )
                .await
                .map_err(|e| RabbitError::channel("enabling publisher confirms", e))?;
                self.topology.declare(&channel).await?;
                Ok(channel)
            }
            .await;
            match result {
                Ok(channel) => {
                    let (pump, commands) = mpsc::unbounded_channel();
                    tokio::spawn(run_pump(commands));
                    return Ok(PublishChannel {
                        channel,
                        next_seq: 1,
                        pump,
                    });
                }
                Err(error) => {
                    let retry = match patience {
                        Patience::Once => false,
                        Patience::Until(deadline) => {
                            error.is_transient() && Instant::now() + self.retry_pause < deadline
                        }
                        Patience::Forever => error.is_transient(),
                    };
                    if !retry {
                        return Err(error);
                    }
                    debug!(binding = %self.binding, "opening a publishing channel failed, retrying: {error}");
                    tokio::time::sleep(self.retry_pause).await;
                }
            }
        }
    }

    /// Publishes `outgoing` and returns where its outcome will come.
    /// Opens a channel first if there is none, as `patience` allows.
    async fn publish(
        &self,
        outgoing: &Outgoing,
        patience: Patience,
    ) -> Result<oneshot::Receiver<Outcome>> {
        let mut current = self.current.lock().await;
        loop {
            let usable = current
                .as_ref()
                .is_some_and(|c| c.channel.status().connected());
            if !usable {
                *current = None;
                *current = Some(self.open(patience).await?);
            }
            let publishing = current.as_mut().expect("opened above");
            let seq = publishing.next_seq;
            let properties = outgoing
                .properties
                .clone()
                .with_message_id(seq.to_string().into());
            let channel = &publishing.channel;
            let publishing_frames = channel.basic_publish(
                outgoing.exchange.clone(),
                outgoing.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &outgoing.payload,
                properties,
            );
            let published = unless_lost(|| channel.status().connected(), publishing_frames).await;
            match published {
                Ok(confirm) => {
                    publishing.next_seq += 1;
                    let (reply, outcome) = oneshot::channel();
                    // The pump ends only after this sender is dropped.
                    let _ = publishing.pump.send(PumpCommand::Track {
                        seq,
                        confirm,
                        reply,
                    });
                    return Ok(outcome);
                }
                Err(error) => {
                    let error = RabbitError::channel(
                        format!("publishing to exchange `{}`", outgoing.exchange),
                        error,
                    );
                    *current = None;
                    if matches!(patience, Patience::Once) || !error.is_transient() {
                        return Err(error);
                    }
                    debug!(binding = %self.binding, "publish failed, opening a new channel: {error}");
                }
            }
        }
    }

    /// Waits for the outcome of a publish, publishing again on a new
    /// channel while the outcome is "lost", until `deadline`.
    async fn confirm(
        self: Arc<Self>,
        outgoing: Outgoing,
        mut outcome: oneshot::Receiver<Outcome>,
        deadline: Instant,
    ) -> Result<()> {
        let mut republished = 0u32;
        loop {
            let timed_out = |last_error: Option<String>| RabbitError::ConfirmTimeout {
                exchange: outgoing.exchange.to_string(),
                timeout: self.confirm_timeout,
                last_error,
            };
            let result = match tokio::time::timeout_at(deadline, &mut outcome).await {
                Err(_) => return Err(timed_out(None)),
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Outcome::Lost("the publishing channel was closed".to_owned()),
            };
            match result {
                Outcome::Acked => {
                    if republished > 0 {
                        debug!(binding = %self.binding, republished, "confirmed after publishing again");
                    }
                    return Ok(());
                }
                Outcome::Nacked => {
                    return Err(RabbitError::Nacked {
                        exchange: outgoing.exchange.to_string(),
                    });
                }
                Outcome::Returned {
                    exchange,
                    routing_key,
                    code,
                    text,
                } => {
                    return Err(RabbitError::Returned {
                        exchange,
                        routing_key,
                        code,
                        text,
                    });
                }
                Outcome::Lost(why) => {
                    if republished == 0 {
                        warn!(binding = %self.binding, "a send was not confirmed ({why}); publishing it again");
                    }
                    republished += 1;
                    // In a task of its own: publishing holds the producer's
                    // lock across awaits, and whoever owns this confirmation
                    // may stop polling it (to call `send`, which waits for
                    // that lock).
                    let publisher = self.clone();
                    let again = outgoing.clone();
                    let published = tokio::spawn(async move {
                        publisher.publish(&again, Patience::Until(deadline)).await
                    })
                    .await;
                    outcome = match published {
                        Ok(Ok(outcome)) => outcome,
                        Ok(Err(error)) if error.is_transient() => {
                            return Err(timed_out(Some(error.to_string())));
                        }
                        Ok(Err(error)) => return Err(error),
                        Err(join) => return Err(timed_out(Some(join.to_string()))),
                    };
                }
            }
        }
    }

    /// Closes the channel; the next send opens another.
    pub(crate) async fn close(&self) {
        let Some(publishing) = self.current.lock().await.take() else {
            return;
        };
        if publishing.channel.status().connected() {
            let closing = publishing.channel.close(200, "producer closed".into());
            let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        }
    }

    /// Waits until every publish on the current channel is settled.
    pub(crate) async fn flush(&self) {
        let done = {
            let current = self.current.lock().await;
            let Some(publishing) = current.as_ref() else {
                return;
            };
            let (done, flushed) = oneshot::channel();
            if publishing.pump.send(PumpCommand::Flush(done)).is_err() {
                return;
            }
            flushed
        };
        let _ = done.await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(publishing) = self.current.get_mut().take() {
            self.closings.close(publishing.channel, "producer dropped");
        }
    }
}

/// A producer of the RabbitMQ binder.
pub(crate) struct RabbitProducer {
    pub(crate) publisher: Arc<Publisher>,
}

#[async_trait]
impl Producer for RabbitProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let publisher = &self.publisher;
        let route = &publisher.route;
        let outgoing = mapping::outgoing(
            message,
            &route.exchange,
            route.fixed_routing_key.as_ref(),
            &route.default_routing_key,
        )?;
        let deadline = Instant::now() + publisher.confirm_timeout;
        // Waits while the broker is away (back-pressure), up to the
        // deadline a confirmation would have.
        let outcome = publisher
            .publish(&outgoing, Patience::Until(deadline))
            .await?;
        let confirming = publisher.clone().confirm(outgoing, outcome, deadline);
        Ok(Confirmation::pending(async move {
            confirming.await.map_err(BinderError::from)
        }))
    }

    async fn flush(&self) -> Result<(), BinderError> {
        self.publisher.flush().await;
        Ok(())
    }
}

/// Settles the publishes of one channel; ends once the channel is
/// replaced and everything it published is settled.
async fn run_pump(mut commands: mpsc::UnboundedReceiver<PumpCommand>) {
    let mut confirms = FuturesUnordered::new();
    let mut pump = Pump::default();
    let mut open = true;
    let grace = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(grace);
    loop {
        if let Some((at, ..)) = pump.settled.front() {
            grace.as_mut().reset(*at + RETURN_GRACE);
        }
        tokio::select! {
            command = commands.recv(), if open => match command {
                Some(PumpCommand::Track { seq, confirm, reply }) => {
                    pump.replies.insert(seq, reply);
                    pump.next_seq = seq + 1;
                    confirms.push(async move { (seq, confirm.await) });
                }
                Some(PumpCommand::Flush(done)) => pump.flushes.push((pump.next_seq, done)),
                None => open = false,
            },
            Some((seq, result)) = confirms.next(), if !confirms.is_empty() => {
                pump.settle(seq, result);
                // Every confirm completed so far, so that a return that
                // came with one of them is filed before its owner is
                // decided. `poll!` keeps this task's waker registered.
                while let Poll::Ready(Some((seq, result))) = futures::poll!(confirms.next()) {
                    pump.settle(seq, result);
                }
                if !pump.returns_seen {
                    pump.decide(None);
                }
            }
            () = &mut grace, if !pump.settled.is_empty() => pump.decide(Some(Instant::now())),
        }
        pump.finish_flushes();
        if !open && confirms.is_empty() && pump.settled.is_empty() {
            return;
        }
    }
}

/// The pump's books.
#[derive(Default)]
struct Pump {
    replies: HashMap<u64, oneshot::Sender<Outcome>>,
    /// Confirmed but not yet decided, oldest first, with when they came.
    settled: VecDeque<(Instant, u64, Outcome)>,
    /// Returns by the sequence number of the publish they belong to.
    returned: HashMap<u64, Outcome>,
    returns_seen: bool,
    /// Flushes wait for every publish below their sequence number.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    next_seq: u64,
}

impl Pump {
    /// Records what lapin said about publish `seq`.
    fn settle(&mut self, seq: u64, result: lapin::Result<lapin::Confirmation>) {
        let outcome = match result {
            Ok(lapin::Confirmation::Ack(ret)) => {
                self.note_return(ret, seq);
                Outcome::Acked
            }
            Ok(lapin::Confirmation::Nack(ret)) => {
                self.note_return(ret, seq);
                Outcome::Nacked
            }
            // confirm_select ran before any publish.
            Ok(lapin::Confirmation::NotRequested) => Outcome::Acked,
            Err(error) => Outcome::Lost(error.to_string()),
        };
        self.settled.push_back((Instant::now(), seq, outcome));
    }

    /// Files a returned message under the publish it belongs to, named by
    /// its `message_id`; `seq` (the confirm it came with) when it has none.
    fn note_return(&mut self, ret: Option<BasicReturnMessage>, seq: u64) {
        let Some(ret) = ret else {
            return;
        };
        self.returns_seen = true;
        let owner = ret
            .delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok())
            .unwrap_or(seq);
        self.returned.insert(
            owner,
            Outcome::Returned {
                exchange: ret.delivery.exchange.to_string(),
                routing_key: ret.delivery.routing_key.to_string(),
                code: ret.reply_code,
                text: ret.reply_text.to_string(),
            },
        );
    }

    /// Tells the senders: all settled ones, or (with `now`) those whose
    /// grace period is over.
    fn decide(&mut self, now: Option<Instant>) {
        while let Some((at, ..)) = self.settled.front() {
            if now.is_some_and(|now| *at + RETURN_GRACE > now) {
                break;
            }
            let (_, seq, outcome) = self.settled.pop_front().expect("checked");
            let outcome = self.returned.remove(&seq).unwrap_or(outcome);
            if let Some(reply) = self.replies.remove(&seq) {
                let _ = reply.send(outcome);
            }
        }
    }

    fn finish_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let lowest = self.replies.keys().min().copied().unwrap_or(u64::MAX);
        for (marker, done) in std::mem::take(&mut self.flushes) {
            if lowest >= marker {
                let _ = done.send(());
            } else {
                self.flushes.push((marker, done));
            }
        }
    }
}
