//! Stage logic and the loops that run it over in-process rings.
//!
//! A stage is an [`Operator`] (what `map`, `filter`, `flat_map` and
//! `stateful` build) plus its two ends. The loop takes a batch of inputs with
//! one acquire, runs the operator on each item, writes outputs straight into
//! the free slots of the output ring and publishes them with one store per
//! batch ([`RingOutbox`]). Between batches — and while it waits for input or
//! for room — it checks its [`StageControl`] word, so the switch barrier can
//! stop it at a point where no item is half-processed.

use crate::control::StageControl;
use crate::ring::{Consumer, Producer, RingWaker, WaitOutcome};
use std::any::Any;
use std::collections::VecDeque;

/// Where an operator puts its outputs.
pub(crate) trait Emit<T> {
    /// Hands one output on. Never blocks: what does not fit is kept in order.
    fn emit(&mut self, item: T);
}

/// The per-item logic of a transform stage.
pub(crate) trait Operator<In, Out>: Send + 'static {
    /// Processes one input, emitting zero or more outputs in order.
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E);
}

/// `map`: exactly one output per input.
pub(crate) struct MapOp<F>(pub F);

impl<In, Out, F> Operator<In, Out> for MapOp<F>
where
    F: Fn(In) -> Out + Send + 'static,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        out.emit((self.0)(item));
    }
}

/// `filter`: the input itself, or nothing.
pub(crate) struct FilterOp<F>(pub F);

impl<T, F> Operator<T, T> for FilterOp<F>
where
    F: Fn(&T) -> bool + Send + 'static,
{
    #[inline]
    fn process<E: Emit<T>>(&mut self, item: T, out: &mut E) {
        if (self.0)(&item) {
            out.emit(item);
        }
    }
}

/// `flat_map`: any number of outputs per input.
pub(crate) struct FlatMapOp<F>(pub F);

impl<In, Out, I, F> Operator<In, Out> for FlatMapOp<F>
where
    F: Fn(In) -> I + Send + 'static,
    I: IntoIterator<Item = Out>,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        for output in (self.0)(item) {
            out.emit(output);
        }
    }
}

/// `stateful`: explicit state threaded through every call.
pub(crate) struct StatefulOp<S, F> {
    pub state: S,
    pub f: F,
}

impl<In, Out, S, F> Operator<In, Out> for StatefulOp<S, F>
where
    S: Send + 'static,
    F: Fn(&mut S, In) -> Option<Out> + Send + 'static,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        if let Some(output) = (self.f)(&mut self.state, item) {
            out.emit(output);
        }
    }
}

/// The output end of an in-process stage: stages writes in the output ring's
/// free slots and publishes them with one store.
///
/// Outputs that do not fit go to `pending`, in order; they come after
/// everything in the ring, and the stage takes no more input until they are
/// out. `pending` therefore holds at most one input's outputs beyond the
/// ring's free space, so memory stays bounded.
pub(crate) struct RingOutbox<T> {
    producer: Producer<T>,
    /// Written, not yet published. Invariant: `staged <= room`.
    staged: usize,
    /// Free slots counted from the publish point, as last seen.
    room: usize,
    /// Outputs that did not fit, oldest first. Non-empty only while
    /// `staged == room` was last seen.
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

    /// Whether outputs are waiting for room in the ring.
    #[inline]
    pub(crate) fn is_congested(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Publishes what is staged, then moves what fits from `pending` into the
    /// ring and publishes that too.
    #[inline]
    pub(crate) fn flush(&mut self) {
        if self.staged > 0 {
            self.producer.publish_staged(self.staged);
            self.room -= self.staged;
            self.staged = 0;
        }
        if !self.pending.is_empty() {
            self.flush_pending();
        }
    }

    #[cold]
    fn flush_pending(&mut self) {
        self.room = self.producer.slots();
        let n = self.room.min(self.pending.len());
        for (offset, item) in self.pending.drain(..n).enumerate() {
            // SAFETY: `offset < n <= room`, the free-slot count just read, and
            // nothing is staged (flush published it).
            unsafe { self.producer.write_staged(offset, item) };
        }
        if n > 0 {
            self.producer.publish_staged(n);
            self.room -= n;
        }
    }

    /// Waits for room for the pending outputs (or some of them).
    pub(crate) fn wait_room(&mut self, interrupt: impl FnMut() -> bool) -> WaitOutcome {
        let want = self.pending.len().max(1);
        self.producer.wait_for_slots(want, None, interrupt)
    }

    /// Outputs not yet in the ring (staged ones are published first).
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn waker(&self) -> RingWaker
    where
        T: Send + 'static,
    {
        self.producer.waker()
    }
}

impl<T> Emit<T> for RingOutbox<T> {
    #[inline]
    fn emit(&mut self, item: T) {
        if self.staged < self.room && self.pending.is_empty() {
            // SAFETY: `staged < room`, the free-slot count last read, and
            // offsets are written in order once each before the next flush.
            unsafe { self.producer.write_staged(self.staged, item) };
            self.staged += 1;
        } else {
            self.emit_slow(item);
        }
    }
}

impl<T> RingOutbox<T> {
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
}

/// Why a stage loop returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StageExit {
    /// End of stream reached and every output delivered to the output ring.
    Finished,
    /// Stopped at the barrier; the stage can be resumed exactly where it was.
    Paused,
    /// The downstream end is gone (a later stage failed); outputs dropped.
    Aborted,
}

/// Batch and counter bookkeeping shared by the three loops.
#[derive(Default)]
pub(crate) struct Tally {
    /// Items taken from the input, ever (survives pauses).
    pub items_in: u64,
    /// Items handed to the output, ever.
    pub items_out: u64,
}

/// A stage as the executor sees it: type-erased, movable between threads.
pub(crate) trait ErasedStage: Send {
    /// The stage's name (`source` and `sink` for those).
    fn name(&self) -> &str;
    /// Runs on the calling thread until end of stream, a pause or an abort.
    fn run(&mut self, control: &StageControl, batch: usize) -> StageExit;
    /// Gives the stage its input end (a boxed `Consumer<In>`).
    fn set_input(&mut self, input: Box<dyn Any + Send>);
    /// Gives the stage its output end (a boxed `Producer<Out>`).
    fn set_output(&mut self, output: Box<dyn Any + Send>);
    /// Items in and out so far.
    fn tally(&self) -> (u64, u64);
}

/// Waits until the outbox has room for all its pending outputs, or the
/// barrier or an abort interrupts. `None` means: carry on.
fn drain_congestion<T>(out: &mut RingOutbox<T>, control: &StageControl) -> Option<StageExit> {
    while out.is_congested() {
        out.flush();
        if !out.is_congested() {
            break;
        }
        match out.wait_room(|| control.pause_requested()) {
            WaitOutcome::Ready(_) => {}
            WaitOutcome::Closed => return Some(StageExit::Aborted),
            WaitOutcome::Interrupted | WaitOutcome::TimedOut => {
                if control.try_pause() {
                    return Some(StageExit::Paused);
                }
            }
        }
    }
    None
}

/// Waits for input. `Ok(n)`: `n >= 1` items readable. `Err(exit)`: stop.
fn await_input<T>(input: &mut Consumer<T>, control: &StageControl) -> Result<usize, StageExit> {
    loop {
        match input.wait_for_items(1, None, || control.pause_requested()) {
            WaitOutcome::Ready(n) => return Ok(n),
            WaitOutcome::Closed => return Err(StageExit::Finished),
            WaitOutcome::Interrupted | WaitOutcome::TimedOut => {
                if control.try_pause() {
                    return Err(StageExit::Paused);
                }
            }
        }
    }
}

/// Finishes a stage whose input ended: every pending output into the ring.
fn finish<T>(out: &mut RingOutbox<T>, control: &StageControl) -> StageExit {
    drain_congestion(out, control).unwrap_or(StageExit::Finished)
}

/// The source: pulls from the user's iterator.
pub(crate) struct SourceStage<T, I> {
    pub iter: I,
    pub output: Option<RingOutbox<T>>,
    pub tally: Tally,
}

impl<T, I> ErasedStage for SourceStage<T, I>
where
    T: Send + 'static,
    I: Iterator<Item = T> + Send + 'static,
{
    fn name(&self) -> &str {
        "source"
    }

    fn run(&mut self, control: &StageControl, batch: usize) -> StageExit {
        let Some(out) = self.output.as_mut() else {
            return StageExit::Aborted;
        };
        loop {
            if let Some(exit) = drain_congestion(out, control) {
                return exit;
            }
            if control.pause_requested() && control.try_pause() {
                return StageExit::Paused;
            }
            let mut produced = 0;
            let mut ended = false;
            while produced < batch {
                match self.iter.next() {
                    Some(item) => {
                        out.emit(item);
                        produced += 1;
                        if out.is_congested() {
                            break;
                        }
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            out.flush();
            self.tally.items_out += produced as u64;
            control.record(self.tally.items_in, self.tally.items_out);
            if ended {
                return finish(out, control);
            }
        }
    }

    fn set_input(&mut self, _input: Box<dyn Any + Send>) {
        unreachable!("the source has no input")
    }

    fn set_output(&mut self, output: Box<dyn Any + Send>) {
        self.output = Some(RingOutbox::new(downcast(output)));
    }

    fn tally(&self) -> (u64, u64) {
        (self.tally.items_in, self.tally.items_out)
    }
}

/// A transform stage: `map`, `filter`, `flat_map` or `stateful`.
pub(crate) struct TransformStage<In, Out, Op> {
    pub name: String,
    pub op: Op,
    pub input: Option<Consumer<In>>,
    pub output: Option<RingOutbox<Out>>,
    pub tally: Tally,
}

impl<In, Out, Op> ErasedStage for TransformStage<In, Out, Op>
where
    In: Send + 'static,
    Out: Send + 'static,
    Op: Operator<In, Out>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, control: &StageControl, batch: usize) -> StageExit {
        let (Some(input), Some(out)) = (self.input.as_mut(), self.output.as_mut()) else {
            return StageExit::Aborted;
        };
        loop {
            if let Some(exit) = drain_congestion(out, control) {
                return exit;
            }
            if control.pause_requested() && control.try_pause() {
                return StageExit::Paused;
            }
            let available = match await_input(input, control) {
                Ok(n) => n,
                Err(StageExit::Finished) => return finish(out, control),
                Err(exit) => return exit,
            };
            let Ok(chunk) = input.read_chunk(available.min(batch)) else {
                continue;
            };
            let mut taken = 0u64;
            let mut emitted = Counting {
                inner: out,
                count: 0,
            };
            for item in chunk.into_iter() {
                self.op.process(item, &mut emitted);
                taken += 1;
                if emitted.inner.is_congested() {
                    break;
                }
            }
            let count = emitted.count;
            out.flush();
            self.tally.items_in += taken;
            self.tally.items_out += count;
            control.record(self.tally.items_in, self.tally.items_out);
        }
    }

    fn set_input(&mut self, input: Box<dyn Any + Send>) {
        self.input = Some(downcast(input));
    }

    fn set_output(&mut self, output: Box<dyn Any + Send>) {
        self.output = Some(RingOutbox::new(downcast(output)));
    }

    fn tally(&self) -> (u64, u64) {
        (self.tally.items_in, self.tally.items_out)
    }
}

/// Counts what an operator emits on its way into the outbox.
struct Counting<'a, T> {
    inner: &'a mut RingOutbox<T>,
    count: u64,
}

impl<T> Emit<T> for Counting<'_, T> {
    #[inline]
    fn emit(&mut self, item: T) {
        self.count += 1;
        self.inner.emit(item);
    }
}

/// The sink: hands every item to the user's closure.
pub(crate) struct SinkStage<T, F> {
    pub f: F,
    pub input: Option<Consumer<T>>,
    pub tally: Tally,
}

impl<T, F> ErasedStage for SinkStage<T, F>
where
    T: Send + 'static,
    F: FnMut(T) + Send + 'static,
{
    fn name(&self) -> &str {
        "sink"
    }

    fn run(&mut self, control: &StageControl, batch: usize) -> StageExit {
        let Some(input) = self.input.as_mut() else {
            return StageExit::Aborted;
        };
        loop {
            if control.pause_requested() && control.try_pause() {
                return StageExit::Paused;
            }
            let available = match await_input(input, control) {
                Ok(n) => n,
                Err(exit) => return exit,
            };
            let Ok(chunk) = input.read_chunk(available.min(batch)) else {
                continue;
            };
            let n = chunk.len() as u64;
            for item in chunk.into_iter() {
                (self.f)(item);
            }
            self.tally.items_in += n;
            control.record(self.tally.items_in, self.tally.items_in);
        }
    }

    fn set_input(&mut self, input: Box<dyn Any + Send>) {
        self.input = Some(downcast(input));
    }

    fn set_output(&mut self, _output: Box<dyn Any + Send>) {
        unreachable!("the sink has no output")
    }

    fn tally(&self) -> (u64, u64) {
        (self.tally.items_in, self.tally.items_in)
    }
}

/// Unboxes a ring end built for this stage's item type. The executor builds
/// each edge from the same typed spec as the two stages it joins, so a
/// mismatch is a bug in ringweave, not in user code.
fn downcast<E: 'static>(end: Box<dyn Any + Send>) -> E {
    match end.downcast::<E>() {
        Ok(end) => *end,
        Err(_) => unreachable!(
            "ring end of the wrong type: expected {}",
            std::any::type_name::<E>()
        ),
    }
}
