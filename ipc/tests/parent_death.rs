//! A worker dies with its parent (`PR_SET_PDEATHSIG`).
//!
//! The test process forks an intermediate worker, which forks a grandchild
//! worker that sleeps forever. Once the grandchild reports (through a shared
//! segment) that it runs its closure — so its death signal is armed — the
//! test kills the intermediate with `SIGKILL`, which runs no destructor, and
//! checks that the grandchild is killed too.
//!
//! The test process makes itself a child subreaper, so the orphaned
//! grandchild is re-parented to it rather than to init, and it can reap it
//! and read how it died. That setting applies to the whole test binary,
//! which is why this test has a file of its own.

// Processes, memfds and futexes do not exist under the loom model checker.
#![cfg(not(ringweave_loom))]

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use ringweave_ipc::futex;
use ringweave_ipc::segment::Segment;
use ringweave_ipc::worker::{Worker, WorkerExit};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Kills and reaps a process that is not a `Worker` of ours (the
/// re-parented grandchild) if the test fails before reaping it.
struct ReapOnDrop {
    pid: Option<Pid>,
}

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Waits until process `pid` has exited, at most `timeout`; true if it has.
/// Uses a pidfd, which becomes readable when the process exits, so there is
/// no polling loop.
fn exited_within(pid: Pid, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    assert!(fd >= 0, "pidfd_open: {}", nix::errno::Errno::last());
    let mut pollfd = libc::pollfd {
        fd: fd as i32,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pollfd, 1, ms) };
        if n >= 0 || nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            break n > 0;
        }
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd as i32) };
    ready
}

#[test]
fn workers_die_with_their_parent() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();

    let segment = Segment::create("ringweave-test-pdeath", 8).unwrap();
    let words = segment.region(0, 8).unwrap().cast::<AtomicU32>().as_ptr();
    // SAFETY: 8 zeroed, 128-aligned bytes of the segment hold two
    // `AtomicU32`s; the segment outlives every use in this process, and the
    // children inherit the mapping.
    let (grandchild_pid, asleep) = unsafe { (&*words, &*words.add(1)) };

    // SAFETY: the intermediate only forks and sleeps on futexes; the
    // grandchild only stores to and sleeps on a futex word.
    let mut intermediate = unsafe {
        Worker::spawn("intermediate", || {
            let grandchild = Worker::spawn("grandchild", || {
                // Release: the test's Acquire load sees the flag only after
                // we run here, i.e. after PR_SET_PDEATHSIG was armed.
                asleep.store(1, Ordering::Release);
                let _ = futex::wake(asleep, u32::MAX);
                loop {
                    let _ = futex::wait(asleep, 1, None);
                }
            });
            let Ok(grandchild) = grandchild else {
                return 2;
            };
            grandchild_pid.store(grandchild.pid().as_raw() as u32, Ordering::Release);
            let _ = futex::wake(grandchild_pid, u32::MAX);
            // Never dropped: the test kills us with SIGKILL.
            std::mem::forget(grandchild);
            loop {
                let _ = futex::wait(grandchild_pid, grandchild_pid.load(Ordering::Relaxed), None);
            }
        })
    }
    .unwrap();

    // Wait until the intermediate has published the grandchild's pid and
    // the grandchild is asleep (its closure running), in either order;
    // bounded, and unless the intermediate gave up.
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut guard = ReapOnDrop { pid: None };
    loop {
        let raw = grandchild_pid.load(Ordering::Acquire);
        if raw != 0 {
            guard.pid = Some(Pid::from_raw(raw as i32));
        }
        if raw != 0 && asleep.load(Ordering::Acquire) != 0 {
            break;
        }
        if let Some(exit) = intermediate.try_status().unwrap() {
            panic!("intermediate ended before its child slept: {exit}");
        }
        assert!(Instant::now() < give_up, "grandchild never started");
        let word = if raw == 0 { grandchild_pid } else { asleep };
        let _ = futex::wait(word, 0, Some(Duration::from_millis(50)));
    }
    let pid = guard.pid.unwrap();
    assert_eq!(kill(pid, None), Ok(()), "the grandchild runs");

    // The intermediate dies without running anything of its own.
    intermediate.kill().unwrap();
    assert_eq!(
        intermediate.wait().unwrap(),
        WorkerExit::Signaled(Signal::SIGKILL)
    );

    // Its death kills the grandchild, which is now our child to reap.
    assert!(
        exited_within(pid, Duration::from_secs(60)),
        "the grandchild outlived its parent"
    );
    let status = waitpid(pid, None).unwrap();
    guard.pid = None;
    assert_eq!(status, WaitStatus::Signaled(pid, Signal::SIGKILL, false));
    assert_eq!(
        kill(pid, None),
        Err(nix::errno::Errno::ESRCH),
        "reaped: gone"
    );
}
