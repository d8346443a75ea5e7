//! Shared helpers of the integration tests and of the binders' broker
//! tests (their crates take this one as a dev-dependency), one module per
//! binder.

#[cfg(all(feature = "rabbitmq", feature = "kafka"))]
pub mod interop;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod process;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
