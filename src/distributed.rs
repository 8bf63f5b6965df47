//! Distributed execution and the two switch transactions.
//!
//! In distributed mode every transform stage runs in a forked worker process;
//! every edge is a record ring in one shared segment; the source and the sink
//! stay on threads of this process. A worker is a copy of this process made
//! at the barrier, when the coordinator holds every stage: it inherits its
//! stage (operator and state) and runs the same stage loop over the record
//! rings.
//!
//! **In → distributed**: pause every stage (source first); create the
//! segment; archive each in-process ring's items, in order, into its record
//! ring *without consuming them*; fork the workers and wait until each says
//! it is attached. Any failure so far kills what was forked, drops the
//! segment and resumes the threads: nothing changed. Commit: drop the items
//! of the in-process rings, attach the record rings to the source and sink,
//! resume those two threads.
//!
//! **Distributed → in**: pause the source thread, then each worker (through
//! its control word: it saves its state into its state area and waits), then
//! the sink; read every record ring's unread records and every saved state,
//! validated, *without consuming them*. Any failure: tell the workers to
//! resume, restart the two threads. Commit: tell the workers to leave, reap
//! them, append the residual items to the in-process rings (behind what they
//! hold), install the states, restart every thread.

use crate::config::Mode;
use crate::control::{
    ControlTable, StageSlot, ABORT, EXIT, FINISHED, LEAVING, PAUSED, READY, RESUME, RUNNING,
    STARTING,
};
use crate::coordinator::{Coordinator, Shared, Slot};
use crate::error::{panic_message, Error};
use crate::event::SwitchOutcome;
use crate::executor::install_stamp_rings;
use crate::latency::{Stamp, StampRx, StampTx};
use crate::pipeline::{EdgeSpec, Fault};
use crate::port::StageExit;
use crate::stage::{Ctx, ErasedStage};
use ringweave_ipc::futex;
use ringweave_ipc::record_ring::RecordRing;
use ringweave_ipc::segment::{Segment, SegmentLayout};
use ringweave_ipc::sync::atomic::Ordering;
use ringweave_ipc::worker::{Worker, WorkerExit};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code of a worker whose stage failed (the message is in its error
/// area).
const EXIT_FAILED: i32 = 2;
/// Exit code of a worker that stopped because the run was torn down.
const EXIT_ABORTED: i32 = 3;
/// Bytes of each shared stamp ring: 512 stamps (32-byte frames).
const STAMP_RING_BYTES: usize = 16 << 10;

/// Exit code of a worker told to die at start by an injected fault.
const INJECTED_EXIT: i32 = 99;

/// The distributed half of a run: the data segment, its rings and the
/// workers.
pub(crate) struct Distributed {
    /// One record ring per edge, in `data`. Declared before `workers` so
    /// nothing here is unmapped while a worker is alive in this struct.
    rings: Vec<RecordRing>,
    /// One stamp ring per edge (sampled latency, see `latency.rs`).
    _stamp_rings: Vec<RecordRing>,
    /// Indexed by stage; `Some` for transforms.
    workers: Vec<Option<Worker>>,
    /// Indexed by stage: the watchdog's last view of each worker.
    progress: Vec<Progress>,
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
/// them. The only ring end made in this process is the source's producer
/// (it wrote edge 0's residue and keeps writing); the other producers that
/// wrote residues were detached, and every worker attaches its own ends
/// after the fork, so the parent hands a worker nothing that it owns.
struct LaidOut {
    data: Arc<Segment>,
    rings: Vec<RecordRing>,
    stamp_rings: Vec<RecordRing>,
    source_output: Box<dyn Any + Send>,
    items: u64,
    bytes: u64,
}

/// Why `lay_out` failed: the residual items did not fit (a larger ring may
/// do), or anything else.
enum LayOutError {
    Full(String),
    Other(String),
}

/// What a switch transaction returns to `Coordinator::switch`.
pub(crate) type Transaction = (SwitchOutcome, u64, u64, Duration);

impl Coordinator {
    /// Runs the switch to `to` (which differs from the current mode).
    pub(crate) fn switch_transaction(&mut self, to: Mode) -> Transaction {
        match to {
            Mode::Distributed => self.switch_out(),
            Mode::InProcess => self.switch_back(),
        }
    }

    /// Starts a run in distributed mode: every stage is parked, nothing has
    /// run yet.
    pub(crate) fn start_distributed(&mut self) {
        match self.enter_distributed() {
            Ok(_) => self.resume_threads(),
            Err(reason) => self.fail(Error::Distributed { reason }),
        }
    }

    /// The name of a stage that has ended, if any: a pipeline that is
    /// draining does not switch.
    fn draining(&mut self) -> Option<String> {
        if let Some(i) = self.slots.iter().position(|s| matches!(s, Slot::Done)) {
            return Some(self.shared.names[i].clone());
        }
        let dist = self.distributed.as_mut()?;
        for (i, worker) in dist.workers.iter_mut().enumerate() {
            if let Some(worker) = worker {
                if !matches!(worker.try_status(), Ok(None)) {
                    return Some(self.shared.names[i].clone());
                }
            }
        }
        None
    }

    fn switch_out(&mut self) -> Transaction {
        let t0 = Instant::now();
        if let Some(stage) = self.draining() {
            return rolled_back(format!(
                "stage `{stage}` has finished: the pipeline is draining"
            ));
        }
        let deadline = t0 + self.switch_timeout();
        for index in 0..self.len() {
            if !self.pause_thread(index, deadline) {
                self.resume_threads();
                return (self.timed_out(index), 0, 0, t0.elapsed());
            }
        }
        if let Some(stage) = self.draining() {
            self.resume_threads();
            return rolled_back_after(t0, format!("stage `{stage}` finished during the switch"));
        }
        if self.failure.is_some() {
            return rolled_back_after(t0, "the run failed during the switch".into());
        }
        match self.enter_distributed() {
            Ok((items, bytes)) => {
                self.resume_threads();
                (SwitchOutcome::Completed, items, bytes, t0.elapsed())
            }
            Err(cause) => {
                self.resume_threads();
                (SwitchOutcome::RolledBack(cause), 0, 0, t0.elapsed())
            }
        }
    }

    /// With every stage parked: builds the distributed half and commits to
    /// it (except for restarting the threads). On error nothing has changed:
    /// every worker forked is killed and reaped.
    fn enter_distributed(&mut self) -> Result<(u64, u64), String> {
        let result = self.build_distributed();
        if result.is_err() {
            self.clear_pids();
        }
        result
    }

    /// Forgets the worker pids the handle reports.
    fn clear_pids(&self) {
        for index in 0..self.len() {
            self.shared
                .controls
                .slot(index)
                .pid
                .store(0, Ordering::Relaxed);
        }
    }

    /// Creates the data segment with record rings of `ring_bytes` and
    /// archives every edge's residual items into them, consuming nothing.
    fn lay_out(&mut self, ring_bytes: usize) -> Result<LaidOut, LayOutError> {
        let n = self.len();
        let layout =
            RecordRing::layout(ring_bytes).map_err(|e| LayOutError::Other(e.to_string()))?;
        let mut segment_layout = SegmentLayout::new();
        let offsets = (0..n - 1)
            .map(|_| segment_layout.reserve(layout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LayOutError::Other(e.to_string()))?;
        let stamp_layout =
            RecordRing::layout(STAMP_RING_BYTES).map_err(|e| LayOutError::Other(e.to_string()))?;
        let stamp_offsets = (0..n - 1)
            .map(|_| segment_layout.reserve(stamp_layout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LayOutError::Other(e.to_string()))?;
        if self.options.faults.contains(&Fault::SegmentCreate) {
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
            .map_err(|e| LayOutError::Other(e.to_string()))?;
        let stamp_rings = stamp_offsets
            .iter()
            .map(|&offset| RecordRing::new(&data, offset, STAMP_RING_BYTES))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LayOutError::Other(e.to_string()))?;
        // Archive the residual items, edge by edge, without consuming them.
        let (mut items, mut bytes) = (0, 0);
        let mut source_output = None;
        for (e, ring) in rings.iter().enumerate() {
            // SAFETY: the ring is fresh and this is its only producer until
            // it is detached below (before any fork) or handed to the source
            // at the commit; `rings` keeps the segment mapped.
            let mut producer = unsafe { self.edges[e].record_producer(ring) };
            let input = parked(&mut self.slots[e + 1])
                .ring_input()
                .ok_or_else(|| LayOutError::Other("stage without input".into()))?;
            let (i, b) =
                self.edges[e]
                    .copy_out(input, &mut *producer)
                    .map_err(|(full, cause)| {
                        let cause = format!(
                            "edge `{}` → `{}`: {cause}",
                            self.shared.names[e],
                            self.shared.names[e + 1]
                        );
                        if full {
                            LayOutError::Full(cause)
                        } else {
                            LayOutError::Other(cause)
                        }
                    })?;
            items += i;
            bytes += b;
            if e == 0 {
                source_output = Some(producer);
            } else {
                // The worker of stage `e` attaches its own producer.
                self.edges[e].detach_producer(producer);
            }
        }
        let source_output =
            source_output.ok_or_else(|| LayOutError::Other("pipeline without edges".into()))?;

        Ok(LaidOut {
            data,
            rings,
            stamp_rings,
            source_output,
            items,
            bytes,
        })
    }

    fn build_distributed(&mut self) -> Result<(u64, u64), String> {
        if !self.shared.controls.is_shared() {
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
        let n = self.len();
        // The residual items must fit their record rings; a ring too small
        // for them is doubled (its pages cost nothing until touched) up to
        // 64 times the configured size.
        let mut ring_bytes = self.options.shm_ring_bytes;
        let limit = ring_bytes.saturating_mul(64).min(RecordRing::MAX_CAPACITY);
        let laid = loop {
            match self.lay_out(ring_bytes) {
                Ok(laid) => break laid,
                Err(LayOutError::Full(_)) if ring_bytes < limit => ring_bytes *= 2,
                Err(LayOutError::Full(cause) | LayOutError::Other(cause)) => return Err(cause),
            }
        };
        let LaidOut {
            data,
            rings,
            stamp_rings,
            source_output,
            items,
            bytes,
        } = laid;

        // Fork one worker per transform. The child gets addresses only: it
        // attaches its own ring ends after the fork, so the closure owns
        // nothing (`Worker::spawn` forgets it in the parent, where anything
        // it owned would leak on every switch).
        let mut workers: Vec<Option<Worker>> = (0..n).map(|_| None).collect();
        for index in 1..n - 1 {
            let name = &self.shared.names[index];
            if self.options.faults.contains(&Fault::Fork(name.clone())) {
                return Err(format!(
                    "fork of the worker of stage `{name}`: injected failure"
                ));
            }
            let plan = WorkerPlan {
                stage: &mut **parked(&mut self.slots[index]),
                shared: &*self.shared,
                index,
                batch: self.options.batch_size,
                edge_items: self.options.ring_capacity,
                input: (&*self.edges[index - 1], &rings[index - 1]),
                output: (&*self.edges[index], &rings[index]),
                stamps: (&stamp_rings[index - 1], &stamp_rings[index]),
                dies: self
                    .options
                    .faults
                    .contains(&Fault::WorkerDiesAtStart(name.clone())),
            };
            // Written by the worker when it is attached.
            self.shared
                .controls
                .slot(index)
                .status
                .store(STARTING, Ordering::Relaxed);
            self.shared.controls.get(index).reset();
            let child = move || plan.run();
            owns_nothing(&child);
            // SAFETY: the closure runs only in the child, which uses its own
            // copy of the stage (the coordinator holds it parked, so no
            // thread of ours is inside it at the fork), ring ends it attaches
            // to rings nobody else uses (see `WorkerPlan::run`), the control
            // table in shared memory, and the allocator. It takes no lock and
            // does not log (see `worker_main`).
            let spawned = unsafe { Worker::spawn(&self.shared.names[index], child) };
            match spawned {
                Ok(worker) => {
                    let pid = worker.pid().as_raw() as u32;
                    self.shared
                        .controls
                        .slot(index)
                        .pid
                        .store(pid, Ordering::Relaxed);
                    workers[index] = Some(worker);
                }
                // `workers` drops here: every worker forked so far is killed
                // and reaped.
                Err(e) => return Err(e.to_string()),
            }
        }

        // Verify that every worker came up.
        let deadline = Instant::now() + self.switch_timeout();
        for (index, worker) in workers.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            await_ready(self.shared.controls.slot(index), worker, deadline).map_err(|cause| {
                format!("worker of stage `{}` {cause}", self.shared.names[index])
            })?;
        }

        // Commit: the items now live in the record rings.
        for e in 0..n - 1 {
            if let Some(input) = parked(&mut self.slots[e + 1]).ring_input() {
                self.edges[e].clear(input);
            }
        }
        let sink = self.sink();
        // SAFETY: the workers attached the other ends of these rings; these
        // are the only source-side producers and sink-side consumers, and
        // `rings`/`stamp_rings` (kept in `Distributed`) keep them mapped.
        let (sink_input, source_stamps, sink_stamps) = unsafe {
            (
                self.edges[n - 2].record_consumer(&rings[n - 2]),
                StampTx::Shm(stamp_rings[0].producer::<Stamp>()),
                StampRx::Shm(stamp_rings[n - 2].consumer::<Stamp>()),
            )
        };
        let source = parked(&mut self.slots[0]);
        source.attach_shm(None, Some(source_output));
        source.set_stamps(None, Some(source_stamps));
        let sink_stage = parked(&mut self.slots[sink]);
        sink_stage.attach_shm(Some(sink_input), None);
        sink_stage.set_stamps(Some(sink_stamps), None);
        self.distributed = Some(Distributed {
            rings,
            _stamp_rings: stamp_rings,
            workers,
            progress: vec![
                Progress {
                    items_in: 0,
                    since: Instant::now(),
                };
                n
            ],
            _data: data,
        });
        self.mode = Mode::Distributed;
        Ok((items, bytes))
    }

    fn switch_back(&mut self) -> Transaction {
        let t0 = Instant::now();
        if let Some(stage) = self.draining() {
            return rolled_back(format!(
                "stage `{stage}` has finished: the pipeline is draining"
            ));
        }
        let deadline = t0 + self.switch_timeout();
        let sink = self.sink();
        for index in 0..self.len() {
            let reached = if index == 0 || index == sink {
                self.pause_thread(index, deadline)
            } else {
                self.pause_worker(index, deadline)
            };
            if !reached {
                if self.failure.is_some() {
                    return rolled_back_after(t0, "the run failed during the switch".into());
                }
                self.resume_distributed();
                return (self.timed_out(index), 0, 0, t0.elapsed());
            }
        }
        if let Some(stage) = self.draining() {
            self.resume_distributed();
            return rolled_back_after(t0, format!("stage `{stage}` finished during the switch"));
        }
        if self.failure.is_some() {
            return rolled_back_after(t0, "the run failed during the switch".into());
        }
        match self.read_back() {
            Ok((residual, states, items, bytes)) => {
                let leaving = self.leave_distributed(residual, states);
                let pause = t0.elapsed();
                self.reap_leaving(leaving);
                (SwitchOutcome::Completed, items, bytes, pause)
            }
            Err(cause) => {
                self.resume_distributed();
                (SwitchOutcome::RolledBack(cause), 0, 0, t0.elapsed())
            }
        }
    }

    /// Pauses worker `index`: `true` once it has saved its state and waits
    /// for a decision; `false` if it did not accept before `deadline` (then it
    /// runs on) or died (then the run fails).
    fn pause_worker(&mut self, index: usize, deadline: Instant) -> bool {
        let shared = Arc::clone(&self.shared);
        let control = shared.controls.get(index);
        control.request_pause();
        self.wake_all();
        let mut withdrawn = false;
        loop {
            // SYNC POINT: worker-paused. Pairs with the Release store of
            // PAUSED in `worker_main`: the saved state is visible.
            let cmd = control.cmd().load(Ordering::Acquire);
            if cmd == PAUSED {
                return true;
            }
            // A worker that finished its stream has reached every barrier;
            // the caller sees the pipeline draining and rolls back.
            if self.worker_finished(index) {
                return true;
            }
            if self.check_workers() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline && !withdrawn {
                if control.cancel_pause() {
                    return false;
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
            let _ = futex::wait_until(control.cmd(), cmd, Some(until));
        }
    }

    /// Undoes the pause of a switch back: workers that paused carry on, the
    /// source and sink threads restart on their record rings.
    fn resume_distributed(&mut self) {
        for index in 1..self.sink() {
            let control = self.shared.controls.get(index);
            // A worker that has not accepted yet never will.
            if !control.cancel_pause() && control.cmd().load(Ordering::Acquire) == PAUSED {
                control.cmd().store(RESUME, Ordering::Release);
                let _ = futex::wake(control.cmd(), u32::MAX);
            }
        }
        self.resume_threads();
    }

    /// Reads every record ring and every worker's saved state, validated,
    /// consuming nothing. `Err` names what failed.
    #[allow(clippy::type_complexity)]
    fn read_back(
        &mut self,
    ) -> Result<
        (
            Vec<Box<dyn Any + Send>>,
            Vec<Option<Box<dyn Any + Send>>>,
            u64,
            u64,
        ),
        String,
    > {
        let dist = self
            .distributed
            .as_ref()
            .ok_or_else(|| "not distributed".to_string())?;
        let (mut items, mut bytes) = (0, 0);
        let mut residual = Vec::with_capacity(dist.rings.len());
        for (e, ring) in dist.rings.iter().enumerate() {
            // SAFETY: both ends of every ring are paused: the source and
            // sink threads handed their stages over (through the event
            // channel), the workers acknowledged with PAUSED (read with
            // Acquire). Every producer flushed before pausing.
            let (vec, n, b) = unsafe { self.edges[e].copy_in(ring) }.map_err(|cause| {
                format!(
                    "edge `{}` → `{}`: {cause}",
                    self.shared.names[e],
                    self.shared.names[e + 1]
                )
            })?;
            residual.push(vec);
            items += n;
            bytes += b;
        }
        let mut states = Vec::with_capacity(self.len());
        for index in 0..self.len() {
            let slot = self.shared.controls.slot(index);
            // Relaxed: ordered by the Acquire load of PAUSED in `pause_worker`.
            let len = slot.state_len.load(Ordering::Relaxed);
            if index == 0 || index == self.sink() || len == 0 {
                states.push(None);
                continue;
            }
            let name = &self.shared.names[index];
            if len == u64::MAX {
                return Err(format!(
                    "stage `{name}`: {}",
                    read_error(&self.shared.controls, index)
                ));
            }
            let (area, capacity) = self
                .shared
                .controls
                .state_area(index)
                .ok_or_else(|| "no state area".to_string())?;
            let len = (len as usize).min(capacity);
            // SAFETY: the worker wrote `len` bytes there before storing
            // PAUSED, which we read with Acquire; it writes nothing more
            // until told to resume.
            let bytes = unsafe { std::slice::from_raw_parts(area, len) };
            let Slot::Parked(stage) = &self.slots[index] else {
                return Err(format!("stage `{name}` is not parked"));
            };
            states.push(
                stage
                    .decode_state(bytes)
                    .map_err(|cause| format!("stage `{name}`: {cause}"))?,
            );
        }
        Ok((residual, states, items, bytes))
    }

    /// The commit of a switch back.
    ///
    /// Returns the workers, told to leave: reaping them (each tears down a
    /// copy of the address space, milliseconds at 100 MB) is not part of the
    /// pause, so the caller does it after the threads are running again.
    fn leave_distributed(
        &mut self,
        residual: Vec<Box<dyn Any + Send>>,
        states: Vec<Option<Box<dyn Any + Send>>>,
    ) -> Vec<(usize, Worker)> {
        let Some(mut dist) = self.distributed.take() else {
            return Vec::new();
        };
        // All at once: the workers only `_exit` from here, touching nothing.
        let mut leaving: Vec<(usize, Worker)> = dist
            .workers
            .iter_mut()
            .enumerate()
            .filter_map(|(index, worker)| worker.take().map(|w| (index, w)))
            .collect();
        for (index, _) in &leaving {
            let control = self.shared.controls.get(*index);
            control.cmd().store(EXIT, Ordering::Release);
            let _ = futex::wake(control.cmd(), u32::MAX);
        }
        // The threads resumed below reuse these control words: each worker
        // must have read its EXIT first (microseconds; its exit is not).
        for (index, worker) in &mut leaving {
            await_leaving(self.shared.controls.slot(*index), worker);
        }
        let sink = self.sink();
        parked(&mut self.slots[0]).detach_shm();
        parked(&mut self.slots[sink]).detach_shm();
        for (e, items) in residual.into_iter().enumerate() {
            if let Some(outbox) = parked(&mut self.slots[e]).ring_output() {
                self.edges[e].append(outbox, items);
            }
        }
        for (index, state) in states.into_iter().enumerate() {
            let (items_in, items_out) = self.shared.controls.get(index).counts();
            let stage = parked(&mut self.slots[index]);
            stage.set_tally(items_in, items_out);
            if let Some(state) = state {
                stage.set_state(state);
            }
        }
        let mut stages: Vec<&mut dyn ErasedStage> =
            self.slots.iter_mut().map(|s| &mut **parked(s)).collect();
        install_stamp_rings(&mut stages);
        drop(dist);
        self.clear_pids();
        self.mode = Mode::InProcess;
        self.resume_threads();
        leaving
    }

    /// Reaps workers told to leave at a switch back.
    fn reap_leaving(&self, leaving: Vec<(usize, Worker)>) {
        for (index, worker) in leaving {
            match worker.wait() {
                Ok(WorkerExit::Exited(0)) => {}
                other => tracing::warn!(stage = %self.shared.names[index], ?other,
                    "worker did not leave cleanly at a switch back"),
            }
        }
    }

    /// Notices workers that ended. A worker that exited 0 finished its
    /// stage; any other end fails the run. Returns whether one failed.
    pub(crate) fn check_workers(&mut self) -> bool {
        let Some(dist) = self.distributed.as_mut() else {
            return self.failure.is_some();
        };
        // A worker stops by itself (EXIT_ABORTED) only because a neighbour
        // failed: report the neighbour, not the one that reacted to it.
        let mut culprit = None;
        let mut reacted = None;
        for (index, worker) in dist.workers.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            let pid = worker.pid().as_raw();
            match worker.try_status() {
                Ok(None) => {}
                Ok(Some(exit)) if ended_well(self.shared.controls.slot(index), exit) => {}
                Ok(Some(exit @ WorkerExit::Exited(EXIT_ABORTED))) => {
                    reacted.get_or_insert((index, pid, Some(exit)));
                }
                Ok(Some(exit)) => {
                    culprit.get_or_insert((index, pid, Some(exit)));
                }
                Err(e) => {
                    culprit.get_or_insert((index, pid, None));
                    tracing::warn!(stage = %self.shared.names[index], error = %e, "could not learn how a worker ended");
                }
            }
        }
        // Reaped above either way; the first failure is already reported.
        if self.failure.is_some() {
            return true;
        }
        let (index, pid, ended) = match (culprit, reacted) {
            (Some(culprit), _) => culprit,
            (None, Some(reacted)) => {
                // The failure it reacted to (a worker, or a thread here) is
                // about to show; give it a moment before settling for this.
                let seen = *self.reaction_seen.get_or_insert_with(Instant::now);
                if seen.elapsed() < Duration::from_millis(500) {
                    return false;
                }
                reacted
            }
            (None, None) => return false,
        };
        let message = read_error(&self.shared.controls, index);
        let stage = self.shared.names[index].clone();
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
        self.fail(error);
        true
    }

    /// The watchdog: kills a worker whose input holds records and whose
    /// output is empty (so it waits for neither) but whose counters have
    /// stood still for longer than the stall timeout, and fails the run
    /// naming it. Returns whether it
    /// did. Workers waiting for input or for room are not stalled, and a
    /// switch (which runs outside the event loop that calls this) restarts
    /// every clock.
    pub(crate) fn check_stalls(&mut self) -> bool {
        let timeout = self.options.stall_timeout;
        let Some(dist) = self.distributed.as_mut() else {
            return false;
        };
        let now = Instant::now();
        let mut stalled = None;
        for (index, worker) in dist.workers.iter().enumerate() {
            let Some(worker) = worker else { continue };
            let (items_in, _) = self.shared.controls.get(index).counts();
            let seen = &mut dist.progress[index];
            let (read, write) = dist.rings[index - 1].positions();
            let (out_read, out_write) = dist.rings[index].positions();
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
                stalled = Some((
                    index,
                    worker.pid().as_raw() as u32,
                    stalled_for,
                    items_in,
                    write - read,
                ));
                break;
            }
        }
        let Some((index, pid, stalled_for, items_in, input_bytes)) = stalled else {
            return false;
        };
        if let Some(Some(worker)) = dist.workers.get(index) {
            // Reaped later with the others; the failure recorded below comes
            // first, so its SIGKILL is not reported as a crash.
            let _ = worker.kill();
        }
        self.fail(Error::WorkerStalled {
            stage: self.shared.names[index].clone(),
            pid,
            stalled_for,
            items_in,
            input_bytes,
        });
        true
    }

    /// Whether the worker of stage `index` has finished its stage (exited 0).
    fn worker_finished(&mut self, index: usize) -> bool {
        let Some(dist) = self.distributed.as_mut() else {
            return false;
        };
        match dist.workers.get_mut(index) {
            Some(Some(worker)) => match worker.try_status() {
                Ok(Some(exit)) => ended_well(self.shared.controls.slot(index), exit),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether a worker process still runs.
    pub(crate) fn workers_running(&self) -> bool {
        self.distributed
            .as_ref()
            .is_some_and(|d| d.workers.iter().flatten().any(|w| w.exit().is_none()))
    }

    /// At the end of a run: reaps every worker (they have finished, or are
    /// killed).
    pub(crate) fn finish_workers(&mut self) {
        self.check_workers();
        if let Some(mut dist) = self.distributed.take() {
            for worker in dist.workers.iter_mut() {
                if let Some(worker) = worker.take() {
                    let _ = worker.wait();
                }
            }
            self.distributed = Some(dist);
            self.clear_pids();
        }
    }

    /// Kills every worker (the run is torn down); threads blocked on their
    /// rings notice the abort at their next poll.
    pub(crate) fn abort_workers(&mut self) {
        if let Some(dist) = self.distributed.as_mut() {
            for worker in dist.workers.iter().flatten() {
                if worker.exit().is_none() {
                    let _ = worker.kill();
                }
            }
            for (index, worker) in dist.workers.iter_mut().enumerate() {
                if worker.is_some() {
                    self.shared
                        .controls
                        .get(index)
                        .cmd()
                        .store(ABORT, Ordering::Relaxed);
                }
            }
        }
    }

    /// Fill of each record ring (bytes), when distributed.
    pub(crate) fn shared_ring_fills(&self) -> Option<Vec<f64>> {
        let dist = self.distributed.as_ref()?;
        Some(
            dist.rings
                .iter()
                .map(|ring| {
                    let (read, write) = ring.positions();
                    write.saturating_sub(read) as f64 / ring.capacity() as f64
                })
                .collect(),
        )
    }

    /// Wakes every end of every record ring.
    pub(crate) fn wake_shared_rings(&self) {
        if let Some(dist) = &self.distributed {
            for ring in &dist.rings {
                ring.wake();
            }
        }
    }
}

fn rolled_back(cause: String) -> Transaction {
    (SwitchOutcome::RolledBack(cause), 0, 0, Duration::ZERO)
}

fn rolled_back_after(t0: Instant, cause: String) -> Transaction {
    (SwitchOutcome::RolledBack(cause), 0, 0, t0.elapsed())
}

/// The stage in a slot the coordinator knows to be parked.
fn parked(slot: &mut Slot) -> &mut Box<dyn ErasedStage> {
    match slot {
        Slot::Parked(stage) => stage,
        _ => unreachable!("the coordinator holds every stage during a switch"),
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
        WorkerExit::Unknown => slot.status.load(Ordering::Acquire) == FINISHED,
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

/// Waits until the worker marks itself `READY`, or fails.
fn await_ready(slot: &StageSlot, worker: &mut Worker, deadline: Instant) -> Result<(), String> {
    loop {
        // SYNC POINT: worker-ready. Pairs with the Release in `worker_main`.
        let status = slot.status.load(Ordering::Acquire);
        if status == READY {
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
        let _ = futex::wait_until(&slot.status, status, Some(until));
    }
}

/// Waits until a worker told to leave says it has (or is gone).
fn await_leaving(slot: &StageSlot, worker: &mut Worker) {
    loop {
        // SYNC POINT: worker-leaving. Pairs with the Release in
        // `worker_main`: the worker no longer reads its control word.
        let status = slot.status.load(Ordering::Acquire);
        if status == LEAVING || !matches!(worker.try_status(), Ok(None)) {
            return;
        }
        let until = Instant::now() + Duration::from_millis(2);
        let _ = futex::wait_until(&slot.status, status, Some(until));
    }
}

/// The message a worker left in its error area (empty if none).
fn read_error(table: &ControlTable, index: usize) -> String {
    let slot = table.slot(index);
    // Acquire: pairs with the Release in `leave_error`.
    let len = slot.error_len.load(Ordering::Acquire) as usize;
    let Some((area, capacity)) = table.error_area(index) else {
        return String::new();
    };
    // SAFETY: the worker wrote `len <= capacity` bytes before publishing
    // `len` with Release, and writes nothing more (it has exited or waits).
    let bytes = unsafe { std::slice::from_raw_parts(area, len.min(capacity)) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Leaves `message` in the worker's error area for the parent to report.
fn leave_error(table: &ControlTable, index: usize, message: &str) {
    let Some((area, capacity)) = table.error_area(index) else {
        return;
    };
    let bytes = message.as_bytes();
    let len = bytes.len().min(capacity);
    // SAFETY: this worker is the only writer of its error area, and the
    // parent reads it only after the Release store below (or after reaping).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, len) };
    table
        .slot(index)
        .error_len
        .store(len as u64, Ordering::Release);
}

/// Everything a worker needs, as addresses into this process's memory,
/// which the forked child has a copy of at the same addresses. `Copy`, so
/// the closure that carries it owns nothing (see [`owns_nothing`]).
#[derive(Clone, Copy)]
struct WorkerPlan {
    /// The parked stage (the child runs its copy).
    stage: *mut dyn ErasedStage,
    shared: *const Shared,
    index: usize,
    batch: usize,
    /// Items a shared-memory edge should hold (the in-process capacity).
    edge_items: usize,
    /// The input edge's spec and record ring.
    input: (*const dyn EdgeSpec, *const RecordRing),
    /// The output edge's spec and record ring.
    output: (*const dyn EdgeSpec, *const RecordRing),
    /// The stamp rings of the input and output edges.
    stamps: (*const RecordRing, *const RecordRing),
    /// An injected fault: exit before attaching.
    dies: bool,
}

/// A compile-time check that a worker's closure is `Copy`, so owns nothing
/// that forgetting it in the parent could leak.
fn owns_nothing<F: Copy>(_: &F) {}

impl WorkerPlan {
    /// The child's side: attaches the ring ends and runs the stage.
    fn run(self) -> i32 {
        if self.dies {
            return INJECTED_EXIT;
        }
        silence_panic_hook();
        // SAFETY: this process is a copy made by `fork` while the parent
        // held every pointee: the specs, the rings and the segment they map
        // are at the same addresses and live until `_exit`. The parent made
        // none of these four ends (it detached the producers it used for
        // the residues before the fork), so each is the only one in use.
        let (input, output, stamps) = unsafe {
            let (spec_in, ring_in) = self.input;
            let (spec_out, ring_out) = self.output;
            (
                (*spec_in).record_consumer(&*ring_in),
                (*spec_out).record_producer(&*ring_out),
                (
                    StampRx::Shm((*self.stamps.0).consumer::<Stamp>()),
                    StampTx::Shm((*self.stamps.1).producer::<Stamp>()),
                ),
            )
        };
        worker_main(self, input, output, stamps)
    }
}

/// Replaces the panic hook of this (forked) process with one that does
/// nothing. The hook the program installed — std's default included —
/// writes to stderr and may capture a backtrace, and both take locks that
/// another thread of the parent may have held at the fork; in the child
/// they stay locked forever, and a panicking stage would hang instead of
/// failing. The panic message reaches the parent through the error area.
///
/// The old hook is forgotten, not dropped: its destructor is the parent's
/// business. (`take_hook`/`set_hook` take std's hook lock, which is only
/// held while a hook is being replaced or a thread is panicking.)
fn silence_panic_hook() {
    std::mem::forget(std::panic::take_hook());
    std::panic::set_hook(Box::new(|_| {}));
}

/// The body of a worker process: runs stage `index` over its record rings
/// and answers the barrier through its control word. Returns the exit code.
///
/// Runs in a forked child: it uses only its copy of the stage, the ring
/// ends, the shared control table and the allocator. No lock, no logging.
fn worker_main(
    plan: WorkerPlan,
    input: Box<dyn Any + Send>,
    output: Box<dyn Any + Send>,
    (stamps_in, stamps_out): (StampRx, StampTx),
) -> i32 {
    let index = plan.index;
    // SAFETY: this process is a copy made by `fork`; the stage and the
    // shared state are at the same addresses, alive until `_exit`, and
    // nothing else in this process touches them.
    let (stage, shared) = unsafe { (&mut *plan.stage, &*plan.shared) };
    let table = &shared.controls;
    stage.attach_shm(Some(input), Some(output));
    stage.set_stamps(Some(stamps_in), Some(stamps_out));
    let ctx = Ctx {
        control: &table.slot(index).control,
        batch: plan.batch,
        edge_items: plan.edge_items,
        latency: &shared.latency,
    };
    let slot = table.slot(index);
    // SYNC POINT: worker-ready. Pairs with the Acquire in `await_ready`.
    slot.status.store(READY, Ordering::Release);
    let _ = futex::wake(&slot.status, u32::MAX);
    let cmd = slot.control.cmd();
    loop {
        let exit = match catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))) {
            Ok(exit) => exit,
            Err(payload) => {
                leave_error(table, index, &panic_message(&*payload));
                stage.detach_shm();
                return Worker::PANIC_EXIT_CODE;
            }
        };
        match exit {
            StageExit::Finished => {
                // Closes the output: the next stage sees the end of stream.
                stage.detach_shm();
                // SYNC POINT: worker-finished. Pairs with the Acquire in
                // `Coordinator::ended_well`.
                slot.status.store(FINISHED, Ordering::Release);
                return 0;
            }
            StageExit::Aborted => {
                stage.detach_shm();
                return EXIT_ABORTED;
            }
            StageExit::Failed(error) => {
                leave_error(table, index, &error.to_string());
                stage.detach_shm();
                return EXIT_FAILED;
            }
            StageExit::Paused => {}
        }
        // Paused: save the state, acknowledge, wait for the decision.
        let saved = match table.state_area(index) {
            Some((area, capacity)) => {
                // SAFETY: only this worker writes its state area, and only
                // now, before it stores PAUSED; the parent reads it after.
                let area = unsafe { std::slice::from_raw_parts_mut(area, capacity) };
                stage.save_state(area)
            }
            None => Ok(0),
        };
        let len = match saved {
            Ok(len) => len as u64,
            Err(message) => {
                leave_error(table, index, &message);
                u64::MAX
            }
        };
        // Relaxed: published by the Release store of PAUSED below.
        slot.state_len.store(len, Ordering::Relaxed);
        // SYNC POINT: worker-paused. Pairs with the Acquire in
        // `pause_worker`.
        cmd.store(PAUSED, Ordering::Release);
        let _ = futex::wake(cmd, u32::MAX);
        loop {
            // Acquire: pairs with the coordinator's Release of its decision.
            match cmd.load(Ordering::Acquire) {
                PAUSED => {
                    let _ = futex::wait(cmd, PAUSED, None);
                }
                EXIT => {
                    // SYNC POINT: worker-leaving. Pairs with the Acquire in
                    // `await_leaving`: nothing here reads `cmd` again.
                    slot.status.store(LEAVING, Ordering::Release);
                    let _ = futex::wake(&slot.status, u32::MAX);
                    return 0;
                }
                ABORT => return EXIT_ABORTED,
                RESUME => {
                    // A CAS, not a store: a new pause request may already
                    // have replaced RESUME, and must not be lost.
                    let _ =
                        cmd.compare_exchange(RESUME, RUNNING, Ordering::Relaxed, Ordering::Relaxed);
                    break;
                }
                // RUNNING (a withdrawn request) or a new PAUSE_REQUESTED,
                // which the stage loop answers at once.
                _ => break,
            }
        }
    }
}
