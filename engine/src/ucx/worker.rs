//! A single-threaded UCP worker with its listener, endpoints, active messages and requests.
//!
//! Callbacks: UCX calls back only from inside `ucp_worker_progress` on the owning thread.
//! [`Worker::progress`] installs the caller's event handler in the worker's callback context
//! for the duration of that call, so events reach the engine synchronously (an eager message's
//! bytes can be copied straight into a client's buffer) without any UCX call being made from
//! inside a callback: work that needs UCX (replies, rendezvous receives, accepting
//! connections) is done by the caller after `progress` returns.
//!
//! Memory: every operation that outlives its call (send, rendezvous receive, get, put, flush)
//! takes what UCX may read or write by value (`mem.rs`: an owned buffer, or a checked
//! `SharedRange` that holds its region) and the worker keeps it, with the header and remote
//! key, in a slot whose index is the request's user data, until the completion callback (or
//! the close of its endpoint, which completes it) releases it. So the API is safe: no caller
//! can free or unmap memory UCX still uses.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::raw::c_void;
use std::sync::Arc;

use ucx1_sys::*;

use super::ffi::{self, raw_status};
use super::mem::{ReadMem, RecvBuf, WriteMem};
use super::{check, Context, UcxError};

/// What happened during [`Worker::progress`].
pub enum WorkerEvent<'a> {
    /// An active message arrived. Eager data is borrowed for the duration of the handler
    /// call; rendezvous data must be fetched with [`Worker::recv_rndv`] (or is released when
    /// the [`AmData::Rndv`] is dropped).
    Am(AmMessage<'a>),
    /// A send ([`Worker::am_send`]), get, put or flush finished; what it held is released.
    SendDone { token: u64, result: Result<(), UcxError> },
    /// A rendezvous receive started by [`Worker::recv_rndv`] finished; its buffer is released.
    RecvDone {
        token: u64,
        result: Result<usize, UcxError>,
    },
    /// An endpoint failed (peer died, connection reset, unreachable...). Its requests are
    /// completed with errors by UCX; close it with [`Endpoint::close`].
    EndpointFailed { ep: EpKey, error: UcxError },
}

/// Identifies an endpoint in events (its handle's address).
pub type EpKey = usize;

pub struct AmMessage<'a> {
    pub id: u16,
    pub header: &'a [u8],
    pub data: AmData<'a>,
    /// The endpoint to answer on (the sender set the reply flag).
    pub reply_ep: Option<EpKey>,
}

pub enum AmData<'a> {
    Eager(&'a [u8]),
    Rndv(RndvData),
}

/// A rendezvous data descriptor: the bytes still sit at the sender until received.
pub struct RndvData {
    desc: *mut c_void,
    pub len: usize,
    worker: ucp_worker_h,
}

impl Drop for RndvData {
    fn drop(&mut self) {
        if self.desc.is_null() {
            return;
        }
        // Dropped inside the AM callback that delivered it: tell the callback, which then
        // returns UCS_OK and UCX completes the sender without the data. Dropped later: the
        // callback returned UCS_INPROGRESS, so the descriptor is ours to release.
        if RNDV_IN_CALLBACK.with(|c| c.get()) == self.desc {
            RNDV_IN_CALLBACK.with(|c| c.set(std::ptr::null_mut()));
            return;
        }
        // Safety: the descriptor came from an AM callback of this worker that returned
        // UCS_INPROGRESS, and was neither received nor released before.
        unsafe { ucp_am_data_release(self.worker, self.desc) };
    }
}

thread_local! {
    /// The rendezvous descriptor of the AM callback running on this thread, null once the
    /// handler dropped it.
    static RNDV_IN_CALLBACK: std::cell::Cell<*mut c_void> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Result of starting an operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// Finished at once; no completion event will follow.
    Done,
    /// A `SendDone`/`RecvDone` event with the given token will follow.
    InProgress,
}

struct CallbackCtx {
    /// The caller's handler, set only while `progress` runs.
    handler: Option<*mut (dyn for<'a> FnMut(WorkerEvent<'a>) + 'static)>,
    conn_requests: Vec<ucp_conn_request_h>,
    worker: ucp_worker_h,
    /// What operations in flight hold (their memory, header, remote key), by the slot UCX
    /// passes back to the completion callback as its user data.
    ops: Vec<Option<InFlight>>,
    /// Free slots of `ops`.
    free: Vec<usize>,
    /// Holdings of operations that completed during the current `progress`, dropped when it
    /// returns (dropping them may call UCX: a registration, a remote key).
    finished: Vec<InFlight>,
}

/// What an operation in flight keeps alive until UCX is done with it.
struct InFlight {
    /// The caller's token, reported in the completion event.
    token: u64,
    _header: Option<Box<[u8]>>,
    _mem: Option<Box<dyn ReadMem>>,
    _rkey: Option<RemoteKey>,
}

impl CallbackCtx {
    fn hold(&mut self, op: InFlight) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.ops[i] = Some(op);
                i
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        }
    }

    fn release(&mut self, slot: usize) -> Option<InFlight> {
        let op = self.ops.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(op)
    }
}

pub struct Worker {
    raw: ucp_worker_h,
    ctx: *mut RefCell<CallbackCtx>,
    /// One argument per registered active-message id (UCX does not pass the id to the
    /// callback); freed with the worker.
    am_args: Vec<*mut AmArg>,
    efd: RawFd,
    _context: Arc<Context>,
}

struct AmArg {
    ctx: *mut RefCell<CallbackCtx>,
    id: u16,
}

pub struct Listener {
    raw: ucp_listener_h,
    pub addr: SocketAddr,
}

/// A connection to a peer engine. Not closed on drop: close it explicitly (the worker must
/// progress the close).
pub struct Endpoint {
    raw: ucp_ep_h,
}

impl Worker {
    /// Creates a worker for the calling thread (thread mode single) and registers the active
    /// message ids the engine uses.
    pub fn new(context: Arc<Context>, am_ids: &[u16]) -> Result<Self, UcxError> {
        // Safety: plain data; zero means no field set.
        let mut params: ucp_worker_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = ucp_worker_params_field::UCP_WORKER_PARAM_FIELD_THREAD_MODE.0 as u64;
        params.thread_mode = ucs_thread_mode_t::UCS_THREAD_MODE_SINGLE;
        let mut raw: ucp_worker_h = std::ptr::null_mut();
        // Safety: the context is alive (we keep an Arc); params is valid; raw is an out-pointer.
        check(unsafe { ffi::ucp_worker_create(context.raw(), &params, &mut raw) })?;
        let ctx = Box::into_raw(Box::new(RefCell::new(CallbackCtx {
            handler: None,
            conn_requests: Vec::new(),
            worker: raw,
            ops: Vec::new(),
            free: Vec::new(),
            finished: Vec::new(),
        })));
        let mut efd = -1;
        let mut w = Self {
            raw,
            ctx,
            am_args: Vec::new(),
            efd: -1,
            _context: context,
        };
        // Safety: raw is a live worker created with the WAKEUP feature; efd is an out-pointer.
        check(unsafe { ffi::ucp_worker_get_efd(raw, &mut efd) })?;
        w.efd = efd;
        for &id in am_ids {
            w.set_am_handler(id)?;
        }
        Ok(w)
    }

    fn set_am_handler(&mut self, id: u16) -> Result<(), UcxError> {
        // Safety: plain data.
        let mut p: ucp_am_handler_param_t = unsafe { std::mem::zeroed() };
        p.field_mask = (ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_ID
            | ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_CB
            | ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_ARG)
            .0 as u64;
        p.id = id as u32;
        p.cb = Some(am_callback);
        let arg = Box::into_raw(Box::new(AmArg { ctx: self.ctx, id }));
        self.am_args.push(arg);
        p.arg = arg as *mut c_void;
        // Safety: the worker is live; ctx and arg live until the worker is destroyed (Drop).
        check(unsafe { ffi::ucp_worker_set_am_recv_handler(self.raw, &p) })
    }

    /// The worker's event fd: readable when UCX has events after [`Worker::arm`].
    pub fn event_fd(&self) -> RawFd {
        self.efd
    }

    /// Arms the event fd before sleeping. False means events are pending: progress instead.
    pub fn arm(&self) -> bool {
        // Safety: live worker.
        let s = unsafe { ffi::ucp_worker_arm(self.raw) };
        s == 0
    }

    /// Progresses communication, delivering events to `handler`. Returns whether anything
    /// happened. The handler must not call back into this worker.
    pub fn progress(&mut self, handler: &mut dyn for<'a> FnMut(WorkerEvent<'a>)) -> bool {
        // Safety: the handler pointer is only used during this call (cleared below), and only
        // from callbacks UCX runs inside ucp_worker_progress on this thread. The lifetime
        // is erased to store it; it never outlives the borrow.
        let h: *mut (dyn for<'a> FnMut(WorkerEvent<'a>) + '_) = handler;
        let h: *mut (dyn for<'a> FnMut(WorkerEvent<'a>) + 'static) = unsafe { std::mem::transmute(h) };
        // Safety: ctx is live for the worker's lifetime; no borrow is held across progress.
        unsafe { (*self.ctx).borrow_mut().handler = Some(h) };
        let outer = CURRENT.with(|c| c.replace(self.ctx as *mut c_void));
        let mut any = false;
        // Safety: live worker, called on its own thread (thread mode single).
        while unsafe { ucp_worker_progress(self.raw) } != 0 {
            any = true;
        }
        CURRENT.with(|c| c.set(outer));
        // Safety: as above.
        let finished = unsafe {
            let mut ctx = (*self.ctx).borrow_mut();
            ctx.handler = None;
            std::mem::take(&mut ctx.finished)
        };
        // Outside every UCX call and borrow: dropping memory may unregister or unmap it.
        drop(finished);
        any
    }

    /// Starts an operation that holds `op` until UCX is done with it: `start` gets the
    /// request parameters (completion callback and slot) and returns UCX's status pointer.
    fn start_op(
        &mut self,
        op: InFlight,
        recv: bool,
        start: impl FnOnce(&ucp_request_param_t) -> *mut c_void,
    ) -> Result<Started, UcxError> {
        // Safety: ctx is live; no borrow is held outside progress, and this is not called
        // from a callback (the handler must not call back into the worker).
        let slot = unsafe { (*self.ctx).borrow_mut().hold(op) };
        let p = if recv { recv_param(slot) } else { send_param(slot) };
        let r = start(&p);
        let st = started(r);
        if st != Ok(Started::InProgress) {
            // Done at once, or failed to start: no callback will come, UCX let go already.
            // Safety: as above.
            let op = unsafe { (*self.ctx).borrow_mut().release(slot) };
            drop(op);
        }
        st
    }

    /// Connection requests that arrived on a listener, to be accepted with
    /// [`Worker::accept`] (outside of `progress`).
    pub fn take_conn_requests(&mut self) -> Vec<ConnRequest> {
        // Safety: ctx is live; no other borrow exists outside progress.
        let reqs = std::mem::take(unsafe { &mut (*self.ctx).borrow_mut().conn_requests });
        reqs.into_iter().map(|raw| ConnRequest { raw }).collect()
    }

    /// Listens on `addr` (port 0 picks a free port; the bound address is returned).
    pub fn listen(&mut self, addr: SocketAddr) -> Result<Listener, UcxError> {
        let (storage, len) = sockaddr_of(addr);
        // Safety: plain data.
        let mut p: ucp_listener_params_t = unsafe { std::mem::zeroed() };
        p.field_mask = (ucp_listener_params_field::UCP_LISTENER_PARAM_FIELD_SOCK_ADDR
            | ucp_listener_params_field::UCP_LISTENER_PARAM_FIELD_CONN_HANDLER)
            .0 as u64;
        p.sockaddr = ucs_sock_addr {
            addr: &storage as *const _ as *const sockaddr,
            addrlen: len,
        };
        p.conn_handler = ucp_listener_conn_handler {
            cb: Some(conn_callback),
            arg: self.ctx as *mut c_void,
        };
        let mut raw: ucp_listener_h = std::ptr::null_mut();
        // Safety: live worker; the sockaddr storage outlives the call; ctx outlives the listener
        // (listeners are destroyed before the worker, see Listener::destroy's contract).
        check(unsafe { ffi::ucp_listener_create(self.raw, &p, &mut raw) })?;
        // Safety: plain data; listener just created.
        let mut attr: ucp_listener_attr_t = unsafe { std::mem::zeroed() };
        attr.field_mask = ucp_listener_attr_field::UCP_LISTENER_ATTR_FIELD_SOCKADDR.0 as u64;
        // Safety: as above.
        let bound = match check(unsafe { ffi::ucp_listener_query(raw, &mut attr) }) {
            // Safety: UCX filled a sockaddr_storage of the listener's family.
            Ok(()) => unsafe { socket_addr_from(&attr.sockaddr) }.unwrap_or(addr),
            Err(_) => addr,
        };
        Ok(Listener { raw, addr: bound })
    }

    /// Starts connecting to a listener. Failure to reach it shows up later as an
    /// `EndpointFailed` event (or as errors of the requests sent on it).
    pub fn connect(&mut self, addr: SocketAddr) -> Result<Endpoint, UcxError> {
        let (storage, len) = sockaddr_of(addr);
        // Safety: plain data.
        let mut p: ucp_ep_params_t = unsafe { std::mem::zeroed() };
        p.field_mask = (ucp_ep_params_field::UCP_EP_PARAM_FIELD_FLAGS
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_SOCK_ADDR
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLER)
            .0 as u64;
        p.flags = ucp_ep_params_flags_field::UCP_EP_PARAMS_FLAGS_CLIENT_SERVER.0;
        p.sockaddr = ucs_sock_addr {
            addr: &storage as *const _ as *const sockaddr,
            addrlen: len,
        };
        self.fill_err_handler(&mut p);
        self.create_ep(&p)
    }

    /// Accepts a connection request into an endpoint.
    pub fn accept(&mut self, req: ConnRequest) -> Result<Endpoint, UcxError> {
        // Safety: plain data.
        let mut p: ucp_ep_params_t = unsafe { std::mem::zeroed() };
        p.field_mask = (ucp_ep_params_field::UCP_EP_PARAM_FIELD_CONN_REQUEST
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLER)
            .0 as u64;
        p.conn_request = req.raw;
        self.fill_err_handler(&mut p);
        self.create_ep(&p)
    }

    fn fill_err_handler(&self, p: &mut ucp_ep_params_t) {
        p.err_mode = ucp_err_handling_mode_t::UCP_ERR_HANDLING_MODE_PEER;
        // Safety: our callback has the ABI of ucp_err_handler_cb_t (the status is a one-byte
        // enum in C, received as i8; see ffi.rs).
        let cb: ucp_err_handler_cb_t = Some(unsafe {
            std::mem::transmute::<ffi::ErrCallback, unsafe extern "C" fn(*mut c_void, ucp_ep_h, ucs_status_t)>(
                err_callback,
            )
        });
        p.err_handler = ucp_err_handler {
            cb,
            arg: self.ctx as *mut c_void,
        };
    }

    fn create_ep(&mut self, p: &ucp_ep_params_t) -> Result<Endpoint, UcxError> {
        let mut raw: ucp_ep_h = std::ptr::null_mut();
        // Safety: live worker; params valid for the call; raw is an out-pointer.
        check(unsafe { ffi::ucp_ep_create(self.raw, p, &mut raw) })?;
        Ok(Endpoint { raw })
    }

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
        let (hptr, hlen) = (header.as_ptr(), header.len());
        let (dptr, dlen) = (data.as_ptr(), data.len());
        let op = InFlight {
            token,
            _header: Some(header),
            _mem: Some(Box::new(data)),
            _rkey: None,
        };
        let flags = if reply {
            ucp_send_am_flags::UCP_AM_SEND_FLAG_REPLY.0
        } else {
            0
        };
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

    /// UCX's description of an endpoint's lanes: which transport and device carries what.
    pub fn ep_info(&self, ep: &Endpoint) -> String {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // Safety: open_memstream allocates a growing buffer and reports it through the two
        // out-pointers once the stream is closed.
        let f = unsafe { libc::open_memstream(&mut buf, &mut size) };
        if f.is_null() {
            return String::new();
        }
        // Safety: live ep; the FILE types are the same C struct (libc's and bindgen's); the
        // stream is closed right after.
        unsafe {
            ucp_ep_print_info(ep.raw, f as *mut FILE);
            libc::fclose(f);
        }
        if buf.is_null() {
            return String::new();
        }
        // Safety: after fclose, buf holds `size` bytes we own and free once.
        let text = unsafe { String::from_utf8_lossy(std::slice::from_raw_parts(buf as *const u8, size)).into_owned() };
        // Safety: as above.
        unsafe { libc::free(buf as *mut libc::c_void) };
        text
    }

    /// Closes an endpoint (force: no flush), progressing until UCX let go of it.
    pub fn close(&mut self, ep: Endpoint) {
        // Safety: plain data; no callback, we wait for the request ourselves.
        let mut p: ucp_request_param_t = unsafe { std::mem::zeroed() };
        p.op_attr_mask = ucp_op_attr_t::UCP_OP_ATTR_FIELD_FLAGS as u32;
        p.flags = ucp_ep_close_flags_t::UCP_EP_CLOSE_FLAG_FORCE.0;
        // Safety: live ep of this worker, closed exactly once (Endpoint is consumed).
        let r = unsafe { ucp_ep_close_nbx(ep.raw, &p) };
        if is_request(r) {
            // Events during the close (failed sends of this ep) are dropped: their owners
            // were failed by the caller before closing.
            let mut ignore = |_: WorkerEvent<'_>| {};
            // Safety: r is a live request until freed below.
            while unsafe { ffi::ucp_request_check_status(r) } == 1 {
                self.progress(&mut ignore);
            }
            // Safety: completed request, freed once.
            unsafe { ucp_request_free(r) };
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Safety: listeners and endpoints were destroyed/closed by their owners first (the
        // data plane owns them and drops them before the worker); then the worker, then the
        // callback context it pointed to.
        unsafe {
            ucp_worker_destroy(self.raw);
            for a in self.am_args.drain(..) {
                drop(Box::from_raw(a));
            }
            let ctx = Box::from_raw(self.ctx).into_inner();
            // Operations still held here were never completed (their endpoints were not
            // closed, against the contract): their memory is released only now, after the
            // worker, and their remote keys are leaked (destroying one after its worker is
            // not allowed).
            for op in ctx.ops.into_iter().flatten().chain(ctx.finished) {
                if let Some(k) = op._rkey {
                    std::mem::forget(k);
                }
                drop(op._mem);
            }
        }
    }
}

impl Listener {
    /// Destroys the listener. Must happen before its worker is dropped.
    pub fn destroy(self) {
        // Safety: live listener, destroyed once.
        unsafe { ucp_listener_destroy(self.raw) };
    }
}

impl Endpoint {
    pub fn key(&self) -> EpKey {
        self.raw as usize
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

/// Request parameters with our send completion callback and the operation's slot (reported
/// as `SendDone { token }`).
fn send_param(slot: usize) -> ucp_request_param_t {
    // Safety: plain data.
    let mut p: ucp_request_param_t = unsafe { std::mem::zeroed() };
    p.op_attr_mask =
        ucp_op_attr_t::UCP_OP_ATTR_FIELD_CALLBACK as u32 | ucp_op_attr_t::UCP_OP_ATTR_FIELD_USER_DATA as u32;
    // Safety: same ABI as ucp_send_nbx_callback_t (status received as i8, see ffi.rs).
    p.cb.send = Some(unsafe {
        std::mem::transmute::<ffi::SendCallback, unsafe extern "C" fn(*mut c_void, ucs_status_t, *mut c_void)>(
            send_callback,
        )
    });
    p.user_data = slot as *mut c_void;
    p
}

/// Request parameters with our receive completion callback (reported as `RecvDone`).
fn recv_param(slot: usize) -> ucp_request_param_t {
    // Safety: plain data.
    let mut p: ucp_request_param_t = unsafe { std::mem::zeroed() };
    p.op_attr_mask =
        ucp_op_attr_t::UCP_OP_ATTR_FIELD_CALLBACK as u32 | ucp_op_attr_t::UCP_OP_ATTR_FIELD_USER_DATA as u32;
    // Safety: same ABI as ucp_am_recv_data_nbx_callback_t (status as i8, see ffi.rs).
    p.cb.recv_am = Some(unsafe {
        std::mem::transmute::<ffi::RecvDataCallback, unsafe extern "C" fn(*mut c_void, ucs_status_t, size_t, *mut c_void)>(
            recv_data_callback,
        )
    });
    p.user_data = slot as *mut c_void;
    p
}

/// An incoming connection not yet accepted.
pub struct ConnRequest {
    raw: ucp_conn_request_h,
}

fn is_request(p: *mut c_void) -> bool {
    // UCS_PTR_IS_PTR: neither NULL nor an error code encoded in the pointer.
    let v = p as usize;
    v != 0 && v < (-100isize) as usize
}

fn started(r: *mut c_void) -> Result<Started, UcxError> {
    if r.is_null() {
        return Ok(Started::Done);
    }
    if is_request(r) {
        return Ok(Started::InProgress);
    }
    // UCS_PTR_STATUS: the error code is the pointer's value.
    check(r as isize as i8).map(|_| Started::Done)
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, socklen_t) {
    // Safety: sockaddr_storage is plain data large enough for any address.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // Safety: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut s as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // Safety: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut s as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as socklen_t)
}

/// # Safety
/// `s` must hold a sockaddr of the family it names.
unsafe fn socket_addr_from(s: &sockaddr_storage) -> Option<SocketAddr> {
    let family = s.ss_family as i32;
    if family == libc::AF_INET {
        // Safety: the family says sockaddr_in.
        let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
        let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
        Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
    } else if family == libc::AF_INET6 {
        // Safety: the family says sockaddr_in6.
        let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
        Some(SocketAddr::from((
            std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
        )))
    } else {
        None
    }
}

/// Runs `f` with the handler installed by `progress`, if any.
///
/// # Safety
/// `arg` must be the worker's callback context pointer.
unsafe fn with_handler(arg: *mut c_void, f: impl FnOnce(&mut dyn for<'a> FnMut(WorkerEvent<'a>))) {
    // Safety: the context outlives every callback (it is freed after the worker).
    let ctx = unsafe { &*(arg as *const RefCell<CallbackCtx>) };
    let h = ctx.borrow().handler;
    if let Some(h) = h {
        // Safety: set by `progress` from a live `&mut` handler for the duration of the
        // progress call, which is the only time UCX invokes callbacks.
        f(unsafe { &mut *h });
    }
}

unsafe extern "C" fn am_callback(
    arg: *mut c_void,
    header: *const c_void,
    header_length: size_t,
    data: *mut c_void,
    length: size_t,
    param: *const ucp_am_recv_param_t,
) -> ucs_status_t {
    let (header_length, length) = (header_length as usize, length as usize);
    // Safety: UCX passes valid header/data pointers of the given lengths and a valid param.
    let param = unsafe { &*param };
    let header = if header_length == 0 {
        &[][..]
    } else {
        // Safety: as above.
        unsafe { std::slice::from_raw_parts(header as *const u8, header_length) }
    };
    let rndv = param.recv_attr & ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FLAG_RNDV as u64 != 0;
    let reply_ep = (param.recv_attr & ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FIELD_REPLY_EP as u64 != 0)
        .then_some(param.reply_ep as usize);
    // Safety: arg is the AmArg registered with this handler; it lives as long as the worker.
    let AmArg { ctx: ctx_ptr, id } = unsafe { &*(arg as *const AmArg) };
    let (id, arg) = (*id, *ctx_ptr as *mut c_void);
    // Safety: the callback context outlives the worker's callbacks.
    let worker = unsafe { &*(*ctx_ptr) }.borrow().worker;
    let body = if rndv {
        RNDV_IN_CALLBACK.with(|c| c.set(data));
        AmData::Rndv(RndvData {
            desc: data,
            len: length,
            worker,
        })
    } else if length == 0 {
        AmData::Eager(&[])
    } else {
        // Safety: eager data is valid for the duration of this callback.
        AmData::Eager(unsafe { std::slice::from_raw_parts(data as *const u8, length) })
    };
    let mut body = Some(body);
    // Safety: arg is our callback context.
    unsafe {
        with_handler(arg, |h| {
            h(WorkerEvent::Am(AmMessage {
                id,
                header,
                data: body.take().expect("once"),
                reply_ep,
            }));
        })
    };
    // A handler that ignored the message left it here: dropping it now counts as dropped in
    // the callback.
    drop(body);
    // UCS_INPROGRESS keeps a rendezvous descriptor the handler took (received or released
    // later); UCS_OK says we keep nothing (eager data is only borrowed during the callback).
    let kept = rndv && RNDV_IN_CALLBACK.with(|c| c.replace(std::ptr::null_mut())) == data;
    if kept {
        ucs_status_t::UCS_INPROGRESS
    } else {
        ucs_status_t::UCS_OK
    }
}

unsafe extern "C" fn conn_callback(conn_request: ucp_conn_request_h, arg: *mut c_void) {
    // Safety: arg is our callback context; accepting happens outside progress.
    let ctx = unsafe { &*(arg as *const RefCell<CallbackCtx>) };
    ctx.borrow_mut().conn_requests.push(conn_request);
}

unsafe extern "C" fn err_callback(arg: *mut c_void, ep: ucp_ep_h, status: raw_status) {
    let error = check(status).err().unwrap_or(UcxError::Other(status));
    // Safety: arg is our callback context.
    unsafe { with_handler(arg, |h| h(WorkerEvent::EndpointFailed { ep: ep as usize, error })) };
}

// The worker's callback context reached from a request: UCX gives requests no worker
// argument, so completions go through a thread-local set by `progress`.
thread_local! {
    static CURRENT: std::cell::Cell<*mut c_void> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

unsafe extern "C" fn send_callback(request: *mut c_void, status: raw_status, user_data: *mut c_void) {
    let result = check(status);
    finish(user_data as usize, |token| WorkerEvent::SendDone { token, result });
    // Safety: a completed request handed to our callback; freed exactly once, here.
    unsafe { ucp_request_free(request) };
}

unsafe extern "C" fn recv_data_callback(
    request: *mut c_void,
    status: raw_status,
    length: size_t,
    user_data: *mut c_void,
) {
    let result = check(status).map(|_| length as usize);
    finish(user_data as usize, |token| WorkerEvent::RecvDone { token, result });
    // Safety: as in send_callback.
    unsafe { ucp_request_free(request) };
}

/// An operation completed: its holdings go to `finished` (dropped when `progress` returns)
/// and its event, with the caller's token, to the handler.
fn finish(slot: usize, event: impl FnOnce(u64) -> WorkerEvent<'static>) {
    let ctx = CURRENT.with(|c| c.get());
    if ctx.is_null() {
        // Not inside progress (the worker is being destroyed): the holdings stay in the
        // context, released after the worker.
        return;
    }
    // Safety: CURRENT is set by `progress` to this thread's worker context; no other borrow
    // of it is alive inside a callback.
    let op = unsafe { (*(ctx as *const RefCell<CallbackCtx>)).borrow_mut().release(slot) };
    let Some(op) = op else { return };
    let token = op.token;
    // Safety: as above.
    unsafe { (*(ctx as *const RefCell<CallbackCtx>)).borrow_mut().finished.push(op) };
    deliver(event(token));
}

fn deliver(ev: WorkerEvent<'_>) {
    let ctx = CURRENT.with(|c| c.get());
    if !ctx.is_null() {
        let mut ev = Some(ev);
        // Safety: CURRENT is set by `progress` to this thread's worker context.
        unsafe { with_handler(ctx, |h| h(ev.take().expect("once"))) };
    }
}
