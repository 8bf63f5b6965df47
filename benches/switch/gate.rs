//! Where the pause benches' source and sink wait, and how the source is
//! paced. Only threads of the bench process use these: the source and the
//! sink stay in it in both modes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Blocks the thread that calls [`Gate::pass`] while its count has reached
/// the limit. Only the source and sink threads of this process use gates;
/// the bench thread moves the limit. No thread holds the mutex at a fork:
/// the coordinator forks with every stage thread ended, and the bench thread
/// is blocked in `switch_to`.
pub(super) struct Gate {
    limit: AtomicU64,
    waiter: Mutex<Option<Thread>>,
}

impl Gate {
    pub(super) fn new() -> Self {
        Self {
            limit: AtomicU64::new(u64::MAX),
            waiter: Mutex::new(None),
        }
    }

    /// Returns once `n < limit`.
    #[inline]
    pub(super) fn pass(&self, n: u64) {
        // Acquire: pairs with the Release in `set` (the limit carries no
        // data, but keep the gate's order obvious).
        if n < self.limit.load(Ordering::Acquire) {
            return;
        }
        // Registered before the re-check: `set` stores the limit before it
        // looks for a waiter, so one of the two sees the other.
        *self.waiter.lock().unwrap() = Some(thread::current());
        while n >= self.limit.load(Ordering::Acquire) {
            thread::park_timeout(Duration::from_millis(1));
        }
    }

    pub(super) fn set(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
        if let Some(waiter) = &*self.waiter.lock().unwrap() {
            waiter.unpark();
        }
    }
}

/// What the bench thread shares with the source and sink of one run.
pub(super) struct Probe {
    pub(super) source: Gate,
    pub(super) sink: Gate,
    /// The source ends before this item.
    pub(super) end: AtomicU64,
    /// Items the source has handed out.
    pub(super) produced: AtomicU64,
    /// Items the sink has received.
    pub(super) consumed: AtomicU64,
    /// Set by the sink if an item is not the one expected next.
    pub(super) disorder: AtomicBool,
}

/// Paces the source at one item per `period` (none for a zero period) by
/// sleeping before every `PACE_BURST`-th item until it is due. Sleeping, not
/// spinning: a spinning source would hold a core the stages need (on these
/// 2-core machines that alone fills the rings). After a late wake-up it
/// carries on from now instead of bursting to catch up.
pub(super) struct Pacer {
    pub(super) due: Instant,
    pub(super) period: Duration,
    pub(super) count: u32,
}

/// Items the paced source hands out between two sleeps: its batch.
pub(super) const PACE_BURST: u32 = 256;

impl Pacer {
    #[inline]
    pub(super) fn wait(&mut self) {
        if self.period.is_zero() {
            return;
        }
        self.count += 1;
        if self.count < PACE_BURST {
            return;
        }
        self.count = 0;
        let now = Instant::now();
        if now < self.due {
            thread::sleep(self.due - now);
        } else {
            self.due = now;
        }
        self.due += self.period * PACE_BURST;
    }
}

/// The (paced) gated source.
pub(super) struct Source {
    pub(super) next: u64,
    pub(super) pacer: Pacer,
    pub(super) probe: Arc<Probe>,
}

impl Iterator for Source {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let x = self.next;
        self.probe.source.pass(x);
        // Relaxed: `end` only stops the source; the run's join orders the rest.
        if x >= self.probe.end.load(Ordering::Relaxed) {
            return None;
        }
        self.pacer.wait();
        self.next = x + 1;
        // Relaxed: a progress counter for the bench thread's polling.
        self.probe.produced.store(x + 1, Ordering::Relaxed);
        Some(x)
    }
}
