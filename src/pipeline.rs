//! The pipeline builder.

use crate::config::{
    ExecutionMode, DEFAULT_BATCH_SIZE, DEFAULT_MAX_STATE_BYTES, DEFAULT_RING_CAPACITY,
    DEFAULT_SHM_RING_BYTES, DEFAULT_STALL_TIMEOUT,
};
use crate::edge::TypedEdge;
use crate::error::Error;
use crate::handle::{self, PipelineHandle};
use crate::input::Input;
use crate::item::Item;
use crate::latency::Stamps;
#[cfg(feature = "fault-injection")]
use crate::plan::Fault;
use crate::plan::{Options, Plan};
use crate::report::RunReport;
use crate::source::{Feed, IterFeed, SourceStage};
use crate::stage::{
    FilterOp, FlatMapOp, MapOp, Operator, SinkStage, StatefulOp, Tally, TransformStage,
};
use crate::transport::{Rx, Tx};
use ringweave_ipc::ring;
use std::marker::PhantomData;

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
        Self::with_source(IterFeed(iter.into_iter()))
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
                },
            },
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
            }),
        );
        Pipeline {
            plan: self.plan,
            _item: PhantomData,
        }
    }

    /// Appends a stage that turns each item into exactly one output.
    pub fn map<U: Item>(
        self,
        name: impl Into<String>,
        f: impl Fn(T) -> U + Send + 'static,
    ) -> Pipeline<U> {
        self.then(name, MapOp(f))
    }

    /// Appends a stage that keeps the items for which `f` is true.
    pub fn filter(self, name: impl Into<String>, f: impl Fn(&T) -> bool + Send + 'static) -> Self {
        self.then(name, FilterOp(f))
    }

    /// Appends a stage that turns each item into any number of outputs, in
    /// the order the returned iterator yields them.
    pub fn flat_map<U: Item, I>(
        self,
        name: impl Into<String>,
        f: impl Fn(T) -> I + Send + 'static,
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
                stamps: Stamps::default(),
            }),
        );
        CompletePipeline { plan: self.plan }
    }
}

/// A pipeline with a source and a sink, ready to run.
#[must_use = "a pipeline does nothing until it is run or spawned"]
pub struct CompletePipeline {
    plan: Plan,
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
    pub fn spawn(self) -> Result<PipelineHandle, Error> {
        let topology = self.plan.validate()?;
        handle::spawn(self.plan, topology)
    }
}
