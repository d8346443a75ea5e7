//! The binder's errors. lapin's errors stay their source; each variant
//! knows whether it is transient, which is what the runtime decides on.

use bindery_core::error::{BinderError, BinderErrorKind};
use lapin::ErrorKind;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// Result alias of this crate.
pub type Result<T, E = RabbitError> = std::result::Result<T, E>;

/// What went wrong talking to RabbitMQ.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// No connection could be made (the URI is shown without password).
    #[error("cannot connect to {uri}: {detail}")]
    Connect {
        /// The redacted URI.
        uri: String,
        /// The client's explanation, with any password masked.
        detail: String,
        /// lapin's error, unmasked: kept for its kind, but not the source
        /// of this error, so that printing the error chain (`{:#}`) can
        /// never show a password the client quoted.
        client: Box<lapin::Error>,
    },
    /// A connection attempt took longer than `connect-timeout`.
    #[error("cannot connect to {uri}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The redacted URI.
        uri: String,
        /// The `connect-timeout` setting.
        timeout: std::time::Duration,
    },
    /// No address of the binder's `addresses` took a connection in one
    /// attempt.
    #[error("cannot connect to any of {} addresses: {}", failures.len(), list_failures(failures))]
    NoAddressAnswers {
        /// Why each address failed, in the order tried (URIs redacted).
        failures: Vec<RabbitError>,
    },
    /// No connection yet, and no attempt to tell why.
    #[error("connection `{connection}` is not established yet")]
    NotConnected {
        /// The connection's name.
        connection: String,
    },
    /// An operation on a channel failed.
    #[error("{action}: {source}")]
    Channel {
        /// What was being done.
        action: String,
        /// lapin's error.
        #[source]
        source: Box<lapin::Error>,
    },
    /// A name is longer than AMQP's limit of 255 bytes.
    #[error("{what} `{name}` is longer than AMQP's limit of 255 bytes")]
    NameTooLong {
        /// Exchange, queue, routing key, header name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The broker returned a `mandatory` message: no queue is bound for it.
    #[error(
        "no queue is bound to exchange `{exchange}` for routing key `{routing_key}` ({code} {text})"
    )]
    Returned {
        /// The exchange it was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
        /// The broker's reply code (312 NO_ROUTE).
        code: u16,
        /// The broker's reply text.
        text: String,
    },
    /// The broker refused the message (a negative publisher confirm).
    #[error("the broker refused the message published to exchange `{exchange}` (basic.nack)")]
    Nacked {
        /// The exchange it was published to.
        exchange: String,
    },
    /// The broker closed the publishing channel because of this message
    /// itself (`PRECONDITION_FAILED`, `ACCESS_REFUSED`: an expiration that
    /// is not a number, a message above `max_message_size`, no write
    /// permission). Publishing it again cannot succeed.
    #[error("the broker refused the message published to exchange `{exchange}`: {code} {text}")]
    Refused {
        /// The exchange it was published to.
        exchange: String,
        /// The broker's reply code (406 or 403).
        code: u16,
        /// The broker's reply text.
        text: String,
    },
    /// The message's content header (its properties and headers) is larger
    /// than one frame of the connection: RabbitMQ would close the whole
    /// connection for it, so it is not published.
    #[error(
        "the headers of a message to exchange `{exchange}` take {size} bytes, above the {limit} bytes one frame holds (frame_max {frame_max})"
    )]
    HeadersTooLarge {
        /// The exchange it was meant for.
        exchange: String,
        /// The content header's encoded size.
        size: usize,
        /// The largest content header the connection takes.
        limit: usize,
        /// The connection's negotiated `frame_max`.
        frame_max: u32,
    },
    /// No confirm came within `confirm-timeout`, across reconnections.
    #[error("no publisher confirm within {timeout:?} for a message to exchange `{exchange}`{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    ConfirmTimeout {
        /// The exchange it was published to.
        exchange: String,
        /// The `confirm-timeout` setting.
        timeout: std::time::Duration,
        /// Why the last attempt failed, if it did.
        last_error: Option<String>,
    },
    /// The delivery's channel is gone, so it cannot be settled; the broker
    /// redelivers it.
    #[error("delivery {id} cannot be settled: its channel is closed; the broker will redeliver it")]
    ChannelGone {
        /// The delivery's identity.
        id: String,
    },
    /// Options of the binding cannot be read.
    #[error("binding `{binding}`: {detail}")]
    Options {
        /// The binding.
        binding: String,
        /// What is wrong.
        detail: String,
    },
}

fn list_failures(failures: &[RabbitError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl RabbitError {
    /// The outcome of one connection attempt over several addresses that
    /// all failed: the single failure itself, or all of them.
    pub(crate) fn from_attempts(mut failures: Vec<RabbitError>) -> Self {
        if failures.len() == 1 {
            failures.remove(0)
        } else {
            Self::NoAddressAnswers { failures }
        }
    }

    /// A failed channel operation.
    pub(crate) fn channel(action: impl Into<String>, source: lapin::Error) -> Self {
        Self::Channel {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// The kind the runtime decides on.
    pub fn kind(&self) -> BinderErrorKind {
        match self {
            Self::Connect { client, .. } if !is_transient(client) => BinderErrorKind::Provisioning,
            Self::Connect { .. } => BinderErrorKind::Connection,
            Self::ConnectTimeout { .. } | Self::ConfirmTimeout { .. } => BinderErrorKind::Timeout,
            Self::NotConnected { .. } => BinderErrorKind::Connection,
            // Transient when any address may answer later.
            Self::NoAddressAnswers { failures } => failures
                .iter()
                .map(Self::kind)
                .find(|kind| {
                    matches!(
                        kind,
                        BinderErrorKind::Connection
                            | BinderErrorKind::Timeout
                            | BinderErrorKind::Closed
                    )
                })
                .unwrap_or(BinderErrorKind::Provisioning),
            Self::ChannelGone { .. } => BinderErrorKind::Closed,
            Self::Channel { source, .. } if is_transient(source) => BinderErrorKind::Connection,
            Self::Channel { .. } => BinderErrorKind::Provisioning,
            Self::NameTooLong { .. } | Self::Options { .. } => BinderErrorKind::InvalidOptions,
            Self::Returned { .. } => BinderErrorKind::Unroutable,
            Self::Nacked { .. } | Self::Refused { .. } | Self::HeadersTooLarge { .. } => {
                BinderErrorKind::Rejected
            }
        }
    }

    /// Whether retrying later may succeed without any change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            BinderErrorKind::Connection | BinderErrorKind::Timeout | BinderErrorKind::Closed
        )
    }
}

impl From<RabbitError> for BinderError {
    fn from(error: RabbitError) -> Self {
        BinderError::new(error.kind(), error.to_string()).with_source(error)
    }
}

/// Whether a lapin error comes from a lost connection or channel (try
/// again on a new one) rather than from what was asked (a queue declared
/// with other arguments, access refused).
pub(crate) fn is_transient(error: &lapin::Error) -> bool {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Hard(hard) => matches!(
                hard,
                AMQPHardError::CONNECTIONFORCED
                    | AMQPHardError::FRAMEERROR
                    | AMQPHardError::UNEXPECTEDFRAME
                    | AMQPHardError::RESOURCEERROR
                    | AMQPHardError::CHANNELERROR
                    | AMQPHardError::INTERNALERROR
            ),
            // An exclusive queue may still belong to the connection that
            // just died; it goes with it.
            AMQPErrorKind::Soft(soft) => matches!(soft, AMQPSoftError::RESOURCELOCKED),
        },
        ErrorKind::ChannelsLimitReached
        | ErrorKind::InvalidProtocolVersion(_)
        | ErrorKind::AuthProviderError(_)
        | ErrorKind::NoDefaultRuntime => false,
        _ => true,
    }
}

/// The reply code and text when a lapin error is the broker closing a
/// channel because of what was sent on it (406 `PRECONDITION_FAILED`,
/// 403 `ACCESS_REFUSED`), as opposed to a lost connection.
pub(crate) fn refusal(error: &lapin::Error) -> Option<(u16, String)> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp)
            if matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(
                    AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::ACCESSREFUSED
                )
            ) =>
        {
            Some((amqp.get_id(), amqp.get_message().to_string()))
        }
        _ => None,
    }
}

/// Whether a lapin error is the broker refusing a declaration because the
/// entity exists with other arguments or type.
pub(crate) fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_error_chain_never_shows_the_password_the_client_quoted() {
        let uri = "amqp://app:hunter2@127.0.0.1:5672/%2f";
        let quoted = lapin::Error::from(std::io::Error::other(format!("cannot reach {uri}")));
        let error = RabbitError::Connect {
            uri: crate::settings::redact_uri(uri),
            detail: crate::settings::scrub(&quoted.to_string(), uri),
            client: Box::new(quoted),
        };
        let binder: BinderError = error.into();
        let chain = format!("{binder:#}");
        assert!(chain.contains("cannot reach"), "{chain}");
        assert!(!chain.contains("hunter2"), "{chain}");
    }

    #[test]
    fn kinds_follow_the_runtime_contract() {
        let returned = RabbitError::Returned {
            exchange: "orders".into(),
            routing_key: "x".into(),
            code: 312,
            text: "NO_ROUTE".into(),
        };
        assert_eq!(returned.kind(), BinderErrorKind::Unroutable);
        assert!(!returned.is_transient());
        let timeout = RabbitError::ConfirmTimeout {
            exchange: "orders".into(),
            timeout: std::time::Duration::from_secs(1),
            last_error: Some("connection reset".into()),
        };
        assert!(timeout.is_transient());
        assert!(timeout.to_string().contains("last error: connection reset"));
        let binder: BinderError = RabbitError::ChannelGone { id: "q#1".into() }.into();
        assert!(binder.is_transient());
        assert!(
            std::error::Error::source(&binder).is_some(),
            "the cause is kept"
        );
    }

    #[test]
    fn a05_refusals_and_oversized_headers_are_rejected_for_good() {
        let refused = RabbitError::Refused {
            exchange: "orders".into(),
            code: 406,
            text: "PRECONDITION_FAILED - invalid expiration".into(),
        };
        assert_eq!(refused.kind(), BinderErrorKind::Rejected);
        assert!(!refused.is_transient());
        let large = RabbitError::HeadersTooLarge {
            exchange: "orders".into(),
            size: 200_000,
            limit: 131_064,
            frame_max: 131_072,
        };
        assert_eq!(large.kind(), BinderErrorKind::Rejected);
        let amqp = |kind| {
            lapin::Error::from(ErrorKind::ProtocolError(lapin::protocol::AMQPError::new(
                kind,
                "PRECONDITION_FAILED - invalid expiration 'soon'".into(),
            )))
        };
        assert_eq!(
            refusal(&amqp(AMQPSoftError::PRECONDITIONFAILED.into())),
            Some((
                406,
                "PRECONDITION_FAILED - invalid expiration 'soon'".into()
            ))
        );
        assert_eq!(refusal(&amqp(AMQPSoftError::NOTFOUND.into())), None);
        let io: lapin::Error = std::io::Error::other("reset").into();
        assert_eq!(refusal(&io), None);
    }

    #[test]
    fn io_errors_are_transient() {
        let io: lapin::Error =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(is_transient(&io));
        assert_eq!(
            RabbitError::channel("publish", io).kind(),
            BinderErrorKind::Connection
        );
    }
}
