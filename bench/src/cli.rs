//! The command line ([`Cli`]) and what it decides before anything runs: the CPU placement
//! ([`choose_cores`]) and why a scale scenario cannot have its cores ([`no_cores_for`]).

use std::path::PathBuf;

use clap::Parser;

use crate::{config, machine, Result};

/// Latency and throughput benchmark of the seaweed ring engine.
///
/// Starts the engine it measures (private socket, one worker pinned to the engine core, short
/// idle spin), runs each scenario in blocks interleaved with its baseline (the physical floor
/// of the same two cores), stops the engine, and reports percentiles, throughput and
/// same-run ratios. A scenario's baseline always runs with it.
#[derive(Parser, Debug)]
#[command(
    name = "bench",
    version,
    about,
    long_about,
    after_help = "Examples:\n  bench                          every scenario, about 90 s\n  bench --quick --json           short smoke run, one JSON object per scenario\n  bench --scenario ring.nop      ring.nop interleaved with floor.pingpong\n  bench --out results/           also write JSON lines and HDR histogram logs\n  bench --list                   the scenarios"
)]
pub struct Cli {
    /// Run this scenario (repeatable; default: all). Its baseline runs with it.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,

    /// Short smoke run (about 15 s in all).
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object per line per scenario instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also write results.jsonl, <scenario>.hlog (HDR interval log, one interval per block),
    /// <scenario>.hgrm (percentile distribution) and engine.log into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// The engine configuration file the operator runs the engine with: the bench takes its
    /// CPU placement from `[workers] cores` (engine core: the first listed; client core: the
    /// highest allowed CPU not listed; scale.nop.workers.N: the first N listed). Nothing else
    /// of the file is used. --client-core / --engine-core override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// CPU of the measuring (client) thread. Default: the highest allowed CPU that is neither
    /// the engine core nor in workers.cores of --config (without --config: the second-highest).
    #[arg(long, value_name = "N")]
    pub client_core: Option<usize>,

    /// CPU of the engine worker and of the floors' peer thread. Default: the first core of
    /// workers.cores of --config, else the highest allowed CPU.
    #[arg(long, value_name = "M")]
    pub engine_core: Option<usize>,

    /// Needles of the volume set `store.open.10m` opens [default: 10000000]: fewer for a
    /// smoke run (the set is cached per count, see bench/README.md).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..))]
    pub store_needles: Option<u64>,

    /// Engine binary. Default: `engine` next to this executable.
    #[arg(long, value_name = "PATH", env = "SWRING_ENGINE")]
    pub engine: Option<PathBuf>,

    /// The engine's idle spin before it sleeps (`--idle-spin-us`). Short, because before each
    /// floor block the bench waits for the engine to sleep.
    #[arg(long, value_name = "US", default_value_t = 2000)]
    pub engine_idle_spin_us: u64,

    /// Extra engine argument (repeatable), e.g. --engine-arg=--hugepages --engine-arg=off.
    #[arg(long = "engine-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub engine_args: Vec<String>,

    /// Interleaved blocks per scenario [default: 20, --quick: 6].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub blocks: Option<u32>,

    /// Measured time per block in ms [default: 300, --quick: 100].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub block_ms: Option<u64>,

    /// Unrecorded warm-up at the start of every block in ms [default: 40, --quick: 15].
    #[arg(long, value_name = "MS")]
    pub warmup_ms: Option<u64>,

    /// The Go latency tool for the Go scenarios. Default: `ringlat` next to this executable,
    /// built from go-client/ with `go build` when missing or older than the Go sources.
    #[arg(long, value_name = "PATH", env = "SWRING_RINGLAT")]
    pub ringlat: Option<PathBuf>,

    /// No per-block progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,

    /// Internal (uds.msgpack): be the Unix-socket echo server on fd 3, pinned to this CPU.
    #[arg(long, value_name = "CORE", hide = true)]
    pub uds_echo_server: Option<usize>,

    /// Internal (iceoryx2.reqres): be the iceoryx2 request-response server, pinned to this CPU.
    #[arg(long, value_name = "CORE", hide = true, requires = "iceoryx2_domain")]
    pub iceoryx2_server: Option<usize>,

    /// Internal (iceoryx2.reqres): the run's iceoryx2 domain (file prefix) the server uses.
    #[arg(long, value_name = "ID", hide = true)]
    pub iceoryx2_domain: Option<String>,
}

/// The cores: flags, else `workers.cores` of `--config`, else the defaults
/// ([`config::place`]).
pub fn choose_cores(cli: &Cli) -> Result<config::Placement> {
    let allowed = machine::allowed_cpus();
    let operator = cli.config.as_deref().map(config::load).transpose()?;
    let configured = operator
        .as_ref()
        .map(|o| (o.path.as_path(), o.cores.as_deref().unwrap_or(&[])));
    // A file without workers.cores: the engine's default placement (the last allowed core),
    // which is the bench's default too.
    let configured = configured.filter(|(_, c)| !c.is_empty());
    let mut placement = config::place(&allowed, configured, cli.client_core, cli.engine_core)?;
    if let (Some(o), None) = (&operator, configured) {
        placement.source = format!(
            "--config {} (no workers.cores: the engine's default core){}",
            o.path.display(),
            if placement.source == "flags" { ", flags" } else { "" }
        );
    }
    Ok(placement)
}

/// Why `scale.nop.workers.N` cannot run here: fewer than N cores besides the client's.
pub fn no_cores_for(
    n: usize,
    placement: &config::Placement,
    config: Option<&std::path::Path>,
    cpus: &[usize],
) -> String {
    let have = placement.worker_cores.len();
    let head = format!("not available here: {n} workers need {n} engine cores besides the client core");
    match config {
        Some(path) => format!(
            "{head} {}; workers.cores of --config {} leaves {have} ({:?})",
            placement.client,
            path.display(),
            placement.worker_cores
        ),
        None => format!(
            "{head}; this process may use {} CPUs ({cpus:?}), so at most {have} worker{}",
            cpus.len(),
            if have == 1 { "" } else { "s" }
        ),
    }
}
