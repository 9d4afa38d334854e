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
//!
//! Files: this one holds the worker, its progress loop and the active-message callback;
//! `worker/endpoint.rs` listeners, endpoints and their error callback; `worker/ops.rs` the
//! operations (sends, rendezvous receives, gets, puts, flushes) and remote keys;
//! `worker/inflight.rs` the slot table and the completion callbacks.

mod endpoint;
mod inflight;
mod ops;

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::os::raw::c_void;
use std::sync::Arc;

use ucx1_sys::*;

use super::ffi;
use super::{check, Context, UcxError};
use inflight::{with_handler, CallbackCtx, CURRENT};

pub use endpoint::{Endpoint, Listener};
pub use ops::{AmProtocol, RemoteKey};

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

pub struct Worker {
    raw: ucp_worker_h,
    ctx: *mut RefCell<CallbackCtx>,
    /// One argument per registered active-message id (UCX does not pass the id to the
    /// callback); freed with the worker.
    am_args: Vec<*mut AmArg>,
    /// Close requests of endpoints ([`Worker::close`]) UCX has not finished; freed by
    /// `progress` once complete (and waited for before the worker is destroyed).
    closing: Vec<*mut c_void>,
    efd: RawFd,
    _context: Arc<Context>,
}

struct AmArg {
    ctx: *mut RefCell<CallbackCtx>,
    id: u16,
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
            queued: Vec::new(),
        })));
        let mut efd = -1;
        let mut w = Self {
            raw,
            ctx,
            am_args: Vec::new(),
            closing: Vec::new(),
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

    /// Operations UCX still works on (sends, receives, gets, puts, flushes whose completion
    /// has not come): each holds its memory and remote key until then.
    pub fn in_flight(&self) -> usize {
        // Safety: ctx is live; no borrow is held outside progress.
        let ctx = unsafe { (*self.ctx).borrow() };
        ctx.ops.len() - ctx.free.len()
    }

    /// The worker's event fd: readable when UCX has events after [`Worker::arm`].
    pub fn event_fd(&self) -> RawFd {
        self.efd
    }

    /// Arms the event fd before sleeping. False means events are pending: progress instead.
    pub fn arm(&self) -> bool {
        // Completions queued outside progress wake no fd: they are the events pending.
        // Safety: ctx is live; no borrow is held outside progress.
        if !unsafe { (*self.ctx).borrow().queued.is_empty() } {
            return false;
        }
        // Safety: live worker.
        let s = unsafe { ffi::ucp_worker_arm(self.raw) };
        s == 0
    }

    /// Progresses communication, delivering events to `handler`. Returns whether anything
    /// happened. The handler must not call back into this worker.
    pub fn progress(&mut self, handler: &mut dyn for<'a> FnMut(WorkerEvent<'a>)) -> bool {
        let h: *mut (dyn for<'a> FnMut(WorkerEvent<'a>) + '_) = handler;
        // Safety: only the trait object's lifetime bound changes ('_ to 'static; same fat
        // pointer layout). The pointer is only used during this call (cleared below, before
        // the borrow of `handler` ends), and only from callbacks UCX runs inside
        // ucp_worker_progress on this thread, so it never outlives the borrow.
        let h: *mut (dyn for<'a> FnMut(WorkerEvent<'a>) + 'static) = unsafe { std::mem::transmute(h) };
        // Safety: ctx is live for the worker's lifetime; no borrow is held across progress.
        // Completions that came outside progress, first (in the order they came).
        // Safety: as above.
        let queued = unsafe {
            let mut ctx = (*self.ctx).borrow_mut();
            ctx.handler = Some(h);
            std::mem::take(&mut ctx.queued)
        };
        let mut any = !queued.is_empty();
        for (_, c) in queued {
            handler(c.event());
        }
        let outer = CURRENT.with(|c| c.replace(self.ctx as *mut c_void));
        // Safety: live worker, called on its own thread (thread mode single).
        while unsafe { ucp_worker_progress(self.raw) } != 0 {
            any = true;
        }
        CURRENT.with(|c| c.set(outer));
        self.closing.retain(|&r| {
            // Safety: a live close request of this worker, freed once when complete.
            unsafe {
                if ffi::ucp_request_check_status(r) == 1 {
                    return true;
                }
                ucp_request_free(r);
            }
            false
        });
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
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Endpoints closed last may still be closing: finish that (completions it runs are
        // dropped with no one left to take them).
        let mut ignore = |_: WorkerEvent<'_>| {};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !self.closing.is_empty() && std::time::Instant::now() < deadline {
            self.progress(&mut ignore);
        }
        if !self.closing.is_empty() {
            // A forced close that never finishes: its requests are leaked, not freed under UCX.
            tracing::warn!(
                requests = self.closing.len(),
                "UCX endpoint closes unfinished after 5 s at worker shutdown"
            );
        }
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
