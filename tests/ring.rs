//! Integration tests of `ringweave::ring`: FIFO order with no loss and no
//! duplicate through every producer and consumer API path, across capacities
//! (tiny ones to force many wrap-arounds, non-powers of two to check the exact
//! capacity, a large one); drop accounting; abandoned ends; wake-ups.
//!
//! Loop counts shrink in debug builds and under Miri. No test asserts a
//! maximum run time; where a test sleeps, it is only to make the *other*
//! thread park first, and the test stays correct without the sleep.

use ringweave::ring::{
    channel, ChunkError, Consumer, PopError, Producer, PushError, RingWaker, WaitOutcome,
};
use ringweave::WaitStrategy;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Sizes

/// Capacities for the transfer tests: every tiny one (powers of two and not)
/// and a large one.
fn capacities() -> Vec<usize> {
    if cfg!(miri) {
        vec![1, 2, 3, 5]
    } else {
        vec![1, 2, 3, 4, 5, 6, 7, 8, 4096]
    }
}

/// Items sent through a ring of `capacity`: many times the capacity.
fn items_for(capacity: usize) -> u64 {
    if cfg!(miri) {
        60
    } else if cfg!(debug_assertions) {
        (20_000).max(capacity as u64 * 8)
    } else {
        (50_000).max(capacity as u64 * 16)
    }
}

/// Repetitions of the wake-up race tests.
fn race_rounds() -> usize {
    if cfg!(miri) {
        2
    } else if cfg!(debug_assertions) {
        300
    } else {
        1_000
    }
}

/// Lets the other thread reach its park. Tests are correct without it.
fn let_other_side_park() {
    if !cfg!(miri) {
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Two-thread transfer harness

/// One way for the producer to hand over items.
#[derive(Clone, Copy, Debug)]
enum Put {
    /// `push`, spinning with `yield_now` on `Full`.
    Push,
    /// `push_blocking`.
    Blocking,
    /// `push_timeout`, retrying on `Full`.
    Timeout,
    /// `write_chunk_uninit(k).fill_from_iter`, sometimes with a short iterator.
    FillFromIter,
    /// `write_chunk_uninit(k).as_mut_slices` + `commit`, sometimes of fewer.
    Slices,
    /// `push_from_iter`.
    FromIter,
    /// `wait_for_slots(k)` then a chunk write.
    WaitSlots,
}

/// One way for the consumer to take items.
#[derive(Clone, Copy, Debug)]
enum Take {
    /// `pop`, spinning with `yield_now` on `Empty`.
    Pop,
    /// `pop_blocking`.
    Blocking,
    /// `pop_timeout`, retrying on `Empty`.
    Timeout,
    /// `read_chunk(k).into_iter()`, partially consumed.
    PartialIter,
    /// `read_chunk(k).as_slices` + `commit_all`.
    SlicesCommitAll,
    /// `read_chunk(k).drain()`, partially consumed (the rest dropped).
    Drain,
    /// `peek` + `pop`, and `ReadChunk::get` + `commit_all`.
    GetPeek,
    /// `wait_for_items(k)` then a chunk read.
    WaitItems,
}

const ALL_PUTS: [Put; 7] = [
    Put::Push,
    Put::Blocking,
    Put::Timeout,
    Put::FillFromIter,
    Put::Slices,
    Put::FromIter,
    Put::WaitSlots,
];

const ALL_TAKES: [Take; 8] = [
    Take::Pop,
    Take::Blocking,
    Take::Timeout,
    Take::PartialIter,
    Take::SlicesCommitAll,
    Take::Drain,
    Take::GetPeek,
    Take::WaitItems,
];

/// A deterministic chunk length in `1..=max`, varying with `step`.
fn chunk_len(step: u64, max: usize) -> usize {
    let max = max.max(1);
    1 + (step.wrapping_mul(7919).wrapping_add(step >> 3) % max as u64) as usize
}

/// Largest chunk a producer waits for, so that with [`max_wait_items`] a
/// producer waiting for `k'` slots and a consumer waiting for `k` items can
/// never block each other (`k + k' <= capacity + 1`).
fn max_wait_slots(capacity: usize) -> usize {
    capacity / 2 + 1
}

fn max_wait_items(capacity: usize) -> usize {
    capacity.div_ceil(2)
}

/// Sends `0..n` through `tx`, cycling through `puts` (one operation each).
/// Stops early if the consumer is gone (it failed), so that a consumer-side
/// failure is reported instead of hanging the producer.
fn produce(mut tx: Producer<u64>, n: u64, puts: &[Put]) {
    let capacity = tx.capacity();
    let mut next = 0u64;
    let mut step = 0u64;
    while next < n && !tx.is_abandoned() {
        let put = puts[step as usize % puts.len()];
        step += 1;
        let left = (n - next) as usize;
        match put {
            Put::Push => {
                let mut value = next;
                loop {
                    match tx.push(value) {
                        Ok(()) => break,
                        Err(PushError::Full(_)) if tx.is_abandoned() => return,
                        Err(PushError::Full(v)) => {
                            value = v;
                            thread::yield_now();
                        }
                        Err(PushError::Abandoned(_)) => panic!("push: Abandoned"),
                    }
                }
                next += 1;
            }
            Put::Blocking => match tx.push_blocking(next) {
                Ok(()) => next += 1,
                Err(PushError::Abandoned(_)) => return,
                Err(PushError::Full(_)) => panic!("push_blocking: Full"),
            },
            Put::Timeout => {
                let mut value = next;
                loop {
                    match tx.push_timeout(value, Duration::from_millis(1)) {
                        Ok(()) => break,
                        Err(PushError::Full(v)) => value = v,
                        Err(PushError::Abandoned(_)) => return,
                    }
                }
                next += 1;
            }
            Put::FillFromIter => {
                let want = chunk_len(step, capacity.min(700)).min(left);
                match tx.write_chunk_uninit(want) {
                    Ok(chunk) => {
                        assert_eq!(chunk.len(), want);
                        // Every fifth chunk gets a shorter iterator: only what
                        // it yields is published.
                        let give = if step % 5 == 0 { want / 2 } else { want };
                        let written = chunk.fill_from_iter(next..next + give as u64);
                        assert_eq!(written, give);
                        next += written as u64;
                    }
                    Err(ChunkError {
                        requested,
                        available,
                    }) => {
                        assert_eq!(requested, want);
                        assert!(available < want);
                        thread::yield_now();
                    }
                }
            }
            Put::Slices => {
                let want = chunk_len(step, capacity.min(700)).min(left);
                match tx.write_chunk_uninit(want) {
                    Ok(mut chunk) => {
                        let (a, b) = chunk.as_mut_slices();
                        assert_eq!(a.len() + b.len(), want);
                        assert!(!a.is_empty());
                        for (i, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
                            slot.write(next + i as u64);
                        }
                        // Every fourth chunk commits one fewer than written.
                        let commit = if step % 4 == 0 { want - 1 } else { want };
                        // SAFETY: all `want >= commit` slots were written above.
                        unsafe { chunk.commit(commit) };
                        next += commit as u64;
                    }
                    Err(_) => thread::yield_now(),
                }
            }
            Put::FromIter => {
                let mut iter = next..n;
                let pushed = tx.push_from_iter(&mut iter);
                // Items not pushed stay in the iterator.
                assert_eq!(iter.start, next + pushed as u64);
                next += pushed as u64;
                if pushed == 0 {
                    thread::yield_now();
                }
            }
            Put::WaitSlots => {
                let want = chunk_len(step, max_wait_slots(capacity)).min(left);
                match tx.wait_for_slots(want, None, || false) {
                    WaitOutcome::Ready(free) => {
                        assert!(free >= want, "Ready({free}) < {want}");
                        let k = free.min(left);
                        let written = tx
                            .write_chunk_uninit(k)
                            .expect("slots seen free by wait_for_slots")
                            .fill_from_iter(next..);
                        assert_eq!(written, k);
                        next += k as u64;
                    }
                    WaitOutcome::Closed => return,
                    other => panic!("wait_for_slots: {other:?}"),
                }
            }
        }
    }
}

/// Receives until `n` items arrived or the ring is closed and empty, cycling
/// through `takes`.
fn consume(mut rx: Consumer<u64>, n: u64, takes: &[Take]) -> Vec<u64> {
    let n = n as usize;
    let mut got = Vec::with_capacity(n);
    let mut step = 0u64;
    // The consumer does not know the capacity; bound chunk lengths by the
    // largest fill ever seen instead (at least 1).
    let mut seen_fill = 1usize;
    // Idle for a non-blocking path: stop if the producer is gone and nothing
    // is left (it panicked, or sent fewer items than expected), else yield.
    let idle = |rx: &mut Consumer<u64>| -> bool {
        if rx.is_abandoned() && rx.slots() == 0 {
            return true;
        }
        thread::yield_now();
        false
    };
    while got.len() < n {
        let take = takes[step as usize % takes.len()];
        step += 1;
        let available = rx.slots();
        seen_fill = seen_fill.max(available);
        match take {
            Take::Pop => match rx.pop() {
                Ok(v) => got.push(v),
                Err(PopError::Empty) => {
                    if idle(&mut rx) {
                        break;
                    }
                }
                Err(PopError::Closed) => panic!("pop returned Closed"),
            },
            Take::Blocking => match rx.pop_blocking() {
                Ok(v) => got.push(v),
                Err(PopError::Closed) => break,
                Err(PopError::Empty) => panic!("pop_blocking returned Empty"),
            },
            Take::Timeout => match rx.pop_timeout(Duration::from_millis(1)) {
                Ok(v) => got.push(v),
                Err(PopError::Empty) => {}
                Err(PopError::Closed) => break,
            },
            Take::PartialIter | Take::SlicesCommitAll | Take::Drain | Take::GetPeek
                if available == 0 =>
            {
                if idle(&mut rx) {
                    break;
                }
            }
            Take::PartialIter => {
                let want = chunk_len(step, available.min(700)).min(available);
                let chunk = rx.read_chunk(want).expect("items seen by slots()");
                assert_eq!(chunk.len(), want);
                let mut iter = chunk.into_iter();
                let m = chunk_len(step / 3, want);
                got.extend(iter.by_ref().take(m));
                assert_eq!(iter.len(), want - m);
                drop(iter);
                // The items not taken are still there.
                assert!(rx.slots() >= want - m);
            }
            Take::SlicesCommitAll => {
                let want = chunk_len(step, available.min(700)).min(available);
                let chunk = rx.read_chunk(want).expect("items seen by slots()");
                let (a, b) = chunk.as_slices();
                assert_eq!(a.len() + b.len(), want);
                got.extend_from_slice(a);
                got.extend_from_slice(b);
                chunk.commit_all();
            }
            Take::Drain => {
                let want = chunk_len(step, available.min(700)).min(available);
                let chunk = rx.read_chunk(want).expect("items seen by slots()");
                let (a, b) = chunk.as_slices();
                let copy: Vec<u64> = a.iter().chain(b).copied().collect();
                let mut drain = chunk.drain();
                let m = chunk_len(step / 3, want) - 1;
                for (i, v) in drain.by_ref().take(m).enumerate() {
                    assert_eq!(v, copy[i]);
                }
                drop(drain); // drops (and releases) the rest
                got.extend(copy);
            }
            Take::GetPeek => {
                if step % 2 == 0 {
                    let v = *rx.peek().expect("items seen by slots()");
                    assert_eq!(rx.pop(), Ok(v));
                    got.push(v);
                } else {
                    let want = chunk_len(step, available.min(700)).min(available);
                    let chunk = rx.read_chunk(want).expect("items seen by slots()");
                    for i in 0..want {
                        got.push(*chunk.get(i).expect("index < len"));
                    }
                    assert_eq!(chunk.get(want), None);
                    chunk.commit_all();
                }
            }
            Take::WaitItems => {
                let want = chunk_len(step, max_wait_items(seen_fill.max(2)));
                match rx.wait_for_items(want, None, || false) {
                    WaitOutcome::Ready(k) => {
                        // Fewer than asked only once the producer is gone.
                        assert!(k >= want || rx.is_abandoned(), "Ready({k}) < {want}");
                        seen_fill = seen_fill.max(k);
                        got.extend(rx.read_chunk(k).expect("items seen by wait"));
                    }
                    WaitOutcome::Closed => break,
                    other => panic!("wait_for_items: {other:?}"),
                }
            }
        }
    }
    got
}

/// Fails with the first position where `got` differs from `0..n`, naming a
/// loss, a duplicate or a reordering.
fn check_sequence(got: &[u64], n: u64, what: &str) {
    for (i, &v) in got.iter().enumerate() {
        if v != i as u64 {
            let kind = if v < i as u64 {
                "duplicate or reordering"
            } else {
                "loss or reordering"
            };
            panic!(
                "{what}: {kind}: item #{i} is {v} (expected {i}); got {} items of {n}",
                got.len()
            );
        }
    }
    assert_eq!(got.len() as u64, n, "{what}: wrong number of items");
}

/// Runs a producer thread and a consumer thread over rings of every capacity.
fn transfer_all(puts: &[Put], takes: &[Take], put_strategy: Option<WaitStrategy>) {
    for capacity in capacities() {
        let n = items_for(capacity);
        let (mut tx, mut rx) = channel::<u64>(capacity);
        if let Some(strategy) = put_strategy {
            tx.set_wait_strategy(strategy);
            rx.set_wait_strategy(strategy);
        }
        let (puts_v, takes_v) = (puts.to_vec(), takes.to_vec());
        let producer = thread::spawn(move || produce(tx, n, &puts_v));
        let consumer = thread::spawn(move || consume(rx, n, &takes_v));
        let got = consumer.join().expect("consumer thread panicked");
        producer.join().expect("producer thread panicked");
        let what = format!("capacity {capacity}, {puts:?} -> {takes:?}");
        check_sequence(&got, n, &what);
    }
}

// ---------------------------------------------------------------------------
// FIFO, no loss, no duplicate, through each path

#[test]
fn fifo_push_pop_spinning() {
    transfer_all(&[Put::Push], &[Take::Pop], None);
}

#[test]
fn fifo_blocking() {
    transfer_all(&[Put::Blocking], &[Take::Blocking], None);
}

#[test]
fn fifo_blocking_sleep_at_once() {
    transfer_all(
        &[Put::Blocking],
        &[Take::Blocking],
        Some(WaitStrategy::SLEEP_AT_ONCE),
    );
}

#[test]
fn fifo_timeout() {
    transfer_all(&[Put::Timeout], &[Take::Timeout], None);
}

#[test]
fn fifo_timeout_sleep_at_once() {
    transfer_all(
        &[Put::Timeout],
        &[Take::Timeout],
        Some(WaitStrategy::SLEEP_AT_ONCE),
    );
}

#[test]
fn fifo_fill_from_iter_to_partial_into_iter() {
    transfer_all(&[Put::FillFromIter], &[Take::PartialIter], None);
}

#[test]
fn fifo_mut_slices_commit_to_slices_commit_all() {
    transfer_all(&[Put::Slices], &[Take::SlicesCommitAll], None);
}

#[test]
fn fifo_push_from_iter_to_drain() {
    transfer_all(&[Put::FromIter], &[Take::Drain], None);
}

#[test]
fn fifo_push_to_get_and_peek() {
    transfer_all(&[Put::Push], &[Take::GetPeek], None);
}

#[test]
fn fifo_wait_for_slots_to_wait_for_items_sleep_at_once() {
    transfer_all(
        &[Put::WaitSlots],
        &[Take::WaitItems],
        Some(WaitStrategy::SLEEP_AT_ONCE),
    );
}

#[test]
fn fifo_every_path_mixed() {
    transfer_all(&ALL_PUTS, &ALL_TAKES, None);
}

#[test]
fn fifo_every_path_mixed_sleep_at_once() {
    // Reversed so that different pairs of paths meet.
    let mut takes = ALL_TAKES;
    takes.reverse();
    transfer_all(&ALL_PUTS, &takes, Some(WaitStrategy::SLEEP_AT_ONCE));
}

// ---------------------------------------------------------------------------
// Capacity and wrap-around, single-threaded and deterministic

#[test]
fn exact_capacity() {
    for capacity in [1, 2, 3, 4, 5, 6, 7, 8, 4096] {
        let (mut tx, mut rx) = channel::<usize>(capacity);
        assert_eq!(tx.capacity(), capacity);
        assert_eq!(tx.slots(), capacity);
        assert_eq!(
            tx.write_chunk_uninit(capacity + 1).err(),
            Some(ChunkError {
                requested: capacity + 1,
                available: capacity
            })
        );
        for i in 0..capacity {
            assert_eq!(tx.push(i), Ok(()), "capacity {capacity}: push #{i}");
        }
        assert_eq!(tx.push(capacity), Err(PushError::Full(capacity)));
        assert_eq!(tx.slots(), 0);
        assert_eq!(
            tx.write_chunk_uninit(1).err(),
            Some(ChunkError {
                requested: 1,
                available: 0
            })
        );
        assert_eq!(rx.slots(), capacity);
        assert_eq!(rx.pop(), Ok(0));
        assert_eq!(tx.push(capacity), Ok(()));
        assert!(tx.push(0).is_err(), "capacity {capacity}: full again");
        for i in 1..=capacity {
            assert_eq!(rx.pop(), Ok(i));
        }
        assert_eq!(rx.pop(), Err(PopError::Empty));
        assert_eq!(
            rx.read_chunk(1).err(),
            Some(ChunkError {
                requested: 1,
                available: 0
            })
        );
    }
}

#[test]
fn exact_capacity_through_chunks() {
    for capacity in [3, 5, 6, 7] {
        let (mut tx, mut rx) = channel::<u32>(capacity);
        // Rotate the start through every slot of the (larger) storage.
        for round in 0..capacity.next_power_of_two() * 3 {
            let n = tx.write_chunk_uninit(capacity).unwrap().fill_from_iter(0..);
            assert_eq!(n, capacity);
            assert!(tx.write_chunk_uninit(1).is_err());
            assert_eq!(tx.push(9), Err(PushError::Full(9)));
            let all: Vec<u32> = rx.read_chunk(capacity).unwrap().into_iter().collect();
            assert_eq!(all, (0..capacity as u32).collect::<Vec<_>>());
            // Shift the start by one slot.
            tx.push(round as u32).unwrap();
            assert_eq!(rx.pop(), Ok(round as u32));
        }
    }
}

/// Moves a fresh ring's positions to `pos` by pushing and popping.
fn advance(tx: &mut Producer<u64>, rx: &mut Consumer<u64>, pos: usize) {
    for _ in 0..pos {
        tx.push(0).unwrap();
        rx.pop().unwrap();
    }
}

#[test]
fn chunks_straddle_the_end_of_storage() {
    for capacity in [2usize, 3, 4, 5, 6, 7, 8, 4096] {
        let storage = capacity.next_power_of_two();
        let (mut tx, mut rx) = channel::<u64>(capacity);
        // Start one slot before the end of storage.
        advance(&mut tx, &mut rx, storage - 1);
        let len = capacity.min(7);

        let mut chunk = tx.write_chunk_uninit(len).unwrap();
        let (a, b) = chunk.as_mut_slices();
        assert_eq!((a.len(), b.len()), (1, len - 1), "capacity {capacity}");
        for (i, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
            slot.write(100 + i as u64);
        }
        // SAFETY: all `len` slots were written above.
        unsafe { chunk.commit(len) };

        let chunk = rx.read_chunk(len).unwrap();
        let (a, b) = chunk.as_slices();
        assert_eq!((a.len(), b.len()), (1, len - 1), "capacity {capacity}");
        assert_eq!(a[0], 100);
        assert_eq!(b, (101..100 + len as u64).collect::<Vec<_>>().as_slice());
        for i in 0..len {
            assert_eq!(chunk.get(i), Some(&(100 + i as u64)));
        }
        chunk.commit_all();
        assert_eq!(rx.slots(), 0);

        // A chunk starting exactly at a multiple of storage does not straddle.
        advance(&mut tx, &mut rx, storage + 1 - len);
        let mut chunk = tx.write_chunk_uninit(len).unwrap();
        let (a, b) = chunk.as_mut_slices();
        assert_eq!((a.len(), b.len()), (len, 0));
        // Not committed: going out of scope publishes nothing.
        let _ = chunk;
        assert_eq!(rx.slots(), 0);

        // fill_from_iter and partial reads across the end.
        advance(&mut tx, &mut rx, storage - 1);
        assert_eq!(tx.write_chunk_uninit(len).unwrap().fill_from_iter(0..), len);
        let mut iter = rx.read_chunk(len).unwrap().into_iter();
        assert_eq!(iter.next(), Some(0));
        drop(iter);
        assert_eq!(rx.peek(), Some(&1));
        let rest: Vec<u64> = rx.read_chunk(len - 1).unwrap().into_iter().collect();
        assert_eq!(rest, (1..len as u64).collect::<Vec<_>>());
    }
}

#[test]
fn many_wraps_through_a_one_slot_ring() {
    let (mut tx, mut rx) = channel::<u64>(1);
    for i in 0..items_for(1) {
        assert_eq!(tx.push(i), Ok(()));
        assert_eq!(tx.push(i), Err(PushError::Full(i)));
        assert_eq!(rx.peek(), Some(&i));
        assert_eq!(rx.pop(), Ok(i));
        assert_eq!(rx.pop(), Err(PopError::Empty));
    }
}

#[test]
fn push_from_iter_keeps_the_rest_in_the_iterator() {
    let (mut tx, mut rx) = channel::<u32>(5);
    let mut iter = 0..12;
    assert_eq!(tx.push_from_iter(&mut iter), 5);
    assert_eq!(tx.push_from_iter(&mut iter), 0);
    assert_eq!(iter.next(), Some(5));
    rx.read_chunk(3).unwrap().commit_all();
    assert_eq!(tx.push_from_iter(&mut iter), 3);
    assert_eq!(iter.next(), Some(9));
    let all: Vec<u32> = std::iter::from_fn(|| rx.pop().ok()).collect();
    assert_eq!(all, [3, 4, 6, 7, 8]);
}

#[test]
fn fill_from_iter_with_a_short_iterator_publishes_only_what_it_wrote() {
    let (mut tx, mut rx) = channel::<u32>(8);
    let chunk = tx.write_chunk_uninit(6).unwrap();
    assert_eq!(chunk.fill_from_iter([1, 2]), 2);
    assert_eq!(rx.slots(), 2);
    assert_eq!(tx.write_chunk_uninit(0).unwrap().fill_from_iter([7]), 0);
    assert_eq!(tx.slots(), 6);
    let mut long = 10..;
    assert_eq!(
        tx.write_chunk_uninit(3).unwrap().fill_from_iter(&mut long),
        3
    );
    assert_eq!(long.next(), Some(13), "the chunk took only what it wrote");
    let all: Vec<u32> = std::iter::from_fn(|| rx.pop().ok()).collect();
    assert_eq!(all, [1, 2, 10, 11, 12]);
}

#[test]
fn commit_all_releases_the_slots() {
    let (mut tx, mut rx) = channel::<u32>(4);
    tx.push_from_iter(&mut (0..4));
    let chunk = rx.read_chunk(3).unwrap();
    chunk.commit_all();
    assert_eq!(rx.slots(), 1, "commit_all must release the chunk");
    assert_eq!(tx.slots(), 3);
    assert_eq!(rx.pop(), Ok(3));
}

#[test]
fn wait_for_items_clamps_to_capacity() {
    // Documented as "at least `n` items (at most `capacity`)", as for
    // `wait_for_slots`: on a full ring a request above the capacity is
    // satisfied, it does not wait for a producer that waits for space.
    let (mut tx, mut rx) = channel::<u32>(4);
    tx.push_from_iter(&mut (0..4));
    // The deadline only turns a would-be hang into a failure.
    let deadline = Some(Instant::now() + Duration::from_secs(2));
    assert_eq!(
        rx.wait_for_items(10, deadline, || false),
        WaitOutcome::Ready(4)
    );
    // And the producer's side, for symmetry.
    rx.read_chunk(4).unwrap().commit_all();
    assert_eq!(
        tx.wait_for_slots(10, deadline, || false),
        WaitOutcome::Ready(4)
    );
}

#[test]
fn handles_are_send_but_not_sync() {
    // A `&ReadChunk` shared between threads would hand out `&T` to several
    // threads at once, so the consumer must not be `Sync` for a `T` that is
    // `Send` but not `Sync` (e.g. `Cell`). Fails to compile if it is.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
    <Consumer<std::cell::Cell<u8>> as AmbiguousIfSync<_>>::check();
    <Producer<std::cell::Cell<u8>> as AmbiguousIfSync<_>>::check();

    fn is_send<T: Send>() {}
    is_send::<Producer<std::cell::Cell<u8>>>();
    is_send::<Consumer<std::cell::Cell<u8>>>();
    is_send::<RingWaker>();
}

#[test]
#[should_panic]
fn capacity_zero_panics() {
    let _ = channel::<u8>(0);
}

#[test]
#[should_panic]
fn capacity_beyond_addressable_storage_panics() {
    // Above 2^63, rounding up to a power of two overflows; in a release build
    // `next_power_of_two` wraps to 0 instead of panicking.
    let _ = channel::<u64>(usize::MAX / 2 + 2);
}

// ---------------------------------------------------------------------------
// Drop accounting

/// Counts how many times each item id was dropped.
#[derive(Debug)]
struct DropLog {
    counts: Vec<AtomicUsize>,
}

impl DropLog {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    fn dropped(&self, id: usize) -> usize {
        self.counts[id].load(Ordering::SeqCst)
    }

    fn assert_each_once(&self) {
        for (id, c) in self.counts.iter().enumerate() {
            assert_eq!(c.load(Ordering::SeqCst), 1, "item {id} drop count");
        }
    }

    fn total(&self) -> usize {
        self.counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

/// An item that records its drop, and may panic in it.
#[derive(Debug)]
struct Tracked {
    id: usize,
    log: Arc<DropLog>,
    panic_on_drop: bool,
}

impl Tracked {
    fn new(id: usize, log: &Arc<DropLog>) -> Self {
        Self {
            id,
            log: Arc::clone(log),
            panic_on_drop: false,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.log.counts[self.id].fetch_add(1, Ordering::SeqCst);
        if self.panic_on_drop {
            panic!("Tracked {} panics in drop", self.id);
        }
    }
}

#[test]
fn drops_popped_items_once() {
    let n = 50;
    let log = DropLog::new(n);
    let (mut tx, mut rx) = channel(4);
    let producer = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            for id in 0..n {
                tx.push_blocking(Tracked::new(id, &log)).unwrap();
            }
        })
    };
    for id in 0..n {
        let item = rx.pop_blocking().unwrap();
        assert_eq!(item.id, id);
        assert_eq!(log.dropped(id), 0);
        drop(item);
        assert_eq!(log.dropped(id), 1);
    }
    producer.join().unwrap();
    drop(rx);
    log.assert_each_once();
}

#[test]
fn drops_items_left_in_the_ring_once() {
    for capacity in [1, 3, 5, 8] {
        for consumer_first in [false, true] {
            let n = 2 * capacity + 3;
            let log = DropLog::new(n);
            let (mut tx, mut rx) = channel(capacity);
            let mut id = 0;
            // Wrap the positions first.
            while id < capacity + 3 {
                tx.push(Tracked::new(id, &log)).unwrap();
                drop(rx.pop().unwrap());
                id += 1;
            }
            while id < n {
                tx.push(Tracked::new(id, &log)).unwrap();
                id += 1;
            }
            let left = n - (capacity + 3);
            assert_eq!(log.total(), capacity + 3);
            // A rejected push hands the value back, to be dropped by us.
            let extra = DropLog::new(1);
            let back = tx.push(Tracked::new(0, &extra)).unwrap_err().into_inner();
            assert_eq!(extra.total(), 0);
            drop(back);
            extra.assert_each_once();
            if consumer_first {
                drop(rx);
                assert_eq!(log.total(), capacity + 3, "dropped before the last end");
                drop(tx);
            } else {
                drop(tx);
                assert_eq!(log.total(), capacity + 3, "dropped before the last end");
                drop(rx);
            }
            assert_eq!(log.total(), capacity + 3 + left);
            log.assert_each_once();
        }
    }
}

#[test]
fn drops_items_left_on_another_thread() {
    let n = 7;
    let log = DropLog::new(n);
    let (mut tx, rx) = channel(8);
    for id in 0..n {
        tx.push(Tracked::new(id, &log)).unwrap();
    }
    thread::spawn(move || drop(rx)).join().unwrap();
    assert_eq!(log.total(), 0);
    thread::spawn(move || drop(tx)).join().unwrap();
    log.assert_each_once();
}

#[test]
fn partially_consumed_into_iter_keeps_the_rest() {
    let n = 6;
    let log = DropLog::new(n);
    let (mut tx, mut rx) = channel(8);
    for id in 0..n {
        tx.push(Tracked::new(id, &log)).unwrap();
    }
    let mut iter = rx.read_chunk(5).unwrap().into_iter();
    assert_eq!(iter.next().map(|t| t.id), Some(0));
    assert_eq!(iter.next().map(|t| t.id), Some(1));
    drop(iter);
    assert_eq!(log.total(), 2);
    assert_eq!(rx.slots(), 4, "untaken items stay in the ring");
    assert_eq!(rx.peek().map(|t| t.id), Some(2));
    // An un-iterated chunk releases nothing either.
    let _ = rx.read_chunk(3).unwrap();
    assert_eq!(rx.slots(), 4);
    drop(tx);
    drop(rx);
    log.assert_each_once();
}

#[test]
fn drain_drops_the_rest() {
    let n = 8;
    let log = DropLog::new(n);
    let (mut tx, mut rx) = channel(8);
    for id in 0..n {
        tx.push(Tracked::new(id, &log)).unwrap();
    }
    let mut drain = rx.read_chunk(6).unwrap().drain();
    assert_eq!(drain.len(), 6);
    assert_eq!(drain.next().map(|t| t.id), Some(0));
    drop(drain);
    assert_eq!(log.total(), 6, "drain dropped the untaken items");
    assert_eq!(rx.slots(), 2);
    assert_eq!(tx.slots(), 6, "and released their slots");
    assert_eq!(rx.peek().map(|t| t.id), Some(6));
    drop(rx);
    drop(tx);
    log.assert_each_once();
}

#[test]
fn commit_all_drops_the_chunk() {
    let n = 5;
    let log = DropLog::new(n);
    let (mut tx, mut rx) = channel(8);
    for id in 0..n {
        tx.push(Tracked::new(id, &log)).unwrap();
    }
    rx.read_chunk(3).unwrap().commit_all();
    assert_eq!(log.total(), 3);
    assert_eq!(rx.slots(), 2);
    drop((tx, rx));
    log.assert_each_once();
}

#[test]
fn panicking_drop_inside_drain_does_not_double_drop() {
    let n = 6;
    let log = DropLog::new(n);
    let (mut tx, mut rx) = channel(8);
    for id in 0..n {
        let mut item = Tracked::new(id, &log);
        item.panic_on_drop = id == 2;
        tx.push(item).unwrap();
    }
    let drain = rx.read_chunk(5).unwrap().drain();
    let result = panic::catch_unwind(AssertUnwindSafe(|| drop(drain)));
    assert!(result.is_err(), "the drop of item 2 panics");
    // Items 0, 1 and (the panicking) 2 were dropped and released; 3 and 4
    // were not reached and are still in the ring with 5.
    assert_eq!(
        (0..n).map(|id| log.dropped(id)).collect::<Vec<_>>(),
        [1, 1, 1, 0, 0, 0]
    );
    assert_eq!(rx.slots(), 3);
    assert_eq!(rx.peek().map(|t| t.id), Some(3));
    // The ring still works.
    assert_eq!(rx.pop().map(|t| t.id).ok(), Some(3));
    drop(tx);
    drop(rx);
    log.assert_each_once();
}

#[test]
fn every_item_dropped_once_across_threads() {
    let n = items_for(8) as usize;
    let log = DropLog::new(n);
    let (mut tx, mut rx) = channel(7);
    let producer = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            let mut iter = (0..n).map(|id| Tracked::new(id, &log));
            let mut pending = iter.next();
            while let Some(item) = pending.take() {
                match tx.push(item) {
                    Ok(()) => {
                        // Alternate single pushes with chunk fills.
                        tx.push_from_iter(&mut iter.by_ref().take(3));
                        pending = iter.next();
                    }
                    Err(PushError::Full(item)) if tx.is_abandoned() => {
                        // The consumer stopped early: drop what is left
                        // here (creating the rest so that every id exists).
                        drop(item);
                        iter.by_ref().for_each(drop);
                    }
                    Err(PushError::Full(item)) => {
                        pending = Some(item);
                        thread::yield_now();
                    }
                    Err(PushError::Abandoned(_)) => unreachable!("push never says Abandoned"),
                }
            }
        })
    };
    let mut next = 0;
    let mut step = 0;
    // Stop early and leave items in the ring, to be dropped with it.
    while next < n - 10 {
        step += 1;
        let available = rx.slots();
        if available == 0 {
            thread::yield_now();
            continue;
        }
        let k = available.min(n - 10 - next);
        let chunk = rx.read_chunk(k).unwrap();
        if step % 2 == 0 {
            for item in chunk.drain() {
                assert_eq!(item.id, next);
                next += 1;
            }
        } else {
            assert_eq!(chunk.get(0).map(|t| t.id), Some(next));
            chunk.commit_all();
            next += k;
        }
    }
    drop(rx);
    producer.join().unwrap();
    log.assert_each_once();
}

// ---------------------------------------------------------------------------
// Abandoned ends

#[test]
fn is_abandoned_both_ways() {
    let (tx, rx) = channel::<u8>(2);
    assert!(!tx.is_abandoned());
    assert!(!rx.is_abandoned());
    drop(rx);
    assert!(tx.is_abandoned());

    let (tx, rx) = channel::<u8>(2);
    drop(tx);
    assert!(rx.is_abandoned());
}

#[test]
fn pop_blocking_is_closed_only_after_the_remaining_items() {
    for strategy in [WaitStrategy::default(), WaitStrategy::SLEEP_AT_ONCE] {
        let (mut tx, mut rx) = channel::<u32>(4);
        rx.set_wait_strategy(strategy);
        tx.push_from_iter(&mut (0..3));
        drop(tx);
        assert!(rx.is_abandoned());
        assert_eq!(rx.pop_blocking(), Ok(0));
        assert_eq!(rx.pop_timeout(Duration::from_secs(60)), Ok(1));
        assert_eq!(rx.wait_for_items(4, None, || false), WaitOutcome::Ready(1));
        assert_eq!(rx.pop_blocking(), Ok(2));
        assert_eq!(rx.pop_blocking(), Err(PopError::Closed));
        assert_eq!(rx.pop_blocking(), Err(PopError::Closed));
        assert_eq!(
            rx.pop_timeout(Duration::from_secs(60)),
            Err(PopError::Closed)
        );
        assert_eq!(rx.pop(), Err(PopError::Empty));
        assert_eq!(rx.wait_for_items(1, None, || false), WaitOutcome::Closed);
    }
}

#[test]
fn pop_blocking_across_threads_reads_everything_then_closed() {
    for _ in 0..race_rounds() / 10 + 1 {
        let (mut tx, mut rx) = channel::<u32>(3);
        rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        let consumer = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match rx.pop_blocking() {
                    Ok(v) => got.push(v),
                    Err(e) => return (got, e),
                }
            }
        });
        for i in 0..20 {
            tx.push_blocking(i).unwrap();
        }
        drop(tx);
        let (got, end) = consumer.join().unwrap();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(end, PopError::Closed);
    }
}

#[test]
fn push_blocking_to_an_abandoned_full_ring_hands_the_value_back() {
    let (mut tx, rx) = channel::<String>(2);
    tx.push("a".into()).unwrap();
    tx.push("b".into()).unwrap();
    drop(rx);
    assert!(tx.is_abandoned());
    match tx.push_blocking("c".into()) {
        Err(PushError::Abandoned(v)) => assert_eq!(v, "c"),
        other => panic!("expected Abandoned(\"c\"), got {other:?}"),
    }
    match tx.push_timeout("d".into(), Duration::from_secs(60)) {
        Err(PushError::Abandoned(v)) => assert_eq!(v, "d"),
        other => panic!("expected Abandoned(\"d\"), got {other:?}"),
    }
    assert_eq!(tx.wait_for_slots(1, None, || false), WaitOutcome::Closed);
}

#[test]
fn parked_producer_is_woken_when_the_consumer_drops() {
    for round in 0..race_rounds() {
        let (mut tx, rx) = channel::<u64>(2);
        tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        let producer = thread::spawn(move || tx.push_blocking(99));
        if round == 0 {
            let_other_side_park();
        }
        drop(rx);
        match producer.join().unwrap() {
            Err(PushError::Abandoned(v)) => assert_eq!(v, 99),
            other => panic!("round {round}: expected Abandoned(99), got {other:?}"),
        }
    }
}

#[test]
fn parked_consumer_is_woken_when_the_producer_drops() {
    for round in 0..race_rounds() {
        let (tx, mut rx) = channel::<u64>(2);
        rx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        let consumer = thread::spawn(move || rx.pop_blocking());
        if round == 0 {
            let_other_side_park();
        }
        drop(tx);
        assert_eq!(
            consumer.join().unwrap(),
            Err(PopError::Closed),
            "round {round}"
        );
    }
}

#[test]
fn parked_producer_is_woken_by_space() {
    for round in 0..race_rounds() {
        let (mut tx, mut rx) = channel::<u64>(1);
        tx.set_wait_strategy(WaitStrategy::SLEEP_AT_ONCE);
        tx.push(1).unwrap();
        let producer = thread::spawn(move || {
            tx.push_blocking(2).unwrap();
            tx
        });
        if round == 0 {
            let_other_side_park();
        }
        assert_eq!(rx.pop(), Ok(1));
        let _tx = producer.join().unwrap();
        assert_eq!(rx.pop(), Ok(2));
    }
}

// ---------------------------------------------------------------------------
// Timeouts

#[test]
fn timeouts_expire_and_hand_the_value_back() {
    let timeout = Duration::from_millis(30);
    let (mut tx, mut rx) = channel::<u32>(1);
    for strategy in [WaitStrategy::default(), WaitStrategy::SLEEP_AT_ONCE] {
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let start = Instant::now();
        assert_eq!(rx.pop_timeout(timeout), Err(PopError::Empty));
        assert!(start.elapsed() >= timeout, "pop_timeout returned early");

        tx.push(1).unwrap();
        let start = Instant::now();
        assert_eq!(tx.push_timeout(2, timeout), Err(PushError::Full(2)));
        assert!(start.elapsed() >= timeout, "push_timeout returned early");
        assert_eq!(
            tx.wait_for_slots(1, Some(Instant::now() + timeout), || false),
            WaitOutcome::TimedOut
        );
        assert_eq!(rx.pop_timeout(timeout), Ok(1));
        assert_eq!(
            rx.wait_for_items(1, Some(Instant::now()), || false),
            WaitOutcome::TimedOut
        );
    }
}

// ---------------------------------------------------------------------------
// Interrupts through RingWaker

#[test]
fn wait_for_items_is_interrupted_by_a_waker() {
    for strategy in [WaitStrategy::SLEEP_AT_ONCE, WaitStrategy::default()] {
        for round in 0..race_rounds() {
            let (mut tx, mut rx) = channel::<u64>(4);
            rx.set_wait_strategy(strategy);
            let stop = Arc::new(AtomicBool::new(false));
            // The waker comes from the other end and wakes from a third thread.
            let waker = tx.waker();
            let consumer = {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let outcome = rx.wait_for_items(1, None, || stop.load(Ordering::Acquire));
                    (outcome, rx)
                })
            };
            if round == 0 {
                let_other_side_park();
            }
            let interrupter = thread::spawn(move || {
                stop.store(true, Ordering::Release);
                waker.wake();
            });
            interrupter.join().unwrap();
            let (outcome, mut rx) = consumer.join().unwrap();
            assert_eq!(outcome, WaitOutcome::Interrupted, "round {round}");
            // The ring is untouched.
            tx.push(7).unwrap();
            assert_eq!(rx.pop(), Ok(7));
        }
    }
}

#[test]
fn wait_for_slots_is_interrupted_by_a_waker() {
    for strategy in [WaitStrategy::SLEEP_AT_ONCE, WaitStrategy::default()] {
        for round in 0..race_rounds() {
            let (mut tx, mut rx) = channel::<u64>(2);
            tx.set_wait_strategy(strategy);
            tx.push(1).unwrap();
            tx.push(2).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let waker = rx.waker();
            let producer = {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let outcome = tx.wait_for_slots(1, None, || stop.load(Ordering::Acquire));
                    (outcome, tx)
                })
            };
            if round == 0 {
                let_other_side_park();
            }
            stop.store(true, Ordering::Release);
            waker.clone().wake();
            let (outcome, mut tx) = producer.join().unwrap();
            assert_eq!(outcome, WaitOutcome::Interrupted, "round {round}");
            assert_eq!(rx.pop(), Ok(1));
            tx.push(3).unwrap();
            assert_eq!(rx.pop(), Ok(2));
            assert_eq!(rx.pop(), Ok(3));
        }
    }
}

#[test]
fn wake_without_a_sleeper_is_harmless() {
    let (mut tx, mut rx) = channel::<u8>(2);
    let waker = tx.waker();
    waker.wake();
    waker.wake();
    tx.push(1).unwrap();
    waker.wake();
    assert_eq!(rx.pop(), Ok(1));
    drop(rx);
    waker.wake(); // outlives an end
    drop(tx);
    waker.wake(); // and both
}

#[test]
fn errors_display_and_debug() {
    assert_eq!(PushError::Full(1).to_string(), "ring is full");
    assert_eq!(format!("{:?}", PushError::Abandoned(1)), "Abandoned(..)");
    assert_eq!(
        PopError::Closed.to_string(),
        "ring is empty and its producer is gone"
    );
    let e = ChunkError {
        requested: 5,
        available: 2,
    };
    assert_eq!(e.to_string(), "chunk of 5 slots requested, 2 available");
}

#[test]
fn fold_walks_both_runs_and_releases_what_it_took_on_a_panic() {
    let (mut tx, mut rx) = channel::<String>(8);
    // Move the positions on so that the next chunk wraps the storage.
    for i in 0..6 {
        tx.push(i.to_string()).unwrap();
        rx.pop().unwrap();
    }
    for i in 0..8 {
        tx.push(format!("s{i}")).unwrap();
    }
    let chunk = rx.read_chunk(5).unwrap();
    let (a, b) = chunk.as_slices();
    assert_eq!((a.len(), b.len()), (2, 3), "the chunk wraps");
    let joined = chunk.into_iter().fold(String::new(), |acc, s| acc + &s);
    assert_eq!(joined, "s0s1s2s3s4");
    // A panic on the second item: two were taken (the second dropped while
    // unwinding), the third stays in the ring.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        rx.read_chunk(3).unwrap().into_iter().fold(0, |n, s| {
            assert!(n < 1, "boom at {s}");
            n + 1
        })
    }));
    assert!(result.is_err());
    assert_eq!(rx.pop().unwrap(), "s7");
    assert_eq!(rx.pop(), Err(PopError::Empty));
}

// ---------------------------------------------------------------------------
// Ergonomics next to rtrb's: `for` over a chunk, `Debug`, `&self` queries

#[test]
fn a_read_chunk_iterates_with_for_and_is_fused() {
    let (mut tx, mut rx) = channel::<u64>(8);
    for x in 0..5 {
        tx.push(x).unwrap();
    }
    let chunk = rx.read_chunk(3).unwrap();
    assert_eq!(format!("{chunk:?}"), "ReadChunk { len: 3, .. }");
    let mut got = Vec::new();
    for x in chunk {
        got.push(x);
    }
    assert_eq!(got, [0, 1, 2]);
    // Taken items are released, the rest stay for the next read.
    assert_eq!(rx.slots(), 2);
    let mut iter = rx.read_chunk(2).unwrap().into_iter();
    assert!(format!("{iter:?}").starts_with("ReadChunkIntoIter { len: 2, taken: 0"));
    assert_eq!(
        (iter.next(), iter.next(), iter.next(), iter.next()),
        (Some(3), Some(4), None, None)
    );
}

#[test]
fn slots_and_peek_take_shared_references() {
    let (mut tx, mut rx) = channel::<String>(4);
    tx.push("a".into()).unwrap();
    let (tx_ref, rx_ref) = (&tx, &rx);
    assert_eq!(tx_ref.slots(), 3);
    assert_eq!(rx_ref.slots(), 1);
    // Two shared borrows at once: peek does not need `&mut`.
    let (first, again) = (rx_ref.peek(), rx_ref.peek());
    assert_eq!(
        (first.map(String::as_str), again.map(String::as_str)),
        (Some("a"), Some("a"))
    );
    assert_eq!(rx.pop().unwrap(), "a");
    assert_eq!(rx.peek(), None);
    // The producer's view through `&self` refreshes after the release.
    assert_eq!(tx.slots(), 4);
}
