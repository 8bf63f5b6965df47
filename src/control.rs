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
//! executor's event channel, which orders everything the stage did before
//! pausing before everything the coordinator does with it.

use crossbeam_utils::CachePadded;
use ringweave_ipc::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The stage runs.
const RUNNING: u32 = 0;
/// The coordinator asks the stage to pause.
const PAUSE_REQUESTED: u32 = 1;
/// The stage accepted: it stops and hands itself over.
const PAUSING: u32 = 2;

/// One stage's control block. `#[repr(C)]` with fixed-width atomics so it
/// can live in a shared segment where worker processes update it too.
#[repr(C)]
#[derive(Default)]
pub(crate) struct StageControl {
    /// `RUNNING`, `PAUSE_REQUESTED` or `PAUSING`.
    cmd: CachePadded<AtomicU32>,
    /// Items the stage has taken from its input, ever. Stored only by the
    /// stage (single writer), read by the monitor.
    items_in: CachePadded<AtomicU64>,
    /// Items the stage has handed to its output, ever. Same writer.
    items_out: CachePadded<AtomicU64>,
}

impl StageControl {
    /// Whether a pause is requested (a hint; [`try_pause`](Self::try_pause)
    /// decides).
    #[inline]
    pub(crate) fn pause_requested(&self) -> bool {
        // Relaxed: only a hint that sends the stage to `try_pause`, whose CAS
        // is what counts.
        self.cmd.load(Ordering::Relaxed) == PAUSE_REQUESTED
    }

    /// Accepts a pending pause request. `true`: the stage must stop now and
    /// hand itself over; `false`: no request (or it was cancelled) — go on.
    #[inline]
    pub(crate) fn try_pause(&self) -> bool {
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
    /// before the wake check; see `ringweave_ipc::wait`).
    pub(crate) fn request_pause(&self) {
        // Relaxed: ordered against the stage's sleep by the SeqCst fence in
        // `wait::notify`, which the caller runs next.
        self.cmd.store(PAUSE_REQUESTED, Ordering::Relaxed);
    }

    /// Withdraws a pause request. `true`: the stage had not accepted it and
    /// now never will. `false`: it already accepted; its hand-over is coming.
    pub(crate) fn cancel_pause(&self) -> bool {
        // SYNC POINT: pause-decision (see `try_pause`).
        self.cmd
            .compare_exchange(
                PAUSE_REQUESTED,
                RUNNING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Clears the word before a paused stage is resumed.
    pub(crate) fn reset(&self) {
        // Relaxed: the stage is not running; the thread spawn that resumes it
        // orders this store before its first load.
        self.cmd.store(RUNNING, Ordering::Relaxed);
    }

    /// Publishes the stage's counters (single writer: plain stores).
    #[inline]
    pub(crate) fn record(&self, items_in: u64, items_out: u64) {
        // Relaxed: monotonic counters read by the monitor for rates; no data
        // hangs on them.
        self.items_in.store(items_in, Ordering::Relaxed);
        self.items_out.store(items_out, Ordering::Relaxed);
    }

    /// `(items_in, items_out)` as last published.
    pub(crate) fn counts(&self) -> (u64, u64) {
        // Relaxed: see `record`.
        (
            self.items_in.load(Ordering::Relaxed),
            self.items_out.load(Ordering::Relaxed),
        )
    }
}
