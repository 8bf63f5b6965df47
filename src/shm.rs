//! The stage loops' transports over shared-memory record rings: what a
//! worker process reads and writes, and what the source and sink threads use
//! while the pipeline is distributed.

use crate::control::StageControl;
use crate::error::Error;
use crate::item::Item;
use crate::stage::{interrupted, Emit, Inbox, Outbox, StageExit};
use ringweave_ipc::record::RecordError;
use ringweave_ipc::record_ring::{
    PopError, PushError, RecordConsumer, RecordProducer, WaitOutcome,
};
use std::collections::VecDeque;

/// The output of a stage into a record ring: each emitted item is archived
/// in place into the ring's free bytes (staged), and published with one
/// store per batch by `flush`.
///
/// Items that do not fit wait in `pending`, in order, as in the in-process
/// `RingOutbox`.
pub(crate) struct ShmOutbox<T> {
    producer: RecordProducer<T>,
    pending: VecDeque<T>,
    /// The stage this outbox belongs to, for error messages.
    stage: String,
    /// A record that can never be written (too large, or its `Serialize`
    /// failed): the stage fails at the next flush.
    error: Option<RecordError>,
}

impl<T> ShmOutbox<T> {
    pub(crate) fn new(producer: RecordProducer<T>, stage: &str) -> Self {
        Self {
            producer,
            pending: VecDeque::new(),
            stage: stage.to_owned(),
            error: None,
        }
    }

    fn fail(&self, error: RecordError) -> StageExit {
        StageExit::Failed(Error::Record {
            stage: self.stage.clone(),
            source: error,
        })
    }
}

impl<T: Item> Emit<T> for ShmOutbox<T> {
    #[inline]
    fn emit(&mut self, item: T) {
        if self.pending.is_empty() && self.error.is_none() {
            match self.producer.push(&item) {
                Ok(()) => return,
                Err(PushError::Record(e)) => {
                    self.error = Some(e);
                    return;
                }
                Err(_) => {}
            }
        }
        self.pending.push_back(item);
    }
}

impl<T: Item> Outbox<T> for ShmOutbox<T> {
    #[inline]
    fn is_congested(&self) -> bool {
        !self.pending.is_empty() || self.error.is_some()
    }

    fn flush(&mut self) -> Result<(), StageExit> {
        if let Some(error) = self.error.take() {
            return Err(self.fail(error));
        }
        self.producer.flush();
        while let Some(front) = self.pending.front() {
            match self.producer.push(front) {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(PushError::Record(e)) => return Err(self.fail(e)),
                Err(_) => break,
            }
        }
        self.producer.flush();
        Ok(())
    }

    fn wait_room(&mut self, control: &StageControl) -> Result<(), StageExit> {
        let Some(front) = self.pending.front() else {
            return Ok(());
        };
        // Waits for exactly the room the oldest waiting item needs.
        match self
            .producer
            .push_until(front, None, || control.is_aborted())
        {
            Ok(()) => {
                self.pending.pop_front();
                Ok(())
            }
            Err(PushError::Full) => Ok(()),
            Err(PushError::Record(e)) => Err(self.fail(e)),
            Err(PushError::Abandoned | PushError::Interrupted) => Err(StageExit::Aborted),
        }
    }
}

/// The input of a stage from a record ring, with the stage name for errors.
pub(crate) struct ShmInbox<T> {
    consumer: RecordConsumer<T>,
    stage: String,
}

impl<T> ShmInbox<T> {
    pub(crate) fn new(consumer: RecordConsumer<T>, stage: &str) -> Self {
        Self {
            consumer,
            stage: stage.to_owned(),
        }
    }

    fn fail(&self, error: RecordError) -> StageExit {
        StageExit::Failed(Error::Record {
            stage: self.stage.clone(),
            source: error,
        })
    }
}

impl<T: Item> Inbox<T> for ShmInbox<T> {
    fn await_items(&mut self, control: &StageControl) -> Result<usize, StageExit> {
        loop {
            match self
                .consumer
                .wait_for_records(None, || control.interrupted())
            {
                // The bytes readable do not say how many records: let `take`
                // read up to a batch.
                WaitOutcome::Ready(_) => return Ok(usize::MAX),
                WaitOutcome::Closed => return Err(StageExit::Finished),
                WaitOutcome::Interrupted | WaitOutcome::TimedOut => interrupted(control)?,
            }
        }
    }

    /// Takes up to `n` records, validated and deserialized, releasing them
    /// with one store. Unlike the in-process ring it hands every record of
    /// the batch on even if `each` asks to stop, so a congested stage may
    /// hold up to one batch of outputs beyond the ring's room (still
    /// bounded).
    fn take(&mut self, n: usize, mut each: impl FnMut(T) -> bool) -> Result<usize, StageExit> {
        let mut sink = EachItem(&mut each);
        match self.consumer.pop_batch(n, &mut sink) {
            Ok(taken) => Ok(taken),
            Err(PopError::Empty | PopError::Closed | PopError::Interrupted) => Ok(0),
            Err(PopError::Record(e)) => Err(self.fail(e)),
        }
    }
}

/// Feeds `pop_batch`'s output straight into the stage's per-item closure.
struct EachItem<'a, F>(&'a mut F);

impl<T, F: FnMut(T) -> bool> Extend<T> for EachItem<'_, F> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for item in iter {
            (self.0)(item);
        }
    }
}
