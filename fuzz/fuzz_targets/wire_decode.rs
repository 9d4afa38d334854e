//! Engine-to-engine messages (`ring_proto::wire`) and the needle metadata a peer sends must
//! hold against any bytes a peer can send: the parsers never panic, and what they accept
//! re-encodes to exactly the bytes they were given (every field is checked, none is guessed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring_proto::needle::NeedleMeta;
use ring_proto::wire::{ExportDescriptor, ExportRefHeader, MsgHeader, NeedleRequestHeader};

fuzz_target!(|b: &[u8]| {
    if let Some(h) = MsgHeader::parse(b, false) {
        assert_eq!(&h.encode()[..], b);
    }
    if let Some(h) = MsgHeader::parse(b, true) {
        // A needle reply: the metadata after the 16-byte header.
        assert_eq!(&h.encode()[..], &b[..16]);
        if let Ok(m) = NeedleMeta::decode(&b[16..]) {
            let e = m.encode();
            assert_eq!(&e[..], &b[16..16 + e.len()], "{m:?}");
        }
    }
    if let Some(h) = NeedleRequestHeader::parse(b) {
        // The JWT is bounded and the header exactly as long as it says.
        assert!(h.jwt.len() <= ring_proto::wire::MAX_NEEDLE_JWT_LEN);
        assert_eq!(&h.encode()[..], b);
    }
    if let Some(d) = ExportDescriptor::parse(b) {
        assert_eq!(d.encode(), b);
    }
    if let Some(r) = ExportRefHeader::parse(b) {
        assert_eq!(&r.encode()[..], b);
    }
});
