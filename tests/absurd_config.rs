//! Configuration values far outside any useful range must fail the run with
//! `Error::InvalidConfig` naming the field, in every execution mode — not
//! abort the process on a failed allocation, panic on a capacity overflow,
//! or wrap a size computation into a segment that a worker then writes far
//! past. And the documented limits themselves must work.

mod hybrid_support;

use hybrid_support::*;
use ringweave::{
    CompletePipeline, Error, ExecutionMode, HybridConfig, Mode, Pipeline, SwitchOutcome,
    MAX_BATCH_SIZE, MAX_RING_CAPACITY, MAX_STATE_BYTES,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn modes() -> [ExecutionMode; 3] {
    [
        ExecutionMode::InProcess,
        ExecutionMode::Distributed,
        ExecutionMode::Hybrid(HybridConfig::default()),
    ]
}

/// A short pipeline with a `stateful` stage (whose state area the control
/// segment sizes from `max_state_bytes`). Four stages: four areas of
/// `1 << 62` bytes are what used to wrap the segment's size around.
fn summing() -> CompletePipeline {
    Pipeline::from_iter(0..100u64)
        .map("double", |x: u64| x * 2)
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s += x;
            Some(*s)
        })
        .sink(|_| {})
}

/// `configure` sets `field` to `value`: in every mode the run must be
/// refused with `InvalidConfig` naming `field`, and the reason must carry
/// the value given and the `limit`.
fn assert_rejected(
    field: &str,
    value: usize,
    limit: usize,
    configure: impl Fn(CompletePipeline) -> CompletePipeline,
) {
    for mode in modes() {
        let what = format!("{field} = {value} in {mode:?}");
        let result = bounded(&what.clone(), {
            let pipeline = configure(summing()).mode(mode);
            move || pipeline.run()
        });
        match result {
            Err(Error::InvalidConfig { field: f, reason }) => {
                assert_eq!(f, field, "{what}: {reason}");
                assert!(
                    reason.contains(&value.to_string()),
                    "{what}: the reason must name the value given: {reason}"
                );
                assert!(
                    reason.contains(&limit.to_string()),
                    "{what}: the reason must name the limit {limit}: {reason}"
                );
            }
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
}

/// Before the bound, this wrapped the control segment's size to a few
/// pages, and a worker saving its state wrote through a wild pointer.
#[test]
fn huge_max_state_bytes_is_rejected() {
    for bytes in [1usize << 62, MAX_STATE_BYTES + 1, usize::MAX] {
        assert_rejected("max_state_bytes", bytes, MAX_STATE_BYTES, |p| {
            p.max_state_bytes(bytes)
        });
    }
}

/// Before the bound, 2^40 slots aborted the process (failed allocation)
/// and 2^62 panicked with "capacity overflow".
#[test]
fn huge_ring_capacity_is_rejected() {
    for capacity in [1usize << 40, 1 << 62, MAX_RING_CAPACITY * 2] {
        assert_rejected("ring_capacity", capacity, MAX_RING_CAPACITY, |p| {
            p.ring_capacity(capacity)
        });
    }
}

/// Before the bound, an endless source grew a stage's batch (and in
/// distributed mode its shared-memory outbox) without limit.
#[test]
fn huge_batch_size_is_rejected() {
    for batch in [usize::MAX, MAX_BATCH_SIZE + 1] {
        assert_rejected("batch_size", batch, MAX_BATCH_SIZE, |p| p.batch_size(batch));
    }
}

#[test]
fn huge_shm_ring_bytes_is_rejected() {
    let max = ringweave_ipc::record_ring::RecordRing::MAX_CAPACITY;
    assert_rejected("shm_ring_bytes", 1 << 62, max, |p| {
        p.shm_ring_bytes(1 << 62)
    });
}

/// A replay log of 0, 1 or more than `MAX_REPLAY_LOG_ITEMS` items, and a
/// checkpoint interval under a millisecond, are refused naming the field.
#[test]
fn absurd_recovery_settings_are_rejected() {
    let max = ringweave::MAX_REPLAY_LOG_ITEMS;
    for items in [0usize, 1, max + 1, usize::MAX] {
        assert_rejected("replay_log_items", items, max, |p| {
            p.max_restarts(3).replay_log_items(items)
        });
    }
    for mode in modes() {
        let result = summing()
            .mode(mode)
            .max_restarts(3)
            .checkpoint_interval(std::time::Duration::ZERO)
            .run();
        match result {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "checkpoint_interval", "{reason}");
                assert!(
                    reason.contains("1 ms") && reason.contains("0ns"),
                    "{reason}"
                );
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}

/// `max_restarts(u32::MAX)` is a valid, if generous, limit: the run works.
#[test]
fn the_largest_max_restarts_runs() {
    // It runs pipelines: not beside a test that counts threads.
    let _serial = serial();
    for mode in modes() {
        let report = summing().mode(mode).max_restarts(u32::MAX).run().unwrap();
        assert!(report.recoveries.is_empty());
    }
}

/// The largest state area accepted: a run starts distributed, its stateful
/// stage runs in a worker, and a switch back carries the state out of the
/// worker's area (the last stage's area ends `3 × (1 GiB + 4 KiB)` into the
/// control segment), so the area arithmetic is exercised at the limit.
#[test]
fn max_state_bytes_at_the_limit_moves_state_back() {
    let _serial = serial();
    let n = 3_000u64;
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector();
    let handle = Pipeline::from_iter(throttled(n, &fast))
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s += x;
            Some(*s)
        })
        .max_state_bytes(MAX_STATE_BYTES)
        .batch_size(4)
        .mode(ExecutionMode::Distributed)
        .sink(sink)
        .spawn()
        .unwrap();
    // The worker has summed some items, so its state is not the initial one.
    wait_for_output(&handle, 1, 20);
    let back = handle.switch_to(Mode::InProcess).unwrap();
    assert_eq!(back.outcome, SwitchOutcome::Completed, "{back:?}");
    assert_eq!(
        handle.worker_pids(),
        vec![],
        "workers left after the switch"
    );
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    let expected: Vec<u64> = (0..n)
        .scan(0u64, |s, x| {
            *s += x;
            Some(*s)
        })
        .collect();
    assert_eq!(take(&out), expected);
    assert_eq!(report.items_delivered, n);
    assert_nothing_left("after the run");
}

/// The largest ring capacity and batch size accepted run correctly: the
/// capacity in-process (where its slots are allocated), the batch size in
/// every mode.
#[test]
fn ring_capacity_and_batch_size_at_the_limit_run() {
    let _serial = serial();
    let n = 200_000u64;
    let expected: Vec<u64> = (0..n)
        .scan(0u64, |s, x| {
            *s += x;
            Some(*s)
        })
        .collect();
    let runs = [
        (ExecutionMode::InProcess, MAX_RING_CAPACITY, MAX_BATCH_SIZE),
        (ExecutionMode::Distributed, 4096, MAX_BATCH_SIZE),
        (
            ExecutionMode::Hybrid(HybridConfig::default()),
            4096,
            MAX_BATCH_SIZE,
        ),
    ];
    for (mode, capacity, batch) in runs {
        let what = format!("{mode:?} with ring_capacity {capacity}, batch_size {batch}");
        let (out, sink) = collector();
        let pipeline = Pipeline::from_iter(0..n)
            .stateful("sum", 0u64, |s: &mut u64, x: u64| {
                *s += x;
                Some(*s)
            })
            .ring_capacity(capacity)
            .batch_size(batch)
            .mode(mode)
            .sink(sink);
        let report = bounded(&what.clone(), move || pipeline.run())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(take(&out) == expected, "{what}: sequences differ");
        assert_eq!(report.items_delivered, n, "{what}");
        assert_nothing_left(&what);
    }
}
