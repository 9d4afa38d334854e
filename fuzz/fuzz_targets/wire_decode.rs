//! Engine-to-engine messages (`ring_proto::wire`) and the needle metadata a peer sends must
//! hold against any bytes a peer can send: the parsers never panic, and what they accept
//! re-encodes to exactly the bytes they were given (every field is checked, none is guessed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring_proto::needle::NeedleMeta;
use ring_proto::wire::{
    ExportDescriptor, ExportRefHeader, InfoHeader, NeedleReplyHeader, NeedleRequestHeader, ReplyHeader, RequestHeader,
};

fuzz_target!(|b: &[u8]| {
    if let Some(h) = RequestHeader::parse(b) {
        assert_eq!(&h.encode()[..], b);
    }
    if let Some(h) = ReplyHeader::parse(b) {
        assert_eq!(&h.encode()[..], b);
    }
    if let Some(h) = InfoHeader::parse(b) {
        assert_eq!(&h.encode()[..], b);
    }
    if let Some((h, meta)) = NeedleReplyHeader::parse(b) {
        // A needle reply: the metadata after the 16-byte header.
        assert_eq!(&h.encode()[..], &b[..16]);
        assert_eq!(meta, &b[16..]);
        if let Ok(m) = NeedleMeta::decode(meta) {
            let e = m.encode();
            assert_eq!(&e[..], &meta[..e.len()], "{m:?}");
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
