//! Shared helpers of the integration tests, one module per binder.

mod memory;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "kafka")]
pub mod kafka;

pub use memory::MemoryHarness;
