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

// The engine's OS-facing layers (threads, fork, shared memory) are not built
// under loom; the protocols they use are (`ring`, `control`), through the
// sync shim, and `loom-tests/` checks them.
#[cfg(not(ringweave_loom))]
mod child;
#[cfg(not(ringweave_loom))]
mod config;
mod control;
#[cfg(not(ringweave_loom))]
mod coordinator;
#[cfg(not(ringweave_loom))]
mod distributed;
#[cfg(not(ringweave_loom))]
mod edge;
#[cfg(not(ringweave_loom))]
mod erased;
#[cfg(not(ringweave_loom))]
mod error;
#[cfg(not(ringweave_loom))]
mod event;
#[cfg(all(feature = "metrics", not(ringweave_loom)))]
mod export;
#[cfg(not(ringweave_loom))]
mod handle;
#[cfg(not(ringweave_loom))]
mod input;
#[cfg(not(ringweave_loom))]
mod item;
#[cfg(not(ringweave_loom))]
mod latency;
#[cfg(not(ringweave_loom))]
mod metrics;
#[cfg(not(ringweave_loom))]
mod monitor;
#[cfg(not(ringweave_loom))]
mod pipeline;
#[cfg(not(ringweave_loom))]
mod plan;
#[cfg(not(ringweave_loom))]
mod port;
#[cfg(not(ringweave_loom))]
mod report;
pub mod ring;
#[cfg(not(ringweave_loom))]
mod shared;
#[cfg(not(ringweave_loom))]
mod shm;
#[cfg(not(ringweave_loom))]
mod source;
#[cfg(not(ringweave_loom))]
mod stage;
#[cfg(not(ringweave_loom))]
mod topology;

#[cfg(not(ringweave_loom))]
pub use config::{
    ExecutionMode, HybridConfig, Mode, DEFAULT_BATCH_SIZE, DEFAULT_MAX_STATE_BYTES,
    DEFAULT_RING_CAPACITY, DEFAULT_SHM_RING_BYTES, DEFAULT_STALL_TIMEOUT, MAX_BATCH_SIZE,
    MAX_RING_CAPACITY, MAX_STATE_BYTES,
};
#[cfg(not(ringweave_loom))]
pub use error::Error;
#[cfg(not(ringweave_loom))]
pub use event::{LatencySummary, SwitchEvent, SwitchOutcome, SwitchReason};
#[cfg(not(ringweave_loom))]
pub use handle::PipelineHandle;
#[cfg(not(ringweave_loom))]
pub use input::Input;
#[cfg(not(ringweave_loom))]
pub use item::Item;
#[cfg(not(ringweave_loom))]
pub use metrics::{EdgeMetrics, Metrics, StageMetrics, SwitchImpact};
#[cfg(not(ringweave_loom))]
pub use pipeline::{CompletePipeline, Pipeline};
#[cfg(not(ringweave_loom))]
#[doc(hidden)]
pub use plan::Fault;
#[cfg(not(ringweave_loom))]
pub use report::{RunReport, StageReport};
pub use ringweave_ipc::wait::WaitStrategy;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
