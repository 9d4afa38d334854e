//! Session regions: a memfd (huge pages when the policy allows) mapped by the engine and
//! handed to the client as a file descriptor. Creation, sealing, the huge-page policy and the
//! SIGBUS guard are here; every access to the mapped bytes goes through `ring_proto`'s
//! [`RegionView`].

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use ring_proto::LiveHeader;
use ring_proto::{Consumer, Cqe, Producer, RegionLayout, RegionView, SessionState, SharedArea, SharedMemory, Sqe};

use crate::config::HugepagePolicy;

const HUGE_PAGE: usize = 2 << 20;

/// What backs a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    HugePages,
    NormalPages,
}

impl Backing {
    pub fn name(self) -> &'static str {
        match self {
            Backing::HugePages => "hugetlb-2MiB",
            Backing::NormalPages => "normal-pages",
        }
    }
}

/// Why a region could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("no huge pages available for a {bytes}-byte region ({source}); memory.hugepages = \"require\": reserve pages (echo N > /proc/sys/vm/nr_hugepages) or set hugepages = \"prefer\"")]
    HugePagesUnavailable { bytes: usize, source: std::io::Error },
    #[error("cannot create a {bytes}-byte shared memory region: {source} (check /dev/shm limits and memory)")]
    Shm { bytes: usize, source: std::io::Error },
}

pub struct Region {
    mapping: Arc<Mapping>,
    backing: Backing,
}

/// The mapping itself, shared (by `Arc`) with what hands its memory to UCX, so that it stays
/// mapped until they are done.
pub struct Mapping {
    /// Declared before `map`: fields drop in order, and the guard must leave the SIGBUS
    /// handler's table before the memory is unmapped.
    guard: crate::sigbus::Guard,
    view: RegionView,
    /// Owns the memory the view describes (unmapped on drop, after the guard left).
    _map: MmapRaw,
    fd: OwnedFd,
}

impl SharedMemory for Mapping {
    /// The whole mapping (what a session registers with UCX).
    fn shared_area(&self) -> &SharedArea {
        self.view.whole()
    }
}

impl Region {
    pub fn create(layout: RegionLayout, policy: HugepagePolicy, name: &str) -> Result<Self, RegionError> {
        if policy != HugepagePolicy::Off {
            match Self::map_new(layout, name, true) {
                Ok(r) => return Ok(r),
                Err(source) if policy == HugepagePolicy::Require => {
                    return Err(RegionError::HugePagesUnavailable {
                        bytes: layout.min_region_size,
                        source,
                    })
                }
                Err(_) => {}
            }
        }
        Self::map_new(layout, name, false).map_err(|source| RegionError::Shm {
            bytes: layout.min_region_size,
            source,
        })
    }

    /// Whether the client took pages away (punched a hole in its memfd) and the SIGBUS handler
    /// replaced the mapping with anonymous memory: the session must end, and nothing the engine
    /// reads from the region any more is the client's.
    pub fn lost(&self) -> bool {
        self.mapping.guard.lost()
    }

    fn map_new(layout: RegionLayout, name: &str, huge: bool) -> std::io::Result<Self> {
        let (flags, page) = if huge {
            (
                MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_HUGETLB | MemFdCreateFlag::MFD_ALLOW_SEALING,
                HUGE_PAGE,
            )
        } else {
            (MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING, 4096)
        };
        let size = layout.min_region_size.next_multiple_of(page);
        let cname = CString::new(name).unwrap_or_else(|_| CString::new("seaweed-ring").unwrap());
        let fd = memfd_create(&cname, flags)?;
        nix::unistd::ftruncate(&fd, size as i64)?;
        seal_size(&fd)?;
        let file = std::fs::File::from(fd);
        // populate: fault every page in now (and, for hugetlb, fail here rather than with
        // SIGBUS later if the pool runs dry), so the hot path never page-faults.
        let map = MmapOptions::new().len(size).populate().map_raw(&file)?;
        let fd = OwnedFd::from(file);
        // From here on a fault in the mapping (a client punching holes in its memfd) costs
        // the session, not the engine (see sigbus.rs).
        let guard = crate::sigbus::Guard::new(map.as_mut_ptr(), map.len()).map_err(std::io::Error::other)?;
        let base = NonNull::new(map.as_mut_ptr()).expect("a mapping is non-null");
        // Safety: `map` is a fresh shared mapping of `size` bytes, page-aligned, read-write,
        // owned by the Mapping next to the view (so it outlives it), and never borrowed as a
        // Rust slice.
        let view = unsafe { RegionView::new(base, map.len(), layout) }.map_err(std::io::Error::other)?;
        Ok(Self {
            mapping: Arc::new(Mapping {
                guard,
                view,
                _map: map,
                fd,
            }),
            backing: if huge { Backing::HugePages } else { Backing::NormalPages },
        })
    }

    /// Writes the header and marks the region ready. Call once, before the client sees the fd.
    pub fn initialize(&self, engine_pid: u32, session_id: u32, engine_epoch: u64, lease_ms: u32) {
        let view = &self.mapping.view;
        let header = view
            .layout()
            .header(view.len() as u64, engine_pid, session_id, engine_epoch, lease_ms);
        // Safety: the fd has not left the engine yet (the control thread calls this before
        // sending it), so no client has the region mapped.
        unsafe { view.write_header(header) };
        // The worker has not polled this session yet: a client's first submission must wake it.
        view.arm_first_submission();
        // SYNC POINT: Release pairs with the client's Acquire load of `state` after mapping:
        // everything written above is visible once it reads Ready.
        view.live().state.store(SessionState::Ready as u32, Ordering::Release);
    }

    /// The header's atomic fields (the only ones the engine touches once the client has the
    /// region: it may write any header byte).
    pub fn live(&self) -> LiveHeader<'_> {
        self.mapping.view.live()
    }

    /// For status and metrics (any thread, read-only): (SQ entries published and not yet
    /// taken, CQ entries posted and not yet reaped); see `RegionView::occupancy`.
    pub fn occupancy(&self) -> (u32, u32) {
        self.mapping.view.occupancy()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mapping.fd.as_fd()
    }

    pub fn layout(&self) -> &RegionLayout {
        self.mapping.view.layout()
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub fn len(&self) -> usize {
        self.mapping.view.len()
    }

    /// The buffer area (checked copies in and out).
    pub fn buf(&self) -> &SharedArea {
        self.mapping.view.buf()
    }

    /// The mapping, for handing all of it to UCX (which then keeps it mapped).
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// The engine's two ring ends. Call once per region.
    pub fn rings(&self) -> (Consumer<Sqe>, Producer<Cqe>) {
        // Safety: called once per region, by ActiveSession::new (the worker is the only SQ
        // consumer and CQ producer of its session), on a fresh region; the ring ends live in
        // the ActiveSession beside the Arc<SessionShared> that holds this Region, so the view
        // outlives them.
        unsafe { self.mapping.view.engine_rings() }
    }
}

/// Fixes the memfd's size for good, before its fd can leave the engine: the client holds the
/// fd, and a region it could shrink (ftruncate) would kill the engine with SIGBUS on its next
/// access. `F_SEAL_SEAL` stops anyone from adding or removing seals later. Both backings
/// accept these seals (shmem since Linux 3.17, hugetlbfs since 4.16); a kernel that refuses
/// them fails region creation, so an unsealed region is never handed out.
fn seal_size(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(|e| {
        std::io::Error::other(format!(
            "cannot seal the region memfd's size (F_ADD_SEALS: {e}); huge-page regions need Linux >= 4.16, others 3.17"
        ))
    })?;
    Ok(())
}

/// Whether a huge-page region can be created right now (for the start-up log line and for
/// refusing to start under `require`).
pub fn probe_hugepages(layout: RegionLayout) -> Result<(), std::io::Error> {
    Region::map_new(layout, "seaweed-ring-probe", true).map(drop)
}
