//! The JSON lines: one object per scenario (or skipped scenario), keys in a fixed order.
//! bench/README.md documents the fields, and `bench/tests/smoke.rs` checks them.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{Comparison, RunInfo, ScenarioResult};
use crate::machine::Machine;
use crate::scenarios::Metric;
use crate::stats::{round2, round3, summarize, Ratio};

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
        if r.spec.target.is_some_and(|t| t.metric == Metric::P99Ratio) {
            put_ratio(&mut l, "ratio_p99", c.baseline, c.p99);
        }
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
    if let Some((t, value)) = super::detail_target(r) {
        l.put(
            "target",
            json!({"metric": t.key(), "bound": t.describe(), "value": value.map(round3), "met": value.map(|x| t.met(x))}),
        );
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
    if let Some(bound) = r.spec.idle_cpu_bound {
        let value = r.details.get("idle_cpu_fraction").and_then(Value::as_f64);
        l.put(
            "idle_target",
            json!({
                "metric": "idle_cpu_fraction",
                "bound": format!("< {}", crate::scenarios::short_number(bound)),
                "value": value,
                "met": value.map(|v| v < bound),
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
