//! The binder's publishing connection and its producers.
//!
//! One MQTT client per binder publishes for every producer, as the
//! RabbitMQ binder keeps one publishing connection. Every publish is QoS 1;
//! its [`Confirmation`] completes on the broker's PUBACK.
//!
//! rumqttc tells which packet id a publish got (`Outgoing::Publish(pkid)`)
//! in the order the publishes were queued, and which packet id the broker
//! acknowledged (`Incoming::PubAck`). The task that polls the event loop
//! keeps the confirmations of queued publishes in send order and files each
//! under its packet id when rumqttc assigns it; a packet id seen again while
//! it is still filed is a retransmission after a reconnect. When the broker
//! reconnects without the session (`session_present = false`), rumqttc drops
//! what was unacknowledged: those sends fail as transient, and the runtime
//! hands their inputs back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Confirmation, Producer};
use bindery_core::error::{BinderError, BinderErrorKind};
use bindery_core::message::Message;
use parking_lot::Mutex;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnAck, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, EventLoop, Request};
use tokio::sync::{oneshot, watch};

use crate::error::MqttError;
use crate::health::HealthSlot;
use crate::mapping;
use crate::session::ClientConfig;

type Confirm = oneshot::Sender<Result<(), BinderError>>;

/// Confirmations waiting for their PUBACK.
#[derive(Default)]
struct Pending {
    /// Queued, no packet id yet, in send order (with their topics).
    queued: VecDeque<(String, Confirm)>,
    /// Sent, by packet id.
    sent: HashMap<u16, (String, Confirm)>,
    /// A publish whose packet id collided with an unacknowledged one;
    /// rumqttc sends it once that one is acknowledged.
    collided: Option<(u16, String, Confirm)>,
}

/// The binder's publishing client.
pub(crate) struct Publisher {
    client: AsyncClient,
    pending: Arc<Mutex<Pending>>,
    /// Keeps publishes and their confirmations in one order.
    order: tokio::sync::Mutex<()>,
    confirm_timeout: Duration,
    connected: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Starts the client and its event-loop task; it connects in the
    /// background and reconnects with back-off.
    pub(crate) fn start(
        config: ClientConfig,
        health: HealthSlot,
        confirm_timeout: Duration,
    ) -> Self {
        let options = config.options(false, None);
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (connected_tx, connected) = watch::channel(false);
        let task = tokio::spawn(drive(
            eventloop,
            pending.clone(),
            config,
            health,
            connected_tx,
        ));
        Self {
            client,
            pending,
            order: tokio::sync::Mutex::new(()),
            confirm_timeout,
            connected,
            task,
        }
    }

    /// Waits until the client is connected, at most `timeout`.
    pub(crate) async fn wait_connected(
        &self,
        timeout: Duration,
        what: &str,
    ) -> Result<(), MqttError> {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|up| *up))
            .await
            .map_err(|_| MqttError::Timeout {
                what: what.to_owned(),
                waited: timeout,
            })?
            .map_err(|_| MqttError::Closed {
                what: what.to_owned(),
            })?;
        Ok(())
    }

    /// Queues a QoS 1 publish of `message` to `topic`; the confirmation
    /// completes on its PUBACK.
    pub(crate) async fn publish(
        &self,
        topic: String,
        message: Message,
        routing_key_property: bool,
    ) -> Result<Confirmation, BinderError> {
        if let Some(problem) = mapping::topic_problem(&topic) {
            // Sent, the broker would close the connection, and rumqttc
            // would send it again after every reconnect.
            return Err(BinderError::new(
                BinderErrorKind::Rejected,
                format!("publishing to `{topic}`: {problem}"),
            ));
        }
        let properties = mapping::properties(&message, routing_key_property);
        let payload = message.into_payload();
        let (tx, rx) = oneshot::channel();
        let _order = self.order.lock().await;
        self.pending.lock().queued.push_back((topic.clone(), tx));
        if let Err(error) = self
            .client
            .publish_with_properties(topic.clone(), QoS::AtLeastOnce, false, payload, properties)
            .await
        {
            self.pending.lock().queued.pop_back();
            return Err(BinderError::closed(format!(
                "publishing to `{topic}`: the MQTT client is closed"
            ))
            .with_source(error));
        }
        drop(_order);
        let timeout = self.confirm_timeout;
        Ok(Confirmation::pending(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(BinderError::closed(format!(
                    "publishing to `{topic}`: the binder shut down before the broker confirmed"
                ))),
                Err(_) => Err(MqttError::Timeout {
                    what: format!("waiting for the PUBACK of a publish to `{topic}`"),
                    waited: timeout,
                }
                .into()),
            }
        }))
    }

    /// Waits until every publish queued so far is confirmed or failed, at
    /// most the confirm timeout.
    pub(crate) async fn flush(&self) {
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        loop {
            let empty = {
                let pending = self.pending.lock();
                pending.queued.is_empty() && pending.sent.is_empty() && pending.collided.is_none()
            };
            if empty || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Disconnects and stops the event loop.
    pub(crate) async fn close(&self) {
        let _ = self.client.try_disconnect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    pending: Arc<Mutex<Pending>>,
    config: ClientConfig,
    health: HealthSlot,
    connected: watch::Sender<bool>,
) {
    let mut pauses = config.pauses();
    // Publishes rumqttc had queued but not sent when the connection broke:
    // lost with the session if the broker no longer has it.
    let mut unsent_at_loss = 0usize;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ConnAck {
                session_present, ..
            }))) => {
                pauses.reset();
                health.up();
                let _ = connected.send(true);
                if !session_present {
                    fail_lost(&pending, unsent_at_loss);
                }
                unsent_at_loss = 0;
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut pending = pending.lock();
                if pending.sent.contains_key(&pkid) {
                    continue; // a retransmission after a reconnect
                }
                let entry = match pending.collided.take() {
                    Some((collided, topic, confirm)) if collided == pkid => Some((topic, confirm)),
                    other => {
                        pending.collided = other;
                        pending.queued.pop_front()
                    }
                };
                if let Some(entry) = entry {
                    pending.sent.insert(pkid, entry);
                }
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                let mut pending = pending.lock();
                if let Some((topic, confirm)) = pending.queued.pop_front() {
                    pending.collided = Some((pkid, topic, confirm));
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let entry = pending.lock().sent.remove(&ack.pkid);
                if let Some((topic, confirm)) = entry {
                    let _ = confirm.send(confirmation(&topic, &ack.reason));
                }
            }
            Ok(_) => {}
            Err(rumqttc::v5::ConnectionError::RequestsDone) => return,
            Err(error) => {
                let _ = connected.send(false);
                unsent_at_loss = eventloop
                    .pending
                    .iter()
                    .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
                    .count();
                let pause = pauses.next_pause();
                health.down(format!(
                    "publishing connection to {}: {error}; reconnecting in {pause:?}",
                    config.broker()
                ));
                if pauses.failures() == 1 || pauses.failures().is_power_of_two() {
                    tracing::warn!(
                        broker = %config.broker(),
                        error = %error,
                        "MQTT publishing connection lost; reconnecting in {pause:?}"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The broker reconnected without the session: rumqttc dropped every
/// unacknowledged publish and those it had queued before the loss.
fn fail_lost(pending: &Mutex<Pending>, unsent: usize) {
    let mut pending = pending.lock();
    let lost = |topic: &str| {
        Err(BinderError::connection(format!(
            "publishing to `{topic}`: the broker lost the session before confirming; send it again"
        )))
    };
    for (_, (topic, confirm)) in pending.sent.drain() {
        let _ = confirm.send(lost(&topic));
    }
    if let Some((_, topic, confirm)) = pending.collided.take() {
        let _ = confirm.send(lost(&topic));
    }
    for _ in 0..unsent {
        if let Some((topic, confirm)) = pending.queued.pop_front() {
            let _ = confirm.send(lost(&topic));
        }
    }
}

fn confirmation(topic: &str, reason: &PubAckReason) -> Result<(), BinderError> {
    match reason {
        PubAckReason::Success => Ok(()),
        PubAckReason::NoMatchingSubscribers => Err(BinderError::new(
            BinderErrorKind::Unroutable,
            format!(
                "publishing to `{topic}`: no subscription takes it (PUBACK: no matching subscribers)"
            ),
        )),
        other => Err(MqttError::PublishRefused {
            topic: topic.to_owned(),
            reason: format!("{other:?}"),
        }
        .into()),
    }
}

/// Where a producer publishes.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A destination: the routing key becomes topic levels.
    Destination(String),
    /// A fixed topic (dead letters): the routing key travels in a property.
    Topic(String),
}

/// A producer: a handle on the binder's publisher.
pub(crate) struct MqttProducer {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) target: Target,
}

#[async_trait]
impl Producer for MqttProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let (topic, property) = match &self.target {
            Target::Destination(destination) => {
                (mapping::topic(destination, message.routing_key()), false)
            }
            Target::Topic(topic) => (topic.clone(), true),
        };
        self.publisher.publish(topic, message, property).await
    }

    async fn flush(&self) -> Result<(), BinderError> {
        self.publisher.flush().await;
        Ok(())
    }
}
