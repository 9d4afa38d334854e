//! The one view of a mapped session region, used by the engine, the Rust client and the
//! engine's data plane. Whoever maps a region (the engine with a memfd it created, a client
//! with the fd it was handed) builds a [`RegionView`] over the mapping once, with an `unsafe`
//! promise that the mapping outlives the view; everything after that is safe and checked.
//!
//! All pointer arithmetic over shared memory is here: the header and ring control blocks
//! (plain integers and atomics, valid for any bytes), the two rings, and the buffer area
//! ([`SharedArea`]), whose bytes are copied in and out with checked bounds and never lent out
//! as `&[u8]`/`&mut [u8]`: the other process may write them at any time, so a copy out may
//! tear but is always a defined value (every byte is loaded once, atomically), and only the
//! copy is used afterwards.
//!
//! Memory that a third party (UCX) reads or writes while an operation runs is handed over as
//! a [`SharedRange`]: a checked sub-range that holds an `Arc` of its owner (the session, or
//! the region), so the memory stays mapped for as long as the range exists.

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64 as WordU64, AtomicU8, Ordering as StdOrdering};
use std::sync::Arc;

use crate::entry::{Cqe, Sqe};
use crate::layout::{LayoutError, RegionHeader, RegionLayout, RingCtl, HEADER_SIZE};
use crate::ring::{Consumer, Producer, RawRing};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// A byte range that does not lie inside the area it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    pub offset: u64,
    pub len: u64,
    /// Length of the area.
    pub area: u64,
}

impl core::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "range of {} bytes at offset {} is outside an area of {} bytes",
            self.len, self.offset, self.area
        )
    }
}

impl std::error::Error for OutOfRange {}

/// Bytes shared with another process (a session's buffer area, or a whole region): checked
/// copies in and out, never a Rust reference to the bytes themselves.
#[derive(Debug)]
pub struct SharedArea {
    base: NonNull<u8>,
    len: usize,
}

// Safety: a SharedArea is an address and a length; every access through it is an atomic load
// or store of single bytes or aligned words, which any thread may make.
unsafe impl Send for SharedArea {}
// Safety: as above (no method needs exclusive access).
unsafe impl Sync for SharedArea {}

impl SharedArea {
    /// # Safety
    /// `base .. base + len` must be mapped readable and writable for as long as the returned
    /// value lives (not necessarily exclusively: another process may read and write it), and
    /// nothing in this process may hold a Rust reference (`&[u8]`, `&mut [u8]`) to those
    /// bytes meanwhile.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self { base, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of byte `offset` if `offset .. offset + len` lies inside the area.
    fn checked(&self, offset: usize, len: usize) -> Result<NonNull<u8>, OutOfRange> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(OutOfRange {
                offset: offset as u64,
                len: len as u64,
                area: self.len as u64,
            });
        }
        // Safety: offset <= len of the area (checked above), so the result is inside the
        // mapping or one past its end, and non-null because the base is.
        Ok(unsafe { self.base.add(offset) })
    }

    /// Copies `src` into the area at `offset`.
    pub fn copy_in(&self, offset: usize, src: &[u8]) -> Result<(), OutOfRange> {
        let dst = self.checked(offset, src.len())?;
        // Safety: `checked` put `dst .. dst + src.len()` inside the area, which `new`'s
        // contract keeps mapped and free of Rust references.
        unsafe { shared_copy_in(dst.as_ptr(), src) };
        Ok(())
    }

    /// Copies `dst.len()` bytes at `offset` out of the area. Tearing-tolerant: the other
    /// process may be writing them; each byte is read once and only the copy is used.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfRange> {
        let src = self.checked(offset, dst.len())?;
        // Safety: as in `copy_in`.
        unsafe { shared_copy_out(src.as_ptr(), dst) };
        Ok(())
    }

    /// [`SharedArea::copy_out`] into a new vector of `len` bytes.
    pub fn read_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>, OutOfRange> {
        self.checked(offset, len)?;
        let mut v = vec![0u8; len];
        self.copy_out(offset, &mut v)?;
        Ok(v)
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfRange> {
        let dst = self.checked(offset, len)?;
        // Safety: as in `copy_in`.
        unsafe { shared_fill(dst.as_ptr(), len, byte) };
        Ok(())
    }

    /// A checked sub-range, borrowed from the area (for a call that hands its address to
    /// someone else for no longer than the borrow).
    pub fn range(&self, offset: usize, len: usize) -> Result<BufRange<'_>, OutOfRange> {
        let ptr = self.checked(offset, len)?;
        Ok(BufRange {
            ptr,
            len,
            _area: PhantomData,
        })
    }
}

/// A checked sub-range of a [`SharedArea`], valid while the borrow of the area lasts.
#[derive(Debug, Clone, Copy)]
pub struct BufRange<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _area: PhantomData<&'a SharedArea>,
}

impl BufRange<'_> {
    /// Where the range starts; `len()` bytes from here are mapped while the borrow lasts.
    /// Dereferencing it is the caller's business (a foreign library, an address for a peer).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start as an address (what a peer names in a one-sided operation).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

/// Something that keeps a [`SharedArea`] mapped for as long as it lives: the engine's
/// session (its buffer area), the engine's region (the whole mapping), a benchmark's own
/// mapping. Held in an `Arc` by every [`SharedRange`] made over it.
pub trait SharedMemory: Send + Sync + 'static {
    /// The area; must be the same one on every call.
    fn shared_area(&self) -> &SharedArea;
}

/// A checked range of an owner's [`SharedArea`] that keeps the owner (and so the mapping)
/// alive: what an operation that outlives the current call (a UCX send, receive, get, put or
/// registration) is given. Cloning it clones the `Arc`.
pub struct SharedRange<O: SharedMemory> {
    owner: Arc<O>,
    ptr: NonNull<u8>,
    len: usize,
}

// Safety: an address, a length and an Arc of a Send + Sync owner; the bytes are only reached
// through raw pointers by whoever the range is handed to.
unsafe impl<O: SharedMemory> Send for SharedRange<O> {}
// Safety: as above; no method mutates through &self.
unsafe impl<O: SharedMemory> Sync for SharedRange<O> {}

impl<O: SharedMemory> Clone for SharedRange<O> {
    fn clone(&self) -> Self {
        Self {
            owner: self.owner.clone(),
            ptr: self.ptr,
            len: self.len,
        }
    }
}

impl<O: SharedMemory> SharedRange<O> {
    /// `len` bytes at `offset` of `owner`'s area, checked.
    pub fn new(owner: Arc<O>, offset: usize, len: usize) -> Result<Self, OutOfRange> {
        // The address is taken once, here: the area is borrowed from the owner, which the Arc
        // keeps alive (and with it the mapping, by SharedArea's contract) as long as we live.
        let ptr = owner.shared_area().checked(offset, len)?;
        Ok(Self { owner, ptr, len })
    }

    /// The owner's whole area.
    pub fn whole(owner: Arc<O>) -> Self {
        let len = owner.shared_area().len();
        Self::new(owner, 0, len).expect("the whole area lies inside itself")
    }

    /// Where the range starts; `len()` bytes from here stay mapped while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start as an address (what a peer names in a one-sided operation).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn owner(&self) -> &Arc<O> {
        &self.owner
    }
}

/// Why a mapping handed to a client is not a usable region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Smaller than a header.
    TooSmall { len: usize },
    /// The header does not describe a region this side can use.
    Layout(LayoutError),
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooSmall { len } => write!(f, "region of {len} bytes cannot hold a header"),
            Self::Layout(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

/// The atomic fields of a shared region's header ([`RegionView::live`]): what the engine
/// reads and writes there while a client may write anything.
pub struct LiveHeader<'a> {
    /// [`crate::SessionState`]; see [`RegionHeader::state`].
    pub state: &'a AtomicU32,
    /// [`crate::CloseReason`]; see [`RegionHeader::close_reason`].
    pub close_reason: &'a AtomicU32,
    /// See [`RegionHeader::engine_heartbeat`].
    pub engine_heartbeat: &'a AtomicU64,
    /// See [`RegionHeader::client_heartbeat`].
    pub client_heartbeat: &'a AtomicU64,
}

/// A mapped session region: its header, its two rings and its buffer area.
pub struct RegionView {
    base: NonNull<u8>,
    len: usize,
    layout: RegionLayout,
    whole: SharedArea,
    buf: SharedArea,
}

impl core::fmt::Debug for RegionView {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionView")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("layout", &self.layout)
            .finish()
    }
}

// Safety: the view hands out shared references to atomics (header, ring control blocks) and
// SharedAreas, all of which are Sync; nothing is tied to the creating thread.
unsafe impl Send for RegionView {}
// Safety: as above.
unsafe impl Sync for RegionView {}

impl RegionView {
    /// The engine's view of a region it created for `layout`.
    ///
    /// # Safety
    /// `base .. base + len` must be a mapping, aligned to a page, readable and writable for as
    /// long as the view lives, and no Rust reference to its bytes may exist meanwhile.
    pub unsafe fn new(base: NonNull<u8>, len: usize, layout: RegionLayout) -> Result<Self, LayoutError> {
        if len < layout.min_region_size {
            return Err(LayoutError::RegionTooSmall {
                region_size: len as u64,
                needed: layout.min_region_size as u64,
            });
        }
        // Safety: the caller's contract, and buf_offset + buf_size = min_region_size <= len.
        Ok(unsafe { Self::with_layout(base, len, layout) })
    }

    /// A client's view of a region it was handed: checks the header against the mapping's
    /// length before anything else is touched.
    ///
    /// # Safety
    /// As for [`RegionView::new`].
    pub unsafe fn open(base: NonNull<u8>, len: usize) -> Result<Self, OpenError> {
        if len < HEADER_SIZE {
            return Err(OpenError::TooSmall { len });
        }
        // Safety: at least HEADER_SIZE mapped, page-aligned bytes (the caller's contract), and
        // RegionHeader is plain integers and atomics, valid for any bit pattern. The reference
        // ends with this statement.
        let layout = RegionLayout::from_header(unsafe { base.cast::<RegionHeader>().as_ref() }, len)
            .map_err(OpenError::Layout)?;
        // Safety: from_header checked min_region_size <= region_size <= len.
        Ok(unsafe { Self::with_layout(base, len, layout) })
    }

    /// # Safety
    /// The contract of `new`, and `layout.min_region_size <= len`.
    unsafe fn with_layout(base: NonNull<u8>, len: usize, layout: RegionLayout) -> Self {
        // Safety: the whole mapping, and the buffer area inside it (buf_offset + buf_size =
        // min_region_size <= len), under the caller's contract.
        let (whole, buf) = unsafe {
            (
                SharedArea::new(base, len),
                SharedArea::new(base.add(layout.buf_offset), layout.buf_size),
            )
        };
        Self {
            base,
            len,
            layout,
            whole,
            buf,
        }
    }

    /// Writes the header (the engine, once, before the region is handed to a client).
    ///
    /// # Safety
    /// No other party may have the region mapped yet: the header's plain fields are written
    /// non-atomically.
    pub unsafe fn write_header(&self, header: RegionHeader) {
        // Safety: the mapping holds at least HEADER_SIZE bytes at a page-aligned base (RegionView
        // checked len >= min_region_size > HEADER_SIZE), and the caller promises nobody else
        // reads or writes it yet.
        unsafe { core::ptr::write(self.base.cast::<RegionHeader>().as_ptr(), header) };
    }

    /// The whole header, for a client: after handing the region over the engine writes only
    /// its atomic fields ([`RegionView::live`]), so its plain fields hold still. The engine
    /// itself uses [`RegionView::live`]: a client may write any header byte at any time, and a
    /// reference to the plain fields would be a reference to memory mutated under it.
    pub fn header(&self) -> &RegionHeader {
        // Safety: the mapping holds a RegionHeader at offset 0, mapped while self lives; all
        // plain integers and atomics, so any bytes written there are a valid value; the plain
        // fields are not written while the region is shared (see above).
        unsafe { self.base.cast::<RegionHeader>().as_ref() }
    }

    /// The header's fields that change while the region is shared, each an atomic that either
    /// side may touch at any time; no reference to the rest of the header is made.
    pub fn live(&self) -> LiveHeader<'_> {
        let h = self.base.cast::<RegionHeader>().as_ptr();
        // Safety: h points at a RegionHeader inside the mapping, which lives as long as self;
        // addr_of! takes each field's address without a reference to the whole header, and an
        // atomic (an UnsafeCell) may be written by others while referenced.
        unsafe {
            LiveHeader {
                state: &*core::ptr::addr_of!((*h).state),
                close_reason: &*core::ptr::addr_of!((*h).close_reason),
                engine_heartbeat: &*core::ptr::addr_of!((*h).engine_heartbeat),
                client_heartbeat: &*core::ptr::addr_of!((*h).client_heartbeat),
            }
        }
    }

    fn ctl(&self, offset: usize) -> &RingCtl {
        // Safety: ring control offsets come from the layout (never from the shared header),
        // are inside the mapping and 128-aligned; RingCtl is atomics and padding only.
        unsafe { self.base.add(offset).cast::<RingCtl>().as_ref() }
    }

    pub fn sq_ctl(&self) -> &RingCtl {
        self.ctl(self.layout.sq_ctl_offset)
    }

    pub fn cq_ctl(&self) -> &RingCtl {
        self.ctl(self.layout.cq_ctl_offset)
    }

    /// (SQ entries published and not yet taken, CQ entries posted and not yet reaped), for
    /// status: counted from each ring's head by the entries' phases with Relaxed loads (a
    /// hint from another thread, not a sync point); at most the ring's size whatever the
    /// client wrote.
    pub fn occupancy(&self) -> (u32, u32) {
        let l = &self.layout;
        let sq = self.raw_ring(l.sq_ctl_offset, l.sq_array_offset, l.sq_entries);
        let cq = self.raw_ring(l.cq_ctl_offset, l.cq_array_offset, l.cq_entries);
        (sq.published_after::<Sqe>(), cq.published_after::<Cqe>())
    }

    /// Prepares a fresh region's rings before the client sees it: the SQ `flags` say the
    /// worker sleeps (it has not polled this session yet, so the client's first submission
    /// must wake it; the worker clears the flag when it adopts the session).
    pub fn arm_first_submission(&self) {
        self.sq_ctl()
            .flags
            .store(crate::layout::RING_NEED_WAKEUP, Ordering::Relaxed);
    }

    fn raw_ring(&self, ctl_offset: usize, array_offset: usize, entries: u32) -> RawRing {
        // Safety: offsets and entry counts come from the layout, so the control block and
        // `entries` entries of the array lie inside the mapping, 128-byte aligned; RawRing's
        // "valid as long as used" is passed on to the callers of `engine_rings`/`client_rings`.
        unsafe {
            RawRing::new(
                self.base.add(ctl_offset).cast::<RingCtl>(),
                self.base.add(array_offset).cast::<AtomicU64>(),
                entries,
            )
        }
    }

    /// The engine's two ring ends: SQ consumer, CQ producer.
    ///
    /// # Safety
    /// Call once per region (the engine is the only SQ consumer and CQ producer), on a fresh
    /// region, and keep the view alive for as long as the ring ends are used.
    pub unsafe fn engine_rings(&self) -> (Consumer<Sqe>, Producer<Cqe>) {
        let l = &self.layout;
        let sq = self.raw_ring(l.sq_ctl_offset, l.sq_array_offset, l.sq_entries);
        let cq = self.raw_ring(l.cq_ctl_offset, l.cq_array_offset, l.cq_entries);
        // Safety: the caller's contract; each ring was built for its entry type.
        unsafe { (Consumer::new(sq), Producer::new(cq)) }
    }

    /// A client's two ring ends: SQ producer, CQ consumer.
    ///
    /// # Safety
    /// As for [`RegionView::engine_rings`], with the client's roles.
    pub unsafe fn client_rings(&self) -> (Producer<Sqe>, Consumer<Cqe>) {
        let l = &self.layout;
        let sq = self.raw_ring(l.sq_ctl_offset, l.sq_array_offset, l.sq_entries);
        let cq = self.raw_ring(l.cq_ctl_offset, l.cq_array_offset, l.cq_entries);
        // Safety: the caller's contract; each ring was built for its entry type.
        unsafe { (Producer::new(sq), Consumer::new(cq)) }
    }

    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    /// Length of the mapping (at least the layout's size; rounded up to its page size).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer area.
    pub fn buf(&self) -> &SharedArea {
        &self.buf
    }

    /// The whole mapping as one area (for registering it with UCX, for a test that plays a
    /// hostile client).
    pub fn whole(&self) -> &SharedArea {
        &self.whole
    }
}

/// Words copied at once in the middle of a shared copy.
const WORD: usize = core::mem::size_of::<u64>();

/// Bytes before the first 8-aligned address at or after `p`, at most `len`.
fn head_bytes(p: *const u8, len: usize) -> usize {
    (p.align_offset(WORD)).min(len)
}

/// Copies at least this long go through [`bulk_copy`] where it exists.
const BULK_MIN: usize = 256;

/// A copy into or out of shared memory at `memcpy`'s speed: one `rep movsb`, which the
/// compiler cannot see into (so it cannot assume the bytes stay put, as it may for a plain
/// copy through references), reading and writing each byte once. The per-word atomic loop
/// below is 2-3x slower for large copies (a 1 MiB needle lands through here).
///
/// # Safety
/// `src .. src + len` must be readable and `dst .. dst + len` writable, the two not
/// overlapping, with no Rust reference to whichever of them is shared memory.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn bulk_copy(dst: *mut u8, src: *const u8, len: usize) {
    // Safety: the caller's contract; `rep movsb` copies rcx bytes from [rsi] to [rdi]
    // forwards (the ABI guarantees the direction flag clear at entry), changes no flags, and
    // uses no stack.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// # Safety
/// `dst .. dst + src.len()` must be mapped and writable, with no Rust reference to it.
unsafe fn shared_copy_in(dst: *mut u8, src: &[u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if src.len() >= BULK_MIN {
        // Safety: the caller's contract; `src` is a slice of ours, not the shared range.
        unsafe { bulk_copy(dst, src.as_ptr(), src.len()) };
        return;
    }
    let head = head_bytes(dst, src.len());
    let words = (src.len() - head) / WORD;
    for (i, &b) in src[..head].iter().enumerate() {
        // Safety: i < src.len(), inside the caller's range; AtomicU8 has u8's size and
        // alignment.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(b, StdOrdering::Relaxed);
    }
    for w in 0..words {
        let at = head + w * WORD;
        let v = u64::from_ne_bytes(src[at..at + WORD].try_into().expect("8 bytes"));
        // Safety: dst + at is 8-aligned (past `head`) and at + 8 <= src.len().
        unsafe { WordU64::from_ptr(dst.add(at).cast::<u64>()) }.store(v, StdOrdering::Relaxed);
    }
    let tail = head + words * WORD;
    for (i, &b) in src.iter().enumerate().skip(tail) {
        // Safety: as for the head bytes.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(b, StdOrdering::Relaxed);
    }
}

/// # Safety
/// `src .. src + dst.len()` must be mapped and readable, with no Rust reference to it.
unsafe fn shared_copy_out(src: *const u8, dst: &mut [u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if dst.len() >= BULK_MIN {
        // Safety: the caller's contract; `dst` is a slice of ours, not the shared range.
        unsafe { bulk_copy(dst.as_mut_ptr(), src, dst.len()) };
        return;
    }
    let head = head_bytes(src, dst.len());
    let words = (dst.len() - head) / WORD;
    for (i, d) in dst[..head].iter_mut().enumerate() {
        // Safety: i < dst.len(), inside the caller's range; AtomicU8 has u8's size and
        // alignment, and the atomic is only loaded from.
        *d = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(StdOrdering::Relaxed);
    }
    for w in 0..words {
        let at = head + w * WORD;
        // Safety: src + at is 8-aligned (past `head`) and at + 8 <= dst.len().
        let v = unsafe { WordU64::from_ptr(src.add(at) as *mut u64) }.load(StdOrdering::Relaxed);
        dst[at..at + WORD].copy_from_slice(&v.to_ne_bytes());
    }
    let tail = head + words * WORD;
    for (i, d) in dst.iter_mut().enumerate().skip(tail) {
        // Safety: as for the head bytes.
        *d = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(StdOrdering::Relaxed);
    }
}

/// # Safety
/// As for `shared_copy_in`, with `len` bytes.
unsafe fn shared_fill(dst: *mut u8, len: usize, byte: u8) {
    let head = head_bytes(dst, len);
    let words = (len - head) / WORD;
    let word = u64::from_ne_bytes([byte; WORD]);
    for i in (0..head).chain(head + words * WORD..len) {
        // Safety: i < len, inside the caller's range.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(byte, StdOrdering::Relaxed);
    }
    for w in 0..words {
        // Safety: 8-aligned past `head`, and head + (w + 1) * 8 <= len.
        unsafe { WordU64::from_ptr(dst.add(head + w * WORD).cast::<u64>()) }.store(word, StdOrdering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heap memory standing in for a mapping (a raw allocation, so that no Box or slice
    /// ever claims the bytes the area hands out).
    struct Heap {
        area: SharedArea,
        base: NonNull<u8>,
        alloc: std::alloc::Layout,
    }

    // Safety: the allocation is only reached through the area.
    unsafe impl Send for Heap {}
    // Safety: as above.
    unsafe impl Sync for Heap {}

    impl Heap {
        fn new(len: usize) -> Arc<Self> {
            let alloc = std::alloc::Layout::from_size_align(len.max(1), WORD).unwrap();
            // Safety: a non-zero size.
            let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(alloc) }).expect("allocated");
            // Safety: the allocation lives as long as the Heap (freed in Drop), is only
            // reached through the area, and holds at least `len` bytes.
            let area = unsafe { SharedArea::new(base, len) };
            Arc::new(Self { area, base, alloc })
        }
    }

    impl Drop for Heap {
        fn drop(&mut self) {
            // Safety: allocated in `new` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), self.alloc) };
        }
    }

    impl SharedMemory for Heap {
        fn shared_area(&self) -> &SharedArea {
            &self.area
        }
    }

    #[test]
    fn copies_round_trip_at_every_alignment() {
        let h = Heap::new(2048);
        let a = h.shared_area();
        for offset in 0..9 {
            // Short copies go word by word, long ones (BULK_MIN and up) in bulk.
            for len in [0, 1, 7, 8, 9, 23, 40, BULK_MIN - 1, BULK_MIN, BULK_MIN + 1, 1500] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + offset) as u8 ^ 0x5a).collect();
                a.copy_in(offset, &data).unwrap();
                assert_eq!(a.read_vec(offset, len).unwrap(), data, "offset {offset} len {len}");
            }
        }
        a.fill(3, 50, 0xab).unwrap();
        let all = a.read_vec(0, 64).unwrap();
        assert!(all[3..53].iter().all(|&b| b == 0xab));
        assert_ne!(all[2], 0xab);
        // A copy writes exactly its range: the bytes around a bulk copy stay.
        a.fill(0, 2048, 0x11).unwrap();
        a.copy_in(5, &[0x22; 1000]).unwrap();
        let all = a.read_vec(0, 2048).unwrap();
        assert!(all[..5].iter().all(|&b| b == 0x11) && all[1005..].iter().all(|&b| b == 0x11));
        assert!(all[5..1005].iter().all(|&b| b == 0x22));
    }

    #[test]
    fn ranges_are_checked() {
        let h = Heap::new(32);
        let a = h.shared_area();
        assert!(a.copy_in(30, &[1, 2, 3]).is_err());
        assert!(a.read_vec(usize::MAX, 2).is_err());
        assert!(a.fill(33, 0, 0).is_err());
        assert_eq!(
            a.range(8, 25).unwrap_err(),
            OutOfRange {
                offset: 8,
                len: 25,
                area: 32
            }
        );
        let r = a.range(8, 24).unwrap();
        assert_eq!(r.addr() - a.range(0, 0).unwrap().addr(), 8);
        assert!(SharedRange::new(h.clone(), 32, 1).is_err());
        let s = SharedRange::new(h.clone(), 4, 28).unwrap();
        assert_eq!((s.len(), s.addr() + 4), (28, r.addr()));
        assert_eq!(Arc::strong_count(&h), 2, "the range holds its owner");
        drop(s);
        assert_eq!(SharedRange::whole(h).len(), 32);
    }

    #[test]
    fn a_view_checks_the_header_it_is_opened_on() {
        let layout = RegionLayout::new(8, 16, 4096).unwrap();
        let len = layout.min_region_size;
        let alloc = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // Safety: a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(alloc) }).expect("allocated");
        {
            // Safety: the allocation (page-aligned, zeroed) outlives both views (freed at the end of
            // the test, after the block that holds them) and is only reached through them.
            let engine = unsafe { RegionView::new(base, len, layout) }.unwrap();
            assert!(matches!(
                // Safety: as above.
                unsafe { RegionView::open(base, len) },
                Err(OpenError::Layout(LayoutError::BadMagic(0)))
            ));
            // Safety: nobody else sees this memory yet.
            unsafe { engine.write_header(layout.header(len as u64, 1, 2, 3, 0)) };
            // Safety: as above.
            let client = unsafe { RegionView::open(base, len) }.unwrap();
            assert_eq!(client.layout(), &layout);
            client.buf().copy_in(0, b"hello").unwrap();
            assert_eq!(engine.buf().read_vec(0, 5).unwrap(), b"hello");
            assert_eq!(engine.occupancy(), (0, 0));
            assert!(client.buf().copy_in(4090, b"too long").is_err());
            // Safety: as above (and `open` checks that 100 bytes cannot hold the header
            // before reading past them).
            let small = unsafe { RegionView::open(base, 100) };
            assert!(matches!(small, Err(OpenError::TooSmall { len: 100 })));
        }
        // Safety: allocated above with this layout; both views are gone.
        unsafe { std::alloc::dealloc(base.as_ptr(), alloc) };
    }

    /// The engine's header accesses (`live`) stay sound while a client writes the header's
    /// plain fields at the same time (Miri checks the aliasing and races).
    #[test]
    fn live_header_fields_are_used_while_a_client_rewrites_the_rest() {
        let layout = RegionLayout::new(8, 16, 4096).unwrap();
        let len = layout.min_region_size;
        let alloc = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // Safety: a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(alloc) }).expect("allocated");
        {
            // Safety: the allocation outlives the view (freed after this block) and is reached
            // through it and, below, through atomic byte stores of the "client" only.
            let engine = unsafe { RegionView::new(base, len, layout) }.unwrap();
            // Safety: nobody else sees this memory yet.
            unsafe { engine.write_header(layout.header(len as u64, 1, 2, 3, 0)) };
            let plain = core::mem::offset_of!(RegionHeader, state);
            let addr = base.as_ptr() as usize;
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    for round in 0..20u8 {
                        for off in 0..plain {
                            // Safety: off < plain < HEADER_SIZE <= len; an atomic byte store, as
                            // another process writing its mapping would.
                            let b = unsafe { &*((addr + off) as *const AtomicU8) };
                            b.store(round, StdOrdering::Relaxed);
                        }
                    }
                });
                for i in 0..20u64 {
                    let h = engine.live();
                    h.engine_heartbeat.store(i, Ordering::Relaxed);
                    let _ = h.client_heartbeat.load(Ordering::Relaxed);
                    h.state.store(1, Ordering::Release);
                }
            });
            assert_eq!(engine.live().engine_heartbeat.load(Ordering::Relaxed), 19);
        }
        // Safety: allocated above with this layout; the view is gone.
        unsafe { std::alloc::dealloc(base.as_ptr(), alloc) };
    }
}
