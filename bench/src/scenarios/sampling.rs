//! The timed sampling loops every scenario runs its blocks with: one operation at a time
//! ([`sample_loop`]) or several in flight ([`pipelined_loop`]), and the spin-wait guard that
//! turns a stall into an error.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::record;
use crate::Result;

/// Timing of one block.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Run but not recorded, at the start of every block.
    pub warmup: Duration,
    /// Recorded.
    pub measure: Duration,
}

/// What a block measured, besides the histogram.
#[derive(Debug, Clone, Copy)]
pub struct BlockRun {
    pub samples: u64,
    /// Measured time, warm-up excluded.
    pub elapsed: Duration,
}

/// Runs `op` (one sample: a round trip or a batch) for the warm-up, then for the measured
/// time, recording each sample's duration.
///
/// A block whose samples time only part of each iteration (`ring.wake`, `ring.idle.full.*`:
/// the wait for the engines to fall asleep between samples is not a sample). Samples ending
/// before the warm-up is over are dropped; the block ends with the first sample ending
/// `timing.measure` after the first kept one.
pub struct PartTimedBlock {
    warm_end: Instant,
    measure: std::time::Duration,
    start: Option<Instant>,
    n: u64,
}

impl PartTimedBlock {
    pub fn new(timing: Timing) -> Self {
        Self {
            warm_end: Instant::now() + timing.warmup,
            measure: timing.measure,
            start: None,
            n: 0,
        }
    }

    /// Records the sample from `t0` to `t1`; the block's result once it measured long enough.
    pub fn sample(&mut self, hist: &mut Histogram<u64>, t0: Instant, t1: Instant) -> Option<BlockRun> {
        match self.start {
            None if t1 >= self.warm_end => self.start = Some(t1),
            None => {}
            Some(st) => {
                record(hist, t1 - t0);
                self.n += 1;
                if t1 - st >= self.measure {
                    return Some(BlockRun {
                        samples: self.n,
                        elapsed: t1 - st,
                    });
                }
            }
        }
        None
    }
}

/// One `Instant::now()` per sample: each sample is the time from the previous timestamp to
/// this one, so the loop's own overhead (one clock read, one histogram record) is inside every
/// sample, the same for every scenario.
pub fn sample_loop(timing: Timing, hist: &mut Histogram<u64>, mut op: impl FnMut() -> Result<()>) -> Result<BlockRun> {
    let warm_end = Instant::now() + timing.warmup;
    let mut n = 0u64;
    let mut prev = loop {
        op()?;
        let now = Instant::now();
        if now >= warm_end {
            break now;
        }
        n += 1;
        if n & 1023 == 0 {
            crate::interrupt::check()?;
        }
    };
    let start = prev;
    let end = start + timing.measure;
    n = 0;
    loop {
        op()?;
        let now = Instant::now();
        record(hist, now - prev);
        prev = now;
        n += 1;
        if now >= end {
            break;
        }
        if n & 1023 == 0 {
            crate::interrupt::check()?;
        }
    }
    Ok(BlockRun {
        samples: n,
        elapsed: prev - start,
    })
}

/// Operations kept in flight by [`pipelined_loop`], each in a slot of its own.
pub trait Pipeline {
    /// Starts the operation of `slot` (free until now). `Ok(true)`: it completed at once.
    fn start(&mut self, slot: usize) -> Result<bool>;
    /// Makes progress once and calls `done` with the slot of every operation that completed
    /// (successfully: a failed operation is an error).
    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()>;
    /// What is waited for, for a stall error.
    fn waiting_for(&self) -> String;
}

/// Keeps `depth` operations of `p` in flight: an unrecorded warm-up by time, then each
/// completion is one sample, the time from its start to the poll that reported it, and its
/// slot starts the next operation at once. The measured time runs from the first completion
/// after the warm-up to the completion that ends it (the first at or after `timing.measure`,
/// included, as in [`sample_loop`]); operations still in flight then are waited for (the
/// slots must be free when the block ends) but not recorded.
pub fn pipelined_loop(
    timing: Timing,
    hist: &mut Histogram<u64>,
    depth: usize,
    p: &mut dyn Pipeline,
) -> Result<BlockRun> {
    let mut started = vec![Instant::now(); depth];
    let mut ready: Vec<usize> = Vec::with_capacity(depth);
    let mut batch: Vec<usize> = Vec::with_capacity(depth);
    let warm_end = Instant::now() + timing.warmup;
    // (start, end) of the measured time once the warm-up is over.
    let mut window: Option<(Instant, Instant)> = None;
    let mut stopping = false;
    let (mut n, mut last) = (0u64, None::<Instant>);
    let mut in_flight = 0usize;
    for (slot, at) in started.iter_mut().enumerate() {
        *at = Instant::now();
        in_flight += 1;
        if p.start(slot)? {
            ready.push(slot);
        }
    }
    let mut guard = SpinGuard::new();
    while in_flight > 0 {
        if ready.is_empty() {
            p.poll(&mut |slot| ready.push(slot))?;
        }
        if ready.is_empty() {
            guard.turn(|| p.waiting_for())?;
            continue;
        }
        guard = SpinGuard::new();
        let now = Instant::now();
        let counting = match window {
            Some((_, end)) => {
                let c = !stopping;
                stopping |= now >= end;
                c
            }
            None => {
                if now >= warm_end {
                    window = Some((now, now + timing.measure));
                }
                false
            }
        };
        std::mem::swap(&mut ready, &mut batch);
        for &slot in &batch {
            in_flight -= 1;
            if counting {
                record(hist, now - started[slot]);
                n += 1;
                last = Some(now);
                if n & 1023 == 0 {
                    crate::interrupt::check()?;
                }
            }
            if !stopping {
                started[slot] = Instant::now();
                in_flight += 1;
                if p.start(slot)? {
                    ready.push(slot);
                }
            }
        }
        batch.clear();
    }
    let start = window.map(|(s, _)| s).ok_or("the block ended before its warm-up")?;
    Ok(BlockRun {
        samples: n,
        elapsed: last.map_or(Duration::ZERO, |l| l - start),
    })
}

/// Spin-wait bookkeeping for one wait that should take nanoseconds: make one per wait and
/// call [`SpinGuard::turn`] on every empty turn. Every 65536 turns it checks for Ctrl-C and
/// for a stall (no answer for [`STALL_LIMIT`]); otherwise it costs a counter increment.
pub struct SpinGuard {
    turns: u32,
    since: Option<Instant>,
}

/// How long a single round trip may take before the bench calls it a stall.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

impl SpinGuard {
    #[inline]
    pub fn new() -> Self {
        Self { turns: 0, since: None }
    }

    /// `what` describes the wait, for the stall error.
    #[inline]
    pub fn turn(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        self.turns = self.turns.wrapping_add(1);
        if self.turns & 0xffff == 0 {
            self.slow_check(what)?;
        }
        std::hint::spin_loop();
        Ok(())
    }

    #[cold]
    fn slow_check(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        crate::interrupt::check()?;
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() > STALL_LIMIT {
            return Err(format!("stalled: {} for more than {STALL_LIMIT:?}", what()).into());
        }
        Ok(())
    }
}

impl Default for SpinGuard {
    fn default() -> Self {
        Self::new()
    }
}
