//! The dynamic sender's backend: binds producers on first use and keeps them.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bindery_core::codec::Codec;
use bindery_core::config::Wiring;
use bindery_core::error::{BinderError, BinderErrorKind};
use bindery_core::function::{SendError, SenderBackend};
use bindery_core::message::Message;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::binders::Binders;
use super::output::Output;
use super::stats::Registry;

pub(crate) struct DynamicSender {
    pub(crate) wiring: Arc<Wiring>,
    pub(crate) binders: Arc<Binders>,
    pub(crate) stats: Arc<Registry>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) outputs: Mutex<HashMap<String, Arc<Output>>>,
}

impl DynamicSender {
    async fn output(&self, name: &str) -> Result<Arc<Output>, SendError> {
        let mut outputs = self.outputs.lock().await;
        if let Some(output) = outputs.get(name) {
            return Ok(output.clone());
        }
        let plan = self.wiring.dynamic_output(name).ok_or_else(|| {
            SendError::Binder(BinderError::new(
                BinderErrorKind::InvalidOptions,
                format!("cannot send to `{name}`: no binding of that name and no default binder"),
            ))
        })?;
        let binder = self.binders.get(&plan.binder)?;
        let producer = binder.bind_producer(&plan.producer).await?;
        let output = Arc::new(Output::new(plan, producer, self.stats.binding(name)));
        outputs.insert(name.to_owned(), output.clone());
        Ok(output)
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
        if self.shutdown.is_cancelled() {
            return Err(SendError::NotRunning);
        }
        let output = self.output(name).await?;
        output.send_now(message).await.map_err(SendError::Binder)
    }
}
