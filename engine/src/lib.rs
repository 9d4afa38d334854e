//! The engine's library part: the safe UCX wrapper, shared with the benchmark's raw-UCX
//! baselines so that both measure the same code; and the SeaweedFS file-format parsers, shared
//! with tests outside the crate. The daemon itself is `src/main.rs`.

/// SeaweedFS volume file formats (`.dat` super block, `.idx` entries, needles, CRC): the pure
/// parsing part of the daemon's `seaweed` module, which uses it from here. The fuzz target
/// `seaweed_parse` includes the same file by path.
#[path = "seaweed/format.rs"]
pub mod seaweed_format;
/// Writes SeaweedFS volumes in their on-disk format (tests, tools).
#[path = "seaweed/writer.rs"]
pub mod seaweed_writer;
pub mod ucx;
