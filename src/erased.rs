//! Type erasure, in one place.
//!
//! The builder knows every item type; the coordinator does not. It holds the
//! stages as `dyn ErasedStage` and the edges as `dyn EdgeSpec`, and what it
//! carries between them — a ring end, the residual items of an edge, a
//! stage's decoded state — travels as an [`Erased`] box tagged with its
//! role. Each box is made by the typed code of one edge or stage and opened
//! by the typed code of the same edge or stage (the builder creates both
//! from the same type parameters), so opening it as another type is a bug
//! in ringweave, never in user code: [`Erased::open`] panics naming both
//! types.
//!
//! The role tag (`Erased<End>`, `Erased<Residue>`, `Erased<State>`) keeps
//! the compiler checking what the type parameter no longer can: a residue
//! cannot be handed where a ring end is expected.

use std::any::{type_name, Any};
use std::marker::PhantomData;

/// Role: a ring end (in-process `Producer`/`Consumer`, shared-memory
/// `RecordProducer`/`RecordConsumer`, or a stage's `RingOutbox`).
pub(crate) enum End {}
/// Role: the residual items of one edge, read back from shared memory
/// (`Vec<T>`).
pub(crate) enum Residue {}
/// Role: a stage's state, validated and deserialized, not yet installed.
pub(crate) enum State {}

/// An owned value whose type only its maker and its opener know.
pub(crate) struct Erased<Role> {
    value: Box<dyn Any + Send>,
    what: &'static str,
    _role: PhantomData<Role>,
}

impl<Role> Erased<Role> {
    /// Erases `value`.
    pub(crate) fn new<T: Send + 'static>(value: T) -> Self {
        Self {
            value: Box::new(value),
            what: type_name::<T>(),
            _role: PhantomData,
        }
    }

    /// The value, as the type it was made from.
    ///
    /// # Panics
    ///
    /// If `T` is not that type (a bug in ringweave: see the module docs).
    pub(crate) fn open<T: 'static>(self) -> T {
        let what = self.what;
        match self.value.downcast::<T>() {
            Ok(value) => *value,
            Err(_) => mismatch::<T>(what),
        }
    }
}

impl<Role> Erased<Role> {
    /// A borrow of the value, as the type it was made from.
    ///
    /// # Panics
    ///
    /// If `T` is not that type (a bug in ringweave: see the module docs).
    pub(crate) fn get_mut<T: 'static>(&mut self) -> &mut T {
        let what = self.what;
        match self.value.downcast_mut::<T>() {
            Some(value) => value,
            None => mismatch::<T>(what),
        }
    }
}

impl<Role> std::fmt::Debug for Erased<Role> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Erased<{}>({})", type_name::<Role>(), self.what)
    }
}

/// A borrowed value whose type only its maker and its opener know.
pub(crate) struct ErasedMut<'a, Role> {
    value: &'a mut dyn Any,
    what: &'static str,
    _role: PhantomData<Role>,
}

impl<'a, Role> ErasedMut<'a, Role> {
    /// Erases the borrow `value`.
    pub(crate) fn new<T: 'static>(value: &'a mut T) -> Self {
        Self {
            value,
            what: type_name::<T>(),
            _role: PhantomData,
        }
    }

    /// The borrow, as the type it was made from.
    ///
    /// # Panics
    ///
    /// If `T` is not that type (a bug in ringweave: see the module docs).
    pub(crate) fn open<T: 'static>(self) -> &'a mut T {
        let what = self.what;
        match self.value.downcast_mut::<T>() {
            Some(value) => value,
            None => mismatch::<T>(what),
        }
    }
}

#[cold]
fn mismatch<T>(was: &str) -> ! {
    unreachable!(
        "erased value opened as {} but made as {was}",
        type_name::<T>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_as_its_own_type() {
        let boxed: Erased<State> = Erased::new(vec![1u64, 2, 3]);
        assert_eq!(boxed.open::<Vec<u64>>(), vec![1, 2, 3]);
        let mut x = 7u32;
        let borrowed: ErasedMut<'_, End> = ErasedMut::new(&mut x);
        *borrowed.open::<u32>() += 1;
        assert_eq!(x, 8);
    }

    #[test]
    #[should_panic(expected = "opened as u32 but made as alloc::vec::Vec<u64>")]
    fn names_both_types_on_a_mismatch() {
        let boxed: Erased<Residue> = Erased::new(vec![1u64]);
        let _ = boxed.open::<u32>();
    }
}
