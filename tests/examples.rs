//! Every example on every binder, run as a real process with the command
//! the README gives, checking what it printed: counts, dead letters, final
//! state, order per key. So no example can rot.
//!
//! Each run gets its own destinations through `EXAMPLE_SUFFIX`, so runs can
//! go in parallel and again on brokers that keep old data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bindery::binder::Capabilities;
use bindery::registry::BinderProvider;
use bindery_tests::process::{example_path, repository_root};

/// The binders every example runs on, by configuration file name.
#[derive(Clone, Copy, Debug)]
enum Binder {
    Memory,
    #[cfg(feature = "rabbitmq")]
    RabbitMq,
    #[cfg(feature = "kafka")]
    Kafka,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "mqtt")]
    Mqtt,
}

impl Binder {
    /// What the binder type declares it can do.
    fn capabilities(self) -> Capabilities {
        match self {
            Binder::Memory => bindery::memory::MemoryProvider::CAPABILITIES,
            #[cfg(feature = "rabbitmq")]
            Binder::RabbitMq => bindery::rabbitmq::RabbitProvider::CAPABILITIES,
            #[cfg(feature = "kafka")]
            Binder::Kafka => bindery::kafka::KafkaProvider::CAPABILITIES,
            #[cfg(feature = "redis")]
            Binder::Redis => bindery::redis::RedisProvider::CAPABILITIES,
            #[cfg(feature = "mqtt")]
            Binder::Mqtt => bindery::mqtt::MqttProvider::CAPABILITIES,
        }
    }

    /// Whether a free consumer takes the next message: not on a
    /// partitioned log, nor where the broker deals messages out by turns.
    fn fair_dispatch(self) -> bool {
        self.capabilities().fair_dispatch
    }

    fn config(self) -> &'static str {
        match self {
            Binder::Memory => "memory.toml",
            #[cfg(feature = "rabbitmq")]
            Binder::RabbitMq => "rabbitmq.toml",
            #[cfg(feature = "kafka")]
            Binder::Kafka => "kafka.toml",
            #[cfg(feature = "redis")]
            Binder::Redis => "redis.toml",
            #[cfg(feature = "mqtt")]
            Binder::Mqtt => "mqtt.toml",
        }
    }
}

fn suffix() -> String {
    format!("-{}", bindery_testkit::unique_name("ex").replace('.', "-"))
}

fn command(example: &str, binder: Binder, suffix: &str) -> Command {
    let mut command = Command::new(example_path(example));
    command
        .args([
            "--config",
            &format!("examples/{example}/{}", binder.config()),
        ])
        .current_dir(repository_root())
        .env_remove("BINDERY_CONFIG")
        .env("EXAMPLE_SUFFIX", suffix)
        .env("RUST_LOG", "warn");
    #[cfg(feature = "rabbitmq")]
    command.env("RABBITMQ_URI", bindery_tests::rabbitmq::uri());
    #[cfg(feature = "kafka")]
    command.env("KAFKA_BROKERS", bindery_tests::kafka::brokers());
    #[cfg(feature = "redis")]
    command.env("REDIS_URL", redis_url());
    #[cfg(feature = "mqtt")]
    command.env("MQTT_URL", mqtt_url());
    command
}

/// The Redis server under test (as the Redis binder's own tests take it).
#[cfg(feature = "redis")]
fn redis_url() -> String {
    std::env::var("BINDERY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The MQTT broker under test (as the MQTT binder's own tests take it).
#[cfg(feature = "mqtt")]
fn mqtt_url() -> String {
    std::env::var("BINDERY_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

/// Runs an example that exits by itself; returns its output.
fn run(example: &str, binder: Binder) -> Output {
    let mut child = command(example, binder, &suffix())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{example} on {binder:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        output.status.success(),
        "{example} on {binder:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A long-running example whose stdout lines arrive on a channel.
struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Service {
    fn start(example: &str, binder: Binder, suffix: &str) -> Self {
        let mut child = command(example, binder, suffix)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next `count` lines, waiting up to a minute.
    fn lines(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| {
                self.lines
                    .recv_timeout(Duration::from_secs(60))
                    .expect("a line within 60 s")
            })
            .collect()
    }

    /// Sends SIGTERM and expects a clean exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit after SIGTERM: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit within 40 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn check_quickstart(binder: Binder) {
    let out = stdout(&run("quickstart", binder));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("order ")).count(),
        5,
        "{out}"
    );
    assert!(out.contains("printed 5 orders"), "{out}");
}

fn check_work_queue(binder: Binder) {
    let out = stdout(&run("work-queue", binder));
    let count = |worker: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{worker} worker did ")))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for the {worker} worker in:\n{out}"))
    };
    let (slow, fast) = (count("slow"), count("fast"));
    assert_eq!(slow + fast, 40, "{out}");
    if binder.fair_dispatch() {
        assert!(
            fast > slow,
            "fair dispatch: the fast worker does most ({out})"
        );
    } else {
        // Kafka splits work by partition: each worker owns one of two.
        assert!(slow > 0 && fast > 0, "both workers did jobs ({out})");
    }
}

fn check_registration(binder: Binder) {
    let out = stdout(&run("registration", binder));
    assert!(out.contains("mail: 10 users, 0 duplicates"), "{out}");
    assert!(out.contains("audit: 10 users, 0 duplicates"), "{out}");
}

fn check_product_sync(binder: Binder) {
    let out = stdout(&run("product-sync", binder));
    assert!(
        out.contains("search index: 2:pear (ripe) v2, 4:fig (dried) v2"),
        "{out}"
    );
    assert!(out.contains("pages: 2 v2, 4 v2"), "{out}");
    assert!(
        out.contains("search index agrees with the changes: true"),
        "{out}"
    );
    assert!(out.contains("pages agree with the changes: true"), "{out}");
}

fn check_order_pipeline(binder: Binder) {
    let out = stdout(&run("order-pipeline", binder));
    assert!(
        out.contains("customers: 6, orders booked: 108, rejected: 12, out of order: 0"),
        "{out}"
    );
}

fn check_redrive(binder: Binder) {
    let out = stdout(&run("redrive", binder));
    assert!(
        out.contains("bug: 2 orders failed into the dead-letter destination"),
        "{out}"
    );
    assert!(
        out.contains("redrive: moved 2 dead letters back to billing"),
        "{out}"
    );
    assert!(out.contains("invoiced 5 of 5 orders"), "{out}");
}

/// The README's first command, `cargo run --example quickstart`, builds only
/// the workspace's default members. None of them may pull in a C or C++
/// library (librdkafka through rdkafka-sys, aws-lc through lapin's rustls):
/// the quickstart must build with a Rust toolchain and a C compiler alone.
#[test]
fn the_quickstart_needs_no_cpp_library() {
    for crate_name in ["rdkafka-sys", "aws-lc-sys", "lapin", "cmake"] {
        let output = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "--edges",
                "normal,build,dev",
                "-i",
                crate_name,
            ])
            .current_dir(repository_root())
            .output()
            .expect("cargo runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            !output.status.success()
                && String::from_utf8_lossy(&output.stderr).contains("did not match any packages"),
            "the default members depend on {crate_name}:\n{text}"
        );
    }
}

#[test]
fn quickstart_on_memory() {
    check_quickstart(Binder::Memory);
}

#[test]
fn uppercase_on_memory() {
    let service = Service::start("uppercase", Binder::Memory, &suffix());
    let mut lines = service.lines(3);
    lines.sort();
    assert_eq!(
        lines,
        [
            "dead letter: please fail now after 3 attempts: refusing to upper-case `please fail now`: it asks to fail",
            "upper: BINDERY SPEAKS UP",
            "upper: HELLO WORLD",
        ]
    );
    service.terminate();
}

#[test]
fn work_queue_on_memory() {
    check_work_queue(Binder::Memory);
}

#[test]
fn registration_on_memory() {
    check_registration(Binder::Memory);
}

#[test]
fn product_sync_on_memory() {
    check_product_sync(Binder::Memory);
}

#[test]
fn order_pipeline_on_memory() {
    check_order_pipeline(Binder::Memory);
}

#[test]
fn redrive_on_memory() {
    check_redrive(Binder::Memory);
}

/// The examples on RabbitMQ, and `uppercase` driven by a plain AMQP client.
#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use std::time::{Duration, Instant};

    use bindery::rabbitmq::lapin::options::{
        BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use bindery::rabbitmq::lapin::types::{AMQPValue, FieldTable};
    use bindery::rabbitmq::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
    use bindery_tests::rabbitmq::{START_HINT, encode, management_has, uri};

    use super::*;

    #[test]
    fn quickstart_on_rabbitmq() {
        check_quickstart(Binder::RabbitMq);
    }

    #[test]
    fn work_queue_on_rabbitmq() {
        check_work_queue(Binder::RabbitMq);
    }

    #[test]
    fn registration_on_rabbitmq() {
        check_registration(Binder::RabbitMq);
    }

    #[test]
    fn product_sync_on_rabbitmq() {
        check_product_sync(Binder::RabbitMq);
    }

    #[test]
    fn order_pipeline_on_rabbitmq() {
        check_order_pipeline(Binder::RabbitMq);
    }

    #[test]
    fn redrive_on_rabbitmq() {
        check_redrive(Binder::RabbitMq);
    }

    async fn channel() -> Channel {
        let connection = Connection::connect(&uri(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ does not answer: {e}; {START_HINT}"));
        connection.create_channel().await.expect("a channel")
    }

    /// The next message on `queue`, polling with basic.get for 30 s.
    async fn get(
        channel: &Channel,
        queue: &str,
    ) -> bindery::rabbitmq::lapin::message::BasicGetMessage {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "nothing arrived in queue `{queue}`"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes like any AMQP client would: no bindery headers.
    async fn publish(channel: &Channel, exchange: &str, text: &str) {
        channel
            .basic_publish(
                exchange.into(),
                "any.key".into(),
                BasicPublishOptions::default(),
                text.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    #[tokio::test]
    async fn uppercase_on_rabbitmq_serves_any_amqp_client() {
        let suffix = suffix();
        let (words, upper_words) = (format!("words{suffix}"), format!("upper-words{suffix}"));
        let service = Service::start("uppercase", Binder::RabbitMq, &suffix);
        let group_queue = format!("queues/%2f/{}", encode(&format!("{words}.upper")));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !management_has(&group_queue) {
            assert!(
                Instant::now() < deadline,
                "uppercase did not declare {words}.upper"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let channel = channel().await;
        let probe = format!("probe{suffix}");
        channel
            .queue_declare(
                probe.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("probe queue");
        channel
            .queue_bind(
                probe.as_str().into(),
                upper_words.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the probe to upper-words (declared by the running service)");

        publish(&channel, &words, "hello from any client").await;
        let upper = get(&channel, &probe).await;
        assert_eq!(upper.delivery.data, b"HELLO FROM ANY CLIENT");

        publish(&channel, &words, "please fail now").await;
        let dead = get(&channel, &format!("{words}.upper.dlq")).await;
        assert_eq!(dead.delivery.data, b"please fail now");
        let headers = dead
            .delivery
            .properties
            .headers()
            .clone()
            .expect("dead-letter headers");
        let reason = headers
            .inner()
            .get("x-exception-message")
            .expect("x-exception-message");
        let AMQPValue::LongString(reason) = reason else {
            panic!("x-exception-message is {reason:?}")
        };
        assert!(reason.to_string().contains("asks to fail"), "{reason}");
        service.terminate();
    }

    #[tokio::test]
    async fn the_redrive_command_moves_dead_letters_back_to_the_group() {
        let suffix = suffix();
        let words = format!("words{suffix}");
        let service = Service::start("uppercase", Binder::RabbitMq, &suffix);
        let group_queue = format!("queues/%2f/{}", encode(&format!("{words}.upper")));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !management_has(&group_queue) {
            assert!(
                Instant::now() < deadline,
                "uppercase did not declare {words}.upper"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let channel = channel().await;
        publish(&channel, &words, "please fail twice").await;
        let dlq = format!("queues/%2f/{}", encode(&format!("{words}.upper.dlq")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while bindery_tests::rabbitmq::management(&dlq)["messages"].as_u64() != Some(1) {
            assert!(
                Instant::now() < deadline,
                "the failing text did not reach the dead-letter queue"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        service.terminate();

        let output = command("uppercase", Binder::RabbitMq, &suffix)
            .args(["--redrive", "uppercase-in-0"])
            .output()
            .expect("the redrive command runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("redrive: moved 1 dead letter(s) of `uppercase-in-0`"),
            "{stdout}"
        );

        let redriven = get(&channel, &format!("{words}.upper")).await;
        assert_eq!(redriven.delivery.data, b"please fail twice");
        let headers = redriven
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert!(
            !headers.inner().contains_key("x-exception-message"),
            "exception headers removed"
        );
        assert!(
            !headers.inner().contains_key("x-delivery-attempts"),
            "attempt count reset"
        );
    }
}

/// The examples on Kafka, and `uppercase` driven by a plain Kafka client.
#[cfg(feature = "kafka")]
mod kafka {
    use std::time::{Duration, Instant};

    use bindery::kafka::rdkafka::ClientConfig;
    use bindery::kafka::rdkafka::Message as _;
    use bindery::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use bindery::kafka::rdkafka::message::{Headers as _, OwnedMessage};
    use bindery::kafka::rdkafka::producer::{FutureProducer, FutureRecord};
    use bindery::kafka::rdkafka::{Offset, TopicPartitionList};
    use bindery_tests::kafka::require_broker;

    use super::*;

    #[test]
    fn quickstart_on_kafka() {
        check_quickstart(Binder::Kafka);
    }

    #[test]
    fn work_queue_on_kafka() {
        check_work_queue(Binder::Kafka);
    }

    #[test]
    fn registration_on_kafka() {
        check_registration(Binder::Kafka);
    }

    #[test]
    fn product_sync_on_kafka() {
        check_product_sync(Binder::Kafka);
    }

    #[test]
    fn order_pipeline_on_kafka() {
        check_order_pipeline(Binder::Kafka);
    }

    #[test]
    fn redrive_on_kafka() {
        check_redrive(Binder::Kafka);
    }

    fn client() -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", require_broker());
        config
    }

    /// Waits until `topic` exists, as the running service creates it.
    fn wait_for_topic(consumer: &BaseConsumer, topic: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exists = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map(|m| {
                    m.topics()
                        .iter()
                        .any(|t| t.name() == topic && !t.partitions().is_empty())
                })
                .unwrap_or(false);
            if exists {
                return;
            }
            assert!(Instant::now() < deadline, "topic `{topic}` was not created");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first record of `topic` (partition 0, from the beginning).
    fn first_record(consumer: &BaseConsumer, topic: &str) -> OwnedMessage {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&assignment).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(record)) = consumer.poll(Duration::from_millis(500)) {
                return record.detach();
            }
            assert!(Instant::now() < deadline, "nothing arrived on `{topic}`");
        }
    }

    #[tokio::test]
    async fn uppercase_on_kafka_serves_any_kafka_client() {
        let suffix = suffix();
        let words = format!("words{suffix}");
        let service = Service::start("uppercase", Binder::Kafka, &suffix);
        let probe: BaseConsumer = client()
            .set("group.id", format!("probe{suffix}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        wait_for_topic(&probe, &format!("upper-words{suffix}"));
        wait_for_topic(&probe, &format!("error.{words}.upper{suffix}"));

        let producer: FutureProducer = client()
            .set("enable.idempotence", "false")
            .create()
            .expect("producer");
        for text in ["hello from any client", "please fail now"] {
            producer
                .send(
                    FutureRecord::<(), _>::to(&words).payload(text),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
        let upper = first_record(&probe, &format!("upper-words{suffix}"));
        assert_eq!(upper.payload(), Some(&b"HELLO FROM ANY CLIENT"[..]));
        let dead = first_record(&probe, &format!("error.{words}.upper{suffix}"));
        assert_eq!(dead.payload(), Some(&b"please fail now"[..]));
        let headers = dead.headers().expect("dead-letter headers");
        let reason = headers
            .iter()
            .find(|h| h.key == "x-exception-message")
            .and_then(|h| h.value)
            .expect("x-exception-message");
        assert!(String::from_utf8_lossy(reason).contains("asks to fail"));
        service.terminate();
    }
}

/// Drives a running `uppercase` through `binder`, as another service on the
/// same broker would: publishes to `words<suffix>` until its upper-case form
/// arrives on `upper-words<suffix>` (the service may still be subscribing).
#[cfg(any(feature = "redis", feature = "mqtt"))]
async fn upper_cased_through(binder: std::sync::Arc<dyn bindery::binder::Binder>, suffix: &str) {
    use bindery::Message;
    use bindery::binder::{BinderExt, ConsumerSpec, ProducerSpec};

    let mut output = binder
        .consumer(&ConsumerSpec::new(
            "probe-in",
            format!("upper-words{suffix}"),
        ))
        .await
        .expect("subscribe to the output");
    let words = binder
        .producer(&ProducerSpec::new("probe-out", format!("words{suffix}")))
        .await
        .expect("bind a producer of the input");
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivery = loop {
        let text = Message::new(bytes::Bytes::from_static(b"hello from another service"))
            .with_content_type("text/plain");
        match words.send(text).await.expect("send").await {
            Ok(()) => {}
            // The service has not subscribed yet (MQTT says so in its PUBACK).
            Err(e) if e.kind() == bindery::BinderErrorKind::Unroutable => {}
            Err(e) => panic!("send: {e}"),
        }
        if let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_secs(1), output.recv()).await
        {
            break delivery;
        }
        assert!(
            Instant::now() < deadline,
            "uppercase answered nothing within 60 s"
        );
    };
    assert_eq!(
        delivery.message().payload().as_ref(),
        b"HELLO FROM ANOTHER SERVICE"
    );
    delivery.ack().await.expect("ack");
}

/// The examples on Redis Streams.
#[cfg(feature = "redis")]
mod redis {
    use super::*;

    #[test]
    fn quickstart_on_redis() {
        check_quickstart(Binder::Redis);
    }

    #[test]
    fn work_queue_on_redis() {
        check_work_queue(Binder::Redis);
    }

    #[test]
    fn registration_on_redis() {
        check_registration(Binder::Redis);
    }

    #[test]
    fn product_sync_on_redis() {
        check_product_sync(Binder::Redis);
    }

    #[test]
    fn order_pipeline_on_redis() {
        check_order_pipeline(Binder::Redis);
    }

    #[test]
    fn redrive_on_redis() {
        check_redrive(Binder::Redis);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uppercase_on_redis_serves_another_service() {
        use bindery::redis::{RedisBinder, RedisSettings};

        let suffix = suffix();
        let service = Service::start("uppercase", Binder::Redis, &suffix);
        let binder = RedisBinder::new("probe", RedisSettings::new(redis_url())).expect("settings");
        binder.connect().await.unwrap_or_else(|e| {
            panic!("Redis does not answer: {e}; start it with scripts/brokers/ensure-redis.sh")
        });
        upper_cased_through(std::sync::Arc::new(binder), &suffix).await;
        service.terminate();
    }
}

/// The examples on MQTT.
#[cfg(feature = "mqtt")]
mod mqtt {
    use super::*;

    #[test]
    fn quickstart_on_mqtt() {
        check_quickstart(Binder::Mqtt);
    }

    #[test]
    fn work_queue_on_mqtt() {
        check_work_queue(Binder::Mqtt);
    }

    #[test]
    fn registration_on_mqtt() {
        check_registration(Binder::Mqtt);
    }

    #[test]
    fn product_sync_on_mqtt() {
        check_product_sync(Binder::Mqtt);
    }

    #[test]
    fn order_pipeline_on_mqtt() {
        check_order_pipeline(Binder::Mqtt);
    }

    #[test]
    fn redrive_on_mqtt() {
        check_redrive(Binder::Mqtt);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uppercase_on_mqtt_serves_another_service() {
        use bindery::mqtt::{MqttBinder, MqttSettings};

        let suffix = suffix();
        let service = Service::start("uppercase", Binder::Mqtt, &suffix);
        let settings = MqttSettings::new(mqtt_url()).client_id_prefix(format!("probe{suffix}"));
        let binder = MqttBinder::new("probe", settings).expect("settings");
        binder.connect().await.unwrap_or_else(|e| {
            panic!("MQTT broker does not answer: {e}; start it with scripts/brokers/ensure-mosquitto.sh")
        });
        upper_cased_through(std::sync::Arc::new(binder), &suffix).await;
        service.terminate();
    }
}
