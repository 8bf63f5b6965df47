//! The handle of a running pipeline, and `spawn`, which starts the stage
//! threads and the coordinator thread behind it.

use crate::config::Mode;
use crate::coordinator::{Command, Coordinator, Message, Started};
use crate::error::{panic_message, Error};
use crate::event::SwitchEvent;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::report::RunReport;
use crate::shared::Shared;
use crate::topology::Topology;
use ringweave_ipc::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// A running pipeline.
///
/// Dropping the handle stops the pipeline (every stage is paused and
/// dropped, every thread joined) without waiting for the source to end.
#[must_use = "dropping the handle stops the pipeline; call join() to let it finish"]
pub struct PipelineHandle {
    commands: Sender<Message>,
    coordinator: Option<JoinHandle<Result<RunReport, Error>>>,
    shared: Arc<Shared>,
    /// Tee branches and merge inputs: they end with this run.
    subruns: Vec<PipelineHandle>,
}

impl std::fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineHandle")
            .field("stages", &self.shared.names)
            .finish_non_exhaustive()
    }
}

impl PipelineHandle {
    /// Waits for the pipeline to finish and returns its report.
    ///
    /// # Errors
    ///
    /// The first failure of the run, e.g. [`Error::StagePanicked`] naming the
    /// stage and carrying its panic message.
    ///
    /// With tee branches or merge inputs, waits for those too; if one of
    /// them failed, that failure is returned (it is the cause: a branch that
    /// fails stops its tee, an input that fails ends its part of the merge).
    pub fn join(mut self) -> Result<RunReport, Error> {
        let coordinator = self.coordinator.take().ok_or(Error::NotRunning)?;
        let result = match coordinator.join() {
            Ok(result) => result,
            Err(payload) => Err(Error::StagePanicked {
                stage: "coordinator".into(),
                message: panic_message(&*payload),
            }),
        };
        // This run's stages are gone: a tee's branch has seen its input
        // close, a merge's inputs have fed everything in.
        let mut first_failure = None;
        for sub in std::mem::take(&mut self.subruns) {
            if let Err(error) = sub.join() {
                first_failure.get_or_insert(error);
            }
        }
        match first_failure {
            Some(error) => Err(error),
            None => result,
        }
    }

    /// Ties `sub` (a tee branch or merge input) to this run.
    pub(crate) fn add_subrun(&mut self, sub: PipelineHandle) {
        self.subruns.push(sub);
    }

    /// Switches the pipeline to `to` now and returns the recorded event
    /// (whose outcome may be a rollback or a timeout).
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] if the pipeline has ended;
    /// [`Error::Unsupported`] if this run cannot switch to distributed mode
    /// (its shared control segment could not be made when it started).
    pub fn switch_to(&self, to: Mode) -> Result<SwitchEvent, Error> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Message::Command(Command::Switch { to, reply }))
            .map_err(|_| Error::NotRunning)?;
        answer.recv().map_err(|_| Error::NotRunning)?
    }

    /// A snapshot of the pipeline's metrics: mode, windowed throughput,
    /// per-stage counts and rates, ring fill, latency percentiles and the
    /// switch history with each switch's effect. Rates and fill are as of
    /// the coordinator's last sample (every `monitoring_interval_ms`, or
    /// 100 ms outside hybrid mode); counts are live.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }

    /// Whether the run has ended (every stage finished, or it failed):
    /// [`join`](Self::join) then returns at once.
    pub fn is_finished(&self) -> bool {
        self.coordinator.as_ref().is_none_or(|c| c.is_finished())
    }

    /// Items each stage has taken in and handed out so far, source first.
    pub fn stage_counts(&self) -> Vec<(String, u64, u64)> {
        self.shared
            .names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let (items_in, items_out) = self.shared.controls.get(index).counts();
                (name.clone(), items_in, items_out)
            })
            .collect()
    }
}

impl PipelineHandle {
    /// The worker processes running now, as `(stage, pid)`: empty unless
    /// the pipeline is distributed. For operators (and tests that kill one).
    pub fn worker_pids(&self) -> Vec<(String, u32)> {
        self.shared
            .names
            .iter()
            .enumerate()
            .filter_map(|(index, name)| {
                // Relaxed: informational; the coordinator owns the worker.
                let pid = self.shared.controls.slot(index).pid.load(Ordering::Relaxed);
                (pid != 0).then(|| (name.clone(), pid))
            })
            .collect()
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            let _ = self.commands.send(Message::Command(Command::Abort));
            let _ = coordinator.join();
        }
    }
}

/// Starts the stage threads and the coordinator.
pub(crate) fn spawn(plan: Plan, topology: Topology) -> Result<PipelineHandle, Error> {
    let Started {
        mut coordinator,
        shared,
        commands,
    } = Coordinator::prepare(plan, topology)?;
    coordinator.start_threads()?;
    let coordinator = thread::Builder::new()
        .name("rw-coordinator".into())
        .spawn(move || coordinator.run())
        .map_err(|source| Error::Spawn {
            stage: "coordinator".into(),
            source,
        })?;
    Ok(PipelineHandle {
        commands,
        coordinator: Some(coordinator),
        shared,
        subruns: Vec::new(),
    })
}
