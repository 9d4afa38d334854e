//! The Go client through the real engine: `ringlat -serve` (go-client/cmd/ringlat), one
//! long-lived subprocess per scenario with a session of its own, pinned to the client core,
//! running one block per command line it reads (protocol in go-client/cmd/ringlat/serve.go).
//!
//! While ringlat runs a block, the bench's measuring thread waits in `poll` on its output
//! (asleep, so the client core is ringlat's). ringlat times its blocks the way
//! [`super::sample_loop`] does (warm-up by time, one monotonic clock read per sample) and
//! answers with its histogram in HdrHistogram's bucket layout, which is recorded here into
//! the block's histogram: block p50s of Go and Rust scenarios are computed the same way.
//!
//! The needle scenarios (`needle.read.<size>.<path>`) run ringlat in needle mode: it reads
//! one needle of the run's weed volume server (`crate::weed`) per sample, over the rings
//! from the group's engine for that transport (`tcp`, `sm`) or with an HTTP GET (`http`);
//! see go-client/cmd/ringlat/needle.go. `needle.read.4k.<path>.c<N>` run N goroutines of that
//! one ringlat at once (`-conc N`): ringlat answers with the reads of all of them that ended
//! in the measured window and the window's length, so ops/s is the process's reads/s.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{cold, BlockRun, Ctx, FrontEnd, Scenario, Tls, STALL_LIMIT};
use crate::goproc::Ringlat;
use crate::stats::HIGHEST_NS;
use crate::Result;

/// How long ringlat may take to start and open its session (and, for a needle, read it once
/// over each path to check the bytes).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Client.Do` of one NOP per sample.
    Nop,
    /// `SubmitBatch` of this many NOPs and a `Wait` for each, per sample.
    Batch(u32),
    /// One read of the run's needle of this size (`"4k"`, the weed host's size name): over
    /// the rings from the group's engine for these transports, or over HTTP (`None`).
    /// With `netns`: across the run's namespace pair (ringlat runs in namespace -b, the
    /// volume server and the serving engine are in -a; the ring path goes through the
    /// client engine in -b, over tcp across the veth). `conc` > 0: that many goroutines of
    /// the one ringlat read at once (`-conc`, go-client/cmd/ringlat/concurrent.go).
    Needle {
        size: &'static str,
        tls: Option<Tls>,
        netns: bool,
        conc: u32,
    },
    /// One read through a SeaweedFS front end that ringlat starts: with the `weed` of the
    /// ring read path reading through the group's engine for these transports, or the stock
    /// `weed` (`None`).
    FrontEnd { front_end: FrontEnd, tls: Option<Tls> },
    /// `needle.read.cold.1m.*`: one 1 MiB read of a cold needle of the run's weed host,
    /// its pages dropped just before (ringlat's cold blocks, see `super::cold`).
    Cold(cold::Reader),
}

impl Kind {
    fn command_word(self) -> &'static str {
        match self {
            Kind::Nop => "nop",
            Kind::Batch(_) => "batch",
            Kind::Needle { tls: Some(_), .. } => "needle-ring",
            Kind::Needle { tls: None, .. } => "needle-http",
            Kind::FrontEnd { .. } => "fs",
            Kind::Cold(r) => r.command_word(),
        }
    }

    /// How long ringlat may take to print its ready line.
    fn ready_timeout(self) -> Duration {
        match self {
            // It starts a weed mount, s3 gateway or filer and writes its objects first.
            Kind::FrontEnd { .. } => FRONT_END_READY_TIMEOUT,
            _ => READY_TIMEOUT,
        }
    }
}

/// How long a front-end ringlat may take to start its front end and write its objects
/// (a mount waits up to 90 s for the file to show).
const FRONT_END_READY_TIMEOUT: Duration = Duration::from_secs(240);

/// A front-end block's cache and check counts (go-client/cmd/ringlat/fsread.go).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FsStats {
    pub reads: u64,
    pub bytes_verified: u64,
    /// Pages found in the page cache before their first read (skipped; expected 0).
    pub resident_before: u64,
    /// Most pages resident beyond those read (readahead; expected 0).
    pub resident_extra: u64,
    /// Times the file's pages were dropped from the page cache.
    pub drops: u64,
    /// GETs the volume server answered during the block (-1: not counted).
    #[serde(default)]
    pub volume_gets: i64,
    /// Ring path with volume GETs: the front end's last seaweed-ring log lines (why its
    /// hook declined reads).
    #[serde(default)]
    pub ring_log: Vec<String>,
}

/// The Go runtime's allocation counters over a scenario's blocks (warm-up included), and
/// where ringlat's time went.
#[derive(Debug, Default, Clone, Copy)]
struct Allocs {
    ops: u64,
    mallocs: u64,
    bytes: u64,
    gc_cycles: u64,
    gc_pause_ns: u64,
    /// ringlat's CPU time over the blocks, and the blocks' wall time (warm-up + measured).
    cpu_ns: u64,
    wall_ns: u64,
    /// The session's doorbell counts (ring blocks).
    cq_sleeps: u64,
    engine_wakeups: u64,
}

/// `ring.nop.go`, `ring.nop_batch32.go`, `needle.read.*`.
pub struct GoRinglat {
    name: &'static str,
    kind: Kind,
    proc: Option<Ringlat>,
    details: Map<String, Value>,
    allocs: Allocs,
    fs: FsStats,
    cold: cold::ColdTotals,
}

impl GoRinglat {
    pub fn new(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            proc: None,
            details: Map::new(),
            allocs: Allocs::default(),
            fs: FsStats::default(),
            cold: cold::ColdTotals::default(),
        }
    }

    /// ringlat's arguments for this scenario, and facts for `details`.
    fn args(&self, ctx: &Ctx) -> Result<(Vec<String>, Map<String, Value>)> {
        let mut d = Map::new();
        let mut args = vec!["-serve".to_string(), "-core".into(), ctx.client_core.to_string()];
        match self.kind {
            Kind::Nop | Kind::Batch(_) => {
                let socket = ctx
                    .socket
                    .as_deref()
                    .ok_or("this scenario needs the engine, and none was started")?;
                let batch = match self.kind {
                    Kind::Batch(n) => n,
                    _ => 32,
                };
                args.extend([
                    "-socket".into(),
                    socket.display().to_string(),
                    "-batch".into(),
                    batch.to_string(),
                ]);
            }
            Kind::Needle { size, tls, netns, conc } => {
                let weed = if netns {
                    &ctx.netns
                        .as_ref()
                        .ok_or("this scenario needs the namespace pair's weed cluster, and none was started")?
                        .weed
                } else {
                    ctx.weed
                        .as_ref()
                        .ok_or("this scenario needs the weed volume server, and none was started")?
                };
                let n = weed
                    .needles
                    .iter()
                    .find(|n| n.size == size)
                    .ok_or_else(|| format!("the weed host uploaded no {size} needle"))?;
                args.extend([
                    "-name".into(),
                    self.name.into(),
                    "-volume".into(),
                    weed.volume.clone(),
                    "-fid".into(),
                    n.fid.clone(),
                    "-bytes".into(),
                    n.bytes.to_string(),
                    "-sha256".into(),
                    n.sha256.clone(),
                ]);
                if conc > 0 {
                    args.extend(["-conc".into(), conc.to_string()]);
                    d.insert("goroutines".into(), conc.into());
                }
                d.insert("path".into(), if tls.is_some() { "ring" } else { "http" }.into());
                d.insert("needle_fid".into(), n.fid.clone().into());
                d.insert("needle_bytes".into(), n.bytes.into());
                d.insert("volume_server".into(), weed.volume.clone().into());
                d.insert("weed".into(), weed.weed.clone().into());
                match tls {
                    Some(tls) if netns => {
                        let n = ctx.netns.as_ref().expect("checked above");
                        let (server, client) = n
                            .engines
                            .as_ref()
                            .ok_or("no engines were started across the namespace pair")?;
                        args.extend([
                            "-socket".into(),
                            client.socket.display().to_string(),
                            "-peer".into(),
                            server.address.clone(),
                        ]);
                        d.insert("ucx_transports".into(), tls.transports().into());
                        d.insert("engine_ucx_address".into(), server.address.clone().into());
                    }
                    Some(tls) => {
                        let e =
                            ctx.needle_engines.iter().find(|e| e.tls == tls).ok_or_else(|| {
                                format!("no engine serving the volume over {} was started", tls.name())
                            })?;
                        args.extend([
                            "-socket".into(),
                            e.socket.display().to_string(),
                            "-peer".into(),
                            e.address.clone(),
                        ]);
                        d.insert("ucx_transports".into(), tls.transports().into());
                        d.insert("engine_ucx_address".into(), e.address.clone().into());
                    }
                    None => args.push("-no-engine".into()),
                }
                if let Some(n) = ctx.netns.as_ref().filter(|_| netns) {
                    d.insert("netns_client".into(), n.client_ns.clone().into());
                    d.insert("netns_server".into(), n.server_ns.clone().into());
                }
            }
            Kind::Cold(reader) => {
                let (a, facts) = cold::reader_args(ctx, self.name, reader)?;
                args.extend(a);
                d.extend(facts);
            }
            Kind::FrontEnd { front_end, tls } => {
                let weed = ctx
                    .weed
                    .as_ref()
                    .ok_or("this scenario needs the weed cluster, and none was started")?;
                let (Some(master), Some(filer), Some(file), Some(bytes)) =
                    (&weed.master, &weed.filer, &weed.fs_file, weed.fs_bytes)
                else {
                    return Err("the weed host started no filer (ringlat -weed -fs-mb)".into());
                };
                let bin = match tls {
                    None => weed.weed.clone(),
                    Some(_) => weed.weed_ring.clone().ok_or_else(|| {
                        weed.weed_ring_error
                            .clone()
                            .unwrap_or_else(|| "no weed with the ring read path (scripts/weed --ring)".into())
                    })?,
                };
                let object = match front_end {
                    FrontEnd::S3(n) | FrontEnd::Filer(n) => n,
                    _ => 0,
                };
                args.extend([
                    "-no-engine".into(),
                    "-name".into(),
                    self.name.into(),
                    "-fs".into(),
                    front_end.word().into(),
                    "-fs-path".into(),
                    if tls.is_some() { "ring" } else { "http" }.into(),
                    "-fs-weed".into(),
                    bin.clone(),
                    "-master".into(),
                    master.clone(),
                    "-filer".into(),
                    filer.clone(),
                    "-fs-file".into(),
                    file.clone(),
                    "-fs-bytes".into(),
                    bytes.to_string(),
                ]);
                if let Some(m) = &weed.volume_metrics {
                    args.extend(["-volume-metrics".into(), m.clone()]);
                }
                if object > 0 {
                    args.extend(["-fs-object-bytes".into(), object.to_string()]);
                    d.insert("object_bytes".into(), object.into());
                } else {
                    d.insert("file".into(), file.clone().into());
                    d.insert("file_bytes".into(), bytes.into());
                }
                d.insert("path".into(), if tls.is_some() { "ring" } else { "http" }.into());
                d.insert("front_end".into(), front_end.word().into());
                d.insert("weed".into(), bin.into());
                d.insert("volume_server".into(), weed.volume.clone().into());
                if let Some(tls) = tls {
                    let e = ctx
                        .needle_engines
                        .iter()
                        .find(|e| e.tls == tls)
                        .ok_or_else(|| format!("no engine serving the volume over {} was started", tls.name()))?;
                    args.extend([
                        "-engine-socket".into(),
                        e.socket.display().to_string(),
                        "-engine-addrs".into(),
                        format!("{}={}", weed.volume, e.address),
                    ]);
                    d.insert("ucx_transports".into(), tls.transports().into());
                    d.insert("engine_ucx_address".into(), e.address.clone().into());
                }
            }
        }
        Ok((args, d))
    }

    fn start(&mut self, ctx: &Ctx) -> Result<()> {
        let path = ctx
            .ringlat
            .as_deref()
            .ok_or("no ringlat binary (the Go scenarios need one)")?;
        let (mut args, facts) = self.args(ctx)?;
        // From the measuring thread: ringlat inherits the client core.
        let mut p = match (&self.kind, ctx.netns.as_ref()) {
            (Kind::Needle { netns: true, .. }, Some(n)) => {
                // In the client's namespace: its HTTP GETs cross the veth (`ip netns exec`
                // execs ringlat in place: the pid and the pipes are ringlat's).
                let mut wrapped: Vec<String> = ["netns", "exec", &n.client_ns].map(String::from).to_vec();
                wrapped.push(path.display().to_string());
                wrapped.append(&mut args);
                Ringlat::spawn(std::path::Path::new("ip"), &wrapped, None)?
            }
            (Kind::Needle { netns: true, .. }, None) => {
                return Err("this scenario runs across the namespace pair, and none was set up".into())
            }
            _ => Ringlat::spawn(path, &args, None)?,
        };
        let line = match p.read_line(self.kind.ready_timeout()) {
            Ok(l) => l,
            Err(e) if e.is::<crate::interrupt::Interrupted>() => {
                let _ = p.failure("interrupted");
                return Err(e);
            }
            Err(e) => return Err(p.failure(&format!("waiting for ringlat to start: {e}"))),
        };
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| p.failure(&format!("ringlat's first line is not JSON ({e}): {line}")))?;
        if ready["ready"] != true {
            return Err(p.failure(&format!("ringlat did not start: {line}")));
        }
        if let (Kind::FrontEnd { tls: Some(tls), .. }, Some(weed)) = (&self.kind, &ctx.weed) {
            // The front end is up and has written its data: measure only once the serving
            // engine serves every volume that made (NeedleEngine::wait_serving).
            if let Some(e) = ctx.needle_engines.iter().find(|e| e.tls == *tls) {
                if let Err(err) = e.wait_serving(&weed.volume_dir, std::time::Duration::from_secs(30)) {
                    return Err(p.failure(&err.to_string()));
                }
            }
        }
        self.details.insert("ringlat".into(), path.display().to_string().into());
        for key in ["go", "gomaxprocs", "session", "core"] {
            if let Some(v) = ready.get(key) {
                self.details.insert(format!("ringlat_{key}"), v.clone());
            }
        }
        if let Kind::Needle { .. } = self.kind {
            // ringlat read the needle once over HTTP (and the ring) and compared the bytes.
            let verified = ready["needle"]["verified"] == true;
            if !verified {
                return Err(p.failure(&format!("ringlat did not verify the needle's bytes: {line}")));
            }
            self.details.insert("bytes_verified".into(), verified.into());
            // Needle mode keeps the collector on (serve.go).
            self.details.insert("ringlat_gc".into(), "on".into());
        }
        if let Kind::FrontEnd { .. } = self.kind {
            // ringlat started the front end and read its data once, byte for byte.
            if ready["fs"]["verified"] != true {
                return Err(p.failure(&format!("ringlat did not verify the front end's bytes: {line}")));
            }
            self.details.insert("bytes_verified".into(), true.into());
            self.details.insert("ringlat_gc".into(), "on".into());
        }
        if let Kind::Cold(r) = self.kind {
            if let Err(err) = cold::wait_serving(ctx, r) {
                return Err(p.failure(&err.to_string()));
            }
            self.details.insert("ringlat_gc".into(), "on".into());
        }
        self.details.extend(facts);
        self.proc = Some(p);
        Ok(())
    }
}

impl Scenario for GoRinglat {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.proc.is_none() {
            self.start(ctx)?;
        }
        let timing = ctx.timing;
        let io_before = match self.kind {
            Kind::Cold(r) => cold::served_io(ctx, r)?,
            _ => None,
        };
        let p = self.proc.as_mut().expect("started above");
        let cmd = format!(
            "block {} {} {}\n",
            self.kind.command_word(),
            timing.warmup.as_nanos(),
            timing.measure.as_nanos()
        );
        let answer = p
            .send(&cmd)
            .and_then(|()| p.read_line(timing.warmup + timing.measure + STALL_LIMIT));
        let allocs = &mut self.allocs;
        let fs_stats = &mut self.fs;
        let cold_totals = &mut self.cold;
        let kind = self.kind;
        let result = answer.and_then(|line| {
            let b = GoBlock::parse(&line)?;
            if b.scenario != self.name {
                return Err(format!("ringlat answered for {:?}, expected {}", b.scenario, self.name).into());
            }
            b.record_into(hist)?;
            allocs.ops += b.ops;
            allocs.mallocs += b.mallocs;
            allocs.bytes += b.alloc_bytes;
            allocs.gc_cycles += b.gc_cycles;
            allocs.gc_pause_ns += b.gc_pause_ns;
            allocs.cpu_ns += b.cpu_ns;
            allocs.wall_ns += u64::try_from(timing.warmup.as_nanos()).unwrap_or(u64::MAX) + b.elapsed_ns;
            if let Some(r) = &b.ring {
                allocs.cq_sleeps += r.cq_sleeps;
                allocs.engine_wakeups += r.engine_wakeups;
            }
            if let Some(f) = b.fs {
                let t = &mut *fs_stats;
                t.reads += f.reads;
                t.bytes_verified += f.bytes_verified;
                t.resident_before += f.resident_before;
                t.resident_extra = t.resident_extra.max(f.resident_extra);
                t.drops += f.drops;
                t.volume_gets = if f.volume_gets < 0 || t.volume_gets < 0 {
                    -1
                } else {
                    t.volume_gets + f.volume_gets
                };
                if !f.ring_log.is_empty() {
                    t.ring_log = f.ring_log;
                }
            }
            if let Kind::Cold(r) = kind {
                let st = b
                    .cold
                    .as_ref()
                    .ok_or("ringlat's cold block answer has no \"cold\" counts")?;
                let io_after = cold::served_io(ctx, r)?;
                cold_totals.add(st, io_before.zip(io_after).map(|(a, b)| b.saturating_sub(a)));
            }
            Ok(BlockRun {
                samples: b.samples,
                elapsed: Duration::from_nanos(b.elapsed_ns),
            })
        });
        result.map_err(|e| {
            if e.is::<crate::interrupt::Interrupted>() {
                return e;
            }
            let mut p = self.proc.take().expect("running");
            p.failure(&e.to_string())
        })
    }

    fn details(&self) -> Map<String, Value> {
        let mut d = self.details.clone();
        let a = self.allocs;
        if a.ops > 0 {
            // What the Go side allocated per sample (warm-up included), and the collections.
            d.insert(
                "ringlat_allocs_per_op".into(),
                crate::stats::round2(a.mallocs as f64 / a.ops as f64).into(),
            );
            d.insert(
                "ringlat_alloc_bytes_per_op".into(),
                crate::stats::round2(a.bytes as f64 / a.ops as f64).into(),
            );
            d.insert("ringlat_gc_cycles".into(), a.gc_cycles.into());
            d.insert("ringlat_gc_pause_ns".into(), a.gc_pause_ns.into());
        }
        if a.cpu_ns > 0 && a.wall_ns > 0 {
            // Cores' worth of CPU ringlat used while its blocks ran: near 1 (its one client
            // core) when the client side is the bottleneck.
            d.insert(
                "ringlat_cpu_share".into(),
                crate::stats::round2(a.cpu_ns as f64 / a.wall_ns as f64).into(),
            );
        }
        if let (Kind::Needle { tls: Some(_), .. }, true) = (self.kind, a.ops > 0) {
            // Per read: how often a waiter slept on the CQ doorbell (nothing to reap: waiting
            // for the engine) and how often the client woke the engine (it had slept).
            let per_read = |n: u64| crate::stats::round2(n as f64 / a.ops as f64);
            d.insert("ring_cq_sleeps_per_read".into(), per_read(a.cq_sleeps).into());
            d.insert("ring_engine_wakeups_per_read".into(), per_read(a.engine_wakeups).into());
        }
        if let Kind::Cold(_) = self.kind {
            self.cold.put(&mut d);
        }
        if let Kind::FrontEnd { .. } = self.kind {
            let f = &self.fs;
            d.insert("fs_reads".into(), f.reads.into());
            d.insert("fs_bytes_verified".into(), f.bytes_verified.into());
            d.insert("fs_resident_before".into(), f.resident_before.into());
            d.insert("fs_resident_extra".into(), f.resident_extra.into());
            d.insert("fs_page_drops".into(), f.drops.into());
            if f.volume_gets >= 0 && f.reads > 0 {
                // Where the bytes came from: ~1 per read (per chunk) over HTTP, 0 on the ring.
                d.insert("fs_volume_gets".into(), f.volume_gets.into());
                d.insert(
                    "fs_volume_gets_per_read".into(),
                    crate::stats::round2(f.volume_gets as f64 / f.reads as f64).into(),
                );
            }
            if !f.ring_log.is_empty() {
                d.insert("fs_ring_log".into(), f.ring_log.clone().into());
            }
        }
        d
    }
}

/// One block as ringlat reports it.
#[derive(Debug, Deserialize)]
pub struct GoBlock {
    pub scenario: String,
    pub samples: u64,
    pub elapsed_ns: u64,
    /// Non-empty buckets: (lowest value of the bucket in ns, count).
    pub hist: Vec<(u64, u64)>,
    /// Samples run, warm-up included, and the Go runtime's counters over them (0 from an
    /// older ringlat).
    #[serde(default)]
    pub ops: u64,
    #[serde(default)]
    pub mallocs: u64,
    #[serde(default)]
    pub alloc_bytes: u64,
    #[serde(default)]
    pub gc_cycles: u64,
    #[serde(default)]
    pub gc_pause_ns: u64,
    /// A front-end block's counts.
    #[serde(default)]
    pub fs: Option<FsStats>,
    /// ringlat's CPU time over the block, warm-up included (0 from an older ringlat).
    #[serde(default)]
    pub cpu_ns: u64,
    /// The session's doorbell counts over the block (ring blocks).
    #[serde(default)]
    pub ring: Option<RingStats>,
    /// A cold block's counts.
    #[serde(default)]
    pub cold: Option<cold::ColdStats>,
}

/// A ring block's doorbell counts (go-client/cmd/ringlat/serve.go, ringBlockStats).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RingStats {
    pub cq_sleeps: u64,
    pub engine_wakeups: u64,
}

impl GoBlock {
    /// Parses one answer line; `{"error": ...}` becomes the error.
    pub fn parse(line: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("ringlat's answer is not JSON ({e}): {line}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("ringlat failed: {}", err.as_str().unwrap_or(&err.to_string())).into());
        }
        serde_json::from_value(v).map_err(|e| format!("ringlat's answer is malformed ({e}): {line}").into())
    }

    /// Records the buckets into `hist` (ns); the counts must add up to `samples`.
    pub fn record_into(&self, hist: &mut Histogram<u64>) -> Result<()> {
        let mut total = 0u64;
        for &(value, count) in &self.hist {
            hist.saturating_record_n(value.clamp(1, HIGHEST_NS), count);
            total += count;
        }
        if total != self.samples || self.samples == 0 {
            return Err(format!(
                "ringlat's histogram holds {total} samples, its block {} (expected equal and > 0)",
                self.samples
            )
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn block_answer_is_parsed_and_recorded() {
        let line = r#"{"scenario":"ring.nop.go","samples":6,"elapsed_ns":1000,"hist":[[250,3],[260,2],[4100,1]]}"#;
        let b = GoBlock::parse(line).unwrap();
        assert_eq!(b.scenario, "ring.nop.go");
        let mut h = new_histogram();
        b.record_into(&mut h).unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(h.value_at_quantile(0.5), 250);
        assert_eq!(h.value_at_quantile(0.75), 260);
        assert!(h.equivalent(h.max(), 4100));
    }

    #[test]
    fn cpu_time_and_doorbell_counts_are_read() {
        let line = r#"{"scenario":"x","samples":1,"elapsed_ns":9,"hist":[[5,1]],"cpu_ns":7,"ring":{"cq_sleeps":3,"engine_wakeups":2}}"#;
        let b = GoBlock::parse(line).unwrap();
        assert_eq!(b.cpu_ns, 7);
        assert_eq!(b.ring.map(|r| (r.cq_sleeps, r.engine_wakeups)), Some((3, 2)));
        let b = GoBlock::parse(r#"{"scenario":"x","samples":1,"elapsed_ns":9,"hist":[[5,1]]}"#).unwrap();
        assert!(b.cpu_ns == 0 && b.ring.is_none());
    }

    #[test]
    fn error_answers_and_bad_counts_are_errors() {
        let e = GoBlock::parse(r#"{"error":"engine unavailable"}"#).unwrap_err();
        assert!(e.to_string().contains("engine unavailable"), "{e}");
        assert!(GoBlock::parse("not json").is_err());
        assert!(GoBlock::parse(r#"{"scenario":"x"}"#).is_err());
        let b = GoBlock::parse(r#"{"scenario":"x","samples":5,"elapsed_ns":1,"hist":[[1,4]]}"#).unwrap();
        assert!(b.record_into(&mut new_histogram()).is_err());
    }

    /// ringlat reports each bucket by its lowest value (go-client/cmd/ringlat/serve.go,
    /// bucketFloor); recorded here, that value must fall into the same bucket as the
    /// values it stands for, so Go and Rust percentiles have the same precision.
    #[test]
    fn go_bucket_floors_land_in_the_same_bucket() {
        let h = new_histogram();
        // The Go layout, written out: exact below 2048, then 1024 buckets per power of two.
        let go_floor = |v: u64| -> u64 {
            if v < 2048 {
                v
            } else {
                let shift = 64 - v.leading_zeros() - 11;
                (v >> shift) << shift
            }
        };
        for v in (1..5000u64).chain([123_456, 999_999, 7_654_321, 59_999_999_999]) {
            assert_eq!(h.lowest_equivalent(v), go_floor(v), "value {v}");
        }
    }
}
