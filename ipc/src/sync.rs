//! The one place ringweave imports its synchronisation primitives from.
//!
//! Every atomic, `UnsafeCell`, thread and spin hint in the ring, wake-up and
//! barrier code comes through this module. A normal build re-exports `std`;
//! a build with `RUSTFLAGS="--cfg ringweave_loom"` re-exports [loom]'s
//! instrumented versions instead, so the model checker in `loom-tests/` runs
//! the same source that runs in production (the pattern of tokio's
//! `src/loom/`).
//!
//! `UnsafeCell` mirrors loom's closure API (`with`, `with_mut`) in both builds,
//! so code written against it compiles unchanged under either.
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(ringweave_loom))]
mod imp {
    pub use std::hint;
    pub use std::sync::atomic;
    pub use std::sync::{Arc, Mutex, MutexGuard};
    pub use std::thread;

    /// `std::cell::UnsafeCell` behind loom's closure-based API.
    #[derive(Debug)]
    #[repr(transparent)]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        #[inline]
        pub const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[inline]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a unique raw pointer to the contents.
        #[inline]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// `true` when built for the loom model checker.
    pub const LOOM: bool = false;
}

#[cfg(ringweave_loom)]
mod imp {
    pub use loom::cell::UnsafeCell;
    pub use loom::hint;
    pub use loom::sync::atomic;
    pub use loom::sync::{Arc, Mutex, MutexGuard};
    pub use loom::thread;

    /// `true` when built for the loom model checker.
    pub const LOOM: bool = true;
}

pub use imp::*;
