//! # ringweave
//!
//! Low-latency dataflow pipelines: a source, a chain of transform stages and
//! a sink, each stage on its own OS thread, joined by lock-free, zero-copy
//! SPSC rings ([`ring`]). Items move by value, in batches, with one
//! synchronising store per batch per ring.
//!
//! ```
//! use ringweave::Pipeline;
//! use std::sync::{Arc, Mutex};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&seen);
//! let report = Pipeline::from_iter(0..10_000u64)
//!     .map("double", |x| x * 2)
//!     .filter("div3", |x| x % 3 == 0)
//!     .flat_map("pair", |x| [x, x + 1])
//!     .stateful("running_sum", 0u64, |sum, x| {
//!         *sum += x;
//!         Some(*sum)
//!     })
//!     .ring_capacity(1024)
//!     .sink(move |x| sink.lock().unwrap().push(x))
//!     .run()?;
//!
//! let expected: Vec<u64> = (0..10_000u64)
//!     .map(|x| x * 2)
//!     .filter(|x| x % 3 == 0)
//!     .flat_map(|x| [x, x + 1])
//!     .scan(0u64, |sum, x| {
//!         *sum += x;
//!         Some(*sum)
//!     })
//!     .collect();
//! assert_eq!(*seen.lock().unwrap(), expected);
//! assert_eq!(report.items_delivered, expected.len() as u64);
//! # Ok::<(), ringweave::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod child;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod coordinator;
mod distributed;
mod edge;
mod erased;
mod error;
mod event;
#[cfg(feature = "metrics")]
mod export;
mod handle;
mod heap;
mod input;
mod item;
mod keyed;
mod latency;
mod metrics;
mod monitor;
mod op;
mod pipeline;
mod plan;
mod port;
mod replica;
mod replica_proc;
mod report;
mod shared;
mod shm;
mod source;
mod stage;
mod topology;
mod transport;

#[cfg(feature = "cluster")]
pub use cluster::{Cluster, ClusterReport, EdgeReport, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RUN_BYTES};
pub use config::{
    ExecutionMode, HybridConfig, Mode, DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_MAX_RESTARTS, DEFAULT_MAX_STATE_BYTES, DEFAULT_REPLAY_LOG_BYTES, DEFAULT_RING_CAPACITY,
    DEFAULT_SHM_RING_BYTES, DEFAULT_STALL_TIMEOUT, MAX_BATCH_SIZE, MAX_REPLAY_LOG_ITEMS,
    MAX_RING_CAPACITY, MAX_STATE_BYTES,
};
pub use error::Error;
pub use event::{LatencySummary, RecoveryEvent, SwitchEvent, SwitchOutcome, SwitchReason};
pub use handle::PipelineHandle;
pub use input::Input;
pub use item::Item;
pub use metrics::{EdgeMetrics, Metrics, StageMetrics, SwitchImpact};
pub use pipeline::{CompletePipeline, Pipeline};
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub use plan::Fault;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub use replica::always_split;
pub use replica::MAX_REPLICAS;
pub use report::{RunReport, StageReport};
pub use ringweave_ipc::ring;
pub use ringweave_ipc::wait::WaitStrategy;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
