//! Building a dead letter: the original message with the reason in its
//! headers, named as Spring Cloud Stream names them.

use crate::binder::Acknowledger;
use crate::error::FunctionError;
use crate::message::{Message, names};

/// Where the failed message was consumed.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    /// The destination it came from.
    pub destination: &'a str,
    /// The group it was consumed in.
    pub group: &'a str,
    /// How many times the function was invoked.
    pub attempts: u32,
}

impl DeadLetter<'_> {
    /// The dead letter for `original`: same payload, key and routing key,
    /// its headers plus every `x-exception-*` and `x-original-*` header,
    /// and the broker-specific ones the delivery adds.
    pub fn build(
        &self,
        original: &Message,
        error: &FunctionError,
        delivery: &Acknowledger,
    ) -> Message {
        let mut message = original.clone();
        let headers = message.headers_mut();
        headers.insert(names::EXCEPTION_MESSAGE, error.to_string());
        headers.insert(names::EXCEPTION_STACKTRACE, error.chain_text());
        headers.insert(names::EXCEPTION_FQCN, error.type_name());
        headers.insert(names::ORIGINAL_DESTINATION, self.destination.to_owned());
        headers.insert(names::ORIGINAL_GROUP, self.group.to_owned());
        headers.insert(names::DELIVERY_ATTEMPTS, self.attempts.to_string());
        delivery.dead_letter_headers(headers);
        message
    }
}
