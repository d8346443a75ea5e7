//! Provisioning topics: a destination is a topic, created when absent
//! (`auto-create-topics`) with the configured partitions and replication.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::health::{ClientCtx, Reporter};
use crate::settings::Properties;

/// The largest record a created topic takes by default (8 MiB), as the
/// binder's producers (`message.max.bytes`): Kafka's 1 MB default is too
/// small for a 1 MiB payload with its headers.
pub(crate) const MAX_MESSAGE_BYTES: &str = "8388608";

/// What a created topic looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicShape {
    pub(crate) partitions: usize,
    pub(crate) replication_factor: usize,
    /// Topic configuration.
    pub(crate) properties: Properties,
}

/// Creates and inspects topics for one binder.
pub(crate) struct Topics {
    admin: Arc<AdminClient<ClientCtx>>,
    auto_create: bool,
    timeout: Duration,
    /// Topics known to exist, so each is provisioned once per binder.
    known: Mutex<HashSet<String>>,
    /// Health of provisioning calls (the admin client has no statistics).
    reporter: Reporter,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics")
            .field("auto_create", &self.auto_create)
            .field("known", &self.known.lock().len())
            .finish_non_exhaustive()
    }
}

impl Topics {
    pub(crate) fn new(
        admin: AdminClient<ClientCtx>,
        auto_create: bool,
        timeout: Duration,
        reporter: Reporter,
    ) -> Self {
        Self {
            admin: Arc::new(admin),
            auto_create,
            timeout,
            known: Mutex::new(HashSet::new()),
            reporter,
        }
    }

    /// Makes sure `topic` exists, creating it with `shape` when allowed.
    pub(crate) async fn ensure(&self, topic: &str, shape: &TopicShape) -> Result<()> {
        if self.known.lock().contains(topic) {
            return Ok(());
        }
        let result = if self.auto_create {
            self.create(topic, shape).await
        } else {
            match self.partitions(topic).await {
                Ok(0) => Err(Error::MissingTopic {
                    topic: topic.to_owned(),
                }),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        };
        match &result {
            Ok(()) => {
                self.reporter.up();
                self.known.lock().insert(topic.to_owned());
            }
            Err(e) if e.is_transient() => self.reporter.down(e),
            Err(_) => {}
        }
        result
    }

    async fn create(&self, topic: &str, shape: &TopicShape) -> Result<()> {
        let partitions = i32::try_from(shape.partitions).unwrap_or(i32::MAX);
        let replication = i32::try_from(shape.replication_factor).unwrap_or(i32::MAX);
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        if shape.properties.get("max.message.bytes").is_none() {
            new_topic = new_topic.set("max.message.bytes", MAX_MESSAGE_BYTES);
        }
        for (name, value) in shape.properties.iter() {
            new_topic = new_topic.set(name, value);
        }
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let results = self
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|source| Error::CreateTopic {
                topic: topic.to_owned(),
                source,
            })?;
        for result in results {
            match result {
                Ok(_) => info!(
                    "created topic `{topic}` with {} partition(s)",
                    shape.partitions
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    debug!("topic `{topic}` exists");
                    let existing = self.partitions(topic).await?;
                    if existing < shape.partitions {
                        warn!(
                            "topic `{topic}` has {existing} partition(s), fewer than the {} configured; \
                             the binder does not add partitions",
                            shape.partitions
                        );
                    }
                }
                Err((_, code)) => {
                    return Err(Error::CreateTopic {
                        topic: topic.to_owned(),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }

    /// The number of partitions of `topic`; 0 when it does not exist.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<usize> {
        let admin = self.admin.clone();
        let owned = topic.to_owned();
        let timeout = self.timeout;
        // A metadata request blocks: keep it off the async workers.
        let metadata = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(Some(&owned), timeout)
        })
        .await
        .map_err(|_| Error::Metadata {
            topic: topic.to_owned(),
            source: KafkaError::Canceled,
        })?
        .map_err(|source| Error::Metadata {
            topic: topic.to_owned(),
            source,
        })?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(0);
        };
        match found.error() {
            None => Ok(found.partitions().len()),
            Some(code) => match RDKafkaErrorCode::from(code) {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => Ok(0),
                other => Err(Error::Metadata {
                    topic: topic.to_owned(),
                    source: KafkaError::MetadataFetch(other),
                }),
            },
        }
    }
}
