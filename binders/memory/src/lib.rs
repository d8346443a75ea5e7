//! The in-memory binder of bindery (`type = "memory"`), the embedded
//! default. It is not a toy: it keeps the semantics the broker binders are
//! held to by the conformance suite.
//!
//! - A destination fans out to queues, as a RabbitMQ topic exchange: each
//!   group has a durable queue `<destination>.<group>` whose consumers
//!   compete; an anonymous subscriber gets a queue of its own that exists
//!   only while it consumes, so it sees only what follows its subscription.
//! - Routing keys match binding patterns with AMQP topic rules.
//! - A consumer holds at most `prefetch` unacknowledged messages; a nack
//!   with requeue, or a consumer dropped with messages unacknowledged, puts
//!   them back at the head of the queue, marked redelivered.
//! - Queues hold at most `queue-capacity` ready messages. A send to a full
//!   queue waits for room (back-pressure), but at most `publish-timeout`
//!   (default 30 s): then the overflow rule is RabbitMQ's `reject-publish`.
//!   The full queue rejects the message and the send fails with
//!   `BinderErrorKind::Rejected`, a permanent failure, so the runtime
//!   dead-letters the input. Queues with room take the message at once, so
//!   one full group queue (a `required-groups` group nobody consumes) never
//!   holds up the healthy groups of its destination beyond that limit. A
//!   pipeline that feeds itself (a function publishing to its own input, or
//!   two functions feeding each other) cannot deadlock: once its queue
//!   stays full, what it cannot publish goes to its dead-letter destination
//!   (or is dropped when dead-lettering is off) and the rest flows on.
//!   Dead-letter queues `<destination>.<group>.dlq` are unbounded, as
//!   nothing consumes them until someone redrives.
//! - A send that no queue takes fails as unroutable, like a `mandatory`
//!   publish on RabbitMQ; declare `required-groups` to keep messages sent
//!   before any consumer binds.
//!
//! Binders with the same `broker` setting share one broker in the process
//! (default `default`), so several apps in one process can talk.

mod broker;
mod consumer;
mod producer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{
    Binder, Capabilities, ConsumeFrom, Consumer, ConsumerSpec, GroupBinding, Producer,
    ProducerSpec, PublishTo,
};
use bindery_core::config::duration;
use bindery_core::error::BinderError;
use bindery_core::registry::BinderProvider;
use bindery_core::routing::RoutingPattern;
use serde::Deserialize;

pub use broker::Broker;
use consumer::MemoryConsumer;
use producer::{DestinationProducer, QueueProducer};

/// The binder type name.
pub const TYPE: &str = "memory";

/// `[binders.NAME]` settings of a memory binder.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct MemorySettings {
    /// Most ready messages per queue before producers wait. Default 10,000.
    pub queue_capacity: usize,
    /// How long a send waits for room in a full queue before that queue
    /// rejects it (overflow `reject-publish`: the send fails as
    /// `Rejected`). `0s` rejects at once. Default 30 s.
    #[serde(with = "duration")]
    pub publish_timeout: Duration,
    /// The in-process broker to join. Default `default`.
    pub broker: String,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            broker: "default".to_owned(),
        }
    }
}

/// The default `publish-timeout`: long enough for any consumer that is
/// making progress to free a slot, short enough that a stuck queue shows.
const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// `[bindings.NAME.memory]`: the memory binder has no binding options.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct MemoryBindingOptions {}

/// The in-memory binder.
pub struct MemoryBinder {
    broker: Arc<Broker>,
    queue_capacity: usize,
    publish_timeout: Duration,
}

impl MemoryBinder {
    /// A binder on `broker` with queues of `queue_capacity` ready messages
    /// and the default `publish-timeout` (30 s).
    pub fn new(broker: Arc<Broker>, queue_capacity: usize) -> Self {
        Self {
            broker,
            queue_capacity: queue_capacity.max(1),
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
        }
    }

    /// Sets how long a send waits for room in a full queue before that
    /// queue rejects the message (see the [crate docs](crate)).
    pub fn with_publish_timeout(mut self, publish_timeout: Duration) -> Self {
        self.publish_timeout = publish_timeout;
        self
    }

    /// A binder on a private broker with default settings (for tests).
    pub fn isolated() -> Self {
        Self::new(Broker::new(), MemorySettings::default().queue_capacity)
    }

    /// The broker, to inspect queues.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    fn group_queue(&self, destination: &str, group: &str) -> String {
        format!("{destination}.{group}")
    }

    fn dead_letter_queue(&self, of: GroupBinding<'_>) -> Arc<broker::Queue> {
        let name = self.dead_letter_name(of);
        self.broker
            .declare_queue(&name, &name, &[RoutingPattern::any()], None)
    }

    fn subscribe(&self, spec: &ConsumerSpec) -> MemoryConsumer {
        let capacity = Some(self.queue_capacity);
        match &spec.group {
            Some(group) => {
                let name = self.group_queue(&spec.destination, group);
                let queue = self.broker.declare_queue(
                    &spec.destination,
                    &name,
                    &spec.routing_keys,
                    capacity,
                );
                MemoryConsumer::new(queue, spec.prefetch, None)
            }
            None => {
                let name = self.broker.anonymous_name();
                let queue = self.broker.declare_queue(
                    &spec.destination,
                    &name,
                    &spec.routing_keys,
                    capacity,
                );
                MemoryConsumer::new(queue, spec.prefetch, Some(self.broker.clone()))
            }
        }
    }

    fn destination_publisher(&self, spec: &ProducerSpec) -> DestinationProducer {
        for group in &spec.required_groups {
            let name = self.group_queue(&spec.destination, group);
            self.broker.declare_queue(
                &spec.destination,
                &name,
                &[RoutingPattern::any()],
                Some(self.queue_capacity),
            );
        }
        DestinationProducer {
            name: spec.destination.clone(),
            destination: self.broker.destination(&spec.destination),
            publish_timeout: self.publish_timeout,
        }
    }

    fn dead_letter_publisher(&self, of: GroupBinding<'_>) -> DestinationProducer {
        // The dead-letter queue is bound to a destination of the same name,
        // so apps may also subscribe to dead letters like any destination.
        self.dead_letter_queue(of);
        let name = self.dead_letter_name(of);
        DestinationProducer {
            destination: self.broker.destination(&name),
            name,
            publish_timeout: self.publish_timeout,
        }
    }

    fn redrive_publisher(&self, of: GroupBinding<'_>) -> QueueProducer {
        let spec = of.spec();
        let name = self.group_queue(of.destination(), of.group());
        let queue = self.broker.declare_queue(
            &spec.destination,
            &name,
            &spec.routing_keys,
            Some(self.queue_capacity),
        );
        QueueProducer {
            queue,
            publish_timeout: self.publish_timeout,
        }
    }
}

impl fmt::Debug for MemoryBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBinder")
            .field("queue_capacity", &self.queue_capacity)
            .field("publish_timeout", &self.publish_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Binder for MemoryBinder {
    fn binder_type(&self) -> &'static str {
        TYPE
    }

    fn capabilities(&self) -> Capabilities {
        MemoryProvider::CAPABILITIES
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        Ok(Box::new(match from {
            ConsumeFrom::Destination(spec) => self.subscribe(spec),
            ConsumeFrom::DeadLetters(of) => {
                MemoryConsumer::new(self.dead_letter_queue(of), of.spec().prefetch, None)
            }
        }))
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        Ok(match to {
            PublishTo::Destination(spec) => Arc::new(self.destination_publisher(spec)),
            PublishTo::DeadLetters(of) => Arc::new(self.dead_letter_publisher(of)),
            PublishTo::Group(of) => Arc::new(self.redrive_publisher(of)),
        })
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        format!("{}.{}.dlq", of.destination(), of.group())
    }
}

/// Registers `type = "memory"`.
#[derive(Debug)]
pub struct MemoryProvider;

impl BinderProvider for MemoryProvider {
    const TYPE: &'static str = TYPE;
    const CAPABILITIES: Capabilities = Capabilities::all();
    type Settings = MemorySettings;
    type BindingOptions = MemoryBindingOptions;

    fn create(_name: &str, settings: MemorySettings) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(
            MemoryBinder::new(Broker::shared(&settings.broker), settings.queue_capacity)
                .with_publish_timeout(settings.publish_timeout),
        ))
    }

    fn check_settings(
        settings: &MemorySettings,
        path: &str,
        problems: &mut Vec<bindery_core::config::Problem>,
    ) {
        if settings.queue_capacity == 0 {
            problems.push(bindery_core::config::Problem::new(
                format!("{path}.queue-capacity"),
                "queue-capacity must be at least 1",
            ));
        }
    }
}

bindery_core::register_binder!(MemoryProvider);
