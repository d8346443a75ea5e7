//! The function model: every shape, extractor and output form, and
//! composition, run through `TestApp` on the memory binder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bindery::prelude::*;
use bindery::{FunctionKind, Sender};
use bindery_testkit::TestApp;
use futures::Stream;
use parking_lot::Mutex;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    qty: u32,
}

fn io_config(function: &str, content_type: &str) -> String {
    format!(
        r#"
        [bindings.{function}-in-0]
        destination = "in"
        group = "g"
        content-type = "{content_type}"
        [bindings.{function}-in-0.consumer]
        max-attempts = 1
        [bindings.{function}-out-0]
        destination = "out"
        content-type = "{content_type}"
        "#
    )
}

async fn start(function: &str, app: TestAppBuilderFn, content_type: &str) -> TestApp {
    app(TestApp::builder())
        .config(&io_config(function, content_type))
        .start()
        .await
        .expect("start")
}

type TestAppBuilderFn = fn(bindery_testkit::TestAppBuilder) -> bindery_testkit::TestAppBuilder;

#[tokio::test]
async fn processor_decodes_json_and_encodes_its_output() {
    async fn double(order: Order) -> Order {
        Order {
            qty: order.qty * 2,
            ..order
        }
    }
    let mut app = start(
        "double",
        |b| b.function("double", double),
        "application/json",
    )
    .await;
    app.send("in", Order { id: 1, qty: 21 }).await.unwrap();
    let out = app.receive("out").await.unwrap();
    assert_eq!(out.content_type(), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<Order>(out.payload()).unwrap(),
        Order { id: 1, qty: 42 }
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn string_and_bytes_payloads_pass_through_untouched() {
    async fn shout(text: String) -> String {
        text.to_uppercase()
    }
    async fn reverse(bytes: Bytes) -> Vec<u8> {
        bytes.iter().rev().copied().collect()
    }
    let mut app = start("shout", |b| b.function("shout", shout), "text/plain").await;
    app.send("in", "hello").await.unwrap();
    let out = app.receive("out").await.unwrap();
    assert_eq!(&out.payload()[..], b"HELLO");
    assert_eq!(out.content_type(), Some("text/plain"));
    app.shutdown().await.unwrap();

    let mut app = start(
        "reverse",
        |b| b.function("reverse", reverse),
        "application/octet-stream",
    )
    .await;
    app.send("in", Bytes::from_static(&[1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        &app.receive("out").await.unwrap().payload()[..],
        &[255, 2, 1]
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn message_parts_are_extracted_in_any_order() {
    type Seen = Arc<Mutex<Vec<String>>>;
    async fn inspect(
        headers: Headers,
        order: Order,
        Key(key): Key,
        RoutingKey(routing_key): RoutingKey,
        Attempt(attempt): Attempt,
        State(seen): State<Seen>,
    ) {
        seen.lock().push(format!(
            "{} {} {:?} {:?} {attempt}",
            order.id,
            headers.get("trace").unwrap_or("-"),
            key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            routing_key
        ));
    }
    let seen = Seen::default();
    let mut app = TestApp::builder()
        .function("inspect", inspect)
        .state(seen.clone())
        .config("[bindings.inspect-in-0]\ndestination = \"in\"\ngroup = \"g\"\n")
        .start()
        .await
        .unwrap();
    let message = Message::new(Bytes::from(r#"{"id":5,"qty":1}"#))
        .with_content_type("application/json")
        .with_header("trace", "t1")
        .with_key("k1")
        .with_routing_key("orders.new");
    app.send_message("in", message).await.unwrap();
    app.settled("inspect-in-0", 1).await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(*seen.lock(), [r#"5 t1 Some("k1") Some("orders.new") 1"#]);
}

#[tokio::test]
async fn message_in_and_message_out_carry_headers_key_and_routing_key() {
    async fn route(order: Message<Order>) -> Message<Order> {
        let trace = order.headers().get("trace").unwrap_or_default().to_owned();
        let delivery = order
            .delivery()
            .cloned()
            .expect("inbound messages carry delivery facts");
        assert_eq!(delivery.attempt, 1);
        assert!(
            matches!(&delivery.id, bindery::DeliveryId::InQueue { queue, .. } if !queue.is_empty()),
            "a memory delivery is a position in its queue: {}",
            delivery.id
        );
        let payload = order.payload().clone();
        Message::new(payload)
            .with_header("trace", trace)
            .with_header("routed", "yes")
            .with_key("customer-9")
            .with_routing_key("orders.routed")
    }
    let mut app = start("route", |b| b.function("route", route), "application/json").await;
    let message = Message::new(Bytes::from(r#"{"id":2,"qty":3}"#)).with_header("trace", "t2");
    app.send_message("in", message).await.unwrap();
    let out = app.receive("out").await.unwrap();
    assert_eq!(out.headers().get("trace"), Some("t2"));
    assert_eq!(out.headers().get("routed"), Some("yes"));
    assert_eq!(out.key().map(|k| &k[..]), Some(&b"customer-9"[..]));
    assert_eq!(out.routing_key(), Some("orders.routed"));
    assert_eq!(out.content_type(), Some("application/json"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bare_payload_output_inherits_the_input_headers_but_not_transport_ones() {
    async fn same(order: Order) -> Order {
        order
    }
    let mut app = start("same", |b| b.function("same", same), "application/json").await;
    let message = Message::new(Bytes::from(r#"{"id":2,"qty":3}"#))
        .with_header("correlation-id", "c-1")
        .with_header("x-exception-message", "stale")
        .with_header("x-original-destination", "old");
    app.send_message("in", message).await.unwrap();
    let out = app.receive("out").await.unwrap();
    assert_eq!(out.headers().get("correlation-id"), Some("c-1"));
    assert!(!out.headers().contains("x-exception-message"));
    assert!(!out.headers().contains("x-original-destination"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn option_none_filters_and_some_sends() {
    async fn big_only(order: Order) -> Option<Order> {
        (order.qty >= 10).then_some(order)
    }
    let mut app = start(
        "big_only",
        |b| b.function("big_only", big_only),
        "application/json",
    )
    .await;
    app.send("in", Order { id: 1, qty: 1 }).await.unwrap();
    app.send("in", Order { id: 2, qty: 10 }).await.unwrap();
    let out: Order = app.receive_json("out").await.unwrap();
    assert_eq!(out.id, 2);
    assert!(app.nothing_on("out", Duration::from_millis(200)).await);
    let stats = app.shutdown().await.unwrap();
    assert_eq!(stats.binding("big_only-in-0").filtered, 1);
    assert_eq!(stats.binding("big_only-out-0").sent, 1);
}

#[derive(Debug, thiserror::Error)]
#[error("quantity {0} is not allowed")]
struct BadQuantity(u32);

#[tokio::test]
async fn result_ok_sends_and_err_starts_the_failure_policy() {
    async fn check(order: Order) -> Result<Order, BadQuantity> {
        if order.qty == 0 {
            Err(BadQuantity(0))
        } else {
            Ok(order)
        }
    }
    let mut app = start("check", |b| b.function("check", check), "application/json").await;
    app.send("in", Order { id: 1, qty: 0 }).await.unwrap();
    app.send("in", Order { id: 2, qty: 1 }).await.unwrap();
    assert_eq!(app.receive_json::<Order>("out").await.unwrap().id, 2);
    let dead = app.dead_letter("check-in-0").await.unwrap();
    assert_eq!(
        dead.headers().get("x-exception-message"),
        Some("quantity 0 is not allowed")
    );
    assert!(
        dead.headers()
            .get("x-exception-fqcn")
            .unwrap()
            .ends_with("BadQuantity")
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn sinks_return_unit_or_result_of_unit() {
    static SEEN: AtomicU32 = AtomicU32::new(0);
    async fn count(_order: Order) {
        SEEN.fetch_add(1, Ordering::SeqCst);
    }
    async fn count_or_fail(order: Order) -> Result<(), BadQuantity> {
        SEEN.fetch_add(1, Ordering::SeqCst);
        if order.qty == 0 {
            Err(BadQuantity(0))
        } else {
            Ok(())
        }
    }
    let config = "[bindings.count-in-0]\ndestination = \"in\"\ngroup = \"g\"\n[bindings.count_or_fail-in-0]\ndestination = \"in\"\ngroup = \"h\"\n[bindery]\ndefinition = \"count;count_or_fail\"\n";
    let mut app = TestApp::builder()
        .function("count", count)
        .function("count_or_fail", count_or_fail)
        .config(config)
        .start()
        .await
        .unwrap();
    assert_eq!(app.app().wiring().functions[0].kind, FunctionKind::Sink);
    assert_eq!(app.app().wiring().functions[1].kind, FunctionKind::Sink);
    app.send("in", Order { id: 1, qty: 1 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while SEEN.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "both sinks run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = app.shutdown().await.unwrap();
    assert_eq!(stats.binding("count-in-0").acked, 1);
    assert_eq!(stats.binding("count_or_fail-in-0").acked, 1);
}

#[tokio::test(start_paused = true)]
async fn a_source_is_polled_with_the_fixed_delay() {
    static POLLS: AtomicU32 = AtomicU32::new(0);
    async fn tick() -> u32 {
        POLLS.fetch_add(1, Ordering::SeqCst)
    }
    let config = "[bindery.poller]\nfixed-delay = \"250ms\"\n[bindings.tick-out-0]\ndestination = \"ticks\"\n";
    let mut app = TestApp::builder()
        .function("tick", tick)
        .config(config)
        .start()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    for expected in 0..4u32 {
        let tick: u32 = app.receive_json("ticks").await.unwrap();
        assert_eq!(tick, expected);
    }
    // Four polls: at 0, 250, 500 and 750 ms of (paused) time.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(750) && elapsed < Duration::from_millis(1000),
        "{elapsed:?}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_function_taking_only_state_is_a_source() {
    #[derive(Clone)]
    struct Prefix(&'static str);
    async fn greet(State(prefix): State<Prefix>) -> String {
        format!("{} world", prefix.0)
    }
    let mut app = TestApp::builder()
        .function("greet", greet)
        .state(Prefix("hello"))
        .config(
            "[bindings.greet-out-0]\ndestination = \"greetings\"\ncontent-type = \"text/plain\"\n",
        )
        .start()
        .await
        .unwrap();
    assert_eq!(app.app().wiring().functions[0].kind, FunctionKind::Source);
    assert_eq!(
        &app.receive("greetings").await.unwrap().payload()[..],
        b"hello world"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_source_returning_a_stream_sends_every_item_then_stops() {
    async fn numbers() -> impl Stream<Item = Order> {
        futures::stream::iter((1..=50).map(|id| Order { id, qty: 1 }))
    }
    let mut app = TestApp::builder()
        .function("numbers", numbers)
        .config("[bindings.numbers-out-0]\ndestination = \"numbers\"\n")
        .start()
        .await
        .unwrap();
    for id in 1..=50 {
        assert_eq!(app.receive_json::<Order>("numbers").await.unwrap().id, id);
    }
    assert!(
        app.nothing_on("numbers", Duration::from_millis(1500)).await,
        "a stream source is not polled again"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn composition_pipes_functions_in_process() {
    async fn parse(text: String) -> Order {
        let (id, qty) = text.split_once('x').expect("IDxQTY");
        Order {
            id: id.parse().unwrap(),
            qty: qty.parse().unwrap(),
        }
    }
    async fn only_even(order: Order) -> Option<Order> {
        (order.id % 2 == 0).then_some(order)
    }
    async fn describe(order: Order) -> String {
        format!("order {} of {}", order.id, order.qty)
    }
    let config = r#"
        [bindery]
        definition = "parse|only_even|describe"
        [bindings."parse|only_even|describe-in-0"]
        destination = "in"
        group = "g"
        content-type = "text/plain"
        [bindings."parse|only_even|describe-out-0"]
        destination = "out"
        content-type = "text/plain"
    "#;
    let mut app = TestApp::builder()
        .function("parse", parse)
        .function("only_even", only_even)
        .function("describe", describe)
        .config(config)
        .start()
        .await
        .unwrap();
    assert_eq!(
        app.app().wiring().functions[0].kind,
        FunctionKind::Processor
    );
    app.send("in", "1x5").await.unwrap();
    app.send("in", "2x7").await.unwrap();
    assert_eq!(
        &app.receive("out").await.unwrap().payload()[..],
        b"order 2 of 7"
    );
    assert!(app.nothing_on("out", Duration::from_millis(200)).await);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn composition_ending_in_a_sink_is_a_sink() {
    static LAST: AtomicU32 = AtomicU32::new(0);
    async fn parse(text: String) -> u32 {
        text.parse().unwrap()
    }
    async fn store(n: u32) {
        LAST.store(n, Ordering::SeqCst);
    }
    let config = "[bindery]\ndefinition = \"parse|store\"\n[bindings.\"parse|store-in-0\"]\ndestination = \"in\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n";
    let mut app = TestApp::builder()
        .function("parse", parse)
        .function("store", store)
        .config(config)
        .start()
        .await
        .unwrap();
    assert_eq!(app.app().wiring().functions[0].kind, FunctionKind::Sink);
    app.send("in", "77").await.unwrap();
    app.settled("parse|store-in-0", 1).await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(LAST.load(Ordering::SeqCst), 77);
}

#[tokio::test]
async fn the_dynamic_sender_sends_to_destinations_named_at_run_time() {
    async fn fan_out(order: Order, sender: Sender) -> Result<(), bindery::SendError> {
        sender
            .send(&format!("orders-{}", order.id % 2), order)
            .await
    }
    let config = r#"
        [bindery]
        output-bindings = ["orders-1"]
        [bindings.fan_out-in-0]
        destination = "in"
        group = "g"
        [bindings.orders-1]
        destination = "odd-orders"
    "#;
    let mut app = TestApp::builder()
        .function("fan_out", fan_out)
        .config(config)
        .start()
        .await
        .unwrap();
    // `orders-0` is no binding: it names a destination on the default
    // binder. Subscribe before anything is sent there.
    assert!(app.nothing_on("orders-0", Duration::from_millis(10)).await);
    app.send("in", Order { id: 4, qty: 1 }).await.unwrap();
    app.send("in", Order { id: 3, qty: 1 }).await.unwrap();
    assert_eq!(app.receive_json::<Order>("orders-0").await.unwrap().id, 4);
    assert_eq!(app.receive_json::<Order>("odd-orders").await.unwrap().id, 3);
    // The sender is also usable from outside functions.
    app.app()
        .sender()
        .send("orders-1", Order { id: 5, qty: 1 })
        .await
        .unwrap();
    assert_eq!(app.receive_json::<Order>("odd-orders").await.unwrap().id, 5);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn producer_templates_set_routing_key_and_key() {
    async fn same(order: Order) -> Order {
        order
    }
    let config = r#"
        [bindings.same-in-0]
        destination = "in"
        group = "g"
        [bindings.same-out-0]
        destination = "out"
        [bindings.same-out-0.producer]
        routing-key = "orders.{header.region}"
        partition-key = "order-{payload.id}"
    "#;
    let mut app = TestApp::builder()
        .function("same", same)
        .config(config)
        .start()
        .await
        .unwrap();
    let message = Message::new(Bytes::from(r#"{"id":8,"qty":1}"#)).with_header("region", "eu");
    app.send_message("in", message).await.unwrap();
    let out = app.receive("out").await.unwrap();
    assert_eq!(out.routing_key(), Some("orders.eu"));
    assert_eq!(out.key().map(|k| &k[..]), Some(&b"order-8"[..]));
    // A missing header makes the template fail: the message is dead-lettered.
    app.send("in", Order { id: 9, qty: 1 }).await.unwrap();
    let dead = app.dead_letter("same-in-0").await.unwrap();
    assert!(
        dead.headers()
            .get("x-exception-message")
            .unwrap()
            .contains("header `region` is missing")
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_shared_by_functions() {
    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicU32>);
    async fn bump(_text: String, State(counter): State<Counter>) -> u32 {
        counter.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    let counter = Counter::default();
    let mut app = TestApp::builder()
        .function("bump", bump)
        .state(counter.clone())
        .config(&io_config("bump", "text/plain"))
        .start()
        .await
        .unwrap();
    app.send("in", "a").await.unwrap();
    app.send("in", "b").await.unwrap();
    assert_eq!(&app.receive("out").await.unwrap().payload()[..], b"1");
    assert_eq!(&app.receive("out").await.unwrap().payload()[..], b"2");
    app.shutdown().await.unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
}
