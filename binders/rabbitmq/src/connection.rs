//! One AMQP connection, made lazily and made again when lost.
//!
//! lapin 4 can recover connections by itself (`enable_auto_recover`), but
//! it does not make the first connection while the broker is down, it
//! stops after a fixed number of attempts, and it does not re-consume when
//! the broker cancels a consumer (a deleted queue). The binder needs all
//! three, and needs to know which deliveries and confirms died with a
//! channel, so it recovers by itself: whoever finds the connection dead
//! asks the [`Connector`] for a live one, and re-declares what it uses.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bindery_core::binder::Health;
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{RabbitError, Result};
use crate::settings::{RabbitSettings, redact_uri, scrub};

/// How long callers may wait for a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Patience {
    /// One attempt: binding calls this, and the runtime retries with
    /// back-off while the error is transient.
    Once,
    /// Attempts with back-off until the deadline.
    Until(Instant),
    /// Attempts with back-off for as long as it takes (consumers).
    Forever,
}

/// Makes and keeps one connection to the broker.
pub(crate) struct Connector {
    settings: Arc<RabbitSettings>,
    /// Shown by the broker, so operators (and tests) can tell connections
    /// apart: `<prefix> <binder> <role>`.
    name: String,
    /// The current connection. An async mutex: whoever connects holds it
    /// while others wait for the result instead of connecting too.
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    generation: AtomicU64,
    state: Arc<Mutex<State>>,
    /// Shared by every patient caller, so that a broker that is down sees
    /// one attempt (and one log line) per pause, however many consumers
    /// and producers wait for it.
    backoff: Mutex<Backoff>,
    /// Which of the settings' endpoints the next attempt tries first.
    next_endpoint: Arc<AtomicUsize>,
}

#[derive(Clone, Debug)]
enum State {
    /// Never asked for a connection, or closed on purpose.
    Idle,
    /// Connection number `n` is live.
    Up(u64),
    /// The last attempt failed or the connection was lost.
    Down(String),
}

#[derive(Debug)]
struct Backoff {
    /// No patient attempt before this.
    retry_at: Option<Instant>,
    pause: Duration,
    attempt: u32,
    /// Why the last attempt failed.
    last_error: Option<RabbitError>,
}

impl Connector {
    pub(crate) fn new(settings: Arc<RabbitSettings>, name: String) -> Self {
        let pause = settings.reconnect_initial_interval;
        Self {
            settings,
            name,
            current: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            state: Arc::new(Mutex::new(State::Idle)),
            backoff: Mutex::new(Backoff {
                retry_at: None,
                pause,
                attempt: 0,
                last_error: None,
            }),
            next_endpoint: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The name the broker shows for this connection.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Down while a connection that was made or tried is not live.
    pub(crate) fn health(&self) -> Health {
        match &*self.state.lock() {
            State::Idle | State::Up(_) => Health::Up,
            State::Down(reason) => Health::Down(reason.clone()),
        }
    }

    /// The live connection, making one as `patience` allows. `Once` always
    /// tries (binding wants a fresh answer, and the runtime logs it);
    /// patient callers wait out the shared back-off between attempts.
    pub(crate) async fn live(self: &Arc<Self>, patience: Patience) -> Result<Arc<Connection>> {
        loop {
            if !matches!(patience, Patience::Once) {
                let retry_at = self.backoff.lock().retry_at;
                if let Some(at) = retry_at.filter(|at| *at > Instant::now()) {
                    if matches!(patience, Patience::Until(deadline) if at > deadline) {
                        return Err(self.last_error());
                    }
                    tokio::time::sleep_until(at).await;
                }
            }
            let mut current = self.current.lock().await;
            if let Some(connection) = current.as_ref() {
                if connection.status().connected() {
                    return Ok(connection.clone());
                }
            }
            match self.connect().await {
                Ok((connection, endpoint)) => {
                    let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    let was_down = matches!(*self.state.lock(), State::Down(_));
                    *self.state.lock() = State::Up(generation);
                    *self.backoff.lock() = Backoff {
                        retry_at: None,
                        pause: self.settings.reconnect_initial_interval,
                        attempt: 0,
                        last_error: None,
                    };
                    let uri = redact_uri(&self.settings.endpoints()[endpoint]);
                    if was_down || generation > 1 {
                        info!(connection = %self.name, "connected again to {uri}");
                    } else {
                        info!(connection = %self.name, "connected to {uri}");
                    }
                    let connection = Arc::new(connection);
                    self.watch(&connection, generation, endpoint);
                    *current = Some(connection.clone());
                    return Ok(connection);
                }
                Err(error) => {
                    drop(current);
                    *self.state.lock() = State::Down(error.to_string());
                    if matches!(patience, Patience::Once) || !error.is_transient() {
                        return Err(error);
                    }
                    let mut backoff = self.backoff.lock();
                    backoff.attempt += 1;
                    let pause = backoff.pause;
                    warn!(
                        connection = %self.name,
                        "connection attempt {} failed, retrying in {pause:?}: {error}",
                        backoff.attempt
                    );
                    backoff.retry_at = Some(Instant::now() + pause);
                    backoff.pause = (pause * 2).min(self.settings.reconnect_max_interval);
                    backoff.last_error = Some(error);
                }
            }
        }
    }

    /// The last failure, for a caller whose patience ends before the next
    /// attempt.
    fn last_error(&self) -> RabbitError {
        self.backoff
            .lock()
            .last_error
            .clone()
            .unwrap_or_else(|| RabbitError::NotConnected {
                connection: self.name.clone(),
            })
    }

    /// One connection attempt: each endpoint in turn, in order from
    /// [`next_endpoint`](Self::next_endpoint), until one answers. Returns the
    /// connection and the index of its endpoint.
    async fn connect(&self) -> Result<(Connection, usize)> {
        let endpoints = self.settings.endpoints();
        let first = self.next_endpoint.load(Ordering::Acquire);
        let mut failures = Vec::new();
        for index in rotation(first, endpoints.len()) {
            match self.connect_to(&endpoints[index]).await {
                Ok(connection) => {
                    self.next_endpoint.store(index, Ordering::Release);
                    return Ok((connection, index));
                }
                Err(error) => {
                    if endpoints.len() > 1 {
                        debug!(connection = %self.name, "{error}; trying the next address");
                    }
                    failures.push(error);
                }
            }
        }
        Err(RabbitError::from_attempts(failures))
    }

    async fn connect_to(&self, uri: &str) -> Result<Connection> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.name.clone().into())
            .with_client_property("product".into(), "bindery".into())
            .with_client_property("version".into(), env!("CARGO_PKG_VERSION").into());
        let timeout = self.settings.connect_timeout;
        match tokio::time::timeout(timeout, Connection::connect(uri, properties)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(source)) => Err(RabbitError::Connect {
                uri: redact_uri(uri),
                detail: scrub(&source.to_string(), uri),
                client: Box::new(source),
            }),
            Err(_) => Err(RabbitError::ConnectTimeout {
                uri: redact_uri(uri),
                timeout,
            }),
        }
    }

    /// Marks the binder down as soon as the connection fails, and connects
    /// again in the background, so that health is right even while nothing
    /// uses the connection (a producer with nothing to send). lapin reports
    /// channel errors on the same stream; those leave the connection up.
    /// A lost connection sends the next attempt to the endpoint after
    /// `endpoint` first.
    fn watch(self: &Arc<Self>, connection: &Arc<Connection>, generation: u64, endpoint: usize) {
        let mut events = connection.events_listener();
        let connection = Arc::downgrade(connection);
        let connector = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Event::Error(error) = event else {
                    continue;
                };
                let Some(connection) = connection.upgrade() else {
                    return;
                };
                if connection.status().connected() {
                    continue;
                }
                drop(connection);
                {
                    let Some(connector) = connector.upgrade() else {
                        return;
                    };
                    let mut state = connector.state.lock();
                    // A newer connection, or a close on purpose, wins.
                    if !matches!(*state, State::Up(n) if n == generation) {
                        return;
                    }
                    let endpoints = connector.settings.endpoints();
                    warn!(
                        connection = %connector.name,
                        "connection to {} lost: {error}",
                        redact_uri(&endpoints[endpoint])
                    );
                    *state = State::Down(format!("connection lost: {error}"));
                    connector
                        .next_endpoint
                        .store((endpoint + 1) % endpoints.len(), Ordering::Release);
                }
                reconnect(connector).await;
                return;
            }
        });
    }

    /// Closes the connection; a later call to [`live`](Self::live) makes
    /// a new one.
    pub(crate) async fn close(&self) {
        let connection = self.current.lock().await.take();
        // Idle first, so the watcher does not report the close as a loss.
        *self.state.lock() = State::Idle;
        if let Some(connection) = connection {
            if connection.status().connected() {
                let closed = tokio::time::timeout(
                    Duration::from_secs(5),
                    connection.close(200, "bindery shutdown".into()),
                )
                .await;
                match closed {
                    Ok(Ok(())) => {}
                    // lapin refuses the close while a channel is still
                    // closing; the connection goes away all the same.
                    Ok(Err(error)) => {
                        debug!(connection = %self.name, "the connection did not close cleanly: {error}")
                    }
                    Err(_) => {
                        warn!(connection = %self.name, "the broker did not answer the close within 5 s")
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .field("uri", &self.settings.redacted_uri())
            .field("state", &*self.state.lock())
            .finish()
    }
}

/// Connects `connector` again after a loss, with the shared back-off,
/// until it is up, closed on purpose, or dropped.
async fn reconnect(connector: Weak<Connector>) {
    loop {
        let Some(connector) = connector.upgrade() else {
            return;
        };
        if !matches!(*connector.state.lock(), State::Down(_)) {
            return;
        }
        let patience = Patience::Until(Instant::now() + connector.settings.reconnect_max_interval);
        match connector.live(patience).await {
            Ok(_) => return,
            // Refused for good (credentials, vhost): the next user of the
            // connection reports it.
            Err(error) if !error.is_transient() => return,
            Err(_) => {}
        }
    }
}

/// The indexes of `len` endpoints in the order one attempt tries them:
/// from `first` to the end, then from the start.
fn rotation(first: usize, len: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |k| (first + k) % len)
}

/// How often [`unless_lost`] looks at the connection.
const LOST_CHECK: Duration = Duration::from_millis(100);

/// Awaits a lapin operation, failing it once `alive` turns false.
///
/// lapin checks a channel's state before it queues frames; if the
/// connection dies between that check and the end of its I/O loop, the
/// operation can stay pending with nothing left to complete it. Looking
/// at `alive` now and then bounds that wait.
pub(crate) async fn unless_lost<T>(
    alive: impl Fn() -> bool,
    operation: impl Future<Output = lapin::Result<T>>,
) -> lapin::Result<T> {
    tokio::pin!(operation);
    loop {
        tokio::select! {
            biased;
            result = &mut operation => return result,
            () = tokio::time::sleep(LOST_CHECK) => {
                if !alive() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the connection or channel was lost during the operation",
                    )
                    .into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn an_attempt_goes_round_the_addresses_from_where_it_starts() {
        assert_eq!(rotation(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rotation(1, 3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(rotation(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(rotation(0, 1).collect::<Vec<_>>(), [0]);
    }

    /// A port that refuses connections: bound, then released.
    fn refusing_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    /// A "broker" that takes connections and closes them at once, telling
    /// `seen` its `name` for each.
    fn closing_listener(name: &'static str, seen: mpsc::Sender<&'static str>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                // Told before the close, so before the client's attempt ends.
                let told = seen.send(name);
                drop(stream);
                if told.is_err() {
                    return;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn a_failed_address_sends_the_attempt_on_to_the_next_one_in_order() {
        let (seen, order) = mpsc::channel();
        let dead = refusing_port();
        let first = closing_listener("first", seen.clone());
        let second = closing_listener("second", seen);
        let uri = |port: u16| format!("amqp://app:hunter2@127.0.0.1:{port}/%2f");
        let settings = RabbitSettings::with_addresses([uri(dead), uri(first), uri(second)]);
        let connector = Arc::new(Connector::new(
            Arc::new(settings),
            "test connection".to_owned(),
        ));

        let error = connector.connect().await.expect_err("nothing answers AMQP");
        let text = error.to_string();
        assert!(
            matches!(&error, RabbitError::NoAddressAnswers { failures } if failures.len() == 3),
            "{error:?}"
        );
        assert!(error.is_transient(), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{dead}")), "{text}");
        assert_eq!(order.try_iter().collect::<Vec<_>>(), ["first", "second"]);

        // After a loss on address 1, the next attempt starts at address 2.
        connector.next_endpoint.store(2, Ordering::Release);
        let error = connector.connect().await.expect_err("nothing answers AMQP");
        let RabbitError::NoAddressAnswers { failures } = &error else {
            panic!("{error:?}");
        };
        let tried: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert!(tried[0].contains(&format!(":{second}/")), "{tried:#?}");
        assert!(tried[1].contains(&format!(":{dead}/")), "{tried:#?}");
        assert!(tried[2].contains(&format!(":{first}/")), "{tried:#?}");
        assert_eq!(order.try_iter().collect::<Vec<_>>(), ["second", "first"]);
    }

    #[tokio::test]
    async fn a_single_uri_fails_with_its_own_error() {
        let dead = refusing_port();
        let settings = RabbitSettings::new(format!("amqp://app:hunter2@127.0.0.1:{dead}/%2f"));
        let connector = Connector::new(Arc::new(settings), "test connection".to_owned());
        let error = connector.connect().await.expect_err("refused");
        assert!(matches!(error, RabbitError::Connect { .. }), "{error:?}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
