//! After the load: what the test counted must be what the engine counts (per session, per
//! worker, per peer, per error kind); every session closes, and the engine holds the
//! descriptors it held before and has nothing to warn about.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use integration_tests::{wait_until, Engine, PATIENCE};
use serde_json::Value;

use crate::checker::Tally;
use crate::session::Soaker;

/// The engine's descriptors as "fd -> target", for telling which one leaked.
fn fd_targets(engine: &Engine) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{}/fd", engine.pid()))
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some(format!("{} -> {}", e.file_name().to_string_lossy(), target.display()))
            })
            .collect()
        })
        .unwrap_or_default()
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}

/// Counters summed over the workers (or peers): submitted, completed, errors, errors by kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineCounts {
    pub submitted: u64,
    pub completed: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub sessions_opened: u64,
    pub sessions_closed: u64,
    pub peer_requests: u64,
    pub peer_failures: u64,
    pub peer_timeouts: u64,
    pub peer_timed: u64,
}

impl EngineCounts {
    pub fn of(status: &Value) -> Self {
        let mut c = EngineCounts::default();
        for w in status["workers"].as_array().unwrap() {
            c.submitted += u(&w["submitted"]);
            c.completed += u(&w["completed"]);
            c.errors += u(&w["errors"]);
            for (k, v) in w["errors_by_kind"].as_object().unwrap() {
                *c.errors_by_kind.entry(k.clone()).or_default() += u(v);
            }
            c.sessions_opened += u(&w["sessions_opened"]);
            c.sessions_closed += u(&w["sessions_closed"]);
        }
        for p in status["peers"].as_array().unwrap() {
            c.peer_requests += u(&p["requests"]);
            c.peer_failures += u(&p["failures"]);
            c.peer_timeouts += u(&p["timeouts"]);
            let l = &p["latency"];
            c.peer_timed += l["counts"].as_array().unwrap().iter().map(u).sum::<u64>() + u(&l["overflow"]);
        }
        c
    }

    /// What the soak changed.
    pub fn minus(&self, before: &Self) -> Self {
        let mut kinds = self.errors_by_kind.clone();
        for (k, v) in kinds.iter_mut() {
            *v -= before.errors_by_kind.get(k).copied().unwrap_or(0);
        }
        kinds.retain(|_, v| *v != 0);
        EngineCounts {
            submitted: self.submitted - before.submitted,
            completed: self.completed - before.completed,
            errors: self.errors - before.errors,
            errors_by_kind: kinds,
            sessions_opened: self.sessions_opened - before.sessions_opened,
            sessions_closed: self.sessions_closed - before.sessions_closed,
            peer_requests: self.peer_requests - before.peer_requests,
            peer_failures: self.peer_failures - before.peer_failures,
            peer_timeouts: self.peer_timeouts - before.peer_timeouts,
            peer_timed: self.peer_timed - before.peer_timed,
        }
    }
}

/// Warnings that say how the machine schedules the engine, which the soak does not control
/// (engine/src/worker.rs `log_contention`).
const MACHINE_WARNINGS: &[&str] = &["worker preempted while idle-spinning"];

/// The engine before the load, to compare with after it.
pub struct Baseline {
    pub fds: usize,
    fds_listed: BTreeSet<String>,
    pub maps: usize,
    counts: EngineCounts,
    log_start: usize,
}

impl Baseline {
    pub fn take(engine: &Engine) -> Self {
        // A descriptor may still be closing (the control connection of the last `engine
        // status`): the baseline is a count that holds still.
        let mut fds = engine.fd_count();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let n = engine.fd_count();
            if n == fds {
                break;
            }
            fds = n;
        }
        Baseline {
            fds,
            fds_listed: fd_targets(engine),
            maps: engine.map_count(),
            counts: EngineCounts::of(&engine.status_json()),
            log_start: engine.log().len(),
        }
    }

    /// Workers and peers, summed, changed by exactly what the test counted (`total`, over
    /// `sessions` sessions).
    pub fn assert_counts_changed_by(&self, engine: &Engine, total: &Tally, sessions: usize) {
        let want = EngineCounts {
            submitted: total.submitted,
            completed: total.completed,
            errors: total.errors,
            errors_by_kind: total.errors_by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            sessions_opened: sessions as u64,
            sessions_closed: 0,
            peer_requests: total.remote_sent,
            peer_failures: 0,
            peer_timeouts: 0,
            peer_timed: total.remote_ok,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = EngineCounts::of(&engine.status_json()).minus(&self.counts);
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "engine counters (workers and peers, change during the soak) differ from the test's:\nengine {got:?}\ntest   {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes every session: nothing left in any CQ; the engine lets go of all of them and
    /// gets back to the descriptors it held before.
    pub fn close_and_assert_released(&self, engine: &Engine, soakers: Vec<Soaker>) {
        let sessions = soakers.len() as u64;
        for s in soakers {
            let name = s.name();
            let left =
                s.s.close()
                    .unwrap_or_else(|e| panic!("{name}: close: {e}\n{}", engine.log()));
            assert!(left.is_empty(), "{name}: completions after the last one: {left:?}");
        }
        wait_until(
            "every session closed and its registration released",
            || {
                let st = engine.status_json();
                st["engine"]["sessions_open"] == 0
                    && st["engine"]["ucx_registrations"] == 0
                    && EngineCounts::of(&st).minus(&self.counts).sessions_closed == sessions
            },
            || engine.status_json().to_string(),
        );
        wait_until(
            "engine fds back to their level before the soak",
            || engine.fd_count() == self.fds,
            || {
                let now = fd_targets(engine);
                format!(
                    "fds {} (before {}); gone: {:?}; new: {:?}\n{}",
                    engine.fd_count(),
                    self.fds,
                    self.fds_listed.difference(&now).collect::<Vec<_>>(),
                    now.difference(&self.fds_listed).collect::<Vec<_>>(),
                    engine.log()
                )
            },
        );
    }

    /// Nothing in this run is a reason for the engine to warn (lease expiry, a cut-off
    /// session, a dropped message, a failed peer connection...). Shutdown is left out: the
    /// listener closing first, the engine's own connection to it may log its failure.
    ///
    /// One warning is about the machine, not the run: a worker whose core the scheduler
    /// gave to another thread says so (`MACHINE_WARNINGS`). On a 2-core CI machine the
    /// soak's own client threads share the workers' cores, so it may or may not appear.
    pub fn assert_no_warnings(&self, engine: &Engine) {
        let soak_log = engine.log();
        let complaints: Vec<&str> = soak_log[self.log_start..]
            .lines()
            .filter(|l| matches!(l.split_whitespace().nth(1), Some("WARN" | "ERROR")))
            .filter(|l| !MACHINE_WARNINGS.iter().any(|w| l.contains(w)))
            .collect();
        assert!(
            complaints.is_empty(),
            "the engine warned during the soak:\n{}\n\nlog since the warm-up:\n{}",
            complaints.join("\n"),
            &soak_log[self.log_start..]
        );
    }
}

/// Every session: nothing outstanding, each seq completed once; the engine's own counters per
/// session say the same. Returns the totals over the sessions.
pub fn assert_sessions_counted(engine: &Engine, soakers: &[Soaker]) -> Tally {
    let mut total = Tally::default();
    for s in soakers {
        s.assert_complete();
        total.add(&s.tally);
    }
    let sessions_match = |status: &Value| -> Result<(), String> {
        for s in soakers {
            let st = status["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == s.s.session_id())
                .ok_or_else(|| format!("{} missing from status", s.name()))?;
            let kinds: BTreeMap<String, u64> = st["errors_by_kind"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), u(v)))
                .filter(|(_, v)| *v != 0)
                .collect();
            let want_kinds: BTreeMap<String, u64> = s
                .tally
                .errors_by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            let got = (
                u(&st["submitted"]),
                u(&st["completed"]),
                u(&st["errors"]),
                kinds,
                u(&st["sq_pending"]),
                u(&st["cq_used"]),
                st["state"].as_str().unwrap().to_string(),
            );
            let want = (
                s.tally.submitted,
                s.tally.completed,
                s.tally.errors,
                want_kinds,
                0,
                0,
                "ready".to_string(),
            );
            if got != want {
                return Err(format!("{}: engine counts {got:?}, test counted {want:?}", s.name()));
            }
        }
        Ok(())
    };
    // Counters are single-writer and read Relaxed: give the last bumps a moment to show.
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = sessions_match(&engine.status_json()) {
        assert!(Instant::now() < deadline, "per-session counters: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in soakers {
        assert_eq!(
            s.s.sq_invalid_count() as u64,
            s.tally.rejected,
            "{}: SQ invalid counter vs completions -1..-3 (SPEC §4)",
            s.name()
        );
    }
    total
}
