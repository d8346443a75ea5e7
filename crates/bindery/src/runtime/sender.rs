//! The dynamic sender's backend: binds producers on first use and keeps
//! the most recently used ones.
//!
//! It keeps working while shutdown drains the inputs, so a function that
//! sends in flight finishes (audit A10), and refuses sends only once the
//! inputs are done. It keeps at most [`MOST_OUTPUTS`] producers, closing
//! the least recently used, so per-tenant destination names do not grow
//! without bound (audit A16); binding one name never waits on another.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bindery_core::binder::BinderExt;
use bindery_core::codec::Codec;
use bindery_core::config::Wiring;
use bindery_core::error::{BinderError, BinderErrorKind};
use bindery_core::function::{SendError, SenderBackend};
use bindery_core::message::Message;
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::binders::Binders;
use super::output::Output;
use super::stats::Registry;

/// Most producers the dynamic sender keeps bound at once.
pub(crate) const MOST_OUTPUTS: usize = 64;

type Slot = Arc<OnceCell<Arc<Output>>>;

pub(crate) struct DynamicSender {
    wiring: Arc<Wiring>,
    binders: Arc<Binders>,
    stats: Arc<Registry>,
    closed: CancellationToken,
    outputs: Mutex<Outputs>,
}

/// Bound outputs by name, with the tick of their last use.
#[derive(Default)]
struct Outputs {
    slots: HashMap<String, (Slot, u64)>,
    tick: u64,
}

impl Outputs {
    /// The slot of `name`, made if absent; evicts the least recently used
    /// one when full.
    fn slot(&mut self, name: &str) -> (Slot, Option<Slot>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((slot, used)) = self.slots.get_mut(name) {
            *used = tick;
            return (slot.clone(), None);
        }
        let evicted = if self.slots.len() >= MOST_OUTPUTS {
            let oldest = self
                .slots
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone());
            oldest.and_then(|name| self.slots.remove(&name).map(|(slot, _)| slot))
        } else {
            None
        };
        let slot = Slot::default();
        self.slots.insert(name.to_owned(), (slot.clone(), tick));
        (slot, evicted)
    }
}

impl DynamicSender {
    pub(crate) fn new(
        wiring: Arc<Wiring>,
        binders: Arc<Binders>,
        stats: Arc<Registry>,
        closed: CancellationToken,
    ) -> Self {
        Self {
            wiring,
            binders,
            stats,
            closed,
            outputs: Mutex::default(),
        }
    }

    async fn output(&self, name: &str) -> Result<Arc<Output>, SendError> {
        let (slot, evicted) = self.outputs.lock().slot(name);
        if let Some(output) = evicted.and_then(|slot| slot.get().cloned()) {
            // Sends still using it hold their own reference; flushing lets
            // them finish before the producer goes.
            tokio::spawn(async move {
                let _ = output.producer().flush().await;
            });
        }
        slot.get_or_try_init(|| async {
            let plan = self.wiring.dynamic_output(name).ok_or_else(|| {
                SendError::Binder(BinderError::new(
                    BinderErrorKind::InvalidOptions,
                    format!(
                        "cannot send to `{name}`: no binding of that name and no default binder"
                    ),
                ))
            })?;
            let binder = self.binders.get(&plan.binder)?;
            let producer = binder.producer(&plan.producer).await?;
            Ok(Arc::new(Output::new(
                plan,
                producer,
                self.stats.binding(name),
            )))
        })
        .await
        .cloned()
    }

    /// How many producers are bound now.
    #[cfg(test)]
    fn bound(&self) -> usize {
        self.outputs.lock().slots.len()
    }
}

#[async_trait]
impl SenderBackend for DynamicSender {
    fn codec(&self, name: &str) -> Codec {
        self.wiring
            .dynamic_output(name)
            .and_then(|plan| Codec::for_content_type(&plan.content_type).ok())
            .unwrap_or(Codec::Json)
    }

    async fn send(&self, name: &str, message: Message) -> Result<(), SendError> {
        if self.closed.is_cancelled() {
            return Err(SendError::NotRunning);
        }
        let output = self.output(name).await?;
        output
            .send_confirmed(message)
            .await
            .map_err(|failure| SendError::Binder(failure.into_binder_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a16_the_least_recently_used_output_is_evicted_when_full() {
        let mut outputs = Outputs::default();
        for i in 0..MOST_OUTPUTS {
            assert!(outputs.slot(&format!("user.{i}")).1.is_none());
        }
        // user.0 is used again, so user.1 is now the oldest.
        outputs.slot("user.0");
        let (_, evicted) = outputs.slot("user.new");
        assert!(evicted.is_some());
        assert_eq!(outputs.slots.len(), MOST_OUTPUTS);
        assert!(outputs.slots.contains_key("user.0"));
        assert!(!outputs.slots.contains_key("user.1"));
    }

    #[tokio::test]
    async fn a16_sends_to_many_destinations_keep_a_bounded_set_of_producers() {
        let app = crate::App::builder()
            .without_registered_functions()
            .config_toml("[binders.memory]\ntype = \"memory\"\nbroker = \"a16-sender\"\n")
            .build()
            .unwrap();
        let running = app.start().await.unwrap();
        let sender = running.sender();
        for i in 0..(MOST_OUTPUTS * 3) {
            // No queue is bound, so each send is refused as unroutable; the
            // producer is bound all the same.
            let _ = sender.send(&format!("tenant.{i}"), i).await;
        }
        let backend = running.dynamic_sender_for_tests();
        assert_eq!(backend.bound(), MOST_OUTPUTS);
        running.shutdown().await.unwrap();
    }
}
