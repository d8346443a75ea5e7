//! A consumer process for the SIGKILL test (`tests/behaviour.rs`; built
//! only with the `broker-tests` feature): binds
//! group `$2` of stream `$1` on `$BINDERY_TEST_REDIS_URL`, receives one
//! message, prints `holding <id>` and waits, never acknowledging, until it
//! is killed.

use bindery_core::binder::{Binder, ConsumeFrom, ConsumerSpec};
use bindery_redis::{RedisBinder, RedisSettings};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (stream, group) = (args.next().expect("stream"), args.next().expect("group"));
    let url = std::env::var("BINDERY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let binder = RedisBinder::new("redis", RedisSettings::new(url)).expect("binder");
    let spec = ConsumerSpec::new("hold-in-0", stream)
        .group(group)
        .prefetch(1);
    let mut consumer = binder
        .bind_consumer(ConsumeFrom::Destination(&spec))
        .await
        .expect("consumer");
    let delivery = consumer.recv().await.expect("a message");
    println!("holding {}", delivery.id());
    std::future::pending::<()>().await;
}
