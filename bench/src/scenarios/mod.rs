//! The scenarios: the block interface every scenario implements ([`Scenario`], [`Ctx`]) and
//! [`build`], which makes one from its [`Spec`]. The rest, by concern: `spec.rs` (what a
//! scenario is), `table.rs` (the registry, [`SPECS`]), `plan.rs` (which scenarios a run
//! measures, in which groups), `sampling.rs` (the timed loops they share), `tests.rs`; one file
//! per kind of scenario.
//!
//! Adding a scenario: add a [`Spec`] to [`SPECS`] (name, what a sample is, its baseline and
//! target if it has one), implement [`Scenario`] for it, and return it from [`build`]. The
//! runner interleaves it block by block with its baseline and computes the ratios; a scenario
//! without a baseline runs in blocks on its own.

mod builders;
mod cold;
mod floor;
mod go;
pub mod iceoryx;
mod idle;
mod iouring;
pub(crate) mod plan;
mod ring;
mod sampling;
pub mod scale;
mod spec;
mod store;
mod table;
#[cfg(test)]
mod tests;
mod ucx;
pub mod uds;
mod wake;

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use ring_client::Session;

use crate::Result;

pub use cold::{cold_pool, is_cold};
pub use plan::{group_ucx, plan};
pub use sampling::{pipelined_loop, sample_loop, BlockRun, PartTimedBlock, Pipeline, SpinGuard, Timing, STALL_LIMIT};
pub use spec::{fs_file_mb, needs_ring_weed, short_number, EngineUse, FrontEnd, Metric, Spec, Target, Tls};
pub use table::{needle_concurrency, needle_parts, workers_of, IDLE_CPU_BOUND, NEEDLE_SIZES, NOT_AVAILABLE, SPECS};
// Used by the tests only (these and report's), outside this module.
#[cfg(test)]
pub use {plan::root_of, table::spec};

/// What scenarios get to run a block.
pub struct Ctx {
    pub client_core: usize,
    pub engine_core: usize,
    /// The bench's session with the run's plain engine, when the group uses it.
    pub session: Option<Session>,
    /// That engine's control socket (for scenarios that open sessions of their own).
    pub socket: Option<PathBuf>,
    /// The bench's session with the group's UCX engine, when it has one.
    pub ucx_session: Option<Session>,
    /// Its peer handle for that engine's own UCX listener.
    pub ucx_peer: Option<u32>,
    /// That engine's control socket and UCX listen address (for scenarios that open sessions
    /// of their own on it).
    pub ucx_socket: Option<PathBuf>,
    pub ucx_address: Option<String>,
    /// The Go latency tool, for the Go scenarios.
    pub ringlat: Option<PathBuf>,
    /// The run's weed volume server and its needles, when the group reads needles.
    pub weed: Option<crate::weed::WeedInfo>,
    /// The group's engines serving the weed volume directory, one per transport.
    pub needle_engines: Vec<NeedleEngine>,
    /// For a group across the namespace pair ([`Spec::netns`]): where things are, and the
    /// two engines when a member uses them ([`EngineUse::Netns`]).
    pub netns: Option<NetnsCtx>,
    /// The process id of the run's plain engine (for its CPU time in `ring.wake`).
    pub engine_pid: Option<u32>,
    pub timing: Timing,
    /// How engines are started (for scenarios that start their own); `None` when no
    /// scenario of the run needs an engine.
    pub engine_template: Option<crate::engine::EngineOptions>,
    /// Cores for `scale.nop.workers.N` ([`crate::config::Placement::worker_cores`]).
    pub worker_cores: Vec<usize>,
    /// `--out DIR`, for the logs of engines a scenario starts.
    pub out: Option<PathBuf>,
    /// How long an engine may take to go to sleep once idle.
    pub settle: Duration,
    /// `--store-needles`: the needles `store.open.10m` opens instead of its 10 million.
    pub store_needles: Option<u64>,
}

impl Ctx {
    pub fn session(&mut self) -> Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| "this scenario needs the engine, and none was started".into())
    }

    /// The session with the group's UCX engine and the peer handle of its own listener.
    pub fn ucx_session(&mut self) -> Result<(&mut Session, u32)> {
        match (self.ucx_session.as_mut(), self.ucx_peer) {
            (Some(s), Some(p)) => Ok((s, p)),
            _ => Err("this scenario needs an engine with a UCX listener, and none was started".into()),
        }
    }

    /// The sessions of every engine running for the group.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.session
            .iter()
            .chain(self.ucx_session.iter())
            .chain(self.needle_engines.iter().map(|e| &e.session))
            .chain(
                self.netns
                    .iter()
                    .flat_map(|n| n.engines.iter().flat_map(|(s, c)| [&s.session, &c.session])),
            )
    }

    /// The bench's session with the group's engine of `engine`, if it has one.
    pub fn session_of(&self, engine: EngineUse) -> Option<&Session> {
        match engine {
            EngineUse::None | EngineUse::Own => None,
            EngineUse::Plain => self.session.as_ref(),
            EngineUse::Ucx(_) => self.ucx_session.as_ref(),
            EngineUse::Needle(t) => self.needle_engines.iter().find(|e| e.tls == t).map(|e| &e.session),
            // The client's engine (in -b); the serving one sleeps until requests come.
            EngineUse::Netns => self
                .netns
                .as_ref()
                .and_then(|n| n.engines.as_ref())
                .map(|(_, c)| &c.session),
        }
    }
}

/// A group across the run's namespace pair (`crate::netns`).
pub struct NetnsCtx {
    /// The namespace the client side (ringlat, the client engine) runs in (`NAME-b`).
    pub client_ns: String,
    /// The namespace of the weed cluster and the serving engine (`NAME-a`).
    pub server_ns: String,
    /// The weed cluster in the server namespace (its volume server on the veth address).
    pub weed: crate::weed::WeedInfo,
    /// The serving engine (in -a; `address`: its UCX listener on the veth) and the client's
    /// engine (in -b; no listener), when a member uses them.
    pub engines: Option<(NeedleEngine, NeedleEngine)>,
}

/// An engine serving the weed volume directory over UCX, started for a needle group.
pub struct NeedleEngine {
    pub tls: Tls,
    /// The bench's session (to see when the engine sleeps); the scenario's client has its own.
    pub session: Session,
    pub socket: PathBuf,
    /// Its UCX listener (`127.0.0.1:PORT`): the peer the client's READ_NEEDLEs go to.
    pub address: String,
    /// The engine binary (for `engine status`).
    pub binary: PathBuf,
}

impl NeedleEngine {
    /// Waits until this engine serves every volume of `dir` (`*.dat`), as `engine status
    /// --json` lists them. A front end that just wrote data (an S3 bucket, a filer file) may
    /// have made the volume server create volumes the engine picks up only at its next
    /// refresh; until then the ring rightly declines their reads and weed reads them over
    /// HTTP, which would count as the ring path's volume GETs.
    pub fn wait_serving(&self, dir: &std::path::Path, timeout: std::time::Duration) -> crate::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let dats = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
                .count();
            let out = std::process::Command::new(&self.binary)
                .args(["status", "--json", "--socket"])
                .arg(&self.socket)
                .output()?;
            let served = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v["volumes"].as_array().map(|a| a.len()))
                .unwrap_or(0);
            if served >= dats {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the engine at {} serves {served} of the {dats} volumes in {} after {timeout:?}",
                    self.socket.display(),
                    dir.display()
                )
                .into());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl NeedleEngine {
    /// The reads its volume I/O threads served so far: `reads_served_io` summed over the
    /// volumes of `engine status --json`.
    pub fn reads_served_io(&self) -> crate::Result<u64> {
        let out = std::process::Command::new(&self.binary)
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "engine status --json at {}: {e} ({})",
                self.socket.display(),
                out.status
            )
        })?;
        let volumes = v["volumes"]
            .as_array()
            .ok_or_else(|| format!("engine status --json at {} lists no volumes", self.socket.display()))?;
        Ok(volumes.iter().filter_map(|v| v["reads_served_io"].as_u64()).sum())
    }
}

/// One scenario, ready to run blocks. Called on the measuring thread, already pinned to the
/// client core.
pub trait Scenario {
    /// Runs one block: `ctx.timing.warmup` unrecorded, then samples into `hist` (ns) until
    /// `ctx.timing.measure` has passed.
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun>;

    /// Scenario-specific facts for the result line (`details` in the JSON), e.g. the kind of
    /// memory a floor used.
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The command line of the engine the scenario started itself ([`EngineUse::Own`]).
    fn engine_command(&self) -> Option<String> {
        None
    }
}

/// Whether `io_uring.nop` can run here (`Err`: why not).
pub fn io_uring_probe() -> std::result::Result<(), String> {
    iouring::probe()
}

pub fn build(spec: &Spec) -> Box<dyn Scenario> {
    match spec.name {
        "floor.pingpong" => Box::new(floor::PingPong),
        "floor.echo_batch32" => Box::new(floor::EchoBatch {
            batch: 32,
            huge_pages: None,
        }),
        "ring.nop" => Box::new(ring::Nop::default()),
        "ring.nop_batch32" => Box::new(ring::NopBatch::new(32)),
        "ring.nop.go" => Box::new(go::GoRinglat::new(spec.name, go::Kind::Nop)),
        "ring.nop_batch32.go" => Box::new(go::GoRinglat::new(spec.name, go::Kind::Batch(32))),
        "ucx.raw_am_rtt.sm" => Box::new(ucx::RawUcx::new(Tls::Sm, ucx::RawKind::AmRtt(ucx::Ends::TwoWorkers))),
        "ucx.raw_am_rtt.tcp" => Box::new(ucx::RawUcx::new(Tls::Tcp, ucx::RawKind::AmRtt(ucx::Ends::TwoWorkers))),
        "ucx.raw_am_rtt_one_worker.sm" => {
            Box::new(ucx::RawUcx::new(Tls::Sm, ucx::RawKind::AmRtt(ucx::Ends::OneWorker)))
        }
        "ucx.raw_am_rtt_one_worker.tcp" => {
            Box::new(ucx::RawUcx::new(Tls::Tcp, ucx::RawKind::AmRtt(ucx::Ends::OneWorker)))
        }
        "ucx.raw_read_bw.sm" => Box::new(ucx::RawUcx::new(Tls::Sm, ucx::RawKind::ReadBw)),
        "ucx.raw_read_bw.tcp" => Box::new(ucx::RawUcx::new(Tls::Tcp, ucx::RawKind::ReadBw)),
        "ucx.read_bw.sm" | "ucx.read_bw.tcp" => Box::new(ucx::ReadBw::default()),
        "ucx.am_rtt.sm" | "ucx.am_rtt.tcp" => Box::new(ucx::AmRtt::default()),
        "ucx.nop_ref.sm" | "ucx.nop_ref.tcp" => Box::new(ring::Nop::default()),
        "uds.msgpack" => Box::new(uds::UdsMsgpack::default()),
        "io_uring.nop" => Box::new(iouring::IoUringNop::default()),
        "ring.wake" => Box::new(wake::Wake::default()),
        "needle.read.cold.1m.tcp" => Box::new(go::GoRinglat::new(spec.name, go::Kind::Cold(cold::Reader::Tcp))),
        "needle.read.cold.1m.http" => Box::new(go::GoRinglat::new(spec.name, go::Kind::Cold(cold::Reader::Http))),
        "ring.nop.beside_cold_reads" => Box::new(cold::BesideColdReads::default()),
        "ring.idle.full.sm" => Box::new(idle::IdleFull::new(Tls::Sm)),
        "ring.idle.full.tcp" => Box::new(idle::IdleFull::new(Tls::Tcp)),
        "iceoryx2.reqres" => Box::new(iceoryx::ReqRes::default()),
        "store.open.10m" => Box::new(store::StoreOpen::default()),
        name if name.starts_with("scale.nop.sessions.") => {
            let n = name["scale.nop.sessions.".len()..]
                .parse()
                .expect("scale.nop.sessions.<N>");
            Box::new(scale::Sessions::new(n))
        }
        name if name.starts_with("scale.nop.workers.") => {
            Box::new(scale::Workers::new(workers_of(name).expect("scale.nop.workers.<N>")))
        }
        name if name.starts_with("needle.read.") => {
            let (size, tls) = needle_parts(name).expect("needle.read.<size>.<path>");
            let netns = spec.netns;
            let conc = needle_concurrency(name).unwrap_or(0);
            Box::new(go::GoRinglat::new(
                spec.name,
                go::Kind::Needle { size, tls, netns, conc },
            ))
        }
        _ if spec.front_end.is_some() => {
            let tls = match spec.engine {
                EngineUse::Needle(t) => Some(t),
                _ => None,
            };
            let front_end = spec.front_end.expect("checked");
            Box::new(go::GoRinglat::new(spec.name, go::Kind::FrontEnd { front_end, tls }))
        }
        other => unreachable!("scenario {other} is in SPECS but has no implementation"),
    }
}
