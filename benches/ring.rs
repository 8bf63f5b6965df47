//! Ring throughput: one producer thread and one consumer thread moving `u64`s.
//!
//! Six contenders move the same `N` items through a queue of the same
//! capacity (`CAPACITY`), measured in the same run:
//!
//! - `ringweave_single`: `ringweave::ring` `push` / `pop`, spinning on
//!   `Full` / `Empty` (see [`Backoff`]);
//! - `ringweave_chunked`: `write_chunk_uninit(..).fill_from_iter` /
//!   `read_chunk(..).into_iter()`, chunks of up to `CHUNK` items;
//! - `rtrb_single`, `rtrb_chunked`: the same two shapes with `rtrb` 0.3, the
//!   reference SPSC ring;
//! - `crossbeam_channel`: `crossbeam_channel::bounded(CAPACITY)`, `send` /
//!   `recv`;
//! - `std_sync_channel`: `std::sync::mpsc::sync_channel(CAPACITY)`, `send` /
//!   `recv`.
//!
//! The four ring contenders wait the same way when full or empty: `SPINS`
//! spin hints, then `yield_now` until the next success. Pure spinning needs
//! two idle cores; on the shared 2-core machines here a spinner that
//! shares a core with its peer (or a compiler) burns its whole time slice,
//! and the numbers measure the scheduler instead of the ring.
//!
//! Each measurement creates the queue and the producer thread, lines both
//! threads up on a `Barrier`, and times (on the consumer) from the barrier
//! to the last item received; thread spawn and join are outside the timed
//! region. The consumer checks the sum of what it received, so a contender
//! that loses or duplicates items fails instead of looking fast. Results are
//! meant to be read as ratios (see `scripts/bench.sh`).

#[path = "common/report.rs"]
mod common;

use common::{sorted, summary, write_extra};
use criterion::{black_box, Criterion, SamplingMode, Throughput};
use std::hint;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Items per iteration.
const N: u64 = 1 << 20;
/// Slots per queue, for every contender.
const CAPACITY: usize = 4096;
/// Largest chunk of the chunked contenders.
const CHUNK: usize = 256;
/// Spin hints before a waiting ring contender starts yielding.
const SPINS: u32 = 64;

/// How the ring contenders wait: spin a little, then yield, so the peer
/// thread gets a core on a busy machine.
struct Backoff(u32);

impl Backoff {
    fn new() -> Self {
        Self(0)
    }

    /// Called after an attempt that made no progress.
    #[inline]
    fn snooze(&mut self) {
        if self.0 < SPINS {
            self.0 += 1;
            hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }

    /// Called after an attempt that made progress.
    #[inline]
    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// What the consumer must see for `iters` iterations of `0..N`.
fn expected_sum(iters: u64) -> u64 {
    (0..N).fold(0u64, u64::wrapping_add).wrapping_mul(iters)
}

/// Runs `produce(total)` on a new thread and `consume(total)` on this one,
/// both released by one barrier; returns the consumer's time from the
/// barrier to its return, and checks the sum it returns.
fn two_threads<P, C>(name: &str, iters: u64, produce: P, consume: C) -> Duration
where
    P: FnOnce(u64) + Send + 'static,
    C: FnOnce(u64) -> u64,
{
    let total = N * iters;
    let barrier = Arc::new(Barrier::new(2));
    let producer = {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            produce(total);
        })
    };
    barrier.wait();
    let start = Instant::now();
    let sum = consume(total);
    let elapsed = start.elapsed();
    producer.join().expect("producer thread panicked");
    assert_eq!(sum, expected_sum(iters), "{name}: wrong sum");
    elapsed
}

/// The `i`-th item: the sequence `0..N` repeated.
#[inline]
fn item(i: u64) -> u64 {
    i % N
}

fn ringweave_single(iters: u64) -> Duration {
    let (mut tx, mut rx) = ringweave::ring::channel::<u64>(CAPACITY);
    two_threads(
        "ringweave_single",
        iters,
        move |total| {
            let mut backoff = Backoff::new();
            for i in 0..total {
                let mut v = item(i);
                while let Err(e) = tx.push(v) {
                    v = e.into_inner();
                    backoff.snooze();
                }
                backoff.reset();
            }
        },
        move |total| {
            let mut backoff = Backoff::new();
            let mut sum = 0u64;
            let mut got = 0;
            while got < total {
                match rx.pop() {
                    Ok(v) => {
                        sum = sum.wrapping_add(v);
                        got += 1;
                        backoff.reset();
                    }
                    Err(_) => backoff.snooze(),
                }
            }
            black_box(sum)
        },
    )
}

fn ringweave_chunked(iters: u64) -> Duration {
    let (mut tx, mut rx) = ringweave::ring::channel::<u64>(CAPACITY);
    two_threads(
        "ringweave_chunked",
        iters,
        move |total| {
            let mut backoff = Backoff::new();
            let mut next = 0u64;
            while next < total {
                let k = tx.slots().min(CHUNK).min((total - next) as usize);
                if k == 0 {
                    backoff.snooze();
                    continue;
                }
                backoff.reset();
                let chunk = tx.write_chunk_uninit(k).expect("slots are free");
                next += chunk.fill_from_iter((next..).map(item)) as u64;
            }
        },
        move |total| {
            let mut backoff = Backoff::new();
            let mut sum = 0u64;
            let mut got = 0u64;
            while got < total {
                let k = rx.slots().min(CHUNK);
                if k == 0 {
                    backoff.snooze();
                    continue;
                }
                backoff.reset();
                let chunk = rx.read_chunk(k).expect("items are readable");
                sum = chunk.into_iter().fold(sum, u64::wrapping_add);
                got += k as u64;
            }
            black_box(sum)
        },
    )
}

fn rtrb_single(iters: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    two_threads(
        "rtrb_single",
        iters,
        move |total| {
            let mut backoff = Backoff::new();
            for i in 0..total {
                let mut v = item(i);
                while let Err(rtrb::PushError::Full(back)) = tx.push(v) {
                    v = back;
                    backoff.snooze();
                }
                backoff.reset();
            }
        },
        move |total| {
            let mut backoff = Backoff::new();
            let mut sum = 0u64;
            let mut got = 0;
            while got < total {
                match rx.pop() {
                    Ok(v) => {
                        sum = sum.wrapping_add(v);
                        got += 1;
                        backoff.reset();
                    }
                    Err(_) => backoff.snooze(),
                }
            }
            black_box(sum)
        },
    )
}

fn rtrb_chunked(iters: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    two_threads(
        "rtrb_chunked",
        iters,
        move |total| {
            let mut backoff = Backoff::new();
            let mut next = 0u64;
            while next < total {
                let k = tx.slots().min(CHUNK).min((total - next) as usize);
                if k == 0 {
                    backoff.snooze();
                    continue;
                }
                backoff.reset();
                let chunk = tx.write_chunk_uninit(k).expect("slots are free");
                next += chunk.fill_from_iter((next..).map(item)) as u64;
            }
        },
        move |total| {
            let mut backoff = Backoff::new();
            let mut sum = 0u64;
            let mut got = 0u64;
            while got < total {
                let k = rx.slots().min(CHUNK);
                if k == 0 {
                    backoff.snooze();
                    continue;
                }
                backoff.reset();
                let chunk = rx.read_chunk(k).expect("items are readable");
                sum = chunk.into_iter().fold(sum, u64::wrapping_add);
                got += k as u64;
            }
            black_box(sum)
        },
    )
}

fn crossbeam_channel(iters: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    two_threads(
        "crossbeam_channel",
        iters,
        move |total| {
            for i in 0..total {
                tx.send(item(i)).expect("receiver alive");
            }
        },
        move |total| {
            let mut sum = 0u64;
            for _ in 0..total {
                sum = sum.wrapping_add(rx.recv().expect("sender alive"));
            }
            black_box(sum)
        },
    )
}

fn std_sync_channel(iters: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
    two_threads(
        "std_sync_channel",
        iters,
        move |total| {
            for i in 0..total {
                tx.send(item(i)).expect("receiver alive");
            }
        },
        move |total| {
            let mut sum = 0u64;
            for _ in 0..total {
                sum = sum.wrapping_add(rx.recv().expect("sender alive"));
            }
            black_box(sum)
        },
    )
}

/// Moves `N * iters` items and returns the timed part.
type Contender = fn(u64) -> Duration;

fn ring(c: &mut Criterion) {
    let contenders: [(&str, Contender); 6] = [
        ("ringweave_single", ringweave_single),
        ("ringweave_chunked", ringweave_chunked),
        ("rtrb_single", rtrb_single),
        ("rtrb_chunked", rtrb_chunked),
        ("crossbeam_channel", crossbeam_channel),
        ("std_sync_channel", std_sync_channel),
    ];
    let mut group = c.benchmark_group("ring");
    group
        .throughput(Throughput::Elements(N))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, run) in contenders {
        group.bench_function(name, |b| b.iter_custom(run));
    }
    // Paired: each ringweave shape alternates with rtrb's (order swapped
    // every pair), one pair per iteration; the ratio of each pair is what to
    // read, since the load drifts between two criterion benchmarks.
    let pairs: [(&str, Contender, Contender); 2] = [
        ("single", ringweave_single, rtrb_single),
        ("chunked", ringweave_chunked, rtrb_chunked),
    ];
    let mut lines = Vec::new();
    group.throughput(Throughput::Elements(2 * N));
    for (shape, ours, theirs) in pairs {
        let ratios = Mutex::new(Vec::new());
        group.bench_function(format!("paired_{shape}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut ratios = ratios.lock().unwrap();
                    let (a, b) = if ratios.len() % 2 == 0 {
                        let a = ours(1);
                        (a, theirs(1))
                    } else {
                        let b = theirs(1);
                        (ours(1), b)
                    };
                    total += a + b;
                    // Throughput ringweave / rtrb = time rtrb / ringweave.
                    ratios.push(b.as_secs_f64() / a.as_secs_f64());
                }
                total
            });
        });
        let r = sorted(ratios.into_inner().unwrap());
        if r.is_empty() {
            continue;
        }
        lines.push(format!(
            "- {shape}: {} alternating pairs give ringweave / rtrb throughput {}",
            r.len(),
            summary(&r, 2, 1.0)
        ));
    }
    group.finish();
    if !lines.is_empty() {
        lines.insert(
            0,
            "Paired runs (ringweave and rtrb alternating, same shape):".into(),
        );
        for line in &lines {
            println!("{line}");
        }
        write_extra("ring", "ring", &lines);
    }
}

// `criterion_group!` would define an undocumented `pub fn`; this is what it
// and `criterion_main!` expand to, minus that.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    ring(&mut c);
    c.final_summary();
}
