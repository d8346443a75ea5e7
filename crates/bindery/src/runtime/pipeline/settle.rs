//! The settle stage: carries out a [`Settlement`] at the broker, exactly
//! once per delivery, and counts it.

use std::sync::Arc;

use bindery_core::binder::Acknowledger;
use tracing::{error, warn};

use super::Settlement;
use crate::runtime::stats::{Counters, Event};

/// Settles the deliveries of one binding.
#[derive(Debug, Clone)]
pub(crate) struct Settle {
    binding: String,
    counters: Arc<Counters>,
}

impl Settle {
    pub(crate) fn new(binding: &str, counters: Arc<Counters>) -> Self {
        Self {
            binding: binding.to_owned(),
            counters,
        }
    }

    /// Acks, requeues or rejects `acker` as `settlement` says. A failure to
    /// settle is logged: the broker then redelivers, which is safe.
    pub(crate) async fn apply(&self, settlement: Settlement, acker: Acknowledger) {
        let binding = &self.binding;
        let id = acker.id();
        let result = match settlement {
            Settlement::Ack => {
                let result = acker.ack().await;
                if result.is_ok() {
                    self.counters.bump(Event::Acked);
                }
                result
            }
            Settlement::Requeue { reason } => {
                warn!(binding = %binding, id = %id, "handing the message back for redelivery: {reason}");
                self.counters.bump(Event::Requeued);
                acker.nack(true).await
            }
            Settlement::RejectToBroker { reason } => {
                warn!(binding = %binding, id = %id, "rejecting the message to the broker's dead-letter exchange: {reason}");
                self.counters.bump(Event::DeadLettered);
                acker.nack(false).await
            }
            Settlement::Drop { reason } => {
                error!(binding = %binding, id = %id, "message dropped (dead-letter is off): {reason}");
                self.counters.bump(Event::Dropped);
                acker.nack(false).await
            }
        };
        if let Err(e) = result {
            warn!(binding = %binding, id = %id, "could not settle the message; the broker will redeliver it: {e}");
        }
    }
}
