//! The binder conformance suite against a real Redis
//! (`BINDERY_TEST_REDIS_URL`, default redis://127.0.0.1:6379). Start one
//! with `scripts/brokers/ensure-redis.sh`.

mod common;

use common::RedisHarness;

bindery_testkit::conformance_suite!(RedisHarness);
