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
//!
//! Files: this one holds the raw UCX thread both raw baselines run on ([`RawUcx`]) and the
//! wire-up of two workers; `am_rtt.rs` the round trips (ring and raw), `read_bw.rs` the ring
//! READs of an export, `raw_read.rs` the raw gets.

mod am_rtt;
mod raw_read;
mod read_bw;
#[cfg(test)]
mod tests;

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

use am_rtt::*;
use raw_read::*;
use read_bw::*;

pub use am_rtt::{AmRtt, Ends};
pub use read_bw::{ReadBw, EXPORT_BYTES, READ_BYTES, READ_DEPTH};

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
    /// client's handler takes that; the two ends on two workers or on one ([`Ends`]).
    AmRtt(Ends),
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
                        RawKind::AmRtt(ends) => Box::new(RawPair::new(tls, ends)?),
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

/// Connects `client` (`None`: `server` itself) to `server`'s listener at `addr`, accepts on
/// the server, and progresses both until the wire-up is over. The endpoints go into the
/// caller's slots as soon as they exist, so that the caller closes them also when this fails
/// half-way.
fn establish(
    mut client: Option<&mut Worker>,
    server: &mut Worker,
    addr: SocketAddr,
    client_ep: &mut Option<Endpoint>,
    server_ep: &mut Option<Endpoint>,
) -> Result<()> {
    *client_ep = Some(
        client
            .as_deref_mut()
            .unwrap_or(&mut *server)
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
        if let Some(c) = client.as_deref_mut() {
            c.progress(&mut on_event);
        }
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
        let busy = client.as_deref_mut().is_some_and(|c| c.progress(&mut on_event)) | server.progress(&mut on_event);
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
