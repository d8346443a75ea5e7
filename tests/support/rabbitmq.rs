//! Test support for the rabbitmq binder.
