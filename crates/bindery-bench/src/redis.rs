//! Redis Streams throughput: a preloaded stream of JSON orders read in a
//! consumer group, processed (decode, change a field, encode), appended to
//! another stream and acknowledged once that `XADD` returned, by a bindery
//! app on the Redis binder and by raw redis-rs with the same prefetch.
//!
//! Each round has its own streams, preloaded (in the binder's entry
//! layout, so either side reads them) before the clock starts and deleted
//! afterwards.

pub mod broker;
pub mod raw;

use std::time::{Duration, Instant};

use crate::order::Order;
use broker::{GROUP, Names};
use raw::RawProcessor;

/// Entries read at once (`COUNT`) and held unacknowledged at most, on both
/// sides.
pub const PREFETCH: usize = 100;

/// The input binding of the bindery app, whose `acked` count ends a run.
const INPUT_BINDING: &str = "process-in-0";

/// Raw redis-rs: `XREADGROUP COUNT 100`, the batch's outputs in one
/// pipeline of `XADD`s, then one `XACK` of the batch. Returns messages per
/// second.
pub async fn raw_throughput(messages: u64) -> f64 {
    let names = Names::fresh("raw");
    let mut admin = broker::connect().await;
    broker::preload(&mut admin, &names.input(), messages).await;

    let started = Instant::now();
    RawProcessor::open(&names.input(), &names.output())
        .await
        .run(Order::process_bytes, messages)
        .await;
    let elapsed = started.elapsed();
    broker::delete(&mut admin, &names).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// A bindery app over the Redis binder doing the same; returns messages
/// per second.
pub async fn bindery_throughput(messages: u64) -> f64 {
    let names = Names::fresh("bindery");
    let mut admin = broker::connect().await;
    broker::preload(&mut admin, &names.input(), messages).await;
    let elapsed = drain(&names, messages).await;
    broker::delete(&mut admin, &names).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// The app's configuration: the input in the preloaded group, the output
/// to another stream.
fn config(names: &Names) -> String {
    let url = broker::url();
    let (input, output) = (names.input(), names.output());
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
/// the time from start to the last acknowledgement (shutdown not
/// included).
async fn drain(names: &Names, messages: u64) -> Duration {
    crate::drain::process_until_acked(&config(names), INPUT_BINDING, messages).await
}
