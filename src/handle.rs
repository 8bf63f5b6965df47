//! Runs a pipeline: one named OS thread per stage and a coordinator thread
//! that collects their exits, answers the handle's commands and, in hybrid
//! mode, drives the switches.

use crate::config::{ExecutionMode, Mode};
use crate::control::ControlTable;
use crate::coordinator::{Coordinator, Shared, Slot};
use crate::error::{panic_message, Error};
use crate::event::SwitchEvent;
use crate::latency::{LatencyRecorder, StampRx, StampTx, STAMP_QUEUE};
use crate::metrics::Metrics;
use crate::monitor::RateWindow;
use crate::pipeline::Parts;
use crate::report::RunReport;
use crate::stage::ErasedStage;
use ringweave_ipc::sync::atomic::Ordering;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a stage thread reports when it ends.
pub(crate) enum Exit {
    Finished,
    /// Paused at the barrier; the stage travels back to the coordinator.
    Paused(Box<dyn ErasedStage>),
    Aborted,
    Panicked(String),
    Failed(Error),
}

/// Messages to the coordinator.
pub(crate) enum Message {
    Exited { index: usize, exit: Exit },
    Command(Command),
}

/// Requests from a [`PipelineHandle`].
pub(crate) enum Command {
    Switch {
        to: Mode,
        reply: Sender<Result<SwitchEvent, Error>>,
    },
    /// The handle was dropped: stop everything.
    Abort,
}

/// A running pipeline.
///
/// Dropping the handle stops the pipeline (every stage is paused and
/// dropped, every thread joined) without waiting for the source to end.
#[must_use = "dropping the handle stops the pipeline; call join() to let it finish"]
pub struct PipelineHandle {
    commands: Sender<Message>,
    coordinator: Option<JoinHandle<Result<RunReport, Error>>>,
    shared: Arc<Shared>,
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
    pub fn join(mut self) -> Result<RunReport, Error> {
        let coordinator = self.coordinator.take().ok_or(Error::NotRunning)?;
        match coordinator.join() {
            Ok(result) => result,
            Err(payload) => Err(Error::StagePanicked {
                stage: "coordinator".into(),
                message: panic_message(&*payload),
            }),
        }
    }

    /// Switches the pipeline to `to` now and returns the recorded event
    /// (whose outcome may be a rollback or a timeout).
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] if the pipeline has ended;
    /// [`Error::Unsupported`] if this build cannot switch.
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
pub(crate) fn spawn(parts: Parts) -> Result<PipelineHandle, Error> {
    let Parts {
        mut nodes,
        edges,
        options,
    } = parts;
    let mut wakers = Vec::with_capacity(edges.len());
    for (i, edge) in edges.iter().enumerate() {
        let (producer, consumer, waker) = edge.ring(options.ring_capacity);
        nodes[i].set_output(producer);
        nodes[i + 1].set_input(consumer);
        wakers.push(waker);
    }
    install_stamp_rings(&mut nodes);
    let input_waker = nodes.first().and_then(|source| source.input_waker());
    // The control blocks live in shared memory, where worker processes
    // update them too; any run may be switched (`PipelineHandle::switch_to`).
    // An in-process run does without if the segment cannot be made.
    let controls = match ControlTable::shared(nodes.len(), options.max_state_bytes) {
        Ok(table) => table,
        Err(e) if matches!(options.mode, ExecutionMode::InProcess) => {
            tracing::warn!(error = %e, "no shared control segment: this run cannot switch");
            ControlTable::heap(nodes.len())
        }
        Err(e) => {
            return Err(Error::Distributed {
                reason: format!("control segment: {e}"),
            })
        }
    };
    let started = Instant::now();
    let shared = Arc::new(Shared {
        names: nodes.iter().map(|n| n.name().to_owned()).collect(),
        controls,
        started,
        latency: LatencyRecorder::new(started),
        telemetry: Default::default(),
    });
    let window = match &options.mode {
        ExecutionMode::Hybrid(config) => Duration::from_millis(config.window_size_ms),
        _ => Duration::from_secs(1),
    };
    let start_threads = !matches!(options.mode, ExecutionMode::Distributed);
    let (sender, events) = mpsc::channel();
    let mut coordinator = Coordinator {
        shared: Arc::clone(&shared),
        options,
        edges,
        wakers,
        input_waker,
        slots: Vec::with_capacity(nodes.len()),
        mode: Mode::InProcess,
        failure: None,
        aborting: false,
        sender: sender.clone(),
        events,
        deferred: Vec::new(),
        switches: Vec::new(),
        monitor: RateWindow::new(window),
        stage_windows: (0..nodes.len()).map(|_| RateWindow::new(window)).collect(),
        last_rotation: started,
        impact_pending: None,
        reaction_seen: None,
        cooldown_until: Instant::now(),
        distributed: None,
    };
    coordinator
        .slots
        .extend(nodes.into_iter().map(Slot::Parked));
    if start_threads {
        // `resume_threads` starts every parked stage that runs in this
        // process: all of them, in-process.
        coordinator.resume_threads();
        if let Some(error) = coordinator.failure.take() {
            coordinator.wait_all();
            return Err(error);
        }
    }
    let coordinator = thread::Builder::new()
        .name("rw-coordinator".into())
        .spawn(move || coordinator.run())
        .map_err(|source| Error::Spawn {
            stage: "coordinator".into(),
            source,
        })?;
    Ok(PipelineHandle {
        commands: sender,
        coordinator: Some(coordinator),
        shared,
    })
}

/// Gives every edge a fresh in-process stamp queue (see `latency.rs`).
pub(crate) fn install_stamp_rings<S: std::ops::DerefMut<Target = dyn ErasedStage + 'static>>(
    nodes: &mut [S],
) {
    for i in 0..nodes.len().saturating_sub(1) {
        let (tx, rx) = crate::ring::channel(STAMP_QUEUE);
        nodes[i].set_stamps(None, Some(StampTx::Ring(tx)));
        nodes[i + 1].set_stamps(Some(StampRx::Ring(rx)), None);
    }
}

/// Drops a finished stage (closing its rings) and returns `exit`; a panic in
/// an item's destructor becomes the exit.
pub(crate) fn end(stage: Box<dyn ErasedStage>, exit: Exit) -> Exit {
    match catch_unwind(AssertUnwindSafe(move || drop(stage))) {
        Ok(()) => exit,
        Err(payload) => match exit {
            Exit::Panicked(first) => Exit::Panicked(first),
            _ => Exit::Panicked(panic_message(&*payload)),
        },
    }
}
