//! The in-flight slot table: what each operation UCX still works on holds (memory, header,
//! remote key), by the slot passed to UCX as the request's user data, and the completion
//! callbacks that release a slot and report the caller's token.
//!
//! Completions outside `progress`: UCX also runs completion callbacks inside calls other than
//! `ucp_worker_progress` — `ucp_ep_close_nbx` with the force flag completes (cancels) every
//! request of the endpoint before it returns, and a start call may complete its own request
//! before returning it. Every UCX call of the worker that may do so runs with [`CURRENT`]
//! set ([`Worker::entered`]), so such a callback still releases its slot; its event, with no
//! handler to take it, waits in [`CallbackCtx::queued`] and is delivered first thing in the
//! next `progress` (and [`Worker::arm`] refuses to sleep while one waits). An event is never
//! dropped: the caller that started an operation reported `InProgress` gets exactly one.

use std::cell::RefCell;
use std::os::raw::c_void;

use ucx1_sys::*;

use super::{EpKey, RemoteKey, Started, Worker, WorkerEvent};
use crate::ucx::ffi::{self, raw_status};
use crate::ucx::mem::ReadMem;
use crate::ucx::{check, UcxError};

pub(super) struct CallbackCtx {
    /// The caller's handler, set only while `progress` runs.
    pub(super) handler: Option<*mut (dyn for<'a> FnMut(WorkerEvent<'a>) + 'static)>,
    pub(super) conn_requests: Vec<ucp_conn_request_h>,
    pub(super) worker: ucp_worker_h,
    /// What operations in flight hold (their memory, header, remote key), by the slot UCX
    /// passes back to the completion callback as its user data.
    pub(super) ops: Vec<Option<InFlight>>,
    /// Free slots of `ops`.
    pub(super) free: Vec<usize>,
    /// Holdings of operations that completed, dropped when the current or next `progress`
    /// returns (dropping them may call UCX: a registration, a remote key).
    pub(super) finished: Vec<InFlight>,
    /// Completions that came with no handler installed (inside a start or close call), for
    /// the next `progress`; with the slot they came from.
    pub(super) queued: Vec<(usize, Completion)>,
}

/// An event kept for later (it borrows nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Completion {
    Send {
        token: u64,
        result: Result<(), UcxError>,
    },
    Recv {
        token: u64,
        result: Result<usize, UcxError>,
    },
    EndpointFailed {
        ep: EpKey,
        error: UcxError,
    },
}

/// The slot of a queued event that comes from no operation (an endpoint's failure).
pub(super) const NO_SLOT: usize = usize::MAX;

impl Completion {
    pub(super) fn event(self) -> WorkerEvent<'static> {
        match self {
            Completion::Send { token, result } => WorkerEvent::SendDone { token, result },
            Completion::Recv { token, result } => WorkerEvent::RecvDone { token, result },
            Completion::EndpointFailed { ep, error } => WorkerEvent::EndpointFailed { ep, error },
        }
    }
}

/// What an operation in flight keeps alive until UCX is done with it.
pub(super) struct InFlight {
    /// The caller's token, reported in the completion event.
    pub(super) token: u64,
    pub(super) _header: Option<Box<[u8]>>,
    pub(super) _mem: Option<Box<dyn ReadMem>>,
    pub(super) _rkey: Option<RemoteKey>,
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

impl Worker {
    /// Starts an operation that holds `op` until UCX is done with it: `start` gets the
    /// request parameters (completion callback and slot) and returns UCX's status pointer.
    pub(super) fn start_op(
        &mut self,
        op: InFlight,
        recv: bool,
        start: impl FnOnce(&ucp_request_param_t) -> *mut c_void,
    ) -> Result<Started, UcxError> {
        // Safety: ctx is live; no borrow is held outside progress, and this is not called
        // from a callback (the handler must not call back into the worker).
        let slot = unsafe { (*self.ctx).borrow_mut().hold(op) };
        let p = if recv { recv_param(slot) } else { send_param(slot) };
        let r = self.entered(|| start(&p));
        let st = started(r);
        if st != Ok(Started::InProgress) {
            // Done at once, or failed to start: UCX let go already, and the caller learns of
            // it from the return value alone: a completion the call ran anyway is not
            // reported a second time.
            // Safety: as above.
            let op = unsafe {
                let mut ctx = (*self.ctx).borrow_mut();
                ctx.queued.retain(|&(s, _)| s != slot);
                ctx.release(slot)
            };
            drop(op);
        }
        st
    }

    /// Runs a UCX call of this worker with [`CURRENT`] set, so that completion callbacks UCX
    /// runs inside it release their slots and queue their events.
    pub(super) fn entered<R>(&self, call: impl FnOnce() -> R) -> R {
        let outer = CURRENT.with(|c| c.replace(self.ctx as *mut c_void));
        let r = call();
        CURRENT.with(|c| c.set(outer));
        r
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

pub(super) fn is_request(p: *mut c_void) -> bool {
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

/// Runs `f` with the handler installed by `progress`, if any.
///
/// # Safety
/// `arg` must be the worker's callback context pointer.
pub(super) unsafe fn with_handler(arg: *mut c_void, f: impl FnOnce(&mut dyn for<'a> FnMut(WorkerEvent<'a>))) {
    // Safety: the context outlives every callback (it is freed after the worker).
    let ctx = unsafe { &*(arg as *const RefCell<CallbackCtx>) };
    let h = ctx.borrow().handler;
    if let Some(h) = h {
        // Safety: set by `progress` from a live `&mut` handler for the duration of the
        // progress call, which is the only time UCX invokes callbacks.
        f(unsafe { &mut *h });
    }
}

// The worker's callback context reached from a request: UCX gives requests no worker
// argument, so completions go through a thread-local set by `progress`.
thread_local! {
    pub(super) static CURRENT: std::cell::Cell<*mut c_void> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

unsafe extern "C" fn send_callback(request: *mut c_void, status: raw_status, user_data: *mut c_void) {
    let result = check(status);
    finish(user_data as usize, |token| Completion::Send { token, result });
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
    finish(user_data as usize, |token| Completion::Recv { token, result });
    // Safety: as in send_callback.
    unsafe { ucp_request_free(request) };
}

/// An operation completed: its holdings go to `finished` (dropped when `progress` returns)
/// and its event, with the caller's token, to the handler, or to `queued` outside `progress`.
fn finish(slot: usize, completion: impl FnOnce(u64) -> Completion) {
    let ctx = CURRENT.with(|c| c.get());
    if ctx.is_null() {
        // Every UCX call that can complete requests runs entered (Worker::entered, progress):
        // this is a call that does not, or a bug. The holdings stay in the context, released
        // after the worker.
        debug_assert!(false, "a UCX completion callback ran outside Worker::entered");
        return;
    }
    // Safety: CURRENT is set by `progress` or `entered` to this thread's worker context, which
    // lives as long as the worker; no other borrow of it is alive inside a callback.
    let ctx = unsafe { &*(ctx as *const RefCell<CallbackCtx>) };
    let (completion, handler) = {
        let mut c = ctx.borrow_mut();
        let Some(op) = c.release(slot) else { return };
        let completion = completion(op.token);
        c.finished.push(op);
        if c.handler.is_none() {
            c.queued.push((slot, completion));
        }
        (completion, c.handler)
    };
    if let Some(h) = handler {
        // Safety: set by `progress` from a live `&mut` handler for the duration of the
        // progress call, which this callback runs inside of; no borrow of ctx is held.
        unsafe { (*h)(completion.event()) };
    }
}
