//! Replicas as processes: in a worker process, replicas `1..n` of a stage
//! run in processes forked from the worker (replica 0 is the worker
//! itself), so each replica is a process of its own — its own pid in
//! `worker_pids()` (`score[2]`), its own crash — while the pipeline sees
//! one stage, exactly as with the thread replicas of `replica.rs`.
//!
//! The worker deals each batch as the threads do (contiguous runs, or by
//! key group), sends replica `r`'s part to it over a request ring, runs
//! part 0 itself, then reads each replica's answer: the outputs over one
//! ring and, over another, where each input's outputs end — read first, so
//! the worker knows how many outputs to take. An empty request asks the
//! replica to archive its state into its state area (keyed state: each
//! replica owns its groups, and the worker gathers them before it saves).
//!
//! The replicas are forked lazily, at the first batch worth dealing out,
//! from the worker, which has one thread then (fork-safe as the worker
//! itself is: `ringweave_ipc::worker::Worker::spawn`'s rules), inherit the
//! stage as it is at that moment (keyed state included) and die with the
//! worker (`PR_SET_PDEATHSIG`); the worker kills and reaps them when it
//! leaves.

use crate::item::Item;
use crate::op::{run_each, Operator};
use crate::replica::Batch;
use crate::shm::MAX_ITEMS_PER_RECORD;
use ringweave_ipc::control::StageSlot;
use ringweave_ipc::record::{RecordError, VecOf};
use ringweave_ipc::record_ring::{PopError, PushError, RecordConsumer, RecordProducer, RecordRing};
use ringweave_ipc::segment::{Segment, SegmentLayout};
use ringweave_ipc::sync::atomic::Ordering;
use ringweave_ipc::worker::{Worker, WorkerExit};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of each request and output ring, at least (the edges' size,
/// `shm_ring_bytes`, if larger: an item that fits an edge fits here).
const RING_BYTES: usize = 1 << 20;
/// Bytes of each ends ring (one `u32` per input).
const ENDS_BYTES: usize = 1 << 16;
/// How often a wait on a replica checks that it still lives.
const LIVENESS_POLL: Duration = Duration::from_millis(5);
/// A replica's exit code after an operator panic (its message is in the
/// state area). Not `Worker::PANIC_EXIT_CODE`, which a panic outside the
/// operator gives, with no message.
const PANIC_EXIT: i32 = 71;
/// A replica's exit code when its rings fail.
const FAILED_EXIT: i32 = 70;

/// Why the replicas could not do a batch.
pub(crate) enum ReplicaFailure {
    /// Replica `replica` (process `pid`) ended: `exit` says how.
    Died {
        replica: usize,
        pid: u32,
        exit: String,
    },
    /// The operator panicked in replica `replica`, with `message`.
    Panicked { replica: usize, message: String },
    /// Something else (a record too large for a ring, a failed fork):
    /// fails the stage with this message.
    Other(String),
}

impl std::fmt::Display for ReplicaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Died { replica, pid, exit } => {
                write!(f, "replica {replica} (process {pid}) {exit}")
            }
            Self::Panicked { replica, message } => {
                write!(f, "replica {replica} panicked: {message}")
            }
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

/// Replicas `1..n` of one stage, as processes.
pub(crate) struct ReplicaProcesses<In, Out> {
    links: Vec<Link<In, Out>>,
    /// Keeps the rings mapped (each ring holds the segment).
    _rings: Vec<RecordRing>,
}

// SAFETY: `state` points into the shared segment, which the rings in
// `ReplicaProcesses::_rings` keep mapped for as long as a `Link` exists; a `Link`
// is used by one thread at a time (the stage's), like its ring ends.
unsafe impl<In: Send, Out: Send> Send for Link<In, Out> {}

struct Link<In, Out> {
    worker: Worker,
    requests: RecordProducer<Vec<In>>,
    outputs: RecordConsumer<Vec<Out>>,
    ends: RecordConsumer<Vec<u32>>,
    state: NonNull<u8>,
    state_len: usize,
    per_record: usize,
    /// Records sent and not yet answered (requests are split to fit).
    pending: usize,
}

/// What a replica process needs, as addresses into the worker's memory
/// (the child has a copy at the same addresses). `Copy`: the closure that
/// carries it owns nothing.
struct HelperPlan<Op> {
    op: *mut Op,
    /// This replica, of `n`.
    replica: usize,
    n: usize,
    requests: *const RecordRing,
    outputs: *const RecordRing,
    ends: *const RecordRing,
    state: NonNull<u8>,
    state_len: usize,
}

impl<Op> Clone for HelperPlan<Op> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Op> Copy for HelperPlan<Op> {}

impl<In: Item, Out: Item> ReplicaProcesses<In, Out> {
    /// Forks replicas `1..n` of `op` from this process and records their
    /// pids in `slot`.
    ///
    /// # Safety
    ///
    /// Only in a worker process with no other thread (the children run
    /// `op` on their copy of it); `op` must point to the stage's operator.
    pub(crate) unsafe fn spawn<Op: Operator<In, Out>>(
        op: *mut Op,
        n: usize,
        stage: &str,
        state_bytes: usize,
        ring_bytes: usize,
        slot: &StageSlot,
    ) -> Result<Self, String> {
        // A fork copies only the calling thread: a lock another thread
        // holds would stay locked in the replica forever. Stage code that
        // started threads in this worker rules replica processes out.
        let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
        if threads > 1 {
            return Err(format!(
                "its worker runs {threads} threads (started by stage code?); replica \
                 processes are forked only from a worker with one"
            ));
        }
        let ring_bytes = ring_bytes.max(RING_BYTES);
        let ring = RecordRing::layout(ring_bytes).map_err(|e| e.to_string())?;
        let ends = RecordRing::layout(ENDS_BYTES).map_err(|e| e.to_string())?;
        let state = Layout::from_size_align(state_bytes.max(64), 16).map_err(|e| e.to_string())?;
        let mut layout = SegmentLayout::new();
        let mut offsets = Vec::with_capacity(n - 1);
        for _ in 1..n {
            offsets.push((
                layout.reserve(ring).map_err(|e| e.to_string())?,
                layout.reserve(ring).map_err(|e| e.to_string())?,
                layout.reserve(ends).map_err(|e| e.to_string())?,
                layout.reserve(state).map_err(|e| e.to_string())?,
            ));
        }
        let segment = Arc::new(
            Segment::create("ringweave-replicas", layout.size()).map_err(|e| e.to_string())?,
        );
        let mut rings = Vec::with_capacity(3 * (n - 1));
        let mut areas = Vec::with_capacity(n - 1);
        for &(req, out, end, area) in &offsets {
            for (offset, bytes) in [(req, ring_bytes), (out, ring_bytes), (end, ENDS_BYTES)] {
                rings.push(RecordRing::new(&segment, offset, bytes).map_err(|e| e.to_string())?);
            }
            areas.push(
                segment
                    .region(area, state.size())
                    .map_err(|e| e.to_string())?,
            );
        }
        let mut links = Vec::with_capacity(n - 1);
        for r in 1..n {
            let base = 3 * (r - 1);
            let plan = HelperPlan {
                op,
                replica: r,
                n,
                requests: &rings[base],
                outputs: &rings[base + 1],
                ends: &rings[base + 2],
                state: areas[r - 1],
                state_len: state.size(),
            };
            let body = move || {
                // SAFETY: runs in the child: its copies of the worker's
                // objects, at the same addresses, used by nothing else there.
                unsafe { helper_main::<In, Out, Op>(plan) }
            };
            // SAFETY: this process has one thread (the caller's contract),
            // so the child is a consistent copy; `helper_main` only uses the
            // operator, the rings and the area (shared memory), and the
            // allocator.
            let worker = unsafe { Worker::spawn(&format!("{stage}[{r}]"), body) }
                .map_err(|e| format!("replica {r}: {e}"))?;
            slot.replica_pids.0[r].store(worker.pid().as_raw() as u32, Ordering::Relaxed);
            // SAFETY: the only producer of this replica's requests and the
            // only consumer of its answers, in this process.
            let (requests, mut outputs, mut ends) = unsafe {
                (
                    rings[base].producer::<Vec<In>>(),
                    rings[base + 1].consumer::<Vec<Out>>(),
                    rings[base + 2].consumer::<Vec<u32>>(),
                )
            };
            outputs.set_poll_interval(Some(LIVENESS_POLL));
            ends.set_poll_interval(Some(LIVENESS_POLL));
            links.push(Link {
                worker,
                requests,
                outputs,
                ends,
                state: areas[r - 1],
                state_len: state.size(),
                per_record: MAX_ITEMS_PER_RECORD,
                pending: 0,
            });
        }
        Ok(Self {
            links,
            _rings: rings,
        })
    }

    /// Replicas, with the worker: `n`.
    pub(crate) fn count(&self) -> usize {
        self.links.len() + 1
    }

    /// Runs `items` over the replicas — `route` gives each item's replica,
    /// or `None` for contiguous runs — and appends the outputs in input
    /// order to `out`. Part 0 runs here, on `op`.
    ///
    /// Each replica has at most one request record outstanding: the worker
    /// reads a replica's answer before it sends the next record of its
    /// part. So a request always finds its ring empty, and an answer of any
    /// size streams through the answer rings while the worker reads it.
    pub(crate) fn process<Op: Operator<In, Out>>(
        &mut self,
        op: &mut Op,
        items: Vec<In>,
        route: Option<Vec<u8>>,
        out: &mut Batch<Out>,
    ) -> Result<(), ReplicaFailure> {
        let n = self.count();
        let len = items.len();
        let mut parts: Vec<Vec<In>> = (0..n).map(|_| Vec::new()).collect();
        match &route {
            Some(route) => {
                for (item, &r) in items.into_iter().zip(route) {
                    parts[r as usize].push(item);
                }
            }
            None => {
                let mut rest = items;
                for r in (1..n).rev() {
                    parts[r] = rest.split_off(len * r / n);
                }
                parts[0] = rest;
            }
        }
        out.dealt = parts.iter().map(Vec::len).collect();
        let mut parts = parts.into_iter();
        let local = parts.next().unwrap_or_default();
        let mut remote: Vec<(Vec<In>, usize)> = parts.map(|part| (part, 0)).collect();
        let mut answers: Vec<Batch<Out>> = (1..n).map(|_| Batch::default()).collect();
        for (r, (link, (part, sent))) in self.links.iter_mut().zip(&mut remote).enumerate() {
            if *sent < part.len() {
                *sent += link.send_one(&part[*sent..]).map_err(|f| f.at(r + 1))?;
            }
        }
        let mut mine = Batch::default();
        run_each(op, local, &mut mine);
        loop {
            let mut waiting = false;
            let links = self.links.iter_mut().zip(&mut remote).zip(&mut answers);
            for (r, ((link, (part, sent)), answer)) in links.enumerate() {
                if link.pending == 0 {
                    continue;
                }
                waiting = true;
                link.receive_one(answer).map_err(|f| f.at(r + 1))?;
                if *sent < part.len() {
                    *sent += link.send_one(&part[*sent..]).map_err(|f| f.at(r + 1))?;
                }
            }
            if !waiting {
                break;
            }
        }
        let answers: Vec<Batch<Out>> = std::iter::once(mine).chain(answers).collect();
        for (r, answer) in answers.iter().enumerate() {
            if answer.ends.len() != out.dealt[r] {
                return Err(ReplicaFailure::Other(format!(
                    "replica {r} answered for {} inputs, sent {}",
                    answer.ends.len(),
                    out.dealt[r]
                )));
            }
        }
        match route {
            None => answers.into_iter().for_each(|a| out.append(a)),
            Some(route) => {
                // Each replica's answers in order; `next[r]` is its next input.
                let mut answers = answers;
                let mut outputs: Vec<_> = answers
                    .iter_mut()
                    .map(|a| std::mem::take(&mut a.items).into_iter())
                    .collect();
                let mut next = vec![0usize; n];
                for r in route {
                    let r = r as usize;
                    let a = &answers[r];
                    let k = a.ends[next[r]] - a.start_of(next[r]);
                    next[r] += 1;
                    out.items.extend(outputs[r].by_ref().take(k as usize));
                    out.end_input();
                }
            }
        }
        Ok(())
    }

    /// Asks every replica for its operator's state and hands each to
    /// `absorb(replica, bytes)`. Every answer is read before an error is
    /// returned, so that a switch rolled back for it leaves no answer
    /// behind to be taken for a batch's.
    pub(crate) fn gather(
        &mut self,
        mut absorb: impl FnMut(usize, &[u8]) -> Result<(), String>,
    ) -> Result<(), ReplicaFailure> {
        let mut first_error = None;
        let mut asked = Vec::with_capacity(self.links.len());
        for (r, link) in self.links.iter_mut().enumerate() {
            match link.send_save() {
                Ok(()) => asked.push(true),
                Err(f) => {
                    asked.push(false);
                    first_error.get_or_insert(f.at(r + 1));
                }
            }
        }
        for (r, (link, asked)) in self.links.iter_mut().zip(asked).enumerate() {
            if !asked {
                continue;
            }
            let replica = r + 1;
            let len = match link.pop_ends() {
                Ok(answer) => {
                    link.pending -= 1;
                    answer.first().copied().unwrap_or(u32::MAX)
                }
                Err(f) => {
                    first_error.get_or_insert(f.at(replica));
                    continue;
                }
            };
            if first_error.is_some() {
                continue;
            }
            if len as usize > link.state_len {
                first_error = Some(ReplicaFailure::Other(format!(
                    "replica {replica} could not archive its state into {} bytes \
                     (raise max_state_bytes)",
                    link.state_len
                )));
                continue;
            }
            // SAFETY: the replica wrote `len` bytes into its area before it
            // published its answer, which `pop_ends` read (Acquire), and it
            // writes nothing more until asked again.
            let bytes = unsafe { std::slice::from_raw_parts(link.state.as_ptr(), len as usize) };
            if let Err(reason) = absorb(replica, bytes) {
                first_error = Some(ReplicaFailure::Other(reason));
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Kills and reaps every replica (the worker is leaving).
    pub(crate) fn shut_down(self, slot: &StageSlot) {
        for link in &self.links {
            let _ = link.worker.kill();
        }
        // The pid of a replica that failed the worker stays: the parent
        // names it in the error.
        let failed = slot.failed_replica.load(Ordering::Relaxed) as usize;
        for (r, link) in self.links.into_iter().enumerate() {
            let _ = link.worker.wait();
            if r + 1 != failed {
                slot.replica_pids.0[r + 1].store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A failure of one link, before its replica is known.
enum LinkFailure {
    Died(u32, String),
    Panicked(String),
    Other(String),
}

impl LinkFailure {
    fn at(self, replica: usize) -> ReplicaFailure {
        match self {
            Self::Died(pid, exit) => ReplicaFailure::Died { replica, pid, exit },
            Self::Panicked(message) => ReplicaFailure::Panicked { replica, message },
            Self::Other(message) => ReplicaFailure::Other(format!("replica {replica}: {message}")),
        }
    }
}

impl<In: Item, Out: Item> Link<In, Out> {
    /// Whether the replica has ended (reaped then).
    fn ended(&mut self) -> Option<WorkerExit> {
        ended_now(&mut self.worker)
    }

    /// How the replica ended, once a ring of its closed: it closes them
    /// only on its way out, so its exit follows within moments.
    fn exit_after_close(&mut self) -> LinkFailure {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(exit) = self.ended() {
                return self.failure(exit);
            }
            if std::time::Instant::now() >= deadline {
                return LinkFailure::Other("closed its rings but did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn failure(&mut self, exit: WorkerExit) -> LinkFailure {
        if exit == WorkerExit::Exited(PANIC_EXIT) || exit == WorkerExit::Exited(FAILED_EXIT) {
            // SAFETY: the replica has exited; it wrote its message (length
            // first) into its area before.
            let message = unsafe { read_message(self.state, self.state_len) };
            return if exit == WorkerExit::Exited(PANIC_EXIT) {
                LinkFailure::Panicked(message)
            } else {
                LinkFailure::Other(message)
            };
        }
        if !matches!(exit, WorkerExit::Signaled(s) if s != nix::sys::signal::Signal::SIGABRT) {
            // An exit code or SIGABRT: the replica's own doing (a panic
            // outside the operator, `panic = "abort"`), not a crash that a
            // restart could cure.
            return LinkFailure::Other(describe(exit));
        }
        LinkFailure::Died(self.worker.pid().as_raw() as u32, describe(exit))
    }

    /// Sends one request record of the first items of `items` (at most
    /// `per_record`, fewer if they do not fit a record); returns how many.
    fn send_one(&mut self, items: &[In]) -> Result<usize, LinkFailure> {
        let mut k = self.per_record.min(items.len()).max(1);
        loop {
            match self.push_until_sent(&items[..k]) {
                Ok(()) => return Ok(k),
                Err(PushError::Record(RecordError::TooLarge { .. })) if k > 1 => {
                    k /= 2;
                    self.per_record = k;
                }
                Err(error) => return Err(self.push_failed(error)),
            }
        }
    }

    /// Asks the replica to archive its state (an empty request).
    fn send_save(&mut self) -> Result<(), LinkFailure> {
        self.push_until_sent(&[])
            .map_err(|error| self.push_failed(error))
    }

    /// Pushes one record and publishes it, waiting for room while the
    /// replica lives.
    fn push_until_sent(&mut self, items: &[In]) -> Result<(), PushError> {
        let (requests, worker) = (&mut self.requests, &mut self.worker);
        requests.push_as_until(&VecOf(items), None, || ended_now(worker).is_some())?;
        self.requests.flush();
        self.pending += 1;
        Ok(())
    }

    fn push_failed(&mut self, error: PushError) -> LinkFailure {
        match error {
            PushError::Interrupted | PushError::Abandoned => self.exit_after_close(),
            error => LinkFailure::Other(error.to_string()),
        }
    }

    /// Reads the answer to the oldest request record into `answer`: where
    /// each input's outputs end, then the outputs.
    fn receive_one(&mut self, answer: &mut Batch<Out>) -> Result<(), LinkFailure> {
        let ends = self.pop_ends()?;
        let count = ends.last().copied().unwrap_or(0) as usize;
        let mut part = Batch {
            items: Vec::with_capacity(count),
            ends,
            dealt: Vec::new(),
        };
        while part.items.len() < count {
            let missing = count - part.items.len();
            let (outputs, worker) = (&mut self.outputs, &mut self.worker);
            let mut ended = None;
            match outputs.pop_items(missing, |x| part.items.push(x)) {
                Ok(_) => continue,
                Err(PopError::Empty) => {
                    let _ = outputs.wait_for_records(None, || {
                        ended = ended_now(worker);
                        ended.is_some()
                    });
                }
                Err(PopError::Closed) => return Err(self.exit_after_close()),
                Err(e) => return Err(LinkFailure::Other(e.to_string())),
            }
            if let Some(exit) = ended {
                return Err(self.failure(exit));
            }
        }
        if part.items.len() != count {
            return Err(LinkFailure::Other(format!(
                "answered {} outputs where its ends said {count}",
                part.items.len()
            )));
        }
        self.pending -= 1;
        answer.append(part);
        Ok(())
    }

    fn pop_ends(&mut self) -> Result<Vec<u32>, LinkFailure> {
        let (ends, worker) = (&mut self.ends, &mut self.worker);
        let mut ended = None;
        match ends.pop_until(None, || {
            ended = ended_now(worker);
            ended.is_some()
        }) {
            Ok(ends) => Ok(ends),
            Err(PopError::Interrupted | PopError::Closed) => match ended {
                Some(exit) => Err(self.failure(exit)),
                None => Err(self.exit_after_close()),
            },
            Err(e) => Err(LinkFailure::Other(e.to_string())),
        }
    }
}

/// How the replica `worker` ended, if it has (reaped then); an error
/// learning it counts as still running, and the next check asks again.
fn ended_now(worker: &mut Worker) -> Option<WorkerExit> {
    worker.try_status().ok().flatten()
}

/// How a replica ended, for an error message.
fn describe(exit: WorkerExit) -> String {
    match exit {
        WorkerExit::Signaled(signal) => format!("was killed by {signal}"),
        WorkerExit::Exited(code) => format!("exited with code {code}"),
        WorkerExit::Unknown => "ended; its exit status was taken by someone else".into(),
    }
}

/// Writes `message` (length first) into a replica's area.
///
/// # Safety
///
/// `area` is valid for `len` bytes and written by this process only.
unsafe fn leave_message(area: NonNull<u8>, len: usize, message: &str) {
    let bytes = message.as_bytes();
    let n = bytes.len().min(len.saturating_sub(8));
    // SAFETY: `8 + n <= len` bytes of the area (the caller's contract).
    unsafe {
        std::ptr::copy_nonoverlapping((n as u64).to_le_bytes().as_ptr(), area.as_ptr(), 8);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area.as_ptr().add(8), n);
    }
}

/// Reads what [`leave_message`] wrote.
///
/// # Safety
///
/// `area` is valid for `len` bytes, and its writer has exited.
unsafe fn read_message(area: NonNull<u8>, len: usize) -> String {
    if len < 8 {
        return String::new();
    }
    let mut head = [0u8; 8];
    // SAFETY: 8 <= len bytes (the caller's contract).
    unsafe { std::ptr::copy_nonoverlapping(area.as_ptr(), head.as_mut_ptr(), 8) };
    let n = (u64::from_le_bytes(head) as usize).min(len - 8);
    // SAFETY: `8 + n <= len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(area.as_ptr().add(8), n) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// A replica process: answers requests until the worker closes them.
///
/// # Safety
///
/// Runs in a child forked by [`ReplicaProcesses::spawn`], with `plan`'s addresses
/// valid there and used by nothing else.
unsafe fn helper_main<In: Item, Out: Item, Op: Operator<In, Out>>(plan: HelperPlan<Op>) -> i32 {
    // SAFETY: the caller's contract.
    let (op, requests, outputs, ends) =
        unsafe { (&mut *plan.op, &*plan.requests, &*plan.outputs, &*plan.ends) };
    // SAFETY: this process is the only consumer of its requests and the
    // only producer of its answers.
    let (mut requests, mut outputs, mut ends) = unsafe {
        (
            requests.consumer::<Vec<In>>(),
            outputs.producer::<Vec<Out>>(),
            ends.producer::<Vec<u32>>(),
        )
    };
    // SAFETY: this replica's area, written only here; the worker reads it
    // after an answer (a saved state) or after this process exited (a
    // message).
    let area = unsafe { std::slice::from_raw_parts_mut(plan.state.as_ptr(), plan.state_len) };
    let fail = |area: &mut [u8], code: i32, message: &str| {
        // SAFETY: as above.
        unsafe { leave_message(NonNull::from(&mut area[0]), area.len(), message) };
        code
    };
    let mut per_record = MAX_ITEMS_PER_RECORD;
    // Keyed state: this replica owns only its groups from now on (the
    // worker keeps its copy of all, and takes these back when it saves).
    op.keep_only(plan.replica, plan.n);
    loop {
        let items = match requests.pop_blocking() {
            Ok(items) => items,
            // The worker is leaving.
            Err(PopError::Closed) => return 0,
            Err(e) => return fail(area, FAILED_EXIT, &format!("request: {e}")),
        };
        if items.is_empty() {
            let saved =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.save_state(area)));
            let len = match saved {
                Ok(Ok(len)) => len as u32,
                Ok(Err(_)) => u32::MAX,
                Err(payload) => {
                    let message = crate::error::panic_message(&*payload);
                    std::mem::forget(payload);
                    return fail(area, PANIC_EXIT, &message);
                }
            };
            if ends.push_blocking(&vec![len]).is_err() {
                return 0;
            }
            ends.flush();
            continue;
        }
        let mut batch = Batch::default();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_each(op, items, &mut batch);
        }));
        if let Err(payload) = ran {
            let message = crate::error::panic_message(&*payload);
            std::mem::forget(payload);
            return fail(area, PANIC_EXIT, &message);
        }
        // Ends first: the worker then knows how many outputs to read, and
        // reads them while they stream through the outputs ring.
        match ends.push_blocking(&batch.ends) {
            Ok(()) => {}
            Err(PushError::Abandoned) => return 0,
            Err(e) => return fail(area, FAILED_EXIT, &format!("answer: {e}")),
        }
        ends.flush();
        let mut done = 0;
        while done < batch.items.len() {
            let k = per_record.min(batch.items.len() - done);
            match outputs.push_as_until(&VecOf(&batch.items[done..done + k]), None, || false) {
                Ok(()) => done += k,
                Err(PushError::Record(RecordError::TooLarge { .. })) if k > 1 => per_record = k / 2,
                Err(PushError::Abandoned) => return 0,
                Err(e) => return fail(area, FAILED_EXIT, &format!("output: {e}")),
            }
        }
        outputs.flush();
    }
}
