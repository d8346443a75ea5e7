//! The raw rdkafka processor both Kafka scenarios use, written as
//! rdkafka's `at_least_once` example writes one, with many records in
//! flight instead of one.

use std::sync::Mutex;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::PREFETCH;
use super::broker::{self, CONSUMER_PROPERTIES};

/// Notes when the group first assigned partitions: the raw side's clock
/// starts there, as bindery's starts when its binding is bound (which a
/// Kafka consumer is once assigned).
#[derive(Debug, Default)]
pub struct Assignment {
    at: Mutex<Option<Instant>>,
}

impl ClientContext for Assignment {}

impl ConsumerContext for Assignment {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(list) if list.count() > 0) {
            self.at
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(Instant::now);
        }
    }
}

/// A group member of an input topic that produces each processed record
/// to an output topic and stores the input's offset once the output's
/// delivery report is in.
pub struct RawProcessor {
    consumer: StreamConsumer<Assignment>,
    producer: FutureProducer,
    input: String,
    output: String,
}

impl std::fmt::Debug for RawProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawProcessor")
            .field("input", &self.input)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl RawProcessor {
    /// A member of `group` on `input` (see [`group_member`]) producing to
    /// `output`.
    pub fn open(brokers: &str, group: &str, input: &str, output: &str) -> Self {
        Self {
            consumer: group_member(brokers, group, input),
            producer: broker::producer(brokers),
            input: input.to_owned(),
            output: output.to_owned(),
        }
    }

    /// When the group first assigned partitions.
    pub fn assigned_at(&self) -> Option<Instant> {
        *self.consumer.context().at.lock().expect("not poisoned")
    }

    /// Processes until `limit` input offsets are stored. Up to
    /// [`PREFETCH`] records are in flight; their delivery reports are
    /// taken in consumption order, so each partition's stored offset only
    /// moves forward.
    pub async fn run(&self, process: fn(&[u8]) -> Vec<u8>, limit: u64) {
        let mut in_flight = FuturesOrdered::new();
        let mut done = 0u64;
        while done < limit {
            tokio::select! {
                biased;
                Some((partition, offset, delivered)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err((error, _)) = delivered {
                        panic!("an output was not delivered: {error}");
                    }
                    self.consumer
                        .store_offset(&self.input, partition, offset)
                        .expect("store the offset");
                    done += 1;
                }
                received = self.consumer.recv(), if in_flight.len() < PREFETCH => {
                    let message = match received {
                        Ok(message) => message,
                        // Transient (a broker connection, a rebalance):
                        // librdkafka carries on by itself.
                        Err(error) => {
                            eprintln!("raw Kafka consumer: {error}");
                            continue;
                        }
                    };
                    let output = process(message.payload().unwrap_or_default());
                    let record = FutureRecord::<(), _>::to(&self.output).payload(&output);
                    let delivery = self
                        .producer
                        .send_result(record)
                        .map_err(|(error, _)| error)
                        .expect("librdkafka's queue has room for the prefetch");
                    let (partition, offset) = (message.partition(), message.offset());
                    in_flight.push_back(async move {
                        let delivered = delivery.await.expect("the producer lives");
                        (partition, offset, delivered)
                    });
                }
            }
        }
    }
}

/// A member of `group` subscribed to `topic`, from the earliest offset,
/// with offsets stored by the application and committed by librdkafka.
pub fn group_member(brokers: &str, group: &str, topic: &str) -> StreamConsumer<Assignment> {
    let mut config = broker::config(brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (name, value) in CONSUMER_PROPERTIES {
        config.set(name, value);
    }
    let consumer: StreamConsumer<Assignment> = config
        .create_with_context(Assignment::default())
        .expect("a Kafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}
