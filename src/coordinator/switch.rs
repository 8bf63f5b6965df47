//! The two switch transactions, run by the coordinator over the steps of
//! `distributed.rs`.
//!
//! **In → distributed**: pause every stage (feeders first); create the
//! segment; archive each in-process ring's items, in order, into its record
//! ring *without consuming them*; fork the workers and wait until each says
//! it is attached. Any failure so far kills what was forked, drops the
//! segment and resumes the threads: nothing changed. Commit: drop the items
//! of the in-process rings, attach the record rings to the local nodes
//! (source and sink), resume those threads.
//!
//! **Distributed → in**: pause every node in the same order — a local
//! node's thread through its event channel, a worker through its control
//! word (it saves its state into its state area and waits); read every
//! record ring's unread records and every saved state, validated, *without
//! consuming them*. Any failure: tell the workers to resume, restart the
//! local threads. Commit: tell the workers to leave, append the residual
//! items to the in-process rings (behind what they hold), install the
//! states, restart every thread, then reap the workers.

use super::{Coordinator, Slot};
use crate::config::Mode;
use crate::distributed::{reap_leaving, Distributed, WorkerPause};
use crate::edge::Moved;
use crate::error::Error;
use crate::event::SwitchOutcome;
use crate::topology::{NodeId, Placement};
use std::time::{Duration, Instant};

/// What one switch transaction did.
pub(super) struct Transaction {
    pub outcome: SwitchOutcome,
    /// Residual items (and their archived bytes) that changed transport.
    pub moved: Moved,
    /// From the first pause request to the resume.
    pub pause: Duration,
}

impl Transaction {
    fn completed(moved: Moved, t0: Instant) -> Self {
        Self {
            outcome: SwitchOutcome::Completed,
            moved,
            pause: t0.elapsed(),
        }
    }

    fn rolled_back(cause: String, t0: Instant) -> Self {
        Self {
            outcome: SwitchOutcome::RolledBack(cause),
            moved: Moved::default(),
            pause: t0.elapsed(),
        }
    }

    /// Rolled back before anything paused.
    fn refused(cause: String) -> Self {
        Self {
            outcome: SwitchOutcome::RolledBack(cause),
            moved: Moved::default(),
            pause: Duration::ZERO,
        }
    }

    fn timed_out(outcome: SwitchOutcome, t0: Instant) -> Self {
        Self {
            outcome,
            moved: Moved::default(),
            pause: t0.elapsed(),
        }
    }
}

impl Coordinator {
    /// Runs the switch to `to` (which differs from the current mode).
    pub(super) fn switch_transaction(&mut self, to: Mode) -> Transaction {
        match to {
            Mode::Distributed => self.switch_out(),
            Mode::InProcess => self.switch_back(),
        }
    }

    /// Starts a run in distributed mode: every stage is parked, nothing has
    /// run yet.
    pub(super) fn start_distributed(&mut self) {
        match self.enter_distributed() {
            Ok(_) => self.resume_threads(),
            Err(reason) => self.fail(Error::Distributed { reason }),
        }
    }

    /// With every stage parked: builds the distributed half and commits to
    /// it (except for restarting the threads).
    fn enter_distributed(&mut self) -> Result<Moved, String> {
        let run = super::run_of(&self.shared, &self.options, &self.edges);
        let mut stages = parked_stages(&mut self.slots);
        let entered = Distributed::enter(run, &mut stages, None)?;
        self.install(entered.dist);
        self.mode = Mode::Distributed;
        if let Some(residue) = entered.snapshot {
            self.checkpoint_entered(residue);
        }
        Ok(entered.moved)
    }

    /// The name of a stage that has ended, if any: a pipeline that is
    /// draining does not switch.
    fn draining(&mut self) -> Option<String> {
        let ended = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Done))
            .map(NodeId)
            .or_else(|| self.distributed.as_mut()?.ended())?;
        Some(self.shared.names[ended.0].clone())
    }

    /// The barrier: pauses every node in `Topology::barrier_order` (feeders
    /// first), a node on a thread through its event channel
    /// (`pause_thread`), a node in a worker through its control word
    /// (`pause_worker`). `Ok` once the coordinator holds them all; `Err`
    /// with the transaction to report otherwise, everything paused so far
    /// resumed.
    pub(super) fn barrier(&mut self, t0: Instant) -> Result<(), Transaction> {
        if let Some(stage) = self.draining() {
            return Err(Transaction::refused(format!(
                "stage `{stage}` has finished: the pipeline is draining"
            )));
        }
        let deadline = t0 + self.switch_timeout();
        for node in self.topology().barrier_order().to_vec() {
            let in_worker = self.mode == Mode::Distributed
                && self.topology().placement(node) == Placement::Worker;
            let reached = if in_worker {
                self.pause_worker(node, deadline)
            } else {
                self.pause_thread(node, deadline)
            };
            if self.failure.is_some() {
                // Everything is being torn down (`fail` aborted it).
                return Err(Transaction::rolled_back(
                    "the run failed during the switch".into(),
                    t0,
                ));
            }
            if self.recovery_pending() {
                // A worker died; the recovery runs once this has unwound.
                self.undo_pause();
                return Err(Transaction::rolled_back(
                    "a worker died during the switch".into(),
                    t0,
                ));
            }
            if !reached {
                self.undo_pause();
                return Err(Transaction::timed_out(self.timed_out(node), t0));
            }
        }
        if let Some(stage) = self.draining() {
            self.undo_pause();
            return Err(Transaction::rolled_back(
                format!("stage `{stage}` finished during the switch"),
                t0,
            ));
        }
        Ok(())
    }

    /// Resumes what the barrier paused, in the current mode.
    fn undo_pause(&mut self) {
        match self.mode {
            Mode::InProcess => self.resume_threads(),
            Mode::Distributed => self.resume_distributed(),
        }
    }

    fn switch_out(&mut self) -> Transaction {
        let t0 = Instant::now();
        if let Err(refused) = self.barrier(t0) {
            return refused;
        }
        let entered = self.enter_distributed();
        self.resume_threads();
        match entered {
            Ok(moved) => Transaction::completed(moved, t0),
            Err(cause) => Transaction::rolled_back(cause, t0),
        }
    }

    fn switch_back(&mut self) -> Transaction {
        let t0 = Instant::now();
        if let Err(refused) = self.barrier(t0) {
            return refused;
        }
        let Some(dist) = self.distributed.take() else {
            return Transaction::rolled_back("not distributed".into(), t0);
        };
        let run = super::run_of(&self.shared, &self.options, &self.edges);
        let mut stages = parked_stages(&mut self.slots);
        match dist.read_back(run, &stages) {
            Ok(read) => {
                let moved = read.moved;
                let leaving = dist.leave(run, &mut stages, read);
                self.mode = Mode::InProcess;
                self.resume_threads();
                let pause = t0.elapsed();
                reap_leaving(&self.shared.names, leaving);
                Transaction {
                    outcome: SwitchOutcome::Completed,
                    moved,
                    pause,
                }
            }
            Err(cause) => {
                self.distributed = Some(dist);
                self.resume_distributed();
                Transaction::rolled_back(cause, t0)
            }
        }
    }

    /// Pauses the worker of `node`: `true` once it has saved its state and
    /// waits for a decision; `false` if it did not accept before `deadline`
    /// (then it runs on) or a worker died (then the run fails).
    fn pause_worker(&mut self, node: NodeId, deadline: Instant) -> bool {
        let Some(dist) = self.distributed.as_mut() else {
            return true;
        };
        let run = super::run_of(&self.shared, &self.options, &self.edges);
        match dist.pause_worker(run, node, deadline) {
            WorkerPause::Paused => true,
            WorkerPause::Declined => false,
            WorkerPause::Failed(failure) => {
                self.worker_failed(failure, true);
                false
            }
        }
    }

    /// Undoes the pause of a switch back: workers that paused carry on, the
    /// local threads restart on their record rings.
    pub(super) fn resume_distributed(&mut self) {
        if let Some(dist) = &mut self.distributed {
            dist.resume_workers(super::run_of(&self.shared, &self.options, &self.edges));
            // A paused worker made no progress: not a stall.
            dist.restart_clocks();
        }
        self.resume_threads();
    }
}

/// Every stage, which the coordinator holds during a switch.
pub(super) fn parked_stages(slots: &mut [Slot]) -> Vec<crate::distributed::Parked<'_>> {
    slots
        .iter_mut()
        .map(|slot| match slot {
            Slot::Parked(stage) => &mut **stage,
            _ => unreachable!("the coordinator holds every stage during a switch"),
        })
        .collect()
}
