//! The engine's library part: the safe UCX wrapper, shared with the benchmark's raw-UCX
//! baselines so that both measure the same code. The daemon itself is `src/main.rs`; the
//! SeaweedFS file formats it reads are the `seaweed-format` crate.

pub mod ucx;
