//! End-to-end latency: source → 3 × `map` → sink, paced (issue 14).
//!
//! A producer hands in one item every `1 / rate` seconds; the sink stamps
//! each item's end-to-end latency into an HDR histogram (nanoseconds, three
//! significant figures). Every contender is a five-thread pipeline with
//! capacity 4096 and the same three cheap maps, and all run in the same
//! process, interleaved per rate:
//!
//! - `crossbeam`: five threads hand-wired with `crossbeam-channel`
//!   `bounded(4096)`, blocking `send`/`recv`;
//! - `rtrb`: five threads hand-wired with `rtrb` rings of 4096, one item per
//!   push/pop, waiting as ringweave's default [`WaitStrategy`] does: spin,
//!   then `yield_now`, then park (`benches/latency/parked_ring.rs`);
//! - `ringweave_iter`: `Pipeline::from_iter(paced source)`, default options
//!   (the defaults are what is measured) with `ring_capacity(4096)`;
//! - `ringweave_input`: `Pipeline::with_input()`, the bench's own thread
//!   pushing the paced items (one more thread and ring than the others:
//!   `Input` feeds a source thread through a ring of its own, 4096 slots);
//! - `ringweave_iter_distributed`, `ringweave_input_distributed`: the same in
//!   [`ExecutionMode::Distributed`] (the maps in forked worker processes,
//!   joined by shared-memory rings of the default size).
//!
//! **Stamps.** An item is `(seq, t_ns)`: `t_ns` is the time, in nanoseconds
//! since an `Instant` taken at the start of the bench, read just before the
//! item is handed in (the actual send time, not the scheduled one, so a
//! producer that falls behind its schedule does not add its own lateness).
//! Pacing sleeps (timer slack 1 ns) until 5 µs before each item's scheduled
//! time (`start + i / rate`), then spins (see [`pace_until`] for why it no
//! longer spins the whole period). The schedule is absolute, so a late item
//! is followed by on-time ones. The
//! sink reads the clock, records `now - t_ns` and checks `seq`; nothing else
//! happens per item. The first 5 % of each run's items are not recorded
//! (warm-up).
//!
//! **Cases.** Paced at 1k, 10k and 100k items/s (2,000, 20,000 and 200,000
//! items), then full load (no pacing, 200,000 items: the latency then
//! includes the time items wait in full rings, so it measures queueing, not
//! hand-over), then *saturated*: the middle map burns ~2 µs of CPU per item
//! and the source is unpaced, so every ring before it fills. That case shows
//! how many items each transport queues: an in-process ring holds 4096
//! items, a shared-memory ring as many as fit in its bytes.
//!
//! **Rounds.** Each case runs every contender `LATENCY_ROUNDS` times
//! (default 3) in a rotated order; the tables show the median of each
//! percentile over the rounds and the range of the rounds' p99.
//!
//! `LATENCY_SCALE` (a float, default 1.0) multiplies every item count: 0.05
//! makes a smoke test. `LATENCY_CASES` (e.g. `paced:10000,saturated`) runs
//! only the cases named. A contender that fails prints its error and the run
//! goes on; one that takes far longer than its schedule is abandoned (its
//! threads are left behind) so the bench never hangs.
//!
//! Output: a markdown table per case on stdout and in
//! `${CARGO_TARGET_DIR:-target}/latency/latency.md` (which
//! `scripts/bench.sh` puts in `docs/PERF.md`), and every row in
//! `${CARGO_TARGET_DIR:-target}/latency/latency.json`.
//!
//! Timings are only meaningful on a quiet machine: the paced producer spins
//! on a core of its own, and the five stages share what is left.

#[path = "latency/parked_ring.rs"]
mod parked_ring;

use hdrhistogram::Histogram;
use ringweave::{ExecutionMode, Pipeline, WaitStrategy};
use std::fmt::Write as _;
use std::hint;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The item: `(seq, t_ns)`, the sequence number and the send time in
/// nanoseconds since the bench's epoch.
type Stamped = (u64, u64);

/// Slots per ring or channel, for every contender.
const CAPACITY: usize = 4096;
/// Maps between source and sink; each adds 1 to `seq`.
const HOPS: u64 = 3;
/// Share of each run's first items left out of the histogram.
const WARMUP_FRACTION: f64 = 0.05;
/// CPU the middle map burns per item in the saturated case.
const SATURATED_WORK: Duration = Duration::from_micros(2);
/// Items of the full-load and saturated cases at scale 1.
const UNPACED_ITEMS: u64 = 200_000;
/// Paced rates (items/s) and their item counts at scale 1: two seconds each.
const RATES: [(u64, u64); 3] = [(1_000, 2_000), (10_000, 20_000), (100_000, 200_000)];
/// Fewest items a run has, whatever the scale.
const MIN_ITEMS: u64 = 100;
/// How long before an item's due time the pacer stops sleeping and spins.
const SPIN_TAIL: Duration = Duration::from_micros(5);
/// Rounds per case at `LATENCY_ROUNDS` unset: each contender runs this many
/// times, in a rotated order, and the table shows the median of each
/// percentile over the rounds (and the p99 range).
const ROUNDS: usize = 3;
/// How long to wait for a ringweave sink's histogram after `join` returned.
const SINK_HANDBACK_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// What one run does.

/// What a run feeds the pipeline.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Items to hand in.
    items: u64,
    /// Time between two items, or `None` for an unpaced source.
    period: Option<Duration>,
    /// CPU the middle map burns per item: [`SATURATED_WORK`] or none (the
    /// maps are `fn` pointers, shared by every contender, so the amount is
    /// a constant).
    work: Option<Duration>,
    /// The bench's clock origin.
    epoch: Instant,
}

impl Shape {
    /// Items at the start of the run that are not recorded.
    fn warmup(&self) -> u64 {
        (self.items as f64 * WARMUP_FRACTION) as u64
    }

    /// The three maps, the middle one burning `work` if set.
    fn maps(&self) -> [fn(Stamped) -> Stamped; 3] {
        let middle = if self.work.is_some() {
            step_with_work
        } else {
            step
        };
        [step, middle, step]
    }

    /// How long a run may take before it is abandoned: far more than its
    /// schedule needs.
    fn deadline(&self) -> Duration {
        let per_item = self.period.unwrap_or_default() + self.work.unwrap_or_default();
        Duration::from_secs(30) + per_item.mul_f64(4.0 * self.items as f64)
    }
}

/// A cheap map: counts the hop in `seq`.
#[inline]
fn step((seq, t): Stamped) -> Stamped {
    (seq.wrapping_add(1), t)
}

/// [`step`] after burning [`SATURATED_WORK`] of CPU.
fn step_with_work(x: Stamped) -> Stamped {
    let until = Instant::now() + SATURATED_WORK;
    while Instant::now() < until {
        hint::spin_loop();
    }
    step(x)
}

/// Nanoseconds since `epoch`.
#[inline]
fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// The items of a run, each yielded at its scheduled time and stamped with
/// the time it is yielded. The schedule starts at the first call to `next`,
/// so thread start-up does not make the first items late.
struct PacedSource {
    shape: Shape,
    next_seq: u64,
    start: Option<Instant>,
}

impl PacedSource {
    fn new(shape: Shape) -> Self {
        Self {
            shape,
            next_seq: 0,
            start: None,
        }
    }
}

impl Iterator for PacedSource {
    type Item = Stamped;

    fn next(&mut self) -> Option<Stamped> {
        if self.next_seq == self.shape.items {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(period) = self.shape.period {
            let start = *self.start.get_or_insert_with(|| {
                // Sleeps end within microseconds of their deadline instead
                // of the default 50 µs slack.
                let _ = nix::sys::prctl::set_timerslack(1);
                Instant::now()
            });
            let due = start + Duration::from_nanos(period.as_nanos() as u64 * seq);
            pace_until(due);
        }
        Some((seq, now_ns(self.shape.epoch)))
    }
}

/// Waits until `due`: sleeps while more than [`SPIN_TAIL`] is left, then
/// spins. A pacer that spun the whole period kept one of the two cores busy
/// all the time, and whether a stage thread landed on that core (and waited
/// for the scheduler's next tick, 4 ms) decided the run's p99 more than the
/// transport did: the same binary gave crossbeam a 10k items/s p99 of 25 µs
/// in one run and 3.8 ms in the next. A producer that sleeps between items
/// is also what a live service looks like (a socket read blocks).
fn pace_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN_TAIL {
            thread::sleep(left - SPIN_TAIL);
        } else {
            hint::spin_loop();
        }
    }
}

/// The sink's state: the histogram and the order check.
struct Recorder {
    histogram: Histogram<u64>,
    epoch: Instant,
    warmup: u64,
    /// Items seen so far.
    seen: u64,
    /// Items whose `seq` was not the one expected next.
    misordered: u64,
}

impl Recorder {
    fn new(shape: &Shape) -> Self {
        Self {
            // 1 ns to 10 min at 3 significant figures; `saturating_record`
            // keeps the sink from failing on anything outside.
            histogram: Histogram::new_with_bounds(1, 600_000_000_000, 3)
                .expect("valid histogram bounds"),
            epoch: shape.epoch,
            warmup: shape.warmup(),
            seen: 0,
            misordered: 0,
        }
    }

    #[inline]
    fn record(&mut self, (seq, t_ns): Stamped) {
        let now = now_ns(self.epoch);
        if self.seen >= self.warmup {
            self.histogram.saturating_record(now.saturating_sub(t_ns));
        }
        if seq != self.seen + HOPS {
            self.misordered += 1;
        }
        self.seen += 1;
    }

    /// The run's result, or why it is not one.
    fn finish(self, shape: &Shape) -> Result<Summary, String> {
        if self.seen != shape.items || self.misordered != 0 {
            return Err(format!(
                "the sink saw {} of {} items, {} out of order",
                self.seen, shape.items, self.misordered
            ));
        }
        let h = &self.histogram;
        Ok(Summary {
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            recorded: h.len(),
            p99_range: (h.value_at_quantile(0.99), h.value_at_quantile(0.99)),
        })
    }
}

/// A ringweave sink: records into a [`Recorder`] and hands it back through a
/// channel when the engine drops the sink at the end of the run.
struct SinkRecorder {
    recorder: Option<Recorder>,
    back: mpsc::Sender<Recorder>,
}

impl SinkRecorder {
    #[inline]
    fn record(&mut self, item: Stamped) {
        if let Some(r) = self.recorder.as_mut() {
            r.record(item);
        }
    }
}

impl Drop for SinkRecorder {
    fn drop(&mut self) {
        if let Some(r) = self.recorder.take() {
            let _ = self.back.send(r);
        }
    }
}

/// Latency percentiles of one run, in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Summary {
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    /// Items in the histogram (the run's items less the warm-up).
    recorded: u64,
    /// The lowest and highest p99 of the rounds this summary is the median
    /// of (both `p99_ns` for one round).
    p99_range: (u64, u64),
}

impl Summary {
    /// The median of each field over `rounds` (at least one).
    fn median(rounds: &[Summary]) -> Summary {
        let median = |f: fn(&Summary) -> u64| {
            let mut v: Vec<u64> = rounds.iter().map(f).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let p99 = rounds.iter().map(|r| r.p99_ns);
        Summary {
            p50_ns: median(|r| r.p50_ns),
            p99_ns: median(|r| r.p99_ns),
            p999_ns: median(|r| r.p999_ns),
            max_ns: median(|r| r.max_ns),
            recorded: median(|r| r.recorded),
            p99_range: (p99.clone().min().unwrap_or(0), p99.max().unwrap_or(0)),
        }
    }
}

// ---------------------------------------------------------------------------
// The contenders.

/// Where the three maps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Threads,
    Workers,
}

/// Where the items come from, for the ringweave contenders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    /// `Pipeline::from_iter(PacedSource)`.
    Iter,
    /// `Pipeline::with_input()`, pushed from the bench's thread.
    Input,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Crossbeam,
    Rtrb,
    Ringweave(Feed, Placement),
}

impl Contender {
    const PACED: [Contender; 6] = [
        Contender::Crossbeam,
        Contender::Rtrb,
        Contender::Ringweave(Feed::Iter, Placement::Threads),
        Contender::Ringweave(Feed::Input, Placement::Threads),
        Contender::Ringweave(Feed::Iter, Placement::Workers),
        Contender::Ringweave(Feed::Input, Placement::Workers),
    ];
    const SATURATED: [Contender; 3] = [
        Contender::Crossbeam,
        Contender::Ringweave(Feed::Iter, Placement::Threads),
        Contender::Ringweave(Feed::Iter, Placement::Workers),
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Crossbeam => "crossbeam",
            Contender::Rtrb => "rtrb",
            Contender::Ringweave(Feed::Iter, Placement::Threads) => "ringweave_iter",
            Contender::Ringweave(Feed::Input, Placement::Threads) => "ringweave_input",
            Contender::Ringweave(Feed::Iter, Placement::Workers) => "ringweave_iter_distributed",
            Contender::Ringweave(Feed::Input, Placement::Workers) => "ringweave_input_distributed",
        }
    }

    /// Runs one contender on a thread of its own and waits for it at most
    /// `shape.deadline()`.
    fn run(self, shape: Shape) -> Result<Summary, String> {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("latency-{}", self.name()))
            .spawn(move || {
                let result = match self {
                    Contender::Crossbeam => run_crossbeam(shape),
                    Contender::Rtrb => run_rtrb(shape),
                    Contender::Ringweave(feed, placement) => run_ringweave(shape, feed, placement),
                };
                let _ = tx.send(result);
            })
            .map_err(|e| format!("cannot start the driver thread: {e}"))?;
        match rx.recv_timeout(shape.deadline()) {
            Ok(result) => result.and_then(|r| r.finish(&shape)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "timed out after {:?}; its threads are left running",
                shape.deadline()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the driver thread panicked".into()),
        }
    }
}

/// Joins `handle`, turning a panic into an error naming `what`.
fn join<T>(handle: thread::JoinHandle<T>, what: &str) -> Result<T, String> {
    handle
        .join()
        .map_err(|_| format!("the {what} thread panicked"))
}

/// Spawns a named thread.
fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<T>, String> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

fn run_crossbeam(shape: Shape) -> Result<Recorder, String> {
    use crossbeam_channel::{bounded, Receiver, Sender};
    let (src_tx, mut rx): (Sender<Stamped>, Receiver<Stamped>) = bounded(CAPACITY);
    let mut threads = Vec::new();
    threads.push(spawn("cb-source", move || {
        for item in PacedSource::new(shape) {
            if src_tx.send(item).is_err() {
                break;
            }
        }
    })?);
    for (i, f) in shape.maps().into_iter().enumerate() {
        let (tx, next_rx) = bounded(CAPACITY);
        let input = std::mem::replace(&mut rx, next_rx);
        threads.push(spawn(&format!("cb-map{i}"), move || {
            for x in input.iter() {
                if tx.send(f(x)).is_err() {
                    break;
                }
            }
        })?);
    }
    let mut recorder = Recorder::new(&shape);
    let sink = spawn("cb-sink", move || {
        for x in rx.iter() {
            recorder.record(x);
        }
        recorder
    })?;
    for t in threads {
        join(t, "crossbeam stage")?;
    }
    join(sink, "crossbeam sink")
}

fn run_rtrb(shape: Shape) -> Result<Recorder, String> {
    let (mut src_tx, mut rx) = parked_ring::channel(CAPACITY, WaitStrategy::default());
    let mut threads = Vec::new();
    threads.push(spawn("rtrb-source", move || {
        for item in PacedSource::new(shape) {
            if src_tx.push(item).is_err() {
                break;
            }
        }
    })?);
    for (i, f) in shape.maps().into_iter().enumerate() {
        let (mut tx, next_rx) = parked_ring::channel(CAPACITY, WaitStrategy::default());
        let mut input = std::mem::replace(&mut rx, next_rx);
        threads.push(spawn(&format!("rtrb-map{i}"), move || {
            while let Some(x) = input.pop() {
                if tx.push(f(x)).is_err() {
                    break;
                }
            }
        })?);
    }
    let mut recorder = Recorder::new(&shape);
    let sink = spawn("rtrb-sink", move || {
        while let Some(x) = rx.pop() {
            recorder.record(x);
        }
        recorder
    })?;
    for t in threads {
        join(t, "rtrb stage")?;
    }
    join(sink, "rtrb sink")
}

fn run_ringweave(shape: Shape, feed: Feed, placement: Placement) -> Result<Recorder, String> {
    let mode = match placement {
        Placement::Threads => ExecutionMode::InProcess,
        Placement::Workers => ExecutionMode::Distributed,
    };
    let (back, recorded) = mpsc::channel();
    let mut sink = SinkRecorder {
        recorder: Some(Recorder::new(&shape)),
        back,
    };
    let [m1, m2, m3] = shape.maps();
    let report = match feed {
        Feed::Iter => Pipeline::from_iter(PacedSource::new(shape))
            .map("m1", m1)
            .map("m2", m2)
            .map("m3", m3)
            .ring_capacity(CAPACITY)
            .mode(mode)
            .sink(move |x| sink.record(x))
            .run()
            .map_err(|e| format!("run: {e}"))?,
        Feed::Input => run_ringweave_input(shape, mode, [m1, m2, m3], sink)?,
    };
    let recorder = recorded
        .recv_timeout(SINK_HANDBACK_TIMEOUT)
        .map_err(|_| "the sink was not dropped after `join`".to_string())?;
    if report.items_delivered != shape.items {
        return Err(format!(
            "the report says {} of {} items delivered",
            report.items_delivered, shape.items
        ));
    }
    Ok(recorder)
}

/// The `ringweave_input*` contenders: this thread pushes the paced items.
fn run_ringweave_input(
    shape: Shape,
    mode: ExecutionMode,
    [m1, m2, m3]: [fn(Stamped) -> Stamped; 3],
    mut sink: SinkRecorder,
) -> Result<ringweave::RunReport, String> {
    let (mut input, pipeline) = Pipeline::<Stamped>::with_input();
    let handle = pipeline
        .map("m1", m1)
        .map("m2", m2)
        .map("m3", m3)
        .ring_capacity(CAPACITY)
        .mode(mode)
        .sink(move |x| sink.record(x))
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut pushed = Ok(());
    for item in PacedSource::new(shape) {
        if let Err(e) = input.push(item) {
            pushed = Err(format!("push: {e}"));
            break;
        }
    }
    drop(input);
    let report = handle.join().map_err(|e| format!("join: {e}"))?;
    pushed.map(|()| report)
}

// ---------------------------------------------------------------------------
// The cases and the report.

/// How the source is driven.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// One item every `1 / rate` seconds.
    Paced { rate: u64 },
    /// As fast as the pipeline takes them.
    Full,
    /// Unpaced, and the middle map burns [`SATURATED_WORK`] per item.
    Saturated,
}

impl Load {
    fn key(self) -> &'static str {
        match self {
            Load::Paced { .. } => "paced",
            Load::Full => "full",
            Load::Saturated => "saturated",
        }
    }

    /// The case's name in `LATENCY_CASES`.
    fn label(self) -> String {
        match self {
            Load::Paced { rate } => format!("paced:{rate}"),
            other => other.key().to_string(),
        }
    }

    fn rate(self) -> Option<u64> {
        match self {
            Load::Paced { rate } => Some(rate),
            _ => None,
        }
    }
}

/// A percentile of a [`Summary`].
#[derive(Clone, Copy, Debug)]
enum Percentile {
    P50,
    P99,
}

impl Percentile {
    fn of(self, s: &Summary) -> u64 {
        match self {
            Percentile::P50 => s.p50_ns,
            Percentile::P99 => s.p99_ns,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P99 => "p99",
        }
    }
}

/// A ratio printed under a case's table: `num`'s percentile over `den`'s.
#[derive(Clone, Copy, Debug)]
struct Ratio {
    num: Contender,
    den: Contender,
    at: Percentile,
}

/// One contender's result in one case.
struct Row {
    contender: Contender,
    result: Result<Summary, String>,
}

/// One case: its load, its shape and every contender's row.
struct Case {
    load: Load,
    shape: Shape,
    rows: Vec<Row>,
}

impl Case {
    fn summary(&self, c: Contender) -> Option<&Summary> {
        self.rows
            .iter()
            .find(|r| r.contender == c)
            .and_then(|r| r.result.as_ref().ok())
    }

    fn heading(&self) -> String {
        let items = grouped(self.shape.items);
        let skipped = grouped(self.shape.warmup());
        match self.load {
            Load::Paced { rate } => format!(
                "### Paced: {} items/s ({items} items, the first {skipped} not recorded)",
                grouped(rate)
            ),
            Load::Full => format!(
                "### Full load: unpaced source ({items} items, the first {skipped} not recorded)"
            ),
            Load::Saturated => format!(
                "### Saturated: middle map burns {} µs per item, unpaced source ({items} items, \
                 the first {skipped} not recorded)",
                SATURATED_WORK.as_secs_f64() * 1e6
            ),
        }
    }

    /// The case's markdown: heading, table, ratios.
    fn markdown(&self) -> String {
        let mut s = format!(
            "{}\n\n| Contender | p50 (µs) | p99 (µs) | p99 range (µs) | p99.9 (µs) | max (µs) | items |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
            self.heading()
        );
        for row in &self.rows {
            let _ = match &row.result {
                Ok(r) => writeln!(
                    s,
                    "| {} | {} | {} | {}–{} | {} | {} | {} |",
                    row.contender.name(),
                    micros(r.p50_ns),
                    micros(r.p99_ns),
                    micros(r.p99_range.0),
                    micros(r.p99_range.1),
                    micros(r.p999_ns),
                    micros(r.max_ns),
                    grouped(r.recorded)
                ),
                Err(e) => writeln!(
                    s,
                    "| {} | — | — | — | — | — | failed: {} |",
                    row.contender.name(),
                    e.replace('|', "\\|")
                ),
            };
        }
        s.push('\n');
        let ratios: &[Ratio] = match self.load {
            Load::Saturated => &[Ratio {
                num: Contender::Ringweave(Feed::Iter, Placement::Workers),
                den: Contender::Ringweave(Feed::Iter, Placement::Threads),
                at: Percentile::P99,
            }],
            _ => &[
                Ratio {
                    num: Contender::Ringweave(Feed::Iter, Placement::Threads),
                    den: Contender::Crossbeam,
                    at: Percentile::P50,
                },
                Ratio {
                    num: Contender::Ringweave(Feed::Iter, Placement::Threads),
                    den: Contender::Crossbeam,
                    at: Percentile::P99,
                },
                Ratio {
                    num: Contender::Ringweave(Feed::Input, Placement::Threads),
                    den: Contender::Crossbeam,
                    at: Percentile::P50,
                },
                Ratio {
                    num: Contender::Ringweave(Feed::Input, Placement::Threads),
                    den: Contender::Crossbeam,
                    at: Percentile::P99,
                },
                Ratio {
                    num: Contender::Ringweave(Feed::Iter, Placement::Workers),
                    den: Contender::Ringweave(Feed::Iter, Placement::Threads),
                    at: Percentile::P99,
                },
                Ratio {
                    num: Contender::Ringweave(Feed::Input, Placement::Workers),
                    den: Contender::Ringweave(Feed::Input, Placement::Threads),
                    at: Percentile::P99,
                },
            ],
        };
        for &Ratio { num, den, at } in ratios {
            let what = at.label();
            let value = match (self.summary(num), self.summary(den)) {
                (Some(n), Some(d)) if at.of(d) > 0 => {
                    format!("{:.2} ×", at.of(n) as f64 / at.of(d) as f64)
                }
                _ => "— (no result)".into(),
            };
            let _ = writeln!(
                s,
                "- {} {what} / {} {what}: {value}",
                num.name(),
                den.name()
            );
        }
        s
    }

    /// The case's rows as JSON objects.
    fn json_rows(&self, out: &mut Vec<String>) {
        let rate = self
            .load
            .rate()
            .map_or_else(|| "null".to_string(), |r| r.to_string());
        for row in &self.rows {
            let numbers = match &row.result {
                Ok(r) => format!(
                    "\"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}, \
                     \"items\": {}, \"error\": null",
                    r.p50_ns, r.p99_ns, r.p999_ns, r.max_ns, r.recorded
                ),
                Err(e) => format!(
                    "\"p50_ns\": null, \"p99_ns\": null, \"p999_ns\": null, \"max_ns\": null, \
                     \"items\": null, \"error\": {}",
                    json_string(e)
                ),
            };
            out.push(format!(
                "{{\"load\": \"{}\", \"rate\": {rate}, \"contender\": \"{}\", \
                 \"items_sent\": {}, {numbers}}}",
                self.load.key(),
                row.contender.name(),
                self.shape.items
            ));
        }
    }
}

/// Nanoseconds as microseconds with one decimal.
fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// `n` with thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `LATENCY_SCALE`, or 1.
fn scale() -> f64 {
    match std::env::var("LATENCY_SCALE") {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => s,
            _ => {
                eprintln!("latency bench: LATENCY_SCALE={v:?} is not a positive number; using 1");
                1.0
            }
        },
        Err(_) => 1.0,
    }
}

/// `LATENCY_CASES`: a comma-separated list of cases to run (`paced:1000`,
/// `paced:10000`, `paced:100000`, `full`, `saturated`); every case if unset.
fn cases() -> Vec<String> {
    std::env::var("LATENCY_CASES")
        .map(|v| {
            v.split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `LATENCY_ROUNDS`, or [`ROUNDS`].
fn rounds() -> usize {
    match std::env::var("LATENCY_ROUNDS") {
        Ok(v) => {
            match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("latency bench: LATENCY_ROUNDS={v:?} is not a positive count; using {ROUNDS}");
                    ROUNDS
                }
            }
        }
        Err(_) => ROUNDS,
    }
}

/// Where the report files go: `${CARGO_TARGET_DIR:-target}/latency`.
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    PathBuf::from(target).join("latency")
}

fn main() {
    // Arguments (`--bench`, `--noplot`, a filter) are ignored: this bench
    // always runs every case.
    let scale = scale();
    let rounds_per_case = rounds();
    let epoch = Instant::now();
    let items = |n: u64| ((n as f64 * scale) as u64).max(MIN_ITEMS);

    let mut loads: Vec<(Load, Shape, &[Contender])> = RATES
        .iter()
        .map(|&(rate, n)| {
            let shape = Shape {
                items: items(n),
                period: Some(Duration::from_nanos(1_000_000_000 / rate)),
                work: None,
                epoch,
            };
            (Load::Paced { rate }, shape, &Contender::PACED[..])
        })
        .collect();
    loads.push((
        Load::Full,
        Shape {
            items: items(UNPACED_ITEMS),
            period: None,
            work: None,
            epoch,
        },
        &Contender::PACED[..],
    ));
    loads.push((
        Load::Saturated,
        Shape {
            items: items(UNPACED_ITEMS),
            period: None,
            work: Some(SATURATED_WORK),
            epoch,
        },
        &Contender::SATURATED[..],
    ));

    let mut md = String::from(
        "`cargo bench -p ringweave-benches --bench latency`. One process, contenders interleaved per case; \
         each a five-thread pipeline (source → 3 × map → sink) with capacity 4096 \
         (`ringweave_input*`: six, the pushing thread and the source). \
         Latency: sink's clock minus the time read just before the item was handed in, \
         HDR histogram at 3 significant figures. The paced producer sleeps until 5 µs \
         before each item's scheduled time (timer slack 1 ns), then spins. Each contender \
         runs once per round, in a rotated order; a table shows the median of each \
         percentile over the rounds and the range of the rounds' p99. \
         See `benches/latency.rs` for the contenders.\n\n",
    );
    let _ = writeln!(md, "Rounds per case: {rounds_per_case}.\n");
    if scale != 1.0 {
        let _ = writeln!(md, "LATENCY_SCALE = {scale}: item counts scaled.\n");
    }
    let mut json_rows = Vec::new();
    print!("{md}");
    let only = cases();
    for (load, shape, contenders) in loads {
        if !only.is_empty() && !only.iter().any(|c| *c == load.label()) {
            continue;
        }
        let mut case = Case {
            load,
            shape,
            rows: Vec::new(),
        };
        let mut rounds: Vec<Vec<Result<Summary, String>>> = vec![Vec::new(); contenders.len()];
        for round in 0..rounds_per_case {
            // Rotated, so that no contender always runs first (or right
            // after the same neighbour).
            for k in 0..contenders.len() {
                let i = (k + round) % contenders.len();
                let contender = contenders[i];
                eprintln!(
                    "latency bench: {} {} (round {} of {rounds_per_case})",
                    case.heading().trim_start_matches("### "),
                    contender.name(),
                    round + 1
                );
                let result = contender.run(shape);
                if let Err(e) = &result {
                    eprintln!("latency bench: {}: {e}", contender.name());
                }
                rounds[i].push(result);
            }
        }
        for (&contender, results) in contenders.iter().zip(rounds) {
            // One failed round fails the row: a contender must finish
            // every time to be reported.
            let result = results
                .into_iter()
                .collect::<Result<Vec<Summary>, String>>()
                .map(|ok| Summary::median(&ok));
            case.rows.push(Row { contender, result });
        }
        let text = case.markdown();
        println!("{text}");
        md.push_str(&text);
        md.push('\n');
        case.json_rows(&mut json_rows);
    }

    let dir = out_dir();
    let json = format!("{{\"rows\": [\n  {}\n]}}\n", json_rows.join(",\n  "));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("latency.json"), json))
        .and_then(|()| std::fs::write(dir.join("latency.md"), md.trim_end().to_string() + "\n"));
    match written {
        Ok(()) => println!("wrote {}/latency.{{json,md}}", dir.display()),
        Err(e) => eprintln!("latency bench: cannot write to {}: {e}", dir.display()),
    }
}
