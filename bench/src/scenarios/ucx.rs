//! UCX: a request-response through the rings to the engine's own UCX listener
//! (`ucx.am_rtt.*`), and the raw UCX active-message ping-pong it is compared with
//! (`ucx.raw_am_rtt.*`), built on the engine's own safe wrapper (`engine::ucx`), with the
//! same context settings and the same message shapes as the engine's wire protocol
//! (ring-proto/SPEC.md §13): a REQUEST active message with a 16-byte header and 8 bytes of
//! data, sent with the reply flag, answered by a REPLY with a 16-byte header and the 8 bytes.
//!
//! And bandwidth: 1 MiB READs of another session's export through the rings and the engine's
//! own listener (`ucx.read_bw.*`, SPEC.md §14), next to raw UCX gets of 1 MiB between two
//! workers (`ucx.raw_read_bw.*`), both with [`READ_DEPTH`] operations in flight.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::ptr::NonNull;
use std::sync::Arc;

use engine::ucx::{AmData, Context, Endpoint, Listener, Registration, RemoteKey, Started, Worker, WorkerEvent};
use hdrhistogram::Histogram;
use ring_client::{Session, SessionOptions};
use ring_proto::entry::service;
use ring_proto::wire::{am, ReplyHeader, RequestHeader};
use ring_proto::{opcode, Cqe, ResultCode, SharedArea, SharedMemory, SharedRange, Sqe};
use serde_json::{Map, Value};

use super::ring::stall_context;
use super::{pipelined_loop, sample_loop, BlockRun, Ctx, Pipeline, Scenario, SpinGuard, Timing, Tls, STALL_LIMIT};
use crate::machine::pin_current_thread;
use crate::stats::new_histogram;
use crate::Result;

/// The message: 8 bytes, as the "small request-response".
const PAYLOAD: [u8; 8] = *b"ucx-ping";
/// Where the ring scenario puts the request and the response in the session's buffer area.
const REQ_OFFSET: usize = 0;
const RESP_OFFSET: usize = 4096;

/// `ucx.am_rtt.<tls>`: one SEND (service ECHO, 8 bytes) through the rings to the engine,
/// which sends it over UCX to its own listener, serves the echo and completes the SEND with
/// the response written into the session's buffer; the bench spins on `try_cqe`.
#[derive(Default)]
pub struct AmRtt {
    seq: u64,
}

fn send_sqe(peer: u32, user_data: u64) -> Sqe {
    Sqe {
        opcode: opcode::SEND,
        peer,
        aux: service::ECHO,
        user_data,
        buf_offset: REQ_OFFSET as u64,
        buf_len: PAYLOAD.len() as u32,
        args: [RESP_OFFSET as u64, PAYLOAD.len() as u64, 0, 0],
        ..Default::default()
    }
}

impl Scenario for AmRtt {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let timing = ctx.timing;
        let (s, peer) = ctx.ucx_session()?;
        s.buffer()
            .write(REQ_OFFSET, &PAYLOAD)
            .and_then(|()| s.buffer().write(RESP_OFFSET, &[0u8; PAYLOAD.len()]))
            .ok_or("the session's buffer area is too small for the request and its response")?;
        let seq = &mut self.seq;
        let run = sample_loop(timing, hist, || {
            *seq += 1;
            let want = *seq;
            s.submit(&send_sqe(peer, want))?;
            let mut guard = SpinGuard::new();
            let c = loop {
                if let Some(c) = s.try_cqe()? {
                    break c;
                }
                guard.turn(|| format!("waiting for the completion of SEND {want} ({})", stall_context(s)))?;
            };
            if c.user_data != want || c.result != PAYLOAD.len() as i32 {
                let why =
                    ResultCode::from_result(c.result).map_or_else(|| format!("result {}", c.result), |r| r.to_string());
                return Err(format!(
                    "unexpected SEND completion: user_data {} ({why}), expected user_data {want} with result {}",
                    c.user_data,
                    PAYLOAD.len()
                )
                .into());
            }
            Ok(())
        })?;
        let mut back = [0u8; PAYLOAD.len()];
        s.buffer().read(RESP_OFFSET, &mut back).ok_or("reading the response")?;
        if back != PAYLOAD {
            return Err(format!("the echo came back as {back:?}, expected {PAYLOAD:?}").into());
        }
        Ok(run)
    }
}

/// Sends in flight per direction: slots are reused round-robin, and a slot is reused only
/// once UCX reported its send done (the worker holds each send's header and data until then).
const SLOTS: usize = 4;

/// A raw UCX baseline: `ucx.raw_am_rtt.<tls>` ([`RawPair`]) or `ucx.raw_read_bw.<tls>`
/// ([`RawRead`]). Both use two UCX workers of one context (the engine's settings: AM, RMA,
/// wakeup, peer error handling, the same transports and devices), a client that connected to
/// the server's listener on 127.0.0.1, and one thread progressing both.
///
/// The thread lives as long as the scenario, pinned to the engine core (where the engine's
/// worker does the same UCX work in `ucx.am_rtt`/`ucx.read_bw`), and sleeps between blocks;
/// each block runs there while the measuring thread waits.
pub struct RawUcx {
    tls: Tls,
    kind: RawKind,
    thread: Option<RawThread>,
    details: Map<String, Value>,
}

/// Which raw baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// One sample: the client sends REQUEST (16-byte header, 8 bytes, reply flag), the
    /// server's handler takes it, the server answers REPLY on the endpoint it arrived on, the
    /// client's handler takes that.
    AmRtt,
    /// [`READ_DEPTH`] gets of [`READ_BYTES`] in flight from the server's registered buffer
    /// into the client's; one sample is one get, start to completion.
    ReadBw,
}

impl RawUcx {
    pub fn new(tls: Tls, kind: RawKind) -> Self {
        Self {
            tls,
            kind,
            thread: None,
            details: Map::new(),
        }
    }
}

/// What runs on the raw UCX thread.
trait RawBlocks {
    /// Facts for the result line (set-up, lanes...).
    fn facts(&self) -> Map<String, Value>;
    fn block(&mut self, timing: Timing, hist: &mut Histogram<u64>) -> Result<BlockRun>;
}

type BlockResult = Result<Option<(Histogram<u64>, BlockRun)>>;

struct RawThread {
    blocks: Option<mpsc::Sender<Timing>>,
    results: mpsc::Receiver<BlockResult>,
    handle: Option<JoinHandle<()>>,
}

impl RawThread {
    fn start(core: usize, tls: Tls, kind: RawKind) -> Result<(Self, Map<String, Value>)> {
        let (block_tx, block_rx) = mpsc::channel::<Timing>();
        let (result_tx, result_rx) = mpsc::channel::<BlockResult>();
        let (facts_tx, facts_rx) = mpsc::channel::<Map<String, Value>>();
        let handle = std::thread::Builder::new()
            .name(format!("bench-ucx-raw-{}", tls.name()))
            .spawn(move || {
                // UCX threads this creates (its async thread) inherit this CPU mask.
                let made = pin_current_thread(core).and_then(|()| -> Result<Box<dyn RawBlocks>> {
                    Ok(match kind {
                        RawKind::AmRtt => Box::new(RawPair::new(tls)?),
                        RawKind::ReadBw => Box::new(RawRead::new(tls)?),
                    })
                });
                let mut raw = match made {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = result_tx.send(Err(e));
                        return;
                    }
                };
                let _ = facts_tx.send(raw.facts());
                if result_tx.send(Ok(None)).is_err() {
                    return;
                }
                while let Ok(timing) = block_rx.recv() {
                    let mut h = new_histogram();
                    let r = raw.block(timing, &mut h);
                    if result_tx.send(r.map(|run| Some((h, run)))).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("spawning the raw UCX thread: {e}"))?;
        let mut t = RawThread {
            blocks: Some(block_tx),
            results: result_rx,
            handle: Some(handle),
        };
        t.wait(Duration::from_secs(30), "setting up the raw UCX workers")?;
        let facts = facts_rx
            .try_recv()
            .map_err(|_| "the raw UCX thread did not report its set-up")?;
        Ok((t, facts))
    }

    /// The thread's next report.
    fn wait(&mut self, timeout: Duration, what: &str) -> BlockResult {
        match self.results.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("{what}: no answer within {timeout:?}").into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("{what}: the raw UCX thread ended").into()),
        }
    }
}

impl Drop for RawThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it then closes its endpoints.
        drop(self.blocks.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Scenario for RawUcx {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.thread.is_none() {
            let (t, facts) = RawThread::start(ctx.engine_core, self.tls, self.kind)?;
            self.details.insert("transports".into(), self.tls.transports().into());
            self.details.insert("net_devices".into(), self.tls.net_devices().into());
            self.details.extend(facts);
            self.details.insert("thread_core".into(), ctx.engine_core.into());
            let (ma, mi, re) = engine::ucx::loaded_version();
            self.details
                .insert("ucx_version".into(), format!("{ma}.{mi}.{re}").into());
            self.thread = Some(t);
        }
        let timing = ctx.timing;
        let t = self.thread.as_mut().expect("started above");
        let sent = t.blocks.as_ref().expect("open").send(timing);
        let r = match sent {
            Ok(()) => t.wait(
                timing.warmup + timing.measure + STALL_LIMIT + Duration::from_secs(5),
                "raw UCX block",
            ),
            Err(_) => Err("the raw UCX thread ended".into()),
        };
        match r {
            Ok(Some((h, run))) => {
                hist.add(&h).map_err(|e| format!("merging histograms: {e:?}"))?;
                Ok(run)
            }
            Ok(None) => Err("the raw UCX thread answered out of turn".into()),
            Err(e) => {
                // A failed pair is not reused.
                self.thread = None;
                Err(e)
            }
        }
    }

    fn details(&self) -> Map<String, Value> {
        self.details.clone()
    }
}

/// The two workers and their endpoints. Headers and data are handed to the worker, which
/// keeps them until UCX is done with them.
struct RawPair {
    // Endpoints and the listener are closed in `Drop` before the workers go.
    client_ep: Option<Endpoint>,
    server_ep: Option<Endpoint>,
    listener: Option<Listener>,
    client: Worker,
    server: Worker,
    addr: SocketAddr,
    req_busy: [bool; SLOTS],
    reply_busy: [bool; SLOTS],
    seq: u64,
}

impl RawPair {
    fn new(tls: Tls) -> Result<Self> {
        let ctx = Context::new(Some(tls.transports()), Some(tls.net_devices()))
            .map_err(|e| format!("UCX context ({}): {e}", tls.transports()))?;
        let mut server = Worker::new(ctx.clone(), &[am::REQUEST]).map_err(|e| format!("UCX server worker: {e}"))?;
        let client = Worker::new(ctx, &[am::REPLY]).map_err(|e| format!("UCX client worker: {e}"))?;
        let listener = server
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| format!("UCX listen on 127.0.0.1: {e}"))?;
        let addr = listener.addr;
        let mut pair = RawPair {
            client_ep: None,
            server_ep: None,
            listener: Some(listener),
            client,
            server,
            addr,
            req_busy: [false; SLOTS],
            reply_busy: [false; SLOTS],
            seq: 0,
        };
        establish(
            &mut pair.client,
            &mut pair.server,
            addr,
            &mut pair.client_ep,
            &mut pair.server_ep,
        )?;
        Ok(pair)
    }
}

impl RawBlocks for RawPair {
    fn facts(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("listen_address".into(), self.addr.to_string().into());
        m
    }

    fn block(&mut self, timing: Timing, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        sample_loop(timing, hist, || self.round_trip())
    }
}

/// Connects `client` to `server`'s listener at `addr`, accepts on the server, and progresses
/// both until the wire-up is over. The endpoints go into the caller's slots as soon as they
/// exist, so that the caller closes them also when this fails half-way.
fn establish(
    client: &mut Worker,
    server: &mut Worker,
    addr: SocketAddr,
    client_ep: &mut Option<Endpoint>,
    server_ep: &mut Option<Endpoint>,
) -> Result<()> {
    *client_ep = Some(
        client
            .connect(addr)
            .map_err(|e| format!("UCX connect to {addr}: {e}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_ep.is_none() {
        let mut failed = None;
        let mut on_event = |ev: WorkerEvent<'_>| {
            if let WorkerEvent::EndpointFailed { error, .. } = ev {
                failed = Some(error);
            }
        };
        client.progress(&mut on_event);
        server.progress(&mut on_event);
        if let Some(e) = failed {
            return Err(format!("UCX connection to {addr} failed: {e}").into());
        }
        if let Some(req) = server.take_conn_requests().into_iter().next() {
            *server_ep = Some(server.accept(req).map_err(|e| format!("UCX accept: {e}"))?);
        }
        if Instant::now() >= deadline {
            return Err(format!("UCX: the connection to {addr} was not accepted within 10 s").into());
        }
        crate::interrupt::check()?;
        std::hint::spin_loop();
    }
    // Let the connection finish its wire-up before the first send: UCX 1.12.1 (the
    // version ucx1-sys builds; the binaries load the installed 1.22.0 by rpath, but an
    // LD_PRELOAD can still bring 1.12.1 in) crashes replaying an active message with a user header that was queued on a
    // client-server endpoint during wire-up (NULL am_zcopy of the wire-up lane, from
    // ucp_wireup_replay_pending_requests). Progress both workers until they have been
    // idle for a while.
    let settle_end = Instant::now() + Duration::from_millis(20);
    let mut idle_turns = 0u32;
    while idle_turns < 10_000 || Instant::now() < settle_end {
        let mut failed = None;
        let mut on_event = |ev: WorkerEvent<'_>| {
            if let WorkerEvent::EndpointFailed { error, .. } = ev {
                failed = Some(error);
            }
        };
        let busy = client.progress(&mut on_event) | server.progress(&mut on_event);
        if let Some(e) = failed {
            return Err(format!("UCX connection to {addr} failed during wire-up: {e}").into());
        }
        idle_turns = if busy { 0 } else { idle_turns + 1 };
        if Instant::now() >= deadline {
            return Err(format!("UCX: the connection to {addr} kept busy for 10 s during wire-up").into());
        }
    }
    Ok(())
}

impl RawPair {
    /// One request and its reply.
    fn round_trip(&mut self) -> Result<()> {
        let RawPair {
            client_ep,
            server_ep,
            client,
            server,
            req_busy,
            reply_busy,
            seq,
            ..
        } = self;
        let (client_ep, server_ep) = (
            client_ep.as_ref().expect("connected"),
            server_ep.as_ref().expect("accepted"),
        );
        *seq += 1;
        let id = *seq;
        let slot = (id % SLOTS as u64) as usize;
        let mut failed: Option<String> = None;
        let mut guard = SpinGuard::new();

        // Client: REQUEST.
        while req_busy[slot] {
            client.progress(&mut |ev| on_send_done(ev, req_busy, &mut failed));
            fail_if(&mut failed)?;
            guard.turn(|| format!("waiting for the send of request {} to complete", id - SLOTS as u64))?;
        }
        let header = RequestHeader {
            req_id: id,
            service: service::ECHO,
            resp_cap: PAYLOAD.len() as u32,
        };
        let st = client
            .am_send(
                client_ep,
                am::REQUEST,
                Box::new(header.encode()),
                PAYLOAD.to_vec(),
                true,
                slot as u64,
            )
            .map_err(|e| format!("UCX request send: {e}"))?;
        req_busy[slot] = st == Started::InProgress;

        // Server: take the REQUEST, answer REPLY on the endpoint it came on.
        let mut request: Option<(u64, [u8; 8], Option<usize>)> = None;
        loop {
            if req_busy.iter().any(|b| *b) {
                client.progress(&mut |ev| on_send_done(ev, req_busy, &mut failed));
            }
            server.progress(&mut |ev| match ev {
                WorkerEvent::Am(m) if m.id == am::REQUEST => match (RequestHeader::parse(m.header), m.data) {
                    (Some(h), AmData::Eager(d)) if d.len() == 8 => {
                        request = Some((h.req_id, d.try_into().expect("8 bytes"), m.reply_ep));
                    }
                    _ => failed = Some("the server got a malformed or non-eager request".into()),
                },
                other => on_send_done(other, reply_busy, &mut failed),
            });
            fail_if(&mut failed)?;
            if request.is_some() {
                break;
            }
            guard.turn(|| format!("waiting for request {id} at the server"))?;
        }
        let (rid, data, reply_ep) = request.expect("received");
        if rid != id || reply_ep != Some(server_ep.key()) {
            return Err(format!(
                "the server got request {rid} (reply endpoint {reply_ep:?}), expected {id} on endpoint {:?}",
                server_ep.key()
            )
            .into());
        }
        while reply_busy[slot] {
            server.progress(&mut |ev| on_send_done(ev, reply_busy, &mut failed));
            fail_if(&mut failed)?;
            guard.turn(|| format!("waiting for the send of reply {} to complete", id - SLOTS as u64))?;
        }
        let header = ReplyHeader { req_id: rid, status: 0 };
        let st = server
            .am_send(
                server_ep,
                am::REPLY,
                Box::new(header.encode()),
                data.to_vec(),
                false,
                slot as u64,
            )
            .map_err(|e| format!("UCX reply send: {e}"))?;
        reply_busy[slot] = st == Started::InProgress;

        // Client: take the REPLY.
        let mut reply: Option<(u64, [u8; 8])> = None;
        loop {
            if reply_busy.iter().any(|b| *b) {
                server.progress(&mut |ev| on_send_done(ev, reply_busy, &mut failed));
            }
            client.progress(&mut |ev| match ev {
                WorkerEvent::Am(m) if m.id == am::REPLY => match (ReplyHeader::parse(m.header), m.data) {
                    (Some(h), AmData::Eager(d)) if d.len() == 8 && h.status == 0 => {
                        reply = Some((h.req_id, d.try_into().expect("8 bytes")))
                    }
                    _ => failed = Some("the client got a malformed or non-eager reply".into()),
                },
                other => on_send_done(other, req_busy, &mut failed),
            });
            fail_if(&mut failed)?;
            if reply.is_some() {
                break;
            }
            guard.turn(|| format!("waiting for reply {id} at the client"))?;
        }
        let (rid, data) = reply.expect("received");
        if rid != id || data != PAYLOAD {
            return Err(format!("reply {rid} carried {data:?}; expected reply {id} with {PAYLOAD:?}").into());
        }
        Ok(())
    }
}

/// Send completions (token = slot) and endpoint failures; other events are unexpected.
fn on_send_done(ev: WorkerEvent<'_>, busy: &mut [bool; SLOTS], failed: &mut Option<String>) {
    match ev {
        WorkerEvent::SendDone { token, result } => {
            if let Some(b) = busy.get_mut(token as usize) {
                *b = false;
            }
            if let Err(e) = result {
                *failed = Some(format!("UCX send failed: {e}"));
            }
        }
        WorkerEvent::EndpointFailed { error, .. } => *failed = Some(format!("UCX endpoint failed: {error}")),
        WorkerEvent::Am(m) => *failed = Some(format!("unexpected active message id {}", m.id)),
        WorkerEvent::RecvDone { .. } => *failed = Some("unexpected rendezvous completion".into()),
    }
}

fn fail_if(failed: &mut Option<String>) -> Result<()> {
    match failed.take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

impl Drop for RawPair {
    fn drop(&mut self) {
        // Force-close (sends still in flight complete with errors during the close), then the
        // listener; the workers and the context go after, with the struct.
        if let Some(ep) = self.client_ep.take() {
            self.client.close(ep);
        }
        if let Some(ep) = self.server_ep.take() {
            self.server.close(ep);
        }
        if let Some(l) = self.listener.take() {
            l.destroy();
        }
    }
}

/// Bytes per READ (and per raw get).
pub const READ_BYTES: usize = 1 << 20;
/// READs (gets) in flight, each into a slot of its own in the destination buffer.
pub const READ_DEPTH: usize = 16;
/// The exported (registered) source: READs cycle over its 1 MiB pieces.
pub const EXPORT_BYTES: usize = 16 << 20;
const EXPORT_PIECES: u64 = (EXPORT_BYTES / READ_BYTES) as u64;
/// The sanity check before the first block: this piece of the export into this slot.
const PROBE_PIECE: u64 = 5;
const PROBE_SLOT: usize = 3;

/// Where READ number `seq` reads in the export: its pieces in turn.
fn remote_offset(seq: u64) -> u64 {
    (seq % EXPORT_PIECES) * READ_BYTES as u64
}

/// Where the READ of `slot` lands in the destination buffer.
fn slot_offset(slot: usize) -> usize {
    slot * READ_BYTES
}

/// `user_data` of a READ: the sequence number above, the slot in the low byte.
fn read_user_data(seq: u64, slot: usize) -> u64 {
    (seq << 8) | slot as u64
}

fn slot_of(user_data: u64) -> usize {
    (user_data & 0xff) as usize
}

/// The exported content: byte `i` of the export (a multiplicative hash, so that every piece
/// differs from every other and from any shifted copy).
fn pattern_at(i: usize) -> u8 {
    ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

fn fill_pattern(dst: &mut [u8], export_offset: usize) {
    for (k, b) in dst.iter_mut().enumerate() {
        *b = pattern_at(export_offset + k);
    }
}

/// Compares what a READ of the export at `export_offset` brought with the export's content.
fn check_pattern(got: &[u8], export_offset: usize, what: &str) -> Result<()> {
    match got
        .iter()
        .enumerate()
        .find(|(k, b)| **b != pattern_at(export_offset + k))
    {
        None => Ok(()),
        Some((k, b)) => Err(format!(
            "{what}: wrong bytes: byte {k} of {} is {b:#04x}, expected {:#04x} (export offset {})",
            got.len(),
            pattern_at(export_offset + k),
            export_offset + k
        )
        .into()),
    }
}

fn read_sqe(peer: u32, slot: usize, seq: u64, (export_id, key): (u64, u64), remote: u64) -> Sqe {
    Sqe {
        opcode: opcode::READ,
        peer,
        user_data: read_user_data(seq, slot),
        buf_offset: slot_offset(slot) as u64,
        buf_len: READ_BYTES as u32,
        args: [export_id, key, remote, 0],
        ..Default::default()
    }
}

fn describe_result(c: &Cqe) -> String {
    ResultCode::from_result(c.result).map_or_else(|| format!("result {}", c.result), |r| format!("{r} ({})", c.result))
}

/// `ucx.read_bw.<tls>`: one session of the group's UCX engine exports [`EXPORT_BYTES`]
/// (EXPORT, read-only); another session of the same engine registers the engine's own
/// listener as a peer and keeps [`READ_DEPTH`] READs of [`READ_BYTES`] in flight from the
/// export into distinct slots of its buffer, reaping completions with `try_cqe` and
/// resubmitting at once. One sample: one READ, submit to reaped completion. The engine moves
/// the bytes with UCX gets between the two sessions' shared buffers.
#[derive(Default)]
pub struct ReadBw {
    state: Option<ReadState>,
    details: Map<String, Value>,
}

struct ReadState {
    // The reader goes first (its READs are all complete between blocks), then the exporter.
    reader: Session,
    exporter: Session,
    peer: u32,
    export: (u64, u64),
    seq: u64,
}

fn bench_session(socket: &std::path::Path, buf: usize, role: &str) -> Result<Session> {
    Session::connect(
        socket,
        SessionOptions {
            sq_entries: 64,
            cq_entries: 128,
            buf_size: buf as u64,
            keepalive: false,
        },
    )
    .map_err(|e| format!("opening the {role} session ({buf} bytes of buffer): {e}").into())
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

impl ReadState {
    fn new(ctx: &Ctx) -> Result<Self> {
        let socket = ctx.ucx_socket.as_deref().ok_or("no UCX engine socket for this group")?;
        let addr = ctx
            .ucx_address
            .as_deref()
            .ok_or("no UCX listen address for this group")?;
        // One page more than the export: EXPORT writes its ticket (id, key) there.
        let mut exporter = bench_session(socket, EXPORT_BYTES + 4096, "exporting")?;
        let mut piece = vec![0u8; READ_BYTES];
        for k in 0..EXPORT_BYTES / READ_BYTES {
            fill_pattern(&mut piece, k * READ_BYTES);
            exporter
                .buffer()
                .write(k * READ_BYTES, &piece)
                .ok_or("the exporting session's buffer is smaller than asked for")?;
        }
        exporter.submit(&Sqe {
            opcode: opcode::EXPORT,
            aux: 1, // read
            user_data: 1,
            buf_offset: 0,
            buf_len: EXPORT_BYTES as u32,
            args: [EXPORT_BYTES as u64, 0, 0, 0],
            ..Default::default()
        })?;
        let c = exporter.wait_cqe(Duration::from_micros(50), Some(SETUP_TIMEOUT))?;
        if c.user_data != 1 || c.result != 0 {
            return Err(format!("EXPORT of {EXPORT_BYTES} bytes failed: {}", describe_result(&c)).into());
        }
        let mut ticket = [0u8; ring_proto::entry::EXPORT_TICKET_LEN];
        exporter
            .buffer()
            .read(EXPORT_BYTES, &mut ticket)
            .ok_or("the exporting session's buffer has no room for the export ticket")?;
        let t = ring_proto::entry::ExportTicket::decode(&ticket);
        let export = (t.id, t.key);

        let mut reader = bench_session(socket, READ_DEPTH * READ_BYTES, "reading")?;
        let peer = reader
            .connect_peer(addr)
            .map_err(|e| format!("connecting the reading session to the engine's own listener {addr}: {e}"))?;
        // One ECHO over the connection first: the engine logs the lanes UCX chose for a
        // connection when it completes the first SEND on it (not on READs), and the bench
        // copies that line into details.engine_ucx_lanes.
        reader
            .buffer()
            .write(REQ_OFFSET, &PAYLOAD)
            .ok_or("the reading session's buffer is too small")?;
        reader.submit(&send_sqe(peer, 2))?;
        let c = reader.wait_cqe(Duration::from_micros(50), Some(SETUP_TIMEOUT))?;
        if c.user_data != 2 || c.result != PAYLOAD.len() as i32 {
            return Err(format!("the set-up ECHO failed: {}", describe_result(&c)).into());
        }
        // Once, before any measurement: one READ, every byte checked.
        let probe = slot_offset(PROBE_SLOT);
        reader
            .buffer()
            .write(probe, &vec![0xee; READ_BYTES])
            .ok_or("the reading session's buffer is smaller than asked for")?;
        let remote = PROBE_PIECE * READ_BYTES as u64;
        reader.submit(&read_sqe(peer, PROBE_SLOT, 0, export, remote))?;
        let c = reader.wait_cqe(Duration::from_micros(50), Some(SETUP_TIMEOUT))?;
        if c.user_data != read_user_data(0, PROBE_SLOT) || c.result != READ_BYTES as i32 {
            return Err(format!(
                "the first READ (export {}, {READ_BYTES} bytes at offset {remote}) failed: user_data {}, {}",
                export.0,
                c.user_data,
                describe_result(&c)
            )
            .into());
        }
        let mut got = vec![0u8; READ_BYTES];
        reader
            .buffer()
            .read(probe, &mut got)
            .ok_or("reading the READ's bytes")?;
        check_pattern(&got, remote as usize, "the first READ")?;
        Ok(Self {
            reader,
            exporter,
            peer,
            export,
            seq: 0,
        })
    }
}

impl Pipeline for ReadState {
    fn start(&mut self, slot: usize) -> Result<bool> {
        self.seq += 1;
        let sqe = read_sqe(self.peer, slot, self.seq, self.export, remote_offset(self.seq));
        self.reader.submit(&sqe)?;
        Ok(false)
    }

    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()> {
        while let Some(c) = self.reader.try_cqe()? {
            let slot = slot_of(c.user_data);
            if c.result != READ_BYTES as i32 || slot >= READ_DEPTH {
                return Err(format!(
                    "READ {} (slot {slot}) completed with {}, expected {READ_BYTES}",
                    c.user_data >> 8,
                    describe_result(&c)
                )
                .into());
            }
            done(slot);
        }
        Ok(())
    }

    fn waiting_for(&self) -> String {
        format!(
            "waiting for READ completions (last submitted {}; reader {}; exporter state {:?})",
            self.seq,
            stall_context(&self.reader),
            self.exporter.state()
        )
    }
}

impl Scenario for ReadBw {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.state.is_none() {
            let st = ReadState::new(ctx)?;
            let d = &mut self.details;
            d.insert("read_bytes".into(), READ_BYTES.into());
            d.insert("in_flight".into(), READ_DEPTH.into());
            d.insert("export_bytes".into(), EXPORT_BYTES.into());
            d.insert("export_id".into(), st.export.0.into());
            d.insert("peer_address".into(), ctx.ucx_address.clone().into());
            d.insert("first_read_checked".into(), true.into());
            self.state = Some(st);
        }
        let st = self.state.as_mut().expect("set up above");
        pipelined_loop(ctx.timing, hist, READ_DEPTH, st)
    }

    fn details(&self) -> Map<String, Value> {
        self.details.clone()
    }
}

/// Anonymous shared memory (like a session region, which is a shared mapping), in 2 MiB huge
/// pages when enough are free, as the engine maps sessions under `hugepages = prefer`. Its
/// bytes are reached only through its [`SharedArea`] (checked copies; UCX gets its ranges as
/// [`SharedRange`]s, which keep the mapping alive while UCX may use them).
struct Mapping {
    area: SharedArea,
    base: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: the mapping is plain shared memory reached only through the SharedArea (atomic
// copies) and UCX; the raw base pointer is kept only to unmap it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl SharedMemory for Mapping {
    fn shared_area(&self) -> &SharedArea {
        &self.area
    }
}

impl Mapping {
    fn new(len: usize) -> Result<Arc<Self>> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let mut p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags | libc::MAP_HUGETLB, -1, 0) };
        let huge = p != libc::MAP_FAILED;
        if !huge {
            // SAFETY: as above.
            p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
            if p == libc::MAP_FAILED {
                return Err(format!("mapping {len} bytes: {}", std::io::Error::last_os_error()).into());
            }
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or("mmap returned null")?;
        // SAFETY: `len` bytes mapped read-write, unmapped only when the Mapping (which owns the
        // area) is dropped; no Rust slice over them is ever made.
        let area = unsafe { SharedArea::new(base, len) };
        Ok(Arc::new(Self { area, base, len, huge }))
    }

    /// The address of byte `offset` (what a peer names in a get).
    fn addr(&self, offset: usize) -> u64 {
        self.area.range(offset, 0).expect("offset inside the mapping").addr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once, when nothing holds it any more (the
        // registrations and UCX's operations hold it through SharedRanges).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `ucx.raw_read_bw.<tls>`: the server worker's side registers [`EXPORT_BYTES`] (the
/// export); the client side registers its destination ([`READ_DEPTH`] slots, as the engine
/// registers a session's whole region) and unpacks the export's packed remote key on its
/// endpoint (handed over in-process); then [`READ_DEPTH`] gets of [`READ_BYTES`] are kept in
/// flight, both workers progressed by the one thread.
struct RawRead {
    // Dropped in `Drop` in this order before the rest: key, endpoints, listener,
    // registrations; then the workers, then the memory.
    rkey: Option<RemoteKey>,
    client_ep: Option<Endpoint>,
    server_ep: Option<Endpoint>,
    listener: Option<Listener>,
    src_reg: Option<Registration>,
    dst_reg: Option<Registration>,
    client: Worker,
    server: Worker,
    src: Arc<Mapping>,
    dst: Arc<Mapping>,
    addr: SocketAddr,
    lanes: String,
    seq: u64,
}

impl RawRead {
    fn new(tls: Tls) -> Result<Self> {
        let ctx = Context::new(Some(tls.transports()), Some(tls.net_devices()))
            .map_err(|e| format!("UCX context ({}): {e}", tls.transports()))?;
        let mut server = Worker::new(ctx.clone(), &[]).map_err(|e| format!("UCX server worker: {e}"))?;
        let client = Worker::new(ctx.clone(), &[]).map_err(|e| format!("UCX client worker: {e}"))?;
        let listener = server
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| format!("UCX listen on 127.0.0.1: {e}"))?;
        let addr = listener.addr;
        let mut r = RawRead {
            rkey: None,
            client_ep: None,
            server_ep: None,
            listener: Some(listener),
            src_reg: None,
            dst_reg: None,
            client,
            server,
            src: Mapping::new(EXPORT_BYTES)?,
            dst: Mapping::new(READ_DEPTH * READ_BYTES)?,
            addr,
            lanes: String::new(),
            seq: 0,
        };
        let mut piece = vec![0u8; READ_BYTES];
        for k in 0..EXPORT_BYTES / READ_BYTES {
            fill_pattern(&mut piece, k * READ_BYTES);
            r.src.area.copy_in(k * READ_BYTES, &piece).expect("inside the source");
        }
        r.dst.area.fill(0, r.dst.len, 0xee).expect("inside the destination");
        // The registrations hold the mappings.
        r.src_reg = Some(
            ctx.register(SharedRange::whole(r.src.clone()))
                .map_err(|e| format!("UCX registration of the source: {e}"))?,
        );
        r.dst_reg = Some(
            ctx.register(SharedRange::whole(r.dst.clone()))
                .map_err(|e| format!("UCX registration of the destination: {e}"))?,
        );
        establish(&mut r.client, &mut r.server, addr, &mut r.client_ep, &mut r.server_ep)?;
        let packed = r
            .src_reg
            .as_ref()
            .expect("registered")
            .pack_rkey()
            .map_err(|e| format!("UCX rkey pack: {e}"))?;
        r.rkey = Some(
            r.client
                .unpack_rkey(
                    r.client_ep.as_ref().expect("connected"),
                    &packed,
                    r.src.addr(0)..r.src.addr(0) + EXPORT_BYTES as u64,
                )
                .map_err(|e| format!("UCX rkey unpack: {e}"))?,
        );
        // Once, before any measurement: one get, every byte checked.
        let remote = r.src.addr(0) + PROBE_PIECE * READ_BYTES as u64;
        if !r.get(PROBE_SLOT, remote)? {
            let mut done = false;
            let mut guard = SpinGuard::new();
            while !done {
                r.poll(&mut |slot| done |= slot == PROBE_SLOT)?;
                guard.turn(|| "waiting for the first raw get".into())?;
            }
        }
        let at = slot_offset(PROBE_SLOT);
        check_pattern(
            &r.dst.area.read_vec(at, READ_BYTES).expect("inside the destination"),
            PROBE_PIECE as usize * READ_BYTES,
            "the first raw get",
        )?;
        let info = r.client.ep_info(r.client_ep.as_ref().expect("connected"));
        r.lanes = lanes_of(&info);
        Ok(r)
    }

    /// Starts a get of [`READ_BYTES`] at `remote` into `slot`; `true` if it completed at once.
    fn get(&mut self, slot: usize, remote: u64) -> Result<bool> {
        let ep = self.client_ep.as_ref().expect("connected");
        let rkey = self.rkey.as_ref().expect("unpacked");
        assert!(slot < READ_DEPTH);
        // The slot's range holds `dst` mapped until the get is done; a slot gets a new get
        // only after its previous one completed; the key belongs to the server, the
        // endpoint's peer.
        let dst = SharedRange::new(self.dst.clone(), slot_offset(slot), READ_BYTES).map_err(|e| e.to_string())?;
        let st = self
            .client
            .get(ep, dst, remote, rkey, slot as u64)
            .map_err(|e| format!("UCX get: {e}"))?;
        Ok(st == Started::Done)
    }
}

/// The lane lines of UCX's endpoint description, on one line (as the engine logs them).
fn lanes_of(info: &str) -> String {
    let lanes: Vec<String> = info
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with("lane[") || l.starts_with("am_send:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    lanes.join(" | ")
}

impl Pipeline for RawRead {
    fn start(&mut self, slot: usize) -> Result<bool> {
        self.seq += 1;
        let remote = self.src.addr(0) + remote_offset(self.seq);
        self.get(slot, remote)
    }

    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()> {
        let mut failed: Option<String> = None;
        self.client.progress(&mut |ev| match ev {
            WorkerEvent::SendDone { token, result: Ok(()) } if (token as usize) < READ_DEPTH => done(token as usize),
            WorkerEvent::SendDone { token, result: Ok(()) } => failed = Some(format!("unexpected completion {token}")),
            WorkerEvent::SendDone { token, result: Err(e) } => failed = Some(format!("UCX get of slot {token}: {e}")),
            WorkerEvent::EndpointFailed { error, .. } => failed = Some(format!("UCX endpoint failed: {error}")),
            WorkerEvent::Am(m) => failed = Some(format!("unexpected active message id {}", m.id)),
            WorkerEvent::RecvDone { .. } => failed = Some("unexpected rendezvous completion".into()),
        });
        self.server.progress(&mut |ev| {
            if let WorkerEvent::EndpointFailed { error, .. } = ev {
                failed = Some(format!("UCX server endpoint failed: {error}"));
            }
        });
        fail_if(&mut failed)
    }

    fn waiting_for(&self) -> String {
        format!("waiting for raw UCX gets (last started {})", self.seq)
    }
}

impl RawBlocks for RawRead {
    fn facts(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("listen_address".into(), self.addr.to_string().into());
        m.insert("read_bytes".into(), READ_BYTES.into());
        m.insert("in_flight".into(), READ_DEPTH.into());
        m.insert("export_bytes".into(), EXPORT_BYTES.into());
        m.insert(
            "buffer_pages".into(),
            (if self.src.huge && self.dst.huge {
                "huge"
            } else {
                "normal"
            })
            .into(),
        );
        m.insert("raw_ucx_lanes".into(), self.lanes.clone().into());
        m.insert("first_read_checked".into(), true.into());
        m
    }

    fn block(&mut self, timing: Timing, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        pipelined_loop(timing, hist, READ_DEPTH, self)
    }
}

impl Drop for RawRead {
    fn drop(&mut self) {
        // Gets still in flight (only after an error) complete with errors during the close.
        drop(self.rkey.take());
        if let Some(ep) = self.client_ep.take() {
            self.client.close(ep);
        }
        if let Some(ep) = self.server_ep.take() {
            self.server.close(ep);
        }
        if let Some(l) = self.listener.take() {
            l.destroy();
        }
        drop(self.src_reg.take());
        drop(self.dst_reg.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_wire_protocol() {
        let h = RequestHeader {
            req_id: 0x0102_0304_0506_0708,
            service: 1,
            resp_cap: 8,
        }
        .encode();
        assert_eq!(&h[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&h[8..12], &[1, 0, 0, 0]);
        assert_eq!(&h[12..], &[8, 0, 0, 0]);
        assert_eq!(RequestHeader::parse(&h).map(|h| h.req_id), Some(0x0102_0304_0506_0708));
        assert_eq!(RequestHeader::parse(&h[..15]), None);
    }

    #[test]
    fn send_entry_is_a_valid_echo_request() {
        let e = send_sqe(7, 42);
        assert_eq!(
            (e.opcode, e.peer, e.aux, e.user_data),
            (opcode::SEND, 7, service::ECHO, 42)
        );
        assert_eq!((e.buf_offset, e.buf_len), (0, 8));
        assert_eq!(e.args, [4096, 8, 0, 0]);
        assert_eq!((e.flags, e.reserved), (0, 0));
    }

    /// The raw ping-pong over tcp on loopback and over shared memory, a few hundred round
    /// trips each, against the real libucp. Run in a process of its own (this test binary,
    /// running only the ignored test below): UCX reads its environment and patches memory
    /// functions when a context is created, which must not race with the other tests' threads.
    #[test]
    fn raw_pair_ping_pongs_over_tcp_and_shared_memory() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "scenarios::ucx::tests::raw_pair_in_this_process",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("UCX_MM_ERROR_HANDLING", "y")
            .env("UCX_WARN_UNUSED_ENV_VARS", "n")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    #[test]
    #[ignore = "run by raw_pair_ping_pongs_over_tcp_and_shared_memory in a process of its own"]
    fn raw_pair_in_this_process() {
        for tls in [Tls::Tcp, Tls::Sm] {
            eprintln!("raw UCX pair over {}", tls.name());
            let mut p = RawPair::new(tls).unwrap_or_else(|e| panic!("UCX over {}: {e}", tls.name()));
            for _ in 0..300 {
                p.round_trip().unwrap_or_else(|e| panic!("{}: {e}", tls.name()));
            }
            assert_eq!(p.seq, 300);
            drop(p);
            // The raw READ baseline: set-up checks the first get's bytes; then a short block.
            let mut r = RawRead::new(tls).unwrap_or_else(|e| panic!("raw read over {}: {e}", tls.name()));
            let timing = Timing {
                warmup: Duration::from_millis(2),
                measure: Duration::from_millis(10),
            };
            let mut h = new_histogram();
            let run = r
                .block(timing, &mut h)
                .unwrap_or_else(|e| panic!("{}: {e}", tls.name()));
            assert!(run.samples > 0 && h.len() == run.samples);
            assert!(r.lanes.contains("lane["), "{}", r.lanes);
            // Every slot holds some piece of the export.
            for slot in 0..READ_DEPTH {
                let at = slot_offset(slot);
                let got = r.dst.area.read_vec(at, READ_BYTES).unwrap();
                let piece = (0..EXPORT_BYTES / READ_BYTES).find(|k| check_pattern(&got, k * READ_BYTES, "x").is_ok());
                assert!(piece.is_some(), "slot {slot} holds no piece of the export");
            }
        }
    }

    #[test]
    fn reads_cycle_over_the_export_into_their_own_slots() {
        assert_eq!(remote_offset(0), 0);
        assert_eq!(remote_offset(1), 1 << 20);
        assert_eq!(remote_offset(16), 0);
        assert_eq!(remote_offset(17), 1 << 20);
        assert!((0..1000).all(|q| remote_offset(q) + READ_BYTES as u64 <= EXPORT_BYTES as u64));
        assert_eq!(slot_offset(READ_DEPTH - 1) + READ_BYTES, READ_DEPTH * READ_BYTES);
        let e = read_sqe(3, 15, 1234, (7, 0xdead_beef), 5 << 20);
        assert_eq!(
            (e.opcode, e.peer, e.buf_offset, e.buf_len),
            (opcode::READ, 3, 15 << 20, 1 << 20)
        );
        assert_eq!(e.args, [7, 0xdead_beef, 5 << 20, 0]);
        assert_eq!((e.flags, e.reserved, e.aux), (0, 0, 0));
        assert_eq!((slot_of(e.user_data), e.user_data >> 8), (15, 1234));
    }

    #[test]
    fn the_export_pattern_tells_pieces_apart() {
        let mut a = vec![0u8; READ_BYTES];
        fill_pattern(&mut a, 2 * READ_BYTES);
        assert!(check_pattern(&a, 2 * READ_BYTES, "piece 2").is_ok());
        let e = check_pattern(&a, 3 * READ_BYTES, "piece 3").unwrap_err().to_string();
        assert!(e.contains("piece 3: wrong bytes: byte 0"), "{e}");
        assert!(check_pattern(&a[1..], 2 * READ_BYTES, "shifted").is_err());
        a[1000] ^= 1;
        let e = check_pattern(&a, 2 * READ_BYTES, "flipped").unwrap_err().to_string();
        assert!(e.contains("byte 1000 of 1048576"), "{e}");
    }
}
