//! Pipeline throughput: source → 3 × `map` → sink over `u64`, five threads.
//!
//! Three contenders move the same `N` items through the same five threads
//! with the same ring capacity, measured in the same run:
//!
//! - `ringweave`: `Pipeline::from_iter(..).map(..).map(..).map(..).sink(..)`;
//! - `crossbeam`: the five threads hand-wired with `crossbeam-channel`
//!   `bounded(CAPACITY)`, one item per send/recv — the usual way to write it;
//! - `rtrb_hand_wired`: the five threads hand-wired with `rtrb` rings moving
//!   chunks of up to `CHUNK` items, waiting by spinning then yielding — the
//!   best hand-written code, and so the ceiling for the engine.
//!
//! Each iteration times the whole run, thread spawn and join included, for
//! all three alike (`ringweave` cannot start its stages without spawning
//! them). Every run's sink sum is checked against the expected sum, so a
//! contender that loses or duplicates items fails instead of looking fast.
//! Results are meant to be read as ratios (see `scripts/bench.sh`).

#[path = "common/report.rs"]
mod common;

use common::{sorted, summary, write_extra};
use criterion::{black_box, Criterion, SamplingMode, Throughput};
use ringweave::Pipeline;
use std::hint;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Items per iteration.
const N: u64 = 2_000_000;
/// Slots per ring, for every contender.
const CAPACITY: usize = 4096;
/// Largest chunk the rtrb contender moves at once (ringweave's default batch).
const CHUNK: usize = 256;
/// Spins before the rtrb contender starts yielding.
const SPINS: u32 = 16;
/// ringweave's target against the hand-wired rtrb pipeline.
const RTRB_TARGET: f64 = 0.9;

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

/// What the sink must see.
fn expected_sum() -> u64 {
    (0..N)
        .map(|x| map3(map2(map1(x))))
        .fold(0, u64::wrapping_add)
}

/// Sums the items handed to the ringweave sink and publishes the sum when the
/// sink (and with it this struct) is dropped at the end of the run.
struct SinkSum {
    acc: u64,
    out: Arc<AtomicU64>,
}

impl Drop for SinkSum {
    fn drop(&mut self) {
        // Relaxed: the reader joins the pipeline first, which orders it after
        // the sink thread's drop of its stage.
        self.out.store(self.acc, Ordering::Relaxed);
    }
}

fn run_ringweave() -> u64 {
    let out = Arc::new(AtomicU64::new(0));
    let mut sum = SinkSum {
        acc: 0,
        out: Arc::clone(&out),
    };
    let report = Pipeline::from_iter(0..N)
        .map("m1", map1)
        .map("m2", map2)
        .map("m3", map3)
        .ring_capacity(CAPACITY)
        .sink(move |x: u64| {
            // Borrow all of `sum` so the closure captures (and drops) the
            // struct, not just a copy of its `acc` field.
            let sum = &mut sum;
            sum.acc = sum.acc.wrapping_add(black_box(x));
        })
        .run()
        .expect("ringweave pipeline failed");
    assert_eq!(report.items_delivered, N);
    out.load(Ordering::Relaxed)
}

fn run_crossbeam() -> u64 {
    use crossbeam_channel::{bounded, Receiver, Sender};
    // Generic over the map, not a `fn` pointer: the map is inlined, as it is
    // in ringweave's monomorphised stage loop.
    fn stage(
        rx: Receiver<u64>,
        tx: Sender<u64>,
        f: impl Fn(u64) -> u64 + Send + 'static,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            for x in rx {
                if tx.send(f(x)).is_err() {
                    return;
                }
            }
        })
    }
    let (tx0, rx0) = bounded(CAPACITY);
    let (tx1, rx1) = bounded(CAPACITY);
    let (tx2, rx2) = bounded(CAPACITY);
    let (tx3, rx3) = bounded(CAPACITY);
    let source = thread::spawn(move || {
        for x in 0..N {
            if tx0.send(x).is_err() {
                return;
            }
        }
    });
    let maps = [
        stage(rx0, tx1, map1),
        stage(rx1, tx2, map2),
        stage(rx2, tx3, map3),
    ];
    let sink = thread::spawn(move || {
        let mut acc = 0u64;
        for x in rx3 {
            acc = acc.wrapping_add(black_box(x));
        }
        acc
    });
    source.join().unwrap();
    for m in maps {
        m.join().unwrap();
    }
    sink.join().unwrap()
}

/// Spin-then-yield backoff of the rtrb contender; reset on progress.
struct Backoff(u32);

impl Backoff {
    #[inline]
    fn snooze(&mut self) {
        if self.0 < SPINS {
            hint::spin_loop();
            self.0 += 1;
        } else {
            thread::yield_now();
        }
    }
}

/// Readable items, or `None` once the producer is gone and the ring is empty.
#[inline]
fn readable(rx: &rtrb::Consumer<u64>) -> Option<usize> {
    let n = rx.slots();
    if n > 0 {
        return Some(n);
    }
    if rx.is_abandoned() {
        // `is_abandoned` reads the Arc count with a Relaxed load; the
        // producer's drop decremented it with Release, so this fence makes
        // its last commit visible to the reload below.
        fence(Ordering::Acquire);
        return match rx.slots() {
            0 => None,
            n => Some(n),
        };
    }
    Some(0)
}

fn run_rtrb() -> u64 {
    use rtrb::{Consumer, Producer, RingBuffer};
    // Generic over the map, as for crossbeam above.
    fn stage(
        mut rx: Consumer<u64>,
        mut tx: Producer<u64>,
        f: impl Fn(u64) -> u64 + Send + 'static,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let mut backoff = Backoff(0);
            while let Some(available) = readable(&rx) {
                let n = available.min(tx.slots()).min(CHUNK);
                if n == 0 {
                    backoff.snooze();
                    continue;
                }
                backoff.0 = 0;
                let chunk = rx.read_chunk(n).unwrap();
                let written = tx
                    .write_chunk_uninit(n)
                    .unwrap()
                    .fill_from_iter(chunk.into_iter().map(&f));
                debug_assert_eq!(written, n);
            }
        })
    }
    let (mut tx0, rx0) = RingBuffer::new(CAPACITY);
    let (tx1, rx1) = RingBuffer::new(CAPACITY);
    let (tx2, rx2) = RingBuffer::new(CAPACITY);
    let (tx3, mut rx3) = RingBuffer::new(CAPACITY);
    let source = thread::spawn(move || {
        let mut items = 0..N;
        let mut backoff = Backoff(0);
        while items.start < items.end {
            let left = (items.end - items.start) as usize;
            let n = tx0.slots().min(CHUNK).min(left);
            if n == 0 {
                backoff.snooze();
                continue;
            }
            backoff.0 = 0;
            tx0.write_chunk_uninit(n)
                .unwrap()
                .fill_from_iter(&mut items);
        }
    });
    let maps = [
        stage(rx0, tx1, map1),
        stage(rx1, tx2, map2),
        stage(rx2, tx3, map3),
    ];
    let sink = thread::spawn(move || {
        let mut acc = 0u64;
        let mut backoff = Backoff(0);
        while let Some(available) = readable(&rx3) {
            if available == 0 {
                backoff.snooze();
                continue;
            }
            backoff.0 = 0;
            for x in rx3.read_chunk(available.min(CHUNK)).unwrap() {
                acc = acc.wrapping_add(black_box(x));
            }
        }
        acc
    });
    source.join().unwrap();
    for m in maps {
        m.join().unwrap();
    }
    sink.join().unwrap()
}

/// Runs the whole pipeline once and returns the sink's sum.
type Contender = fn() -> u64;

fn pipeline(c: &mut Criterion) {
    let expected = expected_sum();
    let contenders: [(&str, Contender); 3] = [
        ("ringweave", run_ringweave),
        ("crossbeam", run_crossbeam),
        ("rtrb_hand_wired", run_rtrb),
    ];
    let mut group = c.benchmark_group("pipeline");
    group
        .throughput(Throughput::Elements(N))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for (name, run) in contenders {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let sum = run();
                    total += start.elapsed();
                    assert_eq!(sum, expected, "{name}: wrong sink sum");
                }
                total
            });
        });
    }
    // Paired: ringweave and the hand-wired rtrb pipeline alternate (order
    // swapped every pair), one pair per iteration; on these shared cores the
    // load drifts between two criterion benchmarks, so the ratio of each
    // pair is what to read.
    let ratios = Mutex::new(Vec::new());
    group.throughput(Throughput::Elements(2 * N));
    group.bench_function("paired_ringweave_and_rtrb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let time = |run: Contender| {
                    let start = Instant::now();
                    assert_eq!(run(), expected, "paired: wrong sink sum");
                    start.elapsed()
                };
                let mut ratios = ratios.lock().unwrap();
                let (ours, theirs) = if ratios.len() % 2 == 0 {
                    let a = time(run_ringweave);
                    (a, time(run_rtrb))
                } else {
                    let b = time(run_rtrb);
                    (time(run_ringweave), b)
                };
                total += ours + theirs;
                // Throughput ringweave / rtrb = time rtrb / ringweave.
                ratios.push(theirs.as_secs_f64() / ours.as_secs_f64());
            }
            total
        });
    });
    group.finish();
    let r = sorted(ratios.into_inner().unwrap());
    if r.is_empty() {
        return;
    }
    let line = format!(
        "Paired: {} alternating runs give ringweave / rtrb_hand_wired throughput {}",
        r.len(),
        summary(&r, 3, RTRB_TARGET)
    );
    println!("{line}");
    write_extra("pipeline", "pipeline", &[line]);
}

// `criterion_group!` would define an undocumented `pub fn`; this is what it
// and `criterion_main!` expand to, minus that.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    pipeline(&mut c);
    c.final_summary();
}
