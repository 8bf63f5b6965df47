//! Distributed mode start to finish, and manual switches both ways: the sink
//! must receive exactly what a pure in-process run delivers.

mod hybrid_support;

use hybrid_support::collector;
use ringweave::{ExecutionMode, Mode, Pipeline, SwitchOutcome};
use std::sync::Arc;

const N: u64 = if cfg!(debug_assertions) {
    100_000
} else {
    1_000_000
};

fn expected(n: u64) -> Vec<u64> {
    (0..n)
        .map(|x| x * 2)
        .filter(|x| x % 3 == 0)
        .flat_map(|x| [x, x + 1])
        .scan(0u64, |s, x| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .collect()
}

fn pipeline(n: u64) -> ringweave::Pipeline<u64> {
    stages(Pipeline::from_iter(0..n))
}

fn stages(source: ringweave::Pipeline<u64>) -> ringweave::Pipeline<u64> {
    source
        .map("double", |x: u64| x * 2)
        .filter("div3", |x: &u64| x % 3 == 0)
        .flat_map("pair", |x: u64| [x, x + 1])
        .stateful("running_sum", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
}

#[test]
fn distributed_mode_start_to_finish() {
    let (out, sink) = collector();
    let report = pipeline(N)
        .mode(ExecutionMode::Distributed)
        .sink(sink)
        .run()
        .unwrap();
    let got = std::mem::take(&mut *out.lock().unwrap());
    assert_eq!(got.len(), expected(N).len());
    assert!(got == expected(N), "sequences differ");
    assert_eq!(report.final_mode, Mode::Distributed);
    assert_eq!(report.items_produced, N);
    assert_eq!(report.stages[2].items_in, N, "worker counters are visible");
}

#[test]
fn manual_switches_both_ways_keep_the_sequence() {
    let (out, sink) = collector();
    // The second half of the stream crawls until the switches are done, so
    // the pipeline is still running for every one of them. (Crawls, not
    // blocks: a source blocked inside `next()` cannot reach the barrier.)
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::clone(&release);
    let source = (0..N).inspect(move |&x| {
        if x >= N / 2 && !gate.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let handle = stages(Pipeline::from_iter(source))
        .ring_capacity(64)
        .sink(sink)
        .spawn()
        .unwrap();
    let mut completed = 0;
    for k in 0..6 {
        let to = if k % 2 == 0 {
            Mode::Distributed
        } else {
            Mode::InProcess
        };
        let event = handle.switch_to(to).unwrap();
        if event.outcome == SwitchOutcome::Completed {
            completed += 1;
        }
    }
    release.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = handle.join().unwrap();
    let got = std::mem::take(&mut *out.lock().unwrap());
    assert_eq!(got.len(), expected(N).len());
    assert!(got == expected(N), "sequences differ");
    assert_eq!(report.switches.len(), 6);
    assert_eq!(completed, 6, "{:#?}", report.switches);
}

/// Items cross in runs, one record per run; runs that cannot fit the shared
/// ring are split down to single items, and the order survives.
#[test]
fn runs_split_to_fit_a_small_shared_ring() {
    let n = 3_000u64;
    let text = |i: u64| format!("{i:>6}:{}", "x".repeat((i % 9) as usize * 100));
    let expected: Vec<String> = (0..n)
        .map(text)
        .flat_map(|s| [s.clone(), s.to_uppercase()])
        .map(|s| s.len().to_string() + &s)
        .collect();
    let (out, sink) = collector();
    let report = Pipeline::from_iter((0..n).map(text))
        .flat_map("twice", |s: String| [s.clone(), s.to_uppercase()])
        .map("len", |s: String| s.len().to_string() + &s)
        // Up to ~900-byte items in a 4 KiB ring: at most a few per run.
        .shm_ring_bytes(4096)
        .mode(ExecutionMode::Distributed)
        .sink(sink)
        .run()
        .unwrap();
    let got = std::mem::take(&mut *out.lock().unwrap());
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "sequences differ");
    assert_eq!(report.items_delivered, 2 * n);
}
