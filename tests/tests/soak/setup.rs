//! Before the load: the engine (one worker per core, serving the volumes, with a UCX listener
//! on loopback), warmed up on every worker, and the soak's sessions.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use integration_tests::{echo_send, wait_until, Engine, PATIENCE};
use ring_client::{Session, SessionOptions};
use ring_proto::{opcode, Sqe};

use crate::session::{payload_pool, Soaker, BUF, CQ_ENTRIES, SQ_ENTRIES};
use crate::verify::u;
use crate::volumes::Volumes;

/// The cores for the engine's workers: the last two this process may run on (one if only one).
fn worker_cores() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    allowed[allowed.len().saturating_sub(2)..].to_vec()
}

/// The engine serving `dir` over UCX transports `tls`, one worker per core of
/// [`worker_cores`]; returns it with its cores (`--cores`) and its number of workers.
pub fn start_engine(dir: &Path, tls: &str) -> (Engine, String, usize) {
    let cores = worker_cores();
    let cores_arg = cores.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let devices = if tls.contains("sm") { "lo,memory" } else { "lo" };
    let engine = Engine::start(&[
        "--cores",
        &cores_arg,
        "--seaweedfs-dir",
        dir.to_str().unwrap(),
        "--ucx-listen",
        "127.0.0.1:0",
        "--ucx-transports",
        tls,
        "--ucx-net-devices",
        devices,
        // Needles through UCX under load, not the engine's shortcut for reads naming itself
        // (needles.rs and cold_needles.rs cover that one).
        "--ucx-local-reads",
        "false",
    ]);
    let workers = engine.status_json()["workers"].as_array().unwrap().len();
    assert_eq!(workers, cores.len(), "one worker per core");
    (engine, cores_arg, workers)
}

fn connect(engine: &Engine, buf: usize) -> Session {
    engine
        .try_connect(SessionOptions {
            sq_entries: SQ_ENTRIES,
            cq_entries: CQ_ENTRIES,
            buf_size: buf as u64,
            keepalive: true,
        })
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", engine.log()))
}

/// Warm-up on every worker: the UCX context, each worker's connection to the listener and
/// the listener's side of it are created once and stay; the baseline is taken after this.
pub fn warm_up(engine: &Engine, addr: &str, vols: &Volumes, workers: usize) {
    let mut sessions: Vec<Session> = Vec::new();
    while sessions.iter().map(|s| s.worker()).collect::<HashSet<_>>().len() < workers {
        assert!(sessions.len() < 4 * workers, "new sessions never reached every worker");
        sessions.push(connect(engine, 2 << 20));
    }
    let n = vols.small.iter().max_by_key(|n| n.data.len()).unwrap();
    for s in &mut sessions {
        let peer = s.connect_peer(addr).unwrap();
        s.buffer().write(0, &payload_pool()[..100_000]).unwrap();
        s.submit(&echo_send(peer, 1, 0, 100_000, 1 << 20, 100_000)).unwrap();
        s.submit(&Sqe {
            opcode: opcode::READ_NEEDLE,
            peer,
            user_data: 2,
            buf_offset: 0,
            buf_len: (2 << 20) - 4096,
            aux: n.vid,
            args: [n.id, n.cookie as u64, 0, 0],
            ..Default::default()
        })
        .unwrap();
        let mut results: Vec<(u64, i32)> = (0..2)
            .map(|_| {
                let c = s
                    .wait_cqe(Duration::from_micros(50), Some(PATIENCE))
                    .unwrap_or_else(|e| panic!("warm-up: {e}\n{}", engine.log()));
                (c.user_data, c.result)
            })
            .collect();
        results.sort();
        assert_eq!(
            results,
            [(1, 100_000), (2, n.data.len() as i32)],
            "warm-up\n{}",
            engine.log()
        );
    }
    for s in sessions {
        assert!(s.close().unwrap().is_empty());
    }
    engine.wait_live_sessions(0);
    wait_until(
        "warm-up sessions' registrations released",
        || engine.status_json()["engine"]["ucx_registrations"] == 0,
        || engine.status_json().to_string(),
    );
}

/// `count` sessions, each registering the engine's own listener `addr` as its peer (the
/// registry hands out one handle per address, so they share it); they must be spread over
/// every worker. Returns them and the sessions per worker.
pub fn open_sessions(engine: &Engine, addr: &str, count: usize, seed: u64) -> (Vec<Soaker>, Vec<u64>) {
    let soakers: Vec<Soaker> = (0..count)
        .map(|i| {
            let mut s = connect(engine, BUF);
            let peer = s.connect_peer(addr).unwrap();
            Soaker::new(i, s, peer, seed)
        })
        .collect();
    let status = engine.status_json();
    assert_eq!(u(&status["engine"]["sessions_open"]), count as u64, "{status}");
    let per_worker: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| u(&w["sessions"]))
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "sessions are spread over every worker: {per_worker:?}"
    );
    (soakers, per_worker)
}
