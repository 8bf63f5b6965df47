//! # ringweave-ipc
//!
//! The bottom layer of [ringweave](https://docs.rs/ringweave):
//!
//! - [`index`]: the single-producer/single-consumer index protocol that both
//!   the in-process ring (`ringweave::ring`) and the shared-memory record ring
//!   use, generic over where the indices live (heap or a shared segment);
//! - [`wait`]: the tiered spin → yield → sleep wait and the waiter-flag
//!   handshake that makes a wake-up cost nothing unless someone sleeps;
//! - [`sync`]: the loom shim every one of those is written against.
//!
//! The OS-facing parts (memfd segments, futexes, forked workers) sit in their
//! own modules and stay thin.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod index;
pub mod sync;
pub mod wait;
