//! Shared helpers of the integration tests, one module per binder.

#[cfg(all(feature = "rabbitmq", feature = "kafka"))]
pub mod interop;
#[cfg(feature = "kafka")]
pub mod kafka;
mod memory;
pub mod process;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

pub use memory::MemoryHarness;
