//! Cases 21 and 22, from the delivery audit: a function that panics (A3,
//! A4) and a stream processor whose last output is refused (A1). Both run
//! an app on the binder under test and hold it to SPEC §5.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bindery::binder::BinderExt;
use bindery::binder::{Binder, Consumer, ProducerSpec};
use bindery::message::names;
use bindery::{App, Message, RunningApp, State};
use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;

use super::refusing::{REFUSE_HEADER, RefusingBinder};
use super::{
    BinderHarness, case_group, destination_with_groups, recv, send, start_app, wait_until,
};
use crate::unique_name;

const POISON: &str = "poison";
const PANIC_TEXT: &str = "invariant broken by the poison message";

/// What the panicking function saw.
#[derive(Clone, Default)]
struct Fragile {
    processed: Arc<Mutex<Vec<String>>>,
    poison_calls: Arc<AtomicUsize>,
}

async fn panics_on_poison(payload: String, State(fragile): State<Fragile>) {
    if payload == POISON {
        fragile.poison_calls.fetch_add(1, Ordering::SeqCst);
        panic!("{PANIC_TEXT}");
    }
    fragile.processed.lock().push(payload);
}

/// Whether `done` holds within `timeout`, checking every 20 ms; lets a
/// case say what it saw when it does not.
async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn text(payload: &str) -> Message {
    Message::new(Bytes::from(payload.to_owned())).with_content_type("text/plain")
}

/// Case 21a: A panicking function is a failure like an error (SPEC §5): the
/// panicking message is dead-lettered once, not retried, with the panic
/// message in `x-exception-message`; every other message is processed and
/// the app keeps serving (health Up, a later message processed). With
/// concurrency 1 (audit A3: the panic stopped the app).
pub async fn panicking_function_concurrency_one<H: BinderHarness>(harness: &H) {
    panicking_function_with(harness, 1).await;
}

/// Case 21b: Case 21a with concurrency 4 (audit A4: the panic stopped the
/// binding while health stayed Up).
pub async fn panicking_function_concurrency_four<H: BinderHarness>(harness: &H) {
    panicking_function_with(harness, 4).await;
}

async fn panicking_function_with<H: BinderHarness>(harness: &H, concurrency: usize) {
    let binder = harness.binder().await;
    let destination = unique_name("c21");
    let group = case_group(&destination, "fragile");
    // Three attempts allowed, so "not retried" is observable.
    let config = format!(
        r#"
        [bindery]
        default-binder = "under-test"
        [bindings.fragile-in-0]
        destination = "{destination}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.fragile-in-0.consumer]
        max-attempts = 3
        back-off-initial-interval = "10ms"
        concurrency = {concurrency}
        "#
    );
    let fragile = Fragile::default();
    let running = start_app(
        App::builder()
            .function("fragile", panics_on_poison)
            .state(fragile.clone()),
        binder.clone(),
        &config,
    )
    .await;
    let producer = binder
        .producer(&ProducerSpec::new("c21-out", &destination))
        .await
        .expect("bind producer");
    let before: Vec<String> = (0..10).map(|i| format!("m-{i}")).collect();
    let after: Vec<String> = (10..20).map(|i| format!("m-{i}")).collect();
    for payload in &before {
        send(producer.as_ref(), text(payload)).await;
    }
    send(producer.as_ref(), text(POISON)).await;
    for payload in &after {
        send(producer.as_ref(), text(payload)).await;
    }
    let what = format!("concurrency {concurrency}");
    let all_processed =
        eventually(harness.timeout(), || fragile.processed.lock().len() >= 20).await;
    assert!(
        all_processed,
        "{what}: the 20 messages around the panicking one are processed within {:?} \
         (audit A3/A4); processed {:?}, health {:?}, stats {}",
        harness.timeout(),
        fragile.processed.lock(),
        running.health(),
        running.stats()
    );

    let spec = running
        .wiring()
        .input("fragile-in-0")
        .expect("input binding")
        .consumer
        .clone();
    let mut dead_letters = binder
        .dead_letter_consumer(&spec)
        .await
        .expect("bind the dead-letter consumer");
    let delivery = recv(
        dead_letters.as_mut(),
        harness.timeout(),
        &format!("{what}: the panicking message's dead letter"),
    )
    .await;
    let dead = delivery.message().clone();
    delivery.ack().await.expect("ack the dead letter");
    assert_eq!(
        dead.payload(),
        &Bytes::from_static(POISON.as_bytes()),
        "{what}: the dead letter is the panicking message"
    );
    let exception = dead
        .headers()
        .get(names::EXCEPTION_MESSAGE)
        .unwrap_or_else(|| panic!("{what}: no `x-exception-message`: {:?}", dead.headers()));
    assert!(
        exception.contains(PANIC_TEXT),
        "{what}: `x-exception-message` gives the panic message: {exception}"
    );
    assert_eq!(
        fragile.poison_calls.load(Ordering::SeqCst),
        1,
        "{what}: a panic is not retried"
    );

    // Still serving: healthy, and a later message is processed.
    let health = running.health();
    assert!(health.is_up(), "{what}: health after the panic: {health:?}");
    send(producer.as_ref(), text("later")).await;
    wait_until(
        harness.timeout(),
        &format!("{what}: a message sent after the panic is processed"),
        || fragile.processed.lock().iter().any(|p| p == "later"),
    )
    .await;
    running.shutdown().await.expect("shutdown");
    let mut processed = fragile.processed.lock().clone();
    processed.sort_unstable();
    let mut expected: Vec<String> = before.into_iter().chain(after).collect();
    expected.push("later".to_owned());
    expected.sort_unstable();
    assert_eq!(
        processed, expected,
        "{what}: every other message once (no redelivery after a crash)"
    );
}

/// The inputs the stream processor was invoked with, in order.
type Invocations = Arc<Mutex<Vec<String>>>;

/// Three outputs per input; the last is marked for the refusing binder.
async fn split_in_three(
    order: String,
    State(calls): State<Invocations>,
) -> impl Stream<Item = Message<String>> {
    calls.lock().push(order.clone());
    futures::stream::iter((1..=3).map(move |part| {
        let line = Message::new(format!("{order}/{part}")).with_content_type("text/plain");
        if part == 3 {
            line.with_header(REFUSE_HEADER, "once")
        } else {
            line
        }
    }))
}

/// Reads a consumer in the background into `into`, acking.
fn collect_payloads(
    mut consumer: Box<dyn Consumer>,
    into: &Arc<Mutex<Vec<Message>>>,
) -> tokio::task::JoinHandle<()> {
    let into = into.clone();
    tokio::spawn(async move {
        while let Some(delivery) = consumer.recv().await {
            into.lock().push(delivery.message().clone());
            delivery.ack().await.expect("ack");
        }
    })
}

fn payloads(messages: &Mutex<Vec<Message>>) -> Vec<String> {
    messages
        .lock()
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
        .collect()
}

/// Case 22: A stream processor whose last output fails (audit A1). The
/// function returns a stream of three outputs; the third is refused (its
/// confirmation fails while the first two are still pending). The input
/// must not be acknowledged as done: it is redelivered (and the third
/// output eventually sent) or dead-lettered — never acked with an output
/// missing. A second input afterwards goes through whole.
///
/// The refusal comes from wrapping the binder under test
/// (`RefusingBinder`), since no broker refusal works on all three.
pub async fn stream_tail_failure_not_acked<H: BinderHarness>(harness: &H) {
    let inner = harness.binder().await;
    let refusing = Arc::new(RefusingBinder::new(
        inner.clone(),
        1,
        // Long enough that the refusal is known before the first outputs
        // are confirmed, even on a fast broker.
        Duration::from_millis(300),
    ));
    let binder: Arc<dyn Binder> = refusing.clone();
    let input = unique_name("c22");
    let group = case_group(&input, "split");
    let (output, _) = destination_with_groups(&inner, "c22-lines", &["lines"]).await;
    let config = format!(
        r#"
        [bindery]
        default-binder = "under-test"
        [bindings.split-in-0]
        destination = "{input}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.split-in-0.consumer]
        max-attempts = 3
        back-off-initial-interval = "10ms"
        [bindings.split-out-0]
        destination = "{output}"
        content-type = "text/plain"
        "#
    );
    let calls = Invocations::default();
    let running: RunningApp = start_app(
        App::builder()
            .function("split", split_in_three)
            .state(calls.clone()),
        binder.clone(),
        &config,
    )
    .await;
    let lines_consumer = inner
        .consumer(&super::consumer_spec("c22-lines", &output, Some("lines")).prefetch(64))
        .await
        .expect("bind the output consumer");
    let spec = running
        .wiring()
        .input("split-in-0")
        .expect("input binding")
        .consumer
        .clone();
    let dead_consumer = inner
        .dead_letter_consumer(&spec)
        .await
        .expect("bind the dead-letter consumer");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect_payloads(lines_consumer, &lines),
        collect_payloads(dead_consumer, &dead),
    ];
    let producer = inner
        .producer(&ProducerSpec::new("c22-in", &input))
        .await
        .expect("bind producer");
    send(producer.as_ref(), text("order-1")).await;

    let outcome_known = eventually(harness.timeout(), || {
        payloads(&dead).iter().any(|p| p == "order-1")
            || payloads(&lines).iter().any(|p| p == "order-1/3")
    })
    .await;
    assert!(
        outcome_known,
        "order-1 was acknowledged although its last output was refused (audit A1): \
         within {:?} neither the output order-1/3 nor a dead letter arrived; \
         outputs {:?}, dead letters {:?}, invocations {:?}, stats {}",
        harness.timeout(),
        payloads(&lines),
        payloads(&dead),
        calls.lock(),
        running.stats(),
    );
    assert_eq!(refusing.refusals_left(), 0, "the refusal happened");

    // The binding goes on: a second input is sent whole.
    send(producer.as_ref(), text("order-2")).await;
    wait_until(harness.timeout(), "the outputs of order-2", || {
        let seen = payloads(&lines);
        (1..=3).all(|part| seen.contains(&format!("order-2/{part}")))
    })
    .await;
    tokio::time::sleep(harness.quiet_period()).await;
    running.shutdown().await.expect("shutdown");
    for reader in readers {
        reader.abort();
    }

    let seen: BTreeSet<String> = payloads(&lines).into_iter().collect();
    let dead_letters = dead.lock().clone();
    let dead_lettered = dead_letters
        .iter()
        .any(|m| m.payload() == &Bytes::from_static(b"order-1"));
    if dead_lettered {
        // The message's fault path: a dead letter that says why.
        let letter = dead_letters
            .iter()
            .find(|m| m.payload() == &Bytes::from_static(b"order-1"))
            .expect("found above");
        assert!(
            letter
                .headers()
                .get(names::EXCEPTION_MESSAGE)
                .is_some_and(|m| !m.is_empty()),
            "the dead letter says why: {:?}",
            letter.headers()
        );
    } else {
        // The redelivery path: the input ran again and every output went out.
        let invocations = calls.lock().clone();
        assert!(
            invocations.iter().filter(|o| *o == "order-1").count() >= 2,
            "order-1 was invoked again after the refusal (invocations: {invocations:?})"
        );
        for part in 1..=3 {
            assert!(
                seen.contains(&format!("order-1/{part}")),
                "output order-1/{part} after redelivery: {seen:?}"
            );
        }
    }
    assert!(
        dead_letters
            .iter()
            .all(|m| m.payload() == &Bytes::from_static(b"order-1")),
        "only order-1 may be dead-lettered: {:?}",
        payloads(&dead)
    );
}
