//! Loom model of the forced pause a crash recovery uses
//! (`StageControl::request_pause_forced`): a stage waiting for room in a
//! ring whose consumer is dead (nothing will ever take from it) accepts a
//! forced request, keeping the item it holds; a plain request does not
//! interrupt that wait (a stage pauses only with nothing held, see
//! `ShmOutbox::wait_room`), and withdrawing it leaves no trace that would
//! make the next plain request look forced.
//!
//! The stage is a source of two items over a ring of one slot: the first
//! fills the ring, the second waits for room with
//! `interrupt = pause_forced()`, as the source's outbox does.
#![cfg(ringweave_loom)]

use loom::sync::Arc;
use loom_tests::{check_bounded, spawn, Joiner};
use ringweave_ipc::control::StageControl;
use ringweave_ipc::ring::{channel, Consumer, Producer, RingWaker, WaitOutcome};
use ringweave_ipc::wait::WaitStrategy;

/// Runs the stage: sends item 0, then holds item 1 and waits for room until
/// a forced pause is accepted. Returns the item it holds.
fn stage(control: Arc<StageControl>, mut tx: Producer<u32>) -> (u32, Producer<u32>) {
    tx.push(0).expect("the ring has one free slot");
    let held = 1;
    loop {
        match tx.wait_for_slots(1, None, || control.pause_forced()) {
            WaitOutcome::Interrupted => {
                assert!(!control.is_aborted());
                if control.try_pause() {
                    return (held, tx);
                }
            }
            WaitOutcome::Ready(_) => panic!("nobody consumes: the ring never has room"),
            WaitOutcome::Closed => panic!("the consumer is dead, not closed"),
            WaitOutcome::TimedOut => {}
        }
    }
}

/// A ring of one slot and the stage on a thread of its own, sending into
/// it: the consumer end (nobody reads it until the stage has paused), a
/// waker, the stage's control word and its thread.
fn start() -> (
    Consumer<u32>,
    RingWaker,
    Arc<StageControl>,
    Joiner<(u32, Producer<u32>)>,
) {
    let (mut tx, rx) = channel::<u32>(1);
    tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
    let waker = tx.waker();
    let control = Arc::new(StageControl::default());
    let worker = {
        let control = Arc::clone(&control);
        spawn(move || stage(control, tx))
    };
    (rx, waker, control, worker)
}

/// A forced request reaches the stage; the held item and the ring's item
/// are both still there afterwards.
fn forced_reaches_a_stage_waiting_for_room() {
    let (mut rx, waker, control, worker) = start();
    control.request_pause_forced();
    waker.wake();
    let (held, _tx) = worker.join();
    assert_eq!(held, 1, "the held item is kept");
    assert_eq!(rx.pop().ok(), Some(0), "the ring's item is kept");
    assert!(rx.pop().is_err());
}

/// A plain request, withdrawn, leaves the stage waiting (the cancel always
/// wins: the stage never accepts it); the forced request after it is
/// accepted.
fn plain_request_does_not_interrupt_and_cancel_clears_it() {
    let (mut rx, waker, control, worker) = start();
    control.request_pause();
    waker.wake();
    assert!(
        control.cancel_pause(),
        "a stage waiting for room never accepts a plain request"
    );
    assert!(
        !control.pause_forced(),
        "the withdrawn request is not forced"
    );
    control.request_pause_forced();
    waker.wake();
    let (held, _tx) = worker.join();
    assert_eq!(held, 1);
    assert_eq!(rx.pop().ok(), Some(0));
}

#[test]
fn forced_pause_reaches_a_stage_waiting_on_a_dead_consumer() {
    check_bounded(
        "forced pause: a stage waiting for room",
        3,
        forced_reaches_a_stage_waiting_for_room,
    );
}

#[test]
fn plain_pause_is_not_forced_and_cancel_leaves_no_trace() {
    check_bounded(
        "forced pause: plain request withdrawn, then forced",
        3,
        plain_request_does_not_interrupt_and_cancel_clears_it,
    );
}
