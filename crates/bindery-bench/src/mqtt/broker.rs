//! The broker side of the MQTT scenario: client options both sides share,
//! fresh topic names per round, the sessions a round needs (the group
//! member's, holding the backlog, and a sink's, so outputs have a
//! subscriber), preloading the backlog and ending those sessions after a
//! round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bindery::mqtt::mapping::BrokerUrl;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

use crate::order::Order;

/// How to get a broker, for failure messages.
pub const START_HINT: &str = "start it with `scripts/brokers/ensure-mosquitto.sh` \
     (installs and starts Mosquitto at 127.0.0.1:1883), or point BINDERY_TEST_MQTT_URL at one";

/// The group of the input: its shared subscription is `$share/bench/...`.
pub const GROUP: &str = "bench";

/// The client-id prefix of the bindery app: its group member's session is
/// `<prefix>.<destination>.<group>.0` (the binder's documented naming).
pub const BINDERY_PREFIX: &str = "bindery-bench";

/// How long the sessions of a round outlive their connections: long
/// enough for a round, short enough that an interrupted run's sessions go.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(600);

/// Publishes unacknowledged at once while preloading. Mosquitto holds at
/// most `max_queued_messages` (100,000 in `ensure-mosquitto.sh`) per
/// offline session, which bounds the backlog.
const PRELOAD_INFLIGHT: u16 = 1_000;

/// The broker: `BINDERY_TEST_MQTT_URL`, as for the tests, else the local
/// one.
pub fn url() -> String {
    std::env::var("BINDERY_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

/// MQTT 5 options for client `id` as the binder sets them: manual acks,
/// `clean_start`, this round's session expiry, `receive_maximum` as given.
pub fn options(id: &str, clean_start: bool, receive_maximum: Option<u16>) -> MqttOptions {
    let url = url();
    let broker = BrokerUrl::parse(&url)
        .unwrap_or_else(|error| panic!("BINDERY_TEST_MQTT_URL: {error}\n{START_HINT}"));
    let mut options = MqttOptions::new(id, broker.host, broker.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(clean_start)
        .set_manual_acks(true)
        .set_session_expiry_interval(Some(u32::try_from(SESSION_EXPIRY.as_secs()).unwrap_or(600)))
        .set_receive_maximum(receive_maximum);
    if let Some((user, password)) = broker.credentials {
        options.set_credentials(user, password);
    }
    options
}

/// The next event, or a panic that says how to start the broker.
pub async fn next(eventloop: &mut EventLoop, what: &str) -> Event {
    eventloop.poll().await.unwrap_or_else(|error| {
        panic!(
            "MQTT broker at {}, {what}: {error}\n{START_HINT}",
            bindery::mqtt::redact_url(&url())
        )
    })
}

/// The properties of every JSON order, as the binder publishes them.
pub fn json_properties() -> PublishProperties {
    PublishProperties {
        content_type: Some("application/json".to_owned()),
        ..PublishProperties::default()
    }
}

/// The topics and sessions of one round, unique across rounds and runs.
#[derive(Clone, Debug)]
pub struct Names {
    round: String,
}

impl Names {
    /// Fresh names tagged with `side` (`raw`, `bindery`).
    pub fn fresh(side: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            round: format!("bench-{side}-{}-{stamp}-{next}", std::process::id()),
        }
    }

    /// The input destination (topic), whose group session holds the
    /// backlog.
    pub fn input(&self) -> String {
        format!("{}-in", self.round)
    }

    /// The output destination (topic).
    pub fn output(&self) -> String {
        format!("{}-out", self.round)
    }

    /// The group's shared subscription of the input, as the binder
    /// subscribes it (`#` covers the destination's own topic).
    pub fn group_filter(&self) -> String {
        format!("$share/{GROUP}/{}/#", self.input())
    }

    /// The raw side's group member session.
    pub fn raw_member(&self) -> String {
        format!("{}-member", self.round)
    }

    /// The bindery app's group member session (slot 0).
    pub fn bindery_member(&self) -> String {
        format!("{BINDERY_PREFIX}.{}.{GROUP}.0", self.input())
    }

    /// The session whose QoS 0 subscription makes outputs routable.
    fn sink(&self) -> String {
        format!("{}-sink", self.round)
    }
}

/// Prepares a round whose group member is session `member`: creates that
/// session subscribed to the group's filter and the sink's session, then
/// publishes `messages` JSON orders to the input at QoS 1, every one
/// acknowledged, so `member`'s session holds them all.
pub async fn prepare(names: &Names, member: &str, messages: u64) {
    session(member, &names.group_filter(), QoS::AtLeastOnce).await;
    // QoS 0 and offline: Mosquitto keeps nothing for it, yet PUBACKs report
    // a matching subscriber.
    session(&names.sink(), &names.output(), QoS::AtMostOnce).await;
    preload(&names.input(), messages).await;
}

/// Ends the sessions of a round (`member` and the sink's).
pub async fn delete(names: &Names, member: &str) {
    for id in [member.to_owned(), names.sink()] {
        end_session(&id).await;
    }
}

/// Creates (or resumes) persistent session `id` subscribed to `filter`,
/// then disconnects, leaving it on the broker.
async fn session(id: &str, filter: &str, qos: QoS) {
    let (client, mut eventloop) = AsyncClient::new(options(id, false, Some(1)), 16);
    let what = format!("creating session `{id}`");
    loop {
        match next(&mut eventloop, &what).await {
            Event::Incoming(Packet::ConnAck(_)) => {
                client.subscribe(filter, qos).await.expect("subscribe");
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                assert!(
                    ack.return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    "subscribing `{filter}` refused: {:?}",
                    ack.return_codes
                );
                client.disconnect().await.expect("disconnect");
            }
            Event::Outgoing(Outgoing::Disconnect) => return,
            _ => {}
        }
    }
}

/// Connects `id` with a clean start and no session expiry, so the broker
/// drops its session and what the session held.
async fn end_session(id: &str) {
    let mut options = options(id, true, None);
    options.set_session_expiry_interval(Some(0));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let what = format!("ending session `{id}`");
    loop {
        match next(&mut eventloop, &what).await {
            Event::Incoming(Packet::ConnAck(_)) => {
                client.disconnect().await.expect("disconnect");
            }
            Event::Outgoing(Outgoing::Disconnect) => return,
            _ => {}
        }
    }
}

/// Publishes `messages` JSON orders to `topic` at QoS 1 and waits for
/// every PUBACK.
async fn preload(topic: &str, messages: u64) {
    let id = format!("{topic}-preload");
    let mut options = options(&id, true, None);
    options.set_outgoing_inflight_upper_limit(PRELOAD_INFLIGHT);
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(PRELOAD_INFLIGHT));
    let topic = topic.to_owned();
    let publishing = tokio::spawn(async move {
        for id in 0..messages {
            client
                .publish_with_properties(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    Order::encoded(id),
                    json_properties(),
                )
                .await
                .expect("preload publish");
        }
        client
    });
    let mut acked = 0u64;
    while acked < messages {
        if let Event::Incoming(Packet::PubAck(ack)) = next(&mut eventloop, "preloading").await {
            assert_eq!(
                ack.reason,
                PubAckReason::Success,
                "a preloaded message was not taken"
            );
            acked += 1;
        }
    }
    let client = publishing.await.expect("the preload publisher");
    client.disconnect().await.expect("disconnect");
    while !matches!(
        next(&mut eventloop, "preloading").await,
        Event::Outgoing(Outgoing::Disconnect)
    ) {}
}
