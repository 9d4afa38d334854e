//! Cold reads (issue 16): a 1 MiB needle read with its pages dropped from the page cache just
//! before, over the rings (`needle.read.cold.1m.tcp`) and over HTTP
//! (`needle.read.cold.1m.http`), both run by ringlat's cold blocks (go.rs, `Kind::Cold`;
//! go-client/cmd/ringlat/cold.go); and `ring.nop.beside_cold_reads` (here): the NOP round
//! trip of the bench's session with the engine serving the volume, while a ringlat session on
//! the same engine worker reads cold needles without pause.
//!
//! The engine maps the pages it serves, and mapped pages cannot be dropped: every ring read
//! must be of a needle the engine never read. The weed host uploads a pool of cold needles
//! ([`cold_pool`]: [`COLD_PER_BLOCK`] per block for each of the two ring readers, and
//! [`COLD_HTTP_NEEDLES`] that the HTTP path cycles through: the volume server reads with
//! pread, so their pages can be dropped every time); [`cold_fids`] gives each reader its part.
//! Whether the ring reads were cold is checked, not assumed: the engine's `reads_served_io`
//! (reads its volume I/O threads served because `mincore` found pages missing) is read
//! before and after every block and reported next to the number of ring reads.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ring::nop_round_trip;
use super::{sample_loop, BlockRun, Ctx, Scenario, Timing, Tls, STALL_LIMIT};
use crate::goproc::Ringlat;
use crate::Result;

/// Most reads of a ring reader per block (its warm-up read included). At ~4 ms per read
/// (drop and check included, this VM) a 100 ms block takes ~25.
pub const COLD_PER_BLOCK: u32 = 32;

/// Cold needles the HTTP path cycles through.
pub const COLD_HTTP_NEEDLES: u32 = 32;

/// How long ringlat may take to start and connect (it reads nothing before its first block).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Which reader of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `needle.read.cold.1m.tcp`.
    Tcp,
    /// `needle.read.cold.1m.http`.
    Http,
    /// The cold reader of `ring.nop.beside_cold_reads` (tcp).
    Beside,
}

impl Reader {
    pub fn command_word(self) -> &'static str {
        match self {
            Reader::Http => "cold-http",
            Reader::Tcp | Reader::Beside => "cold-ring",
        }
    }

    fn ring(self) -> bool {
        self != Reader::Http
    }
}

/// Whether `name` reads cold needles (the weed host must upload the pool).
pub fn is_cold(name: &str) -> bool {
    name.starts_with("needle.read.cold.") || name == "ring.nop.beside_cold_reads"
}

/// Cold needles to upload for a run of `blocks` blocks.
pub fn cold_pool(blocks: u32) -> u32 {
    2 * blocks * COLD_PER_BLOCK + COLD_HTTP_NEEDLES
}

/// The part of the pool `all` (in upload order) that `reader` reads.
pub fn cold_fids(all: &[String], reader: Reader) -> &[String] {
    let ring = all.len().saturating_sub(COLD_HTTP_NEEDLES as usize) / 2;
    match reader {
        Reader::Tcp => &all[..ring],
        Reader::Beside => &all[ring..2 * ring],
        Reader::Http => &all[2 * ring..],
    }
}

/// ringlat's arguments (after `-serve -core N`) for `reader`, and facts for `details`.
pub(super) fn reader_args(ctx: &Ctx, name: &str, reader: Reader) -> Result<(Vec<String>, Map<String, Value>)> {
    let weed = ctx
        .weed
        .as_ref()
        .ok_or("this scenario needs the weed volume server, and none was started")?;
    let fids = cold_fids(&weed.cold, reader);
    if fids.is_empty() {
        return Err("the weed host uploaded no cold needles".into());
    }
    let mut d = Map::new();
    let mut args = vec![
        "-name".to_string(),
        name.into(),
        "-volume".into(),
        weed.volume.clone(),
        "-cold-fids".into(),
        fids.join(" "),
        "-cold-dir".into(),
        weed.volume_dir.display().to_string(),
        "-cold-per-block".into(),
        COLD_PER_BLOCK.to_string(),
    ];
    if reader.ring() {
        let e = needle_engine(ctx)?;
        args.extend([
            "-socket".into(),
            e.socket.display().to_string(),
            "-peer".into(),
            e.address.clone(),
        ]);
        d.insert("ucx_transports".into(), Tls::Tcp.transports().into());
        d.insert("engine_ucx_address".into(), e.address.clone().into());
    } else {
        args.push("-no-engine".into());
    }
    d.insert("path".into(), if reader.ring() { "ring" } else { "http" }.into());
    d.insert("cold_needles".into(), fids.len().into());
    d.insert("cold_needle_bytes".into(), weed.cold_bytes.into());
    d.insert("cold_reads_per_block_max".into(), COLD_PER_BLOCK.into());
    d.insert("volume_server".into(), weed.volume.clone().into());
    d.insert("volume_dir".into(), weed.volume_dir.display().to_string().into());
    Ok((args, d))
}

fn needle_engine(ctx: &Ctx) -> Result<&super::NeedleEngine> {
    ctx.needle_engines
        .iter()
        .find(|e| e.tls == Tls::Tcp)
        .ok_or_else(|| "no engine serving the volume over tcp was started".into())
}

/// For a ring reader: waits until the engine serves every volume (a read of a volume still
/// being indexed also goes to an I/O thread, which would count as cold).
pub(super) fn wait_serving(ctx: &Ctx, reader: Reader) -> Result<()> {
    match (reader.ring(), ctx.weed.as_ref()) {
        (true, Some(w)) => needle_engine(ctx)?.wait_serving(&w.volume_dir, Duration::from_secs(30)),
        _ => Ok(()),
    }
}

/// For a ring reader: the engine's `reads_served_io` now.
pub(super) fn served_io(ctx: &Ctx, reader: Reader) -> Result<Option<u64>> {
    if !reader.ring() {
        return Ok(None);
    }
    needle_engine(ctx)?.reads_served_io().map(Some)
}

/// A cold block's counts (go-client/cmd/ringlat/cold.go, coldBlockStats).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ColdStats {
    pub reads: u64,
    pub drops: u64,
    pub bytes_verified: u64,
    pub budget_hit: bool,
    pub wall_ns: u64,
    pub left: u64,
}

/// A cold reader's counts over its blocks.
#[derive(Debug, Default, Clone)]
pub struct ColdTotals {
    blocks: u64,
    reads: u64,
    drops: u64,
    bytes_verified: u64,
    budget_hits: u64,
    wall_ns: u64,
    left: u64,
    /// The engine's I/O-thread reads over the blocks (`None` for HTTP).
    served_io: Option<u64>,
}

impl ColdTotals {
    pub fn add(&mut self, st: &ColdStats, served_io: Option<u64>) {
        self.blocks += 1;
        self.reads += st.reads;
        self.drops += st.drops;
        self.bytes_verified += st.bytes_verified;
        self.budget_hits += u64::from(st.budget_hit);
        self.wall_ns += st.wall_ns;
        self.left = st.left;
        if let Some(n) = served_io {
            self.served_io = Some(self.served_io.unwrap_or(0) + n);
        }
    }

    pub fn put(&self, d: &mut Map<String, Value>) {
        if self.blocks == 0 {
            return;
        }
        d.insert("cold_reads".into(), self.reads.into());
        d.insert("cold_page_drops".into(), self.drops.into());
        d.insert("cold_bytes_verified".into(), self.bytes_verified.into());
        // Blocks that ended on their read budget before the measured time had passed.
        d.insert("cold_blocks_on_budget".into(), self.budget_hits.into());
        d.insert("cold_needles_left".into(), self.left.into());
        if let Some(n) = self.served_io {
            // Equal to cold_reads when every ring read found pages missing and went to the
            // engine's I/O threads (the warm-up reads included in both).
            d.insert("cold_reads_served_io".into(), n.into());
        }
    }
}

/// `ring.nop.beside_cold_reads`: per block, NOPs for the warm-up on the bench's session with
/// the engine serving the volume (the group's tcp needle engine, one worker), then a cold
/// block of the reader ringlat (its session is on the same worker) is started and NOPs are
/// measured while it runs; its answer is read after. The reader may run on every CPU: on a
/// two-core machine the engine worker and the bench's client each spin on one, and the reader
/// and the engine's I/O threads share them.
#[derive(Default)]
pub struct BesideColdReads {
    reader: Option<Ringlat>,
    seq: u64,
    totals: ColdTotals,
    /// The reader's busy time (its blocks' wall), the part of it in its timed reads, and the
    /// NOP blocks' measured time.
    reader_wall: Duration,
    reader_reads: Duration,
    reader_samples: u64,
    nop_wall: Duration,
    details: Map<String, Value>,
}

impl BesideColdReads {
    fn start(&mut self, ctx: &Ctx) -> Result<()> {
        let path = ctx
            .ringlat
            .as_deref()
            .ok_or("no ringlat binary (the cold reader is one)")?;
        let (extra, facts) = reader_args(ctx, "ring.nop.beside_cold_reads+reader", Reader::Beside)?;
        let mut args = vec!["-serve".to_string(), "-core".into(), "-1".into()];
        args.extend(extra);
        let cpus = ctx.engine_template.as_ref().map(|t| t.cpus.clone());
        let mut p = Ringlat::spawn_on(path, &args, cpus)?;
        let line = p
            .read_line(READY_TIMEOUT)
            .map_err(|e| p.failure(&format!("waiting for the cold reader to start: {e}")))?;
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| p.failure(&format!("the cold reader's first line is not JSON ({e}): {line}")))?;
        if ready["ready"] != true {
            return Err(p.failure(&format!("the cold reader did not start: {line}")));
        }
        wait_serving(ctx, Reader::Beside).map_err(|e| p.failure(&e.to_string()))?;
        self.details = facts;
        self.details.insert("cold_reader_cpus".into(), "all".into());
        self.reader = Some(p);
        Ok(())
    }

    fn block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let timing = ctx.timing;
        let io_before = served_io(ctx, Reader::Beside)?;
        let e = ctx
            .needle_engines
            .iter_mut()
            .find(|e| e.tls == Tls::Tcp)
            .ok_or("no engine serving the volume over tcp was started")?;
        let s = &mut e.session;
        let seq = &mut self.seq;
        // The warm-up without the reader: its needles are for the measured time.
        let warm_end = Instant::now() + timing.warmup;
        while Instant::now() < warm_end {
            nop_round_trip(s, seq)?;
        }
        let p = self.reader.as_mut().expect("started");
        p.send(&format!("block cold-ring 0 {}\n", timing.measure.as_nanos()))?;
        let measure = Timing {
            warmup: Duration::ZERO,
            measure: timing.measure,
        };
        let run = sample_loop(measure, hist, || nop_round_trip(s, seq))?;
        let b = super::go::GoBlock::parse(&p.read_line(timing.measure + STALL_LIMIT)?)?;
        let st = b.cold.ok_or("the cold reader's answer has no \"cold\" counts")?;
        let io_after = served_io(ctx, Reader::Beside)?;
        self.totals
            .add(&st, io_before.zip(io_after).map(|(a, b)| b.saturating_sub(a)));
        self.reader_wall += Duration::from_nanos(st.wall_ns);
        self.reader_reads += Duration::from_nanos(b.elapsed_ns);
        self.reader_samples += b.samples;
        self.nop_wall += run.elapsed;
        Ok(run)
    }
}

impl Scenario for BesideColdReads {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.reader.is_none() {
            self.start(ctx)?;
        }
        self.block(ctx, hist).map_err(|e| {
            if e.is::<crate::interrupt::Interrupted>() {
                return e;
            }
            match self.reader.take() {
                Some(mut p) => p.failure(&e.to_string()),
                None => e,
            }
        })
    }

    fn details(&self) -> Map<String, Value> {
        let mut d = self.details.clone();
        self.totals.put(&mut d);
        if !self.nop_wall.is_zero() {
            // The reader's busy time over the NOPs' measured time: at least 1 when it read
            // during the whole of every block (it stops on its budget otherwise).
            let busy = self.reader_wall.as_secs_f64() / self.nop_wall.as_secs_f64();
            d.insert("cold_reader_busy".into(), crate::stats::round2(busy).into());
        }
        if !self.reader_wall.is_zero() {
            // How much of that time a read was in flight (the rest: its page drops and byte
            // checks, and waiting for a CPU), and how long its reads took.
            let share = self.reader_reads.as_secs_f64() / self.reader_wall.as_secs_f64();
            d.insert("cold_reader_read_share".into(), crate::stats::round2(share).into());
        }
        if self.reader_samples > 0 {
            let mean = self.reader_reads.as_secs_f64() * 1e3 / self.reader_samples as f64;
            d.insert("cold_reader_read_ms_mean".into(), crate::stats::round2(mean).into());
        }
        d
    }
}
