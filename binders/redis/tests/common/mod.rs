//! Shared helpers of the broker tests: the server under test
//! (`BINDERY_TEST_REDIS_URL`, default redis://127.0.0.1:6379), private
//! servers for tests that kill connections or restart the server, and the
//! conformance harness.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bindery::binder::Binder;
use bindery_redis::{RedisBinder, RedisSettings, redact_url};
use bindery_testkit::conformance::BinderHarness;

/// How to get a server, for failure messages.
pub const START_HINT: &str = "start one with `scripts/brokers/ensure-redis.sh` \
     (installs and starts Debian's redis-server at 127.0.0.1:6379), or point BINDERY_TEST_REDIS_URL at one";

/// The server under test.
pub fn url() -> String {
    std::env::var("BINDERY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Settings for `url` with short intervals, so tests see claims and
/// reconnections quickly.
pub fn settings(url: &str) -> RedisSettings {
    RedisSettings::new(url)
        .claim_interval(Duration::from_millis(200))
        .block(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(5))
}

/// A binder on `url`, connected, or the test fails saying how to start
/// the server.
pub async fn connected_binder(url: &str) -> Arc<RedisBinder> {
    let binder = Arc::new(RedisBinder::new("redis", settings(url)).expect("binder"));
    if let Err(error) = binder.connect().await {
        panic!(
            "Redis does not answer at {}: {error}\n{START_HINT}",
            redact_url(url)
        );
    }
    binder
}

/// The Redis binder under the conformance suite: a binder per case.
#[derive(Debug, Default)]
pub struct RedisHarness;

#[async_trait]
impl BinderHarness for RedisHarness {
    async fn binder(&self) -> Arc<dyn Binder> {
        connected_binder(&url()).await
    }

    fn dead_letter_headers(&self) -> &'static [&'static str] {
        &[bindery_redis::ORIGINAL_ID]
    }
}

/// Runs `redis-cli` against `url` with `args`; its output.
pub fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli cannot run ({e}); {START_HINT}"));
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A redis-server of a test's own on a free port, for tests that kill
/// every connection or restart the server. Killed when dropped.
pub struct PrivateServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Extra `redis-server` arguments (`--replicaof ...`).
    extra: Vec<String>,
}

impl PrivateServer {
    /// Starts a server and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// Starts a replica of `primary` and waits until it answers.
    pub fn start_replica_of(primary: &PrivateServer) -> Self {
        Self::start_with(vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ])
    }

    fn start_with(extra: Vec<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("bindery-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("data folder");
        let mut server = Self {
            port,
            dir,
            child: None,
            extra,
        };
        server.spawn();
        server
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server cannot start ({e}); {START_HINT}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pong = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "PING"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
                .unwrap_or(false);
            if pong {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server, saving its data set (`SHUTDOWN SAVE`), and starts
    /// it again on the same port with the same data.
    pub fn restart(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SHUTDOWN", "SAVE"])
            .output();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.spawn();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
