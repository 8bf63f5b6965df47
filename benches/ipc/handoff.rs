//! The one-copy hand-off floor: what moving a large record from one process
//! to another costs with everything but the copy and two index words taken
//! away. No frames, no serializer, no validation, no sleeping: the parent
//! copies each record into the next fixed slot of a shared buffer the size
//! of the ring's arena and publishes a count; the forked child reads the
//! slot as the ring's consumer does (one byte of every line) and acknowledges
//! it. The ring's time over it is what the ring's own work costs on top of
//! the one copy and the cross-core transfer, and the socketpair's time over
//! it is the ratio to the socketpair that a one-copy transport would reach
//! in that run if its own work cost nothing. (Not a proof that no one-copy
//! design can beat it: slot layout, copy routine and buffer size were
//! varied here without gain, see `scripts/bench.sh`.)

use super::payload::blob_check;
use super::{forked, Backoff, Outcome, EXIT_OK, RING_BYTES};
use ringweave_ipc::segment::{Segment, SegmentLayout};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};

/// One index word on its own pair of cache lines (the adjacent-line
/// prefetcher pulls lines in pairs), as the ring lays out its indices.
#[repr(C, align(128))]
struct Word(AtomicU64);

/// The two words of the hand-off.
#[repr(C)]
struct Indices {
    /// Records the parent has copied in (written by the parent only).
    published: Word,
    /// Records the child has read (written by the child only).
    acked: Word,
}

/// Bytes between slot starts: a record rounded up to whole cache lines.
fn slot_len(record: usize) -> usize {
    record.div_ceil(64) * 64
}

/// Sends `n` records, cycling through `pool` (all of one length), parent →
/// forked child over the bare hand-off; the child sums `blob_check` of each.
pub(super) fn handoff_floor(pool: &[&[u8]], n: u64) -> Outcome<()> {
    let len = pool[0].len();
    assert!(
        pool.iter().all(|b| b.len() == len),
        "hand-off floor: records of one length"
    );
    let slot = slot_len(len);
    let slots = (RING_BYTES / slot).max(1);
    let mut layout = SegmentLayout::new();
    let at_words = layout
        .reserve(Layout::new::<Indices>())
        .expect("index layout");
    let buffer = Layout::from_size_align(slots * slot, 128).expect("buffer layout");
    let at_buffer = layout.reserve(buffer).expect("buffer reserve");
    let segment = Segment::create("ipc-bench-handoff", layout.size()).expect("segment");
    // Borrowed, not an `Arc` clone (see `forked_with`).
    let child_segment = &segment;
    // Untimed setup, as for the ring: fault the pages in.
    segment.populate().expect("populate the hand-off segment");
    let words = segment
        .region(at_words, std::mem::size_of::<Indices>())
        .expect("index region")
        .cast::<Indices>();
    // SAFETY: a fresh segment is zero bytes, a valid `Indices` (atomics
    // only), at an offset aligned for it (`reserve`); the segment outlives
    // this function's uses in the parent, and the child's until it exits.
    let words = unsafe { words.as_ref() };
    let base = segment
        .region(at_buffer, slots * slot)
        .expect("buffer region")
        .as_ptr();
    let at = move |k: u64| {
        let offset = (k % slots as u64) as usize * slot;
        // SAFETY: `offset + slot <= slots * slot`, inside the region.
        unsafe { base.add(offset) }
    };
    let outcome = forked(
        "handoff",
        move |report| {
            let _ = child_segment.populate();
            report.ready();
            let (mut sum, mut backoff) = (0u64, Backoff::new());
            for j in 0..n {
                // Acquire: pairs with the parent's Release store of
                // `published`; the slot's bytes are visible after it.
                while words.published.0.load(Ordering::Acquire) <= j {
                    backoff.snooze();
                }
                backoff.reset();
                // SAFETY: slot `j` holds `len` bytes the parent finished
                // writing (published > j) and will not touch again until
                // `acked` passes `j`.
                let bytes = unsafe { std::slice::from_raw_parts(at(j), len) };
                sum = sum.wrapping_add(blob_check(bytes));
                // Release: our reads of the slot happen before the parent
                // overwrites it (its Acquire load of `acked`).
                words.acked.0.store(j + 1, Ordering::Release);
            }
            report.done(n, sum);
            EXIT_OK
        },
        || (),
        |_| {
            let mut backoff = Backoff::new();
            for i in 0..n {
                // Acquire: pairs with the child's Release store of `acked`.
                while i - words.acked.0.load(Ordering::Acquire) >= slots as u64 {
                    backoff.snooze();
                }
                backoff.reset();
                let record = pool[i as usize % pool.len()];
                // SAFETY: slot `i` is free (the child acknowledged record
                // `i - slots`), holds `slot >= len` bytes, and cannot
                // overlap `record`, which lives in this process's heap.
                unsafe { std::ptr::copy_nonoverlapping(record.as_ptr(), at(i), len) };
                // Release: the copy happens before the child's Acquire load.
                words.published.0.store(i + 1, Ordering::Release);
            }
        },
    );
    // The parent's `words` and `base` point into `segment`: unmap it last.
    drop(segment);
    outcome
}
