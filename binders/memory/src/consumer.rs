//! Consumers: competing readers of one queue, each holding at most
//! `prefetch` unacknowledged messages.
//!
//! A consumer takes messages from its queue in batches, up to its free
//! prefetch, under one lock: handing them out one by one then costs no
//! locking and no wake-up.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bindery_core::binder::{Consumer, Delivery, DeliveryHandle};
use bindery_core::error::BinderError;
use bindery_core::message::DeliveryId;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::broker::{Broker, Queue, Stored};

/// Most messages taken from the queue under one lock.
const BATCH: usize = 64;

/// A consumer of one memory queue.
pub(crate) struct MemoryConsumer {
    shared: Arc<ConsumerShared>,
    prefetch: usize,
    /// Taken from the queue (and counted as unacknowledged), not yet handed out.
    taken: VecDeque<Delivery>,
    cancelled: bool,
    /// An anonymous queue lives as long as its only consumer.
    owned_queue: Option<Arc<Broker>>,
}

/// What deliveries need after the consumer handed them out.
struct ConsumerShared {
    queue: Arc<Queue>,
    /// Unacknowledged messages by sequence; `None` once the consumer is gone.
    unacked: Mutex<Option<Unacked>>,
}

type Unacked = HashMap<u64, Stored, BuildHasherDefault<SequenceHasher>>;

/// Sequence numbers are unique integers: a multiply spreads them well
/// enough, far cheaper than SipHash.
#[derive(Default)]
struct SequenceHasher(u64);

impl Hasher for SequenceHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8 | u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl MemoryConsumer {
    pub(crate) fn new(
        queue: Arc<Queue>,
        prefetch: NonZeroUsize,
        owned_queue: Option<Arc<Broker>>,
    ) -> Self {
        Self {
            shared: Arc::new(ConsumerShared {
                queue,
                unacked: Mutex::new(Some(Unacked::default())),
            }),
            prefetch: prefetch.get(),
            taken: VecDeque::new(),
            cancelled: false,
            owned_queue,
        }
    }

    /// Takes as many ready messages as the free prefetch allows.
    fn take_batch(&mut self) {
        let mut unacked = self.shared.unacked.lock();
        let Some(held) = unacked.as_mut() else { return };
        let room = self.prefetch.saturating_sub(held.len()).min(BATCH);
        if room == 0 {
            return;
        }
        let shared = &self.shared;
        let taken = &mut self.taken;
        shared.queue.pop_many(room, |stored| {
            let handle = MemoryDelivery {
                shared: shared.clone(),
                sequence: stored.sequence,
                redelivered: stored.redelivered,
            };
            taken.push_back(Delivery::new(stored.message.clone(), Box::new(handle)));
            held.insert(stored.sequence, stored);
        });
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.try_recv() {
                return Some(delivery);
            }
            if self.cancelled || self.shared.queue.is_deleted() {
                return None;
            }
            let queue = self.shared.queue.clone();
            let readable = queue.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            let _waiting = queue.waiting_consumer();
            self.take_batch();
            if self.taken.is_empty() && !queue.is_deleted() {
                readable.await;
            }
        }
    }

    fn try_recv(&mut self) -> Option<Delivery> {
        if self.cancelled {
            return None;
        }
        if self.taken.is_empty() {
            self.take_batch();
        }
        self.taken.pop_front()
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        // Taken but never handed out: back to the queue at once.
        let taken: Vec<Delivery> = self.taken.drain(..).collect();
        for delivery in taken {
            let _ = delivery.nack(true).await;
        }
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
        self.shared.queue.wake_consumers();
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

    fn ack_now(&mut self) -> Option<Result<(), BinderError>> {
        // Settling is a map removal: nothing to wait for.
        Some(self.settle().map(drop))
    }

    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        let result = self.settle().map(|stored| {
            if requeue {
                self.shared.queue.requeue(vec![stored]);
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn id(&self) -> DeliveryId {
        DeliveryId::in_queue(self.shared.queue.name.clone(), self.sequence)
    }

    fn redelivered(&self) -> bool {
        self.redelivered
    }
}
