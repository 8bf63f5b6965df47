//! The in-process ports: a stage's output over an in-process ring
//! ([`RingOutbox`], which stages outputs straight into the ring's free
//! slots and publishes them with one store) and its input (`Consumer`
//! itself). `shm.rs` has the same two over shared-memory record rings.

use crate::port::{interrupted, Emit, Inbox, Outbox, StageExit};
use ringweave_ipc::control::StageControl;
use ringweave_ipc::ring::{Consumer, Producer, WaitOutcome};
use std::collections::VecDeque;

/// The output end of an in-process stage: the stage writes in the output ring's
/// free slots and publishes them with one store.
///
/// Outputs that do not fit go to `pending`, in order; they come after
/// everything in the ring, and the stage takes no more input until they are
/// out. `pending` therefore holds at most one input's outputs beyond the
/// ring's free space (plus, after a switch back, residual items moved in from
/// a larger shared ring), so memory stays bounded.
pub(crate) struct RingOutbox<T> {
    producer: Producer<T>,
    /// Written, not yet published. Invariant: `staged <= room`.
    staged: usize,
    /// Free slots counted from the publish point, as last seen.
    room: usize,
    /// Outputs that did not fit, oldest first.
    pending: VecDeque<T>,
}

impl<T> RingOutbox<T> {
    pub(crate) fn new(producer: Producer<T>) -> Self {
        Self {
            producer,
            staged: 0,
            room: 0,
            pending: VecDeque::new(),
        }
    }

    /// Publishes what is staged, then moves what fits from `pending` into the
    /// ring and publishes that too.
    #[inline]
    fn publish(&mut self) {
        if self.staged > 0 {
            self.producer.publish_staged(self.staged);
            self.room -= self.staged;
            self.staged = 0;
        }
        if !self.pending.is_empty() {
            self.publish_pending();
        }
    }

    #[cold]
    fn publish_pending(&mut self) {
        self.room = self.producer.slots();
        let n = self.room.min(self.pending.len());
        for (offset, item) in self.pending.drain(..n).enumerate() {
            // SAFETY: `offset < n <= room`, the free-slot count just read, and
            // nothing is staged (`publish` published it first).
            unsafe { self.producer.write_staged(offset, item) };
        }
        if n > 0 {
            self.producer.publish_staged(n);
            self.room -= n;
        }
    }

    #[cold]
    fn emit_slow(&mut self, item: T) {
        if self.pending.is_empty() {
            self.room = self.producer.slots();
            if self.staged < self.room {
                // SAFETY: as in `emit`, with `room` just re-read.
                unsafe { self.producer.write_staged(self.staged, item) };
                self.staged += 1;
                return;
            }
        }
        self.pending.push_back(item);
    }

    /// Appends `items` after everything already in the ring and in
    /// `pending`. Used when a switch moves residual items back from shared
    /// memory into a paused stage's output.
    pub(crate) fn append(&mut self, items: impl IntoIterator<Item = T>) {
        self.pending.extend(items);
        self.publish();
    }
}

impl<T> Emit<T> for RingOutbox<T> {
    #[inline]
    fn emit(&mut self, item: T) {
        if self.staged < self.room && self.pending.is_empty() {
            // SAFETY: `staged < room`, the free-slot count last read, and
            // offsets are written in order once each before the next publish.
            unsafe { self.producer.write_staged(self.staged, item) };
            self.staged += 1;
        } else {
            self.emit_slow(item);
        }
    }
}

impl<T> Outbox<T> for RingOutbox<T> {
    #[inline]
    fn is_congested(&self) -> bool {
        !self.pending.is_empty()
    }

    #[inline]
    fn consumer_idle(&self) -> bool {
        self.producer.is_drained()
    }

    #[inline]
    fn flush(&mut self) -> Result<(), StageExit> {
        self.publish();
        Ok(())
    }

    #[inline]
    fn ring(&mut self) -> Option<&mut Producer<T>> {
        if self.staged > 0 || !self.pending.is_empty() {
            return None;
        }
        // The caller publishes slots behind our back: forget the room we saw.
        self.room = 0;
        Some(&mut self.producer)
    }

    fn wait_room(&mut self, control: &StageControl) -> Result<(), StageExit> {
        let want = self.pending.len().max(1);
        match self
            .producer
            .wait_for_slots(want, None, || control.is_aborted())
        {
            WaitOutcome::Ready(_) | WaitOutcome::TimedOut => Ok(()),
            WaitOutcome::Closed | WaitOutcome::Interrupted => Err(StageExit::Aborted),
        }
    }
}

impl<T> Inbox<T> for Consumer<T> {
    fn await_items(&mut self, control: &StageControl) -> Result<usize, StageExit> {
        loop {
            match self.wait_for_items(1, None, || control.interrupted()) {
                WaitOutcome::Ready(n) => return Ok(n),
                WaitOutcome::Closed => return Err(StageExit::Finished),
                WaitOutcome::Interrupted | WaitOutcome::TimedOut => interrupted(control)?,
            }
        }
    }

    #[inline]
    fn ring(&mut self) -> Option<&mut Consumer<T>> {
        Some(self)
    }

    #[inline]
    fn take(&mut self, n: usize, mut each: impl FnMut(T) -> bool) -> Result<usize, StageExit> {
        let Ok(chunk) = self.read_chunk(n) else {
            return Ok(0);
        };
        let mut taken = 0;
        for item in chunk.into_iter() {
            taken += 1;
            if !each(item) {
                break;
            }
        }
        Ok(taken)
    }
    #[inline]
    fn drained(&mut self) -> bool {
        self.slots() == 0
    }
}
