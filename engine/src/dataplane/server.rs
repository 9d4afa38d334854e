//! The serving side: what this engine answers to peers. Every request is validated on
//! arrival. The echo service (AM_REQUEST → AM_REPLY), needle reads from the volume store
//! (AM_NEEDLE_REQUEST → AM_NEEDLE_REPLY, the data straight from the volume file's mapping;
//! reads that could wait for a disk done by the I/O threads, `io_pool.rs`),
//! and export queries (AM_QUERY → AM_INFO).

use std::sync::Arc;

use engine::ucx::{AmData, AmProtocol, ArcBytes, EpKey, ReadMem, RecvBuf, Started};
use ring_proto::entry::service;
use ring_proto::wire::{
    am, ExportDescriptor, ExportRefHeader, InfoHeader, NeedleReplyHeader, NeedleRequestHeader, ReplyHeader,
    RequestHeader, HEADER_LEN,
};
use ring_proto::ResultCode;

use super::dispatch::{Deferred, EchoRndv, Outgoing};
use super::{DataPlane, IoDone, UcxSettings};
use crate::seaweed::{NeedleQuery, NeedleRead, NeedsIo, Read, VolumeStore};

/// An I/O thread's read: the needle, or the answer's code. A panic in the store (a bug)
/// answers `internal` rather than leave the request without its answer.
pub(super) fn read_blocking(store: &VolumeStore, q: &NeedleQuery) -> Result<NeedleRead, ResultCode> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.read_blocking(q))) {
        Ok(r) => r.map_err(|e| e.code()),
        Err(_) => {
            tracing::error!(
                volume = q.volume,
                needle = q.needle,
                "needle read panicked on an I/O thread"
            );
            Err(ResultCode::Internal)
        }
    }
}

/// The read JWT first (the volume server checks it before it looks at the volume), then a
/// read that never waits for a disk: `Read::NeedsIo` says the rest must go to an I/O thread
/// ([`DataPlane::read_on_io`]).
pub(super) fn read_polling(store: &VolumeStore, jwt: &[u8], q: &NeedleQuery) -> Result<Read, ResultCode> {
    if let Err(e) = store.check_read_jwt(jwt, q.volume, q.needle, q.cookie) {
        tracing::debug!(volume = q.volume, needle = q.needle, error = %e, "needle read refused: read JWT");
        return Err(e.code());
    }
    store.read_polling(q).map_err(|e| e.code())
}

/// The store's query for a peer's request (`From<&NeedleRequest>` in local.rs: a session's).
impl From<&NeedleRequestHeader> for NeedleQuery {
    fn from(w: &NeedleRequestHeader) -> Self {
        NeedleQuery {
            volume: w.volume,
            needle: w.needle,
            cookie: w.cookie,
            range_offset: w.range_offset,
            max_len: w.max_len,
            ranged: w.ranged,
        }
    }
}

/// A needle read an I/O thread finished, on its way back to the worker that answers it.
pub(super) struct NeedleDone {
    ep: EpKey,
    req_id: u64,
    q: NeedleQuery,
    result: Result<NeedleRead, ResultCode>,
}

/// An echo payload being received by rendezvous, answered once it is in.
pub(super) struct EchoRecv {
    pub ep: EpKey,
    pub req_id: u64,
    pub buf: RecvBuf,
}

/// A successful REPLY carrying `payload`.
fn echo_reply(ep: EpKey, req_id: u64, payload: Vec<u8>) -> Outgoing {
    Outgoing {
        ep,
        id: am::REPLY,
        header: Box::new(ReplyHeader { req_id, status: 0 }.encode()),
        payload,
    }
}

/// Validates an incoming REQUEST and answers it (the echo service): at once when it came
/// eagerly, after receiving its payload when it came by rendezvous.
pub(super) fn serve_request(h: RequestHeader, data: AmData<'_>, ep: EpKey, max_message: usize, d: &mut Deferred) {
    let len = match &data {
        AmData::Eager(b) => b.len(),
        AmData::Rndv(r) => r.len,
    };
    let error = if h.service != service::ECHO {
        Some(ResultCode::UnknownService)
    } else if len > h.resp_cap as usize || len > max_message {
        Some(ResultCode::ResponseTooLarge)
    } else {
        None
    };
    match (error, data) {
        (Some(code), _) => d.outgoing.push(Outgoing {
            ep,
            id: am::REPLY,
            header: Box::new(
                ReplyHeader {
                    req_id: h.req_id,
                    status: code as i32,
                }
                .encode(),
            ),
            payload: Vec::new(),
        }),
        (None, AmData::Eager(b)) => d.outgoing.push(echo_reply(ep, h.req_id, b.to_vec())),
        (None, AmData::Rndv(data)) => d.echo_rndv.push(EchoRndv {
            ep,
            req_id: h.req_id,
            data,
        }),
    }
}

/// Exporting side: a peer's QUERY for export (id, key) on connection (worker, ep), answered
/// with INFO: the descriptor, or not-exported whether the id is unknown or the key wrong.
pub(super) fn answer_query(settings: &UcxSettings, r: ExportRefHeader, worker: usize, ep: EpKey) -> Outgoing {
    let (header, payload) = match settings.exports.query(r.export, r.key, worker, ep) {
        Ok(d) => {
            let body = ExportDescriptor {
                base_addr: d.base_addr,
                len: d.len,
                rkey: &d.rkey,
            }
            .encode();
            let h = InfoHeader {
                req_id: r.req_id,
                status: 0,
                perms: d.perms,
            };
            (h, body)
        }
        Err(code) => {
            let h = InfoHeader {
                req_id: r.req_id,
                status: code as i32,
                perms: 0,
            };
            (h, Vec::new())
        }
    };
    Outgoing {
        ep,
        id: am::INFO,
        header: Box::new(header.encode()),
        payload,
    }
}

impl DataPlane {
    /// Receives rendezvous echo payloads; each is answered once it is in.
    pub(super) fn receive_echoes(&mut self, echoes: Vec<EchoRndv>) {
        for EchoRndv { ep, req_id, data } in echoes {
            let buf = RecvBuf::new(data.len);
            let token = self.server_token();
            match self.worker.recv_rndv_into(data, &buf, token) {
                Ok(Started::InProgress) => {
                    self.echo_recvs.insert(token, EchoRecv { ep, req_id, buf });
                }
                Ok(Started::Done) => self.echo_received(EchoRecv { ep, req_id, buf }),
                Err(e) => tracing::debug!(error = %e, "echo receive failed"),
            }
        }
    }

    /// An echo payload is in: send it back.
    pub(super) fn echo_received(&mut self, r: EchoRecv) {
        match r.buf.into_vec() {
            Some(payload) => self.deferred.outgoing.push(echo_reply(r.ep, r.req_id, payload)),
            None => tracing::error!("echo buffer still held by UCX after its receive; dropped"),
        }
    }

    /// Answers a peer's needle read from the volume store, the data straight from the volume
    /// file's mapping (kept mapped until UCX is done with it). A read that could wait for a
    /// disk goes to an I/O thread and is answered when it comes back ([`Self::needles_read`]).
    pub(super) fn serve_needle(&mut self, ep: EpKey, w: NeedleRequestHeader) {
        let q = NeedleQuery::from(&w);
        let read = match &self.settings.volumes {
            None => Err(ResultCode::NoSuchVolume),
            Some(store) => match read_polling(store, &w.jwt, &q) {
                Ok(Read::Ready(n)) => Ok(n),
                Ok(Read::NeedsIo(why)) => {
                    let req_id = w.req_id;
                    let to_io = self.read_on_io(store, q, why, move |q, result| {
                        IoDone::Peer(NeedleDone { ep, req_id, q, result })
                    });
                    match to_io {
                        Ok(()) => return,
                        Err(code) => Err(code),
                    }
                }
                Err(code) => Err(code),
            },
        };
        self.answer_needle(ep, w.req_id, &q, read);
    }

    /// Hands a read that could wait for a disk (`why`) to the I/O threads: `done` turns the
    /// blocking read's result into what comes back through this worker's hand-back queue
    /// ([`Self::needles_read`] answers it). A full queue refuses the read (`throttled`,
    /// counted with the volume's refusals): the caller answers that itself.
    pub(super) fn read_on_io(
        &self,
        store: &Arc<VolumeStore>,
        q: NeedleQuery,
        why: NeedsIo,
        done: impl FnOnce(NeedleQuery, Result<NeedleRead, ResultCode>) -> IoDone + Send + 'static,
    ) -> Result<(), ResultCode> {
        tracing::trace!(
            volume = q.volume,
            needle = q.needle,
            ?why,
            "needle read handed to an I/O thread"
        );
        let back = self.io_back.clone();
        let store2 = store.clone();
        let task = Box::new(move || {
            let result = read_blocking(&store2, &q);
            back.push(done(q, result));
        });
        self.settings.io.submit(task).map_err(|e| {
            tracing::debug!(volume = q.volume, needle = q.needle, error = %e, "needle read refused: I/O queue full");
            store.count_refused(q.volume);
            ResultCode::Throttled
        })
    }

    /// Answers the reads the I/O threads finished.
    pub(super) fn needles_read(&mut self) -> bool {
        let mut done = std::mem::take(&mut self.io_done);
        self.io_back.take(&mut done);
        let any = !done.is_empty();
        for d in done.drain(..) {
            match d {
                IoDone::Peer(d) => self.answer_needle(d.ep, d.req_id, &d.q, d.result),
                IoDone::Local(d) => self.local_read_done(d),
            }
        }
        self.io_done = done;
        any
    }

    fn answer_needle(&mut self, ep: EpKey, req_id: u64, q: &NeedleQuery, read: Result<NeedleRead, ResultCode>) {
        match read {
            Ok(n) => {
                let mut header = Vec::with_capacity(HEADER_LEN + n.meta.encoded_len());
                header.extend_from_slice(&[0u8; HEADER_LEN]);
                n.meta.encode_into(&mut header);
                let h = NeedleReplyHeader {
                    req_id,
                    status: 0,
                    meta_len: (header.len() - HEADER_LEN) as u32,
                };
                header[..HEADER_LEN].copy_from_slice(&h.encode());
                let protocol = match self.settings.needle_rendezvous_above {
                    Some(above) if n.len() > above => AmProtocol::Rendezvous,
                    _ => AmProtocol::Auto,
                };
                let data = ArcBytes::new(Arc::new(n), |n| n.data());
                self.send_to_by(ep, am::NEEDLE_REPLY, header.into_boxed_slice(), data, false, protocol);
            }
            Err(code) => {
                tracing::debug!(volume = q.volume, needle = q.needle, %code, "needle read refused");
                let h = NeedleReplyHeader {
                    req_id,
                    status: code as i32,
                    meta_len: 0,
                };
                self.send_to(ep, am::NEEDLE_REPLY, Box::new(h.encode()), (), false);
            }
        }
    }

    /// Sends an export message of ours (REVOKE, ACK) on endpoint `ep`.
    pub(super) fn send_export_ref(&mut self, ep: EpKey, id: u16, export: u64, key: u64) {
        let header = ExportRefHeader { req_id: 0, export, key }.encode();
        self.send_to(ep, id, Box::new(header), (), true);
    }

    /// Sends a message of ours (reply, descriptor, revoke, ack) on endpoint `ep_key`; the
    /// worker keeps header and payload until UCX is done with them.
    pub(super) fn send_to(&mut self, ep_key: EpKey, id: u16, header: Box<[u8]>, payload: impl ReadMem, reply: bool) {
        self.send_to_by(ep_key, id, header, payload, reply, AmProtocol::Auto)
    }

    /// [`Self::send_to`], the payload sent by `protocol`.
    fn send_to_by(
        &mut self,
        ep_key: EpKey,
        id: u16,
        header: Box<[u8]>,
        payload: impl ReadMem,
        reply: bool,
        protocol: AmProtocol,
    ) {
        let token = self.server_token();
        let ep = self
            .accepted
            .get(&ep_key)
            .or_else(|| self.conns.values().map(|c| &c.ep).find(|e| e.key() == ep_key));
        let Some(ep) = ep else {
            tracing::debug!(id, "endpoint gone; message dropped");
            return;
        };
        let len = payload.len();
        let r = self.worker.am_send_by(ep, id, header, payload, reply, token, protocol);
        tracing::trace!(id, len, ?r, "message sent");
        if let Err(e) = r {
            tracing::debug!(id, error = %e, "message send failed");
        }
    }
}
