//! Extractors: how function arguments are taken from a message.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::context::{Context, Sender, state_name};
use crate::codec::Codec;
use crate::error::FunctionError;
use crate::message::{DeliveryId, DeliveryInfo, Headers, Message};

static NO_MESSAGE: LazyLock<Message> = LazyLock::new(|| Message::new(Bytes::new()));

/// What an invocation sees: the inbound message, its codec, the attempt and
/// the application context.
#[derive(Debug)]
pub struct Input<'a> {
    message: &'a Message,
    codec: Codec,
    attempt: u32,
    /// Delivery facts of the inbound message, given by the runtime (a later
    /// stage of a composition sees the first stage's delivery).
    delivery: Option<&'a DeliveryInfo>,
    context: &'a Arc<Context>,
}

impl<'a> Input<'a> {
    /// The input of a message decoded with `codec` on its `attempt`.
    pub fn new(
        message: &'a Message,
        codec: Codec,
        attempt: u32,
        context: &'a Arc<Context>,
    ) -> Self {
        Self {
            message,
            codec,
            attempt,
            delivery: None,
            context,
        }
    }

    /// The input of a source poll: no message.
    pub fn for_source(context: &'a Arc<Context>) -> Self {
        Self::new(&NO_MESSAGE, Codec::Json, 1, context)
    }

    /// The delivery facts of the inbound message.
    pub fn with_delivery_info(mut self, info: &'a DeliveryInfo) -> Self {
        self.delivery = Some(info);
        self
    }

    /// The inbound message (empty for sources).
    pub fn message(&self) -> &'a Message {
        self.message
    }

    /// The codec the payload is decoded with.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The attempt, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The application context.
    pub fn context(&self) -> &'a Arc<Context> {
        self.context
    }

    /// Delivery facts: the broker's id for this delivery and the attempt.
    /// A source poll has none.
    pub fn delivery_info(&self) -> DeliveryInfo {
        self.message
            .delivery()
            .or(self.delivery)
            .cloned()
            .unwrap_or_else(|| DeliveryInfo::new(DeliveryId::default(), false))
            .with_attempt(self.attempt)
    }

    /// Decodes the payload as `T` with this input's codec.
    pub fn decode<T: DeserializeOwned + 'static>(&self) -> Result<T, FunctionError> {
        self.codec
            .decode(self.message.payload())
            .map_err(FunctionError::non_retryable)
    }
}

/// Markers that keep the extractor impls apart (axum's trick).
pub(super) mod markers {
    /// The argument is a message part.
    #[derive(Debug)]
    pub enum ViaParts {}
    /// The argument is the decoded payload.
    #[derive(Debug)]
    pub enum ViaPayload {}
    /// The argument is the whole message.
    #[derive(Debug)]
    pub enum ViaMessage {}
}

/// A function argument taken from an inbound message.
///
/// Failing to extract is a non-retryable error: the message goes to the
/// dead-letter destination with the reason.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a bindery function argument",
    label = "not an extractor",
    note = "arguments are the payload (a `T: Deserialize`, `String`, `Bytes`), `Message<T>`, or a message part: `Headers`, `Key`, `RoutingKey`, `Attempt`, `State<T>`, `Sender`"
)]
pub trait FromMessage<M>: Sized + Send + 'static {
    /// Whether the argument comes from the inbound message. A function
    /// none of whose arguments do (no argument, or only `State<T>` and
    /// `Sender`) is a source.
    const FROM_MESSAGE: bool = true;

    /// Extracts the argument.
    fn from_message(input: &Input<'_>) -> Result<Self, FunctionError>;
}

/// A function argument taken from the parts of a message other than its
/// payload. Implement it for your own extractors.
pub trait FromMessageParts: Sized + Send + 'static {
    /// Whether the argument comes from the inbound message rather than the
    /// application context (see [`FromMessage::FROM_MESSAGE`]).
    const FROM_MESSAGE: bool = true;

    /// Extracts the argument.
    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError>;
}

impl<T: FromMessageParts> FromMessage<markers::ViaParts> for T {
    const FROM_MESSAGE: bool = T::FROM_MESSAGE;

    fn from_message(input: &Input<'_>) -> Result<Self, FunctionError> {
        T::from_parts(input)
    }
}

impl<T: DeserializeOwned + Send + 'static> FromMessage<markers::ViaPayload> for T {
    fn from_message(input: &Input<'_>) -> Result<Self, FunctionError> {
        input.decode()
    }
}

impl<T: DeserializeOwned + Send + 'static> FromMessage<markers::ViaMessage> for Message<T> {
    fn from_message(input: &Input<'_>) -> Result<Self, FunctionError> {
        let payload = input.decode()?;
        let source = input.message();
        let mut message = Message::new(payload)
            .with_headers(source.headers().clone())
            .with_delivery(input.delivery_info());
        message.set_key(source.key().cloned());
        message.set_routing_key(source.routing_key().map(str::to_owned));
        Ok(message)
    }
}

impl FromMessageParts for Headers {
    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError> {
        Ok(input.message().headers().clone())
    }
}

/// The message's key, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Option<Bytes>);

impl FromMessageParts for Key {
    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError> {
        Ok(Key(input.message().key().cloned()))
    }
}

/// The message's routing key, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingKey(pub Option<String>);

impl FromMessageParts for RoutingKey {
    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError> {
        Ok(RoutingKey(input.message().routing_key().map(str::to_owned)))
    }
}

/// The delivery attempt, starting at 1 (Spring's `deliveryAttempt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt(pub u32);

impl FromMessageParts for Attempt {
    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError> {
        Ok(Attempt(input.attempt()))
    }
}

/// Application state added with `App::builder().state(value)`.
#[derive(Clone, Debug)]
pub struct State<T>(pub T);

/// No state of the requested type was added to the app.
#[derive(Debug, thiserror::Error)]
#[error("no state of type `{0}`; add it with `App::builder().state(value)`")]
pub struct MissingState(&'static str);

impl<T: Clone + Send + Sync + 'static> FromMessageParts for State<T> {
    const FROM_MESSAGE: bool = false;

    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError> {
        input
            .context()
            .state::<T>()
            .cloned()
            .map(State)
            .ok_or_else(|| FunctionError::non_retryable(MissingState(state_name::<T>())))
    }
}

/// The dynamic sender is only there once the app runs.
#[derive(Debug, thiserror::Error)]
#[error("the dynamic sender is not available outside a running app")]
pub struct NoSender;

impl FromMessageParts for Sender {
    const FROM_MESSAGE: bool = false;

    fn from_parts(input: &Input<'_>) -> Result<Self, FunctionError> {
        input
            .context()
            .sender()
            .cloned()
            .ok_or_else(|| FunctionError::non_retryable(NoSender))
    }
}
