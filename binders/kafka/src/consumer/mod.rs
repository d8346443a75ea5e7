//! Consuming: a librdkafka consumer per binding, polled by a task of its
//! own ([`driver`]) that hands deliveries to [`KafkaConsumer::recv`].
//!
//! - A named group subscribes (`group.id` = the group) and starts, when the
//!   group has no committed offset, at `start-offset` (earliest by
//!   default). Binding returns once the group assigned partitions.
//! - An anonymous subscription (`group.id` = `anonymous.<id>`) is the only
//!   member of its group, so it assigns itself every partition, positioned
//!   at the high watermarks read when it binds (or their starts with
//!   `start-offset = "earliest"`), and commits nothing. Partitions added to
//!   the topic later are assigned from their start by the [`driver`].
//! - Offsets are stored only for the contiguous settled prefix of each
//!   partition ([`tracker`]) and committed by librdkafka's auto-commit, on
//!   revoke and on close.

mod closing;
mod context;
mod delivery;
mod driver;
pub(crate) mod tracker;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bindery_core::binder::{Consumer, Delivery};
use bindery_core::error::BinderError;
use bindery_core::routing::RoutingPattern;
use parking_lot::Mutex;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(crate) use closing::Closings;
use context::ConsumerCtx;
use driver::{Driver, PartitionCheck, pause_after};
use tracker::{OffsetTracker, Ticket};

use crate::error::{Error, Result};
use crate::health::{ClientCtx, HealthBoard};
use crate::mapping::HeaderLimits;
use crate::settings::StartOffset;

/// What a delivery asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Seek the ticket's partition back to its offset (nack with requeue).
    Rewind(Ticket),
}

/// State shared by a consumer's driver, its context and its deliveries.
pub(crate) struct Shared {
    pub(crate) binding: String,
    pub(crate) topic: String,
    /// The group whose offsets this consumer commits; `None` if anonymous.
    pub(crate) group: Option<String>,
    pub(crate) tracker: Mutex<OffsetTracker>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// Set once the group assigned partitions.
    pub(crate) assigned: watch::Sender<bool>,
    /// Whether the driver paused fetching (no permit free, or cancelled):
    /// partitions assigned meanwhile are paused as well.
    pub(crate) paused: AtomicBool,
    /// Revocations so far: records the driver held from before one are
    /// stale.
    pub(crate) rebalances: AtomicU64,
}

impl Shared {
    /// `offsets` of this consumer's topic as a librdkafka list.
    pub(crate) fn offset_list(&self, offsets: &[(i32, i64)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for &(partition, offset) in offsets {
            // Only fails for a sentinel offset, which the tracker never makes.
            let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
        list
    }
}

/// Whose offsets a consumer commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Membership {
    /// A durable consumer group.
    Group(String),
    /// A subscription of its own, `group.id` `anonymous.<id>`.
    Anonymous(String),
}

/// Everything needed to bind one consumer.
pub(crate) struct ConsumerPlan {
    pub(crate) binding: String,
    pub(crate) topic: String,
    pub(crate) membership: Membership,
    pub(crate) start: StartOffset,
    pub(crate) prefetch: NonZeroUsize,
    pub(crate) routing_keys: Vec<RoutingPattern>,
    /// librdkafka configuration, complete but for what this module sets.
    pub(crate) config: ClientConfig,
    pub(crate) assignment_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) timestamp_filter: bool,
    pub(crate) header_limits: HeaderLimits,
}

/// Binds a consumer; returns once it is positioned (see the module docs).
pub(crate) async fn bind(
    mut plan: ConsumerPlan,
    board: &Arc<HealthBoard>,
    closings: &Arc<Closings>,
) -> Result<KafkaConsumer> {
    let group = match &plan.membership {
        Membership::Group(group) => {
            // A consumer of this group closing right now commits first.
            closings.wait(Some(group), plan.assignment_timeout).await;
            Some(group.clone())
        }
        Membership::Anonymous(_) => None,
    };
    let (group_id, auto_commit) = match &plan.membership {
        Membership::Group(group) => (group.as_str(), "true"),
        Membership::Anonymous(id) => (id.as_str(), "false"),
    };
    let reset = match plan.start {
        StartOffset::Earliest => "earliest",
        StartOffset::Latest => "latest",
    };
    plan.config
        .set("group.id", group_id)
        .set("enable.auto.commit", auto_commit)
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset);

    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (assigned, mut assigned_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        binding: plan.binding.clone(),
        topic: plan.topic.clone(),
        group: group.clone(),
        tracker: Mutex::new(OffsetTracker::default()),
        commands,
        assigned,
        paused: AtomicBool::new(false),
        rebalances: AtomicU64::new(0),
    });
    let context = ConsumerCtx {
        client: ClientCtx {
            reporter: Arc::new(board.reporter(format!("consumer of `{}`", plan.topic))),
        },
        shared: shared.clone(),
    };
    let consumer: StreamConsumer<ConsumerCtx> =
        plan.config
            .create_with_context(context)
            .map_err(|source| Error::Client {
                client: "consumer",
                source,
            })?;
    let consumer = Arc::new(consumer);
    let consume_error = |source| Error::Consume {
        topic: plan.topic.clone(),
        source,
    };
    let mut not_before = HashMap::new();
    match &group {
        Some(_) => consumer.subscribe(&[&plan.topic]).map_err(consume_error)?,
        None => {
            let partitions = assign_all(&consumer, &plan).await.map_err(consume_error)?;
            shared.tracker.lock().assign(partitions.iter().copied());
            shared.assigned.send_replace(true);
            if plan.start == StartOffset::Latest && plan.timestamp_filter {
                let now = now_millis();
                not_before.extend(partitions.iter().map(|p| (*p, now)));
            }
        }
    }

    let prefetch = plan.prefetch.get();
    let (deliveries, deliveries_rx) = mpsc::channel(prefetch);
    let polling = CancellationToken::new();
    let closed = CancellationToken::new();
    let driver = Driver {
        consumer,
        shared: shared.clone(),
        permits: Arc::new(Semaphore::new(prefetch)),
        deliveries,
        commands: commands_rx,
        routing_keys: (!plan.routing_keys.iter().any(RoutingPattern::is_catch_all))
            .then(|| plan.routing_keys.clone()),
        not_before,
        header_limits: plan.header_limits,
        pause_after: pause_after(max_poll_interval(&plan.config)),
        partition_check: group.is_none().then(|| PartitionCheck {
            interval: metadata_refresh_interval(&plan.config),
            timeout: plan.operation_timeout,
        }),
        state: Default::default(),
        polling: polling.clone(),
        closed: closed.clone(),
    };
    let closings = closings.clone();
    let commit = group.is_some();
    tokio::spawn(async move {
        let (consumer, shared) = driver.run().await;
        closings.close(consumer, shared, commit);
    });
    let bound = KafkaConsumer {
        deliveries: deliveries_rx,
        polling,
        closed,
        cancelled: false,
    };
    if let Some(group) = group {
        let assigned =
            tokio::time::timeout(plan.assignment_timeout, assigned_rx.wait_for(|a| *a)).await;
        if !matches!(assigned, Ok(Ok(_))) {
            // Dropping `bound` closes the consumer.
            return Err(Error::AssignmentTimeout {
                topic: plan.topic,
                group,
                waited: plan.assignment_timeout,
            });
        }
    }
    info!(binding = %plan.binding, "consuming `{}` as {:?}", plan.topic, plan.membership);
    Ok(bound)
}

/// Assigns every partition of the topic to an anonymous consumer, at its
/// start or its end. Returns the partitions.
async fn assign_all(
    consumer: &Arc<StreamConsumer<ConsumerCtx>>,
    plan: &ConsumerPlan,
) -> Result<Vec<i32>, KafkaError> {
    let consumer = consumer.clone();
    let topic = plan.topic.clone();
    let timeout = plan.operation_timeout;
    let start = plan.start;
    // Metadata and watermark requests block: keep them off the workers.
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            // A topic created a moment ago may not be in the metadata yet;
            // binding again later finds it.
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut list = TopicPartitionList::with_capacity(partitions.len());
        for &partition in &partitions {
            let offset = match start {
                StartOffset::Earliest => Offset::Beginning,
                // The high watermark rather than `Offset::End`: a broker
                // whose watermark lags (Tansu) is then corrected by the
                // timestamp filter instead of skipping new records.
                StartOffset::Latest => {
                    Offset::Offset(consumer.fetch_watermarks(&topic, partition, timeout)?.1)
                }
            };
            list.add_partition_offset(&topic, partition, offset)?;
        }
        consumer.assign(&list)?;
        Ok(partitions)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// librdkafka's `max.poll.interval.ms` in `config`, default 300 s.
fn max_poll_interval(config: &ClientConfig) -> Duration {
    config
        .get("max.poll.interval.ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(300), Duration::from_millis)
}

/// librdkafka's `topic.metadata.refresh.interval.ms` in `config`, default
/// 5 minutes: how often an anonymous subscription looks for partitions
/// added to its topic, as often as a group member would learn of them.
fn metadata_refresh_interval(config: &ClientConfig) -> Duration {
    config
        .get("topic.metadata.refresh.interval.ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(Duration::from_secs(300), Duration::from_millis)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A bound Kafka consumer. Dropping it closes the librdkafka consumer on a
/// thread of its own: settled offsets are committed, the rest go back to
/// the group.
pub(crate) struct KafkaConsumer {
    deliveries: mpsc::Receiver<Delivery>,
    polling: CancellationToken,
    closed: CancellationToken,
    cancelled: bool,
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        if self.cancelled {
            return None;
        }
        // Cancel-safe: a delivery stays in the channel until taken.
        self.deliveries.recv().await
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        self.cancelled = true;
        self.polling.cancel();
        Ok(())
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}
