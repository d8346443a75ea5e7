//! Sources: polled with a fixed delay, or drained once when they return a
//! stream.

use std::sync::Arc;

use bindery_core::config::PollerSettings;
use bindery_core::function::{Context, Function, Input, Outcome};
use futures::StreamExt;
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
        window: &mut FuturesUnordered<futures::future::BoxFuture<'static, ()>>,
    ) {
        let mut pending = Pending::default();
        match self.output.publish(outcome, None, &mut pending).await {
            Ok(()) if pending.is_empty() => self.counters.bump(Event::Filtered),
            Ok(()) => {
                let name = self.output.binding().to_owned();
                window.push(Box::pin(async move {
                    if let Err(e) = pending.wait().await {
                        warn!(binding = %name, "a source message was not confirmed: {e}");
                    }
                }));
                while window.len() >= CONFIRM_WINDOW {
                    window.next().await;
                }
            }
            Err(e) => {
                error!(binding = %self.output.binding(), "source message not sent: {}", e.chain_text());
            }
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
