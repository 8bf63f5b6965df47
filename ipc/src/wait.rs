//! Waiting without burning a core, and waking without paying for it.
//!
//! A side that cannot proceed waits in three tiers (see [`WaitStrategy`]):
//! a few spins with the CPU's pause hint, a few `yield`s, then sleep. The sleep
//! is a thread park for the in-process ring and a futex for rings in shared
//! memory; either way it goes through the same waiter-flag handshake:
//!
//! ```text
//!  sleeper                             notifier
//!  flag = WAITING                      (publish data / space / a command)
//!  fence(SeqCst)  ─── SYNC POINT ───   fence(SeqCst)
//!  if ready(): flag = 0; return        if flag == WAITING:
//!  sleep while flag == WAITING             flag = 0; wake
//! ```
//!
//! This is Dekker's pattern: with a SeqCst fence between each side's store and
//! its load, at least one side sees the other's store, so either the sleeper
//! sees the data and does not sleep, or the notifier sees the flag and wakes
//! it. A wake-up is never lost, and while nobody sleeps the notifier pays one
//! fence and one load of a line nobody writes, with no syscall and no RMW.
//! Loom checks it in `loom-tests/tests/wakeup.rs`. (One relaxation, outside
//! loom: the first sleep of a wait is armed with a cheaper fence that can
//! miss a notifier in a window of nanoseconds, and is therefore bounded by
//! [`LIGHT_SLEEP`]; see [`wait_until`].)

use crate::sync::atomic::{fence, AtomicU32, Ordering};
use crate::sync::{hint, thread, Mutex};
use std::time::{Duration, Instant};

/// Flag value: nobody sleeps on this flag.
pub const IDLE: u32 = 0;
/// Flag value: a sleeper has armed this flag and may be asleep.
pub const WAITING: u32 = 1;

/// How long to spin and to yield before sleeping.
///
/// Pipelines usually have more threads than cores (five stages on two cores
/// is the common case here), so the defaults spin briefly and yield early: a
/// spinning thread steals the core its producer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitStrategy {
    /// Checks separated by `spin_loop` hints before yielding.
    pub spins: u32,
    /// Checks separated by `yield_now` before sleeping.
    pub yields: u32,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        // Under loom every spin and yield is a scheduling point the model
        // checker explores: keep one of each there (the count is tuning,
        // not protocol).
        if crate::sync::LOOM {
            return Self {
                spins: 1,
                yields: 1,
            };
        }
        // Parking costs a membarrier (see `crate::fence`), so yield for a
        // while first: with more threads than cores a yield hands the core
        // to the thread we wait for.
        Self {
            spins: 16,
            yields: 64,
        }
    }
}

impl WaitStrategy {
    /// Sleep as soon as a check fails: for tests and for threads that must not
    /// compete for a core.
    pub const SLEEP_AT_ONCE: Self = Self {
        spins: 0,
        yields: 0,
    };
}

/// How a sleeper is put to sleep and woken: a parked thread, or a futex when
/// the flag lives in shared memory.
pub trait Sleeper {
    /// Called before arming the flag: the in-process sleeper registers the
    /// current thread here. Must not touch the flag.
    fn prepare(&self);

    /// Sleeps while `flag` reads [`WAITING`], until woken or `deadline`.
    /// May return early (spuriously); the caller re-checks.
    fn sleep(&self, flag: &AtomicU32, deadline: Option<Instant>);

    /// Wakes whoever sleeps on `flag`. Called only after the notifier has
    /// swapped the flag from [`WAITING`] to [`IDLE`].
    fn wake(&self, flag: &AtomicU32);

    /// The sleeper's fence between arming the flag and re-checking: SeqCst
    /// unless the sleeper pairs a heavier one with a lighter
    /// [`notifier_fence`](Self::notifier_fence) (see [`crate::fence`]).
    #[inline]
    fn waiter_fence(&self) {
        fence(Ordering::SeqCst);
    }

    /// The notifier's fence between publishing and reading the flag.
    #[inline]
    fn notifier_fence(&self) {
        fence(Ordering::SeqCst);
    }

    /// How long the first sleep of a wait may last when it was armed with a
    /// SeqCst fence instead of [`waiter_fence`](Self::waiter_fence), or
    /// `None` to always use `waiter_fence`. Only a sleeper whose notifiers
    /// use a lighter fence has a reason to say `Some` (see
    /// [`wait_until`]).
    #[inline]
    fn light_sleep(&self) -> Option<Duration> {
        None
    }
}

/// Waits until `ready()` returns `true` or `deadline` passes.
///
/// Returns whether `ready()` returned `true`. `ready` is called from the
/// waiting thread only and must read (with Acquire where it needs data) what
/// the notifier publishes before calling [`notify`].
pub fn wait_until<S: Sleeper + ?Sized>(
    flag: &AtomicU32,
    sleeper: &S,
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    if ready() {
        return true;
    }
    for _ in 0..strategy.spins {
        hint::spin_loop();
        if ready() {
            return true;
        }
    }
    for _ in 0..strategy.yields {
        if ready() {
            return true;
        }
        thread::yield_now();
    }
    // The first sleep of this wait may be armed with a plain SeqCst fence
    // instead of the sleeper's (perhaps far heavier) `waiter_fence`; see
    // `arm` below.
    let mut light = sleeper.light_sleep();
    let mut woken = false;
    loop {
        // Woken (or timed out): the flag is IDLE or ours. Look before paying
        // for another arming.
        if woken && ready() {
            flag.swap(IDLE, Ordering::Relaxed);
            return true;
        }
        woken = true;
        sleeper.prepare();
        // Release: publishes what `prepare` registered to the notifier's
        // AcqRel swap (SYNC POINT: waiter-register).
        //
        // A swap, not a store, here and for every other write of the flag
        // below: the flag has two writers (us, and the notifier's swap in
        // `wake_armed`), and with every write an RMW its modification order
        // is one chain. Loom 0.7 does not place a plain store after a
        // concurrent RMW that read an older value, and then lets the
        // notifier's post-fence load read that RMW's stale IDLE: a lost
        // wake-up that the memory model forbids, reported as a deadlock (see
        // loom-tests/tests/wakeup.rs). With RMWs loom checks the code that
        // ships. The cost is an RMW on the way to sleep; `notify`'s fast path
        // is unchanged.
        flag.swap(WAITING, Ordering::Release);
        // SYNC POINT: waiter-flag. SeqCst fence, because this is a
        // store→load pattern (our flag store, then `ready()`'s loads) racing
        // the mirror pattern in `notify`; Acquire/Release cannot order a store
        // before a later load. Pairs with the fence in `notify`.
        //
        // A light arming pairs a SeqCst fence with a notifier that may use
        // only a compiler fence (`crate::fence`): then Dekker's argument
        // fails in one window, a notifier whose data store still sits in its
        // store buffer while it loads the flag across our whole arming and
        // re-check (tens of nanoseconds). A wake-up lost that way costs at
        // most the light sleep's bound, after which we arm again with the
        // full `waiter_fence`, which is exact. It spares a thread that
        // parks between every item of a slow stream the `membarrier` each
        // park would cost (and the interrupt it sends the CPU running the
        // next hop); measured in docs/PERF.md, latency.
        let bound = light.take();
        match bound {
            Some(_) => fence(Ordering::SeqCst),
            None => sleeper.waiter_fence(),
        }
        if ready() {
            // Relaxed: a notifier that still sees WAITING only wakes us
            // spuriously. A swap for the reason given above.
            flag.swap(IDLE, Ordering::Relaxed);
            return true;
        }
        if let Some(deadline) = deadline {
            if Instant::now() >= deadline {
                flag.swap(IDLE, Ordering::Relaxed);
                return ready();
            }
        }
        match bound {
            Some(bound) => {
                let until = Instant::now() + bound;
                sleeper.sleep(flag, Some(deadline.map_or(until, |d| d.min(until))));
            }
            None => sleeper.sleep(flag, deadline),
        }
    }
}

/// Wakes the sleeper on `flag`, if any. Call after publishing what the
/// sleeper's `ready()` checks.
#[inline]
pub fn notify<S: Sleeper + ?Sized>(flag: &AtomicU32, sleeper: &S) {
    // SYNC POINT: waiter-flag. Pairs with the fence in `wait_until`; see there.
    sleeper.notifier_fence();
    // Relaxed: ordered by the fence above; a stale IDLE is impossible for a
    // sleeper that armed before our fence (Dekker), and a sleeper that arms
    // after it will see our data.
    if flag.load(Ordering::Relaxed) == WAITING {
        wake_armed(flag, sleeper);
    }
}

#[cold]
fn wake_armed<S: Sleeper + ?Sized>(flag: &AtomicU32, sleeper: &S) {
    // SYNC POINT: waiter-register. AcqRel: Acquire sees the registration the
    // sleeper made before its Release store of WAITING; only one notifier
    // wins the swap and pays for the wake.
    if flag.swap(IDLE, Ordering::AcqRel) == WAITING {
        sleeper.wake(flag);
    }
}

/// The bound on a [`ThreadSleeper`]'s first sleep of a wait, armed with a
/// SeqCst fence rather than `membarrier` (see [`wait_until`]): a wake-up
/// lost in the window that leaves costs at most this much.
pub const LIGHT_SLEEP: Duration = Duration::from_millis(1);

/// The in-process sleeper: parks the thread that armed the flag.
#[derive(Debug, Default)]
pub struct ThreadSleeper {
    thread: Mutex<Option<thread::Thread>>,
}

impl ThreadSleeper {
    /// A sleeper with no thread registered.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Option<thread::Thread>> {
        // The mutex guards a plain `Option<Thread>` with no invariant to
        // break, so a poisoned lock is still a valid one.
        self.thread.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sleeper for ThreadSleeper {
    /// `membarrier` where the process registered for it (see
    /// [`crate::fence`]): sleeping threads pay, notifiers do not.
    #[inline]
    fn waiter_fence(&self) {
        crate::fence::heavy();
    }

    /// A compiler fence where the waiter side uses `membarrier`.
    #[inline]
    fn notifier_fence(&self) {
        crate::fence::light();
    }

    /// [`LIGHT_SLEEP`]; `None` under loom, which checks the exact
    /// handshake only.
    #[inline]
    fn light_sleep(&self) -> Option<Duration> {
        (!crate::sync::LOOM).then_some(LIGHT_SLEEP)
    }

    fn prepare(&self) {
        // Re-registered on every sleep: a ring handle may move to another
        // thread between sleeps (a pipeline re-spawns its stages at a switch).
        *self.lock() = Some(thread::current());
    }

    fn sleep(&self, flag: &AtomicU32, deadline: Option<Instant>) {
        // Acquire: pairs with the notifier's AcqRel swap to IDLE.
        if flag.load(Ordering::Acquire) != WAITING {
            return;
        }
        match deadline {
            None => thread::park(),
            #[cfg(not(ringweave_loom))]
            Some(deadline) => {
                let now = Instant::now();
                if deadline > now {
                    thread::park_timeout(deadline - now);
                }
            }
            // Loom has no clock: a timed sleep is modelled as a deadline that
            // may pass at any moment.
            #[cfg(ringweave_loom)]
            Some(_) => thread::yield_now(),
        }
    }

    fn wake(&self, _flag: &AtomicU32) {
        if let Some(thread) = self.lock().as_ref() {
            thread.unpark();
        }
    }
}
