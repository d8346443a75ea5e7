//! placeholder until the rabbitmq binder lands
