//! Test support for the RabbitMQ binder: the conformance harness, and
//! helpers that act on the broker as an operator would (closing
//! connections, reading the management API).
//!
//! The broker is `BINDERY_TEST_RABBITMQ_URI` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`) with its management API on
//! port 15672. A test that cannot reach it fails, saying how to start it.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery::binder::Binder;
use bindery::rabbitmq::{RabbitBinder, RabbitSettings, redact_uri};
use bindery_testkit::conformance::BinderHarness;
use bindery_testkit::unique_name;

/// How to get a broker, for failure messages.
pub const START_HINT: &str = "start it with `scripts/brokers/ensure-rabbitmq.sh` \
     (installs and starts RabbitMQ at 127.0.0.1:5672), or point BINDERY_TEST_RABBITMQ_URI at one";

/// The broker under test.
pub fn uri() -> String {
    std::env::var("BINDERY_TEST_RABBITMQ_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Settings for the broker under test, with connection names starting
/// with `prefix` so a test can close exactly its own connections.
pub fn settings(prefix: &str) -> RabbitSettings {
    RabbitSettings::new(uri())
        .connection_name(prefix)
        .reconnect_interval(Duration::from_millis(100), Duration::from_secs(2))
}

/// A binder on the broker under test whose connections are named after a
/// fresh `prefix`; connected, or the test fails saying how to start the
/// broker.
pub async fn connected_binder(prefix: &str) -> (Arc<RabbitBinder>, String) {
    let prefix = unique_name(prefix);
    let binder = Arc::new(RabbitBinder::new("rabbit", settings(&prefix)));
    if let Err(error) = binder.connect().await {
        panic!(
            "RabbitMQ does not answer at {}: {error}\n{START_HINT}",
            redact_uri(&uri())
        );
    }
    (binder, prefix)
}

/// The RabbitMQ binder under the conformance suite: a binder per case, so
/// each case's connections live on its own runtime.
#[derive(Debug, Default)]
pub struct RabbitHarness;

#[async_trait]
impl BinderHarness for RabbitHarness {
    async fn binder(&self) -> Arc<dyn Binder> {
        connected_binder("bindery-conformance").await.0
    }

    fn dead_letter_headers(&self) -> &'static [&'static str] {
        &["x-original-exchange", "x-original-routingKey"]
    }
}

/// Closes, as an operator would (`rabbit_networking:close_connection`, what
/// `rabbitmqctl close_connection` does), every connection whose
/// client-provided name starts with `prefix`; the clients see
/// `CONNECTION_FORCED`. One `rabbitmqctl eval`, so it takes well under a
/// second even on a busy machine. Returns how many were closed.
pub fn close_connections(prefix: &str) -> usize {
    assert!(
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._- ".contains(c)),
        "a connection-name prefix that needs no quoting: {prefix}"
    );
    let expression = format!(
        r#"P = <<"{prefix}">>,
        Named = fun(Pid) ->
            case catch rabbit_networking:connection_info(Pid, [client_properties]) of
                [{{client_properties, Props}}] ->
                    lists:any(fun({{<<"connection_name">>, longstr, N}}) ->
                                      binary:longest_common_prefix([N, P]) =:= byte_size(P);
                                  (_) -> false
                              end, Props);
                _ -> false
            end
        end,
        length([rabbit_networking:close_connection(Pid, "closed by a bindery test")
                || Pid <- rabbit_networking:connections(), Named(Pid)])."#
    );
    let printed = rabbitmqctl(&["eval", &expression]);
    printed
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("rabbitmqctl eval printed `{printed}`, not a count: {e}"))
}

/// Runs `rabbitmqctl -q ARGS`, failing the test with the start hint when
/// it cannot run or the node does not answer.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl ({e}); {START_HINT}"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}\n{START_HINT}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// GETs `path` (after `/api/`) from the management API as guest.
pub fn management(path: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:15672/api/{path}");
    let output = Command::new("curl")
        .args(["-fsS", "-m", "10", "-u", "guest:guest", &url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}) for the management API"));
    assert!(
        output.status.success(),
        "GET {url} failed: {}\n{START_HINT}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// DELETEs `path` (after `/api/`) on the management API as guest, as an
/// operator deleting a queue would.
pub fn management_delete(path: &str) {
    let url = format!("http://127.0.0.1:15672/api/{path}");
    let output = Command::new("curl")
        .args([
            "-fsS",
            "-m",
            "10",
            "-u",
            "guest:guest",
            "-X",
            "DELETE",
            &url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}) for the management API"));
    assert!(
        output.status.success(),
        "DELETE {url} failed: {}\n{START_HINT}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `path` (after `/api/`) exists on the management API.
pub fn management_has(path: &str) -> bool {
    let url = format!("http://127.0.0.1:15672/api/{path}");
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "10",
            "-u",
            "guest:guest",
            &url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}) for the management API"));
    String::from_utf8_lossy(&output.stdout) == "200"
}

/// A name as a path segment of the management API.
pub fn encode(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// PUTs `body` (JSON) to `path` (after `/api/`) on the management API as
/// guest, as an operator declaring an exchange or a queue would.
pub fn management_put(path: &str, body: &serde_json::Value) {
    let url = format!("http://127.0.0.1:15672/api/{path}");
    let output = Command::new("curl")
        .args([
            "-fsS",
            "-m",
            "10",
            "-u",
            "guest:guest",
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
            &url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}) for the management API"));
    assert!(
        output.status.success(),
        "PUT {url} failed: {}\n{START_HINT}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The three-node cluster of `scripts/brokers/rabbitmq-cluster.sh`, for the
/// cluster fault tests: its nodes, their management APIs, and the script
/// that kills and restarts them.
pub mod cluster {
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Duration;

    use bindery::rabbitmq::lapin::uri::AMQPUri;
    use bindery::rabbitmq::redact_uri;

    /// How to get the cluster, for failure messages.
    pub const CLUSTER_HINT: &str = "start it with `scripts/brokers/rabbitmq-cluster.sh start` \
         (nodes rabbit-c1..c3@localhost on 127.0.0.1:5681..5683), or point \
         BINDERY_TEST_RABBITMQ_CLUSTER at the script's nodes (comma-separated AMQP URIs)";

    /// The URIs of the script's nodes, in node order.
    pub const DEFAULT_URIS: &str = "amqp://guest:guest@127.0.0.1:5681/%2f,\
         amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f";

    /// One node of the cluster.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Node {
        /// 1..3, as the script numbers it (`kill N`, `start-node N`).
        pub number: u8,
        /// Its AMQP URI.
        pub uri: String,
        /// Its Erlang node name, `rabbit-cN@localhost`, as the broker reports
        /// leaders and connections.
        pub name: String,
    }

    impl Node {
        /// The node's management API port (15680 + N).
        pub fn management_port(&self) -> u16 {
            15680 + u16::from(self.number)
        }
    }

    /// The cluster under test: `BINDERY_TEST_RABBITMQ_CLUSTER` (default the
    /// script's three nodes). Fails the test, naming the script, when a node
    /// does not answer or is not one the script runs.
    pub fn nodes() -> Vec<Node> {
        let list = std::env::var("BINDERY_TEST_RABBITMQ_CLUSTER")
            .unwrap_or_else(|_| DEFAULT_URIS.to_owned());
        let nodes: Vec<Node> = list
            .split(',')
            .map(str::trim)
            .filter(|uri| !uri.is_empty())
            .map(|uri| {
                let parsed: AMQPUri = uri.parse().unwrap_or_else(|e| {
                    panic!("BINDERY_TEST_RABBITMQ_CLUSTER: `{}` is not an AMQP URI: {e}", redact_uri(uri))
                });
                let port = parsed.authority.port;
                assert!(
                    (5681..=5683).contains(&port),
                    "BINDERY_TEST_RABBITMQ_CLUSTER: {} is not a node of the script (ports 5681..5683): \
                     the test kills and restarts nodes through it; {CLUSTER_HINT}",
                    redact_uri(uri)
                );
                let number = u8::try_from(port - 5680).expect("1..3");
                let address = format!("{}:{port}", parsed.authority.host);
                let answers = address
                    .parse()
                    .ok()
                    .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
                    .is_some();
                assert!(
                    answers,
                    "RabbitMQ cluster node rabbit-c{number}@localhost does not answer at {address} \
                     (the cluster is down?); {CLUSTER_HINT}"
                );
                Node {
                    number,
                    uri: uri.to_owned(),
                    name: format!("rabbit-c{number}@localhost"),
                }
            })
            .collect();
        assert!(
            nodes.len() == 3,
            "BINDERY_TEST_RABBITMQ_CLUSTER names {} nodes; the fault test needs the three of the script; {CLUSTER_HINT}",
            nodes.len()
        );
        nodes
    }

    /// Runs `scripts/brokers/rabbitmq-cluster.sh ARGS`, returning what it
    /// printed; fails the test with its output when it fails.
    pub fn script(args: &[&str]) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/brokers/rabbitmq-cluster.sh");
        let output = Command::new(&path)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "rabbitmq-cluster.sh {args:?} failed:\n{printed}"
        );
        printed
    }

    /// Starts node `number` again when dropped, unless
    /// [`restarted`](Self::restarted) was called: a test that fails after
    /// killing a node leaves the cluster whole for the next one.
    #[derive(Debug)]
    pub struct RestartOnDrop(pub Option<u8>);

    impl RestartOnDrop {
        /// The test restarted the node itself.
        pub fn restarted(&mut self) {
            self.0 = None;
        }
    }

    impl Drop for RestartOnDrop {
        fn drop(&mut self) {
            let Some(number) = self.0.take() else {
                return;
            };
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../scripts/brokers/rabbitmq-cluster.sh");
            // No panic here: this may run while the test unwinds.
            match Command::new(&path)
                .args(["start-node", &number.to_string()])
                .status()
            {
                Ok(status) if status.success() => {}
                outcome => eprintln!(
                    "could not start node {number} again ({outcome:?}); run `{} start`",
                    path.display()
                ),
            }
        }
    }

    /// GETs `path` (after `/api/`) from `node`'s management API as guest;
    /// `None` when the node does not answer (it may be the one killed).
    pub fn management(node: &Node, path: &str) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/{path}", node.management_port());
        let output = Command::new("curl")
            .args(["-fsS", "-m", "5", "-u", "guest:guest", &url])
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl ({e}) for the management API"));
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `path` from the first node of `nodes` whose management API answers.
    pub fn any_management(nodes: &[&Node], path: &str) -> Option<serde_json::Value> {
        nodes.iter().find_map(|node| management(node, path))
    }

    /// The node holding the leader of quorum queue `queue` (vhost `/`), as
    /// the first answering management API of `nodes` reports it.
    pub fn quorum_leader(nodes: &[&Node], queue: &str) -> Option<String> {
        let queue = any_management(nodes, &format!("queues/%2f/{}", super::encode(queue)))?;
        queue["leader"].as_str().map(str::to_owned)
    }

    /// The nodes holding the connections whose client-provided name starts
    /// with `prefix`, one entry per connection.
    pub fn connection_nodes(nodes: &[&Node], prefix: &str) -> Vec<String> {
        let Some(connections) = any_management(nodes, "connections") else {
            return Vec::new();
        };
        connections
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["client_properties"]["connection_name"]
                    .as_str()
                    .is_some_and(|name| name.starts_with(prefix))
            })
            .filter_map(|c| c["node"].as_str().map(str::to_owned))
            .collect()
    }
}
