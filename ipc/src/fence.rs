//! Asymmetric fences for the waiter-flag handshake.
//!
//! The handshake in [`crate::wait`] is Dekker's pattern: each side stores,
//! then fences, then loads. With a SeqCst fence on both sides the notifier —
//! every `push` and `pop` of the in-process ring — pays an `mfence`, which
//! also waits for its store to the contended index line to drain: tens of
//! nanoseconds per item on the hot path, for a sleeper that is almost never
//! there.
//!
//! So the fast side gets a compiler fence only ([`light`]) and the slow side
//! — a thread about to park — pays for both with
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` ([`heavy`]), which makes
//! every running thread of this process execute a full memory barrier before
//! it returns. Whatever the notifier did before its compiler fence is then
//! ordered against the sleeper's re-check, and the sleeper's flag store
//! (before the syscall, itself a full barrier) is visible to a notifier
//! whose load comes after the barrier it was made to run. This is the
//! scheme of liburcu and folly's `asymmetricHeavyBarrier`.
//!
//! `PRIVATE_EXPEDITED` only covers threads of one process. Across processes
//! — a [`FutexSleeper`](crate::futex::FutexSleeper) on a shared-memory ring —
//! [`shared_light`] and [`shared_heavy`] do the same with
//! `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, which runs a barrier on every CPU
//! currently running a thread of a process registered for it. A process
//! registers in [`init_shared`] (every record ring does so when it is made)
//! and uses compiler fences as a notifier only once registered. A process
//! forked after that registers again in a `pthread_atfork` child handler, so
//! a child never relies on the kernel copying its parent's registration; if
//! that fails, the child's notifiers use SeqCst fences, which is correct
//! against any sleeper. A sleeper issues the global barrier whenever the
//! kernel offers it, registered or not. If it cannot (membarrier missing, or
//! denied by a seccomp filter in this process only), its own fence is a
//! SeqCst fence, which would not order a registered peer's compiler fence:
//! so in that case the futex sleeper never sleeps longer than
//! [`UNBARRIERED_SLEEP`] at a time, and a lost wake-up costs that much at
//! most instead of a hang.
//!
//! Where `membarrier` is missing (old kernels, seccomp), [`init`] and
//! [`init_shared`] find out once and the functions fall back to SeqCst
//! fences. Under loom all four are SeqCst fences: loom checks the symmetric
//! handshake, and the asymmetric one rests on the argument above.

use std::time::Duration;

/// The longest a futex sleeper sleeps at a time in a process that cannot
/// issue global barriers (see the module docs).
pub const UNBARRIERED_SLEEP: Duration = Duration::from_millis(10);

#[cfg(not(ringweave_loom))]
mod imp {
    use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};
    use std::sync::Once;

    const UNKNOWN: u8 = 0;
    const ASYMMETRIC: u8 = 1;
    const SYMMETRIC: u8 = 2;

    /// Which scheme this process uses; set once by `init`, before any ring
    /// exists, and never changed.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier takes two integers and touches no memory of
        // ours; an unsupported command returns -1 with EINVAL or ENOSYS.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        }
    }

    /// Registers this process for expedited membarriers, once. Call before
    /// handing out any handle whose waits use [`light`]/[`heavy`]; every
    /// user of such a handle is then ordered after this call (the handle
    /// reached it through a thread spawn or a channel).
    pub fn init() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // Miri has no membarrier: it checks the symmetric handshake.
            let state = if !cfg!(miri) && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
            {
                ASYMMETRIC
            } else {
                SYMMETRIC
            };
            // Relaxed: `Once` orders this store before every `call_once`
            // return, and handles travel with happens-before (see above).
            STATE.store(state, Ordering::Relaxed);
        });
    }

    /// The notifier's side: a compiler fence if the sleeper side uses
    /// `membarrier`, else a SeqCst fence.
    #[inline]
    pub fn light() {
        // Relaxed: set once before any handle existed (see `init`).
        notifier_fence(STATE.load(Ordering::Relaxed));
    }

    /// A compiler fence where the sleepers' barrier covers us (`state` is
    /// ASYMMETRIC), else a SeqCst fence.
    #[inline]
    fn notifier_fence(state: u8) {
        if state == ASYMMETRIC {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

    /// This process's part as a cross-process notifier: ASYMMETRIC once
    /// registered for global expedited barriers (compiler fences suffice),
    /// else UNKNOWN or SYMMETRIC (SeqCst fences). Written by `init_shared`
    /// and by the fork child handler.
    static SHARED: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Whether this process can issue global expedited barriers: ASYMMETRIC
    /// if so, SYMMETRIC if not, UNKNOWN before `init_shared`.
    static ISSUER: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Registers this process for global expedited membarriers, once, and
    /// makes every child forked after this register too. Cheap after the
    /// first call; every record ring calls it when it is made.
    pub fn init_shared() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // Miri has no membarrier: it checks the symmetric handshake.
            let query = if cfg!(miri) {
                -1
            } else {
                membarrier(MEMBARRIER_CMD_QUERY)
            };
            let offered = |cmd: libc::c_int| query > 0 && query & libc::c_long::from(cmd) != 0;
            let can_issue = offered(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
            let registered = can_issue
                && offered(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
                // SAFETY: registers a function that makes one system call
                // and stores to an atomic, both allowed in a forked child.
                && unsafe { libc::pthread_atfork(None, None, Some(register_in_child)) } == 0
                && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
            // Relaxed: as in `init`, `Once` orders these stores before every
            // `call_once` return.
            ISSUER.store(
                if can_issue { ASYMMETRIC } else { SYMMETRIC },
                Ordering::Relaxed,
            );
            SHARED.store(
                if registered { ASYMMETRIC } else { SYMMETRIC },
                Ordering::Relaxed,
            );
        });
    }

    /// Runs in every child forked after a successful `init_shared`, before
    /// `fork` returns there: the child is a new process and registers
    /// itself, or falls back to SeqCst fences as a notifier.
    extern "C" fn register_in_child() {
        if membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0 {
            // Relaxed: the child is single-threaded until fork returns.
            SHARED.store(SYMMETRIC, Ordering::Relaxed);
        }
    }

    /// The cross-process notifier's side: a compiler fence if this process
    /// is registered for global barriers, else a SeqCst fence.
    #[inline]
    pub fn shared_light() {
        // Relaxed: set by `init_shared` on this thread or before this
        // handle reached it (a ring's descriptor calls it before making
        // handles), or by the fork child handler before `fork` returned.
        notifier_fence(SHARED.load(Ordering::Relaxed));
    }

    /// The cross-process sleeper's side: a barrier on every CPU running a
    /// registered process (including a full barrier here), or a SeqCst
    /// fence (see [`shared_barrier`]).
    pub fn shared_heavy() {
        init_shared();
        sleeper_barrier(
            ISSUER.load(Ordering::Relaxed),
            MEMBARRIER_CMD_GLOBAL_EXPEDITED,
        );
    }

    /// Whether [`shared_heavy`] issues global barriers in this process.
    pub fn shared_barrier() -> bool {
        init_shared();
        ISSUER.load(Ordering::Relaxed) == ASYMMETRIC
    }

    /// Makes this process act as one that can (or cannot) issue global
    /// barriers; returns what it was. For the test of the capped sleep.
    #[cfg(test)]
    pub fn set_shared_barrier(can_issue: bool) -> bool {
        init_shared();
        let state = if can_issue { ASYMMETRIC } else { SYMMETRIC };
        // Relaxed: a test's own thread reads it back; other threads may see
        // either value, and both are correct (see the module docs).
        ISSUER.swap(state, Ordering::Relaxed) == ASYMMETRIC
    }

    /// The sleeper's side: a process-wide barrier, or a SeqCst fence.
    pub fn heavy() {
        sleeper_barrier(
            STATE.load(Ordering::Relaxed),
            MEMBARRIER_CMD_PRIVATE_EXPEDITED,
        );
    }

    /// `membarrier(cmd)` where `state` says notifiers rely on it (they use
    /// compiler fences), else a SeqCst fence.
    fn sleeper_barrier(state: u8, cmd: libc::c_int) {
        if state == ASYMMETRIC {
            if membarrier(cmd) != 0 {
                // The kernel accepted this command before (registration or
                // query); if it now fails, the notifiers' compiler fences
                // are unordered and a wake-up could be lost. Stop rather
                // than hang.
                eprintln!("ringweave: membarrier({cmd}) failed after it was accepted; aborting");
                std::process::abort();
            }
        } else {
            fence(Ordering::SeqCst);
        }
    }
}

#[cfg(ringweave_loom)]
mod imp {
    use crate::sync::atomic::{fence, Ordering};

    /// Nothing to register under loom.
    pub fn init() {}

    /// A SeqCst fence: loom models the symmetric handshake.
    pub fn light() {
        fence(Ordering::SeqCst);
    }

    /// A SeqCst fence: loom models the symmetric handshake.
    pub fn heavy() {
        fence(Ordering::SeqCst);
    }

    /// Nothing to register under loom.
    pub fn init_shared() {}

    /// A SeqCst fence: loom models the symmetric handshake.
    pub fn shared_light() {
        fence(Ordering::SeqCst);
    }

    /// A SeqCst fence: loom models the symmetric handshake.
    pub fn shared_heavy() {
        fence(Ordering::SeqCst);
    }

    /// Under loom every fence is SeqCst, so sleeps need no cap.
    pub fn shared_barrier() -> bool {
        true
    }
}

pub use imp::{heavy, init, init_shared, light, shared_barrier, shared_heavy, shared_light};

#[cfg(all(test, not(ringweave_loom)))]
pub(crate) use imp::set_shared_barrier;
