//! Locks held at the fork (issue "Hardening", item 2). A worker process is a
//! copy of this one in which only the forking thread exists: a lock another
//! thread held at the fork stays locked there forever.
//!
//! - A panic in a worker must not run the program's panic hook (which
//!   writes to stderr, whose lock another thread may hold): the run fails
//!   with `StagePanicked` naming the stage instead of hanging.
//! - Stage code that blocks on such a lock is caught by the progress
//!   watchdog: `WorkerStalled` naming the stage and its pid, the worker
//!   killed and reaped.
//!
//! Both tests change process-wide state (the panic hook, the stderr lock),
//! so this file runs them one after the other.

mod hybrid_support;

use hybrid_support::*;
use ringweave::{Error, ExecutionMode, Pipeline};
use std::io::Write;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

/// Holds `lock()`'s guard on another thread until the returned sender is
/// dropped or sent to.
fn hold_on_thread<G: 'static>(lock: impl FnOnce() -> G + Send + 'static) -> mpsc::Sender<()> {
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let guard = lock();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        drop(guard);
    });
    locked_rx.recv().unwrap();
    release_tx
}

#[test]
fn worker_panic_with_stderr_locked_at_the_fork_is_reported() {
    let _serial = serial();
    // A hook that writes to stderr, as most hooks (std's included) do.
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(std::io::stderr().lock(), "custom hook: {info}");
    }));
    // Another thread of the program holds the stderr lock across the fork.
    let release_tx = hold_on_thread(|| std::io::stderr().lock());

    let parent = std::process::id();
    let result = bounded("a run whose worker panics", move || {
        Pipeline::from_iter(0..1_000_000u64)
            .map("boom", move |x: u64| {
                if x == 5_000 && std::process::id() != parent {
                    panic!("boom at {x}");
                }
                x
            })
            .mode(ExecutionMode::Distributed)
            .sink(|_| {})
            .run()
    });
    drop(release_tx);
    let _ = std::panic::take_hook();
    match result {
        Err(Error::StagePanicked { stage, message }) => {
            assert_eq!(stage, "boom");
            assert!(message.contains("boom at 5000"), "{message}");
        }
        other => panic!("expected StagePanicked naming `boom`, got {other:?}"),
    }
    assert_no_children("after the worker panicked");
}

#[test]
fn worker_blocked_on_a_lock_held_at_the_fork_is_killed_by_the_watchdog() {
    let _serial = serial();
    static SHARED: Mutex<u64> = Mutex::new(0);
    // Held by another thread for the whole run: in-process nobody takes it,
    // but in the worker the copy is locked forever.
    let release = hold_on_thread(|| SHARED.lock().unwrap());
    let parent = std::process::id();
    let result = bounded("a run whose worker blocks on a lock", move || {
        Pipeline::from_iter(0..1_000_000u64)
            .map("first", |x: u64| x + 1)
            .map("stuck", move |x: u64| {
                if x == 3_000 && std::process::id() != parent {
                    *SHARED.lock().unwrap() += x;
                }
                x
            })
            .mode(ExecutionMode::Distributed)
            .stall_timeout(Duration::from_millis(300))
            .sink(|_| {})
            .run()
    });
    drop(release);
    match result {
        Err(error @ Error::WorkerStalled { .. }) => {
            let text = error.to_string();
            let Error::WorkerStalled {
                stage,
                pid,
                stalled_for,
                input_bytes,
                ..
            } = error
            else {
                unreachable!()
            };
            assert_eq!(stage, "stuck");
            assert!(pid > 0);
            assert!(stalled_for > Duration::from_millis(300), "{stalled_for:?}");
            assert!(input_bytes > 0);
            assert!(
                text.contains("stuck") && text.contains(&pid.to_string()),
                "{text}"
            );
        }
        other => panic!("expected WorkerStalled naming `stuck`, got {other:?}"),
    }
    assert_no_children("after the watchdog");
}

/// A slow stage that keeps moving is not a stalled one, nor is one waiting
/// for a slow downstream.
#[test]
fn slow_progress_is_not_a_stall() {
    let _serial = serial();
    let (out, sink) = collector();
    let mut slow_sink = sink;
    let report = bounded("a slow run", move || {
        Pipeline::from_iter(0..3_000u64)
            .map("slow", |x: u64| {
                std::thread::sleep(Duration::from_micros(200));
                x * 2
            })
            .map("fast", |x: u64| x + 1)
            .mode(ExecutionMode::Distributed)
            .batch_size(16)
            .stall_timeout(Duration::from_millis(150))
            .sink(move |x| {
                std::thread::sleep(Duration::from_micros(100));
                slow_sink(x)
            })
            .run()
    })
    .unwrap();
    assert_eq!(report.items_delivered, 3_000);
    assert_eq!(
        take(&out),
        (0..3_000u64).map(|x| x * 2 + 1).collect::<Vec<_>>()
    );
}
