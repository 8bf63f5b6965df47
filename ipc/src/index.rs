//! The SPSC index protocol shared by every ring in ringweave.
//!
//! A ring is two monotonically increasing `u64` positions: `write` (the next
//! position the producer fills, stored only by the producer) and `read` (the
//! next position the consumer takes, stored only by the consumer). What a
//! position *means* is up to the ring built on top: a slot in the in-process
//! ring (`ringweave::ring`), a byte in the shared-memory record ring. The
//! protocol is the one of rtrb and the LMAX Disruptor's single-producer
//! sequencer:
//!
//! - `write - read` is the number of occupied units, always `<= capacity`;
//! - each side keeps a private copy of the *other* side's position and only
//!   reloads it when the copy says there is not enough room or data, so a busy
//!   ring touches the other side's cache line once per wrap, not per item;
//! - a side hands units over with one `Release` store of its own position and
//!   sees the other side's hand-overs with an `Acquire` load. Nothing else is
//!   ordered.
//!
//! Positions are `u64` and never wrap in practice (2^64 units at 10^10 units
//! per second is 58 years), so no ABA and no "one slot wasted" trick.
//!
//! [`RingIndex`] is `#[repr(C)]` with fixed-width atomics only, so it can live
//! on the heap or inside a shared segment mapped by several processes. All
//! zero bytes is its valid initial state (empty, open, nobody waiting).

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::cell::Cell;

/// Bit in [`RingIndex`]'s close word: the producer is gone.
const PRODUCER_CLOSED: u32 = 1;
/// Bit in [`RingIndex`]'s close word: the consumer is gone.
const CONSUMER_CLOSED: u32 = 2;

/// The shared words of one SPSC ring.
///
/// Each field sits on its own cache line pair (`CachePadded` is 128 bytes on
/// x86_64, where the adjacent-line prefetcher pulls lines in pairs), so the
/// producer's stores never invalidate the consumer's line and vice versa.
#[repr(C)]
#[derive(Default)]
pub struct RingIndex {
    /// Next position the producer writes. Stored only by the producer.
    write: CachePadded<AtomicU64>,
    /// Next position the consumer reads. Stored only by the consumer.
    /// Invariant: `read <= write <= read + capacity`.
    read: CachePadded<AtomicU64>,
    /// Waiter flag of a consumer sleeping until data arrives (a futex word
    /// when the index is in shared memory). See [`crate::wait`].
    data_waiter: CachePadded<AtomicU32>,
    /// Waiter flag of a producer sleeping until space frees up.
    space_waiter: CachePadded<AtomicU32>,
    /// `PRODUCER_CLOSED | CONSUMER_CLOSED` bits.
    closed: CachePadded<AtomicU32>,
}

impl RingIndex {
    /// A new, empty, open index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Flag word of a consumer waiting for data.
    #[inline]
    pub fn data_waiter(&self) -> &AtomicU32 {
        &self.data_waiter
    }

    /// Flag word of a producer waiting for space.
    #[inline]
    pub fn space_waiter(&self) -> &AtomicU32 {
        &self.space_waiter
    }

    /// Marks the producer side closed: no more data will be published.
    ///
    /// Release: everything the producer published before closing is visible
    /// to whoever sees the close bit with [`Self::is_producer_closed`].
    pub fn close_producer(&self) {
        // SYNC POINT: close. Pairs with the Acquire in `is_producer_closed`.
        self.closed.fetch_or(PRODUCER_CLOSED, Ordering::Release);
    }

    /// Marks the consumer side closed: nothing published will be read.
    pub fn close_consumer(&self) {
        // SYNC POINT: close. Pairs with the Acquire in `is_consumer_closed`.
        self.closed.fetch_or(CONSUMER_CLOSED, Ordering::Release);
    }

    /// Whether the producer has closed. A consumer that sees `true` and then
    /// reloads `write` sees every unit the producer ever published.
    #[inline]
    pub fn is_producer_closed(&self) -> bool {
        // SYNC POINT: close. Pairs with the Release in `close_producer`.
        self.closed.load(Ordering::Acquire) & PRODUCER_CLOSED != 0
    }

    /// Whether the consumer has closed.
    #[inline]
    pub fn is_consumer_closed(&self) -> bool {
        // SYNC POINT: close. Pairs with the Release in `close_consumer`.
        self.closed.load(Ordering::Acquire) & CONSUMER_CLOSED != 0
    }

    /// Reopens both sides. Only for an owner that holds both ends exclusively
    /// (a pipeline re-wiring a frozen ring); `&mut` proves it.
    pub fn reopen(&mut self) {
        // Relaxed: `&mut self` excludes every other accessor.
        self.closed.store(0, Ordering::Relaxed);
    }

    /// Both positions, `(read, write)`, for an observer (metrics, a
    /// coordinator holding both ends). Not a consistent snapshot while both
    /// sides run; `read` is loaded first so that `read <= write` holds.
    pub fn positions(&self) -> (u64, u64) {
        // Acquire on both: a reader of the pair also reads the slots between
        // them when it holds both ends (the pipeline coordinator), so it must
        // see the stores that filled and emptied them.
        let read = self.read.load(Ordering::Acquire);
        let write = self.write.load(Ordering::Acquire);
        (read, write)
    }
}

impl std::fmt::Debug for RingIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (read, write) = self.positions();
        f.debug_struct("RingIndex")
            .field("read", &read)
            .field("write", &write)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The producer's private half of the protocol.
#[derive(Debug)]
pub struct ProducerCursor {
    /// Our position: equal to `RingIndex::write` after every `publish`.
    write: u64,
    /// Last `read` we loaded. Never ahead of the real `read`, so
    /// `capacity - (write - cached_read)` under-estimates the free space.
    /// A `Cell`, so that observers such as `Producer::slots` can refresh
    /// it through `&self` (the cursor is used by one thread at a time).
    cached_read: Cell<u64>,
    /// Units in the ring.
    capacity: u64,
}

impl ProducerCursor {
    /// Attaches to `index` as its one producer.
    ///
    /// The caller must be the only producer, and must have a happens-before
    /// edge to the previous producer's last `publish` (taking over a handle
    /// through a thread spawn, a join or a mutex is enough).
    #[must_use]
    pub fn attach(index: &RingIndex, capacity: u64) -> Self {
        // Relaxed: only producers store `write`, and the caller is ordered
        // after the previous one (see above).
        let write = index.write.load(Ordering::Relaxed);
        // SYNC POINT: slot-release. Pairs with the Release in
        // `ConsumerCursor::release`.
        let cached_read = index.read.load(Ordering::Acquire);
        debug_assert!(write - cached_read <= capacity);
        Self {
            write,
            cached_read: Cell::new(cached_read),
            capacity,
        }
    }

    /// Position of the next unit to write.
    #[inline]
    pub fn position(&self) -> u64 {
        self.write
    }

    /// Capacity in units.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Free units, at least as many as the consumer had released when this
    /// was called if fewer than `want` seemed free.
    ///
    /// Loads the consumer's position only when the cached copy shows fewer
    /// than `want` free units.
    #[inline]
    pub fn free(&self, index: &RingIndex, want: u64) -> u64 {
        let free = self.capacity - (self.write - self.cached_read.get());
        if free >= want {
            return free;
        }
        // SYNC POINT: slot-release. Pairs with the Release in
        // `ConsumerCursor::release`: the consumer has finished reading the
        // units before `read`, so we may overwrite them.
        let read = index.read.load(Ordering::Acquire);
        self.cached_read.set(read);
        debug_assert!(self.write - read <= self.capacity);
        self.capacity - (self.write - read)
    }

    /// Whether the consumer has released everything published so far: it
    /// has nothing left to do, and is waiting (or about to) for more. A
    /// producer that batches uses this to publish at once rather than hold
    /// units back from an idle consumer ("smart batching").
    ///
    /// A heuristic, not a synchronisation: Relaxed, because nothing is read
    /// on the strength of it. The load touches the consumer's line, which
    /// the consumer writes once per release, so while it is busy the line
    /// stays in this core's cache and the check costs an L1 hit.
    #[inline]
    pub fn is_drained(&self, index: &RingIndex) -> bool {
        index.read.load(Ordering::Relaxed) == self.write
    }

    /// Hands `n` written units to the consumer with one store.
    ///
    /// The caller must have initialised the units `position()..position()+n`
    /// and checked with [`free`](Self::free) that they were free.
    #[inline]
    pub fn publish(&mut self, index: &RingIndex, n: u64) {
        debug_assert!(self.write + n - self.cached_read.get() <= self.capacity);
        self.write += n;
        #[cfg(not(feature = "loom-broken-publish"))]
        // SYNC POINT: slot-publish. Pairs with the Acquire in
        // `ConsumerCursor::available`: the unit contents written before this
        // store are visible to a consumer that loads the new `write`.
        index.write.store(self.write, Ordering::Release);
        #[cfg(feature = "loom-broken-publish")]
        // Deliberately wrong, for loom-tests/tests/broken.rs only: without
        // Release the consumer may read a slot before its contents.
        index.write.store(self.write, Ordering::Relaxed);
    }
}

/// The consumer's private half of the protocol.
#[derive(Debug)]
pub struct ConsumerCursor {
    /// Our position: equal to `RingIndex::read` after every `release`.
    read: u64,
    /// Last `write` we loaded. Never ahead of the real `write`.
    /// A `Cell`, as `ProducerCursor::cached_read`.
    cached_write: Cell<u64>,
}

impl ConsumerCursor {
    /// Attaches to `index` as its one consumer. Same contract as
    /// [`ProducerCursor::attach`], with the previous consumer.
    #[must_use]
    pub fn attach(index: &RingIndex) -> Self {
        // Relaxed: only consumers store `read`, and the caller is ordered
        // after the previous one.
        let read = index.read.load(Ordering::Relaxed);
        // SYNC POINT: slot-publish. Pairs with the Release in
        // `ProducerCursor::publish`.
        let cached_write = index.write.load(Ordering::Acquire);
        Self {
            read,
            cached_write: Cell::new(cached_write),
        }
    }

    /// Position of the next unit to read.
    #[inline]
    pub fn position(&self) -> u64 {
        self.read
    }

    /// Readable units, reloading the producer's position only when the cached
    /// copy shows fewer than `want`.
    #[inline]
    pub fn available(&self, index: &RingIndex, want: u64) -> u64 {
        let available = self.cached_write.get() - self.read;
        if available >= want {
            return available;
        }
        // SYNC POINT: slot-publish. Pairs with the Release in
        // `ProducerCursor::publish`: units before `write` are initialised.
        let write = index.write.load(Ordering::Acquire);
        self.cached_write.set(write);
        write - self.read
    }

    /// Hands `n` read units back to the producer with one store.
    ///
    /// The caller must be done with the units `position()..position()+n`
    /// (moved out or dropped) and must have seen them with
    /// [`available`](Self::available).
    #[inline]
    pub fn release(&mut self, index: &RingIndex, n: u64) {
        debug_assert!(self.read + n <= self.cached_write.get());
        self.read += n;
        // SYNC POINT: slot-release. Pairs with the Acquire in
        // `ProducerCursor::free`: our reads of the units happen before the
        // producer overwrites them.
        index.read.store(self.read, Ordering::Release);
    }
}
