//! Replicas and scale-out, as paired ratios in one run (issue "graphs"):
//!
//! - **scale-out**: source → `work` (a map costing ~0.5–1 µs of CPU per
//!   item) → sink, `replicas(2)` against `replicas(1)`, in-process and
//!   distributed (`distributed_replicas`); target ≥ 1.6 ×;
//! - **against rayon**: `into_par_iter().map(work).collect()` over the same
//!   items on a 2-thread pool, against ringweave distributed with 2
//!   replicas; target ≥ 0.8 ×;
//! - **ordered merge**: a cheap map with `replicas(2)` against
//!   `replicas(1)`; target ≥ 0.5 ×;
//! - **rescale pause**: the pause of a switch to distributed that takes a
//!   keyed stage with 100 k keys from 1 to 4 replicas, beside the pause of
//!   a plain switch of the same pipeline without state.
//!
//! Each round runs every case once, in a rotated order; the ratios are
//! per round, reported as median and quartiles.
//!
//! `cargo bench -p ringweave-benches --bench graph`
//! (`GRAPH_ITEMS`, default 1 M; `GRAPH_ROUNDS`, default 5).

#[path = "common/report.rs"]
mod common;

use common::{quantile, sorted, summary, write_extra};
use rayon::prelude::*;
use ringweave::{ExecutionMode, HybridConfig, Mode, Pipeline, SwitchOutcome};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// ~0.5–1 µs of CPU on this machine (calibrated and printed at start).
#[inline(never)]
fn work(x: u64) -> u64 {
    let mut h = x ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..WORK_ROUNDS {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
    }
    h
}

const WORK_ROUNDS: u32 = 300;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Items per second of `source → work × replicas → sink` in `mode`.
fn ringweave_rate(n: u64, replicas: usize, distributed: bool) -> f64 {
    let mut sum = 0u64;
    let mode = if distributed {
        ExecutionMode::Distributed
    } else {
        ExecutionMode::InProcess
    };
    let t = Instant::now();
    Pipeline::from_iter(0..n)
        .map("work", work)
        .replicas(replicas)
        .mode(mode)
        .sink(move |x| sum = sum.wrapping_add(x))
        .run()
        .expect("run");
    n as f64 / t.elapsed().as_secs_f64()
}

fn cheap_rate(n: u64, replicas: usize) -> f64 {
    let mut sum = 0u64;
    let t = Instant::now();
    Pipeline::from_iter(0..n)
        .map("cheap", |x: u64| x.wrapping_mul(3))
        .replicas(replicas)
        .sink(move |x| sum = sum.wrapping_add(x))
        .run()
        .expect("run");
    n as f64 / t.elapsed().as_secs_f64()
}

fn rayon_rate(pool: &rayon::ThreadPool, n: u64) -> f64 {
    let t = Instant::now();
    let out: Vec<u64> = pool.install(|| (0..n).into_par_iter().map(work).collect());
    black_box(&out);
    n as f64 / t.elapsed().as_secs_f64()
}

/// The pauses of a manual switch to distributed mode and back, with a keyed
/// stage of `keys` keys going from 1 to `to` replicas and back
/// (`keys == 0`: a plain map).
fn switch_pauses(keys: u64, to: usize) -> (Duration, Duration) {
    let n = 50_000_000;
    let fed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = std::sync::Arc::clone(&fed);
    let source = (0..n).inspect(move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let p = Pipeline::from_iter(source);
    let p = if keys == 0 {
        p.map("plain", |x: u64| x + 1)
    } else {
        p.stateful_by_key(
            "keyed",
            move |x: &u64| x % keys,
            || 0u64,
            |s: &mut u64, x: u64| {
                *s += 1;
                Some(x + *s)
            },
        )
        .replicas(1)
        .distributed_replicas(to)
    };
    let handle = p
        .mode(ExecutionMode::Hybrid(HybridConfig {
            local_threshold: usize::MAX / 4,
            cooldown_ms: 3_600_000,
            ..HybridConfig::default()
        }))
        .max_state_bytes(64 << 20)
        .sink(|x| {
            black_box(x);
        })
        .spawn()
        .expect("spawn");
    // Every key has state before the switch.
    while fed.load(std::sync::atomic::Ordering::Relaxed) < keys.max(1) * 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = handle.switch_to(Mode::Distributed).expect("switch");
    std::thread::sleep(Duration::from_millis(50));
    let back = handle.switch_to(Mode::InProcess).expect("switch back");
    drop(handle);
    assert_eq!(out.outcome, SwitchOutcome::Completed, "{out:?}");
    assert_eq!(back.outcome, SwitchOutcome::Completed, "{back:?}");
    (out.pause, back.pause)
}

fn main() {
    let n = env("GRAPH_ITEMS", 1_000_000);
    let rounds = env("GRAPH_ROUNDS", 5) as usize;
    let t = Instant::now();
    let mut h = 0;
    for x in 0..200_000 {
        h ^= work(x);
    }
    black_box(h);
    let per_item = t.elapsed().as_secs_f64() / 200_000.0 * 1e6;
    println!("graph: work() costs {per_item:.2} µs per item; {n} items, {rounds} rounds");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");

    let names = [
        "in-process ×1",
        "in-process ×2",
        "distributed ×1",
        "distributed ×2",
        "rayon 2 threads",
        "cheap ×1",
        "cheap ×2",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.rotate_left(round % names.len());
        for case in order {
            let rate = match case {
                0 => ringweave_rate(n, 1, false),
                1 => ringweave_rate(n, 2, false),
                2 => ringweave_rate(n, 1, true),
                3 => ringweave_rate(n, 2, true),
                4 => rayon_rate(&pool, n),
                5 => cheap_rate(n * 4, 1),
                _ => cheap_rate(n * 4, 2),
            };
            rates[case].push(rate);
        }
        println!(
            "round {round}: {}",
            names
                .iter()
                .zip(&rates)
                .map(|(name, r)| format!("{name} {:.2} M/s", r[round] / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        sorted(rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect())
    };
    let mut lines = vec![format!(
        "work() = {per_item:.2} µs of CPU per item; {n} items per run ({} for the cheap map), \
         {rounds} rounds, 2 cores.",
        n * 4
    )];
    for (name, r) in names.iter().zip(&rates) {
        let s = sorted(r.clone());
        lines.push(format!(
            "{name}: {:.2} M items/s (median of {rounds})",
            quantile(&s, 0.5) / 1e6
        ));
    }
    lines.push(format!(
        "Scale-out in-process, 2 replicas / 1: {}",
        summary(&ratio(1, 0), 2, 1.6)
    ));
    lines.push(format!(
        "Scale-out distributed, 2 replicas / 1: {}",
        summary(&ratio(3, 2), 2, 1.6)
    ));
    lines.push(format!(
        "Distributed ×2 / rayon (2 threads): {}",
        summary(&ratio(3, 4), 2, 0.8)
    ));
    lines.push(format!(
        "Ordered merge, cheap map ×2 / ×1: {}",
        summary(&ratio(6, 5), 2, 0.5)
    ));

    let mut pauses: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds.min(3) {
        let (out, back) = switch_pauses(0, 1);
        pauses[0].push(out.as_secs_f64() * 1e3);
        pauses[1].push(back.as_secs_f64() * 1e3);
        let (out, back) = switch_pauses(100_000, 4);
        pauses[2].push(out.as_secs_f64() * 1e3);
        pauses[3].push(back.as_secs_f64() * 1e3);
    }
    let p: Vec<f64> = pauses
        .into_iter()
        .map(|v| quantile(&sorted(v), 0.5))
        .collect();
    lines.push(format!(
        "Switch pause (medians of {}), out / back: plain map {:.2} / {:.2} ms; keyed stage \
         with 100 k keys, 1 → 4 → 1 replicas, {:.2} / {:.2} ms. Out, the state goes with \
         the stage's memory through fork, and the worker forks its 3 replica processes \
         after the barrier, at its first batch; back, the worker gathers each replica's \
         groups, then every key's state is archived there and validated and rebuilt \
         here, inside the pause.",
        rounds.min(3),
        p[0],
        p[1],
        p[2],
        p[3]
    ));
    let lines: Vec<String> = lines.into_iter().map(|l| format!("- {l}")).collect();
    for line in &lines {
        println!("{line}");
    }
    write_extra("graph", "graph", &lines);
}
