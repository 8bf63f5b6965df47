//! The worker process's side: what a forked child runs. It attaches its own
//! ring ends (the parent hands it addresses, never owned values), runs its
//! stage over the record rings, answers the barrier through its control
//! word, and reports a failure through its error area and exit code.
//!
//! Code here runs after `fork` in a copy of a multi-threaded process: any
//! lock another thread held at the fork stays held forever. It therefore
//! takes no lock and does not log; stage code must not either (see the
//! README's "After a fork").

use crate::edge::EdgeSpec;
use crate::erased::{End, Erased};
use crate::error::panic_message;
use crate::latency::{Stamp, StampRx, StampTx};
use crate::op::StateError;
use crate::port::StageExit;
use crate::shared::Shared;
use crate::stage::{Ctx, ErasedStage};
use ringweave_ipc::control::{Cmd, ControlTable, WorkerStatus};
use ringweave_ipc::futex;
use ringweave_ipc::record_ring::RecordRing;
use ringweave_ipc::sync::atomic::Ordering;
use ringweave_ipc::worker::Worker;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Exit code of a worker whose stage failed (the message is in its error
/// area).
pub(crate) const EXIT_FAILED: i32 = 2;
/// Exit code of a worker that stopped because the run was torn down.
pub(crate) const EXIT_ABORTED: i32 = 3;
/// Exit code of a worker told to die at start by an injected fault.
pub(crate) const INJECTED_EXIT: i32 = 99;

/// Leaves `message` in the worker's error area for the parent to report.
fn leave_error(table: &ControlTable, index: usize, message: &str) {
    // SAFETY: this is the worker of stage `index`, the only writer of its
    // error area; the parent reads it only after this worker has exited or
    // stored `Paused` (after this call in both cases).
    unsafe { table.leave_error(index, message) };
}

/// Everything a worker needs, as addresses into this process's memory,
/// which the forked child has a copy of at the same addresses. `Copy`, so
/// the closure that carries it owns nothing (see [`owns_nothing`]).
#[derive(Clone, Copy)]
pub(crate) struct WorkerPlan {
    /// The parked stage (the child runs its copy).
    pub stage: *mut dyn ErasedStage,
    pub shared: *const Shared,
    pub index: usize,
    pub batch: usize,
    /// Items a shared-memory edge should hold (the in-process capacity).
    pub edge_items: usize,
    /// The input edge's spec and record ring.
    pub input: (*const dyn EdgeSpec, *const RecordRing),
    /// The output edge's spec and record ring.
    pub output: (*const dyn EdgeSpec, *const RecordRing),
    /// The stamp rings of the input and output edges.
    pub stamps: (*const RecordRing, *const RecordRing),
    /// An injected fault: exit before attaching.
    pub dies: bool,
    /// Bytes a stage's archived state may take (`max_state_bytes`).
    pub state_bytes: usize,
    /// Bytes of a shared-memory edge's ring (`shm_ring_bytes`).
    pub ring_bytes: usize,
}

/// A compile-time check that a worker's closure is `Copy`, so owns nothing
/// that forgetting it in the parent could leak.
pub(crate) fn owns_nothing<F: Copy>(_: &F) {}

impl WorkerPlan {
    /// The child's side: attaches the ring ends and runs the stage.
    pub(crate) fn run(self) -> i32 {
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
    input: Erased<End>,
    output: Erased<End>,
    stamps: (StampRx, StampTx),
) -> i32 {
    let code = worker_loop(plan, input, output, stamps);
    // SAFETY: as in `worker_loop`, which has returned its borrows.
    let (stage, shared) = unsafe { (&mut *plan.stage, &*plan.shared) };
    // The stage's replica processes, if it made any, go with it.
    stage.stop_replicas(shared.controls.slot(plan.index));
    code
}

/// [`worker_main`] but for the replica processes.
fn worker_loop(
    plan: WorkerPlan,
    input: Erased<End>,
    output: Erased<End>,
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
        in_worker: true,
        slot: Some(table.slot(index)),
        state_bytes: plan.state_bytes,
        ring_bytes: plan.ring_bytes,
    };
    let slot = table.slot(index);
    // SYNC POINT: worker-ready. Pairs with the Acquire in `await_ready`.
    slot.set_status(WorkerStatus::Ready, Ordering::Release);
    let _ = futex::wake(slot.status_word(), u32::MAX);
    let control = &slot.control;
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
                // `distributed::ended_well`.
                slot.set_status(WorkerStatus::Finished, Ordering::Release);
                return 0;
            }
            StageExit::Aborted => {
                stage.detach_shm();
                return EXIT_ABORTED;
            }
            StageExit::Failed(error) => {
                // A replica process that died: the parent names it from
                // the slot (`failed_replica`) and wants how it ended.
                let message = match error {
                    crate::error::Error::WorkerCrashed { exit, .. }
                        if slot.failed_replica.load(Ordering::Relaxed) != 0 =>
                    {
                        exit
                    }
                    error => error.to_string(),
                };
                leave_error(table, index, &message);
                if slot.failed_replica.load(Ordering::Relaxed) == 0 {
                    stage.detach_shm();
                }
                // Else the output stays open: closing it would tell the
                // next stage the stream ended, while the coordinator may
                // replace this worker and go on (crash recovery).
                return EXIT_FAILED;
            }
            StageExit::Paused => {}
        }
        // Paused: save the state, acknowledge, wait for the decision.
        let saved = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: this is the worker of stage `index`, pausing: the
            // parent reads the area only after the Release store of `Paused`
            // below, and `area` is not used after it.
            let area = unsafe { table.state_area_mut(index) };
            match area {
                Some(area) => stage.save_state(area),
                None => Ok(0),
            }
        }));
        // A state whose serializer panics fails the run as a panic of the
        // stage, with its message, like a panic in the loop above.
        let saved = match saved {
            Ok(saved) => saved,
            Err(payload) => {
                leave_error(table, index, &panic_message(&*payload));
                stage.detach_shm();
                return Worker::PANIC_EXIT_CODE;
            }
        };
        let len = match saved {
            Ok(len) => len as u64,
            Err(StateError::ReplicaDied { replica, exit }) => {
                // A crash, as in the stage loop (`replica_failed`): the
                // parent names `stage[replica]` and may restart the run.
                slot.failed_replica.store(replica as u32, Ordering::Relaxed);
                leave_error(table, index, &exit);
                return EXIT_FAILED;
            }
            Err(error) => {
                leave_error(table, index, &error.to_string());
                u64::MAX
            }
        };
        // Relaxed: published by the Release store of `Paused` below.
        slot.state_len.store(len, Ordering::Relaxed);
        // SYNC POINT: worker-paused. Pairs with the Acquire in
        // `Distributed::pause_worker`.
        control.store_cmd(Cmd::Paused, Ordering::Release);
        let _ = futex::wake(control.cmd_word(), u32::MAX);
        loop {
            // Acquire: pairs with the coordinator's Release of its decision.
            match control.load_cmd(Ordering::Acquire) {
                Cmd::Paused => {
                    let _ = futex::wait(control.cmd_word(), Cmd::Paused as u32, None);
                }
                Cmd::Exit => {
                    // SYNC POINT: worker-leaving. Pairs with the Acquire in
                    // `await_leaving`: nothing here reads the word again.
                    slot.set_status(WorkerStatus::Leaving, Ordering::Release);
                    let _ = futex::wake(slot.status_word(), u32::MAX);
                    return 0;
                }
                Cmd::Abort => return EXIT_ABORTED,
                Cmd::Resume => {
                    // A CAS, not a store: a new pause request may already
                    // have replaced `Resume`, and must not be lost.
                    let _ = control.replace_cmd(
                        Cmd::Resume,
                        Cmd::Running,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    break;
                }
                // `Running` (a withdrawn request) or a new `PauseRequested`,
                // which the stage loop answers at once (`Pausing` is the
                // stage loop's own, never seen here).
                Cmd::Running | Cmd::PauseRequested | Cmd::Pausing => break,
            }
        }
    }
}
