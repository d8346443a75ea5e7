//! A consumer process killed with SIGKILL mid-stream, and a new one of the
//! same group started after it: the group gives it the dead member's
//! partitions and it processes from the last committed offsets. Losses must
//! be 0; duplicates are printed.
//!
//! Runs against `BINDERY_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`;
//! start Apache Kafka with `scripts/brokers/ensure-kafka.sh`). This binary
//! is the test and, started with `BINDERY_KAFKA_CHILD` set, the consumer
//! it kills: a bindery app that appends the payload of every processed
//! message to a file, one per line, before acknowledging it. It processes
//! with concurrency 4 over the topic's partitions, so records of one
//! partition are acknowledged out of order.

mod support;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bindery::binder::{BinderExt, ProducerSpec};
use bindery::{App, State};
use bindery_testkit::{init_logging, unique_name};
use bindery_tests::kafka::{BROKERS_VAR, binder_toml, require_broker};
use parking_lot::Mutex;
use support::{binder, numbered, send_all, tally, wait_until, within};

/// Set in the consumer process: `<topic> <group> <output file>`.
const CHILD_VAR: &str = "BINDERY_KAFKA_CHILD";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::var(CHILD_VAR) {
        Ok(args) => {
            if let Err(error) = runtime.block_on(child(&args)) {
                eprintln!("consumer process: {error}");
                std::process::exit(1);
            }
        }
        Err(_) => {
            println!("running 1 test");
            runtime.block_on(consumer_process_killed_mid_stream_loses_nothing());
            println!("test consumer_process_killed_mid_stream_loses_nothing ... ok");
        }
    }
}

// ----------------------------------------------------------------------
// The consumer process

/// Where processed ids go.
#[derive(Clone)]
struct Output(Arc<Mutex<File>>);

async fn record(id: String, State(output): State<Output>) -> Result<(), std::io::Error> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    // One write per id: a kill cannot tear a line.
    output.0.lock().write_all(format!("{id}\n").as_bytes())
}

async fn child(args: &str) -> bindery::Result<()> {
    let [topic, group, path] = args.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{CHILD_VAR} is `<topic> <group> <output file>`, not `{args}`");
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the output file");
    let config = format!(
        r#"
        [bindery]
        default-binder = "kafka"
        {binder}
        [bindings.record-in-0]
        destination = "{topic}"
        group = "{group}"
        content-type = "text/plain"
        [bindings.record-in-0.consumer]
        concurrency = 4
        prefetch = 64
        "#,
        binder = binder_toml("kafka", 4),
    );
    App::builder()
        .without_registered_functions()
        .function("record", record)
        .state(Output(Arc::new(Mutex::new(file))))
        .config_toml(&config)
        .env(Vec::<(String, String)>::new())
        .build()?
        .run()
        .await
}

// ----------------------------------------------------------------------
// The test

fn read_ids(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect()
}

fn spawn_consumer(topic: &str, group: &str, output: &Path) -> Child {
    Command::new(std::env::current_exe().expect("this test's path"))
        .env(CHILD_VAR, format!("{topic} {group} {}", output.display()))
        .env(BROKERS_VAR, require_broker())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the consumer process")
}

/// Deletes the file when the test ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn consumer_process_killed_mid_stream_loses_nothing() {
    init_logging();
    const COUNT: u64 = 10_000;
    let topic = unique_name("killed");
    let group = unique_name("killed-group");
    let output = TempFile(std::env::temp_dir().join(format!("{topic}.ids")));
    let seeder = binder("seeder", 4);
    let producer = seeder
        .producer(&ProducerSpec::new("seed", &topic).partition_count(4))
        .await
        .expect("bind producer");
    send_all(producer.as_ref(), (0..COUNT).map(numbered)).await;

    let mut first = Running(spawn_consumer(&topic, &group, &output.0));
    wait_until(Duration::from_secs(120), "first process mid-stream", || {
        read_ids(&output.0).len() >= 3_000
    })
    .await;
    first.0.kill().expect("SIGKILL the consumer");
    first.0.wait().expect("reap it");
    let at_kill = read_ids(&output.0).len();
    assert!(
        (at_kill as u64) < COUNT,
        "killed after it had processed everything ({at_kill})"
    );

    let mut second = Running(spawn_consumer(&topic, &group, &output.0));
    wait_until(
        Duration::from_secs(180),
        "restarted process catches up",
        || {
            read_ids(&output.0)
                .into_iter()
                .collect::<BTreeSet<_>>()
                .len() as u64
                >= COUNT
        },
    )
    .await;
    // A graceful stop (SIGINT) commits what it processed.
    let _ = Command::new("kill")
        .args(["-INT", &second.0.id().to_string()])
        .status();
    let stopped = within(
        Duration::from_secs(60),
        "restarted process stops on SIGINT",
        async {
            loop {
                if let Ok(Some(status)) = second.0.try_wait() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let ids = read_ids(&output.0);
    let (losses, duplicates) = tally(ids.iter().copied(), COUNT);
    println!(
        "consumer killed (SIGKILL) after {at_kill} of {COUNT} messages and restarted: \
         {} processed, losses = {losses}, duplicates = {duplicates}",
        ids.len()
    );
    assert!(
        stopped.success(),
        "the restarted process exits cleanly on SIGINT: {stopped}"
    );
    assert_eq!(losses, 0, "every message processed at least once");
}
