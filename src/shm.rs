//! The stage loops' transports over shared-memory record rings: what a
//! worker process reads and writes, and what the source and sink threads use
//! while the pipeline is distributed.

use crate::error::Error;
use crate::item::Item;
use crate::port::{interrupted, Emit, Inbox, Outbox, StageExit};
use ringweave_ipc::control::StageControl;
use ringweave_ipc::record::{RecordError, VecOf};
use ringweave_ipc::record_ring::{
    PopError, PushError, RecordConsumer, RecordProducer, WaitOutcome,
};

/// Most items one record carries.
pub(crate) const MAX_ITEMS_PER_RECORD: usize = 4096;

/// The output of a stage into a record ring of `Vec<T>` records: emitted
/// items are held, in order, and archived as runs — one record per run,
/// written in place into the ring's free bytes by [`VecOf`] — then published
/// with one store per batch by `flush`.
///
/// A record per run rather than per item is what makes the shared-memory
/// hop cheap: one frame header, one validation and one release per run, and
/// for plain-old-data items the archive is a single copy of the run.
///
/// Invariant: after `flush`, every held item is staged and published, or
/// `full` is set (the loop then takes no input, see [`Outbox`]).
pub(crate) struct ShmOutbox<T> {
    producer: RecordProducer<Vec<T>>,
    /// Emitted items; `held[..staged]` are archived into the ring already
    /// and are dropped when the rest are.
    held: Vec<T>,
    staged: usize,
    /// Most items per record: a run's archive is kept to about an eighth of
    /// the ring (or of the queue bound), so that a record neither waits for
    /// a nearly empty ring nor holds back the consumer for long.
    per_record: usize,
    /// Most items the edge should hold (the in-process ring's capacity), so
    /// that a switch out does not multiply queueing delay: a byte ring sized
    /// for large records would otherwise hold a hundred thousand small
    /// ones. 0 until the stage loop sets it.
    max_items: usize,
    /// Archive bytes per item, as the last record measured (0: unknown).
    bytes_per_item: usize,
    /// The last attempt to stage found no room.
    full: bool,
    /// The stage this outbox belongs to, for error messages.
    stage: String,
    /// A record that can never be written (too large, or its `Serialize`
    /// failed): the stage fails at the next flush.
    error: Option<RecordError>,
}

impl<T> ShmOutbox<T> {
    pub(crate) fn new(producer: RecordProducer<Vec<T>>, stage: &str) -> Self {
        Self {
            producer,
            held: Vec::new(),
            staged: 0,
            per_record: MAX_ITEMS_PER_RECORD,
            max_items: 0,
            bytes_per_item: 0,
            full: false,
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

    /// Bounds the items the edge holds to about `items` (see `max_items`).
    pub(crate) fn bound_queue(&mut self, items: usize) {
        self.max_items = items;
    }

    /// The bytes the ring may hold: `max_items` items at the measured size,
    /// but at least two records' worth so that producer and consumer can
    /// overlap. `None` while either is unknown: only the ring's size bounds
    /// it then.
    fn budget(&self) -> Option<usize> {
        if self.max_items == 0 || self.bytes_per_item == 0 {
            return None;
        }
        let items = self.max_items.max(2 * self.per_record);
        Some(items.saturating_mul(self.bytes_per_item))
    }
}

/// Bytes published or staged and not yet released by the consumer.
fn used_bytes<T>(producer: &mut RecordProducer<T>) -> usize {
    producer.capacity() - producer.free_bytes()
}

/// Stages `items` into `producer` as records of at most `*per_record`
/// items each, adapting `*per_record` to the ring (see
/// [`ShmOutbox::per_record`]). Returns how many items are staged; stops
/// early at `Err(Full)`, with the count so far.
///
/// `budget`: the most bytes the ring should hold; `Err(Full)` once it holds
/// that many (`None`: only the ring's size bounds it). `bytes_per_item` is
/// set to what each record measured.
pub(crate) fn stage_items<T: Item>(
    producer: &mut RecordProducer<Vec<T>>,
    items: &[T],
    per_record: &mut usize,
    budget: Option<usize>,
    bytes_per_item: &mut usize,
) -> (usize, Result<(), PushError>) {
    let ring_target = producer.capacity() / 8;
    let target = budget
        .map_or(ring_target, |b| ring_target.min(b / 4))
        .max(1);
    let mut done = 0;
    while done < items.len() {
        if budget.is_some_and(|b| used_bytes(producer) >= b) {
            return (done, Err(PushError::Full));
        }
        let k = (*per_record).min(items.len() - done);
        let before = producer.staged_bytes();
        match producer.push_as(&VecOf(&items[done..done + k])) {
            Ok(()) => {
                done += k;
                let bytes = (producer.staged_bytes() - before).max(1);
                *bytes_per_item = bytes.div_ceil(k);
                // Scale the run towards `target` bytes per record.
                *per_record = (k.saturating_mul(target) / bytes).clamp(1, MAX_ITEMS_PER_RECORD);
            }
            Err(PushError::Record(RecordError::TooLarge { .. })) if k > 1 => *per_record = k / 2,
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

impl<T: Item> ShmOutbox<T> {
    /// Stages every held item that fits; drops them once all are staged.
    fn stage_held(&mut self) {
        let budget = self.budget();
        let (done, result) = stage_items(
            &mut self.producer,
            &self.held[self.staged..],
            &mut self.per_record,
            budget,
            &mut self.bytes_per_item,
        );
        self.staged += done;
        match result {
            Ok(()) => self.all_staged(),
            Err(PushError::Record(e)) => self.error = Some(e),
            Err(_) => self.full = true,
        }
    }

    /// Every held item is in the ring: drop them and take outputs again.
    fn all_staged(&mut self) {
        self.held.clear();
        self.staged = 0;
        self.full = false;
    }
}

impl<T: Item> Emit<T> for ShmOutbox<T> {
    #[inline]
    fn emit(&mut self, item: T) {
        self.held.push(item);
        if self.held.len() - self.staged >= self.per_record && !self.is_congested() {
            self.stage_held();
        }
    }
}

impl<T: Item> Outbox<T> for ShmOutbox<T> {
    #[inline]
    fn is_congested(&self) -> bool {
        self.full || self.error.is_some()
    }

    #[inline]
    fn consumer_idle(&self) -> bool {
        self.producer.is_drained()
    }

    fn flush(&mut self) -> Result<(), StageExit> {
        if let Some(error) = self.error.take() {
            return Err(self.fail(error));
        }
        self.producer.flush();
        if self.staged < self.held.len() {
            self.stage_held();
            self.producer.flush();
        }
        match self.error.take() {
            Some(error) => Err(self.fail(error)),
            None => Ok(()),
        }
    }

    #[inline]
    fn buffer(&mut self) -> Option<&mut Vec<T>> {
        if self.is_congested() {
            None
        } else {
            Some(&mut self.held)
        }
    }

    fn wait_room(&mut self, control: &StageControl) -> Result<(), StageExit> {
        if self.staged == self.held.len() {
            return Ok(());
        }
        if let Some(budget) = self
            .budget()
            .filter(|&budget| used_bytes(&mut self.producer) >= budget)
        {
            // Over the queue bound: wait until the consumer brings the ring
            // below it; the next flush stages what then fits.
            let capacity = self.producer.capacity();
            let want = capacity - budget.min(capacity) + 1;
            return match self
                .producer
                .wait_for_space(want, None, || control.is_aborted())
            {
                WaitOutcome::Closed | WaitOutcome::Interrupted => Err(StageExit::Aborted),
                WaitOutcome::Ready(_) | WaitOutcome::TimedOut => {
                    self.full = false;
                    Ok(())
                }
            };
        }
        // Waits for exactly the room the oldest waiting run needs.
        let k = self.per_record.min(self.held.len() - self.staged);
        let run = VecOf(&self.held[self.staged..self.staged + k]);
        match self
            .producer
            .push_as_until(&run, None, || control.is_aborted())
        {
            Ok(()) => {
                self.staged += k;
                if self.staged == self.held.len() {
                    self.all_staged();
                }
                Ok(())
            }
            Err(PushError::Full) => Ok(()),
            // Too large even alone in the ring: smaller runs, at the flush.
            Err(PushError::Record(RecordError::TooLarge { .. })) if k > 1 => {
                self.per_record = k / 2;
                self.full = false;
                Ok(())
            }
            Err(PushError::Record(e)) => Err(self.fail(e)),
            Err(PushError::Abandoned | PushError::Interrupted) => Err(StageExit::Aborted),
        }
    }
}

/// The input of a stage from a record ring, with the stage name for errors.
pub(crate) struct ShmInbox<T> {
    consumer: RecordConsumer<Vec<T>>,
    stage: String,
}

impl<T> ShmInbox<T> {
    pub(crate) fn new(consumer: RecordConsumer<Vec<T>>, stage: &str) -> Self {
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

    /// Takes whole records until at least `n` items (see
    /// [`RecordConsumer::pop_items`]), releasing them with one store. Unlike
    /// the in-process ring it hands every item of a record on even if `each`
    /// asks to stop, so a congested stage may hold up to one record's
    /// outputs beyond the ring's room (still bounded).
    fn take(&mut self, n: usize, mut each: impl FnMut(T) -> bool) -> Result<usize, StageExit> {
        match self.consumer.pop_items(n, |item| {
            each(item);
        }) {
            Ok(taken) => Ok(taken),
            Err(PopError::Empty | PopError::Closed | PopError::Interrupted) => Ok(0),
            Err(PopError::Record(e)) => Err(self.fail(e)),
        }
    }
}
