//! Runs a pipeline: one named OS thread per stage and a coordinator thread
//! that collects their exits, answers the handle's commands and, in hybrid
//! mode, drives the switches.

use crate::config::{ExecutionMode, Mode};
use crate::control::StageControl;
use crate::error::{panic_message, Error};
use crate::pipeline::{Options, Parts};
use crate::report::{LatencySummary, RunReport, StageReport, SwitchEvent};
use crate::ring::RingWaker;
use crate::stage::{ErasedStage, StageExit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a stage thread reports when it ends.
enum Exit {
    Finished,
    /// Paused at the barrier; the stage travels back to the coordinator.
    Paused(Box<dyn ErasedStage>),
    Aborted,
    Panicked(String),
    Failed(Error),
}

/// Messages to the coordinator.
enum Message {
    Exited { index: usize, exit: Exit },
    Command(Command),
}

/// Requests from a [`PipelineHandle`].
enum Command {
    Switch {
        to: Mode,
        reply: Sender<Result<SwitchEvent, Error>>,
    },
    /// The handle was dropped: stop everything.
    Abort,
}

/// Live counters shared by the coordinator, the stages and the handle.
pub(crate) struct Shared {
    pub names: Vec<String>,
    pub controls: Box<[StageControl]>,
    pub started: Instant,
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

    /// Items each stage has taken in and handed out so far, source first.
    pub fn stage_counts(&self) -> Vec<(String, u64, u64)> {
        self.shared
            .names
            .iter()
            .zip(self.shared.controls.iter())
            .map(|(name, control)| {
                let (items_in, items_out) = control.counts();
                (name.clone(), items_in, items_out)
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
    if !matches!(options.mode, ExecutionMode::InProcess) {
        return Err(Error::Unsupported {
            what: format!(
                "{:?} mode (only in-process runs in this build)",
                options.mode
            ),
        });
    }
    let mut wakers = Vec::with_capacity(edges.len());
    for (i, edge) in edges.iter().enumerate() {
        let (producer, consumer, waker) = edge.ring(options.ring_capacity);
        nodes[i].set_output(producer);
        nodes[i + 1].set_input(consumer);
        wakers.push(waker);
    }
    let shared = Arc::new(Shared {
        names: nodes.iter().map(|n| n.name().to_owned()).collect(),
        controls: nodes.iter().map(|_| StageControl::default()).collect(),
        started: Instant::now(),
    });
    let (sender, events) = mpsc::channel();
    let mut coordinator = Coordinator {
        shared: Arc::clone(&shared),
        options,
        wakers,
        threads: (0..nodes.len()).map(|_| None).collect(),
        running: 0,
        failure: None,
        aborting: false,
        sender: sender.clone(),
        events,
        switches: Vec::new(),
    };
    for (index, stage) in nodes.into_iter().enumerate() {
        if let Err(e) = coordinator.start(index, stage) {
            coordinator.abort();
            coordinator.wait_all();
            return Err(e);
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

/// Owns the stage threads while they run and the stages while they are
/// paused.
struct Coordinator {
    shared: Arc<Shared>,
    options: Options,
    /// One per edge: wakes both ends so a sleeping stage sees a request.
    wakers: Vec<RingWaker>,
    threads: Vec<Option<JoinHandle<()>>>,
    /// Stage threads not yet reported as exited.
    running: usize,
    /// The first failure; later ones are consequences.
    failure: Option<Error>,
    /// Stop everything: paused stages are dropped, not resumed.
    aborting: bool,
    sender: Sender<Message>,
    events: Receiver<Message>,
    switches: Vec<SwitchEvent>,
}

impl Coordinator {
    /// Starts (or resumes) `stage` on a new thread.
    fn start(&mut self, index: usize, mut stage: Box<dyn ErasedStage>) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let sender = self.sender.clone();
        let batch = self.options.batch_size;
        let name = format!("rw-{}", stage.name());
        let stage_name = stage.name().to_owned();
        shared.controls[index].reset();
        let handle = thread::Builder::new()
            .name(name)
            .spawn(move || {
                let control = &shared.controls[index];
                let exit = match catch_unwind(AssertUnwindSafe(|| stage.run(control, batch))) {
                    Ok(StageExit::Paused) => Exit::Paused(stage),
                    Ok(StageExit::Finished) => end(stage, Exit::Finished),
                    Ok(StageExit::Failed(error)) => end(stage, Exit::Failed(error)),
                    Ok(StageExit::Aborted) => end(stage, Exit::Aborted),
                    Err(payload) => end(stage, Exit::Panicked(panic_message(&*payload))),
                };
                // The coordinator outlives every stage thread (it joins them),
                // so the receiver is there; if not, there is nobody to tell.
                let _ = sender.send(Message::Exited { index, exit });
            })
            .map_err(|source| Error::Spawn {
                stage: stage_name,
                source,
            })?;
        self.threads[index] = Some(handle);
        self.running += 1;
        Ok(())
    }

    fn run(mut self) -> Result<RunReport, Error> {
        while self.running > 0 {
            let Ok(message) = self.events.recv() else {
                break;
            };
            match message {
                Message::Exited { index, exit } => self.on_exit(index, exit),
                Message::Command(Command::Switch { to, reply }) => {
                    let _ = reply.send(Err(Error::Unsupported {
                        what: format!("switching to {to} (hybrid execution is not in this build)"),
                    }));
                }
                Message::Command(Command::Abort) => self.abort(),
            }
        }
        self.wait_all();
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        Ok(self.report())
    }

    fn on_exit(&mut self, index: usize, exit: Exit) {
        self.running -= 1;
        if let Some(thread) = self.threads[index].take() {
            // The thread has sent its last message; this returns at once.
            let _ = thread.join();
        }
        match exit {
            Exit::Finished | Exit::Aborted => {}
            Exit::Paused(stage) => {
                // Only an abort pauses stages in this build: drop the stage,
                // which closes its rings so its neighbours stop too.
                drop_quietly(stage);
            }
            Exit::Failed(error) => {
                if self.failure.is_none() {
                    self.failure = Some(error);
                }
            }
            Exit::Panicked(message) => {
                if self.failure.is_none() {
                    self.failure = Some(Error::StagePanicked {
                        stage: self.shared.names[index].clone(),
                        message,
                    });
                }
            }
        }
    }

    /// Asks every running stage to stop; paused stages are then dropped.
    fn abort(&mut self) {
        self.aborting = true;
        for control in self.shared.controls.iter() {
            control.request_pause();
        }
        for waker in &self.wakers {
            waker.wake();
        }
    }

    /// Waits until every stage thread has exited.
    fn wait_all(&mut self) {
        while self.running > 0 {
            match self.events.recv_timeout(Duration::from_secs(1)) {
                Ok(Message::Exited { index, exit }) => self.on_exit(index, exit),
                Ok(Message::Command(Command::Switch { reply, .. })) => {
                    let _ = reply.send(Err(Error::NotRunning));
                }
                Ok(Message::Command(Command::Abort)) => self.abort(),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn report(&self) -> RunReport {
        let stages: Vec<StageReport> = self
            .shared
            .names
            .iter()
            .zip(self.shared.controls.iter())
            .map(|(name, control)| {
                let (items_in, items_out) = control.counts();
                StageReport {
                    name: name.clone(),
                    items_in,
                    items_out,
                }
            })
            .collect();
        RunReport {
            items_produced: stages.first().map_or(0, |s| s.items_out),
            items_delivered: stages.last().map_or(0, |s| s.items_in),
            final_mode: Mode::InProcess,
            elapsed: self.shared.started.elapsed(),
            stages,
            switches: self.switches.clone(),
            latency: LatencySummary::default(),
        }
    }
}

/// Drops a finished stage (closing its rings) and returns `exit`; a panic in
/// an item's destructor becomes the exit.
fn end(stage: Box<dyn ErasedStage>, exit: Exit) -> Exit {
    match catch_unwind(AssertUnwindSafe(move || drop(stage))) {
        Ok(()) => exit,
        Err(payload) => match exit {
            Exit::Panicked(first) => Exit::Panicked(first),
            _ => Exit::Panicked(panic_message(&*payload)),
        },
    }
}

fn drop_quietly(stage: Box<dyn ErasedStage>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(stage)));
}
