//! The binder conformance suite against the memory binder, each case on a
//! private broker of its own.

use std::sync::Arc;

use async_trait::async_trait;
use bindery::binder::Binder;
use bindery::memory::MemoryBinder;
use bindery_testkit::conformance::BinderHarness;

/// A private broker per case.
#[derive(Debug, Default)]
struct MemoryHarness;

#[async_trait]
impl BinderHarness for MemoryHarness {
    async fn binder(&self) -> Arc<dyn Binder> {
        Arc::new(MemoryBinder::isolated())
    }

    fn dead_letter_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

bindery_testkit::conformance_suite!(MemoryHarness);
