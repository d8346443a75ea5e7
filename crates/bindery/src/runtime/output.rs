//! An output binding: turns function outcomes into messages and hands them
//! to the producer in order, keeping their confirmations.

use std::borrow::Cow;
use std::sync::Arc;

use bindery_core::binder::{Confirmation, Producer};
use bindery_core::codec::{Codec, DEFAULT_CONTENT_TYPE};
use bindery_core::config::OutputPlan;
use bindery_core::error::{BinderError, FunctionError};
use bindery_core::function::Outcome;
use bindery_core::message::{Headers, Message, names};
use futures::{FutureExt, StreamExt};
use smallvec::SmallVec;

use super::stats::{Counters, Event};

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
    /// `pending`. `inbound` is the message the outcome answers, whose
    /// headers a bare payload inherits.
    pub(crate) async fn publish(
        &self,
        outcome: Outcome,
        inbound: Option<&Message>,
        pending: &mut Pending,
    ) -> Result<(), FunctionError> {
        match outcome {
            Outcome::Nothing => Ok(()),
            Outcome::Payload(bytes) => {
                let headers = inbound
                    .map(|m| m.headers().inheritable())
                    .unwrap_or_default();
                self.send(Message::new(bytes).with_headers(headers), pending)
                    .await
            }
            Outcome::Message(message) => self.send(message, pending).await,
            Outcome::Stream(mut stream) => {
                while let Some(item) = stream.next().await {
                    Box::pin(self.publish(item?, inbound, pending)).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends one message outside a function call (dynamic sender).
    pub(crate) async fn send_now(&self, message: Message) -> Result<(), BinderError> {
        let mut pending = Pending::default();
        self.send(message, &mut pending)
            .await
            .map_err(|e| BinderError::new(bindery_core::BinderErrorKind::Other, e.chain_text()))?;
        pending.wait().await
    }

    async fn send(&self, mut message: Message, pending: &mut Pending) -> Result<(), FunctionError> {
        if message.headers().is_empty() {
            *message.headers_mut() = self.content_type_only.clone();
        } else if message.content_type().is_none() {
            message
                .headers_mut()
                .insert(names::CONTENT_TYPE, self.content_type.clone());
        }
        if message.routing_key().is_none() {
            if let Some(template) = &self.plan.routing_key {
                let key = template
                    .render(&message)
                    .map_err(FunctionError::non_retryable)?;
                message.set_routing_key(Some(key));
            }
        }
        if message.key().is_none() {
            if let Some(template) = &self.plan.partition_key {
                let key = template
                    .render(&message)
                    .map_err(FunctionError::non_retryable)?;
                message.set_key(Some(key.into()));
            }
        }
        match self.producer.send(message).await {
            Ok(confirmation) => {
                pending.push(confirmation);
                Ok(())
            }
            Err(error) => {
                self.counters.bump(Event::Failed);
                Err(send_failure(error))
            }
        }
    }
}

/// A send error as the retry policy sees it: transient ones may be retried.
pub(crate) fn send_failure(error: BinderError) -> FunctionError {
    let retryable = error.is_transient();
    FunctionError::new(error).with_retryable(retryable)
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

/// Confirmations still to come for the outputs of one input message.
#[derive(Default)]
pub(crate) struct Pending {
    confirmations: SmallVec<[Confirmation; 1]>,
}

impl Pending {
    fn push(&mut self, confirmation: Confirmation) {
        self.confirmations.push(confirmation);
    }

    /// Whether nothing was sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.confirmations.is_empty()
    }

    /// How many messages were sent.
    pub(crate) fn len(&self) -> usize {
        self.confirmations.len()
    }

    /// The outcome, if every confirmation is already in (always so on the
    /// memory binder): saves boxing a settlement per message.
    pub(crate) fn try_now(&mut self) -> Option<Result<(), BinderError>> {
        let mut result = Ok(());
        while let Some(confirmation) = self.confirmations.last_mut() {
            let outcome = confirmation.now_or_never()?;
            self.confirmations.pop();
            if let (Ok(()), Err(error)) = (&result, outcome) {
                result = Err(error);
            }
        }
        Some(result)
    }

    /// Waits for every confirmation; the first failure wins.
    pub(crate) async fn wait(self) -> Result<(), BinderError> {
        let mut first_error = None;
        for confirmation in self.confirmations {
            if let Err(error) = confirmation.await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
