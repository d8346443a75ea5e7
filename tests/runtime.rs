//! The runtime: graceful shutdown, bind retries while a broker is away,
//! fatal binder errors, failed outputs, and health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bindery::binder::BinderExt;
use bindery::binder::{Health, ProducerSpec};
use bindery::memory::MemoryBinder;
use bindery::prelude::*;
use bindery::{BinderErrorKind, Error};

use bindery_testkit::TestApp;
use bindery_testkit::fault::{Bind, Failure, Faults, FaultyBinder, Times, To};
use tokio::sync::Notify;

async fn sink(_text: String) {}

const SINK_CONFIG: &str = "[bindings.sink-in-0]\ndestination = \"orders\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n";

#[tokio::test(start_paused = true)]
async fn a_broker_that_is_down_at_start_is_retried_until_it_comes() {
    // The first three consumer binds fail as a broker that is not up yet.
    let faults = Faults::new();
    faults.fail_binds(
        Bind::Consumer,
        To::any(),
        Times::Next(3),
        Failure::new(
            BinderErrorKind::Connection,
            "connection refused (127.0.0.1:5672)",
        ),
    );
    let binder = FaultyBinder::wrap(MemoryBinder::isolated(), &faults);
    let app = App::builder()
        .without_registered_functions()
        .function("sink", sink)
        .binder("memory", binder.clone())
        .config_toml(SINK_CONFIG)
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap();
    let running = app
        .start()
        .await
        .expect("the app starts although the broker is down");
    assert!(!running.health().is_up());
    tokio::time::timeout(Duration::from_secs(60), running.ready())
        .await
        .expect("bound once the broker answers");
    assert_eq!(running.health(), Health::Up);
    assert_eq!(faults.stats().binds_failed, 3);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_permanent_binder_error_stops_the_app_with_that_error() {
    let faults = Faults::new();
    faults.fail_binds(
        Bind::Consumer,
        To::any(),
        Times::Always,
        Failure::new(
            BinderErrorKind::Provisioning,
            "queue declared with other arguments",
        ),
    );
    let app = App::builder()
        .without_registered_functions()
        .function("sink", sink)
        .binder(
            "memory",
            FaultyBinder::wrap(MemoryBinder::isolated(), &faults),
        )
        .config_toml(SINK_CONFIG)
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), app.run())
        .await
        .expect("run returns")
        .unwrap_err();
    assert!(matches!(error, Error::Binder(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("queue declared with other arguments")
    );
}

#[tokio::test]
async fn shutdown_finishes_messages_in_flight_and_acks_them() {
    #[derive(Clone, Default)]
    struct Gate(Arc<Notify>, Arc<AtomicU32>);
    async fn slow(_text: String, State(gate): State<Gate>) {
        gate.0.notify_one();
        tokio::time::sleep(Duration::from_millis(300)).await;
        gate.1.fetch_add(1, Ordering::SeqCst);
    }
    let gate = Gate::default();
    let mut app = TestApp::builder()
        .function("slow", slow)
        .state(gate.clone())
        .config("[bindings.slow-in-0]\ndestination = \"orders\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n")
        .start()
        .await
        .unwrap();
    app.send("orders", "one").await.unwrap();
    gate.0.notified().await;
    let stats = app.shutdown().await.unwrap();
    assert_eq!(gate.1.load(Ordering::SeqCst), 1, "the function finished");
    assert_eq!(
        stats.binding("slow-in-0").acked,
        1,
        "and its message was acknowledged"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_after_the_timeout_and_leaves_the_message_to_the_broker() {
    async fn stuck(_text: String) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let binder = Arc::new(MemoryBinder::isolated());
    let app = App::builder()
        .without_registered_functions()
        .function("stuck", stuck)
        .binder("memory", binder.clone())
        .config_toml("[bindery]\nshutdown-timeout = \"2s\"\n[bindings.stuck-in-0]\ndestination = \"orders\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n")
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap();
    let running = app.start().await.unwrap();
    running.ready().await;
    let producer = binder
        .producer(&ProducerSpec::new("t", "orders"))
        .await
        .unwrap();
    producer
        .send(Message::new(Bytes::from_static(b"x")))
        .await
        .unwrap()
        .await
        .unwrap();
    while running.stats().binding("stuck-in-0").received == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let error = running.shutdown().await.unwrap_err();
    assert!(matches!(error, Error::ShutdownTimeout(d) if d == Duration::from_secs(2)));
    assert_eq!(
        binder.broker().queue_depth("orders.g"),
        Some(1),
        "unacknowledged, so back in its queue"
    );
}

#[tokio::test]
async fn an_unroutable_output_is_dead_lettered_not_looped() {
    async fn forward(text: String) -> String {
        text
    }
    // Nobody consumes `nowhere`, so every output is unroutable.
    let app = App::builder()
        .without_registered_functions()
        .function("forward", forward)
        .binder("memory", Arc::new(MemoryBinder::isolated()))
        .config_toml("[bindings.forward-in-0]\ndestination = \"orders\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n[bindings.forward-out-0]\ndestination = \"nowhere\"\n")
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap();
    let running = app.start().await.unwrap();
    running.ready().await;
    running
        .sender()
        .send_message(
            "orders",
            Message::new("hello".to_string()).with_content_type("text/plain"),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while running.stats().binding("forward-in-0").dead_lettered == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead-lettered: {:?}",
            running.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = running.shutdown().await.unwrap();
    assert_eq!(
        stats.binding("forward-in-0").retried,
        0,
        "unroutable is not retried"
    );
    assert_eq!(stats.binding("forward-in-0").acked, 1);
}

/// How many times a message goes round the self-feeding pipeline.
const LAST_HOP: u32 = 5;

/// Messages that made every hop.
#[derive(Clone, Default)]
struct Finished(Arc<AtomicU32>);

/// Publishes to its own input until the message has made `LAST_HOP` hops.
async fn hop(n: u32, State(finished): State<Finished>) -> Option<u32> {
    // Some work, during which a producer outside fills the slot this
    // delivery freed in the queue.
    tokio::time::sleep(Duration::from_millis(1)).await;
    if n >= LAST_HOP {
        finished.0.fetch_add(1, Ordering::SeqCst);
        return None;
    }
    Some(n + 1)
}

/// Runs `functions` (name, input destination, output destination), each
/// consuming in group `g` with prefetch 1, on a memory binder whose queues
/// hold 2 messages and reject after 100 ms. Seeds `SEEDS` messages into
/// the inputs faster than the cycle drains, then checks that every seed
/// made every hop or was dead-lettered, with nothing lost or left behind.
async fn run_full_cycle(broker_name: &str, functions: &[(&str, &str, &str)]) {
    const SEEDS: u64 = 8;
    let definition: Vec<&str> = functions.iter().map(|(name, _, _)| *name).collect();
    let mut config = format!(
        "[bindery]\ndefinition = \"{}\"\n[binders.mem]\ntype = \"memory\"\nbroker = \"{broker_name}\"\nqueue-capacity = 2\npublish-timeout = \"100ms\"\n",
        definition.join(";")
    );
    let finished = Finished::default();
    let mut builder = App::builder()
        .without_registered_functions()
        .state(finished.clone());
    for (name, input, output) in functions {
        builder = builder.function(name, hop);
        config.push_str(&format!(
            "[bindings.{name}-in-0]\ndestination = \"{input}\"\ngroup = \"g\"\n[bindings.{name}-in-0.consumer]\nprefetch = 1\n[bindings.{name}-out-0]\ndestination = \"{output}\"\n"
        ));
    }
    let app = builder
        .config_toml(&config)
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap();
    let running = app.start().await.unwrap();
    running.ready().await;

    // Seeds come from outside, into every input in turn, faster than the
    // cycle drains, filling it.
    let broker = bindery::memory::Broker::shared(broker_name);
    let seeder =
        MemoryBinder::new(broker.clone(), 2).with_publish_timeout(Duration::from_millis(100));
    let mut seeds = Vec::new();
    for (_, input, _) in functions {
        let spec = ProducerSpec::new("seed", *input);
        seeds.push(seeder.producer(&spec).await.unwrap());
    }
    let seeding = tokio::spawn(async move {
        for n in 0..SEEDS as usize {
            let seed = Message::new(Bytes::from_static(b"0")).with_content_type("application/json");
            // A full queue rejects the seed too; offer it again shortly.
            while seeds[n % seeds.len()].send(seed.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    let dead_lettered = || -> u64 {
        functions
            .iter()
            .map(|(name, _, _)| {
                running
                    .stats()
                    .binding(&format!("{name}-in-0"))
                    .dead_lettered
            })
            .sum()
    };
    let accounted = || u64::from(finished.0.load(Ordering::SeqCst)) + dead_lettered();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while accounted() < SEEDS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cycle stalled: {} finished, {:?}",
            finished.0.load(Ordering::SeqCst),
            running.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seeding.await.unwrap();
    assert_eq!(
        accounted(),
        SEEDS,
        "every seed made every hop or was dead-lettered"
    );
    assert!(
        finished.0.load(Ordering::SeqCst) >= 1,
        "the cycle really went round"
    );
    let mut parked = 0;
    for (_, input, _) in functions {
        assert_eq!(
            broker.queue_depth(&format!("{input}.g")),
            Some(0),
            "nothing left behind"
        );
        parked += broker
            .queue_depth(&format!("{input}.g.dlq"))
            .unwrap_or_default();
    }
    assert_eq!(
        parked as u64,
        dead_lettered(),
        "what a full queue rejected is kept in a dead-letter queue"
    );
    running.shutdown().await.unwrap();
}

/// Audit A22: on the memory binder a function publishing to its own input
/// blocked on its own full queue, which only it drains: a deadlock (with an
/// unlimited wait this test stalls with one message received). Now the full
/// queue rejects what it cannot take within `publish-timeout`, that input is
/// dead-lettered, and the pipeline runs to the end.
#[tokio::test(start_paused = true)]
async fn a22_a_self_feeding_pipeline_on_a_full_queue_runs_to_completion() {
    run_full_cycle("a22-self-feeding", &[("hop", "loop", "loop")]).await;
}

/// Audit A22, the other cycle: two functions feeding each other, each
/// blocked on the other's full queue.
#[tokio::test(start_paused = true)]
async fn a22_two_functions_feeding_each_other_on_full_queues_run_to_completion() {
    run_full_cycle(
        "a22-ping-pong",
        &[("ping", "ping", "pong"), ("pong", "pong", "ping")],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_shows_in_health_and_holds_messages_until_it_is_back() {
    #[derive(Clone, Default)]
    struct Seen(Arc<AtomicU32>);
    async fn count(_text: String, State(seen): State<Seen>) {
        seen.0.fetch_add(1, Ordering::SeqCst);
    }
    let seen = Seen::default();
    let memory = Arc::new(MemoryBinder::isolated());
    let faults = Faults::new();
    let app = App::builder()
        .without_registered_functions()
        .function("count", count)
        .state(seen.clone())
        .binder("memory", FaultyBinder::wrap_arc(memory.clone(), &faults))
        .config_toml("[bindings.count-in-0]\ndestination = \"orders\"\ngroup = \"g\"\ncontent-type = \"text/plain\"\n")
        .env(Vec::<(String, String)>::new())
        .build()
        .unwrap();
    let running = app.start().await.unwrap();
    running.ready().await;

    faults.lose_connection();
    assert!(!running.health().is_up(), "{:?}", running.health());
    // Another client of the broker still publishes; the app must not see
    // it until its own connection is back.
    let producer = memory
        .producer(&ProducerSpec::new("t", "orders"))
        .await
        .unwrap();
    producer
        .send(Message::new(Bytes::from_static(b"x")).with_content_type("text/plain"))
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(seen.0.load(Ordering::SeqCst), 0);
    assert_eq!(memory.broker().queue_depth("orders.g"), Some(1), "kept");

    faults.restore_connection();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while faults.stats_of("orders").acks == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            running.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.0.load(Ordering::SeqCst), 1);
    assert_eq!(running.health(), Health::Up);
    running.shutdown().await.unwrap();
}
