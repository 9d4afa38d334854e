//! The engine-to-engine protocol (SPEC.md §13–15): UCX active-message ids and the headers and
//! bodies they carry, little-endian. Engines trust the fabric but not the bytes: every parse
//! checks lengths and reserved fields and returns `None` rather than guess.
//!
//! ```text
//! id 1 REQUEST         header: req_id u64 | service u32 | resp_cap u32     data: payload
//! id 2 REPLY           header: req_id u64 | status i32  | 0 u32            data: response
//! id 3 QUERY           header: req_id u64 | export u64  | key u64 (24 B)  data: none
//! id 4 INFO            header: req_id u64 | status i32  | perms u32        data: ExportDescriptor
//! id 5 REVOKE          header: 0 u64      | export u64  | key u64 (24 B)  data: none
//! id 6 ACK             header: 0 u64      | export u64  | key u64 (24 B)  data: none
//! id 7 NEEDLE_REQUEST  header: NeedleRequestHeader (48 bytes) | JWT      data: none
//! id 8 NEEDLE_REPLY    header: req_id u64 | status i32 | meta_len u32 | NeedleMeta
//!                                                                          data: needle data
//! ```

/// Active-message ids. Values never change once released.
pub mod am {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
    pub const QUERY: u16 = 3;
    pub const INFO: u16 = 4;
    pub const REVOKE: u16 = 5;
    pub const ACK: u16 = 6;
    pub const NEEDLE_REQUEST: u16 = 7;
    pub const NEEDLE_REPLY: u16 = 8;
    pub const ALL: [u16; 8] = [REQUEST, REPLY, QUERY, INFO, REVOKE, ACK, NEEDLE_REQUEST, NEEDLE_REPLY];
}

/// Length of the fixed header of REQUEST, REPLY, INFO and NEEDLE_REPLY.
pub const HEADER_LEN: usize = 16;
/// Length of [`NeedleRequestHeader`] without its JWT.
pub const NEEDLE_REQUEST_LEN: usize = 48;
/// Length of [`ExportRefHeader`].
pub const EXPORT_REF_LEN: usize = 24;

/// The header of QUERY, REVOKE and ACK: a request id (0 for REVOKE/ACK) and the export's
/// 64-bit id and key, `req_id u64 | export u64 | key u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRefHeader {
    pub req_id: u64,
    pub export: u64,
    pub key: u64,
}

impl ExportRefHeader {
    /// Parses a header of exactly 24 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != EXPORT_REF_LEN {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Some(Self {
            req_id: u64_at(0),
            export: u64_at(8),
            key: u64_at(16),
        })
    }

    pub fn encode(&self) -> [u8; EXPORT_REF_LEN] {
        let mut h = [0u8; EXPORT_REF_LEN];
        h[0..8].copy_from_slice(&self.req_id.to_le_bytes());
        h[8..16].copy_from_slice(&self.export.to_le_bytes());
        h[16..24].copy_from_slice(&self.key.to_le_bytes());
        h
    }
}

/// Longest JWT a NEEDLE_REQUEST carries (the SQE's bound).
pub use crate::entry::MAX_NEEDLE_JWT_LEN;

/// The 16-byte frame of REQUEST, REPLY, INFO and NEEDLE_REPLY: `req_id u64 | u32 | u32`;
/// what the two words mean depends on the message (see the typed headers below).
fn parse_frame(b: &[u8]) -> Option<(u64, u32, u32)> {
    if b.len() < HEADER_LEN {
        return None;
    }
    Some((
        u64::from_le_bytes(b[0..8].try_into().ok()?),
        u32::from_le_bytes(b[8..12].try_into().ok()?),
        u32::from_le_bytes(b[12..16].try_into().ok()?),
    ))
}

fn encode_frame(req_id: u64, a: u32, b: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&req_id.to_le_bytes());
    h[8..12].copy_from_slice(&a.to_le_bytes());
    h[12..16].copy_from_slice(&b.to_le_bytes());
    h
}

/// The header of REQUEST: `req_id u64 | service u32 | resp_cap u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub req_id: u64,
    /// The service asked for (`entry::service`).
    pub service: u32,
    /// The most response bytes the requester can take.
    pub resp_cap: u32,
}

impl RequestHeader {
    /// Parses a header of exactly 16 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let (req_id, service, resp_cap) = parse_frame(b).filter(|_| b.len() == HEADER_LEN)?;
        Some(Self {
            req_id,
            service,
            resp_cap,
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        encode_frame(self.req_id, self.service, self.resp_cap)
    }
}

/// The header of REPLY: `req_id u64 | status i32 | 0 u32`. `status` is 0 on success (the
/// response is the message's data) or a negative `ResultCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub req_id: u64,
    pub status: i32,
}

impl ReplyHeader {
    /// Parses a header of exactly 16 bytes whose reserved word is 0.
    pub fn parse(b: &[u8]) -> Option<Self> {
        match parse_frame(b).filter(|_| b.len() == HEADER_LEN)? {
            (req_id, status, 0) => Some(Self {
                req_id,
                status: status as i32,
            }),
            _ => None,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        encode_frame(self.req_id, self.status as u32, 0)
    }
}

/// The header of INFO: `req_id u64 | status i32 | perms u32`. On success (`status` 0) the
/// data is an [`ExportDescriptor`] and `perms` the export's permission bits; otherwise
/// `status` is a negative `ResultCode` and `perms` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoHeader {
    pub req_id: u64,
    pub status: i32,
    pub perms: u32,
}

impl InfoHeader {
    /// Parses a header of exactly 16 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let (req_id, status, perms) = parse_frame(b).filter(|_| b.len() == HEADER_LEN)?;
        Some(Self {
            req_id,
            status: status as i32,
            perms,
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        encode_frame(self.req_id, self.status as u32, self.perms)
    }
}

/// The header of NEEDLE_REPLY: `req_id u64 | status i32 | meta_len u32`, then the needle's
/// metadata (`NeedleMeta`, `meta_len` bytes of it are meaningful) in the same header. `status`
/// is 0 on success (the data is the needle's data) or a negative `ResultCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleReplyHeader {
    pub req_id: u64,
    pub status: i32,
    pub meta_len: u32,
}

impl NeedleReplyHeader {
    /// Parses the first 16 bytes of a header; returns them with the metadata bytes after them.
    pub fn parse(b: &[u8]) -> Option<(Self, &[u8])> {
        let (req_id, status, meta_len) = parse_frame(b)?;
        let h = Self {
            req_id,
            status: status as i32,
            meta_len,
        };
        Some((h, &b[HEADER_LEN..]))
    }

    /// The fixed 16 bytes (the metadata follows them in the same header).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        encode_frame(self.req_id, self.status as u32, self.meta_len)
    }
}

/// The header of NEEDLE_REQUEST:
/// `req_id u64 | needle u64 | range_offset u64 | max_len u64 | volume u32 | cookie u32 |
/// flags u32 (bit 0: ranged) | jwt_len u32`, then `jwt_len` bytes of read JWT (at most
/// [`MAX_NEEDLE_JWT_LEN`]; 0: the client sent none). The header is exactly that long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedleRequestHeader {
    pub req_id: u64,
    pub needle: u64,
    pub range_offset: u64,
    /// The range length, or the requester's data capacity without a range.
    pub max_len: u64,
    pub volume: u32,
    pub cookie: u32,
    pub ranged: bool,
    /// The client's read JWT, as it wrote it (unverified; the serving engine checks it).
    pub jwt: Vec<u8>,
}

impl NeedleRequestHeader {
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < NEEDLE_REQUEST_LEN {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let flags = u32_at(40);
        let jwt_len = u32_at(44) as usize;
        if flags & !1 != 0 || jwt_len > MAX_NEEDLE_JWT_LEN || b.len() != NEEDLE_REQUEST_LEN + jwt_len {
            return None;
        }
        Some(Self {
            req_id: u64_at(0),
            needle: u64_at(8),
            range_offset: u64_at(16),
            max_len: u64_at(24),
            volume: u32_at(32),
            cookie: u32_at(36),
            ranged: flags & 1 != 0,
            jwt: b[NEEDLE_REQUEST_LEN..].to_vec(),
        })
    }

    /// The header bytes; `jwt` must not be longer than [`MAX_NEEDLE_JWT_LEN`] (the SQE
    /// validation guarantees it), else it is cut there.
    pub fn encode(&self) -> Vec<u8> {
        let jwt = &self.jwt[..self.jwt.len().min(MAX_NEEDLE_JWT_LEN)];
        let mut h = vec![0u8; NEEDLE_REQUEST_LEN + jwt.len()];
        h[0..8].copy_from_slice(&self.req_id.to_le_bytes());
        h[8..16].copy_from_slice(&self.needle.to_le_bytes());
        h[16..24].copy_from_slice(&self.range_offset.to_le_bytes());
        h[24..32].copy_from_slice(&self.max_len.to_le_bytes());
        h[32..36].copy_from_slice(&self.volume.to_le_bytes());
        h[36..40].copy_from_slice(&self.cookie.to_le_bytes());
        h[40..44].copy_from_slice(&(self.ranged as u32).to_le_bytes());
        h[44..48].copy_from_slice(&(jwt.len() as u32).to_le_bytes());
        h[NEEDLE_REQUEST_LEN..].copy_from_slice(jwt);
        h
    }
}

/// The body of INFO: where an export lies in the exporter's address space and its packed
/// UCX remote key: `base u64 | len u64 | rkey bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportDescriptor<'a> {
    pub base_addr: u64,
    pub len: u64,
    pub rkey: &'a [u8],
}

impl<'a> ExportDescriptor<'a> {
    /// Parses a body; the remote key must not be empty.
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        if b.len() <= 16 {
            return None;
        }
        Some(Self {
            base_addr: u64::from_le_bytes(b[0..8].try_into().ok()?),
            len: u64::from_le_bytes(b[8..16].try_into().ok()?),
            rkey: &b[16..],
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.rkey.len());
        v.extend_from_slice(&self.base_addr.to_le_bytes());
        v.extend_from_slice(&self.len.to_le_bytes());
        v.extend_from_slice(self.rkey);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn needle_request_roundtrip_and_checks() {
        let w = NeedleRequestHeader {
            req_id: 7,
            needle: 0x1122_3344_5566_7788,
            range_offset: 9,
            max_len: 10,
            volume: 11,
            cookie: 0xdead_beef,
            ranged: true,
            jwt: Vec::new(),
        };
        let b = w.encode();
        assert_eq!(b.len(), NEEDLE_REQUEST_LEN);
        assert_eq!(NeedleRequestHeader::parse(&b), Some(w.clone()));
        assert_eq!(NeedleRequestHeader::parse(&b[..47]), None);
        let mut bad = b.clone();
        bad[40] = 2;
        assert_eq!(NeedleRequestHeader::parse(&bad), None);
        // A JWT length the header does not hold, or one above the bound.
        let mut bad = b.clone();
        bad[44] = 1;
        assert_eq!(NeedleRequestHeader::parse(&bad), None);
        let long = NeedleRequestHeader {
            jwt: vec![b'x'; MAX_NEEDLE_JWT_LEN + 1],
            ..w.clone()
        };
        let mut bad = vec![0u8; NEEDLE_REQUEST_LEN + MAX_NEEDLE_JWT_LEN + 1];
        bad[..NEEDLE_REQUEST_LEN].copy_from_slice(&b);
        bad[44..48].copy_from_slice(&(MAX_NEEDLE_JWT_LEN as u32 + 1).to_le_bytes());
        assert_eq!(NeedleRequestHeader::parse(&bad), None);
        assert_eq!(long.encode().len(), NEEDLE_REQUEST_LEN + MAX_NEEDLE_JWT_LEN);
        let with_jwt = NeedleRequestHeader {
            jwt: b"eyJhbGciOiJIUzI1NiJ9.e30.sig".to_vec(),
            ..w
        };
        let b = with_jwt.encode();
        assert_eq!(b.len(), NEEDLE_REQUEST_LEN + with_jwt.jwt.len());
        assert_eq!(NeedleRequestHeader::parse(&b), Some(with_jwt));
        assert_eq!(NeedleRequestHeader::parse(&b[..b.len() - 1]), None);
    }

    #[test]
    fn header_lengths() {
        let h = RequestHeader {
            req_id: 1,
            service: 2,
            resp_cap: 3,
        };
        assert_eq!(RequestHeader::parse(&h.encode()), Some(h));
        assert_eq!(RequestHeader::parse(&h.encode()[..15]), None);
        assert_eq!(RequestHeader::parse(&[0u8; 17]), None);
        let r = ReplyHeader { req_id: 4, status: -3 };
        assert_eq!(ReplyHeader::parse(&r.encode()), Some(r));
        assert_eq!(ReplyHeader::parse(&h.encode()), None, "a reply's reserved word is 0");
        let i = InfoHeader {
            req_id: 5,
            status: 0,
            perms: 3,
        };
        assert_eq!(InfoHeader::parse(&i.encode()), Some(i));
        let n = NeedleReplyHeader {
            req_id: 6,
            status: 0,
            meta_len: 4,
        };
        let mut b = n.encode().to_vec();
        b.extend_from_slice(b"meta");
        assert_eq!(NeedleReplyHeader::parse(&b), Some((n, &b"meta"[..])));
        assert!(NeedleReplyHeader::parse(&[0u8; 20]).is_some());
        assert_eq!(NeedleReplyHeader::parse(&[0u8; 15]), None);
        assert_eq!(ExportDescriptor::parse(&[0u8; 16]), None);
        let r = ExportRefHeader {
            req_id: 1,
            export: u64::MAX,
            key: 1 << 63,
        };
        assert_eq!(ExportRefHeader::parse(&r.encode()), Some(r));
        assert_eq!(ExportRefHeader::parse(&r.encode()[..23]), None);
        assert_eq!(ExportRefHeader::parse(&[0u8; 16]), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic_and_roundtrip(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Some(h) = RequestHeader::parse(&b) { prop_assert_eq!(&h.encode()[..], &b[..]); }
            if let Some(h) = ReplyHeader::parse(&b) { prop_assert_eq!(&h.encode()[..], &b[..]); }
            if let Some(h) = InfoHeader::parse(&b) { prop_assert_eq!(&h.encode()[..], &b[..]); }
            if let Some((h, meta)) = NeedleReplyHeader::parse(&b) {
                prop_assert_eq!(&h.encode()[..], &b[..HEADER_LEN]);
                prop_assert_eq!(meta, &b[HEADER_LEN..]);
            }
            if let Some(h) = NeedleRequestHeader::parse(&b) { prop_assert_eq!(&h.encode()[..], &b[..]); }
            if let Some(d) = ExportDescriptor::parse(&b) { prop_assert_eq!(d.encode(), b.clone()); }
            if let Some(r) = ExportRefHeader::parse(&b) { prop_assert_eq!(&r.encode()[..], &b[..]); }
        }
    }
}
