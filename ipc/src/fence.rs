//! Asymmetric fences for the in-process waiter-flag handshake.
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
//! It only covers threads of one process: the shared-memory ring keeps
//! SeqCst fences on both sides. Where `membarrier` is missing (old kernels,
//! seccomp), [`init`] finds out once and both functions fall back to SeqCst
//! fences. Under loom both are SeqCst fences: loom checks the symmetric
//! handshake, and the asymmetric one rests on the argument above.

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
        if STATE.load(Ordering::Relaxed) == ASYMMETRIC {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The sleeper's side: a process-wide barrier, or a SeqCst fence.
    pub fn heavy() {
        if STATE.load(Ordering::Relaxed) == ASYMMETRIC {
            if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 {
                // Registered, so it cannot fail; if the kernel says
                // otherwise the notifiers' compiler fences are unsound and
                // a wake-up could be lost. Stop rather than hang.
                eprintln!("ringweave: membarrier failed after registration; aborting");
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
}

pub use imp::{heavy, init, light};
