//! work-queue — fair dispatch between a slow and a fast worker.
//!
//! A source puts `JOBS` jobs (default 40) on `jobs`; two workers share group
//! `workers` with prefetch 1, one taking 50 ms per job and one 5 ms. With
//! fair dispatch a free worker takes the next job, so the fast one does most
//! of them. The program prints how many jobs each did and exits.
//!
//! ```text
//! cargo run --example work-queue -- --config examples/work-queue/memory.toml
//! cargo run --example work-queue -- --config examples/work-queue/rabbitmq.toml
//! cargo run --example work-queue -- --config examples/work-queue/kafka.toml
//! cargo run --example work-queue -- --config examples/work-queue/redis.toml
//! cargo run --example work-queue -- --config examples/work-queue/mqtt.toml
//! ```
//!
//! Kafka has no fair dispatch: work is split by partition, not by speed.
//! There the jobs spread over two partitions by key, each worker owns one,
//! and both do about half — the slow one just finishes later.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bindery::prelude::*;
use futures::Stream;
use tokio::sync::Notify;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    id: u64,
}

fn job_count() -> u64 {
    std::env::var("JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40)
}

/// The jobs to do, keyed by id (the key picks the Kafka partition).
#[bindery::function]
async fn jobs() -> impl Stream<Item = Message<Job>> {
    futures::stream::iter(
        (1..=job_count()).map(|id| Message::new(Job { id }).with_key(id.to_string())),
    )
}

/// Takes 50 ms per job.
#[bindery::function(name = "slow-worker")]
async fn slow_worker(job: Job, State(tally): State<Arc<Tally>>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    tally.done(&tally.slow, job.id);
}

/// Takes 5 ms per job.
#[bindery::function(name = "fast-worker")]
async fn fast_worker(job: Job, State(tally): State<Arc<Tally>>) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    tally.done(&tally.fast, job.id);
}

/// Jobs done per worker.
#[derive(Debug, Default)]
struct Tally {
    slow: AtomicU64,
    fast: AtomicU64,
    all_done: Notify,
}

impl Tally {
    fn done(&self, worker: &AtomicU64, id: u64) {
        worker.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(job = id, "done");
        if self.total() >= job_count() {
            self.all_done.notify_one();
        }
    }

    fn total(&self) -> u64 {
        self.slow.load(Ordering::SeqCst) + self.fast.load(Ordering::SeqCst)
    }
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let tally = Arc::new(Tally::default());
    let app = App::builder().state(tally.clone()).from_env()?;
    app.run_until(tally.all_done.notified()).await?;
    println!("slow worker did {} jobs", tally.slow.load(Ordering::SeqCst));
    println!("fast worker did {} jobs", tally.fast.load(Ordering::SeqCst));
    println!("total {} of {} jobs", tally.total(), job_count());
    Ok(())
}
