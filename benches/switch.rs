//! Switch cost: how long a live switch stops the pipeline, next to the floor
//! of what a switch cannot avoid (forking the workers, copying the residual
//! items), and what the hybrid monitor and the distributed transport cost in
//! throughput. Everything is measured in the same run.
//!
//! # `switch_pause`
//!
//! Source → 3 × `map` → sink over `u64`, rings of 4096 slots (the
//! shared-memory rings sized to hold 4096 `u64` records too), at two resident
//! sizes of this process: a `Vec<u8>` ballast, allocated and touched before
//! anything is spawned, kept alive to the end.
//!
//! - `pause_out_<backlog>_<rss>` / `pause_back_<backlog>_<rss>`: the
//!   engine's own pause clock, [`SwitchEvent::pause`] (from the
//!   coordinator's first pause request to the restart of the stages), of the
//!   switch to distributed mode and of the switch back, in one cycle:
//!   spawn, build the backlog, switch out, build it again, switch back, end
//!   the run and check that every item arrived once and in order.
//!   `iter_custom` returns the sum of `pause` rather than the time of the
//!   `switch_to` call because `pause` is the time during which no item
//!   moves; the call adds the command's round trip to the coordinator
//!   thread, which the pipeline never sees (its median is reported too).
//! - `<backlog>` is what is buffered when the switch is asked for. `empty`:
//!   the source is paced at 4 M items/s (at most: it sleeps between batches
//!   of 256), below what either mode sustains, so the rings are (nearly)
//!   empty; `half` (8192 items, half of 4 × 4096) and
//!   `full` (every ring full): the source runs free and the sink is held at a
//!   gate until that much is buffered. The gate opens just *before* `switch_to`: the barrier cannot
//!   reach a sink thread that is inside the user's closure, so a switch asked
//!   for while the sink is held times out after `switch_timeout_ms` (this is
//!   measured once and reported). What is still buffered at the barrier — the
//!   residual actually copied, `migrated_items` — is reported per case.
//! - `fork_<rss>`: `fork` of this process with a child that `_exit`s at
//!   once, and `waitpid` (the child's exit, i.e. the teardown of its copy
//!   of the address space, included); `fork_parent_<rss>`: the same, timing
//!   only until `fork` returns in the parent; `reap_<rss>`: `SIGKILL` and
//!   `waitpid` of such a child that waits (what ending a worker costs).
//! - `copy_out_4096`: archiving 4096 `u64`s into a fresh record ring (first
//!   touch of its pages included, as in a switch); `copy_in_4096`: reading
//!   4096 records back, validated and deserialized (as a switch back does);
//!   `segment_create`: creating the data segment of a switch (4 rings).
//! - After each cycle, the floor of each of its two switches is measured at
//!   once, under the same load: out = 3 forks (one per worker, as
//!   `fork_<rss>`) + archiving the residual that switch copied; back =
//!   3 × `reap_<rss>` + reading it back. The per-cycle pause / floor ratios
//!   (median and quartiles; target ≤ 1.25 out) go to the report: on these
//!   shared 2-core machines the load changes faster than criterion moves
//!   from one benchmark to the next, so only paired ratios mean anything.
//!
//! # `switch_throughput`
//!
//! The same pipeline, unpaced, each run timed whole (spawn, forks, joins):
//! `in_process_20M` vs `hybrid_20M` (`Hybrid` with a threshold never
//! reached, sampling every 100 ms: the monitor's cost alone), and
//! `in_process_5M` vs `distributed_5M`. The monitor's cost is
//! also measured paired — in-process and hybrid runs alternate — because a
//! 1 % effect is smaller than this machine's drift between two criterion
//! benchmarks; the per-pair ratios' median and quartiles are reported.
//!
//! Results the criterion files cannot hold (residuals, the call's time,
//! resident sizes, paired ratios, a stricter floor) go to
//! `<criterion dir>/<group>/extra.json` as report lines for
//! `scripts/bench.sh`.

// Crate root: submodules resolve next to it unless told where.
#[path = "common/report.rs"]
mod common;
#[path = "switch/floor.rs"]
mod floor;
#[path = "switch/gate.rs"]
mod gate;

use common::{quantile, sorted, summary, write_extra};
use criterion::{black_box, Criterion, SamplingMode, Throughput};
use floor::{copy_in, copy_out, fork_and_reap, kill_and_reap, segment_create};
use gate::{Gate, Pacer, Probe, Source};
use ringweave::{
    ExecutionMode, HybridConfig, Mode, Pipeline, PipelineHandle, SwitchEvent, SwitchOutcome,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Slots per in-process ring.
const CAPACITY: usize = 4096;
/// Bytes of one `u64` record in a record ring: a 16-byte frame header and
/// the 8-byte archive, padded to 16.
const RECORD_BYTES: usize = 32;
/// Bytes per shared-memory ring: room for `CAPACITY` `u64` records.
const SHM_RING_BYTES: usize = CAPACITY * RECORD_BYTES;
/// Edges of the pipeline (source → m1 → m2 → m3 → sink).
const EDGES: usize = 4;
/// Worker processes of a distributed run (one per `map`).
const WORKERS: u32 = 3;
/// The `half` backlog: half of the in-process rings' slots.
const HALF: u64 = (EDGES * CAPACITY / 2) as u64;
/// Items per second the source is paced at in the pause benches.
const PACE: u64 = 4_000_000;
/// Items per run of the monitor-cost benches (in-process vs hybrid).
const N_MONITOR: u64 = 20_000_000;
/// Minimum hybrid / in-process throughput (the monitor's cost ≤ 1 %).
const MONITOR_TARGET: f64 = 0.99;

/// Distributed mode's target: at least half the in-process throughput.
const DISTRIBUTED_TARGET: f64 = 0.5;
/// Items per run of the distributed vs in-process benches.
const N_DISTRIBUTED: u64 = 5_000_000;

#[inline]
fn map1(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[inline]
fn map2(x: u64) -> u64 {
    x ^ 0x55
}

#[inline]
fn map3(x: u64) -> u64 {
    x.wrapping_add(1)
}

#[inline]
fn expected(i: u64) -> u64 {
    map3(map2(map1(i)))
}

// ---------------------------------------------------------------------------
// One switch cycle.

/// What is buffered when a switch is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Backlog {
    Empty,
    Half,
    Full,
}

impl Backlog {
    const ALL: [Backlog; 3] = [Backlog::Empty, Backlog::Half, Backlog::Full];

    fn name(self) -> &'static str {
        match self {
            Backlog::Empty => "empty",
            Backlog::Half => "half",
            Backlog::Full => "full",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Out,
    Back,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::Back => "back",
        }
    }
}

/// One measured switch.
#[derive(Clone, Copy, Debug)]
struct Observed {
    pause: Duration,
    call: Duration,
    items: u64,
}

/// Waits until at least `backlog` items are buffered and nothing moves any
/// more: stage counters, source and sink unchanged over 3 polls 1 ms apart.
fn settle(handle: &PipelineHandle, probe: &Probe, backlog: u64) {
    let snapshot = || {
        let counts: Vec<(u64, u64)> = handle
            .stage_counts()
            .into_iter()
            .map(|(_, i, o)| (i, o))
            .collect();
        // Relaxed: progress counters, polled; nothing is read through them.
        (
            counts,
            probe.produced.load(Ordering::Relaxed),
            probe.consumed.load(Ordering::Relaxed),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = snapshot();
    let mut same = 0;
    while same < 3 {
        assert!(Instant::now() < deadline, "the pipeline never settled");
        thread::sleep(Duration::from_millis(1));
        let now = snapshot();
        if now == last && now.1 >= now.2 + backlog {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
}

/// Builds `backlog` in front of the (gated) sink.
fn build(handle: &PipelineHandle, probe: &Probe, backlog: Backlog) {
    match backlog {
        Backlog::Empty => {
            // Let the paced pipeline run a little in this mode first.
            probe.sink.set(u64::MAX);
            probe.source.set(u64::MAX);
            thread::sleep(Duration::from_millis(3));
        }
        Backlog::Full => {
            probe.sink.set(0);
            probe.source.set(u64::MAX);
            // Every ring full: 4 × 4096 in-process; in shared memory as many
            // records and up to a batch more held by each worker. Ask for
            // less than that, so that no layout detail can hang the bench.
            settle(handle, probe, 3 * CAPACITY as u64);
        }
        Backlog::Half => {
            probe.sink.set(0);
            probe.source.set(0);
            settle(handle, probe, 0);
            // Relaxed: both ends are held at their gates and settled.
            let consumed = probe.consumed.load(Ordering::Relaxed);
            let produced = probe.produced.load(Ordering::Relaxed);
            probe.source.set((consumed + HALF).max(produced));
            settle(handle, probe, HALF);
        }
    }
}

/// Opens both gates and switches; panics unless the switch completed.
fn release_and_switch(handle: &PipelineHandle, probe: &Probe, to: Mode) -> Observed {
    probe.sink.set(u64::MAX);
    probe.source.set(u64::MAX);
    let start = Instant::now();
    let event: SwitchEvent = handle.switch_to(to).expect("switch_to");
    let call = start.elapsed();
    assert_eq!(
        event.outcome,
        SwitchOutcome::Completed,
        "switch to {to:?} did not complete: {event:?}"
    );
    Observed {
        pause: event.pause,
        call,
        items: event.migrated_items,
    }
}

/// The pipeline of the pause benches, started in-process. `empty` paces
/// the source so that the pipeline runs below capacity; the others let it
/// run free, so that once the sink is let go the source reaches the barrier
/// as soon as it has room, instead of draining the rings at a paced rate.
fn spawn(probe: &Arc<Probe>, backlog: Backlog) -> PipelineHandle {
    let period = match backlog {
        Backlog::Empty => Duration::from_nanos(1_000_000_000 / PACE),
        Backlog::Half | Backlog::Full => Duration::ZERO,
    };
    let source = Source {
        next: 0,
        pacer: Pacer {
            due: Instant::now(),
            period,
            count: 0,
        },
        probe: Arc::clone(probe),
    };
    let sink_probe = Arc::clone(probe);
    let mut seen = 0u64;
    Pipeline::from_iter(source)
        .map("m1", map1)
        .map("m2", map2)
        .map("m3", map3)
        .ring_capacity(CAPACITY)
        .shm_ring_bytes(SHM_RING_BYTES)
        .sink(move |x: u64| {
            let probe = &sink_probe;
            probe.sink.pass(seen);
            if x != expected(seen) {
                // Relaxed: read after the run's join.
                probe.disorder.store(true, Ordering::Relaxed);
            }
            seen += 1;
            // Relaxed: a progress counter for the bench thread's polling.
            probe.consumed.store(seen, Ordering::Relaxed);
        })
        .spawn()
        .expect("spawn")
}

fn new_probe() -> Arc<Probe> {
    Arc::new(Probe {
        source: Gate::new(),
        sink: Gate::new(),
        end: AtomicU64::new(u64::MAX),
        produced: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        disorder: AtomicBool::new(false),
    })
}

/// Spawns, switches out and back with `backlog` buffered each time, ends
/// the run and checks that every item arrived once, in order.
fn cycle(backlog: Backlog) -> (Observed, Observed) {
    let probe = new_probe();
    let handle = spawn(&probe, backlog);
    build(&handle, &probe, backlog);
    let out = release_and_switch(&handle, &probe, Mode::Distributed);
    build(&handle, &probe, backlog);
    let back = release_and_switch(&handle, &probe, Mode::InProcess);
    // End the source where it is and let the rest drain.
    // Relaxed: `end` only stops the source, which re-reads it per item.
    probe
        .end
        .store(probe.produced.load(Ordering::Relaxed), Ordering::Relaxed);
    probe.source.set(u64::MAX);
    let report = handle.join().expect("join");
    // Relaxed loads below: the join ordered the sink's last stores before.
    assert_eq!(report.items_delivered, report.items_produced);
    assert_eq!(
        report.items_delivered,
        probe.consumed.load(Ordering::Relaxed)
    );
    assert!(
        !probe.disorder.load(Ordering::Relaxed),
        "an item was lost, duplicated or reordered"
    );
    (out, back)
}

/// The naive way to switch with full rings: ask while the
/// sink is still held. Returns the event (a timeout, by design).
fn switch_while_held() -> SwitchEvent {
    let probe = new_probe();
    let handle = spawn(&probe, Backlog::Full);
    build(&handle, &probe, Backlog::Full);
    let event = handle.switch_to(Mode::Distributed).expect("switch_to");
    // Relaxed: as in `cycle`.
    probe.end.store(0, Ordering::Relaxed);
    probe.sink.set(u64::MAX);
    probe.source.set(u64::MAX);
    let _ = handle.join().expect("join");
    event
}

// ---------------------------------------------------------------------------
// Throughput.

/// Sums what the sink receives and publishes the sum when dropped with the
/// sink at the end of the run.
struct SinkSum {
    acc: u64,
    out: Arc<AtomicU64>,
}

impl Drop for SinkSum {
    fn drop(&mut self) {
        // Relaxed: the reader joins the pipeline first.
        self.out.store(self.acc, Ordering::Relaxed);
    }
}

fn run_mode(mode: ExecutionMode, n: u64) -> u64 {
    let out = Arc::new(AtomicU64::new(0));
    let mut sum = SinkSum {
        acc: 0,
        out: Arc::clone(&out),
    };
    let report = Pipeline::from_iter(0..n)
        .map("m1", map1)
        .map("m2", map2)
        .map("m3", map3)
        .ring_capacity(CAPACITY)
        .mode(mode)
        .sink(move |x: u64| {
            // Borrow all of `sum` so the closure captures (and drops) the
            // struct, not just a copy of its `acc` field.
            let sum = &mut sum;
            sum.acc = sum.acc.wrapping_add(black_box(x));
        })
        .run()
        .expect("pipeline failed");
    assert_eq!(report.items_delivered, n);
    assert!(report.switches.is_empty(), "unexpected switch");
    // Relaxed: after the join, as in `SinkSum::drop`.
    out.load(Ordering::Relaxed)
}

fn hybrid_never() -> ExecutionMode {
    ExecutionMode::Hybrid(HybridConfig {
        local_threshold: usize::MAX / 4,
        monitoring_interval_ms: 100,
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------
// Reporting helpers.

fn median_of(v: impl IntoIterator<Item = f64>) -> f64 {
    quantile(&sorted(v.into_iter().collect()), 0.5)
}

/// This process's resident set, in bytes.
fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn ms(d: f64) -> String {
    format!("{:.3} ms", d / 1e6)
}

// ---------------------------------------------------------------------------
// The benches.

/// A throughput contender: name, mode, items per run, expected sink sum.
type Contender = (&'static str, fn() -> ExecutionMode, u64, u64);

fn throughput(c: &mut Criterion) {
    let sum_of = |n: u64| (0..n).map(expected).fold(0, u64::wrapping_add);
    let (sum_monitor, sum_distributed) = (sum_of(N_MONITOR), sum_of(N_DISTRIBUTED));
    let contenders: [Contender; 4] = [
        (
            "in_process_20M",
            || ExecutionMode::InProcess,
            N_MONITOR,
            sum_monitor,
        ),
        ("hybrid_20M", hybrid_never, N_MONITOR, sum_monitor),
        (
            "in_process_5M",
            || ExecutionMode::InProcess,
            N_DISTRIBUTED,
            sum_distributed,
        ),
        (
            "distributed_5M",
            || ExecutionMode::Distributed,
            N_DISTRIBUTED,
            sum_distributed,
        ),
    ];
    for (name, mode, n, expected_sum) in contenders {
        let mut group = c.benchmark_group("switch_throughput");
        group
            .throughput(Throughput::Elements(n))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(6));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let sum = run_mode(mode(), n);
                    total += start.elapsed();
                    assert_eq!(sum, expected_sum, "{name}: wrong sink sum");
                }
                total
            });
        });
        group.finish();
    }

    let r = paired(
        c,
        "paired_in_process_and_hybrid_20M",
        N_MONITOR,
        sum_monitor,
        hybrid_never,
        20,
    );
    let mut lines = Vec::new();
    if !r.is_empty() {
        lines.push(format!(
            "Monitor cost, paired: {} alternating in-process / hybrid pairs of {}-item runs \
             (warm-up included) give hybrid / in-process throughput {}",
            r.len(),
            N_MONITOR,
            summary(&r, 3, MONITOR_TARGET)
        ));
    }
    let r = paired(
        c,
        "paired_in_process_and_distributed_5M",
        N_DISTRIBUTED,
        sum_distributed,
        || ExecutionMode::Distributed,
        10,
    );
    if !r.is_empty() {
        lines.push(format!(
            "Distributed mode, paired: {} alternating in-process / distributed pairs of {}-item \
             runs give distributed / in-process throughput {}",
            r.len(),
            N_DISTRIBUTED,
            summary(&r, 3, DISTRIBUTED_TARGET)
        ));
    }
    for line in &lines {
        println!("{line}");
    }
    if !lines.is_empty() {
        write_extra("switch", "switch_throughput", &lines);
    }
}

/// Runs in-process and `other` pipelines of `n` items alternately (order
/// swapped every pair), one pair per iteration, as criterion function `id`;
/// returns the sorted ratios `other` / in-process of their throughputs
/// (empty if a filter skipped it).
fn paired(
    c: &mut Criterion,
    id: &str,
    n: u64,
    expected_sum: u64,
    other: fn() -> ExecutionMode,
    seconds: u64,
) -> Vec<f64> {
    let ratios = Mutex::new(Vec::new());
    let mut group = c.benchmark_group("switch_throughput");
    group
        .throughput(Throughput::Elements(2 * n))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(seconds));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let time = |mode: ExecutionMode| {
                    let start = Instant::now();
                    assert_eq!(run_mode(mode, n), expected_sum);
                    start.elapsed()
                };
                let mut ratios = ratios.lock().unwrap();
                let (in_process, theirs) = if ratios.len() % 2 == 0 {
                    let a = time(ExecutionMode::InProcess);
                    (a, time(other()))
                } else {
                    let h = time(other());
                    (time(ExecutionMode::InProcess), h)
                };
                total += in_process + theirs;
                // Throughput other / in-process = time in-process / other.
                ratios.push(in_process.as_secs_f64() / theirs.as_secs_f64());
            }
            total
        });
    });
    group.finish();
    sorted(ratios.into_inner().unwrap())
}

/// One cycle's two switches, each with its floor measured right after it,
/// at the same resident size and under the same load.
#[derive(Clone, Copy, Debug)]
struct Paired {
    seen: Observed,
    /// 3 × (fork + `_exit` + `waitpid`) + copy out, or 3 × reap + copy in.
    floor: Duration,
    /// Out only: 3 × (until `fork` returns in the parent) + copy out.
    strict: Duration,
}

/// Results of the pause benches, for the report.
#[derive(Default)]
struct PauseLog {
    /// (direction, backlog, rss label) → every observed switch.
    seen: BTreeMap<(Direction, Backlog, &'static str), Vec<Paired>>,
}

impl PauseLog {
    fn record(&mut self, key: (Direction, Backlog, &'static str), paired: Paired) {
        self.seen.entry(key).or_default().push(paired);
    }
}

/// The floor of a switch out that copied `items`: 3 forks and the copy.
/// Returns (with the fork's `waitpid`, with `fork`'s return alone).
fn floor_out(items: u64) -> (Duration, Duration) {
    let (mut forked, mut reaped) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..WORKERS {
        let (f, r) = fork_and_reap();
        forked += f;
        reaped += r;
    }
    let copy = copy_out(&(0..items).collect::<Vec<u64>>());
    (reaped + copy, forked + copy)
}

/// The floor of a switch back that copied `items`: 3 reaps and the copy.
fn floor_back(items: u64) -> Duration {
    let reaps: Duration = (0..WORKERS).map(|_| kill_and_reap()).sum();
    reaps + copy_in(items as usize)
}

/// Pause and floor benches at one resident size.
fn pauses(c: &mut Criterion, rss: &'static str, log: &Arc<Mutex<PauseLog>>) {
    let mut group = c.benchmark_group("switch_pause");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for backlog in Backlog::ALL {
        for dir in [Direction::Out, Direction::Back] {
            let id = format!("pause_{}_{}_{rss}", dir.name(), backlog.name());
            let log = Arc::clone(log);
            group.bench_function(id, move |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (out, back) = cycle(backlog);
                        total += match dir {
                            Direction::Out => out.pause,
                            Direction::Back => back.pause,
                        };
                        let (floor, strict) = floor_out(out.items);
                        let paired = Paired {
                            seen: out,
                            floor,
                            strict,
                        };
                        let mut log = log.lock().unwrap();
                        log.record((Direction::Out, backlog, rss), paired);
                        let floor = floor_back(back.items);
                        let paired = Paired {
                            seen: back,
                            floor,
                            strict: floor,
                        };
                        log.record((Direction::Back, backlog, rss), paired);
                    }
                    total
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("switch_pause");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group.bench_function(format!("fork_{rss}"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fork_and_reap().1).sum())
    });
    group.bench_function(format!("fork_parent_{rss}"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fork_and_reap().0).sum())
    });
    group.bench_function(format!("reap_{rss}"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| kill_and_reap()).sum())
    });
    group.finish();
}

fn copies(c: &mut Criterion) {
    let items: Vec<u64> = (0..CAPACITY as u64).collect();
    let mut group = c.benchmark_group("switch_pause");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group.bench_function("copy_out_4096", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| copy_out(&items)).sum())
    });
    group.bench_function("copy_in_4096", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| copy_in(CAPACITY)).sum())
    });
    group.bench_function("segment_create", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| segment_create()).sum())
    });
    group.finish();
}

/// Grows `ballast` so that this process holds about `target` bytes
/// resident, touching every page; returns the resident size reached.
fn grow_ballast(ballast: &mut Vec<u8>, target: usize) -> usize {
    let now = resident_bytes();
    if target > now {
        let more = target - now;
        ballast.reserve_exact(more);
        // Writing non-zero bytes touches (and so faults in) every page.
        ballast.resize(ballast.len() + more, 1);
    }
    black_box(&ballast);
    resident_bytes()
}

/// Report lines for the pause group.
/// `median (q1–q3)` of `values`.
fn spread(values: impl IntoIterator<Item = f64>) -> (f64, String) {
    let v = sorted(values.into_iter().collect());
    let median = quantile(&v, 0.5);
    let text = format!(
        "{median:.2} ({:.2}–{:.2})",
        quantile(&v, 0.25),
        quantile(&v, 0.75)
    );
    (median, text)
}

/// Maximum pause / floor of a switch out.
const TARGET: f64 = 1.25;

fn pause_lines(
    log: &PauseLog,
    resident: &[(&'static str, usize)],
    held: &SwitchEvent,
) -> Vec<String> {
    let mut lines = vec![
        "Each cycle's switch is followed at once by its floor, measured at the same resident \
         size: out = 3 × (`fork` + `_exit` + `waitpid`) + archiving the residual the switch \
         copied; back = 3 × (`SIGKILL` + `waitpid` of a waiting child) + reading that \
         residual back. Ratios are per cycle, then median (quartiles), so that the load of \
         the moment cancels out. The last column replaces each `fork` + `waitpid` with the \
         time until `fork` returns in the parent (a switch does not wait for a child's exit)."
            .to_string(),
        String::new(),
        "| Switch, backlog at the request, resident size | Median pause | \
         Median `switch_to` call | Residual copied: median (min–max) | Cycles | \
         Median floor | Pause / floor | Target | | Pause / (3 × `fork` return + copy) |"
            .to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|".to_string(),
    ];
    for (&(dir, backlog, rss), cycles) in &log.seen {
        let nanos = |d: Duration| d.as_nanos() as f64;
        let pause = median_of(cycles.iter().map(|c| nanos(c.seen.pause)));
        let call = median_of(cycles.iter().map(|c| nanos(c.seen.call)));
        let floor = median_of(cycles.iter().map(|c| nanos(c.floor)));
        let items = median_of(cycles.iter().map(|c| c.seen.items as f64));
        let (lo, hi) = cycles.iter().fold((u64::MAX, 0), |(lo, hi), c| {
            (lo.min(c.seen.items), hi.max(c.seen.items))
        });
        let (ratio, ratio_text) =
            spread(cycles.iter().map(|c| nanos(c.seen.pause) / nanos(c.floor)));
        let (target, verdict, strict) = match dir {
            Direction::Out => {
                let verdict = if ratio <= TARGET { "met" } else { "**missed**" };
                let (_, strict) =
                    spread(cycles.iter().map(|c| nanos(c.seen.pause) / nanos(c.strict)));
                (format!("≤ {TARGET} ×"), verdict, strict)
            }
            Direction::Back => ("—".to_string(), "", "—".to_string()),
        };
        lines.push(format!(
            "| {} {}, {rss} | {} | {} | {items:.0} ({lo}–{hi}) | {} | {} | {ratio_text} | \
             {target} | {verdict} | {strict} |",
            dir.name(),
            backlog.name(),
            ms(pause),
            ms(call),
            cycles.len(),
            ms(floor),
        ));
    }
    lines.push(String::new());
    let sizes: Vec<String> = resident
        .iter()
        .map(|(label, bytes)| format!("{label}: {:.1} MB", *bytes as f64 / 1e6))
        .collect();
    lines.push(format!(
        "Resident size of the bench process when measured: {}.",
        sizes.join(", ")
    ));
    lines.push(String::new());
    lines.push(format!(
        "Asked for while the sink is still held at its gate (rings full), a switch ends \
         `{:?}` after {}: the barrier cannot reach a stage that is inside the user's \
         closure, so the `half` and `full` cases open the gate just before `switch_to`.",
        held.outcome,
        ms(held.pause.as_nanos() as f64)
    ));
    lines
}

// `criterion_group!` would define an undocumented `pub fn`; this is what it
// and `criterion_main!` expand to, minus that.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);

    let log = Arc::new(Mutex::new(PauseLog::default()));
    let mut ballast: Vec<u8> = Vec::new();
    let mut resident = Vec::new();
    copies(&mut c);
    for (label, bytes) in [("10MB", 10_000_000), ("100MB", 100_000_000)] {
        let reached = grow_ballast(&mut ballast, bytes);
        resident.push((label, reached));
        pauses(&mut c, label, &log);
    }
    // Only if the pause benches ran (a criterion filter may skip them).
    if !log.lock().unwrap().seen.is_empty() {
        let held = switch_while_held();
        let lines = pause_lines(&log.lock().unwrap(), &resident, &held);
        for line in &lines {
            println!("{line}");
        }
        write_extra("switch", "switch_pause", &lines);
    }
    black_box(&ballast);
    c.final_summary();
}
