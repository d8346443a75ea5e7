//! The Kafka binder on a three-node Apache Kafka cluster
//! (`BINDERY_TEST_KAFKA_CLUSTER`, default 127.0.0.1:19092-19094; start it
//! with `scripts/brokers/kafka-cluster.sh start`), with the reliability
//! settings the seeds advise: topics on 3 replicas, `min.insync.replicas`
//! 2, `acks=all` with idempotent producers retrying until
//! `message.timeout.ms`. The leader of an input partition is killed with
//! SIGKILL in the middle of a stream of 10,000 messages, 1% of them poison;
//! nothing may be lost, the poison must be in the dead-letter topic, and
//! the app must be healthy again after the failover. Duplicates and the
//! failover time are printed.
//!
//! Compiled with the `cluster` feature only:
//! `cargo test -p bindery-tests --features cluster --test cluster_kafka -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bindery::binder::{Binder as _, Health};
use bindery::kafka::KafkaBinder;
use bindery::kafka::rdkafka::consumer::{BaseConsumer, Consumer as _};
use bindery::kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use bindery::kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use bindery::kafka::rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use bindery::{App, FunctionError, RunningApp};
use bindery_testkit::{init_logging, unique_name};
use bindery_tests::kafka::{kafka_cluster, require_cluster, settings_for};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Messages fed to the app.
const COUNT: u64 = 10_000;

/// Outputs seen before the partition leader is killed.
const KILL_AFTER_OUTPUTS: usize = 3_000;

/// Partitions, and replicas, of every topic of the test.
const PARTITIONS: usize = 3;
const REPLICAS: usize = 3;

/// Every hundredth message is poison: 1%.
fn is_poison(id: u64) -> bool {
    id % 100 == 42
}

/// An input message.
#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    id: u64,
    poison: bool,
}

/// What the app writes for each good reading.
#[derive(Debug, Serialize, Deserialize)]
struct Scored {
    id: u64,
    score: u64,
}

/// The function rejects poison for good: a retry cannot help it.
#[derive(Debug, thiserror::Error)]
#[error("reading {0} is poison")]
struct Poison(u64);

async fn score(reading: Reading) -> Result<Scored, FunctionError> {
    if reading.poison {
        return Err(FunctionError::non_retryable(Poison(reading.id)));
    }
    Ok(Scored {
        id: reading.id,
        score: reading.id * 7 % 1000,
    })
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Waits until `done` holds, checking every 100 ms, failing after `timeout`
/// with `what` and the state `status` describes.
async fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    status: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {timeout:?} ({})",
            status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A record read back from a topic: the id in its JSON payload, where it
/// sits, and the broker's append time.
#[derive(Clone, Copy, Debug)]
struct Seen {
    id: u64,
    partition: i32,
    appended_ms: i64,
}

/// Reads `topic` from the beginning of every partition, without a group
/// (assigned partitions, nothing committed): exactly what the log holds,
/// duplicates included. Runs on a thread of its own until `stop`.
struct Reader {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(brokers: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique_name("cluster-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("reader consumer");
        // The app's bindings created the topic; wait until metadata shows
        // all of its partitions.
        let deadline = Instant::now() + Duration::from_secs(30);
        let partitions = loop {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .expect("metadata of the topic to read");
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if found >= PARTITIONS {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "topic `{topic}` has {found} partition(s), not {PARTITIONS}, after 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("partition offset");
        }
        consumer.assign(&assignment).expect("assign partitions");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            let topic = topic.to_owned();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Errors (a broker away) and empty polls: librdkafka
                    // retries by itself.
                    if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                        let payload = message.payload().unwrap_or_default();
                        let id = serde_json::from_slice::<serde_json::Value>(payload)
                            .ok()
                            .and_then(|v| v.get("id")?.as_u64())
                            .unwrap_or_else(|| {
                                panic!(
                                    "a record of `{topic}` without a JSON id: {:?}",
                                    String::from_utf8_lossy(payload)
                                )
                            });
                        seen.lock().push(Seen {
                            id,
                            partition: message.partition(),
                            appended_ms: message.timestamp().to_millis().unwrap_or(0),
                        });
                    }
                }
            })
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().len()
    }

    fn distinct(&self) -> BTreeSet<u64> {
        self.seen.lock().iter().map(|s| s.id).collect()
    }

    fn stop(mut self) -> Vec<Seen> {
        self.halt();
        std::mem::take(&mut *self.seen.lock())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the reader thread");
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts the killed node again when the test ends, however it ends, so
/// the cluster is whole for the next run.
struct Revive(Option<i32>);

impl Drop for Revive {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            let started = Instant::now();
            kafka_cluster(&["start-node", &node.to_string()]);
            println!(
                "node {node} started again and answering after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The leader of `partition` of `topic`, as the cluster's metadata says.
fn leader_of(brokers: &str, topic: &str, partition: i32) -> i32 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata of the input topic");
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("the input topic in its metadata");
    let leader = found
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .map(|p| (p.leader(), p.replicas().len()))
        .expect("the partition in the topic's metadata");
    assert_eq!(
        leader.1, REPLICAS,
        "partition {partition} of `{topic}` has {} replicas",
        leader.1
    );
    leader.0
}

/// The rdkafka producer feeding the app, with the seeds' reliability
/// settings: every in-sync replica confirms (`acks=all`), idempotent, and
/// retrying until `message.timeout.ms` (5 minutes).
fn feeder(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("feeding producer")
}

/// Sends ids `0..COUNT`, `batch` every `pause`, and waits for every
/// confirmation; a send that fails is sent again. Returns how many were
/// sent again.
async fn feed(producer: FutureProducer, topic: String, batch: u64, pause: Duration) -> u64 {
    let mut resent = 0;
    let mut pending = Vec::new();
    for id in 0..COUNT {
        pending.push((id, enqueue(&producer, &topic, id).await));
        if id % batch == batch - 1 {
            tokio::time::sleep(pause).await;
        }
    }
    while !pending.is_empty() {
        let mut failed = Vec::new();
        for (id, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    eprintln!("send of {id} failed ({error}); sending it again");
                    failed.push(id);
                }
                Err(_) => panic!("the producer dropped the delivery of {id}"),
            }
        }
        resent += failed.len() as u64;
        pending = Vec::new();
        for id in failed {
            pending.push((id, enqueue(&producer, &topic, id).await));
        }
    }
    resent
}

/// Enqueues one reading in librdkafka, waiting while its queue is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    id: u64,
) -> bindery::kafka::rdkafka::producer::DeliveryFuture {
    let payload = serde_json::to_vec(&Reading {
        id,
        poison: is_poison(id),
    })
    .expect("json");
    let key = id.to_string();
    loop {
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => panic!("enqueue {id}: {error}"),
        }
    }
}

/// Records per id beyond the first.
fn duplicates(seen: &[Seen]) -> u64 {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for s in seen {
        *counts.entry(s.id).or_default() += 1;
    }
    counts.values().map(|n| n - 1).sum()
}

/// From the kill until outputs flow again: the end of the longest pause
/// between consecutive output appends (broker time) after the kill, and
/// that pause.
fn failover(outputs: &[Seen], killed_ms: i64) -> (i64, i64) {
    let mut times: Vec<i64> = outputs
        .iter()
        .map(|s| s.appended_ms)
        .filter(|t| *t >= killed_ms)
        .collect();
    times.sort_unstable();
    let mut previous = killed_ms;
    let (mut resumed, mut pause) = (killed_ms, 0);
    for t in times {
        if t - previous > pause {
            pause = t - previous;
            resumed = t;
        }
        previous = t;
    }
    (resumed - killed_ms, pause)
}

fn app_config(input: &str, output: &str, group: &str) -> String {
    format!(
        r#"
        [bindery]
        default-binder = "kafka"
        [bindings.score-in-0]
        destination = "{input}"
        group = "{group}"
        content-type = "application/json"
        [bindings.score-in-0.consumer]
        concurrency = 4
        prefetch = 128
        dead-letter = true
        [bindings.score-out-0]
        destination = "{output}"
        content-type = "application/json"
        # The broker stamps each output when it appends it: the failover
        # time is read from these stamps.
        [bindings.score-out-0.kafka.topic-properties]
        "message.timestamp.type" = "LogAppendTime"
        "#
    )
}

async fn start_app(binder: Arc<KafkaBinder>, config: &str) -> RunningApp {
    App::builder()
        .without_registered_functions()
        .function("score", score)
        .binder("kafka", binder)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leader_killed_mid_stream_loses_nothing() {
    init_logging();
    let test_started = Instant::now();
    let brokers = require_cluster();
    let input = unique_name("cluster-in");
    let output = unique_name("cluster-out");
    let group = unique_name("cluster-score");
    let dead_letters = KafkaBinder::dead_letter_topic(&input, &group);

    let mut settings = settings_for(brokers.clone());
    settings.partitions = PARTITIONS;
    settings.replication_factor = REPLICAS;
    let binder = Arc::new(KafkaBinder::new("cluster", settings));
    let running = start_app(binder.clone(), &app_config(&input, &output, &group)).await;
    tokio::time::timeout(Duration::from_secs(60), running.ready())
        .await
        .expect("app bound within 60 s");

    let outputs = tokio::task::block_in_place(|| Reader::start(&brokers, &output));
    // 100 every 50 ms: about 2,000 a second, so the kill lands while the
    // feed is still under way.
    let feeding = tokio::spawn(feed(
        feeder(&brokers),
        input.clone(),
        100,
        Duration::from_millis(50),
    ));

    wait_until(
        Duration::from_secs(60),
        "outputs before the kill",
        || outputs.count() >= KILL_AFTER_OUTPUTS,
        || format!("{} outputs", outputs.count()),
    )
    .await;
    let leader = tokio::task::block_in_place(|| leader_of(&brokers, &input, 0));
    let outputs_at_kill = outputs.count();
    let killed_ms = now_millis();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| kafka_cluster(&["kill", &leader.to_string()]));
    let revive = Revive(Some(leader));
    println!(
        "killed node {leader} (leader of partition 0 of `{input}`) with SIGKILL after \
         {outputs_at_kill} outputs; feed finished: {}",
        feeding.is_finished()
    );

    // Health while the node is away, sampled until the stream is through.
    let mut health_down = Vec::new();
    let expected: BTreeSet<u64> = (0..COUNT).filter(|id| !is_poison(*id)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !outputs.distinct().is_superset(&expected) {
        if let Health::Down(reason) = running.health()
            && health_down.len() < 5
        {
            health_down.push(reason);
        }
        if Instant::now() > deadline {
            let missing = expected.difference(&outputs.distinct()).count();
            panic!(
                "{missing} of {} good readings never reached `{output}` within 120 s of the kill; \
                 app health {:?}",
                expected.len(),
                running.health()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_outputs_at = killed_at.elapsed();
    let resent = tokio::time::timeout(Duration::from_secs(60), feeding)
        .await
        .expect("feed confirmed")
        .expect("the feeding task");

    // Health after the failover, with the killed node still away.
    wait_until(
        Duration::from_secs(30),
        "app healthy again after the failover",
        || running.health().is_up(),
        || format!("{:?}", running.health()),
    )
    .await;
    assert!(binder.health().is_up(), "binder: {:?}", binder.health());

    let poison: BTreeSet<u64> = (0..COUNT).filter(|id| is_poison(*id)).collect();
    let dead = tokio::task::block_in_place(|| Reader::start(&brokers, &dead_letters));
    wait_until(
        Duration::from_secs(60),
        "every poison reading dead-lettered",
        || dead.distinct().is_superset(&poison),
        || {
            format!(
                "{} of {} in `{dead_letters}`",
                dead.distinct().len(),
                poison.len()
            )
        },
    )
    .await;
    // A moment for late duplicates to arrive, then the final count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outputs = tokio::task::block_in_place(|| outputs.stop());
    let dead = tokio::task::block_in_place(|| dead.stop());

    let output_ids: BTreeSet<u64> = outputs.iter().map(|s| s.id).collect();
    let dead_ids: BTreeSet<u64> = dead.iter().map(|s| s.id).collect();
    let lost = expected.difference(&output_ids).count();
    let (failover_ms, pause_ms) = failover(&outputs, killed_ms);
    let per_partition = {
        let mut counts = BTreeMap::<i32, usize>::new();
        for s in &outputs {
            *counts.entry(s.partition).or_default() += 1;
        }
        counts
    };
    println!(
        "cluster failover: {COUNT} readings ({} poison), node {leader} killed after {outputs_at_kill} outputs; \
         lost = {lost}, output duplicates = {} ({} records for {} ids, per partition {per_partition:?}), \
         dead letters = {} ids, dead-letter duplicates = {}, feed sends repeated = {resent}; \
         failover (kill -> outputs flowing again) = {failover_ms} ms, longest output pause = {pause_ms} ms; \
         all outputs {:.1} s after the kill; health down while away: {:?}",
        poison.len(),
        duplicates(&outputs),
        outputs.len(),
        output_ids.len(),
        dead_ids.len(),
        duplicates(&dead),
        all_outputs_at.as_secs_f64(),
        health_down,
    );
    assert_eq!(lost, 0, "every good reading reached `{output}`");
    assert!(
        output_ids.is_disjoint(&poison),
        "no poison reading reached `{output}`"
    );
    assert_eq!(
        dead_ids, poison,
        "exactly the poison readings are in `{dead_letters}`"
    );

    running.shutdown().await.expect("clean shutdown");
    tokio::task::block_in_place(|| drop(revive));
    println!(
        "test wall time {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}
