//! Producing: an idempotent librdkafka producer with `acks=all`, shared by
//! the bindings of a binder that set no properties of their own.
//!
//! [`Producer::send`] enqueues the record in librdkafka (a synchronous,
//! ordered call) and returns a [`Confirmation`] that completes with the
//! delivery report, so many records are in flight at once. When
//! librdkafka's queue is full, `send` waits for room.
//!
//! An idempotent producer can get stuck for good: fenced, or with a
//! producer id the broker forgot (a broker restart; on Tansu also after a
//! timed-out message). librdkafka does not recover from that by itself, so
//! after such a failure the binder replaces the producer with a new one;
//! the failed sends are reported as transient and processed again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Confirmation, Producer};
use bindery_core::error::BinderError;
use bindery_core::message::Message;
use parking_lot::RwLock;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tracing::warn;

use crate::error::{Error, Result};
use crate::health::{ClientCtx, HealthBoard, Reporter};
use crate::mapping::record_headers;

/// Longest pause while librdkafka's queue is full.
const LONGEST_QUEUE_WAIT: Duration = Duration::from_millis(50);

/// How long `flush` waits for outstanding delivery reports.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// One librdkafka producer and its health line.
struct Client {
    producer: FutureProducer<ClientCtx>,
    reporter: Arc<Reporter>,
}

/// A producer shared by bindings, replaced when it gets stuck.
pub(crate) struct SharedProducer {
    config: ClientConfig,
    board: Arc<HealthBoard>,
    current: RwLock<Arc<Client>>,
}

impl SharedProducer {
    /// Creates the librdkafka producer (this does not connect yet).
    pub(crate) fn new(config: ClientConfig, board: Arc<HealthBoard>) -> Result<Self> {
        let client = create(&config, &board)?;
        Ok(Self {
            config,
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
        if !needs_new_producer(error) && failed.producer.client().fatal_error().is_none() {
            return;
        }
        let mut current = self.current.write();
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match create(&self.config, &self.board) {
            Ok(client) => {
                warn!("Kafka producer replaced after `{error}`");
                let old = std::mem::replace(&mut *current, Arc::new(client));
                // Dropping purges its queue and joins its thread: not on a
                // worker. Its pending sends fail as transient.
                let _ = std::thread::Builder::new()
                    .name("bindery-kafka-drop".into())
                    .spawn(move || drop(old));
            }
            Err(e) => warn!("Kafka producer failed with `{error}` and cannot be replaced: {e}"),
        }
    }

    /// Waits for every delivery report, off the async workers.
    pub(crate) async fn flush(&self) -> Result<(), KafkaError> {
        let client = self.client();
        tokio::task::spawn_blocking(move || client.producer.flush(FLUSH_TIMEOUT))
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
    Ok(Client { producer, reporter })
}

/// Failures after which an idempotent producer stays stuck.
fn needs_new_producer(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::UnknownProducerId
                | C::OutOfOrderSequenceNumber
                | C::InvalidProducerIdMapping
                | C::Fatal
                // On Tansu an idempotent producer whose message timed out is
                // fenced forever; after a broker restart it loops on epochs.
                | C::MessageTimedOut
        )
    )
}

/// Sends to one topic.
pub(crate) struct KafkaProducer {
    topic: Arc<str>,
    shared: Arc<SharedProducer>,
}

impl KafkaProducer {
    pub(crate) fn new(topic: &str, shared: Arc<SharedProducer>) -> Self {
        Self {
            topic: topic.into(),
            shared,
        }
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let client = self.shared.client();
        let mut record = FutureRecord::to(&self.topic)
            .payload(&message.payload()[..])
            .headers(record_headers(&message));
        if let Some(key) = message.key() {
            record = record.key(&key[..]);
        }
        let mut pause = Duration::from_millis(1);
        let delivery = loop {
            match client.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Back-pressure: delivery reports free room soon.
                    record = returned;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_QUEUE_WAIT);
                }
                Err((source, _)) => {
                    self.shared.recover(&client, &source);
                    return Err(Error::Send {
                        topic: self.topic.to_string(),
                        source,
                    }
                    .into());
                }
            }
        };
        let topic = self.topic.clone();
        let shared = self.shared.clone();
        Ok(Confirmation::pending(async move {
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
        }))
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
