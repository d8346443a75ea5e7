//! Payload codecs chosen by content type.
//!
//! The content type of a message is its `contentType` header, else the
//! binding's `content-type`, else `application/json`. `Bytes`, `Vec<u8>` and
//! `String` payloads pass through untouched whatever the content type, as
//! Spring passes `byte[]` and `String`; other types go through serde.

use std::any::{Any, type_name};
use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::ser::Impossible;

/// The content type used when neither the message nor the binding names one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// How a payload is turned into values and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// `application/json` (and `+json` suffixes).
    Json,
    /// `text/plain`: UTF-8 text; non-text values are written as JSON.
    Text,
    /// `application/octet-stream`: raw bytes only.
    Binary,
}

impl Codec {
    /// The codec for a content type such as `application/json;charset=utf-8`.
    ///
    /// Surrounding quotes are ignored: Spring's Kafka header mapper writes
    /// header values as JSON strings.
    pub fn for_content_type(content_type: &str) -> Result<Codec, UnsupportedContentType> {
        // The exact spellings bindery and Spring write, without allocating.
        match content_type {
            DEFAULT_CONTENT_TYPE => return Ok(Codec::Json),
            "text/plain" => return Ok(Codec::Text),
            "application/octet-stream" => return Ok(Codec::Binary),
            _ => {}
        }
        let essence = content_type
            .trim()
            .trim_matches('"')
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(Codec::Json),
            e if e.starts_with("application/") && e.ends_with("+json") => Ok(Codec::Json),
            "text/plain" => Ok(Codec::Text),
            "application/octet-stream" => Ok(Codec::Binary),
            _ => Err(UnsupportedContentType(content_type.to_owned())),
        }
    }

    /// Decodes `payload` as `T`.
    pub fn decode<T: DeserializeOwned + 'static>(self, payload: &Bytes) -> Result<T, DecodeError> {
        if let Some(value) = decode_raw::<T>(payload) {
            return value;
        }
        match self {
            Codec::Json | Codec::Text => serde_json::from_slice(payload).map_err(|e| DecodeError {
                target: type_name::<T>(),
                codec: self,
                reason: e.to_string(),
            }),
            Codec::Binary => Err(DecodeError {
                target: type_name::<T>(),
                codec: self,
                reason:
                    "application/octet-stream payloads decode only into Bytes, Vec<u8> or String"
                        .into(),
            }),
        }
    }

    /// Encodes `value`; `None` means "no message": the value was `()` or an
    /// `Option::None`, which Spring treats as a filtered output. Which it is
    /// follows from the value's type, never from its JSON text: a unit
    /// struct or `serde_json::Value::Null` is a message `null` (audit A21).
    pub fn encode<T: Serialize + 'static>(self, value: T) -> Result<Option<Bytes>, EncodeError> {
        if is_option_none(&value) {
            return Ok(None);
        }
        let mut slot = Some(value);
        if let Some(raw) = encode_raw(&mut slot) {
            return Ok(raw);
        }
        let value = slot
            .take()
            .expect("encode_raw leaves the value when it declines");
        let fail = |reason: String| EncodeError {
            source_type: type_name::<T>(),
            codec: self,
            reason,
        };
        if self == Codec::Binary {
            return Err(fail(
                "application/octet-stream outputs must be Bytes, Vec<u8> or String".into(),
            ));
        }
        let json = serde_json::to_vec(&value).map_err(|e| fail(e.to_string()))?;
        if self == Codec::Text && json.first() == Some(&b'"') {
            // A string-like value (an enum variant, a newtype): write the text itself.
            let text: String = serde_json::from_slice(&json).map_err(|e| fail(e.to_string()))?;
            return Ok(Some(Bytes::from(text)));
        }
        Ok(Some(Bytes::from(json)))
    }
}

/// Whether `value` is an `Option::None` (at the top: `Some(None)` is a
/// value), asked of its `Serialize` impl: `None` is the only value that
/// serializes through `serialize_none` first.
fn is_option_none<T: Serialize + ?Sized>(value: &T) -> bool {
    value.serialize(NoneProbe).unwrap_or(false)
}

/// A serializer that only tells whether it was handed `None`.
struct NoneProbe;

/// Anything but a plain value: not `None`.
#[derive(Debug)]
struct NotNone;

impl fmt::Display for NotNone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not None")
    }
}

impl std::error::Error for NotNone {}

impl serde::ser::Error for NotNone {
    fn custom<M: fmt::Display>(_: M) -> Self {
        NotNone
    }
}

macro_rules! not_none {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $ty),*) -> Result<bool, NotNone> { Ok(false) })*
    };
}

impl serde::Serializer for NoneProbe {
    type Ok = bool;
    type Error = NotNone;
    type SerializeSeq = Impossible<bool, NotNone>;
    type SerializeTuple = Impossible<bool, NotNone>;
    type SerializeTupleStruct = Impossible<bool, NotNone>;
    type SerializeTupleVariant = Impossible<bool, NotNone>;
    type SerializeMap = Impossible<bool, NotNone>;
    type SerializeStruct = Impossible<bool, NotNone>;
    type SerializeStructVariant = Impossible<bool, NotNone>;

    not_none!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_none(self) -> Result<bool, NotNone> {
        Ok(true)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, NotNone> {
        Ok(false)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotNone> {
        Ok(false)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotNone> {
        Ok(false)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotNone> {
        Err(NotNone)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotNone> {
        Err(NotNone)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotNone> {
        Err(NotNone)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotNone> {
        Err(NotNone)
    }
}

/// Moves raw payload types out without serde; `None` for other types.
fn decode_raw<T: 'static>(payload: &Bytes) -> Option<Result<T, DecodeError>> {
    let mut slot: Option<T> = None;
    let any: &mut dyn Any = &mut slot;
    if let Some(slot) = any.downcast_mut::<Option<Bytes>>() {
        *slot = Some(payload.clone());
    } else if let Some(slot) = any.downcast_mut::<Option<Vec<u8>>>() {
        *slot = Some(payload.to_vec());
    } else if let Some(slot) = any.downcast_mut::<Option<String>>() {
        match std::str::from_utf8(payload) {
            Ok(text) => *slot = Some(text.to_owned()),
            Err(e) => {
                return Some(Err(DecodeError {
                    target: "String",
                    codec: Codec::Text,
                    reason: e.to_string(),
                }));
            }
        }
    } else {
        return None;
    }
    slot.map(Ok)
}

/// Takes raw payload types out of `slot` without serde; `None` (leaving the
/// slot filled) for other types.
fn encode_raw<T: 'static>(slot: &mut Option<T>) -> Option<Option<Bytes>> {
    let any: &mut dyn Any = slot;
    if let Some(bytes) = any.downcast_mut::<Option<Bytes>>() {
        return Some(bytes.take());
    }
    if let Some(vec) = any.downcast_mut::<Option<Vec<u8>>>() {
        return Some(vec.take().map(Bytes::from));
    }
    if let Some(text) = any.downcast_mut::<Option<String>>() {
        return Some(text.take().map(Bytes::from));
    }
    if let Some(text) = any.downcast_mut::<Option<&'static str>>() {
        return Some(text.take().map(|t| Bytes::from_static(t.as_bytes())));
    }
    if any.downcast_mut::<Option<()>>().is_some() {
        return Some(None);
    }
    None
}

/// A content type bindery has no codec for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported content type `{0}`; supported: application/json, text/plain, application/octet-stream"
)]
pub struct UnsupportedContentType(pub String);

/// A payload that could not be decoded. It is never retried: the message
/// goes to the dead-letter destination.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot decode {codec:?} payload as `{target}`: {reason}")]
pub struct DecodeError {
    target: &'static str,
    codec: Codec,
    reason: String,
}

impl DecodeError {
    /// A decode error for a payload whose content type has no codec.
    pub fn unsupported(target: &'static str, error: &UnsupportedContentType) -> Self {
        Self {
            target,
            codec: Codec::Binary,
            reason: error.to_string(),
        }
    }
}

/// A value that could not be encoded for its output binding.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot encode `{source_type}` as {codec:?}: {reason}")]
pub struct EncodeError {
    source_type: &'static str,
    codec: Codec,
    reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
    }

    #[test]
    fn content_type_essence_and_quotes() {
        assert_eq!(
            Codec::for_content_type("application/json;charset=utf-8"),
            Ok(Codec::Json)
        );
        assert_eq!(Codec::for_content_type("\"text/plain\""), Ok(Codec::Text));
        assert_eq!(
            Codec::for_content_type("application/vnd.x+json"),
            Ok(Codec::Json)
        );
        assert!(Codec::for_content_type("application/xml").is_err());
    }

    #[test]
    fn raw_types_pass_through() {
        let payload = Bytes::from_static(b"not json");
        assert_eq!(Codec::Json.decode::<Bytes>(&payload).unwrap(), payload);
        assert_eq!(Codec::Json.decode::<String>(&payload).unwrap(), "not json");
        assert_eq!(
            Codec::Binary.encode(payload.clone()).unwrap(),
            Some(payload)
        );
        assert_eq!(Codec::Json.encode("hi".to_string()).unwrap().unwrap(), "hi");
        assert_eq!(Codec::Json.encode(()).unwrap(), None);
    }

    #[test]
    fn json_round_trip_and_none_filters() {
        let bytes = Codec::Json.encode(Order { id: 7 }).unwrap().unwrap();
        assert_eq!(
            Codec::Json.decode::<Order>(&bytes).unwrap(),
            Order { id: 7 }
        );
        assert_eq!(Codec::Json.encode(None::<Order>).unwrap(), None);
        assert!(Codec::Binary.decode::<Order>(&bytes).is_err());
        let error = Codec::Json
            .decode::<Order>(&Bytes::from_static(b"{"))
            .unwrap_err();
        assert!(error.to_string().contains("Order"), "{error}");
    }

    #[test]
    fn a21_only_none_and_unit_filter_never_a_value_that_is_json_null() {
        #[derive(Serialize)]
        struct Done;
        assert_eq!(Codec::Json.encode(None::<u32>).unwrap(), None);
        assert_eq!(Codec::Json.encode(()).unwrap(), None);
        let null = Some(Bytes::from_static(b"null"));
        assert_eq!(Codec::Json.encode(Done).unwrap(), null);
        assert_eq!(Codec::Json.encode(serde_json::Value::Null).unwrap(), null);
        assert_eq!(Codec::Json.encode(Some(None::<u32>)).unwrap(), null);
        assert_eq!(
            Codec::Json.encode(Some(3u32)).unwrap(),
            Some(Bytes::from_static(b"3"))
        );
    }

    #[test]
    fn text_writes_strings_bare_and_numbers_as_text() {
        assert_eq!(Codec::Text.encode(42u32).unwrap().unwrap(), "42");
        assert_eq!(
            Codec::Text
                .decode::<u32>(&Bytes::from_static(b"42"))
                .unwrap(),
            42
        );
        assert_eq!(
            Codec::Text.encode(Some("x".to_string())).unwrap().unwrap(),
            "x"
        );
    }
}
