//! product-sync — routing keys decide who hears what.
//!
//! The item service publishes every change to destination `items` with
//! routing key `item.insert`, `item.update` or `item.delete`. The search
//! indexer (group `search`, binding key `item.#`) keeps an index of all
//! items; the page renderer (group `pages`, binding keys `item.update` and
//! `item.delete`) only re-renders or removes pages. Each prints its final
//! state and whether it agrees with the changes published, then the program
//! exits.
//!
//! ```text
//! cargo run --example product-sync -- --config examples/product-sync/memory.toml
//! cargo run --example product-sync -- --config examples/product-sync/rabbitmq.toml
//! cargo run --example product-sync -- --config examples/product-sync/kafka.toml
//! cargo run --example product-sync -- --config examples/product-sync/redis.toml
//! cargo run --example product-sync -- --config examples/product-sync/mqtt.toml
//! ```
//!
//! RabbitMQ matches the keys natively with queue bindings; Kafka and memory
//! match them in the binder, with the same `*`/`#` rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use bindery::prelude::*;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    version: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Insert,
    Update,
    Delete,
}

/// What the item service does, in order.
const CHANGES: &[(Change, u64, &str, u32)] = &[
    (Change::Insert, 1, "apple", 1),
    (Change::Insert, 2, "pear", 1),
    (Change::Insert, 3, "plum", 1),
    (Change::Update, 2, "pear (ripe)", 2),
    (Change::Delete, 1, "apple", 1),
    (Change::Insert, 4, "fig", 1),
    (Change::Update, 4, "fig (dried)", 2),
    (Change::Update, 3, "plum (sweet)", 2),
    (Change::Delete, 3, "plum (sweet)", 2),
];

fn routing_key(change: Change) -> &'static str {
    match change {
        Change::Insert => "item.insert",
        Change::Update => "item.update",
        Change::Delete => "item.delete",
    }
}

/// The item service: each change with its routing key.
#[bindery::function(name = "item-service")]
async fn item_service() -> impl Stream<Item = Message<Item>> {
    futures::stream::iter(CHANGES.iter().map(|(change, id, name, version)| {
        let item = Item {
            id: *id,
            name: (*name).to_owned(),
            version: *version,
        };
        Message::new(item).with_routing_key(routing_key(*change))
    }))
}

/// The search indexer hears every change.
#[bindery::function(name = "search-indexer")]
async fn search_indexer(
    item: Item,
    RoutingKey(key): RoutingKey,
    State(state): State<Arc<SyncState>>,
) {
    let mut index = state.index.lock();
    match key.as_deref() {
        Some("item.delete") => index.remove(&item.id),
        _ => index.insert(item.id, item),
    };
    drop(index);
    state.heard(&state.indexed);
}

/// The page renderer hears updates and deletes only.
#[bindery::function(name = "page-renderer")]
async fn page_renderer(
    item: Item,
    RoutingKey(key): RoutingKey,
    State(state): State<Arc<SyncState>>,
) {
    let mut pages = state.pages.lock();
    match key.as_deref() {
        Some("item.delete") => pages.remove(&item.id),
        Some("item.update") => pages.insert(item.id, item.version),
        other => panic!("the renderer must not hear {other:?}"),
    };
    drop(pages);
    state.heard(&state.rendered);
}

/// What each service holds, and how many changes each heard.
#[derive(Debug, Default)]
struct SyncState {
    index: Mutex<BTreeMap<u64, Item>>,
    pages: Mutex<BTreeMap<u64, u32>>,
    indexed: Mutex<usize>,
    rendered: Mutex<usize>,
    finished: Notify,
}

impl SyncState {
    fn heard(&self, counter: &Mutex<usize>) {
        *counter.lock() += 1;
        let pages_expected = CHANGES
            .iter()
            .filter(|(c, ..)| *c != Change::Insert)
            .count();
        if *self.indexed.lock() == CHANGES.len() && *self.rendered.lock() == pages_expected {
            self.finished.notify_one();
        }
    }
}

/// The states the changes should produce.
fn expected() -> (BTreeMap<u64, Item>, BTreeMap<u64, u32>) {
    let mut index = BTreeMap::new();
    let mut pages = BTreeMap::new();
    for (change, id, name, version) in CHANGES {
        let item = Item {
            id: *id,
            name: (*name).to_owned(),
            version: *version,
        };
        match change {
            Change::Insert => {
                index.insert(*id, item);
            }
            Change::Update => {
                index.insert(*id, item);
                pages.insert(*id, *version);
            }
            Change::Delete => {
                index.remove(id);
                pages.remove(id);
            }
        }
    }
    (index, pages)
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let state = Arc::new(SyncState::default());
    let app = App::builder().state(state.clone()).from_env()?;
    app.run_until(state.finished.notified()).await?;
    let (expected_index, expected_pages) = expected();
    let index = state.index.lock();
    let pages = state.pages.lock();
    let names: Vec<String> = index
        .values()
        .map(|i| format!("{}:{} v{}", i.id, i.name, i.version))
        .collect();
    println!("search index: {}", names.join(", "));
    println!(
        "pages: {}",
        pages
            .iter()
            .map(|(id, v)| format!("{id} v{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "search index agrees with the changes: {}",
        *index == expected_index
    );
    println!("pages agree with the changes: {}", *pages == expected_pages);
    Ok(())
}
