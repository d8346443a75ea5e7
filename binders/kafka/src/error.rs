//! The binder's errors. rdkafka's errors stay their `source`; callers see a
//! [`BinderError`] whose kind says whether trying again may help.

use std::time::Duration;

use bindery_core::error::{BinderError, BinderErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the Kafka binder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// librdkafka refused to create a client (usually a bad property).
    #[error("cannot create the Kafka {client}")]
    Client {
        /// `producer`, `consumer` or `admin client`.
        client: &'static str,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// Metadata of a topic could not be read.
    #[error("cannot read the metadata of topic `{topic}`")]
    Metadata {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A topic is missing and the binder may not create it.
    #[error("topic `{topic}` does not exist and `auto-create-topics` is off")]
    MissingTopic {
        /// The topic.
        topic: String,
    },
    /// A topic could not be created.
    #[error("cannot create topic `{topic}`")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The consumer could not subscribe or position itself.
    #[error("cannot consume topic `{topic}`")]
    Consume {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The group did not assign partitions in time.
    #[error("group `{group}` assigned no partitions of topic `{topic}` within {waited:?}")]
    AssignmentTimeout {
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
        /// How long the binder waited.
        waited: Duration,
    },
    /// librdkafka did not take a message.
    #[error("cannot send to topic `{topic}`")]
    Send {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The broker did not confirm a message.
    #[error("topic `{topic}` did not confirm a message")]
    Delivery {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The producer went away before the message was confirmed.
    #[error("the producer of topic `{topic}` closed before the broker confirmed a message")]
    ProducerClosed {
        /// The topic.
        topic: String,
    },
    /// The consumer was shut down.
    #[error("the consumer of topic `{topic}` is closed")]
    ConsumerClosed {
        /// The topic.
        topic: String,
    },
}

impl Error {
    /// What kind of failure this is, for the runtime's decisions.
    pub fn kind(&self) -> BinderErrorKind {
        match self {
            Error::Client { source, .. } => match source {
                KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => {
                    BinderErrorKind::InvalidOptions
                }
                other => kind_of(other),
            },
            Error::Metadata { source, .. } | Error::Consume { source, .. } => kind_of(source),
            Error::MissingTopic { .. } => BinderErrorKind::Provisioning,
            Error::CreateTopic { source, .. } => match kind_of(source) {
                BinderErrorKind::Other | BinderErrorKind::Rejected => BinderErrorKind::Provisioning,
                transient => transient,
            },
            Error::AssignmentTimeout { .. } => BinderErrorKind::Timeout,
            Error::Send { source, .. } | Error::Delivery { source, .. } => match kind_of(source) {
                BinderErrorKind::Other => BinderErrorKind::Rejected,
                kind => kind,
            },
            Error::ProducerClosed { .. } | Error::ConsumerClosed { .. } => BinderErrorKind::Closed,
        }
    }
}

impl Error {
    /// Whether trying again later may succeed ([`BinderError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            BinderErrorKind::Connection | BinderErrorKind::Timeout | BinderErrorKind::Closed
        )
    }
}

impl From<Error> for BinderError {
    fn from(error: Error) -> Self {
        // The cause stays in the source chain, which `{:#}` shows.
        BinderError::new(error.kind(), error.to_string()).with_source(error)
    }
}

/// The kind of an rdkafka error, by its code: lost brokers and timeouts
/// are transient, refusals are not.
pub(crate) fn kind_of(error: &KafkaError) -> BinderErrorKind {
    match error {
        KafkaError::Canceled => BinderErrorKind::Closed,
        // rdkafka reports no code for admin errors, though they carry one.
        KafkaError::AdminOp(code) => kind_of_code(*code),
        other => other
            .rdkafka_error_code()
            .map_or(BinderErrorKind::Other, kind_of_code),
    }
}

fn kind_of_code(code: RDKafkaErrorCode) -> BinderErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue => {
            BinderErrorKind::Timeout
        }
        // A producer being replaced or dropped purges what it still held.
        C::PurgeQueue | C::PurgeInflight => BinderErrorKind::Closed,
        // An idempotent producer in a state it cannot leave: the binder
        // replaces it, so sending again succeeds.
        C::ProducerFenced
        | C::InvalidProducerEpoch
        | C::UnknownProducerId
        | C::OutOfOrderSequenceNumber
        | C::InvalidProducerIdMapping
        | C::Fatal => BinderErrorKind::Closed,
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::NetworkException
        | C::BrokerNotAvailable
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::ReplicaNotAvailable
        | C::CoordinatorLoadInProgress
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::WaitingForCoordinator
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::KafkaStorageError
        | C::QueueFull
        | C::Retry
        | C::RebalanceInProgress
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::UnknownTopic
        | C::BrokerDestroy
        | C::Fail => BinderErrorKind::Connection,
        C::MessageSizeTooLarge
        | C::InvalidMessage
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidRecord
        | C::InvalidTopic
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::PolicyViolation
        | C::BadMessage => BinderErrorKind::Rejected,
        _ => BinderErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_brokers_are_transient_and_refusals_are_not() {
        let lost = Error::Delivery {
            topic: "t".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert!(BinderError::from(lost).is_transient());
        let too_large = Error::Delivery {
            topic: "t".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        };
        let error = BinderError::from(too_large);
        assert_eq!(error.kind(), BinderErrorKind::Rejected);
        assert!(error.to_string().contains("did not confirm"), "{error}");
        let desynchronised = Error::Delivery {
            topic: "t".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::OutOfOrderSequenceNumber),
        };
        assert!(desynchronised.is_transient(), "the producer is replaced");
        let unreachable = Error::CreateTopic {
            topic: "t".into(),
            source: KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut),
        };
        assert!(
            unreachable.is_transient(),
            "a topic not created for want of a broker"
        );
        let config = Error::Client {
            client: "producer",
            source: KafkaError::ClientCreation("bad".into()),
        };
        assert_eq!(config.kind(), BinderErrorKind::InvalidOptions);
    }
}
