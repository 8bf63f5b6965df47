//! The stage loops' transports over shared-memory record rings: what a
//! worker process reads and writes, and what the source and sink threads use
//! while the pipeline is distributed.

use crate::error::Error;
use crate::item::Item;
use crate::port::{interrupted, Emit, Inbox, Outbox, StageExit};
use ringweave_ipc::control::StageControl;
use ringweave_ipc::futex;
use ringweave_ipc::record::{RecordError, VecOf};
use ringweave_ipc::record_ring::{
    PopError, PushError, RecordConsumer, RecordProducer, WaitOutcome,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The source's replay log, when the run can recover from a crash.
    log: Option<ReplayLog<T>>,
    /// Items the log can still take (`usize::MAX` without a log): held
    /// items count against it, so the log never exceeds its bound.
    log_room: usize,
}

/// What the source sent since the last completed checkpoint (crash
/// recovery): every item staged into the ring, in order, moved here instead
/// of dropped. Bounded: once it holds `bound` items the outbox is congested
/// and the source waits — for the checkpoint that empties it.
pub(crate) struct ReplayLog<T> {
    /// The runs archived, in order: each is the outbox's whole `held`
    /// vector, moved here rather than copied.
    runs: Vec<Vec<T>>,
    /// Items in `runs`.
    len: usize,
    /// Emptied runs, given back to `held` so that logging allocates nothing
    /// once warm.
    spare: Vec<Vec<T>>,
    bound: usize,
    /// `items.len()`, for the coordinator, which starts a checkpoint when
    /// the log is half full.
    fill: Arc<AtomicUsize>,
    /// The largest `items.len()` seen (the bench checks the bound).
    peak: Arc<AtomicUsize>,
    half_full: Arc<dyn Fn() + Send + Sync>,
}

/// A run of the replay log shorter than this is copied onto the last one
/// (if that is shorter than `LONG_RUN`) instead of moved in whole.
const SHORT_RUN: usize = 256;
const LONG_RUN: usize = 4096;

/// How a source's output keeps its replay log: the bound, the two
/// counters the coordinator reads, and how to tell it the log is half full.
#[derive(Clone)]
pub(crate) struct LogConfig {
    pub bound: usize,
    pub fill: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
    /// Called when the log reaches half its bound: the coordinator starts a
    /// checkpoint now rather than at its next tick, by which time a fast
    /// source could have filled the log and be waiting.
    pub half_full: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("bound", &self.bound)
            .field("fill", &self.fill)
            .finish_non_exhaustive()
    }
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
            log: None,
            log_room: usize::MAX,
        }
    }

    fn fail(&self, error: RecordError) -> StageExit {
        StageExit::Failed(Error::Record {
            stage: self.stage.clone(),
            source: error,
        })
    }

    /// Keeps what is staged in a replay log instead of dropping it.
    pub(crate) fn keep_log(&mut self, config: &LogConfig) {
        self.log = Some(ReplayLog {
            runs: Vec::new(),
            len: 0,
            spare: Vec::new(),
            bound: config.bound,
            fill: Arc::clone(&config.fill),
            peak: Arc::clone(&config.peak),
            half_full: Arc::clone(&config.half_full),
        });
        self.log_room = config.bound;
    }

    /// A checkpoint completed (the stage is paused, nothing held): what the
    /// log holds is in the checkpoint now.
    pub(crate) fn checkpointed(&mut self) {
        if let Some(log) = &mut self.log {
            for mut run in log.runs.drain(..) {
                run.clear();
                log.spare.push(run);
            }
            log.len = 0;
            log.fill.store(0, Ordering::Relaxed);
            self.log_room = log.bound;
            self.full = false;
        }
    }

    /// Everything sent since the last checkpoint and everything held, in
    /// order, leaving both empty: what a recovery sends again.
    pub(crate) fn take_replay(&mut self) -> Vec<T> {
        let mut items = match &mut self.log {
            Some(log) => {
                log.fill.store(0, Ordering::Relaxed);
                self.log_room = log.bound;
                let mut items = Vec::with_capacity(log.len + self.held.len());
                for mut run in log.runs.drain(..) {
                    items.append(&mut run);
                    log.spare.push(run);
                }
                log.len = 0;
                items
            }
            None => Vec::new(),
        };
        items.append(&mut self.held);
        self.staged = 0;
        self.full = false;
        items
    }

    /// Holds `items` to be sent before anything emitted next (a recovery's
    /// replay; the stage is paused and holds nothing).
    pub(crate) fn replay(&mut self, mut items: Vec<T>) {
        items.append(&mut self.held);
        self.held = items;
        self.staged = 0;
    }

    /// Whether the replay log is at its bound.
    fn log_full(&self) -> bool {
        self.log_room == 0
    }

    /// Waits, with the log full and nothing else held, for the checkpoint
    /// that empties it: the source pauses at the next pause request.
    #[cold]
    fn await_checkpoint(&mut self, control: &StageControl) -> Result<(), StageExit> {
        loop {
            let word = control
                .cmd_word()
                .load(std::sync::atomic::Ordering::Relaxed);
            if control.interrupted() {
                interrupted(control)?;
            }
            if !self.log_full() {
                self.full = false;
                return Ok(());
            }
            // The coordinator wakes this word with every pause request; the
            // timeout is only a safety net.
            let until = Instant::now() + Duration::from_millis(50);
            let _ = futex::wait_until(control.cmd_word(), word, Some(until));
        }
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

    /// Every held item is in the ring: drop them (or log them) and take
    /// outputs again.
    fn all_staged(&mut self) {
        self.staged = 0;
        self.full = false;
        match &mut self.log {
            None => self.held.clear(),
            Some(log) => {
                let half = log.bound / 2;
                let crossed = log.len < half && log.len + self.held.len() >= half;
                log.len += self.held.len();
                match log.runs.last_mut() {
                    // A short run (a low rate) joins the last one: copying
                    // a few items beats one vector per item.
                    Some(last) if self.held.len() < SHORT_RUN && last.len() < LONG_RUN => {
                        last.append(&mut self.held);
                    }
                    _ => {
                        let spare = log.spare.pop().unwrap_or_default();
                        log.runs.push(std::mem::replace(&mut self.held, spare));
                    }
                }
                let len = log.len;
                log.fill.store(len, Ordering::Relaxed);
                log.peak.fetch_max(len, Ordering::Relaxed);
                if crossed {
                    (log.half_full)();
                }
                self.log_room = log.bound.saturating_sub(len);
                // Congested until a checkpoint empties the log.
                self.full = self.log_full();
            }
        }
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
        // The last term is false without a log (`log_room` is `usize::MAX`).
        self.full || self.error.is_some() || self.held.len() >= self.log_room
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
            if self.full && self.log_full() {
                return self.await_checkpoint(control);
            }
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
                .wait_for_space(want, None, || control.pause_forced())
            {
                WaitOutcome::Closed => Err(StageExit::Aborted),
                WaitOutcome::Interrupted => forced_pause(control),
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
            .push_as_until(&run, None, || control.pause_forced())
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
            Err(PushError::Interrupted) => forced_pause(control),
            Err(PushError::Abandoned) => Err(StageExit::Aborted),
        }
    }
}

/// A wait for room was interrupted: by an abort, or by a forced pause
/// request (a recovery), which the stage accepts holding its outputs.
#[cold]
fn forced_pause(control: &StageControl) -> Result<(), StageExit> {
    if control.is_aborted() {
        return Err(StageExit::Aborted);
    }
    interrupted(control)
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
    fn drained(&mut self) -> bool {
        self.consumer.readable_bytes() == 0
    }
}
