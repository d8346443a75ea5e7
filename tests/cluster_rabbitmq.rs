//! The RabbitMQ binder on a three-node cluster (issue 13): a processor
//! reads a quorum group queue while 10,000 orders (1% poison) flow through
//! it, and the node holding the queue's leader, which is also the node the
//! app is connected to, is killed with SIGKILL mid-stream. Nothing may be
//! lost, every poison order must reach the dead-letter queue, duplicates
//! are counted and printed, and the app must be healthy again, connected
//! to another node of its `addresses`.
//!
//! Needs the cluster of `scripts/brokers/rabbitmq-cluster.sh start`
//! (`BINDERY_TEST_RABBITMQ_CLUSTER`, default its three nodes on
//! 127.0.0.1:5681..5683), run as root: the test kills and restarts a node
//! through the script.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bindery::rabbitmq::lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use bindery::rabbitmq::lapin::types::FieldTable;
use bindery::rabbitmq::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use bindery::{App, FunctionError, RunningApp};
use bindery_testkit::{init_logging, unique_name};
use bindery_tests::rabbitmq::cluster::{self, CLUSTER_HINT, Node, RestartOnDrop};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

const COUNT: u32 = 10_000;
/// Outputs confirmed before the kill.
const KILL_AFTER: u64 = 3_000;
/// Every 100th order is poison: 1%.
fn is_poison(id: u32) -> bool {
    id % 100 == 42
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    poison: bool,
    #[serde(default)]
    processed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} is poison")]
struct Poison(u32);

async fn process(order: Order) -> Result<Order, FunctionError> {
    if order.poison {
        return Err(FunctionError::non_retryable(Poison(order.id)));
    }
    Ok(Order {
        processed: true,
        ..order
    })
}

/// What the feeder did.
#[derive(Debug, Default)]
struct Fed {
    /// Publishes the broker confirmed.
    confirmed: u32,
    /// Publishes made again after a nack or a lost connection.
    republished: u32,
}

async fn connect(uri: &str) -> Option<Channel> {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .ok()?;
    let channel = connection.create_channel().await.ok()?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    Some(channel)
}

/// Publishes orders 0..COUNT to `exchange` with publisher confirms, about
/// 1,000 a second with up to 500 unconfirmed, over the first node of
/// `uris` that answers; a nacked or lost publish is made again, and so is
/// every unconfirmed one when no confirm came for 5 s (RabbitMQ 3.10 can
/// leave confirms of publishes to a killed quorum leader unanswered).
async fn feed(uris: Vec<String>, exchange: String) -> Fed {
    let mut todo: VecDeque<u32> = (0..COUNT).collect();
    let mut fed = Fed::default();
    let mut next_uri = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let deadline = Instant::now() + Duration::from_secs(120);
    while fed.confirmed < COUNT {
        assert!(
            Instant::now() < deadline,
            "the feeder could not publish everything within 120 s: {fed:?}"
        );
        let Some(channel) = connect(&uris[next_uri % uris.len()]).await else {
            next_uri += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut pending = FuturesUnordered::new();
        let mut in_flight = std::collections::HashSet::new();
        let mut broken = false;
        let mut sent = 0u32;
        while !broken && (!todo.is_empty() || !pending.is_empty()) {
            let room = pending.len() < 500 && !todo.is_empty();
            if room {
                let id = todo.pop_front().expect("not empty");
                if sent % 10 == 0 {
                    pace.tick().await;
                }
                sent += 1;
                let body = serde_json::to_vec(&Order {
                    id,
                    poison: is_poison(id),
                    processed: false,
                })
                .expect("JSON");
                let properties = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2);
                match channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "order".into(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await
                {
                    Ok(confirm) => {
                        in_flight.insert(id);
                        pending.push(async move { (id, confirm.await) });
                    }
                    Err(_) => {
                        todo.push_front(id);
                        broken = true;
                    }
                }
            } else {
                let Ok(Some((id, outcome))) =
                    tokio::time::timeout(Duration::from_secs(5), pending.next()).await
                else {
                    broken = true;
                    continue;
                };
                in_flight.remove(&id);
                match outcome {
                    Ok(confirmation) if confirmation.is_ack() => fed.confirmed += 1,
                    Ok(_) => {
                        todo.push_back(id);
                        fed.republished += 1;
                    }
                    Err(_) => {
                        todo.push_back(id);
                        fed.republished += 1;
                        broken = true;
                    }
                }
            }
        }
        // Publishes of a broken channel: settled if they can be, else made
        // again (the broker may have them: a duplicate, never a loss).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some((id, outcome)) = pending.next().await {
                in_flight.remove(&id);
                match outcome {
                    Ok(confirmation) if confirmation.is_ack() => fed.confirmed += 1,
                    _ => {
                        todo.push_back(id);
                        fed.republished += 1;
                    }
                }
            }
        })
        .await;
        fed.republished += in_flight.len() as u32;
        todo.extend(in_flight.drain());
        if broken {
            next_uri += 1;
        }
    }
    fed
}

/// The number of ready messages in `queue` (a passive declare, which a
/// quorum queue's leader answers exactly).
async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue `{queue}`: {e}"))
        .message_count()
}

/// Takes every message of `queue` (nothing else consumes it any more) and
/// counts them by order id.
async fn drain(channel: &Channel, queue: &str) -> BTreeMap<u32, u32> {
    let expected = ready(channel, queue).await;
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut counts = BTreeMap::new();
    for _ in 0..expected {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("`{queue}` said {expected} ready, but delivered fewer"))
            .expect("the consumer ended")
            .expect("a delivery");
        let order: Order = serde_json::from_slice(&delivery.data).expect("an order");
        *counts.entry(order.id).or_insert(0) += 1;
    }
    counts
}

async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(prefix: &str, input: &str, output: &str, addresses: &[&Node]) -> String {
    let addresses: Vec<String> = addresses.iter().map(|n| format!("\"{}\"", n.uri)).collect();
    format!(
        r#"
        [bindery]
        default-binder = "rabbit"
        [binders.rabbit]
        type = "rabbitmq"
        addresses = [{addresses}]
        connection-name = "{prefix}"
        reconnect-initial-interval = "100ms"
        reconnect-max-interval = "1s"
        connect-timeout = "5s"
        [bindings.process-in-0]
        destination = "{input}"
        group = "work"
        content-type = "application/json"
        [bindings.process-in-0.consumer]
        prefetch = 100
        max-attempts = 1
        dead-letter = true
        [bindings.process-in-0.rabbitmq]
        quorum = true
        dlq-quorum = true
        [bindings.process-out-0]
        destination = "{output}"
        content-type = "application/json"
        [bindings.process-out-0.producer]
        required-groups = ["check"]
        [bindings.process-out-0.rabbitmq]
        quorum = true
        "#,
        addresses = addresses.join(", ")
    )
}

async fn start_app(config: &str) -> RunningApp {
    let running = App::builder()
        .without_registered_functions()
        .function("process", process)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("start");
    tokio::time::timeout(Duration::from_secs(30), running.ready())
        .await
        .expect("the app binds");
    running
}

/// The app's nodes once all four of its connections (publish and consume,
/// binder and dead letters may share) are listed; waits for the
/// management API's view.
async fn app_nodes(nodes: &[&Node], prefix: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = {
            let (nodes, prefix): (Vec<Node>, String) = (
                nodes.iter().map(|n| (*n).clone()).collect(),
                prefix.to_owned(),
            );
            tokio::task::spawn_blocking(move || {
                cluster::connection_nodes(&nodes.iter().collect::<Vec<_>>(), &prefix)
            })
            .await
            .unwrap()
        };
        if seen.len() >= 2 {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the management API lists {} connection(s) named {prefix}*; {CLUSTER_HINT}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_quorum_leader_mid_stream_loses_nothing() {
    init_logging();
    let started = Instant::now();
    let nodes = tokio::task::spawn_blocking(cluster::nodes).await.unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    let prefix = unique_name("bindery-cluster");
    let input = unique_name("rc-in");
    let output = unique_name("rc-out");
    let group_queue = format!("{input}.work");
    let check_queue = format!("{output}.check");
    let dlq = format!("{group_queue}.dlq");

    // The app declares its quorum queue through the first address; the
    // leader is placed there (client-local), so that node is both the
    // leader's and the app's. If the broker put it elsewhere, start the app
    // again with the leader's node first.
    let mut running = start_app(&config(&prefix, &input, &output, &all)).await;
    let leader = {
        let (nodes, queue) = (nodes.clone(), group_queue.clone());
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(leader) =
                    cluster::quorum_leader(&nodes.iter().collect::<Vec<_>>(), &queue)
                {
                    return leader;
                }
                assert!(
                    Instant::now() < deadline,
                    "no leader reported for `{queue}`; {CLUSTER_HINT}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        })
        .await
        .unwrap()
    };
    let victim = nodes
        .iter()
        .find(|n| n.name == leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a node under test"))
        .clone();
    let mut app_on = app_nodes(&all, &prefix).await;
    if app_on.iter().any(|n| *n != victim.name) {
        println!("leader on {leader}, app on {app_on:?}: restarting the app with {leader} first");
        running.shutdown().await.expect("clean shutdown");
        let mut ordered: Vec<&Node> = vec![&victim];
        ordered.extend(nodes.iter().filter(|n| n.number != victim.number));
        running = start_app(&config(&prefix, &input, &output, &ordered)).await;
        app_on = app_nodes(&all, &prefix).await;
    }
    assert!(
        app_on.iter().all(|n| *n == victim.name),
        "the app's connections are on {app_on:?}, the leader on {leader}"
    );
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.number != victim.number).collect();
    println!(
        "quorum leader of {group_queue} and the app's connections: {} (node {}); feeding through {}",
        victim.name, victim.number, survivors[0].name
    );

    let feeder = tokio::spawn(feed(
        survivors.iter().map(|n| n.uri.clone()).collect(),
        input.clone(),
    ));
    let sent = || running.stats().binding("process-out-0").sent;
    wait_until(
        Duration::from_secs(60),
        "3,000 outputs before the kill",
        || sent() >= KILL_AFTER || feeder.is_finished(),
    )
    .await;
    assert!(!feeder.is_finished(), "the feeder finished before the kill");

    let number = victim.number.to_string();
    let at_kill = sent();
    let killed_at = Instant::now();
    tokio::task::spawn_blocking(move || cluster::script(&["kill", &number]))
        .await
        .unwrap();
    let mut restart = RestartOnDrop(Some(victim.number));
    let after_kill = sent();
    // Flowing again: outputs confirmed beyond what was in flight at the kill.
    let mut seen_down = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while sent() < after_kill + 100 {
        seen_down |= !running.health().is_up();
        assert!(
            Instant::now() < deadline,
            "no outputs for 90 s after killing {} ({after_kill} sent); health {:?}",
            victim.name,
            running.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = killed_at.elapsed();
    let moved_to = app_nodes(&survivors, &prefix).await;
    println!(
        "killed {} after {at_kill} outputs; flowing again after {failover:.2?}, the app now on {moved_to:?} \
         (health down seen: {seen_down})",
        victim.name
    );
    assert!(
        moved_to.iter().all(|n| *n != victim.name),
        "the app reconnected to {moved_to:?}"
    );

    let fed = feeder.await.expect("the feeder published everything");
    println!("feeder: {fed:?}");

    // Everything through: the group queue empty, the outputs and dead
    // letters all there (or the wait times out: a loss).
    let observer = connect(&survivors[0].uri)
        .await
        .unwrap_or_else(|| panic!("{} does not answer; {CLUSTER_HINT}", survivors[0].name));
    let poison = (0..COUNT).filter(|id| is_poison(*id)).count() as u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (waiting, outputs) = (
            ready(&observer, &group_queue).await,
            ready(&observer, &check_queue).await,
        );
        let stats = running.stats().binding("process-in-0");
        if waiting == 0 && outputs >= COUNT - poison && stats.dead_lettered >= u64::from(poison) {
            break;
        }
        if Instant::now() >= deadline {
            println!(
                "not everything through within 60 s: {waiting} waiting, {outputs} outputs, stats {stats:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(
        Duration::from_secs(30),
        "the app reports itself up again",
        || running.health().is_up(),
    )
    .await;
    let stats = running
        .shutdown()
        .await
        .expect("the app shuts down cleanly");

    // The killed node back, as the brief's operator would bring it.
    let number = victim.number.to_string();
    let restarted = tokio::task::spawn_blocking(move || cluster::script(&["start-node", &number]))
        .await
        .unwrap();
    print!("{restarted}");
    restart.restarted();
    let outputs = drain(&observer, &check_queue).await;
    let dead = drain(&observer, &dlq).await;

    let expected: Vec<u32> = (0..COUNT).filter(|id| !is_poison(*id)).collect();
    let lost: Vec<u32> = expected
        .iter()
        .copied()
        .filter(|id| !outputs.contains_key(id))
        .collect();
    let poison_missing: Vec<u32> = (0..COUNT)
        .filter(|id| is_poison(*id) && !dead.contains_key(id))
        .collect();
    let poison_on_output: Vec<u32> = outputs
        .keys()
        .copied()
        .filter(|id| is_poison(*id))
        .collect();
    let duplicates: u32 = outputs.values().map(|n| n - 1).sum();
    let dead_duplicates: u32 = dead.values().map(|n| n - 1).sum();
    println!(
        "RESULT killed quorum leader {} mid-stream: {COUNT} fed ({} republished by the feeder), \
         {} outputs for {} distinct ids, lost = {}, duplicates = {duplicates}; dead letters {} for {} of {poison} poison \
         (duplicates {dead_duplicates}); failover {failover:.2?}; test {:.1?}",
        victim.name,
        fed.republished,
        outputs.values().sum::<u32>(),
        outputs.len(),
        lost.len(),
        dead.values().sum::<u32>(),
        dead.len(),
        started.elapsed()
    );
    println!("app stats: {:?}", stats.binding("process-in-0"));
    assert!(
        lost.is_empty(),
        "lost {} orders: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        poison_missing.is_empty(),
        "{} poison orders not in {dlq}: {:?}",
        poison_missing.len(),
        &poison_missing[..poison_missing.len().min(20)]
    );
    assert!(
        poison_on_output.is_empty(),
        "poison on the output: {poison_on_output:?}"
    );
    assert!(
        dead.keys().all(|id| is_poison(*id)),
        "good orders in the dead-letter queue"
    );
}
