//! The requesting side of SEND (AM_REQUEST → AM_REPLY) and READ_NEEDLE (AM_NEEDLE_REQUEST →
//! AM_NEEDLE_REPLY): a request is sent with the reply flag straight from the client's buffer
//! and filed as pending; the reply lands in the client's response buffer, copied from UCX's
//! buffer when it came eagerly, received straight into the shared buffer when it came by
//! rendezvous.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use engine::ucx::{AmData, ReadMem, Started};
use ring_proto::needle::{NeedleMeta, NEEDLE_META_LEN, NEEDLE_META_MAX};
use ring_proto::wire::{am, NeedleReplyHeader, NeedleRequestHeader, ReplyHeader, RequestHeader};
use ring_proto::{ResultCode, SharedRange};

use super::dispatch::{Deferred, ReplyRndv};
use super::peers::{bump, PeerEntry};
use super::{DataPlane, RemoteCompletion};
use crate::ops::{NeedleRequest, RmaRequest, SendRequest};
use crate::session::SessionShared;

/// A request of a session waiting for its answer.
pub(super) struct Pending {
    pub session: Arc<SessionShared>,
    pub user_data: u64,
    pub peer: u32,
    pub peer_stats: Arc<PeerEntry>,
    pub resp_offset: usize,
    pub resp_cap: usize,
    pub started: Instant,
    pub deadline: Instant,
    /// A rendezvous receive, get or put on the client's buffer is running: UCX owns the
    /// outcome (the request is not timed out under it).
    pub receiving: bool,
    /// Set for READ/WRITE (`resp_offset`/`resp_cap` are then the local range).
    pub rma: Option<RmaRequest>,
    /// READ/WRITE issued: its UCX operations still running (a READ's get; a WRITE's put and
    /// the flush after it). The request completes, and stops counting against its export,
    /// when the last one has finished: until then UCX may still access the exporter's memory.
    pub rma_ops: u8,
    /// One of those operations failed (or failed to start): the request fails.
    pub rma_failed: bool,
    /// READ_NEEDLE: where the metadata goes (the data goes to `resp_offset`).
    pub meta_offset: Option<usize>,
    /// READ/WRITE that asked the peer for the descriptor (holds a lookup token, §14).
    pub lookup: bool,
}

/// A request message to send (AM_REQUEST or AM_NEEDLE_REQUEST, with the reply flag).
pub(super) struct Outbound<P> {
    pub id: u16,
    pub header: Box<[u8]>,
    pub payload: P,
}

/// Where a request's answer goes in the session's buffer area.
pub(super) struct ReplyTo {
    /// The response (or needle data) lands here, at most `resp_cap` bytes.
    pub resp_offset: usize,
    pub resp_cap: usize,
    /// READ_NEEDLE: where the needle's metadata goes.
    pub meta_offset: Option<usize>,
}

/// A range of the session's buffer area that validation already checked.
pub(super) fn range(
    session: &Arc<SessionShared>,
    offset: usize,
    len: usize,
) -> Result<SharedRange<SessionShared>, ResultCode> {
    SharedRange::new(session.clone(), offset, len).map_err(|e| {
        tracing::error!(session = session.id, error = %e, "validated range outside the buffer area");
        ResultCode::Internal
    })
}

impl DataPlane {
    pub(super) fn start_send(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        req: SendRequest,
    ) -> Result<(), ResultCode> {
        if req.len > self.settings.max_message {
            return Err(ResultCode::InvalidEntry);
        }
        self.register(session)?;
        self.ensure_conn(req.peer)?;
        let req_id = self.new_req_id();
        let header = RequestHeader {
            req_id,
            service: req.service,
            resp_cap: req.resp_cap as u32,
        };
        // The payload is sent straight from the client's buffer; the client may change the
        // bytes meanwhile, which only changes what is sent.
        let payload = range(session, req.offset, req.len)?;
        self.send_request(
            session,
            user_data,
            req.peer,
            req_id,
            Outbound {
                id: am::REQUEST,
                header: Box::new(header.encode()),
                payload,
            },
            ReplyTo {
                resp_offset: req.resp_offset,
                resp_cap: req.resp_cap,
                meta_offset: None,
            },
        )
    }

    pub(super) fn start_read_needle(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        req: NeedleRequest,
    ) -> Result<(), ResultCode> {
        self.register(session)?;
        self.ensure_conn(req.peer)?;
        let req_id = self.new_req_id();
        // A copy (the client may be writing it): jwt_len <= NEEDLE_META_LEN, validated.
        let jwt = session
            .region
            .buf()
            .read_vec(req.offset, req.jwt_len)
            .map_err(|_| ResultCode::Internal)?;
        let header = NeedleRequestHeader {
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
        // The data lands after the metadata area, at most max_len (<= data_cap) bytes.
        self.send_request(
            session,
            user_data,
            req.peer,
            req_id,
            Outbound {
                id: am::NEEDLE_REQUEST,
                header,
                payload: (),
            },
            ReplyTo {
                resp_offset: req.offset + NEEDLE_META_LEN,
                resp_cap: req.max_len as usize,
                meta_offset: Some(req.offset),
            },
        )
    }

    /// Sends a request message to a connected peer and files the request as pending (the
    /// worker keeps the header and payload until UCX is done with them).
    fn send_request<P: ReadMem>(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        peer: u32,
        req_id: u64,
        msg: Outbound<P>,
        reply: ReplyTo,
    ) -> Result<(), ResultCode> {
        let now = Instant::now();
        let conn = &self.conns[&peer];
        let (id, len) = (msg.id, msg.payload.len());
        let started = self.worker.am_send(&conn.ep, id, msg.header, msg.payload, true, req_id);
        tracing::trace!(req_id, peer, id, len, ?started, "request sent");
        if let Err(e) = started {
            tracing::debug!(peer, id, error = %e, "request send failed");
            return Err(ResultCode::PeerFailed);
        }
        bump(&conn.entry.stats.requests);
        self.pending.insert(
            req_id,
            Pending {
                session: session.clone(),
                user_data,
                peer,
                peer_stats: conn.entry.clone(),
                resp_offset: reply.resp_offset,
                resp_cap: reply.resp_cap,
                started: now,
                deadline: now + self.settings.request_timeout,
                receiving: false,
                rma: None,
                rma_ops: 0,
                rma_failed: false,
                meta_offset: reply.meta_offset,
                lookup: false,
            },
        );
        Ok(())
    }

    /// Receives replies that came by rendezvous straight into the sessions' buffers.
    pub(super) fn receive_replies(&mut self, replies: Vec<ReplyRndv>) {
        for ReplyRndv { req_id, data } in replies {
            let Some(p) = self.pending.get_mut(&req_id) else {
                continue;
            };
            // take_reply checked data.len <= resp_cap; the range holds the session until the
            // receive is done.
            let len = data.len;
            let dst = match range(&p.session, p.resp_offset, len) {
                Ok(r) => r,
                Err(code) => {
                    let p = self.pending.remove(&req_id).expect("present");
                    self.out.push(done(&p, code as i32));
                    continue;
                }
            };
            p.receiving = true;
            match self.worker.recv_rndv(data, dst, req_id) {
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
    }
}

/// A reply to one of our requests, as it came: AM_REPLY, or AM_NEEDLE_REPLY with the
/// metadata bytes of its header.
pub(super) enum Reply<'a> {
    Send(ReplyHeader),
    Needle(NeedleReplyHeader, &'a [u8]),
}

impl Reply<'_> {
    fn req_id(&self) -> u64 {
        match self {
            Self::Send(h) => h.req_id,
            Self::Needle(h, _) => h.req_id,
        }
    }

    fn status(&self) -> i32 {
        match self {
            Self::Send(h) => h.status,
            Self::Needle(h, _) => h.status,
        }
    }
}

/// A reply arrived for one of our requests: complete it, or leave its rendezvous receive
/// for after progress.
pub(super) fn take_reply(
    reply: Reply<'_>,
    data: AmData<'_>,
    pending: &mut HashMap<u64, Pending>,
    d: &mut Deferred,
    out: &mut Vec<RemoteCompletion>,
) {
    let req_id = reply.req_id();
    let Some(p) = pending.get(&req_id) else {
        return; // timed out or failed meanwhile; a rendezvous descriptor is released on drop
    };
    if p.receiving {
        // A second reply for a request whose first reply is being received by rendezvous
        // (a peer's mistake or malice): completing it now would hand the client its range
        // while UCX still writes it. Dropped (its rendezvous descriptor is released on drop).
        tracing::warn!(req_id, "second reply to one request ignored");
        return;
    }
    let status = reply.status();
    let len = match &data {
        AmData::Eager(b) => b.len(),
        AmData::Rndv(r) => r.len,
    };
    let is_needle = matches!(reply, Reply::Needle(..));
    let result = if status < 0 {
        // Only codes this protocol defines may reach the client.
        Some(ResultCode::from_result(status).map_or(ResultCode::PeerFailed as i32, |c| c as i32))
    } else if len > p.resp_cap {
        Some(ResultCode::ResponseTooLarge as i32)
    } else if is_needle != p.meta_offset.is_some() {
        tracing::warn!(req_id, "reply of the wrong kind for its request");
        Some(ResultCode::PeerFailed as i32)
    } else {
        None
    };
    if let Some(r) = result {
        let p = pending.remove(&req_id).expect("present");
        d.complete(p, r, out);
        return;
    }
    let buf = p.session.region.buf();
    if let (Reply::Needle(h, meta), Some(at)) = (&reply, p.meta_offset) {
        // The serving engine is trusted (SPEC §13), but its metadata is still checked before
        // it is written: it must decode, fit the metadata area, and describe this reply.
        let meta_len = (h.meta_len as usize).min(meta.len());
        let ok = meta_len <= NEEDLE_META_MAX
            && NeedleMeta::decode(&meta[..meta_len])
                .is_ok_and(|m| m.range_offset.saturating_add(len as u64) <= m.data_size);
        // The metadata area (NEEDLE_META_LEN >= NEEDLE_META_MAX bytes at `at`) was validated;
        // the client reads it only after the completion.
        if !ok || buf.copy_in(at, &meta[..meta_len]).is_err() {
            tracing::warn!(req_id, "needle reply with bad metadata");
            let p = pending.remove(&req_id).expect("present");
            d.complete(p, ResultCode::PeerFailed as i32, out);
            return;
        }
    }
    match data {
        AmData::Eager(b) => {
            // resp_offset + len <= resp_offset + resp_cap, inside the buffer area (validated);
            // the client reads this range only after the completion posted for it.
            let r = match buf.copy_in(p.resp_offset, b) {
                Ok(()) => len as i32,
                Err(_) => ResultCode::Internal as i32,
            };
            let p = pending.remove(&req_id).expect("present");
            d.complete(p, r, out);
        }
        AmData::Rndv(data) => {
            // From here the request counts as receiving: a duplicate reply is ignored above,
            // and the deadline no longer applies (the receive completes or fails).
            let p = pending.get_mut(&req_id).expect("present");
            p.receiving = true;
            bump(&p.peer_stats.stats.replies_rendezvous);
            d.reply_rndv.push(ReplyRndv { req_id, data });
        }
    }
}

/// The completion of a pending request, accounted to its peer and its session's lookups.
pub(super) fn done(p: &Pending, result: i32) -> RemoteCompletion {
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
