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
    for key in ["p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns", "count"] {
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
    let dir = std::env::temp_dir().join(format!("bench-smoke-out-{}", std::process::id()));
    let out = bench()
        .args([
            "--scenario",
            "floor.pingpong",
            "--scenario",
            "floor.echo_batch32",
            "--engine",
            "/nonexistent",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let v = lines(&out);
    // --out also draws the percentile curves: one line per scenario.
    let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    assert!(svg.contains(">floor.echo_batch32 (p50 "), "{svg}");
    let _ = std::fs::remove_dir_all(&dir);
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
    let all = lines(&out);
    let (skipped, v): (Vec<Value>, Vec<Value>) = all.into_iter().partition(|l| l.get("skipped").is_some());
    let skipped_names: Vec<&str> = skipped.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    // Nothing is reserved-but-unavailable any more (Go may be skipped, below).
    // io_uring.nop is skipped where the kernel (or a seccomp filter) forbids io_uring.
    // The needle scenarios are skipped where no weed binary is found (or Go is missing).
    assert!(
        skipped_names
            .iter()
            .all(|n| n.ends_with(".go") || *n == "io_uring.nop" || n.starts_with("needle.read.")),
        "skipped: {skipped_names:?}"
    );
    let uring_ran = !skipped_names.contains(&"io_uring.nop");
    if !uring_ran {
        let l = &skipped[skipped_names.iter().position(|n| *n == "io_uring.nop").unwrap()];
        assert!(l["skipped"].as_str().unwrap().contains("io_uring"), "{l}");
    }
    // The Go scenarios run where Go (or a built ringlat) is available, else they are skipped.
    let go_ran = !skipped_names.contains(&"ring.nop.go");
    if !go_ran {
        eprintln!(
            "Go scenarios skipped: {}",
            skipped[skipped_names.iter().position(|n| *n == "ring.nop.go").unwrap()]["skipped"]
        );
    }
    let needles_ran = !skipped_names.contains(&"needle.read.4k.http");
    if !needles_ran {
        let l = &skipped[skipped_names.iter().position(|n| *n == "needle.read.4k.http").unwrap()];
        let why = l["skipped"].as_str().unwrap();
        assert!(why.contains("not available") || (!go_ran && why.contains("Go")), "{l}");
        eprintln!("needle scenarios skipped: {why}");
    }
    let names: Vec<&str> = v.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    let expected: Vec<&str> = [
        "floor.pingpong",
        "ring.nop",
        "ring.nop.go",
        "uds.msgpack",
        "io_uring.nop",
        "ring.wake",
        "floor.echo_batch32",
        "ring.nop_batch32",
        "ring.nop_batch32.go",
        "ucx.raw_am_rtt.sm",
        "ucx.nop_ref.sm",
        "ucx.am_rtt.sm",
        "ucx.raw_am_rtt.tcp",
        "ucx.nop_ref.tcp",
        "ucx.am_rtt.tcp",
        "ucx.raw_read_bw.sm",
        "ucx.read_bw.sm",
        "ucx.raw_read_bw.tcp",
        "ucx.read_bw.tcp",
        "needle.read.4k.http",
        "needle.read.4k.tcp",
        "needle.read.4k.sm",
        "needle.read.64k.http",
        "needle.read.64k.tcp",
        "needle.read.64k.sm",
        "needle.read.1m.http",
        "needle.read.1m.tcp",
        "needle.read.1m.sm",
    ]
    .into_iter()
    .filter(|n| go_ran || !n.ends_with(".go"))
    .filter(|n| needles_ran || !n.starts_with("needle.read."))
    .filter(|n| uring_ran || *n != "io_uring.nop")
    .collect();
    assert_eq!(names, expected);
    for (line, name) in v.iter().zip(&names) {
        check_line(line, name);
    }
    let by_name = |n: &str| &v[names.iter().position(|m| *m == n).unwrap()];
    let nop = by_name("ring.nop");
    assert_eq!(nop["ratio_p50_vs"], "floor.pingpong");
    assert!(nop["ratio_p50"].as_f64().is_some_and(|r| r > 0.0), "{nop}");
    let batch = by_name("ring.nop_batch32");
    assert_eq!(batch["ratio_ops_per_sec_vs"], "floor.echo_batch32");
    assert!(batch["ratio_ops_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{batch}");
    assert!(batch["target"]["met"].is_boolean(), "{batch}");
    assert!(
        nop["run"]["engine_command"]
            .as_str()
            .is_some_and(|c| c.contains("--cores")),
        "{nop}"
    );
    // The designs the rings replace, and the wake-up.
    let uds = by_name("uds.msgpack");
    assert_eq!(uds["ratio_p50_vs"], "ring.nop");
    assert_eq!(uds["target"]["bound"], ">= 50");
    assert!(uds["details"]["request_bytes"].as_u64().is_some_and(|n| n > 4), "{uds}");
    if uring_ran {
        assert_eq!(by_name("io_uring.nop")["ratio_p50_vs"], "ring.nop");
    }
    let wake = by_name("ring.wake");
    assert_eq!(wake["ratio_p50_vs"], "uds.msgpack");
    assert!(
        wake["details"]["idle_cpu_fraction"]
            .as_f64()
            .is_some_and(|f| (0.0..2.0).contains(&f)),
        "{wake}"
    );
    if go_ran {
        let go = by_name("ring.nop.go");
        assert_eq!(go["ratio_p50_vs"], "floor.pingpong");
        assert!(
            go["also_vs"]["ring.nop"]["ratio_p50"].as_f64().is_some_and(|r| r > 0.0),
            "{go}"
        );
        assert!(go["target"]["met"].is_boolean(), "{go}");
        let gob = by_name("ring.nop_batch32.go");
        assert_eq!(gob["ratio_ops_per_sec_vs"], "ring.nop_batch32");
        assert_eq!(gob["ops_per_sample"], 32);
        assert!(gob["details"]["ringlat_gomaxprocs"].as_u64().is_some(), "{gob}");
    }
    for tls in ["sm", "tcp"] {
        let raw = by_name(&format!("ucx.raw_am_rtt.{tls}"));
        assert!(raw["details"]["transports"].is_string(), "{raw}");
        let l = by_name(&format!("ucx.am_rtt.{tls}"));
        assert_eq!(l["ratio_p50_vs"], format!("ucx.raw_am_rtt.{tls}"));
        assert_eq!(l["excess"]["reference"], format!("ucx.nop_ref.{tls}"));
        assert!(l["excess"]["excess_vs_reference"].as_f64().is_some(), "{l}");
        assert!(l["target"]["met"].is_boolean(), "{l}");
        let cmd = l["run"]["engine_command"].as_str().unwrap();
        assert!(cmd.contains("--ucx-listen 127.0.0.1:0"), "{cmd}");
        // The reference NOP runs on the plain engine, interleaved in the same group.
        let r = by_name(&format!("ucx.nop_ref.{tls}"));
        let cmd = r["run"]["engine_command"].as_str().unwrap();
        assert!(!cmd.contains("--ucx-listen"), "{cmd}");
        // READ bandwidth: bytes per second next to the raw gets' of the same run.
        let raw = by_name(&format!("ucx.raw_read_bw.{tls}"));
        let bw = by_name(&format!("ucx.read_bw.{tls}"));
        for l in [raw, bw] {
            assert_eq!(l["bytes_per_op"], 1048576.0, "{l}");
            let b = l["bytes_per_sec"].as_f64().unwrap_or(0.0);
            let ops = l["ops_per_sec"].as_f64().unwrap();
            assert!(b > 0.0 && (b - ops * 1048576.0).abs() <= 0.01 * b, "{l}");
            assert_eq!(l["block_bytes_per_sec"].as_array().map(Vec::len), Some(2), "{l}");
            assert_eq!(l["details"]["first_read_checked"], true, "{l}");
        }
        assert!(raw["details"]["raw_ucx_lanes"].is_string(), "{raw}");
        assert_eq!(bw["ratio_bytes_per_sec_vs"], format!("ucx.raw_read_bw.{tls}"));
        assert!(bw["ratio_bytes_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{bw}");
        assert_eq!(bw["target"]["metric"], "ratio_bytes_per_sec", "{bw}");
        assert!(bw["target"]["met"].is_boolean(), "{bw}");
        assert!(bw["details"]["engine_ucx_lanes"].is_string(), "{bw}");
    }
    if needles_ran {
        for size in ["4k", "64k", "1m"] {
            let http = by_name(&format!("needle.read.{size}.http"));
            assert_eq!(http["details"]["path"], "http", "{http}");
            assert_eq!(http["details"]["bytes_verified"], true, "{http}");
            assert!(http["run"]["engine_command"].is_null(), "{http}");
            for tls in ["tcp", "sm"] {
                let l = by_name(&format!("needle.read.{size}.{tls}"));
                assert_eq!(l["ratio_p50_vs"], format!("needle.read.{size}.http"), "{l}");
                assert!(l["ratio_bytes_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{l}");
                assert_eq!(l["details"]["path"], "ring", "{l}");
                assert_eq!(l["details"]["bytes_verified"], true, "{l}");
                assert!(l["details"]["needle_fid"].is_string(), "{l}");
                // The ring path allocates nothing per read.
                assert_eq!(l["details"]["ringlat_allocs_per_op"], 0.0, "{l}");
                let cmd = l["run"]["engine_command"].as_str().unwrap();
                assert!(
                    cmd.contains("--seaweedfs-dir") && cmd.contains("--ucx-listen 127.0.0.1:0"),
                    "{cmd}"
                );
                assert_eq!(l["target"].is_object(), size != "64k", "{l}");
            }
        }
    }
}

/// Without Go and without a ringlat binary, the Go scenarios are skipped with a message and
/// the others still run.
#[test]
fn go_scenarios_are_skipped_without_go() {
    if !two_cpus() {
        eprintln!("skipped: the bench needs two CPUs");
        return;
    }
    let Some(engine) = engine_binary() else {
        eprintln!("not run: build the engine first (cargo build -p engine) or set SWRING_ENGINE");
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A copy of the bench in a directory with no ringlat next to it.
    let dir = std::env::temp_dir().join(format!("bench-smoke-nogo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("bench");
    std::fs::copy(env!("CARGO_BIN_EXE_bench"), &exe).unwrap();
    let out = Command::new(&exe)
        .args([
            "--json",
            "--quiet",
            "--blocks",
            "2",
            "--block-ms",
            "30",
            "--warmup-ms",
            "5",
        ])
        .args(["--scenario", "ring.nop.go", "--scenario", "ring.nop"])
        .arg("--engine")
        .arg(&engine)
        .env("SWRING_GO", "")
        .env_remove("SWRING_RINGLAT")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = lines(&out);
    let names: Vec<&str> = v.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    assert_eq!(names, ["floor.pingpong", "ring.nop", "ring.nop.go"], "{err}");
    check_line(&v[1], "ring.nop");
    assert!(
        v[2]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("Go is not installed")),
        "{}",
        v[2]
    );
    assert!(err.contains("not running ring.nop.go: Go is not installed"), "{err}");
}

/// Without a weed binary, the needle scenarios are reported as not available (with the
/// reason) and the others still run.
#[test]
fn needle_scenarios_are_not_available_without_weed() {
    if !two_cpus() {
        eprintln!("skipped: the bench needs two CPUs");
        return;
    }
    let Some(engine) = engine_binary() else {
        eprintln!("not run: build the engine first (cargo build -p engine) or set SWRING_ENGINE");
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = bench()
        .args(["--scenario", "needle.read.4k.tcp", "--scenario", "ring.nop"])
        .arg("--engine")
        .arg(&engine)
        .env("SWRING_WEED", "/nonexistent/weed")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = lines(&out);
    let names: Vec<&str> = v.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "floor.pingpong",
            "ring.nop",
            "needle.read.4k.http",
            "needle.read.4k.tcp"
        ],
        "{err}"
    );
    check_line(&v[1], "ring.nop");
    for l in &v[2..] {
        let why = l["skipped"].as_str().unwrap_or_default();
        // Where Go is missing too, that is the reason given.
        assert!(
            why.contains("not available") && why.contains("weed") || why.contains("Go"),
            "{l}"
        );
    }
    assert!(err.contains("not running needle.read.4k.tcp:"), "{err}");
}
