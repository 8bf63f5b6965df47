//! The stage loops, and the stages the coordinator holds.
//!
//! A stage is an [`Operator`] (`op.rs`) plus its two ends. The loop takes a batch of inputs with
//! one acquire, runs the operator on each item, writes outputs straight into
//! the free slots of the output ring and publishes them with one store per
//! batch ([`RingOutbox`]). Between batches — and while it waits for input or
//! for room — it checks its [`StageControl`] word, so the switch barrier can
//! stop it at a point where no item is half-processed.

use crate::erased::{End, Erased, ErasedMut, Residue, State};
use crate::error::Error;
use crate::heap::RingOutbox;
use crate::item::Item;
use crate::latency::{LatencyRecorder, StampRx, StampTx, Stamps};
use crate::op::{Operator, StateError};
use crate::port::{await_room, boundary, exit_of, next_batch, Emit, Inbox, Outbox, StageExit};
use crate::replica::{Batch, Pool, Replicas};
use crate::replica_proc::{ReplicaFailure, ReplicaProcesses};
use crate::shm::{LogConfig, ShmInbox, ShmOutbox};
use crate::transport::{Rx, Transport, Tx};
use ringweave_ipc::control::{StageControl, StageSlot};
use ringweave_ipc::record_ring::{RecordConsumer, RecordProducer};
use ringweave_ipc::ring::{map_chunk, RingWaker};
use std::time::Instant;

/// Items in and out of one stage, ever (survives pauses and moves).
#[derive(Default)]
pub(crate) struct Tally {
    /// Items taken from the input.
    pub items_in: u64,
    /// Items handed to the output.
    pub items_out: u64,
}

/// What every stage loop runs with.
pub(crate) struct Ctx<'a> {
    /// The stage's control block (barrier word, counters).
    pub control: &'a StageControl,
    /// Items taken from the input at once.
    pub batch: usize,
    /// Slots of an in-process ring: what a shared-memory edge is bounded to
    /// in items, too.
    pub edge_items: usize,
    /// The run's clock and latency histogram (used by source and sink).
    pub latency: &'a LatencyRecorder,
    /// Whether this is a worker process (the distributed replica count
    /// applies).
    pub in_worker: bool,
    /// The worker's slot in the control table (worker processes only):
    /// where replica processes' pids go.
    pub slot: Option<&'a StageSlot>,
    /// Bytes a stage's archived state may take (`max_state_bytes`).
    pub state_bytes: usize,
    /// Bytes of a shared-memory edge's ring (`shm_ring_bytes`).
    pub ring_bytes: usize,
}

/// A replicated stage's threads and count, for [`run_transform`].
pub(crate) struct Par<'a, In, Out> {
    pub pool: &'a mut Pool,
    pub n: usize,
    /// How many of the `n` can run at once here (`Pool::width`).
    pub width: usize,
    pub stage: &'a str,
    /// In a worker: the stage's replica processes, made at the first batch
    /// dealt out.
    pub procs: Option<&'a mut Option<ReplicaProcesses<In, Out>>>,
}

impl<In, Out> Par<'_, In, Out> {
    /// Adds a batch of `taken` inputs to the replicas' item counters:
    /// `dealt` (taken from) says how many each replica took, empty when
    /// the batch ran on replica 0. Nothing for a stage of one replica.
    #[inline]
    fn count(&self, ctx: &Ctx<'_>, taken: usize, dealt: &mut Vec<usize>) {
        let Some(slot) = ctx.slot.filter(|_| self.n > 1) else {
            return;
        };
        let counters = &slot.replica_items.0;
        // Relaxed: informational counters, read by `metrics()`.
        if dealt.is_empty() {
            counters[0].fetch_add(taken as u64, ringweave_ipc::sync::atomic::Ordering::Relaxed);
        }
        for (counter, k) in counters.iter().zip(dealt.drain(..)) {
            counter.fetch_add(k as u64, ringweave_ipc::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The transform loop: batches from `input` through `op` into `out`.
///
/// A stage pauses only at a batch boundary or while waiting for input, and
/// only once its outputs are all in the output ring: outputs that did not fit
/// are flushed first, which needs the downstream stage running — the
/// coordinator pauses stages from source to sink, one after the other, so it
/// is.
pub(crate) fn run_transform<In, Out, Op: Operator<In, Out>>(
    op: &mut Op,
    input: &mut impl Inbox<In>,
    out: &mut impl Outbox<Out>,
    tally: &mut Tally,
    stamps: &mut Stamps,
    ctx: &Ctx<'_>,
    mut par: Par<'_, In, Out>,
) -> StageExit
where
    In: Item,
    Out: Item,
{
    let control = ctx.control;
    let mut batch = Batch::default();
    exit_of((|| loop {
        let available = next_batch(input, out, control)?.min(op.room(control)?);
        let (base_in, base_out) = (tally.items_in, tally.items_out);
        stamps.refresh(base_in);
        // A replicated stage times its batches to decide whether the next
        // one is worth dealing out (see `replica::Cost`).
        let timer =
            (Op::REPLICABLE && par.n > 1 && par.pool.cost.time_this_batch()).then(Instant::now);
        // Replicas take one batch each, as far as there are cores to run
        // them: beyond that a larger batch only delays the barrier.
        let want = if Op::REPLICABLE && par.n > 1 {
            available.min(ctx.batch.saturating_mul(par.width))
        } else {
            0
        };
        // Once a keyed stage has replica processes they own their keys'
        // state: every batch goes to them, however small.
        let owned_elsewhere = Op::KEYED && par.procs.as_ref().is_some_and(|procs| procs.is_some());
        if Op::REPLICABLE && par.n > 1 && (owned_elsewhere || par.pool.cost.worth_splitting(want)) {
            // Replicas: the whole batch goes through `process_batch`,
            // which returns once every replica is done with it.
            let mut items = Vec::with_capacity(want.min(ctx.batch));
            let taken = input.take(want, |x| {
                items.push(x);
                true
            })?;
            // `want` was an upper bound (a shared-memory inbox does not
            // count its items ahead): decide on what came.
            let split = par.pool.cost.worth_splitting(items.len());
            let threads = if split { par.n } else { 1 };
            match par.procs.as_mut() {
                // Once a keyed stage has replica processes, they own their
                // keys' state: every batch goes to them, split or not.
                Some(procs) if split || (Op::KEYED && procs.is_some()) => {
                    deal_to_processes(op, procs, items, &mut batch, par.stage, par.n, ctx)?;
                }
                _ => {
                    let pool = if split {
                        par.pool.get(par.n, par.stage)
                    } else {
                        None
                    };
                    op.process_batch(items, pool, par.n, &mut batch);
                }
            }
            while let Some((seq, at)) = stamps.take_below(base_in + taken as u64) {
                let Some(i) = seq.checked_sub(base_in) else {
                    continue;
                };
                let start = batch.start_of(i as usize);
                if batch.ends[i as usize] > start {
                    stamps.forward(base_out + u64::from(start), at);
                }
            }
            let count = batch.items.len() as u64;
            for output in batch.items.drain(..) {
                out.emit(output);
            }
            batch.ends.clear();
            out.flush()?;
            tally.items_in += taken as u64;
            tally.items_out += count;
            control.record(tally.items_in, tally.items_out);
            par.pool.cost.observe(timer, taken, threads);
            par.count(ctx, taken, &mut batch.dealt);
            continue;
        }
        if Op::ONE_TO_ONE {
            if let (Some(input), Some(output)) = (input.ring(), out.ring()) {
                // How many move now: stamps go out before the items are
                // published, so the next stage finds them when it takes them.
                let n = available
                    .min(ctx.batch)
                    .min(input.slots())
                    .min(output.slots());
                let end = base_in + n as u64;
                while let Some((seq, at)) = stamps.take_below(end) {
                    stamps.forward(base_out + (seq - base_in), at);
                }
                let moved = map_chunk(input, output, n, |x| op.map_one(x));
                debug_assert_eq!(moved, n, "both ends are this thread's");
                if n == 0 {
                    await_room(output, control)?;
                    continue;
                }
                tally.items_in += n as u64;
                tally.items_out += n as u64;
                control.record(tally.items_in, tally.items_out);
                par.pool.cost.observe(timer, n, 1);
                par.count(ctx, n, &mut Vec::new());
                continue;
            }
        }
        if Op::ONE_TO_ONE {
            if let Some(buffer) = out.buffer() {
                // Batch path (shared-memory ends): map whole records into
                // the outbox's buffer, with no per-item bookkeeping; the
                // batch's stamps are passed on before the flush publishes it.
                let taken = input.take(available.min(ctx.batch), |x| {
                    buffer.push(op.map_one(x));
                    true
                })?;
                let end = base_in + taken as u64;
                while let Some((seq, at)) = stamps.take_below(end) {
                    stamps.forward(base_out + (seq - base_in), at);
                }
                out.flush()?;
                tally.items_in += taken as u64;
                tally.items_out += taken as u64;
                control.record(tally.items_in, tally.items_out);
                par.pool.cost.observe(timer, taken, 1);
                par.count(ctx, taken, &mut Vec::new());
                continue;
            }
        }
        let mut emitted = Counting {
            inner: out,
            count: 0,
        };
        let mut seq = base_in;
        let taken = input.take(available.min(ctx.batch), |item| {
            match stamps.take(seq) {
                None => op.process(item, &mut emitted),
                Some(at) => {
                    let before = emitted.count;
                    op.process(item, &mut emitted);
                    if emitted.count > before {
                        stamps.forward(base_out + before, at);
                    }
                }
            }
            seq += 1;
            !emitted.inner.is_congested()
        })?;
        let count = emitted.count;
        out.flush()?;
        tally.items_in += taken as u64;
        tally.items_out += count;
        control.record(tally.items_in, tally.items_out);
        par.pool.cost.observe(timer, taken, 1);
        par.count(ctx, taken, &mut Vec::new());
    })())
}

/// Runs a batch over the stage's replica processes (made now if this is
/// the first), in a worker.
fn deal_to_processes<In: Item, Out: Item, Op: Operator<In, Out>>(
    op: &mut Op,
    procs: &mut Option<ReplicaProcesses<In, Out>>,
    items: Vec<In>,
    batch: &mut Batch<Out>,
    stage: &str,
    n: usize,
    ctx: &Ctx<'_>,
) -> Result<(), StageExit> {
    let Some(slot) = ctx.slot else {
        unreachable!("every stage loop has its slot")
    };
    if procs.is_none() {
        // SAFETY: a worker process runs this stage on its only thread, and
        // `op` is the stage's operator.
        let made = unsafe {
            ReplicaProcesses::spawn(
                op as *mut Op,
                n,
                stage,
                ctx.state_bytes,
                ctx.ring_bytes,
                slot,
            )
        };
        *procs = Some(made.map_err(|reason| {
            StageExit::Failed(Error::Distributed {
                reason: format!("stage `{stage}`: starting its replica processes: {reason}"),
            })
        })?);
    }
    let Some(procs) = procs.as_mut() else {
        unreachable!("made above")
    };
    let route = op.route(&items, n);
    procs
        .process(op, items, route, batch)
        .map_err(|failure| replica_failed(failure, stage, slot))
}

/// What the failure of a replica process does to its stage: a crash is the
/// crash of `stage[i]` (named to the coordinator through the slot); a panic
/// is the stage's panic, with its message (resumed here, without running
/// the panic hook, so that the worker reports it as its own).
fn replica_failed(failure: ReplicaFailure, stage: &str, slot: &StageSlot) -> StageExit {
    match failure {
        ReplicaFailure::Died { replica, pid, exit } => {
            // Relaxed: the parent reads it after reaping this worker.
            slot.failed_replica.store(
                replica as u32,
                ringweave_ipc::sync::atomic::Ordering::Relaxed,
            );
            StageExit::Failed(Error::WorkerCrashed {
                stage: format!("{stage}[{replica}]"),
                pid: pid as i32,
                exit,
            })
        }
        ReplicaFailure::Panicked { message, .. } => std::panic::resume_unwind(Box::new(message)),
        ReplicaFailure::Other(reason) => StageExit::Failed(Error::Distributed {
            reason: format!("stage `{stage}`: {reason}"),
        }),
    }
}

/// The sink loop: batches from `input` into the user's closure.
///
/// `skip`: items to drop before delivering again, after a crash recovery
/// (they were delivered before the crash).
pub(crate) fn run_sink<T>(
    f: &mut impl Deliver<T>,
    input: &mut impl Inbox<T>,
    tally: &mut Tally,
    skip: &mut u64,
    stamps: &mut Stamps,
    ctx: &Ctx<'_>,
) -> StageExit {
    let control = ctx.control;
    let mut samples = Vec::new();
    exit_of((|| loop {
        boundary(control)?;
        let available = input.await_items(control)?;
        let base = tally.items_in;
        stamps.refresh(base);
        // `taken`: items delivered; `took`: items taken from the input.
        let (taken, took) = if *skip == 0 {
            let took = input.take(available.min(ctx.batch), |item| {
                f.deliver(item);
                true
            })?;
            (took, took)
        } else {
            let before = *skip;
            let took = input.take(available.min(ctx.batch), |item| {
                if *skip > 0 {
                    *skip -= 1;
                } else {
                    f.deliver(item);
                }
                true
            })?;
            (took - (before - *skip) as usize, took)
        };
        // Stamped items of this batch were delivered by now: one clock read.
        let end = base + taken as u64;
        let mut now = None;
        while let Some((_, at)) = stamps.take_below(end) {
            let now = *now.get_or_insert_with(|| ctx.latency.now());
            samples.push(now.saturating_sub(at));
        }
        ctx.latency.record(&samples);
        samples.clear();
        tally.items_in += taken as u64;
        tally.items_out = tally.items_in;
        control.record(tally.items_in, tally.items_out);
        f.after_batch(|| took < available && !input.drained(), control)?;
    })())
}

/// Where a sink's items go: the user's closure, or a network edge's runs.
pub(crate) trait Deliver<T> {
    /// The sink stage's name.
    fn name(&self) -> &str {
        "sink"
    }
    /// Takes one item.
    fn deliver(&mut self, item: T);
    /// At the end of the stream, once every item was delivered.
    fn finish(&mut self, _control: &StageControl) -> Result<(), StageExit> {
        Ok(())
    }
    /// After each batch: `more()` says whether items are readable right
    /// now (a load, made only if asked). A sink that gathers items into
    /// larger units sends them on here once its input is drained, so it
    /// holds nothing while its input is idle; it may return what
    /// `port::interrupted` does when the barrier calls while it waits.
    fn after_batch(
        &mut self,
        _more: impl FnOnce() -> bool,
        _control: &StageControl,
    ) -> Result<(), StageExit> {
        Ok(())
    }
}

impl<T, F: FnMut(T)> Deliver<T> for F {
    #[inline]
    fn deliver(&mut self, item: T) {
        self(item);
    }
}

/// Counts what an operator emits on its way into the outbox.
struct Counting<'a, O> {
    inner: &'a mut O,
    count: u64,
}

impl<T, O: Emit<T>> Emit<T> for Counting<'_, O> {
    #[inline]
    fn emit(&mut self, item: T) {
        self.count += 1;
        self.inner.emit(item);
    }
}

/// A stage as the coordinator sees it: type-erased, movable between threads,
/// and runnable in a worker process.
///
/// Each stage keeps its in-process ring ends for its whole life; while the
/// pipeline is distributed it also holds shared-memory ends (the source and
/// sink in this process, the transforms in their worker's copy), and its
/// loop runs over those whenever they are attached.
pub(crate) trait ErasedStage: Send {
    /// The stage's name (`source` and `sink` for those).
    fn name(&self) -> &str;
    /// Runs on the calling thread until end of stream, a pause or an abort.
    fn run(&mut self, ctx: &Ctx<'_>) -> StageExit;
    /// Replaces the stamp queues (at a switch); `None` keeps that side.
    fn set_stamps(&mut self, rx: Option<StampRx>, tx: Option<StampTx>);
    /// Gives the stage its in-process input end (an erased `Consumer<In>`).
    fn set_input(&mut self, input: Erased<End>);
    /// Gives the stage its in-process output end (an erased `Producer<Out>`).
    fn set_output(&mut self, output: Erased<End>);
    /// The in-process input end, as `&mut Consumer<In>`, for a coordinator
    /// holding the paused stage.
    fn ring_input(&mut self) -> Option<ErasedMut<'_, End>>;
    /// The in-process output, as `&mut RingOutbox<Out>`.
    fn ring_output(&mut self) -> Option<ErasedMut<'_, End>>;
    /// Attaches shared-memory ends (erased `RecordConsumer<Vec<In>>` /
    /// `RecordProducer<Vec<Out>>`); the loop uses them from now on (see
    /// `transport.rs`). `None` leaves that side as it is.
    fn attach_shm(&mut self, input: Option<Erased<End>>, output: Option<Erased<End>>);
    /// Drops the shared-memory ends (closing them); the loop goes back to
    /// the in-process rings.
    fn detach_shm(&mut self);
    /// The stage's counters.
    fn tally_mut(&mut self) -> &mut Tally;
    /// Wakes the stage while it sleeps on an input that is not an edge of
    /// the pipeline (the ring behind an `Input`), so the barrier and an
    /// abort reach it.
    fn input_waker(&self) -> Option<RingWaker> {
        None
    }
    /// Sets the counters (after the stage ran in a worker process).
    fn set_tally(&mut self, items_in: u64, items_out: u64) {
        *self.tally_mut() = Tally {
            items_in,
            items_out,
        };
    }
    /// See [`Operator::save_state`]; the source and sink have no state. A
    /// stage with replica processes gathers their state first.
    fn save_state(&mut self, _area: &mut [u8]) -> Result<usize, StateError> {
        Ok(0)
    }
    /// Kills and reaps the stage's replica processes (a worker leaving).
    fn stop_replicas(&mut self, _slot: &StageSlot) {}
    /// See [`Operator::decode_state`].
    fn decode_state(&self, _bytes: &[u8]) -> Result<Option<Erased<State>>, StateError> {
        Ok(None)
    }
    /// See [`Operator::set_state`].
    fn set_state(&mut self, _state: Erased<State>) {}
    /// Sets the replica counts; `Err` says why this stage cannot have them.
    fn set_replicas(&mut self, _replicas: Replicas) -> Result<(), String> {
        Err("only transform stages have replicas".into())
    }
    /// The replica counts.
    fn replicas(&self) -> Replicas {
        Replicas::default()
    }
    /// Whether the stage runs in this process in every mode.
    fn local(&self) -> bool {
        false
    }

    // Crash recovery (see `coordinator/recovery.rs`).

    /// The source: keep a replay log of what its shared-memory output
    /// sends from now on.
    fn keep_log(&mut self, _config: LogConfig) {}
    /// The source, paused: a checkpoint completed, drop its log.
    fn checkpointed(&mut self) {}
    /// The source, paused: what it sent since the last checkpoint and what
    /// it holds, in order (a `Vec<T>`), and how many, leaving it empty.
    fn take_replay(&mut self) -> Option<(Erased<Residue>, u64)> {
        None
    }
    /// The source, paused and attached: sends `items` (from
    /// `take_replay`) before anything else.
    fn replay(&mut self, _items: Erased<Residue>) {}
    /// The source: `size_of` its items (the replay log's default bound).
    fn item_size(&self) -> usize {
        0
    }
    /// A local transform (a tee) of a run that can recover: keep it when
    /// it finishes while distributed.
    fn keep_for_replay(&mut self) {}
    /// It finished while distributed and is to be kept for a replay (the
    /// caller closes its shared-memory ends).
    fn kept_for_replay(&self) -> bool {
        false
    }
    /// A stage with effects outside the pipeline (the sink, a tee): how far
    /// into its input stream it is — items delivered, less those it is
    /// still to skip. `None` for the others.
    fn position(&self) -> Option<u64> {
        None
    }
    /// After a recovery its input stream starts again at `position` (one
    /// `position` returned earlier): it skips what it delivered already.
    fn rewind(&mut self, _position: u64) {}
}

/// Unboxes shared-memory ends for `attach_shm`.
pub(crate) fn shm_in<T: 'static>(end: Erased<End>, stage: &str) -> ShmInbox<T> {
    ShmInbox::new(end.open::<RecordConsumer<Vec<T>>>(), stage)
}

pub(crate) fn shm_out<T: 'static>(end: Erased<End>, stage: &str) -> ShmOutbox<T> {
    ShmOutbox::new(end.open::<RecordProducer<Vec<T>>>(), stage)
}

/// A transform stage: `map`, `filter`, `flat_map` or `stateful`.
pub(crate) struct TransformStage<In, Out, Op> {
    pub name: String,
    pub op: Op,
    pub input: Rx<In>,
    pub output: Tx<Out>,
    pub tally: Tally,
    pub stamps: Stamps,
    pub replicas: Replicas,
    pub pool: Pool,
    /// In a worker: replicas `1..n` as processes.
    pub procs: Option<ReplicaProcesses<In, Out>>,
    /// A local stage of a run that can recover: kept when it finishes
    /// while distributed, in case a crash makes it run again.
    pub replay: bool,
}

impl<In, Out, Op> ErasedStage for TransformStage<In, Out, Op>
where
    In: Item,
    Out: Item,
    Op: Operator<In, Out>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, ctx: &Ctx<'_>) -> StageExit {
        let (op, tally, stamps) = (&mut self.op, &mut self.tally, &mut self.stamps);
        let n = self.replicas.count(ctx.in_worker);
        let width = if n > 1 { self.pool.width(n) } else { 1 };
        let par = Par {
            pool: &mut self.pool,
            n,
            width,
            stage: &self.name,
            procs: (ctx.in_worker && n > 1).then_some(&mut self.procs),
        };
        // One dispatch per run: the loop below is monomorphised for the
        // pair of transports this run uses.
        match (self.input.active(), self.output.active()) {
            (Some(Transport::Heap(i)), Some(Transport::Heap(o))) => {
                run_transform(op, i, o, tally, stamps, ctx, par)
            }
            (Some(Transport::Shm(i)), Some(Transport::Shm(o))) => {
                o.bound_queue(ctx.edge_items);
                run_transform(op, i, o, tally, stamps, ctx, par)
            }
            (Some(Transport::Heap(i)), Some(Transport::Shm(o))) => {
                o.bound_queue(ctx.edge_items);
                run_transform(op, i, o, tally, stamps, ctx, par)
            }
            (Some(Transport::Shm(i)), Some(Transport::Heap(o))) => {
                run_transform(op, i, o, tally, stamps, ctx, par)
            }
            // Not wired: only a coordinator that never started it.
            _ => StageExit::Aborted,
        }
    }

    fn set_stamps(&mut self, rx: Option<StampRx>, tx: Option<StampTx>) {
        self.stamps.replace(rx, tx);
    }

    fn set_input(&mut self, input: Erased<End>) {
        self.input.set_heap(input.open());
    }

    fn set_output(&mut self, output: Erased<End>) {
        self.output.set_heap(RingOutbox::new(output.open()));
    }

    fn ring_input(&mut self) -> Option<ErasedMut<'_, End>> {
        self.input.heap_mut().map(ErasedMut::new)
    }

    fn ring_output(&mut self) -> Option<ErasedMut<'_, End>> {
        self.output.heap_mut().map(ErasedMut::new)
    }

    fn attach_shm(&mut self, input: Option<Erased<End>>, output: Option<Erased<End>>) {
        if let Some(input) = input {
            self.input.attach(shm_in(input, &self.name));
        }
        if let Some(output) = output {
            self.output.attach(shm_out(output, &self.name));
        }
    }

    fn detach_shm(&mut self) {
        self.input.detach();
        self.output.detach();
    }

    fn tally_mut(&mut self) -> &mut Tally {
        &mut self.tally
    }

    fn save_state(&mut self, area: &mut [u8]) -> Result<usize, StateError> {
        if let Some(procs) = &mut self.procs {
            // The replica processes own their keys' state: bring it here.
            let (op, n) = (&mut self.op, procs.count());
            procs
                .gather(|replica, bytes| {
                    let state = op.decode_state(bytes).map_err(|e| e.to_string())?;
                    if let Some(state) = state {
                        op.absorb(state, replica, n);
                    }
                    Ok(())
                })
                .map_err(|failure| match failure {
                    ReplicaFailure::Died { replica, exit, .. } => {
                        StateError::ReplicaDied { replica, exit }
                    }
                    failure => StateError::Serialize(failure.to_string()),
                })?;
        }
        self.op.save_state(area)
    }

    fn stop_replicas(&mut self, slot: &StageSlot) {
        if let Some(procs) = self.procs.take() {
            procs.shut_down(slot);
        }
    }

    fn decode_state(&self, bytes: &[u8]) -> Result<Option<Erased<State>>, StateError> {
        self.op.decode_state(bytes)
    }

    fn set_state(&mut self, state: Erased<State>) {
        self.op.set_state(state);
    }

    fn set_replicas(&mut self, replicas: Replicas) -> Result<(), String> {
        if replicas.max() > 1 && !Op::REPLICABLE {
            return Err(if Op::LOCAL {
                "a tee runs on one thread".into()
            } else {
                "a `stateful` stage's state cannot be split between replicas; \
                 use `stateful_by_key`"
                    .into()
            });
        }
        self.replicas = replicas;
        Ok(())
    }

    fn replicas(&self) -> Replicas {
        self.replicas
    }

    fn local(&self) -> bool {
        Op::LOCAL
    }

    fn position(&self) -> Option<u64> {
        self.op.position()
    }

    fn keep_for_replay(&mut self) {
        self.replay = Op::LOCAL;
    }

    fn kept_for_replay(&self) -> bool {
        self.replay && self.output.shm().is_some()
    }

    fn rewind(&mut self, position: u64) {
        self.op.rewind(position);
    }
}

/// The sink: hands every item to the user's closure (or, ending a
/// segment of a cluster run, to a network edge).
pub(crate) struct SinkStage<T, F> {
    pub f: F,
    pub input: Rx<T>,
    /// `items_in` counts items delivered to `f`.
    pub tally: Tally,
    /// Items to drop before delivering again (see [`run_sink`]).
    pub skip: u64,
    pub stamps: Stamps,
}

impl<T, F> ErasedStage for SinkStage<T, F>
where
    T: Item,
    F: Deliver<T> + Send + 'static,
{
    fn name(&self) -> &str {
        self.f.name()
    }

    fn run(&mut self, ctx: &Ctx<'_>) -> StageExit {
        let (f, tally, skip, stamps) = (
            &mut self.f,
            &mut self.tally,
            &mut self.skip,
            &mut self.stamps,
        );
        let exit = match self.input.active() {
            Some(Transport::Heap(input)) => run_sink(f, input, tally, skip, stamps, ctx),
            Some(Transport::Shm(input)) => run_sink(f, input, tally, skip, stamps, ctx),
            None => StageExit::Aborted,
        };
        match exit {
            StageExit::Finished => f.finish(ctx.control).map_or_else(|e| e, |()| exit),
            exit => exit,
        }
    }

    fn set_stamps(&mut self, rx: Option<StampRx>, tx: Option<StampTx>) {
        self.stamps.replace(rx, tx);
    }

    fn set_input(&mut self, input: Erased<End>) {
        self.input.set_heap(input.open());
    }

    fn set_output(&mut self, _output: Erased<End>) {
        unreachable!("the sink has no output")
    }

    fn ring_input(&mut self) -> Option<ErasedMut<'_, End>> {
        self.input.heap_mut().map(ErasedMut::new)
    }

    fn ring_output(&mut self) -> Option<ErasedMut<'_, End>> {
        None
    }

    fn attach_shm(&mut self, input: Option<Erased<End>>, _output: Option<Erased<End>>) {
        if let Some(input) = input {
            self.input.attach(shm_in(input, self.f.name()));
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
