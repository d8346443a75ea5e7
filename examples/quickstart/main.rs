//! quickstart — a source emits a handful of orders, a processor prices
//! them, a sink prints them; then the app shuts down by itself.
//!
//! It runs on the in-memory binder with the configuration built in below,
//! so no broker is needed:
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart -- --check                      # print the wiring
//! cargo run --example quickstart -- --config examples/quickstart/rabbitmq.toml
//! cargo run --example quickstart -- --config examples/quickstart/kafka.toml
//! cargo run --example quickstart -- --config examples/quickstart/redis.toml
//! cargo run --example quickstart -- --config examples/quickstart/mqtt.toml
//! ```
//!
//! The code never names a broker: the same program runs on RabbitMQ or
//! Kafka with another configuration file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bindery::prelude::*;
use futures::Stream;
use tokio::sync::Notify;

/// How many orders the source emits.
const ORDERS: u64 = 5;

/// The wiring used when no `--config` is given: `memory.toml`.
const BUILT_IN_CONFIG: &str = include_str!("memory.toml");

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    sku: String,
    qty: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct PricedOrder {
    id: u64,
    sku: String,
    qty: u32,
    total_cents: u64,
}

/// Source: a stream of orders; the source ends with the stream.
#[bindery::function]
async fn orders() -> impl Stream<Item = Order> {
    let skus = ["apple", "pear", "plum", "fig", "kiwi"];
    futures::stream::iter((1..=ORDERS).map(move |id| Order {
        id,
        sku: skus[(id as usize - 1) % skus.len()].to_owned(),
        qty: id as u32,
    }))
}

/// Processor: prices an order.
#[bindery::function]
async fn price(order: Order) -> PricedOrder {
    PricedOrder {
        total_cents: u64::from(order.qty) * 125,
        id: order.id,
        sku: order.sku,
        qty: order.qty,
    }
}

/// Sink: prints an order and counts it.
#[bindery::function]
async fn print(order: PricedOrder, State(progress): State<Arc<Progress>>) {
    println!(
        "order {} : {} x {} = {}.{:02}",
        order.id,
        order.qty,
        order.sku,
        order.total_cents / 100,
        order.total_cents % 100
    );
    progress.record();
}

/// Counts printed orders and wakes `main` when all arrived.
#[derive(Debug, Default)]
struct Progress {
    printed: AtomicU64,
    done: Notify,
}

impl Progress {
    fn record(&self) {
        if self.printed.fetch_add(1, Ordering::SeqCst) + 1 >= ORDERS {
            self.done.notify_one();
        }
    }

    async fn all_printed(&self) {
        self.done.notified().await;
    }
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let progress = Arc::new(Progress::default());
    let app = App::builder()
        .state(progress.clone())
        .default_config(BUILT_IN_CONFIG)
        .from_env()?;
    let waited = Duration::from_secs(60);
    let finished = tokio::time::timeout(waited, progress.all_printed());
    app.run_until(async {
        let _ = finished.await;
    })
    .await?;
    let printed = progress.printed.load(Ordering::SeqCst);
    println!("printed {printed} orders");
    if printed < ORDERS {
        return Err(bindery::Error::Usage(format!(
            "only {printed} of {ORDERS} orders arrived within {waited:?}"
        )));
    }
    Ok(())
}
