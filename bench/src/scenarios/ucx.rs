//! UCX: a request-response through the rings to the engine's own UCX listener
//! (`ucx.am_rtt.*`), and the raw UCX active-message ping-pong it is compared with
//! (`ucx.raw_am_rtt.*`), built on the engine's own safe wrapper (`engine::ucx`), with the
//! same context settings and the same message shapes as the engine's wire protocol
//! (ring-proto/SPEC.md §13): a REQUEST active message with a 16-byte header and 8 bytes of
//! data, sent with the reply flag, answered by a REPLY with a 16-byte header and the 8 bytes.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::ucx::{AmData, Context, Endpoint, Listener, Started, Worker, WorkerEvent};
use hdrhistogram::Histogram;
use ring_proto::entry::service;
use ring_proto::{opcode, ResultCode, Sqe};
use serde_json::{Map, Value};

use super::ring::stall_context;
use super::{sample_loop, BlockRun, Ctx, Scenario, SpinGuard, Timing, Tls, STALL_LIMIT};
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

/// Active-message ids and header layout of the engine's wire protocol (SPEC.md §13).
const AM_REQUEST: u16 = 1;
const AM_REPLY: u16 = 2;

fn header(id: u64, a: u32, b: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&id.to_le_bytes());
    h[8..12].copy_from_slice(&a.to_le_bytes());
    h[12..].copy_from_slice(&b.to_le_bytes());
    h
}

fn header_id(h: &[u8]) -> Option<u64> {
    (h.len() == 16).then(|| u64::from_le_bytes(h[..8].try_into().expect("8 bytes")))
}

/// Sends in flight per direction: header and data slots are reused round-robin, and a slot
/// is reused only once UCX reported its send done.
const SLOTS: usize = 4;

/// `ucx.raw_am_rtt.<tls>`: two UCX workers of one context (the engine's settings: AM, RMA,
/// wakeup, peer error handling, the same transports and devices), a client that connected to
/// the server's listener on 127.0.0.1, and one thread progressing both. One sample: the
/// client sends REQUEST (16-byte header, 8 bytes, reply flag), the server's handler takes it,
/// the server answers REPLY on the endpoint it arrived on, the client's handler takes that.
///
/// The thread lives as long as the scenario, pinned to the engine core (where the engine's
/// worker does the same UCX work in `ucx.am_rtt`), and sleeps between blocks; each block
/// runs the shared [`sample_loop`] there while the measuring thread waits.
pub struct RawAmRtt {
    tls: Tls,
    thread: Option<RawThread>,
    details: Map<String, Value>,
}

impl RawAmRtt {
    pub fn new(tls: Tls) -> Self {
        Self {
            tls,
            thread: None,
            details: Map::new(),
        }
    }
}

type BlockResult = Result<Option<(Histogram<u64>, BlockRun)>>;

struct RawThread {
    blocks: Option<mpsc::Sender<Timing>>,
    results: mpsc::Receiver<BlockResult>,
    handle: Option<JoinHandle<()>>,
}

impl RawThread {
    fn start(core: usize, tls: Tls) -> Result<(Self, SocketAddr)> {
        let (block_tx, block_rx) = mpsc::channel::<Timing>();
        let (result_tx, result_rx) = mpsc::channel::<BlockResult>();
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let handle = std::thread::Builder::new()
            .name(format!("bench-ucx-raw-{}", tls.name()))
            .spawn(move || {
                // UCX threads this creates (its async thread) inherit this CPU mask.
                let pair = pin_current_thread(core).and_then(|()| RawPair::new(tls));
                let mut pair = match pair {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = result_tx.send(Err(e));
                        return;
                    }
                };
                let _ = addr_tx.send(pair.addr);
                if result_tx.send(Ok(None)).is_err() {
                    return;
                }
                while let Ok(timing) = block_rx.recv() {
                    let mut h = new_histogram();
                    let r = sample_loop(timing, &mut h, || pair.round_trip());
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
        let addr = addr_rx
            .try_recv()
            .map_err(|_| "the raw UCX thread did not report its address")?;
        Ok((t, addr))
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

impl Scenario for RawAmRtt {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.thread.is_none() {
            let (t, addr) = RawThread::start(ctx.engine_core, self.tls)?;
            self.details.insert("transports".into(), self.tls.transports().into());
            self.details.insert("net_devices".into(), self.tls.net_devices().into());
            self.details.insert("listen_address".into(), addr.to_string().into());
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

/// The two workers and their endpoints. Header and data buffers are boxed: UCX may read
/// them until the send is done, whatever happens to the struct meanwhile.
struct RawPair {
    // Endpoints and the listener are closed in `Drop` before the workers go.
    client_ep: Option<Endpoint>,
    server_ep: Option<Endpoint>,
    listener: Option<Listener>,
    client: Worker,
    server: Worker,
    addr: SocketAddr,
    payload: Box<[u8; 8]>,
    req_headers: Box<[[u8; 16]; SLOTS]>,
    reply_headers: Box<[[u8; 16]; SLOTS]>,
    reply_data: Box<[[u8; 8]; SLOTS]>,
    req_busy: [bool; SLOTS],
    reply_busy: [bool; SLOTS],
    seq: u64,
}

impl RawPair {
    fn new(tls: Tls) -> Result<Self> {
        let ctx = Context::new(Some(tls.transports()), Some(tls.net_devices()))
            .map_err(|e| format!("UCX context ({}): {e}", tls.transports()))?;
        let mut server = Worker::new(ctx.clone(), &[AM_REQUEST]).map_err(|e| format!("UCX server worker: {e}"))?;
        let client = Worker::new(ctx, &[AM_REPLY]).map_err(|e| format!("UCX client worker: {e}"))?;
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
            payload: Box::new(PAYLOAD),
            req_headers: Box::new([[0; 16]; SLOTS]),
            reply_headers: Box::new([[0; 16]; SLOTS]),
            reply_data: Box::new([[0; 8]; SLOTS]),
            req_busy: [false; SLOTS],
            reply_busy: [false; SLOTS],
            seq: 0,
        };
        pair.client_ep = Some(
            pair.client
                .connect(addr)
                .map_err(|e| format!("UCX connect to {addr}: {e}"))?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while pair.server_ep.is_none() {
            let mut failed = None;
            let mut on_event = |ev: WorkerEvent<'_>| {
                if let WorkerEvent::EndpointFailed { error, .. } = ev {
                    failed = Some(error);
                }
            };
            pair.client.progress(&mut on_event);
            pair.server.progress(&mut on_event);
            if let Some(e) = failed {
                return Err(format!("UCX connection to {addr} failed: {e}").into());
            }
            if let Some(req) = pair.server.take_conn_requests().into_iter().next() {
                pair.server_ep = Some(pair.server.accept(req).map_err(|e| format!("UCX accept: {e}"))?);
            }
            if Instant::now() >= deadline {
                return Err(format!("UCX: the connection to {addr} was not accepted within 10 s").into());
            }
            crate::interrupt::check()?;
            std::hint::spin_loop();
        }
        // Let the connection finish its wire-up before the first send: UCX 1.12.1 (the
        // version ucx1-sys builds, which `cargo test`/`cargo run` put on LD_LIBRARY_PATH)
        // crashes replaying an active message with a user header that was queued on a
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
            let busy = pair.client.progress(&mut on_event) | pair.server.progress(&mut on_event);
            if let Some(e) = failed {
                return Err(format!("UCX connection to {addr} failed during wire-up: {e}").into());
            }
            idle_turns = if busy { 0 } else { idle_turns + 1 };
            if Instant::now() >= deadline {
                return Err(format!("UCX: the connection to {addr} kept busy for 10 s during wire-up").into());
            }
        }
        Ok(pair)
    }

    /// One request and its reply.
    fn round_trip(&mut self) -> Result<()> {
        let RawPair {
            client_ep,
            server_ep,
            client,
            server,
            payload,
            req_headers,
            reply_headers,
            reply_data,
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
        req_headers[slot] = header(id, service::ECHO, PAYLOAD.len() as u32);
        // SAFETY: the header slot and the payload are boxed in `self` and stay unchanged until
        // UCX reports the send done (`req_busy`), or until the endpoints are closed in Drop.
        let st = unsafe {
            client.am_send(
                client_ep,
                AM_REQUEST,
                &req_headers[slot],
                payload.as_ptr(),
                payload.len(),
                true,
                slot as u64,
            )
        }
        .map_err(|e| format!("UCX request send: {e}"))?;
        req_busy[slot] = st == Started::InProgress;

        // Server: take the REQUEST, answer REPLY on the endpoint it came on.
        let mut request: Option<(u64, [u8; 8], Option<usize>)> = None;
        loop {
            if req_busy.iter().any(|b| *b) {
                client.progress(&mut |ev| on_send_done(ev, req_busy, &mut failed));
            }
            server.progress(&mut |ev| match ev {
                WorkerEvent::Am(m) if m.id == AM_REQUEST => match (header_id(m.header), m.data) {
                    (Some(rid), AmData::Eager(d)) if d.len() == 8 => {
                        request = Some((rid, d.try_into().expect("8 bytes"), m.reply_ep));
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
        reply_headers[slot] = header(rid, 0, 0);
        reply_data[slot] = data;
        // SAFETY: as for the request: boxed slots, unchanged until `reply_busy` clears.
        let st = unsafe {
            server.am_send(
                server_ep,
                AM_REPLY,
                &reply_headers[slot],
                reply_data[slot].as_ptr(),
                8,
                false,
                slot as u64,
            )
        }
        .map_err(|e| format!("UCX reply send: {e}"))?;
        reply_busy[slot] = st == Started::InProgress;

        // Client: take the REPLY.
        let mut reply: Option<(u64, [u8; 8])> = None;
        loop {
            if reply_busy.iter().any(|b| *b) {
                server.progress(&mut |ev| on_send_done(ev, reply_busy, &mut failed));
            }
            client.progress(&mut |ev| match ev {
                WorkerEvent::Am(m) if m.id == AM_REPLY => match (header_id(m.header), m.data) {
                    (Some(rid), AmData::Eager(d)) if d.len() == 8 => {
                        reply = Some((rid, d.try_into().expect("8 bytes")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_wire_protocol() {
        let h = header(0x0102_0304_0506_0708, 1, 8);
        assert_eq!(&h[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&h[8..12], &[1, 0, 0, 0]);
        assert_eq!(&h[12..], &[8, 0, 0, 0]);
        assert_eq!(header_id(&h), Some(0x0102_0304_0506_0708));
        assert_eq!(header_id(&h[..15]), None);
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
        }
    }
}
