//! Crash recovery (`max_restarts`): workers killed at random moments are
//! replaced, and the sink still receives exactly the sequential result.

mod hybrid_support;

use hybrid_support::*;
use ringweave::{CompletePipeline, Error, ExecutionMode, Mode, Pipeline, PipelineHandle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The pid of the worker of `stage` now.
fn pid_of(handle: &PipelineHandle, stage: &str) -> Option<u32> {
    handle
        .worker_pids()
        .into_iter()
        .find(|(s, _)| s == stage)
        .map(|(_, pid)| pid)
}

/// One kill mid-stream of each worker in turn: one recovery each, the
/// sequence exact, nothing left behind.
#[test]
fn a_killed_worker_is_replaced_and_nothing_is_lost_or_repeated() {
    let _serial = serial();
    for victim in ["a", "b", "c"] {
        let n = 3_000;
        let fast = Arc::new(AtomicBool::new(false));
        let (out, sink) = collector();
        let handle = three_stages(n, &fast, sink)
            .mode(ExecutionMode::Distributed)
            .max_restarts(2)
            .checkpoint_interval(Duration::from_millis(50))
            .spawn()
            .unwrap();
        let last = handle.stage_counts().len() - 1;
        wait_for_output(&handle, last, 200);
        let pid = pid_of(&handle, victim).unwrap();
        sigkill(pid);
        wait_until("the recovery", || !handle.metrics().recoveries.is_empty());
        fast.store(true, Ordering::Relaxed);
        let report = join_bounded(handle).unwrap();
        assert_eq!(take(&out), three_stages_expected(n), "victim `{victim}`");
        assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
        let event = &report.recoveries[0];
        assert_eq!(event.stage, victim);
        assert_eq!(event.pid, pid);
        assert!(event.cause.contains("SIGKILL"), "{}", event.cause);
        assert_eq!(event.restart, 1);
        assert_eq!(
            report.items_delivered,
            three_stages_expected(n).len() as u64
        );
        assert!(report.replay_log_peak <= report.replay_log_bound);
        assert_eq!(
            report.replay_log_bound,
            ringweave::DEFAULT_REPLAY_LOG_BYTES / 8
        );
        assert!(report.checkpoints >= 1);
        assert_nothing_left(&format!("after `{victim}` was replaced"));
    }
}

/// `0..n`, a millisecond's sleep every 16 items until `fast` is set: about
/// 16 k items/s, so a schedule of kills and switches lands mid-stream.
fn paced(n: u64, fast: &Arc<AtomicBool>) -> impl Iterator<Item = u64> + Send + 'static {
    let fast = Arc::clone(fast);
    (0..n).inspect(move |x| {
        if x % 16 == 0 && !fast.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// What the keyed stage keeps per key: a count and a sum.
fn keyed_step(s: &mut (u64, u64), x: u64) -> Option<u64> {
    s.0 += 1;
    s.1 = s.1.wrapping_add(x);
    (s.0 % 4 != 0).then_some(s.1 ^ (s.0 << 40))
}

/// A graph of every stateful kind: a map on 2 replicas (3 processes while
/// distributed), a running hash, a keyed stage on 1 thread / 2 processes.
fn graph(
    n: u64,
    fast: &Arc<AtomicBool>,
    sink: impl FnMut(u64) + Send + 'static,
) -> CompletePipeline {
    Pipeline::from_iter(paced(n, fast))
        .map("a", |x: u64| x.wrapping_mul(0x9e37_79b9) >> 3)
        .replicas(2)
        .distributed_replicas(3)
        .stateful("b", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_mul(31).wrapping_add(x);
            Some(*s)
        })
        .stateful_by_key("k", |x: &u64| x % 11, || (0u64, 0u64), keyed_step)
        .replicas(1)
        .distributed_replicas(2)
        .batch_size(16)
        .ring_capacity(256)
        .sink(sink)
}

fn graph_expected(n: u64) -> Vec<u64> {
    let mut hash = 0u64;
    let mut keys: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut out = Vec::new();
    for x in 0..n {
        let a = x.wrapping_mul(0x9e37_79b9) >> 3;
        hash = hash.wrapping_mul(31).wrapping_add(a);
        if let Some(y) = keyed_step(keys.entry(hash % 11).or_default(), hash) {
            out.push(y);
        }
    }
    out
}

/// The running sums of `items`.
fn prefix_sums(items: impl IntoIterator<Item = u64>) -> Vec<u64> {
    items
        .into_iter()
        .scan(0u64, |s, x| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .collect()
}

/// Once stage `stage` has handed out all `n` items (it has finished) and
/// the sink has some, SIGKILLs the worker of `victim`, waits for the
/// recovery, lets the slow stage go fast and joins.
fn kill_once_drained(
    handle: PipelineHandle,
    stage: usize,
    n: u64,
    victim: &str,
    slow: &AtomicBool,
) -> ringweave::RunReport {
    wait_until("the stage to finish", || {
        handle.stage_counts()[stage].2 == n
    });
    let last = handle.stage_counts().len() - 1;
    wait_for_output(&handle, last, 50);
    sigkill(pid_of(&handle, victim).unwrap());
    wait_until("the recovery", || !handle.metrics().recoveries.is_empty());
    slow.store(false, Ordering::Relaxed);
    join_bounded(handle).unwrap()
}

/// A tiny deterministic generator for schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// SIGKILL, ignoring a process that is gone already.
fn kill_quietly(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Random schedules over the graph: kills of any worker or replica
/// process (one, or two at once), switches both ways in hybrid mode, and
/// checkpoints every few milliseconds so that kills land in checkpoints
/// and switches too. The sequence is the sequential one every time.
#[test]
fn random_kills_and_switches_keep_the_sequence_exact() {
    let _serial = serial();
    let mut recovered = 0;
    for seed in 1..=6u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let n = 6_000;
        let fast = Arc::new(AtomicBool::new(false));
        let (out, sink) = collector();
        let hybrid = seed % 2 == 0;
        let mode = if hybrid {
            manual_only(10_000)
        } else {
            ExecutionMode::Distributed
        };
        let handle = graph(n, &fast, sink)
            .mode(mode)
            .max_restarts(100)
            .checkpoint_interval(Duration::from_millis(1 + rng.below(20)))
            .replay_log_items(64 + rng.below(2_000) as usize)
            .spawn()
            .unwrap();
        if hybrid {
            handle.switch_to(Mode::Distributed).unwrap();
        }
        let mut kills = 0;
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            let pids = handle.worker_pids();
            match rng.below(6) {
                0 if hybrid => {
                    let to = if pids.is_empty() {
                        Mode::Distributed
                    } else {
                        Mode::InProcess
                    };
                    let _ = handle.switch_to(to);
                }
                1 if pids.len() >= 2 => {
                    let i = rng.below(pids.len() as u64) as usize;
                    let j = (i + 1) % pids.len();
                    kill_quietly(pids[i].1);
                    kill_quietly(pids[j].1);
                    kills += 1;
                }
                _ if !pids.is_empty() => {
                    let i = rng.below(pids.len() as u64) as usize;
                    kill_quietly(pids[i].1);
                    kills += 1;
                }
                _ => {}
            }
        }
        fast.store(true, Ordering::Relaxed);
        let report = join_bounded(handle).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(take(&out), graph_expected(n), "seed {seed}");
        assert!(report.recoveries.len() <= 2 * kills, "seed {seed}");
        assert!(
            report.replay_log_peak <= 64 + 2_000,
            "seed {seed}: log peak {}",
            report.replay_log_peak
        );
        recovered += report.recoveries.len();
        assert_nothing_left(&format!("after seed {seed}"));
    }
    assert!(recovered >= 6, "only {recovered} recoveries in all seeds");
}

/// Kills the new workers as soon as they appear, again and again: the
/// restore itself is interrupted, and each time the run starts over from
/// the same checkpoint.
#[test]
fn kills_during_the_restore_are_recovered_from_too() {
    let _serial = serial();
    let n = 4_000;
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector();
    let handle = three_stages(n, &fast, sink)
        .mode(ExecutionMode::Distributed)
        .max_restarts(30)
        .spawn()
        .unwrap();
    let last = handle.stage_counts().len() - 1;
    wait_for_output(&handle, last, 100);
    let rounds = 6;
    for _ in 0..rounds {
        let old = pid_of(&handle, "b").unwrap();
        kill_quietly(old);
        // Its replacement, killed the moment its pid is published (at the
        // fork, before it is attached): mostly during the restore.
        let new = loop {
            match pid_of(&handle, "b") {
                Some(p) if p != old => break p,
                _ => std::thread::yield_now(),
            }
        };
        kill_quietly(new);
        // The run has dealt with both kills once a third worker runs.
        wait_until("a worker that stays", || {
            pid_of(&handle, "b").is_some_and(|p| p != old && p != new)
        });
    }
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    assert_eq!(take(&out), three_stages_expected(n));
    // Every kill cost one restart, whether it hit a restore (which was
    // tried again) or a running worker (a recovery of its own).
    let restarts = report.recoveries.last().map_or(0, |r| r.restart);
    assert_eq!(restarts, 2 * rounds, "{:?}", report.recoveries);
    assert!(!report.recoveries.is_empty());
    assert_nothing_left("after kills during the restore");
}

/// Past `max_restarts` the run fails with the crash, naming the stage and
/// saying why it was not restarted; the default (0) restarts nothing.
#[test]
fn past_the_limit_the_run_fails_naming_the_stage() {
    let _serial = serial();
    for (max, kills) in [(0u32, 1usize), (2, 3)] {
        let fast = Arc::new(AtomicBool::new(false));
        let mut p = three_stages(u64::MAX, &fast, |_| {}).mode(ExecutionMode::Distributed);
        if max > 0 {
            p = p.max_restarts(max);
        }
        let handle = p.spawn().unwrap();
        let last = handle.stage_counts().len() - 1;
        for k in 0..kills {
            wait_until("workers", || pid_of(&handle, "c").is_some());
            wait_for_output(&handle, last, 50 * (k as u64 + 1));
            if k + 1 < kills {
                let before = handle.metrics().recoveries.len();
                sigkill(pid_of(&handle, "c").unwrap());
                wait_until("the recovery", || {
                    handle.metrics().recoveries.len() > before
                });
            } else {
                sigkill(pid_of(&handle, "c").unwrap());
            }
        }
        match join_bounded(handle) {
            Err(Error::WorkerCrashed { stage, exit, .. }) => {
                assert_eq!(stage, "c");
                assert!(exit.contains("SIGKILL"), "{exit}");
                if max > 0 {
                    assert!(
                        exit.contains("max_restarts") && exit.contains('2'),
                        "{exit}"
                    );
                }
            }
            other => panic!("max_restarts {max}: expected WorkerCrashed, got {other:?}"),
        }
        assert_nothing_left(&format!("after max_restarts {max}"));
    }
}

/// A panic is a bug: it fails the run at once, however many restarts are
/// allowed.
/// 100 000 items through the stage `name` doing `f`, distributed with
/// restarts allowed: how the run ends.
fn run_restartable(
    name: &str,
    f: impl Fn(u64) -> u64 + Send + Sync + 'static,
) -> Result<ringweave::RunReport, Error> {
    Pipeline::from_iter(0..100_000u64)
        .map(name, f)
        .mode(ExecutionMode::Distributed)
        .max_restarts(5)
        .sink(|_| {})
        .run()
}

#[test]
fn a_panic_is_not_restarted() {
    let _serial = serial();
    let result = run_restartable("boom", |x| {
        assert!(x != 5_000, "item 5000 is cursed");
        x
    });
    match result {
        Err(Error::StagePanicked { stage, message }) => {
            assert_eq!(stage, "boom");
            assert!(message.contains("cursed"), "{message}");
        }
        other => panic!("expected StagePanicked, got {other:?}"),
    }
    assert_nothing_left("after a panic");
}

/// A killed worker after the source has finished (the run is draining):
/// the finished source's log is sent again.
#[test]
fn a_kill_while_draining_replays_the_finished_source() {
    let _serial = serial();
    let n = 3_000u64;
    let slow = Arc::new(AtomicBool::new(true));
    let gate = Arc::clone(&slow);
    let (out, sink) = collector();
    let handle = Pipeline::from_iter(0..n)
        .map("slow", move |x: u64| {
            if gate.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(300));
            }
            x * 3
        })
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s += x;
            Some(*s)
        })
        .mode(ExecutionMode::Distributed)
        .ring_capacity(4096)
        .max_restarts(3)
        .checkpoint_interval(Duration::from_secs(3600))
        .sink(sink)
        .spawn()
        .unwrap();
    // The source is done once it has produced everything (the rings hold
    // the rest).
    let report = kill_once_drained(handle, 0, n, "sum", &slow);
    assert_eq!(take(&out), prefix_sums((0..n).map(|x| x * 3)));
    assert_eq!(report.recoveries.len(), 1);
    assert!(report.recoveries[0].replayed_items + report.recoveries[0].restored_items > 0);
    assert_nothing_left("after a kill while draining");
}

/// A small replay log: the source waits for checkpoints, the log never
/// holds more than its bound, and a kill is still recovered from.
#[test]
fn the_replay_log_stays_within_its_bound() {
    let _serial = serial();
    let n = 20_000u64;
    let (out, sink) = collector();
    let fast = Arc::new(AtomicBool::new(true));
    let handle = three_stages(n, &fast, sink)
        .mode(ExecutionMode::Distributed)
        .max_restarts(2)
        .replay_log_items(100)
        .checkpoint_interval(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    let last = handle.stage_counts().len() - 1;
    wait_for_output(&handle, last, 2_000);
    if let Some(pid) = pid_of(&handle, "b") {
        kill_quietly(pid);
    }
    let report = join_bounded(handle).unwrap();
    assert_eq!(take(&out), three_stages_expected(n));
    assert!(report.replay_log_peak <= 100, "{}", report.replay_log_peak);
    assert!(report.replay_log_peak > 0);
    assert_nothing_left("after a bounded log");
}

/// A tee's branch and a live `Input` source keep exactly-once across a
/// recovery: the branch skips what it was given before the crash.
#[test]
fn a_tee_branch_and_an_input_source_see_each_item_once() {
    let _serial = serial();
    let n = 5_000u64;
    let (mut input, pipeline) = Pipeline::<u64>::with_input();
    let (main_out, main_sink) = collector();
    let (branch_out, branch_sink) = collector();
    let handle = pipeline
        .map("a", |x: u64| x + 7)
        .tee("audit", move |b| {
            b.filter("odd", |x: &u64| x % 2 == 1).sink(branch_sink)
        })
        .stateful("sum", 0u64, |s: &mut u64, x: u64| {
            *s = s.wrapping_add(x);
            Some(*s)
        })
        .mode(ExecutionMode::Distributed)
        .max_restarts(3)
        .checkpoint_interval(Duration::from_millis(5))
        .sink(main_sink)
        .spawn()
        .unwrap();
    let mut killed = Vec::new();
    for x in 0..n {
        input.push(x).unwrap();
        if x % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if x == 1_500 || x == 3_500 {
            let victim = if x == 1_500 { "a" } else { "sum" };
            let pid = pid_of(&handle, victim).unwrap();
            sigkill(pid);
            killed.push(pid);
            wait_until("the recovery", || {
                handle.metrics().recoveries.len() == killed.len()
            });
        }
    }
    drop(input);
    let report = join_bounded(handle).unwrap();
    assert_eq!(take(&main_out), prefix_sums((0..n).map(|x| x + 7)));
    let branch: Vec<u64> = (0..n).map(|x| x + 7).filter(|x| x % 2 == 1).collect();
    assert_eq!(take(&branch_out), branch);
    assert_eq!(report.recoveries.len(), 2, "{:?}", report.recoveries);
    assert_eq!(
        report.recoveries.iter().map(|r| r.pid).collect::<Vec<_>>(),
        killed
    );
    assert_nothing_left("after a tee and an input");
}

/// A tee that has finished (its input ended) is kept: a kill of the stage
/// after it, while the sink still drains, replays through it, and its
/// branch still sees each item once.
#[test]
fn a_kill_after_the_tee_finished_replays_through_it() {
    let _serial = serial();
    let n = 2_000u64;
    let slow = Arc::new(AtomicBool::new(true));
    let gate = Arc::clone(&slow);
    let (main_out, main_sink) = collector();
    let (branch_out, branch_sink) = collector();
    let handle = Pipeline::from_iter(0..n)
        .map("a", |x: u64| x + 1)
        .tee("audit", move |b| b.sink(branch_sink))
        .stateful("slow", 0u64, move |s: &mut u64, x: u64| {
            if gate.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(500));
            }
            *s += x;
            Some(*s)
        })
        .mode(ExecutionMode::Distributed)
        .ring_capacity(4096)
        .max_restarts(2)
        .checkpoint_interval(Duration::from_secs(3600))
        .sink(main_sink)
        .spawn()
        .unwrap();
    // The tee is stage 2; it has passed everything on once its count is n.
    let report = kill_once_drained(handle, 2, n, "slow", &slow);
    assert_eq!(take(&main_out), prefix_sums(1..=n));
    assert_eq!(take(&branch_out), (1..=n).collect::<Vec<_>>());
    assert_eq!(report.recoveries.len(), 1);
    assert_nothing_left("after a kill behind a finished tee");
}

/// A state that cannot be checkpointed (larger than `max_state_bytes`)
/// fails the run once the replay log is full, saying why: never a hang.
#[test]
fn a_checkpoint_that_cannot_succeed_fails_the_run() {
    let _serial = serial();
    let result = Pipeline::from_iter(0..1_000_000u64)
        .stateful("big", Vec::<u64>::new(), |s: &mut Vec<u64>, x: u64| {
            s.push(x);
            Some(x)
        })
        .mode(ExecutionMode::Distributed)
        .max_state_bytes(4096)
        .max_restarts(2)
        .replay_log_items(2_000)
        .sink(|_| {})
        .run();
    match result {
        Err(Error::Distributed { reason }) => {
            assert!(reason.contains("checkpoint failed"), "{reason}");
            assert!(reason.contains("2000"), "{reason}");
            assert!(reason.contains("big"), "{reason}");
        }
        other => panic!("expected a checkpoint failure, got {other:?}"),
    }
    assert_nothing_left("after a failed checkpoint");
}

/// SIGABRT (what `panic = "abort"` or a double panic raises) is a bug like
/// a panic: not restarted.
#[test]
fn an_abort_is_not_restarted() {
    let _serial = serial();
    let result = run_restartable("abort", |x| {
        if x == 5_000 {
            std::process::abort();
        }
        x
    });
    match result {
        Err(Error::WorkerCrashed { stage, exit, .. }) => {
            assert_eq!(stage, "abort");
            assert!(exit.contains("SIGABRT"), "{exit}");
            assert!(!exit.contains("max_restarts"), "{exit}");
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    assert_nothing_left("after an abort");
}

/// A worker that stops making progress (SIGSTOP here) is killed by the
/// stall watchdog and replaced like a crashed one.
#[test]
fn a_stalled_worker_is_replaced() {
    let _serial = serial();
    let n = 3_000;
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector();
    let handle = three_stages(n, &fast, sink)
        .mode(ExecutionMode::Distributed)
        .max_restarts(2)
        .stall_timeout(Duration::from_millis(100))
        .spawn()
        .unwrap();
    let last = handle.stage_counts().len() - 1;
    wait_for_output(&handle, last, 100);
    let pid = pid_of(&handle, "b").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    wait_until("the watchdog's recovery", || {
        !handle.metrics().recoveries.is_empty()
    });
    fast.store(true, Ordering::Relaxed);
    let report = join_bounded(handle).unwrap();
    assert_eq!(take(&out), three_stages_expected(n));
    let event = &report.recoveries[0];
    assert_eq!((event.stage.as_str(), event.pid), ("b", pid));
    assert!(event.cause.contains("made no progress"), "{}", event.cause);
    assert_nothing_left("after a stalled worker");
}

/// A panic in one worker beside a kill of another, at about the same
/// moment, in either order: the panic fails the run (a recovery before it
/// replays into the same panic), never an `Ok` with items missing.
#[test]
fn a_panic_beside_a_kill_still_fails_the_run() {
    let _serial = serial();
    for attempt in 0..4u64 {
        let fast = Arc::new(AtomicBool::new(false));
        let cursed = 1_000 + 50 * attempt;
        let handle = Pipeline::from_iter(throttled(u64::MAX, &fast))
            .map("a", |x: u64| x + 1)
            .map("boom", move |x: u64| {
                assert!(x != cursed, "item {cursed} is cursed");
                x
            })
            .mode(ExecutionMode::Distributed)
            .max_restarts(10)
            .batch_size(4)
            .sink(|_| {})
            .spawn()
            .unwrap();
        let last = handle.stage_counts().len() - 1;
        wait_for_output(&handle, last, cursed - 5 - attempt);
        fast.store(true, Ordering::Relaxed);
        if let Some(pid) = pid_of(&handle, "a") {
            kill_quietly(pid);
        }
        match join_bounded(handle) {
            Err(Error::StagePanicked { stage, message }) => {
                assert_eq!(stage, "boom", "attempt {attempt}");
                assert!(message.contains("cursed"), "{message}");
            }
            other => panic!("attempt {attempt}: expected StagePanicked, got {other:?}"),
        }
        assert_nothing_left(&format!("after attempt {attempt}"));
    }
}
