//! The benchmark harness of bindery: each binder against the raw client
//! doing the same work, run side by side and interleaved (raw, bindery,
//! raw, bindery, ...) so a noisy machine affects both alike. The report
//! shows medians and the bindery/raw ratio against SPEC §9's targets.
//!
//! Scenarios: the memory binder ([`memory`]), RabbitMQ ([`rabbitmq`]),
//! Kafka ([`kafka`]), Redis Streams ([`redis`]) and MQTT ([`mqtt`])
//! throughput, latency at a fixed rate on memory, RabbitMQ and Kafka
//! ([`latency`]), and peak RSS draining a backlog ([`rss`]). The broker
//! scenarios need the brokers of `scripts/brokers/` and fail, saying how
//! to start them, when one does not answer.
//!
//! ```text
//! cargo run --release -p bindery-bench                 # every scenario, 3 rounds
//! cargo run --release -p bindery-bench -- --rounds 5 --only memory
//! cargo run --release -p bindery-bench -- --only rabbitmq-throughput --side bindery
//! cargo run --release -p bindery-bench -- --rounds 3 --only redis --only mqtt
//! ```

pub mod drain;
pub mod kafka;
pub mod latency;
pub mod memory;
pub mod mqtt;
pub mod order;
pub mod rabbitmq;
pub mod redis;
pub mod report;
pub mod rss;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use latency::{Percentiles, Plan};
use report::{Report, Scenario, Target, Unit};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interleaved rounds per pair (at least 3 for a real run).
    pub rounds: usize,
    /// Tiny counts: checks the harness works, measures nothing.
    pub smoke: bool,
    /// Run only scenarios whose name contains one of these.
    pub only: Vec<String>,
    /// This benchmark's executable, for the RSS children.
    pub executable: PathBuf,
    /// Messages per throughput run, instead of each scenario's default.
    pub messages: Option<u64>,
    /// Only this side of each pair, to profile it alone.
    pub side: Option<Side>,
}

/// One side of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// The raw client (for RSS scenarios: the smaller backlog).
    Raw,
    /// bindery (for RSS scenarios: the larger backlog).
    Bindery,
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }

    fn scale(&self, full: u64, smoke: u64) -> u64 {
        if self.smoke { smoke } else { full }
    }

    /// Messages per throughput run: `--messages`, else `full` (or `smoke`).
    fn throughput(&self, full: u64, smoke: u64) -> u64 {
        self.messages.unwrap_or(self.scale(full, smoke))
    }

    /// The latency plan: 1,000 msg/s, 3,000 samples after a warm-up.
    fn latency_plan(&self) -> Plan {
        Plan {
            rate: 1_000,
            messages: self.scale(3_000, 50),
            warmup: if self.smoke {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(500)
            },
        }
    }
}

/// Runs `raw` and `bindery` alternately, once per round (only one of
/// them with [`Options::side`]).
async fn interleave<T, R, B, RF, BF>(
    options: &Options,
    mut raw: R,
    mut bindery: B,
) -> (Vec<T>, Vec<T>)
where
    R: FnMut() -> RF,
    RF: Future<Output = T>,
    B: FnMut() -> BF,
    BF: Future<Output = T>,
{
    let mut raws = Vec::with_capacity(options.rounds);
    let mut binderys = Vec::with_capacity(options.rounds);
    for _ in 0..options.rounds {
        if options.side != Some(Side::Bindery) {
            raws.push(raw().await);
        }
        if options.side != Some(Side::Raw) {
            binderys.push(bindery().await);
        }
    }
    (raws, binderys)
}

/// Runs the selected scenarios.
pub async fn run(options: &Options) -> Report {
    let mut report = Report {
        machine: machine(),
        rounds: options.rounds,
        scenarios: Vec::new(),
    };
    memory_throughput(options, &mut report).await;
    broker_throughput(options, &mut report).await;
    latencies(options, &mut report).await;
    memory_rss(options, &mut report).await;
    rabbitmq_rss(options, &mut report).await;
    report
}

async fn memory_throughput(options: &Options, report: &mut Report) {
    let messages = options.throughput(1_000_000, 2_000);
    for (name, payload, target, note) in [
        (
            "memory-bytes source>proc>sink",
            memory::Payload::Bytes,
            Target::AtLeast(1_000_000.0),
            "100-byte payloads passed through; target is absolute (SPEC §9: 1M msg/s per pipeline)",
        ),
        (
            "memory-json source>proc>sink",
            memory::Payload::Json,
            Target::RatioAtLeast(0.5),
            "~100-byte JSON orders decoded and encoded at each hop, as in the raw chain",
        ),
    ] {
        if !options.wants(name) {
            continue;
        }
        let (raw, bindery) = interleave(
            options,
            || memory::raw_chain(payload, messages),
            || memory::bindery_pipeline(payload, messages),
        )
        .await;
        report.scenarios.push(Scenario {
            name: name.to_owned(),
            unit: Unit::MessagesPerSecond,
            raw,
            bindery,
            target: Some(target),
            note: note.to_owned(),
        });
    }
}

async fn broker_throughput(options: &Options, report: &mut Report) {
    let messages = options.throughput(100_000, 200);
    let name = "rabbitmq-throughput";
    if options.wants(name) {
        let (raw, bindery) = interleave(
            options,
            || rabbitmq::raw_throughput(messages),
            || rabbitmq::bindery_throughput(messages),
        )
        .await;
        report.scenarios.push(Scenario {
            name: name.to_owned(),
            unit: Unit::MessagesPerSecond,
            raw,
            bindery,
            target: Some(Target::RatioAtLeast(0.8)),
            note: format!(
                "{messages} persistent JSON orders preloaded; consume (prefetch {}) > decode/encode > publish with confirm > ack after the confirm",
                rabbitmq::PREFETCH
            ),
        });
    }
    let name = "kafka-throughput";
    if options.wants(name) {
        let (raw, bindery) = interleave(
            options,
            || kafka::raw_throughput(messages),
            || kafka::bindery_throughput(messages),
        )
        .await;
        report.scenarios.push(Scenario {
            name: name.to_owned(),
            unit: Unit::MessagesPerSecond,
            raw,
            bindery,
            target: Some(Target::RatioAtLeast(0.8)),
            note: format!(
                "{messages} JSON orders preloaded in {} partitions; consume (group) > decode/encode > produce (acks=all) > store the offset after delivery, {} in flight; clocks start at assignment",
                kafka::broker::PARTITIONS,
                kafka::PREFETCH
            ),
        });
    }
    let name = "redis-throughput";
    if options.wants(name) {
        let (raw, bindery) = interleave(
            options,
            || redis::raw_throughput(messages),
            || redis::bindery_throughput(messages),
        )
        .await;
        report.scenarios.push(Scenario {
            name: name.to_owned(),
            unit: Unit::MessagesPerSecond,
            raw,
            bindery,
            target: Some(Target::RatioAtLeast(0.8)),
            note: format!(
                "{messages} JSON orders preloaded in a stream; consume in a group (XREADGROUP COUNT {}) > decode/encode > XADD > XACK after the XADD returned",
                redis::PREFETCH
            ),
        });
    }
    let name = "mqtt-throughput";
    if options.wants(name) {
        let (raw, bindery) = interleave(
            options,
            || mqtt::raw_throughput(messages),
            || mqtt::bindery_throughput(messages),
        )
        .await;
        report.scenarios.push(Scenario {
            name: name.to_owned(),
            unit: Unit::MessagesPerSecond,
            raw,
            bindery,
            target: Some(Target::RatioAtLeast(0.8)),
            note: format!(
                "{messages} JSON orders queued at QoS 1 in the group member's session; consume over $share (receive maximum {}) > decode/encode > publish QoS 1 > PUBACK the input after the output's PUBACK",
                mqtt::PREFETCH
            ),
        });
    }
}

async fn latencies(options: &Options, report: &mut Report) {
    let plan = options.latency_plan();
    if options.wants("latency-memory") {
        let (raw, bindery) = interleave(
            options,
            || latency::raw_memory(plan),
            || latency::bindery_memory(plan),
        )
        .await;
        push_percentiles(report, "latency-memory", plan, &raw, &bindery, "");
    }
    if options.wants("latency-rabbitmq") {
        let (raw, bindery) = interleave(
            options,
            || rabbitmq::latency::raw(plan),
            || rabbitmq::latency::bindery(plan),
        )
        .await;
        push_percentiles(
            report,
            "latency-rabbitmq",
            plan,
            &raw,
            &bindery,
            "source > processor > sink, two hops through the broker, persistent messages with confirms",
        );
    }
    if options.wants("latency-kafka") {
        let (raw, bindery) = interleave(
            options,
            || kafka::latency::raw(plan),
            || kafka::latency::bindery(plan),
        )
        .await;
        push_percentiles(
            report,
            "latency-kafka",
            plan,
            &raw,
            &bindery,
            "source > processor > sink, two hops through the broker, acks=all, offsets stored after delivery",
        );
    }
}

/// Adds a p50 and a p99 scenario.
fn push_percentiles(
    report: &mut Report,
    name: &str,
    plan: Plan,
    raw: &[Percentiles],
    bindery: &[Percentiles],
    note: &str,
) {
    for (label, pick) in [
        ("p50", (|p: &Percentiles| p.p50) as fn(&Percentiles) -> f64),
        ("p99", |p: &Percentiles| p.p99),
    ] {
        report.scenarios.push(Scenario {
            name: format!("{name} {label} @{}/s", plan.rate),
            unit: Unit::Milliseconds,
            raw: raw.iter().map(pick).collect(),
            bindery: bindery.iter().map(pick).collect(),
            target: None,
            note: if label == "p50" {
                note.to_owned()
            } else {
                String::new()
            },
        });
    }
}

async fn memory_rss(options: &Options, report: &mut Report) {
    if !options.wants("rss-memory") {
        return;
    }
    let small = options.scale(100_000, 1_000);
    let large = options.scale(1_000_000, 10_000);
    let child = |backlog: u64| rss_in_child(options, "memory", backlog, None);
    let (at_small, at_large) = interleave(options, || child(small), || child(large)).await;
    report.scenarios.push(Scenario {
        name: "rss-memory backlog".to_owned(),
        unit: Unit::MebibytesRss,
        raw: at_small,
        bindery: at_large,
        target: Some(Target::RatioAtMost(1.2)),
        note: format!(
            "peak RSS draining {small} (raw column) vs {large} (bindery column) JSON messages through the memory binder; queues are bounded, so RSS must not grow with the backlog"
        ),
    });
}

async fn rabbitmq_rss(options: &Options, report: &mut Report) {
    if !options.wants("rss-rabbitmq") {
        return;
    }
    let small = options.scale(50_000, 200);
    let large = options.scale(200_000, 400);
    // The backlog is preloaded here, so the child's peak is the app's alone.
    let child = |backlog: u64| async move {
        let names = rabbitmq::broker::Names::fresh("rss");
        let admin = rabbitmq::broker::Admin::connect().await;
        admin.preload(&names.input(), backlog).await;
        let rss = rss_in_child(options, "rabbitmq", backlog, Some(names.round())).await;
        admin.delete(&names).await;
        admin.close().await;
        rss
    };
    let (at_small, at_large) = interleave(options, || child(small), || child(large)).await;
    report.scenarios.push(Scenario {
        name: "rss-rabbitmq backlog".to_owned(),
        unit: Unit::MebibytesRss,
        raw: at_small,
        bindery: at_large,
        target: Some(Target::RatioAtMost(1.2)),
        note: format!(
            "peak RSS of a bindery app (prefetch {}) draining a preloaded queue of {small} (raw column) vs {large} (bindery column) JSON orders into another exchange",
            rabbitmq::PREFETCH
        ),
    });
}

/// Peak RSS of a child running `--rss-child binder --backlog backlog`.
async fn rss_in_child(options: &Options, binder: &str, backlog: u64, round: Option<&str>) -> f64 {
    let mut args = vec![
        "--rss-child".to_owned(),
        binder.to_owned(),
        "--backlog".to_owned(),
        backlog.to_string(),
    ];
    if let Some(round) = round {
        args.extend(["--round".to_owned(), round.to_owned()]);
    }
    let executable = options.executable.clone();
    tokio::task::spawn_blocking(move || rss::in_child(&args, &executable))
        .await
        .expect("the RSS child's waiter")
}

/// Runs in an RSS child: drains `backlog` messages and prints peak RSS.
/// `round` names the preloaded destinations of a broker binder.
pub async fn rss_child(binder: &str, backlog: u64, round: Option<&str>) -> f64 {
    match binder {
        "memory" => {
            memory::bindery_pipeline(memory::Payload::Json, backlog).await;
        }
        "rabbitmq" => {
            let round = round.expect("--round names the preloaded destinations");
            rabbitmq::drain(&rabbitmq::broker::Names::of(round), backlog).await;
        }
        other => panic!("no RSS scenario for binder `{other}`"),
    }
    rss::peak_rss_mib()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(String::from("?"), |kib| {
            format!("{} GiB", kib / 1024 / 1024)
        });
    format!(
        "{} {}, {cpus} cpus, {memory}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
