//! Entry validation must hold against anything a client can write: the first 64 bytes are the
//! eight little-endian words of an SQE as the engine copies them out of shared memory; the
//! next byte (if any) picks the session's layout. `validate` must never panic, and everything
//! it accepts must be safe for the engine to execute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring_proto::entry::{read_needle_flags, MAX_NEEDLE_JWT_LEN};
use ring_proto::needle::NEEDLE_META_LEN;
use ring_proto::validate::{validate, NeedleRequest, Request, RmaRequest, SendRequest};
use ring_proto::{opcode, Entry, RegionLayout, ResultCode, Sqe};

/// Buffer sizes a session can have: empty, small, typical, the largest the layout allows.
const BUF_SIZES: [u64; 6] = [0, 4096, 8192, 1 << 20, (1 << 32) + 4096, 1 << 40];

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let mut words = [0u64; 8];
    for (w, b) in words.iter_mut().zip(data.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().unwrap());
    }
    let pick = data.get(64).copied().unwrap_or(0) as usize;
    let layout = RegionLayout::new(2 << (pick % 4), 2, BUF_SIZES[(pick / 4) % BUF_SIZES.len()]).unwrap();
    let sqe = Sqe::from_words(&words);
    assert_eq!(sqe.to_words(), words, "SQE word round trip");

    let got = validate(&sqe, &layout);
    assert_eq!(got, validate(&sqe, &layout), "validate is not deterministic");
    let buf_ok = |offset: usize, len: usize| {
        layout.buf_range_ok(offset as u64, len as u64) && offset.checked_add(len).is_some_and(|e| e <= layout.buf_size)
    };
    let common_zero = sqe.flags == 0 && sqe.reserved == 0;
    match got {
        Ok(Request::Nop) => {
            assert_eq!(sqe.opcode, opcode::NOP);
            assert!(common_zero && sqe.peer == 0 && sqe.buf_offset == 0 && sqe.buf_len == 0);
            assert!(sqe.aux == 0 && sqe.args == [0; 4]);
        }
        Ok(Request::Fill { offset, len, byte }) => {
            assert_eq!(sqe.opcode, opcode::FILL);
            assert!(common_zero && sqe.peer == 0 && sqe.args == [0; 4]);
            assert!(buf_ok(offset, len), "fill {offset}+{len} outside {layout:?}");
            assert!(
                len <= i32::MAX as usize,
                "fill length {len} does not fit the CQE result"
            );
            assert_eq!(
                (offset as u64, len as u64, byte as u32),
                (sqe.buf_offset, sqe.buf_len as u64, sqe.aux)
            );
        }
        Ok(Request::Send(SendRequest {
            peer,
            service,
            offset,
            len,
            resp_offset,
            resp_cap,
        })) => {
            assert_eq!(sqe.opcode, opcode::SEND);
            assert!(common_zero && sqe.args[2] == 0 && sqe.args[3] == 0);
            assert!(peer != 0 && peer == sqe.peer && service == sqe.aux);
            assert!(buf_ok(offset, len), "send request {offset}+{len} outside {layout:?}");
            assert!(
                buf_ok(resp_offset, resp_cap),
                "send response {resp_offset}+{resp_cap} outside {layout:?}"
            );
            assert!(
                resp_cap <= i32::MAX as usize,
                "response capacity {resp_cap} does not fit the CQE result"
            );
            assert_eq!((offset as u64, len as u64), (sqe.buf_offset, sqe.buf_len as u64));
            assert_eq!((resp_offset as u64, resp_cap as u64), (sqe.args[0], sqe.args[1]));
        }
        Ok(Request::Export {
            offset,
            len,
            perms,
            ticket_offset,
        }) => {
            assert_eq!(sqe.opcode, opcode::EXPORT);
            assert!(common_zero && sqe.peer == 0 && sqe.args[1..] == [0; 3]);
            assert!(
                len > 0 && buf_ok(offset, len),
                "export {offset}+{len} outside {layout:?}"
            );
            assert!(
                ticket_offset % 8 == 0 && buf_ok(ticket_offset, ring_proto::entry::EXPORT_TICKET_LEN),
                "export ticket at {ticket_offset} outside {layout:?}"
            );
            assert_eq!(ticket_offset as u64, sqe.args[0]);
            assert!((1..=3).contains(&perms) && perms == sqe.aux);
        }
        Ok(Request::Unexport { id }) => {
            assert_eq!(sqe.opcode, opcode::UNEXPORT);
            assert!(common_zero && sqe.peer == 0 && sqe.aux == 0 && sqe.args[1..] == [0; 3]);
            assert!(sqe.buf_offset == 0 && sqe.buf_len == 0);
            assert_eq!(id, sqe.args[0]);
        }
        Ok(Request::Rma(RmaRequest {
            write,
            peer,
            export_id,
            key,
            remote_offset,
            offset,
            len,
        })) => {
            assert!(sqe.opcode == opcode::READ || sqe.opcode == opcode::WRITE);
            assert_eq!(write, sqe.opcode == opcode::WRITE);
            assert!(common_zero && sqe.aux == 0 && sqe.args[3] == 0);
            assert!(peer != 0 && peer == sqe.peer);
            assert!(buf_ok(offset, len), "rma {offset}+{len} outside {layout:?}");
            assert!(len <= i32::MAX as usize, "rma length {len} does not fit the CQE result");
            assert_eq!(
                (export_id, key, remote_offset),
                (sqe.args[0], sqe.args[1], sqe.args[2])
            );
        }
        Ok(Request::ReadNeedle(NeedleRequest {
            peer,
            volume,
            needle,
            cookie,
            range_offset,
            max_len,
            ranged,
            offset,
            data_cap,
            jwt_len,
        })) => {
            assert_eq!(sqe.opcode, opcode::READ_NEEDLE);
            assert!(sqe.reserved == 0 && sqe.flags & !read_needle_flags::ALL == 0);
            assert_eq!(ranged, sqe.flags & read_needle_flags::RANGE != 0);
            assert!(peer != 0 && peer == sqe.peer && volume == sqe.aux);
            assert_eq!((needle, cookie as u64 | (jwt_len as u64) << 32), (sqe.args[0], sqe.args[1]));
            // The JWT the engine copies out lies inside the (metadata area of the) buffer.
            assert!(jwt_len <= MAX_NEEDLE_JWT_LEN && jwt_len <= NEEDLE_META_LEN, "jwt of {jwt_len} bytes");
            // The whole buffer (metadata area and data capacity) lies in the buffer area, and
            // what the engine may write (metadata, then at most max_len data bytes) fits it.
            assert!(buf_ok(offset, NEEDLE_META_LEN + data_cap), "needle buffer {offset}+{data_cap} outside {layout:?}");
            assert_eq!(NEEDLE_META_LEN + data_cap, sqe.buf_len as usize);
            assert!(max_len <= data_cap as u64 && data_cap <= i32::MAX as usize);
            if ranged {
                assert_eq!((range_offset, max_len), (sqe.args[2], sqe.args[3]));
            } else {
                assert!(range_offset == 0 && sqe.args[2] == 0 && sqe.args[3] == 0 && max_len == data_cap as u64);
            }
        }
        Err(code) => {
            let known = (opcode::NOP..=opcode::READ_NEEDLE).contains(&sqe.opcode);
            assert_eq!(
                code == ResultCode::UnknownOpcode,
                !known,
                "opcode {} gave {code:?}",
                sqe.opcode
            );
            assert!(
                matches!(
                    code,
                    ResultCode::UnknownOpcode
                        | ResultCode::InvalidEntry
                        | ResultCode::OutOfBounds
                        | ResultCode::NoSuchPeer
                ),
                "validation error {code:?}"
            );
            assert!((code as i32) < 0, "error code {code:?} would read as success");
        }
    }
});
