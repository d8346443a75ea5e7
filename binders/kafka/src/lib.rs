//! The Kafka binder of bindery (`type = "kafka"`), on rdkafka.
//!
//! A short tour:
//!
//! - A destination is a topic, created when absent with `partitions` and
//!   `replication-factor` (see [`KafkaSettings`] and [`KafkaBindingOptions`]).
//! - A group is a consumer group (`group.id`). A binding without group is an
//!   anonymous subscription `anonymous.<id>` that starts at the end of the
//!   topic and commits nothing.
//! - At-least-once: `enable.auto.offset.store=false`; an offset is stored
//!   only once its record and every earlier record of the partition were
//!   processed (their outputs or dead letters confirmed), then committed by
//!   librdkafka's auto-commit, on revoke and on close. With `concurrency > 1`
//!   records are settled out of order; only the contiguous settled prefix
//!   is committed.
//! - The producer is idempotent with `acks=all`; a send is confirmed by its
//!   delivery report, and many are in flight at once.
//! - Dead letters go to `error.<destination>.<group>` with Spring's
//!   `x-original-topic`, `-partition`, `-offset` and `-timestamp` headers.
//! - Routing keys travel in the `x-routing-key` header and are matched by the
//!   consumer (AMQP topic rules); records that do not match are skipped and
//!   their offsets committed.
//! - Kafka cannot requeue one message: a nack with requeue rewinds the
//!   partition, and [`Capabilities::partitioned_log`] says so.
//! - librdkafka properties pass through: `[binders.NAME.properties]`,
//!   `consumer-properties`, `producer-properties` and
//!   `[bindings.NAME.kafka.properties]`.
//!
//! ```toml
//! [binders.kafka]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"
//! partitions = 4
//! [binders.kafka.properties]
//! "compression.type" = "lz4"
//!
//! [bindings.enrich-in-0]
//! destination = "orders"
//! group = "billing"
//! [bindings.enrich-in-0.kafka]
//! start-offset = "earliest"
//! [bindings.enrich-in-0.kafka.properties]
//! "session.timeout.ms" = 10000
//! ```
//!
//! Creating a binder never connects; bindings do, and retry while the
//! brokers are away:
//!
//! ```
//! use bindery_core::binder::{Binder, Capabilities};
//! use bindery_kafka::{KafkaBinder, KafkaSettings};
//!
//! let mut settings = KafkaSettings::default();
//! settings.brokers = "127.0.0.1:9092".to_owned();
//! settings.partitions = 4;
//! let binder = KafkaBinder::new("kafka", settings);
//! assert_eq!(binder.capabilities(), Capabilities::partitioned_log());
//! assert_eq!(KafkaBinder::dead_letter_topic("orders", "billing"), "error.orders.billing");
//! ```
//!
//! No feature flags: rdkafka builds its bundled librdkafka (gcc, g++ and
//! make are needed). Applications enable this binder with the `kafka`
//! feature of `bindery`. The crate's `README.md` lists every option and
//! the Tansu compatibility settings (the tests run against Apache Kafka).
//!
//! [`Capabilities::partitioned_log`]: bindery_core::binder::Capabilities::partitioned_log

mod binder;
mod consumer;
mod error;
mod health;
mod mapping;
mod producer;
mod settings;
mod topics;

use std::sync::Arc;

use bindery_core::binder::{Binder, Capabilities};
use bindery_core::config::Problem;
use bindery_core::error::BinderError;
use bindery_core::registry::{BinderProvider, Patience};

pub use binder::KafkaBinder;
pub use error::{Error, Result};
pub use mapping::{
    HEADERS_TRUNCATED, ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TIMESTAMP,
    ORIGINAL_TIMESTAMP_TYPE, ORIGINAL_TOPIC, OriginalRecord, ROUTING_KEY_HEADER,
};
/// The Kafka client the binder is built on, for code that needs it directly.
pub use rdkafka;
pub use settings::{KafkaBindingOptions, KafkaSettings, Properties, StartOffset, is_secret};

/// The binder type name.
pub const TYPE: &str = "kafka";

/// Registers `type = "kafka"`.
#[derive(Debug)]
pub struct KafkaProvider;

impl BinderProvider for KafkaProvider {
    const TYPE: &'static str = TYPE;
    const CAPABILITIES: Capabilities = Capabilities::partitioned_log();
    type Settings = KafkaSettings;
    type BindingOptions = KafkaBindingOptions;

    fn create(name: &str, settings: KafkaSettings) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(KafkaBinder::new(name, settings)))
    }

    fn check_settings(settings: &KafkaSettings, path: &str, problems: &mut Vec<Problem>) {
        settings::check_settings(settings, path, problems);
    }

    fn check_binding_options(
        options: &KafkaBindingOptions,
        path: &str,
        problems: &mut Vec<Problem>,
    ) {
        settings::check_binding_options(options, path, problems);
    }

    /// `max.poll.interval.ms` of the binding's consumer (binding
    /// properties over `consumer-properties` over `properties`), default
    /// librdkafka's 300 s: a member that does not poll for that long is
    /// thrown out of its group and its unacknowledged records go to another
    /// member, which starts their attempts again. The binder keeps polling
    /// (partitions paused) while deliveries are held, so this bound is
    /// conservative: it is reached only if the polling task itself is
    /// starved, but any rebalance during a long back-off also hands the
    /// record to another member.
    fn delivery_patience(
        settings: &KafkaSettings,
        options: &KafkaBindingOptions,
    ) -> Option<Patience> {
        Some(Patience {
            limit: settings::max_poll_interval(settings, options),
            source: "Kafka's max.poll.interval.ms",
        })
    }
}

bindery_core::register_binder!(KafkaProvider);
