//! The typed configuration, named as Spring Cloud Stream names it in
//! kebab-case. Every field has a documented default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[bindery]`: application-wide settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct AppSettings {
    /// Functions to run: `|` composes, `;` separates (Spring's
    /// `spring.cloud.function.definition`). Default: the only registered
    /// function, when there is exactly one.
    pub definition: Option<String>,
    /// The binder of bindings that name none. Default: the only declared
    /// binder, or the built-in memory binder when none is declared.
    pub default_binder: Option<String>,
    /// How long shutdown may take to finish in-flight messages. Default 30 s.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// How sources are polled.
    pub poller: PollerSettings,
    /// Extra output bindings for the dynamic sender (Spring's
    /// `output-bindings`), so they can be configured and validated.
    pub output_bindings: Vec<String>,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            definition: None,
            default_binder: None,
            shutdown_timeout: Duration::from_secs(30),
            poller: PollerSettings::default(),
            output_bindings: Vec::new(),
        }
    }
}

/// `[bindery.poller]`: how sources that return one value are polled.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct PollerSettings {
    /// Pause between the end of one poll and the next. Default 1 s.
    #[serde(with = "duration")]
    pub fixed_delay: Duration,
    /// Pause before the first poll. Default 0.
    #[serde(with = "duration")]
    pub initial_delay: Duration,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            fixed_delay: Duration::from_secs(1),
            initial_delay: Duration::ZERO,
        }
    }
}

/// `[bindings.NAME]`: where one function input or output is bound.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct BindingSettings {
    /// The destination (exchange, topic, channel). Default: the binding name.
    pub destination: Option<String>,
    /// The consumer group. None: an anonymous, non-durable subscription.
    pub group: Option<String>,
    /// The binder to use. Default: `bindery.default-binder`.
    pub binder: Option<String>,
    /// The payload's media type. Default `application/json`.
    pub content_type: String,
    /// Settings of an input binding.
    pub consumer: ConsumerSettings,
    /// Settings of an output binding.
    pub producer: ProducerSettings,
}

impl Default for BindingSettings {
    fn default() -> Self {
        Self {
            destination: None,
            group: None,
            binder: None,
            content_type: crate::codec::DEFAULT_CONTENT_TYPE.to_owned(),
            consumer: ConsumerSettings::default(),
            producer: ProducerSettings::default(),
        }
    }
}

/// `[bindings.NAME.consumer]`: retry, dead letters and flow of an input.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct ConsumerSettings {
    /// Invocations per message, counting the first; 1 = no retry. Default 3.
    pub max_attempts: u32,
    /// Pause after the first failed attempt. Default 1 s.
    #[serde(with = "duration")]
    pub back_off_initial_interval: Duration,
    /// Factor applied to the pause after each further attempt. Default 2.0.
    pub back_off_multiplier: f64,
    /// Longest pause. Default 10 s.
    #[serde(with = "duration")]
    pub back_off_max_interval: Duration,
    /// Send failed messages to the dead-letter destination. Default: on
    /// when the binding has a group.
    pub dead_letter: Option<bool>,
    /// Messages processed in parallel; messages sharing a key keep their
    /// order. Default 1.
    pub concurrency: usize,
    /// Most unacknowledged messages held at once. Default 16.
    pub prefetch: usize,
    /// Routing-key patterns (`*` one word, `#` any words). Default `["#"]`.
    pub binding_routing_keys: Vec<String>,
    /// Longest one invocation may run before it counts as a failed,
    /// retryable attempt; a lane busy for longer shows in health. Default:
    /// none (no limit).
    #[serde(with = "duration::option")]
    pub invocation_timeout: Option<Duration>,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            back_off_initial_interval: Duration::from_secs(1),
            back_off_multiplier: 2.0,
            back_off_max_interval: Duration::from_secs(10),
            dead_letter: None,
            concurrency: 1,
            prefetch: 16,
            binding_routing_keys: vec!["#".to_owned()],
            invocation_timeout: None,
        }
    }
}

/// `[bindings.NAME.producer]`: keys and provisioning of an output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct ProducerSettings {
    /// Routing key template, e.g. `item.{header.op}`. Default: the key the
    /// function set, if any.
    pub routing_key: Option<String>,
    /// Key template, e.g. `{payload.customer}`; it orders messages and
    /// chooses the partition on a binder with partitions. Default: the key
    /// the function set.
    pub partition_key: Option<String>,
    /// Partitions the destination should have, on a binder with
    /// [`partitions`](crate::binder::Capabilities::partitions). Default 1.
    pub partition_count: Option<usize>,
    /// Groups provisioned with the producer, so messages sent before their
    /// consumers start are kept. Default none.
    pub required_groups: Vec<String>,
}
