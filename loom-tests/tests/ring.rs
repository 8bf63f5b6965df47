//! Loom model of the in-process SPSC ring (`ringweave_ipc::ring`, which ringweave re-exports as `ringweave::ring`) and the index
//! protocol under it (`ringweave_ipc::index`).
//!
//! One producer thread and one consumer thread move 3–6 [`Tracked`] items
//! through `ringweave_ipc::ring::channel` with capacities 1–4 (3 is not a power of
//! two, so exact capacity over rounded-up storage is covered; 1 and 2 force
//! wrap-around on every item or two), using
//!
//! - single-item operations: `push`/`pop` (spinning on `Full`/`Empty`) and
//!   `push_blocking`/`pop_blocking` (the spin → yield → park tiers and the
//!   waiter-flag handshake);
//! - chunk operations: `write_chunk_uninit(..).fill_from_iter` (including
//!   partial fills), `read_chunk(..)` consumed by `into_iter()` (fully and
//!   partially), `drain()` and `commit_all()`.
//!
//! Every model asserts:
//!
//! - FIFO, no loss, no duplicate: the consumer receives exactly `0..n` in
//!   order, and every item is dropped exactly once, in FIFO order (a
//!   per-execution drop log; items left in a ring are dropped by it, in
//!   position order);
//! - no data race on a slot: loom tracks every slot access through the
//!   shim's `UnsafeCell` and fails an execution in which a read and a write
//!   of a slot are not ordered by the index protocol's Release/Acquire pairs;
//! - no lost wake-up in the blocking operations: a thread parked forever is a
//!   loom deadlock.
//!
//! The abandoned-side models assert that `pop_blocking` returns every item and
//! then `PopError::Closed` once the producer is dropped, that `push_blocking`
//! into a full ring returns `PushError::Abandoned` with the value once the
//! consumer is dropped, that `is_abandoned` reports both, and that items left
//! in the ring are dropped exactly once.
#![cfg(ringweave_loom)]

use loom::thread;
use loom_tests::{check, spawn, DropLog, Tracked};
use ringweave_ipc::ring::{channel, Consumer, PopError, Producer, PushError, WaitOutcome};
use ringweave_ipc::wait::WaitStrategy;

/// Capacities and item counts of the single-item models: every capacity 1–4
/// with every count 3–6.
const SIZES: [(usize, u32); 16] = [
    (1, 3),
    (1, 4),
    (1, 5),
    (1, 6),
    (2, 3),
    (2, 4),
    (2, 5),
    (2, 6),
    (3, 3),
    (3, 4),
    (3, 5),
    (3, 6),
    (4, 3),
    (4, 4),
    (4, 5),
    (4, 6),
];

/// The waits of the blocking models: park at once (the handshake alone), and
/// one spin and one yield first (the tier transitions). Longer tiers add
/// interleavings without adding protocol.
const STRATEGIES: [WaitStrategy; 2] = [
    WaitStrategy::SLEEP_AT_ONCE,
    WaitStrategy {
        spins: 1,
        yields: 1,
    },
];

/// Runs `produce` on a spawned thread and `consume` on the model's main
/// thread over a fresh ring, then checks what `consume` received and the drop
/// log.
fn spsc(
    name: &str,
    capacity: usize,
    n: u32,
    strategy: WaitStrategy,
    produce: fn(&mut Producer<Tracked>, &DropLog, u32),
    consume: fn(&mut Consumer<Tracked>, u32) -> Vec<u32>,
) {
    check(name, move || {
        let log = DropLog::new();
        let (mut tx, mut rx) = channel::<Tracked>(capacity);
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let producer_log = log.clone();
        let producer = spawn(move || {
            produce(&mut tx, &producer_log, n);
            // `tx` is dropped here: the producer side closes.
        });
        let received = consume(&mut rx, n);
        producer.join();
        drop(rx);
        assert_eq!(received, (0..n).collect::<Vec<_>>(), "FIFO, no loss");
        log.assert_fifo(n);
    });
}

/// Pushes `0..n` with `push`, yielding while the ring is full.
fn produce_push(tx: &mut Producer<Tracked>, log: &DropLog, n: u32) {
    for i in 0..n {
        let mut item = log.item(i);
        loop {
            match tx.push(item) {
                Ok(()) => break,
                Err(PushError::Full(back)) => {
                    item = back;
                    thread::yield_now();
                }
                Err(PushError::Abandoned(_)) => unreachable!("push never reports Abandoned"),
            }
        }
    }
}

/// Pops `n` items with `pop`, yielding while the ring is empty; drops each
/// at once so the drop log shows the consumption order.
fn consume_pop(rx: &mut Consumer<Tracked>, n: u32) -> Vec<u32> {
    let mut received = Vec::new();
    while received.len() < n as usize {
        match rx.pop() {
            Ok(item) => received.push(item.value()),
            Err(PopError::Empty) => thread::yield_now(),
            Err(PopError::Closed) => unreachable!("pop never reports Closed"),
        }
    }
    received
}

/// Pushes `0..n` with `push_blocking`.
fn produce_push_blocking(tx: &mut Producer<Tracked>, log: &DropLog, n: u32) {
    for i in 0..n {
        tx.push_blocking(log.item(i))
            .expect("the consumer is alive");
    }
}

/// Pops with `pop_blocking` until `Closed`, then checks that the producer is
/// reported gone and that `Closed` sticks.
fn consume_pop_blocking(rx: &mut Consumer<Tracked>, _n: u32) -> Vec<u32> {
    let mut received = Vec::new();
    loop {
        match rx.pop_blocking() {
            Ok(item) => received.push(item.value()),
            Err(PopError::Closed) => break,
            Err(PopError::Empty) => unreachable!("pop_blocking without deadline timed out"),
        }
    }
    assert!(rx.is_abandoned(), "Closed only after the producer is gone");
    assert_eq!(rx.pop_blocking().map(|i| i.value()), Err(PopError::Closed));
    received
}

/// Slots per chunk in the chunk models.
const CHUNK: usize = 2;

/// Writes `0..n` in chunks: waits for one free slot, reserves up to `CHUNK`
/// of the free slots and fills them from the shared iterator. The last
/// reservation may be larger than what is left, so `fill_from_iter` also
/// runs short.
fn produce_chunks(tx: &mut Producer<Tracked>, log: &DropLog, n: u32) {
    let mut items = (0..n).map(|i| log.item(i));
    let mut written = 0;
    while written < n as usize {
        match tx.wait_for_slots(1, None, || false) {
            WaitOutcome::Ready(free) => {
                assert!(free >= 1);
                let want = free.min(CHUNK);
                let chunk = tx.write_chunk_uninit(want).expect("free slots stay free");
                assert_eq!(chunk.len(), want);
                let filled = chunk.fill_from_iter(&mut items);
                assert_eq!(filled, want.min(n as usize - written));
                written += filled;
            }
            other => unreachable!("consumer alive, no interrupt: {other:?}"),
        }
    }
    assert!(items.next().is_none());
}

/// Reads chunks until the ring is closed and drained, cycling through the
/// ways of consuming a chunk. Returns the values it took itself; items that
/// `drain` or `commit_all` dropped unseen show only in the drop log, which
/// the caller checks, so the consumer reconstructs them from positions.
fn consume_chunks(rx: &mut Consumer<Tracked>, n: u32) -> Vec<u32> {
    let mut received = Vec::new();
    let mut round = 0;
    loop {
        let available = match rx.wait_for_items(1, None, || false) {
            WaitOutcome::Ready(available) => available,
            WaitOutcome::Closed => break,
            other => unreachable!("no deadline, no interrupt: {other:?}"),
        };
        let want = available.min(CHUNK);
        let chunk = rx.read_chunk(want).expect("readable items stay readable");
        assert_eq!(chunk.len(), want);
        let first = received.len() as u32;
        match round % 4 {
            // Take every item.
            0 => received.extend(chunk.into_iter().map(|item| item.value())),
            // Take the first item; the rest stays in the ring, unreleased.
            1 => {
                let mut iter = chunk.into_iter();
                received.push(iter.next().expect("chunk not empty").value());
                assert_eq!(iter.len(), want - 1);
            }
            // Take the first item; `drain` drops and releases the rest.
            2 => {
                let mut iter = chunk.drain();
                received.push(iter.next().expect("chunk not empty").value());
                drop(iter);
                received.extend(first + 1..first + want as u32);
            }
            // Drop and release all of it.
            _ => {
                chunk.commit_all();
                received.extend(first..first + want as u32);
            }
        }
        round += 1;
    }
    assert!(rx.is_abandoned());
    assert_eq!(received.len(), n as usize);
    received
}

#[test]
fn push_pop() {
    for (capacity, n) in SIZES {
        spsc(
            &format!("push/pop capacity {capacity}, {n} items"),
            capacity,
            n,
            WaitStrategy::SLEEP_AT_ONCE,
            produce_push,
            consume_pop,
        );
    }
}

#[test]
fn push_pop_blocking() {
    for strategy in STRATEGIES {
        for (capacity, n) in SIZES {
            spsc(
                &format!("push_blocking/pop_blocking capacity {capacity}, {n} items, {strategy:?}"),
                capacity,
                n,
                strategy,
                produce_push_blocking,
                consume_pop_blocking,
            );
        }
    }
}

#[test]
fn blocking_producer_spinning_consumer() {
    spsc(
        "push_blocking/pop capacity 1, 3 items",
        1,
        3,
        WaitStrategy::SLEEP_AT_ONCE,
        produce_push_blocking,
        consume_pop,
    );
}

#[test]
fn chunks() {
    for (capacity, n) in [(1, 3), (2, 3), (2, 5), (3, 4), (4, 6)] {
        spsc(
            &format!("chunks capacity {capacity}, {n} items"),
            capacity,
            n,
            WaitStrategy::SLEEP_AT_ONCE,
            produce_chunks,
            consume_chunks,
        );
    }
}

#[test]
fn chunk_producer_single_consumer() {
    spsc(
        "write_chunk_uninit/pop_blocking capacity 2, 3 items",
        2,
        3,
        WaitStrategy::SLEEP_AT_ONCE,
        produce_chunks,
        consume_pop_blocking,
    );
}

/// The consumer takes one item and leaves; the producer, pushing blocking
/// into the then-full ring, must get its value back as `Abandoned` and not
/// hang. Items still in the ring are dropped with it, exactly once.
#[test]
fn consumer_abandons() {
    for capacity in 1..=2usize {
        check(
            &format!("consumer abandons, capacity {capacity}"),
            move || {
                let log = DropLog::new();
                let (mut tx, mut rx) = channel::<Tracked>(capacity);
                tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
                rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
                let consumer = spawn(move || {
                    let first = rx.pop_blocking().expect("the producer pushes");
                    assert_eq!(first.value(), 0);
                    // `rx` is dropped here, with up to `capacity` items in it.
                });
                // The consumer frees at most one slot before it leaves, so
                // the first `capacity` pushes succeed and push number
                // `capacity + 2` cannot. Push `capacity + 1` may go either
                // way: once the consumer is gone, `push_blocking` into a
                // full-looking ring may report `Abandoned` before it sees the
                // freed slot, which the contract allows (nothing pushed now
                // would ever be read).
                for i in 0..capacity as u32 {
                    tx.push_blocking(log.item(i))
                        .expect("a slot is free or the consumer is alive");
                }
                let mut next = capacity as u32;
                let abandoned = loop {
                    match tx.push_blocking(log.item(next)) {
                        Ok(()) => {
                            assert_eq!(next, capacity as u32, "at most one slot is freed");
                            next += 1;
                        }
                        Err(PushError::Abandoned(back)) => break back,
                        Err(PushError::Full(_)) => unreachable!("no deadline"),
                    }
                };
                assert_eq!(abandoned.value(), next, "the value comes back");
                drop(abandoned);
                let created = next + 1;
                assert!(tx.is_abandoned());
                consumer.join();
                drop(tx);
                log.assert_each_once(created);
            },
        );
    }
}

/// The producer pushes and leaves while the consumer may be parked: the
/// consumer gets every item, then `Closed`. The producer's view of a live
/// consumer is checked too.
#[test]
fn producer_abandons() {
    check("producer abandons, capacity 2, 2 items", || {
        let log = DropLog::new();
        let (mut tx, mut rx) = channel::<Tracked>(2);
        tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        let producer_log = log.clone();
        let producer = spawn(move || {
            tx.push(producer_log.item(0)).unwrap();
            tx.push(producer_log.item(1)).unwrap();
            assert!(!tx.is_abandoned());
        });
        let received = consume_pop_blocking(&mut rx, 2);
        assert_eq!(received, [0, 1]);
        producer.join();
        log.assert_fifo(2);
    });
}
