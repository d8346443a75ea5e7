//! The in-process broker: destinations fan out to queues, as a RabbitMQ
//! topic exchange fans out to the queues bound to it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use bindery_core::message::Message;
use bindery_core::routing::RoutingPattern;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use tokio::sync::Notify;

/// An in-process broker. Binders that share one see the same destinations.
#[derive(Debug, Default)]
pub struct Broker {
    destinations: Mutex<HashMap<String, Arc<Destination>>>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    next_anonymous: AtomicU64,
}

static SHARED: LazyLock<Mutex<HashMap<String, Arc<Broker>>>> = LazyLock::new(Default::default);

impl Broker {
    /// A new, private broker.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The process-wide broker called `name`, created on first use.
    pub fn shared(name: &str) -> Arc<Self> {
        SHARED.lock().entry(name.to_owned()).or_default().clone()
    }

    /// The destination `name`, declared on first use.
    pub(crate) fn destination(&self, name: &str) -> Arc<Destination> {
        self.destinations
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Destination::default()))
            .clone()
    }

    /// Declares queue `name` bound to `destination` with `patterns` (added
    /// to those it has, as repeated AMQP bindings add up).
    pub(crate) fn declare_queue(
        &self,
        destination: &str,
        name: &str,
        patterns: &[RoutingPattern],
        capacity: Option<usize>,
    ) -> Arc<Queue> {
        let queue = self
            .queues
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Queue::new(name.to_owned(), capacity)))
            .clone();
        self.destination(destination).bind(&queue, patterns);
        queue
    }

    /// The queue `name`, if declared.
    pub(crate) fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.lock().get(name).cloned()
    }

    /// A fresh name for an anonymous queue.
    pub(crate) fn anonymous_name(&self) -> String {
        format!(
            "anonymous.{}",
            self.next_anonymous.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Deletes queue `name` and its bindings; its messages are gone.
    pub(crate) fn delete_queue(&self, name: &str) {
        let Some(queue) = self.queues.lock().remove(name) else {
            return;
        };
        for destination in self.destinations.lock().values() {
            destination.unbind(&queue);
        }
        queue.delete();
    }

    /// Messages ready in queue `name` (not counting unacknowledged ones).
    pub fn queue_depth(&self, name: &str) -> Option<usize> {
        self.queue(name).map(|q| q.state.lock().ready.len())
    }
}

/// A named destination and the queues bound to it.
#[derive(Debug, Default)]
pub(crate) struct Destination {
    bindings: RwLock<Vec<QueueBinding>>,
}

#[derive(Debug)]
pub(crate) struct QueueBinding {
    pub(crate) queue: Arc<Queue>,
    patterns: Vec<RoutingPattern>,
}

impl QueueBinding {
    fn matches(&self, routing_key: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(routing_key))
    }
}

impl Destination {
    fn bind(&self, queue: &Arc<Queue>, patterns: &[RoutingPattern]) {
        let mut bindings = self.bindings.write();
        match bindings.iter_mut().find(|b| Arc::ptr_eq(&b.queue, queue)) {
            Some(binding) => {
                for pattern in patterns {
                    if !binding.patterns.contains(pattern) {
                        binding.patterns.push(pattern.clone());
                    }
                }
            }
            None => bindings.push(QueueBinding {
                queue: queue.clone(),
                patterns: patterns.to_vec(),
            }),
        }
    }

    fn unbind(&self, queue: &Arc<Queue>) {
        self.bindings
            .write()
            .retain(|b| !Arc::ptr_eq(&b.queue, queue));
    }

    /// Offers `message` to every matching queue without waiting. Returns
    /// how many queues matched, the full ones it must still wait for, and
    /// the message unless a queue took it (it is kept for full queues, and
    /// when no queue matched).
    pub(crate) fn offer(&self, message: Message) -> (usize, Vec<Arc<Queue>>, Option<Message>) {
        let bindings = self.bindings.read();
        let routing_key = message.routing_key().unwrap_or_default();
        let matching: SmallVec<[&QueueBinding; 4]> =
            bindings.iter().filter(|b| b.matches(routing_key)).collect();
        let mut full = Vec::new();
        let mut kept = Some(message);
        for (i, binding) in matching.iter().enumerate() {
            let last = i + 1 == matching.len();
            let original = kept.as_ref().expect("kept until the last queue");
            // The last queue takes the message itself, unless a full queue
            // still needs it; the others take a copy.
            let item = if last && full.is_empty() {
                kept.take().expect("kept")
            } else {
                original.clone()
            };
            if let Some(item) = binding.queue.try_push(item) {
                full.push(binding.queue.clone());
                kept.get_or_insert(item);
            }
        }
        (matching.len(), full, kept)
    }
}

/// A queue: ready messages in order, with wake-ups for consumers and for
/// producers waiting on capacity. Wake-ups are sent only when someone
/// waits, so a busy queue pays for none.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: Arc<str>,
    capacity: Option<usize>,
    pub(crate) state: Mutex<QueueState>,
    /// Signalled when a message is ready or a consumer's unacked count drops.
    pub(crate) readable: Notify,
    /// Signalled when space frees up.
    writable: Notify,
    consumers_waiting: AtomicUsize,
    producers_waiting: AtomicUsize,
}

/// Counts a waiter for as long as it lives.
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(crate) ready: VecDeque<Stored>,
    pub(crate) deleted: bool,
    next_sequence: u64,
}

/// A message waiting in a queue or held by a consumer.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) message: Message,
    pub(crate) sequence: u64,
    pub(crate) redelivered: bool,
}

impl Queue {
    fn new(name: String, capacity: Option<usize>) -> Self {
        Self {
            name: name.into(),
            capacity,
            state: Mutex::new(QueueState::default()),
            readable: Notify::new(),
            writable: Notify::new(),
            consumers_waiting: AtomicUsize::new(0),
            producers_waiting: AtomicUsize::new(0),
        }
    }

    /// Registers a consumer about to wait; call after enabling its
    /// `readable` notification and before checking the queue once more.
    pub(crate) fn waiting_consumer(&self) -> Waiting<'_> {
        self.consumers_waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&self.consumers_waiting)
    }

    /// Wakes waiting consumers, if any.
    pub(crate) fn wake_consumers(&self) {
        if self.consumers_waiting.load(Ordering::SeqCst) > 0 {
            self.readable.notify_waiters();
        }
    }

    fn wake_producers(&self) {
        if self.producers_waiting.load(Ordering::SeqCst) > 0 {
            self.writable.notify_waiters();
        }
    }

    /// The most ready messages the queue holds; `None` when unbounded.
    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Whether the queue was deleted.
    pub(crate) fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Appends `message` if there is room (a deleted queue swallows it);
    /// hands it back when the queue is full.
    fn try_push(&self, message: Message) -> Option<Message> {
        let mut state = self.state.lock();
        if state.deleted {
            return None;
        }
        if self.capacity.is_some_and(|c| state.ready.len() >= c) {
            return Some(message);
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.ready.push_back(Stored {
            message,
            sequence,
            redelivered: false,
        });
        drop(state);
        self.wake_consumers();
        None
    }

    /// Appends `message`, waiting for room. Cancel-safe: dropped while
    /// waiting, the message is simply not appended.
    pub(crate) async fn push(&self, message: Message) {
        let Some(mut message) = self.try_push(message) else {
            return;
        };
        loop {
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            self.producers_waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(&self.producers_waiting);
            match self.try_push(message) {
                None => return,
                Some(back) => message = back,
            }
            writable.await;
        }
    }

    /// Hands up to `max` ready messages, oldest first, to `take`.
    pub(crate) fn pop_many(&self, max: usize, mut take: impl FnMut(Stored)) {
        let mut state = self.state.lock();
        let count = max.min(state.ready.len());
        for stored in state.ready.drain(..count) {
            take(stored);
        }
        drop(state);
        if count > 0 {
            self.wake_producers();
        }
    }

    /// Puts messages back at the head, in their original order, marked
    /// redelivered (RabbitMQ requeues to the original position).
    pub(crate) fn requeue(&self, mut stored: Vec<Stored>) {
        if stored.is_empty() {
            return;
        }
        stored.sort_by_key(|s| s.sequence);
        let mut state = self.state.lock();
        for mut item in stored.into_iter().rev() {
            item.redelivered = true;
            state.ready.push_front(item);
        }
        drop(state);
        self.wake_consumers();
    }

    fn delete(&self) {
        let mut state = self.state.lock();
        state.deleted = true;
        state.ready.clear();
        drop(state);
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }
}
