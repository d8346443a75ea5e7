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
//! message's. So every publish carries its sequence number on the channel
//! in the private header `x-bindery-seq` (the message's own `message_id`
//! is left alone), and the pump files each return under that number. It
//! decides a confirm only once its return, if any, must have been seen:
//! the broker sends a message's return before its confirm, lapin queues
//! returns and pops one per confirm it completes, so the queue was empty
//! when a confirm came without a return, and it is empty once every
//! publish made so far is confirmed (see [`Pump`]). No timing is involved.
//!
//! When a channel dies with sends unconfirmed, each of those
//! confirmations publishes its message again on a new channel (after
//! reconnecting, with back-off, in a task of its own) until
//! `confirm-timeout` from the first send; then it fails as transient and
//! the runtime hands the input back. A message may so reach the broker
//! twice (at-least-once), never zero times unnoticed.
//!
//! When the broker closes the channel *because of* a publish (406
//! `PRECONDITION_FAILED`, 403 `ACCESS_REFUSED`), it does not say which
//! one. Every send unconfirmed on that channel is then a suspect and is
//! published again alone: on a channel with nothing else unconfirmed,
//! holding the producer's lock until it is confirmed. A suspect the broker
//! refuses alone is the culprit and fails for good
//! ([`RabbitError::Refused`], rejected); the others are confirmed as
//! usual.
//!
//! A nack (the broker could not take the message) is published again too,
//! on a new channel, with back-off, for at most [`NACK_PATIENCE`] (and
//! within `confirm-timeout`); only then does the send fail as rejected.
//! RabbitMQ 3.10's quorum-queue client can keep nacking every publish of
//! a channel that first published to the queue while its leader's node
//! was going down, for as long as that channel lives, while a new channel
//! finds the new leader (tests/cluster_rabbitmq.rs); a full
//! `reject-publish` queue may have room a moment later.
//!
//! A message whose content header would not fit in one frame
//! (`frame_max`) is refused before publishing: RabbitMQ would close the
//! whole shared connection for it. A return on a producer that declares
//! queues (dead letters, redrive, `required-groups`) means one of them
//! was deleted: the producer declares its topology again before its next
//! publish.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use lapin::types::{AMQPValue, ShortString};
use lapin::{Channel, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::closing::Closings;
use crate::connection::{Connector, Patience, unless_lost};
use crate::error::{RabbitError, Result, refusal};
use crate::mapping::{self, Outgoing, SEQUENCE_HEADER};
use crate::topology::Topology;

/// What a frame adds around its payload (type, channel, size, end); a
/// content header's payload must fit in `frame_max` minus this.
const FRAME_OVERHEAD: usize = 8;

/// The largest `x-bindery-seq` entry: name, type tag, length and 20 digits.
const SEQUENCE_ENTRY_MAX: usize = 1 + SEQUENCE_HEADER.len() + 1 + 4 + 20;

/// How long a nacked message is published again on new channels before
/// the send fails as rejected.
pub(crate) const NACK_PATIENCE: Duration = Duration::from_secs(10);

/// Longest pause between publishes of a nacked message.
const NACK_LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// A publish written on channel number `.0` of its producer, and where
/// its outcome will come.
type Sent = (u64, oneshot::Receiver<Outcome>);

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
    /// Channels opened so far: the current one's number.
    opened: AtomicU64,
    /// A publish was returned although the topology declares queues: one
    /// was deleted; declare again before the next publish.
    redeclare: AtomicBool,
    closings: Arc<Closings>,
}

/// A channel in confirm mode and its pump.
struct PublishChannel {
    channel: Channel,
    /// Its number among the producer's channels.
    number: u64,
    next_seq: u64,
    /// The connection's negotiated `frame_max`.
    frame_max: u32,
    pump: mpsc::UnboundedSender<PumpCommand>,
}

enum PumpCommand {
    /// Publish `seq` is about to be written: sent before its frames, so
    /// the pump knows of every publish the broker may answer.
    Announce(u64),
    /// Publish `seq` was written; its confirm.
    Track {
        seq: u64,
        confirm: PublisherConfirm,
        reply: oneshot::Sender<Outcome>,
    },
    /// Publish `seq` failed before anything was written.
    Abandon(u64),
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
    Lost {
        why: String,
        /// The broker closed the channel for something published on it
        /// (reply code and text): maybe this message.
        refused: Option<(u16, String)>,
    },
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
            opened: AtomicU64::new(0),
            redeclare: AtomicBool::new(false),
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
                    self.redeclare.store(false, Ordering::Release);
                    let (pump, commands) = mpsc::unbounded_channel();
                    tokio::spawn(run_pump(commands));
                    return Ok(PublishChannel {
                        channel,
                        number: self.opened.fetch_add(1, Ordering::AcqRel) + 1,
                        next_seq: 1,
                        frame_max: connection.configuration().frame_max(),
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
    async fn publish(&self, outgoing: &Outgoing, patience: Patience) -> Result<Sent> {
        let mut current = self.current.lock().await;
        self.publish_locked(&mut current, outgoing, patience).await
    }

    /// Publishes `outgoing` on a channel with nothing else unconfirmed,
    /// and keeps the producer's lock until its outcome is known, so that
    /// a channel the broker closes meanwhile was closed for this message.
    async fn publish_alone(
        &self,
        outgoing: &Outgoing,
        deadline: Instant,
    ) -> Result<(u64, Outcome)> {
        let mut current = self.current.lock().await;
        if let Some(publishing) = current.as_ref() {
            let (done, flushed) = oneshot::channel();
            if publishing.pump.send(PumpCommand::Flush(done)).is_ok() {
                let _ = tokio::time::timeout_at(deadline, flushed).await;
            }
        }
        let (number, outcome) = self
            .publish_locked(&mut current, outgoing, Patience::Until(deadline))
            .await?;
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(outcome)) => Ok((number, outcome)),
            Ok(Err(_)) => Ok((
                number,
                Outcome::Lost {
                    why: "the publishing channel was closed".to_owned(),
                    refused: None,
                },
            )),
            Err(_) => Err(RabbitError::ConfirmTimeout {
                exchange: outgoing.exchange.to_string(),
                timeout: self.confirm_timeout,
                last_error: None,
            }),
        }
    }

    async fn publish_locked(
        &self,
        current: &mut Option<PublishChannel>,
        outgoing: &Outgoing,
        patience: Patience,
    ) -> Result<Sent> {
        let header_size = mapping::content_header_size(&outgoing.properties) + SEQUENCE_ENTRY_MAX;
        loop {
            let usable = current
                .as_ref()
                .is_some_and(|c| c.channel.status().connected());
            if !usable {
                *current = None;
                *current = Some(self.open(patience).await?);
            }
            let publishing = current.as_mut().expect("opened above");
            if self.redeclare.swap(false, Ordering::AcqRel) {
                debug!(binding = %self.binding, "a publish was returned; declaring the topology again");
                if let Err(error) = self.topology.declare(&publishing.channel).await {
                    // The broker closed the channel; the next one declares.
                    self.redeclare.store(true, Ordering::Release);
                    *current = None;
                    if matches!(patience, Patience::Once) || !error.is_transient() {
                        return Err(error);
                    }
                    continue;
                }
            }
            // `frame_max` 0 means no limit.
            let limit = usize::try_from(publishing.frame_max)
                .unwrap_or(usize::MAX)
                .saturating_sub(FRAME_OVERHEAD);
            if publishing.frame_max != 0 && header_size > limit {
                return Err(RabbitError::HeadersTooLarge {
                    exchange: outgoing.exchange.to_string(),
                    size: header_size,
                    limit,
                    frame_max: publishing.frame_max,
                });
            }
            let seq = publishing.next_seq;
            let channel = &publishing.channel;
            let _ = publishing.pump.send(PumpCommand::Announce(seq));
            // Abandons the announced publish unless it is tracked, also
            // when this future is dropped mid-publish.
            let mut announced = Announced {
                seq,
                pump: Some(publishing.pump.clone()),
            };
            let publishing_frames = channel.basic_publish(
                outgoing.exchange.clone(),
                outgoing.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &outgoing.payload,
                outgoing.properties_for(seq),
            );
            let published = unless_lost(|| channel.status().connected(), publishing_frames).await;
            match published {
                Ok(confirm) => {
                    announced.pump = None;
                    publishing.next_seq += 1;
                    let (reply, outcome) = oneshot::channel();
                    // The pump ends only after this sender is dropped.
                    let _ = publishing.pump.send(PumpCommand::Track {
                        seq,
                        confirm,
                        reply,
                    });
                    return Ok((publishing.number, outcome));
                }
                Err(error) => {
                    drop(announced);
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
        sent: Sent,
        deadline: Instant,
    ) -> Result<()> {
        /// Where the next outcome comes from, and the number of the
        /// channel it was published on.
        enum Next {
            Pending(Sent),
            /// Of a publish made alone.
            Alone((u64, Outcome)),
        }
        let mut next = Next::Pending(sent);
        let mut republished = 0u32;
        // Set by the first nack: publishing again ends there.
        let mut nacked_until: Option<Instant> = None;
        let mut nack_pause = self.retry_pause;
        // The broker closed a channel this message was unconfirmed on
        // because of some publish: from now on it is published alone.
        let mut suspect = false;
        loop {
            let timed_out = |last_error: Option<String>| RabbitError::ConfirmTimeout {
                exchange: outgoing.exchange.to_string(),
                timeout: self.confirm_timeout,
                last_error,
            };
            let (result, alone, channel) = match next {
                Next::Alone((channel, outcome)) => (outcome, true, channel),
                Next::Pending((channel, mut outcome)) => {
                    match tokio::time::timeout_at(deadline, &mut outcome).await {
                        Err(_) => return Err(timed_out(None)),
                        Ok(Ok(result)) => (result, false, channel),
                        Ok(Err(_)) => (
                            Outcome::Lost {
                                why: "the publishing channel was closed".to_owned(),
                                refused: None,
                            },
                            false,
                            channel,
                        ),
                    }
                }
            };
            match result {
                Outcome::Acked => {
                    if republished > 0 {
                        debug!(binding = %self.binding, republished, "confirmed after publishing again");
                    }
                    return Ok(());
                }
                Outcome::Nacked => {
                    let until = *nacked_until
                        .get_or_insert_with(|| (Instant::now() + NACK_PATIENCE).min(deadline));
                    if Instant::now() + nack_pause >= until {
                        return Err(RabbitError::Nacked {
                            exchange: outgoing.exchange.to_string(),
                        });
                    }
                    if republished == 0 {
                        warn!(binding = %self.binding, "the broker nacked a send; publishing it again on a new channel for up to {NACK_PATIENCE:?}");
                    }
                    republished += 1;
                    let pause = nack_pause;
                    nack_pause = (nack_pause * 2).min(NACK_LONGEST_PAUSE);
                    // In a task of its own, as below.
                    let publisher = self.clone();
                    let again = outgoing.clone();
                    let published = tokio::spawn(async move {
                        publisher.retire(channel).await;
                        tokio::time::sleep(pause).await;
                        publisher
                            .publish(&again, Patience::Until(deadline))
                            .await
                            .map(Next::Pending)
                    })
                    .await;
                    next = match published {
                        Ok(Ok(next)) => next,
                        Ok(Err(error)) if error.is_transient() => {
                            return Err(timed_out(Some(error.to_string())));
                        }
                        Ok(Err(error)) => return Err(error),
                        Err(join) => return Err(timed_out(Some(join.to_string()))),
                    };
                }
                Outcome::Returned {
                    exchange,
                    routing_key,
                    code,
                    text,
                } => {
                    if !self.topology.queues.is_empty() {
                        self.redeclare.store(true, Ordering::Release);
                    }
                    return Err(RabbitError::Returned {
                        exchange,
                        routing_key,
                        code,
                        text,
                    });
                }
                Outcome::Lost { why, refused } => {
                    if let Some((code, text)) = refused {
                        if alone {
                            warn!(binding = %self.binding, "the broker refused a message ({code} {text}); not publishing it again");
                            return Err(RabbitError::Refused {
                                exchange: outgoing.exchange.to_string(),
                                code,
                                text,
                            });
                        }
                        suspect = true;
                    }
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
                        if suspect {
                            publisher
                                .publish_alone(&again, deadline)
                                .await
                                .map(Next::Alone)
                        } else {
                            publisher
                                .publish(&again, Patience::Until(deadline))
                                .await
                                .map(Next::Pending)
                        }
                    })
                    .await;
                    next = match published {
                        Ok(Ok(next)) => next,
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

    /// Closes channel number `number` if it is still the current one, so
    /// that the next publish opens a new one. Its unconfirmed publishes
    /// are published again as lost.
    async fn retire(&self, number: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| c.number == number) {
            let publishing = current.take().expect("checked");
            debug!(binding = %self.binding, "closing a channel the broker nacked a publish on");
            self.closings
                .close(publishing.channel, "the broker nacked a publish");
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

/// A publish announced to its pump and not tracked yet: abandoned when
/// dropped still holding the pump.
struct Announced {
    seq: u64,
    pump: Option<mpsc::UnboundedSender<PumpCommand>>,
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            let _ = pump.send(PumpCommand::Abandon(self.seq));
        }
    }
}

/// Settles the publishes of one channel; ends once the channel is
/// replaced and everything it published is settled.
async fn run_pump(mut commands: mpsc::UnboundedReceiver<PumpCommand>) {
    let mut confirms = FuturesUnordered::new();
    let mut pump = Pump::default();
    let mut open = true;
    let handle = |command: Option<PumpCommand>,
                  pump: &mut Pump,
                  confirms: &mut FuturesUnordered<_>,
                  open: &mut bool| match command {
        Some(PumpCommand::Announce(seq)) => pump.announce(seq),
        Some(PumpCommand::Track {
            seq,
            confirm,
            reply,
        }) => {
            pump.track(seq, reply);
            confirms.push(async move { (seq, Completion::of(confirm.await)) });
        }
        Some(PumpCommand::Abandon(seq)) => pump.abandon(seq),
        Some(PumpCommand::Flush(done)) => pump.flushes.push((pump.next_seq, done)),
        None => *open = false,
    };
    loop {
        tokio::select! {
            command = commands.recv(), if open => handle(command, &mut pump, &mut confirms, &mut open),
            Some((seq, completion)) = confirms.next(), if !confirms.is_empty() => {
                pump.settle(seq, completion);
                // Every confirm completed so far, in one drain: a confirm
                // completed before one seen here is seen by the end of it.
                // That includes confirms whose `Track` is still queued:
                // lapin may have hung this drain's return on one of them
                // (it attaches the oldest waiting return to whichever
                // confirm of a multiple ack it completes first). So queued
                // commands are taken in and their confirms polled, until
                // neither brings anything new. `poll!` keeps this task's
                // waker registered.
                loop {
                    let mut more = false;
                    while let Poll::Ready(Some((seq, completion))) = futures::poll!(confirms.next()) {
                        pump.settle(seq, completion);
                        more = true;
                    }
                    // Publishes announced before this point count as
                    // outstanding, even if their `Track` is still queued.
                    while let Ok(command) = commands.try_recv() {
                        handle(Some(command), &mut pump, &mut confirms, &mut open);
                        more = true;
                    }
                    if !more {
                        break;
                    }
                }
                pump.end_drain();
            }
        }
        pump.finish_flushes();
        if !open && confirms.is_empty() && pump.undecided.is_empty() {
            return;
        }
    }
}

/// One confirm as lapin completed it.
#[derive(Debug)]
enum Completion {
    /// Acked (`true`) or nacked, with the return lapin attached to it:
    /// the oldest waiting one, whoever it belongs to.
    Confirmed { ack: bool, carried: Option<Carried> },
    /// The channel died first.
    Failed {
        why: String,
        refused: Option<(u16, String)>,
    },
}

/// A returned message, by the publish it belongs to.
#[derive(Debug)]
struct Carried {
    /// Its `x-bindery-seq`; none if a return lacks it.
    owner: Option<u64>,
    outcome: Outcome,
}

impl Completion {
    fn of(result: lapin::Result<lapin::Confirmation>) -> Self {
        match result {
            Ok(lapin::Confirmation::Ack(ret)) => Self::Confirmed {
                ack: true,
                carried: ret.map(Carried::of),
            },
            Ok(lapin::Confirmation::Nack(ret)) => Self::Confirmed {
                ack: false,
                carried: ret.map(Carried::of),
            },
            // confirm_select ran before any publish.
            Ok(lapin::Confirmation::NotRequested) => Self::Confirmed {
                ack: true,
                carried: None,
            },
            Err(error) => Self::Failed {
                refused: refusal(&error),
                why: error.to_string(),
            },
        }
    }
}

impl Carried {
    fn of(ret: BasicReturnMessage) -> Self {
        let owner = ret
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|table| table.inner().get(SEQUENCE_HEADER))
            .and_then(|seq| match seq {
                AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
                _ => None,
            });
        Self {
            owner,
            outcome: Outcome::Returned {
                exchange: ret.delivery.exchange.to_string(),
                routing_key: ret.delivery.routing_key.to_string(),
                code: ret.reply_code,
                text: ret.reply_text.to_string(),
            },
        }
    }
}

/// The pump's books.
///
/// Deciding a confirm needs to know its return was seen, if it has one.
/// RabbitMQ sends a message's `basic.return` before its `basic.ack`, and
/// lapin queues returns and attaches the oldest to each confirm it
/// completes. A *drain* sees every tracked confirm completed by the time
/// the pump looks. One publish may be written and not tracked yet (lapin
/// wrote its frames, the publisher has not sent its `Track`): its confirm
/// may be complete already, holding a return the drain cannot see.
/// Publishes on a channel are written one at a time, under the
/// producer's lock, so there is at most one such publish; what a drain
/// proves holds once the publish untracked when it ended is tracked (its
/// completion is then seen by the next drain's end). With that, publish
/// `k`'s return has been seen once any of these holds:
/// - `k`'s own confirm carried no return: lapin's queue was empty then,
///   so `k`'s return had been attached to an earlier confirm;
/// - a confirm without a return was seen in a later drain than `k`'s;
/// - every publish announced so far is confirmed: then lapin's queue is
///   empty (each return's own confirm comes after it and pops one while
///   the queue is not empty).
///
/// If the channel died, a return may stay queued in lapin for good; an
/// acked publish still undecided then counts as lost and is published
/// again (a duplicate at worst).
#[derive(Default)]
struct Pump {
    replies: HashMap<u64, oneshot::Sender<Outcome>>,
    /// Announced and not yet completed.
    announced: BTreeSet<u64>,
    /// Announced and not yet tracked or abandoned.
    untracked: Option<u64>,
    /// Confirmed but not yet decided.
    undecided: BTreeMap<u64, Undecided>,
    /// Returns by the sequence number of the publish they belong to.
    returned: HashMap<u64, Outcome>,
    drain: u64,
    /// Whether this drain saw a confirm without a return.
    empty_in_drain: bool,
    /// Drains that saw a confirm without a return, and the publish
    /// untracked when each ended: not conclusive while it is untracked.
    empty_drains: Vec<(u64, Option<u64>)>,
    /// The last conclusive drain that saw a confirm without a return.
    last_empty_drain: Option<u64>,
    /// A confirm failed: the channel is gone.
    failed: bool,
    /// Flushes wait for every publish below their sequence number.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    next_seq: u64,
}

/// A confirm seen, its outcome not decided yet.
struct Undecided {
    /// The drain it was seen in.
    drain: u64,
    /// Its own confirm carried no return.
    own_empty: bool,
    /// The publish untracked when that drain ended (set at its end).
    untracked_then: Option<u64>,
    outcome: Outcome,
}

impl Pump {
    /// Publish `seq` is about to be written.
    fn announce(&mut self, seq: u64) {
        self.announced.insert(seq);
        self.untracked = Some(seq);
    }

    /// Publish `seq` was written; `reply` awaits its outcome.
    fn track(&mut self, seq: u64, reply: oneshot::Sender<Outcome>) {
        self.replies.insert(seq, reply);
        self.next_seq = seq + 1;
        if self.untracked == Some(seq) {
            self.untracked = None;
        }
    }

    /// Publish `seq` failed before anything was written. (A send dropped
    /// mid-publish abandons too; if its frames went out, its confirm may
    /// take a return unseen, as lapin keeps a dropped confirm's return.)
    fn abandon(&mut self, seq: u64) {
        self.announced.remove(&seq);
        if self.untracked == Some(seq) {
            self.untracked = None;
        }
    }

    /// Whether what a drain that ended with `untracked_then` untracked
    /// proved holds: that publish is tracked (or abandoned) since.
    fn conclusive(&self, untracked_then: Option<u64>) -> bool {
        untracked_then.is_none() || untracked_then != self.untracked
    }

    /// Records what lapin said about publish `seq`.
    fn settle(&mut self, seq: u64, completion: Completion) {
        self.announced.remove(&seq);
        match completion {
            Completion::Confirmed { ack, carried } => {
                let own_empty = carried.is_none();
                match carried {
                    Some(carried) => {
                        let owner = carried.owner.unwrap_or(seq);
                        self.returned.insert(owner, carried.outcome);
                    }
                    None => self.empty_in_drain = true,
                }
                let outcome = if ack { Outcome::Acked } else { Outcome::Nacked };
                self.undecided.insert(
                    seq,
                    Undecided {
                        drain: self.drain,
                        own_empty,
                        untracked_then: None,
                        outcome,
                    },
                );
            }
            Completion::Failed { why, refused } => {
                self.failed = true;
                let outcome = self
                    .returned
                    .remove(&seq)
                    .unwrap_or(Outcome::Lost { why, refused });
                self.reply(seq, outcome);
            }
        }
    }

    /// Decides every confirm whose return must have been seen by now.
    fn end_drain(&mut self) {
        let (drain, untracked) = (self.drain, self.untracked);
        if std::mem::take(&mut self.empty_in_drain) {
            self.empty_drains.push((drain, untracked));
        }
        for seen in self.undecided.values_mut() {
            if seen.drain == drain {
                seen.untracked_then = untracked;
            }
        }
        let mut empty_drains = std::mem::take(&mut self.empty_drains);
        empty_drains.retain(|&(empty, untracked_then)| {
            if !self.conclusive(untracked_then) {
                return true;
            }
            self.last_empty_drain = self.last_empty_drain.max(Some(empty));
            false
        });
        self.empty_drains = empty_drains;
        let all_confirmed = self.announced.is_empty();
        let decided: Vec<u64> = self
            .undecided
            .iter()
            .filter(|(seq, seen)| {
                let own_empty = seen.own_empty && self.conclusive(seen.untracked_then);
                self.returned.contains_key(seq)
                    || own_empty
                    || self
                        .last_empty_drain
                        .is_some_and(|empty| empty > seen.drain)
                    || all_confirmed
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in decided {
            let seen = self.undecided.remove(&seq).expect("listed above");
            let outcome = match self.returned.remove(&seq) {
                Some(returned) => returned,
                // Its return may be stuck in a dead channel's queue.
                None if self.failed
                    && !seen.own_empty
                    && matches!(seen.outcome, Outcome::Acked) =>
                {
                    Outcome::Lost {
                        why: "the channel closed before the confirm could be told from a return"
                            .to_owned(),
                        refused: None,
                    }
                }
                None => seen.outcome,
            };
            self.reply(seq, outcome);
        }
        // Returns of publishes decided already (none, if the rules hold).
        // A return may come before its publish is tracked or confirmed.
        let (undecided, replies, announced) = (&self.undecided, &self.replies, &self.announced);
        self.returned.retain(|seq, _| {
            undecided.contains_key(seq) || replies.contains_key(seq) || announced.contains(seq)
        });
        self.drain += 1;
    }

    fn reply(&mut self, seq: u64, outcome: Outcome) {
        if let Some(reply) = self.replies.remove(&seq) {
            let _ = reply.send(outcome);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pump with publishes `1..=count` announced and tracked, and where
    /// their outcomes arrive.
    fn books(count: u64) -> (Pump, Vec<oneshot::Receiver<Outcome>>) {
        let mut pump = Pump::default();
        let mut outcomes = Vec::new();
        for seq in 1..=count {
            let (reply, outcome) = oneshot::channel();
            pump.announce(seq);
            pump.track(seq, reply);
            outcomes.push(outcome);
        }
        (pump, outcomes)
    }

    fn acked(carrying: Option<u64>) -> Completion {
        Completion::Confirmed {
            ack: true,
            carried: carrying.map(|owner| Carried {
                owner: Some(owner),
                outcome: Outcome::Returned {
                    exchange: "e".into(),
                    routing_key: format!("k{owner}"),
                    code: 312,
                    text: "NO_ROUTE".into(),
                },
            }),
        }
    }

    fn decided(outcome: &mut oneshot::Receiver<Outcome>) -> Option<String> {
        match outcome.try_recv() {
            Ok(Outcome::Acked) => Some("acked".into()),
            Ok(Outcome::Returned { routing_key, .. }) => Some(format!("returned {routing_key}")),
            Ok(other) => Some(format!("{other:?}")),
            Err(_) => None,
        }
    }

    /// B3: returns of 1 and 2 both wait in lapin's queue; the broker acks
    /// 2 alone first, so lapin hands 2 the return of 1. 2 must wait for
    /// its own return (carried later by 1's confirm) instead of being
    /// decided acked after a grace period.
    #[test]
    fn b03_a_return_carried_by_another_confirm_is_not_lost() {
        let (mut pump, mut outcomes) = books(2);
        pump.settle(2, acked(Some(1)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[1]), None, "2's return may still come");
        pump.settle(1, acked(Some(2)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("returned k1"));
        assert_eq!(decided(&mut outcomes[1]).as_deref(), Some("returned k2"));
        assert!(pump.undecided.is_empty() && pump.returned.is_empty());
    }

    #[test]
    fn b03_a_confirm_without_a_return_proves_the_queue_empty() {
        let (mut pump, mut outcomes) = books(3);
        // 2 takes 1's return; 2's own return may be queued.
        pump.settle(2, acked(Some(1)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[1]), None);
        // 3 came with nothing, in a later drain: lapin's queue was empty
        // then, so 2 had no return.
        pump.settle(3, acked(None));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[2]).as_deref(), Some("acked"));
        assert_eq!(decided(&mut outcomes[1]).as_deref(), Some("acked"));
        // 1's return was filed already.
        pump.settle(1, acked(None));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("returned k1"));
    }

    /// B3 under load: publish 2 is written but its `Track` not sent yet
    /// when 1's confirm comes without a return, because lapin hung 1's
    /// return on 2's confirm, complete already. 1 is decided only once 2
    /// is tracked and its confirm seen.
    #[test]
    fn b03_a_return_on_an_untracked_confirm_is_waited_for() {
        let (mut pump, mut outcomes) = books(1);
        pump.announce(2);
        pump.settle(1, acked(None));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]), None, "2 may hold 1's return");
        let (reply, mut second) = oneshot::channel();
        pump.track(2, reply);
        pump.settle(2, acked(Some(1)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("returned k1"));
        assert_eq!(decided(&mut second).as_deref(), Some("acked"));
    }

    /// B3 as CI saw it: 1's confirm carries the return of 2, whose
    /// `Track` is not sent yet. The return is kept for 2, not dropped as
    /// belonging to no one.
    #[test]
    fn b03_a_return_of_an_untracked_publish_is_kept_for_it() {
        let (mut pump, mut outcomes) = books(1);
        pump.announce(2);
        pump.settle(1, acked(Some(2)));
        pump.end_drain();
        let (reply, mut second) = oneshot::channel();
        pump.track(2, reply);
        pump.settle(2, acked(None));
        pump.end_drain();
        assert_eq!(decided(&mut second).as_deref(), Some("returned k2"));
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("acked"));
    }

    /// The same for a confirm without a return in a later drain: it
    /// proves nothing while a publish untracked then may hold the return.
    #[test]
    fn b03_an_empty_confirm_proves_nothing_while_a_publish_is_untracked() {
        let (mut pump, mut outcomes) = books(3);
        pump.settle(1, acked(Some(2)));
        pump.end_drain();
        pump.announce(4);
        pump.settle(3, acked(None));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]), None, "4 may hold 1's return");
        assert_eq!(decided(&mut outcomes[2]), None, "4 may hold 3's return");
        let (reply, mut fourth) = oneshot::channel();
        pump.track(4, reply);
        pump.settle(4, acked(Some(1)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("returned k1"));
        assert_eq!(decided(&mut outcomes[2]).as_deref(), Some("acked"));
        assert_eq!(decided(&mut fourth), None, "2 is not confirmed yet");
        pump.settle(2, acked(None));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[1]).as_deref(), Some("returned k2"));
        assert_eq!(decided(&mut fourth).as_deref(), Some("acked"));
    }

    #[test]
    fn b03_everything_confirmed_decides_everything() {
        let (mut pump, mut outcomes) = books(2);
        // One drain, both carrying each other's return.
        pump.settle(1, acked(Some(2)));
        pump.settle(2, acked(Some(1)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("returned k1"));
        assert_eq!(decided(&mut outcomes[1]).as_deref(), Some("returned k2"));
        // A publish not confirmed yet keeps an undecided one waiting.
        let (mut pump, mut outcomes) = books(2);
        pump.settle(1, acked(Some(1)));
        pump.end_drain();
        assert_eq!(decided(&mut outcomes[0]).as_deref(), Some("returned k1"));
        assert_eq!(decided(&mut outcomes[1]), None);
    }

    #[test]
    fn a05_a_channel_closed_by_the_broker_says_so() {
        let (mut pump, mut outcomes) = books(3);
        // 1 came with 2's return, then the broker closed the channel.
        pump.settle(1, acked(Some(2)));
        pump.end_drain();
        let refused = || Completion::Failed {
            why: "406".into(),
            refused: Some((406, "PRECONDITION_FAILED - invalid expiration".into())),
        };
        pump.settle(2, refused());
        pump.settle(3, refused());
        pump.end_drain();
        assert_eq!(
            decided(&mut outcomes[1]).as_deref(),
            Some("returned k2"),
            "returned before the close"
        );
        match outcomes[2].try_recv() {
            Ok(Outcome::Lost {
                refused: Some((406, _)),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // 1's own return may be stuck in the dead channel: lost, so it is
        // published again rather than reported confirmed.
        assert!(matches!(
            outcomes[0].try_recv(),
            Ok(Outcome::Lost { refused: None, .. })
        ));
    }
}
