//! order-pipeline — composition and per-key order under concurrency.
//!
//! Orders keyed by customer flow through `validate|price` (two functions
//! composed in process) with `concurrency = 4`: customers are processed in
//! parallel, while each customer's orders keep their order. The `ledger`
//! sink checks that order and prints a summary. An order with quantity 0 is
//! rejected as not retryable and goes straight to the dead-letter
//! destination. On Kafka the key also chooses the partition.
//!
//! ```text
//! cargo run --example order-pipeline -- --config examples/order-pipeline/memory.toml
//! cargo run --example order-pipeline -- --config examples/order-pipeline/rabbitmq.toml
//! cargo run --example order-pipeline -- --config examples/order-pipeline/kafka.toml
//! cargo run --example order-pipeline -- --config examples/order-pipeline/redis.toml
//! cargo run --example order-pipeline -- --config examples/order-pipeline/mqtt.toml
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bindery::prelude::*;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;

const CUSTOMERS: u64 = 6;
const ORDERS_PER_CUSTOMER: u64 = 20;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    customer: String,
    /// The customer's order number: 1, 2, 3, ...
    seq: u64,
    qty: u32,
    unit_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PricedOrder {
    customer: String,
    seq: u64,
    total_cents: u64,
}

/// An order nobody can fulfil.
#[derive(Debug, thiserror::Error)]
#[error("order {seq} of {customer} has quantity 0")]
struct EmptyOrder {
    customer: String,
    seq: u64,
}

/// Every customer's orders, interleaved; every tenth order is empty.
#[bindery::function]
async fn orders() -> impl Stream<Item = Order> {
    futures::stream::iter((1..=ORDERS_PER_CUSTOMER).flat_map(|seq| {
        (1..=CUSTOMERS).map(move |c| Order {
            customer: format!("customer-{c}"),
            seq,
            qty: if seq % 10 == 0 {
                0
            } else {
                (seq % 4 + 1) as u32
            },
            unit_cents: 250 + c * 10,
        })
    }))
}

/// Rejects empty orders for good: retrying cannot help.
#[bindery::function]
async fn validate(order: Order) -> Result<Order, FunctionError> {
    if order.qty == 0 {
        return Err(FunctionError::non_retryable(EmptyOrder {
            customer: order.customer,
            seq: order.seq,
        }));
    }
    Ok(order)
}

/// Prices an order; takes a varying time so the lanes interleave.
#[bindery::function]
async fn price(order: Order) -> PricedOrder {
    tokio::time::sleep(Duration::from_millis(order.seq % 3)).await;
    PricedOrder {
        total_cents: u64::from(order.qty) * order.unit_cents,
        customer: order.customer,
        seq: order.seq,
    }
}

/// Books priced orders and checks each customer's order is kept.
#[bindery::function]
async fn ledger(order: PricedOrder, State(books): State<Arc<Books>>) {
    books.book(order);
}

#[derive(Debug, Default)]
struct Books {
    last_seq: Mutex<BTreeMap<String, u64>>,
    booked: Mutex<u64>,
    out_of_order: Mutex<u64>,
    done: Notify,
}

impl Books {
    fn book(&self, order: PricedOrder) {
        let mut last_seq = self.last_seq.lock();
        let last = last_seq.entry(order.customer.clone()).or_default();
        if order.seq <= *last {
            *self.out_of_order.lock() += 1;
            tracing::error!(
                "{} order {} came after order {}",
                order.customer,
                order.seq,
                last
            );
        }
        *last = order.seq;
        let mut booked = self.booked.lock();
        *booked += 1;
        if *booked == expected_booked() {
            self.done.notify_one();
        }
    }
}

fn expected_booked() -> u64 {
    let empty_per_customer = ORDERS_PER_CUSTOMER / 10;
    CUSTOMERS * (ORDERS_PER_CUSTOMER - empty_per_customer)
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let books = Arc::new(Books::default());
    let app = App::builder().state(books.clone()).from_env()?;
    app.run_until(books.done.notified()).await?;
    println!(
        "customers: {}, orders booked: {}, rejected: {}, out of order: {}",
        books.last_seq.lock().len(),
        books.booked.lock(),
        CUSTOMERS * ORDERS_PER_CUSTOMER - expected_booked(),
        books.out_of_order.lock()
    );
    Ok(())
}
