//! The MQTT binder of bindery (`type = "mqtt"`), on
//! [rumqttc](https://docs.rs/rumqttc) with MQTT 5.
//!
//! - A destination `orders` is a topic prefix: a message with routing key
//!   `item.update` is published to `orders/item/update`, one without to
//!   `orders`. Binding patterns become topic filters (`*` → `+`, `#` → `#`),
//!   so `item.*` subscribes to `orders/item/+`.
//! - A group is a shared subscription `$share/<group>/<filter>`. Each
//!   consumer binding is one client with a persistent session
//!   (`clean_start = false`, `session-expiry`), named
//!   `<client-id-prefix>.<destination>.<group>.<slot>`; a consumer bound
//!   again takes the lowest free slot of its process and resumes that
//!   session. An anonymous subscription is a plain subscription with a clean
//!   session that ends with its connection.
//! - QoS 1 both ways with manual acks: a delivery is acknowledged (PUBACK)
//!   when the runtime acknowledges it; a send's confirmation completes on
//!   the broker's PUBACK. `prefetch` is the client's receive maximum.
//! - Headers are MQTT 5 user properties, `contentType` the content-type
//!   property, the key the user property `x-bindery-key`; see [`mapping`].
//! - Dead letters go to the topic `<destination>.<group>.dlq`, beside the
//!   destination's topic tree (under it, `<destination>/#` would take them).
//!
//! What MQTT cannot do, declared in [`MqttProvider::CAPABILITIES`]: a nack
//! with requeue cannot give one message back to the broker (the message
//! stays unacknowledged in the session and the same consumer gets it again);
//! the broker shares a group's messages among members by turns, not by who
//! has room (no fair dispatch); redrive cannot address one group (it
//! publishes to the destination).
//! The broker keeps messages only in sessions: what was published before a
//! group's first session existed (and without `required-groups`) is lost.
//!
//! Linked into applications with the facade's `mqtt` feature.

mod consumer;
mod error;
mod health;
pub mod mapping;
mod producer;
mod session;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{
    Binder, Capabilities, ConsumeFrom, Consumer, ConsumerSpec, GroupBinding, Health, Producer,
    PublishTo, kit,
};
use bindery_core::config::{Problem, duration};
use bindery_core::error::BinderError;
use bindery_core::registry::BinderProvider;
use parking_lot::Mutex;
use serde::Deserialize;

pub use error::MqttError;
pub use mapping::redact_url;

use consumer::{MqttConsumer, Plan};
use health::HealthBoard;
use mapping::BrokerUrl;
use producer::{MqttProducer, Publisher, Target};
use session::{ClientConfig, Slot};

/// The binder type name.
pub const TYPE: &str = "mqtt";

/// The group whose shared subscription reads a group's dead letters.
pub const DEAD_LETTER_READER: &str = "bindery-dlq-reader";

/// `[binders.NAME]` settings of an MQTT binder.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MqttSettings {
    /// The broker: `mqtt://[user[:password]@]host[:port]`. Default
    /// `mqtt://127.0.0.1:1883`. The password never shows in logs, errors or
    /// `Debug`.
    pub url: String,
    /// First part of every client id. Default `bindery`. Processes that
    /// share the broker and the same groups but are different members must
    /// use different prefixes (see the README's notes on slots).
    pub client_id_prefix: String,
    /// How long the broker keeps a group member's session (its subscriptions
    /// and QoS 1 messages) while the member is away. Default 1 day.
    #[serde(with = "duration")]
    pub session_expiry: Duration,
    /// MQTT keep-alive. Default 30 s.
    #[serde(with = "duration")]
    pub keep_alive: Duration,
    /// Longest wait for one connection attempt. Default 10 s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a send waits for its PUBACK, across reconnects, before it
    /// fails as transient. Default 60 s.
    #[serde(with = "duration")]
    pub confirm_timeout: Duration,
    /// First pause between reconnection attempts. Default 500 ms.
    #[serde(with = "duration")]
    pub reconnect_initial_interval: Duration,
    /// Longest pause between reconnection attempts. Default 30 s.
    #[serde(with = "duration")]
    pub reconnect_max_interval: Duration,
    /// Largest packet the clients accept, in bytes. Default 16 MiB.
    pub max_packet_size: u32,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".to_owned(),
            client_id_prefix: "bindery".to_owned(),
            session_expiry: Duration::from_secs(24 * 3600),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(60),
            reconnect_initial_interval: Duration::from_millis(500),
            reconnect_max_interval: Duration::from_secs(30),
            max_packet_size: 16 * 1024 * 1024,
        }
    }
}

impl MqttSettings {
    /// Settings for the broker at `url`, the rest default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets the client id prefix.
    pub fn client_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.client_id_prefix = prefix.into();
        self
    }

    /// Sets the reconnect back-off.
    pub fn reconnect_interval(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial_interval = initial;
        self.reconnect_max_interval = max;
        self
    }

    fn client_config(&self) -> Result<ClientConfig, MqttError> {
        Ok(ClientConfig {
            url: BrokerUrl::parse(&self.url)?,
            client_id: self.client_id_prefix.clone(),
            keep_alive: self.keep_alive,
            connect_timeout: self.connect_timeout,
            session_expiry: session_seconds(self.session_expiry),
            max_packet_size: self.max_packet_size,
            reconnect_initial: self.reconnect_initial_interval,
            reconnect_max: self.reconnect_max_interval,
        })
    }
}

impl fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("url", &redact_url(&self.url))
            .field("client_id_prefix", &self.client_id_prefix)
            .field("session_expiry", &self.session_expiry)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

fn session_seconds(expiry: Duration) -> u32 {
    u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// `[bindings.NAME.mqtt]`: the MQTT binder has no binding options yet.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MqttBindingOptions {}

/// How long the publishing client's session outlives a lost connection, so
/// that unacknowledged publishes are resent into it after a reconnect.
const PUBLISHER_SESSION_EXPIRY: u32 = 300;

/// The MQTT binder.
pub struct MqttBinder {
    name: String,
    settings: MqttSettings,
    config: ClientConfig,
    health: HealthBoard,
    publisher: tokio::sync::Mutex<Option<Arc<Publisher>>>,
    publisher_now: Mutex<Option<Arc<Publisher>>>,
}

impl MqttBinder {
    /// A binder named `name` (for logs). Nothing connects yet.
    pub fn new(name: &str, settings: MqttSettings) -> Result<Self, MqttError> {
        Ok(Self {
            name: name.to_owned(),
            config: settings.client_config()?,
            settings,
            health: HealthBoard::default(),
            publisher: tokio::sync::Mutex::new(None),
            publisher_now: Mutex::new(None),
        })
    }

    /// Connects the publishing client, failing when the broker does not
    /// answer within `connect-timeout`.
    pub async fn connect(&self) -> Result<(), BinderError> {
        self.publisher().await.map(drop)
    }

    async fn publisher(&self) -> Result<Arc<Publisher>, BinderError> {
        let mut slot = self.publisher.lock().await;
        let publisher = match slot.as_ref() {
            Some(publisher) => publisher.clone(),
            None => {
                let id = kit::anonymous_name(&format!("{}.pub", self.settings.client_id_prefix));
                let config = self.config.with_client(id, PUBLISHER_SESSION_EXPIRY);
                let health = self
                    .health
                    .slot(&format!("binder `{}` publishing", self.name));
                let publisher = Arc::new(Publisher::start(
                    config,
                    health,
                    self.settings.confirm_timeout,
                ));
                *slot = Some(publisher.clone());
                *self.publisher_now.lock() = Some(publisher.clone());
                publisher
            }
        };
        publisher
            .wait_connected(
                self.config.connect_timeout,
                &format!("connecting the publisher of binder `{}`", self.name),
            )
            .await?;
        Ok(publisher)
    }

    /// Makes sure the group's first member session exists with a
    /// subscription to `filters`, so QoS 1 messages published before any
    /// member binds are kept for the group.
    async fn provision_group(
        &self,
        destination: &str,
        group: &str,
        filters: &[String],
    ) -> Result<(), BinderError> {
        let base = session::member_base(&self.settings.client_id_prefix, destination, group);
        if Slot::first_is_held(&self.config.broker(), &base) {
            return Ok(()); // a member of this process has the session open
        }
        let config = self.config.with_client(
            session::slot_client_id(&base, 0),
            self.config.session_expiry,
        );
        session::provision(&config, filters).await?;
        Ok(())
    }

    fn group_filters(
        spec: &ConsumerSpec,
        destination: &str,
        group: &str,
    ) -> Result<Vec<String>, MqttError> {
        spec.routing_keys
            .iter()
            .map(|p| {
                mapping::topic_filter(&spec.binding, destination, p)
                    .map(|f| mapping::shared(group, &f))
            })
            .collect()
    }

    async fn bind_destination(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        check_names(&spec.binding, &spec.destination, spec.group.as_deref())?;
        let prefetch = spec.prefetch;
        let plan = match &spec.group {
            Some(group) => {
                let filters = Self::group_filters(spec, &spec.destination, group)?;
                let catch_all = mapping::shared(group, &format!("{}/#", spec.destination));
                let unsubscribe = if filters.contains(&catch_all) {
                    Vec::new()
                } else {
                    vec![catch_all]
                };
                let base =
                    session::member_base(&self.settings.client_id_prefix, &spec.destination, group);
                let slot = Slot::claim(&self.config.broker(), &base).await;
                Plan {
                    destination: spec.destination.clone(),
                    filters,
                    unsubscribe,
                    clean_start: false,
                    prefetch,
                    config: self
                        .config
                        .with_client(slot.client_id(), self.config.session_expiry),
                    slot: Some(Arc::new(slot)),
                }
            }
            None => {
                let filters = spec
                    .routing_keys
                    .iter()
                    .map(|p| mapping::topic_filter(&spec.binding, &spec.destination, p))
                    .collect::<Result<Vec<_>, _>>()?;
                let id =
                    kit::anonymous_name(&format!("{}.anonymous", self.settings.client_id_prefix));
                Plan {
                    destination: spec.destination.clone(),
                    filters,
                    unsubscribe: Vec::new(),
                    clean_start: true,
                    prefetch,
                    config: self.config.with_client(id, 0),
                    slot: None,
                }
            }
        };
        self.start_consumer(plan, &spec.binding).await
    }

    async fn start_consumer(
        &self,
        plan: Plan,
        binding: &str,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        let health = self
            .health
            .slot(&format!("binder `{}`, consumer of `{binding}`", self.name));
        Ok(Box::new(MqttConsumer::bind(plan, health).await?))
    }

    async fn bind_dead_letters(
        &self,
        of: GroupBinding<'_>,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        let topic = self.dead_letter_name(of);
        let filters = vec![mapping::shared(DEAD_LETTER_READER, &topic)];
        let base =
            session::member_base(&self.settings.client_id_prefix, &topic, DEAD_LETTER_READER);
        let slot = Slot::claim(&self.config.broker(), &base).await;
        let plan = Plan {
            destination: topic,
            filters,
            unsubscribe: Vec::new(),
            clean_start: false,
            prefetch: of.spec().prefetch,
            config: self
                .config
                .with_client(slot.client_id(), self.config.session_expiry),
            slot: Some(Arc::new(slot)),
        };
        self.start_consumer(plan, &of.spec().binding).await
    }
}

/// Fails when `destination` or `group` cannot be part of MQTT topics and
/// shared-subscription filters.
fn check_names(binding: &str, destination: &str, group: Option<&str>) -> Result<(), MqttError> {
    if let Some(reason) = mapping::topic_problem(destination) {
        return Err(MqttError::Name {
            binding: binding.to_owned(),
            what: "destination",
            name: destination.to_owned(),
            reason,
        });
    }
    if let Some(group) = group {
        if group.is_empty() || group.contains(['/', '+', '#']) || !mapping::mqtt_safe(group) {
            return Err(MqttError::Name {
                binding: binding.to_owned(),
                what: "group",
                name: group.to_owned(),
                reason: "a shared-subscription name may not be empty or contain `/`, `+`, `#` or control characters",
            });
        }
    }
    Ok(())
}

impl fmt::Debug for MqttBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttBinder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Binder for MqttBinder {
    fn binder_type(&self) -> &'static str {
        TYPE
    }

    fn capabilities(&self) -> Capabilities {
        MqttProvider::CAPABILITIES
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        match from {
            ConsumeFrom::Destination(spec) => self.bind_destination(spec).await,
            ConsumeFrom::DeadLetters(of) => self.bind_dead_letters(of).await,
        }
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        let publisher = self.publisher().await?;
        let target = match to {
            PublishTo::Destination(spec) => {
                check_names(&spec.binding, &spec.destination, None)?;
                for group in &spec.required_groups {
                    check_names(&spec.binding, &spec.destination, Some(group))?;
                    let filter = mapping::shared(group, &format!("{}/#", spec.destination));
                    self.provision_group(&spec.destination, group, &[filter])
                        .await?;
                }
                Target::Destination(spec.destination.clone())
            }
            PublishTo::DeadLetters(of) => {
                // The dead-letter reader's session exists before the first
                // dead letter is published, so it keeps every one.
                let topic = self.dead_letter_name(of);
                let filter = mapping::shared(DEAD_LETTER_READER, &topic);
                self.provision_group(&topic, DEAD_LETTER_READER, &[filter])
                    .await?;
                Target::Topic(topic)
            }
            // MQTT cannot address one group: redrive publishes to the
            // destination, and every group sees the messages.
            PublishTo::Group(of) => Target::Destination(of.destination().to_owned()),
        };
        Ok(Arc::new(MqttProducer { publisher, target }))
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        // Not `<destination>/<group>/dlq`: under the destination's topic
        // tree, the group's own `<destination>/#` subscription would take
        // its dead letters back. `<destination>.<group>.dlq` is one topic
        // level beside it (and the memory and RabbitMQ binders' name).
        format!("{}.{}.dlq", of.destination(), of.group())
    }

    fn health(&self) -> Health {
        self.health.health()
    }

    async fn shutdown(&self) -> Result<(), BinderError> {
        let publisher = self.publisher.lock().await.take();
        self.publisher_now.lock().take();
        if let Some(publisher) = publisher {
            publisher.flush().await;
            publisher.close().await;
        }
        Ok(())
    }
}

/// Registers `type = "mqtt"`.
#[derive(Debug)]
pub struct MqttProvider;

impl BinderProvider for MqttProvider {
    const TYPE: &'static str = TYPE;
    /// No single-message requeue (MQTT has no way to give one message
    /// back), no fair dispatch (Mosquitto hands a shared subscription's
    /// messages to the members by turns when they are published, and queues
    /// a busy member's share in its session instead of giving it to a free
    /// member), no group redrive (redrive publishes to the destination), no
    /// partitions.
    const CAPABILITIES: Capabilities = Capabilities::all()
        .with_requeue_single(false)
        .with_fair_dispatch(false)
        .with_group_redrive(false)
        .with_partitions(false);
    type Settings = MqttSettings;
    type BindingOptions = MqttBindingOptions;

    fn create(name: &str, settings: MqttSettings) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(MqttBinder::new(name, settings)?))
    }

    fn check_settings(settings: &MqttSettings, path: &str, problems: &mut Vec<Problem>) {
        if let Err(error) = BrokerUrl::parse(&settings.url) {
            problems.push(Problem::new(format!("{path}.url"), error.to_string()));
        }
        if settings.client_id_prefix.is_empty() {
            problems.push(Problem::new(
                format!("{path}.client-id-prefix"),
                "client-id-prefix must not be empty",
            ));
        }
        if settings.session_expiry.as_secs() == 0 {
            problems.push(Problem::new(
                format!("{path}.session-expiry"),
                "session-expiry must be at least 1s: group members keep their messages in persistent sessions",
            ));
        }
    }
}

bindery_core::register_binder!(MqttProvider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_bad_settings_without_the_password() {
        let mut settings = MqttSettings::new("mqtt://app:s3cret@broker:99999");
        settings.session_expiry = Duration::ZERO;
        let mut problems = Vec::new();
        MqttProvider::check_settings(&settings, "binders.mqtt", &mut problems);
        let text: Vec<String> = problems.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(text.iter().all(|t| !t.contains("s3cret")), "{text:?}");
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn names_mqtt_cannot_carry_are_refused() {
        assert!(check_names("b", "orders", Some("billing")).is_ok());
        let error = BinderError::from(check_names("b", "orders/#", None).unwrap_err());
        assert_eq!(
            error.kind(),
            bindery_core::error::BinderErrorKind::InvalidOptions
        );
        assert!(check_names("b", "orders", Some("a/b")).is_err());
    }

    #[test]
    fn capabilities_say_what_mqtt_cannot_do() {
        let caps = MqttProvider::CAPABILITIES;
        assert!(!caps.requeue_single && !caps.fair_dispatch);
        assert!(!caps.group_redrive && !caps.partitions);
    }
}
