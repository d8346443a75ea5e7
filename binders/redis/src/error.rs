//! The binder's errors, with their conversion into [`BinderError`].

use bindery_core::error::{BinderError, BinderErrorKind};

/// What can go wrong in the Redis binder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The server could not be reached, or the connection broke or timed
    /// out; the same command may succeed once the connection is back.
    #[error("redis at {server}: {context}: connection lost or refused")]
    Connection {
        /// The server, with any password redacted.
        server: String,
        /// What the binder was doing.
        context: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The server answered with an error (a wrong type at the stream's
    /// key, an unknown command, a refused write): repeating the command
    /// unchanged fails again.
    #[error("redis at {server}: {context}: the server refused the command")]
    Refused {
        /// The server, with any password redacted.
        server: String,
        /// What the binder was doing.
        context: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// `WAIT` returned before `wait-replicas` replicas acknowledged a
    /// publish; the entry is on the primary but not yet replicated.
    #[error(
        "stream `{stream}`: {acknowledged} of {wanted} replicas acknowledged the publish within {timeout_ms} ms"
    )]
    NotReplicated {
        /// The stream.
        stream: String,
        /// Replicas that acknowledged.
        acknowledged: i64,
        /// `wait-replicas`.
        wanted: u32,
        /// `wait-timeout` in milliseconds.
        timeout_ms: u64,
    },
    /// The server's reply did not have the shape of the command's reply.
    #[error("redis at {server}: {context}: unexpected reply: {detail}")]
    Reply {
        /// The server, with any password redacted.
        server: String,
        /// What the binder was doing.
        context: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The binder setting `url` is not a Redis URL.
    #[error("invalid redis url {url}: {detail}")]
    InvalidUrl {
        /// The URL, with any password redacted.
        url: String,
        /// Why it is invalid.
        detail: String,
    },
    /// The producer's background task ended (the producer was dropped).
    #[error("producer of stream `{0}` is closed")]
    ProducerClosed(String),
}

/// The binder's result type.
pub type Result<T, E = RedisError> = std::result::Result<T, E>;

impl RedisError {
    /// Classifies a client error raised while doing `context`.
    pub(crate) fn from_client(
        server: &str,
        context: impl Into<String>,
        source: redis::RedisError,
    ) -> Self {
        let (server, context) = (server.to_owned(), context.into());
        if is_connection_error(&source) {
            Self::Connection {
                server,
                context,
                source,
            }
        } else {
            Self::Refused {
                server,
                context,
                source,
            }
        }
    }

    /// Whether the same operation may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connection { .. } | Self::NotReplicated { .. } | Self::ProducerClosed(_)
        )
    }

    /// Whether this is a lost or refused connection.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connection { .. })
    }
}

/// Whether a client error means the connection, not the command, failed.
pub(crate) fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
        )
}

impl From<RedisError> for BinderError {
    fn from(error: RedisError) -> Self {
        let kind = match &error {
            RedisError::Connection { .. } => BinderErrorKind::Connection,
            RedisError::Refused { .. } => BinderErrorKind::Rejected,
            RedisError::NotReplicated { .. } => BinderErrorKind::Timeout,
            RedisError::Reply { .. } => BinderErrorKind::Other,
            RedisError::InvalidUrl { .. } => BinderErrorKind::InvalidOptions,
            RedisError::ProducerClosed(_) => BinderErrorKind::Closed,
        };
        BinderError::new(kind, error.to_string()).with_source(error)
    }
}

/// `url` with its password (and user name) replaced by `***`, for logs
/// and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if !parsed.username().is_empty() {
                let _ = parsed.set_username("***");
            }
            parsed.to_string()
        }
        // Not parseable: keep only what cannot hold a secret.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("redis://***@{host}"),
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_url() {
        let redacted = redact_url("redis://alice:s3cret@127.0.0.1:6379/0");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(!redacted.contains("alice"), "{redacted}");
        assert!(redacted.contains("127.0.0.1:6379"), "{redacted}");
        let only_password = redact_url("redis://:s3cret@localhost");
        assert!(!only_password.contains("s3cret"), "{only_password}");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert!(!redact_url("not a url:s3cret@host").contains("s3cret"));
    }

    #[test]
    fn kinds_map_to_transient_and_permanent() {
        let not_replicated = RedisError::NotReplicated {
            stream: "orders".into(),
            acknowledged: 0,
            wanted: 1,
            timeout_ms: 100,
        };
        assert!(not_replicated.is_transient());
        let error = BinderError::from(not_replicated);
        assert!(error.is_transient());
        let refused = RedisError::from_client(
            "redis://127.0.0.1:6379",
            "XADD",
            redis::RedisError::from((redis::ErrorKind::Client, "WRONGTYPE")),
        );
        assert!(!refused.is_transient());
        assert_eq!(BinderError::from(refused).kind(), BinderErrorKind::Rejected);
        let invalid = RedisError::InvalidUrl {
            url: "x".into(),
            detail: "y".into(),
        };
        assert_eq!(
            BinderError::from(invalid).kind(),
            BinderErrorKind::InvalidOptions
        );
    }
}
