//! `[binders.NAME]` settings and `[bindings.NAME.rabbitmq]` options, named
//! as Spring Cloud Stream's RabbitMQ binder names them, in kebab-case.

use std::fmt;
use std::time::Duration;

use bindery_core::config::{Problem, duration};
use serde::{Deserialize, Deserializer};

/// `[binders.NAME]` settings of a RabbitMQ binder (`type = "rabbitmq"`).
///
/// The URIs may hold a secret as `${VAR}`; the password never appears in
/// logs or errors (see [`redact_uri`]).
#[derive(Clone, Deserialize)]
#[serde(from = "RawSettings")]
#[non_exhaustive]
pub struct RabbitSettings {
    /// The broker, as `amqp://user:password@host:port/vhost`. Default
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`. lapin reads `heartbeat`,
    /// `frame_max`, `channel_max` and `connection_timeout` from the query.
    /// Not together with `addresses`.
    pub uri: String,
    /// The nodes of a cluster, as AMQP URIs like `uri`, meant as Spring's
    /// `spring.rabbitmq.addresses`: every connection attempt (the first
    /// and each reconnection) tries them in order until one answers,
    /// starting with the one after the address whose connection was lost
    /// last. Empty (the default) means `uri` alone. In a file a list; in an
    /// environment variable one string, comma-separated.
    pub addresses: Vec<String>,
    /// Whether `uri` was given (by [`RabbitSettings::new`] or in the
    /// configuration) rather than defaulted, so that giving it beside
    /// `addresses` can be reported.
    uri_given: bool,
    /// Prefix of the connection names the broker shows (management UI,
    /// `rabbitmqctl list_connections`). Default `bindery`.
    pub connection_name: String,
    /// First pause between reconnection attempts. Default 500 ms.
    #[serde(with = "duration")]
    pub reconnect_initial_interval: Duration,
    /// Longest pause between reconnection attempts. Default 30 s.
    #[serde(with = "duration")]
    pub reconnect_max_interval: Duration,
    /// How long one connection attempt may take. Default 10 s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a send may wait for the broker's confirm, republishing it
    /// over new connections while the broker is away, before it fails as
    /// transient (the runtime then hands the input back). Default 60 s.
    #[serde(with = "duration")]
    pub confirm_timeout: Duration,
    /// The broker's `consumer_timeout`: how long it lets a consumer hold a
    /// delivery unacknowledged before it closes the channel. This does not
    /// change the broker; it tells bindery the broker's value, so that
    /// validation can warn about retry back-offs longer than it. Default
    /// 30 min, RabbitMQ's default.
    #[serde(with = "duration")]
    pub consumer_timeout: Duration,
}

/// The broker when neither `uri` nor `addresses` is given.
const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Default for RabbitSettings {
    fn default() -> Self {
        Self {
            uri: DEFAULT_URI.to_owned(),
            addresses: Vec::new(),
            uri_given: false,
            connection_name: "bindery".to_owned(),
            reconnect_initial_interval: Duration::from_millis(500),
            reconnect_max_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(60),
            consumer_timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl RabbitSettings {
    /// Settings for the broker at `uri`, with defaults otherwise.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            uri_given: true,
            ..Self::default()
        }
    }

    /// Settings for the cluster whose nodes are at `addresses` (AMQP
    /// URIs), tried in order (see the field), with defaults otherwise.
    pub fn with_addresses<S: Into<String>>(addresses: impl IntoIterator<Item = S>) -> Self {
        Self {
            addresses: addresses.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The URIs connections are made to, in order: `addresses`, or `uri`
    /// alone when `addresses` is empty.
    pub fn endpoints(&self) -> &[String] {
        if self.addresses.is_empty() {
            std::slice::from_ref(&self.uri)
        } else {
            &self.addresses
        }
    }

    /// Sets the cluster's addresses (see the field); not together with a
    /// URI given to [`new`](Self::new).
    pub fn addresses<S: Into<String>>(mut self, addresses: impl IntoIterator<Item = S>) -> Self {
        self.addresses = addresses.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the connection-name prefix.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// Sets the reconnection back-off bounds.
    pub fn reconnect_interval(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial_interval = initial;
        self.reconnect_max_interval = max;
        self
    }

    /// Sets how long a send may wait for its confirm.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// States the broker's `consumer_timeout` (see the field).
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// The URI with its password masked, for logs and errors; with
    /// `addresses`, every address masked, comma-separated.
    pub fn redacted_uri(&self) -> String {
        self.endpoints()
            .iter()
            .map(|uri| redact_uri(uri))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds a problem for each setting that cannot work.
    pub(crate) fn check(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.uri_given && !self.addresses.is_empty() {
            problems.push(
                Problem::new(
                    format!("{path}.addresses"),
                    format!(
                        "both `uri` ({}) and `addresses` are set; give one of them",
                        redact_uri(&self.uri)
                    ),
                )
                .hint("list every node in `addresses` and remove `uri`, or keep `uri` for a single broker"),
            );
        }
        let checked: Vec<(String, &String)> = if self.addresses.is_empty() {
            vec![(format!("{path}.uri"), &self.uri)]
        } else {
            let mut checked = vec![];
            if self.uri_given {
                checked.push((format!("{path}.uri"), &self.uri));
            }
            checked.extend(
                self.addresses
                    .iter()
                    .enumerate()
                    .map(|(i, uri)| (format!("{path}.addresses[{i}]"), uri)),
            );
            checked
        };
        for (key, uri) in checked {
            if let Err(e) = uri.parse::<lapin::uri::AMQPUri>() {
                problems.push(
                    Problem::new(
                        key,
                        format!(
                            "`{}` is not an AMQP URI: {}",
                            redact_uri(uri),
                            scrub(&e, uri)
                        ),
                    )
                    .hint("write amqp://user:password@host:5672/vhost (%2f for the vhost `/`)"),
                );
            }
        }
        if self.reconnect_initial_interval.is_zero() {
            problems.push(Problem::new(
                format!("{path}.reconnect-initial-interval"),
                "reconnect-initial-interval must be above zero",
            ));
        }
        if self.reconnect_max_interval < self.reconnect_initial_interval {
            problems.push(Problem::new(
                format!("{path}.reconnect-max-interval"),
                "reconnect-max-interval must not be below reconnect-initial-interval",
            ));
        }
        for (key, value) in [
            ("connect-timeout", self.connect_timeout),
            ("confirm-timeout", self.confirm_timeout),
            ("consumer-timeout", self.consumer_timeout),
        ] {
            if value.is_zero() {
                problems.push(Problem::new(
                    format!("{path}.{key}"),
                    format!("{key} must be above zero"),
                ));
            }
        }
    }
}

impl fmt::Debug for RabbitSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSettings")
            .field("uri", &redact_uri(&self.uri))
            .field(
                "addresses",
                &self
                    .addresses
                    .iter()
                    .map(|uri| redact_uri(uri))
                    .collect::<Vec<_>>(),
            )
            .field("connection_name", &self.connection_name)
            .field(
                "reconnect_initial_interval",
                &self.reconnect_initial_interval,
            )
            .field("reconnect_max_interval", &self.reconnect_max_interval)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("consumer_timeout", &self.consumer_timeout)
            .finish()
    }
}

/// `[binders.NAME]` as written: `uri` is optional here, so that giving
/// it beside `addresses` can be told from its default.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct RawSettings {
    uri: Option<String>,
    #[serde(deserialize_with = "uri_list")]
    addresses: Vec<String>,
    connection_name: String,
    #[serde(with = "duration")]
    reconnect_initial_interval: Duration,
    #[serde(with = "duration")]
    reconnect_max_interval: Duration,
    #[serde(with = "duration")]
    connect_timeout: Duration,
    #[serde(with = "duration")]
    confirm_timeout: Duration,
    #[serde(with = "duration")]
    consumer_timeout: Duration,
}

impl Default for RawSettings {
    fn default() -> Self {
        let settings = RabbitSettings::default();
        Self {
            uri: None,
            addresses: settings.addresses,
            connection_name: settings.connection_name,
            reconnect_initial_interval: settings.reconnect_initial_interval,
            reconnect_max_interval: settings.reconnect_max_interval,
            connect_timeout: settings.connect_timeout,
            confirm_timeout: settings.confirm_timeout,
            consumer_timeout: settings.consumer_timeout,
        }
    }
}

impl From<RawSettings> for RabbitSettings {
    fn from(raw: RawSettings) -> Self {
        Self {
            uri_given: raw.uri.is_some(),
            uri: raw.uri.unwrap_or_else(|| DEFAULT_URI.to_owned()),
            addresses: raw.addresses,
            connection_name: raw.connection_name,
            reconnect_initial_interval: raw.reconnect_initial_interval,
            reconnect_max_interval: raw.reconnect_max_interval,
            connect_timeout: raw.connect_timeout,
            confirm_timeout: raw.confirm_timeout,
            consumer_timeout: raw.consumer_timeout,
        }
    }
}

/// `addresses`: a list of URIs, or one string of comma-separated URIs
/// (what an environment variable can hold).
fn uri_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    let list = match List::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom(
            "expected a list of AMQP URIs, or one string of comma-separated URIs",
        )
    })? {
        List::One(text) => text.split(',').map(str::to_owned).collect(),
        List::Many(list) => list,
    };
    Ok(list
        .into_iter()
        .map(|uri| uri.trim().to_owned())
        .filter(|uri| !uri.is_empty())
        .collect())
}

/// Masks the password of an AMQP URI: `amqp://user:****@host/vhost`.
///
/// Text that is not a URI with credentials comes back unchanged.
pub fn redact_uri(uri: &str) -> String {
    match password_span(uri) {
        Some((start, end)) => format!("{}****{}", &uri[..start], &uri[end..]),
        None => uri.to_owned(),
    }
}

/// Masks every occurrence of `uri`'s password in `text` (an error message
/// from a client that may quote what it was given).
pub(crate) fn scrub(text: &str, uri: &str) -> String {
    match password_span(uri) {
        Some((start, end)) if end > start => text.replace(&uri[start..end], "****"),
        _ => text.to_owned(),
    }
}

/// Where the password of `uri` is, as a byte range.
fn password_span(uri: &str) -> Option<(usize, usize)> {
    let authority_start = uri.find("://")? + 3;
    let rest = &uri[authority_start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    // The last `@` ends the credentials: a password may contain `@`.
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((authority_start + colon + 1, authority_start + at))
}

/// The type of the exchange a destination maps to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ExchangeType {
    /// Routing-key patterns with `*` and `#` (Spring's default).
    #[default]
    Topic,
    /// Exact routing keys.
    Direct,
    /// Every bound queue gets every message.
    Fanout,
    /// Matching on headers; bound without arguments, so every message.
    Headers,
}

impl ExchangeType {
    /// The AMQP name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Headers => "headers",
        }
    }

    pub(crate) fn kind(self) -> lapin::ExchangeKind {
        match self {
            Self::Topic => lapin::ExchangeKind::Topic,
            Self::Direct => lapin::ExchangeKind::Direct,
            Self::Fanout => lapin::ExchangeKind::Fanout,
            Self::Headers => lapin::ExchangeKind::Headers,
        }
    }
}

/// `[bindings.NAME.rabbitmq]`: how the binding's exchange and queues are
/// declared. Producers that provision `required-groups` should carry the
/// same queue options as the consumers of those groups, as in Spring: the
/// broker refuses to re-declare a queue with other arguments.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct RabbitBindingOptions {
    /// The destination exchange's type: `topic` (default), `direct`,
    /// `fanout` or `headers`.
    pub exchange_type: ExchangeType,
    /// Declares group queues as quorum queues (`x-queue-type = quorum`).
    /// Anonymous queues stay classic. Default false.
    pub quorum: bool,
    /// Declares the dead-letter queue as a quorum queue (Spring's
    /// `dlqQuorum.enabled`). Default false, as in Spring: then the DLQ is a
    /// classic queue on the node that declared it, and while that node is
    /// down a consumer of the group cannot subscribe, in a cluster too,
    /// since it declares its DLQ first. With `quorum`, set this for a group
    /// that survives the loss of any node.
    pub dlq_quorum: bool,
    /// Messages older than this expire from the group queue
    /// (`x-message-ttl`; milliseconds or `"30s"`). Default none.
    #[serde(deserialize_with = "optional_duration")]
    pub ttl: Option<Duration>,
    /// Most ready messages in the group queue (`x-max-length`); the broker
    /// drops (or dead-letters) the oldest beyond it. Default none.
    pub max_length: Option<u64>,
    /// Only one consumer of the group queue receives at a time
    /// (`x-single-active-consumer`). Default false.
    pub single_active_consumer: bool,
    /// The dead-letter queue's name. Default `<queue>.dlq`, that is
    /// `<destination>.<group>.dlq`.
    pub dead_letter_queue_name: Option<String>,
    /// Group queues survive broker restarts. Default true; false declares
    /// them non-durable and auto-deleted, as Spring does.
    pub durable_subscription: bool,
    /// Names the group queue `<group>` instead of `<destination>.<group>`.
    /// Default false.
    pub queue_name_group_only: bool,
    /// Declares the group queue with `x-dead-letter-exchange = DLX` and
    /// `x-dead-letter-routing-key = <queue>`, so messages the broker
    /// rejects or expires go to the dead-letter queue. Default true. The
    /// same on producers (for `required-groups`) and on every consumer of
    /// the group, whatever their `dead-letter` setting: the broker refuses
    /// to declare a queue again with other arguments.
    pub auto_bind_dlq: bool,
}

impl Default for RabbitBindingOptions {
    fn default() -> Self {
        Self {
            exchange_type: ExchangeType::Topic,
            quorum: false,
            dlq_quorum: false,
            ttl: None,
            max_length: None,
            single_active_consumer: false,
            dead_letter_queue_name: None,
            durable_subscription: true,
            queue_name_group_only: false,
            auto_bind_dlq: true,
        }
    }
}

impl RabbitBindingOptions {
    /// Adds a problem for each option that cannot work.
    pub(crate) fn check(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.quorum && !self.durable_subscription {
            problems.push(
                Problem::new(
                    format!("{path}.quorum"),
                    "quorum queues are always durable, but durable-subscription is false",
                )
                .hint("remove one of quorum = true and durable-subscription = false"),
            );
        }
        if let Some(ttl) = self.ttl {
            if ttl.as_millis() > u128::from(u32::MAX) {
                problems.push(Problem::new(
                    format!("{path}.ttl"),
                    "ttl is above RabbitMQ's maximum of 2^32-1 ms (about 49 days)",
                ));
            }
        }
        if let Some(name) = &self.dead_letter_queue_name {
            if name.is_empty() || name.len() > 255 {
                problems.push(Problem::new(
                    format!("{path}.dead-letter-queue-name"),
                    "a queue name has 1 to 255 bytes",
                ));
            }
        }
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_uri("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:****@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_uri("amqps://u:p@ss:w@rd@host/vh?heartbeat=10"),
            "amqps://u:****@host/vh?heartbeat=10"
        );
        assert_eq!(redact_uri("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_uri("amqp://host:5672/%2f"), "amqp://host:5672/%2f");
        assert_eq!(redact_uri("not a uri"), "not a uri");
        // A `@` after the authority is not a credential separator.
        assert_eq!(redact_uri("amqp://host/v@h"), "amqp://host/v@h");
    }

    #[test]
    fn scrubs_the_password_from_error_text() {
        let uri = "amqp://guest:t0ps3cret@h/%2f";
        assert_eq!(
            scrub("Invalid URL: 'amqp://guest:t0ps3cret@h/%2f'", uri),
            "Invalid URL: 'amqp://guest:****@h/%2f'"
        );
        assert_eq!(scrub("no secret here", "amqp://h"), "no secret here");
    }

    #[test]
    fn invalid_uri_problem_hides_the_password() {
        let mut problems = Vec::new();
        RabbitSettings::new("amqp://u:hunter2@[bad").check("b", &mut problems);
        let text = problems[0].to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let settings = RabbitSettings::new("amqp://app:hunter2@broker:5672/prod");
        let text = format!("{settings:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("amqp://app:****@broker:5672/prod"), "{text}");
    }

    #[test]
    fn settings_and_options_read_spring_names() {
        let settings: RabbitSettings = serde_json::from_value(serde_json::json!({
            "uri": "amqp://a:b@h/%2f",
            "reconnect-initial-interval": "100ms",
            "confirm-timeout": 5000,
        }))
        .unwrap();
        assert_eq!(
            settings.reconnect_initial_interval,
            Duration::from_millis(100)
        );
        assert_eq!(settings.confirm_timeout, Duration::from_secs(5));
        let options: RabbitBindingOptions = serde_json::from_value(serde_json::json!({
            "exchange-type": "direct",
            "quorum": true,
            "dlq-quorum": true,
            "ttl": 60000,
            "max-length": 10,
            "single-active-consumer": true,
            "dead-letter-queue-name": "parking",
            "queue-name-group-only": true,
        }))
        .unwrap();
        assert_eq!(options.exchange_type, ExchangeType::Direct);
        assert_eq!(options.ttl, Some(Duration::from_secs(60)));
        assert_eq!(options.max_length, Some(10));
        assert!(options.quorum && options.single_active_consumer && options.durable_subscription);
        assert!(options.dlq_quorum);
        assert_eq!(options.dead_letter_queue_name.as_deref(), Some("parking"));
    }

    #[test]
    fn addresses_read_as_a_list_or_one_comma_separated_string() {
        let listed: RabbitSettings = serde_json::from_value(serde_json::json!({
            "addresses": ["amqp://u:p@h1:5672/%2f", "amqp://u:p@h2:5672/%2f"],
        }))
        .unwrap();
        let joined: RabbitSettings = serde_json::from_value(serde_json::json!({
            "addresses": "amqp://u:p@h1:5672/%2f, amqp://u:p@h2:5672/%2f,",
        }))
        .unwrap();
        for settings in [&listed, &joined] {
            assert_eq!(
                settings.endpoints(),
                ["amqp://u:p@h1:5672/%2f", "amqp://u:p@h2:5672/%2f"]
            );
            let mut problems = Vec::new();
            settings.check("binders.rabbit", &mut problems);
            assert!(problems.is_empty(), "{problems:?}");
        }
        // Without addresses, the URI (given or default) is the one endpoint.
        let single: RabbitSettings =
            serde_json::from_value(serde_json::json!({ "uri": "amqp://h3/%2f" })).unwrap();
        assert_eq!(single.endpoints(), ["amqp://h3/%2f"]);
        assert_eq!(RabbitSettings::default().endpoints(), [DEFAULT_URI]);
        assert!(
            serde_json::from_value::<RabbitSettings>(serde_json::json!({ "addresses": 5 }))
                .is_err()
        );
    }

    #[test]
    fn uri_and_addresses_together_are_refused_without_showing_passwords() {
        let from_config: RabbitSettings = serde_json::from_value(serde_json::json!({
            "uri": "amqp://app:hunter2@one/%2f",
            "addresses": ["amqp://app:hunter2@two/%2f"],
        }))
        .unwrap();
        let from_code = RabbitSettings::new("amqp://app:hunter2@one/%2f")
            .addresses(["amqp://app:hunter2@two/%2f"]);
        for settings in [from_config, from_code] {
            let mut problems = Vec::new();
            settings.check("binders.rabbit", &mut problems);
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert_eq!(problems.len(), 1, "{text:#?}");
            assert_eq!(problems[0].path, "binders.rabbit.addresses");
            assert!(text[0].contains("both `uri`"), "{text:#?}");
            assert!(text[0].contains("give one of them"), "{text:#?}");
            assert!(!text[0].contains("hunter2"), "{text:#?}");
        }
        // The default URI beside addresses is not "both".
        let mut problems = Vec::new();
        RabbitSettings::default()
            .addresses(["amqp://two/%2f"])
            .check("b", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn every_address_is_checked_and_redacted() {
        let settings =
            RabbitSettings::with_addresses(["amqp://u:hunter2@h1/%2f", "http://u:hunter2@h2"]);
        let mut problems = Vec::new();
        settings.check("binders.rabbit", &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "binders.rabbit.addresses[1]");
        assert!(!problems[0].to_string().contains("hunter2"), "{problems:?}");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("amqp://u:****@h1/%2f"), "{debug}");
        assert_eq!(
            settings.redacted_uri(),
            "amqp://u:****@h1/%2f,http://u:****@h2"
        );
    }

    #[test]
    fn checks_report_what_cannot_work() {
        let mut problems = Vec::new();
        RabbitSettings::new("http://nope").check("binders.rabbit", &mut problems);
        let options = RabbitBindingOptions {
            quorum: true,
            durable_subscription: false,
            ..RabbitBindingOptions::default()
        };
        options.check("bindings.x.rabbitmq", &mut problems);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{text:#?}");
        assert!(text[0].contains("binders.rabbit.uri"), "{text:#?}");
        assert!(text[1].contains("bindings.x.rabbitmq.quorum"), "{text:#?}");
    }
}
