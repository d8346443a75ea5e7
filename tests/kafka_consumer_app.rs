//! A bindery app that consumes a Kafka topic and appends the payload of
//! every processed message to a file, one per line, before acknowledging
//! it. `binder_kafka` runs it as a separate process to kill it with
//! SIGKILL mid-stream.
//!
//! Usage: `kafka_consumer_app <topic> <group> <output file> <delay ms>`,
//! brokers from `BINDERY_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`).
//! It processes with concurrency 4 over the topic's partitions, so records
//! of one partition are acknowledged out of order.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bindery::{App, State};
use bindery_tests::kafka::binder_toml;
use parking_lot::Mutex;

/// Where processed ids go, and how long each takes.
#[derive(Clone)]
struct Output {
    file: Arc<Mutex<File>>,
    delay: Duration,
}

async fn record(id: String, State(output): State<Output>) -> Result<(), std::io::Error> {
    if !output.delay.is_zero() {
        tokio::time::sleep(output.delay).await;
    }
    // One write per id: a kill cannot tear a line.
    output.file.lock().write_all(format!("{id}\n").as_bytes())
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, topic, group, path, delay] = args.as_slice() else {
        eprintln!("usage: kafka_consumer_app <topic> <group> <output file> <delay ms>");
        std::process::exit(2);
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the output file");
    let output = Output {
        file: Arc::new(Mutex::new(file)),
        delay: Duration::from_millis(delay.parse().expect("delay in milliseconds")),
    };
    let config = format!(
        r#"
        [bindery]
        default-binder = "kafka"
        {binder}
        [bindings.record-in-0]
        destination = "{topic}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.record-in-0.consumer]
        concurrency = 4
        prefetch = 64
        "#,
        binder = binder_toml("kafka", 4),
    );
    App::builder()
        .without_registered_functions()
        .function("record", record)
        .state(output)
        .config_toml(&config)
        .env(Vec::<(String, String)>::new())
        .build()?
        .run()
        .await
}
