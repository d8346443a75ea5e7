//! The binder's error type and its conversion into [`BinderError`].

use bindery_core::error::{BinderError, BinderErrorKind};

/// What can go wrong in the MQTT binder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// The `url` setting cannot be used (the text never includes the password).
    #[error("invalid MQTT url `{url}`: {reason}")]
    InvalidUrl {
        /// The url with its password masked.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A routing-key pattern has no MQTT topic filter (`#` must be last).
    #[error(
        "binding `{binding}`: routing-key pattern `{pattern}` has no MQTT equivalent: {reason}"
    )]
    Pattern {
        /// The binding.
        binding: String,
        /// The pattern.
        pattern: String,
        /// Why not.
        reason: &'static str,
    },
    /// A destination or group name that MQTT topics cannot carry.
    #[error("binding `{binding}`: {what} `{name}` cannot be used in an MQTT topic: {reason}")]
    Name {
        /// The binding.
        binding: String,
        /// `destination` or `group`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// The broker could not be reached, or the connection was lost.
    #[error("{what}: the connection to the MQTT broker at {broker} failed")]
    Connection {
        /// What was being done (`subscribing to orders/#`).
        what: String,
        /// `host:port`.
        broker: String,
        /// The client's error.
        #[source]
        source: rumqttc::v5::ConnectionError,
    },
    /// The broker did not answer in time.
    #[error("{what}: no answer from the MQTT broker within {waited:?}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },
    /// The broker refused a subscription (a SUBACK failure reason).
    #[error("subscribing to `{filter}`: the broker refused it ({reason})")]
    SubscribeRefused {
        /// The topic filter.
        filter: String,
        /// The SUBACK reason code, as the client names it.
        reason: String,
    },
    /// The broker refused a publish (a PUBACK failure reason).
    #[error("publishing to `{topic}`: the broker refused the message ({reason})")]
    PublishRefused {
        /// The topic.
        topic: String,
        /// The PUBACK reason code, as the client names it.
        reason: String,
    },
    /// The client's request queue is gone (the binder shut down).
    #[error("{what}: the MQTT client is closed")]
    Closed {
        /// What was being done.
        what: String,
    },
    /// The session the delivery came from was lost: it can no longer be
    /// settled, and the broker delivers the message again.
    #[error("delivery {id}: the connection it came on is gone; the broker delivers it again")]
    StaleDelivery {
        /// The delivery's identity.
        id: String,
    },
}

impl MqttError {
    /// Whether trying again later may succeed without any change.
    pub fn is_transient(&self) -> bool {
        self.kind() != BinderErrorKind::InvalidOptions
            && self.kind() != BinderErrorKind::Rejected
            && self.kind() != BinderErrorKind::Provisioning
    }

    fn kind(&self) -> BinderErrorKind {
        match self {
            Self::InvalidUrl { .. } | Self::Pattern { .. } | Self::Name { .. } => {
                BinderErrorKind::InvalidOptions
            }
            Self::Connection { .. } => BinderErrorKind::Connection,
            Self::Timeout { .. } => BinderErrorKind::Timeout,
            Self::SubscribeRefused { .. } => BinderErrorKind::Provisioning,
            Self::PublishRefused { .. } => BinderErrorKind::Rejected,
            Self::Closed { .. } | Self::StaleDelivery { .. } => BinderErrorKind::Closed,
        }
    }
}

impl From<MqttError> for BinderError {
    fn from(error: MqttError) -> Self {
        let kind = error.kind();
        // The message says what failed; the client's error stays the source.
        let message = error.to_string();
        match error {
            MqttError::Connection { source, .. } => {
                BinderError::new(kind, message).with_source(source)
            }
            _ => BinderError::new(kind, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_what_the_runtime_retries() {
        let refused: BinderError = MqttError::PublishRefused {
            topic: "orders".into(),
            reason: "NotAuthorized".into(),
        }
        .into();
        assert_eq!(refused.kind(), BinderErrorKind::Rejected);
        assert!(!refused.is_transient());
        let timeout: BinderError = MqttError::Timeout {
            what: "connecting".into(),
            waited: std::time::Duration::from_secs(1),
        }
        .into();
        assert!(timeout.is_transient());
        let stale = MqttError::StaleDelivery { id: "q#1".into() };
        assert!(stale.is_transient());
        assert_eq!(BinderError::from(stale).kind(), BinderErrorKind::Closed);
    }
}
