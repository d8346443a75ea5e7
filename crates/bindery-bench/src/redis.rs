//! Redis Streams throughput: a preloaded stream of JSON orders read by a
//! consumer group, processed (decode, change a field, encode), appended
//! to another stream and acknowledged once that `XADD` returned, by a
//! bindery app on the Redis binder and by raw redis-rs with the same
//! prefetch.
//!
//! Each round has its own streams, preloaded (in the binder's entry
//! layout, so either side reads them) before the clock starts and deleted
//! afterwards. The server is `BINDERY_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`; `scripts/brokers/ensure-redis.sh` starts it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bindery::prelude::*;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};

use crate::order::Order;

/// Entries read at once and unacknowledged at most, on both sides.
pub const PREFETCH: usize = 100;

/// The consumer group both sides read the input in.
const GROUP: &str = "bench";

/// The input binding of the bindery app, whose `acked` count ends a run.
const INPUT_BINDING: &str = "process-in-0";

/// Entries per preloading pipeline.
const PRELOAD_CHUNK: u64 = 1_000;

/// The server under test.
pub fn url() -> String {
    std::env::var("BINDERY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The streams of one run.
struct Streams {
    input: String,
    output: String,
}

impl Streams {
    fn fresh(side: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        let round = format!("bench-{side}-{}-{next}", std::process::id());
        Self {
            input: format!("{round}.in"),
            output: format!("{round}.out"),
        }
    }
}

async fn connect() -> MultiplexedConnection {
    let url = url();
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis does not answer at {url}: {e}; start it with scripts/brokers/ensure-redis.sh"
            )
        })
}

/// Creates the group at the start of the input stream and appends
/// `messages` orders to it.
async fn preload(connection: &mut MultiplexedConnection, streams: &Streams, messages: u64) {
    let _: () = connection
        .xgroup_create_mkstream(&streams.input, GROUP, "0")
        .await
        .expect("XGROUP CREATE");
    let mut next = 0;
    while next < messages {
        let end = (next + PRELOAD_CHUNK).min(messages);
        let mut pipe = redis::pipe();
        for id in next..end {
            pipe.xadd(
                &streams.input,
                "*",
                &[
                    ("payload", Order::encoded(id)),
                    ("content-type", b"application/json".to_vec()),
                ],
            )
            .ignore();
        }
        let _: () = pipe.query_async(connection).await.expect("preload");
        next = end;
    }
}

async fn delete(connection: &mut MultiplexedConnection, streams: &Streams) {
    let _: () = connection
        .del(&[&streams.input, &streams.output])
        .await
        .expect("DEL");
}

/// Raw redis-rs, as its stream examples read a group: `XREADGROUP COUNT
/// PREFETCH BLOCK`, then the outputs of the batch in one pipeline of
/// `XADD`s, then one `XACK` of the batch. Returns messages per second.
pub async fn raw_throughput(messages: u64) -> f64 {
    let streams = Streams::fresh("raw");
    let mut admin = connect().await;
    preload(&mut admin, &streams, messages).await;

    let started = Instant::now();
    // Reads block, so they have a connection of their own, as in the binder.
    let mut reading = connect().await;
    let mut writing = connect().await;
    let options = StreamReadOptions::default()
        .group(GROUP, "raw")
        .count(PREFETCH)
        .block(1_000);
    let mut done = 0u64;
    while done < messages {
        let reply: StreamReadReply = reading
            .xread_options(&[&streams.input], &[">"], &options)
            .await
            .expect("XREADGROUP");
        let entries: Vec<_> = reply.keys.into_iter().flat_map(|key| key.ids).collect();
        if entries.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload: Vec<u8> = entry.get("payload").expect("a payload field");
            pipe.xadd(
                &streams.output,
                "*",
                &[
                    ("payload", Order::process_bytes(&payload)),
                    ("content-type", b"application/json".to_vec()),
                ],
            )
            .ignore();
            ids.push(entry.id);
        }
        let _: () = pipe.query_async(&mut writing).await.expect("XADD");
        let _: u64 = writing
            .xack(&streams.input, GROUP, &ids)
            .await
            .expect("XACK");
        done += ids.len() as u64;
    }
    let elapsed = started.elapsed();
    delete(&mut admin, &streams).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// A bindery app over the Redis binder doing the same; returns messages
/// per second.
pub async fn bindery_throughput(messages: u64) -> f64 {
    let streams = Streams::fresh("bindery");
    let mut admin = connect().await;
    preload(&mut admin, &streams, messages).await;
    let elapsed = drain(&streams, messages).await;
    delete(&mut admin, &streams).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// The app's configuration: the input in the preloaded group, the output
/// to another stream.
fn config(streams: &Streams) -> String {
    let url = url();
    let (input, output) = (&streams.input, &streams.output);
    format!(
        r#"
        [bindery]
        definition = "process"
        default-binder = "cache"
        [binders.cache]
        type = "redis"
        url = "{url}"
        [bindings.process-in-0]
        destination = "{input}"
        group = "{GROUP}"
        content-type = "application/json"
        [bindings.process-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.process-out-0]
        destination = "{output}"
        content-type = "application/json"
        "#
    )
}

/// Runs a bindery app until it has acknowledged `messages` inputs; returns
/// the time from start to the last acknowledgement (shutdown not included).
async fn drain(streams: &Streams, messages: u64) -> Duration {
    let app = App::builder()
        .without_registered_functions()
        .function("process", crate::order::process)
        .env(Vec::<(String, String)>::new())
        .config_toml(&config(streams))
        .build()
        .expect("benchmark configuration");
    let started = Instant::now();
    let running = app.start().await.expect("start");
    crate::drain::wait_for_acks(&running, INPUT_BINDING, messages).await;
    let elapsed = started.elapsed();
    running.shutdown().await.expect("shutdown");
    elapsed
}
