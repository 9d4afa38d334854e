//! `ring.idle.full.<tls>`: idle means idle with everything on (issue 17). Two engines of
//! their own, as a reader host and a volume server host have them: a serving engine with a
//! UCX listener and a SeaweedFS volume directory (volumes written here in the on-disk format,
//! `seaweed_format::writer`), and a reader engine with a UCX listener too, whose session
//! registered the serving engine as a peer and read a needle through it (so the UCX
//! connection exists on both sides). Once both workers sleep, both processes' CPU time is
//! watched for the idle window (`super::wake::idle_window`) as `ring.wake` watches the plain engine, per thread too.
//!
//! A sample is the first READ_NEEDLE (4 KiB) after both engines went to sleep: wait until
//! both announced NEED_WAKEUP (plus [`SETTLE`]), submit, spin until the completion; so
//! whatever keeps the engines idle must not cost the request that ends the idleness.

use seaweed_format::writer::pattern;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ring_client::Session;
use ring_proto::needle::NEEDLE_META_LEN;
use ring_proto::{opcode, Sqe};
use seaweed_format::writer::{needle, VolumeWriter};
use serde_json::{json, Map, Value};

use super::wake::{core_fraction, idle_window, process_ticks, schedstat_ns};
use super::{BlockRun, Ctx, PartTimedBlock, Scenario, SpinGuard, Tls};
use crate::engine::{Engine, EngineOptions};
use crate::Result;

/// After both engines announced NEED_WAKEUP: time for their workers to reach `epoll_wait`.
const SETTLE: Duration = Duration::from_micros(500);

/// Between the `engine status` reads that count the workers' wake-ups and the idle window.
const STATUS_QUIET: Duration = Duration::from_millis(100);

/// Volumes in the served directory (a fresh `weed volume` grows 7 for a collection) and
/// needles of [`NEEDLE_BYTES`] in each.
const VOLUMES: u32 = 7;
const NEEDLES_PER_VOLUME: u64 = 16;
/// The needle each sample reads (volume 1, needle 1).
pub const NEEDLE_BYTES: usize = 4096;
const READ_VID: u32 = 1;
const READ_ID: u64 = 1;

fn cookie(vid: u32, id: u64) -> u32 {
    0x5eed_0000 ^ (vid << 8) ^ id as u32
}

/// One thread's on-CPU time at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTime {
    pub tid: u32,
    pub comm: String,
    pub ns: u64,
}

/// Every thread of `pid` with its name (/proc/PID/task/TID/comm) and on-CPU time
/// (/proc/PID/task/TID/schedstat). Threads that end while being read are left out.
fn thread_times(pid: u32) -> Result<Vec<ThreadTime>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for t in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let t = t?;
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("schedstat")),
        ) else {
            continue;
        };
        if let Some(ns) = schedstat_ns(&stat) {
            out.push(ThreadTime {
                tid,
                comm: comm.trim_end_matches('\n').to_string(),
                ns,
            });
        }
    }
    Ok(out)
}

/// Each thread's CPU time between two snapshots (by thread id; a thread that started in
/// between counts from zero, one that ended is left out), most first.
pub fn thread_deltas(before: &[ThreadTime], after: &[ThreadTime]) -> Vec<ThreadTime> {
    let mut d: Vec<ThreadTime> = after
        .iter()
        .map(|a| {
            let start = before.iter().find(|b| b.tid == a.tid).map_or(0, |b| b.ns);
            ThreadTime {
                tid: a.tid,
                comm: a.comm.clone(),
                ns: a.ns.saturating_sub(start),
            }
        })
        .collect();
    d.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.tid.cmp(&b.tid)));
    d
}

/// A worker's `sleeps` and `wakeups` from `engine status --json` (summed over workers).
pub fn worker_sleeps(status: &Value) -> Option<(u64, u64)> {
    let ws = status["workers"].as_array()?;
    let mut sum = (0, 0);
    for w in ws {
        sum.0 += w["sleeps"].as_u64()?;
        sum.1 += w["wakeups"].as_u64()?;
    }
    Some(sum)
}

/// One engine's CPU time over the idle window.
#[derive(Debug, Clone)]
struct EngineIdle {
    role: &'static str,
    pid: u32,
    window: Duration,
    ticks: u64,
    clk_tck: u64,
    threads: Vec<ThreadTime>,
    /// Worker wake-ups (from `engine status`) during the window, when the status answered.
    wakeups: Option<u64>,
}

impl EngineIdle {
    fn fraction(&self) -> f64 {
        let tick = Duration::from_secs_f64(1.0 / self.clk_tck.max(1) as f64);
        core_fraction(tick * u32::try_from(self.ticks).unwrap_or(u32::MAX), self.window)
    }

    fn schedstat_fraction(&self) -> f64 {
        core_fraction(
            Duration::from_nanos(self.threads.iter().map(|t| t.ns).sum()),
            self.window,
        )
    }

    fn json(&self) -> Value {
        let threads: Vec<Value> = self
            .threads
            .iter()
            .map(|t| json!({"tid": t.tid, "comm": t.comm, "cpu_fraction": core_fraction(Duration::from_nanos(t.ns), self.window)}))
            .collect();
        json!({
            "pid": self.pid,
            "idle_cpu_fraction": self.fraction(),
            "idle_cpu_fraction_schedstat": self.schedstat_fraction(),
            "idle_cpu_ticks": self.ticks,
            "worker_wakeups": self.wakeups,
            "threads": threads,
        })
    }
}

/// The two engines and their sessions (fields drop in order: the sessions close before the
/// engines stop).
struct Pair {
    /// The bench's session with the serving engine (to see when it sleeps).
    server_session: Session,
    /// The reader's session: its peer is the serving engine's listener.
    reader_session: Session,
    peer: u32,
    procs: Procs,
}

/// The engine processes and the volume directory: stopped and removed when dropped.
struct Procs {
    server: Option<Engine>,
    reader: Option<Engine>,
    binary: PathBuf,
    dir: PathBuf,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for e in [self.reader.take(), self.server.take()].into_iter().flatten() {
            let _ = crate::engines::stop_engine(e);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct IdleFull {
    tls: Tls,
    seq: u64,
    pair: Option<Pair>,
    idle: Option<Vec<EngineIdle>>,
    idle_error: Option<String>,
    details: Map<String, Value>,
    commands: Option<(String, String)>,
}

impl IdleFull {
    pub fn new(tls: Tls) -> Self {
        Self {
            tls,
            seq: 0,
            pair: None,
            idle: None,
            idle_error: None,
            details: Map::new(),
            commands: None,
        }
    }

    fn start(&mut self, ctx: &Ctx) -> Result<()> {
        let template: EngineOptions = ctx
            .engine_template
            .clone()
            .ok_or("this scenario starts engines, and no engine binary was found")?;
        // From here on, dropping `procs` stops what started and removes the directory.
        let mut procs = Procs {
            server: None,
            reader: None,
            binary: template.binary.clone(),
            dir: volume_dir()?,
        };
        write_volumes(&procs.dir).map_err(|e| format!("writing the volumes in {}: {e}", procs.dir.display()))?;
        let log = |role: &str| {
            ctx.out
                .as_ref()
                .map(|d| d.join(format!("engine-idle-{}-{role}.log", self.tls.name())))
        };
        let mut server_opts = template.clone();
        server_opts.ucx = Some(self.tls);
        server_opts.seaweedfs_dir = Some(procs.dir.clone());
        server_opts.log_path = log("server");
        let (server, server_session) = Engine::start(&server_opts)?;
        let server = procs.server.insert(server);
        let address = server
            .ucx_listen_address(Duration::from_secs(15))
            .map_err(|e| crate::engines::with_engine_log(e, server))?;
        // The reader on a core of its own where there is one (as across the namespace pair),
        // else next to the serving engine.
        let reader_core = ctx
            .worker_cores
            .iter()
            .copied()
            .find(|&c| c != ctx.engine_core && c != ctx.client_core)
            .unwrap_or(ctx.engine_core);
        let mut reader_opts = template;
        reader_opts.cores = vec![reader_core];
        reader_opts.ucx = Some(self.tls);
        reader_opts.log_path = log("reader");
        let (reader, mut reader_session) = Engine::start(&reader_opts)?;
        let reader = procs.reader.insert(reader);
        self.commands = Some((
            procs.server.as_ref().expect("set").command_line().to_owned(),
            reader.command_line().to_owned(),
        ));
        let peer = reader_session
            .connect_peer(&address)
            .map_err(|e| format!("registering the serving engine's listener {address} as a peer: {e}"))?;
        // The set-up read: the connection comes up, and the bytes are checked once.
        let data = read_needle(&mut reader_session, peer, &mut self.seq, true)?;
        if data != pattern(NEEDLE_BYTES, u64::from(READ_VID) << 32 | READ_ID) {
            return Err("the set-up READ_NEEDLE returned other bytes than were written".into());
        }
        let d = &mut self.details;
        d.insert("first_read_checked".into(), true.into());
        d.insert("volumes".into(), VOLUMES.into());
        d.insert("needles_per_volume".into(), NEEDLES_PER_VOLUME.into());
        d.insert("needle_bytes".into(), NEEDLE_BYTES.into());
        d.insert("ucx_transports".into(), self.tls.transports().into());
        d.insert("server_ucx_address".into(), address.into());
        d.insert("server_core".into(), ctx.engine_core.into());
        d.insert("reader_core".into(), reader_core.into());
        self.pair = Some(Pair {
            server_session,
            reader_session,
            peer,
            procs,
        });
        Ok(())
    }

    /// Both engines' CPU time over the idle window, once both workers sleep.
    fn measure_idle(&self, settle: Duration) -> Result<Vec<EngineIdle>> {
        let p = self.pair.as_ref().expect("started");
        let engines = [("server", p.procs.server.as_ref()), ("reader", p.procs.reader.as_ref())];
        let mut pids = Vec::new();
        for (role, e) in &engines {
            let pid = e
                .and_then(Engine::pid)
                .ok_or_else(|| format!("the {role} engine's process id is unknown"))?;
            pids.push((*role, pid, e.expect("checked").socket.clone()));
        }
        let idle_window = idle_window()?;
        let status_before: Vec<_> = pids.iter().map(|(_, _, s)| status_sleeps(&p.procs.binary, s)).collect();
        // The control threads finish answering (and closing) those status connections
        // before the window opens.
        std::thread::sleep(STATUS_QUIET);
        wait_both_asleep(p, settle)?;
        // SAFETY: sysconf has no preconditions.
        let clk_tck = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        let mut before = Vec::new();
        for (_, pid, _) in &pids {
            before.push((process_ticks(*pid)?, thread_times(*pid)?));
        }
        let w0 = Instant::now();
        let end = w0 + idle_window;
        while Instant::now() < end {
            crate::interrupt::check()?;
            std::thread::sleep(Duration::from_millis(10).min(end.saturating_duration_since(Instant::now())));
        }
        let mut after = Vec::new();
        for (_, pid, _) in &pids {
            after.push((process_ticks(*pid)?, thread_times(*pid)?));
        }
        let window = w0.elapsed();
        let status_after: Vec<_> = pids.iter().map(|(_, _, s)| status_sleeps(&p.procs.binary, s)).collect();
        let mut out = Vec::new();
        for (i, (role, pid, _)) in pids.iter().enumerate() {
            // Wake-ups counted between the two status reads; the reads themselves wake no
            // worker (the control thread answers them), so any is the window's (or the
            // settle's, a few ms).
            let wakeups = status_before[i]
                .zip(status_after[i])
                .map(|(a, b)| b.1.saturating_sub(a.1));
            out.push(EngineIdle {
                role,
                pid: *pid,
                window,
                ticks: after[i].0.saturating_sub(before[i].0),
                clk_tck,
                threads: thread_deltas(&before[i].1, &after[i].1),
                wakeups,
            });
        }
        Ok(out)
    }
}

/// `engine status --json`'s worker sleeps and wake-ups (`None` when it does not answer).
fn status_sleeps(binary: &Path, socket: &Path) -> Option<(u64, u64)> {
    let out = Command::new(binary)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .ok()?;
    worker_sleeps(&serde_json::from_slice(&out.stdout).ok()?)
}

fn wait_both_asleep(p: &Pair, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for (role, s) in [("serving", &p.server_session), ("reader", &p.reader_session)] {
        while !s.engine_sleeping() {
            if s.state().is_terminal() {
                return Err(format!("the {role} engine ended the bench's session (state {:?})", s.state()).into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {role} engine's worker did not go to sleep within {timeout:?} ({})",
                    super::ring::stall_context(s)
                )
                .into());
            }
            crate::interrupt::check()?;
            std::hint::spin_loop();
        }
    }
    std::thread::sleep(SETTLE);
    Ok(())
}

/// One READ_NEEDLE of the scenario's needle through `peer`; with `copy`, its data.
fn read_needle(s: &mut Session, peer: u32, seq: &mut u64, copy: bool) -> Result<Vec<u8>> {
    *seq += 1;
    let want = *seq;
    s.submit(&Sqe {
        opcode: opcode::READ_NEEDLE,
        peer,
        user_data: want,
        buf_offset: 0,
        buf_len: (NEEDLE_META_LEN + NEEDLE_BYTES) as u32,
        aux: READ_VID,
        args: [READ_ID, u64::from(cookie(READ_VID, READ_ID)), 0, 0],
        ..Default::default()
    })?;
    let mut guard = SpinGuard::new();
    let c = loop {
        if let Some(c) = s.try_cqe()? {
            break c;
        }
        guard.turn(|| format!("waiting for READ_NEEDLE {want} ({})", super::ring::stall_context(s)))?;
    };
    if c.user_data != want || c.result != NEEDLE_BYTES as i32 {
        return Err(format!(
            "unexpected READ_NEEDLE completion: user_data {} result {}, expected {want} and {NEEDLE_BYTES}",
            c.user_data, c.result
        )
        .into());
    }
    let mut data = Vec::new();
    if copy {
        data.resize(NEEDLE_BYTES, 0);
        s.buffer()
            .read(NEEDLE_META_LEN, &mut data)
            .ok_or("the needle lies outside the session buffer")?;
    }
    Ok(data)
}

fn volume_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("swring-bench-volumes-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// [`VOLUMES`] volumes (version 3, 16-byte idx entries, a `.vif` each, as `weed volume`
/// writes them) of [`NEEDLES_PER_VOLUME`] needles.
fn write_volumes(dir: &Path) -> std::io::Result<()> {
    for vid in 1..=VOLUMES {
        let mut v = VolumeWriter::create(dir, "", vid, 3, 16)?;
        for id in 1..=NEEDLES_PER_VOLUME {
            v.write(&needle(
                id,
                cookie(vid, id),
                &pattern(NEEDLE_BYTES, u64::from(vid) << 32 | id),
            ))?;
        }
        v.write_vif(4)?;
    }
    Ok(())
}

impl Scenario for IdleFull {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.pair.is_none() {
            self.start(ctx)?;
        }
        if self.idle.is_none() && self.idle_error.is_none() {
            match self.measure_idle(ctx.settle) {
                Ok(i) => self.idle = Some(i),
                Err(e) if e.is::<crate::interrupt::Interrupted>() => return Err(e),
                Err(e) => self.idle_error = Some(e.to_string()),
            }
        }
        let timing = ctx.timing;
        let settle = ctx.settle;
        let p = self.pair.as_mut().expect("started");
        let mut block = PartTimedBlock::new(timing);
        loop {
            wait_both_asleep(p, settle)?;
            let t0 = Instant::now();
            read_needle(&mut p.reader_session, p.peer, &mut self.seq, false)?;
            let t1 = Instant::now();
            crate::interrupt::check()?;
            if let Some(run) = block.sample(hist, t0, t1) {
                return Ok(run);
            }
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = self.details.clone();
        if let Some(idle) = &self.idle {
            // The target's value: the busier of the two.
            let worst = idle.iter().map(EngineIdle::fraction).fold(0.0, f64::max);
            m.insert("idle_cpu_fraction".into(), worst.into());
            let worst_fine = idle.iter().map(EngineIdle::schedstat_fraction).fold(0.0, f64::max);
            m.insert("idle_cpu_fraction_schedstat".into(), worst_fine.into());
            let mut engines = Map::new();
            for e in idle {
                engines.insert(e.role.into(), e.json());
            }
            m.insert("idle_engines".into(), engines.into());
            if let Some(e) = idle.first() {
                m.insert("idle_window_s".into(), e.window.as_secs_f64().into());
                m.insert("clk_tck".into(), e.clk_tck.into());
            }
        }
        if let Some(e) = &self.idle_error {
            m.insert("idle_cpu_error".into(), e.clone().into());
        }
        if let Some((s, r)) = &self.commands {
            m.insert("server_command".into(), s.clone().into());
            m.insert("reader_command".into(), r.clone().into());
        }
        m.insert("settle_us".into(), (SETTLE.as_micros() as u64).into());
        m
    }

    fn engine_command(&self) -> Option<String> {
        self.commands.as_ref().map(|(s, r)| format!("{s} ; {r}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tid: u32, comm: &str, ns: u64) -> ThreadTime {
        ThreadTime {
            tid,
            comm: comm.into(),
            ns,
        }
    }

    #[test]
    fn thread_deltas_follow_thread_ids() {
        let before = [t(10, "engine", 5_000), t(11, "worker-0", 900), t(12, "gone", 7)];
        let after = [t(10, "engine", 5_000), t(11, "worker-0", 1_400), t(13, "new", 30)];
        assert_eq!(
            thread_deltas(&before, &after),
            vec![t(11, "worker-0", 500), t(13, "new", 30), t(10, "engine", 0)]
        );
    }

    #[test]
    fn sleeps_and_wakeups_are_summed_over_workers() {
        let s: Value =
            serde_json::from_str(r#"{"workers":[{"id":0,"sleeps":5,"wakeups":4},{"id":1,"sleeps":2,"wakeups":2}]}"#)
                .unwrap();
        assert_eq!(worker_sleeps(&s), Some((7, 6)));
        assert_eq!(worker_sleeps(&json!({"workers": [{"sleeps": 1}]})), None);
        assert_eq!(worker_sleeps(&json!({})), None);
    }

    #[test]
    fn reads_this_process_threads() {
        let me = thread_times(std::process::id()).unwrap();
        assert!(me.iter().any(|t| t.tid == std::process::id() && !t.comm.is_empty()));
    }

    #[test]
    fn volumes_are_written_in_the_served_layout() {
        let dir = volume_dir().unwrap();
        write_volumes(&dir).unwrap();
        for vid in 1..=VOLUMES {
            for ext in ["dat", "idx", "vif"] {
                assert!(dir.join(format!("{vid}.{ext}")).is_file(), "{vid}.{ext}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
