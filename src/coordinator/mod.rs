//! The coordinator: owns the stage threads while they run and the stages
//! while they are paused, collects exits, samples the monitor and drives the
//! switch barrier.
//!
//! # The barrier
//!
//! A switch pauses the stages one after the other, **source first, sink
//! last**, waiting for each to accept before asking the next (see
//! `control.rs` for the per-stage handshake). A stage accepts only with no
//! output waiting for room, and its downstream neighbour is still running
//! while it is asked, so it can always flush. Once every stage has accepted,
//! the coordinator holds every stage (operator, state, both ring ends) — by
//! ownership, nothing else can touch a ring — and can copy the rings, fork,
//! and either commit or put everything back as it was.
//!
//! If a stage does not accept before `switch_timeout_ms`, its request is
//! withdrawn (a CAS that the stage's own CAS races; exactly one wins), every
//! stage already paused is resumed where it stood, and the switch is recorded
//! as timed out. Nothing is ever forced.

mod recovery;
mod switch;

use recovery::Recovery;
use switch::parked_stages;

use crate::config::{ExecutionMode, Mode, DEFAULT_REPLAY_LOG_BYTES, MAX_REPLAY_LOG_ITEMS};
use crate::distributed::{switch_timeout, Distributed, Run};
use crate::edge::Moved;
use crate::edge::{install_stamp_rings, EdgeSpec};
use crate::error::{panic_message, Error};
use crate::event::{SwitchEvent, SwitchOutcome, SwitchReason};
use crate::latency::LatencyRecorder;
use crate::metrics::SwitchImpact;
use crate::monitor::{policy, RateWindow};
use crate::plan::{Options, Plan};
use crate::port::StageExit;
use crate::report::{RunReport, StageReport};
use crate::shared::Shared;
use crate::stage::{Ctx, ErasedStage};
use crate::topology::{NodeId, Placement, Topology};
use ringweave_ipc::control::ControlTable;
use ringweave_ipc::ring::RingWaker;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// What a stage thread reports when it ends.
pub(crate) enum Exit {
    Finished,
    /// Paused at the barrier; the stage travels back to the coordinator.
    Paused(Box<dyn ErasedStage>),
    /// The source (or a tee) finished while distributed with crash recovery
    /// on: kept (its output closed) in case a crash makes it run again.
    Kept(Box<dyn ErasedStage>),
    Aborted,
    Panicked(String),
    Failed(Error),
}

/// Messages to the coordinator.
pub(crate) enum Message {
    Exited {
        node: NodeId,
        exit: Exit,
    },
    Command(Command),
    /// Look around now: a worker process ended (`Distributed::watch`), or
    /// the replay log is half full (a checkpoint is due).
    Wake,
}

/// Requests from a `PipelineHandle`.
pub(crate) enum Command {
    Switch {
        to: Mode,
        reply: Sender<Result<SwitchEvent, Error>>,
    },
    /// The handle was dropped: stop everything.
    Abort,
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

/// Where each stage is.
enum Slot {
    /// Running on a thread of this process.
    Thread(JoinHandle<()>),
    /// Held by the coordinator: paused, or idle while a worker runs it.
    Parked(Box<dyn ErasedStage>),
    /// Ended (end of stream, abort or failure); nothing left to run.
    Done,
}

/// Owns the run: its stages (see [`Slot`]), its edges, its mode, and the
/// distributed half while there is one.
pub(crate) struct Coordinator {
    shared: Arc<Shared>,
    options: Options,
    /// Builds each edge's rings for its item type; indexed by edge.
    edges: Vec<Box<dyn EdgeSpec>>,
    /// One per edge: wakes both ends of its in-process ring.
    wakers: Vec<RingWaker>,
    /// Wakes the source while it waits on an `Input`.
    input_waker: Option<RingWaker>,
    /// Indexed by node.
    slots: Vec<Slot>,
    /// The mode the stages are in now.
    mode: Mode,
    /// The first failure; later ones are consequences.
    failure: Option<Error>,
    /// Stop everything: paused stages are dropped, not resumed.
    aborting: bool,
    sender: Sender<Message>,
    events: Receiver<Message>,
    /// Commands that arrived while a switch was running.
    deferred: Vec<Command>,
    switches: Vec<SwitchEvent>,
    monitor: RateWindow,
    /// One window per stage over its `items_out`, for per-stage rates.
    stage_windows: Vec<RateWindow>,
    /// When the recent-latency window was last rotated.
    last_rotation: Instant,
    /// The switch whose after-effect is still to be measured.
    impact_pending: Option<usize>,
    /// No automatic switch before this instant.
    cooldown_until: Instant,
    /// Checkpoints and restarts, with `max_restarts > 0`. Declared before
    /// `distributed`: a finished source kept here holds ends of rings in
    /// its segment, so it must be dropped first.
    recovery: Option<Recovery>,
    /// The segment, its rings and the workers, while distributed.
    distributed: Option<Distributed>,
}

impl Drop for Coordinator {
    /// Every normal path has joined the stage threads by now. If the
    /// coordinator unwinds instead (a bug), its fields would be dropped
    /// with stage threads still running on the shared segment that
    /// `distributed` maps: stop them first.
    fn drop(&mut self) {
        if self.threads_running() > 0 {
            self.abort();
            self.wait_all();
        }
    }
}

/// A new coordinator, the state it shares with the handle, and the sender
/// of its command channel.
pub(crate) struct Started {
    pub coordinator: Coordinator,
    pub shared: Arc<Shared>,
    pub commands: Sender<Message>,
}

impl Coordinator {
    /// Wires the plan's rings and makes the shared state. Starts nothing.
    /// `topology` is what [`Plan::validate`] returned for `plan`.
    pub(crate) fn prepare(plan: Plan, topology: Topology) -> Result<Started, Error> {
        let Plan {
            mut nodes,
            edges,
            options,
            ..
        } = plan;
        let mut wakers = Vec::with_capacity(edges.len());
        for (e, link) in topology.edges() {
            let (producer, consumer, waker) = edges[e.0].ring(options.ring_capacity);
            nodes[link.from.0].set_output(producer);
            nodes[link.to.0].set_input(consumer);
            wakers.push(waker);
        }
        install_stamp_rings(&mut nodes, &topology);
        let (sender, events) = mpsc::channel();
        let source = topology.source().0;
        let recovery = (options.max_restarts > 0).then(|| {
            let bound = options.replay_log_items.unwrap_or_else(|| {
                (DEFAULT_REPLAY_LOG_BYTES / nodes[source].item_size().max(1))
                    .clamp(1024, MAX_REPLAY_LOG_ITEMS)
            });
            // `Sender` is `Sync` (Rust 1.72): the source's thread calls this.
            let sender = sender.clone();
            Recovery::new(bound, move || {
                let _ = sender.send(Message::Wake);
            })
        });
        if let Some(recovery) = &recovery {
            nodes[source].keep_log(recovery.log());
            for node in &mut nodes {
                node.keep_for_replay();
            }
        }
        let input_waker = nodes[topology.source().0].input_waker();
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
            replicas: nodes.iter().map(|n| n.replicas()).collect(),
            topology,
            controls,
            started,
            latency: LatencyRecorder::new(started),
            telemetry: Default::default(),
        });
        let window = match &options.mode {
            ExecutionMode::Hybrid(config) => Duration::from_millis(config.window_size_ms),
            _ => Duration::from_secs(1),
        };
        let coordinator = Coordinator {
            shared: Arc::clone(&shared),
            options,
            edges,
            wakers,
            input_waker,
            stage_windows: (0..nodes.len()).map(|_| RateWindow::new(window)).collect(),
            slots: nodes.into_iter().map(Slot::Parked).collect(),
            mode: Mode::InProcess,
            failure: None,
            aborting: false,
            sender: sender.clone(),
            events,
            deferred: Vec::new(),
            switches: Vec::new(),
            monitor: RateWindow::new(window),
            last_rotation: started,
            impact_pending: None,
            cooldown_until: Instant::now(),
            recovery,
            distributed: None,
        };
        Ok(Started {
            coordinator,
            shared,
            commands: sender,
        })
    }

    /// Starts the stage threads, unless the run starts distributed (then
    /// `run` builds the distributed half first). On error nothing is left
    /// running.
    pub(crate) fn start_threads(&mut self) -> Result<(), Error> {
        if matches!(self.options.mode, ExecutionMode::Distributed) {
            return Ok(());
        }
        self.resume_threads();
        match self.failure.take() {
            Some(error) => {
                self.wait_all();
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// The shape of the pipeline.
    fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    fn threads_running(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Thread(_)))
            .count()
    }

    /// Starts (or resumes) `stage` on a new thread.
    fn start(&mut self, node: NodeId, mut stage: Box<dyn ErasedStage>) -> Result<(), Error> {
        let index = node.0;
        let shared = Arc::clone(&self.shared);
        let sender = self.sender.clone();
        let batch = self.options.batch_size;
        let edge_items = self.options.ring_capacity;
        let stage_name = stage.name().to_owned();
        shared.controls.get(index).reset();
        let handle = thread::Builder::new()
            .name(format!("rw-{stage_name}"))
            .spawn(move || {
                let ctx = Ctx {
                    control: shared.controls.get(index),
                    batch,
                    edge_items,
                    latency: &shared.latency,
                    in_worker: false,
                    slot: Some(shared.controls.slot(index)),
                    state_bytes: 0,
                    ring_bytes: 0,
                };
                let exit = match catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))) {
                    Ok(StageExit::Paused) => Exit::Paused(stage),
                    Ok(StageExit::Finished) if stage.kept_for_replay() => {
                        // Closes its output: the next stage sees the end.
                        stage.detach_shm();
                        Exit::Kept(stage)
                    }
                    Ok(StageExit::Finished) => end(stage, Exit::Finished),
                    Ok(StageExit::Aborted) => end(stage, Exit::Aborted),
                    Ok(StageExit::Failed(error)) => end(stage, Exit::Failed(error)),
                    Err(payload) => end(stage, Exit::Panicked(panic_message(&*payload))),
                };
                // The coordinator outlives every stage thread (it joins
                // them), so the receiver is there; if not, nobody listens.
                let _ = sender.send(Message::Exited { node, exit });
            });
        match handle {
            Ok(handle) => {
                self.slots[index] = Slot::Thread(handle);
                Ok(())
            }
            Err(source) => Err(Error::Spawn {
                stage: stage_name,
                source,
            }),
        }
    }

    /// Runs until every stage has ended, then reports.
    pub(crate) fn run(mut self) -> Result<RunReport, Error> {
        let span = tracing::info_span!("ringweave_run", stages = self.slots.len());
        let _entered = span.enter();
        tracing::info!(
            stages = ?self.shared.names,
            mode = ?self.options.mode,
            ring_capacity = self.options.ring_capacity,
            "pipeline started"
        );
        let result = self.run_to_end();
        match &result {
            Ok(report) => tracing::info!(
                produced = report.items_produced,
                delivered = report.items_delivered,
                final_mode = %report.final_mode,
                switches = report.switches.len(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                "pipeline finished"
            ),
            Err(error) => tracing::error!(%error, "pipeline failed"),
        }
        result
    }

    fn run_to_end(&mut self) -> Result<RunReport, Error> {
        // Registering the process for cross-process barriers (what a shared
        // ring's first handle needs, see `ringweave_ipc::fence`) waits for
        // an RCU grace period once threads exist, milliseconds (docs/PERF.md,
        // "Measured design choices"). Once per process, and now rather than
        // inside a switch's pause.
        ringweave_ipc::fence::init_shared();
        if let ExecutionMode::Distributed = self.options.mode {
            self.start_distributed();
        }
        let mut next_sample = Instant::now();
        while self.is_live() {
            let tick = self.tick_interval();
            match self.events.recv_timeout(tick) {
                Ok(message) => self.on_message(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !self.check_workers() {
                self.check_stalls();
            }
            self.recover_pending();
            if self.checkpoint_due() {
                self.checkpoint();
            }
            if Instant::now() >= next_sample {
                next_sample = Instant::now() + self.sample_interval();
                self.sample_and_maybe_switch();
            }
            for command in std::mem::take(&mut self.deferred) {
                self.on_command(command);
            }
        }
        self.wait_all();
        self.finish_workers();
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        Ok(self.report())
    }

    /// Whether anything still runs: a stage thread, or a worker process.
    fn is_live(&self) -> bool {
        self.threads_running() > 0 || self.distributed.as_ref().is_some_and(Distributed::running)
    }

    /// Notices workers that ended; a failed one fails the run. Returns
    /// whether the run has failed.
    fn check_workers(&mut self) -> bool {
        if let Some(dist) = &mut self.distributed {
            let run = run_of(&self.shared, &self.options, &self.edges);
            // Reaped either way; only the first failure is reported.
            if let Some(failure) = dist.check(run) {
                if self.failure.is_none() {
                    self.worker_failed(failure, false);
                }
            }
        }
        self.failure.is_some()
    }

    /// The watchdog (see `Distributed::check_stalls`).
    fn check_stalls(&mut self) {
        if let Some(dist) = &mut self.distributed {
            let run = run_of(&self.shared, &self.options, &self.edges);
            if let Some(failure) = dist.check_stalls(run) {
                self.worker_failed(failure, false);
            }
        }
    }

    /// At the end of a run: reaps every worker (they have finished, or are
    /// killed).
    fn finish_workers(&mut self) {
        self.check_workers();
        if let Some(dist) = &mut self.distributed {
            dist.reap_all(&self.shared.controls);
        }
    }

    fn tick_interval(&self) -> Duration {
        let mut tick = Duration::from_secs(1);
        if let ExecutionMode::Hybrid(config) = &self.options.mode {
            tick = tick.min(Duration::from_millis(config.monitoring_interval_ms));
        }
        if self.mode == Mode::Distributed {
            // Learn of a crashed worker within a few milliseconds.
            tick = tick.min(Duration::from_millis(5));
            if self.threads_running() == 0 {
                // Only workers are left, and no thread will send a message:
                // they are finishing (or failing), so look often — a 5 ms
                // tick here was most of a short distributed run.
                tick = tick.min(Duration::from_micros(200));
            }
        }
        tick
    }

    fn sample_interval(&self) -> Duration {
        match &self.options.mode {
            ExecutionMode::Hybrid(config) => Duration::from_millis(config.monitoring_interval_ms),
            _ => Duration::from_millis(100),
        }
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Exited { node, exit } => self.on_exit(node, exit),
            Message::Command(command) => self.on_command(command),
            // The loop looks at the workers after every message.
            Message::Wake => {}
        }
    }

    /// Makes `dist` the run's distributed half, its worker ends waking
    /// this coordinator.
    fn install(&mut self, mut dist: Distributed) {
        let sender = self.sender.clone();
        dist.watch(move || {
            let _ = sender.send(Message::Wake);
        });
        self.distributed = Some(dist);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Switch { to, reply } => {
                let result = if self.aborting || self.failure.is_some() {
                    Err(Error::NotRunning)
                } else if to == Mode::Distributed && !self.shared.controls.is_shared() {
                    // The control table fell back to the heap at start (see
                    // the warning logged then): no worker could share it.
                    Err(Error::Unsupported {
                        what: "switching to distributed mode: this run's control table is \
                               not in shared memory (creating the segment failed at start)"
                            .into(),
                    })
                } else {
                    Ok(self.switch(to, SwitchReason::Manual))
                };
                let _ = reply.send(result);
            }
            Command::Abort => self.abort(),
        }
    }

    fn on_exit(&mut self, node: NodeId, exit: Exit) {
        let index = node.0;
        if let Slot::Thread(handle) = std::mem::replace(&mut self.slots[index], Slot::Done) {
            // The thread has sent its last message; this returns at once.
            let _ = handle.join();
        }
        match exit {
            Exit::Finished | Exit::Aborted => {}
            Exit::Kept(stage) => match &mut self.recovery {
                Some(recovery) if !self.aborting => recovery.keep(node, stage),
                _ => {
                    let _ = end(stage, Exit::Finished);
                }
            },
            Exit::Paused(stage) => {
                if self.aborting {
                    // Dropping the stage closes its rings, so its
                    // neighbours stop too.
                    let _ = end(stage, Exit::Aborted);
                } else {
                    self.slots[index] = Slot::Parked(stage);
                }
            }
            Exit::Failed(error) => self.fail(error),
            Exit::Panicked(message) => self.fail(Error::StagePanicked {
                stage: self.shared.names[index].clone(),
                message,
            }),
        }
    }

    /// Records the first failure and stops everything.
    fn fail(&mut self, error: Error) {
        if self.failure.is_none() {
            tracing::error!(%error, "stopping the pipeline");
            self.failure = Some(error);
        }
        self.abort();
    }

    /// Asks every running stage to stop; paused and parked stages are
    /// dropped, worker processes killed.
    fn abort(&mut self) {
        if self.aborting {
            return;
        }
        self.aborting = true;
        if let Some(dist) = &mut self.distributed {
            dist.kill_all(&self.shared.controls);
        }
        for slot in &mut self.slots {
            if let Slot::Parked(_) = slot {
                if let Slot::Parked(stage) = std::mem::replace(slot, Slot::Done) {
                    let _ = end(stage, Exit::Aborted);
                }
            }
        }
        for index in 0..self.slots.len() {
            self.shared.controls.get(index).request_abort();
        }
        self.wake_all();
    }

    /// Wakes every sleeping ring end, so that stages re-check their control
    /// words.
    fn wake_all(&self) {
        for waker in self.wakers.iter().chain(&self.input_waker) {
            waker.wake();
        }
        if let Some(dist) = &self.distributed {
            dist.wake();
        }
    }

    /// Waits until every stage thread has exited.
    fn wait_all(&mut self) {
        while self.threads_running() > 0 {
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(Message::Exited { node, exit }) => self.on_exit(node, exit),
                Ok(Message::Command(Command::Switch { reply, .. })) => {
                    let _ = reply.send(Err(Error::NotRunning));
                }
                Ok(Message::Command(Command::Abort)) => self.abort(),
                Ok(Message::Wake) | Err(RecvTimeoutError::Timeout) => {
                    self.check_workers();
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Pauses the stage thread of `node` (see the module docs). `true` once
    /// it is parked (or had ended); `false` if it did not accept before
    /// `deadline` — then it runs on as if never asked.
    fn pause_thread(&mut self, node: NodeId, deadline: Instant) -> bool {
        self.pause_thread_as(node, deadline, false)
    }

    /// As `pause_thread`, but the stage accepts even while it waits for
    /// room with outputs held (a recovery: its consumer is dead).
    fn pause_thread_forced(&mut self, node: NodeId, deadline: Instant) -> bool {
        self.pause_thread_as(node, deadline, true)
    }

    fn pause_thread_as(&mut self, node: NodeId, deadline: Instant, forced: bool) -> bool {
        if !matches!(self.slots[node.0], Slot::Thread(_)) {
            return true;
        }
        let control = self.shared.controls.get(node.0);
        if forced {
            control.request_pause_forced();
        } else {
            control.request_pause();
        }
        // A source waiting for a checkpoint to empty its replay log sleeps
        // on this word.
        let _ = ringweave_ipc::futex::wake(control.cmd_word(), u32::MAX);
        self.wake_all();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A thread waiting for room in the ring of a worker that died
            // does not accept a plain pause: look at the workers meanwhile
            // (not in a recovery's forced pause, which killed them all).
            let slice = if forced {
                left
            } else {
                left.min(Duration::from_millis(5))
            };
            let crashed = match self.events.recv_timeout(slice) {
                Ok(Message::Exited { node: n, exit }) => {
                    self.on_exit(n, exit);
                    if n == node {
                        return true;
                    }
                    false
                }
                Ok(Message::Command(command)) => {
                    self.deferred.push(command);
                    false
                }
                Ok(Message::Wake) => !forced && self.worker_died_while_pausing(),
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    !forced && self.worker_died_while_pausing()
                }
                Err(RecvTimeoutError::Timeout) => true,
            };
            if crashed {
                if self.shared.controls.get(node.0).cancel_pause() {
                    return false;
                }
                // It accepted just now: its hand-over is on the way.
                return self.await_exit(node);
            }
        }
    }

    /// During a barrier: whether a worker failed (recorded, for the caller
    /// to give up on the pause).
    fn worker_died_while_pausing(&mut self) -> bool {
        if let Some(dist) = &mut self.distributed {
            let run = run_of(&self.shared, &self.options, &self.edges);
            if let Some(failure) = dist.check(run) {
                self.worker_failed(failure, true);
            }
        }
        self.failure.is_some() || self.recovery_pending()
    }

    /// Waits (without a deadline) for the exit message of `node`.
    fn await_exit(&mut self, node: NodeId) -> bool {
        loop {
            match self.events.recv() {
                Ok(Message::Exited { node: n, exit }) => {
                    self.on_exit(n, exit);
                    if n == node {
                        return true;
                    }
                }
                Ok(Message::Command(command)) => self.deferred.push(command),
                Ok(Message::Wake) => {}
                Err(_) => return true,
            }
        }
    }

    /// Restarts on threads every parked stage that `mode` runs in this
    /// process. A stage that cannot get a thread fails the run.
    fn resume_threads(&mut self) {
        for index in 0..self.slots.len() {
            let node = NodeId(index);
            let runs_here =
                self.mode == Mode::InProcess || self.topology().placement(node) == Placement::Local;
            if !runs_here || !matches!(self.slots[index], Slot::Parked(_)) {
                continue;
            }
            let Slot::Parked(stage) = std::mem::replace(&mut self.slots[index], Slot::Done) else {
                continue;
            };
            if let Err(error) = self.start(node, stage) {
                self.fail(error);
            }
        }
    }

    /// One monitor sample; switches when the policy says so.
    /// Samples every counter and ring, updates the telemetry the handle
    /// reads, and rotates the latency window.
    fn sample(&mut self) {
        let now = Instant::now();
        let source = self.topology().source().0;
        let (_, produced) = self.shared.controls.get(source).counts();
        self.monitor.record(now, produced);
        for (index, window) in self.stage_windows.iter_mut().enumerate() {
            window.record(now, self.shared.controls.get(index).counts().1);
        }
        let fills = self.ring_fills();
        let window = self.monitor.window();
        let mut telemetry = self.shared.telemetry.lock();
        if now.duration_since(self.last_rotation) >= window {
            telemetry.p99 = self.shared.latency.rotate();
            self.last_rotation = now;
        }
        telemetry.mode = Some(self.mode);
        // Just after a switch the window holds one sample and no rate yet:
        // keep showing the last one rather than 0.
        if let Some(rate) = self
            .monitor
            .rate()
            .or_else(|| self.monitor.rate_if_spanned())
        {
            telemetry.throughput = rate;
        }
        telemetry.stage_rates = self.stage_windows.iter().map(|w| w.rate_so_far()).collect();
        // The recorder is the program's code: call it after the lock that
        // `PipelineHandle::metrics` takes is released.
        #[cfg(feature = "metrics")]
        let exported = (
            telemetry.stage_rates.clone(),
            fills.clone(),
            telemetry.throughput,
        );
        telemetry.fills = fills;
        if let (Some(i), Some(rate)) = (self.impact_pending, self.monitor.rate()) {
            let p99 = telemetry.p99;
            if let Some(impact) = telemetry.switches.get_mut(i) {
                impact.rate_after = Some(rate);
                impact.p99_after = Some(p99);
            }
            self.impact_pending = None;
        }
        drop(telemetry);
        #[cfg(feature = "metrics")]
        crate::export::sample(
            &self.shared,
            &exported.0,
            &exported.1,
            exported.2,
            self.mode,
        );
    }

    /// Fill of each edge's ring: items of the in-process ring, bytes of the
    /// record ring when distributed.
    fn ring_fills(&self) -> Vec<f64> {
        if let Some(dist) = &self.distributed {
            return dist.fills();
        }
        let capacity = self.options.ring_capacity as f64;
        self.wakers
            .iter()
            .map(|w| w.occupied() as f64 / capacity)
            .collect()
    }

    fn sample_and_maybe_switch(&mut self) {
        self.sample();
        let now = Instant::now();
        let ExecutionMode::Hybrid(config) = &self.options.mode else {
            return;
        };
        if self.aborting || self.failure.is_some() || now < self.cooldown_until {
            return;
        }
        let Some(rate) = self.monitor.rate() else {
            return;
        };
        let Some((to, reason)) = policy(self.mode, rate, config) else {
            return;
        };
        // The source ending is a fall in throughput that no switch can help.
        if !matches!(self.slots[self.topology().source().0], Slot::Thread(_)) {
            return;
        }
        self.switch(to, reason);
    }

    /// Runs one switch transaction and records it.
    fn switch(&mut self, to: Mode, reason: SwitchReason) -> SwitchEvent {
        let at = SystemTime::now();
        let from = self.mode;
        let (outcome, moved, pause) = if from == to {
            (SwitchOutcome::Completed, Moved::default(), Duration::ZERO)
        } else {
            let t = self.switch_transaction(to);
            (t.outcome, t.moved, t.pause)
        };
        let (migrated_items, migrated_bytes) = (moved.items, moved.bytes);
        let event = SwitchEvent {
            from,
            to,
            reason,
            outcome,
            pause,
            migrated_items,
            migrated_bytes,
            at,
        };
        match &event.outcome {
            SwitchOutcome::Completed => tracing::info!(
                from = %event.from, to = %event.to, reason = ?event.reason,
                pause_us = event.pause.as_micros() as u64,
                migrated_items, migrated_bytes, "switch completed"
            ),
            SwitchOutcome::RolledBack(cause) => tracing::warn!(
                from = %event.from, to = %event.to, reason = ?event.reason, %cause,
                "switch rolled back"
            ),
            SwitchOutcome::TimedOut {
                pending,
                timeout_ms,
            } => tracing::warn!(
                from = %event.from, to = %event.to, reason = ?event.reason,
                ?pending, timeout_ms, "switch timed out at the barrier"
            ),
        }
        let cooldown = match &self.options.mode {
            ExecutionMode::Hybrid(config) => Duration::from_millis(config.cooldown_ms),
            _ => Duration::ZERO,
        };
        self.cooldown_until = Instant::now() + cooldown;
        let mut telemetry = self.shared.telemetry.lock();
        let rate_before = telemetry.throughput;
        let p99_before = telemetry.p99;
        telemetry.mode = Some(self.mode);
        telemetry.switches.push(SwitchImpact {
            event: event.clone(),
            rate_before,
            p99_before,
            rate_after: None,
            p99_after: None,
        });
        self.impact_pending = Some(telemetry.switches.len() - 1);
        drop(telemetry);
        self.monitor.clear();
        #[cfg(feature = "metrics")]
        crate::export::switched(&event);
        self.switches.push(event.clone());
        event
    }

    /// The switch timeout of the run's config (5 s outside hybrid mode).
    fn switch_timeout(&self) -> Duration {
        switch_timeout(&self.options)
    }

    fn report(&mut self) -> RunReport {
        self.sample();
        let metrics = self.shared.metrics();
        let stages: Vec<StageReport> = self
            .shared
            .names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let (items_in, items_out) = self.shared.controls.get(index).counts();
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
            final_mode: self.mode,
            elapsed: self.shared.started.elapsed(),
            stages,
            switches: self.switches.clone(),
            latency: metrics.latency.clone(),
            metrics,
            branches: Vec::new(),
            recoveries: self
                .recovery
                .as_ref()
                .map_or_else(Vec::new, |r| r.events().to_vec()),
            replay_log_peak: self.recovery.as_ref().map_or(0, Recovery::peak_log),
            replay_log_bound: self.recovery.as_ref().map_or(0, Recovery::bound),
            checkpoints: self.recovery.as_ref().map_or(0, Recovery::checkpoints),
        }
    }

    /// A timed-out switch's outcome: the stage that did not come.
    fn timed_out(&self, node: NodeId) -> SwitchOutcome {
        SwitchOutcome::TimedOut {
            pending: vec![self.shared.names[node.0].clone()],
            timeout_ms: self.switch_timeout().as_millis() as u64,
        }
    }
}

/// What the distributed half reads of the coordinator for one step; takes
/// the fields, not the coordinator, so `distributed` can be borrowed
/// mutably beside it.
fn run_of<'a>(shared: &'a Shared, options: &'a Options, edges: &'a [Box<dyn EdgeSpec>]) -> Run<'a> {
    Run {
        shared,
        options,
        edges,
    }
}
