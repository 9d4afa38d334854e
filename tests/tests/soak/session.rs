//! One soak session ([`Soaker`]): its buffer layout, what it has in flight, the loop that
//! keeps it loaded ([`drive`]) and the threads that drive them all ([`run`]). What it submits is in `generator.rs`, how a completion is
//! checked in `checker.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use integration_tests::rng::TestRng;
use integration_tests::{Engine, PATIENCE};
use ring_client::Session;
use ring_proto::Cqe;
use seaweed_format::writer::VolumeWriter;

use crate::checker::Tally;
use crate::generator::Pending;
use crate::volumes::{append_while_serving, pattern, Volumes};

pub const SQ_ENTRIES: u32 = 16;
pub const CQ_ENTRIES: u32 = 16;
/// Requests a session may have outstanding (SPEC §7: `sq_entries + cq_entries`).
const MAX_OUTSTANDING: usize = (SQ_ENTRIES + CQ_ENTRIES) as usize;
/// Buffer slots per session; every request that names buffer bytes owns one while in flight.
pub const SLOTS: usize = 8;
/// One slot: room for a 1 MiB needle with its metadata, plus poison around it.
pub const SLOT: usize = (1 << 20) + (64 << 10);
pub const BUF: usize = SLOTS * SLOT;
/// A request's range starts this far into its slot; the bytes before it are poisoned.
pub const LEAD: usize = 64;
/// Bytes after each range (and before FILLs) that must keep their poison.
pub const GUARD: usize = 64;
/// The most a request's range may span in a slot.
pub const SPAN: usize = SLOT - LEAD - 4096;
/// SEND: payload at the slot's start, response in its second half.
pub const HALF: usize = SLOT / 2;

/// 4 KiB of each byte value, to write and compare runs of one byte with memcpy/memcmp.
fn byte_pages() -> &'static [Vec<u8>] {
    static PAGES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    PAGES.get_or_init(|| (0..=255u8).map(|b| vec![b; 4096]).collect())
}

/// Where SEND payloads come from: payload (session, seq) is a slice of this at an offset
/// derived from both.
pub fn payload_pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| pattern(2 << 20, 0x5eed))
}

/// What every driver thread shares.
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub vols: &'a Volumes,
}

impl Ctx<'_> {
    pub fn log_tail(&self) -> String {
        let log = self.engine.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// One session and everything the test knows about it.
pub struct Soaker {
    pub idx: usize,
    pub s: Session,
    pub peer: u32,
    pub rng: TestRng,
    pub next_seq: u64,
    pub in_flight: HashMap<u64, Pending>,
    /// One bit per seq: completed.
    pub done: Vec<u64>,
    pub free_slots: Vec<usize>,
    pub tally: Tally,
    last_completion: Instant,
    scratch: Vec<u8>,
    cqes: Vec<Cqe>,
}

impl Soaker {
    /// Session number `idx` draws from stream `idx + 1` of the run's seed.
    pub fn new(idx: usize, s: Session, peer: u32, seed: u64) -> Self {
        Self {
            idx,
            s,
            peer,
            rng: TestRng::stream(seed, idx as u64 + 1),
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

    pub fn user_data(&self, seq: u64) -> u64 {
        ((self.idx as u64 + 1) << 48) | seq
    }

    pub fn name(&self) -> String {
        format!(
            "session #{} (id {}, worker {})",
            self.idx,
            self.s.session_id(),
            self.s.worker()
        )
    }

    pub fn poison(&self, off: usize, len: usize, byte: u8) {
        let page = &byte_pages()[byte as usize];
        let mut at = off;
        while at < off + len {
            let n = (off + len - at).min(page.len());
            self.s.buffer().write(at, &page[..n]).expect("poison inside the buffer");
            at += n;
        }
    }

    /// `len` buffer bytes at `off`, read into the scratch area.
    pub fn read(&mut self, off: usize, len: usize) -> &[u8] {
        self.s
            .buffer()
            .read(off, &mut self.scratch[..len])
            .expect("read inside the buffer");
        &self.scratch[..len]
    }

    /// Checks that `len` bytes at `off` all hold `byte`; the first that does not, else None.
    pub fn first_not(&mut self, off: usize, len: usize, byte: u8) -> Option<(usize, u8)> {
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

    pub fn slot_base(slot: usize) -> usize {
        slot * SLOT
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
        cqes.extend(self.s.completions());
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

/// The load: `soakers` split over `threads` driver threads, each running [`drive`] on its
/// share until `deadline`, while a writer thread appends needles to the volume `vnew` writes
/// ([`append_while_serving`], drawing from `writer_rng`). A panic on any thread stops the
/// others and is raised here. Returns the sessions and how many needles were written.
pub fn run(
    ctx: &Ctx<'_>,
    mut soakers: Vec<Soaker>,
    threads: usize,
    vnew: &mut VolumeWriter,
    writer_rng: TestRng,
    deadline: Instant,
) -> (Vec<Soaker>, u64) {
    let abort = AtomicBool::new(false);
    let new_written = AtomicU64::new(0);
    let per_thread = soakers.len() / threads;
    let mut groups: Vec<Vec<Soaker>> = Vec::new();
    while !soakers.is_empty() {
        let rest = soakers.split_off(per_thread.min(soakers.len()));
        groups.push(std::mem::replace(&mut soakers, rest));
    }
    let soakers: Vec<Soaker> = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let _guard = AbortOnPanic(&abort);
            append_while_serving(vnew, ctx.vols, writer_rng, deadline, &abort, &new_written);
        });
        let drivers: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                let abort = &abort;
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
    (soakers, new_written.load(Ordering::Relaxed))
}
