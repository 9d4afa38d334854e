//! `io_uring.nop`: a kernel io_uring NOP round trip, for scale: push one `IORING_OP_NOP`,
//! `io_uring_enter` to submit it and wait for its completion, reap the CQE. No SQPOLL: the
//! kernel runs the NOP in the submitting thread (on the client core).

use hdrhistogram::Histogram;
use io_uring::{opcode, IoUring};
use serde_json::{Map, Value};

use super::{sample_loop, BlockRun, Ctx, Scenario};
use crate::Result;

const ENTRIES: u32 = 8;

/// Sets up a ring and does one NOP: `Err` says why io_uring cannot be used here (kernel too
/// old, or io_uring forbidden by `kernel.io_uring_disabled` or a seccomp filter).
pub fn probe() -> std::result::Result<(), String> {
    let mut ring = IoUring::new(ENTRIES).map_err(|e| format!("io_uring_setup: {e}"))?;
    nop(&mut ring, 1).map_err(|e| e.to_string())
}

fn nop(ring: &mut IoUring, user_data: u64) -> Result<()> {
    let sqe = opcode::Nop::new().build().user_data(user_data);
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| "io_uring submission queue full")?;
    ring.submit_and_wait(1).map_err(|e| format!("io_uring_enter: {e}"))?;
    let cqe = ring
        .completion()
        .next()
        .ok_or("io_uring_enter returned without a completion")?;
    if cqe.user_data() != user_data || cqe.result() != 0 {
        return Err(format!(
            "unexpected io_uring completion: user_data {} result {}, expected {user_data} and 0",
            cqe.user_data(),
            cqe.result()
        )
        .into());
    }
    Ok(())
}

#[derive(Default)]
pub struct IoUringNop {
    ring: Option<IoUring>,
    seq: u64,
}

impl Scenario for IoUringNop {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.ring.is_none() {
            self.ring = Some(IoUring::new(ENTRIES).map_err(|e| format!("io_uring_setup: {e}"))?);
        }
        let ring = self.ring.as_mut().expect("set above");
        let seq = &mut self.seq;
        sample_loop(ctx.timing, hist, || {
            *seq += 1;
            nop(ring, *seq)
        })
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("entries".into(), ENTRIES.into());
        m.insert("sqpoll".into(), false.into());
        m
    }
}

#[cfg(test)]
mod tests {
    /// Where the kernel allows io_uring, a NOP completes; elsewhere the reason is worded.
    #[test]
    fn probe_works_or_says_why() {
        match super::probe() {
            Ok(()) => {}
            Err(e) => assert!(e.starts_with("io_uring"), "{e}"),
        }
    }
}
