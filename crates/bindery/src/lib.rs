//! bindery: message-driven services in Rust, in the style of Spring Cloud
//! Stream.
//!
//! Declare your logic as plain async functions — sources, processors and
//! sinks. A configuration file wires each one to destinations on a broker
//! through a *binder*: RabbitMQ, Kafka, or the in-memory binder. Switching
//! brokers is a change of configuration, never of code. Retry and
//! dead-letter handling are framework policies that behave the same on
//! every binder.
//!
//! # A tour
//!
//! ```no_run
//! use bindery::prelude::*;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: u64, qty: u32 }
//!
//! /// A processor: one input, one output. Its kind follows from its signature.
//! #[bindery::function]
//! async fn double(order: Order) -> Order {
//!     Order { qty: order.qty * 2, ..order }
//! }
//!
//! #[tokio::main]
//! async fn main() -> bindery::Result<()> {
//!     // --config PATH, BINDERY_CONFIG, or ./bindery.toml; --check validates.
//!     bindery::App::from_env()?.run().await
//! }
//! ```
//!
//! with a `bindery.toml` such as
//!
//! ```toml
//! [bindings.double-in-0]
//! destination = "orders"
//! group = "billing"
//!
//! [bindings.double-in-0.consumer]
//! max-attempts = 3
//!
//! [bindings.double-out-0]
//! destination = "doubled"
//! ```
//!
//! - Functions: see [`function`](bindery_core::function) for extractors
//!   (`Headers`, `Key`, `State<T>`, the payload, `Message<T>`) and outputs
//!   (`T`, `Option<T>`, `Message<T>`, `Result`, streams).
//! - Configuration: see [`config`] for every key and the environment
//!   variable mapping.
//! - The runtime: [`App`] reads the configuration, validates it (exit status
//!   2 with every problem listed), binds, runs until SIGINT/SIGTERM, and
//!   shuts down gracefully.
//!
//! # Feature flags
//!
//! - `memory` (default): the in-memory binder.
//! - `mqtt`: the MQTT binder on rumqttc.
//! - `rabbitmq`: the RabbitMQ binder on lapin.
//! - `kafka`: the Kafka binder on rdkafka.

mod app;
mod cli;
mod runtime;
mod telemetry;

pub use app::{App, AppBuilder, RunningApp, ShutdownHandle};
pub use bindery_core::config;
pub use bindery_core::function::{
    Attempt, FromMessage, FromMessageParts, Function, FunctionKind, Handler, Input, IntoOutcome,
    Key, Outcome, RoutingKey, SendError, Sender, State,
};
pub use bindery_core::{
    BinderError, BinderErrorKind, Codec, DeliveryId, DeliveryInfo, Error, FunctionError, Headers,
    Message, Result, binder, codec, error, message, policy, registry, routing,
};
pub use bindery_macros::function;
pub use runtime::stats::{BindingStats, Stats};

/// The in-memory binder.
#[cfg(feature = "memory")]
pub use bindery_memory as memory;

/// The MQTT binder.
#[cfg(feature = "mqtt")]
pub use bindery_mqtt as mqtt;

/// The RabbitMQ binder.
#[cfg(feature = "rabbitmq")]
pub use bindery_rabbitmq as rabbitmq;

/// The Kafka binder.
#[cfg(feature = "kafka")]
pub use bindery_kafka as kafka;

/// The Redis Streams binder.
#[cfg(feature = "redis")]
pub use bindery_redis as redis;

/// What most applications import.
pub mod prelude {
    pub use crate::{
        App, Attempt, FunctionError, Headers, Key, Message, RoutingKey, Sender, State,
    };
    pub use bytes::Bytes;
    pub use serde::{Deserialize, Serialize};
}

#[doc(hidden)]
pub mod __private {
    pub use bindery_core::__private::*;
    pub use bindery_core::function::FunctionRegistry;
}

/// The first-party binder types, each with the feature of this crate that
/// links it: validation names the feature when a configuration asks for a
/// type the program was built without.
pub(crate) const KNOWN_BINDER_TYPES: [(&str, &str); 5] = [
    ("memory", "memory"),
    ("rabbitmq", "rabbitmq"),
    ("kafka", "kafka"),
    ("mqtt", "mqtt"),
    ("redis", "redis"),
];

/// Keeps every enabled binder crate linked, so its registration survives
/// (linkme #31: the linker drops crates nothing references).
pub(crate) fn link_binders() {
    #[cfg(feature = "memory")]
    bindery_memory::link();
    #[cfg(feature = "mqtt")]
    bindery_mqtt::link();
    #[cfg(feature = "rabbitmq")]
    bindery_rabbitmq::link();
    #[cfg(feature = "kafka")]
    bindery_kafka::link();
    #[cfg(feature = "redis")]
    bindery_redis::link();
}
