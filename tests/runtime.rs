//! The runtime: graceful shutdown, bind retries while a broker is away,
//! fatal binder errors, failed outputs, and health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bindery::binder::{Binder, Health, ProducerSpec};
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
        .bind_producer(&ProducerSpec::new("t", "orders"))
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
