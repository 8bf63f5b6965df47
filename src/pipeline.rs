//! The pipeline builder.

use crate::config::ExecutionMode;
use crate::error::Error;
use crate::executor::{self, PipelineHandle};
use crate::item::Item;
use crate::report::RunReport;
use crate::ring::{self, RingWaker};
use crate::stage::{
    ErasedStage, FilterOp, FlatMapOp, MapOp, Operator, SinkStage, SourceStage, StatefulOp, Tally,
    TransformStage,
};
use std::any::Any;
use std::marker::PhantomData;

/// Default slots per in-process ring.
pub const DEFAULT_RING_CAPACITY: usize = 4096;
/// Default number of items a stage takes from its input at once.
pub const DEFAULT_BATCH_SIZE: usize = 256;

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
        if let ExecutionMode::Hybrid(config) = &self.mode {
            config.validate()?;
        }
        Ok(())
    }
}

/// Builds the ring of one edge for the item type the edge carries.
pub(crate) trait EdgeSpec: Send {
    /// A new in-process ring: boxed `Producer<T>`, boxed `Consumer<T>`, and a
    /// waker for both ends.
    fn ring(&self, capacity: usize) -> (Box<dyn Any + Send>, Box<dyn Any + Send>, RingWaker);
}

struct TypedEdge<T>(PhantomData<fn() -> T>);

impl<T: Item> EdgeSpec for TypedEdge<T> {
    fn ring(&self, capacity: usize) -> (Box<dyn Any + Send>, Box<dyn Any + Send>, RingWaker) {
        let (producer, consumer) = ring::channel::<T>(capacity);
        let waker = producer.waker();
        (Box::new(producer), Box::new(consumer), waker)
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
            tally: Tally::default(),
        };
        Self {
            parts: Parts {
                nodes: vec![Box::new(source)],
                edges: Vec::new(),
                options: Options {
                    mode: ExecutionMode::InProcess,
                    ring_capacity: DEFAULT_RING_CAPACITY,
                    batch_size: DEFAULT_BATCH_SIZE,
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
            tally: Tally::default(),
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

    /// Sets how many items a stage takes from its input at once (default
    /// 256). Larger batches amortise the ring's synchronisation; smaller ones
    /// cut latency.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.parts.options.batch_size = batch;
        self
    }

    /// Ends the pipeline with `f`, called on a thread of this process for
    /// every item in order.
    pub fn sink(mut self, f: impl FnMut(T) + Send + 'static) -> CompletePipeline {
        self.parts.edges.push(Box::new(TypedEdge::<T>(PhantomData)));
        self.parts.nodes.push(Box::new(SinkStage {
            f,
            input: None,
            tally: Tally::default(),
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
    /// Sets the execution mode (see [`Pipeline::mode`]).
    pub fn mode(mut self, mode: ExecutionMode) -> Self {
        self.parts.options.mode = mode;
        self
    }

    /// Sets the ring capacity (see [`Pipeline::ring_capacity`]).
    pub fn ring_capacity(mut self, capacity: usize) -> Self {
        self.parts.options.ring_capacity = capacity;
        self
    }

    /// Sets the batch size (see [`Pipeline::batch_size`]).
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.parts.options.batch_size = batch;
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
