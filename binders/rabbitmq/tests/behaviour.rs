//! The RabbitMQ binder against a real broker, beyond the conformance
//! suite: recovery from forced connection closes and deleted queues, a
//! broker that is down at start, the declared topology as Spring declares
//! it, unroutable sends, redrive, and password redaction.
//!
//! Needs RabbitMQ at `BINDERY_TEST_RABBITMQ_URI` (default
//! guest@127.0.0.1:5672) with its management API on 15672, and
//! `rabbitmqctl` on the PATH: start it with
//! `scripts/brokers/ensure-rabbitmq.sh`. Tests close only their own
//! connections (named after a unique prefix), so they run in parallel and
//! beside other users of the broker.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bindery::binder::{
    Binder, BinderExt, BindingOptions, Consumer, ConsumerSpec, Delivery, Producer, ProducerSpec,
};
use bindery::message::names;
use bindery::rabbitmq::headers as amqp;
use bindery::rabbitmq::{RabbitBinder, RabbitBindingOptions, RabbitError, RabbitSettings};
use bindery::{App, BinderError, Message, RunningApp, State};
use bindery_testkit::{init_logging, unique_name};
use bindery_tests::rabbitmq::{
    close_connections, connected_binder, encode, management, management_delete, management_has,
    management_put, settings, uri,
};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;

/// `[bindings.X.rabbitmq]` options as validation would parse them.
fn rabbit_options(section: serde_json::Value) -> BindingOptions {
    BindingOptions::parse::<RabbitBindingOptions>(section).expect("valid RabbitMQ binding options")
}

const TIMEOUT: Duration = Duration::from_secs(15);

// ----------------------------------------------------------------------
// Helpers

/// Waits for `done`, polling, failing after `timeout`.
async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recv(consumer: &mut dyn Consumer, what: &str) -> Delivery {
    match tokio::time::timeout(TIMEOUT, consumer.recv()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("{what}: the consumer ended"),
        Err(_) => panic!("{what}: nothing arrived within {TIMEOUT:?}"),
    }
}

async fn send(producer: &dyn Producer, message: Message) {
    producer
        .send(message)
        .await
        .expect("send")
        .await
        .expect("confirm");
}

fn text(body: impl Into<String>) -> Message {
    Message::new(Bytes::from(body.into())).with_content_type("text/plain")
}

/// Starts an app on `binder` (named `rabbit`) with `config`.
async fn start_app(
    builder: bindery::AppBuilder,
    binder: Arc<RabbitBinder>,
    config: &str,
) -> RunningApp {
    let running = builder
        .without_registered_functions()
        .binder("rabbit", binder)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("start");
    tokio::time::timeout(TIMEOUT, running.ready())
        .await
        .expect("the app binds");
    running
}

/// The binder error's own cause, as the RabbitMQ binder raised it.
fn rabbit_error(error: &BinderError) -> &RabbitError {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<RabbitError>())
        .unwrap_or_else(|| panic!("not a RabbitMQ binder error: {error:?}"))
}

/// A TCP gate in front of the broker: closed, it accepts connections and
/// hangs up at once (as a broker that is down, but countable); open, it
/// forwards them. Cutting it drops every forwarded connection, as a broker
/// restart does.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    piped: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    fn closed(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let open = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let piped: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_open, counted, streams) = (open.clone(), attempts.clone(), piped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                if !is_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                if let Ok(server) = TcpStream::connect(upstream) {
                    let mut streams = streams.lock();
                    streams.push(client.try_clone().expect("clone"));
                    streams.push(server.try_clone().expect("clone"));
                    pipe(
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    );
                    pipe(server, client);
                }
            }
        });
        Self {
            port,
            open,
            attempts,
            piped,
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Closes the gate and drops every connection through it.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.piped.lock().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// The test broker's URI with this gate as host and port.
    fn uri(&self) -> String {
        let (mut gated, _) = broker_address();
        gated.authority.host = "127.0.0.1".to_owned();
        gated.authority.port = self.port;
        gated.to_string()
    }
}

/// Copies `from` to `to` until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// The broker's address, from the test URI.
fn broker_address() -> (bindery::rabbitmq::lapin::uri::AMQPUri, SocketAddr) {
    let parsed: bindery::rabbitmq::lapin::uri::AMQPUri = uri().parse().expect("a valid test URI");
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(
        parsed.authority.host.as_str(),
        parsed.authority.port,
    ))
    .expect("the broker's host resolves")
    .next()
    .expect("an address");
    (parsed, address)
}

// ----------------------------------------------------------------------
// Recovery

async fn forward(text: String) -> String {
    text
}

/// Forces every connection of the test closed twice while 10,000 messages
/// flow through a processor with confirms: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_connection_close_twice_loses_nothing() {
    init_logging();
    const COUNT: u32 = 10_000;
    let (app_binder, prefix) = connected_binder("bindery-fault").await;
    // The test's own binder shares the prefix: the closes hit it as well,
    // so its publishing and consuming recover too.
    let observer = Arc::new(RabbitBinder::new("observer", settings(&prefix)));
    let input = unique_name("fault-in");
    let output = unique_name("fault-out");
    let config = format!(
        r#"
        [bindery]
        default-binder = "rabbit"
        [bindings.forward-in-0]
        destination = "{input}"
        group = "work"
        content-type = "text/plain"
        [bindings.forward-in-0.consumer]
        prefetch = 100
        [bindings.forward-out-0]
        destination = "{output}"
        content-type = "text/plain"
        [bindings.forward-out-0.producer]
        required-groups = ["check"]
        "#
    );
    let running = start_app(
        App::builder().function("forward", forward),
        app_binder.clone(),
        &config,
    )
    .await;

    let counts: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let mut checked = observer
        .consumer(
            &ConsumerSpec::new("check", &output)
                .group("check")
                .prefetch(200),
        )
        .await
        .expect("bind the checking consumer");
    let collector = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Some(delivery) = checked.recv().await {
                let n: u32 = std::str::from_utf8(delivery.message().payload())
                    .unwrap()
                    .parse()
                    .unwrap();
                *counts.lock().entry(n).or_default() += 1;
                // An ack lost to a close is redelivered: a duplicate.
                let _ = delivery.ack().await;
            }
        })
    };
    let producer = observer
        .producer(&ProducerSpec::new("feed", &input).required_groups(["work"]))
        .await
        .expect("bind the feeding producer");
    let started = Instant::now();
    let mut feeder = tokio::spawn(async move {
        // Up to 500 confirms in flight, polled while sending, so sends
        // caught by a close are published again as it happens. Paced at
        // about 1,000 a second, so the closes fall in the middle of the
        // flow (rabbitmqctl takes a second or two).
        let mut pending = FuturesUnordered::new();
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for i in 0..COUNT {
            if i % 10 == 0 {
                pace.tick().await;
            }
            let confirmation = producer.send(text(i.to_string())).await.expect("send");
            pending.push(confirmation);
            while pending.len() >= 500 {
                pending
                    .next()
                    .await
                    .unwrap()
                    .expect("every send is confirmed");
            }
        }
        while let Some(confirmed) = pending.next().await {
            confirmed.expect("every send is confirmed");
        }
    });

    let distinct = || counts.lock().len();
    let mut closes = Vec::new();
    for at in [2_000, 6_000] {
        wait_until(
            Duration::from_secs(120),
            &format!("{at} messages through"),
            || distinct() >= at || feeder.is_finished(),
        )
        .await;
        assert!(
            !feeder.is_finished() || distinct() >= at,
            "the feeder stopped early: {:?}",
            (&mut feeder).await
        );
        let prefix = prefix.clone();
        let closed = tokio::task::spawn_blocking(move || close_connections(&prefix))
            .await
            .unwrap();
        assert_eq!(
            closed, 4,
            "closes the app's and the test's connections, publishing and consuming"
        );
        let after = distinct();
        assert!(
            after < COUNT as usize,
            "the close came after the flow ({after} through)"
        );
        closes.push(after);
    }
    wait_until(Duration::from_secs(180), "every message through", || {
        distinct() >= COUNT as usize || feeder.is_finished()
    })
    .await;
    feeder.await.expect("the feeder confirmed everything");
    wait_until(Duration::from_secs(60), "every message through", || {
        distinct() >= COUNT as usize
    })
    .await;
    let elapsed = started.elapsed();
    let (received, distinct) = {
        let counts = counts.lock();
        (
            counts.values().map(|c| *c as usize).sum::<usize>(),
            counts.len(),
        )
    };
    let losses = COUNT as usize - distinct;
    let duplicates = received - distinct;
    println!(
        "forced close of 4 connections twice (done at {closes:?} through): {COUNT} sent, {received} received, \
         {distinct} distinct, losses = {losses}, duplicates = {duplicates}, in {elapsed:.1?}"
    );
    assert_eq!(losses, 0, "messages lost");
    wait_until(TIMEOUT, "the app reports itself up again", || {
        running.health().is_up()
    })
    .await;
    let stats = running
        .shutdown()
        .await
        .expect("the app ran on and shut down cleanly");
    println!("app stats: {:?}", stats.binding("forward-in-0"));
    collector.abort();
}

async fn record(text: String, State(seen): State<Arc<Mutex<Vec<String>>>>) {
    seen.lock().push(text);
}

/// Deleting the queue under a running consumer: the binder declares it
/// again and consumes again; the app never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_queue_is_declared_again_and_consumed() {
    init_logging();
    let (binder, _) = connected_binder("bindery-deleted").await;
    let destination = unique_name("deleted");
    let config = format!(
        r#"
        [bindery]
        default-binder = "rabbit"
        [bindings.record-in-0]
        destination = "{destination}"
        group = "g"
        content-type = "text/plain"
        "#
    );
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut running = start_app(
        App::builder()
            .function("record", record)
            .state(seen.clone()),
        binder.clone(),
        &config,
    )
    .await;
    let producer = binder
        .producer(&ProducerSpec::new("feed", &destination))
        .await
        .unwrap();
    send(producer.as_ref(), text("before")).await;
    wait_until(TIMEOUT, "the first message", || {
        seen.lock().contains(&"before".to_owned())
    })
    .await;

    let queue = format!("{destination}.g");
    management_delete(&format!("queues/%2f/{}", encode(&queue)));
    // Sends fail as unroutable until the queue is back; keep sending until
    // one gets through.
    let deadline = Instant::now() + TIMEOUT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = producer
            .send(text(format!("after-{attempt}")))
            .await
            .unwrap()
            .await;
        if sent.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue was not declared again: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(TIMEOUT, "a message after the deletion", || {
        seen.lock().iter().any(|s| s.starts_with("after-"))
    })
    .await;
    assert!(
        management_has(&format!("queues/%2f/{}", encode(&queue))),
        "the queue exists again"
    );
    // The app is still running: no binding failed.
    let still_running = tokio::time::timeout(Duration::from_millis(100), running.wait()).await;
    assert!(still_running.is_err(), "the app stopped: {still_running:?}");
    running.shutdown().await.expect("clean shutdown");
}

/// A broker that is down when the app starts: the app stays up, reports
/// itself down, retries with back-off, and binds when the broker comes.
/// The binder is made from configuration (`type = "rabbitmq"`, a `${VAR}`
/// secret); the broker is behind a gate that refuses until opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_binds_when_it_comes_up() {
    init_logging();
    let (broker_uri, upstream) = broker_address();
    // Fail with the start hint if the real broker is not there.
    drop(connected_binder("bindery-down-check").await);
    let gate = Gate::closed(upstream);
    let password = broker_uri.authority.userinfo.password;
    let mut gated: bindery::rabbitmq::lapin::uri::AMQPUri = gate.uri().parse().expect("a URI");
    gated.authority.userinfo.password.clear();
    let gated = gated.to_string().replacen(":@", ":${RABBIT_PASSWORD}@", 1);
    assert!(gated.contains("${RABBIT_PASSWORD}"), "{gated}");
    let destination = unique_name("late");
    let config = format!(
        r#"
        [bindery]
        default-binder = "rabbit"
        [binders.rabbit]
        type = "rabbitmq"
        uri = "{gated}"
        connection-name = "{prefix}"
        [bindings.record-in-0]
        destination = "{destination}"
        group = "g"
        content-type = "text/plain"
        "#,
        prefix = unique_name("bindery-late"),
    );
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let running = App::builder()
        .without_registered_functions()
        .function("record", record)
        .state(seen.clone())
        .config_toml(&config)
        .env([("RABBIT_PASSWORD", password.as_str())])
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("the app starts with the broker down");
    // The runtime retries binding with back-off: 500 ms, 1 s, ...
    wait_until(TIMEOUT, "three connection attempts", || {
        gate.attempts() >= 3
    })
    .await;
    let health = running.health();
    assert!(
        !health.is_up(),
        "health while the broker is down: {health:?}"
    );

    gate.open();
    tokio::time::timeout(Duration::from_secs(30), running.ready())
        .await
        .expect("binds once the broker is up");
    let producer_binder = connected_binder("bindery-late-feed").await.0;
    let producer = producer_binder
        .producer(&ProducerSpec::new("feed", &destination))
        .await
        .unwrap();
    send(producer.as_ref(), text("hello")).await;
    wait_until(TIMEOUT, "the message", || {
        seen.lock().contains(&"hello".to_owned())
    })
    .await;
    wait_until(TIMEOUT, "health up", || running.health().is_up()).await;
    running.shutdown().await.expect("clean shutdown");
}

/// The broker goes away under a running app (every connection dropped,
/// new ones refused) while messages keep arriving: the binder reports
/// itself down, retries with back-off, and once the broker is back
/// consumes everything, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_under_a_running_app_loses_nothing() {
    init_logging();
    let (_, upstream) = broker_address();
    let feeder = connected_binder("bindery-outage-feed").await.0;
    let gate = Gate::closed(upstream);
    gate.open();
    let prefix = unique_name("bindery-outage");
    let binder = Arc::new(RabbitBinder::new(
        "rabbit",
        RabbitSettings::new(gate.uri())
            .connection_name(&prefix)
            .reconnect_interval(Duration::from_millis(100), Duration::from_secs(1)),
    ));
    let destination = unique_name("outage");
    let config = format!(
        r#"
        [bindery]
        default-binder = "rabbit"
        [bindings.record-in-0]
        destination = "{destination}"
        group = "g"
        content-type = "text/plain"
        "#
    );
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let running = start_app(
        App::builder()
            .function("record", record)
            .state(seen.clone()),
        binder.clone(),
        &config,
    )
    .await;
    let producer = feeder
        .producer(&ProducerSpec::new("feed", &destination).required_groups(["g"]))
        .await
        .unwrap();
    let distinct = || seen.lock().iter().collect::<BTreeSet<_>>().len();
    for i in 0..100 {
        send(producer.as_ref(), text(format!("before-{i}"))).await;
    }
    wait_until(TIMEOUT, "messages before the outage", || distinct() >= 100).await;

    gate.cut();
    wait_until(TIMEOUT, "the binder reports itself down", || {
        !binder.health().is_up()
    })
    .await;
    // The broker keeps what arrives meanwhile in the durable group queue.
    for i in 0..100 {
        send(producer.as_ref(), text(format!("during-{i}"))).await;
    }
    let attempts = gate.attempts();
    wait_until(TIMEOUT, "reconnection attempts with back-off", || {
        gate.attempts() >= attempts + 3
    })
    .await;
    assert!(!binder.health().is_up());

    gate.open();
    wait_until(
        Duration::from_secs(30),
        "every message after the outage",
        || distinct() >= 200,
    )
    .await;
    wait_until(TIMEOUT, "the binder reports itself up", || {
        binder.health().is_up()
    })
    .await;
    let received = seen.lock().len();
    println!(
        "outage: 200 sent, {received} received, 200 distinct, duplicates = {}",
        received - 200
    );
    running.shutdown().await.expect("clean shutdown");
}

// ----------------------------------------------------------------------
// Topology and dead letters

#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
struct Refused(String);

async fn refuse(text: String) -> Result<(), bindery::FunctionError> {
    Err(bindery::FunctionError::non_retryable(Refused(text)))
}

fn arguments(queue: &serde_json::Value) -> &serde_json::Value {
    &queue["arguments"]
}

/// The broker holds the exchange, queue, DLX, DLQ and bindings named and
/// typed as Spring declares them, and a dead letter carries every header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_and_dead_letters_are_declared_as_spring_declares_them() {
    init_logging();
    let (binder, _) = connected_binder("bindery-topology").await;
    let destination = unique_name("topo");
    let config = format!(
        r#"
        [bindery]
        default-binder = "rabbit"
        [bindings.refuse-in-0]
        destination = "{destination}"
        group = "billing"
        content-type = "text/plain"
        [bindings.refuse-in-0.consumer]
        binding-routing-keys = ["order.*", "audit.#"]
        "#
    );
    let running = start_app(
        App::builder().function("refuse", refuse),
        binder.clone(),
        &config,
    )
    .await;
    let producer = binder
        .producer(&ProducerSpec::new("feed", &destination))
        .await
        .unwrap();
    send(
        producer.as_ref(),
        text("poison")
            .with_header("trace-id", "t-1")
            .with_routing_key("order.created"),
    )
    .await;
    wait_until(TIMEOUT, "the dead letter", || {
        running.stats().binding("refuse-in-0").dead_lettered == 1
    })
    .await;

    let queue = format!("{destination}.billing");
    let dlq = format!("{queue}.dlq");
    let exchange = management(&format!("exchanges/%2f/{}", encode(&destination)));
    assert_eq!(exchange["type"], "topic");
    assert_eq!(exchange["durable"], true);
    let dlx = management("exchanges/%2f/DLX");
    assert_eq!(dlx["type"], "direct");
    assert_eq!(dlx["durable"], true);
    let group = management(&format!("queues/%2f/{}", encode(&queue)));
    assert_eq!(
        (
            group["durable"].clone(),
            group["exclusive"].clone(),
            group["auto_delete"].clone()
        ),
        (true.into(), false.into(), false.into())
    );
    assert_eq!(arguments(&group)["x-dead-letter-exchange"], "DLX");
    assert_eq!(
        arguments(&group)["x-dead-letter-routing-key"],
        queue.as_str()
    );
    let dead = management(&format!("queues/%2f/{}", encode(&dlq)));
    assert_eq!(dead["durable"], true);
    let keys = |source: &str, target: &str| -> BTreeSet<String> {
        management(&format!(
            "bindings/%2f/e/{}/q/{}",
            encode(source),
            encode(target)
        ))
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["routing_key"].as_str().unwrap().to_owned())
        .collect()
    };
    assert_eq!(
        keys(&destination, &queue),
        BTreeSet::from(["order.*".to_owned(), "audit.#".to_owned()])
    );
    assert_eq!(keys("DLX", &dlq), BTreeSet::from([queue.clone()]));

    // The dead letter, with every SPEC §5 header.
    let spec = running
        .wiring()
        .input("refuse-in-0")
        .unwrap()
        .consumer
        .clone();
    let mut dead_letters = binder.dead_letter_consumer(&spec).await.unwrap();
    let delivery = recv(dead_letters.as_mut(), "the dead letter").await;
    let letter = delivery.message().clone();
    delivery.ack().await.unwrap();
    let headers = letter.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("dead letter lacks `{name}`: {headers:?}"))
            .to_owned()
    };
    assert_eq!(letter.payload(), &Bytes::from_static(b"poison"));
    assert_eq!(header("trace-id"), "t-1");
    assert_eq!(header(names::EXCEPTION_MESSAGE), "refused: poison");
    assert!(header(names::EXCEPTION_STACKTRACE).contains("refused: poison"));
    assert!(header(names::EXCEPTION_FQCN).ends_with("Refused"));
    assert_eq!(header(names::ORIGINAL_DESTINATION), destination);
    assert_eq!(header(names::ORIGINAL_GROUP), "billing");
    assert_eq!(header(names::DELIVERY_ATTEMPTS), "1");
    assert_eq!(header("x-original-exchange"), destination);
    assert_eq!(header("x-original-routingKey"), "order.created");
    assert_eq!(letter.content_type(), Some("text/plain"));
    running.shutdown().await.unwrap();

    // A rejection by a consumer (basic.nack without requeue) lands in the
    // DLQ through the queue's x-dead-letter arguments.
    let raw = ConsumerSpec::new("raw", &destination)
        .group("raw")
        .dead_letter(true);
    let mut consumer = binder.consumer(&raw).await.unwrap();
    send(producer.as_ref(), text("rejected").with_routing_key("x")).await;
    recv(consumer.as_mut(), "the message to reject")
        .await
        .nack(false)
        .await
        .unwrap();
    let mut raw_dead = binder.dead_letter_consumer(&raw).await.unwrap();
    let delivery = recv(raw_dead.as_mut(), "the broker's dead letter").await;
    assert_eq!(
        delivery.message().payload(),
        &Bytes::from_static(b"rejected")
    );
    assert!(
        delivery
            .message()
            .headers()
            .get("x-death")
            .is_some_and(|d| d.contains("rejected")),
        "{:?}",
        delivery.message().headers()
    );
    delivery.ack().await.unwrap();

    // An anonymous subscriber gets an exclusive, auto-deleted `anonymous.*`
    // queue bound to the destination.
    let anonymous = binder
        .consumer(&ConsumerSpec::new("anon", &destination))
        .await
        .unwrap();
    let bound = management(&format!(
        "exchanges/%2f/{}/bindings/source",
        encode(&destination)
    ));
    let name = bound
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["destination"].as_str())
        .find(|d| d.starts_with("anonymous."))
        .expect("an anonymous queue")
        .to_owned();
    let queue = management(&format!("queues/%2f/{}", encode(&name)));
    assert_eq!(
        (
            queue["durable"].clone(),
            queue["exclusive"].clone(),
            queue["auto_delete"].clone()
        ),
        (false.into(), true.into(), true.into())
    );
    drop(anonymous);
}

/// Binding options become queue arguments, types and names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_options_shape_the_declarations() {
    init_logging();
    let (binder, _) = connected_binder("bindery-options").await;
    let destination = unique_name("opts");
    let group = unique_name("quorum-group");
    let parking = unique_name("parking");
    let options = rabbit_options(serde_json::json!({
        "exchange-type": "direct",
        "quorum": true,
        "ttl": "60s",
        "max-length": 1000,
        "single-active-consumer": true,
        "queue-name-group-only": true,
        "dead-letter-queue-name": parking,
    }));
    let spec = ConsumerSpec::new("opts", &destination)
        .group(&group)
        .dead_letter(true)
        .options(options.clone());
    let mut consumer = binder.consumer(&spec).await.expect("bind with options");
    let exchange = management(&format!("exchanges/%2f/{}", encode(&destination)));
    assert_eq!(exchange["type"], "direct");
    let queue = management(&format!("queues/%2f/{}", encode(&group)));
    let args = arguments(&queue);
    assert_eq!(args["x-queue-type"], "quorum");
    assert_eq!(args["x-message-ttl"], 60_000);
    assert_eq!(args["x-max-length"], 1000);
    assert_eq!(args["x-single-active-consumer"], true);
    assert_eq!(args["x-dead-letter-routing-key"], group.as_str());
    assert!(management_has(&format!("queues/%2f/{}", encode(&parking))));
    assert_eq!(binder.dead_letter_destination(&spec).unwrap(), parking);
    // On a direct exchange the default routing key (the destination) reaches
    // the group.
    let producer = binder
        .producer(&ProducerSpec::new("feed", &destination).options(options))
        .await
        .unwrap();
    send(producer.as_ref(), text("direct")).await;
    assert_eq!(
        recv(consumer.as_mut(), "direct").await.message().payload(),
        &Bytes::from_static(b"direct")
    );

    // durable-subscription = false: a non-durable, auto-deleted group queue.
    let transient = ConsumerSpec::new("t", &destination)
        .group("transient")
        .options(rabbit_options(
            serde_json::json!({ "exchange-type": "direct", "durable-subscription": false }),
        ));
    let held = binder.consumer(&transient).await.unwrap();
    let queue = management(&format!(
        "queues/%2f/{}",
        encode(&format!("{destination}.transient"))
    ));
    assert_eq!(
        (queue["durable"].clone(), queue["auto_delete"].clone()),
        (false.into(), true.into())
    );
    drop(held);
}

// ----------------------------------------------------------------------
// Sends

/// A send no queue takes fails as unroutable, and under many confirms in
/// flight each send learns its own fate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_sends_fail_and_each_send_gets_its_own_outcome() {
    init_logging();
    let (binder, _) = connected_binder("bindery-unroutable").await;
    let nowhere = unique_name("nowhere");
    let producer = binder
        .producer(&ProducerSpec::new("lost", &nowhere))
        .await
        .unwrap();
    let error = producer
        .send(text("x"))
        .await
        .unwrap()
        .await
        .expect_err("no queue is bound");
    assert!(
        matches!(
            rabbit_error(&error),
            RabbitError::Returned { code: 312, .. }
        ),
        "{error}"
    );
    assert!(!error.is_transient());

    let destination = unique_name("mixed");
    let mut kept = binder
        .consumer(
            &ConsumerSpec::new("kept", &destination)
                .group("kept")
                .routing_keys(["keep.*"])
                .prefetch(500),
        )
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("mixed", &destination))
        .await
        .unwrap();
    const COUNT: usize = 400;
    let mut confirmations = Vec::new();
    for i in 0..COUNT {
        let key = if i % 3 == 0 {
            format!("drop.{i}")
        } else {
            format!("keep.{i}")
        };
        confirmations.push((
            key.clone(),
            producer
                .send(text(i.to_string()).with_routing_key(key))
                .await
                .unwrap(),
        ));
    }
    let mut kept_count = 0;
    for (key, confirmation) in confirmations {
        match (key.starts_with("keep."), confirmation.await) {
            (true, Ok(())) => kept_count += 1,
            (false, Err(e)) => assert!(
                matches!(rabbit_error(&e), RabbitError::Returned { .. }),
                "{key}: {e}"
            ),
            (routable, outcome) => panic!("{key} (routable: {routable}) got {outcome:?}"),
        }
    }
    for _ in 0..kept_count {
        let delivery = recv(kept.as_mut(), "kept messages").await;
        assert!(
            delivery
                .message()
                .routing_key()
                .unwrap()
                .starts_with("keep.")
        );
        delivery.ack().await.unwrap();
    }
}

/// Redrive publishes through the default exchange to one group's queue:
/// other groups of the destination do not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_reaches_only_its_group() {
    init_logging();
    let (binder, _) = connected_binder("bindery-redrive").await;
    let destination = unique_name("redrive");
    let spec = ConsumerSpec::new("a", &destination)
        .group("a")
        .dead_letter(true);
    let mut a = binder.consumer(&spec).await.unwrap();
    let mut b = binder
        .consumer(&ConsumerSpec::new("b", &destination).group("b"))
        .await
        .unwrap();
    let redrive = binder.redrive_producer(&spec).await.unwrap();
    send(redrive.as_ref(), text("again")).await;
    assert_eq!(
        recv(a.as_mut(), "redriven").await.message().payload(),
        &Bytes::from_static(b"again")
    );
    let other = tokio::time::timeout(Duration::from_millis(500), b.recv()).await;
    assert!(other.is_err(), "group b saw a redriven message");
}

// ----------------------------------------------------------------------
// Secrets

/// The password appears in no error, no health report and no debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows() {
    init_logging();
    const SECRET: &str = "s3cr3t-do-not-log";
    // Nothing listens on port 1: a connection error.
    let unreachable = RabbitBinder::new(
        "r",
        RabbitSettings::new(format!("amqp://guest:{SECRET}@127.0.0.1:1/%2f")),
    );
    let Err(error) = unreachable.producer(&ProducerSpec::new("p", "d")).await else {
        panic!("bound with nothing listening");
    };
    assert!(
        error.is_transient(),
        "a broker that is down is transient: {error}"
    );
    let shown = format!(
        "{error} {error:?} {unreachable:?} {:?}",
        unreachable.health()
    );
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("guest:****@127.0.0.1:1"), "{shown}");
    assert!(
        !unreachable.health().is_up(),
        "down after a failed connection attempt"
    );

    // A wrong password: refused by the broker, which is not transient.
    let (mut wrong, _) = broker_address();
    wrong.authority.userinfo.password = SECRET.to_owned();
    let refused = RabbitBinder::new("r", RabbitSettings::new(wrong.to_string()));
    let Err(error) = refused.consumer(&ConsumerSpec::new("c", "d")).await else {
        panic!("bound with a wrong password");
    };
    let shown = format!("{error} {error:?} {refused:?} {:?}", refused.health());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        !error.is_transient(),
        "a refused login is not transient: {error}"
    );

    // A configuration problem quotes the URI without it.
    let problems = App::builder()
        .without_registered_functions()
        .config_toml(&format!(
            "[binders.r]\ntype = \"rabbitmq\"\nuri = \"amqp://u:{SECRET}@[::1\"\n"
        ))
        .env(Vec::<(String, String)>::new())
        .build()
        .expect_err("an invalid URI");
    assert!(!problems.to_string().contains(SECRET), "{problems}");
}

// ----------------------------------------------------------------------
// Audit findings

/// A binder whose connections are named after a fresh `prefix`, with
/// `settings` adjusted by `adjust`; connected, or the test fails saying
/// how to start the broker.
async fn binder_with(
    prefix: &str,
    adjust: impl FnOnce(RabbitSettings) -> RabbitSettings,
) -> (Arc<RabbitBinder>, String) {
    let prefix = unique_name(prefix);
    let binder = Arc::new(RabbitBinder::new("rabbit", adjust(settings(&prefix))));
    if let Err(error) = binder.connect().await {
        panic!(
            "RabbitMQ does not answer at {}: {error}\n{}",
            bindery::rabbitmq::redact_uri(&uri()),
            bindery_tests::rabbitmq::START_HINT
        );
    }
    (binder, prefix)
}

/// Waits up to `timeout` for `consumer` to hand out a delivery; none if
/// nothing came.
async fn try_recv(consumer: &mut dyn Consumer, timeout: Duration) -> Option<Delivery> {
    tokio::time::timeout(timeout, consumer.recv())
        .await
        .ok()
        .flatten()
}

/// A05: the broker closes the publishing channel for a message whose
/// `expiration` is not a number (406). That send fails once, as rejected,
/// instead of being published again until `confirm-timeout`; the sends
/// that shared its channel are confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a05_a_publish_the_broker_refuses_fails_as_rejected_and_the_others_arrive() {
    init_logging();
    let (binder, _) = binder_with("bindery-a05", |s| {
        s.confirm_timeout(Duration::from_secs(30))
    })
    .await;
    let destination = unique_name("a05");
    let mut consumer = binder
        .consumer(
            &ConsumerSpec::new("in", &destination)
                .group("g")
                .prefetch(50),
        )
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("out", &destination))
        .await
        .unwrap();
    let started = Instant::now();
    let mut confirmations = Vec::new();
    for i in 0..10 {
        let message = if i == 4 {
            text("bad").with_header(amqp::EXPIRATION, "soon")
        } else {
            text(format!("good-{i}"))
        };
        confirmations.push((i, producer.send(message).await.expect("published")));
    }
    for (i, confirmation) in confirmations {
        let outcome = confirmation.await;
        if i == 4 {
            let error = outcome.expect_err("the broker refuses a non-numeric expiration");
            assert_eq!(error.kind(), bindery::BinderErrorKind::Rejected, "{error}");
            assert!(!error.is_transient(), "{error}");
            assert!(
                matches!(rabbit_error(&error), RabbitError::Refused { code: 406, .. }),
                "{error}"
            );
        } else {
            outcome.unwrap_or_else(|e| panic!("good-{i}: {e}"));
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "decided in {:?}, not after confirm-timeout",
        started.elapsed()
    );
    // The channel works again for the next send.
    send(producer.as_ref(), text("after")).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 10 {
        let delivery = recv(consumer.as_mut(), "the good messages").await;
        let body = String::from_utf8(delivery.message().payload().to_vec()).unwrap();
        assert_ne!(body, "bad");
        seen.insert(body);
        delivery.ack().await.unwrap();
    }
    assert!(seen.contains("after"), "{seen:?}");
}

/// A06: bindery keeps a user's `message_id` (as Spring's `amqp_messageId`
/// header), through a consume and a re-publish, and makes none up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a06_message_ids_are_kept_and_never_made_up() {
    use bindery::rabbitmq::lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use bindery::rabbitmq::lapin::types::FieldTable;
    use bindery::rabbitmq::lapin::{Connection, ConnectionProperties};

    init_logging();
    let (binder, _) = connected_binder("bindery-a06").await;
    let first = unique_name("a06-first");
    let second = unique_name("a06-second");
    let mut inbound = binder
        .consumer(&ConsumerSpec::new("in", &first).group("g"))
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("out", &first))
        .await
        .unwrap();
    let onward = binder
        .producer(&ProducerSpec::new("on", &second).required_groups(["raw"]))
        .await
        .unwrap();
    send(
        producer.as_ref(),
        text("with-id")
            .with_header(amqp::MESSAGE_ID, "order-42")
            .with_header(amqp::CORRELATION_ID, "c-1")
            .with_header(amqp::PRIORITY, "5"),
    )
    .await;
    send(producer.as_ref(), text("no-id-1")).await;
    send(producer.as_ref(), text("no-id-2")).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let delivery = recv(inbound.as_mut(), "the three messages").await;
        let message = delivery.message().clone();
        let body = String::from_utf8(message.payload().to_vec()).unwrap();
        assert!(
            !message
                .headers()
                .contains(bindery::rabbitmq::SEQUENCE_HEADER),
            "the private sequence header is removed"
        );
        if body == "with-id" {
            assert_eq!(message.headers().get(amqp::MESSAGE_ID), Some("order-42"));
            assert_eq!(message.headers().get(amqp::CORRELATION_ID), Some("c-1"));
            assert_eq!(message.headers().get(amqp::PRIORITY), Some("5"));
            // An output inherits the input's headers: the id goes on.
            let output = Message::new(message.payload().clone())
                .with_headers(message.headers().inheritable());
            send(onward.as_ref(), output).await;
        } else {
            assert_eq!(
                message.headers().get(amqp::MESSAGE_ID),
                None,
                "{body}: no id was made up"
            );
        }
        bodies.push(body);
        delivery.ack().await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, ["no-id-1", "no-id-2", "with-id"]);

    // As any AMQP client (a Spring consumer) sees the re-published one.
    let connection = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .expect("connects");
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{second}.raw");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("provisioned by required-groups");
    let deadline = Instant::now() + TIMEOUT;
    let got = loop {
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if let Some(got) = got {
            break got;
        }
        assert!(Instant::now() < deadline, "the re-published message");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let properties = &got.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some("order-42")
    );
    assert_eq!(
        properties.correlation_id().as_ref().map(|id| id.as_str()),
        Some("c-1")
    );
    assert_eq!(properties.priority(), &Some(5));
    let headers = properties.headers().as_ref().unwrap();
    assert!(
        !headers.contains_key(amqp::MESSAGE_ID),
        "a property, not a header"
    );
    let _ = connection.close(200, "done".into()).await;
}

/// A07: the consumer's hand-over buffer is full (nothing receives), the
/// connection is forced closed, the new channel brings a fresh prefetch's
/// worth: `cancel` still answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a07_cancel_answers_while_the_hand_over_buffer_is_full_after_a_reconnect() {
    init_logging();
    let (binder, prefix) = connected_binder("bindery-a07").await;
    let destination = unique_name("a07");
    let queue = format!("{destination}.g");
    let mut consumer = binder
        .consumer(&ConsumerSpec::new("in", &destination).group("g").prefetch(4))
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("out", &destination))
        .await
        .unwrap();
    for i in 0..20 {
        send(producer.as_ref(), text(format!("m{i}"))).await;
    }
    let unacked = |expected: u64| {
        let path = format!("queues/%2f/{}", encode(&queue));
        move || {
            let queue = management(&path);
            queue["consumers"].as_u64() == Some(1)
                && queue["messages_unacknowledged"].as_u64() == Some(expected)
        }
    };
    // The broker pushed a prefetch's worth; it waits in the buffer.
    wait_until(Duration::from_secs(30), "4 unacked", unacked(4)).await;
    assert!(
        close_connections(&prefix) >= 1,
        "closed the test's connections"
    );
    // Consuming again: 4 fresh ones on the new channel, the buffer still
    // full of the lost channel's.
    wait_until(Duration::from_secs(30), "consuming again", unacked(4)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancelled = tokio::time::timeout(Duration::from_secs(5), consumer.cancel()).await;
    assert!(cancelled.is_ok(), "cancel did not answer within 5 s");
    cancelled.unwrap().expect("cancelled");
}

/// B02: a message whose headers do not fit in one frame fails that send,
/// as rejected, without publishing: the shared publishing connection is
/// not closed by the broker, and the next send goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b02_headers_larger_than_a_frame_fail_that_send_only() {
    init_logging();
    let (binder, prefix) = binder_with("bindery-b02", |s| {
        s.confirm_timeout(Duration::from_secs(10))
    })
    .await;
    let destination = unique_name("b02");
    let mut consumer = binder
        .consumer(&ConsumerSpec::new("in", &destination).group("g"))
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("out", &destination))
        .await
        .unwrap();
    let publishing = format!("{prefix} rabbit publish");
    let connected_at = || {
        management("connections")
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| c["client_properties"]["connection_name"] == publishing.as_str())
            .map(|c| c["connected_at"].clone())
    };
    wait_until(TIMEOUT, "the publishing connection is listed", || {
        connected_at().is_some()
    })
    .await;
    let before = connected_at();
    // 200 KiB of header: above the default frame_max of 128 KiB.
    let large = text("large").with_header("big", "x".repeat(200 * 1024));
    let outcome = match producer.send(large).await {
        Ok(confirmation) => confirmation.await,
        Err(error) => Err(error),
    };
    let error = outcome.expect_err("headers above frame_max");
    assert_eq!(error.kind(), bindery::BinderErrorKind::Rejected, "{error}");
    assert!(
        matches!(rabbit_error(&error), RabbitError::HeadersTooLarge { .. }),
        "{error}"
    );
    send(producer.as_ref(), text("small")).await;
    let delivery = recv(consumer.as_mut(), "the small message").await;
    assert_eq!(delivery.message().payload(), &Bytes::from_static(b"small"));
    delivery.ack().await.unwrap();
    assert!(binder.health().is_up(), "{:?}", binder.health());
    assert_eq!(connected_at(), before, "the publishing connection was kept");
}

/// B03: many producers, each with routable and unroutable sends
/// interleaved and many confirms in flight: every send gets its own
/// outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b03_interleaved_sends_on_several_channels_each_get_their_own_outcome() {
    init_logging();
    let (binder, _) = connected_binder("bindery-b03").await;
    let destination = unique_name("b03");
    let mut kept = binder
        .consumer(
            &ConsumerSpec::new("kept", &destination)
                .group("kept")
                .routing_keys(["keep.*"])
                .prefetch(1000),
        )
        .await
        .unwrap();
    const PRODUCERS: usize = 4;
    const COUNT: usize = 500;
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let producer = binder
            .producer(&ProducerSpec::new(format!("p{p}"), &destination))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut confirmations = Vec::new();
            for i in 0..COUNT {
                // Runs of each kind, of varying length.
                let keep = (i * 7 + p) % 5 >= 2;
                let key = format!("{}.{p}-{i}", if keep { "keep" } else { "drop" });
                let message = text(format!("{p}-{i}")).with_routing_key(key.clone());
                confirmations.push((keep, key, producer.send(message).await.unwrap()));
            }
            let mut kept = 0;
            for (keep, key, confirmation) in confirmations {
                match (keep, confirmation.await) {
                    (true, Ok(())) => kept += 1,
                    (false, Err(e)) => assert!(
                        matches!(rabbit_error(&e), RabbitError::Returned { .. }),
                        "{key}: {e}"
                    ),
                    (keep, outcome) => panic!("{key} (routable: {keep}) got {outcome:?}"),
                }
            }
            kept
        }));
    }
    let mut expected = 0;
    for task in tasks {
        expected += task.await.expect("no panic");
    }
    let mut seen = BTreeSet::new();
    while seen.len() < expected {
        let delivery = recv(kept.as_mut(), "the routable messages").await;
        seen.insert(delivery.message().routing_key().unwrap().to_owned());
        delivery.ack().await.unwrap();
    }
    assert!(seen.iter().all(|key| key.starts_with("keep.")));
}

/// B04: the broker cancels a consumer (its queue deleted) while it holds
/// `prefetch` deliveries: it subscribes again only once those are
/// settled, so never more than `prefetch` are unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b04_a_broker_cancel_keeps_the_prefetch_bound() {
    init_logging();
    let (binder, _) = connected_binder("bindery-b04").await;
    let destination = unique_name("b04");
    let queue = format!("{destination}.g");
    let mut consumer = binder
        .consumer(&ConsumerSpec::new("in", &destination).group("g").prefetch(3))
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("out", &destination))
        .await
        .unwrap();
    for i in 0..3 {
        send(producer.as_ref(), text(format!("old-{i}"))).await;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(recv(consumer.as_mut(), "the old messages").await);
    }
    management_delete(&format!("queues/%2f/{}", encode(&queue)));
    // Declared again by a producer, as the consumer waits for its old
    // deliveries before it declares and subscribes again.
    let provisioning = binder
        .producer(&ProducerSpec::new("again", &destination).required_groups(["g"]))
        .await
        .unwrap();
    for i in 0..5 {
        send(provisioning.as_ref(), text(format!("new-{i}"))).await;
    }
    let early = try_recv(consumer.as_mut(), Duration::from_secs(2)).await;
    assert!(
        early.is_none(),
        "more than prefetch unacknowledged: {:?}",
        early.map(|d| d.message().clone())
    );
    for delivery in held {
        // The old queue is gone; its deliveries settle harmlessly.
        delivery
            .ack()
            .await
            .expect("ack of a deleted queue's delivery");
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 5 {
        let delivery = recv(consumer.as_mut(), "the new messages").await;
        seen.insert(String::from_utf8(delivery.message().payload().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    assert!(seen.iter().all(|s| s.starts_with("new-")), "{seen:?}");
}

/// A02: a delivery says whether its queue dead-letters on the broker
/// (`x-dead-letter-exchange`, from `auto-bind-dlq`), and a reject then
/// lands in the DLQ; a dead-letter producer whose DLQ was deleted
/// declares it again after the return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a02_broker_dead_lettering_is_reported_and_a_deleted_dlq_comes_back() {
    init_logging();
    let (binder, _) = connected_binder("bindery-a02").await;
    let destination = unique_name("a02");
    let spec = ConsumerSpec::new("in", &destination)
        .group("g")
        .dead_letter(true);
    let mut consumer = binder.consumer(&spec).await.unwrap();
    let mut plain = binder
        .consumer(
            &ConsumerSpec::new("plain", &destination)
                .group("plain")
                .options(rabbit_options(
                    serde_json::json!({ "auto-bind-dlq": false }),
                )),
        )
        .await
        .unwrap();
    let mut anonymous = binder
        .consumer(&ConsumerSpec::new("anon", &destination))
        .await
        .unwrap();
    let producer = binder
        .producer(&ProducerSpec::new("out", &destination))
        .await
        .unwrap();
    send(producer.as_ref(), text("reject me")).await;
    let (_, acknowledger) = recv(consumer.as_mut(), "the group's").await.into_parts();
    assert!(acknowledger.broker_dead_letters());
    acknowledger.nack(false).await.unwrap();
    let (_, other) = recv(plain.as_mut(), "without auto-bind-dlq")
        .await
        .into_parts();
    assert!(!other.broker_dead_letters());
    other.ack().await.unwrap();
    let (_, other) = recv(anonymous.as_mut(), "anonymous").await.into_parts();
    assert!(!other.broker_dead_letters());
    other.ack().await.unwrap();
    let mut dlq = binder.dead_letter_consumer(&spec).await.unwrap();
    let dead = recv(dlq.as_mut(), "the broker's dead letter").await;
    assert_eq!(dead.message().payload(), &Bytes::from_static(b"reject me"));
    let (_, dead) = dead.into_parts();
    assert!(!dead.broker_dead_letters(), "a DLQ has no DLX of its own");
    dead.ack().await.unwrap();
    drop(dlq);

    let dead_letters = binder.dead_letter_producer(&spec).await.unwrap();
    let dlq_name = format!("{destination}.g.dlq");
    management_delete(&format!("queues/%2f/{}", encode(&dlq_name)));
    let returned = dead_letters
        .send(text("first"))
        .await
        .unwrap()
        .await
        .expect_err("the DLQ is gone");
    assert!(
        matches!(rabbit_error(&returned), RabbitError::Returned { .. }),
        "{returned}"
    );
    send(dead_letters.as_ref(), text("second")).await;
    assert!(
        management_has(&format!("queues/%2f/{}", encode(&dlq_name))),
        "declared again"
    );
}

/// A24: a consumer that cannot subscribe again for a reason other than a
/// lost connection (its exchange declared again with another type) makes
/// the binder down, naming the queue; up again once it subscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a24_a_consumer_that_cannot_subscribe_makes_health_down_until_it_can() {
    init_logging();
    let (binder, _) = connected_binder("bindery-a24").await;
    let destination = unique_name("a24");
    let queue = format!("{destination}.g");
    let _consumer = binder
        .consumer(&ConsumerSpec::new("in", &destination).group("g"))
        .await
        .unwrap();
    assert!(binder.health().is_up());
    let exchange = format!("exchanges/%2f/{}", encode(&destination));
    management_delete(&exchange);
    management_put(
        &exchange,
        &serde_json::json!({ "type": "direct", "durable": true }),
    );
    // The broker cancels the consumer; declaring the topic exchange again
    // now fails for good.
    management_delete(&format!("queues/%2f/{}", encode(&queue)));
    wait_until(Duration::from_secs(20), "health down", || {
        !binder.health().is_up()
    })
    .await;
    let bindery::binder::Health::Down(reason) = binder.health() else {
        unreachable!("checked above");
    };
    assert!(reason.contains(&queue), "{reason}");
    management_delete(&exchange);
    wait_until(Duration::from_secs(20), "health up again", || {
        binder.health().is_up()
    })
    .await;
    assert!(management_has(&format!("queues/%2f/{}", encode(&queue))));
}

/// A nacked publish is published again on a new channel, for a bounded
/// time: RabbitMQ 3.10 nacks every publish of a channel whose quorum-queue
/// client is stuck on a lost leader, while a new channel is taken
/// (tests/cluster_rabbitmq.rs kills that leader). Here a full
/// `reject-publish` queue nacks: a send goes through once it has room,
/// and one that never gets room fails as rejected after about 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_send_is_published_again_until_the_broker_takes_it() {
    use bindery::BinderErrorKind;
    use bindery::rabbitmq::lapin::options::{
        BasicGetOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use bindery::rabbitmq::lapin::types::{AMQPValue, FieldTable};
    use bindery::rabbitmq::lapin::{Connection, ConnectionProperties};

    init_logging();
    let (binder, _) = connected_binder("bindery-nack").await;
    let destination = unique_name("nack");
    let queue = format!("{destination}.full");
    let producer = binder
        .producer(&ProducerSpec::new("out", &destination))
        .await
        .unwrap();
    let connection = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .expect("connects");
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            destination.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let get = || async {
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
    };

    send(producer.as_ref(), text("first")).await;
    // The queue is full: "second" is nacked until "first" is taken.
    let second = producer.send(text("second")).await.expect("published");
    let confirmed = tokio::spawn(second);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !confirmed.is_finished(),
        "confirmed although the queue was full"
    );
    assert_eq!(get().await.as_deref(), Some("first"));
    tokio::time::timeout(TIMEOUT, confirmed)
        .await
        .expect("confirmed once the queue had room")
        .unwrap()
        .expect("taken by the broker");
    assert_eq!(get().await.as_deref(), Some("second"));

    // Never room: rejected, after the bounded wait.
    send(producer.as_ref(), text("third")).await;
    let started = Instant::now();
    let error = producer
        .send(text("fourth"))
        .await
        .expect("published")
        .await
        .expect_err("the full queue never takes it");
    let waited = started.elapsed();
    assert_eq!(error.kind(), BinderErrorKind::Rejected, "{error}");
    assert!(
        matches!(rabbit_error(&error), RabbitError::Nacked { .. }),
        "{error:?}"
    );
    assert!(
        (Duration::from_secs(8)..Duration::from_secs(20)).contains(&waited),
        "rejected after {waited:?}"
    );
    assert_eq!(get().await.as_deref(), Some("third"));
}
