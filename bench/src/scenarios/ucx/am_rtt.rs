//! `ucx.am_rtt.*` (a SEND through the rings, echoed by the engine over UCX) and
//! `ucx.raw_am_rtt.*` and `ucx.raw_am_rtt_one_worker.*` ([`RawPair`]: the same active
//! messages between two raw workers, or between two endpoints of one).

use super::*;

/// The message: 8 bytes, as the "small request-response".
pub(super) const PAYLOAD: [u8; 8] = *b"ucx-ping";
/// Where the ring scenario puts the request and the response in the session's buffer area.
pub(super) const REQ_OFFSET: usize = 0;
pub(super) const RESP_OFFSET: usize = 4096;

/// `ucx.am_rtt.<tls>`: one SEND (service ECHO, 8 bytes) through the rings to the engine,
/// which sends it over UCX to its own listener, serves the echo and completes the SEND with
/// the response written into the session's buffer; the bench spins on `try_cqe`.
#[derive(Default)]
pub struct AmRtt {
    seq: u64,
}

pub(super) fn send_sqe(peer: u32, user_data: u64) -> Sqe {
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
/// A request in slot `i` has send token `i`, its reply `SLOTS + i`, so one handler tells them
/// apart also when both ends share a worker.
pub(super) const SLOTS: usize = 4;

/// Where the raw pair's two ends live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    /// A client worker and a server worker (`ucx.raw_am_rtt.*`): as `ucx_perftest` has it,
    /// and as two engines on two hosts do.
    TwoWorkers,
    /// Both ends on one worker, connected to its own listener
    /// (`ucx.raw_am_rtt_one_worker.*`): as one engine serving its own listener has it in
    /// `ucx.am_rtt.*` and the needle scenarios. Over tcp that is two TCP connections polled
    /// by one worker (bench/README "Small reads against the raw UCX round trip").
    OneWorker,
}

/// The endpoints and the worker(s). Headers and data are handed to the worker, which keeps
/// them until UCX is done with them.
pub(super) struct RawPair {
    // Endpoints and the listener are closed in `Drop` before the workers go.
    client_ep: Option<Endpoint>,
    server_ep: Option<Endpoint>,
    listener: Option<Listener>,
    /// `None` with [`Ends::OneWorker`]: the client's end is on `server`.
    client: Option<Worker>,
    server: Worker,
    addr: SocketAddr,
    /// Sends UCX still holds, by token (requests, then replies).
    busy: [bool; 2 * SLOTS],
    pub(super) seq: u64,
}

impl RawPair {
    pub(super) fn new(tls: Tls, ends: Ends) -> Result<Self> {
        let ctx = Context::new(Some(tls.transports()), Some(tls.net_devices()))
            .map_err(|e| format!("UCX context ({}): {e}", tls.transports()))?;
        let (server_ams, client) = match ends {
            Ends::TwoWorkers => (
                &[am::REQUEST][..],
                Some(Worker::new(ctx.clone(), &[am::REPLY]).map_err(|e| format!("UCX client worker: {e}"))?),
            ),
            Ends::OneWorker => (&[am::REQUEST, am::REPLY][..], None),
        };
        let mut server = Worker::new(ctx, server_ams).map_err(|e| format!("UCX server worker: {e}"))?;
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
            busy: [false; 2 * SLOTS],
            seq: 0,
        };
        establish(
            pair.client.as_mut(),
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
        let ends = if self.client.is_some() {
            "two workers"
        } else {
            "one worker"
        };
        m.insert("ends".into(), ends.into());
        m
    }

    fn block(&mut self, timing: Timing, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        sample_loop(timing, hist, || self.round_trip())
    }
}

impl RawPair {
    /// One request and its reply.
    ///
    /// With two workers, each side progresses its own worker while it waits, and the other's
    /// only while a send of the other's is still in UCX's hands (as before one worker was an
    /// option: the baseline's numbers stay comparable across runs). With one worker, each
    /// wait progresses the one worker.
    pub(super) fn round_trip(&mut self) -> Result<()> {
        let RawPair {
            client_ep,
            server_ep,
            client,
            server,
            busy,
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
        let (req_token, reply_token) = (slot, SLOTS + slot);
        let mut failed: Option<String> = None;
        let mut guard = SpinGuard::new();

        // Client: REQUEST.
        while busy[req_token] {
            client
                .as_mut()
                .unwrap_or(&mut *server)
                .progress(&mut |ev| on_send_done(ev, busy, &mut failed));
            fail_if(&mut failed)?;
            guard.turn(|| format!("waiting for the send of request {} to complete", id - SLOTS as u64))?;
        }
        let header = RequestHeader {
            req_id: id,
            service: service::ECHO,
            resp_cap: PAYLOAD.len() as u32,
        };
        let st = client
            .as_mut()
            .unwrap_or(&mut *server)
            .am_send(
                client_ep,
                am::REQUEST,
                Box::new(header.encode()),
                PAYLOAD.to_vec(),
                true,
                req_token as u64,
            )
            .map_err(|e| format!("UCX request send: {e}"))?;
        busy[req_token] = st == Started::InProgress;

        // Server: take the REQUEST, answer REPLY on the endpoint it came on.
        let mut request: Option<(u64, [u8; 8], Option<usize>)> = None;
        loop {
            if let Some(c) = client.as_mut().filter(|_| busy[..SLOTS].iter().any(|b| *b)) {
                c.progress(&mut |ev| on_send_done(ev, busy, &mut failed));
            }
            server.progress(&mut |ev| match ev {
                WorkerEvent::Am(m) if m.id == am::REQUEST => match (RequestHeader::parse(m.header), m.data) {
                    (Some(h), AmData::Eager(d)) if d.len() == 8 => {
                        request = Some((h.req_id, d.try_into().expect("8 bytes"), m.reply_ep));
                    }
                    _ => failed = Some("the server got a malformed or non-eager request".into()),
                },
                other => on_send_done(other, busy, &mut failed),
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
        while busy[reply_token] {
            server.progress(&mut |ev| on_send_done(ev, busy, &mut failed));
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
                reply_token as u64,
            )
            .map_err(|e| format!("UCX reply send: {e}"))?;
        busy[reply_token] = st == Started::InProgress;

        // Client: take the REPLY.
        let mut reply: Option<(u64, [u8; 8])> = None;
        loop {
            if client.is_some() && busy[SLOTS..].iter().any(|b| *b) {
                server.progress(&mut |ev| on_send_done(ev, busy, &mut failed));
            }
            client.as_mut().unwrap_or(&mut *server).progress(&mut |ev| match ev {
                WorkerEvent::Am(m) if m.id == am::REPLY => match (ReplyHeader::parse(m.header), m.data) {
                    (Some(h), AmData::Eager(d)) if d.len() == 8 && h.status == 0 => {
                        reply = Some((h.req_id, d.try_into().expect("8 bytes")))
                    }
                    _ => failed = Some("the client got a malformed or non-eager reply".into()),
                },
                other => on_send_done(other, busy, &mut failed),
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

/// Send completions (token = index in `busy`) and endpoint failures; other events are
/// unexpected.
pub(super) fn on_send_done(ev: WorkerEvent<'_>, busy: &mut [bool], failed: &mut Option<String>) {
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

pub(super) fn fail_if(failed: &mut Option<String>) -> Result<()> {
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
            self.client.as_mut().unwrap_or(&mut self.server).close(ep);
        }
        if let Some(ep) = self.server_ep.take() {
            self.server.close(ep);
        }
        if let Some(l) = self.listener.take() {
            l.destroy();
        }
    }
}
