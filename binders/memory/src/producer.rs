//! Producers: to a destination (routed by key to every matching queue) or
//! straight into one queue (dead letters, redrive).

use std::sync::Arc;

use async_trait::async_trait;
use bindery_core::binder::{Confirmation, Producer};
use bindery_core::error::{BinderError, BinderErrorKind};
use bindery_core::message::Message;

use crate::broker::{Destination, Queue};

/// Publishes to a destination. A message no queue takes is a failed send,
/// as a `mandatory` publish returned by RabbitMQ.
pub(crate) struct DestinationProducer {
    pub(crate) name: String,
    pub(crate) destination: Arc<Destination>,
}

#[async_trait]
impl Producer for DestinationProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let (matched, full, kept) = self.destination.offer(message);
        if matched == 0 {
            return Err(BinderError::new(
                BinderErrorKind::Unroutable,
                format!(
                    "no queue on destination `{}` takes routing key `{}`",
                    self.name,
                    kept.as_ref()
                        .and_then(Message::routing_key)
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(message) = kept {
            for queue in full {
                queue.push(message.clone()).await;
            }
        }
        Ok(Confirmation::confirmed())
    }
}

/// Publishes straight into one queue.
pub(crate) struct QueueProducer {
    pub(crate) queue: Arc<Queue>,
}

#[async_trait]
impl Producer for QueueProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        self.queue.push(message).await;
        Ok(Confirmation::confirmed())
    }
}
