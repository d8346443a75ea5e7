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

// ----------------------------------------------------------------------
// Scenarios that need a broker to misbehave: a memory binder wrapped in the
// testkit's fault-injecting binder.

mod faulty {
    use std::sync::Arc;
    use std::time::Duration;

    use bindery::binder::{BinderExt, Consumer, ConsumerSpec, Delivery, Health, ProducerSpec};
    use bindery::memory::MemoryBinder;
    use bindery::message::names;
    use bindery::prelude::*;
    use bindery::{BinderErrorKind, Handler, RunningApp};
    use bindery_testkit::fault::{Faults, FaultyBinder, Times, To};
    use futures::Stream;

    use super::Order;

    /// An app on a memory binder behind a fault injector, with a consumer
    /// of its output destination bound before it starts.
    pub(super) struct Rig {
        pub(super) running: RunningApp,
        pub(super) memory: Arc<MemoryBinder>,
        pub(super) faults: Faults,
        pub(super) outputs: Box<dyn Consumer>,
    }

    impl Rig {
        pub(super) async fn start<H: Handler<M>, M: 'static>(
            name: &str,
            handler: H,
            config: &str,
            faults: Faults,
            output: &str,
        ) -> Rig {
            let memory = Arc::new(MemoryBinder::isolated());
            let outputs = memory
                .consumer(
                    &ConsumerSpec::new("check", output)
                        .group("check")
                        .prefetch(1_000),
                )
                .await
                .unwrap();
            let faulty = FaultyBinder::wrap_arc(memory.clone(), &faults);
            let running = bindery::App::builder()
                .without_registered_functions()
                .function(name, handler)
                .state(faults.clone())
                .binder("memory", faulty)
                .config_toml(config)
                .build()
                .unwrap()
                .start()
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), running.ready())
                .await
                .expect("bound");
            Rig {
                running,
                memory,
                faults,
                outputs,
            }
        }

        pub(super) async fn send(&self, destination: &str, order: Order) {
            let producer = self
                .memory
                .producer(&ProducerSpec::new("test", destination))
                .await
                .unwrap();
            let payload = serde_json::to_vec(&order).unwrap();
            producer
                .send(Message::new(Bytes::from(payload)))
                .await
                .unwrap()
                .await
                .unwrap();
        }

        pub(super) async fn next_output(&mut self) -> Order {
            let delivery: Delivery =
                tokio::time::timeout(Duration::from_secs(10), self.outputs.recv())
                    .await
                    .expect("an output arrives")
                    .expect("consumer open");
            let order = serde_json::from_slice(delivery.message().payload()).unwrap();
            delivery.ack().await.unwrap();
            order
        }

        pub(super) async fn settled(&self, binding: &str, count: u64) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let stats = self.running.stats().binding(binding);
                if stats.acked + stats.dead_lettered + stats.dropped >= count {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{binding}: {stats:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    fn lines_after(faults: Faults, order: Order) -> impl Stream<Item = Order> {
        futures::stream::unfold(0u64, move |i| {
            let faults = faults.clone();
            async move {
                if i == 1 {
                    // The last output's confirmation fails; the first is still pending.
                    faults.fail_confirms(
                        To::destination("lines"),
                        Times::Next(1),
                        BinderErrorKind::Rejected,
                    );
                }
                (i < 2).then(|| {
                    (
                        Order {
                            id: order.id * 10 + i,
                        },
                        i + 1,
                    )
                })
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a01_a_stream_whose_last_output_fails_is_not_acknowledged_as_done() {
        async fn split(order: Order, State(faults): State<Faults>) -> impl Stream<Item = Order> {
            lines_after(faults, order)
        }
        let faults = Faults::new();
        faults.delay_confirms(
            To::destination("lines"),
            Times::Next(1),
            Duration::from_millis(200),
        );
        let config = "[bindings.split-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.split-out-0]\ndestination = \"lines\"\n";
        let rig = Rig::start("split", split, config, faults, "lines").await;
        rig.send("orders", Order { id: 1 }).await;
        rig.settled("split-in-0", 1).await;
        let stats = rig.running.stats().binding("split-in-0");
        assert_eq!(
            (stats.acked, stats.dead_lettered),
            (1, 1),
            "dead-lettered, then acked: {stats:?}"
        );
        let mut dead = rig
            .memory
            .dead_letter_consumer(&ConsumerSpec::new("split-in-0", "orders").group("g"))
            .await
            .unwrap();
        let parked = tokio::time::timeout(Duration::from_secs(5), dead.recv())
            .await
            .unwrap()
            .unwrap();
        let reason = parked
            .message()
            .headers()
            .get(names::EXCEPTION_MESSAGE)
            .unwrap();
        assert!(reason.contains("rejected"), "{reason}");
        rig.running.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a19_a_send_failing_while_the_broker_is_away_uses_no_attempt() {
        async fn forward(order: Order) -> Order {
            order
        }
        let faults = Faults::new();
        faults.fail_sends(
            To::destination("out"),
            Times::Next(2),
            BinderErrorKind::Connection,
        );
        let config = "[bindings.forward-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.forward-in-0.consumer]\nmax-attempts = 1\n[bindings.forward-out-0]\ndestination = \"out\"\n";
        let mut rig = Rig::start("forward", forward, config, faults, "out").await;
        rig.send("orders", Order { id: 5 }).await;
        assert_eq!(rig.next_output().await, Order { id: 5 });
        rig.settled("forward-in-0", 1).await;
        let stats = rig.running.stats().binding("forward-in-0");
        assert_eq!(
            (stats.requeued, stats.acked, stats.dead_lettered),
            (2, 1, 0),
            "{stats:?}"
        );
        assert_eq!(rig.faults.stats_of("out").sends_failed, 2);
        rig.running.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a02_while_dead_letters_cannot_be_published_health_is_down_and_nothing_is_lost() {
        async fn fail_odd(order: Order) -> Result<Order, std::io::Error> {
            if order.id % 2 == 1 {
                return Err(std::io::Error::other("odd order"));
            }
            Ok(order)
        }
        let faults = Faults::new();
        faults.fail_dead_letters(Times::Always, BinderErrorKind::Rejected);
        let config = "[bindings.fail_odd-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.fail_odd-in-0.consumer]\nmax-attempts = 1\n[bindings.fail_odd-out-0]\ndestination = \"out\"\n";
        let mut rig = Rig::start("fail_odd", fail_odd, config, faults, "out").await;
        for id in 1..=4 {
            rig.send("orders", Order { id }).await;
        }
        // Good messages keep flowing behind the one that cannot be parked.
        assert_eq!(rig.next_output().await, Order { id: 2 });
        assert_eq!(rig.next_output().await, Order { id: 4 });
        tokio::time::sleep(Duration::from_millis(700)).await;
        match rig.running.health() {
            Health::Down(reason) => assert!(reason.contains("cannot be dead-lettered"), "{reason}"),
            Health::Up => panic!("health should be down"),
            other => panic!("{other:?}"),
        }
        let stats = rig.faults.stats();
        let attempts = stats.sends_failed + stats.confirms_failed;
        assert!(
            (2..=8).contains(&attempts),
            "retried with back-off, not in a loop: {attempts}"
        );
        rig.faults.clear();
        rig.settled("fail_odd-in-0", 4).await;
        assert_eq!(
            rig.running.stats().binding("fail_odd-in-0").dead_lettered,
            2
        );
        assert_eq!(rig.running.health(), Health::Up);
        rig.running.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a09_only_messages_in_flight_overtake_a_message_handed_back() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        async fn forward(order: Order, State(faults): State<Faults>) -> Order {
            if order.id == 3 {
                ONCE.call_once(|| {
                    // Its confirmation is late, then fails as a lost connection.
                    faults.delay_confirms(
                        To::destination("out"),
                        Times::Next(1),
                        Duration::from_millis(50),
                    );
                    faults.fail_confirms(
                        To::destination("out"),
                        Times::Next(1),
                        BinderErrorKind::Connection,
                    );
                });
            }
            order
        }
        let config = "[bindings.forward-in-0]\ndestination = \"orders\"\ngroup = \"g\"\n[bindings.forward-out-0]\ndestination = \"out\"\n";
        let mut rig = Rig::start("forward", forward, config, Faults::new(), "out").await;
        for id in 1..=6 {
            rig.send("orders", Order { id }).await;
        }
        rig.settled("forward-in-0", 6).await;
        for id in 7..=8 {
            rig.send("orders", Order { id }).await;
        }
        rig.settled("forward-in-0", 8).await;
        let mut order = Vec::new();
        for _ in 0..8 {
            order.push(rig.next_output().await.id);
        }
        // 4-6 were processed while 3's confirmation was in flight; after 3
        // was handed back nothing newer overtook it.
        assert_eq!(order, [1, 2, 4, 5, 6, 3, 7, 8]);
        rig.running.shutdown().await.unwrap();
    }
}
