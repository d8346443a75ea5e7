//! The message model: payload, headers, key and routing key.

use std::borrow::Cow;
use std::fmt;

use std::sync::Arc;

use bytes::Bytes;

/// Names of the headers bindery reads and writes.
///
/// They follow Spring Cloud Stream so that bindery services interoperate
/// with Spring services on the same destinations.
pub mod names {
    /// The payload's media type, as Spring writes it.
    pub const CONTENT_TYPE: &str = "contentType";
    /// The message's error text, on dead letters.
    pub const EXCEPTION_MESSAGE: &str = "x-exception-message";
    /// The whole error chain, one cause per line, on dead letters.
    pub const EXCEPTION_STACKTRACE: &str = "x-exception-stacktrace";
    /// The Rust type name of the error, on dead letters.
    pub const EXCEPTION_FQCN: &str = "x-exception-fqcn";
    /// The destination the message was consumed from, on dead letters.
    pub const ORIGINAL_DESTINATION: &str = "x-original-destination";
    /// The group the message was consumed in, on dead letters.
    pub const ORIGINAL_GROUP: &str = "x-original-group";
    /// How many times the function was invoked, on dead letters.
    pub const DELIVERY_ATTEMPTS: &str = "x-delivery-attempts";
    /// Prefix shared by the exception headers (removed on redrive).
    pub const EXCEPTION_PREFIX: &str = "x-exception-";
    /// Prefix of the headers that say where a dead letter came from.
    pub const ORIGINAL_PREFIX: &str = "x-original-";
    /// The redrive run that moved a dead letter back, so the run stops when
    /// the same message comes back to the dead-letter destination.
    pub const REDRIVE_RUN: &str = "x-bindery-redrive";

    /// Whether a header describes the transport of one message rather than
    /// its content, so an output must not inherit it from its input.
    pub fn is_transport(name: &str) -> bool {
        name == CONTENT_TYPE
            || name == DELIVERY_ATTEMPTS
            || name == REDRIVE_RUN
            || name.starts_with(EXCEPTION_PREFIX)
            || name.starts_with(ORIGINAL_PREFIX)
            || name == "x-death"
            || name.starts_with("x-first-death-")
            || name.starts_with("x-last-death-")
    }
}

/// One header value: text, or bytes that are not text.
///
/// Most headers are text, and [`Headers::get`] reads those. Some brokers
/// carry bytes (Kafka header values are byte arrays, and Spring writes
/// binary ones such as `x-original-partition`); a binder keeps those as
/// [`HeaderValue::Bytes`] so they are written back byte for byte instead of
/// being decoded lossily.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum HeaderValue {
    /// Text; binders write it as UTF-8.
    Text(Cow<'static, str>),
    /// Raw bytes, written back unchanged.
    Bytes(Bytes),
}

impl HeaderValue {
    /// A value read off the wire: text when `bytes` are valid UTF-8, raw
    /// bytes otherwise. Nothing is lost either way.
    pub fn from_wire(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => HeaderValue::Text(Cow::Owned(text.to_owned())),
            Err(_) => HeaderValue::Bytes(Bytes::copy_from_slice(bytes)),
        }
    }

    /// The text, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            HeaderValue::Text(text) => Some(text),
            HeaderValue::Bytes(_) => None,
        }
    }

    /// The value as bytes on the wire: a text value's UTF-8, or the raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HeaderValue::Text(text) => text.as_bytes(),
            HeaderValue::Bytes(bytes) => bytes,
        }
    }

    /// Length of [`HeaderValue::as_bytes`].
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the value is empty (of either kind).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValue::Text(text) => fmt::Debug::fmt(text, f),
            // `Bytes` prints `b"..."` with escapes, telling the kinds apart.
            HeaderValue::Bytes(bytes) => fmt::Debug::fmt(bytes, f),
        }
    }
}

impl From<&'static str> for HeaderValue {
    fn from(text: &'static str) -> Self {
        HeaderValue::Text(Cow::Borrowed(text))
    }
}

impl From<String> for HeaderValue {
    fn from(text: String) -> Self {
        HeaderValue::Text(Cow::Owned(text))
    }
}

impl From<Cow<'static, str>> for HeaderValue {
    fn from(text: Cow<'static, str>) -> Self {
        HeaderValue::Text(text)
    }
}

impl From<Bytes> for HeaderValue {
    fn from(bytes: Bytes) -> Self {
        HeaderValue::Bytes(bytes)
    }
}

impl From<Vec<u8>> for HeaderValue {
    fn from(bytes: Vec<u8>) -> Self {
        HeaderValue::Bytes(Bytes::from(bytes))
    }
}

type Entry = (Cow<'static, str>, HeaderValue);

/// Message headers: an ordered list of text names and values, text or
/// bytes ([`HeaderValue`]).
///
/// Names are case-sensitive, as in Spring. Setting a name that is present
/// replaces its value. Most messages carry a handful of headers, so a small
/// vector beats a map. The list is shared copy-on-write: cloning headers —
/// which binders and the runtime do for every message — costs a reference
/// count, and a change copies the list only if someone else holds it.
///
/// The text accessors ([`get`](Headers::get), [`iter`](Headers::iter))
/// see text values only; binders that carry bytes use
/// [`iter_values`](Headers::iter_values), [`get_value`](Headers::get_value)
/// and [`insert_bytes`](Headers::insert_bytes).
#[derive(Clone, Default)]
pub struct Headers {
    entries: Option<Arc<Vec<Entry>>>,
}

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> &[Entry] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }

    fn entries_mut(&mut self) -> &mut Vec<Entry> {
        Arc::make_mut(self.entries.get_or_insert_with(Default::default))
    }

    /// The value of `name`, of either kind, if present.
    pub fn get_value(&self, name: &str) -> Option<&HeaderValue> {
        self.entries()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The text value of `name`; `None` when absent or a byte value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_value(name).and_then(HeaderValue::as_text)
    }

    /// The value of `name` as bytes: raw bytes, or a text value's UTF-8.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.get_value(name).map(HeaderValue::as_bytes)
    }

    /// Whether `name` is present (with a value of either kind).
    pub fn contains(&self, name: &str) -> bool {
        self.get_value(name).is_some()
    }

    /// Sets `name` to the text `value`, replacing an earlier value.
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        self.insert_value(name, HeaderValue::Text(value.into()));
    }

    /// Sets `name` to the raw bytes `value`, replacing an earlier value.
    pub fn insert_bytes(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) {
        self.insert_value(name, HeaderValue::Bytes(value.into()));
    }

    /// Sets `name` to `value` of either kind, replacing an earlier value.
    pub fn insert_value(&mut self, name: impl Into<Cow<'static, str>>, value: HeaderValue) {
        let name = name.into();
        let entries = self.entries_mut();
        match entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => entries.push((name, value)),
        }
    }

    /// Removes `name`, returning its value of either kind.
    pub fn remove_value(&mut self, name: &str) -> Option<HeaderValue> {
        let index = self.entries().iter().position(|(n, _)| n == name)?;
        Some(self.entries_mut().remove(index).1)
    }

    /// Removes `name`, returning its text value (`None` for a byte value,
    /// which is removed all the same).
    pub fn remove(&mut self, name: &str) -> Option<Cow<'static, str>> {
        match self.remove_value(name)? {
            HeaderValue::Text(text) => Some(text),
            HeaderValue::Bytes(_) => None,
        }
    }

    /// Keeps only the headers for which `keep` returns true. A byte value
    /// is passed as empty text, so filters by name work on every header;
    /// [`retain_values`](Headers::retain_values) sees the bytes.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.retain_values(|n, v| keep(n, v.as_text().unwrap_or_default()));
    }

    /// Keeps only the headers for which `keep` returns true.
    pub fn retain_values(&mut self, mut keep: impl FnMut(&str, &HeaderValue) -> bool) {
        if self.entries().iter().all(|(n, v)| keep(n, v)) {
            return;
        }
        self.entries_mut().retain(|(n, v)| keep(n, v));
    }

    /// Iterates over the `(name, value)` pairs of text values, in insertion
    /// order; byte values are left out (see
    /// [`iter_values`](Headers::iter_values)).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries()
            .iter()
            .filter_map(|(n, v)| Some((n.as_ref(), v.as_text()?)))
    }

    /// Iterates over every header, text or bytes, in insertion order: what
    /// a binder writes to the wire.
    pub fn iter_values(&self) -> impl Iterator<Item = (&str, &HeaderValue)> {
        self.entries().iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// Number of headers, of either kind.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The `contentType` header.
    pub fn content_type(&self) -> Option<&str> {
        self.get(names::CONTENT_TYPE)
    }

    /// The headers an output inherits from its input: all but the
    /// transport ones ([`names::is_transport`]), byte values included.
    pub fn inheritable(&self) -> Headers {
        if self.entries().iter().all(|(n, _)| names::is_transport(n)) {
            return Headers::new();
        }
        let kept = self
            .entries()
            .iter()
            .filter(|(n, _)| !names::is_transport(n))
            .cloned()
            .collect();
        Headers {
            entries: Some(Arc::new(kept)),
        }
    }

    /// Appends `entries` in linear time, a later value of a name replacing
    /// an earlier one (audit A17).
    fn extend_entries(&mut self, iter: impl IntoIterator<Item = Entry>) {
        let entries = self.entries_mut();
        let before = entries.len();
        entries.extend(iter);
        dedup_keeping_last(entries, before);
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter_values()).finish()
    }
}

impl<N, V> FromIterator<(N, V)> for Headers
where
    N: Into<Cow<'static, str>>,
    V: Into<Cow<'static, str>>,
{
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        headers.extend(iter);
        headers
    }
}

impl<N, V> Extend<(N, V)> for Headers
where
    N: Into<Cow<'static, str>>,
    V: Into<Cow<'static, str>>,
{
    /// Linear in the number of headers, however many there are: a later
    /// value of a name replaces an earlier one, as [`Headers::insert`] does,
    /// but without searching the list once per header (audit A17).
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        self.extend_entries(
            iter.into_iter()
                .map(|(n, v)| (n.into(), HeaderValue::Text(v.into()))),
        );
    }
}

impl<N> FromIterator<(N, HeaderValue)> for Headers
where
    N: Into<Cow<'static, str>>,
{
    fn from_iter<I: IntoIterator<Item = (N, HeaderValue)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        headers.extend(iter);
        headers
    }
}

impl<N> Extend<(N, HeaderValue)> for Headers
where
    N: Into<Cow<'static, str>>,
{
    /// Linear, like the text form: what a binder uses to build inbound
    /// headers of either kind.
    fn extend<I: IntoIterator<Item = (N, HeaderValue)>>(&mut self, iter: I) {
        self.extend_entries(iter.into_iter().map(|(n, v)| (n.into(), v)));
    }
}

/// Removes earlier duplicates of names in `entries`, where only the entries
/// from `added` on may be new: the last value of a name wins and keeps the
/// position of its first occurrence.
fn dedup_keeping_last(entries: &mut Vec<Entry>, added: usize) {
    const SMALL: usize = 16;
    if entries.len() <= SMALL {
        let mut i = added;
        while i < entries.len() {
            if let Some(first) = entries[..i].iter().position(|(n, _)| *n == entries[i].0) {
                let (_, value) = entries.remove(i);
                entries[first].1 = value;
            } else {
                i += 1;
            }
        }
        return;
    }
    let mut first_index: std::collections::HashMap<Cow<'static, str>, usize> =
        std::collections::HashMap::with_capacity(entries.len());
    let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
    for (name, value) in entries.drain(..) {
        match first_index.get(&name) {
            Some(&index) => kept[index].1 = value,
            None => {
                first_index.insert(name.clone(), kept.len());
                kept.push((name, value));
            }
        }
    }
    *entries = kept;
}

/// The broker's identity of one delivery, for logs and for functions that
/// record where a message came from. Cheap to make for every delivery: the
/// place is shared by all deliveries from it, and the text is formed only
/// when displayed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryId {
    /// A position in a queue, such as a delivery tag or a sequence number:
    /// shown as `<queue>#<number>`.
    InQueue {
        /// The queue.
        queue: Arc<str>,
        /// The position.
        number: u64,
    },
    /// A record of a partitioned log: shown as `<topic>/<partition>@<offset>`.
    InPartition {
        /// The topic.
        topic: Arc<str>,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
    },
    /// Any other identity, shown as it is.
    Other(Arc<str>),
}

impl DeliveryId {
    /// A position in a queue.
    pub fn in_queue(queue: Arc<str>, number: u64) -> Self {
        Self::InQueue { queue, number }
    }

    /// A record of a partitioned log.
    pub fn in_partition(topic: Arc<str>, partition: i32, offset: i64) -> Self {
        Self::InPartition {
            topic,
            partition,
            offset,
        }
    }
}

impl Default for DeliveryId {
    /// No identity: a message that was not delivered by a broker.
    fn default() -> Self {
        Self::Other(Arc::from(""))
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InQueue { queue, number } => write!(f, "{queue}#{number}"),
            Self::InPartition {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// Where an inbound message came from and how often it was tried.
///
/// [`Delivery::new`](crate::binder::Delivery::new) takes it from the
/// binder's handle once per delivery; the runtime hands it to the function
/// as data (a `Message<T>` argument carries it, see [`Message::delivery`]).
/// Messages functions build carry none.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryInfo {
    /// The broker's identity of this delivery (sequence, tag, or offset).
    pub id: DeliveryId,
    /// The invocation attempt, starting at 1.
    pub attempt: u32,
    /// Whether the broker delivered this message before.
    pub redelivered: bool,
}

impl DeliveryInfo {
    /// The first attempt at delivery `id`.
    pub fn new(id: DeliveryId, redelivered: bool) -> Self {
        Self {
            id,
            attempt: 1,
            redelivered,
        }
    }

    /// These facts for invocation attempt `attempt`.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }
}

/// A message: a payload with headers, an optional key and routing key.
///
/// Binders move `Message<Bytes>`; functions may take or return
/// `Message<T>` for a typed payload when they need the other parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<T = Bytes> {
    payload: T,
    headers: Headers,
    /// Key, routing key and delivery facts, boxed: many messages have none,
    /// and a small message is cheap to move through the runtime.
    extras: Option<Box<Extras>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extras {
    key: Option<Bytes>,
    routing_key: Option<String>,
    delivery: Option<DeliveryInfo>,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.key.is_none() && self.routing_key.is_none() && self.delivery.is_none()
    }
}

impl<T> Message<T> {
    /// A message with `payload` and nothing else.
    pub fn new(payload: T) -> Self {
        Self {
            payload,
            headers: Headers::new(),
            extras: None,
        }
    }

    fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// Drops the box when nothing is left in it.
    fn tidy(&mut self) {
        if self.extras.as_deref().is_some_and(Extras::is_empty) {
            self.extras = None;
        }
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the key (Kafka's record key; the ordering key everywhere).
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.extras_mut().key = Some(key.into());
        self
    }

    /// Sets the routing key matched against `binding-routing-keys`.
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.extras_mut().routing_key = Some(routing_key.into());
        self
    }

    /// Sets the `contentType` header.
    pub fn with_content_type(self, content_type: impl Into<Cow<'static, str>>) -> Self {
        self.with_header(names::CONTENT_TYPE, content_type)
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut T {
        &mut self.payload
    }

    /// Takes the payload, dropping the rest.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&Bytes> {
        self.extras()?.key.as_ref()
    }

    /// Sets or clears the key.
    pub fn set_key(&mut self, key: Option<Bytes>) {
        if key.is_some() || self.extras.is_some() {
            self.extras_mut().key = key;
            self.tidy();
        }
    }

    /// The routing key, if any.
    pub fn routing_key(&self) -> Option<&str> {
        self.extras()?.routing_key.as_deref()
    }

    /// Sets or clears the routing key.
    pub fn set_routing_key(&mut self, routing_key: Option<String>) {
        if routing_key.is_some() || self.extras.is_some() {
            self.extras_mut().routing_key = routing_key;
            self.tidy();
        }
    }

    /// The `contentType` header.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.content_type()
    }

    /// Delivery facts (id, attempt) of an inbound message.
    pub fn delivery(&self) -> Option<&DeliveryInfo> {
        self.extras()?.delivery.as_ref()
    }

    /// Attaches delivery facts; the runtime does this for the `Message<T>`
    /// a function takes.
    pub fn with_delivery(mut self, delivery: DeliveryInfo) -> Self {
        self.extras_mut().delivery = Some(delivery);
        self
    }

    /// Replaces the payload, keeping every other part.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Message<U> {
        Message {
            payload: f(self.payload),
            headers: self.headers,
            extras: self.extras,
        }
    }

    /// Replaces the payload with a fallible conversion, keeping the rest.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Message<U>, E> {
        Ok(Message {
            payload: f(self.payload)?,
            headers: self.headers,
            extras: self.extras,
        })
    }
}

impl<T: Default> Default for Message<T> {
    fn default() -> Self {
        Message::new(T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_keeps_order() {
        let mut headers = Headers::new();
        headers.insert("a", "1");
        headers.insert("b", "2");
        headers.insert("a", "3");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
        assert_eq!(headers.remove("a").as_deref(), Some("3"));
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn a17_building_many_headers_is_linear_and_keeps_the_last_value() {
        let count = 200_000;
        let started = std::time::Instant::now();
        let headers: Headers = (0..count)
            .map(|i| (format!("h{i}"), "v"))
            .chain([("h7".to_owned(), "last")])
            .collect();
        assert_eq!(headers.len(), count);
        assert_eq!(headers.get("h7"), Some("last"));
        assert_eq!(
            headers.iter().nth(7),
            Some(("h7", "last")),
            "first position kept"
        );
        // Quadratic insertion takes minutes at this size; linear, milliseconds.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let small: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(small.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
    }

    #[test]
    fn a25_byte_values_are_kept_apart_from_text_and_unchanged() {
        let mut headers = Headers::new();
        headers.insert("text", "plain");
        headers.insert_bytes("binary", vec![0xff, 0x00, b'a']);
        headers.insert_value("wire", HeaderValue::from_wire(b"\xc3\x28"));
        headers.insert_value("utf8", HeaderValue::from_wire("caf\u{e9}".as_bytes()));
        assert_eq!(headers.get("binary"), None, "not text");
        assert!(headers.contains("binary"));
        assert_eq!(headers.get_bytes("binary"), Some(&[0xff, 0x00, b'a'][..]));
        assert_eq!(headers.get_bytes("wire"), Some(&[0xc3, 0x28][..]));
        assert_eq!(
            headers.get("utf8"),
            Some("caf\u{e9}"),
            "valid UTF-8 is text"
        );
        assert_eq!(headers.get_bytes("text"), Some(&b"plain"[..]));
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [("text", "plain"), ("utf8", "caf\u{e9}")]
        );
        assert_eq!(headers.iter_values().count(), 4);
        // Clones and inheritance keep the bytes.
        let inherited = headers.clone().inheritable();
        assert_eq!(inherited.get_value("binary"), headers.get_value("binary"));
        // Name filters see byte values too.
        headers.retain(|name, _| name != "wire");
        assert!(!headers.contains("wire"));
        assert_eq!(headers.remove("binary"), None, "a byte value is not text");
        assert!(!headers.contains("binary"), "but it is removed");
        let built: Headers = [
            ("a", HeaderValue::from(vec![1u8])),
            ("b", HeaderValue::from("x")),
            ("a", HeaderValue::from(vec![2u8])),
        ]
        .into_iter()
        .collect();
        assert_eq!(built.get_bytes("a"), Some(&[2u8][..]));
        assert_eq!(built.len(), 2);
        assert_eq!(format!("{built:?}"), r#"{"a": b"\x02", "b": "x"}"#);
    }

    #[test]
    fn clones_share_headers_until_one_changes() {
        let mut first = Headers::new();
        first.insert("a", "1");
        let mut second = first.clone();
        second.insert("b", "2");
        assert_eq!(first.len(), 1, "the original is untouched");
        assert_eq!(second.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
    }

    #[test]
    fn clearing_key_and_routing_key_leaves_a_bare_message() {
        let mut message = Message::new(Bytes::new())
            .with_key("k")
            .with_routing_key("r");
        message.set_key(None);
        message.set_routing_key(None);
        assert_eq!(message, Message::new(Bytes::new()));
    }

    #[test]
    fn builder_sets_every_part() {
        let message = Message::new(Bytes::from_static(b"x"))
            .with_key("k")
            .with_routing_key("item.insert")
            .with_content_type("text/plain");
        assert_eq!(message.key().map(|k| &k[..]), Some(&b"k"[..]));
        assert_eq!(message.routing_key(), Some("item.insert"));
        assert_eq!(message.content_type(), Some("text/plain"));
    }
}
