//! The benchmark harness of bindery: each binder against the raw client
//! doing the same work, run side by side and interleaved (raw, bindery,
//! raw, bindery, ...) so a noisy machine affects both alike. The report
//! shows medians and the bindery/raw ratio against SPEC §9's targets.
//!
//! ```text
//! cargo run --release -p bindery-bench                 # every scenario, 3 rounds
//! cargo run --release -p bindery-bench -- --rounds 5 --only memory
//! ```

pub mod latency;
pub mod memory;
pub mod report;
pub mod rss;

use std::future::Future;
use std::path::PathBuf;

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
    /// Messages per throughput run, instead of the default.
    pub messages: Option<u64>,
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }

    fn scale(&self, full: u64, smoke: u64) -> u64 {
        if self.smoke { smoke } else { full }
    }
}

/// Runs `raw` and `bindery` alternately `rounds` times.
async fn interleave<R, B, RF, BF>(rounds: usize, mut raw: R, mut bindery: B) -> (Vec<f64>, Vec<f64>)
where
    R: FnMut() -> RF,
    RF: Future<Output = f64>,
    B: FnMut() -> BF,
    BF: Future<Output = f64>,
{
    let mut raws = Vec::with_capacity(rounds);
    let mut binderys = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        raws.push(raw().await);
        binderys.push(bindery().await);
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
    let rounds = options.rounds;
    let throughput_messages = options.messages.unwrap_or(options.scale(1_000_000, 2_000));
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
            rounds,
            || memory::raw_chain(payload, throughput_messages),
            || memory::bindery_pipeline(payload, throughput_messages),
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
    if options.wants("latency-memory") {
        let rate = 1_000;
        let messages = options.scale(3_000, 50);
        let mut raw = Vec::new();
        let mut bindery = Vec::new();
        for _ in 0..rounds {
            raw.push(latency::raw_memory(rate, messages).await);
            bindery.push(latency::bindery_memory(rate, messages).await);
        }
        for (label, pick) in [("p50", 0usize), ("p99", 1)] {
            let select = |p: &latency::Percentiles| if pick == 0 { p.p50 } else { p.p99 };
            report.scenarios.push(Scenario {
                name: format!("latency-memory {label} @{rate}/s"),
                unit: Unit::Milliseconds,
                raw: raw.iter().map(select).collect(),
                bindery: bindery.iter().map(select).collect(),
                target: None,
                note: String::new(),
            });
        }
    }
    if options.wants("rss-memory") {
        let small = options.scale(100_000, 1_000);
        let large = options.scale(1_000_000, 10_000);
        let child = |backlog: u64| {
            rss::in_child(
                &[
                    "--rss-child".into(),
                    "memory".into(),
                    "--backlog".into(),
                    backlog.to_string(),
                ],
                &options.executable,
            )
        };
        let mut at_small = Vec::new();
        let mut at_large = Vec::new();
        for _ in 0..rounds {
            at_small.push(child(small));
            at_large.push(child(large));
        }
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
    report
}

/// Runs in an RSS child: drains `backlog` messages and prints peak RSS.
pub async fn rss_child(binder: &str, backlog: u64) -> f64 {
    match binder {
        "memory" => {
            memory::bindery_pipeline(memory::Payload::Json, backlog).await;
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
