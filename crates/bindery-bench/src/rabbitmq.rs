//! RabbitMQ throughput: a preloaded backlog of persistent JSON orders
//! consumed, processed (decode, change a field, encode), published with
//! publisher confirms to another exchange and acknowledged once that
//! confirm is in, by a bindery app on the RabbitMQ binder and by raw
//! lapin with the same prefetch, and so the same confirm window.
//!
//! Each round has its own exchanges and queues, preloaded before the clock
//! starts and deleted afterwards.

pub mod broker;
pub mod latency;
pub mod raw;

use std::time::{Duration, Instant};

use crate::order::Order;
use broker::{Admin, GROUP, Names};
use raw::RawProcessor;

/// The input's prefetch on both sides. bindery acknowledges an input only
/// once its output is confirmed, so this also bounds its confirms in
/// flight; the raw side is held to the same window.
pub const PREFETCH: u16 = 100;

/// The input binding of the bindery app, whose `acked` count ends a run.
const INPUT_BINDING: &str = "process-in-0";

/// Raw lapin: a consumer channel with `basic.qos` and a confirm-mode
/// publishing channel, each on its own connection as in the binder; each input is acked when its output's
/// confirm arrives, with up to [`PREFETCH`] of them in flight. Returns
/// messages per second.
pub async fn raw_throughput(messages: u64) -> f64 {
    let names = Names::fresh("raw");
    let admin = Admin::connect().await;
    admin.preload(&names.input(), messages).await;
    admin.declare_group(&names.output()).await;

    let started = Instant::now();
    let consuming = broker::connect("bindery-bench raw consume").await;
    let publishing = broker::connect("bindery-bench raw publish").await;
    RawProcessor::open(
        &consuming,
        &publishing,
        &names.input_queue(),
        &names.output(),
    )
    .await
    .run(Order::process_bytes, messages)
    .await;
    let elapsed = started.elapsed();
    broker::close([consuming, publishing]).await;
    admin.delete(&names).await;
    admin.close().await;
    messages as f64 / elapsed.as_secs_f64()
}

/// A bindery app over the RabbitMQ binder doing the same; returns messages
/// per second.
pub async fn bindery_throughput(messages: u64) -> f64 {
    let names = Names::fresh("bindery");
    let admin = Admin::connect().await;
    admin.preload(&names.input(), messages).await;
    let elapsed = drain(&names, messages).await;
    admin.delete(&names).await;
    admin.close().await;
    messages as f64 / elapsed.as_secs_f64()
}

/// The app's configuration: the input on the preloaded group, the output
/// to another destination whose `required-groups` queue makes outputs
/// routable.
fn config(names: &Names) -> String {
    let uri = broker::uri();
    let (input, output) = (names.input(), names.output());
    format!(
        r#"
        [bindery]
        definition = "process"
        default-binder = "rabbit"
        [binders.rabbit]
        type = "rabbitmq"
        uri = "{uri}"
        connection-name = "bindery-bench"
        [bindings.process-in-0]
        destination = "{input}"
        group = "{GROUP}"
        content-type = "application/json"
        [bindings.process-in-0.consumer]
        prefetch = {PREFETCH}
        [bindings.process-out-0]
        destination = "{output}"
        content-type = "application/json"
        [bindings.process-out-0.producer]
        required-groups = ["{GROUP}"]
        "#
    )
}

/// Runs a bindery app until it has acknowledged `messages` inputs from
/// the group queue of `names.input()`; returns the time from start to the last
/// acknowledgement (shutdown not included).
pub async fn drain(names: &Names, messages: u64) -> Duration {
    crate::drain::process_until_acked(&config(names), INPUT_BINDING, messages).await
}
