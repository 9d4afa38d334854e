//! How a soak session checks a completion: it belongs to this session, completes its request
//! exactly once, with exactly the expected result; every byte the engine put in the buffer is
//! what it must be, and the poison around it is intact. [`Tally`] counts what the engine's own
//! counters must show.

use std::collections::BTreeMap;

use ring_proto::needle::{NeedleMeta, NEEDLE_META_LEN};
use ring_proto::{Cqe, ResultCode};

use crate::generator::{Expect, KINDS};
use crate::session::{payload_pool, Ctx, Soaker, GUARD, SLOTS};

/// Totals across sessions.
#[derive(Default, Clone)]
pub struct Tally {
    pub submitted: u64,
    pub completed: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Completions -1..-3 (SPEC §4: they also count in the SQ `invalid` counter).
    pub rejected: u64,
    /// Requests that reached the peer engine, and those of them that succeeded.
    pub remote_sent: u64,
    pub remote_ok: u64,
    pub ops: [u64; KINDS.len()],
    pub bytes_checked: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
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

impl Soaker {
    /// Checks completion `c` against what its request expects; panics on any difference.
    pub fn check(&mut self, ctx: &Ctx<'_>, c: &Cqe) {
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

    /// After the run: nothing outstanding, every submitted seq completed exactly once.
    pub fn assert_complete(&self) {
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
