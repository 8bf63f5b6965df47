//! The bound on everything that flows through a pipeline.

/// An item (or a `stateful` stage's state) that can flow through a pipeline.
///
/// Implemented for every `Send + 'static` type.
// TODO(ipc): add the rkyv bounds (`ringweave_ipc::Record`) once the record
// ring lands, so items can cross into worker processes.
pub trait Item: Send + 'static {}

impl<T: Send + 'static> Item for T {}
