//! The RabbitMQ binder of bindery (`type = "rabbitmq"`), on lapin.
//!
//! It makes a bindery service a drop-in member of a system whose other
//! services use Spring Cloud Stream's RabbitMQ binder: the same exchanges,
//! queues, dead-letter queues and headers.
//!
//! - **Topology** (see [`topology`]): a destination is a durable topic
//!   exchange; a group is a durable queue `<destination>.<group>` bound
//!   with the binding's routing keys; no group is an exclusive,
//!   auto-deleted queue `anonymous.<id>`; dead letters go to the direct
//!   exchange `DLX` and the queue `<destination>.<group>.dlq`.
//! - **Delivery**: every publishing channel is in confirm mode, with many
//!   confirms in flight; messages are persistent and `mandatory`, so an
//!   unroutable message is a failed send. Consumers acknowledge manually,
//!   with `prefetch` as `basic.qos`.
//! - **Mapping**: `contentType` is the `content_type` property, the other
//!   AMQP properties are the headers Spring AMQP names ([`headers`]:
//!   `amqp_messageId`, `amqp_correlationId`, ...), other headers are AMQP
//!   headers, the key travels in [`KEY_HEADER`] (`x-bindery-key`), the
//!   routing key is AMQP's. Each publish also carries the private
//!   [`SEQUENCE_HEADER`] (`x-bindery-seq`), which consumers remove. Dead
//!   letters also carry [`ORIGINAL_EXCHANGE`] and [`ORIGINAL_ROUTING_KEY`],
//!   as Spring's do.
//! - **Recovery**: nothing connects until the first binding; a broker
//!   that is down makes binding fail as transient, which the runtime
//!   retries with back-off. A lost connection or channel, or a consumer
//!   the broker cancelled (a deleted queue), is made again with back-off,
//!   the topology declared again, and consuming resumes. Sends not yet
//!   confirmed are published again on the new channel within
//!   `confirm-timeout`.
//!
//! ```toml
//! [binders.rabbit]
//! type = "rabbitmq"
//! uri = "amqp://app:${RABBIT_PASSWORD}@127.0.0.1:5672/%2f"
//!
//! [bindings.enrich-in-0]
//! destination = "orders"
//! group = "billing"
//! [bindings.enrich-in-0.rabbitmq]
//! quorum = true
//! ```
//!
//! A binder can also be made in code and handed to the app builder:
//!
//! ```no_run
//! use std::sync::Arc;
//! use bindery_rabbitmq::{RabbitBinder, RabbitSettings};
//!
//! let binder = RabbitBinder::new("rabbit", RabbitSettings::new("amqp://guest:guest@127.0.0.1:5672/%2f"));
//! # let _ = Arc::new(binder);
//! ```

mod closing;
mod connection;
mod consumer;
mod error;
mod mapping;
mod producer;
mod settings;
pub mod topology;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{
    Binder, BindingOptions, Capabilities, ConsumeFrom, Consumer, ConsumerSpec, GroupBinding,
    Health, Producer, ProducerSpec, PublishTo,
};
use bindery_core::config::Problem;
use bindery_core::error::BinderError;
use bindery_core::registry::{BinderProvider, Patience as DeliveryPatience};
use parking_lot::Mutex;

pub use consumer::{ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY};
pub use error::{RabbitError, Result};
/// The AMQP client this binder is built on, for what the binder does not
/// cover (inspecting or deleting queues, in tests for instance).
pub use lapin;
pub use mapping::{KEY_HEADER, SEQUENCE_HEADER, headers};
pub use settings::{ExchangeType, RabbitBindingOptions, RabbitSettings, redact_uri};
pub use topology::DEAD_LETTER_EXCHANGE;

use closing::Closings;
use connection::{Connector, Patience};
use consumer::{ConsumerTask, RabbitConsumer, Stuck, Subscription};
use producer::{Publisher, RabbitProducer, Route};
use topology::{Topology, short};

/// The binder type name.
pub const TYPE: &str = "rabbitmq";

/// The RabbitMQ binder: one connection for publishing and one for
/// consuming (so that the broker's flow control on publishers never holds
/// back acknowledgements), each made when first needed and made again
/// when lost.
pub struct RabbitBinder {
    name: String,
    settings: Arc<RabbitSettings>,
    publishing: Arc<Connector>,
    consuming: Arc<Connector>,
    /// Producers to flush at shutdown.
    publishers: Mutex<Vec<Weak<Publisher>>>,
    /// Consumer tasks, whose channels shutdown lets close first.
    consumer_tasks: Mutex<Vec<ConsumerTask>>,
    /// Consumers that cannot subscribe, which make the binder down.
    stuck: Arc<Stuck>,
    /// Channels of dropped producers, closing.
    closings: Arc<Closings>,
}

impl RabbitBinder {
    /// A binder named `name` (for logs and connection names). It does not
    /// connect until something is bound.
    pub fn new(name: &str, settings: RabbitSettings) -> Self {
        let settings = Arc::new(settings);
        let connector = |role: &str| {
            let connection_name = format!("{} {name} {role}", settings.connection_name);
            Arc::new(Connector::new(settings.clone(), connection_name))
        };
        Self {
            name: name.to_owned(),
            publishing: connector("publish"),
            consuming: connector("consume"),
            settings,
            publishers: Mutex::new(Vec::new()),
            consumer_tasks: Mutex::new(Vec::new()),
            stuck: Arc::default(),
            closings: Arc::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RabbitSettings {
        &self.settings
    }

    /// The names the broker shows for this binder's connections
    /// (publishing, consuming): `<connection-name> <binder> publish|consume`.
    pub fn connection_names(&self) -> [&str; 2] {
        [self.publishing.name(), self.consuming.name()]
    }

    /// Connects both connections now (one attempt each), for a readiness
    /// check; binding does this by itself.
    pub async fn connect(&self) -> Result<(), BinderError> {
        self.publishing.live(Patience::Once).await?;
        self.consuming.live(Patience::Once).await?;
        Ok(())
    }

    fn options(&self, binding: &str, options: &BindingOptions) -> Result<RabbitBindingOptions> {
        options.get().map_err(|e| RabbitError::Options {
            binding: binding.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The group queue's and the dead-letter queue's names of a group.
    fn dead_letter_names(
        &self,
        of: GroupBinding<'_>,
        options: &RabbitBindingOptions,
    ) -> (String, String) {
        let queue = topology::group_queue_name(of.destination(), of.group(), options);
        let dlq = topology::dead_letter_queue_name(&queue, options);
        (queue, dlq)
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Consumer>> {
        let options = self.options(&spec.binding, &spec.options)?;
        let queue = match &spec.group {
            Some(group) => topology::group_queue_name(&spec.destination, group, &options),
            None => topology::anonymous_queue_name(),
        };
        let topology = Topology::consumer(spec, &options, &queue);
        self.consumer(spec, topology, queue).await
    }

    async fn consume_dead_letters(&self, of: GroupBinding<'_>) -> Result<Box<dyn Consumer>> {
        let spec = of.spec();
        let options = self.options(&spec.binding, &spec.options)?;
        let (queue, dlq) = self.dead_letter_names(of, &options);
        let topology = Topology::dead_letters(&queue, &options);
        self.consumer(spec, topology, dlq).await
    }

    async fn publish_to_destination(&self, spec: &ProducerSpec) -> Result<Arc<dyn Producer>> {
        let options = self.options(&spec.binding, &spec.options)?;
        let destination = short("exchange", &spec.destination)?;
        let route = Route {
            exchange: destination.clone(),
            fixed_routing_key: None,
            default_routing_key: destination,
        };
        self.producer(&spec.binding, Topology::producer(spec, &options), route)
            .await
    }

    async fn publish_dead_letters(&self, of: GroupBinding<'_>) -> Result<Arc<dyn Producer>> {
        let spec = of.spec();
        let options = self.options(&spec.binding, &spec.options)?;
        let (queue, _) = self.dead_letter_names(of, &options);
        let route = Route {
            exchange: short("exchange", DEAD_LETTER_EXCHANGE)?,
            fixed_routing_key: Some(short("routing key", &queue)?),
            default_routing_key: short("routing key", &queue)?,
        };
        let topology = Topology::dead_letters(&queue, &options);
        self.producer(&spec.binding, topology, route).await
    }

    async fn publish_in_front_of(&self, of: GroupBinding<'_>) -> Result<Arc<dyn Producer>> {
        let spec = of.spec();
        let options = self.options(&spec.binding, &spec.options)?;
        let queue = topology::group_queue_name(of.destination(), of.group(), &options);
        // The default exchange routes by queue name: only this group sees
        // the redriven messages.
        let route = Route {
            exchange: short("exchange", "")?,
            fixed_routing_key: Some(short("queue", &queue)?),
            default_routing_key: short("queue", &queue)?,
        };
        let topology = Topology::group(spec, of.group(), &options);
        self.producer(&spec.binding, topology, route).await
    }

    async fn producer(
        &self,
        binding: &str,
        topology: Topology,
        route: Route,
    ) -> Result<Arc<dyn Producer>> {
        let publisher = Publisher::new(
            binding.to_owned(),
            self.publishing.clone(),
            topology,
            route,
            self.settings.confirm_timeout,
            self.settings.reconnect_initial_interval,
            self.closings.clone(),
        );
        publisher.open_now().await?;
        let mut publishers = self.publishers.lock();
        publishers.retain(|p| p.strong_count() > 0);
        publishers.push(Arc::downgrade(&publisher));
        Ok(Arc::new(RabbitProducer { publisher }))
    }

    async fn consumer(
        &self,
        spec: &ConsumerSpec,
        topology: Topology,
        queue: String,
    ) -> Result<Box<dyn Consumer>> {
        // The queue's own dead-lettering, as declared (`auto-bind-dlq`).
        let dead_lettering = topology
            .queues
            .iter()
            .any(|q| q.name == queue && q.arguments.contains_key("x-dead-letter-exchange"));
        let subscription = Subscription {
            dead_lettering,
            stuck: self.stuck.clone(),
            binding: spec.binding.clone(),
            connector: self.consuming.clone(),
            topology,
            queue: queue.into(),
            prefetch: u16::try_from(spec.prefetch.get()).unwrap_or(u16::MAX),
            retry_pause: self
                .settings
                .reconnect_max_interval
                .min(Duration::from_secs(5)),
        };
        let (consumer, task) = RabbitConsumer::start(subscription).await?;
        let mut tasks = self.consumer_tasks.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
        Ok(Box::new(consumer))
    }
}

impl fmt::Debug for RabbitBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitBinder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("publishing", &self.publishing)
            .field("consuming", &self.consuming)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Binder for RabbitBinder {
    fn binder_type(&self) -> &'static str {
        TYPE
    }

    fn capabilities(&self) -> Capabilities {
        RabbitProvider::CAPABILITIES
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        Ok(match from {
            ConsumeFrom::Destination(spec) => self.subscribe(spec).await?,
            ConsumeFrom::DeadLetters(of) => self.consume_dead_letters(of).await?,
        })
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        Ok(match to {
            PublishTo::Destination(spec) => self.publish_to_destination(spec).await?,
            PublishTo::DeadLetters(of) => self.publish_dead_letters(of).await?,
            PublishTo::Group(of) => self.publish_in_front_of(of).await?,
        })
    }

    /// With options that do not parse (never after validation) the name
    /// under default options.
    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        let spec = of.spec();
        let options = self
            .options(&spec.binding, &spec.options)
            .unwrap_or_default();
        self.dead_letter_names(of, &options).1
    }

    fn health(&self) -> Health {
        match (self.publishing.health(), self.consuming.health()) {
            (Health::Down(reason), _) | (_, Health::Down(reason)) => Health::Down(reason),
            _ => match self.stuck.reasons() {
                Some(reasons) => Health::Down(reasons),
                None => Health::Up,
            },
        }
    }

    async fn shutdown(&self) -> Result<(), BinderError> {
        let publishers: Vec<Arc<Publisher>> = self
            .publishers
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for publisher in publishers {
            let flushed =
                tokio::time::timeout(self.settings.confirm_timeout, publisher.flush()).await;
            if flushed.is_err() {
                tracing::warn!(binder = %self.name, "a producer still had unconfirmed sends at shutdown");
            }
            publisher.close().await;
        }
        // Dropped consumers are closing their channels (which hands their
        // unacknowledged messages back); let them finish first.
        let ending: Vec<ConsumerTask> = {
            let mut tasks = self.consumer_tasks.lock();
            let (ending, running) = std::mem::take(&mut *tasks)
                .into_iter()
                .filter(|task| !task.is_finished())
                .partition(ConsumerTask::is_ending);
            *tasks = running;
            ending
        };
        let joined = futures::future::join_all(ending.into_iter().map(ConsumerTask::join));
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            tracing::warn!(binder = %self.name, "consumers did not close their channels within 5 s");
        }
        self.closings.wait().await;
        // Not for good: a binder shared by several apps serves the next one.
        self.publishing.close().await;
        self.consuming.close().await;
        Ok(())
    }
}

/// Registers `type = "rabbitmq"`.
#[derive(Debug)]
pub struct RabbitProvider;

impl BinderProvider for RabbitProvider {
    const TYPE: &'static str = TYPE;
    const CAPABILITIES: Capabilities = Capabilities::all();
    type Settings = RabbitSettings;
    type BindingOptions = RabbitBindingOptions;

    fn create(name: &str, settings: RabbitSettings) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(RabbitBinder::new(name, settings)))
    }

    fn check_settings(settings: &RabbitSettings, path: &str, problems: &mut Vec<Problem>) {
        settings.check(path, problems);
    }

    fn check_binding_options(
        options: &RabbitBindingOptions,
        path: &str,
        problems: &mut Vec<Problem>,
    ) {
        options.check(path, problems);
    }

    /// The broker's `consumer_timeout`, as the `consumer-timeout` setting
    /// states it (RabbitMQ's default, 30 min, unless set): beyond it the
    /// broker closes the channel of a consumer that holds a delivery
    /// unacknowledged.
    fn delivery_patience(
        settings: &RabbitSettings,
        _options: &RabbitBindingOptions,
    ) -> Option<DeliveryPatience> {
        Some(DeliveryPatience {
            limit: settings.consumer_timeout,
            source: "RabbitMQ's consumer_timeout (binder setting consumer-timeout)",
        })
    }
}

bindery_core::register_binder!(RabbitProvider);

#[cfg(test)]
mod tests {
    use super::*;
    use bindery_core::binder::BinderExt;
    use bindery_core::registry::binder_factories as registered;

    #[test]
    fn names_follow_spring() {
        let binder = RabbitBinder::new("rabbit", RabbitSettings::default());
        let spec = ConsumerSpec::new("in", "orders").group("billing");
        let name = |spec: &ConsumerSpec| binder.dead_letter_destination(spec).unwrap();
        assert_eq!(name(&spec), "orders.billing.dlq");
        let options = |json| BindingOptions::parse::<RabbitBindingOptions>(json).unwrap();
        let spec = spec.options(options(
            serde_json::json!({ "queue-name-group-only": true }),
        ));
        assert_eq!(name(&spec), "billing.dlq");
        let spec = spec.options(options(
            serde_json::json!({ "dead-letter-queue-name": "parking" }),
        ));
        assert_eq!(name(&spec), "parking");
        assert_eq!(binder.capabilities(), Capabilities::all());
        assert!(binder.health().is_up(), "not connected yet is not down");
    }

    #[test]
    fn a14_delivery_patience_is_the_consumer_timeout() {
        let factory = registered()
            .iter()
            .find(|f| f.binder_type == TYPE)
            .expect("registered");
        let default =
            (factory.delivery_patience)(&serde_json::Value::Null, &BindingOptions::none())
                .expect("RabbitMQ has a limit");
        assert_eq!(default.limit, Duration::from_secs(30 * 60));
        assert!(
            default.source.contains("consumer_timeout"),
            "{}",
            default.source
        );
        let set = (factory.delivery_patience)(
            &serde_json::json!({ "consumer-timeout": "2h" }),
            &BindingOptions::parse::<RabbitBindingOptions>(serde_json::json!({ "quorum": true }))
                .unwrap(),
        )
        .expect("a limit");
        assert_eq!(set.limit, Duration::from_secs(2 * 3600));
        let mut problems = Vec::new();
        (factory.check_settings)(
            &serde_json::json!({ "consumer-timeout": 0 }),
            "binders.r",
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].to_string().contains("consumer-timeout"),
            "{problems:?}"
        );
    }

    #[test]
    fn registers_with_checks() {
        let factory = registered()
            .iter()
            .find(|f| f.binder_type == TYPE)
            .expect("registered");
        let mut problems = Vec::new();
        (factory.check_settings)(
            &serde_json::json!({ "uri": "amqp://u:p@h/%2f", "urii": 1 }),
            "binders.r",
            &mut problems,
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{text:#?}");
        assert!(text[0].contains("did you mean `uri`"), "{text:#?}");
        problems.clear();
        (factory.check_binding_options)(
            &serde_json::json!({ "exchange-type": "fanout", "ttl": "1s" }),
            "b",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let binder = (factory.create)("rabbit", &serde_json::Value::Null)
            .expect("creating does not connect");
        assert_eq!(binder.binder_type(), TYPE);
    }
}
