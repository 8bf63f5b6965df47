//! The bound on everything that flows through a pipeline.

/// An item (or a `stateful` stage's state) that can flow through a pipeline,
/// on threads or across worker processes.
///
/// This is [`ringweave_ipc::Record`] under the engine's name: any type rkyv
/// 0.8 can archive, validate and deserialize, and that is `Send + 'static`.
/// Integers, `String`, `Vec`, `Option` and tuples of items are items; for
/// your own types, derive rkyv's three traits:
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
/// struct Reading {
///     sensor: u32,
///     values: Vec<f64>,
/// }
/// fn assert_item<T: ringweave::Item>() {}
/// assert_item::<Reading>();
/// ```
///
/// In-process, items move by value and are never serialized; the archive is
/// only used when an item crosses into a worker process.
pub trait Item: ringweave_ipc::Record {}

impl<T: ringweave_ipc::Record> Item for T {}
