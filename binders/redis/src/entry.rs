//! The stream entry layout: one entry per message, readable and writable
//! by any Redis client.
//!
//! | field | value |
//! |---|---|
//! | `payload` | the payload bytes, unchanged |
//! | `content-type` | the `contentType` header, when set |
//! | `key` | the message key (bytes), when set |
//! | `routing-key` | the routing key (UTF-8), when set |
//! | `h:<name>` | a text header `<name>` (UTF-8) |
//! | `b:<name>` | a binary header `<name>` (bytes that are not text) |
//! | `target-group` | set only by redrive: the one group that takes the entry |
//!
//! Any other field is ignored, so entries written by other programs may
//! carry more.

use bindery_core::message::{HeaderValue, Headers, Message, names};
use bytes::Bytes;
use redis::Value;

/// The payload field.
pub const PAYLOAD: &str = "payload";
/// The content-type field (the `contentType` header).
pub const CONTENT_TYPE: &str = "content-type";
/// The key field.
pub const KEY: &str = "key";
/// The routing-key field.
pub const ROUTING_KEY: &str = "routing-key";
/// Prefix of a text header's field.
pub const TEXT_HEADER: &str = "h:";
/// Prefix of a binary header's field.
pub const BINARY_HEADER: &str = "b:";
/// The field redrive sets: only this group takes the entry; other groups
/// acknowledge it unseen.
pub const TARGET_GROUP: &str = "target-group";

/// The fields of `message`'s entry, in the order they are written.
pub(crate) fn encode(message: &Message, target_group: Option<&str>) -> Vec<(Bytes, Bytes)> {
    let mut fields = Vec::with_capacity(4 + message.headers().len());
    fields.push((
        Bytes::from_static(PAYLOAD.as_bytes()),
        message.payload().clone(),
    ));
    if let Some(key) = message.key() {
        fields.push((Bytes::from_static(KEY.as_bytes()), key.clone()));
    }
    if let Some(routing_key) = message.routing_key() {
        fields.push((
            Bytes::from_static(ROUTING_KEY.as_bytes()),
            Bytes::copy_from_slice(routing_key.as_bytes()),
        ));
    }
    for (name, value) in message.headers().iter_values() {
        let field = if name == names::CONTENT_TYPE {
            CONTENT_TYPE.to_owned()
        } else {
            match value {
                HeaderValue::Text(_) => format!("{TEXT_HEADER}{name}"),
                HeaderValue::Bytes(_) => format!("{BINARY_HEADER}{name}"),
            }
        };
        fields.push((Bytes::from(field), Bytes::copy_from_slice(value.as_bytes())));
    }
    if let Some(group) = target_group {
        fields.push((
            Bytes::from_static(TARGET_GROUP.as_bytes()),
            Bytes::copy_from_slice(group.as_bytes()),
        ));
    }
    fields
}

/// One entry read from a stream.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The entry ID (`<ms>-<seq>`).
    pub(crate) id: String,
    /// The message; `None` when the entry was trimmed or deleted while it
    /// was pending (Redis then returns the ID without fields).
    pub(crate) message: Option<Message>,
    /// The `target-group` field.
    pub(crate) target_group: Option<String>,
}

/// Decodes an entry's field list (`[field, value, ...]`).
fn decode(id: String, fields: Vec<Value>) -> Entry {
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    let (mut key, mut routing_key, mut target_group) = (None, None, None);
    let mut iter = fields.into_iter();
    while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
        let (Some(field), Some(value)) = (bytes_of(field), bytes_of(value)) else {
            continue;
        };
        let Ok(field) = String::from_utf8(field) else {
            continue;
        };
        match field.as_str() {
            PAYLOAD => payload = Bytes::from(value),
            KEY => key = Some(Bytes::from(value)),
            ROUTING_KEY => routing_key = Some(String::from_utf8_lossy(&value).into_owned()),
            CONTENT_TYPE => {
                headers.insert_value(names::CONTENT_TYPE, HeaderValue::from_wire(&value))
            }
            TARGET_GROUP => target_group = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {
                if let Some(name) = field.strip_prefix(TEXT_HEADER) {
                    headers.insert_value(name.to_owned(), HeaderValue::from_wire(&value));
                } else if let Some(name) = field.strip_prefix(BINARY_HEADER) {
                    headers.insert_bytes(name.to_owned(), Bytes::from(value));
                }
            }
        }
    }
    let mut message = Message::new(payload).with_headers(headers);
    message.set_key(key);
    message.set_routing_key(routing_key);
    Entry {
        id,
        message: Some(message),
        target_group,
    }
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// Text of a reply element (an ID, a cursor).
pub(crate) fn text_of(value: Value) -> Option<String> {
    bytes_of(value).and_then(|b| String::from_utf8(b).ok())
}

/// The entries of one stream's entry list (`[[id, [f, v, ...]], ...]`), as
/// XRANGE, XAUTOCLAIM and the per-stream part of XREADGROUP return it.
pub(crate) fn entries_of(value: Value) -> Result<Vec<Entry>, String> {
    let Value::Array(items) = value else {
        return match value {
            Value::Nil => Ok(Vec::new()),
            other => Err(format!("expected an entry list, got {other:?}")),
        };
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            return Err("an entry is not a pair".to_owned());
        };
        if pair.len() != 2 {
            return Err("an entry is not a pair".to_owned());
        }
        let fields = pair.pop().expect("two elements");
        let id = text_of(pair.pop().expect("two elements")).ok_or("an entry ID is not text")?;
        match fields {
            Value::Array(fields) => entries.push(decode(id, fields)),
            Value::Map(map) => entries.push(decode(
                id,
                map.into_iter().flat_map(|(f, v)| [f, v]).collect(),
            )),
            // Pending but trimmed or deleted.
            _ => entries.push(Entry {
                id,
                message: None,
                target_group: None,
            }),
        }
    }
    Ok(entries)
}

/// The entries of an XREAD / XREADGROUP reply for a single stream
/// (`[[key, entries]]`, a map in RESP3, nil on timeout).
pub(crate) fn read_reply(value: Value) -> Result<Vec<Entry>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut all = Vec::new();
            for stream in streams {
                let Value::Array(mut pair) = stream else {
                    return Err("a stream reply is not a pair".to_owned());
                };
                if pair.len() != 2 {
                    return Err("a stream reply is not a pair".to_owned());
                }
                all.extend(entries_of(pair.pop().expect("two elements"))?);
            }
            Ok(all)
        }
        Value::Map(streams) => {
            let mut all = Vec::new();
            for (_, entries) in streams {
                all.extend(entries_of(entries)?);
            }
            Ok(all)
        }
        other => Err(format!("expected a stream reply, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_reply(id: &str, fields: Vec<(Bytes, Bytes)>) -> Value {
        Value::Array(vec![Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(
                fields
                    .into_iter()
                    .flat_map(|(f, v)| {
                        [Value::BulkString(f.to_vec()), Value::BulkString(v.to_vec())]
                    })
                    .collect(),
            ),
        ])])
    }

    #[test]
    fn every_part_of_a_message_survives_the_entry() {
        let mut message = Message::new(Bytes::from_static(&[0, 255, b'"']))
            .with_content_type("application/octet-stream")
            .with_header("note", "ünïcode")
            .with_key(Bytes::from_static(&[1, 2, 3]))
            .with_routing_key("orders.created");
        message
            .headers_mut()
            .insert_bytes("x-original-partition", Bytes::from_static(&[0, 0, 0, 7]));
        // Binary bytes that happen to be UTF-8 stay binary too.
        message
            .headers_mut()
            .insert_bytes("raw", Bytes::from_static(b"abc"));
        let fields = encode(&message, Some("billing"));
        let entries = entries_of(as_reply("1-0", fields)).unwrap();
        let entry = &entries[0];
        assert_eq!(entry.id, "1-0");
        assert_eq!(entry.target_group.as_deref(), Some("billing"));
        let got = entry.message.as_ref().unwrap();
        assert_eq!(got.payload(), message.payload());
        assert_eq!(got.content_type(), Some("application/octet-stream"));
        assert_eq!(got.headers().get("note"), Some("ünïcode"));
        assert_eq!(got.key(), message.key());
        assert_eq!(got.routing_key(), Some("orders.created"));
        assert_eq!(
            got.headers().get_value("x-original-partition"),
            Some(&HeaderValue::Bytes(Bytes::from_static(&[0, 0, 0, 7])))
        );
        assert_eq!(
            got.headers().get_value("raw"),
            Some(&HeaderValue::Bytes(Bytes::from_static(b"abc")))
        );
    }

    #[test]
    fn a_trimmed_pending_entry_has_no_message_and_unknown_fields_are_ignored() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
            Value::Array(vec![
                Value::BulkString(b"3-0".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"payload".to_vec()),
                    Value::BulkString(b"x".to_vec()),
                    Value::BulkString(b"written-by".to_vec()),
                    Value::BulkString(b"another client".to_vec()),
                ]),
            ]),
        ]);
        let entries = entries_of(reply).unwrap();
        assert!(entries[0].message.is_none());
        let message = entries[1].message.as_ref().unwrap();
        assert_eq!(message.payload(), &Bytes::from_static(b"x"));
        assert!(message.headers().is_empty());
    }
}
