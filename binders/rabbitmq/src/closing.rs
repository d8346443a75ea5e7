//! Channels closing in the background. Shutdown waits for them before it
//! closes their connection: lapin logs an error for a connection closed
//! under a channel that is still closing.

use std::time::Duration;

use lapin::Channel;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

/// How long one channel may take to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The channels being closed.
#[derive(Debug, Default)]
pub(crate) struct Closings(Mutex<Vec<JoinHandle<()>>>);

impl Closings {
    /// Closes `channel` in the background (from a `Drop`, which cannot
    /// wait). Outside a runtime, lapin closes it when dropped.
    pub(crate) fn close(&self, channel: Channel, reason: &'static str) {
        if !channel.status().connected() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, reason.into())).await;
        });
        let mut tasks = self.0.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// Waits until every channel given so far is closed.
    pub(crate) async fn wait(&self) {
        let tasks = std::mem::take(&mut *self.0.lock());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, futures::future::join_all(tasks)).await;
    }
}
