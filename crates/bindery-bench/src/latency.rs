//! End-to-end latency at a fixed rate: p50 and p99 from send to sink.
//!
//! On every binder the bindery side is the same app — a source emitting
//! its send time (`stamps`), a processor passing it on (`relay`), a sink
//! recording how old it is (`record`) — and the raw side does the same
//! with the client alone. Sends go on until enough samples are in; those
//! sent during a warm-up after the first arrival are not counted, so
//! connecting, declaring and joining groups stay out of the figures. This
//! module holds what every binder shares, and the memory scenario.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bindery::AppBuilder;
use bindery::prelude::*;
use futures::Stream;
use tokio::sync::{Notify, mpsc};

/// The clock both sides stamp against.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since this process first stamped: what a stamp holds.
pub fn now_nanos() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
}

fn percentiles(mut samples: Vec<u64>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default() as f64 / 1e6
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// How fast to send and how many samples to take.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Messages per second.
    pub rate: u64,
    /// Samples to take after the warm-up.
    pub messages: u64,
    /// Messages sent sooner than this after the first arrival are not
    /// counted.
    pub warmup: Duration,
}

impl Plan {
    /// A timer ticking `rate` times a second, for the raw senders.
    pub fn ticker(&self) -> tokio::time::Interval {
        tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate as f64))
    }
}

/// The samples of one run.
#[derive(Debug)]
pub struct Samples {
    plan: Plan,
    taken: Mutex<Taken>,
    done: Notify,
}

#[derive(Debug, Default)]
struct Taken {
    /// Stamps below this are warm-up; set at the first arrival.
    from: Option<u64>,
    nanos: Vec<u64>,
}

impl Samples {
    /// Ready to take `plan.messages` samples.
    pub fn new(plan: Plan) -> Arc<Self> {
        Arc::new(Self {
            plan,
            taken: Mutex::new(Taken::default()),
            done: Notify::new(),
        })
    }

    /// Records a message that was sent at `stamp` and arrived now.
    pub fn record(&self, stamp: u64) {
        let now = now_nanos();
        let mut taken = self.taken.lock().expect("not poisoned");
        let warmup = self.plan.warmup.as_nanos() as u64;
        let from = *taken.from.get_or_insert(now + warmup);
        if stamp < from || taken.nanos.len() as u64 >= self.plan.messages {
            return;
        }
        taken.nanos.push(now.saturating_sub(stamp));
        if taken.nanos.len() as u64 == self.plan.messages {
            self.done.notify_one();
        }
    }

    /// Waits for every sample and returns the percentiles.
    pub async fn wait(&self) -> Percentiles {
        self.done.notified().await;
        let nanos = std::mem::take(&mut self.taken.lock().expect("not poisoned").nanos);
        percentiles(nanos)
    }
}

/// Emits the send time, `rate` per second, until the app stops.
async fn stamps(State(plan): State<Plan>) -> impl Stream<Item = u64> {
    futures::stream::unfold(plan.ticker(), |mut ticker| async move {
        ticker.tick().await;
        Some((now_nanos(), ticker))
    })
}

async fn relay(stamp: u64) -> u64 {
    stamp
}

async fn record(stamp: u64, State(samples): State<Arc<Samples>>) {
    samples.record(stamp);
}

/// Runs the `stamps;relay;record` app that `builder` configures (bindings
/// `stamps-out-0`, `relay-in-0`, `relay-out-0`, `record-in-0`) until the
/// samples are in.
pub async fn bindery_app(builder: AppBuilder, plan: Plan) -> Percentiles {
    LazyLock::force(&EPOCH);
    let samples = Samples::new(plan);
    let app = builder
        .without_registered_functions()
        .function("stamps", stamps)
        .function("relay", relay)
        .function("record", record)
        .state(plan)
        .state(samples.clone())
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("latency configuration");
    let running = app.start().await.expect("start");
    let percentiles = samples.wait().await;
    running.shutdown().await.expect("shutdown");
    percentiles
}

/// bindery on the memory binder: source → processor → sink.
pub async fn bindery_memory(plan: Plan) -> Percentiles {
    let builder = App::builder()
        .binder(
            "memory",
            Arc::new(bindery::memory::MemoryBinder::isolated()),
        )
        .config_toml(
            r#"
            [bindery]
            definition = "stamps;relay;record"
            [bindings.stamps-out-0]
            destination = "latency-in"
            [bindings.relay-in-0]
            destination = "latency-in"
            group = "relay"
            [bindings.relay-out-0]
            destination = "latency-out"
            [bindings.record-in-0]
            destination = "latency-out"
            group = "record"
            "#,
        );
    bindery_app(builder, plan).await
}

/// The same over raw tokio mpsc hops.
pub async fn raw_memory(plan: Plan) -> Percentiles {
    LazyLock::force(&EPOCH);
    let samples = Samples::new(plan);
    let (to_relay, mut relay_rx) = mpsc::channel::<Bytes>(super::memory::PREFETCH);
    let (to_sink, mut sink_rx) = mpsc::channel::<Bytes>(super::memory::PREFETCH);
    let source = tokio::spawn(async move {
        let mut ticker = plan.ticker();
        loop {
            ticker.tick().await;
            let stamp = serde_json::to_vec(&now_nanos()).expect("encode");
            if to_relay.send(Bytes::from(stamp)).await.is_err() {
                break;
            }
        }
    });
    let relay = tokio::spawn(async move {
        while let Some(bytes) = relay_rx.recv().await {
            let stamp: u64 = serde_json::from_slice(&bytes).expect("decode");
            let out = Bytes::from(serde_json::to_vec(&stamp).expect("encode"));
            if to_sink.send(out).await.is_err() {
                break;
            }
        }
    });
    let sink = {
        let samples = samples.clone();
        tokio::spawn(async move {
            while let Some(bytes) = sink_rx.recv().await {
                samples.record(serde_json::from_slice(&bytes).expect("decode"));
            }
        })
    };
    let percentiles = samples.wait().await;
    for task in [source, relay, sink] {
        task.abort();
    }
    percentiles
}
