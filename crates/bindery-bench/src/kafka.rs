//! Kafka throughput: a preloaded topic of JSON orders consumed by a group,
//! processed (decode, change a field, encode), produced to another topic,
//! and each input's offset stored once its output's delivery report is in
//! (at least once), by a bindery app on the Kafka binder and by raw
//! rdkafka with the same number of records in flight.
//!
//! Each round has its own topics and group, preloaded before the clock
//! starts and deleted afterwards. Both clocks start when the group has
//! assigned partitions (Tansu takes about half the session timeout to
//! get there), so joining is not measured.

pub mod broker;
pub mod latency;
pub mod raw;

use std::time::Instant;

use bindery::prelude::*;

use crate::order::Order;
use broker::{Admin, CONSUMER_PROPERTIES, Names, PARTITIONS, PRODUCER_PROPERTIES};
use raw::RawProcessor;

/// Records in flight on both sides: bindery's prefetch (unsettled
/// deliveries, each waiting for its output's delivery report) and the
/// raw processor's window.
pub const PREFETCH: usize = 1_000;

/// The input binding of the bindery app, whose `acked` count ends a run.
const INPUT_BINDING: &str = "process-in-0";

/// Raw rdkafka: a `StreamConsumer` group member with
/// `enable.auto.offset.store=false`, a `FutureProducer`, offsets stored
/// after delivery. Returns messages per second.
pub async fn raw_throughput(messages: u64) -> f64 {
    let names = Names::fresh("raw");
    let admin = Admin::connect();
    admin.preload(&names.input(), messages).await;
    admin.create(&[names.output()]).await;
    let processor = RawProcessor::open(
        admin.brokers(),
        &names.group(),
        &names.input(),
        &names.output(),
    );
    processor.run(Order::process_bytes, messages).await;
    let elapsed = processor
        .assigned_at()
        .expect("assigned before consuming")
        .elapsed();
    drop(processor);
    admin.delete(&names, &[]).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// A bindery app over the Kafka binder doing the same; returns messages
/// per second.
pub async fn bindery_throughput(messages: u64) -> f64 {
    let names = Names::fresh("bindery");
    let admin = Admin::connect();
    admin.preload(&names.input(), messages).await;
    let app = App::builder()
        .without_registered_functions()
        .function("process", crate::order::process)
        .env(Vec::<(String, String)>::new())
        .config_toml(&config(admin.brokers(), &names))
        .build()
        .expect("benchmark configuration");
    let running = app.start().await.expect("start");
    // Bound means assigned: the clock starts where the raw side's does.
    running.ready().await;
    let started = Instant::now();
    crate::drain::wait_for_acks(&running, INPUT_BINDING, messages).await;
    let elapsed = started.elapsed();
    running.shutdown().await.expect("shutdown");
    admin.delete(&names, &[names.group()]).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// `[binders.kafka]` with the properties both sides share.
pub(crate) fn binder_toml(brokers: &str) -> String {
    let mut toml = format!(
        "[binders.kafka]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\npartitions = {PARTITIONS}\n"
    );
    for (table, properties) in [
        ("consumer-properties", &CONSUMER_PROPERTIES[..]),
        ("producer-properties", &PRODUCER_PROPERTIES[..]),
    ] {
        toml.push_str(&format!("[binders.kafka.{table}]\n"));
        for (name, value) in properties {
            toml.push_str(&format!("\"{name}\" = \"{value}\"\n"));
        }
    }
    toml
}

fn config(brokers: &str, names: &Names) -> String {
    let (input, output, group) = (names.input(), names.output(), names.group());
    let binder = binder_toml(brokers);
    format!(
        r#"
        [bindery]
        definition = "process"
        default-binder = "kafka"
        [bindings.process-in-0]
        destination = "{input}"
        group = "{group}"
        content-type = "application/json"
        [bindings.process-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.process-out-0]
        destination = "{output}"
        content-type = "application/json"
        {binder}
        "#
    )
}
