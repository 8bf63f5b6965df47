//! The switching contract, proved by brute force: for any pipeline and any
//! schedule of switches, the sink receives exactly the sequence a pure
//! in-process run delivers.
//!
//! Three pipeline families cover every stage kind (`map`, `filter`,
//! `flat_map` with a fan-out larger than the ring, `stateful` whose output
//! depends on every earlier item) and items with heap data (`String`,
//! `Vec<u8>`, a derived rkyv struct, also as stage state). Each runs under
//! seeded random schedules of manual switches — both directions, back to back,
//! right after spawn, near the last item — with tiny rings, with rings backed
//! up behind a slow sink and with rings drained by a slow source. The sink's
//! sequence is compared item for item with the same computation done with
//! plain iterators, and every count in the `RunReport` with the oracle's.
//!
//! The seed and configuration of a failing case are printed on failure.
//! Failure injection and crash tests are in `hybrid_failures.rs`, the
//! throughput-driven policy in `hybrid_auto.rs`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringweave::{
    CompletePipeline, Error, Mode, Pipeline, PipelineHandle, RunReport, SwitchEvent, SwitchOutcome,
};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Item counts are sized for debug builds (where every switch forks a slow
/// binary); release builds run more.
const SCALE: u64 = if cfg!(debug_assertions) { 1 } else { 4 };

/// Bound on any wait for a counter: far beyond what a healthy run needs, so
/// that a hang fails the test instead of stalling the suite.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Pacing: rings full (slow sink) or empty (slow source).
// ---------------------------------------------------------------------------

/// Which end of the pipeline is slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// Neither: the pipeline runs flat out.
    Free,
    /// The sink sleeps now and then: rings back up and are full at switches.
    SlowSink,
    /// The source sleeps now and then: rings are mostly empty at switches.
    SlowSource,
}

/// `iter`, slowed down if the source is to be the slow end. The source always
/// runs in this process, so sleeping in it is harmless.
fn paced<T>(
    iter: impl Iterator<Item = T> + Send + 'static,
    pace: Pace,
) -> impl Iterator<Item = T> + Send + 'static {
    let slow = pace == Pace::SlowSource;
    iter.enumerate().map(move |(i, x)| {
        if slow && i % 16 == 15 {
            std::thread::sleep(Duration::from_micros(200));
        }
        x
    })
}

/// A sink collecting into a shared `Vec` (the sink runs in this process, so
/// it may lock), slowed down if it is to be the slow end.
fn collector<T: Send + 'static>(pace: Pace) -> (Arc<Mutex<Vec<T>>>, impl FnMut(T) + Send) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink_out = Arc::clone(&out);
    let mut seen = 0u64;
    let sink = move |x| {
        seen += 1;
        if pace == Pace::SlowSink && seen % 8 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        sink_out.lock().unwrap().push(x);
    };
    (out, sink)
}

fn take<T>(out: &Arc<Mutex<Vec<T>>>) -> Vec<T> {
    std::mem::take(&mut *out.lock().unwrap())
}

/// Ring sizes and pacing of one case.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    ring_capacity: usize,
    batch: usize,
    shm_ring_bytes: usize,
    pace: Pace,
}

impl Knobs {
    fn apply(self, p: CompletePipeline) -> CompletePipeline {
        p.ring_capacity(self.ring_capacity)
            .batch_size(self.batch)
            .shm_ring_bytes(self.shm_ring_bytes)
    }
}

// ---------------------------------------------------------------------------
// Pipeline families and their oracles.
// ---------------------------------------------------------------------------

/// What a pure computation says a run must deliver and count.
struct Oracle<T> {
    output: Vec<T>,
    /// `(items_in, items_out)` of every stage, source first, sink last.
    stages: Vec<(u64, u64)>,
}

/// A pipeline shape: how to build it and what it must deliver.
trait Family {
    type Out: PartialEq + Debug + Send + 'static;
    const NAME: &'static str;
    fn build(n: u64, pace: Pace, sink: impl FnMut(Self::Out) + Send + 'static) -> CompletePipeline;
    fn oracle(n: u64) -> Oracle<Self::Out>;
}

/// `u64` items through all four stage kinds; `fan` emits up to 150 items
/// per input, more than any ring here holds.
struct Numbers;

fn fan(x: u64) -> u64 {
    if x % 89 == 0 {
        150
    } else {
        x % 4
    }
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17)
}

impl Family for Numbers {
    type Out = u64;
    const NAME: &'static str = "numbers";

    fn build(n: u64, pace: Pace, sink: impl FnMut(u64) + Send + 'static) -> CompletePipeline {
        Pipeline::from_iter(paced(0..n, pace))
            .map("triple", |x: u64| x * 3 + 1)
            .filter("odd", |x: &u64| x % 2 == 1)
            .flat_map("fan", |x: u64| (0..fan(x)).map(move |k| x * 1000 + k))
            .stateful("hash", 0u64, |h: &mut u64, x: u64| {
                *h = mix(*h, x);
                (*h % 5 != 0).then_some(*h)
            })
            .sink(sink)
    }

    fn oracle(n: u64) -> Oracle<u64> {
        let mut c = [(0u64, 0u64); 6];
        let mut h = 0u64;
        let mut output = Vec::new();
        for x in 0..n {
            c[0].1 += 1;
            c[1].0 += 1;
            let x = x * 3 + 1;
            c[1].1 += 1;
            c[2].0 += 1;
            if x % 2 != 1 {
                continue;
            }
            c[2].1 += 1;
            c[3].0 += 1;
            for y in (0..fan(x)).map(|k| x * 1000 + k) {
                c[3].1 += 1;
                c[4].0 += 1;
                h = mix(h, y);
                if h % 5 != 0 {
                    c[4].1 += 1;
                    output.push(h);
                }
            }
        }
        c[5] = (output.len() as u64, output.len() as u64);
        Oracle {
            output,
            stages: c.to_vec(),
        }
    }
}

/// `String` items, a derived struct as stage state, tuples out.
struct Words;

/// State of the `chain` stage: heap data that must travel with the stage.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default, Clone, PartialEq)]
struct Chain {
    count: u64,
    hash: u64,
    last: String,
}

fn syllables(s: &str) -> usize {
    s.len() % 4 + if s.ends_with('7') { 5 } else { 0 }
}

fn chain_step(c: &mut Chain, s: String) -> Option<String> {
    c.count += 1;
    c.hash = s.bytes().fold(c.hash, |h, b| mix(h, u64::from(b)));
    let out = format!("{s}|{:016x}|{}", c.hash, c.last);
    c.last = s;
    (c.count % 7 != 0).then_some(out)
}

impl Family for Words {
    type Out = (u64, String);
    const NAME: &'static str = "words";

    fn build(
        n: u64,
        pace: Pace,
        sink: impl FnMut((u64, String)) + Send + 'static,
    ) -> CompletePipeline {
        Pipeline::from_iter(paced((0..n).map(|i| format!("w{i}")), pace))
            .flat_map("syllables", |s: String| {
                (0..syllables(&s)).map(move |j| format!("{s}.{j}"))
            })
            .filter("no-2", |s: &String| !s.ends_with(".2"))
            .stateful("chain", Chain::default(), chain_step)
            .map("shout", |s: String| (s.len() as u64, s.to_uppercase()))
            .sink(sink)
    }

    fn oracle(n: u64) -> Oracle<(u64, String)> {
        let mut c = [(0u64, 0u64); 6];
        let mut chain = Chain::default();
        let mut output = Vec::new();
        for s in (0..n).map(|i| format!("w{i}")) {
            c[0].1 += 1;
            c[1].0 += 1;
            for t in (0..syllables(&s)).map(|j| format!("{s}.{j}")) {
                c[1].1 += 1;
                c[2].0 += 1;
                if t.ends_with(".2") {
                    continue;
                }
                c[2].1 += 1;
                c[3].0 += 1;
                if let Some(u) = chain_step(&mut chain, t) {
                    c[3].1 += 1;
                    c[4].0 += 1;
                    c[4].1 += 1;
                    output.push((u.len() as u64, u.to_uppercase()));
                }
            }
        }
        c[5] = (output.len() as u64, output.len() as u64);
        Oracle {
            output,
            stages: c.to_vec(),
        }
    }
}

/// `Vec<u8>` payloads decoded into a derived struct, split, summarised.
struct Readings;

/// A derived item with heap data.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct Reading {
    seq: u64,
    sensor: String,
    payload: Vec<u8>,
}

/// The `summary` stage's state and output: nested heap data and an option.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default, Clone, PartialEq)]
struct Summary {
    count: u64,
    checksum: u64,
    recent: Vec<String>,
    last: Option<Reading>,
}

fn raw(i: u64) -> (u64, Vec<u8>) {
    (i, (0..i % 40).map(|b| (b * 7 + i) as u8).collect())
}

fn decode((seq, payload): (u64, Vec<u8>)) -> Reading {
    Reading {
        seq,
        sensor: format!("s{}", seq % 7),
        payload,
    }
}

fn chunks(r: Reading) -> Vec<Reading> {
    r.payload
        .chunks(8)
        .map(|c| Reading {
            seq: r.seq,
            sensor: r.sensor.clone(),
            payload: c.to_vec(),
        })
        .collect()
}

fn summarise(s: &mut Summary, r: Reading) -> Option<Summary> {
    s.count += 1;
    s.checksum = r
        .payload
        .iter()
        .fold(mix(s.checksum, r.seq), |h, &b| mix(h, u64::from(b)));
    s.recent.push(r.sensor.clone());
    if s.recent.len() > 3 {
        s.recent.remove(0);
    }
    s.last = Some(r);
    (s.count % 3 != 0).then(|| s.clone())
}

impl Family for Readings {
    type Out = Summary;
    const NAME: &'static str = "readings";

    fn build(n: u64, pace: Pace, sink: impl FnMut(Summary) + Send + 'static) -> CompletePipeline {
        Pipeline::from_iter(paced((0..n).map(raw), pace))
            .map("decode", decode)
            .filter("keep", |r: &Reading| r.seq % 5 != 3)
            .flat_map("chunks", chunks)
            .stateful("summary", Summary::default(), summarise)
            .sink(sink)
    }

    fn oracle(n: u64) -> Oracle<Summary> {
        let mut c = [(0u64, 0u64); 6];
        let mut state = Summary::default();
        let mut output = Vec::new();
        for r in (0..n).map(raw) {
            c[0].1 += 1;
            c[1].0 += 1;
            let r = decode(r);
            c[1].1 += 1;
            c[2].0 += 1;
            if r.seq % 5 == 3 {
                continue;
            }
            c[2].1 += 1;
            c[3].0 += 1;
            for piece in chunks(r) {
                c[3].1 += 1;
                c[4].0 += 1;
                if let Some(s) = summarise(&mut state, piece) {
                    c[4].1 += 1;
                    output.push(s);
                }
            }
        }
        c[5] = (output.len() as u64, output.len() as u64);
        Oracle {
            output,
            stages: c.to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------
// Schedules and the case runner.
// ---------------------------------------------------------------------------

fn flip(mode: Mode) -> Mode {
    match mode {
        Mode::InProcess => Mode::Distributed,
        Mode::Distributed => Mode::InProcess,
    }
}

/// When a switch is asked for.
#[derive(Clone, Copy, Debug)]
enum When {
    /// At once: right after spawn, or back to back with the previous one.
    Now,
    /// Once the source has produced this many items.
    Produced(u64),
}

#[derive(Clone, Copy, Debug)]
struct Step {
    when: When,
    to: Mode,
}

/// A random schedule of `switches` switches over a run of `n` source items:
/// the first right after spawn, a third back to back, the rest at random
/// points of the run, the last three near its last item. Targets mostly
/// alternate; now and then one repeats (a switch to the current mode).
fn random_schedule(rng: &mut SmallRng, n: u64, switches: usize) -> Vec<Step> {
    let near_end = 3.min(switches);
    let mut points: Vec<u64> = (0..switches - near_end)
        .map(|_| rng.gen_range(0..n))
        .collect();
    for _ in 0..near_end {
        points.push(n - 1 - rng.gen_range(0..(n / 64).max(1)));
    }
    points.sort_unstable();
    let mut to = Mode::Distributed;
    points
        .into_iter()
        .enumerate()
        .map(|(k, point)| {
            let when = if k == 0 || rng.gen_bool(0.35) {
                When::Now
            } else {
                When::Produced(point)
            };
            let step = Step { when, to };
            if rng.gen_bool(0.9) {
                to = flip(to);
            }
            step
        })
        .collect()
}

/// Waits until `stage` has handed out at least `count` items.
fn wait_for_output(handle: &PipelineHandle, stage: usize, count: u64) {
    let start = Instant::now();
    while handle.stage_counts()[stage].2 < count {
        assert!(
            start.elapsed() < PATIENCE,
            "stage {stage} stuck below {count} items: {:?}",
            handle.stage_counts()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Prints what was running when a test panics.
struct Context(String);

impl Drop for Context {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("FAILED CASE: {}", self.0);
        }
    }
}

/// Switch outcomes over one or more cases.
#[derive(Clone, Debug, Default)]
struct Stats {
    cases: u64,
    /// Switches that changed the mode.
    completed: u64,
    /// Switches to the mode the pipeline was already in.
    no_ops: u64,
    rolled_back: u64,
    timed_out: u64,
    /// Switches refused because the run had ended.
    not_running: u64,
    migrated_items: u64,
    migrated_bytes: u64,
    /// Switches that moved at least one item.
    migrating_switches: u64,
    /// Outcomes the case did not allow, described (checked at the end).
    unexpected: Vec<String>,
}

impl Stats {
    fn add(&mut self, mut other: Stats) {
        self.cases += other.cases;
        self.completed += other.completed;
        self.no_ops += other.no_ops;
        self.rolled_back += other.rolled_back;
        self.timed_out += other.timed_out;
        self.not_running += other.not_running;
        self.migrated_items += other.migrated_items;
        self.migrated_bytes += other.migrated_bytes;
        self.migrating_switches += other.migrating_switches;
        self.unexpected.append(&mut other.unexpected);
    }

    fn of(events: &[SwitchEvent]) -> Stats {
        let mut s = Stats {
            cases: 1,
            ..Stats::default()
        };
        for e in events {
            match &e.outcome {
                SwitchOutcome::Completed if e.from == e.to => s.no_ops += 1,
                SwitchOutcome::Completed => s.completed += 1,
                SwitchOutcome::RolledBack(_) => s.rolled_back += 1,
                SwitchOutcome::TimedOut { .. } => s.timed_out += 1,
            }
            s.migrated_items += e.migrated_items;
            s.migrated_bytes += e.migrated_bytes;
            s.migrating_switches += u64::from(e.migrated_items > 0);
        }
        s
    }

    /// Switches asked for that could have changed the mode.
    fn attempted(&self) -> u64 {
        self.completed + self.rolled_back + self.timed_out
    }

    fn print(&self, test: &str) {
        eprintln!(
            "[hybrid stats] {test}: cases {} completed {} no-ops {} rolled back {} timed out {} \
             not running {} migrated {} items / {} bytes in {} switches",
            self.cases,
            self.completed,
            self.no_ops,
            self.rolled_back,
            self.timed_out,
            self.not_running,
            self.migrated_items,
            self.migrated_bytes,
            self.migrating_switches
        );
    }
}

/// Asserts that `got` is `expected`, item for item, naming the first
/// difference instead of printing both sequences.
fn assert_same_sequence<T: PartialEq + Debug>(got: &[T], expected: &[T], label: &str) {
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{label}: item {i} differs: got {:?}, expected {:?} (lengths {} and {})",
            got[i],
            expected[i],
            got.len(),
            expected.len()
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{label}: same prefix, but {} items delivered instead of {}",
        got.len(),
        expected.len()
    );
}

/// Asserts every count of `report` against `oracle`.
fn assert_counts<T>(report: &RunReport, oracle: &Oracle<T>, label: &str) {
    let n_stages = oracle.stages.len();
    assert_eq!(report.stages.len(), n_stages, "{label}: stages");
    assert_eq!(
        report.items_produced, oracle.stages[0].1,
        "{label}: items_produced"
    );
    assert_eq!(
        report.items_delivered,
        oracle.output.len() as u64,
        "{label}: items_delivered"
    );
    for (i, (stage, &(items_in, items_out))) in report.stages.iter().zip(&oracle.stages).enumerate()
    {
        assert_eq!(
            (stage.items_in, stage.items_out),
            (items_in, items_out),
            "{label}: counts (in, out) of stage {i} `{}`",
            stage.name
        );
    }
}

/// Runs family `F` over `n` source items with `knobs` under the random
/// schedule of `seed`, and checks the sequence, the counts and the switch
/// log. Returns the switch outcomes.
fn run_case<F: Family>(seed: u64, n: u64, knobs: Knobs, switches: usize) -> Stats {
    let label = format!("{} seed {seed} n {n} {knobs:?}", F::NAME);
    let _context = Context(label.clone());
    let mut rng = SmallRng::seed_from_u64(seed);
    let steps = random_schedule(&mut rng, n, switches);
    let (out, sink) = collector(knobs.pace);
    let handle = knobs
        .apply(F::build(n, knobs.pace, sink))
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: spawn: {e}"));
    let mut events = Vec::new();
    let mut not_running = 0;
    for step in &steps {
        if let When::Produced(count) = step.when {
            wait_for_output(&handle, 0, count.min(n));
        }
        match handle.switch_to(step.to) {
            Ok(event) => {
                assert_eq!(event.to, step.to, "{label}: event target");
                events.push(event);
            }
            // The run ended before the schedule did.
            Err(Error::NotRunning) => not_running += 1,
            Err(e) => panic!("{label}: switch_to({:?}): {e}", step.to),
        }
    }
    let report = handle
        .join()
        .unwrap_or_else(|e| panic!("{label}: join: {e}"));
    let oracle = F::oracle(n);
    assert_same_sequence(&take(&out), &oracle.output, &label);
    assert_counts(&report, &oracle, &label);
    assert_eq!(
        report.switches, events,
        "{label}: the report logs every switch"
    );
    // Every other check passed: the outcomes are checked by the caller once
    // every seed has run, so that one bad outcome does not hide the
    // sequences of the other seeds.
    let mut stats = Stats::of(&events);
    stats.not_running = not_running;
    for (k, e) in events.iter().enumerate() {
        let expected = match &e.outcome {
            SwitchOutcome::Completed => true,
            // The only reason to roll back here: the source had ended.
            SwitchOutcome::RolledBack(cause) => cause.contains("finished"),
            SwitchOutcome::TimedOut { .. } => false,
        };
        if !expected {
            stats.unexpected.push(format!(
                "{label}: switch {k} of {} ({:?} → {:?}, step {:?}, pause {:?}): {:?}",
                events.len(),
                e.from,
                e.to,
                steps.get(k),
                e.pause,
                e.outcome
            ));
        }
    }
    stats
}

/// Runs `seeds` through `run_case` and asserts that most switches really
/// happened (a suite where every switch rolls back proves nothing).
fn run_seeds<F: Family>(
    test: &str,
    seeds: std::ops::Range<u64>,
    n: u64,
    switches: usize,
    knobs: impl Fn(&mut SmallRng) -> Knobs,
) -> Stats {
    let mut total = Stats::default();
    for seed in seeds {
        let mut rng = SmallRng::seed_from_u64(!seed);
        total.add(run_case::<F>(seed, n, knobs(&mut rng), switches));
    }
    total.print(test);
    assert!(
        total.unexpected.is_empty(),
        "{test}: switches that neither completed nor rolled back for draining:\n{}",
        total.unexpected.join("\n")
    );
    assert!(
        total.completed * 2 >= total.attempted(),
        "{test}: fewer than half of the switches completed: {total:?}"
    );
    total
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// Tiny rings everywhere: two slots, batches of 1 to 3, a 4 KiB shared ring.
fn tiny(rng: &mut SmallRng, pace: Pace) -> Knobs {
    Knobs {
        ring_capacity: 2,
        batch: rng.gen_range(1..=3),
        shm_ring_bytes: 4096,
        pace,
    }
}

#[test]
fn numbers_with_tiny_rings() {
    run_seeds::<Numbers>("numbers_with_tiny_rings", 1..6, 3_000 * SCALE, 24, |rng| {
        tiny(rng, Pace::Free)
    });
}

#[test]
fn numbers_with_full_rings_behind_a_slow_sink() {
    let stats = run_seeds::<Numbers>(
        "numbers_with_full_rings_behind_a_slow_sink",
        11..16,
        8_000 * SCALE,
        24,
        |rng| Knobs {
            ring_capacity: 64,
            batch: rng.gen_range(4..=32),
            shm_ring_bytes: 4096,
            pace: Pace::SlowSink,
        },
    );
    // Rings backed up at the switches: items had to cross between ring kinds.
    assert!(
        stats.migrated_items > 0,
        "no switch migrated an item: {stats:?}"
    );
    assert!(stats.migrated_bytes > 0, "{stats:?}");
}

#[test]
fn numbers_with_empty_rings_behind_a_slow_source() {
    run_seeds::<Numbers>(
        "numbers_with_empty_rings_behind_a_slow_source",
        21..26,
        8_000 * SCALE,
        24,
        |rng| Knobs {
            ring_capacity: 64,
            batch: rng.gen_range(1..=8),
            shm_ring_bytes: 4096,
            pace: Pace::SlowSource,
        },
    );
}

/// One of the three ring shapes, chosen by the seed.
fn any_shape(rng: &mut SmallRng, roomy_shm: usize) -> Knobs {
    match rng.gen_range(0..3) {
        0 => tiny(rng, Pace::Free),
        1 => Knobs {
            ring_capacity: 64,
            batch: rng.gen_range(4..=32),
            shm_ring_bytes: roomy_shm,
            pace: Pace::SlowSink,
        },
        _ => Knobs {
            ring_capacity: 16,
            batch: rng.gen_range(1..=4),
            shm_ring_bytes: roomy_shm,
            pace: Pace::SlowSource,
        },
    }
}

#[test]
fn strings_and_struct_state() {
    let stats = run_seeds::<Words>(
        "strings_and_struct_state",
        31..39,
        3_000 * SCALE,
        20,
        |rng| any_shape(rng, 16 << 10),
    );
    assert!(stats.migrated_items > 0, "{stats:?}");
}

#[test]
fn byte_payloads_and_derived_structs() {
    let stats = run_seeds::<Readings>(
        "byte_payloads_and_derived_structs",
        41..49,
        3_000 * SCALE,
        20,
        |rng| any_shape(rng, 64 << 10),
    );
    assert!(stats.migrated_items > 0, "{stats:?}");
}

/// The first switch before any item moved, then a burst of switches with no
/// pause between them, both directions, with the rings full.
#[test]
fn back_to_back_burst_from_the_first_item() {
    let n = 12_000 * SCALE;
    let label = "back_to_back_burst_from_the_first_item";
    let (out, sink) = collector(Pace::SlowSink);
    let handle = Numbers::build(n, Pace::Free, sink)
        .ring_capacity(8)
        .batch_size(2)
        .shm_ring_bytes(4096)
        .spawn()
        .unwrap();
    let mut events = Vec::new();
    let mut to = Mode::Distributed;
    for _ in 0..30 {
        events.push(handle.switch_to(to).unwrap());
        to = flip(to);
    }
    let report = handle.join().unwrap();
    let oracle = Numbers::oracle(n);
    assert_same_sequence(&take(&out), &oracle.output, label);
    assert_counts(&report, &oracle, label);
    let stats = Stats::of(&events);
    stats.print(label);
    // The source cannot end during the burst (each switch pauses it), and
    // nothing else may roll a switch back here.
    assert_eq!(stats.completed, 30, "{events:#?}");
    assert_eq!(events[0].from, Mode::InProcess);
    assert_eq!(report.final_mode, Mode::InProcess);
    assert!(stats.migrating_switches > 0, "{stats:?}");
}

/// Switches near and after the end of the stream: a switch while the source
/// is finishing rolls back (draining) or completes, never loses an item;
/// after the run has ended the handle says so.
#[test]
fn switches_at_the_end_of_the_stream() {
    let label = "switches_at_the_end_of_the_stream";
    for pace in [Pace::SlowSink, Pace::SlowSource] {
        let n = 2_000 * SCALE;
        let (out, sink) = collector(pace);
        let handle = Numbers::build(n, pace, sink)
            .ring_capacity(32)
            .batch_size(4)
            .shm_ring_bytes(4096)
            .spawn()
            .unwrap();
        wait_for_output(&handle, 0, n - 40);
        let mut events = Vec::new();
        let mut to = Mode::Distributed;
        for _ in 0..8 {
            match handle.switch_to(to) {
                Ok(e) => events.push(e),
                // The stream may end during the burst.
                Err(Error::NotRunning) => break,
                Err(e) => panic!("{pace:?}: {e}"),
            }
            to = flip(to);
        }
        for e in &events {
            let refused =
                matches!(&e.outcome, SwitchOutcome::RolledBack(c) if c.contains("finished"));
            assert!(
                e.outcome == SwitchOutcome::Completed || refused,
                "{pace:?}: near the end a switch completes or rolls back (draining): {e:?}"
            );
        }
        // Wait until the sink has everything, then ask for both modes: the
        // run is over, or at least draining, so nothing may change the mode.
        let oracle = Numbers::oracle(n);
        let last = handle.stage_counts().len() - 1;
        wait_for_output(&handle, last, oracle.output.len() as u64);
        for to in [Mode::Distributed, Mode::InProcess] {
            match handle.switch_to(to) {
                Err(Error::NotRunning) => {}
                Ok(e) => {
                    let refused = matches!(&e.outcome, SwitchOutcome::RolledBack(c) if c.contains("finished"));
                    let no_op = e.outcome == SwitchOutcome::Completed && e.from == e.to;
                    assert!(refused || no_op, "{pace:?}: switch after the end: {e:?}");
                    events.push(e);
                }
                Err(e) => panic!("{pace:?}: {e}"),
            }
        }
        let report = handle.join().unwrap();
        assert_same_sequence(&take(&out), &oracle.output, label);
        assert_counts(&report, &oracle, label);
        assert_eq!(report.switches, events);
        Stats::of(&events).print(&format!("{label} {pace:?}"));
    }
}
