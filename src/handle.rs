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
use crate::topology::{NodeId, Topology};
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
    /// With tee branches or merge inputs, waits for those too, and the
    /// graph fails as one: once any of its runs fails, the others are
    /// stopped. A failure of a branch or an input is returned before this
    /// run's own (it is the cause: a branch that fails stops its tee; the
    /// others, stopped, end without an error of their own).
    pub fn join(mut self) -> Result<RunReport, Error> {
        let coordinator = self.coordinator.take().ok_or(Error::NotRunning)?;
        if self.subruns.is_empty() {
            return joined(coordinator);
        }
        let mut main = Some(coordinator);
        let mut main_result = None;
        let mut subs: Vec<Option<PipelineHandle>> = std::mem::take(&mut self.subruns)
            .into_iter()
            .map(Some)
            .collect();
        let mut branches: Vec<Option<RunReport>> = (0..subs.len()).map(|_| None).collect();
        let mut sub_failure = None;
        let mut stopped = false;
        loop {
            if main.as_ref().is_some_and(JoinHandle::is_finished) {
                main_result = main.take().map(joined);
            }
            for (slot, branch) in subs.iter_mut().zip(&mut branches) {
                if slot.as_ref().is_some_and(PipelineHandle::is_finished) {
                    match slot.take().map(PipelineHandle::join) {
                        Some(Ok(report)) => *branch = Some(report),
                        Some(Err(error)) => {
                            sub_failure.get_or_insert(error);
                        }
                        None => {}
                    }
                }
            }
            let failed = sub_failure.is_some() || matches!(main_result, Some(Err(_)));
            if failed && !stopped {
                stopped = true;
                if main.is_some() {
                    let _ = self.commands.send(Message::Command(Command::Abort));
                }
                subs.iter().flatten().for_each(PipelineHandle::stop);
            }
            if main.is_none() && subs.iter().all(Option::is_none) {
                break;
            }
            // The runs end on their own threads; nothing here is urgent
            // enough to spin for.
            thread::sleep(std::time::Duration::from_millis(1));
        }
        match (sub_failure, main_result) {
            (Some(error), _) => Err(error),
            (None, Some(result)) => result.map(|mut report| {
                report.branches = branches.into_iter().flatten().collect();
                report
            }),
            (None, None) => Err(Error::NotRunning),
        }
    }

    /// Asks this run and its branches and inputs to stop, without waiting.
    fn stop(&self) {
        let _ = self.commands.send(Message::Command(Command::Abort));
        self.subruns.iter().for_each(PipelineHandle::stop);
    }

    /// What stops this run from a thread that does not hold the handle.
    #[cfg(feature = "cluster")]
    pub(crate) fn stopper(&self) -> Stopper {
        Stopper(self.commands.clone())
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

    /// Whether the run has ended (every stage finished, or it failed),
    /// its tee branches and merge inputs too: [`join`](Self::join) then
    /// returns at once.
    pub fn is_finished(&self) -> bool {
        self.coordinator.as_ref().is_none_or(|c| c.is_finished())
            && self.subruns.iter().all(PipelineHandle::is_finished)
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
    ///
    /// A stage with more than one replica while distributed lists each
    /// replica process as `stage[i]`: `stage[0]` is its worker, the others
    /// are forked from it once the stage first deals a batch out (until
    /// then only `stage[0]` is listed).
    pub fn worker_pids(&self) -> Vec<(String, u32)> {
        let mut pids = Vec::new();
        for (index, name) in self.shared.names.iter().enumerate() {
            let slot = self.shared.controls.slot(index);
            // Relaxed: informational; the coordinator owns the worker.
            let pid = slot.pid.load(Ordering::Relaxed);
            if pid == 0 {
                continue;
            }
            if self.shared.replicas_in(NodeId(index), Mode::Distributed) < 2 {
                pids.push((name.clone(), pid));
                continue;
            }
            pids.push((format!("{name}[0]"), pid));
            for (r, replica) in slot.replica_pids.0.iter().enumerate().skip(1) {
                let pid = replica.load(Ordering::Relaxed);
                if pid != 0 {
                    pids.push((format!("{name}[{r}]"), pid));
                }
            }
        }
        pids
    }
}

/// Stops a run (its own stages only) without waiting: see
/// [`PipelineHandle::stopper`].
#[cfg(feature = "cluster")]
pub(crate) struct Stopper(Sender<Message>);

#[cfg(feature = "cluster")]
impl Stopper {
    /// Asks the run to stop; nothing happens if it has ended.
    pub(crate) fn stop(&self) {
        let _ = self.0.send(Message::Command(Command::Abort));
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            // Branches first: a tee waiting for room in its branch's input
            // then fails at once instead of waiting for the branch to drain.
            self.stop();
            let _ = coordinator.join();
        }
    }
}

/// The result of a run whose coordinator thread is done (or about to be).
fn joined(coordinator: JoinHandle<Result<RunReport, Error>>) -> Result<RunReport, Error> {
    match coordinator.join() {
        Ok(result) => result,
        Err(payload) => Err(Error::StagePanicked {
            stage: "coordinator".into(),
            message: panic_message(&*payload),
        }),
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
