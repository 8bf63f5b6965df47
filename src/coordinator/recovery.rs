//! Crash recovery: checkpoints while distributed, and replacing the workers
//! after one of them dies.
//!
//! **Checkpoint.** The switch barrier with nothing moved: pause every node
//! (feeders first), read every record ring's unread items and every
//! worker's saved state without consuming them (`Distributed::read_back`,
//! as a switch back does), install the states into the stages the
//! coordinator holds parked, keep the items (a `Vec<T>` per edge), note how
//! far the sink and any tee have delivered, empty the source's replay log,
//! and let everything carry on (`resume_distributed`). A checkpoint is in
//! this process's memory, written only once it is whole, so a worker dying
//! in the middle of one leaves the previous one as it was. A switch out is
//! a checkpoint too: the stages are parked and the residue is read back
//! from the rings just laid out.
//!
//! **Replay log.** While distributed the source's output keeps every item
//! it archives into the ring (`ShmOutbox`'s `ReplayLog`), up to
//! `replay_log_items`; a checkpoint starts when the log is half full or
//! `checkpoint_interval` has passed, and the source waits while it is full.
//!
//! **Recovery.** Kill and reap every worker; pause the local threads even
//! where they wait for room with outputs held (their consumer is dead:
//! `StageControl::request_pause_forced`); take the source's log and what it
//! holds; unmap the segment; rewind the sink (and tees) to their checkpoint
//! positions so they skip what they delivered already; lay out a fresh
//! segment whose rings hold the checkpoint's items and fork workers from
//! the parked stages, which hold the checkpoint's states; hand the source
//! the log to send again before anything new; restart the threads.
//! Operators are deterministic (`Fn` closures, explicit state), so the
//! stream after the checkpoint is produced again exactly, and the sink's
//! skip makes each result reach the user once.

use super::{parked_stages, Coordinator, Slot};
use crate::config::Mode;
use crate::distributed::{Distributed, Failure, Parked};
use crate::erased::{Erased, Residue};
use crate::error::Error;
use crate::event::RecoveryEvent;
use crate::shm::LogConfig;
use crate::stage::ErasedStage;
use crate::topology::{NodeId, Placement};
use ringweave_ipc::control::WorkerStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The recovery state of a run with `max_restarts > 0`.
pub(super) struct Recovery {
    /// The source's replay log settings and counters.
    log: LogConfig,
    /// The last completed checkpoint; `None` until the first switch out.
    checkpoint: Option<Checkpoint>,
    restarts: u32,
    events: Vec<RecoveryEvent>,
    /// A restartable failure seen inside a switch or a checkpoint, handled
    /// once that has unwound.
    pending: Option<Error>,
    /// Local stages (the source, tees) that finished while distributed,
    /// kept for a replay.
    finished: Vec<(NodeId, Box<dyn ErasedStage>)>,
    /// When the last checkpoint was taken (or tried).
    last: Instant,
    /// Checkpoints taken.
    taken: u64,
}

/// What the run goes back to after a crash. The stages' states are not
/// here: they are installed into the parked stages.
struct Checkpoint {
    /// Indexed by edge: the items in flight (a `Vec<T>`).
    residue: Vec<Erased<Residue>>,
    /// Indexed by node: how far a stage with effects outside the pipeline
    /// (the sink, a tee) had gone (see `ErasedStage::position`).
    positions: Vec<Option<u64>>,
}

impl Recovery {
    /// The recovery state of a run whose source logs up to `bound` items;
    /// `half_full` wakes the coordinator for a checkpoint.
    pub(super) fn new(bound: usize, half_full: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            log: LogConfig {
                bound,
                fill: Arc::new(AtomicUsize::new(0)),
                peak: Arc::new(AtomicUsize::new(0)),
                half_full: Arc::new(half_full),
            },
            checkpoint: None,
            restarts: 0,
            events: Vec::new(),
            pending: None,
            finished: Vec::new(),
            last: Instant::now(),
            taken: 0,
        }
    }

    /// What the source's output is told to keep.
    pub(super) fn log(&self) -> LogConfig {
        self.log.clone()
    }

    /// Every recovery so far.
    pub(super) fn events(&self) -> &[RecoveryEvent] {
        &self.events
    }

    /// Keeps a finished local stage for a replay.
    pub(super) fn keep(&mut self, node: NodeId, stage: Box<dyn ErasedStage>) {
        self.finished.push((node, stage));
    }

    /// The replay log's bound.
    pub(super) fn bound(&self) -> usize {
        self.log.bound
    }

    /// Checkpoints taken.
    pub(super) fn checkpoints(&self) -> u64 {
        self.taken
    }

    /// Makes a checkpoint of `residue` (what the rings hold, per edge) and
    /// the parked `stages` (their states are installed already): notes the
    /// sink's and tees' positions and empties the source's log.
    fn record(&mut self, stages: &mut [Parked<'_>], source: NodeId, residue: Vec<Erased<Residue>>) {
        stages[source.0].checkpointed();
        self.checkpoint = Some(Checkpoint {
            residue,
            positions: stages.iter().map(|s| s.position()).collect(),
        });
        self.last = Instant::now();
        self.taken += 1;
    }

    /// The most items the replay log has held.
    pub(super) fn peak_log(&self) -> usize {
        self.log.peak.load(Ordering::Relaxed)
    }
}

impl Coordinator {
    /// Records the first checkpoint of a distributed half just entered
    /// (every stage parked): `residue` is what its rings hold.
    pub(super) fn checkpoint_entered(&mut self, residue: Vec<Erased<Residue>>) {
        let source = self.topology().source();
        let Some(recovery) = &mut self.recovery else {
            return;
        };
        recovery.record(&mut parked_stages(&mut self.slots), source, residue);
    }

    /// Whether a checkpoint is due: distributed, the source still running,
    /// and its log half full or the interval passed.
    pub(super) fn checkpoint_due(&self) -> bool {
        let Some(recovery) = &self.recovery else {
            return false;
        };
        if self.mode != Mode::Distributed || self.aborting || self.failure.is_some() {
            return false;
        }
        if !matches!(self.slots[self.topology().source().0], Slot::Thread(_)) {
            return false;
        }
        recovery.log.fill.load(Ordering::Relaxed) >= recovery.log.bound / 2
            || recovery.last.elapsed() >= self.options.checkpoint_interval
    }

    /// Takes a checkpoint (see the module docs). A barrier that times out
    /// or finds the pipeline draining takes none; the next one is tried
    /// after another interval.
    pub(super) fn checkpoint(&mut self) {
        let t0 = Instant::now();
        if let Some(recovery) = &mut self.recovery {
            recovery.last = t0;
        }
        if self.barrier(t0).is_err() {
            return;
        }
        let source = self.topology().source();
        let run = super::run_of(&self.shared, &self.options, &self.edges);
        let (Some(dist), Some(recovery)) = (&self.distributed, &mut self.recovery) else {
            return;
        };
        let mut stages = parked_stages(&mut self.slots);
        match dist.read_back(run, &stages) {
            Ok(read) => {
                let (residue, states) = read.into_parts();
                for (stage, state) in stages.iter_mut().zip(states) {
                    if let Some(state) = state {
                        stage.set_state(state);
                    }
                }
                recovery.record(&mut stages, source, residue);
                tracing::debug!(took_us = t0.elapsed().as_micros() as u64, "checkpoint");
            }
            // The previous checkpoint stands; the stages carry on, unless
            // the source waits for this one: with its log full and a state
            // that does not archive, no checkpoint ever will.
            Err(cause) => {
                tracing::warn!(%cause, "checkpoint failed");
                let (fill, bound) = (
                    recovery.log.fill.load(Ordering::Relaxed),
                    recovery.log.bound,
                );
                if fill >= bound {
                    self.resume_distributed();
                    return self.fail(Error::Distributed {
                        reason: format!(
                            "checkpoint failed with the replay log full ({bound} items): {cause}"
                        ),
                    });
                }
            }
        }
        self.resume_distributed();
    }

    /// A worker failed: recover if the failure is restartable and the run
    /// can, fail the run otherwise. Inside a switch or checkpoint, the
    /// recovery waits until that has unwound (`pending`).
    pub(super) fn worker_failed(&mut self, failure: Failure, in_transaction: bool) {
        if failure.restartable && self.output_complete() {
            // The sink has received the whole stream: a worker dying now
            // (one still exiting, or a replica of it) costs nothing.
            tracing::warn!(error = %failure.error, "a worker died after the sink finished; ignored");
            return;
        }
        let recoverable = failure.restartable
            && self.recovery.is_some()
            && self.mode == Mode::Distributed
            && !self.aborting
            && self.failure.is_none();
        match (&mut self.recovery, recoverable) {
            (Some(recovery), true) if in_transaction => {
                recovery.pending.get_or_insert(failure.error);
            }
            (_, true) => self.recover(failure.error),
            (_, false) => self.fail(failure.error),
        }
    }

    /// Whether the sink has finished after every worker finished its
    /// stream: every result is delivered. (A worker that panics or fails
    /// closes its output too, so the sink finishing alone proves nothing.)
    fn output_complete(&self) -> bool {
        let topology = self.topology();
        let controls = &self.shared.controls;
        self.failure.is_none()
            && !self.aborting
            // Each worker marks itself `Finished` before it closes its
            // output; the mark outlives the process (until the next fork).
            // SYNC POINT: worker-finished. Pairs with the Release in
            // `worker_main`.
            && topology
                .workers()
                .all(|n| controls.slot(n.0).status(Ordering::Acquire) == Some(WorkerStatus::Finished))
            && (0..self.slots.len()).any(|i| {
                topology.output_of(NodeId(i)).is_none()
                    && topology.input_of(NodeId(i)).is_some()
                    && matches!(self.slots[i], Slot::Done)
            })
    }

    /// Whether a failure waits to be recovered from (see `worker_failed`).
    pub(super) fn recovery_pending(&self) -> bool {
        self.recovery.as_ref().is_some_and(|r| r.pending.is_some())
    }

    /// Recovers from a failure that waited for a transaction to unwind.
    pub(super) fn recover_pending(&mut self) {
        if let Some(error) = self.recovery.as_mut().and_then(|r| r.pending.take()) {
            if self.failure.is_none() && !self.aborting {
                self.recover(error);
            }
        }
    }

    /// Replaces every worker and goes back to the last checkpoint (see the
    /// module docs); fails the run with `error` if it cannot.
    fn recover(&mut self, error: Error) {
        let t0 = Instant::now();
        let at = SystemTime::now();
        let max = self.options.max_restarts;
        let source = self.topology().source();
        let Some(recovery) = &mut self.recovery else {
            return self.fail(error);
        };
        // A failure seen during a transaction is this one, or another
        // worker's: this recovery replaces every worker either way.
        recovery.pending = None;
        if recovery.checkpoint.is_none() || self.distributed.is_none() {
            return self.fail(error);
        }
        if recovery.restarts >= max {
            return self.fail(exhausted(error, max));
        }
        let (stage, pid) = culprit(&error);
        tracing::warn!(%error, restart = recovery.restarts + 1, max_restarts = max,
            "worker died: replacing the workers from the last checkpoint");

        // A panic elsewhere, seen now, is the run's failure: recovering
        // would kill that worker and lose its verdict.
        let run = super::run_of(&self.shared, &self.options, &self.edges);
        if let Some(other) = self.distributed.as_mut().and_then(|d| d.check(run)) {
            if !other.restartable {
                return self.fail(other.error);
            }
        }
        // Every worker goes: the others hold state past the checkpoint.
        let controls = &self.shared.controls;
        if let Some(dist) = &mut self.distributed {
            dist.kill_all(controls);
            dist.reap_all(controls);
        }
        // The local threads may wait for room in a dead worker's ring.
        let deadline = t0 + self.switch_timeout();
        for node in self.topology().barrier_order().to_vec() {
            if !self.pause_thread_forced(node, deadline) {
                let name = self.shared.names[node.0].clone();
                return self.fail(not_restarted(
                    error,
                    &format!("stage `{name}` did not pause for the restart"),
                ));
            }
            if self.failure.is_some() {
                return;
            }
        }
        if self.output_complete() {
            // The sink finished while the threads were paused: the worker
            // died after its stream had ended. Nothing is left to do.
            tracing::warn!(%error, "a worker died after the sink finished; ignored");
            return;
        }
        let recovery = self.recovery.as_mut().expect("checked above");
        for (node, stage) in recovery.finished.drain(..) {
            self.slots[node.0] = Slot::Parked(stage);
        }
        if let Some(index) = self
            .slots
            .iter()
            .position(|s| !matches!(s, Slot::Parked(_)))
        {
            // The sink (or another local stage) has finished: nothing is
            // left to deliver again.
            let name = self.shared.names[index].clone();
            return self.fail(not_restarted(
                error,
                &format!("stage `{name}` has finished"),
            ));
        }

        let run = super::run_of(&self.shared, &self.options, &self.edges);
        let topology = &self.shared.topology;
        let checkpoint = recovery.checkpoint.as_mut().expect("checked above");
        let mut stages = parked_stages(&mut self.slots);
        let replay = stages[source.0].take_replay();
        let replayed_items = replay.as_ref().map_or(0, |(_, n)| *n);
        if let Some(dist) = self.distributed.take() {
            dist.abandon(run, &mut stages);
        }
        for (index, stage) in stages.iter_mut().enumerate() {
            if topology.placement(NodeId(index)) == Placement::Worker {
                // Counters stay monotonic: they count the work done again.
                let (items_in, items_out) = run.shared.controls.get(index).counts();
                stage.set_tally(items_in, items_out);
            }
            if let Some(position) = checkpoint.positions[index] {
                stage.rewind(position);
            }
        }
        let entered = loop {
            recovery.restarts += 1;
            match Distributed::enter(run, &mut stages, Some(&mut checkpoint.residue)) {
                Ok(entered) => break entered,
                // A new worker died at start (or the segment failed):
                // another restart, if any are left.
                Err(cause) if recovery.restarts < max => {
                    tracing::warn!(%cause, "restart failed; trying again");
                }
                Err(cause) => {
                    drop(stages);
                    return self.fail(not_restarted(
                        error,
                        &format!("the restart failed: {cause}"),
                    ));
                }
            }
        };
        if let Some((items, _)) = replay {
            stages[source.0].replay(items);
        }
        let restart = recovery.restarts;
        self.install(entered.dist);
        self.resume_threads();
        let event = RecoveryEvent {
            stage,
            pid,
            cause: error.to_string(),
            replayed_items,
            restored_items: entered.moved.items,
            downtime: t0.elapsed(),
            restart,
            at,
        };
        tracing::warn!(stage = %event.stage, pid = event.pid, replayed = event.replayed_items,
            restored = event.restored_items, downtime_us = event.downtime.as_micros() as u64,
            restart = event.restart, "worker replaced");
        #[cfg(feature = "metrics")]
        crate::export::recovered(&event);
        if let Some(recovery) = &mut self.recovery {
            recovery.events.push(event.clone());
        }
        self.shared.telemetry.lock().recoveries.push(event);
    }
}

/// The stage and pid a failure names.
fn culprit(error: &Error) -> (String, u32) {
    match error {
        Error::WorkerCrashed { stage, pid, .. } => (stage.clone(), *pid as u32),
        Error::WorkerStalled { stage, pid, .. } => (stage.clone(), *pid),
        _ => (String::new(), 0),
    }
}

/// `error`, saying that no restart was left.
fn exhausted(error: Error, max: u32) -> Error {
    not_restarted(
        error,
        &format!("all {max} restarts allowed (max_restarts) were used"),
    )
}

/// `error`, saying why the run was not restarted after it.
fn not_restarted(error: Error, why: &str) -> Error {
    match error {
        Error::WorkerCrashed { stage, pid, exit } => Error::WorkerCrashed {
            stage,
            pid,
            exit: format!("{exit}; not restarted: {why}"),
        },
        other => {
            tracing::error!(error = %other, "not restarted: {why}");
            other
        }
    }
}
