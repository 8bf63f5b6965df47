//! Live input: the user's own thread pushes items into a running pipeline.

use crate::error::Error;
use crate::port::{interrupted, StageExit};
use ringweave_ipc::control::StageControl;
use ringweave_ipc::ring::{Producer, PushError, WaitOutcome};
use std::fmt;
use std::time::Duration;

/// The push end of a pipeline made by
/// [`Pipeline::with_input`](crate::Pipeline::with_input): a single-producer
/// handle that the user owns and pushes into from their own thread.
///
/// It is the producer of an in-process SPSC ring of
/// [`DEFAULT_RING_CAPACITY`](crate::DEFAULT_RING_CAPACITY) items whose
/// consumer is the pipeline's source stage. Pushing moves the item into a
/// slot (no allocation, no serialization); when the ring is full, `push`
/// waits as the rings do (spin, yield, park) until the pipeline takes
/// items: backpressure reaches the user's thread.
///
/// Dropping the `Input` ends the stream: the pipeline drains what was
/// pushed and finishes, and `PipelineHandle::join` returns the report.
///
/// The source stage waits on this ring interruptibly, so an idle input
/// never holds up a switch. Once the run has ended or failed (or the
/// pipeline was dropped without running), every push fails at once.
///
/// # Examples
///
/// ```
/// use ringweave::Pipeline;
///
/// let (mut input, pipeline) = Pipeline::<u64>::with_input();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let handle = pipeline
///     .map("square", |x| x * x)
///     .sink(move |x| tx.send(x).unwrap())
///     .spawn()?;
/// for x in 0..100 {
///     input.push(x)?;
/// }
/// drop(input); // end of stream
/// let report = handle.join()?;
/// assert_eq!(report.items_delivered, 100);
/// assert_eq!(rx.try_iter().collect::<Vec<_>>(), (0..100).map(|x| x * x).collect::<Vec<_>>());
/// # Ok::<(), ringweave::Error>(())
/// ```
pub struct Input<T> {
    producer: Producer<T>,
}

impl<T> fmt::Debug for Input<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input")
            .field("capacity", &self.producer.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Input<T> {
    pub(crate) fn new(producer: Producer<T>) -> Self {
        Self { producer }
    }

    /// Pushes `item`, waiting while the pipeline's input ring is full.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] at once if the run has ended or failed, or the
    /// pipeline was dropped (the item is dropped); also if that happens
    /// while this waits.
    pub fn push(&mut self, item: T) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::NotRunning);
        }
        self.producer
            .push_blocking(item)
            .map_err(|_| Error::NotRunning)
    }

    /// Pushes `item` if there is room now, without waiting.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] with the item when the ring is full;
    /// [`PushError::Abandoned`] with the item once the run has ended or
    /// failed.
    pub fn try_push(&mut self, item: T) -> Result<(), PushError<T>> {
        if self.is_closed() {
            return Err(PushError::Abandoned(item));
        }
        self.producer.push(item)
    }

    /// Pushes `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] with the item if no room came within `timeout`;
    /// [`PushError::Abandoned`] with the item once the run has ended or
    /// failed.
    pub fn push_timeout(&mut self, item: T, timeout: Duration) -> Result<(), PushError<T>> {
        if self.is_closed() {
            return Err(PushError::Abandoned(item));
        }
        self.producer.push_timeout(item, timeout)
    }

    /// Whether the pipeline has stopped taking input (its run ended or
    /// failed, or it was dropped): every push fails from now on.
    pub fn is_closed(&self) -> bool {
        self.producer.is_abandoned()
    }

    /// Items the input ring holds.
    pub fn capacity(&self) -> usize {
        self.producer.capacity()
    }

    /// Waits until the ring has room, interruptibly: `Ok(free slots)`, or
    /// `Err` when the barrier pauses the stage (or an abort stops it) while
    /// it waits, or the reading pipeline is gone (`Aborted`). For a tee,
    /// which pushes into its branch's input.
    pub(crate) fn await_room(&mut self, control: &StageControl) -> Result<usize, StageExit> {
        loop {
            let free = self.producer.slots();
            if free > 0 {
                return Ok(free);
            }
            // The barrier does not know this ring's waker: a parked wait
            // ends when the branch frees a slot (one item's time), and
            // then sees the request.
            match self
                .producer
                .wait_for_slots(1, None, || control.interrupted())
            {
                WaitOutcome::Ready(free) => return Ok(free),
                WaitOutcome::Closed => return Err(StageExit::Aborted),
                WaitOutcome::Interrupted => interrupted(control)?,
                WaitOutcome::TimedOut => {}
            }
        }
    }
}
