//! Switch transactions that go wrong: a stage or a worker that never reaches
//! the barrier, injected faults (segment, fork, a worker dying at start), an
//! item too large for the shared ring at a switch, a state too large to move
//! back, the stream ending during a switch back. Each switch must end with the
//! documented outcome — timed out naming the stage, or rolled back with the
//! cause — and leave the pipeline exactly as it was: every item delivered in
//! order, no child process and no thread left. Crashes and teardown are in
//! `hybrid_crashes.rs`.

mod hybrid_support;

use hybrid_support::*;
use ringweave::{Error, ExecutionMode, Fault, Mode, Pipeline, SwitchOutcome};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------
// The barrier timeout: never forced, nothing lost.
// ---------------------------------------------------------------------------

/// A stage thread stuck inside its closure cannot reach the barrier: the
/// switch out times out naming it, the pipeline carries on in-process, and
/// once released it switches and finishes with the exact sequence.
#[test]
fn barrier_timeout_names_the_blocked_stage() {
    let _serial = serial();
    let n = 20_000;
    let (entered, release, fast) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (e2, r2) = (Arc::clone(&entered), Arc::clone(&release));
    let (out, sink) = collector();
    let handle = double_and_sum(Pipeline::from_iter(throttled(n, &fast)).map(
        "blocker",
        move |x: u64| {
            if x == 50 {
                e2.store(true, Ordering::Relaxed);
                while !r2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            x
        },
    ))
    .mode(manual_only(300))
    .batch_size(4)
    .sink(sink)
    .spawn()
    .unwrap();
    wait_until("the blocker to block", || entered.load(Ordering::Relaxed));

    let timed_out = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(
        timed_out.outcome,
        SwitchOutcome::TimedOut {
            pending: vec!["blocker".to_string()],
            timeout_ms: 300
        },
        "{timed_out:?}"
    );
    assert_eq!(
        (timed_out.from, timed_out.to),
        (Mode::InProcess, Mode::Distributed)
    );
    assert_eq!(timed_out.migrated_items, 0);
    assert_eq!(
        handle.worker_pids(),
        vec![],
        "abandoned switch left workers"
    );
    assert_no_children("after a timed-out switch");

    release.store(true, Ordering::Relaxed);
    let out_again = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(out_again.outcome, SwitchOutcome::Completed, "{out_again:?}");
    let back = handle.switch_to(Mode::InProcess).unwrap();
    assert_eq!(back.outcome, SwitchOutcome::Completed, "{back:?}");
    fast.store(true, Ordering::Relaxed);

    let report = join_bounded(handle).unwrap();
    assert_eq!(take(&out), doubled_sums(0..n));
    assert_eq!(report.items_delivered, n);
    assert_eq!(report.switches, vec![timed_out, out_again, back]);
    assert_nothing_left("after the run");
}

/// A worker stuck inside its closure cannot reach the barrier of a switch
/// back: the switch times out naming it, the pipeline carries on distributed,
/// and once released it switches back and finishes with the exact sequence.
#[test]
fn barrier_timeout_names_a_blocked_worker() {
    let _serial = serial();
    const TRIGGER: u64 = u64::MAX - 1;
    let n = 20_000;
    let (entered_file, release_file) = (flag_file("entered"), flag_file("release"));
    let (arm, fast) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    // Where the source put TRIGGER in place of an item (it runs here).
    let trigger_at = Arc::new(AtomicU64::new(u64::MAX));
    let (arm2, at2) = (Arc::clone(&arm), Arc::clone(&trigger_at));
    let source = throttled(n, &fast).map(move |x| {
        if arm2.load(Ordering::Relaxed) && at2.load(Ordering::Relaxed) == u64::MAX {
            at2.store(x, Ordering::Relaxed);
            return TRIGGER;
        }
        x
    });
    let (entered2, release2) = (entered_file.clone(), release_file.clone());
    let (out, sink) = collector();
    let handle = double_and_sum(Pipeline::from_iter(source).map("blocker", move |x: u64| {
        // Runs in the worker: it signals and waits through files.
        if x == TRIGGER {
            let _ = std::fs::File::create(&entered2);
            while !release2.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        x
    }))
    .mode(manual_only(300))
    .batch_size(4)
    .sink(sink)
    .spawn()
    .unwrap();

    let out_event = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(out_event.outcome, SwitchOutcome::Completed, "{out_event:?}");
    let workers = handle.worker_pids();
    arm.store(true, Ordering::Relaxed);
    wait_until("the worker to block", || entered_file.exists());

    let timed_out = handle.switch_to(Mode::InProcess).unwrap();
    assert_eq!(
        timed_out.outcome,
        SwitchOutcome::TimedOut {
            pending: vec!["blocker".to_string()],
            timeout_ms: 300
        },
        "{timed_out:?}"
    );
    assert_eq!(
        (timed_out.from, timed_out.to),
        (Mode::Distributed, Mode::InProcess)
    );
    assert_eq!(handle.worker_pids(), workers, "the same workers run on");

    std::fs::File::create(&release_file).unwrap();
    let back = handle.switch_to(Mode::InProcess).unwrap();
    assert_eq!(back.outcome, SwitchOutcome::Completed, "{back:?}");
    assert_eq!(handle.worker_pids(), vec![]);
    assert_no_children("after the switch back");
    fast.store(true, Ordering::Relaxed);

    let report = join_bounded(handle).unwrap();
    let at = trigger_at.load(Ordering::Relaxed);
    assert!(at < n, "the trigger was never sent");
    let sent = (0..n).map(|x| if x == at { TRIGGER } else { x });
    assert_eq!(take(&out), doubled_sums(sent));
    assert_eq!(report.switches, vec![out_event, timed_out, back]);
    assert_nothing_left("after the run");
    let _ = std::fs::remove_file(entered_file);
    let _ = std::fs::remove_file(release_file);
}

/// Engine bug (see the report): when the stream ends while a switch back is
/// pausing the workers, the first worker finishes (exit 0) instead of
/// pausing; `pause_worker` ignores a clean exit and waits out the whole
/// `switch_timeout_ms`, then reports the finished stage as `TimedOut`. Like
/// the switch out (`pause_thread`), it should see the stage has ended and
/// roll back at once ("draining").
#[test]
fn switch_back_while_the_stream_ends_rolls_back() {
    let _serial = serial();
    let n = 300u64;
    // 1 ms per item; the last `next()` takes 300 ms and returns `None`, so
    // the source is asked to pause while it is inside it and ends instead.
    let source = (0..n)
        .map(Some)
        .chain(std::iter::once(None))
        .map_while(|x| {
            std::thread::sleep(Duration::from_millis(if x.is_none() { 300 } else { 1 }));
            x
        });
    let (out, sink) = collector();
    let handle = double_and_sum(Pipeline::from_iter(source).map("a", |x: u64| x))
        .mode(manual_only(2_000))
        .batch_size(1)
        .sink(sink)
        .spawn()
        .unwrap();
    let out_event = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(out_event.outcome, SwitchOutcome::Completed, "{out_event:?}");
    wait_for_output(&handle, 0, n);
    let back = handle.switch_to(Mode::InProcess).unwrap();
    let report = join_bounded(handle).unwrap();
    assert_eq!(take(&out), doubled_sums(0..n), "items are safe either way");
    assert_eq!(report.items_delivered, n);
    assert_nothing_left("after the run");
    assert!(
        matches!(&back.outcome, SwitchOutcome::RolledBack(cause) if cause.contains("finished")),
        "a switch back while the stream ends must roll back (draining), not wait for \
         the timeout and blame a finished stage: {back:?}"
    );
}

// ---------------------------------------------------------------------------
// Rollbacks: the pipeline runs on exactly as before.
// ---------------------------------------------------------------------------

#[test]
fn injected_faults_roll_back_and_leave_no_process() {
    let _serial = serial();
    let cases: [(Fault, &[&str]); 3] = [
        (Fault::SegmentCreate, &["segment"]),
        // A later stage: the workers of `a` and `b` were forked already and
        // must be killed and reaped.
        (Fault::Fork("c".into()), &["fork", "`c`"]),
        (
            Fault::WorkerDiesAtStart("b".into()),
            &["`b`", "99", "at start"],
        ),
    ];
    for (fault, words) in cases {
        let n = 3_000;
        let fast = Arc::new(AtomicBool::new(false));
        let (out, sink) = collector();
        let handle = three_stages(n, &fast, sink)
            .inject_fault(fault.clone())
            .spawn()
            .unwrap();
        wait_for_output(&handle, 0, 40);
        let mut events = Vec::new();
        for _ in 0..3 {
            let e = handle.switch_to(Mode::Distributed).unwrap();
            match &e.outcome {
                SwitchOutcome::RolledBack(cause) => {
                    for word in words {
                        assert!(
                            cause.contains(word),
                            "{fault:?}: cause {cause:?} lacks {word:?}"
                        );
                    }
                }
                other => panic!("{fault:?}: expected a rollback, got {other:?}"),
            }
            assert_eq!(
                (e.from, e.to, e.migrated_items),
                (Mode::InProcess, Mode::Distributed, 0)
            );
            assert_eq!(handle.worker_pids(), vec![], "{fault:?}");
            assert_no_children(&format!("after a rollback of {fault:?}"));
            events.push(e);
        }
        fast.store(true, Ordering::Relaxed);
        let report = join_bounded(handle).unwrap();
        assert_eq!(take(&out), three_stages_expected(n), "{fault:?}");
        assert_eq!(report.final_mode, Mode::InProcess);
        assert_eq!(report.items_produced, n);
        assert_eq!(report.items_delivered, n);
        for stage in &report.stages[1..] {
            assert_eq!(
                (stage.items_in, stage.items_out),
                (n, n),
                "{fault:?}: {stage:?}"
            );
        }
        assert_eq!(report.switches, events);
        assert_nothing_left(&format!("after the run with {fault:?}"));
    }
}

/// A run that starts distributed and cannot set up fails with
/// `Error::Distributed`, leaving nothing behind.
#[test]
fn injected_fault_at_a_distributed_start_fails_the_run() {
    let _serial = serial();
    for (fault, word) in [
        (Fault::SegmentCreate, "segment"),
        (Fault::Fork("c".into()), "`c`"),
        (Fault::WorkerDiesAtStart("a".into()), "`a`"),
    ] {
        let fast = Arc::new(AtomicBool::new(true));
        let result = three_stages(1_000, &fast, |_| {})
            .mode(ExecutionMode::Distributed)
            .inject_fault(fault.clone())
            .spawn()
            .and_then(join_bounded);
        match result {
            Err(Error::Distributed { reason }) => {
                assert!(reason.contains(word), "{fault:?}: {reason}")
            }
            other => panic!("{fault:?}: expected Error::Distributed, got {other:?}"),
        }
        assert_nothing_left(&format!("after a failed start with {fault:?}"));
    }
}

/// A 10 KB item sitting in an in-process ring when a switch out archives the
/// rings into 4 KiB shared rings: the switch rolls back naming both sizes,
/// and the run finishes in-process with every item.
#[test]
fn oversized_item_in_a_ring_at_a_switch_rolls_back() {
    let _serial = serial();
    let (n, big_at) = (400u64, 40u64);
    let slow = Arc::new(AtomicBool::new(true));
    let slow2 = Arc::clone(&slow);
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink_out = Arc::clone(&out);
    let handle = Pipeline::from_iter((0..n).map(move |i| payload(i, big_at)))
        .map("a", |v: Vec<u8>| v)
        .map("b", |mut v: Vec<u8>| {
            v.reverse();
            v
        })
        .ring_capacity(16)
        .batch_size(1)
        .shm_ring_bytes(4096)
        // 5 ms per item while slow: the rings back up behind the sink.
        .sink(move |v: Vec<u8>| {
            if slow2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            sink_out.lock().unwrap().push(v);
        })
        .spawn()
        .unwrap();
    // The big item has left the source; the sink needs ~30 × 5 ms to reach
    // it, far longer than a barrier takes: it is in a ring at the switch.
    wait_for_output(&handle, 0, big_at + 8);
    let sink = handle.stage_counts().len() - 1;
    wait_for_output(&handle, sink, 2);
    assert!(handle.stage_counts()[sink].2 < big_at - 20);
    let e = handle.switch_to(Mode::Distributed).unwrap();
    match &e.outcome {
        SwitchOutcome::RolledBack(cause) => assert_names_both_sizes(cause),
        other => panic!("expected a rollback for a 10 KB residual item, got {other:?}"),
    }
    assert_no_children("after the rollback");
    slow.store(false, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    let expected: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut v = payload(i, big_at);
            v.reverse();
            v
        })
        .collect();
    assert!(take(&out) == expected, "sequence differs");
    assert_eq!(report.final_mode, Mode::InProcess);
    assert_nothing_left("after the run");
}

/// A stateful stage whose archived state outgrows its state area cannot move
/// back: the switch back rolls back naming the stage and the sizes, the
/// workers carry on, and the run finishes distributed with every item.
#[test]
fn state_too_large_to_move_back_rolls_back_the_switch() {
    let _serial = serial();
    let n = 100_000u64;
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector();
    // The state area is rounded up to whole pages: 4096 bytes here.
    let handle = Pipeline::from_iter(throttled(n, &fast))
        .stateful("grow", Vec::<u8>::new(), |v: &mut Vec<u8>, x: u64| {
            v.push(x as u8);
            Some(v.len() as u64)
        })
        .map("after", |x: u64| x * 2)
        .max_state_bytes(100)
        .batch_size(4)
        .sink(sink)
        .spawn()
        .unwrap();
    let out_event = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(out_event.outcome, SwitchOutcome::Completed, "{out_event:?}");
    let workers = handle.worker_pids();
    // Items are 1 ms apart until `fast`: let 6,000 through at full speed,
    // then wait until `grow` holds a state well past 4 KiB.
    fast.store(true, Ordering::Relaxed);
    wait_for_output(&handle, 0, 6_000);
    fast.store(false, Ordering::Relaxed);
    wait_for_output(&handle, 1, 6_000);
    let mut events = vec![out_event];
    for _ in 0..2 {
        let back = handle.switch_to(Mode::InProcess).unwrap();
        match &back.outcome {
            SwitchOutcome::RolledBack(cause) => {
                assert!(cause.contains("`grow`"), "{cause}");
                assert!(
                    numbers_in(cause).iter().any(|&x| x >= 6_000),
                    "the state size: {cause}"
                );
            }
            other => panic!("expected a rollback, got {other:?}"),
        }
        assert_eq!(handle.worker_pids(), workers, "the workers carry on");
        events.push(back);
    }
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    assert!(
        take(&out).into_iter().eq((1..=n).map(|len| len * 2)),
        "sequence differs"
    );
    assert_eq!(report.final_mode, Mode::Distributed);
    assert_eq!(report.switches, events);
    assert_nothing_left("after the run");
}
