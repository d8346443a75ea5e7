//! registration — one event, two services.
//!
//! Registering a user publishes a `user-registered` event. The mail sender
//! (group `mail`) sends the confirmation mail; the audit log writer (group
//! `audit`) writes the login log. Each group gets every event, and — in the
//! normal case — each event exactly once. The program prints what each
//! service did and exits.
//!
//! ```text
//! cargo run --example registration -- --config examples/registration/memory.toml
//! cargo run --example registration -- --config examples/registration/rabbitmq.toml
//! cargo run --example registration -- --config examples/registration/kafka.toml
//! cargo run --example registration -- --config examples/registration/redis.toml
//! cargo run --example registration -- --config examples/registration/mqtt.toml
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use bindery::prelude::*;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;

const USERS: u64 = 10;

#[derive(Debug, Serialize, Deserialize)]
struct UserRegistered {
    user_id: u64,
    email: String,
}

/// The registration flow: one event per new user.
#[bindery::function]
async fn register() -> impl Stream<Item = UserRegistered> {
    futures::stream::iter((1..=USERS).map(|user_id| UserRegistered {
        user_id,
        email: format!("user{user_id}@example.com"),
    }))
}

/// The mail service.
#[bindery::function(name = "send-mail")]
async fn send_mail(event: UserRegistered, State(seen): State<Arc<Seen>>) {
    tracing::info!(to = %event.email, "confirmation mail sent");
    seen.record("mail", event.user_id);
}

/// The log service.
#[bindery::function(name = "write-audit-log")]
async fn write_audit_log(event: UserRegistered, State(seen): State<Arc<Seen>>) {
    tracing::info!(user = event.user_id, "login log written");
    seen.record("audit", event.user_id);
}

/// Events seen per service: user id → times seen.
#[derive(Debug, Default)]
struct Seen {
    by_service: Mutex<BTreeMap<&'static str, BTreeMap<u64, u32>>>,
    complete: Notify,
}

impl Seen {
    fn record(&self, service: &'static str, user_id: u64) {
        let mut by_service = self.by_service.lock();
        *by_service
            .entry(service)
            .or_default()
            .entry(user_id)
            .or_default() += 1;
        let all_seen = ["mail", "audit"].iter().all(|s| {
            by_service
                .get(s)
                .is_some_and(|users| users.len() as u64 == USERS)
        });
        if all_seen {
            self.complete.notify_one();
        }
    }
}

#[tokio::main]
async fn main() -> bindery::Result<()> {
    let seen = Arc::new(Seen::default());
    let app = App::builder().state(seen.clone()).from_env()?;
    app.run_until(seen.complete.notified()).await?;
    for (service, users) in seen.by_service.lock().iter() {
        let duplicates: u32 = users.values().map(|n| n - 1).sum();
        println!("{service}: {} users, {duplicates} duplicates", users.len());
    }
    Ok(())
}
