//! uppercase — the canonical processor, as a long-running service.
//!
//! `uppercase` reads text from destination `words` in group `upper` and
//! writes its upper-case form to `upper-words` (content type `text/plain`).
//! A text containing the word `fail` raises a retryable error: after its
//! attempts (100 ms back-off in these configurations) it lands in the
//! dead-letter destination — `words.upper.dlq` on RabbitMQ, memory, Redis and MQTT,
//! `error.words.upper` on Kafka. The service runs until SIGINT or SIGTERM.
//!
//! ```text
//! cargo run --example uppercase -- --config examples/uppercase/memory.toml
//! cargo run --example uppercase -- --config examples/uppercase/rabbitmq.toml
//! cargo run --example uppercase -- --config examples/uppercase/kafka.toml
//! cargo run --example uppercase -- --config examples/uppercase/redis.toml
//! cargo run --example uppercase -- --config examples/uppercase/mqtt.toml
//! ```
//!
//! On the memory binder nothing outside the process can publish, so
//! `memory.toml` also runs `demo-words` (a source of a few texts) and two
//! sinks that print the output and the dead letters. On the brokers
//! only `uppercase` runs: publish to `words` with any client, e.g.
//! `rabbitmqadmin publish exchange=words routing_key=x payload="hello"`.

use bindery::prelude::*;
use futures::Stream;

/// The text asked to fail.
#[derive(Debug, thiserror::Error)]
#[error("refusing to upper-case `{0}`: it asks to fail")]
struct AskedToFail(String);

/// The processor: upper-cases text, or fails when the text says `fail`.
#[bindery::function]
async fn uppercase(text: String) -> Result<String, AskedToFail> {
    if text
        .split_whitespace()
        .any(|word| word.eq_ignore_ascii_case("fail"))
    {
        return Err(AskedToFail(text));
    }
    Ok(text.to_uppercase())
}

/// Demo source for the memory binder: a few texts, one of which fails.
#[bindery::function(name = "demo-words")]
async fn demo_words() -> impl Stream<Item = &'static str> {
    futures::stream::iter(["hello world", "please fail now", "bindery speaks up"])
}

/// Demo sink: prints what `uppercase` produced.
#[bindery::function(name = "show-upper")]
async fn show_upper(text: String) {
    println!("upper: {text}");
}

/// Demo sink: prints the dead letters with their reason.
#[bindery::function(name = "show-dead")]
async fn show_dead(text: String, headers: Headers) {
    let reason = headers.get("x-exception-message").unwrap_or("(no reason)");
    let attempts = headers.get("x-delivery-attempts").unwrap_or("?");
    println!("dead letter: {text} after {attempts} attempts: {reason}");
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    App::from_env()?.run().await
}
