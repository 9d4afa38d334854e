//! Operations on an endpoint: active-message sends, rendezvous receives, remote keys, one-sided
//! gets and puts, and flushes. Each holds what UCX reads or writes in the in-flight table
//! (`inflight.rs`) until it completes.

use std::os::raw::c_void;

use ucx1_sys::*;

use super::inflight::InFlight;
use super::{Endpoint, RndvData, Started, Worker};
use crate::ucx::ffi;
use crate::ucx::mem::{ReadMem, RecvBuf, WriteMem};
use crate::ucx::{check, UcxError};

/// How UCX sends an active message's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmProtocol {
    /// UCX's choice, by `UCX_RNDV_THRESH`.
    Auto,
    /// Rendezvous whatever the threshold (`UCP_AM_SEND_FLAG_RNDV`): the receiver pulls the
    /// data into a buffer of its choice.
    Rendezvous,
}

impl Worker {
    /// Sends an active message: `header` and `data` are kept until the send is done
    /// (`Started::Done`, or the `SendDone` event with `token`), or its endpoint was closed.
    /// With `reply`, the peer gets this endpoint to answer on.
    pub fn am_send(
        &mut self,
        ep: &Endpoint,
        id: u16,
        header: Box<[u8]>,
        data: impl ReadMem,
        reply: bool,
        token: u64,
    ) -> Result<Started, UcxError> {
        self.am_send_by(ep, id, header, data, reply, token, AmProtocol::Auto)
    }

    /// [`Worker::am_send`] with the data sent by `protocol`.
    #[allow(clippy::too_many_arguments)]
    pub fn am_send_by(
        &mut self,
        ep: &Endpoint,
        id: u16,
        header: Box<[u8]>,
        data: impl ReadMem,
        reply: bool,
        token: u64,
        protocol: AmProtocol,
    ) -> Result<Started, UcxError> {
        let (hptr, hlen) = (header.as_ptr(), header.len());
        let (dptr, dlen) = (data.as_ptr(), data.len());
        let op = InFlight {
            token,
            _header: Some(header),
            _mem: Some(Box::new(data)),
            _rkey: None,
        };
        let mut flags = if reply {
            ucp_send_am_flags::UCP_AM_SEND_FLAG_REPLY.0
        } else {
            0
        };
        if protocol == AmProtocol::Rendezvous {
            flags |= ucp_send_am_flags::UCP_AM_SEND_FLAG_RNDV.0;
        }
        self.start_op(op, false, |p| {
            let mut p = *p;
            p.op_attr_mask |= ucp_op_attr_t::UCP_OP_ATTR_FIELD_FLAGS as u32;
            p.flags = flags;
            // Safety: live ep of this worker; the header and data are held (InFlight) until
            // UCX is done with them; ReadMem's contract makes them valid for reads.
            unsafe {
                ucp_am_send_nbx(
                    ep.raw,
                    id as u32,
                    hptr as *const c_void,
                    hlen as size_t,
                    dptr as *const c_void,
                    dlen as size_t,
                    &p,
                )
            }
        })
    }

    /// Receives rendezvous data into `dst` (at least `data.len` bytes, else `InvalidParam`
    /// and the data is released), which is kept until the receive is done (`Started::Done`,
    /// or the `RecvDone` event with `token`).
    pub fn recv_rndv(&mut self, mut data: RndvData, dst: impl WriteMem, token: u64) -> Result<Started, UcxError> {
        if dst.len() < data.len {
            return Err(UcxError::InvalidParam);
        }
        let (ptr, len) = (dst.as_mut_ptr(), data.len);
        let op = InFlight {
            token,
            _header: None,
            _mem: Some(Box::new(dst)),
            _rkey: None,
        };
        let desc = std::mem::replace(&mut data.desc, std::ptr::null_mut());
        let raw = self.raw;
        self.start_op(op, true, |p| {
            // Safety: desc came from this worker's AM callback and is consumed here exactly
            // once; the destination holds `len` writable bytes and is kept until UCX is done.
            unsafe { ucp_am_recv_data_nbx(raw, desc, ptr as *mut c_void, len as size_t, p) }
        })
    }

    /// A receive buffer for [`Worker::recv_rndv`] that is returned by `RecvBuf::into_vec`
    /// after the receive.
    pub fn recv_rndv_into(&mut self, data: RndvData, buf: &RecvBuf, token: u64) -> Result<Started, UcxError> {
        self.recv_rndv(data, buf.for_operation(), token)
    }

    /// Unpacks a peer's remote key for use on `ep`, for the peer's memory at `remote` (its
    /// addresses, as the peer described its export): gets and puts outside it are refused.
    pub fn unpack_rkey(
        &mut self,
        ep: &Endpoint,
        packed: &[u8],
        remote: std::ops::Range<u64>,
    ) -> Result<RemoteKey, UcxError> {
        let mut raw: ucp_rkey_h = std::ptr::null_mut();
        // Safety: live ep; UCX parses the buffer (its length is implied by its content, which
        // comes from the trusted fabric, see SPEC §13); raw is an out-pointer.
        check(unsafe { ffi::ucp_ep_rkey_unpack(ep.raw, packed.as_ptr() as *const c_void, &mut raw) })?;
        Ok(RemoteKey {
            inner: std::rc::Rc::new(RkeyInner { raw, remote }),
        })
    }

    /// One-sided read of `dst.len()` bytes at the peer's `remote_addr` into `dst`, which is
    /// kept (with the key) until the get completes (`Started::Done` or `SendDone { token }`).
    /// The key must belong to `ep`'s peer; the range must lie inside the key's memory.
    pub fn get(
        &mut self,
        ep: &Endpoint,
        dst: impl WriteMem,
        remote_addr: u64,
        rkey: &RemoteKey,
        token: u64,
    ) -> Result<Started, UcxError> {
        let (ptr, len) = (dst.as_mut_ptr(), dst.len());
        rkey.check(remote_addr, len)?;
        let op = InFlight {
            token,
            _header: None,
            _mem: Some(Box::new(dst)),
            _rkey: Some(rkey.clone()),
        };
        let raw_key = rkey.inner.raw;
        self.start_op(op, false, |p| {
            // Safety: live ep of this worker; the destination (len writable bytes) and the key
            // are held until UCX is done; the remote range is inside the key's memory.
            unsafe { ucp_get_nbx(ep.raw, ptr as *mut c_void, len as size_t, remote_addr, raw_key, p) }
        })
    }

    /// One-sided write of `src` to the peer's `remote_addr`; as [`Worker::get`]. A put's
    /// completion is local: [`Worker::flush`] tells when the bytes are at the peer.
    pub fn put(
        &mut self,
        ep: &Endpoint,
        src: impl ReadMem,
        remote_addr: u64,
        rkey: &RemoteKey,
        token: u64,
    ) -> Result<Started, UcxError> {
        let (ptr, len) = (src.as_ptr(), src.len());
        rkey.check(remote_addr, len)?;
        let op = InFlight {
            token,
            _header: None,
            _mem: Some(Box::new(src)),
            _rkey: Some(rkey.clone()),
        };
        let raw_key = rkey.inner.raw;
        self.start_op(op, false, |p| {
            // Safety: as for get, with `len` readable bytes.
            unsafe { ucp_put_nbx(ep.raw, ptr as *const c_void, len as size_t, remote_addr, raw_key, p) }
        })
    }

    /// Completes (event `SendDone { token }`) once every operation started on `ep` before it
    /// is complete at the peer too: a put is only remotely visible after this.
    pub fn flush(&mut self, ep: &Endpoint, token: u64) -> Result<Started, UcxError> {
        let op = InFlight {
            token,
            _header: None,
            _mem: None,
            _rkey: None,
        };
        // Safety: live ep of this worker; the parameters live for the call.
        self.start_op(op, false, |p| unsafe { ucp_ep_flush_nbx(ep.raw, p) })
    }
}

/// A peer's unpacked remote key, valid on the endpoint it was unpacked for; drop it before
/// closing that endpoint (gets and puts in flight hold it until they are done). Destroyed
/// when the last holder lets go.
#[derive(Clone)]
pub struct RemoteKey {
    inner: std::rc::Rc<RkeyInner>,
}

struct RkeyInner {
    raw: ucp_rkey_h,
    /// The peer's addresses the key is for.
    remote: std::ops::Range<u64>,
}

impl RemoteKey {
    /// Whether `len` bytes at `addr` lie inside the key's memory.
    fn check(&self, addr: u64, len: usize) -> Result<(), UcxError> {
        let r = &self.inner.remote;
        let inside = addr >= r.start && addr.checked_add(len as u64).is_some_and(|end| end <= r.end);
        inside.then_some(()).ok_or(UcxError::InvalidParam)
    }
}

impl Drop for RkeyInner {
    fn drop(&mut self) {
        // Safety: unpacked by ucp_ep_rkey_unpack, destroyed once (the last Rc).
        unsafe { ucp_rkey_destroy(self.raw) };
    }
}
