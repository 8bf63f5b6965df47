//! The plan of a run: the stages the builder collected (the nodes), the
//! edges between them and the run options. Checked once, before anything
//! starts; its shape is a [`Topology`].

use crate::config::{
    ExecutionMode, MAX_BATCH_SIZE, MAX_REPLAY_LOG_ITEMS, MAX_RING_CAPACITY, MAX_STATE_BYTES,
};
use crate::edge::EdgeSpec;
use crate::error::Error;
use crate::stage::ErasedStage;
use crate::topology::{Link, NodeId, Topology};
use ringweave_ipc::record_ring::RecordRing;

/// Everything the builder collected, type-erased.
pub(crate) struct Plan {
    /// Indexed by [`NodeId`](crate::topology::NodeId).
    pub nodes: Vec<Box<dyn ErasedStage>>,
    /// Indexed by [`EdgeId`](crate::topology::EdgeId): builds each edge's rings for its item type.
    pub edges: Vec<Box<dyn EdgeSpec>>,
    /// Indexed by [`EdgeId`](crate::topology::EdgeId): the nodes each edge joins.
    pub links: Vec<Link>,
    pub options: Options,
    /// A mistake the builder met (`replicas(0)`, a merge of nothing),
    /// reported by `validate`: builder methods do not return `Result`.
    pub invalid: Option<Error>,
}

impl Plan {
    /// Checks the options, the stage names and the shape; returns the
    /// shape, which the coordinator walks from then on.
    pub(crate) fn validate(&mut self) -> Result<Topology, Error> {
        if let Some(error) = self.invalid.take() {
            return Err(error);
        }
        self.options.validate()?;
        check_names(&self.nodes)?;
        let local: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].local())
            .map(NodeId)
            .collect();
        Ok(Topology::new(self.nodes.len(), &self.links)?.with_local(&local))
    }

    /// Records the first mistake the builder met.
    pub(crate) fn reject(&mut self, error: Error) {
        self.invalid.get_or_insert(error);
    }

    /// Appends `node`, fed by the last node through `edge`.
    pub(crate) fn push(&mut self, edge: Box<dyn EdgeSpec>, node: Box<dyn ErasedStage>) {
        let from = NodeId(self.nodes.len() - 1);
        self.edges.push(edge);
        self.links.push(Link {
            from,
            to: NodeId(self.nodes.len()),
        });
        self.nodes.push(node);
    }
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
    /// Crashed workers replaced per run (0: a crash ends the run).
    pub max_restarts: u32,
    /// Longest time between two checkpoints while distributed.
    pub checkpoint_interval: std::time::Duration,
    /// Most items the source's replay log holds (`None`: by the item size).
    pub replay_log_items: Option<usize>,
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
        if self.checkpoint_interval < std::time::Duration::from_millis(1) {
            return Err(Error::InvalidConfig {
                field: "checkpoint_interval",
                reason: format!("must be at least 1 ms, got {:?}", self.checkpoint_interval),
            });
        }
        if let Some(n) = self
            .replay_log_items
            .filter(|n| !(2..=MAX_REPLAY_LOG_ITEMS).contains(n))
        {
            return Err(Error::InvalidConfig {
                field: "replay_log_items",
                reason: format!(
                    "must be in 2..={MAX_REPLAY_LOG_ITEMS} (MAX_REPLAY_LOG_ITEMS), got {n}"
                ),
            });
        }
        if let ExecutionMode::Hybrid(config) = &self.mode {
            config.validate()?;
        }
        Ok(())
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
