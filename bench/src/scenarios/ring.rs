//! Through the real engine: the bench's session, the client library's own calls.

use hdrhistogram::Histogram;
use ring_client::Session;
use ring_proto::{opcode, Cqe, ResultCode, Sqe};

use super::{sample_loop, BlockRun, Ctx, Scenario, SpinGuard};
use crate::Result;

pub(super) fn nop(user_data: u64) -> Sqe {
    Sqe {
        opcode: opcode::NOP,
        user_data,
        ..Default::default()
    }
}

pub(super) fn check(c: &Cqe, expected: u64) -> Result<()> {
    if c.user_data != expected || c.result != 0 {
        let why = ResultCode::from_result(c.result).map_or_else(|| format!("result {}", c.result), |r| r.to_string());
        return Err(format!(
            "unexpected NOP completion: user_data {} ({why}), expected user_data {expected} with result 0",
            c.user_data
        )
        .into());
    }
    Ok(())
}

pub(super) fn stall_context(s: &Session) -> String {
    format!(
        "session state {:?}, engine NEED_WAKEUP flag {}",
        s.state(),
        s.engine_sleeping()
    )
}

/// One `ring.nop` sample: `Session::submit` one NOP (user_data: the next `seq`), spin on
/// `try_cqe` until its completion arrives.
pub(super) fn nop_round_trip(s: &mut Session, seq: &mut u64) -> Result<()> {
    *seq += 1;
    let want = *seq;
    s.submit(&nop(want))?;
    let mut guard = SpinGuard::new();
    let c = loop {
        if let Some(c) = s.try_cqe()? {
            break c;
        }
        guard.turn(|| format!("waiting for the completion of NOP {want} ({})", stall_context(s)))?;
    };
    check(&c, want)
}

/// `ring.nop`: [`nop_round_trip`] per sample.
#[derive(Default)]
pub struct Nop {
    seq: u64,
}

impl Scenario for Nop {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let timing = ctx.timing;
        let s = ctx.session()?;
        let seq = &mut self.seq;
        sample_loop(timing, hist, || nop_round_trip(s, seq))
    }
}

/// `ring.nop_batch32`: push a batch of NOPs through the `submission()` view, publish once,
/// reap the batch through `completions()`.
pub struct NopBatch {
    batch: u32,
    seq: u64,
}

impl NopBatch {
    pub fn new(batch: u32) -> Self {
        Self { batch, seq: 0 }
    }
}

impl Scenario for NopBatch {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let timing = ctx.timing;
        let batch = u64::from(self.batch);
        let s = ctx.session()?;
        let seq = &mut self.seq;
        sample_loop(timing, hist, || {
            let first = *seq + 1;
            {
                let mut q = s.submission();
                for _ in 0..batch {
                    *seq += 1;
                    q.push(&nop(*seq))?;
                }
                q.sync()?;
            }
            let mut got = 0u64;
            let mut guard = SpinGuard::new();
            while got < batch {
                let before = got;
                for c in s.completions() {
                    check(&c, first + got)?;
                    got += 1;
                }
                if got == before {
                    guard.turn(|| {
                        format!(
                            "waiting for NOP batch starting at {first} ({got} of {batch} back; {})",
                            stall_context(s)
                        )
                    })?;
                }
            }
            Ok(())
        })
    }
}
