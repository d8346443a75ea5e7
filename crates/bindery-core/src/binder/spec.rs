//! What a binding asks of the binder: the consumer and producer specs the
//! runtime builds from validated configuration.
//!
//! Counts that cannot be zero are [`NonZeroUsize`]: a binder reads them as
//! they are, without guarding against a zero that validation refused.

use std::num::NonZeroUsize;

use super::options::BindingOptions;
use crate::routing::RoutingPattern;

/// What a consumer binding asks of the binder.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerSpec {
    /// The binding's name, for logs (`enrich-in-0`).
    pub binding: String,
    /// The destination (exchange, topic, channel).
    pub destination: String,
    /// The consumer group; `None` is an anonymous, non-durable subscription.
    pub group: Option<String>,
    /// At most this many unacknowledged deliveries at once.
    pub prefetch: NonZeroUsize,
    /// How many messages the runtime processes in parallel.
    pub concurrency: NonZeroUsize,
    /// Only messages whose routing key matches one of these are delivered.
    pub routing_keys: Vec<RoutingPattern>,
    /// Whether failed messages go to a dead-letter destination.
    pub dead_letter: bool,
    /// The binder-specific section `[bindings.X.<type>]`, parsed by
    /// validation into the binder type's options.
    pub options: BindingOptions,
}

impl ConsumerSpec {
    /// A spec with defaults: anonymous, prefetch 16, concurrency 1, every
    /// routing key, no dead letters, no binder options.
    pub fn new(binding: impl Into<String>, destination: impl Into<String>) -> Self {
        Self {
            binding: binding.into(),
            destination: destination.into(),
            group: None,
            prefetch: NonZeroUsize::new(16).expect("16 is not zero"),
            concurrency: NonZeroUsize::MIN,
            routing_keys: vec![RoutingPattern::any()],
            dead_letter: false,
            options: BindingOptions::none(),
        }
    }

    /// Sets the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the prefetch bound; 0 counts as 1 (configuration refuses 0
    /// before it gets here).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = at_least_one(prefetch);
        self
    }

    /// Sets the concurrency; 0 counts as 1.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = at_least_one(concurrency);
        self
    }

    /// Sets the routing-key patterns.
    pub fn routing_keys<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.routing_keys = patterns
            .into_iter()
            .map(|p| RoutingPattern::new(p.as_ref()))
            .collect();
        self
    }

    /// Turns dead-lettering on or off.
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// Sets the binder-specific options.
    pub fn options(mut self, options: BindingOptions) -> Self {
        self.options = options;
        self
    }
}

/// What a producer binding asks of the binder.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerSpec {
    /// The binding's name, for logs (`enrich-out-0`).
    pub binding: String,
    /// The destination.
    pub destination: String,
    /// Groups to provision now so that messages sent before their consumers
    /// start are kept.
    pub required_groups: Vec<String>,
    /// The number of partitions the producer expects (on binders with
    /// [`partitions`](super::Capabilities::partitions)).
    pub partition_count: NonZeroUsize,
    /// The binder-specific section `[bindings.X.<type>]`, parsed by
    /// validation into the binder type's options.
    pub options: BindingOptions,
}

impl ProducerSpec {
    /// A spec with defaults: no required groups, one partition.
    pub fn new(binding: impl Into<String>, destination: impl Into<String>) -> Self {
        Self {
            binding: binding.into(),
            destination: destination.into(),
            required_groups: Vec::new(),
            partition_count: NonZeroUsize::MIN,
            options: BindingOptions::none(),
        }
    }

    /// Sets the required groups.
    pub fn required_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the binder-specific options.
    pub fn options(mut self, options: BindingOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the partition count; 0 counts as 1.
    pub fn partition_count(mut self, count: usize) -> Self {
        self.partition_count = at_least_one(count);
        self
    }
}

fn at_least_one(count: usize) -> NonZeroUsize {
    NonZeroUsize::new(count).unwrap_or(NonZeroUsize::MIN)
}
