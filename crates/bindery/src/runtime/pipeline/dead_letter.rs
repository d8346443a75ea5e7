//! The dead-letter stage: parks a message that failed for good in its
//! dead-letter destination, with the reason in its headers, and decides
//! how the delivery is settled once the dead letter is confirmed.
//!
//! A dead letter that cannot be published is never dropped and never
//! retried in a hot loop (audit A2): the publish is retried with back-off
//! while the binding reports itself unhealthy. Where the broker can park
//! the message itself (a RabbitMQ queue with a dead-letter exchange), the
//! delivery is rejected to it after a few failed publishes. Shutdown hands
//! the message back.

use std::sync::Arc;
use std::time::Duration;

use bindery_core::binder::{Acknowledger, Producer};
use bindery_core::error::{BinderError, FunctionError};
use bindery_core::message::Message;
use bindery_core::policy::DeadLetter;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Settlement;
use crate::runtime::health::BindingWatch;
use crate::runtime::stats::{Counters, Event};

/// Pause after the first failed dead-letter publish; it doubles up to
/// [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// Failed publishes after which the broker's own dead-lettering is used,
/// where the delivery has it.
const PUBLISHES_BEFORE_BROKER_FALLBACK: u32 = 3;

/// Where a binding's failed messages go.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    /// `None` when dead-lettering is off: failed messages are dropped.
    producer: Option<Arc<dyn Producer>>,
    /// The dead-letter destination's name, for logs.
    name: String,
    binding: String,
    destination: String,
    group: String,
    counters: Arc<Counters>,
    watch: Arc<BindingWatch>,
    shutdown: CancellationToken,
}

/// What a binding's dead letters are told about where they came from.
pub(crate) struct Origin<'a> {
    pub(crate) binding: &'a str,
    pub(crate) destination: &'a str,
    pub(crate) group: &'a str,
}

impl DeadLetters {
    pub(crate) fn new(
        producer: Option<Arc<dyn Producer>>,
        name: String,
        origin: Origin<'_>,
        counters: Arc<Counters>,
        watch: Arc<BindingWatch>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            producer,
            name,
            binding: origin.binding.to_owned(),
            destination: origin.destination.to_owned(),
            group: origin.group.to_owned(),
            counters,
            watch,
            shutdown,
        }
    }

    /// Parks `message`, which failed for good after `attempts` with
    /// `error`, and says how to settle its delivery.
    pub(crate) async fn park(
        &self,
        message: &Message,
        acker: &Acknowledger,
        error: FunctionError,
        attempts: u32,
    ) -> Settlement {
        let Some(producer) = &self.producer else {
            return Settlement::Drop {
                reason: format!("after {attempts} attempt(s): {}", error.chain_text()),
            };
        };
        warn!(
            binding = %self.binding,
            id = %acker.id(),
            attempts,
            "sending to dead-letter destination `{}`: {}",
            self.name,
            error.chain_text()
        );
        let dead_letter = DeadLetter {
            destination: &self.destination,
            group: &self.group,
            attempts,
        }
        .build(message, &error, acker);
        let mut failures = 0u32;
        let mut pause = FIRST_PAUSE;
        loop {
            let failure = match publish(producer.as_ref(), dead_letter.clone()).await {
                Ok(()) => {
                    if failures > 0 {
                        self.watch.unstall();
                    }
                    self.counters.bump(Event::DeadLettered);
                    return Settlement::Ack;
                }
                Err(failure) => failure,
            };
            failures += 1;
            let reason = format!("`{}` did not take the dead letter: {failure}", self.name);
            if failures == 1 {
                self.watch.stall(reason.clone());
            }
            if failures >= PUBLISHES_BEFORE_BROKER_FALLBACK && acker.broker_dead_letters() {
                self.watch.unstall();
                return Settlement::RejectToBroker { reason };
            }
            warn!(binding = %self.binding, id = %acker.id(), "{reason}; trying again in {pause:?}");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.shutdown.cancelled() => {
                    self.watch.unstall();
                    return Settlement::Requeue {
                        reason: format!("shutdown while {reason}"),
                    };
                }
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

async fn publish(producer: &dyn Producer, message: Message) -> Result<(), BinderError> {
    producer.send(message).await?.await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use bindery_core::binder::{Confirmation, Delivery, DeliveryHandle};
    use bindery_core::error::BinderErrorKind;
    use bytes::Bytes;
    use futures::future::BoxFuture;

    use super::*;

    /// Refuses its first `refusals` publishes.
    struct Refusing {
        refusals: AtomicU32,
        sent: AtomicU32,
    }

    #[async_trait]
    impl Producer for Refusing {
        async fn send(&self, _message: Message) -> Result<Confirmation, BinderError> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            if self.refusals.load(Ordering::SeqCst) > 0 {
                self.refusals.fetch_sub(1, Ordering::SeqCst);
                return Ok(Confirmation::failed(BinderError::new(
                    BinderErrorKind::Rejected,
                    "queue full (reject-publish)",
                )));
            }
            Ok(Confirmation::confirmed())
        }
    }

    struct Handle {
        broker_dead_letters: bool,
    }

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
        fn broker_dead_letters(&self) -> bool {
            self.broker_dead_letters
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("poison")]
    struct Poison;

    fn stage(
        refusals: u32,
    ) -> (
        DeadLetters,
        Arc<Refusing>,
        Arc<BindingWatch>,
        CancellationToken,
    ) {
        let producer = Arc::new(Refusing {
            refusals: AtomicU32::new(refusals),
            sent: AtomicU32::new(0),
        });
        let watch = Arc::new(BindingWatch::new("f-in-0", 1, None));
        let shutdown = CancellationToken::new();
        let origin = Origin {
            binding: "f-in-0",
            destination: "orders",
            group: "billing",
        };
        let stage = DeadLetters::new(
            Some(producer.clone()),
            "orders.billing.dlq".into(),
            origin,
            Arc::default(),
            watch.clone(),
            shutdown.clone(),
        );
        (stage, producer, watch, shutdown)
    }

    fn delivery(broker_dead_letters: bool) -> Acknowledger {
        let handle = Handle {
            broker_dead_letters,
        };
        Delivery::new(Message::new(Bytes::new()), Box::new(handle))
            .into_parts()
            .1
    }

    #[tokio::test(start_paused = true)]
    async fn a02_a_refused_dead_letter_is_retried_with_back_off_not_in_a_hot_loop() {
        let (stage, producer, watch, _) = stage(4);
        let message = Message::new(Bytes::from_static(b"x"));
        let acker = delivery(false);
        let started = tokio::time::Instant::now();
        let parking = stage.park(&message, &acker, FunctionError::new(Poison), 3);
        tokio::pin!(parking);
        tokio::select! {
            _ = &mut parking => panic!("cannot be parked yet"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        assert!(watch.problem().unwrap().contains("cannot be dead-lettered"));
        assert_eq!(parking.await, Settlement::Ack);
        assert_eq!(producer.sent.load(Ordering::SeqCst), 5);
        // 0.5 + 1 + 2 + 4 s of back-off between the five publishes.
        assert_eq!(started.elapsed(), Duration::from_millis(7_500));
        assert_eq!(watch.problem(), None, "healthy again");
    }

    #[tokio::test(start_paused = true)]
    async fn a02_the_brokers_dead_lettering_takes_over_where_the_delivery_has_it() {
        let (stage, producer, watch, _) = stage(u32::MAX);
        let settlement = stage
            .park(
                &Message::new(Bytes::new()),
                &delivery(true),
                FunctionError::new(Poison),
                1,
            )
            .await;
        assert!(
            matches!(settlement, Settlement::RejectToBroker { .. }),
            "{settlement:?}"
        );
        assert_eq!(producer.sent.load(Ordering::SeqCst), 3);
        assert_eq!(watch.problem(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a02_shutdown_hands_an_unparked_message_back_never_drops_it() {
        let (stage, _, _, shutdown) = stage(u32::MAX);
        let acker = delivery(false);
        let message = Message::new(Bytes::new());
        let parking = stage.park(&message, &acker, FunctionError::new(Poison), 1);
        tokio::pin!(parking);
        tokio::select! {
            _ = &mut parking => panic!("cannot be parked"),
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        shutdown.cancel();
        assert!(matches!(parking.await, Settlement::Requeue { .. }));
    }

    #[tokio::test]
    async fn without_a_producer_the_message_is_dropped_with_its_reason() {
        let watch = Arc::new(BindingWatch::new("f-in-0", 1, None));
        let origin = Origin {
            binding: "f-in-0",
            destination: "orders",
            group: "",
        };
        let stage = DeadLetters::new(
            None,
            String::new(),
            origin,
            Arc::default(),
            watch,
            CancellationToken::new(),
        );
        let settlement = stage
            .park(
                &Message::new(Bytes::new()),
                &delivery(false),
                FunctionError::new(Poison),
                2,
            )
            .await;
        assert_eq!(
            settlement,
            Settlement::Drop {
                reason: "after 2 attempt(s): poison".into()
            }
        );
    }
}
