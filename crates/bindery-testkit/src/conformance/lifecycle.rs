//! Cases 17 to 20, from Watermill's universal pub/sub tests: producers and
//! consumers that come and go while messages flow, and repeated nacks.
//! These drive the binder directly, without an app.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bindery::binder::BinderExt;
use bindery::binder::{Confirmation, Consumer, ProducerSpec};
use parking_lot::Mutex;

use super::{
    BinderHarness, case_group, consumer_spec, destination_with_groups, number_of, numbered, recv,
    recv_none, wait_until,
};
use crate::unique_name;

/// Case 17: A publisher closed during a bulk publish loses nothing.
///
/// Ten tasks send 10,000 messages at once through one producer, without
/// waiting for confirms. As soon as the last send returns, the producer
/// is dropped and the binder shut down (`Binder::shutdown` flushes
/// producers) while confirms are still in flight. Every send confirmed Ok
/// must then be received exactly once, and nothing else; and since the
/// shutdown flushes, every send must be confirmed Ok.
pub async fn publisher_closed_during_bulk_publish<H: BinderHarness>(harness: &H) {
    const PUBLISHERS: usize = 10;
    const EACH: usize = 1_000;
    // The consumer binds only after the shutdown, so all of these wait in
    // the group's queue: 10,000 is within the memory binder's default
    // queue capacity (10,000 ready messages).
    const TOTAL: usize = PUBLISHERS * EACH;
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c17", &["g"]).await;
    let mut tasks = Vec::with_capacity(PUBLISHERS);
    for p in 0..PUBLISHERS {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut confirmations: Vec<(usize, Confirmation)> = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let n = p * EACH + i;
                // Nothing is closed yet, so every send must be accepted.
                let confirmation = producer
                    .send(numbered(n))
                    .await
                    .unwrap_or_else(|e| panic!("send {n} before the producer was closed: {e}"));
                confirmations.push((n, confirmation));
            }
            // This task's handle on the producer goes with it.
            confirmations
        }));
    }
    let mut confirmations = Vec::with_capacity(TOTAL);
    for task in tasks {
        confirmations.extend(task.await.expect("publisher task"));
    }
    drop(producer);
    binder
        .shutdown()
        .await
        .expect("the binder shuts down, flushing its producers");
    let mut confirmed = BTreeSet::new();
    let mut failed = Vec::new();
    for (n, confirmation) in confirmations {
        match confirmation.await {
            Ok(()) => {
                confirmed.insert(n);
            }
            Err(error) => failed.push((n, error.to_string())),
        }
    }

    // The binder is not final after a shutdown: binding again reconnects.
    let mut consumer = binder
        .consumer(&consumer_spec("c17", &destination, Some("g")).prefetch(500))
        .await
        .expect("bind a consumer after the shutdown");
    let mut received: BTreeMap<usize, usize> = BTreeMap::new();
    while received.len() < confirmed.len() {
        let delivery = recv(
            consumer.as_mut(),
            harness.timeout(),
            &format!(
                "confirmed messages ({} of {} received)",
                received.len(),
                confirmed.len()
            ),
        )
        .await;
        *received.entry(number_of(&delivery)).or_default() += 1;
        delivery.ack().await.expect("ack");
    }
    while let Some(delivery) = recv_none(consumer.as_mut(), harness.quiet_period()).await {
        *received.entry(number_of(&delivery)).or_default() += 1;
        delivery.ack().await.expect("ack");
    }
    let duplicates: Vec<_> = received.iter().filter(|(_, c)| **c > 1).collect();
    assert!(duplicates.is_empty(), "received twice: {duplicates:?}");
    let received: BTreeSet<usize> = received.into_keys().collect();
    let lost: Vec<_> = confirmed.difference(&received).take(10).collect();
    assert!(
        lost.is_empty(),
        "confirmed but never received: {lost:?} ..."
    );
    assert_eq!(
        received, confirmed,
        "exactly the confirmed messages are received"
    );
    assert!(
        failed.is_empty(),
        "shutdown did not flush: {} of {TOTAL} confirmations failed, first {:?}",
        failed.len(),
        failed.first()
    );
}

/// Case 18: Fifty consumers of one group subscribing at once share 5,000
/// messages: each goes to exactly one of them.
///
/// The consumers are bound concurrently, each from its own task. On a
/// partitioned log the topic gets as many partitions as there are
/// consumers (`partition_count`), so every member can be assigned work;
/// whatever the split, the total must be exact.
pub async fn many_subscribers_at_once<H: BinderHarness>(harness: &H) {
    const CONSUMERS: usize = 50;
    const COUNT: usize = 5_000;
    let binder = harness.binder().await;
    let destination = unique_name("c18");
    let producer = binder
        .producer(
            &ProducerSpec::new("c18-out", &destination)
                .required_groups([case_group(&destination, "g")])
                .partition_count(CONSUMERS),
        )
        .await
        .expect("bind producer");
    let spec = consumer_spec("c18", &destination, Some("g"));
    let binds: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let binder = binder.clone();
            let spec = spec.clone();
            tokio::spawn(async move { binder.consumer(&spec).await })
        })
        .collect();
    let mut consumers = Vec::with_capacity(CONSUMERS);
    for (index, bind) in binds.into_iter().enumerate() {
        let consumer = bind
            .await
            .expect("bind task")
            .unwrap_or_else(|e| panic!("consumer {index} of {CONSUMERS} binds: {e}"));
        consumers.push(consumer);
    }

    let seen: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = read_each(consumers, &seen, &stop);
    let mut confirmations = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        confirmations.push(producer.send(numbered(i)).await.expect("send"));
    }
    for confirmation in confirmations {
        confirmation.await.expect("confirm");
    }
    wait_until(
        harness.timeout() * 3,
        "5,000 messages over 50 consumers",
        || seen.lock().len() >= COUNT,
    )
    .await;
    // Anything delivered twice would show up now.
    tokio::time::sleep(harness.quiet_period()).await;
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        drop(reader.await.expect("reader task"));
    }
    let seen = seen.lock();
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, n) in seen.iter() {
        *counts.entry(*n).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(10).collect();
    assert!(
        duplicates.is_empty(),
        "delivered to more than one consumer: {duplicates:?}"
    );
    assert_eq!(seen.len(), COUNT, "exactly one delivery per message");
    assert_eq!(
        counts.into_keys().collect::<BTreeSet<_>>(),
        (0..COUNT).collect(),
        "every message"
    );
    let working: BTreeSet<usize> = seen.iter().map(|(index, _)| *index).collect();
    assert!(
        working.len() > 1,
        "the group shares the work: only consumer(s) {working:?} received"
    );
}

/// Reads every consumer in a task of its own, acking and recording
/// `(consumer index, number)`, until `stop` is set; the tasks hand the
/// consumers back so they are dropped only after the count.
fn read_each(
    consumers: Vec<Box<dyn Consumer>>,
    seen: &Arc<Mutex<Vec<(usize, usize)>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Box<dyn Consumer>>> {
    consumers
        .into_iter()
        .enumerate()
        .map(|(index, mut consumer)| {
            let seen = seen.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // `recv` is cancel-safe: the timeout only lets the
                    // task notice `stop`.
                    if let Ok(Some(delivery)) =
                        tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
                    {
                        seen.lock().push((index, number_of(&delivery)));
                        delivery.ack().await.expect("ack");
                    }
                }
                consumer
            })
        })
        .collect()
}

/// Case 19: A consumer closed and reopened mid-stream loses nothing.
///
/// 5,000 messages are published while the first consumer reads. After
/// about half it is cancelled and dropped, holding some deliveries
/// unacknowledged (and more prefetched); a new consumer of the same group
/// then gets the rest. Every message must be acked at least once
/// (duplicates of what was unacknowledged are allowed: at-least-once).
pub async fn consumer_reopened_mid_stream<H: BinderHarness>(harness: &H) {
    const COUNT: usize = 5_000;
    const HOLD_EVERY: usize = 250;
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c19", &["g"]).await;
    let spec = consumer_spec("c19", &destination, Some("g")).prefetch(100);
    let mut first = binder.consumer(&spec).await.expect("bind consumer");
    let publishing = tokio::spawn(async move {
        let mut confirmations = Vec::with_capacity(COUNT);
        for i in 0..COUNT {
            confirmations.push(producer.send(numbered(i)).await.expect("send"));
        }
        for confirmation in confirmations {
            confirmation.await.expect("confirm");
        }
    });
    let mut acked = BTreeSet::new();
    let mut held = Vec::new();
    let mut taken = 0;
    while taken < COUNT / 2 {
        let delivery = recv(
            first.as_mut(),
            harness.timeout(),
            &format!("first consumer ({taken} of {})", COUNT / 2),
        )
        .await;
        taken += 1;
        if taken % HOLD_EVERY == 0 {
            held.push(delivery);
        } else {
            acked.insert(number_of(&delivery));
            delivery.ack().await.expect("ack");
        }
    }
    let unacked: Vec<usize> = held.iter().map(number_of).collect();
    first.cancel().await.expect("cancel");
    drop(held);
    drop(first);

    let mut second = binder.consumer(&spec).await.expect("bind again");
    while acked.len() < COUNT {
        let delivery = recv(
            second.as_mut(),
            harness.timeout(),
            &format!("second consumer ({} of {COUNT} acked)", acked.len()),
        )
        .await;
        acked.insert(number_of(&delivery));
        delivery.ack().await.expect("ack");
    }
    publishing.await.expect("publisher");
    assert_eq!(acked, (0..COUNT).collect(), "every message acked");
    assert!(
        unacked.iter().all(|n| acked.contains(n)),
        "the deliveries left unacknowledged came back"
    );
}

/// Case 20: Repeated nacks redeliver: 50 messages, each nacked with
/// requeue three times, then acked.
///
/// Where a nack requeues just that message (`requeue_single`), each
/// arrives exactly four times. On a partitioned log a nack rewinds the
/// partition, so later messages come again too: each arrives at least four
/// times. Either way every message ends acked, which a new consumer of the
/// group confirms by receiving nothing.
pub async fn repeated_nacks_redeliver<H: BinderHarness>(harness: &H) {
    const COUNT: usize = 50;
    const NACKS: usize = 3;
    let binder = harness.binder().await;
    let (destination, producer) = destination_with_groups(&binder, "c20", &["g"]).await;
    let spec = consumer_spec("c20", &destination, Some("g"));
    let mut consumer = binder.consumer(&spec).await.expect("bind consumer");
    let mut confirmations = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        confirmations.push(producer.send(numbered(i)).await.expect("send"));
    }
    for confirmation in confirmations {
        confirmation.await.expect("confirm");
    }
    let mut arrivals: BTreeMap<usize, usize> = BTreeMap::new();
    let mut acked = BTreeSet::new();
    while acked.len() < COUNT {
        let delivery = recv(
            consumer.as_mut(),
            harness.timeout(),
            &format!("nacks and acks ({} of {COUNT} acked)", acked.len()),
        )
        .await;
        let n = number_of(&delivery);
        let arrived = arrivals.entry(n).or_default();
        *arrived += 1;
        if *arrived <= NACKS {
            delivery.nack(true).await.expect("nack with requeue");
        } else {
            delivery.ack().await.expect("ack");
            acked.insert(n);
        }
    }
    // A rewind may still bring back messages acked since: take them too.
    let mut late = Vec::new();
    while let Some(delivery) = recv_none(consumer.as_mut(), harness.quiet_period()).await {
        let n = number_of(&delivery);
        *arrivals.entry(n).or_default() += 1;
        late.push(n);
        delivery.ack().await.expect("ack");
    }
    assert_eq!(
        arrivals.keys().copied().collect::<BTreeSet<_>>(),
        (0..COUNT).collect(),
        "every message arrived"
    );
    if binder.capabilities().requeue_single {
        let wrong: Vec<_> = arrivals.iter().filter(|(_, c)| **c != NACKS + 1).collect();
        assert!(
            wrong.is_empty(),
            "each message arrives {} times (nacked {NACKS}, then acked): {wrong:?}",
            NACKS + 1
        );
        assert!(late.is_empty(), "redelivered after its ack: {late:?}");
    } else {
        let short: Vec<_> = arrivals.iter().filter(|(_, c)| **c <= NACKS).collect();
        assert!(
            short.is_empty(),
            "each message arrives at least {} times: {short:?}",
            NACKS + 1
        );
    }
    drop(consumer);
    let mut again = binder.consumer(&spec).await.expect("bind again");
    let left = recv_none(again.as_mut(), harness.quiet_period()).await;
    assert!(
        left.is_none(),
        "message {:?} was left unacknowledged on the broker",
        left.as_ref().map(number_of)
    );
}
