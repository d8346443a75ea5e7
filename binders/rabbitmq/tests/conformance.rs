//! The binder conformance suite against a real RabbitMQ
//! (`BINDERY_TEST_RABBITMQ_URI`, default guest@127.0.0.1:5672). Start one
//! with `scripts/brokers/ensure-rabbitmq.sh`.

use bindery_tests::rabbitmq::RabbitHarness;

bindery_testkit::conformance_suite!(RabbitHarness);
