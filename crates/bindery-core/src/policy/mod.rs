//! Delivery policies, one job each: [`retry`] decides whether and when to
//! invoke again, [`dead_letter`] builds the message parked after the last
//! attempt, [`redrive`] prepares a dead letter for another go.

pub mod dead_letter;
pub mod redrive;
pub mod retry;

pub use dead_letter::DeadLetter;
pub use retry::{Backoff, InvalidPolicy, RetryDecision, RetryPolicy};
