//! Runs in a process where someone else takes the workers' exit statuses:
//! `SIGCHLD` set to `SIG_IGN` (the kernel reaps children as they exit), or
//! a thread of the process calling `waitpid(-1, …)`.
//!
//! With `SIGCHLD` ignored a worker's crash and its clean finish look alike,
//! so distributed mode must refuse to start (and a switch to it roll back)
//! instead of forking. A foreign `waitpid` cannot be detected in advance;
//! the run must still end — reporting the stage whose status was lost, or
//! finishing if it saw the statuses first — instead of counting a reaped
//! worker as running forever.
//!
//! `SIGCHLD`'s disposition and `waitpid(-1)` affect the whole process, so
//! the tests run one at a time ([`serial`]) and put the default
//! disposition back even when they fail.

mod hybrid_support;

use hybrid_support::*;
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use ringweave::{Error, ExecutionMode, Mode, Pipeline, SwitchOutcome};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Bound on a run: a regression (a run that never ends) fails the test
/// instead of hanging the suite. Far beyond what these short runs need.
const BOUND: Duration = Duration::from_secs(60);

/// Runs `f` on another thread and waits for it at most [`BOUND`].
fn within_bound<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?}"))
}

fn set_sigchld(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: `SIG_IGN` and `SIG_DFL` run no code of ours in a signal
    // handler.
    unsafe { sigaction(Signal::SIGCHLD, &action) }.expect("sigaction(SIGCHLD)");
}

/// Sets `SIGCHLD` to `SIG_IGN` until dropped, then back to `SIG_DFL`.
struct SigchldIgnored;

impl SigchldIgnored {
    fn set() -> Self {
        set_sigchld(SigHandler::SigIgn);
        SigchldIgnored
    }
}

impl Drop for SigchldIgnored {
    fn drop(&mut self) {
        set_sigchld(SigHandler::SigDfl);
    }
}

/// A thread that reaps any child of this process as soon as it can, the
/// way a careless library's `waitpid(-1, …)` loop would. Stopped (and
/// joined) when dropped.
struct ForeignReaper {
    stop: Arc<AtomicBool>,
    stolen: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForeignReaper {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stolen = Arc::new(AtomicU64::new(0));
        let (stop2, stolen2) = (Arc::clone(&stop), Arc::clone(&stolen));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                        stolen2.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(Errno::ECHILD | Errno::EINTR) => std::thread::yield_now(),
                    Err(e) => panic!("waitpid(-1): {e}"),
                }
            }
        });
        Self {
            stop,
            stolen,
            thread: Some(thread),
        }
    }

    fn stolen(&self) -> u64 {
        self.stolen.load(Ordering::Relaxed)
    }
}

impl Drop for ForeignReaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// (a) A run started in distributed mode with `SIGCHLD` ignored fails at
/// once, saying why, instead of forking workers whose ends it could not
/// see (and, before the check, waiting for them forever).
#[test]
fn distributed_run_refuses_when_sigchld_is_ignored() {
    let _serial = serial();
    let _ignored = SigchldIgnored::set();
    let result = within_bound("a distributed run with SIGCHLD ignored", || {
        Pipeline::from_iter(0..1000u64)
            .map("m", |x| x + 1)
            .mode(ExecutionMode::Distributed)
            .sink(|_| {})
            .run()
    });
    match result {
        Err(Error::Distributed { reason }) => {
            assert!(reason.contains("SIGCHLD"), "{reason}");
            assert!(reason.contains("SIG_IGN"), "{reason}");
        }
        other => panic!("expected Error::Distributed naming SIGCHLD, got {other:?}"),
    }
    assert_nothing_left("after the refused run");
}

/// (b) A switch to distributed mode with `SIGCHLD` ignored rolls back with
/// the cause, and the run carries on in-process and delivers every item in
/// order.
#[test]
fn switch_rolls_back_when_sigchld_is_ignored() {
    let _serial = serial();
    let _ignored = SigchldIgnored::set();
    let n = 5_000;
    let fast = Arc::new(AtomicBool::new(false));
    let (out, sink) = collector();
    let handle = double_and_sum(Pipeline::from_iter(throttled(n, &fast)))
        .mode(manual_only(5_000))
        .batch_size(4)
        .sink(sink)
        .spawn()
        .unwrap();
    wait_for_output(&handle, 0, 10);

    let event = handle.switch_to(Mode::Distributed).unwrap();
    match &event.outcome {
        SwitchOutcome::RolledBack(cause) => {
            assert!(cause.contains("SIGCHLD"), "{cause}");
        }
        other => panic!("expected a roll-back naming SIGCHLD, got {other:?} ({event:?})"),
    }
    assert_eq!((event.from, event.to), (Mode::InProcess, Mode::Distributed));
    assert_eq!(
        handle.worker_pids(),
        vec![],
        "a rolled-back switch left workers"
    );
    assert_no_children("after the rolled-back switch");

    fast.store(true, Ordering::Relaxed);
    let report = within_bound("join", move || handle.join()).unwrap();
    assert_eq!(take(&out), doubled_sums(0..n));
    assert_eq!(report.items_delivered, n);
    assert_nothing_left("after the run");
}

/// (c) With the default disposition a distributed run starts, but a
/// foreign `waitpid(-1)` loop takes the workers' exit statuses. The run
/// must still end — and since the worker marks itself finished before it
/// exits, it ends well: the stolen status of a finished worker is not a
/// crash.
#[test]
fn run_ends_when_a_foreign_waitpid_takes_the_worker_status() {
    let _serial = serial();
    let n = 20_000u64;
    let reaper = ForeignReaper::start();
    let (out, sink) = collector();
    let result = within_bound("a distributed run under a foreign waitpid", move || {
        Pipeline::from_iter(0..n)
            .map("m", |x| x + 1)
            .mode(ExecutionMode::Distributed)
            .sink(sink)
            .run()
    });
    let stolen = reaper.stolen();
    drop(reaper);
    match result {
        Ok(report) => {
            assert_eq!(take(&out), (1..=n).collect::<Vec<_>>());
            assert_eq!(report.items_delivered, n);
        }
        Err(other) => panic!("a finished run failed (stolen {stolen}): {other}"),
    }
    assert_nothing_left("after the run");
}
