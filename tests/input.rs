//! Live input (`Pipeline::with_input`) and latency by default: items are
//! never held back to fill a batch (semantics 9 and 10).

mod hybrid_support;

use hybrid_support::*;
use ringweave::ring::PushError;
use ringweave::{Error, ExecutionMode, Mode, Pipeline, SwitchOutcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODES: [fn() -> ExecutionMode; 3] = [
    || ExecutionMode::InProcess,
    || ExecutionMode::Distributed,
    || manual_only(5_000),
];

#[test]
fn pushed_items_arrive_in_order_in_every_mode() {
    let _serial = serial();
    for mode in MODES {
        let (mut input, pipeline) = Pipeline::<u64>::with_input();
        let (out, sink) = collector();
        let handle = pipeline
            .map("double", |x| x * 2)
            .filter("div3", |x| x % 3 == 0)
            .mode(mode())
            .sink(sink)
            .spawn()
            .unwrap();
        let n = 50_000u64;
        let pusher = std::thread::spawn(move || {
            for x in 0..n {
                input.push(x).unwrap();
            }
        });
        pusher.join().unwrap();
        let report = join_bounded(handle).unwrap();
        let expected: Vec<u64> = (0..n).map(|x| x * 2).filter(|x| x % 3 == 0).collect();
        assert_eq!(report.items_produced, n, "{:?}", mode());
        assert_eq!(take(&out), expected, "{:?}", mode());
    }
}

/// An idle input does not hold up a switch, either way, and items pushed
/// around the switches all arrive in order.
#[test]
fn idle_input_does_not_block_switches() {
    let _serial = serial();
    let (mut input, pipeline) = Pipeline::<u64>::with_input();
    let (out, sink) = collector();
    let handle = pipeline
        .map("inc", |x| x + 1)
        .map("double", |x| x * 2)
        .mode(manual_only(2_000))
        .sink(sink)
        .spawn()
        .unwrap();
    let mut next = 0u64;
    let push = |input: &mut ringweave::Input<u64>, next: &mut u64, k: u64| {
        for _ in 0..k {
            input.push(*next).unwrap();
            *next += 1;
        }
    };
    for round in 0..3 {
        push(&mut input, &mut next, 1_000);
        // Everything pushed has left the source: the input is idle now.
        wait_for_output(&handle, 0, next);
        for to in [Mode::Distributed, Mode::InProcess] {
            let event = handle.switch_to(to).unwrap();
            assert_eq!(
                event.outcome,
                SwitchOutcome::Completed,
                "round {round}: {event:?}"
            );
            push(&mut input, &mut next, 500);
        }
    }
    drop(input);
    let report = join_bounded(handle).unwrap();
    assert_eq!(report.switches.len(), 6);
    assert_eq!(
        take(&out),
        (0..next).map(|x| (x + 1) * 2).collect::<Vec<_>>()
    );
}

/// After the run failed, a push fails at once — never hangs — even one
/// that was waiting for room when it failed.
#[test]
fn push_after_failure_fails_at_once() {
    let _serial = serial();
    for mode in MODES {
        let (mut input, pipeline) = Pipeline::<u64>::with_input();
        let handle = pipeline
            .map("inc", |x| x + 1)
            .mode(mode())
            .sink(|x| {
                if x == 100 {
                    panic!("sink gives up at {x}");
                }
            })
            .spawn()
            .unwrap();
        // Keeps pushing until the failure closes the input; pushes past the
        // ring's capacity wait for room and must be released by it too.
        let pushed = bounded("pushes into a failing run", move || {
            let mut pushed = 0u64;
            while input.push(pushed).is_ok() {
                pushed += 1;
                assert!(pushed < 10_000_000, "push kept succeeding");
            }
            // `Abandoned`, not `Full`: the timed push did not wait out its
            // timeout on a closed input.
            assert!(matches!(input.push(0), Err(Error::NotRunning)));
            assert!(matches!(input.try_push(7), Err(PushError::Abandoned(7))));
            assert!(matches!(
                input.push_timeout(8, Duration::from_secs(5)),
                Err(PushError::Abandoned(8))
            ));
            assert!(input.is_closed());
            pushed
        });
        assert!(pushed >= 100, "{:?}", mode());
        match join_bounded(handle) {
            Err(Error::StagePanicked { stage, .. }) => assert_eq!(stage, "sink"),
            other => panic!("{:?}: expected the sink's panic, got {other:?}", mode()),
        }
    }
    assert_no_children("after failed runs with input");
}

#[test]
fn input_of_a_dropped_pipeline_is_closed() {
    let _serial = serial();
    let (mut input, pipeline) = Pipeline::<u64>::with_input();
    input.push(1).unwrap();
    drop(pipeline);
    assert!(input.is_closed());
    assert!(matches!(input.push(2), Err(Error::NotRunning)));
}

/// Before the pipeline runs, the ring fills; `try_push` and `push_timeout`
/// hand the item back when full, and a blocked `push` goes through once the
/// pipeline starts taking items.
#[test]
fn full_input_hands_items_back_and_backpressures() {
    // It runs a pipeline: not beside a test that counts threads (found
    // when `no_item_waits_for_a_batch_to_fill` saw its threads in CI).
    let _serial = serial();
    let (mut input, pipeline) = Pipeline::<u64>::with_input();
    let capacity = input.capacity() as u64;
    for x in 0..capacity {
        input.try_push(x).unwrap();
    }
    assert!(matches!(input.try_push(capacity), Err(PushError::Full(x)) if x == capacity));
    let t0 = Instant::now();
    assert!(matches!(
        input.push_timeout(capacity, Duration::from_millis(30)),
        Err(PushError::Full(x)) if x == capacity
    ));
    assert!(t0.elapsed() >= Duration::from_millis(30));
    let (blocked_tx, blocked_rx) = std::sync::mpsc::channel();
    let pusher = std::thread::spawn(move || {
        blocked_tx.send(()).unwrap();
        for x in capacity..capacity * 3 {
            input.push(x).unwrap();
        }
    });
    blocked_rx.recv().unwrap();
    let (out, sink) = collector();
    let handle = pipeline.sink(sink).spawn().unwrap();
    pusher.join().unwrap();
    join_bounded(handle).unwrap();
    assert_eq!(take(&out), (0..capacity * 3).collect::<Vec<_>>());
}

/// Latency by default: the next item is only made once the sink has the
/// previous one. A source (or any stage) that held an item back to fill a
/// batch would wait for an item that never comes: this would hang (and
/// fail within the bound).
#[test]
fn no_item_waits_for_a_batch_to_fill() {
    let _serial = serial();
    for mode in MODES {
        let delivered = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&delivered);
        let n = 300u64;
        let lockstep = (0..n).inspect(move |&i| {
            let start = Instant::now();
            while seen.load(Ordering::Acquire) < i {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "item {} was held back: the sink never got it",
                    i - 1
                );
                std::thread::yield_now();
            }
        });
        let d = Arc::clone(&delivered);
        let report = bounded("a lockstep run", move || {
            Pipeline::from_iter(lockstep)
                .map("a", |x: u64| x + 1)
                .filter("b", |_| true)
                .flat_map("c", |x: u64| [x])
                .stateful("d", 0u64, |s, x: u64| {
                    *s += 1;
                    Some(x - 1 + *s - *s)
                })
                .mode(mode())
                .sink(move |x| {
                    assert_eq!(x, d.load(Ordering::Relaxed));
                    d.fetch_add(1, Ordering::Release);
                })
                .run()
        })
        .unwrap();
        assert_eq!(report.items_delivered, n, "{:?}", mode());
    }

    // The same through an input: push, wait for the sink, push the next.
    for mode in MODES {
        let (mut input, pipeline) = Pipeline::<u64>::with_input();
        let delivered = Arc::new(AtomicU64::new(0));
        let d = Arc::clone(&delivered);
        let handle = pipeline
            .map("a", |x: u64| x + 1)
            .mode(mode())
            .sink(move |_| {
                d.fetch_add(1, Ordering::Release);
            })
            .spawn()
            .unwrap();
        for i in 0..300u64 {
            input.push(i).unwrap();
            wait_until("the sink to get the pushed item", || {
                delivered.load(Ordering::Acquire) > i
            });
        }
        drop(input);
        assert_eq!(join_bounded(handle).unwrap().items_delivered, 300);
    }
}

/// Bounded queueing in both modes: a shared-memory edge holds about as many
/// items as the in-process ring it replaces, not as many as fit its bytes
/// (a 1 MiB ring holds ~100k small records' items), so a switch out does
/// not multiply queueing delay under saturation.
#[test]
fn shared_memory_edges_hold_about_a_ring_of_items() {
    let _serial = serial();
    let n = 60_000u64;
    let capacity = 256;
    for mode in [ExecutionMode::InProcess, ExecutionMode::Distributed] {
        let handle = Pipeline::from_iter(0..n)
            .map("m", |x: u64| x + 1)
            .mode(mode.clone())
            .ring_capacity(capacity)
            .sink(|_| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(5) {
                    std::hint::spin_loop();
                }
            })
            .spawn()
            .unwrap();
        let mut most = 0;
        while !handle.is_finished() {
            let stages = handle.metrics().stages;
            for pair in stages.windows(2) {
                most = most.max(pair[0].items_out.saturating_sub(pair[1].items_in));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        join_bounded(handle).unwrap();
        // The ring's items, plus what the two stages hold in hand (a batch,
        // or a record's run) and the first run before the size is known.
        let bound = 4 * capacity as u64 + 2 * 4096;
        println!("{mode:?}: at most {most} items between two stages");
        assert!(
            most <= bound,
            "{mode:?}: {most} items queued between two stages (bound {bound})"
        );
    }
}
