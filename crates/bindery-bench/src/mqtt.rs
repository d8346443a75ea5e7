//! MQTT throughput: a backlog of JSON orders queued at QoS 1 in a group
//! member's persistent session, consumed over the group's shared
//! subscription, processed (decode, change a field, encode), published at
//! QoS 1 and acknowledged once that publish's PUBACK arrived, by a bindery
//! app on the MQTT binder and by raw rumqttc with manual acks and the same
//! in-flight limit (the consumer's receive maximum).
//!
//! Each round has its own topics and sessions: the member's session is
//! created and filled before the clock starts, and ended afterwards.

pub mod broker;
pub mod raw;

use std::time::{Duration, Instant};

use crate::order::Order;
use broker::{BINDERY_PREFIX, GROUP, Names};
use raw::RawProcessor;

/// Unacknowledged deliveries at most, on both sides: bindery's prefetch,
/// which the binder sends as the client's receive maximum, and the raw
/// member's receive maximum. Each one waits for its output's PUBACK, so
/// this bounds the outputs in flight too.
pub const PREFETCH: u16 = 100;

/// The input binding of the bindery app, whose `acked` count ends a run.
const INPUT_BINDING: &str = "process-in-0";

/// Raw rumqttc: the member resumes its session (receive maximum
/// [`PREFETCH`], manual acks), a second client publishes each output at
/// QoS 1, each input is acknowledged on its output's PUBACK. Returns
/// messages per second.
pub async fn raw_throughput(messages: u64) -> f64 {
    let names = Names::fresh("raw");
    let member = names.raw_member();
    broker::prepare(&names, &member, messages).await;

    let started = Instant::now();
    RawProcessor::open(&member, &names.group_filter(), &names.output())
        .run(Order::process_bytes, messages)
        .await;
    let elapsed = started.elapsed();
    broker::delete(&names, &member).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// A bindery app over the MQTT binder doing the same; returns messages per
/// second.
pub async fn bindery_throughput(messages: u64) -> f64 {
    let names = Names::fresh("bindery");
    let member = names.bindery_member();
    broker::prepare(&names, &member, messages).await;
    let elapsed = drain(&names, messages).await;
    broker::delete(&names, &member).await;
    messages as f64 / elapsed.as_secs_f64()
}

/// The app's configuration: the input in the group whose member session
/// holds the backlog, the output to another topic.
fn config(names: &Names) -> String {
    let url = broker::url();
    let (input, output) = (names.input(), names.output());
    let expiry = broker::SESSION_EXPIRY.as_secs();
    format!(
        r#"
        [bindery]
        definition = "process"
        default-binder = "mqtt"
        [binders.mqtt]
        type = "mqtt"
        url = "{url}"
        client-id-prefix = "{BINDERY_PREFIX}"
        session-expiry = "{expiry}s"
        [bindings.process-in-0]
        destination = "{input}"
        group = "{GROUP}"
        content-type = "application/json"
        [bindings.process-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.process-out-0]
        destination = "{output}"
        content-type = "application/json"
        "#
    )
}

/// Runs a bindery app until it has acknowledged `messages` inputs; returns
/// the time from start to the last acknowledgement (shutdown not
/// included).
async fn drain(names: &Names, messages: u64) -> Duration {
    crate::drain::process_until_acked(&config(names), INPUT_BINDING, messages).await
}
