//! An output binding: turns function outcomes into messages and hands them
//! to the producer in order, collecting their confirmations.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bindery_core::binder::{Confirmation, Producer};
use bindery_core::codec::{Codec, DEFAULT_CONTENT_TYPE};
use bindery_core::config::OutputPlan;
use bindery_core::error::{BinderError, BinderErrorKind, FunctionError};
use bindery_core::function::Outcome;
use bindery_core::message::{Headers, Message, names};
use bindery_core::template::TemplateError;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::pipeline::invoke::{classify, panicked};
use super::pipeline::{Confirmations, Failure};
use super::stats::{Counters, Event};

/// Most unconfirmed outputs one input (or one source) keeps in flight: a
/// function returning a long stream waits for older confirmations rather
/// than holding an unbounded number (audit A15).
pub(crate) const CONFIRM_WINDOW: usize = 1024;

/// A bound output.
pub(crate) struct Output {
    plan: OutputPlan,
    producer: Arc<dyn Producer>,
    codec: Codec,
    content_type: Cow<'static, str>,
    /// Just the `contentType` header, shared by every message that has no
    /// other header (cloning it costs a reference count).
    content_type_only: Headers,
    counters: Arc<Counters>,
}

/// Why one message could not be handed to the producer.
#[derive(Debug)]
pub(crate) enum SendFailure {
    /// The binder refused the send.
    Binder(BinderError),
    /// A routing-key or partition-key template could not be rendered.
    Template(TemplateError),
}

impl SendFailure {
    /// The failure as the pipeline sees it: a transient binder error hands
    /// the input back without using an attempt (audit A19); anything else
    /// is a failure of this message, not retried.
    pub(crate) fn into_failure(self) -> Failure {
        match self {
            SendFailure::Binder(error) if error.is_transient() => {
                Failure::Transient(format!("an output could not be sent: {error:#}"))
            }
            SendFailure::Binder(error) => Failure::Function(FunctionError::non_retryable(error)),
            SendFailure::Template(error) => Failure::Function(FunctionError::non_retryable(error)),
        }
    }

    /// The failure as a binder error, for the dynamic sender's caller.
    pub(crate) fn into_binder_error(self) -> BinderError {
        match self {
            SendFailure::Binder(error) => error,
            SendFailure::Template(error) => {
                BinderError::new(BinderErrorKind::InvalidOptions, error.to_string())
            }
        }
    }
}

impl Output {
    pub(crate) fn new(
        plan: OutputPlan,
        producer: Arc<dyn Producer>,
        counters: Arc<Counters>,
    ) -> Self {
        // Validation checked the content type; JSON is only a fallback.
        let codec = Codec::for_content_type(&plan.content_type).unwrap_or(Codec::Json);
        let content_type = static_content_type(&plan.content_type);
        let mut content_type_only = Headers::new();
        content_type_only.insert(names::CONTENT_TYPE, content_type.clone());
        Self {
            plan,
            producer,
            codec,
            content_type,
            content_type_only,
            counters,
        }
    }

    /// The codec function outputs are encoded with.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// The binding's name.
    pub(crate) fn binding(&self) -> &str {
        &self.plan.binding
    }

    /// The producer, to flush it.
    pub(crate) fn producer(&self) -> &Arc<dyn Producer> {
        &self.producer
    }

    /// Records the outcome of `sent` messages once their confirmations are in.
    pub(crate) fn record(&self, sent: usize, result: &Result<(), BinderError>) {
        let event = if result.is_ok() {
            Event::Sent
        } else {
            Event::Failed
        };
        self.counters.add(event, sent as u64);
    }

    /// Sends what `outcome` holds, in order, adding each confirmation to
    /// `confirmations`. `inbound` is the message the outcome answers, whose
    /// headers a bare payload inherits. A stream is read until it ends, an
    /// output fails, or shutdown comes; at most [`CONFIRM_WINDOW`] of its
    /// outputs wait for confirmation at once.
    pub(crate) async fn publish(
        &self,
        outcome: Outcome,
        inbound: Option<&Message>,
        confirmations: &mut Confirmations,
        shutdown: &CancellationToken,
    ) -> Result<(), Failure> {
        match outcome {
            Outcome::Nothing => Ok(()),
            Outcome::Payload(bytes) => {
                let headers = inbound
                    .map(|m| m.headers().inheritable())
                    .unwrap_or_default();
                let message = Message::new(bytes).with_headers(headers);
                self.send_to(message, confirmations)
                    .await
                    .map_err(SendFailure::into_failure)
            }
            Outcome::Message(message) => self
                .send_to(message, confirmations)
                .await
                .map_err(SendFailure::into_failure),
            Outcome::Stream(mut stream) => {
                loop {
                    if shutdown.is_cancelled() {
                        return Err(Failure::Transient(
                            "shutdown interrupted a stream of outputs".into(),
                        ));
                    }
                    let item = match AssertUnwindSafe(stream.next()).catch_unwind().await {
                        Ok(Some(item)) => item,
                        Ok(None) => return Ok(()),
                        Err(panic) => return Err(Failure::Function(panicked(panic))),
                    };
                    let outcome = item.map_err(classify)?;
                    Box::pin(self.publish(outcome, inbound, confirmations, shutdown)).await?;
                    while confirmations.waiting() >= CONFIRM_WINDOW {
                        confirmations.wait_oldest().await;
                    }
                    if confirmations.has_failed() {
                        // The input fails anyway; the confirm stage says how.
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends one message and waits for its confirmation (dynamic sender,
    /// sources).
    pub(crate) async fn send_confirmed(&self, message: Message) -> Result<(), SendFailure> {
        let mut confirmations = Confirmations::default();
        self.send_to(message, &mut confirmations).await?;
        let result = confirmations.wait().await;
        self.record(1, &result);
        result.map_err(SendFailure::Binder)
    }

    async fn send_to(
        &self,
        message: Message,
        confirmations: &mut Confirmations,
    ) -> Result<(), SendFailure> {
        confirmations.push(self.send(message).await?);
        Ok(())
    }

    /// Hands one message to the producer, adding the binding's content type
    /// and keys; returns its confirmation.
    pub(crate) async fn send(&self, mut message: Message) -> Result<Confirmation, SendFailure> {
        if message.headers().is_empty() {
            *message.headers_mut() = self.content_type_only.clone();
        } else if message.content_type().is_none() {
            message
                .headers_mut()
                .insert(names::CONTENT_TYPE, self.content_type.clone());
        }
        if message.routing_key().is_none() {
            if let Some(template) = &self.plan.routing_key {
                let key = template.render(&message).map_err(SendFailure::Template)?;
                message.set_routing_key(Some(key));
            }
        }
        if message.key().is_none() {
            if let Some(template) = &self.plan.partition_key {
                let key = template.render(&message).map_err(SendFailure::Template)?;
                message.set_key(Some(key.into()));
            }
        }
        self.producer.start_send(message).await.map_err(|error| {
            self.counters.bump(Event::Failed);
            SendFailure::Binder(error)
        })
    }
}

/// Avoids an allocation per message for the usual content types.
fn static_content_type(content_type: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 3] = [
        DEFAULT_CONTENT_TYPE,
        "text/plain",
        "application/octet-stream",
    ];
    match KNOWN.iter().find(|k| **k == content_type) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(content_type.to_owned()),
    }
}
