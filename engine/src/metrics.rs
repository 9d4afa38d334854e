//! Prometheus endpoint: a small HTTP/1.1 server on its own thread that answers `GET /metrics`
//! with the text exposition format (version 0.0.4), rendered from a [`Snapshot`] of the
//! [`Registry`]. Every counter it reports is a single-writer counter the workers bump anyway;
//! serving metrics adds nothing to the hot path.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::status::{Counters, Registry, Snapshot};

/// Binds `listen` and serves it from a new thread; returns the bound address (port 0 picks
/// a free port).
pub fn serve(listen: &str, registry: Arc<Registry>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if let Err(e) = handle(s, &registry) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })?;
    Ok(addr)
}

/// One request per connection; a client that stalls is dropped after the timeout.
fn handle(mut s: TcpStream, registry: &Registry) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > 16 * 1024 {
            return respond(&mut s, "431 Request Header Fields Too Large", "text/plain", "");
        }
    }
    let line = req.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") | ("HEAD", "/metrics") => {
            let body = render(&registry.snapshot());
            let body = if method == "HEAD" { "" } else { body.as_str() };
            respond(&mut s, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        (_, "/metrics") => respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n"),
        _ => respond(&mut s, "404 Not Found", "text/plain", "metrics are at /metrics\n"),
    }
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

/// One metric family being written: HELP and TYPE once, then its samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The counters kept per worker and per session, as (metric suffix, help, getter).
type CounterField = (&'static str, &'static str, fn(&Counters) -> u64);
const COUNTERS: [CounterField; 4] = [
    ("submitted_total", "Entries taken from the submission queue.", |c| {
        c.submitted
    }),
    ("completed_total", "Completions posted, successful or not.", |c| {
        c.completed
    }),
    ("errors_total", "Completions with a negative result.", |c| c.errors),
    (
        "cq_full_total",
        "Times entries had to wait because the completion queue was full.",
        |c| c.cq_full,
    ),
];

/// The Prometheus text format of a snapshot. Names: `seaweed_ring_*`; counters end in
/// `_total`; labels `worker`, `session`, `kind`.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(4096 + 2048 * s.sessions.len()));
    let e = &s.engine;
    o.family(
        "seaweed_ring_engine_info",
        "gauge",
        "Engine build and process; always 1.",
    );
    let pid = e.pid.to_string();
    o.sample("seaweed_ring_engine_info", &[("version", &e.version), ("pid", &pid)], 1);
    o.family(
        "seaweed_ring_uptime_seconds",
        "gauge",
        "Seconds since the engine started.",
    );
    o.sample("seaweed_ring_uptime_seconds", &[], e.uptime_ms as f64 / 1000.0);
    o.family("seaweed_ring_sessions_open", "gauge", "Sessions open now.");
    o.sample("seaweed_ring_sessions_open", &[], e.sessions_open);
    o.family(
        "seaweed_ring_exports",
        "gauge",
        "Memory exports held (live, or revoked and waiting for peers to acknowledge).",
    );
    o.sample("seaweed_ring_exports", &[], e.exports);
    o.family(
        "seaweed_ring_export_queries_failed_total",
        "counter",
        "Peers' export queries this engine answered not-exported (wrong id or key, or ended).",
    );
    o.sample("seaweed_ring_export_queries_failed_total", &[], e.export_queries_failed);
    o.family(
        "seaweed_ring_ucx_registrations",
        "gauge",
        "UCX memory registrations held (session regions used remotely, exports).",
    );
    o.sample("seaweed_ring_ucx_registrations", &[], e.ucx_registrations);
    o.family(
        "seaweed_ring_regions_lost_total",
        "counter",
        "Sessions ended because their client removed pages from its region memfd (hole punched).",
    );
    o.sample("seaweed_ring_regions_lost_total", &[], e.regions_lost);
    o.family("seaweed_ring_sessions_max", "gauge", "control.max-sessions.");
    o.sample("seaweed_ring_sessions_max", &[], e.max_sessions);

    // Workers.
    let wid: Vec<String> = s.workers.iter().map(|w| w.id.to_string()).collect();
    o.family(
        "seaweed_ring_worker_info",
        "gauge",
        "Worker threads and the cores they are pinned to; always 1.",
    );
    for (w, id) in s.workers.iter().zip(&wid) {
        let core = w.core.to_string();
        o.sample("seaweed_ring_worker_info", &[("worker", id), ("core", &core)], 1);
    }
    o.family(
        "seaweed_ring_worker_sessions",
        "gauge",
        "Sessions the worker serves now.",
    );
    for (w, id) in s.workers.iter().zip(&wid) {
        o.sample("seaweed_ring_worker_sessions", &[("worker", id)], w.sessions);
    }
    for (suffix, help, get) in COUNTERS {
        let name = format!("seaweed_ring_worker_{suffix}");
        o.family(&name, "counter", help);
        for (w, id) in s.workers.iter().zip(&wid) {
            o.sample(&name, &[("worker", id)], get(&w.counters));
        }
    }
    type WorkerField = (&'static str, &'static str, fn(&crate::status::WorkerStatus) -> u64);
    let worker_only: [WorkerField; 5] = [
        (
            "seaweed_ring_worker_sleeps_total",
            "Times the worker went to sleep (idle after its spin time).",
            |w| w.sleeps,
        ),
        (
            "seaweed_ring_worker_wakeups_total",
            "Times the worker was woken from sleep.",
            |w| w.wakeups,
        ),
        (
            "seaweed_ring_worker_spins_preempted_total",
            "Idle spins cut short because the worker was preempted (its core is shared with other threads).",
            |w| w.spins_preempted,
        ),
        (
            "seaweed_ring_worker_sessions_opened_total",
            "Sessions the worker started serving.",
            |w| w.sessions_opened,
        ),
        (
            "seaweed_ring_worker_sessions_closed_total",
            "Sessions the worker stopped serving.",
            |w| w.sessions_closed,
        ),
    ];
    for (name, help, get) in worker_only {
        o.family(name, "counter", help);
        for (w, id) in s.workers.iter().zip(&wid) {
            o.sample(name, &[("worker", id)], get(w));
        }
    }
    let name = "seaweed_ring_worker_errors_by_kind_total";
    o.family(
        name,
        "counter",
        "Error completions by result code (SPEC.md names; other: unnamed codes).",
    );
    for (w, id) in s.workers.iter().zip(&wid) {
        for (kind, n) in &w.counters.errors_by_kind {
            o.sample(name, &[("worker", id), ("kind", kind)], n);
        }
    }

    // Sessions.
    let ids: Vec<(String, String)> = s
        .sessions
        .iter()
        .map(|x| (x.id.to_string(), x.worker.to_string()))
        .collect();
    o.family(
        "seaweed_ring_session_info",
        "gauge",
        "Open sessions: client process, state and memory backing; always 1.",
    );
    for (x, (sid, wid)) in s.sessions.iter().zip(&ids) {
        let pid = x.client_pid.to_string();
        o.sample(
            "seaweed_ring_session_info",
            &[
                ("session", sid),
                ("worker", wid),
                ("client_pid", &pid),
                ("state", &x.state),
                ("backing", &x.backing),
            ],
            1,
        );
    }
    type SessionField = (&'static str, &'static str, fn(&crate::status::SessionStatus) -> u32);
    let gauges: [SessionField; 4] = [
        (
            "seaweed_ring_session_sq_pending",
            "Entries published in the submission queue and not yet taken.",
            |x| x.sq_pending,
        ),
        (
            "seaweed_ring_session_cq_used",
            "Completions posted and not yet reaped by the client.",
            |x| x.cq_used,
        ),
        (
            "seaweed_ring_session_sq_capacity",
            "Submission queue size in entries.",
            |x| x.sq_entries,
        ),
        (
            "seaweed_ring_session_cq_capacity",
            "Completion queue size in entries.",
            |x| x.cq_entries,
        ),
    ];
    for (name, help, get) in gauges {
        o.family(name, "gauge", help);
        for (x, (sid, wid)) in s.sessions.iter().zip(&ids) {
            o.sample(name, &[("session", sid), ("worker", wid)], get(x));
        }
    }
    for (suffix, help, get) in COUNTERS {
        let name = format!("seaweed_ring_session_{suffix}");
        o.family(&name, "counter", help);
        for (x, (sid, wid)) in s.sessions.iter().zip(&ids) {
            o.sample(&name, &[("session", sid), ("worker", wid)], get(&x.counters));
        }
    }
    let name = "seaweed_ring_session_errors_by_kind_total";
    o.family(
        name,
        "counter",
        "Error completions of the session by result code (kinds seen so far).",
    );
    for (x, (sid, wid)) in s.sessions.iter().zip(&ids) {
        // Only kinds that occurred: a session's series stay few.
        for (kind, n) in x.counters.errors_by_kind.iter().filter(|(_, &n)| n > 0) {
            o.sample(name, &[("session", sid), ("worker", wid), ("kind", kind)], n);
        }
    }
    render_peers(&mut o, &s.peers);
    render_volumes(&mut o, &s.volumes);
    o.0
}

fn render_volumes(o: &mut Out, volumes: &[crate::seaweed::VolumeInfo]) {
    type VolumeField = (&'static str, &'static str, fn(&crate::seaweed::VolumeInfo) -> u64);
    let fields: [VolumeField; 4] = [
        (
            "seaweed_ring_volume_needles",
            "Needles of the SeaweedFS volume the engine can serve (live in its index).",
            |v| v.needles_live,
        ),
        (
            "seaweed_ring_volume_deleted_needles",
            "Needles of the SeaweedFS volume whose latest index entry deletes them.",
            |v| v.needles_deleted,
        ),
        (
            "seaweed_ring_volume_idx_entries",
            "Index entries of the SeaweedFS volume read so far (grows as the volume server writes).",
            |v| v.idx_entries,
        ),
        (
            "seaweed_ring_volume_dat_bytes",
            "Size of the SeaweedFS volume's .dat file.",
            |v| v.dat_bytes,
        ),
    ];
    let counters: [VolumeField; 3] = [
        (
            "seaweed_ring_volume_reads_total",
            "Needle reads the volume answered with data (restarts when compaction reopens it).",
            |v| v.reads_served,
        ),
        (
            "seaweed_ring_volume_read_bytes_total",
            "Data bytes of the needle reads the volume answered.",
            |v| v.bytes_served,
        ),
        (
            "seaweed_ring_volume_reads_refused_total",
            "Needle reads of the volume refused (no such needle, deleted, cookie mismatch, corrupt, range).",
            |v| v.reads_refused,
        ),
    ];
    let all = fields
        .iter()
        .map(|f| (f, "gauge"))
        .chain(counters.iter().map(|f| (f, "counter")));
    for (&(name, help, get), kind) in all {
        o.family(name, kind, help);
        for v in volumes {
            let id = v.id.to_string();
            o.sample(name, &[("volume", &id), ("collection", &v.collection)], get(v));
        }
    }
}

fn render_peers(o: &mut Out, peers: &[crate::status::PeerStatus]) {
    type PeerField = (
        &'static str,
        &'static str,
        &'static str,
        fn(&crate::status::PeerStatus) -> u64,
    );
    let fields: [PeerField; 6] = [
        (
            "seaweed_ring_peer_connected_workers",
            "gauge",
            "Engine workers with a live UCX connection to the peer.",
            |p| p.connected_workers,
        ),
        (
            "seaweed_ring_peer_connects_total",
            "counter",
            "UCX connections made to the peer.",
            |p| p.connects,
        ),
        (
            "seaweed_ring_peer_connection_failures_total",
            "counter",
            "UCX connections to the peer that failed (unreachable, reset, died).",
            |p| p.connection_failures,
        ),
        (
            "seaweed_ring_peer_requests_total",
            "counter",
            "Remote requests sent to the peer.",
            |p| p.requests,
        ),
        (
            "seaweed_ring_peer_failures_total",
            "counter",
            "Remote requests to the peer that completed with peer-failed.",
            |p| p.failures,
        ),
        (
            "seaweed_ring_peer_timeouts_total",
            "counter",
            "Remote requests to the peer that completed with timed-out.",
            |p| p.timeouts,
        ),
    ];
    for (name, kind, help, get) in fields {
        o.family(name, kind, help);
        for p in peers {
            let handle = p.peer.to_string();
            o.sample(name, &[("peer", &handle), ("address", &p.address)], get(p));
        }
    }
    let name = "seaweed_ring_peer_request_duration_seconds";
    o.family(
        name,
        "histogram",
        "Latency of successful remote requests, from taking the entry to posting its completion.",
    );
    for p in peers {
        let handle = p.peer.to_string();
        let l = &p.latency;
        let mut cumulative = 0u64;
        for (le, n) in l.le_ns.iter().zip(&l.counts) {
            cumulative += n;
            let le = format!("{}", *le as f64 / 1e9);
            o.sample(
                &format!("{name}_bucket"),
                &[("peer", &handle), ("address", &p.address), ("le", &le)],
                cumulative,
            );
        }
        let count = cumulative + l.overflow;
        o.sample(
            &format!("{name}_bucket"),
            &[("peer", &handle), ("address", &p.address), ("le", "+Inf")],
            count,
        );
        o.sample(
            &format!("{name}_sum"),
            &[("peer", &handle), ("address", &p.address)],
            l.sum_ns as f64 / 1e9,
        );
        o.sample(
            &format!("{name}_count"),
            &[("peer", &handle), ("address", &p.address)],
            count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{EngineInfo, SessionStatus, WorkerStatus};

    #[test]
    fn renders_families_once_with_labels() {
        let c = Counters {
            submitted: 5,
            completed: 5,
            errors: 2,
            cq_full: 1,
            errors_by_kind: [("unknown-opcode".to_string(), 2), ("other".to_string(), 0)]
                .into_iter()
                .collect(),
        };
        let s = Snapshot {
            engine: EngineInfo {
                pid: 9,
                version: "0.1.0".into(),
                uptime_ms: 1500,
                socket: "/s".into(),
                control_version: 1,
                layout_version: 1,
                max_sessions: 4,
                sessions_open: 1,
                exports: 0,
                export_queries_failed: 0,
                ucx_registrations: 0,
                regions_lost: 0,
            },
            workers: vec![WorkerStatus {
                id: 0,
                core: 1,
                sessions: 1,
                counters: c.clone(),
                sleeps: 3,
                wakeups: 2,
                spins_preempted: 0,
                sessions_opened: 1,
                sessions_closed: 0,
            }],
            sessions: vec![SessionStatus {
                id: 3,
                client_pid: 77,
                worker: 0,
                state: "ready".into(),
                backing: "normal-pages".into(),
                sq_entries: 256,
                cq_entries: 512,
                buffer_bytes: 4096,
                sq_pending: 0,
                cq_used: 4,
                counters: c,
            }],
            volumes: vec![],
            peers: vec![crate::status::PeerStatus {
                peer: 1,
                address: "127.0.0.1:13337".into(),
                connected_workers: 1,
                connects: 2,
                connection_failures: 1,
                requests: 9,
                failures: 1,
                timeouts: 0,
                latency: crate::status::LatencyStatus {
                    le_ns: vec![1_000, 10_000],
                    counts: vec![3, 4],
                    overflow: 1,
                    sum_ns: 2_000_000,
                },
            }],
        };
        let t = render(&s);
        for line in [
            "# TYPE seaweed_ring_worker_submitted_total counter",
            "seaweed_ring_worker_submitted_total{worker=\"0\"} 5",
            "seaweed_ring_worker_sleeps_total{worker=\"0\"} 3",
            "seaweed_ring_worker_info{worker=\"0\",core=\"1\"} 1",
            "seaweed_ring_worker_errors_by_kind_total{worker=\"0\",kind=\"unknown-opcode\"} 2",
            "seaweed_ring_session_cq_used{session=\"3\",worker=\"0\"} 4",
            "seaweed_ring_session_cq_full_total{session=\"3\",worker=\"0\"} 1",
            "seaweed_ring_sessions_open 1",
            "seaweed_ring_peer_requests_total{peer=\"1\",address=\"127.0.0.1:13337\"} 9",
            "seaweed_ring_peer_request_duration_seconds_bucket{peer=\"1\",address=\"127.0.0.1:13337\",le=\"0.00001\"} 7",
            "seaweed_ring_peer_request_duration_seconds_bucket{peer=\"1\",address=\"127.0.0.1:13337\",le=\"+Inf\"} 8",
            "seaweed_ring_peer_request_duration_seconds_count{peer=\"1\",address=\"127.0.0.1:13337\"} 8",
            "seaweed_ring_uptime_seconds 1.5",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // Each family is declared exactly once.
        let types: Vec<&str> = t.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let unique: std::collections::HashSet<_> = types.iter().collect();
        assert_eq!(types.len(), unique.len());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
