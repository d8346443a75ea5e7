//! Where a binder binds: addressing as data, so a binder has one method
//! for consumers and one for producers instead of one per variant.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::spec::{ConsumerSpec, ProducerSpec};
use super::{Binder, Consumer, Producer};
use crate::error::{BinderError, BinderErrorKind};

/// A consumer binding that has a group: what dead letters and redrive are
/// addressed by. Built only through [`GroupBinding::of`], which checks
/// the group, so a binder never checks it again.
#[derive(Clone, Copy, Debug)]
pub struct GroupBinding<'a> {
    spec: &'a ConsumerSpec,
    group: &'a str,
}

impl<'a> GroupBinding<'a> {
    /// The group binding of `spec`; fails when `spec` has no group (an
    /// anonymous subscription has no dead letters and no queue to redrive
    /// into). Validation rejects such configurations before this is called.
    pub fn of(spec: &'a ConsumerSpec) -> Result<Self, BinderError> {
        match spec.group.as_deref() {
            Some(group) => Ok(Self { spec, group }),
            None => Err(BinderError::new(
                BinderErrorKind::InvalidOptions,
                format!(
                    "binding `{}`: dead letters and redrive belong to a group, and it has none",
                    spec.binding
                ),
            )),
        }
    }

    /// The consumer binding.
    pub fn spec(&self) -> &'a ConsumerSpec {
        self.spec
    }

    /// Its group.
    pub fn group(&self) -> &'a str {
        self.group
    }

    /// Its destination.
    pub fn destination(&self) -> &'a str {
        &self.spec.destination
    }
}

/// What a consumer reads.
#[derive(Clone, Copy, Debug)]
pub enum ConsumeFrom<'a> {
    /// A destination, in the spec's group or as an anonymous subscription.
    Destination(&'a ConsumerSpec),
    /// The dead letters of a group (for redrive and for tests).
    DeadLetters(GroupBinding<'a>),
}

/// Where a producer publishes.
#[derive(Clone, Copy, Debug)]
pub enum PublishTo<'a> {
    /// A destination, provisioning its required groups.
    Destination(&'a ProducerSpec),
    /// The dead-letter destination of a group, provisioned first.
    DeadLetters(GroupBinding<'a>),
    /// In front of one group of a destination (redrive). Where the broker
    /// cannot address one group this publishes to the destination, and
    /// [`Capabilities::group_redrive`](super::Capabilities::group_redrive)
    /// is false.
    Group(GroupBinding<'a>),
}

/// Shorthands over [`Binder::bind_consumer`] and [`Binder::bind_producer`]
/// for callers: implemented for every binder, never implemented by one.
pub trait BinderExt: Binder {
    /// Binds a consumer of `spec.destination` ([`ConsumeFrom::Destination`]).
    fn consumer<'a>(
        &'a self,
        spec: &'a ConsumerSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BinderError>> {
        self.bind_consumer(ConsumeFrom::Destination(spec))
    }

    /// Binds a producer to `spec.destination` ([`PublishTo::Destination`]).
    fn producer<'a>(
        &'a self,
        spec: &'a ProducerSpec,
    ) -> BoxFuture<'a, Result<Arc<dyn Producer>, BinderError>> {
        self.bind_producer(PublishTo::Destination(spec))
    }

    /// Binds a consumer of the dead letters of `spec`'s group.
    fn dead_letter_consumer<'a>(
        &'a self,
        spec: &'a ConsumerSpec,
    ) -> impl Future<Output = Result<Box<dyn Consumer>, BinderError>> + Send + 'a {
        async move {
            self.bind_consumer(ConsumeFrom::DeadLetters(GroupBinding::of(spec)?))
                .await
        }
    }

    /// Binds a producer to the dead-letter destination of `spec`'s group.
    fn dead_letter_producer<'a>(
        &'a self,
        spec: &'a ConsumerSpec,
    ) -> impl Future<Output = Result<Arc<dyn Producer>, BinderError>> + Send + 'a {
        async move {
            self.bind_producer(PublishTo::DeadLetters(GroupBinding::of(spec)?))
                .await
        }
    }

    /// Binds a producer that puts messages in front of `spec`'s group.
    fn redrive_producer<'a>(
        &'a self,
        spec: &'a ConsumerSpec,
    ) -> impl Future<Output = Result<Arc<dyn Producer>, BinderError>> + Send + 'a {
        async move {
            self.bind_producer(PublishTo::Group(GroupBinding::of(spec)?))
                .await
        }
    }

    /// The dead-letter destination's name of `spec`'s group, for logs.
    fn dead_letter_destination(&self, spec: &ConsumerSpec) -> Result<String, BinderError> {
        Ok(self.dead_letter_name(GroupBinding::of(spec)?))
    }
}

impl<B: Binder + ?Sized> BinderExt for B {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_binding_needs_a_group() {
        let anonymous = ConsumerSpec::new("audit-in-0", "orders");
        let error = GroupBinding::of(&anonymous).unwrap_err();
        assert_eq!(error.kind(), BinderErrorKind::InvalidOptions);
        assert!(error.to_string().contains("audit-in-0"), "{error}");

        let grouped = ConsumerSpec::new("audit-in-0", "orders").group("audit");
        let binding = GroupBinding::of(&grouped).unwrap();
        assert_eq!(
            (binding.destination(), binding.group()),
            ("orders", "audit")
        );
    }
}
