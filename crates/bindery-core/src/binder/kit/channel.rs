//! A cancel-safe hand-over from a binder's client task to its consumer,
//! bounded by prefetch permits that come back when a delivery is settled.

use std::num::NonZeroUsize;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::binder::{Delivery, DeliveryHandle};
use crate::error::BinderError;
use crate::message::{DeliveryId, Headers, Message};

/// A channel of deliveries with at most `prefetch` of them handed out and
/// not yet settled.
///
/// The binder's client task sends; its [`Consumer`](crate::binder::Consumer)
/// receives. A send waits for a permit; the permit goes back when the
/// delivery is acknowledged, rejected or dropped, so a binder whose broker
/// has no prefetch of its own (or whose client reads ahead) never holds
/// more than `prefetch` unsettled deliveries. [`DeliveryReceiver::recv`] is
/// cancel-safe: a receive dropped in a `select!` loses nothing.
///
/// ```
/// use std::num::NonZeroUsize;
///
/// use bindery_core::binder::kit::delivery_channel;
/// # use bindery_core::binder::DeliveryHandle;
/// # use bindery_core::message::{DeliveryId, Message};
/// # use futures::future::BoxFuture;
/// # struct Tag(u64);
/// # impl DeliveryHandle for Tag {
/// #     fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), bindery_core::BinderError>> { Box::pin(async { Ok(()) }) }
/// #     fn nack(self: Box<Self>, _: bool) -> BoxFuture<'static, Result<(), bindery_core::BinderError>> { Box::pin(async { Ok(()) }) }
/// #     fn id(&self) -> DeliveryId { DeliveryId::in_queue("q".into(), self.0) }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let (sender, mut receiver) = delivery_channel(NonZeroUsize::MIN);
/// sender.send(Message::new(bytes::Bytes::from_static(b"one")), Box::new(Tag(1))).await.unwrap();
/// // One delivery is out and unsettled: the next send waits for it.
/// assert!(!sender.has_room());
/// let first = receiver.recv().await.unwrap();
/// first.ack().await.unwrap();
/// assert!(sender.has_room());
/// # });
/// ```
pub fn delivery_channel(prefetch: NonZeroUsize) -> (DeliverySender, DeliveryReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(prefetch.get()));
    (
        DeliverySender {
            tx,
            permits: permits.clone(),
        },
        DeliveryReceiver { rx, permits },
    )
}

/// The client task's end of a [`delivery_channel`].
#[derive(Debug, Clone)]
pub struct DeliverySender {
    tx: mpsc::UnboundedSender<Delivery>,
    permits: Arc<Semaphore>,
}

/// The receiver is gone (the consumer was dropped): the delivery was not
/// handed over, and the binder should give it back to the broker.
#[derive(Debug, thiserror::Error)]
#[error("the consumer is gone")]
pub struct ReceiverGone;

impl DeliverySender {
    /// Waits for a prefetch permit, then hands `message` over, to be
    /// settled through `handle`. Fails once the receiver is gone; `handle`
    /// is then dropped unsettled, which leaves the message with the broker.
    pub async fn send(
        &self,
        message: Message,
        handle: Box<dyn DeliveryHandle>,
    ) -> Result<(), ReceiverGone> {
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.map_err(|_| ReceiverGone)?,
            () = self.tx.closed() => return Err(ReceiverGone),
        };
        let handle = Box::new(Permitted {
            inner: handle,
            _permit: permit,
        });
        self.tx
            .send(Delivery::new(message, handle))
            .map_err(|_| ReceiverGone)
    }

    /// Whether a send would find a permit now.
    pub fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// Completes when the receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// The consumer's end of a [`delivery_channel`].
#[derive(Debug)]
pub struct DeliveryReceiver {
    rx: mpsc::UnboundedReceiver<Delivery>,
    permits: Arc<Semaphore>,
}

impl DeliveryReceiver {
    /// The next delivery; `None` once every sender is gone and the channel
    /// is drained. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// A delivery that is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// Stops the senders: their next send fails with [`ReceiverGone`].
    /// Deliveries already in the channel can still be received.
    pub fn close(&mut self) {
        self.rx.close();
        self.permits.close();
    }
}

/// A delivery's handle holding its prefetch permit until it is settled or
/// dropped.
struct Permitted {
    inner: Box<dyn DeliveryHandle>,
    _permit: OwnedSemaphorePermit,
}

impl DeliveryHandle for Permitted {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        // The permit goes back once the broker has the settlement.
        let Permitted { inner, _permit } = *self;
        Box::pin(async move {
            let settled = inner.ack().await;
            drop(_permit);
            settled
        })
    }

    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        let Permitted { inner, _permit } = *self;
        Box::pin(async move {
            let settled = inner.nack(requeue).await;
            drop(_permit);
            settled
        })
    }

    fn ack_now(&mut self) -> Option<Result<(), BinderError>> {
        // The permit goes back when this handle is dropped, right after.
        self.inner.ack_now()
    }

    fn id(&self) -> DeliveryId {
        self.inner.id()
    }

    fn redelivered(&self) -> bool {
        self.inner.redelivered()
    }

    fn dead_letter_headers(&self, headers: &mut Headers) {
        self.inner.dead_letter_headers(headers);
    }

    fn broker_dead_letters(&self) -> bool {
        self.inner.broker_dead_letters()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    struct Tag(u64);

    impl DeliveryHandle for Tag {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
            Box::pin(async { Ok(()) })
        }
        fn nack(self: Box<Self>, _requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
            Box::pin(async { Ok(()) })
        }
        fn id(&self) -> DeliveryId {
            DeliveryId::in_queue("q".into(), self.0)
        }
    }

    fn message(n: u64) -> Message {
        Message::new(Bytes::from(n.to_string()))
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_prefetch_deliveries_are_out_unsettled() {
        let (sender, mut receiver) = delivery_channel(NonZeroUsize::new(2).unwrap());
        let feeder = tokio::spawn(async move {
            for n in 0..5 {
                sender.send(message(n), Box::new(Tag(n))).await.unwrap();
            }
        });
        let first = receiver.recv().await.unwrap();
        let second = receiver.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(receiver.try_recv().is_none(), "a third before any settled");
        // A dropped delivery gives its permit back as a settled one does.
        drop(first);
        let third = receiver.recv().await.unwrap();
        second.nack(true).await.unwrap();
        third.ack().await.unwrap();
        for n in 3..5 {
            let delivery = receiver.recv().await.unwrap();
            assert_eq!(delivery.id().to_string(), format!("q#{n}"));
            delivery.ack().await.unwrap();
        }
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_receive_loses_nothing() {
        let (sender, mut receiver) = delivery_channel(NonZeroUsize::new(8).unwrap());
        let waiting = tokio::time::timeout(Duration::from_millis(10), receiver.recv()).await;
        assert!(waiting.is_err(), "nothing to receive yet");
        sender.send(message(7), Box::new(Tag(7))).await.unwrap();
        let delivery = receiver.recv().await.unwrap();
        assert_eq!(&delivery.message().payload()[..], b"7");
        assert_eq!(delivery.info().id.to_string(), "q#7");
    }

    #[tokio::test]
    async fn a_send_after_the_receiver_is_gone_fails() {
        let (sender, receiver) = delivery_channel(NonZeroUsize::MIN);
        drop(receiver);
        assert!(sender.send(message(1), Box::new(Tag(1))).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waiting_for_a_permit_wakes_when_the_receiver_closes() {
        let (sender, mut receiver) = delivery_channel(NonZeroUsize::MIN);
        sender.send(message(1), Box::new(Tag(1))).await.unwrap();
        let blocked = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(message(2), Box::new(Tag(2))).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        receiver.close();
        assert!(blocked.await.unwrap().is_err());
    }
}
