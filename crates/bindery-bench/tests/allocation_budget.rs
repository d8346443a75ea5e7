//! The hot path's allocation budget as a gate: 20,000 messages through the
//! memory binder's source > processor > sink with byte payloads, counted by
//! a counting global allocator (`stats_alloc`). The count is deterministic enough to gate
//! on; the test prints it so a change shows what it cost.
//!
//! Each message makes two hops today, and each hop allocates the function's
//! boxed future and the boxed delivery handle: 4 per message. Anything more
//! is a regression (before the `start_send` / `ack_now` fast paths it was 9).

use std::alloc::System;

use bindery_bench::memory::{Payload, bindery_pipeline};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

/// Allocations of one pipeline run of `messages`.
fn allocations_of(messages: u64) -> u64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = allocations();
    runtime.block_on(bindery_pipeline(Payload::Bytes, messages));
    allocations() - before
}

#[test]
fn the_memory_pipeline_allocates_at_most_four_times_per_message() {
    const BUDGET: f64 = 4.0;
    // The difference of two runs takes start-up and shutdown out.
    let small = allocations_of(2_000);
    let large = allocations_of(22_000);
    let per_message = (large.saturating_sub(small)) as f64 / 20_000.0;
    println!("allocations per message (source > processor > sink, bytes): {per_message:.2}");
    assert!(
        per_message <= BUDGET + 0.1,
        "the memory pipeline allocates {per_message:.2} times per message; the budget is {BUDGET}"
    );
}
