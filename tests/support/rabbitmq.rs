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
