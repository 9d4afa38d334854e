//! Remote operations: one data plane per engine worker, over that worker's own UCX worker.
//!
//! Engine-to-engine messages (UCX active messages) are defined in `ring_proto::wire`
//! (SPEC.md §13–15).
//!
//! READ/WRITE: the requester fetches an export's descriptor (AM_QUERY → AM_INFO) once per
//! connection, checks bounds and permissions against it, then reads or writes with one-sided
//! get/put straight between the two clients' shared buffers. See `exports.rs` for revocation
//! (AM_REVOKE → AM_ACK).
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

use crate::exports::{ExportTable, PERM_READ, PERM_WRITE};
use crate::ops::{NeedleRequest, RmaRequest, SendRequest};
use crate::seaweed::{NeedleRead, VolumeStore};
use crate::session::{Remote, SessionShared};
use engine::ucx::{self, AmData, Endpoint, EpKey, RemoteKey, RndvData, Started, UcxError, WorkerEvent};
use ring_proto::needle::{NeedleMeta, NEEDLE_META_LEN, NEEDLE_META_MAX};

use crate::lookup_throttle::{Verdict, BURST, REFILL_PER_SEC};
use ring_proto::wire::{
    am, ExportDescriptor, ExportRefHeader, MsgHeader as Header, NeedleRequestHeader as NeedleWire, HEADER_LEN,
};

const AM_REQUEST: u16 = am::REQUEST;
const AM_REPLY: u16 = am::REPLY;
const AM_QUERY: u16 = am::QUERY;
const AM_INFO: u16 = am::INFO;
const AM_REVOKE: u16 = am::REVOKE;
const AM_ACK: u16 = am::ACK;
const AM_NEEDLE_REQUEST: u16 = am::NEEDLE_REQUEST;
const AM_NEEDLE_REPLY: u16 = am::NEEDLE_REPLY;
/// Tokens of this worker's own sends/receives on behalf of peers (replies, echo receives)
/// have this bit set; requester tokens are request ids.
const SERVER_TOKEN: u64 = 1 << 63;
/// Token of an auxiliary operation of READ/WRITE request `req_id` (its AM_QUERY send, or a
/// WRITE's put, which the flush after it completes): `req_id | AUX_TOKEN`. Their success is
/// not the request's completion; their failure fails the request.
const AUX_TOKEN: u64 = 1 << 62;

/// Peer engines registered by open sessions: handle → listener address and counters.
/// Written by the control thread on `ConnectPeer` and when a session ends (each session's
/// registrations are bounded and released with it), read by workers when they first use a
/// handle and by status/metrics. Handles are not reused until 2^32 registrations later.
#[derive(Default)]
pub struct PeerRegistry {
    peers: RwLock<Peers>,
    /// Bumped (Release) after every removal; workers load it (Acquire, pairing) to notice
    /// released handles and drop their connections to them.
    generation: AtomicU64,
}

#[derive(Default)]
struct Peers {
    by_handle: std::collections::BTreeMap<u32, Registered>,
    by_addr: HashMap<SocketAddr, u32>,
    last_handle: u32,
}

struct Registered {
    entry: Arc<PeerEntry>,
    /// Open sessions holding this registration.
    sessions: u32,
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
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
];

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
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
    fn peers(&self) -> std::sync::RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peers_mut(&self) -> std::sync::RwLockWriteGuard<'_, Peers> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle `addr` has now, if some session registered it.
    pub fn handle_of(&self, addr: SocketAddr) -> Option<u32> {
        self.peers().by_addr.get(&addr).copied()
    }

    /// Registers `addr` for one more session; returns its handle (the same for every session
    /// while any holds it). Each call must be matched by one `release` of the handle.
    pub fn register(&self, addr: SocketAddr) -> u32 {
        let mut p = self.peers_mut();
        if let Some(&h) = p.by_addr.get(&addr) {
            p.by_handle.get_mut(&h).expect("indexed").sessions += 1;
            return h;
        }
        let mut h = p.last_handle;
        loop {
            h = h.wrapping_add(1).max(1);
            if !p.by_handle.contains_key(&h) {
                break;
            }
        }
        p.last_handle = h;
        p.by_addr.insert(addr, h);
        let entry = Arc::new(PeerEntry {
            addr,
            stats: PeerStats::default(),
        });
        p.by_handle.insert(h, Registered { entry, sessions: 1 });
        h
    }

    /// A session that registered `handles` ended: drop the registrations no session holds;
    /// true if any went.
    pub fn release(&self, handles: impl IntoIterator<Item = u32>) -> bool {
        let mut removed = false;
        let mut p = self.peers_mut();
        for h in handles {
            let Some(r) = p.by_handle.get_mut(&h) else { continue };
            r.sessions -= 1;
            if r.sessions == 0 {
                let r = p.by_handle.remove(&h).expect("present");
                p.by_addr.remove(&r.entry.addr);
                removed = true;
            }
        }
        drop(p);
        if removed {
            self.generation.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Changes with every removal (workers compare it to drop connections to released peers).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, handle: u32) -> Option<Arc<PeerEntry>> {
        self.peers().by_handle.get(&handle).map(|r| r.entry.clone())
    }

    /// Every peer with its handle, for status and metrics.
    pub fn all(&self) -> Vec<(u32, Arc<PeerEntry>)> {
        self.peers()
            .by_handle
            .iter()
            .map(|(&h, r)| (h, r.entry.clone()))
            .collect()
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
    /// Memory this engine's clients export (engine-wide: any worker serves queries).
    pub exports: ExportTable,
    /// The SeaweedFS volumes this engine serves to peers (`[seaweedfs] directories`).
    pub volumes: Option<Arc<VolumeStore>>,
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
            exports: ExportTable::default(),
            volumes: None,
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
    user_data: u64,
    peer: u32,
    peer_stats: Arc<PeerEntry>,
    resp_offset: usize,
    resp_cap: usize,
    started: Instant,
    deadline: Instant,
    /// A rendezvous receive, get or put on the client's buffer is running: UCX owns the
    /// outcome (the request is not timed out under it).
    receiving: bool,
    /// Set for READ/WRITE (`resp_offset`/`resp_cap` are then the local range).
    rma: Option<RmaRequest>,
    /// READ_NEEDLE: where the metadata goes (the data goes to `resp_offset`).
    meta_offset: Option<usize>,
    /// READ/WRITE that asked the peer for the descriptor (holds a lookup token, §14).
    lookup: bool,
}

/// A peer's export as this worker knows it (per connection: the remote key is unpacked for
/// one endpoint).
struct RemoteExport {
    key: u64,
    /// The connection the remote key was unpacked on (it is valid on no other).
    ep: EpKey,
    base_addr: u64,
    len: u64,
    perms: u32,
    rkey: RemoteKey,
    /// Gets/puts in flight with this key.
    inflight: u32,
    /// The exporter revoked it: acknowledge once `inflight` is 0, then drop the key.
    revoked_on: Option<EpKey>,
}

/// What a request or query send UCX has not finished needs kept alive: (header, the session
/// whose buffer the payload is read from, peer handle).
type InFlightSend = (Box<[u8]>, Arc<SessionShared>, u32);

/// A reply (header + payload) or an echo receive buffer UCX is using.
struct ServerBuf {
    ep: EpKey,
    req_id: u64,
    data: Payload,
    _header: Option<Box<[u8]>>,
}

/// What a message of ours sends (or an echo receive fills).
enum Payload {
    Bytes(Vec<u8>),
    /// A needle's data in a volume file's mapping, kept mapped until UCX is done with it.
    Needle(NeedleRead),
}

impl Payload {
    fn ptr_len(&self) -> (*const u8, usize) {
        match self {
            Self::Bytes(b) => (b.as_ptr(), b.len()),
            Self::Needle(n) => (n.data().as_ptr(), n.data().len()),
        }
    }
}

impl ServerBuf {
    /// The echo service's answer: the received payload, sent back as a successful REPLY.
    fn into_echo_reply(self) -> (EpKey, u16, Header, Vec<u8>) {
        let data = match self.data {
            Payload::Bytes(b) => b,
            Payload::Needle(_) => unreachable!("echo receives are byte buffers"),
        };
        (
            self.ep,
            AM_REPLY,
            Header {
                req_id: self.req_id,
                a: 0,
                b: 0,
            },
            data,
        )
    }
}

struct PeerConn {
    ep: Endpoint,
    entry: Arc<PeerEntry>,
    /// The transports of the connection were logged (once it carried its first answer).
    logged: bool,
}

/// Work found during progress that needs UCX calls (made after progress returns).
#[derive(Default)]
struct Deferred {
    /// Messages of ours to send after progress: (endpoint, AM id, header, payload).
    outgoing: Vec<(EpKey, u16, Header, Vec<u8>)>,
    echo_rndv: Vec<(EpKey, u64, RndvData)>,
    reply_rndv: Vec<(u64, RndvData)>,
    failed: Vec<(EpKey, UcxError)>,
    /// Peers whose requests failed on the wire: their connection is treated as failed.
    failed_peers: Vec<(u32, UcxError)>,
    /// Export descriptors that arrived for READ/WRITE requests (req_id, info payload).
    infos: Vec<(u64, Vec<u8>, u32)>,
    /// REVOKEs received on our connections: (endpoint, export id, key).
    revokes: Vec<(EpKey, u64, u64)>,
    /// Gets/puts that finished, to account against their export: (peer, export id).
    rma_done: Vec<(u32, u64)>,
    /// Peers whose connection carried an answer (its transports are known now).
    answered: Vec<u32>,
    /// Needle reads peers asked us for, answered after progress.
    needle_reads: Vec<(EpKey, NeedleWire)>,
}

pub struct DataPlane {
    id: usize,
    /// Peers' exports by (peer handle, export id), with keys unpacked for our endpoint to
    /// that peer. Declared before `worker`, so keys are dropped before the worker is. Holds
    /// only what the current connection to each peer told us: everything learned on a
    /// connection goes when it ends (a restarted peer's memory is another memory).
    remote_exports: HashMap<(u32, u64), RemoteExport>,
    /// The peer registry's generation last swept for released handles.
    peers_seen: u64,
    worker: ucx::Worker,
    listener: Option<ucx::Listener>,
    settings: Arc<UcxSettings>,
    conns: HashMap<u32, PeerConn>,
    accepted: HashMap<EpKey, Endpoint>,
    pending: HashMap<u64, Pending>,
    next_req: u64,
    /// Server-side buffers UCX still reads (replies) or writes (echo receives), by token.
    server_bufs: HashMap<u64, ServerBuf>,
    /// Requests and queries UCX is still sending, by token: their header and the session whose
    /// buffer the payload is read from. Kept until SendDone even if the request itself was
    /// completed meanwhile (timed out, peer failed), so UCX never reads freed memory.
    sends: HashMap<u64, InFlightSend>,
    next_server: u64,
    deferred: Deferred,
    out: Vec<RemoteCompletion>,
}

impl DataPlane {
    /// Creates the worker's UCX worker (on the calling, pinned worker thread) and, if asked,
    /// the engine's listener.
    pub fn new(settings: Arc<UcxSettings>, listen: bool, id: usize) -> Result<Self, UcxError> {
        let context = settings.context()?;
        let mut worker = ucx::Worker::new(context, &am::ALL)?;
        let listener = match (listen, settings.listen) {
            (true, Some(addr)) => {
                let l = worker.listen(addr)?;
                tracing::info!(address = %l.addr, "UCX listening");
                Some(l)
            }
            _ => None,
        };
        Ok(Self {
            id,
            remote_exports: HashMap::new(),
            peers_seen: 0,
            worker,
            listener,
            settings,
            conns: HashMap::new(),
            accepted: HashMap::new(),
            pending: HashMap::new(),
            next_req: 1,
            server_bufs: HashMap::new(),
            sends: HashMap::new(),
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
        let worker_id = self.id;
        let settings = &self.settings;
        let (pending, deferred, out, server_bufs, sends) = (
            &mut self.pending,
            &mut self.deferred,
            &mut self.out,
            &mut self.server_bufs,
            &mut self.sends,
        );
        let mut any = self.worker.progress(&mut |ev| match ev {
            WorkerEvent::Am(m) => {
                tracing::trace!(
                    id = m.id,
                    header = m.header.len(),
                    reply_ep = m.reply_ep.is_some(),
                    "active message"
                );
                if matches!(m.id, AM_QUERY | AM_REVOKE | AM_ACK) {
                    let (Some(r), Some(ep)) = (ExportRefHeader::parse(m.header), m.reply_ep) else {
                        tracing::warn!(id = m.id, len = m.header.len(), "malformed export message dropped");
                        return;
                    };
                    match m.id {
                        AM_QUERY => {
                            let (header, body) = answer_query(settings, r, worker_id, ep);
                            deferred.outgoing.push((ep, AM_INFO, header, body));
                        }
                        AM_REVOKE => deferred.revokes.push((ep, r.export, r.key)),
                        _ => settings.exports.acked(r.export, r.key, worker_id, ep),
                    }
                    return;
                }
                if m.id == AM_NEEDLE_REQUEST {
                    match (NeedleWire::parse(m.header), m.reply_ep) {
                        (Some(w), Some(ep)) => deferred.needle_reads.push((ep, w)),
                        _ => tracing::warn!(len = m.header.len(), "malformed needle request dropped"),
                    }
                    return;
                }
                let Some(h) = Header::parse(m.header, m.id == AM_NEEDLE_REPLY) else {
                    tracing::warn!(len = m.header.len(), "malformed active message header dropped");
                    return;
                };
                match (m.id, m.reply_ep) {
                    (AM_REQUEST, Some(ep)) => serve_request(h, m.data, ep, max_message, deferred),
                    (AM_REPLY | AM_NEEDLE_REPLY, _) => {
                        if let Some(p) = pending.get(&h.req_id) {
                            deferred.answered.push(p.peer);
                        }
                        let meta = (m.id == AM_NEEDLE_REPLY).then(|| &m.header[HEADER_LEN..]);
                        take_reply(h, meta, m.data, pending, deferred, out)
                    }
                    (AM_INFO, _) => {
                        let status = h.a as i32;
                        if status < 0 {
                            // Only codes this protocol defines reach the client.
                            let code =
                                ResultCode::from_result(status).map_or(ResultCode::PeerFailed as i32, |c| c as i32);
                            if let Some(p) = pending.remove(&h.req_id) {
                                out.push(done(&p, code));
                            }
                        } else if let AmData::Eager(b) = m.data {
                            deferred.infos.push((h.req_id, b.to_vec(), h.b));
                        } else {
                            tracing::warn!("export descriptor came by rendezvous; dropped");
                        }
                    }
                    (id, None) if id != AM_REPLY && id != AM_INFO && id != AM_NEEDLE_REPLY => {
                        tracing::warn!(id, "active message without a reply endpoint dropped")
                    }
                    _ => {}
                }
            }
            WorkerEvent::SendDone { token, result } => {
                tracing::trace!(token, ?result, "send done");
                if token & SERVER_TOKEN != 0 {
                    server_bufs.remove(&token);
                    return;
                }
                let was_send = sends.remove(&token).is_some();
                if token & AUX_TOKEN != 0 {
                    if let Err(e) = result {
                        if let Some(p) = pending.remove(&(token & !AUX_TOKEN)) {
                            deferred.failed_peers.push((p.peer, e));
                            out.push(done(&p, ResultCode::PeerFailed as i32));
                        }
                    }
                    return;
                }
                let is_rma = pending.get(&token).is_some_and(|p| p.rma.is_some());
                match result {
                    Err(e) => {
                        if let Some(p) = pending.remove(&token) {
                            if let Some(r) = p.rma {
                                deferred.rma_done.push((p.peer, r.export_id));
                            }
                            deferred.failed_peers.push((p.peer, e));
                            out.push(done(&p, ResultCode::PeerFailed as i32));
                        }
                    }
                    Ok(()) if is_rma && !was_send => {
                        let p = pending.remove(&token).expect("checked");
                        deferred.rma_done.push((p.peer, p.rma.expect("checked").export_id));
                        out.push(done(&p, p.resp_cap as i32));
                    }
                    Ok(()) => {}
                }
            }
            WorkerEvent::RecvDone { token, result } => {
                if token & SERVER_TOKEN != 0 {
                    if let (Some(b), Ok(_)) = (server_bufs.remove(&token), result) {
                        deferred.outgoing.push(b.into_echo_reply());
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
            let Some(p) = self.pending.get_mut(&req_id) else {
                continue;
            };
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
            self.server_bufs.insert(
                token,
                ServerBuf {
                    ep,
                    req_id,
                    data: Payload::Bytes(buf),
                    _header: None,
                },
            );
            // Safety: the Vec's heap buffer does not move while it sits in server_bufs, which
            // it does until RecvDone (or we take it back right below).
            match unsafe { self.worker.recv_rndv(data, dst, token) } {
                Ok(Started::InProgress) => {}
                Ok(Started::Done) => {
                    let b = self.server_bufs.remove(&token).expect("present");
                    self.deferred.outgoing.push(b.into_echo_reply());
                }
                Err(e) => {
                    self.server_bufs.remove(&token);
                    tracing::debug!(error = %e, "echo receive failed");
                }
            }
        }
        for (ep, w) in d.needle_reads {
            any = true;
            self.serve_needle(ep, w);
        }
        for peer in d.answered {
            self.log_transports(peer);
        }
        for (req_id, body, status) in d.infos {
            any = true;
            self.descriptor_arrived(req_id, &body, status);
        }
        for (peer, export) in d.rma_done {
            if let Some(r) = self.remote_exports.get_mut(&(peer, export)) {
                r.inflight = r.inflight.saturating_sub(1);
            }
            self.maybe_ack(peer, export);
        }
        for (ep, export, key) in d.revokes {
            any = true;
            self.revoked_by_peer(ep, export, key);
        }
        for r in self.settings.exports.take_revocations(self.id) {
            any = true;
            for ep in r.eps {
                if self.accepted.contains_key(&ep) || self.conns.values().any(|c| c.ep.key() == ep) {
                    self.send_export_ref(ep, AM_REVOKE, r.id, r.key);
                } else {
                    self.settings.exports.connection_gone(self.id, ep);
                }
            }
        }
        let mut outgoing = d.outgoing;
        outgoing.append(&mut self.deferred.outgoing);
        for (ep, id, header, buf) in outgoing {
            any = true;
            self.send_msg(ep, id, header, buf, false);
        }
        let by_peer = d
            .failed_peers
            .into_iter()
            .filter_map(|(peer, e)| self.conns.get(&peer).map(|c| (c.ep.key(), e)));
        let failed: Vec<_> = d.failed.into_iter().chain(by_peer).collect();
        for (key, error) in failed {
            any = true;
            self.endpoint_failed(key, error);
        }
        any |= self.drop_released_peers();
        any
    }

    /// Closes connections to peers whose registrations were released (every session that
    /// registered them ended), failing what still waited on them.
    fn drop_released_peers(&mut self) -> bool {
        let generation = self.settings.peers.generation();
        if generation == self.peers_seen {
            return false;
        }
        self.peers_seen = generation;
        let released: Vec<EpKey> = self
            .conns
            .iter()
            .filter(|(&h, c)| self.settings.peers.get(h).is_none_or(|e| !Arc::ptr_eq(&e, &c.entry)))
            .map(|(_, c)| c.ep.key())
            .collect();
        let any = !released.is_empty();
        for key in released {
            self.endpoint_failed(key, "peer registration released (no session holds it)");
        }
        any
    }

    /// Sends an export message of ours (REVOKE, ACK) on endpoint `ep`.
    fn send_export_ref(&mut self, ep: EpKey, id: u16, export: u64, key: u64) {
        let header = ExportRefHeader { req_id: 0, export, key }.encode();
        self.send_raw(ep, id, Box::new(header), Payload::Bytes(Vec::new()), true);
    }

    /// Serving side: answers a peer's needle read from the volume store, the data straight
    /// from the volume file's mapping.
    fn serve_needle(&mut self, ep: EpKey, w: NeedleWire) {
        let read = match &self.settings.volumes {
            None => Err(ResultCode::NoSuchVolume),
            // The JWT first, as the volume server checks it before it looks at the volume.
            Some(store) => match store.check_read_jwt(&w.jwt, w.volume, w.needle, w.cookie) {
                Err(e) => {
                    tracing::debug!(volume = w.volume, needle = w.needle, error = %e, "needle read refused: read JWT");
                    Err(e.code())
                }
                Ok(()) => store
                    .read(w.volume, w.needle, w.cookie, w.range_offset, w.max_len, w.ranged)
                    .map_err(|e| e.code()),
            },
        };
        let (status, meta_len, payload) = match read {
            Ok(n) => {
                let mut header = Vec::with_capacity(HEADER_LEN + n.meta.encoded_len());
                header.extend_from_slice(&[0u8; HEADER_LEN]);
                n.meta.encode_into(&mut header);
                (0, header.len() - HEADER_LEN, Some((header, n)))
            }
            Err(code) => {
                tracing::debug!(volume = w.volume, needle = w.needle, %code, "needle read refused");
                (code as i32, 0, None)
            }
        };
        let h = Header {
            req_id: w.req_id,
            a: status as u32,
            b: meta_len as u32,
        }
        .encode();
        match payload {
            Some((mut header, needle)) => {
                header[..HEADER_LEN].copy_from_slice(&h);
                self.send_raw(
                    ep,
                    AM_NEEDLE_REPLY,
                    header.into_boxed_slice(),
                    Payload::Needle(needle),
                    false,
                )
            }
            None => self.send_raw(ep, AM_NEEDLE_REPLY, Box::new(h), Payload::Bytes(Vec::new()), false),
        }
    }

    fn server_token(&mut self) -> u64 {
        self.next_server = self.next_server.wrapping_add(1) & !SERVER_TOKEN;
        self.next_server | SERVER_TOKEN
    }

    /// Sends a message of ours (reply, descriptor, revoke, ack) on endpoint `ep_key`.
    fn send_msg(&mut self, ep_key: EpKey, id: u16, header: Header, buf: Vec<u8>, want_reply_ep: bool) {
        self.send_raw(
            ep_key,
            id,
            Box::new(header.encode()),
            Payload::Bytes(buf),
            want_reply_ep,
        )
    }

    /// Sends a message with any header (a needle reply's carries the metadata) and payload.
    fn send_raw(&mut self, ep_key: EpKey, id: u16, header: Box<[u8]>, buf: Payload, want_reply_ep: bool) {
        let token = self.server_token();
        let ep = self
            .accepted
            .get(&ep_key)
            .or_else(|| self.conns.values().map(|c| &c.ep).find(|e| e.key() == ep_key));
        let Some(ep) = ep else {
            tracing::debug!(id, "endpoint gone; message dropped");
            return;
        };
        let (ptr, len) = buf.ptr_len();
        // Safety: the header box and the payload (a heap buffer, or a needle whose file
        // mapping `NeedleRead` keeps alive) are kept in server_bufs (their storage does not
        // move) until SendDone, or dropped right away if the send completed at once.
        let r = unsafe { self.worker.am_send(ep, id, &header[..], ptr, len, want_reply_ep, token) };
        tracing::trace!(id, len, ?r, "message sent");
        match r {
            Ok(Started::InProgress) => {
                self.server_bufs.insert(
                    token,
                    ServerBuf {
                        ep: ep_key,
                        req_id: 0,
                        data: buf,
                        _header: Some(header),
                    },
                );
            }
            Ok(Started::Done) => {}
            Err(e) => tracing::debug!(id, error = %e, "message send failed"),
        }
    }

    /// Logs, once per connection, which transports UCX chose for it (lane lines of UCX's
    /// endpoint description).
    fn log_transports(&mut self, peer: u32) {
        let Some(c) = self.conns.get_mut(&peer).filter(|c| !c.logged) else {
            return;
        };
        c.logged = true;
        let info = self.worker.ep_info(&c.ep);
        // Lines look like "#   lane[1]:  0:tcp/lo.0 md[0] -> md[0]/tcp/sysdev[255] am ...".
        let lanes: Vec<String> = info
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter(|l| l.starts_with("lane[") || l.starts_with("am_send:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        tracing::info!(peer, address = %c.entry.addr, lanes = %lanes.join(" | "), "peer connection transports");
    }

    /// An export descriptor arrived for READ/WRITE `req_id`: cache it, then run the request.
    fn descriptor_arrived(&mut self, req_id: u64, body: &[u8], perms: u32) {
        tracing::trace!(
            req_id,
            len = body.len(),
            perms,
            known = self.pending.contains_key(&req_id),
            "export descriptor arrived"
        );
        let Some(p) = self.pending.get(&req_id) else { return };
        let (peer, rma) = (p.peer, p.rma.expect("descriptors are asked for by READ/WRITE"));
        let Some(ExportDescriptor { base_addr, len, rkey }) = ExportDescriptor::parse(body) else {
            let p = self.pending.remove(&req_id).expect("present");
            self.out.push(done(&p, ResultCode::PeerFailed as i32));
            return;
        };
        let Some(conn) = self.conns.get(&peer) else {
            let p = self.pending.remove(&req_id).expect("present");
            self.out.push(done(&p, ResultCode::PeerFailed as i32));
            return;
        };
        let ep = conn.ep.key();
        let k = (peer, rma.export_id);
        let current = self.remote_exports.get(&k);
        let same = current.is_some_and(|r| {
            (r.ep, r.key, r.base_addr, r.len, r.perms) == (ep, rma.key, base_addr, len, perms) && r.revoked_on.is_none()
        });
        if !same {
            // The descriptor replaces what we knew, unless gets/puts still use the old key:
            // it cannot be destroyed under them (UCX), and a live export does not change.
            if current.is_some_and(|r| r.inflight > 0) {
                tracing::warn!(peer, "export descriptor changed while in use; request failed");
                let p = self.pending.remove(&req_id).expect("present");
                self.out.push(done(&p, ResultCode::PeerFailed as i32));
                return;
            }
            match self.worker.unpack_rkey(&conn.ep, rkey) {
                Ok(rkey) => {
                    self.remote_exports.insert(
                        k,
                        RemoteExport {
                            key: rma.key,
                            ep,
                            base_addr,
                            len,
                            perms,
                            rkey,
                            inflight: 0,
                            revoked_on: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(peer, error = %e, "peer sent an unusable remote key");
                    let p = self.pending.remove(&req_id).expect("present");
                    self.out.push(done(&p, ResultCode::PeerFailed as i32));
                    return;
                }
            }
        }
        self.issue_rma(req_id);
    }

    /// Runs READ/WRITE `req_id` against its cached export descriptor.
    fn issue_rma(&mut self, req_id: u64) {
        let p = self.pending.get_mut(&req_id).expect("pending");
        let rma = p.rma.expect("rma request");
        let ep = self.conns.get(&p.peer).map(|c| c.ep.key());
        let check = match self.remote_exports.get(&(p.peer, rma.export_id)) {
            None => Err(ResultCode::NotExported),
            Some(r) if r.key != rma.key || r.revoked_on.is_some() => Err(ResultCode::NotExported),
            Some(r) if Some(r.ep) != ep => Err(ResultCode::PeerFailed),
            Some(r) if r.perms & if rma.write { PERM_WRITE } else { PERM_READ } == 0 => {
                Err(ResultCode::PermissionDenied)
            }
            Some(r)
                if rma
                    .remote_offset
                    .checked_add(rma.len as u64)
                    .is_none_or(|end| end > r.len) =>
            {
                Err(ResultCode::OutOfBounds)
            }
            Some(_) => Ok(()),
        };
        if let Err(code) = check {
            let p = self.pending.remove(&req_id).expect("present");
            self.out.push(done(&p, code as i32));
            return;
        }
        let r = self.remote_exports.get_mut(&(p.peer, rma.export_id)).expect("checked");
        let ep = &self.conns.get(&p.peer).expect("descriptor implies a connection").ep;
        // Safety: the local range is inside the session's buffer area (validated) and the
        // region stays mapped while the Pending holds its Arc, until the operation completes;
        // the remote range is inside the export (checked above) and the key is the one
        // unpacked for this endpoint, kept (inflight) until the operation completes.
        let local = unsafe { p.session.region.buf_ptr().add(rma.offset) };
        let remote = r.base_addr + rma.remote_offset;
        let started = unsafe {
            if rma.write {
                // A put completes locally; the flush after it completes when the bytes are
                // at the peer, and that is the WRITE's completion.
                match self.worker.put(ep, local, rma.len, remote, &r.rkey, req_id | AUX_TOKEN) {
                    Ok(_) => self.worker.flush(ep, req_id),
                    Err(e) => Err(e),
                }
            } else {
                self.worker.get(ep, local, rma.len, remote, &r.rkey, req_id)
            }
        };
        tracing::trace!(
            req_id,
            write = rma.write,
            len = rma.len,
            remote,
            ?started,
            "one-sided operation started"
        );
        match started {
            Ok(Started::InProgress) => {
                r.inflight += 1;
                p.receiving = true;
            }
            Ok(Started::Done) => {
                let p = self.pending.remove(&req_id).expect("present");
                self.out.push(done(&p, rma.len as i32));
            }
            Err(e) => {
                let p = self.pending.remove(&req_id).expect("present");
                tracing::debug!(peer = p.peer, error = %e, "one-sided operation failed to start");
                self.out.push(done(&p, ResultCode::PeerFailed as i32));
            }
        }
    }

    /// The exporter told us on `ep` that export (id, key) is gone.
    fn revoked_by_peer(&mut self, ep: EpKey, export: u64, key: u64) {
        let peer = self.conns.iter().find(|(_, c)| c.ep.key() == ep).map(|(&h, _)| h);
        match peer.and_then(|h| self.remote_exports.get_mut(&(h, export)).map(|r| (h, r))) {
            Some((h, r)) if r.key == key && r.ep == ep => {
                r.revoked_on = Some(ep);
                self.maybe_ack(h, export);
            }
            // Not cached (or an older key): nothing of ours uses it.
            _ => self.send_export_ref(ep, AM_ACK, export, key),
        }
    }

    /// Acknowledges a revoked export once no get/put on it is in flight, dropping its key.
    fn maybe_ack(&mut self, peer: u32, export: u64) {
        let ready = self
            .remote_exports
            .get(&(peer, export))
            .is_some_and(|r| r.revoked_on.is_some() && r.inflight == 0);
        if ready {
            let r = self.remote_exports.remove(&(peer, export)).expect("checked");
            let ep = r.revoked_on.expect("checked");
            self.send_export_ref(ep, AM_ACK, export, r.key);
        }
    }

    /// A peer connection failed (or its registration was released): fail every request
    /// waiting on it, forget every export descriptor it told us, close the endpoint, and let
    /// the next request to that peer reconnect (and ask again).
    fn endpoint_failed(&mut self, key: EpKey, error: impl std::fmt::Display) {
        if let Some((&handle, _)) = self.conns.iter().find(|(_, c)| c.ep.key() == key) {
            let conn = self.conns.remove(&handle).expect("present");
            conn.entry.stats.connected.fetch_sub(1, Ordering::Relaxed);
            bump(&conn.entry.stats.connection_failures);
            let failed: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.peer == handle)
                .map(|(&id, _)| id)
                .collect();
            if failed.is_empty() {
                // Nothing waited on it (an idle connection, or the peer shutting down): the
                // next request reconnects.
                tracing::info!(peer = handle, address = %conn.entry.addr, %error, "idle peer connection closed");
            } else {
                tracing::warn!(peer = handle, address = %conn.entry.addr, %error, requests_failed = failed.len(), "peer connection failed");
            }
            // The sessions of failed requests stay mapped until the close below has cancelled
            // whatever UCX still had in flight on their buffers.
            let mut keep = Vec::with_capacity(failed.len());
            for id in failed {
                let p = self.pending.remove(&id).expect("present");
                self.out.push(done(&p, ResultCode::PeerFailed as i32));
                keep.push(p.session);
            }
            // Descriptors from this connection name memory of a peer process that may be gone
            // (a restarted peer reuses addresses): none may be used again. UCX wants a remote
            // key destroyed before its endpoint and after the operations using it: idle keys
            // go now, keys with gets/puts in flight after the close has purged those.
            let stale: Vec<(u32, u64)> = self.remote_exports.keys().filter(|k| k.0 == handle).copied().collect();
            let mut busy = Vec::new();
            for k in stale {
                let r = self.remote_exports.remove(&k).expect("listed");
                if r.inflight > 0 {
                    busy.push(r);
                }
            }
            self.worker.close(conn.ep);
            drop(busy);
        } else if let Some(ep) = self.accepted.remove(&key) {
            tracing::info!(%error, "peer engine disconnected");
            self.settings.exports.connection_gone(self.id, key);
            self.worker.close(ep);
        } else {
            return;
        }
        // Buffers of sends and receives on that endpoint were completed by the close.
        self.server_bufs.retain(|_, b| b.ep != key);
    }

    /// Fails requests past their deadline.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.receiving && p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
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
        tracing::debug!(
            session = session.id,
            bytes = reg.len,
            "session region registered with UCX"
        );
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
            self.conns.insert(
                handle,
                PeerConn {
                    ep,
                    entry,
                    logged: false,
                },
            );
        }
        Ok(())
    }

    fn new_req_id(&mut self) -> u64 {
        let id = self.next_req;
        self.next_req = (self.next_req + 1) & !(SERVER_TOKEN | AUX_TOKEN);
        id
    }

    /// Sends a request message (SEND's REQUEST or NEEDLE_REQUEST, with the reply flag) to a
    /// connected peer and files the request as pending: its reply lands at `resp_offset`, at
    /// most `resp_cap` bytes, with a needle's metadata at `meta_offset`. The header (and the
    /// session, whose buffer the payload is read from) are kept in `sends` until UCX is done.
    ///
    /// # Safety
    /// `data` must point to `len` readable bytes inside the session's region, and the reply
    /// ranges must lie inside its buffer area.
    unsafe fn send_request(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        peer: u32,
        req_id: u64,
        (id, header, data, len): (u16, Box<[u8]>, *const u8, usize),
        (resp_offset, resp_cap, meta_offset): (usize, usize, Option<usize>),
    ) -> Result<(), ResultCode> {
        let now = Instant::now();
        let conn = &self.conns[&peer];
        // Safety: the caller's promise for `data`; the header box is kept in `sends` until
        // SendDone (or dropped here when the send completed at once).
        let started = unsafe { self.worker.am_send(&conn.ep, id, &header[..], data, len, true, req_id) };
        tracing::trace!(req_id, peer, id, len, ?started, "request sent");
        match started {
            Err(e) => {
                tracing::debug!(peer, id, error = %e, "request send failed");
                return Err(ResultCode::PeerFailed);
            }
            Ok(Started::InProgress) => {
                self.sends.insert(req_id, (header, session.clone(), peer));
            }
            Ok(Started::Done) => {}
        }
        bump(&conn.entry.stats.requests);
        self.pending.insert(
            req_id,
            Pending {
                session: session.clone(),
                user_data,
                peer,
                peer_stats: conn.entry.clone(),
                resp_offset,
                resp_cap,
                started: now,
                deadline: now + self.settings.request_timeout,
                receiving: false,
                rma: None,
                meta_offset,
                lookup: false,
            },
        );
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
        self.remote_exports.clear();
        self.sends.clear();
        for (key, ep) in std::mem::take(&mut self.accepted) {
            self.settings.exports.connection_gone(self.id, key);
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
        if req.len > self.settings.max_message {
            return Err(ResultCode::InvalidEntry);
        }
        self.register(session)?;
        self.ensure_conn(req.peer)?;
        let req_id = self.new_req_id();
        let header = Box::new(
            Header {
                req_id,
                a: req.service,
                b: req.resp_cap as u32,
            }
            .encode(),
        );
        // Safety: offset + len is inside the session's buffer area (validated); the region
        // stays mapped while the Pending that send_request files holds the session's Arc. The
        // bytes are the client's to change, which only changes what is sent.
        let data = unsafe { session.region.buf_ptr().add(req.offset) };
        // Safety: as above.
        unsafe {
            self.send_request(
                session,
                user_data,
                req.peer,
                req_id,
                (AM_REQUEST, header, data, req.len),
                (req.resp_offset, req.resp_cap, None),
            )
        }
    }

    fn start_rma(&mut self, session: &Arc<SessionShared>, user_data: u64, req: RmaRequest) -> Result<(), ResultCode> {
        let now = Instant::now();
        self.register(session)?;
        self.ensure_conn(req.peer)?;
        let ep = self.conns[&req.peer].ep.key();
        let cached = self
            .remote_exports
            .get(&(req.peer, req.export_id))
            .is_some_and(|r| r.key == req.key && r.ep == ep && r.revoked_on.is_none());
        if !cached {
            admit_lookup(session, now)?;
        }
        let req_id = self.new_req_id();
        let conn = &self.conns[&req.peer];
        bump(&conn.entry.stats.requests);
        if !cached {
            let header = Box::new(
                ExportRefHeader {
                    req_id,
                    export: req.export_id,
                    key: req.key,
                }
                .encode(),
            );
            // Safety: the header is kept in `sends` until the query's SendDone; no payload.
            let r = unsafe {
                self.worker.am_send(
                    &conn.ep,
                    AM_QUERY,
                    &header[..],
                    std::ptr::null(),
                    0,
                    true,
                    req_id | AUX_TOKEN,
                )
            };
            match r {
                Err(e) => {
                    tracing::debug!(peer = req.peer, error = %e, "export query failed to start");
                    // Not an answer about the export: the lookup's token goes back.
                    session
                        .lookups
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .answered(now, false);
                    return Err(ResultCode::PeerFailed);
                }
                Ok(Started::InProgress) => {
                    self.sends
                        .insert(req_id | AUX_TOKEN, (header, session.clone(), req.peer));
                }
                Ok(Started::Done) => {}
            }
        }
        self.pending.insert(
            req_id,
            Pending {
                session: session.clone(),
                user_data,
                peer: req.peer,
                peer_stats: conn.entry.clone(),
                resp_offset: req.offset,
                resp_cap: req.len,
                started: now,
                deadline: now + self.settings.request_timeout,
                receiving: false,
                rma: Some(req),
                meta_offset: None,
                lookup: !cached,
            },
        );
        if cached {
            self.issue_rma(req_id);
        }
        Ok(())
    }

    fn start_read_needle(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        req: NeedleRequest,
    ) -> Result<(), ResultCode> {
        self.register(session)?;
        self.ensure_conn(req.peer)?;
        let req_id = self.new_req_id();
        // Safety: offset + jwt_len <= offset + NEEDLE_META_LEN, inside the session's buffer
        // area (validated); the region is mapped while the session's Arc lives.
        let jwt = unsafe { copy_from_shared(session.region.buf_ptr().add(req.offset), req.jwt_len) };
        let header = NeedleWire {
            req_id,
            needle: req.needle,
            range_offset: req.range_offset,
            max_len: req.max_len,
            volume: req.volume,
            cookie: req.cookie,
            ranged: req.ranged,
            jwt,
        }
        .encode()
        .into_boxed_slice();
        // Safety: no payload. The reply lands at offset + NEEDLE_META_LEN, at most max_len
        // (<= data_cap) bytes, and the metadata at offset: inside the buffer (validated).
        unsafe {
            self.send_request(
                session,
                user_data,
                req.peer,
                req_id,
                (AM_NEEDLE_REQUEST, header, std::ptr::null(), 0),
                (req.offset + NEEDLE_META_LEN, req.max_len as usize, Some(req.offset)),
            )
        }
    }

    fn export(
        &mut self,
        session: &Arc<SessionShared>,
        offset: usize,
        len: usize,
        perms: u32,
    ) -> Result<(u64, u64), ResultCode> {
        let ctx = self.settings.context().map_err(|_| ResultCode::Internal)?;
        // Safety: the range is inside the session's buffer area (validated); the export entry
        // holds the session (so the region stays mapped) and drops the registration first.
        let reg = unsafe { ctx.register(session.region.buf_ptr().add(offset), len) }.map_err(|e| {
            tracing::error!(session = session.id, error = %e, "cannot register an export");
            ResultCode::Internal
        })?;
        let rkey = reg.pack_rkey().map_err(|_| ResultCode::Internal)?;
        let (id, key) = self
            .settings
            .exports
            .add(session.clone(), offset, len, perms, reg, rkey)
            .map_err(|e| {
                tracing::error!(session = session.id, error = %e, "no random bytes for an export id and key");
                ResultCode::Internal
            })?;
        tracing::debug!(session = session.id, export = id, offset, len, perms, "memory exported");
        Ok((id, key))
    }

    fn unexport(&mut self, session: &Arc<SessionShared>, id: u64) -> Result<(), ResultCode> {
        self.settings.exports.unexport(session.id, id)
    }
}

/// May this session look up an export at a peer now (SPEC.md §14: failed lookups are
/// throttled per session)? Refusals are logged at most once per session every few seconds.
fn admit_lookup(session: &SessionShared, now: Instant) -> Result<(), ResultCode> {
    let verdict = session.lookups.lock().unwrap_or_else(|p| p.into_inner()).check(now);
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Refuse { log } => {
            if let Some(refused) = log {
                tracing::warn!(
                    session = session.id,
                    client_pid = session.client_pid,
                    refused,
                    burst = BURST,
                    per_second = REFILL_PER_SEC,
                    "session throttled: too many READ/WRITEs named exports that do not exist (wrong id or key)"
                );
            }
            Err(ResultCode::Throttled)
        }
    }
}

fn done(p: &Pending, result: i32) -> RemoteCompletion {
    if p.lookup {
        let not_exported = result == ResultCode::NotExported as i32;
        p.session
            .lookups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered(Instant::now(), not_exported);
    }
    if result == ResultCode::PeerFailed as i32 {
        bump(&p.peer_stats.stats.failures);
    } else if result >= 0 {
        p.peer_stats.stats.latency.record(p.started.elapsed().as_nanos() as u64);
    }
    RemoteCompletion {
        session: p.session.id,
        user_data: p.user_data,
        result,
    }
}

/// Exporting side: a peer's QUERY for export (id, key) on connection (worker, ep), answered
/// with INFO: the descriptor, or not-exported whether the id is unknown or the key wrong.
fn answer_query(settings: &UcxSettings, r: ExportRefHeader, worker: usize, ep: EpKey) -> (Header, Vec<u8>) {
    match settings.exports.query(r.export, r.key, worker, ep) {
        Ok(d) => {
            let body = ExportDescriptor {
                base_addr: d.base_addr,
                len: d.len,
                rkey: &d.rkey,
            }
            .encode();
            let h = Header {
                req_id: r.req_id,
                a: 0,
                b: d.perms,
            };
            (h, body)
        }
        Err(code) => {
            let h = Header {
                req_id: r.req_id,
                a: code as i32 as u32,
                b: 0,
            };
            (h, Vec::new())
        }
    }
}

/// Serving side: validate an incoming request and answer it (the echo service).
fn serve_request(h: Header, data: AmData<'_>, ep: EpKey, max_message: usize, d: &mut Deferred) {
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
        (Some(code), _) => d.outgoing.push((
            ep,
            AM_REPLY,
            Header {
                req_id: h.req_id,
                a: code as i32 as u32,
                b: 0,
            },
            Vec::new(),
        )),
        (None, AmData::Eager(b)) => d.outgoing.push((
            ep,
            AM_REPLY,
            Header {
                req_id: h.req_id,
                a: 0,
                b: 0,
            },
            b.to_vec(),
        )),
        (None, AmData::Rndv(r)) => d.echo_rndv.push((ep, h.req_id, r)),
    }
}

/// Requesting side: a reply arrived for one of our requests (`meta`: a needle reply's
/// metadata, from the header after its first 16 bytes).
fn take_reply(
    h: Header,
    meta: Option<&[u8]>,
    data: AmData<'_>,
    pending: &mut HashMap<u64, Pending>,
    d: &mut Deferred,
    out: &mut Vec<RemoteCompletion>,
) {
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
    } else if meta.is_some() != p.meta_offset.is_some() {
        tracing::warn!(req_id = h.req_id, "reply of the wrong kind for its request");
        Some(ResultCode::PeerFailed as i32)
    } else {
        None
    };
    if let Some(r) = result {
        let p = pending.remove(&h.req_id).expect("present");
        out.push(done(&p, r));
        return;
    }
    if let (Some(meta), Some(at)) = (meta, p.meta_offset) {
        // The serving engine is trusted (SPEC §13), but its metadata is still checked before
        // it is written: it must decode, fit the metadata area, and describe this reply.
        let meta_len = (h.b as usize).min(meta.len());
        let ok = meta_len <= NEEDLE_META_MAX
            && NeedleMeta::decode(&meta[..meta_len])
                .is_ok_and(|m| m.range_offset.saturating_add(len as u64) <= m.data_size);
        if !ok {
            tracing::warn!(req_id = h.req_id, "needle reply with bad metadata");
            let p = pending.remove(&h.req_id).expect("present");
            out.push(done(&p, ResultCode::PeerFailed as i32));
            return;
        }
        // Safety: at + NEEDLE_META_LEN is inside the session's buffer area (validated:
        // buf_len >= NEEDLE_META_LEN) and meta_len <= NEEDLE_META_MAX <= NEEDLE_META_LEN; the
        // region is mapped while Pending holds its Arc; the client reads the area only after
        // the completion.
        unsafe { std::ptr::copy_nonoverlapping(meta.as_ptr(), p.session.region.buf_ptr().add(at), meta_len) };
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn registry_gives_stable_handles_and_releases_them_with_the_last_session() {
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
        let g = r.generation();
        r.release([1]);
        assert_eq!(r.handle_of(a), Some(1), "a second session still holds it");
        assert_eq!(r.generation(), g);
        r.release([1, 2]);
        assert!(r.all().is_empty());
        assert_ne!(r.generation(), g);
        // Handles are not reused right away.
        assert_eq!(r.register(b), 3);
    }
}

/// Copies `len` bytes a client may be writing at the same time out of its shared memory:
/// each byte is loaded once (relaxed atomic loads, so a concurrent write is a defined race),
/// and only the copy is used afterwards.
///
/// # Safety
/// `p .. p + len` must be inside a live mapping of the session's region.
unsafe fn copy_from_shared(p: *const u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            // Safety: inside the mapping (the caller's promise); AtomicU8 has the size and
            // alignment of u8, and every access to shared bytes by the engine is atomic or
            // happens while the client may not touch them.
            unsafe { std::sync::atomic::AtomicU8::from_ptr(p.add(i) as *mut u8) }
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect()
}
