//! The volume side of `READ_NEEDLE`: SeaweedFS needles served straight from the volume
//! server's own `.dat`/`.idx` files on this host (config section `[seaweedfs]`).
//!
//! * [`format`]: the on-disk formats, the `seaweed-format` crate (pure parsing, shared with the
//!   fuzz target and the tests crate, which writes volumes with its `writer`);
//! * `volume.rs`: one volume, its `.dat` mapped read-only, its `.idx` replayed into a needle
//!   map and followed as the volume server appends;
//! * `needle_map.rs`: that map, 12 bytes per needle (SeaweedFS's `CompactMap` layout);
//! * `datmap.rs`: the `.dat` mapping, and whether a needle's pages are resident (`mincore`);
//! * `store.rs`: [`VolumeStore`], every volume of the configured directories, indexed in the
//!   background at start and refreshed periodically (new needles, new and vanished volumes,
//!   compaction), and the read JWT key;
//! * [`jwt`]: read JWTs checked as the volume server checks them (`[jwt.signing.read]`).
//!
//! The engine never writes, locks or truncates these files; the volume server stays their
//! only writer. How that stays safe while it appends, rolls back and compacts is in
//! `volume.rs`.
//!
//! Use: `main.rs` starts the store (`VolumeStore::start(&cfg.seaweedfs)`) and the thread that
//! indexes the volumes, then calls [`VolumeStore::refresh`] every `refresh-interval-ms`
//! ([`VolumeStore::refresh_interval`]); SIGHUP calls [`VolumeStore::reconfigure`] with the
//! re-read section. For each `READ_NEEDLE` a worker's data plane (`dataplane/server.rs`,
//! `dataplane/local.rs`) calls [`VolumeStore::read_polling`], which never waits for a disk,
//! and hands what it cannot serve at once ([`Read::NeedsIo`]) to a volume I/O thread
//! (`io_pool.rs`), which calls [`VolumeStore::read_blocking`]; the worker sends
//! [`NeedleRead::meta`] and [`NeedleRead::data`]. `engine status` and the metrics endpoint
//! show [`VolumeStore::volumes`] and [`VolumeStore::indexing`].

pub use seaweed_format as format;

mod datmap;
pub mod jwt;
mod needle_map;
mod store;
mod volume;

#[cfg(test)]
mod polling_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testvol;

use std::path::PathBuf;
use std::sync::Arc;

use ring_proto::needle::NeedleMeta;
use ring_proto::ResultCode;

pub use datmap::DatMap;
pub use store::{IndexingStatus, RefreshSummary, VolumeStore};

/// What one `READ_NEEDLE` asks of the store. With `ranged`, at most `max_len` bytes from data
/// offset `range_offset` (an offset past the end is `RangeNotSatisfiable`, one at the end
/// gives no bytes); without, the whole data (`range_offset` is ignored) or
/// `ResponseTooLarge` when it holds more than `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleQuery {
    pub volume: u32,
    pub needle: u64,
    pub cookie: u32,
    pub range_offset: u64,
    pub max_len: u64,
    pub ranged: bool,
}

/// Whether a read may wait for a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// On a busy-polling worker: never; anything that could answers [`Read::NeedsIo`].
    Polling,
    /// On an I/O thread (`io_pool.rs`): fault the needle in, verify its CRC whatever its
    /// size, catch up on the `.idx`, remap a grown `.dat`.
    Blocking,
}

/// A read's outcome short of an error.
#[derive(Debug)]
pub enum Read {
    Ready(NeedleRead),
    /// Polling only: serving it could wait for a disk; redo it in [`ReadMode::Blocking`].
    NeedsIo(NeedsIo),
}

/// Why a polling read needs an I/O thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedsIo {
    /// Some of the needle's pages are not in the page cache.
    ColdPages,
    /// Its first CRC check, over more data than a worker checks itself.
    LargeCrc,
    /// The `.idx` grew since the map last caught up (read-your-writes needs the new entries).
    IndexGrew,
    /// The needle lies beyond the current mapping of a grown `.dat`.
    Remap,
    /// The volume exists but is still being indexed (the engine's start, a new volume).
    Indexing,
}

/// A needle read: its metadata and its data (or the requested range of it), borrowed from the
/// volume's mapping, which `keep` holds alive for as long as this value (or a clone of
/// `keep`) lives, across remaps, compactions and volume removal alike.
#[derive(Debug, Clone)]
pub struct NeedleRead {
    pub meta: NeedleMeta,
    /// The mapping the data lies in.
    pub keep: Arc<DatMap>,
    start: usize,
    len: usize,
}

impl NeedleRead {
    fn new(meta: NeedleMeta, keep: Arc<DatMap>, start: usize, len: usize) -> Self {
        assert!(
            start.checked_add(len).is_some_and(|end| end as u64 <= keep.len()),
            "needle data inside its mapping"
        );
        Self { meta, keep, start, len }
    }

    /// The data bytes: `meta.range_offset ..` of the needle's data, `len()` of them.
    pub fn data(&self) -> &[u8] {
        &self.keep.bytes()[self.start..self.start + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// Why a needle could not be served: the `READ_NEEDLE` answers -13..-19 and -9 (see
/// [`ReadNeedleError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadNeedleError {
    #[error("no volume {volume} on this server")]
    NoSuchVolume { volume: u32 },
    /// Never written (or its TTL ran out, as the volume server answers then).
    #[error("volume {volume} has no needle {needle:x}")]
    NoSuchNeedle { volume: u32, needle: u64 },
    #[error("needle {volume},{needle:x} was deleted")]
    NeedleDeleted { volume: u32, needle: u64 },
    #[error("needle {volume},{needle:x}: the cookie does not match")]
    CookieMismatch { volume: u32, needle: u64 },
    /// The stored needle failed its checks: header against index, lengths, CRC-32C.
    #[error("needle {volume},{needle:x} is corrupt {reason}")]
    Corrupt { volume: u32, needle: u64, reason: String },
    #[error("needle {volume},{needle:x}: range starts at {offset}, beyond its {data_size} bytes")]
    RangeNotSatisfiable {
        volume: u32,
        needle: u64,
        offset: u64,
        data_size: u64,
    },
    /// The volume is still being indexed and another read already waits for it.
    #[error("volume {volume} is still being indexed; retry")]
    Indexing { volume: u32 },
    #[error("needle {volume},{needle:x} holds {data_size} bytes, more than the {max_len} the request can take")]
    ResponseTooLarge {
        volume: u32,
        needle: u64,
        data_size: u64,
        max_len: u64,
    },
}

impl ReadNeedleError {
    /// The completion code for this answer.
    pub fn code(&self) -> ResultCode {
        match self {
            Self::NoSuchVolume { .. } => ResultCode::NoSuchVolume,
            Self::NoSuchNeedle { .. } => ResultCode::NoSuchNeedle,
            Self::NeedleDeleted { .. } => ResultCode::NeedleDeleted,
            Self::CookieMismatch { .. } => ResultCode::CookieMismatch,
            Self::Corrupt { .. } => ResultCode::Corrupt,
            Self::RangeNotSatisfiable { .. } => ResultCode::RangeNotSatisfiable,
            Self::ResponseTooLarge { .. } => ResultCode::ResponseTooLarge,
            Self::Indexing { .. } => ResultCode::Throttled,
        }
    }
}

/// One open volume, for `engine status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeInfo {
    pub id: u32,
    /// Empty for the default collection.
    pub collection: String,
    pub dat_path: PathBuf,
    pub idx_path: PathBuf,
    /// Needle version (1, 2 or 3).
    pub version: u8,
    pub compaction_revision: u16,
    /// Needle ids whose latest index entry makes them readable.
    pub needles_live: u64,
    /// Needle ids whose latest index entry deletes them.
    pub needles_deleted: u64,
    /// Index entries read so far.
    pub idx_entries: u64,
    /// Heap bytes of the volume's needle map (about 12 per needle, `needle_map.rs`).
    #[serde(default)]
    pub needle_map_bytes: u64,
    /// Length of the `.dat` file.
    pub dat_bytes: u64,
    /// 16 or 17.
    pub idx_entry_size: u8,
    /// False while `idx-entry-size = "auto"` has only guessed (nothing in the `.idx` showed it).
    pub idx_entry_size_confirmed: bool,
    /// READ_NEEDLEs answered with data since the volume was (re)opened, and their data bytes.
    #[serde(default)]
    pub reads_served: u64,
    #[serde(default)]
    pub bytes_served: u64,
    /// Of `reads_served`, those an I/O thread served (pages not in memory, a large needle's
    /// first CRC check, an `.idx` to catch up on): the worker did not wait for them.
    #[serde(default)]
    pub reads_served_io: u64,
    /// READ_NEEDLEs refused (no such needle, deleted, cookie mismatch, corrupt, range).
    #[serde(default)]
    pub reads_refused: u64,
}
