//! Latency on RabbitMQ: stamps published with confirms, relayed through a
//! processor, recorded by a sink; two hops through the broker on both
//! sides.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::PREFETCH;
use super::broker::{self, Admin, GROUP, Names};
use super::raw::RawProcessor;
use crate::latency::{self, Percentiles, Plan, Samples};

/// The bindery app on the RabbitMQ binder; each output provisions the
/// group queue behind it, so nothing is unroutable while the consumers
/// are still binding.
pub async fn bindery(plan: Plan) -> Percentiles {
    let names = Names::fresh("latency-bindery");
    let admin = Admin::connect().await;
    let uri = broker::uri();
    let (stamps, relayed) = (names.input(), names.output());
    let config = format!(
        r#"
        [bindery]
        definition = "stamps;relay;record"
        default-binder = "rabbit"
        [binders.rabbit]
        type = "rabbitmq"
        uri = "{uri}"
        connection-name = "bindery-bench latency"
        [bindings.stamps-out-0]
        destination = "{stamps}"
        [bindings.stamps-out-0.producer]
        required-groups = ["{GROUP}"]
        [bindings.relay-in-0]
        destination = "{stamps}"
        group = "{GROUP}"
        [bindings.relay-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.relay-out-0]
        destination = "{relayed}"
        [bindings.relay-out-0.producer]
        required-groups = ["{GROUP}"]
        [bindings.record-in-0]
        destination = "{relayed}"
        group = "{GROUP}"
        [bindings.record-in-0.consumer]
        prefetch = {PREFETCH}
        "#
    );
    let percentiles =
        latency::bindery_app(bindery::App::builder().config_toml(&config), plan).await;
    admin.delete(&names).await;
    admin.close().await;
    percentiles
}

/// The same with raw lapin: a confirming publisher at the rate, the raw
/// processor, and a sink that acknowledges what it records.
pub async fn raw(plan: Plan) -> Percentiles {
    let names = Names::fresh("latency-raw");
    let admin = Admin::connect().await;
    admin.declare_group(&names.input()).await;
    admin.declare_group(&names.output()).await;
    let consuming = broker::connect("bindery-bench raw latency consume").await;
    let publishing = broker::connect("bindery-bench raw latency publish").await;
    let samples = Samples::new(plan);
    let processor = RawProcessor::open(
        &consuming,
        &publishing,
        &names.input_queue(),
        &names.output(),
    )
    .await;
    let sending = publishing.create_channel().await.expect("channel");
    let recording = consuming.create_channel().await.expect("channel");
    let tasks = [
        tokio::spawn(send_stamps(sending, names.input(), plan)),
        tokio::spawn(processor.run(relay_stamp, u64::MAX)),
        tokio::spawn(record_stamps(
            recording,
            names.output_queue(),
            samples.clone(),
        )),
    ];
    let percentiles = samples.wait().await;
    for task in tasks {
        task.abort();
    }
    broker::close([consuming, publishing]).await;
    admin.delete(&names).await;
    admin.close().await;
    percentiles
}

fn relay_stamp(bytes: &[u8]) -> Vec<u8> {
    let stamp: u64 = serde_json::from_slice(bytes).expect("a stamp");
    serde_json::to_vec(&stamp).expect("a stamp encodes")
}

/// Publishes a stamp per tick with a publisher confirm, awaiting confirms
/// alongside, as the bindery source does.
async fn send_stamps(channel: Channel, exchange: String, plan: Plan) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut ticker = plan.ticker();
    let mut confirms = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let stamp = serde_json::to_vec(&latency::now_nanos()).expect("a stamp encodes");
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        exchange.as_str().into(),
                        mandatory,
                        &stamp,
                        properties.clone(),
                    )
                    .await
                    .expect("basic.publish");
                confirms.push(confirm);
            }
            Some(confirmed) = confirms.next(), if !confirms.is_empty() => {
                assert!(confirmed.expect("a publisher confirm").is_ack(), "stamp not confirmed");
            }
        }
    }
}

/// Records each stamp, then acknowledges it.
async fn record_stamps(channel: Channel, queue: String, samples: Arc<Samples>) {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bindery-bench-sink".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.expect("a delivery");
        samples.record(serde_json::from_slice(&delivery.data).expect("a stamp"));
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("basic.ack");
    }
}
