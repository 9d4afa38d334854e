//! The JSON fields, the table and the `--out` files, from made-up results.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::files::{interval_log, percentile_distribution};
use super::*;
use crate::machine::Machine;
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
            p99_ns: h.value_at_quantile(0.99),
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
        commit: Some("abc1234".into()),
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

#[test]
fn one_latency_chart_per_group_and_a_ratio_chart_with_date_and_commit() {
    let all = [
        result("floor.pingpong", &[100, 150, 200], 100),
        result("ring.nop", &[130, 180, 300], 80),
        result("floor.echo_batch32", &[1000, 1100, 1200], 50),
        result("ring.nop_batch32", &[1500, 1600, 1700], 40),
    ];
    let refs: Vec<&ScenarioResult> = all.iter().collect();
    let stamp = files::run_stamp(&run(), std::time::SystemTime::UNIX_EPOCH);
    assert_eq!(stamp, "1970-01-01T00:00:00Z, commit abc1234");
    let plots = files::latency_plots(&refs, &stamp);
    let groups: Vec<&str> = plots.iter().map(|(g, _)| *g).collect();
    assert_eq!(groups, ["floor.pingpong", "floor.echo_batch32"]);
    assert!(plots[0].1.contains("ring.nop (p50") && !plots[0].1.contains("ring.nop_batch32"));
    assert!(plots[0].1.contains("1970-01-01T00:00:00Z, commit abc1234"));
    let with_cmp: Vec<_> = all.iter().map(|r| (r, compare(r, &all))).collect();
    let svg = files::ratio_plot(&with_cmp, &stamp);
    assert!(svg.contains("ring.nop p50 / floor.pingpong p50"), "{svg}");
    assert!(
        svg.contains("ring.nop_batch32 ops/s / floor.echo_batch32 ops/s"),
        "{svg}"
    );
}

#[test]
fn idle_cpu_is_reported_per_engine_against_its_bound() {
    let mut r = result("ring.idle.full.tcp", &[200_000, 210_000], 500);
    r.details = serde_json::json!({
        "idle_cpu_fraction": 0.012,
        "idle_window_s": 1.0,
        "idle_engines": {
            "reader": {"idle_cpu_fraction": 0.0, "idle_cpu_fraction_schedstat": 0.0001, "worker_wakeups": 0,
                       "threads": [{"tid": 7, "comm": "engine", "cpu_fraction": 0.0001}, {"tid": 8, "comm": "worker-0", "cpu_fraction": 0.0}]},
            "server": {"idle_cpu_fraction": 0.012, "idle_cpu_fraction_schedstat": 0.0118, "worker_wakeups": 11,
                       "threads": [{"tid": 9, "comm": "worker-0", "cpu_fraction": 0.0118}]}
        }
    })
    .as_object()
    .unwrap()
    .clone();
    let t = table(&[(&r, None)], &[], &machine(), &run());
    assert!(
        t.contains("engines' CPU while idle (ring.idle.full.tcp, 1.0 s, no requests): busiest 1.20% of a core  target < 1.00% each: MISSED"),
        "{t}"
    );
    assert!(
        t.contains("  server   1.20% (1.1800% by schedstat), worker woke 11x; threads: worker-0[9] 1.1800%"),
        "{t}"
    );
    // Threads that did not run are left out.
    assert!(
        t.contains("  reader   0.00% (0.0100% by schedstat), worker woke 0x; threads: engine[7] 0.0100%\n"),
        "{t}"
    );
    let v: Value = serde_json::from_str(&json_line(&r, None, &machine(), &run())).unwrap();
    assert_eq!(v["idle_target"]["bound"], "< 0.01");
    assert_eq!(v["idle_target"]["met"], false);
    // ring.wake's single engine: one line, as before.
    let mut w = result("ring.wake", &[20_000], 100);
    w.details = serde_json::json!({"idle_cpu_fraction": 0.0, "idle_window_s": 1.0})
        .as_object()
        .unwrap()
        .clone();
    let t = table(&[(&w, None)], &[], &machine(), &run());
    assert!(
        t.contains("engine CPU while idle (ring.wake, 1.0 s, no requests): 0.00% of a core  target < 1.00%: met"),
        "{t}"
    );
}
