//! Distributed runs that crash or are torn down: a worker killed with
//! SIGKILL, a panic in a worker, the source or the sink, an item too large for
//! the shared ring, a dropped handle — each ends the run with an error naming
//! the stage (never a hang), with every worker reaped and no thread left —
//! and distributed runs start to finish (heap items and state, zero and one
//! item).

mod hybrid_support;

use hybrid_support::*;
use ringweave::{Error, ExecutionMode, Mode, Pipeline, SwitchOutcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Crashes while distributed.
// ---------------------------------------------------------------------------

/// A worker killed with SIGKILL ends the run with `WorkerCrashed` naming its
/// stage and pid; every other worker is reaped.
#[test]
fn sigkill_of_a_worker_fails_the_run_naming_it() {
    let _serial = serial();
    for (live_switch, victim) in [(false, "b"), (true, "a"), (true, "c")] {
        let fast = Arc::new(AtomicBool::new(true));
        let mut p = three_stages(u64::MAX, &fast, |_| {});
        if !live_switch {
            p = p.mode(ExecutionMode::Distributed);
        }
        let handle = p.spawn().unwrap();
        if live_switch {
            let e = handle.switch_to(Mode::Distributed).unwrap();
            assert_eq!(e.outcome, SwitchOutcome::Completed, "{e:?}");
        }
        let sink = handle.stage_counts().len() - 1;
        wait_for_output(&handle, sink, 1_000);
        let workers = handle.worker_pids();
        let names: Vec<&str> = workers.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let pid = workers.iter().find(|(s, _)| s == victim).unwrap().1;
        sigkill(pid);
        match join_bounded(handle) {
            Err(Error::WorkerCrashed {
                stage,
                pid: crashed,
                exit,
            }) => {
                assert_eq!(stage, victim);
                assert_eq!(crashed, pid as i32);
                assert!(exit.contains("SIGKILL"), "{exit}");
            }
            other => panic!("kill of `{victim}`: expected WorkerCrashed, got {other:?}"),
        }
        assert_nothing_left(&format!("after `{victim}` was killed"));
    }
}

/// A switch back that fails because the worker's state does not fit its
/// area is rolled back and the worker runs on; when that worker is later
/// killed, the crash is reported as a kill, not with the old "does not fit"
/// message (the message is consumed by the rollback that reported it).
#[test]
fn a_rolled_back_state_error_is_not_reported_with_a_later_crash() {
    let _serial = serial();
    let fast = Arc::new(AtomicBool::new(false));
    let handle = Pipeline::from_iter(throttled(u64::MAX, &fast))
        // 2,048 u64s archive to 16 KiB, more than the 4 KiB area that
        // `max_state_bytes(64)` rounds up to.
        .stateful("big", vec![0u64; 2048], |s: &mut Vec<u64>, x: u64| {
            s[(x % 2048) as usize] = x;
            Some(x)
        })
        .max_state_bytes(64)
        .mode(ExecutionMode::Distributed)
        .sink(|_| {})
        .spawn()
        .unwrap();
    wait_for_output(&handle, 1, 5);
    let back = handle.switch_to(Mode::InProcess).unwrap();
    match &back.outcome {
        SwitchOutcome::RolledBack(cause) => {
            assert!(cause.contains("does not fit"), "{cause}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    let workers = handle.worker_pids();
    assert_eq!(workers.len(), 1, "{workers:?}");
    sigkill(workers[0].1);
    match join_bounded(handle) {
        Err(Error::WorkerCrashed { stage, exit, .. }) => {
            assert_eq!(stage, "big");
            assert!(exit.contains("SIGKILL"), "{exit}");
            assert!(!exit.contains("does not fit"), "stale message: {exit}");
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    fast.store(true, Ordering::Relaxed);
    assert_nothing_left("after the killed worker");
}

/// A panic inside a worker ends the run with `StagePanicked` naming the stage
/// and carrying the message, not an error of a neighbour that stopped
/// because of it.
#[test]
fn panic_in_a_worker_names_the_stage() {
    let _serial = serial();
    let err = Pipeline::from_iter(0u64..)
        .map("ok", |x: u64| x + 1)
        .map("boom", |x: u64| {
            if x == 5_000 {
                panic!("item {x} is cursed");
            }
            x
        })
        .map("after", |x: u64| x)
        .mode(ExecutionMode::Distributed)
        .sink(|_| {})
        .spawn()
        .and_then(join_bounded)
        .unwrap_err();
    match err {
        Error::StagePanicked { stage, message } => {
            assert_eq!(stage, "boom");
            assert_eq!(message, "item 5000 is cursed");
        }
        other => panic!("expected StagePanicked, got {other}"),
    }
    assert_nothing_left("after a panic in a distributed run");
}

/// The same after a live switch: the source (here) sends the poison only
/// once the stage runs in a worker.
#[test]
fn panic_in_a_worker_after_a_live_switch_names_the_stage() {
    let _serial = serial();
    let poison = Arc::new(AtomicBool::new(false));
    let p2 = Arc::clone(&poison);
    let source = (0u64..).map(move |x| {
        if p2.load(Ordering::Relaxed) {
            u64::MAX
        } else {
            x
        }
    });
    let handle = Pipeline::from_iter(source)
        .map("ok", |x: u64| x)
        .map("boom", |x: u64| {
            assert!(x != u64::MAX, "poisoned by {x}");
            x
        })
        .sink(|_| {})
        .spawn()
        .unwrap();
    let e = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(e.outcome, SwitchOutcome::Completed, "{e:?}");
    poison.store(true, Ordering::Relaxed);
    match join_bounded(handle) {
        Err(Error::StagePanicked { stage, message }) => {
            assert_eq!(stage, "boom");
            assert_eq!(message, format!("poisoned by {}", u64::MAX));
        }
        other => panic!("expected StagePanicked, got {other:?}"),
    }
    assert_nothing_left("after a panic in a live-switched run");
}

/// The source and the sink stay in this process while distributed; a panic
/// in either ends the run naming it, and every worker is reaped.
#[test]
fn panic_in_the_source_or_sink_while_distributed() {
    let _serial = serial();
    let err =
        Pipeline::from_iter((0u64..).inspect(|&x| assert!(x < 3_000, "source ran dry at {x}")))
            .map("a", |x: u64| x)
            .map("b", |x: u64| x)
            .mode(ExecutionMode::Distributed)
            .sink(|_| {})
            .spawn()
            .and_then(join_bounded)
            .unwrap_err();
    assert!(
        matches!(&err, Error::StagePanicked { stage, message }
            if stage == "source" && message == "source ran dry at 3000"),
        "{err}"
    );
    assert_nothing_left("after a panic in the source");

    let err = Pipeline::from_iter(0u64..)
        .map("a", |x: u64| x)
        .map("b", |x: u64| x)
        .mode(ExecutionMode::Distributed)
        .sink(|x| assert!(x < 3_000, "sink refuses {x}"))
        .spawn()
        .and_then(join_bounded)
        .unwrap_err();
    assert!(
        matches!(&err, Error::StagePanicked { stage, message }
            if stage == "sink" && message == "sink refuses 3000"),
        "{err}"
    );
    assert_nothing_left("after a panic in the sink");
}

/// A 10 KB item produced while distributed, by the source (here) or by a
/// worker, cannot enter a 4 KiB shared ring: the run ends with an error that
/// names the stage and both sizes.
#[test]
fn oversized_item_while_distributed_fails_with_both_sizes() {
    let _serial = serial();
    let err = Pipeline::from_iter((0..1_000u64).map(|i| payload(i, 100)))
        .map("a", |v: Vec<u8>| v)
        .mode(ExecutionMode::Distributed)
        .shm_ring_bytes(4096)
        .sink(|_| {})
        .spawn()
        .and_then(join_bounded)
        .unwrap_err();
    match &err {
        Error::Record { stage, source } => {
            assert_eq!(stage, "source");
            assert!(
                matches!(source, ringweave_ipc::record::RecordError::TooLarge { record, capacity }
                    if *record >= BIG && *capacity < 4096),
                "{source:?}"
            );
        }
        other => panic!("expected Error::Record from the source, got {other}"),
    }
    assert_names_both_sizes(&err.to_string());
    assert_nothing_left("after an oversized item from the source");

    // Made inside a worker: the worker fails and the parent reports it. The
    // engine reports this as `WorkerCrashed` (exit "failed: …") rather than
    // `Error::Record`; either is accepted as long as it names the stage and
    // both sizes.
    let err = Pipeline::from_iter(0..1_000u64)
        .map("pre", |i: u64| i)
        .flat_map("inflate", |i: u64| {
            std::iter::once(if i == 100 {
                vec![1u8; BIG]
            } else {
                vec![2u8; 8]
            })
        })
        .map("after", |v: Vec<u8>| v.len() as u64)
        .mode(ExecutionMode::Distributed)
        .shm_ring_bytes(4096)
        .sink(|_| {})
        .spawn()
        .and_then(join_bounded)
        .unwrap_err();
    match &err {
        Error::Record { stage, .. } | Error::WorkerCrashed { stage, .. } => {
            assert_eq!(stage, "inflate", "{err}")
        }
        other => panic!("expected an error naming `inflate`, got {other}"),
    }
    assert_names_both_sizes(&err.to_string());
    assert_nothing_left("after an oversized item from a worker");
}

// ---------------------------------------------------------------------------
// Distributed runs start to finish, and teardown.
// ---------------------------------------------------------------------------

#[test]
fn distributed_strings_with_state_start_to_finish() {
    let _serial = serial();
    let n = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let words = move || (0..n).map(|i: u64| format!("w{}", i * 7919 % 1000));
    let (out, sink) = collector();
    let report = Pipeline::from_iter(words())
        .filter("no-9", |s: &String| !s.ends_with('9'))
        .stateful("history", String::new(), |h: &mut String, s: String| {
            h.push_str(&s);
            if h.len() > 40 {
                h.drain(..h.len() - 40);
            }
            Some(format!("{s}<{h}"))
        })
        .map("len", |s: String| (s.len() as u32, s))
        .mode(ExecutionMode::Distributed)
        .ring_capacity(64)
        .shm_ring_bytes(8192)
        .sink(sink)
        .spawn()
        .and_then(join_bounded)
        .unwrap();
    let expected: Vec<(u32, String)> = words()
        .filter(|s| !s.ends_with('9'))
        .scan(String::new(), |h, s| {
            h.push_str(&s);
            if h.len() > 40 {
                h.drain(..h.len() - 40);
            }
            Some(format!("{s}<{h}"))
        })
        .map(|s| (s.len() as u32, s))
        .collect();
    assert!(take(&out) == expected, "sequence differs");
    assert_eq!(report.final_mode, Mode::Distributed);
    assert_eq!(report.items_produced, n);
    assert_eq!(report.items_delivered, expected.len() as u64);
    assert_eq!(report.stages[1].items_in, n, "worker counters are visible");
    assert_nothing_left("after the run");
}

#[test]
fn distributed_zero_and_one_item() {
    let _serial = serial();
    for n in [0u64, 1] {
        let (out, sink) = collector();
        let report = Pipeline::from_iter((0..n).map(|i| format!("only-{i}")))
            .map("upper", |s: String| s.to_uppercase())
            .stateful("count", 0u64, |c: &mut u64, s: String| {
                *c += 1;
                Some((*c, s))
            })
            .mode(ExecutionMode::Distributed)
            .sink(sink)
            .spawn()
            .and_then(join_bounded)
            .unwrap();
        let expected: Vec<(u64, String)> = (0..n).map(|i| (i + 1, format!("ONLY-{i}"))).collect();
        assert_eq!(take(&out), expected);
        assert_eq!((report.items_produced, report.items_delivered), (n, n));
        assert_eq!(report.final_mode, Mode::Distributed);
        assert_nothing_left(&format!("after a distributed run of {n} items"));
    }
}

/// Dropping the handle of an endless distributed pipeline stops it: the drop
/// returns, every worker is reaped, and the sink saw an in-order prefix.
#[test]
fn dropping_the_handle_while_distributed_leaves_no_process() {
    let _serial = serial();
    for live_switch in [false, true] {
        let (out, sink) = collector::<u64>();
        let mut p = Pipeline::from_iter(0u64..)
            .map("a", |x: u64| x)
            .filter("b", |_: &u64| true)
            .ring_capacity(8)
            .sink(sink);
        if !live_switch {
            p = p.mode(ExecutionMode::Distributed);
        }
        let handle = p.spawn().unwrap();
        if live_switch {
            let e = handle.switch_to(Mode::Distributed).unwrap();
            assert_eq!(e.outcome, SwitchOutcome::Completed, "{e:?}");
        }
        wait_for_output(&handle, 3, 1_000);
        assert_eq!(handle.worker_pids().len(), 2);
        bounded("drop of the handle", move || drop(handle));
        assert_nothing_left("after the handle was dropped");
        let got = take(&out);
        assert!(got.len() >= 1_000);
        assert!(
            got.iter().copied().eq(0..got.len() as u64),
            "prefix in order"
        );
    }
}
