//! How a bindery [`Message`] maps onto a Kafka record and back.
//!
//! - payload ↔ record value (an absent value is an empty payload);
//! - key ↔ record key;
//! - headers ↔ record headers, losslessly: a value that is valid UTF-8
//!   reads as text, any other as bytes ([`HeaderValue::Bytes`]), and both
//!   are written back byte for byte. A header without value reads as empty
//!   text; of repeated names the last one wins. At most `max-header-count`
//!   headers of at most `max-header-bytes` in all are read per record; the
//!   rest are dropped and counted in [`HEADERS_TRUNCATED`];
//! - routing key ↔ the [`ROUTING_KEY_HEADER`] header.
//!
//! Dead letters carry Spring Cloud Stream's `x-original-*` headers, in its
//! binary encoding; [`OriginalRecord`] reads them back, and spring-kafka's
//! `kafka_dlt-original-*` ones.

use std::borrow::Cow;

use bindery_core::message::{HeaderValue, Headers, Message};
use bytes::Bytes;
use rdkafka::Timestamp;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

/// The record header that carries a message's routing key.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";

/// Added to a consumed message whose record had more headers than the
/// binder's `max-header-count` or `max-header-bytes` allow: how many were
/// dropped (decimal text).
pub const HEADERS_TRUNCATED: &str = "x-bindery-headers-truncated";

/// Dead-letter header: the topic the record was consumed from (text).
pub const ORIGINAL_TOPIC: &str = "x-original-topic";
/// Dead-letter header: its partition, a 4-byte big-endian int as Spring
/// writes it.
pub const ORIGINAL_PARTITION: &str = "x-original-partition";
/// Dead-letter header: its offset, an 8-byte big-endian long.
pub const ORIGINAL_OFFSET: &str = "x-original-offset";
/// Dead-letter header: its timestamp, milliseconds since the epoch as an
/// 8-byte big-endian long (-1 without timestamp).
pub const ORIGINAL_TIMESTAMP: &str = "x-original-timestamp";
/// Dead-letter header: `CreateTime`, `LogAppendTime` or `NoTimestampType`
/// (text), as Spring writes it.
pub const ORIGINAL_TIMESTAMP_TYPE: &str = "x-original-timestamp-type";

/// spring-kafka's `DeadLetterPublishingRecoverer` names for the same facts
/// (`KafkaHeaders.DLT_ORIGINAL_*`), read by [`OriginalRecord`]: topic,
/// partition, offset, timestamp, timestamp type.
const SPRING_KAFKA_NAMES: [&str; 5] = [
    "kafka_dlt-original-topic",
    "kafka_dlt-original-partition",
    "kafka_dlt-original-offset",
    "kafka_dlt-original-timestamp",
    "kafka_dlt-original-timestamp-type",
];

/// How many inbound headers of one record are read, so that a crafted
/// record cannot make a lane spend its time building headers (audit A17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderLimits {
    /// Most headers read.
    pub(crate) count: usize,
    /// Most bytes of names and values read, in all.
    pub(crate) bytes: usize,
}

impl HeaderLimits {
    /// No limit, for tests.
    #[cfg(test)]
    pub(crate) const NONE: HeaderLimits = HeaderLimits {
        count: usize::MAX,
        bytes: usize::MAX,
    };
}

/// The record headers of `message`: every header, text or bytes, as it is.
pub(crate) fn record_headers(message: &Message) -> OwnedHeaders {
    let extra = usize::from(message.routing_key().is_some());
    let mut headers = OwnedHeaders::new_with_capacity(message.headers().len() + extra);
    for (name, value) in message.headers().iter_values() {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
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
    /// Adds the `x-original-*` headers Spring Cloud Stream's Kafka binder
    /// writes, in its encoding: numbers as big-endian binary, so Spring
    /// tools reading `ByteBuffer.getInt`/`getLong` understand them.
    pub(crate) fn dead_letter_headers(&self, headers: &mut Headers) {
        headers.insert(ORIGINAL_TOPIC, self.topic.clone());
        headers.insert_bytes(ORIGINAL_PARTITION, self.partition.to_be_bytes().to_vec());
        headers.insert_bytes(ORIGINAL_OFFSET, self.offset.to_be_bytes().to_vec());
        let (millis, kind) = match self.timestamp {
            Timestamp::CreateTime(ms) => (ms, "CreateTime"),
            Timestamp::LogAppendTime(ms) => (ms, "LogAppendTime"),
            Timestamp::NotAvailable => (-1, "NoTimestampType"),
        };
        headers.insert_bytes(ORIGINAL_TIMESTAMP, millis.to_be_bytes().to_vec());
        headers.insert(ORIGINAL_TIMESTAMP_TYPE, kind);
    }
}

/// Where a dead letter's record was consumed from, read from its headers:
/// Spring Cloud Stream's `x-original-*` (as bindery writes them) or, when
/// those are absent, spring-kafka's `kafka_dlt-original-*`. Numbers are
/// read in either encoding: big-endian binary (Spring's) or decimal text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginalRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The timestamp in milliseconds since the epoch, if known (Kafka's
    /// `-1` means none).
    pub timestamp: Option<i64>,
    /// `CreateTime`, `LogAppendTime` or `NoTimestampType`, if present.
    pub timestamp_type: Option<String>,
}

impl OriginalRecord {
    /// Reads the original record's coordinates; `None` unless topic,
    /// partition and offset are all present and readable under one of the
    /// two naming schemes.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        let spring = [
            ORIGINAL_TOPIC,
            ORIGINAL_PARTITION,
            ORIGINAL_OFFSET,
            ORIGINAL_TIMESTAMP,
            ORIGINAL_TIMESTAMP_TYPE,
        ];
        Self::read(headers, spring).or_else(|| Self::read(headers, SPRING_KAFKA_NAMES))
    }

    fn read(
        headers: &Headers,
        [topic, partition, offset, timestamp, kind]: [&str; 5],
    ) -> Option<Self> {
        let text = |name| {
            headers
                .get_bytes(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        let partition = decode_number(headers.get_bytes(partition)?, 4)?;
        Some(Self {
            topic: text(topic)?,
            partition: i32::try_from(partition).ok()?,
            offset: decode_number(headers.get_bytes(offset)?, 8)?,
            timestamp: headers
                .get_bytes(timestamp)
                .and_then(|v| decode_number(v, 8))
                .filter(|t| *t >= 0),
            timestamp_type: text(kind),
        })
    }
}

/// A number in a dead-letter header: decimal text (what bindery wrote
/// before it used Spring's encoding), or a big-endian integer `width`
/// bytes wide. Text is tried first: a binary number of realistic size
/// never consists of ASCII digits only (its first byte would be `0x30` or
/// more).
fn decode_number(value: &[u8], width: usize) -> Option<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(value).ok()?.parse().ok();
    }
    match (width, value.len()) {
        (4, 4) => Some(i64::from(i32::from_be_bytes(value.try_into().ok()?))),
        (8, 8) => Some(i64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

/// The message a consumed record carries, and where it came from.
///
/// Headers are built in one linear pass ([`Headers`]' `FromIterator`),
/// never one `insert` at a time, and bounded by `limits`.
pub(crate) fn from_record<R: rdkafka::Message>(
    record: &R,
    limits: HeaderLimits,
) -> (Message, Origin) {
    let payload = record
        .payload()
        .map(Bytes::copy_from_slice)
        .unwrap_or_default();
    let mut message = Message::new(payload);
    if let Some(headers) = record.headers() {
        let mut routing_key: Option<Option<&[u8]>> = None;
        let (mut kept, mut size, mut dropped) = (0usize, 0usize, 0usize);
        // Once one header does not fit, none after it is read either: the
        // message keeps a prefix of the record's headers.
        let mut full = false;
        let built: Headers = headers
            .iter()
            .filter_map(|header| {
                if header.key == ROUTING_KEY_HEADER {
                    // Read whatever the limits: it decides who gets the record.
                    routing_key = Some(header.value);
                    return None;
                }
                let bytes = header.key.len() + header.value.map_or(0, <[u8]>::len);
                full = full || kept >= limits.count || size.saturating_add(bytes) > limits.bytes;
                if full {
                    dropped += 1;
                    return None;
                }
                kept += 1;
                size += bytes;
                let value = header
                    .value
                    .map_or(HeaderValue::Text(Cow::Borrowed("")), HeaderValue::from_wire);
                Some((header.key.to_owned(), value))
            })
            .collect();
        let mut built = built;
        if dropped > 0 {
            built.insert(HEADERS_TRUNCATED, dropped.to_string());
        }
        *message.headers_mut() = built;
        if let Some(value) = routing_key {
            let key = String::from_utf8_lossy(value.unwrap_or_default()).into_owned();
            message.set_routing_key(Some(key));
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

    fn record(headers: OwnedHeaders) -> rdkafka::message::OwnedMessage {
        rdkafka::message::OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"k1".to_vec()),
            "orders".into(),
            Timestamp::CreateTime(5),
            2,
            7,
            Some(headers),
        )
    }

    fn wire(headers: &OwnedHeaders) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect()
    }

    #[test]
    fn headers_carry_the_routing_key() {
        let message = Message::new(Bytes::from_static(b"x"))
            .with_header("contentType", "text/plain")
            .with_routing_key("item.update");
        assert_eq!(
            wire(&record_headers(&message)),
            [
                ("contentType".to_owned(), b"text/plain".to_vec()),
                (ROUTING_KEY_HEADER.to_owned(), b"item.update".to_vec())
            ]
        );
    }

    #[test]
    fn records_read_back_with_routing_key_and_key() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "contentType",
                value: Some("application/json"),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            })
            .insert(Header {
                key: ROUTING_KEY_HEADER,
                value: Some("item.insert"),
            });
        let (message, origin) = from_record(&record(headers), HeaderLimits::NONE);
        assert_eq!(&message.payload()[..], b"{}");
        assert_eq!(message.key().map(|k| &k[..]), Some(&b"k1"[..]));
        assert_eq!(message.routing_key(), Some("item.insert"));
        assert_eq!(message.content_type(), Some("application/json"));
        assert_eq!(message.headers().get("empty"), Some(""));
        assert!(!message.headers().contains(ROUTING_KEY_HEADER));
        assert_eq!(
            (origin.partition, origin.offset, origin.timestamp),
            (2, 7, Timestamp::CreateTime(5))
        );
    }

    #[test]
    fn a25_binary_header_values_are_kept_byte_for_byte() {
        let binary: &[u8] = &[0xff, b'a', 0x00, 0xc3];
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "binary",
                value: Some(binary),
            })
            .insert(Header {
                key: "text",
                value: Some("caf\u{e9}"),
            });
        let (message, _) = from_record(&record(headers), HeaderLimits::NONE);
        assert_eq!(message.headers().get("binary"), None, "not decoded lossily");
        assert_eq!(message.headers().get_bytes("binary"), Some(binary));
        assert_eq!(message.headers().get("text"), Some("caf\u{e9}"));
        // Re-published (an output inheriting it, a dead letter, a redrive):
        // the same bytes.
        let out = Message::new(Bytes::new()).with_headers(message.headers().inheritable());
        assert_eq!(
            wire(&record_headers(&out)),
            [
                ("binary".to_owned(), binary.to_vec()),
                ("text".to_owned(), "caf\u{e9}".as_bytes().to_vec())
            ]
        );
    }

    #[test]
    fn a17_inbound_headers_are_bounded_and_the_drop_is_marked() {
        let mut headers = OwnedHeaders::new_with_capacity(100_001);
        let names: Vec<String> = (0..100_000).map(|i| format!("h{i}")).collect();
        for name in &names {
            headers = headers.insert(Header {
                key: name,
                value: Some("v"),
            });
        }
        headers = headers.insert(Header {
            key: ROUTING_KEY_HEADER,
            value: Some("late.key"),
        });
        let started = std::time::Instant::now();
        let limits = HeaderLimits {
            count: 1000,
            bytes: usize::MAX,
        };
        let (message, _) = from_record(&record(headers.clone()), limits);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(message.headers().len(), 1001, "1000 kept and the marker");
        assert_eq!(message.headers().get("h999"), Some("v"));
        assert!(!message.headers().contains("h1000"));
        assert_eq!(message.headers().get(HEADERS_TRUNCATED), Some("99000"));
        assert_eq!(
            message.routing_key(),
            Some("late.key"),
            "read past the limit"
        );

        // By size: names of 2-6 bytes plus a 1-byte value.
        let limits = HeaderLimits {
            count: usize::MAX,
            bytes: 30,
        };
        let (message, _) = from_record(&record(headers), limits);
        let kept: Vec<&str> = message.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(
            kept,
            [
                "h0",
                "h1",
                "h2",
                "h3",
                "h4",
                "h5",
                "h6",
                "h7",
                "h8",
                "h9",
                HEADERS_TRUNCATED
            ]
        );
        assert_eq!(message.headers().get(HEADERS_TRUNCATED), Some("99990"));
    }

    #[test]
    fn dead_letter_headers_are_springs_binary_encoding() {
        let origin = Origin {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            timestamp: Timestamp::CreateTime(1_700_000_000_000),
        };
        let mut headers = Headers::new();
        origin.dead_letter_headers(&mut headers);
        assert_eq!(headers.get(ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(
            headers.get_bytes(ORIGINAL_PARTITION),
            Some(&[0, 0, 0, 3][..])
        );
        assert_eq!(
            headers.get_bytes(ORIGINAL_OFFSET),
            Some(&42i64.to_be_bytes()[..])
        );
        assert_eq!(
            headers.get_bytes(ORIGINAL_TIMESTAMP),
            Some(&1_700_000_000_000i64.to_be_bytes()[..])
        );
        assert_eq!(headers.get(ORIGINAL_TIMESTAMP_TYPE), Some("CreateTime"));
        // Through a record and back, as a dead-letter consumer reads it.
        let message = Message::new(Bytes::new()).with_headers(headers);
        let (read, _) = from_record(&record(record_headers(&message)), HeaderLimits::NONE);
        assert_eq!(
            OriginalRecord::from_headers(read.headers()),
            Some(OriginalRecord {
                topic: "orders".into(),
                partition: 3,
                offset: 42,
                timestamp: Some(1_700_000_000_000),
                timestamp_type: Some("CreateTime".into()),
            })
        );
    }

    #[test]
    fn original_record_reads_text_numbers_and_spring_kafka_names() {
        let text: Headers = [
            (ORIGINAL_TOPIC, "orders"),
            (ORIGINAL_PARTITION, "0"),
            (ORIGINAL_OFFSET, "12"),
            (ORIGINAL_TIMESTAMP, "-1"),
        ]
        .into_iter()
        .collect();
        let read = OriginalRecord::from_headers(&text).expect("decimal text");
        assert_eq!((read.partition, read.offset, read.timestamp), (0, 12, None));

        let mut spring_kafka = Headers::new();
        spring_kafka.insert("kafka_dlt-original-topic", "payments");
        spring_kafka.insert_bytes("kafka_dlt-original-partition", 0i32.to_be_bytes().to_vec());
        spring_kafka.insert_bytes("kafka_dlt-original-offset", 7i64.to_be_bytes().to_vec());
        spring_kafka.insert_bytes("kafka_dlt-original-timestamp", 99i64.to_be_bytes().to_vec());
        spring_kafka.insert("kafka_dlt-original-timestamp-type", "LogAppendTime");
        let read = OriginalRecord::from_headers(&spring_kafka).expect("spring-kafka names");
        assert_eq!(read.topic, "payments");
        assert_eq!(
            (read.partition, read.offset, read.timestamp),
            (0, 7, Some(99))
        );
        assert_eq!(read.timestamp_type.as_deref(), Some("LogAppendTime"));

        let mut wrong_width = Headers::new();
        wrong_width.insert(ORIGINAL_TOPIC, "t");
        wrong_width.insert_bytes(ORIGINAL_PARTITION, vec![0, 1]);
        wrong_width.insert_bytes(ORIGINAL_OFFSET, 1i64.to_be_bytes().to_vec());
        assert_eq!(OriginalRecord::from_headers(&wrong_width), None);
    }
}
