//! bindery messages to AMQP and back, as Spring maps them: the
//! `contentType` header is the `content_type` property, the other AMQP
//! properties are the headers Spring AMQP's `DefaultAmqpHeaderMapper`
//! names (`amqp_messageId`, ...; see [`headers`]), other headers are AMQP
//! headers (long strings), messages are persistent. The key, which AMQP
//! lacks, travels in the `x-bindery-key` header; the routing key is the
//! AMQP routing key.

use std::borrow::Cow;
use std::fmt::Write;

use bindery_core::message::{HeaderValue, Headers, Message, names};
use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};

use crate::error::Result;
use crate::topology::short;

/// The header that carries a message's key.
pub const KEY_HEADER: &str = "x-bindery-key";

/// The private header that carries a publish's sequence number on its
/// channel, so that a returned message names the publish it belongs to.
/// Set by the producer on every publish, removed again by consumers.
pub const SEQUENCE_HEADER: &str = "x-bindery-seq";

/// The headers that stand for AMQP message properties, named as Spring
/// AMQP names them (`AmqpHeaders`, and `priority` as
/// `AmqpMessageHeaderAccessor.PRIORITY`). A consumer sets them from the
/// properties; a producer turns them back into properties, so a message
/// consumed and sent on keeps its `message_id`. Values are text:
/// `amqp_timestamp` is seconds since the Unix epoch and `priority` a
/// number from 0 to 255; a value that does not parse stays an ordinary
/// header.
pub mod headers {
    /// `message_id`.
    pub const MESSAGE_ID: &str = "amqp_messageId";
    /// `correlation_id`.
    pub const CORRELATION_ID: &str = "amqp_correlationId";
    /// `reply_to`.
    pub const REPLY_TO: &str = "amqp_replyTo";
    /// `timestamp`, in seconds since the Unix epoch.
    pub const TIMESTAMP: &str = "amqp_timestamp";
    /// `type`.
    pub const TYPE: &str = "amqp_type";
    /// `app_id`.
    pub const APP_ID: &str = "amqp_appId";
    /// `priority`, 0 to 255.
    pub const PRIORITY: &str = "priority";
    /// `expiration`: the per-message TTL in milliseconds, as text. The
    /// broker closes the publishing channel for a value that is not a
    /// number; that send then fails as rejected.
    pub const EXPIRATION: &str = "amqp_expiration";
}

/// AMQP's delivery mode for messages written to disk.
const PERSISTENT: u8 = 2;

/// How deep nested header tables and arrays are rendered as text; deeper
/// levels read as `…`. The broker's own headers (`x-death`) nest three
/// levels; the bound keeps a crafted header from exhausting the stack.
const MAX_TEXT_DEPTH: usize = 16;

/// A message ready to publish; kept until confirmed, to publish again if
/// its channel dies first.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) properties: BasicProperties,
    pub(crate) payload: Bytes,
}

impl Outgoing {
    /// The properties of one publish: the message's, plus its sequence
    /// number on the channel in [`SEQUENCE_HEADER`].
    pub(crate) fn properties_for(&self, seq: u64) -> BasicProperties {
        let mut table = self.properties.headers().clone().unwrap_or_default();
        table.insert(SEQUENCE_HEADER.into(), long(seq.to_string().as_bytes()));
        self.properties.clone().with_headers(table)
    }
}

/// Maps `message` for exchange `exchange`, with routing key `routing_key`
/// when given (dead letters, redrive), else the message's, else
/// `default_routing_key` (the destination, as Spring does).
pub(crate) fn outgoing(
    message: Message,
    exchange: &ShortString,
    routing_key: Option<&ShortString>,
    default_routing_key: &ShortString,
) -> Result<Outgoing> {
    let routing_key = match (routing_key, message.routing_key()) {
        (Some(fixed), _) => fixed.clone(),
        (None, Some(key)) => short("routing key", key)?,
        (None, None) => default_routing_key.clone(),
    };
    let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    let mut table = FieldTable::default();
    for (name, value) in message.headers().iter_values() {
        if name == SEQUENCE_HEADER {
            // The producer numbers its own publishes.
            continue;
        }
        match value {
            HeaderValue::Text(text) => {
                if !set_property(&mut properties, name, text) {
                    table.insert(short("header name", name)?, long(text.as_bytes()));
                }
            }
            // Binary values (from a Kafka input, say) stay binary.
            HeaderValue::Bytes(bytes) => {
                let array = ByteArray::from(bytes.to_vec());
                table.insert(short("header name", name)?, AMQPValue::ByteArray(array));
            }
        }
    }
    if let Some(key) = message.key() {
        table.insert(KEY_HEADER.into(), long(key));
    }
    if !table.inner().is_empty() {
        properties = properties.with_headers(table);
    }
    Ok(Outgoing {
        exchange: exchange.clone(),
        routing_key,
        properties,
        payload: message.into_payload(),
    })
}

/// Sets the property header `name` stands for; false when `name` is an
/// ordinary header (or its value does not fit the property).
fn set_property(properties: &mut BasicProperties, name: &str, value: &str) -> bool {
    let text = || ShortString::try_new(value).ok();
    let taken = std::mem::take(properties);
    let (set, kept) = match name {
        names::CONTENT_TYPE => (text().map(|v| taken.clone().with_content_type(v)), taken),
        headers::MESSAGE_ID => (text().map(|v| taken.clone().with_message_id(v)), taken),
        headers::CORRELATION_ID => (text().map(|v| taken.clone().with_correlation_id(v)), taken),
        headers::REPLY_TO => (text().map(|v| taken.clone().with_reply_to(v)), taken),
        headers::TYPE => (text().map(|v| taken.clone().with_type(v)), taken),
        headers::APP_ID => (text().map(|v| taken.clone().with_app_id(v)), taken),
        headers::EXPIRATION => (text().map(|v| taken.clone().with_expiration(v)), taken),
        headers::TIMESTAMP => (
            value
                .parse::<u64>()
                .ok()
                .map(|v| taken.clone().with_timestamp(v)),
            taken,
        ),
        headers::PRIORITY => (
            value
                .parse::<u8>()
                .ok()
                .map(|v| taken.clone().with_priority(v)),
            taken,
        ),
        _ => (None, taken),
    };
    let found = set.is_some();
    *properties = set.unwrap_or(kept);
    found
}

fn long(bytes: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(bytes.to_vec()))
}

/// The message a consumer receives: the payload, `contentType` and the
/// [`headers`] from the properties, every header as text (but the
/// producer's [`SEQUENCE_HEADER`]), the key from `x-bindery-key`, and the
/// routing key it was published with.
pub(crate) fn incoming(
    data: Vec<u8>,
    properties: &BasicProperties,
    routing_key: &ShortString,
) -> Message {
    let mut headers = Headers::new();
    let mut key = None;
    if let Some(content_type) = properties.content_type() {
        headers.insert(
            names::CONTENT_TYPE,
            known_content_type(content_type.as_str()),
        );
    }
    if let Some(table) = properties.headers() {
        for (name, value) in table {
            match name.as_str() {
                KEY_HEADER => {
                    key = Some(match value {
                        AMQPValue::LongString(bytes) => Bytes::copy_from_slice(bytes.as_bytes()),
                        other => Bytes::from(text(other)),
                    });
                }
                SEQUENCE_HEADER => {}
                name => headers.insert(name.to_owned(), text(value)),
            }
        }
    }
    // After the table: the properties win over headers of the same name.
    let texts = [
        (headers::MESSAGE_ID, properties.message_id()),
        (headers::CORRELATION_ID, properties.correlation_id()),
        (headers::REPLY_TO, properties.reply_to()),
        (headers::TYPE, properties.kind()),
        (headers::APP_ID, properties.app_id()),
        (headers::EXPIRATION, properties.expiration()),
    ];
    for (name, value) in texts {
        if let Some(value) = value {
            headers.insert(name, value.as_str().to_owned());
        }
    }
    if let Some(timestamp) = properties.timestamp() {
        headers.insert(headers::TIMESTAMP, timestamp.to_string());
    }
    if let Some(priority) = properties.priority() {
        headers.insert(headers::PRIORITY, priority.to_string());
    }
    let mut message = Message::new(Bytes::from(data)).with_headers(headers);
    message.set_key(key);
    if !routing_key.as_str().is_empty() {
        message.set_routing_key(Some(routing_key.as_str().to_owned()));
    }
    message
}

/// The usual content types cost no allocation, here or when the message
/// is cloned.
fn known_content_type(content_type: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 3] = ["application/json", "text/plain", "application/octet-stream"];
    match KNOWN.iter().find(|known| **known == content_type) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(content_type.to_owned()),
    }
}

/// A header value as text. Spring and the broker write more than strings
/// (`x-death` is an array of tables); those read as JSON-like text, down
/// to [`MAX_TEXT_DEPTH`] levels.
pub(crate) fn text(value: &AMQPValue) -> String {
    let mut out = String::new();
    write_text(&mut out, value, 0);
    out
}

fn write_text(out: &mut String, value: &AMQPValue, depth: usize) {
    let nested = depth > 0;
    let quoted = |out: &mut String, s: &str| {
        if nested {
            let _ = write!(out, "{s:?}");
        } else {
            out.push_str(s);
        }
    };
    let deeper = matches!(value, AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_));
    if deeper && depth >= MAX_TEXT_DEPTH {
        out.push('…');
        return;
    }
    // Writing to a String cannot fail.
    let _ = match value {
        AMQPValue::Boolean(v) => write!(out, "{v}"),
        AMQPValue::ShortShortInt(v) => write!(out, "{v}"),
        AMQPValue::ShortShortUInt(v) => write!(out, "{v}"),
        AMQPValue::ShortInt(v) => write!(out, "{v}"),
        AMQPValue::ShortUInt(v) => write!(out, "{v}"),
        AMQPValue::LongInt(v) => write!(out, "{v}"),
        AMQPValue::LongUInt(v) => write!(out, "{v}"),
        AMQPValue::LongLongInt(v) => write!(out, "{v}"),
        AMQPValue::Float(v) => write!(out, "{v}"),
        AMQPValue::Double(v) => write!(out, "{v}"),
        AMQPValue::DecimalValue(v) => {
            let scale = 10f64.powi(i32::from(v.scale));
            write!(out, "{}", f64::from(v.value) / scale)
        }
        AMQPValue::Timestamp(v) => write!(out, "{v}"),
        AMQPValue::ShortString(v) => {
            quoted(out, v.as_str());
            Ok(())
        }
        AMQPValue::LongString(v) => {
            quoted(out, &String::from_utf8_lossy(v.as_bytes()));
            Ok(())
        }
        AMQPValue::ByteArray(v) => {
            quoted(out, &String::from_utf8_lossy(v.as_slice()));
            Ok(())
        }
        AMQPValue::Void => Ok(()),
        AMQPValue::FieldArray(items) => {
            out.push('[');
            for (i, item) in items.as_slice().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_text(out, item, depth + 1);
            }
            out.push(']');
            Ok(())
        }
        AMQPValue::FieldTable(table) => {
            out.push('{');
            for (i, (name, item)) in table.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{:?}: ", name.as_str());
                write_text(out, item, depth + 1);
            }
            out.push('}');
            Ok(())
        }
    };
}

/// The size of the content header frame's payload for `properties`
/// (class, weight, body size, property flags and list), which RabbitMQ
/// refuses, closing the whole connection, above `frame_max - 8`. lapin
/// always sends the content header as one frame.
pub(crate) fn content_header_size(properties: &BasicProperties) -> usize {
    let short = |s: &Option<ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    let octet = |o: &Option<u8>| usize::from(o.is_some());
    // Class id, weight, body size, one flags word (AMQP 0-9-1 has 14
    // basic properties, so one word holds them all).
    2 + 2
        + 8
        + 2
        + short(properties.content_type())
        + short(properties.content_encoding())
        + properties.headers().as_ref().map_or(0, table_size)
        + octet(properties.delivery_mode())
        + octet(properties.priority())
        + short(properties.correlation_id())
        + short(properties.reply_to())
        + short(properties.expiration())
        + short(properties.message_id())
        + properties.timestamp().map_or(0, |_| 8)
        + short(properties.kind())
        + short(properties.user_id())
        + short(properties.app_id())
        + short(properties.cluster_id())
}

/// A field table's encoded size: its length word and entries.
fn table_size(table: &FieldTable) -> usize {
    4 + table
        .into_iter()
        .map(|(name, value)| 1 + name.as_str().len() + value_size(value))
        .sum::<usize>()
}

/// A field value's encoded size with its type tag. Recursive, but only
/// over tables the producer built (long strings only, in practice).
fn value_size(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.len(),
        AMQPValue::ByteArray(b) => 4 + b.len(),
        AMQPValue::FieldArray(items) => 4 + items.as_slice().iter().map(value_size).sum::<usize>(),
        AMQPValue::FieldTable(table) => table_size(table),
        AMQPValue::Void => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn round_trip(message: Message, default: &str) -> (Outgoing, Message) {
        let out = outgoing(message, &"orders".into(), None, &default.into()).unwrap();
        let back = incoming(out.payload.to_vec(), &out.properties, &out.routing_key);
        (out, back)
    }

    #[test]
    fn every_part_survives_a_round_trip() {
        let sent = Message::new(Bytes::from_static(&[0, 255, b'"']))
            .with_content_type("application/octet-stream")
            .with_header("trace-id", "t-42")
            .with_header("note", "ünïcode")
            .with_key(Bytes::from_static(&[1, 2, 0xff]))
            .with_routing_key("orders.created");
        let (out, back) = round_trip(sent.clone(), "orders");
        assert_eq!(out.properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            out.properties
                .content_type()
                .as_ref()
                .map(ShortString::as_str),
            Some("application/octet-stream")
        );
        let table = out.properties.headers().as_ref().unwrap();
        assert!(
            !table.contains_key("contentType"),
            "content type is a property, as in Spring"
        );
        assert_eq!(back.payload(), sent.payload());
        assert_eq!(back.content_type(), Some("application/octet-stream"));
        assert_eq!(back.headers().get("trace-id"), Some("t-42"));
        assert_eq!(back.headers().get("note"), Some("ünïcode"));
        assert!(!back.headers().contains(KEY_HEADER));
        assert_eq!(back.key(), sent.key());
        assert_eq!(back.routing_key(), Some("orders.created"));
    }

    #[test]
    fn a25_binary_header_values_go_out_as_byte_arrays() {
        let mut message = Message::new(Bytes::new());
        message
            .headers_mut()
            .insert_bytes("x-original-partition", Bytes::from_static(&[0, 0, 0, 3]));
        let out = outgoing(message, &"orders".into(), None, &"orders".into()).unwrap();
        let headers = out.properties.headers().as_ref().expect("headers");
        let value = headers.inner().get("x-original-partition").expect("kept");
        assert_eq!(
            value,
            &AMQPValue::ByteArray(ByteArray::from(vec![0, 0, 0, 3]))
        );
    }

    #[test]
    fn routing_key_defaults_to_the_destination_and_can_be_fixed() {
        let (out, back) = round_trip(Message::new(Bytes::new()), "orders");
        assert_eq!(out.routing_key.as_str(), "orders");
        assert_eq!(back.key(), None);
        assert!(out.properties.headers().is_none());
        let fixed: ShortString = "orders.billing".into();
        let message = Message::new(Bytes::new()).with_routing_key("item.update");
        let out = outgoing(message, &"DLX".into(), Some(&fixed), &"orders".into()).unwrap();
        assert_eq!(out.routing_key.as_str(), "orders.billing");
        assert_eq!(out.exchange.as_str(), "DLX");
    }

    #[test]
    fn long_names_fail_instead_of_panicking() {
        let message = Message::new(Bytes::new()).with_routing_key("k".repeat(300));
        assert!(outgoing(message, &"e".into(), None, &"e".into()).is_err());
        let message = Message::new(Bytes::new()).with_header("h".repeat(300), "v");
        assert!(outgoing(message, &"e".into(), None, &"e".into()).is_err());
    }

    #[test]
    fn headers_of_other_types_read_as_text() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert(
            "queue".into(),
            AMQPValue::LongString("orders.billing".into()),
        );
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        table.insert("x-delivery-attempts".into(), AMQPValue::LongInt(3));
        table.insert("flag".into(), AMQPValue::Boolean(true));
        let properties = BasicProperties::default().with_headers(table);
        let message = incoming(Vec::new(), &properties, &"".into());
        assert_eq!(message.headers().get("x-delivery-attempts"), Some("3"));
        assert_eq!(message.headers().get("flag"), Some("true"));
        assert_eq!(
            message.headers().get("x-death"),
            Some(r#"[{"count": 2, "queue": "orders.billing"}]"#)
        );
        assert_eq!(message.routing_key(), None, "an empty routing key is none");
    }

    #[test]
    fn a06_amqp_properties_map_to_spring_headers_both_ways() {
        let sent = Message::new(Bytes::from_static(b"x"))
            .with_header(headers::MESSAGE_ID, "order-7")
            .with_header(headers::CORRELATION_ID, "corr-1")
            .with_header(headers::REPLY_TO, "replies")
            .with_header(headers::TIMESTAMP, "1700000000")
            .with_header(headers::TYPE, "OrderPlaced")
            .with_header(headers::APP_ID, "shop")
            .with_header(headers::PRIORITY, "7")
            .with_header(headers::EXPIRATION, "60000")
            .with_header("trace-id", "t-1");
        let (out, back) = round_trip(sent.clone(), "orders");
        let p = &out.properties;
        let s = |v: &Option<ShortString>| v.as_ref().map(|v| v.as_str().to_owned());
        assert_eq!(s(p.message_id()).as_deref(), Some("order-7"));
        assert_eq!(s(p.correlation_id()).as_deref(), Some("corr-1"));
        assert_eq!(s(p.reply_to()).as_deref(), Some("replies"));
        assert_eq!(p.timestamp(), &Some(1_700_000_000));
        assert_eq!(s(p.kind()).as_deref(), Some("OrderPlaced"));
        assert_eq!(s(p.app_id()).as_deref(), Some("shop"));
        assert_eq!(p.priority(), &Some(7));
        assert_eq!(s(p.expiration()).as_deref(), Some("60000"));
        let table = p.headers().as_ref().expect("trace-id stays a header");
        assert_eq!(
            table.inner().keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["trace-id"],
            "properties are not also headers"
        );
        for (name, value) in sent.headers().iter() {
            assert_eq!(back.headers().get(name), Some(value), "{name}");
        }
    }

    #[test]
    fn a06_values_that_do_not_fit_a_property_stay_headers() {
        let sent = Message::new(Bytes::new())
            .with_header(headers::PRIORITY, "high")
            .with_header(headers::TIMESTAMP, "yesterday");
        let (out, back) = round_trip(sent, "orders");
        assert_eq!(out.properties.priority(), &None);
        assert_eq!(out.properties.timestamp(), &None);
        assert_eq!(back.headers().get(headers::PRIORITY), Some("high"));
        assert_eq!(back.headers().get(headers::TIMESTAMP), Some("yesterday"));
    }

    #[test]
    fn a06_the_sequence_header_is_private() {
        let sent = Message::new(Bytes::new())
            .with_header(headers::MESSAGE_ID, "mine")
            .with_header(SEQUENCE_HEADER, "99");
        let out = outgoing(sent, &"e".into(), None, &"e".into()).unwrap();
        assert!(
            out.properties.headers().is_none(),
            "a user's seq is dropped"
        );
        let published = out.properties_for(5);
        let table = published.headers().as_ref().unwrap();
        assert_eq!(text(&table.inner()[SEQUENCE_HEADER]), "5");
        assert_eq!(
            published.message_id().as_ref().map(ShortString::as_str),
            Some("mine"),
            "the sequence never replaces the message id"
        );
        let back = incoming(Vec::new(), &published, &"".into());
        assert!(!back.headers().contains(SEQUENCE_HEADER));
        assert_eq!(back.headers().get(headers::MESSAGE_ID), Some("mine"));
    }

    #[test]
    fn b05_deeply_nested_headers_render_bounded() {
        // Built bottom-up; 100,000 levels would overflow the stack of a
        // renderer that recursed once per level. (Dropping the value is
        // lapin's type's own recursive drop: kept at a depth it survives.)
        let mut value = AMQPValue::LongString("bottom".into());
        for _ in 0..2_000 {
            value = AMQPValue::FieldArray(FieldArray::from(vec![value]));
        }
        let shown = text(&value);
        assert_eq!(shown.matches('[').count(), MAX_TEXT_DEPTH, "{shown}");
        assert!(shown.contains('…'), "{shown}");
        let mut table = FieldTable::default();
        table.insert("deep".into(), value);
        let properties = BasicProperties::default().with_headers(table);
        let message = incoming(Vec::new(), &properties, &"".into());
        assert!(message.headers().get("deep").unwrap().len() < 100);
    }

    #[test]
    fn b02_content_header_size_is_what_lapin_writes() {
        use lapin::protocol::basic::gen_properties;
        let sent = Message::new(Bytes::from_static(b"payload"))
            .with_content_type("text/plain")
            .with_header(headers::MESSAGE_ID, "id-1")
            .with_header(headers::TIMESTAMP, "17")
            .with_header(headers::PRIORITY, "3")
            .with_header("big", "v".repeat(1000))
            .with_key(Bytes::from_static(b"k"));
        let out = outgoing(sent, &"e".into(), None, &"e".into()).unwrap();
        for properties in [out.properties_for(12_345), BasicProperties::default()] {
            let written = gen_properties(&properties)(Vec::<u8>::new().into())
                .expect("serializes")
                .into_inner()
                .0;
            // Class id, weight and body size come before the properties.
            assert_eq!(content_header_size(&properties), 12 + written.len());
        }
    }
}
