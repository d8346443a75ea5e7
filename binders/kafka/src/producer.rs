//! Producing: an idempotent librdkafka producer with `acks=all`, shared by
//! the bindings of a binder that set no properties of their own.
//!
//! [`Producer::send`] enqueues the record in librdkafka (a synchronous,
//! ordered call) and returns a [`Confirmation`] that completes with the
//! delivery report, so many records are in flight at once. When
//! librdkafka's queue is full, `send` waits for room.
//!
//! An idempotent producer can get stuck for good: librdkafka then raises a
//! fatal error (`rd_kafka_fatal_error`), or the broker fences it. It does
//! not recover from that by itself, so after such a failure — and only
//! then: a timed-out message is an ordinary, transient failure — the binder
//! replaces the producer with a new one; the failed sends are reported as
//! transient and processed again.
//!
//! The replaced producer is dropped on a thread of its own, whichever
//! handle goes last (confirmation futures hold one): dropping a librdkafka
//! producer purges, flushes for up to 500 ms and joins its polling thread,
//! which must not block an async worker (audit A23).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::kit::Pauses;
use bindery_core::binder::{Confirmation, Producer, Sending};
use bindery_core::error::BinderError;
use bindery_core::message::Message;
use parking_lot::RwLock;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use tracing::warn;

use crate::error::{Error, Result};
use crate::health::{ClientCtx, HealthBoard, Reporter};
use crate::mapping::record_headers;

/// Longest pause while librdkafka's queue is full.
const LONGEST_QUEUE_WAIT: Duration = Duration::from_millis(50);

/// How long `flush` waits for outstanding delivery reports.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the threads that drop replaced producers.
const DROP_THREAD: &str = "bindery-kafka-drop";

/// One librdkafka producer and its health line. Dropping the last handle
/// drops the producer off the async workers.
struct Client {
    /// `Some` until dropped.
    producer: Option<FutureProducer<ClientCtx>>,
    reporter: Arc<Reporter>,
}

impl Client {
    fn producer(&self) -> &FutureProducer<ClientCtx> {
        self.producer
            .as_ref()
            .expect("the producer is taken only when the client drops")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let Some(producer) = self.producer.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            // Not on a runtime thread (a closing thread, a test): no worker
            // to keep free.
            drop(producer);
            return;
        }
        let spawned = std::thread::Builder::new()
            .name(DROP_THREAD.into())
            .spawn(move || {
                drop(producer);
                #[cfg(test)]
                tests::dropped_on(std::thread::current().name());
            });
        if let Err(e) = spawned {
            // The closure, and the producer in it, were dropped right here.
            warn!("cannot start a thread to drop a Kafka producer, dropped it in place: {e}");
        }
    }
}

/// A producer shared by bindings, replaced when it gets stuck.
pub(crate) struct SharedProducer {
    config: ClientConfig,
    /// `replace-producer-after-timeout`: Tansu compatibility.
    replace_after_timeout: bool,
    board: Arc<HealthBoard>,
    current: RwLock<Arc<Client>>,
}

impl SharedProducer {
    /// Creates the librdkafka producer (this does not connect yet).
    pub(crate) fn new(
        config: ClientConfig,
        board: Arc<HealthBoard>,
        replace_after_timeout: bool,
    ) -> Result<Self> {
        let client = create(&config, &board)?;
        Ok(Self {
            config,
            replace_after_timeout,
            board,
            current: RwLock::new(Arc::new(client)),
        })
    }

    fn client(&self) -> Arc<Client> {
        self.current.read().clone()
    }

    /// Replaces `failed` after an error it cannot recover from, unless it
    /// was replaced already.
    fn recover(&self, failed: &Arc<Client>, error: &KafkaError) {
        let timed_out = self.replace_after_timeout
            && error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
        if !timed_out
            && !needs_new_producer(error)
            && failed.producer().client().fatal_error().is_none()
        {
            return;
        }
        let mut current = self.current.write();
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match create(&self.config, &self.board) {
            Ok(client) => {
                warn!("Kafka producer replaced after `{error}`");
                // Its pending sends fail as transient; the last handle of it
                // (this one or a confirmation's) drops it on a thread of its own.
                drop(std::mem::replace(&mut *current, Arc::new(client)));
            }
            Err(e) => warn!("Kafka producer failed with `{error}` and cannot be replaced: {e}"),
        }
    }

    /// Waits for every delivery report, off the async workers.
    pub(crate) async fn flush(&self) -> Result<(), KafkaError> {
        let client = self.client();
        tokio::task::spawn_blocking(move || client.producer().flush(FLUSH_TIMEOUT))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}

fn create(config: &ClientConfig, board: &Arc<HealthBoard>) -> Result<Client> {
    let reporter = Arc::new(board.reporter("producer"));
    let context = ClientCtx {
        reporter: reporter.clone(),
    };
    let producer = config
        .create_with_context(context)
        .map_err(|source| Error::Client {
            client: "producer",
            source,
        })?;
    Ok(Client {
        producer: Some(producer),
        reporter,
    })
}

/// Failures librdkafka documents as fatal for a producer: `Fatal` (see
/// `rd_kafka_fatal_error`, also checked by the caller) and being fenced.
/// Sequence and producer-id errors are recovered by librdkafka itself (an
/// epoch bump), or raised as fatal when it cannot; timeouts are transient.
fn needs_new_producer(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::ProducerFenced | C::Fatal)
    )
}

/// Sends to one topic.
pub(crate) struct KafkaProducer {
    topic: Arc<str>,
    shared: Arc<SharedProducer>,
    /// With `partition-count` above 1, keyed records go to the partition
    /// Spring Cloud Stream's partitioned producers choose for their key.
    partitions: Option<i32>,
}

impl KafkaProducer {
    pub(crate) fn new(topic: &str, shared: Arc<SharedProducer>) -> Self {
        Self {
            topic: topic.into(),
            shared,
            partitions: None,
        }
    }

    /// Chooses the partition of keyed records among `count` as Spring does.
    pub(crate) fn partitioned(mut self, count: usize) -> Self {
        self.partitions = (count > 1).then(|| i32::try_from(count).unwrap_or(i32::MAX));
        self
    }
}

/// The partition Spring Cloud Stream's partitioned producer
/// (`partitionKeyExpression` with `partitionCount`) picks for `key`:
/// `abs(key.hashCode()) % count` (`DefaultPartitionSelectorStrategy` and
/// `PartitionHandler`), with the key read as a Java `String`. A Spring
/// producer and a bindery producer then put a key on the same partition.
pub(crate) fn spring_partition(key: &[u8], count: i32) -> i32 {
    let text = String::from_utf8_lossy(key);
    let hash = text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let hash = if hash == i32::MIN { 0 } else { hash.abs() };
    (hash % count).abs()
}

impl KafkaProducer {
    /// The record of `message`, addressed as Spring would address it.
    fn record<'m>(&'m self, message: &'m Message) -> FutureRecord<'m, [u8], [u8]> {
        let mut record = FutureRecord::to(&self.topic)
            .payload(&message.payload()[..])
            .headers(record_headers(message));
        if let Some(key) = message.key() {
            record = record.key(&key[..]);
            if let Some(count) = self.partitions {
                record = record.partition(spring_partition(key, count));
            }
        }
        record
    }

    /// A send librdkafka refused for a reason other than a full queue.
    fn refused(&self, client: &Arc<Client>, source: KafkaError) -> BinderError {
        self.shared.recover(client, &source);
        Error::Send {
            topic: self.topic.to_string(),
            source,
        }
        .into()
    }

    /// Completes with the delivery report of an enqueued record.
    fn confirmation(&self, client: Arc<Client>, delivery: DeliveryFuture) -> Confirmation {
        let topic = self.topic.clone();
        let shared = self.shared.clone();
        Confirmation::pending(async move {
            match delivery.await {
                Ok(Ok(_)) => {
                    client.reporter.up();
                    Ok(())
                }
                Ok(Err((source, _))) => {
                    shared.recover(&client, &source);
                    Err(Error::Delivery {
                        topic: topic.to_string(),
                        source,
                    }
                    .into())
                }
                Err(_) => Err(Error::ProducerClosed {
                    topic: topic.to_string(),
                }
                .into()),
            }
        })
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let client = self.shared.client();
        let mut record = self.record(&message);
        let mut pauses = Pauses::doubling(Duration::from_millis(1), LONGEST_QUEUE_WAIT);
        let delivery = loop {
            match client.producer().send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Back-pressure: delivery reports free room soon.
                    record = returned;
                    tokio::time::sleep(pauses.next_pause()).await;
                }
                Err((source, _)) => return Err(self.refused(&client, source)),
            }
        };
        Ok(self.confirmation(client, delivery))
    }

    /// Enqueueing a record does not wait unless librdkafka's queue is full;
    /// only then does the send take the waiting path of `send`.
    fn start_send(&self, message: Message) -> Sending<'_> {
        let client = self.shared.client();
        let enqueued = client.producer().send_result(self.record(&message));
        match enqueued {
            Ok(delivery) => Sending::done(Ok(self.confirmation(client, delivery))),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Sending::waiting(self.send(message))
            }
            Err((source, _)) => Sending::done(Err(self.refused(&client, source))),
        }
    }

    async fn flush(&self) -> Result<(), BinderError> {
        self.shared.flush().await.map_err(|source| {
            Error::Delivery {
                topic: self.topic.to_string(),
                source,
            }
            .into()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn partitions_follow_springs_partition_key_expression() {
        // What a Spring producer with partitionCount 4 chose for these keys.
        let chosen: Vec<i32> = (0..8)
            .map(|i| spring_partition(format!("key-{i}").as_bytes(), 4))
            .collect();
        assert_eq!(chosen, [2, 3, 0, 1, 2, 3, 0, 1]);
        // Java: "hello".hashCode() == 99162322.
        assert_eq!(spring_partition(b"hello", 1_000_000_000), 99_162_322);
    }

    /// Names of the threads replaced producers were dropped on.
    static DROPPED_ON: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());

    pub(super) fn dropped_on(thread: Option<&str>) {
        DROPPED_ON.lock().unwrap().push(thread.map(str::to_owned));
    }

    #[test]
    fn a23_only_fatal_errors_replace_the_producer() {
        use RDKafkaErrorCode as C;
        let delivery = |code| KafkaError::MessageProduction(code);
        assert!(needs_new_producer(&delivery(C::Fatal)));
        assert!(needs_new_producer(&delivery(C::ProducerFenced)));
        assert!(
            !needs_new_producer(&delivery(C::MessageTimedOut)),
            "transient"
        );
        assert!(!needs_new_producer(&delivery(C::RequestTimedOut)));
        assert!(!needs_new_producer(&delivery(C::AllBrokersDown)));
    }

    #[tokio::test]
    async fn a23_a_timeout_replaces_the_producer_only_when_asked_to() {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        for (opt_in, replaced) in [(false, false), (true, true)] {
            let board = Arc::new(HealthBoard::default());
            let shared = SharedProducer::new(config.clone(), board, opt_in).expect("producer");
            let before = shared.client();
            shared.recover(&before, &timed_out);
            assert_eq!(
                !Arc::ptr_eq(&shared.client(), &before),
                replaced,
                "opt-in {opt_in}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a23_the_last_handle_drops_the_producer_off_the_workers() {
        let mut config = ClientConfig::new();
        // Never contacted: creating a producer does not connect.
        config.set("bootstrap.servers", "127.0.0.1:1");
        let board = Arc::new(HealthBoard::default());
        let shared = SharedProducer::new(config, board, false).expect("producer");
        let old = shared.client();
        // A confirmation future holds the other handle, as in `send`.
        let confirmation = tokio::spawn({
            let old = old.clone();
            async move {
                tokio::task::yield_now().await;
                let worker = std::thread::current().name().map(str::to_owned);
                drop(old);
                worker
            }
        });
        shared.recover(
            &old,
            &KafkaError::MessageProduction(RDKafkaErrorCode::Fatal),
        );
        assert!(!Arc::ptr_eq(&shared.client(), &old), "replaced");
        drop(old);
        let worker = confirmation.await.expect("confirmation task");
        let started = std::time::Instant::now();
        let dropped = loop {
            if let Some(name) = DROPPED_ON.lock().unwrap().first().cloned() {
                break name;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(dropped.as_deref(), Some(DROP_THREAD));
        assert_ne!(
            dropped, worker,
            "not on the worker that held the last handle"
        );
    }
}
