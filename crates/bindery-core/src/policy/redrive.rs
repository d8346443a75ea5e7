//! Preparing a dead letter to be processed again.

use crate::message::{Message, names};

/// Removes what the failure added: every `x-exception-*` header and the
/// attempt count, so the message starts afresh. The `x-original-*` headers
/// stay as a record of where it has been.
pub fn prepare(mut message: Message) -> Message {
    message.headers_mut().retain(|name, _| {
        !name.starts_with(names::EXCEPTION_PREFIX) && name != names::DELIVERY_ATTEMPTS
    });
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn strips_exception_headers_and_attempts() {
        let message = Message::new(Bytes::new())
            .with_header(names::EXCEPTION_MESSAGE, "boom")
            .with_header(names::EXCEPTION_FQCN, "E")
            .with_header(names::DELIVERY_ATTEMPTS, "3")
            .with_header(names::ORIGINAL_DESTINATION, "orders")
            .with_header("trace-id", "t1");
        let prepared = prepare(message);
        let names: Vec<&str> = prepared.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-original-destination", "trace-id"]);
    }
}
