//! When an idle worker stops spinning and sleeps.
//!
//! A worker with nothing to do spins for `workers.idle-spin-us` before it announces
//! NEED_WAKEUP and sleeps, so that a request arriving soon after the last one is seen without
//! a wake-up. On a core of its own that costs nothing but the core. On a core it shares with
//! other threads (the weed servers on a small host, a mount's goroutines, a compiler) the
//! scheduler counts the spin as CPU use and preempts the worker: measured on a 2-vCPU host
//! with `weed` on the engine core, a worker spinning 2 ms was runnable-but-not-running 1,292
//! times for 2.24 ms each in 15 s, and every request that arrived meanwhile waited that long
//! (bench/README.md, "Sequential mount reads and S3 4 KiB: profile"). A worker that sleeps
//! instead is woken by its doorbell with the scheduler's wake-up preference (0.25 ms lost per
//! switch in the same measurement).
//!
//! So the spin adapts: the worker reads its own CPU time (`CLOCK_THREAD_CPUTIME_ID`, one
//! system call) at most every [`LOSS_CHECK_EVERY`] of spinning and once before each sleep,
//! and compares it with the wall-clock time gone by: what is missing was spent runnable but
//! not running, i.e. lost to another thread on this core. A loss of [`CONTENDED_LOSS`] or
//! more that is also a quarter of the interval is contention: the worker stops spinning at
//! once and spins at most [`CONTENDED_SPIN`] before sleeping; from then on the longest spin
//! doubles every [`CONTENDED_RAMP_STEP`] without another such loss, back to the configured
//! spin (2 ms in 7 steps). So a core shared with busy threads keeps its worker's spin short,
//! while short blips (a Go runtime's `sysmon` waking for a few microseconds, a kernel worker)
//! do not count, and a core whose other threads went quiet (a volume server between bursts)
//! gives the worker its spin back within tens of milliseconds: requests arriving back to back
//! are not each paid for with a doorbell wake-up (bench/README.md, "Large needles"). (The first
//! rule, any involuntary context switch holds the short spin for a second, kept every large
//! needle read of the bench waiting for a wake-up.) On an isolated core nothing is lost and the
//! configured spin stands. `spin-forever` is left alone: the operator asked for it.

use std::time::{Duration, Instant};

use crate::stats::Counter;

/// The idle policy from the config (`workers.idle-spin-us`, `workers.spin-forever`).
#[derive(Clone, Copy, Debug)]
pub struct IdlePolicy {
    pub spin: Duration,
    pub spin_forever: bool,
}

/// Empty loop turns between two clock reads while idle-spinning: a clock read on every turn
/// would delay noticing the next request by its cost.
const IDLE_CLOCK_TURNS: u32 = 64;

/// How often a spinning worker compares its CPU time with the wall clock.
pub const LOSS_CHECK_EVERY: Duration = Duration::from_micros(100);

/// The least time lost to other threads between two checks that counts as contention (and it
/// must also be a quarter of the interval: over a long busy stretch, blips add up).
pub const CONTENDED_LOSS: Duration = Duration::from_micros(50);

/// The longest idle spin of a worker right after it lost its core: short enough that the
/// worker sleeps before the scheduler preempts it again, long enough to catch the next
/// request of a client that submits back to back.
pub const CONTENDED_SPIN: Duration = Duration::from_micros(20);

/// After contention the longest idle spin doubles once per step without more of it.
pub const CONTENDED_RAMP_STEP: Duration = Duration::from_millis(10);

/// Where the worker's CPU time comes from (the thread's own, in the engine; a scripted
/// clock in tests).
pub trait CpuClock {
    fn cpu_time(&mut self) -> Duration;
}

/// This thread's CPU time, from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.
pub struct ThreadCpuTime;

impl CpuClock for ThreadCpuTime {
    fn cpu_time(&mut self) -> Duration {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID) {
            Ok(t) => Duration::from(t),
            // Cannot fail for this clock on Linux; if it did, a zero CPU time makes every
            // interval look lost, and the worker sleeps after a short spin: safe.
            Err(_) => Duration::ZERO,
        }
    }
}

/// One worker's idle-spin state.
pub struct IdleSpin<C: CpuClock = ThreadCpuTime> {
    policy: IdlePolicy,
    clock: C,
    idle_since: Option<Instant>,
    turns: u32,
    /// Wall clock and CPU time at the last check; `None` after a sleep (the next check only
    /// takes a new baseline: a sleep is not time lost).
    baseline: Option<(Instant, Duration)>,
    next_check: Option<Instant>,
    /// When contention last cut a spin short (the ramp of the spin limit starts there).
    contended_at: Option<Instant>,
}

/// What the worker does after an empty turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep polling.
    Spin,
    /// Announce NEED_WAKEUP and sleep.
    Sleep,
}

impl<C: CpuClock> IdleSpin<C> {
    pub fn new(policy: IdlePolicy, clock: C) -> Self {
        IdleSpin {
            policy,
            clock,
            idle_since: None,
            turns: 0,
            baseline: None,
            next_check: None,
            contended_at: None,
        }
    }

    /// The worker found work: the next idle period starts from zero.
    #[inline]
    pub fn busy(&mut self) {
        self.idle_since = None;
        self.turns = 0;
    }

    /// The worker found no work on this turn. `preempted` counts the times contention cut
    /// a spin short (the worker's `spins_preempted` counter).
    #[inline]
    pub fn idle_turn(&mut self, preempted: &Counter) -> Next {
        if self.policy.spin_forever {
            return Next::Spin;
        }
        self.turns = self.turns.wrapping_add(1);
        if !self.turns.is_multiple_of(IDLE_CLOCK_TURNS) {
            return Next::Spin;
        }
        self.idle_turn_at(Instant::now(), preempted)
    }

    /// The clock-reading part of [`idle_turn`](Self::idle_turn), at `now`.
    pub fn idle_turn_at(&mut self, now: Instant, preempted: &Counter) -> Next {
        let since = *self.idle_since.get_or_insert(now);
        let check_due = self.next_check.is_none_or(|t| now >= t);
        let limit = self.spin_limit(now);
        if limit == self.policy.spin {
            self.contended_at = None; // the ramp is over: no more arithmetic for it
        }
        let spin_done = now.saturating_duration_since(since) >= limit;
        if check_due || spin_done {
            self.next_check = Some(now + LOSS_CHECK_EVERY);
            if self.lost_core(now) {
                self.contended_at = Some(now);
                if !spin_done {
                    preempted.add(1);
                }
                return Next::Sleep;
            }
        }
        if spin_done {
            Next::Sleep
        } else {
            Next::Spin
        }
    }

    /// The worker woke from a sleep: the next idle period starts from zero.
    pub fn woke(&mut self) {
        self.busy();
        self.next_check = None;
        self.baseline = None;
    }

    /// The longest idle spin at `now`: the configured spin, or less while the ramp after
    /// contention is under way.
    pub fn spin_limit(&self, now: Instant) -> Duration {
        let Some(at) = self.contended_at else {
            return self.policy.spin;
        };
        // u64 nanoseconds (585 years), not u128: this runs every IDLE_CLOCK_TURNS idle turns.
        let elapsed = now.saturating_duration_since(at).as_nanos() as u64;
        let steps = elapsed / CONTENDED_RAMP_STEP.as_nanos() as u64;
        // 2^steps in u32 (steps >= 32 is past any configurable spin: idle-spin-us is a u32).
        let factor = 1u32.checked_shl(steps.min(32) as u32).unwrap_or(u32::MAX);
        CONTENDED_SPIN.saturating_mul(factor).min(self.policy.spin)
    }

    /// Whether another thread had this core for a good part of the time since the last check.
    fn lost_core(&mut self, now: Instant) -> bool {
        let cpu = self.clock.cpu_time();
        let Some((wall0, cpu0)) = self.baseline.replace((now, cpu)) else {
            return false;
        };
        let interval = now.saturating_duration_since(wall0);
        let lost = interval.saturating_sub(cpu.saturating_sub(cpu0));
        lost >= CONTENDED_LOSS && lost * 4 >= interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A CPU clock the test sets by hand.
    struct Scripted(Rc<Cell<Duration>>);
    impl CpuClock for Scripted {
        fn cpu_time(&mut self) -> Duration {
            self.0.get()
        }
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn spin(spin_us: u64) -> (IdleSpin<Scripted>, Rc<Cell<Duration>>) {
        let cpu = Rc::new(Cell::new(Duration::ZERO));
        let policy = IdlePolicy {
            spin: us(spin_us),
            spin_forever: false,
        };
        (IdleSpin::new(policy, Scripted(cpu.clone())), cpu)
    }

    /// One idle turn at t0 + `at`, the worker having run for `cpu` of it.
    fn turn(s: &mut IdleSpin<Scripted>, cpu: &Cell<Duration>, t0: Instant, at: Duration, ran: Duration) -> Next {
        cpu.set(ran);
        s.idle_turn_at(t0 + at, &Counter::default())
    }

    #[test]
    fn an_uncontended_worker_spins_the_configured_time() {
        let (mut s, cpu) = spin(2000);
        let c = Counter::default();
        let t0 = Instant::now();
        for n in (0..2000).step_by(10) {
            cpu.set(us(n));
            assert_eq!(s.idle_turn_at(t0 + us(n), &c), Next::Spin, "at {n} us");
        }
        cpu.set(us(2000));
        assert_eq!(s.idle_turn_at(t0 + us(2000), &c), Next::Sleep);
        assert_eq!(c.get(), 0);
    }

    #[test]
    fn a_worker_that_lost_its_core_sleeps_at_once_then_ramps_its_spin_back() {
        let (mut s, cpu) = spin(2000);
        let c = Counter::default();
        let t0 = Instant::now();
        cpu.set(Duration::ZERO);
        assert_eq!(s.idle_turn_at(t0, &c), Next::Spin);
        // 150 us gone by, 20 of them on the CPU: 130 us lost to another thread.
        cpu.set(us(20));
        assert_eq!(s.idle_turn_at(t0 + us(150), &c), Next::Sleep);
        assert_eq!(c.get(), 1);
        let hit = t0 + us(150);
        s.woke();
        // Right after, the spin is at most CONTENDED_SPIN.
        assert_eq!(s.spin_limit(hit), CONTENDED_SPIN);
        let t1 = hit + us(500);
        assert_eq!(turn(&mut s, &cpu, t1, Duration::ZERO, us(100)), Next::Spin);
        assert_eq!(turn(&mut s, &cpu, t1, CONTENDED_SPIN, us(120)), Next::Sleep);
        assert_eq!(c.get(), 1, "a spin that ran its (short) course is not a preemption");
        s.woke();
        // It doubles every CONTENDED_RAMP_STEP without more contention...
        for step in 1..=6u32 {
            assert_eq!(
                s.spin_limit(hit + CONTENDED_RAMP_STEP * step),
                CONTENDED_SPIN * (1 << step)
            );
        }
        // ...back to the configured spin.
        assert_eq!(s.spin_limit(hit + CONTENDED_RAMP_STEP * 7), us(2000));
        assert_eq!(s.spin_limit(hit + Duration::from_secs(3600)), us(2000));
        let t2 = hit + CONTENDED_RAMP_STEP * 7;
        let base = us(10_000);
        for n in (0..2000).step_by(50) {
            assert_eq!(turn(&mut s, &cpu, t2, us(n), base + us(n)), Next::Spin, "at {n} us");
        }
        assert_eq!(turn(&mut s, &cpu, t2, us(2000), base + us(2000)), Next::Sleep);
        assert_eq!(c.get(), 1);
    }

    #[test]
    fn short_blips_and_sleeps_are_not_contention() {
        let (mut s, cpu) = spin(2000);
        let c = Counter::default();
        let t0 = Instant::now();
        // 10 us of every 100 go to another thread (a runtime's sysmon, a kernel worker).
        for n in 0..19u64 {
            cpu.set(us(90 * n));
            assert_eq!(s.idle_turn_at(t0 + us(100 * n), &c), Next::Spin, "check {n}");
        }
        // A long busy stretch with blips adding up to 1 ms of 10 ms: not a quarter of it.
        let t1 = t0 + us(1900);
        s.busy();
        cpu.set(us(1710) + us(9_000));
        assert_eq!(s.idle_turn_at(t1 + us(10_000), &c), Next::Spin);
        // A sleep of 5 ms (no CPU time) is not lost time: the first check after it only
        // takes a new baseline.
        s.woke();
        let t2 = t1 + us(15_000);
        assert_eq!(s.idle_turn_at(t2, &c), Next::Spin);
        assert_eq!(
            s.idle_turn_at(t2 + us(100), &c),
            Next::Sleep,
            "100 us without CPU time is"
        );
        assert_eq!((c.get(), s.spin_limit(t2 + us(100))), (1, CONTENDED_SPIN));
    }

    #[test]
    fn spin_forever_never_sleeps_even_when_preempted() {
        let cpu = Rc::new(Cell::new(Duration::ZERO));
        let policy = IdlePolicy {
            spin: Duration::ZERO,
            spin_forever: true,
        };
        let mut s = IdleSpin::new(policy, Scripted(cpu.clone()));
        let c = Counter::default();
        for _ in 0..1000 {
            assert_eq!(s.idle_turn(&c), Next::Spin);
        }
    }

    #[test]
    fn the_thread_cpu_time_is_read() {
        // Not a timing check: the call works and is monotonic on this thread.
        let mut t = ThreadCpuTime;
        let a = t.cpu_time();
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        let b = t.cpu_time();
        assert!(b >= a && b > Duration::ZERO, "{a:?} {b:?}");
    }
}
