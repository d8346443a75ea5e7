//! Test support for the kafka binder.
