//! Latency on Kafka: stamps produced, relayed by a processor group,
//! recorded by a sink group; two hops through the broker on both sides,
//! every record acknowledged by the broker (`acks=all`) and every input
//! offset stored after its output's delivery.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::broker::{self, Admin, Names};
use super::raw::{Assignment, RawProcessor, group_member};
use super::{PREFETCH, binder_toml};
use crate::latency::{self, Percentiles, Plan, Samples};

/// The group of the sink, next to the processor's.
fn sink_group(names: &Names) -> String {
    format!("{}-sink", names.group())
}

/// The bindery app on the Kafka binder.
pub async fn bindery(plan: Plan) -> Percentiles {
    let names = Names::fresh("latency-bindery");
    let admin = Admin::connect();
    admin.create(&[names.input(), names.output()]).await;
    let (stamps, relayed) = (names.input(), names.output());
    let (relay_group, record_group) = (names.group(), sink_group(&names));
    let binder = binder_toml(admin.brokers());
    let config = format!(
        r#"
        [bindery]
        definition = "stamps;relay;record"
        default-binder = "kafka"
        [bindings.stamps-out-0]
        destination = "{stamps}"
        [bindings.relay-in-0]
        destination = "{stamps}"
        group = "{relay_group}"
        [bindings.relay-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.relay-out-0]
        destination = "{relayed}"
        [bindings.record-in-0]
        destination = "{relayed}"
        group = "{record_group}"
        [bindings.record-in-0.consumer]
        prefetch = {PREFETCH}
        {binder}
        "#
    );
    let percentiles =
        latency::bindery_app(bindery::App::builder().config_toml(&config), plan).await;
    admin.delete(&names, &[relay_group, record_group]).await;
    percentiles
}

/// The same with raw rdkafka: a producer at the rate, the raw processor,
/// and a sink that stores the offset of what it records.
pub async fn raw(plan: Plan) -> Percentiles {
    let names = Names::fresh("latency-raw");
    let admin = Admin::connect();
    admin.create(&[names.input(), names.output()]).await;
    let brokers = admin.brokers();
    let samples = Samples::new(plan);
    let processor = RawProcessor::open(brokers, &names.group(), &names.input(), &names.output());
    let sink = group_member(brokers, &sink_group(&names), &names.output());
    let tasks = [
        tokio::spawn(send_stamps(broker::producer(brokers), names.input(), plan)),
        tokio::spawn(async move { processor.run(relay_stamp, u64::MAX).await }),
        tokio::spawn(record_stamps(sink, names.output(), samples.clone())),
    ];
    let percentiles = samples.wait().await;
    // Every client of the topics is gone before they are deleted:
    // librdkafka 2.12 can crash when a topic vanishes under a live client
    // (scripts/brokers/TANSU-NOTES.md).
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    admin.delete(&names, &[]).await;
    percentiles
}

fn relay_stamp(bytes: &[u8]) -> Vec<u8> {
    let stamp: u64 = serde_json::from_slice(bytes).expect("a stamp");
    serde_json::to_vec(&stamp).expect("a stamp encodes")
}

/// Produces a stamp per tick, awaiting delivery reports alongside, as the
/// bindery source does.
async fn send_stamps(producer: FutureProducer, topic: String, plan: Plan) {
    let mut ticker = plan.ticker();
    let mut deliveries = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let stamp = serde_json::to_vec(&latency::now_nanos()).expect("a stamp encodes");
                let record = FutureRecord::<(), _>::to(&topic).payload(&stamp);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(error, _)| error)
                    .expect("librdkafka's queue has room");
                deliveries.push(delivery);
            }
            Some(delivered) = deliveries.next(), if !deliveries.is_empty() => {
                if let Err((error, _)) = delivered.expect("the producer lives") {
                    panic!("a stamp was not delivered: {error}");
                }
            }
        }
    }
}

/// Records each stamp, then stores its offset.
async fn record_stamps(consumer: StreamConsumer<Assignment>, topic: String, samples: Arc<Samples>) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                samples.record(
                    serde_json::from_slice(message.payload().unwrap_or_default()).expect("a stamp"),
                );
                consumer
                    .store_offset(&topic, message.partition(), message.offset())
                    .expect("store the offset");
            }
            Err(error) => eprintln!("raw Kafka sink: {error}"),
        }
    }
}
