//! The pipeline builder.

use crate::config::{
    ExecutionMode, DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_STATE_BYTES, DEFAULT_RING_CAPACITY, DEFAULT_SHM_RING_BYTES, DEFAULT_STALL_TIMEOUT,
};
use crate::edge::TypedEdge;
use crate::error::Error;
use crate::handle::{self, PipelineHandle};
use crate::input::Input;
use crate::item::Item;
use crate::keyed::KeyedOp;
use crate::latency::Stamps;
use crate::op::{FilterOp, FlatMapOp, MapOp, Operator, StatefulOp, TeeOp};
#[cfg(feature = "fault-injection")]
use crate::plan::Fault;
use crate::plan::{Options, Plan};
use crate::replica::{Pool, Replicas};
use crate::report::RunReport;
use crate::source::{Feed, IterFeed, SourceStage};
use crate::stage::{SinkStage, Tally, TransformStage};
use crate::topology::Topology;
use crate::transport::{Rx, Tx};
use parking_lot::Mutex;
use ringweave_ipc::ring;
use std::marker::PhantomData;
use std::sync::Arc;

/// The run-option setters, the same on [`Pipeline`] and [`CompletePipeline`]
/// (both hold their options in `self.plan.options`).
macro_rules! option_setters {
    () => {
        /// Sets the execution mode (default [`ExecutionMode::InProcess`]).
        pub fn mode(mut self, mode: ExecutionMode) -> Self {
            self.plan.options.mode = mode;
            self
        }

        /// Sets the slots per in-process ring: a power of two, at least 2
        /// (default 4096). Checked by `run`/`spawn`.
        pub fn ring_capacity(mut self, capacity: usize) -> Self {
            self.plan.options.ring_capacity = capacity;
            self
        }

        /// Sets how many items a stage takes from its input at once
        /// (default 256). Larger batches amortise the ring's
        /// synchronisation; smaller ones cut latency.
        pub fn batch_size(mut self, batch: usize) -> Self {
            self.plan.options.batch_size = batch;
            self
        }

        /// Sets the bytes of each shared-memory record ring used in
        /// distributed mode: a power of two, at least 64 (default 1 MiB). A
        /// switch whose residual items do not fit doubles it, up to 64
        /// times; beyond that it is rolled back, saying so.
        pub fn shm_ring_bytes(mut self, bytes: usize) -> Self {
            self.plan.options.shm_ring_bytes = bytes;
            self
        }

        /// Sets how long a worker process may make no progress — its input
        /// holding items, its output drained, its counters standing still —
        /// before it is killed and the run fails with
        /// [`Error::WorkerStalled`](crate::Error::WorkerStalled)
        /// (default [`DEFAULT_STALL_TIMEOUT`]; at least 1 ms). Set it above
        /// the longest time one batch of your slowest stage may take.
        pub fn stall_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.plan.options.stall_timeout = timeout;
            self
        }

        /// Sets the bytes a `stateful` stage's archived state may take when
        /// it moves back from a worker process (default 1 MiB).
        pub fn max_state_bytes(mut self, bytes: usize) -> Self {
            self.plan.options.max_state_bytes = bytes;
            self
        }

        /// Replaces a worker process that dies without a panic (SIGKILL,
        /// SIGSEGV, the OOM killer, the stall watchdog) up to `n` times per
        /// run (default [`DEFAULT_MAX_RESTARTS`](crate::DEFAULT_MAX_RESTARTS),
        /// 0). The run goes back to its last checkpoint, refills the rings
        /// from it and from the source's replay log, and the sink still
        /// receives exactly the sequential result, nothing twice. A panic
        /// is a bug and fails the run at once; past `n` restarts the run
        /// fails with the crash's error, naming the stage.
        ///
        /// With `n > 0` the source keeps a replay log while distributed and
        /// the run checkpoints (a barrier, as a switch makes, that copies
        /// the stages' state and the items in flight into this process)
        /// every [`checkpoint_interval`](Self::checkpoint_interval) or once
        /// the log is half full. Each recovery is a
        /// [`RecoveryEvent`](crate::RecoveryEvent) in
        /// [`RunReport::recoveries`](crate::RunReport::recoveries).
        pub fn max_restarts(mut self, n: u32) -> Self {
            self.plan.options.max_restarts = n;
            self
        }

        /// Sets the longest time between two checkpoints while distributed
        /// with [`max_restarts`](Self::max_restarts) on (default 1 s, at
        /// least 1 ms). A shorter interval means less to replay after a
        /// crash and more pauses.
        pub fn checkpoint_interval(mut self, interval: std::time::Duration) -> Self {
            self.plan.options.checkpoint_interval = interval;
            self
        }

        /// Bounds the source's replay log to `items` (at least 2; by
        /// default [`DEFAULT_REPLAY_LOG_BYTES`](crate::DEFAULT_REPLAY_LOG_BYTES)
        /// of the source's item type, at least 1024 items): a checkpoint
        /// starts once it holds half of that, and the source waits while it
        /// is full. A larger log means fewer checkpoints at high rates.
        pub fn replay_log_items(mut self, items: usize) -> Self {
            self.plan.options.replay_log_items = Some(items);
            self
        }
    };
}

/// A pipeline under construction whose last stage emits `T`.
///
/// Start with [`Pipeline::from_iter`], chain transforms, end with
/// [`sink`](Pipeline::sink), then [`run`](CompletePipeline::run) or
/// [`spawn`](CompletePipeline::spawn).
///
/// # Examples
///
/// ```
/// use ringweave::Pipeline;
///
/// let mut out = Vec::new();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let report = Pipeline::from_iter(0..1000u64)
///     .map("double", |x| x * 2)
///     .filter("div3", |x| x % 3 == 0)
///     .sink(move |x| tx.send(x).unwrap())
///     .run()
///     .unwrap();
/// out.extend(rx.try_iter());
/// let expected: Vec<u64> = (0..1000u64).map(|x| x * 2).filter(|x| x % 3 == 0).collect();
/// assert_eq!(out, expected);
/// assert_eq!(report.items_delivered, expected.len() as u64);
/// ```
#[must_use = "a pipeline does nothing until it has a sink and is run"]
pub struct Pipeline<T> {
    plan: Plan,
    /// Pipelines that run beside this one and end with it: tee branches
    /// and the inputs of a merge.
    subruns: Vec<CompletePipeline>,
    _item: PhantomData<fn() -> T>,
}

impl<T: Item> Pipeline<T> {
    /// A pipeline whose source yields the items of `iter`, on a thread of
    /// this process.
    ///
    /// The source publishes an item as soon as the next stage has taken
    /// everything before it, so items are not held back to fill a batch.
    /// While `next()` blocks (an iterator over a socket or a queue) the
    /// source cannot reach a switch's barrier and the switch times out: use
    /// [`with_input`](Self::with_input) for such sources.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::with_source(IterFeed(iter.into_iter().fuse()))
    }

    /// A pipeline fed live from the user's own thread: returns the push
    /// handle ([`Input`]) and the pipeline to build on.
    ///
    /// The source stage takes what is pushed, in order, and the stream
    /// ends when the `Input` is dropped. Works in every mode and across
    /// switches (the source always runs in this process). The input ring
    /// holds [`DEFAULT_RING_CAPACITY`] items.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringweave::{ExecutionMode, Pipeline};
    ///
    /// let (mut input, pipeline) = Pipeline::<u64>::with_input();
    /// let handle = pipeline
    ///     .map("inc", |x| x + 1)
    ///     .mode(ExecutionMode::Distributed)
    ///     .sink(|_| {})
    ///     .spawn()?;
    /// let producer = std::thread::spawn(move || {
    ///     for x in 0..1000 {
    ///         input.push(x).unwrap();
    ///     }
    /// });
    /// producer.join().unwrap();
    /// assert_eq!(handle.join()?.items_delivered, 1000);
    /// # Ok::<(), ringweave::Error>(())
    /// ```
    #[must_use = "the pipeline does nothing until it has a sink and is run"]
    pub fn with_input() -> (Input<T>, Self) {
        let (producer, consumer) = ring::channel::<T>(DEFAULT_RING_CAPACITY);
        (Input::new(producer), Self::with_source(consumer))
    }

    fn with_source(feed: impl Feed<T>) -> Self {
        let source = SourceStage {
            feed,
            output: Tx::default(),
            tally: Tally::default(),
            stamps: Stamps::default(),
            log: None,
            kept: None,
        };
        Self {
            plan: Plan {
                nodes: vec![Box::new(source)],
                edges: Vec::new(),
                links: Vec::new(),
                options: Options {
                    mode: ExecutionMode::InProcess,
                    ring_capacity: DEFAULT_RING_CAPACITY,
                    batch_size: DEFAULT_BATCH_SIZE,
                    shm_ring_bytes: DEFAULT_SHM_RING_BYTES,
                    max_state_bytes: DEFAULT_MAX_STATE_BYTES,
                    stall_timeout: DEFAULT_STALL_TIMEOUT,
                    faults: Vec::new(),
                    max_restarts: DEFAULT_MAX_RESTARTS,
                    checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
                    replay_log_items: None,
                },
                invalid: None,
            },
            subruns: Vec::new(),
            _item: PhantomData,
        }
    }

    fn then<U: Item, Op: Operator<T, U>>(mut self, name: impl Into<String>, op: Op) -> Pipeline<U> {
        self.plan.push(
            Box::new(TypedEdge::<T>::new()),
            Box::new(TransformStage::<T, U, Op> {
                name: name.into(),
                op,
                input: Rx::default(),
                output: Tx::default(),
                tally: Tally::default(),
                stamps: Stamps::default(),
                replicas: Replicas::default(),
                pool: Pool::default(),
                procs: None,
                replay: false,
            }),
        );
        Pipeline {
            plan: self.plan,
            subruns: self.subruns,
            _item: PhantomData,
        }
    }

    /// Appends a stage that turns each item into exactly one output.
    ///
    /// Transform closures are `Fn + Sync`: a stage given
    /// [`replicas`](Self::replicas) calls the same closure from several
    /// threads at once.
    pub fn map<U: Item>(
        self,
        name: impl Into<String>,
        f: impl Fn(T) -> U + Send + Sync + 'static,
    ) -> Pipeline<U> {
        self.then(name, MapOp(f))
    }

    /// Appends a stage that keeps the items for which `f` is true.
    pub fn filter(
        self,
        name: impl Into<String>,
        f: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.then(name, FilterOp(f))
    }

    /// Appends a stage that turns each item into any number of outputs, in
    /// the order the returned iterator yields them.
    pub fn flat_map<U: Item, I>(
        self,
        name: impl Into<String>,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> Pipeline<U>
    where
        I: IntoIterator<Item = U>,
    {
        self.then(name, FlatMapOp(f))
    }

    /// Appends a stage with explicit state: `f(&mut state, item)` may update
    /// the state and emit at most one output. The state is the only place a
    /// stage may keep anything between items, so that it can move with the
    /// stage between threads and worker processes.
    pub fn stateful<S: Item, U: Item>(
        self,
        name: impl Into<String>,
        initial: S,
        f: impl Fn(&mut S, T) -> Option<U> + Send + 'static,
    ) -> Pipeline<U> {
        self.then(name, StatefulOp { state: initial, f })
    }

    /// Appends a stage with one state per key: `f(&mut state, item)` on
    /// the state of `key(&item)`, made by `init()` the first time the key
    /// is seen; emits at most one output per item, in input order.
    ///
    /// Unlike [`stateful`](Self::stateful) it can have
    /// [`replicas`](Self::replicas): keys hash into 128 key groups, each
    /// replica owns a contiguous run of groups, and a key's state lives in
    /// exactly one replica. When a switch changes the replica count
    /// (`replicas(1).distributed_replicas(4)`), whole groups move between
    /// replicas; with the state of every key, archived with rkyv, when the
    /// stage moves between this process and a worker
    /// ([`max_state_bytes`](Self::max_state_bytes) bounds it).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringweave::Pipeline;
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// // A running count per key, over two replicas.
    /// Pipeline::from_iter(0..1000u64)
    ///     .stateful_by_key("count", |x: &u64| x % 10, || 0u64, |n: &mut u64, x: u64| {
    ///         *n += 1;
    ///         Some((x, *n))
    ///     })
    ///     .replicas(2)
    ///     .sink(move |pair| tx.send(pair).unwrap())
    ///     .run()?;
    /// let out: Vec<(u64, u64)> = rx.try_iter().collect();
    /// assert_eq!(out.len(), 1000);
    /// assert_eq!(out[999], (999, 100));
    /// # Ok::<(), ringweave::Error>(())
    /// ```
    pub fn stateful_by_key<K, S, U>(
        self,
        name: impl Into<String>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        init: impl Fn() -> S + Send + Sync + 'static,
        f: impl Fn(&mut S, T) -> Option<U> + Send + Sync + 'static,
    ) -> Pipeline<U>
    where
        K: Item + std::hash::Hash + Eq + Clone,
        S: Item,
        U: Item,
    {
        self.then(name, KeyedOp::new(key, init, f))
    }

    /// Runs the stage just added as `n` replicas in every mode — threads
    /// here; while distributed, `n` processes: the stage's worker and
    /// `n - 1` processes it forks, each listed by
    /// [`worker_pids`](crate::PipelineHandle::worker_pids) as `stage[i]` —
    /// unless [`distributed_replicas`](Self::distributed_replicas) says
    /// otherwise for distributed mode.
    ///
    /// The stage takes up to `n` batches at once, deals them to its
    /// replicas (stateless stages in contiguous runs, `stateful_by_key` by
    /// key group) and emits the outputs in input order: replicas change
    /// nothing but speed. A batch is dealt out only when the stage's
    /// measured cost says it holds at least 20 µs of work (and 32 items);
    /// smaller ones run on one replica. A replica process that dies ends
    /// the run with [`Error::WorkerCrashed`] naming it (`score[2]`).
    ///
    /// `n` must be in `1..=`[`MAX_REPLICAS`](crate::MAX_REPLICAS); a plain
    /// `stateful` stage (whose one state cannot be split), a tee, the
    /// source and a merge cannot have more than one. Either mistake is
    /// [`Error::InvalidConfig`] naming the stage, from `run`/`spawn`.
    pub fn replicas(mut self, n: usize) -> Self {
        self.set_replicas(|r| r.local = n, n);
        self
    }

    /// Runs the stage just added as `n` replicas while the pipeline is
    /// distributed (in its worker process); see [`replicas`](Self::replicas).
    pub fn distributed_replicas(mut self, n: usize) -> Self {
        self.set_replicas(|r| r.distributed = Some(n), n);
        self
    }

    fn set_replicas(&mut self, change: impl FnOnce(&mut Replicas), n: usize) {
        let Some(node) = self.plan.nodes.last_mut() else {
            return;
        };
        let name = node.name().to_owned();
        let mut replicas = node.replicas();
        change(&mut replicas);
        let result = Replicas::check(&name, n).and_then(|()| {
            node.set_replicas(replicas)
                .map_err(|reason| Error::InvalidConfig {
                    field: "replicas",
                    reason: format!("stage `{name}` cannot have {n} replicas: {reason}"),
                })
        });
        if let Err(error) = result {
            self.plan.reject(error);
        }
    }

    /// Fans out: every item goes on down this pipeline and, cloned, down
    /// `branch`, which ends in its own sink. The branch is built by `branch`
    /// from a pipeline whose source is this stage.
    ///
    /// The branch runs as a pipeline of its own on threads of this process
    /// (with its own options: set its mode on it) and receives every item
    /// in order. The tee waits while the branch's input ring is full, so a
    /// slow branch slows the whole graph and memory stays bounded. The tee
    /// runs in this process in every mode. `join` returns once both have
    /// ended; a failure of the branch fails the run with the branch's
    /// error.
    ///
    /// The tee reaches a switch's barrier only between batches, and it
    /// finishes a batch only once the branch has room for all of it: a
    /// branch slower than `batch_size` items per `switch_timeout_ms` makes
    /// the main pipeline's switches time out (and roll back).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringweave::Pipeline;
    ///
    /// let (big_tx, big_rx) = std::sync::mpsc::channel();
    /// let (all_tx, all_rx) = std::sync::mpsc::channel();
    /// Pipeline::from_iter(0..100u64)
    ///     .tee("audit", move |branch| {
    ///         branch
    ///             .filter("big", |x| *x >= 90)
    ///             .sink(move |x| big_tx.send(x).unwrap())
    ///     })
    ///     .sink(move |x| all_tx.send(x).unwrap())
    ///     .run()?;
    /// assert_eq!(all_rx.try_iter().count(), 100);
    /// assert_eq!(big_rx.try_iter().collect::<Vec<_>>(), (90..100).collect::<Vec<_>>());
    /// # Ok::<(), ringweave::Error>(())
    /// ```
    pub fn tee(
        self,
        name: impl Into<String>,
        branch: impl FnOnce(Pipeline<T>) -> CompletePipeline,
    ) -> Self
    where
        T: Clone,
    {
        let name = name.into();
        let (input, start) = Pipeline::<T>::with_input();
        let branch = branch(start);
        let mut tee = self.then(
            name.clone(),
            TeeOp {
                name,
                branch: input,
                sent: 0,
                skip: 0,
            },
        );
        tee.subruns.push(branch);
        tee
    }

    /// Fans in: one pipeline whose source takes the items of every input
    /// pipeline as they arrive. Each input keeps its order; the
    /// interleaving is arrival order.
    ///
    /// Each input runs as a pipeline of its own on threads of this process
    /// (with its own source, stages and options) whose sink pushes into the
    /// merged pipeline's source, like an [`Input`]. The merged stream ends
    /// when every input has ended; `join` returns once all have, and a
    /// failure of an input fails the run with that input's error. An empty
    /// `inputs` is [`Error::InvalidConfig`] naming the merge, from
    /// `run`/`spawn`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringweave::Pipeline;
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// Pipeline::merge(
    ///     "both",
    ///     vec![Pipeline::from_iter(0..50u64), Pipeline::from_iter(100..150u64).map("b", |x| x)],
    /// )
    /// .sink(move |x| tx.send(x).unwrap())
    /// .run()?;
    /// let out: Vec<u64> = rx.try_iter().collect();
    /// assert_eq!(out.len(), 100);
    /// let low: Vec<u64> = out.iter().copied().filter(|x| *x < 100).collect();
    /// assert_eq!(low, (0..50).collect::<Vec<_>>());
    /// # Ok::<(), ringweave::Error>(())
    /// ```
    pub fn merge(name: impl Into<String>, inputs: Vec<Pipeline<T>>) -> Self {
        let name = name.into();
        let (input, mut merged) = Pipeline::<T>::with_input();
        if inputs.is_empty() {
            merged.plan.reject(Error::InvalidConfig {
                field: "merge",
                reason: format!("merge `{name}` has no inputs"),
            });
        }
        let shared = Arc::new(Mutex::new(input));
        for pipeline in inputs {
            let into = Arc::clone(&shared);
            merged.subruns.push(pipeline.sink(move |item| {
                // Fails only once the merged run has ended or failed: the
                // item has nowhere to go then, and that run reports why.
                let _ = into.lock().push(item);
            }));
        }
        merged
    }

    option_setters!();

    /// Ends the pipeline with `f`, called on a thread of this process for
    /// every item in order.
    pub fn sink(mut self, f: impl FnMut(T) + Send + 'static) -> CompletePipeline {
        self.plan.push(
            Box::new(TypedEdge::<T>::new()),
            Box::new(SinkStage {
                f,
                input: Rx::default(),
                tally: Tally::default(),
                skip: 0,
                stamps: Stamps::default(),
            }),
        );
        CompletePipeline {
            plan: self.plan,
            subruns: self.subruns,
        }
    }
}

/// A pipeline with a source and a sink, ready to run.
#[must_use = "a pipeline does nothing until it is run or spawned"]
pub struct CompletePipeline {
    plan: Plan,
    subruns: Vec<CompletePipeline>,
}

impl CompletePipeline {
    option_setters!();

    /// Injects `fault` into every switch to distributed mode (tests only:
    /// cargo feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn inject_fault(mut self, fault: Fault) -> Self {
        self.plan.options.faults.push(fault);
        self
    }

    /// Runs the pipeline to the end on the calling thread's behalf and
    /// returns its report.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] before anything starts; otherwise the first
    /// failure of the run ([`Error::StagePanicked`] naming the stage, …).
    pub fn run(self) -> Result<RunReport, Error> {
        self.spawn()?.join()
    }

    /// Starts the pipeline and returns a handle to watch, switch and join it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for invalid options, [`Error::Spawn`] if a
    /// thread cannot be started (nothing is left running then).
    pub fn spawn(mut self) -> Result<PipelineHandle, Error> {
        let topology = self.plan.validate()?;
        // Check every branch and input before anything starts.
        let mut checked = Vec::with_capacity(self.subruns.len());
        for mut sub in self.subruns {
            let topology = sub.check()?;
            checked.push((sub, topology));
        }
        let mut handle = handle::spawn(self.plan, topology)?;
        for (sub, topology) in checked {
            // On failure `handle` drops, and stops what started.
            handle.add_subrun(sub.spawn_checked(topology)?);
        }
        Ok(handle)
    }

    /// Runs this host's part of the pipeline in a cluster (cargo feature
    /// `cluster`): every host runs the same program, builds the same
    /// pipeline and calls this with its own [`Cluster`](crate::Cluster);
    /// each runs the stages placed on it and sends items to the next host
    /// over Zenoh. Returns when this host's part is done: its segments
    /// finished, everything it received complete and everything it sent
    /// acknowledged. See `docs/CLUSTER.md`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] before anything starts (a placement naming
    /// no stage, a host index out of range, a tee or merge, which cluster
    /// mode does not run yet); [`Error::HostLost`] when a host this one
    /// exchanges items with goes away first; [`Error::Cluster`] when a host
    /// fails (naming it and why) or does not join within the connect
    /// timeout; otherwise what a run on one host fails with.
    #[cfg(feature = "cluster")]
    pub fn run_on(self, cluster: &crate::Cluster) -> Result<crate::ClusterReport, Error> {
        if !self.subruns.is_empty() {
            return Err(Error::InvalidConfig {
                field: "cluster",
                reason: "a pipeline with a tee or a merge cannot run across hosts yet".into(),
            });
        }
        crate::cluster::run(self.plan, cluster)
    }

    /// Validates this plan and every sub-run's.
    fn check(&mut self) -> Result<Topology, Error> {
        let topology = self.plan.validate()?;
        for sub in &mut self.subruns {
            sub.check()?;
        }
        Ok(topology)
    }

    /// `spawn` once `check` has passed.
    fn spawn_checked(self, topology: Topology) -> Result<PipelineHandle, Error> {
        let mut handle = handle::spawn(self.plan, topology)?;
        for mut sub in self.subruns {
            let topology = sub.plan.validate()?;
            handle.add_subrun(sub.spawn_checked(topology)?);
        }
        Ok(handle)
    }
}
