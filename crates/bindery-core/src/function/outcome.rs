//! What a function's return value becomes.

use std::any::TypeId;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::Serialize;

use crate::codec::Codec;
use crate::error::FunctionError;
use crate::message::Message;

/// The result of one invocation.
pub enum Outcome {
    /// Nothing to send: a sink, `()` or a filtered `None`.
    Nothing,
    /// A payload; the message inherits the input's headers.
    Payload(Bytes),
    /// A whole message, exactly as the function built it.
    Message(Message),
    /// Several outcomes in turn (a source returning a stream).
    Stream(BoxStream<'static, Result<Outcome, FunctionError>>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Nothing => f.write_str("Nothing"),
            Outcome::Payload(p) => f.debug_tuple("Payload").field(&p.len()).finish(),
            Outcome::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Outcome::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Markers that keep the outcome impls apart.
pub(super) mod markers {
    use std::marker::PhantomData;

    /// A serializable value.
    #[derive(Debug)]
    pub enum OutValue {}
    /// A whole message.
    #[derive(Debug)]
    pub enum OutMessage {}
    /// An optional whole message.
    #[derive(Debug)]
    pub enum OutOptionMessage {}
    /// A result of another outcome.
    #[derive(Debug)]
    pub struct OutResult<M>(PhantomData<M>);
    /// A stream of another outcome.
    #[derive(Debug)]
    pub struct OutStream<M>(PhantomData<M>);
}

/// A function return value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a bindery function",
    label = "not a function output",
    note = "return a `T: Serialize`, `Option<T>` (None filters), `Message<T>`, `()`, a `Stream` of those, or a `Result<_, E>` where E converts into `FunctionError` (any std error does)"
)]
pub trait IntoOutcome<M>: Send + 'static {
    /// Whether values of this type produce messages (false for `()`).
    fn produces_output() -> bool {
        true
    }

    /// Converts, encoding payloads with `codec`.
    fn into_outcome(self, codec: Codec) -> Result<Outcome, FunctionError>;
}

impl<T: Serialize + Send + 'static> IntoOutcome<markers::OutValue> for T {
    fn produces_output() -> bool {
        TypeId::of::<T>() != TypeId::of::<()>()
    }

    fn into_outcome(self, codec: Codec) -> Result<Outcome, FunctionError> {
        match codec.encode(self).map_err(FunctionError::non_retryable)? {
            Some(bytes) => Ok(Outcome::Payload(bytes)),
            None => Ok(Outcome::Nothing),
        }
    }
}

impl<T: Serialize + Send + 'static> IntoOutcome<markers::OutMessage> for Message<T> {
    fn into_outcome(self, codec: Codec) -> Result<Outcome, FunctionError> {
        let codec = match self.content_type() {
            Some(ct) => Codec::for_content_type(ct).map_err(FunctionError::non_retryable)?,
            None => codec,
        };
        let mut encoded = None;
        let message = self.map(|payload| encoded = Some(codec.encode(payload)));
        match encoded
            .expect("map ran")
            .map_err(FunctionError::non_retryable)?
        {
            Some(bytes) => Ok(Outcome::Message(message.map(|()| bytes))),
            None => Ok(Outcome::Nothing),
        }
    }
}

impl<T: Serialize + Send + 'static> IntoOutcome<markers::OutOptionMessage> for Option<Message<T>> {
    fn into_outcome(self, codec: Codec) -> Result<Outcome, FunctionError> {
        match self {
            Some(message) => message.into_outcome(codec),
            None => Ok(Outcome::Nothing),
        }
    }
}

impl<O, E, M> IntoOutcome<markers::OutResult<M>> for Result<O, E>
where
    O: IntoOutcome<M>,
    E: Into<FunctionError> + Send + 'static,
    M: 'static,
{
    fn produces_output() -> bool {
        O::produces_output()
    }

    fn into_outcome(self, codec: Codec) -> Result<Outcome, FunctionError> {
        self.map_err(Into::into)?.into_outcome(codec)
    }
}

impl<S, M> IntoOutcome<markers::OutStream<M>> for S
where
    S: Stream + Send + 'static,
    S::Item: IntoOutcome<M>,
    M: 'static,
{
    fn produces_output() -> bool {
        <S::Item as IntoOutcome<M>>::produces_output()
    }

    fn into_outcome(self, codec: Codec) -> Result<Outcome, FunctionError> {
        Ok(Outcome::Stream(
            self.map(move |item| item.into_outcome(codec)).boxed(),
        ))
    }
}
