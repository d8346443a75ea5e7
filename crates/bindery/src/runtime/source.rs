//! Sources: polled with a fixed delay, or drained once when they return a
//! stream.

use std::sync::Arc;

use bindery_core::config::PollerSettings;
use bindery_core::error::BinderError;
use bindery_core::function::{Context, Function, Input, Outcome};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::output::{Output, Pending};
use super::stats::{Counters, Event};

/// Most unconfirmed sends a source keeps in flight.
const CONFIRM_WINDOW: usize = 1024;

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
        let mut window = FuturesUnordered::new();
        if !self.pause(self.poller.initial_delay).await {
            return;
        }
        loop {
            let input = Input::for_source(&self.context);
            let call = self.function.call(&input, self.output.codec());
            let outcome = tokio::select! {
                outcome = call => outcome,
                () = self.shutdown.cancelled() => break,
            };
            match outcome {
                Ok(Outcome::Stream(mut stream)) => {
                    loop {
                        let item = tokio::select! {
                            item = stream.next() => item,
                            () = self.shutdown.cancelled() => None,
                        };
                        let Some(item) = item else { break };
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
            if !self.pause(self.poller.fixed_delay).await {
                break;
            }
        }
        while window.next().await.is_some() {}
    }

    async fn publish(
        &self,
        outcome: Outcome,
        window: &mut FuturesUnordered<BoxFuture<'static, ()>>,
    ) {
        let mut pending = Pending::default();
        if let Err(e) = self.output.publish(outcome, None, &mut pending).await {
            error!(binding = %self.output.binding(), "source message not sent: {}", e.chain_text());
            return;
        }
        if pending.is_empty() {
            self.counters.bump(Event::Filtered);
            return;
        }
        let sent = pending.len();
        // Confirmed already (the memory binder): nothing to keep in flight.
        if let Some(result) = pending.try_now() {
            record_confirmation(&self.output, sent, result);
            return;
        }
        let output = self.output.clone();
        window.push(Box::pin(async move {
            record_confirmation(&output, sent, pending.wait().await);
        }));
        while window.len() >= CONFIRM_WINDOW {
            window.next().await;
        }
    }

    /// Sleeps for `pause`; false when shutdown came first.
    async fn pause(&self, pause: std::time::Duration) -> bool {
        if pause.is_zero() {
            return !self.shutdown.is_cancelled();
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

fn record_confirmation(output: &Output, sent: usize, result: Result<(), BinderError>) {
    output.record(sent, &result);
    if let Err(e) = result {
        warn!(binding = %output.binding(), "a source message was not confirmed: {e}");
    }
}
