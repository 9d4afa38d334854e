//! The remote half of the SPEC-only client (`spec_client`): ConnectPeer (§2) and the export
//! entries (§4, §14), from the SPEC text alone like the rest of it.

use std::time::Duration;

use crate::spec_client::{kind, packet, Session, CONTROL_VERSION};

// §4 opcodes.
pub const OP_EXPORT: u64 = 4;
pub const OP_READ: u64 = 6;
pub const OP_WRITE: u64 = 7;
// §4 result codes.
pub const NOT_EXPORTED: i32 = -11;
pub const THROTTLED: i32 = -19;
// §2 error codes.
pub const TOO_MANY_PEERS: u32 = 8;

/// ConnectPeer (§2 kind 8: `0 n u32 | 4 addr`): the handle, or the Error's (code, message).
pub fn connect_peer(s: &Session, addr: &str) -> Result<u32, (u32, String)> {
    let mut p = (addr.len() as u32).to_le_bytes().to_vec();
    p.extend_from_slice(addr.as_bytes());
    s.conn
        .send(&packet(CONTROL_VERSION, kind::CONNECT_PEER, &p), &[])
        .expect("send ConnectPeer");
    loop {
        let reply = s
            .conn
            .recv(Duration::from_secs(30))
            .expect("ConnectPeer answered")
            .expect("no EOF after ConnectPeer");
        if let Some(e) = reply.error() {
            return Err(e);
        }
        if reply.kind() == kind::PEER_CONNECTED {
            return Ok(u32::from_le_bytes(reply.payload()[0..4].try_into().unwrap()));
        }
    }
}

/// A READ or WRITE entry (§4 words, §14 fields): `buf_len` bytes at `buf_offset`, offset
/// `remote` of export (`id`, `key`) at `peer`.
pub fn rma(
    write: bool,
    user_data: u64,
    peer: u32,
    (id, key): (u64, u64),
    remote: u64,
    off: usize,
    len: u32,
) -> [u64; 8] {
    let op = if write { OP_WRITE } else { OP_READ };
    [
        op | (peer as u64) << 32,
        user_data,
        off as u64,
        len as u64,
        id,
        key,
        remote,
        0,
    ]
}
