//! Helpers the Kafka binder's broker tests share: waiting with a deadline,
//! binders on the shared broker, numbered messages, and tallies.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bindery::Message;
use bindery::binder::Producer;
use bindery::kafka::KafkaBinder;
use bindery_tests::kafka::test_settings;
use bytes::Bytes;

/// Waits until `done` holds, checking every 50 ms, failing after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `future` with a deadline.
pub async fn within<T>(timeout: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {timeout:?}"))
}

/// A binder on the shared broker that creates topics with `partitions`.
pub fn binder(name: &str, partitions: usize) -> Arc<KafkaBinder> {
    let mut settings = test_settings();
    settings.partitions = partitions;
    Arc::new(KafkaBinder::new(name, settings))
}

pub fn numbered(i: u64) -> Message {
    Message::new(Bytes::from(i.to_string()))
        .with_content_type("text/plain")
        .with_key(format!("k{}", i % 32))
}

/// Sends every message with all of them in flight, then waits for every
/// confirmation.
pub async fn send_all(producer: &dyn Producer, messages: impl IntoIterator<Item = Message>) {
    let mut confirmations = Vec::new();
    for message in messages {
        confirmations.push(producer.send(message).await.expect("send"));
    }
    for confirmation in confirmations {
        confirmation.await.expect("broker confirmation");
    }
}

/// Losses and duplicates of `count` messages numbered from 0.
pub fn tally(ids: impl IntoIterator<Item = u64>, count: u64) -> (u64, u64) {
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    let losses = (0..count).filter(|id| !seen.contains_key(id)).count() as u64;
    let duplicates = seen.values().map(|n| n - 1).sum();
    (losses, duplicates)
}
