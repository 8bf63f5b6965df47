//! The ports of a stage loop: what it reads from ([`Inbox`]) and writes to
//! ([`Outbox`]), whatever the medium (an in-process ring, a shared-memory
//! record ring), and the barrier checks every loop makes between batches.
//! The stage loops (`stage.rs`, `source.rs`) are generic over these; the
//! media implement them (`heap.rs` for the in-process ring, `shm.rs` for
//! record rings), and a stage holds one of each per side in a
//! `transport::Rx`/`Tx`.

use crate::error::Error;
use ringweave_ipc::control::StageControl;
use ringweave_ipc::ring::{Consumer, Producer, WaitOutcome};

/// Where an operator puts its outputs.
pub(crate) trait Emit<T> {
    /// Hands one output on. Never blocks: what does not fit is kept in order.
    fn emit(&mut self, item: T);
}

/// Why a stage loop returned.
#[derive(Debug)]
pub(crate) enum StageExit {
    /// End of stream reached and every output delivered to the output ring.
    Finished,
    /// Stopped at the barrier with nothing half-done and no output waiting:
    /// the stage can be resumed, or moved, exactly where it was.
    Paused,
    /// The downstream end is gone (a later stage failed); outputs dropped.
    Aborted,
    /// The transport failed (a record that does not fit or does not
    /// validate); the error names the stage.
    Failed(Error),
}

/// The input side of a stage loop: an in-process ring or a record ring.
pub(crate) trait Inbox<T> {
    /// Waits for input. `Ok(n)`: at least `n >= 1` items are readable.
    /// `Err(Finished)` at the end of the stream, `Err(Paused)` when the
    /// barrier was accepted while waiting.
    fn await_items(&mut self, control: &StageControl) -> Result<usize, StageExit>;

    /// Takes up to `n` items (at most what `await_items` returned), oldest
    /// first, handing each to `each`, and returns how many. After an item
    /// for which `each` returns `false` an in-process inbox stops there; a
    /// shared-memory inbox, which releases whole records (runs of items),
    /// hands on all `n` anyway, so a caller that wanted to stop because its
    /// outbox is congested finds up to `n` (at most one batch) more in that
    /// outbox's backlog, in order. Either releases what it took with one
    /// store.
    fn take(&mut self, n: usize, each: impl FnMut(T) -> bool) -> Result<usize, StageExit>;
    /// Whether nothing is readable right now (without waiting).
    fn drained(&mut self) -> bool;

    /// The in-process ring behind this input, for batch paths.
    fn ring(&mut self) -> Option<&mut Consumer<T>> {
        None
    }
}

/// The output side of a stage loop.
pub(crate) trait Outbox<T>: Emit<T> {
    /// Whether outputs are waiting for room; the loop takes no input then.
    fn is_congested(&self) -> bool;
    /// Publishes what was emitted and moves waiting outputs in as far as
    /// they fit.
    fn flush(&mut self) -> Result<(), StageExit>;
    /// Whether the consumer has taken everything published: a source
    /// holding items back to fill a batch should publish them now.
    fn consumer_idle(&self) -> bool;
    /// Waits until the output has room for some waiting outputs.
    /// `Err(Aborted)` if its consumer is gone or the run is torn down. Not
    /// interruptible by the barrier: a stage pauses only with nothing
    /// waiting (see [`run_transform`](crate::stage::run_transform)).
    fn wait_room(&mut self, control: &StageControl) -> Result<(), StageExit>;

    /// The in-process ring behind this output, for batch paths that write
    /// and publish slots themselves: only when nothing is staged or
    /// waiting, so their items go right after what is published.
    fn ring(&mut self) -> Option<&mut Producer<T>> {
        None
    }

    /// A buffer whose items the next `flush` sends on, after everything
    /// emitted before: batch paths push outputs here instead of emitting
    /// them one by one. `None` while congested, or if the outbox has none
    /// (the in-process outbox uses [`ring`](Self::ring)).
    fn buffer(&mut self) -> Option<&mut Vec<T>> {
        None
    }
}

/// Flushes until nothing waits for room. `Err(Aborted)` if the consumer is
/// gone or the run is torn down.
pub(crate) fn drain<T>(out: &mut impl Outbox<T>, control: &StageControl) -> Result<(), StageExit> {
    loop {
        out.flush()?;
        if !out.is_congested() {
            return Ok(());
        }
        out.wait_room(control)?;
    }
}

/// The barrier check at a batch boundary. Only called with nothing waiting
/// in the outbox, so a paused stage never holds an output: what it has
/// emitted is in its output ring, what it has not taken is in its input ring.
#[inline]
pub(crate) fn boundary(control: &StageControl) -> Result<(), StageExit> {
    if control.interrupted() {
        interrupted(control)?;
    }
    Ok(())
}

/// The head of every loop that reads an input (transforms, the input
/// source): flushes what waits for room, checks the barrier, then waits for
/// input. `Ok(n)`: at least `n >= 1` items are readable. At the end of the
/// stream it flushes what is left and returns `Err(Finished)`.
#[inline]
pub(crate) fn next_batch<In, Out>(
    input: &mut impl Inbox<In>,
    out: &mut impl Outbox<Out>,
    control: &StageControl,
) -> Result<usize, StageExit> {
    drain(out, control)?;
    boundary(control)?;
    match input.await_items(control) {
        Err(StageExit::Finished) => {
            drain(out, control)?;
            Err(StageExit::Finished)
        }
        result => result,
    }
}

/// Waits for a free slot in a full output ring. Nothing is waiting to be
/// published, so the barrier may stop the stage here.
#[cold]
pub(crate) fn await_room<T>(
    ring: &mut Producer<T>,
    control: &StageControl,
) -> Result<(), StageExit> {
    match ring.wait_for_slots(1, None, || control.interrupted()) {
        WaitOutcome::Closed => Err(StageExit::Aborted),
        WaitOutcome::Interrupted => interrupted(control),
        WaitOutcome::Ready(_) | WaitOutcome::TimedOut => Ok(()),
    }
}

/// A wait was interrupted: stop for an abort, pause for an accepted pause
/// request, carry on if the request was withdrawn meanwhile.
#[cold]
pub(crate) fn interrupted(control: &StageControl) -> Result<(), StageExit> {
    if control.is_aborted() {
        return Err(StageExit::Aborted);
    }
    if control.try_pause() {
        return Err(StageExit::Paused);
    }
    Ok(())
}

pub(crate) fn exit_of(result: Result<std::convert::Infallible, StageExit>) -> StageExit {
    match result {
        Ok(never) => match never {},
        Err(exit) => exit,
    }
}
