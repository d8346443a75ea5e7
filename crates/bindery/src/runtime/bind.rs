//! Binding with patience: a broker that is down at start-up must not stop
//! the app, so transient bind errors are retried with back-off.

use std::future::Future;
use std::time::Duration;

use bindery_core::binder::kit::Pauses;
use bindery_core::error::{BinderError, Error};
use tokio_util::sync::CancellationToken;

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Calls `bind` until it succeeds. Transient errors are logged once per
/// attempt and retried with back-off; others are fatal. `None` when
/// shutdown came first.
pub(crate) async fn with_retry<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut bind: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BinderError>>,
{
    let mut pauses = Pauses::doubling(FIRST_PAUSE, LONGEST_PAUSE);
    let mut attempt = 1u32;
    loop {
        let result = tokio::select! {
            result = bind() => result,
            () = shutdown.cancelled() => return Ok(None),
        };
        match result {
            Ok(bound) => {
                if attempt > 1 {
                    tracing::info!("{what}: bound after {attempt} attempts");
                }
                return Ok(Some(bound));
            }
            Err(error) if error.is_transient() => {
                let pause = pauses.next_pause();
                tracing::warn!(
                    "{what}: attempt {attempt} failed, retrying in {pause:?}: {error:#}"
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
                attempt += 1;
            }
            Err(error) => {
                tracing::error!("{what}: {error:#}");
                return Err(Error::Binder(error));
            }
        }
    }
}
