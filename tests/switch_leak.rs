//! The heap of the coordinator's process stays flat over many switches
//! (issue "Hardening", item 3): a worker is handed addresses, not owned ring
//! ends, so nothing is left behind in the parent when its closure is
//! forgotten there. Measured with a counting global allocator over 100
//! switch pairs of a two-transform pipeline; before the fix each switch out
//! leaked ~4.3 KB per transform stage.

mod hybrid_support;

use hybrid_support::*;
use ringweave::{Mode, Pipeline, SwitchOutcome};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to `System`, which upholds `GlobalAlloc`'s contract; the
// counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn live_heap_is_flat_over_100_switch_pairs() {
    let _serial = serial();
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector::<u64>();
    let n = 1_000_000;
    let handle = Pipeline::from_iter(throttled(n, &fast))
        .map("double", |x: u64| x * 2)
        .map("inc", |x: u64| x + 1)
        .mode(manual_only(10_000))
        .batch_size(8)
        .sink(sink)
        .spawn()
        .unwrap();
    let pair = || {
        for to in [Mode::Distributed, Mode::InProcess] {
            let event = handle.switch_to(to).unwrap();
            assert_eq!(event.outcome, SwitchOutcome::Completed, "{event:?}");
        }
    };
    // Warm up: first-use allocations (thread names, the fence registration,
    // telemetry buffers) happen in the first few switches.
    for _ in 0..10 {
        pair();
    }
    let before = LIVE.load(Ordering::Relaxed);
    let pairs = 100;
    for _ in 0..pairs {
        pair();
    }
    let after = LIVE.load(Ordering::Relaxed);
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    assert_eq!(report.switches.len(), 2 * (10 + pairs));
    assert_eq!(take(&out), (0..n).map(|x| x * 2 + 1).collect::<Vec<_>>());

    // What legitimately grows: the run keeps every switch it made (the
    // report's `SwitchEvent`s and the metrics' `SwitchImpact`s, in vectors
    // that double). Allow that, twice over for the doubling, and a few
    // hundred bytes of noise from buffers that happen to be live.
    let per_switch = (std::mem::size_of::<ringweave::SwitchEvent>()
        + std::mem::size_of::<ringweave::SwitchImpact>()) as i64;
    let allowed = 2 * per_switch * 2 * pairs as i64 + 512;
    let grown = after - before;
    println!(
        "live heap grew {grown} bytes over {pairs} switch pairs \
         ({} per pair; switch records account for {} per pair)",
        grown / pairs as i64,
        2 * per_switch
    );
    assert!(
        grown <= allowed,
        "live heap grew {grown} bytes over {pairs} switch pairs (allowed {allowed})"
    );
}
