//! The core of [bindery](https://docs.rs/bindery): what binder crates and
//! library authors build on. Applications use the `bindery` facade.
//!
//! A short tour:
//!
//! - [`Message`] and [`Headers`]: payload bytes with headers, key and
//!   routing key; [`codec`] turns payloads into values by content type.
//! - [`binder`]: the [`Binder`] contract — consumers that hand out
//!   [`Delivery`]s to acknowledge, producers whose sends are confirmed.
//! - [`function`]: plain async functions as sources, processors and sinks,
//!   with extractors and outcomes in the style of axum.
//! - [`policy`]: retry with back-off, dead letters, redrive.
//! - [`config`]: the configuration model, loading and validation.
//! - [`registry`]: linkme slices where binders and functions register.
//!
//! ```
//! use bindery_core::{Message, routing::RoutingPattern};
//!
//! let message = Message::new(bytes::Bytes::from_static(b"{}")).with_routing_key("item.update");
//! assert!(RoutingPattern::new("item.*").matches(message.routing_key().unwrap()));
//! ```

pub mod binder;
pub mod codec;
pub mod config;
pub mod error;
pub mod function;
pub mod message;
pub mod policy;
pub mod registry;
pub mod routing;
pub mod template;

pub use binder::{
    Acknowledger, Binder, BinderExt, Capabilities, Consumer, ConsumerSpec, Delivery, Producer,
    ProducerSpec,
};
pub use codec::Codec;
pub use error::{BinderError, BinderErrorKind, BoxError, Error, ErrorChain, FunctionError, Result};
pub use message::{DeliveryId, DeliveryInfo, Headers, Message};

/// Re-exports for the code `#[bindery::function]` and binder crates
/// generate; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use linkme;

    pub use crate::registry::{BINDER_FACTORIES, BinderFactory, FUNCTIONS, FunctionEntry};
}
