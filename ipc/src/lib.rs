//! # ringweave-ipc
//!
//! The bottom layer of [ringweave](https://docs.rs/ringweave):
//!
//! - [`index`]: the single-producer/single-consumer index protocol that both
//!   the in-process [`ring`] and the shared-memory record ring use, generic
//!   over where the indices live (heap or a shared segment);
//! - [`ring`]: the in-process SPSC ring (`ringweave::ring` re-exports it);
//! - [`control`]: the per-stage control word of the switch barrier and the
//!   table of them that worker processes share (internal to ringweave's
//!   engine; public so that `loom-tests` can check it);
//! - [`wait`]: the tiered spin → yield → sleep wait and the waiter-flag
//!   handshake that makes a wake-up cost nothing unless someone sleeps;
//! - [`sync`]: the loom shim every one of those is written against;
//! - [`record`]: the [`Record`] trait (what can cross a process boundary:
//!   any rkyv-archivable type) and the frame format of a record ring.
//!
//! The OS-facing parts sit in their own modules and stay thin (none of them
//! exists under `--cfg ringweave_loom`):
//!
//! - [`segment`]: anonymous, sealed `memfd` shared memory, inherited by
//!   `fork`, with a checked header;
//! - [`futex`]: cross-process sleep and wake-up on a word in a segment;
//! - [`record_ring`]: the SPSC ring of rkyv records in a segment, driven by
//!   [`index`] and [`wait`];
//! - [`worker`]: forked worker processes that die with their parent and are
//!   always reaped.
//!
//! # Examples
//!
//! A parent sends numbers to a worker process, which doubles them and sends
//! them back:
//!
//! ```
//! # #[cfg(not(ringweave_loom))] {
//! use ringweave_ipc::record_ring::{PopError, RecordRing};
//! use ringweave_ipc::segment::{Segment, SegmentLayout};
//! use ringweave_ipc::worker::{Worker, WorkerExit};
//! use std::sync::Arc;
//!
//! let capacity = 1 << 12;
//! let mut layout = SegmentLayout::new();
//! let to_child = layout.reserve(RecordRing::layout(capacity).unwrap()).unwrap();
//! let to_parent = layout.reserve(RecordRing::layout(capacity).unwrap()).unwrap();
//! let segment = Arc::new(Segment::create("example", layout.size()).unwrap());
//! let down = RecordRing::new(&segment, to_child, capacity).unwrap();
//! let up = RecordRing::new(&segment, to_parent, capacity).unwrap();
//!
//! // SAFETY: one producer and one consumer per ring; the child's two are
//! // moved into its closure and never used here; the parent's are dropped
//! // before `down` and `up`, which keep the segment mapped.
//! let (mut tx, mut rx) = unsafe { (down.producer::<u64>(), up.consumer::<u64>()) };
//! let (mut child_rx, mut child_tx) = unsafe { (down.consumer::<u64>(), up.producer::<u64>()) };
//!
//! // Records written before the fork are inherited like everything else.
//! tx.push(&1).unwrap();
//! tx.flush();
//!
//! // SAFETY: the closure only uses the ring handles (lock-free) and the
//! // allocator.
//! let mut worker = unsafe {
//!     Worker::spawn("doubler", move || {
//!         while let Ok(x) = child_rx.pop_blocking() {
//!             if child_tx.push_blocking(&(x * 2)).is_err() {
//!                 return 1;
//!             }
//!             child_tx.flush();
//!         }
//!         0 // `child_tx` is dropped here: the parent sees the end of stream
//!     })
//! }
//! .unwrap();
//!
//! for x in 2..=100u64 {
//!     tx.push_blocking(&x).unwrap();
//! }
//! drop(tx); // flushes and closes: the child's loop ends
//! let mut sum = 0;
//! loop {
//!     match rx.pop_until(None, || worker.try_status().map_or(true, |s| s.is_some())) {
//!         Ok(x) => sum += x,
//!         Err(PopError::Closed) => break,
//!         Err(e) => panic!("worker failed: {e}"),
//!     }
//! }
//! assert_eq!(sum, 2 * (1..=100).sum::<u64>());
//! assert_eq!(worker.wait().unwrap(), WorkerExit::Exited(0));
//! # }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod control;
#[cfg(not(ringweave_loom))]
pub mod exit_watch;
pub mod fence;
#[cfg(not(ringweave_loom))]
pub mod futex;
pub mod index;
pub mod record;
#[cfg(not(ringweave_loom))]
pub mod record_ring;
pub mod ring;
#[cfg(not(ringweave_loom))]
pub mod segment;
pub mod sync;
pub mod wait;
#[cfg(not(ringweave_loom))]
pub mod worker;

pub use record::Record;
