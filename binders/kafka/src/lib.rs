//! The Kafka binder of bindery (`type = "kafka"`), on rdkafka.

/// Keeps this binder linked (see `bindery_memory::link`).
pub fn link() {}
