//! Producers: a task per producer owns a connection and sends what
//! [`Producer::send`] queued, in order, as pipelines of `XADD` (and `WAIT`
//! when `wait-replicas` is set), so many publishes are in flight at once
//! without reordering them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery_core::binder::{Confirmation, Producer};
use bindery_core::error::BinderError;
use bindery_core::message::Message;
use bytes::Bytes;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::{RedisError, Result};
use crate::{RedisBindingOptions, Shared, entry};

/// Most publishes sent in one pipeline.
const BATCH: usize = 256;
/// Publishes queued before [`Producer::send`] waits (back-pressure).
const QUEUE: usize = 1024;

type Reply = oneshot::Sender<Result<()>>;

enum Command {
    Publish(Vec<(Bytes, Bytes)>, Reply),
    Flush(oneshot::Sender<()>),
}

/// A producer of one stream.
pub(crate) struct RedisProducer {
    stream: String,
    queue: mpsc::Sender<Command>,
    target_group: Option<String>,
}

impl RedisProducer {
    /// Starts the producer's task; it connects at once so that a server
    /// that is away shows as an error of the bind.
    pub(crate) async fn start(
        shared: Arc<Shared>,
        stream: String,
        target_group: Option<String>,
        options: RedisBindingOptions,
    ) -> Result<Self> {
        let wait = (options.wait_replicas > 0).then_some(options.wait_timeout);
        let connection = shared.dedicated(wait.unwrap_or_default()).await?;
        let (queue, commands) = mpsc::channel(QUEUE);
        let task = Sender {
            shared,
            stream: stream.clone(),
            options,
            connection: Some(connection),
        };
        tokio::spawn(task.run(commands));
        Ok(Self {
            stream,
            queue,
            target_group,
        })
    }
}

#[async_trait]
impl Producer for RedisProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let fields = entry::encode(&message, self.target_group.as_deref());
        let (reply, confirmed) = oneshot::channel();
        self.queue
            .send(Command::Publish(fields, reply))
            .await
            .map_err(|_| RedisError::ProducerClosed(self.stream.clone()))?;
        let stream = self.stream.clone();
        Ok(Confirmation::pending(async move {
            match confirmed.await {
                Ok(result) => result.map_err(BinderError::from),
                Err(_) => Err(RedisError::ProducerClosed(stream).into()),
            }
        }))
    }

    async fn flush(&self) -> Result<(), BinderError> {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
        Ok(())
    }
}

struct Sender {
    shared: Arc<Shared>,
    stream: String,
    options: RedisBindingOptions,
    connection: Option<MultiplexedConnection>,
}

impl Sender {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = commands.recv().await {
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Publish(fields, reply) => batch.push((fields, reply)),
                    Command::Flush(done) => flushes.push(done),
                }
                if batch.len() < BATCH {
                    next = commands.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                let outcome = self.publish(&batch).await;
                for ((_, reply), result) in batch.drain(..).zip(outcome) {
                    let _ = reply.send(result);
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// Sends one pipeline; one result per publish.
    async fn publish(&mut self, batch: &[(Vec<(Bytes, Bytes)>, Reply)]) -> Vec<Result<()>> {
        let mut pipe = redis::pipe();
        for (fields, _) in batch {
            let command = pipe.cmd("XADD").arg(&self.stream);
            if let Some(max_len) = self.options.max_len {
                command.arg("MAXLEN").arg("~").arg(max_len);
            }
            command.arg("*");
            for (field, value) in fields {
                command.arg(field.as_ref()).arg(value.as_ref());
            }
        }
        let wait = self.options.wait_replicas;
        if wait > 0 {
            pipe.cmd("WAIT")
                .arg(wait)
                .arg(millis(self.options.wait_timeout));
        }
        let connection = match self.connection.as_mut() {
            Some(connection) => connection,
            None => match self.shared.dedicated(self.options.wait_timeout).await {
                Ok(connection) => self.connection.insert(connection),
                Err(e) => return batch.iter().map(|_| Err(clone_error(&e))).collect(),
            },
        };
        // Each XADD succeeds or fails on its own: a refused entry fails
        // only its own publish.
        pipe.ignore_errors();
        let replies: redis::RedisResult<Vec<redis::RedisResult<Value>>> =
            pipe.query_async(connection).await;
        match replies {
            Ok(mut replies) => {
                self.shared.succeeded();
                let not_replicated = if wait > 0 {
                    let acknowledged = match replies.pop() {
                        Some(Ok(Value::Int(n))) => n,
                        _ => 0,
                    };
                    (acknowledged < i64::from(wait)).then_some(acknowledged)
                } else {
                    None
                };
                replies
                    .into_iter()
                    .map(|reply| match (reply, not_replicated) {
                        (Err(e), _) => Err(RedisError::from_client(
                            &self.shared.server,
                            format!("XADD to stream `{}`", self.stream),
                            e,
                        )),
                        (Ok(_), Some(acknowledged)) => Err(RedisError::NotReplicated {
                            stream: self.stream.clone(),
                            acknowledged,
                            wanted: wait,
                            timeout_ms: millis(self.options.wait_timeout),
                        }),
                        (Ok(_), None) => Ok(()),
                    })
                    .collect()
            }
            Err(e) => {
                let error = self
                    .shared
                    .failed(&format!("XADD to stream `{}`", self.stream), e);
                if error.is_connection() {
                    // Unknown whether the entries were added: the runtime
                    // sends again (at least once). Reconnect next time.
                    self.connection = None;
                    warn!(stream = %self.stream, "publish failed, reconnecting: {error}");
                }
                batch.iter().map(|_| Err(clone_error(&error))).collect()
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The same failure for every publish of a batch (the client error is not
/// `Clone`, so it is kept as text).
fn clone_error(error: &RedisError) -> RedisError {
    match error {
        RedisError::Connection {
            server,
            context,
            source,
        } => RedisError::Connection {
            server: server.clone(),
            context: context.clone(),
            source: redis::RedisError::from((
                redis::ErrorKind::Io,
                "connection failed",
                source.to_string(),
            )),
        },
        RedisError::Refused {
            server,
            context,
            source,
        } => RedisError::Refused {
            server: server.clone(),
            context: context.clone(),
            source: redis::RedisError::from((
                redis::ErrorKind::Client,
                "refused",
                source.to_string(),
            )),
        },
        other => RedisError::Reply {
            server: String::new(),
            context: "publish".to_owned(),
            detail: other.to_string(),
        },
    }
}
