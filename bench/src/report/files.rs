//! The files `--out DIR` writes besides the JSON lines: HDR interval logs, percentile
//! distributions, one latency chart per group (`latency-<group>.svg`) and the ratio chart
//! (`ratios.svg`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::{Comparison, RunInfo, ScenarioResult};
use crate::plot::RatioRow;
use crate::scenarios::{plan::root_of, Metric};
use crate::Result;

/// Writes `results.jsonl`, per scenario `<name>.hlog` (HdrHistogram interval log, one
/// interval per block, V2 deflate encoding, ns) and `<name>.hgrm` (percentile distribution of
/// all blocks, the format of HdrHistogram's outputPercentileDistribution and its plotter),
/// per group `latency-<group>.svg`, and `ratios.svg`.
pub fn write_out_dir(
    dir: &Path,
    lines: &[String],
    results: &[(&ScenarioResult, Option<Comparison>)],
    run: &RunInfo,
    run_start: SystemTime,
) -> Result<()> {
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut jsonl = String::new();
    for l in lines {
        let _ = writeln!(jsonl, "{l}");
    }
    write("results.jsonl", jsonl.as_bytes())?;
    for (r, _) in results {
        write(&format!("{}.hlog", r.spec.name), &interval_log(r, run_start)?)?;
        write(
            &format!("{}.hgrm", r.spec.name),
            percentile_distribution(&r.hist).as_bytes(),
        )?;
    }
    let stamp = run_stamp(run, run_start);
    let only: Vec<&ScenarioResult> = results.iter().map(|(r, _)| *r).collect();
    for (group, svg) in latency_plots(&only, &stamp) {
        write(&format!("latency-{group}.svg"), svg.as_bytes())?;
    }
    write("ratios.svg", ratio_plot(results, &stamp).as_bytes())?;
    Ok(())
}

/// `2026-12-07T11:52:03Z, commit 7556bd7`: when and from what the run was made.
pub fn run_stamp(run: &RunInfo, run_start: SystemTime) -> String {
    let when = humantime::format_rfc3339_seconds(run_start);
    match &run.commit {
        Some(c) => format!("{when}, commit {c}"),
        None => format!("{when}, commit unknown"),
    }
}

/// One chart per group (a root scenario and everything compared with it, as they ran
/// interleaved): `(root name, SVG)`, in the order the groups ran. The pipelined bandwidth
/// scenarios, whose samples are transfers among others in flight, are left out.
pub fn latency_plots(results: &[&ScenarioResult], stamp: &str) -> Vec<(&'static str, String)> {
    let mut groups: Vec<(&'static str, Vec<&ScenarioResult>)> = Vec::new();
    for r in results.iter().filter(|r| !r.spec.pipelined) {
        let root = root_of(r.spec).name;
        match groups.iter_mut().find(|(g, _)| *g == root) {
            Some((_, members)) => members.push(r),
            None => groups.push((root, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(root, members)| {
            let series: Vec<crate::plot::Series> = members
                .iter()
                .map(|r| crate::plot::Series {
                    name: r.spec.name,
                    hist: &r.hist,
                })
                .collect();
            let title = format!("{root} and what is compared with it: latency percentiles (ns per sample), {stamp}");
            (root, crate::plot::latency_svg(&series, &title))
        })
        .collect()
}

/// Every same-run ratio that has a goal, against it (`ratios.svg`).
pub fn ratio_plot(results: &[(&ScenarioResult, Option<Comparison>)], stamp: &str) -> String {
    let mut rows = Vec::new();
    for (r, c) in results {
        let (Some(t), Some(c)) = (r.spec.target, c) else {
            continue;
        };
        let Some(value) = c.target_value(&t) else { continue };
        let what = match t.metric {
            Metric::P50Ratio | Metric::P50RatioAtLeast => "p50",
            Metric::P99Ratio => "p99",
            Metric::OpsRatio => "ops/s",
            Metric::BytesRatio => "bytes/s",
            Metric::P50ExcessOver(_) => "p50 excess",
            // Never has a comparison's value (`target_value` is `None`): skipped above.
            Metric::DetailAtMost(_) => continue,
        };
        rows.push(RatioRow {
            label: format!("{} {what} / {} {what}", r.spec.name, c.baseline),
            value,
            bound: t.bound,
            at_least: matches!(
                t.metric,
                Metric::OpsRatio | Metric::BytesRatio | Metric::P50RatioAtLeast
            ),
        });
    }
    for (r, _) in results {
        if let (Some(bound), Some(value)) = (r.spec.tail_bound, r.tail_ratio()) {
            rows.push(RatioRow {
                label: format!("{} p99.9 / p50", r.spec.name),
                value,
                bound,
                at_least: false,
            });
        }
    }
    crate::plot::ratio_svg(&rows, &format!("same-run ratios against their goals, {stamp}"))
}

pub(super) fn interval_log(r: &ScenarioResult, run_start: SystemTime) -> Result<Vec<u8>> {
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
