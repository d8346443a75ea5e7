//! The RabbitMQ binder of bindery (`type = "rabbitmq"`), on lapin.

/// Keeps this binder linked (see `bindery_memory::link`).
pub fn link() {}
