//! The confirm stage: waits for the confirmations of one input's outputs
//! and decides what their outcome means for the input.

use std::collections::VecDeque;

use bindery_core::binder::Confirmation;
use bindery_core::error::{BinderError, FunctionError};
use futures::FutureExt;

use super::Disposition;

/// Confirmations still to come for the outputs of one input message (or
/// one source poll), and the first failure among those already in.
#[derive(Debug, Default)]
pub(crate) struct Confirmations {
    waiting: VecDeque<Confirmation>,
    sent: usize,
    first_error: Option<BinderError>,
}

impl Confirmations {
    /// Records one more sent message. A confirmation that is in already
    /// (the memory binder, a quick broker) is noted at once rather than
    /// kept: the common case then allocates nothing.
    pub(crate) fn push(&mut self, mut confirmation: Confirmation) {
        self.sent += 1;
        match (&mut confirmation).now_or_never() {
            Some(result) => self.note(result),
            None => self.waiting.push_back(confirmation),
        }
    }

    /// How many messages were sent.
    pub(crate) fn sent(&self) -> usize {
        self.sent
    }

    /// How many confirmations have not come in yet.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether a confirmation already failed.
    pub(crate) fn has_failed(&self) -> bool {
        self.first_error.is_some()
    }

    fn note(&mut self, result: Result<(), BinderError>) {
        if let Err(error) = result {
            self.first_error.get_or_insert(error);
        }
    }

    /// The outcome if every confirmation is already in (always so on the
    /// memory binder), without waiting: this saves boxing a settlement per
    /// message. Failures seen on the way are kept, never lost (audit A1).
    pub(crate) fn try_now(&mut self) -> Option<Result<(), BinderError>> {
        let first_error = &mut self.first_error;
        self.waiting
            .retain_mut(|confirmation| match confirmation.now_or_never() {
                Some(Err(error)) => {
                    first_error.get_or_insert(error);
                    false
                }
                Some(Ok(())) => false,
                None => true,
            });
        if self.waiting.is_empty() {
            Some(self.first_error.take().map_or(Ok(()), Err))
        } else {
            None
        }
    }

    /// Waits for the oldest confirmation still to come (keeping a window
    /// of unconfirmed outputs bounded).
    pub(crate) async fn wait_oldest(&mut self) {
        if let Some(confirmation) = self.waiting.pop_front() {
            let result = confirmation.await;
            self.note(result);
        }
    }

    /// Waits for every confirmation; the first failure wins.
    pub(crate) async fn wait(mut self) -> Result<(), BinderError> {
        while !self.waiting.is_empty() {
            self.wait_oldest().await;
        }
        self.first_error.map_or(Ok(()), Err)
    }
}

/// What the outcome of an input's confirmations means for the input: a
/// transient failure hands it back; a permanent one (an output the broker
/// refused or could not route) is a failure of the message.
pub(crate) fn disposition(outcome: Result<(), BinderError>, attempts: u32) -> Disposition {
    match outcome {
        Ok(()) => Disposition::Ack,
        Err(error) if error.is_transient() => Disposition::Requeue {
            reason: format!("an output was not confirmed: {error:#}"),
        },
        Err(error) => Disposition::DeadLetter {
            error: FunctionError::non_retryable(error),
            attempts,
        },
    }
}

#[cfg(test)]
mod tests {
    use bindery_core::error::BinderErrorKind;

    use super::*;

    fn failed(kind: BinderErrorKind) -> Confirmation {
        Confirmation::failed(BinderError::new(kind, "no"))
    }

    #[tokio::test]
    async fn a01_a_failure_seen_before_a_pending_confirmation_is_kept() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut confirmations = Confirmations::default();
        confirmations.push(Confirmation::pending(async move {
            rx.await.ok();
            Ok(())
        }));
        confirmations.push(failed(BinderErrorKind::Rejected));
        assert!(confirmations.try_now().is_none(), "one is still pending");
        assert!(confirmations.has_failed());
        tx.send(()).unwrap();
        let outcome = confirmations.wait().await;
        assert_eq!(outcome.unwrap_err().kind(), BinderErrorKind::Rejected);
    }

    #[tokio::test]
    async fn try_now_settles_what_is_in_and_reports_the_first_error() {
        let mut confirmations = Confirmations::default();
        confirmations.push(Confirmation::confirmed());
        confirmations.push(failed(BinderErrorKind::Unroutable));
        confirmations.push(failed(BinderErrorKind::Rejected));
        assert_eq!(confirmations.sent(), 3);
        let outcome = confirmations.try_now().expect("all in");
        assert_eq!(outcome.unwrap_err().kind(), BinderErrorKind::Unroutable);
    }

    #[test]
    fn transient_failures_requeue_and_permanent_ones_dead_letter() {
        assert!(matches!(disposition(Ok(()), 1), Disposition::Ack));
        let lost = BinderError::connection("gone");
        assert!(matches!(
            disposition(Err(lost), 1),
            Disposition::Requeue { .. }
        ));
        let refused = BinderError::new(BinderErrorKind::Rejected, "too large");
        match disposition(Err(refused), 2) {
            Disposition::DeadLetter { error, attempts } => {
                assert_eq!(attempts, 2);
                assert!(!error.is_retryable());
            }
            other => panic!("{other:?}"),
        }
    }
}
