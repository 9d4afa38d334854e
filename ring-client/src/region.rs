//! The mapped session region, checked against its header before any ring is touched.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};
use ring_proto::layout::{RegionHeader, RingCtl};
use ring_proto::sync::AtomicU64;
use ring_proto::{Consumer, Cqe, Producer, RawRing, RegionLayout, SessionState, Sqe};

use crate::error::ConnectError;

pub(crate) struct Region {
    map: MmapRaw,
    layout: RegionLayout,
    // Keeps the memfd open for the life of the mapping (not strictly needed once mapped, but
    // it makes the region visible in /proc/<pid>/fd for debugging).
    _fd: OwnedFd,
}

impl Region {
    pub(crate) fn map(fd: OwnedFd, region_size: u64) -> Result<Self, ConnectError> {
        let len =
            usize::try_from(region_size).map_err(|_| ConnectError::Protocol("region size overflows usize".into()))?;
        if len < ring_proto::layout::HEADER_SIZE {
            return Err(ConnectError::Protocol(format!(
                "region of {len} bytes cannot hold a header"
            )));
        }
        let file = std::fs::File::from(fd);
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(&file)
            .map_err(ConnectError::Io)?;
        let fd = OwnedFd::from(file);
        // Safety: the mapping is at least HEADER_SIZE bytes, page-aligned, and RegionHeader is
        // plain integers and atomics, valid for any bit pattern.
        let header = unsafe { &*(map.as_ptr() as *const RegionHeader) };
        let layout = RegionLayout::from_header(header, len).map_err(ConnectError::Layout)?;
        // SYNC POINT: Acquire pairs with the engine's Release store of Ready, made after it
        // wrote everything the header describes.
        let state = header.state.load(Ordering::Acquire);
        if state != SessionState::Ready as u32 {
            return Err(ConnectError::NotReady { state });
        }
        Ok(Self { map, layout, _fd: fd })
    }

    pub(crate) fn header(&self) -> &RegionHeader {
        // Safety: checked in `map`; the mapping lives as long as self.
        unsafe { &*(self.map.as_ptr() as *const RegionHeader) }
    }

    pub(crate) fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn buf_ptr(&self) -> *mut u8 {
        // Safety: buf_offset + buf_size <= len was checked by RegionLayout::from_header.
        unsafe { self.base().add(self.layout.buf_offset) }
    }

    fn raw_ring(&self, ctl_offset: usize, array_offset: usize, entries: u32) -> RawRing {
        // Safety: the offsets come from a layout validated against the mapping's length;
        // they are 8-byte aligned (128 and 128) and the mapping outlives the rings because
        // Session holds the Region in an Arc next to them.
        unsafe {
            let base = self.base();
            RawRing::new(
                NonNull::new(base.add(ctl_offset) as *mut RingCtl).expect("mapping is non-null"),
                NonNull::new(base.add(array_offset) as *mut AtomicU64).expect("mapping is non-null"),
                entries,
            )
        }
    }

    /// The client's two ring ends. Call once per region.
    pub(crate) fn rings(&self) -> (Producer<Sqe>, Consumer<Cqe>) {
        let l = &self.layout;
        let sq = self.raw_ring(l.sq_ctl_offset, l.sq_array_offset, l.sq_entries);
        let cq = self.raw_ring(l.cq_ctl_offset, l.cq_array_offset, l.cq_entries);
        // Safety: a client is the only SQ producer and the only CQ consumer of its session,
        // the rings are fresh, and each was built for its entry type.
        unsafe { (Producer::new(sq), Consumer::new(cq)) }
    }
}
