//! The floor of a switch, measured alone: forking and ending a copy of this
//! process, and copying records in and out of a fresh record ring.

use super::{CAPACITY, EDGES, SHM_RING_BYTES};
use criterion::black_box;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use ringweave_ipc::record_ring::RecordRing;
use ringweave_ipc::segment::{Segment, SegmentLayout};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Forks a child that `_exit`s at once and reaps it; returns the time until
/// `fork` returned in the parent, and until the child was reaped.
pub(super) fn fork_and_reap() -> (Duration, Duration) {
    let start = Instant::now();
    // SAFETY: the child calls only `_exit`, which is async-signal-safe: it
    // takes no lock, allocates nothing and runs no destructor.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => unsafe_exit(),
        ForkResult::Parent { child } => {
            let forked = start.elapsed();
            reap(child);
            (forked, start.elapsed())
        }
    }
}

/// Forks a child that sleeps until killed (untimed), then times `SIGKILL`
/// and `waitpid`: what ending a worker of this size costs.
pub(super) fn kill_and_reap() -> Duration {
    // SAFETY: the child only sleeps (`pause`) and `_exit`s; both are
    // async-signal-safe.
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => loop {
            // SAFETY: `pause` only waits for a signal.
            unsafe { nix::libc::pause() };
        },
        ForkResult::Parent { child } => child,
    };
    // Let it get scheduled and sleep, as a worker would be running.
    thread::sleep(Duration::from_micros(200));
    let start = Instant::now();
    kill(child, Signal::SIGKILL).expect("kill");
    reap(child);
    start.elapsed()
}

pub(super) fn unsafe_exit() -> ! {
    // SAFETY: `_exit` ends the (forked) process without running anything of
    // the parent's.
    unsafe { nix::libc::_exit(0) }
}

pub(super) fn reap(child: Pid) {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("waitpid: {e}"),
        }
    }
}

/// A fresh segment holding one record ring of `SHM_RING_BYTES`.
pub(super) fn fresh_ring() -> RecordRing {
    let mut layout = SegmentLayout::new();
    let offset = layout
        .reserve(RecordRing::layout(SHM_RING_BYTES).expect("layout"))
        .expect("reserve");
    let segment = Arc::new(Segment::create("bench-switch", layout.size()).expect("segment"));
    RecordRing::new(&segment, offset, SHM_RING_BYTES).expect("ring")
}

/// Archives `items` into fresh record rings of `CAPACITY` records each (as
/// many as needed, like the edges of a switch) and returns the time of the
/// archiving and publishing alone.
pub(super) fn copy_out(items: &[u64]) -> Duration {
    let rings: Vec<RecordRing> = items.chunks(CAPACITY).map(|_| fresh_ring()).collect();
    let start = Instant::now();
    for (ring, chunk) in rings.iter().zip(items.chunks(CAPACITY)) {
        // SAFETY: the only producer of this ring, dropped before it.
        let mut producer = unsafe { ring.producer::<u64>() };
        for item in chunk {
            producer
                .push(item)
                .expect("a record ring of CAPACITY records");
        }
        producer.flush();
    }
    let elapsed = start.elapsed();
    black_box(&rings);
    elapsed
}

/// Reads back `n` records (validated, deserialized into a `Vec`) from rings
/// filled beforehand, like a switch back; returns the time of the reading.
pub(super) fn copy_in(n: usize) -> Duration {
    let items: Vec<u64> = (0..n as u64).collect();
    let rings: Vec<RecordRing> = items
        .chunks(CAPACITY)
        .map(|chunk| {
            let ring = fresh_ring();
            // SAFETY: the only producer of this ring, dropped before it.
            let mut producer = unsafe { ring.producer::<u64>() };
            for item in chunk {
                producer
                    .push(item)
                    .expect("a record ring of CAPACITY records");
            }
            producer.flush();
            drop(producer);
            ring
        })
        .collect();
    let start = Instant::now();
    let mut total = 0;
    for ring in &rings {
        // SAFETY: nothing reads or writes the ring while `unread` lives.
        let unread = unsafe { ring.peek_unread::<u64>() };
        let back = unread
            .collect::<Result<Vec<u64>, _>>()
            .expect("valid records");
        total += back.len();
        black_box(back);
    }
    let elapsed = start.elapsed();
    assert_eq!(total, n);
    elapsed
}

/// Creates the data segment of a switch of this pipeline (4 record rings).
pub(super) fn segment_create() -> Duration {
    let start = Instant::now();
    let mut layout = SegmentLayout::new();
    for _ in 0..EDGES {
        layout
            .reserve(RecordRing::layout(SHM_RING_BYTES).expect("layout"))
            .expect("reserve");
    }
    let segment = Segment::create("bench-switch", layout.size()).expect("segment");
    let elapsed = start.elapsed();
    drop(black_box(segment));
    elapsed
}
