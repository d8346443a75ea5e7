//! Error types of the core: binder errors, function errors and the
//! framework's top-level [`Error`].

use std::error::Error as StdError;
use std::fmt;

use crate::config::Problems;

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Result alias for the framework's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop an application from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has problems; every one is listed.
    #[error(transparent)]
    Config(#[from] Problems),
    /// A binder failed.
    #[error(transparent)]
    Binder(#[from] BinderError),
    /// Two functions were registered under one name.
    #[error("function `{0}` is registered twice; function names must be unique")]
    DuplicateFunction(String),
    /// The command line could not be read.
    #[error("{0}")]
    Usage(String),
    /// A binding's task stopped unexpectedly (it panicked).
    #[error("binding task failed: {0}")]
    TaskFailed(String),
    /// An input binding stopped receiving for good while the app was
    /// running (its consumer ended); the app stops rather than idle.
    #[error("input binding `{binding}` ended: {reason}")]
    BindingEnded {
        /// The binding's name.
        binding: String,
        /// Why it ended.
        reason: String,
    },
    /// Shutdown did not finish within `shutdown-timeout`.
    #[error("shutdown did not finish within {0:?}; unacknowledged messages will be redelivered")]
    ShutdownTimeout(std::time::Duration),
}

/// What went wrong in a binder, so callers can decide without parsing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BinderErrorKind {
    /// The broker cannot be reached or the connection was lost.
    Connection,
    /// The broker refused the message (negative confirm, delivery failure).
    Rejected,
    /// No queue or subscriber could take the message.
    Unroutable,
    /// The consumer or producer was closed.
    Closed,
    /// A destination, queue or topic could not be declared.
    Provisioning,
    /// Binder or binding options are invalid.
    InvalidOptions,
    /// The broker did not answer in time.
    Timeout,
    /// Anything else.
    Other,
}

impl fmt::Display for BinderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connection => "connection error",
            Self::Rejected => "rejected by the broker",
            Self::Unroutable => "unroutable",
            Self::Closed => "closed",
            Self::Provisioning => "provisioning failed",
            Self::InvalidOptions => "invalid options",
            Self::Timeout => "timed out",
            Self::Other => "binder error",
        })
    }
}

/// An error raised by a binder. The client library's error, if any, is kept
/// as the source so it stays out of this crate's public API.
///
/// One rule for every binder: the message says what failed ("publishing to
/// `orders`"), and the cause goes in the [source](Self::with_source), not
/// into the message. `{}` shows the kind and the message; `{:#}` adds every
/// cause (see [`ErrorChain`]), which is what the runtime logs.
#[derive(Debug)]
pub struct BinderError {
    kind: BinderErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl fmt::Display for BinderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return fmt::Display::fmt(&ErrorChain(self), f);
        }
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl StdError for BinderError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// An error and its causes on one line: `error: cause: cause`. A cause
/// whose text the line already holds is left out, so a client error quoted
/// by its wrapper is not shown twice.
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&line)
    }
}

impl BinderError {
    /// A new error of `kind`.
    pub fn new(kind: BinderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A lost or refused connection.
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(BinderErrorKind::Connection, message)
    }

    /// A closed consumer or producer.
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(BinderErrorKind::Closed, message)
    }

    /// What went wrong.
    pub fn kind(&self) -> BinderErrorKind {
        self.kind
    }

    /// Whether the same operation may succeed later without any change
    /// (the connection comes back, the broker answers).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            BinderErrorKind::Connection | BinderErrorKind::Timeout | BinderErrorKind::Closed
        )
    }
}

/// The error a function returned, with what the retry policy needs to know.
///
/// Any `std::error::Error` converts into it, recording its type name for the
/// `x-exception-fqcn` dead-letter header. Wrap an error with
/// [`FunctionError::non_retryable`] to skip the remaining attempts.
pub struct FunctionError {
    source: BoxError,
    type_name: &'static str,
    retryable: bool,
}

impl FunctionError {
    /// A retryable error.
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Self {
        Self {
            source: Box::new(error),
            type_name: std::any::type_name::<E>(),
            retryable: true,
        }
    }

    /// An error that must not be retried: the message goes straight to the
    /// dead-letter destination (or is dropped when dead-lettering is off).
    pub fn non_retryable<E: StdError + Send + Sync + 'static>(error: E) -> Self {
        Self::new(error).with_retryable(false)
    }

    /// A retryable error from a boxed error whose type is not known.
    pub fn from_boxed(error: BoxError) -> Self {
        Self {
            source: error,
            type_name: "Box<dyn std::error::Error>",
            retryable: true,
        }
    }

    /// A retryable error with just a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            source: message.into().into(),
            type_name: "bindery::FunctionError",
            retryable: true,
        }
    }

    /// Sets whether the error may be retried.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Whether the retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The Rust type name of the original error.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The original error.
    pub fn source_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    /// The error and its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        let first: &(dyn StdError + 'static) = &*self.source;
        std::iter::successors(Some(first), |e: &&(dyn StdError + 'static)| (*e).source())
    }

    /// The chain as text, one cause per line (`caused by: ...`).
    pub fn chain_text(&self) -> String {
        let mut text = String::new();
        for (i, cause) in self.chain().enumerate() {
            if i > 0 {
                text.push_str("\ncaused by: ");
            }
            text.push_str(&cause.to_string());
        }
        text
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for FunctionError {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionError")
            .field("type_name", &self.type_name)
            .field("retryable", &self.retryable)
            .field("error", &self.chain_text())
            .finish()
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset by peer")]
    struct Reset;

    #[derive(Debug, thiserror::Error)]
    #[error("publishing to `orders`: {0}")]
    struct Quoting(#[source] Reset);

    #[test]
    fn the_alternate_form_shows_every_cause_once() {
        let error = BinderError::connection("publishing to `orders`").with_source(Reset);
        assert_eq!(
            error.to_string(),
            "connection error: publishing to `orders`"
        );
        assert_eq!(
            format!("{error:#}"),
            "connection error: publishing to `orders`: connection reset by peer"
        );
        // A wrapper that already quotes its cause does not repeat it.
        let quoting = BinderError::connection("lost").with_source(Quoting(Reset));
        assert_eq!(
            format!("{quoting:#}"),
            "connection error: lost: publishing to `orders`: connection reset by peer"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn records_type_name_and_chain() {
        let error = FunctionError::from(Outer(Inner));
        assert!(error.type_name().ends_with("Outer"));
        assert_eq!(error.chain_text(), "outer\ncaused by: inner");
        assert!(error.is_retryable());
        assert!(!FunctionError::non_retryable(Inner).is_retryable());
    }
}
