//! A stage's two sides, whatever carries them: [`Rx`] (its input) and
//! [`Tx`] (its output). Each holds the in-process ring end the stage keeps
//! for its whole life and, while the pipeline is distributed, the
//! shared-memory end its loop uses instead; [`Rx::active`] and
//! [`Tx::active`] say which one a run uses, once per run, so the stage loop
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

/// A stage's input.
pub(crate) struct Rx<T> {
    heap: Option<Consumer<T>>,
    shm: Option<ShmInbox<T>>,
}

/// A stage's output.
pub(crate) struct Tx<T> {
    heap: Option<RingOutbox<T>>,
    shm: Option<ShmOutbox<T>>,
}

impl<T> Default for Rx<T> {
    fn default() -> Self {
        Self {
            heap: None,
            shm: None,
        }
    }
}

impl<T> Default for Tx<T> {
    fn default() -> Self {
        Self {
            heap: None,
            shm: None,
        }
    }
}

impl<T> Rx<T> {
    /// The end this run reads: the shared-memory one while attached, else
    /// the in-process ring; `None` before the stage is wired.
    pub(crate) fn active(&mut self) -> Option<Transport<'_, Consumer<T>, ShmInbox<T>>> {
        match (&mut self.shm, &mut self.heap) {
            (Some(shm), _) => Some(Transport::Shm(shm)),
            (None, Some(heap)) => Some(Transport::Heap(heap)),
            (None, None) => None,
        }
    }

    /// Wires the in-process ring end.
    pub(crate) fn set_heap(&mut self, consumer: Consumer<T>) {
        self.heap = Some(consumer);
    }

    /// The in-process ring end, for a coordinator holding the paused stage.
    pub(crate) fn heap_mut(&mut self) -> Option<&mut Consumer<T>> {
        self.heap.as_mut()
    }

    /// Switches the loop to a shared-memory end.
    pub(crate) fn attach(&mut self, inbox: ShmInbox<T>) {
        self.shm = Some(inbox);
    }

    /// Drops the shared-memory end (closing it): back to the ring.
    pub(crate) fn detach(&mut self) {
        self.shm = None;
    }
}

impl<T> Tx<T> {
    /// The end this run writes: the shared-memory one while attached, else
    /// the in-process ring; `None` before the stage is wired.
    pub(crate) fn active(&mut self) -> Option<Transport<'_, RingOutbox<T>, ShmOutbox<T>>> {
        match (&mut self.shm, &mut self.heap) {
            (Some(shm), _) => Some(Transport::Shm(shm)),
            (None, Some(heap)) => Some(Transport::Heap(heap)),
            (None, None) => None,
        }
    }

    /// Wires the in-process ring end.
    pub(crate) fn set_heap(&mut self, outbox: RingOutbox<T>) {
        self.heap = Some(outbox);
    }

    /// The in-process ring end, for a coordinator holding the paused stage.
    pub(crate) fn heap_mut(&mut self) -> Option<&mut RingOutbox<T>> {
        self.heap.as_mut()
    }

    /// Switches the loop to a shared-memory end.
    pub(crate) fn attach(&mut self, outbox: ShmOutbox<T>) {
        self.shm = Some(outbox);
    }

    /// Drops the shared-memory end (closing it): back to the ring.
    pub(crate) fn detach(&mut self) {
        self.shm = None;
    }
}
