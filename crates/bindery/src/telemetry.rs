//! Logging: `tracing` to standard error, filtered by `RUST_LOG`
//! (default [`DEFAULT_FILTER`]).

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set: `info`, but lapin's
/// `returned_messages` only from `error`. lapin logs every returned
/// (unroutable) message at `WARN` with its whole payload and headers,
/// which puts message content in the log and can make one line megabytes
/// long; the binder reports the failed send itself.
const DEFAULT_FILTER: &str = "info,lapin::returned_messages=error";

/// Installs the subscriber unless the program installed one already.
pub(crate) fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// `RUST_LOG` when set and valid, else [`DEFAULT_FILTER`].
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether lapin's returned-message WARN and ERROR lines, and a
    /// bindery WARN line, pass `filter`.
    fn passes(filter: EnvFilter) -> [bool; 3] {
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            [
                tracing::enabled!(target: "lapin::returned_messages", Level::WARN),
                tracing::enabled!(target: "lapin::returned_messages", Level::ERROR),
                tracing::enabled!(target: "bindery::runtime", Level::WARN),
            ]
        })
    }

    #[test]
    fn a18_default_filter_silences_lapins_returned_payloads() {
        assert_eq!(passes(EnvFilter::new(DEFAULT_FILTER)), [false, true, true]);
        // A filter from RUST_LOG stays in charge.
        assert_eq!(passes(EnvFilter::new("warn")), [true, true, true]);
    }
}
