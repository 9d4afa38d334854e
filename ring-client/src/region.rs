//! The mapped session region, checked against its header before any ring is touched. Every
//! access to its bytes goes through `ring_proto`'s [`RegionView`].

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};
use ring_proto::layout::RegionHeader;
use ring_proto::region::OpenError;
use ring_proto::{Consumer, Cqe, Producer, RegionLayout, RegionView, SessionState, SharedArea, Sqe};

use crate::error::ConnectError;

pub(crate) struct Region {
    /// Declared before `_map`: the view must not outlive the mapping it describes.
    view: RegionView,
    _map: MmapRaw,
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
        let base = NonNull::new(map.as_mut_ptr()).expect("a mapping is non-null");
        // Safety: `map` is a shared read-write mapping of `len` bytes, page-aligned, owned by
        // this Region beside the view (so it outlives it), and never borrowed as a slice.
        let view = unsafe { RegionView::open(base, map.len()) }.map_err(|e| match e {
            OpenError::Layout(l) => ConnectError::Layout(l),
            OpenError::TooSmall { len } => {
                ConnectError::Protocol(format!("region of {len} bytes cannot hold a header"))
            }
        })?;
        // SYNC POINT: Acquire pairs with the engine's Release store of Ready, made after it
        // wrote everything the header describes.
        let state = view.header().state.load(Ordering::Acquire);
        if state != SessionState::Ready as u32 {
            return Err(ConnectError::NotReady { state });
        }
        Ok(Self {
            view,
            _map: map,
            _fd: fd,
        })
    }

    pub(crate) fn header(&self) -> &RegionHeader {
        self.view.header()
    }

    pub(crate) fn layout(&self) -> &RegionLayout {
        self.view.layout()
    }

    pub(crate) fn buf(&self) -> &SharedArea {
        self.view.buf()
    }

    /// The whole mapping (for tests that play a hostile client).
    pub(crate) fn whole(&self) -> &SharedArea {
        self.view.whole()
    }

    /// The client's two ring ends. Call once per region.
    pub(crate) fn rings(&self) -> (Producer<Sqe>, Consumer<Cqe>) {
        // Safety: called once, by Session::connect (a client is the only SQ producer and the
        // only CQ consumer of its session) on a fresh region; Session holds this Region in an
        // Arc next to the ring ends, so the view outlives them.
        unsafe { self.view.client_rings() }
    }
}
