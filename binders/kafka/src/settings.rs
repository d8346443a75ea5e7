//! Configuration: `[binders.NAME]` ([`KafkaSettings`]) and
//! `[bindings.NAME.kafka]` ([`KafkaBindingOptions`]), with the checks that
//! need more than types (properties the binder must own, librdkafka's own
//! validation of every property).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bindery_core::config::Problem;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// librdkafka properties, passed through as they are. TOML numbers and
/// booleans are accepted and turned into text (`"session.timeout.ms" =
/// 6000`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// These properties with `overrides` on top.
    pub fn merged(&self, overrides: &Properties) -> Properties {
        let mut merged = self.clone();
        merged.0.extend(overrides.0.clone());
        merged
    }

    /// Applies every property to a librdkafka configuration.
    pub(crate) fn apply(&self, config: &mut ClientConfig) {
        for (name, value) in &self.0 {
            config.set(name, value);
        }
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// Whether a property holds a secret that must never reach a log.
pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || name.ends_with("key.pem")
        || name == "sasl.oauthbearer.config"
}

/// Prints values, with every secret ([`is_secret`]) as `***`.
impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(n, v)| (n, if is_secret(n) { "***" } else { v.as_str() })),
            )
            .finish()
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, PropertyValue>::deserialize(deserializer)?;
        Ok(Self(raw.into_iter().map(|(n, v)| (n, v.0)).collect()))
    }
}

/// One property value: text, or a number or boolean written as text.
struct PropertyValue(String);

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl Visitor<'_> for ValueVisitor {
            type Value = PropertyValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a librdkafka property value: text, a number or a boolean")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }
        }

        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Default of [`KafkaSettings::max_header_count`]: far more headers than
/// any real producer sets (Spring adds about ten).
const DEFAULT_MAX_HEADER_COUNT: usize = 1000;
/// Default of [`KafkaSettings::max_header_bytes`]: 1 MiB, an eighth of the
/// binder's default `max.message.bytes`.
const DEFAULT_MAX_HEADER_BYTES: usize = 1 << 20;

/// `[binders.NAME]` of `type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port` separated by commas. Default
    /// `127.0.0.1:9092`. librdkafka's `bootstrap.servers`.
    pub brokers: String,
    /// librdkafka properties for every client of this binder.
    pub properties: Properties,
    /// librdkafka properties for consumers only, over `properties`.
    pub consumer_properties: Properties,
    /// librdkafka properties for producers only, over `properties`.
    pub producer_properties: Properties,
    /// Create missing topics (destinations and dead-letter topics). Default
    /// true; when false a missing topic fails the binding.
    pub auto_create_topics: bool,
    /// Topic configuration of created topics (`retention.ms`, ...), over
    /// the binder's default `max.message.bytes` of 8 MiB.
    pub topic_properties: Properties,
    /// Partitions of a created topic. Default 1.
    pub partitions: usize,
    /// Replication factor of a created topic. Default 1.
    pub replication_factor: usize,
    /// How long a metadata request or topic creation may take. Default 10 s.
    #[serde(deserialize_with = "bindery_core::config::duration::deserialize")]
    pub operation_timeout: Duration,
    /// How long binding a consumer waits for its group to assign partitions
    /// before giving up (the runtime then binds again). Default 60 s.
    #[serde(deserialize_with = "bindery_core::config::duration::deserialize")]
    pub assignment_timeout: Duration,
    /// An anonymous subscription starting at the end also skips records
    /// older than its subscription until a newer one arrives in the
    /// partition. A compatibility setting for brokers whose high watermark
    /// lags the end of the log (Tansu); Apache Kafka's is exact, and the
    /// filter would drop records whose producers set event-time timestamps
    /// from the past. Default false.
    pub anonymous_timestamp_filter: bool,
    /// Most headers read from one consumed record. The rest are dropped and
    /// the message gets `x-bindery-headers-truncated` with their number, so
    /// a record with a million tiny headers cannot stall a lane (audit
    /// A17). Default 1000.
    pub max_header_count: usize,
    /// Most bytes of header names and values read from one consumed record,
    /// in all; beyond, as for `max-header-count`. Default 1 MiB.
    pub max_header_bytes: usize,
    /// Also replace the producer after a timed-out message, not only after
    /// a fatal or fenced error. A compatibility setting for brokers that
    /// fence an idempotent producer for good after a timeout or a restart
    /// (Tansu); Apache Kafka needs it off. Default false.
    pub replace_producer_after_timeout: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            properties: Properties::new(),
            consumer_properties: Properties::new(),
            producer_properties: Properties::new(),
            auto_create_topics: true,
            topic_properties: Properties::new(),
            partitions: 1,
            replication_factor: 1,
            operation_timeout: Duration::from_secs(10),
            assignment_timeout: Duration::from_secs(60),
            anonymous_timestamp_filter: false,
            max_header_count: DEFAULT_MAX_HEADER_COUNT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            replace_producer_after_timeout: false,
        }
    }
}

/// Where a consumer starts when its group has no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartOffset {
    /// The oldest message of each partition.
    Earliest,
    /// The end of each partition: only what is sent from now on.
    Latest,
}

/// `[bindings.NAME.kafka]`, for consumer and producer bindings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct KafkaBindingOptions {
    /// librdkafka properties for this binding's client, over the binder's.
    pub properties: Properties,
    /// Where a new group starts. Default: `earliest` for a named group (it
    /// gets what was sent before it first started), `latest` for an
    /// anonymous subscription, as in Spring Cloud Stream.
    pub start_offset: Option<StartOffset>,
    /// Partitions of the topic if this binding creates it; default the
    /// binder's `partitions` (and at least the producer's `partition-count`).
    pub partitions: Option<usize>,
    /// Replication factor of the topic if this binding creates it; default
    /// the binder's.
    pub replication_factor: Option<usize>,
    /// Topic configuration if this binding creates the topic, over the
    /// binder's `topic-properties`.
    pub topic_properties: Properties,
}

/// Properties the binder sets itself, and why a user may not.
const OWNED: [(&str, &str); 5] = [
    ("group.id", "the binding's `group` names the consumer group"),
    ("bootstrap.servers", "set the binder's `brokers`"),
    ("metadata.broker.list", "set the binder's `brokers`"),
    (
        "auto.offset.reset",
        "set `start-offset` in [bindings.NAME.kafka] (earliest or latest)",
    ),
    (
        "enable.auto.offset.store",
        "the binder stores an offset only after its message was processed (at-least-once)",
    ),
];

/// Values the binder's guarantees depend on: `(property, allowed, why)`.
const REQUIRED: [(&str, &[&str], &str); 2] = [
    (
        "enable.auto.commit",
        &["true"],
        "stored offsets are committed by librdkafka's auto-commit; tune `auto.commit.interval.ms` instead",
    ),
    (
        "acks",
        &["all", "-1"],
        "a send is confirmed only once every in-sync replica has it",
    ),
];

/// Adds a problem for each property the binder owns or needs unchanged,
/// and for each one librdkafka itself rejects.
pub(crate) fn check_properties(properties: &Properties, path: &str, problems: &mut Vec<Problem>) {
    for (name, value) in properties.iter() {
        let at = format!("{path}.\"{name}\"");
        if let Some((_, why)) = OWNED.iter().find(|(owned, _)| *owned == name) {
            problems.push(
                Problem::new(at, format!("property `{name}` is set by the Kafka binder"))
                    .hint(*why),
            );
        } else if let Some((_, allowed, why)) =
            REQUIRED.iter().find(|(required, _, _)| *required == name)
        {
            if !allowed.contains(&value.to_ascii_lowercase().as_str()) {
                problems.push(
                    Problem::new(at, format!("`{name}` must be {}", allowed.join(" or ")))
                        .hint(*why),
                );
            }
        } else {
            // librdkafka validates names and values without connecting.
            let mut config = ClientConfig::new();
            config.set(name, value);
            if let Err(error) = config.create_native_config() {
                let shown = if is_secret(name) { "***" } else { value };
                // librdkafka's own text (without the value, which may be secret).
                let why = match error {
                    KafkaError::ClientConfig(_, description, _, _) => description,
                    other => other.to_string(),
                };
                problems.push(Problem::new(
                    at,
                    format!("librdkafka rejects `{name}` = `{shown}`: {why}"),
                ));
            }
        }
    }
}

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// The `max.poll.interval.ms` a binding's consumer runs with: binding
/// properties over the binder's `consumer-properties` over `properties`,
/// else librdkafka's default (300 s). A value librdkafka would reject is
/// reported by the property checks; here it counts as the default.
pub(crate) fn max_poll_interval(
    settings: &KafkaSettings,
    options: &KafkaBindingOptions,
) -> Duration {
    const NAME: &str = "max.poll.interval.ms";
    [
        &options.properties,
        &settings.consumer_properties,
        &settings.properties,
    ]
    .into_iter()
    .find_map(|properties| properties.get(NAME))
    .and_then(|value| value.trim().parse::<u64>().ok())
    .map_or(DEFAULT_MAX_POLL_INTERVAL, Duration::from_millis)
}

/// Checks of `[binders.NAME]` beyond types.
pub(crate) fn check_settings(settings: &KafkaSettings, path: &str, problems: &mut Vec<Problem>) {
    if settings.brokers.split(',').all(|b| b.trim().is_empty()) {
        problems.push(
            Problem::new(format!("{path}.brokers"), "no broker given")
                .hint("such as `127.0.0.1:9092`"),
        );
    }
    for (key, value) in [
        ("partitions", settings.partitions),
        ("replication-factor", settings.replication_factor),
    ] {
        if value == 0 {
            problems.push(Problem::new(
                format!("{path}.{key}"),
                format!("{key} must be at least 1"),
            ));
        }
    }
    check_properties(
        &settings.properties,
        &format!("{path}.properties"),
        problems,
    );
    check_properties(
        &settings.consumer_properties,
        &format!("{path}.consumer-properties"),
        problems,
    );
    check_properties(
        &settings.producer_properties,
        &format!("{path}.producer-properties"),
        problems,
    );
}

/// Checks of `[bindings.NAME.kafka]` beyond types.
pub(crate) fn check_binding_options(
    options: &KafkaBindingOptions,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in [
        ("partitions", options.partitions),
        ("replication-factor", options.replication_factor),
    ] {
        if value == Some(0) {
            problems.push(Problem::new(
                format!("{path}.{key}"),
                format!("{key} must be at least 1"),
            ));
        }
    }
    check_properties(&options.properties, &format!("{path}.properties"), problems);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindery_core::registry::parse_options;
    use serde_json::json;

    #[test]
    fn a14_delivery_patience_is_the_consumers_max_poll_interval() {
        use crate::KafkaProvider;
        use bindery_core::registry::BinderProvider;
        let patience = |settings: serde_json::Value, options: serde_json::Value| {
            let settings: KafkaSettings = parse_options(&settings).unwrap();
            let options: KafkaBindingOptions = parse_options(&options).unwrap();
            KafkaProvider::delivery_patience(&settings, &options).map(|p| p.limit)
        };
        assert_eq!(
            patience(json!({}), json!({})),
            Some(Duration::from_secs(300)),
            "librdkafka's default"
        );
        let binder = json!({
            "properties": { "max.poll.interval.ms": 20000 },
            "consumer-properties": { "max.poll.interval.ms": "15000" }
        });
        assert_eq!(
            patience(binder.clone(), json!({})),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            patience(
                json!({ "properties": { "max.poll.interval.ms": 20000 } }),
                json!({})
            ),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            patience(
                binder,
                json!({ "properties": { "max.poll.interval.ms": 10000 } })
            ),
            Some(Duration::from_secs(10)),
            "the binding's own properties win"
        );
    }

    #[test]
    fn defaults_and_stringified_values() {
        let settings: KafkaSettings = parse_options(&json!({
            "properties": { "session.timeout.ms": 6000, "enable.partition.eof": false, "client.id": "x" },
            "operation-timeout": "2s"
        }))
        .unwrap();
        assert_eq!(settings.brokers, "127.0.0.1:9092");
        assert!(settings.auto_create_topics);
        assert_eq!(settings.properties.get("session.timeout.ms"), Some("6000"));
        assert_eq!(
            settings.properties.get("enable.partition.eof"),
            Some("false")
        );
        assert_eq!(settings.operation_timeout, Duration::from_secs(2));
        let options: KafkaBindingOptions =
            parse_options(&json!({ "start-offset": "latest" })).unwrap();
        assert_eq!(options.start_offset, Some(StartOffset::Latest));
    }

    #[test]
    fn rejects_owned_and_weakening_properties() {
        let properties: Properties = [
            ("enable.auto.offset.store", "true"),
            ("group.id", "x"),
            ("enable.auto.commit", "false"),
            ("acks", "1"),
            ("sesion.timeout.ms", "10"),
            ("linger.ms", "5"),
        ]
        .into_iter()
        .collect();
        let mut problems = Vec::new();
        check_properties(&properties, "binders.k.properties", &mut problems);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.contains("enable.auto.offset.store") && t.contains("processed"))
        );
        assert!(text.iter().any(|t| t.contains("group.id")));
        assert!(
            text.iter()
                .any(|t| t.contains("enable.auto.commit") && t.contains("auto.commit.interval.ms"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("sesion.timeout.ms") && t.contains("librdkafka"))
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let properties: Properties = [("sasl.password", "hunter2"), ("sasl.username", "me")]
            .into_iter()
            .collect();
        let shown = format!("{properties:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***") && shown.contains("me"), "{shown}");
        let mut problems = Vec::new();
        let bad: Properties = [("sasl.passwordx", "hunter2")].into_iter().collect();
        check_properties(&bad, "p", &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(
            problems.iter().all(|p| !p.to_string().contains("hunter2")),
            "{problems:?}"
        );
    }
}
