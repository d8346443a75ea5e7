//! `bindery-bench`: runs every benchmark scenario, prints the table and
//! writes the figures as JSON.

use std::path::PathBuf;

use clap::Parser;

/// Benchmarks each bindery binder against its raw client, interleaved.
#[derive(Debug, Parser)]
struct Cli {
    /// Interleaved rounds per pair.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tiny counts: check that every scenario runs; figures mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Only scenarios whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Messages per throughput run (default: memory 1,000,000, brokers
    /// 100,000; smoke 2,000 and 200).
    #[arg(long)]
    messages: Option<u64>,
    /// Only one side of each pair (`raw` or `bindery`), to profile it.
    #[arg(long, value_enum)]
    side: Option<bindery_bench::Side>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    json: PathBuf,
    /// Internal: run one RSS measurement for this binder and print it.
    #[arg(long, hide = true)]
    rss_child: Option<String>,
    /// Internal: the backlog of the RSS child.
    #[arg(long, hide = true, default_value_t = 0)]
    backlog: u64,
    /// Internal: the round whose preloaded destinations the RSS child drains.
    #[arg(long, hide = true)]
    round: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    if let Some(binder) = cli.rss_child {
        println!(
            "{}",
            bindery_bench::rss_child(&binder, cli.backlog, cli.round.as_deref()).await
        );
        return;
    }
    let options = bindery_bench::Options {
        rounds: cli.rounds.max(1),
        smoke: cli.smoke,
        only: cli.only,
        executable: std::env::current_exe().expect("own path"),
        messages: cli.messages,
        side: cli.side,
    };
    let report = bindery_bench::run(&options).await;
    print!("{report}");
    if let Some(dir) = cli.json.parent() {
        std::fs::create_dir_all(dir).expect("JSON directory");
    }
    let json = serde_json::to_string_pretty(&report.to_json()).expect("JSON");
    std::fs::write(&cli.json, json).expect("write the JSON report");
    println!("JSON: {}", cli.json.display());
}
