//! Encoding needles as SeaweedFS's writer does (`needle_write_v*.go`): for the volume writer,
//! the property tests and the fuzz target's round trip.

use ring_proto::needle::flags;

use crate::{crc32c, needle_disk_size, padding_len, LAST_MODIFIED_LEN};

/// A needle to encode, with the fields SeaweedFS's writer takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeedleSpec {
    pub cookie: u32,
    pub id: u64,
    pub data: Vec<u8>,
    /// Flag bits; HAS_NAME/HAS_MIME/HAS_LAST_MODIFIED/HAS_TTL/HAS_PAIRS decide which of the
    /// fields below are written (as in Go, where the setters set the flags).
    pub flags: u8,
    pub name: Vec<u8>,
    pub mime: Vec<u8>,
    pub last_modified: u64,
    pub ttl: [u8; 2],
    pub pairs: Vec<u8>,
    pub append_at_ns: u64,
    /// Stored checksum; `None`: the CRC-32C of `data` (what SeaweedFS 3.09+ writes).
    pub checksum: Option<u32>,
    /// Byte to pad with (Go pads with leftover buffer bytes, so readers must not care).
    pub pad_byte: u8,
}

/// Encodes a needle as `writeNeedleCommon` (versions 2 and 3) or `writeNeedleV1` does; returns
/// the bytes and the header size (what the idx entry records). Names are cut to 255 bytes as
/// Go cuts them; a mime or pairs field longer than its length byte allows is cut too.
pub fn encode_needle(n: &NeedleSpec, version: u8) -> (Vec<u8>, u32) {
    let name = &n.name[..n.name.len().min(255)];
    let mime = &n.mime[..n.mime.len().min(255)];
    let pairs = &n.pairs[..n.pairs.len().min(u16::MAX as usize)];
    let mut body = Vec::new();
    if version == 1 {
        body.extend_from_slice(&n.data);
    } else if !n.data.is_empty() {
        body.extend_from_slice(&(n.data.len() as u32).to_be_bytes());
        body.extend_from_slice(&n.data);
        body.push(n.flags);
        if n.flags & flags::HAS_NAME != 0 {
            body.push(name.len() as u8);
            body.extend_from_slice(name);
        }
        if n.flags & flags::HAS_MIME != 0 {
            body.push(mime.len() as u8);
            body.extend_from_slice(mime);
        }
        if n.flags & flags::HAS_LAST_MODIFIED != 0 {
            body.extend_from_slice(&n.last_modified.to_be_bytes()[8 - LAST_MODIFIED_LEN..]);
        }
        if n.flags & flags::HAS_TTL != 0 {
            body.extend_from_slice(&n.ttl);
        }
        if n.flags & flags::HAS_PAIRS != 0 {
            body.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
            body.extend_from_slice(pairs);
        }
    }
    let size = body.len() as u32;
    let mut out = Vec::with_capacity(needle_disk_size(size, version) as usize);
    out.extend_from_slice(&n.cookie.to_be_bytes());
    out.extend_from_slice(&n.id.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&n.checksum.unwrap_or_else(|| crc32c(&n.data)).to_be_bytes());
    if version == 3 {
        out.extend_from_slice(&n.append_at_ns.to_be_bytes());
    }
    out.resize(out.len() + padding_len(size, version) as usize, n.pad_byte);
    (out, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_crc, parse_needle, CrcCheck};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_parse_roundtrip(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            fl in any::<u8>(),
            name in proptest::collection::vec(any::<u8>(), 0..300),
            mime in proptest::collection::vec(any::<u8>(), 0..40),
            pairs in proptest::collection::vec(any::<u8>(), 0..40),
            lm in 0u64..(1 << 40),
            ttl in any::<[u8; 2]>(),
            ts: u64,
            v in 1u8..=3,
        ) {
            let s = NeedleSpec { cookie: 7, id: 9, data, flags: fl, name, mime, last_modified: lm, ttl, pairs, append_at_ns: ts, checksum: None, pad_byte: 0x5a };
            let (b, size) = encode_needle(&s, v);
            prop_assert_eq!(b.len() as u64, needle_disk_size(size, v));
            let n = parse_needle(&b, v).unwrap();
            prop_assert_eq!(n.data, &s.data[..]);
            prop_assert_eq!(check_crc(n.data, n.stored_checksum), CrcCheck::Match);
            if v >= 2 && !s.data.is_empty() {
                prop_assert_eq!(n.flags, fl);
                if fl & flags::HAS_NAME != 0 { prop_assert_eq!(n.name, &s.name[..s.name.len().min(255)]); }
                if fl & flags::HAS_MIME != 0 { prop_assert_eq!(n.mime, &s.mime[..]); }
                if fl & flags::HAS_LAST_MODIFIED != 0 { prop_assert_eq!(n.last_modified, lm); }
                if fl & flags::HAS_TTL != 0 { prop_assert_eq!(n.ttl, ttl); }
                if fl & flags::HAS_PAIRS != 0 { prop_assert_eq!(n.pairs, &s.pairs[..]); }
            }
            if v == 3 { prop_assert_eq!(n.append_at_ns, ts); }
        }
    }
}
