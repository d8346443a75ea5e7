//! Consumers: competing readers of one queue, each holding at most
//! `prefetch` unacknowledged messages.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bindery_core::binder::{Consumer, Delivery, DeliveryHandle};
use bindery_core::error::BinderError;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::broker::{Broker, Queue, Stored};

/// A consumer of one memory queue.
pub(crate) struct MemoryConsumer {
    shared: Arc<ConsumerShared>,
    prefetch: usize,
    cancelled: bool,
    /// An anonymous queue lives as long as its only consumer.
    owned_queue: Option<Arc<Broker>>,
}

/// What deliveries need after the consumer handed them out.
struct ConsumerShared {
    queue: Arc<Queue>,
    /// Unacknowledged messages by sequence; `None` once the consumer is gone.
    unacked: Mutex<Option<HashMap<u64, Stored>>>,
}

impl MemoryConsumer {
    pub(crate) fn new(
        queue: Arc<Queue>,
        prefetch: usize,
        owned_queue: Option<Arc<Broker>>,
    ) -> Self {
        Self {
            shared: Arc::new(ConsumerShared {
                queue,
                unacked: Mutex::new(Some(HashMap::new())),
            }),
            prefetch: prefetch.max(1),
            cancelled: false,
            owned_queue,
        }
    }

    fn try_take(&self) -> Option<Delivery> {
        let mut unacked = self.shared.unacked.lock();
        let held = unacked.as_mut()?;
        if held.len() >= self.prefetch {
            return None;
        }
        let stored = self.shared.queue.pop()?;
        let message = stored.message.clone();
        let handle = MemoryDelivery {
            shared: self.shared.clone(),
            sequence: stored.sequence,
            redelivered: stored.redelivered,
        };
        held.insert(stored.sequence, stored);
        Some(Delivery::new(message, Box::new(handle)))
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        loop {
            if self.cancelled || self.shared.queue.state.lock().deleted {
                return None;
            }
            let readable = self.shared.queue.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            if let Some(delivery) = self.try_take() {
                return Some(delivery);
            }
            readable.await;
        }
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        self.cancelled = true;
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // Like a closed AMQP channel: every unacknowledged message goes back.
        let held = self.shared.unacked.lock().take().unwrap_or_default();
        self.shared.queue.requeue(held.into_values().collect());
        if let Some(broker) = &self.owned_queue {
            broker.delete_queue(&self.shared.queue.name);
        }
    }
}

struct MemoryDelivery {
    shared: Arc<ConsumerShared>,
    sequence: u64,
    redelivered: bool,
}

impl MemoryDelivery {
    /// Removes this delivery from the unacknowledged set.
    fn settle(&self) -> Result<Stored, BinderError> {
        let stored = self
            .shared
            .unacked
            .lock()
            .as_mut()
            .and_then(|held| held.remove(&self.sequence));
        // A consumer waiting on its prefetch bound may now take more.
        self.shared.queue.readable.notify_waiters();
        stored.ok_or_else(|| {
            BinderError::closed(format!(
                "delivery {} of queue `{}` can no longer be settled: its consumer is gone and the message was requeued",
                self.sequence, self.shared.queue.name
            ))
        })
    }
}

impl DeliveryHandle for MemoryDelivery {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        Box::pin(std::future::ready(self.settle().map(drop)))
    }

    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        let result = self.settle().map(|stored| {
            if requeue {
                self.shared.queue.requeue(vec![stored]);
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn id(&self) -> String {
        format!("{}#{}", self.shared.queue.name, self.sequence)
    }

    fn redelivered(&self) -> bool {
        self.redelivered
    }
}
