//! Crash recovery, as ratios in one run (issue "crash recovery"):
//!
//! - **checkpointing cost**: source → 3 maps → a stateful stage → sink,
//!   distributed, with `max_restarts(3)` (checkpoints at the default
//!   interval, the source's replay log at its default bound) against the
//!   same run without; rounds alternate, the ratio is per round; target
//!   ≥ 0.95 ×;
//! - **downtime**: with 100 MB resident in this process, a paced run is
//!   killed (one worker, SIGKILL) again and again; downtime is the time from
//!   the kill to the first item the sink receives after the recovery. The
//!   floor is the pause of a switch out of the same pipeline in the same
//!   process (barrier, fork of every worker, rings laid out): a recovery
//!   must at least do that. Target: median ≤ 3 × the floor's median;
//! - **replay bound**: the replay log's peak in every run against its bound.
//!
//! `cargo bench -p ringweave-benches --bench recovery`
//! (`RECOVERY_ITEMS`, default 20 M; `RECOVERY_ROUNDS`, default 8;
//! `RECOVERY_KILLS`, default 15).

#[path = "common/report.rs"]
mod common;

use common::{quantile, sorted, summary, write_extra};
use ringweave::{ExecutionMode, HybridConfig, Mode, Pipeline, PipelineHandle, SwitchOutcome};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The number in environment variable `name`, if it holds one.
fn env_opt(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn env(name: &str, default: u64) -> u64 {
    env_opt(name).unwrap_or(default)
}

/// `rounds` xorshift steps: the work of a map.
#[inline(never)]
fn work(x: u64, rounds: u32) -> u64 {
    let mut h = x | 1;
    for _ in 0..rounds {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
    }
    h
}

/// Items per second of the distributed chain whose maps do `rounds` of
/// `work`; the replay log's peak and bound, and the checkpoints taken.
fn chain_rate(n: u64, rounds: u32, checkpoints: bool) -> (f64, (usize, usize, u64)) {
    let mut sum = 0u64;
    let mut p = Pipeline::from_iter(0..n)
        .map("a", move |x: u64| work(x, rounds))
        .map("b", move |x: u64| work(x, rounds))
        .map("c", move |x: u64| work(x, rounds))
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .mode(ExecutionMode::Distributed);
    if checkpoints {
        p = p.max_restarts(3);
        if let Some(items) = env_opt("RECOVERY_LOG_ITEMS") {
            p = p.replay_log_items(items as usize);
        }
        if let Some(ms) = env_opt("RECOVERY_INTERVAL_MS") {
            p = p.checkpoint_interval(Duration::from_millis(ms));
        }
    }
    let t = Instant::now();
    let report = p
        .sink(move |x| sum = sum.wrapping_add(x))
        .run()
        .expect("run");
    (
        n as f64 / t.elapsed().as_secs_f64(),
        (
            report.replay_log_peak,
            report.replay_log_bound,
            report.checkpoints,
        ),
    )
}

/// A source of `0..` at about `per_ms` items per millisecond until `stop`.
fn paced(per_ms: u64, stop: &Arc<AtomicBool>) -> impl Iterator<Item = u64> + Send + 'static {
    let stop = Arc::clone(stop);
    (0..)
        .take_while(move |_| !stop.load(Ordering::Relaxed))
        .inspect(move |x| {
            if x % per_ms == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
}

/// The same chain over a paced source in hybrid mode that only switches
/// when told to; the sink notes when each item arrives (ns since `base`).
fn paced_run(
    stop: &Arc<AtomicBool>,
    base: Instant,
    arrivals: &Arc<Mutex<Vec<u64>>>,
    kills: u32,
) -> PipelineHandle {
    let arrivals = Arc::clone(arrivals);
    Pipeline::from_iter(paced(100, stop))
        .map("a", |x: u64| x.wrapping_mul(0x9E37_79B9))
        .map("b", |x: u64| x ^ (x >> 17))
        .map("c", |x: u64| x.wrapping_add(7))
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .mode(ExecutionMode::Hybrid(HybridConfig {
            local_threshold: usize::MAX / 4,
            cooldown_ms: 3_600_000,
            switch_timeout_ms: 10_000,
            ..HybridConfig::default()
        }))
        .max_restarts(kills + 1)
        .sink(move |x| {
            black_box(x);
            arrivals
                .lock()
                .unwrap()
                .push(base.elapsed().as_nanos() as u64);
        })
        .spawn()
        .expect("spawn")
}

/// Kill → first item at the sink after the recovery, `kills` times; and
/// the pause of `floors` switches out of the same pipeline.
fn downtimes(kills: u32, floors: u32) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 22)));
    let handle = paced_run(&stop, base, &arrivals, kills);
    let mut floor = Vec::new();
    for _ in 0..floors {
        std::thread::sleep(Duration::from_millis(100));
        let out = handle.switch_to(Mode::Distributed).expect("switch");
        assert_eq!(out.outcome, SwitchOutcome::Completed, "{out:?}");
        floor.push(out.pause.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(100));
        let back = handle.switch_to(Mode::InProcess).expect("switch");
        assert_eq!(back.outcome, SwitchOutcome::Completed, "{back:?}");
    }
    handle.switch_to(Mode::Distributed).expect("switch");
    let mut down = Vec::new();
    let mut inside = Vec::new();
    for k in 0..kills as usize {
        std::thread::sleep(Duration::from_millis(200));
        let pids = handle.worker_pids();
        let (_, pid) = &pids[k % pids.len()];
        let killed_at = base.elapsed().as_nanos() as u64;
        let wall = SystemTime::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        let event = loop {
            if let Some(e) = handle.metrics().recoveries.get(k).cloned() {
                break e;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        // The recovery resumed the threads at `at + downtime`; the first
        // arrival after that is the first item of the new workers.
        let resumed = killed_at
            + (event.at + event.downtime)
                .duration_since(wall)
                .unwrap_or_default()
                .as_nanos() as u64;
        let first = loop {
            let found = arrivals
                .lock()
                .unwrap()
                .iter()
                .rev()
                .take_while(|&&t| t >= resumed)
                .last()
                .copied();
            if let Some(t) = found {
                break t;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        down.push((first - killed_at) as f64 / 1e6);
        inside.push(event.downtime.as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    let report = handle.join().expect("join");
    assert_eq!(report.recoveries.len(), kills as usize);
    (down, floor, inside)
}

fn main() {
    let n = env("RECOVERY_ITEMS", 20_000_000);
    let round_count = env("RECOVERY_ROUNDS", 8) as usize;
    let kills = env("RECOVERY_KILLS", 15) as u32;
    let mut lines = Vec::new();

    // Trivial maps (the log's cost is largest against them), then maps of
    // 24 xorshift rounds each (about 10 ns).
    for (rounds, items, label) in [(0u32, n, "trivial maps"), (24, n / 4, "maps of ~10 ns")] {
        let mut on = Vec::new();
        let mut off = Vec::new();
        let mut peaks = Vec::new();
        for round in 0..round_count {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for checkpoints in order {
                let (rate, peak) = chain_rate(items, rounds, checkpoints);
                if checkpoints {
                    on.push(rate);
                    peaks.push(peak);
                } else {
                    off.push(rate);
                }
            }
            println!(
                "{label}, round {round}: checkpoints on {:.2} M/s, off {:.2} M/s, log peak {} \
                 of {}, {} checkpoints",
                on[round] / 1e6,
                off[round] / 1e6,
                peaks[round].0,
                peaks[round].1,
                peaks[round].2
            );
        }
        let ratios = sorted(on.iter().zip(&off).map(|(a, b)| a / b).collect());
        let (bound, per_run) = (peaks[0].1, peaks[0].2);
        lines.push(format!(
            "Distributed source → 3 {label} → stateful → sink, {items} u64 items, {} rounds \
             alternating: checkpoints on {:.2} M items/s, off {:.2} M items/s (medians); \
             {per_run} checkpoints a run (every 1 s, or when the log holds half its {bound} \
             items). On / off: {}",
            on.len(),
            quantile(&sorted(on.clone()), 0.5) / 1e6,
            quantile(&sorted(off.clone()), 0.5) / 1e6,
            summary(&ratios, 2, 0.95)
        ));
        let over = peaks.iter().filter(|(peak, bound, _)| peak > bound).count();
        let worst = peaks.iter().map(|p| p.0).max().unwrap_or(0);
        lines.push(format!(
            "Replay log peak over those {} runs: at most {worst} items, bound {bound}; over the \
             bound in {over} runs.",
            peaks.len(),
        ));
    }

    // 100 MB resident, touched: every fork copies its page tables.
    let resident: Vec<u8> = (0..100usize << 20).map(|i| i as u8).collect();
    black_box(&resident);
    let (down, floor, inside) = downtimes(kills, 5);
    let (down, floor, inside) = (sorted(down), sorted(floor), sorted(inside));
    let median = quantile(&down, 0.5);
    let floor_median = quantile(&floor, 0.5);
    let ratio = median / floor_median;
    lines.push(format!(
        "Downtime with 100 MB resident, {kills} kills (SIGKILL of one worker of 4, in turn): \
         kill → first new item at the sink p50 {median:.2} ms, p99 {:.2} ms (max {:.2}); \
         inside the coordinator (death noticed → threads resumed) p50 {:.2} ms; floor (the \
         pause of a switch out of the same pipeline, {} switches: barrier, 4 forks, rings) \
         p50 {floor_median:.2} ms. Median / floor {ratio:.2} × (target ≤ 3 ×: {}).",
        quantile(&down, 0.99),
        down.last().copied().unwrap_or(f64::NAN),
        quantile(&inside, 0.5),
        floor.len(),
        if ratio <= 3.0 { "met" } else { "**missed**" }
    ));
    drop(resident);
    for line in &lines {
        println!("{line}");
    }
    write_extra("recovery", "recovery", &lines);
}
