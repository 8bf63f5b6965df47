//! Noticing that a worker process ended the moment it does: a thread that
//! sleeps in `poll(2)` on the workers' pidfds and calls back when one
//! becomes readable (the process has exited), instead of a caller asking
//! every few milliseconds.
//!
//! The watch holds its own duplicates of the pidfds, so it never races the
//! [`Worker`]s that own and reap the processes: a pidfd stays readable after
//! its process was reaped, and each is dropped from the set after its one
//! callback. Dropping the watch wakes the thread through an eventfd and
//! joins it.
//!
//! Workers without a pidfd (kernels before 5.3) are not watched; the caller
//! keeps polling them ([`Worker::try_status`]).

use crate::worker::Worker;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

/// A thread watching some workers' pidfds (see the module docs).
#[derive(Debug)]
pub struct ExitWatch {
    /// Written once by `Drop` to stop the thread.
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl ExitWatch {
    /// Starts a thread named `name` that calls `on_exit` once for each of
    /// `workers` that ends. `Ok(None)` if none of them has a pidfd.
    ///
    /// # Errors
    ///
    /// Duplicating a pidfd, making the eventfd or spawning the thread.
    pub fn new<'a>(
        workers: impl IntoIterator<Item = &'a Worker>,
        name: &str,
        on_exit: impl Fn() + Send + 'static,
    ) -> io::Result<Option<Self>> {
        let pidfds = workers
            .into_iter()
            .filter_map(Worker::pidfd)
            .map(|fd| fd.try_clone_to_owned())
            .collect::<io::Result<Vec<OwnedFd>>>()?;
        if pidfds.is_empty() {
            return Ok(None);
        }
        // SAFETY: eventfd takes no pointers; a non-negative return is a new
        // descriptor that nothing else owns.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor (above), owned from here on.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let stop_fd = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || watch(&stop_fd, pidfds, &on_exit))?;
        Ok(Some(Self {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live `u64` to our eventfd.
        let written = unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        // Only an overflowing counter fails a write, which one write cannot
        // cause; were it to fail, joining would wait forever, so the thread
        // is left to end with the process instead.
        if written == std::mem::size_of::<u64>() as isize {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The thread: poll `stop` and every pidfd left; a readable pidfd is one
/// callback and leaves the set; `stop` ends the thread.
fn watch(stop: &OwnedFd, mut pidfds: Vec<OwnedFd>, on_exit: &dyn Fn()) {
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(stop)
            .chain(&pidfds)
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfds whose
        // descriptors stay open during the call (owned above).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Nothing sensible to do: the caller's own polling remains.
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        let ended: Vec<usize> = fds[1..]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect();
        for &i in ended.iter().rev() {
            pidfds.swap_remove(i);
        }
        if !ended.is_empty() {
            on_exit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_worker_ending_is_reported_once_and_drop_stops_the_thread() {
        // SAFETY: the closures only sleep and return.
        let quick = unsafe { Worker::spawn("quick", || 0) }.unwrap();
        // SAFETY: as above.
        let slow = unsafe {
            Worker::spawn("slow", || {
                std::thread::sleep(Duration::from_secs(30));
                0
            })
        }
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let watch = ExitWatch::new([&quick, &slow], "rw-test-watch", move || {
            let _ = tx.send(());
        })
        .unwrap();
        if watch.is_none() {
            // No pidfds on this kernel: nothing to watch.
            return;
        }
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the quick worker's end");
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "one callback per worker"
        );
        slow.kill().unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the killed worker's end");
        drop(watch);
        quick.wait().unwrap();
        slow.wait().unwrap();
    }
}
