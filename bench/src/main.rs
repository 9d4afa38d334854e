//! `bench`: latency and throughput of the ring engine next to the physical floor of the same
//! two cores, measured in the same run with interleaved blocks. See bench/README.md.

mod engine;
mod interrupt;
mod machine;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ring_client::Session;

use engine::{Engine, EngineOptions};
use machine::Machine;
use report::{Comparison, RunInfo, ScenarioResult};
use scenarios::{Ctx, Spec, Timing, SPECS};
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
    after_help = "Examples:\n  bench                          every scenario, about 45 s\n  bench --quick --json           short smoke run, one JSON object per scenario\n  bench --scenario ring.nop      ring.nop interleaved with floor.pingpong\n  bench --out results/           also write JSON lines and HDR histogram logs\n  bench --list                   the scenarios"
)]
struct Cli {
    /// Run this scenario (repeatable; default: all). Its baseline runs with it.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,

    /// Short smoke run (a few seconds in all).
    #[arg(long)]
    quick: bool,

    /// Print one JSON object per line per scenario instead of the table.
    #[arg(long)]
    json: bool,

    /// Also write results.jsonl, <scenario>.hlog (HDR interval log, one interval per block),
    /// <scenario>.hgrm (percentile distribution) and engine.log into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// CPU of the measuring (client) thread. Default: the second-highest allowed CPU.
    #[arg(long, value_name = "N")]
    client_core: Option<usize>,

    /// CPU of the engine worker and of the floors' peer thread. Default: the highest allowed CPU.
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

    /// Interleaved blocks per scenario [default: 20, --quick: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    blocks: Option<u32>,

    /// Measured time per block in ms [default: 500, --quick: 120].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    block_ms: Option<u64>,

    /// Unrecorded warm-up at the start of every block in ms [default: 40, --quick: 15].
    #[arg(long, value_name = "MS")]
    warmup_ms: Option<u64>,

    /// No per-block progress on stderr.
    #[arg(long, short)]
    quiet: bool,

    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for s in SPECS {
            let vs = s.baseline.map_or(String::new(), |b| format!(" [vs {b}]"));
            println!("{:<20} {}{vs}", s.name, s.about);
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
    let groups = scenarios::plan(&cli.scenarios)?;
    let (client_core, engine_core) = choose_cores(cli)?;
    let timing = Timing {
        warmup: Duration::from_millis(cli.warmup_ms.unwrap_or(if cli.quick { 15 } else { 40 })),
        measure: Duration::from_millis(cli.block_ms.unwrap_or(if cli.quick { 120 } else { 500 })),
    };
    let blocks = cli.blocks.unwrap_or(if cli.quick { 8 } else { 20 });
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
    }
    // Before pinning: the affinity mask is still the process's.
    let mut machine = Machine::probe(client_core, engine_core);

    let needs_engine = groups.iter().flatten().any(|s| s.needs_engine);
    let (mut engine, session) = if needs_engine {
        let opts = EngineOptions {
            binary: engine::locate(cli.engine.as_deref())?,
            core: engine_core,
            idle_spin_us: cli.engine_idle_spin_us,
            extra_args: cli.engine_args.clone(),
            log_path: cli.out.as_ref().map(|d| d.join("engine.log")),
            start_timeout: Duration::from_secs(15),
        };
        let (e, s) = Engine::start(&opts)?;
        machine.engine_pages = e.pages();
        (Some(e), Some(s))
    } else {
        (None, None)
    };

    // The measuring thread: this one, from here on.
    machine::pin_current_thread(client_core)?;
    let run_info = RunInfo {
        bench_version: env!("CARGO_PKG_VERSION"),
        unix_time: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: cli.quick,
        blocks,
        warmup_ms: timing.warmup.as_secs_f64() * 1e3,
        measure_ms: timing.measure.as_secs_f64() * 1e3,
        engine_command: engine.as_ref().map(|e| e.command_line().to_owned()),
    };
    let mut ctx = Ctx {
        client_core,
        engine_core,
        session,
        timing,
    };
    let settle = Duration::from_micros(cli.engine_idle_spin_us) * 4 + Duration::from_secs(2);
    let run_start = SystemTime::now();
    let measured = measure(
        &groups,
        blocks,
        &mut ctx,
        settle,
        cli.quiet,
        cli.out.is_some(),
    );

    // Stop the engine whatever happened; say what it did if the run failed.
    drop(ctx.session.take());
    let results = match measured {
        Ok(r) => r,
        Err(e) => {
            if e.is::<interrupt::Interrupted>() {
                return Err(e);
            }
            return Err(match engine.as_mut() {
                Some(en) => {
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
                None => e,
            });
        }
    };
    if let Some(en) = engine.take() {
        let log_tail = en.log_tail(30);
        let status = en.stop(Duration::from_secs(10))?;
        if !status.success() {
            eprintln!("bench: warning: the engine exited with {status} after SIGTERM (expected exit 0); engine log:\n{log_tail}");
        }
    }

    let with_cmp: Vec<(&ScenarioResult, Option<Comparison>)> = results
        .iter()
        .map(|r| {
            let cmp = r
                .spec
                .baseline
                .and_then(|b| results.iter().find(|x| x.spec.name == b))
                .map(|b| report::compare(r, b));
            (r, cmp)
        })
        .collect();
    let lines: Vec<String> = with_cmp
        .iter()
        .map(|(r, c)| report::json_line(r, c.as_ref(), &machine, &run_info))
        .collect();
    if cli.json {
        for l in &lines {
            println!("{l}");
        }
    } else {
        print!("{}", report::table(&with_cmp, &machine, &run_info));
    }
    if let Some(dir) = &cli.out {
        let all: Vec<&ScenarioResult> = results.iter().collect();
        report::write_out_dir(dir, &lines, &all, run_start)?;
    }
    Ok(())
}

fn choose_cores(cli: &Cli) -> Result<(usize, usize)> {
    let allowed = machine::allowed_cpus();
    let defaults = machine::default_cores(&allowed);
    let client = cli.client_core.or(defaults.map(|d| d.0));
    let engine = cli.engine_core.or(defaults.map(|d| d.1));
    let (Some(client), Some(engine)) = (client, engine) else {
        return Err(format!(
            "the bench needs two CPUs (allowed here: {allowed:?}); pass --client-core and --engine-core"
        )
        .into());
    };
    for (flag, c) in [("--client-core", client), ("--engine-core", engine)] {
        if !allowed.contains(&c) {
            return Err(format!(
                "{flag} {c}: this process may not run on CPU {c} (allowed: {allowed:?})"
            )
            .into());
        }
    }
    if client == engine {
        return Err(
            format!("--client-core and --engine-core are both {client}; they must differ").into(),
        );
    }
    Ok((client, engine))
}

/// Runs every group: block i of each member in turn, for i in 0..blocks.
fn measure(
    groups: &[Vec<&'static Spec>],
    blocks: u32,
    ctx: &mut Ctx,
    settle: Duration,
    quiet: bool,
    keep_block_hists: bool,
) -> Result<Vec<ScenarioResult>> {
    let run_start = Instant::now();
    let mut results = Vec::new();
    for group in groups {
        let mut runners: Vec<_> = group.iter().map(|s| scenarios::build(s)).collect();
        let mut group_results: Vec<ScenarioResult> =
            group.iter().map(|s| ScenarioResult::new(s)).collect();
        let mut block_hist = stats::new_histogram();
        for b in 0..blocks {
            for ((spec, runner), result) in group.iter().zip(&mut runners).zip(&mut group_results) {
                if spec.borrows_engine_core {
                    if let Some(s) = &ctx.session {
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
                let run = runner
                    .run_block(ctx, &mut block_hist)
                    .map_err(|e| -> Error {
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
                    hist: keep_block_hists.then(|| block_hist.clone()),
                };
                if !quiet {
                    eprintln!(
                        "[{:>2}/{blocks}] {:<20} p50 {:>7} ns  p99 {:>7} ns  {:>12.0} ops/s",
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
        }
        results.extend(group_results);
    }
    Ok(results)
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
