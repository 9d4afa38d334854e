//! Memory clients export to peer engines for one-sided READ/WRITE.
//!
//! An export is a range of one session's buffer area, registered with UCX on its own (so on
//! RDMA the hardware enforces its bounds) and known to peers by (id, key): both are 64 bits
//! from the operating system's random source, drawn afresh for every export. So a peer cannot
//! guess exports it was not told about, and an (id, key) from an earlier engine process never
//! names an export of a later one. A wrong id and a wrong key get the same answer.
//!
//! Revocation. Over transports where UCX emulates one-sided operations in software (tcp,
//! some shared-memory paths), the target side copies to or from the address a peer names
//! without checking any registration. So an export's memory must stay mapped (and its
//! addresses unused by anything else) until every peer that fetched its descriptor has
//! promised not to use it again. When an export ends (UNEXPORT, or its session ends) it is
//! marked revoked, a REVOKE goes to every peer connection that queried it, and the entry, which
//! holds the session (hence its mapping) alive, is dropped once each of them acknowledged or
//! its connection went away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::ucx::{EpKey, Registration};
use ring_proto::ResultCode;

use crate::session::SessionShared;

/// Export permission bits (SQE `aux` of EXPORT).
pub const PERM_READ: u32 = 1;
pub const PERM_WRITE: u32 = 2;

struct Export {
    // Field order matters: the registration is dropped before the session (whose last Arc may
    // unmap the region).
    _registration: Registration,
    session: Arc<SessionShared>,
    key: u64,
    len: usize,
    perms: u32,
    base_addr: u64,
    rkey: Vec<u8>,
    /// Peer connections (worker, endpoint) that fetched the descriptor.
    queriers: Vec<(usize, EpKey)>,
    revoked: bool,
    /// REVOKE already sent to these queriers.
    revoke_sent: bool,
}

/// What a peer needs to read or write an export.
pub struct Descriptor {
    pub base_addr: u64,
    pub len: u64,
    pub perms: u32,
    pub rkey: Vec<u8>,
}

/// Revocation work for one worker: tell these endpoints that export (id, key) is gone.
pub struct Revocation {
    pub id: u64,
    pub key: u64,
    pub eps: Vec<EpKey>,
}

#[derive(Default)]
pub struct ExportTable {
    inner: Mutex<Inner>,
    /// Set when some revoked export still has queriers to notify: workers look at the table
    /// only then.
    revocations_pending: AtomicBool,
    /// Peers' queries answered not-exported (metrics; a counter, no ordering needed).
    failed_queries: AtomicU64,
}

#[derive(Default)]
struct Inner {
    exports: HashMap<u64, Export>,
}

impl ExportTable {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an export of `session`'s memory that `registration` holds (`len` bytes of its
    /// buffer area); returns (id, key), or an error when the operating system gives no random
    /// bytes (never a guessable key).
    pub fn add(
        &self,
        session: Arc<SessionShared>,
        len: usize,
        perms: u32,
        registration: Registration,
        rkey: Vec<u8>,
    ) -> Result<(u64, u64), getrandom::Error> {
        // The registration is of exactly this range: its address is the export's base.
        let base_addr = registration.addr();
        let key = getrandom::u64()?;
        let mut inner = self.inner();
        // 0 means "none" to clients; a collision among live exports is astronomically
        // unlikely, but costs only another draw.
        let id = loop {
            let id = getrandom::u64()?;
            if id != 0 && !inner.exports.contains_key(&id) {
                break id;
            }
        };
        inner.exports.insert(
            id,
            Export {
                _registration: registration,
                session,
                key,
                len,
                perms,
                base_addr,
                rkey,
                queriers: Vec::new(),
                revoked: false,
                revoke_sent: false,
            },
        );
        Ok((id, key))
    }

    /// A peer asks for an export's descriptor on connection (worker, ep). A missing id, a
    /// wrong key and a revoked export are one answer (not-exported), so that an answer tells
    /// nothing about which ids exist; failures are counted in `failed_queries`.
    pub fn query(&self, id: u64, key: u64, worker: usize, ep: EpKey) -> Result<Descriptor, ResultCode> {
        let mut inner = self.inner();
        let Some(e) = inner.exports.get_mut(&id).filter(|e| e.key == key && !e.revoked) else {
            self.failed_queries.fetch_add(1, Ordering::Relaxed);
            return Err(ResultCode::NotExported);
        };
        if !e.queriers.contains(&(worker, ep)) {
            e.queriers.push((worker, ep));
        }
        Ok(Descriptor {
            base_addr: e.base_addr,
            len: e.len as u64,
            perms: e.perms,
            rkey: e.rkey.clone(),
        })
    }

    /// Ends one export of `session` (UNEXPORT).
    pub fn unexport(&self, session: u32, id: u64) -> Result<(), ResultCode> {
        let mut inner = self.inner();
        match inner.exports.get(&id) {
            Some(e) if e.session.id == session && !e.revoked => {}
            _ => return Err(ResultCode::NotExported),
        }
        self.revoke_where(&mut inner, |id2, _| id2 == id);
        Ok(())
    }

    /// Ends every export of a session (the session is closing).
    pub fn revoke_session(&self, session: u32) {
        let mut inner = self.inner();
        self.revoke_where(&mut inner, |_, e| e.session.id == session);
    }

    fn revoke_where(&self, inner: &mut Inner, pick: impl Fn(u64, &Export) -> bool) {
        let ids: Vec<u64> = inner
            .exports
            .iter()
            .filter(|(&id, e)| pick(id, e))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let e = inner.exports.get_mut(&id).expect("listed");
            e.revoked = true;
            if e.queriers.is_empty() {
                inner.exports.remove(&id);
            } else {
                self.revocations_pending.store(true, Ordering::Release);
            }
        }
    }

    /// REVOKE messages worker `worker` must send now (each export once).
    pub fn take_revocations(&self, worker: usize) -> Vec<Revocation> {
        if !self.revocations_pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut inner = self.inner();
        let mut out = Vec::new();
        let mut still_pending = false;
        for (&id, e) in inner.exports.iter_mut().filter(|(_, e)| e.revoked && !e.revoke_sent) {
            let eps: Vec<EpKey> = e
                .queriers
                .iter()
                .filter(|(w, _)| *w == worker)
                .map(|(_, ep)| *ep)
                .collect();
            if eps.len() == e.queriers.len() {
                e.revoke_sent = true;
            } else {
                still_pending = true;
            }
            if !eps.is_empty() {
                out.push(Revocation { id, key: e.key, eps });
            }
        }
        if !still_pending {
            self.revocations_pending.store(false, Ordering::Release);
        }
        out
    }

    /// A peer acknowledged a REVOKE (or its connection is gone): forget it as a querier.
    pub fn acked(&self, id: u64, key: u64, worker: usize, ep: EpKey) {
        let mut inner = self.inner();
        if let Some(e) = inner.exports.get_mut(&id).filter(|e| e.key == key) {
            e.queriers.retain(|q| *q != (worker, ep));
            if e.revoked && e.queriers.is_empty() {
                inner.exports.remove(&id);
            }
        }
    }

    /// Exports held: live ones and revoked ones waiting for acknowledgements.
    pub fn len(&self) -> usize {
        self.inner().exports.len()
    }

    /// Peers' export queries answered not-exported since the engine started.
    pub fn failed_queries(&self) -> u64 {
        self.failed_queries.load(Ordering::Relaxed)
    }

    /// A peer connection went away: it can no longer touch any export.
    pub fn connection_gone(&self, worker: usize, ep: EpKey) {
        let mut inner = self.inner();
        inner.exports.retain(|_, e| {
            e.queriers.retain(|q| *q != (worker, ep));
            !(e.revoked && e.queriers.is_empty())
        });
    }
}
