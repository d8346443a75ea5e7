//! Producers: to a destination (routed by key to every matching queue) or
//! straight into one queue (dead letters, redrive).
//!
//! A full queue makes a send wait for room, but only up to the binder's
//! `publish-timeout`: then that queue rejects the message, as a RabbitMQ
//! queue with `x-overflow: reject-publish` nacks the publish, and the send
//! fails with [`BinderErrorKind::Rejected`]. Queues with room have the
//! message already, so one full queue never holds up the others for longer
//! than the limit, and a pipeline that feeds itself cannot deadlock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Confirmation, Producer, Sending};
use bindery_core::error::{BinderError, BinderErrorKind};
use bindery_core::message::Message;
use tokio::time::Instant;

use crate::broker::{Destination, Queue};

/// Publishes to a destination. A message no queue takes is a failed send,
/// as a `mandatory` publish returned by RabbitMQ.
pub(crate) struct DestinationProducer {
    pub(crate) name: String,
    pub(crate) destination: Arc<Destination>,
    pub(crate) publish_timeout: Duration,
}

#[async_trait]
impl Producer for DestinationProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        self.start_send(message).await
    }

    fn start_send(&self, message: Message) -> Sending<'_> {
        let (matched, full, kept) = self.destination.offer(message);
        if matched == 0 {
            return Sending::done(Err(BinderError::new(
                BinderErrorKind::Unroutable,
                format!(
                    "no queue on destination `{}` takes routing key `{}`",
                    self.name,
                    kept.as_ref()
                        .and_then(Message::routing_key)
                        .unwrap_or_default()
                ),
            )));
        }
        match kept {
            // Every matching queue had room: the common case needs no future.
            None => Sending::done(Ok(Confirmation::confirmed())),
            Some(message) => Sending::waiting(Box::pin(self.wait_for_room(full, message, matched))),
        }
    }
}

impl DestinationProducer {
    /// Pushes `message` into the queues that were full when it was offered.
    async fn wait_for_room(
        &self,
        full: Vec<Arc<Queue>>,
        message: Message,
        matched: usize,
    ) -> Result<Confirmation, BinderError> {
        // One deadline for the whole send, however many queues are full.
        let deadline = Instant::now() + self.publish_timeout;
        let mut rejected = Vec::new();
        for queue in &full {
            if !push_until(queue, message.clone(), deadline).await {
                rejected.push(queue.as_ref());
            }
        }
        if !rejected.is_empty() {
            return Err(rejection(&rejected, self.publish_timeout, matched));
        }
        Ok(Confirmation::confirmed())
    }
}

/// Publishes straight into one queue.
pub(crate) struct QueueProducer {
    pub(crate) queue: Arc<Queue>,
    pub(crate) publish_timeout: Duration,
}

#[async_trait]
impl Producer for QueueProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let deadline = Instant::now() + self.publish_timeout;
        if !push_until(&self.queue, message, deadline).await {
            return Err(rejection(&[&self.queue], self.publish_timeout, 1));
        }
        Ok(Confirmation::confirmed())
    }
}

/// Appends `message` to `queue` once it has room; false when it is still
/// full at `deadline`. Dropping the wait loses nothing but this copy.
async fn push_until(queue: &Queue, message: Message, deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline, queue.push(message))
        .await
        .is_ok()
}

fn rejection(rejected: &[&Queue], waited: Duration, matched: usize) -> BinderError {
    let names: Vec<String> = rejected.iter().map(|q| format!("`{}`", q.name)).collect();
    let others = matched - rejected.len();
    BinderError::new(
        BinderErrorKind::Rejected,
        format!(
            "queue {} stayed full (queue-capacity {}) for the publish-timeout of {waited:?} and rejected the message (overflow: reject-publish){}",
            names.join(", "),
            rejected[0].capacity().unwrap_or_default(),
            if others > 0 {
                format!("; the {others} other matching queue(s) have it")
            } else {
                String::new()
            }
        ),
    )
}
