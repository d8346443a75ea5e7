//! Sources: polled with a fixed delay, or drained when they return a
//! stream.
//!
//! Shutdown is honoured between polls and between stream items, never in
//! the middle of one: a source that claimed work finishes its call and its
//! items are sent (audit A12). Messages are handed to the producer in
//! order; a send or confirmation that fails because the broker is away is
//! tried again with back-off until it is confirmed or the app stops, and
//! one the broker refuses is logged and counted as failed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bindery_core::binder::Confirmation;
use bindery_core::config::PollerSettings;
use bindery_core::function::{Context, Function, Input, Outcome};
use bindery_core::message::Message;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::output::{CONFIRM_WINDOW, Output, SendFailure};
use super::stats::{Counters, Event};

/// Pause after the first failed send of a source message; it doubles up
/// to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// Confirmations of sent source messages, awaited while the source goes on.
type Window = FuturesUnordered<BoxFuture<'static, ()>>;

pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) function: Arc<dyn Function>,
    pub(crate) output: Arc<Output>,
    pub(crate) context: Arc<Context>,
    pub(crate) poller: PollerSettings,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: CancellationToken,
}

impl Source {
    /// Polls until shutdown, or until a returned stream ends.
    pub(crate) async fn run(self) {
        let mut window = Window::new();
        if !self.pause(self.poller.initial_delay, &mut window).await {
            return;
        }
        loop {
            let input = Input::for_source(&self.context);
            let call = self.function.call(&input, self.output.codec());
            match driving(&mut window, call).await {
                Ok(Outcome::Stream(mut stream)) => {
                    while !self.shutdown.is_cancelled() {
                        let Some(item) = driving(&mut window, stream.next()).await else {
                            break;
                        };
                        match item {
                            Ok(outcome) => self.publish(outcome, &mut window).await,
                            Err(e) => {
                                self.counters.bump(Event::Failed);
                                error!(source = %self.name, "source stream item failed: {}", e.chain_text());
                            }
                        }
                    }
                    info!(source = %self.name, "source stream ended");
                    break;
                }
                Ok(outcome) => self.publish(outcome, &mut window).await,
                Err(e) => {
                    self.counters.bump(Event::Failed);
                    error!(source = %self.name, "source failed: {}", e.chain_text());
                }
            }
            if !self.pause(self.poller.fixed_delay, &mut window).await {
                break;
            }
        }
        while window.next().await.is_some() {}
    }

    /// Sends each message of `outcome` in order, keeping at most
    /// [`CONFIRM_WINDOW`] unconfirmed in flight.
    async fn publish(&self, outcome: Outcome, window: &mut Window) {
        // At most one message per item: no Vec to allocate per item.
        let message = match outcome {
            Outcome::Nothing => None,
            Outcome::Payload(bytes) => Some(Message::new(bytes)),
            Outcome::Message(message) => Some(message),
            Outcome::Stream(_) => {
                error!(source = %self.name, "a stream inside a source item is not supported; it is dropped");
                None
            }
        };
        if message.is_none() {
            self.counters.bump(Event::Filtered);
        }
        if let Some(message) = message {
            let sent = match self.output.send(message.clone()).await {
                // Confirmed at once (the memory binder, a broker's quick
                // answer): nothing to wait for or resend.
                Ok(mut confirmation) => match (&mut confirmation).now_or_never() {
                    Some(Ok(())) => {
                        self.output.record(1, &Ok(()));
                        return;
                    }
                    Some(Err(error)) => Ok(Confirmation::failed(error)),
                    None => Ok(confirmation),
                },
                failed => failed,
            };
            let output = self.output.clone();
            let shutdown = self.shutdown.clone();
            window.push(Box::pin(confirm_or_resend(output, message, sent, shutdown)));
            // Polls the new send at once: confirmed already on the memory binder.
            while let Some(Some(())) = futures::FutureExt::now_or_never(window.next()) {}
            while window.len() >= CONFIRM_WINDOW {
                window.next().await;
            }
        }
    }

    /// Sleeps for `pause` while confirmations come in; false when shutdown
    /// came first.
    async fn pause(&self, pause: Duration, window: &mut Window) -> bool {
        if pause.is_zero() {
            return !self.shutdown.is_cancelled();
        }
        let shutdown = self.shutdown.clone();
        driving(window, async move {
            tokio::select! {
                () = tokio::time::sleep(pause) => true,
                () = shutdown.cancelled() => false,
            }
        })
        .await
    }
}

/// Awaits `work` while driving the window's confirmations.
async fn driving<T>(window: &mut Window, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            output = &mut work => return output,
            Some(()) = window.next(), if !window.is_empty() => {}
        }
    }
}

/// Awaits the outcome of a send of `message`, sending it again with
/// back-off while the failure is transient and the app runs.
async fn confirm_or_resend(
    output: Arc<Output>,
    message: Message,
    mut sent: Result<Confirmation, SendFailure>,
    shutdown: CancellationToken,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        let error = match sent {
            Ok(confirmation) => match confirmation.await {
                Ok(()) => {
                    output.record(1, &Ok(()));
                    return;
                }
                Err(error) => error,
            },
            Err(SendFailure::Binder(error)) => error,
            Err(failure @ SendFailure::Template(_)) => {
                error!(binding = %output.binding(), "a source message was not sent: {}", failure.into_binder_error());
                return;
            }
        };
        if !error.is_transient() || shutdown.is_cancelled() {
            error!(binding = %output.binding(), "a source message was not sent: {error:#}");
            output.record(1, &Err(error));
            return;
        }
        warn!(binding = %output.binding(), "a source message was not sent, trying again in {pause:?}: {error:#}");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => {}
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
        sent = output.send(message.clone()).await;
    }
}
