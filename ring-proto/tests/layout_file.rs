//! `layout.json` is what clients in other languages check their offsets against: it must
//! describe exactly the Rust types. Regenerate with `UPDATE_LAYOUT=1 cargo test -p ring-proto`.
#![cfg(not(loom))]

use std::mem::{offset_of, size_of};

use ring_proto::control::{CONTROL_MAGIC, CONTROL_VERSION, WELCOME_FDS};
use ring_proto::layout::*;
use ring_proto::{opcode, ResultCode, Sqe};
use serde_json::json;

fn generated() -> serde_json::Value {
    let l = RegionLayout::new(256, 512, 1 << 20).unwrap();
    json!({
        "comment": "Generated from ring-proto by tests/layout_file.rs; do not edit by hand.",
        "magic": MAGIC,
        "layout_version": LAYOUT_VERSION,
        "control": { "magic": CONTROL_MAGIC, "version": CONTROL_VERSION, "welcome_fds": WELCOME_FDS },
        "header": {
            "size": size_of::<RegionHeader>(),
            "fields": {
                "magic": offset_of!(RegionHeader, magic),
                "version": offset_of!(RegionHeader, version),
                "header_size": offset_of!(RegionHeader, header_size),
                "region_size": offset_of!(RegionHeader, region_size),
                "sq_ctl_offset": offset_of!(RegionHeader, sq_ctl_offset),
                "sq_entries": offset_of!(RegionHeader, sq_entries),
                "sq_array_offset": offset_of!(RegionHeader, sq_array_offset),
                "cq_ctl_offset": offset_of!(RegionHeader, cq_ctl_offset),
                "cq_entries": offset_of!(RegionHeader, cq_entries),
                "cq_array_offset": offset_of!(RegionHeader, cq_array_offset),
                "buf_offset": offset_of!(RegionHeader, buf_offset),
                "buf_size": offset_of!(RegionHeader, buf_size),
                "engine_pid": offset_of!(RegionHeader, engine_pid),
                "session_id": offset_of!(RegionHeader, session_id),
                "engine_epoch": offset_of!(RegionHeader, engine_epoch),
                "lease_ms": offset_of!(RegionHeader, lease_ms),
                "sqe_size": offset_of!(RegionHeader, sqe_size),
                "cqe_size": offset_of!(RegionHeader, cqe_size),
                "state": offset_of!(RegionHeader, state),
                "close_reason": offset_of!(RegionHeader, close_reason),
                "engine_heartbeat": offset_of!(RegionHeader, engine_heartbeat),
                "client_heartbeat": offset_of!(RegionHeader, client_heartbeat),
            }
        },
        "ring_ctl": {
            "size": size_of::<RingCtl>(),
            "fields": {
                "head": offset_of!(RingCtl, head),
                "reserved": offset_of!(RingCtl, reserved),
                "flags": offset_of!(RingCtl, flags),
                "invalid": offset_of!(RingCtl, invalid),
            },
            "need_wakeup": RING_NEED_WAKEUP,
        },
        "sqe": {
            "size": SQE_SIZE,
            "fields": { "opcode": 0, "flags": 1, "ctl": 2, "reserved": 3, "peer": 4, "user_data": 8,
                        "buf_offset": 16, "buf_len": 24, "aux": 28, "args": 32 }
        },
        "cqe": { "size": CQE_SIZE, "fields": { "flags": 0, "ctl": 2, "reserved": 3, "result": 4, "user_data": 8 } },
        "entry_ctl": {
            "word": 0, "shift": ring_proto::entry::CTL_SHIFT,
            "phase": ring_proto::entry::CTL_PHASE >> ring_proto::entry::CTL_SHIFT,
        },
        "alignment": { "index_pad": INDEX_PAD, "buf_align": BUF_ALIGN, "max_ring_entries": MAX_RING_ENTRIES },
        "example_layout_256_512_1MiB": {
            "sq_ctl_offset": l.sq_ctl_offset, "cq_ctl_offset": l.cq_ctl_offset,
            "sq_array_offset": l.sq_array_offset, "cq_array_offset": l.cq_array_offset,
            "buf_offset": l.buf_offset, "min_region_size": l.min_region_size
        },
        "states": {
            "init": SessionState::Init as u32, "ready": SessionState::Ready as u32,
            "draining": SessionState::Draining as u32, "closed": SessionState::Closed as u32,
            "broken": SessionState::Broken as u32,
        },
        "close_reasons": {
            "none": CloseReason::None as u32, "client-closed": CloseReason::ClientClosed as u32,
            "engine-shutdown": CloseReason::EngineShutdown as u32, "bad-sq-tail": CloseReason::BadSqTail as u32,
            "bad-cq-head": CloseReason::BadCqHead as u32, "lease-expired": CloseReason::LeaseExpired as u32,
            "drain-timeout": CloseReason::DrainTimeout as u32,
        },
        "opcodes": { "nop": opcode::NOP, "fill": opcode::FILL, "send": opcode::SEND, "export": opcode::EXPORT,
                     "unexport": opcode::UNEXPORT, "read": opcode::READ, "write": opcode::WRITE,
                     "read_needle": opcode::READ_NEEDLE },
        "read_needle": {
            "flags": { "range": ring_proto::entry::read_needle_flags::RANGE },
            "meta_len": ring_proto::needle::NEEDLE_META_LEN,
            // args[1] = cookie | jwt_len << 32; the JWT is at the start of the buffer.
            "max_jwt_len": ring_proto::entry::MAX_NEEDLE_JWT_LEN,
            "jwt_len_shift": 32,
            "meta_fields": { "data_size": 0, "range_offset": 8, "last_modified": 16, "append_at_ns": 24,
                             "checksum": 32, "flags": 36, "name_len": 37, "mime_len": 38, "version": 39,
                             "ttl": 40, "name": 64 },
            "needle_flags": { "gzip": ring_proto::needle::flags::GZIP, "has_name": ring_proto::needle::flags::HAS_NAME,
                              "has_mime": ring_proto::needle::flags::HAS_MIME,
                              "has_last_modified": ring_proto::needle::flags::HAS_LAST_MODIFIED,
                              "has_ttl": ring_proto::needle::flags::HAS_TTL, "has_pairs": ring_proto::needle::flags::HAS_PAIRS,
                              "chunk_manifest": ring_proto::needle::flags::CHUNK_MANIFEST },
        },
        "services": { "echo": ring_proto::entry::service::ECHO },
        "export_ticket": { "size": ring_proto::entry::EXPORT_TICKET_LEN, "align": 8, "fields": { "id": 0, "key": 8 } },
        "control_error_codes": (1..=32u32).filter_map(ring_proto::control::ControlErrorCode::from_u32)
            .map(|c| (format!("{c:?}"), json!(c as u32))).collect::<serde_json::Map<_, _>>(),
        "result_codes": ResultCode::ALL.iter().map(|c| (c.name().to_string(), json!(*c as i32))).collect::<serde_json::Map<_, _>>(),
    })
}

#[test]
fn sqe_field_offsets_match_the_word_encoding() {
    let e = Sqe {
        opcode: 1,
        flags: 2,
        ctl: 13,
        reserved: 3,
        peer: 4,
        user_data: 5,
        buf_offset: 6,
        buf_len: 7,
        aux: 8,
        args: [9, 10, 11, 12],
    };
    use ring_proto::Entry;
    let bytes: Vec<u8> = e.to_words().iter().flat_map(|w| w.to_le_bytes()).collect();
    let v = generated();
    for (name, want) in [
        ("opcode", 1u8),
        ("flags", 2),
        ("ctl", 13),
        ("reserved", 3),
        ("peer", 4),
        ("user_data", 5),
        ("buf_offset", 6),
        ("buf_len", 7),
        ("aux", 8),
        ("args", 9),
    ] {
        let off = v["sqe"]["fields"][name].as_u64().unwrap() as usize;
        assert_eq!(bytes[off], want, "sqe field {name}");
    }
}

#[test]
fn cqe_field_offsets_match_the_word_encoding() {
    use ring_proto::{Cqe, Entry};
    let c = Cqe {
        user_data: 5,
        result: 4,
        flags: 2,
        ctl: 13,
        reserved: 3,
    };
    let bytes: Vec<u8> = c.to_words().iter().flat_map(|w| w.to_le_bytes()).collect();
    let v = generated();
    for (name, want) in [
        ("flags", 2u8),
        ("ctl", 13),
        ("reserved", 3),
        ("result", 4),
        ("user_data", 5),
    ] {
        let off = v["cqe"]["fields"][name].as_u64().unwrap() as usize;
        assert_eq!(bytes[off], want, "cqe field {name}");
    }
}

#[test]
fn layout_json_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/layout.json");
    let want = serde_json::to_string_pretty(&generated()).unwrap() + "\n";
    if std::env::var_os("UPDATE_LAYOUT").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "ring-proto/layout.json is stale: rerun with UPDATE_LAYOUT=1 and review the diff"
    );
}
