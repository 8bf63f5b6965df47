//! # ringweave
//!
//! Low-latency dataflow pipelines on lock-free SPSC rings.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod ring;

pub use ringweave_ipc::wait::WaitStrategy;
