//! The pipeline builder.

use crate::config::ExecutionMode;
use crate::error::Error;
use crate::executor::{self, PipelineHandle};
use crate::input::Input;
use crate::item::Item;
use crate::latency::Stamps;
use crate::report::RunReport;
use crate::ring::{self, RingWaker};
use crate::shm::{stage_items, MAX_ITEMS_PER_RECORD};
use crate::source::{Feed, IterFeed, SourceStage};
use crate::stage::RingOutbox;
use crate::stage::{
    ErasedStage, FilterOp, FlatMapOp, MapOp, Operator, SinkStage, StatefulOp, Tally, TransformStage,
};
use ringweave_ipc::record::RecordError;
use ringweave_ipc::record_ring::{PushError as RecordPushError, RecordProducer, RecordRing};
use ringweave_ipc::wait::WaitStrategy;
use std::any::Any;
use std::marker::PhantomData;

/// Default slots per in-process ring.
pub const DEFAULT_RING_CAPACITY: usize = 4096;
/// Default number of items a stage takes from its input at once.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Default bytes per shared-memory record ring (distributed mode). Pages
/// are only touched as records pass, so a large ring costs address space,
/// not memory.
pub const DEFAULT_SHM_RING_BYTES: usize = 1 << 20;
/// Default stall timeout of a worker process (see `stall_timeout`).
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default bytes a `stateful` stage's archived state may take when it moves
/// back from a worker process.
pub const DEFAULT_MAX_STATE_BYTES: usize = 1 << 20;

/// Largest accepted [`ring_capacity`](Pipeline::ring_capacity): 16 Mi
/// slots. Each in-process ring allocates its slots up front, so a capacity
/// far beyond any useful buffering (2^40 slots of even 8 bytes is 8 TiB)
/// would abort the process on the failed allocation instead of failing the
/// run.
pub const MAX_RING_CAPACITY: usize = 1 << 24;
/// Largest accepted [`batch_size`](Pipeline::batch_size): 64 Ki items. A
/// stage gathers up to a batch before it hands anything on, and in
/// distributed mode a batch crosses in shared-memory records, so an
/// unbounded batch over an endless source would grow without limit.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
pub use crate::control::MAX_STATE_BYTES;

/// The run-option setters, the same on [`Pipeline`] and [`CompletePipeline`]
/// (both hold their options in `self.parts.options`).
macro_rules! option_setters {
    () => {
        /// Sets the execution mode (default [`ExecutionMode::InProcess`]).
        pub fn mode(mut self, mode: ExecutionMode) -> Self {
            self.parts.options.mode = mode;
            self
        }

        /// Sets the slots per in-process ring: a power of two, at least 2
        /// (default 4096). Checked by `run`/`spawn`.
        pub fn ring_capacity(mut self, capacity: usize) -> Self {
            self.parts.options.ring_capacity = capacity;
            self
        }

        /// Sets how many items a stage takes from its input at once
        /// (default 256). Larger batches amortise the ring's
        /// synchronisation; smaller ones cut latency.
        pub fn batch_size(mut self, batch: usize) -> Self {
            self.parts.options.batch_size = batch;
            self
        }

        /// Sets the bytes of each shared-memory record ring used in
        /// distributed mode: a power of two, at least 64 (default 1 MiB). A
        /// switch whose residual items do not fit doubles it, up to 64
        /// times; beyond that it is rolled back, saying so.
        pub fn shm_ring_bytes(mut self, bytes: usize) -> Self {
            self.parts.options.shm_ring_bytes = bytes;
            self
        }

        /// Sets how long a worker process may make no progress — its input
        /// holding items, its output drained, its counters standing still —
        /// before it is killed and the run fails with
        /// [`Error::WorkerStalled`](crate::Error::WorkerStalled)
        /// (default [`DEFAULT_STALL_TIMEOUT`]; at least 1 ms). Set it above
        /// the longest time one batch of your slowest stage may take.
        pub fn stall_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.parts.options.stall_timeout = timeout;
            self
        }

        /// Sets the bytes a `stateful` stage's archived state may take when
        /// it moves back from a worker process (default 1 MiB).
        pub fn max_state_bytes(mut self, bytes: usize) -> Self {
            self.parts.options.max_state_bytes = bytes;
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
    parts: Parts,
    _item: PhantomData<fn() -> T>,
}

/// Everything the builder collected, type-erased.
pub(crate) struct Parts {
    /// Source first, then the transforms (and the sink once sealed).
    pub nodes: Vec<Box<dyn ErasedStage>>,
    /// `edges[i]` joins `nodes[i]` to `nodes[i + 1]`.
    pub edges: Vec<Box<dyn EdgeSpec>>,
    pub options: Options,
}

/// Run options.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub mode: ExecutionMode,
    pub ring_capacity: usize,
    pub batch_size: usize,
    /// Bytes of each shared-memory record ring (distributed mode).
    pub shm_ring_bytes: usize,
    /// Bytes each stage's state may take when archived (distributed mode).
    pub max_state_bytes: usize,
    /// How long a worker may stand still with work to do (the watchdog).
    pub stall_timeout: std::time::Duration,
    /// Failures to inject into switches (tests only).
    pub faults: Vec<Fault>,
}

/// A failure injected into every switch to distributed mode, to test that
/// it rolls back cleanly. Not part of the stable API.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Creating the shared data segment fails.
    SegmentCreate,
    /// Forking the worker of the named stage fails (workers forked before
    /// it must be killed and reaped).
    Fork(String),
    /// The worker of the named stage exits before it attaches.
    WorkerDiesAtStart(String),
}

impl Options {
    /// Checks every option against its documented range, so that a run
    /// never starts with a value that would overflow a size computation or
    /// an allocation (the control segment's areas, the rings).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let c = self.ring_capacity;
        if c < 2 || !c.is_power_of_two() || c > MAX_RING_CAPACITY {
            return Err(Error::InvalidConfig {
                field: "ring_capacity",
                reason: format!(
                    "must be a power of two in 2..={MAX_RING_CAPACITY} (MAX_RING_CAPACITY), \
                     got {c}"
                ),
            });
        }
        let b = self.batch_size;
        if !(1..=MAX_BATCH_SIZE).contains(&b) {
            return Err(Error::InvalidConfig {
                field: "batch_size",
                reason: format!("must be in 1..={MAX_BATCH_SIZE} (MAX_BATCH_SIZE), got {b}"),
            });
        }
        let b = self.shm_ring_bytes;
        let (min, max) = (RecordRing::MIN_CAPACITY, RecordRing::MAX_CAPACITY);
        if !(min..=max).contains(&b) || !b.is_power_of_two() {
            return Err(Error::InvalidConfig {
                field: "shm_ring_bytes",
                reason: format!("must be a power of two in {min}..={max}, got {b}"),
            });
        }
        let s = self.max_state_bytes;
        if !(1..=MAX_STATE_BYTES).contains(&s) {
            return Err(Error::InvalidConfig {
                field: "max_state_bytes",
                reason: format!("must be in 1..={MAX_STATE_BYTES} (MAX_STATE_BYTES), got {s}"),
            });
        }
        if self.stall_timeout < std::time::Duration::from_millis(1) {
            return Err(Error::InvalidConfig {
                field: "stall_timeout",
                reason: format!("must be at least 1 ms, got {:?}", self.stall_timeout),
            });
        }
        if let ExecutionMode::Hybrid(config) = &self.mode {
            config.validate()?;
        }
        Ok(())
    }
}

/// Everything the executor does with one edge that depends on the type of
/// the items it carries: building its rings and moving residual items
/// between an in-process ring and a shared-memory record ring at a switch.
pub(crate) trait EdgeSpec: Send {
    /// A new in-process ring: boxed `Producer<T>`, boxed `Consumer<T>`, and a
    /// waker for both ends.
    fn ring(&self, capacity: usize) -> (Box<dyn Any + Send>, Box<dyn Any + Send>, RingWaker);

    /// The producer end of `ring` for this edge's item type: a boxed
    /// `RecordProducer<Vec<T>>` (items cross in runs, one record per run:
    /// see `ShmOutbox`).
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::producer`]: one producer in use at a
    /// time, across processes, and `ring`'s segment outlives it in this
    /// process.
    unsafe fn record_producer(&self, ring: &RecordRing) -> Box<dyn Any + Send>;

    /// The consumer end of `ring`: a boxed `RecordConsumer<Vec<T>>`.
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::consumer`], as for `record_producer`.
    unsafe fn record_consumer(&self, ring: &RecordRing) -> Box<dyn Any + Send>;

    /// Gives up a producer from `record_producer` without closing the ring
    /// ([`RecordProducer::detach`]): a worker forked next attaches its own.
    fn detach_producer(&self, producer: Box<dyn Any + Send>);

    /// Archives every item in a paused in-process ring (`consumer`: a
    /// `&mut Consumer<T>`) into `producer` (a `&mut RecordProducer<Vec<T>>`) and
    /// publishes them, leaving the in-process ring untouched. Returns
    /// `(items, bytes)`; `Err((full, cause))`, with `full` when the items
    /// did not fit the ring.
    fn copy_out(
        &self,
        consumer: &mut dyn Any,
        producer: &mut dyn Any,
    ) -> Result<(u64, u64), (bool, String)>;

    /// Drops every item in a paused in-process ring (`&mut Consumer<T>`):
    /// the commit of a switch out, once the items live in the record ring.
    fn clear(&self, consumer: &mut dyn Any);

    /// Reads every unread record of `ring`, validated and deserialized,
    /// without consuming it. Returns a boxed `Vec<T>`, the count and the
    /// bytes.
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::peek_unread`]: the consumer is paused.
    unsafe fn copy_in(
        &self,
        ring: &RecordRing,
    ) -> Result<(Box<dyn Any + Send>, u64, u64), RecordError>;

    /// Appends a `Vec<T>` from `copy_in` to a paused stage's output
    /// (`&mut RingOutbox<T>`), after what it already holds.
    fn append(&self, outbox: &mut dyn Any, items: Box<dyn Any + Send>);
}

struct TypedEdge<T>(PhantomData<fn() -> T>);

/// Downcasts a type-erased end this edge's own spec built.
fn end_mut<E: 'static>(end: &mut dyn Any) -> &mut E {
    match end.downcast_mut::<E>() {
        Some(end) => end,
        None => unreachable!(
            "edge end of the wrong type: expected {}",
            std::any::type_name::<E>()
        ),
    }
}

impl<T: Item> EdgeSpec for TypedEdge<T> {
    fn ring(&self, capacity: usize) -> (Box<dyn Any + Send>, Box<dyn Any + Send>, RingWaker) {
        let (producer, consumer) = ring::channel::<T>(capacity);
        let waker = producer.waker();
        (Box::new(producer), Box::new(consumer), waker)
    }

    unsafe fn record_producer(&self, ring: &RecordRing) -> Box<dyn Any + Send> {
        // SAFETY: forwarded to the caller.
        let mut producer = unsafe { ring.producer::<Vec<T>>() };
        // Five stages on two cores: yield briefly, then sleep (see
        // `ringweave_ipc::record_ring::DEFAULT_WAIT` for the two-process
        // default).
        producer.set_wait_strategy(WaitStrategy::default());
        Box::new(producer)
    }

    unsafe fn record_consumer(&self, ring: &RecordRing) -> Box<dyn Any + Send> {
        // SAFETY: forwarded to the caller.
        let mut consumer = unsafe { ring.consumer::<Vec<T>>() };
        consumer.set_wait_strategy(WaitStrategy::default());
        Box::new(consumer)
    }

    fn detach_producer(&self, producer: Box<dyn Any + Send>) {
        match producer.downcast::<RecordProducer<Vec<T>>>() {
            Ok(producer) => producer.detach(),
            Err(_) => unreachable!("record producer of the wrong type"),
        }
    }

    fn copy_out(
        &self,
        consumer: &mut dyn Any,
        producer: &mut dyn Any,
    ) -> Result<(u64, u64), (bool, String)> {
        let consumer = end_mut::<ring::Consumer<T>>(consumer);
        let producer = end_mut::<RecordProducer<Vec<T>>>(producer);
        let before = producer.free_bytes();
        let n = consumer.slots();
        let Ok(chunk) = consumer.read_chunk(n) else {
            return Ok((0, 0));
        };
        let (a, b) = chunk.as_slices();
        let mut per_record = MAX_ITEMS_PER_RECORD;
        let mut bytes_per_item = 0;
        let mut fitted = 0;
        for part in [a, b] {
            // Residues are not bounded in items: they were in the
            // in-process ring, so they are about that many already.
            let (done, result) =
                stage_items(producer, part, &mut per_record, None, &mut bytes_per_item);
            fitted += done;
            match result {
                Ok(()) => {}
                Err(RecordPushError::Full) => {
                    return Err((
                        true,
                        format!(
                            "the {n} residual items need more than the {}-byte shared ring \
                             ({fitted} fitted; raise shm_ring_bytes)",
                            producer.capacity()
                        ),
                    ))
                }
                Err(e) => return Err((false, format!("residual item {fitted} of {n}: {e}"))),
            }
        }
        producer.flush();
        Ok((n as u64, (before - producer.free_bytes()) as u64))
    }

    fn clear(&self, consumer: &mut dyn Any) {
        let consumer = end_mut::<ring::Consumer<T>>(consumer);
        let n = consumer.slots();
        if let Ok(chunk) = consumer.read_chunk(n) {
            chunk.commit_all();
        }
    }

    unsafe fn copy_in(
        &self,
        ring: &RecordRing,
    ) -> Result<(Box<dyn Any + Send>, u64, u64), RecordError> {
        // SAFETY: forwarded to the caller.
        let unread = unsafe { ring.peek_unread::<Vec<T>>() };
        let bytes = unread.remaining_bytes();
        let mut items = Vec::new();
        for run in unread {
            items.extend(run?);
        }
        let n = items.len() as u64;
        Ok((Box::new(items), n, bytes))
    }

    fn append(&self, outbox: &mut dyn Any, items: Box<dyn Any + Send>) {
        let outbox = end_mut::<RingOutbox<T>>(outbox);
        match items.downcast::<Vec<T>>() {
            Ok(items) => outbox.append(*items),
            Err(_) => unreachable!("residual items of the wrong type"),
        }
    }
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
            output: None,
            shm_output: None,
            tally: Tally::default(),
            stamps: Stamps::default(),
        };
        Self {
            parts: Parts {
                nodes: vec![Box::new(source)],
                edges: Vec::new(),
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
        self.parts.edges.push(Box::new(TypedEdge::<T>(PhantomData)));
        self.parts.nodes.push(Box::new(TransformStage::<T, U, Op> {
            name: name.into(),
            op,
            input: None,
            output: None,
            shm_input: None,
            shm_output: None,
            tally: Tally::default(),
            stamps: Stamps::default(),
        }));
        Pipeline {
            parts: self.parts,
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
        self.parts.edges.push(Box::new(TypedEdge::<T>(PhantomData)));
        self.parts.nodes.push(Box::new(SinkStage {
            f,
            input: None,
            shm_input: None,
            tally: Tally::default(),
            stamps: Stamps::default(),
        }));
        CompletePipeline { parts: self.parts }
    }
}

/// A pipeline with a source and a sink, ready to run.
#[must_use = "a pipeline does nothing until it is run or spawned"]
pub struct CompletePipeline {
    parts: Parts,
}

impl CompletePipeline {
    option_setters!();

    /// Injects `fault` into every switch to distributed mode (tests only).
    #[doc(hidden)]
    pub fn inject_fault(mut self, fault: Fault) -> Self {
        self.parts.options.faults.push(fault);
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
        self.parts.options.validate()?;
        check_names(&self.parts.nodes)?;
        executor::spawn(self.parts)
    }
}

/// Stage names must be non-empty and unique: errors and metrics name stages.
fn check_names(nodes: &[Box<dyn ErasedStage>]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for node in nodes {
        let name = node.name();
        if name.is_empty() {
            return Err(Error::InvalidConfig {
                field: "stage name",
                reason: "must not be empty".into(),
            });
        }
        if !seen.insert(name) {
            return Err(Error::InvalidConfig {
                field: "stage name",
                reason: format!(
                    "`{name}` is used by more than one stage (`source` and `sink` are taken)"
                ),
            });
        }
    }
    Ok(())
}
