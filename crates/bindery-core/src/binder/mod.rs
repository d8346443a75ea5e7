//! The binder contract: what a broker integration provides.
//!
//! A binder binds *consumers* that hand out [`Delivery`]s to acknowledge,
//! and *producers* whose sends complete in two steps: [`Producer::send`]
//! returns once the message is handed to the client in order, and the
//! returned [`Confirmation`] completes when the broker has it (a publisher
//! confirm, a delivery report). Splitting the two lets the runtime keep many
//! confirms in flight while preserving publish order.
//!
//! Where to bind is data: a consumer reads a destination or a group's dead
//! letters ([`ConsumeFrom`]); a producer publishes to a destination, to a
//! group's dead letters, or in front of one group ([`PublishTo`]). A binder
//! implements [`Binder::bind_consumer`] and [`Binder::bind_producer`] once
//! each; callers use the shorthands of [`BinderExt`].
//!
//! What every binder needs beyond that — back-off, anonymous names — is in
//! [`kit`].
//!
//! Retry, dead-lettering and concurrency live in the runtime, once for all
//! binders; a binder only names and provisions its dead-letter destination
//! and adds its broker-specific dead-letter headers.

mod address;
mod capabilities;
mod consumer;
pub mod kit;
mod options;
mod producer;
mod spec;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use address::{BinderExt, ConsumeFrom, GroupBinding, PublishTo};
pub use capabilities::Capabilities;
pub use consumer::{Acknowledger, Consumer, Delivery, DeliveryHandle};
pub use options::BindingOptions;
pub use producer::{Confirmation, Producer, Sending};
pub use spec::{ConsumerSpec, ProducerSpec};

use crate::error::BinderError;

/// A broker integration: binds consumers and producers.
#[async_trait]
pub trait Binder: Send + Sync + fmt::Debug + 'static {
    /// The `type` this binder registers, such as `memory`.
    fn binder_type(&self) -> &'static str;

    /// What this binder can do; see [`Capabilities`].
    fn capabilities(&self) -> Capabilities;

    /// Binds a consumer, provisioning what it needs. For
    /// [`ConsumeFrom::Destination`] it reads `spec.destination` in
    /// `spec.group`, or as an anonymous subscription without a group.
    /// Returns once the subscription is in effect: a message sent after this
    /// returns reaches the consumer (or its group).
    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError>;

    /// Binds a producer, provisioning its destination first: the
    /// destination and its `required-groups`, a group's dead-letter
    /// destination, or one group's queue for redrive.
    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError>;

    /// The name of a group's dead-letter destination, following the
    /// broker's Spring Cloud Stream convention. For logs and hints.
    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String;

    /// Whether the binder is connected.
    fn health(&self) -> Health {
        Health::Up
    }

    /// Flushes producers and closes connections. Not final: a binder
    /// shared by several apps may be used again and then reconnects.
    async fn shutdown(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// Connection state reported by a binder.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Connected and working.
    Up,
    /// Not connected; the binder is trying to reconnect.
    Down(String),
}

impl Health {
    /// Whether the binder is up.
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }
}
