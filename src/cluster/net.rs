//! The two ends of a network edge, as the engine sees them: what the sink
//! stage ending the sending host's segment delivers to ([`Outgoing`]: its
//! items leave as numbered runs) and the feed of the source that starts the
//! receiving host's segment ([`NetFeed`], which validates each run and
//! writes its items into the source's output).
//!
//! Everything between them — the Zenoh session, key expressions, host
//! liveness — is `cluster/mod.rs`'s; these only see a [`Wire`] to send on
//! and a ring of received messages, so the stage loops stay synchronous.

use super::wire::{self, RunDecoder, RunEncoder, Tag};
use crate::item::Item;
use crate::latency::Stamps;
use crate::port::StageExit;
use crate::port::{await_room, boundary, drain, exit_of, interrupted, Outbox};
use crate::source::Feed;
use crate::stage::{Ctx, Deliver, Tally};
use crate::Error;
use ringweave_ipc::control::StageControl;
use ringweave_ipc::ring::{Consumer, RingWaker, WaitOutcome};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use zenoh::bytes::ZBytes;

/// Where a sending end puts its messages (a Zenoh publisher; a channel in
/// unit tests). `send` may wait for the receiver's credit: that is the
/// edge's backpressure.
pub(crate) trait Wire: Send {
    /// Sends one message; `interrupt()` ends a wait for credit.
    fn send(&mut self, message: Vec<u8>, interrupt: &dyn Fn() -> bool) -> Result<(), SendError>;
}

/// Why a message was not sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// `interrupt()` said so while it waited for credit.
    Interrupted,
    /// The transport failed, or the host's run is over.
    Failed(String),
}

/// What one end of an edge moved, for the report (written by the end's
/// thread, read by the host's; Relaxed: counters read after a join or as
/// a snapshot).
#[derive(Debug, Default)]
pub(crate) struct EdgeCounters {
    pub items: AtomicU64,
    pub runs: AtomicU64,
    pub bytes: AtomicU64,
}

impl EdgeCounters {
    fn add(&self, items: usize, bytes: usize) {
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Items on their way out of a network edge's sending end.
pub(crate) struct Outgoing<T> {
    /// The stage's name: `net→<the stage it feeds>`.
    pub name: String,
    /// This host's index, for errors.
    pub host: usize,
    /// The edge, for errors: `from → to (host h)`.
    pub edge: String,
    pub wire: Box<dyn Wire>,
    /// Items a run holds at most.
    pub run_items: usize,
    pub counters: Arc<EdgeCounters>,
    /// Items taken and not yet sent.
    pub held: Vec<T>,
    pub encoder: RunEncoder,
    /// Runs sent: the next run's number.
    pub runs: u64,
    /// Items sent.
    pub sent: u64,
}

impl<T: Item> Outgoing<T> {
    /// Sends what is held as one run; keeps it if interrupted.
    fn send_held(&mut self, interrupt: &dyn Fn() -> bool) -> Result<(), SendError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let message = self
            .encoder
            .encode(self.runs, &self.held)
            .map_err(SendError::Failed)?;
        let bytes = message.len();
        self.wire.send(message, interrupt)?;
        self.counters.add(self.held.len(), bytes);
        self.runs += 1;
        self.sent += self.held.len() as u64;
        self.held.clear();
        Ok(())
    }

    fn failed(&self, error: SendError) -> StageExit {
        match error {
            SendError::Interrupted => StageExit::Aborted,
            SendError::Failed(reason) => StageExit::Failed(Error::Cluster {
                host: self.host,
                reason: format!("network edge {}: {reason}", self.edge),
            }),
        }
    }
}

impl<T: Item> Deliver<T> for Outgoing<T> {
    fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn deliver(&mut self, item: T) {
        self.held.push(item);
    }

    /// Sends what is held, then the end of the stream; only an abort
    /// interrupts it.
    fn finish(&mut self, control: &StageControl) -> Result<(), StageExit> {
        let aborted = || control.is_aborted();
        self.send_held(&aborted).map_err(|e| self.failed(e))?;
        let end = wire::message(Tag::End, self.runs, &self.sent.to_le_bytes());
        self.wire.send(end, &aborted).map_err(|e| self.failed(e))
    }

    // A run leaves when it is full, when the input has nothing more for
    // now, or when the barrier calls: at low rates every item travels
    // alone, under load the runs fill up. A wait for credit gives way to
    // the barrier: the stage then pauses holding its run (it stays in
    // this process; `position` counts those items as delivered, and they
    // go first when it resumes).
    fn after_batch(
        &mut self,
        more: impl FnOnce() -> bool,
        control: &StageControl,
    ) -> Result<(), StageExit> {
        if self.held.len() < self.run_items && !control.interrupted() && more() {
            return Ok(());
        }
        match self.send_held(&|| control.interrupted()) {
            Ok(()) => Ok(()),
            Err(SendError::Interrupted) => interrupted(control),
            Err(failed) => Err(self.failed(failed)),
        }
    }
}

/// The end of an edge's stream arrived: what came over it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Complete {
    pub runs: u64,
    pub items: u64,
}

/// What the receiving end of an edge is made of, whatever its item type.
pub(crate) struct NetIn {
    /// The edge, for errors.
    pub edge: String,
    /// The sending host.
    pub peer: usize,
    /// Filled by the Zenoh callback.
    pub messages: Consumer<ZBytes>,
    /// Set by the callback if a message found the ring full (a sender
    /// that ignored its credit).
    pub overflow: Arc<AtomicBool>,
    /// Lets the sender have sent this many runs in all.
    pub grant: Box<dyn FnMut(u64) + Send>,
    /// Runs granted ahead of what was read (`wire::window`).
    pub window: u64,
    /// Told once the end of the stream has arrived.
    pub complete: Box<dyn FnMut(Complete) + Send>,
    pub counters: Arc<EdgeCounters>,
}

impl<T> NetFeed<T> {
    /// The feed of `input`'s edge.
    pub(crate) fn new(input: NetIn) -> Self {
        Self {
            input,
            decoder: RunDecoder::default(),
            pending: Vec::new().into_iter(),
            runs: 0,
            items: 0,
            ended: false,
        }
    }
}

/// The receiving end of a network edge: the feed of the receiving
/// segment's source. Messages arrive in a ring (filled by the Zenoh
/// callback, which never waits: the credit it grants bounds them), are
/// validated and numbered here, and their items go straight into the
/// source's output — no thread or ring between the wire and the segment.
pub(crate) struct NetFeed<T> {
    pub input: NetIn,
    pub decoder: RunDecoder,
    /// The items of the current run not yet handed on.
    pub pending: std::vec::IntoIter<T>,
    pub runs: u64,
    pub items: u64,
    /// The end of the stream was read: a source restarted after a
    /// recovery (which replays what it sent) finishes again at once.
    pub ended: bool,
}

/// What the next message held.
enum Next<T> {
    Run(Vec<T>),
    End,
}

impl<T: Item> NetFeed<T> {
    /// Waits for the next message, interruptibly, and reads it.
    fn next(&mut self, control: &StageControl) -> Result<Next<T>, StageExit> {
        loop {
            if let Ok(message) = self.input.messages.pop() {
                return self
                    .read(&message.to_bytes())
                    .map_err(|reason| self.failed(reason));
            }
            self.check_overflow()?;
            match self
                .input
                .messages
                .wait_for_items(1, None, || control.interrupted())
            {
                WaitOutcome::Ready(_) | WaitOutcome::TimedOut => {}
                // The subscription is gone: the host's run is over.
                WaitOutcome::Closed => {
                    self.check_overflow()?;
                    return Err(StageExit::Aborted);
                }
                WaitOutcome::Interrupted => interrupted(control)?,
            }
        }
    }

    /// A message found the ring full (the sender ignored its credit).
    fn check_overflow(&self) -> Result<(), StageExit> {
        // Acquire: pairs with the callback's Release store, made before it
        // wakes this ring's reader.
        if self.input.overflow.load(Ordering::Acquire) {
            return Err(self.failed(format!(
                "more than {} runs arrived beyond the credit granted",
                self.input.window
            )));
        }
        Ok(())
    }

    fn read(&mut self, bytes: &[u8]) -> Result<Next<T>, String> {
        let header = wire::header(bytes)?;
        if header.seq != self.runs {
            return Err(format!(
                "{:?} number {} arrived where number {} was due \
                 (the transport lost, duplicated or reordered data)",
                header.tag, header.seq, self.runs
            ));
        }
        match header.tag {
            Tag::Run => {
                let run = self.decoder.decode::<T>(bytes)?;
                self.input.counters.add(run.len(), bytes.len());
                self.items += run.len() as u64;
                self.runs += 1;
                // Half a window at a time: one credit message per eight
                // runs, and the sender never runs dry while this keeps up.
                if self.runs % (self.input.window / 2) == 0 {
                    (self.input.grant)(self.runs + self.input.window);
                }
                Ok(Next::Run(run))
            }
            Tag::End => {
                let sent = wire::body_u64(bytes)?;
                if sent != self.items {
                    return Err(format!(
                        "the sender ended after {sent} items, {} arrived",
                        self.items
                    ));
                }
                Ok(Next::End)
            }
            other => Err(format!("a {other:?} message on a data key")),
        }
    }

    fn failed(&self, reason: String) -> StageExit {
        StageExit::Failed(Error::Cluster {
            host: self.input.peer,
            reason: format!("edge {}: {reason}", self.input.edge),
        })
    }
}

impl<T: Item> Feed<T> for NetFeed<T> {
    fn run<O: Outbox<T>>(
        &mut self,
        out: &mut O,
        tally: &mut Tally,
        _stamps: &mut Stamps,
        ctx: &Ctx<'_>,
    ) -> StageExit {
        let control = ctx.control;
        exit_of((|| loop {
            // Nothing is emitted into a congested outbox: what waits there
            // goes first (a shared-memory outbox bounds the replay log so).
            drain(out, control)?;
            if self.pending.len() == 0 {
                if self.ended {
                    return Err(StageExit::Finished);
                }
                boundary(control)?;
                match self.next(control)? {
                    Next::Run(run) => self.pending = run.into_iter(),
                    Next::End => {
                        self.ended = true;
                        (self.input.complete)(Complete {
                            runs: self.runs,
                            items: self.items,
                        });
                        continue;
                    }
                }
            }
            // The run's items go on as the source's batches: straight into
            // free slots of an in-process ring, or through the outbox.
            let moved = if let Some(ring) = out.ring() {
                if ring.slots() == 0 {
                    await_room(ring, control)?;
                    continue;
                }
                ring.push_from_iter(&mut self.pending)
            } else {
                let before = self.pending.len();
                for item in self.pending.by_ref().take(ctx.batch) {
                    out.emit(item);
                    if out.is_congested() {
                        break;
                    }
                }
                out.flush()?;
                before - self.pending.len()
            };
            tally.items_out += moved as u64;
            control.record(tally.items_in, tally.items_out);
        })())
    }

    fn waker(&self) -> Option<RingWaker> {
        Some(self.input.messages.waker())
    }
}
