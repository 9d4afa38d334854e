//! Atomics, aliased so that `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked versions.
//!
//! Under loom the ring structures are built on the heap with `new_for_model` and never
//! overlaid on shared memory, so the compile-time layout checks only apply to the std build.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
