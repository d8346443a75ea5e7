//! The broker side of the Kafka scenarios: the brokers (or a failure that
//! says how to start one), the client properties both sides share, fresh
//! names per round, and creating, preloading and deleting topics.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How to get a broker, for failure messages.
pub const START_HINT: &str = "start one with `scripts/brokers/ensure-kafka.sh` \
     (starts Apache Kafka on 127.0.0.1:9092), or point BINDERY_TEST_KAFKA_BROKERS at a Kafka cluster";

/// Partitions of every topic of the benchmark (Tansu's auto-created
/// topics have 4 too).
pub const PARTITIONS: usize = 4;

/// Records in flight while preloading.
const PRELOAD_WINDOW: usize = 10_000;

/// Consumer properties of both sides. A short `fetch.wait.max.ms` keeps
/// latency low on brokers that answer a fetch only when it is over (Tansu);
/// the session is Apache Kafka's shortest (`group.min.session.timeout.ms`,
/// 6 s), so group joins are quick. Offsets are stored by the application
/// and committed by librdkafka.
pub const CONSUMER_PROPERTIES: [(&str, &str); 5] = [
    ("fetch.wait.max.ms", "10"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("auto.commit.interval.ms", "1000"),
    ("enable.partition.eof", "false"),
];

/// Producer properties of both sides: every replica acknowledges; not
/// idempotent, which Tansu does not recover from after a timeout
/// (scripts/brokers/TANSU-NOTES.md). librdkafka's defaults otherwise.
pub const PRODUCER_PROPERTIES: [(&str, &str); 2] =
    [("acks", "all"), ("enable.idempotence", "false")];

/// The brokers: `BINDERY_TEST_KAFKA_BROKERS`, as for the tests, else the
/// local one.
pub fn brokers() -> String {
    std::env::var("BINDERY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The brokers, after checking that the first one accepts connections;
/// panics saying how to start one otherwise (librdkafka would retry
/// silently for ever).
pub fn require_brokers() -> String {
    let brokers = brokers();
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let address = first.split_once("://").map_or(first, |(_, rest)| rest);
    let reachable = address
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no Kafka-compatible broker answers at {address}\n{START_HINT}"
    );
    brokers
}

/// A client configuration for the brokers.
pub fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// A producer as both sides configure it.
pub fn producer(brokers: &str) -> FutureProducer {
    let mut config = config(brokers);
    for (name, value) in PRODUCER_PROPERTIES {
        config.set(name, value);
    }
    config.create().expect("a Kafka producer")
}

/// The topics and group of one round, unique across rounds and runs.
#[derive(Clone, Debug)]
pub struct Names {
    round: String,
}

impl Names {
    /// Fresh names tagged with `side` (`raw`, `bindery`, ...).
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

    /// The input topic, which holds the backlog.
    pub fn input(&self) -> String {
        format!("{}-in", self.round)
    }

    /// The output topic.
    pub fn output(&self) -> String {
        format!("{}-out", self.round)
    }

    /// The consumer group of the input (and, suffixed, of later stages).
    pub fn group(&self) -> String {
        format!("{}.group", self.round)
    }

    /// The dead-letter topic bindery's consumers of `topic` provision.
    fn dead_letters(&self, topic: &str, group: &str) -> String {
        format!("error.{topic}.{group}")
    }
}

/// Creates, preloads and deletes topics.
pub struct Admin {
    brokers: String,
    client: AdminClient<DefaultClientContext>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin client, or a panic saying how to start the broker.
    pub fn connect() -> Self {
        let brokers = require_brokers();
        let client = config(&brokers).create().expect("a Kafka admin client");
        Self { brokers, client }
    }

    /// The brokers it talks to.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Creates `topics` with [`PARTITIONS`] partitions each.
    pub async fn create(&self, topics: &[String]) {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, PARTITIONS as i32, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self
            .client
            .create_topics(&new, &options)
            .await
            .expect("create topics")
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("creating topic `{topic}`: {code}"),
            }
        }
    }

    /// Creates `topic` and writes `messages` JSON orders to it, every one
    /// acknowledged.
    pub async fn preload(&self, topic: &str, messages: u64) {
        self.create(&[topic.to_owned()]).await;
        let producer = producer(&self.brokers);
        let mut deliveries = FuturesUnordered::new();
        for id in 0..messages {
            let payload = crate::order::Order::encoded(id);
            let record = FutureRecord::<(), _>::to(topic).payload(&payload);
            let delivery = producer
                .send_result(record)
                .map_err(|(error, _)| error)
                .expect("preload send");
            deliveries.push(delivery);
            if deliveries.len() >= PRELOAD_WINDOW {
                expect_delivered(deliveries.next().await);
            }
        }
        while let Some(delivered) = deliveries.next().await {
            expect_delivered(Some(delivered));
        }
    }

    /// Deletes the topics of a round, with the dead-letter topics bindery
    /// provisioned for `groups`, so that a broker keeping everything in
    /// memory does not fill up.
    pub async fn delete(&self, names: &Names, groups: &[String]) {
        let mut topics = vec![names.input(), names.output()];
        for group in groups {
            topics.push(names.dead_letters(&names.input(), group));
            topics.push(names.dead_letters(&names.output(), group));
        }
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // Topics that were never created fail alone; nothing to do about it.
        let _ = self.client.delete_topics(&topics, &options).await;
    }
}

type Delivered = Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

fn expect_delivered(delivered: Option<Delivered>) {
    let delivered = delivered.expect("a delivery is pending");
    if let Err((error, _)) = delivered.expect("the producer lives") {
        panic!("a preloaded record was not delivered: {error}");
    }
}
