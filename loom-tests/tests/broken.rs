//! Deliberately broken variants of the protocols, which loom must reject.
//!
//! They prove that the models in `ring.rs` and `wakeup.rs` can fail. Compiled
//! only with the `loom-broken-publish` feature (which also breaks the real
//! index protocol). **Every test here fails by design.** `scripts/loom.sh`
//! runs each one in a process of its own and asserts that it fails with the
//! message loom must report (a separate process because after a deadlock
//! loom's clean-up can abort the whole test binary, so `#[should_panic]`
//! cannot be relied on). The failures it expects:
//!
//! - `relaxed_publish_is_a_data_race`: with the feature,
//!   `ProducerCursor::publish` stores `write` with Relaxed instead of Release
//!   (ipc/src/index.rs). The consumer can then see the new position without
//!   seeing the slot written before it; loom's `UnsafeCell` tracking reports
//!   the unordered slot write and read as a causality violation. This runs the
//!   real ring and the real index protocol.
//! - `notify_before_publish_loses_wakeup`: the real `wait::notify` called
//!   before the condition is published (the waiter flag checked before the
//!   store): the sleeper can arm, see no data and park after the notifier
//!   looked at its flag; loom reports the parked-forever sleeper as a
//!   deadlock.
//! - `handshake_without_fences_loses_wakeup`: a copy of `wait_until` and
//!   `notify` without the two SeqCst fences: each side may miss the other's
//!   store, and loom reports the lost wake-up as a deadlock.
#![cfg(all(ringweave_loom, feature = "loom-broken-publish"))]

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, spawn};
use ringweave_ipc::ring::{channel, PopError};
use ringweave_ipc::wait::WaitStrategy;
use ringweave_ipc::wait::{self, Sleeper, ThreadSleeper, IDLE, WAITING};

/// Must fail with "Causality violation".
#[test]
fn relaxed_publish_is_a_data_race() {
    check(
        "broken: Relaxed publish, push/pop capacity 1, 2 items",
        || {
            let (mut tx, mut rx) = channel::<u64>(1);
            let producer = spawn(move || {
                for value in [10, 11] {
                    let mut value = value;
                    while let Err(full) = tx.push(value) {
                        value = full.into_inner();
                        thread::yield_now();
                    }
                }
            });
            for expected in [10, 11] {
                loop {
                    match rx.pop() {
                        Ok(value) => {
                            assert_eq!(value, expected);
                            break;
                        }
                        Err(PopError::Empty) => thread::yield_now(),
                        Err(PopError::Closed) => unreachable!(),
                    }
                }
            }
            producer.join();
        },
    );
}

/// Must fail with "deadlock".
#[test]
fn notify_before_publish_loses_wakeup() {
    check("broken: notify before publish", || {
        let shared = Arc::new((
            AtomicU32::new(IDLE),
            ThreadSleeper::new(),
            AtomicBool::new(false),
        ));
        let notifier = {
            let shared = Arc::clone(&shared);
            spawn(move || {
                let (flag, sleeper, ready) = &*shared;
                // Wrong order: the flag is checked before the condition is
                // published.
                wait::notify(flag, sleeper);
                ready.store(true, Ordering::Release);
            })
        };
        let (flag, sleeper, ready) = &*shared;
        wait::wait_until(flag, sleeper, WaitStrategy::SLEEP_AT_ONCE, None, || {
            ready.load(Ordering::Acquire)
        });
        notifier.join();
    });
}

/// `wait::wait_until` (sleep tier only) without the SeqCst fence.
fn wait_without_fence<S: Sleeper>(flag: &AtomicU32, sleeper: &S, mut ready: impl FnMut() -> bool) {
    loop {
        sleeper.prepare();
        flag.swap(WAITING, Ordering::Release);
        // Missing: fence(SeqCst).
        if ready() {
            flag.swap(IDLE, Ordering::Relaxed);
            return;
        }
        sleeper.sleep(flag, None);
    }
}

/// `wait::notify` without the SeqCst fence.
fn notify_without_fence<S: Sleeper>(flag: &AtomicU32, sleeper: &S) {
    // Missing: fence(SeqCst).
    if flag.load(Ordering::Relaxed) == WAITING && flag.swap(IDLE, Ordering::AcqRel) == WAITING {
        sleeper.wake(flag);
    }
}

/// Must fail with "deadlock".
#[test]
fn handshake_without_fences_loses_wakeup() {
    check("broken: handshake without fences", || {
        let shared = Arc::new((
            AtomicU32::new(IDLE),
            ThreadSleeper::new(),
            AtomicBool::new(false),
        ));
        let notifier = {
            let shared = Arc::clone(&shared);
            spawn(move || {
                let (flag, sleeper, ready) = &*shared;
                ready.store(true, Ordering::Release);
                notify_without_fence(flag, sleeper);
            })
        };
        let (flag, sleeper, ready) = &*shared;
        wait_without_fence(flag, sleeper, || ready.load(Ordering::Acquire));
        notifier.join();
    });
}
