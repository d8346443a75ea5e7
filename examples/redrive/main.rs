//! redrive — a bug sends messages to the dead-letter destination; after
//! the fix, redrive brings them back and they are processed.
//!
//! Billing cannot price orders shipped to Norway: a tax rate is missing, so
//! those orders fail and, after their attempts, land in the dead-letter
//! destination. The program then "deploys the fix" and redrives the dead
//! letters back to the billing group, where they now succeed.
//!
//! ```text
//! cargo run --example redrive -- --config examples/redrive/memory.toml
//! cargo run --example redrive -- --config examples/redrive/rabbitmq.toml
//! cargo run --example redrive -- --config examples/redrive/kafka.toml
//! cargo run --example redrive -- --config examples/redrive/redis.toml
//! cargo run --example redrive -- --config examples/redrive/mqtt.toml
//! ```
//!
//! Here the redrive runs in process (`RunningApp::redrive`), which also
//! works on the memory binder. Against a broker, any bindery app does the
//! same from the command line:
//! `my-billing --config prod.toml --redrive bill-in-0 [--limit N]`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bindery::prelude::*;
use parking_lot::Mutex;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    country: String,
    net_cents: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("no tax rate for {0}")]
struct MissingTaxRate(String);

/// The billing service, with its bug switch.
#[derive(Debug, Default)]
struct Billing {
    norway_fixed: AtomicBool,
    invoiced: Mutex<BTreeSet<u64>>,
}

/// Invoices an order.
#[bindery::function]
async fn bill(order: Order, State(billing): State<Arc<Billing>>) -> Result<(), MissingTaxRate> {
    let rate = match order.country.as_str() {
        "SE" => 25,
        "DE" => 19,
        "NO" if billing.norway_fixed.load(Ordering::SeqCst) => 25,
        other => return Err(MissingTaxRate(other.to_owned())),
    };
    let gross = order.net_cents * (100 + rate) / 100;
    println!(
        "invoice for order {}: {}.{:02}",
        order.id,
        gross / 100,
        gross % 100
    );
    billing.invoiced.lock().insert(order.id);
    Ok(())
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let billing = Arc::new(Billing::default());
    let app = App::builder().state(billing.clone()).from_env()?;
    let destination = app
        .wiring()
        .input("bill-in-0")
        .expect("bill-in-0 is configured")
        .consumer
        .destination
        .clone();
    let running = app.start().await?;
    running.ready().await;

    let orders = [(1, "SE"), (2, "NO"), (3, "DE"), (4, "NO"), (5, "SE")];
    for (id, country) in orders {
        let order = Order {
            id,
            country: country.to_owned(),
            net_cents: 10_000 + id * 100,
        };
        running
            .sender()
            .send(&destination, order)
            .await
            .map_err(|e| bindery::Error::Usage(e.to_string()))?;
    }
    until("the orders", || {
        running.stats().binding("bill-in-0").acked == orders.len() as u64
    })
    .await;
    let failed = running.stats().binding("bill-in-0").dead_lettered;
    println!("bug: {failed} orders failed into the dead-letter destination");

    billing.norway_fixed.store(true, Ordering::SeqCst);
    println!("fix deployed: Norway has a tax rate");
    let moved = running.redrive("bill-in-0", None).await?;
    println!("redrive: moved {moved} dead letters back to billing");
    until("the redriven orders", || {
        billing.invoiced.lock().len() == orders.len()
    })
    .await;

    running.shutdown().await?;
    println!(
        "invoiced {} of {} orders",
        billing.invoiced.lock().len(),
        orders.len()
    );
    Ok(())
}
