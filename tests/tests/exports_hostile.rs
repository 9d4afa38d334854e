//! Hostile clients against exports and peer registrations (issue 13 items 5-7), written
//! against SPEC.md §2 and §14: guessing export keys, registering peers without end, and an
//! exporter engine killed and restarted between READs. A bystander session checks every
//! completion and byte while each attack runs and after it; the engine's fd count and
//! sessions come back to their baseline, and `engine status` answers throughout.

use std::time::{Duration, Instant};

use integration_tests::spec_client as spec;
use integration_tests::{echo_send, export, nop, rma_sqe, spec_exports, wait, wait_until, Engine, PATIENCE};
use ring_client::{Session, SessionOptions};
use ring_proto::ResultCode;

/// The engine's throttle (engine/src/lookup_throttle.rs, SPEC.md §14).
const BURST: u64 = 32;
const REFILL_PER_SEC: u64 = 8;

/// xorshift64: the attacker's guesses.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(131).wrapping_add(seed as u32 * 7) as u8)
        .collect()
}

fn session(engine: &Engine, buf: u64) -> Session {
    engine
        .try_connect(SessionOptions {
            buf_size: buf,
            sq_entries: 128,
            cq_entries: 256,
            keepalive: false,
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", engine.log()))
}

/// An engine listening for peers on `listen` (tcp on loopback), with `extra` arguments.
fn ucx_engine(listen: &str, extra: &[&str]) -> Engine {
    let mut args = vec![
        "--ucx-listen",
        listen,
        "--ucx-transports",
        "tcp",
        "--ucx-net-devices",
        "lo",
        "--lease-ms",
        "0",
    ];
    args.extend_from_slice(extra);
    Engine::start(&args)
}

fn open_sessions(engine: &Engine) -> u64 {
    engine.status_json()["engine"]["sessions_open"].as_u64().unwrap()
}

fn errors_of_kind(status: &serde_json::Value, session: u32, kind: &str) -> u64 {
    status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session)
        .and_then(|s| s["errors_by_kind"][kind].as_u64())
        .unwrap_or(0)
}

/// The bystander: one READ of its export with every byte checked, then a NOP.
fn bystander_round(b: &mut Session, peer: u32, ticket: (u64, u64), want: &[u8], round: u64) {
    let len = want.len();
    b.buffer().write(len, &vec![0u8; len]).unwrap();
    b.submit(&rma_sqe(false, peer, ticket, 0, len, len, round)).unwrap();
    let c = wait(b);
    assert_eq!(
        (c.user_data, c.result, c.flags),
        (round, len as i32, 0),
        "bystander READ {round}"
    );
    let mut got = vec![0u8; len];
    b.buffer().read(len, &mut got).unwrap();
    assert!(got == want, "bystander READ {round} brought different bytes");
    b.submit(&nop(round | 1 << 40)).unwrap();
    let c = wait(b);
    assert_eq!((c.user_data, c.result), (round | 1 << 40, 0), "bystander NOP {round}");
}

#[test]
fn guessed_export_keys_never_read_and_are_throttled_and_counted() {
    let engine = ucx_engine("127.0.0.1:0", &[]);
    let addr = engine.ucx_listen_addr();
    // The victim: an export of secret bytes. The bystander reads its own export throughout.
    let secret = pattern(4096, 1);
    let mut victim = session(&engine, 1 << 20);
    victim.buffer().write(0, &secret).unwrap();
    let target = export(&mut victim, 0, 4096, 3);
    let mut bystander = session(&engine, 1 << 20);
    let by_data = pattern(8192, 2);
    bystander.buffer().write(0, &by_data).unwrap();
    let by_ticket = export(&mut bystander, 0, by_data.len(), 1);
    let by_peer = bystander.connect_peer(&addr).unwrap();
    bystander_round(&mut bystander, by_peer, by_ticket, &by_data, 1);
    let fds = engine.fd_count();
    let sessions = open_sessions(&engine);

    // The attacker speaks SPEC.md through the independent client, not ring-client.
    let mut attacker = spec::Session::open_with(&engine.socket, 128, 256, 1 << 20).unwrap();
    let attacker_id = attacker.session_id;
    let peer = spec_exports::connect_peer(&attacker, &addr).unwrap();
    // Wrong key for the real id, and a wrong id with the real key: the same answer, which
    // says nothing about whether the id exists.
    for (i, guess) in [(target.0, target.1 ^ 1), (target.0 ^ 1, target.1)]
        .into_iter()
        .enumerate()
    {
        let (_, result, _) = attacker.call(spec_exports::rma(false, i as u64, peer, guess, 0, 0, 64), "guess");
        assert_eq!(result, spec_exports::NOT_EXPORTED, "guess {guess:?}");
    }
    // Many guesses, in flight while the bystander works: READs and WRITEs of random ids and
    // keys, and of the real id with random keys.
    let started = Instant::now();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut not_exported, mut throttled) = (2u64, 0u64);
    let rounds = 40;
    let per_round = 64u64;
    for round in 0..rounds {
        for k in 0..per_round {
            let key = next(&mut rng);
            let id = if k % 2 == 0 { target.0 } else { next(&mut rng) };
            let write = k % 3 == 0;
            let ud = 1000 + round * per_round + k;
            attacker.submit(spec_exports::rma(write, ud, peer, (id, key), 0, 0, 4096));
        }
        bystander_round(&mut bystander, by_peer, by_ticket, &by_data, 2 + round);
        for _ in 0..per_round {
            let c = attacker.reap(Instant::now() + PATIENCE).expect("every guess completes");
            assert_eq!(c.2, 0, "CQE flags");
            match c.1 {
                spec_exports::NOT_EXPORTED => not_exported += 1,
                spec_exports::THROTTLED => throttled += 1,
                _ => panic!("a guessed READ/WRITE completed with {c:?}\n{}", engine.log()),
            }
        }
        if round % 10 == 0 {
            let st = engine.status_json();
            assert_eq!(st["engine"]["sessions_open"].as_u64(), Some(sessions + 1));
        }
    }
    let elapsed = started.elapsed();
    // No guess read anything: the attacker's buffer is as it was (zero), the victim's bytes
    // unchanged (the WRITE guesses wrote nothing).
    let got = attacker.read_buf(0, 4096);
    assert!(
        got.iter().all(|&b| b == 0),
        "a guessed READ wrote into the attacker's buffer"
    );
    let mut got = vec![0u8; 4096];
    victim.buffer().read(0, &mut got).unwrap();
    assert!(got == secret, "a guessed WRITE changed the victim's export");
    // Throttled: at most the burst plus what refilled while the test ran got to the peer.
    let allowed = BURST + REFILL_PER_SEC * (elapsed.as_millis() as u64 / 1000 + 1);
    assert!(
        not_exported <= allowed,
        "{not_exported} guesses reached the exporter in {elapsed:?} (at most {allowed})"
    );
    assert_eq!(not_exported + throttled, 2 + rounds * per_round);
    // Counted: per session by kind, and by the exporter (every not-exported here is one
    // of its failed queries), and logged at most once per session every 10 s.
    let st = engine.status_json();
    assert_eq!(errors_of_kind(&st, attacker_id, "throttled"), throttled, "{st}");
    assert_eq!(errors_of_kind(&st, attacker_id, "not-exported"), not_exported, "{st}");
    assert_eq!(
        st["engine"]["export_queries_failed"].as_u64(),
        Some(not_exported),
        "{st}"
    );
    let lines = engine.log().matches("session throttled").count() as u64;
    assert!(
        (1..=1 + elapsed.as_secs() / 10).contains(&lines),
        "{lines} throttle log lines"
    );
    // The attacker's session goes; everything comes back to the baseline.
    drop(attacker);
    wait_until(
        "attacker session reclaimed",
        || open_sessions(&engine) == sessions && engine.fd_count() == fds,
        || format!("fds {} (baseline {fds})\n{}", engine.fd_count(), engine.log()),
    );
    bystander_round(&mut bystander, by_peer, by_ticket, &by_data, 1 << 20);
}

/// A config file in the engine's test directory-to-be (a fresh temp dir).
fn config_with(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

fn peers_listed(engine: &Engine) -> usize {
    engine.status_json()["peers"].as_array().unwrap().len()
}

#[test]
fn peer_registrations_are_bounded_per_session_and_released_with_it() {
    const MAX: u16 = 8;
    let (_cfg_dir, cfg) = config_with(&format!("[control]\nmax-peers-per-session = {MAX}\n"));
    let engine = ucx_engine("127.0.0.1:0", &["--config", &cfg]);
    let addr = engine.ucx_listen_addr();
    // The bystander: ECHOs through the engine's own listener, every byte checked.
    let mut bystander = session(&engine, 1 << 20);
    let by_peer = bystander.connect_peer(&addr).unwrap();
    let echo_round = |b: &mut Session, round: u64| {
        let msg = pattern(512, round as u8);
        b.buffer().write(0, &msg).unwrap();
        b.buffer().write(4096, &[0u8; 512]).unwrap();
        b.submit(&echo_send(by_peer, round, 0, 512, 4096, 512)).unwrap();
        let c = wait(b);
        assert_eq!((c.user_data, c.result), (round, 512), "bystander ECHO {round}");
        let mut got = vec![0u8; 512];
        b.buffer().read(4096, &mut got).unwrap();
        assert!(got == msg, "bystander ECHO {round} brought different bytes");
    };
    echo_round(&mut bystander, 1);
    let fds = engine.fd_count();
    let sessions = open_sessions(&engine);
    assert_eq!(peers_listed(&engine), 1);

    for attempt in 0..20u64 {
        // The attacker speaks SPEC.md through the independent client.
        let mut attacker = spec::Session::open_with(&engine.socket, 8, 16, 1 << 16).unwrap();
        // The bystander's own address is shared, not counted twice for it.
        assert_eq!(spec_exports::connect_peer(&attacker, &addr), Ok(by_peer));
        let mut handles = vec![by_peer];
        for i in 1..MAX {
            let a = format!("127.0.0.{}:{}", 2 + attempt % 200, 1000 + i);
            handles.push(spec_exports::connect_peer(&attacker, &a).unwrap());
        }
        // Past the bound: refused with TooManyPeers, the session goes on.
        for i in 0..5u16 {
            match spec_exports::connect_peer(&attacker, &format!("127.0.1.1:{}", 2000 + i)) {
                Err((code, message)) => {
                    assert_eq!(code, spec_exports::TOO_MANY_PEERS, "{message}");
                    assert!(message.contains("control.max-peers-per-session"), "{message}");
                }
                other => panic!("registration past the bound: {other:?}"),
            }
        }
        // Registering one of its own again is free and gives the same handle.
        let again = format!("127.0.0.{}:1001", 2 + attempt % 200);
        assert_eq!(spec_exports::connect_peer(&attacker, &again), Ok(handles[1]));
        assert_eq!(attacker.call(spec::Session::nop(7), "NOP").1, 0);
        // A SEND (§4/§13 words) to a registered address nobody listens on: the worker
        // connects and fails, or is still trying when the session ends; the completion comes.
        let send = [3 | (handles[2] as u64) << 32, 8, 0, 16 | 1 << 32, 4096, 16, 0, 0];
        let (ud, result, _) = attacker.call(send, "SEND to a dead address");
        assert_eq!(ud, 8);
        assert!(result == 16 || result < 0, "SEND result {result}");
        assert_eq!(peers_listed(&engine), MAX as usize);
        echo_round(&mut bystander, 2 + attempt);
        drop(attacker);
        wait_until(
            "the attacker's registrations released",
            || peers_listed(&engine) == 1 && open_sessions(&engine) == sessions,
            || engine.status_json().to_string(),
        );
    }
    // The bystander's handle survived every attacker (it holds its own registration).
    echo_round(&mut bystander, 1000);
    wait_until(
        "fds back to baseline",
        || engine.fd_count() == fds,
        || format!("fds {} (baseline {fds})", engine.fd_count()),
    );
    // `engine status` lists only the registrations sessions hold now.
    assert_eq!(peers_listed(&engine), 1);
}

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range, so that no other socket
/// takes it while the exporter is down.
fn free_addr() -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32768);
    let start = 21000u16.min(low.saturating_sub(3000)).max(1024);
    let seed = std::process::id() as u16;
    for i in 0..1000u16 {
        let port = start + (seed.wrapping_add(i * 11)) % (low - start).max(1);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port below {low}");
}

/// Starts the exporter on `listen` again; the port may stay busy a moment after a kill.
fn restart_on(listen: &str) -> Engine {
    let args = [
        "--ucx-listen",
        listen,
        "--ucx-transports",
        "tcp",
        "--ucx-net-devices",
        "lo",
        "--lease-ms",
        "0",
    ];
    for _ in 0..150 {
        match Engine::try_start(&args) {
            Ok(e) => return e,
            Err((status, log)) => {
                assert!(log.contains("cannot listen there"), "engine failed ({status}):\n{log}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    panic!("{listen} never came free");
}

#[test]
fn restarted_exporter_never_serves_an_old_export_and_new_exports_work() {
    let exporter_addr = free_addr();
    let mut exporter = ucx_engine(&exporter_addr, &[]);
    let reader_engine = ucx_engine("127.0.0.1:0", &[]);
    let reader_addr = reader_engine.ucx_listen_addr();
    let size = 64 << 10;
    // The bystander on the reader's engine: ECHOs through its own listener, every byte.
    let mut bystander = session(&reader_engine, 1 << 20);
    let by_peer = bystander.connect_peer(&reader_addr).unwrap();
    let echo = |b: &mut Session, round: u64| {
        let msg = pattern(256, round as u8);
        b.buffer().write(0, &msg).unwrap();
        b.submit(&echo_send(by_peer, round, 0, 256, 4096, 256)).unwrap();
        let c = wait(b);
        assert_eq!((c.user_data, c.result), (round, 256), "bystander ECHO {round}");
        let mut got = vec![0u8; 256];
        b.buffer().read(4096, &mut got).unwrap();
        assert!(got == msg, "bystander ECHO {round}");
    };
    echo(&mut bystander, 1);
    let reader_fds = reader_engine.fd_count();
    let mut r = session(&reader_engine, 1 << 20);
    let peer = r.connect_peer(&exporter_addr).unwrap();

    let mut old_tickets = Vec::new();
    for generation in 0..3u8 {
        // The exporter process of this generation exports its own bytes, at the same place
        // of the same-sized session as the one before (a restarted process reuses addresses).
        let data = pattern(size, 10 + generation);
        let mut xs = session(&exporter, 1 << 20);
        xs.buffer().write(0, &data).unwrap();
        let ticket = export(&mut xs, 0, size, 3);
        assert!(
            !old_tickets.contains(&ticket),
            "an export id and key repeated across restarts"
        );
        // The new export reads back exactly (a fresh connection to the new process).
        let mut result = 0;
        for attempt in 0..50u64 {
            r.buffer().write(0, &vec![0u8; size]).unwrap();
            r.submit(&rma_sqe(false, peer, ticket, 0, 0, size, attempt)).unwrap();
            let c = wait(&mut r);
            result = c.result;
            if result == size as i32 {
                break;
            }
            // The first request after a restart may find the old connection dead.
            assert!(
                result == ResultCode::PeerFailed as i32 || result == ResultCode::TimedOut as i32,
                "READ of a new export: {c:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(result, size as i32, "{}\n{}", reader_engine.log(), exporter.log());
        let mut got = vec![0u8; size];
        r.buffer().read(0, &mut got).unwrap();
        assert!(got == data, "generation {generation}: READ brought different bytes");
        // Every (id, key) of an earlier process neither reads nor writes this one's memory.
        for (i, &old) in old_tickets.iter().enumerate() {
            for write in [false, true] {
                r.buffer().write(0, &vec![0x5au8; size]).unwrap();
                r.submit(&rma_sqe(write, peer, old, 0, 0, size, 100 + i as u64))
                    .unwrap();
                let c = wait(&mut r);
                assert_eq!(c.result, ResultCode::NotExported as i32, "old ticket {old:?}: {c:?}");
                let mut got = vec![0u8; size];
                r.buffer().read(0, &mut got).unwrap();
                assert!(got.iter().all(|&b| b == 0x5a), "an old ticket's READ wrote bytes");
                xs.buffer().read(0, &mut got).unwrap();
                assert!(got == data, "an old ticket's WRITE changed the new process's memory");
            }
        }
        echo(&mut bystander, 10 + generation as u64);
        old_tickets.push(ticket);
        // Kill the exporter (no goodbye to peers) and bring it back on the same address.
        drop(xs);
        let _ = exporter.kill();
        echo(&mut bystander, 20 + generation as u64);
        exporter = restart_on(&exporter_addr);
        assert_eq!(exporter.status_json()["engine"]["exports"], 0);
    }
    // The reader engine let go of the dead connections: fds back to the baseline, status
    // answering, the bystander exact.
    drop(r);
    echo(&mut bystander, 99);
    wait_until(
        "reader engine fds back to baseline",
        || reader_engine.fd_count() == reader_fds,
        || format!("fds {} (baseline {reader_fds})", reader_engine.fd_count()),
    );
}
