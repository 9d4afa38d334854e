//! `bench`: latency and throughput of the ring engine next to the physical floor of the same
//! two cores, measured in the same run with interleaved blocks. See bench/README.md.

mod config;
mod engine;
mod goproc;
mod gotool;
mod interrupt;
mod machine;
mod plot;
mod report;
mod scenarios;
mod stats;
mod weed;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ring_client::Session;

use engine::{Engine, EngineOptions};
use machine::Machine;
use report::{Comparison, RunInfo, ScenarioResult};
use scenarios::{Ctx, EngineUse, NeedleEngine, Spec, Timing, Tls, NOT_AVAILABLE, SPECS};
use stats::Block;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

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
struct Cli {
    /// Run this scenario (repeatable; default: all). Its baseline runs with it.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,

    /// Short smoke run (about 15 s in all).
    #[arg(long)]
    quick: bool,

    /// Print one JSON object per line per scenario instead of the table.
    #[arg(long)]
    json: bool,

    /// Also write results.jsonl, <scenario>.hlog (HDR interval log, one interval per block),
    /// <scenario>.hgrm (percentile distribution) and engine.log into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// The engine configuration file the operator runs the engine with: the bench takes its
    /// CPU placement from `[workers] cores` (engine core: the first listed; client core: the
    /// highest allowed CPU not listed; scale.nop.workers.N: the first N listed). Nothing else
    /// of the file is used. --client-core / --engine-core override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// CPU of the measuring (client) thread. Default: the highest allowed CPU that is neither
    /// the engine core nor in workers.cores of --config (without --config: the second-highest).
    #[arg(long, value_name = "N")]
    client_core: Option<usize>,

    /// CPU of the engine worker and of the floors' peer thread. Default: the first core of
    /// workers.cores of --config, else the highest allowed CPU.
    #[arg(long, value_name = "M")]
    engine_core: Option<usize>,

    /// Engine binary. Default: `engine` next to this executable.
    #[arg(long, value_name = "PATH", env = "SWRING_ENGINE")]
    engine: Option<PathBuf>,

    /// The engine's idle spin before it sleeps (`--idle-spin-us`). Short, because before each
    /// floor block the bench waits for the engine to sleep.
    #[arg(long, value_name = "US", default_value_t = 2000)]
    engine_idle_spin_us: u64,

    /// Extra engine argument (repeatable), e.g. --engine-arg=--hugepages --engine-arg=off.
    #[arg(long = "engine-arg", value_name = "ARG", allow_hyphen_values = true)]
    engine_args: Vec<String>,

    /// Interleaved blocks per scenario [default: 20, --quick: 6].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    blocks: Option<u32>,

    /// Measured time per block in ms [default: 300, --quick: 100].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    block_ms: Option<u64>,

    /// Unrecorded warm-up at the start of every block in ms [default: 40, --quick: 15].
    #[arg(long, value_name = "MS")]
    warmup_ms: Option<u64>,

    /// The Go latency tool for the Go scenarios. Default: `ringlat` next to this executable,
    /// built from go-client/ with `go build` when missing or older than the Go sources.
    #[arg(long, value_name = "PATH", env = "SWRING_RINGLAT")]
    ringlat: Option<PathBuf>,

    /// No per-block progress on stderr.
    #[arg(long, short)]
    quiet: bool,

    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,

    /// Internal (uds.msgpack): be the Unix-socket echo server on fd 3, pinned to this CPU.
    #[arg(long, value_name = "CORE", hide = true)]
    uds_echo_server: Option<usize>,

    /// Internal (iceoryx2.reqres): be the iceoryx2 request-response server, pinned to this CPU.
    #[arg(long, value_name = "CORE", hide = true, requires = "iceoryx2_domain")]
    iceoryx2_server: Option<usize>,

    /// Internal (iceoryx2.reqres): the run's iceoryx2 domain (file prefix) the server uses.
    #[arg(long, value_name = "ID", hide = true)]
    iceoryx2_domain: Option<String>,
}

/// Environment UCX reads only from there, set (unless the user set it) before any thread
/// exists; the engines the bench starts inherit it. UCX_MM_ERROR_HANDLING=y: with peer error
/// handling on (the engine's wrapper always turns it on), UCX's shared-memory transports
/// (posix, sysv) need it, else UCX silently uses tcp for "sm" (the engine sets the same for
/// itself). UCX reads it only where it loads those transports, so the first context of a
/// process warns once on stderr that it is unused (harmless; UCX_WARN_UNUSED_ENV_VARS=n
/// silences it but must be set before the bench starts: UCX reads it when it is loaded).
pub fn set_ucx_environment() {
    if std::env::var_os("UCX_MM_ERROR_HANDLING").is_none() {
        std::env::set_var("UCX_MM_ERROR_HANDLING", "y");
    }
}

/// The bench's own standard output, with file descriptor 1 pointed at stderr from here on:
/// libraries in this process write to fd 1 too (UCX prints its warnings on stdout), and
/// nothing but the report may reach the real stdout (JSON lines).
fn claim_stdout() -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let _ = std::io::stdout().flush();
    // SAFETY: duplicating fd 1 (close-on-exec, so children do not hold it); the new fd is
    // owned by the File below and by nothing else.
    let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(format!("duplicating stdout: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: dup2 on two open descriptors; fd 1 keeps being a valid descriptor.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(format!("redirecting fd 1: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn main() -> ExitCode {
    set_ucx_environment();
    let cli = Cli::parse();
    if let Some(core) = cli.uds_echo_server {
        return match scenarios::uds::serve(core) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench --uds-echo-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let (Some(core), Some(name)) = (cli.iceoryx2_server, cli.iceoryx2_domain.as_deref()) {
        // The ready line goes to the real stdout (the bench's pipe); anything iceoryx2 prints
        // goes to stderr.
        let served = claim_stdout().and_then(|out| scenarios::iceoryx::serve(core, name, out));
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench --iceoryx2-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.list {
        for s in SPECS {
            let vs = s.baseline.map_or(String::new(), |b| format!(" [vs {b}]"));
            println!("{:<22} {}{vs}", s.name, s.about);
        }
        for (name, why) in NOT_AVAILABLE {
            println!("{name:<22} ({why})");
        }
        return ExitCode::SUCCESS;
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<interrupt::Interrupted>() => {
            eprintln!("bench: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    interrupt::install()?;
    let mut stdout = claim_stdout()?;
    let mut plan = scenarios::plan(&cli.scenarios)?;
    let placement = choose_cores(cli)?;
    let (client_core, engine_core) = (placement.client, placement.engine);
    let timing = Timing {
        warmup: Duration::from_millis(cli.warmup_ms.unwrap_or(if cli.quick { 15 } else { 40 })),
        measure: Duration::from_millis(cli.block_ms.unwrap_or(if cli.quick { 100 } else { 300 })),
    };
    let blocks = cli.blocks.unwrap_or(if cli.quick { 6 } else { 20 });
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
    }
    let ringlat = if plan.specs().any(|s| s.needs_go) {
        match gotool::ringlat(cli.ringlat.as_deref(), cli.quiet)? {
            Ok(p) => Some(p),
            Err(why) => {
                plan.skip_where(|s| s.needs_go, &why);
                None
            }
        }
    } else {
        None
    };
    if plan.specs().any(|s| s.name == "io_uring.nop") {
        if let Err(why) = scenarios::io_uring_probe() {
            plan.skip_where(
                |s| s.name == "io_uring.nop",
                &format!("io_uring is not usable here: {why}"),
            );
        }
    }
    if plan.specs().any(|s| s.needs_weed) {
        // Go is there (the needle scenarios need it too, and were skipped above otherwise).
        // SWRING_REQUIRE_WEED=1 (scripts/test) makes a missing weed an error, not a skip.
        let require = std::env::var_os("SWRING_REQUIRE_WEED").is_some_and(|v| v == "1");
        if let Some(r) = &ringlat {
            match weed::check(r) {
                Err(why) if require => {
                    return Err(format!("SWRING_REQUIRE_WEED=1 and the weed scenarios cannot run: {why}").into())
                }
                Err(why) => plan.skip_where(|s| s.needs_weed, &format!("not available: {why}")),
                Ok(bins) => match bins.weed_ring {
                    Err(why) if require && plan.specs().any(scenarios::needs_ring_weed) => {
                        return Err(
                            format!("SWRING_REQUIRE_WEED=1 and the front-end ring scenarios cannot run: {why}").into(),
                        )
                    }
                    Err(why) => plan.skip_where(scenarios::needs_ring_weed, &format!("not available: {why}")),
                    Ok(_) => {}
                },
            }
        } else if require {
            return Err("SWRING_REQUIRE_WEED=1 and the weed scenarios cannot run: no ringlat (Go)".into());
        }
    }
    // Before pinning: the affinity mask is still the process's.
    let all_cpus = machine::allowed_cpus();
    let have = placement.worker_cores.len();
    let too_many: Vec<(&'static str, String)> = plan
        .specs()
        .filter_map(|s| {
            let n = scenarios::workers_of(s.name).filter(|n| *n > have)?;
            Some((s.name, no_cores_for(n, &placement, cli.config.as_deref(), &all_cpus)))
        })
        .collect();
    for (name, why) in too_many {
        plan.skip_where(|s| s.name == name, &why);
    }
    for (name, why) in &plan.skipped {
        eprintln!("bench: not running {name}: {why}");
    }
    let mut machine = Machine::probe(client_core, engine_core);
    machine.core_source = placement.source.clone();
    machine.worker_cores = placement.worker_cores.clone();

    let engine_uses: Vec<EngineUse> = plan.specs().map(|s| s.engine).collect();
    let template = if engine_uses.iter().any(|e| *e != EngineUse::None) {
        Some(EngineOptions {
            binary: engine::locate(cli.engine.as_deref())?,
            cores: vec![engine_core],
            idle_spin_us: cli.engine_idle_spin_us,
            extra_args: cli.engine_args.clone(),
            log_path: cli.out.as_ref().map(|d| d.join("engine.log")),
            start_timeout: Duration::from_secs(15),
            ucx: None,
            seaweedfs_dir: None,
            cpus: all_cpus,
        })
    } else {
        None
    };
    let mut engines = Engines {
        template: template.clone(),
        plain: None,
        plain_session: None,
        out: cli.out.clone(),
        weed: None,
        ringlat: ringlat.clone(),
        weed_core: engine_core,
        weed_fs_mb: if plan.specs().any(|s| s.front_end.is_some()) {
            // A short run (--quick, the smoke tests) reads far fewer pages.
            scenarios::fs_file_mb(cli.quick || timing.measure * blocks < Duration::from_secs(2))
        } else {
            0
        },
    };
    if engine_uses.contains(&EngineUse::Plain) {
        let opts = engines.template.clone().expect("set when an engine is needed");
        let (e, s) = Engine::start(&opts)?;
        machine.engine_pages = e.pages();
        engines.plain = Some(e);
        engines.plain_session = Some(s);
    }

    // The measuring thread: this one, from here on.
    machine::pin_current_thread(client_core)?;
    // How long an engine may take to fall asleep once idle.
    let settle = Duration::from_micros(cli.engine_idle_spin_us) * 4 + Duration::from_secs(2);
    let run_info = RunInfo {
        bench_version: env!("CARGO_PKG_VERSION"),
        unix_time: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: cli.quick,
        blocks,
        warmup_ms: timing.warmup.as_secs_f64() * 1e3,
        measure_ms: timing.measure.as_secs_f64() * 1e3,
        engine_command: engines.plain.as_ref().map(|e| e.command_line().to_owned()),
    };
    let mut ctx = Ctx {
        client_core,
        engine_core,
        session: None,
        socket: None,
        ucx_session: None,
        ucx_peer: None,
        ucx_socket: None,
        ucx_address: None,
        ringlat,
        weed: None,
        needle_engines: Vec::new(),
        engine_pid: engines.plain.as_ref().and_then(Engine::pid),
        timing,
        engine_template: template,
        worker_cores: placement.worker_cores.clone(),
        out: cli.out.clone(),
        settle,
    };
    let run_start = SystemTime::now();
    let measured = measure(
        &plan.groups,
        blocks,
        &mut ctx,
        &mut engines,
        settle,
        cli.quiet,
        cli.out.is_some(),
    );

    // Stop the engine (and the weed cluster) whatever happened.
    drop(ctx.session.take());
    drop(engines.plain_session.take());
    drop(engines.weed.take());
    let results = measured?;
    if let Some(en) = engines.plain.take() {
        stop_engine(en)?;
    }

    let with_cmp: Vec<(&ScenarioResult, Option<Comparison>)> =
        results.iter().map(|r| (r, report::compare(r, &results))).collect();
    let mut lines: Vec<String> = with_cmp
        .iter()
        .map(|(r, c)| report::json_line(r, c.as_ref(), &machine, &run_info))
        .collect();
    lines.extend(
        plan.skipped
            .iter()
            .map(|(name, why)| report::skipped_line(name, why, &machine, &run_info)),
    );
    let report = if cli.json {
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    } else {
        report::table(&with_cmp, &plan.skipped, &machine, &run_info)
    };
    stdout
        .write_all(report.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing the report: {e}"))?;
    if let Some(dir) = &cli.out {
        let all: Vec<&ScenarioResult> = results.iter().collect();
        report::write_out_dir(dir, &lines, &all, run_start)?;
    }
    Ok(())
}

/// Why `scale.nop.workers.N` cannot run here: fewer than N cores besides the client's.
fn no_cores_for(n: usize, placement: &config::Placement, config: Option<&std::path::Path>, cpus: &[usize]) -> String {
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

/// SIGTERM, and a warning with its log if the engine does not exit with 0.
pub(crate) fn stop_engine(en: Engine) -> Result<()> {
    let log_tail = en.log_tail(30);
    let command = en.command_line().to_owned();
    let status = en.stop(Duration::from_secs(10))?;
    if !status.success() {
        eprintln!(
            "bench: warning: the engine exited with {status} after SIGTERM (expected exit 0)\nengine command: {command}\nengine log:\n{log_tail}"
        );
    }
    Ok(())
}

/// The engines of a run: the plain one (started before the measuring thread is pinned, for
/// the whole run); per UCX group, one with a UCX listener started for that group only; per
/// needle group, one per transport serving the weed volume directory, and the weed cluster
/// itself (started for the first needle group, kept for the rest of the run).
struct Engines {
    /// How engines are started; `None` when no scenario needs one.
    template: Option<EngineOptions>,
    plain: Option<Engine>,
    plain_session: Option<Session>,
    out: Option<PathBuf>,
    weed: Option<weed::WeedHost>,
    /// The Go tool that runs the weed cluster.
    ringlat: Option<PathBuf>,
    /// Where the weed cluster runs (the engine core).
    weed_core: usize,
    /// MiB of the file the weed host writes through its filer for the front-end scenarios
    /// (0: none of them runs).
    weed_fs_mb: u32,
}

/// The engines started for one group.
#[derive(Default)]
struct GroupEngines {
    ucx: Option<Engine>,
    needle: Vec<(Tls, Engine)>,
}

impl GroupEngines {
    fn of(&self, engine: EngineUse) -> Option<&Engine> {
        match engine {
            EngineUse::Ucx(_) => self.ucx.as_ref(),
            EngineUse::Needle(t) => self.needle.iter().find(|(u, _)| *u == t).map(|(_, e)| e),
            EngineUse::None | EngineUse::Plain | EngineUse::Own => None,
        }
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Engine> {
        self.ucx.iter_mut().chain(self.needle.iter_mut().map(|(_, e)| e))
    }
}

impl Engines {
    /// Sets `ctx` up for a group: the plain engine's session if a member uses it, a UCX
    /// engine started for the group if a member needs one, and for needle scenarios the weed
    /// cluster and an engine per transport serving its volume directory (returned).
    fn enter(&mut self, group: &[&'static Spec], ctx: &mut Ctx) -> Result<GroupEngines> {
        let mut started = GroupEngines::default();
        // A scenario with engines of its own gets the plain session too: the runner waits for
        // the plain engine to sleep before its blocks.
        if group
            .iter()
            .any(|s| matches!(s.engine, EngineUse::Plain | EngineUse::Own))
        {
            ctx.session = self.plain_session.take();
            ctx.socket = self.plain.as_ref().map(|e| e.socket.clone());
        }
        if group.iter().any(|s| s.needs_weed) {
            if self.weed.is_none() {
                let ringlat = self.ringlat.as_deref().ok_or("the needle scenarios need ringlat")?;
                self.weed = Some(weed::WeedHost::start(
                    ringlat,
                    scenarios::NEEDLE_SIZES,
                    self.weed_fs_mb,
                    self.weed_core,
                )?);
            }
            let info = self.weed.as_ref().expect("started above").info.clone();
            let mut needle_tls: Vec<Tls> = Vec::new();
            for s in group {
                if let EngineUse::Needle(t) = s.engine {
                    if !needle_tls.contains(&t) {
                        needle_tls.push(t);
                    }
                }
            }
            for tls in needle_tls {
                let mut opts = self.template.clone().ok_or("no engine options")?;
                opts.ucx = Some(tls);
                opts.seaweedfs_dir = Some(info.volume_dir.clone());
                opts.log_path = self.out.as_ref().map(|d| d.join(needle_log_name(group[0].name, tls)));
                let (mut e, s) = Engine::start(&opts)?;
                let addr = e
                    .ucx_listen_address(Duration::from_secs(15))
                    .map_err(|err| with_engine_log(err, &mut e))?;
                ctx.needle_engines.push(NeedleEngine {
                    tls,
                    session: s,
                    socket: e.socket.clone(),
                    address: addr,
                });
                started.needle.push((tls, e));
            }
            ctx.weed = Some(info);
        }
        let Some(tls) = scenarios::group_ucx(group) else {
            return Ok(started);
        };
        let mut opts = self.template.clone().ok_or("no engine options")?;
        opts.ucx = Some(tls);
        opts.log_path = self.out.as_ref().map(|d| d.join(ucx_log_name(group[0].name, tls)));
        let (mut e, mut s) = Engine::start(&opts)?;
        let (peer, addr) = e
            .ucx_listen_address(Duration::from_secs(15))
            .and_then(|addr| {
                s.connect_peer(&addr).map(|p| (p, addr.clone())).map_err(|err| {
                    format!("connecting the session to the engine's own UCX listener {addr}: {err}").into()
                })
            })
            .map_err(|err| with_engine_log(err, &mut e))?;
        ctx.ucx_session = Some(s);
        ctx.ucx_peer = Some(peer);
        ctx.ucx_socket = Some(e.socket.clone());
        ctx.ucx_address = Some(addr);
        started.ucx = Some(e);
        Ok(started)
    }

    /// Undoes [`Engines::enter`]: the plain session goes back, the group's engines stop (the
    /// weed cluster stays for later groups).
    fn leave(&mut self, started: GroupEngines, ctx: &mut Ctx) -> Result<()> {
        if let Some(s) = ctx.session.take() {
            self.plain_session = Some(s);
        }
        ctx.socket = None;
        drop(ctx.ucx_session.take());
        ctx.ucx_peer = None;
        ctx.ucx_socket = None;
        ctx.ucx_address = None;
        ctx.needle_engines.clear();
        ctx.weed = None;
        let mut first_err = None;
        for e in started
            .ucx
            .into_iter()
            .chain(started.needle.into_iter().map(|(_, e)| e))
        {
            if let Err(err) = stop_engine(e) {
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The log file of a needle group's engine for `tls` under `--out`:
/// `engine-needle-<size>-<tls>.log`, the size from the group's root (`needle.read.4k.http`).
fn needle_log_name(root: &str, tls: Tls) -> String {
    // A front-end group (`mount.randread.4k.http`): `engine-mount.randread.4k-<tls>.log`.
    if !root.starts_with("needle.read.") {
        return format!("engine-{}-{}.log", root.trim_end_matches(".http"), tls.name());
    }
    let size = root.split('.').nth(2).unwrap_or("x");
    format!("engine-needle-{size}-{}.log", tls.name())
}

/// The log file of a UCX group's engine under `--out`: `engine-ucx-<tls>.log` for the
/// `ucx.*am_rtt*` group, `engine-ucx-<tls>-<what>.log` for the others (`read_bw`), named
/// after the group's root scenario (`ucx.raw_read_bw.sm`).
fn ucx_log_name(root: &str, tls: scenarios::Tls) -> String {
    let what = root.split('.').nth(1).unwrap_or("").trim_start_matches("raw_");
    if what.is_empty() || what == "am_rtt" {
        format!("engine-ucx-{}.log", tls.name())
    } else {
        format!("engine-ucx-{}-{what}.log", tls.name())
    }
}

/// Adds what the engine did to an error (unless it is Ctrl-C).
fn with_engine_log(e: Error, en: &mut Engine) -> Error {
    if e.is::<interrupt::Interrupted>() {
        return e;
    }
    let exited = en
        .try_wait()
        .map_or(String::new(), |s| format!("\nthe engine had exited: {s}"));
    format!(
        "{e}{exited}\nengine command: {}\nengine log (last lines):\n{}",
        en.command_line(),
        en.log_tail(30)
    )
    .into()
}

/// The cores: flags, else `workers.cores` of `--config`, else the defaults
/// ([`config::place`]).
fn choose_cores(cli: &Cli) -> Result<config::Placement> {
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

/// Runs every group: block i of each member in turn, for i in 0..blocks.
fn measure(
    groups: &[Vec<&'static Spec>],
    blocks: u32,
    ctx: &mut Ctx,
    engines: &mut Engines,
    settle: Duration,
    quiet: bool,
    keep_block_hists: bool,
) -> Result<Vec<ScenarioResult>> {
    let run_start = Instant::now();
    let mut results = Vec::new();
    for group in groups {
        let mut started = engines.enter(group, ctx)?;
        let measured = measure_group(group, blocks, ctx, settle, quiet, keep_block_hists, run_start);
        let plain_command = engines.plain.as_ref().map(|e| e.command_line().to_owned());
        let ucx_command = started.ucx.as_ref().map(|e| e.command_line().to_owned());
        let mut group_results = match measured {
            Ok(r) => r,
            Err(e) => {
                // Say what the engines did; then stop the group's engines.
                let mut e = e;
                for en in started.all_mut() {
                    e = with_engine_log(e, en);
                }
                if let Some(en) = engines.plain.as_mut() {
                    if group.iter().any(|s| s.engine == EngineUse::Plain) {
                        e = with_engine_log(e, en);
                    }
                }
                let _ = engines.leave(started, ctx);
                return Err(e);
            }
        };
        for r in &mut group_results {
            let en = started.of(r.spec.engine);
            if let Some(l) = en.and_then(|e| engine::peer_lanes_from_log(&e.log()).map(str::to_owned)) {
                // What UCX chose for the engine's connection to its own listener.
                r.details.insert("engine_ucx_lanes".into(), l.into());
            }
            // The engine the scenario talked to; for one that talks to none, the group's
            // (none for the needle scenarios' HTTP baseline, whose group has two).
            r.engine_command = match r.spec.engine {
                EngineUse::Plain => plain_command.clone(),
                EngineUse::Ucx(_) | EngineUse::Needle(_) => en.map(|e| e.command_line().to_owned()),
                // Set from the scenario itself (measure_group).
                EngineUse::Own => r.engine_command.take(),
                EngineUse::None if !started.needle.is_empty() => None,
                EngineUse::None => ucx_command.clone().or_else(|| {
                    group
                        .iter()
                        .any(|s| s.engine == EngineUse::Plain)
                        .then(|| plain_command.clone())
                        .flatten()
                }),
            };
        }
        engines.leave(started, ctx)?;
        results.extend(group_results);
    }
    Ok(results)
}

fn measure_group(
    group: &[&'static Spec],
    blocks: u32,
    ctx: &mut Ctx,
    settle: Duration,
    quiet: bool,
    keep_block_hists: bool,
    run_start: Instant,
) -> Result<Vec<ScenarioResult>> {
    let mut runners: Vec<_> = group.iter().map(|s| scenarios::build(s)).collect();
    let mut group_results: Vec<ScenarioResult> = group.iter().map(|s| ScenarioResult::new(s)).collect();
    let mut block_hist = stats::new_histogram();
    for b in 0..blocks {
        for ((spec, runner), result) in group.iter().zip(&mut runners).zip(&mut group_results) {
            // Every engine this block does not talk to must be asleep: a floor (or the raw UCX
            // thread) needs the engine core to itself, and one engine's idle spin must not
            // share the core with another engine's work.
            let uses: Option<&Session> = if spec.borrows_engine_core {
                None
            } else {
                ctx.session_of(spec.engine)
            };
            for s in ctx.sessions() {
                if !uses.is_some_and(|u| std::ptr::eq(u, s)) {
                    wait_engine_asleep(s, settle)?;
                }
            }
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            if usize::try_from(cpu).ok() != Some(ctx.client_core) {
                return Err(format!(
                    "the measuring thread runs on CPU {cpu}, not on its pinned CPU {}",
                    ctx.client_core
                )
                .into());
            }
            block_hist.reset();
            let start = run_start.elapsed();
            let timing = ctx.timing;
            ctx.timing.measure = timing.measure / spec.measure_divisor.max(1);
            let run = runner.run_block(ctx, &mut block_hist);
            ctx.timing = timing;
            let run = run.map_err(|e| -> Error {
                if e.is::<interrupt::Interrupted>() {
                    e
                } else {
                    format!("{} block {}: {e}", spec.name, b + 1).into()
                }
            })?;
            result
                .hist
                .add(&block_hist)
                .map_err(|e| format!("merging histograms: {e:?}"))?;
            let block = Block {
                start,
                elapsed: run.elapsed,
                ops: run.samples * u64::from(spec.ops_per_sample),
                p50_ns: block_hist.value_at_quantile(0.5),
                p999_ns: block_hist.value_at_quantile(0.999),
                hist: keep_block_hists.then(|| block_hist.clone()),
            };
            if !quiet {
                let bw = if spec.bytes_per_sample > 0 {
                    format!("  {:>7.3} GB/s", block.ops_per_sec() * spec.bytes_per_op() / 1e9)
                } else {
                    String::new()
                };
                eprintln!(
                    "[{:>2}/{blocks}] {:<22} p50 {:>7} ns  p99 {:>7} ns  {:>12.0} ops/s{bw}",
                    b + 1,
                    spec.name,
                    block.p50_ns,
                    block_hist.value_at_quantile(0.99),
                    block.ops_per_sec()
                );
            }
            result.blocks.push(block);
        }
    }
    for (runner, result) in runners.iter().zip(&mut group_results) {
        result.details = runner.details();
        result.engine_command = runner.engine_command();
    }
    Ok(group_results)
}

/// Waits until the engine worker announced NEED_WAKEUP (it is about to sleep or asleep), so
/// that a floor block has the engine core to itself.
fn wait_engine_asleep(s: &Session, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !s.engine_sleeping() {
        if s.state().is_terminal() {
            return Err(format!(
                "the engine ended the bench's session (state {:?}, reason {:?})",
                s.state(),
                s.close_reason()
            )
            .into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the engine worker did not go to sleep within {timeout:?} (SQ NEED_WAKEUP never set); \
                 a floor block would share the engine core with a spinning worker \
                 (is the engine running with --spin-forever or a long --idle-spin-us?)"
            )
            .into());
        }
        interrupt::check()?;
        std::thread::sleep(Duration::from_micros(200));
    }
    // The flag is set just before epoll_wait; give the worker time to get there.
    std::thread::sleep(Duration::from_micros(500));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ucx_group_logs_to_a_file_of_its_own() {
        use scenarios::Tls;
        assert_eq!(ucx_log_name("ucx.raw_am_rtt.sm", Tls::Sm), "engine-ucx-sm.log");
        assert_eq!(ucx_log_name("ucx.raw_am_rtt.tcp", Tls::Tcp), "engine-ucx-tcp.log");
        assert_eq!(ucx_log_name("ucx.raw_read_bw.sm", Tls::Sm), "engine-ucx-sm-read_bw.log");
        assert_eq!(
            ucx_log_name("ucx.raw_read_bw.tcp", Tls::Tcp),
            "engine-ucx-tcp-read_bw.log"
        );
        assert_eq!(
            needle_log_name("needle.read.4k.http", Tls::Sm),
            "engine-needle-4k-sm.log"
        );
        // Front-end groups do not overwrite the needle groups' logs.
        assert_eq!(
            needle_log_name("mount.randread.4k.http", Tls::Tcp),
            "engine-mount.randread.4k-tcp.log"
        );
        assert_eq!(needle_log_name("s3.get.1m.http", Tls::Sm), "engine-s3.get.1m-sm.log");
    }
}
