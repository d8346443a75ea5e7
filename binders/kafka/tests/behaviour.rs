//! The Kafka binder beyond the conformance suite, against a real Kafka
//! broker (`BINDERY_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`; start
//! Apache Kafka there with `scripts/brokers/ensure-kafka.sh`): rebalances
//! while members come and go,
//! dead-letter topics, offsets, anonymous subscriptions, and broker loss
//! (on a private Apache Kafka node, killed and restarted, so the shared
//! broker is never disturbed). A consumer process killed mid-stream is
//! `consumer_killed.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;

use bindery::binder::BinderExt;
use bindery::binder::{Binder, Consumer, ConsumerSpec, Delivery, Producer, ProducerSpec};
use bindery::kafka::{KafkaBinder, OriginalRecord};
use bindery::message::names;
use bindery::{App, Message, RunningApp, State};
use bindery_testkit::{init_logging, unique_name};
use bindery_tests::kafka::{PrivateBroker, settings_for, test_settings};
use bytes::Bytes;
use parking_lot::Mutex;
use support::{binder, numbered, send_all, tally, wait_until, within};

// ----------------------------------------------------------------------
// Helpers

fn number_of(delivery: &Delivery) -> u64 {
    std::str::from_utf8(delivery.message().payload())
        .expect("utf-8")
        .parse()
        .expect("a number")
}

async fn recv(consumer: &mut dyn Consumer, what: &str) -> Delivery {
    within(Duration::from_secs(30), what, consumer.recv())
        .await
        .unwrap_or_else(|| panic!("{what}: the consumer ended"))
}

async fn recv_none(consumer: &mut dyn Consumer) -> Option<Delivery> {
    tokio::time::timeout(Duration::from_secs(1), consumer.recv())
        .await
        .ok()
        .flatten()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Starts an app on `binder` (registered as `kafka`) with `config`.
async fn start_app(
    builder: bindery::AppBuilder,
    binder: Arc<dyn Binder>,
    config: &str,
) -> RunningApp {
    let app = builder
        .without_registered_functions()
        .binder("kafka", binder)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("valid configuration");
    app.start().await.expect("start")
}

/// What apps processed: (instance, id) in processing order.
type Processed = Arc<Mutex<Vec<(&'static str, u64)>>>;

#[derive(Clone)]
struct Recorder {
    instance: &'static str,
    processed: Processed,
    delay: Duration,
}

async fn record(id: String, State(recorder): State<Recorder>) {
    if !recorder.delay.is_zero() {
        tokio::time::sleep(recorder.delay).await;
    }
    let id = id.parse().expect("a number");
    recorder.processed.lock().push((recorder.instance, id));
}

fn distinct(processed: &Processed) -> BTreeSet<u64> {
    processed.lock().iter().map(|(_, id)| *id).collect()
}

fn sink_config(destination: &str, group: &str, concurrency: usize) -> String {
    format!(
        r#"
        [bindery]
        default-binder = "kafka"
        [bindings.record-in-0]
        destination = "{destination}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.record-in-0.consumer]
        concurrency = {concurrency}
        prefetch = 64
        "#
    )
}

// ----------------------------------------------------------------------
// Members come and go

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_mid_stream_lose_nothing() {
    init_logging();
    const COUNT: u64 = 6_000;
    let topic = unique_name("rebalance");
    let group = unique_name("rebalance-group");
    let processed = Processed::default();
    let instance = |name: &'static str| {
        let recorder = Recorder {
            instance: name,
            processed: processed.clone(),
            delay: Duration::from_millis(1),
        };
        let config = sink_config(&topic, &group, 4);
        async move {
            let running = start_app(
                App::builder().function("record", record).state(recorder),
                binder(name, 4),
                &config,
            )
            .await;
            within(Duration::from_secs(60), name, running.ready()).await;
            running
        }
    };
    let a = instance("a").await;
    let b = instance("b").await;

    // A steady stream: 60 batches of 100, one every 200 ms.
    let seeder = binder("seeder", 4);
    let producer = seeder
        .producer(&ProducerSpec::new("seed", &topic).partition_count(4))
        .await
        .expect("bind producer");
    let stream = tokio::spawn(async move {
        for batch in 0..COUNT / 100 {
            send_all(
                producer.as_ref(),
                (batch * 100..(batch + 1) * 100).map(numbered),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    wait_until(Duration::from_secs(60), "a third of the stream", || {
        distinct(&processed).len() >= 2_000
    })
    .await;
    let c = instance("c").await;
    wait_until(Duration::from_secs(60), "half of the stream", || {
        distinct(&processed).len() >= 3_000
    })
    .await;
    a.shutdown().await.expect("instance a stops cleanly");
    within(Duration::from_secs(60), "the stream", stream)
        .await
        .expect("producer task");
    wait_until(Duration::from_secs(120), "every message", || {
        distinct(&processed).len() as u64 >= COUNT
    })
    .await;
    b.shutdown().await.expect("instance b stops cleanly");
    c.shutdown().await.expect("instance c stops cleanly");

    let processed = processed.lock();
    let per_instance = |name| processed.iter().filter(|(i, _)| *i == name).count();
    let (losses, duplicates) = tally(processed.iter().map(|(_, id)| *id), COUNT);
    println!(
        "two members, a third joins, one leaves: {} processed (a {}, b {}, c {}), losses = {losses}, duplicates = {duplicates}",
        processed.len(),
        per_instance("a"),
        per_instance("b"),
        per_instance("c"),
    );
    assert_eq!(losses, 0, "every message processed at least once");
    assert!(per_instance("c") > 0, "the member that joined took a share");
}

// ----------------------------------------------------------------------
// Dead letters

#[derive(Debug, thiserror::Error)]
#[error("ledger rejected the entry")]
struct LedgerRejected(#[source] LedgerOffline);

#[derive(Debug, thiserror::Error)]
#[error("ledger 7 is offline")]
struct LedgerOffline;

async fn always_fails(_payload: String) -> Result<(), LedgerRejected> {
    Err(LedgerRejected(LedgerOffline))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_read_back_from_its_topic_carries_every_header() {
    init_logging();
    let binder = binder("dead-letters", 1);
    let destination = unique_name("ledger");
    let group = unique_name("billing");
    let config = format!(
        r#"
        [bindery]
        default-binder = "kafka"
        [bindings.book-in-0]
        destination = "{destination}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.book-in-0.consumer]
        max-attempts = 2
        back-off-initial-interval = "10ms"
        "#
    );
    let running = start_app(
        App::builder().function("book", always_fails),
        binder.clone(),
        &config,
    )
    .await;
    within(Duration::from_secs(60), "app bound", running.ready()).await;
    let producer = binder
        .producer(&ProducerSpec::new("ledger-out", &destination))
        .await
        .expect("bind producer");
    let before = now_millis();
    let original = Message::new(Bytes::from_static(b"entry-9"))
        .with_header("trace-id", "t-9")
        .with_key("account-9")
        .with_routing_key("ledger.entry");
    send_all(producer.as_ref(), [original]).await;
    let after = now_millis();

    // Read the topic itself, as any Kafka client would.
    let topic = format!("error.{destination}.{group}");
    let spec = ConsumerSpec::new("inspect", &topic).group(unique_name("inspect"));
    let mut inspector = binder
        .consumer(&spec)
        .await
        .expect("bind to the dead-letter topic");
    let delivery = recv(inspector.as_mut(), "dead letter").await;
    let dead = delivery.message().clone();
    delivery.ack().await.expect("ack");
    running.shutdown().await.expect("clean shutdown");

    let headers = dead.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("dead letter lacks `{name}`: {headers:?}"))
    };
    assert_eq!(&dead.payload()[..], b"entry-9", "payload kept");
    assert_eq!(
        dead.key().map(|k| &k[..]),
        Some(&b"account-9"[..]),
        "key kept"
    );
    assert_eq!(dead.routing_key(), Some("ledger.entry"), "routing key kept");
    assert_eq!(header("trace-id"), "t-9", "original headers kept");
    assert_eq!(
        header(names::EXCEPTION_MESSAGE),
        "ledger rejected the entry"
    );
    let trace = header(names::EXCEPTION_STACKTRACE);
    assert!(
        trace.contains("ledger rejected") && trace.contains("ledger 7 is offline"),
        "{trace}"
    );
    assert!(header(names::EXCEPTION_FQCN).ends_with("LedgerRejected"));
    assert_eq!(header(names::ORIGINAL_DESTINATION), destination);
    assert_eq!(header(names::ORIGINAL_GROUP), group);
    assert_eq!(header(names::DELIVERY_ATTEMPTS), "2");
    assert_eq!(header("x-original-topic"), destination);
    // Numbers in Spring's binary encoding (issue 13).
    let bytes = |name: &str| headers.get_bytes(name).expect(name).to_vec();
    assert_eq!(bytes("x-original-partition"), 0i32.to_be_bytes());
    assert_eq!(
        bytes("x-original-offset"),
        0i64.to_be_bytes(),
        "the first record of the topic"
    );
    let original = OriginalRecord::from_headers(headers).expect("x-original-* headers");
    assert_eq!((original.partition, original.offset), (0, 0));
    let timestamp = original.timestamp.expect("milliseconds");
    assert!(
        (before..=after).contains(&timestamp),
        "{before} <= {timestamp} <= {after}"
    );
    assert_eq!(header("x-original-timestamp-type"), "CreateTime");
}

// ----------------------------------------------------------------------
// Group membership timings

/// How long joins and rebalances take with the tests' group settings
/// (`session.timeout.ms` 6000, `heartbeat.interval.ms` 750, librdkafka's
/// default `max.poll.interval.ms`; the broker sets
/// `group.initial.rebalance.delay.ms=0`). Printed for the record; the
/// bound only catches a join that waits on a timeout, as one on Tansu or
/// one with librdkafka's 45 s default session would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_join_and_rebalance_take_seconds_not_timeouts() {
    init_logging();
    const BOUND: Duration = Duration::from_secs(15);
    let binder = binder("timings", 4);
    let topic = unique_name("timings");
    let group = unique_name("timings-group");
    let producer = binder
        .producer(&ProducerSpec::new("out", &topic).partition_count(4))
        .await
        .expect("bind producer");
    let spec = ConsumerSpec::new("in", &topic).group(&group);

    // bind_consumer returns once the group assigned the member its
    // partitions.
    let started = Instant::now();
    let mut first = binder.consumer(&spec).await.expect("bind first");
    let join = started.elapsed();

    let started = Instant::now();
    let second = binder.consumer(&spec).await.expect("bind second");
    let rebalance = started.elapsed();

    // The second leaves: the first must take its partitions over, which
    // shows when it receives records of every partition.
    let started = Instant::now();
    drop(second);
    send_all(producer.as_ref(), (0..64).map(numbered)).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 64 {
        let delivery = within(BOUND, "the remaining member takes over", first.recv())
            .await
            .expect("the consumer ended");
        seen.insert(number_of(&delivery));
        delivery.ack().await.expect("ack");
    }
    let takeover = started.elapsed();
    println!(
        "group timings: first member joins in {:.2} s, a second joining (rebalance) {:.2} s, \
         one leaving until the other has its partitions and their records {:.2} s",
        join.as_secs_f64(),
        rebalance.as_secs_f64(),
        takeover.as_secs_f64()
    );
    assert!(join < BOUND, "first join took {join:?}");
    assert!(rebalance < BOUND, "rebalance took {rebalance:?}");
}

// ----------------------------------------------------------------------
// Offsets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_commit_only_the_contiguous_prefix() {
    init_logging();
    let binder = binder("prefix", 1);
    let topic = unique_name("prefix");
    let group = unique_name("prefix-group");
    let producer = binder
        .producer(&ProducerSpec::new("out", &topic))
        .await
        .expect("bind producer");
    let spec = ConsumerSpec::new("in", &topic).group(&group);
    send_all(producer.as_ref(), (0..5).map(numbered)).await;

    let mut first = binder.consumer(&spec).await.expect("bind");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(recv(first.as_mut(), "first pass").await);
    }
    let unacked = held.remove(0);
    assert_eq!(number_of(&unacked), 0);
    for delivery in held {
        delivery.ack().await.expect("ack"); // 1..=4, while 0 is in process
    }
    drop(unacked);
    drop(first);

    let mut second = binder.consumer(&spec).await.expect("bind again");
    let mut again = Vec::new();
    for _ in 0..5 {
        let delivery = recv(second.as_mut(), "second pass").await;
        again.push(number_of(&delivery));
        delivery.ack().await.expect("ack");
    }
    assert_eq!(
        again,
        [0, 1, 2, 3, 4],
        "nothing past the unacknowledged record was committed"
    );
    drop(second);

    send_all(producer.as_ref(), [numbered(5)]).await;
    let mut third = binder.consumer(&spec).await.expect("bind a third time");
    let next = recv(third.as_mut(), "third pass").await;
    assert_eq!(number_of(&next), 5, "everything before was committed");
    next.ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_filtered_by_routing_key_are_committed() {
    init_logging();
    let binder = binder("routing", 1);
    let topic = unique_name("routed");
    let group = unique_name("routed-group");
    let producer = binder
        .producer(&ProducerSpec::new("out", &topic))
        .await
        .expect("bind producer");
    let filtered = ConsumerSpec::new("in", &topic)
        .group(&group)
        .routing_keys(["keep.*"]);
    let mut consumer = binder.consumer(&filtered).await.expect("bind");
    send_all(
        producer.as_ref(),
        [
            numbered(0).with_routing_key("keep.a"),
            numbered(1).with_routing_key("skip.a"),
            numbered(2).with_routing_key("skip.b"),
        ],
    )
    .await;
    let kept = recv(consumer.as_mut(), "matching record").await;
    assert_eq!(number_of(&kept), 0);
    kept.ack().await.expect("ack");
    assert!(
        recv_none(consumer.as_mut()).await.is_none(),
        "non-matching records are not delivered"
    );
    drop(consumer);

    // Same group, every key: the skipped records must not come back.
    send_all(producer.as_ref(), [numbered(3).with_routing_key("later")]).await;
    let mut everything = binder
        .consumer(&ConsumerSpec::new("in", &topic).group(&group))
        .await
        .expect("bind again");
    let next = recv(everything.as_mut(), "after the skipped records").await;
    assert_eq!(number_of(&next), 3, "skipped records were committed");
    next.ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_subscriber_starts_after_a_batched_backlog() {
    init_logging();
    let binder = binder("anonymous", 1);
    let topic = unique_name("backlog");
    let producer = binder
        .producer(&ProducerSpec::new("out", &topic))
        .await
        .expect("bind producer");
    // All in flight at once: the broker gets many records per batch (where
    // Tansu's high watermark points inside the last batch; Apache Kafka's
    // is the end of the log, and the test runs without the timestamp
    // filter there).
    send_all(producer.as_ref(), (0..500).map(numbered)).await;
    let mut anonymous = binder
        .consumer(&ConsumerSpec::new("in", &topic))
        .await
        .expect("bind anonymous");
    send_all(producer.as_ref(), (1000..1003).map(numbered)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let delivery = recv(anonymous.as_mut(), "new records").await;
        seen.push(number_of(&delivery));
        delivery.ack().await.expect("ack");
    }
    assert_eq!(
        seen,
        [1000, 1001, 1002],
        "only records sent after subscribing"
    );
    assert!(recv_none(anonymous.as_mut()).await.is_none());
}

// ----------------------------------------------------------------------
// Broker loss, on a private broker

/// Settings for a binder on `broker`, giving up on each operation quickly
/// so the runtime's retries come often.
fn private_binder(name: &str, broker: &PrivateBroker) -> Arc<KafkaBinder> {
    let mut settings = settings_for(broker.address());
    settings.operation_timeout = Duration::from_secs(2);
    // Tansu fences an idempotent producer for good after a timed-out message.
    settings.replace_producer_after_timeout = true;
    // Sends the broker lost fail soon, so they are processed again.
    settings
        .producer_properties
        .set("message.timeout.ms", "5000");
    if !broker.keeps_data() {
        // A restarted memory-storage broker (Tansu) has lost every topic: a
        // consumer that rejoined before its topic was created again sees it
        // at the next metadata refresh (5 minutes by default).
        settings
            .consumer_properties
            .set("topic.metadata.refresh.interval.ms", "1000");
    }
    Arc::new(KafkaBinder::new(name, settings))
}

/// Sends `ids` one by one, retrying each until the broker confirms it.
async fn send_until_confirmed(producer: &dyn Producer, ids: std::ops::Range<u64>) {
    for id in ids {
        within(Duration::from_secs(90), "a confirmed send", async {
            loop {
                match producer.send(numbered(id)).await {
                    Ok(confirmation) => match confirmation.await {
                        Ok(()) => return,
                        Err(e) => assert!(e.is_transient(), "{e}"),
                    },
                    Err(e) => assert!(e.is_transient(), "{e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_then_up_app_binds_and_processes() {
    init_logging();
    let mut broker = PrivateBroker::new();
    let binder = private_binder("late-broker", &broker);
    let topic = unique_name("late");
    let processed = Processed::default();
    let recorder = Recorder {
        instance: "app",
        processed: processed.clone(),
        delay: Duration::ZERO,
    };
    let running = start_app(
        App::builder().function("record", record).state(recorder),
        binder.clone(),
        &sink_config(&topic, &unique_name("late-group"), 1),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "binder reports the broker down",
        || !binder.health().is_up(),
    )
    .await;
    assert!(
        !running.health().is_up(),
        "app reports itself down: {:?}",
        running.health()
    );

    broker.start();
    within(
        Duration::from_secs(90),
        "app binds once the broker is up",
        running.ready(),
    )
    .await;
    let seeder = private_binder("seeder", &broker);
    let producer = seeder
        .producer(&ProducerSpec::new("out", &topic))
        .await
        .expect("bind producer");
    send_all(producer.as_ref(), (0..50).map(numbered)).await;
    wait_until(Duration::from_secs(30), "messages processed", || {
        distinct(&processed).len() == 50
    })
    .await;
    wait_until(Duration::from_secs(30), "app reports itself up", || {
        running.health().is_up()
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
}

async fn relay(text: String) -> String {
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_lost_mid_stream_app_reports_it_and_resumes() {
    init_logging();
    let mut broker = PrivateBroker::new();
    broker.start();
    let binder = private_binder("lost-broker", &broker);
    let input = unique_name("lost-in");
    let output = unique_name("lost-out");
    let processed = Processed::default();
    let recorder = Recorder {
        instance: "app",
        processed: processed.clone(),
        delay: Duration::ZERO,
    };
    let config = format!(
        r#"
        [bindery]
        default-binder = "kafka"
        definition = "relay;record"
        [bindings.relay-in-0]
        destination = "{input}"
        group = "{relay_group}"
        content-type = "text/plain"
        [bindings.relay-out-0]
        destination = "{output}"
        content-type = "text/plain"
        [bindings.record-in-0]
        destination = "{output}"
        group = "{record_group}"
        content-type = "text/plain"
        "#,
        relay_group = unique_name("relay"),
        record_group = unique_name("record"),
    );
    let running = start_app(
        App::builder()
            .function("relay", relay)
            .function("record", record)
            .state(recorder),
        binder.clone(),
        &config,
    )
    .await;
    within(Duration::from_secs(60), "app bound", running.ready()).await;
    let seeder = private_binder("seeder", &broker);
    let producer = seeder
        .producer(&ProducerSpec::new("out", &input))
        .await
        .expect("bind producer");
    send_all(producer.as_ref(), (0..100).map(numbered)).await;
    wait_until(Duration::from_secs(60), "first part processed", || {
        distinct(&processed).len() == 100
    })
    .await;

    // The second part is sent while the broker goes away: one record at a
    // time, each retried until confirmed, paced so the kill lands in the
    // middle of it.
    let sender = tokio::spawn(async move {
        let mut confirmed = Vec::new();
        for id in 100..300 {
            send_until_confirmed(producer.as_ref(), id..id + 1).await;
            confirmed.push((id, Instant::now()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        confirmed
    });
    wait_until(Duration::from_secs(60), "the second part under way", || {
        distinct(&processed).len() >= 120
    })
    .await;

    // A crash, not a controlled shutdown: SIGKILL, so nothing is flushed,
    // handed over or said goodbye to, and the node recovers its log on the
    // next start.
    let stopped = Instant::now();
    tokio::task::block_in_place(|| broker.kill());
    assert!(!sender.is_finished(), "the broker was killed mid-stream");
    wait_until(
        Duration::from_secs(30),
        "app reports the broker lost",
        || !running.health().is_up(),
    )
    .await;
    if !broker.keeps_data() {
        // Stay away a while: librdkafka 2.12 can crash when Tansu comes
        // back within a few seconds with its topics gone
        // (scripts/brokers/TANSU-NOTES.md).
        tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed())).await;
    }
    assert!(
        !running.health().is_up(),
        "still down while the broker is away"
    );

    // Apache Kafka comes back with its topics, offsets and groups; a
    // memory-storage Tansu comes back empty, and the producers recreate
    // the topics. The start blocks for seconds: off the async workers.
    tokio::task::block_in_place(|| broker.start());
    let away = stopped.elapsed();
    let restarted = Instant::now();
    let confirmed = within(
        Duration::from_secs(120),
        "the second part confirmed",
        sender,
    )
    .await
    .expect("the sender");
    // Every record must come through, except on a broker without storage
    // (Tansu), which loses what it had confirmed but not yet delivered:
    // there only the records it confirmed after its restart.
    let expected: BTreeSet<u64> = (0..100)
        .chain(
            confirmed
                .iter()
                .filter(|(_, at)| broker.keeps_data() || *at > restarted)
                .map(|(id, _)| *id),
        )
        .collect();
    wait_until(Duration::from_secs(120), "every record processed", || {
        distinct(&processed).is_superset(&expected)
    })
    .await;
    let seen: Vec<u64> = processed.lock().iter().map(|(_, id)| *id).collect();
    let losses = expected.iter().filter(|id| !seen.contains(id)).count();
    let duplicates = seen.len() - seen.iter().collect::<BTreeSet<_>>().len();
    println!(
        "broker killed (SIGKILL) mid-stream and restarted after {:.1} s: \
         losses = {losses}, duplicates = {duplicates} of {} expected",
        away.as_secs_f64(),
        expected.len()
    );
    assert_eq!(losses, 0, "every record processed at least once");
    wait_until(
        Duration::from_secs(30),
        "app reports itself up again",
        || running.health().is_up(),
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
}

// ----------------------------------------------------------------------
// Configuration

#[test]
fn properties_the_binder_owns_and_typos_are_reported_before_start() {
    let config = r#"
        [bindery]
        default-binder = "kafka"
        [binders.kafka]
        type = "kafka"
        partitons = 3
        [binders.kafka.properties]
        "enable.auto.offset.store" = true
        "sesion.timeout.ms" = 6000
        "sasl.password" = "hunter2"
        [binders.kafka.consumer-properties]
        "enable.auto.commit" = false
        [bindings.record-in-0]
        destination = "orders"
        group = "billing"
        [bindings.record-in-0.kafka]
        start-offset = "middle"
    "#;
    let error = App::builder()
        .without_registered_functions()
        .function("record", always_fails)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect_err("invalid configuration");
    let text = error.to_string();
    for expected in [
        "did you mean `partitions`",
        "enable.auto.offset.store",
        "sesion.timeout.ms",
        "start-offset",
        "enable.auto.commit",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` not reported in:\n{text}"
        );
    }
    assert!(!text.contains("hunter2"), "a secret leaked into:\n{text}");
}

// ======================================================================
// Delivery audit, Kafka findings (A8, A17, A25, B6, B7; issue 13).
// Kept together at the end of the file to ease merging.

mod audit {
    use super::*;

    use bindery::kafka::rdkafka::ClientConfig;
    use bindery::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use bindery::kafka::rdkafka::client::DefaultClientContext;
    use bindery::kafka::rdkafka::message::{Header, OwnedHeaders};
    use bindery::kafka::rdkafka::producer::{FutureProducer, FutureRecord};
    use bindery::kafka::{HEADERS_TRUNCATED, KafkaSettings};
    use bindery_tests::kafka::brokers;

    /// A plain rdkafka producer, for records bindery would not write
    /// (explicit timestamps, chosen partitions, foreign headers).
    fn raw_producer() -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("linger.ms", "1")
            .create()
            .expect("raw producer")
    }

    async fn produce(producer: &FutureProducer, record: FutureRecord<'_, str, [u8]>) {
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("raw send confirmed");
    }

    fn binder_with(
        name: &str,
        partitions: usize,
        adjust: impl FnOnce(&mut KafkaSettings),
    ) -> Arc<KafkaBinder> {
        let mut settings = test_settings();
        settings.partitions = partitions;
        adjust(&mut settings);
        Arc::new(KafkaBinder::new(name, settings))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a08_records_with_an_old_create_time_sent_right_after_binding_are_delivered() {
        init_logging();
        // The timestamp filter is Tansu's opt-in compatibility setting; on
        // Apache Kafka the high watermark read at subscription decides.
        let binder = binder_with("a08", 2, |s| s.anonymous_timestamp_filter = false);
        let topic = unique_name("a08");
        let mut anonymous = binder
            .consumer(&ConsumerSpec::new("in", &topic))
            .await
            .expect("bind anonymous");
        // Right after binding, from a producer whose clock is a day behind
        // (or that replays event times): CreateTime far in the past.
        let producer = raw_producer();
        let a_day_ago = now_millis() - 86_400_000;
        for (i, partition) in [(0u64, 0), (1, 1), (2, 0)] {
            let payload = i.to_string();
            produce(
                &producer,
                FutureRecord::to(&topic)
                    .partition(partition)
                    .payload(payload.as_bytes())
                    .timestamp(a_day_ago + i as i64),
            )
            .await;
        }
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let delivery = recv(anonymous.as_mut(), "records with old timestamps").await;
            seen.insert(number_of(&delivery));
            delivery.ack().await.expect("ack");
        }
        assert_eq!(seen, BTreeSet::from([0, 1, 2]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn b07_anonymous_subscription_picks_up_partitions_added_later() {
        init_logging();
        let binder = binder_with("b07", 1, |s| {
            s.anonymous_timestamp_filter = false;
            // How often partitions are looked for, as for group members.
            s.consumer_properties
                .set("topic.metadata.refresh.interval.ms", "1000");
        });
        let topic = unique_name("b07");
        let mut anonymous = binder
            .consumer(&ConsumerSpec::new("in", &topic))
            .await
            .expect("bind anonymous");
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin client");
        let results = admin
            .create_partitions(&[NewPartitions::new(&topic, 3)], &AdminOptions::new())
            .await
            .expect("create partitions");
        for result in results {
            result.expect("partitions added");
        }
        // The producer needs the new partitions in its metadata too.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .expect("raw producer");
        let started = Instant::now();
        for (i, partition) in [(1u64, 1), (2, 2), (0, 0)] {
            let payload = i.to_string();
            loop {
                let sent = producer
                    .send(
                        FutureRecord::<str, [u8]>::to(&topic)
                            .partition(partition)
                            .payload(payload.as_bytes()),
                        Duration::from_secs(5),
                    )
                    .await;
                match sent {
                    Ok(_) => break,
                    Err((e, _)) => {
                        assert!(
                            started.elapsed() < Duration::from_secs(30),
                            "send to partition {partition}: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let delivery = recv(anonymous.as_mut(), "records of every partition").await;
            seen.insert(number_of(&delivery));
            delivery.ack().await.expect("ack");
        }
        assert_eq!(seen, BTreeSet::from([0, 1, 2]), "the added partitions too");
    }

    /// Consumer properties of a group whose members are thrown out after
    /// 10 s without polling.
    fn impatient(settings: &mut KafkaSettings) {
        settings
            .consumer_properties
            .set("max.poll.interval.ms", "10000");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn b06_a_delivery_held_past_max_poll_interval_keeps_the_member_in_its_group() {
        init_logging();
        let binder = binder_with("b06-hold", 1, impatient);
        let topic = unique_name("b06-hold");
        let group = unique_name("b06-hold-group");
        let producer = binder
            .producer(&ProducerSpec::new("out", &topic))
            .await
            .expect("bind producer");
        let spec = ConsumerSpec::new("in", &topic).group(&group).prefetch(1);
        let mut member = binder.consumer(&spec).await.expect("bind");
        send_all(producer.as_ref(), [numbered(0)]).await;
        let held = recv(member.as_mut(), "the record to hold").await;
        // A slow function, or a long back-off: longer than max.poll.interval.ms.
        tokio::time::sleep(Duration::from_secs(13)).await;
        held.ack()
            .await
            .expect("still the partition's owner: the ack counts");
        send_all(producer.as_ref(), [numbered(1)]).await;
        let next = recv(member.as_mut(), "the next record, same member").await;
        assert_eq!(number_of(&next), 1);
        next.ack().await.expect("ack");
        drop(member);

        // Both acks were committed: a new member starts after them.
        send_all(producer.as_ref(), [numbered(2)]).await;
        let mut after = binder.consumer(&spec).await.expect("bind again");
        let first = recv(after.as_mut(), "after the restart").await;
        assert_eq!(number_of(&first), 2, "no duplicate of the held record");
        first.ack().await.expect("ack");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn b06_a_member_joins_promptly_while_another_holds_every_permit() {
        init_logging();
        let binder = binder_with("b06-join", 2, impatient);
        let topic = unique_name("b06-join");
        let group = unique_name("b06-join-group");
        let producer = binder
            .producer(&ProducerSpec::new("out", &topic))
            .await
            .expect("bind producer");
        let spec = ConsumerSpec::new("in", &topic).group(&group).prefetch(1);
        let mut slow = binder.consumer(&spec).await.expect("bind the slow member");
        send_all(producer.as_ref(), (0..8).map(numbered)).await;
        let held = recv(slow.as_mut(), "a record to hold").await;
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Without polling, the slow member would answer the rebalance only
        // when thrown out, after max.poll.interval.ms (10 s).
        let started = Instant::now();
        let mut joining = binder
            .consumer(&spec)
            .await
            .expect("bind the second member");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(7), "the join took {waited:?}");
        let delivery = recv(joining.as_mut(), "a record for the new member").await;
        delivery.ack().await.expect("ack");
        drop(held);
    }

    /// Found on a three-node cluster (tests/cluster_kafka.rs): a member
    /// paused for want of permits lost its partitions (a rebalance, or a
    /// session lost with a killed coordinator) and freed its permits before
    /// it got them back; librdkafka keeps the pause of a partition across
    /// revocation and assignment, so the partition came back paused and
    /// never delivered again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn b06_partitions_paused_before_a_rebalance_deliver_again_after_it() {
        init_logging();
        const COUNT: u64 = 32;
        let binder = binder_with("b06-repause", 2, impatient);
        let topic = unique_name("b06-repause");
        let group = unique_name("b06-repause-group");
        let producer = binder
            .producer(&ProducerSpec::new("out", &topic))
            .await
            .expect("bind producer");
        let spec = ConsumerSpec::new("in", &topic).group(&group).prefetch(1);
        let mut slow = binder.consumer(&spec).await.expect("bind the slow member");
        // Keys k0..k31: records on both partitions.
        send_all(producer.as_ref(), (0..COUNT).map(numbered)).await;
        let held = recv(slow.as_mut(), "a record to hold").await;
        // Every permit held past pause_after (1 s here): both partitions paused.
        tokio::time::sleep(Duration::from_secs(2)).await;

        // A second member: both partitions revoked from the slow one, one
        // given back to it (paused again) and one to the newcomer.
        let mut joining = binder
            .consumer(&spec)
            .await
            .expect("bind the second member");
        let taken = recv(joining.as_mut(), "a record for the new member").await;
        // The permit frees now: the slow member resumes what it has.
        let _ = held.ack().await;
        drop(taken);
        drop(joining);

        // The newcomer left: the slow member gets both partitions again and
        // must deliver every record, none of them having been committed
        // except perhaps the held one.
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(40);
        while seen.len() < COUNT as usize - 1 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(delivery)) = tokio::time::timeout(remaining, slow.recv()).await else {
                panic!(
                    "{} of {COUNT} records delivered after the rebalance: a partition stayed paused",
                    seen.len()
                );
            };
            seen.insert(number_of(&delivery));
            delivery.ack().await.expect("ack");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a25_binary_header_values_survive_consuming_and_dead_lettering() {
        init_logging();
        let binder = binder("a25", 1);
        let destination = unique_name("a25");
        let group = unique_name("a25-group");
        let config = format!(
            r#"
            [bindery]
            default-binder = "kafka"
            [bindings.book-in-0]
            destination = "{destination}"
            group = "{group}"
            content-type = "text/plain"
            [bindings.book-in-0.consumer]
            max-attempts = 1
            "#
        );
        let running = start_app(
            App::builder().function("book", always_fails),
            binder.clone(),
            &config,
        )
        .await;
        within(Duration::from_secs(60), "app bound", running.ready()).await;
        // A foreign producer's binary header (a trace id, Spring's
        // `kafka_*` ones): not UTF-8.
        let binary: &[u8] = &[0x00, 0xff, 0xfe, b'x', 0xc3, 0x28, 0x80];
        produce(
            &raw_producer(),
            FutureRecord::to(&destination)
                .payload(&b"entry"[..])
                .headers(OwnedHeaders::new().insert(Header {
                    key: "trace-bin",
                    value: Some(binary),
                })),
        )
        .await;
        let topic = format!("error.{destination}.{group}");
        let spec = ConsumerSpec::new("inspect", &topic).group(unique_name("inspect"));
        let mut inspector = binder
            .consumer(&spec)
            .await
            .expect("bind to the dead-letter topic");
        let delivery = recv(inspector.as_mut(), "dead letter").await;
        let dead = delivery.message().clone();
        delivery.ack().await.expect("ack");
        running.shutdown().await.expect("clean shutdown");
        assert_eq!(
            dead.headers().get_bytes("trace-bin"),
            Some(binary),
            "the exact bytes: {:?}",
            dead.headers()
        );
        // And Spring's binary x-original-* headers, readable either way.
        let original = OriginalRecord::from_headers(dead.headers()).expect("x-original-*");
        assert_eq!(
            (original.topic.as_str(), original.partition, original.offset),
            (destination.as_str(), 0, 0)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a17_a_record_with_too_many_headers_is_delivered_truncated_and_marked() {
        init_logging();
        let binder = binder_with("a17", 1, |s| {
            s.anonymous_timestamp_filter = false;
            s.max_header_count = 100;
        });
        let topic = unique_name("a17");
        let mut anonymous = binder
            .consumer(&ConsumerSpec::new("in", &topic))
            .await
            .expect("bind anonymous");
        let names: Vec<String> = (0..5000).map(|i| format!("h{i}")).collect();
        let mut headers = OwnedHeaders::new_with_capacity(names.len());
        for name in &names {
            headers = headers.insert(Header {
                key: name,
                value: Some("v"),
            });
        }
        produce(
            &raw_producer(),
            FutureRecord::to(&topic).payload(&b"7"[..]).headers(headers),
        )
        .await;
        let delivery = recv(anonymous.as_mut(), "the record with 5000 headers").await;
        let headers = delivery.message().headers().clone();
        delivery.ack().await.expect("ack");
        assert_eq!(headers.len(), 101, "100 kept and the marker");
        assert_eq!(headers.get("h99"), Some("v"));
        assert!(!headers.contains("h100"));
        assert_eq!(headers.get(HEADERS_TRUNCATED), Some("4900"));
    }
}
