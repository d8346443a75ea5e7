//! Interoperability with Spring Cloud Stream: a real Spring Boot 4.0.7 /
//! Spring Cloud Stream 5.0.4 service (`tests/interop/spring-app`, built by
//! `scripts/interop/build.sh`) runs as a process beside in-process bindery
//! apps on the same broker, both with their defaults, as two teams'
//! services would.
//!
//! Each test is one scenario of `tests/interop/README.md`: messages both
//! ways, one group shared by both, dead letters both ways (and bindery's
//! redrive of Spring's), a topology both declare, and (Kafka) partitioning.
//! Where bindery differs from Spring the test asserts what Spring does.
//!
//! Needs RabbitMQ (`scripts/brokers/ensure-rabbitmq.sh`), Kafka
//! (`scripts/brokers/ensure-kafka.sh`), Java 17 and Maven 3.8. Nothing is
//! skipped: a missing piece fails the test with what is missing. Every
//! test uses fresh destinations and groups.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bindery::prelude::*;
use bindery::{AppBuilder, RunningApp};
use bindery_testkit::unique_name;
use bindery_tests::interop::{
    ARRIVAL, SpringApp, kafka_args, rabbit_args, rabbit_wait_messages, spring_header,
    spring_header_text,
};
use bindery_tests::rabbitmq::{encode, management, uri};
use parking_lot::Mutex;
use serde_json::Value;

// ----------------------------------------------------------------------
// The bindery side

/// The payload both sides exchange (the Spring app's `Order` record).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Order {
    id: u64,
    sku: String,
    qty: u32,
}

/// What a bindery function received: the decoded order and every header.
type Seen = Arc<Mutex<Vec<(Order, BTreeMap<String, String>)>>>;

fn header_map(headers: &Headers) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A bindery sink that decodes the JSON order and records it.
async fn take(headers: Headers, order: Order, State(seen): State<Seen>) {
    seen.lock().push((order, header_map(&headers)));
}

/// Keys under which `read_dead_letter` records the decoded origin.
const DECODED_TOPIC: &str = "decoded: x-original-topic";
const DECODED_PARTITION: &str = "decoded: x-original-partition";
const DECODED_OFFSET: &str = "decoded: x-original-offset";
const DECODED_TIMESTAMP: &str = "decoded: x-original-timestamp";

#[derive(Debug, thiserror::Error)]
#[error("order {0} is poison")]
struct Poison(u64);

/// A bindery sink that fails for orders whose sku starts with "poison".
async fn reject(headers: Headers, order: Order, State(seen): State<Seen>) -> Result<(), Poison> {
    if order.sku.starts_with("poison") {
        return Err(Poison(order.id));
    }
    seen.lock().push((order, header_map(&headers)));
    Ok(())
}

/// A bindery sink for dead letters: their payload as JSON (decoded here, so
/// a content type bindery does not know cannot hide the headers) and
/// headers.
async fn read_dead_letter(headers: Headers, payload: Bytes, State(seen): State<Seen>) {
    let order: Order = serde_json::from_slice(&payload).unwrap_or(Order {
        id: u64::MAX,
        sku: String::from_utf8_lossy(&payload).into_owned(),
        qty: 0,
    });
    let mut map = header_map(&headers);
    // Where a Kafka dead letter came from, as bindery reads it: Spring's
    // binary numbers and bindery's text alike.
    if let Some(record) = bindery::kafka::OriginalRecord::from_headers(&headers) {
        map.insert(DECODED_TOPIC.into(), record.topic.clone());
        map.insert(DECODED_PARTITION.into(), record.partition.to_string());
        map.insert(DECODED_OFFSET.into(), record.offset.to_string());
        if let Some(timestamp) = record.timestamp {
            map.insert(DECODED_TIMESTAMP.into(), timestamp.to_string());
        }
    }
    seen.lock().push((order, map));
}

async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds and starts a bindery app from `config`, waiting until every input
/// binding is bound.
async fn start_bindery(builder: AppBuilder, config: &str) -> RunningApp {
    let running = builder
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap_or_else(|e| panic!("bindery configuration refused: {e}\n{config}"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("bindery app did not start: {e}"));
    tokio::time::timeout(Duration::from_secs(120), running.ready())
        .await
        .expect("the bindery app binds within 120 s");
    running
}

fn order(id: u64, sku: impl Into<String>) -> Order {
    Order {
        id,
        sku: sku.into(),
        qty: u32::try_from(id).unwrap_or(0) + 1,
    }
}

fn spring_order(event: &Value) -> Order {
    serde_json::from_value(event["payload"].clone())
        .unwrap_or_else(|e| panic!("Spring printed no order ({e}): {event}"))
}

fn arg(key: &str, value: impl std::fmt::Display) -> String {
    format!("--{key}={value}")
}

// ----------------------------------------------------------------------
// RabbitMQ

fn rabbit_binder(prefix: &str) -> String {
    bindery_tests::interop::require_rabbit();
    format!(
        "[binders.rabbit]\ntype = \"rabbitmq\"\nuri = \"{}\"\nconnection-name = \"{}\"\n",
        uri(),
        unique_name(prefix)
    )
}

fn spring_rabbit(extra: &[String]) -> Vec<String> {
    let mut args = rabbit_args();
    args.extend_from_slice(extra);
    args
}

/// (a) A Spring producer's JSON orders (StreamBridge, default content type)
/// are decoded by a bindery function. The `contentType` Spring writes is the
/// AMQP `content_type` property, which bindery reads as its header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_spring_producer_to_bindery_function() {
    let destination = unique_name("interop-s2b");
    let seen = Seen::default();
    // bindery first: it declares its group queue, so nothing Spring sends
    // is unroutable (Spring's producer declares only the exchange).
    let config = format!(
        "{}[bindings.take-in-0]\ndestination = \"{destination}\"\ngroup = \"bindery\"\n",
        rabbit_binder("interop-s2b")
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;

    const COUNT: usize = 5;
    let mut spring = SpringApp::start(
        "producer",
        &spring_rabbit(&[
            arg("spring.cloud.function.definition", ""),
            arg(
                "spring.cloud.stream.bindings.produce-out-0.destination",
                &destination,
            ),
            arg("interop.produce.count", COUNT),
        ]),
    );
    spring
        .wait_events("produced", 1, bindery_tests::interop::SPRING_START)
        .await;
    wait_until(ARRIVAL, "bindery receives Spring's orders", || {
        seen.lock().len() >= COUNT
    })
    .await;
    spring.stop();

    let seen = seen.lock().clone();
    let mut orders: Vec<Order> = seen.iter().map(|(o, _)| o.clone()).collect();
    orders.sort();
    let expected: Vec<Order> = (0..COUNT as u64)
        .map(|i| order(i, format!("sku-{i}")))
        .collect();
    assert_eq!(orders, expected, "what bindery decoded");
    let (_, headers) = &seen[0];
    eprintln!("headers bindery got from a Spring producer (RabbitMQ): {headers:?}");
    assert_eq!(
        headers.get("contentType").map(String::as_str),
        Some("application/json"),
        "the content type Spring wrote, as bindery reads it: {headers:?}"
    );
    app.shutdown().await.unwrap();
}

/// (b) A bindery producer's orders are consumed by a Spring `Function`
/// (whose output a bindery function reads back) and a Spring `Consumer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_bindery_producer_to_spring_function_and_consumer() {
    let orders = unique_name("interop-b2s");
    let upper = format!("{orders}-upper");
    // Spring first: its group queues must exist before bindery publishes.
    let mut spring = SpringApp::start(
        "uppercase;log",
        &spring_rabbit(&[
            arg("spring.cloud.function.definition", "uppercase;log"),
            arg(
                "spring.cloud.stream.bindings.uppercase-in-0.destination",
                &orders,
            ),
            arg(
                "spring.cloud.stream.bindings.uppercase-in-0.group",
                "spring-upper",
            ),
            arg(
                "spring.cloud.stream.bindings.uppercase-out-0.destination",
                &upper,
            ),
            arg("spring.cloud.stream.bindings.log-in-0.destination", &orders),
            arg("spring.cloud.stream.bindings.log-in-0.group", "spring-log"),
        ]),
    );
    spring.wait_started().await;

    let seen = Seen::default();
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n\
         [bindings.emit]\ndestination = \"{orders}\"\n\
         [bindings.take-in-0]\ndestination = \"{upper}\"\ngroup = \"bindery\"\n",
        rabbit_binder("interop-b2s")
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    const COUNT: u64 = 5;
    for i in 0..COUNT {
        app.sender()
            .send_message(
                "emit",
                Message::new(order(i, format!("sku-{i}"))).with_header("trace", format!("t-{i}")),
            )
            .await
            .expect("bindery sends");
    }

    let events = spring
        .wait_events("received", COUNT as usize, ARRIVAL)
        .await;
    let mut got: Vec<Order> = events.iter().map(spring_order).collect();
    got.sort();
    let expected: Vec<Order> = (0..COUNT).map(|i| order(i, format!("sku-{i}"))).collect();
    assert_eq!(got, expected, "what Spring's Consumer decoded");
    eprintln!(
        "headers Spring got from a bindery producer (RabbitMQ): {}",
        events[0]["headers"]
    );
    assert_eq!(
        spring_header_text(&events[0], "contentType").as_deref(),
        Some("application/json"),
        "Spring's view of bindery's content type: {}",
        events[0]["headers"]
    );
    let trace = events
        .iter()
        .find(|e| e["payload"]["id"] == 0)
        .and_then(|e| spring_header_text(e, "trace"));
    assert_eq!(
        trace.as_deref(),
        Some("t-0"),
        "a user header reaches Spring"
    );

    wait_until(ARRIVAL, "bindery reads Spring's uppercase output", || {
        seen.lock().len() >= COUNT as usize
    })
    .await;
    let mut upper_got: Vec<Order> = seen.lock().iter().map(|(o, _)| o.clone()).collect();
    upper_got.sort();
    let expected: Vec<Order> = (0..COUNT).map(|i| order(i, format!("SKU-{i}"))).collect();
    assert_eq!(
        upper_got, expected,
        "Spring's Function output, as bindery decoded it"
    );
    spring.stop();
    app.shutdown().await.unwrap();
}

/// (c) A Spring instance and a bindery instance in one group compete for
/// its queue: every message is processed exactly once, by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_spring_and_bindery_compete_in_one_group() {
    let destination = unique_name("interop-compete");
    let group = "shared";
    // Both declare the group queue; with the DLQ (Spring's autoBindDlq,
    // bindery's default) they declare the same arguments.
    let mut spring = SpringApp::start(
        "log",
        &spring_rabbit(&[
            arg("spring.cloud.function.definition", "log"),
            arg(
                "spring.cloud.stream.bindings.log-in-0.destination",
                &destination,
            ),
            arg("spring.cloud.stream.bindings.log-in-0.group", group),
            arg(
                "spring.cloud.stream.rabbit.bindings.log-in-0.consumer.auto-bind-dlq",
                true,
            ),
        ]),
    );
    spring.wait_started().await;
    let seen = Seen::default();
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n\
         [bindings.emit]\ndestination = \"{destination}\"\n\
         [bindings.take-in-0]\ndestination = \"{destination}\"\ngroup = \"{group}\"\n\
         [bindings.take-in-0.consumer]\nprefetch = 4\n",
        rabbit_binder("interop-compete")
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    const COUNT: u64 = 200;
    for i in 0..COUNT {
        app.sender()
            .send("emit", order(i, format!("sku-{i}")))
            .await
            .expect("bindery sends");
    }
    wait_until(ARRIVAL, "every order processed by one side", || {
        seen.lock().len() + spring.events("received").len() >= COUNT as usize
    })
    .await;
    // Anything processed twice would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_bindery: Vec<u64> = seen.lock().iter().map(|(o, _)| o.id).collect();
    let by_spring: Vec<u64> = spring
        .events("received")
        .iter()
        .map(|e| spring_order(e).id)
        .collect();
    spring.stop();
    let mut all: Vec<u64> = by_bindery.iter().chain(&by_spring).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..COUNT).collect::<Vec<_>>(),
        "each order exactly once (bindery {}, Spring {})",
        by_bindery.len(),
        by_spring.len()
    );
    assert!(
        !by_bindery.is_empty() && !by_spring.is_empty(),
        "both members took work: bindery {}, Spring {}",
        by_bindery.len(),
        by_spring.len()
    );
    eprintln!(
        "shared group on RabbitMQ: bindery {} / Spring {}",
        by_bindery.len(),
        by_spring.len()
    );
    app.shutdown().await.unwrap();
}

/// The text of an AMQP header as the management API shows it.
fn amqp_header(message: &Value, name: &str) -> Option<String> {
    let value = &message["properties"]["headers"][name];
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// (d, Spring → bindery) An order that fails in a Spring consumer (three
/// attempts, then `republishToDlq`, Spring's default, with `autoBindDlq`)
/// lands in `<destination>.<group>.dlq`, the queue bindery uses; a bindery
/// app reads Spring's dead-letter headers, and bindery's redrive moves
/// Spring's dead letter back to the group, where a bindery function takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_spring_dead_letters_are_read_and_redriven_by_bindery() {
    let destination = unique_name("interop-sdlq");
    let group = "billing";
    let queue = format!("{destination}.{group}");
    let dlq = format!("{queue}.dlq");
    let mut spring = SpringApp::start(
        "failing",
        &spring_rabbit(&[
            arg("spring.cloud.function.definition", "failing"),
            arg(
                "spring.cloud.stream.bindings.failing-in-0.destination",
                &destination,
            ),
            arg("spring.cloud.stream.bindings.failing-in-0.group", group),
            arg(
                "spring.cloud.stream.rabbit.bindings.failing-in-0.consumer.auto-bind-dlq",
                true,
            ),
        ]),
    );
    spring.wait_started().await;

    // A producer-only bindery app sends two poison orders.
    let sender_config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n[bindings.emit]\ndestination = \"{destination}\"\n",
        rabbit_binder("interop-sdlq-send")
    );
    let sender = start_bindery(
        App::builder().without_registered_functions(),
        &sender_config,
    )
    .await;
    for id in [1, 2] {
        sender
            .sender()
            .send("emit", order(id, format!("poison-{id}")))
            .await
            .expect("bindery sends");
    }
    sender.shutdown().await.unwrap();

    let dead = rabbit_wait_messages(&dlq, 2, ARRIVAL).await;
    spring.wait_events("failing", 6, ARRIVAL).await; // 3 attempts each
    // The group must be free for bindery's redrive.
    spring.stop();
    let first = &dead[0];
    eprintln!(
        "Spring's dead letter as RabbitMQ holds it: {}",
        first["properties"]
    );
    // Spring's x-exception-message is the outermost exception's ("Retry
    // policy ... exhausted"); the function's own error is a `Caused by:`
    // of the stack trace.
    let message = amqp_header(first, "x-exception-message").unwrap_or_default();
    assert!(!message.is_empty(), "x-exception-message: {message}");
    let trace = amqp_header(first, "x-exception-stacktrace").unwrap_or_default();
    assert!(
        trace.contains("IllegalStateException") && trace.contains("is poison"),
        "x-exception-stacktrace: {trace}"
    );
    assert_eq!(
        amqp_header(first, "x-original-exchange"),
        Some(destination.clone())
    );
    assert_eq!(
        amqp_header(first, "x-original-routingKey"),
        Some(destination.clone())
    );

    // bindery redrives one of Spring's dead letters to the group, where a
    // bindery function of the same group takes it.
    let seen = Seen::default();
    let config = format!(
        "{}[bindings.take-in-0]\ndestination = \"{destination}\"\ngroup = \"{group}\"\n",
        rabbit_binder("interop-sdlq-take")
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    let moved = app.redrive("take-in-0", Some(1)).await.expect("redrive");
    assert_eq!(moved, 1, "redrive moved Spring's dead letter");
    wait_until(ARRIVAL, "the redriven order reaches bindery", || {
        !seen.lock().is_empty()
    })
    .await;
    let (redriven, headers) = seen.lock()[0].clone();
    assert!(redriven.sku.starts_with("poison-"), "{redriven:?}");
    assert!(
        !headers.contains_key("x-exception-message"),
        "redrive strips the exception headers: {headers:?}"
    );
    app.shutdown().await.unwrap();

    // A bindery app reads the other dead letter straight from the DLQ, as
    // Spring's docs suggest for a DLQ consumer: the queue by its own name
    // (`queue-name-group-only`), no DLQ of its own, not bound again.
    let dead_seen = Seen::default();
    let config = format!(
        "{}[bindings.read_dead_letter-in-0]\ndestination = \"DLX\"\ngroup = \"{dlq}\"\n\
         [bindings.read_dead_letter-in-0.consumer]\ndead-letter = false\nbinding-routing-keys = [\"{queue}\"]\n\
         [bindings.read_dead_letter-in-0.rabbitmq]\nexchange-type = \"direct\"\nqueue-name-group-only = true\nauto-bind-dlq = false\n",
        rabbit_binder("interop-sdlq-read")
    );
    let reader = start_bindery(
        App::builder()
            .function("read_dead_letter", read_dead_letter)
            .state(dead_seen.clone()),
        &config,
    )
    .await;
    wait_until(ARRIVAL, "bindery reads Spring's dead letter", || {
        !dead_seen.lock().is_empty()
    })
    .await;
    let (dead_order, headers) = dead_seen.lock()[0].clone();
    eprintln!("Spring's dead-letter headers as bindery reads them: {headers:?}");
    assert!(dead_order.sku.starts_with("poison-"), "{dead_order:?}");
    assert!(
        headers
            .get("x-exception-message")
            .is_some_and(|m| !m.is_empty()),
        "{headers:?}"
    );
    assert!(
        headers
            .get("x-exception-stacktrace")
            .is_some_and(|m| m.contains("IllegalStateException") && m.contains("is poison")),
        "{headers:?}"
    );
    assert_eq!(headers.get("x-original-exchange"), Some(&destination));
    assert_eq!(headers.get("x-original-routingKey"), Some(&destination));
    reader.shutdown().await.unwrap();
}

/// (d, bindery → Spring) An order that fails in a bindery function lands in
/// `<destination>.<group>.dlq` behind `DLX`, where Spring's dead-letter
/// queue would be, and a Spring consumer of that DLQ reads bindery's
/// dead-letter headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_bindery_dead_letters_are_read_by_spring() {
    let destination = unique_name("interop-bdlq");
    let group = "billing";
    let queue = format!("{destination}.{group}");
    let dlq = format!("{queue}.dlq");
    let seen = Seen::default();
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n\
         [bindings.emit]\ndestination = \"{destination}\"\n\
         [bindings.reject-in-0]\ndestination = \"{destination}\"\ngroup = \"{group}\"\n\
         [bindings.reject-in-0.consumer]\nmax-attempts = 1\n",
        rabbit_binder("interop-bdlq")
    );
    let app = start_bindery(
        App::builder()
            .function("reject", reject)
            .state(seen.clone()),
        &config,
    )
    .await;
    app.sender()
        .send("emit", order(7, "poison-7"))
        .await
        .expect("bindery sends");
    let dead = rabbit_wait_messages(&dlq, 1, ARRIVAL).await;
    eprintln!(
        "bindery's dead letter as RabbitMQ holds it: {}",
        dead[0]["properties"]
    );
    assert_eq!(
        amqp_header(&dead[0], "x-original-exchange"),
        Some(destination.clone())
    );
    assert_eq!(
        amqp_header(&dead[0], "x-original-routingKey"),
        Some(destination.clone())
    );

    // Spring reads the DLQ as its docs show: the queue by its name, not
    // bound again, the exchange not declared again.
    let mut spring = SpringApp::start(
        "dlq log",
        &spring_rabbit(&[
            arg("spring.cloud.function.definition", "log"),
            arg("spring.cloud.stream.bindings.log-in-0.destination", "DLX"),
            arg("spring.cloud.stream.bindings.log-in-0.group", &dlq),
            arg(
                "spring.cloud.stream.rabbit.bindings.log-in-0.consumer.queue-name-group-only",
                true,
            ),
            arg(
                "spring.cloud.stream.rabbit.bindings.log-in-0.consumer.bind-queue",
                false,
            ),
            arg(
                "spring.cloud.stream.rabbit.bindings.log-in-0.consumer.declare-exchange",
                false,
            ),
        ]),
    );
    let events = spring
        .wait_events("received", 1, bindery_tests::interop::SPRING_START)
        .await;
    let event = &events[0];
    eprintln!(
        "bindery's dead-letter headers as Spring reads them: {}",
        event["headers"]
    );
    assert_eq!(spring_order(event), order(7, "poison-7"));
    let text = |name: &str| spring_header_text(event, name).unwrap_or_default();
    assert!(
        text("x-exception-message").contains("order 7 is poison"),
        "{}",
        event["headers"]
    );
    assert!(
        !text("x-exception-stacktrace").is_empty(),
        "{}",
        event["headers"]
    );
    assert_eq!(text("x-original-exchange"), destination);
    assert_eq!(text("x-original-routingKey"), destination);
    assert!(
        spring.declaration_errors().is_empty(),
        "{:?}",
        spring.declaration_errors()
    );
    spring.stop();
    app.shutdown().await.unwrap();
}

/// The arguments, type and flags of a queue or exchange, from the
/// management API, as one comparable value.
fn rabbit_shape(kind: &str, name: &str) -> Value {
    let v = management(&format!("{kind}/%2F/{}", encode(name)));
    serde_json::json!({
        "type": v["type"],
        "durable": v["durable"],
        "auto_delete": v["auto_delete"],
        "arguments": v["arguments"],
    })
}

/// (e) The topology of a group with a DLQ (Spring's `autoBindDlq`,
/// bindery's default) is declared identically by both: whichever starts
/// first, the other binds without a declaration error, and the broker holds
/// what Spring declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_topology_declared_by_either_side_first() {
    for spring_first in [true, false] {
        let destination = unique_name(if spring_first {
            "interop-topo-spring"
        } else {
            "interop-topo-bindery"
        });
        let group = "shared";
        let queue = format!("{destination}.{group}");
        let dlq = format!("{queue}.dlq");
        let spring_args = spring_rabbit(&[
            arg("spring.cloud.function.definition", "log"),
            arg(
                "spring.cloud.stream.bindings.log-in-0.destination",
                &destination,
            ),
            arg("spring.cloud.stream.bindings.log-in-0.group", group),
            arg(
                "spring.cloud.stream.rabbit.bindings.log-in-0.consumer.auto-bind-dlq",
                true,
            ),
        ]);
        let config = format!(
            "{}[bindings.take-in-0]\ndestination = \"{destination}\"\ngroup = \"{group}\"\n",
            rabbit_binder("interop-topo")
        );
        let seen = Seen::default();
        let builder = || App::builder().function("take", take).state(seen.clone());
        let (mut spring, app) = if spring_first {
            let mut spring = SpringApp::start("log (first)", &spring_args);
            spring.wait_started().await;
            let app = start_bindery(builder(), &config).await;
            (spring, app)
        } else {
            let app = start_bindery(builder(), &config).await;
            let mut spring = SpringApp::start("log (second)", &spring_args);
            spring.wait_started().await;
            (spring, app)
        };
        let order_label = if spring_first {
            "Spring first"
        } else {
            "bindery first"
        };
        assert!(
            spring.declaration_errors().is_empty(),
            "{order_label}: Spring's declarations failed: {:?}",
            spring.declaration_errors()
        );
        assert!(spring.is_running(), "{order_label}: Spring stopped");
        assert!(
            app.health().is_up(),
            "{order_label}: bindery is {:?}",
            app.health()
        );

        let shapes = serde_json::json!({
            "exchange": rabbit_shape("exchanges", &destination),
            "dlx": rabbit_shape("exchanges", "DLX"),
            "queue": rabbit_shape("queues", &queue),
            "dlq": rabbit_shape("queues", &dlq),
        });
        eprintln!("{order_label}: {shapes}");
        assert_eq!(shapes["exchange"]["type"], "topic", "{order_label}");
        assert_eq!(shapes["exchange"]["durable"], true, "{order_label}");
        assert_eq!(shapes["dlx"]["type"], "direct", "{order_label}");
        assert_eq!(
            shapes["queue"]["arguments"],
            serde_json::json!({"x-dead-letter-exchange": "DLX", "x-dead-letter-routing-key": queue}),
            "{order_label}"
        );
        assert_eq!(
            shapes["dlq"]["arguments"],
            serde_json::json!({}),
            "{order_label}"
        );
        // Both consume from the one queue.
        // The management API's counts lag by its stats interval (5 s).
        wait_until(
            Duration::from_secs(60),
            &format!("{order_label}: 2 consumers of {queue}"),
            || management(&format!("queues/%2F/{}", encode(&queue)))["consumers"] == 2,
        )
        .await;
        spring.stop();
        app.shutdown().await.unwrap();
    }
}

/// (e, defaults) A Spring consumer with every default (no `autoBindDlq`:
/// Spring's group queue has no arguments) and a bindery consumer with
/// `auto-bind-dlq = false` join one group. Spring starts first, as the
/// existing service would; bindery must bind to the queue Spring declared
/// without a PRECONDITION_FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_default_group_queues_agree() {
    let destination = unique_name("interop-defaults");
    let group = "shared";
    let queue = format!("{destination}.{group}");
    let mut spring = SpringApp::start(
        "log (defaults)",
        &spring_rabbit(&[
            arg("spring.cloud.function.definition", "log"),
            arg(
                "spring.cloud.stream.bindings.log-in-0.destination",
                &destination,
            ),
            arg("spring.cloud.stream.bindings.log-in-0.group", group),
        ]),
    );
    spring.wait_started().await;
    let spring_queue = rabbit_shape("queues", &queue);
    eprintln!("Spring's default group queue: {spring_queue}");
    // bindery's `auto-bind-dlq` defaults to true (Spring's recommended
    // setting with a DLQ); Spring's `autoBindDlq` to false. Joining a group
    // a default Spring service declared takes `auto-bind-dlq = false`, which
    // keeps bindery's own dead-lettering (it publishes to `DLX`).
    let config = format!(
        "{}[bindings.take-in-0]\ndestination = \"{destination}\"\ngroup = \"{group}\"\n\
         [bindings.take-in-0.rabbitmq]\nauto-bind-dlq = false\n",
        rabbit_binder("interop-defaults")
    );
    let started = App::builder()
        .function("take", take)
        .state(Seen::default())
        .config_toml(&config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("valid configuration")
        .start()
        .await;
    let outcome = match started {
        Ok(running) => {
            let bound = tokio::time::timeout(Duration::from_secs(30), running.ready()).await;
            let health = running.health();
            // A binding that failed for good is reported by shutdown.
            let stopped = running.shutdown().await;
            match (bound.is_ok() && health.is_up(), stopped) {
                (true, Ok(_)) => Ok(()),
                (_, Err(error)) => Err(error.to_string()),
                (false, Ok(_)) => Err(format!("not bound within 30 s, health {health:?}")),
            }
        }
        Err(error) => Err(error.to_string()),
    };
    spring.stop();
    if let Err(problem) = outcome {
        panic!(
            "bindery (defaults) cannot join the group queue Spring (defaults) declared \
             with arguments {}: {problem}",
            spring_queue["arguments"]
        );
    }
}

// ----------------------------------------------------------------------
// Kafka

/// A `[binders.kafka]` table for the Kafka test broker. Group timeouts as
/// Apache Kafka accepts them (its `group.min.session.timeout.ms` is 6 s).
fn kafka_binder(partitions: usize) -> String {
    let brokers = bindery_tests::kafka::require_broker();
    format!(
        "[binders.kafka]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\npartitions = {partitions}\n\
         [binders.kafka.producer-properties]\n\"linger.ms\" = 1\n\
         [binders.kafka.consumer-properties]\n\"session.timeout.ms\" = 10000\n\"heartbeat.interval.ms\" = 1000\n\
         \"max.poll.interval.ms\" = 30000\n\"auto.commit.interval.ms\" = 500\n"
    )
}

fn spring_kafka(extra: &[String]) -> Vec<String> {
    let mut args = kafka_args();
    args.extend_from_slice(extra);
    args
}

/// Decodes a header Spring printed as `byte[]` (base64).
fn spring_bytes(event: &Value, name: &str) -> Option<Vec<u8>> {
    let header = spring_header(event, name)?;
    match header["base64"].as_str() {
        Some(b64) => Some(base64_decode(b64)),
        // Mapped to another type: its text is what Spring has.
        None => header["text"].as_str().map(|t| t.as_bytes().to_vec()),
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// (a) A Spring producer's JSON orders are decoded by a bindery function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_spring_producer_to_bindery_function() {
    let topic = unique_name("interop-s2b");
    let seen = Seen::default();
    let config = format!(
        "{}[bindings.take-in-0]\ndestination = \"{topic}\"\ngroup = \"{}\"\n",
        kafka_binder(1),
        unique_name("bindery")
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    const COUNT: usize = 5;
    let mut spring = SpringApp::start(
        "producer",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", ""),
            arg(
                "spring.cloud.stream.bindings.produce-out-0.destination",
                &topic,
            ),
            arg("interop.produce.count", COUNT),
        ]),
    );
    spring
        .wait_events("produced", 1, bindery_tests::interop::SPRING_START)
        .await;
    wait_until(ARRIVAL, "bindery receives Spring's orders", || {
        seen.lock().len() >= COUNT
    })
    .await;
    spring.stop();
    let seen = seen.lock().clone();
    let mut orders: Vec<Order> = seen.iter().map(|(o, _)| o.clone()).collect();
    orders.sort();
    let expected: Vec<Order> = (0..COUNT as u64)
        .map(|i| order(i, format!("sku-{i}")))
        .collect();
    assert_eq!(orders, expected, "what bindery decoded");
    let (_, headers) = &seen[0];
    eprintln!("headers bindery got from a Spring producer (Kafka): {headers:?}");
    let content_type = headers.get("contentType").map(String::as_str);
    assert!(
        matches!(
            content_type,
            Some("application/json" | "\"application/json\"")
        ),
        "the content type Spring wrote, as bindery reads it: {headers:?}"
    );
    app.shutdown().await.unwrap();
}

/// (b) A bindery producer's orders are consumed by a Spring `Function` (its
/// output read back by bindery) and a Spring `Consumer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bindery_producer_to_spring_function_and_consumer() {
    let orders = unique_name("interop-b2s");
    let upper = format!("{orders}-upper");
    let seen = Seen::default();
    // bindery creates both topics; new groups start at the earliest offset
    // on both sides, so nothing depends on who joins first.
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n\
         [bindings.emit]\ndestination = \"{orders}\"\n\
         [bindings.take-in-0]\ndestination = \"{upper}\"\ngroup = \"{}\"\n",
        kafka_binder(1),
        unique_name("bindery")
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    const COUNT: u64 = 5;
    for i in 0..COUNT {
        app.sender()
            .send_message(
                "emit",
                Message::new(order(i, format!("sku-{i}"))).with_header("trace", format!("t-{i}")),
            )
            .await
            .expect("bindery sends");
    }
    let mut spring = SpringApp::start(
        "uppercase;log",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", "uppercase;log"),
            arg(
                "spring.cloud.stream.bindings.uppercase-in-0.destination",
                &orders,
            ),
            arg(
                "spring.cloud.stream.bindings.uppercase-in-0.group",
                unique_name("spring-upper"),
            ),
            arg(
                "spring.cloud.stream.bindings.uppercase-out-0.destination",
                &upper,
            ),
            arg("spring.cloud.stream.bindings.log-in-0.destination", &orders),
            arg(
                "spring.cloud.stream.bindings.log-in-0.group",
                unique_name("spring-log"),
            ),
        ]),
    );
    let events = spring
        .wait_events(
            "received",
            COUNT as usize,
            bindery_tests::interop::SPRING_START,
        )
        .await;
    let mut got: Vec<Order> = events.iter().map(spring_order).collect();
    got.sort();
    let expected: Vec<Order> = (0..COUNT).map(|i| order(i, format!("sku-{i}"))).collect();
    assert_eq!(got, expected, "what Spring's Consumer decoded");
    eprintln!(
        "headers Spring got from a bindery producer (Kafka): {}",
        events[0]["headers"]
    );
    let content_type = spring_header_text(&events[0], "contentType");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{}",
        events[0]["headers"]
    );
    let trace = events
        .iter()
        .find(|e| e["payload"]["id"] == 0)
        .and_then(|e| spring_header_text(e, "trace"));
    assert_eq!(
        trace.as_deref(),
        Some("t-0"),
        "a user header reaches Spring"
    );
    wait_until(ARRIVAL, "bindery reads Spring's uppercase output", || {
        seen.lock().len() >= COUNT as usize
    })
    .await;
    let mut upper_got: Vec<Order> = seen.lock().iter().map(|(o, _)| o.clone()).collect();
    upper_got.sort();
    let expected: Vec<Order> = (0..COUNT).map(|i| order(i, format!("SKU-{i}"))).collect();
    assert_eq!(
        upper_got, expected,
        "Spring's Function output, as bindery decoded it"
    );
    spring.stop();
    app.shutdown().await.unwrap();
}

/// Lines of Spring's log announcing an assignment of `topic`'s partitions.
fn assignments(spring: &SpringApp, topic: &str) -> Vec<String> {
    spring
        .output()
        .lines()
        .filter(|l| l.contains("partitions assigned") && l.contains(&format!("{topic}-")))
        .map(str::to_owned)
        .collect()
}

/// (c) A Spring instance and a bindery instance in one consumer group share
/// a 4-partition topic: every record is processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_spring_and_bindery_compete_in_one_group() {
    let topic = unique_name("interop-compete");
    let group = unique_name("shared");
    let mut spring = SpringApp::start(
        "log",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", "log"),
            arg("spring.cloud.stream.bindings.log-in-0.destination", &topic),
            arg("spring.cloud.stream.bindings.log-in-0.group", &group),
            arg("spring.cloud.stream.kafka.binder.min-partition-count", 4),
        ]),
    );
    spring.wait_assigned(&topic).await;
    let seen = Seen::default();
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n\
         [bindings.emit]\ndestination = \"{topic}\"\n\
         [bindings.emit.producer]\npartition-key = \"{{payload.id}}\"\npartition-count = 4\n\
         [bindings.take-in-0]\ndestination = \"{topic}\"\ngroup = \"{group}\"\n",
        kafka_binder(4)
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    // bindery's join rebalanced the group: wait until Spring holds its new
    // share, so no record is sent while partitions move.
    wait_until(
        bindery_tests::interop::SPRING_START,
        "Spring's new assignment",
        || assignments(&spring, &topic).len() >= 2,
    )
    .await;
    eprintln!("Spring's assignments: {:?}", assignments(&spring, &topic));
    const COUNT: u64 = 200;
    for i in 0..COUNT {
        app.sender()
            .send("emit", order(i, format!("sku-{i}")))
            .await
            .expect("bindery sends");
    }
    wait_until(ARRIVAL, "every order processed by one side", || {
        seen.lock().len() + spring.events("received").len() >= COUNT as usize
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_bindery: Vec<u64> = seen.lock().iter().map(|(o, _)| o.id).collect();
    let by_spring: Vec<u64> = spring
        .events("received")
        .iter()
        .map(|e| spring_order(e).id)
        .collect();
    spring.stop();
    let mut all: Vec<u64> = by_bindery.iter().chain(&by_spring).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..COUNT).collect::<Vec<_>>(),
        "each order exactly once (bindery {}, Spring {})",
        by_bindery.len(),
        by_spring.len()
    );
    assert!(
        !by_bindery.is_empty() && !by_spring.is_empty(),
        "both members took work: bindery {}, Spring {}",
        by_bindery.len(),
        by_spring.len()
    );
    eprintln!(
        "shared group on Kafka: bindery {} / Spring {}",
        by_bindery.len(),
        by_spring.len()
    );
    app.shutdown().await.unwrap();
}

/// (d, Spring → bindery) An order that fails in a Spring consumer
/// (`enableDlq`) lands in `error.<destination>.<group>`, the topic bindery
/// uses; bindery reads Spring's dead-letter headers (the binary
/// partition/offset/timestamp as the numbers they are) and its redrive
/// moves the dead letter back to the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_spring_dead_letters_are_read_and_redriven_by_bindery() {
    let topic = unique_name("interop-sdlq");
    let group = unique_name("billing");
    let dlq = format!("error.{topic}.{group}");
    let mut spring = SpringApp::start(
        "failing",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", "failing"),
            arg(
                "spring.cloud.stream.bindings.failing-in-0.destination",
                &topic,
            ),
            arg("spring.cloud.stream.bindings.failing-in-0.group", &group),
            arg(
                "spring.cloud.stream.kafka.bindings.failing-in-0.consumer.enable-dlq",
                true,
            ),
        ]),
    );
    spring.wait_assigned(&topic).await;
    let sender_config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n[bindings.emit]\ndestination = \"{topic}\"\n",
        kafka_binder(1)
    );
    let sender = start_bindery(
        App::builder().without_registered_functions(),
        &sender_config,
    )
    .await;
    sender
        .sender()
        .send("emit", order(3, "poison-3"))
        .await
        .expect("bindery sends");
    sender.shutdown().await.unwrap();
    spring.wait_events("failing", 3, ARRIVAL).await;

    // bindery reads the dead letter with its headers.
    let dead_seen = Seen::default();
    let config = format!(
        "{}[bindings.read_dead_letter-in-0]\ndestination = \"{dlq}\"\ngroup = \"{}\"\n\
         [bindings.read_dead_letter-in-0.consumer]\ndead-letter = false\n",
        kafka_binder(1),
        unique_name("dlq-reader")
    );
    let reader = start_bindery(
        App::builder()
            .function("read_dead_letter", read_dead_letter)
            .state(dead_seen.clone()),
        &config,
    )
    .await;
    wait_until(ARRIVAL, "bindery reads Spring's dead letter", || {
        !dead_seen.lock().is_empty()
    })
    .await;
    reader.shutdown().await.unwrap();
    spring.stop();
    let (dead_order, headers) = dead_seen.lock()[0].clone();
    eprintln!("Spring's Kafka dead-letter headers as bindery reads them: {headers:?}");
    assert_eq!(dead_order, order(3, "poison-3"));
    assert_eq!(headers.get("x-original-topic"), Some(&topic));
    // As on RabbitMQ, Spring's message is the outermost exception's; the
    // function's error is in the stack trace.
    assert!(
        headers
            .get("x-exception-message")
            .is_some_and(|m| !m.is_empty()),
        "{headers:?}"
    );
    assert!(
        headers
            .get("x-exception-stacktrace")
            .is_some_and(|m| m.contains("IllegalStateException") && m.contains("is poison")),
        "{headers:?}"
    );
    // Spring writes these as big-endian binary numbers; bindery must read
    // them as the numbers (the only record of a 1-partition topic: 0, 0).
    // Every mismatch is listed; the redrive below runs either way.
    let mut wrong = Vec::new();
    for (name, ok) in [
        (
            DECODED_PARTITION,
            headers.get(DECODED_PARTITION).map(String::as_str) == Some("0"),
        ),
        (
            DECODED_OFFSET,
            headers.get(DECODED_OFFSET).map(String::as_str) == Some("0"),
        ),
        (
            DECODED_TIMESTAMP,
            headers
                .get(DECODED_TIMESTAMP)
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > 1_600_000_000_000),
        ),
    ] {
        if !ok {
            wrong.push(format!(
                "{name}: bindery reads {:?}, not the number Spring wrote",
                headers.get(name)
            ));
        }
    }

    // bindery redrives Spring's dead letter back to the topic, where a
    // bindery function of the same group takes it.
    let seen = Seen::default();
    let config = format!(
        "{}[bindings.take-in-0]\ndestination = \"{topic}\"\ngroup = \"{group}\"\n",
        kafka_binder(1)
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    let moved = app.redrive("take-in-0", None).await.expect("redrive");
    assert_eq!(moved, 1, "redrive moved Spring's dead letter");
    wait_until(ARRIVAL, "the redriven order reaches bindery", || {
        !seen.lock().is_empty()
    })
    .await;
    let (redriven, headers) = seen.lock()[0].clone();
    assert_eq!(redriven, order(3, "poison-3"));
    assert!(!headers.contains_key("x-exception-message"), "{headers:?}");
    app.shutdown().await.unwrap();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// (d, spring-kafka → bindery) A Spring app whose dead letters are written by
/// spring-kafka's own `DeadLetterPublishingRecoverer` (the listener
/// container's error handler, as `@RetryableTopic` and `@KafkaListener` apps
/// have it) instead of the binder: its `kafka_dlt-original-*` headers name
/// the origin, with no `x-original-*` ones. bindery reads where the record
/// came from out of them, and its redrive moves the dead letter back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_spring_kafka_dead_letters_are_read_and_redriven_by_bindery() {
    let topic = unique_name("interop-kdlt");
    let group = unique_name("billing");
    let dlq = format!("error.{topic}.{group}");
    let mut spring = SpringApp::start(
        "failing (spring-kafka dead letters)",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", "failing"),
            arg(
                "spring.cloud.stream.bindings.failing-in-0.destination",
                &topic,
            ),
            arg("spring.cloud.stream.bindings.failing-in-0.group", &group),
            // With one attempt the binder keeps the dead-lettering whatever
            // the customizer says (KafkaMessageChannelBinder only hands it to
            // the container when there are retries to hand over).
            arg(
                "spring.cloud.stream.bindings.failing-in-0.consumer.max-attempts",
                2,
            ),
            arg(
                "spring.cloud.stream.bindings.failing-in-0.consumer.back-off-initial-interval",
                100,
            ),
            arg(
                "spring.cloud.stream.kafka.bindings.failing-in-0.consumer.enable-dlq",
                true,
            ),
            // The resolver the binder hands to the customizer names the
            // topic only from `dlq-name` (the binder's own default,
            // `error.<destination>.<group>`, is not applied to it).
            arg(
                "spring.cloud.stream.kafka.bindings.failing-in-0.consumer.dlq-name",
                &dlq,
            ),
            arg("interop.kafka.spring-kafka-dlt", true),
        ]),
    );
    spring.wait_assigned(&topic).await;
    assert!(
        !spring.events("spring-kafka-dlt").is_empty(),
        "the binder handed retry and dead letters to the listener container"
    );
    let sender_config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n[bindings.emit]\ndestination = \"{topic}\"\n",
        kafka_binder(1)
    );
    let sender = start_bindery(
        App::builder().without_registered_functions(),
        &sender_config,
    )
    .await;
    sender
        .sender()
        .send("emit", order(5, "poison-5"))
        .await
        .expect("bindery sends");
    sender.shutdown().await.unwrap();
    // Two attempts by the container's error handler, then its dead letter.
    spring.wait_events("failing", 2, ARRIVAL).await;

    let dead_seen = Seen::default();
    let config = format!(
        "{}[bindings.read_dead_letter-in-0]\ndestination = \"{dlq}\"\ngroup = \"{}\"\n\
         [bindings.read_dead_letter-in-0.consumer]\ndead-letter = false\n",
        kafka_binder(1),
        unique_name("dlq-reader")
    );
    let reader = start_bindery(
        App::builder()
            .function("read_dead_letter", read_dead_letter)
            .state(dead_seen.clone()),
        &config,
    )
    .await;
    wait_until(ARRIVAL, "bindery reads spring-kafka's dead letter", || {
        !dead_seen.lock().is_empty()
    })
    .await;
    reader.shutdown().await.unwrap();
    spring.stop();
    let (dead_order, headers) = dead_seen.lock()[0].clone();
    eprintln!("spring-kafka's dead-letter headers as bindery reads them: {headers:?}");
    assert_eq!(dead_order, order(5, "poison-5"));
    assert!(
        headers.contains_key("kafka_dlt-original-topic")
            && !headers.contains_key("x-original-topic"),
        "written by spring-kafka, not by the binder: {headers:?}"
    );
    assert_eq!(headers.get(DECODED_TOPIC), Some(&topic), "{headers:?}");
    assert_eq!(
        headers.get(DECODED_PARTITION).map(String::as_str),
        Some("0")
    );
    assert_eq!(headers.get(DECODED_OFFSET).map(String::as_str), Some("0"));
    assert!(
        headers
            .get(DECODED_TIMESTAMP)
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t > 1_600_000_000_000),
        "{headers:?}"
    );

    let seen = Seen::default();
    let config = format!(
        "{}[bindings.take-in-0]\ndestination = \"{topic}\"\ngroup = \"{group}\"\n",
        kafka_binder(1)
    );
    let app = start_bindery(
        App::builder().function("take", take).state(seen.clone()),
        &config,
    )
    .await;
    let moved = app.redrive("take-in-0", None).await.expect("redrive");
    assert_eq!(moved, 1, "redrive moved spring-kafka's dead letter");
    wait_until(ARRIVAL, "the redriven order reaches bindery", || {
        !seen.lock().is_empty()
    })
    .await;
    assert_eq!(seen.lock()[0].0, order(5, "poison-5"));
    app.shutdown().await.unwrap();
}

/// (d, bindery → Spring) An order that fails in bindery lands in
/// `error.<destination>.<group>`, and a Spring consumer of that topic reads
/// bindery's dead-letter headers as Spring's binder writes them: partition a
/// 4-byte and offset and timestamp 8-byte big-endian numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bindery_dead_letters_are_read_by_spring() {
    let topic = unique_name("interop-bdlq");
    let group = unique_name("billing");
    let dlq = format!("error.{topic}.{group}");
    let seen = Seen::default();
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\"]\n\
         [bindings.emit]\ndestination = \"{topic}\"\n\
         [bindings.reject-in-0]\ndestination = \"{topic}\"\ngroup = \"{group}\"\n\
         [bindings.reject-in-0.consumer]\nmax-attempts = 1\n",
        kafka_binder(1)
    );
    let app = start_bindery(
        App::builder()
            .function("reject", reject)
            .state(seen.clone()),
        &config,
    )
    .await;
    app.sender()
        .send("emit", order(7, "poison-7"))
        .await
        .expect("bindery sends");
    let mut spring = SpringApp::start(
        "dlq log",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", "log"),
            arg("spring.cloud.stream.bindings.log-in-0.destination", &dlq),
            arg(
                "spring.cloud.stream.bindings.log-in-0.group",
                unique_name("spring-dlq"),
            ),
        ]),
    );
    let events = spring
        .wait_events("received", 1, bindery_tests::interop::SPRING_START)
        .await;
    spring.stop();
    app.shutdown().await.unwrap();
    let event = &events[0];
    eprintln!(
        "bindery's Kafka dead-letter headers as Spring reads them: {}",
        event["headers"]
    );
    assert_eq!(spring_order(event), order(7, "poison-7"));
    let text = |name: &str| spring_header_text(event, name).unwrap_or_default();
    assert!(
        text("x-exception-message").contains("order 7 is poison"),
        "{}",
        event["headers"]
    );
    assert!(
        !text("x-exception-stacktrace").is_empty(),
        "{}",
        event["headers"]
    );
    assert!(!text("x-exception-fqcn").is_empty(), "{}", event["headers"]);
    assert_eq!(text("x-original-topic"), topic);
    // As Spring's binder writes them (and spring-kafka's tools read them):
    // every mismatch is listed before the test fails.
    let mut wrong = Vec::new();
    for (name, expected_len, expected) in [
        ("x-original-partition", 4, Some(0i32.to_be_bytes().to_vec())),
        ("x-original-offset", 8, Some(0i64.to_be_bytes().to_vec())),
        ("x-original-timestamp", 8, None),
    ] {
        let got = spring_bytes(event, name);
        let ok = match &expected {
            Some(bytes) => got.as_ref() == Some(bytes),
            None => got.as_ref().is_some_and(|b| b.len() == expected_len),
        };
        if !ok {
            wrong.push(format!(
                "{name}: Spring got bytes {got:?} (text {:?}); Spring's binder writes a {expected_len}-byte big-endian number",
                spring_header_text(event, name)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// (e) A topic both declare: 3 partitions, one group of both with its
/// dead-letter topic `error.<destination>.<group>` (Spring's `enableDlq`,
/// bindery's default). Whichever starts first, the other binds without a
/// provisioning error and the topic keeps its 3 partitions (a second
/// Spring consumer, alone in its own group, is assigned all of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topology_declared_by_either_side_first() {
    for spring_first in [true, false] {
        let topic = unique_name(if spring_first {
            "interop-topo-spring"
        } else {
            "interop-topo-bindery"
        });
        let label = if spring_first {
            "Spring first"
        } else {
            "bindery first"
        };
        let group = unique_name("shared");
        let counter = unique_name("counter");
        let spring_args = spring_kafka(&[
            arg("spring.cloud.function.definition", "failing;log"),
            arg(
                "spring.cloud.stream.bindings.failing-in-0.destination",
                &topic,
            ),
            arg("spring.cloud.stream.bindings.failing-in-0.group", &group),
            arg(
                "spring.cloud.stream.kafka.bindings.failing-in-0.consumer.enable-dlq",
                true,
            ),
            arg("spring.cloud.stream.bindings.log-in-0.destination", &topic),
            arg("spring.cloud.stream.bindings.log-in-0.group", &counter),
            arg("spring.cloud.stream.kafka.binder.min-partition-count", 3),
        ]);
        let config = format!(
            "{}[bindings.reject-in-0]\ndestination = \"{topic}\"\ngroup = \"{group}\"\n",
            kafka_binder(3)
        );
        let seen = Seen::default();
        let builder = || {
            App::builder()
                .function("reject", reject)
                .state(seen.clone())
        };
        let (spring, app) = if spring_first {
            let mut spring = SpringApp::start("failing;log (first)", &spring_args);
            spring.wait_assigned(&topic).await;
            (spring, start_bindery(builder(), &config).await)
        } else {
            let app = start_bindery(builder(), &config).await;
            let mut spring = SpringApp::start("failing;log (second)", &spring_args);
            spring.wait_assigned(&topic).await;
            (spring, app)
        };
        assert!(
            spring.declaration_errors().is_empty(),
            "{label}: {:?}",
            spring.declaration_errors()
        );
        assert!(
            app.health().is_up(),
            "{label}: bindery is {:?}",
            app.health()
        );
        // The counting consumer is alone in its group: it gets every
        // partition of the topic.
        let mut spring = spring;
        let assigned = spring
            .wait_for_line(
                "the counting group's assignment",
                bindery_tests::interop::SPRING_START,
                |l| l.contains(&format!("{counter}: partitions assigned")),
            )
            .await;
        for partition in 0..3 {
            assert!(
                assigned.contains(&format!("{topic}-{partition}")),
                "{label}: partition {partition} of 3 missing in {assigned}"
            );
        }
        assert!(
            !assigned.contains(&format!("{topic}-3")),
            "{label}: {assigned}"
        );
        spring.stop();
        app.shutdown().await.unwrap();
    }
}

/// (f) Spring's partitioned producer (`partitionKeyExpression`,
/// `partitionCount` 4) and bindery's (`partition-key`, `partition-count` 4)
/// put the same key on the same partition. Beside them, a Spring producer
/// that sets the record key instead (`messageKeyExpression`, left to
/// Kafka's partitioner) shows which of Spring's two ways bindery matches. A
/// Spring consumer reads every producer's records and prints each one's
/// partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partitioned_producers_agree_on_partitions() {
    let topic = unique_name("interop-part");
    const KEYS: u64 = 8;
    // The Spring app reads the topic (from the earliest offset, new group)
    // and, once started, sends 2 × KEYS orders with a `partitionKey` header
    // through each of its two producer bindings.
    let mut spring = SpringApp::start(
        "log + partitioned producers",
        &spring_kafka(&[
            arg("spring.cloud.function.definition", "log"),
            arg("spring.cloud.stream.bindings.log-in-0.destination", &topic),
            arg(
                "spring.cloud.stream.bindings.log-in-0.group",
                unique_name("reader"),
            ),
            arg("spring.cloud.stream.kafka.binder.min-partition-count", 4),
            arg(
                "spring.cloud.stream.bindings.produce-out-0.destination",
                &topic,
            ),
            arg(
                "spring.cloud.stream.bindings.produce-out-0.producer.partition-key-expression",
                "headers['partitionKey']",
            ),
            arg(
                "spring.cloud.stream.bindings.produce-out-0.producer.partition-count",
                4,
            ),
            arg(
                "spring.cloud.stream.bindings.keyed-out-0.destination",
                &topic,
            ),
            arg(
                "spring.cloud.stream.kafka.bindings.keyed-out-0.producer.message-key-expression",
                "headers['partitionKey']",
            ),
            // The binder's key serializer is for byte[]; the key here is a String.
            arg(
                "spring.cloud.stream.kafka.bindings.keyed-out-0.producer.configuration.key.serializer",
                "org.apache.kafka.common.serialization.StringSerializer",
            ),
            arg("interop.produce.count", 2 * KEYS),
            arg("interop.produce.keys", KEYS),
            arg("interop.produce.keyed", true),
            arg("interop.produce.sku-prefix", "spring-"),
        ]),
    );
    spring
        .wait_events("produced", 1, bindery_tests::interop::SPRING_START)
        .await;
    // `emit` is partitioned as Spring's partitionKeyExpression is (it has a
    // partition-count); `keyed` only sets the record key, as
    // messageKeyExpression does, and leaves the partition to Kafka.
    let config = format!(
        "{}[bindery]\noutput-bindings = [\"emit\", \"keyed\"]\n\
         [bindings.emit]\ndestination = \"{topic}\"\n\
         [bindings.emit.producer]\npartition-key = \"{{header.partitionKey}}\"\npartition-count = 4\n\
         [bindings.keyed]\ndestination = \"{topic}\"\n\
         [bindings.keyed.producer]\npartition-key = \"{{header.partitionKey}}\"\n",
        kafka_binder(4)
    );
    let app = start_bindery(App::builder().without_registered_functions(), &config).await;
    for (binding, prefix) in [("emit", "bindery-"), ("keyed", "bindery-keyed-")] {
        for i in 0..2 * KEYS {
            app.sender()
                .send_message(
                    binding,
                    Message::new(order(i, format!("{prefix}{i}")))
                        .with_header("partitionKey", format!("key-{}", i % KEYS)),
                )
                .await
                .expect("bindery sends");
        }
    }
    app.shutdown().await.unwrap();
    let events = spring
        .wait_events("received", 8 * KEYS as usize, ARRIVAL)
        .await;
    spring.stop();
    // key → producer → partitions seen.
    let mut partitions: BTreeMap<String, BTreeMap<&str, BTreeSet<String>>> = BTreeMap::new();
    for event in &events {
        let key = spring_header_text(event, "partitionKey").unwrap_or_default();
        let sku = event["payload"]["sku"].as_str().unwrap_or("");
        let producer = if sku.starts_with("spring-") {
            "spring partitionKeyExpression"
        } else if sku.starts_with("keyed-") {
            "spring messageKeyExpression"
        } else if sku.starts_with("bindery-keyed-") {
            "bindery partition-key"
        } else {
            "bindery partition-key with partition-count"
        };
        let partition = spring_header_text(event, "kafka_receivedPartitionId").unwrap_or_default();
        partitions
            .entry(key)
            .or_default()
            .entry(producer)
            .or_default()
            .insert(partition);
    }
    eprintln!("key -> producer -> partitions: {partitions:?}");
    assert_eq!(partitions.len(), KEYS as usize, "{partitions:?}");
    let mut disagreements = Vec::new();
    for (key, by_producer) in &partitions {
        for (spring_way, bindery_way) in [
            ("spring messageKeyExpression", "bindery partition-key"),
            (
                "spring partitionKeyExpression",
                "bindery partition-key with partition-count",
            ),
        ] {
            let bindery_p = by_producer.get(bindery_way);
            assert!(
                bindery_p.is_some_and(|p| p.len() == 1),
                "key {key}: {bindery_way} used one partition: {by_producer:?}"
            );
            if by_producer.get(spring_way) != bindery_p {
                disagreements.push(format!(
                    "key {key}: {spring_way} → {:?}, {bindery_way} → {bindery_p:?}",
                    by_producer.get(spring_way)
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "Spring and bindery put keys on different partitions:\n{}",
        disagreements.join("\n")
    );
}
