//! The single-item ring path, ringweave against rtrb, both driven by the
//! same loop — the shape of an outside harness that measured ringweave at
//! 0.85–0.91 × rtrb while `benches/ring.rs` said 1.21 ×:
//!
//! - a producer thread pushes `0..N` (u64) one at a time; on `Full` it
//!   spins (`spin_loop`) 64 times, then `yield_now`s, until the push goes in;
//! - the consumer (this thread) pops one at a time the same way and sums;
//! - capacity 4096, N = 20 M (`SAME_LOOP_ITEMS`), `SAME_LOOP_ROUNDS` rounds
//!   (default 5), the two rings alternating and the first one swapped every
//!   round.
//!
//! Neither side ever sleeps, so ringweave's wake-up (a waiter-flag load
//! after every publish and release) is pure overhead here; the run prints
//! the time per item of each and the ratio of throughputs per round.
//!
//! `cargo bench -p ringweave-benches --bench ring_same_loop`

use std::hint;
use std::thread;
use std::time::{Duration, Instant};

const CAPACITY: usize = 4096;

/// One SPSC ring as the loop sees it.
trait Spsc {
    type Tx: Send + 'static;
    type Rx;
    const NAME: &'static str;
    fn make() -> (Self::Tx, Self::Rx);
    fn push(tx: &mut Self::Tx, v: u64) -> Result<(), u64>;
    fn pop(rx: &mut Self::Rx) -> Option<u64>;
}

struct Ringweave;

impl Spsc for Ringweave {
    type Tx = ringweave::ring::Producer<u64>;
    type Rx = ringweave::ring::Consumer<u64>;
    const NAME: &'static str = "ringweave";
    fn make() -> (Self::Tx, Self::Rx) {
        ringweave::ring::channel(CAPACITY)
    }
    #[inline]
    fn push(tx: &mut Self::Tx, v: u64) -> Result<(), u64> {
        tx.push(v).map_err(|e| e.into_inner())
    }
    #[inline]
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop().ok()
    }
}

struct Rtrb;

impl Spsc for Rtrb {
    type Tx = rtrb::Producer<u64>;
    type Rx = rtrb::Consumer<u64>;
    const NAME: &'static str = "rtrb";
    fn make() -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(CAPACITY)
    }
    #[inline]
    fn push(tx: &mut Self::Tx, v: u64) -> Result<(), u64> {
        tx.push(v).map_err(|rtrb::PushError::Full(v)| v)
    }
    #[inline]
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop().ok()
    }
}

/// Spin 64 times, then yield.
#[inline]
fn back_off(failures: &mut u32) {
    if *failures < 64 {
        hint::spin_loop();
    } else {
        thread::yield_now();
    }
    *failures += 1;
}

fn run<R: Spsc>(n: u64) -> Duration {
    let (mut tx, mut rx) = R::make();
    let start = Instant::now();
    let producer = thread::spawn(move || {
        for i in 0..n {
            let mut v = i;
            let mut failures = 0;
            while let Err(back) = R::push(&mut tx, v) {
                v = back;
                back_off(&mut failures);
            }
        }
    });
    let mut sum = 0u64;
    for _ in 0..n {
        let mut failures = 0;
        loop {
            if let Some(v) = R::pop(&mut rx) {
                sum = sum.wrapping_add(v);
                break;
            }
            back_off(&mut failures);
        }
    }
    let took = start.elapsed();
    producer.join().expect("producer");
    assert_eq!(
        sum,
        n * (n - 1) / 2,
        "{}: lost or duplicated items",
        R::NAME
    );
    took
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn main() {
    let n = env("SAME_LOOP_ITEMS", 20_000_000);
    let rounds = env("SAME_LOOP_ROUNDS", 5);
    let mut ratios = Vec::new();
    println!("same-loop single-item rings: {n} u64, capacity {CAPACITY}, {rounds} rounds");
    for round in 0..rounds {
        let (rw, rt) = if round % 2 == 0 {
            let rw = run::<Ringweave>(n);
            (rw, run::<Rtrb>(n))
        } else {
            let rt = run::<Rtrb>(n);
            (run::<Ringweave>(n), rt)
        };
        let ratio = rt.as_secs_f64() / rw.as_secs_f64();
        ratios.push(ratio);
        println!(
            "round {}: ringweave {:.2} ns/item, rtrb {:.2} ns/item, ringweave / rtrb throughput {ratio:.3} ×",
            round + 1,
            rw.as_nanos() as f64 / n as f64,
            rt.as_nanos() as f64 / n as f64,
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ringweave / rtrb: {:.3} × (min {:.3}, max {:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
