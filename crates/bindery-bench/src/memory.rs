//! Memory binder: source → processor → sink against a chain of raw tokio
//! mpsc hops doing the same decode/encode work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bindery::prelude::*;
use futures::Stream;
use tokio::sync::{Notify, mpsc};

use crate::order::Order;

/// Unacknowledged messages per binding, and the raw channels' capacity.
pub const PREFETCH: usize = 256;

/// What moves through the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// 100 opaque bytes, passed through untouched.
    Bytes,
    /// A ~100-byte JSON order, decoded and encoded at every hop.
    Json,
}

fn bytes_payload() -> Bytes {
    Bytes::from_static(&[0x5a; 100])
}

/// Counts what reached the sink and wakes the runner at the end.
#[derive(Debug, Default)]
struct Finish {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

impl Finish {
    fn arrive(&self) {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Count(u64);

async fn bytes_source(State(Count(n)): State<Count>) -> impl Stream<Item = Bytes> {
    let payload = bytes_payload();
    futures::stream::iter((0..n).map(move |_| payload.clone()))
}

async fn json_source(State(Count(n)): State<Count>) -> impl Stream<Item = Order> {
    futures::stream::iter((0..n).map(Order::new))
}

async fn bytes_process(payload: Bytes) -> Bytes {
    payload
}

async fn bytes_sink(_payload: Bytes, State(finish): State<Arc<Finish>>) {
    finish.arrive();
}

async fn json_sink(_order: Order, State(finish): State<Arc<Finish>>) {
    finish.arrive();
}

fn config(content_type: &str) -> String {
    format!(
        r#"
        [bindery]
        definition = "source;process;sink"
        [bindings.source-out-0]
        destination = "bench-in"
        content-type = "{content_type}"
        [bindings.process-in-0]
        destination = "bench-in"
        group = "process"
        content-type = "{content_type}"
        [bindings.process-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.process-out-0]
        destination = "bench-out"
        content-type = "{content_type}"
        [bindings.sink-in-0]
        destination = "bench-out"
        group = "sink"
        content-type = "{content_type}"
        [bindings.sink-in-0.consumer]
        prefetch = {PREFETCH}
        "#
    )
}

/// Runs `messages` through a bindery pipeline on a private memory binder;
/// returns messages per second.
pub async fn bindery_pipeline(payload: Payload, messages: u64) -> f64 {
    let finish = Arc::new(Finish::default());
    finish.target.store(messages, Ordering::Relaxed);
    let builder = App::builder()
        .without_registered_functions()
        .binder(
            "memory",
            Arc::new(bindery::memory::MemoryBinder::isolated()),
        )
        .state(finish.clone())
        .state(Count(messages))
        .env(Vec::<(String, String)>::new());
    let builder = match payload {
        Payload::Bytes => builder
            .function("source", bytes_source)
            .function("process", bytes_process)
            .function("sink", bytes_sink)
            .config_toml(&config("application/octet-stream")),
        Payload::Json => builder
            .function("source", json_source)
            .function("process", crate::order::process)
            .function("sink", json_sink)
            .config_toml(&config("application/json")),
    };
    let app = builder.build().expect("benchmark configuration");
    let started = Instant::now();
    let running = app.start().await.expect("start");
    finish.done.notified().await;
    let elapsed = started.elapsed();
    running.shutdown().await.expect("shutdown");
    messages as f64 / elapsed.as_secs_f64()
}

/// The same work over raw tokio mpsc channels; returns messages per second.
pub async fn raw_chain(payload: Payload, messages: u64) -> f64 {
    let (to_process, mut process_rx) = mpsc::channel::<Bytes>(PREFETCH);
    let (to_sink, mut sink_rx) = mpsc::channel::<Bytes>(PREFETCH);
    let started = Instant::now();
    let source = tokio::spawn(async move {
        for id in 0..messages {
            let bytes = match payload {
                Payload::Bytes => bytes_payload(),
                Payload::Json => Bytes::from(Order::encoded(id)),
            };
            if to_process.send(bytes).await.is_err() {
                break;
            }
        }
    });
    let process = tokio::spawn(async move {
        while let Some(bytes) = process_rx.recv().await {
            let out = match payload {
                Payload::Bytes => bytes,
                Payload::Json => Bytes::from(Order::process_bytes(&bytes)),
            };
            if to_sink.send(out).await.is_err() {
                break;
            }
        }
    });
    let sink = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(bytes) = sink_rx.recv().await {
            if payload == Payload::Json {
                let _order: Order = serde_json::from_slice(&bytes).expect("decode");
            }
            seen += 1;
            if seen == messages {
                break;
            }
        }
        seen
    });
    let seen = sink.await.expect("sink");
    let elapsed = started.elapsed();
    source.await.expect("source");
    process.await.expect("process");
    assert_eq!(seen, messages);
    messages as f64 / elapsed.as_secs_f64()
}
