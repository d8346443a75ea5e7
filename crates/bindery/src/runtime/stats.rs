//! Counters per binding: what flowed where.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Live counters of one binding.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    acked: AtomicU64,
    sent: AtomicU64,
    filtered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    requeued: AtomicU64,
    failed: AtomicU64,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Received,
    Acked,
    Sent,
    Filtered,
    Retried,
    DeadLettered,
    Dropped,
    Requeued,
    Failed,
}

impl Counters {
    pub(crate) fn add(&self, event: Event, n: u64) {
        let counter = match event {
            Event::Received => &self.received,
            Event::Acked => &self.acked,
            Event::Sent => &self.sent,
            Event::Filtered => &self.filtered,
            Event::Retried => &self.retried,
            Event::DeadLettered => &self.dead_lettered,
            Event::Dropped => &self.dropped,
            Event::Requeued => &self.requeued,
            Event::Failed => &self.failed,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn bump(&self, event: Event) {
        self.add(event, 1);
    }

    pub(crate) fn snapshot(&self) -> BindingStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BindingStats {
            received: get(&self.received),
            acked: get(&self.acked),
            sent: get(&self.sent),
            filtered: get(&self.filtered),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            dropped: get(&self.dropped),
            requeued: get(&self.requeued),
            failed: get(&self.failed),
        }
    }
}

/// Counters of every binding of an app.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    bindings: Mutex<BTreeMap<String, Arc<Counters>>>,
}

impl Registry {
    /// The counters of `binding`, created on first use.
    pub(crate) fn binding(&self, binding: &str) -> Arc<Counters> {
        self.bindings
            .lock()
            .entry(binding.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            bindings: self
                .bindings
                .lock()
                .iter()
                .map(|(name, counters)| (name.clone(), counters.snapshot()))
                .collect(),
        }
    }
}

/// What flowed through one binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindingStats {
    /// Messages taken from the broker (inputs).
    pub received: u64,
    /// Messages acknowledged after processing or dead-lettering (inputs).
    pub acked: u64,
    /// Messages sent and confirmed (outputs).
    pub sent: u64,
    /// Invocations that produced no message (`None`, `()`).
    pub filtered: u64,
    /// Attempts after the first.
    pub retried: u64,
    /// Messages sent to the dead-letter destination.
    pub dead_lettered: u64,
    /// Failed messages dropped because dead-lettering is off.
    pub dropped: u64,
    /// Messages handed back to the broker for redelivery.
    pub requeued: u64,
    /// Sends that failed (outputs), or source polls that failed.
    pub failed: u64,
}

/// A snapshot of every binding's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Counters by binding name.
    pub bindings: BTreeMap<String, BindingStats>,
}

impl Stats {
    /// The counters of `binding` (zero if it never moved a message).
    pub fn binding(&self, binding: &str) -> BindingStats {
        self.bindings.get(binding).copied().unwrap_or_default()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, s) in &self.bindings {
            write!(f, "{name}:")?;
            let fields = [
                ("received", s.received),
                ("acked", s.acked),
                ("sent", s.sent),
                ("filtered", s.filtered),
                ("retried", s.retried),
                ("dead-lettered", s.dead_lettered),
                ("dropped", s.dropped),
                ("requeued", s.requeued),
                ("failed", s.failed),
            ];
            for (label, value) in fields.iter().filter(|(_, v)| *v > 0) {
                write!(f, " {label}={value}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
