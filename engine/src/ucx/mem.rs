//! Memory handed to UCX for an operation that outlives the call starting it (a send, a
//! rendezvous receive, a get or put, a registration). The operation takes the memory by value
//! and keeps it until UCX is done with it (the operation completed, failed, or was cancelled
//! by closing its endpoint), so no caller can free or unmap memory UCX still uses.
//!
//! What can be handed over: heap buffers (`Vec<u8>`, `Box<[u8]>`), nothing (`()`), a checked
//! range of shared memory ([`SharedRange`], which holds its region alive), bytes an `Arc`
//! keeps in place ([`ArcBytes`], e.g. a volume file's mapping), and a heap receive buffer
//! that is handed back once the receive completed ([`RecvBuf`]).

use std::ptr::NonNull;
use std::sync::Arc;

use ring_proto::{SharedMemory, SharedRange};

/// Memory UCX reads from (a send's payload, a put's source).
///
/// # Safety
/// `as_ptr() .. as_ptr() + len()` must be valid for reads for as long as the value lives,
/// at the same address and length on every call (moving the value must not move the bytes),
/// and must not be written through a Rust reference while the value lives.
pub unsafe trait ReadMem: 'static {
    fn as_ptr(&self) -> *const u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Memory UCX writes into (a receive's or a get's destination, registered memory).
///
/// # Safety
/// As for [`ReadMem`], valid for writes too, and with no Rust reference (`&[u8]`,
/// `&mut [u8]`) to the bytes alive while the value lives.
pub unsafe trait WriteMem: ReadMem {
    fn as_mut_ptr(&self) -> *mut u8 {
        self.as_ptr() as *mut u8
    }
}

// Safety: the heap buffer of a Vec does not move when the Vec moves, and nobody else can
// reach it (we own the Vec, and never mutate it).
unsafe impl ReadMem for Vec<u8> {
    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

// Safety: as for Vec.
unsafe impl ReadMem for Box<[u8]> {
    fn as_ptr(&self) -> *const u8 {
        self[..].as_ptr()
    }
    fn len(&self) -> usize {
        self[..].len()
    }
}

// Safety: no bytes at all (UCX is given a null pointer and length 0).
unsafe impl ReadMem for () {
    fn as_ptr(&self) -> *const u8 {
        std::ptr::null()
    }
    fn len(&self) -> usize {
        0
    }
}

// Safety: a SharedRange holds an Arc of its owner, which keeps the checked range mapped while
// the range lives; its address and length never change; the bytes are only ever reached
// through raw pointers and atomics (ring_proto::region), never Rust references.
unsafe impl<O: SharedMemory> ReadMem for SharedRange<O> {
    fn as_ptr(&self) -> *const u8 {
        SharedRange::as_ptr(self)
    }
    fn len(&self) -> usize {
        SharedRange::len(self)
    }
}

// Safety: as above; the memory is mapped writable (SharedArea's contract).
unsafe impl<O: SharedMemory> WriteMem for SharedRange<O> {}

/// Bytes an `Arc` keeps where they are: `ArcBytes::new(owner, |o| &o.bytes()[..])`.
pub struct ArcBytes<T: ?Sized> {
    _owner: Arc<T>,
    ptr: *const u8,
    len: usize,
}

impl<T: ?Sized + 'static> ArcBytes<T> {
    /// The bytes `pick` borrows from `owner`. They stay valid and unchanged while the Arc lives:
    /// the owner is never dropped or moved meanwhile, and bytes borrowed through a shared
    /// reference cannot be freed or written by safe code while the owner is alive.
    pub fn new(owner: Arc<T>, pick: impl FnOnce(&T) -> &[u8]) -> Self {
        let (ptr, len) = {
            let b = pick(&owner);
            (b.as_ptr(), b.len())
        };
        Self {
            _owner: owner,
            ptr,
            len,
        }
    }
}

// Safety: see `ArcBytes::new`: the bytes live as long as the owner, which we hold.
unsafe impl<T: ?Sized + 'static> ReadMem for ArcBytes<T> {
    fn as_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// A heap buffer for a rendezvous receive; [`RecvBuf::into_vec`] returns the bytes once UCX
/// let go of it (the receive completed, or failed).
pub struct RecvBuf {
    inner: Arc<RecvBufInner>,
}

struct RecvBufInner {
    /// A leaked `Box<[u8]>`, freed on drop or taken back by `into_vec`.
    raw: NonNull<[u8]>,
}

// Safety: the bytes are written only by UCX while an operation holds a handle, and read
// (into_vec) only once no other handle is left.
unsafe impl Send for RecvBufInner {}
// Safety: as above; no method reads the bytes through &self.
unsafe impl Sync for RecvBufInner {}

impl Drop for RecvBufInner {
    fn drop(&mut self) {
        // Safety: `raw` came from Box::into_raw in RecvBuf::new and is freed once, here
        // (into_vec forgets the inner value after taking it back).
        drop(unsafe { Box::from_raw(self.raw.as_ptr()) });
    }
}

impl RecvBuf {
    pub fn new(len: usize) -> Self {
        let raw = NonNull::from(Box::leak(vec![0u8; len].into_boxed_slice()));
        Self {
            inner: Arc::new(RecvBufInner { raw }),
        }
    }

    /// A handle for the operation, kept by the worker until UCX is done.
    pub(crate) fn for_operation(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }

    /// The received bytes; `None` while an operation still holds the buffer.
    pub fn into_vec(self) -> Option<Vec<u8>> {
        let inner = Arc::try_unwrap(self.inner).ok()?;
        let raw = inner.raw;
        std::mem::forget(inner);
        // Safety: the last handle: nobody else can reach the bytes; `raw` came from
        // Box::into_raw (leak) and its owner was just forgotten, so it is freed once.
        Some(unsafe { Box::from_raw(raw.as_ptr()) }.into_vec())
    }
}

// Safety: the leaked box never moves or changes length while any handle lives; it is written
// only by UCX (through the raw pointer) and read only by `into_vec`, with no handle left.
unsafe impl ReadMem for RecvBuf {
    fn as_ptr(&self) -> *const u8 {
        self.inner.raw.as_ptr() as *const u8
    }
    fn len(&self) -> usize {
        self.inner.raw.len()
    }
}

// Safety: as above.
unsafe impl WriteMem for RecvBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_buffer_comes_back_only_when_the_operation_let_go() {
        let b = RecvBuf::new(8);
        let op = b.for_operation();
        assert_eq!(op.len(), 8);
        let b2 = RecvBuf { inner: b.inner.clone() };
        drop(b);
        assert!(b2.for_operation().into_vec().is_none());
        drop(op);
        assert_eq!(b2.into_vec(), Some(vec![0u8; 8]));
    }

    #[test]
    fn arc_bytes_point_into_their_owner() {
        let owner = Arc::new(vec![1u8, 2, 3, 4]);
        let b = ArcBytes::new(owner.clone(), |v| &v[1..3]);
        assert_eq!((b.as_ptr(), b.len()), (owner[1..].as_ptr(), 2));
    }
}
