//! Session regions: a memfd (huge pages when the policy allows) mapped by the engine and
//! handed to the client as a file descriptor.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use ring_proto::layout::{RegionHeader, RingCtl, RING_NEED_WAKEUP};
use ring_proto::sync::AtomicU64;
use ring_proto::{Consumer, Cqe, Producer, RawRing, RegionLayout, SessionState, Sqe};

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
    /// Declared before `map`: fields drop in order, and the guard must leave the SIGBUS
    /// handler's table before the memory is unmapped.
    guard: crate::sigbus::Guard,
    map: MmapRaw,
    fd: OwnedFd,
    layout: RegionLayout,
    backing: Backing,
}

// Safety: the mapping is only accessed through atomics (rings, header) or, for the buffer
// area, by the single worker that owns the session; the raw pointer inside MmapRaw is what
// makes it !Sync by default.
unsafe impl Sync for Region {}
// Safety: as above; nothing is tied to the creating thread.
unsafe impl Send for Region {}

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
        self.guard.lost()
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
        let region = Self {
            guard,
            map,
            fd,
            layout,
            backing: if huge { Backing::HugePages } else { Backing::NormalPages },
        };
        Ok(region)
    }

    /// Writes the header and marks the region ready. Call once, before the client sees the fd.
    pub fn initialize(&self, engine_pid: u32, session_id: u32, engine_epoch: u64, lease_ms: u32) {
        let header = self
            .layout
            .header(self.map.len() as u64, engine_pid, session_id, engine_epoch, lease_ms);
        // Safety: the mapping is fresh (zero-filled), at least HEADER_SIZE bytes, page-aligned,
        // and not yet shared with any client.
        unsafe { std::ptr::write(self.map.as_mut_ptr() as *mut RegionHeader, header) };
        // The worker has not polled this session yet: a client's first submission must wake it.
        self.sq_ctl().flags.store(RING_NEED_WAKEUP, Ordering::Relaxed);
        // SYNC POINT: Release pairs with the client's Acquire load of `state` after mapping:
        // everything written above is visible once it reads Ready.
        self.header().state.store(SessionState::Ready as u32, Ordering::Release);
    }

    pub fn header(&self) -> &RegionHeader {
        // Safety: the mapping holds a RegionHeader at offset 0 (all plain integers and
        // atomics, so any bytes a client writes there are still a valid value).
        unsafe { &*(self.map.as_ptr() as *const RegionHeader) }
    }

    fn sq_ctl(&self) -> &RingCtl {
        // Safety: sq_ctl_offset is inside the mapping and 128-aligned (layout rules).
        unsafe { &*(self.map.as_ptr().add(self.layout.sq_ctl_offset) as *const RingCtl) }
    }

    fn cq_ctl(&self) -> &RingCtl {
        // Safety: cq_ctl_offset is inside the mapping and 128-aligned (layout rules).
        unsafe { &*(self.map.as_ptr().add(self.layout.cq_ctl_offset) as *const RingCtl) }
    }

    /// For status and metrics (any thread, read-only): (SQ entries published and not yet
    /// taken, CQ entries posted and not yet reaped). Relaxed loads of indices the worker and
    /// the client move: a snapshot that may be slightly stale, clamped to the ring sizes
    /// because the client may write anything into its indices.
    pub fn occupancy(&self) -> (u32, u32) {
        let used = |ctl: &RingCtl, entries: u32| {
            let head = ctl.head.value.load(Ordering::Relaxed);
            let tail = ctl.tail.value.load(Ordering::Relaxed);
            tail.wrapping_sub(head).min(entries)
        };
        (
            used(self.sq_ctl(), self.layout.sq_entries),
            used(self.cq_ctl(), self.layout.cq_entries),
        )
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Start of the mapping.
    pub fn base_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Start of the buffer area.
    pub fn buf_ptr(&self) -> *mut u8 {
        // Safety: buf_offset + buf_size <= mapping length by construction of the layout.
        unsafe { self.map.as_mut_ptr().add(self.layout.buf_offset) }
    }

    fn raw_ring(&self, ctl_offset: usize, array_offset: usize, entries: u32) -> RawRing {
        // Safety: offsets come from our own layout (never from the shared header), are inside
        // the mapping and 128-byte aligned; the mapping outlives the rings because the
        // session holds the Region in an Arc beside them.
        unsafe {
            let base = self.map.as_mut_ptr();
            RawRing::new(
                NonNull::new(base.add(ctl_offset) as *mut RingCtl).expect("mapping is non-null"),
                NonNull::new(base.add(array_offset) as *mut AtomicU64).expect("mapping is non-null"),
                entries,
            )
        }
    }

    /// The engine's two ring ends. Call once per region.
    pub fn rings(&self) -> (Consumer<Sqe>, Producer<Cqe>) {
        let l = &self.layout;
        let sq = self.raw_ring(l.sq_ctl_offset, l.sq_array_offset, l.sq_entries);
        let cq = self.raw_ring(l.cq_ctl_offset, l.cq_array_offset, l.cq_entries);
        // Safety: the engine's worker is the only SQ consumer and the only CQ producer of a
        // session, the rings are fresh, and each was built for its entry type.
        unsafe { (Consumer::new(sq), Producer::new(cq)) }
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
