//! The binder conformance suite against a real MQTT broker
//! (`BINDERY_TEST_MQTT_URL`, default mqtt://127.0.0.1:1883). Start one
//! with `scripts/brokers/ensure-mosquitto.sh`.

mod support;

use support::MqttHarness;

bindery_testkit::conformance_suite!(MqttHarness);
