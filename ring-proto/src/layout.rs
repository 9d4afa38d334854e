//! Byte layout of a session region. SPEC.md draws the same picture for other languages;
//! `layout.json` (checked by a test against these types) is its machine-readable form.
//!
//! ```text
//! offset 0      RegionHeader        256 B   engine-written, read-only for the client
//!                                           (except `client_heartbeat`)
//! offset 256    RingCtl (SQ)        384 B   head | reserved | flags+invalid, 128 B each
//! offset 640    RingCtl (CQ)        384 B   head | reserved | flags+invalid, 128 B each
//! offset 1024   SQ entries          sq_entries * 64 B
//! (128-aligned) CQ entries          cq_entries * 16 B
//! (4096-aligned) buffer area        buf_size B   requests point into it by offset
//! ```
//!
//! All integers are native-endian, and only little-endian hosts are supported: a region is
//! shared between processes of one host, never sent over a network.

use crate::sync::{AtomicU32, AtomicU64};

#[cfg(not(target_endian = "little"))]
compile_error!("the ring layout is defined for little-endian hosts only");

/// `b"SWRING\0\x01"` read as a little-endian u64: identifies a region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SWRING\0\x01");
/// Bumped on any incompatible change of this file or of the entry formats.
pub const LAYOUT_VERSION: u32 = 3;

pub const HEADER_SIZE: usize = 256;
pub const RING_CTL_SIZE: usize = 384;
pub const SQE_SIZE: usize = 64;
pub const CQE_SIZE: usize = 16;
/// Every index lives on its own line of this size (two 64-byte lines, because adjacent-line
/// prefetchers on x86 pull pairs of lines and would recreate false sharing at 64).
pub const INDEX_PAD: usize = 128;
/// The buffer area starts on a page boundary so it can be registered and DMA'd on its own.
pub const BUF_ALIGN: usize = 4096;

pub const MAX_RING_ENTRIES: u32 = 1 << 15;

/// Session lifecycle, stored in [`RegionHeader::state`] by the engine.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Header being written; the client must not touch the rings.
    Init = 0,
    /// Stored last after everything else is initialised: rings may be used.
    Ready = 1,
    /// The engine is shutting down: it completes what is already in the SQ, takes nothing new
    /// after its final pass, then stores `Closed`.
    Draining = 2,
    /// The engine will never consume or complete anything again. Entries at or past the SQ
    /// head loaded after seeing this state were never accepted: fail them locally.
    Closed = 3,
    /// The engine cut the session off because the client broke the protocol
    /// (see [`RegionHeader::close_reason`]). Treated like `Closed`.
    Broken = 4,
}

impl SessionState {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Init,
            1 => Self::Ready,
            2 => Self::Draining,
            3 => Self::Closed,
            4 => Self::Broken,
            _ => return None,
        })
    }

    /// True once the engine will never complete another entry of this session.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Closed | Self::Broken)
    }
}

/// Why the engine ended a session, stored in [`RegionHeader::close_reason`] before the
/// terminal state.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    None = 0,
    /// The client asked to close.
    ClientClosed = 1,
    /// The engine is shutting down.
    EngineShutdown = 2,
    /// The SQ tail moved backwards or ahead by more than the ring size. Layout 2 only:
    /// from layout 3 the SQ has no shared tail (entries carry their own phase).
    BadSqTail = 3,
    /// The CQ head moved backwards or past the engine's CQ tail.
    BadCqHead = 4,
    /// No sign of life from the client for longer than the lease.
    LeaseExpired = 5,
    /// Completions could not be delivered before the drain timeout (client stopped reaping).
    DrainTimeout = 6,
}

impl CloseReason {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::ClientClosed,
            2 => Self::EngineShutdown,
            3 => Self::BadSqTail,
            4 => Self::BadCqHead,
            5 => Self::LeaseExpired,
            6 => Self::DrainTimeout,
            _ => return None,
        })
    }
}

/// The first 256 bytes of every region. All plain fields are written by the engine before
/// `state` becomes `Ready` and never change after; the engine never reads them back
/// (it keeps its own [`RegionLayout`]), so a client scribbling on them only hurts itself.
#[repr(C)]
pub struct RegionHeader {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub region_size: u64,
    pub sq_ctl_offset: u32,
    pub sq_entries: u32,
    pub sq_array_offset: u32,
    pub cq_ctl_offset: u32,
    pub cq_entries: u32,
    pub cq_array_offset: u32,
    pub buf_offset: u64,
    pub buf_size: u64,
    pub engine_pid: u32,
    pub session_id: u32,
    /// Engine start time (unix nanoseconds): tells one engine incarnation from the next.
    pub engine_epoch: u64,
    /// The client must show a sign of life at least this often (0: no lease).
    pub lease_ms: u32,
    pub sqe_size: u16,
    pub cqe_size: u16,
    /// [`SessionState`]. SYNC POINT: the engine stores it with Release after everything it
    /// describes; clients load it with Acquire.
    pub state: AtomicU32,
    /// [`CloseReason`], stored (Relaxed) before the terminal `state` store that publishes it.
    pub close_reason: AtomicU32,
    /// CLOCK_MONOTONIC milliseconds, refreshed by the engine about once a second while it
    /// lives (Relaxed: a liveness hint, not a synchronisation point).
    pub engine_heartbeat: AtomicU64,
    /// Any change of this value counts as a sign of life from the client (Relaxed).
    pub client_heartbeat: AtomicU64,
    pub _reserved: [u8; 144],
}

/// One 128-byte line holding a single index.
#[repr(C, align(128))]
pub struct PaddedIndex {
    pub value: AtomicU32,
    _pad: [u8; INDEX_PAD - 4],
}

/// Control block of one ring (SQ or CQ). The roles are the same for both rings, only the
/// sides swap: the client produces SQ entries and consumes CQ entries; the engine the reverse.
/// Entries are published by their own control word (`ring.rs`), so there is no shared tail.
#[repr(C)]
pub struct RingCtl {
    /// Next entry the consumer will read. Written only by the consumer (Release);
    /// the producer loads it with Acquire before reusing a slot.
    pub head: PaddedIndex,
    /// Zero. (The producer's tail index until layout 2; its line stays so that `flags` and
    /// `invalid` keep their offsets.)
    pub reserved: PaddedIndex,
    /// Consumer-owned flags, [`RING_NEED_WAKEUP`]: the consumer is asleep and the producer must
    /// signal its doorbell after publishing. See `Consumer::prepare_sleep` and
    /// `Producer::publish` in `ring.rs` for the fences.
    pub flags: AtomicU32,
    /// Engine-owned counter: on the SQ, entries rejected as invalid (each still got an error
    /// completion); on the CQ, completions dropped (the admission rule keeps it at 0).
    pub invalid: AtomicU32,
    _pad: [u8; INDEX_PAD - 8],
}

/// The consumer of this ring sleeps; the producer must signal after publishing.
pub const RING_NEED_WAKEUP: u32 = 1 << 0;

impl PaddedIndex {
    pub fn new(v: u32) -> Self {
        Self {
            value: AtomicU32::new(v),
            _pad: [0; INDEX_PAD - 4],
        }
    }
}

impl RingCtl {
    /// A control block on the heap, for tests and loom models.
    pub fn new() -> Self {
        Self {
            head: PaddedIndex::new(0),
            reserved: PaddedIndex::new(0),
            flags: AtomicU32::new(0),
            invalid: AtomicU32::new(0),
            _pad: [0; INDEX_PAD - 8],
        }
    }
}

impl Default for RingCtl {
    fn default() -> Self {
        Self::new()
    }
}

// Compile-time layout checks: any change here is a LAYOUT_VERSION bump and a SPEC.md edit.
#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RegionHeader>() == HEADER_SIZE);
    assert!(offset_of!(RegionHeader, magic) == 0);
    assert!(offset_of!(RegionHeader, version) == 8);
    assert!(offset_of!(RegionHeader, header_size) == 12);
    assert!(offset_of!(RegionHeader, region_size) == 16);
    assert!(offset_of!(RegionHeader, sq_ctl_offset) == 24);
    assert!(offset_of!(RegionHeader, sq_entries) == 28);
    assert!(offset_of!(RegionHeader, sq_array_offset) == 32);
    assert!(offset_of!(RegionHeader, cq_ctl_offset) == 36);
    assert!(offset_of!(RegionHeader, cq_entries) == 40);
    assert!(offset_of!(RegionHeader, cq_array_offset) == 44);
    assert!(offset_of!(RegionHeader, buf_offset) == 48);
    assert!(offset_of!(RegionHeader, buf_size) == 56);
    assert!(offset_of!(RegionHeader, engine_pid) == 64);
    assert!(offset_of!(RegionHeader, session_id) == 68);
    assert!(offset_of!(RegionHeader, engine_epoch) == 72);
    assert!(offset_of!(RegionHeader, lease_ms) == 80);
    assert!(offset_of!(RegionHeader, sqe_size) == 84);
    assert!(offset_of!(RegionHeader, cqe_size) == 86);
    assert!(offset_of!(RegionHeader, state) == 88);
    assert!(offset_of!(RegionHeader, close_reason) == 92);
    assert!(offset_of!(RegionHeader, engine_heartbeat) == 96);
    assert!(offset_of!(RegionHeader, client_heartbeat) == 104);

    assert!(size_of::<PaddedIndex>() == INDEX_PAD && align_of::<PaddedIndex>() == INDEX_PAD);
    assert!(size_of::<RingCtl>() == RING_CTL_SIZE);
    assert!(offset_of!(RingCtl, head) == 0);
    assert!(offset_of!(RingCtl, reserved) == 128);
    assert!(offset_of!(RingCtl, flags) == 256);
    assert!(offset_of!(RingCtl, invalid) == 260);
};

/// Where everything sits in one region. Computed the same way by the engine (to build a
/// region) and by clients (to check the header they were given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub sq_ctl_offset: usize,
    pub cq_ctl_offset: usize,
    pub sq_array_offset: usize,
    pub cq_array_offset: usize,
    pub buf_offset: usize,
    pub buf_size: usize,
    /// Bytes the layout needs (the mapping may be larger, e.g. rounded to a huge page).
    pub min_region_size: usize,
}

/// Why a set of sizes, or a header, does not describe a usable region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    RingSize {
        ring: &'static str,
        entries: u32,
    },
    BufferSize(u64),
    BadMagic(u64),
    VersionMismatch {
        found: u32,
        expected: u32,
    },
    FieldMismatch {
        field: &'static str,
        found: u64,
        expected: u64,
    },
    RegionTooSmall {
        region_size: u64,
        needed: u64,
    },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::RingSize { ring, entries } => write!(
                f,
                "{ring} size {entries} is not a power of two between 2 and {MAX_RING_ENTRIES}"
            ),
            Self::BufferSize(n) => write!(f, "buffer size {n} is not a multiple of {BUF_ALIGN} (or over 1 TiB)"),
            Self::BadMagic(m) => write!(f, "region magic {m:#x} is not {MAGIC:#x}: not a ring region"),
            Self::VersionMismatch { found, expected } => {
                write!(f, "region layout version {found}, this side speaks {expected}")
            }
            Self::FieldMismatch { field, found, expected } => {
                write!(f, "header field {field} is {found}, the layout needs {expected}")
            }
            Self::RegionTooSmall { region_size, needed } => {
                write!(
                    f,
                    "region of {region_size} bytes is smaller than its layout ({needed} bytes)"
                )
            }
        }
    }
}

impl std::error::Error for LayoutError {}

const fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

fn check_ring(ring: &'static str, entries: u32) -> Result<(), LayoutError> {
    if !(2..=MAX_RING_ENTRIES).contains(&entries) || !entries.is_power_of_two() {
        return Err(LayoutError::RingSize { ring, entries });
    }
    Ok(())
}

impl RegionLayout {
    pub fn new(sq_entries: u32, cq_entries: u32, buf_size: u64) -> Result<Self, LayoutError> {
        check_ring("sq-entries", sq_entries)?;
        check_ring("cq-entries", cq_entries)?;
        if !buf_size.is_multiple_of(BUF_ALIGN as u64) || buf_size > 1 << 40 {
            return Err(LayoutError::BufferSize(buf_size));
        }
        let sq_ctl_offset = HEADER_SIZE;
        let cq_ctl_offset = sq_ctl_offset + RING_CTL_SIZE;
        let sq_array_offset = cq_ctl_offset + RING_CTL_SIZE;
        let cq_array_offset = align_up(sq_array_offset + sq_entries as usize * SQE_SIZE, INDEX_PAD);
        let buf_offset = align_up(cq_array_offset + cq_entries as usize * CQE_SIZE, BUF_ALIGN);
        let buf_size = buf_size as usize;
        Ok(Self {
            sq_entries,
            cq_entries,
            sq_ctl_offset,
            cq_ctl_offset,
            sq_array_offset,
            cq_array_offset,
            buf_offset,
            buf_size,
            min_region_size: buf_offset + buf_size,
        })
    }

    /// Checks a header the engine wrote and returns the layout it describes.
    pub fn from_header(h: &RegionHeader, mapped_len: usize) -> Result<Self, LayoutError> {
        if h.magic != MAGIC {
            return Err(LayoutError::BadMagic(h.magic));
        }
        if h.version != LAYOUT_VERSION {
            return Err(LayoutError::VersionMismatch {
                found: h.version,
                expected: LAYOUT_VERSION,
            });
        }
        let l = Self::new(h.sq_entries, h.cq_entries, h.buf_size)?;
        let checks: [(&'static str, u64, u64); 8] = [
            ("header_size", h.header_size as u64, HEADER_SIZE as u64),
            ("sq_ctl_offset", h.sq_ctl_offset as u64, l.sq_ctl_offset as u64),
            ("cq_ctl_offset", h.cq_ctl_offset as u64, l.cq_ctl_offset as u64),
            ("sq_array_offset", h.sq_array_offset as u64, l.sq_array_offset as u64),
            ("cq_array_offset", h.cq_array_offset as u64, l.cq_array_offset as u64),
            ("buf_offset", h.buf_offset, l.buf_offset as u64),
            ("sqe_size", h.sqe_size as u64, SQE_SIZE as u64),
            ("cqe_size", h.cqe_size as u64, CQE_SIZE as u64),
        ];
        for (field, found, expected) in checks {
            if found != expected {
                return Err(LayoutError::FieldMismatch { field, found, expected });
            }
        }
        let needed = l.min_region_size as u64;
        if h.region_size < needed || (mapped_len as u64) < h.region_size {
            return Err(LayoutError::RegionTooSmall {
                region_size: h.region_size.min(mapped_len as u64),
                needed,
            });
        }
        Ok(l)
    }

    /// Fills a zeroed header for this layout. `state` stays `Init`: the caller stores `Ready`
    /// (Release) once the rest of the region is set up.
    pub fn header(
        &self,
        region_size: u64,
        engine_pid: u32,
        session_id: u32,
        engine_epoch: u64,
        lease_ms: u32,
    ) -> RegionHeader {
        RegionHeader {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            region_size,
            sq_ctl_offset: self.sq_ctl_offset as u32,
            sq_entries: self.sq_entries,
            sq_array_offset: self.sq_array_offset as u32,
            cq_ctl_offset: self.cq_ctl_offset as u32,
            cq_entries: self.cq_entries,
            cq_array_offset: self.cq_array_offset as u32,
            buf_offset: self.buf_offset as u64,
            buf_size: self.buf_size as u64,
            engine_pid,
            session_id,
            engine_epoch,
            lease_ms,
            sqe_size: SQE_SIZE as u16,
            cqe_size: CQE_SIZE as u16,
            state: AtomicU32::new(SessionState::Init as u32),
            close_reason: AtomicU32::new(CloseReason::None as u32),
            engine_heartbeat: AtomicU64::new(0),
            client_heartbeat: AtomicU64::new(0),
            _reserved: [0; 144],
        }
    }

    /// Whether `[offset, offset+len)` lies inside the buffer area (offsets are relative to
    /// the buffer area's start). Overflow-safe: this is the bounds check for every request.
    pub fn buf_range_ok(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.buf_size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_are_aligned() {
        let l = RegionLayout::new(256, 512, 1 << 20).unwrap();
        assert_eq!(l.sq_ctl_offset, 256);
        assert_eq!(l.cq_ctl_offset, 640);
        assert_eq!(l.sq_array_offset, 1024);
        assert_eq!(l.cq_array_offset, 1024 + 256 * 64);
        assert_eq!(l.buf_offset % BUF_ALIGN, 0);
        assert!(l.buf_offset >= l.cq_array_offset + 512 * 16);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(RegionLayout::new(3, 4, 4096).is_err());
        assert!(RegionLayout::new(0, 4, 4096).is_err());
        assert!(RegionLayout::new(4, 1 << 16, 4096).is_err());
        assert!(RegionLayout::new(4, 4, 100).is_err());
    }

    #[test]
    fn bounds_check_is_overflow_safe() {
        let l = RegionLayout::new(4, 4, 8192).unwrap();
        assert!(l.buf_range_ok(0, 8192));
        assert!(l.buf_range_ok(8192, 0));
        assert!(!l.buf_range_ok(8192, 1));
        assert!(!l.buf_range_ok(1, u64::MAX));
        assert!(!l.buf_range_ok(u64::MAX, 2));
    }

    #[test]
    fn header_roundtrip() {
        let l = RegionLayout::new(8, 16, 8192).unwrap();
        let h = l.header(l.min_region_size as u64, 1, 2, 3, 4);
        assert_eq!(RegionLayout::from_header(&h, l.min_region_size).unwrap(), l);
        let mut bad = l.header(l.min_region_size as u64, 1, 2, 3, 4);
        bad.version = 99;
        assert!(matches!(
            RegionLayout::from_header(&bad, l.min_region_size),
            Err(LayoutError::VersionMismatch { .. })
        ));
        let mut bad = l.header(l.min_region_size as u64, 1, 2, 3, 4);
        bad.buf_offset += 8;
        assert!(matches!(
            RegionLayout::from_header(&bad, l.min_region_size),
            Err(LayoutError::FieldMismatch {
                field: "buf_offset",
                ..
            })
        ));
        assert!(RegionLayout::from_header(&h, l.min_region_size - 1).is_err());
    }
}
