//! The readable report: percentiles per scenario, bandwidths, same-run ratios with the
//! targets' verdicts, tails, scaling and idle CPU.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Comparison, RunInfo, ScenarioResult};
use crate::machine::Machine;
use crate::scenarios::Metric;
use crate::stats::{summarize, Ratio};

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
    // The name column as wide as the longest name, so that the columns line up.
    let w = results
        .iter()
        .map(|(r, _)| r.spec.name.len())
        .max()
        .unwrap_or(0)
        .max(22);
    let _ = writeln!(
        out,
        "{:<w$} {:<13} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}",
        "scenario", "sample", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "ops/s"
    );
    for (r, _) in results {
        let s = summarize(&r.hist);
        let _ = writeln!(
            out,
            "{:<w$} {:<13} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}",
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
            if r.spec.target.is_some_and(|t| t.metric == Metric::P99Ratio) {
                rows.insert(1, ("p99", Metric::P99Ratio, c.p99));
            }
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
    // The engines' CPU use while idle (ring.wake, ring.idle.full.*), against the issue's
    // bound of 1% of a core.
    for (r, _) in results {
        idle_section(&mut out, r);
        store_section(&mut out, r);
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

/// `store.open.*`: each side's seconds to serve every volume and resident bytes per needle,
/// against the target on their ratio ([`super::detail_target`]).
fn store_section(out: &mut String, r: &ScenarioResult) {
    let Some((t, value)) = super::detail_target(r) else {
        return;
    };
    let d = &r.details;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} ({} needles in {} volumes): seconds until every volume is served, resident bytes per needle (RSS loaded - RSS empty)",
        r.spec.name,
        d.get("needles").and_then(Value::as_u64).unwrap_or(0),
        d.get("volumes").and_then(Value::as_u64).unwrap_or(0)
    );
    for side in ["engine", "weed"] {
        let s = &d[side];
        let secs = s["seconds_to_serve"]
            .as_f64()
            .map_or("n/a".into(), |x| format!("{x:.2} s"));
        let bpn = s["rss_bytes_per_needle"]
            .as_f64()
            .map_or("n/a".into(), |x| format!("{x:.1} B/needle"));
        let err = s["error"].as_str().map_or(String::new(), |e| format!("  ({e})"));
        let _ = writeln!(out, "  {side:<8} {secs:>10}  {bpn:>16}{err}");
    }
    let verdict = match value {
        Some(x) => format!(
            "{x:.3}  target {}: {}",
            t.describe(),
            if t.met(x) { "met" } else { "MISSED" }
        ),
        None => format!("n/a  target {}: no data", t.describe()),
    };
    let _ = writeln!(out, "  engine / weed bytes per needle: {verdict}");
}

/// `details.idle_cpu_fraction` against the scenario's idle bound: one line for `ring.wake`'s
/// engine; for a pair of engines (`details.idle_engines`) one per engine, with the threads
/// that ran.
fn idle_section(out: &mut String, r: &ScenarioResult) {
    let Some(f) = r.details.get("idle_cpu_fraction").and_then(Value::as_f64) else {
        return;
    };
    let bound = r.spec.idle_cpu_bound.unwrap_or(crate::scenarios::IDLE_CPU_BOUND);
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    let fine = |d: &serde_json::Map<String, Value>| {
        d.get("idle_cpu_fraction_schedstat")
            .and_then(Value::as_f64)
            .map_or(String::new(), |x| format!(" ({:.4}% by schedstat)", x * 100.0))
    };
    let window = r.details.get("idle_window_s").and_then(Value::as_f64).unwrap_or(0.0);
    let verdict = if f < bound { "met" } else { "MISSED" };
    let bound = pct(bound);
    let _ = writeln!(out);
    let Some(engines) = r.details.get("idle_engines").and_then(Value::as_object) else {
        let _ = writeln!(
            out,
            "engine CPU while idle ({}, {window:.1} s, no requests): {} of a core{}  target < {bound}: {verdict}",
            r.spec.name,
            pct(f),
            fine(&r.details)
        );
        return;
    };
    let _ = writeln!(
        out,
        "engines' CPU while idle ({}, {window:.1} s, no requests): busiest {} of a core  target < {bound} each: {verdict}",
        r.spec.name,
        pct(f)
    );
    for (role, e) in engines {
        let Some(e) = e.as_object() else { continue };
        let x = e.get("idle_cpu_fraction").and_then(Value::as_f64).unwrap_or(f64::NAN);
        let wakeups = e
            .get("worker_wakeups")
            .and_then(Value::as_u64)
            .map_or(String::new(), |w| format!(", worker woke {w}x"));
        let threads: Vec<String> = e
            .get("threads")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["comm"].as_str()?, t["tid"].as_u64()?, t["cpu_fraction"].as_f64()?)))
            .filter(|(_, _, x)| *x > 0.0)
            .map(|(c, tid, x)| format!("{c}[{tid}] {:.4}%", x * 100.0))
            .collect();
        let threads = if threads.is_empty() {
            String::new()
        } else {
            format!("; threads: {}", threads.join(", "))
        };
        let _ = writeln!(out, "  {role:<8} {}{}{wakeups}{threads}", pct(x), fine(e));
    }
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
