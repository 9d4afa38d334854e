//! Results: what was measured per scenario ([`ScenarioResult`]) and how it compares with its
//! baseline in the same run ([`compare`]); written out as JSON lines (`json.rs`), the readable
//! table (`text.rs`) and the files `--out` writes (`files.rs`; the SVG itself: `crate::plot`).

pub(crate) mod files;
mod json;
#[cfg(test)]
mod tests;
mod text;

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::scenarios::{Metric, Spec, Target};
use crate::stats::{self, per_sec, ratio_of_medians, Block, Excess, Ratio};

pub use files::write_out_dir;
pub use json::{json_line, skipped_line};
pub use text::table;

/// Everything measured for one scenario in this run.
pub struct ScenarioResult {
    pub spec: &'static Spec,
    /// All blocks merged.
    pub hist: Histogram<u64>,
    pub blocks: Vec<Block>,
    /// What the scenario reported about itself ([`crate::scenarios::Scenario::details`]).
    pub details: Map<String, Value>,
    /// The command line of the engine that ran during this scenario's group, if any.
    pub engine_command: Option<String>,
}

impl ScenarioResult {
    pub fn new(spec: &'static Spec) -> Self {
        Self {
            spec,
            hist: stats::new_histogram(),
            blocks: Vec::new(),
            details: Map::new(),
            engine_command: None,
        }
    }

    pub fn ops(&self) -> u64 {
        self.blocks.iter().map(|b| b.ops).sum()
    }

    pub fn elapsed(&self) -> Duration {
        self.blocks.iter().map(|b| b.elapsed).sum()
    }

    /// Total operations over total measured time.
    pub fn ops_per_sec(&self) -> f64 {
        per_sec(self.ops(), self.elapsed())
    }

    pub fn block_p50s(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.p50_ns as f64).collect()
    }

    pub fn block_p99s(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.p99_ns as f64).collect()
    }

    pub fn block_ops_per_sec(&self) -> Vec<f64> {
        self.blocks.iter().map(Block::ops_per_sec).collect()
    }

    /// p99.9 / p50 of all blocks' samples together.
    pub fn tail_ratio(&self) -> Option<f64> {
        let p50 = self.hist.value_at_quantile(0.5);
        (p50 > 0 && !self.hist.is_empty()).then(|| self.hist.value_at_quantile(0.999) as f64 / p50 as f64)
    }

    /// p99.9 / p50 of each block: median, min, max (a block sees one vCPU placement).
    pub fn block_tail_ratios(&self) -> Option<(f64, f64, f64)> {
        let r: Vec<f64> = self
            .blocks
            .iter()
            .filter(|b| b.p50_ns > 0)
            .map(|b| b.p999_ns as f64 / b.p50_ns as f64)
            .collect();
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((stats::median(&r)?, min, max))
    }

    /// Total bytes over total measured time; `None` for a scenario that counts no bytes.
    pub fn bytes_per_sec(&self) -> Option<f64> {
        (self.spec.bytes_per_sample > 0).then(|| self.ops_per_sec() * self.spec.bytes_per_op())
    }

    pub fn block_bytes_per_sec(&self) -> Option<Vec<f64>> {
        (self.spec.bytes_per_sample > 0).then(|| {
            self.blocks
                .iter()
                .map(|b| b.ops_per_sec() * self.spec.bytes_per_op())
                .collect()
        })
    }
}

/// Same-run comparison of a subject with its baseline.
pub struct Comparison {
    pub baseline: &'static str,
    pub p50: Option<Ratio>,
    /// Of block p99s.
    pub p99: Option<Ratio>,
    pub ops: Option<Ratio>,
    /// Bytes/sec, when both count bytes.
    pub bytes: Option<Ratio>,
    /// The same ratios against the spec's `also_vs` scenarios.
    pub also: Vec<(&'static str, Option<Ratio>, Option<Ratio>)>,
    /// p50 over the baseline's, in units of the spec's `excess_reference`.
    pub excess: Option<(&'static str, Option<Excess>)>,
}

impl Comparison {
    /// The value the spec's target is about.
    pub fn target_value(&self, t: &Target) -> Option<f64> {
        match t.metric {
            Metric::P50Ratio | Metric::P50RatioAtLeast => self.p50.map(|r| r.value),
            Metric::P99Ratio => self.p99.map(|r| r.value),
            Metric::OpsRatio => self.ops.map(|r| r.value),
            Metric::BytesRatio => self.bytes.map(|r| r.value),
            Metric::P50ExcessOver(_) => self.excess.and_then(|(_, e)| e).map(|e| e.excess_vs_reference),
            // Not a comparison of blocks: the scenario's own details ([`detail_target`]).
            Metric::DetailAtMost(_) => None,
        }
    }
}

/// A target on the scenario's own details ([`Metric::DetailAtMost`]) and its value there
/// (`None` when the scenario could not measure it).
pub fn detail_target(r: &ScenarioResult) -> Option<(Target, Option<f64>)> {
    let t = r.spec.target?;
    let Metric::DetailAtMost(key) = t.metric else {
        return None;
    };
    Some((t, r.details.get(key).and_then(Value::as_f64)))
}

fn ratios(subject: &ScenarioResult, other: &ScenarioResult) -> (Option<Ratio>, Option<Ratio>) {
    (
        ratio_of_medians(&subject.block_p50s(), &other.block_p50s()),
        ratio_of_medians(&subject.block_ops_per_sec(), &other.block_ops_per_sec()),
    )
}

/// Compares `subject` with its baseline (and its other comparisons) among `all`, the results
/// of the same run. `None` for a scenario without a baseline, or when the baseline did not run.
pub fn compare(subject: &ScenarioResult, all: &[ScenarioResult]) -> Option<Comparison> {
    let find = |name: &str| all.iter().find(|r| r.spec.name == name);
    let baseline = find(subject.spec.baseline?)?;
    let (p50, ops) = ratios(subject, baseline);
    let also = subject
        .spec
        .also_vs
        .iter()
        .filter_map(|n| find(n))
        .map(|o| {
            let (p, q) = ratios(subject, o);
            (o.spec.name, p, q)
        })
        .collect();
    let excess = subject.spec.excess_reference.map(|name| {
        let e = find(name).and_then(|reference| {
            stats::excess(&subject.block_p50s(), &baseline.block_p50s(), &reference.block_p50s())
        });
        (name, e)
    });
    let bytes = match (subject.block_bytes_per_sec(), baseline.block_bytes_per_sec()) {
        (Some(s), Some(b)) => ratio_of_medians(&s, &b),
        _ => None,
    };
    let p99 = ratio_of_medians(&subject.block_p99s(), &baseline.block_p99s());
    Some(Comparison {
        baseline: baseline.spec.name,
        p50,
        p99,
        ops,
        bytes,
        also,
        excess,
    })
}

/// Run-wide facts repeated on every line, so a line stands on its own.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub bench_version: &'static str,
    pub unix_time: u64,
    pub quick: bool,
    pub blocks: u32,
    pub warmup_ms: f64,
    pub measure_ms: f64,
    /// The engine command line, when an engine ran.
    pub engine_command: Option<String>,
    /// The source the bench was built from: `git rev-parse --short HEAD` of its checkout,
    /// with `+dirty` when files differ from it; None outside a git checkout.
    pub commit: Option<String>,
}

/// The commit of the checkout this bench was built from (see [`RunInfo::commit`]).
pub fn source_commit() -> Option<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).filter(|h| !h.is_empty())?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}
