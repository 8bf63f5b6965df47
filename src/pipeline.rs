//! The pipeline builder.

use crate::config::ExecutionMode;
use crate::error::Error;
use crate::executor::{self, PipelineHandle};
use crate::item::Item;
use crate::latency::Stamps;
use crate::report::RunReport;
use crate::ring::{self, RingWaker};
use crate::shm::{stage_items, MAX_ITEMS_PER_RECORD};
use crate::stage::RingOutbox;
use crate::stage::{
    ErasedStage, FilterOp, FlatMapOp, MapOp, Operator, SinkStage, SourceStage, StatefulOp, Tally,
    TransformStage,
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
/// Default bytes a `stateful` stage's archived state may take when it moves
/// back from a worker process.
pub const DEFAULT_MAX_STATE_BYTES: usize = 1 << 20;

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
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let c = self.ring_capacity;
        if c < 2 || !c.is_power_of_two() {
            return Err(Error::InvalidConfig {
                field: "ring_capacity",
                reason: format!("must be a power of two of at least 2, got {c}"),
            });
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig {
                field: "batch_size",
                reason: "must be at least 1, got 0".into(),
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
        if self.max_state_bytes == 0 {
            return Err(Error::InvalidConfig {
                field: "max_state_bytes",
                reason: "must be at least 1, got 0".into(),
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

    /// The two ends of `ring` for this edge's item type: boxed
    /// `RecordProducer<Vec<T>>` and `RecordConsumer<Vec<T>>` (items cross
    /// in runs, one record per run: see `ShmOutbox`).
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::producer`] and
    /// [`RecordRing::consumer`]: one of each in use at a time, across
    /// processes, and `ring`'s segment outlives them in this process.
    unsafe fn record_ends(&self, ring: &RecordRing) -> (Box<dyn Any + Send>, Box<dyn Any + Send>);

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

    unsafe fn record_ends(&self, ring: &RecordRing) -> (Box<dyn Any + Send>, Box<dyn Any + Send>) {
        // SAFETY: forwarded to the caller.
        let (mut producer, mut consumer) =
            unsafe { (ring.producer::<Vec<T>>(), ring.consumer::<Vec<T>>()) };
        // Five stages on two cores: yield briefly, then sleep (see
        // `ringweave_ipc::record_ring::DEFAULT_WAIT` for the two-process
        // default).
        producer.set_wait_strategy(WaitStrategy::default());
        consumer.set_wait_strategy(WaitStrategy::default());
        (Box::new(producer), Box::new(consumer))
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
        let mut fitted = 0;
        for part in [a, b] {
            let (done, result) = stage_items(producer, part, &mut per_record);
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
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        let source = SourceStage {
            iter: iter.into_iter(),
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
