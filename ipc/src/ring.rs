//! A bounded, lock-free, single-producer single-consumer ring that moves `T`
//! by value.
//!
//! The index protocol is [`index`](crate::index) (rtrb's and the Disruptor's:
//! two monotonic positions, each side caching the other's, one Release store
//! per hand-over); the same code drives the shared-memory record ring, and
//! loom checks it in `loom-tests/tests/ring.rs`.
//!
//! On top of the non-blocking [`Producer::push`] / [`Consumer::pop`] and the
//! chunk API ([`Producer::write_chunk_uninit`], [`Consumer::read_chunk`]), the
//! blocking operations wait in tiers — spin, yield, park — and a waiter flag
//! makes the wake-up free when nobody sleeps (see [`wait`]).
//!
//! # Examples
//!
//! ```
//! let (mut tx, mut rx) = ringweave_ipc::ring::channel::<u64>(4);
//! let producer = std::thread::spawn(move || {
//!     for i in 0..100 {
//!         tx.push_blocking(i).unwrap();
//!     }
//! });
//! let received: Vec<u64> = std::iter::from_fn(|| rx.pop_blocking().ok()).collect();
//! producer.join().unwrap();
//! assert_eq!(received, (0..100).collect::<Vec<_>>());
//! ```

use crate::index::{ConsumerCursor, ProducerCursor, RingIndex};
use crate::sync::{Arc, UnsafeCell};
use crate::wait::{self, ThreadSleeper, WaitStrategy};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// Creates a ring of exactly `capacity` slots and returns its two ends.
///
/// Storage is rounded up to a power of two so a position maps to a slot with
/// a mask; the ring still holds at most `capacity` items.
///
/// # Panics
///
/// If `capacity` is 0 or larger than `isize::MAX / size_of::<T>()`.
///
/// # Examples
///
/// ```
/// let (mut tx, mut rx) = ringweave_ipc::ring::channel(2);
/// tx.push('a').unwrap();
/// tx.push('b').unwrap();
/// assert!(tx.push('c').is_err()); // full: capacity is exact
/// assert_eq!(rx.pop(), Ok('a'));
/// ```
#[must_use]
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0, "ring capacity must be at least 1");
    // Before any handle exists: the handles' waits use asymmetric fences.
    crate::fence::init();
    // Checked: above 2^(usize::BITS - 1) `next_power_of_two` overflows, and
    // in a release build it wraps to 0, which would leave no storage behind a
    // mask of all ones (out-of-bounds writes from safe code).
    let storage = capacity
        .checked_next_power_of_two()
        .expect("ring capacity too large");
    let slots = (0..storage)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Box<[_]>>();
    let shared = Arc::new(Shared {
        index: RingIndex::new(),
        data_sleeper: ThreadSleeper::new(),
        space_sleeper: ThreadSleeper::new(),
        slots,
        mask: storage as u64 - 1,
    });
    let producer = Producer {
        cursor: ProducerCursor::attach(&shared.index, capacity as u64),
        shared: Arc::clone(&shared),
        strategy: WaitStrategy::default(),
        not_sync: PhantomData,
    };
    let consumer = Consumer {
        cursor: ConsumerCursor::attach(&shared.index),
        shared,
        strategy: WaitStrategy::default(),
        capacity: capacity as u64,
        not_sync: PhantomData,
    };
    (producer, consumer)
}

/// State both ends point to.
struct Shared<T> {
    index: RingIndex,
    /// Where a consumer waiting for data sleeps.
    data_sleeper: ThreadSleeper,
    /// Where a producer waiting for space sleeps.
    space_sleeper: ThreadSleeper,
    /// Slot `pos & mask` holds the item at position `pos`. Initialised exactly
    /// for positions in `read..write`.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `slots.len() - 1`; `slots.len()` is a power of two.
    mask: u64,
}

// SAFETY: the index protocol gives each slot to one side at a time (the
// producer for positions >= write, the consumer for read..write), so `T`
// values only ever move between threads, which `T: Send` allows. No `&T` is
// shared across threads except through `&mut` handles.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; dropping `Shared` on another thread drops `T`s there.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    #[inline]
    fn slot(&self, pos: u64) -> &UnsafeCell<MaybeUninit<T>> {
        let i = (pos & self.mask) as usize;
        debug_assert!(i < self.slots.len());
        // SAFETY: `i <= mask < slots.len()`.
        unsafe { self.slots.get_unchecked(i) }
    }

    /// # Safety
    /// The caller is the producer and `pos` is a free position.
    #[inline]
    unsafe fn write(&self, pos: u64, value: T) {
        // SAFETY: the caller owns the free slot; nobody else touches it.
        self.slot(pos).with_mut(|p| unsafe { (*p).write(value) });
    }

    /// # Safety
    /// The caller is the consumer, `pos` is in `read..write`, and it releases
    /// `pos` without reading it again.
    #[inline]
    unsafe fn take(&self, pos: u64) -> T {
        // SAFETY: the slot at a published position is initialised and owned
        // by the consumer; the caller will not read it twice.
        self.slot(pos).with(|p| unsafe { (*p).assume_init_read() })
    }

    /// # Safety
    /// The caller is the consumer, `pos` is in `read..write`, and the returned
    /// reference dies before the position is released.
    #[inline]
    unsafe fn get(&self, pos: u64) -> &T {
        let ptr = self.slot(pos).with(|p| p);
        // SAFETY: as for `take`, but borrowed; the consumer will not release
        // the slot while the borrow lives.
        unsafe { (*ptr).assume_init_ref() }
    }

    /// Pointer to slot 0 as a flat `MaybeUninit<T>` array.
    #[cfg(not(ringweave_loom))]
    #[inline]
    fn base(&self) -> *mut MaybeUninit<T> {
        // The std shim's `UnsafeCell<X>` is `repr(transparent)` over
        // `std::cell::UnsafeCell<X>`, which is over `X`, so the slot array is
        // laid out as `[MaybeUninit<T>]`, and a pointer derived from a shared
        // reference to `UnsafeCell`s may be written through.
        self.slots.as_ptr() as *mut MaybeUninit<T>
    }

    /// The two contiguous runs of storage covering positions
    /// `start..start+len` (the second is empty unless the run wraps), as
    /// `(slot index, length)` pairs.
    #[inline]
    fn runs(&self, start: u64, len: usize) -> ((usize, usize), (usize, usize)) {
        let first = (start & self.mask) as usize;
        let to_end = self.slots.len() - first;
        if len <= to_end {
            ((first, len), (0, 0))
        } else {
            ((first, to_end), (0, len - to_end))
        }
    }

    fn wake_both(&self) {
        wait::notify(self.index.data_waiter(), &self.data_sleeper);
        wait::notify(self.index.space_waiter(), &self.space_sleeper);
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both ends are gone (we hold the last `Arc`), so `read..write` is
        // stable and everything in it is initialised and unread.
        let (read, write) = self.index.positions();
        for pos in read..write {
            // SAFETY: `pos` is published and unread; each is dropped once.
            drop(unsafe { self.take(pos) });
        }
    }
}

/// Error of [`Producer::push`] and its blocking variants; hands the value back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PushError<T> {
    /// No free slot (for the timed variant: none freed before the deadline).
    Full(T),
    /// The consumer was dropped; nothing pushed now would ever be read.
    Abandoned(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(v) | Self::Abandoned(v) => v,
        }
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Abandoned(_) => f.write_str("Abandoned(..)"),
        }
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("ring is full"),
            Self::Abandoned(_) => f.write_str("ring's consumer is gone"),
        }
    }
}

impl<T> std::error::Error for PushError<T> {}

/// Error of [`Consumer::pop`] and its blocking variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopError {
    /// No item (for the timed variant: none arrived before the deadline).
    Empty,
    /// The ring is empty and its producer was dropped: no item will come.
    Closed,
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("ring is empty"),
            Self::Closed => f.write_str("ring is empty and its producer is gone"),
        }
    }
}

impl std::error::Error for PopError {}

/// Error of the chunk operations: fewer slots than asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError {
    /// Slots asked for.
    pub requested: usize,
    /// Slots available (free ones for a write, full ones for a read).
    pub available: usize,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chunk of {} slots requested, {} available",
            self.requested, self.available
        )
    }
}

impl std::error::Error for ChunkError {}

/// How a wait for slots or items ended (also the record rings' waits, in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// At least the requested number is there; holds the count seen.
    Ready(usize),
    /// The other end was dropped (for a consumer: and the ring is empty).
    Closed,
    /// The caller's `interrupt` returned `true`.
    Interrupted,
    /// The deadline passed.
    TimedOut,
}

/// The writing end of a ring. `Send`, one per ring.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    cursor: ProducerCursor,
    strategy: WaitStrategy,
    /// Makes the handle `!Sync` (it stays `Send`); see `Consumer`.
    not_sync: PhantomData<Cell<()>>,
}

/// The reading end of a ring. `Send`, one per ring.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    cursor: ConsumerCursor,
    strategy: WaitStrategy,
    /// The ring's capacity in items, to clamp `wait_for_items`.
    capacity: u64,
    /// Makes the handle `!Sync` (it stays `Send`). `Shared<T>` is `Sync` for
    /// any `T: Send`, so without this a `&ReadChunk` (which borrows the
    /// `Consumer`) could be shared between threads and its `get`/`as_slices`
    /// would hand the same `&T` to several threads: a data race for a `T`
    /// that is `Send` but not `Sync`, such as `Cell`.
    not_sync: PhantomData<Cell<()>>,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("position", &self.cursor.position())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("position", &self.cursor.position())
            .finish()
    }
}

/// Wakes whichever end of a ring sleeps, so that it re-checks its interrupt
/// condition. Obtained from [`Producer::waker`] or [`Consumer::waker`];
/// type-erased so one list can hold the wakers of rings of any item type.
#[derive(Clone)]
// A std `Arc` around the shim's `Arc<Shared<T>>` rather than the shim's
// `Arc<dyn WakeBoth>`: loom's `Arc` cannot coerce to a trait object
// (`CoerceUnsized` is unstable), and this way both builds run the same code.
// The outer `Arc` only shares an immutable handle; the ring's lifetime is
// still counted by the inner one. One allocation per `waker()` call.
pub struct RingWaker(std::sync::Arc<dyn WakeBoth>);

trait WakeBoth: Send + Sync {
    fn wake_both(&self);
    fn occupied(&self) -> u64;
}

impl<T: Send> WakeBoth for Arc<Shared<T>> {
    fn wake_both(&self) {
        Shared::wake_both(self);
    }

    fn occupied(&self) -> u64 {
        let (read, write) = self.index.positions();
        write.saturating_sub(read)
    }
}

impl RingWaker {
    /// Wakes a sleeping producer and a sleeping consumer, if any. Publish the
    /// condition their `interrupt` checks before calling this.
    pub fn wake(&self) {
        self.0.wake_both();
    }

    /// Items in the ring now: a snapshot for metrics, stale as soon as it is
    /// read while both ends run.
    pub fn occupied(&self) -> usize {
        self.0.occupied() as usize
    }
}

impl fmt::Debug for RingWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingWaker")
    }
}

impl<T> Producer<T> {
    /// Pushes `value` if a slot is free, without waiting.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] with the value when no slot is free.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.cursor.free(&self.shared.index, 1) == 0 {
            return Err(PushError::Full(value));
        }
        // SAFETY: we are the producer and the slot at our position is free.
        unsafe { self.shared.write(self.cursor.position(), value) };
        self.commit_written(1);
        Ok(())
    }

    /// Pushes `value`, waiting (spin, yield, park) while the ring is full.
    ///
    /// # Errors
    ///
    /// [`PushError::Abandoned`] with the value if the consumer is dropped
    /// while (or before) waiting.
    pub fn push_blocking(&mut self, value: T) -> Result<(), PushError<T>> {
        self.push_until(value, None)
    }

    /// Like [`push_blocking`](Self::push_blocking) but gives up after
    /// `timeout` with [`PushError::Full`].
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] on timeout, [`PushError::Abandoned`] if the consumer
    /// is gone.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        self.push_until(value, Some(Instant::now() + timeout))
    }

    fn push_until(&mut self, value: T, deadline: Option<Instant>) -> Result<(), PushError<T>> {
        match self.wait_for_slots(1, deadline, || false) {
            WaitOutcome::Ready(_) => self.push(value),
            WaitOutcome::Closed => Err(PushError::Abandoned(value)),
            WaitOutcome::TimedOut | WaitOutcome::Interrupted => Err(PushError::Full(value)),
        }
    }

    /// Waits until at least `n` slots are free (at most `capacity`), the
    /// consumer is gone, `interrupt()` returns `true`, or `deadline` passes.
    ///
    /// `interrupt` is checked between tiers and after every wake-up; whoever
    /// makes it true must then call [`RingWaker::wake`] so that a parked
    /// producer re-checks it.
    pub fn wait_for_slots(
        &mut self,
        n: usize,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> WaitOutcome {
        let want = (n as u64).min(self.cursor.capacity()).max(1);
        let shared = &*self.shared;
        let cursor = &mut self.cursor;
        let mut outcome = WaitOutcome::TimedOut;
        wait::wait_until(
            shared.index.space_waiter(),
            &shared.space_sleeper,
            self.strategy,
            deadline,
            || {
                let free = cursor.free(&shared.index, want);
                outcome = if free >= want {
                    WaitOutcome::Ready(free as usize)
                } else if shared.index.is_consumer_closed() {
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

    /// Free slots now (a lower bound: the consumer may be freeing more).
    #[inline]
    pub fn slots(&self) -> usize {
        self.cursor.free(&self.shared.index, u64::MAX) as usize
    }

    /// The ring's capacity in items.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cursor.capacity() as usize
    }

    /// Whether the consumer has taken every published item: it is idle (or
    /// about to be), so items written with `write_staged` should be
    /// published now rather than held back to fill a batch.
    #[inline]
    #[doc(hidden)]
    pub fn is_drained(&self) -> bool {
        self.cursor.is_drained(&self.shared.index)
    }

    /// Whether the consumer has been dropped.
    #[inline]
    pub fn is_abandoned(&self) -> bool {
        self.shared.index.is_consumer_closed()
    }

    /// Sets how this end waits in blocking operations.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// A handle that wakes either end of this ring; see [`RingWaker`].
    #[must_use]
    pub fn waker(&self) -> RingWaker
    where
        T: Send + 'static,
    {
        RingWaker(std::sync::Arc::new(self.shared.clone()))
    }

    /// Reserves exactly `n` free slots for writing in place.
    ///
    /// Nothing is visible to the consumer until the chunk is committed; one
    /// commit publishes all its slots with one store.
    ///
    /// # Errors
    ///
    /// [`ChunkError`] with the number of free slots if fewer than `n` are free.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = ringweave_ipc::ring::channel::<u32>(8);
    /// let chunk = tx.write_chunk_uninit(5).unwrap();
    /// assert_eq!(chunk.fill_from_iter(10..), 5);
    /// assert_eq!(rx.slots(), 5);
    /// ```
    pub fn write_chunk_uninit(&mut self, n: usize) -> Result<WriteChunkUninit<'_, T>, ChunkError> {
        let free = self.cursor.free(&self.shared.index, n as u64) as usize;
        if free < n {
            return Err(ChunkError {
                requested: n,
                available: free,
            });
        }
        Ok(WriteChunkUninit {
            producer: self,
            len: n,
        })
    }

    /// Moves items from `iter` into free slots until the ring is full or the
    /// iterator ends, then publishes them with one store. Returns how many
    /// were pushed. Items not pushed stay in the iterator.
    pub fn push_from_iter<I: Iterator<Item = T>>(&mut self, iter: &mut I) -> usize {
        let free = self.slots();
        if free == 0 {
            return 0;
        }
        match self.write_chunk_uninit(free) {
            Ok(chunk) => chunk.fill_from_iter(iter),
            Err(_) => 0,
        }
    }

    /// Writes `value` into the free slot `offset` positions past our publish
    /// point, without publishing it. The pipeline's stage loop uses this to
    /// emit items one by one and publish them with one store per batch.
    ///
    /// # Safety
    ///
    /// `offset` must be below the free-slot count last returned by
    /// [`slots`](Self::slots) (or a `Ready` wait), and each offset is written
    /// once before [`publish_staged`](Self::publish_staged) covers it.
    #[inline]
    #[doc(hidden)]
    pub unsafe fn write_staged(&mut self, offset: usize, value: T) {
        // SAFETY: per the contract, position + offset is a free slot that
        // only the producer touches.
        unsafe {
            self.shared
                .write(self.cursor.position() + offset as u64, value)
        };
    }

    /// Publishes the first `n` slots written with
    /// [`write_staged`](Self::write_staged).
    #[inline]
    #[doc(hidden)]
    pub fn publish_staged(&mut self, n: usize) {
        self.commit_written(n);
    }

    /// Publishes `n` slots written at our position and wakes a sleeping
    /// consumer.
    #[inline]
    fn commit_written(&mut self, n: usize) {
        self.cursor.publish(&self.shared.index, n as u64);
        wait::notify(self.shared.index.data_waiter(), &self.shared.data_sleeper);
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.shared.index.close_producer();
        wait::notify(self.shared.index.data_waiter(), &self.shared.data_sleeper);
    }
}

/// Moves up to `max` items from `input` through `f` into `output`, slot to
/// slot, and publishes them with one store on each ring: the batch path of a
/// one-to-one stage (`map`). Returns how many moved (0 if `input` is empty or
/// `output` full).
///
/// Contiguous runs of both rings are walked with plain pointer offsets (at
/// most three runs, where either ring wraps), so simple maps vectorise. If
/// `f` panics, what was taken (including the item `f` got) is released and
/// what was written is published, so no item is dropped twice or lost from
/// the output side.
#[cfg(not(ringweave_loom))]
#[doc(hidden)]
pub fn map_chunk<In, Out>(
    input: &mut Consumer<In>,
    output: &mut Producer<Out>,
    max: usize,
    mut f: impl FnMut(In) -> Out,
) -> usize {
    let n = (input.cursor.available(&input.shared.index, max as u64) as usize).min(max);
    let n = n.min(output.cursor.free(&output.shared.index, n as u64) as usize);
    if n == 0 {
        return 0;
    }

    /// Publishes what was written and releases what was taken, also while
    /// unwinding from a panic in `f`.
    struct Commit<'a, In, Out> {
        input: &'a mut Consumer<In>,
        output: &'a mut Producer<Out>,
        taken: usize,
        written: usize,
    }
    impl<In, Out> Drop for Commit<'_, In, Out> {
        fn drop(&mut self) {
            if self.written > 0 {
                self.output.commit_written(self.written);
            }
            if self.taken > 0 {
                self.input.release_read(self.taken);
            }
        }
    }

    let mut commit = Commit {
        input,
        output,
        taken: 0,
        written: 0,
    };
    let (src, src_len) = (commit.input.shared.base(), commit.input.shared.slots.len());
    let (dst, dst_len) = (
        commit.output.shared.base(),
        commit.output.shared.slots.len(),
    );
    let mut read = commit.input.cursor.position();
    let mut write = commit.output.cursor.position();
    let mut left = n;
    while left > 0 {
        let si = (read & commit.input.shared.mask) as usize;
        let di = (write & commit.output.shared.mask) as usize;
        let run = left.min(src_len - si).min(dst_len - di);
        for j in 0..run {
            // SAFETY: `read + j` is published and unread (within `available`),
            // and is read once: `taken` moves past it before `f` runs.
            let item = unsafe { src.add(si + j).read().assume_init() };
            commit.taken += 1;
            let value = f(item);
            // SAFETY: `write + j` is free (within `free`) and written once
            // before the commit publishes it.
            unsafe { dst.add(di + j).write(MaybeUninit::new(value)) };
            commit.written += 1;
        }
        read += run as u64;
        write += run as u64;
        left -= run;
    }
    n
}

/// Free slots reserved by [`Producer::write_chunk_uninit`].
///
/// Dropping it without committing publishes nothing (and drops nothing:
/// values written through [`as_mut_slices`](Self::as_mut_slices) but not
/// committed are leaked).
pub struct WriteChunkUninit<'a, T> {
    producer: &'a mut Producer<T>,
    len: usize,
}

impl<T> WriteChunkUninit<'_, T> {
    /// Slots reserved.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is reserved.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The reserved slots as two runs (the second is empty unless the chunk
    /// wraps around the end of storage).
    #[cfg(not(ringweave_loom))]
    pub fn as_mut_slices(&mut self) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        let shared = &*self.producer.shared;
        let ((a, alen), (b, blen)) = shared.runs(self.producer.cursor.position(), self.len);
        let base = shared.base();
        // SAFETY: the runs lie inside storage (`runs` splits at its end), are
        // disjoint, and are free slots owned by the producer, which `&mut
        // self` borrows exclusively.
        unsafe {
            (
                std::slice::from_raw_parts_mut(base.add(a), alen),
                std::slice::from_raw_parts_mut(base.add(b), blen),
            )
        }
    }

    /// Publishes the first `n` reserved slots.
    ///
    /// # Safety
    ///
    /// The first `n` slots (in the order of [`as_mut_slices`]) must have been
    /// initialised.
    ///
    /// [`as_mut_slices`]: Self::as_mut_slices
    pub unsafe fn commit(self, n: usize) {
        assert!(n <= self.len, "committing {n} of {} slots", self.len);
        self.producer.commit_written(n);
    }

    /// Writes items from `iter` into the reserved slots until either runs out,
    /// and publishes what was written with one store. Returns the count.
    pub fn fill_from_iter<I: IntoIterator<Item = T>>(mut self, iter: I) -> usize {
        let mut iter = iter.into_iter();
        let mut written = 0;
        #[cfg(not(ringweave_loom))]
        {
            // Walk the (at most two) contiguous runs: no masking per item,
            // and two plain loops rather than a `chain`, whose per-item
            // state check kept this loop from being tight.
            let (a, b) = self.as_mut_slices();
            'fill: for run in [a, b] {
                for slot in run {
                    let Some(value) = iter.next() else {
                        break 'fill;
                    };
                    slot.write(value);
                    written += 1;
                }
            }
        }
        #[cfg(ringweave_loom)]
        {
            let shared = &*self.producer.shared;
            let start = self.producer.cursor.position();
            for value in iter.take(self.len) {
                // SAFETY: position `start + written` is one of the reserved
                // free slots.
                unsafe { shared.write(start + written as u64, value) };
                written += 1;
            }
        }
        if written > 0 {
            self.producer.commit_written(written);
        }
        written
    }
}

impl<T> Consumer<T> {
    /// Pops the oldest item, without waiting.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] when there is none.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        if self.cursor.available(&self.shared.index, 1) == 0 {
            return Err(PopError::Empty);
        }
        // SAFETY: we are the consumer, the position is published, and we
        // release it right below without reading it again.
        let value = unsafe { self.shared.take(self.cursor.position()) };
        self.release_read(1);
        Ok(value)
    }

    /// Pops the oldest item, waiting (spin, yield, park) while the ring is
    /// empty.
    ///
    /// # Errors
    ///
    /// [`PopError::Closed`] once the ring is empty and the producer is gone.
    pub fn pop_blocking(&mut self) -> Result<T, PopError> {
        self.pop_until(None)
    }

    /// Like [`pop_blocking`](Self::pop_blocking) but gives up after `timeout`
    /// with [`PopError::Empty`].
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] on timeout, [`PopError::Closed`] as for
    /// `pop_blocking`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopError> {
        self.pop_until(Some(Instant::now() + timeout))
    }

    fn pop_until(&mut self, deadline: Option<Instant>) -> Result<T, PopError> {
        match self.wait_for_items(1, deadline, || false) {
            WaitOutcome::Ready(_) => self.pop(),
            WaitOutcome::Closed => Err(PopError::Closed),
            WaitOutcome::TimedOut | WaitOutcome::Interrupted => Err(PopError::Empty),
        }
    }

    /// Waits until at least `n` items are readable (at most `capacity`; fewer
    /// if the producer is gone and that is all there is), the ring is empty
    /// and closed, `interrupt()` returns `true`, or `deadline` passes.
    ///
    /// See [`Producer::wait_for_slots`] for `interrupt`.
    pub fn wait_for_items(
        &mut self,
        n: usize,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> WaitOutcome {
        // Clamped like `wait_for_slots`: more than `capacity` items can never
        // be readable, so an unclamped wait would outlast a producer that
        // waits for space (a deadlock) or only end at the deadline.
        let want = (n as u64).min(self.capacity).max(1);
        let shared = &*self.shared;
        let cursor = &mut self.cursor;
        let mut outcome = WaitOutcome::TimedOut;
        wait::wait_until(
            shared.index.data_waiter(),
            &shared.data_sleeper,
            self.strategy,
            deadline,
            || {
                let available = cursor.available(&shared.index, want);
                outcome = if available >= want {
                    WaitOutcome::Ready(available as usize)
                } else if shared.index.is_producer_closed() {
                    // The close bit was stored after the last publish, so a
                    // reload now sees everything that will ever arrive.
                    match cursor.available(&shared.index, u64::MAX) {
                        0 => WaitOutcome::Closed,
                        rest => WaitOutcome::Ready(rest as usize),
                    }
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

    /// Readable items now (a lower bound: the producer may be adding more).
    #[inline]
    pub fn slots(&self) -> usize {
        self.cursor.available(&self.shared.index, u64::MAX) as usize
    }

    /// A reference to the oldest item, if any.
    pub fn peek(&self) -> Option<&T> {
        if self.cursor.available(&self.shared.index, 1) == 0 {
            return None;
        }
        // SAFETY: the position is published (`available` saw it with
        // Acquire); releasing it takes `&mut self`, which cannot coexist with the
        // borrow the reference holds.
        Some(unsafe { self.shared.get(self.cursor.position()) })
    }

    /// Whether the producer has been dropped. Items may still be readable.
    #[inline]
    pub fn is_abandoned(&self) -> bool {
        self.shared.index.is_producer_closed()
    }

    /// Sets how this end waits in blocking operations.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// A handle that wakes either end of this ring; see [`RingWaker`].
    #[must_use]
    pub fn waker(&self) -> RingWaker
    where
        T: Send + 'static,
    {
        RingWaker(std::sync::Arc::new(self.shared.clone()))
    }

    /// Borrows exactly `n` readable items.
    ///
    /// Nothing is released to the producer until the chunk is committed or
    /// its iterator dropped; one commit releases all its slots with one store.
    ///
    /// # Errors
    ///
    /// [`ChunkError`] with the number of readable items if fewer than `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = ringweave_ipc::ring::channel::<u32>(8);
    /// tx.write_chunk_uninit(3).unwrap().fill_from_iter([1, 2, 3]);
    /// let sum: u32 = rx.read_chunk(3).unwrap().into_iter().sum();
    /// assert_eq!(sum, 6);
    /// assert_eq!(rx.slots(), 0);
    /// ```
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        let available = self.cursor.available(&self.shared.index, n as u64) as usize;
        if available < n {
            return Err(ChunkError {
                requested: n,
                available,
            });
        }
        Ok(ReadChunk {
            consumer: self,
            len: n,
        })
    }

    /// Releases `n` read positions and wakes a sleeping producer.
    #[inline]
    fn release_read(&mut self, n: usize) {
        self.cursor.release(&self.shared.index, n as u64);
        wait::notify(self.shared.index.space_waiter(), &self.shared.space_sleeper);
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.index.close_consumer();
        wait::notify(self.shared.index.space_waiter(), &self.shared.space_sleeper);
    }
}

/// Readable items borrowed by [`Consumer::read_chunk`].
///
/// Dropping it without committing releases nothing: the items stay in the
/// ring for the next read.
pub struct ReadChunk<'a, T> {
    consumer: &'a mut Consumer<T>,
    len: usize,
}

impl<'a, T> ReadChunk<'a, T> {
    /// Items in the chunk.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th item of the chunk, oldest first.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        // SAFETY: positions `position..position+len` are published and stay
        // unreleased while `self` borrows the consumer.
        Some(unsafe {
            self.consumer
                .shared
                .get(self.consumer.cursor.position() + i as u64)
        })
    }

    /// The items as two runs, oldest first (the second is empty unless the
    /// chunk wraps around the end of storage).
    #[cfg(not(ringweave_loom))]
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let shared = &*self.consumer.shared;
        let ((a, alen), (b, blen)) = shared.runs(self.consumer.cursor.position(), self.len);
        let base = shared.base() as *const T;
        // SAFETY: the runs lie inside storage, hold published (initialised)
        // items, and stay unreleased while `self` borrows the consumer.
        unsafe {
            (
                std::slice::from_raw_parts(base.add(a), alen),
                std::slice::from_raw_parts(base.add(b), blen),
            )
        }
    }

    /// Drops every item in the chunk and releases their slots with one store.
    pub fn commit_all(self) {
        // `drain`, not `into_iter`: an un-iterated `into_iter` takes nothing,
        // so it would drop and release nothing either.
        drop(self.drain());
    }

    /// Moves the items out like [`into_iter`](IntoIterator::into_iter), but items not
    /// taken when the iterator is dropped are dropped and released too.
    pub fn drain(self) -> ReadChunkIntoIter<'a, T> {
        ReadChunkIntoIter {
            consumer: self.consumer,
            len: self.len,
            taken: 0,
            drop_rest: true,
        }
    }
}

/// Moves the items out, oldest first: `for item in chunk { … }`. The slots
/// of the items taken are released with one store when the iterator is
/// dropped; items not taken stay in the ring.
impl<'a, T> IntoIterator for ReadChunk<'a, T> {
    type Item = T;
    type IntoIter = ReadChunkIntoIter<'a, T>;

    fn into_iter(self) -> ReadChunkIntoIter<'a, T> {
        ReadChunkIntoIter {
            consumer: self.consumer,
            len: self.len,
            taken: 0,
            drop_rest: false,
        }
    }
}

impl<T> fmt::Debug for ReadChunk<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadChunk")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Iterator of [`ReadChunk`]'s `into_iter` and [`ReadChunk::drain`].
pub struct ReadChunkIntoIter<'a, T> {
    consumer: &'a mut Consumer<T>,
    len: usize,
    /// Items moved out so far; positions `position..position+taken` are read.
    taken: usize,
    drop_rest: bool,
}

impl<T> Iterator for ReadChunkIntoIter<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.taken == self.len {
            return None;
        }
        let pos = self.consumer.cursor.position() + self.taken as u64;
        self.taken += 1;
        // SAFETY: `pos` is in the chunk and not yet taken; `taken` moves past
        // it so it is never read again before release.
        Some(unsafe { self.consumer.shared.take(pos) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let rest = self.len - self.taken;
        (rest, Some(rest))
    }

    /// Walks the (at most two) contiguous runs of slots: no masking and no
    /// reload of the read position per item, as `next` needs.
    #[cfg(not(ringweave_loom))]
    #[inline]
    fn fold<B, F: FnMut(B, T) -> B>(mut self, init: B, mut f: F) -> B {
        let shared = &*self.consumer.shared;
        let start = self.consumer.cursor.position() + self.taken as u64;
        let ((a, alen), (b, blen)) = shared.runs(start, self.len - self.taken);
        let base = shared.base() as *const T;
        let mut acc = init;
        // Two plain loops, not a `chain`: the compiler keeps each tight (and
        // vectorizes a simple `f`).
        for run in [a..a + alen, b..b + blen] {
            for i in run {
                // Counted before `f` runs, so that if it panics the item is
                // released (by `Drop`) as taken, never read again.
                self.taken += 1;
                // SAFETY: slot `i` is in one of the runs of this chunk's
                // published, not yet taken positions; counting it as taken
                // above means it is never read again before release.
                acc = f(acc, unsafe { base.add(i).read() });
            }
        }
        acc
    }
}

impl<T> ExactSizeIterator for ReadChunkIntoIter<'_, T> {}

impl<T> std::iter::FusedIterator for ReadChunkIntoIter<'_, T> {}

impl<T> fmt::Debug for ReadChunkIntoIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadChunkIntoIter")
            .field("len", &self.len)
            .field("taken", &self.taken)
            .field("drop_rest", &self.drop_rest)
            .finish_non_exhaustive()
    }
}

impl<T> Drop for ReadChunkIntoIter<'_, T> {
    fn drop(&mut self) {
        /// Releases what was taken even if an item's destructor panics below,
        /// so no moved-out item is ever read (and dropped) again.
        struct Release<'i, 'a, T>(&'i mut ReadChunkIntoIter<'a, T>);
        impl<T> Drop for Release<'_, '_, T> {
            fn drop(&mut self) {
                if self.0.taken > 0 {
                    self.0.consumer.release_read(self.0.taken);
                }
            }
        }
        let guard = Release(self);
        if guard.0.drop_rest {
            for item in guard.0.by_ref() {
                drop(item);
            }
        }
    }
}
