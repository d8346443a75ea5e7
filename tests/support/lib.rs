//! Shared helpers of the integration tests, one module per binder.

#[cfg(feature = "kafka")]
pub mod kafka;
mod memory;
pub mod process;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

pub use memory::MemoryHarness;
