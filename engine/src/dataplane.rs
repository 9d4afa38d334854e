//! Remote operations: one data plane per engine worker, over that worker's own UCX worker.
//!
//! Engine-to-engine messages (UCX active messages, little-endian headers):
//!
//! ```text
//! AM_REQUEST (id 1)  header: req_id u64 | service u32 | resp_cap u32   data: request payload
//! AM_REPLY   (id 2)  header: req_id u64 | status i32  | 0 u32          data: response payload
//! ```
//!
//! A requester sends AM_REQUEST with the reply flag straight from the client's buffer; the
//! serving engine answers AM_REPLY on the reply endpoint. The reply lands in the client's
//! response buffer: copied from UCX's buffer when it came eagerly, received straight into
//! the shared buffer when it came by rendezvous. Every request is validated on arrival.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use ring_proto::entry::service;
use ring_proto::ResultCode;

use crate::ops::SendRequest;
use crate::session::{Remote, SessionShared};
use engine::ucx::{self, AmData, Endpoint, EpKey, RndvData, Started, UcxError, WorkerEvent};

const AM_REQUEST: u16 = 1;
const AM_REPLY: u16 = 2;
const HEADER_LEN: usize = 16;
/// Tokens of this worker's own sends/receives on behalf of peers (replies, echo receives)
/// have this bit set; requester tokens are request ids.
const SERVER_TOKEN: u64 = 1 << 63;

/// Peer engines known to this engine: handle (index + 1) → listener address and counters.
/// Written by the control thread on `ConnectPeer`, read by workers when they first use a
/// handle and by status/metrics.
#[derive(Default)]
pub struct PeerRegistry {
    peers: RwLock<Vec<Arc<PeerEntry>>>,
}

pub struct PeerEntry {
    pub addr: SocketAddr,
    pub stats: PeerStats,
}

/// Counters of one peer, updated by every worker that talks to it (atomic read-modify-write:
/// several workers share a peer; these are per remote request, not per ring entry).
#[derive(Default)]
pub struct PeerStats {
    /// Workers holding a live connection to the peer.
    pub connected: AtomicU64,
    pub connects: AtomicU64,
    pub requests: AtomicU64,
    /// Requests completed with peer-failed.
    pub failures: AtomicU64,
    pub timeouts: AtomicU64,
    /// Connections that failed (peer died, reset, unreachable).
    pub connection_failures: AtomicU64,
    /// Latency of successful requests, from taking the entry to posting its completion.
    pub latency: LatencyHistogram,
}

/// A Prometheus-style cumulative histogram with fixed bounds (multi-writer, atomic).
pub struct LatencyHistogram {
    /// Count of observations ≤ each bound in `LATENCY_BOUNDS_NS` (not cumulative; the
    /// exposition sums them).
    pub buckets: [AtomicU64; LATENCY_BOUNDS_NS.len()],
    /// Observations above the last bound.
    pub overflow: AtomicU64,
    pub sum_ns: AtomicU64,
}

/// Upper bounds of the latency buckets, in nanoseconds (1 µs to 1 s).
pub const LATENCY_BOUNDS_NS: [u64; 16] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
    100_000_000, 500_000_000, 1_000_000_000,
];

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { buckets: std::array::from_fn(|_| AtomicU64::new(0)), overflow: AtomicU64::new(0), sum_ns: AtomicU64::new(0) }
    }
}

impl LatencyHistogram {
    pub fn record(&self, ns: u64) {
        match LATENCY_BOUNDS_NS.iter().position(|&b| ns <= b) {
            Some(i) => bump(&self.buckets[i]),
            None => bump(&self.overflow),
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl PeerRegistry {
    /// The handle for `addr`, registering it if new.
    pub fn register(&self, addr: SocketAddr) -> u32 {
        let mut a = self.peers.write().expect("peer registry lock");
        if let Some(i) = a.iter().position(|x| x.addr == addr) {
            return i as u32 + 1;
        }
        a.push(Arc::new(PeerEntry { addr, stats: PeerStats::default() }));
        a.len() as u32
    }

    pub fn get(&self, handle: u32) -> Option<Arc<PeerEntry>> {
        let a = self.peers.read().expect("peer registry lock");
        handle.checked_sub(1).and_then(|i| a.get(i as usize).cloned())
    }

    /// Every peer with its handle, for status and metrics.
    pub fn all(&self) -> Vec<(u32, Arc<PeerEntry>)> {
        let a = self.peers.read().expect("peer registry lock");
        a.iter().enumerate().map(|(i, p)| (i as u32 + 1, p.clone())).collect()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every worker's data plane shares.
pub struct UcxSettings {
    pub transports: Option<String>,
    pub net_devices: Option<String>,
    pub listen: Option<SocketAddr>,
    pub request_timeout: Duration,
    pub max_message: usize,
    pub peers: Arc<PeerRegistry>,
    context: OnceLock<Result<Arc<ucx::Context>, UcxError>>,
}

impl UcxSettings {
    pub fn new(cfg: &crate::config::UcxConfig, peers: Arc<PeerRegistry>) -> Self {
        Self {
            transports: cfg.transports.clone(),
            net_devices: cfg.net_devices.clone(),
            listen: cfg.listen.as_ref().and_then(|l| l.parse().ok()),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            max_message: cfg.max_message_bytes as usize,
            peers,
            context: OnceLock::new(),
        }
    }

    /// The engine's UCX context, created on first use by whichever worker needs it first.
    pub fn context(&self) -> Result<Arc<ucx::Context>, UcxError> {
        self.context
            .get_or_init(|| {
                let c = ucx::Context::new(self.transports.as_deref(), self.net_devices.as_deref());
                match &c {
                    Ok(_) => tracing::info!(transports = ?self.transports, net_devices = ?self.net_devices, "UCX context created"),
                    Err(e) => tracing::error!(error = %e, "UCX context creation failed"),
                }
                c
            })
            .clone()
    }
}

/// A completion the data plane produced for a session's request.
pub struct RemoteCompletion {
    pub session: u32,
    pub user_data: u64,
    pub result: i32,
}

struct Pending {
    session: Arc<SessionShared>,
    /// UCX reads the header until the send completes: it lives here, on the heap.
    _header: Box<[u8; HEADER_LEN]>,
    user_data: u64,
    peer: u32,
    peer_stats: Arc<PeerEntry>,
    resp_offset: usize,
    resp_cap: usize,
    started: Instant,
    deadline: Instant,
    /// A rendezvous receive into the client's buffer is running: UCX owns the outcome.
    receiving: bool,
}

/// A reply (header + payload) or an echo receive buffer UCX is using.
struct ServerBuf {
    ep: EpKey,
    req_id: u64,
    data: Vec<u8>,
    _header: Option<Box<[u8; HEADER_LEN]>>,
}

struct PeerConn {
    ep: Endpoint,
    entry: Arc<PeerEntry>,
}

/// Work found during progress that needs UCX calls (made after progress returns).
#[derive(Default)]
struct Deferred {
    replies: Vec<(EpKey, u64, i32, Vec<u8>)>,
    echo_rndv: Vec<(EpKey, u64, RndvData)>,
    reply_rndv: Vec<(u64, RndvData)>,
    failed: Vec<(EpKey, UcxError)>,
    /// Peers whose requests failed on the wire: their connection is treated as failed.
    failed_peers: Vec<(u32, UcxError)>,
}

pub struct DataPlane {
    worker: ucx::Worker,
    listener: Option<ucx::Listener>,
    settings: Arc<UcxSettings>,
    conns: HashMap<u32, PeerConn>,
    accepted: HashMap<EpKey, Endpoint>,
    pending: HashMap<u64, Pending>,
    next_req: u64,
    /// Server-side buffers UCX still reads (replies) or writes (echo receives), by token.
    server_bufs: HashMap<u64, ServerBuf>,
    next_server: u64,
    deferred: Deferred,
    out: Vec<RemoteCompletion>,
}

impl DataPlane {
    /// Creates the worker's UCX worker (on the calling, pinned worker thread) and, if asked,
    /// the engine's listener.
    pub fn new(settings: Arc<UcxSettings>, listen: bool) -> Result<Self, UcxError> {
        let context = settings.context()?;
        let mut worker = ucx::Worker::new(context, &[AM_REQUEST, AM_REPLY])?;
        let listener = match (listen, settings.listen) {
            (true, Some(addr)) => {
                let l = worker.listen(addr)?;
                tracing::info!(address = %l.addr, "UCX listening");
                Some(l)
            }
            _ => None,
        };
        Ok(Self {
            worker,
            listener,
            settings,
            conns: HashMap::new(),
            accepted: HashMap::new(),
            pending: HashMap::new(),
            next_req: 1,
            server_bufs: HashMap::new(),
            next_server: 0,
            deferred: Deferred::default(),
            out: Vec::new(),
        })
    }

    pub fn event_fd(&self) -> std::os::fd::RawFd {
        self.worker.event_fd()
    }

    /// Arms the UCX event fd; false if events are pending (do not sleep).
    pub fn arm(&self) -> bool {
        self.worker.arm()
    }

    /// Requests waiting for a response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The earliest request deadline, for bounding a sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().filter(|p| !p.receiving).map(|p| p.deadline).min()
    }

    /// Progresses UCX and does the work it found; returns completions for sessions.
    pub fn poll(&mut self) -> (bool, &mut Vec<RemoteCompletion>) {
        let max_message = self.settings.max_message;
        let (pending, deferred, out, server_bufs) = (&mut self.pending, &mut self.deferred, &mut self.out, &mut self.server_bufs);
        let mut any = self.worker.progress(&mut |ev| match ev {
            WorkerEvent::Am(m) => {
                tracing::trace!(id = m.id, header = m.header.len(), reply_ep = m.reply_ep.is_some(), "active message");
                let Some(h) = Header::parse(m.header) else {
                    tracing::warn!(len = m.header.len(), "malformed active message header dropped");
                    return;
                };
                match m.id {
                    AM_REQUEST => serve_request(h, m.data, m.reply_ep, max_message, deferred),
                    AM_REPLY => take_reply(h, m.data, pending, deferred, out),
                    _ => {}
                }
            }
            WorkerEvent::SendDone { token, result } => {
                tracing::trace!(token, ?result, "send done");
                if token & SERVER_TOKEN != 0 {
                    server_bufs.remove(&token);
                } else if let Err(e) = result {
                    if let Some(p) = pending.remove(&token) {
                        deferred.failed_peers.push((p.peer, e));
                        out.push(done(&p, ResultCode::PeerFailed as i32));
                    }
                }
            }
            WorkerEvent::RecvDone { token, result } => {
                if token & SERVER_TOKEN != 0 {
                    if let (Some(b), Ok(_)) = (server_bufs.remove(&token), result) {
                        deferred.replies.push((b.ep, b.req_id, 0, b.data));
                    }
                } else if let Some(p) = pending.remove(&token) {
                    let r = result.map_or(ResultCode::PeerFailed as i32, |n| n as i32);
                    out.push(done(&p, r));
                }
            }
            WorkerEvent::EndpointFailed { ep, error } => deferred.failed.push((ep, error)),
        });
        any |= self.after_progress();
        (any, &mut self.out)
    }

    fn after_progress(&mut self) -> bool {
        let mut any = false;
        for req in self.worker.take_conn_requests() {
            any = true;
            match self.worker.accept(req) {
                Ok(ep) => {
                    tracing::info!("peer engine connected");
                    self.accepted.insert(ep.key(), ep);
                }
                Err(e) => tracing::warn!(error = %e, "could not accept a peer connection"),
            }
        }
        let d = std::mem::take(&mut self.deferred);
        for (req_id, data) in d.reply_rndv {
            any = true;
            let Some(p) = self.pending.get_mut(&req_id) else { continue };
            // Safety: resp_offset + data.len <= resp_offset + resp_cap <= buf_size (checked by
            // validation and take_reply); the session's region stays mapped while the
            // Pending holds its Arc, which it does until the receive completes.
            let dst = unsafe { p.session.region.buf_ptr().add(p.resp_offset) };
            let len = data.len;
            p.receiving = true;
            // Safety: as above.
            match unsafe { self.worker.recv_rndv(data, dst, req_id) } {
                Ok(Started::InProgress) => {}
                Ok(Started::Done) => {
                    let p = self.pending.remove(&req_id).expect("present");
                    self.out.push(done(&p, len as i32));
                }
                Err(_) => {
                    let p = self.pending.remove(&req_id).expect("present");
                    self.out.push(done(&p, ResultCode::PeerFailed as i32));
                }
            }
        }
        for (ep, req_id, data) in d.echo_rndv {
            any = true;
            let mut buf = vec![0u8; data.len];
            let token = self.server_token();
            let dst = buf.as_mut_ptr();
            self.server_bufs.insert(token, ServerBuf { ep, req_id, data: buf, _header: None });
            // Safety: the Vec's heap buffer does not move while it sits in server_bufs, which
            // it does until RecvDone (or we take it back right below).
            match unsafe { self.worker.recv_rndv(data, dst, token) } {
                Ok(Started::InProgress) => {}
                Ok(Started::Done) => {
                    let b = self.server_bufs.remove(&token).expect("present");
                    self.deferred.replies.push((b.ep, b.req_id, 0, b.data));
                }
                Err(e) => {
                    self.server_bufs.remove(&token);
                    tracing::debug!(error = %e, "echo receive failed");
                }
            }
        }
        let mut replies = d.replies;
        replies.append(&mut self.deferred.replies);
        for (ep, req_id, status, buf) in replies {
            any = true;
            self.send_reply(ep, req_id, status, buf);
        }
        let by_peer = d.failed_peers.into_iter().filter_map(|(peer, e)| self.conns.get(&peer).map(|c| (c.ep.key(), e)));
        let failed: Vec<_> = d.failed.into_iter().chain(by_peer).collect();
        for (key, error) in failed {
            any = true;
            self.endpoint_failed(key, error);
        }
        any
    }

    fn server_token(&mut self) -> u64 {
        self.next_server = self.next_server.wrapping_add(1) & !SERVER_TOKEN;
        self.next_server | SERVER_TOKEN
    }

    fn send_reply(&mut self, ep_key: EpKey, req_id: u64, status: i32, buf: Vec<u8>) {
        let ep = self.accepted.get(&ep_key).or_else(|| self.conns.values().map(|c| &c.ep).find(|e| e.key() == ep_key));
        let Some(ep) = ep else {
            tracing::debug!("reply endpoint gone; reply dropped");
            return;
        };
        let header = Box::new(Header { req_id, a: status as u32, b: 0 }.encode());
        self.next_server = self.next_server.wrapping_add(1) & !SERVER_TOKEN;
        let token = self.next_server | SERVER_TOKEN;
        let (ptr, len) = (buf.as_ptr(), buf.len());
        // Safety: the header box and the reply buffer are kept in server_bufs (their heap
        // storage does not move) until SendDone, or dropped right away if the send completed
        // at once.
        let r = unsafe { self.worker.am_send(ep, AM_REPLY, &header[..], ptr, len, false, token) };
        tracing::trace!(req_id, status, len, ?r, "reply sent");
        match r {
            Ok(Started::InProgress) => {
                self.server_bufs.insert(token, ServerBuf { ep: ep_key, req_id, data: buf, _header: Some(header) });
            }
            Ok(Started::Done) => {}
            Err(e) => tracing::debug!(error = %e, "reply send failed"),
        }
    }

    /// A peer connection failed: fail every request waiting on it, close the endpoint, and
    /// let the next request to that peer reconnect.
    fn endpoint_failed(&mut self, key: EpKey, error: UcxError) {
        if let Some((&handle, _)) = self.conns.iter().find(|(_, c)| c.ep.key() == key) {
            let conn = self.conns.remove(&handle).expect("present");
            conn.entry.stats.connected.fetch_sub(1, Ordering::Relaxed);
            bump(&conn.entry.stats.connection_failures);
            let failed: Vec<u64> = self.pending.iter().filter(|(_, p)| p.peer == handle).map(|(&id, _)| id).collect();
            tracing::warn!(peer = handle, address = %conn.entry.addr, %error, requests_failed = failed.len(), "peer connection failed");
            for id in failed {
                let p = self.pending.remove(&id).expect("present");
                self.out.push(done(&p, ResultCode::PeerFailed as i32));
            }
            self.worker.close(conn.ep);
        } else if let Some(ep) = self.accepted.remove(&key) {
            tracing::info!(%error, "peer engine disconnected");
            self.worker.close(ep);
        } else {
            return;
        }
        // Buffers of sends and receives on that endpoint were completed by the close.
        self.server_bufs.retain(|_, b| b.ep != key);
    }

    /// Fails requests past their deadline.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self.pending.iter().filter(|(_, p)| !p.receiving && p.deadline <= now).map(|(&id, _)| id).collect();
        for id in late {
            let p = self.pending.remove(&id).expect("present");
            tracing::debug!(peer = p.peer, "remote request timed out");
            if let Some(e) = self.settings.peers.get(p.peer) {
                bump(&e.stats.timeouts);
            }
            self.out.push(done(&p, ResultCode::TimedOut as i32));
        }
    }

    /// Registers the session's whole region with UCX once, on its first remote request; the
    /// registration lives as long as the session.
    fn register(&self, session: &SessionShared) -> Result<(), ResultCode> {
        if session.ucx_registration.get().is_some() {
            return Ok(());
        }
        let ctx = self.settings.context().map_err(|_| ResultCode::Internal)?;
        // Safety: the region stays mapped while the session lives, and the registration is
        // stored in (and dropped before the region of) that same session.
        let reg = unsafe { ctx.register(session.region.base_ptr(), session.region.len()) }.map_err(|e| {
            tracing::error!(session = session.id, error = %e, "cannot register the session's region with UCX");
            ResultCode::Internal
        })?;
        tracing::debug!(session = session.id, bytes = reg.len, "session region registered with UCX");
        let _ = session.ucx_registration.set(reg);
        Ok(())
    }

    fn ensure_conn(&mut self, handle: u32) -> Result<(), ResultCode> {
        if !self.conns.contains_key(&handle) {
            let entry = self.settings.peers.get(handle).ok_or(ResultCode::NoSuchPeer)?;
            let addr = entry.addr;
            let ep = self.worker.connect(addr).map_err(|e| {
                tracing::warn!(peer = handle, %addr, error = %e, "cannot connect to peer");
                bump(&entry.stats.connection_failures);
                ResultCode::PeerFailed
            })?;
            tracing::info!(peer = handle, %addr, "connecting to peer engine");
            bump(&entry.stats.connects);
            bump(&entry.stats.connected);
            self.conns.insert(handle, PeerConn { ep, entry });
        }
        Ok(())
    }

    /// Closes every endpoint and the listener (engine shutdown); returns the completions
    /// still owed, requests in flight failing with ShuttingDown.
    pub fn shutdown(mut self) -> Vec<RemoteCompletion> {
        for (_, p) in std::mem::take(&mut self.pending) {
            self.out.push(done(&p, ResultCode::ShuttingDown as i32));
        }
        for (_, c) in std::mem::take(&mut self.conns) {
            c.entry.stats.connected.fetch_sub(1, Ordering::Relaxed);
            self.worker.close(c.ep);
        }
        for (_, ep) in std::mem::take(&mut self.accepted) {
            self.worker.close(ep);
        }
        if let Some(l) = self.listener.take() {
            l.destroy();
        }
        std::mem::take(&mut self.out)
    }

    /// Completions produced outside `poll` (by `expire`, `shutdown`, failures).
    pub fn take_completions(&mut self) -> std::vec::Drain<'_, RemoteCompletion> {
        self.out.drain(..)
    }
}

impl Remote for DataPlane {
    fn start_send(&mut self, session: &Arc<SessionShared>, user_data: u64, req: SendRequest) -> Result<(), ResultCode> {
        let now = Instant::now();
        if req.len > self.settings.max_message {
            return Err(ResultCode::InvalidEntry);
        }
        self.register(session)?;
        let req_id = self.next_req;
        self.next_req = (self.next_req + 1) & !SERVER_TOKEN;
        let header = Box::new(Header { req_id, a: req.service, b: req.resp_cap as u32 }.encode());
        // Safety: offset + len is inside the session's buffer area (validated); the region
        // stays mapped while the Pending below holds the session's Arc.
        let data = unsafe { session.region.buf_ptr().add(req.offset) };
        self.ensure_conn(req.peer)?;
        let ep = &self.conns[&req.peer].ep;
        // Safety: as above; the bytes are the client's to change, which only changes what is
        // sent.
        let started = unsafe { self.worker.am_send(ep, AM_REQUEST, &header[..], data, req.len, true, req_id) };
        tracing::trace!(req_id, peer = req.peer, len = req.len, ?started, "request sent");
        if let Err(e) = started {
            tracing::debug!(peer = req.peer, error = %e, "request send failed");
            return Err(ResultCode::PeerFailed);
        }
        bump(&self.conns[&req.peer].entry.stats.requests);
        self.pending.insert(
            req_id,
            Pending {
                session: session.clone(),
                _header: header,
                user_data,
                peer: req.peer,
                peer_stats: self.conns[&req.peer].entry.clone(),
                resp_offset: req.resp_offset,
                resp_cap: req.resp_cap,
                started: now,
                deadline: now + self.settings.request_timeout,
                receiving: false,
            },
        );
        Ok(())
    }
}

fn done(p: &Pending, result: i32) -> RemoteCompletion {
    if result == ResultCode::PeerFailed as i32 {
        bump(&p.peer_stats.stats.failures);
    } else if result >= 0 {
        p.peer_stats.stats.latency.record(p.started.elapsed().as_nanos() as u64);
    }
    RemoteCompletion { session: p.session.id, user_data: p.user_data, result }
}

/// Serving side: validate an incoming request and answer it (the echo service).
fn serve_request(h: Header, data: AmData<'_>, reply_ep: Option<EpKey>, max_message: usize, d: &mut Deferred) {
    let Some(ep) = reply_ep else {
        tracing::warn!("request without a reply endpoint dropped");
        return;
    };
    let (service_id, resp_cap) = (h.a, h.b as usize);
    let len = match &data {
        AmData::Eager(b) => b.len(),
        AmData::Rndv(r) => r.len,
    };
    let error = if service_id != service::ECHO {
        Some(ResultCode::UnknownService)
    } else if len > resp_cap || len > max_message {
        Some(ResultCode::ResponseTooLarge)
    } else {
        None
    };
    match (error, data) {
        (Some(code), _) => d.replies.push((ep, h.req_id, code as i32, Vec::new())),
        (None, AmData::Eager(b)) => d.replies.push((ep, h.req_id, 0, b.to_vec())),
        (None, AmData::Rndv(r)) => d.echo_rndv.push((ep, h.req_id, r)),
    }
}

/// Requesting side: a reply arrived for one of our requests.
fn take_reply(h: Header, data: AmData<'_>, pending: &mut HashMap<u64, Pending>, d: &mut Deferred, out: &mut Vec<RemoteCompletion>) {
    let Some(p) = pending.get(&h.req_id) else {
        return; // timed out or failed meanwhile; a rendezvous descriptor is released on drop
    };
    let status = h.a as i32;
    let len = match &data {
        AmData::Eager(b) => b.len(),
        AmData::Rndv(r) => r.len,
    };
    let result = if status < 0 {
        // Only codes this protocol defines may reach the client.
        Some(ring_proto::ResultCode::from_result(status).map_or(ResultCode::PeerFailed as i32, |c| c as i32))
    } else if len > p.resp_cap {
        Some(ResultCode::ResponseTooLarge as i32)
    } else {
        None
    };
    if let Some(r) = result {
        let p = pending.remove(&h.req_id).expect("present");
        out.push(done(&p, r));
        return;
    }
    match data {
        AmData::Eager(b) => {
            // Safety: resp_offset + len <= resp_offset + resp_cap, inside the session's buffer
            // area (validated); the region is mapped while Pending holds its Arc. The client
            // reads this range only after the completion we post below.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p.session.region.buf_ptr().add(p.resp_offset), len) };
            let p = pending.remove(&h.req_id).expect("present");
            out.push(done(&p, len as i32));
        }
        AmData::Rndv(r) => d.reply_rndv.push((h.req_id, r)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    req_id: u64,
    a: u32,
    b: u32,
}

impl Header {
    fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != HEADER_LEN {
            return None;
        }
        Some(Self {
            req_id: u64::from_le_bytes(b[0..8].try_into().ok()?),
            a: u32::from_le_bytes(b[8..12].try_into().ok()?),
            b: u32::from_le_bytes(b[12..16].try_into().ok()?),
        })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&self.req_id.to_le_bytes());
        h[8..12].copy_from_slice(&self.a.to_le_bytes());
        h[12..16].copy_from_slice(&self.b.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_length_check() {
        let h = Header { req_id: 0x0102_0304_0506_0708, a: 7, b: 9 };
        assert_eq!(Header::parse(&h.encode()), Some(h));
        assert_eq!(Header::parse(&h.encode()[..15]), None);
        assert_eq!(Header::parse(&[0u8; 17]), None);
    }

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let h = LatencyHistogram::default();
        h.record(500);
        h.record(1_000);
        h.record(1_001);
        h.record(2_000_000_000);
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 2);
        assert_eq!(h.buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(h.overflow.load(Ordering::Relaxed), 1);
        assert_eq!(h.sum_ns.load(Ordering::Relaxed), 2_000_002_501);
    }

    #[test]
    fn registry_gives_stable_handles() {
        let r = PeerRegistry::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(r.register(a), 1);
        assert_eq!(r.register(b), 2);
        assert_eq!(r.register(a), 1);
        assert_eq!(r.get(2).map(|e| e.addr), Some(b));
        assert!(r.get(0).is_none());
        assert!(r.get(3).is_none());
        assert_eq!(r.all().len(), 2);
    }
}
