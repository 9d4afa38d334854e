//! What the engine is doing, for operators: a registry of workers and live sessions that the
//! control thread keeps up to date (on session open and close only — the hot path never
//! touches it), the [`Snapshot`] built from it for `engine status` and the metrics endpoint,
//! and the `engine status` client.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use ring_proto::control::{Message, CONTROL_VERSION, MAX_STATUS_CHUNK};
use ring_proto::control_io;
use ring_proto::{SessionState, LAYOUT_VERSION};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::session::SessionShared;
use crate::stats::{ErrorKinds, WorkerStats};
use crate::worker::WorkerHandle;

struct WorkerEntry {
    id: usize,
    core: usize,
    stats: Arc<WorkerStats>,
}

/// Workers (fixed at start) and live sessions, shared by the control thread (writer) with
/// the metrics thread and status requests (readers).
pub struct Registry {
    started: Instant,
    socket: PathBuf,
    max_sessions: u32,
    workers: Vec<WorkerEntry>,
    sessions: Mutex<BTreeMap<u32, Arc<SessionShared>>>,
    /// Peer engines (set once at start, shared with the workers' data planes).
    peers: std::sync::OnceLock<Arc<crate::dataplane::PeerRegistry>>,
    /// Counts the engine's memory exports and the peers' queries it answered not-exported.
    exports: std::sync::OnceLock<ExportCounter>,
    volumes: std::sync::OnceLock<VolumeSource>,
    indexing: std::sync::OnceLock<IndexingSource>,
    io: std::sync::OnceLock<Arc<crate::io_pool::IoPool>>,
}

impl Registry {
    pub fn new(cfg: &Config, socket: &Path, workers: &[WorkerHandle]) -> Self {
        Self {
            started: Instant::now(),
            socket: socket.into(),
            max_sessions: cfg.control.max_sessions,
            workers: workers
                .iter()
                .map(|w| WorkerEntry {
                    id: w.id,
                    core: w.core,
                    stats: w.stats.clone(),
                })
                .collect(),
            sessions: Mutex::new(BTreeMap::new()),
            peers: std::sync::OnceLock::new(),
            exports: std::sync::OnceLock::new(),
            volumes: std::sync::OnceLock::new(),
            indexing: std::sync::OnceLock::new(),
            io: std::sync::OnceLock::new(),
        }
    }

    /// Shows how many memory exports the engine holds.
    /// Where snapshots take the SeaweedFS volumes served from.
    pub fn set_volume_source(&self, f: VolumeSource) {
        let _ = self.volumes.set(f);
    }

    /// Where snapshots take the progress of the volumes' first indexing.
    pub fn set_indexing_source(&self, f: IndexingSource) {
        let _ = self.indexing.set(f);
    }

    /// Shows the volume I/O threads' queue in status and metrics.
    pub fn set_io_pool(&self, io: Arc<crate::io_pool::IoPool>) {
        let _ = self.io.set(io);
    }

    pub fn set_export_counter(&self, f: ExportCounter) {
        let _ = self.exports.set(f);
    }

    /// Shows the engine's peers in status and metrics.
    pub fn set_peers(&self, peers: Arc<crate::dataplane::PeerRegistry>) {
        let _ = self.peers.set(peers);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Arc<SessionShared>>> {
        // A reader that panicked mid-snapshot left nothing half-written: the map is whole.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The control thread registered a new session with its worker.
    pub fn session_opened(&self, s: Arc<SessionShared>) {
        self.sessions().insert(s.id, s);
    }

    /// The worker let go of the session; its memory goes once no snapshot holds it.
    pub fn session_closed(&self, id: u32) {
        self.sessions().remove(&id);
    }

    pub fn snapshot(&self) -> Snapshot {
        // Clone the Arcs under the lock, read the counters without it.
        let sessions: Vec<Arc<SessionShared>> = self.sessions().values().cloned().collect();
        let mut per_worker = vec![0usize; self.workers.len()];
        let sessions: Vec<SessionStatus> = sessions
            .iter()
            .map(|s| {
                if let Some(n) = per_worker.get_mut(s.worker) {
                    *n += 1;
                }
                session_status(s)
            })
            .collect();
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let st = &w.stats;
                WorkerStatus {
                    id: w.id,
                    core: w.core,
                    sessions: per_worker.get(w.id).copied().unwrap_or(0),
                    counters: Counters {
                        submitted: st.submitted.get(),
                        completed: st.completed.get(),
                        errors: st.errors.get(),
                        cq_full: st.cq_full.get(),
                        errors_by_kind: kinds(&st.error_kinds),
                    },
                    sleeps: st.sleeps.get(),
                    wakeups: st.wakeups.get(),
                    spins_preempted: st.spins_preempted.get(),
                    sessions_opened: st.sessions_added.get(),
                    sessions_closed: st.sessions_removed.get(),
                }
            })
            .collect();
        Snapshot {
            engine: EngineInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                socket: self.socket.display().to_string(),
                control_version: CONTROL_VERSION,
                layout_version: LAYOUT_VERSION,
                max_sessions: self.max_sessions,
                sessions_open: sessions.len(),
                exports: self.exports.get().map_or(0, |e| e().0),
                export_queries_failed: self.exports.get().map_or(0, |e| e().1),
                ucx_registrations: engine::ucx::live_registrations(),
                regions_lost: crate::sigbus::regions_lost(),
                volume_io: self.io.get().map(|p| p.stats()).unwrap_or_default(),
            },
            workers,
            sessions,
            peers: self
                .peers
                .get()
                .map(|p| p.all().into_iter().map(|(h, e)| peer_status(h, &e)).collect())
                .unwrap_or_default(),
            volumes: self.volumes.get().map(|v| v()).unwrap_or_default(),
            volume_indexing: self.indexing.get().map(|i| i()).unwrap_or_default(),
        }
    }
}

fn peer_status(handle: u32, e: &crate::dataplane::PeerEntry) -> PeerStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &e.stats;
    PeerStatus {
        peer: handle,
        address: e.addr.to_string(),
        connected_workers: s.connected.load(Relaxed),
        connects: s.connects.load(Relaxed),
        connection_failures: s.connection_failures.load(Relaxed),
        requests: s.requests.load(Relaxed),
        failures: s.failures.load(Relaxed),
        timeouts: s.timeouts.load(Relaxed),
        replies_rendezvous: s.replies_rendezvous.load(Relaxed),
        latency: LatencyStatus {
            le_ns: crate::dataplane::LATENCY_BOUNDS_NS.to_vec(),
            counts: s.latency.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            overflow: s.latency.overflow.load(Relaxed),
            sum_ns: s.latency.sum_ns.load(Relaxed),
        },
    }
}

fn kinds(k: &ErrorKinds) -> BTreeMap<String, u64> {
    k.counts().map(|(n, v)| (n.to_string(), v)).collect()
}

fn session_status(s: &SessionShared) -> SessionStatus {
    let h = s.region.live();
    let state = h.state.load(std::sync::atomic::Ordering::Acquire);
    let state =
        SessionState::from_u32(state).map_or_else(|| format!("unknown-{state}"), |st| format!("{st:?}").to_lowercase());
    let layout = s.region.layout();
    let (sq_pending, cq_used) = s.region.occupancy();
    let st = &s.stats;
    SessionStatus {
        id: s.id,
        client_pid: s.client_pid,
        worker: s.worker,
        state,
        backing: s.region.backing().name().into(),
        sq_entries: layout.sq_entries,
        cq_entries: layout.cq_entries,
        buffer_bytes: layout.buf_size as u64,
        sq_pending,
        cq_used,
        counters: Counters {
            submitted: st.submitted.get(),
            completed: st.completed.get(),
            errors: st.errors.get(),
            cq_full: st.cq_full.get(),
            errors_by_kind: kinds(&st.error_kinds),
        },
    }
}

/// The engine's state as `engine status --json` prints it (and the metrics endpoint serves).
/// Fields may be added; none is removed or renamed without a note in the README.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub engine: EngineInfo,
    pub workers: Vec<WorkerStatus>,
    pub sessions: Vec<SessionStatus>,
    /// Peer engines clients registered (ConnectPeer), with their connection and request
    /// counters.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// SeaweedFS volumes this engine serves (`[seaweedfs] directories`).
    #[serde(default)]
    pub volumes: Vec<crate::seaweed::VolumeInfo>,
    /// The first indexing of those volumes (each is served as soon as it is indexed).
    #[serde(default)]
    pub volume_indexing: crate::seaweed::IndexingStatus,
}

/// Lists the volumes served, for snapshots.
/// (exports held, peers' export queries answered not-exported).
pub type ExportCounter = Box<dyn Fn() -> (usize, u64) + Send + Sync>;

pub type VolumeSource = Box<dyn Fn() -> Vec<crate::seaweed::VolumeInfo> + Send + Sync>;

pub type IndexingSource = Box<dyn Fn() -> crate::seaweed::IndexingStatus + Send + Sync>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    /// The handle SEND entries name.
    pub peer: u32,
    pub address: String,
    /// Engine workers holding a live connection to it now.
    pub connected_workers: u64,
    pub connects: u64,
    pub connection_failures: u64,
    /// Remote requests sent to it.
    pub requests: u64,
    /// Requests that completed with peer-failed.
    pub failures: u64,
    /// Requests that completed with timed-out.
    pub timeouts: u64,
    /// Answers whose data came by rendezvous (received straight into the session's buffer).
    #[serde(default)]
    pub replies_rendezvous: u64,
    /// Latency of successful requests: observations per bucket, `le_ns[i]` being bucket i's
    /// upper bound (not cumulative), plus those above the last bound.
    pub latency: LatencyStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LatencyStatus {
    pub le_ns: Vec<u64>,
    pub counts: Vec<u64>,
    pub overflow: u64,
    pub sum_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineInfo {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    pub socket: String,
    pub control_version: u16,
    pub layout_version: u32,
    pub max_sessions: u32,
    pub sessions_open: usize,
    /// Memory exports held: live ones and revoked ones waiting for peers' acknowledgements.
    #[serde(default)]
    pub exports: usize,
    /// Peers' export queries answered not-exported (wrong id or key, or ended) since start.
    #[serde(default)]
    pub export_queries_failed: u64,
    /// UCX memory registrations held (session regions used remotely, exports).
    #[serde(default)]
    pub ucx_registrations: usize,
    /// Sessions ended because their client took pages away from the region (sigbus.rs).
    #[serde(default)]
    pub regions_lost: u64,
    /// The volume I/O threads (`seaweedfs.io-threads`): reads a worker handed over.
    #[serde(default)]
    pub volume_io: crate::io_pool::IoPoolStats,
}

/// Counters kept both per worker and per session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Entries taken from the SQ.
    pub submitted: u64,
    /// Completions posted (successful or not).
    pub completed: u64,
    /// Completions with a negative result.
    pub errors: u64,
    /// Times entries waited because the CQ was full.
    pub cq_full: u64,
    /// `errors` by result code name (SPEC.md), plus "other".
    pub errors_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    pub id: usize,
    pub core: usize,
    /// Sessions it serves now.
    pub sessions: usize,
    #[serde(flatten)]
    pub counters: Counters,
    pub sleeps: u64,
    pub wakeups: u64,
    /// Idle spins cut short because another thread had the worker's core: it is shared.
    #[serde(default)]
    pub spins_preempted: u64,
    pub sessions_opened: u64,
    pub sessions_closed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionStatus {
    pub id: u32,
    pub client_pid: i32,
    pub worker: usize,
    /// ready, draining, closed or broken (the header's state).
    pub state: String,
    /// hugetlb-2MiB or normal-pages.
    pub backing: String,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub buffer_bytes: u64,
    /// Entries the client published that the worker has not taken yet.
    pub sq_pending: u32,
    /// Completions posted that the client has not reaped yet.
    pub cq_used: u32,
    #[serde(flatten)]
    pub counters: Counters,
}

/// How long a status client may take to read its whole reply before it is dropped.
const STATUS_SEND_DEADLINE: Duration = Duration::from_secs(5);

/// A `Status` reply on its way out. The control thread never waits on a client: packets go
/// out as fast as the client's socket takes them (MSG_DONTWAIT, the rest when it polls
/// writable), and a client that stops reading is dropped at the deadline.
pub struct StatusReply {
    fd: OwnedFd,
    packets: VecDeque<Message>,
    deadline: Instant,
}

impl StatusReply {
    /// The reply to a `Status` request received on `fd`.
    pub fn new(fd: OwnedFd, registry: &Registry) -> Self {
        let json = serde_json::to_string(&registry.snapshot()).expect("snapshot serializes");
        let mut packets = VecDeque::new();
        let mut rest = json.as_str();
        loop {
            let chunk = split_chunk(rest, MAX_STATUS_CHUNK);
            rest = &rest[chunk.len()..];
            packets.push_back(Message::StatusReply {
                more: !rest.is_empty(),
                json: chunk.into(),
            });
            if rest.is_empty() {
                break;
            }
        }
        Self {
            fd,
            packets,
            deadline: Instant::now() + STATUS_SEND_DEADLINE,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends what the socket takes now; true when finished (everything sent, the client
    /// left, or the deadline passed): the caller then drops it, closing the connection.
    pub fn progress(&mut self, now: Instant) -> bool {
        while let Some(msg) = self.packets.front() {
            match control_io::send_nonblocking(self.fd.as_fd(), msg, &[]) {
                Ok(()) => {
                    self.packets.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if now >= self.deadline {
                        tracing::info!(
                            left = self.packets.len(),
                            "status client did not read its reply in time; dropped"
                        );
                        return true;
                    }
                    return false;
                }
                Err(e) => {
                    tracing::info!(error = %e, "status client left before the reply was sent");
                    return true;
                }
            }
        }
        true
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn split_chunk(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why `engine status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot connect to the engine at {path}: {source} (is it running? pass --socket or --config to name its socket)")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket: {0}")]
    Recv(#[from] control_io::RecvError),
    #[error("the engine refused the status request: {0}")]
    Refused(String),
    #[error("unexpected reply {0}")]
    Unexpected(String),
    #[error("status reply is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Client side: asks the engine at `path` for its status.
pub fn request(path: &Path) -> Result<Snapshot, StatusError> {
    let connect_err = |e: nix::errno::Errno| StatusError::Connect {
        path: path.into(),
        source: e.into(),
    };
    let fd =
        socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(connect_err)?;
    let addr = UnixAddr::new(path).map_err(connect_err)?;
    socket::connect(fd.as_raw_fd(), &addr).map_err(connect_err)?;
    let timeout = nix::sys::time::TimeVal::new(10, 0);
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(|e| StatusError::Io(e.into()))?;
    control_io::send(fd.as_fd(), &Message::Status, &[])?;
    let mut json = String::new();
    loop {
        match control_io::recv_large(fd.as_fd())?.0 {
            Message::StatusReply { more, json: chunk } => {
                json.push_str(&chunk);
                if !more {
                    break;
                }
            }
            Message::Error { message, .. } => return Err(StatusError::Refused(message)),
            other => return Err(StatusError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(serde_json::from_str(&json)?)
}

/// The human-readable form `engine status` prints.
pub fn render_table(s: &Snapshot) -> String {
    let e = &s.engine;
    let mut out = format!(
        "engine pid {} version {} up {}s, socket {}, sessions {}/{}\n\nWORKERS\n",
        e.pid,
        e.version,
        e.uptime_ms / 1000,
        e.socket,
        e.sessions_open,
        e.max_sessions
    );
    let mut rows = vec![header(&[
        "ID",
        "CORE",
        "SESSIONS",
        "SUBMITTED",
        "COMPLETED",
        "ERRORS",
        "CQ_FULL",
        "SLEEPS",
        "WAKEUPS",
    ])];
    for w in &s.workers {
        let c = &w.counters;
        rows.push(row(&[
            &w.id,
            &w.core,
            &w.sessions,
            &c.submitted,
            &c.completed,
            &c.errors,
            &c.cq_full,
            &w.sleeps,
            &w.wakeups,
        ]));
    }
    out += &align(&rows);
    out += "\nSESSIONS\n";
    if s.sessions.is_empty() {
        out += "(none)\n";
    } else {
        let mut rows = vec![header(&[
            "ID",
            "PID",
            "WORKER",
            "STATE",
            "SQ",
            "CQ",
            "SQ_PENDING",
            "CQ_USED",
            "SUBMITTED",
            "COMPLETED",
            "ERRORS",
            "CQ_FULL",
            "BACKING",
        ])];
        for x in &s.sessions {
            let c = &x.counters;
            rows.push(row(&[
                &x.id,
                &x.client_pid,
                &x.worker,
                &x.state,
                &x.sq_entries,
                &x.cq_entries,
                &x.sq_pending,
                &x.cq_used,
                &c.submitted,
                &c.completed,
                &c.errors,
                &c.cq_full,
                &x.backing,
            ]));
        }
        out += &align(&rows);
    }
    let errors: Vec<String> = s
        .workers
        .iter()
        .flat_map(|w| {
            w.counters
                .errors_by_kind
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(move |(k, n)| format!("worker {} {k}={n}", w.id))
        })
        .collect();
    if !errors.is_empty() {
        out += &format!("\nERRORS BY KIND\n{}\n", errors.join("\n"));
    }
    out += "\nPEERS\n";
    if s.peers.is_empty() {
        out += "(none)\n";
    } else {
        let mut rows = vec![header(&[
            "PEER",
            "ADDRESS",
            "CONNECTED",
            "CONNECTS",
            "CONN_FAILURES",
            "REQUESTS",
            "FAILURES",
            "TIMEOUTS",
        ])];
        for p in &s.peers {
            rows.push(row(&[
                &p.peer,
                &p.address,
                &p.connected_workers,
                &p.connects,
                &p.connection_failures,
                &p.requests,
                &p.failures,
                &p.timeouts,
            ]));
        }
        out += &align(&rows);
    }
    out += "\nVOLUMES (SeaweedFS)\n";
    let ix = &s.volume_indexing;
    if !ix.done {
        out += &format!(
            "indexing: {} of {} volumes served, {} index entries read, {:.1} s so far\n",
            ix.volumes_indexed,
            ix.volumes_found,
            ix.entries,
            ix.millis as f64 / 1000.0
        );
    }
    if s.volumes.is_empty() {
        out += "(none: seaweedfs.directories is empty or holds no volume)\n";
    } else {
        let mut rows = vec![header(&[
            "VOLUME",
            "COLLECTION",
            "VERSION",
            "NEEDLES",
            "DELETED",
            "DAT_BYTES",
            "IDX_ENTRY",
            "READS",
            "IO_READS",
            "REFUSED",
            "READ_BYTES",
            "DAT",
        ])];
        for v in &s.volumes {
            let dat = v.dat_path.display();
            rows.push(row(&[
                &v.id,
                &v.collection,
                &v.version,
                &v.needles_live,
                &v.needles_deleted,
                &v.dat_bytes,
                &v.idx_entry_size,
                &v.reads_served,
                &v.reads_served_io,
                &v.reads_refused,
                &v.bytes_served,
                &dat,
            ]));
        }
        out += &align(&rows);
    }
    out
}

fn header(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn row(cells: &[&dyn std::fmt::Display]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let counters = Counters {
            submitted: 10,
            completed: 10,
            errors: 1,
            cq_full: 0,
            errors_by_kind: [("out-of-bounds".to_string(), 1)].into_iter().collect(),
        };
        Snapshot {
            engine: EngineInfo {
                pid: 42,
                version: "0.1.0".into(),
                uptime_ms: 5000,
                socket: "/run/x.sock".into(),
                control_version: 1,
                layout_version: 1,
                max_sessions: 8,
                sessions_open: 1,
                exports: 0,
                export_queries_failed: 0,
                ucx_registrations: 0,
                regions_lost: 0,
                volume_io: Default::default(),
            },
            workers: vec![WorkerStatus {
                id: 0,
                core: 3,
                sessions: 1,
                counters: counters.clone(),
                sleeps: 2,
                wakeups: 2,
                spins_preempted: 0,
                sessions_opened: 1,
                sessions_closed: 0,
            }],
            sessions: vec![SessionStatus {
                id: 7,
                client_pid: 1234,
                worker: 0,
                state: "ready".into(),
                backing: "normal-pages".into(),
                sq_entries: 256,
                cq_entries: 512,
                buffer_bytes: 4096,
                sq_pending: 0,
                cq_used: 3,
                counters,
            }],
            peers: vec![],
            volumes: vec![],
            volume_indexing: Default::default(),
        }
    }

    #[test]
    fn snapshot_json_round_trips_with_flat_counters() {
        let s = sample();
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["workers"][0]["submitted"], 10);
        assert_eq!(j["sessions"][0]["errors_by_kind"]["out-of-bounds"], 1);
        assert_eq!(serde_json::from_value::<Snapshot>(j).unwrap(), s);
    }

    #[test]
    fn table_lists_workers_and_sessions() {
        let t = render_table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("engine pid 42 version 0.1.0 up 5s"), "{t}");
        assert!(t.contains("ID  CORE  SESSIONS  SUBMITTED"), "{t}");
        assert!(
            lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "7",
                    "1234",
                    "0",
                    "ready",
                    "256",
                    "512",
                    "0",
                    "3",
                    "10",
                    "10",
                    "1",
                    "0",
                    "normal-pages"
                ]),
            "{t}"
        );
        assert!(t.contains("worker 0 out-of-bounds=1"), "{t}");
    }

    #[test]
    fn chunks_split_on_char_boundaries() {
        let s = "aé".repeat(10);
        let c = split_chunk(&s, 4);
        assert_eq!(c, "aéa");
        assert_eq!(split_chunk("abc", 10), "abc");
    }
}
