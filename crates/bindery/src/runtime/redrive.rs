//! Redrive: moves dead letters back in front of their group.
//!
//! A run ends when the dead-letter destination is idle, at its limit, or
//! when a message it moved comes back (it failed again): so it ends even
//! while the consumers still fail, instead of moving the same messages in
//! a loop (audit A11). Each moved message carries the run's id.

use std::time::Duration;

use bindery_core::binder::{ConsumeFrom, GroupBinding, PublishTo};
use bindery_core::config::Wiring;
use bindery_core::error::Error;
use bindery_core::policy::redrive;
use tracing::info;

use super::binders::Binders;

/// How long to wait for the first dead letter, and between later ones,
/// before deciding the dead-letter destination is empty.
const FIRST_WAIT: Duration = Duration::from_secs(3);
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Moves at most `limit` dead letters of input binding `name` back to its
/// group; returns how many moved.
pub(crate) async fn run(
    wiring: &Wiring,
    binders: &Binders,
    name: &str,
    limit: Option<usize>,
) -> Result<usize, Error> {
    let Some(input) = wiring.input(name) else {
        let inputs: Vec<&str> = wiring
            .functions
            .iter()
            .filter_map(|f| f.input.as_ref().map(|i| i.binding.as_str()))
            .collect();
        return Err(Error::Usage(format!(
            "`{name}` is not an input binding of this app; input bindings: {}",
            if inputs.is_empty() {
                "(none)".to_owned()
            } else {
                inputs.join(", ")
            }
        )));
    };
    let spec = &input.consumer;
    let Ok(group) = GroupBinding::of(spec) else {
        return Err(Error::Usage(format!(
            "binding `{name}` has no group, so it has no dead-letter destination"
        )));
    };
    let binder = binders.get(&input.binder)?;
    let source = binder.dead_letter_name(group);
    let mut dead_letters = binder
        .bind_consumer(ConsumeFrom::DeadLetters(group))
        .await?;
    let producer = binder.bind_producer(PublishTo::Group(group)).await?;
    let run = run_id();
    let mut moved = 0;
    let mut wait = FIRST_WAIT;
    while limit.is_none_or(|limit| moved < limit) {
        let Ok(Some(delivery)) = tokio::time::timeout(wait, dead_letters.recv()).await else {
            break;
        };
        let (message, acker) = delivery.into_parts();
        if redrive::moved_by(&message, &run) {
            info!("redrive: a message moved by this run is back in `{source}`; stopping");
            acker.nack(true).await?;
            break;
        }
        producer
            .send(redrive::prepare(message, &run))
            .await?
            .await?;
        acker.ack().await?;
        moved += 1;
        wait = IDLE_WAIT;
    }
    dead_letters.cancel().await?;
    info!(
        "redrive: moved {moved} dead letter(s) from `{source}` back to destination `{}` group `{}`",
        spec.destination,
        spec.group.as_deref().unwrap_or_default()
    );
    Ok(moved)
}

/// An id unique to this redrive run.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}
