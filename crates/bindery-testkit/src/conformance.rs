//! The binder conformance suite (SPEC §7): one set of cases every binder
//! must pass, against the memory binder, a real RabbitMQ and a real
//! Kafka-compatible broker.
//!
//! A binder crate's test implements [`BinderHarness`] and expands
//! [`conformance_suite!`](crate::conformance_suite), which makes one named
//! `#[tokio::test]` per case. Every case uses fresh destinations and
//! groups. Real differences between brokers are read from
//! [`Capabilities`](bindery::binder::Capabilities) — nothing else varies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bindery::binder::BinderExt;
use bindery::binder::{Binder, Consumer, ConsumerSpec, Delivery, Producer, ProducerSpec};
use bindery::message::names;
use bindery::{App, Message, RunningApp, State};
use bytes::Bytes;
use parking_lot::Mutex;

use crate::unique_name;

mod failures;
mod lifecycle;
mod refusing;

pub use failures::{
    panicking_function_concurrency_four, panicking_function_concurrency_one,
    stream_tail_failure_not_acked,
};
pub use lifecycle::{
    consumer_reopened_mid_stream, many_subscribers_at_once, publisher_closed_during_bulk_publish,
    repeated_nacks_redeliver,
};

/// What a binder's test supplies to run the suite.
#[async_trait]
pub trait BinderHarness: Send + Sync + 'static {
    /// A binder connected to the broker under test. It may be shared by
    /// cases; every case uses its own destinations.
    async fn binder(&self) -> Arc<dyn Binder>;

    /// Broker-specific headers a dead letter carries besides SPEC §5's
    /// common ones (`x-original-exchange`, `x-original-topic`, ...).
    fn dead_letter_headers(&self) -> &'static [&'static str];

    /// How long to wait for a message that should arrive.
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// How long to wait before concluding that nothing more will arrive.
    fn quiet_period(&self) -> Duration {
        Duration::from_millis(700)
    }
}

/// Expands into one `#[tokio::test]` per conformance case, each calling
/// the case with the harness `$harness` (an expression, evaluated per test).
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@cases $harness;
            c01_round_trip_keeps_payload_headers_content_type_and_key => round_trip,
            c02_competing_consumers_each_message_to_exactly_one => competing_consumers,
            c03_two_groups_each_get_every_message => two_groups,
            c04a_order_kept_with_concurrency_one => order_with_concurrency_one,
            c04b_order_kept_per_key_with_concurrency => order_per_key_with_concurrency,
            c05_unacknowledged_message_redelivered_to_group => unacknowledged_redelivered,
            c06_retry_makes_exactly_max_attempts_with_back_off => retry_attempts_and_back_off,
            c07_exhausted_message_dead_lettered_with_every_header => exhausted_dead_lettered,
            c08_undecodable_payload_dead_lettered_later_ones_unaffected => undecodable_dead_lettered,
            c09_durable_group_receives_what_was_sent_while_away => durable_group_while_away,
            c10_anonymous_subscriber_receives_only_what_follows => anonymous_only_what_follows,
            c11_routing_keys_with_star_and_hash => routing_keys,
            c12_concurrent_publishers_count_in_equals_count_out => concurrent_publishers,
            c13_one_mebibyte_payload => one_mebibyte_payload,
            c14_unbind_and_bind_again_loses_nothing => unbind_and_rebind,
            c15_prefetch_bound_honoured_under_backlog => prefetch_bound,
            c16_send_that_returns_ok_is_on_the_broker => publish_confirmed,
            c17_publisher_closed_during_bulk_publish_loses_nothing => publisher_closed_during_bulk_publish,
            c18_fifty_subscribers_of_one_group_at_once_each_message_once => many_subscribers_at_once,
            c19_consumer_closed_and_reopened_mid_stream_loses_nothing => consumer_reopened_mid_stream,
            c20_repeated_nacks_redeliver_then_ack => repeated_nacks_redeliver,
            c21a_panicking_function_dead_lettered_with_concurrency_one => panicking_function_concurrency_one,
            c21b_panicking_function_dead_lettered_with_concurrency_four => panicking_function_concurrency_four,
            c22_stream_tail_failure_is_not_acked => stream_tail_failure_not_acked,
        );
    };
    (@cases $harness:expr; $($test:ident => $case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::init_logging();
                let harness = $harness;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}

// ----------------------------------------------------------------------
// Helpers

async fn recv(consumer: &mut dyn Consumer, timeout: Duration, what: &str) -> Delivery {
    match tokio::time::timeout(timeout, consumer.recv()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("{what}: the consumer ended"),
        Err(_) => panic!("{what}: nothing arrived within {timeout:?}"),
    }
}

async fn recv_none(consumer: &mut dyn Consumer, quiet: Duration) -> Option<Delivery> {
    tokio::time::timeout(quiet, consumer.recv())
        .await
        .ok()
        .flatten()
}

async fn send(producer: &dyn Producer, message: Message) {
    producer
        .send(message)
        .await
        .expect("send")
        .await
        .expect("broker confirmation");
}

fn numbered(i: usize) -> Message {
    Message::new(Bytes::from(format!("{i}"))).with_content_type("text/plain")
}

fn number_of(delivery: &Delivery) -> usize {
    std::str::from_utf8(delivery.message().payload())
        .expect("utf-8")
        .parse()
        .expect("a number")
}

/// A destination and a producer that also provisions `groups`.
async fn destination_with_groups(
    binder: &Arc<dyn Binder>,
    case: &str,
    groups: &[&str],
) -> (String, Arc<dyn Producer>) {
    let destination = unique_name(case);
    let spec = ProducerSpec::new(format!("{case}-out"), &destination)
        .required_groups(groups.iter().map(|g| case_group(&destination, g)));
    let producer = binder.producer(&spec).await.expect("bind producer");
    (destination, producer)
}

fn consumer_spec(case: &str, destination: &str, group: Option<&str>) -> ConsumerSpec {
    let spec = ConsumerSpec::new(format!("{case}-in"), destination);
    match group {
        Some(group) => spec.group(case_group(destination, group)),
        None => spec,
    }
}

/// The group `group` of a case's destination. Group names are unique per
/// case as destinations are: on Kafka a group id spans topics, so cases
/// sharing a group name would rebalance each other.
fn case_group(destination: &str, group: &str) -> String {
    format!("{destination}.{group}")
}

/// Receives until `count` distinct numbers arrived, acking each.
async fn collect_numbers(
    consumer: &mut dyn Consumer,
    count: usize,
    timeout: Duration,
    what: &str,
) -> Vec<usize> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let delivery = recv(
            consumer,
            timeout,
            &format!("{what} ({} of {count})", seen.len()),
        )
        .await;
        seen.push(number_of(&delivery));
        delivery.ack().await.expect("ack");
    }
    seen
}

/// An app on the binder under test; `definition` functions are added by
/// the caller.
async fn start_app(
    builder: bindery::AppBuilder,
    binder: Arc<dyn Binder>,
    config: &str,
) -> RunningApp {
    let app = builder
        .without_registered_functions()
        .binder("under-test", binder)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("valid configuration");
    let running = app.start().await.expect("start");
    running.ready().await;
    running
}

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

// ----------------------------------------------------------------------
// Cases

/// Case 1: A round trip keeps payload bytes, headers, content type and key.
pub async fn round_trip<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c01", &["g"]).await;
    let mut consumer = binder
        .consumer(&consumer_spec("c01", &destination, Some("g")))
        .await
        .unwrap();
    let payload = Bytes::from_static(&[0, 159, 146, 150, 255, b'\n', b'"']);
    let sent = Message::new(payload.clone())
        .with_content_type("application/octet-stream")
        .with_header("trace-id", "t-42")
        .with_header("note", "spaces and ünïcode")
        .with_key("customer-7")
        .with_routing_key("orders.created");
    send(producer.as_ref(), sent).await;
    let delivery = recv(consumer.as_mut(), harness.timeout(), "round trip").await;
    let got = delivery.message().clone();
    delivery.ack().await.unwrap();
    assert_eq!(got.payload(), &payload, "payload bytes");
    assert_eq!(got.content_type(), Some("application/octet-stream"));
    assert_eq!(got.headers().get("trace-id"), Some("t-42"));
    assert_eq!(got.headers().get("note"), Some("spaces and ünïcode"));
    assert_eq!(got.key().map(|k| &k[..]), Some(&b"customer-7"[..]), "key");
    assert_eq!(got.routing_key(), Some("orders.created"), "routing key");
}

/// Case 2: Competing consumers in one group: every message to exactly one.
pub async fn competing_consumers<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c02", &["g"]).await;
    let spec = consumer_spec("c02", &destination, Some("g"));
    let first = binder.consumer(&spec).await.unwrap();
    let second = binder.consumer(&spec).await.unwrap();
    const COUNT: usize = 100;
    for i in 0..COUNT {
        send(producer.as_ref(), numbered(i)).await;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util_free_flag();
    let mut readers = Vec::new();
    for (index, mut consumer) in [first, second].into_iter().enumerate() {
        let seen = seen.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(Some(delivery)) =
                    tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
                {
                    seen.lock().push((index, number_of(&delivery)));
                    delivery.ack().await.unwrap();
                }
            }
            consumer
        }));
    }
    wait_until(harness.timeout() * 2, "competing consumers", || {
        seen.lock().len() >= COUNT
    })
    .await;
    tokio::time::sleep(harness.quiet_period()).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        drop(reader.await.unwrap());
    }
    let seen = seen.lock();
    let numbers: BTreeSet<usize> = seen.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        seen.len(),
        COUNT,
        "each message exactly once (duplicates or losses)"
    );
    assert_eq!(numbers, (0..COUNT).collect(), "every message");
}

fn tokio_util_free_flag() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

/// Case 3: Two groups: every message to both.
pub async fn two_groups<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c03", &["a", "b"]).await;
    let mut a = binder
        .consumer(&consumer_spec("c03", &destination, Some("a")))
        .await
        .unwrap();
    let mut b = binder
        .consumer(&consumer_spec("c03", &destination, Some("b")))
        .await
        .unwrap();
    const COUNT: usize = 50;
    for i in 0..COUNT {
        send(producer.as_ref(), numbered(i)).await;
    }
    let in_a: BTreeSet<usize> = collect_numbers(a.as_mut(), COUNT, harness.timeout(), "group a")
        .await
        .into_iter()
        .collect();
    let in_b: BTreeSet<usize> = collect_numbers(b.as_mut(), COUNT, harness.timeout(), "group b")
        .await
        .into_iter()
        .collect();
    assert_eq!(in_a, (0..COUNT).collect());
    assert_eq!(in_b, (0..COUNT).collect());
    assert!(
        recv_none(a.as_mut(), harness.quiet_period())
            .await
            .is_none(),
        "no duplicate in group a"
    );
}

/// Case 4a: With concurrency 1 a binding processes in order.
pub async fn order_with_concurrency_one<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c04a", &["g"]).await;
    let mut consumer = binder
        .consumer(&consumer_spec("c04a", &destination, Some("g")))
        .await
        .unwrap();
    const COUNT: usize = 300;
    for i in 0..COUNT {
        send(producer.as_ref(), numbered(i)).await;
    }
    let seen = collect_numbers(consumer.as_mut(), COUNT, harness.timeout(), "ordered").await;
    assert_eq!(seen, (0..COUNT).collect::<Vec<_>>(), "arrival order");
}

/// What the per-key ordering sink saw: sequence numbers by key.
type SeenByKey = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

async fn record_in_order(message: Message<String>, State(seen): State<SeenByKey>) {
    let (key, number) = message.payload().split_once(':').expect("key:number");
    let (key, number) = (key.to_owned(), number.parse::<u64>().expect("number"));
    // Vary processing time so lanes interleave.
    tokio::time::sleep(Duration::from_millis(number % 3)).await;
    seen.lock().entry(key).or_default().push(number);
}

/// Case 4b: With concurrency above 1, messages sharing a key keep their order.
pub async fn order_per_key_with_concurrency<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let destination = unique_name("c04b");
    let group = case_group(&destination, "ordered");
    let config = format!(
        r#"
        [bindery]
        default-binder = "under-test"
        [bindings.record-in-0]
        destination = "{destination}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.record-in-0.consumer]
        concurrency = 4
        prefetch = 64
        "#
    );
    let seen = SeenByKey::default();
    let running = start_app(
        App::builder()
            .function("record", record_in_order)
            .state(seen.clone()),
        binder.clone(),
        &config,
    )
    .await;
    let producer = binder
        .producer(&ProducerSpec::new("c04b-out", &destination))
        .await
        .unwrap();
    const KEYS: u64 = 8;
    const PER_KEY: u64 = 40;
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            let key = format!("k{k}");
            let message = Message::new(Bytes::from(format!("{key}:{n}")))
                .with_key(key)
                .with_content_type("text/plain");
            send(producer.as_ref(), message).await;
        }
    }
    wait_until(harness.timeout() * 3, "per-key processing", || {
        seen.lock().values().map(Vec::len).sum::<usize>() as u64 >= KEYS * PER_KEY
    })
    .await;
    running.shutdown().await.unwrap();
    for (key, numbers) in seen.lock().iter() {
        assert_eq!(
            numbers,
            &(0..PER_KEY).collect::<Vec<_>>(),
            "order of key {key}"
        );
    }
}

/// Case 5: A message left unacknowledged by a consumer that goes away is
/// redelivered to its group; a nack with requeue redelivers too.
pub async fn unacknowledged_redelivered<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c05", &["g"]).await;
    let spec = consumer_spec("c05", &destination, Some("g"));
    let mut first = binder.consumer(&spec).await.unwrap();
    send(producer.as_ref(), numbered(1)).await;
    let delivery = recv(first.as_mut(), harness.timeout(), "first delivery").await;
    assert_eq!(number_of(&delivery), 1);
    drop(delivery); // never acknowledged
    drop(first); // the consumer goes away
    let mut second = binder.consumer(&spec).await.unwrap();
    let again = recv(
        second.as_mut(),
        harness.timeout(),
        "redelivery after the consumer left",
    )
    .await;
    assert_eq!(
        number_of(&again),
        1,
        "the unacknowledged message comes back"
    );
    again.ack().await.unwrap();

    // A nack with requeue hands the message back to the group.
    send(producer.as_ref(), numbered(2)).await;
    send(producer.as_ref(), numbered(3)).await;
    let two = recv(second.as_mut(), harness.timeout(), "message 2").await;
    assert_eq!(number_of(&two), 2);
    two.nack(true).await.unwrap();
    let mut received = Vec::new();
    while !received.contains(&3) || received.iter().filter(|n| **n == 2).count() == 0 {
        let delivery = recv(second.as_mut(), harness.timeout(), "after nack").await;
        received.push(number_of(&delivery));
        delivery.ack().await.unwrap();
    }
    assert!(received.contains(&2), "the nacked message was redelivered");
    if binder.capabilities().requeue_single {
        // Message 3 may have reached the consumer before 2 came back
        // (prefetch), so the order is free; the counts are not.
        received.sort_unstable();
        assert_eq!(received, [2, 3], "only the nacked message is redelivered");
        assert!(
            recv_none(second.as_mut(), harness.quiet_period())
                .await
                .is_none()
        );
    }
}

/// Attempts seen by the failing functions, with when they happened.
type Attempts = Arc<Mutex<Vec<(u32, Instant)>>>;

#[derive(Debug, thiserror::Error)]
#[error("payment service refused the order")]
struct PaymentRefused(#[source] GatewayDown);

#[derive(Debug, thiserror::Error)]
#[error("gateway 10.0.0.7 timed out")]
struct GatewayDown;

async fn always_fails(
    _payload: String,
    bindery::Attempt(attempt): bindery::Attempt,
    State(attempts): State<Attempts>,
) -> Result<(), PaymentRefused> {
    attempts.lock().push((attempt, Instant::now()));
    Err(PaymentRefused(GatewayDown))
}

fn failing_config(destination: &str, group: &str, max_attempts: u32, initial_ms: u64) -> String {
    format!(
        r#"
        [bindery]
        default-binder = "under-test"
        [bindings.pay-in-0]
        destination = "{destination}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.pay-in-0.consumer]
        max-attempts = {max_attempts}
        back-off-initial-interval = "{initial_ms}ms"
        back-off-multiplier = 2.0
        back-off-max-interval = "1s"
        "#
    )
}

/// Case 6: Retry makes exactly `max-attempts` attempts, with the back-off.
pub async fn retry_attempts_and_back_off<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    for max_attempts in [1u32, 3] {
        let destination = unique_name("c06");
        let group = case_group(&destination, "payments");
        let attempts = Attempts::default();
        let running = start_app(
            App::builder()
                .function("pay", always_fails)
                .state(attempts.clone()),
            binder.clone(),
            &failing_config(&destination, &group, max_attempts, 40),
        )
        .await;
        let producer = binder
            .producer(&ProducerSpec::new("c06-out", &destination))
            .await
            .unwrap();
        send(
            producer.as_ref(),
            Message::new(Bytes::from_static(b"order-1")),
        )
        .await;
        let expected = max_attempts as usize;
        // Generous: the attempts, their back-off and a dead-letter confirm
        // on a broker shared with other cases.
        wait_until(harness.timeout() * 2, "attempts", || {
            running.stats().binding("pay-in-0").dead_lettered == 1
        })
        .await;
        tokio::time::sleep(harness.quiet_period()).await;
        let seen = attempts.lock().clone();
        running.shutdown().await.unwrap();
        assert_eq!(
            seen.len(),
            expected,
            "max-attempts {max_attempts}: attempts made"
        );
        assert_eq!(
            seen.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            (1..=max_attempts).collect::<Vec<_>>()
        );
        // Wall-clock gaps against a real broker, so lower bounds only: a
        // loaded machine or a slow broker can only make a gap longer than
        // its back-off, never shorter (tokio rounds timer deadlines up), and
        // an upper bound would fail for reasons that are not the runtime's.
        // The exact schedule is checked with paused time in tests/retry.rs.
        for (i, pair) in seen.windows(2).enumerate() {
            let gap = pair[1].1.saturating_duration_since(pair[0].1);
            let minimum = Duration::from_millis(40 << i);
            assert!(
                gap >= minimum,
                "back-off before attempt {}: {gap:?} < {minimum:?}",
                i + 2
            );
        }
    }
}

/// Case 7: Exhausted → dead letter with every header; `max-attempts = 1` → one
/// attempt only.
pub async fn exhausted_dead_lettered<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let destination = unique_name("c07");
    let group = case_group(&destination, "payments");
    let attempts = Attempts::default();
    let running = start_app(
        App::builder()
            .function("pay", always_fails)
            .state(attempts.clone()),
        binder.clone(),
        &failing_config(&destination, &group, 3, 10),
    )
    .await;
    let producer = binder
        .producer(&ProducerSpec::new("c07-out", &destination))
        .await
        .unwrap();
    let original = Message::new(Bytes::from_static(b"order-7"))
        .with_header("trace-id", "t-7")
        .with_key("customer-7")
        .with_routing_key("orders.created");
    send(producer.as_ref(), original).await;
    let spec = running
        .wiring()
        .input("pay-in-0")
        .expect("input binding")
        .consumer
        .clone();
    let mut dead_letters = binder.dead_letter_consumer(&spec).await.unwrap();
    let delivery = recv(dead_letters.as_mut(), harness.timeout(), "dead letter").await;
    let dead = delivery.message().clone();
    delivery.ack().await.unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(attempts.lock().len(), 3);
    assert_eq!(
        dead.payload(),
        &Bytes::from_static(b"order-7"),
        "payload kept"
    );
    assert_eq!(
        dead.headers().get("trace-id"),
        Some("t-7"),
        "original headers kept"
    );
    let headers = dead.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("dead letter lacks `{name}`: {headers:?}"))
    };
    assert_eq!(
        header(names::EXCEPTION_MESSAGE),
        "payment service refused the order"
    );
    let trace = header(names::EXCEPTION_STACKTRACE);
    assert!(
        trace.contains("payment service refused") && trace.contains("gateway 10.0.0.7 timed out"),
        "error chain: {trace}"
    );
    assert!(header(names::EXCEPTION_FQCN).ends_with("PaymentRefused"));
    assert_eq!(header(names::ORIGINAL_DESTINATION), destination);
    assert_eq!(header(names::ORIGINAL_GROUP), group);
    assert_eq!(header(names::DELIVERY_ATTEMPTS), "3");
    // Binder headers may be binary (Spring's Kafka `x-original-partition`
    // is a 4-byte int), so presence is checked on the bytes.
    for name in harness.dead_letter_headers() {
        let value = headers
            .get_bytes(name)
            .unwrap_or_else(|| panic!("dead letter lacks `{name}`: {headers:?}"));
        assert!(!value.is_empty(), "`{name}` is empty");
    }
}

#[derive(Debug, serde::Deserialize)]
struct Order {
    id: u64,
}

async fn record_order(order: Order, State(seen): State<Arc<Mutex<Vec<u64>>>>) {
    seen.lock().push(order.id);
}

/// Case 8: An undecodable payload is dead-lettered at once; later messages are
/// unaffected.
pub async fn undecodable_dead_lettered<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let destination = unique_name("c08");
    let group = case_group(&destination, "orders");
    let config = format!(
        r#"
        [bindery]
        default-binder = "under-test"
        [bindings.record-in-0]
        destination = "{destination}"
        group = "{group}"
        [bindings.record-in-0.consumer]
        max-attempts = 3
        back-off-initial-interval = "10ms"
        "#
    );
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let running = start_app(
        App::builder()
            .function("record", record_order)
            .state(seen.clone()),
        binder.clone(),
        &config,
    )
    .await;
    let producer = binder
        .producer(&ProducerSpec::new("c08-out", &destination))
        .await
        .unwrap();
    send(
        producer.as_ref(),
        Message::new(Bytes::from_static(b"{not json")).with_content_type("application/json"),
    )
    .await;
    for id in 1..=5u64 {
        let message = Message::new(Bytes::from(format!(r#"{{"id":{id}}}"#)))
            .with_content_type("application/json");
        send(producer.as_ref(), message).await;
    }
    wait_until(harness.timeout(), "valid orders", || seen.lock().len() >= 5).await;
    let spec = running
        .wiring()
        .input("record-in-0")
        .unwrap()
        .consumer
        .clone();
    let mut dead_letters = binder.dead_letter_consumer(&spec).await.unwrap();
    let delivery = recv(dead_letters.as_mut(), harness.timeout(), "dead letter").await;
    let dead = delivery.message().clone();
    delivery.ack().await.unwrap();
    let stats = running.shutdown().await.unwrap();
    assert_eq!(*seen.lock(), [1, 2, 3, 4, 5]);
    assert_eq!(dead.payload(), &Bytes::from_static(b"{not json"));
    assert_eq!(
        dead.headers().get(names::DELIVERY_ATTEMPTS),
        Some("1"),
        "never retried"
    );
    assert!(
        dead.headers()
            .get(names::EXCEPTION_MESSAGE)
            .unwrap_or_default()
            .contains("cannot decode")
    );
    assert_eq!(stats.binding("record-in-0").retried, 0);
}

/// Case 9: A durable group receives what was published while it was away.
pub async fn durable_group_while_away<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c09", &["keep"]).await;
    let spec = consumer_spec("c09", &destination, Some("keep"));
    let mut consumer = binder.consumer(&spec).await.unwrap();
    send(producer.as_ref(), numbered(0)).await;
    assert_eq!(
        collect_numbers(consumer.as_mut(), 1, harness.timeout(), "before leaving").await,
        [0]
    );
    drop(consumer);
    for i in 1..=10 {
        send(producer.as_ref(), numbered(i)).await;
    }
    let mut consumer = binder.consumer(&spec).await.unwrap();
    let seen = collect_numbers(
        consumer.as_mut(),
        10,
        harness.timeout(),
        "after coming back",
    )
    .await;
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

/// Case 10: An anonymous subscriber receives only what follows its subscription.
pub async fn anonymous_only_what_follows<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c10", &["keep"]).await;
    for i in 0..5 {
        send(producer.as_ref(), numbered(i)).await;
    }
    let mut anonymous = binder
        .consumer(&consumer_spec("c10", &destination, None))
        .await
        .unwrap();
    for i in 5..8 {
        send(producer.as_ref(), numbered(i)).await;
    }
    let seen = collect_numbers(anonymous.as_mut(), 3, harness.timeout(), "anonymous").await;
    assert_eq!(seen, [5, 6, 7], "only messages sent after subscribing");
    assert!(
        recv_none(anonymous.as_mut(), harness.quiet_period())
            .await
            .is_none()
    );
}

/// Case 11: Routing keys with `*` and `#`.
pub async fn routing_keys<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c11", &[]).await;
    let bind = |group: &str, patterns: &[&str]| {
        consumer_spec("c11", &destination, Some(group)).routing_keys(patterns)
    };
    let mut items = binder.consumer(&bind("items", &["item.*"])).await.unwrap();
    let mut audit = binder.consumer(&bind("audit", &["audit.#"])).await.unwrap();
    let mut updates = binder
        .consumer(&bind("updates", &["*.update", "item.delete"]))
        .await
        .unwrap();
    let mut everything = binder.consumer(&bind("everything", &["#"])).await.unwrap();
    let keys = [
        "item.insert",
        "item.update",
        "item.delete",
        "item.a.b",
        "audit",
        "audit.x.y",
        "user.update",
        "other",
    ];
    for (i, key) in keys.iter().enumerate() {
        send(producer.as_ref(), numbered(i).with_routing_key(*key)).await;
    }
    let expect = |matching: &[&str]| -> Vec<usize> {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| matching.contains(k))
            .map(|(i, _)| i)
            .collect()
    };
    let cases: [(&mut Box<dyn Consumer>, Vec<usize>, &str); 4] = [
        (
            &mut items,
            expect(&["item.insert", "item.update", "item.delete"]),
            "item.*",
        ),
        (&mut audit, expect(&["audit", "audit.x.y"]), "audit.#"),
        (
            &mut updates,
            expect(&["item.update", "user.update", "item.delete"]),
            "*.update + item.delete",
        ),
        (&mut everything, (0..keys.len()).collect(), "#"),
    ];
    for (consumer, expected, pattern) in cases {
        let mut seen = collect_numbers(
            consumer.as_mut(),
            expected.len(),
            harness.timeout(),
            pattern,
        )
        .await;
        seen.sort_unstable();
        assert_eq!(seen, expected, "pattern {pattern}");
        assert!(
            recv_none(consumer.as_mut(), harness.quiet_period())
                .await
                .is_none(),
            "pattern {pattern}: extra message"
        );
    }
}

/// Case 12: Many concurrent publishers: count in equals count out.
pub async fn concurrent_publishers<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, _) = destination_with_groups(&binder, "c12", &["g"]).await;
    let mut consumer = binder
        .consumer(&consumer_spec("c12", &destination, Some("g")).prefetch(256))
        .await
        .unwrap();
    const PUBLISHERS: usize = 8;
    const EACH: usize = 250;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let binder = binder.clone();
        let destination = destination.clone();
        tasks.push(tokio::spawn(async move {
            let producer = binder
                .producer(&ProducerSpec::new("c12-out", &destination))
                .await
                .unwrap();
            let mut confirmations = Vec::new();
            for i in 0..EACH {
                confirmations.push(producer.send(numbered(p * EACH + i)).await.expect("send"));
            }
            for confirmation in confirmations {
                confirmation.await.expect("confirm");
            }
        }));
    }
    let total = PUBLISHERS * EACH;
    let seen = collect_numbers(
        consumer.as_mut(),
        total,
        harness.timeout(),
        "from all publishers",
    )
    .await;
    for task in tasks {
        task.await.unwrap();
    }
    let distinct: BTreeSet<usize> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), total, "no duplicates");
    assert_eq!(distinct, (0..total).collect());
    assert!(
        recv_none(consumer.as_mut(), harness.quiet_period())
            .await
            .is_none(),
        "count out equals count in"
    );
}

/// Case 13: A 1 MiB payload goes through intact.
pub async fn one_mebibyte_payload<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c13", &["g"]).await;
    let mut consumer = binder
        .consumer(&consumer_spec("c13", &destination, Some("g")))
        .await
        .unwrap();
    let payload: Bytes = (0..1024 * 1024)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    send(
        producer.as_ref(),
        Message::new(payload.clone()).with_content_type("application/octet-stream"),
    )
    .await;
    let delivery = recv(consumer.as_mut(), harness.timeout(), "1 MiB").await;
    assert_eq!(delivery.message().payload().len(), payload.len());
    assert!(
        delivery.message().payload() == &payload,
        "payload bytes differ"
    );
    delivery.ack().await.unwrap();
}

/// Case 14: Unbind and bind again: nothing lost.
pub async fn unbind_and_rebind<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c14", &["g"]).await;
    let spec = consumer_spec("c14", &destination, Some("g")).prefetch(5);
    let mut consumer = binder.consumer(&spec).await.unwrap();
    for i in 0..20 {
        send(producer.as_ref(), numbered(i)).await;
    }
    let mut acked = BTreeSet::new();
    for _ in 0..5 {
        let delivery = recv(consumer.as_mut(), harness.timeout(), "before unbinding").await;
        acked.insert(number_of(&delivery));
        delivery.ack().await.unwrap();
    }
    // Take a few more and leave them unacknowledged when unbinding.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(recv(consumer.as_mut(), harness.timeout(), "held").await);
    }
    consumer.cancel().await.unwrap();
    drop(held);
    drop(consumer);
    for i in 20..30 {
        send(producer.as_ref(), numbered(i)).await;
    }
    let mut consumer = binder.consumer(&spec).await.unwrap();
    let mut later = BTreeSet::new();
    while acked.len() + later.len() < 30 {
        let delivery = recv(consumer.as_mut(), harness.timeout(), "after binding again").await;
        let n = number_of(&delivery);
        delivery.ack().await.unwrap();
        if !acked.contains(&n) {
            later.insert(n);
        }
    }
    let all: BTreeSet<usize> = acked.union(&later).copied().collect();
    assert_eq!(
        all,
        (0..30).collect(),
        "every message received after rebinding"
    );
}

/// Case 15: A consumer never holds more than `prefetch` unacknowledged messages,
/// however large the backlog.
pub async fn prefetch_bound<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c15", &["g"]).await;
    const BACKLOG: usize = 500;
    const PREFETCH: usize = 10;
    let mut confirmations = Vec::new();
    for i in 0..BACKLOG {
        confirmations.push(producer.send(numbered(i)).await.expect("send"));
    }
    for confirmation in confirmations {
        confirmation.await.expect("confirm");
    }
    let mut consumer = binder
        .consumer(&consumer_spec("c15", &destination, Some("g")).prefetch(PREFETCH))
        .await
        .unwrap();
    let mut held = Vec::new();
    while let Some(delivery) = if held.is_empty() {
        Some(recv(consumer.as_mut(), harness.timeout(), "first of the backlog").await)
    } else {
        recv_none(consumer.as_mut(), harness.quiet_period()).await
    } {
        held.push(delivery);
        assert!(
            held.len() <= PREFETCH,
            "received {} unacknowledged messages with prefetch {PREFETCH}",
            held.len()
        );
    }
    assert_eq!(held.len(), PREFETCH, "the consumer fills its prefetch");
    // Acknowledging frees room for exactly as many more.
    for delivery in held.drain(..5) {
        delivery.ack().await.unwrap();
    }
    let mut more = 0;
    while let Some(delivery) = recv_none(consumer.as_mut(), harness.quiet_period()).await {
        held.push(delivery);
        more += 1;
        assert!(held.len() <= PREFETCH, "exceeded prefetch after acking");
    }
    assert_eq!(more, 5, "five acks let five more in");
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for delivery in held {
        *counts.entry(number_of(&delivery)).or_default() += 1;
        delivery.ack().await.unwrap();
    }
    assert!(counts.values().all(|c| *c == 1));
}

/// Case 16: A send whose confirmation is Ok is on the broker: a group that binds
/// afterwards receives it.
pub async fn publish_confirmed<H: BinderHarness>(harness: &H) {
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c16", &["late"]).await;
    let confirmation = producer.send(numbered(16)).await.expect("send");
    confirmation.await.expect("the broker confirms");
    let mut consumer = binder
        .consumer(&consumer_spec("c16", &destination, Some("late")))
        .await
        .unwrap();
    assert_eq!(
        collect_numbers(consumer.as_mut(), 1, harness.timeout(), "confirmed message").await,
        [16]
    );
}
