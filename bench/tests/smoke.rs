//! Smoke runs of the real binary: every scenario runs a few short blocks and prints well-formed
//! JSON lines. No assertion on speed.
//!
//! The floor scenarios need nothing else. The ring scenarios need the engine binary: the one
//! in `SWRING_ENGINE`, or `engine` next to the bench binary (`cargo build -p engine` first);
//! without it that test says so and checks that the bench fails with a clear message.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The runs pin threads to the same two CPUs: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bench"));
    c.args([
        "--json",
        "--quiet",
        "--blocks",
        "2",
        "--block-ms",
        "30",
        "--warmup-ms",
        "5",
    ]);
    c
}

fn engine_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWRING_ENGINE") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_BIN_EXE_bench")).with_file_name("engine");
    p.is_file().then_some(p)
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "bench failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn check_line(v: &Value, scenario: &str) {
    assert_eq!(v["scenario"], scenario);
    for key in [
        "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns", "count",
    ] {
        assert!(v[key].as_u64().is_some_and(|n| n > 0), "{key} in {v}");
    }
    assert!(v["ops_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(v["mean_ns"].as_f64().is_some(), "{v}");
    assert_eq!(v["blocks"], 2);
    assert!(v["machine"]["nproc"].as_u64().is_some(), "{v}");
    assert!(v["machine"]["cpu_model"].is_string(), "{v}");
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

#[test]
fn floors_run_without_an_engine() {
    if !two_cpus() {
        eprintln!("skipped: the bench needs two CPUs");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = bench()
        .args([
            "--scenario",
            "floor.pingpong",
            "--scenario",
            "floor.echo_batch32",
            "--engine",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    let v = lines(&out);
    assert_eq!(v.len(), 2, "{v:?}");
    check_line(&v[0], "floor.pingpong");
    check_line(&v[1], "floor.echo_batch32");
    assert_eq!(v[1]["ops_per_sample"], 32);
    assert!(v[0].get("ratio_p50").is_none());
}

#[test]
fn ring_scenarios_run_with_their_baselines() {
    if !two_cpus() {
        eprintln!("skipped: the bench needs two CPUs");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_binary() else {
        // Without an engine the bench must refuse clearly, not hang or print garbage.
        let out = bench()
            .args(["--scenario", "ring.nop"])
            .env_remove("SWRING_ENGINE")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("engine binary not found"), "{err}");
        eprintln!("ring scenarios not run: build the engine first (cargo build -p engine) or set SWRING_ENGINE");
        return;
    };
    let out = bench().arg("--engine").arg(&engine).output().unwrap();
    let v = lines(&out);
    let names: Vec<&str> = v.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "floor.pingpong",
            "ring.nop",
            "floor.echo_batch32",
            "ring.nop_batch32"
        ]
    );
    for (line, name) in v.iter().zip(&names) {
        check_line(line, name);
    }
    assert_eq!(v[1]["ratio_p50_vs"], "floor.pingpong");
    assert!(
        v[1]["ratio_p50"].as_f64().is_some_and(|r| r > 0.0),
        "{}",
        v[1]
    );
    assert_eq!(v[3]["ratio_ops_per_sec_vs"], "floor.echo_batch32");
    assert!(
        v[3]["ratio_ops_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{}",
        v[3]
    );
    assert!(v[3]["target"]["met"].is_boolean(), "{}", v[3]);
    assert!(
        v[1]["run"]["engine_command"]
            .as_str()
            .is_some_and(|c| c.contains("--cores")),
        "{}",
        v[1]
    );
}
