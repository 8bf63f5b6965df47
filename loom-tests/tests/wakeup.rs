//! Loom model of the waiter-flag wake-up handshake of `ringweave_ipc::wait`
//! (`wait_until`, `notify`, the `Sleeper` trait).
//!
//! The handshake is Dekker's pattern: the sleeper arms its flag, fences, and
//! re-checks its condition before sleeping; the notifier publishes, fences,
//! and wakes only if it sees the flag armed. It is run here against two
//! sleepers:
//!
//! - `ThreadSleeper` (park/unpark), the in-process ring's sleeper, as is;
//! - [`ModelFutex`], a loom model of `ringweave_ipc::futex::FutexSleeper`,
//!   which cannot run under loom (its atomics are not memory a kernel can wait
//!   on). It keeps exactly what the shared-memory ring relies on:
//!   `FUTEX_WAIT` sleeps only if the word still reads `WAITING`, checked
//!   atomically with going to sleep with respect to `FUTEX_WAKE` (the
//!   kernel's hash-bucket lock, modelled by a loom `Mutex` and `Condvar`), no
//!   registration, the flag word itself as the futex.
//!
//! Every model asserts that no wake-up is lost: a sleeper whose condition
//! becomes true is always woken (a thread parked or waiting forever is a loom
//! deadlock, which fails the model), and that what the notifier published
//! before notifying is visible to the woken sleeper (a plain `UnsafeCell`
//! payload, whose unordered access loom reports as a data race). The models
//! cover one hand-over, several rounds of re-arming on the same flags (stale
//! wake-ups from earlier rounds included), two notifiers racing for one
//! sleeper, the spin → yield → sleep tiers, and the ring's interrupt path:
//! `Consumer::wait_for_items` / `Producer::wait_for_slots` with an
//! `interrupt` condition, woken by `RingWaker::wake`.
//!
//! The last model documents the loom limitation that made `wait_until` write
//! the flag with RMWs only (see the comment there).
#![cfg(ringweave_loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use loom_tests::{check, spawn};
use ringweave_ipc::ring::{channel, WaitOutcome};
use ringweave_ipc::wait::WaitStrategy;
use ringweave_ipc::wait::{self, Sleeper, ThreadSleeper, IDLE, WAITING};
use std::time::{Duration, Instant};

/// A loom model of the futex sleeper (`ringweave_ipc::futex::FutexSleeper`).
///
/// `sleep` is `FUTEX_WAIT(flag, WAITING)`: under the bucket lock, compare the
/// word with `WAITING` and, if equal, sleep, releasing the lock atomically.
/// `wake` is `FUTEX_WAKE(flag, 1)`: under the bucket lock, wake one sleeper.
/// A wake with nobody asleep is lost, exactly as with a futex; only the flag
/// word carries state between the two sides.
#[derive(Debug, Default)]
pub struct ModelFutex {
    bucket: Mutex<()>,
    sleepers: Condvar,
}

impl Sleeper for ModelFutex {
    fn prepare(&self) {}

    fn sleep(&self, flag: &AtomicU32, _deadline: Option<Instant>) {
        let bucket = self.bucket.lock().unwrap();
        // Relaxed: the kernel's read is ordered by the bucket lock, which
        // `wake` takes after the notifier's swap; nothing else is needed
        // (and the kernel's real read is stronger, not weaker).
        if flag.load(Ordering::Relaxed) != WAITING {
            return; // EAGAIN
        }
        drop(self.sleepers.wait(bucket).unwrap());
    }

    fn wake(&self, _flag: &AtomicU32) {
        let _bucket = self.bucket.lock().unwrap();
        self.sleepers.notify_one();
    }
}

/// The strategies the handshake models run with: sleep at once (the
/// handshake alone) and one spin and one yield first (the tier hand-over).
const STRATEGIES: [WaitStrategy; 2] = [
    WaitStrategy::SLEEP_AT_ONCE,
    WaitStrategy {
        spins: 1,
        yields: 1,
    },
];

/// A flag, its sleeper, and a payload published through a ready bit.
struct Handoff<S> {
    flag: AtomicU32,
    sleeper: S,
    ready: AtomicBool,
    payload: UnsafeCell<u64>,
}

// SAFETY: `payload` is written by the notifier before its Release store of
// `ready` and read by the sleeper after its Acquire load of `ready` returned
// true; loom checks exactly that ordering on every execution.
unsafe impl<S: Sync> Sync for Handoff<S> {}

/// One hand-over: the notifier writes the payload, sets `ready` and
/// notifies; the sleeper waits for `ready` and reads the payload.
fn handoff<S>(name: &str, make: fn() -> S)
where
    S: Sleeper + Send + Sync + 'static,
{
    for strategy in STRATEGIES {
        check(&format!("{name}: one hand-over, {strategy:?}"), move || {
            let shared = Arc::new(Handoff {
                flag: AtomicU32::new(IDLE),
                sleeper: make(),
                ready: AtomicBool::new(false),
                payload: UnsafeCell::new(0),
            });
            let notifier = {
                let shared = Arc::clone(&shared);
                spawn(move || {
                    // SAFETY: the sleeper reads the payload only after seeing
                    // `ready`, stored below.
                    shared.payload.with_mut(|p| unsafe { *p = 42 });
                    // SYNC POINT: handoff-ready. Pairs with the Acquire in
                    // the sleeper's condition.
                    shared.ready.store(true, Ordering::Release);
                    wait::notify(&shared.flag, &shared.sleeper);
                })
            };
            let woke = wait::wait_until(&shared.flag, &shared.sleeper, strategy, None, || {
                shared.ready.load(Ordering::Acquire)
            });
            assert!(woke, "no deadline: only a true condition ends the wait");
            // SAFETY: `ready` was seen with Acquire.
            let payload = shared.payload.with(|p| unsafe { *p });
            assert_eq!(payload, 42);
            notifier.join();
        });
    }
}

/// The state of [`ping_pong`]: whose turn it is, and the flag and sleeper of
/// the side playing the even turns and of the side playing the odd ones.
struct PingPong<S> {
    turn: AtomicU32,
    even: (AtomicU32, S),
    odd: (AtomicU32, S),
}

/// Rounds of ping-pong on two flags: each thread waits for its turn, takes
/// it, and notifies the other. Every round re-arms the same flag (and, with
/// the thread sleeper, re-registers the same thread), so stale wake-ups of
/// earlier rounds meet new sleeps.
fn ping_pong<S>(name: &str, make: fn() -> S, rounds: u32)
where
    S: Sleeper + Send + Sync + 'static,
{
    check(&format!("{name}: ping-pong, {rounds} rounds"), move || {
        let shared = Arc::new(PingPong {
            turn: AtomicU32::new(0),
            even: (AtomicU32::new(IDLE), make()),
            odd: (AtomicU32::new(IDLE), make()),
        });
        let player = |shared: Arc<PingPong<S>>, odd: u32| {
            move || {
                let (mine, theirs) = if odd == 1 {
                    (&shared.odd, &shared.even)
                } else {
                    (&shared.even, &shared.odd)
                };
                for round in 0..rounds {
                    let my_turn = 2 * round + odd;
                    // SYNC POINT: turn. Acquire pairs with the other side's
                    // Release below.
                    let woke = wait::wait_until(
                        &mine.0,
                        &mine.1,
                        WaitStrategy::SLEEP_AT_ONCE,
                        None,
                        || shared.turn.load(Ordering::Acquire) == my_turn,
                    );
                    assert!(woke);
                    shared.turn.store(my_turn + 1, Ordering::Release);
                    wait::notify(&theirs.0, &theirs.1);
                }
            }
        };
        let odd = spawn(player(Arc::clone(&shared), 1));
        player(Arc::clone(&shared), 0)();
        odd.join();
        assert_eq!(shared.turn.load(Ordering::Relaxed), 2 * rounds);
    });
}

/// Two notifiers race to wake one sleeper that needs both of their
/// conditions: the first wake-up may find only one set, so the sleeper
/// re-arms, and the second notifier must still wake it; only one notifier
/// wins each swap of the flag.
fn two_notifiers<S>(name: &str, make: fn() -> S)
where
    S: Sleeper + Send + Sync + 'static,
{
    check(&format!("{name}: two notifiers"), move || {
        let shared = Arc::new((
            AtomicU32::new(IDLE),
            make(),
            AtomicBool::new(false),
            AtomicBool::new(false),
        ));
        let notifier = |first: bool| {
            let shared = Arc::clone(&shared);
            spawn(move || {
                let (flag, sleeper, a, b) = &*shared;
                // SYNC POINT: conditions. Release pairs with the sleeper's
                // Acquire loads.
                if first { a } else { b }.store(true, Ordering::Release);
                wait::notify(flag, sleeper);
            })
        };
        let (one, two) = (notifier(true), notifier(false));
        let (flag, sleeper, a, b) = &*shared;
        let woke = wait::wait_until(flag, sleeper, WaitStrategy::SLEEP_AT_ONCE, None, || {
            a.load(Ordering::Acquire) && b.load(Ordering::Acquire)
        });
        assert!(woke);
        one.join();
        two.join();
    });
}

#[test]
fn thread_sleeper_handoff() {
    handoff("thread sleeper", ThreadSleeper::new);
}

#[test]
fn thread_sleeper_ping_pong() {
    ping_pong("thread sleeper", ThreadSleeper::new, 3);
}

#[test]
fn thread_sleeper_two_notifiers() {
    two_notifiers("thread sleeper", ThreadSleeper::new);
}

#[test]
fn futex_handoff() {
    handoff("futex model", ModelFutex::default);
}

#[test]
fn futex_ping_pong() {
    ping_pong("futex model", ModelFutex::default, 3);
}

#[test]
fn futex_two_notifiers() {
    two_notifiers("futex model", ModelFutex::default);
}

/// A consumer waiting on an empty ring with an interrupt condition is woken
/// by `RingWaker::wake` after the condition is set: `Interrupted`, never a
/// hang. With a producer pushing at the same time, the wait ends `Ready` or
/// `Interrupted`, whichever it sees first.
#[test]
fn consumer_interrupt() {
    for push in [false, true] {
        check(
            &format!("wait_for_items interrupted, push {push}"),
            move || {
                let (mut tx, mut rx) = channel::<u32>(1);
                rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
                let waker = rx.waker();
                let stop = Arc::new(AtomicBool::new(false));
                let interrupter = {
                    let stop = Arc::clone(&stop);
                    spawn(move || {
                        // SYNC POINT: stop. Release pairs with the Acquire in the
                        // interrupt condition.
                        stop.store(true, Ordering::Release);
                        waker.wake();
                    })
                };
                let producer = spawn(move || {
                    if push {
                        tx.push(7).unwrap();
                    }
                    // Keep the producer alive until here: a dropped producer
                    // would end the wait with `Closed` instead.
                    tx
                });
                let outcome = rx.wait_for_items(1, None, || stop.load(Ordering::Acquire));
                match outcome {
                    WaitOutcome::Interrupted => assert!(stop.load(Ordering::Relaxed)),
                    WaitOutcome::Ready(1) if push => assert_eq!(rx.pop(), Ok(7)),
                    other => panic!("unexpected {other:?}"),
                }
                interrupter.join();
                drop(producer.join());
            },
        );
    }
}

/// The producer side: waiting for space in a full ring, woken by
/// `RingWaker::wake` after the interrupt condition is set.
#[test]
fn producer_interrupt() {
    check("wait_for_slots interrupted", || {
        let (mut tx, rx) = channel::<u32>(1);
        tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        tx.push(1).unwrap();
        let waker = tx.waker();
        let stop = Arc::new(AtomicBool::new(false));
        let interrupter = {
            let stop = Arc::clone(&stop);
            spawn(move || {
                // SYNC POINT: stop. Release pairs with the Acquire below.
                stop.store(true, Ordering::Release);
                waker.wake();
            })
        };
        let outcome = tx.wait_for_slots(1, None, || stop.load(Ordering::Acquire));
        assert_eq!(outcome, WaitOutcome::Interrupted);
        interrupter.join();
        drop(rx);
    });
}

/// The timed path: with a deadline the thread sleeper yields instead of
/// parking (loom has no clock), so `pop_timeout` polls until the item
/// arrives. The deadline is far enough never to pass during the model.
#[test]
fn pop_timeout_receives() {
    check("pop_timeout receives", || {
        let (mut tx, mut rx) = channel::<u32>(1);
        rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        let producer = spawn(move || {
            tx.push(5).unwrap();
            tx
        });
        assert_eq!(rx.pop_timeout(Duration::from_secs(3600)), Ok(5));
        drop(producer.join());
    });
}

/// Why `wait_until` writes the flag only with RMWs: a minimal program that
/// loom 0.7 gets wrong.
///
/// Thread 1's swap reads thread 0's store `B`, so in every C++/Rust
/// execution it sits right after `B` in the flag's modification order, and
/// thread 0's later store `C` comes after it. With the SeqCst fences `X`
/// (thread 0) and `Y` (thread 1), either `X` precedes `Y` and thread 1's load
/// must see `C` (1), or `Y` precedes `X` and thread 0's load must see
/// `data` (1). Loom does not order `C` after the swap, lets thread 1 read the
/// swap's 0, and reports the forbidden outcome. This is the shape of a stale
/// notify (the swap) followed by a re-arm (`C`) in the handshake, which loom
/// then reports as a lost wake-up. If loom fixes this, this test fails: the
/// flag writes in `wait_until` may then go back to plain stores.
#[test]
#[should_panic(expected = "forbidden store-buffering outcome")]
fn loom_misorders_store_after_concurrent_rmw() {
    loom::model(|| {
        let flag = Arc::new(AtomicU32::new(0));
        let data = Arc::new(AtomicU32::new(0));
        flag.store(1, Ordering::Relaxed); // A
        flag.store(0, Ordering::Relaxed); // B
        let other = {
            let (flag, data) = (Arc::clone(&flag), Arc::clone(&data));
            thread::spawn(move || {
                let swapped = flag.swap(0, Ordering::AcqRel);
                data.store(1, Ordering::Release);
                fence(Ordering::SeqCst); // Y
                (swapped, flag.load(Ordering::Relaxed))
            })
        };
        flag.store(1, Ordering::Release); // C
        fence(Ordering::SeqCst); // X
        let seen_data = data.load(Ordering::Acquire);
        let (swapped, seen_flag) = other.join().unwrap();
        assert!(
            !(swapped == 0 && seen_data == 0 && seen_flag == 0),
            "forbidden store-buffering outcome"
        );
    });
}
