//! Linux futexes on words in shared memory, and the [`Sleeper`] built on
//! them.
//!
//! The operations are `FUTEX_WAIT` and `FUTEX_WAKE` *without*
//! `FUTEX_PRIVATE_FLAG`: the private flag keys a futex by (address space,
//! virtual address), so a waiter in a forked child and a waker in its parent
//! would never meet. Without it the kernel keys a `MAP_SHARED` word by (file,
//! offset), which every process mapping the segment shares.
//!
//! [`FutexSleeper`] plugs these into the waiter-flag handshake of
//! [`crate::wait`]: the sleeper sleeps on the flag word itself while it reads
//! [`WAITING`], and the notifier, having swapped the flag to
//! [`IDLE`](crate::wait::IDLE), wakes it. `FUTEX_WAIT` compares the word with
//! [`WAITING`] atomically with going to sleep, so a swap that lands between the
//! sleeper's last check and the syscall makes the syscall return at once
//! (`EAGAIN`): no wake-up is lost.
//!
//! Not compiled under `--cfg ringweave_loom` (loom's atomics are not memory a
//! kernel can wait on); `loom-tests/tests/wakeup.rs` models the handshake with
//! the thread sleeper instead.

use crate::fence;
use crate::sync::atomic::AtomicU32;
use crate::wait::{Sleeper, WAITING};
use nix::errno::Errno;
use std::time::{Duration, Instant};

/// How a [`wait`] ended. Every outcome may be spurious from the caller's
/// point of view: re-check the condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken by [`wake`] (or spuriously).
    Woken,
    /// The word did not hold the expected value when the kernel looked.
    Mismatch,
    /// The timeout passed.
    TimedOut,
    /// A signal handler ran.
    Interrupted,
}

/// Sleeps while `word` holds `expected`, until woken, or until `timeout`
/// (measured on `CLOCK_MONOTONIC`) passes.
///
/// The comparison and the sleep are atomic with respect to [`wake`] on the
/// same word, from any process that maps it.
///
/// # Errors
///
/// The OS error for anything but the four outcomes of [`WaitResult`]:
/// `EFAULT` (cannot happen with a reference), `EINVAL`, `ENOSYS`.
pub fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitResult, Errno> {
    let ts = timeout.map(|t| libc::timespec {
        // Saturate: a timeout of centuries is "forever" in practice.
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    // SAFETY: `word` is a live, aligned `u32` (an `AtomicU32` has the layout
    // of `u32`); the kernel reads it atomically and does not keep the
    // address. `ts_ptr` is null or points to a `timespec` that outlives the
    // call. The remaining arguments are ignored by FUTEX_WAIT.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret == 0 {
        return Ok(WaitResult::Woken);
    }
    match Errno::last() {
        Errno::EAGAIN => Ok(WaitResult::Mismatch),
        Errno::ETIMEDOUT => Ok(WaitResult::TimedOut),
        Errno::EINTR => Ok(WaitResult::Interrupted),
        errno => Err(errno),
    }
}

/// Sleeps while `word` holds `expected`, until woken or `deadline`.
///
/// # Errors
///
/// As for [`wait`].
pub fn wait_until(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> Result<WaitResult, Errno> {
    match deadline {
        None => wait(word, expected, None),
        Some(deadline) => {
            let now = Instant::now();
            if deadline <= now {
                return Ok(WaitResult::TimedOut);
            }
            wait(word, expected, Some(deadline - now))
        }
    }
}

/// Wakes up to `count` waiters sleeping on `word` (in any process), and
/// returns how many were woken. Pass `u32::MAX` for all.
///
/// # Errors
///
/// The OS error: `EINVAL`, `ENOSYS`.
pub fn wake(word: &AtomicU32, count: u32) -> Result<usize, Errno> {
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    // SAFETY: `word` is a live, aligned `u32`; FUTEX_WAKE does not access
    // it, it only uses the address as the key. The remaining arguments are
    // ignored by FUTEX_WAKE.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// The cross-process [`Sleeper`]: sleeps on the waiter flag itself with a
/// futex.
///
/// Stateless, so one value can live anywhere (each ring handle holds its own
/// copy); the flag word in shared memory is the only state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexSleeper {
    /// Waiters woken per wake-up.
    wake_count: u32,
}

impl Default for FutexSleeper {
    fn default() -> Self {
        Self::new()
    }
}

impl FutexSleeper {
    /// A sleeper whose wake-up wakes one waiter: enough for an SPSC ring,
    /// where one side sleeps on each flag.
    #[must_use]
    pub const fn new() -> Self {
        Self { wake_count: 1 }
    }

    /// A sleeper whose wake-up wakes every waiter on the flag (for a flag
    /// several processes may sleep on, such as a barrier word).
    #[must_use]
    pub const fn waking_all() -> Self {
        Self {
            wake_count: u32::MAX,
        }
    }
}

impl Sleeper for FutexSleeper {
    /// Nothing to register: the futex is keyed by the flag's address.
    fn prepare(&self) {}

    /// A global membarrier (see [`crate::fence`]): the notifier, perhaps in
    /// another process, gets away with a compiler fence.
    fn waiter_fence(&self) {
        fence::shared_heavy();
    }

    #[inline]
    fn notifier_fence(&self) {
        fence::shared_light();
    }

    fn sleep(&self, flag: &AtomicU32, deadline: Option<Instant>) {
        // Without the global barrier our fence does not order a registered
        // notifier's compiler fence: bound what a lost wake-up can cost.
        let deadline = if fence::shared_barrier() {
            deadline
        } else {
            let cap = Instant::now() + fence::UNBARRIERED_SLEEP;
            Some(deadline.map_or(cap, |d| d.min(cap)))
        };
        match wait_until(flag, WAITING, deadline) {
            Ok(_) => {}
            // Only EINVAL or ENOSYS can get here, on a kernel without
            // futexes. Returning is always allowed (the caller re-checks);
            // yield so that such a kernel degrades to a yield loop rather
            // than a spin.
            Err(_) => std::thread::yield_now(),
        }
    }

    fn wake(&self, flag: &AtomicU32) {
        // An error (see `sleep`) leaves nothing to do: a sleeper that could
        // not sleep is not asleep.
        let _ = wake(flag, self.wake_count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::atomic::Ordering;
    use crate::wait::{self, WaitStrategy, IDLE};
    use std::sync::Arc;

    #[test]
    fn mismatch_returns_at_once() {
        let word = AtomicU32::new(5);
        assert_eq!(wait(&word, 4, None), Ok(WaitResult::Mismatch));
    }

    #[test]
    fn timeout_returns() {
        let word = AtomicU32::new(0);
        assert_eq!(
            wait(&word, 0, Some(Duration::from_millis(1))),
            Ok(WaitResult::TimedOut)
        );
        assert_eq!(
            wait_until(&word, 0, Some(Instant::now())),
            Ok(WaitResult::TimedOut)
        );
    }

    #[test]
    fn wake_with_nobody_waiting_wakes_nobody() {
        let word = AtomicU32::new(0);
        assert_eq!(wake(&word, 1), Ok(0));
    }

    #[test]
    fn without_the_global_barrier_a_sleep_ends_by_itself() {
        // In a process that cannot issue global membarriers, a registered
        // notifier's compiler fence is not ordered against our re-check, so
        // a wake-up may be lost: the sleep must end on its own. Nobody wakes
        // this one. (Other tests of this binary may run meanwhile with the
        // barrier off; that is correct, at worst slower.)
        let could = fence::set_shared_barrier(false);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let word = AtomicU32::new(WAITING);
            FutexSleeper::new().sleep(&word, None);
            let _ = done.send(());
        });
        let ended = finished.recv_timeout(Duration::from_secs(10));
        fence::set_shared_barrier(could);
        assert!(
            ended.is_ok(),
            "a sleep without a deadline did not end within 10 s ({:?} cap)",
            fence::UNBARRIERED_SLEEP
        );
    }

    #[test]
    fn handshake_between_threads() {
        // The sleeper side of `wait::wait_until` against a notifier thread,
        // with futexes; many rounds so that both interleavings (notifier
        // before and after the sleeper arms) occur.
        let shared = Arc::new((AtomicU32::new(IDLE), AtomicU32::new(0)));
        let rounds = if cfg!(debug_assertions) {
            2_000
        } else {
            20_000
        };
        let notifier = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (flag, data) = &*shared;
                for i in 1..=rounds {
                    // Release: the sleeper's Acquire load of `data` sees it.
                    data.store(i, Ordering::Release);
                    wait::notify(flag, &FutexSleeper::new());
                    // Wait for the sleeper to take it, so every round sleeps
                    // or at least arms.
                    while data.load(Ordering::Acquire) != 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let (flag, data) = &*shared;
        for i in 1..=rounds {
            let ready = wait::wait_until(
                flag,
                &FutexSleeper::new(),
                WaitStrategy::SLEEP_AT_ONCE,
                None,
                || data.load(Ordering::Acquire) == i,
            );
            assert!(ready);
            data.store(0, Ordering::Release);
        }
        notifier.join().unwrap();
    }
}
