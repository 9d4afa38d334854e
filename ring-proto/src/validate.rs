//! What a valid submission entry is: [`validate`] checks one entry (the engine's private copy,
//! taken word by word out of shared memory once) against the session's own layout and turns it
//! into a [`Request`] whose every range lies inside the session's buffer area. It is part of
//! the protocol (`SPEC.md` sections 4, 13 and 14), so it lives here beside the entry format; the
//! engine executes what it returns, and the fuzz target `sqe_validate` exercises it without
//! the engine's UCX dependency.

use crate::entry::{read_needle_flags, EXPORT_TICKET_LEN, MAX_NEEDLE_JWT_LEN};
use crate::needle::NEEDLE_META_LEN;
use crate::{opcode, RegionLayout, ResultCode, Sqe};

/// A request that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Nop,
    Fill {
        offset: usize,
        len: usize,
        byte: u8,
    },
    /// Remote request-response; completes asynchronously through the data plane.
    Send(SendRequest),
    /// Export a range of the buffer area to peers (completes at once, through the data plane).
    Export {
        offset: usize,
        len: usize,
        perms: u32,
        /// Where the engine writes the [`crate::entry::ExportTicket`] (inside the buffer area).
        ticket_offset: usize,
    },
    /// End one of this session's exports.
    Unexport {
        id: u64,
    },
    /// One-sided READ or WRITE of a peer's export; completes asynchronously.
    Rma(RmaRequest),
    /// Read a SeaweedFS needle from a peer engine; completes asynchronously.
    ReadNeedle(NeedleRequest),
}

/// A validated `READ_NEEDLE`: the buffer (metadata area + data capacity) is inside the
/// session's buffer area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleRequest {
    pub peer: u32,
    pub volume: u32,
    pub needle: u64,
    pub cookie: u32,
    /// Data offset to start at (0 without a range).
    pub range_offset: u64,
    /// Most data bytes wanted: the range length, or the buffer's data capacity without one.
    pub max_len: u64,
    /// The request named a range: data past `max_len` is cut, not an error.
    pub ranged: bool,
    /// Buffer start (metadata); data lands at `offset + NEEDLE_META_LEN`.
    pub offset: usize,
    /// Data capacity: `buf_len - NEEDLE_META_LEN`.
    pub data_cap: usize,
    /// Length of the read JWT at `offset` (0: none; at most `MAX_NEEDLE_JWT_LEN`). Only its
    /// bounds are checked here: the requesting engine copies the bytes out when it sends
    /// the request, and the serving engine verifies them.
    pub jwt_len: usize,
}

/// A validated READ/WRITE: the local range is inside the session's buffer area; the remote
/// range is checked against the export's descriptor by the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmaRequest {
    pub write: bool,
    pub peer: u32,
    pub export_id: u64,
    pub key: u64,
    pub remote_offset: u64,
    pub offset: usize,
    pub len: usize,
}

/// A validated `SEND`: every range is inside the session's buffer area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRequest {
    pub peer: u32,
    pub service: u32,
    pub offset: usize,
    pub len: usize,
    pub resp_offset: usize,
    pub resp_cap: usize,
}

/// Checks an entry against the session's own layout. Every field an operation does not use
/// must be zero, so that later versions can give them meaning.
pub fn validate(sqe: &Sqe, layout: &RegionLayout) -> Result<Request, ResultCode> {
    let common_reserved = sqe.flags != 0 || sqe.reserved != 0 || sqe.peer != 0 || sqe.args != [0; 4];
    match sqe.opcode {
        opcode::NOP => {
            if common_reserved || sqe.buf_offset != 0 || sqe.buf_len != 0 || sqe.aux != 0 {
                return Err(ResultCode::InvalidEntry);
            }
            Ok(Request::Nop)
        }
        opcode::FILL => {
            if common_reserved || sqe.aux > 0xff || sqe.buf_len > i32::MAX as u32 {
                return Err(ResultCode::InvalidEntry);
            }
            if !layout.buf_range_ok(sqe.buf_offset, sqe.buf_len as u64) {
                return Err(ResultCode::OutOfBounds);
            }
            Ok(Request::Fill {
                offset: sqe.buf_offset as usize,
                len: sqe.buf_len as usize,
                byte: sqe.aux as u8,
            })
        }
        opcode::SEND => {
            let [resp_offset, resp_cap, a2, a3] = sqe.args;
            if sqe.flags != 0 || sqe.reserved != 0 || a2 != 0 || a3 != 0 || resp_cap > i32::MAX as u64 {
                return Err(ResultCode::InvalidEntry);
            }
            if sqe.peer == 0 {
                return Err(ResultCode::NoSuchPeer);
            }
            if !layout.buf_range_ok(sqe.buf_offset, sqe.buf_len as u64) || !layout.buf_range_ok(resp_offset, resp_cap) {
                return Err(ResultCode::OutOfBounds);
            }
            Ok(Request::Send(SendRequest {
                peer: sqe.peer,
                service: sqe.aux,
                offset: sqe.buf_offset as usize,
                len: sqe.buf_len as usize,
                resp_offset: resp_offset as usize,
                resp_cap: resp_cap as usize,
            }))
        }
        opcode::EXPORT => {
            let [ticket, a1, a2, a3] = sqe.args;
            if sqe.flags != 0
                || sqe.reserved != 0
                || sqe.peer != 0
                || a1 != 0
                || a2 != 0
                || a3 != 0
                || !(1..=3).contains(&sqe.aux)
                || sqe.buf_len == 0
                || ticket % 8 != 0
            {
                return Err(ResultCode::InvalidEntry);
            }
            if !layout.buf_range_ok(sqe.buf_offset, sqe.buf_len as u64)
                || !layout.buf_range_ok(ticket, EXPORT_TICKET_LEN as u64)
            {
                return Err(ResultCode::OutOfBounds);
            }
            Ok(Request::Export {
                offset: sqe.buf_offset as usize,
                len: sqe.buf_len as usize,
                perms: sqe.aux,
                ticket_offset: ticket as usize,
            })
        }
        opcode::UNEXPORT => {
            let [id, a1, a2, a3] = sqe.args;
            if sqe.flags != 0
                || sqe.reserved != 0
                || sqe.peer != 0
                || sqe.aux != 0
                || a1 != 0
                || a2 != 0
                || a3 != 0
                || sqe.buf_offset != 0
                || sqe.buf_len != 0
            {
                return Err(ResultCode::InvalidEntry);
            }
            Ok(Request::Unexport { id })
        }
        opcode::READ | opcode::WRITE => {
            let [id, key, remote_offset, a3] = sqe.args;
            if sqe.flags != 0 || sqe.reserved != 0 || sqe.aux != 0 || a3 != 0 || sqe.buf_len > i32::MAX as u32 {
                return Err(ResultCode::InvalidEntry);
            }
            if sqe.peer == 0 {
                return Err(ResultCode::NoSuchPeer);
            }
            if !layout.buf_range_ok(sqe.buf_offset, sqe.buf_len as u64) {
                return Err(ResultCode::OutOfBounds);
            }
            Ok(Request::Rma(RmaRequest {
                write: sqe.opcode == opcode::WRITE,
                peer: sqe.peer,
                export_id: id,
                key,
                remote_offset,
                offset: sqe.buf_offset as usize,
                len: sqe.buf_len as usize,
            }))
        }
        opcode::READ_NEEDLE => {
            let [needle, cookie_and_jwt, range_offset, range_len] = sqe.args;
            let (cookie, jwt_len) = (cookie_and_jwt & 0xffff_ffff, (cookie_and_jwt >> 32) as usize);
            let ranged = sqe.flags & read_needle_flags::RANGE != 0;
            if sqe.flags & !read_needle_flags::ALL != 0
                || sqe.reserved != 0
                || jwt_len > MAX_NEEDLE_JWT_LEN
                || (!ranged && (range_offset != 0 || range_len != 0))
                || sqe.buf_len > i32::MAX as u32
                || (sqe.buf_len as usize) < NEEDLE_META_LEN
            {
                return Err(ResultCode::InvalidEntry);
            }
            if sqe.peer == 0 {
                return Err(ResultCode::NoSuchPeer);
            }
            if !layout.buf_range_ok(sqe.buf_offset, sqe.buf_len as u64) {
                return Err(ResultCode::OutOfBounds);
            }
            let data_cap = sqe.buf_len as usize - NEEDLE_META_LEN;
            if ranged && range_len > data_cap as u64 {
                return Err(ResultCode::OutOfBounds);
            }
            Ok(Request::ReadNeedle(NeedleRequest {
                peer: sqe.peer,
                volume: sqe.aux,
                needle,
                cookie: cookie as u32,
                range_offset,
                max_len: if ranged { range_len } else { data_cap as u64 },
                ranged,
                offset: sqe.buf_offset as usize,
                data_cap,
                jwt_len,
            }))
        }
        _ => Err(ResultCode::UnknownOpcode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> RegionLayout {
        RegionLayout::new(8, 8, 8192).unwrap()
    }

    #[test]
    fn nop_must_have_zero_fields() {
        let nop = Sqe {
            opcode: opcode::NOP,
            user_data: 99,
            ..Default::default()
        };
        assert_eq!(validate(&nop, &layout()), Ok(Request::Nop));
        for bad in [
            Sqe { flags: 1, ..nop },
            Sqe { reserved: 1, ..nop },
            Sqe { peer: 1, ..nop },
            Sqe { buf_len: 1, ..nop },
            Sqe {
                args: [0, 0, 0, 1],
                ..nop
            },
        ] {
            assert_eq!(validate(&bad, &layout()), Err(ResultCode::InvalidEntry), "{bad:?}");
        }
    }

    #[test]
    fn fill_bounds() {
        let f = Sqe {
            opcode: opcode::FILL,
            buf_offset: 4096,
            buf_len: 4096,
            aux: 0xab,
            ..Default::default()
        };
        assert_eq!(
            validate(&f, &layout()),
            Ok(Request::Fill {
                offset: 4096,
                len: 4096,
                byte: 0xab
            })
        );
        assert_eq!(
            validate(&Sqe { buf_offset: 4097, ..f }, &layout()),
            Err(ResultCode::OutOfBounds)
        );
        assert_eq!(
            validate(
                &Sqe {
                    buf_offset: u64::MAX,
                    ..f
                },
                &layout()
            ),
            Err(ResultCode::OutOfBounds)
        );
        assert_eq!(
            validate(&Sqe { aux: 256, ..f }, &layout()),
            Err(ResultCode::InvalidEntry)
        );
    }

    #[test]
    fn send_ranges_and_reserved_fields() {
        let s = Sqe {
            opcode: opcode::SEND,
            peer: 1,
            aux: 1,
            buf_offset: 0,
            buf_len: 100,
            args: [4096, 4096, 0, 0],
            ..Default::default()
        };
        assert!(matches!(
            validate(&s, &layout()),
            Ok(Request::Send(SendRequest {
                peer: 1,
                service: 1,
                len: 100,
                resp_offset: 4096,
                resp_cap: 4096,
                ..
            }))
        ));
        assert_eq!(validate(&Sqe { peer: 0, ..s }, &layout()), Err(ResultCode::NoSuchPeer));
        assert_eq!(
            validate(
                &Sqe {
                    args: [4097, 4096, 0, 0],
                    ..s
                },
                &layout()
            ),
            Err(ResultCode::OutOfBounds)
        );
        assert_eq!(
            validate(
                &Sqe {
                    args: [0, u64::MAX, 0, 0],
                    ..s
                },
                &layout()
            ),
            Err(ResultCode::InvalidEntry)
        );
        assert_eq!(
            validate(
                &Sqe {
                    args: [0, 16, 1, 0],
                    ..s
                },
                &layout()
            ),
            Err(ResultCode::InvalidEntry)
        );
        assert_eq!(
            validate(&Sqe { buf_len: 9000, ..s }, &layout()),
            Err(ResultCode::OutOfBounds)
        );
    }

    #[test]
    fn export_and_rma_validation() {
        let e = Sqe {
            opcode: opcode::EXPORT,
            buf_offset: 4096,
            buf_len: 100,
            aux: 3,
            args: [8, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            validate(&e, &layout()),
            Ok(Request::Export {
                offset: 4096,
                len: 100,
                perms: 3,
                ticket_offset: 8,
            })
        );
        assert_eq!(validate(&Sqe { aux: 4, ..e }, &layout()), Err(ResultCode::InvalidEntry));
        // The ticket: 8-aligned, all 16 bytes inside the buffer area; other args zero.
        for bad in [[4, 0, 0, 0], [8, 1, 0, 0], [8, 0, 0, 1]] {
            assert_eq!(
                validate(&Sqe { args: bad, ..e }, &layout()),
                Err(ResultCode::InvalidEntry),
                "{bad:?}"
            );
        }
        for out in [8192 - 8, u64::MAX - 7] {
            assert_eq!(
                validate(
                    &Sqe {
                        args: [out, 0, 0, 0],
                        ..e
                    },
                    &layout()
                ),
                Err(ResultCode::OutOfBounds)
            );
        }
        let u = Sqe {
            opcode: opcode::UNEXPORT,
            args: [u64::MAX, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(validate(&u, &layout()), Ok(Request::Unexport { id: u64::MAX }));
        assert_eq!(validate(&Sqe { aux: 1, ..u }, &layout()), Err(ResultCode::InvalidEntry));
        assert_eq!(
            validate(&Sqe { buf_len: 0, ..e }, &layout()),
            Err(ResultCode::InvalidEntry)
        );
        assert_eq!(
            validate(&Sqe { buf_offset: 8100, ..e }, &layout()),
            Err(ResultCode::OutOfBounds)
        );
        let r = Sqe {
            opcode: opcode::READ,
            peer: 2,
            buf_offset: 0,
            buf_len: 64,
            args: [u64::MAX - 7, 0xdead_beef_0bad_f00d, 10, 0],
            ..Default::default()
        };
        assert!(matches!(
            validate(&r, &layout()),
            Ok(Request::Rma(RmaRequest {
                write: false,
                peer: 2,
                export_id: 0xffff_ffff_ffff_fff8,
                key: 0xdead_beef_0bad_f00d,
                remote_offset: 10,
                len: 64,
                ..
            }))
        ));
        assert!(matches!(
            validate(
                &Sqe {
                    opcode: opcode::WRITE,
                    ..r
                },
                &layout()
            ),
            Ok(Request::Rma(RmaRequest { write: true, .. }))
        ));
        assert_eq!(
            validate(
                &Sqe {
                    args: [1 << 40, 0, 0, 1],
                    ..r
                },
                &layout()
            ),
            Err(ResultCode::InvalidEntry)
        );
        assert_eq!(validate(&Sqe { peer: 0, ..r }, &layout()), Err(ResultCode::NoSuchPeer));
        assert_eq!(
            validate(&Sqe { buf_offset: 8190, ..r }, &layout()),
            Err(ResultCode::OutOfBounds)
        );
    }

    #[test]
    fn read_needle_fields() {
        let r = Sqe {
            opcode: opcode::READ_NEEDLE,
            peer: 1,
            buf_offset: 0,
            buf_len: 4096,
            aux: 7,
            args: [0x1234, 0xdead_beef, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            validate(&r, &layout()),
            Ok(Request::ReadNeedle(NeedleRequest {
                peer: 1,
                volume: 7,
                needle: 0x1234,
                cookie: 0xdead_beef,
                range_offset: 0,
                max_len: 4096 - NEEDLE_META_LEN as u64,
                ranged: false,
                offset: 0,
                data_cap: 4096 - NEEDLE_META_LEN,
                jwt_len: 0,
            }))
        );
        let with_jwt = Sqe {
            args: [0x1234, 0xdead_beef | (MAX_NEEDLE_JWT_LEN as u64) << 32, 0, 0],
            ..r
        };
        assert!(
            matches!(validate(&with_jwt, &layout()), Ok(Request::ReadNeedle(n)) if n.jwt_len == MAX_NEEDLE_JWT_LEN && n.cookie == 0xdead_beef)
        );
        let ranged = Sqe {
            flags: read_needle_flags::RANGE,
            args: [0x1234, 1, 100, 10],
            ..r
        };
        assert!(
            matches!(validate(&ranged, &layout()), Ok(Request::ReadNeedle(n)) if n.ranged && n.max_len == 10 && n.range_offset == 100)
        );
        for bad in [
            Sqe { flags: 2, ..r },
            Sqe { reserved: 1, ..r },
            Sqe {
                args: [1, (MAX_NEEDLE_JWT_LEN as u64 + 1) << 32, 0, 0],
                ..r
            },
            Sqe {
                args: [1, 1 << 48, 0, 0],
                ..r
            },
            Sqe {
                args: [1, 1, 5, 0],
                ..r
            },
            Sqe {
                buf_len: NEEDLE_META_LEN as u32 - 1,
                ..r
            },
        ] {
            assert_eq!(validate(&bad, &layout()), Err(ResultCode::InvalidEntry), "{bad:?}");
        }
        assert_eq!(validate(&Sqe { peer: 0, ..r }, &layout()), Err(ResultCode::NoSuchPeer));
        assert_eq!(
            validate(
                &Sqe {
                    buf_offset: 8192 - 2048,
                    ..r
                },
                &layout()
            ),
            Err(ResultCode::OutOfBounds)
        );
        let too_long = Sqe {
            args: [1, 1, 0, 4096],
            ..ranged
        };
        assert_eq!(validate(&too_long, &layout()), Err(ResultCode::OutOfBounds));
    }

    #[test]
    fn unknown_opcodes() {
        for op in [0u8, 9, 200, 255] {
            assert_eq!(
                validate(
                    &Sqe {
                        opcode: op,
                        ..Default::default()
                    },
                    &layout()
                ),
                Err(ResultCode::UnknownOpcode)
            );
        }
    }
}
