//! The invoke stage: decode → call → encode → publish, for one attempt.
//!
//! A panic in the function (or in the stream it returns) is caught and is
//! a failure like an error: not retried, dead-lettered with the panic
//! message (audit A3, A4). An invocation that runs past the binding's
//! `invocation-timeout` is a retryable failure (audit A13). A dynamic send
//! inside the function that failed because the broker is away or the app
//! is stopping hands the message back without using an attempt (A19, A10).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bindery_core::codec::{Codec, DecodeError};
use bindery_core::error::FunctionError;
use bindery_core::function::{Context, Function, Input, Outcome, SendError};
use bindery_core::message::{DeliveryInfo, Message};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Confirmations, Failure};
use crate::runtime::output::Output;
use crate::runtime::stats::{Counters, Event};

/// Invokes one binding's function and publishes what it returns.
pub(crate) struct Invoke {
    pub(crate) binding: String,
    pub(crate) function: Arc<dyn Function>,
    pub(crate) output: Option<Arc<Output>>,
    pub(crate) context: Arc<Context>,
    /// The binding's content type, for messages that carry none.
    pub(crate) default_codec: Codec,
    pub(crate) timeout: Option<Duration>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: CancellationToken,
}

/// The function panicked.
#[derive(Debug, thiserror::Error)]
#[error("the function panicked: {0}")]
pub(crate) struct Panicked(String);

/// The function ran past its binding's `invocation-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the function did not return within its invocation-timeout of {0:?}")]
pub(crate) struct TimedOut(Duration);

impl Invoke {
    /// One attempt at `message`: returns the confirmations of its outputs
    /// (none when it produced nothing), or why the attempt failed.
    pub(crate) async fn attempt(
        &self,
        message: &Message,
        delivery: &DeliveryInfo,
        attempt: u32,
    ) -> Result<Confirmations, Failure> {
        let codec = self.codec_of(message)?;
        let output_codec = self.output.as_ref().map_or(Codec::Json, |o| o.codec());
        let input = Input::new(message, codec, attempt, &self.context).with_delivery_info(delivery);
        // Extractors run when the call is made, the function when it is awaited.
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.function.call(&input, output_codec)
        }))
        .map_err(|panic| Failure::Function(panicked(panic)))?;
        let guarded = AssertUnwindSafe(call).catch_unwind();
        let returned = match self.timeout {
            None => guarded.await,
            Some(limit) => tokio::time::timeout(limit, guarded)
                .await
                .map_err(|_| Failure::Function(FunctionError::new(TimedOut(limit))))?,
        };
        let outcome = returned
            .map_err(|panic| Failure::Function(panicked(panic)))?
            .map_err(classify)?;
        let mut confirmations = Confirmations::default();
        match &self.output {
            Some(output) => {
                output
                    .publish(outcome, Some(message), &mut confirmations, &self.shutdown)
                    .await?;
                if confirmations.sent() == 0 {
                    self.counters.bump(Event::Filtered);
                }
            }
            None if !matches!(outcome, Outcome::Nothing) => {
                warn!(binding = %self.binding, "the function produced a message but has no output binding; it is dropped");
            }
            None => {}
        }
        Ok(confirmations)
    }

    /// The codec of `message`: its `contentType`, else the binding's.
    fn codec_of(&self, message: &Message) -> Result<Codec, Failure> {
        match message.content_type() {
            None => Ok(self.default_codec),
            Some(ct) => Codec::for_content_type(ct).map_err(|e| {
                Failure::Function(FunctionError::non_retryable(DecodeError::unsupported(
                    "payload", &e,
                )))
            }),
        }
    }
}

/// A function error as the pipeline sees it: a dynamic send that failed
/// because the broker is away or the app is stopping is not the message's
/// fault, whatever the function made of it.
pub(crate) fn classify(error: FunctionError) -> Failure {
    match error.source_error().downcast_ref::<SendError>() {
        Some(SendError::NotRunning) => {
            Failure::Transient("the dynamic sender is closed: the app is stopping".into())
        }
        Some(SendError::Binder(binder)) if binder.is_transient() => {
            Failure::Transient(format!("a dynamic send failed: {binder}"))
        }
        _ => Failure::Function(error),
    }
}

/// A caught panic as a non-retryable failure carrying the panic message.
pub(crate) fn panicked(panic: Box<dyn Any + Send>) -> FunctionError {
    let message = if let Some(text) = panic.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    };
    FunctionError::non_retryable(Panicked(message))
}

#[cfg(test)]
mod tests {
    use bindery_core::binder::{Delivery, DeliveryHandle};
    use bindery_core::error::{BinderError, BinderErrorKind};
    use bindery_core::function::FunctionRegistry;
    use bytes::Bytes;
    use futures::future::BoxFuture;

    use super::*;

    struct Handle;

    impl DeliveryHandle for Handle {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
            Box::pin(async { Ok(()) })
        }
        fn nack(self: Box<Self>, _: bool) -> BoxFuture<'static, Result<(), BinderError>> {
            Box::pin(async { Ok(()) })
        }
        fn id(&self) -> bindery_core::message::DeliveryId {
            bindery_core::message::DeliveryId::Other("1".into())
        }
    }

    fn stage<H: bindery_core::function::Handler<M>, M: 'static>(
        handler: H,
        timeout: Option<Duration>,
    ) -> Invoke {
        let mut registry = FunctionRegistry::new();
        registry.add("f", handler);
        Invoke {
            binding: "f-in-0".into(),
            function: registry.get("f").unwrap().clone(),
            output: None,
            context: Arc::default(),
            default_codec: Codec::Json,
            timeout,
            counters: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    async fn run(stage: &Invoke, payload: &'static [u8]) -> Result<Confirmations, Failure> {
        let (message, acker) =
            Delivery::new(Message::new(Bytes::from_static(payload)), Box::new(Handle)).into_parts();
        stage.attempt(&message, acker.info(), 1).await
    }

    #[tokio::test]
    async fn a03_a_panic_is_a_non_retryable_failure_with_its_message() {
        async fn explode(n: u32) {
            if n == 7 {
                panic!("unexpected order {n}");
            }
        }
        let stage = stage(explode, None);
        assert!(run(&stage, b"1").await.is_ok());
        match run(&stage, b"7").await {
            Err(Failure::Function(error)) => {
                assert!(!error.is_retryable());
                assert_eq!(
                    error.to_string(),
                    "the function panicked: unexpected order 7"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a13_an_invocation_past_its_timeout_is_a_retryable_failure() {
        async fn hang(_: u32) {
            std::future::pending::<()>().await;
        }
        let stage = stage(hang, Some(Duration::from_secs(5)));
        match run(&stage, b"1").await {
            Err(Failure::Function(error)) => {
                assert!(error.is_retryable());
                assert!(error.to_string().contains("invocation-timeout"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a10_a_dynamic_send_refused_at_shutdown_hands_the_message_back() {
        async fn forward(_: u32) -> Result<(), SendError> {
            Err(SendError::NotRunning)
        }
        async fn offline(_: u32) -> Result<(), SendError> {
            Err(SendError::Binder(BinderError::connection("broker away")))
        }
        async fn refused(_: u32) -> Result<(), SendError> {
            Err(SendError::Binder(BinderError::new(
                BinderErrorKind::Rejected,
                "too large",
            )))
        }
        assert!(matches!(
            run(&stage(forward, None), b"1").await,
            Err(Failure::Transient(_))
        ));
        assert!(matches!(
            run(&stage(offline, None), b"1").await,
            Err(Failure::Transient(_))
        ));
        assert!(matches!(
            run(&stage(refused, None), b"1").await,
            Err(Failure::Function(_))
        ));
    }

    #[tokio::test]
    async fn undecodable_payloads_fail_without_retry() {
        async fn typed(_: u32) {}
        match run(&stage(typed, None), b"not json").await {
            Err(Failure::Function(error)) => assert!(!error.is_retryable()),
            other => panic!("{other:?}"),
        }
    }
}
