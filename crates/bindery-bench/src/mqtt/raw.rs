//! The raw rumqttc processor: a group member with manual acks consuming
//! at QoS 1, a second client publishing each processed payload at QoS 1,
//! and each input acknowledged (PUBACK to the broker) once its output's
//! PUBACK arrived, as rumqttc's manual-ack example acknowledges.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::mpsc;

use super::PREFETCH;
use super::broker;

/// A run that receives and acknowledges nothing for this long is stuck
/// (as [`crate::drain::wait_for_acks`] judges the bindery side).
const STALL: Duration = Duration::from_secs(60);

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
    /// [`PREFETCH`], as the binder sets its prefetch; the worker holds at
    /// most [`PREFETCH`] inputs unacknowledged, so at most that many
    /// outputs are in flight too.
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
    /// both clients. The tasks polling an event loop never wait on another
    /// client's request queue (a full one would stall both loops): inputs
    /// and PUBACKs go through unbounded channels to a worker that publishes
    /// and acknowledges.
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
        let (inputs, received) = mpsc::unbounded_channel();
        let (confirmed, confirmations) = mpsc::unbounded_channel();
        let confirming = tokio::spawn(confirm(publishing, waiting.clone(), confirmed));
        let working = tokio::spawn(work(
            Worker {
                consumer: consumer.clone(),
                publisher: publisher.clone(),
                output,
                process,
                waiting,
            },
            received,
            confirmations,
        ));
        let mut done = 0u64;
        while done < limit {
            let event = tokio::time::timeout(STALL, broker::next(&mut consuming, "raw consumer"))
                .await
                .unwrap_or_else(|_| {
                    panic!("the raw processor acknowledged {done} of {limit} and nothing more for {STALL:?}")
                });
            match event {
                // Subscribing again on a resumed session is harmless, and
                // what the binder does.
                Event::Incoming(Packet::ConnAck(_)) => consumer
                    .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                    .expect("subscribe"),
                Event::Incoming(Packet::Publish(input)) => {
                    inputs.send(input).expect("the raw worker runs");
                }
                Event::Outgoing(Outgoing::PubAck(_)) => done += 1,
                _ => {}
            }
        }
        working.abort();
        confirming.abort();
        consumer.try_disconnect().expect("disconnect");
        while !matches!(
            broker::next(&mut consuming, "raw consumer").await,
            Event::Outgoing(Outgoing::Disconnect)
        ) {}
        let _ = publisher.try_disconnect();
    }
}

/// What the worker needs: both clients, the output topic, the processing
/// step and the inputs waiting for their output's PUBACK.
struct Worker {
    consumer: AsyncClient,
    publisher: AsyncClient,
    output: String,
    process: fn(&[u8]) -> Vec<u8>,
    waiting: Arc<Mutex<Waiting>>,
}

/// Publishes each input's processed payload and acknowledges each input
/// whose output was confirmed (acknowledgements first, so the broker keeps
/// sending). It takes a new input only while fewer than [`PREFETCH`] are
/// unacknowledged, as bindery's delivery channel holds back: Mosquitto
/// (2.0.11) sends a resumed session's queued messages past the client's
/// receive maximum.
async fn work(
    worker: Worker,
    mut received: mpsc::UnboundedReceiver<Publish>,
    mut confirmations: mpsc::UnboundedReceiver<Publish>,
) {
    let mut unacknowledged = 0usize;
    loop {
        tokio::select! {
            biased;
            Some(input) = confirmations.recv() => {
                worker.consumer.ack(&input).await.expect("ack the input");
                unacknowledged -= 1;
            }
            Some(input) = received.recv(), if unacknowledged < usize::from(PREFETCH) => {
                unacknowledged += 1;
                let payload = (worker.process)(&input.payload);
                worker.waiting.lock().queued.push_back(input);
                worker
                    .publisher
                    .publish_with_properties(
                        worker.output.clone(),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                        broker::json_properties(),
                    )
                    .await
                    .expect("publish");
            }
            else => return,
        }
    }
}

/// Drives the publisher: files each input under its output's packet id
/// when rumqttc sends it, and hands the input to the worker on that
/// PUBACK.
async fn confirm(
    mut publishing: EventLoop,
    waiting: Arc<Mutex<Waiting>>,
    confirmed: mpsc::UnboundedSender<Publish>,
) {
    loop {
        match broker::next(&mut publishing, "raw publisher").await {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let mut waiting = waiting.lock();
                if let Some(input) = waiting.queued.pop_front() {
                    waiting.sent.insert(pkid, input);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                assert_eq!(ack.reason, PubAckReason::Success, "output not taken");
                let input = waiting.lock().sent.remove(&ack.pkid);
                let input = input.expect("a PUBACK of a publish sent");
                if confirmed.send(input).is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}
