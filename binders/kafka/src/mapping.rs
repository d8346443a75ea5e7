//! How a bindery [`Message`] maps onto a Kafka record and back.
//!
//! - payload ↔ record value (an absent value is an empty payload);
//! - key ↔ record key;
//! - headers ↔ record headers. Kafka header values are bytes, bindery's
//!   are text: values are written as UTF-8 and read back with a lossy
//!   UTF-8 decode, so a foreign binary header arrives with `U+FFFD` where
//!   its bytes were not UTF-8. A header without value reads as empty text;
//!   of repeated names the last one wins;
//! - routing key ↔ the [`ROUTING_KEY_HEADER`] header.

use bindery_core::message::{Headers, Message};
use bytes::Bytes;
use rdkafka::Timestamp;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

/// The record header that carries a message's routing key.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";

/// Dead-letter header: the topic the record was consumed from.
pub const ORIGINAL_TOPIC: &str = "x-original-topic";
/// Dead-letter header: its partition.
pub const ORIGINAL_PARTITION: &str = "x-original-partition";
/// Dead-letter header: its offset.
pub const ORIGINAL_OFFSET: &str = "x-original-offset";
/// Dead-letter header: its timestamp, milliseconds since the epoch.
pub const ORIGINAL_TIMESTAMP: &str = "x-original-timestamp";
/// Dead-letter header: `CreateTime` or `LogAppendTime`, as Spring writes it.
pub const ORIGINAL_TIMESTAMP_TYPE: &str = "x-original-timestamp-type";

/// The record headers of `message`.
pub(crate) fn record_headers(message: &Message) -> OwnedHeaders {
    let extra = usize::from(message.routing_key().is_some());
    let mut headers = OwnedHeaders::new_with_capacity(message.headers().len() + extra);
    for (name, value) in message.headers().iter() {
        headers = headers.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    if let Some(routing_key) = message.routing_key() {
        headers = headers.insert(Header {
            key: ROUTING_KEY_HEADER,
            value: Some(routing_key),
        });
    }
    headers
}

/// Where a consumed record came from: what its dead letter records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Timestamp,
}

impl Origin {
    /// The record's timestamp in milliseconds, if it has one.
    #[cfg(test)]
    fn millis(&self) -> Option<i64> {
        self.timestamp.to_millis()
    }

    /// Adds the `x-original-*` headers Spring's Kafka binder writes.
    pub(crate) fn dead_letter_headers(&self, headers: &mut Headers) {
        headers.insert(ORIGINAL_TOPIC, self.topic.clone());
        headers.insert(ORIGINAL_PARTITION, self.partition.to_string());
        headers.insert(ORIGINAL_OFFSET, self.offset.to_string());
        let (millis, kind) = match self.timestamp {
            Timestamp::CreateTime(ms) => (ms, "CreateTime"),
            Timestamp::LogAppendTime(ms) => (ms, "LogAppendTime"),
            Timestamp::NotAvailable => (-1, "NoTimestampType"),
        };
        headers.insert(ORIGINAL_TIMESTAMP, millis.to_string());
        headers.insert(ORIGINAL_TIMESTAMP_TYPE, kind);
    }
}

/// The message a consumed record carries, and where it came from.
pub(crate) fn from_record<R: rdkafka::Message>(record: &R) -> (Message, Origin) {
    let payload = record
        .payload()
        .map(Bytes::copy_from_slice)
        .unwrap_or_default();
    let mut message = Message::new(payload);
    if let Some(headers) = record.headers() {
        let target = message.headers_mut();
        for header in headers.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            target.insert(header.key.to_owned(), value);
        }
        if let Some(routing_key) = target.remove(ROUTING_KEY_HEADER) {
            message.set_routing_key(Some(routing_key.into_owned()));
        }
    }
    if let Some(key) = record.key() {
        message.set_key(Some(Bytes::copy_from_slice(key)));
    }
    let origin = Origin {
        topic: record.topic().to_owned(),
        partition: record.partition(),
        offset: record.offset(),
        timestamp: record.timestamp(),
    };
    (message, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_the_routing_key() {
        let message = Message::new(Bytes::from_static(b"x"))
            .with_header("contentType", "text/plain")
            .with_routing_key("item.update");
        let headers = record_headers(&message);
        let pairs: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("contentType".to_owned(), b"text/plain".to_vec()),
                (ROUTING_KEY_HEADER.to_owned(), b"item.update".to_vec())
            ]
        );
    }

    #[test]
    fn records_read_back_lossily_with_routing_key_and_key() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "contentType",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "binary",
                value: Some(&[0xff, b'a'][..]),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            })
            .insert(Header {
                key: ROUTING_KEY_HEADER,
                value: Some("item.insert"),
            });
        let record = rdkafka::message::OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"k1".to_vec()),
            "orders".into(),
            Timestamp::CreateTime(5),
            2,
            7,
            Some(headers),
        );
        let (message, origin) = from_record(&record);
        assert_eq!(&message.payload()[..], b"{}");
        assert_eq!(message.key().map(|k| &k[..]), Some(&b"k1"[..]));
        assert_eq!(message.routing_key(), Some("item.insert"));
        assert_eq!(message.content_type(), Some("application/json"));
        assert_eq!(message.headers().get("binary"), Some("\u{fffd}a"));
        assert_eq!(message.headers().get("empty"), Some(""));
        assert!(!message.headers().contains(ROUTING_KEY_HEADER));
        assert_eq!(
            (origin.partition, origin.offset, origin.millis()),
            (2, 7, Some(5))
        );
    }

    #[test]
    fn dead_letter_headers_name_the_record() {
        let origin = Origin {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            timestamp: Timestamp::CreateTime(1_700_000_000_000),
        };
        let mut headers = Headers::new();
        origin.dead_letter_headers(&mut headers);
        assert_eq!(headers.get(ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(headers.get(ORIGINAL_PARTITION), Some("3"));
        assert_eq!(headers.get(ORIGINAL_OFFSET), Some("42"));
        assert_eq!(headers.get(ORIGINAL_TIMESTAMP), Some("1700000000000"));
        assert_eq!(headers.get(ORIGINAL_TIMESTAMP_TYPE), Some("CreateTime"));
    }
}
