//! `f|g` composition: the outcome of one function is the input of the next,
//! in process, as Spring Cloud Function composes.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;

use super::context::Context;
use super::extract::Input;
use super::outcome::Outcome;
use super::{Function, FunctionKind};
use crate::codec::{Codec, DEFAULT_CONTENT_TYPE};
use crate::error::FunctionError;
use crate::message::{DeliveryInfo, Message, names};

/// Functions applied in turn.
pub struct Composed {
    stages: Arc<[Arc<dyn Function>]>,
    kind: FunctionKind,
}

impl Composed {
    /// Composes `stages` (at least one). The kind follows from the ends:
    /// a source first gives a source, a sink last gives a sink.
    pub fn new(stages: Vec<Arc<dyn Function>>) -> Self {
        assert!(
            !stages.is_empty(),
            "a composition needs at least one function"
        );
        let first = stages[0].kind();
        let last = stages[stages.len() - 1].kind();
        let kind = match (first.has_input(), last.has_output()) {
            (false, _) => FunctionKind::Source,
            (true, false) => FunctionKind::Sink,
            (true, true) => FunctionKind::Processor,
        };
        Self {
            stages: stages.into(),
            kind,
        }
    }
}

impl std::fmt::Debug for Composed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composed")
            .field("stages", &self.stages.len())
            .field("kind", &self.kind)
            .finish()
    }
}

impl Function for Composed {
    fn kind(&self) -> FunctionKind {
        self.kind
    }

    fn call(
        &self,
        input: &Input<'_>,
        output: Codec,
    ) -> BoxFuture<'static, Result<Outcome, FunctionError>> {
        let last = self.stages.len() == 1;
        let first = self.stages[0].call(input, if last { output } else { Codec::Json });
        if last {
            return first;
        }
        let chain = Chain {
            stages: self.stages.clone(),
            context: input.context().clone(),
            inbound: input.message().clone(),
            delivery: input.delivery_info(),
            output,
        };
        Box::pin(async move { chain.run(first.await?, 1).await })
    }
}

/// The rest of a composition, owned so it can outlive the first call.
#[derive(Clone)]
struct Chain {
    stages: Arc<[Arc<dyn Function>]>,
    context: Arc<Context>,
    inbound: Message,
    delivery: DeliveryInfo,
    output: Codec,
}

impl Chain {
    /// Feeds `outcome` into stage `index` and the ones after it.
    fn run(
        self,
        outcome: Outcome,
        index: usize,
    ) -> BoxFuture<'static, Result<Outcome, FunctionError>> {
        Box::pin(async move {
            if index == self.stages.len() {
                return Ok(outcome);
            }
            let mut message = match outcome {
                Outcome::Nothing => return Ok(Outcome::Nothing),
                Outcome::Payload(bytes) => {
                    // Intermediate payloads are encoded as JSON (see `call`).
                    let mut message = self.inbound.clone().map(|_| bytes);
                    message
                        .headers_mut()
                        .insert(names::CONTENT_TYPE, DEFAULT_CONTENT_TYPE);
                    message
                }
                Outcome::Message(message) => message,
                Outcome::Stream(stream) => {
                    let chain = self.clone();
                    return Ok(Outcome::Stream(
                        stream
                            .then(move |item| {
                                let chain = chain.clone();
                                async move { chain.run(item?, index).await }
                            })
                            .boxed(),
                    ));
                }
            };
            if message.content_type().is_none() {
                message
                    .headers_mut()
                    .insert(names::CONTENT_TYPE, DEFAULT_CONTENT_TYPE);
            }
            let codec = message
                .content_type()
                .and_then(|ct| Codec::for_content_type(ct).ok())
                .unwrap_or(Codec::Json);
            let is_last = index + 1 == self.stages.len();
            let stage_output = if is_last { self.output } else { Codec::Json };
            let input = Input::new(&message, codec, self.delivery.attempt, &self.context)
                .with_delivery_info(&self.delivery);
            let next = self.stages[index].call(&input, stage_output).await?;
            self.run(next, index + 1).await
        })
    }
}
