//! Model checks of ringweave's concurrency protocols with [loom].
//!
//! The tests in `tests/` (one file per protocol: `ring.rs`, `wakeup.rs`,
//! `barrier.rs`, and `broken.rs` for the deliberately broken build) compile
//! the engine's own source through the sync shim (`ringweave_ipc::sync`), so
//! what loom explores is what runs in production, not a copy. They only
//! exist under `RUSTFLAGS="--cfg ringweave_loom"`; a normal build compiles
//! this crate and its tests to nothing. Run them with `scripts/loom.sh`.
//!
//! This library holds what the test files share (all three exist only under
//! the loom cfg): `check`, which runs a model
//! with a bounded preemption count and reports how many executions it
//! explored, `Tracked`, an item that logs its own drop so a model can
//! assert that every item was dropped exactly once, in FIFO order, and
//! `spawn`, a thread spawn whose join steps around a loom artefact.
//!
//! [loom]: https://docs.rs/loom

#[cfg(ringweave_loom)]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Instant;

    /// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set, so a bare
    /// `cargo test` under the loom cfg still ends.
    pub const DEFAULT_PREEMPTIONS: usize = 2;

    /// Runs `model` under loom and prints (to stderr; pass `--nocapture` to
    /// see it) the model's name, the number of executions explored, the
    /// preemption bound and the wall time.
    ///
    /// Honours loom's environment variables (`LOOM_MAX_PREEMPTIONS`,
    /// `LOOM_MAX_BRANCHES`, `LOOM_LOG`, …); without `LOOM_MAX_PREEMPTIONS` the
    /// bound is [`DEFAULT_PREEMPTIONS`].
    ///
    /// # Panics
    ///
    /// When loom finds a failing execution: an assertion in the model, a data
    /// race on a `loom::cell::UnsafeCell`, a deadlock (a thread parked
    /// forever), a leak.
    pub fn check<F>(name: &str, model: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        check_bounded(name, usize::MAX, model);
    }

    /// [`check`] with the preemption bound capped at `max_preemptions`, for
    /// a model whose state space explodes above it (the cap is printed).
    ///
    /// # Panics
    ///
    /// As [`check`].
    pub fn check_bounded<F>(name: &str, max_preemptions: usize, model: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        let mut builder = loom::model::Builder::new();
        let bound = builder
            .preemption_bound
            .unwrap_or(DEFAULT_PREEMPTIONS)
            .min(max_preemptions);
        builder.preemption_bound = Some(bound);
        let executions = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&executions);
        let start = Instant::now();
        builder.check(move || {
            // Relaxed: loom runs its threads one at a time on one OS thread,
            // and this counter is read after `check` returns.
            counter.fetch_add(1, Ordering::Relaxed);
            model();
        });
        eprintln!(
            "loom: {name}: {} executions, preemption bound {bound}, {:.2}s",
            executions.load(Ordering::Relaxed),
            start.elapsed().as_secs_f64()
        );
    }

    /// A spawned loom thread whose [`join`](Joiner::join) never blocks while
    /// the thread can still call `unpark`.
    ///
    /// Loom 0.7 delivers `Thread::unpark` to a thread blocked in
    /// `JoinHandle::join` (or on a mutex) by making it runnable, and the join
    /// then fails loom's internal `assertion failed: state.notified`. The
    /// code under test legitimately unparks a thread that has already
    /// stopped waiting (a stale wake-up from the waiter-flag handshake, which
    /// `std::thread::park` absorbs as a token), so joining a ring peer would
    /// trip over that checker artefact. The spawned closure raises a flag as
    /// its very last step, after its captures are dropped; `join` yields
    /// until it sees the flag and only then blocks in the real join, when
    /// the thread has no operation left that could unpark anyone.
    #[derive(Debug)]
    pub struct Joiner<T> {
        handle: loom::thread::JoinHandle<T>,
        done: loom::sync::Arc<loom::sync::atomic::AtomicBool>,
    }

    /// Spawns `f` on a loom thread; see [`Joiner`].
    pub fn spawn<T, F>(f: F) -> Joiner<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let done = loom::sync::Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let flag = loom::sync::Arc::clone(&done);
        let handle = loom::thread::spawn(move || {
            // `f` and everything it captured are gone once it returns.
            let result = f();
            // SYNC POINT: joiner-done. Release pairs with the Acquire in
            // `Joiner::join`; only an observer, the real join orders memory.
            flag.store(true, loom::sync::atomic::Ordering::Release);
            result
        });
        Joiner { handle, done }
    }

    impl<T> Joiner<T> {
        /// The thread, to `unpark` it.
        #[must_use]
        pub fn thread(&self) -> &loom::thread::Thread {
            self.handle.thread()
        }

        /// Waits for the thread to finish and returns its result.
        ///
        /// # Panics
        ///
        /// If the thread panicked.
        pub fn join(self) -> T {
            // SYNC POINT: joiner-done. Pairs with the Release in `spawn`.
            while !self.done.load(loom::sync::atomic::Ordering::Acquire) {
                loom::thread::yield_now();
            }
            self.handle.join().expect("model thread panicked")
        }
    }

    /// A per-execution record of which items were dropped, in drop order.
    ///
    /// Uses a `std` mutex, not a loom one: it is an observer, not part of
    /// the protocol under test, so it must add no interleavings. Loom runs
    /// its threads one at a time, and the lock is never held across a loom
    /// operation, so it is never contended.
    #[derive(Clone, Debug, Default)]
    pub struct DropLog(Arc<Mutex<Vec<u32>>>);

    impl DropLog {
        /// An empty log.
        #[must_use]
        pub fn new() -> Self {
            Self::default()
        }

        /// A new item with `value` that records its drop here.
        #[must_use]
        pub fn item(&self, value: u32) -> Tracked {
            Tracked {
                value,
                log: self.clone(),
            }
        }

        fn lock(&self) -> MutexGuard<'_, Vec<u32>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// The values dropped so far, in drop order.
        #[must_use]
        pub fn dropped(&self) -> Vec<u32> {
            self.lock().clone()
        }

        /// Asserts that items `0..n` were each dropped exactly once, in
        /// order: nothing lost, nothing duplicated, FIFO.
        ///
        /// # Panics
        ///
        /// If they were not.
        pub fn assert_fifo(&self, n: u32) {
            assert_eq!(
                self.dropped(),
                (0..n).collect::<Vec<_>>(),
                "items must be dropped exactly once each, in FIFO order"
            );
        }

        /// Asserts that items `0..n` were each dropped exactly once, in any
        /// order.
        ///
        /// # Panics
        ///
        /// If they were not.
        pub fn assert_each_once(&self, n: u32) {
            let mut dropped = self.dropped();
            dropped.sort_unstable();
            assert_eq!(
                dropped,
                (0..n).collect::<Vec<_>>(),
                "items must be dropped exactly once each"
            );
        }
    }

    /// A ring item that records its drop in a [`DropLog`].
    ///
    /// It holds a pointer (the log's `Arc`), so reading a slot that was never
    /// written, or reading one twice, does not go unnoticed: a garbage `Arc`
    /// crashes, a duplicate shows in the log.
    #[derive(Debug)]
    pub struct Tracked {
        value: u32,
        log: DropLog,
    }

    impl Tracked {
        /// The value the item was made with.
        #[must_use]
        pub fn value(&self) -> u32 {
            self.value
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.log.lock().push(self.value);
        }
    }
}

#[cfg(ringweave_loom)]
pub use imp::*;
