//! Workers of a process whose `SIGCHLD` disposition makes the kernel reap
//! its children itself (`SIG_IGN`, `SA_NOCLDWAIT`): their exit statuses are
//! lost, and a `Worker` must say so (`WorkerExit::Unknown`) instead of
//! failing its waits and counting the worker as running forever.
//!
//! The disposition is process-wide, so the whole scenario is one test in a
//! file of its own: no other test can fork while it is changed.

// Processes do not exist under the loom model checker.
#![cfg(not(ringweave_loom))]

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use ringweave_ipc::futex;
use ringweave_ipc::worker::{sigchld_ignored, Worker, WorkerExit};
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on every wait: a regression (a wait that never ends) fails the
/// test instead of hanging the suite.
const PATIENCE: Duration = Duration::from_secs(60);

/// Sets `SIGCHLD` to `handler` with `flags`.
fn set_sigchld(handler: SigHandler, flags: SaFlags) {
    let action = SigAction::new(handler, flags, SigSet::empty());
    // SAFETY: `SIG_IGN` and `SIG_DFL` run no code of ours in a signal
    // handler; nothing else in this binary depends on `SIGCHLD`.
    unsafe { sigaction(Signal::SIGCHLD, &action) }.expect("sigaction(SIGCHLD)");
}

/// Puts `SIGCHLD` back to its default disposition, even if the test fails.
struct RestoreSigchld;

impl Drop for RestoreSigchld {
    fn drop(&mut self) {
        set_sigchld(SigHandler::SigDfl, SaFlags::empty());
    }
}

/// Runs `f` on another thread and waits for it at most `PATIENCE`.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} hung (no answer within {PATIENCE:?})"))
}

/// Polls `worker` until it reports an end, at most `PATIENCE`.
fn poll_until_ended(worker: &mut Worker) -> WorkerExit {
    let start = Instant::now();
    loop {
        match worker.try_status() {
            Ok(Some(exit)) => return exit,
            Ok(None) => {}
            Err(e) => panic!("try_status failed: {e}"),
        }
        assert!(start.elapsed() < PATIENCE, "the worker never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn kernel_reaped_workers_end_as_unknown() {
    let _restore = RestoreSigchld;
    assert!(!sigchld_ignored(), "the default disposition keeps statuses");

    for (what, handler, flags) in [
        ("SIG_IGN", SigHandler::SigIgn, SaFlags::empty()),
        ("SA_NOCLDWAIT", SigHandler::SigDfl, SaFlags::SA_NOCLDWAIT),
    ] {
        set_sigchld(handler, flags);
        assert!(sigchld_ignored(), "{what} must count as ignored");

        // A worker that ends by itself, polled: its end is noticed (by the
        // pidfd, or by `waitpid` failing with ECHILD), and recorded.
        // SAFETY: the closure only returns a constant.
        let mut worker = unsafe { Worker::spawn("polled", || 3) }.unwrap();
        let exit = poll_until_ended(&mut worker);
        assert_eq!(exit, WorkerExit::Unknown, "{what}");
        assert_eq!(worker.exit(), Some(WorkerExit::Unknown), "{what}");
        assert!(!exit.success());

        // A blocking wait on one that ends by itself.
        // SAFETY: as above.
        let worker = unsafe { Worker::spawn("waited", || 0) }.unwrap();
        let exit = bounded("wait", move || worker.wait());
        assert_eq!(exit, Ok(WorkerExit::Unknown), "{what}");

        // A blocking wait on one that is killed while it is waited for.
        let word = AtomicU32::new(0);
        // SAFETY: the child only sleeps on a futex (a syscall, no lock).
        let worker = unsafe {
            Worker::spawn("killed", || loop {
                let _ = futex::wait(&word, 0, None);
            })
        }
        .unwrap();
        worker.kill().unwrap();
        let exit = bounded("wait", move || worker.wait());
        assert_eq!(exit, Ok(WorkerExit::Unknown), "{what}");

        // Dropping a running worker kills it and returns.
        // SAFETY: as above.
        let worker = unsafe {
            Worker::spawn("dropped", || loop {
                let _ = futex::wait(&word, 0, None);
            })
        }
        .unwrap();
        bounded("drop", move || drop(worker));
    }

    set_sigchld(SigHandler::SigDfl, SaFlags::empty());
    assert!(!sigchld_ignored(), "restored");
    // SAFETY: the closure only returns a constant.
    let worker = unsafe { Worker::spawn("seen", || 4) }.unwrap();
    assert_eq!(
        bounded("wait", move || worker.wait()),
        Ok(WorkerExit::Exited(4))
    );
}
