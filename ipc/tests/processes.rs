//! Record rings between real processes: a parent and the workers it forks.
//!
//! Every child here only runs ring operations, arithmetic and the allocator
//! (see `Worker::spawn`'s safety contract), and every `Worker` is dropped —
//! killed and reaped — even when an assertion fails, so a failing test
//! leaves no process behind. Blocking waits on a child always pass an
//! interrupt that checks whether the child still lives.

// Processes, memfds and futexes do not exist under the loom model checker.
#![cfg(not(ringweave_loom))]

use nix::sys::signal::{kill, Signal};
use nix::unistd::getpid;
use ringweave_ipc::futex;
use ringweave_ipc::record::RecordError;
use ringweave_ipc::record_ring::{PopError, PushError, RecordRing, WaitOutcome};
use ringweave_ipc::segment::{Segment, SegmentLayout};
use ringweave_ipc::worker::{Worker, WorkerExit};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// A segment named `name` with one ring per capacity.
fn rings(name: &str, capacities: &[usize]) -> Vec<RecordRing> {
    let mut layout = SegmentLayout::new();
    let offsets: Vec<usize> = capacities
        .iter()
        .map(|&c| layout.reserve(RecordRing::layout(c).unwrap()).unwrap())
        .collect();
    let segment = Arc::new(Segment::create(name, layout.size()).unwrap());
    offsets
        .iter()
        .zip(capacities)
        .map(|(&offset, &capacity)| RecordRing::new(&segment, offset, capacity).unwrap())
        .collect()
}

/// An interrupt for a blocking ring operation: true once `worker` has ended
/// (or cannot be waited for).
fn ended(worker: &mut Worker) -> impl FnMut() -> bool + '_ {
    move || !matches!(worker.try_status(), Ok(None))
}

/// Sets the flag when dropped, also while unwinding from a failed assertion,
/// so that helper threads blocked on a ring give up before the scope joins
/// them.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// splitmix64: deterministic, dependency-free pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child of the round-trip tests: reads records from `rx`, maps them
/// with `f`, writes them to `tx`, until `rx` is closed. Exit code 0 on
/// success, 2 and up on a ring error.
fn echo<A, B>(
    mut rx: ringweave_ipc::record_ring::RecordConsumer<A>,
    mut tx: ringweave_ipc::record_ring::RecordProducer<B>,
    f: impl Fn(A) -> B,
) -> i32
where
    A: ringweave_ipc::Record,
    B: ringweave_ipc::Record,
{
    let mut batch = Vec::new();
    loop {
        batch.clear();
        match rx.pop_batch(1024, &mut batch) {
            Ok(_) => {
                for a in batch.drain(..) {
                    if tx.push_blocking(&f(a)).is_err() {
                        return 2;
                    }
                }
                tx.flush();
            }
            // The parent's death kills us (PDEATHSIG), so no interrupt.
            Err(PopError::Empty) => {
                rx.wait_for_records(None, || false);
            }
            Err(PopError::Closed) => return 0, // `tx` closes as it drops
            Err(_) => return 3,
        }
    }
}

#[test]
fn a_million_u64_round_trip_through_a_child() {
    // The full million in every build: about 2 s in a debug build on two
    // cores, well under half a second in release.
    let n: u64 = 1_000_000;
    let rings = rings("ringweave-test-roundtrip", &[1 << 16, 1 << 16]);
    let (down, up) = (&rings[0], &rings[1]);
    // SAFETY: one producer and one consumer per ring; the child's pair is
    // moved into its closure, the parent's is dropped before `rings`.
    let (mut tx, mut rx) = unsafe { (down.producer::<u64>(), up.consumer::<u64>()) };
    // SAFETY: as above.
    let (child_rx, child_tx) = unsafe { (down.consumer::<u64>(), up.producer::<u64>()) };

    // Written before the fork: the child inherits them.
    let early = 100;
    for i in 0..early {
        tx.push(&i).unwrap();
    }
    tx.flush();

    // SAFETY: the child runs ring operations and arithmetic only.
    let mut worker =
        unsafe { Worker::spawn("doubler", move || echo(child_rx, child_tx, |x| x * 2)) }.unwrap();

    let stop = AtomicBool::new(false);
    let mut next = 0u64;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let stop = &stop;
        s.spawn(move || {
            for i in early..n {
                match tx.push_until(&i, None, || stop.load(Ordering::Acquire)) {
                    Ok(()) => {}
                    Err(PushError::Interrupted) => return,
                    Err(e) => panic!("push {i}: {e}"),
                }
                if i % 256 == 0 {
                    tx.flush();
                }
            }
            // Dropping `tx` flushes and closes: the child's loop ends.
        });
        let mut batch = Vec::new();
        loop {
            batch.clear();
            match rx.pop_batch(4096, &mut batch) {
                Ok(_) => {
                    for &x in &batch {
                        assert_eq!(x, next * 2, "record {next} out of order");
                        next += 1;
                    }
                }
                Err(PopError::Empty) => {
                    let outcome = rx.wait_for_records(None, ended(&mut worker));
                    assert_ne!(
                        outcome,
                        WaitOutcome::Interrupted,
                        "worker ended early: {:?}",
                        worker.exit()
                    );
                }
                Err(PopError::Closed) => break,
                Err(e) => panic!("pop after {next}: {e}"),
            }
        }
    });
    assert_eq!(next, n);
    assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(0));
}

/// A record of mixed size: a number, a string and bytes of random lengths.
type Mixed = (u64, String, Vec<u8>);

fn mixed(rng: &mut Rng, i: u64) -> Mixed {
    let text_len = rng.below(5000) as usize;
    let bytes_len = rng.below(5000) as usize;
    let text: String = (0..text_len)
        .map(|j| char::from(b'a' + ((i as usize + j) % 26) as u8))
        .collect();
    let bytes = (0..bytes_len).map(|j| (i as usize ^ j) as u8).collect();
    (i, text, bytes)
}

#[test]
fn mixed_sizes_wrap_around_many_times() {
    let n: u64 = if cfg!(debug_assertions) {
        3_000
    } else {
        20_000
    };
    // 16 KiB arenas: a record averages 5 KB, so every third record or so
    // lands on the wrap-around, and many need padding.
    let rings = rings("ringweave-test-mixed", &[1 << 14, 1 << 14]);
    let (down, up) = (&rings[0], &rings[1]);
    // SAFETY: as in the round-trip test.
    let (mut tx, mut rx) = unsafe { (down.producer::<Mixed>(), up.consumer::<Mixed>()) };
    // SAFETY: as above.
    let (child_rx, child_tx) = unsafe { (down.consumer::<Mixed>(), up.producer::<Mixed>()) };
    // SAFETY: the child runs ring operations and the allocator only.
    let mut worker = unsafe {
        Worker::spawn("reverser", move || {
            echo(child_rx, child_tx, |(i, s, mut b): Mixed| {
                b.reverse();
                (i, s, b)
            })
        })
    }
    .unwrap();

    let stop = AtomicBool::new(false);
    let mut next = 0u64;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let stop = &stop;
        s.spawn(move || {
            let mut rng = Rng(7);
            for i in 0..n {
                let record = mixed(&mut rng, i);
                match tx.push_until(&record, None, || stop.load(Ordering::Acquire)) {
                    Ok(()) => {}
                    Err(PushError::Interrupted) => return,
                    Err(e) => panic!("push {i}: {e}"),
                }
                tx.flush();
            }
        });
        let mut rng = Rng(7);
        loop {
            match rx.pop_until(None, ended(&mut worker)) {
                Ok(got) => {
                    let (i, s, mut b) = mixed(&mut rng, next);
                    b.reverse();
                    assert_eq!(got.0, i, "record {next} out of order");
                    assert_eq!(got.1, s, "record {next}: string");
                    assert_eq!(got.2, b, "record {next}: bytes");
                    next += 1;
                }
                Err(PopError::Closed) => break,
                Err(e) => panic!("pop after {next}: {e} (worker: {:?})", worker.exit()),
            }
        }
    });
    assert_eq!(next, n);
    let (read, _) = up.positions();
    assert!(
        read > 100 * (1 << 14),
        "expected many wrap-arounds, read position {read}"
    );
    assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(0));
}

#[test]
fn a_producer_killed_mid_stream_is_detected() {
    let rings = rings("ringweave-test-killed-producer", &[1 << 12]);
    let ring = &rings[0];
    // SAFETY: one end each, the producer moved into the child.
    let (child_tx, mut rx) = unsafe { (ring.producer::<u64>(), ring.consumer::<u64>()) };
    // SAFETY: ring operations and `kill` (a syscall) only.
    let mut worker = unsafe {
        Worker::spawn("dies-writing", move || {
            let mut tx = child_tx;
            for i in 0..500u64 {
                if tx.push_blocking(&i).is_err() {
                    return 2;
                }
                tx.flush();
            }
            // Killed mid-stream: the ring is never closed.
            let _ = kill(getpid(), Signal::SIGKILL);
            3
        })
    }
    .unwrap();
    let mut received = 0u64;
    let end = loop {
        match rx.pop_until(None, ended(&mut worker)) {
            Ok(x) => {
                assert_eq!(x, received);
                received += 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        end,
        PopError::Interrupted,
        "a killed producer closes nothing"
    );
    assert_eq!(received, 500, "every published record is still read");
    assert!(!ring.is_producer_closed());
    assert_eq!(
        worker.try_status().unwrap(),
        Some(WorkerExit::Signaled(Signal::SIGKILL))
    );
}

#[test]
fn a_consumer_killed_mid_stream_is_detected() {
    let rings = rings("ringweave-test-killed-consumer", &[1 << 12]);
    let ring = &rings[0];
    // SAFETY: one end each, the consumer moved into the child.
    let (mut tx, child_rx) = unsafe { (ring.producer::<u64>(), ring.consumer::<u64>()) };
    // SAFETY: ring operations and `kill` only.
    let mut worker = unsafe {
        Worker::spawn("dies-reading", move || {
            let mut rx = child_rx;
            for _ in 0..500 {
                if rx.pop_blocking().is_err() {
                    return 2;
                }
            }
            let _ = kill(getpid(), Signal::SIGKILL);
            3
        })
    }
    .unwrap();
    let mut sent = 0u64;
    let end = loop {
        match tx.push_until(&sent, None, ended(&mut worker)) {
            Ok(()) => {
                tx.flush();
                sent += 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(end, PushError::Interrupted);
    assert!(sent >= 500, "the child read 500 before dying, {sent} sent");
    assert_eq!(
        worker.try_status().unwrap(),
        Some(WorkerExit::Signaled(Signal::SIGKILL))
    );
}

#[test]
fn corrupted_records_from_a_child_are_rejected_not_crashed_on() {
    let rings = rings("ringweave-test-corrupt", &[1 << 16]);
    let ring = &rings[0];
    let count = 200u64;
    // SAFETY: one end each, the producer moved into the child.
    let (child_tx, mut rx) = unsafe { (ring.producer::<Mixed>(), ring.consumer::<Mixed>()) };
    // SAFETY: ring operations and the allocator only.
    let worker = unsafe {
        Worker::spawn("writer", move || {
            let mut tx = child_tx;
            let mut rng = Rng(11);
            for i in 0..count {
                let (i, s, b) = mixed(&mut rng, i);
                let small = (
                    i,
                    s[..s.len().min(100)].to_owned(),
                    b[..b.len().min(100)].to_vec(),
                );
                // Non-blocking: the parent reads only after we exit, so a
                // full ring must fail the test, not hang it.
                if tx.push(&small).is_err() {
                    return 2;
                }
            }
            0 // `tx` flushes and closes as it drops
        })
    }
    .unwrap();
    assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(0));

    // The child is gone; its records stay. Flip bytes all over them.
    let (read, write) = ring.positions();
    let arena = ring
        .segment()
        .region(RecordRing::ARENA_OFFSET, ring.capacity())
        .unwrap()
        .as_ptr();
    let mut rng = Rng(99);
    for _ in 0..40 {
        let at = read + rng.below(write - read);
        let offset = (at % ring.capacity() as u64) as usize;
        // SAFETY: in the arena, and no other process maps it any more.
        unsafe { *arena.add(offset) ^= 1 << rng.below(8) };
    }

    // Every record is either read intact, reported invalid and skipped, or
    // stops the reader at a damaged frame; nothing panics.
    let (mut ok, mut invalid, mut frame) = (0, 0, 0);
    loop {
        match rx.pop() {
            Ok(_) => ok += 1,
            Err(PopError::Record(RecordError::Frame { .. })) => {
                frame += 1;
                break;
            }
            Err(PopError::Record(e @ RecordError::Invalid { .. }))
            | Err(PopError::Record(e @ RecordError::Deserialize { .. })) => {
                assert!(!e.to_string().is_empty());
                invalid += 1;
                if rx.skip().is_err() {
                    break;
                }
            }
            Err(PopError::Closed) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        invalid + frame > 0,
        "40 flipped bits went unnoticed ({ok} ok)"
    );
    assert!(ok + invalid + frame <= count as usize + 1);
}

#[test]
fn oversize_records_carry_both_sizes() {
    let rings = rings("ringweave-test-oversize", &[1 << 10]);
    let ring = &rings[0];
    // SAFETY: one end each, on this thread.
    let (mut tx, mut rx) = unsafe { (ring.producer::<Vec<u8>>(), ring.consumer::<Vec<u8>>()) };
    let err = tx.push(&vec![0u8; 5000]).unwrap_err();
    match &err {
        PushError::Record(RecordError::TooLarge { record, capacity }) => {
            assert!(*record >= 5000);
            assert_eq!(*capacity, (1 << 10) - 16);
            let message = err.to_string();
            assert!(message.contains(&record.to_string()), "{message}");
            assert!(message.contains(&capacity.to_string()), "{message}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    tx.flush();
    assert_eq!(ring.positions(), (0, 0), "nothing was published");
    assert_eq!(rx.pop(), Err(PopError::Empty));
}

#[test]
fn segments_never_appear_in_dev_shm() {
    let name = format!("ringweave-test-shm-{}", std::process::id());
    let in_dev_shm = |name: &str| {
        std::fs::read_dir("/dev/shm")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().contains(name))
            })
            .unwrap_or(false)
    };
    let in_maps = |name: &str| {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!("/memfd:{name}")))
    };
    {
        let rings = rings(&name, &[1 << 12]);
        assert!(in_maps(&name), "the segment is an anonymous memfd mapping");
        assert!(!in_dev_shm(&name));
        // SAFETY: the producer end moves into the child.
        let child_tx = unsafe { rings[0].producer::<u64>() };
        // SAFETY: ring operations only.
        let worker = unsafe {
            Worker::spawn("shm", move || {
                let mut tx = child_tx;
                i32::from(tx.push_blocking(&1).is_err())
            })
        }
        .unwrap();
        assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(0));
        assert!(!in_dev_shm(&name));
    }
    assert!(!in_maps(&name), "dropping the segment unmaps it");
    assert!(!in_dev_shm(&name));
}

#[test]
fn a_paused_consumer_is_peeked_then_replaced() {
    // The pipeline coordinator's rollback: a worker holds the consumer end
    // and pauses at a barrier; the parent reads what it has not consumed
    // without consuming it, then takes the end back.
    let mut layout = SegmentLayout::new();
    let ring_at = layout
        .reserve(RecordRing::layout(1 << 14).unwrap())
        .unwrap();
    let words_at = layout
        .reserve(std::alloc::Layout::new::<[u32; 2]>())
        .unwrap();
    let segment = Arc::new(Segment::create("ringweave-test-pause", layout.size()).unwrap());
    let ring = RecordRing::new(&segment, ring_at, 1 << 14).unwrap();
    let words = segment
        .region(words_at, 8)
        .unwrap()
        .cast::<AtomicU32>()
        .as_ptr();
    // SAFETY: two zeroed, aligned u32s in the segment, which outlives their
    // use here and is inherited by the child.
    let (paused, release) = unsafe { (&*words, &*words.add(1)) };

    // SAFETY: one end each; the consumer moves into the child.
    let (mut tx, child_rx) = unsafe { (ring.producer::<String>(), ring.consumer::<String>()) };
    for i in 0..100 {
        tx.push(&format!("record {i}")).unwrap();
    }
    tx.flush();

    let segment_ref = &*segment;
    // SAFETY: ring operations, atomics and futexes only.
    let mut worker = unsafe {
        Worker::spawn("pausing", move || {
            if segment_ref.check().is_err() {
                return 4;
            }
            let mut rx = child_rx;
            for i in 0..30 {
                match rx.pop_blocking() {
                    Ok(s) if s == format!("record {i}") => {}
                    _ => return 2,
                }
            }
            // Acknowledge the barrier: Release, so the parent's Acquire sees
            // our last release of ring bytes.
            paused.store(1, Ordering::Release);
            let _ = futex::wake(paused, 1);
            while release.load(Ordering::Acquire) == 0 {
                let _ = futex::wait(release, 0, None);
            }
            // Resumed (the parent does not, in this test).
            3
        })
    }
    .unwrap();

    while paused.load(Ordering::Acquire) == 0 {
        assert_eq!(worker.try_status().unwrap(), None, "worker died");
        let _ = futex::wait(paused, 0, Some(std::time::Duration::from_millis(50)));
    }
    // SAFETY: the consumer is paused and acknowledged it with Release, read
    // above with Acquire; the producer (ours) has flushed.
    let unread: Vec<String> = unsafe { ring.peek_unread::<String>() }
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        unread,
        (30..100).map(|i| format!("record {i}")).collect::<Vec<_>>()
    );
    // SAFETY: as above; peeking twice sees the same.
    assert_eq!(unsafe { ring.peek_unread::<String>() }.count(), 70);

    // Roll back: the worker goes, the parent takes the consumer end back.
    worker.kill().unwrap();
    assert_eq!(
        worker.wait().unwrap(),
        WorkerExit::Signaled(Signal::SIGKILL)
    );
    assert!(!ring.is_consumer_closed(), "a killed worker closes nothing");
    // SAFETY: the previous consumer's process is reaped.
    let mut rx = unsafe { ring.consumer::<String>() };
    let rest: Vec<String> = std::iter::from_fn(|| rx.pop().ok()).collect();
    assert_eq!(rest, unread);
}

#[test]
fn sleeping_at_once_between_processes_loses_no_wake_up() {
    // Ping-pong, one record each way per round, both sides sleeping on the
    // futex as soon as the ring is empty and with no poll interval: every
    // round goes through the waiter-flag handshake across processes, where
    // the notifier's fence is a compiler fence once its process registered
    // for global membarriers (the child registers after the fork). A lost
    // wake-up would leave a side asleep until its deadline: the parent's
    // shows as a timeout, the child's as a missing reply.
    let rounds: u64 = if cfg!(debug_assertions) {
        3_000
    } else {
        20_000
    };
    let rings = rings("ringweave-test-wakeups", &[4096, 4096]);
    let (down, up) = (&rings[0], &rings[1]);
    // SAFETY: one producer and one consumer per ring; the child's pair is
    // moved into its closure, the parent's is dropped before `rings`.
    let (mut tx, mut rx) = unsafe { (down.producer::<u64>(), up.consumer::<u64>()) };
    // SAFETY: as above.
    let (mut child_rx, mut child_tx) = unsafe { (down.consumer::<u64>(), up.producer::<u64>()) };
    for end in [
        &mut tx as &mut dyn SetWait,
        &mut rx,
        &mut child_rx,
        &mut child_tx,
    ] {
        end.sleep_at_once();
    }
    // SAFETY: the child runs ring operations and arithmetic only.
    let mut worker = unsafe {
        Worker::spawn("ponger", move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            for i in 0..rounds {
                match child_rx.pop_until(Some(deadline), || false) {
                    Ok(x) if x == i => {}
                    Ok(_) => return 2,
                    Err(_) => return 3,
                }
                if child_tx
                    .push_until(&(i + 1), Some(deadline), || false)
                    .is_err()
                {
                    return 4;
                }
                child_tx.flush();
            }
            0
        })
    }
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for i in 0..rounds {
        tx.push_until(&i, Some(deadline), ended(&mut worker))
            .unwrap_or_else(|e| panic!("round {i}: push: {e}"));
        tx.flush();
        let reply = rx
            .pop_until(Some(deadline), ended(&mut worker))
            .unwrap_or_else(|e| panic!("round {i}: no reply ({e}), child {:?}", worker.exit()));
        assert_eq!(reply, i + 1, "round {i}");
    }
    assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(0));
}

/// Sleep at once and never poll: only a wake-up ends a sleep early.
trait SetWait {
    fn sleep_at_once(&mut self);
}

impl<T> SetWait for ringweave_ipc::record_ring::RecordProducer<T> {
    fn sleep_at_once(&mut self) {
        self.set_wait_strategy(ringweave_ipc::wait::WaitStrategy::SLEEP_AT_ONCE);
        self.set_poll_interval(None);
    }
}

impl<T> SetWait for ringweave_ipc::record_ring::RecordConsumer<T> {
    fn sleep_at_once(&mut self) {
        self.set_wait_strategy(ringweave_ipc::wait::WaitStrategy::SLEEP_AT_ONCE);
        self.set_poll_interval(None);
    }
}
