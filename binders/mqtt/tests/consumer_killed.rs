//! A consumer process killed with SIGKILL mid-stream, and a new one of the
//! same group and client-id prefix started after it: it takes the dead
//! member's slot, resumes its persistent session, and receives what the
//! dead one had not acknowledged. Losses must be 0; duplicates are printed.
//!
//! Runs against `BINDERY_TEST_MQTT_URL` (default mqtt://127.0.0.1:1883;
//! start it with `scripts/brokers/ensure-mosquitto.sh`). This binary is the
//! test and, started with `BINDERY_MQTT_CHILD` set, the consumer it kills.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bindery::Message;
use bindery::binder::{BinderExt, ConsumerSpec, ProducerSpec};
use bindery::mqtt::{MqttBinder, MqttSettings};
use bindery_testkit::unique_name;
use bytes::Bytes;

const COUNT: usize = 500;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::var("BINDERY_MQTT_CHILD") {
        Ok(args) => runtime.block_on(child(&args)),
        Err(_) => {
            println!("running 1 test");
            runtime.block_on(consumer_killed_mid_stream_loses_nothing());
            println!("test consumer_killed_mid_stream_loses_nothing ... ok");
        }
    }
}

fn spec(destination: &str, group: &str) -> ConsumerSpec {
    ConsumerSpec::new("killed-in", destination)
        .group(group)
        .prefetch(20)
}

/// The consumer process: prints `got N` for each message before acking it.
async fn child(args: &str) {
    let mut parts = args.split(' ');
    let (prefix, destination, group) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let binder = MqttBinder::new(
        "mqtt",
        MqttSettings::new(support::url()).client_id_prefix(prefix),
    )
    .expect("settings");
    let mut consumer = binder
        .consumer(&spec(destination, group))
        .await
        .expect("bind");
    let mut out = std::io::stdout();
    while let Some(delivery) = consumer.recv().await {
        let n = std::str::from_utf8(delivery.message().payload())
            .unwrap()
            .to_owned();
        writeln!(out, "got {n}").unwrap();
        out.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await; // some work
        delivery.ack().await.expect("ack");
    }
}

async fn consumer_killed_mid_stream_loses_nothing() {
    let prefix = unique_name("killed");
    let destination = unique_name("killed");
    let group = format!("{destination}.g");
    // The producer's binder provisions the group's first session under its
    // client-id prefix; the consumers use the same prefix to resume it.
    let binder = MqttBinder::new(
        "mqtt",
        MqttSettings::new(support::url()).client_id_prefix(&prefix),
    )
    .expect("settings");
    if let Err(error) = binder.connect().await {
        panic!("no MQTT broker answers: {error:#}\n{}", support::START_HINT);
    }
    let producer = binder
        .producer(&ProducerSpec::new("killed-out", &destination).required_groups([group.clone()]))
        .await
        .unwrap();
    let mut confirmations = Vec::new();
    for i in 0..COUNT {
        let message = Message::new(Bytes::from(i.to_string())).with_content_type("text/plain");
        confirmations.push(producer.send(message).await.unwrap());
    }
    for confirmation in confirmations {
        confirmation.await.expect("confirmed");
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(
            "BINDERY_MQTT_CHILD",
            format!("{prefix} {destination} {group}"),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the consumer process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut processed: BTreeMap<usize, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processed.len() < COUNT / 3 {
        assert!(
            Instant::now() < deadline,
            "the child processed {}",
            processed.len()
        );
        let line = lines.next().expect("child output").unwrap();
        let n: usize = line.strip_prefix("got ").unwrap().parse().unwrap();
        *processed.entry(n).or_default() += 1;
    }
    child.kill().expect("SIGKILL the consumer");
    child.wait().unwrap();
    for line in lines {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("got ") {
            *processed.entry(n.parse().unwrap()).or_default() += 1;
        }
    }
    let by_child = processed.len();

    // The successor: same prefix, so it takes the dead member's slot.
    let successor = MqttBinder::new(
        "mqtt",
        MqttSettings::new(support::url()).client_id_prefix(&prefix),
    )
    .expect("settings");
    let mut consumer = successor
        .consumer(&spec(&destination, &group))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processed.len() < COUNT {
        assert!(
            Instant::now() < deadline,
            "{} of {COUNT} processed after the kill; missing {:?}",
            processed.len(),
            (0..COUNT)
                .filter(|n| !processed.contains_key(n))
                .take(10)
                .collect::<Vec<_>>()
        );
        if let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
        {
            let n: usize = std::str::from_utf8(delivery.message().payload())
                .unwrap()
                .parse()
                .unwrap();
            *processed.entry(n).or_default() += 1;
            delivery.ack().await.unwrap();
        }
    }
    // Nothing more is waiting for the group.
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(700), consumer.recv()).await
    {
        let n: usize = std::str::from_utf8(delivery.message().payload())
            .unwrap()
            .parse()
            .unwrap();
        *processed.entry(n).or_default() += 1;
        delivery.ack().await.unwrap();
    }
    let all: BTreeSet<usize> = processed.keys().copied().collect();
    assert_eq!(all, (0..COUNT).collect(), "every message processed");
    let duplicates: usize = processed.values().map(|c| c - 1).sum();
    println!(
        "consumer SIGKILL: the killed process processed {by_child}, 0 lost, {duplicates} processed twice"
    );
}
