//! The Redis Streams binder of bindery (`type = "redis"`), on the
//! [`redis`] crate.
//!
//! - A destination is a stream of the same name (created by the first
//!   publish or group). Each message is one entry; the layout is in
//!   [`entry`], so other clients can produce and consume.
//! - A group is a consumer group (`XGROUP CREATE ... $ MKSTREAM`: a new
//!   group sees what follows its creation, as a new RabbitMQ queue does).
//!   Consumers read with `XREADGROUP` and acknowledge with `XACK`. Each
//!   consumer is a Redis consumer of its own name; competing consumers of a
//!   group share its entries, and a consumer reads only as many entries as
//!   it has free prefetch, so a free consumer takes the next entry (fair
//!   dispatch).
//! - Prefetch is the `COUNT` of each read and a bound on unacknowledged
//!   deliveries a consumer holds.
//! - A consumer that dies (SIGKILL, lost host) leaves its entries pending;
//!   every consumer of the group runs `XAUTOCLAIM` each `claim-interval` and
//!   takes entries idle for `min-idle` or longer. Live consumers refresh the
//!   idle time of what they hold (`XCLAIM ... JUSTID`), so a slow function
//!   never has its message claimed by another consumer. A consumer dropped
//!   or cancelled hands its unacknowledged entries back at once (they are
//!   claimed by the next sweep of any consumer of the group).
//! - A nack with requeue redelivers the message locally, in front of
//!   everything newer: it stays pending on this consumer, so only that
//!   message comes back, and it goes back to the group if the consumer
//!   goes away.
//! - Dead letters go to the stream `<destination>.<group>.dlq`, read in the
//!   group `<group>` from its start.
//! - Redrive publishes to the destination with the field `target-group`;
//!   consumers of other groups acknowledge such entries unseen, so only that
//!   group receives them.
//! - Routing keys are the `routing-key` field, matched by the shared AMQP
//!   topic matcher; a group acknowledges entries that do not match.
//! - Anonymous subscriptions read with `XREAD` from `$` as of the
//!   subscription (the stream's last ID, taken when binding), without a
//!   group: nothing durable is left behind.
//! - A publish completes when `XADD` returns; with `wait-replicas` set, once
//!   `WAIT` reports that many replicas have it. `max-len` trims the stream
//!   (`MAXLEN ~`).
//! - A lost connection is re-established with back-off. Entries a consumer
//!   had read but not acknowledged stay pending; after reconnecting it
//!   reads its own pending entries (ID `0`) first, then new ones (`>`).
//!
//! # Configuration
//!
//! ```toml
//! [binders.cache]
//! type = "redis"
//! url = "redis://app:${REDIS_PASSWORD}@127.0.0.1:6379/0"
//! claim-interval = "1s"       # refresh held entries, claim idle ones
//!
//! [bindings.enrich-in-0.redis]
//! min-idle = "30s"            # a dead consumer's entries are claimed after this
//!
//! [bindings.enrich-out-0.redis]
//! max-len = 1000000           # XADD ... MAXLEN ~ 1000000
//! wait-replicas = 1           # complete a publish after WAIT 1 <wait-timeout>
//! wait-timeout = "500ms"
//! ```
//!
//! Without configuration files, a binder is a value like any other:
//!
//! ```no_run
//! use bindery_core::binder::{BinderExt, ConsumerSpec, ProducerSpec};
//! use bindery_core::message::Message;
//! use bindery_redis::{RedisBinder, RedisSettings};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let binder = RedisBinder::new("cache", RedisSettings::new("redis://127.0.0.1:6379"))?;
//! let producer = binder
//!     .producer(&ProducerSpec::new("orders-out", "orders").required_groups(["billing"]))
//!     .await?;
//! producer.send(Message::new("hello".into())).await?.await?;
//! let mut consumer = binder
//!     .consumer(&ConsumerSpec::new("orders-in", "orders").group("billing"))
//!     .await?;
//! if let Some(delivery) = consumer.recv().await {
//!     delivery.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `broker-tests`: compiles the tests that need a running Redis
//!   (`BINDERY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; start one
//!   with `scripts/brokers/ensure-redis.sh`) and the consumer process the
//!   SIGKILL test runs. The workspace test command turns it on.
//!
//! # Why the `redis` crate
//!
//! `redis` (redis-rs) is the most used Rust client, with the stream
//! commands and their replies, tokio multiplexed connections and a
//! reconnecting `ConnectionManager`; the binder sends raw commands where it
//! needs reply shapes the typed helpers do not cover (entries trimmed while
//! pending). `fred` would bring its own connection pool, reconnect policy
//! and event loop, which the binder would have to fit its per-consumer
//! blocking connections and its own back-off into; it adds nothing the
//! binder uses.

mod consumer;
pub mod entry;
mod error;
mod producer;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{
    Binder, Capabilities, ConsumeFrom, Consumer, GroupBinding, Health, Producer, PublishTo,
};
use bindery_core::config::{Problem, duration};
use bindery_core::error::BinderError;
use bindery_core::registry::BinderProvider;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use serde::Deserialize;
use tokio::sync::OnceCell;

pub use error::{RedisError, Result, redact_url};

pub use consumer::RETURNED_CONSUMER;
use consumer::{ReadFrom, RedisConsumer};
use producer::RedisProducer;

/// The binder type name.
pub const TYPE: &str = "redis";

/// Dead-letter header: the ID the entry had in its original stream.
pub const ORIGINAL_ID: &str = "x-original-id";

/// `[binders.NAME]` settings of a Redis binder.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// The server, `redis://[user:password@]host[:port][/db]`. Default
    /// `redis://127.0.0.1:6379`. Logs and errors show it with the password
    /// redacted.
    pub url: String,
    /// How often each group consumer refreshes what it holds and claims
    /// entries idle for `min-idle` (`XAUTOCLAIM`). Default 1 s.
    #[serde(with = "duration")]
    pub claim_interval: Duration,
    /// How long one `XREADGROUP` / `XREAD` blocks waiting for entries.
    /// Default 1 s.
    #[serde(with = "duration")]
    pub block: Duration,
    /// How long a command may wait for its reply before the connection is
    /// considered lost. Default 10 s.
    #[serde(with = "duration")]
    pub response_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            claim_interval: Duration::from_secs(1),
            block: Duration::from_secs(1),
            response_timeout: Duration::from_secs(10),
        }
    }
}

impl RedisSettings {
    /// The defaults, on the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets `claim-interval`.
    pub fn claim_interval(mut self, interval: Duration) -> Self {
        self.claim_interval = interval;
        self
    }

    /// Sets `block`.
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    /// Sets `response-timeout`.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("claim_interval", &self.claim_interval)
            .field("block", &self.block)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// `[bindings.NAME.redis]`: per-binding options.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisBindingOptions {
    /// Consumer: a pending entry of a consumer that stopped refreshing it
    /// (a dead consumer) is claimed by another after this long. Default 30 s.
    #[serde(with = "duration")]
    pub min_idle: Duration,
    /// Producer: trims the stream to about this many entries on every
    /// publish (`XADD ... MAXLEN ~ n`). Trimming drops the oldest entries
    /// whether or not every group has read them. Default: no trimming.
    pub max_len: Option<u64>,
    /// Producer: a publish completes only once this many replicas have it
    /// (`WAIT`). Default 0: when `XADD` returns.
    pub wait_replicas: u32,
    /// Producer: how long `WAIT` waits for `wait-replicas`; a publish not
    /// replicated by then fails (transient). Default 1 s.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
}

impl Default for RedisBindingOptions {
    fn default() -> Self {
        Self {
            min_idle: Duration::from_secs(30),
            max_len: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

impl RedisBindingOptions {
    /// Sets `min-idle`.
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.min_idle = min_idle;
        self
    }

    /// Sets `max-len` (trimming with `MAXLEN ~`).
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// Sets `wait-replicas` and `wait-timeout`.
    pub fn wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout;
        self
    }
}

/// Numbers consumers and binders so every Redis consumer name is unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// What the binder shares with its consumers and producers.
pub(crate) struct Shared {
    pub(crate) client: redis::Client,
    /// The URL with its password redacted, for logs and errors.
    pub(crate) server: String,
    pub(crate) settings: RedisSettings,
    /// Acks, claims and provisioning: one multiplexed connection that
    /// reconnects by itself.
    ops: OnceCell<ConnectionManager>,
    /// Unique per binder instance: prefix of its consumer names.
    pub(crate) instance: String,
    /// The last connection failure, while not recovered.
    down: Mutex<Option<String>>,
}

impl Shared {
    /// The shared connection, connecting on first use.
    pub(crate) async fn ops(&self) -> Result<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.settings.response_timeout))
            .set_connection_timeout(Some(self.settings.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let manager = self
            .ops
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|e| self.failed("connecting", e))?;
        Ok(manager.clone())
    }

    /// A connection of its own (blocking reads, `WAIT`).
    pub(crate) async fn dedicated(&self, extra_wait: Duration) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.settings.response_timeout + extra_wait))
            .set_connection_timeout(Some(self.settings.response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.failed("connecting", e))
    }

    /// Classifies `error`, noting a lost connection for [`Binder::health`].
    pub(crate) fn failed(&self, context: &str, error: redis::RedisError) -> RedisError {
        let error = RedisError::from_client(&self.server, context, error);
        if error.is_connection() {
            *self.down.lock() = Some(error.to_string());
        }
        error
    }

    /// Notes that a command went through.
    pub(crate) fn succeeded(&self) {
        if self.down.lock().is_some() {
            *self.down.lock() = None;
        }
    }

    pub(crate) fn next_consumer_name(&self) -> String {
        format!(
            "{}-{}",
            self.instance,
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Creates `group` on `stream` (and the stream), starting at `start`
    /// (`$`: what follows; `0`: everything); an existing group is kept.
    pub(crate) async fn ensure_group(&self, stream: &str, group: &str, start: &str) -> Result<()> {
        let mut ops = self.ops().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut ops)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => {
                Err(self.failed(&format!("creating group `{group}` of stream `{stream}`"), e))
            }
        }
    }
}

/// The Redis Streams binder.
pub struct RedisBinder {
    name: String,
    shared: Arc<Shared>,
}

impl RedisBinder {
    /// A binder named `name` on the server of `settings.url`. It connects
    /// when first used.
    pub fn new(name: &str, settings: RedisSettings) -> Result<Self> {
        let server = redact_url(&settings.url);
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| RedisError::InvalidUrl {
                url: server.clone(),
                detail: e.to_string(),
            })?;
        let instance = format!(
            "bindery-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self {
            name: name.to_owned(),
            shared: Arc::new(Shared {
                client,
                server,
                settings,
                ops: OnceCell::new(),
                instance,
                down: Mutex::new(None),
            }),
        })
    }

    /// Connects now and checks that the server answers `PING`, rather
    /// than on first use.
    pub async fn connect(&self) -> Result<()> {
        let mut ops = self.shared.ops().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut ops)
            .await
            .map_err(|e| self.shared.failed("PING", e))?;
        self.shared.succeeded();
        Ok(())
    }

    /// The server's URL with any password redacted.
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    fn dead_letter_stream(of: GroupBinding<'_>) -> String {
        format!("{}.{}.dlq", of.destination(), of.group())
    }
}

impl fmt::Debug for RedisBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBinder")
            .field("name", &self.name)
            .field("server", &self.shared.server)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Binder for RedisBinder {
    fn binder_type(&self) -> &'static str {
        TYPE
    }

    fn capabilities(&self) -> Capabilities {
        RedisProvider::CAPABILITIES
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        let consumer = match from {
            ConsumeFrom::Destination(spec) => {
                let options = spec.options.get::<RedisBindingOptions>()?;
                match &spec.group {
                    Some(group) => {
                        self.shared
                            .ensure_group(&spec.destination, group, "$")
                            .await?;
                        RedisConsumer::start(
                            self.shared.clone(),
                            ReadFrom::Group {
                                stream: spec.destination.clone(),
                                group: group.clone(),
                                min_idle: options.min_idle,
                            },
                            spec,
                        )
                    }
                    None => {
                        let last = consumer::last_id(&self.shared, &spec.destination).await?;
                        RedisConsumer::start(
                            self.shared.clone(),
                            ReadFrom::Anonymous {
                                stream: spec.destination.clone(),
                                after: last,
                            },
                            spec,
                        )
                    }
                }
            }
            ConsumeFrom::DeadLetters(of) => {
                let stream = Self::dead_letter_stream(of);
                let options = of.spec().options.get::<RedisBindingOptions>()?;
                self.shared.ensure_group(&stream, of.group(), "0").await?;
                RedisConsumer::start(
                    self.shared.clone(),
                    ReadFrom::Group {
                        stream,
                        group: of.group().to_owned(),
                        min_idle: options.min_idle,
                    },
                    &bindery_core::binder::ConsumerSpec::new(
                        of.spec().binding.clone(),
                        Self::dead_letter_stream(of),
                    )
                    .prefetch(of.spec().prefetch.get()),
                )
            }
        };
        Ok(Box::new(consumer))
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        let producer = match to {
            PublishTo::Destination(spec) => {
                let options = spec.options.get::<RedisBindingOptions>()?;
                for group in &spec.required_groups {
                    self.shared
                        .ensure_group(&spec.destination, group, "$")
                        .await?;
                }
                RedisProducer::start(self.shared.clone(), spec.destination.clone(), None, options)
                    .await?
            }
            PublishTo::DeadLetters(of) => {
                let stream = Self::dead_letter_stream(of);
                // Dead letters published before anyone reads them are kept
                // for the group: it starts at the stream's beginning.
                self.shared.ensure_group(&stream, of.group(), "0").await?;
                RedisProducer::start(
                    self.shared.clone(),
                    stream,
                    None,
                    RedisBindingOptions::default(),
                )
                .await?
            }
            PublishTo::Group(of) => {
                self.shared
                    .ensure_group(of.destination(), of.group(), "$")
                    .await?;
                RedisProducer::start(
                    self.shared.clone(),
                    of.destination().to_owned(),
                    Some(of.group().to_owned()),
                    RedisBindingOptions::default(),
                )
                .await?
            }
        };
        Ok(Arc::new(producer))
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        Self::dead_letter_stream(of)
    }

    fn health(&self) -> Health {
        match &*self.shared.down.lock() {
            None => Health::Up,
            Some(reason) => Health::Down(reason.clone()),
        }
    }
}

/// Registers `type = "redis"`.
#[derive(Debug)]
pub struct RedisProvider;

impl BinderProvider for RedisProvider {
    const TYPE: &'static str = TYPE;
    /// Queue-like: consumer groups dispatch to whichever consumer reads,
    /// a nack redelivers that message only (locally), and redrive reaches
    /// one group through `target-group`. A stream has no partitions.
    const CAPABILITIES: Capabilities = Capabilities::all();
    type Settings = RedisSettings;
    type BindingOptions = RedisBindingOptions;

    fn create(name: &str, settings: RedisSettings) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(RedisBinder::new(name, settings)?))
    }

    fn check_settings(settings: &RedisSettings, path: &str, problems: &mut Vec<Problem>) {
        if let Err(e) = redis::Client::open(settings.url.as_str()) {
            problems.push(Problem::new(
                format!("{path}.url"),
                format!(
                    "`{}` is not a redis URL ({e}); expected redis://[user:password@]host[:port][/db]",
                    redact_url(&settings.url)
                ),
            ));
        }
        for (key, value) in [
            ("claim-interval", settings.claim_interval),
            ("block", settings.block),
            ("response-timeout", settings.response_timeout),
        ] {
            if value.is_zero() {
                problems.push(Problem::new(
                    format!("{path}.{key}"),
                    format!("{key} must be longer than 0s"),
                ));
            }
        }
    }

    fn check_binding_options(
        options: &RedisBindingOptions,
        path: &str,
        problems: &mut Vec<Problem>,
    ) {
        if options.min_idle.is_zero() {
            problems.push(Problem::new(
                format!("{path}.min-idle"),
                "min-idle must be longer than 0s, or live consumers' messages would be claimed",
            ));
        }
        if options.max_len == Some(0) {
            problems.push(Problem::new(
                format!("{path}.max-len"),
                "max-len must be at least 1 (leave it out for no trimming)",
            ));
        }
        if options.wait_replicas > 0 && options.wait_timeout.is_zero() {
            problems.push(Problem::new(
                format!("{path}.wait-timeout"),
                "wait-timeout must be longer than 0s when wait-replicas is set (WAIT 0 would block forever)",
            ));
        }
    }
}

bindery_core::register_binder!(RedisProvider);
