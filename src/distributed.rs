//! The distributed half of a run: the shared data segment, one record ring
//! per edge, and one forked worker process per transform stage.
//!
//! A worker is a copy of this process made at the barrier, while the
//! coordinator holds every stage: it inherits its stage (operator and
//! state) and runs the same stage loop over the record rings (see
//! `child.rs`). Nodes placed [`Local`](crate::topology::Placement::Local) — the
//! source and the sink — stay on threads of this process and use the
//! record rings from here.
//!
//! This module builds that half ([`Distributed::enter`]), takes it apart
//! again ([`Distributed::read_back`], [`Distributed::leave`]) and watches
//! its workers; it never decides anything. The coordinator holds the stages
//! and runs the two switch transactions over these steps (see
//! `coordinator/switch.rs`), so every failure here is returned, not acted on.

use crate::child::{owns_nothing, WorkerPlan, EXIT_ABORTED, EXIT_FAILED};
use crate::edge::{install_stamp_rings, CopyOutError, EdgeSpec, Moved};
use crate::erased::{Erased, Residue, State};
use crate::error::Error;
use crate::latency::{Stamp, StampRx, StampTx};
use crate::plan::{Fault, Options};
use crate::shared::Shared;
use crate::stage::ErasedStage;
use crate::topology::{NodeId, Placement};
use ringweave_ipc::control::{Cmd, ControlTable, StageSlot, WorkerStatus};
use ringweave_ipc::exit_watch::ExitWatch;
use ringweave_ipc::futex;
use ringweave_ipc::record_ring::RecordRing;
use ringweave_ipc::segment::{Segment, SegmentLayout};
use ringweave_ipc::sync::atomic::Ordering;
use ringweave_ipc::worker::{Worker, WorkerExit};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of each shared stamp ring: 512 stamps (32-byte frames).
const STAMP_RING_BYTES: usize = 16 << 10;

/// A stage held by the coordinator during a switch.
pub(crate) type Parked<'a> = &'a mut (dyn ErasedStage + 'static);

/// What the distributed half reads of the coordinator for one step.
#[derive(Clone, Copy)]
pub(crate) struct Run<'a> {
    pub shared: &'a Shared,
    pub options: &'a Options,
    /// Indexed by edge.
    pub edges: &'a [Box<dyn EdgeSpec>],
}

impl Run<'_> {
    /// The name of node `n`.
    fn name(&self, n: NodeId) -> &str {
        &self.shared.names[n.0]
    }

    fn controls(&self) -> &ControlTable {
        &self.shared.controls
    }
}

/// The data segment, its rings and the workers.
pub(crate) struct Distributed {
    /// One record ring per edge, in `data`. Declared before `workers` so
    /// nothing here is unmapped while a worker is alive in this struct.
    rings: Vec<RecordRing>,
    /// One stamp ring per edge (sampled latency, see `latency.rs`).
    _stamp_rings: Vec<RecordRing>,
    /// Indexed by node; `Some` for nodes placed in workers.
    workers: Vec<Option<Worker>>,
    /// Indexed by node: the watchdog's last view of each worker.
    progress: Vec<Progress>,
    /// When a worker was first seen stopping because a neighbour failed.
    reaction_seen: Option<Instant>,
    /// Wakes the coordinator when a worker ends (see `watch`).
    watch: Option<ExitWatch>,
    _data: Arc<Segment>,
}

/// What the watchdog last saw of a worker: its input count and since when
/// it has not moved.
#[derive(Clone, Copy)]
struct Progress {
    items_in: u64,
    since: Instant,
}

// SAFETY: `RecordRing` holds raw pointers into the data segment, which the
// `Arc<Segment>` here keeps mapped wherever this struct goes; all its methods
// go through atomics or `unsafe` contracts the coordinator upholds. `Worker`
// is a pid. Nothing here is tied to the thread that made it.
unsafe impl Send for Distributed {}

impl Drop for Distributed {
    fn drop(&mut self) {
        // Worker's own Drop kills and reaps; do it before the rings go.
        for worker in self.workers.iter_mut() {
            drop(worker.take());
        }
    }
}

/// The data segment with its rings and the residual items archived in
/// them. The only ring ends made in this process are the local nodes'
/// producers (they wrote their edge's residue and keep writing); the other
/// producers that wrote residues were detached, and every worker attaches
/// its own ends after the fork, so the parent hands a worker nothing that
/// it owns.
struct LaidOut {
    data: Arc<Segment>,
    rings: Vec<RecordRing>,
    stamp_rings: Vec<RecordRing>,
    local_outputs: Vec<(NodeId, Erased<crate::erased::End>)>,
    moved: Moved,
    /// The residue read back from the rings (see [`Distributed::enter`]).
    snapshot: Option<Vec<Erased<Residue>>>,
}

/// A distributed half just built.
pub(crate) struct Entered {
    pub dist: Distributed,
    /// The residual items archived into its rings.
    pub moved: Moved,
    /// With crash recovery on: those items, per edge, for the first
    /// checkpoint (`None` when entered from a checkpoint).
    pub snapshot: Option<Vec<Erased<Residue>>>,
}

/// Why `lay_out` failed: the residual items did not fit (a larger ring may
/// do), or anything else.
enum LayOutError {
    Full(String),
    Other(String),
}

/// Everything a switch back reads from the distributed half, validated,
/// before it commits.
pub(crate) struct ReadBack {
    /// Indexed by edge: the unread items of its record ring.
    residue: Vec<Erased<Residue>>,
    /// Indexed by node: the state each worker saved, if any.
    states: Vec<Option<Erased<State>>>,
    pub moved: Moved,
}

impl ReadBack {
    /// The residue (indexed by edge) and the states (indexed by node): a
    /// checkpoint keeps them instead of leaving.
    pub(crate) fn into_parts(self) -> (Vec<Erased<Residue>>, Vec<Option<Erased<State>>>) {
        (self.residue, self.states)
    }
}

/// A worker's failure, and whether replacing the worker may cure it.
pub(crate) struct Failure {
    pub error: Error,
    /// Killed by a signal (SIGKILL, SIGSEGV, the OOM killer, the stall
    /// watchdog) or a replica process died: not the stage's own verdict. A
    /// panic, a failed record, an exit code are deterministic: no.
    pub restartable: bool,
}

/// How a worker answered a pause request.
pub(crate) enum WorkerPause {
    /// It saved its state and waits for a decision (or it had finished its
    /// stream, which the caller sees as draining).
    Paused,
    /// It did not accept before the deadline; it runs on as if never asked.
    Declined,
    /// A worker failed: the run fails with this error, or recovers.
    Failed(Failure),
}

impl Distributed {
    /// With every stage parked (`stages`, indexed by node): builds the
    /// distributed half and commits to it — the in-process rings are
    /// emptied, the local nodes attached to their record rings. The caller
    /// restarts the local threads. On error nothing has changed: every
    /// worker forked is killed and reaped.
    ///
    /// `from`: a checkpoint's residue (a recovery), archived into the
    /// record rings instead of the in-process rings' items and left as it
    /// is. With crash recovery on and no `from`, the items archived are
    /// read back (a `Vec<T>` per edge) to be the first checkpoint's.
    pub(crate) fn enter(
        run: Run<'_>,
        stages: &mut [Parked<'_>],
        from: Option<&mut [Erased<Residue>]>,
    ) -> Result<Entered, String> {
        let result = Self::build(run, stages, from);
        if result.is_err() {
            clear_pids(run.controls());
        }
        result
    }

    fn build(
        run: Run<'_>,
        stages: &mut [Parked<'_>],
        from: Option<&mut [Erased<Residue>]>,
    ) -> Result<Entered, String> {
        if !run.controls().is_shared() {
            return Err(
                "the control table is not in shared memory (see the warning at start)".into(),
            );
        }
        // With SIGCHLD ignored the kernel reaps each worker as it exits: a
        // crash and a finished stage would look alike (`WorkerExit::Unknown`),
        // so refuse before forking rather than guess.
        if ringweave_ipc::worker::sigchld_ignored() {
            return Err(
                "SIGCHLD is ignored (SIG_IGN or SA_NOCLDWAIT) in this process: worker \
                 exits could not be observed; restore its default disposition to use \
                 distributed mode"
                    .into(),
            );
        }
        let topology = &run.shared.topology;
        // The residual items must fit their record rings; a ring too small
        // for them is doubled (its pages cost nothing until touched) up to
        // 64 times the configured size.
        let mut ring_bytes = run.options.shm_ring_bytes;
        let limit = ring_bytes.saturating_mul(64).min(RecordRing::MAX_CAPACITY);
        let mut from = from;
        let laid = loop {
            match lay_out(run, stages, ring_bytes, from.as_deref_mut()) {
                Ok(laid) => break laid,
                Err(LayOutError::Full(_)) if ring_bytes < limit => ring_bytes *= 2,
                Err(LayOutError::Full(cause) | LayOutError::Other(cause)) => return Err(cause),
            }
        };
        let LaidOut {
            data,
            rings,
            stamp_rings,
            local_outputs,
            moved,
            snapshot,
        } = laid;

        // Fork one worker per node placed in a worker. The child gets
        // addresses only: it attaches its own ring ends after the fork, so
        // the closure owns nothing (`Worker::spawn` forgets it in the
        // parent, where anything it owned would leak on every switch).
        let mut workers: Vec<Option<Worker>> = (0..topology.nodes()).map(|_| None).collect();
        for node in topology.workers() {
            let name = run.name(node);
            if run.options.faults.contains(&Fault::Fork(name.to_owned())) {
                return Err(format!(
                    "fork of the worker of stage `{name}`: injected failure"
                ));
            }
            let (Some(input), Some(output)) = (topology.input_of(node), topology.output_of(node))
            else {
                return Err(format!("stage `{name}` placed in a worker lacks an edge"));
            };
            let plan = WorkerPlan {
                stage: &mut *stages[node.0],
                shared: run.shared,
                index: node.0,
                batch: run.options.batch_size,
                edge_items: run.options.ring_capacity,
                input: (&*run.edges[input.0], &rings[input.0]),
                output: (&*run.edges[output.0], &rings[output.0]),
                stamps: (&stamp_rings[input.0], &stamp_rings[output.0]),
                dies: run
                    .options
                    .faults
                    .contains(&Fault::WorkerDiesAtStart(name.to_owned())),
                state_bytes: run.options.max_state_bytes,
                ring_bytes: run.options.shm_ring_bytes,
            };
            let slot = run.controls().slot(node.0);
            // Written by the worker when it is attached.
            slot.set_status(WorkerStatus::Starting, Ordering::Relaxed);
            slot.control.reset();
            // A message or state an earlier worker of this stage left must
            // not be read as this one's (Relaxed: the fork orders these
            // stores before the child runs).
            slot.error_len.store(0, Ordering::Relaxed);
            slot.state_len.store(0, Ordering::Relaxed);
            let child = move || plan.run();
            owns_nothing(&child);
            // Cleared before the fork: the new worker may fail at once.
            slot.failed_replica.store(0, Ordering::Relaxed);
            // SAFETY: the closure runs only in the child, which uses its own
            // copy of the stage (the coordinator holds it parked, so no
            // thread of ours is inside it at the fork), ring ends it attaches
            // to rings nobody else uses (see `WorkerPlan::run`), the control
            // table in shared memory, and the allocator. It takes no lock and
            // does not log (see `child.rs`).
            let spawned = unsafe { Worker::spawn(name, child) };
            match spawned {
                Ok(worker) => {
                    let pid = worker.pid().as_raw() as u32;
                    slot.pid.store(pid, Ordering::Relaxed);
                    workers[node.0] = Some(worker);
                }
                // `workers` drops here: every worker forked so far is killed
                // and reaped.
                Err(e) => return Err(e.to_string()),
            }
        }

        // Verify that every worker came up.
        let deadline = Instant::now() + switch_timeout(run.options);
        for (index, worker) in workers.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            await_ready(run.controls().slot(index), worker, deadline).map_err(|cause| {
                format!("worker of stage `{}` {cause}", run.name(NodeId(index)))
            })?;
        }

        // Commit: the items now live in the record rings.
        for (e, link) in topology.edges() {
            if let Some(input) = stages[link.to.0].ring_input() {
                run.edges[e.0].clear(input);
            }
        }
        for (node, output) in local_outputs {
            stages[node.0].attach_shm(None, Some(output));
        }
        for (e, link) in topology.edges() {
            let ring = &stamp_rings[e.0];
            if topology.placement(link.from) == Placement::Local {
                // SAFETY: the only producer of this stamp ring (its writer
                // runs here); `stamp_rings`, kept in `Distributed`, keeps it
                // mapped.
                let tx = unsafe { ring.producer::<Stamp>() };
                stages[link.from.0].set_stamps(None, Some(StampTx::Shm(tx)));
            }
            if topology.placement(link.to) == Placement::Local {
                // SAFETY: as above, for the only consumers of this edge's
                // record ring and stamp ring: its reader runs here.
                let (input, rx) = unsafe {
                    (
                        run.edges[e.0].record_consumer(&rings[e.0]),
                        ring.consumer::<Stamp>(),
                    )
                };
                stages[link.to.0].attach_shm(Some(input), None);
                stages[link.to.0].set_stamps(Some(StampRx::Shm(rx)), None);
            }
        }
        let dist = Self {
            rings,
            _stamp_rings: stamp_rings,
            workers,
            progress: vec![
                Progress {
                    items_in: 0,
                    since: Instant::now(),
                };
                topology.nodes()
            ],
            reaction_seen: None,
            watch: None,
            _data: data,
        };
        Ok(Entered {
            dist,
            moved,
            snapshot,
        })
    }

    /// Calls `on_exit` from a thread of its own the moment a worker ends
    /// (a pidfd becoming readable), so that a crash is noticed at once
    /// rather than at the coordinator's next tick, which stays as the
    /// fallback (and the only way on kernels without pidfds).
    pub(crate) fn watch(&mut self, on_exit: impl Fn() + Send + 'static) {
        match ExitWatch::new(self.workers.iter().flatten(), "rw-exit-watch", on_exit) {
            Ok(watch) => self.watch = watch,
            Err(e) => tracing::warn!(error = %e, "no exit watch: worker ends are polled"),
        }
    }

    /// Asks the worker of `node` to pause: it saves its state into its state
    /// area and waits for a decision (see `child.rs`).
    pub(crate) fn pause_worker(
        &mut self,
        run: Run<'_>,
        node: NodeId,
        deadline: Instant,
    ) -> WorkerPause {
        let control = run.controls().get(node.0);
        control.request_pause();
        // The worker sleeps on its record rings; every thread of this
        // process that could be asleep on an in-process ring is paused
        // already (the barrier visits feeders first).
        self.wake();
        let mut withdrawn = false;
        loop {
            // SYNC POINT: worker-paused. Pairs with the Release store of
            // `Paused` in `worker_main`: the saved state is visible.
            let word = control.cmd_word().load(Ordering::Acquire);
            if word == Cmd::Paused as u32 {
                return WorkerPause::Paused;
            }
            // A worker that finished its stream has reached every barrier;
            // the caller sees the pipeline draining and rolls back.
            if self.finished(run, node) {
                return WorkerPause::Paused;
            }
            if let Some(failure) = self.check(run) {
                return WorkerPause::Failed(failure);
            }
            let now = Instant::now();
            if now >= deadline && !withdrawn {
                if control.cancel_pause() {
                    return WorkerPause::Declined;
                }
                // It accepted already: wait for it to finish pausing.
                withdrawn = true;
            }
            let slice = Instant::now() + Duration::from_millis(5);
            let until = if withdrawn {
                slice
            } else {
                slice.min(deadline)
            };
            let _ = futex::wait_until(control.cmd_word(), word, Some(until));
        }
    }

    /// Undoes a pause: workers that paused carry on; a worker that has not
    /// accepted yet never will.
    pub(crate) fn resume_workers(&self, run: Run<'_>) {
        for node in run.shared.topology.workers() {
            let control = run.controls().get(node.0);
            if !control.cancel_pause() && control.load_cmd(Ordering::Acquire) == Cmd::Paused {
                control.store_cmd(Cmd::Resume, Ordering::Release);
                let _ = futex::wake(control.cmd_word(), u32::MAX);
            }
        }
    }

    /// Reads every record ring and every worker's saved state, validated,
    /// consuming nothing. Every stage is paused. `Err` names what failed.
    pub(crate) fn read_back(
        &self,
        run: Run<'_>,
        stages: &[Parked<'_>],
    ) -> Result<ReadBack, String> {
        let topology = &run.shared.topology;
        let mut moved = Moved::default();
        let mut residue = Vec::with_capacity(self.rings.len());
        for (e, link) in topology.edges() {
            // SAFETY: both ends of every ring are paused: the local threads
            // handed their stages over (through the event channel), the
            // workers acknowledged with `Paused` (read with Acquire). Every
            // producer flushed before pausing.
            let (items, m) =
                unsafe { run.edges[e.0].copy_in(&self.rings[e.0]) }.map_err(|cause| {
                    format!(
                        "edge `{}` → `{}`: {cause}",
                        run.name(link.from),
                        run.name(link.to)
                    )
                })?;
            residue.push(items);
            moved += m;
        }
        let mut states = Vec::with_capacity(topology.nodes());
        for (index, stage) in stages.iter().enumerate() {
            let node = NodeId(index);
            let slot = run.controls().slot(index);
            // Relaxed: ordered by the Acquire load of `Paused` in `pause_worker`.
            let len = slot.state_len.load(Ordering::Relaxed);
            if topology.placement(node) == Placement::Local || len == 0 {
                states.push(None);
                continue;
            }
            let name = run.name(node);
            if len == u64::MAX {
                let message = read_error(run.controls(), index);
                // Consumed: the switch rolls back and this worker runs on, so
                // a later crash must not be reported with this message.
                // Relaxed: the Release store of the resume decision orders it
                // before anything the worker writes next.
                slot.error_len.store(0, Ordering::Relaxed);
                return Err(format!("stage `{name}`: {message}"));
            }
            // SAFETY: the worker wrote its state before storing `Paused`,
            // which `pause_worker` read with Acquire; it writes nothing more
            // until told to resume, after `bytes` is gone.
            let bytes = unsafe { run.controls().saved_state(index, len as usize) }
                .ok_or_else(|| "no state area".to_string())?;
            states.push(
                stage
                    .decode_state(bytes)
                    .map_err(|cause| format!("stage `{name}`: {cause}"))?,
            );
        }
        Ok(ReadBack {
            residue,
            states,
            moved,
        })
    }

    /// The commit of a switch back: the workers leave, the residual items
    /// go to the in-process rings (behind what they hold), the states and
    /// counters to the parked stages, the local nodes back to their
    /// in-process rings. The caller restarts every thread.
    ///
    /// Returns the workers, told to leave: reaping them (each tears down a
    /// copy of the address space, milliseconds at 100 MB) is not part of the
    /// pause, so the caller does it ([`reap_leaving`]) once the threads run.
    pub(crate) fn leave(
        mut self,
        run: Run<'_>,
        stages: &mut [Parked<'_>],
        read: ReadBack,
    ) -> Vec<(NodeId, Worker)> {
        let topology = &run.shared.topology;
        // All at once: the workers only `_exit` from here, touching nothing.
        let mut leaving: Vec<(NodeId, Worker)> = self
            .workers
            .iter_mut()
            .enumerate()
            .filter_map(|(index, worker)| worker.take().map(|w| (NodeId(index), w)))
            .collect();
        for (node, _) in &leaving {
            let control = run.controls().get(node.0);
            control.store_cmd(Cmd::Exit, Ordering::Release);
            let _ = futex::wake(control.cmd_word(), u32::MAX);
        }
        // The threads resumed next reuse these control words: each worker
        // must have read its `Exit` first (microseconds; its exit is not).
        for (node, worker) in &mut leaving {
            await_leaving(run.controls().slot(node.0), worker);
        }
        detach_locals(run, stages);
        for ((e, link), items) in topology.edges().zip(read.residue) {
            if let Some(outbox) = stages[link.from.0].ring_output() {
                run.edges[e.0].append(outbox, items);
            }
        }
        for (index, state) in read.states.into_iter().enumerate() {
            let (items_in, items_out) = run.controls().get(index).counts();
            stages[index].set_tally(items_in, items_out);
            if let Some(state) = state {
                stages[index].set_state(state);
            }
        }
        install_stamp_rings(stages, topology);
        drop(self);
        clear_pids(run.controls());
        leaving
    }

    /// A recovery: with every worker killed and reaped ([`kill_all`],
    /// [`reap_all`]) and the local nodes paused, takes the local nodes off
    /// the record rings and unmaps the segment. Nothing is read back: the
    /// run restarts from its checkpoint.
    ///
    /// [`kill_all`]: Self::kill_all
    /// [`reap_all`]: Self::reap_all
    pub(crate) fn abandon(self, run: Run<'_>, stages: &mut [Parked<'_>]) {
        detach_locals(run, stages);
        install_stamp_rings(stages, &run.shared.topology);
        drop(self);
        clear_pids(run.controls());
    }

    /// Notices workers that ended. A worker that exited 0 finished its
    /// stage; any other end is the run's failure, returned. Every ended
    /// worker is reaped either way.
    pub(crate) fn check(&mut self, run: Run<'_>) -> Option<Failure> {
        // A worker stops by itself (EXIT_ABORTED) only because a neighbour
        // failed: report the neighbour, not the one that reacted to it.
        let mut culprit = None;
        let mut reacted = None;
        // A failure that is not restartable (a panic, an unknown end) wins
        // over a crash seen in the same look: it must fail the run.
        let restartable_at =
            |index: usize, exit: Option<WorkerExit>| restartable(run.controls().slot(index), exit);
        for (index, worker) in self.workers.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            let pid = worker.pid().as_raw();
            let exit = match worker.try_status() {
                Ok(None) => continue,
                Ok(Some(exit)) if ended_well(run.controls().slot(index), exit) => continue,
                Ok(Some(exit @ WorkerExit::Exited(EXIT_ABORTED))) => {
                    reacted.get_or_insert((index, pid, Some(exit)));
                    continue;
                }
                Ok(Some(exit)) => Some(exit),
                Err(e) => {
                    tracing::warn!(stage = %run.name(NodeId(index)), error = %e,
                        "could not learn how a worker ended");
                    None
                }
            };
            let wins = match culprit {
                None => true,
                Some((i, _, e)) => restartable_at(i, e) && !restartable_at(index, exit),
            };
            if wins {
                culprit = Some((index, pid, exit));
            }
        }
        let (index, pid, ended) = match (culprit, reacted) {
            (Some(culprit), _) => culprit,
            (None, Some(reacted)) => {
                // The failure it reacted to (a worker, or a thread here) is
                // about to show; give it a moment before settling for this.
                let seen = *self.reaction_seen.get_or_insert_with(Instant::now);
                if seen.elapsed() < Duration::from_millis(500) {
                    return None;
                }
                reacted
            }
            (None, None) => return None,
        };
        // Only a worker known to have ended may have its error area read: if
        // its status could not be learned (`ended` is `None`), it may still
        // be writing.
        let message = if ended.is_some() {
            read_error(run.controls(), index)
        } else {
            String::new()
        };
        let mut stage = run.name(NodeId(index)).to_owned();
        let slot = run.controls().slot(index);
        // Relaxed: written by the worker before it exited, which `ended`
        // (its reaping) orders before this.
        let replica = slot.failed_replica.load(Ordering::Relaxed) as usize;
        if ended == Some(WorkerExit::Exited(EXIT_FAILED)) && replica != 0 {
            // One of its replica processes died: that is the crash.
            stage = format!("{stage}[{replica}]");
            let pid = slot
                .replica_pids
                .0
                .get(replica)
                .map_or(0, |p| p.load(Ordering::Relaxed));
            return Some(Failure {
                error: Error::WorkerCrashed {
                    stage,
                    pid: pid as i32,
                    exit: message,
                },
                restartable: restartable(slot, ended),
            });
        }
        let restartable = restartable(slot, ended);
        let error = if ended == Some(WorkerExit::Exited(Worker::PANIC_EXIT_CODE)) {
            // Only `worker_main` exits with this code after a panic it
            // caught, leaving the message in the error area.
            Error::StagePanicked { stage, message }
        } else {
            let exit = ended.map_or_else(|| "ended in an unknown way".to_owned(), describe);
            let exit = if message.is_empty() {
                exit
            } else {
                format!("{exit}: {message}")
            };
            Error::WorkerCrashed { stage, pid, exit }
        };
        Some(Failure { error, restartable })
    }

    /// The watchdog: kills a worker whose input holds records and whose
    /// output is empty (so it waits for neither) but whose counters have
    /// stood still for longer than the stall timeout, and returns the error
    /// naming it. Workers waiting for input or for room are not stalled, and
    /// a switch (which runs outside the event loop that calls this)
    /// restarts every clock.
    pub(crate) fn check_stalls(&mut self, run: Run<'_>) -> Option<Failure> {
        let timeout = run.options.stall_timeout;
        let topology = &run.shared.topology;
        let now = Instant::now();
        for (index, worker) in self.workers.iter().enumerate() {
            let Some(worker) = worker else { continue };
            let node = NodeId(index);
            let (Some(input), Some(output)) = (topology.input_of(node), topology.output_of(node))
            else {
                continue;
            };
            let (items_in, _) = run.controls().get(index).counts();
            let seen = &mut self.progress[index];
            let (read, write) = self.rings[input.0].positions();
            let (out_read, out_write) = self.rings[output.0].positions();
            // Stuck, not backpressured: its input holds records and its
            // consumer has taken everything it published (a worker waiting
            // for room always has unread records in its output).
            let has_work = write > read && out_write == out_read;
            if items_in != seen.items_in || !has_work || worker.exit().is_some() {
                *seen = Progress {
                    items_in,
                    since: now,
                };
                continue;
            }
            let stalled_for = now.duration_since(seen.since);
            if stalled_for > timeout {
                // Reaped later with the others; the failure the caller
                // records comes first, so this SIGKILL is not reported as
                // a crash.
                let _ = worker.kill();
                return Some(Failure {
                    error: Error::WorkerStalled {
                        stage: run.name(node).to_owned(),
                        pid: worker.pid().as_raw() as u32,
                        stalled_for,
                        items_in,
                        input_bytes: write - read,
                    },
                    restartable: true,
                });
            }
        }
        None
    }

    /// Restarts the watchdog's clocks (after a pause of the workers).
    pub(crate) fn restart_clocks(&mut self) {
        let now = Instant::now();
        for seen in &mut self.progress {
            seen.since = now;
        }
    }

    /// Whether the worker of `node` has finished its stage (exited 0).
    pub(crate) fn finished(&mut self, run: Run<'_>, node: NodeId) -> bool {
        match self.workers.get_mut(node.0) {
            Some(Some(worker)) => match worker.try_status() {
                Ok(Some(exit)) => ended_well(run.controls().slot(node.0), exit),
                _ => false,
            },
            _ => false,
        }
    }

    /// A node whose worker has ended, if any: a pipeline that is draining
    /// does not switch.
    pub(crate) fn ended(&mut self) -> Option<NodeId> {
        self.workers
            .iter_mut()
            .enumerate()
            .find_map(|(index, worker)| {
                let worker = worker.as_mut()?;
                (!matches!(worker.try_status(), Ok(None))).then_some(NodeId(index))
            })
    }

    /// Whether a worker process still runs.
    pub(crate) fn running(&self) -> bool {
        self.workers.iter().flatten().any(|w| w.exit().is_none())
    }

    /// At the end of a run: reaps every worker (they have finished, or are
    /// killed).
    pub(crate) fn reap_all(&mut self, controls: &ControlTable) {
        for worker in self.workers.iter_mut() {
            if let Some(worker) = worker.take() {
                let _ = worker.wait();
            }
        }
        clear_pids(controls);
    }

    /// Kills every worker (the run is torn down); threads blocked on their
    /// rings notice the abort at their next poll.
    pub(crate) fn kill_all(&mut self, controls: &ControlTable) {
        for (index, worker) in self.workers.iter().enumerate() {
            let Some(worker) = worker else { continue };
            if worker.exit().is_none() {
                let _ = worker.kill();
            }
            controls.get(index).store_cmd(Cmd::Abort, Ordering::Relaxed);
        }
    }

    /// Fill of each record ring (bytes), indexed by edge.
    pub(crate) fn fills(&self) -> Vec<f64> {
        self.rings
            .iter()
            .map(|ring| {
                let (read, write) = ring.positions();
                write.saturating_sub(read) as f64 / ring.capacity() as f64
            })
            .collect()
    }

    /// Wakes every end of every record ring.
    pub(crate) fn wake(&self) {
        for ring in &self.rings {
            ring.wake();
        }
    }
}

/// Creates the data segment with record rings of `ring_bytes` and archives
/// every edge's residual items into them, consuming nothing.
fn lay_out(
    run: Run<'_>,
    stages: &mut [Parked<'_>],
    ring_bytes: usize,
    mut from: Option<&mut [Erased<Residue>]>,
) -> Result<LaidOut, LayOutError> {
    let topology = &run.shared.topology;
    let edges = topology.edge_count();
    let other = |e: &dyn std::fmt::Display| LayOutError::Other(e.to_string());
    let layout = RecordRing::layout(ring_bytes).map_err(|e| other(&e))?;
    let stamp_layout = RecordRing::layout(STAMP_RING_BYTES).map_err(|e| other(&e))?;
    let mut segment_layout = SegmentLayout::new();
    let offsets = (0..edges)
        .map(|_| segment_layout.reserve(layout))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| other(&e))?;
    let stamp_offsets = (0..edges)
        .map(|_| segment_layout.reserve(stamp_layout))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| other(&e))?;
    if run.options.faults.contains(&Fault::SegmentCreate) {
        return Err(LayOutError::Other("data segment: injected failure".into()));
    }
    let data = Segment::create("ringweave-data", segment_layout.size())
        .map(Arc::new)
        .map_err(|e| {
            LayOutError::Other(format!(
                "data segment of {} bytes: {e}",
                segment_layout.size()
            ))
        })?;
    let rings = offsets
        .iter()
        .map(|&offset| RecordRing::new(&data, offset, ring_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| other(&e))?;
    let stamp_rings = stamp_offsets
        .iter()
        .map(|&offset| RecordRing::new(&data, offset, STAMP_RING_BYTES))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| other(&e))?;
    // Archive the residual items, edge by edge, without consuming them.
    let mut moved = Moved::default();
    let mut local_outputs = Vec::new();
    let mut snapshot = (from.is_none() && run.options.max_restarts > 0).then(Vec::new);
    for (e, link) in topology.edges() {
        let spec = &run.edges[e.0];
        // SAFETY: the ring is fresh and this is its only producer until it
        // is detached below (before any fork) or handed to its local writer
        // at the commit; `rings` keeps the segment mapped.
        let mut producer = unsafe { spec.record_producer(&rings[e.0]) };
        let input = stages[link.to.0].ring_input().ok_or_else(|| {
            LayOutError::Other(format!("stage `{}` has no input", run.name(link.to)))
        })?;
        let copied = match from.as_deref_mut() {
            Some(residue) => spec.fill(&mut residue[e.0], &mut producer),
            None => spec.copy_out(input, &mut producer),
        };
        let copied = copied.map_err(|error| {
            let cause = format!(
                "edge `{}` → `{}`: {error}",
                run.name(link.from),
                run.name(link.to)
            );
            match error {
                CopyOutError::Full { .. } => LayOutError::Full(cause),
                CopyOutError::Item { .. } => LayOutError::Other(cause),
            }
        })?;
        moved += copied;
        if let Some(snapshot) = &mut snapshot {
            // SAFETY: the ring is fresh; its only producer is `producer`,
            // which has flushed, and no consumer exists yet.
            let (items, _) = unsafe { spec.copy_in(&rings[e.0]) }.map_err(|e| other(&e))?;
            snapshot.push(items);
        }
        if topology.placement(link.from) == Placement::Local {
            local_outputs.push((link.from, producer));
        } else {
            // The worker of `link.from` attaches its own producer.
            spec.detach_producer(producer);
        }
    }
    Ok(LaidOut {
        data,
        rings,
        stamp_rings,
        local_outputs,
        moved,
        snapshot,
    })
}

/// Takes the local nodes off their record rings (closing their ends).
fn detach_locals(run: Run<'_>, stages: &mut [Parked<'_>]) {
    for (index, stage) in stages.iter_mut().enumerate() {
        if run.shared.topology.placement(NodeId(index)) == Placement::Local {
            stage.detach_shm();
        }
    }
}

/// Reaps workers told to leave at a switch back.
pub(crate) fn reap_leaving(names: &[String], leaving: Vec<(NodeId, Worker)>) {
    for (node, worker) in leaving {
        match worker.wait() {
            Ok(WorkerExit::Exited(0)) => {}
            other => tracing::warn!(stage = %names[node.0], ?other,
                "worker did not leave cleanly at a switch back"),
        }
    }
}

/// The switch timeout of a run's options (the hybrid config's, or its
/// default outside hybrid mode).
pub(crate) fn switch_timeout(options: &Options) -> Duration {
    match &options.mode {
        crate::config::ExecutionMode::Hybrid(config) => {
            Duration::from_millis(config.switch_timeout_ms)
        }
        _ => Duration::from_millis(crate::config::HybridConfig::default().switch_timeout_ms),
    }
}

/// Forgets the worker pids the handle reports.
fn clear_pids(controls: &ControlTable) {
    for index in 0..controls.stages() {
        let slot = controls.slot(index);
        slot.pid.store(0, Ordering::Relaxed);
        for pid in &slot.replica_pids.0 {
            pid.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether a worker that ended this way may be replaced: killed by a
/// signal other than SIGABRT (which a panic with `panic = "abort"`, or a
/// double panic, raises: deterministic, as a panic is), or failed because
/// one of its replica processes died (`failed_replica`).
fn restartable(slot: &StageSlot, ended: Option<WorkerExit>) -> bool {
    match ended {
        Some(WorkerExit::Signaled(signal)) => signal != nix::sys::signal::Signal::SIGABRT,
        // Relaxed: written by the worker before it exited, which reaping
        // it orders before this.
        Some(WorkerExit::Exited(EXIT_FAILED)) => slot.failed_replica.load(Ordering::Relaxed) != 0,
        _ => false,
    }
}

/// Whether a worker that ended finished its stage: it exited 0, or its
/// status was taken by someone else (SIGCHLD ignored, a foreign `waitpid`)
/// after it had marked itself finished.
fn ended_well(slot: &StageSlot, exit: WorkerExit) -> bool {
    match exit {
        WorkerExit::Exited(0) => true,
        // SYNC POINT: worker-finished. Pairs with the Release in
        // `worker_main`.
        WorkerExit::Unknown => slot.status(Ordering::Acquire) == Some(WorkerStatus::Finished),
        _ => false,
    }
}

fn describe(exit: WorkerExit) -> String {
    match exit {
        WorkerExit::Exited(EXIT_FAILED) => "failed".into(),
        WorkerExit::Exited(EXIT_ABORTED) => "stopped (its neighbour failed)".into(),
        WorkerExit::Exited(code) if code == Worker::PANIC_EXIT_CODE => "panicked".into(),
        WorkerExit::Exited(code) => format!("exited with code {code}"),
        WorkerExit::Signaled(signal) => format!("was killed by {signal}"),
        WorkerExit::Unknown => "ended; its exit status was taken by someone else \
                                (SIGCHLD ignored or a foreign waitpid)"
            .into(),
    }
}

/// Waits until the worker marks itself `Ready`, or fails.
fn await_ready(slot: &StageSlot, worker: &mut Worker, deadline: Instant) -> Result<(), String> {
    loop {
        // SYNC POINT: worker-ready. Pairs with the Release in `worker_main`.
        let word = slot.status_word().load(Ordering::Acquire);
        if word == WorkerStatus::Ready as u32 {
            return Ok(());
        }
        match worker.try_status() {
            Ok(Some(exit)) => return Err(format!("{} at start", describe(exit))),
            Err(e) => return Err(e.to_string()),
            Ok(None) => {}
        }
        if Instant::now() >= deadline {
            return Err("did not start before the switch timeout".into());
        }
        let until = (Instant::now() + Duration::from_millis(2)).min(deadline);
        let _ = futex::wait_until(slot.status_word(), word, Some(until));
    }
}

/// Waits until a worker told to leave says it has (or is gone).
fn await_leaving(slot: &StageSlot, worker: &mut Worker) {
    loop {
        // SYNC POINT: worker-leaving. Pairs with the Release in
        // `worker_main`: the worker no longer reads its control word.
        let word = slot.status_word().load(Ordering::Acquire);
        if word == WorkerStatus::Leaving as u32 || !matches!(worker.try_status(), Ok(None)) {
            return;
        }
        let until = Instant::now() + Duration::from_millis(2);
        let _ = futex::wait_until(slot.status_word(), word, Some(until));
    }
}

/// The message a worker left in its error area (empty if none). Called
/// only for a worker that has exited or waits for a decision.
fn read_error(table: &ControlTable, index: usize) -> String {
    // SAFETY: every caller asks about a worker that has ended and was reaped
    // (`check`, which skips a worker whose status it could not learn) or
    // that stored `Paused`, loaded with Acquire, and has not been told to
    // resume (`read_back`): it writes no message now.
    unsafe { table.read_error(index) }
}
