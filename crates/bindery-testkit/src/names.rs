//! Unique destination and group names, so tests run in parallel and re-run
//! on brokers that keep old data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<prefix>.<process>.<time>.<n>`: unique across processes and runs, and
/// valid as a RabbitMQ exchange or queue name and as a Kafka topic.
pub fn unique_name(prefix: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!(
        "{prefix}.{}.{millis}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
