//! The raw redis-rs processor, written as redis-rs's streams example reads
//! a group: `XREADGROUP` with a `COUNT`, process the batch, then one
//! `XACK` of the batch's IDs.

use bindery::redis::entry::PAYLOAD;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};

use super::PREFETCH;
use super::broker::GROUP;

/// The raw side's Redis consumer name in the group.
const CONSUMER: &str = "raw";

/// How long one read blocks when the stream has nothing new.
const BLOCK_MS: usize = 1_000;

/// Reads `input` in [`GROUP`] at most [`PREFETCH`] entries at a time,
/// appends each processed payload to `output` (the batch's `XADD`s in one
/// pipeline) and acknowledges the batch once every `XADD` returned.
#[derive(Debug)]
pub struct RawProcessor {
    /// Blocking reads have a connection of their own, as in the binder.
    reading: MultiplexedConnection,
    writing: MultiplexedConnection,
    input: String,
    output: String,
}

impl RawProcessor {
    /// Connects the reading and the writing connection.
    pub async fn open(input: &str, output: &str) -> Self {
        Self {
            reading: super::broker::connect().await,
            writing: super::broker::connect().await,
            input: input.to_owned(),
            output: output.to_owned(),
        }
    }

    /// Processes until `limit` inputs are acknowledged.
    pub async fn run(mut self, process: fn(&[u8]) -> Vec<u8>, limit: u64) {
        let options = StreamReadOptions::default()
            .group(GROUP, CONSUMER)
            .count(PREFETCH)
            .block(BLOCK_MS);
        let mut done = 0u64;
        while done < limit {
            let reply: StreamReadReply = self
                .reading
                .xread_options(&[&self.input], &[">"], &options)
                .await
                .expect("XREADGROUP");
            let mut pipe = redis::pipe();
            let mut ids = Vec::with_capacity(PREFETCH);
            for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
                let payload: Vec<u8> = entry.get(PAYLOAD).expect("a payload field");
                pipe.xadd(&self.output, "*", &super::broker::entry(&process(&payload)))
                    .ignore();
                ids.push(entry.id);
            }
            if ids.is_empty() {
                continue;
            }
            let () = pipe
                .query_async(&mut self.writing)
                .await
                .expect("XADD of the outputs");
            let acked: u64 = self
                .writing
                .xack(&self.input, GROUP, &ids)
                .await
                .expect("XACK");
            assert_eq!(acked, ids.len() as u64, "entries acknowledged twice");
            done += acked;
        }
    }
}
