//! Consumers: a task per consumer owns a connection of its own (reads
//! block), reads entries into a hand-over channel, and keeps its group
//! healthy: it refreshes what it holds and claims what dead consumers left
//! (`XAUTOCLAIM`). The channel makes [`Consumer::recv`] cancel-safe and
//! lets it wait across reconnects.
//!
//! Every delivery holds one of `prefetch` permits until it is settled, so
//! the channel and the application never hold more than `prefetch`
//! entries; a read asks for at most as many entries as there are free
//! permits (`COUNT`).
//!
//! Acknowledgements go over the binder's shared connection (`XACK`), so
//! they never wait behind a blocking read.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Consumer, ConsumerSpec, Delivery, DeliveryHandle};
use bindery_core::error::BinderError;
use bindery_core::message::{DeliveryId, Headers, Message};
use bindery_core::routing::{RoutingPattern, matches_any};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::entry::{self, Entry};
use crate::error::{RedisError, Result};
use crate::{ORIGINAL_ID, Shared};

/// The consumer that entries handed back by a dropped or cancelled
/// consumer are parked on, idle long enough that the next `XAUTOCLAIM` of
/// any consumer of the group takes them.
pub const RETURNED_CONSUMER: &str = "bindery-returned";

/// The idle time given to handed-back entries: ten years, more than any
/// `min-idle` and less than the epoch (Redis ignores larger ones).
const RETURNED_IDLE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Longest pause between reconnection attempts.
const MAX_BACK_OFF: Duration = Duration::from_secs(5);

/// Most IDs per `XCLAIM`, `XACK` or `XPENDING`.
const CHUNK: usize = 500;

/// What a consumer reads.
#[derive(Clone, Debug)]
pub(crate) enum ReadFrom {
    /// A consumer group of a stream.
    Group {
        stream: String,
        group: String,
        min_idle: Duration,
    },
    /// The entries after `after`, without a group.
    Anonymous { stream: String, after: String },
}

impl ReadFrom {
    fn stream(&self) -> &str {
        match self {
            Self::Group { stream, .. } | Self::Anonymous { stream, .. } => stream,
        }
    }
}

/// The ID of the last entry of `stream` (`0-0` when it is empty or
/// missing): an anonymous subscription reads what follows it.
pub(crate) async fn last_id(shared: &Shared, stream: &str) -> Result<String> {
    let mut ops = shared.ops().await?;
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut ops)
        .await
        .map_err(|e| shared.failed(&format!("reading the last ID of stream `{stream}`"), e))?;
    let entries = entry::entries_of(reply).map_err(|detail| RedisError::Reply {
        server: shared.server.clone(),
        context: format!("XREVRANGE of stream `{stream}`"),
        detail,
    })?;
    Ok(entries
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |e| e.id))
}

/// What the task, the consumer and its deliveries share.
struct State {
    shared: Arc<Shared>,
    from: ReadFrom,
    /// This consumer's name in its group.
    name: String,
    routing_keys: Vec<RoutingPattern>,
    prefetch: usize,
    permits: Arc<Semaphore>,
    /// What was handed out and settled.
    /// out twice when a read of the pending list returns them again.
    tracking: Mutex<Tracking>,
    /// Set once the consumer is dropped: its entries went back to the group.
    gone: AtomicBool,
    /// Local redeliveries (nack with requeue).
    requeue: mpsc::UnboundedSender<Delivery>,
}

impl State {
    /// How long a reader asked to stop may take: a blocking read, or a
    /// pause between reconnections, and a margin.
    fn stop_within(&self) -> Duration {
        self.shared.settings.block.max(MAX_BACK_OFF) + Duration::from_secs(1)
    }
}

/// The IDs a consumer handed out and settled.
#[derive(Default)]
struct Tracking {
    /// Handed out and not settled: refreshed while held, and never handed
    /// out twice when the pending list or a claim returns them again.
    held: HashSet<String>,
    /// While a read that can return entries handed out before (the pending
    /// list, `XAUTOCLAIM`) is in flight: IDs acknowledged meanwhile. The
    /// server may have answered that read before it took the `XACK`.
    settled_during_read: Option<HashSet<String>>,
}

impl Tracking {
    fn settled(&mut self, id: &str) {
        self.held.remove(id);
        if let Some(settled) = &mut self.settled_during_read {
            settled.insert(id.to_owned());
        }
    }

    /// Whether an entry a read returned was handed out already.
    fn seen(&self, id: &str) -> bool {
        self.held.contains(id)
            || self
                .settled_during_read
                .as_ref()
                .is_some_and(|settled| settled.contains(id))
    }

    /// Starts a read that may return entries handed out before.
    fn rereading(&mut self) {
        self.settled_during_read = Some(HashSet::new());
    }
}

/// A consumer of one stream, in a group or anonymous.
pub(crate) struct RedisConsumer {
    state: Arc<State>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    requeued: mpsc::UnboundedReceiver<Delivery>,
    /// The reader; taken when the consumer is cancelled or dropped.
    task: Option<JoinHandle<()>>,
    cancelled: bool,
}

impl RedisConsumer {
    /// Starts reading `from` for `spec` (prefetch, routing keys).
    pub(crate) fn start(shared: Arc<Shared>, from: ReadFrom, spec: &ConsumerSpec) -> Self {
        let prefetch = spec.prefetch.get();
        let (requeue, requeued) = mpsc::unbounded_channel();
        let (sender, deliveries) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            name: shared.next_consumer_name(),
            shared,
            from,
            routing_keys: spec.routing_keys.clone(),
            prefetch,
            permits: Arc::new(Semaphore::new(prefetch)),
            tracking: Mutex::new(Tracking::default()),
            gone: AtomicBool::new(false),
            requeue,
        });
        let task = tokio::spawn(Reader::new(state.clone(), sender).run());
        Self {
            state,
            deliveries,
            requeued,
            task: Some(task),
            cancelled: false,
        }
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        if self.cancelled {
            return None;
        }
        tokio::select! {
            biased;
            Some(delivery) = self.requeued.recv() => Some(delivery),
            delivery = self.deliveries.recv() => delivery,
        }
    }

    fn try_recv(&mut self) -> Option<Delivery> {
        if self.cancelled {
            return None;
        }
        self.requeued
            .try_recv()
            .or_else(|_| self.deliveries.try_recv())
            .ok()
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        self.cancelled = true;
        self.deliveries.close();
        if let Some(task) = self.task.take() {
            reader_stopped(task, self.state.stop_within()).await;
        }
        // Read but never handed out: back to the group at once, with what
        // the reader's last read took and could not hand out.
        while let Ok(delivery) = self
            .requeued
            .try_recv()
            .or_else(|_| self.deliveries.try_recv())
        {
            let (_, acknowledger) = delivery.into_parts();
            // A Redis delivery's id is its stream entry's id.
            let id = acknowledger.id().to_string();
            self.state.tracking.lock().held.remove(id.as_str());
            drop(acknowledger);
        }
        if let ReadFrom::Group { stream, group, .. } = &self.state.from {
            give_back_pending(&self.state, stream, group, Held::Kept).await?;
        }
        Ok(())
    }
}

/// Lets the reader end by itself: a read it has in flight is answered
/// first, so whatever the server hands it lands in this consumer's pending
/// list before that list goes back to the group. An aborted read is still
/// served by the server, and its entries would wait for `min-idle`.
async fn reader_stopped(task: JoinHandle<()>, within: Duration) {
    let abort = task.abort_handle();
    if tokio::time::timeout(within, task).await.is_err() {
        abort.abort();
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.state.gone.store(true, Ordering::SeqCst);
        // None once `cancel` stopped the reader.
        let reader = self.task.take();
        let (ReadFrom::Group { stream, group, .. }, Ok(runtime)) = (
            self.state.from.clone(),
            tokio::runtime::Handle::try_current(),
        ) else {
            if let Some(reader) = reader {
                reader.abort();
            }
            return;
        };
        let state = self.state.clone();
        // The reader sees its channel closed once this consumer is gone.
        runtime.spawn(async move {
            if let Some(reader) = reader {
                reader_stopped(reader, state.stop_within()).await;
            }
            if let Err(e) = give_back_pending(&state, &stream, &group, Held::GivenBack).await {
                warn!(
                    stream,
                    group,
                    consumer = state.name,
                    "could not hand entries back to the group; they are claimed after min-idle: {e}"
                );
            }
        });
    }
}

/// Parks `ids` on [`RETURNED_CONSUMER`] with a long idle time, so the
/// next sweep of any consumer of the group claims them.
async fn give_back(shared: &Shared, stream: &str, group: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut ops = shared.ops().await?;
    for chunk in ids.chunks(CHUNK) {
        let _: Value = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(group)
            .arg(RETURNED_CONSUMER)
            .arg(0)
            .arg(chunk)
            .arg("IDLE")
            .arg(RETURNED_IDLE_MS)
            .arg("JUSTID")
            .query_async(&mut ops)
            .await
            .map_err(|e| shared.failed("handing entries back to the group", e))?;
    }
    Ok(())
}

/// What [`give_back_pending`] does with entries the application holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// They stay pending on this consumer until the application settles
    /// them (a cancelled consumer).
    Kept,
    /// They go back too (a dropped consumer: its deliveries can no longer
    /// be settled).
    GivenBack,
}

/// Hands back the entries pending on this consumer.
async fn give_back_pending(state: &State, stream: &str, group: &str, held: Held) -> Result<()> {
    let shared = &state.shared;
    let mut ops = shared.ops().await?;
    let mut from = "-".to_owned();
    loop {
        let reply: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(&from)
            .arg("+")
            .arg(CHUNK)
            .arg(&state.name)
            .query_async(&mut ops)
            .await
            .map_err(|e| shared.failed("listing pending entries", e))?;
        let ids: Vec<String> = match reply {
            Value::Array(rows) => rows
                .into_iter()
                .filter_map(|row| match row {
                    Value::Array(mut fields) if !fields.is_empty() => {
                        entry::text_of(fields.swap_remove(0))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let Some(last) = ids.last() else {
            break;
        };
        // Exclusive from the last one listed: held entries stay listed.
        from = format!("({last}");
        let ids: Vec<String> = match held {
            Held::GivenBack => ids,
            Held::Kept => {
                let tracking = state.tracking.lock();
                ids.into_iter()
                    .filter(|id| !tracking.held.contains(id))
                    .collect()
            }
        };
        give_back(shared, stream, group, &ids).await?;
    }
    // The consumer stays in the group until a sweep finds it empty and
    // idle (`remove_dead_consumers`): should its reader have been aborted
    // in a read the server answered after the XPENDING above, entries are
    // pending on it, and XGROUP DELCONSUMER would drop those for good.
    Ok(())
}

/// Acknowledges `ids` in the group. `XACK` is idempotent, so a failure of
/// the connection is retried a few times while the shared connection
/// re-establishes itself.
async fn ack(shared: &Shared, stream: &str, group: &str, ids: &[String]) -> Result<()> {
    let mut pause = Duration::from_millis(50);
    let mut attempts = 0;
    loop {
        match ack_once(shared, stream, group, ids).await {
            Err(e) if e.is_connection() && attempts < ACK_ATTEMPTS => {
                attempts += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACK_OFF);
            }
            result => return result,
        }
    }
}

/// Retries of an `XACK` that failed for the connection (about 6 s in all).
const ACK_ATTEMPTS: u32 = 8;

async fn ack_once(shared: &Shared, stream: &str, group: &str, ids: &[String]) -> Result<()> {
    let mut ops = shared.ops().await?;
    for chunk in ids.chunks(CHUNK) {
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(chunk)
            .query_async(&mut ops)
            .await
            .map_err(|e| shared.failed(&format!("XACK on stream `{stream}`"), e))?;
    }
    shared.succeeded();
    Ok(())
}

/// The consumer's task.
struct Reader {
    state: Arc<State>,
    sender: mpsc::UnboundedSender<Delivery>,
    connection: Option<MultiplexedConnection>,
    /// Read this consumer's own pending entries before new ones (after
    /// every (re)connection), from this ID on.
    pending_from: Option<String>,
    /// The `XAUTOCLAIM` cursor.
    claim_cursor: String,
    next_sweep: Instant,
    /// When to look for dead consumers in the group next.
    next_cleanup: Instant,
    back_off: Duration,
    /// An anonymous subscription's position: the last ID read.
    after: String,
}

impl Reader {
    fn new(state: Arc<State>, sender: mpsc::UnboundedSender<Delivery>) -> Self {
        Self {
            sender,
            connection: None,
            pending_from: None,
            claim_cursor: "0-0".to_owned(),
            next_sweep: Instant::now(),
            next_cleanup: Instant::now(),
            back_off: Duration::from_millis(100),
            after: match &state.from {
                ReadFrom::Anonymous { after, .. } => after.clone(),
                ReadFrom::Group { .. } => String::new(),
            },
            state,
        }
    }

    async fn run(mut self) {
        loop {
            if self.sender.is_closed() {
                return;
            }
            if let Err(e) = self.step().await {
                if e.is_connection() {
                    warn!(
                        stream = self.state.from.stream(),
                        consumer = self.state.name,
                        "connection lost, reconnecting in {:?}: {e}",
                        self.back_off
                    );
                    self.connection = None;
                } else {
                    warn!(stream = self.state.from.stream(), "read failed: {e}");
                    self.recover(&e).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(self.back_off) => {}
                    () = self.sender.closed() => return,
                }
                self.back_off = (self.back_off * 2).min(MAX_BACK_OFF);
            }
        }
    }

    /// After a refused read: a stream or group deleted (or a server that
    /// lost its data) gets its group again.
    async fn recover(&self, error: &RedisError) {
        if let (ReadFrom::Group { stream, group, .. }, RedisError::Refused { source, .. }) =
            (&self.state.from, error)
        {
            if source.code() == Some("NOGROUP") {
                let _ = self.state.shared.ensure_group(stream, group, "$").await;
            }
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let connection = self
            .state
            .shared
            .dedicated(self.state.shared.settings.block)
            .await?;
        debug!(
            stream = self.state.from.stream(),
            consumer = self.state.name,
            "connected"
        );
        self.connection = Some(connection.clone());
        // Entries read before the connection was lost may never have
        // arrived: read the pending list first.
        if matches!(self.state.from, ReadFrom::Group { .. }) {
            self.pending_from = Some("0".to_owned());
        }
        Ok(connection)
    }

    /// One read or sweep.
    async fn step(&mut self) -> Result<()> {
        let mut connection = self.connection().await?;
        if let ReadFrom::Group { min_idle, .. } = &self.state.from {
            let min_idle = *min_idle;
            if Instant::now() >= self.next_sweep {
                self.sweep(&mut connection, min_idle).await?;
                self.next_sweep = Instant::now() + self.state.shared.settings.claim_interval;
                return Ok(());
            }
        }
        // Wait for room, but not past the next sweep.
        let first = tokio::select! {
            permit = self.state.permits.clone().acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
            () = tokio::time::sleep_until(self.next_sweep), if matches!(self.state.from, ReadFrom::Group { .. }) => return Ok(()),
            () = self.sender.closed() => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < self.state.prefetch {
            match self.state.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let count = permits.len();
        let block = self
            .state
            .shared
            .settings
            .block
            .min(self.next_sweep.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(10));
        let from = self.state.from.clone();
        let (entries, redelivered) = match &from {
            ReadFrom::Group { stream, group, .. } => {
                if let Some(after) = self.pending_from.clone() {
                    self.state.tracking.lock().rereading();
                    let entries = self
                        .read_group(&mut connection, stream, group, count, None, &after)
                        .await?;
                    // The pending list is done once a read returns less
                    // than it asked for.
                    self.pending_from = if entries.len() < count {
                        None
                    } else {
                        entries.last().map(|e| e.id.clone())
                    };
                    (entries, true)
                } else {
                    let entries = self
                        .read_group(&mut connection, stream, group, count, Some(block), ">")
                        .await?;
                    (entries, false)
                }
            }
            ReadFrom::Anonymous { stream, .. } => {
                let reply: Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(millis(block))
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(&self.after)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| {
                        self.state
                            .shared
                            .failed(&format!("XREAD of stream `{stream}`"), e)
                    })?;
                let entries = self.parse(reply, "XREAD")?;
                if let Some(last) = entries.last() {
                    self.after = last.id.clone();
                }
                (entries, false)
            }
        };
        self.state.shared.succeeded();
        self.back_off = Duration::from_millis(100);
        self.hand_out(entries, redelivered, permits).await
    }

    async fn read_group(
        &self,
        connection: &mut MultiplexedConnection,
        stream: &str,
        group: &str,
        count: usize,
        block: Option<Duration>,
        id: &str,
    ) -> Result<Vec<Entry>> {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(group)
            .arg(&self.state.name)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            command.arg("BLOCK").arg(millis(block));
        }
        command.arg("STREAMS").arg(stream).arg(id);
        let reply: Value = command.query_async(connection).await.map_err(|e| {
            self.state
                .shared
                .failed(&format!("XREADGROUP of stream `{stream}`"), e)
        })?;
        self.parse(reply, "XREADGROUP")
    }

    fn parse(&self, reply: Value, command: &str) -> Result<Vec<Entry>> {
        entry::read_reply(reply).map_err(|detail| RedisError::Reply {
            server: self.state.shared.server.clone(),
            context: format!("{command} of stream `{}`", self.state.from.stream()),
            detail,
        })
    }

    /// Refreshes the idle time of held entries and claims entries that
    /// dead consumers left for longer than `min_idle`.
    async fn sweep(
        &mut self,
        connection: &mut MultiplexedConnection,
        min_idle: Duration,
    ) -> Result<()> {
        let ReadFrom::Group { stream, group, .. } = self.state.from.clone() else {
            return Ok(());
        };
        if Instant::now() >= self.next_cleanup {
            let dead_after = dead_after(min_idle, self.state.shared.settings.claim_interval);
            self.next_cleanup = Instant::now() + dead_after / 2;
            self.remove_dead_consumers(connection, &stream, &group, dead_after)
                .await?;
        }
        let held: Vec<String> = self.state.tracking.lock().held.iter().cloned().collect();
        for chunk in held.chunks(CHUNK) {
            let _: Value = redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(&group)
                .arg(&self.state.name)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .query_async(connection)
                .await
                .map_err(|e| self.state.shared.failed("refreshing held entries", e))?;
        }
        let mut permits = Vec::new();
        while permits.len() < self.state.prefetch {
            match self.state.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        if permits.is_empty() {
            return Ok(());
        }
        self.state.tracking.lock().rereading();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(&group)
            .arg(&self.state.name)
            .arg(millis(min_idle))
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(permits.len())
            .query_async(connection)
            .await
            .map_err(|e| self.state.shared.failed("XAUTOCLAIM", e))?;
        let Value::Array(mut parts) = reply else {
            return Err(RedisError::Reply {
                server: self.state.shared.server.clone(),
                context: "XAUTOCLAIM".to_owned(),
                detail: "not an array".to_owned(),
            });
        };
        if parts.len() < 2 {
            return Err(RedisError::Reply {
                server: self.state.shared.server.clone(),
                context: "XAUTOCLAIM".to_owned(),
                detail: "too short".to_owned(),
            });
        }
        let entries = parts.swap_remove(1);
        self.claim_cursor =
            entry::text_of(parts.swap_remove(0)).unwrap_or_else(|| "0-0".to_owned());
        let entries = entry::entries_of(entries).map_err(|detail| RedisError::Reply {
            server: self.state.shared.server.clone(),
            context: "XAUTOCLAIM".to_owned(),
            detail,
        })?;
        if !entries.is_empty() {
            debug!(stream, group, count = entries.len(), "claimed idle entries");
        }
        self.hand_out(entries, true, permits).await
    }

    /// Removes consumers that hold nothing and have not read for much
    /// longer than any live consumer would (a killed process's), so groups
    /// do not collect names. Live consumers read or sweep every
    /// `claim-interval`.
    async fn remove_dead_consumers(
        &self,
        connection: &mut MultiplexedConnection,
        stream: &str,
        group: &str,
        dead_after: Duration,
    ) -> Result<()> {
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async(connection)
            .await
            .map_err(|e| self.state.shared.failed("XINFO CONSUMERS", e))?;
        let Value::Array(consumers) = reply else {
            return Ok(());
        };
        for consumer in consumers {
            let fields: Vec<Value> = match consumer {
                Value::Array(fields) => fields,
                Value::Map(map) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => continue,
            };
            let (mut name, mut pending, mut idle) = (None, None, None);
            let mut iter = fields.into_iter();
            while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
                match entry::text_of(key).as_deref() {
                    Some("name") => name = entry::text_of(value),
                    Some("pending") => pending = as_int(&value),
                    Some("idle") => idle = as_int(&value),
                    _ => {}
                }
            }
            let (Some(name), Some(0), Some(idle)) = (name, pending, idle) else {
                continue;
            };
            if name != self.state.name && u128::try_from(idle).unwrap_or(0) > dead_after.as_millis()
            {
                let _: Value = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(stream)
                    .arg(group)
                    .arg(&name)
                    .query_async(connection)
                    .await
                    .map_err(|e| self.state.shared.failed("XGROUP DELCONSUMER", e))?;
                debug!(
                    stream,
                    group,
                    consumer = name,
                    "removed a dead consumer holding nothing"
                );
            }
        }
        Ok(())
    }

    /// Hands entries to the consumer, one permit each; acknowledges those
    /// this consumer does not take (no message left, another group's
    /// redrive, a routing key that does not match).
    async fn hand_out(
        &mut self,
        entries: Vec<Entry>,
        redelivered: bool,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) -> Result<()> {
        // Entries this binding does not want (routing key, or unreadable): acked
        // so the group does not hold them pending.
        let mut unwanted = Vec::new();
        for entry in entries {
            if self.state.tracking.lock().seen(&entry.id) {
                // Already handed out (read again from the pending list).
                continue;
            }
            let group = match &self.state.from {
                ReadFrom::Group { group, .. } => Some(group.as_str()),
                ReadFrom::Anonymous { .. } => None,
            };
            let wanted = entry.message.as_ref().is_some_and(|message| {
                entry
                    .target_group
                    .as_deref()
                    .is_none_or(|g| Some(g) == group)
                    && matches_any(
                        &self.state.routing_keys,
                        message.routing_key().unwrap_or_default(),
                    )
            });
            let (Some(message), true) = (entry.message, wanted) else {
                unwanted.push(entry.id);
                continue;
            };
            let Some(permit) = permits.pop() else {
                // More entries than asked for: leave the rest pending and
                // read the pending list again.
                self.pending_from = Some("0".to_owned());
                break;
            };
            self.state.tracking.lock().held.insert(entry.id.clone());
            let handle = RedisDelivery {
                state: self.state.clone(),
                id: entry.id,
                message: message.clone(),
                redelivered,
                permit: Some(permit),
                settled: false,
            };
            if self
                .sender
                .send(Delivery::new(message, Box::new(handle)))
                .is_err()
            {
                // The consumer stopped; the delivery, dropped unsettled,
                // is no longer held and goes back with the pending list.
                return Ok(());
            }
        }
        self.state.tracking.lock().settled_during_read = None;
        if let ReadFrom::Group { stream, group, .. } = &self.state.from {
            if !unwanted.is_empty() {
                ack(&self.state.shared, stream, group, &unwanted).await?;
            }
        }
        Ok(())
    }
}

/// How long a consumer that holds nothing must not have read before it
/// counts as dead and is removed from its group: ten times `min-idle` or
/// `claim-interval`, whichever is longer (5 min with the defaults). Live
/// consumers read or sweep at least every `claim-interval`.
fn dead_after(min_idle: Duration, claim_interval: Duration) -> Duration {
    (min_idle * 10).max(claim_interval * 10)
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One delivery's handle.
struct RedisDelivery {
    state: Arc<State>,
    id: String,
    /// Kept for a local redelivery.
    message: Message,
    redelivered: bool,
    permit: Option<OwnedSemaphorePermit>,
    settled: bool,
}

impl RedisDelivery {
    fn settle(mut self) -> BoxFuture<'static, Result<(), BinderError>> {
        self.settled = true;
        let state = self.state.clone();
        let id = self.id.clone();
        let permit = self.permit.take();
        Box::pin(async move {
            if state.gone.load(Ordering::SeqCst) {
                return Err(BinderError::closed(format!(
                    "entry {id} of stream `{}` can no longer be settled: its consumer is gone and the entry went back to the group",
                    state.from.stream()
                )));
            }
            let result = match &state.from {
                ReadFrom::Group { stream, group, .. } => {
                    ack(&state.shared, stream, group, std::slice::from_ref(&id))
                        .await
                        .map_err(BinderError::from)
                }
                ReadFrom::Anonymous { .. } => Ok(()),
            };
            if result.is_ok() {
                state.tracking.lock().settled(&id);
            }
            drop(permit);
            result
        })
    }
}

impl DeliveryHandle for RedisDelivery {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        (*self).settle()
    }

    fn nack(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        if !requeue {
            // Redis has no reject: the runtime dead-letters first, then the
            // entry is acknowledged.
            return (*self).settle();
        }
        self.settled = true;
        if self.state.gone.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(BinderError::closed(
                "the consumer is gone; the entry went back to the group",
            ))));
        }
        // Stays pending on this consumer, received again before anything
        // newer; the permit goes with it.
        let again = RedisDelivery {
            state: self.state.clone(),
            id: self.id.clone(),
            message: self.message.clone(),
            redelivered: true,
            permit: self.permit.take(),
            settled: false,
        };
        let message = self.message.clone();
        let _ = self
            .state
            .requeue
            .send(Delivery::new(message, Box::new(again)));
        Box::pin(std::future::ready(Ok(())))
    }

    /// The stream entry's id (`<ms>-<seq>`).
    fn id(&self) -> DeliveryId {
        DeliveryId::Other(Arc::from(self.id.as_str()))
    }

    fn redelivered(&self) -> bool {
        self.redelivered
    }

    fn dead_letter_headers(&self, headers: &mut Headers) {
        headers.insert(ORIGINAL_ID, self.id.clone());
    }
}

impl Drop for RedisDelivery {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: the entry stays pending, is no longer
            // refreshed, and is claimed again after min-idle (or when the
            // consumer goes away).
            self.state.tracking.lock().held.remove(&self.id);
        }
    }
}
