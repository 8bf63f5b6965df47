//! An SPSC ring of rkyv records in a shared-memory [`Segment`], for a
//! producer and a consumer in different processes (or threads).
//!
//! It is the in-process ring's protocol (`ringweave::ring`) over bytes: the
//! same [`RingIndex`] — two monotonic positions, here counting bytes, each side
//! caching the other's, one `Release` store per hand-over — lives at the start
//! of the ring's region in the segment, followed by a power-of-two byte arena.
//! All-zero bytes is a valid empty ring, so a fresh segment needs no
//! initialisation. Records are framed as [`crate::record`] describes: a
//! 16-byte length header, the archive, padding to 16 bytes; a frame that would
//! cross the end of the arena is preceded by a padding frame instead, so
//! every archive is contiguous and can be read in place.
//!
//! - The [`RecordProducer`] serializes each record *in place* into the free
//!   bytes. [`push`](RecordProducer::push) stages records without showing
//!   them to the consumer; [`flush`](RecordProducer::flush) publishes
//!   everything staged with one store and at most one wake-up.
//! - The [`RecordConsumer`] validates each archive with bytecheck (unless told
//!   to trust its producer), then lends it out as `&Archived<T>` or
//!   deserializes it; [`read_batch`](RecordConsumer::read_batch) releases many
//!   records with one store.
//! - Blocking operations wait in tiers (spin, yield, futex on the ring's
//!   waiter flags, see [`crate::wait`] and [`crate::futex`]) and take an
//!   `interrupt` closure, re-checked at least every
//!   [`poll interval`](RecordConsumer::set_poll_interval), so that a side
//!   waiting on a process that was killed finds out (a dead process closes
//!   nothing).
//! - Closing: dropping (or [`close`](RecordProducer::close)-ing) the producer
//!   publishes what is staged and sets the producer's close bit; a consumer
//!   that finds the ring empty and closed gets [`PopError::Closed`], the end
//!   of the stream. Dropping the consumer sets its bit, and a producer that
//!   waits for space gets [`PushError::Abandoned`].
//!
//! # Handles across `fork`
//!
//! The [`RecordRing`] descriptor holds the segment (an `Arc`) and checks the
//! ring's place in it. The handles it makes hold only raw pointers into the
//! mapping, plus their private cursor: a handle made in the parent, used
//! there, then moved into a child's closure (see
//! [`Worker::spawn`](crate::worker::Worker::spawn)) keeps working in the child,
//! because a forked child has the same mapping at the same address. That is
//! why making a handle is `unsafe`; the contract is on
//! [`RecordRing::producer`].
//!
//! # Examples
//!
//! ```
//! use ringweave_ipc::record_ring::{PopError, RecordRing};
//! use ringweave_ipc::segment::{Segment, SegmentLayout};
//! use std::sync::Arc;
//!
//! let mut layout = SegmentLayout::new();
//! let offset = layout.reserve(RecordRing::layout(4096).unwrap()).unwrap();
//! let segment = Arc::new(Segment::create("doc", layout.size()).unwrap());
//! let ring = RecordRing::new(&segment, offset, 4096).unwrap();
//! // SAFETY: one producer and one consumer, used on this thread, dropped
//! // before `ring` (which keeps the segment mapped).
//! let (mut tx, mut rx) = unsafe { (ring.producer::<String>(), ring.consumer::<String>()) };
//!
//! tx.push(&"hello".to_string()).unwrap();
//! tx.push(&"world".to_string()).unwrap();
//! assert_eq!(rx.pop(), Err(PopError::Empty)); // staged, not yet published
//! tx.flush();
//! assert_eq!(rx.read_with(|s| s.len()), Ok(5)); // in place, no String made
//! assert_eq!(rx.pop().unwrap(), "world");
//! drop(tx);
//! assert_eq!(rx.pop(), Err(PopError::Closed));
//! ```

mod consumer;
mod producer;

pub use consumer::RecordConsumer;
pub use producer::RecordProducer;

use crate::futex::FutexSleeper;
use crate::index::RingIndex;
use crate::record::{frame_len, Record, RecordError, FRAME_HEADER, PAD, RECORD_ALIGN};
use crate::segment::{RegionError, Segment};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::wait::{self, WaitStrategy};
use crossbeam_utils::CachePadded;
use rkyv::rancor;
use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shared words at the start of a ring's region.
#[repr(C)]
struct RingHeader {
    /// Positions (in bytes), waiter flags and close bits.
    index: RingIndex,
    /// Arena bytes, set by the first [`RecordRing::new`] on this region (0
    /// before), so a second descriptor with another capacity is refused.
    capacity: CachePadded<AtomicU64>,
}

/// Offset of the arena from the start of the ring's region.
const ARENA_OFFSET: usize = RecordRing::ARENA_OFFSET;

const _: () = assert!(std::mem::align_of::<RingHeader>() <= RecordRing::ALIGN);
const _: () = assert!(RecordRing::ALIGN <= Segment::MAX_ALIGN);
const _: () = assert!(ARENA_OFFSET % RECORD_ALIGN == 0);

/// How often a blocking operation re-checks its `interrupt` while asleep,
/// unless changed with `set_poll_interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Error of [`RecordRing::new`] and [`RecordRing::layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRingError {
    /// The capacity is not a power of two in
    /// [`MIN_CAPACITY`](RecordRing::MIN_CAPACITY)`..=`[`MAX_CAPACITY`](RecordRing::MAX_CAPACITY).
    Capacity {
        /// Bytes asked for.
        capacity: usize,
    },
    /// The offset is not a multiple of [`RecordRing::ALIGN`].
    Misaligned {
        /// Payload offset given.
        offset: usize,
        /// [`RecordRing::ALIGN`].
        align: usize,
    },
    /// The region does not fit in the segment.
    Region(RegionError),
    /// A ring with another capacity already lives at this offset.
    CapacityMismatch {
        /// Capacity recorded in the segment.
        found: u64,
        /// Capacity asked for.
        expected: u64,
    },
}

impl fmt::Display for RecordRingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Capacity { capacity } => write!(
                f,
                "record ring capacity {capacity} is not a power of two in {}..={}",
                RecordRing::MIN_CAPACITY,
                RecordRing::MAX_CAPACITY
            ),
            Self::Misaligned { offset, align } => write!(
                f,
                "record ring offset {offset} is not a multiple of {align}"
            ),
            Self::Region(e) => write!(f, "record ring region: {e}"),
            Self::CapacityMismatch { found, expected } => write!(
                f,
                "a record ring of {found} bytes already lives here, {expected} requested"
            ),
        }
    }
}

impl std::error::Error for RecordRingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Region(e) => Some(e),
            _ => None,
        }
    }
}

/// Error of the producer's push operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Not enough free bytes (for a timed push: none freed before the
    /// deadline). Records staged before stay staged.
    Full,
    /// The consumer closed its end; nothing pushed now would be read.
    Abandoned,
    /// The caller's `interrupt` returned `true` while waiting for space.
    Interrupted,
    /// The record itself was refused (too large, or its serialization
    /// failed). Nothing of it was staged.
    Record(RecordError),
}

impl From<RecordError> for PushError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("record ring is full"),
            Self::Abandoned => f.write_str("record ring's consumer is gone"),
            Self::Interrupted => f.write_str("wait for space in a record ring was interrupted"),
            Self::Record(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Record(e) => Some(e),
            _ => None,
        }
    }
}

/// Error of the consumer's read operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PopError {
    /// No record (for a timed read: none arrived before the deadline).
    Empty,
    /// The ring is empty and its producer closed: the end of the stream.
    Closed,
    /// The caller's `interrupt` returned `true` while waiting for a record.
    Interrupted,
    /// The next record is damaged. It stays in the ring (see
    /// [`RecordConsumer::skip`]); the same error comes back until it is
    /// skipped.
    Record(RecordError),
}

impl From<RecordError> for PopError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("record ring is empty"),
            Self::Closed => f.write_str("record ring is empty and its producer is gone"),
            Self::Interrupted => f.write_str("wait for a record was interrupted"),
            Self::Record(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Record(e) => Some(e),
            _ => None,
        }
    }
}

/// How a wait for space or records ended: the in-process ring's type (for
/// a record ring, `Ready` holds the free (producer) or readable (consumer)
/// bytes seen). The push and pop errors differ from the ring's on purpose:
/// a record ring also refuses or finds damaged records, and its waits take
/// an interrupt, while the in-process ring hands a refused value back.
pub use crate::ring::WaitOutcome;

/// A record ring's place in a segment: checks it, and makes its handles.
///
/// Cheap to clone (an `Arc` and two pointers). Holding one keeps the segment
/// mapped in this process.
#[derive(Clone)]
pub struct RecordRing {
    segment: Arc<Segment>,
    raw: RawRing,
}

// SAFETY: the descriptor's own methods touch the ring only through the
// atomics of its `RingIndex` and capacity word, which any thread may use; its
// `unsafe` methods carry their own contracts. The raw pointers point into the
// mapping that the `Arc<Segment>` keeps alive.
unsafe impl Send for RecordRing {}
// SAFETY: as above; `&RecordRing` offers nothing more than atomics.
unsafe impl Sync for RecordRing {}

impl fmt::Debug for RecordRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (read, write) = self.positions();
        f.debug_struct("RecordRing")
            .field("capacity", &self.raw.capacity)
            .field("read", &read)
            .field("write", &write)
            .finish()
    }
}

impl RecordRing {
    /// Alignment of a ring's region in its segment.
    pub const ALIGN: usize = 128;
    /// Smallest arena, in bytes.
    pub const MIN_CAPACITY: usize = 64;
    /// Largest arena, in bytes (1 TiB).
    pub const MAX_CAPACITY: usize = 1 << 40;
    /// Offset of the arena from the start of the ring's region; the ring's
    /// header (a [`RingIndex`] and the capacity word) comes before it. The
    /// frame at ring position `p` starts at arena offset `p % capacity`.
    pub const ARENA_OFFSET: usize = std::mem::size_of::<RingHeader>().next_multiple_of(Self::ALIGN);

    /// The region a ring with an arena of `capacity` bytes needs: reserve it
    /// with [`SegmentLayout::reserve`](crate::segment::SegmentLayout::reserve).
    ///
    /// # Errors
    ///
    /// [`RecordRingError::Capacity`] unless `capacity` is a power of two in
    /// `MIN_CAPACITY..=MAX_CAPACITY`.
    pub fn layout(capacity: usize) -> Result<Layout, RecordRingError> {
        if !capacity.is_power_of_two()
            || !(Self::MIN_CAPACITY..=Self::MAX_CAPACITY).contains(&capacity)
        {
            return Err(RecordRingError::Capacity { capacity });
        }
        Layout::from_size_align(ARENA_OFFSET + capacity, Self::ALIGN)
            .map_err(|_| RecordRingError::Capacity { capacity })
    }

    /// Describes the ring whose region starts at payload `offset` of
    /// `segment`, with an arena of `capacity` bytes.
    ///
    /// The first call on a region (all zero bytes: an empty, open ring)
    /// records the capacity there; later calls, in any process, must agree.
    ///
    /// Choosing a capacity: the producer writes over lines the consumer read
    /// a lap before. While the arena fits in the consumer core's cache those
    /// lines are still there, and each must be taken back from that core —
    /// cheap between neighbouring cores, dear between far-apart ones (other
    /// chiplets or sockets). The producer prefetches small records' lines
    /// ahead of it, which hides most of that; large records pay it. An arena
    /// larger than the consumer's caches sidesteps it, at the price of
    /// memory traffic (docs/PERF.md, "Measured design choices", has the
    /// numbers).
    ///
    /// # Errors
    ///
    /// [`RecordRingError::Capacity`], [`RecordRingError::Misaligned`],
    /// [`RecordRingError::Region`] if the region is not inside the segment,
    /// [`RecordRingError::CapacityMismatch`].
    pub fn new(
        segment: &Arc<Segment>,
        offset: usize,
        capacity: usize,
    ) -> Result<Self, RecordRingError> {
        let layout = Self::layout(capacity)?;
        if offset % Self::ALIGN != 0 {
            return Err(RecordRingError::Misaligned {
                offset,
                align: Self::ALIGN,
            });
        }
        let base = segment
            .region(offset, layout.size())
            .map_err(RecordRingError::Region)?;
        let raw = RawRing {
            header: base.cast(),
            // SAFETY: `ARENA_OFFSET + capacity` bytes from `base` are inside
            // the segment (checked by `region`).
            arena: unsafe { base.add(ARENA_OFFSET) },
            capacity: capacity as u64,
        };
        // Relaxed: the word is a consistency check and publishes nothing.
        match raw.header().capacity.compare_exchange(
            0,
            capacity as u64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => {}
            Err(found) if found == capacity as u64 => {}
            Err(found) => {
                return Err(RecordRingError::CapacityMismatch {
                    found,
                    expected: capacity as u64,
                })
            }
        }
        // Before any handle exists: notifiers of a registered process get
        // away with compiler fences (see `crate::fence`).
        crate::fence::init_shared();
        Ok(Self {
            segment: Arc::clone(segment),
            raw,
        })
    }

    /// Bytes in the arena.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.raw.capacity as usize
    }

    /// The largest archive, in bytes, a record may have in this ring.
    #[inline]
    pub fn max_record_len(&self) -> usize {
        self.raw.max_record_len()
    }

    /// The segment the ring lives in.
    #[inline]
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// `(read, write)` byte positions. Unread records (and padding) lie in
    /// `read..write`; staged records of a producer are beyond `write`. Not a
    /// consistent snapshot while both ends run.
    pub fn positions(&self) -> (u64, u64) {
        self.raw.index().positions()
    }

    /// Whether the producer has closed its end.
    pub fn is_producer_closed(&self) -> bool {
        self.raw.index().is_producer_closed()
    }

    /// Whether the consumer has closed its end.
    pub fn is_consumer_closed(&self) -> bool {
        self.raw.index().is_consumer_closed()
    }

    /// Wakes whichever end sleeps, in whatever process, so that it re-checks
    /// its `interrupt`. Make the condition true before calling this.
    pub fn wake(&self) {
        self.raw.wake_both();
    }

    /// Makes the producer end.
    ///
    /// # Safety
    ///
    /// - **Mapping.** The handle must not be used, in any process, after the
    ///   segment is unmapped there: in the process that made it, keep this
    ///   descriptor (or another `Arc` of the segment) alive longer; a forked
    ///   child inherits the mapping and keeps it until it exits, since a
    ///   worker leaves with `_exit` and never unmaps.
    /// - **One producer.** At most one producer handle of this ring is in use
    ///   at a time, across all processes. A handle moved into a forked child
    ///   (captured by its closure) is that child's; the parent must not use
    ///   or make another until the child is gone or has handed the end back
    ///   through a synchronising protocol (a barrier whose acknowledgement it
    ///   reads with `Acquire`, or `waitpid` having reaped it).
    /// - **Ordering.** Everything the previous producer did happens before
    ///   this call (as for [`ProducerCursor::attach`](crate::index::ProducerCursor::attach)).
    #[must_use]
    pub unsafe fn producer<T: Record>(&self) -> RecordProducer<T> {
        RecordProducer::attach(self.raw)
    }

    /// Makes the consumer end.
    ///
    /// # Safety
    ///
    /// As for [`producer`](Self::producer), with "consumer" for "producer".
    #[must_use]
    pub unsafe fn consumer<T: Record>(&self) -> RecordConsumer<T> {
        RecordConsumer::attach(self.raw)
    }

    /// Reads every published, unread record without consuming it: each is
    /// validated and deserialized, and the ring is left as it was.
    ///
    /// This is the pipeline coordinator's view of a ring whose ends are held
    /// elsewhere (a paused worker), to copy its contents out at a mode switch
    /// and still be able to roll back.
    ///
    /// # Safety
    ///
    /// While the iterator lives, the consumer (wherever it is) must not
    /// release anything: it is paused, and its last release happens before
    /// this call (for a worker: it acknowledged a barrier that the caller
    /// read with `Acquire`). The producer may keep publishing — records it
    /// publishes after this call are not yielded — but records it has only
    /// *staged* are not visible: pause producers after a
    /// [`flush`](RecordProducer::flush). The segment stays mapped (this
    /// descriptor sees to that).
    pub unsafe fn peek_unread<T: Record>(&self) -> Unread<'_, T> {
        let (read, write) = self.raw.index().positions();
        Unread::new(self.raw, read, write, false)
    }

    /// Clears both close bits, so a ring whose ends closed (or whose worker
    /// was killed) can get new handles after a rolled-back switch. Positions
    /// and records are kept.
    ///
    /// # Safety
    ///
    /// No handle of this ring is in use in any process during the call (the
    /// processes that held them are paused for good or reaped).
    pub unsafe fn reopen(&self) {
        // SAFETY: the caller guarantees nobody else accesses the index now,
        // so a unique reference to it is sound.
        unsafe { (*self.raw.header.as_ptr()).index.reopen() };
    }
}

/// The raw view of a ring that the descriptor and the handles share.
///
/// Invariant: the mapping holding `header` and the arena is alive in this
/// process for as long as a `RawRing` is used (the descriptor's `Arc`, or the
/// contract of [`RecordRing::producer`]).
#[derive(Clone, Copy, Debug)]
struct RawRing {
    /// Ring header at the start of the region; `ALIGN`-aligned.
    header: NonNull<RingHeader>,
    /// Start of the arena; `ALIGN`-aligned, `capacity` bytes.
    arena: NonNull<u8>,
    /// Bytes in the arena; a power of two.
    capacity: u64,
}

/// A record's frame, found by [`RawRing::frame`].
#[derive(Clone, Copy, Debug)]
struct Located {
    /// Ring position of the frame.
    pos: u64,
    /// Arena offset of the archive.
    offset: usize,
    /// Bytes of the archive.
    len: usize,
    /// Ring position after the frame.
    end: u64,
}

/// What [`RawRing::frame`] found at a position.
enum Frame {
    /// Padding up to (ring position) `end`, the next arena start.
    Pad { end: u64 },
    /// A record.
    Record(Located),
}

impl RawRing {
    #[inline]
    fn header(&self) -> &RingHeader {
        // SAFETY: the mapping is alive (type invariant) and the header holds
        // only atomics, valid for any bytes.
        unsafe { self.header.as_ref() }
    }

    #[inline]
    fn index(&self) -> &RingIndex {
        &self.header().index
    }

    #[inline]
    fn offset(&self, pos: u64) -> usize {
        (pos & (self.capacity - 1)) as usize
    }

    #[inline]
    fn max_record_len(&self) -> usize {
        self.capacity as usize - FRAME_HEADER
    }

    fn wake_both(&self) {
        wait::notify(self.index().data_waiter(), &FutexSleeper::new());
        wait::notify(self.index().space_waiter(), &FutexSleeper::new());
    }

    /// Asks the CPU for the arena line holding `offset` in a writable state,
    /// without waiting for it: a hint that never faults and changes nothing
    /// a program can observe (a no-op where we have no such hint).
    #[inline]
    fn prefetch_write(&self, offset: usize) {
        debug_assert!(offset < self.capacity as usize);
        let _line = self.arena.as_ptr().wrapping_add(offset);
        #[cfg(all(target_arch = "x86_64", not(miri), not(ringweave_loom)))]
        // SAFETY: PREFETCHW reads and writes no memory architecturally and
        // cannot fault; CPUs without it execute the opcode as a NOP.
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) _line,
                options(nostack, preserves_flags, readonly)
            );
        }
        #[cfg(all(target_arch = "aarch64", not(miri), not(ringweave_loom)))]
        // SAFETY: a prefetch-for-store hint; it accesses no memory
        // architecturally and cannot fault.
        unsafe {
            std::arch::asm!(
                "prfm pstl1keep, [{0}]",
                in(reg) _line,
                options(nostack, preserves_flags, readonly)
            );
        }
    }

    /// Writes a frame header with length word `len` at arena `offset`.
    ///
    /// # Safety
    ///
    /// The caller is the producer and `offset..offset + 16` is free.
    #[inline]
    unsafe fn write_header(&self, offset: usize, len: u64) {
        debug_assert!(
            offset % RECORD_ALIGN == 0 && offset + FRAME_HEADER <= self.capacity as usize
        );
        // SAFETY: in bounds and 16-aligned (arena is ALIGN-aligned, offset a
        // multiple of 16); the bytes are free, so ours to write.
        unsafe {
            self.arena
                .as_ptr()
                .add(offset)
                .cast::<[u64; 2]>()
                .write([len.to_le(), (!len).to_le()]);
        }
    }

    /// Decodes the frame at ring position `pos`, of which `readable` bytes
    /// (from `pos` on) are published.
    ///
    /// # Safety
    ///
    /// `pos..pos + readable` is published and not released while the caller
    /// reads it.
    unsafe fn frame(&self, pos: u64, readable: u64) -> Result<Frame, RecordError> {
        let offset = self.offset(pos);
        let (len, check) = if readable >= FRAME_HEADER as u64 && offset % RECORD_ALIGN == 0 {
            // SAFETY: 16 published bytes at a 16-aligned in-bounds offset
            // (`offset < capacity`, both multiples of 16).
            let [len, check] = unsafe { self.arena.as_ptr().add(offset).cast::<[u64; 2]>().read() };
            (u64::from_le(len), u64::from_le(check))
        } else {
            // Positions only ever advance by whole frames; this is damage
            // (or a foreign writer), reported with what we have.
            (0, 0)
        };
        let damaged = RecordError::Frame {
            position: pos,
            len,
            check,
            readable,
        };
        if check != !len {
            return Err(damaged);
        }
        let to_end = self.capacity - offset as u64;
        if len == PAD {
            // The producer pads only when a frame does not fit before the end,
            // which never happens at the arena start.
            if offset == 0 || to_end > readable {
                return Err(damaged);
            }
            return Ok(Frame::Pad { end: pos + to_end });
        }
        if len > self.max_record_len() as u64 {
            return Err(damaged);
        }
        let size = frame_len(len as usize) as u64;
        if size > to_end || size > readable {
            return Err(damaged);
        }
        Ok(Frame::Record(Located {
            pos,
            offset: offset + FRAME_HEADER,
            len: len as usize,
            end: pos + size,
        }))
    }

    /// The archive of `at`, validated unless `trusted`.
    ///
    /// # Safety
    ///
    /// `at` came from [`frame`](Self::frame) and its bytes stay published and
    /// unreleased for `'r`. If `trusted`, they hold a valid archive of `T`.
    unsafe fn access<'r, T: Record>(
        &self,
        at: Located,
        trusted: bool,
    ) -> Result<&'r rkyv::Archived<T>, RecordError> {
        // SAFETY: `frame` checked that the archive lies inside the arena and
        // the published bytes; the caller keeps it unreleased for `'r`.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.arena.as_ptr().add(at.offset), at.len) };
        if trusted {
            // SAFETY: the caller vouches for the bytes.
            Ok(unsafe { rkyv::access_unchecked::<rkyv::Archived<T>>(bytes) })
        } else {
            check_archive::<T>(bytes).map_err(|message| RecordError::Invalid {
                position: at.pos,
                len: at.len,
                message,
            })
        }
    }

    /// The record at `at`, validated unless `trusted`, deserialized.
    ///
    /// # Safety
    ///
    /// As for [`access`](Self::access).
    unsafe fn read<T: Record>(&self, at: Located, trusted: bool) -> Result<T, RecordError> {
        // SAFETY: forwarded.
        let archived = unsafe { self.access::<T>(at, trusted) }?;
        rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| RecordError::Deserialize {
            position: at.pos,
            message: e.to_string(),
        })
    }
}

/// Validates `bytes` as an archive of `T` and returns its root: what
/// `rkyv::access` does, with the same checks, minus its per-call set-up.
///
/// rkyv's `access` places the root at the archive's end, checks that it is
/// in bounds and aligned, then validates it inside a subtree that ends where
/// the root begins (everything the root points to lies before it). That is
/// written out here: bounds and alignment checked by hand, then the root's
/// `check_bytes` under a validator whose range is `bytes[..root]`. The
/// generic path through `access` cost about 2.4 ns more per 64-byte record
/// than an unchecked read, this one about 0.5 ns (see docs/PERF.md).
#[inline]
pub fn check_archive<T: Record>(bytes: &[u8]) -> Result<&rkyv::Archived<T>, String> {
    use rkyv::bytecheck::CheckBytes;
    use rkyv::validation::{archive::ArchiveValidator, shared::SharedValidator, Validator};
    let size = std::mem::size_of::<rkyv::Archived<T>>();
    let align = std::mem::align_of::<rkyv::Archived<T>>();
    let Some(root) = bytes.len().checked_sub(size) else {
        return Err(format!(
            "archive of {} bytes is smaller than its root ({size} bytes)",
            bytes.len()
        ));
    };
    let ptr = bytes.as_ptr().wrapping_add(root);
    if (ptr as usize) % align != 0 {
        return Err(format!(
            "root at offset {root} is not aligned to {align} bytes"
        ));
    }
    let mut validator = Validator::new(
        ArchiveValidator::new(&bytes[..root]),
        SharedValidator::new(),
    );
    // SAFETY: `ptr..ptr + size` lies inside `bytes` (`root + size ==
    // bytes.len()`) and is aligned for the archived type (checked above), as
    // `check_bytes` requires.
    unsafe {
        <rkyv::Archived<T> as CheckBytes<_>>::check_bytes(
            ptr.cast::<rkyv::Archived<T>>(),
            rancor::Strategy::<_, rancor::Error>::wrap(&mut validator),
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: validated above.
    Ok(unsafe { &*ptr.cast::<rkyv::Archived<T>>() })
}

/// How a record ring's ends wait unless told otherwise
/// ([`RecordProducer::set_wait_strategy`]): spin 16 times, yield 1024 times
/// (on the order of 100 µs with nothing else to run), then sleep on the
/// futex.
///
/// Longer than [`WaitStrategy::default`]'s 64 yields on purpose. A side
/// that sleeps is woken by the other side's `FUTEX_WAKE`, and the scheduler
/// tends to wake it on the waker's CPU; from then on the two processes share
/// one CPU while the other idles, and a parent → child stream ran at a
/// quarter of its speed in about half the runs (docs/PERF.md). A side that
/// keeps yielding through the other side's next flush never sleeps, stays
/// runnable, and is moved to (or stays on) the idle CPU. Where many stages
/// share two cores, as in the engine's distributed mode, a shorter yield
/// phase is better; the engine sets `WaitStrategy::default()` on its rings.
pub const DEFAULT_WAIT: WaitStrategy = WaitStrategy {
    spins: 16,
    yields: 1024,
};

/// Waits like [`wait::wait_until`] with a [`FutexSleeper`], but never sleeps
/// longer than `poll` at a time, so that `ready` (which checks the caller's
/// interrupt) runs again even if nobody wakes us — a killed process never
/// will.
fn wait_polled(
    flag: &crate::sync::atomic::AtomicU32,
    mut strategy: WaitStrategy,
    deadline: Option<Instant>,
    poll: Option<Duration>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    // No clock read when there is nothing to wait for.
    if ready() {
        return true;
    }
    loop {
        let slice_end = poll.map(|p| Instant::now() + p);
        let until = match (deadline, slice_end) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        if wait::wait_until(flag, &FutexSleeper::new(), strategy, until, &mut ready) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        // Spun and yielded once already; from now on only the futex.
        strategy = WaitStrategy::SLEEP_AT_ONCE;
    }
}

/// Published records read without consuming them: from
/// [`RecordRing::peek_unread`] or [`RecordConsumer::iter_unread`].
///
/// Yields each record validated (unless the consumer it came from trusts its
/// producer) and deserialized. A record that fails validation is yielded as
/// an error and skipped; a damaged frame ends the iteration after its error,
/// since nothing after it can be located.
pub struct Unread<'a, T> {
    ring: RawRing,
    /// Position of the next frame.
    pos: u64,
    /// Write position when the iterator was made.
    end: u64,
    trusted: bool,
    /// A frame was damaged: nothing more can be read.
    stopped: bool,
    /// Borrows the descriptor or consumer it came from.
    _borrow: PhantomData<&'a ()>,
    _record: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Unread<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unread")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}

impl<T: Record> Unread<'_, T> {
    fn new(ring: RawRing, pos: u64, end: u64, trusted: bool) -> Self {
        Self {
            ring,
            pos,
            end,
            trusted,
            stopped: false,
            _borrow: PhantomData,
            _record: PhantomData,
        }
    }

    /// Bytes (records and padding) not yet iterated over.
    pub fn remaining_bytes(&self) -> u64 {
        self.end - self.pos
    }

    /// The next record's frame, skipping padding.
    fn next_frame(&mut self) -> Option<Result<Located, RecordError>> {
        while !self.stopped && self.pos < self.end {
            // SAFETY: `pos..end` is published and, by the contract of the
            // constructors, not released while `self` lives.
            match unsafe { self.ring.frame(self.pos, self.end - self.pos) } {
                Ok(Frame::Pad { end }) => self.pos = end,
                Ok(Frame::Record(at)) => {
                    self.pos = at.end;
                    return Some(Ok(at));
                }
                Err(e) => {
                    self.stopped = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    /// Like `next`, but lends the archived record to `f` instead of
    /// deserializing it.
    pub fn next_with<R>(
        &mut self,
        f: impl FnOnce(&rkyv::Archived<T>) -> R,
    ) -> Option<Result<R, RecordError>> {
        let at = match self.next_frame()? {
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        // SAFETY: as in `next_frame`; `trusted` only if the consumer this came
        // from was told to trust its producer.
        Some(unsafe { self.ring.access::<T>(at, self.trusted) }.map(f))
    }
}

impl<T: Record> Iterator for Unread<'_, T> {
    type Item = Result<T, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = match self.next_frame()? {
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        // SAFETY: as in `next_with`.
        Some(unsafe { self.ring.read::<T>(at, self.trusted) })
    }
}

impl<T: Record> std::iter::FusedIterator for Unread<'_, T> {}

#[cfg(test)]
mod tests;
