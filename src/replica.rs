//! Replicas: one stage's operator run by several threads at once, each on
//! a part of the same batch, the outputs put back in input order.
//!
//! A replicated stage takes a batch from its input as any stage does, deals
//! it to its replicas — stateless operators in contiguous runs, keyed ones
//! by key group (`keyed.rs`) — runs replica 0 on its own thread and the
//! others on a pool of scoped jobs, waits for them, and emits the outputs
//! in input order. So the stage still pauses only between batches with
//! nothing in flight: the switch barrier, the residual copy and the state
//! hand-over see one stage, whatever its replica count. Order needs no
//! sequence numbers: each replica's outputs are tagged by their place in
//! the batch (a run, or a route entry per item).
//!
//! In a worker process replicas are processes instead (`replica_proc.rs`);
//! a pool the worker inherits through `fork` has no threads behind it
//! (only the forking thread is copied) and is forgotten, never used.

use crate::error::Error;
use crate::port::Emit;

/// The most replicas one stage may have.
pub const MAX_REPLICAS: usize = ringweave_ipc::control::MAX_REPLICA_PROCESSES;

/// Batches smaller than this are run on the stage's own thread: dealing a
/// handful of items costs more than it saves, and at low rates every item
/// travels alone (latency by default).
const MIN_PARALLEL: usize = 32;

/// A batch is dealt to the replicas only if running it on one thread would
/// take this long: waking the pool's threads and waiting for the last one
/// costs microseconds, which a cheap map would spend on thousands of items
/// (docs/PERF.md, "Replicas").
const SPLIT_WORK_NS: f64 = 20_000.0;

#[cfg(feature = "fault-injection")]
static ALWAYS_SPLIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every replicated stage of this process (and of the workers forked
/// from it later) deal out every batch of two items or more, however cheap
/// its operator: tests use it to put the replica path under cheap
/// operators. Test support (cargo feature `fault-injection`), not part of
/// the stable API.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub fn always_split(on: bool) {
    ALWAYS_SPLIT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// What one item costs the operator, as the stage measures it: each batch
/// is timed (one clock read per batch, replicated stages only).
#[derive(Default)]
pub(crate) struct Cost {
    /// Moving average of the nanoseconds of one thread's time per item;
    /// 0 until the first batch, which therefore runs on one thread.
    ns_per_item: f64,
    /// Batches seen: one in [`TIME_EVERY`] is timed.
    batches: u32,
    /// Whether the last timed batch was dealt out (then every batch is
    /// timed: it costs far more than two clock reads).
    split: bool,
}

/// A replicated stage times one batch in this many: two clock reads per
/// batch cost a cheap map a tenth of its throughput.
const TIME_EVERY: u32 = 8;

impl Cost {
    /// Whether to time the batch about to run (the first, then one in
    /// [`TIME_EVERY`]).
    #[inline]
    pub(crate) fn time_this_batch(&mut self) -> bool {
        self.batches = self.batches.wrapping_add(1);
        self.split || self.ns_per_item == 0.0 || self.batches % TIME_EVERY == 0
    }

    /// Whether a batch of `items` is worth dealing out.
    #[inline]
    pub(crate) fn worth_splitting(&self, items: usize) -> bool {
        #[cfg(feature = "fault-injection")]
        if ALWAYS_SPLIT.load(std::sync::atomic::Ordering::Relaxed) {
            return items >= 2;
        }
        items >= MIN_PARALLEL && self.ns_per_item * items as f64 >= SPLIT_WORK_NS
    }

    /// Records a batch of `items` that started at `since` and ran on
    /// `threads` threads.
    #[inline]
    pub(crate) fn observe(
        &mut self,
        since: Option<std::time::Instant>,
        items: usize,
        threads: usize,
    ) {
        let Some(since) = since else { return };
        if items == 0 {
            return;
        }
        let sample = since.elapsed().as_nanos() as f64 * threads as f64 / items as f64;
        self.split = threads > 1;
        self.ns_per_item = if self.ns_per_item == 0.0 {
            sample
        } else {
            // A batch during which the thread lost its core measures the
            // scheduler, not the operator: one such sample may raise the
            // estimate fourfold at most, so it cannot send a cheap stage
            // into dealing out for long; a real rise still shows within a
            // few batches.
            0.8 * self.ns_per_item + 0.2 * sample.min(4.0 * self.ns_per_item)
        };
    }
}

/// The replica counts of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Replicas {
    /// In this process (in-process mode, and a stage placed here).
    pub local: usize,
    /// In a worker process; `None`: as `local`.
    pub distributed: Option<usize>,
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            local: 1,
            distributed: None,
        }
    }
}

impl Replicas {
    /// The count that applies where the stage runs now.
    pub(crate) fn count(&self, in_worker: bool) -> usize {
        if in_worker {
            self.distributed.unwrap_or(self.local)
        } else {
            self.local
        }
    }

    /// The larger of the two counts.
    pub(crate) fn max(&self) -> usize {
        self.local.max(self.distributed.unwrap_or(self.local))
    }

    /// Checks a count given to `replicas`/`distributed_replicas`.
    pub(crate) fn check(stage: &str, n: usize) -> Result<(), Error> {
        if (1..=MAX_REPLICAS).contains(&n) {
            return Ok(());
        }
        Err(Error::InvalidConfig {
            field: "replicas",
            reason: format!(
                "stage `{stage}`: must be in 1..={MAX_REPLICAS} (MAX_REPLICAS), got {n}"
            ),
        })
    }
}

/// The outputs of one batch: `items` in order, and for each input the
/// number of outputs of it and every input before it.
pub(crate) struct Batch<Out> {
    pub items: Vec<Out>,
    pub ends: Vec<u32>,
    /// Inputs each replica took, when the batch was dealt out (empty when
    /// it ran on one replica).
    pub dealt: Vec<usize>,
}

impl<Out> Default for Batch<Out> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            ends: Vec::new(),
            dealt: Vec::new(),
        }
    }
}

impl<Out> Batch<Out> {
    /// Records that the input just processed is done.
    #[inline]
    pub(crate) fn end_input(&mut self) {
        self.ends.push(self.items.len() as u32);
    }

    /// Where the outputs of input `i` start.
    pub(crate) fn start_of(&self, i: usize) -> u32 {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    /// Appends `part`, shifting its ends by what is here already.
    pub(crate) fn append(&mut self, part: Batch<Out>) {
        let base = self.items.len() as u32;
        self.items.extend(part.items);
        self.ends.extend(part.ends.into_iter().map(|e| e + base));
    }
}

impl<T> Emit<T> for Vec<T> {
    #[inline]
    fn emit(&mut self, item: T) {
        self.push(item);
    }
}

/// The threads that run replicas `1..n` of a stage (replica 0 is the
/// stage's own thread), made on first use in the process that runs the
/// stage.
#[derive(Default)]
pub(crate) struct Pool {
    inner: Option<Threads>,
    /// What an item costs: whether a batch is worth the pool.
    pub cost: Cost,
    /// Cores this process may run on, once asked (in the process that
    /// runs the stage).
    cores: Option<(u32, usize)>,
}

struct Threads {
    pid: u32,
    helpers: usize,
    pool: rayon::ThreadPool,
    /// Joined when the pool goes, so that no thread outlives its stage.
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// How many of `n` replicas can run at once here: `n`, at most the
    /// cores this process may use.
    pub(crate) fn width(&mut self, n: usize) -> usize {
        let pid = std::process::id();
        let cores = match self.cores {
            Some((p, cores)) if p == pid => cores,
            _ => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                self.cores = Some((pid, cores));
                cores
            }
        };
        n.min(cores).max(1)
    }

    /// A pool for `n` replicas of `stage`, or `None` when `n` is 1 or the
    /// threads cannot be made (the batch then runs on the stage's thread:
    /// slower, never wrong).
    pub(crate) fn get(&mut self, n: usize, stage: &str) -> Option<&rayon::ThreadPool> {
        let helpers = n.saturating_sub(1);
        if helpers == 0 {
            return None;
        }
        let pid = std::process::id();
        let fits = matches!(&self.inner, Some(t) if t.pid == pid && t.helpers == helpers);
        if !fits {
            self.discard();
            let mut handles = Vec::with_capacity(helpers);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(helpers)
                .spawn_handler(|thread| {
                    let name = format!("rw-{stage}[{}]", thread.index() + 1);
                    handles.push(
                        std::thread::Builder::new()
                            .name(name)
                            .spawn(|| thread.run())?,
                    );
                    Ok(())
                })
                .build();
            let Ok(pool) = pool else {
                // The threads that did start end once the builder's
                // registry is gone.
                for handle in handles {
                    let _ = handle.join();
                }
                return None;
            };
            self.inner = Some(Threads {
                pid,
                helpers,
                pool,
                handles,
            });
        }
        self.inner.as_ref().map(|t| &t.pool)
    }

    /// Drops the pool if this process made it; forgets it if it came
    /// through `fork` (its threads are not in this process, and waking
    /// them could wait on a lock one of them held at the fork).
    fn discard(&mut self) {
        if let Some(threads) = self.inner.take() {
            if threads.pid != std::process::id() {
                std::mem::forget(threads);
                return;
            }
            // Dropping the pool tells its idle threads to end.
            drop(threads.pool);
            for handle in threads.handles {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Runs `f` over `items` on `n` replicas, each taking a contiguous run,
/// and appends the outputs to `out` in input order. Without a pool, or for
/// a small batch, runs it all on this thread.
pub(crate) fn split_run<In, Out, F>(
    items: Vec<In>,
    pool: Option<&rayon::ThreadPool>,
    n: usize,
    f: &F,
    out: &mut Batch<Out>,
) where
    In: Send,
    Out: Send,
    F: Fn(In, &mut Vec<Out>) + Sync,
{
    let len = items.len();
    let Some(pool) = pool.filter(|_| n > 1 && len >= 2) else {
        run_part(items, f, out);
        return;
    };
    let mut parts = Vec::with_capacity(n);
    let mut rest = items;
    for r in (1..n).rev() {
        parts.push(rest.split_off(len * r / n));
    }
    parts.push(rest);
    parts.reverse();
    out.dealt = parts.iter().map(Vec::len).collect();
    let mut results: Vec<Batch<Out>> = (0..n).map(|_| Batch::default()).collect();
    let mut parts = parts.into_iter();
    let first_part = parts.next().unwrap_or_default();
    let (first, others) = results.split_first_mut().expect("n > 1");
    pool.in_place_scope(|scope| {
        for (part, result) in parts.zip(others.iter_mut()) {
            scope.spawn(move |_| run_part(part, f, result));
        }
        run_part(first_part, f, first);
    });
    for part in results {
        out.append(part);
    }
}

fn run_part<In, Out, F: Fn(In, &mut Vec<Out>)>(items: Vec<In>, f: &F, out: &mut Batch<Out>) {
    out.items.reserve(items.len());
    out.ends.reserve(items.len());
    for item in items {
        f(item, &mut out.items);
        out.end_input();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_run_keeps_input_order_and_ends() {
        let mut pool = Pool::default();
        for n in 1..=4 {
            for len in [0usize, 1, 31, 32, 33, 257] {
                let items: Vec<u64> = (0..len as u64).collect();
                let mut out = Batch::default();
                // Input x yields x % 3 copies of x.
                let f = |x: u64, v: &mut Vec<u64>| v.extend(std::iter::repeat_n(x, x as usize % 3));
                split_run(items, pool.get(n, "t"), n, &f, &mut out);
                let expected: Vec<u64> = (0..len as u64)
                    .flat_map(|x| std::iter::repeat_n(x, x as usize % 3))
                    .collect();
                assert_eq!(out.items, expected, "n={n} len={len}");
                assert_eq!(out.ends.len(), len);
                let mut total = 0u32;
                for (i, end) in out.ends.iter().enumerate() {
                    total += i as u32 % 3;
                    assert_eq!(*end, total, "n={n} len={len} i={i}");
                }
            }
        }
    }

    #[test]
    fn replica_counts_are_checked_and_resolved() {
        assert!(Replicas::check("s", 0).is_err());
        assert!(Replicas::check("s", MAX_REPLICAS + 1).is_err());
        assert!(Replicas::check("s", 3).is_ok());
        let r = Replicas {
            local: 1,
            distributed: Some(4),
        };
        assert_eq!((r.count(false), r.count(true), r.max()), (1, 4, 4));
        let r = Replicas {
            local: 2,
            distributed: None,
        };
        assert_eq!((r.count(false), r.count(true)), (2, 2));
    }
}
