//! What can travel through a shared-memory ring, and how it is framed there.
//!
//! A [`Record`] is any type rkyv 0.8 can archive, validate and deserialize
//! with its high-level API; the blanket impl means a user type only needs
//!
//! ```
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
//! struct Reading {
//!     sensor: u32,
//!     values: Vec<f64>,
//! }
//! fn assert_record<T: ringweave_ipc::Record>() {}
//! assert_record::<Reading>();
//! assert_record::<(u64, String, Vec<u8>)>();
//! ```
//!
//! (`ringweave::Item` is this trait under the engine's name.)
//!
//! In the ring's byte arena a record is a *frame*: a 16-byte header, then
//! the archived bytes, then zero to 15 bytes of padding, so every frame starts
//! 16-byte aligned and so does every archive (rkyv needs the archive's start
//! aligned to its root type's alignment; 16 covers every primitive, `u128`
//! included). The header is two little-endian `u64`s, the archive's length
//! and its bitwise complement, so a damaged length is caught before it is
//! used. A length of [`PAD`] marks padding to the end of the arena: a frame
//! is never split across the wrap-around.
//!
//! Records are serialized in place through [`SlotWriter`], which writes into
//! the ring's free bytes and, when they run out, keeps *counting* instead of
//! failing. So one serialization tells the producer either that the record is
//! written, or exactly how many bytes it needs — enough to wait for space or
//! to refuse a record that can never fit, without a second attempt into a
//! scratch buffer.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::ser::{Allocator, Positional, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The serializer a record is written with: rkyv's high-level serializer
/// over a [`SlotWriter`] (the ring's free bytes) and [`Scratch`] space.
pub type RecordSerializer<'w, 'a> = HighSerializer<SlotWriter<'w>, Scratch<'a>, rancor::Error>;

/// The validator a record is checked with before it is read.
pub type RecordValidator<'a> = HighValidator<'a, rancor::Error>;

/// The deserializer a record is turned back into its type with.
pub type RecordDeserializer = HighDeserializer<rancor::Error>;

/// A value that can cross a process boundary through a record ring.
///
/// Implemented for every type that satisfies rkyv 0.8's high-level bounds
/// (and is `Send + 'static`): derive `rkyv::Archive`, `rkyv::Serialize` and
/// `rkyv::Deserialize` and it is a `Record`. Integers, `String`, `Vec<u8>`,
/// `Option`s and tuples of records are records.
///
/// The archived type is exposed as [`Record::ArchivedRecord`], with its
/// bounds, so generic code can validate and deserialize through it.
///
/// Archived types must need an alignment of at most 16 bytes (true of
/// everything rkyv derives unless a field is `#[repr(align(32))]` or more);
/// a validating reader rejects a record that breaks this, a trusting one
/// must not be given one.
pub trait Record:
    Archive<Archived = <Self as Record>::ArchivedRecord>
    + for<'w, 'a> Serialize<RecordSerializer<'w, 'a>>
    + Send
    + Sized
    + 'static
{
    /// `<Self as rkyv::Archive>::Archived` (also spelled `rkyv::Archived<Self>`),
    /// restated with the bounds a reader needs — validation and
    /// deserialization — so that generic code bounded by `Record` has them.
    /// (A different name from `Archive::Archived`, so that `T::Archived`
    /// stays unambiguous.)
    type ArchivedRecord: Portable
        + for<'a> CheckBytes<RecordValidator<'a>>
        + Deserialize<Self, RecordDeserializer>;
}

impl<T> Record for T
where
    T: Archive + for<'w, 'a> Serialize<RecordSerializer<'w, 'a>> + Send + 'static,
    T::Archived: for<'a> CheckBytes<RecordValidator<'a>> + Deserialize<T, RecordDeserializer>,
{
    type ArchivedRecord = <T as Archive>::Archived;
}

/// A value whose archive is an archive of the record type `T`: it may be
/// pushed into a ring of `T`s (see
/// [`RecordProducer::push_as`](crate::record_ring::RecordProducer::push_as)).
///
/// Every `T: Record` is a `RecordOf<T>`; so is [`VecOf`] for `Vec<T>`, which
/// writes a borrowed slice as the archive of a `Vec`.
pub trait RecordOf<T: Record>:
    Archive<Archived = <T as Record>::ArchivedRecord> + for<'w, 'a> Serialize<RecordSerializer<'w, 'a>>
{
}

impl<T: Record, U> RecordOf<T> for U where
    U: Archive<Archived = <T as Record>::ArchivedRecord>
        + for<'w, 'a> Serialize<RecordSerializer<'w, 'a>>
{
}

/// A borrowed slice that archives exactly as a `Vec<T>` holding the same
/// items: push a run of items into a ring of `Vec<T>` records without
/// owning (or cloning) them.
///
/// ```
/// use ringweave_ipc::record::VecOf;
/// let items = [1u64, 2, 3];
/// let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&VecOf(&items[1..])).unwrap();
/// let back: Vec<u64> = rkyv::from_bytes::<Vec<u64>, rkyv::rancor::Error>(&bytes).unwrap();
/// assert_eq!(back, [2, 3]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct VecOf<'a, T>(pub &'a [T]);

impl<T: Archive> Archive for VecOf<'_, T> {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    #[inline]
    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<T, S> Serialize<S> for VecOf<'_, T>
where
    T: Serialize<S>,
    S: rancor::Fallible + Allocator + Writer + ?Sized,
{
    #[inline]
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        // The same bytes `Vec<T>` writes: for plain-old-data items (rkyv's
        // copy optimization) one copy of the whole slice.
        ArchivedVec::serialize_from_slice(self.0, serializer)
    }
}

/// Alignment of every frame, and so of every archive, in a record ring.
pub const RECORD_ALIGN: usize = 16;

/// Bytes of a frame header: the length word and its complement.
pub const FRAME_HEADER: usize = 16;

/// The length word of a padding frame, which runs to the end of the arena.
pub const PAD: u64 = u64::MAX;

/// Bytes a frame holding an archive of `len` bytes occupies.
#[inline]
pub const fn frame_len(len: usize) -> usize {
    FRAME_HEADER + len.next_multiple_of(RECORD_ALIGN)
}

/// An rkyv [`Writer`] over a window of free bytes that never fails: past the
/// window it counts the bytes it would have written and drops them.
///
/// After serializing, [`fits`](Self::fits) says whether the whole archive is
/// in the window, and [`pos`](Positional::pos) is its exact length either
/// way — rkyv never reads back what it wrote, so a counted-but-dropped byte
/// changes nothing else about the output. It appears in the [`Record`] bound
/// through [`RecordSerializer`]; ring users never make one.
pub struct SlotWriter<'a> {
    /// Start of the window; valid for writes of `cap` bytes for `'a`.
    ptr: *mut u8,
    /// Bytes in the window.
    cap: usize,
    /// Bytes "written" so far; may exceed `cap`.
    pos: usize,
    _window: PhantomData<&'a mut [u8]>,
}

impl<'a> SlotWriter<'a> {
    /// A writer over `cap` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `cap` bytes for `'a`, and nothing
    /// else may access those bytes meanwhile.
    #[must_use]
    pub unsafe fn new(ptr: *mut u8, cap: usize) -> Self {
        Self {
            ptr,
            cap,
            pos: 0,
            _window: PhantomData,
        }
    }

    /// A writer over `window`.
    #[must_use]
    pub fn from_slice(window: &'a mut [u8]) -> Self {
        // SAFETY: the slice is valid for writes of its length and borrowed
        // exclusively for `'a`.
        unsafe { Self::new(window.as_mut_ptr(), window.len()) }
    }

    /// Whether everything written so far is in the window.
    #[inline]
    pub fn fits(&self) -> bool {
        self.pos <= self.cap
    }
}

impl Positional for SlotWriter<'_> {
    #[inline]
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: rancor::Source> Writer<E> for SlotWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self.pos.saturating_add(bytes.len());
        if end <= self.cap {
            // SAFETY: `pos..end` lies inside the window (`end <= cap`), which
            // `new`'s caller guarantees is ours to write; `bytes` is a
            // different allocation (rkyv writes from its own values and
            // scratch space, never from the output).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.pos), bytes.len());
            }
        }
        self.pos = end;
        Ok(())
    }
}

impl fmt::Debug for SlotWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotWriter")
            .field("cap", &self.cap)
            .field("pos", &self.pos)
            .finish()
    }
}

/// The scratch space a record is serialized with: an rkyv [`Arena`] owned
/// by the producer, acquired the first time a record's serialization asks
/// for scratch space (a `Vec` of non-trivial items does; a `u64` or a plain
/// struct never does).
///
/// Acquiring the arena for every record, as `ArenaHandle` would, cost about
/// as much as the rest of staging a small record. It appears in the
/// [`Record`] bound through [`RecordSerializer`]; ring users never make one.
pub struct Scratch<'a> {
    state: ScratchState<'a>,
}

enum ScratchState<'a> {
    /// Nothing allocated yet.
    Idle(&'a mut Arena),
    /// Acquired by the first allocation.
    Active(ArenaHandle<'a>),
    /// Only between the two, inside `push_alloc`.
    Swapping,
}

impl<'a> Scratch<'a> {
    /// Scratch space from `arena`, acquired on first use.
    pub fn new(arena: &'a mut Arena) -> Self {
        Self {
            state: ScratchState::Idle(arena),
        }
    }
}

impl fmt::Debug for Scratch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ScratchState::Idle(_) => "idle",
            ScratchState::Active(_) => "active",
            ScratchState::Swapping => "swapping",
        };
        f.debug_struct("Scratch").field("state", &state).finish()
    }
}

// SAFETY: every allocation comes from the arena's handle, which upholds the
// trait's contract; this only delays acquiring it.
unsafe impl<E> Allocator<E> for Scratch<'_> {
    #[inline]
    unsafe fn push_alloc(&mut self, layout: std::alloc::Layout) -> Result<NonNull<[u8]>, E> {
        if let ScratchState::Idle(_) = self.state {
            if let ScratchState::Idle(arena) =
                std::mem::replace(&mut self.state, ScratchState::Swapping)
            {
                self.state = ScratchState::Active(arena.acquire());
            }
        }
        match &mut self.state {
            // SAFETY: forwarded from our caller.
            ScratchState::Active(handle) => unsafe { handle.push_alloc(layout) },
            ScratchState::Idle(_) | ScratchState::Swapping => {
                unreachable!("scratch arena acquired just above")
            }
        }
    }

    #[inline]
    unsafe fn pop_alloc(&mut self, ptr: NonNull<u8>, layout: std::alloc::Layout) -> Result<(), E> {
        match &mut self.state {
            // SAFETY: forwarded from our caller.
            ScratchState::Active(handle) => unsafe { handle.pop_alloc(ptr, layout) },
            // Nothing was pushed, so there is nothing to pop.
            ScratchState::Idle(_) | ScratchState::Swapping => Ok(()),
        }
    }
}

/// Serializes `value` into `cap` bytes at `dst` (or counts, past them).
///
/// Returns the archive's exact length; it was written completely iff
/// `len <= cap`.
///
/// # Safety
///
/// As for [`SlotWriter::new`].
#[cfg_attr(ringweave_loom, allow(dead_code))]
pub(crate) unsafe fn serialize_into<U>(
    value: &U,
    arena: &mut Arena,
    dst: *mut u8,
    cap: usize,
) -> Result<usize, rancor::Error>
where
    U: for<'w, 'a> Serialize<RecordSerializer<'w, 'a>>,
{
    // SAFETY: forwarded to our caller.
    let writer = unsafe { SlotWriter::new(dst, cap) };
    // The arena is the handle's own (not rkyv's thread-local one), so the
    // serializer touches no thread-local state: a forked child serializes
    // with memory it inherited.
    let writer = rkyv::api::high::to_bytes_in_with_alloc(value, writer, Scratch::new(arena))?;
    Ok(writer.pos())
}

/// Serializes `value` into `window` as a record ring's producer serializes
/// into its arena: in place, with `arena` as the serializer's scratch space,
/// no intermediate buffer.
///
/// Returns the archive's exact length; it was written completely iff that
/// is at most `window.len()` (past the window the serializer only counts, so
/// a caller learns how much room the value needs).
///
/// # Errors
///
/// What the value's `Serialize` impl returns.
pub fn serialize_to_slice<U>(
    value: &U,
    arena: &mut Arena,
    window: &mut [u8],
) -> Result<usize, rancor::Error>
where
    U: for<'w, 'a> Serialize<RecordSerializer<'w, 'a>>,
{
    // SAFETY: the slice is valid for writes of its length and borrowed
    // exclusively for this call.
    unsafe { serialize_into(value, arena, window.as_mut_ptr(), window.len()) }
}

/// What is wrong with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The record's frame is larger than the whole ring: it can never be
    /// written. Nothing was staged or published.
    TooLarge {
        /// Bytes of the record's archive.
        record: usize,
        /// The largest archive the ring can hold (its arena minus one frame
        /// header).
        capacity: usize,
    },
    /// The type's `Serialize` impl failed.
    Serialize {
        /// rkyv's message.
        message: String,
    },
    /// The record's archive failed validation.
    Invalid {
        /// Ring position (bytes since the ring was created) of its frame.
        position: u64,
        /// Bytes of the archive.
        len: usize,
        /// rkyv's (bytecheck's) message.
        message: String,
    },
    /// The record's archive was valid but its `Deserialize` impl failed.
    Deserialize {
        /// Ring position of its frame.
        position: u64,
        /// rkyv's message.
        message: String,
    },
    /// The frame header is damaged, or points outside the published bytes:
    /// the ring cannot be read past this position.
    Frame {
        /// Ring position of the frame.
        position: u64,
        /// Its length word.
        len: u64,
        /// Its check word (should be `!len`).
        check: u64,
        /// Bytes published from `position` on.
        readable: u64,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { record, capacity } => write!(
                f,
                "record of {record} archived bytes exceeds the ring's limit of {capacity} bytes per record"
            ),
            Self::Serialize { message } => write!(f, "serializing a record failed: {message}"),
            Self::Invalid {
                position,
                len,
                message,
            } => write!(
                f,
                "record of {len} bytes at ring position {position} failed validation: {message}"
            ),
            Self::Deserialize { position, message } => write!(
                f,
                "deserializing the record at ring position {position} failed: {message}"
            ),
            Self::Frame {
                position,
                len,
                check,
                readable,
            } => write!(
                f,
                "damaged frame at ring position {position}: length word {len:#x}, \
                 check word {check:#x}, {readable} bytes readable"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Record>(value: &T, window: usize) -> (usize, bool, Option<T>) {
        #[repr(C, align(16))]
        struct Aligned([u8; 8192]);
        let mut buf = Box::new(Aligned([0xaa; 8192]));
        let mut arena = Arena::new();
        let len = serialize_to_slice(value, &mut arena, &mut buf.0[..window]).unwrap();
        assert!(
            buf.0[window..].iter().all(|&b| b == 0xaa),
            "wrote past a {window}-byte window"
        );
        if len > window {
            return (len, false, None);
        }
        let archived = rkyv::access::<T::Archived, rancor::Error>(&buf.0[..len]).unwrap();
        let back = rkyv::deserialize::<T, rancor::Error>(archived).unwrap();
        (len, true, Some(back))
    }

    #[test]
    fn counts_past_the_window() {
        let value = (7u64, "x".repeat(1000), vec![3u8; 500]);
        let (full, fits, back) = roundtrip(&value, 8192);
        assert!(fits);
        assert_eq!(back.as_ref(), Some(&value));
        for window in [0, 1, 16, 100, full - 1] {
            let (len, fits, _) = roundtrip(&value, window);
            assert_eq!(len, full, "window {window}");
            assert!(!fits);
        }
        let (len, fits, back) = roundtrip(&value, full);
        assert_eq!(len, full);
        assert!(fits);
        assert_eq!(back, Some(value));
    }

    #[test]
    fn frames_are_aligned() {
        assert_eq!(frame_len(0), 16);
        assert_eq!(frame_len(1), 32);
        assert_eq!(frame_len(16), 32);
        assert_eq!(frame_len(17), 48);
    }

    #[test]
    fn errors_carry_their_numbers() {
        let e = RecordError::TooLarge {
            record: 10_000,
            capacity: 4080,
        };
        let s = e.to_string();
        assert!(s.contains("10000") && s.contains("4080"), "{s}");
    }
}
