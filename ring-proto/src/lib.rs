//! The one source of truth for what the engine and its clients share: the byte layout of a
//! session region ([`layout`]), the entries that travel through its rings ([`entry`]), the
//! single-producer single-consumer ring algorithm with its sleep/wake handshake ([`ring`]),
//! the control-socket messages of the slow path ([`control`]), what makes a submission
//! entry valid ([`validate`]), the needle metadata a `READ_NEEDLE` returns ([`needle`]), and
//! the messages engines exchange over UCX ([`wire`]).
//!
//! `SPEC.md` beside this crate says the same in prose for clients written in other languages;
//! `layout.json` is its machine-readable form (a test keeps it equal to these types).

pub mod control;
#[cfg(feature = "io")]
pub mod control_io;
pub mod entry;
pub mod layout;
pub mod needle;
#[cfg(not(loom))]
pub mod region;
pub mod ring;
pub mod sync;
pub mod validate;
pub mod wire;

pub use entry::{opcode, Cqe, Entry, ResultCode, Sqe};
pub use layout::{CloseReason, RegionHeader, RegionLayout, RingCtl, SessionState, LAYOUT_VERSION, MAGIC};
#[cfg(not(loom))]
pub use region::{BufRange, LiveHeader, OutOfRange, RegionView, SharedArea, SharedMemory, SharedRange};
pub use ring::{Consumer, HeapRing, Producer, RawRing, RingCorrupt};
