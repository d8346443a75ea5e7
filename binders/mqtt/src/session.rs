//! Client settings shared by every connection of a binder, the slots that
//! name group members' sessions, and provisioning of sessions.
//!
//! A group member's client id is `<client-id-prefix>.<destination>.<group>.<slot>`:
//! the lowest slot no consumer of this process holds. A consumer bound
//! again after it went away (dropped, crashed, restarted) takes the slot
//! back and with it its persistent session, so the QoS 1 messages that
//! session holds unacknowledged or queued are delivered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use bindery_core::binder::kit::Pauses;
use parking_lot::Mutex;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::error::MqttError;
use crate::mapping::BrokerUrl;

/// What every client of a binder connects with.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfig {
    pub(crate) url: BrokerUrl,
    pub(crate) client_id: String,
    pub(crate) keep_alive: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) session_expiry: u32,
    pub(crate) max_packet_size: u32,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
}

impl ClientConfig {
    /// This config with another client id and session expiry.
    pub(crate) fn with_client(&self, client_id: String, session_expiry: u32) -> Self {
        Self {
            client_id,
            session_expiry,
            ..self.clone()
        }
    }

    /// `host:port`.
    pub(crate) fn broker(&self) -> String {
        self.url.address()
    }

    /// The reconnect back-off.
    pub(crate) fn pauses(&self) -> Pauses {
        Pauses::doubling(self.reconnect_initial, self.reconnect_max)
    }

    /// rumqttc options: MQTT 5, manual acks, `clean_start` as given, the
    /// receive maximum (how many unacknowledged QoS 1 messages the broker
    /// may send at once) as given.
    pub(crate) fn options(&self, clean_start: bool, receive_maximum: Option<u16>) -> MqttOptions {
        let mut options =
            MqttOptions::new(self.client_id.clone(), self.url.host.clone(), self.url.port);
        options
            .set_keep_alive(self.keep_alive.max(Duration::from_secs(1)))
            .set_clean_start(clean_start)
            .set_manual_acks(true)
            .set_connection_timeout(self.connect_timeout.as_secs().max(1))
            .set_session_expiry_interval(Some(self.session_expiry))
            .set_receive_maximum(receive_maximum)
            .set_max_packet_size(Some(self.max_packet_size));
        if let Some((user, password)) = &self.url.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        options
    }
}

type SlotKey = (String, String);

/// Whether a slot's consumer is live or still closing its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Held,
    Closing,
}

static SLOTS: LazyLock<Mutex<HashMap<SlotKey, BTreeMap<usize, SlotState>>>> =
    LazyLock::new(Default::default);

/// How long a new member waits for a closing one to finish sending its
/// acknowledgements before it takes the session over anyway.
const CLOSING_WAIT: Duration = Duration::from_secs(5);

/// A group member's session name, held while its consumer lives.
#[derive(Debug)]
pub(crate) struct Slot {
    key: SlotKey,
    number: usize,
}

impl Slot {
    /// Takes the lowest slot of `base` (a client id without its slot
    /// number) on `broker` that no consumer of this process holds. When
    /// that slot's previous consumer is still closing (flushing its acks),
    /// waits for it, so the session is resumed after those acks.
    pub(crate) async fn claim(broker: &str, base: &str) -> Self {
        let key = (broker.to_owned(), base.to_owned());
        let deadline = tokio::time::Instant::now() + CLOSING_WAIT;
        loop {
            {
                let mut slots = SLOTS.lock();
                let states = slots.entry(key.clone()).or_default();
                let number = (0..)
                    .find(|n| states.get(n) != Some(&SlotState::Held))
                    .unwrap_or_default();
                if states.get(&number) != Some(&SlotState::Closing)
                    || tokio::time::Instant::now() >= deadline
                {
                    states.insert(number, SlotState::Held);
                    return Self { key, number };
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether a consumer of this process holds slot 0 of `base`.
    pub(crate) fn first_is_held(broker: &str, base: &str) -> bool {
        SLOTS
            .lock()
            .get(&(broker.to_owned(), base.to_owned()))
            .is_some_and(|states| states.contains_key(&0))
    }

    /// The client id of this slot.
    pub(crate) fn client_id(&self) -> String {
        slot_client_id(&self.key.1, self.number)
    }

    /// The consumer is going away; the slot is free once this is dropped.
    pub(crate) fn closing(&self) {
        if let Some(states) = SLOTS.lock().get_mut(&self.key) {
            states.insert(self.number, SlotState::Closing);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = SLOTS.lock();
        if let Some(states) = slots.get_mut(&self.key) {
            states.remove(&self.number);
            if states.is_empty() {
                slots.remove(&self.key);
            }
        }
    }
}

/// The client id of slot `number` of `base`.
pub(crate) fn slot_client_id(base: &str, number: usize) -> String {
    format!("{base}.{number}")
}

/// The client id of a group's members without the slot number.
pub(crate) fn member_base(prefix: &str, destination: &str, group: &str) -> String {
    format!("{prefix}.{destination}.{group}")
}

/// Creates (or finds) the persistent session `config.client_id` with
/// subscriptions to `filters`, then disconnects, leaving the session on the
/// broker: QoS 1 messages that match are kept for it until a consumer
/// resumes it. Messages the session already held are left unacknowledged
/// and so kept.
pub(crate) async fn provision(config: &ClientConfig, filters: &[String]) -> Result<(), MqttError> {
    let options = config.options(false, Some(1));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let what = format!("provisioning the session `{}`", config.client_id);
    let work = async {
        let mut waiting = 0usize;
        loop {
            let event = eventloop
                .poll()
                .await
                .map_err(|source| MqttError::Connection {
                    what: what.clone(),
                    broker: config.broker(),
                    source,
                })?;
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    for filter in filters {
                        client
                            .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                            .map_err(|_| MqttError::Closed { what: what.clone() })?;
                        waiting += 1;
                    }
                }
                Event::Incoming(Packet::SubAck(ack)) => {
                    check_suback(filters, &ack.return_codes)?;
                    waiting = waiting.saturating_sub(1);
                    if waiting == 0 {
                        client
                            .try_disconnect()
                            .map_err(|_| MqttError::Closed { what: what.clone() })?;
                    }
                }
                Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
                _ => {}
            }
        }
    };
    tokio::time::timeout(config.connect_timeout * 2, work)
        .await
        .map_err(|_| MqttError::Timeout {
            what: what.clone(),
            waited: config.connect_timeout * 2,
        })?
}

/// Fails on the first refused subscription of a SUBACK.
pub(crate) fn check_suback(
    filters: &[String],
    codes: &[SubscribeReasonCode],
) -> Result<(), MqttError> {
    for (i, code) in codes.iter().enumerate() {
        if !matches!(code, SubscribeReasonCode::Success(_)) {
            return Err(MqttError::SubscribeRefused {
                filter: filters.get(i).cloned().unwrap_or_default(),
                reason: format!("{code:?}"),
            });
        }
    }
    Ok(())
}
