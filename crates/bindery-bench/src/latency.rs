//! End-to-end latency at a fixed rate: p50 and p99 from send to sink.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bindery::prelude::*;
use futures::Stream;
use tokio::sync::{Mutex, Notify, mpsc};

/// The clock both sides stamp against.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_nanos() -> u64 {
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

#[derive(Clone, Copy, Debug)]
struct Plan {
    rate: u64,
    messages: u64,
}

#[derive(Debug, Default)]
struct Samples {
    nanos: Mutex<Vec<u64>>,
    done: Notify,
}

/// Emits the send time, `rate` per second.
async fn stamps(State(plan): State<Plan>) -> impl Stream<Item = u64> {
    let period = Duration::from_secs_f64(1.0 / plan.rate as f64);
    futures::stream::unfold(
        (tokio::time::interval(period), 0u64),
        move |(mut interval, sent)| async move {
            if sent == plan.messages {
                return None;
            }
            interval.tick().await;
            Some((now_nanos(), (interval, sent + 1)))
        },
    )
}

async fn relay(stamp: u64) -> u64 {
    stamp
}

async fn record(stamp: u64, State(plan): State<Plan>, State(samples): State<Arc<Samples>>) {
    let mut nanos = samples.nanos.lock().await;
    nanos.push(now_nanos().saturating_sub(stamp));
    if nanos.len() as u64 == plan.messages {
        samples.done.notify_one();
    }
}

/// bindery on the memory binder: source → processor → sink.
pub async fn bindery_memory(rate: u64, messages: u64) -> Percentiles {
    LazyLock::force(&EPOCH);
    let samples = Arc::new(Samples::default());
    let app = App::builder()
        .without_registered_functions()
        .binder(
            "memory",
            Arc::new(bindery::memory::MemoryBinder::isolated()),
        )
        .function("stamps", stamps)
        .function("relay", relay)
        .function("record", record)
        .state(Plan { rate, messages })
        .state(samples.clone())
        .env(Vec::<(String, String)>::new())
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
        )
        .build()
        .expect("latency configuration");
    let running = app.start().await.expect("start");
    samples.done.notified().await;
    running.shutdown().await.expect("shutdown");
    let nanos = std::mem::take(&mut *samples.nanos.lock().await);
    percentiles(nanos)
}

/// The same over raw tokio mpsc hops.
pub async fn raw_memory(rate: u64, messages: u64) -> Percentiles {
    LazyLock::force(&EPOCH);
    let (to_relay, mut relay_rx) = mpsc::channel::<Bytes>(super::memory::PREFETCH);
    let (to_sink, mut sink_rx) = mpsc::channel::<Bytes>(super::memory::PREFETCH);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        for _ in 0..messages {
            interval.tick().await;
            let stamp = serde_json::to_vec(&now_nanos()).expect("encode");
            if to_relay.send(Bytes::from(stamp)).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = relay_rx.recv().await {
            let stamp: u64 = serde_json::from_slice(&bytes).expect("decode");
            if to_sink
                .send(Bytes::from(serde_json::to_vec(&stamp).expect("encode")))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut nanos = Vec::with_capacity(messages as usize);
    while let Some(bytes) = sink_rx.recv().await {
        let stamp: u64 = serde_json::from_slice(&bytes).expect("decode");
        nanos.push(now_nanos().saturating_sub(stamp));
        if nanos.len() as u64 == messages {
            break;
        }
    }
    percentiles(nanos)
}
