//! The binder conformance suite against the in-memory binder.

use bindery_tests::MemoryHarness;

bindery_testkit::conformance_suite!(MemoryHarness);
