//! Submission and completion entries, their opcodes and result codes.
//!
//! In shared memory an entry is an array of 64-bit words accessed with relaxed atomics, so a
//! client rewriting an entry while the engine copies it is a defined (if useless) race: the
//! engine copies every word exactly once into an [`Sqe`], then validates only the copy.
//!
//! ```text
//! SQE, 64 bytes                               CQE, 16 bytes
//!  0 opcode u8 | 1 flags u8 | 2 ctl u8         0 flags u16 | 2 ctl u8 | 3 reserved u8
//!  3 reserved u8 | 4 peer u32                  4 result i32 (>= 0 ok, < 0 ResultCode)
//!  8 user_data u64                             8 user_data u64
//! 16 buf_offset u64 (into the buffer area)
//! 24 buf_len u32 | 28 aux u32
//! 32 args [u64; 4]
//! ```
//!
//! Byte 2 of word 0 is the ring's control byte ([`CTL_PHASE`]) in both entries:
//! the ring code owns it (`ring.rs`), the operations never look at it. Word 0 is the entry's
//! control word: the producer stores it last, and storing it is what publishes the entry.

use crate::sync::{AtomicU64, Ordering};

/// Shift of the control byte within word 0 of every entry.
pub const CTL_SHIFT: u32 = 16;
/// Control bit: the lap parity of the index the entry was published at (1 on the first lap
/// of the ring, 0 on the second, ...). A slot holds a published entry for the consumer's
/// index exactly when this bit matches that index's lap parity (SPEC.md §5).
pub const CTL_PHASE: u64 = 1 << CTL_SHIFT;
/// The whole control byte.
pub const CTL_MASK: u64 = 0xff << CTL_SHIFT;

/// The wire form of an entry: `WORDS` native-endian u64 words, word 0 carrying the control
/// byte at [`CTL_SHIFT`].
pub trait Entry: Copy {
    const WORDS: usize;
    type Words: AsRef<[u64]> + AsMut<[u64]> + Default;
    fn to_words(&self) -> Self::Words;
    fn from_words(w: &Self::Words) -> Self;
}

/// One submission entry, as the client wrote it (unvalidated when the engine holds it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    /// The ring's control byte (`CTL_*`): set by the ring code, ignored by validation.
    pub ctl: u8,
    pub reserved: u8,
    /// Peer handle for remote operations; 0 for local ones.
    pub peer: u32,
    /// Returned untouched in the completion; the client's way to match the two.
    pub user_data: u64,
    /// Offset into the session's buffer area (not into the region).
    pub buf_offset: u64,
    pub buf_len: u32,
    /// Operation-specific 32-bit argument.
    pub aux: u32,
    /// Operation-specific arguments.
    pub args: [u64; 4],
}

/// One completion entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cqe {
    pub user_data: u64,
    /// Non-negative: success (operation-specific, e.g. bytes). Negative: a [`ResultCode`].
    pub result: i32,
    pub flags: u16,
    /// The ring's control byte (`CTL_*`): set by the ring code.
    pub ctl: u8,
    pub reserved: u8,
}

impl Cqe {
    /// A completion with no flags.
    pub fn new(user_data: u64, result: i32) -> Self {
        Self {
            user_data,
            result,
            ..Self::default()
        }
    }
}

impl Entry for Sqe {
    const WORDS: usize = 8;
    type Words = [u64; 8];

    fn to_words(&self) -> [u64; 8] {
        [
            self.opcode as u64
                | (self.flags as u64) << 8
                | (self.ctl as u64) << CTL_SHIFT
                | (self.reserved as u64) << 24
                | (self.peer as u64) << 32,
            self.user_data,
            self.buf_offset,
            self.buf_len as u64 | (self.aux as u64) << 32,
            self.args[0],
            self.args[1],
            self.args[2],
            self.args[3],
        ]
    }

    fn from_words(w: &[u64; 8]) -> Self {
        Self {
            opcode: w[0] as u8,
            flags: (w[0] >> 8) as u8,
            ctl: (w[0] >> CTL_SHIFT) as u8,
            reserved: (w[0] >> 24) as u8,
            peer: (w[0] >> 32) as u32,
            user_data: w[1],
            buf_offset: w[2],
            buf_len: w[3] as u32,
            aux: (w[3] >> 32) as u32,
            args: [w[4], w[5], w[6], w[7]],
        }
    }
}

impl Entry for Cqe {
    const WORDS: usize = 2;
    type Words = [u64; 2];

    fn to_words(&self) -> [u64; 2] {
        [
            self.flags as u64
                | (self.ctl as u64) << CTL_SHIFT
                | (self.reserved as u64) << 24
                | (self.result as u32 as u64) << 32,
            self.user_data,
        ]
    }

    fn from_words(w: &[u64; 2]) -> Self {
        Self {
            user_data: w[1],
            result: (w[0] >> 32) as u32 as i32,
            flags: w[0] as u16,
            ctl: (w[0] >> CTL_SHIFT) as u8,
            reserved: (w[0] >> 24) as u8,
        }
    }
}

/// Copies an entry out of shared words, reading each word exactly once (Relaxed: the
/// Acquire load of word 0 that found the entry published is what orders these loads after the
/// producer's writes).
pub(crate) fn load_entry<E: Entry>(slot: &[AtomicU64]) -> E {
    let mut w = E::Words::default();
    for (dst, src) in w.as_mut().iter_mut().zip(slot) {
        *dst = src.load(Ordering::Relaxed);
    }
    E::from_words(&w)
}

/// Writes words 1.. of an entry into shared words (Relaxed: the later Release store of
/// word 0 publishes them). Word 0 is the caller's to store.
pub(crate) fn store_entry_body(slot: &[AtomicU64], words: &[u64]) {
    for (dst, src) in slot.iter().zip(words).skip(1) {
        dst.store(*src, Ordering::Relaxed);
    }
}

/// Operation codes. Values never change once released; new operations take new numbers.
pub mod opcode {
    /// Completes at once with result 0: the round trip with no work, for latency.
    pub const NOP: u8 = 1;
    /// Fills `buf_len` bytes at `buf_offset` with the byte `aux & 0xff`; result = `buf_len`.
    /// Exercises the bounds check and the engine writing into the client's buffers.
    pub const FILL: u8 = 2;
    /// Request-response with a peer engine over UCX: sends `buf_len` bytes at `buf_offset`
    /// to service `aux` of the engine named by `peer` (a handle from `ConnectPeer`) and
    /// receives its response into `args[1]` bytes at buffer offset `args[0]`; result = the
    /// response length. `flags`, `reserved`, `args[2..]` must be 0.
    pub const SEND: u8 = 3;
    /// Exports `buf_len` bytes at `buf_offset` to peer engines with permissions `aux`
    /// (1 read, 2 write, 3 both); the engine writes the export's ticket
    /// ([`crate::entry::ExportTicket`]: random 64-bit id and 64-bit key) into the buffer area
    /// at `args[0]` (16 bytes, 8-aligned) before completing with result 0. Give both to the
    /// peer's client (e.g. in a SEND); the export ends with UNEXPORT or the session.
    pub const EXPORT: u8 = 4;
    /// Ends export `args[0]` (its id) of this session; result 0. Peers that fetched it are told
    /// to stop using it before its memory is released.
    pub const UNEXPORT: u8 = 5;
    /// One-sided read from a peer's export: `buf_len` bytes from offset `args[2]` of export
    /// (`args[0]` id, `args[1]` key, both 64-bit) at engine `peer`, into `buf_offset`;
    /// result = `buf_len`.
    pub const READ: u8 = 6;
    /// One-sided write to a peer's export, the mirror of READ (from `buf_offset`).
    pub const WRITE: u8 = 7;
    /// Reads a SeaweedFS needle from the volume server whose engine is `peer`: volume `aux`,
    /// needle id `args[0]`, cookie `args[1]` (low 32 bits); bits 32..47 of `args[1]` are the
    /// length of a read JWT the client wrote at the start of the buffer (0: none; at most
    /// [`MAX_NEEDLE_JWT_LEN`]), which the reply overwrites. With flag
    /// [`read_needle_flags::RANGE`], only `args[3]` bytes from data offset `args[2]` (clamped
    /// to the end of the data); without it `args[2..]` must be 0 and the whole data is read.
    /// The buffer at `buf_offset` receives a [`crate::needle::NeedleMeta`] in its first
    /// [`crate::needle::NEEDLE_META_LEN`] bytes and the data after them; result = data bytes.
    pub const READ_NEEDLE: u8 = 8;
}

/// Longest read JWT a `READ_NEEDLE` may carry (bits 32..47 of `args[1]`): it sits in the
/// metadata area at the start of the buffer, which holds [`crate::needle::NEEDLE_META_LEN`]
/// bytes. SeaweedFS's read tokens are about 150 bytes.
pub const MAX_NEEDLE_JWT_LEN: usize = 1024;
const _: () = assert!(MAX_NEEDLE_JWT_LEN <= crate::needle::NEEDLE_META_LEN);

/// SQE `flags` of `READ_NEEDLE`.
pub mod read_needle_flags {
    /// `args[2]` / `args[3]` are a byte range of the needle's data.
    pub const RANGE: u8 = 1;
    pub const ALL: u8 = RANGE;
}

/// Services a peer engine answers `SEND` requests for (the SQE's `aux`).
pub mod service {
    /// Returns the request payload as the response (for tests and latency measurement).
    pub const ECHO: u32 = 1;
}

/// Completion flags (CQE `flags`). None are defined in layout versions 1 to 3.
pub mod cqe_flags {}

/// Length of the ticket EXPORT writes into the client's buffer area.
pub const EXPORT_TICKET_LEN: usize = 16;

/// What EXPORT writes at buffer offset `args[0]` (little-endian): `0 id u64 | 8 key u64`.
/// Both are drawn from the operating system's random source for every export, so they are
/// unique across engine restarts and cannot be guessed; the id is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportTicket {
    pub id: u64,
    pub key: u64,
}

impl ExportTicket {
    pub fn encode(&self) -> [u8; EXPORT_TICKET_LEN] {
        let mut b = [0u8; EXPORT_TICKET_LEN];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..16].copy_from_slice(&self.key.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; EXPORT_TICKET_LEN]) -> Self {
        let (id, key) = b.split_at(8);
        Self {
            id: u64::from_le_bytes(id.try_into().expect("8 bytes")),
            key: u64::from_le_bytes(key.try_into().expect("8 bytes")),
        }
    }
}

/// Why a request failed: the negative `result` of its completion.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCode {
    /// The opcode is not one this engine knows.
    UnknownOpcode = -1,
    /// A reserved field, flag bit or argument the operation does not use is non-zero.
    InvalidEntry = -2,
    /// The buffer range is not inside the session's buffer area.
    OutOfBounds = -3,
    /// The engine is shutting down and did not execute this request.
    ShuttingDown = -4,
    /// The engine hit an internal error executing this request.
    Internal = -5,
    /// `peer` is not a handle this engine gave out.
    NoSuchPeer = -6,
    /// The peer engine could not be reached, or the connection to it failed (peer died,
    /// connection reset) while the request was in flight.
    PeerFailed = -7,
    /// No response within the engine's request timeout.
    TimedOut = -8,
    /// The response is larger than the response buffer the request named.
    ResponseTooLarge = -9,
    /// The peer engine does not offer the requested service.
    UnknownService = -10,
    /// No export with this id and key (never was, wrong key, or ended).
    NotExported = -11,
    /// The export does not allow this operation (e.g. WRITE to a read-only export).
    PermissionDenied = -12,
    /// READ_NEEDLE: the serving engine has no volume with this id.
    NoSuchVolume = -13,
    /// READ_NEEDLE: the volume has no needle with this id (never written).
    NoSuchNeedle = -14,
    /// READ_NEEDLE: the needle was deleted.
    NeedleDeleted = -15,
    /// READ_NEEDLE: the cookie does not match the needle's (no bytes are sent).
    CookieMismatch = -16,
    /// READ_NEEDLE: the stored needle failed its checks (CRC-32C, header) — a corrupt file.
    Corrupt = -17,
    /// READ_NEEDLE: the range starts beyond the end of the needle's data.
    RangeNotSatisfiable = -18,
    /// READ/WRITE: this session failed too many export lookups (wrong id or key) lately; the
    /// request was refused without asking the peer. Retry later (SPEC.md §14). READ_NEEDLE:
    /// the serving engine's volume I/O queue is full (too many reads waiting for its disks).
    Throttled = -19,
    /// READ_NEEDLE: the serving engine checks read JWTs (SeaweedFS `[jwt.signing.read]`)
    /// and the request carried none (the volume server answers 401).
    JwtMissing = -20,
    /// READ_NEEDLE: the JWT does not verify with the read key (bad signature, not HMAC,
    /// malformed, or not valid yet).
    JwtInvalid = -21,
    /// READ_NEEDLE: the JWT's `exp` has passed.
    JwtExpired = -22,
    /// READ_NEEDLE: the JWT's `fid` claim names another file.
    JwtWrongFile = -23,
}

impl ResultCode {
    pub const ALL: [ResultCode; 23] = [
        Self::UnknownOpcode,
        Self::InvalidEntry,
        Self::OutOfBounds,
        Self::ShuttingDown,
        Self::Internal,
        Self::NoSuchPeer,
        Self::PeerFailed,
        Self::TimedOut,
        Self::ResponseTooLarge,
        Self::UnknownService,
        Self::NotExported,
        Self::PermissionDenied,
        Self::NoSuchVolume,
        Self::NoSuchNeedle,
        Self::NeedleDeleted,
        Self::CookieMismatch,
        Self::Corrupt,
        Self::RangeNotSatisfiable,
        Self::Throttled,
        Self::JwtMissing,
        Self::JwtInvalid,
        Self::JwtExpired,
        Self::JwtWrongFile,
    ];

    pub fn from_result(result: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i32 == result)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownOpcode => "unknown-opcode",
            Self::InvalidEntry => "invalid-entry",
            Self::OutOfBounds => "out-of-bounds",
            Self::ShuttingDown => "shutting-down",
            Self::Internal => "internal",
            Self::NoSuchPeer => "no-such-peer",
            Self::PeerFailed => "peer-failed",
            Self::TimedOut => "timed-out",
            Self::ResponseTooLarge => "response-too-large",
            Self::UnknownService => "unknown-service",
            Self::NotExported => "not-exported",
            Self::PermissionDenied => "permission-denied",
            Self::NoSuchVolume => "no-such-volume",
            Self::NoSuchNeedle => "no-such-needle",
            Self::NeedleDeleted => "needle-deleted",
            Self::CookieMismatch => "cookie-mismatch",
            Self::Corrupt => "corrupt",
            Self::RangeNotSatisfiable => "range-not-satisfiable",
            Self::Throttled => "throttled",
            Self::JwtMissing => "jwt-missing",
            Self::JwtInvalid => "jwt-invalid",
            Self::JwtExpired => "jwt-expired",
            Self::JwtWrongFile => "jwt-wrong-file",
        }
    }
}

impl core::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.name(), *self as i32)
    }
}

impl std::error::Error for ResultCode {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sqe_words_roundtrip(words in any::<[u64; 8]>()) {
            let e = Sqe::from_words(&words);
            prop_assert_eq!(e.to_words(), words);
        }

        #[test]
        fn cqe_words_roundtrip(words in any::<[u64; 2]>()) {
            prop_assert_eq!(Cqe::from_words(&words).to_words(), words);
        }
    }

    #[test]
    fn sqe_byte_positions() {
        let e = Sqe {
            opcode: 0x11,
            flags: 0x22,
            ctl: 0x33,
            reserved: 0x44,
            peer: 0x5566_7788,
            user_data: 9,
            buf_offset: 10,
            buf_len: 11,
            aux: 12,
            args: [13, 14, 15, 16],
        };
        let bytes: Vec<u8> = e.to_words().iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(bytes[0], 0x11);
        assert_eq!(bytes[1], 0x22);
        assert_eq!(bytes[2], 0x33);
        assert_eq!(bytes[3], 0x44);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 0x5566_7788);
        assert_eq!(bytes[8], 9);
        assert_eq!(bytes[16], 10);
        assert_eq!(bytes[24], 11);
        assert_eq!(bytes[28], 12);
        assert_eq!(bytes[32], 13);
        assert_eq!(bytes[56], 16);
    }

    #[test]
    fn cqe_byte_positions() {
        let c = Cqe {
            user_data: 0x0102_0304_0506_0708,
            result: -3,
            flags: 0x1122,
            ctl: 0x33,
            reserved: 0x44,
        };
        let bytes: Vec<u8> = c.to_words().iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), 0x1122);
        assert_eq!(bytes[2], 0x33);
        assert_eq!(bytes[3], 0x44);
        assert_eq!(i32::from_le_bytes(bytes[4..8].try_into().unwrap()), -3);
        assert_eq!(
            u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            0x0102_0304_0506_0708
        );
    }

    #[test]
    fn negative_result_survives() {
        let c = Cqe {
            flags: 7,
            ..Cqe::new(1, ResultCode::OutOfBounds as i32)
        };
        let back = Cqe::from_words(&c.to_words());
        assert_eq!(back, c);
        assert_eq!(ResultCode::from_result(back.result), Some(ResultCode::OutOfBounds));
    }
}
