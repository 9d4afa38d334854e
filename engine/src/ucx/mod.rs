//! The engine's only door to UCX: a small safe wrapper over `ucx1-sys`. All `unsafe` UCX
//! calls live in this module; the rest of the engine sees [`Context`], [`Worker`],
//! [`Endpoint`] and [`Listener`] and plain Rust callbacks, and hands UCX memory as values it
//! keeps until UCX is done with them ([`mem`]).

mod ffi;
pub mod mem;
pub mod runtime;
mod worker;

use std::ffi::CString;
use std::sync::Arc;

pub use mem::{ArcBytes, ReadMem, RecvBuf, WriteMem};
pub use worker::{
    AmData, AmMessage, AmProtocol, Endpoint, EpKey, Listener, RemoteKey, RndvData, Started, Worker, WorkerEvent,
};

/// A UCX status that is an error, as a Rust value. Unknown codes (a newer libucp) are kept as
/// numbers rather than trusted to an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UcxError {
    #[error("UCX: no resources (try again)")]
    NoResource,
    #[error("UCX: I/O error")]
    Io,
    #[error("UCX: peer unreachable")]
    Unreachable,
    #[error("UCX: invalid address")]
    InvalidAddr,
    #[error("UCX: operation canceled")]
    Canceled,
    #[error("UCX: connection rejected")]
    Rejected,
    #[error("UCX: not connected")]
    NotConnected,
    #[error("UCX: connection reset by peer")]
    ConnectionReset,
    #[error("UCX: endpoint timeout")]
    EndpointTimeout,
    #[error("UCX: busy (address already in use?)")]
    Busy,
    #[error("UCX: out of memory")]
    NoMemory,
    #[error("UCX: invalid parameter")]
    InvalidParam,
    #[error("UCX: timed out")]
    TimedOut,
    #[error("UCX error code {0}")]
    Other(i8),
}

/// A raw status checked into a `Result`: 0 is OK, 1 is "in progress" (reported as Ok by the
/// callers that expect it), negative codes are errors.
pub(crate) fn check(status: ffi::raw_status) -> Result<(), UcxError> {
    if status >= 0 {
        return Ok(());
    }
    Err(match status {
        -2 => UcxError::NoResource,
        -3 => UcxError::Io,
        -6 => UcxError::Unreachable,
        -7 => UcxError::InvalidAddr,
        -16 => UcxError::Canceled,
        -23 => UcxError::Rejected,
        -24 => UcxError::NotConnected,
        -25 => UcxError::ConnectionReset,
        -80 => UcxError::EndpointTimeout,
        -4 => UcxError::NoMemory,
        -5 => UcxError::InvalidParam,
        -15 => UcxError::Busy,
        -20 => UcxError::TimedOut,
        c => UcxError::Other(c),
    })
}

/// Version of the libucp actually loaded at run time (the system's libucx0 when installed,
/// which may differ from the headers ucx1-sys was built with).
pub fn loaded_version() -> (u32, u32, u32) {
    let (mut major, mut minor, mut release) = (0, 0, 0);
    // Safety: ucp_get_version only writes the three integers it is given pointers to.
    unsafe { ucx1_sys::ucp_get_version(&mut major, &mut minor, &mut release) };
    (major, minor, release)
}

/// A UCP context: features AM + RMA + WAKEUP, shared by the engine's workers (each worker
/// thread creates its own single-threaded [`Worker`] from it).
pub struct Context {
    raw: ucx1_sys::ucp_context_h,
}

// Safety: the context is created with mt_workers_shared = 1, which makes it safe to create
// and use workers from several threads; the handle itself is only read after creation.
unsafe impl Send for Context {}
// Safety: as above.
unsafe impl Sync for Context {}

impl Context {
    /// Creates a context. `transports` (UCX_TLS syntax, e.g. "sm,tcp") and `net_devices`
    /// (UCX_NET_DEVICES) override the environment when given.
    pub fn new(transports: Option<&str>, net_devices: Option<&str>) -> Result<Arc<Self>, UcxError> {
        use ucx1_sys::*;
        let mut config: *mut ucp_config_t = std::ptr::null_mut();
        // Safety: a null prefix/file reads the UCX_* environment; config is an out-pointer.
        check(unsafe { ffi::ucp_config_read(std::ptr::null(), std::ptr::null(), &mut config) })?;
        let release = |c| {
            // Safety: c came from ucp_config_read and is released exactly once.
            unsafe { ucp_config_release(c) }
        };
        for (name, value) in [("TLS", transports), ("NET_DEVICES", net_devices)] {
            if let Some(v) = value {
                let (n, v) = (
                    CString::new(name).unwrap(),
                    CString::new(v).map_err(|_| UcxError::InvalidAddr)?,
                );
                // Safety: config is valid; both strings are NUL-terminated and outlive the call.
                if let Err(e) = check(unsafe { ffi::ucp_config_modify(config, n.as_ptr(), v.as_ptr()) }) {
                    release(config);
                    return Err(e);
                }
            }
        }
        // Safety: ucp_params_t is plain data; zero is "no field set".
        let mut params: ucp_params_t = unsafe { std::mem::zeroed() };
        params.field_mask =
            (ucp_params_field::UCP_PARAM_FIELD_FEATURES | ucp_params_field::UCP_PARAM_FIELD_MT_WORKERS_SHARED).0 as u64;
        params.features =
            (ucp_feature::UCP_FEATURE_AM | ucp_feature::UCP_FEATURE_RMA | ucp_feature::UCP_FEATURE_WAKEUP).0 as u64;
        params.mt_workers_shared = 1;
        let mut raw: ucp_context_h = std::ptr::null_mut();
        // Safety: params and config are valid for the call; raw is an out-pointer. The API
        // version is the one of the headers we were built with.
        let status = unsafe { ffi::ucp_init_version(UCP_API_MAJOR, UCP_API_MINOR, &params, config, &mut raw) };
        release(config);
        check(status)?;
        Ok(Arc::new(Self { raw }))
    }

    pub(crate) fn raw(&self) -> ucx1_sys::ucp_context_h {
        self.raw
    }
}

/// Registrations alive in this process (for status and leak tests).
static LIVE_REGISTRATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many UCX memory registrations this process holds now.
pub fn live_registrations() -> usize {
    LIVE_REGISTRATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Memory registered with UCX (pinned for RDMA where the transport needs it). Holds the
/// memory until it is unregistered, on drop.
pub struct Registration {
    memh: ucx1_sys::ucp_mem_h,
    context: Arc<Context>,
    pub len: usize,
    addr: u64,
    /// Dropped after the unregistration (Drop), so the memory outlives it.
    mem: Option<Box<dyn std::any::Any + Send + Sync>>,
}

// Safety: a memory handle is a context-level object; the context is created for use from
// several threads (mt_workers_shared), and the handle is only passed back to UCX.
unsafe impl Send for Registration {}
// Safety: as above; no method mutates through &self.
unsafe impl Sync for Registration {}

impl Context {
    /// Registers `mem` with UCX; the registration holds it until dropped.
    pub fn register<M: mem::WriteMem + Send + Sync>(self: &Arc<Self>, mem: M) -> Result<Registration, UcxError> {
        use ucx1_sys::*;
        let (addr, len) = (mem.as_mut_ptr(), mem.len());
        // Safety: plain data.
        let mut p: ucp_mem_map_params_t = unsafe { std::mem::zeroed() };
        p.field_mask = (ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_ADDRESS
            | ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_LENGTH)
            .0 as u64;
        p.address = addr as *mut std::os::raw::c_void;
        p.length = len as size_t;
        let mut memh: ucp_mem_h = std::ptr::null_mut();
        // Safety: live context; the memory stays mapped while the registration holds it
        // (WriteMem's contract); memh is an out-pointer.
        check(unsafe { ffi::ucp_mem_map(self.raw, &p, &mut memh) })?;
        LIVE_REGISTRATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Registration {
            memh,
            context: self.clone(),
            len,
            addr: addr as u64,
            mem: Some(Box::new(mem)),
        })
    }
}

impl Registration {
    /// Where the registered memory starts (the address peers name in gets and puts).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The remote key peers need to access this memory with one-sided get/put.
    pub fn pack_rkey(&self) -> Result<Vec<u8>, UcxError> {
        let mut buf: *mut std::os::raw::c_void = std::ptr::null_mut();
        let mut size: ucx1_sys::size_t = 0;
        // Safety: live context and memory handle; buf/size are out-pointers.
        check(unsafe { ffi::ucp_rkey_pack(self.context.raw, self.memh, &mut buf, &mut size) })?;
        // Safety: UCX returned a buffer of `size` bytes, copied here and released once.
        let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, size as usize) }.to_vec();
        // Safety: as above.
        unsafe { ucx1_sys::ucp_rkey_buffer_release(buf) };
        Ok(bytes)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Safety: memh came from ucp_mem_map on this context and is unmapped exactly once; an
        // error here (there is none to handle) would only leak the registration.
        let _ = unsafe { ffi::ucp_mem_unmap(self.context.raw, self.memh) };
        LIVE_REGISTRATIONS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // Only now may the memory go.
        drop(self.mem.take());
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // Safety: every Worker holds an Arc<Context>, so none is alive any more.
        unsafe { ucx1_sys::ucp_cleanup(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn libucp_loads_and_reports_a_version() {
        let (major, minor, _) = super::loaded_version();
        assert!(major >= 1 && minor > 0, "unexpected UCX version {major}.{minor}");
    }

    #[test]
    fn unknown_status_codes_stay_numbers() {
        assert_eq!(super::check(0), Ok(()));
        assert_eq!(super::check(1), Ok(()));
        assert_eq!(super::check(-25), Err(super::UcxError::ConnectionReset));
        assert_eq!(super::check(-120), Err(super::UcxError::Other(-120)));
    }
}

#[cfg(test)]
mod loopback_tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    /// One worker connects to its own listener and sends itself an eager and a rendezvous
    /// message over tcp on loopback: the whole wrapper (listen, connect, accept, AM eager
    /// and rendezvous receive, send completion, close) against the real libucp.
    #[test]
    fn worker_talks_to_its_own_listener() {
        let ctx = Context::new(Some("tcp"), Some("lo")).expect("UCX context");
        let mut w = Worker::new(ctx, &[7]).expect("worker");
        let listener = w.listen("127.0.0.1:0".parse::<SocketAddr>().unwrap()).expect("listen");
        assert_ne!(listener.addr.port(), 0, "bound port is reported");
        let ep = w.connect(listener.addr).expect("connect");
        let small = b"hello over ucx".to_vec();
        let big: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut rndv: Vec<RndvData> = Vec::new();
        let mut sends_done = 0;
        let mut accepted = Vec::new();
        let s1 = w.am_send(&ep, 7, Box::new(*b"h1"), small.clone(), true, 1).unwrap();
        let s2 = w.am_send(&ep, 7, Box::new(*b"h2"), big.clone(), true, 2).unwrap();
        sends_done += (s1 == Started::Done) as usize + (s2 == Started::Done) as usize;
        let big_in = RecvBuf::new(big.len());
        let mut recv_done = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(got.len() == 2 && sends_done == 2 && recv_done) {
            assert!(
                Instant::now() < deadline,
                "loopback did not finish: got {} sends {sends_done}",
                got.len()
            );
            w.progress(&mut |ev| match ev {
                WorkerEvent::Am(m) => match m.data {
                    AmData::Eager(d) => got.push((m.header.to_vec(), d.to_vec())),
                    AmData::Rndv(r) => {
                        got.push((m.header.to_vec(), Vec::new()));
                        rndv.push(r);
                    }
                },
                WorkerEvent::SendDone { result, .. } => {
                    result.unwrap();
                    sends_done += 1;
                }
                WorkerEvent::RecvDone { result, .. } => {
                    assert_eq!(result.unwrap(), big.len());
                    recv_done = true;
                }
                WorkerEvent::EndpointFailed { error, .. } => panic!("endpoint failed: {error}"),
            });
            for req in w.take_conn_requests() {
                accepted.push(w.accept(req).expect("accept"));
            }
            for r in rndv.drain(..) {
                let st = w.recv_rndv_into(r, &big_in, 9).unwrap();
                if st == Started::Done {
                    recv_done = true;
                }
            }
            // The big message may also have come eagerly (rendezvous threshold not hit).
            recv_done |= got.iter().any(|(h, d)| h == b"h2" && !d.is_empty());
        }
        let small_in = got.iter().find(|(h, _)| h == b"h1").unwrap();
        assert_eq!(small_in.1, small);
        let eager_big = got.iter().find(|(h, _)| h == b"h2").unwrap();
        if eager_big.1.is_empty() {
            eprintln!("1 MiB came by rendezvous");
            assert!(
                big_in.into_vec().expect("receive done") == big,
                "rendezvous bytes differ"
            );
        } else {
            assert!(eager_big.1 == big, "eager bytes differ");
        }
        assert!(
            w.ep_info(&ep).contains("tcp/lo"),
            "endpoint description names its transport"
        );
        w.close(ep);
        for e in accepted {
            w.close(e);
        }
        listener.destroy();
    }

    /// A forced close cancels the endpoint's requests inside `ucp_ep_close_nbx`, outside
    /// progress: each still releases what it held and reports its completion, at the next
    /// progress.
    #[test]
    fn closing_an_endpoint_completes_its_requests_in_flight() {
        let ctx = Context::new(Some("tcp"), Some("lo")).expect("UCX context");
        let mut w = Worker::new(ctx, &[7]).expect("worker");
        let listener = w.listen("127.0.0.1:0".parse::<SocketAddr>().unwrap()).expect("listen");
        let ep = w.connect(listener.addr).expect("connect");
        // 64 MiB cannot leave in one call (nor before the connection is up): in flight.
        let st = w
            .am_send(&ep, 7, Box::new(*b"h"), vec![7u8; 64 << 20], false, 42)
            .unwrap();
        assert_eq!(st, Started::InProgress);
        assert_eq!(w.in_flight(), 1);
        w.close(ep);
        assert_eq!(w.in_flight(), 0, "the close released what the send held");
        let mut done = Vec::new();
        let mut accepted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the cancelled send never reported its completion"
            );
            w.progress(&mut |ev| {
                if let WorkerEvent::SendDone { token, result } = ev {
                    done.push((token, result));
                }
            });
            for req in w.take_conn_requests() {
                accepted.extend(w.accept(req).ok());
            }
        }
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].0, 42);
        assert!(done[0].1.is_err(), "a cancelled send reports an error: {done:?}");
        for e in accepted {
            w.close(e);
        }
        listener.destroy();
    }

    #[test]
    fn registration_of_shared_memory_and_release() {
        let ctx = Context::new(Some("tcp"), Some("lo")).expect("UCX context");
        let before = live_registrations();
        for _ in 0..100 {
            let mem = RecvBuf::new(1 << 20);
            let r = ctx.register(mem).expect("register");
            assert_eq!(r.len, 1 << 20);
        }
        assert_eq!(live_registrations(), before, "every registration released");
    }
}
