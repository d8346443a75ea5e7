//! The producer side of the contract: sends that complete in two steps,
//! handed to the client in order, then confirmed by the broker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::BinderError;
use crate::message::Message;

/// Sends messages to one destination.
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    /// Hands `message` to the broker client. Returns once the message is
    /// queued for sending, so calls made one after another are published in
    /// that order; await the [`Confirmation`] to know the broker has it.
    /// Waits while the client's buffers are full (back-pressure).
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError>;

    /// Starts [`send`](Self::send): the same hand-over, in the same order,
    /// with the same result. A binder whose send usually completes without
    /// waiting (an in-process queue, a client that only buffers) overrides
    /// it to answer [`Sending::done`] and spare the runtime the boxed future
    /// of `send` for every message. The default waits through `send`.
    fn start_send(&self, message: Message) -> Sending<'_> {
        Sending::waiting(self.send(message))
    }

    /// Waits until every message sent so far is confirmed or failed.
    async fn flush(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// A send in progress, from [`Producer::start_send`]: either already
/// handed over (or refused), or a future that hands it over.
#[must_use = "a send happens only once its Sending completes"]
pub struct Sending<'a>(SendingState<'a>);

enum SendingState<'a> {
    Done(Option<Result<Confirmation, BinderError>>),
    Waiting(BoxFuture<'a, Result<Confirmation, BinderError>>),
}

impl<'a> Sending<'a> {
    /// The send completed without waiting.
    pub fn done(result: Result<Confirmation, BinderError>) -> Self {
        Self(SendingState::Done(Some(result)))
    }

    /// The send completes with `future`.
    pub fn waiting(future: BoxFuture<'a, Result<Confirmation, BinderError>>) -> Self {
        Self(SendingState::Waiting(future))
    }
}

impl Future for Sending<'_> {
    type Output = Result<Confirmation, BinderError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            SendingState::Done(result) => {
                Poll::Ready(result.take().expect("Sending polled after completion"))
            }
            SendingState::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Sending<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            SendingState::Done(_) => "done",
            SendingState::Waiting(_) => "waiting",
        };
        f.debug_tuple("Sending").field(&state).finish()
    }
}

/// Completes when the broker has confirmed a sent message.
#[must_use = "a send is confirmed only once its Confirmation completes"]
pub struct Confirmation(ConfirmationState);

enum ConfirmationState {
    Ready(Option<Result<(), BinderError>>),
    Pending(BoxFuture<'static, Result<(), BinderError>>),
}

impl Confirmation {
    /// Already confirmed (the message is in the broker's hands).
    pub fn confirmed() -> Self {
        Self(ConfirmationState::Ready(Some(Ok(()))))
    }

    /// Already failed.
    pub fn failed(error: BinderError) -> Self {
        Self(ConfirmationState::Ready(Some(Err(error))))
    }

    /// Confirmed when `future` completes.
    pub fn pending(future: impl Future<Output = Result<(), BinderError>> + Send + 'static) -> Self {
        Self(ConfirmationState::Pending(Box::pin(future)))
    }
}

impl Future for Confirmation {
    type Output = Result<(), BinderError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            ConfirmationState::Ready(result) => {
                Poll::Ready(result.take().expect("Confirmation polled after completion"))
            }
            ConfirmationState::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            ConfirmationState::Ready(_) => "ready",
            ConfirmationState::Pending(_) => "pending",
        };
        f.debug_tuple("Confirmation").field(&state).finish()
    }
}
