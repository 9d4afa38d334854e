//! Remote operations: one data plane per engine worker, over that worker's own UCX worker.
//!
//! Engine-to-engine messages (UCX active messages) are defined in `ring_proto::wire`
//! (SPEC.md §13–15). The parts:
//!
//! - [`peers`]: the engine-wide peer registry, its counters and latency histograms;
//! - `requester`: SEND (AM_REQUEST → AM_REPLY) and READ_NEEDLE (AM_NEEDLE_REQUEST →
//!   AM_NEEDLE_REPLY) as the requesting engine runs them;
//! - `server`: answering peers' requests (the echo service, needle reads, export queries);
//! - `rma`: EXPORT/UNEXPORT and one-sided READ/WRITE (AM_QUERY → AM_INFO, then get/put; see
//!   `exports.rs` for revocation, AM_REVOKE → AM_ACK);
//! - `dispatch`: routing UCX's events to those parts, and the work they leave for after
//!   progress;
//! - this file: the data plane itself, its one entry point ([`DataPlane::submit`]) and its
//!   connections.
//!
//! The worker hands the data plane one request at a time ([`DataPlane::submit`]) and takes
//! back completions keyed by session id ([`DataPlane::take_completions`]). Memory UCX reads
//! or writes is handed to it as `SharedRange`s (checked ranges that hold the session) or
//! owned buffers, so nothing here touches shared memory but through `ring_proto`'s region
//! view.

mod dispatch;
mod local;
pub mod peers;
mod requester;
mod rma;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use engine::ucx::{self, Endpoint, EpKey, UcxError};
use ring_proto::entry::ExportTicket;
use ring_proto::wire::am;
use ring_proto::{ResultCode, SharedRange};

use crate::exports::ExportTable;
use crate::io_pool::{Handback, IoPool};
use crate::seaweed::VolumeStore;
use crate::session::{RemoteOp, RemoteRequest, SessionShared, Submitted};

// The registry's types keep the paths they had before the split (status, metrics).
#[allow(unused_imports)]
pub use peers::{LatencyHistogram, PeerEntry, PeerRegistry, PeerStats, LATENCY_BOUNDS_NS};

use dispatch::Deferred;
use local::LocalDone;
use peers::bump;
use requester::{done, Pending};
use rma::RemoteExport;
use server::{EchoRecv, NeedleDone};

/// A needle read an I/O thread finished: for a peer (answered over UCX) or for one of this
/// worker's own sessions (written into its buffer, `local.rs`).
enum IoDone {
    Peer(NeedleDone),
    Local(LocalDone),
}

/// Tokens of this worker's own sends/receives on behalf of peers (replies, echo receives)
/// have this bit set; requester tokens are request ids.
const SERVER_TOKEN: u64 = 1 << 63;
/// Token of a WRITE's put (request `req_id`): `req_id | AUX_TOKEN`. The WRITE completes when
/// both its put and the flush after it (token `req_id`) have.
const AUX_TOKEN: u64 = 1 << 62;
/// Token of the AM_QUERY send of READ/WRITE `req_id` (asking for the export's descriptor):
/// `req_id | QUERY_TOKEN`. Its success is not the request's completion; its failure fails
/// the request unless the descriptor came anyway and the request was issued.
const QUERY_TOKEN: u64 = 1 << 61;

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
    /// The threads that do the volume reads a worker must not wait for.
    pub io: Arc<IoPool>,
    /// `ucx.local-reads`: needle reads naming this engine itself skip UCX.
    pub local_reads: bool,
    /// The address the engine's listener bound (set once it listens).
    pub bound: OnceLock<SocketAddr>,
    /// Needle answers larger than this go by rendezvous whatever UCX_RNDV_THRESH says (set by
    /// main from the transports and the UCX runtime: `needle_rendezvous_above`).
    pub needle_rendezvous_above: Option<usize>,
    context: OnceLock<Result<Arc<ucx::Context>, UcxError>>,
}

impl UcxSettings {
    pub fn new(cfg: &crate::config::UcxConfig, peers: Arc<PeerRegistry>, io: Arc<IoPool>) -> Self {
        Self {
            transports: cfg.transports.clone(),
            net_devices: cfg.net_devices.clone(),
            listen: cfg.listen.as_ref().and_then(|l| l.parse().ok()),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            max_message: cfg.max_message_bytes as usize,
            peers,
            exports: ExportTable::default(),
            volumes: None,
            io,
            local_reads: cfg.local_reads,
            bound: OnceLock::new(),
            needle_rendezvous_above: None,
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

/// A completion the data plane produced for a session's request: the worker finds the
/// session by its id (one map lookup) and posts `result` for `user_data`.
pub struct RemoteCompletion {
    pub session: u32,
    pub user_data: u64,
    pub result: i32,
}

struct PeerConn {
    ep: Endpoint,
    entry: Arc<PeerEntry>,
    /// The transports of the connection were logged (once it carried its first answer).
    logged: bool,
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
    /// Echo payloads UCX is receiving by rendezvous, by token (answered once received).
    echo_recvs: HashMap<u64, EchoRecv>,
    next_server: u64,
    deferred: Deferred,
    out: Vec<RemoteCompletion>,
    /// Needle reads the I/O threads finished for this worker, and a buffer to take them into.
    io_back: Arc<Handback<IoDone>>,
    io_done: Vec<IoDone>,
}

impl DataPlane {
    /// Creates the worker's UCX worker (on the calling, pinned worker thread) and, if asked,
    /// the engine's listener. `wake`: the worker's wake eventfd, which the I/O threads signal
    /// when they hand a read back.
    pub fn new(settings: Arc<UcxSettings>, listen: bool, id: usize, wake: Arc<OwnedFd>) -> Result<Self, UcxError> {
        let context = settings.context()?;
        let mut worker = ucx::Worker::new(context, &am::ALL)?;
        let listener = match (listen, settings.listen) {
            (true, Some(addr)) => {
                let l = worker.listen(addr)?;
                tracing::info!(address = %l.addr, "UCX listening");
                let _ = settings.bound.set(l.addr);
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
            echo_recvs: HashMap::new(),
            next_server: 0,
            deferred: Deferred::default(),
            out: Vec::new(),
            io_back: Arc::new(Handback::new(wake)),
            io_done: Vec::new(),
        })
    }

    /// The worker hands over a request here: started (its completion comes back through
    /// [`DataPlane::poll`] or [`DataPlane::take_completions`]) or finished at once.
    pub fn submit(&mut self, req: RemoteRequest<'_>) -> Submitted {
        let RemoteRequest { session, user_data, op } = req;
        let started = match op {
            RemoteOp::Send(r) => self.start_send(session, user_data, r),
            RemoteOp::Rma(r) => self.start_rma(session, user_data, r),
            RemoteOp::ReadNeedle(r) => match self.this_engine(r.peer) {
                Some(peer) => return self.read_locally(session, user_data, r, &peer),
                None => self.start_read_needle(session, user_data, r),
            },
            RemoteOp::Export {
                offset,
                len,
                perms,
                ticket_offset,
            } => {
                let ticket = self.export(session, offset, len, perms).and_then(|(id, key)| {
                    // The client reads the ticket only after the completion the worker posts
                    // (the CQ tail's Release store orders these bytes before it).
                    let t = ExportTicket { id, key }.encode();
                    session
                        .region
                        .buf()
                        .copy_in(ticket_offset, &t)
                        .map_err(|_| ResultCode::Internal)
                });
                return Submitted::Now(ticket.map_or_else(|c| c as i32, |()| 0));
            }
            RemoteOp::Unexport { id } => {
                let r = self.settings.exports.unexport(session.id, id);
                return Submitted::Now(r.map_or_else(|c| c as i32, |()| 0));
            }
        };
        match started {
            Ok(()) => Submitted::Later,
            Err(code) => Submitted::Now(code as i32),
        }
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
        for (key, ep) in std::mem::take(&mut self.accepted) {
            self.settings.exports.connection_gone(self.id, key);
            self.worker.close(ep);
        }
        if let Some(l) = self.listener.take() {
            l.destroy();
        }
        std::mem::take(&mut self.out)
    }

    /// The completions produced since the last call (by `poll`, `expire`, failures): the one
    /// way results go back to the worker.
    pub fn take_completions(&mut self) -> std::vec::Drain<'_, RemoteCompletion> {
        self.out.drain(..)
    }

    /// Registers the session's whole region with UCX once, on its first remote request; the
    /// registration (which holds the region's mapping) lives as long as the session.
    fn register(&self, session: &SessionShared) -> Result<(), ResultCode> {
        if session.ucx_registration.get().is_some() {
            return Ok(());
        }
        let ctx = self.settings.context().map_err(|_| ResultCode::Internal)?;
        let whole = SharedRange::whole(session.region.mapping().clone());
        let reg = ctx.register(whole).map_err(|e| {
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
        self.next_req = (self.next_req + 1) & !(SERVER_TOKEN | AUX_TOKEN | QUERY_TOKEN);
        id
    }

    fn server_token(&mut self) -> u64 {
        self.next_server = self.next_server.wrapping_add(1) & !SERVER_TOKEN;
        self.next_server | SERVER_TOKEN
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
            // What UCX still has in flight on the sessions' buffers holds them (the worker
            // keeps each operation's range until the close below has cancelled it).
            for id in failed {
                let p = self.pending.remove(&id).expect("present");
                self.out.push(done(&p, ResultCode::PeerFailed as i32));
            }
            // Descriptors from this connection name memory of a peer process that may be gone
            // (a restarted peer reuses addresses): none may be used again. Keys with gets or
            // puts in flight are held by those until the close has purged them.
            self.remote_exports.retain(|k, _| k.0 != handle);
            self.worker.close(conn.ep);
        } else if let Some(ep) = self.accepted.remove(&key) {
            tracing::info!(%error, "peer engine disconnected");
            self.settings.exports.connection_gone(self.id, key);
            self.worker.close(ep);
        } else {
            return;
        }
        // Receives on that endpoint were completed by the close.
        self.echo_recvs.retain(|_, b| b.ep != key);
    }
}
