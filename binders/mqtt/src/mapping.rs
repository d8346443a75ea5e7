//! How bindery's addressing and messages map to MQTT: topics, topic
//! filters, MQTT 5 properties, and the broker url.
//!
//! | bindery | MQTT |
//! |---|---|
//! | destination `orders` | topic prefix `orders` |
//! | routing key `item.update` | topic levels: `orders/item/update` (none: `orders`) |
//! | pattern `item.*` / `audit.#` | filter `orders/item/+` / `orders/audit/#` |
//! | payload | payload |
//! | `contentType` header | MQTT 5 content-type property |
//! | other headers | MQTT 5 user properties (text); bytes as `x-bindery-hex:<name>` in hex |
//! | key | user property `x-bindery-key` (`x-bindery-key-hex` when not UTF-8) |

use bindery_core::message::{HeaderValue, Headers, Message, names};
use bindery_core::routing::RoutingPattern;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

use crate::error::MqttError;

/// The user property that carries the message key.
pub const KEY_PROPERTY: &str = "x-bindery-key";
/// The user property that carries a key that is not UTF-8, in hex.
pub const KEY_HEX_PROPERTY: &str = "x-bindery-key-hex";
/// The prefix of user properties that carry a bytes header in hex.
pub const HEX_PREFIX: &str = "x-bindery-hex:";
/// The user property that carries the routing key where the topic cannot
/// (dead letters, published to `<destination>.<group>.dlq`).
pub const ROUTING_KEY_PROPERTY: &str = "x-bindery-routing-key";

/// The topic a message with `routing_key` is published to on `destination`.
pub fn topic(destination: &str, routing_key: Option<&str>) -> String {
    match routing_key.filter(|k| !k.is_empty()) {
        Some(key) => format!("{destination}/{}", key.replace('.', "/")),
        None => destination.to_owned(),
    }
}

/// The routing key carried by `topic` on `destination`: its levels after
/// the destination, joined by `.`; `None` when the topic is the destination.
pub fn routing_key_of(destination: &str, topic: &str) -> Option<String> {
    let rest = topic.strip_prefix(destination)?.strip_prefix('/')?;
    Some(rest.replace('/', "."))
}

/// The MQTT topic filter of `pattern` on `destination`: `*` becomes `+`,
/// `#` stays `#` (it must be the last word: MQTT allows no other).
pub fn topic_filter(
    binding: &str,
    destination: &str,
    pattern: &RoutingPattern,
) -> Result<String, MqttError> {
    let text = pattern.as_str();
    if text == "#" {
        return Ok(format!("{destination}/#"));
    }
    let words: Vec<&str> = text.split('.').collect();
    let mut levels = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let problem = |reason| MqttError::Pattern {
            binding: binding.to_owned(),
            pattern: text.to_owned(),
            reason,
        };
        match *word {
            "*" => levels.push("+"),
            "#" if i + 1 == words.len() => levels.push("#"),
            "#" => return Err(problem("`#` is allowed only as the last word")),
            w if w.contains(['+', '#', '/']) => {
                return Err(problem("a word may not contain `+`, `#` or `/`"));
            }
            w => levels.push(w),
        }
    }
    Ok(format!("{destination}/{}", levels.join("/")))
}

/// The shared-subscription filter of `group`: `$share/<group>/<filter>`.
pub fn shared(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

/// The MQTT 5 properties of `message`.
pub fn properties(message: &Message, routing_key_property: bool) -> PublishProperties {
    let mut properties = PublishProperties::default();
    for (name, value) in message.headers().iter_values() {
        let text = value.as_text().filter(|t| mqtt_safe(t));
        if name == names::CONTENT_TYPE && text.is_some() {
            properties.content_type = text.map(str::to_owned);
            continue;
        }
        match text.filter(|_| mqtt_safe(name)) {
            Some(text) => properties
                .user_properties
                .push((name.to_owned(), text.to_owned())),
            None => properties
                .user_properties
                .push((format!("{HEX_PREFIX}{name}"), hex(value.as_bytes()))),
        }
    }
    if let Some(key) = message.key() {
        match std::str::from_utf8(key).ok().filter(|t| mqtt_safe(t)) {
            Some(text) => properties
                .user_properties
                .push((KEY_PROPERTY.to_owned(), text.to_owned())),
            None => properties
                .user_properties
                .push((KEY_HEX_PROPERTY.to_owned(), hex(key))),
        }
    }
    if let Some(routing_key) = message.routing_key().filter(|_| routing_key_property) {
        properties
            .user_properties
            .push((ROUTING_KEY_PROPERTY.to_owned(), routing_key.to_owned()));
    }
    properties
}

/// The bindery message of a publish received on `destination`.
pub fn message(destination: &str, publish: &Publish) -> Message {
    let topic = String::from_utf8_lossy(&publish.topic);
    let mut headers = Headers::new();
    let mut key = None;
    let mut routing_key = routing_key_of(destination, &topic);
    if let Some(properties) = &publish.properties {
        for (name, value) in &properties.user_properties {
            if name == KEY_PROPERTY {
                key = Some(Bytes::from(value.clone().into_bytes()));
            } else if name == KEY_HEX_PROPERTY {
                key = unhex(value).map(Bytes::from);
            } else if name == ROUTING_KEY_PROPERTY {
                routing_key = Some(value.clone());
            } else if let Some(original) = name.strip_prefix(HEX_PREFIX) {
                if let Some(bytes) = unhex(value) {
                    headers.insert_value(original.to_owned(), HeaderValue::from_wire(&bytes));
                }
            } else {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(content_type) = &properties.content_type {
            headers.insert(names::CONTENT_TYPE, content_type.clone());
        }
    }
    let mut message = Message::new(publish.payload.clone()).with_headers(headers);
    message.set_key(key);
    message.set_routing_key(routing_key);
    message
}

/// Whether a broker takes `text` as an MQTT UTF-8 string. MQTT forbids
/// U+0000 and discourages the other control characters, and Mosquitto
/// closes the connection of a client that sends any of them ("Malformed
/// UTF-8"), so such values (a stack trace's line breaks) travel in hex.
pub fn mqtt_safe(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// Why a topic cannot be published to, if it cannot.
pub fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("the topic is empty")
    } else if topic.contains(['+', '#']) {
        Some("a topic name may not contain the wildcards `+` or `#`")
    } else if !mqtt_safe(topic) {
        Some("a topic name may not contain control characters")
    } else if topic.len() > usize::from(u16::MAX) {
        Some("the topic is longer than 65,535 bytes")
    } else {
        None
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A broker address read from an `mqtt://[user[:password]@]host[:port]` url.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port (default 1883).
    pub port: u16,
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("BrokerUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl BrokerUrl {
    /// Parses `url`. Only `mqtt://` (plain TCP) is supported; errors never
    /// quote the password.
    pub fn parse(url: &str) -> Result<Self, MqttError> {
        let invalid = |reason| MqttError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let rest = if let Some(rest) = url.strip_prefix("mqtt://") {
            rest
        } else if url.starts_with("mqtts://") || url.starts_with("ssl://") {
            return Err(invalid(
                "TLS (`mqtts://`) is not supported by this binder yet",
            ));
        } else {
            return Err(invalid("the url must start with `mqtt://`"));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((userinfo, address)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), password.to_owned())), address)
            }
            None => (None, authority),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| invalid("the port is not a number from 1 to 65535"))?,
            ),
            None => (address, 1883),
        };
        if host.is_empty() {
            return Err(invalid("the url names no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// `host:port`, for logs and errors.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `url` with its password replaced by `****`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, address)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') { ":****" } else { "" };
            format!("{scheme}://{user}{masked}@{address}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_become_topic_levels_and_back() {
        assert_eq!(topic("orders", Some("item.update")), "orders/item/update");
        assert_eq!(topic("orders", None), "orders");
        assert_eq!(topic("orders", Some("")), "orders");
        assert_eq!(
            routing_key_of("orders", "orders/item/update").as_deref(),
            Some("item.update")
        );
        assert_eq!(routing_key_of("orders", "orders"), None);
    }

    #[test]
    fn patterns_become_topic_filters() {
        let filter = |p: &str| topic_filter("b", "orders", &RoutingPattern::new(p));
        assert_eq!(filter("#").unwrap(), "orders/#");
        assert_eq!(filter("item.*").unwrap(), "orders/item/+");
        assert_eq!(filter("audit.#").unwrap(), "orders/audit/#");
        assert_eq!(filter("*.update").unwrap(), "orders/+/update");
        assert!(
            filter("a.#.b")
                .unwrap_err()
                .to_string()
                .contains("last word")
        );
        assert!(topic_problem("orders/item").is_none());
        assert!(topic_problem("orders/#").is_some());
        assert!(topic_problem("orders/\u{1}").is_some());
        assert_eq!(shared("g", "orders/#"), "$share/g/orders/#");
    }

    #[test]
    fn headers_key_and_content_type_round_trip_through_properties() {
        let sent = Message::new(Bytes::from_static(b"body"))
            .with_content_type("application/json")
            .with_header("trace-id", "t-1")
            .with_key(Bytes::from_static(&[0xff, 0x00]))
            .with_routing_key("item.update");
        let mut sent = sent;
        sent.headers_mut()
            .insert_bytes("binary", Bytes::from_static(&[0x80, 0x01]));
        sent.headers_mut().insert("trace", "line one\nline two");
        let properties = properties(&sent, false);
        assert_eq!(properties.content_type.as_deref(), Some("application/json"));
        let mut publish = Publish::new(
            "orders/item/update",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            "body",
            None,
        );
        publish.properties = Some(properties);
        let got = message("orders", &publish);
        assert_eq!(got.content_type(), Some("application/json"));
        assert_eq!(got.headers().get("trace-id"), Some("t-1"));
        assert_eq!(got.headers().get_bytes("binary"), Some(&[0x80, 0x01][..]));
        assert_eq!(got.headers().get("trace"), Some("line one\nline two"));
        assert_eq!(got.key().map(|k| &k[..]), Some(&[0xff, 0x00][..]));
        assert_eq!(got.routing_key(), Some("item.update"));
    }

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let url = BrokerUrl::parse("mqtt://app:s3cret@broker:1884").unwrap();
        assert_eq!(url.address(), "broker:1884");
        assert_eq!(url.credentials, Some(("app".into(), "s3cret".into())));
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1").unwrap().port, 1883);
        assert_eq!(
            redact_url("mqtt://app:s3cret@broker:1884/x"),
            "mqtt://app:****@broker:1884/x"
        );
        let error = BrokerUrl::parse("mqtt://app:s3cret@broker:notaport").unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(BrokerUrl::parse("mqtts://broker").is_err());
    }
}
