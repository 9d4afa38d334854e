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
//! So the spin adapts: the worker reads its own count of involuntary context switches
//! (`getrusage(RUSAGE_THREAD)`, about 0.2 µs, at most every [`CSW_CHECK_EVERY`] of spinning
//! and once before each sleep). When it went up, another thread wanted this core: the worker
//! stops spinning at once and, for [`CONTENDED_HOLD`], spins at most [`CONTENDED_SPIN`] before
//! sleeping. On an isolated core the count never moves and the configured spin stands.
//! `spin-forever` is left alone: the operator asked for it.

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

/// How often a spinning worker reads its involuntary context switch count.
pub const CSW_CHECK_EVERY: Duration = Duration::from_micros(100);

/// How long a worker that was preempted keeps its spin short.
pub const CONTENDED_HOLD: Duration = Duration::from_secs(1);

/// The longest idle spin of a worker whose core is contended: short enough that the worker
/// sleeps before the scheduler preempts it, long enough to catch the next request of a
/// client that submits back to back.
pub const CONTENDED_SPIN: Duration = Duration::from_micros(20);

/// Where the count of involuntary context switches comes from (the thread's own, in the
/// engine; a scripted sequence in tests).
pub trait SwitchCount {
    fn involuntary_switches(&mut self) -> u64;
}

/// This thread's involuntary context switches, from `getrusage(RUSAGE_THREAD)`.
pub struct ThreadSwitches;

impl SwitchCount for ThreadSwitches {
    fn involuntary_switches(&mut self) -> u64 {
        match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD) {
            Ok(u) => u.involuntary_context_switches() as u64,
            // Cannot fail for RUSAGE_THREAD on Linux; if it did, "no change" keeps the
            // configured spin.
            Err(_) => 0,
        }
    }
}

/// One worker's idle-spin state.
pub struct IdleSpin<S: SwitchCount = ThreadSwitches> {
    policy: IdlePolicy,
    switches: S,
    idle_since: Option<Instant>,
    turns: u32,
    last_switches: u64,
    next_check: Option<Instant>,
    contended_until: Option<Instant>,
}

/// What the worker does after an empty turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep polling.
    Spin,
    /// Announce NEED_WAKEUP and sleep.
    Sleep,
}

impl<S: SwitchCount> IdleSpin<S> {
    pub fn new(policy: IdlePolicy, mut switches: S) -> Self {
        let last_switches = switches.involuntary_switches();
        IdleSpin {
            policy,
            switches,
            idle_since: None,
            turns: 0,
            last_switches,
            next_check: None,
            contended_until: None,
        }
    }

    /// The worker found work: the next idle period starts from zero.
    #[inline]
    pub fn busy(&mut self) {
        self.idle_since = None;
        self.turns = 0;
    }

    /// The worker found no work on this turn. `preempted` counts the times a preemption cut
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
        let spin_done = now.saturating_duration_since(since) >= self.spin_limit(now);
        if check_due || spin_done {
            self.next_check = Some(now + CSW_CHECK_EVERY);
            if self.was_preempted() {
                self.contended_until = Some(now + CONTENDED_HOLD);
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
    }

    /// Whether the worker's core is treated as contended at `now`.
    pub fn contended(&self, now: Instant) -> bool {
        self.contended_until.is_some_and(|t| now < t)
    }

    fn spin_limit(&self, now: Instant) -> Duration {
        if self.contended(now) {
            self.policy.spin.min(CONTENDED_SPIN)
        } else {
            self.policy.spin
        }
    }

    fn was_preempted(&mut self) -> bool {
        let n = self.switches.involuntary_switches();
        let more = n > self.last_switches;
        self.last_switches = n;
        more
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A switch count the test moves by hand.
    struct Scripted(std::rc::Rc<std::cell::Cell<u64>>);
    impl SwitchCount for Scripted {
        fn involuntary_switches(&mut self) -> u64 {
            self.0.get()
        }
    }

    fn spin(us: u64) -> (IdleSpin<Scripted>, std::rc::Rc<std::cell::Cell<u64>>) {
        let count = std::rc::Rc::new(std::cell::Cell::new(5));
        let policy = IdlePolicy {
            spin: Duration::from_micros(us),
            spin_forever: false,
        };
        (IdleSpin::new(policy, Scripted(count.clone())), count)
    }

    #[test]
    fn an_uncontended_worker_spins_the_configured_time() {
        let (mut s, _) = spin(2000);
        let c = Counter::default();
        let t0 = Instant::now();
        for us in (0..2000).step_by(10) {
            assert_eq!(
                s.idle_turn_at(t0 + Duration::from_micros(us), &c),
                Next::Spin,
                "at {us} us"
            );
        }
        assert_eq!(s.idle_turn_at(t0 + Duration::from_micros(2000), &c), Next::Sleep);
        assert_eq!(c.get(), 0);
    }

    #[test]
    fn a_preempted_worker_sleeps_at_once_and_keeps_its_spin_short() {
        let (mut s, count) = spin(2000);
        let c = Counter::default();
        let t0 = Instant::now();
        assert_eq!(s.idle_turn_at(t0, &c), Next::Spin);
        count.set(6); // preempted while spinning
        assert_eq!(s.idle_turn_at(t0 + Duration::from_micros(150), &c), Next::Sleep);
        assert_eq!(c.get(), 1);
        s.woke();
        // For CONTENDED_HOLD the spin is at most CONTENDED_SPIN, with no further preemption.
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(s.idle_turn_at(t1, &c), Next::Spin);
        assert_eq!(s.idle_turn_at(t1 + CONTENDED_SPIN, &c), Next::Sleep);
        assert_eq!(c.get(), 1, "a spin that ran its (short) course is not a preemption");
        s.woke();
        // After the hold, the configured spin again.
        let t2 = t0 + Duration::from_micros(150) + CONTENDED_HOLD;
        assert_eq!(s.idle_turn_at(t2, &c), Next::Spin);
        assert_eq!(s.idle_turn_at(t2 + Duration::from_micros(1000), &c), Next::Spin);
        assert_eq!(s.idle_turn_at(t2 + Duration::from_micros(2000), &c), Next::Sleep);
    }

    #[test]
    fn spin_forever_never_sleeps_even_when_preempted() {
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let policy = IdlePolicy {
            spin: Duration::ZERO,
            spin_forever: true,
        };
        let mut s = IdleSpin::new(policy, Scripted(count.clone()));
        let c = Counter::default();
        for i in 0..1000 {
            count.set(i);
            assert_eq!(s.idle_turn(&c), Next::Spin);
        }
    }

    #[test]
    fn the_thread_switch_count_is_read() {
        // Not a timing check: the call works and is monotonic on this thread.
        let mut t = ThreadSwitches;
        let a = t.involuntary_switches();
        std::thread::yield_now();
        assert!(t.involuntary_switches() >= a);
    }
}
