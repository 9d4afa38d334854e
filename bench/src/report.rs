//! Results: JSON lines, the readable table, and the files `--out` writes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::machine::Machine;
use crate::scenarios::{Metric, Spec, Target};
use crate::stats::{self, per_sec, ratio_of_medians, round2, round3, summarize, Block, Excess, Ratio};
use crate::Result;

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
            Metric::OpsRatio => self.ops.map(|r| r.value),
            Metric::BytesRatio => self.bytes.map(|r| r.value),
            Metric::P50ExcessOver(_) => self.excess.and_then(|(_, e)| e).map(|e| e.excess_vs_reference),
        }
    }
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
    Some(Comparison {
        baseline: baseline.spec.name,
        p50,
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
}

/// A JSON object that keeps its keys in insertion order (serde_json's own map sorts them).
#[derive(Default)]
struct Line(Vec<(String, String)>);

impl Line {
    fn put(&mut self, key: impl Into<String>, value: impl Serialize) {
        let text = serde_json::to_string(&value).expect("plain data serializes");
        self.0.push((key.into(), text));
    }

    fn text(&self) -> String {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).expect("a string serializes")))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// One JSON object (one line, no newline) describing one scenario.
pub fn json_line(r: &ScenarioResult, cmp: Option<&Comparison>, machine: &Machine, run: &RunInfo) -> String {
    let s = summarize(&r.hist);
    let mut l = Line::default();
    l.put("scenario", r.spec.name);
    l.put("sample", r.spec.sample);
    l.put("ops_per_sample", r.spec.ops_per_sample);
    l.put("p50_ns", s.p50_ns);
    l.put("p90_ns", s.p90_ns);
    l.put("p99_ns", s.p99_ns);
    l.put("p999_ns", s.p999_ns);
    l.put("p9999_ns", s.p9999_ns);
    l.put("max_ns", s.max_ns);
    l.put("mean_ns", s.mean_ns);
    l.put("count", s.count);
    l.put("p999_over_p50", r.tail_ratio().map(round3));
    l.put("ops_per_sec", round2(r.ops_per_sec()));
    if let Some(b) = r.bytes_per_sec() {
        l.put("bytes_per_op", r.spec.bytes_per_op());
        l.put("bytes_per_sec", round2(b));
    }
    if let Some(c) = cmp {
        put_ratio(&mut l, "ratio_p50", c.baseline, c.p50);
        put_ratio(&mut l, "ratio_ops_per_sec", c.baseline, c.ops);
        if r.spec.bytes_per_sample > 0 {
            put_ratio(&mut l, "ratio_bytes_per_sec", c.baseline, c.bytes);
        }
        if !c.also.is_empty() {
            let mut also = Map::new();
            for (name, p50, ops) in &c.also {
                let mut m = Map::new();
                for (key, r) in [("ratio_p50", p50), ("ratio_ops_per_sec", ops)] {
                    m.insert(key.into(), json!(r.map(|r| round3(r.value))));
                    m.insert(format!("{key}_pair_median"), json!(r.map(|r| round3(r.pair_median))));
                    m.insert(format!("{key}_min"), json!(r.map(|r| round3(r.min))));
                    m.insert(format!("{key}_max"), json!(r.map(|r| round3(r.max))));
                }
                also.insert((*name).into(), Value::Object(m));
            }
            l.put("also_vs", also);
        }
        if let Some((reference, e)) = c.excess {
            l.put(
                "excess",
                json!({
                    "reference": reference,
                    "subject_p50_ns": e.map(|e| round2(e.subject_p50_ns)),
                    "baseline_p50_ns": e.map(|e| round2(e.baseline_p50_ns)),
                    "excess_ns": e.map(|e| round2(e.excess_ns)),
                    "excess_pair_median_ns": e.map(|e| round2(e.excess_pair_median_ns)),
                    "reference_p50_ns": e.map(|e| round2(e.reference_p50_ns)),
                    "excess_vs_reference": e.map(|e| round3(e.excess_vs_reference)),
                    "excess_vs_reference_pair_median": e.map(|e| round3(e.excess_vs_reference_pair_median)),
                    "beyond_reference_ns": e.map(|e| round2(e.beyond_reference_ns)),
                    "beyond_reference_pair_median_ns": e.map(|e| round2(e.beyond_reference_pair_median_ns)),
                    "over_baseline": e.map(|e| round3(e.over_baseline)),
                }),
            );
        }
        if let Some(t) = r.spec.target {
            let value = c.target_value(&t);
            l.put(
                "target",
                json!({"metric": t.key(), "bound": t.describe(), "value": value.map(round3), "met": value.map(|x| t.met(x))}),
            );
        }
    }
    if let Some(bound) = r.spec.tail_bound {
        let value = r.tail_ratio();
        let blocks = r.block_tail_ratios();
        l.put(
            "tail_target",
            json!({
                "metric": "p999_over_p50",
                "bound": format!("<= {}", crate::scenarios::short_number(bound)),
                "value": value.map(round3),
                "met": value.map(|v| v <= bound),
                "block_median": blocks.map(|b| round3(b.0)),
                "block_min": blocks.map(|b| round3(b.1)),
                "block_max": blocks.map(|b| round3(b.2)),
            }),
        );
    }
    l.put("baseline", r.spec.baseline);
    l.put("blocks", r.blocks.len());
    l.put("block_p50_ns", r.blocks.iter().map(|b| b.p50_ns).collect::<Vec<_>>());
    l.put(
        "block_ops_per_sec",
        r.block_ops_per_sec().into_iter().map(round2).collect::<Vec<_>>(),
    );
    if let Some(b) = r.block_bytes_per_sec() {
        l.put("block_bytes_per_sec", b.into_iter().map(round2).collect::<Vec<_>>());
    }
    if !r.details.is_empty() {
        l.put("details", &r.details);
    }
    l.put("machine", machine);
    let mut run = run.clone();
    run.engine_command = r.engine_command.clone();
    l.put("run", run);
    l.text()
}

/// A line for a scenario the run was asked for but did not run.
pub fn skipped_line(name: &str, reason: &str, machine: &Machine, run: &RunInfo) -> String {
    let mut l = Line::default();
    l.put("scenario", name);
    l.put("skipped", reason);
    l.put("machine", machine);
    let mut run = run.clone();
    run.engine_command = None;
    l.put("run", run);
    l.text()
}

fn put_ratio(l: &mut Line, key: &str, baseline: &str, r: Option<Ratio>) {
    l.put(format!("{key}_vs"), baseline);
    l.put(key, r.map(|r| round3(r.value)));
    l.put(format!("{key}_min"), r.map(|r| round3(r.min)));
    l.put(format!("{key}_max"), r.map(|r| round3(r.max)));
    l.put(format!("{key}_pair_median"), r.map(|r| round3(r.pair_median)));
}

/// The readable report.
pub fn table(
    results: &[(&ScenarioResult, Option<Comparison>)],
    skipped: &[(&'static str, String)],
    machine: &Machine,
    run: &RunInfo,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "machine: {} ({} CPUs{}), kernel {}, clocksource {}; client core {}, engine core {}{}",
        machine.cpu_model,
        machine.nproc,
        if machine.hypervisor { ", virtual" } else { "" },
        machine.kernel,
        machine.clocksource,
        machine.client_core,
        machine.engine_core,
        machine
            .engine_pages
            .as_ref()
            .map_or(String::new(), |p| format!(", engine pages {p}")),
    );
    let _ = writeln!(
        out,
        "cores from: {}{}",
        machine.core_source,
        machine.load_average.map_or(String::new(), |l| format!(
            "; load average at start {:.2} {:.2} {:.2}",
            l[0], l[1], l[2]
        ))
    );
    let _ = writeln!(
        out,
        "run: {} interleaved blocks of {:.0} ms (+{:.0} ms warm-up) per scenario{}",
        run.blocks,
        run.measure_ms,
        run.warmup_ms,
        if run.quick { ", --quick" } else { "" }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22} {:<13} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}",
        "scenario", "sample", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "ops/s"
    );
    for (r, _) in results {
        let s = summarize(&r.hist);
        let _ = writeln!(
            out,
            "{:<22} {:<13} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}",
            r.spec.name,
            r.spec.sample,
            s.count,
            ns(s.p50_ns),
            ns(s.p90_ns),
            ns(s.p99_ns),
            ns(s.p999_ns),
            ns(s.p9999_ns),
            ns(s.max_ns),
            ns(s.mean_ns.round() as u64),
            si(r.ops_per_sec()),
        );
    }
    let bandwidths: Vec<_> = results
        .iter()
        .filter_map(|(r, _)| r.bytes_per_sec().map(|b| (r.spec.name, b)))
        .collect();
    if !bandwidths.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "bandwidth (all blocks):");
        for (name, b) in bandwidths {
            let _ = writeln!(
                out,
                "  {name:<22} {:>8.3} GB/s  {:>8.3} GiB/s",
                b / 1e9,
                b / (1u64 << 30) as f64
            );
        }
    }
    let comparisons: Vec<_> = results
        .iter()
        .filter_map(|(r, c)| c.as_ref().map(|c| (*r, c)))
        .collect();
    if !comparisons.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "ratios (same run): median(subject blocks) / median(baseline blocks); paired blocks: median [min..max]"
        );
        let verdict = |r: &ScenarioResult, c: &Comparison, metric: Metric| match r.spec.target {
            Some(t) if t.metric == metric => match c.target_value(&t) {
                Some(x) => format!("  target {}: {}", t.describe(), if t.met(x) { "met" } else { "MISSED" }),
                None => format!("  target {}: no data", t.describe()),
            },
            _ => String::new(),
        };
        let ratio = |x: Option<Ratio>| {
            x.map_or("n/a".to_string(), |x| {
                format!(
                    "{:.3}x  pairs {:.3} [{:.3}..{:.3}]",
                    x.value, x.pair_median, x.min, x.max
                )
            })
        };
        for (r, c) in comparisons {
            let p50_metric = match r.spec.target.map(|t| t.metric) {
                Some(m @ Metric::P50RatioAtLeast) => m,
                _ => Metric::P50Ratio,
            };
            let mut rows = vec![("p50", p50_metric, c.p50), ("ops/s", Metric::OpsRatio, c.ops)];
            if r.spec.bytes_per_sample > 0 {
                rows.push(("bytes/s", Metric::BytesRatio, c.bytes));
            }
            for (label, metric, x) in rows {
                let _ = writeln!(
                    out,
                    "  {:<56} {}{}",
                    format!("{} {label} / {} {label}", r.spec.name, c.baseline),
                    ratio(x),
                    verdict(r, c, metric)
                );
            }
            for (other, p50, ops) in &c.also {
                for (label, x) in [("p50", p50), ("ops/s", ops)] {
                    let _ = writeln!(
                        out,
                        "  {:<56} {}",
                        format!("{} {label} / {other} {label}", r.spec.name),
                        ratio(*x)
                    );
                }
            }
            if let Some((reference, e)) = c.excess {
                let v = match r.spec.target.map(|t| t.metric) {
                    Some(m @ Metric::P50ExcessOver(_)) => verdict(r, c, m),
                    _ => String::new(),
                };
                let label = format!("{} p50 - {} p50", r.spec.name, c.baseline);
                match e {
                    None => {
                        let _ = writeln!(out, "  {label:<56} n/a{v}");
                    }
                    Some(e) => {
                        let _ = writeln!(
                            out,
                            "  {label:<56} {:.0}ns = {:.3}x {reference} p50 ({:.0}ns)  pairs {:.3}x{v}",
                            e.excess_ns, e.excess_vs_reference, e.reference_p50_ns, e.excess_vs_reference_pair_median,
                        );
                        let _ = writeln!(
                            out,
                            "  {:<56} {:+.0}ns beyond one {reference} (pairs {:+.0}ns); {:+.1}% over {}",
                            "",
                            e.beyond_reference_ns,
                            e.beyond_reference_pair_median_ns,
                            e.over_baseline * 100.0,
                            c.baseline,
                        );
                    }
                }
            }
        }
    }
    for (r, _) in results {
        let Some(bound) = r.spec.tail_bound else { continue };
        let Some(v) = r.tail_ratio() else { continue };
        let s = summarize(&r.hist);
        let blocks = r.block_tail_ratios().map_or(String::new(), |(m, lo, hi)| {
            format!("; per block {m:.2}x [{lo:.2}..{hi:.2}]")
        });
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} p99.9 / p50: {} / {} = {v:.2}x{blocks}  target <= {}: {}",
            r.spec.name,
            ns(s.p999_ns),
            ns(s.p50_ns),
            crate::scenarios::short_number(bound),
            if v <= bound { "met" } else { "MISSED" }
        );
    }
    scaling_section(&mut out, results);
    // The engine's CPU use while idle (ring.wake), against the issue's bound of 1% of a core.
    for (r, _) in results {
        if let Some(f) = r.details.get("idle_cpu_fraction").and_then(serde_json::Value::as_f64) {
            let fine = r
                .details
                .get("idle_cpu_fraction_schedstat")
                .and_then(serde_json::Value::as_f64)
                .map_or(String::new(), |x| format!(" ({:.4}% by schedstat)", x * 100.0));
            let window = r
                .details
                .get("idle_window_s")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "engine CPU while idle ({}, {window:.1} s, no requests): {:.2}% of a core{fine}  target < 1%: {}",
                r.spec.name,
                f * 100.0,
                if f < 0.01 { "met" } else { "MISSED" }
            );
        }
    }
    if !skipped.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "not run:");
        for (name, why) in skipped {
            let _ = writeln!(out, "  {name:<22} {why}");
        }
    }
    out
}

/// The `scale.*` scenarios side by side: throughput and latency by session and worker count.
fn scaling_section(out: &mut String, results: &[(&ScenarioResult, Option<Comparison>)]) {
    let scale: Vec<_> = results
        .iter()
        .filter(|(r, _)| r.spec.name.starts_with("scale."))
        .collect();
    if scale.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "scaling (NOP, one in flight per session, one client thread; ops/s of all sessions; latency = submit to reaped):"
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>8} {:>7} {:>10} {:>20} {:>9} {:>9} {:>9}",
        "scenario", "sessions", "workers", "ops/s", "vs first", "p50", "p99", "p99.9"
    );
    for (r, c) in scale {
        let s = summarize(&r.hist);
        let get = |k: &str| {
            r.details
                .get(k)
                .and_then(Value::as_u64)
                .map_or("?".to_string(), |v| v.to_string())
        };
        let vs = c.as_ref().and_then(|c| c.ops).map_or("1x".to_string(), |x| {
            format!("{:.2}x [{:.2}..{:.2}]", x.value, x.min, x.max)
        });
        let _ = writeln!(
            out,
            "  {:<22} {:>8} {:>7} {:>10} {:>20} {:>9} {:>9} {:>9}",
            r.spec.name,
            get("sessions"),
            get("workers"),
            si(r.ops_per_sec()),
            vs,
            ns(s.p50_ns),
            ns(s.p99_ns),
            ns(s.p999_ns),
        );
    }
}

/// Nanoseconds, compactly.
fn ns(v: u64) -> String {
    match v {
        0..=99_999 => format!("{v}ns"),
        100_000..=99_999_999 => format!("{:.1}us", v as f64 / 1e3),
        _ => format!("{:.1}ms", v as f64 / 1e6),
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Writes `results.jsonl`, and per scenario `<name>.hlog` (HdrHistogram interval log, one
/// interval per block, V2 deflate encoding, ns) and `<name>.hgrm` (percentile distribution of
/// all blocks, the format of HdrHistogram's outputPercentileDistribution and its plotter).
pub fn write_out_dir(dir: &Path, lines: &[String], results: &[&ScenarioResult], run_start: SystemTime) -> Result<()> {
    let path = dir.join("results.jsonl");
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for l in lines {
        writeln!(f, "{l}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for r in results {
        let path = dir.join(format!("{}.hlog", r.spec.name));
        std::fs::write(&path, interval_log(r, run_start)?).map_err(|e| format!("{}: {e}", path.display()))?;
        let path = dir.join(format!("{}.hgrm", r.spec.name));
        std::fs::write(&path, percentile_distribution(&r.hist)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let path = dir.join("latency.svg");
    std::fs::write(&path, latency_plot(results, run_start)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// `latency.svg`: the percentile curves of every latency scenario of the run (the pipelined
/// bandwidth scenarios, whose samples are transfers among others in flight, are left out).
pub fn latency_plot(results: &[&ScenarioResult], run_start: SystemTime) -> String {
    let series: Vec<crate::plot::Series> = results
        .iter()
        .filter(|r| !r.spec.pipelined)
        .map(|r| crate::plot::Series {
            name: r.spec.name,
            hist: &r.hist,
        })
        .collect();
    let t = run_start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::plot::latency_svg(
        &series,
        &format!("bench latency percentiles (ns per sample; batch scenarios per batch), run started at unix time {t}"),
    )
}

fn interval_log(r: &ScenarioResult, run_start: SystemTime) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "bench scenario {}: {} (values in ns, one interval per block)",
            r.spec.name, r.spec.about
        ))
        .add_comment(&format!("one value = one {}", r.spec.sample))
        .with_start_time(run_start)
        .with_base_time(run_start)
        .with_max_value_divisor(1.0)
        .begin_log_with(&mut buf, &mut serializer)
        .map_err(|e| format!("interval log: {e}"))?;
    let tag = Tag::new(r.spec.name);
    for b in &r.blocks {
        if let Some(h) = &b.hist {
            w.write_histogram(h, b.start, b.elapsed, tag)
                .map_err(|e| format!("interval log: {e:?}"))?;
        }
    }
    drop(w);
    Ok(buf)
}

/// HdrHistogram's classic percentile table (values in ns).
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{:12.3} {:2.12} {:10} {:14.2}",
                v.value_iterated_to() as f64,
                q,
                total,
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{:12.3} {:2.12} {:10}", v.value_iterated_to() as f64, q, total);
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::spec;
    use crate::stats::record;

    fn result(name: &str, block_ns: &[u64], ops_per_block: u64) -> ScenarioResult {
        let mut r = ScenarioResult::new(spec(name).unwrap());
        for (i, &ns) in block_ns.iter().enumerate() {
            let mut h = stats::new_histogram();
            for _ in 0..100 {
                record(&mut h, Duration::from_nanos(ns));
            }
            r.hist.add(&h).unwrap();
            r.blocks.push(Block {
                start: Duration::from_secs(i as u64),
                elapsed: Duration::from_millis(100),
                ops: ops_per_block,
                p50_ns: h.value_at_quantile(0.5),
                p999_ns: h.value_at_quantile(0.999),
                hist: Some(h),
            });
        }
        r
    }

    fn machine() -> Machine {
        let mut m = Machine::probe(0, 1);
        m.engine_pages = Some("normal".into());
        m
    }

    fn run() -> RunInfo {
        RunInfo {
            bench_version: "test",
            unix_time: 0,
            quick: true,
            blocks: 3,
            warmup_ms: 10.0,
            measure_ms: 100.0,
            engine_command: None,
        }
    }

    #[test]
    fn json_line_has_the_promised_fields() {
        let all = [
            result("floor.pingpong", &[100, 150, 200], 100),
            result("ring.nop", &[130, 180, 300], 80),
        ];
        let (base, subj) = (&all[0], &all[1]);
        let c = compare(subj, &all).unwrap();
        assert!(compare(base, &all).is_none(), "a baseline has no comparison");
        let text = json_line(subj, Some(&c), &machine(), &run());
        // One line, parseable back, keys in a fixed order starting with the scenario.
        assert!(!text.contains('\n'));
        assert!(text.starts_with(r#"{"scenario":"ring.nop","#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        for key in [
            "scenario",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "p999_ns",
            "p9999_ns",
            "max_ns",
            "mean_ns",
            "count",
            "ops_per_sec",
            "ratio_p50_vs",
            "ratio_p50",
            "ratio_p50_min",
            "ratio_p50_max",
            "ratio_p50_pair_median",
            "ratio_ops_per_sec",
            "machine",
            "run",
            "target",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {text}");
        }
        assert_eq!(v["scenario"], "ring.nop");
        assert_eq!(v["count"], 300);
        assert_eq!(v["p50_ns"], 180);
        assert_eq!(v["ratio_p50_vs"], "floor.pingpong");
        assert_eq!(v["ratio_p50"], 1.2);
        assert_eq!(v["ratio_p50_min"], 1.2);
        assert_eq!(v["ratio_p50_max"], 1.5);
        assert_eq!(v["ratio_p50_pair_median"], 1.3);
        assert_eq!(v["ratio_ops_per_sec"], 0.8);
        assert_eq!(v["ops_per_sec"], 800.0);
        assert_eq!(v["target"]["met"], true);
        assert_eq!(v["target"]["value"], 1.2);
        assert_eq!(v["target"]["metric"], "ratio_p50");
        assert!(v.get("also_vs").is_none() && v.get("excess").is_none());
        assert_eq!(v["machine"]["nproc"], machine().nproc);
        assert!(v["machine"]["cpu_model"].is_string());

        // A baseline line has no ratio fields.
        let v: Value = serde_json::from_str(&json_line(base, None, &machine(), &run())).unwrap();
        assert!(v.get("ratio_p50").is_none());
        assert_eq!(v["baseline"], Value::Null);
    }

    #[test]
    fn out_files_read_back() {
        let r = result("floor.pingpong", &[100, 150], 100);
        let log = interval_log(&r, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap();
        let mut intervals = 0;
        for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
            if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = entry.unwrap() {
                assert_eq!(h.tag().unwrap().as_str(), "floor.pingpong");
                intervals += 1;
            }
        }
        assert_eq!(intervals, 2);
        let hgrm = percentile_distribution(&r.hist);
        assert!(hgrm.contains("Total count    =          200"), "{hgrm}");
    }

    #[test]
    fn table_shows_ratio_and_verdict() {
        let all = [
            result("floor.echo_batch32", &[1000, 1000], 3200),
            result("ring.nop_batch32", &[2000, 2000], 1280),
        ];
        let c = compare(&all[1], &all);
        let t = table(&[(&all[0], None), (&all[1], c)], &[], &machine(), &run());
        assert!(t.contains("ring.nop_batch32 ops/s / floor.echo_batch32 ops/s"), "{t}");
        assert!(t.contains("0.400x") && t.contains("target >= 0.5: MISSED"), "{t}");
    }

    #[test]
    fn also_vs_and_excess_are_reported() {
        let all = [
            result("floor.pingpong", &[100, 100], 1000),
            result("ring.nop", &[200, 200], 500),
            result("ring.nop.go", &[300, 300], 250),
            result("ucx.raw_am_rtt.sm", &[1000, 1000], 100),
            result("ucx.nop_ref.sm", &[200, 200], 500),
            result("ucx.am_rtt.sm", &[1300, 1400], 50),
        ];
        let go = compare(&all[2], &all).unwrap();
        let v: Value = serde_json::from_str(&json_line(&all[2], Some(&go), &machine(), &run())).unwrap();
        assert_eq!(v["ratio_p50_vs"], "floor.pingpong");
        assert_eq!(v["ratio_p50"], 3.0);
        assert_eq!(v["also_vs"]["ring.nop"]["ratio_p50"], 1.5);
        assert_eq!(v["also_vs"]["ring.nop"]["ratio_ops_per_sec"], 0.5);
        assert_eq!(v["target"]["met"], false);

        assert!(compare(&all[4], &all).is_none(), "a reference without a baseline");
        let ucx = compare(&all[5], &all).unwrap();
        let v: Value = serde_json::from_str(&json_line(&all[5], Some(&ucx), &machine(), &run())).unwrap();
        let e = &v["excess"];
        assert_eq!(e["reference"], "ucx.nop_ref.sm");
        assert_eq!(e["subject_p50_ns"], 1350.0);
        assert_eq!(e["baseline_p50_ns"], 1000.0);
        assert_eq!(e["excess_ns"], 350.0);
        assert_eq!(e["reference_p50_ns"], 200.0);
        assert_eq!(e["excess_vs_reference"], 1.75);
        assert_eq!(e["over_baseline"], 0.35);
        assert_eq!(e["beyond_reference_ns"], 150.0);
        // Per block: (300/200, 400/200), beyond (100, 200).
        assert_eq!(e["excess_vs_reference_pair_median"], 1.75);
        assert_eq!(e["beyond_reference_pair_median_ns"], 150.0);
        assert_eq!(v["target"]["metric"], "excess_vs_reference");
        assert_eq!(v["target"]["value"], 1.75);
        assert_eq!(v["target"]["met"], false);

        let t = table(
            &[(&all[5], Some(ucx))],
            &[("ucx.read_bw.sm", "not available yet".to_string())],
            &machine(),
            &run(),
        );
        assert!(
            t.contains("ucx.am_rtt.sm p50 - ucx.raw_am_rtt.sm p50")
                && t.contains("350ns = 1.750x ucx.nop_ref.sm p50 (200ns)"),
            "{t}"
        );
        assert!(t.contains("target <= 1.2: MISSED"), "{t}");
        assert!(t.contains("not run:") && t.contains("ucx.read_bw.sm"), "{t}");

        // Without the reference in the run, the excess is there but empty.
        let some = [
            result("ucx.raw_am_rtt.sm", &[1000, 1000], 100),
            result("ucx.am_rtt.sm", &[1300, 1400], 50),
        ];
        let c = compare(&some[1], &some).unwrap();
        assert!(matches!(c.excess, Some(("ucx.nop_ref.sm", None))));
        assert_eq!(c.target_value(&some[1].spec.target.unwrap()), None);
    }

    #[test]
    fn skipped_line_names_the_reason() {
        let v: Value =
            serde_json::from_str(&skipped_line("ring.nop.go", "Go is not installed", &machine(), &run())).unwrap();
        assert_eq!(v["scenario"], "ring.nop.go");
        assert_eq!(v["skipped"], "Go is not installed");
        assert!(v.get("p50_ns").is_none());
        assert!(v["machine"].is_object());
    }
}
