//! One-sided READ/WRITE and the exports they use. The requester fetches an export's
//! descriptor (AM_QUERY → AM_INFO) once per connection, checks bounds and permissions against
//! it, then reads or writes with one-sided get/put straight between the two clients' shared
//! buffers. Exports end with AM_REVOKE, acknowledged (AM_ACK) once no get/put of ours uses
//! the export any more (see `exports.rs`).

use std::sync::Arc;
use std::time::Instant;

use engine::ucx::{EpKey, RemoteKey, Started};
use ring_proto::wire::{am, ExportDescriptor, ExportRefHeader};
use ring_proto::ResultCode;

use super::peers::bump;
use super::requester::{done, range, Pending};
use super::{DataPlane, AUX_TOKEN, QUERY_TOKEN};
use crate::exports::{PERM_READ, PERM_WRITE};
use crate::lookup_throttle::{Verdict, BURST, REFILL_PER_SEC};
use crate::ops::RmaRequest;
use crate::session::SessionShared;

/// A peer's export as this worker knows it (per connection: the remote key is unpacked for
/// one endpoint).
pub(super) struct RemoteExport {
    key: u64,
    /// The connection the remote key was unpacked on (it is valid on no other).
    ep: EpKey,
    base_addr: u64,
    len: u64,
    perms: u32,
    rkey: RemoteKey,
    /// Gets/puts in flight with this key.
    inflight: u32,
    /// The exporter revoked it: acknowledge once `inflight` is 0, then drop the key.
    revoked_on: Option<EpKey>,
}

/// An export descriptor that arrived (AM_INFO) for READ/WRITE `req_id`.
pub(super) struct DescriptorArrived {
    pub req_id: u64,
    pub body: Vec<u8>,
    pub perms: u32,
}

impl DataPlane {
    pub(super) fn start_rma(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        req: RmaRequest,
    ) -> Result<(), ResultCode> {
        let now = Instant::now();
        self.register(session)?;
        self.ensure_conn(req.peer)?;
        let ep = self.conns[&req.peer].ep.key();
        let cached = self
            .remote_exports
            .get(&(req.peer, req.export_id))
            .is_some_and(|r| r.key == req.key && r.ep == ep && r.revoked_on.is_none());
        if !cached {
            admit_lookup(session, now)?;
        }
        let req_id = self.new_req_id();
        let conn = &self.conns[&req.peer];
        bump(&conn.entry.stats.requests);
        if !cached {
            let header = ExportRefHeader {
                req_id,
                export: req.export_id,
                key: req.key,
            }
            .encode();
            let r = self
                .worker
                .am_send(&conn.ep, am::QUERY, Box::new(header), (), true, req_id | QUERY_TOKEN);
            if let Err(e) = r {
                tracing::debug!(peer = req.peer, error = %e, "export query failed to start");
                // Not an answer about the export: the lookup's token goes back.
                session
                    .lookups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .answered(now, false);
                return Err(ResultCode::PeerFailed);
            }
        }
        self.pending.insert(
            req_id,
            Pending {
                session: session.clone(),
                user_data,
                peer: req.peer,
                peer_stats: conn.entry.clone(),
                resp_offset: req.offset,
                resp_cap: req.len,
                started: now,
                deadline: now + self.settings.request_timeout,
                receiving: false,
                rma: Some(req),
                rma_ops: 0,
                rma_failed: false,
                meta_offset: None,
                lookup: !cached,
            },
        );
        if cached {
            self.issue_rma(req_id);
        }
        Ok(())
    }

    /// Exports a range of the session's buffer area: registered with UCX on its own (the
    /// registration holds the session); returns (export id, key).
    pub(super) fn export(
        &mut self,
        session: &Arc<SessionShared>,
        offset: usize,
        len: usize,
        perms: u32,
    ) -> Result<(u64, u64), ResultCode> {
        let ctx = self.settings.context().map_err(|_| ResultCode::Internal)?;
        let reg = ctx.register(range(session, offset, len)?).map_err(|e| {
            tracing::error!(session = session.id, error = %e, "cannot register an export");
            ResultCode::Internal
        })?;
        let rkey = reg.pack_rkey().map_err(|_| ResultCode::Internal)?;
        let (id, key) = self
            .settings
            .exports
            .add(session.clone(), len, perms, reg, rkey)
            .map_err(|e| {
                tracing::error!(session = session.id, error = %e, "no random bytes for an export id and key");
                ResultCode::Internal
            })?;
        tracing::debug!(session = session.id, export = id, offset, len, perms, "memory exported");
        Ok((id, key))
    }

    /// An export descriptor arrived for READ/WRITE `req_id`: cache it, then run the request.
    pub(super) fn descriptor_arrived(&mut self, info: DescriptorArrived) {
        let DescriptorArrived { req_id, body, perms } = info;
        tracing::trace!(
            req_id,
            len = body.len(),
            perms,
            known = self.pending.contains_key(&req_id),
            "export descriptor arrived"
        );
        let Some(p) = self.pending.get(&req_id) else { return };
        let (peer, rma) = (p.peer, p.rma.expect("descriptors are asked for by READ/WRITE"));
        // The connection is up and answering: say which transports it took (once), as for a
        // reply (a connection may carry only READ/WRITE).
        self.log_transports(peer);
        let Some(ExportDescriptor { base_addr, len, rkey }) = ExportDescriptor::parse(&body) else {
            self.fail(req_id, ResultCode::PeerFailed);
            return;
        };
        let Some(conn) = self.conns.get(&peer) else {
            self.fail(req_id, ResultCode::PeerFailed);
            return;
        };
        let ep = conn.ep.key();
        let k = (peer, rma.export_id);
        let current = self.remote_exports.get(&k);
        let same = current.is_some_and(|r| {
            (r.ep, r.key, r.base_addr, r.len, r.perms) == (ep, rma.key, base_addr, len, perms) && r.revoked_on.is_none()
        });
        if !same {
            // The descriptor replaces what we knew, unless gets/puts still use the old key: a
            // live export does not change.
            if current.is_some_and(|r| r.inflight > 0) {
                tracing::warn!(peer, "export descriptor changed while in use; request failed");
                self.fail(req_id, ResultCode::PeerFailed);
                return;
            }
            let remote = base_addr..base_addr.saturating_add(len);
            match self.worker.unpack_rkey(&conn.ep, rkey, remote) {
                Ok(rkey) => {
                    self.remote_exports.insert(
                        k,
                        RemoteExport {
                            key: rma.key,
                            ep,
                            base_addr,
                            len,
                            perms,
                            rkey,
                            inflight: 0,
                            revoked_on: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(peer, error = %e, "peer sent an unusable remote key");
                    self.fail(req_id, ResultCode::PeerFailed);
                    return;
                }
            }
        }
        self.issue_rma(req_id);
    }

    /// Completes pending request `req_id` with an error.
    fn fail(&mut self, req_id: u64, code: ResultCode) {
        if let Some(p) = self.pending.remove(&req_id) {
            self.out.push(done(&p, code as i32));
        }
    }

    /// Runs READ/WRITE `req_id` against its cached export descriptor.
    fn issue_rma(&mut self, req_id: u64) {
        let p = self.pending.get_mut(&req_id).expect("pending");
        let rma = p.rma.expect("rma request");
        let ep = self.conns.get(&p.peer).map(|c| c.ep.key());
        let check = match self.remote_exports.get(&(p.peer, rma.export_id)) {
            None => Err(ResultCode::NotExported),
            Some(r) if r.key != rma.key || r.revoked_on.is_some() => Err(ResultCode::NotExported),
            Some(r) if Some(r.ep) != ep => Err(ResultCode::PeerFailed),
            Some(r) if r.perms & if rma.write { PERM_WRITE } else { PERM_READ } == 0 => {
                Err(ResultCode::PermissionDenied)
            }
            // The export's base address comes from the peer: the end must not wrap either.
            Some(r)
                if rma
                    .remote_offset
                    .checked_add(rma.len as u64)
                    .is_none_or(|end| end > r.len)
                    || r.base_addr.checked_add(rma.remote_offset).is_none() =>
            {
                Err(ResultCode::OutOfBounds)
            }
            Some(_) => Ok(()),
        };
        // The local range (validated) holds the session until the operation is done.
        let local = check.and_then(|()| range(&p.session, rma.offset, rma.len));
        let local = match local {
            Ok(l) => l,
            Err(code) => {
                self.fail(req_id, code);
                return;
            }
        };
        let r = self.remote_exports.get_mut(&(p.peer, rma.export_id)).expect("checked");
        let ep = &self.conns.get(&p.peer).expect("descriptor implies a connection").ep;
        let remote = r.base_addr.wrapping_add(rma.remote_offset); // checked above: no wrap
                                                                  // Each operation that did not finish at once is one the request waits for.
        let (ops, failed) = if rma.write {
            // A put completes locally; the flush after it completes when the bytes are at the
            // peer. The WRITE is done when both are (a put running when its flush cannot
            // start still writes to the exporter's memory).
            let put = self.worker.put(ep, local, remote, &r.rkey, req_id | AUX_TOKEN);
            let flush = match put {
                Ok(_) => self.worker.flush(ep, req_id),
                Err(e) => Err(e),
            };
            tracing::trace!(req_id, len = rma.len, remote, ?put, ?flush, "WRITE started");
            (
                u8::from(put == Ok(Started::InProgress)) + u8::from(flush == Ok(Started::InProgress)),
                put.err().or(flush.err()),
            )
        } else {
            let get = self.worker.get(ep, local, remote, &r.rkey, req_id);
            tracing::trace!(req_id, len = rma.len, remote, ?get, "READ started");
            (u8::from(get == Ok(Started::InProgress)), get.err())
        };
        if let Some(e) = failed {
            tracing::debug!(peer = p.peer, error = %e, "one-sided operation failed to start");
        }
        if ops > 0 {
            r.inflight += 1;
            p.receiving = true;
            p.rma_ops = ops;
            p.rma_failed = failed.is_some();
        } else if failed.is_some() {
            self.fail(req_id, ResultCode::PeerFailed);
        } else {
            let p = self.pending.remove(&req_id).expect("present");
            self.out.push(done(&p, rma.len as i32));
        }
    }

    /// A get/put on export `export` of `peer` finished (successfully or not).
    pub(super) fn rma_finished(&mut self, peer: u32, export: u64) {
        if let Some(r) = self.remote_exports.get_mut(&(peer, export)) {
            r.inflight = r.inflight.saturating_sub(1);
        }
        self.maybe_ack(peer, export);
    }

    /// The exporter told us on `ep` that export (id, key) is gone.
    pub(super) fn revoked_by_peer(&mut self, ep: EpKey, export: u64, key: u64) {
        let peer = self.conns.iter().find(|(_, c)| c.ep.key() == ep).map(|(&h, _)| h);
        match peer.and_then(|h| self.remote_exports.get_mut(&(h, export)).map(|r| (h, r))) {
            Some((h, r)) if r.key == key && r.ep == ep => {
                r.revoked_on = Some(ep);
                self.maybe_ack(h, export);
            }
            // Not cached (or an older key): nothing of ours uses it.
            _ => self.send_export_ref(ep, am::ACK, export, key),
        }
    }

    /// Acknowledges a revoked export once no get/put on it is in flight, dropping its key.
    fn maybe_ack(&mut self, peer: u32, export: u64) {
        let ready = self
            .remote_exports
            .get(&(peer, export))
            .is_some_and(|r| r.revoked_on.is_some() && r.inflight == 0);
        if ready {
            let r = self.remote_exports.remove(&(peer, export)).expect("checked");
            let ep = r.revoked_on.expect("checked");
            self.send_export_ref(ep, am::ACK, export, r.key);
        }
    }
}

/// May this session look up an export at a peer now (SPEC.md §14: failed lookups are
/// throttled per session)? Refusals are logged at most once per session every few seconds.
fn admit_lookup(session: &SessionShared, now: Instant) -> Result<(), ResultCode> {
    let verdict = session.lookups.lock().unwrap_or_else(|p| p.into_inner()).check(now);
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Refuse { log } => {
            if let Some(refused) = log {
                tracing::warn!(
                    session = session.id,
                    client_pid = session.client_pid,
                    refused,
                    burst = BURST,
                    per_second = REFILL_PER_SEC,
                    "session throttled: too many READ/WRITEs named exports that do not exist (wrong id or key)"
                );
            }
            Err(ResultCode::Throttled)
        }
    }
}
