//! The binder conformance suite against a real Kafka-compatible broker
//! (`BINDERY_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`; start Tansu
//! with `scripts/brokers/ensure-kafka.sh`).

use bindery_tests::kafka::KafkaHarness;

bindery_testkit::conformance_suite!(KafkaHarness);
