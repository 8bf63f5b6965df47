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

/// Heap a run keeps per switch: its `SwitchEvent` in the report and its
/// `SwitchImpact` in the metrics.
fn per_switch() -> i64 {
    (std::mem::size_of::<ringweave::SwitchEvent>() + std::mem::size_of::<ringweave::SwitchImpact>())
        as i64
}

/// What `n` calls of `step` leave behind, after 10 calls to warm up
/// (first-use allocations — thread names, the fence registration,
/// telemetry buffers — happen in the first few).
struct Growth {
    /// Bytes of live heap.
    heap: i64,
    fds_before: usize,
    fds_after: usize,
}

fn growth(n: usize, mut step: impl FnMut()) -> Growth {
    let descriptors = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    for _ in 0..10 {
        step();
    }
    let (before, fds_before) = (LIVE.load(Ordering::Relaxed), descriptors());
    for _ in 0..n {
        step();
    }
    Growth {
        heap: LIVE.load(Ordering::Relaxed) - before,
        fds_before,
        fds_after: descriptors(),
    }
}

/// Out and back, both completed.
fn switch_pair(handle: &ringweave::PipelineHandle) {
    for to in [Mode::Distributed, Mode::InProcess] {
        let event = handle.switch_to(to).unwrap();
        assert_eq!(event.outcome, SwitchOutcome::Completed, "{event:?}");
    }
}

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
    let pairs = 100;
    let grown = growth(pairs, || switch_pair(&handle)).heap;
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    assert_eq!(report.switches.len(), 2 * (10 + pairs));
    assert_eq!(take(&out), (0..n).map(|x| x * 2 + 1).collect::<Vec<_>>());

    // What legitimately grows: the run keeps every switch it made (the
    // report's `SwitchEvent`s and the metrics' `SwitchImpact`s, in vectors
    // that double). Allow that, twice over for the doubling, and a few
    // hundred bytes of noise from buffers that happen to be live.
    let per_switch = per_switch();
    let allowed = 2 * per_switch * 2 * pairs as i64 + 512;
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

/// The same for a graph: a tee, a replicated map and a keyed stage with
/// more replicas in the workers than here (each switch makes and drops a
/// pool in the worker; this process keeps one), and no descriptor left
/// behind either.
#[test]
fn live_heap_and_descriptors_are_flat_over_graph_switches() {
    let _serial = serial();
    ringweave::always_split(true);
    let fast = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicI64::new(0));
    let checksum = Arc::new(AtomicI64::new(0));
    let branch = Arc::new(AtomicI64::new(0));
    let (d, c, b) = (
        Arc::clone(&delivered),
        Arc::clone(&checksum),
        Arc::clone(&branch),
    );
    let n = 1_000_000u64;
    let step = |s: &mut u64, x: u64| {
        *s = s.wrapping_mul(31).wrapping_add(x);
        Some(*s)
    };
    let handle = Pipeline::from_iter(throttled(n, &fast))
        .map("double", |x: u64| x * 2)
        .replicas(2)
        .tee("audit", move |branch| {
            branch.sink(move |_| {
                b.fetch_add(1, Ordering::Relaxed);
            })
        })
        .stateful_by_key("keyed", |x: &u64| x % 64, || 0u64, step)
        .replicas(1)
        .distributed_replicas(3)
        .mode(manual_only(10_000))
        .batch_size(8)
        .sink(move |x: u64| {
            d.fetch_add(1, Ordering::Relaxed);
            // Order-sensitive: rotate, then mix in.
            let old = c.load(Ordering::Relaxed) as u64;
            c.store((old.rotate_left(5) ^ x) as i64, Ordering::Relaxed);
        })
        .spawn()
        .unwrap();
    let pairs = 100;
    let Growth {
        heap: grown,
        fds_before,
        fds_after,
    } = growth(pairs, || switch_pair(&handle));
    fast.store(true, Ordering::Relaxed);
    join_bounded(handle).unwrap();
    ringweave::always_split(false);

    let mut states = std::collections::HashMap::new();
    let expected = (0..n).map(|x| x * 2).fold(0u64, |acc, x| {
        let out = step(states.entry(x % 64).or_insert(0u64), x).unwrap();
        acc.rotate_left(5) ^ out
    });
    assert_eq!(delivered.load(Ordering::Relaxed), n as i64);
    assert_eq!(branch.load(Ordering::Relaxed), n as i64);
    assert_eq!(
        checksum.load(Ordering::Relaxed) as u64,
        expected,
        "sequence differs"
    );
    assert_eq!(
        fds_after, fds_before,
        "descriptors left over {pairs} switch pairs"
    );
    let per_switch = per_switch();
    let allowed = 2 * per_switch * 2 * pairs as i64 + 512;
    println!("graph: live heap grew {grown} bytes over {pairs} switch pairs");
    assert!(
        grown <= allowed,
        "live heap grew {grown} bytes over {pairs} switch pairs (allowed {allowed})"
    );
}

/// The same over crash recoveries: switch out, SIGKILL a worker, wait for
/// the recovery, switch back — the heap grows by the records the run keeps
/// and nothing else, and no descriptor (segment, pidfd, eventfd) is left.
#[test]
fn live_heap_and_descriptors_are_flat_over_recoveries() {
    let _serial = serial();
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector::<u64>();
    let n = 1_000_000;
    let handle = Pipeline::from_iter(throttled(n, &fast))
        .map("double", |x: u64| x * 2)
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .mode(manual_only(10_000))
        .max_restarts(1_000)
        .batch_size(8)
        .sink(sink)
        .spawn()
        .unwrap();
    let mut kills = 0;
    let cycle = || {
        let event = handle.switch_to(Mode::Distributed).unwrap();
        assert_eq!(event.outcome, SwitchOutcome::Completed, "{event:?}");
        let pids = handle.worker_pids();
        sigkill(pids[kills % pids.len()].1);
        kills += 1;
        wait_until("the recovery", || {
            handle.metrics().recoveries.len() == kills
        });
        let event = handle.switch_to(Mode::InProcess).unwrap();
        assert_eq!(event.outcome, SwitchOutcome::Completed, "{event:?}");
    };
    let cycles = 50;
    let Growth {
        heap: grown,
        fds_before,
        fds_after,
    } = growth(cycles, cycle);
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    assert_eq!(report.recoveries.len(), 10 + cycles);
    let mut s = 0u64;
    let expected: Vec<u64> = (0..n)
        .map(|x| {
            s = s.wrapping_add(x * 2);
            s
        })
        .collect();
    assert_eq!(take(&out), expected);
    assert_eq!(
        fds_after, fds_before,
        "descriptors left over {cycles} recoveries"
    );
    // Kept per cycle: two switches (report and metrics) and one recovery
    // (report and metrics, with its stage name and cause), in vectors that
    // double: allow all of it twice over.
    let per_switch = per_switch();
    let per_recovery = 2 * (std::mem::size_of::<ringweave::RecoveryEvent>() as i64 + 128);
    let allowed = 2 * (2 * per_switch + per_recovery) * cycles as i64 + 512;
    println!("recoveries: live heap grew {grown} bytes over {cycles} cycles (allowed {allowed})");
    assert!(
        grown <= allowed,
        "live heap grew {grown} bytes over {cycles} recoveries (allowed {allowed})"
    );
}
