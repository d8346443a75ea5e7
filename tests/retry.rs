//! Retry and dead-letter policies on the memory binder, with paused time so
//! back-off is observed exactly and no test sleeps for real.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bindery::prelude::*;
use bindery_testkit::TestApp;
use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
#[error("could not reserve stock")]
struct ReservationFailed(#[source] WarehouseUnavailable);

#[derive(Debug, thiserror::Error)]
#[error("warehouse unavailable")]
struct WarehouseUnavailable(#[source] std::io::Error);

type Attempts = Arc<Mutex<Vec<(u32, Instant)>>>;

async fn reserve(
    _order: String,
    Attempt(attempt): Attempt,
    State(attempts): State<Attempts>,
) -> Result<(), ReservationFailed> {
    attempts.lock().push((attempt, Instant::now()));
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    Err(ReservationFailed(WarehouseUnavailable(io)))
}

fn config(consumer: &str) -> String {
    format!(
        r#"
        [bindings.reserve-in-0]
        destination = "orders"
        group = "stock"
        content-type = "text/plain"
        [bindings.reserve-in-0.consumer]
        {consumer}
        "#
    )
}

async fn start_reserve(consumer: &str) -> (TestApp, Attempts) {
    let attempts = Attempts::default();
    let app = TestApp::builder()
        .function("reserve", reserve)
        .state(attempts.clone())
        .config(&config(consumer))
        .timeout(Duration::from_secs(120))
        .start()
        .await
        .expect("start");
    (app, attempts)
}

#[tokio::test(start_paused = true)]
async fn max_attempts_is_exact_then_the_message_is_dead_lettered() {
    for max_attempts in [1u32, 3, 5] {
        let (mut app, attempts) = start_reserve(&format!("max-attempts = {max_attempts}")).await;
        app.send("orders", "order-1").await.unwrap();
        let dead = app.dead_letter("reserve-in-0").await.unwrap();
        let seen: Vec<u32> = attempts.lock().iter().map(|(a, _)| *a).collect();
        assert_eq!(
            seen,
            (1..=max_attempts).collect::<Vec<_>>(),
            "max-attempts = {max_attempts}"
        );
        assert_eq!(
            dead.headers().get("x-delivery-attempts"),
            Some(max_attempts.to_string().as_str())
        );
        let stats = app.shutdown().await.unwrap();
        assert_eq!(
            stats.binding("reserve-in-0").retried,
            u64::from(max_attempts - 1)
        );
        assert_eq!(stats.binding("reserve-in-0").dead_lettered, 1);
        assert_eq!(
            stats.binding("reserve-in-0").acked,
            1,
            "the original is acknowledged"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn back_off_follows_the_multiplier_up_to_the_cap() {
    let (mut app, attempts) = start_reserve(
        r#"max-attempts = 6
        back-off-initial-interval = "1s"
        back-off-multiplier = 2.0
        back-off-max-interval = "5s""#,
    )
    .await;
    app.send("orders", "order-1").await.unwrap();
    app.dead_letter("reserve-in-0").await.unwrap();
    let times: Vec<Instant> = attempts.lock().iter().map(|(_, t)| *t).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(gaps, [secs(1), secs(2), secs(4), secs(5), secs(5)]);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn spring_defaults_are_three_attempts_one_second_doubling() {
    let (mut app, attempts) = start_reserve("").await;
    app.send("orders", "order-1").await.unwrap();
    app.dead_letter("reserve-in-0").await.unwrap();
    let times: Vec<Instant> = attempts.lock().iter().map(|(_, t)| *t).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [Duration::from_secs(1), Duration::from_secs(2)]);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_dead_letter_carries_every_header_and_the_real_error_chain() {
    let (mut app, _) = start_reserve("max-attempts = 2").await;
    let original = Message::new(Bytes::from_static(b"order-9"))
        .with_header("trace-id", "abc")
        .with_key("customer-1")
        .with_routing_key("orders.new");
    app.send_message("orders", original).await.unwrap();
    let dead = app.dead_letter("reserve-in-0").await.unwrap();
    let headers = dead.headers();
    assert_eq!(&dead.payload()[..], b"order-9");
    assert_eq!(dead.key().map(|k| &k[..]), Some(&b"customer-1"[..]));
    assert_eq!(dead.routing_key(), Some("orders.new"));
    assert_eq!(headers.get("trace-id"), Some("abc"));
    assert_eq!(
        headers.get("x-exception-message"),
        Some("could not reserve stock")
    );
    assert_eq!(
        headers.get("x-exception-stacktrace"),
        Some(
            "could not reserve stock\ncaused by: warehouse unavailable\ncaused by: connection refused"
        )
    );
    assert_eq!(
        headers.get("x-exception-fqcn"),
        Some("retry::ReservationFailed")
    );
    assert_eq!(headers.get("x-original-destination"), Some("orders"));
    assert_eq!(headers.get("x-original-group"), Some("stock"));
    assert_eq!(headers.get("x-delivery-attempts"), Some("2"));
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_is_not_retried() {
    type Calls = Arc<Mutex<u32>>;
    async fn reject(_order: String, State(calls): State<Calls>) -> Result<(), FunctionError> {
        *calls.lock() += 1;
        Err(FunctionError::non_retryable(std::io::Error::other(
            "malformed order",
        )))
    }
    let calls = Calls::default();
    let mut app = TestApp::builder()
        .function("reject", reject)
        .state(calls.clone())
        .config("[bindings.reject-in-0]\ndestination = \"orders\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n[bindings.reject-in-0.consumer]\nmax-attempts = 5\n")
        .start()
        .await
        .unwrap();
    app.send("orders", "x").await.unwrap();
    let dead = app.dead_letter("reject-in-0").await.unwrap();
    assert_eq!(*calls.lock(), 1);
    assert_eq!(dead.headers().get("x-delivery-attempts"), Some("1"));
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_dead_letter_off_a_failed_message_is_dropped_and_later_ones_flow() {
    let (mut app, attempts) = start_reserve("max-attempts = 2\n dead-letter = false").await;
    app.send("orders", "order-1").await.unwrap();
    app.send("orders", "order-2").await.unwrap();
    app.settled("reserve-in-0", 0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.stats().binding("reserve-in-0").dropped < 2 {
        assert!(Instant::now() < deadline, "both dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(attempts.lock().len(), 4, "two attempts each");
    assert!(app.app().wiring().input("reserve-in-0").is_some());
    let binder = app.binder().clone();
    assert_eq!(
        binder.broker().queue_depth("orders.stock.dlq"),
        None,
        "no dead-letter queue was made"
    );
    assert_eq!(
        binder.broker().queue_depth("orders.stock"),
        Some(0),
        "dropped messages are gone"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_back_off_hands_the_message_back() {
    let (mut app, attempts) =
        start_reserve("max-attempts = 3\nback-off-initial-interval = \"10s\"").await;
    app.send("orders", "order-1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while attempts.lock().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let binder = app.binder().clone();
    let stats = app.shutdown().await.unwrap();
    assert_eq!(stats.binding("reserve-in-0").requeued, 1);
    assert_eq!(stats.binding("reserve-in-0").dead_lettered, 0);
    assert_eq!(
        binder.broker().queue_depth("orders.stock"),
        Some(1),
        "the message waits for the next run"
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
}

type Processed = Arc<Mutex<BTreeMap<u64, u32>>>;

async fn process(order: Order, State(processed): State<Processed>) {
    *processed.lock().entry(order.id).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_valid_and_one_thousand_undecodable_messages() {
    const VALID: u64 = 10_000;
    const INVALID: u64 = 1_000;
    let processed = Processed::default();
    let mut app = TestApp::builder()
        .function("process", process)
        .state(processed.clone())
        .config("[bindings.process-in-0]\ndestination = \"orders\"\ngroup = \"billing\"\n[bindings.process-in-0.consumer]\nprefetch = 64\n")
        .timeout(Duration::from_secs(30))
        .start()
        .await
        .unwrap();
    let mut bad_payloads = BTreeSet::new();
    let mut id = 0;
    for n in 0..VALID + INVALID {
        // Every eleventh message is undecodable, spread through the stream.
        let message = if n % 11 == 10 {
            let payload = format!("{{\"id\": oops {n}");
            bad_payloads.insert(payload.clone());
            Message::new(Bytes::from(payload))
        } else {
            id += 1;
            Message::new(Bytes::from(format!(r#"{{"id":{id}}}"#)))
        };
        app.send_message("orders", message.with_content_type("application/json"))
            .await
            .unwrap();
    }
    assert_eq!(id, VALID);
    assert_eq!(bad_payloads.len() as u64, INVALID);
    app.settled("process-in-0", VALID + INVALID).await.unwrap();
    let mut dead = BTreeSet::new();
    for _ in 0..INVALID {
        let message = app.dead_letter("process-in-0").await.unwrap();
        assert_eq!(message.headers().get("x-delivery-attempts"), Some("1"));
        dead.insert(String::from_utf8(message.payload().to_vec()).unwrap());
    }
    let stats = app.shutdown().await.unwrap();
    let processed = processed.lock();
    assert_eq!(
        processed.len() as u64,
        VALID,
        "every valid message processed"
    );
    assert!(
        processed.values().all(|count| *count == 1),
        "none processed twice"
    );
    assert_eq!(
        processed.keys().copied().collect::<Vec<_>>(),
        (1..=VALID).collect::<Vec<_>>()
    );
    assert_eq!(
        dead, bad_payloads,
        "every undecodable message dead-lettered"
    );
    let input = stats.binding("process-in-0");
    assert_eq!(
        (
            input.received,
            input.acked,
            input.dead_lettered,
            input.retried
        ),
        (VALID + INVALID, VALID + INVALID, INVALID, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_brings_dead_letters_back_once_the_bug_is_fixed() {
    #[derive(Clone, Default)]
    struct Bug(Arc<AtomicBool>);
    type Seen = Arc<Mutex<Vec<(u64, bool)>>>;
    async fn bill(
        order: Order,
        headers: Headers,
        State(bug): State<Bug>,
        State(seen): State<Seen>,
    ) -> Result<(), std::io::Error> {
        if bug.0.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("tax table missing"));
        }
        seen.lock()
            .push((order.id, headers.contains("x-exception-message")));
        Ok(())
    }
    let bug = Bug::default();
    bug.0.store(true, Ordering::SeqCst);
    let seen = Seen::default();
    let mut app = TestApp::builder()
        .function("bill", bill)
        .state(bug.clone())
        .state(seen.clone())
        .config("[bindings.bill-in-0]\ndestination = \"orders\"\ngroup = \"billing\"\n[bindings.bill-in-0.consumer]\nmax-attempts = 1\n")
        .start()
        .await
        .unwrap();
    for id in 1..=5 {
        app.send("orders", Order { id }).await.unwrap();
    }
    app.settled("bill-in-0", 5).await.unwrap();
    assert_eq!(app.stats().binding("bill-in-0").dead_lettered, 5);
    assert!(seen.lock().is_empty());

    bug.0.store(false, Ordering::SeqCst);
    let moved = app.redrive("bill-in-0", None).await.unwrap();
    assert_eq!(moved, 5);
    app.settled("bill-in-0", 10).await.unwrap();
    let mut ids: Vec<u64> = seen.lock().iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert!(
        seen.lock().iter().all(|(_, had_exception)| !had_exception),
        "exception headers removed"
    );
    assert_eq!(
        app.redrive("bill-in-0", None).await.unwrap(),
        0,
        "nothing left"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_honours_its_limit() {
    async fn fail(_order: Order) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("always"))
    }
    let mut app = TestApp::builder()
        .function("fail", fail)
        .config("[bindings.fail-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.fail-in-0.consumer]\nmax-attempts = 1\n")
        .start()
        .await
        .unwrap();
    for id in 1..=4 {
        app.send("orders", Order { id }).await.unwrap();
    }
    app.settled("fail-in-0", 4).await.unwrap();
    assert_eq!(app.redrive("fail-in-0", Some(3)).await.unwrap(), 3);
    app.shutdown().await.unwrap();
}
