//! Regression tests for the delivery audit (`a03_…`, `a11_…`): each drives a
//! whole app on the memory binder through the scenario of its finding.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bindery::binder::Health;
use bindery::message::names;
use bindery::prelude::*;
use bindery_testkit::TestApp;
use futures::Stream;
use parking_lot::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Order {
    id: u64,
}

type Seen = Arc<Mutex<Vec<u64>>>;

async fn explode_on_seven(order: Order, State(seen): State<Seen>) {
    let quantity = (order.id != 7).then_some(1u32);
    quantity.expect("order 7 has no quantity");
    seen.lock().push(order.id);
}

fn panicking_config(concurrency: u32) -> String {
    format!(
        "[bindings.explode_on_seven-in-0]\ndestination = \"orders\"\ngroup = \"billing\"\n\
         [bindings.explode_on_seven-in-0.consumer]\nmax-attempts = 3\nback-off-initial-interval = \"10ms\"\nconcurrency = {concurrency}\n"
    )
}

async fn a_panic_is_dead_lettered_and_the_app_keeps_running(concurrency: u32) {
    let seen = Seen::default();
    let mut app = TestApp::builder()
        .function("explode_on_seven", explode_on_seven)
        .state(seen.clone())
        .config(&panicking_config(concurrency))
        .start()
        .await
        .unwrap();
    for id in 1..=20 {
        app.send("orders", Order { id }).await.unwrap();
    }
    app.settled("explode_on_seven-in-0", 20).await.unwrap();
    let dead = app.dead_letter("explode_on_seven-in-0").await.unwrap();
    let reason = dead.headers().get(names::EXCEPTION_MESSAGE).unwrap();
    assert!(reason.contains("order 7 has no quantity"), "{reason}");
    assert_eq!(
        dead.headers().get(names::DELIVERY_ATTEMPTS),
        Some("1"),
        "a panic is not retried"
    );
    assert_eq!(app.app().health(), Health::Up);
    // Still serving after the panic.
    app.send("orders", Order { id: 21 }).await.unwrap();
    app.settled("explode_on_seven-in-0", 21).await.unwrap();
    let mut ids = seen.lock().clone();
    ids.sort_unstable();
    let expected: Vec<u64> = (1..=21).filter(|id| *id != 7).collect();
    assert_eq!(ids, expected);
    let stats = app.shutdown().await.unwrap();
    assert_eq!(stats.binding("explode_on_seven-in-0").dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a03_a_panicking_function_is_dead_lettered_and_the_app_keeps_serving() {
    a_panic_is_dead_lettered_and_the_app_keeps_running(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a04_with_concurrency_a_panic_neither_stops_the_binding_nor_hides_in_health() {
    a_panic_is_dead_lettered_and_the_app_keeps_running(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a11_redrive_ends_while_the_function_still_fails() {
    async fn fail(_order: Order) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("still broken"))
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
    let moved = tokio::time::timeout(Duration::from_secs(30), app.redrive("fail-in-0", None))
        .await
        .expect("redrive ends")
        .unwrap();
    assert!(
        (4..8).contains(&moved),
        "moved {moved}: each dead letter once, not in a loop"
    );
    // Nothing is lost: every message is parked again.
    let mut parked: Vec<u64> = Vec::new();
    for _ in 0..4 {
        let dead = app.dead_letter("fail-in-0").await.unwrap();
        parked.push(serde_json::from_slice::<Order>(dead.payload()).unwrap().id);
    }
    parked.sort_unstable();
    assert_eq!(parked, [1, 2, 3, 4]);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a13_an_invocation_past_its_timeout_is_retried_then_dead_lettered() {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    async fn hang(_order: Order) {
        CALLS.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let mut app = TestApp::builder()
        .function("hang", hang)
        .config("[bindings.hang-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.hang-in-0.consumer]\nmax-attempts = 2\nback-off-initial-interval = \"1s\"\ninvocation-timeout = \"30s\"\n")
        .timeout(Duration::from_secs(300))
        .start()
        .await
        .unwrap();
    app.send("orders", Order { id: 1 }).await.unwrap();
    let dead = app.dead_letter("hang-in-0").await.unwrap();
    let reason = dead.headers().get(names::EXCEPTION_MESSAGE).unwrap();
    assert!(reason.contains("invocation-timeout"), "{reason}");
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a20_shutdown_with_concurrency_does_not_process_what_is_still_queued() {
    async fn slow(order: Order, State(seen): State<Seen>) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen.lock().push(order.id);
    }
    let seen = Seen::default();
    let mut app = TestApp::builder()
        .function("slow", slow)
        .state(seen.clone())
        .config("[bindings.slow-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.slow-in-0.consumer]\nconcurrency = 2\nprefetch = 64\n")
        .start()
        .await
        .unwrap();
    for id in 1..=40 {
        app.send("orders", Order { id }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let stats = app.shutdown().await.unwrap();
    // The two lanes finish the calls they are in; the rest goes back.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(seen.lock().len() <= 4, "processed {:?}", seen.lock());
    assert_eq!(stats.binding("slow-in-0").acked as usize, seen.lock().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a12_a_source_call_in_flight_at_shutdown_finishes_and_is_sent() {
    static CLAIMED: AtomicU32 = AtomicU32::new(0);
    static STARTED: AtomicBool = AtomicBool::new(false);
    async fn claim() -> u32 {
        STARTED.store(true, Ordering::SeqCst);
        // Claims a row, then takes a while to read it.
        let id = CLAIMED.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        id
    }
    let app = TestApp::builder()
        .function("claim", claim)
        .config("[bindery.poller]\nfixed-delay = \"10s\"\n[bindings.claim-out-0]\ndestination = \"claims\"\n[bindings.claim-out-0.producer]\nrequired-groups = [\"g\"]\n")
        .start()
        .await
        .unwrap();
    while !STARTED.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let binder = app.binder().clone();
    app.shutdown().await.unwrap();
    let sent = binder
        .broker()
        .queue_depth("claims.g")
        .expect("declared by required-groups");
    assert_eq!(sent, 1);
    assert_eq!(
        CLAIMED.load(Ordering::SeqCst),
        1,
        "every claimed row was sent"
    );
}

fn lines(count: u64) -> impl Stream<Item = Order> {
    futures::stream::iter((0..count).map(|id| Order { id }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a15_a_long_stream_of_outputs_is_sent_in_order_and_the_input_acked_after() {
    async fn split(order: Order) -> impl Stream<Item = Order> {
        lines(order.id)
    }
    let mut app = TestApp::builder()
        .function("split", split)
        .config("[bindings.split-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.split-in-0.consumer]\nprefetch = 1\n[bindings.split-out-0]\ndestination = \"lines\"\n")
        .start()
        .await
        .unwrap();
    app.send("orders", Order { id: 5_000 }).await.unwrap();
    app.settled("split-in-0", 1).await.unwrap();
    let stats = app.stats();
    assert_eq!(stats.binding("split-out-0").sent, 5_000);
    assert_eq!(stats.binding("split-in-0").acked, 1);
    for expected in 0..5_000u64 {
        let line: Order = app.receive_json("lines").await.unwrap();
        assert_eq!(line.id, expected);
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a21_a_value_that_serializes_to_null_is_sent_not_filtered() {
    #[derive(Serialize)]
    struct Done;
    async fn finish(_order: Order) -> Done {
        Done
    }
    let mut app = TestApp::builder()
        .function("finish", finish)
        .config("[bindings.finish-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.finish-out-0]\ndestination = \"done\"\n")
        .start()
        .await
        .unwrap();
    app.send("orders", Order { id: 1 }).await.unwrap();
    let done = app.receive("done").await.unwrap();
    assert_eq!(&done.payload()[..], b"null");
    assert_eq!(app.stats().binding("finish-in-0").filtered, 0);
    app.shutdown().await.unwrap();
}
