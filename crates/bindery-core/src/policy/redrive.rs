//! Preparing a dead letter to be processed again.

use crate::message::{Message, names};

/// Removes what the failure added: every `x-exception-*` header and the
/// attempt count, so the message starts afresh, and marks it as moved by
/// redrive run `run` ([`names::REDRIVE_RUN`]). The `x-original-*` headers
/// stay as a record of where it has been.
pub fn prepare(mut message: Message, run: &str) -> Message {
    message.headers_mut().retain(|name, _| {
        !name.starts_with(names::EXCEPTION_PREFIX) && name != names::DELIVERY_ATTEMPTS
    });
    message
        .headers_mut()
        .insert(names::REDRIVE_RUN, run.to_owned());
    message
}

/// Whether `message` was moved back by redrive run `run` and failed again:
/// the run has then gone through what the dead-letter destination held.
pub fn moved_by(message: &Message, run: &str) -> bool {
    message.headers().get(names::REDRIVE_RUN) == Some(run)
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
        let prepared = prepare(message, "run-1");
        let names: Vec<&str> = prepared.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["x-original-destination", "trace-id", "x-bindery-redrive"]
        );
        assert!(moved_by(&prepared, "run-1"));
        assert!(!moved_by(&prepared, "run-2"));
    }
}
