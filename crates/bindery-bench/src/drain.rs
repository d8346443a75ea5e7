//! Watching a running bindery app work through a backlog.

use std::time::{Duration, Instant};

use bindery::{App, RunningApp};

/// A run that acknowledges nothing for this long is stuck.
const STALL: Duration = Duration::from_secs(60);

/// How often the app's counters are read: small against any run, and
/// cheap (a snapshot of a few atomics).
const POLL: Duration = Duration::from_millis(2);

/// Waits until input binding `binding` has acknowledged `messages`;
/// panics, with the app's health and counters, when it stops making
/// progress.
pub async fn wait_for_acks(running: &RunningApp, binding: &str, messages: u64) {
    let mut last = (0, Instant::now());
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        let acked = running.stats().binding(binding).acked;
        if acked >= messages {
            return;
        }
        if acked > last.0 {
            last = (acked, Instant::now());
        } else if last.1.elapsed() > STALL {
            panic!(
                "`{binding}` acknowledged {acked} of {messages} and nothing more for {STALL:?}; health: {:?}\n{}",
                running.health(),
                running.stats()
            );
        }
    }
}

/// Runs a bindery app of `config` whose function `process` is the JSON
/// processor, until input binding `binding` has acknowledged `messages`;
/// returns the time from start to the last acknowledgement (shutdown not
/// included).
pub async fn process_until_acked(config: &str, binding: &str, messages: u64) -> Duration {
    let app = App::builder()
        .without_registered_functions()
        .function("process", crate::order::process)
        .env(Vec::<(String, String)>::new())
        .config_toml(config)
        .build()
        .expect("benchmark configuration");
    let started = Instant::now();
    let running = app.start().await.expect("start");
    wait_for_acks(&running, binding, messages).await;
    let elapsed = started.elapsed();
    running.shutdown().await.expect("shutdown");
    elapsed
}
