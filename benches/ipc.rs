//! IPC throughput and latency: a parent process sends records to a forked
//! child, through ringweave's record ring and through its peers, measured in
//! the same run.
//!
//! # Groups
//!
//! `ipc_u64`, `ipc_struct64`, `ipc_string`, `ipc_blob64k` — parent → child
//! throughput of four payloads: a `u64`; [`Tick`], a 64-byte
//! `#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]` struct;
//! [`Text`], a struct holding a 100-byte `String`; a 64 KiB `Vec<u8>`.
//! `N_SMALL` (`N_LARGE` for 64 KiB) records per iteration, the same records
//! (a pool of `POOL` values, cycled) for every contender:
//!
//! - `ringweave_per_record`: a [`RecordRing`] of `RING_BYTES`, one `push` +
//!   `flush` per record (each record published on its own);
//!   `ringweave_batched`: `flush` after every up-to-64 KiB of frames. The
//!   child reads with `read_batch` (archived, validated: the default),
//!   releasing every up-to-64 KiB. Both sides wait with the default
//!   wait of a record ring (`record_ring::DEFAULT_WAIT`: spin 16, yield
//!   1024, futex).
//! - `socketpair_*`, `pipe_*`: a Unix `SOCK_STREAM` socketpair / a pipe (OS
//!   default buffer sizes), carrying the same records as frames of an 8-byte
//!   little-endian length, the rkyv archive, zero padding to 8 bytes. The
//!   archive is made by `rkyv::to_bytes`'s serializer (`to_bytes_in`) writing
//!   straight into the send buffer, so a record costs no allocation and no
//!   extra copy on the way out. `*_per_record`: one `write` per frame;
//!   `*_batched`: up to 64 KiB of frames per `write`. The child `read`s
//!   greedily into a 256 KiB buffer and validates each archive with
//!   `rkyv::access`, like the ring's consumer.
//! - `iceoryx2`: iceoryx2 publish-subscribe (`ipc::Service`), lossless: safe
//!   overflow off, `BackpressureStrategy::RetryUntilDelivered` (the
//!   publisher blocks while the subscriber's buffer is full, what older
//!   releases called `UnableToDeliverStrategy::Block`), history 0. Each
//!   record is one loaned sample in iceoryx2's own zero-copy form: the `u64`,
//!   [`Tick`] itself (`#[repr(C)]`, `ZeroCopySend`), [`InlineText`](iceoryx::InlineText) (the
//!   string copied into a fixed inline array, since a `String` cannot be
//!   sent zero-copy), a `[u8]` slice of 64 KiB (`loan_slice_uninit`). The
//!   subscriber's buffer holds `ICE_BUFFER` samples (16 for 64 KiB: about
//!   the ring's 1 MiB). Nothing is validated: iceoryx2 trusts its peers.
//!   The subscriber polls `receive` (spin `SPINS` times, then `yield_now`),
//!   as iceoryx2 pub-sub has no blocking receive without an extra event
//!   service.
//!
//! For 64 KiB records the group also runs, in rounds with the per-record
//! ring and socketpair, two floors: one `memcpy` of a record in one process
//! (`copy_floor`), and the one-copy hand-off between the same two processes
//! with no transport work on top (`handoff::handoff_floor`: fixed slots,
//! two index words). The socketpair's time over the second is the ratio a
//! one-copy transport would reach in that run if its own work cost nothing.
//!
//! `ipc_validate` — the 64-byte struct through the batched ring, child
//! validating (the default, `rkyv::access`) or trusting (`trust_producer`);
//! and the read alone, in one process: a ring pre-filled with `READ_RECORDS`
//! records drained by `read_batch`, validated or trusted.
//!
//! `ipc_rtt` — round trip of one `u64`, parent → child → parent, timed on
//! the parent: ringweave over two record rings (`ringweave_spin`: spin
//! `SPINS` times, then yield, never sleeping; `ringweave_futex`: the default
//! strategy, which sleeps on a futex), a socketpair (blocking `read` and
//! `write`), iceoryx2 over two services (polling like the throughput
//! subscriber). After the criterion group, each contender runs
//! `RTT_ROUNDS` round trips once more into an hdrhistogram, in
//! `RTT_BLOCKS` blocks (one fork each) that the contenders take in turns;
//! the percentiles go to the report. Every round-trip measurement pins the
//! parent and the child to two CPUs (see [`Placement::Pinned`]); the
//! throughput groups leave placement to the scheduler.
//!
//! # Paired ratios
//!
//! Criterion measures one contender after the other, minutes apart, and
//! the load of this shared two-core machine drifts in between. So each
//! group also runs the pairs that have targets alternately (`PAIRS` runs
//! of one iteration each, each contender first in every other pair) and
//! reports the median and range of the per-pair throughput ratios, as
//! lines in `extra.json` for `scripts/bench.sh`.
//!
//! # How a measurement runs
//!
//! Every throughput measurement forks one child (not one per record): the
//! parent makes the transport, forks, the child sets up its end and reports
//! `ready` through a word in a shared segment, the parent takes the start
//! time and sends `N × iters` records, the child consumes them, keeping a
//! running sum of a check value of each record, and reports the count, the
//! sum and its end time through the same segment; the parent reaps it and
//! asserts count and sum, so a contender that loses, duplicates or damages
//! records fails instead of looking fast. The time is the child's end minus
//! the parent's start (both read `CLOCK_MONOTONIC` through an `Instant`
//! taken before the fork; `Instant` is `CLOCK_MONOTONIC` on Linux); fork,
//! setup and reaping are outside it.
//!
//! A forked child of a multi-threaded process may only use lock-free code,
//! the allocator and system calls (see `Worker::spawn`): the ring and stream
//! children do only that. The iceoryx2 children create their node and
//! service after the fork (iceoryx2's own discovery, files in `/dev/shm` and
//! `/tmp/iceoryx2`), which takes locks; that is sound only because this
//! process is single-threaded when it forks, which is asserted first.
//!
//! Results are meant to be read as ratios (see `scripts/bench.sh`).

#[path = "common/report.rs"]
mod common;
#[path = "ipc/handoff.rs"]
mod handoff;
#[path = "ipc/iceoryx.rs"]
mod iceoryx;
#[path = "ipc/payload.rs"]
mod payload;
#[path = "ipc/stream.rs"]
mod stream;

use common::{quantile, sorted, write_extra};
use criterion::{Criterion, SamplingMode, Throughput};
use handoff::handoff_floor;
use hdrhistogram::Histogram;
use iceoryx::{iceoryx2_probe, rtt_iceoryx2};
use iceoryx2::prelude::{set_log_level, LogLevel};
use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use payload::{expected_sum, Payload, Shape, Text, Tick};
use ringweave_ipc::futex;
use ringweave_ipc::record_ring::{PopError, RecordRing};
use ringweave_ipc::segment::{Segment, SegmentLayout};
use ringweave_ipc::wait::WaitStrategy;
use ringweave_ipc::worker::{Worker, WorkerExit};
use std::alloc::Layout;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{hint, thread};
use stream::{rtt_socketpair, Transport};

/// Records per iteration for the small payloads.
const N_SMALL: u64 = 200_000;
/// Records per iteration for the 64 KiB payload.
const N_LARGE: u64 = 5_000;
/// Bytes of the 64 KiB payload.
const BLOB_LEN: usize = 64 * 1024;
/// Bytes of [`Text`]'s string.
const TEXT_LEN: usize = 100;
/// Capacity of [`InlineText`](iceoryx::InlineText)'s array.
const INLINE_TEXT_CAP: usize = 112;
/// Largest batch: frames per `flush` (ring) or per `write` (streams).
const BATCH_BYTES: usize = 64 * 1024;
/// Arena of the throughput ring.
const RING_BYTES: usize = 1 << 20;
/// Arena of each round-trip ring.
const RTT_RING_BYTES: usize = 1 << 16;
/// The stream reader's buffer.
const STREAM_BUF: usize = 256 * 1024;
/// Subscriber buffer (samples) of the iceoryx2 services for small payloads.
const ICE_BUFFER: usize = 4096;
/// The same for 64 KiB payloads: 16 × 64 KiB, about the ring's arena.
const ICE_BLOB_BUFFER: usize = 16;
/// Round trips recorded in the latency histograms.
const RTT_ROUNDS: u64 = 100_000;
/// Round trips before those.
const RTT_WARMUP: u64 = 10_000;
/// Blocks (one fork each) the latency round trips are split into, the
/// contenders taking turns.
const RTT_BLOCKS: u64 = 10;
/// Round trips before the timed ones inside each criterion measurement.
const RTT_CRITERION_WARMUP: u64 = 1_000;
/// Records the in-process read-cost measurement drains per iteration.
const READ_RECORDS: u64 = 8192;
/// Spin hints before a polling side starts yielding.
const SPINS: u32 = 64;
/// How long the parent waits for a child's report before giving up.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Exit codes of the children.
const EXIT_OK: i32 = 0;
/// The child could not set up its end of the transport.
const EXIT_SETUP: i32 = 10;
/// The transport failed (closed early, read error, damaged frame).
const EXIT_TRANSPORT: i32 = 11;
/// A record failed validation.
const EXIT_INVALID: i32 = 12;

// ---------------------------------------------------------------------------
// The fork harness.

/// The words a child reports through, in a shared segment.
#[repr(C)]
struct Report {
    /// Set by the child once its end is ready to receive.
    ready: AtomicU32,
    /// Set by the child after its last record; the words below are valid.
    done: AtomicU32,
    /// Records the child consumed.
    count: AtomicU64,
    /// Running sum of their check values.
    sum: AtomicU64,
    /// The child's end time, in ns since the harness's base `Instant`.
    end_ns: AtomicU64,
}

/// The child's side of a [`Report`].
struct Reporter<'a> {
    words: &'a Report,
    /// Taken before the fork, so parent and child measure from one origin.
    base: Instant,
}

impl Reporter<'_> {
    fn ready(&self) {
        // SYNC POINT: ready. Release: the child's setup happens before the
        // parent's start (Acquire in `wait_word`).
        self.words.ready.store(1, Ordering::Release);
        let _ = futex::wake(&self.words.ready, 1);
    }

    fn done(&self, count: u64, sum: u64) {
        let end = self.base.elapsed().as_nanos() as u64;
        // Relaxed: published by the Release store of `done` below.
        self.words.count.store(count, Ordering::Relaxed);
        self.words.sum.store(sum, Ordering::Relaxed);
        self.words.end_ns.store(end, Ordering::Relaxed);
        // SYNC POINT: done. Release: pairs with the Acquire in `wait_word`.
        self.words.done.store(1, Ordering::Release);
        let _ = futex::wake(&self.words.done, 1);
    }
}

/// What a forked measurement returns.
struct Outcome<R> {
    /// From the parent's start to the child's end.
    elapsed: Duration,
    /// Records the child reported.
    count: u64,
    /// Their check sum.
    sum: u64,
    /// What the parent's `send` returned.
    value: R,
}

impl<R> Outcome<R> {
    /// Panics unless the child consumed `count` records summing to `sum`.
    fn verify(&self, name: &str, count: u64, sum: u64) {
        assert_eq!(self.count, count, "{name}: child consumed the wrong count");
        assert_eq!(self.sum, sum, "{name}: child saw the wrong sum");
    }
}

/// Waits (futex, 10 ms slices) until the child sets `word`; panics if the
/// child ends first or takes longer than `CHILD_TIMEOUT`.
fn wait_word(word: &AtomicU32, worker: &mut Worker, what: &str) {
    let give_up = Instant::now() + CHILD_TIMEOUT;
    // Acquire: pairs with the child's Release store (SYNC POINT: ready/done).
    while word.load(Ordering::Acquire) == 0 {
        if let Some(exit) = worker.try_status().expect("waitpid") {
            panic!(
                "{}: child ended ({exit}) before it was {what}",
                worker.name()
            );
        }
        assert!(
            Instant::now() < give_up,
            "{}: child not {what} within {CHILD_TIMEOUT:?}",
            worker.name()
        );
        let _ = futex::wait(word, 0, Some(Duration::from_millis(10)));
    }
}

/// A deadline for the parent's blocking ring calls, so that a child that
/// dies mid-run fails the bench instead of hanging it. (A deadline, not an
/// `interrupt` polling `waitpid`: the ring calls `interrupt` on every check
/// of its wait, spins included, and a system call there would be the
/// harness's cost, not the ring's.)
fn give_up_at() -> Option<Instant> {
    Some(Instant::now() + CHILD_TIMEOUT)
}

/// Where [`forked_with`] runs its two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Wherever the scheduler puts them (the throughput groups).
    Scheduler,
    /// The parent pinned to the CPU it is on and the child to another CPU
    /// the parent may use, as iceoryx2's own latency benchmarks pin their
    /// two participants; the parent is unpinned again when the measurement
    /// ends. Without it a forked child sometimes starts on its parent's CPU
    /// and the scheduler takes milliseconds to move one of them: two polling
    /// sides then take turns on one core, and every round trip for that
    /// while costs a yield each way (≈ 6 µs instead of 0.2). With a single
    /// usable CPU this is `Scheduler`.
    Pinned,
}

/// The parent's CPU affinity as it was before [`pin_pair`]; restores it
/// when dropped.
struct Unpin(CpuSet);

impl Drop for Unpin {
    fn drop(&mut self) {
        // Best effort: a failure leaves the bench pinned, slower, not wrong.
        let _ = sched_setaffinity(Pid::from_raw(0), &self.0);
    }
}

/// Pins the calling thread to the CPU it is on and returns the set the
/// child should pin itself to, with the guard that unpins the parent; `None`
/// if fewer than two CPUs are usable.
fn pin_pair() -> Option<(CpuSet, Unpin)> {
    let original = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let here = sched_getcpu().ok()?;
    let other = (0..CpuSet::count()).find(|&c| c != here && original.is_set(c).unwrap_or(false))?;
    let (mut parent, mut child) = (CpuSet::new(), CpuSet::new());
    parent.set(here).ok()?;
    child.set(other).ok()?;
    sched_setaffinity(Pid::from_raw(0), &parent).ok()?;
    Some((child, Unpin(original)))
}

/// [`forked_with`] the scheduler's placement.
fn forked<S, R>(
    name: &str,
    child: impl FnOnce(&Reporter<'_>) -> i32,
    setup: impl FnOnce() -> S,
    send: impl FnOnce(&mut S) -> R,
) -> Outcome<R> {
    forked_with(Placement::Scheduler, name, child, setup, send)
}

/// Forks a child running `child`, runs `setup` and then (timed) `send` in
/// the parent, waits for the child's report and reaps it.
///
/// `child` must keep to what a forked child may do (see `Worker::spawn`):
/// lock-free code, the allocator, system calls. Its return value is its
/// exit code; it reports through the [`Reporter`] (`ready` before the parent
/// may start, `done` after its last record).
///
/// The parent never drops `child` (`Worker::spawn` keeps it in a
/// `ManuallyDrop`), so whatever it owns lives in the parent until the bench
/// ends: give it references to what the parent keeps anyway (`&segment`),
/// not `Arc` clones, or every measurement leaves a mapping and a memfd open.
fn forked_with<S, R>(
    placement: Placement,
    name: &str,
    child: impl FnOnce(&Reporter<'_>) -> i32,
    setup: impl FnOnce() -> S,
    send: impl FnOnce(&mut S) -> R,
) -> Outcome<R> {
    let pins = match placement {
        Placement::Pinned => pin_pair(),
        Placement::Scheduler => None,
    };
    let (child_cpu, _unpin) = pins.unzip();
    let mut layout = SegmentLayout::new();
    let at = layout
        .reserve(Layout::new::<Report>())
        .expect("report layout");
    let segment = Segment::create("ipc-bench-report", layout.size()).expect("report segment");
    let words = segment
        .region(at, std::mem::size_of::<Report>())
        .expect("report region")
        .cast::<Report>();
    // SAFETY: a fresh segment is zero bytes, a valid `Report` (atomics
    // only), at an offset aligned for it (`reserve`); it stays mapped while
    // `segment` lives (this frame), and in the child until it exits.
    let words = unsafe { words.as_ref() };
    let reporter = Reporter {
        words,
        base: Instant::now(),
    };
    // SAFETY: the child runs `child`, whose callers keep to lock-free code,
    // the allocator and system calls (or assert that this process is
    // single-threaded, for iceoryx2), and reports through shared memory.
    let mut worker = unsafe {
        Worker::spawn(name, || {
            if let Some(cpu) = &child_cpu {
                if sched_setaffinity(Pid::from_raw(0), cpu).is_err() {
                    return EXIT_SETUP;
                }
            }
            child(&reporter)
        })
    }
    .expect("fork");
    let mut state = setup();
    wait_word(&words.ready, &mut worker, "ready");
    let start = reporter.base.elapsed();
    let value = send(&mut state);
    wait_word(&words.done, &mut worker, "done");
    drop(state);
    let exit = worker.wait().expect("waitpid");
    assert_eq!(exit, WorkerExit::Exited(EXIT_OK), "{name}: child {exit}");
    // Relaxed: ordered by the Acquire load of `done` in `wait_word`.
    let end = Duration::from_nanos(words.end_ns.load(Ordering::Relaxed));
    Outcome {
        elapsed: end.saturating_sub(start),
        count: words.count.load(Ordering::Relaxed),
        sum: words.sum.load(Ordering::Relaxed),
        value,
    }
}

/// How polling sides wait: spin a little, then yield, so the peer gets a
/// core on a busy two-core machine.
struct Backoff(u32);

impl Backoff {
    fn new() -> Self {
        Self(0)
    }

    #[inline]
    fn snooze(&mut self) {
        if self.0 < SPINS {
            self.0 += 1;
            hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }

    #[inline]
    fn reset(&mut self) {
        self.0 = 0;
    }
}

// ---------------------------------------------------------------------------
// ringweave.

/// A fresh segment holding one record ring per entry of `capacities`.
fn rings(capacities: &[usize]) -> (Arc<Segment>, Vec<RecordRing>) {
    let mut layout = SegmentLayout::new();
    let offsets: Vec<usize> = capacities
        .iter()
        .map(|&c| {
            layout
                .reserve(RecordRing::layout(c).expect("ring layout"))
                .expect("reserve")
        })
        .collect();
    let segment = Arc::new(Segment::create("ipc-bench-rings", layout.size()).expect("segment"));
    let rings = offsets
        .iter()
        .zip(capacities)
        .map(|(&at, &c)| RecordRing::new(&segment, at, c).expect("ring"))
        .collect();
    (segment, rings)
}

/// Sends `total` records of `pool` through a record ring, flushing every
/// `per_flush` records; the child validates unless `trusted`.
fn ringweave<T: Payload>(
    pool: &[T],
    total: u64,
    shape: Shape,
    per_flush: usize,
    trusted: bool,
) -> Outcome<()> {
    let (segment, rings) = rings(&[RING_BYTES]);
    let ring = &rings[0];
    // Setup, untimed: fault the ring's pages in now (both processes), as
    // iceoryx2 allocates its shared memory when a service is made, rather
    // than on the first lap.
    segment.populate().expect("populate the ring's segment");
    // Borrowed, not an `Arc` clone (see `forked_with`).
    let child_segment = &segment;
    // SAFETY: one producer, used by the parent and dropped in `forked`
    // before `rings`; one consumer, moved into the child's closure (which
    // the parent forgets, never uses). The segment stays mapped in both.
    let (tx, mut rx) = unsafe { (ring.producer::<T>(), ring.consumer::<T>()) };
    if trusted {
        // SAFETY: the only writer of this fresh segment is the
        // `RecordProducer<T>` above, of this build.
        unsafe { rx.trust_producer() };
    }
    let read_max = shape.per_flush;
    forked(
        "ringweave",
        move |report| {
            // A hint: without it the child takes minor faults on its
            // first lap, nothing worse.
            let _ = child_segment.populate();
            report.ready();
            let (mut got, mut sum) = (0u64, 0u64);
            while got < total {
                match rx.read_batch(read_max, |r| sum = sum.wrapping_add(T::check_archived(r))) {
                    Ok(n) => got += n as u64,
                    Err(PopError::Empty) => {
                        let _ = rx.wait_for_records(None, || false);
                    }
                    Err(PopError::Record(_)) => return EXIT_INVALID,
                    Err(_) => return EXIT_TRANSPORT,
                }
            }
            report.done(got, sum);
            EXIT_OK
        },
        move || tx,
        |tx| {
            let deadline = give_up_at();
            for i in 0..total {
                let value = &pool[i as usize % T::POOL];
                tx.push_until(value, deadline, || false)
                    .expect("ringweave push");
                if tx.staged() >= per_flush {
                    tx.flush();
                }
            }
            tx.flush();
        },
    )
}

// ---------------------------------------------------------------------------
// Throughput groups.

#[derive(Clone, Copy, Debug)]
enum Contender {
    Ringweave {
        per_record: bool,
    },
    Stream {
        transport: Transport,
        per_record: bool,
    },
    Iceoryx2,
}

const CONTENDERS: [(&str, Contender); 7] = [
    (
        "ringweave_per_record",
        Contender::Ringweave { per_record: true },
    ),
    (
        "ringweave_batched",
        Contender::Ringweave { per_record: false },
    ),
    (
        "socketpair_per_record",
        Contender::Stream {
            transport: Transport::Socketpair,
            per_record: true,
        },
    ),
    (
        "socketpair_batched",
        Contender::Stream {
            transport: Transport::Socketpair,
            per_record: false,
        },
    ),
    (
        "pipe_per_record",
        Contender::Stream {
            transport: Transport::Pipe,
            per_record: true,
        },
    ),
    (
        "pipe_batched",
        Contender::Stream {
            transport: Transport::Pipe,
            per_record: false,
        },
    ),
    ("iceoryx2", Contender::Iceoryx2),
];

fn run<T: Payload>(contender: Contender, pool: &[T], total: u64, shape: Shape) -> Outcome<()> {
    match contender {
        Contender::Ringweave { per_record } => {
            let per_flush = if per_record { 1 } else { shape.per_flush };
            ringweave(pool, total, shape, per_flush, false)
        }
        Contender::Stream {
            transport,
            per_record,
        } => {
            let per_write = if per_record { 1 } else { shape.per_write };
            stream::stream(transport, pool, total, per_write)
        }
        Contender::Iceoryx2 => T::iceoryx2(pool, total),
    }
}

/// Criterion settings shared by the groups: short, flat sampling (each
/// measurement forks once, so iterations per sample should be equal).
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// A throughput ratio to check in paired runs: numerator, denominator,
/// target (minimum), all by criterion function name.
type PairSpec = (&'static str, &'static str, Option<f64>);

fn throughput<T: Payload>(
    c: &mut Criterion,
    group_name: &str,
    n: u64,
    pairs: &[PairSpec],
    ice_skip: Option<&str>,
) {
    let pool: Vec<T> = (0..T::POOL as u64).map(T::make).collect();
    let checks: Vec<u64> = pool.iter().map(T::check).collect();
    let shape = Shape::of(&pool);
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    group.throughput(Throughput::Elements(n));
    for (name, contender) in CONTENDERS {
        if matches!(contender, Contender::Iceoryx2) && ice_skip.is_some() {
            continue;
        }
        let (pool, checks) = (&pool, &checks);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let total = n * iters;
                let out = run(contender, pool, total, shape);
                out.verify(name, total, expected_sum(checks, total));
                out.elapsed
            })
        });
    }
    group.finish();
    if !selected(group_name) {
        return;
    }
    let mut lines = vec![format!(
        "{n} records per iteration; archive {} bytes; ring frame {} bytes, {} per flush when batched; \
         stream frame {} bytes, {} per write when batched; ring arena {} KiB.",
        shape.archive,
        shape.ring_frame,
        shape.per_flush,
        shape.stream_frame,
        shape.per_write,
        RING_BYTES / 1024
    )];
    lines.push(String::new());
    lines.push(PAIRED_INTRO.into());
    lines.push(String::new());
    for &(num, den, target) in pairs {
        if ice_skip.is_some() && (num == "iceoryx2" || den == "iceoryx2") {
            continue;
        }
        let one = |name| one_contender(&pool, &checks, n, shape, name);
        let ratios = paired_ratios(one(num), one(den));
        lines.push(paired_line(num, den, &ratios, target));
    }
    if let Some(why) = ice_skip {
        lines.push(String::new());
        lines.push(format!("iceoryx2 skipped: {why}."));
    }
    if shape.archive >= LARGE_RECORD {
        // Paired with the ring, so the two see the same load.
        let mut ring = one_contender(&pool, &checks, n, shape, "ringweave_per_record");
        let mut socket = one_contender(&pool, &checks, n, shape, "socketpair_per_record");
        let blobs: Option<Vec<&[u8]>> = pool.iter().map(Payload::blob).collect();
        let handoff = || {
            let blobs = blobs.as_deref().expect("large records are byte blobs");
            let out = handoff_floor(blobs, n);
            out.verify("handoff", n, expected_sum(&checks, n));
            out.elapsed
        };
        let (mut floor, mut ring_t, mut socket_t, mut handoff_t) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..PAIRS {
            floor.push(copy_floor(shape.archive, n));
            ring_t.push(ring());
            handoff_t.push(handoff());
            socket_t.push(socket());
        }
        // Per round, so that a drift of the machine between rounds cancels.
        let over = |num: &[Duration], den: &[Duration]| -> Vec<f64> {
            sorted(
                num.iter()
                    .zip(den)
                    .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
                    .collect(),
            )
        };
        let (ring_over, socket_over) = (over(&ring_t, &handoff_t), over(&socket_t, &handoff_t));
        let per = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e6 / n as f64
        };
        let (floor, ring_t, socket_t, handoff_t) =
            (per(floor), per(ring_t), per(socket_t), per(handoff_t));
        lines.push(String::new());
        lines.push(format!(
            "Copy floor: one `memcpy` of each {}-byte record into a 1 MiB buffer, in one process, \
             takes {floor:.2} µs a record (medians of {PAIRS} rounds, each running the copy, the ring, \
             the hand-off and the socketpair below once). The ring, which copies each record once, \
             takes {ring_t:.2} µs a record per record sent ({:.2} × the copy); the socketpair \
             {socket_t:.2} µs. Ten times the socketpair's rate would be {:.2} µs a record: {:.2} × a \
             single copy.",
            shape.archive,
            ring_t / floor,
            socket_t / 10.0,
            socket_t / 10.0 / floor,
        ));
        lines.push(String::new());
        lines.push(format!(
            "Hand-off floor: the parent copies each record once into the next of the 64-byte-aligned \
             slots of a 1 MiB shared buffer and a forked child reads it as the ring's consumer does, \
             with two index words between them and nothing else (no frames, serializer, validation \
             or sleeping): {handoff_t:.2} µs a record, what copying each record once between these \
             two cores costs with no transport work on top. The ring's time over it: {}. The \
             socketpair's time over it: {}, the ratio to the socketpair a one-copy transport would \
             reach if its own work cost nothing (per-round ratios, so a drift of the machine between \
             rounds cancels).",
            median_range(&ring_over),
            median_range(&socket_over),
        ));
    }
    write_extra("ipc", group_name, &lines);
}

/// Records of at least this many archived bytes get the copy-floor line.
const LARGE_RECORD: usize = 64 * 1024;

/// One run of the named contender over `n` records, verified; its time.
fn one_contender<'p, T: Payload>(
    pool: &'p [T],
    checks: &'p [u64],
    n: u64,
    shape: Shape,
    name: &'static str,
) -> impl FnMut() -> Duration + 'p {
    let contender = CONTENDERS
        .iter()
        .find(|(c, _)| *c == name)
        .map(|&(_, c)| c)
        .expect("contender");
    move || {
        let out = run(contender, pool, n, shape);
        out.verify(name, n, expected_sum(checks, n));
        out.elapsed
    }
}

/// `n` copies of `bytes` bytes into a 1 MiB buffer at successive offsets
/// (wrapping), as a ring's producer writes: what one copy of each record
/// costs, with nothing else.
fn copy_floor(bytes: usize, n: u64) -> Duration {
    let src = vec![0x5au8; bytes];
    let mut dst = vec![0u8; RING_BYTES.max(2 * bytes)];
    // Touch the destination once, as the ring's arena is warm.
    dst.fill(1);
    let start = Instant::now();
    let mut at = 0;
    for _ in 0..n {
        if at + bytes > dst.len() {
            at = 0;
        }
        dst[at..at + bytes].copy_from_slice(hint::black_box(&src));
        hint::black_box(&dst[at]);
        at += bytes;
    }
    start.elapsed()
}

/// Alternating runs of two contenders for each paired ratio.
const PAIRS: usize = 6;

const PAIRED_INTRO: &str = "Paired runs (the two contenders alternating, 6 pairs of one iteration each, \
    the first one first in every other pair; ratio of throughputs): on this shared machine the load \
    drifts between criterion's runs of two contenders, so these are the ratios to trust.";

/// Runs `a` and `b` alternately `PAIRS` times and returns the ratios of
/// their throughputs (b's time over a's), sorted.
fn paired_ratios(mut a: impl FnMut() -> Duration, mut b: impl FnMut() -> Duration) -> Vec<f64> {
    sorted(
        (0..PAIRS)
            .map(|k| {
                let (ta, tb) = if k % 2 == 0 {
                    let ta = a();
                    (ta, b())
                } else {
                    let tb = b();
                    (a(), tb)
                };
                tb.as_secs_f64() / ta.as_secs_f64()
            })
            .collect(),
    )
}

/// "median m × (range a–b ×)" for sorted `ratios`.
fn median_range(ratios: &[f64]) -> String {
    format!(
        "median {:.2} × (range {:.2}–{:.2} ×)",
        quantile(ratios, 0.5),
        ratios[0],
        ratios[ratios.len() - 1]
    )
}

/// A report line for sorted paired `ratios` of `num` over `den`.
fn paired_line(num: &str, den: &str, ratios: &[f64], target: Option<f64>) -> String {
    let verdict = match target {
        Some(t) if quantile(ratios, 0.5) >= t => format!("; target ≥ {t} ×: met"),
        Some(t) => format!("; target ≥ {t} ×: **missed**"),
        None => String::new(),
    };
    format!("- `{num}` / `{den}`: {}{verdict}.", median_range(ratios))
}

// ---------------------------------------------------------------------------
// Validated vs unchecked.

/// The read alone: `iters` times, fill a ring with `READ_RECORDS` ticks
/// (untimed), then drain it with `read_batch` (timed).
fn read_cost(trusted: bool, iters: u64) -> Duration {
    let pool: Vec<Tick> = (0..Tick::POOL as u64).map(Tick::make).collect();
    let checks: Vec<u64> = pool.iter().map(Tick::check).collect();
    let expected = expected_sum(&checks, READ_RECORDS);
    let (_segment, rings) = rings(&[RING_BYTES]);
    // SAFETY: one producer and one consumer, used on this thread and
    // dropped before `rings`.
    let (mut tx, mut rx) = unsafe { (rings[0].producer::<Tick>(), rings[0].consumer::<Tick>()) };
    if trusted {
        // SAFETY: the only writer of this fresh segment is `tx`, a
        // `RecordProducer<Tick>` of this build.
        unsafe { rx.trust_producer() };
    }
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        for i in 0..READ_RECORDS {
            tx.push(&pool[i as usize % Tick::POOL])
                .expect("room for the batch");
        }
        tx.flush();
        let start = Instant::now();
        let (mut got, mut sum) = (0u64, 0u64);
        while got < READ_RECORDS {
            got += rx
                .read_batch(usize::MAX, |r| {
                    sum = sum.wrapping_add(Tick::check_archived(r))
                })
                .expect("records") as u64;
        }
        total += start.elapsed();
        assert_eq!(sum, expected, "read_cost: wrong sum");
    }
    total
}

fn validate(c: &mut Criterion) {
    let pool: Vec<Tick> = (0..Tick::POOL as u64).map(Tick::make).collect();
    let checks: Vec<u64> = pool.iter().map(Tick::check).collect();
    let shape = Shape::of(&pool);
    let mut group = c.benchmark_group("ipc_validate");
    configure(&mut group);
    group.throughput(Throughput::Elements(N_SMALL));
    for (name, trusted) in [("validated", false), ("unchecked", true)] {
        let (pool, checks) = (&pool, &checks);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let total = N_SMALL * iters;
                let out = ringweave(pool, total, shape, shape.per_flush, trusted);
                out.verify(name, total, expected_sum(checks, total));
                out.elapsed
            })
        });
    }
    group.throughput(Throughput::Elements(READ_RECORDS));
    for (name, trusted) in [("read_validated", false), ("read_unchecked", true)] {
        group.bench_function(name, |b| b.iter_custom(|iters| read_cost(trusted, iters)));
    }
    group.finish();
    if !selected("ipc_validate") {
        return;
    }
    let cross = |trusted: bool| {
        let (pool, checks) = (&pool, &checks);
        move || {
            let out = ringweave(pool, N_SMALL, shape, shape.per_flush, trusted);
            out.verify("validate", N_SMALL, expected_sum(checks, N_SMALL));
            out.elapsed
        }
    };
    let cross_ratios = paired_ratios(cross(false), cross(true));
    let read_ratios = paired_ratios(|| read_cost(false, 50), || read_cost(true, 50));
    write_extra("ipc", 
        "ipc_validate",
        &[
            format!(
            "Cross-process: {N_SMALL} `Tick` records per iteration, batched ring as in `ipc_struct64`. \
             Read alone: {READ_RECORDS} records per iteration, drained by one `read_batch` loop from a \
             pre-filled ring in one process (filling untimed)."
            ),
            String::new(),
            PAIRED_INTRO.into(),
            String::new(),
            paired_line("validated", "unchecked", &cross_ratios, Some(0.87)),
            paired_line(
                "read_validated",
                "read_unchecked",
                &read_ratios,
                Some(0.87),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// Round trips.

/// Times `rounds` round trips after `warmup` ones: the whole loop, or each
/// round trip into `hist`.
struct RoundTrips<'h> {
    warmup: u64,
    rounds: u64,
    hist: Option<&'h mut Histogram<u64>>,
}

impl RoundTrips<'_> {
    /// Runs `one(i)` (a round trip carrying `i`) for every round; returns
    /// the time of the timed rounds.
    fn run(&mut self, mut one: impl FnMut(u64)) -> Duration {
        for i in 0..self.warmup {
            one(i);
        }
        let end = self.warmup + self.rounds;
        match self.hist.as_deref_mut() {
            None => {
                let start = Instant::now();
                for i in self.warmup..end {
                    one(i);
                }
                start.elapsed()
            }
            Some(hist) => {
                let mut total = Duration::ZERO;
                for i in self.warmup..end {
                    let start = Instant::now();
                    one(i);
                    let t = start.elapsed();
                    total += t;
                    hist.saturating_record(t.as_nanos() as u64);
                }
                total
            }
        }
    }

    fn total(&self) -> u64 {
        self.warmup + self.rounds
    }

    /// Sum of the values the child echoes.
    fn sum(&self) -> u64 {
        (0..self.total()).fold(0, u64::wrapping_add)
    }
}

fn rtt_ringweave(strategy: WaitStrategy, mut plan: RoundTrips<'_>) -> Duration {
    let total = plan.total();
    let (segment, rings) = rings(&[RTT_RING_BYTES, RTT_RING_BYTES]);
    // Untimed, as for the throughput rings: without it the first lap (2048
    // round trips, past the warm-up) takes a page fault every 4 KiB.
    segment.populate().expect("populate the rings' segment");
    // Borrowed, not an `Arc` clone (see `forked_with`).
    let child_segment = &segment;
    let (down, up) = (&rings[0], &rings[1]);
    // SAFETY: per ring one producer and one consumer: the parent's two are
    // used by the parent and dropped in `forked` before `rings`; the
    // child's two are moved into its closure, which the parent forgets.
    let (mut tx, mut rx) = unsafe { (down.producer::<u64>(), up.consumer::<u64>()) };
    // SAFETY: as above.
    let (mut child_rx, mut child_tx) = unsafe { (down.consumer::<u64>(), up.producer::<u64>()) };
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    child_rx.set_wait_strategy(strategy);
    child_tx.set_wait_strategy(strategy);
    let out = forked_with(
        Placement::Pinned,
        "ringweave_rtt",
        move |report| {
            let _ = child_segment.populate();
            report.ready();
            let mut sum = 0u64;
            for _ in 0..total {
                let Ok(v) = child_rx.pop_blocking() else {
                    return EXIT_TRANSPORT;
                };
                sum = sum.wrapping_add(v);
                if child_tx.push_blocking(&v).is_err() {
                    return EXIT_TRANSPORT;
                }
                child_tx.flush();
            }
            report.done(total, sum);
            EXIT_OK
        },
        move || (tx, rx),
        |(tx, rx)| {
            let deadline = give_up_at();
            plan.run(|i| {
                tx.push(&i).expect("room for one");
                tx.flush();
                let v = rx.pop_until(deadline, || false).expect("echo");
                assert_eq!(v, i, "ringweave_rtt: wrong echo");
            })
        },
    );
    out.verify("ringweave_rtt", total, plan.sum());
    out.value
}

/// ringweave's round-trip strategy that never sleeps: spin, then yield.
const SPIN_THEN_YIELD: WaitStrategy = WaitStrategy {
    spins: SPINS,
    yields: u32::MAX,
};

type RoundTripContender = fn(RoundTrips<'_>) -> Duration;

const RTT_CONTENDERS: [(&str, &str, RoundTripContender); 4] = [
    (
        "ringweave_spin",
        "ringweave, 2 record rings, spin then yield",
        |p| rtt_ringweave(SPIN_THEN_YIELD, p),
    ),
    (
        "ringweave_futex",
        "ringweave, 2 record rings, default wait (futex)",
        |p| rtt_ringweave(WaitStrategy::default(), p),
    ),
    ("socketpair", "socketpair, blocking", rtt_socketpair),
    ("iceoryx2", "iceoryx2, 2 services, polling", rtt_iceoryx2),
];

fn round_trip(c: &mut Criterion, ice_skip: Option<&str>, latency: bool) {
    let mut group = c.benchmark_group("ipc_rtt");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    let contenders: Vec<_> = RTT_CONTENDERS
        .iter()
        .filter(|(name, ..)| *name != "iceoryx2" || ice_skip.is_none())
        .collect();
    for &&(name, _, run) in &contenders {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run(RoundTrips {
                    warmup: RTT_CRITERION_WARMUP,
                    rounds: iters,
                    hist: None,
                })
            })
        });
    }
    group.finish();
    if !latency {
        return;
    }
    let mut lines = vec![
        format!(
            "Round-trip latency: {RTT_ROUNDS} round trips per contender in {RTT_BLOCKS} blocks of \
             {} (one fork each, after {} warm-up ones), the contenders taking turns block by block; \
             each round trip timed on the parent (hdrhistogram, 3 significant digits). These \
             percentiles, not criterion's means, are what the round-trip target is judged on:",
            RTT_ROUNDS / RTT_BLOCKS,
            RTT_WARMUP / RTT_BLOCKS
        ),
        String::new(),
        "| Contender | p50 | p99 | p99.9 | max | mean |".into(),
        "|---|---:|---:|---:|---:|---:|".into(),
    ];
    let us = |ns: u64| format!("{:.2} µs", ns as f64 / 1e3);
    // The contenders take turns, one block of round trips (one fork) each,
    // so that all of them see the same drift of this shared machine's load.
    let mut hists: Vec<Histogram<u64>> = contenders
        .iter()
        .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"))
        .collect();
    for _ in 0..RTT_BLOCKS {
        for (&&(_, _, run), hist) in contenders.iter().zip(&mut hists) {
            run(RoundTrips {
                warmup: RTT_WARMUP / RTT_BLOCKS,
                rounds: RTT_ROUNDS / RTT_BLOCKS,
                hist: Some(hist),
            });
        }
    }
    let mut p50 = Vec::new();
    for (&&(name, label, _), hist) in contenders.iter().zip(&hists) {
        let q = |p: f64| hist.value_at_quantile(p);
        println!(
            "ipc_rtt/{name}: p50 {} p99 {} p99.9 {} max {} mean {:.0} ns",
            q(0.5),
            q(0.99),
            q(0.999),
            hist.max(),
            hist.mean()
        );
        lines.push(format!(
            "| {label} | {} | {} | {} | {} | {} |",
            us(q(0.5)),
            us(q(0.99)),
            us(q(0.999)),
            us(hist.max()),
            us(hist.mean() as u64)
        ));
        p50.push((name, q(0.5), q(0.99)));
    }
    lines.push(String::new());
    let find = |n: &str| {
        p50.iter()
            .find(|(name, ..)| *name == n)
            .map(|&(_, a, b)| (a, b))
    };
    for (num, den, target) in [
        ("ringweave_spin", "iceoryx2", Some(0.5)),
        ("ringweave_futex", "socketpair", None),
        ("ringweave_spin", "socketpair", None),
    ] {
        if let (Some((n50, n99)), Some((d50, d99))) = (find(num), find(den)) {
            let r50 = n50 as f64 / d50 as f64;
            let verdict = match target {
                Some(t) if r50 <= t => format!(" (target ≤ {t} ×: met)"),
                Some(t) => format!(" (target ≤ {t} ×: **missed**)"),
                None => String::new(),
            };
            lines.push(format!(
                "- {num} / {den} round-trip time: p50 {r50:.3} ×{verdict}, p99 {:.3} ×.",
                n99 as f64 / d99 as f64
            ));
        }
    }
    if let Some(why) = ice_skip {
        lines.push(format!("- iceoryx2 skipped: {why}."));
    }
    write_extra("ipc", "ipc_rtt", &lines);
}

// ---------------------------------------------------------------------------
// Report lines and main.

/// Whether criterion's command line selects `id` (a `group/function` id):
/// true without a filter, or if a filter is a substring of it. (Criterion's
/// filters are regular expressions; plain names, the common case, match
/// the same way.)
fn selected(id: &str) -> bool {
    /// Criterion options that take a value as the next argument.
    const WITH_VALUE: [&str; 14] = [
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--profile-time",
    ];
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg.starts_with('-') {
            if WITH_VALUE.contains(&arg.as_str()) {
                args.next();
            }
        } else {
            filters.push(arg);
        }
    }
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

/// The target ratios of the u64 and 64-byte struct groups.
const SMALL_PAIRS: [PairSpec; 3] = [
    ("ringweave_per_record", "socketpair_per_record", Some(10.0)),
    ("ringweave_batched", "socketpair_batched", Some(1.0)),
    ("ringweave_batched", "iceoryx2", Some(10.0)),
];
/// The same for the string group (no target against iceoryx2).
const TEXT_PAIRS: [PairSpec; 3] = [
    ("ringweave_per_record", "socketpair_per_record", Some(10.0)),
    ("ringweave_batched", "socketpair_batched", Some(1.0)),
    ("ringweave_batched", "iceoryx2", None),
];
/// The same for the 64 KiB group.
const BLOB_PAIRS: [PairSpec; 3] = [
    ("ringweave_per_record", "socketpair_per_record", Some(10.0)),
    ("ringweave_batched", "socketpair_batched", Some(1.0)),
    ("ringweave_batched", "iceoryx2", Some(0.5)),
];

fn main() {
    set_log_level(LogLevel::Error);
    let mut c = Criterion::default().configure_from_args();
    let ice_skip = iceoryx2_probe();
    if let Some(why) = &ice_skip {
        eprintln!("ipc bench: iceoryx2 skipped: {why}");
    }
    let ice_skip = ice_skip.as_deref();
    throughput::<u64>(&mut c, "ipc_u64", N_SMALL, &SMALL_PAIRS, ice_skip);
    throughput::<Tick>(&mut c, "ipc_struct64", N_SMALL, &SMALL_PAIRS, ice_skip);
    throughput::<Text>(&mut c, "ipc_string", N_SMALL, &TEXT_PAIRS, ice_skip);
    throughput::<Vec<u8>>(&mut c, "ipc_blob64k", N_LARGE, &BLOB_PAIRS, ice_skip);
    validate(&mut c);
    round_trip(&mut c, ice_skip, selected("ipc_rtt/latency"));
    c.final_summary();
}
