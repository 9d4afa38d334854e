//! The scenario registry, the block interface every scenario implements, and the timed
//! sampling loop they share.
//!
//! Adding a scenario: add a [`Spec`] to [`SPECS`] (name, what a sample is, its baseline and
//! target if it has one), implement [`Scenario`] for it, and return it from [`build`]. The
//! runner interleaves it block by block with its baseline and computes the ratios; a scenario
//! without a baseline runs in blocks on its own.

mod floor;
mod ring;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ring_client::Session;

use crate::stats::record;
use crate::Result;

/// What a target compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// subject p50 / baseline p50 must be at most the bound.
    P50Ratio,
    /// subject ops/sec / baseline ops/sec must be at least the bound.
    OpsRatio,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub metric: Metric,
    pub bound: f64,
}

impl Target {
    pub fn met(&self, ratio: f64) -> bool {
        match self.metric {
            Metric::P50Ratio => ratio <= self.bound,
            Metric::OpsRatio => ratio >= self.bound,
        }
    }

    /// e.g. `"<= 1.3"`.
    pub fn describe(&self) -> String {
        match self.metric {
            Metric::P50Ratio => format!("<= {}", self.bound),
            Metric::OpsRatio => format!(">= {}", self.bound),
        }
    }
}

/// A scenario's fixed description. Names are stable: scripts and stored results use them.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub about: &'static str,
    /// What one latency sample is.
    pub sample: &'static str,
    /// Operations per sample (for ops/sec).
    pub ops_per_sample: u32,
    /// The scenario this one is compared with, block by block, in the same run.
    pub baseline: Option<&'static str>,
    pub target: Option<Target>,
    /// Talks to the engine (the bench starts one if any selected scenario does).
    pub needs_engine: bool,
    /// Runs a thread of its own on the engine core: the engine must be asleep first.
    pub borrows_engine_core: bool,
}

/// Every scenario, baselines before their subjects.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "floor.pingpong",
        about: "raw cache-line ping-pong between the client core and the engine core (the physical floor)",
        sample: "round trip",
        ops_per_sample: 1,
        baseline: None,
        target: None,
        needs_engine: false,
        borrows_engine_core: true,
    },
    Spec {
        name: "ring.nop",
        about: "one NOP through the real engine: Session::submit, spin on try_cqe",
        sample: "round trip",
        ops_per_sample: 1,
        baseline: Some("floor.pingpong"),
        target: Some(Target { metric: Metric::P50Ratio, bound: 1.3 }),
        needs_engine: true,
        borrows_engine_core: false,
    },
    Spec {
        name: "floor.echo_batch32",
        about: "bare two-ring echo loop (ring_proto Producer/Consumer on a session-shaped region) between the two cores, 32 per batch",
        sample: "batch of 32",
        ops_per_sample: 32,
        baseline: None,
        target: None,
        needs_engine: false,
        borrows_engine_core: true,
    },
    Spec {
        name: "ring.nop_batch32",
        about: "32 NOPs through the real engine: submission() push x32, sync, reap 32 completions",
        sample: "batch of 32",
        ops_per_sample: 32,
        baseline: Some("floor.echo_batch32"),
        target: Some(Target { metric: Metric::OpsRatio, bound: 0.5 }),
        needs_engine: true,
        borrows_engine_core: false,
    },
];

pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Groups the selected scenarios (plus the baselines they need) into interleaving groups:
/// each group is a baseline followed by its subjects, in registry order; a scenario with no
/// baseline and no selected subject forms a group alone. Unknown names are an error.
pub fn plan(selected: &[String]) -> Result<Vec<Vec<&'static Spec>>> {
    let mut wanted: Vec<&'static str> = Vec::new();
    for name in selected {
        let s = spec(name).ok_or_else(|| {
            let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
            format!("unknown scenario {name:?}; scenarios: {}", names.join(", "))
        })?;
        wanted.push(s.name);
        if let Some(b) = s.baseline {
            wanted.push(b);
        }
    }
    if selected.is_empty() {
        wanted = SPECS.iter().map(|s| s.name).collect();
    }
    let mut groups: Vec<Vec<&'static Spec>> = Vec::new();
    for s in SPECS.iter().filter(|s| wanted.contains(&s.name)) {
        let root = s.baseline.unwrap_or(s.name);
        match groups.iter_mut().find(|g| g[0].name == root) {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    Ok(groups)
}

/// Timing of one block.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Run but not recorded, at the start of every block.
    pub warmup: Duration,
    /// Recorded.
    pub measure: Duration,
}

/// What scenarios get to run a block.
pub struct Ctx {
    pub client_core: usize,
    pub engine_core: usize,
    /// The bench's session with the engine, when one runs.
    pub session: Option<Session>,
    pub timing: Timing,
}

impl Ctx {
    pub fn session(&mut self) -> Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| "this scenario needs the engine, and none was started".into())
    }
}

/// What a block measured, besides the histogram.
#[derive(Debug, Clone, Copy)]
pub struct BlockRun {
    pub samples: u64,
    /// Measured time, warm-up excluded.
    pub elapsed: Duration,
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
        other => unreachable!("scenario {other} is in SPECS but has no implementation"),
    }
}

/// Runs `op` (one sample: a round trip or a batch) for the warm-up, then for the measured
/// time, recording each sample's duration.
///
/// One `Instant::now()` per sample: each sample is the time from the previous timestamp to
/// this one, so the loop's own overhead (one clock read, one histogram record) is inside every
/// sample, the same for every scenario.
pub fn sample_loop(
    timing: Timing,
    hist: &mut Histogram<u64>,
    mut op: impl FnMut() -> Result<()>,
) -> Result<BlockRun> {
    let warm_end = Instant::now() + timing.warmup;
    let mut n = 0u64;
    let mut prev = loop {
        op()?;
        let now = Instant::now();
        if now >= warm_end {
            break now;
        }
        n += 1;
        if n & 1023 == 0 {
            crate::interrupt::check()?;
        }
    };
    let start = prev;
    let end = start + timing.measure;
    n = 0;
    loop {
        op()?;
        let now = Instant::now();
        record(hist, now - prev);
        prev = now;
        n += 1;
        if now >= end {
            break;
        }
        if n & 1023 == 0 {
            crate::interrupt::check()?;
        }
    }
    Ok(BlockRun {
        samples: n,
        elapsed: prev - start,
    })
}

/// Spin-wait bookkeeping for one wait that should take nanoseconds: make one per wait and
/// call [`SpinGuard::turn`] on every empty turn. Every 65536 turns it checks for Ctrl-C and
/// for a stall (no answer for [`STALL_LIMIT`]); otherwise it costs a counter increment.
pub struct SpinGuard {
    turns: u32,
    since: Option<Instant>,
}

/// How long a single round trip may take before the bench calls it a stall.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

impl SpinGuard {
    #[inline]
    pub fn new() -> Self {
        Self {
            turns: 0,
            since: None,
        }
    }

    /// `what` describes the wait, for the stall error.
    #[inline]
    pub fn turn(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        self.turns = self.turns.wrapping_add(1);
        if self.turns & 0xffff == 0 {
            self.slow_check(what)?;
        }
        std::hint::spin_loop();
        Ok(())
    }

    #[cold]
    fn slow_check(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        crate::interrupt::check()?;
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() > STALL_LIMIT {
            return Err(format!("stalled: {} for more than {STALL_LIMIT:?}", what()).into());
        }
        Ok(())
    }
}

impl Default for SpinGuard {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(groups: &[Vec<&Spec>]) -> Vec<Vec<&'static str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|s| s.name).collect())
            .collect()
    }

    #[test]
    fn default_plan_pairs_each_subject_with_its_baseline() {
        let g = plan(&[]).unwrap();
        assert_eq!(
            names(&g),
            vec![
                vec!["floor.pingpong", "ring.nop"],
                vec!["floor.echo_batch32", "ring.nop_batch32"]
            ]
        );
    }

    #[test]
    fn subject_pulls_in_its_baseline() {
        let g = plan(&["ring.nop_batch32".into()]).unwrap();
        assert_eq!(
            names(&g),
            vec![vec!["floor.echo_batch32", "ring.nop_batch32"]]
        );
        let g = plan(&["floor.pingpong".into()]).unwrap();
        assert_eq!(names(&g), vec![vec!["floor.pingpong"]]);
        let g = plan(&[
            "ring.nop".into(),
            "floor.pingpong".into(),
            "ring.nop".into(),
        ])
        .unwrap();
        assert_eq!(names(&g), vec![vec!["floor.pingpong", "ring.nop"]]);
    }

    #[test]
    fn unknown_scenario_lists_the_known_ones() {
        let e = plan(&["ring.nope".into()]).unwrap_err().to_string();
        assert!(
            e.contains("ring.nope") && e.contains("floor.pingpong"),
            "{e}"
        );
    }

    #[test]
    fn registry_is_consistent() {
        for (i, s) in SPECS.iter().enumerate() {
            assert_eq!(
                SPECS.iter().filter(|t| t.name == s.name).count(),
                1,
                "{} listed twice",
                s.name
            );
            if let Some(b) = s.baseline {
                let bi = SPECS
                    .iter()
                    .position(|t| t.name == b)
                    .expect("baseline exists");
                assert!(bi < i, "{}: baseline {b} must come first", s.name);
                assert!(SPECS[bi].baseline.is_none(), "baselines have no baseline");
            }
            assert_eq!(
                s.target.is_some(),
                s.baseline.is_some(),
                "{}: a target needs a baseline",
                s.name
            );
            // Every spec has an implementation.
            let _ = build(s);
        }
    }

    #[test]
    fn targets_compare_in_the_right_direction() {
        let p = Target {
            metric: Metric::P50Ratio,
            bound: 1.3,
        };
        assert!(p.met(1.2) && !p.met(1.4));
        let o = Target {
            metric: Metric::OpsRatio,
            bound: 0.5,
        };
        assert!(o.met(0.6) && !o.met(0.4));
    }

    #[test]
    fn sample_loop_records_every_sample() {
        let mut h = crate::stats::new_histogram();
        let timing = Timing {
            warmup: Duration::from_millis(1),
            measure: Duration::from_millis(5),
        };
        let mut calls = 0u64;
        let run = sample_loop(timing, &mut h, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(h.len(), run.samples);
        assert!(calls > run.samples, "warm-up calls are not recorded");
        assert!(run.elapsed >= timing.measure);
    }
}
