//! Consumers: one MQTT client per consumer binding, QoS 1 with manual acks.
//!
//! A task polls the client's event loop all the time (keep-alives, acks,
//! reconnects) and never waits for the application: each PUBLISH goes to a
//! second task that hands it over through [`delivery_channel`], which holds
//! back once `prefetch` deliveries are unsettled. The broker sends no more
//! than the client's receive maximum (`prefetch`) unacknowledged messages.
//!
//! Each connection has an epoch. A delivery can be acknowledged only on the
//! connection it came on: after a reconnect the broker delivers what was
//! unacknowledged again (same packet id, DUP set), so an old delivery's ack
//! is refused (it could acknowledge a different message that reuses the
//! packet id) and the new delivery is the one to settle.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::kit::{DeliveryReceiver, DeliverySender, delivery_channel};
use bindery_core::binder::{Consumer, Delivery, DeliveryHandle};
use bindery_core::error::BinderError;
use bindery_core::message::{DeliveryId, Headers};
use bytes::Bytes;
use futures::future::BoxFuture;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::MqttError;
use crate::health::HealthSlot;
use crate::mapping;
use crate::session::{ClientConfig, Slot, check_suback};

/// What a consumer subscribes to and how.
pub(crate) struct Plan {
    /// The destination (or dead-letter topic) the topics start with.
    pub(crate) destination: String,
    /// Topic filters, shared (`$share/<group>/...`) or plain.
    pub(crate) filters: Vec<String>,
    /// Filters to remove from a resumed session (a provisioned catch-all
    /// the binding's patterns do not include).
    pub(crate) unsubscribe: Vec<String>,
    /// Anonymous subscriptions start clean; group members resume.
    pub(crate) clean_start: bool,
    pub(crate) prefetch: NonZeroUsize,
    pub(crate) config: ClientConfig,
    /// The group member's slot; `None` for anonymous subscriptions.
    pub(crate) slot: Option<Arc<Slot>>,
}

/// A message received on connection `epoch`.
struct Received {
    publish: Publish,
    epoch: u64,
    redelivered: bool,
}

/// What deliveries share with their consumer's tasks.
struct Shared {
    client: AsyncClient,
    epoch: AtomicU64,
    name: Arc<str>,
    destination: String,
    requeue: mpsc::UnboundedSender<Received>,
}

/// A consumer binding's client.
pub(crate) struct MqttConsumer {
    receiver: DeliveryReceiver,
    drive: JoinHandle<()>,
    hand_over: JoinHandle<()>,
    client: AsyncClient,
    slot: Option<Arc<Slot>>,
    _health: Arc<HealthSlot>,
}

impl MqttConsumer {
    /// Connects, subscribes, and returns once the broker acknowledged every
    /// subscription (or fails, leaving nothing running).
    pub(crate) async fn bind(mut plan: Plan, health: HealthSlot) -> Result<Self, MqttError> {
        let receive_maximum = u16::try_from(plan.prefetch.get()).unwrap_or(u16::MAX);
        let options = plan.config.options(plan.clean_start, Some(receive_maximum));
        let (client, eventloop) = AsyncClient::new(options, plan.prefetch.get() + 64);
        let (requeue, received) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            epoch: AtomicU64::new(0),
            name: plan.config.client_id.clone().into(),
            destination: std::mem::take(&mut plan.destination),
            requeue,
        });
        let (sender, receiver) = delivery_channel(plan.prefetch);
        let (ready_tx, ready) = oneshot::channel();
        let health = Arc::new(health);
        let client = shared.client.clone();
        let slot = plan.slot.clone();
        let connect_timeout = plan.config.connect_timeout;
        let what = format!("subscribing to {}", plan.filters.join(", "));
        let drive = tokio::spawn(drive(
            eventloop,
            shared.clone(),
            plan,
            health.clone(),
            ready_tx,
        ));
        let hand_over = tokio::spawn(hand_over(received, shared, sender));
        let waited = connect_timeout * 2;
        let result = match tokio::time::timeout(waited, ready).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MqttError::Closed { what }),
            Err(_) => Err(MqttError::Timeout { what, waited }),
        };
        match result {
            Ok(()) => Ok(Self {
                receiver,
                drive,
                hand_over,
                client,
                slot,
                _health: health,
            }),
            Err(error) => {
                drive.abort();
                hand_over.abort();
                Err(error)
            }
        }
    }
}

/// How long a dropped consumer's connection may take to write the acks
/// queued before it and say DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for MqttConsumer {
    fn drop(&mut self) {
        // No more hand-overs. The acks already queued go out before the
        // DISCONNECT (the request queue is FIFO); every message left
        // unacknowledged stays with the session (a group member's persists;
        // an anonymous one ends with the connection).
        self.hand_over.abort();
        if let Some(slot) = &self.slot {
            slot.closing();
        }
        if self.client.try_disconnect().is_err() {
            self.drive.abort();
            return;
        }
        let drive = self.drive.abort_handle();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drive.abort();
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(CLOSE_TIMEOUT).await;
            drive.abort();
        });
    }
}

#[async_trait]
impl Consumer for MqttConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    fn try_recv(&mut self) -> Option<Delivery> {
        self.receiver.try_recv()
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        // No new deliveries; the connection stays for the acks of those
        // handed out. The subscription stays too: a group keeps receiving
        // into this member's session while it is away.
        self.receiver.close();
        Ok(())
    }
}

async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    plan: Plan,
    health: Arc<HealthSlot>,
    ready: oneshot::Sender<Result<(), MqttError>>,
) {
    let mut ready = Some(ready);
    // Released when this task ends: a new member of the group waits for it.
    let _slot = plan.slot.clone();
    let mut pauses = plan.config.pauses();
    let mut awaiting_subacks = 0usize;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                shared.epoch.fetch_add(1, Ordering::SeqCst);
                pauses.reset();
                health.up();
                // Subscribe on every connection, resumed session or not:
                // Mosquitto (2.0) restores a persistent session's queued
                // messages from its store after a restart but not its
                // shared subscriptions, and subscribing again is harmless.
                for filter in &plan.filters {
                    if shared
                        .client
                        .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                        .is_ok()
                    {
                        awaiting_subacks += 1;
                    }
                }
                for filter in &plan.unsubscribe {
                    let _ = shared.client.try_unsubscribe(filter.clone());
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let checked = check_suback(&plan.filters, &ack.return_codes);
                awaiting_subacks = awaiting_subacks.saturating_sub(1);
                if let Err(error) = checked {
                    tracing::error!(error = %error, "MQTT subscription refused");
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(error));
                        return;
                    }
                } else if awaiting_subacks == 0 {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let received = Received {
                    redelivered: publish.dup,
                    publish,
                    epoch: shared.epoch.load(Ordering::SeqCst),
                };
                if shared.requeue.send(received).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(rumqttc::v5::ConnectionError::RequestsDone) => return,
            Err(error) => {
                // Deliveries of the lost connection can no longer be acked.
                shared.epoch.fetch_add(1, Ordering::SeqCst);
                let pause = pauses.next_pause();
                let reason = format!(
                    "consumer `{}` on {}: {error}; reconnecting in {pause:?}",
                    shared.name,
                    plan.config.broker()
                );
                health.down(reason);
                if ready.is_some() {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(MqttError::Connection {
                            what: format!("subscribing to {}", plan.filters.join(", ")),
                            broker: plan.config.broker(),
                            source: error,
                        }));
                    }
                    return;
                }
                if pauses.failures() == 1 || pauses.failures().is_power_of_two() {
                    tracing::warn!(
                        consumer = %shared.name,
                        broker = %plan.config.broker(),
                        error = %error,
                        "MQTT consumer connection lost; reconnecting in {pause:?}"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn hand_over(
    mut received: mpsc::UnboundedReceiver<Received>,
    shared: Arc<Shared>,
    sender: DeliverySender,
) {
    let mut sequence = 0u64;
    while let Some(item) = received.recv().await {
        if item.epoch != shared.epoch.load(Ordering::SeqCst) {
            continue; // its connection is gone: the broker sends it again
        }
        sequence += 1;
        let message = mapping::message(&shared.destination, &item.publish);
        let handle = MqttDelivery {
            shared: shared.clone(),
            sequence,
            received: Some(item),
        };
        if sender.send(message, Box::new(handle)).await.is_err() {
            return; // the consumer is gone; the message stays unacked
        }
    }
}

struct MqttDelivery {
    shared: Arc<Shared>,
    sequence: u64,
    received: Option<Received>,
}

impl MqttDelivery {
    fn take(&mut self) -> Result<Received, BinderError> {
        let received = self.received.take().ok_or_else(|| {
            BinderError::closed(format!("delivery {} was settled already", self.id()))
        })?;
        if received.epoch != self.shared.epoch.load(Ordering::SeqCst) {
            return Err(MqttError::StaleDelivery {
                id: self.id().to_string(),
            }
            .into());
        }
        Ok(received)
    }
}

impl DeliveryHandle for MqttDelivery {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        Box::pin(async move {
            let received = self.take()?;
            self.shared
                .client
                .ack(&received.publish)
                .await
                .map_err(|error| {
                    BinderError::closed(format!(
                        "acknowledging delivery {}: the MQTT client is closed",
                        self.id()
                    ))
                    .with_source(error)
                })
        })
    }

    fn nack(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        Box::pin(async move {
            let mut received = self.take()?;
            if requeue {
                // MQTT cannot give one message back to the broker: it stays
                // unacknowledged there and is handed out again here, after
                // the messages already received.
                received.redelivered = true;
                self.shared.requeue.send(received).map_err(|_| {
                    BinderError::closed(format!(
                        "requeueing delivery {}: the consumer is gone",
                        self.id()
                    ))
                })
            } else {
                // MQTT has no reject: acknowledging drops the message.
                self.shared
                    .client
                    .ack(&received.publish)
                    .await
                    .map_err(|error| {
                        BinderError::closed(format!(
                            "rejecting delivery {}: the MQTT client is closed",
                            self.id()
                        ))
                        .with_source(error)
                    })
            }
        })
    }

    fn id(&self) -> DeliveryId {
        DeliveryId::in_queue(self.shared.name.clone(), self.sequence)
    }

    fn redelivered(&self) -> bool {
        self.received.as_ref().is_some_and(|r| r.redelivered)
    }

    fn dead_letter_headers(&self, headers: &mut Headers) {
        if let Some(received) = &self.received {
            headers.insert_bytes(
                "x-original-topic",
                Bytes::copy_from_slice(&received.publish.topic),
            );
        }
    }
}
