//! A binder wrapper whose producers refuse one marked message, for the
//! stream-tail case (audit A1).
//!
//! No refusal works the same on every broker: an unroutable routing key
//! fails a send on memory and RabbitMQ but is accepted by Kafka (routing
//! keys are matched by the consumer there), and a record too large for
//! Kafka is fine on memory. So the case wraps the binder under test. This is
//! a stand-in until `bindery_testkit::fault::FaultyBinder` exists; it does
//! just what the case needs and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bindery::binder::{
    Binder, Capabilities, Confirmation, ConsumeFrom, Consumer, GroupBinding, Health, Producer,
    PublishTo,
};
use bindery::{BinderError, BinderErrorKind, Message};

/// The header that marks a message for refusal.
pub(super) const REFUSE_HEADER: &str = "x-conformance-refuse";

/// Wraps a binder. Producers bound through it refuse the first
/// `refusals` messages carrying [`REFUSE_HEADER`]: the send returns Ok and
/// the confirmation fails at once with [`BinderErrorKind::Rejected`], as a
/// broker's negative confirm does; the message never reaches the broker.
/// Every other message is sent, and its confirmation is held back by
/// `delay`, so a refusal is already known while earlier confirmations are
/// still pending (the order A1 needs). Consumers pass through unchanged.
#[derive(Debug)]
pub(super) struct RefusingBinder {
    inner: Arc<dyn Binder>,
    refusals_left: Arc<AtomicUsize>,
    delay: Duration,
}

impl RefusingBinder {
    pub(super) fn new(inner: Arc<dyn Binder>, refusals: usize, delay: Duration) -> Self {
        Self {
            inner,
            refusals_left: Arc::new(AtomicUsize::new(refusals)),
            delay,
        }
    }

    /// How many refusals are still to come.
    pub(super) fn refusals_left(&self) -> usize {
        self.refusals_left.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Binder for RefusingBinder {
    fn binder_type(&self) -> &'static str {
        self.inner.binder_type()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        self.inner.bind_consumer(from).await
    }

    /// Only destination producers refuse; dead letters and redrive pass.
    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        let inner = self.inner.bind_producer(to).await?;
        if !matches!(to, PublishTo::Destination(_)) {
            return Ok(inner);
        }
        Ok(Arc::new(RefusingProducer {
            inner,
            refusals_left: self.refusals_left.clone(),
            delay: self.delay,
        }))
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        self.inner.dead_letter_name(of)
    }

    fn health(&self) -> Health {
        self.inner.health()
    }

    async fn shutdown(&self) -> Result<(), BinderError> {
        self.inner.shutdown().await
    }
}

struct RefusingProducer {
    inner: Arc<dyn Producer>,
    refusals_left: Arc<AtomicUsize>,
    delay: Duration,
}

impl RefusingProducer {
    /// Takes one refusal if `message` is marked and any are left.
    fn refuses(&self, message: &Message) -> bool {
        message.headers().contains(REFUSE_HEADER)
            && self
                .refusals_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

#[async_trait]
impl Producer for RefusingProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        if self.refuses(&message) {
            return Ok(Confirmation::failed(BinderError::new(
                BinderErrorKind::Rejected,
                "refused by the conformance suite's RefusingBinder",
            )));
        }
        let confirmation = self.inner.send(message).await?;
        let delay = self.delay;
        Ok(Confirmation::pending(async move {
            tokio::time::sleep(delay).await;
            confirmation.await
        }))
    }

    async fn flush(&self) -> Result<(), BinderError> {
        self.inner.flush().await
    }
}
