//! `TestApp`: an app's functions on a private memory binder, driven from
//! the test.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bindery::binder::BinderExt;
use bindery::binder::{Consumer, ConsumerSpec, Producer, ProducerSpec};
use bindery::memory::MemoryBinder;
use bindery::{App, AppBuilder, BinderError, Codec, Handler, Message, RunningApp, Stats};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The group the harness reads output destinations in.
const CAPTURE_GROUP: &str = "bindery-testapp";

/// Why a [`TestApp`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestAppError {
    /// The app failed to build, start or stop.
    #[error(transparent)]
    App(#[from] bindery::Error),
    /// The memory binder refused an operation.
    #[error(transparent)]
    Binder(#[from] BinderError),
    /// Nothing arrived in time.
    #[error("nothing arrived on {0} within {1:?}")]
    Timeout(String, Duration),
    /// A payload could not be encoded or decoded.
    #[error("{0}")]
    Codec(String),
    /// The name is not what the app has.
    #[error("{0}")]
    Unknown(String),
}

/// Builds a [`TestApp`].
#[derive(Debug)]
pub struct TestAppBuilder {
    app: AppBuilder,
    config: String,
    registered: bool,
    timeout: Duration,
}

impl TestAppBuilder {
    /// Registers a function, as [`AppBuilder::function`].
    pub fn function<H: Handler<M>, M: 'static>(mut self, name: &str, handler: H) -> Self {
        self.app = self.app.function(name, handler);
        self
    }

    /// Adds state, as [`AppBuilder::state`].
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.app = self.app.state(value);
        self
    }

    /// The app's configuration (TOML). It must not declare binders: every
    /// binding runs on the harness's memory binder.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_owned();
        self
    }

    /// Also registers the functions of `#[bindery::function]` in this binary.
    pub fn with_registered_functions(mut self) -> Self {
        self.registered = true;
        self
    }

    /// How long `receive` waits (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validates, subscribes to every output destination, starts the app
    /// and waits until every input is bound.
    pub async fn start(self) -> Result<TestApp, TestAppError> {
        let binder = Arc::new(MemoryBinder::isolated());
        let mut builder = self
            .app
            .config_toml(&self.config)
            .env(Vec::<(String, String)>::new())
            .binder("memory", binder.clone());
        if !self.registered {
            builder = builder.without_registered_functions();
        }
        let app: App = builder.build()?;
        let mut captures = HashMap::new();
        let wiring = app.wiring();
        let outputs = wiring
            .functions
            .iter()
            .filter_map(|f| f.output.as_ref())
            .chain(wiring.extra_outputs.iter());
        for output in outputs {
            let destination = output.producer.destination.clone();
            if let std::collections::hash_map::Entry::Vacant(entry) = captures.entry(destination) {
                let consumer = binder.consumer(&capture_spec(entry.key())).await?;
                entry.insert(consumer);
            }
        }
        let running = app.start().await?;
        running.ready().await;
        Ok(TestApp {
            running: Some(running),
            binder,
            captures,
            dead_letters: HashMap::new(),
            producers: HashMap::new(),
            timeout: self.timeout,
        })
    }
}

fn capture_spec(destination: &str) -> ConsumerSpec {
    ConsumerSpec::new("testapp", destination)
        .group(CAPTURE_GROUP)
        .prefetch(10_000)
}

/// A running app on a private memory binder.
pub struct TestApp {
    running: Option<RunningApp>,
    binder: Arc<MemoryBinder>,
    captures: HashMap<String, Box<dyn Consumer>>,
    dead_letters: HashMap<String, Box<dyn Consumer>>,
    producers: HashMap<String, Arc<dyn Producer>>,
    timeout: Duration,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("captured", &self.captures.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TestApp {
    /// A builder.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            app: App::builder(),
            config: String::new(),
            registered: false,
            timeout: Duration::from_secs(5),
        }
    }

    /// The running app (stats, health, sender).
    pub fn app(&self) -> &RunningApp {
        self.running.as_ref().expect("running until shutdown")
    }

    /// The memory binder the app runs on.
    pub fn binder(&self) -> &Arc<MemoryBinder> {
        &self.binder
    }

    /// What flowed through each binding so far.
    pub fn stats(&self) -> Stats {
        self.app().stats()
    }

    /// Waits until input binding `binding` has settled (acknowledged)
    /// `count` messages in all, or the timeout passes.
    pub async fn settled(&self, binding: &str, count: u64) -> Result<(), TestAppError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while self.stats().binding(binding).acked < count {
            if tokio::time::Instant::now() >= deadline {
                return Err(TestAppError::Timeout(
                    format!(
                        "{count} settled messages on `{binding}` (stats: {:?})",
                        self.stats().binding(binding)
                    ),
                    self.timeout,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Sends `payload` to `destination`: strings and bytes as they are,
    /// anything else as JSON.
    pub async fn send<T: Serialize + Send + 'static>(
        &mut self,
        destination: &str,
        payload: T,
    ) -> Result<(), TestAppError> {
        let is_raw = is_raw::<T>();
        let bytes = Codec::Json
            .encode(payload)
            .map_err(|e| TestAppError::Codec(e.to_string()))?
            .unwrap_or_default();
        let mut message = Message::new(bytes);
        if !is_raw {
            message = message.with_content_type("application/json");
        }
        self.send_message(destination, message).await
    }

    /// Sends a message as it is.
    pub async fn send_message(
        &mut self,
        destination: &str,
        message: Message,
    ) -> Result<(), TestAppError> {
        let producer = match self.producers.get(destination) {
            Some(producer) => producer.clone(),
            None => {
                let producer = self
                    .binder
                    .producer(&ProducerSpec::new("testapp", destination))
                    .await?;
                self.producers
                    .insert(destination.to_owned(), producer.clone());
                producer
            }
        };
        producer.send(message).await?.await?;
        Ok(())
    }

    /// The next message the app sent to `destination`, waiting up to the
    /// timeout. Output destinations of the app are captured from the
    /// start; others from the first call.
    pub async fn receive(&mut self, destination: &str) -> Result<Message, TestAppError> {
        if !self.captures.contains_key(destination) {
            let consumer = self.binder.consumer(&capture_spec(destination)).await?;
            self.captures.insert(destination.to_owned(), consumer);
        }
        let consumer = self.captures.get_mut(destination).expect("inserted above");
        next(
            consumer.as_mut(),
            self.timeout,
            &format!("destination `{destination}`"),
        )
        .await
    }

    /// The next message on `destination`, decoded from JSON.
    pub async fn receive_json<T: DeserializeOwned + 'static>(
        &mut self,
        destination: &str,
    ) -> Result<T, TestAppError> {
        let message = self.receive(destination).await?;
        Codec::Json
            .decode(message.payload())
            .map_err(|e| TestAppError::Codec(e.to_string()))
    }

    /// Whether nothing arrives on `destination` within `within`.
    pub async fn nothing_on(&mut self, destination: &str, within: Duration) -> bool {
        let saved = std::mem::replace(&mut self.timeout, within);
        let result = self.receive(destination).await;
        self.timeout = saved;
        matches!(result, Err(TestAppError::Timeout(..)))
    }

    /// The next dead letter of input binding `binding`.
    pub async fn dead_letter(&mut self, binding: &str) -> Result<Message, TestAppError> {
        if !self.dead_letters.contains_key(binding) {
            let input = self.app().wiring().input(binding).ok_or_else(|| {
                TestAppError::Unknown(format!("`{binding}` is not an input binding"))
            })?;
            let consumer = self.binder.dead_letter_consumer(&input.consumer).await?;
            self.dead_letters.insert(binding.to_owned(), consumer);
        }
        let consumer = self.dead_letters.get_mut(binding).expect("inserted above");
        next(
            consumer.as_mut(),
            self.timeout,
            &format!("the dead letters of `{binding}`"),
        )
        .await
    }

    /// Moves dead letters of `binding` back to its group.
    pub async fn redrive(
        &mut self,
        binding: &str,
        limit: Option<usize>,
    ) -> Result<usize, TestAppError> {
        // The harness's own dead-letter reader would compete with redrive.
        self.dead_letters.remove(binding);
        Ok(self.app().redrive(binding, limit).await?)
    }

    /// Shuts the app down gracefully and returns the final counters.
    pub async fn shutdown(mut self) -> Result<Stats, TestAppError> {
        let running = self.running.take().expect("running until shutdown");
        Ok(running.shutdown().await?)
    }
}

async fn next(
    consumer: &mut dyn Consumer,
    timeout: Duration,
    what: &str,
) -> Result<Message, TestAppError> {
    match tokio::time::timeout(timeout, consumer.recv()).await {
        Ok(Some(delivery)) => {
            let (message, acker) = delivery.into_parts();
            acker.ack().await?;
            Ok(message)
        }
        Ok(None) => Err(TestAppError::Unknown(format!("{what} was closed"))),
        Err(_) => Err(TestAppError::Timeout(what.to_owned(), timeout)),
    }
}

fn is_raw<T: 'static>() -> bool {
    use std::any::TypeId;
    [
        TypeId::of::<String>(),
        TypeId::of::<&'static str>(),
        TypeId::of::<Bytes>(),
        TypeId::of::<Vec<u8>>(),
    ]
    .contains(&TypeId::of::<T>())
}
