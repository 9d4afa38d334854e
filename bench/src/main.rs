//! `bench`: latency and throughput of the ring engine next to the physical floor of the same
//! two cores, measured in the same run with interleaved blocks. See bench/README.md.
//!
//! This file: the entry point and the run's order (plan, placement, engines, measuring,
//! report). The command line is in `cli.rs`, the engines each group needs in `engines.rs`,
//! the measuring loop in `measure.rs`, the results in `report/`.

mod cli;
mod config;
mod engine;
mod engines;
mod goproc;
mod gotool;
mod interrupt;
mod machine;
mod measure;
mod netns;
mod plot;
mod report;
mod scenarios;
mod stats;
mod weed;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;

use cli::{choose_cores, no_cores_for, Cli};
use engine::{Engine, EngineOptions};
use engines::{stop_engine, Engines};
use machine::Machine;
use measure::measure;
use report::{Comparison, RunInfo, ScenarioResult};
use scenarios::{Ctx, EngineUse, Timing, NOT_AVAILABLE, SPECS};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

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
    if plan.specs().any(|s| s.netns) {
        if let Err(why) = netns::available() {
            plan.skip_where(|s| s.netns, &why);
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
            netns: None,
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
        weed_cold: if plan.specs().any(|s| scenarios::is_cold(s.name)) {
            scenarios::cold_pool(blocks)
        } else {
            0
        },
        netns: None,
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
        commit: report::source_commit(),
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
        netns: None,
        engine_pid: engines.plain.as_ref().and_then(Engine::pid),
        timing,
        engine_template: template,
        worker_cores: placement.worker_cores.clone(),
        out: cli.out.clone(),
        settle,
        store_needles: cli.store_needles,
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
    // And the namespace pair (its cluster first).
    drop(engines.netns.take());
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
        report::write_out_dir(dir, &lines, &with_cmp, &run_info, run_start)?;
    }
    Ok(())
}
