//! The function model: plain async functions as sources, processors and
//! sinks, in the manner of axum handlers.
//!
//! A function's arguments are *extractors* ([`FromMessage`]): parts of the
//! message ([`Headers`](crate::Headers), [`Key`], [`RoutingKey`], [`Attempt`], [`State`],
//! [`Sender`]), the payload decoded by content type (any
//! `T: Deserialize`, `String`, `Bytes`), or the whole [`Message<T>`]. Unlike
//! an HTTP body, a message is already in memory, so arguments may come in
//! any order. Its return value converts through [`IntoOutcome`]: a
//! `T: Serialize`, `Option<T>` (`None` filters), `Message<T>`, `()` (a
//! sink), a `Stream` of those, or a `Result` of any of them.
//!
//! [`Message<T>`]: crate::Message

mod compose;
mod context;
mod extract;
mod handler;
mod outcome;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use compose::Composed;
pub use context::{Context, SendError, Sender, SenderBackend};
pub use extract::{
    Attempt, FromMessage, FromMessageParts, Key, MissingState, NoSender, RoutingKey, State,
};
pub use handler::Handler;
pub use outcome::{IntoOutcome, Outcome};

use crate::codec::Codec;
use crate::error::FunctionError;
pub use extract::Input;

/// Marker types that keep the [`FromMessage`], [`IntoOutcome`] and
/// [`Handler`] implementations apart; they never need naming.
pub mod markers {
    pub use super::extract::markers::*;
    pub use super::outcome::markers::*;
}

/// What a function is, from its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// No input (no argument taken from a message): polled, or returns a
    /// stream.
    Source,
    /// One input and one output.
    Processor,
    /// One input, no output.
    Sink,
}

impl FunctionKind {
    /// Whether the function takes messages from an input binding.
    pub fn has_input(self) -> bool {
        !matches!(self, FunctionKind::Source)
    }

    /// Whether the function sends messages to an output binding.
    pub fn has_output(self) -> bool {
        !matches!(self, FunctionKind::Sink)
    }
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionKind::Source => "source",
            FunctionKind::Processor => "processor",
            FunctionKind::Sink => "sink",
        })
    }
}

/// A type-erased function the runtime can invoke.
pub trait Function: Send + Sync + 'static {
    /// Source, processor or sink.
    fn kind(&self) -> FunctionKind;

    /// Invokes the function on `input`, encoding outputs with `output`.
    fn call(
        &self,
        input: &Input<'_>,
        output: Codec,
    ) -> BoxFuture<'static, Result<Outcome, FunctionError>>;
}

impl fmt::Debug for dyn Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function({})", self.kind())
    }
}

/// Registered functions by name.
#[derive(Default)]
pub struct FunctionRegistry {
    functions: BTreeMap<String, Arc<dyn Function>>,
    duplicates: Vec<String>,
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` as `name`. A second function of the same name is
    /// recorded as a duplicate and reported at start-up.
    pub fn add<H, M>(&mut self, name: &str, handler: H)
    where
        H: Handler<M>,
        M: 'static,
    {
        self.add_function(name, Arc::new(handler::HandlerFunction::new(handler)));
    }

    /// Registers an already erased function.
    pub fn add_function(&mut self, name: &str, function: Arc<dyn Function>) {
        if self.functions.insert(name.to_owned(), function).is_some() {
            self.duplicates.push(name.to_owned());
        }
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Function>> {
        self.functions.get(name)
    }

    /// Names and kinds, sorted by name.
    pub fn kinds(&self) -> BTreeMap<String, FunctionKind> {
        self.functions
            .iter()
            .map(|(n, f)| (n.clone(), f.kind()))
            .collect()
    }

    /// Names registered more than once.
    pub fn duplicates(&self) -> &[String] {
        &self.duplicates
    }
}

impl fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.functions.iter().map(|(n, func)| (n, func.kind())))
            .finish()
    }
}
