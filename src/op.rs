//! Operators: the per-item logic of a transform stage (what `map`,
//! `filter`, `flat_map`, `stateful`, `stateful_by_key` and `tee` build),
//! how a replicated stage runs a whole batch, and how a stage's state is
//! archived to cross a switch. The loops that run them are in `stage.rs`;
//! `keyed.rs` has the keyed operator.

use crate::erased::{Erased, State};
use crate::input::Input;
use crate::item::Item;
use crate::port::{Emit, StageExit};
use crate::replica::{split_run, Batch};
use ringweave_ipc::control::StageControl;

/// Why a `stateful` stage's state could not move between a worker and this
/// process at a switch back.
#[derive(Debug)]
pub(crate) enum StateError {
    /// rkyv could not archive the state.
    Serialize(String),
    /// The archive needs more than the state area holds.
    TooLarge { len: usize, capacity: usize },
    /// The saved bytes fail validation.
    Invalid { len: usize, cause: String },
    /// The validated archive does not deserialize.
    Deserialize(String),
    /// Replica process `replica` died (`exit` says how) while its state
    /// was gathered: a crash of the stage, not a state that does not fit.
    /// Its pid is in the control slot.
    ReplicaDied { replica: usize, exit: String },
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Serialize(cause) => write!(f, "state does not serialize: {cause}"),
            Self::TooLarge { len, capacity } => write!(
                f,
                "state archive of {len} bytes does not fit the {capacity}-byte state area \
                 (raise max_state_bytes)"
            ),
            Self::Invalid { len, cause } => {
                write!(f, "state of {len} bytes fails validation: {cause}")
            }
            Self::Deserialize(cause) => write!(f, "state does not deserialize: {cause}"),
            Self::ReplicaDied { replica, exit, .. } => {
                write!(f, "replica {replica} {exit} while its state was gathered")
            }
        }
    }
}

/// The per-item logic of a transform stage.
pub(crate) trait Operator<In, Out>: Send + 'static {
    /// Processes one input, emitting zero or more outputs in order.
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E);

    /// Whether every input yields exactly one output through
    /// [`map_one`](Self::map_one): such a stage moves whole batches slot to
    /// slot between in-process rings.
    const ONE_TO_ONE: bool = false;

    /// The output of one input, for `ONE_TO_ONE` operators.
    fn map_one(&mut self, _item: In) -> Out {
        unreachable!("map_one on an operator that is not one-to-one")
    }

    /// Archives the operator's state into `area` (a worker pausing for a
    /// switch back); returns its length. Stateless operators write nothing.
    fn save_state(&self, _area: &mut [u8]) -> Result<usize, StateError> {
        Ok(0)
    }

    /// Validates and deserializes a state saved by `save_state`, without
    /// installing it (so a failed switch leaves the operator untouched).
    fn decode_state(&self, _bytes: &[u8]) -> Result<Option<Erased<State>>, StateError> {
        Ok(None)
    }

    /// Installs a state returned by `decode_state`.
    fn set_state(&mut self, _state: Erased<State>) {}

    /// Whether `.replicas(n)` with `n > 1` may apply: the operator keeps no
    /// state, or only keyed state.
    const REPLICABLE: bool = false;

    /// Whether the operator keeps state per key, split between replicas
    /// (`stateful_by_key`).
    const KEYED: bool = false;

    /// Whether the stage must run in this process in every mode (a tee,
    /// which feeds a branch running here).
    const LOCAL: bool = false;

    /// Which of `n` replicas each of `items` goes to, for replica
    /// processes; `None`: contiguous runs (stateless operators).
    fn route(&self, _items: &[In], _n: usize) -> Option<Vec<u8>> {
        None
    }

    /// Takes from `state` (a decoded state of this operator, as replica
    /// `replica` of `n` kept it) what that replica owns: the keyed groups
    /// a replica process updated while the worker's copy went stale.
    fn absorb(&mut self, _state: Erased<State>, _replica: usize, _n: usize) {}

    /// Drops the state replica `replica` of `n` does not own (a replica
    /// process, just forked with a copy of all of it).
    fn keep_only(&mut self, _replica: usize, _n: usize) {}

    /// How many items the operator can take now without blocking, waiting
    /// (interruptibly: `Err` on a pause or an abort) until it can take
    /// one. Only a tee waits here, for room in its branch.
    #[inline]
    fn room(&mut self, _control: &StageControl) -> Result<usize, StageExit> {
        Ok(usize::MAX)
    }

    /// An operator with effects outside the pipeline (a tee): how far into
    /// its input stream it is (see `ErasedStage::position`).
    fn position(&self) -> Option<u64> {
        None
    }

    /// Its input stream starts again at `position` after a crash recovery:
    /// skip the effects already had.
    fn rewind(&mut self, _position: u64) {}

    /// Processes a whole batch over `n` replicas (threads of `pool` and the
    /// calling one), appending the outputs in input order. The default
    /// runs it on this thread.
    fn process_batch(
        &mut self,
        items: Vec<In>,
        _pool: Option<&rayon::ThreadPool>,
        _n: usize,
        out: &mut Batch<Out>,
    ) {
        run_each(self, items, out);
    }
}

/// Runs `items` through `op` one by one on this thread, appending the
/// outputs and each input's end to `out`: a batch on one replica.
#[inline]
pub(crate) fn run_each<In, Out, Op: Operator<In, Out> + ?Sized>(
    op: &mut Op,
    items: Vec<In>,
    out: &mut Batch<Out>,
) {
    for item in items {
        op.process(item, &mut out.items);
        out.end_input();
    }
}

/// `map`: exactly one output per input.
pub(crate) struct MapOp<F>(pub F);

impl<In, Out, F> Operator<In, Out> for MapOp<F>
where
    In: Send,
    Out: Send,
    F: Fn(In) -> Out + Send + Sync + 'static,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        out.emit((self.0)(item));
    }

    const ONE_TO_ONE: bool = true;

    #[inline]
    fn map_one(&mut self, item: In) -> Out {
        (self.0)(item)
    }

    const REPLICABLE: bool = true;

    fn process_batch(
        &mut self,
        items: Vec<In>,
        pool: Option<&rayon::ThreadPool>,
        n: usize,
        out: &mut Batch<Out>,
    ) {
        let f = &self.0;
        split_run(items, pool, n, &|x, v: &mut Vec<Out>| v.push(f(x)), out);
    }
}

/// `filter`: the input itself, or nothing.
pub(crate) struct FilterOp<F>(pub F);

impl<T, F> Operator<T, T> for FilterOp<F>
where
    T: Send,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    #[inline]
    fn process<E: Emit<T>>(&mut self, item: T, out: &mut E) {
        if (self.0)(&item) {
            out.emit(item);
        }
    }

    const REPLICABLE: bool = true;

    fn process_batch(
        &mut self,
        items: Vec<T>,
        pool: Option<&rayon::ThreadPool>,
        n: usize,
        out: &mut Batch<T>,
    ) {
        let f = &self.0;
        let keep = |x: T, v: &mut Vec<T>| {
            if f(&x) {
                v.push(x);
            }
        };
        split_run(items, pool, n, &keep, out);
    }
}

/// `flat_map`: any number of outputs per input.
pub(crate) struct FlatMapOp<F>(pub F);

impl<In, Out, I, F> Operator<In, Out> for FlatMapOp<F>
where
    In: Send,
    Out: Send,
    F: Fn(In) -> I + Send + Sync + 'static,
    I: IntoIterator<Item = Out>,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        for output in (self.0)(item) {
            out.emit(output);
        }
    }

    const REPLICABLE: bool = true;

    fn process_batch(
        &mut self,
        items: Vec<In>,
        pool: Option<&rayon::ThreadPool>,
        n: usize,
        out: &mut Batch<Out>,
    ) {
        let f = &self.0;
        split_run(items, pool, n, &|x, v: &mut Vec<Out>| v.extend(f(x)), out);
    }
}

/// `tee`: every item goes on, and a clone of it into the branch's
/// [`Input`], which a pipeline running in this process reads. Takes no more
/// items than the branch has room for (`room`, which waits interruptibly),
/// so a slow branch backpressures the whole graph and the barrier still
/// reaches the tee within one branch item.
pub(crate) struct TeeOp<T> {
    pub name: String,
    pub branch: Input<T>,
    /// Items pushed into the branch.
    pub sent: u64,
    /// Items not to push again after a crash recovery (pushed before it).
    pub skip: u64,
}

impl<T: Clone + Send + 'static> Operator<T, T> for TeeOp<T> {
    #[inline]
    fn process<E: Emit<T>>(&mut self, item: T, out: &mut E) {
        out.emit(self.map_one(item));
    }

    const ONE_TO_ONE: bool = true;

    #[inline]
    fn map_one(&mut self, item: T) -> T {
        if self.skip > 0 {
            self.skip -= 1;
            return item;
        }
        self.sent += 1;
        if self.branch.push(item.clone()).is_err() {
            // The branch's run has ended early: it failed (its join
            // reports why) or was torn down. Going on would drop items.
            panic!(
                "tee `{}`: its branch stopped taking items (the branch failed)",
                self.name
            );
        }
        item
    }

    const LOCAL: bool = true;

    fn room(&mut self, control: &StageControl) -> Result<usize, StageExit> {
        if self.skip > 0 {
            // Only the items to skip: the rest need room in the branch.
            return Ok(usize::try_from(self.skip).unwrap_or(usize::MAX));
        }
        self.branch.await_room(control)
    }

    fn position(&self) -> Option<u64> {
        Some(self.sent - self.skip.min(self.sent))
    }

    fn rewind(&mut self, position: u64) {
        self.skip = self.sent.saturating_sub(position);
    }
}

/// `stateful`: explicit state threaded through every call.
pub(crate) struct StatefulOp<S, F> {
    pub state: S,
    pub f: F,
}

impl<In, Out, S, F> Operator<In, Out> for StatefulOp<S, F>
where
    S: Item,
    F: Fn(&mut S, In) -> Option<Out> + Send + 'static,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        if let Some(output) = (self.f)(&mut self.state, item) {
            out.emit(output);
        }
    }

    fn save_state(&self, area: &mut [u8]) -> Result<usize, StateError> {
        archive_state(&self.state, area)
    }

    fn decode_state(&self, bytes: &[u8]) -> Result<Option<Erased<State>>, StateError> {
        let state = restore_state::<S, <S as ringweave_ipc::Record>::ArchivedRecord>(bytes)?;
        Ok(Some(Erased::new(state)))
    }

    fn set_state(&mut self, state: Erased<State>) {
        self.state = state.open::<S>();
    }
}

/// Archives a stage's state `value` into `area`; returns its length.
pub(crate) fn archive_state<U>(value: &U, area: &mut [u8]) -> Result<usize, StateError>
where
    U: for<'w, 'a> rkyv::Serialize<ringweave_ipc::record::RecordSerializer<'w, 'a>>,
{
    let capacity = area.len();
    let mut arena = rkyv::ser::allocator::Arena::new();
    let len = ringweave_ipc::record::serialize_to_slice(value, &mut arena, area)
        .map_err(|e| StateError::Serialize(e.to_string()))?;
    if len > capacity {
        return Err(StateError::TooLarge { len, capacity });
    }
    Ok(len)
}

/// Validates `bytes` as an archived `T` (archived type `A`) and
/// deserializes it: the inverse of [`archive_state`].
pub(crate) fn restore_state<T, A>(bytes: &[u8]) -> Result<T, StateError>
where
    A: rkyv::Portable
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let archived =
        rkyv::access::<A, rkyv::rancor::Error>(bytes).map_err(|e| StateError::Invalid {
            len: bytes.len(),
            cause: e.to_string(),
        })?;
    rkyv::deserialize::<T, rkyv::rancor::Error>(archived)
        .map_err(|e| StateError::Deserialize(e.to_string()))
}
