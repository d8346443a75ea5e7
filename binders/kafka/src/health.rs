//! Connection health of a binder, gathered from librdkafka's callbacks.
//!
//! librdkafka reconnects on its own and never says "connected again", so
//! each client reports what it last knew: down on an "all brokers down"
//! error or a failed operation, up when its statistics (requested every
//! second) show a broker connection in state `UP`, or when a message or a
//! delivery report came through. The binder is down while any client is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bindery_core::binder::Health;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;
use tracing::{debug, error, info, warn};

/// What every client of one binder reported.
#[derive(Debug, Default)]
pub(crate) struct HealthBoard {
    /// Client id → why it is down; up clients are absent.
    down: Mutex<HashMap<u64, String>>,
    next_id: AtomicU64,
}

impl HealthBoard {
    /// The binder's health: down while any client is.
    pub(crate) fn health(&self) -> Health {
        let down = self.down.lock();
        match down.values().next() {
            None => Health::Up,
            Some(reason) => Health::Down(reason.clone()),
        }
    }

    /// A new reporter for one client (or one kind of operation).
    pub(crate) fn reporter(self: &Arc<Self>, client: impl Into<String>) -> Reporter {
        Reporter {
            board: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client: client.into(),
            is_down: AtomicBool::new(false),
        }
    }
}

/// One client's line on the [`HealthBoard`]; removed when dropped.
#[derive(Debug)]
pub(crate) struct Reporter {
    board: Arc<HealthBoard>,
    id: u64,
    client: String,
    /// Mirrors the board so the per-message `up` is one atomic load.
    is_down: AtomicBool,
}

impl Reporter {
    /// The client lost the brokers (or an operation failed).
    pub(crate) fn down(&self, reason: impl std::fmt::Display) {
        let reason = format!("Kafka {}: {reason}", self.client);
        if !self.is_down.swap(true, Ordering::AcqRel) {
            warn!("{reason}");
        }
        self.board.down.lock().insert(self.id, reason);
    }

    /// The client talks to a broker.
    pub(crate) fn up(&self) {
        if self.is_down.load(Ordering::Acquire) && self.is_down.swap(false, Ordering::AcqRel) {
            info!("Kafka {}: connected", self.client);
            self.board.down.lock().remove(&self.id);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.board.down.lock().remove(&self.id);
    }
}

/// The part of librdkafka's statistics health needs.
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: HashMap<String, BrokerStatistics>,
}

#[derive(Deserialize)]
struct BrokerStatistics {
    state: String,
}

/// The context of every client: health, and librdkafka's log in `tracing`.
#[derive(Debug)]
pub(crate) struct ClientCtx {
    pub(crate) reporter: Arc<Reporter>,
}

impl ClientContext for ClientCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let client = &self.reporter.client;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                error!(target: "librdkafka", "{client}: {fac}: {log_message}");
            }
            // Connection failures are logged at "error" on every retry;
            // they are expected while a broker is away.
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", "{client}: {fac}: {log_message}");
            }
            RDKafkaLogLevel::Notice => {
                info!(target: "librdkafka", "{client}: {fac}: {log_message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", "{client}: {fac}: {log_message}");
            }
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        match serde_json::from_slice::<Statistics>(statistics) {
            Ok(statistics) if statistics.brokers.values().any(|b| b.state == "UP") => {
                self.reporter.up()
            }
            Ok(_) => self.reporter.down("no connection to any broker"),
            Err(e) => debug!("unreadable librdkafka statistics: {e}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.reporter.down(reason),
            // Single disconnects come and go; statistics settle the state.
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => {
                debug!("Kafka {}: {error}: {reason}", self.reporter.client);
            }
            _ => warn!("Kafka {}: {error}: {reason}", self.reporter.client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_while_any_client_is_down() {
        let board = Arc::new(HealthBoard::default());
        let producer = board.reporter("producer");
        let consumer = board.reporter("consumer");
        assert!(board.health().is_up());
        producer.down("all brokers down");
        consumer.down("no connection to any broker");
        producer.up();
        assert_eq!(
            board.health(),
            Health::Down("Kafka consumer: no connection to any broker".into())
        );
        drop(consumer);
        assert!(board.health().is_up(), "a dropped client no longer counts");
    }

    #[test]
    fn statistics_decide_up_or_down() {
        let board = Arc::new(HealthBoard::default());
        let context = ClientCtx {
            reporter: Arc::new(board.reporter("producer")),
        };
        context.stats_raw(br#"{"brokers":{"a:9092/bootstrap":{"state":"DOWN"}}}"#);
        assert!(!board.health().is_up());
        context.stats_raw(
            br#"{"brokers":{"a:9092/bootstrap":{"state":"INIT"},"a:9092/1":{"state":"UP"}}}"#,
        );
        assert!(board.health().is_up());
    }
}
