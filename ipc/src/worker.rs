//! Worker processes: a closure run in a forked child, and the parent's handle
//! that reaps it.
//!
//! [`Worker::spawn`] forks. The child arms `PR_SET_PDEATHSIG` with `SIGKILL`
//! (so it dies with its parent), checks that the parent did not die before
//! that, runs the closure under `catch_unwind`, and leaves with `_exit` with
//! the closure's return value: it never returns into the caller's code and
//! never runs the parent's destructors, `atexit` handlers or stdio flushes.
//!
//! The parent gets a [`Worker`]: it polls ([`Worker::try_status`]), kills and
//! waits for the child, and its `Drop` kills and reaps a child still running,
//! so a dropped handle leaves no process and no zombie behind.
//!
//! # When someone else reaps the worker
//!
//! With `SIGCHLD` ignored (`SIG_IGN`, or `SA_NOCLDWAIT`) the kernel reaps
//! children as they exit, and any code in the process that calls
//! `waitpid(-1, …)` may take a worker's exit status before its `Worker`
//! does. Either way `waitpid` on the worker fails with `ECHILD`, and the
//! exit status is gone for good. A `Worker` then records
//! [`WorkerExit::Unknown`]: the process has ended, how is not known. So a
//! worker never stays "running" after its process is gone, and no wait
//! blocks or retries forever. [`sigchld_ignored`] tells a caller that needs
//! real exit statuses that it will not get them.
//!
//! Where the kernel has them (Linux 5.3 and later) a `Worker` also holds a
//! pidfd of its process: polling it says whether the process has ended
//! whoever reaps it, and signals sent through it can never reach another
//! process that reuses the pid after someone else reaped the worker.
//!
//! # Examples
//!
//! ```
//! use ringweave_ipc::worker::{Worker, WorkerExit};
//!
//! // SAFETY: the closure only computes; it takes no lock and does no I/O.
//! let worker = unsafe { Worker::spawn("answer", || 6 * 7) }.unwrap();
//! assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(42));
//! ```

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};
use std::fmt;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// It exited with this code: the closure's return value, or one of
    /// [`Worker::PANIC_EXIT_CODE`], [`Worker::ORPHAN_EXIT_CODE`],
    /// [`Worker::SETUP_EXIT_CODE`].
    Exited(i32),
    /// A signal killed it (`SIGKILL` from [`Worker::kill`], from its parent's
    /// death, or from outside).
    Signaled(Signal),
    /// It has ended, but its exit status was taken by someone else: the
    /// kernel, because `SIGCHLD` is ignored (`SIG_IGN` or `SA_NOCLDWAIT`;
    /// see [`sigchld_ignored`]), or other code of this process that called
    /// `waitpid` (typically `waitpid(-1, …)`) first. `waitpid` on the worker
    /// failed with `ECHILD`, and nothing can tell any more whether it
    /// succeeded, so [`success`](Self::success) is `false`.
    Unknown,
}

impl WorkerExit {
    /// Whether the worker exited with code 0. `false` for
    /// [`Unknown`](Self::Unknown): a success nobody saw is not one.
    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(Worker::PANIC_EXIT_CODE) => {
                write!(f, "panicked (exit code {})", Worker::PANIC_EXIT_CODE)
            }
            Self::Exited(code) => write!(f, "exited with code {code}"),
            Self::Signaled(signal) => write!(f, "killed by {signal} ({})", signal as i32),
            Self::Unknown => f.write_str(
                "ended; its exit status was taken by someone else \
                 (SIGCHLD ignored or a foreign waitpid)",
            ),
        }
    }
}

/// Error of the worker operations; each names the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerError {
    /// `fork` failed; no process was made.
    Fork {
        /// The worker's name.
        name: String,
        /// The OS error (`EAGAIN`: process limit, `ENOMEM`).
        errno: Errno,
    },
    /// `waitpid` on the worker failed with an error other than `ECHILD`
    /// (which is not an error here: it records [`WorkerExit::Unknown`]).
    /// Linux documents no such error for a valid pid and flags; the variant
    /// stays so that an unexpected one is reported, not hidden.
    Wait {
        /// The worker's name.
        name: String,
        /// Its process id.
        pid: i32,
        /// The OS error.
        errno: Errno,
    },
    /// Sending `SIGKILL` failed.
    Kill {
        /// The worker's name.
        name: String,
        /// Its process id.
        pid: i32,
        /// The OS error.
        errno: Errno,
    },
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fork { name, errno } => {
                write!(
                    f,
                    "forking worker {name:?} failed: {errno} ({})",
                    *errno as i32
                )
            }
            Self::Wait { name, pid, errno } => write!(
                f,
                "waiting for worker {name:?} (pid {pid}) failed: {errno} ({})",
                *errno as i32
            ),
            Self::Kill { name, pid, errno } => write!(
                f,
                "killing worker {name:?} (pid {pid}) failed: {errno} ({})",
                *errno as i32
            ),
        }
    }
}

impl std::error::Error for WorkerError {}

/// The parent's handle on a forked worker process.
///
/// Dropping it kills the worker (`SIGKILL`) if it still runs, and reaps it.
pub struct Worker {
    name: String,
    pid: Pid,
    /// A pidfd of the process, if the kernel has `pidfd_open` (Linux 5.3).
    /// Unlike `pid` it always names this process: it becomes readable when
    /// the process ends, whoever reaps it, and a signal sent through it
    /// fails with `ESRCH` once the process is gone instead of reaching a
    /// process that reuses the pid. Closed when the `Worker` drops.
    pidfd: Option<OwnedFd>,
    /// How it ended, once reaped (or once `waitpid` said someone else did).
    /// After that `pid` may belong to another process, so it is never
    /// signalled or waited for again.
    exit: Option<WorkerExit>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("pid", &self.pid.as_raw())
            .field("pidfd", &self.pidfd.as_ref().map(AsRawFd::as_raw_fd))
            .field("exit", &self.exit)
            .finish()
    }
}

impl Worker {
    /// Exit code of a worker whose closure panicked.
    pub const PANIC_EXIT_CODE: i32 = 101;
    /// Exit code of a worker whose parent died before it could arm
    /// `PR_SET_PDEATHSIG`.
    pub const ORPHAN_EXIT_CODE: i32 = 102;
    /// Exit code of a worker that could not arm `PR_SET_PDEATHSIG`.
    pub const SETUP_EXIT_CODE: i32 = 103;

    /// Forks a worker process that runs `f` and exits with its return value.
    ///
    /// In the child: `PR_SET_PDEATHSIG(SIGKILL)` is armed, then `getppid()`
    /// is compared with the parent's pid (if the parent died in between, the
    /// child exits with [`ORPHAN_EXIT_CODE`](Self::ORPHAN_EXIT_CODE)); `f`
    /// runs under `catch_unwind` (a panic exits with
    /// [`PANIC_EXIT_CODE`](Self::PANIC_EXIT_CODE)); the process ends with
    /// `_exit`, so nothing of the parent's — destructors, `atexit` handlers,
    /// buffered stdio — runs in it.
    ///
    /// In the parent, `f` is **forgotten, not dropped**: what it captured was
    /// moved into the child. Capture ring handles by value and they belong to
    /// the child alone (their `Drop`, which closes a ring end, runs there if
    /// at all); capture by reference what the parent keeps. Whatever else
    /// `f` owns leaks in the parent, so capture little.
    ///
    /// `PR_SET_PDEATHSIG` fires when the parent *thread* that forked ends,
    /// not the parent process: spawn workers from a thread that outlives
    /// them (the pipeline's coordinator), never from a short-lived one.
    ///
    /// # Safety
    ///
    /// The child is a copy of a process that may have other threads, of
    /// which only the forking one exists in the child. Any lock another
    /// thread held at the fork stays locked forever there. So `f` must only
    /// use memory it owns or that is shared through a
    /// [`Segment`](crate::segment::Segment), the memory allocator (glibc's
    /// is fork-safe), and lock-free code such as the ring handles: no std
    /// `Mutex`, no `println!` or other stdio, no `tracing`, no
    /// environment access, nothing that may take a lock a dead thread holds.
    /// It reports through shared memory and its exit code; the parent logs
    /// for it. (A panic in `f` runs the panic hook, which writes to stderr:
    /// keep `f` from panicking except as a last resort.) These are the rules
    /// of std's `CommandExt::pre_exec`, for a closure that never `exec`s.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Fork`] if `fork` fails; `f` is then dropped here.
    pub unsafe fn spawn<F>(name: &str, f: F) -> Result<Worker, WorkerError>
    where
        F: FnOnce() -> i32,
    {
        let parent = getpid();
        let name = name.to_owned();
        let f = ManuallyDrop::new(f);
        // SAFETY: the child only runs `child_main`, whose obligations the
        // caller took on (see `# Safety`), and never returns.
        match unsafe { fork() } {
            Err(errno) => {
                // Nothing was forked, so `f` is still only ours.
                drop(ManuallyDrop::into_inner(f));
                Err(WorkerError::Fork { name, errno })
            }
            Ok(ForkResult::Child) => child_main(parent, ManuallyDrop::into_inner(f)),
            // `f` stays in its `ManuallyDrop`: moved into the child.
            Ok(ForkResult::Parent { child }) => Ok(Worker {
                name,
                pid: child,
                pidfd: pidfd_open(child),
                exit: None,
            }),
        }
    }

    /// The worker's name, as given to [`spawn`](Self::spawn).
    #[inline]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's process id.
    #[inline]
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// How the worker ended, if a call here already found out.
    #[inline]
    pub fn exit(&self) -> Option<WorkerExit> {
        self.exit
    }

    /// A pidfd of the worker's process, or `None` where the kernel has no
    /// `pidfd_open` (before Linux 5.3) or it failed at spawn.
    ///
    /// It polls readable (`POLLIN`) once the process has ended, whoever
    /// reaps it, so a caller watching several workers can `poll` all their
    /// pidfds at once and then call [`try_status`](Self::try_status) on the
    /// ones that woke. It is closed when the `Worker` drops; do not read
    /// from it or reap through it (`waitid(P_PIDFD, …)`), or the `Worker`
    /// only learns [`WorkerExit::Unknown`].
    #[inline]
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// How the worker ended, or `None` if it still runs; never blocks. With
    /// a pidfd, a `poll` of it with a zero timeout says whether the process
    /// has ended, and only then does `waitpid` (with `WNOHANG`) collect the
    /// exit status; without one, `waitpid` with `WNOHANG` does both. Once it
    /// has returned `Some`, it returns the same value without a system call.
    ///
    /// If the process has ended but its status was taken by someone else
    /// (`SIGCHLD` ignored, a foreign `waitpid`), it returns
    /// [`WorkerExit::Unknown`].
    ///
    /// Cheap enough to call from a blocking ring operation's `interrupt`.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Wait`] if `waitpid` fails with an error other than
    /// `ECHILD` (none is documented for a valid pid).
    pub fn try_status(&mut self) -> Result<Option<WorkerExit>, WorkerError> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        if let Some(pidfd) = &self.pidfd {
            // Still running: no `waitpid` needed. A failed poll (which the
            // kernel documents only for bad arguments) proves nothing, so
            // `waitpid` decides then.
            if pidfd_ended(pidfd.as_fd(), 0) == Ok(false) {
                return Ok(None);
            }
        }
        self.reap(Some(WaitPidFlag::WNOHANG))
    }

    /// Sends `SIGKILL` to the worker, unless it was already reaped. Does not
    /// wait; [`wait`](Self::wait) (or drop) reaps it.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Kill`] if the signal could not be sent.
    pub fn kill(&self) -> Result<(), WorkerError> {
        if self.exit.is_some() {
            // Reaped: the pid may be someone else's now.
            return Ok(());
        }
        let result = match &self.pidfd {
            // Through the pidfd the signal reaches this process or nothing:
            // `ESRCH` once someone else has reaped it.
            Some(pidfd) => pidfd_kill(pidfd.as_fd()),
            // An unreaped child's pid is still ours (a zombie keeps it).
            // Only if someone else reaped it behind our back (see the module
            // docs) could the pid be reused; without a pidfd that cannot be
            // ruled out, but reuse needs the pid space to wrap first.
            None => kill(self.pid, Signal::SIGKILL),
        };
        match result {
            // The process is gone (someone else reaped it): nothing to kill.
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(WorkerError::Kill {
                name: self.name.clone(),
                pid: self.pid.as_raw(),
                errno,
            }),
        }
    }

    /// Waits for the worker to end and reaps it. With a pidfd it first waits
    /// for the pidfd to become readable, which happens when the process
    /// ends even if someone else reaps it, then collects the status with
    /// `waitpid`.
    ///
    /// Returns [`WorkerExit::Unknown`] if the process ended but its status
    /// was taken by someone else.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Wait`] if `waitpid` fails with an error other than
    /// `ECHILD` (none is documented for a valid pid).
    pub fn wait(mut self) -> Result<WorkerExit, WorkerError> {
        self.wait_mut()
    }

    fn wait_mut(&mut self) -> Result<WorkerExit, WorkerError> {
        loop {
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            if let Some(pidfd) = &self.pidfd {
                // Not ended (`Ok(false)`: interrupted by a signal): poll
                // again. A failed poll falls through to the blocking
                // `waitpid`, which does not need the pidfd.
                if pidfd_ended(pidfd.as_fd(), -1) == Ok(false) {
                    continue;
                }
            }
            // After the pidfd said "ended" this returns at once: the status
            // is waiting (a zombie) or gone (`ECHILD`). Without a pidfd it
            // blocks until the child ends; the kernel then wakes every
            // waiter, and the one whose status was taken gets `ECHILD`.
            self.reap(None)?;
        }
    }

    /// One `waitpid`; records the exit if there is one.
    fn reap(&mut self, flags: Option<WaitPidFlag>) -> Result<Option<WorkerExit>, WorkerError> {
        let exit = match waitpid(self.pid, flags) {
            Ok(WaitStatus::Exited(_, code)) => WorkerExit::Exited(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => WorkerExit::Signaled(signal),
            // Still running (or stopped/continued, which we did not ask to
            // hear about), or a signal handler interrupted a blocking wait.
            Ok(_) | Err(Errno::EINTR) => return Ok(None),
            // Not our child any more: it has ended, and the kernel (SIGCHLD
            // ignored) or another `waitpid` took its status. It will never
            // be ours to collect, so record that it ended: a worker left
            // "running" here would be waited for forever.
            Err(Errno::ECHILD) => WorkerExit::Unknown,
            Err(errno) => {
                return Err(WorkerError::Wait {
                    name: self.name.clone(),
                    pid: self.pid.as_raw(),
                    errno,
                })
            }
        };
        self.exit = Some(exit);
        Ok(Some(exit))
    }
}

/// A pidfd of `pid`, or `None` if the kernel cannot make one.
///
/// `ENOSYS` (before Linux 5.3, or a seccomp filter) is the expected
/// failure; any other (`EMFILE`, `ENOMEM`, `ESRCH` if someone else already
/// reaped the child) also falls back to plain `waitpid`, which still sees
/// the end of the process: a pidfd makes the handle more robust, not
/// possible.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: `pidfd_open(pid, flags)` takes two integers and only returns
    // a new descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    let fd = i32::try_from(fd).expect("the kernel returns descriptors that fit in an int");
    // SAFETY: `fd` is a new descriptor that nothing else owns (and it is
    // close-on-exec: pidfds always are).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` has ended: `poll` for `POLLIN` with
/// `timeout_ms` (0: do not wait; -1: wait until it ends). `Ok(false)` if it
/// still runs (or a signal interrupted a blocking poll).
fn pidfd_ended(pidfd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool, Errno> {
    let mut fds = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fds` is one valid `pollfd` that lives across the call.
    let ready = unsafe { libc::poll(&mut fds, 1, timeout_ms) };
    match ready {
        // A pidfd reports the end of its process as `POLLIN` (and
        // `POLLHUP` once it is reaped, on newer kernels).
        1.. => Ok(true),
        0 => Ok(false),
        _ => match Errno::last() {
            Errno::EINTR => Ok(false),
            errno => Err(errno),
        },
    }
}

/// Sends `SIGKILL` through `pidfd` (`pidfd_send_signal`, Linux 5.1, which
/// any kernel with `pidfd_open` has).
fn pidfd_kill(pidfd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: the arguments are a descriptor, a signal number, a null
    // `siginfo` (the kernel then fills in a plain `kill`'s) and zero flags;
    // the kernel reads no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Whether this process's `SIGCHLD` disposition makes the kernel reap its
/// children itself: the handler is `SIG_IGN`, or `SA_NOCLDWAIT` is set.
///
/// With either, a child that exits leaves no zombie, so its exit status is
/// lost: `waitpid` on it fails with `ECHILD`, and a [`Worker`] can only
/// report [`WorkerExit::Unknown`], which cannot tell a crash from a clean
/// exit. Code that must tell them apart (the pipeline's distributed mode)
/// checks this before it forks and refuses to start instead.
///
/// The disposition is process-wide and may change at any time; this reads
/// it once. `SIGCHLD` has no fixed disposition a caller could lose by
/// asking, so the query always succeeds (a failure would read as `false`).
pub fn sigchld_ignored() -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action makes `sigaction` only read the current
    // one into `old`, which is valid for writes of a whole `sigaction`.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: `sigaction` succeeded and filled `old` (it was zeroed before,
    // which is a valid `sigaction` anyway).
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // Errors are ignored: with nobody to report to, the best left is
            // to try the next step. A child reaped elsewhere ends the wait
            // with `Unknown`, and leaves no zombie of ours either way.
            let _ = self.kill();
            let _ = self.wait_mut();
        }
    }
}

/// The child's side of [`Worker::spawn`]. Never returns.
fn child_main(parent: Pid, f: impl FnOnce() -> i32) -> ! {
    let code = if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        Worker::SETUP_EXIT_CODE
    } else if getppid() != parent {
        // The parent died before the signal was armed; we were re-parented
        // and nobody will ever reap us as a worker.
        Worker::ORPHAN_EXIT_CODE
    } else {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(code) => code,
            Err(payload) => {
                // Not dropped: a payload whose destructor panics would unwind
                // out of here.
                std::mem::forget(payload);
                Worker::PANIC_EXIT_CODE
            }
        }
    };
    // SAFETY: `_exit` ends the process at once, without running destructors
    // or atexit handlers — exactly what a forked copy of the parent must do.
    unsafe { libc::_exit(code) }
}

/// A group of workers, polled and torn down together.
///
/// Dropping it sends `SIGKILL` to every worker still running before reaping
/// any, so they die in parallel.
#[derive(Debug, Default)]
pub struct WorkerSet {
    workers: Vec<Worker>,
}

impl WorkerSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a worker.
    pub fn push(&mut self, worker: Worker) {
        self.workers.push(worker);
    }

    /// Workers in the set.
    #[inline]
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether the set is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The workers, in the order they were added.
    pub fn iter(&self) -> std::slice::Iter<'_, Worker> {
        self.workers.iter()
    }

    /// Polls every worker (without blocking) and returns the first, in
    /// insertion order, that has ended, with how it ended.
    ///
    /// # Errors
    ///
    /// The first [`WorkerError::Wait`].
    pub fn first_exit(&mut self) -> Result<Option<(&Worker, WorkerExit)>, WorkerError> {
        let mut found = None;
        for (i, worker) in self.workers.iter_mut().enumerate() {
            if let Some(exit) = worker.try_status()? {
                found = Some((i, exit));
                break;
            }
        }
        Ok(found.map(|(i, exit)| (&self.workers[i], exit)))
    }

    /// Polls every worker and returns whether any has ended with anything
    /// but exit code 0: the `interrupt` of a blocking ring operation that
    /// waits on the set.
    ///
    /// # Errors
    ///
    /// The first [`WorkerError::Wait`].
    pub fn any_failed(&mut self) -> Result<bool, WorkerError> {
        for worker in &mut self.workers {
            if worker.try_status()?.is_some_and(|exit| !exit.success()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sends `SIGKILL` to every worker still running.
    ///
    /// # Errors
    ///
    /// The first [`WorkerError::Kill`]; the others are still signalled.
    pub fn kill_all(&self) -> Result<(), WorkerError> {
        let mut first = Ok(());
        for worker in &self.workers {
            if let Err(e) = worker.kill() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Waits for every worker and returns how each ended, in insertion
    /// order.
    ///
    /// # Errors
    ///
    /// The first [`WorkerError::Wait`]; the remaining workers are reaped by
    /// the set's `Drop`.
    pub fn wait_all(mut self) -> Result<Vec<WorkerExit>, WorkerError> {
        self.workers.iter_mut().map(Worker::wait_mut).collect()
    }
}

impl Drop for WorkerSet {
    fn drop(&mut self) {
        // Signal all first, then reap each (in the workers' own `Drop`).
        let _ = self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_reported() {
        // SAFETY: the closure only returns a constant.
        let mut worker = unsafe { Worker::spawn("seven", || 7) }.unwrap();
        let exit = worker.wait_mut().unwrap();
        assert_eq!(exit, WorkerExit::Exited(7));
        assert_eq!(worker.try_status(), Ok(Some(exit)));
        assert_eq!(worker.kill(), Ok(()), "killing a reaped worker is a no-op");
    }

    #[test]
    fn panic_has_its_own_exit_code() {
        // The child's panic message goes through the panic hook to the
        // test's captured output or stderr: noise, but proof it is caught.
        // SAFETY: the closure panics, which runs the panic hook and may take
        // its locks (the hook's, the backtrace printer's). Should another
        // test thread hold one at the fork, the child hangs: the bounded
        // wait below then fails the test instead of hanging it.
        let mut worker = unsafe { Worker::spawn("panics", || panic!("on purpose")) }.unwrap();
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let exit = loop {
            if let Some(exit) = worker.try_status().unwrap() {
                break exit;
            }
            assert!(std::time::Instant::now() < give_up, "panicking child hung");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(exit, WorkerExit::Exited(Worker::PANIC_EXIT_CODE));
        assert!(exit.to_string().contains("panicked"));
    }

    #[test]
    fn kill_and_drop_reap() {
        let word = std::sync::atomic::AtomicU32::new(0);
        // SAFETY: the child only sleeps on a futex (a syscall, no lock).
        let mut worker = unsafe {
            Worker::spawn("sleeper", || loop {
                let _ = crate::futex::wait(&word, 0, None);
            })
        }
        .unwrap();
        assert_eq!(worker.try_status(), Ok(None));
        worker.kill().unwrap();
        assert_eq!(worker.wait_mut(), Ok(WorkerExit::Signaled(Signal::SIGKILL)));

        // SAFETY: as above.
        let worker = unsafe {
            Worker::spawn("dropped", || loop {
                let _ = crate::futex::wait(&word, 0, None);
            })
        }
        .unwrap();
        let pid = worker.pid();
        drop(worker);
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Err(Errno::ECHILD),
            "drop must have reaped the worker"
        );
    }

    /// Someone else collects the worker's exit status before the `Worker`
    /// does: `try_status` must report that it ended (`Unknown`) instead of
    /// failing and leaving it "running" forever; `exit()` then says the
    /// same, and `kill` and drop are no-ops.
    #[test]
    fn status_taken_by_someone_else_is_unknown() {
        // SAFETY: the closure only returns a constant.
        let mut worker = unsafe { Worker::spawn("stolen", || 5) }.unwrap();
        // The foreign reaper: what a library calling `waitpid` would do.
        assert_eq!(
            waitpid(worker.pid(), None),
            Ok(WaitStatus::Exited(worker.pid(), 5))
        );
        assert_eq!(worker.try_status(), Ok(Some(WorkerExit::Unknown)));
        assert_eq!(worker.exit(), Some(WorkerExit::Unknown));
        assert_eq!(worker.try_status(), Ok(Some(WorkerExit::Unknown)));
        assert!(!WorkerExit::Unknown.success());
        assert!(
            WorkerExit::Unknown.to_string().contains("someone else"),
            "{}",
            WorkerExit::Unknown
        );
        assert_eq!(worker.kill(), Ok(()));
        drop(worker);
    }

    /// As above, for a blocking `wait` (and for the pidfd-less path a
    /// kernel before 5.3 takes): it returns `Unknown` instead of an error.
    #[test]
    fn wait_after_someone_else_reaped_is_unknown() {
        for with_pidfd in [true, false] {
            // SAFETY: the closure only returns a constant.
            let mut worker = unsafe { Worker::spawn("stolen", || 0) }.unwrap();
            if !with_pidfd {
                worker.pidfd = None;
            }
            assert_eq!(
                waitpid(worker.pid(), None),
                Ok(WaitStatus::Exited(worker.pid(), 0))
            );
            assert_eq!(
                worker.wait(),
                Ok(WorkerExit::Unknown),
                "pidfd: {with_pidfd}"
            );
        }
    }

    /// A still-running worker killed and reaped by someone else while the
    /// `Worker` waits for it: the wait wakes (the pidfd reports the end)
    /// and returns, with the real status or `Unknown` depending on who
    /// reaped first.
    #[test]
    fn wait_wakes_when_someone_else_reaps() {
        let word = std::sync::atomic::AtomicU32::new(0);
        // SAFETY: the child only sleeps on a futex (a syscall, no lock).
        let worker = unsafe {
            Worker::spawn("sleeper", || loop {
                let _ = crate::futex::wait(&word, 0, None);
            })
        }
        .unwrap();
        let pid = worker.pid();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(worker.wait());
        });
        let thief = std::thread::spawn(move || {
            kill(pid, Signal::SIGKILL).unwrap();
            waitpid(pid, None)
        });
        let exit = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("wait hung after someone else reaped the worker");
        let stolen = thief.join().unwrap();
        match (exit, stolen) {
            (Ok(WorkerExit::Unknown), Ok(WaitStatus::Signaled(..)))
            | (Ok(WorkerExit::Signaled(Signal::SIGKILL)), Err(Errno::ECHILD)) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// Where the kernel has pidfds, the worker holds one, and it turns
    /// readable when the process ends.
    #[test]
    fn pidfd_reports_the_end() {
        // SAFETY: the closure only returns a constant.
        let mut worker = unsafe { Worker::spawn("pidfd", || 0) }.unwrap();
        let Some(pidfd) = worker.pidfd() else {
            // Before Linux 5.3: nothing to check.
            return;
        };
        assert_eq!(pidfd_ended(pidfd, 60_000), Ok(true));
        assert_eq!(worker.try_status(), Ok(Some(WorkerExit::Exited(0))));
    }

    #[test]
    fn sigchld_is_not_ignored_by_default() {
        // The ignored case changes process-wide state, so it lives in its
        // own test binary (`tests/foreign_reaper.rs`).
        assert!(!sigchld_ignored());
    }

    #[test]
    fn set_reports_the_first_failure() {
        let word = std::sync::atomic::AtomicU32::new(0);
        let mut set = WorkerSet::new();
        // SAFETY: the children only sleep on a futex or return.
        unsafe {
            set.push(
                Worker::spawn("sleeper", || loop {
                    let _ = crate::futex::wait(&word, 0, None);
                })
                .unwrap(),
            );
            set.push(Worker::spawn("fails", || 3).unwrap());
        }
        let failed = loop {
            if set.any_failed().unwrap() {
                break set
                    .first_exit()
                    .unwrap()
                    .map(|(w, e)| (w.name().to_owned(), e));
            }
            std::thread::yield_now();
        };
        assert_eq!(failed, Some(("fails".to_owned(), WorkerExit::Exited(3))));
        set.kill_all().unwrap();
        assert_eq!(
            set.wait_all().unwrap(),
            vec![WorkerExit::Signaled(Signal::SIGKILL), WorkerExit::Exited(3)]
        );
    }
}
