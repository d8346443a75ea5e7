//! bindery messages to AMQP and back, as Spring maps them: the
//! `contentType` header is the `content_type` property, other headers are
//! AMQP headers (long strings), messages are persistent. The key, which
//! AMQP lacks, travels in the `x-bindery-key` header; the routing key is
//! the AMQP routing key.

use std::borrow::Cow;
use std::fmt::Write;

use bindery_core::message::{Headers, Message, names};
use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::error::Result;
use crate::topology::short;

/// The header that carries a message's key.
pub const KEY_HEADER: &str = "x-bindery-key";

/// AMQP's delivery mode for messages written to disk.
const PERSISTENT: u8 = 2;

/// A message ready to publish; kept until confirmed, to publish again if
/// its channel dies first.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) properties: BasicProperties,
    pub(crate) payload: Bytes,
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
    for (name, value) in message.headers().iter() {
        if name == names::CONTENT_TYPE {
            if let Ok(content_type) = ShortString::try_new(value) {
                properties = properties.with_content_type(content_type);
                continue;
            }
        }
        table.insert(short("header name", name)?, long(value.as_bytes()));
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

fn long(bytes: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(bytes.to_vec()))
}

/// The message a consumer receives: the payload, `contentType` from the
/// property, every header as text, the key from `x-bindery-key`, and the
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
            if name.as_str() == KEY_HEADER {
                key = Some(match value {
                    AMQPValue::LongString(bytes) => Bytes::copy_from_slice(bytes.as_bytes()),
                    other => Bytes::from(text(other)),
                });
            } else {
                headers.insert(name.as_str().to_owned(), text(value));
            }
        }
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
/// (`x-death` is an array of tables); those read as JSON-like text.
pub(crate) fn text(value: &AMQPValue) -> String {
    let mut out = String::new();
    write_text(&mut out, value, false);
    out
}

fn write_text(out: &mut String, value: &AMQPValue, nested: bool) {
    let quoted = |out: &mut String, s: &str| {
        if nested {
            let _ = write!(out, "{s:?}");
        } else {
            out.push_str(s);
        }
    };
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
                write_text(out, item, true);
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
                write_text(out, item, true);
            }
            out.push('}');
            Ok(())
        }
    };
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
}
