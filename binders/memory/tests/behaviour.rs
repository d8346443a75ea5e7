//! Memory-binder behaviour beyond the conformance suite: back-pressure,
//! unroutable sends, fair dispatch, anonymous queue lifetime, shared brokers.

use std::sync::Arc;
use std::time::Duration;

use bindery_core::binder::{Binder, BinderExt, ConsumerSpec, ProducerSpec};
use bindery_core::error::BinderErrorKind;
use bindery_core::message::Message;
use bindery_memory::{Broker, MemoryBinder, MemorySettings};
use bytes::Bytes;

fn message(n: u32) -> Message {
    Message::new(Bytes::from(n.to_string()))
}

fn number(message: &Message) -> u32 {
    std::str::from_utf8(message.payload())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_full_queue_makes_producers_wait_until_a_consumer_takes_one() {
    let binder = MemoryBinder::new(Broker::new(), 3);
    let producer = binder
        .producer(&ProducerSpec::new("out", "orders").required_groups(["g"]))
        .await
        .unwrap();
    for n in 0..3 {
        producer.send(message(n)).await.unwrap().await.unwrap();
    }
    let fourth = producer.send(message(3));
    tokio::pin!(fourth);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut fourth)
            .await
            .is_err(),
        "the fourth send waits while the queue is full"
    );
    let mut consumer = binder
        .consumer(&ConsumerSpec::new("in", "orders").group("g").prefetch(1))
        .await
        .unwrap();
    let first = consumer.recv().await.unwrap();
    assert_eq!(number(first.message()), 0);
    fourth.await.unwrap().await.unwrap();
    assert_eq!(binder.broker().queue_depth("orders.g"), Some(3));
}

#[tokio::test]
async fn a_send_no_queue_takes_is_unroutable() {
    let binder = MemoryBinder::isolated();
    let producer = binder
        .producer(&ProducerSpec::new("out", "nobody-listens"))
        .await
        .unwrap();
    let error = producer.send(message(1)).await.unwrap_err();
    assert_eq!(error.kind(), BinderErrorKind::Unroutable);
}

#[tokio::test]
async fn fair_dispatch_gives_the_next_message_to_the_free_consumer() {
    let binder = MemoryBinder::isolated();
    let producer = binder
        .producer(&ProducerSpec::new("out", "jobs").required_groups(["workers"]))
        .await
        .unwrap();
    let spec = ConsumerSpec::new("in", "jobs").group("workers").prefetch(1);
    let mut slow = binder.consumer(&spec).await.unwrap();
    let mut fast = binder.consumer(&spec).await.unwrap();
    for n in 0..3 {
        producer.send(message(n)).await.unwrap().await.unwrap();
    }
    let held = slow.recv().await.unwrap();
    assert_eq!(number(held.message()), 0);
    let one = fast.recv().await.unwrap();
    assert_eq!(number(one.message()), 1);
    // The slow consumer is at its prefetch bound: it gets nothing more.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), slow.recv())
            .await
            .is_err()
    );
    one.ack().await.unwrap();
    let two = fast.recv().await.unwrap();
    assert_eq!(
        number(two.message()),
        2,
        "the free consumer took the next job"
    );
    two.ack().await.unwrap();
    held.ack().await.unwrap();
}

#[tokio::test]
async fn redelivered_messages_are_marked_and_stale_acks_fail() {
    let binder = MemoryBinder::isolated();
    let producer = binder
        .producer(&ProducerSpec::new("out", "orders").required_groups(["g"]))
        .await
        .unwrap();
    producer.send(message(7)).await.unwrap().await.unwrap();
    let spec = ConsumerSpec::new("in", "orders").group("g");
    let mut consumer = binder.consumer(&spec).await.unwrap();
    let delivery = consumer.recv().await.unwrap();
    let (_, acknowledger) = delivery.into_parts();
    assert!(!acknowledger.redelivered());
    drop(consumer);
    let error = acknowledger.ack().await.unwrap_err();
    assert_eq!(
        error.kind(),
        BinderErrorKind::Closed,
        "an ack after the consumer left fails"
    );
    let mut consumer = binder.consumer(&spec).await.unwrap();
    let again = consumer.recv().await.unwrap();
    let (message, acknowledger) = again.into_parts();
    assert_eq!(number(&message), 7);
    assert!(acknowledger.redelivered());
    acknowledger.nack(true).await.unwrap();
    let third = consumer.recv().await.unwrap();
    assert_eq!(
        number(third.message()),
        7,
        "a nack with requeue puts it back"
    );
    third.nack(false).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), consumer.recv())
            .await
            .is_err(),
        "a nack without requeue drops it"
    );
}

#[tokio::test]
async fn an_anonymous_queue_lives_only_as_long_as_its_consumer() {
    let binder = MemoryBinder::isolated();
    let consumer = binder
        .consumer(&ConsumerSpec::new("in", "events"))
        .await
        .unwrap();
    assert_eq!(binder.broker().queue_depth("anonymous.0"), Some(0));
    drop(consumer);
    assert_eq!(binder.broker().queue_depth("anonymous.0"), None);
    let producer = binder
        .producer(&ProducerSpec::new("out", "events"))
        .await
        .unwrap();
    assert_eq!(
        producer.send(message(1)).await.unwrap_err().kind(),
        BinderErrorKind::Unroutable
    );
}

#[tokio::test]
async fn dead_letter_queues_are_unbounded() {
    let binder = MemoryBinder::new(Broker::new(), 1);
    let spec = ConsumerSpec::new("in", "orders")
        .group("g")
        .dead_letter(true);
    let dead_letters = binder.dead_letter_producer(&spec).await.unwrap();
    for n in 0..50 {
        dead_letters.send(message(n)).await.unwrap().await.unwrap();
    }
    assert_eq!(
        binder.dead_letter_destination(&spec).unwrap(),
        "orders.g.dlq"
    );
    assert_eq!(binder.broker().queue_depth("orders.g.dlq"), Some(50));
}

#[tokio::test]
async fn binders_naming_the_same_broker_share_destinations() {
    let factory = bindery_core::registry::binder_factories()
        .iter()
        .find(|f| f.binder_type == "memory")
        .expect("the memory binder registers itself");
    let settings = serde_json::json!({ "broker": "shared-by-test" });
    let one: Arc<dyn Binder> = (factory.create)("one", &settings).unwrap();
    let two: Arc<dyn Binder> = (factory.create)("two", &settings).unwrap();
    let mut consumer = two
        .consumer(&ConsumerSpec::new("in", "greetings").group("g"))
        .await
        .unwrap();
    let producer = one
        .producer(&ProducerSpec::new("out", "greetings"))
        .await
        .unwrap();
    producer.send(message(42)).await.unwrap().await.unwrap();
    assert_eq!(number(consumer.recv().await.unwrap().message()), 42);
}

/// Audit A22: a send used to wait for room in every full matching queue
/// with no limit, so one group nobody consumes stopped its whole
/// destination.
#[tokio::test(start_paused = true)]
async fn a22_a_full_group_queue_rejects_within_the_publish_timeout_and_spares_other_groups() {
    let limit = Duration::from_secs(1);
    let binder = MemoryBinder::new(Broker::new(), 2).with_publish_timeout(limit);
    // `audit` is required but nobody consumes it; `billing` is healthy.
    let producer = binder
        .producer(&ProducerSpec::new("out", "orders").required_groups(["audit", "billing"]))
        .await
        .unwrap();
    let mut billing = binder
        .consumer(&ConsumerSpec::new("in", "orders").group("billing"))
        .await
        .unwrap();
    for n in 0..5 {
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(Duration::from_secs(60), producer.send(message(n)))
            .await
            .expect("a send to a full queue ends");
        if n < 2 {
            sent.unwrap().await.unwrap();
        } else {
            let error = sent.unwrap_err();
            assert_eq!(error.kind(), BinderErrorKind::Rejected, "{error}");
            assert!(!error.is_transient(), "reject-publish is permanent");
            assert!(error.to_string().contains("`orders.audit`"), "{error}");
            assert!(!error.to_string().contains("`orders.billing`"), "{error}");
            assert_eq!(
                started.elapsed(),
                limit,
                "rejected at the limit, not before"
            );
        }
        let delivery = billing.recv().await.unwrap();
        assert_eq!(number(delivery.message()), n, "billing got every message");
        delivery.ack().await.unwrap();
    }
    assert_eq!(binder.broker().queue_depth("orders.audit"), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a22_a_send_that_finds_room_within_the_publish_timeout_is_kept() {
    let binder = MemoryBinder::new(Broker::new(), 1).with_publish_timeout(Duration::from_secs(1));
    let producer = binder
        .producer(&ProducerSpec::new("out", "orders").required_groups(["g"]))
        .await
        .unwrap();
    producer.send(message(0)).await.unwrap().await.unwrap();
    let mut consumer = binder
        .consumer(&ConsumerSpec::new("in", "orders").group("g").prefetch(1))
        .await
        .unwrap();
    let drain = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        consumer.recv().await.unwrap()
    };
    let (sent, first) = tokio::join!(producer.send(message(1)), drain);
    sent.expect("room came before the limit").await.unwrap();
    assert_eq!(number(first.message()), 0);
    assert_eq!(binder.broker().queue_depth("orders.g"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a22_a_redrive_into_a_full_group_queue_is_rejected_within_the_publish_timeout() {
    let binder = MemoryBinder::new(Broker::new(), 1).with_publish_timeout(Duration::ZERO);
    let spec = ConsumerSpec::new("in", "orders").group("g");
    let redrive = binder.redrive_producer(&spec).await.unwrap();
    redrive.send(message(0)).await.unwrap().await.unwrap();
    let error = redrive.send(message(1)).await.unwrap_err();
    assert_eq!(error.kind(), BinderErrorKind::Rejected, "{error}");
    assert_eq!(binder.broker().queue_depth("orders.g"), Some(1));
}

#[test]
fn a22_publish_timeout_is_a_setting_with_a_30_second_default() {
    let settings: MemorySettings = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(settings.publish_timeout, Duration::from_secs(30));
    let settings: MemorySettings =
        serde_json::from_value(serde_json::json!({ "publish-timeout": "250ms" })).unwrap();
    assert_eq!(settings.publish_timeout, Duration::from_millis(250));
}
