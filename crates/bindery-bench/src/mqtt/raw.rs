//! The raw rumqttc processor: a group member with manual acks consuming
//! at QoS 1, a second client publishing each processed payload at QoS 1,
//! and each input acknowledged (PUBACK to the broker) once its output's
//! PUBACK arrived, as rumqttc's manual-ack example acknowledges.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish};
use rumqttc::v5::{AsyncClient, EventLoop};

use super::PREFETCH;
use super::broker;

/// Inputs waiting for their output's PUBACK.
#[derive(Default)]
struct Waiting {
    /// Outputs queued to the publisher and not sent yet, in order: rumqttc
    /// assigns packet ids in the order publishes were queued.
    queued: VecDeque<Publish>,
    /// By the packet id of their output.
    sent: HashMap<u16, Publish>,
}

/// Consumes the group's shared subscription in session `member` and
/// publishes to `output`.
pub struct RawProcessor {
    consumer: AsyncClient,
    consuming: EventLoop,
    publisher: AsyncClient,
    publishing: EventLoop,
    filter: String,
    output: String,
}

impl std::fmt::Debug for RawProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawProcessor")
            .field("filter", &self.filter)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl RawProcessor {
    /// The member resumes session `member` with a receive maximum of
    /// [`PREFETCH`] (the broker sends no more unacknowledged messages
    /// than that), so at most [`PREFETCH`] outputs are in flight too.
    pub fn open(member: &str, filter: &str, output: &str) -> Self {
        let options = broker::options(member, false, Some(PREFETCH));
        let (consumer, consuming) = AsyncClient::new(options, usize::from(PREFETCH) + 64);
        let options = broker::options(&format!("{member}-publisher"), true, None);
        let (publisher, publishing) = AsyncClient::new(options, 1_024);
        Self {
            consumer,
            consuming,
            publisher,
            publishing,
            filter: filter.to_owned(),
            output: output.to_owned(),
        }
    }

    /// Processes until `limit` inputs are acknowledged, then disconnects
    /// both clients.
    pub async fn run(self, process: fn(&[u8]) -> Vec<u8>, limit: u64) {
        let Self {
            consumer,
            mut consuming,
            publisher,
            publishing,
            filter,
            output,
        } = self;
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let acking = tokio::spawn(ack_on_puback(publishing, waiting.clone(), consumer.clone()));
        let mut done = 0u64;
        while done < limit {
            match broker::next(&mut consuming, "raw consumer").await {
                // Subscribing again on a resumed session is harmless, and
                // what the binder does.
                rumqttc::v5::Event::Incoming(Packet::ConnAck(_)) => {
                    consumer
                        .subscribe(filter.clone(), QoS::AtLeastOnce)
                        .await
                        .expect("subscribe");
                }
                rumqttc::v5::Event::Incoming(Packet::Publish(input)) => {
                    let payload = process(&input.payload);
                    waiting.lock().queued.push_back(input);
                    publisher
                        .publish_with_properties(
                            output.clone(),
                            QoS::AtLeastOnce,
                            false,
                            payload,
                            broker::json_properties(),
                        )
                        .await
                        .expect("publish");
                }
                rumqttc::v5::Event::Outgoing(Outgoing::PubAck(_)) => done += 1,
                _ => {}
            }
        }
        consumer.disconnect().await.expect("disconnect");
        while !matches!(
            broker::next(&mut consuming, "raw consumer").await,
            rumqttc::v5::Event::Outgoing(Outgoing::Disconnect)
        ) {}
        acking.abort();
        let _ = publisher.try_disconnect();
    }
}

/// Drives the publisher: files each input under its output's packet id
/// when rumqttc sends it, and acknowledges the input on that PUBACK.
async fn ack_on_puback(
    mut publishing: EventLoop,
    waiting: Arc<Mutex<Waiting>>,
    consumer: AsyncClient,
) {
    loop {
        match broker::next(&mut publishing, "raw publisher").await {
            rumqttc::v5::Event::Outgoing(Outgoing::Publish(pkid)) => {
                let mut waiting = waiting.lock();
                if let Some(input) = waiting.queued.pop_front() {
                    waiting.sent.insert(pkid, input);
                }
            }
            rumqttc::v5::Event::Incoming(Packet::PubAck(ack)) => {
                assert_eq!(ack.reason, PubAckReason::Success, "output not taken");
                let input = waiting.lock().sent.remove(&ack.pkid);
                let input = input.expect("a PUBACK of a publish sent");
                consumer.ack(&input).await.expect("ack the input");
            }
            _ => {}
        }
    }
}
