//! A hand-wired `rtrb` ring that waits like ringweave's rings: spin, yield,
//! then park until the other side says there is something to do. One item
//! per push and pop; the bench's `rtrb` contender is built from these.

use ringweave::WaitStrategy;
use std::hint;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

/// How long the parked side sleeps before it looks again even without an
/// `unpark` (a backstop: the protocol does not need it).
const PARK_TIMEOUT: Duration = Duration::from_micros(100);

/// One side's wake-up for an `rtrb` ring: the side that finds the ring empty
/// (or full) spins and yields as ringweave's default [`WaitStrategy`] does,
/// then sets `waiting` and parks; the other side, after each push (or pop),
/// clears `waiting` and unparks it.
///
/// The handshake is the usual store-fence-load on both sides: the waiter
/// stores `waiting = true`, fences (SeqCst) and looks at the ring again;
/// the notifier pushes (or pops), fences (SeqCst) and loads `waiting`. The
/// two fences order the two pairs, so either the waiter sees the new item
/// (or space) and does not park, or the notifier sees `waiting` and unparks
/// it; `unpark` before `park` makes that `park` return at once. The park
/// also times out after [`PARK_TIMEOUT`], a backstop only. The notifier's
/// fence costs a full barrier per item, which ringweave's rings avoid.
struct Bell {
    waiting: AtomicBool,
    /// The one thread that ever waits on this bell, set at its first park.
    waiter: OnceLock<Thread>,
}

impl Bell {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting: AtomicBool::new(false),
            waiter: OnceLock::new(),
        })
    }

    /// Wakes the waiter, if it is parked or about to be. Call after the
    /// push or pop it waits for.
    #[inline]
    fn ring(&self) {
        // SYNC POINT: bell. Pairs with the fence in `wait_until`.
        fence(Ordering::SeqCst);
        // Relaxed: the fences order this load against the waiter's store.
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::Relaxed) {
            if let Some(t) = self.waiter.get() {
                t.unpark();
            }
        }
    }

    /// Returns once `ready()` is true: spins, yields, then parks.
    fn wait_until(&self, strategy: WaitStrategy, mut ready: impl FnMut() -> bool) {
        for _ in 0..strategy.spins {
            if ready() {
                return;
            }
            hint::spin_loop();
        }
        for _ in 0..strategy.yields {
            if ready() {
                return;
            }
            thread::yield_now();
        }
        self.waiter.get_or_init(thread::current);
        loop {
            // Relaxed: ordered by the fence below.
            self.waiting.store(true, Ordering::Relaxed);
            // SYNC POINT: bell. Pairs with the fence in `ring`.
            fence(Ordering::SeqCst);
            if ready() {
                // Relaxed: a stale `true` costs the notifier one spurious
                // unpark, nothing more.
                self.waiting.store(false, Ordering::Relaxed);
                return;
            }
            thread::park_timeout(PARK_TIMEOUT);
        }
    }
}

/// The other end of the ring is gone.
#[derive(Debug)]
pub(crate) struct Abandoned;

/// The producer end of an `rtrb` ring with its bells.
pub(crate) struct Tx<T> {
    /// `None` only inside `drop`.
    ring: Option<rtrb::Producer<T>>,
    /// Rung after a push; the consumer waits on it.
    data: Arc<Bell>,
    /// Rung after a pop; this side waits on it.
    space: Arc<Bell>,
    wait: WaitStrategy,
}

/// The consumer end of an `rtrb` ring with its bells.
pub(crate) struct Rx<T> {
    /// `None` only inside `drop`.
    ring: Option<rtrb::Consumer<T>>,
    data: Arc<Bell>,
    space: Arc<Bell>,
    wait: WaitStrategy,
}

/// An `rtrb` ring of `capacity` whose ends wait as `wait` says, then park.
pub(crate) fn channel<T>(capacity: usize, wait: WaitStrategy) -> (Tx<T>, Rx<T>) {
    let (p, c) = rtrb::RingBuffer::new(capacity);
    let (data, space) = (Bell::new(), Bell::new());
    (
        Tx {
            ring: Some(p),
            data: Arc::clone(&data),
            space: Arc::clone(&space),
            wait,
        },
        Rx {
            ring: Some(c),
            data,
            space,
            wait,
        },
    )
}

impl<T> Tx<T> {
    /// Pushes `x`, waiting while the ring is full.
    pub(crate) fn push(&mut self, mut x: T) -> Result<(), Abandoned> {
        let ring = self.ring.as_mut().ok_or(Abandoned)?;
        loop {
            match ring.push(x) {
                Ok(()) => {
                    self.data.ring();
                    return Ok(());
                }
                Err(rtrb::PushError::Full(back)) => {
                    x = back;
                    if ring.is_abandoned() {
                        return Err(Abandoned);
                    }
                    let ring = &*ring;
                    self.space
                        .wait_until(self.wait, || !ring.is_full() || ring.is_abandoned());
                }
            }
        }
    }
}

impl<T> Drop for Tx<T> {
    fn drop(&mut self) {
        // Drop the producer first so the woken consumer sees it abandoned.
        drop(self.ring.take());
        self.data.ring();
    }
}

impl<T> Rx<T> {
    /// The next item, waiting while the ring is empty; `None` once the
    /// producer is gone and the ring drained.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let ring = self.ring.as_mut()?;
        loop {
            if let Ok(x) = ring.pop() {
                self.space.ring();
                return Some(x);
            }
            if ring.is_abandoned() {
                // The producer may have pushed between the pop and the check.
                return ring.pop().ok();
            }
            let ring = &*ring;
            self.data
                .wait_until(self.wait, || !ring.is_empty() || ring.is_abandoned());
        }
    }
}

impl<T> Drop for Rx<T> {
    fn drop(&mut self) {
        // Drop the consumer first so the woken producer sees it abandoned.
        drop(self.ring.take());
        self.space.ring();
    }
}
