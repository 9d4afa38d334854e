//! The floors: what the two cores can do with no engine in between. Each block starts a peer
//! thread pinned to the engine core (the engine is asleep meanwhile) and stops it at the end,
//! so nothing of the floor spins on the engine core while the engine is measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use std::ptr::NonNull;

use ring_proto::{opcode, Consumer, Cqe, Producer, RawRing, RegionLayout, Sqe};

use super::{sample_loop, BlockRun, Ctx, Scenario, SpinGuard};
use crate::machine::pin_current_thread;
use crate::Result;

/// Ring sizes of the echo floor: the engine's default session sizes.
const ECHO_SQ_ENTRIES: u32 = 256;
const ECHO_CQ_ENTRIES: u32 = 512;

/// Runs `peer` on a thread pinned to `core` while `client` runs on the calling thread;
/// `stop` (called once `client` returned, or the peer failed to start) must make `peer` return.
fn with_peer<R>(
    core: usize,
    peer: impl FnOnce() -> Result<()> + Send,
    client: impl FnOnce() -> Result<R>,
    stop: impl FnOnce(),
) -> Result<R> {
    let ready = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("bench-peer".into())
            .spawn_scoped(s, || {
                pin_current_thread(core)?;
                // SYNC POINT: Release pairs with the client's Acquire load below: the peer runs
                // pinned before the client starts timing.
                ready.store(true, Ordering::Release);
                peer()
            })
            .map_err(|e| format!("spawning the peer thread: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut started = true;
        while !ready.load(Ordering::Acquire) {
            if handle.is_finished() || Instant::now() >= deadline {
                started = false;
                break;
            }
            std::thread::yield_now();
        }
        let result = if started {
            client()
        } else {
            Err(format!("the peer thread on cpu {core} did not start").into())
        };
        stop();
        let peer_result = handle.join().map_err(|_| "the peer thread panicked")?;
        peer_result?;
        result
    })
}

/// `floor.pingpong`: one 128-byte-padded AtomicU64 each way. The client stores a sequence
/// number into `ping` and spins until the peer echoes it into `pong`.
pub struct PingPong;

const STOP: u64 = u64::MAX;

impl Scenario for PingPong {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let ping = CachePadded::new(AtomicU64::new(0));
        let pong = CachePadded::new(AtomicU64::new(0));
        let timing = ctx.timing;
        with_peer(
            ctx.engine_core,
            || {
                let mut last = 0;
                loop {
                    // SYNC POINT: Acquire/Release both ways, as a ring index would be.
                    let v = ping.load(Ordering::Acquire);
                    if v == last {
                        std::hint::spin_loop();
                        continue;
                    }
                    if v == STOP {
                        return Ok(());
                    }
                    pong.store(v, Ordering::Release);
                    last = v;
                }
            },
            || {
                let mut seq = 0u64;
                sample_loop(timing, hist, || {
                    seq += 1;
                    ping.store(seq, Ordering::Release);
                    let mut guard = SpinGuard::new();
                    while pong.load(Ordering::Acquire) != seq {
                        guard.turn(|| format!("waiting for ping-pong echo {seq}"))?;
                    }
                    Ok(())
                })
            },
            || ping.store(STOP, Ordering::Release),
        )
    }
}

/// `floor.echo_batch32`: the ring protocol with nothing else. Two rings laid out like a
/// session's SQ and CQ ([`RegionRings`]); the client pushes a batch of SQEs and publishes, the peer (on the
/// engine core) pops them, pushes one CQE each and publishes, the client reaps the batch.
/// Both sides use `Producer::publish` (with its wake-up check) as the client library and the
/// engine do.
pub struct EchoBatch {
    pub batch: u32,
    /// Whether the last block's rings were in a huge page.
    pub huge_pages: Option<bool>,
}

impl Scenario for EchoBatch {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let batch = u64::from(self.batch);
        // Fresh rings every block (Producer/Consumer::new want indices at 0).
        let region = RegionRings::map()?;
        self.huge_pages = Some(region.huge);
        let (sq, cq) = region.rings();
        // SAFETY: fresh rings built for these entry types, valid while `region` lives (to the
        // end of this function); one producer and one consumer each.
        let (mut req_p, mut req_c) = unsafe { (Producer::<Sqe>::new(sq), Consumer::<Sqe>::new(sq)) };
        // SAFETY: as above.
        let (mut resp_p, mut resp_c) = unsafe { (Producer::<Cqe>::new(cq), Consumer::<Cqe>::new(cq)) };
        let stop = CachePadded::new(AtomicBool::new(false));
        let timing = ctx.timing;
        with_peer(
            ctx.engine_core,
            || loop {
                // The same steps as an engine pass: take what is ready, as far as the response
                // ring has room, answer each, hand the slots back, publish.
                let ready = req_c.refresh();
                if ready == 0 {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::hint::spin_loop();
                    continue;
                }
                let n = ready.min(resp_p.refresh()?);
                for _ in 0..n {
                    let sqe = req_c.pop().ok_or("request ring: counted entry missing")?;
                    resp_p
                        .push(&Cqe::new(sqe.user_data, 0))
                        .map_err(|_| "response ring full")?;
                }
                req_c.release();
                resp_p.publish();
            },
            || {
                let mut seq = 0u64;
                sample_loop(timing, hist, || {
                    let first = seq + 1;
                    for _ in 0..batch {
                        seq += 1;
                        let sqe = Sqe {
                            opcode: opcode::NOP,
                            user_data: seq,
                            ..Default::default()
                        };
                        req_p.push(&sqe).map_err(|_| "request ring full")?;
                    }
                    req_p.publish();
                    let mut got = 0u64;
                    let mut guard = SpinGuard::new();
                    while got < batch {
                        if resp_c.refresh() == 0 {
                            guard.turn(|| {
                                format!("waiting for echo of batch starting at {first} ({got} of {batch} back)")
                            })?;
                            continue;
                        }
                        while let Some(c) = resp_c.pop() {
                            if c.user_data != first + got || c.result != 0 {
                                return Err(format!(
                                    "echo out of order: got {c:?}, expected user_data {}",
                                    first + got
                                )
                                .into());
                            }
                            got += 1;
                        }
                        resp_c.release();
                    }
                    Ok(())
                })
            },
            || stop.store(true, Ordering::Relaxed),
        )
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(huge) = self.huge_pages {
            m.insert("ring_pages".into(), (if huge { "huge" } else { "normal" }).into());
        }
        m
    }
}

/// Anonymous memory laid out exactly like a session region (ring_proto's `RegionLayout` for
/// the engine's default sizes), in a 2 MiB huge page when one is free, as the engine maps
/// sessions under `hugepages = prefer`.
///
/// Not `HeapRing`: its entry array is only 8-byte aligned and shares cache lines with
/// whatever the allocator puts next to it, which measurably slowed this floor (by 5-25% on
/// the 2-vCPU development VM, interleaved A/B), and a floor must not be slower than the real
/// layout.
struct RegionRings {
    base: NonNull<u8>,
    len: usize,
    layout: RegionLayout,
    huge: bool,
}

impl RegionRings {
    fn map() -> Result<Self> {
        let layout = RegionLayout::new(ECHO_SQ_ENTRIES, ECHO_CQ_ENTRIES, 4096)?;
        let len = layout.min_region_size.next_multiple_of(2 << 20);
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let mut p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags | libc::MAP_HUGETLB, -1, 0) };
        let huge = p != libc::MAP_FAILED;
        if !huge {
            // SAFETY: as above.
            p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
            if p == libc::MAP_FAILED {
                return Err(format!("mapping the echo rings: {}", std::io::Error::last_os_error()).into());
            }
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or("mmap returned null")?;
        Ok(Self {
            base,
            len,
            layout,
            huge,
        })
    }

    /// (SQ-shaped request ring, CQ-shaped response ring). Zeroed memory is a fresh ring.
    fn rings(&self) -> (RawRing, RawRing) {
        let l = &self.layout;
        let ring = |ctl: usize, array: usize, entries: u32| {
            // SAFETY: the layout's offsets are inside the mapping (len >= min_region_size),
            // 128-byte aligned, and sized for `entries` entries of the ring's type; the
            // mapping outlives every use (the rings die with the block).
            unsafe { RawRing::new(self.base.add(ctl).cast(), self.base.add(array).cast(), entries) }
        };
        (
            ring(l.sq_ctl_offset, l.sq_array_offset, l.sq_entries),
            ring(l.cq_ctl_offset, l.cq_array_offset, l.cq_entries),
        )
    }
}

impl Drop for RegionRings {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no ring made from it is used after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
