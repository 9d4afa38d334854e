//! Endpoints: listening, connection requests, connecting and accepting, closing, and the
//! endpoint error callback.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::raw::c_void;

use ucx1_sys::*;

use super::inflight::{is_request, CallbackCtx, Completion, NO_SLOT};
use super::{EpKey, Worker};
use crate::ucx::ffi::{self, raw_status};
use crate::ucx::{check, UcxError};

pub struct Listener {
    raw: ucp_listener_h,
    pub addr: SocketAddr,
}

/// A connection to a peer engine. Not closed on drop: close it explicitly (the worker must
/// progress the close).
pub struct Endpoint {
    pub(super) raw: ucp_ep_h,
}

/// An incoming connection not yet accepted.
pub struct ConnRequest {
    raw: ucp_conn_request_h,
}

impl Worker {
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

    /// Closes an endpoint (force: no flush). UCX cancels the endpoint's requests inside this
    /// call: each of them still gets its completion event (an error), delivered by the next
    /// [`Worker::progress`] to its handler. The close itself finishes during later progress
    /// calls; nothing waits for it here, so events of other endpoints are never taken out of
    /// the handler's hands.
    pub fn close(&mut self, ep: Endpoint) {
        // Safety: plain data; no callback, progress checks the request.
        let mut p: ucp_request_param_t = unsafe { std::mem::zeroed() };
        p.op_attr_mask = ucp_op_attr_t::UCP_OP_ATTR_FIELD_FLAGS as u32;
        p.flags = ucp_ep_close_flags_t::UCP_EP_CLOSE_FLAG_FORCE.0;
        // Safety: live ep of this worker, closed exactly once (Endpoint is consumed); entered,
        // so the requests it cancels release their slots.
        let r = self.entered(|| unsafe { ucp_ep_close_nbx(ep.raw, &p) });
        if is_request(r) {
            self.closing.push(r);
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

unsafe extern "C" fn conn_callback(conn_request: ucp_conn_request_h, arg: *mut c_void) {
    // Safety: arg is our callback context; accepting happens outside progress.
    let ctx = unsafe { &*(arg as *const RefCell<CallbackCtx>) };
    ctx.borrow_mut().conn_requests.push(conn_request);
}

unsafe extern "C" fn err_callback(arg: *mut c_void, ep: ucp_ep_h, status: raw_status) {
    let error = check(status).err().unwrap_or(UcxError::Other(status));
    let failed = Completion::EndpointFailed { ep: ep as usize, error };
    // Safety: arg is our callback context, which outlives the worker's callbacks; no borrow
    // of it is held while a callback runs.
    let ctx = unsafe { &*(arg as *const RefCell<CallbackCtx>) };
    let handler = {
        let mut c = ctx.borrow_mut();
        if c.handler.is_none() {
            // Inside a call outside progress: the next progress delivers it.
            c.queued.push((NO_SLOT, failed));
        }
        c.handler
    };
    if let Some(h) = handler {
        // Safety: set by `progress` from a live `&mut` handler for the duration of the
        // progress call this callback runs inside of.
        unsafe { (*h)(failed.event()) };
    }
}
