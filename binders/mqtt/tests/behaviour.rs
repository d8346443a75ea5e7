//! The MQTT binder's own cases against real Mosquitto brokers: the shared
//! one at `BINDERY_TEST_MQTT_URL` and private ones the tests kill with
//! SIGKILL. Start the shared one with `scripts/brokers/ensure-mosquitto.sh`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bindery::binder::{Binder, BinderExt, Consumer, ConsumerSpec, Delivery, ProducerSpec};
use bindery::mqtt::{MqttBinder, MqttSettings};
use bindery::{BinderErrorKind, Message};
use bindery_testkit::unique_name;
use bytes::Bytes;
use support::{PrivateBroker, connected_binder, connected_binder_at};

fn numbered(i: usize) -> Message {
    Message::new(Bytes::from(i.to_string())).with_content_type("text/plain")
}

fn number_of(delivery: &Delivery) -> usize {
    std::str::from_utf8(delivery.message().payload())
        .unwrap()
        .parse()
        .unwrap()
}

async fn next(consumer: &mut dyn Consumer, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, consumer.recv())
        .await
        .ok()
        .flatten()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The broker is killed with SIGKILL while a group consumes a backlog and
/// started again with its data; sends made while it is away wait for it.
/// Every message arrives (duplicates are allowed and printed), health goes
/// down and comes back, and every send is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_and_restarted_loses_nothing() {
    bindery_testkit::init_logging();
    let mut broker = PrivateBroker::start();
    let binder = connected_binder_at(&broker.url(), "restart").await;
    let destination = unique_name("restart");
    let group = format!("{destination}.g");
    let producer = binder
        .producer(&ProducerSpec::new("restart-out", &destination).required_groups([group.clone()]))
        .await
        .unwrap();
    const BEFORE: usize = 1000;
    const DURING: usize = 200;
    let mut confirmations = Vec::new();
    for i in 0..BEFORE {
        confirmations.push(producer.send(numbered(i)).await.unwrap());
    }
    for confirmation in confirmations {
        confirmation.await.expect("confirmed before the kill");
    }
    // Mosquitto saves its store after changes (autosave_on_changes); give
    // the last save a moment, as the kill would otherwise race it.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let spec = ConsumerSpec::new("restart-in", &destination)
        .group(&group)
        .prefetch(50);
    let mut consumer = binder.consumer(&spec).await.unwrap();
    let mut arrivals: BTreeMap<usize, usize> = BTreeMap::new();
    while arrivals.len() < 300 {
        let delivery = next(consumer.as_mut(), Duration::from_secs(10))
            .await
            .expect("backlog before the kill");
        *arrivals.entry(number_of(&delivery)).or_default() += 1;
        delivery.ack().await.unwrap();
    }

    broker.kill();
    wait_for("health down", Duration::from_secs(10), || {
        !binder.health().is_up()
    })
    .await;
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            // As the runtime does: a send that fails transiently is sent
            // again. Right after the restart a send may also be unroutable
            // (PUBACK "no matching subscribers"): Mosquitto 2.0 does not
            // restore shared subscriptions from its store, so the group has
            // none until its members reconnect and subscribe again. The
            // broker said so; the message was not lost silently. Count
            // those and send them again.
            let mut unroutable = 0usize;
            for i in BEFORE..BEFORE + DURING {
                loop {
                    let confirmed = match producer.send(numbered(i)).await {
                        Ok(confirmation) => confirmation.await,
                        Err(error) => Err(error),
                    };
                    match confirmed {
                        Ok(()) => break,
                        Err(error) if error.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(error) if error.kind() == BinderErrorKind::Unroutable => {
                            unroutable += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(error) => panic!("send {i} failed for good: {error:#}"),
                    }
                }
            }
            unroutable
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| broker.restart());

    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.len() < BEFORE + DURING {
        assert!(
            Instant::now() < deadline,
            "after the restart: {} of {} arrived",
            arrivals.len(),
            BEFORE + DURING
        );
        if let Some(delivery) = next(consumer.as_mut(), Duration::from_secs(1)).await {
            *arrivals.entry(number_of(&delivery)).or_default() += 1;
            // A delivery of the killed connection cannot be acked; the
            // broker delivers it again on the new one.
            let _ = delivery.ack().await;
        }
    }
    let unroutable = tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("sends confirmed after the restart")
        .unwrap();
    wait_for("health up", Duration::from_secs(10), || {
        binder.health().is_up()
    })
    .await;
    let all: BTreeSet<usize> = arrivals.keys().copied().collect();
    assert_eq!(all, (0..BEFORE + DURING).collect(), "every message arrived");
    let duplicates: usize = arrivals.values().map(|c| c - 1).sum();
    println!(
        "broker SIGKILL: 0 lost, {duplicates} delivered twice, \
         {unroutable} sends refused as unroutable while the group resubscribed"
    );
}

/// A member dropped with messages unacknowledged: the member that takes
/// its slot (its persistent session) receives them again, marked
/// redelivered; the other member keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_of_a_dropped_member_go_to_the_member_that_takes_its_slot() {
    bindery_testkit::init_logging();
    let binder = connected_binder("handover").await;
    let destination = unique_name("handover");
    let group = format!("{destination}.g");
    let producer = binder
        .producer(&ProducerSpec::new("handover-out", &destination).required_groups([group.clone()]))
        .await
        .unwrap();
    let spec = ConsumerSpec::new("handover-in", &destination)
        .group(&group)
        .prefetch(20);
    let mut first = binder.consumer(&spec).await.unwrap();
    let mut second = binder.consumer(&spec).await.unwrap();
    const COUNT: usize = 20;
    for i in 0..COUNT {
        producer.send(numbered(i)).await.unwrap().await.unwrap();
    }
    let mut held = Vec::new();
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() + acked.len() < COUNT {
        assert!(
            Instant::now() < deadline,
            "{} of {COUNT}",
            held.len() + acked.len()
        );
        if let Some(delivery) = next(first.as_mut(), Duration::from_millis(50)).await {
            held.push(delivery);
        }
        if let Some(delivery) = next(second.as_mut(), Duration::from_millis(50)).await {
            acked.insert(number_of(&delivery));
            delivery.ack().await.unwrap();
        }
    }
    assert!(
        !held.is_empty(),
        "the broker shares the group's messages between members"
    );
    let held_numbers: BTreeSet<usize> = held.iter().map(number_of).collect();
    drop(held);
    drop(first);
    let mut successor = binder.consumer(&spec).await.unwrap();
    let mut again = BTreeSet::new();
    while again.len() < held_numbers.len() {
        let delivery = next(successor.as_mut(), Duration::from_secs(10))
            .await
            .expect("the dropped member's messages come again");
        assert!(delivery.info().redelivered, "marked redelivered");
        again.insert(number_of(&delivery));
        delivery.ack().await.unwrap();
    }
    assert_eq!(again, held_numbers);
    assert!(
        next(successor.as_mut(), Duration::from_millis(700))
            .await
            .is_none()
    );
    assert!(
        next(second.as_mut(), Duration::from_millis(100))
            .await
            .is_none()
    );
    let all: BTreeSet<usize> = acked.union(&again).copied().collect();
    assert_eq!(all, (0..COUNT).collect());
}

/// A nack with requeue hands the message out again on the same consumer:
/// MQTT cannot give one message back to the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_message_comes_again_on_the_same_consumer() {
    let binder = connected_binder("requeue").await;
    assert!(!binder.capabilities().requeue_single);
    let destination = unique_name("requeue");
    let group = format!("{destination}.g");
    let producer = binder
        .producer(&ProducerSpec::new("requeue-out", &destination).required_groups([group.clone()]))
        .await
        .unwrap();
    let mut consumer = binder
        .consumer(&ConsumerSpec::new("requeue-in", &destination).group(&group))
        .await
        .unwrap();
    producer.send(numbered(7)).await.unwrap().await.unwrap();
    let first = next(consumer.as_mut(), Duration::from_secs(10))
        .await
        .unwrap();
    first.nack(true).await.unwrap();
    let again = next(consumer.as_mut(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(number_of(&again), 7);
    assert!(again.info().redelivered);
    again.ack().await.unwrap();
}

/// Nothing listens: connecting fails as a transient connection error, and
/// neither the error nor the binder's Debug output shows the password.
#[tokio::test]
async fn an_unreachable_broker_fails_as_transient_without_showing_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("mqtt://app:s3cret-pw@127.0.0.1:{port}");
    let mut settings = MqttSettings::new(&url).client_id_prefix(unique_name("down"));
    settings.connect_timeout = Duration::from_secs(1);
    let binder = MqttBinder::new("mqtt", settings).unwrap();
    assert!(!format!("{binder:?}").contains("s3cret-pw"), "{binder:?}");
    let error = binder.connect().await.unwrap_err();
    assert!(error.is_transient(), "{error:#}");
    assert!(!format!("{error:#}").contains("s3cret-pw"), "{error:#}");
    assert!(!binder.health().is_up(), "down while the broker is away");
    let spec = ConsumerSpec::new("down-in", "orders").group("g");
    let error = binder.consumer(&spec).await.err().expect("no broker");
    assert_eq!(error.kind(), BinderErrorKind::Connection, "{error:#}");
    assert!(!format!("{error:#}").contains("s3cret-pw"), "{error:#}");
}

/// A routing-key pattern MQTT cannot express fails the binding as invalid.
#[tokio::test]
async fn a_pattern_with_hash_in_the_middle_is_refused() {
    let binder = connected_binder("pattern").await;
    let spec = ConsumerSpec::new("pattern-in", unique_name("pattern"))
        .group("g")
        .routing_keys(["a.#.b"]);
    let error = binder.consumer(&spec).await.err().expect("refused");
    assert_eq!(error.kind(), BinderErrorKind::InvalidOptions, "{error:#}");
    assert!(!error.is_transient());
}

/// How Mosquitto shares a group's messages: by turns at publish time, not
/// by who has room. With prefetch 1, a member that holds its message
/// unacknowledged still gets its share queued in its session, while the
/// other member, free, waits. So the binder declares no fair dispatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_shares_a_group_by_turns_not_by_room() {
    let binder = connected_binder("turns").await;
    assert!(!binder.capabilities().fair_dispatch);
    let destination = unique_name("turns");
    let group = format!("{destination}.g");
    let producer = binder
        .producer(&ProducerSpec::new("turns-out", &destination).required_groups([group.clone()]))
        .await
        .unwrap();
    let spec = ConsumerSpec::new("turns-in", &destination)
        .group(&group)
        .prefetch(1);
    let mut slow = binder.consumer(&spec).await.unwrap();
    let mut fast = binder.consumer(&spec).await.unwrap();
    const COUNT: usize = 10;
    for i in 0..COUNT {
        producer.send(numbered(i)).await.unwrap().await.unwrap();
    }
    let held = next(slow.as_mut(), Duration::from_secs(10))
        .await
        .expect("the slow member's first message");
    let mut fast_got = 0;
    while let Some(delivery) = next(fast.as_mut(), Duration::from_millis(700)).await {
        fast_got += 1;
        delivery.ack().await.unwrap();
    }
    // The slow member's share waits in its session behind the held one.
    assert!(
        fast_got < COUNT - 1,
        "the free member took {fast_got} of the {} not held: fair dispatch",
        COUNT - 1
    );
    held.ack().await.unwrap();
    let mut slow_got = 1;
    while let Some(delivery) = next(slow.as_mut(), Duration::from_millis(700)).await {
        slow_got += 1;
        delivery.ack().await.unwrap();
    }
    assert_eq!(fast_got + slow_got, COUNT, "every message once");
    println!("shared by turns: the free member took {fast_got}, the busy one {slow_got}");
}
