//! Shared-memory segments: an anonymous `memfd`, sealed against resizing,
//! mapped `MAP_SHARED` and inherited by `fork`.
//!
//! A [`Segment`] is created in the parent before it forks its workers; every
//! child inherits the mapping at the same address, so a raw pointer into the
//! segment means the same bytes in every process of the family. Nothing is
//! ever named under `/dev/shm`: the memory belongs to the file descriptor and
//! the mappings, and the kernel frees it when the last of them goes, however
//! the processes end (a `SIGKILL` included). This is the reason ringweave does
//! not use a named POSIX shared-memory object (see `DESIGN.md`).
//!
//! The first [`Segment::HEADER_LEN`] bytes hold a `#[repr(C)]` header — magic,
//! layout version, size — in fixed-width atomics. The creator writes the magic
//! word last, with `Release`; [`Segment::check`] loads it with `Acquire` before
//! it trusts the other two (the iceoryx2 convention). The rest, the *payload*,
//! is carved into aligned regions with a [`SegmentLayout`] and
//! [`Segment::region`].
//!
//! After `ftruncate` the memfd is sealed with `F_SEAL_GROW | F_SEAL_SHRINK |
//! F_SEAL_SEAL`, so no holder of the descriptor can shrink the file under a
//! mapping (which would turn loads into `SIGBUS`).
//!
//! # Examples
//!
//! ```
//! use ringweave_ipc::segment::{Segment, SegmentLayout};
//! use std::alloc::Layout;
//!
//! let mut layout = SegmentLayout::new();
//! let counters = layout.reserve(Layout::new::<[u64; 4]>()).unwrap();
//! let segment = Segment::create("example", layout.size()).unwrap();
//! segment.check().unwrap();
//! let ptr = segment.region(counters, 32).unwrap().cast::<u64>();
//! // SAFETY: the region is in bounds, 8-aligned, zero-initialised, and no
//! // other process or thread uses it.
//! unsafe { ptr.as_ptr().write(7) };
//! ```

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::alloc::Layout;
use std::ffi::CString;
use std::fmt;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// The first word of every ringweave segment: `"RNGWEAVE"` in little-endian.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"RNGWEAVE");

/// Version of the layout of everything ringweave puts in a segment (this
/// header, the record ring). Bump it when any shared `#[repr(C)]` struct
/// changes.
pub const LAYOUT_VERSION: u32 = 1;

/// The header at offset 0 of a segment.
///
/// Fixed-width atomics only: the layout is the same for every process that
/// maps it, whatever it was compiled with.
#[repr(C)]
struct SegmentHeader {
    /// [`SEGMENT_MAGIC`] once the header is complete; 0 before. Written last.
    magic: AtomicU64,
    /// [`LAYOUT_VERSION`] of the creator.
    version: AtomicU32,
    /// Zero. Keeps `size` 8-aligned without implicit padding.
    reserved: AtomicU32,
    /// Bytes in the whole segment, header included.
    size: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= Segment::HEADER_LEN);

/// Error of [`Segment::create`], [`Segment::attach`] and [`Segment::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// The debugging name holds a NUL byte or is longer than the kernel's
    /// 249-byte limit.
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The requested payload does not fit in a file offset.
    TooLarge {
        /// Payload bytes requested.
        requested: usize,
        /// Largest payload a segment can have.
        max: usize,
    },
    /// `memfd_create` failed.
    Create {
        /// The OS error.
        errno: Errno,
    },
    /// `ftruncate` to the segment's size failed.
    Resize {
        /// Bytes requested.
        size: usize,
        /// The OS error.
        errno: Errno,
    },
    /// Adding the seals failed.
    Seal {
        /// The OS error.
        errno: Errno,
    },
    /// `fstat` of an attached descriptor failed.
    Stat {
        /// The OS error.
        errno: Errno,
    },
    /// `mmap` failed.
    Map {
        /// Bytes to map.
        size: usize,
        /// The OS error.
        errno: Errno,
    },
    /// An attached file is too small to hold a segment header.
    Truncated {
        /// Bytes in the file.
        size: usize,
        /// Bytes a header needs.
        min: usize,
    },
    /// The header's magic word is not [`SEGMENT_MAGIC`]: not a ringweave
    /// segment, or one whose creator has not finished its header.
    Magic {
        /// Word found.
        found: u64,
        /// [`SEGMENT_MAGIC`].
        expected: u64,
    },
    /// The segment was laid out by a different version of ringweave.
    Version {
        /// Version in the header.
        found: u32,
        /// [`LAYOUT_VERSION`] of this build.
        expected: u32,
    },
    /// The header's size disagrees with the size of the mapping.
    Size {
        /// Size in the header.
        found: u64,
        /// Bytes mapped.
        expected: u64,
    },
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name } => write!(
                f,
                "segment name {name:?} has a NUL byte or is longer than 249 bytes"
            ),
            Self::TooLarge { requested, max } => write!(
                f,
                "segment payload of {requested} bytes requested, at most {max} possible"
            ),
            Self::Create { errno } => write!(f, "memfd_create failed: {errno} ({})", *errno as i32),
            Self::Resize { size, errno } => write!(
                f,
                "ftruncate of a segment to {size} bytes failed: {errno} ({})",
                *errno as i32
            ),
            Self::Seal { errno } => {
                write!(f, "sealing a segment failed: {errno} ({})", *errno as i32)
            }
            Self::Stat { errno } => {
                write!(f, "fstat of a segment failed: {errno} ({})", *errno as i32)
            }
            Self::Map { size, errno } => write!(
                f,
                "mmap of a {size}-byte segment failed: {errno} ({})",
                *errno as i32
            ),
            Self::Truncated { size, min } => write!(
                f,
                "file of {size} bytes is too small for a segment header of {min} bytes"
            ),
            Self::Magic { found, expected } => write!(
                f,
                "segment magic is {found:#018x}, expected {expected:#018x}"
            ),
            Self::Version { found, expected } => write!(
                f,
                "segment layout version is {found}, this build expects {expected}"
            ),
            Self::Size { found, expected } => write!(
                f,
                "segment header says {found} bytes, {expected} are mapped"
            ),
        }
    }
}

impl std::error::Error for SegmentError {}

/// Error of [`Segment::region`] and [`SegmentLayout::reserve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The region does not lie inside the payload.
    OutOfBounds {
        /// Offset asked for, from the start of the payload.
        offset: usize,
        /// Bytes asked for.
        len: usize,
        /// Bytes in the payload.
        payload: usize,
    },
    /// The alignment asked for is larger than a payload guarantees.
    Alignment {
        /// Alignment asked for.
        align: usize,
        /// [`Segment::MAX_ALIGN`].
        max: usize,
    },
    /// The layout grew past `isize::MAX` bytes.
    Overflow {
        /// Bytes already reserved.
        size: usize,
        /// Bytes asked for.
        len: usize,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfBounds {
                offset,
                len,
                payload,
            } => write!(
                f,
                "region of {len} bytes at offset {offset} exceeds the segment payload of {payload} bytes"
            ),
            Self::Alignment { align, max } => write!(
                f,
                "alignment {align} requested, segments guarantee at most {max}"
            ),
            Self::Overflow { size, len } => write!(
                f,
                "reserving {len} bytes after {size} overflows the segment size"
            ),
        }
    }
}

impl std::error::Error for RegionError {}

/// An anonymous shared-memory segment, mapped read-write and `MAP_SHARED`.
///
/// `Send` and `Sync`: it only hands out raw pointers, whose use is the
/// caller's to synchronise. Dropping it unmaps the memory in this process and
/// closes its descriptor; other processes keep their own mappings.
pub struct Segment {
    /// Start of the mapping; page-aligned. Valid for `len` bytes until drop.
    base: NonNull<u8>,
    /// Bytes mapped, header included; a multiple of the page size.
    len: usize,
    /// The memfd. Kept open so the segment can be passed to a process that
    /// did not inherit the mapping (see [`Segment::attach`]).
    fd: OwnedFd,
}

// SAFETY: `Segment` owns a mapping and a descriptor, both usable from any
// thread; it exposes the memory only as raw pointers.
unsafe impl Send for Segment {}
// SAFETY: as above; no method mutates through `&self` except by raw pointer
// (the header's atomics, which are atomics).
unsafe impl Sync for Segment {}

impl Segment {
    /// Bytes reserved for the header at the start of every segment; the
    /// payload starts here, so it is aligned to this value.
    pub const HEADER_LEN: usize = 128;

    /// The largest alignment a payload region can have (the header's
    /// length; the mapping itself is page-aligned).
    pub const MAX_ALIGN: usize = Self::HEADER_LEN;

    /// Faults in every page of the segment in this process now, writable,
    /// without changing a byte (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14
    /// or later): a ring's first lap then takes no page faults. The pages
    /// are allocated for good, so call it for a ring that will stream, not
    /// for one that may stay mostly empty. A forked child maps the pages
    /// again on first touch (cheap minor faults), or calls this too.
    ///
    /// # Errors
    ///
    /// The OS error: `EINVAL` on kernels before 5.14, `ENOMEM` when memory
    /// runs out. Nothing is changed either way.
    pub fn populate(&self) -> std::io::Result<()> {
        // SAFETY: `base..base + len` is our mapping; MADV_POPULATE_WRITE
        // only faults pages in and never changes their contents.
        let rc = unsafe {
            libc::madvise(
                self.base.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Creates a segment with at least `payload_len` bytes of zeroed payload.
    ///
    /// `name` only labels the memfd for debugging: it shows as
    /// `/memfd:NAME (deleted)` in `/proc/PID/maps`, and it is not a file
    /// anywhere. The size is rounded up to whole pages.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidName`], [`SegmentError::TooLarge`], or the OS
    /// error of `memfd_create`, `ftruncate`, the seals or `mmap`.
    pub fn create(name: &str, payload_len: usize) -> Result<Self, SegmentError> {
        let cname = CString::new(name)
            .ok()
            .filter(|c| c.as_bytes().len() <= 249)
            .ok_or_else(|| SegmentError::InvalidName {
                name: name.to_owned(),
            })?;
        let page = page_size();
        let max = (i64::MAX as usize / 2) - Self::HEADER_LEN;
        let too_large = SegmentError::TooLarge {
            requested: payload_len,
            max,
        };
        if payload_len > max {
            return Err(too_large);
        }
        let len = (Self::HEADER_LEN + payload_len)
            .checked_next_multiple_of(page)
            .ok_or(too_large)?;

        let fd = memfd_create(
            &cname,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(|errno| SegmentError::Create { errno })?;
        // `len <= i64::MAX / 2` was checked above, so the cast is exact.
        nix::unistd::ftruncate(&fd, len as i64)
            .map_err(|errno| SegmentError::Resize { size: len, errno })?;
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|errno| SegmentError::Seal { errno })?;
        let segment = Self::map(fd, len)?;

        // A fresh memfd reads as zeros, so the header is all zero here and
        // `check` fails until the magic below is stored.
        let header = segment.header();
        // Relaxed: published by the Release store of the magic below.
        header.size.store(len as u64, Ordering::Relaxed);
        header.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        // SYNC POINT: segment-header. Pairs with the Acquire in `check`: a
        // process that sees the magic sees the size and version too.
        header.magic.store(SEGMENT_MAGIC, Ordering::Release);
        Ok(segment)
    }

    /// Maps a segment whose descriptor was passed to this process (over a
    /// Unix socket, or duplicated from [`Segment::fd`]) and checks its header.
    ///
    /// Processes forked after [`Segment::create`] do not need this: they
    /// inherit the mapping.
    ///
    /// # Errors
    ///
    /// [`SegmentError::Stat`] or [`SegmentError::Map`] with the OS error,
    /// [`SegmentError::Truncated`] for a file smaller than a header, and the
    /// errors of [`Segment::check`].
    pub fn attach(fd: OwnedFd) -> Result<Self, SegmentError> {
        let stat =
            nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|errno| SegmentError::Stat { errno })?;
        let len = usize::try_from(stat.st_size).unwrap_or(0);
        if len < Self::HEADER_LEN {
            return Err(SegmentError::Truncated {
                size: len,
                min: Self::HEADER_LEN,
            });
        }
        let segment = Self::map(fd, len)?;
        segment.check()?;
        Ok(segment)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, SegmentError> {
        let length = NonZeroUsize::new(len).ok_or(SegmentError::Truncated {
            size: 0,
            min: Self::HEADER_LEN,
        })?;
        // SAFETY: a new mapping chosen by the kernel (no address given), so
        // it aliases no Rust object; `len` bytes of the file exist (we sized
        // it, or `fstat` said so, and the seals forbid shrinking it).
        let base = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(|errno| SegmentError::Map { size: len, errno })?;
        Ok(Self {
            base: base.cast(),
            len,
            fd,
        })
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping is page-aligned, at least `HEADER_LEN` bytes,
        // lives as long as `self`, and the header is only accessed through
        // atomics (valid for any bit pattern, zero included).
        unsafe { self.base.cast::<SegmentHeader>().as_ref() }
    }

    /// Validates the header: magic, layout version, and that its size
    /// matches the mapping.
    ///
    /// A forked child may call it first thing to make sure the segment it
    /// inherited is the one its parent finished; an attacher calls it (and
    /// [`Segment::attach`] does).
    ///
    /// # Errors
    ///
    /// [`SegmentError::Magic`], [`SegmentError::Version`] or
    /// [`SegmentError::Size`] with the values found and expected.
    pub fn check(&self) -> Result<(), SegmentError> {
        let header = self.header();
        // SYNC POINT: segment-header. Pairs with the Release in `create`.
        let magic = header.magic.load(Ordering::Acquire);
        if magic != SEGMENT_MAGIC {
            return Err(SegmentError::Magic {
                found: magic,
                expected: SEGMENT_MAGIC,
            });
        }
        // Relaxed: ordered after the Acquire above, and never written again.
        let version = header.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(SegmentError::Version {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        // Relaxed: as for `version`.
        let size = header.size.load(Ordering::Relaxed);
        if size != self.len as u64 {
            return Err(SegmentError::Size {
                found: size,
                expected: self.len as u64,
            });
        }
        Ok(())
    }

    /// Bytes mapped, header included.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a segment has at least its header. (For clippy's
    /// `len_without_is_empty`.)
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes of payload (after the header); at least what was asked for.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.len - Self::HEADER_LEN
    }

    /// The memfd, to pass to a process that does not inherit the mapping.
    #[inline]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A pointer to `len` bytes of payload at `offset` (from the start of the
    /// payload), checked to lie inside it.
    ///
    /// The pointer is valid for reads and writes while the segment lives in
    /// this process, and in every child forked while it lived, at the same
    /// address. Its alignment is that of `offset` (up to
    /// [`Segment::MAX_ALIGN`]). What the bytes mean, and who may touch them
    /// when, is the caller's protocol.
    ///
    /// # Errors
    ///
    /// [`RegionError::OutOfBounds`] with the numbers.
    pub fn region(&self, offset: usize, len: usize) -> Result<NonNull<u8>, RegionError> {
        let payload = self.payload_len();
        match offset.checked_add(len) {
            Some(end) if end <= payload => {
                // SAFETY: `HEADER_LEN + offset <= HEADER_LEN + payload ==
                // self.len`, so the result stays inside (or one past) the
                // mapping.
                Ok(unsafe { self.base.add(Self::HEADER_LEN + offset) })
            }
            _ => Err(RegionError::OutOfBounds {
                offset,
                len,
                payload,
            }),
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is our mapping; callers of `region` agreed
        // not to use its pointers after the segment is dropped. The result is
        // ignored: munmap of a valid mapping does not fail, and a destructor
        // has nobody to report to. The descriptor is closed by `OwnedFd`.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .unwrap_or(4096)
        .max(Segment::HEADER_LEN)
}

/// A bump allocator for a segment's payload: reserve every region first,
/// then create a segment of [`size`](Self::size) bytes and turn the offsets
/// into pointers with [`Segment::region`].
///
/// The same sequence of reservations always gives the same offsets, so a
/// process that knows the sequence can find every region of a segment it
/// attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Bytes reserved so far, from the start of the payload.
    size: usize,
}

impl SegmentLayout {
    /// An empty layout.
    #[must_use]
    pub const fn new() -> Self {
        Self { size: 0 }
    }

    /// Reserves a region for `layout` and returns its payload offset.
    ///
    /// # Errors
    ///
    /// [`RegionError::Alignment`] if `layout.align()` exceeds
    /// [`Segment::MAX_ALIGN`]; [`RegionError::Overflow`] past `isize::MAX`.
    pub fn reserve(&mut self, layout: Layout) -> Result<usize, RegionError> {
        if layout.align() > Segment::MAX_ALIGN {
            return Err(RegionError::Alignment {
                align: layout.align(),
                max: Segment::MAX_ALIGN,
            });
        }
        let overflow = RegionError::Overflow {
            size: self.size,
            len: layout.size(),
        };
        let offset = self
            .size
            .checked_next_multiple_of(layout.align())
            .ok_or(overflow)?;
        let end = offset.checked_add(layout.size()).ok_or(overflow)?;
        if end > isize::MAX as usize {
            return Err(overflow);
        }
        self.size = end;
        Ok(offset)
    }

    /// Payload bytes the reserved regions need: pass this to
    /// [`Segment::create`].
    #[inline]
    pub const fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_checked() {
        let segment = Segment::create("ringweave-unit", 1000).unwrap();
        assert!(segment.payload_len() >= 1000);
        assert_eq!(segment.len() % page_size(), 0);
        segment.check().unwrap();

        // Tamper with each word in turn; `check` names what it found.
        let header = segment.header();
        header.version.store(LAYOUT_VERSION + 1, Ordering::Relaxed);
        assert_eq!(
            segment.check(),
            Err(SegmentError::Version {
                found: LAYOUT_VERSION + 1,
                expected: LAYOUT_VERSION
            })
        );
        header.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        header.size.store(3, Ordering::Relaxed);
        assert_eq!(
            segment.check(),
            Err(SegmentError::Size {
                found: 3,
                expected: segment.len() as u64
            })
        );
        header.size.store(segment.len() as u64, Ordering::Relaxed);
        header.magic.store(0, Ordering::Relaxed);
        let err = segment.check().unwrap_err();
        assert_eq!(
            err,
            SegmentError::Magic {
                found: 0,
                expected: SEGMENT_MAGIC
            }
        );
        assert!(err.to_string().contains("0x0000000000000000"), "{err}");
    }

    #[test]
    fn populate_keeps_the_contents_and_faults_the_pages_in() {
        let segment = Segment::create("populate", 64 * 4096).unwrap();
        let at = segment.region(4096, 8).unwrap();
        // SAFETY: 8 bytes of our own fresh segment, 8-aligned.
        unsafe { at.cast::<u64>().as_ptr().write(0x1234) };
        let minor_faults = || {
            // SAFETY: `rusage` is plain integers; all zeroes is valid.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage only writes the struct we pass.
            let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
            assert_eq!(rc, 0);
            usage.ru_minflt
        };
        match segment.populate() {
            Ok(()) => {}
            // Kernels before 5.14 do not have MADV_POPULATE_WRITE.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("populate: {e}"),
        }
        // SAFETY: as above.
        assert_eq!(unsafe { at.cast::<u64>().as_ptr().read() }, 0x1234);
        let before = minor_faults();
        let base = segment.region(0, segment.payload_len()).unwrap();
        for page in 0..segment.payload_len() / 4096 {
            // SAFETY: inside the payload, which only this test uses.
            unsafe { base.as_ptr().add(page * 4096).write_volatile(1) };
        }
        assert_eq!(minor_faults(), before, "every page was mapped already");
    }

    #[test]
    fn regions_are_bounds_checked() {
        let segment = Segment::create("ringweave-unit", 256).unwrap();
        let payload = segment.payload_len();
        assert!(segment.region(0, payload).is_ok());
        assert!(segment.region(payload, 0).is_ok());
        assert_eq!(
            segment.region(payload - 8, 16),
            Err(RegionError::OutOfBounds {
                offset: payload - 8,
                len: 16,
                payload
            })
        );
        assert!(segment.region(usize::MAX, 2).is_err());
        let p = segment.region(0, 8).unwrap();
        assert_eq!(p.as_ptr() as usize % Segment::MAX_ALIGN, 0);
    }

    #[test]
    fn layout_aligns_and_rejects_large_alignments() {
        let mut layout = SegmentLayout::new();
        assert_eq!(layout.reserve(Layout::new::<u8>()).unwrap(), 0);
        assert_eq!(layout.reserve(Layout::new::<u64>()).unwrap(), 8);
        let big = Layout::from_size_align(10, 128).unwrap();
        assert_eq!(layout.reserve(big).unwrap(), 128);
        assert_eq!(layout.size(), 138);
        let huge = Layout::from_size_align(1, 4096).unwrap();
        assert_eq!(
            layout.reserve(huge),
            Err(RegionError::Alignment {
                align: 4096,
                max: 128
            })
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(matches!(
            Segment::create("a\0b", 1),
            Err(SegmentError::InvalidName { .. })
        ));
        assert!(matches!(
            Segment::create(&"x".repeat(250), 1),
            Err(SegmentError::InvalidName { .. })
        ));
        assert!(matches!(
            Segment::create("big", usize::MAX),
            Err(SegmentError::TooLarge { .. })
        ));
    }

    #[test]
    fn sealed_against_resizing() {
        let segment = Segment::create("ringweave-unit", 100).unwrap();
        assert_eq!(
            nix::unistd::ftruncate(segment.fd(), 1),
            Err(Errno::EPERM),
            "F_SEAL_SHRINK must refuse to shrink"
        );
        assert_eq!(
            nix::unistd::ftruncate(segment.fd(), (segment.len() * 2) as i64),
            Err(Errno::EPERM),
            "F_SEAL_GROW must refuse to grow"
        );
    }

    #[test]
    fn attach_by_descriptor_sees_the_same_memory() {
        let segment = Segment::create("ringweave-unit", 64).unwrap();
        let fd = segment.fd().try_clone_to_owned().unwrap();
        let attached = Segment::attach(fd).unwrap();
        assert_eq!(attached.len(), segment.len());
        let a = segment.region(0, 8).unwrap().cast::<u64>();
        let b = attached.region(0, 8).unwrap().cast::<u64>();
        assert_ne!(a, b, "two mappings");
        // SAFETY: both point to the same 8 in-bounds, aligned bytes of the
        // file; this thread is their only user.
        unsafe {
            a.as_ptr().write_volatile(0xfeed);
            assert_eq!(b.as_ptr().read_volatile(), 0xfeed);
        }
    }

    #[test]
    fn attach_rejects_a_foreign_file() {
        let fd = memfd_create(c"not-a-segment", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        assert_eq!(
            Segment::attach(fd).unwrap_err(),
            SegmentError::Magic {
                found: 0,
                expected: SEGMENT_MAGIC
            }
        );
        let fd = memfd_create(c"tiny", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        assert_eq!(
            Segment::attach(fd).unwrap_err(),
            SegmentError::Truncated {
                size: 0,
                min: Segment::HEADER_LEN
            }
        );
    }
}
