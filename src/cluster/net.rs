//! The two ends of a network edge, as the engine sees them: the stage that
//! ends the sending host's segment ([`NetSinkStage`], a sink whose items
//! leave as numbered runs) and the thread that feeds the receiving host's
//! segment ([`Ingress`], which validates each run and pushes its items into
//! the segment's source ring, as an [`Input`](crate::Input) would).
//!
//! Everything between them — the Zenoh session, key expressions, host
//! liveness — is `cluster/mod.rs`'s; these only see a [`Wire`] to send on
//! and a channel of received messages, so the stage loops stay synchronous
//! and the per-item path is the sink's and the input source's.

use super::wire::{self, RunDecoder, RunEncoder, Tag, WINDOW};
use crate::erased::{End, Erased, ErasedMut};
use crate::item::Item;
use crate::latency::{StampRx, StampTx, Stamps};
use crate::port::StageExit;
use crate::stage::{run_sink, shm_in, Ctx, Deliver, ErasedStage, Tally};
use crate::transport::{Rx, Transport};
use crate::Error;
use ringweave_ipc::ring::{Producer, WaitOutcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// Where a sending end puts its messages (a Zenoh publisher; a channel in
/// unit tests). `send` may block: that is the edge's backpressure.
pub(crate) trait Wire: Send {
    /// Sends one message.
    fn send(&mut self, message: Vec<u8>) -> Result<(), String>;
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
    /// Sends what is held as one run.
    fn send_held(&mut self) -> Result<(), StageExit> {
        if self.held.is_empty() {
            return Ok(());
        }
        let sent = self
            .encoder
            .encode(self.runs, &self.held)
            .and_then(|message| {
                let bytes = message.len();
                self.wire.send(message).map(|()| bytes)
            });
        match sent {
            Ok(bytes) => {
                self.counters.add(self.held.len(), bytes);
                self.runs += 1;
                self.sent += self.held.len() as u64;
                self.held.clear();
                Ok(())
            }
            Err(reason) => Err(self.failed(reason)),
        }
    }

    /// Sends what is held, then the end of the stream.
    fn finish(&mut self) -> Result<(), StageExit> {
        self.send_held()?;
        let end = wire::message(Tag::End, self.runs, &self.sent.to_le_bytes());
        self.wire.send(end).map_err(|reason| self.failed(reason))
    }

    fn failed(&self, reason: String) -> StageExit {
        StageExit::Failed(Error::Cluster {
            host: self.host,
            reason: format!("network edge {}: {reason}", self.edge),
        })
    }
}

impl<T: Item> Deliver<T> for Outgoing<T> {
    #[inline]
    fn deliver(&mut self, item: T) {
        self.held.push(item);
    }

    // A run leaves when the input has nothing more for now, the run is
    // full, or the barrier calls: at low rates every item travels alone,
    // under load the runs fill up.
    fn after_batch(&mut self, rest: usize, interrupted: bool) -> Result<(), StageExit> {
        if rest == 0 || interrupted || self.held.len() >= self.run_items {
            self.send_held()?;
        }
        Ok(())
    }
}

/// The last stage of a segment whose next stage runs on another host.
pub(crate) struct NetSinkStage<T> {
    /// `net→<stage>`: the stage it feeds.
    pub name: String,
    pub input: Rx<T>,
    pub tally: Tally,
    pub skip: u64,
    pub stamps: Stamps,
    pub out: Outgoing<T>,
}

impl<T: Item> ErasedStage for NetSinkStage<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, ctx: &Ctx<'_>) -> StageExit {
        let (out, tally, skip, stamps) = (
            &mut self.out,
            &mut self.tally,
            &mut self.skip,
            &mut self.stamps,
        );
        let exit = match self.input.active() {
            Some(Transport::Heap(input)) => run_sink(out, input, tally, skip, stamps, ctx),
            Some(Transport::Shm(input)) => run_sink(out, input, tally, skip, stamps, ctx),
            None => StageExit::Aborted,
        };
        let sent = match exit {
            StageExit::Finished => out.finish(),
            // A pause holds nothing back (see `after_batch`).
            StageExit::Paused => out.send_held(),
            StageExit::Aborted | StageExit::Failed(_) => Ok(()),
        };
        match sent {
            Ok(()) => exit,
            Err(failed) => failed,
        }
    }

    fn set_stamps(&mut self, rx: Option<StampRx>, tx: Option<StampTx>) {
        self.stamps.replace(rx, tx);
    }

    fn set_input(&mut self, input: Erased<End>) {
        self.input.set_heap(input.open());
    }

    fn set_output(&mut self, _output: Erased<End>) {
        unreachable!("a network edge's sending end has no ring output")
    }

    fn ring_input(&mut self) -> Option<ErasedMut<'_, End>> {
        self.input.heap_mut().map(ErasedMut::new)
    }

    fn ring_output(&mut self) -> Option<ErasedMut<'_, End>> {
        None
    }

    fn attach_shm(&mut self, input: Option<Erased<End>>, _output: Option<Erased<End>>) {
        if let Some(input) = input {
            self.input.attach(shm_in(input, &self.name));
        }
    }

    fn detach_shm(&mut self) {
        self.input.detach();
    }

    fn tally_mut(&mut self) -> &mut Tally {
        &mut self.tally
    }

    fn position(&self) -> Option<u64> {
        Some(self.tally.items_in - self.skip.min(self.tally.items_in))
    }

    fn rewind(&mut self, position: u64) {
        self.skip = self.tally.items_in.saturating_sub(position);
    }
}

/// A message received for an edge's receiving end.
pub(crate) enum Received {
    /// The bytes of one message, as Zenoh delivered them.
    Message(zenoh::bytes::ZBytes),
    /// Stop: the host's run is over (failed or torn down).
    Stop,
}

/// How an edge's receiving end ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IngressEnd {
    /// The sender's end of stream arrived and every item was handed on:
    /// the runs and items received.
    Complete { runs: u64, items: u64 },
    /// Told to stop, or the segment it feeds is gone.
    Stopped,
}

/// The receiving end of a network edge: runs from the wire into the ring
/// of the segment's source (an input source).
pub(crate) trait Ingress: Send {
    /// Receives until the end of the stream, a stop, or a failure (`Err`
    /// says what was wrong with what arrived).
    /// `grant(limit)`: lets the sender have sent `limit` runs in all
    /// (it starts with [`WINDOW`]).
    fn run(
        self: Box<Self>,
        received: Receiver<Received>,
        counters: &EdgeCounters,
        grant: &mut dyn FnMut(u64),
    ) -> Result<IngressEnd, String>;
}

/// The [`Ingress`] of an edge carrying `T`.
pub(crate) struct TypedIngress<T> {
    pub ring: Producer<T>,
}

impl<T: Item> Ingress for TypedIngress<T> {
    fn run(
        mut self: Box<Self>,
        received: Receiver<Received>,
        counters: &EdgeCounters,
        grant: &mut dyn FnMut(u64),
    ) -> Result<IngressEnd, String> {
        let mut decoder = RunDecoder::default();
        let (mut runs, mut items) = (0u64, 0u64);
        loop {
            let Ok(Received::Message(message)) = received.recv() else {
                return Ok(IngressEnd::Stopped);
            };
            let bytes = message.to_bytes();
            let header = wire::header(&bytes)?;
            if header.seq != runs {
                return Err(format!(
                    "{:?} number {} arrived where number {runs} was due \
                     (the transport lost, duplicated or reordered data)",
                    header.tag, header.seq
                ));
            }
            match header.tag {
                Tag::Run => {
                    let run = decoder.decode::<T>(&bytes)?;
                    counters.add(run.len(), bytes.len());
                    items += run.len() as u64;
                    runs += 1;
                    if !push_all(&mut self.ring, run) {
                        return Ok(IngressEnd::Stopped);
                    }
                    // Half a window at a time: one credit message per
                    // eight runs, and the sender never runs dry while
                    // this one keeps up.
                    if runs % (WINDOW / 2) == 0 {
                        grant(runs + WINDOW);
                    }
                }
                Tag::End => {
                    let sent = wire::body_u64(&bytes)?;
                    if sent != items {
                        return Err(format!(
                            "the sender ended after {sent} items, {items} arrived"
                        ));
                    }
                    return Ok(IngressEnd::Complete { runs, items });
                }
                other => return Err(format!("a {other:?} message on a data key")),
            }
        }
    }
}

/// Moves `run` into `ring`, waiting for room; `false` if the ring's reader
/// is gone (the segment stopped).
fn push_all<T>(ring: &mut Producer<T>, run: Vec<T>) -> bool {
    let mut items = run.into_iter();
    loop {
        ring.push_from_iter(&mut items);
        if items.len() == 0 {
            return true;
        }
        match ring.wait_for_slots(1, None, || false) {
            WaitOutcome::Closed => return false,
            WaitOutcome::Ready(_) | WaitOutcome::TimedOut | WaitOutcome::Interrupted => {}
        }
    }
}
