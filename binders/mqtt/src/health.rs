//! The binder's health: down while any of its clients is disconnected.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bindery_core::binder::Health;
use parking_lot::Mutex;

/// The connection state of every client of one binder.
#[derive(Clone, Debug, Default)]
pub(crate) struct HealthBoard {
    down: Arc<Mutex<BTreeMap<u64, String>>>,
    next: Arc<AtomicU64>,
}

impl HealthBoard {
    /// A slot for one client, down until it connects.
    pub(crate) fn slot(&self, what: &str) -> HealthSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.down
            .lock()
            .insert(id, format!("{what}: not connected yet"));
        HealthSlot {
            board: self.clone(),
            id,
        }
    }

    /// Up when no client is down; otherwise the first reason.
    pub(crate) fn health(&self) -> Health {
        match self.down.lock().values().next() {
            None => Health::Up,
            Some(reason) => Health::Down(reason.clone()),
        }
    }
}

/// One client's entry on the [`HealthBoard`]; removed when dropped.
#[derive(Debug)]
pub(crate) struct HealthSlot {
    board: HealthBoard,
    id: u64,
}

impl HealthSlot {
    /// The client is connected.
    pub(crate) fn up(&self) {
        self.board.down.lock().remove(&self.id);
    }

    /// The client is not connected, for `reason`.
    pub(crate) fn down(&self, reason: String) {
        self.board.down.lock().insert(self.id, reason);
    }
}

impl Drop for HealthSlot {
    fn drop(&mut self) {
        self.board.down.lock().remove(&self.id);
    }
}
