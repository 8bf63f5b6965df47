//! The writing end of a record ring.

use super::{wait_polled, PushError, RawRing, WaitOutcome, DEFAULT_POLL_INTERVAL};
use crate::futex::FutexSleeper;
use crate::index::ProducerCursor;
use crate::record::{self, frame_len, Record, RecordError, RecordOf, FRAME_HEADER, PAD};
use crate::wait::{self, WaitStrategy};
use rkyv::ser::allocator::Arena;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// The writing end of a [`RecordRing`](super::RecordRing). `Send`, not
/// `Sync`; one per ring (see [`RecordRing::producer`](super::RecordRing::producer)).
///
/// Records are *staged* by [`push`](Self::push) and its blocking variants —
/// written into the arena but invisible to the consumer — and *published*
/// together by [`flush`](Self::flush) with one store. A blocking push that
/// has to wait for space flushes first (the consumer can only free what it
/// sees); dropping the producer flushes too.
pub struct RecordProducer<T> {
    ring: RawRing,
    cursor: ProducerCursor,
    /// Ring position after the last staged frame. Invariant:
    /// `cursor.position() <= staged <= cursor.position() + free`, a multiple
    /// of 16.
    staged: u64,
    /// Records staged since the last flush.
    staged_records: usize,
    /// Frame size of the last record: how much free space to look for
    /// before serializing the next one.
    hint: u64,
    /// Scratch space for rkyv's serializer; ours, so serializing touches no
    /// thread-local (see `record::serialize_into`).
    arena: Arena,
    strategy: WaitStrategy,
    poll: Option<Duration>,
    /// Ring position up to which the lines ahead of `staged` were
    /// prefetched for writing (see [`PREFETCH_AHEAD`]).
    prefetched: u64,
    _record: PhantomData<fn(&T)>,
}

/// Bytes of free lines ahead of the staged position the producer keeps
/// prefetched for writing.
///
/// The lines a producer writes were last read by the consumer, a lap ago,
/// and are still in the consumer's cache. A store to such a line waits for
/// the other core to give it up, and stores leave the store buffer in order,
/// so a serializer's small stores wait for one line at a time, several times
/// slower when producer and consumer run on far-apart cores (docs/PERF.md,
/// "Measured design choices"). Asking for the lines early overlaps those
/// waits. Only whole lines the consumer has released
/// are prefetched: the one holding its position may still be read.
const PREFETCH_AHEAD: u64 = 2048;

/// The prefetch window is refilled (up to [`PREFETCH_AHEAD`]) when fewer
/// than this many bytes ahead are prefetched: a burst of prefetches every
/// few records rather than one per record.
const PREFETCH_REFILL: u64 = 1024;

/// Bytes of a cache line, as far as prefetching is concerned.
const LINE: u64 = 64;

// SAFETY: the handle owns its cursor and scratch arena; the raw pointers
// point into a shared mapping whose concurrent use the index protocol
// orders. It never holds a `T`.
unsafe impl<T> Send for RecordProducer<T> {}

impl<T> fmt::Debug for RecordProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordProducer")
            .field("capacity", &self.ring.capacity)
            .field("published", &self.cursor.position())
            .field("staged", &self.staged)
            .finish()
    }
}

/// Why a record could not be staged.
enum Stage {
    /// `want` free bytes are needed at the staged position.
    Full {
        want: u64,
    },
    Record(RecordError),
}

impl<T: Record> RecordProducer<T> {
    pub(super) fn attach(ring: RawRing) -> Self {
        let cursor = ProducerCursor::attach(ring.index(), ring.capacity);
        Self {
            ring,
            staged: cursor.position(),
            cursor,
            staged_records: 0,
            hint: 64,
            arena: Arena::new(),
            strategy: super::DEFAULT_WAIT,
            poll: Some(DEFAULT_POLL_INTERVAL),
            prefetched: 0,
            _record: PhantomData,
        }
    }

    /// Stages `value` if there is room, without waiting and without
    /// publishing: call [`flush`](Self::flush) to make staged records
    /// visible.
    ///
    /// # Errors
    ///
    /// - [`PushError::Full`] if the free bytes (minus those staged) are too
    ///   few. Staged records stay staged: flush them, or the consumer can
    ///   never make room.
    /// - [`PushError::Record`] with [`RecordError::TooLarge`] if the record
    ///   can never fit in this ring, or [`RecordError::Serialize`]. Nothing
    ///   of the record is staged.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringweave_ipc::record_ring::{PopError, PushError, RecordRing};
    /// # use ringweave_ipc::record::RecordError;
    /// # use ringweave_ipc::segment::{Segment, SegmentLayout};
    /// # use std::sync::Arc;
    /// # let mut layout = SegmentLayout::new();
    /// # let at = layout.reserve(RecordRing::layout(1024).unwrap()).unwrap();
    /// # let segment = Arc::new(Segment::create("doc", layout.size()).unwrap());
    /// # let ring = RecordRing::new(&segment, at, 1024).unwrap();
    /// // SAFETY: one end each, dropped before `ring`.
    /// let (mut tx, mut rx) = unsafe { (ring.producer::<Vec<u8>>(), ring.consumer::<Vec<u8>>()) };
    /// // Stage a batch, publish it with one store.
    /// for n in 0..10u8 {
    ///     tx.push(&vec![n; usize::from(n)]).unwrap();
    /// }
    /// assert_eq!(tx.flush(), 10);
    /// assert_eq!(rx.read_batch(usize::MAX, |_| {}), Ok(10));
    /// // A record that can never fit is refused with both sizes.
    /// let Err(PushError::Record(RecordError::TooLarge { record, capacity })) =
    ///     tx.push(&vec![0; 2000])
    /// else {
    ///     unreachable!()
    /// };
    /// assert!(record > capacity && capacity == 1024 - 16);
    /// ```
    pub fn push(&mut self, value: &T) -> Result<(), PushError> {
        self.push_as(value)
    }

    /// Like [`push`](Self::push), for any value whose archive is an archive
    /// of `T` — such as a [`VecOf`](crate::record::VecOf) slice into a ring
    /// of `Vec` records, which stages a run of items as one record without
    /// owning them.
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringweave_ipc::record::VecOf;
    /// # use ringweave_ipc::record_ring::RecordRing;
    /// # use ringweave_ipc::segment::{Segment, SegmentLayout};
    /// # use std::sync::Arc;
    /// # let mut layout = SegmentLayout::new();
    /// # let at = layout.reserve(RecordRing::layout(4096).unwrap()).unwrap();
    /// # let segment = Arc::new(Segment::create("doc", layout.size()).unwrap());
    /// # let ring = RecordRing::new(&segment, at, 4096).unwrap();
    /// // SAFETY: one end each, dropped before `ring`.
    /// let (mut tx, mut rx) = unsafe { (ring.producer::<Vec<u64>>(), ring.consumer::<Vec<u64>>()) };
    /// let items: Vec<u64> = (0..100).collect();
    /// tx.push_as(&VecOf(&items[..60])).unwrap();
    /// tx.push_as(&VecOf(&items[60..])).unwrap();
    /// tx.flush();
    /// let mut got = Vec::new();
    /// assert_eq!(rx.pop_items(usize::MAX, |x| got.push(x)), Ok(100));
    /// assert_eq!(got, items);
    /// ```
    pub fn push_as<U: RecordOf<T>>(&mut self, value: &U) -> Result<(), PushError> {
        match self.stage(value) {
            Ok(()) => Ok(()),
            Err(Stage::Full { .. }) => Err(PushError::Full),
            Err(Stage::Record(e)) => Err(PushError::Record(e)),
        }
    }

    /// Stages `value`, waiting (spin, yield, futex) while the ring is full.
    ///
    /// # Errors
    ///
    /// [`PushError::Abandoned`] if the consumer closed while (or before) we
    /// had to wait; [`PushError::Record`] as for [`push`](Self::push).
    pub fn push_blocking(&mut self, value: &T) -> Result<(), PushError> {
        self.push_until(value, None, || false)
    }

    /// Stages `value`, waiting while the ring is full until `deadline`, or
    /// until `interrupt()` returns `true`.
    ///
    /// Before waiting it publishes what is staged. `interrupt` is checked
    /// between the wait's tiers and at least every poll interval while
    /// asleep (see [`set_poll_interval`](Self::set_poll_interval)); a
    /// consumer in another process that dies never wakes us, so check its
    /// liveness there (e.g. [`Worker::try_status`](crate::worker::Worker::try_status)).
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] on timeout, [`PushError::Interrupted`],
    /// [`PushError::Abandoned`], [`PushError::Record`].
    pub fn push_until(
        &mut self,
        value: &T,
        deadline: Option<Instant>,
        interrupt: impl FnMut() -> bool,
    ) -> Result<(), PushError> {
        self.push_as_until(value, deadline, interrupt)
    }

    /// [`push_until`](Self::push_until) for any [`RecordOf<T>`], as
    /// [`push_as`](Self::push_as) is to [`push`](Self::push).
    ///
    /// # Errors
    ///
    /// As for [`push_until`](Self::push_until).
    pub fn push_as_until<U: RecordOf<T>>(
        &mut self,
        value: &U,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> Result<(), PushError> {
        loop {
            let want = match self.stage(value) {
                Ok(()) => return Ok(()),
                Err(Stage::Record(e)) => return Err(PushError::Record(e)),
                Err(Stage::Full { want }) => want,
            };
            self.flush();
            match self.wait_for_space(want as usize, deadline, &mut interrupt) {
                WaitOutcome::Ready(_) => {}
                WaitOutcome::Closed => return Err(PushError::Abandoned),
                WaitOutcome::Interrupted => return Err(PushError::Interrupted),
                WaitOutcome::TimedOut => return Err(PushError::Full),
            }
        }
    }

    /// Writes `value`'s frame at the staged position if it fits.
    fn stage<U: RecordOf<T>>(&mut self, value: &U) -> Result<(), Stage> {
        let capacity = self.ring.capacity;
        // Exact archive length, once a serialization has told us.
        let mut known: Option<u64> = None;
        loop {
            let offset = self.ring.offset(self.staged);
            let to_end = capacity - offset as u64;
            let staged_bytes = self.staged - self.cursor.position();
            // Free bytes we need at `offset`: what the size (or the last
            // record's size) says, and a padding frame first if the record
            // cannot fit before the end.
            let (want, must_wrap) = match known {
                Some(len) => {
                    let size = frame_len(len as usize) as u64;
                    if size > to_end {
                        (to_end, true)
                    } else {
                        (size, false)
                    }
                }
                None => (self.hint.min(to_end), false),
            };
            // Reloads the consumer's position only if the cached one shows
            // less than we want.
            let free = self.cursor.free(self.ring.index(), staged_bytes + want) - staged_bytes;
            if known.is_some() {
                if free < want {
                    return Err(Stage::Full { want });
                }
                if must_wrap {
                    // SAFETY: we are the producer and the `to_end >= 16`
                    // bytes at `offset` are free (`free >= want = to_end`).
                    unsafe { self.ring.write_header(offset, PAD) };
                    self.staged += to_end;
                    continue;
                }
            }
            // Records larger than the window are left alone: their bulk
            // copies keep enough lines in flight by themselves, and
            // prefetching each one's first lines cost 64 KiB records ~5 %.
            if known.is_none() && self.hint <= PREFETCH_AHEAD {
                self.prefetch_ahead(free);
            }
            let window = free.min(to_end) as usize;
            let room = if known.is_none() && free < want {
                // The last record's size says this one will not fit: learn
                // its size without copying anything (a zero window only
                // counts), rather than copy what fits and throw it away.
                0
            } else {
                window.saturating_sub(FRAME_HEADER)
            };
            // SAFETY: `offset + 16 + room <= offset + window <= capacity` and
            // those bytes are free (`window <= free`), so ours to write
            // (`room` is 0 when `window < 16`: nothing is written).
            let len = unsafe {
                let dst = self.ring.arena.as_ptr().add(offset + FRAME_HEADER);
                record::serialize_into(value, &mut self.arena, dst, room)
            }
            .map_err(|e| {
                Stage::Record(RecordError::Serialize {
                    message: e.to_string(),
                })
            })?;
            if len > self.ring.max_record_len() {
                // Checked before anything is staged. No scratch buffer was
                // needed to learn the size: the slot writer counts past the
                // free bytes.
                return Err(Stage::Record(RecordError::TooLarge {
                    record: len,
                    capacity: self.ring.max_record_len(),
                }));
            }
            if len <= room && window >= FRAME_HEADER {
                // The whole archive is in place; `room` and `window` are
                // multiples of 16, so its padded frame is inside `window`
                // (an empty archive still needs the header's 16 bytes).
                // SAFETY: as above, the header's 16 bytes are in `window`.
                unsafe { self.ring.write_header(offset, len as u64) };
                let size = frame_len(len) as u64;
                self.staged += size;
                self.staged_records += 1;
                self.hint = size;
                return Ok(());
            }
            if known.is_some() {
                // Cannot happen: with the exact size known and that much
                // free, the archive fits. Report it rather than loop.
                return Err(Stage::Full { want });
            }
            known = Some(len as u64);
        }
    }

    /// Prefetches, for writing, the whole lines within [`PREFETCH_AHEAD`]
    /// bytes past the staged position that are among the `free` bytes there
    /// and not prefetched yet — when fewer than [`PREFETCH_REFILL`] bytes
    /// ahead are.
    #[inline]
    fn prefetch_ahead(&mut self, free: u64) {
        if self.prefetched >= self.staged + PREFETCH_REFILL {
            return;
        }
        let end = (self.staged + free.min(PREFETCH_AHEAD)) & !(LINE - 1);
        let mut pos = self.prefetched.max(self.staged.next_multiple_of(LINE));
        while pos < end {
            self.ring.prefetch_write(self.ring.offset(pos));
            pos += LINE;
        }
        self.prefetched = self.prefetched.max(end);
    }

    /// Publishes every staged record with one store, and wakes the consumer
    /// if it sleeps. Returns how many records were published.
    pub fn flush(&mut self) -> usize {
        let bytes = self.staged - self.cursor.position();
        if bytes == 0 {
            return 0;
        }
        self.cursor.publish(self.ring.index(), bytes);
        wait::notify(self.ring.index().data_waiter(), &FutexSleeper::new());
        std::mem::take(&mut self.staged_records)
    }

    /// Waits until at least `bytes` (at most the capacity) are free beyond
    /// what is staged, the consumer closes, `interrupt()` returns `true`, or
    /// `deadline` passes. See [`push_until`](Self::push_until) for
    /// `interrupt`.
    ///
    /// Does not flush: a producer waiting with staged records the consumer
    /// cannot see may wait for nothing.
    pub fn wait_for_space(
        &mut self,
        bytes: usize,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> WaitOutcome {
        let want = (bytes as u64).clamp(1, self.ring.capacity);
        let ring = self.ring;
        let staged_bytes = self.staged - self.cursor.position();
        let cursor = &mut self.cursor;
        let mut outcome = WaitOutcome::TimedOut;
        wait_polled(
            ring.index().space_waiter(),
            self.strategy,
            deadline,
            self.poll,
            || {
                let free = cursor.free(ring.index(), staged_bytes + want) - staged_bytes;
                outcome = if free >= want {
                    WaitOutcome::Ready(free as usize)
                } else if ring.index().is_consumer_closed() {
                    WaitOutcome::Closed
                } else if interrupt() {
                    WaitOutcome::Interrupted
                } else {
                    return false;
                };
                true
            },
        );
        outcome
    }
}

impl<T> RecordProducer<T> {
    /// Records staged and not yet published.
    #[inline]
    pub fn staged(&self) -> usize {
        self.staged_records
    }

    /// Bytes staged and not yet published (frames and padding).
    #[inline]
    pub fn staged_bytes(&self) -> usize {
        (self.staged - self.cursor.position()) as usize
    }

    /// Free bytes beyond what is staged (a lower bound: the consumer may be
    /// freeing more).
    pub fn free_bytes(&mut self) -> usize {
        let staged_bytes = self.staged - self.cursor.position();
        (self.cursor.free(self.ring.index(), u64::MAX) - staged_bytes) as usize
    }

    /// Bytes in the ring's arena.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }

    /// The largest archive, in bytes, a record may have in this ring.
    #[inline]
    pub fn max_record_len(&self) -> usize {
        self.ring.max_record_len()
    }

    /// Whether the consumer has read every published record: it is idle,
    /// so a producer holding items back to fill a run should publish them
    /// now (see `ProducerCursor::is_drained`).
    #[inline]
    pub fn is_drained(&self) -> bool {
        self.cursor.is_drained(self.ring.index())
    }

    /// Whether the consumer has closed its end.
    #[inline]
    pub fn is_abandoned(&self) -> bool {
        self.ring.index().is_consumer_closed()
    }

    /// Sets how blocking operations wait before sleeping.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sets the longest sleep between two checks of a blocking operation's
    /// `interrupt` ([`DEFAULT_POLL_INTERVAL`] unless set; `None`: sleep until
    /// woken or the deadline).
    pub fn set_poll_interval(&mut self, poll: Option<Duration>) {
        self.poll = poll;
    }

    /// Publishes what is staged and closes the producer's end: a consumer
    /// that has read everything gets [`PopError::Closed`](super::PopError::Closed).
    /// The same as dropping the handle.
    pub fn close(self) {
        drop(self);
    }

    /// Publishes what is staged and gives up this handle **without closing
    /// the producer's end**: a producer attached later with
    /// [`RecordRing::producer`](super::RecordRing::producer) — in this
    /// process or in a child forked after this call — carries on from here.
    ///
    /// This is how one process fills a ring and another takes it over: the
    /// parent writes residual records before a fork and detaches, the child
    /// attaches its own producer after it. Nothing of the handle is kept
    /// (its scratch arena is freed).
    pub fn detach(self) {
        let mut handle = std::mem::ManuallyDrop::new(self);
        let this: &mut Self = &mut handle;
        let index = this.ring.index();
        let bytes = this.staged - this.cursor.position();
        if bytes > 0 {
            this.cursor.publish(index, bytes);
            wait::notify(index.data_waiter(), &FutexSleeper::new());
        }
        // SAFETY: `this` is never used again and its `Drop` (which would
        // close the end) never runs; the arena is the only field that owns
        // anything, and it is dropped exactly once, here.
        unsafe { std::ptr::drop_in_place(&mut this.arena) };
    }
}

impl<T> Drop for RecordProducer<T> {
    fn drop(&mut self) {
        let index = self.ring.index();
        let bytes = self.staged - self.cursor.position();
        if bytes > 0 {
            self.cursor.publish(index, bytes);
        }
        // After the publish: a consumer that sees the close bit and reloads
        // `write` sees everything (SYNC POINT: close, in `RingIndex`).
        index.close_producer();
        wait::notify(index.data_waiter(), &FutexSleeper::new());
    }
}
