//! SeaweedFS volume file formats, parsed from bytes: the `.dat` super block, `.idx` entries and
//! needles (header, body, tail), the needle CRC-32C, and needle TTL expiry; their encoders; and
//! [`writer`], which writes whole volumes as the volume server does. The parsers are pure
//! functions of their input, so the engine's reader, the property tests and the fuzz target
//! `seaweed_parse` share one implementation.
//!
//! This crate depends on std, `crc32c` and `ring_proto` (its `needle` module, no features)
//! only: the engine (`engine/src/seaweed/`) reads volumes with it, the tests crate and tools
//! write them with [`writer`], and the fuzz workspace builds it without building UCX.
//!
//! The rules follow SeaweedFS's Go source (`weed/storage/...`), cited at each item. All
//! integers on disk are big-endian.
//!
//! ```text
//! .dat   super block (8 bytes, + extra for versions 2 and 3), then needles, each at a multiple of 8
//! needle header   0 cookie u32 | 4 id u64 | 12 size u32            (size: bytes of body fields)
//!        body v1  data (size bytes)
//!        body v2/3 (absent when size = 0)
//!                 data_size u32 | data | flags u8 | [name_len u8, name] | [mime_len u8, mime]
//!                 | [last_modified 5 bytes] | [ttl count u8, unit u8] | [pairs_len u16, pairs]
//!                 (each bracketed field present when its flag is set)
//!        tail     checksum u32 (CRC-32C of data) | v3: append_at_ns u64 | padding 1..=8 bytes
//!                 (padding makes the needle a multiple of 8; it is never 0 bytes, and its
//!                 content is arbitrary: the Go writer pads with leftover buffer bytes)
//! .idx   entries of 16 bytes: id u64 | offset u32 | size i32
//!        or, from a SeaweedFS built with `-tags 5BytesOffset`, 17 bytes:
//!                 id u64 | offset low u32 | offset high u8 | size i32
//!        offset counts 8-byte units; offset 0 or a negative size marks a deletion
//! ```

mod crc;
mod encode;
mod idx;
mod needle;
mod superblock;
pub mod writer;

pub use crc::{check_crc, crc32c, crc_from_legacy, legacy_crc, CrcCheck};
pub use encode::{encode_needle, NeedleSpec};
pub use idx::{entry_size_by_length, IdxEntry};
pub use needle::{needle_disk_size, padding_len, parse_needle, ttl_minutes, Needle, NeedleHeader};
pub use superblock::SuperBlock;

/// `super_block.SuperBlockSize`.
pub const SUPER_BLOCK_SIZE: usize = 8;
/// `types.NeedleHeaderSize`: cookie, id, size.
pub const NEEDLE_HEADER_SIZE: usize = 16;
/// `needle.NeedleChecksumSize`.
pub const NEEDLE_CHECKSUM_SIZE: usize = 4;
/// `types.TimestampSize`: the version 3 tail's append time.
pub const TIMESTAMP_SIZE: usize = 8;
/// `types.NeedlePaddingSize`: needles start at multiples of 8, and idx offsets count 8-byte units.
pub const NEEDLE_PADDING_SIZE: u64 = 8;
/// `needle.LastModifiedBytesLength`.
pub const LAST_MODIFIED_LEN: usize = 5;
/// `needle.TtlBytesLength`.
pub const TTL_LEN: usize = 2;
/// `.idx` entry of the default SeaweedFS build (4-byte offsets, `types/offset_4bytes.go`).
pub const IDX_ENTRY_SIZE_4: usize = 16;
/// `.idx` entry of a `-tags 5BytesOffset` build (`types/offset_5bytes.go`).
pub const IDX_ENTRY_SIZE_5: usize = 17;
/// `types.MaxPossibleVolumeSize` of the 4-byte build: 2^32 units of 8 bytes (32 GiB). The Go
/// reader retries a needle whose header does not match its idx entry at this distance further
/// (`volume_read.go`, `needle_read.go ReadData`): a 4-byte offset wraps past 32 GiB.
pub const WRAP_4BYTE_OFFSET: u64 = 1 << 35;

/// Why bytes are not a well-formed SeaweedFS structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    Truncated { what: &'static str, need: u64, have: u64 },
    /// A super block version other than 1, 2 or 3 (`needle.IsSupportedVersion`).
    UnsupportedVersion(u8),
    /// A needle header whose size is negative as the signed 32-bit value Go reads
    /// (`ReadNeedleBodyBytes` refuses it as corrupted).
    NegativeSize(u32),
    /// A length inside a needle body points past the body's end (`readNeedleDataVersion2`'s
    /// "index out of range" errors).
    FieldOverrun { field: &'static str, end: u64, body: u64 },
    /// An idx entry size other than 16 or 17.
    EntrySize(usize),
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { what, need, have } => write!(f, "{what} needs {need} bytes, only {have} there"),
            Self::UnsupportedVersion(v) => write!(f, "needle version {v} is not one SeaweedFS writes (1, 2 or 3)"),
            Self::NegativeSize(s) => write!(f, "needle size field {s:#x} is negative"),
            Self::FieldOverrun { field, end, body } => {
                write!(f, "needle {field} ends at byte {end} of a {body}-byte body")
            }
            Self::EntrySize(s) => write!(f, "idx entry size {s} is neither 16 nor 17"),
        }
    }
}

impl std::error::Error for FormatError {}

pub(crate) fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub(crate) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
