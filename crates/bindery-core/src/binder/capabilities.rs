//! What a binder can and cannot do, declared so that validation, the
//! runtime and the conformance suite ask the binder instead of its name.

/// Real differences between brokers, declared rather than hidden.
///
/// A binder type declares them before any binder exists
/// ([`BinderProvider::CAPABILITIES`](crate::registry::BinderProvider::CAPABILITIES)),
/// so validation can use them; a binder instance reports the same through
/// [`Binder::capabilities`](super::Binder::capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// A nack with requeue returns just that message to its queue. A
    /// partitioned log cannot: it can only rewind a partition.
    pub requeue_single: bool,
    /// A free consumer takes the next message (fair dispatch with prefetch
    /// 1). On a partitioned log work is split by partition, not by speed.
    pub fair_dispatch: bool,
    /// Redrive can put dead letters back in front of one group only. Where
    /// it cannot, they are republished to the destination and every group
    /// sees them.
    pub group_redrive: bool,
    /// Destinations have partitions that a producer's `partition-count`
    /// sizes and its partition key selects. Validation warns about
    /// `partition-count` on a binder without them.
    pub partitions: bool,
}

impl Capabilities {
    /// Every capability but partitions: a queueing broker.
    pub const fn all() -> Self {
        Self {
            requeue_single: true,
            fair_dispatch: true,
            group_redrive: true,
            partitions: false,
        }
    }

    /// What a partitioned log offers: partitions, and none of the rest.
    pub const fn partitioned_log() -> Self {
        Self {
            requeue_single: false,
            fair_dispatch: false,
            group_redrive: false,
            partitions: true,
        }
    }

    /// These capabilities with [`requeue_single`](Self::requeue_single) set.
    pub const fn with_requeue_single(mut self, on: bool) -> Self {
        self.requeue_single = on;
        self
    }

    /// These capabilities with [`fair_dispatch`](Self::fair_dispatch) set.
    pub const fn with_fair_dispatch(mut self, on: bool) -> Self {
        self.fair_dispatch = on;
        self
    }

    /// These capabilities with [`group_redrive`](Self::group_redrive) set.
    pub const fn with_group_redrive(mut self, on: bool) -> Self {
        self.group_redrive = on;
        self
    }

    /// These capabilities with [`partitions`](Self::partitions) set.
    pub const fn with_partitions(mut self, on: bool) -> Self {
        self.partitions = on;
        self
    }
}
