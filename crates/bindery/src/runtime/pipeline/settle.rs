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
            warn!(binding = %binding, id = %id, "could not settle the message; the broker will redeliver it: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use bindery_core::binder::{Delivery, DeliveryHandle};
    use bindery_core::error::BinderError;
    use bindery_core::message::Message;
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use parking_lot::Mutex;

    use super::*;

    /// Records how it was settled.
    struct Recorder(Arc<Mutex<Vec<&'static str>>>);

    impl DeliveryHandle for Recorder {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
            self.0.lock().push("ack");
            Box::pin(async { Ok(()) })
        }
        fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
            self.0
                .lock()
                .push(if requeue { "requeue" } else { "reject" });
            Box::pin(async { Ok(()) })
        }
        fn id(&self) -> bindery_core::message::DeliveryId {
            bindery_core::message::DeliveryId::Other("1".into())
        }
    }

    #[tokio::test]
    async fn each_settlement_is_carried_out_once_and_counted() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let settle = Settle::new("f-in-0", counters.clone());
        let reason = || "why".to_owned();
        for settlement in [
            Settlement::Ack,
            Settlement::Requeue { reason: reason() },
            Settlement::RejectToBroker { reason: reason() },
            Settlement::Drop { reason: reason() },
        ] {
            let delivery =
                Delivery::new(Message::new(Bytes::new()), Box::new(Recorder(seen.clone())));
            settle.apply(settlement, delivery.into_parts().1).await;
        }
        assert_eq!(*seen.lock(), ["ack", "requeue", "reject", "reject"]);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.acked,
                stats.requeued,
                stats.dead_lettered,
                stats.dropped
            ),
            (1, 1, 1, 1)
        );
    }
}
