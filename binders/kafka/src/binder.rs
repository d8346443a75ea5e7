//! [`KafkaBinder`]: binds consumers and producers to topics.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::kit::anonymous_name;
use bindery_core::binder::{
    Binder, Capabilities, ConsumeFrom, Consumer, ConsumerSpec, GroupBinding, Health, Producer,
    ProducerSpec, PublishTo,
};
use bindery_core::error::BinderError;
use bindery_core::registry::BinderProvider;
use bindery_core::routing::RoutingPattern;
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use tracing::{debug, warn};

use crate::consumer::{self, Closings, ConsumerPlan, Membership};
use crate::error::{Error, Result};
use crate::health::{ClientCtx, HealthBoard};
use crate::mapping::HeaderLimits;
use crate::producer::{KafkaProducer, SharedProducer};
use crate::settings::{KafkaBindingOptions, KafkaSettings, Properties, StartOffset};
use crate::topics::{TopicShape, Topics};

/// How long shutdown waits for closing consumers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kafka binder: destinations are topics, groups are consumer groups.
///
/// It connects lazily: creating it never touches the network, and while
/// the brokers are away binding fails with a transient error the runtime
/// retries.
pub struct KafkaBinder {
    name: String,
    settings: KafkaSettings,
    board: Arc<HealthBoard>,
    topics: Mutex<Option<Arc<Topics>>>,
    /// Producers by the binding properties they were made with; bindings
    /// without properties of their own share one.
    producers: Mutex<HashMap<Properties, Arc<SharedProducer>>>,
    closings: Arc<Closings>,
}

/// Which librdkafka client a configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientKind {
    Admin,
    Consumer,
    Producer,
}

impl KafkaBinder {
    /// A binder named `name` (for logs and `client.id`).
    pub fn new(name: impl Into<String>, settings: KafkaSettings) -> Self {
        Self {
            name: name.into(),
            settings,
            board: Arc::new(HealthBoard::default()),
            topics: Mutex::new(None),
            producers: Mutex::new(HashMap::new()),
            closings: Arc::new(Closings::default()),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// The dead-letter topic of a consumer group: `error.<destination>.<group>`.
    pub fn dead_letter_topic(destination: &str, group: &str) -> String {
        format!("error.{destination}.{group}")
    }

    /// The group that reads a dead-letter topic (redrive, tests):
    /// `<dead-letter topic>.reader`.
    pub fn dead_letter_reader_group(dead_letter_topic: &str) -> String {
        format!("{dead_letter_topic}.reader")
    }

    /// The librdkafka configuration of one client: the binder's settings,
    /// then the user's properties (binder, client kind, binding), then
    /// what the binder's guarantees need.
    fn client_config(&self, kind: ClientKind, binding: &Properties) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.settings.brokers)
            .set("client.id", format!("bindery-{}", self.name))
            // Health comes from the statistics' broker states.
            .set("statistics.interval.ms", "1000");
        match kind {
            ClientKind::Consumer => {
                config.set("enable.partition.eof", "false");
            }
            ClientKind::Producer => {
                // The Java client's partitioner: a key lands on the same
                // partition as from a Spring producer.
                config
                    .set("enable.idempotence", "true")
                    .set("partitioner", "murmur2_random")
                    .set("message.max.bytes", crate::topics::MAX_MESSAGE_BYTES);
            }
            ClientKind::Admin => {}
        }
        self.settings.properties.apply(&mut config);
        match kind {
            ClientKind::Consumer => self.settings.consumer_properties.apply(&mut config),
            ClientKind::Producer => self.settings.producer_properties.apply(&mut config),
            ClientKind::Admin => {}
        }
        binding.apply(&mut config);
        if kind == ClientKind::Producer {
            config.set("acks", "all");
        }
        config
    }

    fn topics(&self) -> Result<Arc<Topics>> {
        let mut topics = self.topics.lock();
        if let Some(topics) = &*topics {
            return Ok(topics.clone());
        }
        let context = ClientCtx {
            reporter: Arc::new(self.board.reporter("admin client")),
        };
        let admin: AdminClient<ClientCtx> = self
            .client_config(ClientKind::Admin, &Properties::new())
            .create_with_context(context)
            .map_err(|source| Error::Client {
                client: "admin client",
                source,
            })?;
        let created = Arc::new(Topics::new(
            admin,
            self.settings.auto_create_topics,
            self.settings.operation_timeout,
            self.board.reporter("topic provisioning"),
        ));
        *topics = Some(created.clone());
        Ok(created)
    }

    fn producer_client(&self, properties: &Properties) -> Result<Arc<SharedProducer>> {
        let mut producers = self.producers.lock();
        if let Some(shared) = producers.get(properties) {
            return Ok(shared.clone());
        }
        let config = self.client_config(ClientKind::Producer, properties);
        let shared = Arc::new(SharedProducer::new(
            config,
            self.board.clone(),
            self.settings.replace_producer_after_timeout,
        )?);
        producers.insert(properties.clone(), shared.clone());
        Ok(shared)
    }

    fn shape(&self, options: &KafkaBindingOptions, at_least: usize) -> TopicShape {
        TopicShape {
            partitions: options
                .partitions
                .unwrap_or(self.settings.partitions)
                .max(at_least)
                .max(1),
            replication_factor: options
                .replication_factor
                .unwrap_or(self.settings.replication_factor)
                .max(1),
            properties: self
                .settings
                .topic_properties
                .merged(&options.topic_properties),
        }
    }

    async fn producer_to(
        &self,
        topic: &str,
        options: &KafkaBindingOptions,
        at_least: usize,
    ) -> Result<KafkaProducer> {
        self.topics()?
            .ensure(topic, &self.shape(options, at_least))
            .await?;
        let client = self.producer_client(&options.properties)?;
        Ok(KafkaProducer::new(topic, client))
    }

    async fn consumer_of(
        &self,
        spec: &ConsumerSpec,
        topic: &str,
        membership: Membership,
        start: StartOffset,
        routing_keys: Vec<RoutingPattern>,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        let options: KafkaBindingOptions = spec.options.get()?;
        self.topics()?
            .ensure(topic, &self.shape(&options, 1))
            .await?;
        let plan = ConsumerPlan {
            binding: spec.binding.clone(),
            topic: topic.to_owned(),
            membership,
            start,
            prefetch: spec.prefetch,
            routing_keys,
            config: self.client_config(ClientKind::Consumer, &options.properties),
            assignment_timeout: self.settings.assignment_timeout,
            operation_timeout: self.settings.operation_timeout,
            timestamp_filter: self.settings.anonymous_timestamp_filter,
            header_limits: HeaderLimits {
                count: self.settings.max_header_count,
                bytes: self.settings.max_header_bytes,
            },
        };
        let bound = consumer::bind(plan, &self.board, &self.closings).await?;
        Ok(Box::new(bound))
    }
    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Consumer>, BinderError> {
        let options: KafkaBindingOptions = spec.options.get()?;
        let (membership, default_start) = match &spec.group {
            Some(group) => (Membership::Group(group.clone()), StartOffset::Earliest),
            None => (
                Membership::Anonymous(anonymous_name("anonymous")),
                StartOffset::Latest,
            ),
        };
        let start = options.start_offset.unwrap_or(default_start);
        self.consumer_of(
            spec,
            &spec.destination,
            membership,
            start,
            spec.routing_keys.clone(),
        )
        .await
    }

    /// Reads the dead-letter topic in group `<dead-letter topic>.reader`,
    /// from the earliest record not yet read by that group.
    async fn read_dead_letters(
        &self,
        of: GroupBinding<'_>,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        let topic = Self::dead_letter_topic(of.destination(), of.group());
        let reader = Membership::Group(Self::dead_letter_reader_group(&topic));
        self.consumer_of(
            of.spec(),
            &topic,
            reader,
            StartOffset::Earliest,
            vec![RoutingPattern::any()],
        )
        .await
    }

    /// Provisions the topic. `required-groups` need nothing more on Kafka: a
    /// group starts at `earliest` by default, so it receives what was sent
    /// before it first bound.
    async fn publish_to_topic(
        &self,
        spec: &ProducerSpec,
    ) -> Result<Arc<dyn Producer>, BinderError> {
        let options: KafkaBindingOptions = spec.options.get()?;
        if !spec.required_groups.is_empty() {
            debug!(
                "required groups {:?} of `{}`: provisioning the topic keeps their messages",
                spec.required_groups, spec.destination
            );
        }
        let producer = self
            .producer_to(&spec.destination, &options, spec.partition_count.get())
            .await?;
        Ok(Arc::new(producer.partitioned(spec.partition_count.get())))
    }
}

impl fmt::Debug for KafkaBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBinder")
            .field("name", &self.name)
            .field("brokers", &self.settings.brokers)
            .field("properties", &self.settings.properties)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Binder for KafkaBinder {
    fn binder_type(&self) -> &'static str {
        crate::TYPE
    }

    /// Kafka splits work by partition: no single-message requeue, no fair
    /// dispatch, and redriven dead letters reach every group.
    fn capabilities(&self) -> Capabilities {
        crate::KafkaProvider::CAPABILITIES
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        match from {
            ConsumeFrom::Destination(spec) => self.subscribe(spec).await,
            ConsumeFrom::DeadLetters(of) => self.read_dead_letters(of).await,
        }
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        match to {
            PublishTo::Destination(spec) => self.publish_to_topic(spec).await,
            PublishTo::DeadLetters(of) => {
                let options: KafkaBindingOptions = of.spec().options.get()?;
                let topic = Self::dead_letter_topic(of.destination(), of.group());
                Ok(Arc::new(self.producer_to(&topic, &options, 1).await?))
            }
            // Publishes to the destination topic: every group sees redriven
            // messages (`Capabilities::group_redrive` is false).
            PublishTo::Group(of) => {
                let options: KafkaBindingOptions = of.spec().options.get()?;
                Ok(Arc::new(
                    self.producer_to(of.destination(), &options, 1).await?,
                ))
            }
        }
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        Self::dead_letter_topic(of.destination(), of.group())
    }

    fn health(&self) -> Health {
        self.board.health()
    }

    async fn shutdown(&self) -> Result<(), BinderError> {
        let producers: Vec<Arc<SharedProducer>> = self.producers.lock().values().cloned().collect();
        for result in futures::future::join_all(producers.iter().map(|p| p.flush())).await {
            if let Err(e) = result {
                warn!("Kafka binder `{}`: flushing a producer: {e}", self.name);
            }
        }
        self.closings.wait(None, CLOSE_TIMEOUT).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_layer_under_what_the_guarantees_need() {
        let settings = KafkaSettings {
            properties: [("linger.ms", "7"), ("acks", "1"), ("client.id", "mine")]
                .into_iter()
                .collect(),
            producer_properties: [("enable.idempotence", "false")].into_iter().collect(),
            consumer_properties: [("session.timeout.ms", "6000")].into_iter().collect(),
            ..KafkaSettings::default()
        };
        let binder = KafkaBinder::new("orders", settings);
        let binding: Properties = [("linger.ms", "9")].into_iter().collect();

        let producer = binder.client_config(ClientKind::Producer, &binding);
        assert_eq!(producer.get("linger.ms"), Some("9"), "binding over binder");
        assert_eq!(producer.get("acks"), Some("all"), "acks stays all");
        assert_eq!(
            producer.get("enable.idempotence"),
            Some("false"),
            "may be turned off"
        );
        assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
        assert_eq!(producer.get("client.id"), Some("mine"));
        assert_eq!(
            producer.get("session.timeout.ms"),
            None,
            "consumer properties stay off producers"
        );

        let consumer = binder.client_config(ClientKind::Consumer, &Properties::new());
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("enable.partition.eof"), Some("false"));
        assert_eq!(consumer.get("statistics.interval.ms"), Some("1000"));
        assert_eq!(consumer.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }

    #[test]
    fn names_follow_spring_cloud_stream() {
        assert_eq!(
            KafkaBinder::dead_letter_topic("orders", "billing"),
            "error.orders.billing"
        );
        assert_eq!(
            KafkaBinder::dead_letter_reader_group("error.orders.billing"),
            "error.orders.billing.reader"
        );
    }
}
