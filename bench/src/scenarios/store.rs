//! `store.open.10m` (issue 16, "needle maps at volume-server scale"): 10 million needles in
//! [`VOLUMES`] SeaweedFS volumes, opened by the engine and by the stock `weed volume`.
//!
//! For each: the seconds from the process's start until every volume is served, and its
//! resident memory then minus its resident memory with an empty directory (started in the
//! same run), per needle. A sample (one per block) is one engine open of the whole set: start
//! to `volume_indexing.done` in `engine status --json`; the empty engine and both `weed`
//! processes are measured once, in the first block (a 10M-needle `weed` load is slow, and its
//! number is the comparison, not the subject).
//!
//! The volume set is written once and kept in the cache directory ([`cache_dir`]), keyed by
//! its shape, because writing it costs more than a run of the scenario.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use seaweed_format::writer::{base_name, needle};
use seaweed_format::{encode_needle, IdxEntry, SuperBlock, IDX_ENTRY_SIZE_4};
use serde_json::{json, Map, Value};

use super::{BlockRun, Ctx, Scenario};
use crate::engine::{Engine, EngineOptions};
use crate::Result;

/// Volumes in the set: 10 of 1M needles each at the scenario's 10M.
pub const VOLUMES: u32 = 10;
/// Needles of the scenario as named (`--store-needles` makes a smaller set, for smoke runs).
pub const NEEDLES: u64 = 10_000_000;
/// Data bytes per needle: small, the set is about the map, not the data (48 bytes a needle
/// on disk with the header, checksum, timestamp and padding).
const DATA_BYTES: usize = 8;

/// How often the engine's status and weed's `/status` are polled while they load.
const POLL: Duration = Duration::from_millis(50);
/// After everything is loaded and before RSS is read: threads that built the maps finish and
/// free what they held (Go's GC runs; the engine's indexer threads end).
const SETTLE: Duration = Duration::from_secs(1);
/// A load that takes longer than this is an error (10M needles take seconds, not minutes).
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// `${SWRING_CACHE:-${XDG_CACHE_HOME:-~/.cache}/seaweed-ring}`: where the weed builds are
/// kept too (go-client/internal/weedcluster `findWeed`).
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("SWRING_CACHE").filter(|c| !c.is_empty()) {
        return PathBuf::from(c);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("seaweed-ring")
}

/// The cached set's directory for `needles` needles: the name says everything that shapes it.
pub fn set_dir(needles: u64) -> PathBuf {
    cache_dir().join(format!("store-open-{VOLUMES}vol-{needles}n-{DATA_BYTES}b-v3"))
}

/// Marks a set whose every file was written (a run cut short leaves none).
const COMPLETE: &str = "complete";

/// The volume set of `needles` needles (spread over [`VOLUMES`] volumes), written unless a
/// complete one is cached; whether it was.
fn volume_set(needles: u64) -> Result<(PathBuf, bool)> {
    let dir = set_dir(needles);
    if dir.join(COMPLETE).is_file() {
        return Ok((dir, true));
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    write_set(&tmp, needles).map_err(|e| format!("writing the volume set in {}: {e}", tmp.display()))?;
    File::create(tmp.join(COMPLETE))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), dir.display()))?;
    Ok((dir, false))
}

/// Needle ids of volume `vid` (1-based): its share of `needles`, the remainder in the last.
fn ids_of(vid: u32, needles: u64) -> std::ops::RangeInclusive<u64> {
    let per = needles / u64::from(VOLUMES);
    let n = if vid == VOLUMES {
        needles - per * u64::from(VOLUMES - 1)
    } else {
        per
    };
    1..=n
}

/// Every volume (version 3, 16-byte `.idx` entries, a `.vif`, as `weed volume` writes them)
/// through buffered writers: the `VolumeWriter`'s syscall per needle would take minutes.
fn write_set(dir: &Path, needles: u64) -> std::io::Result<()> {
    const VERSION: u8 = 3;
    for vid in 1..=VOLUMES {
        let base = dir.join(base_name("", vid));
        let mut dat = BufWriter::with_capacity(1 << 20, File::create(base.with_extension("dat"))?);
        let mut idx = BufWriter::with_capacity(1 << 20, File::create(base.with_extension("idx"))?);
        let sb = SuperBlock {
            version: VERSION,
            replica_placement: 0x01,
            ttl: [0, 0],
            compaction_revision: 0,
            extra_size: 0,
        };
        let mut end = sb.encode().len() as u64;
        dat.write_all(&sb.encode())?;
        let mut entry = Vec::with_capacity(IDX_ENTRY_SIZE_4);
        let data = [0x5au8; DATA_BYTES];
        for id in ids_of(vid, needles) {
            // Needles start 8-byte aligned, as `NewDiskFile` appends them.
            let pad = end.div_ceil(8) * 8 - end;
            dat.write_all(&[0u8; 8][..pad as usize])?;
            end += pad;
            let (bytes, size) = encode_needle(&needle(id, cookie(vid, id), &data), VERSION);
            entry.clear();
            IdxEntry {
                id,
                offset: end,
                size: size as i32,
            }
            .encode_into(IDX_ENTRY_SIZE_4, &mut entry)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
            dat.write_all(&bytes)?;
            idx.write_all(&entry)?;
            end += bytes.len() as u64;
        }
        dat.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        idx.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::write(
            base.with_extension("vif"),
            format!("{{\n  \"files\": [],\n  \"version\": {VERSION},\n  \"replication\": \"\",\n  \"bytesOffset\": 4,\n  \"datFileSize\": \"0\"\n}}"),
        )?;
    }
    Ok(())
}

fn cookie(vid: u32, id: u64) -> u32 {
    0x5707_0000 ^ (vid << 8) ^ id as u32
}

/// `VmRSS`, `RssAnon` and `RssFile` of `pid`, in bytes (/proc/PID/status).
pub fn rss(pid: u32) -> Result<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss(&text).ok_or_else(|| format!("no VmRSS/RssAnon/RssFile in /proc/{pid}/status").into())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
}

fn parse_rss(status: &str) -> Option<Rss> {
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some(Rss {
        total: kb("VmRSS:")?,
        anon: kb("RssAnon:")?,
        file: kb("RssFile:")?,
    })
}

/// One process's load of a directory.
#[derive(Debug, Clone, Default)]
struct Load {
    seconds: f64,
    rss: Rss,
    /// What the process itself says about it (the engine's status: its indexing millis and
    /// needle map bytes; weed's /status: its volumes and file count).
    facts: Map<String, Value>,
}

impl Load {
    fn json(&self) -> Value {
        let mut m = self.facts.clone();
        m.insert("seconds".into(), self.seconds.into());
        m.insert("rss_bytes".into(), self.rss.total.into());
        m.insert("rss_anon_bytes".into(), self.rss.anon.into());
        m.insert("rss_file_bytes".into(), self.rss.file.into());
        Value::Object(m)
    }
}

/// Starts an engine serving `dir`, waits until every volume is indexed, and reads its memory.
fn engine_load(template: &EngineOptions, dir: &Path, log: Option<PathBuf>, volumes: usize) -> Result<Load> {
    let mut opts = template.clone();
    opts.seaweedfs_dir = Some(dir.to_path_buf());
    opts.log_path = log;
    let t0 = Instant::now();
    let (mut engine, session) = Engine::start(&opts)?;
    let loaded = engine_wait(&engine, &opts.binary, volumes, t0)
        .and_then(|(seconds, _)| {
            std::thread::sleep(SETTLE);
            let pid = engine.pid().ok_or("the engine's process id is unknown")?;
            let rss = rss(pid)?;
            // The status after the settle: the same maps the RSS holds.
            let status = engine_status(&opts.binary, &engine.socket)?;
            Ok(Load {
                seconds,
                rss,
                facts: engine_facts(&status),
            })
        })
        .map_err(|e| crate::engines::with_engine_log(e, &mut engine));
    drop(session);
    let stopped = crate::engines::stop_engine(engine);
    let load = loaded?;
    stopped?;
    Ok(load)
}

fn engine_status(binary: &Path, socket: &Path) -> Result<Value> {
    let out = Command::new(binary)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("engine status --json: {e}").into())
}

/// Polls the status until indexing is done and `volumes` are served: seconds since `t0`.
fn engine_wait(engine: &Engine, binary: &Path, volumes: usize, t0: Instant) -> Result<(f64, Value)> {
    loop {
        let s = engine_status(binary, &engine.socket)?;
        let served = s["volumes"].as_array().map_or(0, Vec::len);
        if s["volume_indexing"]["done"] == true && served >= volumes {
            return Ok((t0.elapsed().as_secs_f64(), s));
        }
        if t0.elapsed() > LOAD_TIMEOUT {
            return Err(format!(
                "the engine served {served} of {volumes} volumes after {LOAD_TIMEOUT:?}: {}",
                s["volume_indexing"]
            )
            .into());
        }
        crate::interrupt::check()?;
        std::thread::sleep(POLL);
    }
}

/// The engine's own account: indexing time, needles, needle map bytes (summed over volumes).
fn engine_facts(status: &Value) -> Map<String, Value> {
    let vols = status["volumes"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| vols.iter().filter_map(|v| v[k].as_u64()).sum::<u64>();
    let mut m = Map::new();
    m.insert("volumes".into(), vols.len().into());
    m.insert("needles_live".into(), sum("needles_live").into());
    m.insert("needle_map_bytes".into(), sum("needle_map_bytes").into());
    m.insert("indexing_millis".into(), status["volume_indexing"]["millis"].clone());
    m
}

/// A `weed` process: SIGTERM (then SIGKILL) when dropped.
struct WeedProc {
    child: Child,
}

impl Drop for WeedProc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `weed <args>` with its output in `log`, on `cpus` (the engine's: this undoes the
/// measuring thread's pin, which a child inherits).
fn spawn_weed(weed: &Path, args: &[String], cpus: &[usize], log: &Path) -> Result<WeedProc> {
    let log_file = File::create(log)?;
    let mut cmd = Command::new(weed);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .process_group(0);
    let cpus = cpus.to_vec();
    // SAFETY: sched_setaffinity is async-signal-safe; `set` is plain data on the child's stack.
    unsafe {
        cmd.pre_exec(move || {
            if cpus.is_empty() {
                return Ok(());
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
                libc::CPU_SET(c, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {} {}: {e}", weed.display(), args.join(" ")))?;
    Ok(WeedProc { child })
}

/// The last lines of a log, for an error.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `weed master` for the volume servers to register with: `weed volume` serves nothing
/// (not even `/status`) until a master answered it. Its own process, so that the volume
/// server's RSS is the volume server's.
fn weed_master(weed: &Path, cpus: &[usize], log: &Path, mdir: &Path) -> Result<(WeedProc, String)> {
    let (port, grpc) = (free_port()?, free_port()?);
    let args = vec![
        "master".to_string(),
        "-ip=127.0.0.1".into(),
        format!("-port={port}"),
        format!("-port.grpc={grpc}"),
        format!("-mdir={}", mdir.display()),
    ];
    let p = spawn_weed(weed, &args, cpus, log)?;
    // `host:port.grpcport`: the volume server dials the master's gRPC port as given.
    Ok((p, format!("127.0.0.1:{port}.{grpc}")))
}

/// Starts `weed volume` on `dir` with the in-memory needle map (its default), waits until its
/// `/status` lists `volumes` volumes, and reads its memory.
fn weed_load(weed: &Path, master: &str, dir: &Path, cpus: &[usize], log: &Path, volumes: usize) -> Result<Load> {
    let (port, grpc) = (free_port()?, free_port()?);
    let args = vec![
        "volume".to_string(),
        format!("-dir={}", dir.display()),
        format!("-mserver={master}"),
        "-ip=127.0.0.1".into(),
        "-index=memory".into(),
        format!("-port={port}"),
        format!("-port.grpc={grpc}"),
        format!("-max={}", volumes.max(1)),
    ];
    let t0 = Instant::now();
    let mut w = spawn_weed(weed, &args, cpus, log)?;
    let pid = w.child.id();
    let fail =
        |e: String| -> crate::Error { format!("{e}; weed's log ({}):\n{}", log.display(), log_tail(log)).into() };
    loop {
        if let Ok(Some(st)) = w.child.try_wait() {
            return Err(fail(format!("weed volume exited ({st}) before it served its volumes")));
        }
        if let Some(s) = weed_status(port).filter(|s| s["Volumes"].as_array().map_or(0, Vec::len) >= volumes) {
            let seconds = t0.elapsed().as_secs_f64();
            std::thread::sleep(SETTLE);
            let rss = rss(pid)?;
            let vols = s["Volumes"].as_array().cloned().unwrap_or_default();
            let mut facts = Map::new();
            facts.insert("volumes".into(), vols.len().into());
            let files: u64 = vols.iter().filter_map(|v| v["FileCount"].as_u64()).sum();
            facts.insert("file_count".into(), files.into());
            facts.insert("version".into(), s["Version"].clone());
            return Ok(Load { seconds, rss, facts });
        }
        if t0.elapsed() > LOAD_TIMEOUT {
            return Err(fail(format!(
                "weed volume did not list {volumes} volumes in {LOAD_TIMEOUT:?}"
            )));
        }
        crate::interrupt::check()?;
        std::thread::sleep(POLL);
    }
}

/// `GET /status` of the volume server on `port` (HTTP/1.0: a body to the connection's end,
/// never chunked); `None` until it answers with JSON.
fn weed_status(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let body = resp.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    serde_json::from_slice(&resp[body..]).ok()
}

/// Both sides' loads of the set and of an empty directory.
#[derive(Debug, Default)]
struct Side {
    empty: Option<Load>,
    full: Vec<Load>,
    error: Option<String>,
}

impl Side {
    /// The first full load's RSS over the empty one's, per needle.
    fn bytes_per_needle(&self, needles: u64) -> Option<f64> {
        let (empty, full) = (self.empty.as_ref()?, self.full.first()?);
        // Signed: at a small count the difference is noise and may be below zero.
        Some((full.rss.total as f64 - empty.rss.total as f64) / needles.max(1) as f64)
    }

    fn json(&self, needles: u64) -> Value {
        let mut secs: Vec<f64> = self.full.iter().map(|l| l.seconds).collect();
        secs.sort_by(f64::total_cmp);
        json!({
            "seconds_to_serve": secs.get(secs.len() / 2),
            "seconds_each": self.full.iter().map(|l| l.seconds).collect::<Vec<_>>(),
            "rss_delta_bytes": self.empty.as_ref().zip(self.full.first()).map(|(e, f)| f.rss.total as i64 - e.rss.total as i64),
            "rss_bytes_per_needle": self.bytes_per_needle(needles),
            "empty": self.empty.as_ref().map(Load::json),
            "loaded": self.full.first().map(Load::json),
            "error": self.error,
        })
    }
}

#[derive(Default)]
pub struct StoreOpen {
    /// [`NEEDLES`], or `--store-needles` (set in the first block).
    needles: u64,
    dir: Option<PathBuf>,
    cached: bool,
    write_seconds: f64,
    engine: Side,
    weed: Side,
}

impl StoreOpen {
    /// The set, the empty engine, and weed on both directories: once, in the first block.
    fn first(&mut self, ctx: &Ctx, template: &EngineOptions) -> Result<PathBuf> {
        self.needles = ctx.store_needles.unwrap_or(NEEDLES);
        let t = Instant::now();
        let (dir, cached) = volume_set(self.needles)?;
        (self.cached, self.write_seconds) = (cached, t.elapsed().as_secs_f64());
        let empty = tempdir("empty")?;
        let log = |name: &str| ctx.out.as_ref().map(|d| d.join(format!("store-open-{name}.log")));
        let result = engine_load(template, &empty, log("engine-empty"), 0);
        self.engine.empty = Some(result?);
        match find_weed(ctx) {
            Err(e) => self.weed.error = Some(e),
            Ok(weed) => {
                let weed_log = |name: &str| {
                    log(name).unwrap_or_else(|| {
                        std::env::temp_dir().join(format!("swring-bench-{}-{name}.log", std::process::id()))
                    })
                };
                let cpus = &template.cpus;
                let mdir = tempdir("master")?;
                let r = weed_master(&weed, cpus, &weed_log("weed-master"), &mdir).and_then(|(_master, addr)| {
                    self.weed.empty = Some(weed_load(&weed, &addr, &empty, cpus, &weed_log("weed-empty"), 0)?);
                    weed_load(&weed, &addr, &dir, cpus, &weed_log("weed"), VOLUMES as usize)
                });
                let _ = std::fs::remove_dir_all(&mdir);
                match r {
                    Ok(l) => self.weed.full.push(l),
                    Err(e) if e.is::<crate::interrupt::Interrupted>() => return Err(e),
                    Err(e) => self.weed.error = Some(e.to_string()),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&empty);
        Ok(dir)
    }
}

/// The run's stock `weed` (`ringlat -weed -check`), or why there is none.
fn find_weed(ctx: &Ctx) -> std::result::Result<PathBuf, String> {
    let ringlat = ctx.ringlat.as_ref().ok_or("no ringlat (Go) to find weed with")?;
    crate::weed::check(ringlat).map(|b| PathBuf::from(b.weed))
}

fn tempdir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("swring-bench-store-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

impl Scenario for StoreOpen {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let template = ctx
            .engine_template
            .clone()
            .ok_or("this scenario starts engines, and no engine binary was found")?;
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => {
                let d = self.first(ctx, &template)?;
                self.dir.insert(d).clone()
            }
        };
        let log = ctx.out.as_ref().map(|d| d.join("store-open-engine.log"));
        let load = engine_load(&template, &dir, log, VOLUMES as usize)?;
        let took = Duration::from_secs_f64(load.seconds);
        crate::stats::record(hist, took);
        self.engine.full.push(load);
        Ok(BlockRun {
            samples: 1,
            elapsed: took,
        })
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("needles".into(), self.needles.into());
        m.insert("volumes".into(), VOLUMES.into());
        m.insert("needle_data_bytes".into(), DATA_BYTES.into());
        if let Some(d) = &self.dir {
            m.insert("volume_dir".into(), d.display().to_string().into());
            m.insert("volume_set_cached".into(), self.cached.into());
            m.insert("volume_set_seconds".into(), self.write_seconds.into());
        }
        m.insert("engine".into(), self.engine.json(self.needles));
        m.insert("weed".into(), self.weed.json(self.needles));
        // The engine's own count of its maps' heap bytes, per needle (RSS aside).
        if let Some(l) = self.engine.full.first() {
            let map = l.facts.get("needle_map_bytes").and_then(Value::as_u64).unwrap_or(0);
            m.insert(
                "engine_map_bytes_per_needle".into(),
                (map as f64 / self.needles.max(1) as f64).into(),
            );
        }
        // The target's value: engine RSS per needle over weed's.
        let ratio = self
            .engine
            .bytes_per_needle(self.needles)
            .zip(self.weed.bytes_per_needle(self.needles))
            .filter(|(_, w)| *w > 0.0)
            .map(|(e, w)| e / w);
        m.insert(MEMORY_RATIO.into(), ratio.into());
        m
    }
}

/// The detail the target is on: engine RSS bytes per needle / weed's.
pub const MEMORY_RATIO: &str = "memory_per_needle_engine_over_weed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        let s = "Name:\tengine\nVmRSS:\t  2048 kB\nRssAnon:\t  1024 kB\nRssFile:\t 512 kB\nRssShmem:\t 512 kB\n";
        assert_eq!(
            parse_rss(s),
            Some(Rss {
                total: 2 << 20,
                anon: 1 << 20,
                file: 512 << 10
            })
        );
        assert_eq!(parse_rss("VmRSS:\t1 kB\n"), None);
        assert!(rss(std::process::id()).unwrap().total > 0);
    }

    #[test]
    fn needles_are_spread_over_the_volumes() {
        let total: u64 = (1..=VOLUMES).map(|v| ids_of(v, 10_000_003).count() as u64).sum();
        assert_eq!(total, 10_000_003);
        assert_eq!(ids_of(1, NEEDLES), 1..=1_000_000);
    }

    #[test]
    fn the_set_is_written_in_the_served_layout() {
        let dir = tempdir("test-set").unwrap();
        write_set(&dir, 25).unwrap();
        for vid in 1..=VOLUMES {
            for ext in ["dat", "idx", "vif"] {
                assert!(dir.join(format!("{vid}.{ext}")).is_file(), "{vid}.{ext}");
            }
        }
        // 2 needles a volume (the last has 7): 16-byte entries, 48 bytes a needle after the
        // 8-byte super block.
        assert_eq!(std::fs::metadata(dir.join("1.idx")).unwrap().len(), 2 * 16);
        assert_eq!(std::fs::metadata(dir.join("10.idx")).unwrap().len(), 7 * 16);
        assert_eq!(std::fs::metadata(dir.join("1.dat")).unwrap().len(), 8 + 2 * 48);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
