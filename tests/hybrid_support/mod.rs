//! Helpers shared by the integration tests (first written for
//! `hybrid_failures.rs` and `hybrid_crashes.rs`): the
//! leftover-process and leftover-thread checks, bounded waits, and the small
//! pipelines both files use.
//!
//! Those tests fork and then check that the test process has no child left,
//! so each runs under [`serial`]. Workers are copies of this process made at
//! a switch: after the fork they do not see this process's memory, so a test
//! that must steer a worker does it through the file system ([`flag_file`]),
//! or through items the source (which stays here) emits.

// Each test binary uses a subset.
#![allow(dead_code)]

use ringweave::{
    CompletePipeline, Error, ExecutionMode, HybridConfig, Pipeline, PipelineHandle, RunReport,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bound on any wait: far beyond what a healthy run needs, so that a hang
/// fails the test instead of stalling the suite.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Runs the tests of this file one at a time (see the module docs).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(children(), vec![], "a previous test left a child process");
    assert_eq!(
        pipeline_threads(),
        Vec::<String>::new(),
        "a previous test left threads"
    );
    guard
}

/// The children of this process, as `(pid, state)`, zombies included: every
/// process in `/proc` whose parent is us.
pub fn children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Gone between the listing and the read: not ours any more.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == me {
            found.push((pid, state));
        }
    }
    found
}

/// Threads of this process that a pipeline started (`rw-…`) and that are
/// still there.
pub fn pipeline_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .filter(|name| name.starts_with("rw-"))
        .collect()
}

/// No child process (running or zombie) is left: while a pipeline runs
/// in-process.
pub fn assert_no_children(when: &str) {
    assert_eq!(children(), vec![], "child processes left {when}");
}

/// No child process (running or zombie) and no pipeline thread is left:
/// after a run.
pub fn assert_nothing_left(when: &str) {
    assert_eq!(children(), vec![], "child processes left {when}");
    assert_eq!(
        pipeline_threads(),
        Vec::<String>::new(),
        "threads left {when}"
    );
}

/// Runs `f` on another thread and waits for it at most `PATIENCE`: a hang
/// becomes a failure naming `what`.
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} hung (no answer within {PATIENCE:?})"))
}

pub fn join_bounded(handle: PipelineHandle) -> Result<RunReport, Error> {
    bounded("join", move || handle.join())
}

/// Waits until `stage` has handed out at least `count` items.
pub fn wait_for_output(handle: &PipelineHandle, stage: usize, count: u64) {
    let start = Instant::now();
    while handle.stage_counts()[stage].2 < count {
        assert!(
            start.elapsed() < PATIENCE,
            "stage {stage} stuck below {count}: {:?}",
            handle.stage_counts()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Waits until `done()` holds.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn collector<T: Send + 'static>() -> (Arc<Mutex<Vec<T>>>, impl FnMut(T) + Send + 'static) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink_out = Arc::clone(&out);
    (out, move |x| sink_out.lock().unwrap().push(x))
}

pub fn take<T>(out: &Arc<Mutex<Vec<T>>>) -> Vec<T> {
    std::mem::take(&mut *out.lock().unwrap())
}

/// Hybrid mode that never switches by itself (the threshold is out of
/// reach, and after the first switch the cooldown never ends), so that only
/// the test's switches happen, with `switch_timeout_ms`.
pub fn manual_only(switch_timeout_ms: u64) -> ExecutionMode {
    ExecutionMode::Hybrid(HybridConfig {
        local_threshold: usize::MAX / 4,
        switch_timeout_ms,
        cooldown_ms: 3_600_000,
        ..HybridConfig::default()
    })
}

/// A source of `0..n` that sleeps 1 ms per item until `fast` is set: the run
/// lasts as long as the test needs, then ends quickly.
pub fn throttled(n: u64, fast: &Arc<AtomicBool>) -> impl Iterator<Item = u64> + Send + 'static {
    let fast = Arc::clone(fast);
    (0..n).inspect(move |_| {
        if !fast.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// `x → 2x`, then a running sum: what the `double`/`sum` stages compute.
pub fn doubled_sums(items: impl IntoIterator<Item = u64>) -> Vec<u64> {
    items
        .into_iter()
        .map(|x| x.wrapping_mul(2))
        .scan(0u64, |s, x| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .collect()
}

/// Appends `double` and a stateful `sum` to `p`.
pub fn double_and_sum(p: Pipeline<u64>) -> Pipeline<u64> {
    p.map("double", |x: u64| x.wrapping_mul(2))
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
}

/// A file path private to this test process, removed first.
pub fn flag_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ringweave-hybrid-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The numbers in `text`, in order.
pub fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Three transforms `a`, `b` (stateful), `c` over a throttled source.
pub fn three_stages(
    n: u64,
    fast: &Arc<AtomicBool>,
    sink: impl FnMut(u64) + Send + 'static,
) -> CompletePipeline {
    Pipeline::from_iter(throttled(n, fast))
        .map("a", |x: u64| x + 1)
        .stateful("b", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_mul(31).wrapping_add(x);
            Some(*s)
        })
        .map("c", |x: u64| x ^ 0x5555)
        .batch_size(4)
        .ring_capacity(64)
        .sink(sink)
}

pub fn three_stages_expected(n: u64) -> Vec<u64> {
    (0..n)
        .map(|x| x + 1)
        .scan(0u64, |s, x| {
            *s = s.wrapping_mul(31).wrapping_add(x);
            Some(*s)
        })
        .map(|x| x ^ 0x5555)
        .collect()
}

/// Asserts that `text` names a record size of at least 10,000 bytes and a
/// smaller ring limit of at most 4096.
pub fn assert_names_both_sizes(text: &str) {
    let numbers = numbers_in(text);
    let record = numbers.iter().copied().filter(|&x| x >= 10_000).max();
    let limit = numbers
        .iter()
        .copied()
        .filter(|&x| (64..=4096).contains(&x))
        .max();
    assert!(
        record.is_some() && limit.is_some(),
        "message must carry the record size and the ring limit: {text}"
    );
}

pub const BIG: usize = 10_000;

/// Small payloads, and a 10 KB one at `big_at`.
pub fn payload(i: u64, big_at: u64) -> Vec<u8> {
    if i == big_at {
        vec![7; BIG]
    } else {
        vec![i as u8; 16]
    }
}

/// Sends SIGKILL to the worker process `pid` (as `worker_pids` gives it).
pub fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}
