//! The control thread: the slow path. It owns the Unix socket, performs the handshake, creates
//! and reclaims sessions, keeps leases and the engine heartbeat, and turns SIGTERM/SIGINT into
//! an orderly shutdown. The hot path never comes here.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use ring_proto::control::{ControlErrorCode, Message, CONTROL_VERSION};
use ring_proto::control_io::{self, drain_eventfd, RecvError};
use ring_proto::{CloseReason, RegionLayout, SessionState, LAYOUT_VERSION};

use crate::config::Config;
use crate::region::Region;
use crate::session::SessionShared;
use crate::status::Registry;
use crate::worker::{Command, Event, WorkerHandle};

/// Why the engine could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another engine is already serving {0}; stop it or set control.socket to another path")]
    AlreadyRunning(PathBuf),
    #[error("cannot create the control socket directory {path}: {source}")]
    SocketDir { path: PathBuf, source: std::io::Error },
    #[error("cannot bind the control socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("control.socket-group {0:?} does not exist; create it or remove the key")]
    NoSuchGroup(String),
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and every thread it spawns
/// afterwards) so they arrive only through the control thread's signalfd.
pub fn block_signals() -> Result<SigSet, StartError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block().map_err(|e| StartError::Signals(e.into()))?;
    Ok(set)
}

/// Binds the control socket: owner-only (0600), or 0660 for `socket-group`.
pub fn bind_socket(cfg: &Config) -> Result<(OwnedFd, PathBuf), StartError> {
    let path = cfg.socket_path();
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| StartError::SocketDir {
                path: dir.into(),
                source,
            })?;
            // A directory we created for the socket is ours alone unless a group shares it.
            let mode = if cfg.control.socket_group.is_some() {
                0o750
            } else {
                0o700
            };
            set_mode(dir, mode).map_err(|source| StartError::SocketDir {
                path: dir.into(),
                source,
            })?;
        }
    }
    if path.exists() {
        // A socket file left by a dead engine is removed; a live one is not ours to take.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() || seqpacket_connects(&path) {
            return Err(StartError::AlreadyRunning(path));
        }
        let _ = std::fs::remove_file(&path);
    }
    let bind_err = |e: nix::errno::Errno| StartError::Bind {
        path: path.clone(),
        source: e.into(),
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(bind_err)?;
    let addr = UnixAddr::new(&path).map_err(bind_err)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(bind_err)?;
    let io_err = |source| StartError::Bind {
        path: path.clone(),
        source,
    };
    match &cfg.control.socket_group {
        Some(group) => {
            let g = nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .ok_or_else(|| StartError::NoSuchGroup(group.clone()))?;
            nix::unistd::chown(&path, None, Some(g.gid)).map_err(|e| io_err(e.into()))?;
            set_mode(&path, 0o660).map_err(io_err)?;
        }
        None => set_mode(&path, 0o600).map_err(io_err)?,
    }
    socket::listen(&fd, Backlog::new(128).expect("valid backlog")).map_err(bind_err)?;
    Ok((fd, path))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn seqpacket_connects(path: &Path) -> bool {
    let Ok(fd) = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None) else {
        return false;
    };
    UnixAddr::new(path).is_ok_and(|a| socket::connect(fd.as_raw_fd(), &a).is_ok())
}

pub fn monotonic_ms() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists");
    t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
}

/// One control connection (= one session once the handshake succeeded).
struct Conn {
    /// None once the client's end is gone (EOF) while its session is being reclaimed.
    fd: Option<OwnedFd>,
    client_pid: i32,
    session: Option<Arc<SessionShared>>,
    /// The client asked for a graceful close; answer `Closed` once the worker let go.
    closing: bool,
    lease: Lease,
    /// Why the allow-lists refuse this client (answered after its first message).
    refused: Option<String>,
    /// Peer handles this session registered (ConnectPeer), each once; released with it.
    peers: Vec<u32>,
}

impl Conn {
    /// The socket of a connection that is still open (pending or live sessions).
    fn fd(&self) -> &OwnedFd {
        self.fd.as_ref().expect("only open connections are read or written")
    }
}

/// Signs of life seen from a client.
struct Lease {
    last_seen: Instant,
    heartbeat: u64,
    submitted: u64,
}

impl Lease {
    fn new() -> Self {
        Self {
            last_seen: Instant::now(),
            heartbeat: 0,
            submitted: 0,
        }
    }

    /// Records any change of the client's heartbeat or SQ activity; returns the silence.
    fn observe(&mut self, s: &SessionShared, now: Instant) -> Duration {
        let hb = s.region.header().client_heartbeat.load(Ordering::Relaxed);
        let sub = s.stats.submitted.get();
        if hb != self.heartbeat || sub != self.submitted {
            self.heartbeat = hb;
            self.submitted = sub;
            self.last_seen = now;
        }
        now.duration_since(self.last_seen)
    }
}

pub struct ControlServer {
    cfg: Config,
    listener: Option<OwnedFd>,
    socket_path: PathBuf,
    signals: SignalFd,
    /// Workers signal this after sending an Event.
    wake: Arc<OwnedFd>,
    events: Receiver<Event>,
    workers: Vec<WorkerHandle>,
    /// Workers and live sessions for status requests and the metrics endpoint.
    registry: Arc<Registry>,
    /// Sessions per worker, for placing new ones on the least-loaded worker.
    load: Vec<usize>,
    conns: HashMap<u32, Conn>,
    /// Connections that have not said Hello yet (at most MAX_PENDING, each for at most
    /// HANDSHAKE_TIMEOUT).
    pending: Vec<Conn>,
    /// Status replies still being sent.
    status_out: Vec<crate::status::StatusReply>,
    reserve: crate::fdlimits::FdReserve,
    next_session: u32,
    epoch: u64,
    pid: u32,
    /// Peer engines clients asked for (shared with the workers' data planes).
    peers: Arc<crate::dataplane::PeerRegistry>,
}

const TICK: Duration = Duration::from_millis(1000);
/// A connection must send its first message within this time, or it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections waiting for their first message; beyond this the oldest is closed (an honest
/// client sends Hello right after connecting, so it is never the oldest for long).
pub const MAX_PENDING: usize = 64;

impl ControlServer {
    pub fn new(
        cfg: Config,
        listener: OwnedFd,
        socket_path: PathBuf,
        signals: SigSet,
        wake: Arc<OwnedFd>,
        events: Receiver<Event>,
        workers: Vec<WorkerHandle>,
    ) -> Result<Self, StartError> {
        let signals = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| StartError::Signals(e.into()))?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let load = vec![0; workers.len()];
        let registry = Arc::new(Registry::new(&cfg, &socket_path, &workers));
        Ok(Self {
            cfg,
            listener: Some(listener),
            socket_path,
            signals,
            wake,
            events,
            workers,
            load,
            conns: HashMap::new(),
            pending: Vec::new(),
            status_out: Vec::new(),
            reserve: crate::fdlimits::FdReserve::new(),
            next_session: 1,
            peers: Default::default(),
            epoch,
            pid: std::process::id(),
            registry,
        })
    }

    /// Shares the engine's peer registry (the one the workers resolve handles in).
    pub fn set_peers(&mut self, peers: Arc<crate::dataplane::PeerRegistry>) {
        self.registry.set_peers(peers.clone());
        self.peers = peers;
    }

    /// The registry the metrics endpoint reads.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until SIGTERM/SIGINT, then shuts down in order.
    pub fn run(mut self) {
        let mut next_tick = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let ready = self.poll_once(timeout);
            if ready.shutdown {
                break;
            }
        }
        self.shutdown();
    }

    fn poll_once(&mut self, timeout: Duration) -> Ready {
        // Fixed slots first, then pending connections, then sessions.
        let session_ids: Vec<u32> = self.conns.keys().copied().collect();
        let mut fds = Vec::with_capacity(3 + self.pending.len() + session_ids.len());
        let listener = self.listener.as_ref().expect("listener lives until shutdown");
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        for c in &self.pending {
            fds.push(PollFd::new(c.fd().as_fd(), PollFlags::POLLIN));
        }
        let session_ids: Vec<u32> = session_ids
            .into_iter()
            .filter(|id| self.conns[id].fd.is_some())
            .collect();
        for id in &session_ids {
            fds.push(PollFd::new(
                self.conns[id].fd.as_ref().expect("filtered").as_fd(),
                PollFlags::POLLIN,
            ));
        }
        let status_base = fds.len();
        for r in &self.status_out {
            fds.push(PollFd::new(r.fd(), PollFlags::POLLOUT));
        }
        let ms = PollTimeout::try_from(timeout.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ready { shutdown: false },
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "control poll failed");
                std::thread::sleep(Duration::from_millis(10));
                return Ready { shutdown: false };
            }
        }
        let fired = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let listener_ready = fired(0);
        let signal_ready = fired(1);
        let wake_ready = fired(2);
        let pending_ready: Vec<bool> = (0..self.pending.len()).map(|i| fired(3 + i)).collect();
        let sessions_ready: Vec<u32> = session_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| fired(3 + pending_ready.len() + i))
            .map(|(_, id)| *id)
            .collect();
        let status_ready: Vec<bool> = (0..self.status_out.len()).map(|i| fired(status_base + i)).collect();
        drop(fds);

        if signal_ready && self.take_shutdown_signal() {
            return Ready { shutdown: true };
        }
        if wake_ready {
            let _ = drain_eventfd(self.wake.as_fd());
            self.handle_worker_events();
        }
        // Pending connections: iterate from the back so removal keeps indices valid.
        for i in (0..pending_ready.len()).rev() {
            if pending_ready[i] {
                let conn = self.pending.swap_remove(i);
                self.handle_hello(conn);
            }
        }
        for id in sessions_ready {
            self.handle_session_message(id);
        }
        let now = Instant::now();
        for i in (0..status_ready.len()).rev() {
            if status_ready[i] && self.status_out[i].progress(now) {
                self.status_out.swap_remove(i);
            }
        }
        if listener_ready {
            self.accept_all();
        }
        Ready { shutdown: false }
    }

    fn take_shutdown_signal(&mut self) -> bool {
        let mut shutdown = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                    tracing::info!(signal = info.ssi_signo, "shutdown requested");
                    shutdown = true;
                }
                Ok(Signal::SIGHUP) => crate::reload::on_sighup(),
                _ => {}
            }
        }
        shutdown
    }

    fn accept_all(&mut self) {
        let listener = self.listener.as_ref().expect("listener lives until shutdown");
        loop {
            match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
                Ok(raw) => {
                    // Safety: accept4 returned a new descriptor that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                    let creds = socket::getsockopt(&fd, sockopt::PeerCredentials).ok();
                    let client_pid = creds.map_or(0, |c| c.pid());
                    // A client that the allow-lists refuse is answered after its first message
                    // (in handle_hello): refusing at once would close the socket under its
                    // Hello, and the reset could swallow the explanation.
                    let refused = self.allowed(creds.map(|c| (c.uid(), c.gid()))).err();
                    if self.pending.len() >= MAX_PENDING {
                        let oldest = (0..self.pending.len())
                            .min_by_key(|&i| self.pending[i].lease.last_seen)
                            .expect("pending is full");
                        let old = self.pending.swap_remove(oldest);
                        tracing::warn!(
                            client_pid = old.client_pid,
                            max = MAX_PENDING,
                            "too many connections without Hello; closed the oldest"
                        );
                    }
                    self.pending.push(Conn {
                        fd: Some(fd),
                        client_pid,
                        session: None,
                        closing: false,
                        lease: Lease::new(),
                        refused,
                        peers: Vec::new(),
                    });
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => continue,
                Err(e @ (nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)) => {
                    // Out of descriptors: turn the waiting client away (EOF) with the reserve
                    // rather than leave it hanging and this loop spinning on the listener.
                    tracing::warn!(error = %e, sessions = self.conns.len(), "accept failed: out of file descriptors; connection closed (raise LimitNOFILE)");
                    if !self.reserve.shed_one(listener.as_fd()) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    /// Checks a client's credentials (SO_PEERCRED) against the allow-lists.
    fn allowed(&self, creds: Option<(u32, u32)>) -> Result<(), String> {
        let c = &self.cfg.control;
        if c.allow_users.is_empty() && c.allow_groups.is_empty() {
            return Ok(());
        }
        let Some((uid, gid)) = creds else {
            return Err("the client's credentials could not be read".into());
        };
        let user_ok = c.allow_users.iter().any(|u| {
            nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .is_some_and(|u| u.uid.as_raw() == uid)
        });
        let group_ok = c.allow_groups.iter().any(|g| {
            nix::unistd::Group::from_name(g).ok().flatten().is_some_and(|g| {
                g.gid.as_raw() == gid
                    || nix::unistd::User::from_uid(uid.into())
                        .ok()
                        .flatten()
                        .is_some_and(|u| g.mem.contains(&u.name))
            })
        });
        if user_ok || group_ok {
            return Ok(());
        }
        Err(format!(
            "uid {uid} (gid {gid}) is not in control.allow-users or control.allow-groups of this engine"
        ))
    }

    fn refuse(conn: &Conn, code: ControlErrorCode, message: String) {
        tracing::info!(client_pid = conn.client_pid, ?code, %message, "session refused");
        let _ = control_io::send_nonblocking(
            conn.fd().as_fd(),
            &Message::Error {
                code: code as u32,
                message,
            },
            &[],
        );
    }

    fn handle_hello(&mut self, mut conn: Conn) {
        // Any descriptors a client sends are closed on the spot (the engine never takes any).
        let msg = match control_io::recv_nonblocking(conn.fd().as_fd()) {
            Ok((m, _fds)) => m,
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return self.pending.push(conn),
            Err(RecvError::Eof) | Err(RecvError::Io(_)) => return,
            Err(RecvError::Decode(ring_proto::control::DecodeError::Version { found, expected })) => {
                return Self::refuse(
                    &conn,
                    ControlErrorCode::VersionMismatch,
                    format!("control protocol version {found} is not supported; this engine speaks {expected}"),
                )
            }
            Err(e) => return Self::refuse(&conn, ControlErrorCode::Malformed, e.to_string()),
        };
        if let Some(why) = &conn.refused {
            tracing::warn!(client_pid = conn.client_pid, reason = %why, "client refused by control.allow-users / allow-groups");
            return Self::refuse(&conn, ControlErrorCode::PermissionDenied, why.clone());
        }
        if msg == Message::Status {
            // An operator's status request: answered, then the connection is dropped.
            let fd = conn.fd.take().expect("pending connections are open");
            let mut reply = crate::status::StatusReply::new(fd, &self.registry);
            if !reply.progress(Instant::now()) {
                self.status_out.push(reply);
            }
            return;
        }
        let Message::Hello {
            layout_version,
            sq_entries,
            cq_entries,
            buf_size,
        } = msg
        else {
            return Self::refuse(
                &conn,
                ControlErrorCode::Malformed,
                format!("expected Hello first, got {msg:?}"),
            );
        };
        if layout_version != LAYOUT_VERSION {
            return Self::refuse(
                &conn,
                ControlErrorCode::VersionMismatch,
                format!("region layout version {layout_version} is not supported; this engine speaks {LAYOUT_VERSION} (control {CONTROL_VERSION})"),
            );
        }
        if self.conns.len() >= self.cfg.control.max_sessions as usize {
            return Self::refuse(
                &conn,
                ControlErrorCode::TooManySessions,
                format!("engine is at control.max-sessions = {}", self.cfg.control.max_sessions),
            );
        }
        let layout = match self.session_layout(sq_entries, cq_entries, buf_size) {
            Ok(l) => l,
            Err(m) => return Self::refuse(&conn, ControlErrorCode::BadRequest, m),
        };
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(1).max(1);
        let region = match Region::create(layout, self.cfg.memory.hugepages, &format!("seaweed-ring-s{id}")) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(session = id, error = %e, "region creation failed");
                return Self::refuse(&conn, ControlErrorCode::RegionUnavailable, e.to_string());
            }
        };
        region.initialize(self.pid, id, self.epoch, self.cfg.sessions.lease_ms);
        region
            .header()
            .engine_heartbeat
            .store(monotonic_ms(), Ordering::Relaxed);
        let doorbells = control_io::new_doorbell().and_then(|sq| Ok((sq, control_io::new_doorbell()?)));
        let ((sq_doorbell, sq_client_end), (cq_client_end, cq_doorbell)) = match doorbells {
            Ok(d) => d,
            Err(e) => {
                return Self::refuse(
                    &conn,
                    ControlErrorCode::RegionUnavailable,
                    format!("doorbell pipes: {e}"),
                )
            }
        };
        let worker = (0..self.load.len())
            .min_by_key(|&w| self.load[w])
            .expect("at least one worker");
        let backing = region.backing();
        let shared = Arc::new(SessionShared {
            id,
            worker,
            ucx_registration: Default::default(),
            region,
            cq_doorbell,
            sq_doorbell,
            stats: Default::default(),
            client_pid: conn.client_pid,
            lookups: Default::default(),
        });
        let welcome = Message::Welcome {
            session_id: id,
            worker: worker as u32,
            region_size: shared.region.len() as u64,
        };
        // The client's ends of its doorbells are closed here once sent (dropped at the end of
        // this function): the engine keeps only its own ends.
        let fds: [BorrowedFd<'_>; 3] = [shared.region.fd(), sq_client_end.as_fd(), cq_client_end.as_fd()];
        // Logged before the client can use the session, so that "session opened" always
        // precedes anything the session does (tests and operators count these lines).
        tracing::info!(
            session = id,
            client_pid = conn.client_pid,
            worker,
            backing = backing.name(),
            sq = layout.sq_entries,
            cq = layout.cq_entries,
            buffer = layout.buf_size,
            "session opened"
        );
        if let Err(e) = control_io::send_nonblocking(conn.fd().as_fd(), &welcome, &fds) {
            tracing::info!(session = id, error = %e, "session closed: the client left during the handshake");
            return;
        }
        self.workers[worker].send(Command::Add(shared.clone()));
        self.load[worker] += 1;
        self.registry.session_opened(shared.clone());
        self.conns.insert(
            id,
            Conn {
                session: Some(shared),
                ..conn
            },
        );
    }

    fn session_layout(&self, sq: u32, cq: u32, buf: u64) -> Result<RegionLayout, String> {
        let m = &self.cfg.memory;
        let sq = if sq == 0 { m.sq_entries } else { sq };
        let cq = if cq == 0 { m.cq_entries } else { cq };
        let buf = if buf == 0 { m.buffer_bytes } else { buf };
        if sq > m.max_sq_entries || cq > m.max_cq_entries || buf > m.max_buffer_bytes {
            return Err(format!(
                "asked for sq={sq} cq={cq} buffer={buf}; this engine allows at most sq={} cq={} buffer={} (memory.max-*)",
                m.max_sq_entries, m.max_cq_entries, m.max_buffer_bytes
            ));
        }
        RegionLayout::new(sq, cq, buf).map_err(|e| e.to_string())
    }

    fn handle_session_message(&mut self, id: u32) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // Replies never wait: a client that does not read its socket loses them (SPEC §2).
        // Descriptors sent with any message are closed on the spot.
        let violation = match control_io::recv_nonblocking(conn.fd().as_fd()) {
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(RecvError::Eof) | Err(RecvError::Io(_)) => None,
            Ok(_) if conn.closing => {
                tracing::debug!(session = id, "control message after Close ignored");
                return;
            }
            Ok((Message::Ping, _)) => {
                conn.lease.last_seen = Instant::now();
                let _ = control_io::send_nonblocking(conn.fd().as_fd(), &Message::Pong, &[]);
                return;
            }
            Ok((Message::ConnectPeer { addr }, _)) => {
                conn.lease.last_seen = Instant::now();
                let max = self.cfg.control.max_peers_per_session;
                let reply = match addr.parse::<std::net::SocketAddr>() {
                    Ok(a) => match self.peers.handle_of(a).filter(|h| conn.peers.contains(h)) {
                        // Registered by this session already: same handle, nothing new held.
                        Some(peer) => Message::PeerConnected { peer },
                        None if conn.peers.len() >= max as usize => {
                            tracing::warn!(session = id, max, address = %a, "peer registration refused: the session holds the most allowed");
                            Message::Error {
                                code: ControlErrorCode::TooManyPeers as u32,
                                message: format!(
                                    "this session registered {max} peers already (control.max-peers-per-session); open another session or raise the limit"
                                ),
                            }
                        }
                        None => {
                            let peer = self.peers.register(a);
                            conn.peers.push(peer);
                            tracing::info!(session = id, peer, address = %a, "peer registered");
                            Message::PeerConnected { peer }
                        }
                    },
                    Err(_) => Message::Error {
                        code: ControlErrorCode::BadRequest as u32,
                        message: format!("peer address {addr:?} is not ip:port"),
                    },
                };
                let _ = control_io::send_nonblocking(conn.fd().as_fd(), &reply, &[]);
                return;
            }
            Ok((Message::Close, _)) => {
                conn.closing = true;
                self.remove(id, true, SessionState::Closed, CloseReason::ClientClosed);
                return;
            }
            // A second Hello, a Status, an engine-to-client kind: SPEC §2 ends the session.
            Ok((other, _)) => Some(format!("{} is not allowed after the handshake", other.name())),
            Err(e) => Some(e.to_string()),
        };
        let conn = self.conns.get_mut(&id).expect("checked above");
        if let Some(why) = violation {
            tracing::warn!(session = id, reason = %why, "control protocol violation; ending the session");
            let _ = control_io::send_nonblocking(
                conn.fd().as_fd(),
                &Message::Error {
                    code: ControlErrorCode::Malformed as u32,
                    message: why,
                },
                &[],
            );
        } else {
            tracing::info!(session = id, "client disconnected");
        }
        // The client closed its end, died or broke the protocol: reclaim everything (accepted
        // entries still complete first), as for EOF.
        if !conn.closing {
            conn.closing = true;
            self.remove(id, false, SessionState::Closed, CloseReason::ClientClosed);
        }
        // Stop polling the socket; it closes when the worker lets go.
        if let Some(c) = self.conns.get_mut(&id) {
            c.fd = None;
        }
    }

    /// Asks the session's worker to let go of it; the connection goes on `Event::Removed`.
    fn remove(&mut self, id: u32, drain: bool, state: SessionState, reason: CloseReason) {
        if let Some(s) = self.conns.get(&id).and_then(|c| c.session.as_ref()) {
            self.workers[s.worker].send(Command::Remove {
                id,
                drain,
                state,
                reason,
            });
        }
    }

    fn handle_worker_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Broken { id, reason } => {
                    tracing::warn!(session = id, ?reason, "session broken by its client");
                }
                Event::Removed { id } => {
                    if let Some(conn) = self.conns.remove(&id) {
                        let session = conn.session.expect("registered sessions have one");
                        self.registry.session_closed(id);
                        // After the worker let go: nothing of this session waits on a peer.
                        if self.peers.release(conn.peers.iter().copied()) {
                            // Workers close their connections to released peers promptly.
                            for w in &self.workers {
                                w.send(Command::PeersReleased);
                            }
                        }
                        self.load[session.worker] -= 1;
                        if let (true, Some(fd)) = (conn.closing, &conn.fd) {
                            let _ = control_io::send_nonblocking(fd.as_fd(), &Message::Closed, &[]);
                        }
                        let (client_pid, stats) = (session.client_pid, session.stats.summary());
                        // Dropping the connection closes the socket; dropping the last Arc
                        // unmaps the region and closes its memfd and eventfd. Both happen
                        // before the log line, so "session closed" means reclaimed (a metrics
                        // scrape in progress may hold the Arc a moment longer).
                        drop(conn.fd);
                        drop(session);
                        tracing::info!(session = id, client_pid, stats = %stats, "session closed");
                    }
                }
            }
        }
    }

    /// Once a second: refresh the engine heartbeat in every header and enforce leases.
    fn tick(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending
            .retain(|c| now.duration_since(c.lease.last_seen) < HANDSHAKE_TIMEOUT);
        if self.pending.len() < before {
            tracing::info!(
                closed = before - self.pending.len(),
                timeout_s = HANDSHAKE_TIMEOUT.as_secs(),
                "connections without a first message closed"
            );
        }
        self.status_out.retain_mut(|r| !r.progress(now));
        let hb = monotonic_ms();
        let lease = Duration::from_millis(self.cfg.sessions.lease_ms as u64);
        let mut expired = Vec::new();
        let mut lost = Vec::new();
        for (&id, conn) in &mut self.conns {
            let Some(s) = &conn.session else { continue };
            s.region.header().engine_heartbeat.store(hb, Ordering::Relaxed);
            // The SIGBUS handler replaced the region (this store may have been what faulted):
            // its worker may be asleep, so the Remove command is also what wakes it.
            if s.region.lost() {
                lost.push(id);
                continue;
            }
            if !lease.is_zero() && !conn.closing && conn.lease.observe(s, now) > lease {
                expired.push(id);
            }
        }
        for id in lost {
            tracing::warn!(
                session = id,
                "session's region lost (client punched holes in its memfd); ending it"
            );
            self.remove(id, false, SessionState::Broken, CloseReason::None);
        }
        for id in expired {
            tracing::warn!(
                session = id,
                lease_ms = self.cfg.sessions.lease_ms,
                "lease expired; ending session"
            );
            if let Some(c) = self.conns.get_mut(&id) {
                c.closing = true;
            }
            self.remove(id, false, SessionState::Closed, CloseReason::LeaseExpired);
        }
    }

    fn shutdown(mut self) {
        // Stop accepting first: new clients get ECONNREFUSED/ENOENT from now on.
        self.listener = None;
        let _ = std::fs::remove_file(&self.socket_path);
        for c in &self.pending {
            Self::refuse(c, ControlErrorCode::ShuttingDown, "engine is shutting down".into());
        }
        let drain_timeout = Duration::from_millis(self.cfg.sessions.drain_timeout_ms);
        tracing::info!(sessions = self.conns.len(), "draining sessions");
        for w in &self.workers {
            w.send(Command::Shutdown { drain_timeout });
        }
        for w in std::mem::take(&mut self.workers) {
            let (id, core, stats) = (w.id, w.core, w.stats.clone());
            w.join();
            tracing::info!(worker = id, core, stats = %stats.summary(), "worker joined");
        }
        // Every session now has a terminal state; dropping the connections tells the clients.
        while let Ok(Event::Removed { id } | Event::Broken { id, .. }) = self.events.try_recv() {
            if let Some(Conn {
                closing: true,
                fd: Some(fd),
                ..
            }) = self.conns.remove(&id)
            {
                let _ = control_io::send_nonblocking(fd.as_fd(), &Message::Closed, &[]);
            }
        }
        self.conns.clear();
        tracing::info!("engine stopped");
    }
}

struct Ready {
    shutdown: bool,
}
