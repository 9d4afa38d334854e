//! Remote requests between engines over UCX (loopback tcp and shared memory): one engine
//! serving its own listener, and two engine processes.

use std::collections::HashMap;
use std::time::Duration;

use integration_tests::{
    assert_shared_memory_lanes, echo_send, export, peer_lanes, rma_sqe, wait_until, Engine, PATIENCE,
};
use ring_client::{Session, SessionOptions, WaitError};
use ring_proto::{opcode, ResultCode, Sqe};

/// Engine flags for a UCX listener on loopback with the given transports.
fn ucx_args(tls: &'static str) -> Vec<&'static str> {
    vec![
        "--ucx-listen",
        "127.0.0.1:0",
        "--ucx-transports",
        tls,
        "--ucx-net-devices",
        "lo,memory",
        "--lease-ms",
        "0",
        "--spin-forever",
    ]
}

/// The engine's log line naming the transports of its first peer connection.
fn transports_line(engine: &Engine) -> String {
    engine.wait_for_log("peer connection transports");
    let log = engine.log();
    log.lines()
        .find(|l| l.contains("peer connection transports"))
        .unwrap()
        .to_string()
}

/// `engine status --json` of a running engine.
fn status_json(engine: &Engine) -> serde_json::Value {
    let out = std::process::Command::new(integration_tests::engine_binary())
        .args(["status", "--json", "--socket"])
        .arg(&engine.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range.
fn free_port_below_ephemeral_range() -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32768);
    let start = 20000u16.min(low.saturating_sub(2000)).max(1024);
    let seed = std::process::id() as u16;
    for i in 0..1000u16 {
        let port = start + (seed.wrapping_add(i * 7)) % (low - start).max(1);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port below {low}");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}

fn big_session(engine: &Engine, buf: u64) -> Session {
    engine
        .try_connect(SessionOptions {
            buf_size: buf,
            cq_entries: 256,
            sq_entries: 128,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", engine.log()))
}

/// Echo of every size the issue names, each byte checked, through `requester` to `server`.
fn echo_sizes(requester: &Engine, server_addr: &str) {
    let max = 64 << 20;
    let mut s = big_session(requester, 2 * max as u64 + 4096);
    let peer = s.connect_peer(server_addr).unwrap();
    for (i, len) in [0usize, 8, 4096, 1 << 20, max].into_iter().enumerate() {
        let data = pattern(len, i as u8);
        s.buffer().write(0, &data).unwrap();
        let resp_off = max;
        s.buffer().write(resp_off, &vec![0xee; len]).unwrap();
        s.submit(&echo_send(peer, i as u64, 0, len, resp_off, len)).unwrap();
        let c = s
            .wait_cqe(Duration::from_micros(50), Some(PATIENCE))
            .unwrap_or_else(|e| panic!("{e}\n{}", requester.log()));
        assert_eq!(
            (c.user_data, c.result),
            (i as u64, len as i32),
            "echo of {len} bytes\n{}",
            requester.log()
        );
        let mut back = vec![0u8; len];
        s.buffer().read(resp_off, &mut back).unwrap();
        assert!(back == data, "echo of {len} bytes came back different");
    }
}

#[test]
fn engine_echoes_through_its_own_listener_over_tcp() {
    let engine = Engine::start(&ucx_args("tcp"));
    let addr = engine.ucx_listen_addr();
    echo_sizes(&engine, &addr);
    let line = transports_line(&engine);
    assert!(line.contains("tcp"), "{line}");
}

#[test]
fn engine_echoes_through_its_own_listener_over_shared_memory() {
    let engine = Engine::start(&ucx_args("sm,tcp"));
    let addr = engine.ucx_listen_addr();
    echo_sizes(&engine, &addr);
    // The data really moved over shared memory (UCX falls back to tcp silently otherwise).
    let line = transports_line(&engine);
    eprintln!("{line}");
    assert!(
        ["posix", "sysv", "cma", "xpmem", "knem"]
            .iter()
            .any(|t| line.contains(t)),
        "no shared-memory lane: {line}"
    );
}

#[test]
fn two_engine_processes_over_tcp_with_many_requests_in_flight() {
    let server = Engine::start(&ucx_args("tcp"));
    let client_engine = Engine::start(&["--ucx-transports", "tcp", "--ucx-net-devices", "lo", "--lease-ms", "0"]);
    let addr = server.ucx_listen_addr();
    echo_sizes(&client_engine, &addr);

    let mut s = big_session(&client_engine, 1 << 20);
    let peer = s.connect_peer(&addr).unwrap();
    // 100 requests of 4 KiB in flight at once, each with its own payload and response slot.
    let n = 100usize;
    let slot = 4096;
    for i in 0..n {
        s.buffer().write(i * slot, &pattern(slot / 2, i as u8)).unwrap();
    }
    {
        let mut q = s.submission();
        for i in 0..n {
            q.push(&echo_send(
                peer,
                i as u64,
                i * slot,
                slot / 2,
                i * slot + slot / 2,
                slot / 2,
            ))
            .unwrap();
        }
    }
    let mut seen = HashMap::new();
    for _ in 0..n {
        let c = s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap();
        assert_eq!(c.result, (slot / 2) as i32, "request {}", c.user_data);
        assert!(seen.insert(c.user_data, ()).is_none(), "duplicate completion");
    }
    for i in 0..n {
        let mut back = vec![0u8; slot / 2];
        s.buffer().read(i * slot + slot / 2, &mut back).unwrap();
        assert!(back == pattern(slot / 2, i as u8), "response {i} differs");
    }
}

#[test]
fn remote_errors_are_completions_not_hangs() {
    let engine = Engine::start(&ucx_args("tcp"));
    let addr = engine.ucx_listen_addr();
    let mut s = engine.connect();
    let peer = s.connect_peer(&addr).unwrap();
    let len = s.buffer().len();
    let cases = [
        (
            Sqe {
                peer: 99,
                ..echo_send(peer, 1, 0, 8, 64, 8)
            },
            ResultCode::NoSuchPeer,
        ),
        (
            Sqe {
                aux: 77,
                ..echo_send(peer, 2, 0, 8, 64, 8)
            },
            ResultCode::UnknownService,
        ),
        (echo_send(peer, 3, 0, 64, 4096, 8), ResultCode::ResponseTooLarge),
        (echo_send(peer, 4, len - 4, 8, 0, 8), ResultCode::OutOfBounds),
        (echo_send(peer, 5, 0, 8, len - 4, 8), ResultCode::OutOfBounds),
        (
            Sqe {
                args: [0, 8, 1, 0],
                ..echo_send(peer, 6, 0, 8, 0, 8)
            },
            ResultCode::InvalidEntry,
        ),
    ];
    for (sqe, code) in cases {
        s.submit(&sqe).unwrap();
        let c = s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap();
        assert_eq!((c.user_data, c.result), (sqe.user_data, code as i32), "{sqe:?}");
    }
    // Nobody listens at this port: the request fails with peer-failed, it does not hang.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let gone = s.connect_peer(&dead_addr).unwrap();
    s.submit(&echo_send(gone, 7, 0, 8, 64, 8)).unwrap();
    let c = s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap();
    assert_eq!((c.user_data, c.result), (7, ResultCode::PeerFailed as i32));
    assert!(s.connect_peer("not an address").is_err());

    // The operator sees both peers and exactly the requests that went to each.
    let status = status_json(&engine);
    let peers = status["peers"].as_array().expect("peers in status");
    assert_eq!(peers.len(), 2, "{status}");
    assert_eq!(peers[0]["address"], addr.as_str());
    // Sent to peer 1: the unknown-service and the too-large request; the others failed
    // validation in the engine before anything was sent.
    assert_eq!(peers[0]["requests"], 2, "{status}");
    assert_eq!(peers[0]["failures"], 0);
    assert_eq!(peers[1]["address"], dead_addr.as_str());
    assert_eq!(peers[1]["requests"], 1);
    assert_eq!(peers[1]["failures"], 1);
    assert!(peers[1]["connection_failures"].as_u64().unwrap() >= 1, "{status}");
    // Only successful requests are timed: none here.
    let timed: u64 = peers[0]["latency"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(timed + peers[0]["latency"]["overflow"].as_u64().unwrap(), 0);
}

#[test]
fn peer_killed_mid_transfer_fails_its_requests_and_reconnects_after_restart() {
    // A fixed port below the ephemeral range, so that no other socket on this machine can
    // take it while the peer is down and the restarted peer finds it again.
    let listen = free_port_below_ephemeral_range();
    let server_args = [
        "--ucx-listen",
        listen.as_str(),
        "--ucx-transports",
        "tcp",
        "--ucx-net-devices",
        "lo",
        "--lease-ms",
        "0",
    ];
    let server = Engine::start(&server_args);
    let client_engine = Engine::start(&["--ucx-transports", "tcp", "--ucx-net-devices", "lo", "--lease-ms", "0"]);
    let addr = server.ucx_listen_addr();
    assert_eq!(addr, listen);
    let mut s = big_session(&client_engine, 64 << 20);
    let peer = s.connect_peer(&addr).unwrap();
    s.submit(&echo_send(peer, 0, 0, 8, 64, 8)).unwrap();
    assert_eq!(s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap().result, 8);
    // Large transfers in flight, then the peer dies.
    {
        let mut q = s.submission();
        for i in 0..8u64 {
            q.push(&echo_send(peer, 100 + i, 0, 4 << 20, 32 << 20, 4 << 20))
                .unwrap();
        }
    }
    let _ = server.kill();
    let mut results = Vec::new();
    for _ in 0..8 {
        match s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)) {
            Ok(c) => results.push(c.result),
            Err(WaitError::Timeout) => panic!("a request hung after its peer died\n{}", client_engine.log()),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        results
            .iter()
            .all(|&r| r == 4 << 20 || r == ResultCode::PeerFailed as i32),
        "each request either finished before the kill or failed with peer-failed: {results:?}"
    );
    // The session and the engine keep working for local requests.
    s.submit(&Sqe {
        opcode: opcode::NOP,
        user_data: 9,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap().user_data,
        9
    );
    // A new server engine on the same port: the next request reconnects. The port may stay
    // busy for a moment after the kill (connections closing).
    let mut server2 = None;
    for _ in 0..100 {
        match Engine::try_start(&server_args) {
            Ok(e) => {
                server2 = Some(e);
                break;
            }
            Err((status, log)) => {
                assert!(
                    log.contains("cannot listen there"),
                    "engine failed for another reason ({status}):\n{log}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let server2 = server2.unwrap_or_else(|| panic!("port never came free\n{}", client_engine.log()));
    server2.ucx_listen_addr();
    let mut ok = false;
    for attempt in 0..50u64 {
        s.submit(&echo_send(peer, 1000 + attempt, 0, 8, 64, 8)).unwrap();
        let c = s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap();
        if c.result == 8 {
            ok = true;
            break;
        }
        // The old connection found dead, or (a loaded machine) the request's 10 s deadline
        // passed first.
        assert!(
            c.result == ResultCode::PeerFailed as i32 || c.result == ResultCode::TimedOut as i32,
            "echo to the restarted peer: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "no reconnect to the restarted peer\n{}", client_engine.log());
    wait_until(
        "log of the reconnect",
        || client_engine.log().matches("connecting to peer engine").count() >= 2,
        || client_engine.log(),
    );
}

#[test]
fn sessions_with_registered_regions_come_and_go_without_leaks() {
    // Debug logging shows each registration, so the test knows they happened.
    let engine = Engine::start_with_env(&ucx_args("tcp"), &[("RUST_LOG", Some("info,engine::dataplane=debug"))]);
    let addr = engine.ucx_listen_addr();
    let round = |i: u64| {
        let mut s = engine.connect();
        let peer = s.connect_peer(&addr).unwrap();
        s.buffer().write(0, &i.to_le_bytes()).unwrap();
        s.submit(&echo_send(peer, i, 0, 8, 64, 8)).unwrap();
        let c = s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap();
        assert_eq!((c.user_data, c.result), (i, 8));
        let mut back = [0u8; 8];
        s.buffer().read(64, &mut back).unwrap();
        assert_eq!(u64::from_le_bytes(back), i);
        if i.is_multiple_of(2) {
            s.close().unwrap();
        }
    };
    // Warm-up: the UCX worker, context and connections are created once and stay (the
    // keeper's registration of the address keeps them: they end with the last one).
    let mut keeper = engine.connect();
    keeper.connect_peer(&addr).unwrap();
    round(0);
    engine.wait_live_sessions(1);
    let (fds, maps) = (engine.fd_count(), engine.map_count());
    wait_until(
        "the warm-up session's registration released",
        || status_json(&engine)["engine"]["ucx_registrations"] == 0,
        || status_json(&engine).to_string(),
    );
    for i in 1..=100 {
        round(i);
    }
    engine.wait_live_sessions(1);
    wait_until(
        "fds and mappings back to their level after 100 registered sessions",
        || engine.fd_count() == fds && engine.map_count() == maps,
        || {
            format!(
                "fds {} (before {fds}), maps {} (before {maps})\n{}",
                engine.fd_count(),
                engine.map_count(),
                engine.log()
            )
        },
    );
    assert_eq!(
        engine.log().matches("session region registered with UCX").count(),
        101,
        "one registration per session"
    );
    let status = status_json(&engine);
    let l = &status["peers"][0]["latency"];
    let timed: u64 = l["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum::<u64>()
        + l["overflow"].as_u64().unwrap();
    assert_eq!(
        timed, 101,
        "every successful request is in the latency histogram: {status}"
    );
    assert!(l["sum_ns"].as_u64().unwrap() > 0);
}

#[allow(clippy::too_many_arguments)] // a test driver: each argument is one knob of the scenario
fn rma(
    logs: &dyn Fn() -> String,
    s: &mut Session,
    write: bool,
    peer: u32,
    export: (u64, u64),
    remote_off: u64,
    local_off: usize,
    len: usize,
) -> i32 {
    s.submit(&rma_sqe(write, peer, export, remote_off, local_off, len, 88))
        .unwrap();
    let c = s
        .wait_cqe(Duration::from_micros(50), Some(PATIENCE))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(c.user_data, 88);
    c.result
}

/// READ and WRITE of exported memory, every byte checked, with bounds, keys, permissions and
/// revocation enforced.
fn read_write_exports(reader_engine: &Engine, exporter_engine: &Engine, exporter_addr: &str) {
    let mut exporter = big_session(exporter_engine, 4 << 20);
    let mut reader = big_session(reader_engine, 4 << 20);
    let peer = reader.connect_peer(exporter_addr).unwrap();
    let size = 1 << 20;
    let data = pattern(size, 9);
    exporter.buffer().write(4096, &data).unwrap();
    let rw = export(&mut exporter, 4096, size, 3);
    let ro = export(&mut exporter, 4096, 4096, 1);
    let logs = || {
        format!(
            "reader engine:\n{}\nexporter engine:\n{}",
            reader_engine.log(),
            exporter_engine.log()
        )
    };
    // READ the whole export.
    assert_eq!(rma(&logs, &mut reader, false, peer, rw, 0, 0, size), size as i32);
    let mut got = vec![0u8; size];
    reader.buffer().read(0, &mut got).unwrap();
    assert!(got == data, "READ brought different bytes");
    // WRITE into the middle of it; the exporter's client sees exactly those bytes change.
    let w = pattern(1000, 3);
    reader.buffer().write(2 << 20, &w).unwrap();
    assert_eq!(rma(&logs, &mut reader, true, peer, rw, 100, 2 << 20, 1000), 1000);
    let mut after = vec![0u8; size];
    exporter.buffer().read(4096, &mut after).unwrap();
    assert!(after[100..1100] == w[..], "WRITE landed wrong");
    assert!(
        after[..100] == data[..100] && after[1100..] == data[1100..],
        "WRITE touched bytes outside its range"
    );
    // Bounds, keys and permissions.
    assert_eq!(
        rma(&logs, &mut reader, false, peer, rw, size as u64 - 10, 0, 20),
        ResultCode::OutOfBounds as i32
    );
    assert_eq!(
        rma(&logs, &mut reader, false, peer, rw, u64::MAX - 5, 0, 20),
        ResultCode::OutOfBounds as i32
    );
    assert_eq!(
        rma(&logs, &mut reader, false, peer, (rw.0, rw.1 ^ 1), 0, 0, 8),
        ResultCode::NotExported as i32
    );
    assert_eq!(
        rma(&logs, &mut reader, false, peer, (9999, rw.1), 0, 0, 8),
        ResultCode::NotExported as i32
    );
    assert_eq!(
        rma(&logs, &mut reader, true, peer, ro, 0, 0, 8),
        ResultCode::PermissionDenied as i32
    );
    assert_eq!(rma(&logs, &mut reader, false, peer, ro, 0, 0, 4096), 4096);
    // UNEXPORT: once the revocation reached the reader, the export is gone for good.
    exporter
        .submit(&Sqe {
            opcode: opcode::UNEXPORT,
            user_data: 5,
            args: [rw.0, 0, 0, 0],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        exporter
            .wait_cqe(Duration::from_micros(50), Some(PATIENCE))
            .unwrap()
            .result,
        0
    );
    let mut result = 0;
    for _ in 0..1000 {
        result = rma(&logs, &mut reader, false, peer, rw, 0, 0, 8);
        if result == ResultCode::NotExported as i32 {
            break;
        }
        assert_eq!(result, 8);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        result,
        ResultCode::NotExported as i32,
        "export still readable after UNEXPORT"
    );
    // The exporter's session ending revokes its other exports too.
    drop(exporter);
    let mut result = 0;
    for _ in 0..1000 {
        result = rma(&logs, &mut reader, false, peer, ro, 0, 0, 8);
        if result == ResultCode::NotExported as i32 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        result,
        ResultCode::NotExported as i32,
        "export of a closed session still readable"
    );
}

#[test]
fn read_and_write_exports_through_own_listener_over_tcp() {
    let engine = Engine::start(&ucx_args("tcp"));
    let addr = engine.ucx_listen_addr();
    read_write_exports(&engine, &engine, &addr);
    // Every export was revoked and acknowledged: the table is empty, the memory released.
    wait_until(
        "exports released",
        || status_json(&engine)["engine"]["exports"] == 0,
        || status_json(&engine).to_string(),
    );
}

#[test]
fn read_and_write_exports_through_own_listener_over_shared_memory() {
    let engine = Engine::start(&ucx_args("sm,tcp"));
    let addr = engine.ucx_listen_addr();
    read_write_exports(&engine, &engine, &addr);
    // The messages and the gets/puts went over shared memory, not the tcp also allowed.
    engine.wait_for_log("peer connection transports");
    assert_shared_memory_lanes(&peer_lanes(&engine.log()));
}

#[test]
fn read_and_write_exports_between_two_engine_processes() {
    let exporter = Engine::start(&ucx_args("tcp"));
    let reader = Engine::start(&["--ucx-transports", "tcp", "--ucx-net-devices", "lo", "--lease-ms", "0"]);
    let addr = exporter.ucx_listen_addr();
    read_write_exports(&reader, &exporter, &addr);
    wait_until(
        "exports released",
        || status_json(&exporter)["engine"]["exports"] == 0,
        || status_json(&exporter).to_string(),
    );
    // A reader engine that dies does not pin the exporter's memory: its connection going
    // away counts as its acknowledgement.
    let mut s = big_session(&exporter, 1 << 20);
    let e = export(&mut s, 0, 4096, 1);
    let mut r = big_session(&reader, 1 << 20);
    let peer = r.connect_peer(&addr).unwrap();
    let logs = || String::new();
    assert_eq!(rma(&logs, &mut r, false, peer, e, 0, 0, 4096), 4096);
    drop(r);
    let _ = reader.kill();
    drop(s);
    wait_until(
        "exports released after the reader died",
        || status_json(&exporter)["engine"]["exports"] == 0,
        || status_json(&exporter).to_string(),
    );
}

#[test]
fn a_peer_that_never_answers_times_out() {
    // A TCP listener that accepts connections and never says a word: UCX's connection set-up
    // to it stalls, so only the engine's request timeout can end the request.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = black_hole.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        black_hole.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < until {
            if let Ok((c, _)) = black_hole.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
            if conns.len() > 4 {
                break;
            }
        }
        conns
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("engine.toml");
    std::fs::write(
        &cfg,
        "[ucx]\ntransports = \"tcp\"\nnet-devices = \"lo\"\nrequest-timeout-ms = 300\n",
    )
    .unwrap();
    let engine = Engine::start(&["--config", cfg.to_str().unwrap(), "--lease-ms", "0"]);
    let mut s = engine.connect();
    let peer = s.connect_peer(&addr).unwrap();
    s.submit(&echo_send(peer, 1, 0, 8, 64, 8)).unwrap();
    let c = s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap();
    assert_eq!(
        (c.user_data, c.result),
        (1, ResultCode::TimedOut as i32),
        "{}",
        engine.log()
    );
    assert_eq!(status_json(&engine)["peers"][0]["timeouts"], 1);
    drop(held);
}

#[test]
fn two_engine_processes_over_shared_memory() {
    let server = Engine::start(&ucx_args("sm,tcp"));
    let client_engine = Engine::start(&[
        "--ucx-transports",
        "sm,tcp",
        "--ucx-net-devices",
        "lo",
        "--lease-ms",
        "0",
    ]);
    let addr = server.ucx_listen_addr();
    echo_sizes(&client_engine, &addr);
    let line = transports_line(&client_engine);
    assert!(
        ["posix", "sysv", "cma", "xpmem", "knem"]
            .iter()
            .any(|t| line.contains(t)),
        "no shared-memory lane: {line}"
    );
    read_write_exports(&client_engine, &server, &addr);
}
