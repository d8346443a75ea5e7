//! The server side of the Redis Streams scenario: connecting (or failing
//! with how to start the server), fresh stream names per round, preloading
//! a backlog in the binder's entry layout and deleting a round's streams.

use std::sync::atomic::{AtomicU64, Ordering};

use bindery::redis::entry::{CONTENT_TYPE, PAYLOAD};
use redis::aio::MultiplexedConnection;

use crate::order::Order;

/// How to get a server, for failure messages.
pub const START_HINT: &str = "start it with `scripts/brokers/ensure-redis.sh` \
     (installs and starts redis-server at 127.0.0.1:6379), or point BINDERY_TEST_REDIS_URL at one";

/// The consumer group both sides read the input in.
pub const GROUP: &str = "bench";

/// Entries per preloading pipeline: big enough to keep the server busy,
/// small enough to keep each reply small.
const PRELOAD_CHUNK: u64 = 1_000;

/// The server: `BINDERY_TEST_REDIS_URL`, as for the tests, else the local
/// one.
pub fn url() -> String {
    std::env::var("BINDERY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A multiplexed connection, or a panic that says how to start the server
/// (with the password of the URL redacted).
pub async fn connect() -> MultiplexedConnection {
    let url = url();
    let connected = match redis::Client::open(url.as_str()) {
        Ok(client) => client.get_multiplexed_async_connection().await,
        Err(error) => Err(error),
    };
    connected.unwrap_or_else(|error| {
        panic!(
            "Redis does not answer at {}: {error}\n{START_HINT}",
            bindery::redis::redact_url(&url)
        )
    })
}

/// The streams of one round, unique across rounds and runs (a server keeps
/// what an interrupted run left behind).
#[derive(Clone, Debug)]
pub struct Names {
    round: String,
}

impl Names {
    /// Fresh names tagged with `side` (`raw`, `bindery`).
    pub fn fresh(side: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            round: format!("bench-{side}-{}-{stamp}-{next}", std::process::id()),
        }
    }

    /// The input stream (destination), which holds the backlog.
    pub fn input(&self) -> String {
        format!("{}-in", self.round)
    }

    /// The output stream (destination).
    pub fn output(&self) -> String {
        format!("{}-out", self.round)
    }

    /// Every stream a round may leave behind: input, output, and the
    /// dead-letter stream bindery's group consumer reads.
    fn all(&self) -> [String; 3] {
        [
            self.input(),
            self.output(),
            format!("{}.{GROUP}.dlq", self.input()),
        ]
    }
}

/// Creates [`GROUP`] at the start of `stream` (so it sees the backlog; the
/// binder keeps a group that exists) and appends `messages` JSON orders in
/// the binder's entry layout, every append answered.
pub async fn preload(connection: &mut MultiplexedConnection, stream: &str, messages: u64) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(connection)
        .await
        .expect("XGROUP CREATE");
    let mut next = 0;
    while next < messages {
        let end = (next + PRELOAD_CHUNK).min(messages);
        let mut pipe = redis::pipe();
        for id in next..end {
            pipe.xadd(stream, "*", &entry(&Order::encoded(id))).ignore();
        }
        let _: () = pipe.query_async(connection).await.expect("preload XADD");
        next = end;
    }
}

/// The fields of an entry carrying JSON `payload`, as the binder writes
/// them.
pub fn entry(payload: &[u8]) -> [(&'static str, &[u8]); 2] {
    [(PAYLOAD, payload), (CONTENT_TYPE, b"application/json")]
}

/// Deletes the streams of a round.
pub async fn delete(connection: &mut MultiplexedConnection, names: &Names) {
    let _: () = redis::cmd("DEL")
        .arg(&names.all())
        .query_async(connection)
        .await
        .expect("DEL");
}
