//! A stage's two sides, whatever carries them: [`Rx`] (its input) and
//! [`Tx`] (its output). Each holds the in-process ring end the stage keeps
//! for its whole life and, while the pipeline is distributed, the
//! shared-memory end its loop uses instead; [`Side::active`] says which
//! one a run uses, once per run, so the stage loop
//! is monomorphised for one [`Transport`] per side and the per-item path
//! stays static.

use crate::heap::RingOutbox;
use crate::shm::{ShmInbox, ShmOutbox};
use ringweave_ipc::ring::Consumer;

/// The end a side runs over now.
pub(crate) enum Transport<'a, H, S> {
    /// The in-process ring.
    Heap(&'a mut H),
    /// The shared-memory record ring.
    Shm(&'a mut S),
}

/// One side of a stage: the in-process end `H` and, while distributed,
/// the shared-memory end `S`.
pub(crate) struct Side<H, S> {
    heap: Option<H>,
    shm: Option<S>,
}

/// A stage's input.
pub(crate) type Rx<T> = Side<Consumer<T>, ShmInbox<T>>;

/// A stage's output.
pub(crate) type Tx<T> = Side<RingOutbox<T>, ShmOutbox<T>>;

impl<H, S> Default for Side<H, S> {
    fn default() -> Self {
        Self {
            heap: None,
            shm: None,
        }
    }
}

impl<H, S> Side<H, S> {
    /// The end this run uses: the shared-memory one while attached, else
    /// the in-process ring; `None` before the stage is wired.
    pub(crate) fn active(&mut self) -> Option<Transport<'_, H, S>> {
        match (&mut self.shm, &mut self.heap) {
            (Some(shm), _) => Some(Transport::Shm(shm)),
            (None, Some(heap)) => Some(Transport::Heap(heap)),
            (None, None) => None,
        }
    }

    /// Wires the in-process ring end.
    pub(crate) fn set_heap(&mut self, end: H) {
        self.heap = Some(end);
    }

    /// The in-process ring end, for a coordinator holding the paused stage.
    pub(crate) fn heap_mut(&mut self) -> Option<&mut H> {
        self.heap.as_mut()
    }

    /// The shared-memory end, while attached.
    pub(crate) fn shm(&self) -> Option<&S> {
        self.shm.as_ref()
    }

    /// The shared-memory end, while attached, to change.
    pub(crate) fn shm_mut(&mut self) -> Option<&mut S> {
        self.shm.as_mut()
    }

    /// Switches the loop to a shared-memory end.
    pub(crate) fn attach(&mut self, end: S) {
        self.shm = Some(end);
    }

    /// Drops the shared-memory end (closing it): back to the ring.
    pub(crate) fn detach(&mut self) {
        self.shm = None;
    }
}
