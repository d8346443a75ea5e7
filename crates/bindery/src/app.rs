//! The application: functions plus configuration, validated, then run.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bindery_core::binder::{Binder, Health};
use bindery_core::config::{self, Catalog, ConfigSource, Format, Problems, Wiring};
use bindery_core::error::{Error, Result};
use bindery_core::function::{Context, FunctionRegistry, Handler, Sender};
use bindery_core::registry::{
    BinderFactory, BinderProvider, binder_factories, registered_functions,
};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::Cli;
use crate::runtime::{Binders, Runtime, redrive, stats::Stats};

/// Collects functions, state, binders and configuration, then validates
/// them into an [`App`].
pub struct AppBuilder {
    functions: FunctionRegistry,
    registered: bool,
    context: Context,
    binders: BTreeMap<String, Arc<dyn Binder>>,
    binder_types: Vec<BinderFactory>,
    config: Option<ConfigSource>,
    default_config: Option<ConfigSource>,
    env: Option<Vec<(String, String)>>,
    args: Option<Vec<String>>,
}

impl AppBuilder {
    fn new() -> Self {
        Self {
            functions: FunctionRegistry::new(),
            registered: true,
            context: Context::new(),
            binders: BTreeMap::new(),
            binder_types: Vec::new(),
            config: None,
            default_config: None,
            env: None,
            args: None,
        }
    }

    /// Registers a function without the macro, as axum registers handlers.
    pub fn function<H, M>(mut self, name: &str, handler: H) -> Self
    where
        H: Handler<M>,
        M: 'static,
    {
        self.functions.add(name, handler);
        self
    }

    /// Leaves out the functions registered with `#[bindery::function]`
    /// (useful in tests, where a binary holds many).
    pub fn without_registered_functions(mut self) -> Self {
        self.registered = false;
        self
    }

    /// Adds state that functions extract with `State<T>`.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.context.insert_state(value);
        self
    }

    /// Uses `binder` as the binder named `name` instead of creating one
    /// from configuration. Configuration may still declare it.
    pub fn binder(mut self, name: &str, binder: Arc<dyn Binder>) -> Self {
        self.binders.insert(name.to_owned(), binder);
        self
    }

    /// Registers binder type `P`, so `[binders.NAME] type = "<P::TYPE>"`
    /// creates binders of it: the registration path without linkme (a
    /// binder crate's `register_binder!` is the other). It takes precedence
    /// over a linked registration of the same type.
    pub fn binder_type<P: BinderProvider>(mut self) -> Self {
        self.binder_types.push(BinderFactory::of::<P>());
        self
    }

    /// Reads configuration from `path` (TOML, or YAML by extension).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(ConfigSource::File(path.into()));
        self
    }

    /// Reads configuration from TOML text.
    pub fn config_toml(mut self, text: &str) -> Self {
        self.config = Some(text_source("configuration", text, Format::Toml));
        self
    }

    /// Reads configuration from YAML text.
    pub fn config_yaml(mut self, text: &str) -> Self {
        self.config = Some(text_source("configuration", text, Format::Yaml));
        self
    }

    /// TOML used when no file is given (`--config`, `BINDERY_CONFIG`,
    /// `./bindery.toml`): an example's built-in wiring.
    pub fn default_config(mut self, text: &str) -> Self {
        self.default_config = Some(text_source("built-in configuration", text, Format::Toml));
        self
    }

    /// Uses `vars` instead of the process environment for overrides and
    /// `${VAR}` substitution.
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Uses `args` (program name first) instead of the process arguments
    /// in [`from_env`](Self::from_env).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Validates and builds the app; configuration problems come back as
    /// [`Error::Config`] with every problem.
    pub fn build(self) -> Result<App> {
        self.build_with(Mode::Run)
    }

    /// The entry point of a bindery program: reads the command line
    /// (`--config`, `--check`, `--redrive`), `BINDERY_CONFIG`, or
    /// `./bindery.toml`, and logging from `RUST_LOG`.
    ///
    /// On configuration problems it prints one line per problem and exits
    /// with status 2; with `--check` it prints the wiring and exits 0.
    pub fn from_env(mut self) -> Result<App> {
        crate::telemetry::init();
        let args = self
            .args
            .take()
            .unwrap_or_else(|| std::env::args().collect());
        let cli = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) if e.use_stderr() => {
                let _ = e.print();
                std::process::exit(2);
            }
            Err(e) => {
                let _ = e.print();
                std::process::exit(0);
            }
        };
        let env = self
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        if let Some(path) = cli.config {
            self.config = Some(ConfigSource::File(path));
        } else if self.config.is_none() {
            if let Some((_, path)) = env.iter().find(|(k, _)| k == "BINDERY_CONFIG") {
                self.config = Some(ConfigSource::File(path.into()));
            } else if std::path::Path::new("bindery.toml").exists() {
                self.config = Some(ConfigSource::File("bindery.toml".into()));
            }
        }
        self.env = Some(env);
        let mode = match cli.redrive {
            Some(binding) => Mode::Redrive {
                binding,
                limit: cli.limit,
            },
            None => Mode::Run,
        };
        let app = match self.build_with(mode) {
            Ok(app) => app,
            Err(Error::Config(problems)) => exit_with_problems(&problems),
            Err(other) => return Err(other),
        };
        for warning in &app.wiring.warnings {
            eprintln!("warning: {warning}");
        }
        if cli.check {
            print!("{}", app.wiring);
            std::process::exit(0);
        }
        Ok(app)
    }

    fn build_with(mut self, mode: Mode) -> Result<App> {
        crate::link_binders();
        if self.registered {
            for entry in registered_functions() {
                (entry.register)(&mut self.functions);
            }
        }
        if let Some(name) = self.functions.duplicates().first() {
            return Err(Error::DuplicateFunction(name.clone()));
        }
        let source = self
            .config
            .or(self.default_config)
            .unwrap_or_else(|| text_source("defaults", "", Format::Toml));
        let env = self.env.unwrap_or_else(|| std::env::vars().collect());
        let (raw, problems) = config::load(&source, &env)?;
        let kinds = self.functions.kinds();
        let provided: BTreeMap<String, &'static str> = self
            .binders
            .iter()
            .map(|(n, b)| (n.clone(), b.binder_type()))
            .collect();
        let factories: Arc<[BinderFactory]> = self
            .binder_types
            .iter()
            .chain(binder_factories())
            .copied()
            .collect();
        let catalog = Catalog {
            functions: &kinds,
            factories: &factories,
            provided_binders: &provided,
            known_types: &crate::KNOWN_BINDER_TYPES,
        };
        let wiring = config::validate(&raw, problems, catalog)?;
        Ok(App {
            wiring: Arc::new(wiring),
            functions: self.functions,
            context: self.context,
            binders: self.binders,
            factories,
            mode,
        })
    }
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("functions", &self.functions)
            .field("binders", &self.binders.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn text_source(name: &str, text: &str, format: Format) -> ConfigSource {
    ConfigSource::Text {
        name: name.to_owned(),
        text: text.to_owned(),
        format,
    }
}

fn exit_with_problems(problems: &Problems) -> ! {
    for problem in problems.iter() {
        eprintln!("error: {problem}");
    }
    std::process::exit(2);
}

#[derive(Debug)]
enum Mode {
    Run,
    Redrive {
        binding: String,
        limit: Option<usize>,
    },
}

/// A validated application, ready to run.
pub struct App {
    wiring: Arc<Wiring>,
    functions: FunctionRegistry,
    context: Context,
    binders: BTreeMap<String, Arc<dyn Binder>>,
    factories: Arc<[BinderFactory]>,
    mode: Mode,
}

impl App {
    /// A builder.
    pub fn builder() -> AppBuilder {
        AppBuilder::new()
    }

    /// `App::builder().from_env()`: the registered functions, configured
    /// from the command line and environment.
    pub fn from_env() -> Result<App> {
        Self::builder().from_env()
    }

    /// The validated wiring.
    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    /// Starts every binding and returns at once; bindings are made in the
    /// background (see [`RunningApp::ready`]).
    pub async fn start(self) -> Result<RunningApp> {
        for warning in &self.wiring.warnings {
            warn!("{warning}");
        }
        let shutdown_timeout = self.wiring.app.shutdown_timeout;
        let runtime = Runtime::start(
            self.wiring,
            &self.functions,
            &self.binders,
            &self.factories,
            self.context,
        )?;
        Ok(RunningApp {
            runtime,
            requested: CancellationToken::new(),
            shutdown_timeout,
        })
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully. With
    /// `--redrive BINDING` it moves dead letters back instead and returns.
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending::<()>()).await
    }

    /// Like [`run`](Self::run), but also stops when `stop` completes.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<()> {
        if let Mode::Redrive { binding, limit } = &self.mode {
            let binders = Binders::create(&self.wiring, &self.binders, &self.factories)?;
            let moved = redrive::run(&self.wiring, &binders, binding, *limit).await;
            binders.shutdown().await;
            println!("redrive: moved {} dead letter(s) of `{binding}`", moved?);
            return Ok(());
        }
        let mut running = self.start().await?;
        let failure = tokio::select! {
            () = stop => None,
            () = running.requested.cancelled() => None,
            () = shutdown_signal() => {
                info!("shutdown signal received");
                None
            }
            error = running.runtime.failure() => Some(error),
        };
        let stats = running.shutdown().await;
        match (failure, stats) {
            (Some(error), _) => Err(error),
            (None, Ok(stats)) => {
                for line in stats.to_string().lines() {
                    info!("{line}");
                }
                Ok(())
            }
            (None, Err(error)) => Err(error),
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("wiring", &self.wiring)
            .finish_non_exhaustive()
    }
}

/// A running application.
pub struct RunningApp {
    runtime: Runtime,
    requested: CancellationToken,
    shutdown_timeout: std::time::Duration,
}

impl RunningApp {
    /// Completes once every input binding is bound (never, while a broker
    /// stays unreachable).
    pub async fn ready(&self) {
        self.runtime.ready().await;
    }

    /// Up when every binding is bound and every binder connected.
    pub fn health(&self) -> Health {
        self.runtime.health()
    }

    /// What flowed through each binding so far.
    pub fn stats(&self) -> Stats {
        self.runtime.stats()
    }

    /// The dynamic sender.
    pub fn sender(&self) -> Sender {
        self.runtime.context.sender().expect("set at start").clone()
    }

    /// The validated wiring.
    pub fn wiring(&self) -> &Wiring {
        &self.runtime.wiring
    }

    #[cfg(test)]
    pub(crate) fn dynamic_sender_for_tests(&self) -> &crate::runtime::DynamicSenderForTests {
        &self.runtime.dynamic
    }

    /// A handle that asks [`App::run`] (or [`RunningApp::wait`]) to stop.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.requested.clone())
    }

    /// Completes when shutdown is requested through a handle, on SIGINT or
    /// SIGTERM, or with the error of a binding that failed for good.
    pub async fn wait(&mut self) -> Result<()> {
        tokio::select! {
            () = self.requested.cancelled() => Ok(()),
            () = shutdown_signal() => Ok(()),
            error = self.runtime.failure() => Err(error),
        }
    }

    /// Moves at most `limit` dead letters of input binding `binding` back to
    /// its group; returns how many moved.
    pub async fn redrive(&self, binding: &str, limit: Option<usize>) -> Result<usize> {
        redrive::run(&self.runtime.wiring, &self.runtime.binders, binding, limit).await
    }

    /// Stops taking messages, finishes those in flight, acknowledges,
    /// flushes and closes, within `shutdown-timeout`.
    pub async fn shutdown(self) -> Result<Stats> {
        self.runtime.shutdown(self.shutdown_timeout).await
    }
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// Asks a running app to shut down.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Requests shutdown.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
