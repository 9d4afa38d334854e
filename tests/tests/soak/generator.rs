//! What a soak session submits: a random mix of NOP, FILL, SEND to ECHO, READ_NEEDLE (whole,
//! ranged, of needles written meanwhile) and invalid requests, each with the completion it
//! must get ([`Expect`]). Preparing a request poisons the buffer bytes it must not touch.

use std::sync::Arc;

use integration_tests::echo_send;
use ring_proto::entry::read_needle_flags;
use ring_proto::needle::NEEDLE_META_LEN;
use ring_proto::{opcode, ResultCode, Sqe};

use crate::session::{payload_pool, Ctx, Soaker, BUF, GUARD, HALF, LEAD, SPAN};
use crate::volumes::NeedleRef;

/// Op kinds, for the summary.
#[derive(Clone, Copy)]
pub enum Kind {
    Nop,
    Fill,
    Echo,
    NeedleWhole,
    NeedleRange,
    NeedleNew,
    Invalid,
}
pub const KINDS: [&str; 7] = [
    "nop",
    "fill",
    "echo",
    "needle-whole",
    "needle-range",
    "needle-new",
    "invalid",
];

/// What a request must complete with.
pub enum Expect {
    Nop,
    Fill {
        off: usize,
        len: usize,
        byte: u8,
        poison: u8,
    },
    Echo {
        pool_off: usize,
        len: usize,
        resp_off: usize,
        poison: u8,
    },
    Needle {
        n: Arc<NeedleRef>,
        off: usize,
        range_offset: u64,
        len: usize,
        poison: u8,
    },
    /// An error completion; `untouched`: a range that must keep its poison.
    Fail {
        code: ResultCode,
        what: &'static str,
        remote: bool,
        untouched: Option<(usize, usize, u8)>,
    },
}

/// Where a request goes: its `user_data`, its buffer slot, the offset its range starts at
/// and the poison byte around it.
#[derive(Clone, Copy)]
struct At(u64, Option<usize>, usize, u8);

pub struct Pending {
    pub kind: Kind,
    pub slot: Option<usize>,
    pub sqe: Sqe,
    pub expect: Expect,
}

impl Soaker {
    /// Prepares one request (poisoning/writing its slot) and returns it; None: it needs a
    /// buffer slot and none is free.
    pub fn prepare(&mut self, ctx: &Ctx<'_>, nop_only: bool) -> Option<Pending> {
        let seq = self.next_seq;
        let user_data = self.user_data(seq);
        let poison = (seq as u8) ^ 0xa5;
        let choice = if nop_only { 0 } else { self.rng.percent() };
        let needs_slot = choice >= 20;
        let slot = if needs_slot { Some(self.free_slots.pop()?) } else { None };
        let base = slot.map(Self::slot_base).unwrap_or(0) + LEAD;
        let at = At(user_data, slot, base, poison);
        let p = match choice {
            0..=19 => self.nop(user_data),
            20..=37 => {
                let len = match self.rng.percent() {
                    0..=4 => 0,
                    5..=54 => self.rng.range(1, 4096),
                    55..=89 => self.rng.range(4097, 65_536),
                    _ => self.rng.range(65_537, SPAN - 2 * GUARD),
                };
                let off = base + GUARD;
                let byte = self.rng.below(256) as u8;
                let poison = !byte;
                self.poison(off - GUARD, len + 2 * GUARD, poison);
                Pending {
                    kind: Kind::Fill,
                    slot,
                    sqe: Sqe {
                        opcode: opcode::FILL,
                        user_data,
                        buf_offset: off as u64,
                        buf_len: len as u32,
                        aux: byte as u32,
                        ..Default::default()
                    },
                    expect: Expect::Fill { off, len, byte, poison },
                }
            }
            38..=61 => {
                let len = match self.rng.percent() {
                    0..=39 => self.rng.range(0, 256),
                    40..=79 => self.rng.range(257, 16_384),
                    _ => self.rng.range(16_385, HALF - LEAD - 4096),
                };
                let cap = len + self.rng.range(0, 32);
                let pool = payload_pool();
                let pool_off = self.rng.below((pool.len() - len) as u64 + 1) as usize;
                self.s.buffer().write(base, &pool[pool_off..pool_off + len]).unwrap();
                let resp_off = slot.map(Self::slot_base).unwrap() + HALF;
                self.poison(resp_off, cap + GUARD, poison);
                Pending {
                    kind: Kind::Echo,
                    slot,
                    sqe: echo_send(self.peer, user_data, base, len, resp_off, cap),
                    expect: Expect::Echo {
                        pool_off,
                        len,
                        resp_off,
                        poison,
                    },
                }
            }
            62..=94 => self.prepare_needle(ctx, at),
            _ => self.prepare_invalid(ctx, at),
        };
        Some(p)
    }

    fn nop(&self, user_data: u64) -> Pending {
        Pending {
            kind: Kind::Nop,
            slot: None,
            sqe: Sqe {
                opcode: opcode::NOP,
                user_data,
                ..Default::default()
            },
            expect: Expect::Nop,
        }
    }

    /// A READ_NEEDLE that succeeds: whole or ranged, of a needle written before the run (or
    /// the big one, ranged) or during it.
    fn prepare_needle(&mut self, ctx: &Ctx<'_>, At(user_data, slot, off, poison): At) -> Pending {
        let pick = self.rng.percent();
        let (kind, n) = if pick < 10 {
            let new = ctx.vols.new.read().unwrap();
            // The newest needles most often: they were written a moment ago.
            let i = if self.rng.below(2) == 0 {
                new.len() - 1 - self.rng.below(new.len().min(4) as u64) as usize
            } else {
                self.rng.below(new.len() as u64) as usize
            };
            (Kind::NeedleNew, new[i].clone())
        } else if pick < 15 {
            (Kind::NeedleRange, ctx.vols.big.clone())
        } else {
            let n = ctx.vols.small[self.rng.below(ctx.vols.small.len() as u64) as usize].clone();
            let kind = if self.rng.percent() < 60 {
                Kind::NeedleWhole
            } else {
                Kind::NeedleRange
            };
            (kind, n)
        };
        let size = n.data.len();
        let (flags, range_offset, range_len, len, buf_len) = if matches!(kind, Kind::NeedleRange) {
            let range_offset = match self.rng.percent() {
                0..=9 => 0,
                10..=14 => size,
                15..=19 => size.saturating_sub(self.rng.range(1, 100)),
                _ => self.rng.range(0, size),
            };
            let range_len = match self.rng.percent() {
                0..=2 => 0,
                3..=59 => self.rng.range(1, 65_536),
                _ => self.rng.range(1, SPAN - NEEDLE_META_LEN - GUARD),
            };
            let len = range_len.min(size - range_offset);
            let buf_len = NEEDLE_META_LEN + range_len + self.rng.range(0, 4096).min(SPAN - NEEDLE_META_LEN - range_len);
            (read_needle_flags::RANGE, range_offset, range_len, len, buf_len)
        } else {
            let room = SPAN - NEEDLE_META_LEN - size;
            let buf_len = NEEDLE_META_LEN + size + self.rng.range(0, room.min(8192));
            (0, 0, 0, size, buf_len)
        };
        self.poison(off, NEEDLE_META_LEN + len + GUARD, poison);
        Pending {
            kind,
            slot,
            sqe: Sqe {
                opcode: opcode::READ_NEEDLE,
                flags,
                peer: self.peer,
                user_data,
                buf_offset: off as u64,
                buf_len: buf_len as u32,
                aux: n.vid,
                args: [n.id, n.cookie as u64, range_offset as u64, range_len as u64],
                ..Default::default()
            },
            expect: Expect::Needle {
                n,
                off,
                range_offset: range_offset as u64,
                len,
                poison,
            },
        }
    }

    /// An invalid request (or one the engine must refuse), and the error it must get.
    fn prepare_invalid(&mut self, ctx: &Ctx<'_>, At(user_data, slot, off, poison): At) -> Pending {
        let peer = self.peer;
        let resp_off = slot.map(Self::slot_base).unwrap() + HALF;
        let read_needle = |vid: u32, id: u64, cookie: u32, flags: u8, range: (u64, u64), buf_len: usize| Sqe {
            opcode: opcode::READ_NEEDLE,
            flags,
            peer,
            user_data,
            buf_offset: off as u64,
            buf_len: buf_len as u32,
            aux: vid,
            args: [id, cookie as u64, range.0, range.1],
            ..Default::default()
        };
        let some_needle = ctx.vols.small[self.rng.below(ctx.vols.small.len() as u64) as usize].clone();
        let nonempty = ctx
            .vols
            .small
            .iter()
            .filter(|n| !n.data.is_empty())
            .nth(self.rng.below(20) as usize)
            .unwrap()
            .clone();
        let meta_area = NEEDLE_META_LEN + GUARD;
        // (entry, code, what, reached the peer, range that must keep its poison)
        let (sqe, code, what, remote, untouched): (Sqe, ResultCode, &'static str, bool, Option<(usize, usize)>) =
            match self.rng.below(16) {
                0 => (
                    Sqe {
                        opcode: 0xee,
                        user_data,
                        ..Default::default()
                    },
                    ResultCode::UnknownOpcode,
                    "unknown opcode",
                    false,
                    None,
                ),
                1 => (
                    Sqe {
                        opcode: opcode::NOP,
                        user_data,
                        aux: 1,
                        ..Default::default()
                    },
                    ResultCode::InvalidEntry,
                    "NOP with aux",
                    false,
                    None,
                ),
                2 => (
                    Sqe {
                        opcode: opcode::FILL,
                        user_data,
                        buf_offset: off as u64,
                        buf_len: 64,
                        aux: 256,
                        ..Default::default()
                    },
                    ResultCode::InvalidEntry,
                    "FILL byte > 255",
                    false,
                    Some((off, 64 + GUARD)),
                ),
                3 => (
                    Sqe {
                        opcode: opcode::FILL,
                        user_data,
                        buf_offset: (BUF - 8) as u64,
                        buf_len: 64,
                        aux: 1,
                        ..Default::default()
                    },
                    ResultCode::OutOfBounds,
                    "FILL past the buffer",
                    false,
                    None,
                ),
                4 => (
                    echo_send(9999, user_data, off, 32, resp_off, 32),
                    ResultCode::NoSuchPeer,
                    "SEND to an unknown peer",
                    false,
                    Some((resp_off, 32 + GUARD)),
                ),
                5 => (
                    Sqe {
                        aux: 77,
                        ..echo_send(peer, user_data, off, 32, resp_off, 32)
                    },
                    ResultCode::UnknownService,
                    "SEND to an unknown service",
                    true,
                    Some((resp_off, 32 + GUARD)),
                ),
                6 => (
                    echo_send(peer, user_data, off, 64, resp_off, 8),
                    ResultCode::ResponseTooLarge,
                    "SEND response larger than its capacity",
                    true,
                    Some((resp_off, 8 + GUARD)),
                ),
                7 => (
                    echo_send(peer, user_data, off, 32, BUF - 16, 32),
                    ResultCode::OutOfBounds,
                    "SEND response past the buffer",
                    false,
                    None,
                ),
                8 => (
                    read_needle(
                        nonempty.vid,
                        nonempty.id,
                        nonempty.cookie ^ 0x8000_0001,
                        0,
                        (0, 0),
                        2048,
                    ),
                    ResultCode::CookieMismatch,
                    "READ_NEEDLE with a wrong cookie",
                    true,
                    Some((off, meta_area)),
                ),
                9 => (
                    read_needle(some_needle.vid, 999_999, 1, 0, (0, 0), 2048),
                    ResultCode::NoSuchNeedle,
                    "READ_NEEDLE of a needle never written",
                    true,
                    Some((off, meta_area)),
                ),
                10 => (
                    read_needle(42, 1, 1, 0, (0, 0), 2048),
                    ResultCode::NoSuchVolume,
                    "READ_NEEDLE of a volume not served",
                    true,
                    Some((off, meta_area)),
                ),
                11 => {
                    let (vid, id, cookie) = ctx.vols.deleted;
                    (
                        read_needle(vid, id, cookie, 0, (0, 0), 2048),
                        ResultCode::NeedleDeleted,
                        "READ_NEEDLE of a deleted needle",
                        true,
                        Some((off, meta_area)),
                    )
                }
                12 => (
                    read_needle(
                        some_needle.vid,
                        some_needle.id,
                        some_needle.cookie,
                        read_needle_flags::RANGE,
                        (some_needle.data.len() as u64 + 1 + self.rng.below(1000), 16),
                        2048,
                    ),
                    ResultCode::RangeNotSatisfiable,
                    "READ_NEEDLE range past the data",
                    true,
                    Some((off, meta_area)),
                ),
                13 => {
                    let big = &ctx.vols.big;
                    (
                        read_needle(big.vid, big.id, big.cookie, 0, (0, 0), SPAN),
                        ResultCode::ResponseTooLarge,
                        "READ_NEEDLE of a needle larger than the buffer",
                        true,
                        Some((off, meta_area)),
                    )
                }
                14 => (
                    read_needle(some_needle.vid, some_needle.id, some_needle.cookie, 0x2, (0, 0), 2048),
                    ResultCode::InvalidEntry,
                    "READ_NEEDLE with an unknown flag",
                    false,
                    Some((off, meta_area)),
                ),
                _ => (
                    read_needle(
                        some_needle.vid,
                        some_needle.id,
                        some_needle.cookie,
                        read_needle_flags::RANGE,
                        (0, 2048 - NEEDLE_META_LEN as u64 + 1),
                        2048,
                    ),
                    ResultCode::OutOfBounds,
                    "READ_NEEDLE range longer than its buffer",
                    false,
                    Some((off, meta_area)),
                ),
            };
        if let Some((at, len)) = untouched {
            self.poison(at, len, poison);
        }
        if sqe.opcode == opcode::SEND {
            self.s
                .buffer()
                .write(off, &payload_pool()[..sqe.buf_len as usize])
                .unwrap();
        }
        Pending {
            kind: Kind::Invalid,
            slot,
            sqe,
            expect: Expect::Fail {
                code,
                what,
                remote,
                untouched: untouched.map(|(a, l)| (a, l, poison)),
            },
        }
    }
}
