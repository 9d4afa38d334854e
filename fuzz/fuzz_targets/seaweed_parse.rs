//! SeaweedFS volume-file parsing must hold against any bytes a `.dat` or `.idx` can hold: the
//! first byte picks the needle version (0 and 4+ are invalid ones), the rest is the file's
//! bytes. The super block, idx entry and needle parsers never panic; what they accept
//! re-encodes to what they parsed; a parsed needle lies inside its input, its data where
//! `data_start` says; its metadata round-trips through the `READ_NEEDLE` encoding.
//!
//! The parsers are the engine's own (the `seaweed-format` crate, which does not link UCX).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring_proto::needle::{NeedleMeta, NEEDLE_META_MAX};
use seaweed_format::*;

fuzz_target!(|input: &[u8]| {
    let Some((&sel, b)) = input.split_first() else {
        return;
    };
    let version = sel % 5;

    if let Ok(sb) = SuperBlock::parse(b) {
        assert!(sb.block_size() >= SUPER_BLOCK_SIZE as u64);
        assert_eq!(&sb.encode()[..], &b[..SUPER_BLOCK_SIZE]);
    }

    let _ = entry_size_by_length(b.len() as u64);
    for es in [IDX_ENTRY_SIZE_4, IDX_ENTRY_SIZE_5] {
        for chunk in b.chunks(es) {
            match IdxEntry::parse(chunk, es) {
                Some(e) => {
                    assert_eq!(e.offset % NEEDLE_PADDING_SIZE, 0);
                    let mut v = Vec::new();
                    e.encode_into(es, &mut v).unwrap();
                    assert_eq!(v, chunk, "entry {e:?} re-encodes differently");
                }
                None => assert!(chunk.len() < es),
            }
        }
    }

    let Ok(n) = parse_needle(b, version) else {
        return;
    };
    assert!((1..=3).contains(&version));
    assert!(n.disk_size <= b.len() as u64 && n.disk_size % NEEDLE_PADDING_SIZE == 0);
    assert_eq!(n.disk_size, needle_disk_size(n.header.size, version));
    assert_eq!(&b[n.data_start..n.data_start + n.data.len()], n.data);
    assert!(n.name.len() <= 255 && n.mime.len() <= 255);
    let _ = check_crc(n.data, n.stored_checksum);
    let _ = n.expired(u64::MAX);
    let _ = n.expired(0);

    let m = n.meta(version, 7, n.stored_checksum);
    assert!(m.encoded_len() <= NEEDLE_META_MAX);
    assert_eq!(NeedleMeta::decode(&m.encode()).as_ref(), Ok(&m));

    // A needle with data re-encodes canonically to one that parses to the same fields (the
    // parsed one may have had ignored bytes: trailing body bytes, any padding).
    if !n.data.is_empty() {
        let spec = NeedleSpec {
            cookie: n.header.cookie,
            id: n.header.id,
            data: n.data.to_vec(),
            flags: n.flags,
            name: n.name.to_vec(),
            mime: n.mime.to_vec(),
            last_modified: n.last_modified,
            ttl: n.ttl,
            pairs: n.pairs.to_vec(),
            append_at_ns: n.append_at_ns,
            checksum: Some(n.stored_checksum),
            pad_byte: 0,
        };
        let (e, size) = encode_needle(&spec, version);
        let m2 = parse_needle(&e, version).expect("a canonical encoding parses");
        assert_eq!(m2.header.size, size);
        assert_eq!(
            (m2.header.cookie, m2.header.id, m2.data, m2.flags, m2.name, m2.mime),
            (n.header.cookie, n.header.id, n.data, n.flags, n.name, n.mime)
        );
        assert_eq!(
            (m2.last_modified, m2.ttl, m2.pairs, m2.stored_checksum, m2.append_at_ns),
            (n.last_modified, n.ttl, n.pairs, n.stored_checksum, n.append_at_ns)
        );
    }
});
