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

    /// Whether a header describes the transport of one message rather than
    /// its content, so an output must not inherit it from its input.
    pub fn is_transport(name: &str) -> bool {
        name == CONTENT_TYPE
            || name == DELIVERY_ATTEMPTS
            || name.starts_with(EXCEPTION_PREFIX)
            || name.starts_with(ORIGINAL_PREFIX)
            || name == "x-death"
            || name.starts_with("x-first-death-")
            || name.starts_with("x-last-death-")
    }
}

type Entry = (Cow<'static, str>, Cow<'static, str>);

/// Message headers: an ordered list of text names and text values.
///
/// Names are case-sensitive, as in Spring. Setting a name that is present
/// replaces its value. Most messages carry a handful of headers, so a small
/// vector beats a map. The list is shared copy-on-write: cloning headers —
/// which binders and the runtime do for every message — costs a reference
/// count, and a change copies the list only if someone else holds it.
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

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        let name = name.into();
        let value = value.into();
        let entries = self.entries_mut();
        match entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => entries.push((name, value)),
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Cow<'static, str>> {
        let index = self.entries().iter().position(|(n, _)| n == name)?;
        Some(self.entries_mut().remove(index).1)
    }

    /// Keeps only the headers for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        if self.entries().iter().all(|(n, v)| keep(n, v)) {
            return;
        }
        self.entries_mut().retain(|(n, v)| keep(n, v));
    }

    /// Iterates over `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries().iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// Number of headers.
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
    /// transport ones ([`names::is_transport`]).
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
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
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
        let entries = self.entries_mut();
        let before = entries.len();
        entries.extend(iter.into_iter().map(|(n, v)| (n.into(), v.into())));
        dedup_keeping_last(entries, before);
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

/// Where an inbound message came from and how often it was tried.
///
/// Present on messages handed to functions; absent on messages they build.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryInfo {
    /// The broker's identity of this delivery (sequence, tag, or offset).
    pub id: String,
    /// The invocation attempt, starting at 1.
    pub attempt: u32,
    /// Whether the broker delivered this message before.
    pub redelivered: bool,
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

    /// Attaches delivery facts; the runtime does this for inbound messages.
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
        assert_eq!(headers.iter().nth(7), Some(("h7", "last")), "first position kept");
        // Quadratic insertion takes minutes at this size; linear, milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        let small: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(small.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
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
