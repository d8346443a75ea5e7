//! The raw lapin processor both RabbitMQ scenarios use, written as lapin's
//! examples write a consumer and a confirming publisher.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::PREFETCH;

/// Consumes a queue, publishes each processed payload with a publisher
/// confirm, and acknowledges each input once its output is confirmed.
#[derive(Debug)]
pub struct RawProcessor {
    consumer: lapin::Consumer,
    publishing: Channel,
    exchange: String,
}

impl RawProcessor {
    /// A channel of `consuming` on `queue` with `basic.qos(PREFETCH)` and
    /// a confirm-mode channel of `publishing` publishing to `exchange` (with
    /// the exchange's name as routing key, as the binder does). Separate
    /// connections, as the binder (and Spring, and RabbitMQ's advice) has
    /// them: one connection for both was about 8 % slower here.
    pub async fn open(
        consuming: &Connection,
        publishing: &Connection,
        queue: &str,
        exchange: &str,
    ) -> Self {
        let consuming = consuming.create_channel().await.expect("channel");
        consuming
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        let publishing = publishing.create_channel().await.expect("channel");
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let consumer = consuming
            .basic_consume(
                queue.into(),
                "bindery-bench-raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        Self {
            consumer,
            publishing,
            exchange: exchange.to_owned(),
        }
    }

    /// Processes until `limit` inputs are acknowledged. Confirms are
    /// pipelined: the prefetch bounds the inputs in flight, and so the
    /// confirms awaited at once, to [`PREFETCH`].
    pub async fn run(mut self, process: fn(&[u8]) -> Vec<u8>, limit: u64) {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut in_flight = FuturesUnordered::new();
        let mut done = 0u64;
        while done < limit {
            tokio::select! {
                // Settling first keeps acks flowing, so the broker keeps
                // delivering up to the prefetch.
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => done += 1,
                delivery = self.consumer.next() => {
                    let delivery = delivery.expect("the consumer was cancelled").expect("a delivery");
                    let confirm = self
                        .publishing
                        .basic_publish(
                            self.exchange.as_str().into(),
                            self.exchange.as_str().into(),
                            mandatory,
                            &process(&delivery.data),
                            properties.clone(),
                        )
                        .await
                        .expect("basic.publish");
                    let acker = delivery.acker;
                    in_flight.push(async move {
                        let confirmation = confirm.await.expect("a publisher confirm");
                        assert!(
                            matches!(confirmation, Confirmation::Ack(None)),
                            "output not confirmed: {confirmation:?}"
                        );
                        acker.ack(BasicAckOptions::default()).await.expect("basic.ack");
                    });
                }
            }
        }
    }
}
