//! Behaviour of the Redis binder against a real server, beyond the
//! conformance suite: reconnection after killed connections and a server
//! restart, reclaiming what a SIGKILLed or careless consumer left,
//! trimming, `wait-replicas`, the entry layout seen by other clients,
//! redrive to one group, validation and secrets.
//!
//! Tests that kill every connection or restart the server run on a
//! redis-server of their own ([`common::PrivateServer`]); the rest use
//! `BINDERY_TEST_REDIS_URL` (default redis://127.0.0.1:6379). Start it
//! with `scripts/brokers/ensure-redis.sh`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bindery_core::binder::{
    Binder, BinderExt, BindingOptions, Consumer, ConsumerSpec, Delivery, Producer, ProducerSpec,
};
use bindery_core::config::Problem;
use bindery_core::error::{BinderError, BinderErrorKind};
use bindery_core::message::Message;
use bindery_core::registry::{BinderFactory, BinderProvider, binder_factories};
use bindery_redis::{RedisBinder, RedisBindingOptions, RedisProvider, RedisSettings};
use bindery_testkit::unique_name;
use bytes::Bytes;
use common::{PrivateServer, connected_binder, redis_cli, url};

const TIMEOUT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(1500);

fn numbered(i: usize) -> Message {
    Message::new(Bytes::from(i.to_string())).with_content_type("text/plain")
}

fn number_of(delivery: &Delivery) -> usize {
    std::str::from_utf8(delivery.message().payload())
        .unwrap()
        .parse()
        .unwrap()
}

async fn recv(consumer: &mut dyn Consumer, what: &str) -> Delivery {
    match tokio::time::timeout(TIMEOUT, consumer.recv()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("{what}: the consumer ended"),
        Err(_) => panic!("{what}: nothing within {TIMEOUT:?}"),
    }
}

async fn recv_none(consumer: &mut dyn Consumer, quiet: Duration) -> Option<Delivery> {
    tokio::time::timeout(quiet, consumer.recv())
        .await
        .ok()
        .flatten()
}

/// Sends and waits for the confirmation, retrying transient failures as
/// the runtime does (a killed connection fails the publish in flight).
async fn send_confirmed(producer: &dyn Producer, message: Message) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let result = match producer.send(message.clone()).await {
            Ok(confirmation) => confirmation.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Acknowledges a delivery held across a lost connection: the binder
/// retries the ack on the re-established connection itself.
async fn ack_retrying(delivery: Delivery) {
    delivery.ack().await.expect("ack after reconnecting");
}

fn pending_count(url: &str, stream: &str, group: &str) -> usize {
    let summary = redis_cli(url, &["XPENDING", stream, group]);
    summary
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("XPENDING summary: {summary}"))
}

fn group_spec(destination: &str, group: &str) -> ConsumerSpec {
    ConsumerSpec::new("behaviour-in", destination).group(group)
}

async fn producer_with_group(
    binder: &Arc<RedisBinder>,
    destination: &str,
    group: &str,
) -> Arc<dyn Producer> {
    binder
        .producer(&ProducerSpec::new("behaviour-out", destination).required_groups([group]))
        .await
        .expect("producer")
}

async fn wait_up(binder: &RedisBinder) {
    let deadline = Instant::now() + TIMEOUT;
    while !binder.health().is_up() {
        assert!(
            Instant::now() < deadline,
            "binder still down: {:?}",
            binder.health()
        );
        let _ = binder.connect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_reconnect_and_lose_nothing_acknowledged() {
    bindery_testkit::init_logging();
    let server = PrivateServer::start();
    let binder = connected_binder(&server.url()).await;
    let (destination, group) = (unique_name("kill"), "workers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    let mut consumer = binder
        .consumer(&group_spec(&destination, &group))
        .await
        .unwrap();
    for i in 1..=3 {
        send_confirmed(producer.as_ref(), numbered(i)).await;
    }
    let one = recv(consumer.as_mut(), "message 1").await;
    assert_eq!(number_of(&one), 1);
    one.ack().await.unwrap();
    let two = recv(consumer.as_mut(), "message 2").await;
    assert_eq!(number_of(&two), 2);

    // Every client connection goes, as `redis-cli CLIENT KILL TYPE normal`.
    let killed = redis_cli(&server.url(), &["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        killed.parse::<u32>().unwrap() >= 2,
        "killed {killed} connections"
    );

    // A delivery held across the kill is still acknowledged afterwards.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_up(&binder).await;
    ack_retrying(two).await;
    for i in 4..=5 {
        send_confirmed(producer.as_ref(), numbered(i)).await;
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 3 {
        let delivery = recv(consumer.as_mut(), "after reconnecting").await;
        let n = number_of(&delivery);
        assert!(n >= 3, "acknowledged message {n} came back");
        seen.insert(n);
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen, BTreeSet::from([3, 4, 5]));
    assert!(
        recv_none(consumer.as_mut(), QUIET).await.is_none(),
        "a duplicate"
    );
    assert_eq!(pending_count(&server.url(), &destination, &group), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_pending_entries_and_consumers_resume() {
    bindery_testkit::init_logging();
    let mut server = PrivateServer::start();
    let binder = connected_binder(&server.url()).await;
    let (destination, group) = (unique_name("restart"), "workers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    let spec = group_spec(&destination, &group).prefetch(1);
    let mut consumer = binder.consumer(&spec).await.unwrap();
    send_confirmed(producer.as_ref(), numbered(1)).await;
    send_confirmed(producer.as_ref(), numbered(2)).await;
    let one = recv(consumer.as_mut(), "message 1").await;
    assert_eq!(number_of(&one), 1);

    server.restart();
    wait_up(&binder).await;
    // The entry read before the restart is still pending and acknowledged now.
    assert_eq!(pending_count(&server.url(), &destination, &group), 1);
    ack_retrying(one).await;
    send_confirmed(producer.as_ref(), numbered(3)).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let delivery = recv(consumer.as_mut(), "after the restart").await;
        seen.push(number_of(&delivery));
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        seen,
        [2, 3],
        "in order, nothing lost, nothing acknowledged twice"
    );
    assert!(recv_none(consumer.as_mut(), QUIET).await.is_none());
}

/// The consumer process `hold_one` (src/bin/hold_one.rs).
fn hold_one_program() -> &'static str {
    env!("CARGO_BIN_EXE_hold_one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_of_a_sigkilled_consumer_process_is_claimed_after_min_idle() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let (destination, group) = (unique_name("sigkill"), "workers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    let mut holder = Command::new(hold_one_program())
        .args([&destination, &group])
        .env("BINDERY_TEST_REDIS_URL", url())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the consumer process");
    send_confirmed(producer.as_ref(), numbered(7)).await;
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("holding "), "{line}");

    let min_idle = Duration::from_secs(3);
    let options = BindingOptions::new(RedisBindingOptions::default().min_idle(min_idle));
    let mut survivor = binder
        .consumer(&group_spec(&destination, &group).options(options))
        .await
        .unwrap();
    // While the holder lives it refreshes its entry: nobody takes it.
    assert!(
        recv_none(survivor.as_mut(), min_idle + Duration::from_secs(1))
            .await
            .is_none(),
        "a live consumer's entry was claimed"
    );
    holder.kill().expect("SIGKILL");
    let killed_at = Instant::now();
    holder.wait().unwrap();
    let delivery = recv(survivor.as_mut(), "the dead consumer's entry").await;
    assert_eq!(number_of(&delivery), 7);
    let (_, acknowledger) = delivery.into_parts();
    assert!(
        acknowledger.redelivered(),
        "a claimed entry is marked redelivered"
    );
    assert!(
        killed_at.elapsed() >= min_idle - Duration::from_millis(1100),
        "claimed before min-idle: {:?}",
        killed_at.elapsed()
    );
    acknowledger.ack().await.unwrap();
    assert_eq!(pending_count(&url(), &destination, &group), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dropped_without_ack_comes_back_after_min_idle() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let (destination, group) = (unique_name("dropped"), "workers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    let min_idle = Duration::from_secs(1);
    let options = BindingOptions::new(RedisBindingOptions::default().min_idle(min_idle));
    let mut consumer = binder
        .consumer(&group_spec(&destination, &group).options(options))
        .await
        .unwrap();
    send_confirmed(producer.as_ref(), numbered(1)).await;
    let first = recv(consumer.as_mut(), "first delivery").await;
    let dropped_at = Instant::now();
    drop(first);
    let again = recv(consumer.as_mut(), "claimed again").await;
    assert!(
        dropped_at.elapsed() >= min_idle,
        "came back before min-idle"
    );
    assert_eq!(number_of(&again), 1);
    again.ack().await.unwrap();
    assert!(recv_none(consumer.as_mut(), QUIET).await.is_none());
}

/// A binder whose reads block long enough that a consumer is surely
/// inside one when the test lets it go.
async fn binder_with_long_reads() -> Arc<RedisBinder> {
    let settings = common::settings(&url()).block(Duration::from_secs(3));
    let binder = Arc::new(RedisBinder::new("redis", settings).expect("binder"));
    binder.connect().await.expect("Redis answers");
    binder
}

/// How a consumer in the middle of a blocking read is let go.
enum LetGo {
    Drop,
    Cancel,
}

/// An entry sent while a consumer that is being let go still blocks in a
/// read is served to that read; it must reach the group's next consumer
/// at once, not after `min-idle` (30 s here).
async fn entry_served_to_a_read_in_flight_reaches_the_next_consumer(let_go: LetGo) {
    bindery_testkit::init_logging();
    let binder = binder_with_long_reads().await;
    let (destination, group) = (unique_name("in-flight"), "workers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    let mut leaving = binder
        .consumer(&group_spec(&destination, &group))
        .await
        .unwrap();
    // Long enough for its first blocking XREADGROUP to be on the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Sent while the consumer is let go: the server may serve it to the
    // read in flight.
    let sending = {
        let producer = producer.clone();
        tokio::spawn(async move { send_confirmed(producer.as_ref(), numbered(1)).await })
    };
    match let_go {
        LetGo::Drop => drop(leaving),
        LetGo::Cancel => leaving.cancel().await.expect("cancel"),
    }
    sending.await.expect("send");
    let mut next = binder
        .consumer(&group_spec(&destination, &group))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), next.recv())
        .await
        .expect("the entry reaches the next consumer well before min-idle")
        .expect("a delivery");
    assert_eq!(number_of(&delivery), 1);
    delivery.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_served_to_a_dropped_consumers_last_read_is_handed_back() {
    entry_served_to_a_read_in_flight_reaches_the_next_consumer(LetGo::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_served_to_a_cancelled_consumers_last_read_is_handed_back() {
    entry_served_to_a_read_in_flight_reaches_the_next_consumer(LetGo::Cancel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_len_trims_the_stream() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let destination = unique_name("trim");
    let options = BindingOptions::new(RedisBindingOptions::default().max_len(100));
    let producer = binder
        .producer(&ProducerSpec::new("trim-out", &destination).options(options))
        .await
        .unwrap();
    let mut confirmations = Vec::new();
    for i in 0..2_000 {
        confirmations.push(producer.send(numbered(i)).await.unwrap());
    }
    for confirmation in confirmations {
        confirmation.await.unwrap();
    }
    let length: usize = redis_cli(&url(), &["XLEN", &destination]).parse().unwrap();
    // `MAXLEN ~` trims whole macro nodes (100 entries by default).
    assert!((100..=300).contains(&length), "stream length {length}");
    let untrimmed = unique_name("untrimmed");
    let producer = binder
        .producer(&ProducerSpec::new("trim-out", &untrimmed))
        .await
        .unwrap();
    for i in 0..300 {
        send_confirmed(producer.as_ref(), numbered(i)).await;
    }
    assert_eq!(redis_cli(&url(), &["XLEN", &untrimmed]), "300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_fails_a_publish_no_replica_confirmed() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let destination = unique_name("wait");
    let timeout = Duration::from_millis(300);
    let options = BindingOptions::new(RedisBindingOptions::default().wait_replicas(1, timeout));
    let producer = binder
        .producer(&ProducerSpec::new("wait-out", &destination).options(options))
        .await
        .unwrap();
    let started = Instant::now();
    let error: BinderError = producer
        .send(numbered(1))
        .await
        .unwrap()
        .await
        .expect_err("a server without replicas cannot confirm");
    assert!(started.elapsed() >= timeout, "WAIT returned early");
    assert_eq!(error.kind(), BinderErrorKind::Timeout, "{error}");
    assert!(error.is_transient(), "a lagging replica is transient");
    assert!(error.to_string().contains("0 of 1 replicas"), "{error}");
    // The entry is on the primary; only its replication is unconfirmed.
    assert_eq!(redis_cli(&url(), &["XLEN", &destination]), "1");

    // wait-replicas 0 (the default) completes when XADD returns.
    let plain = binder
        .producer(&ProducerSpec::new("wait-out", &destination))
        .await
        .unwrap();
    plain.send(numbered(2)).await.unwrap().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_server_refuses_fails_for_good() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let destination = unique_name("wrongtype");
    // The destination's key holds a string, not a stream.
    redis_cli(&url(), &["SET", &destination, "not a stream"]);
    let producer = binder
        .producer(&ProducerSpec::new("wrongtype-out", &destination))
        .await
        .unwrap();
    let error = producer
        .send(numbered(1))
        .await
        .unwrap()
        .await
        .expect_err("XADD to a string key fails");
    assert_eq!(error.kind(), BinderErrorKind::Rejected, "{error}");
    assert!(!error.is_transient(), "the same publish would fail again");
    assert!(
        binder.health().is_up(),
        "a refused command is not a lost connection"
    );
    // The producer keeps working for other sends.
    redis_cli(&url(), &["DEL", &destination]);
    producer.send(numbered(2)).await.unwrap().await.unwrap();
    assert_eq!(redis_cli(&url(), &["XLEN", &destination]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_completes_a_publish_once_a_replica_has_it() {
    bindery_testkit::init_logging();
    let primary = PrivateServer::start();
    let replica = PrivateServer::start_replica_of(&primary);
    let deadline = Instant::now() + TIMEOUT;
    while !redis_cli(&primary.url(), &["INFO", "replication"]).contains("state=online") {
        assert!(Instant::now() < deadline, "the replica did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let binder = connected_binder(&primary.url()).await;
    let destination = unique_name("replicated");
    let options = BindingOptions::new(
        RedisBindingOptions::default().wait_replicas(1, Duration::from_secs(5)),
    );
    let producer = binder
        .producer(&ProducerSpec::new("replicated-out", &destination).options(options))
        .await
        .unwrap();
    let mut confirmations = Vec::new();
    for i in 0..50 {
        confirmations.push(producer.send(numbered(i)).await.unwrap());
    }
    for confirmation in confirmations {
        confirmation.await.expect("the replica acknowledged");
    }
    // Confirmed means replicated: the replica has every entry already.
    assert_eq!(redis_cli(&replica.url(), &["XLEN", &destination]), "50");
}

fn problems_of_options(section: serde_json::Value) -> Vec<Problem> {
    let factory = BinderFactory::of::<RedisProvider>();
    let mut problems = Vec::new();
    (factory.check_binding_options)(&section, "bindings.pay-in-0.redis", &mut problems);
    problems
}

#[test]
fn binding_options_are_validated() {
    let problems =
        problems_of_options(serde_json::json!({"wait-replicas": 1, "wait-timeout": "0s"}));
    assert_eq!(problems.len(), 1, "{problems:?}");
    let text = problems[0].to_string();
    assert!(
        text.contains("bindings.pay-in-0.redis.wait-timeout"),
        "{text}"
    );
    assert!(text.contains("wait-replicas"), "{text}");

    assert!(
        problems_of_options(serde_json::json!({"wait-replicas": 2, "wait-timeout": "50ms"}))
            .is_empty()
    );
    assert!(
        problems_of_options(serde_json::json!({"wait-timeout": "0s"})).is_empty(),
        "no WAIT, no problem"
    );

    let problems = problems_of_options(serde_json::json!({"min-idle": "0s", "max-len": 0}));
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{text:?}");
    assert!(text.iter().any(|t| t.contains("min-idle")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("max-len")), "{text:?}");

    let problems = problems_of_options(serde_json::json!({"max-length": 10}));
    assert_eq!(problems.len(), 1, "unknown keys are refused: {problems:?}");
    assert!(problems[0].to_string().contains("max-length"));
}

#[test]
fn settings_are_validated_without_showing_the_password() {
    let factory = BinderFactory::of::<RedisProvider>();
    let mut problems = Vec::new();
    (factory.check_settings)(
        &serde_json::json!({"url": "http://user:s3cret@host", "block": "0s"}),
        "binders.cache",
        &mut problems,
    );
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("binders.cache.url")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("binders.cache.block")),
        "{text:?}"
    );
    assert!(text.iter().all(|t| !t.contains("s3cret")), "{text:?}");
}

#[tokio::test]
async fn no_secret_in_debug_output_or_errors() {
    let settings = RedisSettings::new("redis://app:s3cret@127.0.0.1:1/0")
        .response_timeout(Duration::from_millis(500));
    assert!(!format!("{settings:?}").contains("s3cret"));
    let binder = RedisBinder::new("cache", settings).unwrap();
    assert!(!format!("{binder:?}").contains("s3cret"));
    let error = binder
        .connect()
        .await
        .expect_err("nothing listens on port 1");
    let error = BinderError::from(error);
    assert_eq!(error.kind(), BinderErrorKind::Connection);
    assert!(error.is_transient());
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(!chain.contains("s3cret"), "{chain}");
    assert!(chain.contains("127.0.0.1:1"), "{chain}");
    match binder.health() {
        bindery_core::binder::Health::Down(reason) => assert!(!reason.contains("s3cret")),
        other => panic!("health after a failed connect: {other:?}"),
    }
    // Binding while the server is away fails as transient (the runtime
    // binds again with back-off), and says nothing secret either.
    let Err(error) = binder.consumer(&group_spec("away", "workers")).await else {
        panic!("bound a consumer with no server");
    };
    assert!(error.is_transient(), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    let Err(error) = binder
        .producer(&ProducerSpec::new("away-out", "away"))
        .await
    else {
        panic!("bound a producer with no server");
    };
    assert_eq!(error.kind(), BinderErrorKind::Connection, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_readable_and_writable_by_other_clients() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let (destination, group) = (unique_name("layout"), "readers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    let message = Message::new(Bytes::from_static(b"{\"id\":1}"))
        .with_content_type("application/json")
        .with_header("trace-id", "t-1")
        .with_key("customer-1")
        .with_routing_key("orders.created");
    send_confirmed(producer.as_ref(), message).await;
    let fields = redis_cli(&url(), &["XRANGE", &destination, "-", "+"]);
    let fields: Vec<&str> = fields.lines().map(str::trim).collect();
    for (field, value) in [
        ("payload", "{\"id\":1}"),
        ("content-type", "application/json"),
        ("h:trace-id", "t-1"),
        ("key", "customer-1"),
        ("routing-key", "orders.created"),
    ] {
        let at = fields
            .iter()
            .position(|f| *f == field)
            .unwrap_or_else(|| panic!("no field {field}: {fields:?}"));
        assert_eq!(fields[at + 1], value, "field {field}");
    }

    // An entry another client wrote is a message like any other.
    redis_cli(
        &url(),
        &[
            "XADD",
            &destination,
            "*",
            "payload",
            "hello",
            "h:origin",
            "redis-cli",
            "content-type",
            "text/plain",
            "ignored",
            "x",
        ],
    );
    let mut consumer = binder
        .consumer(&group_spec(&destination, &group))
        .await
        .unwrap();
    let ours = recv(consumer.as_mut(), "our entry").await;
    assert_eq!(ours.message().headers().get("trace-id"), Some("t-1"));
    ours.ack().await.unwrap();
    let theirs = recv(consumer.as_mut(), "their entry").await;
    assert_eq!(theirs.message().payload(), &Bytes::from_static(b"hello"));
    assert_eq!(theirs.message().headers().get("origin"), Some("redis-cli"));
    assert_eq!(theirs.message().content_type(), Some("text/plain"));
    assert_eq!(theirs.message().headers().get("ignored"), None);
    theirs.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_reaches_only_its_group() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let destination = unique_name("redrive");
    let producer = binder
        .producer(&ProducerSpec::new("redrive-out", &destination).required_groups(["a", "b"]))
        .await
        .unwrap();
    let spec_a = group_spec(&destination, "a");
    let mut a = binder.consumer(&spec_a).await.unwrap();
    let mut b = binder
        .consumer(&group_spec(&destination, "b"))
        .await
        .unwrap();
    let mut anonymous = binder
        .consumer(&ConsumerSpec::new("anon-in", &destination))
        .await
        .unwrap();
    let redrive = binder.redrive_producer(&spec_a).await.unwrap();
    send_confirmed(redrive.as_ref(), numbered(1)).await;
    send_confirmed(producer.as_ref(), numbered(2)).await;
    let one = recv(a.as_mut(), "redriven to a").await;
    assert_eq!(number_of(&one), 1);
    one.ack().await.unwrap();
    let two = recv(a.as_mut(), "published to all").await;
    assert_eq!(number_of(&two), 2);
    two.ack().await.unwrap();
    let only = recv(b.as_mut(), "group b").await;
    assert_eq!(number_of(&only), 2, "group b never sees a's redrive");
    only.ack().await.unwrap();
    let only = recv(anonymous.as_mut(), "anonymous").await;
    assert_eq!(number_of(&only), 2, "nor does an anonymous subscriber");
    assert!(recv_none(b.as_mut(), QUIET).await.is_none());
    // b acknowledged the redriven entry unseen.
    assert_eq!(pending_count(&url(), &destination, "b"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_consumers_holding_nothing_are_removed_from_the_group() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let (destination, group) = (unique_name("ghosts"), "workers".to_owned());
    let producer = producer_with_group(&binder, &destination, &group).await;
    send_confirmed(producer.as_ref(), numbered(1)).await;
    // A consumer of another client that read one entry, acknowledged it
    // and went away.
    let read = redis_cli(
        &url(),
        &[
            "XREADGROUP",
            "GROUP",
            &group,
            "ghost",
            "COUNT",
            "1",
            "STREAMS",
            &destination,
            ">",
        ],
    );
    let id = read.lines().nth(1).expect("an entry ID").trim().to_owned();
    redis_cli(&url(), &["XACK", &destination, &group, &id]);
    let consumers = || redis_cli(&url(), &["XINFO", "CONSUMERS", &destination, &group]);
    assert!(consumers().contains("ghost"), "{}", consumers());
    // min-idle 500 ms, claim-interval 200 ms: dead after 5 s without reading.
    let options =
        BindingOptions::new(RedisBindingOptions::default().min_idle(Duration::from_millis(500)));
    let _live = binder
        .consumer(&group_spec(&destination, &group).options(options))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumers().contains("ghost") {
        assert!(
            Instant::now() < deadline,
            "the dead consumer stayed: {}",
            consumers()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        consumers().contains("bindery-"),
        "the live consumer stays: {}",
        consumers()
    );
}

async fn shout(text: String) -> String {
    text.to_uppercase()
}

fn app_config(input: &str, output: &str, input_options: &str) -> String {
    format!(
        r#"
        [bindery]
        definition = "shout"
        default-binder = "cache"
        [binders.cache]
        type = "redis"
        url = "${{TEST_REDIS_URL}}"
        claim-interval = "200ms"
        [bindings.shout-in-0]
        destination = "{input}"
        group = "shouters"
        content-type = "text/plain"
        [bindings.shout-in-0.redis]
        {input_options}
        [bindings.shout-out-0]
        destination = "{output}"
        content-type = "text/plain"
        [bindings.shout-out-0.redis]
        max-len = 1000
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_configured_with_type_redis_runs_a_processor() {
    bindery_testkit::init_logging();
    let binder = connected_binder(&url()).await;
    let (input, output) = (unique_name("app-in"), unique_name("app-out"));
    let _keeps_output = producer_with_group(&binder, &output, "check").await;
    let app = bindery::App::builder()
        .function("shout", shout)
        .config_toml(&app_config(&input, &output, r#"min-idle = "5s""#))
        .env([("TEST_REDIS_URL", url())])
        .build()
        .expect("a valid configuration");
    let running = app.start().await.expect("start");
    running.ready().await;
    let producer = binder
        .producer(&ProducerSpec::new("app-test-out", &input))
        .await
        .unwrap();
    send_confirmed(
        producer.as_ref(),
        Message::new(Bytes::from_static(b"hello")).with_content_type("text/plain"),
    )
    .await;
    let mut check = binder
        .consumer(&group_spec(&output, "check"))
        .await
        .unwrap();
    let delivery = recv(check.as_mut(), "the processor's output").await;
    assert_eq!(delivery.message().payload(), &Bytes::from_static(b"HELLO"));
    delivery.ack().await.unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(
        pending_count(&url(), &input, "shouters"),
        0,
        "the input was acknowledged"
    );
}

#[test]
fn a_misspelt_redis_option_stops_the_app_before_it_starts() {
    let error = bindery::App::builder()
        .function("shout", shout)
        .config_toml(&app_config("in", "out", r#"min-idel = "5s""#))
        .env([("TEST_REDIS_URL", "redis://:s3cret@127.0.0.1:6379")])
        .build()
        .expect_err("an unknown key is refused");
    let text = error.to_string();
    assert!(text.contains("min-idel"), "{text}");
    assert!(text.contains("bindings.shout-in-0.redis"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn registered_as_type_redis_with_its_capabilities() {
    bindery_redis::link();
    let factory = binder_factories()
        .iter()
        .find(|f| f.binder_type == "redis")
        .expect("type redis is registered");
    assert_eq!(factory.capabilities, RedisProvider::CAPABILITIES);
    let caps = RedisProvider::CAPABILITIES;
    assert!(caps.requeue_single && caps.fair_dispatch && caps.group_redrive);
    assert!(!caps.partitions, "a stream has no partitions");
}
