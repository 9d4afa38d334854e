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

/// SWRING_REQUIRE_ALL=1 (scripts/test): a scenario or test that cannot run here fails
/// instead of being skipped, unless the machine's core count rules it out.
fn require_all() -> bool {
    std::env::var_os("SWRING_REQUIRE_ALL").is_some_and(|v| v == "1")
}

/// A test that cannot run here: a failure under SWRING_REQUIRE_ALL=1, else a message.
fn not_run(why: &str) {
    assert!(
        !require_all(),
        "SWRING_REQUIRE_ALL=1 and a smoke test cannot run: {why}"
    );
    eprintln!("not run: {why}");
}

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

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
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
    // --out also draws the percentile curves, one chart per group (each floor is a group of
    // its own here), and the ratio chart (no ratio has a goal among floors: no rows).
    for (group, name) in [
        ("floor.pingpong", ">floor.pingpong (p50 "),
        ("floor.echo_batch32", ">floor.echo_batch32 (p50 "),
    ] {
        let svg = std::fs::read_to_string(dir.join(format!("latency-{group}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert!(svg.contains(name), "{svg}");
    }
    let ratios = std::fs::read_to_string(dir.join("ratios.svg")).unwrap();
    assert!(
        ratios.trim_end().ends_with("</svg>") && !ratios.contains("<circle"),
        "{ratios}"
    );
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
        not_run("ring scenarios: build the engine first (cargo build -p engine) or set SWRING_ENGINE");
        return;
    };
    // store.open.10m on 20 000 needles (--store-needles): 10 million take minutes to write and
    // open; the smaller set is cached like the large one.
    let out = bench()
        .arg("--engine")
        .arg(&engine)
        .args(["--store-needles", "20000"])
        .output()
        .unwrap();
    let all = lines(&out);
    let (skipped, v): (Vec<Value>, Vec<Value>) = all.into_iter().partition(|l| l.get("skipped").is_some());
    let skipped_names: Vec<&str> = skipped.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    if require_all() {
        // CI: only the core count may rule a scenario out.
        assert!(
            skipped_names.iter().all(|n| n.starts_with("scale.nop.workers.")),
            "SWRING_REQUIRE_ALL=1 and scenarios were skipped: {skipped:?}"
        );
    }
    // Nothing is reserved-but-unavailable any more (Go may be skipped, below).
    // io_uring.nop is skipped where the kernel (or a seccomp filter) forbids io_uring.
    // The needle scenarios (and ring.nop.beside_cold_reads, whose cold reader reads needles)
    // are skipped where no weed binary is found (or Go is missing).
    // scale.nop.workers.N is skipped where there are not N cores besides the client's.
    assert!(
        skipped_names.iter().all(|n| n.ends_with(".go")
            || *n == "io_uring.nop"
            || n.starts_with("needle.read.")
            || *n == "ring.nop.beside_cold_reads"
            || is_front_end(n)
            || (n.starts_with("scale.nop.workers.") && *n != "scale.nop.workers.1")),
        "skipped: {skipped_names:?}"
    );
    let cpus = allowed_cpus();
    for n in [2usize, 4, 8, 16, 32] {
        let name = format!("scale.nop.workers.{n}");
        let skipped_line = skipped.iter().find(|l| l["scenario"] == name.as_str());
        // N workers and a client need N + 1 CPUs.
        assert_eq!(skipped_line.is_some(), cpus.len() < n + 1, "{name} with CPUs {cpus:?}");
        if let Some(l) = skipped_line {
            let why = l["skipped"].as_str().unwrap();
            assert!(
                why.starts_with("not available here:") && why.contains("engine cores"),
                "{l}"
            );
        }
    }
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
    // The reads across a network-namespace pair need root and `ip` (CI runs as root; with
    // SWRING_REQUIRE_ALL=1 their skip failed above).
    let netns_ran = needles_ran && !skipped_names.contains(&"needle.read.4k.netns.http");
    if needles_ran && !netns_ran {
        let l = &skipped[skipped_names
            .iter()
            .position(|n| *n == "needle.read.4k.netns.http")
            .unwrap()];
        let why = l["skipped"].as_str().unwrap();
        assert!(why.starts_with("not available here:"), "{l}");
        eprintln!("netns scenarios skipped: {why}");
    }
    let names: Vec<&str> = v.iter().map(|l| l["scenario"].as_str().unwrap()).collect();
    let expected: Vec<&str> = [
        "floor.pingpong",
        "ring.nop",
        "ring.nop.go",
        "uds.msgpack",
        "io_uring.nop",
        "iceoryx2.reqres",
        "ring.wake",
        "needle.read.cold.1m.http",
        "needle.read.cold.1m.tcp",
        "ring.nop.beside_cold_reads",
        "floor.echo_batch32",
        "ring.nop_batch32",
        "ring.nop_batch32.go",
        "ucx.raw_am_rtt.sm",
        "ucx.raw_am_rtt_one_worker.sm",
        "ucx.nop_ref.sm",
        "ucx.am_rtt.sm",
        "ucx.raw_am_rtt.tcp",
        "ucx.raw_am_rtt_one_worker.tcp",
        "ucx.nop_ref.tcp",
        "ucx.am_rtt.tcp",
        "ucx.raw_read_bw.sm",
        "ucx.read_bw.sm",
        "ucx.raw_read_bw.tcp",
        "ucx.read_bw.tcp",
        "scale.nop.sessions.1",
        "scale.nop.sessions.4",
        "scale.nop.sessions.16",
        "scale.nop.sessions.64",
        "scale.nop.workers.1",
        "scale.nop.workers.2",
        "scale.nop.workers.4",
        "scale.nop.workers.8",
        "scale.nop.workers.16",
        "scale.nop.workers.32",
        "ring.idle.full.sm",
        "ring.idle.full.tcp",
        "store.open.10m",
        "needle.read.4k.http",
        "needle.read.4k.tcp",
        "needle.read.4k.sm",
        "needle.read.4k.local",
        "needle.read.64k.http",
        "needle.read.64k.tcp",
        "needle.read.64k.sm",
        "needle.read.1m.http",
        "needle.read.1m.tcp",
        "needle.read.1m.sm",
        "needle.read.1m.local",
        "needle.read.8m.http",
        "needle.read.8m.tcp",
        "needle.read.8m.sm",
        "needle.read.8m.local",
        "needle.read.4k.http.c1",
        "needle.read.4k.tcp.c1",
        "needle.read.4k.sm.c1",
        "needle.read.4k.http.c8",
        "needle.read.4k.tcp.c8",
        "needle.read.4k.sm.c8",
        "needle.read.4k.http.c64",
        "needle.read.4k.tcp.c64",
        "needle.read.4k.sm.c64",
        "mount.randread.4k.http",
        "mount.randread.4k.ring",
        "mount.randread.4k.ring.tcp",
        "mount.cached.4k.http",
        "mount.seqread.http",
        "mount.seqread.ring",
        "s3.get.4k.http",
        "s3.get.4k.ring",
        "s3.get.1m.http",
        "s3.get.1m.ring",
        "filer.get.4k.http",
        "filer.get.4k.ring",
        "needle.read.4k.netns.http",
        "needle.read.4k.netns",
        "needle.read.64k.netns.http",
        "needle.read.64k.netns",
        "needle.read.1m.netns.http",
        "needle.read.1m.netns",
    ]
    .into_iter()
    .filter(|n| netns_ran || !n.contains(".netns"))
    // store.open.10m finds the stock weed through ringlat.
    .filter(|n| go_ran || !(n.ends_with(".go") || *n == "store.open.10m"))
    .filter(|n| {
        needles_ran || !(n.starts_with("needle.read.") || is_front_end(n) || *n == "ring.nop.beside_cold_reads")
    })
    // The ring front ends need scripts/weed --ring (SWRING_REQUIRE_WEED=1 makes that an error).
    .filter(|n| !(is_front_end(n) && n.contains(".ring") && skipped_names.contains(n)))
    .filter(|n| uring_ran || *n != "io_uring.nop")
    .filter(|n| !skipped_names.contains(n) || !n.starts_with("scale.nop.workers."))
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
    // The tail target: p99.9 / p50 of ring.nop.
    assert!(nop["p999_over_p50"].as_f64().is_some_and(|r| r >= 1.0), "{nop}");
    assert_eq!(nop["tail_target"]["bound"], "<= 4", "{nop}");
    assert!(nop["tail_target"]["met"].is_boolean(), "{nop}");
    assert!(nop["tail_target"]["block_median"].as_f64().is_some(), "{nop}");
    // iceoryx2 request-response, interleaved with ring.nop.
    let iox = by_name("iceoryx2.reqres");
    assert_eq!(iox["ratio_p50_vs"], "ring.nop");
    assert_eq!(iox["target"]["bound"], ">= 3.333", "{iox}");
    assert!(iox["target"]["met"].is_boolean(), "{iox}");
    assert!(iox["details"]["iceoryx2_version"].is_string(), "{iox}");
    // Scaling: sessions per worker on the run's engine, workers on engines of their own.
    for n in [1u64, 4, 16, 64] {
        let l = by_name(&format!("scale.nop.sessions.{n}"));
        assert_eq!(l["details"]["sessions"], n, "{l}");
        assert_eq!(l["details"]["session_workers"], serde_json::json!([0]), "{l}");
        if n > 1 {
            assert_eq!(l["ratio_ops_per_sec_vs"], "scale.nop.sessions.1", "{l}");
            assert!(l["ratio_ops_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{l}");
            assert!(l.get("target").is_none(), "{l}");
        }
    }
    for l in v
        .iter()
        .filter(|l| l["scenario"].as_str().unwrap().starts_with("scale.nop.workers."))
    {
        let n: usize = l["scenario"].as_str().unwrap()["scale.nop.workers.".len()..]
            .parse()
            .unwrap();
        assert_eq!(l["details"]["workers"], n, "{l}");
        assert_eq!(
            l["details"]["sessions_per_worker"],
            serde_json::json!(vec![4; n]),
            "{l}"
        );
        let cmd = l["run"]["engine_command"].as_str().unwrap();
        assert!(cmd.contains("--cores ") && !cmd.contains("--ucx-listen"), "{cmd}");
    }
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
    assert_eq!(wake["idle_target"]["bound"], "< 0.01", "{wake}");
    if go_ran {
        // Both sides loaded the set (weed where there is one); the target is on their ratio.
        let l = by_name("store.open.10m");
        let d = &l["details"];
        assert_eq!(d["needles"], 20000, "{l}");
        assert_eq!(d["engine"]["loaded"]["needles_live"], 20000, "{l}");
        assert!(d["engine"]["seconds_to_serve"].as_f64().is_some_and(|s| s > 0.0), "{l}");
        assert!(d["engine"]["rss_bytes_per_needle"].is_number(), "{l}");
        assert!(
            d["engine_map_bytes_per_needle"].as_f64().is_some_and(|b| b > 0.0),
            "{l}"
        );
        assert_eq!(l["target"]["metric"], "memory_per_needle_engine_over_weed", "{l}");
        if needles_ran {
            assert_eq!(d["weed"]["loaded"]["file_count"], 20000, "{l}");
        }
    }
    // Idle with everything on: both engines of a reader / volume-server pair.
    for tls in ["sm", "tcp"] {
        let l = by_name(&format!("ring.idle.full.{tls}"));
        assert_eq!(l["details"]["first_read_checked"], true, "{l}");
        assert!(l["idle_target"]["met"].is_boolean(), "{l}");
        for role in ["server", "reader"] {
            let e = &l["details"]["idle_engines"][role];
            assert!(
                e["idle_cpu_fraction"].as_f64().is_some_and(|f| (0.0..2.0).contains(&f)),
                "{l}"
            );
            assert!(e["threads"].as_array().is_some_and(|t| !t.is_empty()), "{l}");
        }
        let cmd = l["run"]["engine_command"].as_str().unwrap();
        assert!(
            cmd.contains("--seaweedfs-dir") && cmd.contains("--ucx-listen 127.0.0.1:0"),
            "{cmd}"
        );
    }
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
        assert_eq!(raw["details"]["ends"], "two workers", "{raw}");
        let one = by_name(&format!("ucx.raw_am_rtt_one_worker.{tls}"));
        assert_eq!(one["details"]["ends"], "one worker", "{one}");
        let l = by_name(&format!("ucx.am_rtt.{tls}"));
        assert_eq!(l["ratio_p50_vs"], format!("ucx.raw_am_rtt.{tls}"));
        let vs_one = &l["also_vs"][format!("ucx.raw_am_rtt_one_worker.{tls}")]["ratio_p50"];
        assert!(vs_one.as_f64().is_some_and(|r| r > 0.0), "{l}");
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
        check_front_ends(&|n: &str| names.iter().position(|m| *m == n).map(|i| &v[i]));
    }
    if netns_ran {
        for size in ["4k", "64k", "1m"] {
            let http = by_name(&format!("needle.read.{size}.netns.http"));
            let ring = by_name(&format!("needle.read.{size}.netns"));
            assert_eq!(http["details"]["path"], "http", "{http}");
            assert_eq!(ring["details"]["path"], "ring", "{ring}");
            assert_eq!(ring["ratio_p50_vs"], format!("needle.read.{size}.netns.http"), "{ring}");
            assert!(ring["ratio_bytes_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{ring}");
            assert!(ring.get("target").is_none(), "{ring}");
            for l in [http, ring] {
                assert_eq!(l["details"]["bytes_verified"], true, "{l}");
                // The client side in namespace -b, the volume server in -a, across the veth.
                let (a, b) = (
                    l["details"]["netns_server"].as_str().unwrap(),
                    l["details"]["netns_client"].as_str().unwrap(),
                );
                assert!(
                    a.ends_with("-a") && b.ends_with("-b") && a[..a.len() - 2] == b[..b.len() - 2],
                    "{l}"
                );
                let volume = l["details"]["volume_server"].as_str().unwrap();
                assert!(!volume.starts_with("127."), "{l}");
            }
            // The ring path: the client's engine in -b, READ_NEEDLE over tcp to the engine
            // serving the volume in -a, listening on the veth address (the volume server's).
            let peer = ring["details"]["engine_ucx_address"].as_str().unwrap();
            let volume = ring["details"]["volume_server"].as_str().unwrap();
            assert_eq!(peer.split(':').next(), volume.split(':').next(), "{ring}");
            assert_eq!(ring["details"]["ucx_transports"], "tcp", "{ring}");
            let cmd = ring["run"]["engine_command"].as_str().unwrap();
            let b = ring["details"]["netns_client"].as_str().unwrap();
            assert!(cmd.starts_with(&format!("ip netns exec {b} ")), "{cmd}");
            assert!(ring["details"]["engine_ucx_lanes"].is_string(), "{ring}");
        }
    }
    // The namespace pair was removed at the end of the run: no pair of a bench that is gone.
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        let text = String::from_utf8_lossy(&o.stdout);
        let left = orphan_pairs(&text);
        assert!(left.is_empty(), "bench namespace pairs left behind: {left:?}");
    }
}

/// The namespaces of a bench's pair (`swrb<pid>-a`, `-b`) in `ip netns list` whose bench no
/// longer runs (another bench may be running beside this test).
fn orphan_pairs(list: &str) -> Vec<&str> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            let Some(pid) = n
                .strip_prefix("swrb")
                .and_then(|r| r.strip_suffix("-a").or_else(|| r.strip_suffix("-b")))
            else {
                return false;
            };
            pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists()
        })
        .collect()
}

/// The scenarios reading through a SeaweedFS front end (mount, S3, filer).
fn is_front_end(name: &str) -> bool {
    ["mount.", "s3.", "filer."].iter().any(|p| name.starts_with(p))
}

/// Checks the front-end lines: bytes verified, caches cold, ratios against the stock path.
fn check_front_ends<'a>(by_name: &dyn Fn(&str) -> Option<&'a Value>) {
    for (http, rings) in [
        (
            "mount.randread.4k.http",
            &["mount.randread.4k.ring", "mount.randread.4k.ring.tcp"][..],
        ),
        ("mount.seqread.http", &["mount.seqread.ring"]),
        ("s3.get.4k.http", &["s3.get.4k.ring"]),
        ("s3.get.1m.http", &["s3.get.1m.ring"]),
        ("filer.get.4k.http", &["filer.get.4k.ring"]),
    ] {
        let h = by_name(http).unwrap_or_else(|| panic!("{http} did not run"));
        if http.starts_with("mount.randread.") {
            // The floor: reads served from the mount's chunk cache, as good as no volume GET.
            let c = by_name("mount.cached.4k.http").expect("mount.cached.4k.http ran");
            assert_eq!(c["details"]["fs_resident_before"], 0, "{c}");
            assert!(
                c["details"]["fs_volume_gets_per_read"]
                    .as_f64()
                    .is_some_and(|g| g < 0.5),
                "{c}"
            );
        }
        assert_eq!(h["details"]["path"], "http", "{h}");
        for l in std::iter::once(h).chain(rings.iter().filter_map(|r| by_name(r))) {
            assert_eq!(l["details"]["bytes_verified"], true, "{l}");
            assert!(l["details"]["fs_bytes_verified"].as_u64().is_some_and(|n| n > 0), "{l}");
            if l["scenario"].as_str().unwrap().starts_with("mount.randread.") {
                // No page was in the page cache before its read, and readahead added none.
                assert_eq!(l["details"]["fs_resident_before"], 0, "{l}");
                assert_eq!(l["details"]["fs_resident_extra"], 0, "{l}");
            }
        }
        // Where the bytes came from (the volume server's GET count over the blocks): the
        // stock path GETs from the volume server, the ring path never does.
        assert!(h["details"]["fs_volume_gets"].as_u64().is_some_and(|n| n > 0), "{h}");
        for r in rings.iter().filter_map(|r| by_name(r)) {
            assert_eq!(r["details"]["fs_volume_gets"], 0, "{r}");
            assert_eq!(r["details"]["path"], "ring", "{r}");
            assert_eq!(r["ratio_p50_vs"], http, "{r}");
            assert!(r["details"]["engine_ucx_address"].is_string(), "{r}");
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
        not_run("build the engine first (cargo build -p engine) or set SWRING_ENGINE");
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
        .env_remove("SWRING_REQUIRE_WEED")
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
        not_run("build the engine first (cargo build -p engine) or set SWRING_ENGINE");
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = bench()
        .args(["--scenario", "needle.read.4k.tcp", "--scenario", "ring.nop"])
        .arg("--engine")
        .arg(&engine)
        .env("SWRING_WEED", "/nonexistent/weed")
        .env_remove("SWRING_REQUIRE_WEED")
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
    // In CI (scripts/test sets SWRING_REQUIRE_WEED=1) a missing weed fails the run instead.
    let out = bench()
        .args(["--scenario", "needle.read.4k.tcp", "--scenario", "ring.nop"])
        .arg("--engine")
        .arg(&engine)
        .env("SWRING_WEED", "/nonexistent/weed")
        .env("SWRING_REQUIRE_WEED", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    // (Without Go the weed scenarios are skipped for that reason before weed is looked for.)
    assert!(err.contains("SWRING_REQUIRE_WEED=1") || err.contains("Go"), "{err}");
}

/// `--config FILE`: the cores come from the engine configuration's `workers.cores`, and a bad
/// value is refused naming the key.
#[test]
fn cores_come_from_the_engine_config() {
    if !two_cpus() {
        eprintln!("skipped: the bench needs two CPUs");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed_cpus();
    let (low, high) = (cpus[0], *cpus.last().unwrap());
    let dir = std::env::temp_dir().join(format!("bench-smoke-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("engine.toml");
    // The engine on the lowest allowed CPU: the client goes to the highest one not listed.
    std::fs::write(
        &file,
        format!("[control]\nmax-sessions = 8\n[workers]\ncores = [{low}]\nidle-spin-us = 5\n"),
    )
    .unwrap();
    let out = bench()
        .args(["--scenario", "floor.pingpong", "--engine", "/nonexistent", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let v = lines(&out);
    let m = &v[0]["machine"];
    assert_eq!(
        (m["engine_core"].as_u64(), m["client_core"].as_u64()),
        (Some(low as u64), Some(high as u64)),
        "{m}"
    );
    assert!(m["core_source"].as_str().unwrap().starts_with("--config "), "{m}");
    // Flags still override it.
    let out = bench()
        .args([
            "--scenario",
            "floor.pingpong",
            "--engine",
            "/nonexistent",
            "--engine-core",
        ])
        .arg(high.to_string())
        .arg("--client-core")
        .arg(low.to_string())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let m = &lines(&out)[0]["machine"];
    assert_eq!(
        (m["engine_core"].as_u64(), m["client_core"].as_u64()),
        (Some(high as u64), Some(low as u64)),
        "{m}"
    );
    // A core that is not there: refused with the key, as the engine refuses it.
    std::fs::write(&file, "[workers]\ncores = [4095]\n").unwrap();
    let out = bench()
        .args(["--scenario", "floor.pingpong", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config key workers.cores: core 4095 does not exist"),
        "{err}"
    );
}
