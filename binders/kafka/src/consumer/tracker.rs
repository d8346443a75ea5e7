//! Which offsets of each partition may be committed.
//!
//! With `concurrency > 1` the runtime settles the deliveries of one
//! partition out of order. Kafka stores one offset per partition, meaning
//! "everything before this is done", so only the contiguous settled prefix
//! of what was handed out may be stored: if offsets 5, 6, 7 were handed out
//! and 6 and 7 are settled, nothing moves until 5 is.
//!
//! Every delivery carries a [`Ticket`] naming the *generation* of its
//! partition's tracking. A revoke, a new assignment or a rewind (nack with
//! requeue) starts a new generation for what follows, so a late
//! settlement from before can never move the offset of what came after.

use std::collections::{BTreeMap, HashMap};

/// Identifies one handed-out record for settling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    generation: u64,
}

/// What settling a ticket did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The committable offset of the partition moved.
    Moved,
    /// Recorded; earlier records of the partition are still unsettled.
    Waiting,
    /// The partition was rewound past this record, which will come again.
    Superseded,
    /// The partition is no longer ours (revoked, or the consumer closed).
    Revoked,
}

#[derive(Debug)]
struct Partition {
    /// Generation of the assignment: older tickets are from before it.
    assigned: u64,
    /// Generation given to records tracked from now on.
    generation: u64,
    /// Records handed out and not yet part of the settled prefix:
    /// offset → (generation, settled).
    pending: BTreeMap<i64, (u64, bool)>,
    /// The next offset to commit: everything below it is settled.
    committable: Option<i64>,
    /// What was last handed to librdkafka's offset store.
    stored: Option<i64>,
}

impl Partition {
    fn new(generation: u64) -> Self {
        Self {
            assigned: generation,
            generation,
            pending: BTreeMap::new(),
            committable: None,
            stored: None,
        }
    }

    /// Pops the settled prefix; whether the committable offset moved.
    fn advance(&mut self) -> bool {
        let mut moved = false;
        while let Some(entry) = self.pending.first_entry() {
            if !entry.get().1 {
                break;
            }
            self.committable = Some(entry.key() + 1);
            entry.remove();
            moved = true;
        }
        moved
    }
}

/// Tracks the records of every assigned partition of one consumer.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
    generations: u64,
}

impl OffsetTracker {
    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    /// Starts tracking `partitions` afresh (a new assignment).
    pub(crate) fn assign(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            let generation = self.next_generation();
            self.partitions
                .insert(partition, Partition::new(generation));
        }
    }

    /// Stops tracking `partitions`; returns the offsets still to commit for
    /// them (their settled prefix). Later settlements of their records are
    /// ignored: the records go to whoever owns the partition next.
    pub(crate) fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>) -> Vec<(i32, i64)> {
        partitions
            .into_iter()
            .filter_map(|p| {
                self.partitions
                    .remove(&p)
                    .and_then(|t| t.committable.map(|c| (p, c)))
            })
            .collect()
    }

    /// Stops tracking every partition (the consumer closes).
    pub(crate) fn revoke_all(&mut self) -> Vec<(i32, i64)> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        self.revoke(partitions)
    }

    /// Records that `offset` of `partition` is handed out.
    pub(crate) fn track(&mut self, partition: i32, offset: i64) -> Ticket {
        let generation = match self.partitions.get(&partition) {
            Some(tracked) => tracked.generation,
            None => {
                // A record of a partition we were not told about (a manual
                // assignment): track it from here.
                let generation = self.next_generation();
                self.partitions
                    .insert(partition, Partition::new(generation));
                generation
            }
        };
        let tracked = self.partitions.get_mut(&partition).expect("inserted above");
        tracked.pending.insert(offset, (generation, false));
        Ticket {
            partition,
            offset,
            generation,
        }
    }

    /// Records a record that is not handed out (filtered by routing key):
    /// it is settled at once.
    pub(crate) fn skip(&mut self, partition: i32, offset: i64) {
        let ticket = self.track(partition, offset);
        self.settle(ticket);
    }

    /// Marks a record settled; stale tickets change nothing.
    pub(crate) fn settle(&mut self, ticket: Ticket) -> Settled {
        let Some(tracked) = self.partitions.get_mut(&ticket.partition) else {
            return Settled::Revoked;
        };
        if ticket.generation < tracked.assigned {
            return Settled::Revoked;
        }
        match tracked.pending.get_mut(&ticket.offset) {
            Some((generation, settled)) if *generation == ticket.generation => *settled = true,
            _ => return Settled::Superseded,
        }
        if tracked.advance() {
            Settled::Moved
        } else {
            Settled::Waiting
        }
    }

    /// Whether [`OffsetTracker::rewind`] would act on the ticket: its record
    /// is ours and neither settled nor rewound already.
    pub(crate) fn is_rewindable(&self, ticket: Ticket) -> bool {
        self.partitions
            .get(&ticket.partition)
            .is_some_and(|t| t.pending.get(&ticket.offset) == Some(&(ticket.generation, false)))
    }

    /// Prepares a rewind of the ticket's partition to its offset: the record
    /// and everything after it will be delivered again, so they are
    /// forgotten and a new generation begins. Returns false, changing
    /// nothing, when the ticket is stale (its record is no longer ours or
    /// was rewound already).
    pub(crate) fn rewind(&mut self, ticket: Ticket) -> bool {
        let generation = self.generations + 1;
        let Some(tracked) = self.partitions.get_mut(&ticket.partition) else {
            return false;
        };
        if tracked.pending.get(&ticket.offset) != Some(&(ticket.generation, false)) {
            return false;
        }
        tracked.pending.split_off(&ticket.offset);
        tracked.generation = generation;
        self.generations = generation;
        true
    }

    /// Offsets that moved since the last call, to hand to the offset store.
    pub(crate) fn take_unstored(&mut self) -> Vec<(i32, i64)> {
        let mut moved = Vec::new();
        for (partition, tracked) in &mut self.partitions {
            if tracked.committable != tracked.stored {
                if let Some(offset) = tracked.committable {
                    moved.push((*partition, offset));
                }
                tracked.stored = tracked.committable;
            }
        }
        moved
    }

    /// The committable offset of every tracked partition.
    #[cfg(test)]
    pub(crate) fn committable(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|(p, t)| t.committable.map(|c| (*p, c)))
            .collect()
    }

    /// Whether `partition` is tracked (assigned to this consumer).
    pub(crate) fn is_tracked(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut offsets: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        offsets.sort_unstable();
        offsets
    }

    #[test]
    fn only_the_contiguous_settled_prefix_is_committable() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0]);
        let tickets: Vec<Ticket> = (5..10).map(|o| tracker.track(0, o)).collect();
        assert_eq!(tracker.settle(tickets[1]), Settled::Waiting);
        assert_eq!(tracker.settle(tickets[2]), Settled::Waiting);
        assert_eq!(tracker.take_unstored(), []);
        assert_eq!(tracker.settle(tickets[0]), Settled::Moved);
        assert_eq!(tracker.take_unstored(), [(0, 8)]);
        assert_eq!(tracker.take_unstored(), [], "stored once");
        assert_eq!(tracker.settle(tickets[4]), Settled::Waiting);
        assert_eq!(tracker.settle(tickets[3]), Settled::Moved);
        assert_eq!(tracker.committable(), [(0, 10)]);
    }

    #[test]
    fn partitions_advance_independently_and_gaps_in_offsets_are_fine() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0, 1]);
        let a = tracker.track(0, 3);
        let b = tracker.track(1, 100);
        let c = tracker.track(0, 7); // offsets 4..6 were compacted away
        tracker.settle(c);
        tracker.settle(b);
        assert_eq!(tracker.take_unstored(), [(1, 101)]);
        tracker.settle(a);
        assert_eq!(tracker.take_unstored(), [(0, 8)]);
    }

    #[test]
    fn skipped_records_settle_at_once_but_wait_for_earlier_ones() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0]);
        let first = tracker.track(0, 0);
        tracker.skip(0, 1);
        assert_eq!(tracker.take_unstored(), []);
        tracker.settle(first);
        assert_eq!(tracker.take_unstored(), [(0, 2)]);
        tracker.skip(0, 2);
        assert_eq!(tracker.take_unstored(), [(0, 3)]);
    }

    #[test]
    fn settlements_after_a_revoke_are_ignored() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0, 1]);
        let settled = tracker.track(0, 0);
        let late = tracker.track(0, 1);
        let other = tracker.track(1, 0);
        tracker.settle(settled);
        assert_eq!(tracker.revoke([0]), [(0, 1)]);
        assert!(!tracker.is_tracked(0));
        assert_eq!(tracker.settle(late), Settled::Revoked);
        // Assigned again: the same offsets are new records.
        tracker.assign([0]);
        let again = tracker.track(0, 1);
        assert_eq!(
            tracker.settle(late),
            Settled::Revoked,
            "a ticket of the old assignment"
        );
        assert_eq!(tracker.settle(again), Settled::Moved);
        tracker.settle(other);
        assert_eq!(sorted(tracker.take_unstored()), [(0, 2), (1, 1)]);
        assert_eq!(sorted(tracker.revoke_all()), [(0, 2), (1, 1)]);
    }

    #[test]
    fn a_rewind_forgets_the_record_and_what_follows() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0]);
        let t: Vec<Ticket> = (0..4).map(|o| tracker.track(0, o)).collect();
        assert!(tracker.rewind(t[1]));
        assert!(!tracker.rewind(t[1]), "already rewound");
        // Records after the rewind point settle nothing any more...
        assert_eq!(tracker.settle(t[2]), Settled::Superseded);
        // ...but those before it still count.
        assert_eq!(tracker.settle(t[0]), Settled::Moved);
        assert_eq!(tracker.take_unstored(), [(0, 1)]);
        // Delivered again in the new generation.
        let again: Vec<Ticket> = (1..4).map(|o| tracker.track(0, o)).collect();
        assert_eq!(
            tracker.settle(t[3]),
            Settled::Superseded,
            "the old delivery of offset 3"
        );
        for ticket in again {
            tracker.settle(ticket);
        }
        assert_eq!(tracker.take_unstored(), [(0, 4)]);
    }

    #[test]
    fn a_stale_ticket_does_not_rewind() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0]);
        let ticket = tracker.track(0, 0);
        tracker.settle(ticket);
        assert!(!tracker.rewind(ticket), "settled already");
        tracker.revoke([0]);
        assert!(!tracker.rewind(ticket), "revoked");
    }
}
