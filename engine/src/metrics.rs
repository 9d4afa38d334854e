//! Prometheus endpoint: `GET /metrics` answered with the text exposition format (version 0.0.4).
//!
//! * Encoding: `prometheus-client`, the Prometheus project's own Rust client (its
//!   `prometheus_text` encoder writes version 0.0.4, escaping included). The engine keeps its
//!   own counters (single-writer counters the workers bump anyway, the peers' atomics, the
//!   registry of sessions); [`EngineCollector`], a prometheus-client `Collector`, reads them
//!   through a [`Snapshot`] only when a scrape asks. Serving metrics adds nothing to the hot path.
//! * HTTP: `tiny_http`. Why this one: it is small (about 3,700 lines, four small dependencies),
//!   synchronous, and the long-standing blocking HTTP/1.1 server of the Rust ecosystem (rouille
//!   is built on it); hyper or axum would bring an async runtime into an engine whose threads
//!   are its pinned workers, the control thread and a few helpers like this one. It reads each
//!   connection on a thread of its own and hands over complete requests only, so a client that
//!   stalls mid-request holds its own thread, never another scrape (the hand-written server it
//!   replaces read one connection at a time: every scrape waited out a stalled client's 5 s
//!   timeout). Each answer is written from a short-lived thread, so a client that does not read
//!   its answer holds only that thread. Its limits, handled or accepted here: its accept loop
//!   ends at the first accept error (handled: [`run`] listens again); it sets no socket
//!   timeouts, so a client that stalls for good keeps its connection and one thread until it
//!   goes away (accepted: the endpoint belongs on loopback or a management network, README).

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::seaweed::VolumeInfo;
use crate::status::{Counters, PeerStatus, Registry, SessionStatus, Snapshot, WorkerStatus};

/// Binds `listen` and serves it from new threads; returns the bound address (port 0 picks a
/// free port).
pub fn serve(listen: &str, registry: Arc<Registry>) -> std::io::Result<SocketAddr> {
    start(listen, Metrics::new(move || registry.snapshot()))
}

fn start(listen: &str, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let server = tiny_http::Server::from_listener(listener, None).map_err(std::io::Error::other)?;
    let metrics = Arc::new(metrics);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || run(server, addr, metrics))?;
    Ok(addr)
}

fn run(mut server: tiny_http::Server, addr: SocketAddr, metrics: Arc<Metrics>) {
    loop {
        match server.recv() {
            Ok(request) => {
                let metrics = metrics.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-answer".into())
                    .spawn(move || answer(request, &metrics));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "metrics request dropped: no thread to answer it");
                }
            }
            Err(e) => {
                // tiny_http's accept thread stops at its first accept error (EMFILE when the
                // engine is out of descriptors, for one) and reports it here: listen again on
                // the same address, as the old server kept accepting.
                tracing::warn!(error = %e, "metrics endpoint stopped accepting; listening again");
                server = loop {
                    std::thread::sleep(Duration::from_millis(100));
                    match TcpListener::bind(addr).map(|l| tiny_http::Server::from_listener(l, None)) {
                        Ok(Ok(s)) => break s,
                        Ok(Err(e)) => tracing::debug!(error = %e, "metrics endpoint: listening again failed"),
                        Err(e) => tracing::debug!(error = %e, "metrics endpoint: listening again failed"),
                    }
                };
            }
        }
    }
}

/// Answers one request: `GET` (or `HEAD`) `/metrics`, 405 for other methods there, 404
/// elsewhere.
fn answer(request: tiny_http::Request, metrics: &Metrics) {
    let path = request.url().split('?').next().unwrap_or("");
    let (status, content_type, body) = match (request.method(), path) {
        (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
            (200, prometheus_text::CONTENT_TYPE, metrics.render())
        }
        (_, "/metrics") => (405, "text/plain", "GET only\n".to_string()),
        _ => (404, "text/plain", "metrics are at /metrics\n".to_string()),
    };
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
    let response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
        // Always a Content-Length, never chunked (tiny_http chunks bodies over 32 KiB).
        .with_chunked_threshold(usize::MAX);
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "metrics answer failed");
    }
}

/// The metric families: a prometheus-client registry holding one [`EngineCollector`].
pub struct Metrics(prometheus_client::registry::Registry);

impl Metrics {
    pub fn new(snapshot: impl Fn() -> Snapshot + Send + Sync + 'static) -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(EngineCollector(Box::new(snapshot))));
        Self(registry)
    }

    /// The text exposition of the engine's state now.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut out, &self.0).expect("writing to a String does not fail");
        out
    }
}

/// Encodes a [`Snapshot`] of the engine, taken when a scrape asks. Names: `seaweed_ring_*`;
/// counters end in `_total`; labels `worker`, `session`, `kind`, `peer`, `volume`, ...
struct EngineCollector(Box<dyn Fn() -> Snapshot + Send + Sync>);

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = (self.0)();
        encode_engine(&mut enc, &s)?;
        encode_workers(&mut enc, &s.workers)?;
        encode_sessions(&mut enc, &s.sessions)?;
        encode_peers(&mut enc, &s.peers)?;
        encode_volumes(&mut enc, &s.volumes)
    }
}

/// One family: its descriptor, then a sample per label set. `name` is the name samples carry
/// (a counter's ends in `_total`, which prometheus-client appends itself).
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let base = match kind {
        MetricType::Counter => name.strip_suffix("_total").expect("counter names end in _total"),
        _ => name,
    };
    let mut m = enc.encode_descriptor(base, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge<N>(v: N) -> ConstGauge<N> {
    ConstGauge::new(v)
}

const NO_LABELS: [(&str, &str); 0] = [];

fn encode_engine(enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let e = &s.engine;
    let pid = e.pid.to_string();
    let info = [("version", e.version.as_str()), ("pid", pid.as_str())];
    family(
        enc,
        "seaweed_ring_engine_info",
        "Engine build and process; always 1.",
        MetricType::Gauge,
        [(info, gauge(1u64))],
    )?;
    family(
        enc,
        "seaweed_ring_uptime_seconds",
        "Seconds since the engine started.",
        MetricType::Gauge,
        [(NO_LABELS, gauge(e.uptime_ms as f64 / 1000.0))],
    )?;
    let mut gauge_of = |name, help, v: u64| family(enc, name, help, MetricType::Gauge, [(NO_LABELS, gauge(v))]);
    gauge_of(
        "seaweed_ring_sessions_open",
        "Sessions open now.",
        e.sessions_open as u64,
    )?;
    gauge_of(
        "seaweed_ring_exports",
        "Memory exports held (live, or revoked and waiting for peers to acknowledge).",
        e.exports as u64,
    )?;
    family(
        enc,
        "seaweed_ring_export_queries_failed_total",
        "Peers' export queries this engine answered not-exported (wrong id or key, or ended).",
        MetricType::Counter,
        [(NO_LABELS, counter(e.export_queries_failed))],
    )?;
    family(
        enc,
        "seaweed_ring_ucx_registrations",
        "UCX memory registrations held (session regions used remotely, exports).",
        MetricType::Gauge,
        [(NO_LABELS, gauge(e.ucx_registrations as u64))],
    )?;
    family(
        enc,
        "seaweed_ring_volumes_indexing",
        "Volumes found at start still waiting to be indexed (each is served once indexed).",
        MetricType::Gauge,
        [(NO_LABELS, gauge(indexing_left(&s.volume_indexing)))],
    )?;
    family(
        enc,
        "seaweed_ring_volume_io_queued",
        "Needle reads waiting for a volume I/O thread (seaweedfs.io-threads).",
        MetricType::Gauge,
        [(NO_LABELS, gauge(e.volume_io.queued as u64))],
    )?;
    family(
        enc,
        "seaweed_ring_volume_io_refused_total",
        "Needle reads refused (throttled) because the volume I/O queue was full.",
        MetricType::Counter,
        [(NO_LABELS, counter(e.volume_io.refused))],
    )?;
    family(
        enc,
        "seaweed_ring_regions_lost_total",
        "Sessions ended because their client removed pages from its region memfd (hole punched).",
        MetricType::Counter,
        [(NO_LABELS, counter(e.regions_lost))],
    )?;
    family(
        enc,
        "seaweed_ring_sessions_max",
        "control.max-sessions.",
        MetricType::Gauge,
        [(NO_LABELS, gauge(e.max_sessions as u64))],
    )
}

/// The counters kept per worker and per session: (worker family, session family, help, getter).
type CounterField = (&'static str, &'static str, &'static str, fn(&Counters) -> u64);
const COUNTERS: [CounterField; 4] = [
    (
        "seaweed_ring_worker_submitted_total",
        "seaweed_ring_session_submitted_total",
        "Entries taken from the submission queue.",
        |c| c.submitted,
    ),
    (
        "seaweed_ring_worker_completed_total",
        "seaweed_ring_session_completed_total",
        "Completions posted, successful or not.",
        |c| c.completed,
    ),
    (
        "seaweed_ring_worker_errors_total",
        "seaweed_ring_session_errors_total",
        "Completions with a negative result.",
        |c| c.errors,
    ),
    (
        "seaweed_ring_worker_cq_full_total",
        "seaweed_ring_session_cq_full_total",
        "Times entries had to wait because the completion queue was full.",
        |c| c.cq_full,
    ),
];

fn encode_workers(enc: &mut DescriptorEncoder, workers: &[WorkerStatus]) -> fmt::Result {
    let ids: Vec<String> = workers.iter().map(|w| w.id.to_string()).collect();
    let cores: Vec<String> = workers.iter().map(|w| w.core.to_string()).collect();
    let per_worker = || workers.iter().zip(&ids);
    family(
        enc,
        "seaweed_ring_worker_info",
        "Worker threads and the cores they are pinned to; always 1.",
        MetricType::Gauge,
        ids.iter()
            .zip(&cores)
            .map(|(id, core)| ([("worker", id.as_str()), ("core", core.as_str())], gauge(1u64))),
    )?;
    family(
        enc,
        "seaweed_ring_worker_sessions",
        "Sessions the worker serves now.",
        MetricType::Gauge,
        per_worker().map(|(w, id)| ([("worker", id.as_str())], gauge(w.sessions as u64))),
    )?;
    for (name, _, help, get) in COUNTERS {
        family(
            enc,
            name,
            help,
            MetricType::Counter,
            per_worker().map(|(w, id)| ([("worker", id.as_str())], counter(get(&w.counters)))),
        )?;
    }
    type WorkerField = (&'static str, &'static str, fn(&WorkerStatus) -> u64);
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
            "Idle spins cut short because another thread had the worker's core for a while (the core is shared).",
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
        family(
            enc,
            name,
            help,
            MetricType::Counter,
            per_worker().map(|(w, id)| ([("worker", id.as_str())], counter(get(w)))),
        )?;
    }
    family(
        enc,
        "seaweed_ring_worker_errors_by_kind_total",
        "Error completions by result code (SPEC.md names; other: unnamed codes).",
        MetricType::Counter,
        per_worker().flat_map(|(w, id)| {
            w.counters
                .errors_by_kind
                .iter()
                .map(move |(kind, &n)| ([("worker", id.as_str()), ("kind", kind.as_str())], counter(n)))
        }),
    )
}

fn encode_sessions(enc: &mut DescriptorEncoder, sessions: &[SessionStatus]) -> fmt::Result {
    let ids: Vec<(String, String, String)> = sessions
        .iter()
        .map(|x| (x.id.to_string(), x.worker.to_string(), x.client_pid.to_string()))
        .collect();
    let per_session = || sessions.iter().zip(&ids);
    family(
        enc,
        "seaweed_ring_session_info",
        "Open sessions: client process, state and memory backing; always 1.",
        MetricType::Gauge,
        per_session().map(|(x, (sid, wid, pid))| {
            (
                [
                    ("session", sid.as_str()),
                    ("worker", wid.as_str()),
                    ("client_pid", pid.as_str()),
                    ("state", x.state.as_str()),
                    ("backing", x.backing.as_str()),
                ],
                gauge(1u64),
            )
        }),
    )?;
    type SessionField = (&'static str, &'static str, fn(&SessionStatus) -> u32);
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
    fn labels<'a>(sid: &'a str, wid: &'a str) -> [(&'static str, &'a str); 2] {
        [("session", sid), ("worker", wid)]
    }
    for (name, help, get) in gauges {
        family(
            enc,
            name,
            help,
            MetricType::Gauge,
            per_session().map(|(x, (sid, wid, _))| (labels(sid, wid), gauge(get(x)))),
        )?;
    }
    for (_, name, help, get) in COUNTERS {
        family(
            enc,
            name,
            help,
            MetricType::Counter,
            per_session().map(|(x, (sid, wid, _))| (labels(sid, wid), counter(get(&x.counters)))),
        )?;
    }
    family(
        enc,
        "seaweed_ring_session_errors_by_kind_total",
        "Error completions of the session by result code (kinds seen so far).",
        MetricType::Counter,
        // Only kinds that occurred: a session's series stay few.
        per_session().flat_map(|(x, (sid, wid, _))| {
            x.counters
                .errors_by_kind
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(move |(kind, &n)| {
                    (
                        [
                            ("session", sid.as_str()),
                            ("worker", wid.as_str()),
                            ("kind", kind.as_str()),
                        ],
                        counter(n),
                    )
                })
        }),
    )
}

fn encode_peers(enc: &mut DescriptorEncoder, peers: &[PeerStatus]) -> fmt::Result {
    let handles: Vec<String> = peers.iter().map(|p| p.peer.to_string()).collect();
    let per_peer = || {
        peers
            .iter()
            .zip(&handles)
            .map(|(p, h)| (p, [("peer", h.as_str()), ("address", p.address.as_str())]))
    };
    type PeerField = (&'static str, MetricType, &'static str, fn(&PeerStatus) -> u64);
    let fields: [PeerField; 7] = [
        (
            "seaweed_ring_peer_connected_workers",
            MetricType::Gauge,
            "Engine workers with a live UCX connection to the peer.",
            |p| p.connected_workers,
        ),
        (
            "seaweed_ring_peer_connects_total",
            MetricType::Counter,
            "UCX connections made to the peer.",
            |p| p.connects,
        ),
        (
            "seaweed_ring_peer_connection_failures_total",
            MetricType::Counter,
            "UCX connections to the peer that failed (unreachable, reset, died).",
            |p| p.connection_failures,
        ),
        (
            "seaweed_ring_peer_requests_total",
            MetricType::Counter,
            "Remote requests sent to the peer.",
            |p| p.requests,
        ),
        (
            "seaweed_ring_peer_replies_rendezvous_total",
            MetricType::Counter,
            "Answers from the peer whose data came by rendezvous, straight into the session's buffer.",
            |p| p.replies_rendezvous,
        ),
        (
            "seaweed_ring_peer_failures_total",
            MetricType::Counter,
            "Remote requests to the peer that completed with peer-failed.",
            |p| p.failures,
        ),
        (
            "seaweed_ring_peer_timeouts_total",
            MetricType::Counter,
            "Remote requests to the peer that completed with timed-out.",
            |p| p.timeouts,
        ),
    ];
    for (name, kind, help, get) in fields {
        match kind {
            MetricType::Counter => family(enc, name, help, kind, per_peer().map(|(p, l)| (l, counter(get(p))))),
            _ => family(enc, name, help, kind, per_peer().map(|(p, l)| (l, gauge(get(p))))),
        }?;
    }
    // The data plane's latency histogram, read through its stable interface (bucket bounds,
    // per-bucket counts, overflow, sum) as the snapshot carries it.
    let mut m = enc.encode_descriptor(
        "seaweed_ring_peer_request_duration_seconds",
        "Latency of successful remote requests, from taking the entry to posting its completion.",
        None,
        MetricType::Histogram,
    )?;
    for (p, labels) in per_peer() {
        let l = &p.latency;
        let buckets: Vec<(f64, u64)> = l
            .le_ns
            .iter()
            .map(|&le| le as f64 / 1e9)
            .zip(l.counts.iter().copied())
            .collect();
        let count = l.counts.iter().sum::<u64>() + l.overflow;
        m.encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(l.sum_ns as f64 / 1e9, count, &buckets, None)?;
    }
    Ok(())
}

fn indexing_left(ix: &crate::seaweed::IndexingStatus) -> u64 {
    match ix.done {
        true => 0,
        false => ix.volumes_found.saturating_sub(ix.volumes_indexed),
    }
}

fn encode_volumes(enc: &mut DescriptorEncoder, volumes: &[VolumeInfo]) -> fmt::Result {
    let ids: Vec<String> = volumes.iter().map(|v| v.id.to_string()).collect();
    let per_volume = || {
        volumes
            .iter()
            .zip(&ids)
            .map(|(v, id)| (v, [("volume", id.as_str()), ("collection", v.collection.as_str())]))
    };
    type VolumeField = (&'static str, MetricType, &'static str, fn(&VolumeInfo) -> u64);
    let fields: [VolumeField; 9] = [
        (
            "seaweed_ring_volume_needles",
            MetricType::Gauge,
            "Needles of the SeaweedFS volume the engine can serve (live in its index).",
            |v| v.needles_live,
        ),
        (
            "seaweed_ring_volume_deleted_needles",
            MetricType::Gauge,
            "Needles of the SeaweedFS volume whose latest index entry deletes them.",
            |v| v.needles_deleted,
        ),
        (
            "seaweed_ring_volume_idx_entries",
            MetricType::Gauge,
            "Index entries of the SeaweedFS volume read so far (grows as the volume server writes).",
            |v| v.idx_entries,
        ),
        (
            "seaweed_ring_volume_needle_map_bytes",
            MetricType::Gauge,
            "Memory the engine's needle map of the volume holds (about 12 bytes per needle).",
            |v| v.needle_map_bytes,
        ),
        (
            "seaweed_ring_volume_dat_bytes",
            MetricType::Gauge,
            "Size of the SeaweedFS volume's .dat file.",
            |v| v.dat_bytes,
        ),
        (
            "seaweed_ring_volume_reads_total",
            MetricType::Counter,
            "Needle reads the volume answered with data (restarts when compaction reopens it).",
            |v| v.reads_served,
        ),
        (
            "seaweed_ring_volume_reads_io_total",
            MetricType::Counter,
            "Of those, reads a volume I/O thread served (pages not in memory, a large needle's first CRC check).",
            |v| v.reads_served_io,
        ),
        (
            "seaweed_ring_volume_read_bytes_total",
            MetricType::Counter,
            "Data bytes of the needle reads the volume answered.",
            |v| v.bytes_served,
        ),
        (
            "seaweed_ring_volume_reads_refused_total",
            MetricType::Counter,
            "Needle reads of the volume refused (no such needle, deleted, cookie mismatch, corrupt, range).",
            |v| v.reads_refused,
        ),
    ];
    for (name, kind, help, get) in fields {
        match kind {
            MetricType::Counter => family(enc, name, help, kind, per_volume().map(|(v, l)| (l, counter(get(v))))),
            _ => family(enc, name, help, kind, per_volume().map(|(v, l)| (l, gauge(get(v))))),
        }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
