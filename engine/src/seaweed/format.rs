//! SeaweedFS volume file formats, parsed from bytes: the `.dat` super block, `.idx` entries and
//! needles (header, body, tail), the needle CRC-32C, and needle TTL expiry. Everything here is
//! a pure function of its input, so the reader (`volume.rs`), the property tests and the fuzz
//! target `seaweed_parse` share one implementation.
//!
//! This file depends on std, `crc32c` and `ring_proto` only (no `crate::` paths): the engine's
//! library exposes it as `engine::seaweed_format`, and `fuzz/fuzz_targets/seaweed_parse.rs`
//! includes it by path so the fuzz build never links UCX.
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

use ring_proto::needle::{flags, NeedleMeta};

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

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

// ---------------------------------------------------------------------------------------------
// Super block (`weed/storage/super_block/super_block.go`, `super_block_read.go.go`)

/// The first bytes of a `.dat` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperBlock {
    /// Needle version of every needle in the volume: 1, 2 or 3.
    pub version: u8,
    pub replica_placement: u8,
    /// Volume TTL: count, unit.
    pub ttl: [u8; 2],
    /// How often the volume was compacted (vacuumed).
    pub compaction_revision: u16,
    /// Bytes of protobuf `SuperBlockExtra` after the 8 fixed bytes (versions 2 and 3).
    pub extra_size: u16,
}

impl SuperBlock {
    /// Parses the 8 fixed bytes. The extra bytes are not interpreted (nothing in them matters
    /// for reading needles); `block_size` says how far they reach.
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SUPER_BLOCK_SIZE {
            return Err(FormatError::Truncated {
                what: "super block",
                need: SUPER_BLOCK_SIZE as u64,
                have: b.len() as u64,
            });
        }
        if !(1..=3).contains(&b[0]) {
            return Err(FormatError::UnsupportedVersion(b[0]));
        }
        Ok(Self {
            version: b[0],
            replica_placement: b[1],
            ttl: [b[2], b[3]],
            compaction_revision: be_u16(&b[4..6]),
            extra_size: be_u16(&b[6..8]),
        })
    }

    /// Bytes before the first needle (`SuperBlock.BlockSize`: the extra counts for versions 2
    /// and 3 only).
    pub fn block_size(&self) -> u64 {
        match self.version {
            2 | 3 => SUPER_BLOCK_SIZE as u64 + self.extra_size as u64,
            _ => SUPER_BLOCK_SIZE as u64,
        }
    }

    /// The 8 fixed bytes (`SuperBlock.Bytes` without the extra).
    pub fn encode(&self) -> [u8; SUPER_BLOCK_SIZE] {
        let r = self.compaction_revision.to_be_bytes();
        let e = self.extra_size.to_be_bytes();
        [
            self.version,
            self.replica_placement,
            self.ttl[0],
            self.ttl[1],
            r[0],
            r[1],
            e[0],
            e[1],
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// .idx entries (`weed/storage/idx/walk.go IdxFileEntry`, `types/offset_*bytes.go`,
// `types/needle_types.go`)

/// One `.idx` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxEntry {
    pub id: u64,
    /// Byte offset of the needle in the `.dat` (the stored unit count times 8).
    pub offset: u64,
    /// The needle's header size; negative (normally -1, `TombstoneFileSize`) for a deletion.
    pub size: i32,
}

impl IdxEntry {
    /// Parses one entry from the start of `b`; `None` when `b` is shorter than `entry_size`
    /// or `entry_size` is neither 16 nor 17.
    ///
    /// The 5-byte offset is `BytesToOffset`: bytes 0..4 are the low 32 bits big-endian, byte 4
    /// is bits 32..40 (the high byte comes last, not first).
    pub fn parse(b: &[u8], entry_size: usize) -> Option<Self> {
        if b.len() < entry_size {
            return None;
        }
        let id = be_u64(&b[0..8]);
        let low = be_u32(&b[8..12]) as u64;
        let (units, size_at) = match entry_size {
            IDX_ENTRY_SIZE_4 => (low, 12),
            IDX_ENTRY_SIZE_5 => (low | (b[12] as u64) << 32, 13),
            _ => return None,
        };
        Some(Self {
            id,
            offset: units * NEEDLE_PADDING_SIZE,
            size: be_u32(&b[size_at..size_at + 4]) as i32,
        })
    }

    /// Whether the entry makes its needle readable: `doLoading` (`needle_map_memory.go`)
    /// sets the map only for `!offset.IsZero() && !size.IsDeleted()`, and deletes otherwise.
    /// A size of 0 is a live, empty needle.
    pub fn is_live(&self) -> bool {
        self.offset != 0 && self.size >= 0
    }

    /// Appends the entry as `needle_map.ToBytes` writes it. `offset` must be a multiple of 8
    /// that fits the entry size (4 or 5 bytes of 8-byte units); bits beyond are dropped, as
    /// Go's `ToOffset` drops them.
    pub fn encode_into(&self, entry_size: usize, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let units = self.offset / NEEDLE_PADDING_SIZE;
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(units as u32).to_be_bytes());
        match entry_size {
            IDX_ENTRY_SIZE_4 => {}
            IDX_ENTRY_SIZE_5 => out.push((units >> 32) as u8),
            other => {
                out.truncate(out.len() - 12);
                return Err(FormatError::EntrySize(other));
            }
        }
        out.extend_from_slice(&(self.size as u32).to_be_bytes());
        Ok(())
    }
}

/// The entry size an `.idx` file's length allows on its own: `Some` when the length is a
/// multiple of exactly one of 16 and 17. Lengths that are multiples of both (every multiple of
/// 272, including an empty file) or of neither (a partial trailing entry) decide nothing; the
/// reader then looks at what the entries point to in the `.dat` (`volume.rs`).
pub fn entry_size_by_length(len: u64) -> Option<usize> {
    match (
        len.is_multiple_of(IDX_ENTRY_SIZE_4 as u64),
        len.is_multiple_of(IDX_ENTRY_SIZE_5 as u64),
    ) {
        (true, false) => Some(IDX_ENTRY_SIZE_4),
        (false, true) => Some(IDX_ENTRY_SIZE_5),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Needles (`weed/storage/needle/needle_read.go`, `needle_read_tail.go`, `needle_write_v*.go`)

/// `PaddingLength`: 1 to 8 bytes that round the needle up to a multiple of 8 (8, not 0, when
/// it is already a multiple).
pub fn padding_len(size: u32, version: u8) -> u64 {
    let ts = if version == 3 { TIMESTAMP_SIZE as u64 } else { 0 };
    let unpadded = NEEDLE_HEADER_SIZE as u64 + size as u64 + NEEDLE_CHECKSUM_SIZE as u64 + ts;
    NEEDLE_PADDING_SIZE - unpadded % NEEDLE_PADDING_SIZE
}

/// `GetActualSize`: the bytes a needle of header size `size` occupies in the `.dat`.
pub fn needle_disk_size(size: u32, version: u8) -> u64 {
    let ts = if version == 3 { TIMESTAMP_SIZE as u64 } else { 0 };
    NEEDLE_HEADER_SIZE as u64 + size as u64 + NEEDLE_CHECKSUM_SIZE as u64 + ts + padding_len(size, version)
}

/// The 16-byte needle header (`ParseNeedleHeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleHeader {
    pub cookie: u32,
    pub id: u64,
    /// As stored (Go reads it as a signed `Size`).
    pub size: u32,
}

impl NeedleHeader {
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < NEEDLE_HEADER_SIZE {
            return Err(FormatError::Truncated {
                what: "needle header",
                need: NEEDLE_HEADER_SIZE as u64,
                have: b.len() as u64,
            });
        }
        Ok(Self {
            cookie: be_u32(&b[0..4]),
            id: be_u64(&b[4..12]),
            size: be_u32(&b[12..16]),
        })
    }
}

/// A parsed needle, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle<'a> {
    pub header: NeedleHeader,
    /// The file data as stored (gzip-compressed when `flags` has GZIP).
    pub data: &'a [u8],
    /// Where `data` starts, counted from the needle's first byte.
    pub data_start: usize,
    /// Flag bits as stored (`ring_proto::needle::flags`); 0 for version 1 and empty needles.
    pub flags: u8,
    pub name: &'a [u8],
    pub mime: &'a [u8],
    /// Unix seconds (5 bytes on disk); 0 when absent.
    pub last_modified: u64,
    /// Count, unit; zero when absent.
    pub ttl: [u8; 2],
    /// JSON name/value pairs; empty when absent.
    pub pairs: &'a [u8],
    /// The tail's checksum as stored: CRC-32C of `data`, or for needles written by SeaweedFS
    /// before 3.09 the legacy transform of it ([`legacy_crc`]).
    pub stored_checksum: u32,
    /// Version 3: the tail's append time in Unix nanoseconds; else 0.
    pub append_at_ns: u64,
    /// Bytes the needle occupies in the `.dat`, padding included.
    pub disk_size: u64,
}

/// Parses a needle from the start of `b` (which may go on past the needle). Accepts what
/// SeaweedFS's own reader accepts (`ReadBytes` → `readNeedleDataVersion2` →
/// `readNeedleDataVersion2NonData` → `readNeedleTail`), minus the CRC check ([`check_crc`]):
///
/// * the whole needle, padding included, must be in `b` (`ReadNeedleBlob` reads it whole);
/// * an optional field whose flag is set but which would start at the end of the body is
///   absent (Go's `index < lenBytes` guards); one that starts inside the body but does not
///   fit is an error;
/// * bytes left in the body after the last field are ignored, as is the padding's content.
///
/// It is stricter than Go in one place: a version 2/3 body of 1 to 3 bytes cannot hold its
/// data size (Go would index past the slice and panic); that is a `FieldOverrun` here.
pub fn parse_needle(b: &[u8], version: u8) -> Result<Needle<'_>, FormatError> {
    if !(1..=3).contains(&version) {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let header = NeedleHeader::parse(b)?;
    if header.size > i32::MAX as u32 {
        return Err(FormatError::NegativeSize(header.size));
    }
    let disk_size = needle_disk_size(header.size, version);
    if (b.len() as u64) < disk_size {
        return Err(FormatError::Truncated {
            what: "needle",
            need: disk_size,
            have: b.len() as u64,
        });
    }
    let size = header.size as usize;
    let body = &b[NEEDLE_HEADER_SIZE..NEEDLE_HEADER_SIZE + size];
    let tail = &b[NEEDLE_HEADER_SIZE + size..];
    let mut n = Needle {
        header,
        data: &[],
        data_start: NEEDLE_HEADER_SIZE,
        flags: 0,
        name: &[],
        mime: &[],
        last_modified: 0,
        ttl: [0; 2],
        pairs: &[],
        stored_checksum: be_u32(&tail[..NEEDLE_CHECKSUM_SIZE]),
        append_at_ns: 0,
        disk_size,
    };
    if version == 3 {
        n.append_at_ns = be_u64(&tail[NEEDLE_CHECKSUM_SIZE..NEEDLE_CHECKSUM_SIZE + TIMESTAMP_SIZE]);
    }
    if version == 1 {
        n.data = body;
        return Ok(n);
    }
    parse_body_v2(&mut n, body)?;
    Ok(n)
}

fn parse_body_v2<'a>(n: &mut Needle<'a>, body: &'a [u8]) -> Result<(), FormatError> {
    let len = body.len();
    let overrun = |field: &'static str, end: usize| FormatError::FieldOverrun {
        field,
        end: end as u64,
        body: len as u64,
    };
    if len == 0 {
        return Ok(());
    }
    if len < 4 {
        return Err(overrun("data size", 4));
    }
    let data_size = be_u32(&body[0..4]) as usize;
    let mut i: usize = 4;
    let data_end = i
        .checked_add(data_size)
        .filter(|&e| e <= len)
        .ok_or(overrun("data", data_size.saturating_add(4)))?;
    n.data = &body[i..data_end];
    n.data_start = NEEDLE_HEADER_SIZE + i;
    i = data_end;
    if i < len {
        n.flags = body[i];
        i += 1;
    }
    if i < len && n.flags & flags::HAS_NAME != 0 {
        let l = body[i] as usize;
        i += 1;
        if i + l > len {
            return Err(overrun("name", i + l));
        }
        n.name = &body[i..i + l];
        i += l;
    }
    if i < len && n.flags & flags::HAS_MIME != 0 {
        let l = body[i] as usize;
        i += 1;
        if i + l > len {
            return Err(overrun("mime", i + l));
        }
        n.mime = &body[i..i + l];
        i += l;
    }
    if i < len && n.flags & flags::HAS_LAST_MODIFIED != 0 {
        if i + LAST_MODIFIED_LEN > len {
            return Err(overrun("last-modified", i + LAST_MODIFIED_LEN));
        }
        n.last_modified = body[i..i + LAST_MODIFIED_LEN]
            .iter()
            .fold(0u64, |a, &x| a << 8 | x as u64);
        i += LAST_MODIFIED_LEN;
    }
    if i < len && n.flags & flags::HAS_TTL != 0 {
        if i + TTL_LEN > len {
            return Err(overrun("ttl", i + TTL_LEN));
        }
        n.ttl = [body[i], body[i + 1]];
        i += TTL_LEN;
    }
    if i < len && n.flags & flags::HAS_PAIRS != 0 {
        if i + 2 > len {
            return Err(overrun("pairs size", i + 2));
        }
        let l = be_u16(&body[i..i + 2]) as usize;
        i += 2;
        if i + l > len {
            return Err(overrun("pairs", i + l));
        }
        n.pairs = &body[i..i + l];
    }
    Ok(())
}

impl Needle<'_> {
    /// The metadata a `READ_NEEDLE` returns. `checksum` is the CRC-32C to report (the stored
    /// one, or the raw CRC when the stored one is in the legacy encoding).
    pub fn meta(&self, version: u8, range_offset: u64, checksum: u32) -> NeedleMeta {
        NeedleMeta {
            data_size: self.data.len() as u64,
            range_offset,
            last_modified: self.last_modified,
            append_at_ns: self.append_at_ns,
            checksum,
            flags: self.flags,
            version,
            ttl: self.ttl,
            name: self.name.to_vec(),
            mime: self.mime.to_vec(),
        }
    }

    /// Whether SeaweedFS's reader would answer "not found" because the needle's TTL ran out
    /// (`Volume.readNeedle`, `volume_read.go`): only a needle with flags TTL and last-modified
    /// and a non-zero TTL expires, `ttl` minutes after its append time. A version 2 needle has
    /// no append time (0), so such a needle counts as expired, as in Go.
    pub fn expired(&self, now_unix_ns: u64) -> bool {
        if self.flags & flags::HAS_TTL == 0 || self.flags & flags::HAS_LAST_MODIFIED == 0 {
            return false;
        }
        let minutes = ttl_minutes(self.ttl);
        if minutes == 0 {
            return false;
        }
        let until = self.append_at_ns as u128 + minutes as u128 * 60_000_000_000;
        now_unix_ns as u128 >= until
    }
}

/// `TTL.Minutes` (`needle/volume_ttl.go`): units 1 minute, 2 hour, 3 day, 4 week, 5 month
/// (30 days), 6 year (365 days); 0 and unknown units are no TTL.
pub fn ttl_minutes(ttl: [u8; 2]) -> u32 {
    let count = ttl[0] as u32;
    count
        * match ttl[1] {
            1 => 1,
            2 => 60,
            3 => 60 * 24,
            4 => 60 * 24 * 7,
            5 => 60 * 24 * 30,
            6 => 60 * 24 * 365,
            _ => 0,
        }
}

// ---------------------------------------------------------------------------------------------
// CRC (`weed/storage/needle/crc.go`, `needle_read_tail.go readNeedleTail`)

/// CRC-32C (Castagnoli) of `data`, as Go's `crc32.Update(0, castagnoliTable, data)`;
/// hardware-accelerated where the CPU has it (SSE 4.2, ARMv8 CRC).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// `CRC.Value()`: the transform SeaweedFS stored before 3.09 (commit 056c480eb). Its reader
/// still accepts either form.
pub fn legacy_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The CRC whose [`legacy_crc`] is `stored`.
pub fn crc_from_legacy(stored: u32) -> u32 {
    stored.wrapping_sub(0xa282_ead8).rotate_left(15)
}

/// How a needle's stored checksum relates to its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcCheck {
    /// The stored value is the CRC-32C of the data (or the data is empty: Go checks nothing).
    Match,
    /// The stored value is the legacy transform of the CRC-32C.
    LegacyMatch,
    Mismatch {
        computed: u32,
    },
}

/// Checks `data` against its stored checksum as `readNeedleTail` does.
pub fn check_crc(data: &[u8], stored: u32) -> CrcCheck {
    if data.is_empty() {
        return CrcCheck::Match;
    }
    let c = crc32c(data);
    if c == stored {
        CrcCheck::Match
    } else if legacy_crc(c) == stored {
        CrcCheck::LegacyMatch
    } else {
        CrcCheck::Mismatch { computed: c }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing (tests, the fuzz target, and integration tests that build volumes)

/// A needle to encode, with the fields SeaweedFS's writer takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeedleSpec {
    pub cookie: u32,
    pub id: u64,
    pub data: Vec<u8>,
    /// Flag bits; HAS_NAME/HAS_MIME/HAS_LAST_MODIFIED/HAS_TTL/HAS_PAIRS decide which of the
    /// fields below are written (as in Go, where the setters set the flags).
    pub flags: u8,
    pub name: Vec<u8>,
    pub mime: Vec<u8>,
    pub last_modified: u64,
    pub ttl: [u8; 2],
    pub pairs: Vec<u8>,
    pub append_at_ns: u64,
    /// Stored checksum; `None`: the CRC-32C of `data` (what SeaweedFS 3.09+ writes).
    pub checksum: Option<u32>,
    /// Byte to pad with (Go pads with leftover buffer bytes, so readers must not care).
    pub pad_byte: u8,
}

/// Encodes a needle as `writeNeedleCommon` (versions 2 and 3) or `writeNeedleV1` does; returns
/// the bytes and the header size (what the idx entry records). Names are cut to 255 bytes as
/// Go cuts them; a mime or pairs field longer than its length byte allows is cut too.
pub fn encode_needle(n: &NeedleSpec, version: u8) -> (Vec<u8>, u32) {
    let name = &n.name[..n.name.len().min(255)];
    let mime = &n.mime[..n.mime.len().min(255)];
    let pairs = &n.pairs[..n.pairs.len().min(u16::MAX as usize)];
    let mut body = Vec::new();
    if version == 1 {
        body.extend_from_slice(&n.data);
    } else if !n.data.is_empty() {
        body.extend_from_slice(&(n.data.len() as u32).to_be_bytes());
        body.extend_from_slice(&n.data);
        body.push(n.flags);
        if n.flags & flags::HAS_NAME != 0 {
            body.push(name.len() as u8);
            body.extend_from_slice(name);
        }
        if n.flags & flags::HAS_MIME != 0 {
            body.push(mime.len() as u8);
            body.extend_from_slice(mime);
        }
        if n.flags & flags::HAS_LAST_MODIFIED != 0 {
            body.extend_from_slice(&n.last_modified.to_be_bytes()[8 - LAST_MODIFIED_LEN..]);
        }
        if n.flags & flags::HAS_TTL != 0 {
            body.extend_from_slice(&n.ttl);
        }
        if n.flags & flags::HAS_PAIRS != 0 {
            body.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
            body.extend_from_slice(pairs);
        }
    }
    let size = body.len() as u32;
    let mut out = Vec::with_capacity(needle_disk_size(size, version) as usize);
    out.extend_from_slice(&n.cookie.to_be_bytes());
    out.extend_from_slice(&n.id.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&n.checksum.unwrap_or_else(|| crc32c(&n.data)).to_be_bytes());
    if version == 3 {
        out.extend_from_slice(&n.append_at_ns.to_be_bytes());
    }
    out.resize(out.len() + padding_len(size, version) as usize, n.pad_byte);
    (out, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    #[allow(clippy::manual_rotate)] // Go's expression, as written in crc.go
    fn crc32c_is_castagnoli_and_legacy_inverts() {
        // The CRC-32C check value (RFC 3720 appendix B.4 lists the same polynomial).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        for c in [0u32, 1, 0xe306_9283, u32::MAX, 0x8000_0000] {
            assert_eq!(crc_from_legacy(legacy_crc(c)), c);
        }
        // Go: uint32(c>>15|c<<17) + 0xa282ead8
        let c = 0xe306_9283u32;
        assert_eq!(legacy_crc(c), ((c >> 15) | (c << 17)).wrapping_add(0xa282ead8));
    }

    #[test]
    fn padding_is_one_to_eight_bytes() {
        // 16 + 0 + 4 = 20 → 4 bytes of padding; v3: 28 → 4.
        assert_eq!(padding_len(0, 2), 4);
        assert_eq!(padding_len(0, 3), 4);
        // 16 + 4 + 4 = 24, a multiple of 8: Go pads 8 bytes, not 0.
        assert_eq!(padding_len(4, 2), 8);
        assert_eq!(needle_disk_size(4, 2), 32);
        for size in 0..64u32 {
            for v in 1..=3 {
                let d = needle_disk_size(size, v);
                assert_eq!(d % 8, 0);
                assert!((1..=8).contains(&padding_len(size, v)));
            }
        }
    }

    #[test]
    fn super_block_fields() {
        let sb = SuperBlock::parse(&[3, 0x01, 5, 3, 0, 7, 0, 12]).unwrap();
        assert_eq!(
            sb,
            SuperBlock {
                version: 3,
                replica_placement: 1,
                ttl: [5, 3],
                compaction_revision: 7,
                extra_size: 12
            }
        );
        assert_eq!(sb.block_size(), 20);
        assert_eq!(sb.encode(), [3, 0x01, 5, 3, 0, 7, 0, 12]);
        let v1 = SuperBlock { version: 1, ..sb };
        assert_eq!(v1.block_size(), 8, "version 1 ignores the extra size");
        assert_eq!(
            SuperBlock::parse(&[4, 0, 0, 0, 0, 0, 0, 0]),
            Err(FormatError::UnsupportedVersion(4))
        );
        assert!(matches!(SuperBlock::parse(&[3, 0]), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn idx_entries_16_and_17_bytes() {
        let b16 = [0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 3, 0, 0, 0, 40];
        assert_eq!(
            IdxEntry::parse(&b16, 16),
            Some(IdxEntry {
                id: 0x1234,
                offset: 24,
                size: 40
            })
        );
        // 17 bytes: the fifth offset byte (bits 32..40) follows the four big-endian ones.
        let b17 = [0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 3, 2, 0xff, 0xff, 0xff, 0xff];
        let e = IdxEntry::parse(&b17, 17).unwrap();
        assert_eq!(e.offset, (3 + (2u64 << 32)) * 8);
        assert_eq!(e.size, -1);
        assert!(!e.is_live());
        let mut v = Vec::new();
        e.encode_into(17, &mut v).unwrap();
        assert_eq!(v, b17);
        assert_eq!(IdxEntry::parse(&b17[..16], 17), None);
        assert_eq!(IdxEntry::parse(&b17, 15), None);
        assert!(
            IdxEntry {
                id: 1,
                offset: 8,
                size: 0
            }
            .is_live(),
            "size 0 is an empty needle"
        );
        assert!(
            !IdxEntry {
                id: 1,
                offset: 0,
                size: 5
            }
            .is_live(),
            "offset 0 is a deletion"
        );
        assert_eq!(
            IdxEntry {
                id: 1,
                offset: 8,
                size: 0
            }
            .encode_into(18, &mut v),
            Err(FormatError::EntrySize(18))
        );
        assert_eq!(v, b17, "a refused encoding leaves the buffer as it was");
    }

    #[test]
    fn entry_size_from_length() {
        assert_eq!(entry_size_by_length(16 * 5), Some(16));
        assert_eq!(entry_size_by_length(17 * 5), Some(17));
        assert_eq!(entry_size_by_length(0), None);
        assert_eq!(entry_size_by_length(272), None);
        assert_eq!(entry_size_by_length(33), None);
    }

    fn full_spec() -> NeedleSpec {
        NeedleSpec {
            cookie: 0xdead_beef,
            id: 0x0102_0304_0506_0708,
            data: b"hello, needle".to_vec(),
            flags: flags::GZIP
                | flags::HAS_NAME
                | flags::HAS_MIME
                | flags::HAS_LAST_MODIFIED
                | flags::HAS_TTL
                | flags::HAS_PAIRS,
            name: b"a.txt".to_vec(),
            mime: b"text/plain".to_vec(),
            last_modified: 0x01_2345_6789,
            ttl: [3, 2],
            pairs: br#"{"k":"v"}"#.to_vec(),
            append_at_ns: 1_700_000_000_000_000_000,
            checksum: None,
            pad_byte: 0xa5,
        }
    }

    #[test]
    fn needle_roundtrip_all_fields_v2_v3() {
        let s = full_spec();
        for v in [2u8, 3] {
            let (b, size) = encode_needle(&s, v);
            assert_eq!(b.len() as u64, needle_disk_size(size, v));
            assert_eq!(size as usize, 4 + 13 + 1 + 6 + 11 + 5 + 2 + 2 + 9);
            let n = parse_needle(&b, v).unwrap();
            assert_eq!(
                n.header,
                NeedleHeader {
                    cookie: s.cookie,
                    id: s.id,
                    size
                }
            );
            assert_eq!(n.data, &s.data[..]);
            assert_eq!(&b[n.data_start..n.data_start + n.data.len()], &s.data[..]);
            assert_eq!((n.flags, n.name, n.mime), (s.flags, &b"a.txt"[..], &b"text/plain"[..]));
            assert_eq!(
                (n.last_modified, n.ttl, n.pairs),
                (s.last_modified, [3, 2], &s.pairs[..])
            );
            assert_eq!(n.append_at_ns, if v == 3 { s.append_at_ns } else { 0 });
            assert_eq!(check_crc(n.data, n.stored_checksum), CrcCheck::Match);
            let m = n.meta(v, 4, n.stored_checksum);
            assert_eq!((m.data_size, m.range_offset, m.version, m.flags), (13, 4, v, s.flags));
        }
    }

    #[test]
    fn empty_needle_has_no_body() {
        let s = NeedleSpec {
            id: 9,
            cookie: 1,
            flags: flags::HAS_NAME,
            name: b"x".to_vec(),
            ..Default::default()
        };
        let (b, size) = encode_needle(&s, 3);
        assert_eq!(size, 0);
        assert_eq!(b.len(), 32);
        let n = parse_needle(&b, 3).unwrap();
        assert_eq!((n.data, n.flags, n.name), (&[][..], 0, &[][..]));
    }

    #[test]
    fn version_1_data_is_the_body() {
        let s = NeedleSpec {
            id: 2,
            cookie: 3,
            data: b"v1 data".to_vec(),
            ..Default::default()
        };
        let (b, size) = encode_needle(&s, 1);
        assert_eq!(size, 7);
        let n = parse_needle(&b, 1).unwrap();
        assert_eq!(n.data, b"v1 data");
        assert_eq!(n.data_start, 16);
    }

    #[test]
    fn legacy_checksum_is_accepted_and_garbage_refused() {
        let mut s = full_spec();
        s.checksum = Some(legacy_crc(crc32c(&s.data)));
        let (b, _) = encode_needle(&s, 3);
        let n = parse_needle(&b, 3).unwrap();
        assert_eq!(check_crc(n.data, n.stored_checksum), CrcCheck::LegacyMatch);
        assert_eq!(crc_from_legacy(n.stored_checksum), crc32c(&s.data));
        assert!(matches!(check_crc(n.data, 0x1234), CrcCheck::Mismatch { .. }));
        assert_eq!(
            check_crc(&[], 0x1234),
            CrcCheck::Match,
            "Go checks no CRC for empty data"
        );
    }

    #[test]
    fn flagged_field_at_body_end_is_absent_but_overrun_is_corrupt() {
        // Flags say name, but the body ends right after the flags byte: Go skips the name.
        let s = NeedleSpec {
            id: 1,
            cookie: 1,
            data: b"abc".to_vec(),
            ..Default::default()
        };
        let (mut b, size) = encode_needle(&s, 2);
        b[NEEDLE_HEADER_SIZE + size as usize - 1] = flags::HAS_NAME;
        let n = parse_needle(&b, 2).unwrap();
        assert_eq!(n.name, b"");
        // A name length running past the body is corrupt.
        let s = NeedleSpec {
            id: 1,
            cookie: 1,
            data: b"abc".to_vec(),
            flags: flags::HAS_NAME,
            name: b"nm".to_vec(),
            ..Default::default()
        };
        let (mut b, size) = encode_needle(&s, 2);
        b[NEEDLE_HEADER_SIZE + size as usize - 3] = 200;
        assert!(matches!(
            parse_needle(&b, 2),
            Err(FormatError::FieldOverrun { field: "name", .. })
        ));
        // A data size past the body.
        let (mut b, _) = encode_needle(&s, 3);
        b[NEEDLE_HEADER_SIZE..NEEDLE_HEADER_SIZE + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(
            parse_needle(&b, 3),
            Err(FormatError::FieldOverrun { field: "data", .. })
        ));
        // A body too short for its data size.
        let mut b = vec![0u8; 40];
        b[15] = 2;
        assert!(matches!(
            parse_needle(&b, 2),
            Err(FormatError::FieldOverrun { field: "data size", .. })
        ));
        // Negative size; truncated needle.
        let mut b = vec![0u8; 40];
        b[12] = 0x80;
        assert_eq!(parse_needle(&b, 2), Err(FormatError::NegativeSize(0x8000_0000)));
        let (b, _) = encode_needle(&full_spec(), 3);
        assert!(matches!(
            parse_needle(&b[..b.len() - 1], 3),
            Err(FormatError::Truncated { .. })
        ));
        assert_eq!(parse_needle(&b, 4), Err(FormatError::UnsupportedVersion(4)));
    }

    #[test]
    fn ttl_expiry_follows_go() {
        let mut s = full_spec(); // ttl 3 hours, last-modified flag set
        let (b, _) = encode_needle(&s, 3);
        let n = parse_needle(&b, 3).unwrap();
        let t = s.append_at_ns;
        assert!(!n.expired(t));
        assert!(!n.expired(t + 3 * 3600 * 1_000_000_000 - 1));
        assert!(n.expired(t + 3 * 3600 * 1_000_000_000));
        s.flags &= !flags::HAS_LAST_MODIFIED;
        let (b, _) = encode_needle(&s, 3);
        assert!(
            !parse_needle(&b, 3).unwrap().expired(u64::MAX),
            "no last-modified: never expires"
        );
        assert_eq!(ttl_minutes([5, 4]), 5 * 7 * 24 * 60);
        assert_eq!(ttl_minutes([5, 9]), 0);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400), v in 0u8..5) {
            let _ = SuperBlock::parse(&b);
            let _ = NeedleHeader::parse(&b);
            for es in [15usize, 16, 17, 18] {
                let _ = IdxEntry::parse(&b, es);
            }
            if let Ok(n) = parse_needle(&b, v) {
                prop_assert!(n.disk_size <= b.len() as u64);
                prop_assert!(n.data_start + n.data.len() <= b.len());
                prop_assert_eq!(&b[n.data_start..n.data_start + n.data.len()], n.data);
                prop_assert!(n.name.len() <= 255 && n.mime.len() <= 255);
                let _ = check_crc(n.data, n.stored_checksum);
                let _ = n.expired(u64::MAX);
                let m = n.meta(v, 0, 0);
                prop_assert!(m.encoded_len() <= ring_proto::needle::NEEDLE_META_MAX);
            }
        }

        #[test]
        fn encode_parse_roundtrip(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            fl in any::<u8>(),
            name in proptest::collection::vec(any::<u8>(), 0..300),
            mime in proptest::collection::vec(any::<u8>(), 0..40),
            pairs in proptest::collection::vec(any::<u8>(), 0..40),
            lm in 0u64..(1 << 40),
            ttl in any::<[u8; 2]>(),
            ts: u64,
            v in 1u8..=3,
        ) {
            let s = NeedleSpec { cookie: 7, id: 9, data, flags: fl, name, mime, last_modified: lm, ttl, pairs, append_at_ns: ts, checksum: None, pad_byte: 0x5a };
            let (b, size) = encode_needle(&s, v);
            prop_assert_eq!(b.len() as u64, needle_disk_size(size, v));
            let n = parse_needle(&b, v).unwrap();
            prop_assert_eq!(n.data, &s.data[..]);
            prop_assert_eq!(check_crc(n.data, n.stored_checksum), CrcCheck::Match);
            if v >= 2 && !s.data.is_empty() {
                prop_assert_eq!(n.flags, fl);
                if fl & flags::HAS_NAME != 0 { prop_assert_eq!(n.name, &s.name[..s.name.len().min(255)]); }
                if fl & flags::HAS_MIME != 0 { prop_assert_eq!(n.mime, &s.mime[..]); }
                if fl & flags::HAS_LAST_MODIFIED != 0 { prop_assert_eq!(n.last_modified, lm); }
                if fl & flags::HAS_TTL != 0 { prop_assert_eq!(n.ttl, ttl); }
                if fl & flags::HAS_PAIRS != 0 { prop_assert_eq!(n.pairs, &s.pairs[..]); }
            }
            if v == 3 { prop_assert_eq!(n.append_at_ns, ts); }
        }

        #[test]
        fn idx_entry_roundtrip(id: u64, units in 1u64..(1 << 40), size: i32, five: bool) {
            let es = if five { 17 } else { 16 };
            let units = if five { units } else { units & 0xffff_ffff };
            let e = IdxEntry { id, offset: units * 8, size };
            let mut v = Vec::new();
            e.encode_into(es, &mut v).unwrap();
            prop_assert_eq!(v.len(), es);
            prop_assert_eq!(IdxEntry::parse(&v, es), Some(e));
        }
    }
}
