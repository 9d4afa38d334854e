//! Soak: one engine (two workers where the machine allows) serves a SeaweedFS volume
//! directory (written here in SeaweedFS's format, and appended to while the engine serves) and
//! reads it through its own UCX listener. 64 sessions, driven by 8 threads, keep up to
//! `sq_entries + cq_entries` requests in flight each and mix NOP, FILL, SEND to ECHO,
//! READ_NEEDLE (whole and ranged, 0 B to 1 MiB, needles written before and during the run) and
//! invalid requests. The test counts every submission and completion: each `user_data`
//! completes exactly once, with exactly the expected result; every byte the engine put in a
//! buffer is compared with what it must be, and the bytes around each request's range with the
//! poison the test wrote there. At the end `engine status --json` must count exactly what the
//! test counted (per session, per worker, per peer, per error kind), every session is closed,
//! the engine holds the descriptors it held before the soak, and it exits 0 on SIGTERM.
//!
//! It asserts outcomes only, never speed. Knobs (environment):
//! - `SWRING_SOAK_SECONDS`: how long the load runs (default 20; CI keeps the default; longer
//!   runs, e.g. before a release: `SWRING_SOAK_SECONDS=600 cargo test -p integration-tests
//!   --test soak -- --nocapture`).
//!
//! It runs twice, one after the other: over tcp, and over `sm,tcp`, where the lanes the
//! engine logged must show the messages and the one-sided operations over shared memory.
//! - `SWRING_TEST_SEED`: replays the random choices of a run (each run prints its seed, and
//!   again on failure; [`integration_tests::rng`]).
//!
//! The parts, one file each (this directory is one test target, `--test soak`):
//! `volumes.rs` writes the needles, `setup.rs` starts and warms up the engine and opens the
//! sessions, `session.rs` is one session and the threads that drive them, `generator.rs` what
//! a session submits, `checker.rs` how each completion is checked, `verify.rs` what the engine
//! must count and hold afterwards.

mod checker;
mod generator;
mod session;
mod setup;
mod verify;
mod volumes;

use std::time::{Duration, Instant};

use integration_tests::rng::Seed;

use generator::KINDS;
use session::Ctx;
use verify::Baseline;

const SESSIONS: usize = 64;
const THREADS: usize = 8;
/// The writer's stream of the run's seed (sessions draw from streams 1 to [`SESSIONS`]).
const WRITER_STREAM: u64 = 0;

/// One soak at a time: each keeps both cores busy.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn soak_over_tcp_64_sessions_mixing_nop_messaging_and_needles_count_every_completion_and_byte() {
    let transports = soak("tcp");
    assert!(
        !transports.is_empty() && transports.iter().all(|l| l.transport == "tcp" || l.transport == "cm"),
        "{transports:?}"
    );
}

#[test]
fn soak_over_shared_memory_64_sessions_mixing_nop_messaging_and_needles_count_every_completion_and_byte() {
    integration_tests::assert_shared_memory_lanes(&soak("sm,tcp"));
}

/// The soak over UCX transports `tls`; returns the lanes of its peer connection.
fn soak(tls: &str) -> Vec<integration_tests::Lane> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let secs: f64 = std::env::var("SWRING_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    eprintln!("soak: SWRING_SOAK_SECONDS={secs} transports {tls}");
    let seed = Seed::from_env("soak");

    let dir = tempfile::tempdir().unwrap();
    let (vols, mut vnew) = volumes::write_volumes(dir.path());
    let (engine, cores_arg, workers) = setup::start_engine(dir.path(), tls);
    let addr = engine.ucx_listen_addr();
    setup::warm_up(&engine, &addr, &vols, workers);
    let before = Baseline::take(&engine);
    let (soakers, per_worker) = setup::open_sessions(&engine, &addr, SESSIONS, seed.value());

    let ctx = Ctx {
        engine: &engine,
        vols: &vols,
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let writer_rng = seed.stream(WRITER_STREAM);
    let (soakers, new_written) = session::run(&ctx, soakers, THREADS, &mut vnew, writer_rng, deadline);
    let ran = start.elapsed();

    let total = verify::assert_sessions_counted(&engine, &soakers);
    before.assert_counts_changed_by(&engine, &total, SESSIONS);
    before.close_and_assert_released(&engine, soakers);
    let maps_after = engine.map_count();
    let lanes = integration_tests::peer_lanes(&engine.log());
    // The lanes' transports, e.g. "cm+sysv+posix+cma".
    let mut transports: Vec<&str> = lanes.iter().map(|l| l.transport.as_str()).collect();
    transports.dedup();
    let transports = transports.join("+");
    before.assert_no_warnings(&engine);

    let (status, log) = engine.terminate();
    assert!(status.success(), "engine exit {status:?}\n{log}");
    assert!(!log.contains("panicked"), "engine panicked:\n{log}");

    let ops: u64 = total.ops.iter().sum();
    let kinds = KINDS
        .iter()
        .zip(total.ops)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let errors = total
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "soak: {SESSIONS} sessions on {workers} workers (cores {cores_arg}, {per_worker:?} sessions), {tls} ({transports}), {:.1}s: {ops} ops ({kinds}); expected errors: {errors}; {:.1} MiB checked; {} remote requests; {new_written} needles written while serving; engine fds {} before and after, maps {} -> {maps_after}; seed {}",
        ran.as_secs_f64(),
        total.bytes_checked as f64 / (1 << 20) as f64,
        total.remote_sent,
        before.fds,
        before.maps,
        seed.value(),
    );
    lanes
}
