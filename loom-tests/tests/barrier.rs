//! Loom model of the switch barrier: the per-stage pause handshake of
//! `ringweave_ipc::control` (`StageControl`), driven the way ringweave's
//! `src/coordinator/` drives it, over real rings woken through
//! `RingWaker::wake`.
//!
//! The stage loops and the coordinator are small models of `src/stage.rs`
//! and `src/coordinator/` (which need the whole engine): a stage checks
//! `interrupted()` at every item boundary and while it waits for input
//! (`wait_for_items` with `interrupt = interrupted()`), accepts with
//! `try_pause` and hands itself (its ring ends) to the coordinator; it
//! waits for output room interruptible only by an abort, as `wait_room` does.
//! The coordinator pauses the stages source first, sink last, with
//! `request_pause` + `RingWaker::wake`, waits for each hand-over, and on a
//! timeout withdraws the request with `cancel_pause`; resuming is `reset` and
//! handing the stage back (`Coordinator::start` spawns a new thread instead;
//! loom allows only 5 threads per execution, so the model restarts the stage
//! on its old one, with the same happens-before edge).
//!
//! Models: a source and a sink moving 2 items (coordinator + 2 stage
//! threads, preemption bound at most 2), and a source, a map and a sink
//! moving 1 item (coordinator + 3 stage threads, bound at most 1: above it
//! the state space does not fit in minutes); ring capacity 1; each with the
//! barrier reached (then the coordinator takes every residual item out of
//! every ring and puts it into a new ring, as a switch migrates the rings,
//! and resumes every stage), and with a timeout at each stage (the
//! coordinator gives up at once, racing the stage's `try_pause`). They
//! assert:
//!
//! - no stage processes an item after acknowledging: each stage publishes
//!   its counters (`StageControl::record`) after every item, and the
//!   counters the coordinator reads after the hand-over equal the tally the
//!   stage handed over;
//! - the coordinator never touches a ring while a stage can still touch it:
//!   it reads and re-writes every slot of every ring during the migration,
//!   and loom's `UnsafeCell` tracking fails any access not ordered after the
//!   stages' last ones;
//! - resume releases every stage: every stage thread, the resumed ones
//!   included, ends `Finished` (a stage left paused or asleep is a loom
//!   deadlock), and the sink receives exactly `0..n` in order;
//! - a timed-out barrier leaves every stage running: when `cancel_pause`
//!   wins, that stage never pauses for the withdrawn request (its thread ends
//!   `Finished`, not `Paused`), the stages after it are never asked, and the
//!   stages before it are resumed; when the stage's `try_pause` wins
//!   instead, the coordinator receives its hand-over.
#![cfg(ringweave_loom)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_tests::{check_bounded, spawn, Joiner};
use ringweave_ipc::control::StageControl;
use ringweave_ipc::ring::{channel, Consumer, Producer, RingWaker, WaitOutcome};
use ringweave_ipc::wait::WaitStrategy;

/// Slots per ring: 1, so a stage waits for room and for items.
const CAPACITY: usize = 1;

/// How a stage thread ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// Accepted a pause request and handed itself over.
    Paused,
    /// Its input ended (or, for the source, it emitted everything).
    Finished,
}

/// What a stage is: the operator, its state and its ring ends, which travel
/// to the coordinator when it pauses.
struct Stage {
    index: usize,
    /// The source's next item and how many it emits; unused by the others.
    next: u32,
    items: u32,
    /// What the sink received; unused by the others.
    received: Vec<u32>,
    input: Option<Consumer<u32>>,
    output: Option<Producer<u32>>,
    /// Items taken from the input and handed to the output, ever.
    items_in: u64,
    items_out: u64,
}

/// The barrier check at an item boundary (`stage::boundary`).
fn boundary(control: &StageControl) -> Result<(), Exit> {
    if control.interrupted() {
        interrupted(control)?;
    }
    Ok(())
}

/// An interrupted wait (`stage::interrupted`; no aborts in these models).
fn interrupted(control: &StageControl) -> Result<(), Exit> {
    assert!(!control.is_aborted());
    if control.try_pause() {
        return Err(Exit::Paused);
    }
    Ok(())
}

impl Stage {
    /// The stage loop: `Ok` never, `Err(exit)` when it stops.
    fn run(&mut self, control: &StageControl) -> Result<(), Exit> {
        loop {
            boundary(control)?;
            let value = match self.input.as_mut() {
                // The source.
                None => {
                    if self.next == self.items {
                        self.output = None; // closes the ring
                        return Err(Exit::Finished);
                    }
                    self.next += 1;
                    self.next - 1
                }
                // `Inbox::await_items`, then take one item.
                Some(input) => {
                    loop {
                        match input.wait_for_items(1, None, || control.interrupted()) {
                            WaitOutcome::Ready(_) => break,
                            WaitOutcome::Closed => {
                                self.input = None;
                                self.output = None;
                                return Err(Exit::Finished);
                            }
                            WaitOutcome::Interrupted | WaitOutcome::TimedOut => {
                                interrupted(control)?
                            }
                        }
                    }
                    self.items_in += 1;
                    input.pop().expect("an item is ready")
                }
            };
            match self.output.as_mut() {
                // `Outbox::wait_room` (only an abort interrupts it), then
                // emit.
                Some(output) => {
                    match output.wait_for_slots(1, None, || control.is_aborted()) {
                        WaitOutcome::Ready(_) => {}
                        other => panic!("the consumer stays, no abort: {other:?}"),
                    }
                    output.push(value).expect("a slot is free");
                }
                // The sink.
                None => self.received.push(value),
            }
            self.items_out += 1;
            control.record(self.items_in, self.items_out);
        }
    }
}

/// A one-slot mailbox: the model of the executor's event channel (stage →
/// coordinator: "I paused / finished, here I am") and of the restart of a
/// paused stage (coordinator → stage). One Release/Acquire edge per message,
/// which is what a channel (or a thread spawn) guarantees.
///
/// The value sits in a `std` mutex that loom does not see: the loom atomic
/// `full` carries the ordering, the mutex only the value, and it is never
/// held across a loom operation. The receiver waits with `park` (a message
/// comes with an `unpark`), not with a loom channel or condition variable:
/// a stage thread can receive a stale `unpark` from a ring's waker while it
/// waits here, which `park` absorbs and loom 0.7 mishandles in its blocking
/// primitives (see `loom_tests::Joiner`). A model restarts a paused stage on
/// its old thread because loom allows only 5 threads per execution.
struct Mailbox<T> {
    full: loom::sync::atomic::AtomicBool,
    value: std::sync::Mutex<Option<T>>,
}

impl<T> Mailbox<T> {
    fn new() -> Self {
        Self {
            full: loom::sync::atomic::AtomicBool::new(false),
            value: std::sync::Mutex::new(None),
        }
    }

    /// Leaves `value` for the thread `receiver`, which waits in `recv`.
    fn send(&self, value: T, receiver: &loom::thread::Thread) {
        let previous = self.value.lock().unwrap().replace(value);
        assert!(previous.is_none(), "one message at a time");
        // SYNC POINT: mailbox. Pairs with the Acquire in `recv`. RMWs only
        // on this word (see `ringweave_ipc::wait::wait_until` for why).
        self.full.swap(true, Ordering::Release);
        receiver.unpark();
    }

    /// Waits for the next message. Only the receiver named by the senders
    /// may call this.
    fn recv(&self) -> T {
        // SYNC POINT: mailbox. Pairs with the Release in `send`.
        while !self.full.swap(false, Ordering::Acquire) {
            loom::thread::park();
        }
        self.value.lock().unwrap().take().expect("a message")
    }
}

/// The per-stage mailboxes: exits (stage → coordinator) and restarts
/// (coordinator → stage).
struct Mailboxes {
    exits: Vec<Mailbox<(Stage, Exit)>>,
    restarts: Vec<Mailbox<Stage>>,
}

/// Runs `stage` on a new thread until it finishes; each time it pauses it
/// hands itself to the coordinator and waits to be restarted
/// (`Coordinator::start`'s thread, plus the restart).
fn start(
    controls: &Arc<Vec<StageControl>>,
    mailboxes: &Arc<Mailboxes>,
    coordinator: loom::thread::Thread,
    mut stage: Stage,
) -> Joiner<()> {
    let controls = Arc::clone(controls);
    let mailboxes = Arc::clone(mailboxes);
    spawn(move || loop {
        let index = stage.index;
        let exit = stage
            .run(&controls[index])
            .expect_err("the loop only ends with an exit");
        mailboxes.exits[index].send((stage, exit), &coordinator);
        if exit == Exit::Finished {
            return;
        }
        stage = mailboxes.restarts[index].recv();
    })
}

/// Where the coordinator gives up.
#[derive(Clone, Copy, Debug)]
enum Barrier {
    /// Every stage accepts; the coordinator waits as long as it takes.
    Reached,
    /// The deadline passes at once for stage `n`, right after asking it.
    TimeoutAt(usize),
}

/// Pipeline of `stages` stages (source, `stages - 2` maps, sink) moving
/// `items` items under a coordinator that runs one barrier as `barrier` says,
/// then lets it finish.
fn pipeline(stages: usize, items: u32, barrier: Barrier) {
    let mut outputs = Vec::new();
    let mut inputs = vec![None];
    let mut wakers: Vec<RingWaker> = Vec::new();
    for _ in 1..stages {
        let (mut tx, mut rx) = channel::<u32>(CAPACITY);
        tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        wakers.push(tx.waker());
        outputs.push(Some(tx));
        inputs.push(Some(rx));
    }
    outputs.push(None);
    let controls = Arc::new(
        (0..stages)
            .map(|_| StageControl::default())
            .collect::<Vec<_>>(),
    );
    let mailboxes = Arc::new(Mailboxes {
        exits: (0..stages).map(|_| Mailbox::new()).collect(),
        restarts: (0..stages).map(|_| Mailbox::new()).collect(),
    });
    let threads: Vec<Joiner<()>> = inputs
        .into_iter()
        .zip(outputs)
        .enumerate()
        .map(|(index, (input, output))| {
            start(
                &controls,
                &mailboxes,
                loom::thread::current(),
                Stage {
                    index,
                    next: 0,
                    items,
                    received: Vec::new(),
                    input,
                    output,
                    items_in: 0,
                    items_out: 0,
                },
            )
        })
        .collect();
    let wake_all = || wakers.iter().for_each(RingWaker::wake);

    // The barrier, source first (`Coordinator::pause_thread`).
    let mut held: Vec<(Stage, Exit)> = Vec::new();
    let mut timed_out = None;
    for index in 0..stages {
        controls[index].request_pause();
        wake_all();
        if let Barrier::TimeoutAt(at) = barrier {
            if at == index && controls[index].cancel_pause() {
                // Withdrawn before the stage accepted: it runs on as if
                // never asked, and so do the stages after it.
                assert!(!controls[index].interrupted());
                timed_out = Some(index);
                break;
            }
            // Otherwise the stage accepted first: its hand-over comes.
        }
        let (stage, exit) = mailboxes.exits[index].recv();
        // Everything the stage counted before it stopped is published, and
        // it counted nothing after.
        assert_eq!(
            controls[index].counts(),
            (stage.items_in, stage.items_out),
            "stage {index} processed an item after acknowledging"
        );
        held.push((stage, exit));
    }

    if timed_out.is_none() {
        // Every stage is held: migrate every ring, as a switch copies the
        // residual slots into new rings. Loom fails this if any stage could
        // still touch a slot.
        for index in 1..stages {
            let (upstream, downstream) = held.split_at_mut(index);
            let producer = upstream[index - 1].0.output.take();
            let Some(mut consumer) = downstream[0].0.input.take() else {
                // The downstream stage finished, so its input had closed.
                assert!(producer.is_none());
                continue;
            };
            let residual: Vec<u32> = std::iter::from_fn(|| consumer.pop().ok()).collect();
            assert!(residual.len() <= CAPACITY);
            let (mut tx, mut rx) = channel::<u32>(CAPACITY);
            tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
            rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
            for value in residual {
                tx.push(value).expect("the new ring has room");
            }
            // A finished upstream had closed the old ring: close the new one.
            if producer.is_some() {
                upstream[index - 1].0.output = Some(tx);
            }
            downstream[0].0.input = Some(rx);
        }
    }

    // Resume every paused stage (`Coordinator::resume_threads`): clear its
    // word, then hand it back.
    let mut finished: Vec<Option<Stage>> = (0..stages).map(|_| None).collect();
    let mut pending: Vec<usize> = (held.len()..stages).collect();
    for (stage, exit) in held {
        let index = stage.index;
        match exit {
            Exit::Paused => {
                controls[index].reset();
                mailboxes.restarts[index].send(stage, threads[index].thread());
                pending.push(index);
            }
            Exit::Finished => finished[index] = Some(stage),
        }
    }

    // Run to the end: every stage must finish, none may pause again.
    for index in pending {
        let (stage, exit) = mailboxes.exits[index].recv();
        assert_eq!(exit, Exit::Finished, "stage {index} was not released");
        finished[index] = Some(stage);
    }
    for thread in threads {
        thread.join();
    }
    if let Some(at) = timed_out {
        assert!(at < stages);
    }
    let sink = finished[stages - 1].take().expect("the sink finished");
    assert_eq!(
        sink.received,
        (0..items).collect::<Vec<_>>(),
        "exactly once, in order, across the barrier"
    );
}

/// Preemption bound cap of the two-stage models (2 items).
const TWO_STAGE_PREEMPTIONS: usize = 2;
/// Preemption bound cap of the three-stage models (1 item): four threads
/// explode above it (bound 2 does not finish in minutes).
const THREE_STAGE_PREEMPTIONS: usize = 1;

#[test]
fn two_stages_barrier_reached() {
    check_bounded(
        "barrier: source → sink, 2 items, reached",
        TWO_STAGE_PREEMPTIONS,
        || pipeline(2, 2, Barrier::Reached),
    );
}

#[test]
fn two_stages_barrier_timeout() {
    for at in 0..2 {
        check_bounded(
            &format!("barrier: source → sink, 2 items, timeout at stage {at}"),
            TWO_STAGE_PREEMPTIONS,
            move || pipeline(2, 2, Barrier::TimeoutAt(at)),
        );
    }
}

#[test]
fn three_stages_barrier_reached() {
    check_bounded(
        "barrier: source → map → sink, 1 item, reached",
        THREE_STAGE_PREEMPTIONS,
        || pipeline(3, 1, Barrier::Reached),
    );
}

#[test]
fn three_stages_barrier_timeout() {
    for at in 0..3 {
        check_bounded(
            &format!("barrier: source → map → sink, 1 item, timeout at stage {at}"),
            THREE_STAGE_PREEMPTIONS,
            move || pipeline(3, 1, Barrier::TimeoutAt(at)),
        );
    }
}
