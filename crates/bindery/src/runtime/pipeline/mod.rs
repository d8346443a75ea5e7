//! The stages one delivery goes through, each with one job:
//!
//! 1. [`invoke`]: decode → call (panics caught, time bounded) → encode →
//!    publish; returns the outputs' [`Confirmations`] or a [`Failure`];
//! 2. [`confirm`]: waits for those confirmations and turns them into a
//!    [`Disposition`];
//! 3. [`retry`]: after a failed attempt, waits out the back-off or gives up;
//! 4. [`dead_letter`]: parks a message that failed for good, and decides
//!    the [`Settlement`] once the dead letter is confirmed (or cannot be);
//! 5. [`settle`]: acks, requeues or rejects the delivery, exactly once.
//!
//! Each stage takes and returns plain values, so each is tested on its own;
//! [`super::input`] strings them together per lane.

pub(crate) mod confirm;
pub(crate) mod dead_letter;
pub(crate) mod invoke;
pub(crate) mod retry;
pub(crate) mod settle;

use bindery_core::error::FunctionError;

pub(crate) use confirm::Confirmations;

/// Why an attempt did not end with its outputs handed to the broker.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The message's processing failed: the function returned an error or
    /// panicked, the payload could not be decoded, or the broker refused
    /// an output for its content. The retry policy decides what follows.
    Function(FunctionError),
    /// Not the message's fault (the broker is away, the app is shutting
    /// down): the message goes back to the broker without using an attempt.
    Transient(String),
}

/// What should become of a delivery once its attempts are over.
#[derive(Debug)]
pub(crate) enum Disposition {
    /// Done: every output is confirmed.
    Ack,
    /// Hand the message back for redelivery; no attempt is used.
    Requeue { reason: String },
    /// Failed for good after `attempts` invocations.
    DeadLetter { error: FunctionError, attempts: u32 },
}

/// What is finally done with a delivery at the broker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Acknowledge: processed, or parked in the dead-letter destination.
    Ack,
    /// Give it back for redelivery.
    Requeue { reason: String },
    /// Reject without requeue: the broker dead-letters it itself.
    RejectToBroker { reason: String },
    /// Reject without requeue: dropped (dead-lettering is off).
    Drop { reason: String },
}
