//! The source stage and its two feeds: the user's iterator
//! ([`run_source`]) and the ring behind an [`Input`](crate::Input) that the
//! user pushes into from their own thread ([`run_input`]).
//!
//! Both publish the way LMAX's "smart batching" does: a batch forms only
//! while the next stage is busy with the previous one. An iterator source
//! hands over what it holds as soon as its consumer has taken everything
//! published; an input source moves whatever the user has pushed, so at
//! low rates every item travels alone and latency stays at one hand-over
//! per stage, while under load the batches fill up and amortise the
//! synchronisation.

use crate::erased::{End, Erased, ErasedMut, Residue};
use crate::heap::RingOutbox;
use crate::item::Item;
use crate::latency::{StampRx, StampTx, Stamps};
use crate::port::{await_room, boundary, drain, exit_of, next_batch, Inbox, Outbox, StageExit};
use crate::shm::LogConfig;
use crate::stage::{shm_out, Ctx, ErasedStage, Tally};
use crate::transport::{Transport, Tx};
use ringweave_ipc::ring::{map_chunk, Consumer, RingWaker};
use std::time::Instant;

/// The longest an iterator source holds items back to fill a batch.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_micros(20);

/// Where a source's items come from.
pub(crate) trait Feed<T>: Send + 'static {
    /// Runs the source loop over this feed into `out`.
    fn run<O: Outbox<T>>(
        &mut self,
        out: &mut O,
        tally: &mut Tally,
        stamps: &mut Stamps,
        ctx: &Ctx<'_>,
    ) -> StageExit;

    /// Wakes the source when it sleeps on its feed (so the barrier reaches
    /// it); `None` for a feed it never sleeps on.
    fn waker(&self) -> Option<RingWaker> {
        None
    }
}

/// The user's iterator. `next()` may block (a socket, a queue): the source
/// cannot be paused while it does, so a switch times out; use an
/// [`Input`](crate::Input) for such sources.
pub(crate) struct IterFeed<I>(pub I);

impl<T, I> Feed<T> for IterFeed<I>
where
    I: Iterator<Item = T> + Send + 'static,
{
    fn run<O: Outbox<T>>(
        &mut self,
        out: &mut O,
        tally: &mut Tally,
        stamps: &mut Stamps,
        ctx: &Ctx<'_>,
    ) -> StageExit {
        run_source(&mut self.0, out, tally, stamps, ctx)
    }
}

/// The consumer end of an [`Input`](crate::Input)'s ring.
impl<T: Send + 'static> Feed<T> for Consumer<T> {
    fn run<O: Outbox<T>>(
        &mut self,
        out: &mut O,
        tally: &mut Tally,
        stamps: &mut Stamps,
        ctx: &Ctx<'_>,
    ) -> StageExit {
        run_input(self, out, tally, stamps, ctx)
    }

    fn waker(&self) -> Option<RingWaker> {
        Some(Consumer::waker(self))
    }
}

/// The source stage: pulls from its feed (the user's iterator, or the ring
/// behind an [`Input`](crate::Input)).
pub(crate) struct SourceStage<T, F> {
    pub feed: F,
    pub output: Tx<T>,
    pub tally: Tally,
    pub stamps: Stamps,
    /// While the run can recover from a crash: the replay log every
    /// shared-memory output keeps.
    pub log: Option<LogConfig>,
    /// The log of a source that finished while logging, kept for a replay
    /// (its output closed: the stream ended downstream).
    pub kept: Option<Vec<T>>,
}

impl<T, F> ErasedStage for SourceStage<T, F>
where
    T: Item,
    F: Feed<T>,
{
    fn name(&self) -> &str {
        "source"
    }

    fn run(&mut self, ctx: &Ctx<'_>) -> StageExit {
        let (feed, tally, stamps) = (&mut self.feed, &mut self.tally, &mut self.stamps);
        match self.output.active() {
            Some(Transport::Heap(out)) => feed.run(out, tally, stamps, ctx),
            Some(Transport::Shm(out)) => {
                out.bound_queue(ctx.edge_items);
                let exit = feed.run(out, tally, stamps, ctx);
                if matches!(exit, StageExit::Finished) && self.log.is_some() {
                    // A crash before the end of the run replays this: keep
                    // it. The coordinator keeps the stage and closes the
                    // ring (`kept_for_replay`).
                    self.kept = Some(out.take_replay());
                }
                exit
            }
            None => StageExit::Aborted,
        }
    }

    fn keep_log(&mut self, config: LogConfig) {
        self.log = Some(config);
    }

    fn checkpointed(&mut self) {
        // A finished (kept) source is never checkpointed: a pipeline that
        // is draining takes no checkpoint.
        if let Some(out) = self.output.shm_mut() {
            out.checkpointed();
        }
    }

    fn take_replay(&mut self) -> Option<(Erased<Residue>, u64)> {
        let items = match (self.kept.take(), self.output.shm_mut()) {
            (Some(kept), _) => kept,
            (None, Some(out)) => out.take_replay(),
            (None, None) => Vec::new(),
        };
        let n = items.len() as u64;
        Some((Erased::new(items), n))
    }

    fn replay(&mut self, items: Erased<Residue>) {
        if let Some(out) = self.output.shm_mut() {
            out.replay(items.open());
        }
    }

    fn item_size(&self) -> usize {
        std::mem::size_of::<T>()
    }

    fn kept_for_replay(&self) -> bool {
        self.kept.is_some()
    }

    fn set_stamps(&mut self, rx: Option<StampRx>, tx: Option<StampTx>) {
        self.stamps.replace(rx, tx);
    }

    fn set_input(&mut self, _input: Erased<End>) {
        unreachable!("the source has no input")
    }

    fn set_output(&mut self, output: Erased<End>) {
        self.output.set_heap(RingOutbox::new(output.open()));
    }

    fn ring_input(&mut self) -> Option<ErasedMut<'_, End>> {
        None
    }

    fn ring_output(&mut self) -> Option<ErasedMut<'_, End>> {
        self.output.heap_mut().map(ErasedMut::new)
    }

    fn attach_shm(&mut self, _input: Option<Erased<End>>, output: Option<Erased<End>>) {
        if let Some(output) = output {
            let mut out = shm_out(output, "source");
            if let Some(log) = &self.log {
                out.keep_log(log);
            }
            self.output.attach(out);
        }
    }

    fn detach_shm(&mut self) {
        self.output.detach();
    }

    fn input_waker(&self) -> Option<RingWaker> {
        self.feed.waker()
    }

    fn tally_mut(&mut self) -> &mut Tally {
        &mut self.tally
    }
}

/// The source loop: pulls batches from `iter` into `out`.
pub(crate) fn run_source<T>(
    iter: &mut impl Iterator<Item = T>,
    out: &mut impl Outbox<T>,
    tally: &mut Tally,
    stamps: &mut Stamps,
    ctx: &Ctx<'_>,
) -> StageExit {
    let control = ctx.control;
    // Items per batch, from how fast the iterator yields: at most about
    // `MAX_HOLD` worth of them, so a slow or paced iterator publishes item
    // by item even while the consumer looks busy (it may just be waiting
    // for a CPU), and a fast one fills whole batches. One clock read per
    // batch, the one the latency stamps already make.
    let mut limit = 1usize;
    let mut last: Option<(Instant, usize)> = None;
    exit_of((|| loop {
        drain(out, control)?;
        boundary(control)?;
        // One clock read per batch: stamp its first item if one is due.
        let now = Instant::now();
        let stamp = stamps.source_due(now);
        if let Some((started, produced)) = last {
            let took = now.duration_since(started).as_nanos().max(1);
            let fits = MAX_HOLD.as_nanos() * produced.max(1) as u128 / took;
            limit = (fits as usize).clamp(1, ctx.batch);
        }
        if let Some(ring) = out.ring() {
            // Batch path: fill free slots straight from the iterator.
            let room = ring.slots().min(limit);
            if room == 0 {
                await_room(ring, control)?;
                continue;
            }
            if stamp {
                // Queued before the items are published, so the next stage
                // finds the stamp when it takes the item.
                stamps.forward(tally.items_out, ctx.latency.now());
            }
            // Smart batching: the batch grows only while the consumer is
            // still busy with what it has. Once it has taken everything
            // published it is waiting, and what we hold goes out at once, so
            // at low rates every item travels alone and at full load the
            // batches fill up.
            let mut produced = 0;
            let mut ended = false;
            while produced < room {
                let Some(item) = iter.next() else {
                    ended = true;
                    break;
                };
                // SAFETY: `produced < room <= slots()`, the free-slot count
                // just read, and each offset is written once before the
                // publish below.
                unsafe { ring.write_staged(produced, item) };
                produced += 1;
                if ring.is_drained() {
                    break;
                }
            }
            if produced > 0 {
                ring.publish_staged(produced);
            }
            last = Some((now, produced));
            tally.items_out += produced as u64;
            control.record(tally.items_in, tally.items_out);
            if ended {
                return Err(StageExit::Finished);
            }
            continue;
        }
        let mut produced = 0;
        let mut ended = false;
        while produced < limit {
            let Some(item) = iter.next() else {
                ended = true;
                break;
            };
            out.emit(item);
            if produced == 0 && stamp {
                // Queued before the item is published (at the flush below),
                // so the next stage finds the stamp when it takes the item.
                stamps.forward(tally.items_out, ctx.latency.now());
            }
            produced += 1;
            // Smart batching, as above: publish at once to an idle consumer.
            if out.is_congested() || out.consumer_idle() {
                break;
            }
        }
        out.flush()?;
        last = Some((now, produced));
        tally.items_out += produced as u64;
        control.record(tally.items_in, tally.items_out);
        if ended {
            drain(out, control)?;
            return Err(StageExit::Finished);
        }
    })())
}

/// The input loop: moves what the user pushed into `out`, waiting on the
/// input ring interruptibly, so an idle input never holds up a switch.
pub(crate) fn run_input<T>(
    input: &mut Consumer<T>,
    out: &mut impl Outbox<T>,
    tally: &mut Tally,
    stamps: &mut Stamps,
    ctx: &Ctx<'_>,
) -> StageExit {
    let control = ctx.control;
    exit_of((|| loop {
        let available = next_batch(input, out, control)?;
        // One clock read per batch: stamp its first item if one is due.
        let stamp = stamps.source_due(Instant::now());
        if let Some(ring) = out.ring() {
            let n = available.min(ctx.batch).min(ring.slots());
            if n == 0 {
                await_room(ring, control)?;
                continue;
            }
            if stamp {
                // Queued before the items are published.
                stamps.forward(tally.items_out, ctx.latency.now());
            }
            let moved = map_chunk(input, ring, n, |x| x);
            debug_assert_eq!(moved, n, "both ends are this thread's");
            tally.items_out += n as u64;
            control.record(tally.items_in, tally.items_out);
            continue;
        }
        if stamp {
            // Queued before the items are published (at the flush).
            stamps.forward(tally.items_out, ctx.latency.now());
        }
        let taken = input.take(available.min(ctx.batch), |item| {
            out.emit(item);
            !out.is_congested()
        })?;
        out.flush()?;
        tally.items_out += taken as u64;
        control.record(tally.items_in, tally.items_out);
    })())
}
