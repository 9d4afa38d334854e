//! Soak: one engine (two workers where the machine allows) serves a SeaweedFS volume
//! directory (written here in SeaweedFS's format, and appended to while the engine serves) and
//! reads it through its own UCX listener. 64 sessions, driven by 8 threads, keep up to
//! `sq_entries + cq_entries` requests in flight each and mix NOP, FILL, SEND to ECHO,
//! READ_NEEDLE (whole and ranged, 0 B to 1 MiB, needles written before and during the run) and
//! invalid requests. The test counts every submission and completion: each `user_data`
//! completes exactly once, with exactly the expected result; every byte the engine put in a
//! buffer is compared with what it must be, and the bytes around each request's range with the
//! poison the test wrote there. At the end `engine status --json` must count exactly what the
//! test counted (per session, per worker, per peer, per error kind), every session is closed,
//! the engine holds the descriptors it held before the soak, and it exits 0 on SIGTERM.
//!
//! It asserts outcomes only, never speed. Knobs (environment):
//! - `SWRING_SOAK_SECONDS`: how long the load runs (default 20; CI keeps the default; longer
//!   runs, e.g. before a release: `SWRING_SOAK_SECONDS=600 cargo test -p integration-tests
//!   --test soak -- --nocapture`).
//! - `SWRING_SOAK_TLS`: UCX transports (default `tcp`; `sm,tcp` moves the data over shared
//!   memory).
//! - `SWRING_SOAK_SEED`: replays the random choices of a run (each run prints its seed).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use integration_tests::{echo_send, wait_until, Engine, PATIENCE};
use ring_client::{Session, SessionOptions};
use ring_proto::entry::read_needle_flags;
use ring_proto::needle::{NeedleMeta, NEEDLE_META_LEN};
use ring_proto::{opcode, Cqe, ResultCode, Sqe};
use seaweed_format::crc32c;
use seaweed_format::writer::{full_needle, needle, VolumeWriter};
use serde_json::Value;

const SESSIONS: usize = 64;
const THREADS: usize = 8;
const SQ_ENTRIES: u32 = 16;
const CQ_ENTRIES: u32 = 16;
/// Requests a session may have outstanding (SPEC §7: `sq_entries + cq_entries`).
const MAX_OUTSTANDING: usize = (SQ_ENTRIES + CQ_ENTRIES) as usize;
/// Buffer slots per session; every request that names buffer bytes owns one while in flight.
const SLOTS: usize = 8;
/// One slot: room for a 1 MiB needle with its metadata, plus poison around it.
const SLOT: usize = (1 << 20) + (64 << 10);
const BUF: usize = SLOTS * SLOT;
/// A request's range starts this far into its slot; the bytes before it are poisoned.
const LEAD: usize = 64;
/// Bytes after each range (and before FILLs) that must keep their poison.
const GUARD: usize = 64;
/// The most a request's range may span in a slot.
const SPAN: usize = SLOT - LEAD - 4096;
/// SEND: payload at the slot's start, response in its second half.
const HALF: usize = SLOT / 2;
/// Volumes: `V3` (version 3, 16-byte idx), `V2` (collection "soak", version 2, 17-byte idx),
/// `VNEW` (version 3, appended to during the soak).
const V3: u32 = 3;
const V2: u32 = 7;
const VNEW: u32 = 9;
const NEW_NEEDLES_MAX: usize = 1000;

/// xorshift64*: reproducible from its seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }
    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// 4 KiB of each byte value, to write and compare runs of one byte with memcpy/memcmp.
fn byte_pages() -> &'static [Vec<u8>] {
    static PAGES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    PAGES.get_or_init(|| (0..=255u8).map(|b| vec![b; 4096]).collect())
}

/// Where SEND payloads come from: payload (session, seq) is a slice of this at an offset
/// derived from both.
fn payload_pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| pattern(2 << 20, 0x5eed))
}

/// A needle as the test wrote it, and the metadata the engine must return for it.
struct NeedleRef {
    vid: u32,
    id: u64,
    cookie: u32,
    data: Vec<u8>,
    meta: NeedleMeta,
}

fn plain_meta(vid_version: u8, id: u64, data: &[u8]) -> NeedleMeta {
    NeedleMeta {
        data_size: data.len() as u64,
        range_offset: 0,
        last_modified: 0,
        append_at_ns: if vid_version == 3 {
            1_700_000_000_000_000_000 + id
        } else {
            0
        },
        checksum: crc32c(data),
        flags: 0,
        version: vid_version,
        ttl: [0, 0],
        name: Vec::new(),
        mime: Vec::new(),
    }
}

/// The needles a run reads: written before the engine starts, plus those written meanwhile.
struct Volumes {
    /// Readable whole into one slot.
    small: Vec<Arc<NeedleRef>>,
    /// Larger than a slot: ranged reads only (whole: response-too-large).
    big: Arc<NeedleRef>,
    /// Deleted (needle-deleted).
    deleted: (u32, u64, u32),
    /// Written during the run, each published after its `.idx` entry is on disk.
    new: RwLock<Vec<Arc<NeedleRef>>>,
}

#[rustfmt::skip]
const SIZES: [usize; 28] = [
    0, 1, 2, 7, 8, 9, 100, 1000, 1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 10_000, 16_384, 65_535, 65_536,
    65_537, 100_000, 131_072, 262_144, 500_000, 777_777, 1_000_000, 1 << 20,
];

fn write_volumes(dir: &Path) -> (Volumes, VolumeWriter) {
    let mut v3 = VolumeWriter::create(dir, "", V3, 3, 16).unwrap();
    let mut v2 = VolumeWriter::create(dir, "soak", V2, 2, 17).unwrap();
    let mut small = Vec::new();
    for (i, &n) in SIZES.iter().enumerate() {
        for (w, vid, version, cookie) in [
            (&mut v3, V3, 3u8, 0x5eed_0000 + i as u32),
            (&mut v2, V2, 2u8, 0x0a7e_0000 + i as u32),
        ] {
            let id = i as u64 + 1;
            let data = pattern(n, vid as u64 * 1000 + i as u64);
            w.write(&needle(id, cookie, &data)).unwrap();
            small.push(Arc::new(NeedleRef {
                vid,
                id,
                cookie,
                meta: plain_meta(version, id, &data),
                data,
            }));
        }
    }
    // Every optional field, as an upload through the HTTP API leaves it.
    let full_data = pattern(5000, 77);
    let spec = full_needle(100, 77, &full_data);
    v3.write(&spec).unwrap();
    small.push(Arc::new(NeedleRef {
        vid: V3,
        id: 100,
        cookie: 77,
        meta: NeedleMeta {
            last_modified: spec.last_modified,
            flags: spec.flags,
            ttl: spec.ttl,
            name: spec.name.clone(),
            mime: spec.mime.clone(),
            ..plain_meta(3, 100, &full_data)
        },
        data: full_data,
    }));
    // Overwritten: the last entry wins.
    v3.write(&needle(200, 5, &pattern(3000, 200))).unwrap();
    let newer = pattern(7000, 201);
    v3.write(&needle(200, 5, &newer)).unwrap();
    small.push(Arc::new(NeedleRef {
        vid: V3,
        id: 200,
        cookie: 5,
        meta: plain_meta(3, 200, &newer),
        data: newer,
    }));
    v3.write(&needle(300, 6, b"short-lived")).unwrap();
    v3.delete(300, 6).unwrap();
    let big_data = pattern(3 << 20, 400);
    v3.write(&needle(400, 9, &big_data)).unwrap();
    let big = Arc::new(NeedleRef {
        vid: V3,
        id: 400,
        cookie: 9,
        meta: plain_meta(3, 400, &big_data),
        data: big_data,
    });
    // The volume appended to during the run starts with one needle.
    let mut vnew = VolumeWriter::create(dir, "", VNEW, 3, 16).unwrap();
    let first = pattern(100, 9000);
    vnew.write(&needle(1, 1, &first)).unwrap();
    let new = vec![Arc::new(NeedleRef {
        vid: VNEW,
        id: 1,
        cookie: 1,
        meta: plain_meta(3, 1, &first),
        data: first,
    })];
    (
        Volumes {
            small,
            big,
            deleted: (V3, 300, 6),
            new: RwLock::new(new),
        },
        vnew,
    )
}

/// Op kinds, for the summary.
#[derive(Clone, Copy)]
enum Kind {
    Nop,
    Fill,
    Echo,
    NeedleWhole,
    NeedleRange,
    NeedleNew,
    Invalid,
}
const KINDS: [&str; 7] = [
    "nop",
    "fill",
    "echo",
    "needle-whole",
    "needle-range",
    "needle-new",
    "invalid",
];

/// What a request must complete with.
enum Expect {
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

struct Pending {
    kind: Kind,
    slot: Option<usize>,
    sqe: Sqe,
    expect: Expect,
}

/// Totals across sessions.
#[derive(Default, Clone)]
struct Tally {
    submitted: u64,
    completed: u64,
    errors: u64,
    errors_by_kind: BTreeMap<&'static str, u64>,
    /// Completions -1..-3 (SPEC §4: they also count in the SQ `invalid` counter).
    rejected: u64,
    /// Requests that reached the peer engine, and those of them that succeeded.
    remote_sent: u64,
    remote_ok: u64,
    ops: [u64; KINDS.len()],
    bytes_checked: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.errors += o.errors;
        for (k, v) in &o.errors_by_kind {
            *self.errors_by_kind.entry(k).or_default() += v;
        }
        self.rejected += o.rejected;
        self.remote_sent += o.remote_sent;
        self.remote_ok += o.remote_ok;
        for (a, b) in self.ops.iter_mut().zip(o.ops) {
            *a += b;
        }
        self.bytes_checked += o.bytes_checked;
    }
}

/// What every driver thread shares.
struct Ctx<'a> {
    engine: &'a Engine,
    vols: &'a Volumes,
}

impl Ctx<'_> {
    fn log_tail(&self) -> String {
        let log = self.engine.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// One session and everything the test knows about it.
struct Soaker {
    idx: usize,
    s: Session,
    peer: u32,
    rng: Rng,
    next_seq: u64,
    in_flight: HashMap<u64, Pending>,
    /// One bit per seq: completed.
    done: Vec<u64>,
    free_slots: Vec<usize>,
    tally: Tally,
    last_completion: Instant,
    scratch: Vec<u8>,
    cqes: Vec<Cqe>,
}

impl Soaker {
    fn new(idx: usize, s: Session, peer: u32, seed: u64) -> Self {
        Self {
            idx,
            s,
            peer,
            rng: Rng((seed ^ (idx as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1),
            next_seq: 0,
            in_flight: HashMap::new(),
            done: Vec::new(),
            free_slots: (0..SLOTS).rev().collect(),
            tally: Tally::default(),
            last_completion: Instant::now(),
            scratch: vec![0; SLOT],
            cqes: Vec::new(),
        }
    }

    fn user_data(&self, seq: u64) -> u64 {
        ((self.idx as u64 + 1) << 48) | seq
    }

    fn name(&self) -> String {
        format!(
            "session #{} (id {}, worker {})",
            self.idx,
            self.s.session_id(),
            self.s.worker()
        )
    }

    fn poison(&self, off: usize, len: usize, byte: u8) {
        let page = &byte_pages()[byte as usize];
        let mut at = off;
        while at < off + len {
            let n = (off + len - at).min(page.len());
            self.s.buffer().write(at, &page[..n]).expect("poison inside the buffer");
            at += n;
        }
    }

    /// `len` buffer bytes at `off`, read into the scratch area.
    fn read(&mut self, off: usize, len: usize) -> &[u8] {
        self.s
            .buffer()
            .read(off, &mut self.scratch[..len])
            .expect("read inside the buffer");
        &self.scratch[..len]
    }

    /// Checks that `len` bytes at `off` all hold `byte`; the first that does not, else None.
    fn first_not(&mut self, off: usize, len: usize, byte: u8) -> Option<(usize, u8)> {
        let page = &byte_pages()[byte as usize];
        let area = self.read(off, len);
        for (i, c) in area.chunks(4096).enumerate() {
            if c != &page[..c.len()] {
                let j = c.iter().position(|&b| b != byte).unwrap();
                return Some((i * 4096 + j, c[j]));
            }
        }
        None
    }

    fn slot_base(slot: usize) -> usize {
        slot * SLOT
    }

    /// Prepares one request (poisoning/writing its slot) and returns it; None: it needs a
    /// buffer slot and none is free.
    fn prepare(&mut self, ctx: &Ctx<'_>, nop_only: bool) -> Option<Pending> {
        let seq = self.next_seq;
        let user_data = self.user_data(seq);
        let poison = (seq as u8) ^ 0xa5;
        let choice = if nop_only { 0 } else { self.rng.percent() };
        let needs_slot = choice >= 20;
        let slot = if needs_slot { Some(self.free_slots.pop()?) } else { None };
        let base = slot.map(Self::slot_base).unwrap_or(0) + LEAD;
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
            62..=94 => self.prepare_needle(ctx, user_data, slot, base, poison),
            _ => self.prepare_invalid(ctx, user_data, slot, base, poison),
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

    fn prepare_needle(
        &mut self,
        ctx: &Ctx<'_>,
        user_data: u64,
        slot: Option<usize>,
        off: usize,
        poison: u8,
    ) -> Pending {
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

    fn prepare_invalid(
        &mut self,
        ctx: &Ctx<'_>,
        user_data: u64,
        slot: Option<usize>,
        off: usize,
        poison: u8,
    ) -> Pending {
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

    /// Submits a batch of requests; false if it submitted nothing.
    fn top_up(&mut self, ctx: &Ctx<'_>) -> bool {
        let free = self.s.submission().free() as usize;
        let room = MAX_OUTSTANDING - self.in_flight.len();
        // Mostly small batches; now and then a burst of NOPs that fills the SQ and keeps more
        // requests outstanding than the CQ holds (the engine must wait for CQ room, §7).
        let burst = self.rng.below(1000) < 3;
        if !burst && self.free_slots.is_empty() {
            return false; // wait for completions rather than pile up NOPs
        }
        let want = if burst { room } else { self.rng.range(1, 8) };
        let n = free.min(room).min(want);
        if n == 0 {
            return false;
        }
        let me = self.name();
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(p) = self.prepare(ctx, burst) else {
                break;
            };
            self.next_seq += 1;
            batch.push(p);
        }
        {
            let mut q = self.s.submission();
            for p in &batch {
                if let Err(e) = q.push(&p.sqe) {
                    panic!(
                        "{me}: push of {:?} failed with {free} free SQ slots reported: {e}\n{}",
                        p.sqe,
                        ctx.log_tail()
                    );
                }
            }
            q.sync()
                .unwrap_or_else(|e| panic!("{me}: SQ sync failed: {e}\n{}", ctx.log_tail()));
        }
        for p in batch {
            self.tally.submitted += 1;
            let seq = p.sqe.user_data & ((1 << 48) - 1);
            self.in_flight.insert(seq, p);
        }
        true
    }

    /// Reaps and checks every completion ready now; false if there was none.
    fn reap(&mut self, ctx: &Ctx<'_>) -> bool {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        if let Err(e) = self.s.completions().map(|q| cqes.extend(q)) {
            panic!("{}: completion queue: {e}\n{}", self.name(), ctx.log_tail());
        }
        let any = !cqes.is_empty();
        for c in &cqes {
            self.check(ctx, c);
        }
        self.cqes = cqes;
        if any {
            self.last_completion = Instant::now();
        }
        any
    }

    fn check(&mut self, ctx: &Ctx<'_>, c: &Cqe) {
        let me = self.name();
        let owner = (c.user_data >> 48) as usize;
        let seq = c.user_data & ((1 << 48) - 1);
        assert_eq!(
            owner,
            self.idx + 1,
            "{me}: completion {c:?} belongs to session #{}\n{}",
            owner.wrapping_sub(1),
            ctx.log_tail()
        );
        let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        if word >= self.done.len() {
            self.done.resize(word + 1, 0);
        }
        assert!(
            self.done[word] & bit == 0,
            "{me}: duplicate completion {c:?} (seq {seq})\n{}",
            ctx.log_tail()
        );
        let Some(p) = self.in_flight.remove(&seq) else {
            panic!(
                "{me}: completion {c:?} for seq {seq}, never submitted (next seq {})",
                self.next_seq
            );
        };
        self.done[word] |= bit;
        self.tally.completed += 1;
        self.tally.ops[p.kind as usize] += 1;
        assert_eq!(c.flags, 0, "{me}: CQE flags of {c:?} (v1 defines none)");
        if c.result < 0 {
            self.tally.errors += 1;
            let name = ResultCode::from_result(c.result).map_or("other", ResultCode::name);
            *self.tally.errors_by_kind.entry(name).or_default() += 1;
            if (-3..=-1).contains(&c.result) {
                self.tally.rejected += 1;
            }
        }
        let ctx_msg = |what: &str| format!("{me}: seq {seq}, {what}, entry {:?}: completion {c:?}", p.sqe);
        match &p.expect {
            Expect::Nop => assert_eq!(c.result, 0, "{}", ctx_msg("NOP")),
            &Expect::Fill { off, len, byte, poison } => {
                assert_eq!(c.result, len as i32, "{}", ctx_msg("FILL"));
                if let Some((i, b)) = self.first_not(off, len, byte) {
                    panic!("{}: byte {i} is {b:#x}, not the fill byte {byte:#x}", ctx_msg("FILL"));
                }
                for at in [off - GUARD, off + len] {
                    if let Some((i, b)) = self.first_not(at, GUARD, poison) {
                        panic!(
                            "{}: FILL wrote outside its range: byte {} of the buffer is {b:#x}",
                            ctx_msg("FILL"),
                            at + i
                        );
                    }
                }
                self.tally.bytes_checked += (len + 2 * GUARD) as u64;
            }
            &Expect::Echo {
                pool_off,
                len,
                resp_off,
                poison,
            } => {
                self.tally.remote_sent += 1;
                assert_eq!(c.result, len as i32, "{}\n{}", ctx_msg("SEND to ECHO"), ctx.log_tail());
                self.tally.remote_ok += 1;
                let want = &payload_pool()[pool_off..pool_off + len];
                let got = self.read(resp_off, len);
                if got != want {
                    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                    panic!(
                        "{}: echoed byte {i} is {:#x}, sent {:#x}",
                        ctx_msg("SEND to ECHO"),
                        got[i],
                        want[i]
                    );
                }
                if let Some((i, b)) = self.first_not(resp_off + len, GUARD, poison) {
                    panic!(
                        "{}: the response overran its {len} bytes: byte {i} after it is {b:#x}",
                        ctx_msg("SEND to ECHO")
                    );
                }
                self.tally.bytes_checked += (len + GUARD) as u64;
            }
            Expect::Needle {
                n,
                off,
                range_offset,
                len,
                poison,
            } => {
                let (off, range_offset, len, poison) = (*off, *range_offset, *len, *poison);
                self.tally.remote_sent += 1;
                let what = format!(
                    "READ_NEEDLE {},{} ({} B, range {range_offset}+{})",
                    n.vid,
                    n.id,
                    n.data.len(),
                    p.sqe.args[3]
                );
                assert_eq!(c.result, len as i32, "{}\n{}", ctx_msg(&what), ctx.log_tail());
                self.tally.remote_ok += 1;
                let meta_bytes = self.read(off, NEEDLE_META_LEN).to_vec();
                let meta = NeedleMeta::decode(&meta_bytes)
                    .unwrap_or_else(|e| panic!("{}: metadata does not decode: {e}", ctx_msg(&what)));
                let want_meta = NeedleMeta {
                    range_offset,
                    ..n.meta.clone()
                };
                assert_eq!(meta, want_meta, "{}: metadata", ctx_msg(&what));
                let want = &n.data[range_offset as usize..range_offset as usize + len];
                let got = self.read(off + NEEDLE_META_LEN, len);
                if got != want {
                    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                    panic!(
                        "{}: data byte {i} is {:#x}, stored {:#x}",
                        ctx_msg(&what),
                        got[i],
                        want[i]
                    );
                }
                if let Some((i, b)) = self.first_not(off + NEEDLE_META_LEN + len, GUARD, poison) {
                    panic!(
                        "{}: data overran its {len} bytes: byte {i} after it is {b:#x}",
                        ctx_msg(&what)
                    );
                }
                self.tally.bytes_checked += (want_meta.encoded_len() + len + GUARD) as u64;
            }
            Expect::Fail {
                code,
                what,
                remote,
                untouched,
            } => {
                if *remote {
                    self.tally.remote_sent += 1;
                }
                assert_eq!(
                    c.result,
                    *code as i32,
                    "{}: expected {}, got {:?}",
                    ctx_msg(what),
                    code.name(),
                    ResultCode::from_result(c.result)
                );
                if let &Some((at, len, poison)) = untouched {
                    if let Some((i, b)) = self.first_not(at, len, poison) {
                        panic!(
                            "{}: a failed request changed its buffer: byte {i} of {len} is {b:#x}",
                            ctx_msg(what)
                        );
                    }
                    self.tally.bytes_checked += len as u64;
                }
            }
        }
        if let Some(s) = p.slot {
            self.free_slots.push(s);
        }
    }

    fn check_stall(&self, ctx: &Ctx<'_>) {
        let state = self.s.state();
        assert!(
            !state.is_terminal(),
            "{}: session ended ({state:?}, {:?}) with {} requests in flight\n{}",
            self.name(),
            self.s.close_reason(),
            self.in_flight.len(),
            ctx.log_tail()
        );
        if self.in_flight.is_empty() || self.last_completion.elapsed() < PATIENCE {
            return;
        }
        let mut seqs: Vec<_> = self.in_flight.iter().map(|(s, p)| (*s, p.sqe)).collect();
        seqs.sort_by_key(|(s, _)| *s);
        let status = ctx.engine.status_json();
        let mine = status["sessions"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == self.s.session_id()).cloned());
        panic!(
            "{}: no completion for {PATIENCE:?} with {} requests in flight: {seqs:?}\nsession status: {mine:?}\nworkers: {}\n{}",
            self.name(),
            seqs.len(),
            status["workers"],
            ctx.log_tail()
        );
    }

    /// After the run: nothing outstanding, every submitted seq completed exactly once.
    fn assert_complete(&self) {
        let me = self.name();
        assert!(
            self.in_flight.is_empty(),
            "{me}: {} requests never completed",
            self.in_flight.len()
        );
        assert_eq!(self.tally.submitted, self.next_seq, "{me}");
        assert_eq!(self.tally.completed, self.tally.submitted, "{me}");
        let bits: u64 = self.done.iter().map(|w| w.count_ones() as u64).sum();
        assert_eq!(bits, self.next_seq, "{me}: completed seqs");
        assert!(
            (0..self.next_seq).all(|s| self.done[s as usize / 64] & (1 << (s % 64)) != 0),
            "{me}: a seq never completed"
        );
        assert_eq!(self.free_slots.len(), SLOTS, "{me}: slots");
    }
}

/// Runs `sessions` until `deadline`, then drains them; returns early if another thread
/// failed (`abort`).
fn drive(sessions: &mut [Soaker], ctx: &Ctx<'_>, deadline: Instant, abort: &AtomicBool) {
    loop {
        if abort.load(Ordering::Relaxed) {
            return;
        }
        let stopping = Instant::now() >= deadline;
        let mut progress = false;
        let mut in_flight = false;
        for s in sessions.iter_mut() {
            progress |= s.reap(ctx);
            if !stopping {
                progress |= s.top_up(ctx);
            }
            in_flight |= !s.in_flight.is_empty();
            s.check_stall(ctx);
        }
        if stopping && !in_flight {
            return;
        }
        if !progress {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Sets the flag if the thread holding it panics.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// The cores for the engine's workers: the last two this process may run on (one if only one).
fn worker_cores() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    allowed[allowed.len().saturating_sub(2)..].to_vec()
}

/// The engine's descriptors as "fd -> target", for telling which one leaked.
fn fd_targets(engine: &Engine) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{}/fd", engine.pid()))
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some(format!("{} -> {}", e.file_name().to_string_lossy(), target.display()))
            })
            .collect()
        })
        .unwrap_or_default()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}

/// Counters summed over the workers (or peers): submitted, completed, errors, errors by kind.
#[derive(Debug, Clone, PartialEq, Default)]
struct EngineCounts {
    submitted: u64,
    completed: u64,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    sessions_opened: u64,
    sessions_closed: u64,
    peer_requests: u64,
    peer_failures: u64,
    peer_timeouts: u64,
    peer_timed: u64,
}

impl EngineCounts {
    fn of(status: &Value) -> Self {
        let mut c = EngineCounts::default();
        for w in status["workers"].as_array().unwrap() {
            c.submitted += u(&w["submitted"]);
            c.completed += u(&w["completed"]);
            c.errors += u(&w["errors"]);
            for (k, v) in w["errors_by_kind"].as_object().unwrap() {
                *c.errors_by_kind.entry(k.clone()).or_default() += u(v);
            }
            c.sessions_opened += u(&w["sessions_opened"]);
            c.sessions_closed += u(&w["sessions_closed"]);
        }
        for p in status["peers"].as_array().unwrap() {
            c.peer_requests += u(&p["requests"]);
            c.peer_failures += u(&p["failures"]);
            c.peer_timeouts += u(&p["timeouts"]);
            let l = &p["latency"];
            c.peer_timed += l["counts"].as_array().unwrap().iter().map(u).sum::<u64>() + u(&l["overflow"]);
        }
        c
    }

    /// What the soak changed.
    fn minus(&self, before: &Self) -> Self {
        let mut kinds = self.errors_by_kind.clone();
        for (k, v) in kinds.iter_mut() {
            *v -= before.errors_by_kind.get(k).copied().unwrap_or(0);
        }
        kinds.retain(|_, v| *v != 0);
        EngineCounts {
            submitted: self.submitted - before.submitted,
            completed: self.completed - before.completed,
            errors: self.errors - before.errors,
            errors_by_kind: kinds,
            sessions_opened: self.sessions_opened - before.sessions_opened,
            sessions_closed: self.sessions_closed - before.sessions_closed,
            peer_requests: self.peer_requests - before.peer_requests,
            peer_failures: self.peer_failures - before.peer_failures,
            peer_timeouts: self.peer_timeouts - before.peer_timeouts,
            peer_timed: self.peer_timed - before.peer_timed,
        }
    }
}

fn connect(engine: &Engine, buf: usize) -> Session {
    engine
        .try_connect(SessionOptions {
            sq_entries: SQ_ENTRIES,
            cq_entries: CQ_ENTRIES,
            buf_size: buf as u64,
            keepalive: true,
        })
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", engine.log()))
}

/// Warm-up on every worker: the UCX context, each worker's connection to the listener and
/// the listener's side of it are created once and stay; the baseline is taken after this.
fn warm_up(engine: &Engine, addr: &str, vols: &Volumes, workers: usize) {
    let mut sessions: Vec<Session> = Vec::new();
    while sessions
        .iter()
        .map(|s| s.worker())
        .collect::<std::collections::HashSet<_>>()
        .len()
        < workers
    {
        assert!(sessions.len() < 4 * workers, "new sessions never reached every worker");
        sessions.push(connect(engine, 2 << 20));
    }
    let n = vols.small.iter().max_by_key(|n| n.data.len()).unwrap();
    for s in &mut sessions {
        let peer = s.connect_peer(addr).unwrap();
        s.buffer().write(0, &payload_pool()[..100_000]).unwrap();
        s.submit(&echo_send(peer, 1, 0, 100_000, 1 << 20, 100_000)).unwrap();
        s.submit(&Sqe {
            opcode: opcode::READ_NEEDLE,
            peer,
            user_data: 2,
            buf_offset: 0,
            buf_len: (2 << 20) - 4096,
            aux: n.vid,
            args: [n.id, n.cookie as u64, 0, 0],
            ..Default::default()
        })
        .unwrap();
        let mut results: Vec<(u64, i32)> = (0..2)
            .map(|_| {
                let c = s
                    .wait_cqe(Duration::from_micros(50), Some(PATIENCE))
                    .unwrap_or_else(|e| panic!("warm-up: {e}\n{}", engine.log()));
                (c.user_data, c.result)
            })
            .collect();
        results.sort();
        assert_eq!(
            results,
            [(1, 100_000), (2, n.data.len() as i32)],
            "warm-up\n{}",
            engine.log()
        );
    }
    for s in sessions {
        assert!(s.close().unwrap().is_empty());
    }
    engine.wait_live_sessions(0);
    wait_until(
        "warm-up sessions' registrations released",
        || engine.status_json()["engine"]["ucx_registrations"] == 0,
        || engine.status_json().to_string(),
    );
}

#[test]
fn soak_64_sessions_mixing_nop_messaging_and_needles_count_every_completion_and_byte() {
    let secs: f64 = std::env::var("SWRING_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let tls = std::env::var("SWRING_SOAK_TLS").unwrap_or_else(|_| "tcp".into());
    let seed: u64 = std::env::var("SWRING_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak: SWRING_SOAK_SECONDS={secs} SWRING_SOAK_TLS={tls} SWRING_SOAK_SEED={seed}");

    let dir = tempfile::tempdir().unwrap();
    let (vols, mut vnew) = write_volumes(dir.path());
    let cores = worker_cores();
    let cores_arg = cores.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let devices = if tls.contains("sm") { "lo,memory" } else { "lo" };
    let engine = Engine::start(&[
        "--cores",
        &cores_arg,
        "--seaweedfs-dir",
        dir.path().to_str().unwrap(),
        "--ucx-listen",
        "127.0.0.1:0",
        "--ucx-transports",
        &tls,
        "--ucx-net-devices",
        devices,
    ]);
    let addr = engine.ucx_listen_addr();
    let workers = engine.status_json()["workers"].as_array().unwrap().len();
    assert_eq!(workers, cores.len(), "one worker per core");

    warm_up(&engine, &addr, &vols, workers);
    // A descriptor may still be closing (the control connection of the last `engine status`):
    // the baseline is a count that holds still.
    let mut fds_before = engine.fd_count();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let n = engine.fd_count();
        if n == fds_before {
            break;
        }
        fds_before = n;
    }
    let fds_listed = fd_targets(&engine);
    let maps_before = engine.map_count();
    let before = EngineCounts::of(&engine.status_json());
    let log_start = engine.log().len();

    // 64 sessions, each registering the engine's own listener as its peer (the registry hands
    // out one handle per address, so they share it).
    let mut soakers: Vec<Soaker> = (0..SESSIONS)
        .map(|i| {
            let mut s = connect(&engine, BUF);
            let peer = s.connect_peer(&addr).unwrap();
            Soaker::new(i, s, peer, seed)
        })
        .collect();
    let status = engine.status_json();
    assert_eq!(u(&status["engine"]["sessions_open"]), SESSIONS as u64, "{status}");
    let per_worker: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| u(&w["sessions"]))
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "sessions are spread over every worker: {per_worker:?}"
    );

    let ctx = Ctx {
        engine: &engine,
        vols: &vols,
    };
    let abort = AtomicBool::new(false);
    let new_written = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let per_thread = SESSIONS / THREADS;
    let mut groups: Vec<Vec<Soaker>> = Vec::new();
    while !soakers.is_empty() {
        let rest = soakers.split_off(per_thread.min(soakers.len()));
        groups.push(std::mem::replace(&mut soakers, rest));
    }
    let soakers: Vec<Soaker> = std::thread::scope(|scope| {
        // The volume server keeps writing: needles appended to volume VNEW, each published to
        // the readers once its .idx entry is written (the engine finds it on a miss).
        let writer = scope.spawn(|| {
            let _guard = AbortOnPanic(&abort);
            let mut rng = Rng(seed ^ 0x77 | 1);
            let mut id = 2u64;
            while Instant::now() < deadline && !abort.load(Ordering::Relaxed) && (id as usize) < NEW_NEEDLES_MAX {
                let data = pattern(rng.range(0, 128 << 10), 9000 + id);
                let cookie = rng.next() as u32;
                vnew.write(&needle(id, cookie, &data)).unwrap();
                let n = Arc::new(NeedleRef {
                    vid: VNEW,
                    id,
                    cookie,
                    meta: plain_meta(3, id, &data),
                    data,
                });
                vols.new.write().unwrap().push(n);
                new_written.fetch_add(1, Ordering::Relaxed);
                id += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let drivers: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                let (ctx, abort) = (&ctx, &abort);
                scope.spawn(move || {
                    let _guard = AbortOnPanic(abort);
                    drive(&mut group, ctx, deadline, abort);
                    group
                })
            })
            .collect();
        let mut out = Vec::new();
        let mut failure = None;
        for d in drivers {
            match d.join() {
                Ok(g) => out.extend(g),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Err(e) = writer.join() {
            failure = failure.or(Some(e));
        }
        if let Some(e) = failure {
            std::panic::resume_unwind(e);
        }
        out
    });
    let ran = start.elapsed();

    // Every session: nothing outstanding, each seq completed once; the engine's own counters
    // per session say the same.
    let mut total = Tally::default();
    for s in &soakers {
        s.assert_complete();
        total.add(&s.tally);
    }
    let sessions_match = |status: &Value| -> Result<(), String> {
        for s in &soakers {
            let st = status["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == s.s.session_id())
                .ok_or_else(|| format!("{} missing from status", s.name()))?;
            let kinds: BTreeMap<String, u64> = st["errors_by_kind"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), u(v)))
                .filter(|(_, v)| *v != 0)
                .collect();
            let want_kinds: BTreeMap<String, u64> = s
                .tally
                .errors_by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            let got = (
                u(&st["submitted"]),
                u(&st["completed"]),
                u(&st["errors"]),
                kinds,
                u(&st["sq_pending"]),
                u(&st["cq_used"]),
                st["state"].as_str().unwrap().to_string(),
            );
            let want = (
                s.tally.submitted,
                s.tally.completed,
                s.tally.errors,
                want_kinds,
                0,
                0,
                "ready".to_string(),
            );
            if got != want {
                return Err(format!("{}: engine counts {got:?}, test counted {want:?}", s.name()));
            }
        }
        Ok(())
    };
    // Counters are single-writer and read Relaxed: give the last bumps a moment to show.
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = sessions_match(&engine.status_json()) {
        assert!(Instant::now() < deadline, "per-session counters: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in &soakers {
        assert_eq!(
            s.s.sq_invalid_count() as u64,
            s.tally.rejected,
            "{}: SQ invalid counter vs completions -1..-3 (SPEC §4)",
            s.name()
        );
    }

    // Workers and peers, summed, changed by exactly what the test counted.
    let want = EngineCounts {
        submitted: total.submitted,
        completed: total.completed,
        errors: total.errors,
        errors_by_kind: total.errors_by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        sessions_opened: SESSIONS as u64,
        sessions_closed: 0,
        peer_requests: total.remote_sent,
        peer_failures: 0,
        peer_timeouts: 0,
        peer_timed: total.remote_ok,
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = EngineCounts::of(&engine.status_json()).minus(&before);
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "engine counters (workers and peers, change during the soak) differ from the test's:\nengine {got:?}\ntest   {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Close every session: nothing left in any CQ; the engine lets go of all of them.
    for s in soakers {
        let name = s.name();
        let left =
            s.s.close()
                .unwrap_or_else(|e| panic!("{name}: close: {e}\n{}", engine.log()));
        assert!(left.is_empty(), "{name}: completions after the last one: {left:?}");
    }
    wait_until(
        "every session closed and its registration released",
        || {
            let st = engine.status_json();
            st["engine"]["sessions_open"] == 0
                && st["engine"]["ucx_registrations"] == 0
                && EngineCounts::of(&st).minus(&before).sessions_closed == SESSIONS as u64
        },
        || engine.status_json().to_string(),
    );
    wait_until(
        "engine fds back to their level before the soak",
        || engine.fd_count() == fds_before,
        || {
            let now = fd_targets(&engine);
            format!(
                "fds {} (before {fds_before}); gone: {:?}; new: {:?}\n{}",
                engine.fd_count(),
                fds_listed.difference(&now).collect::<Vec<_>>(),
                now.difference(&fds_listed).collect::<Vec<_>>(),
                engine.log()
            )
        },
    );
    let maps_after = engine.map_count();
    // The transports of the lanes, from "lanes=lane[0]: cm tcp | lane[1]: 0:tcp/lo.0 md[0] ...".
    let mut transports: Vec<String> = engine
        .log()
        .lines()
        .find(|l| l.contains("peer connection transports"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| {
            let (lane, rest) = t.split_once(':')?;
            lane.parse::<u32>().ok()?;
            Some(rest.split('/').next()?.to_string())
        })
        .collect();
    transports.dedup();
    let transports = transports.join("+");

    // Nothing in this run is a reason for the engine to warn (lease expiry, a cut-off session,
    // a dropped message, a failed peer connection...). Shutdown is left out: the listener
    // closing first, the engine's own connection to it may log its failure.
    let soak_log = engine.log();
    let complaints: Vec<&str> = soak_log[log_start..]
        .lines()
        .filter(|l| matches!(l.split_whitespace().nth(1), Some("WARN" | "ERROR")))
        .collect();
    assert!(
        complaints.is_empty(),
        "the engine warned during the soak:\n{}\n\nlog since the warm-up:\n{}",
        complaints.join("\n"),
        &soak_log[log_start..]
    );

    let (status, log) = engine.terminate();
    assert!(status.success(), "engine exit {status:?}\n{log}");
    assert!(!log.contains("panicked"), "engine panicked:\n{log}");

    let ops: u64 = total.ops.iter().sum();
    let kinds = KINDS
        .iter()
        .zip(total.ops)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let errors = total
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "soak: {SESSIONS} sessions on {workers} workers (cores {cores_arg}, {per_worker:?} sessions), {tls} ({transports}), {:.1}s: {ops} ops ({kinds}); expected errors: {errors}; {:.1} MiB checked; {} remote requests; {} needles written while serving; engine fds {fds_before} before and after, maps {maps_before} -> {maps_after}; seed {seed}",
        ran.as_secs_f64(),
        total.bytes_checked as f64 / (1 << 20) as f64,
        total.remote_sent,
        new_written.load(Ordering::Relaxed),
    );
}
