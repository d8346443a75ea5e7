//! The broker side of the RabbitMQ scenarios: connecting (or failing with
//! how to start the broker), fresh names per round, the topology bindery
//! declares, preloading a backlog and cleaning up after a round.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// How to get a broker, for failure messages.
pub const START_HINT: &str = "start it with `scripts/brokers/ensure-rabbitmq.sh` \
     (installs and starts RabbitMQ at 127.0.0.1:5672), or point BINDERY_TEST_RABBITMQ_URI at one";

/// Publishes in flight while preloading: enough to keep the broker busy,
/// few enough that it never applies flow control.
const PRELOAD_WINDOW: usize = 1_000;

/// The broker: `BINDERY_TEST_RABBITMQ_URI`, as for the tests, else the
/// local one.
pub fn uri() -> String {
    std::env::var("BINDERY_TEST_RABBITMQ_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A connection named `name` (as the broker's management UI shows it), or
/// a panic that says how to start the broker.
pub async fn connect(name: &str) -> Connection {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match Connection::connect(&uri(), properties).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "RabbitMQ does not answer at {}: {error}\n{START_HINT}",
            bindery::rabbitmq::redact_uri(&uri())
        ),
    }
}

/// Closes `connections`.
pub async fn close<const N: usize>(connections: [Connection; N]) {
    for connection in connections {
        let _ = connection.close(200, "done".into()).await;
    }
}

/// The destinations of one round, unique across rounds and runs (a broker
/// keeps what earlier runs left behind if they were interrupted).
#[derive(Clone, Debug)]
pub struct Names {
    round: String,
}

/// The group of the input binding and of the output's `required-groups`.
pub const GROUP: &str = "bench";

impl Names {
    /// Fresh names tagged with `side` (`raw`, `bindery`, ...).
    pub fn fresh(side: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::of(&format!(
            "bench-{side}-{}-{stamp}-{next}",
            std::process::id()
        ))
    }

    /// The names of round `round` (what [`round`](Self::round) returned),
    /// for a child process.
    pub fn of(round: &str) -> Self {
        Self {
            round: round.to_owned(),
        }
    }

    /// What identifies the round.
    pub fn round(&self) -> &str {
        &self.round
    }

    /// The input destination (exchange); its group queue holds the backlog.
    pub fn input(&self) -> String {
        format!("{}-in", self.round)
    }

    /// The output destination (exchange).
    pub fn output(&self) -> String {
        format!("{}-out", self.round)
    }

    /// The group queue of the input.
    pub fn input_queue(&self) -> String {
        group_queue(&self.input())
    }

    /// The group queue of the output, where the results pile up.
    pub fn output_queue(&self) -> String {
        group_queue(&self.output())
    }
}

/// `<destination>.bench`, as the binder names a group queue.
fn group_queue(destination: &str) -> String {
    format!("{destination}.{GROUP}")
}

/// An admin connection: declares, preloads and deletes.
#[derive(Debug)]
pub struct Admin {
    connection: Connection,
    channel: Channel,
}

impl Admin {
    /// Connects, or panics saying how to start the broker.
    pub async fn connect() -> Self {
        let connection = connect("bindery-bench admin").await;
        let channel = connection.create_channel().await.expect("admin channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Self {
            connection,
            channel,
        }
    }

    /// Declares `destination` and its group queue exactly as the binder
    /// does (a durable topic exchange; a durable queue bound with `#` whose
    /// rejections go to `DLX`), so either side may declare it first.
    pub async fn declare_group(&self, destination: &str) {
        let queue = group_queue(destination);
        self.channel
            .exchange_declare(
                destination.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the exchange");
        let mut arguments = FieldTable::default();
        let long = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        arguments.insert("x-dead-letter-exchange".into(), long("DLX"));
        arguments.insert("x-dead-letter-routing-key".into(), long(&queue));
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .expect("declare the group queue");
        self.channel
            .queue_bind(
                queue.as_str().into(),
                destination.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the group queue");
    }

    /// Declares `destination`'s group and fills its queue with `messages`
    /// persistent JSON orders, every one confirmed.
    pub async fn preload(&self, destination: &str, messages: u64) {
        self.declare_group(destination).await;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let mut confirms = FuturesUnordered::new();
        for id in 0..messages {
            let confirm = self
                .channel
                .basic_publish(
                    destination.into(),
                    destination.into(),
                    BasicPublishOptions::default(),
                    &crate::order::Order::encoded(id),
                    properties.clone(),
                )
                .await
                .expect("preload publish");
            confirms.push(confirm);
            if confirms.len() >= PRELOAD_WINDOW {
                expect_ack(confirms.next().await);
            }
        }
        while let Some(confirmed) = confirms.next().await {
            expect_ack(Some(confirmed));
        }
    }

    /// Deletes the queues and exchanges of a round, and the dead-letter
    /// queues bindery's consumers declared, so rounds leave nothing behind.
    pub async fn delete(&self, names: &Names) {
        for queue in [
            names.input_queue(),
            format!("{}.dlq", names.input_queue()),
            names.output_queue(),
            format!("{}.dlq", names.output_queue()),
        ] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [names.input(), names.output()] {
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn expect_ack(confirmed: Option<lapin::Result<lapin::Confirmation>>) {
    let confirmation = confirmed
        .expect("a confirm is pending")
        .expect("preload confirm");
    assert!(
        confirmation.is_ack(),
        "the broker refused a preloaded message"
    );
}
