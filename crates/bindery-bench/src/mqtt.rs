//! MQTT throughput: JSON orders published at QoS 1 by a feeder client while
//! a processor in a shared subscription consumes them (receive maximum
//! [`PREFETCH`], manual acks), decodes, changes a field, encodes, publishes
//! the result at QoS 1 and acknowledges the input once the output's PUBACK
//! is in: a bindery app on the MQTT binder, and raw rumqttc doing the same.
//!
//! An MQTT broker keeps messages only for sessions that exist, so the
//! backlog cannot be preloaded as on the other brokers: the clock starts
//! when the feeder starts, once the processor has subscribed, and stops at
//! the processor's last acknowledgement. Both sides have the same feeder
//! and the same sink (a client subscribed to the output, which makes the
//! outputs routable), so they differ only in the processor. The broker is
//! `BINDERY_TEST_MQTT_URL` (default `mqtt://127.0.0.1:1883`;
//! `scripts/brokers/ensure-mosquitto.sh` starts it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bindery::prelude::*;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

use crate::order::Order;

/// The processor's receive maximum, and so its unacknowledged inputs at
/// most, on both sides.
pub const PREFETCH: u16 = 100;

/// The shared subscription's group on both sides.
const GROUP: &str = "bench";

/// The input binding of the bindery app, whose `acked` count ends a run.
const INPUT_BINDING: &str = "process-in-0";

/// Requests a client may queue before `publish` waits.
const REQUESTS: usize = 1_000;

/// The broker under test.
pub fn url() -> String {
    std::env::var("BINDERY_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

/// `host` and `port` of [`url`].
fn address() -> (String, u16) {
    let url = url();
    let rest = url.strip_prefix("mqtt://").unwrap_or(&url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .unwrap_or((rest, "1883"));
    (host.to_owned(), port.parse().expect("a port"))
}

/// The topics and client ids of one run.
struct Names {
    round: String,
}

impl Names {
    fn fresh(side: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            round: format!("bench-{side}-{}-{next}", std::process::id()),
        }
    }

    fn input(&self) -> String {
        format!("{}.in", self.round)
    }

    fn output(&self) -> String {
        format!("{}.out", self.round)
    }

    fn client(&self, role: &str) -> String {
        format!("{}.{role}", self.round)
    }
}

fn options(client_id: String, manual_acks: bool) -> MqttOptions {
    let (host, port) = address();
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_clean_start(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(manual_acks);
    options
}

/// Polls until the broker acknowledged the connection.
async fn connected(eventloop: &mut EventLoop) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return,
            Ok(_) => {}
            Err(e) => panic!(
                "the MQTT broker at {} does not answer: {e}; start it with scripts/brokers/ensure-mosquitto.sh",
                url()
            ),
        }
    }
}

/// Subscribes `filter` at QoS 1 and polls until the broker acknowledged it.
async fn subscribed(client: &AsyncClient, eventloop: &mut EventLoop, filter: String) {
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.expect("poll") {
            return;
        }
    }
}

/// A client subscribed to the output that takes every message (automatic
/// acks), until dropped.
async fn sink(names: &Names) -> tokio::task::JoinHandle<()> {
    let (client, mut eventloop) = AsyncClient::new(options(names.client("sink"), false), REQUESTS);
    connected(&mut eventloop).await;
    subscribed(&client, &mut eventloop, names.output()).await;
    tokio::spawn(async move {
        let _client = client;
        while eventloop.poll().await.is_ok() {}
    })
}

/// Publishes `messages` orders to the input at QoS 1, as fast as the
/// broker takes them; ends once every PUBACK is in.
async fn feed(names: &Names, messages: u64) -> tokio::task::JoinHandle<()> {
    let (client, mut eventloop) =
        AsyncClient::new(options(names.client("feeder"), false), REQUESTS);
    connected(&mut eventloop).await;
    let topic = names.input();
    tokio::spawn(async move {
        let publishing = tokio::spawn(async move {
            for id in 0..messages {
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, Order::encoded(id))
                    .await
                    .expect("publish");
            }
            client
        });
        let mut acked = 0;
        while acked < messages {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("poll") {
                acked += 1;
            }
        }
        drop(publishing.await);
    })
}

/// Raw rumqttc, as its examples write a QoS 1 consumer with manual acks:
/// one client in the shared subscription (receive maximum [`PREFETCH`])
/// publishes each processed input and acks the input on the output's
/// PUBACK. Returns messages per second.
pub async fn raw_throughput(messages: u64) -> f64 {
    let names = Names::fresh("raw");
    let sink = sink(&names).await;
    let mut options = options(names.client("processor"), true);
    options.set_receive_maximum(Some(PREFETCH));
    // The loop below queues outputs and acks without waiting (it is the
    // event loop): room for a whole run, so a queued request never fails.
    let room = usize::try_from(messages).expect("a run fits in memory") * 2 + REQUESTS;
    let (client, mut eventloop) = AsyncClient::new(options, room);
    connected(&mut eventloop).await;
    subscribed(
        &client,
        &mut eventloop,
        format!("$share/{GROUP}/{}", names.input()),
    )
    .await;

    let started = Instant::now();
    let feeder = feed(&names, messages).await;
    let output = names.output();
    // Inputs whose output was handed to the client, waiting for its packet
    // id; then waiting for its PUBACK.
    let mut unnumbered = VecDeque::new();
    let mut awaiting = HashMap::new();
    let mut done = 0u64;
    while done < messages {
        match eventloop.poll().await.expect("poll") {
            Event::Incoming(Packet::Publish(input)) => {
                client
                    .try_publish(
                        output.clone(),
                        QoS::AtLeastOnce,
                        false,
                        Order::process_bytes(&input.payload),
                    )
                    .expect("publish");
                unnumbered.push_back(input);
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let input = unnumbered.pop_front().expect("an input for each output");
                awaiting.insert(pkid, input);
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let input = awaiting
                    .remove(&ack.pkid)
                    .expect("an input for each PUBACK");
                client.try_ack(&input).expect("ack");
                done += 1;
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    feeder.await.expect("feeder");
    sink.abort();
    messages as f64 / elapsed.as_secs_f64()
}

/// A bindery app over the MQTT binder doing the same; returns messages per
/// second.
pub async fn bindery_throughput(messages: u64) -> f64 {
    let names = Names::fresh("bindery");
    let sink = sink(&names).await;
    let app = App::builder()
        .without_registered_functions()
        .function("process", crate::order::process)
        .env(Vec::<(String, String)>::new())
        .config_toml(&config(&names))
        .build()
        .expect("benchmark configuration");
    let running = app.start().await.expect("start");
    running.ready().await;

    let started = Instant::now();
    let feeder = feed(&names, messages).await;
    crate::drain::wait_for_acks(&running, INPUT_BINDING, messages).await;
    let elapsed = started.elapsed();
    feeder.await.expect("feeder");
    running.shutdown().await.expect("shutdown");
    sink.abort();
    messages as f64 / elapsed.as_secs_f64()
}

/// The app's configuration: the input in group [`GROUP`], the output to
/// the sink's topic.
fn config(names: &Names) -> String {
    let url = url();
    let (input, output, prefix) = (names.input(), names.output(), names.client("app"));
    format!(
        r#"
        [bindery]
        definition = "process"
        default-binder = "mqtt"
        [binders.mqtt]
        type = "mqtt"
        url = "{url}"
        client-id-prefix = "{prefix}"
        session-expiry = "1m"
        [bindings.process-in-0]
        destination = "{input}"
        group = "{GROUP}"
        content-type = "application/json"
        [bindings.process-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.process-out-0]
        destination = "{output}"
        content-type = "application/json"
        "#
    )
}
