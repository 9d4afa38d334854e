//! READ_NEEDLE of a volume this engine serves itself: when the peer a request names is this
//! engine's own listener (a mount, filer or S3 gateway on a volume server's host, reading
//! through the engine beside it), the needle goes from the volume's mapping straight into
//! the session's buffer: one copy on the worker, where the round trip through UCX to itself
//! costs two (into the transport and out of it) and both hops of the active messages
//! (bench/README.md, "Large needles over tcp and shared memory"). `ucx.local-reads = false`
//! turns it off.
//!
//! Everything else is as a peer's read: the read JWT is checked, reads that could wait for a
//! disk go to the I/O threads (their answer comes back through the worker's hand-back queue
//! as [`LocalDone`]), the answer is the same metadata and data in the same places, and the
//! peer's request counter counts it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ring_proto::needle::{NEEDLE_META_LEN, NEEDLE_META_MAX};
use ring_proto::ResultCode;

use super::{server, DataPlane, IoDone, PeerEntry, RemoteCompletion};
use crate::ops::NeedleRequest;
use crate::seaweed::{NeedleQuery, NeedleRead, Read};
use crate::session::{SessionShared, Submitted};

/// A local needle read an I/O thread finished, on its way back to the worker that posts it.
pub(super) struct LocalDone {
    session: Arc<SessionShared>,
    user_data: u64,
    peer: Arc<PeerEntry>,
    started: Instant,
    /// Buffer offset of the metadata (data at `+ NEEDLE_META_LEN`).
    offset: usize,
    result: Result<NeedleRead, ResultCode>,
}

/// Whether a peer at `peer` is the listener bound at `bound`: the same port, and the same
/// address, or any address of this host when the listener took them all.
fn is_this_engine(bound: SocketAddr, peer: SocketAddr) -> bool {
    if peer.port() != bound.port() {
        return false;
    }
    match bound.ip() {
        ip if ip.is_unspecified() => peer.ip().is_loopback() || is_local(peer.ip()),
        ip => ip == peer.ip(),
    }
}

/// Whether `ip` is an address of this host (a socket can be bound to it).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

impl DataPlane {
    /// The peer `handle` names, when it is this engine itself and local reads are on.
    pub(super) fn this_engine(&self, handle: u32) -> Option<Arc<PeerEntry>> {
        if !self.settings.local_reads {
            return None;
        }
        let bound = *self.settings.bound.get()?;
        let entry = self.settings.peers.get(handle)?;
        let local = *entry.this_engine.get_or_init(|| {
            let local = is_this_engine(bound, entry.addr);
            if local {
                tracing::info!(peer = handle, address = %entry.addr, "peer is this engine: its needle reads skip UCX (ucx.local-reads)");
            }
            local
        });
        local.then_some(entry)
    }

    /// Serves a READ_NEEDLE naming this engine from its own volumes (module docs).
    pub(super) fn read_locally(
        &mut self,
        session: &Arc<SessionShared>,
        user_data: u64,
        r: NeedleRequest,
        peer: &Arc<PeerEntry>,
    ) -> Submitted {
        let started = Instant::now();
        peer.stats.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(store) = self.settings.volumes.clone() else {
            return Submitted::Now(ResultCode::NoSuchVolume as i32);
        };
        // A copy (the client may be writing it): jwt_len <= NEEDLE_META_LEN, validated.
        let Ok(jwt) = session.region.buf().read_vec(r.offset, r.jwt_len) else {
            return Submitted::Now(ResultCode::Internal as i32);
        };
        let q = NeedleQuery::from(&r);
        match server::read_polling(&store, &jwt, &q) {
            Ok(Read::Ready(n)) => Submitted::Now(timed(peer, started, deliver(session, r.offset, Ok(n)))),
            Err(code) => Submitted::Now(code as i32),
            Ok(Read::NeedsIo(why)) => {
                let (session, offset, peer) = (session.clone(), r.offset, peer.clone());
                let to_io = self.read_on_io(&store, q, why, move |_, result| {
                    IoDone::Local(LocalDone {
                        session,
                        user_data,
                        peer,
                        started,
                        offset,
                        result,
                    })
                });
                match to_io {
                    Ok(()) => Submitted::Later,
                    Err(code) => Submitted::Now(code as i32),
                }
            }
        }
    }

    /// An I/O thread finished a local read: write it into the session's buffer, post it.
    pub(super) fn local_read_done(&mut self, d: LocalDone) {
        let result = timed(&d.peer, d.started, deliver(&d.session, d.offset, d.result));
        self.out.push(RemoteCompletion {
            session: d.session.id,
            user_data: d.user_data,
            result,
        });
    }
}

/// The store's query for a session's request (`From<&NeedleRequestHeader>` in server.rs: a
/// peer's).
impl From<&NeedleRequest> for NeedleQuery {
    fn from(r: &NeedleRequest) -> Self {
        NeedleQuery {
            volume: r.volume,
            needle: r.needle,
            cookie: r.cookie,
            range_offset: r.range_offset,
            max_len: r.max_len,
            ranged: r.ranged,
        }
    }
}

/// Records a successful read's latency with its peer, as a remote one's is.
fn timed(peer: &PeerEntry, started: Instant, result: i32) -> i32 {
    if result >= 0 {
        peer.stats.latency.record(started.elapsed().as_nanos() as u64);
    }
    result
}

/// Writes a read's metadata at `offset` and its data after the metadata area, as a peer's
/// answer lands (SPEC.md §15); returns the CQE result: the data bytes, or the error.
fn deliver(session: &SessionShared, offset: usize, read: Result<NeedleRead, ResultCode>) -> i32 {
    let n = match read {
        Ok(n) => n,
        Err(code) => return code as i32,
    };
    let mut meta = Vec::with_capacity(n.meta.encoded_len());
    n.meta.encode_into(&mut meta);
    let buf = session.region.buf();
    // The store kept the data within max_len (<= the request's data capacity, validated),
    // and the metadata within NEEDLE_META_MAX (<= NEEDLE_META_LEN); the area checks again.
    let written = meta.len() <= NEEDLE_META_MAX
        && buf.copy_in(offset, &meta).is_ok()
        && buf.copy_in(offset + NEEDLE_META_LEN, n.data()).is_ok();
    if written {
        n.len() as i32
    } else {
        tracing::error!(
            session = session.id,
            offset,
            len = n.len(),
            "local needle read does not fit its buffer"
        );
        ResultCode::Internal as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_engine_is_its_own_port_on_its_own_addresses() {
        let any: SocketAddr = "0.0.0.0:13337".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:13337".parse().unwrap();
        assert!(is_this_engine(any, lo));
        assert!(is_this_engine(any, "[::1]:13337".parse().unwrap()));
        assert!(!is_this_engine(any, "127.0.0.1:13338".parse().unwrap()));
        // 192.0.2.0/24 is documentation space: no host has it.
        assert!(!is_this_engine(any, "192.0.2.7:13337".parse().unwrap()));
        assert!(is_this_engine(lo, lo));
        assert!(!is_this_engine(lo, "127.0.0.2:13337".parse().unwrap()));
    }
}
