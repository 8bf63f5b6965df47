//! The per-stage control block: the barrier's command word and the stage's
//! single-writer counters.
//!
//! # The pause handshake
//!
//! ```text
//!  coordinator                         stage (at a batch boundary or while waiting)
//!  cmd = PAUSE_REQUESTED; wake rings
//!                                      if cmd == PAUSE_REQUESTED and
//!                                         CAS(PAUSE_REQUESTED → PAUSING) succeeds:
//!                                           stop; hand the stage to the coordinator
//!  on timeout: CAS(PAUSE_REQUESTED → RUNNING)
//!     ok     → the stage never paused and never will for this request
//!     failed → the stage won: its hand-over is on the way; resume it
//! ```
//!
//! The two CASes on one word decide, once, whether a stage paused; there is
//! no window in which a stage pauses after the coordinator gave up on it.
//! The stage itself (operator, state, ring ends) travels through the
//! coordinator's event channel, which orders everything the stage did before
//! pausing before everything the coordinator does with it.

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// The values of a stage's command word.
///
/// `Running`, `PauseRequested` and `Pausing` are the pause handshake (module
/// docs); `Paused`, `Resume` and `Exit` are the worker protocol after a
/// worker accepted; `Abort` overrides everything.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// The stage runs.
    Running = 0,
    /// The coordinator asks the stage to pause.
    PauseRequested = 1,
    /// The stage accepted: it stops and hands itself over.
    Pausing = 2,
    /// Worker processes only: paused, state saved, waiting for a decision.
    Paused = 3,
    /// Worker processes only: the coordinator's decision "carry on".
    Resume = 4,
    /// Worker processes only: the coordinator's decision "leave".
    Exit = 5,
    /// Stop now: the run is being torn down. Overrides every other state.
    Abort = 6,
}

impl Cmd {
    /// The command a word holds. Only this module and [`StageControl`]'s
    /// methods store the word, always from a `Cmd`, so an unknown value is
    /// a corrupted segment; it reads as `Abort`, which stops the stage.
    #[inline]
    fn from_word(word: u32) -> Self {
        match word {
            0 => Cmd::Running,
            1 => Cmd::PauseRequested,
            2 => Cmd::Pausing,
            3 => Cmd::Paused,
            4 => Cmd::Resume,
            5 => Cmd::Exit,
            _ => Cmd::Abort,
        }
    }
}

const RUNNING: u32 = Cmd::Running as u32;
const PAUSE_REQUESTED: u32 = Cmd::PauseRequested as u32;
const PAUSING: u32 = Cmd::Pausing as u32;
const ABORT: u32 = Cmd::Abort as u32;

/// One stage's control block. `#[repr(C)]` with fixed-width atomics so it
/// can live in a shared segment where worker processes update it too.
#[repr(C)]
#[derive(Default)]
pub struct StageControl {
    /// A [`Cmd`], as a `u32`. A futex word when in shared memory.
    cmd: CachePadded<AtomicU32>,
    /// Items the stage has taken from its input, ever. Stored only by the
    /// stage (single writer), read by the monitor.
    items_in: CachePadded<AtomicU64>,
    /// Items the stage has handed to its output, ever. Same writer.
    items_out: CachePadded<AtomicU64>,
    /// 1 while a pause request may be accepted even by a stage that waits
    /// for room with outputs held (a recovery: their consumer is dead).
    forced: AtomicU32,
}

impl StageControl {
    /// Whether the run is being torn down: the stage must stop at once.
    #[inline]
    pub fn is_aborted(&self) -> bool {
        // Relaxed: a stop order carries no data; the caller's wake-up (the
        // fence in `wait::notify`) makes a sleeping stage see it.
        // Through `from_word`, as every reader: a word no `Cmd` made (a
        // corrupted segment) reads as `Abort` here too.
        Cmd::from_word(self.cmd.load(Ordering::Relaxed)) == Cmd::Abort
    }

    /// Whether anything asks the stage to stop waiting: a pause request or
    /// an abort.
    #[inline]
    pub fn interrupted(&self) -> bool {
        // Relaxed: as in `is_aborted`.
        matches!(
            Cmd::from_word(self.cmd.load(Ordering::Relaxed)),
            Cmd::PauseRequested | Cmd::Abort
        )
    }

    /// Orders the stage to stop (the run is being torn down). The caller
    /// then wakes the stage's rings.
    pub fn request_abort(&self) {
        // Relaxed: as in `request_pause`.
        self.cmd.store(ABORT, Ordering::Relaxed);
    }

    /// Accepts a pending pause request. `true`: the stage must stop now and
    /// hand itself over; `false`: no request (or it was cancelled) — go on.
    #[inline]
    pub fn try_pause(&self) -> bool {
        // SYNC POINT: pause-decision. Races only `cancel_pause`; RMWs on one
        // word are totally ordered, so exactly one of them wins. The stage's
        // data travels through the event channel, not this word, hence
        // Relaxed would do; Acquire keeps the request's context visible.
        self.cmd
            .compare_exchange(
                PAUSE_REQUESTED,
                PAUSING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Asks the stage to pause. The caller then wakes the stage's rings so a
    /// sleeping stage sees it (the ring's notify fence orders this store
    /// before the wake check; see `crate::wait`).
    pub fn request_pause(&self) {
        // Relaxed: ordered against the stage's sleep by the SeqCst fence in
        // `wait::notify`, which the caller runs next.
        self.cmd.store(PAUSE_REQUESTED, Ordering::Relaxed);
    }

    /// Asks the stage to pause even where it normally would not: while it
    /// waits for room with outputs held, because the consumer it waits for
    /// is gone (a crash recovery). The stage keeps what it holds. The
    /// caller then wakes the stage's rings, as for [`request_pause`].
    ///
    /// [`request_pause`]: Self::request_pause
    pub fn request_pause_forced(&self) {
        // Relaxed, both: read together by `pause_forced` in a wait
        // condition, after the wake-up fence, as in `request_pause`.
        self.forced.store(1, Ordering::Relaxed);
        self.cmd.store(PAUSE_REQUESTED, Ordering::Relaxed);
    }

    /// Whether a forced pause request (or an abort) is pending: a stage
    /// waiting for room stops waiting for it.
    #[inline]
    pub fn pause_forced(&self) -> bool {
        // Relaxed: as in `interrupted`.
        self.is_aborted() || (self.forced.load(Ordering::Relaxed) == 1 && self.interrupted())
    }

    /// Withdraws a pause request. `true`: the stage had not accepted it and
    /// now never will. `false`: it already accepted; its hand-over is coming.
    pub fn cancel_pause(&self) -> bool {
        // SYNC POINT: pause-decision (see `try_pause`).
        let cancelled = self
            .cmd
            .compare_exchange(
                PAUSE_REQUESTED,
                RUNNING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if cancelled {
            // A later plain request must not read as forced.
            self.forced.store(0, Ordering::Relaxed);
        }
        cancelled
    }

    /// Clears the word before a paused stage is resumed.
    pub fn reset(&self) {
        // Relaxed: the stage is not running; the thread spawn that resumes it
        // orders this store before its first load.
        self.cmd.store(RUNNING, Ordering::Relaxed);
        self.forced.store(0, Ordering::Relaxed);
    }

    /// Publishes the stage's counters (single writer: plain stores).
    #[inline]
    pub fn record(&self, items_in: u64, items_out: u64) {
        // Relaxed: monotonic counters read by the monitor for rates; no data
        // hangs on them.
        self.items_in.store(items_in, Ordering::Relaxed);
        self.items_out.store(items_out, Ordering::Relaxed);
    }

    /// The command word, read with `order` (the worker protocol: see
    /// `ringweave`'s `child.rs` and `distributed.rs` for the pairs).
    #[inline]
    pub fn load_cmd(&self, order: Ordering) -> Cmd {
        Cmd::from_word(self.cmd.load(order))
    }

    /// Stores `cmd` with `order` (the worker protocol's decisions).
    #[inline]
    pub fn store_cmd(&self, cmd: Cmd, order: Ordering) {
        self.cmd.store(cmd as u32, order);
    }

    /// Replaces `current` by `new` if the word holds `current`; whether it
    /// did.
    #[inline]
    pub fn replace_cmd(
        &self,
        current: Cmd,
        new: Cmd,
        success: Ordering,
        failure: Ordering,
    ) -> bool {
        self.cmd
            .compare_exchange(current as u32, new as u32, success, failure)
            .is_ok()
    }

    /// The command word itself, for futex waits and wakes on it.
    pub fn cmd_word(&self) -> &AtomicU32 {
        &self.cmd
    }

    /// `(items_in, items_out)` as last published.
    pub fn counts(&self) -> (u64, u64) {
        // Relaxed: see `record`.
        (
            self.items_in.load(Ordering::Relaxed),
            self.items_out.load(Ordering::Relaxed),
        )
    }
}

/// What a worker process reports about itself in its [`StageSlot`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Forked, not yet attached to its rings.
    Starting = 0,
    /// Attached and running its stage loop.
    Ready = 1,
    /// Told to leave, it has let go of its control word and only exits from
    /// here.
    Leaving = 2,
    /// Finished its stage (end of stream, output closed) and exits 0 from
    /// here. Lets the coordinator tell a finished worker from a crashed one
    /// when someone else took its exit status.
    Finished = 3,
}

impl WorkerStatus {
    fn from_word(word: u32) -> Option<Self> {
        Some(match word {
            0 => WorkerStatus::Starting,
            1 => WorkerStatus::Ready,
            2 => WorkerStatus::Leaving,
            3 => WorkerStatus::Finished,
            _ => return None,
        })
    }
}

/// Largest accepted `max_state_bytes` (ringweave's `Pipeline::max_state_bytes`):
/// 1 GiB. Every stage gets a state area of this size in the shared control
/// segment (address space, touched only as far as a state is written), so
/// the bound keeps `stages × (state + error area)` far from overflowing,
/// and the segment within what `mmap` can map.
pub const MAX_STATE_BYTES: usize = 1 << 30;

/// One stage's entry in the [`ControlTable`]: its control block plus what a
/// worker process reports through shared memory.
#[repr(C)]
#[derive(Default)]
pub struct StageSlot {
    /// The stage's control block.
    pub control: StageControl,
    /// A [`WorkerStatus`] (worker processes only). A futex word: use
    /// [`status`](Self::status) and [`set_status`](Self::set_status).
    status: CachePadded<AtomicU32>,
    /// Bytes of archived state the worker saved at its last pause, or 0.
    /// Stored by the worker before it stores `Paused` (Release).
    pub state_len: AtomicU64,
    /// Bytes of the error message the worker left before it exited, or 0.
    pub error_len: AtomicU64,
    /// Process id of the stage's worker while one runs, else 0. Written by
    /// the coordinator; read by the handle (Relaxed: informational).
    pub pid: AtomicU32,
    /// Process ids of the worker's replica processes (index 0 unused: the
    /// worker itself is replica 0), 0 where none runs. Written by the
    /// worker; read by the handle (Relaxed: informational).
    pub replica_pids: PerReplica<AtomicU32>,
    /// Items each replica of the stage has taken, ever (replica 0: the
    /// stage's own thread or worker). Added to by the stage after each
    /// batch; read by the handle (Relaxed: informational).
    pub replica_items: PerReplica<AtomicU64>,
    /// The replica whose process ended and failed the worker, or 0. Stored
    /// by the worker before it exits; read by the parent after it reaped
    /// the worker (the exit orders it).
    pub failed_replica: AtomicU32,
}

/// The most replica processes one stage's worker may have (with itself).
pub const MAX_REPLICA_PROCESSES: usize = 64;

/// One word per replica of a stage (see [`StageSlot::replica_pids`] and
/// [`StageSlot::replica_items`]), all zero at first.
#[repr(C)]
pub struct PerReplica<A>(pub [A; MAX_REPLICA_PROCESSES]);

impl<A: Default> Default for PerReplica<A> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| A::default()))
    }
}

impl StageSlot {
    /// The worker's status, read with `order`; `None` for a word no
    /// `WorkerStatus` made (a corrupted segment).
    #[inline]
    pub fn status(&self, order: Ordering) -> Option<WorkerStatus> {
        WorkerStatus::from_word(self.status.load(order))
    }

    /// Stores the worker's status with `order`.
    #[inline]
    pub fn set_status(&self, status: WorkerStatus, order: Ordering) {
        self.status.store(status as u32, order);
    }

    /// The status word itself, for futex waits and wakes on it.
    pub fn status_word(&self) -> &AtomicU32 {
        &self.status
    }
}

/// Bytes each stage may leave as an error message.
const ERROR_AREA: usize = 4096;

/// Where the control blocks live.
enum Storage {
    /// In-process runs: a plain allocation.
    Heap(#[allow(dead_code)] Box<[StageSlot]>),
    /// Runs that may fork: a shared segment that worker processes inherit,
    /// followed by each stage's state and error areas.
    #[cfg(not(ringweave_loom))]
    Segment(#[allow(dead_code)] crate::segment::Segment),
}

/// The control blocks of every stage, source first, in memory that the
/// stages' threads and worker processes all see.
pub struct ControlTable {
    /// `len` slots. Points into `storage`, which lives as long as `self`.
    slots: std::ptr::NonNull<StageSlot>,
    len: usize,
    /// Start of the per-stage areas (state, then error message), and the
    /// state capacity of each; `None` on the heap.
    areas: Option<(std::ptr::NonNull<u8>, usize)>,
    _storage: Storage,
}

// SAFETY: the table only hands out shared references to atomics, and raw
// byte areas whose use the worker protocol orders (see `state_area`).
unsafe impl Send for ControlTable {}
// SAFETY: as above.
unsafe impl Sync for ControlTable {}

impl ControlTable {
    /// A table on the heap, for runs that never fork.
    pub fn heap(len: usize) -> Self {
        let mut slots: Box<[StageSlot]> = (0..len).map(|_| StageSlot::default()).collect();
        let ptr = std::ptr::NonNull::new(slots.as_mut_ptr()).expect("Box pointer is non-null");
        Self {
            slots: ptr,
            len,
            areas: None,
            _storage: Storage::Heap(slots),
        }
    }

    /// A table in a new shared segment, with `state_capacity` bytes of state
    /// area per stage (rounded up to a page).
    ///
    /// # Errors
    ///
    /// [`ControlTableError::TooLarge`] if the table and areas of `len`
    /// stages would not fit in `usize` (`Options::validate` bounds
    /// `state_capacity` by `MAX_STATE_BYTES`, so only a huge `len` could);
    /// [`ControlTableError::Segment`] if the segment cannot be made.
    #[cfg(not(ringweave_loom))]
    pub fn shared(len: usize, state_capacity: usize) -> Result<Self, ControlTableError> {
        let too_large = move || ControlTableError::TooLarge {
            stages: len,
            state_capacity,
        };
        // Every size is checked: a wrapped one would make a small segment
        // that `state_area` then indexes far past (see its SAFETY comment).
        let state_capacity = state_capacity
            .checked_next_multiple_of(4096)
            .ok_or_else(too_large)?;
        let table_bytes = len
            .checked_mul(std::mem::size_of::<StageSlot>())
            .and_then(|bytes| bytes.checked_next_multiple_of(4096))
            .ok_or_else(too_large)?;
        let total = state_capacity
            .checked_add(ERROR_AREA)
            .and_then(|stride| stride.checked_mul(len))
            .and_then(|area_bytes| area_bytes.checked_add(table_bytes))
            .ok_or_else(too_large)?;
        let segment = crate::segment::Segment::create("ringweave-control", total)
            .map_err(ControlTableError::Segment)?;
        let base = segment
            .region(0, total)
            .expect("the segment holds the size it was created with");
        // SAFETY: the payload is zeroed memory, and all-zero bytes are a
        // valid `StageSlot` (atomics at 0: RUNNING, STARTING, no state).
        // `Segment::HEADER_LEN` aligns the payload to 128, enough for
        // `CachePadded`. The mapping lives as long as `_storage`.
        let slots = base.cast::<StageSlot>();
        // SAFETY: `table_bytes <= total`, the length of the region just
        // checked.
        let areas = unsafe { base.add(table_bytes) };
        Ok(Self {
            slots,
            len,
            areas: Some((areas, state_capacity)),
            _storage: Storage::Segment(segment),
        })
    }

    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.len
    }

    /// Whether the table is in shared memory (worker processes can use it).
    pub fn is_shared(&self) -> bool {
        self.areas.is_some()
    }

    /// The slot of stage `index`.
    ///
    /// # Panics
    ///
    /// If `index` is out of range (a coordinator bug).
    #[inline]
    pub fn slot(&self, index: usize) -> &StageSlot {
        assert!(index < self.len, "stage {index} of {}", self.len);
        // SAFETY: in range, initialised (zeroed or constructed), and alive
        // as long as `self`.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// The control block of stage `index`.
    #[inline]
    pub fn get(&self, index: usize) -> &StageControl {
        &self.slot(index).control
    }

    /// The state area of stage `index` (16-byte aligned) and its length, in
    /// a shared table. Written only by the stage's worker while it is
    /// `Pausing` (before it stores `Paused` with Release), read only by the
    /// coordinator after it loads `Paused` with Acquire: see
    /// [`state_area_mut`](Self::state_area_mut) and
    /// [`saved_state`](Self::saved_state).
    fn state_area(&self, index: usize) -> Option<(*mut u8, usize)> {
        let (areas, state_capacity) = self.areas?;
        assert!(index < self.len);
        let stride = state_capacity + ERROR_AREA;
        // SAFETY: `shared` made the areas `len * stride` bytes long and
        // checked that `table_bytes + len * stride` fits in `usize` (it
        // refuses any `state_capacity` and `len` for which it would not,
        // so this holds for every value `Options::validate` accepts, and
        // beyond). With `index < len`, `index * stride + stride` is at most
        // `len * stride`: the offset and the whole area are inside the
        // mapping, and none of these products can wrap. `stride` is a
        // multiple of 4096 and the areas start `table_bytes` (a multiple of
        // 4096) into a payload aligned to 128, hence the 16-byte alignment.
        Some((
            unsafe { areas.as_ptr().add(index * stride) },
            state_capacity,
        ))
    }

    /// The error area of stage `index`: written by its worker just before
    /// it exits with a failure, read by the coordinator after that (see
    /// [`leave_error`](Self::leave_error) and [`read_error`](Self::read_error)).
    fn error_area(&self, index: usize) -> Option<(*mut u8, usize)> {
        let (areas, state_capacity) = self.areas?;
        assert!(index < self.len);
        let stride = state_capacity + ERROR_AREA;
        // SAFETY: as in `state_area`: the error area is the last
        // `ERROR_AREA` bytes of stage `index`'s `stride`, which `shared`
        // checked lies inside the mapping without overflow, whatever
        // `state_capacity` `Options::validate` let through.
        Some((
            unsafe { areas.as_ptr().add(index * stride + state_capacity) },
            ERROR_AREA,
        ))
    }

    /// The whole state area of stage `index`, to archive a state into
    /// (`None` on the heap).
    ///
    /// # Safety
    ///
    /// The caller is the worker of stage `index`, pausing: it has accepted a
    /// pause and not yet stored `Paused`. Nothing else reads or writes the
    /// area until then, and the caller stops using the slice before it
    /// stores `Paused` (with Release).
    // A `&mut` from `&self`: the area is shared memory that the worker
    // protocol, not the borrow checker, hands to one writer at a time; the
    // contract above is that protocol.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn state_area_mut(&self, index: usize) -> Option<&mut [u8]> {
        let (area, capacity) = self.state_area(index)?;
        // SAFETY: `state_area` returns `capacity` mapped bytes that live as
        // long as `self`; the caller's contract makes this the only access.
        Some(unsafe { std::slice::from_raw_parts_mut(area, capacity) })
    }

    /// The first `len` bytes of stage `index`'s state area (at most its
    /// capacity): the state its worker saved at its last pause.
    ///
    /// # Safety
    ///
    /// The worker of stage `index` has stored `Paused`, the caller loaded it
    /// with Acquire, and the worker writes nothing more until told to
    /// resume, for as long as the slice lives.
    pub unsafe fn saved_state(&self, index: usize, len: usize) -> Option<&[u8]> {
        let (area, capacity) = self.state_area(index)?;
        // SAFETY: inside the mapped area (`len` clamped to its capacity),
        // written before the Release store the caller acquired, and not
        // written again while the slice lives (the caller's contract).
        Some(unsafe { std::slice::from_raw_parts(area, len.min(capacity)) })
    }

    /// Leaves `message` (cut to the area's 4 KiB) in stage `index`'s error
    /// area and publishes its length with Release, for
    /// [`read_error`](Self::read_error). Nothing on the heap.
    ///
    /// # Safety
    ///
    /// The caller is the worker of stage `index`, the only writer of this
    /// area, and writes it only on its way out or while pausing: the parent
    /// reads it after the worker has exited, or after it has stored
    /// `Paused` and before it is told to resume (see
    /// [`read_error`](Self::read_error)).
    pub unsafe fn leave_error(&self, index: usize, message: &str) {
        let Some((area, capacity)) = self.error_area(index) else {
            return;
        };
        let bytes = message.as_bytes();
        let len = bytes.len().min(capacity);
        // SAFETY: `len` bytes inside the mapped area, which only the caller
        // writes (its contract); the reader reads after the Release below.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, len) };
        // Release: publishes the bytes to `read_error`'s Acquire.
        self.slot(index)
            .error_len
            .store(len as u64, Ordering::Release);
    }

    /// The message stage `index`'s worker left with
    /// [`leave_error`](Self::leave_error), or an empty string.
    ///
    /// # Safety
    ///
    /// The worker of stage `index` writes no error message while this runs:
    /// it has exited (and was reaped), or it has stored `Paused` — which the
    /// caller loaded with Acquire — and has not been told to resume.
    pub unsafe fn read_error(&self, index: usize) -> String {
        // Acquire: pairs with the Release in `leave_error`.
        let len = self.slot(index).error_len.load(Ordering::Acquire) as usize;
        let Some((area, capacity)) = self.error_area(index) else {
            return String::new();
        };
        // SAFETY: `len <= capacity` bytes inside the mapped area, written
        // before the Release store of `len` loaded above, and not written
        // again (the caller's contract).
        let bytes = unsafe { std::slice::from_raw_parts(area, len.min(capacity)) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Why [`ControlTable::shared`] failed.
#[cfg(not(ringweave_loom))]
#[derive(Debug)]
pub enum ControlTableError {
    /// The segment's size (`stages` slots, plus a state area of
    /// `state_capacity` bytes and an error area per stage) does not fit in
    /// `usize`.
    TooLarge {
        /// Stages in the pipeline.
        stages: usize,
        /// Bytes of state area asked for per stage (`max_state_bytes`).
        state_capacity: usize,
    },
    /// Creating or mapping the segment failed.
    Segment(crate::segment::SegmentError),
}

#[cfg(not(ringweave_loom))]
impl std::fmt::Display for ControlTableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge {
                stages,
                state_capacity,
            } => write!(
                f,
                "{stages} stages with {state_capacity} bytes of state area each (plus \
                 {ERROR_AREA} bytes of error area) overflow the address space"
            ),
            Self::Segment(e) => e.fmt(f),
        }
    }
}

#[cfg(all(test, not(ringweave_loom)))]
mod tests {
    use super::*;

    /// The transitions of the pause handshake, one thread at a time (loom
    /// checks the races: `loom-tests/tests/barrier.rs`).
    #[test]
    fn a_pause_request_is_decided_once() {
        let c = StageControl::default();
        assert!(!c.try_pause(), "no request, nothing to accept");
        assert!(!c.cancel_pause(), "no request, nothing to withdraw");
        c.request_pause();
        assert!(c.interrupted() && !c.is_aborted());
        assert!(c.try_pause(), "the stage accepts");
        assert!(!c.cancel_pause(), "too late: the hand-over is coming");
        assert!(!c.try_pause(), "accepted once only");
        c.reset();
        assert!(!c.interrupted());
        c.request_pause();
        assert!(c.cancel_pause(), "withdrawn before the stage saw it");
        assert!(!c.try_pause(), "a withdrawn request is never accepted");
        c.request_abort();
        assert!(c.is_aborted() && c.interrupted());
        assert!(!c.try_pause() && !c.cancel_pause(), "an abort overrides");
        c.record(7, 5);
        assert_eq!(c.counts(), (7, 5));
    }

    /// Sizes that overflow `usize` are refused; before the checks, four
    /// stages of `1 << 62` bytes wrapped to a segment of a few pages that
    /// `state_area` then indexed far past.
    #[test]
    fn overflowing_sizes_are_refused() {
        for (len, state) in [(4, 1usize << 62), (3, usize::MAX), (usize::MAX / 64, 4096)] {
            match ControlTable::shared(len, state) {
                Err(ControlTableError::TooLarge {
                    stages,
                    state_capacity,
                }) => assert_eq!((stages, state_capacity), (len, state)),
                Err(e) => panic!("{len} × {state}: expected TooLarge, got {e}"),
                Ok(_) => panic!("{len} × {state}: a table was made"),
            }
        }
        let e = ControlTable::shared(4, 1 << 62).err().unwrap().to_string();
        assert!(
            e.contains("4 stages") && e.contains(&(1usize << 62).to_string()),
            "{e}"
        );
        // Three stages of `1 << 62` do not overflow; the segment refuses them.
        assert!(matches!(
            ControlTable::shared(3, 1 << 62),
            Err(ControlTableError::Segment(_))
        ));
    }

    /// Each stage's areas lie inside the segment, one stride apart, at the
    /// largest state capacity `Options::validate` accepts.
    #[test]
    fn areas_fit_at_the_largest_accepted_state() {
        let max = MAX_STATE_BYTES;
        let table = ControlTable::shared(3, max).unwrap();
        let (first, capacity) = table.state_area(0).unwrap();
        assert_eq!(capacity, max);
        let (last_error, error_len) = table.error_area(2).unwrap();
        assert_eq!(
            last_error as usize - first as usize,
            2 * (max + ERROR_AREA) + max
        );
        // The last byte of the last area is mapped and writable.
        // SAFETY: inside the error area of stage 2 (see `error_area`).
        unsafe { last_error.add(error_len - 1).write(0xA5) };
        assert_eq!(first as usize % 16, 0);
    }
}
