//! Test support for the Spring Cloud Stream interop tests: building the
//! Spring app (`tests/interop/spring-app`, through
//! `scripts/interop/build.sh`), running it as a process beside in-process
//! bindery apps, and reading what it printed.
//!
//! The Spring app prints one `INTEROP <json>` line per event (`received`,
//! `failing`, `produced`) on stdout; Spring's own log lines go there too and
//! serve as readiness signals ("Started InteropApplication", "partitions
//! assigned").

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use crate::process::repository_root;

/// How long a Spring app may take to start. Spring Boot starts in about 6 s
/// on an idle machine; on a loaded 2-core machine shared with other builds
/// it can take many times that.
pub const SPRING_START: Duration = Duration::from_secs(240);

/// Patience for messages to arrive once both sides run.
pub const ARRIVAL: Duration = Duration::from_secs(120);

const INTEROP_PREFIX: &str = "INTEROP ";

/// The Spring app's jar, built (or found in the cache) once per test
/// process by `scripts/interop/build.sh`. Fails the test, saying what is
/// missing, when Java or Maven is not there or the build fails.
pub fn spring_jar() -> PathBuf {
    static JAR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    JAR.get_or_init(|| {
        let script = repository_root().join("scripts/interop/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}); the interop tests need Java 17 and Maven 3.8 with Maven Central reachable:\n{stderr}{stdout}",
                script.display(),
                output.status
            ));
        }
        let jar = stdout.lines().last().unwrap_or_default().trim();
        let jar = PathBuf::from(jar);
        if jar.is_file() {
            Ok(jar)
        } else {
            Err(format!(
                "{} printed no jar path:\n{stderr}{stdout}",
                script.display()
            ))
        }
    })
    .clone()
    .unwrap_or_else(|problem| panic!("{problem}"))
}

/// Checks that the RabbitMQ test broker accepts AMQP connections and that
/// its management API answers; fails the test saying how to start it.
pub fn require_rabbit() {
    let uri = crate::rabbitmq::uri();
    let authority = uri
        .split_once("://")
        .map_or(uri.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let address = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let address = if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:5672")
    };
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&address)
        .ok()
        .into_iter()
        .flatten()
        .any(|socket| {
            std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "RabbitMQ does not answer at {address}; {}",
        crate::rabbitmq::START_HINT
    );
    // Panics with the start hint when the management API is not there.
    let _ = crate::rabbitmq::management("overview");
}

/// Command-line properties of a Spring app on the RabbitMQ test broker.
pub fn rabbit_args() -> Vec<String> {
    require_rabbit();
    let uri = crate::rabbitmq::uri();
    vec![
        "--spring.cloud.stream.default-binder=rabbit".to_owned(),
        format!("--spring.rabbitmq.addresses={}", amqp_address(&uri)),
    ]
}

/// `amqp://user:pass@host:port/vhost` as Spring's `addresses` property
/// takes it (`amqp://user:pass@host:port/vhost`, vhost `%2f` as `/`).
fn amqp_address(uri: &str) -> String {
    uri.replace("/%2f", "/").replace("/%2F", "/")
}

/// Command-line properties of a Spring app on the Kafka test broker.
pub fn kafka_args() -> Vec<String> {
    let brokers = crate::kafka::require_broker();
    vec![
        "--spring.cloud.stream.default-binder=kafka".to_owned(),
        format!("--spring.cloud.stream.kafka.binder.brokers={brokers}"),
    ]
}

/// A Spring Cloud Stream app running as a process. Dropping it kills the
/// JVM, so a failing test leaves no process behind.
pub struct SpringApp {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl SpringApp {
    /// Starts the Spring app with `args` (Spring properties as `--key=value`).
    /// `name` labels its output in failure messages.
    pub fn start(name: &str, args: &[String]) -> Self {
        let jar = spring_jar();
        let mut command = Command::new("java");
        command
            // A small heap and the C1 compiler only: several JVMs share two
            // cores with cargo builds, and the app handles a few hundred
            // messages at most.
            .args([
                "-Xmx256m",
                "-Xss512k",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-jar",
            ])
            .arg(&jar)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(std::env::temp_dir());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start `java` ({e}); the interop tests need Java 17 on the PATH")
        });
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    match line {
                        Ok(line) => lines.lock().push(line),
                        Err(_) => break,
                    }
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            lines,
            started: Instant::now(),
        }
    }

    /// Everything the app printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().join("\n")
    }

    /// The last lines the app printed, for failure messages.
    fn tail(&self) -> String {
        let lines = self.lines.lock();
        let from = lines.len().saturating_sub(60);
        lines[from..]
            .iter()
            .map(|l| l.chars().take(600).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the JVM is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a printed line that satisfies `matches`, failing with the
    /// app's output when the JVM exits or `timeout` passes first.
    pub async fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines.lock().iter().find(|l| matches(l)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its pipes may still hold the last lines.
                tokio::time::sleep(Duration::from_millis(300)).await;
                panic!(
                    "Spring app `{}` exited ({status}) before {what}; its output:\n{}",
                    self.name,
                    self.tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Spring app `{}`: no {what} within {timeout:?}; its output:\n{}",
                self.name,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until Spring Boot says the application started (bindings are
    /// bound before that line on RabbitMQ).
    pub async fn wait_started(&mut self) {
        self.wait_for_line(
            "start-up (`Started InteropApplication`)",
            SPRING_START,
            |l| l.contains("Started InteropApplication"),
        )
        .await;
        eprintln!(
            "spring app `{}` started in {:.1?}",
            self.name,
            self.started.elapsed()
        );
    }

    /// Waits until a Kafka consumer of the app has partitions of `topic`
    /// assigned: its group join is done, so what is sent next reaches it.
    pub async fn wait_assigned(&mut self, topic: &str) {
        let needle = format!("{topic}-");
        self.wait_for_line(
            &format!("partitions of `{topic}` assigned"),
            SPRING_START,
            |l| l.contains("partitions assigned") && l.contains(&needle),
        )
        .await;
    }

    /// The `INTEROP` events printed so far, of kind `event` (`received`,
    /// `failing`, `produced`).
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.lines
            .lock()
            .iter()
            .filter_map(|l| l.strip_prefix(INTEROP_PREFIX))
            .filter_map(|json| serde_json::from_str::<Value>(json).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Waits until at least `count` events of kind `event` were printed.
    pub async fn wait_events(
        &mut self,
        event: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events(event);
            if events.len() >= count {
                return events;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                panic!(
                    "Spring app `{}` exited ({status}) after {} of {count} `{event}` events; its output:\n{}",
                    self.name,
                    self.events(event).len(),
                    self.tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Spring app `{}`: {} of {count} `{event}` events within {timeout:?}; its output:\n{}",
                self.name,
                events.len(),
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lines of Spring's own log that report a failed declaration or a
    /// failed binding, which a shared topology must never cause.
    pub fn declaration_errors(&self) -> Vec<String> {
        self.lines
            .lock()
            .iter()
            .filter(|l| {
                l.contains("PRECONDITION_FAILED")
                    || l.contains("inequivalent arg")
                    || l.contains("ProvisioningException")
                    || l.contains("Failed to declare")
                    || l.contains("Failed to start bean")
            })
            .cloned()
            .collect()
    }

    /// Kills the JVM and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // SIGKILL: the tests never need Spring's graceful shutdown, and a
        // JVM that hangs in shutdown must not hold the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for SpringApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpringApp")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Drop for SpringApp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One header of a Spring `received` event: its Java type and text (and
/// base64 for `byte[]`).
pub fn spring_header<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event["headers"].get(name)
}

/// A header's text as the Spring app printed it.
pub fn spring_header_text(event: &Value, name: &str) -> Option<String> {
    spring_header(event, name).and_then(|h| h["text"].as_str().map(str::to_owned))
}

/// Reads up to `count` messages of `queue` through the management API
/// without consuming them (they are requeued), as an operator would look
/// into a dead-letter queue. Each has `properties.headers` as RabbitMQ
/// holds them (with their AMQP types visible as JSON types).
pub fn rabbit_peek(queue: &str, count: usize) -> Vec<Value> {
    let url = format!(
        "http://127.0.0.1:15672/api/queues/%2F/{}/get",
        crate::rabbitmq::encode(queue)
    );
    let body = format!(
        r#"{{"count":{count},"ackmode":"ack_requeue_true","encoding":"auto","truncate":100000}}"#
    );
    let output = Command::new("curl")
        .args([
            "-fsS",
            "-m",
            "10",
            "-u",
            "guest:guest",
            "-H",
            "content-type: application/json",
            "-X",
            "POST",
            "-d",
            &body,
            &url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}) for the management API"));
    assert!(
        output.status.success(),
        "POST {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout) {
        Ok(Value::Array(messages)) => messages,
        other => panic!("POST {url}: not a JSON array: {other:?}"),
    }
}

/// Waits until `queue` holds at least `count` ready messages; returns them
/// (peeked, left in the queue).
pub async fn rabbit_wait_messages(queue: &str, count: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if crate::rabbitmq::management_has(&format!(
            "queues/%2F/{}",
            crate::rabbitmq::encode(queue)
        )) {
            let messages = rabbit_peek(queue, count.max(1) * 2);
            if messages.len() >= count {
                return messages;
            }
        }
        assert!(
            Instant::now() < deadline,
            "queue `{queue}`: fewer than {count} messages within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
