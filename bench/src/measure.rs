//! The measuring loop: every group in turn, block i of each member in turn, each block's
//! histogram and progress line, and the wait for idle engines to sleep before a block.

use std::time::{Duration, Instant};

use ring_client::Session;

use crate::engine;
use crate::engines::{with_engine_log, Engines};
use crate::report::ScenarioResult;
use crate::scenarios::{self, Ctx, EngineUse, Spec};
use crate::stats::{self, Block};
use crate::{interrupt, Error, Result};

/// Runs every group: block i of each member in turn, for i in 0..blocks.
pub fn measure(
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
                EngineUse::Ucx(_) | EngineUse::Needle(_) | EngineUse::Netns => en.map(|e| e.command_line().to_owned()),
                // Set from the scenario itself (measure_group).
                EngineUse::Own => r.engine_command.take(),
                EngineUse::None if !started.needle.is_empty() || started.netns.is_some() => None,
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
                p99_ns: block_hist.value_at_quantile(0.99),
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
