//! Dispatch: routes what UCX reports during progress (active messages, completions, failed
//! endpoints) to the requesting side, the serving side and READ/WRITE. Nothing may call UCX
//! from inside progress, so work that needs it is collected in [`Deferred`] and done by
//! [`DataPlane::after_progress`].

use ring_proto::wire::{
    am, ExportRefHeader, InfoHeader, NeedleReplyHeader, NeedleRequestHeader, ReplyHeader, RequestHeader,
};
use ring_proto::ResultCode;

use engine::ucx::{AmData, AmMessage, EpKey, RndvData, UcxError, WorkerEvent};

use super::requester::{done, take_reply, Pending, Reply};
use super::rma::DescriptorArrived;
use super::server::{answer_query, serve_request};
use super::{DataPlane, RemoteCompletion, AUX_TOKEN, QUERY_TOKEN, SERVER_TOKEN};

/// A message of ours to send after progress.
pub(super) struct Outgoing {
    pub ep: EpKey,
    pub id: u16,
    pub header: Box<[u8]>,
    pub payload: Vec<u8>,
}

/// An echo request whose payload came by rendezvous: received, then sent back.
pub(super) struct EchoRndv {
    pub ep: EpKey,
    pub req_id: u64,
    pub data: RndvData,
}

/// A reply to our request `req_id` that came by rendezvous: received into the client's
/// response buffer.
pub(super) struct ReplyRndv {
    pub req_id: u64,
    pub data: RndvData,
}

/// A REVOKE received on one of our connections: export (id, key) of the peer on `ep`.
pub(super) struct Revoke {
    pub ep: EpKey,
    pub export: u64,
    pub key: u64,
}

/// A get or put on a peer's export finished (to account against the export).
pub(super) struct RmaDone {
    pub peer: u32,
    pub export: u64,
}

/// A connection that failed: reported by UCX for `ep`, or found by a request to `peer`
/// failing on the wire.
pub(super) enum Failure {
    Endpoint { ep: EpKey, error: UcxError },
    Peer { peer: u32, error: UcxError },
}

/// A needle read a peer asked for on `ep`.
pub(super) struct NeedleAsk {
    pub ep: EpKey,
    pub req: NeedleRequestHeader,
}

/// Work found during progress that needs UCX calls (made after progress returns).
#[derive(Default)]
pub(super) struct Deferred {
    pub outgoing: Vec<Outgoing>,
    pub echo_rndv: Vec<EchoRndv>,
    pub reply_rndv: Vec<ReplyRndv>,
    /// Failed connections (a peer whose requests failed on the wire counts as one).
    pub failed: Vec<Failure>,
    /// Export descriptors that arrived for READ/WRITE requests.
    pub infos: Vec<DescriptorArrived>,
    pub revokes: Vec<Revoke>,
    pub rma_done: Vec<RmaDone>,
    /// Peers whose connection carried an answer (its transports are known now).
    pub answered: Vec<u32>,
    /// Needle reads peers asked us for, answered after progress.
    pub needle_reads: Vec<NeedleAsk>,
    /// Requests completed inside progress. Kept until it returns: a request may hold the last
    /// reference to its session, whose drop unmaps the region, and that must not happen
    /// inside a UCX callback.
    pub retired: Vec<Pending>,
}

impl Deferred {
    /// Completes `p` with `result` from inside progress (see `retired`).
    pub fn complete(&mut self, p: Pending, result: i32, out: &mut Vec<RemoteCompletion>) {
        out.push(done(&p, result));
        self.retired.push(p);
    }
}

impl DataPlane {
    /// Progresses UCX and does the work it found; returns whether anything happened. The
    /// completions it produced wait in [`DataPlane::take_completions`].
    pub fn poll(&mut self) -> bool {
        let max_message = self.settings.max_message;
        let worker_id = self.id;
        let settings = &self.settings;
        let (pending, deferred, out, echo_recvs) = (
            &mut self.pending,
            &mut self.deferred,
            &mut self.out,
            &mut self.echo_recvs,
        );
        let mut echoes_in = Vec::new();
        let any = self.worker.progress(&mut |ev| match ev {
            WorkerEvent::Am(m) => on_message(m, settings, worker_id, max_message, pending, deferred, out),
            WorkerEvent::SendDone { token, result } => {
                tracing::trace!(token, ?result, "send done");
                if token & SERVER_TOKEN != 0 {
                    return; // a message of ours: nothing waits on it
                }
                if token & QUERY_TOKEN != 0 {
                    // An AM_QUERY's send. Once the request was issued, its get/put reports.
                    let id = token & !QUERY_TOKEN;
                    if let Err(e) = result {
                        if pending.get(&id).is_some_and(|p| p.rma_ops == 0) {
                            let p = pending.remove(&id).expect("present");
                            deferred.failed.push(Failure::Peer { peer: p.peer, error: e });
                            deferred.complete(p, ResultCode::PeerFailed as i32, out);
                        }
                    }
                    return;
                }
                let id = token & !AUX_TOKEN;
                if let Some(p) = pending.get_mut(&id).filter(|p| p.rma_ops > 0) {
                    // One of an issued READ/WRITE's operations (get; put or flush).
                    p.rma_ops -= 1;
                    if let Err(e) = result {
                        p.rma_failed = true;
                        deferred.failed.push(Failure::Peer { peer: p.peer, error: e });
                    }
                    if p.rma_ops == 0 {
                        let p = pending.remove(&id).expect("present");
                        let export = p.rma.expect("an issued READ/WRITE").export_id;
                        deferred.rma_done.push(RmaDone { peer: p.peer, export });
                        let r = if p.rma_failed {
                            ResultCode::PeerFailed as i32
                        } else {
                            p.resp_cap as i32
                        };
                        deferred.complete(p, r, out);
                    }
                    return;
                }
                // A request's send: failing, it fails the request; else its reply completes it.
                if let Err(e) = result {
                    if let Some(p) = pending.remove(&id) {
                        deferred.failed.push(Failure::Peer { peer: p.peer, error: e });
                        deferred.complete(p, ResultCode::PeerFailed as i32, out);
                    }
                }
            }
            WorkerEvent::RecvDone { token, result } => {
                if token & SERVER_TOKEN != 0 {
                    if let (Some(r), Ok(_)) = (echo_recvs.remove(&token), result) {
                        echoes_in.push(r);
                    }
                } else if let Some(p) = pending.remove(&token) {
                    let r = result.map_or(ResultCode::PeerFailed as i32, |n| n as i32);
                    deferred.complete(p, r, out);
                }
            }
            WorkerEvent::EndpointFailed { ep, error } => deferred.failed.push(Failure::Endpoint { ep, error }),
        });
        // After progress: UCX let go of the buffers of the receives that completed in it.
        for r in echoes_in {
            self.echo_received(r);
        }
        any | self.after_progress()
    }

    /// Does the work progress left: accepting connections, receives, answers, revocations,
    /// failed connections.
    fn after_progress(&mut self) -> bool {
        let mut any = false;
        for req in self.worker.take_conn_requests() {
            any = true;
            match self.worker.accept(req) {
                Ok(ep) => {
                    tracing::info!("peer engine connected");
                    self.accepted.insert(ep.key(), ep);
                }
                Err(e) => tracing::warn!(error = %e, "could not accept a peer connection"),
            }
        }
        let d = std::mem::take(&mut self.deferred);
        any |= !d.reply_rndv.is_empty() || !d.echo_rndv.is_empty();
        self.receive_replies(d.reply_rndv);
        self.receive_echoes(d.echo_rndv);
        for NeedleAsk { ep, req } in d.needle_reads {
            any = true;
            self.serve_needle(ep, req);
        }
        any |= self.needles_read();
        for peer in d.answered {
            self.log_transports(peer);
        }
        for info in d.infos {
            any = true;
            self.descriptor_arrived(info);
        }
        for RmaDone { peer, export } in d.rma_done {
            self.rma_finished(peer, export);
        }
        for Revoke { ep, export, key } in d.revokes {
            any = true;
            self.revoked_by_peer(ep, export, key);
        }
        for r in self.settings.exports.take_revocations(self.id) {
            any = true;
            for ep in r.eps {
                if self.accepted.contains_key(&ep) || self.conns.values().any(|c| c.ep.key() == ep) {
                    self.send_export_ref(ep, am::REVOKE, r.id, r.key);
                } else {
                    self.settings.exports.connection_gone(self.id, ep);
                }
            }
        }
        let mut outgoing = d.outgoing;
        outgoing.append(&mut self.deferred.outgoing);
        for Outgoing {
            ep,
            id,
            header,
            payload,
        } in outgoing
        {
            any = true;
            self.send_to(ep, id, header, payload, false);
        }
        // Resolved to endpoints first: closing one changes which peer has which endpoint.
        let failed: Vec<(EpKey, UcxError)> = d
            .failed
            .into_iter()
            .filter_map(|f| match f {
                Failure::Endpoint { ep, error } => Some((ep, error)),
                Failure::Peer { peer, error } => self.conns.get(&peer).map(|c| (c.ep.key(), error)),
            })
            .collect();
        for (key, error) in failed {
            any = true;
            self.endpoint_failed(key, error);
        }
        any |= self.drop_released_peers();
        any
    }
}

/// Routes an active message by its id.
fn on_message(
    m: AmMessage<'_>,
    settings: &super::UcxSettings,
    worker_id: usize,
    max_message: usize,
    pending: &mut std::collections::HashMap<u64, super::requester::Pending>,
    d: &mut Deferred,
    out: &mut Vec<RemoteCompletion>,
) {
    tracing::trace!(
        id = m.id,
        header = m.header.len(),
        reply_ep = m.reply_ep.is_some(),
        "active message"
    );
    let malformed = |what: &str| tracing::warn!(id = m.id, len = m.header.len(), "malformed {what} dropped");
    match m.id {
        am::QUERY | am::REVOKE | am::ACK => {
            let (Some(r), Some(ep)) = (ExportRefHeader::parse(m.header), m.reply_ep) else {
                return malformed("export message");
            };
            match m.id {
                am::QUERY => d.outgoing.push(answer_query(settings, r, worker_id, ep)),
                am::REVOKE => d.revokes.push(Revoke {
                    ep,
                    export: r.export,
                    key: r.key,
                }),
                _ => settings.exports.acked(r.export, r.key, worker_id, ep),
            }
        }
        am::NEEDLE_REQUEST => match (NeedleRequestHeader::parse(m.header), m.reply_ep) {
            (Some(req), Some(ep)) => d.needle_reads.push(NeedleAsk { ep, req }),
            _ => malformed("needle request"),
        },
        am::REQUEST => match (RequestHeader::parse(m.header), m.reply_ep) {
            (Some(h), Some(ep)) => serve_request(h, m.data, ep, max_message, d),
            (None, _) => malformed("request"),
            (Some(_), None) => tracing::warn!(id = m.id, "active message without a reply endpoint dropped"),
        },
        am::REPLY | am::NEEDLE_REPLY => {
            let reply = if m.id == am::REPLY {
                ReplyHeader::parse(m.header).map(Reply::Send)
            } else {
                NeedleReplyHeader::parse(m.header).map(|(h, meta)| Reply::Needle(h, meta))
            };
            let Some(reply) = reply else {
                return malformed("reply");
            };
            let req_id = match &reply {
                Reply::Send(h) => h.req_id,
                Reply::Needle(h, _) => h.req_id,
            };
            if let Some(p) = pending.get(&req_id) {
                d.answered.push(p.peer);
            }
            take_reply(reply, m.data, pending, d, out)
        }
        am::INFO => {
            let Some(h) = InfoHeader::parse(m.header) else {
                return malformed("export descriptor header");
            };
            if h.status < 0 {
                // Only codes this protocol defines reach the client.
                let code = ResultCode::from_result(h.status).map_or(ResultCode::PeerFailed as i32, |c| c as i32);
                if let Some(p) = pending.remove(&h.req_id) {
                    d.complete(p, code, out);
                }
            } else if let AmData::Eager(b) = m.data {
                d.infos.push(DescriptorArrived {
                    req_id: h.req_id,
                    body: b.to_vec(),
                    perms: h.perms,
                });
            } else {
                tracing::warn!("export descriptor came by rendezvous; dropped");
            }
        }
        id => tracing::warn!(id, "active message of an unknown id dropped"),
    }
}
