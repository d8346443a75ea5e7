//! Test support for the MQTT binder: the broker under test, the
//! conformance harness, and a private Mosquitto the fault tests may kill.
//!
//! The broker is `BINDERY_TEST_MQTT_URL` (default `mqtt://127.0.0.1:1883`).
//! A test that cannot reach it fails, saying how to start it.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bindery::binder::Binder;
use bindery::mqtt::{MqttBinder, MqttSettings, redact_url};
use bindery_testkit::conformance::BinderHarness;
use bindery_testkit::unique_name;

/// How to get a broker, for failure messages.
pub const START_HINT: &str = "start one with `scripts/brokers/ensure-mosquitto.sh` \
     (installs and starts Mosquitto at 127.0.0.1:1883), or point BINDERY_TEST_MQTT_URL at one";

/// The broker under test.
pub fn url() -> String {
    std::env::var("BINDERY_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

/// Settings for `url` with a fresh client-id prefix (sessions of earlier
/// runs never meet this run's) and short reconnect pauses.
pub fn settings(url: &str, prefix: &str) -> MqttSettings {
    MqttSettings::new(url)
        .client_id_prefix(unique_name(prefix))
        .reconnect_interval(Duration::from_millis(100), Duration::from_secs(1))
}

/// A connected binder on `url`, or the test fails saying how to start a broker.
pub async fn connected_binder_at(url: &str, prefix: &str) -> Arc<MqttBinder> {
    let binder = Arc::new(MqttBinder::new("mqtt", settings(url, prefix)).expect("valid settings"));
    if let Err(error) = binder.connect().await {
        panic!(
            "no MQTT broker answers at {}: {error:#}\n{START_HINT}",
            redact_url(url)
        );
    }
    binder
}

/// A connected binder on the broker under test.
pub async fn connected_binder(prefix: &str) -> Arc<MqttBinder> {
    connected_binder_at(&url(), prefix).await
}

/// The MQTT binder under the conformance suite: a binder per case.
#[derive(Debug, Default)]
pub struct MqttHarness;

#[async_trait]
impl BinderHarness for MqttHarness {
    async fn binder(&self) -> Arc<dyn Binder> {
        connected_binder("bindery-conformance").await
    }

    fn dead_letter_headers(&self) -> &'static [&'static str] {
        &["x-original-topic"]
    }
}

/// A private Mosquitto on a free loopback port with persistence on, which
/// a test may kill with SIGKILL and start again with its data.
pub struct PrivateBroker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Starts one; fails naming the install script when Mosquitto is missing.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(unique_name("bindery-mosquitto"));
        std::fs::create_dir_all(dir.join("data")).expect("broker dir");
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\nautosave_on_changes true\n\
             max_queued_messages 100000\nmax_inflight_messages 0\nuser root\n\
             log_dest file {}\n",
            dir.join("data").display(),
            dir.join("mosquitto.log").display()
        );
        std::fs::write(dir.join("mosquitto.conf"), config).expect("broker config");
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.launch();
        broker
    }

    /// The broker's url.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("mosquitto is not installed; {START_HINT}"));
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}; {START_HINT}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private mosquitto did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker with SIGKILL (no chance to save anything more).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL mosquitto");
            child.wait().expect("reap mosquitto");
        }
    }

    /// Starts the broker again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
