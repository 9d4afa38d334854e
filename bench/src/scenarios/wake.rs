//! `ring.wake`: the first request after the engine went to sleep, and the engine's CPU use
//! while nothing happens.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ring_client::Session;
use ring_proto::{opcode, Sqe};
use serde_json::{Map, Value};

use super::{BlockRun, Ctx, PartTimedBlock, Scenario, SpinGuard};
use crate::Result;

/// How long the engine is watched doing nothing (once per run, before the first block),
/// unless [`IDLE_WINDOW_ENV`] says otherwise.
pub const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// Environment variable: the idle window in milliseconds (`ring.wake`, `ring.idle.full.*`),
/// e.g. 60000 to catch what an engine does every few seconds.
pub const IDLE_WINDOW_ENV: &str = "SWRING_BENCH_IDLE_WINDOW_MS";

/// The idle window from the value of [`IDLE_WINDOW_ENV`] (unset: [`IDLE_WINDOW`]).
pub fn idle_window_from(env: Option<&str>) -> Result<Duration> {
    match env {
        None => Ok(IDLE_WINDOW),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(format!("{IDLE_WINDOW_ENV}={v:?}: expected a number of milliseconds above 0").into()),
        },
    }
}

/// The idle window of this run.
pub fn idle_window() -> Result<Duration> {
    idle_window_from(std::env::var(IDLE_WINDOW_ENV).ok().as_deref())
}

/// After NEED_WAKEUP is seen: the worker sets it just before `epoll_wait`; give it time to
/// get there, so that a sample is a real wake-up from the kernel (as `wait_engine_asleep`).
const SETTLE: Duration = Duration::from_micros(500);

/// The engine's CPU time while idle, measured once.
#[derive(Debug, Clone, Copy)]
struct Idle {
    window: Duration,
    /// utime + stime of the process (/proc/PID/stat), in clock ticks.
    ticks: u64,
    clk_tck: u64,
    /// Sum of the threads' on-CPU time (/proc/PID/task/*/schedstat), ns; finer than ticks.
    schedstat_ns: Option<u64>,
}

#[derive(Default)]
pub struct Wake {
    seq: u64,
    idle: Option<Idle>,
    idle_error: Option<String>,
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat. The command name (field 2)
/// may hold spaces and parentheses: fields are counted after its last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the name: state is field 3; utime is field 14 and stime field 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// On-CPU time (ns), the first field of a /proc/PID/task/TID/schedstat.
pub fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time over a wall-clock window, as a fraction of one core.
pub fn core_fraction(cpu: Duration, window: Duration) -> f64 {
    if window.is_zero() {
        return 0.0;
    }
    cpu.as_secs_f64() / window.as_secs_f64()
}

pub(super) fn process_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    stat_cpu_ticks(&text).ok_or_else(|| format!("{path}: cannot parse {text:?}").into())
}

fn process_schedstat(pid: u32) -> Option<u64> {
    let mut sum = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let t = t.ok()?;
        let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        sum += schedstat_ns(&text)?;
    }
    Some(sum)
}

fn wait_asleep(s: &Session) -> Result<()> {
    let mut guard = SpinGuard::new();
    while !s.engine_sleeping() {
        if s.state().is_terminal() {
            return Err(format!("the engine ended the bench's session (state {:?})", s.state()).into());
        }
        guard.turn(|| format!("waiting for the engine to sleep ({})", super::ring::stall_context(s)))?;
    }
    std::thread::sleep(SETTLE);
    Ok(())
}

fn measure_idle(s: &Session, pid: u32) -> Result<Idle> {
    wait_asleep(s)?;
    // SAFETY: sysconf has no preconditions.
    let clk_tck = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let window = idle_window()?;
    let (t0, s0, w0) = (process_ticks(pid)?, process_schedstat(pid), Instant::now());
    let end = w0 + window;
    while Instant::now() < end {
        crate::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(10).min(end.saturating_duration_since(Instant::now())));
    }
    let (t1, s1, window) = (process_ticks(pid)?, process_schedstat(pid), w0.elapsed());
    Ok(Idle {
        window,
        ticks: t1.saturating_sub(t0),
        clk_tck,
        schedstat_ns: s0.zip(s1).map(|(a, b)| b.saturating_sub(a)),
    })
}

impl Scenario for Wake {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let timing = ctx.timing;
        let pid = ctx.engine_pid;
        let s = ctx.session()?;
        if self.idle.is_none() && self.idle_error.is_none() {
            match pid {
                Some(pid) => match measure_idle(s, pid) {
                    Ok(i) => self.idle = Some(i),
                    Err(e) if e.is::<crate::interrupt::Interrupted>() => return Err(e),
                    Err(e) => self.idle_error = Some(e.to_string()),
                },
                None => self.idle_error = Some("the engine's process id is unknown".into()),
            }
        }
        // Each sample: wait until the worker sleeps, then one NOP, submit to completion. The
        // warm-up (by time) is not recorded; the measured time counts every wait too, so
        // ops/sec is the rate of wake-ups, not of NOPs a busy engine could do.
        let mut block = PartTimedBlock::new(timing);
        loop {
            wait_asleep(s)?;
            self.seq += 1;
            let want = self.seq;
            let sqe = Sqe {
                opcode: opcode::NOP,
                user_data: want,
                ..Default::default()
            };
            let t0 = Instant::now();
            s.submit(&sqe)?;
            let mut guard = SpinGuard::new();
            let c = loop {
                if let Some(c) = s.try_cqe()? {
                    break c;
                }
                guard.turn(|| format!("waiting for the wake-up NOP {want} ({})", super::ring::stall_context(s)))?;
            };
            let t1 = Instant::now();
            if c.user_data != want || c.result != 0 {
                return Err(format!(
                    "unexpected NOP completion: user_data {} result {}, expected {want} and 0",
                    c.user_data, c.result
                )
                .into());
            }
            crate::interrupt::check()?;
            if let Some(run) = block.sample(hist, t0, t1) {
                return Ok(run);
            }
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(i) = self.idle {
            let tick = Duration::from_secs_f64(1.0 / i.clk_tck.max(1) as f64);
            m.insert(
                "idle_cpu_fraction".into(),
                core_fraction(tick * u32::try_from(i.ticks).unwrap_or(u32::MAX), i.window).into(),
            );
            if let Some(ns) = i.schedstat_ns {
                m.insert(
                    "idle_cpu_fraction_schedstat".into(),
                    core_fraction(Duration::from_nanos(ns), i.window).into(),
                );
            }
            m.insert("idle_window_s".into(), i.window.as_secs_f64().into());
            m.insert("idle_cpu_ticks".into(), i.ticks.into());
            m.insert("clk_tck".into(), i.clk_tck.into());
        }
        if let Some(e) = &self.idle_error {
            m.insert("idle_cpu_error".into(), e.clone().into());
        }
        m.insert("settle_us".into(), (SETTLE.as_micros() as u64).into());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // Fields 14 and 15 (utime 250, stime 17); the name holds spaces and a parenthesis.
        let stat = "4242 (eng ine) x) S 1 4242 4242 0 -1 4194560 300 0 0 0 250 17 0 0 20 0 3 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(267));
        assert_eq!(stat_cpu_ticks("1 (short) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no name"), None);
        assert_eq!(schedstat_ns("123456789 2000 31\n"), Some(123_456_789));
        assert_eq!(schedstat_ns(""), None);
    }

    #[test]
    fn core_fraction_is_cpu_over_wall() {
        assert_eq!(core_fraction(Duration::from_millis(10), Duration::from_secs(1)), 0.01);
        assert_eq!(core_fraction(Duration::from_secs(2), Duration::from_secs(1)), 2.0);
        assert_eq!(core_fraction(Duration::from_secs(1), Duration::ZERO), 0.0);
    }

    #[test]
    fn idle_window_comes_from_the_environment() {
        assert_eq!(idle_window_from(None).unwrap(), IDLE_WINDOW);
        assert_eq!(idle_window_from(Some("60000")).unwrap(), Duration::from_secs(60));
        for bad in ["0", "", "1s", "-5"] {
            let e = idle_window_from(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(IDLE_WINDOW_ENV), "{e}");
        }
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(process_ticks(pid).is_ok());
        assert!(process_schedstat(pid).is_some_and(|ns| ns > 0));
    }
}
