//! The JSON payload every JSON scenario moves, and the transformation each
//! processor applies to it: decode, change a field, encode.

use serde::{Deserialize, Serialize};

/// A ~100-byte JSON order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    id: u64,
    customer: String,
    sku: String,
    qty: u32,
    price_cents: u64,
}

impl Order {
    /// Order number `id`.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            customer: "customer-000042".to_owned(),
            sku: "sku-apple-granny-smith".to_owned(),
            qty: 3,
            price_cents: 1_250,
        }
    }

    /// Order `id` encoded, as producers preload it.
    pub fn encoded(id: u64) -> Vec<u8> {
        serde_json::to_vec(&Self::new(id)).expect("an order encodes")
    }

    /// What every processor does to an order.
    pub fn process(mut self) -> Self {
        self.qty += 1;
        self
    }

    /// The raw clients' processing step: decode, [`process`](Self::process),
    /// encode, as bindery's codec does around the function.
    pub fn process_bytes(bytes: &[u8]) -> Vec<u8> {
        let order: Self = serde_json::from_slice(bytes).expect("an order decodes");
        serde_json::to_vec(&order.process()).expect("an order encodes")
    }
}

/// The bindery processor of every JSON throughput scenario.
pub async fn process(order: Order) -> Order {
    order.process()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_about_100_bytes_and_processing_changes_it() {
        let bytes = Order::encoded(7);
        assert!((90..=120).contains(&bytes.len()), "{}", bytes.len());
        let processed = Order::process_bytes(&bytes);
        let order: Order = serde_json::from_slice(&processed).unwrap();
        assert_eq!((order.id, order.qty), (7, 4));
    }
}
