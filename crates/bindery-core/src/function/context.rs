//! What functions share: application state and the dynamic sender.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::codec::{Codec, EncodeError};
use crate::error::BinderError;
use crate::message::Message;

/// Shared, read-only context of one application: state values by type and
/// the dynamic sender.
#[derive(Default)]
pub struct Context {
    state: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    sender: Option<Sender>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a state value, replacing one of the same type.
    pub fn insert_state<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.state.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The state value of type `T`.
    pub fn state<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.state
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref())
    }

    /// Sets the dynamic sender.
    pub fn set_sender(&mut self, sender: Sender) {
        self.sender = Some(sender);
    }

    /// The dynamic sender, once the runtime has started.
    pub fn sender(&self) -> Option<&Sender> {
        self.sender.as_ref()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("state_values", &self.state.len())
            .field("sender", &self.sender.is_some())
            .finish()
    }
}

/// Sends to a destination named at run time (Spring's `StreamBridge`).
///
/// The name is looked up among the configured bindings first (so
/// `[bindings.audit-log]` can set its destination, binder and content
/// type), else used as a destination on the default binder. Sends complete
/// when the broker has the message.
#[derive(Clone)]
pub struct Sender {
    backend: Arc<dyn SenderBackend>,
}

/// The runtime's side of a [`Sender`].
#[async_trait]
pub trait SenderBackend: Send + Sync + 'static {
    /// The codec of binding or destination `name`.
    fn codec(&self, name: &str) -> Codec;

    /// Sends `message` to `name` and waits for the broker's confirmation.
    async fn send(&self, name: &str, message: Message) -> Result<(), SendError>;
}

impl Sender {
    /// A sender over `backend`.
    pub fn new(backend: Arc<dyn SenderBackend>) -> Self {
        Self { backend }
    }

    /// Encodes `payload` for `name` and sends it.
    pub async fn send<T: Serialize + Send + 'static>(
        &self,
        name: &str,
        payload: T,
    ) -> Result<(), SendError> {
        self.send_message(name, Message::new(payload)).await
    }

    /// Encodes the payload of `message` for `name` and sends it with its
    /// headers, key and routing key.
    pub async fn send_message<T: Serialize + Send + 'static>(
        &self,
        name: &str,
        message: Message<T>,
    ) -> Result<(), SendError> {
        let codec = match message.content_type() {
            Some(ct) => Codec::for_content_type(ct).unwrap_or(self.backend.codec(name)),
            None => self.backend.codec(name),
        };
        let mut encoded = None;
        let message = message.map(|payload| {
            encoded = Some(codec.encode(payload));
        });
        let bytes = match encoded.expect("map ran") {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(()),
            Err(e) => return Err(SendError::Encode(e)),
        };
        self.backend.send(name, message.map(|()| bytes)).await
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender")
    }
}

/// Why a dynamic send failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The payload could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The binder failed or the broker refused the message.
    #[error(transparent)]
    Binder(#[from] BinderError),
    /// The app is shutting down or has not started.
    #[error("the application is not running")]
    NotRunning,
}

/// The name of `T`, for messages about missing state.
pub(crate) fn state_name<T>() -> &'static str {
    type_name::<T>()
}
