//! The runtime: binds every function of a [`Wiring`], runs them, and shuts
//! them down gracefully.

mod bind;
mod binders;
mod health;
mod input;
mod output;
mod pipeline;
pub(crate) mod redrive;
mod sender;
mod source;
pub(crate) mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bindery_core::binder::{Binder, BinderExt, GroupBinding, Health};
use bindery_core::codec::Codec;
use bindery_core::config::{FunctionPlan, OutputPlan, Wiring};
use bindery_core::error::Error;
use bindery_core::function::{Composed, Context, Function, FunctionRegistry, Sender};
use bindery_core::registry::BinderFactory;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub(crate) use binders::Binders;
use health::BindingWatch;
use input::InputBinding;
use output::Output;
use pipeline::dead_letter::{DeadLetters, Origin};
use pipeline::invoke::Invoke;
use pipeline::retry::Retry;
use pipeline::settle::Settle;
#[cfg(test)]
pub(crate) use sender::DynamicSender as DynamicSenderForTests;
use source::Source;
use stats::{Registry, Stats};

/// A started application.
pub(crate) struct Runtime {
    pub(crate) wiring: Arc<Wiring>,
    pub(crate) binders: Arc<Binders>,
    pub(crate) stats: Arc<Registry>,
    pub(crate) context: Arc<Context>,
    shutdown: CancellationToken,
    /// Cancelled once the inputs have drained: the dynamic sender keeps
    /// working for the messages still in flight until then (audit A10).
    sender_closed: CancellationToken,
    tasks: JoinSet<Result<(), Error>>,
    unbound_inputs: watch::Receiver<usize>,
    watches: Arc<Mutex<Vec<Arc<BindingWatch>>>>,
    #[cfg(test)]
    pub(crate) dynamic: Arc<sender::DynamicSender>,
}

/// Shared by the tasks of one runtime.
#[derive(Clone)]
struct Shared {
    binders: Arc<Binders>,
    stats: Arc<Registry>,
    context: Arc<Context>,
    shutdown: CancellationToken,
    unbound_inputs: watch::Sender<usize>,
    watches: Arc<Mutex<Vec<Arc<BindingWatch>>>>,
}

impl Runtime {
    /// Creates the binders and spawns one task per function. Returns at
    /// once: bindings are made in the background, retrying while a broker
    /// is unreachable. Inputs bind before sources start.
    pub(crate) fn start(
        wiring: Arc<Wiring>,
        functions: &FunctionRegistry,
        provided: &BTreeMap<String, Arc<dyn Binder>>,
        factories: &[BinderFactory],
        mut context: Context,
    ) -> Result<Self, Error> {
        let binders = Arc::new(Binders::create(&wiring, provided, factories)?);
        let stats = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let sender_closed = CancellationToken::new();
        let dynamic = Arc::new(sender::DynamicSender::new(
            wiring.clone(),
            binders.clone(),
            stats.clone(),
            sender_closed.clone(),
        ));
        context.set_sender(Sender::new(dynamic.clone()));
        let inputs = wiring
            .functions
            .iter()
            .filter(|f| f.input.is_some())
            .count();
        let (unbound_tx, unbound_inputs) = watch::channel(inputs);
        let watches = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            binders: binders.clone(),
            stats: stats.clone(),
            context: Arc::new(context),
            shutdown: shutdown.clone(),
            unbound_inputs: unbound_tx,
            watches: watches.clone(),
        };
        let mut tasks = JoinSet::new();
        for plan in &wiring.functions {
            let function = compose(plan, functions);
            let shared = shared.clone();
            let plan = plan.clone();
            if plan.input.is_some() {
                tasks.spawn(run_input(plan, function, shared));
            } else {
                tasks.spawn(run_source(
                    plan,
                    function,
                    shared,
                    wiring.app.poller.clone(),
                ));
            }
        }
        Ok(Self {
            wiring,
            binders,
            stats,
            context: shared.context,
            shutdown,
            sender_closed,
            tasks,
            unbound_inputs,
            watches,
            #[cfg(test)]
            dynamic,
        })
    }

    /// Completes once every input binding is bound.
    pub(crate) async fn ready(&self) {
        let mut unbound = self.unbound_inputs.clone();
        let _ = unbound.wait_for(|n| *n == 0).await;
    }

    /// Whether every binding is bound and working and every binder up.
    pub(crate) fn health(&self) -> Health {
        let unbound = *self.unbound_inputs.borrow();
        if unbound > 0 {
            return Health::Down(format!("{unbound} input binding(s) not bound yet"));
        }
        if let Some(problem) = self.watches.lock().iter().find_map(|w| w.problem()) {
            return Health::Down(problem);
        }
        match self.binders.health().into_iter().next() {
            None => Health::Up,
            Some((name, Health::Down(reason))) => {
                Health::Down(format!("binder `{name}`: {reason}"))
            }
            Some((name, _)) => Health::Down(format!("binder `{name}` is not up")),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Completes with the error of the first task that fails.
    pub(crate) async fn failure(&mut self) -> Error {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(Ok(()))) => continue,
                Some(Ok(Err(error))) => return error,
                Some(Err(join_error)) => {
                    return Error::TaskFailed(join_error.to_string());
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Stops taking messages, finishes those in flight, flushes and closes,
    /// within `timeout`.
    pub(crate) async fn shutdown(mut self, timeout: Duration) -> Result<Stats, Error> {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut first_error = None;
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(result) = self.tasks.join_next().await {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        first_error.get_or_insert(error);
                    }
                    Err(join_error) => {
                        first_error.get_or_insert(Error::TaskFailed(join_error.to_string()));
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
            first_error.get_or_insert(Error::ShutdownTimeout(timeout));
        }
        self.sender_closed.cancel();
        // Flushing and closing share what is left of the same budget; a
        // binder that overruns it leaves unconfirmed work to redelivery.
        if tokio::time::timeout_at(deadline, self.binders.shutdown())
            .await
            .is_err()
        {
            first_error.get_or_insert(Error::ShutdownTimeout(timeout));
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.stats.snapshot()),
        }
    }
}

/// The function a plan runs: one registered function, or a composition.
fn compose(plan: &FunctionPlan, functions: &FunctionRegistry) -> Arc<dyn Function> {
    let stages: Vec<Arc<dyn Function>> = plan
        .stages
        .iter()
        .map(|name| {
            functions
                .get(name)
                .expect("validation checked every name")
                .clone()
        })
        .collect();
    match <[_; 1]>::try_from(stages) {
        Ok([only]) => only,
        Err(stages) => Arc::new(Composed::new(stages)),
    }
}

async fn bind_output(plan: &OutputPlan, shared: &Shared) -> Result<Option<Arc<Output>>, Error> {
    let binder = shared.binders.get(&plan.binder)?;
    let what = format!(
        "binding `{}` (destination `{}`)",
        plan.binding, plan.producer.destination
    );
    let producer =
        bind::with_retry(&what, &shared.shutdown, || binder.producer(&plan.producer)).await?;
    Ok(producer.map(|producer| {
        Arc::new(Output::new(
            plan.clone(),
            producer,
            shared.stats.binding(&plan.binding),
        ))
    }))
}

async fn run_input(
    plan: FunctionPlan,
    function: Arc<dyn Function>,
    shared: Shared,
) -> Result<(), Error> {
    let input = plan.input.clone().expect("an input function");
    let binder = shared.binders.get(&input.binder)?;
    let output = match &plan.output {
        Some(output) => match bind_output(output, &shared).await? {
            Some(output) => Some(output),
            None => return Ok(()),
        },
        None => None,
    };
    let spec = &input.consumer;
    // Validation gave every dead-lettering binding a group.
    let dead_letter_destination = match GroupBinding::of(spec) {
        Ok(group) => binder.dead_letter_name(group),
        Err(_) => String::new(),
    };
    let dead_letter_producer = if spec.dead_letter {
        let what = format!(
            "dead-letter destination `{dead_letter_destination}` of `{}`",
            input.binding
        );
        match bind::with_retry(&what, &shared.shutdown, || {
            binder.dead_letter_producer(spec)
        })
        .await?
        {
            Some(producer) => Some(producer),
            None => return Ok(()),
        }
    } else {
        None
    };
    let counters = shared.stats.binding(&input.binding);
    let watch = Arc::new(BindingWatch::new(
        &input.binding,
        spec.concurrency.get(),
        input.invocation_timeout,
    ));
    shared.watches.lock().push(watch.clone());
    let origin = Origin {
        binding: &input.binding,
        destination: &spec.destination,
        group: spec.group.as_deref().unwrap_or_default(),
    };
    let binding = Arc::new(InputBinding {
        invoke: Invoke {
            binding: input.binding.clone(),
            function,
            output,
            context: shared.context.clone(),
            default_codec: Codec::for_content_type(&input.content_type).unwrap_or(Codec::Json),
            timeout: input.invocation_timeout,
            counters: counters.clone(),
            shutdown: shared.shutdown.clone(),
        },
        retry: Retry::new(input.retry, shared.shutdown.clone()),
        dead_letters: DeadLetters::new(
            dead_letter_producer,
            dead_letter_destination,
            origin,
            counters.clone(),
            watch.clone(),
            shared.shutdown.clone(),
        ),
        settle: Settle::new(&input.binding, counters.clone()),
        counters,
        watch,
        plan: input.clone(),
        shutdown: shared.shutdown.clone(),
    });
    let Some(consumer) = input::bind_consumer(&binder, &binding).await? else {
        return Ok(());
    };
    info!(
        binding = %input.binding,
        binder = %input.binder,
        destination = %spec.destination,
        group = spec.group.as_deref().unwrap_or("(anonymous)"),
        "bound {}",
        plan.definition
    );
    shared
        .unbound_inputs
        .send_modify(|n| *n = n.saturating_sub(1));
    input::consume(binding, consumer).await
}

async fn run_source(
    plan: FunctionPlan,
    function: Arc<dyn Function>,
    shared: Shared,
    poller: bindery_core::config::PollerSettings,
) -> Result<(), Error> {
    let Some(output_plan) = plan.output.clone() else {
        error!(function = %plan.definition, "a source without output binding does nothing");
        return Ok(());
    };
    let Some(output) = bind_output(&output_plan, &shared).await? else {
        return Ok(());
    };
    // Sources start once every input of the app is bound, so an
    // anonymous subscriber in the same app misses nothing.
    let mut unbound = shared.unbound_inputs.subscribe();
    tokio::select! {
        _ = unbound.wait_for(|n| *n == 0) => {}
        () = shared.shutdown.cancelled() => return Ok(()),
    }
    info!(binding = %output_plan.binding, destination = %output_plan.producer.destination, "source {} started", plan.definition);
    Source {
        name: plan.definition.clone(),
        function,
        counters: shared.stats.binding(&output_plan.binding),
        output,
        context: shared.context.clone(),
        poller,
        shutdown: shared.shutdown.clone(),
    }
    .run()
    .await;
    Ok(())
}
