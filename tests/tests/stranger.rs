//! A stranger on the network cannot stop the engine (issue 13, item 9).
//!
//! Every TCP port the engine process listens on, found from /proc (its socket inodes matched
//! against /proc/net/tcp{,6}: the UCX listener, UCX's tcp transport ports, the metrics
//! endpoint), gets 1,000 connections carrying bytes a port scanner or an attacker would send:
//! plain random bytes, a UCX connection-manager header whose length disagrees with what
//! follows (what aborted Debian's UCX 1.13.1: `tcp_sockcm_ep.c` "Assertion
//! `cep->comm_ctx.offset <= cep->comm_ctx.length' failed"), UCX's tcp magic number followed
//! by garbage, and connections closed at once. Meanwhile a bystander reads needles through
//! that engine's own UCX listener and checks every byte; afterwards the engine answers
//! `engine status` and the bystander still reads exactly.
//!
//! To see it fail on a runtime that aborts, load Debian's libucx0 instead of the installed
//! one (the binaries' rpath wins over LD_LIBRARY_PATH, not over LD_PRELOAD):
//! `LD_PRELOAD="$(echo /usr/lib/x86_64-linux-gnu/libuc{m,s,t,p}.so.0)" cargo test -p
//! integration-tests --test stranger`.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{Engine, PATIENCE, UCX_LOOPBACK_TCP};
use ring_client::Session;
use ring_proto::needle::NEEDLE_META_LEN;
use ring_proto::{opcode, Cqe, Sqe};
use seaweed_format::writer::{needle, VolumeWriter};

/// xorshift64: deterministic bytes, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    r.bytes(n)
}

/// TCP ports in LISTEN state whose socket belongs to process `pid`.
fn listening_ports(pid: i32) -> Vec<SocketAddr> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" || !f[9].parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                continue;
            }
            let (ip_hex, port_hex) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port_hex, 16).unwrap();
            // The kernel prints the address as host-order 32-bit words.
            let words: Vec<u32> = (0..ip_hex.len() / 8)
                .map(|i| u32::from_str_radix(&ip_hex[i * 8..i * 8 + 8], 16).unwrap().swap_bytes())
                .collect();
            let addr: SocketAddr = if v6 {
                let mut b = [0u8; 16];
                for (i, w) in words.iter().enumerate() {
                    b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
                }
                let ip = std::net::Ipv6Addr::from(b);
                (
                    if ip.is_unspecified() {
                        std::net::Ipv6Addr::LOCALHOST
                    } else {
                        ip
                    },
                    port,
                )
                    .into()
            } else {
                let ip = std::net::Ipv4Addr::from(words[0].to_be_bytes());
                (
                    if ip.is_unspecified() {
                        std::net::Ipv4Addr::LOCALHOST
                    } else {
                        ip
                    },
                    port,
                )
                    .into()
            };
            out.push(addr);
        }
    }
    out
}

/// What connection `i` sends.
fn hostile_bytes(i: usize, rng: &mut Rng) -> Vec<u8> {
    match i % 4 {
        // A port scanner's probe: random bytes, 1 B .. 4 KiB.
        0 => {
            let n = 1 + (rng.next() % 4096) as usize;
            rng.bytes(n)
        }
        // UCX connection-manager header (size_t length, u8 status, padding to 16) announcing
        // 0..32 bytes, then more or fewer than that.
        1 => {
            let n = 16 + (rng.next() % 3000) as usize;
            let mut b = rng.bytes(n);
            b[..8].copy_from_slice(&(rng.next() % 33).to_le_bytes());
            b
        }
        // UCX's tcp transport magic number, then garbage where its connection packet goes.
        2 => {
            let mut b = 0xCAFE_BABE_1234_5678u64.to_le_bytes().to_vec();
            let n = (rng.next() % 512) as usize;
            b.extend(rng.bytes(n));
            b
        }
        // Connect and hang up.
        _ => Vec::new(),
    }
}

/// 1,000 hostile connections spread over `ports`; returns how many were refused.
fn attack(ports: &[SocketAddr]) -> usize {
    let mut rng = Rng(0x5eed_2026_1204);
    let mut refused = 0;
    for i in 0..1000 {
        let addr = ports[i % ports.len()];
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            refused += 1;
            continue;
        };
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let bytes = hostile_bytes(i / ports.len(), &mut rng);
        // The engine may reset a connection it rejects: write errors are expected.
        let _ = c.write_all(&bytes);
        drop(c);
    }
    refused
}

/// Debian's UCX 1.13.1 (libucx0, which scripts/install-deps installs for this purpose),
/// loaded by the engine process only. LD_PRELOAD, since the binaries' rpath beats
/// LD_LIBRARY_PATH.
fn debian_ucx_1_13() -> (&'static str, Option<&'static str>) {
    const LIBS: &str = "/usr/lib/x86_64-linux-gnu/libucm.so.0 /usr/lib/x86_64-linux-gnu/libucs.so.0 /usr/lib/x86_64-linux-gnu/libuct.so.0 /usr/lib/x86_64-linux-gnu/libucp.so.0";
    for l in LIBS.split(' ') {
        assert!(
            std::path::Path::new(l).exists(),
            "{l} missing: scripts/install-deps installs libucx0"
        );
    }
    ("LD_PRELOAD", Some(LIBS))
}

/// The attack is real: the same bytes abort an engine that runs on Debian's UCX 1.13.1.
#[test]
fn the_same_bytes_abort_an_engine_on_debian_ucx_1_13() {
    let engine = Engine::start_with_env(&UCX_LOOPBACK_TCP, &[debian_ucx_1_13()]);
    engine.wait_for_log("UCX runtime loaded version=1.13.1");
    let ports = listening_ports(engine.pid());
    assert!(ports.len() >= 2, "{ports:?}");
    attack(&ports);
    let (status, log) = engine.wait_exit();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGABRT),
        "{status:?}\n{log}"
    );
    assert!(log.contains("Assertion"), "{log}");
}

/// On such a runtime the engine refuses to listen beyond loopback, naming the key and the
/// fix; `ucx.allow-unsafe-runtime` starts it anyway, with an error in the log.
#[test]
fn an_engine_on_a_runtime_that_aborts_refuses_to_listen_beyond_loopback() {
    let (k, v) = debian_ucx_1_13();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("engine.log");
    let mut child = std::process::Command::new(integration_tests::engine_binary())
        .arg("--socket")
        .arg(dir.path().join("engine.sock"))
        .args([
            "--cores",
            &integration_tests::engine_core().to_string(),
            "--hugepages",
            "off",
        ])
        .args(["--ucx-listen", "0.0.0.0:0", "--ucx-transports", "tcp"])
        .env(k, v.unwrap())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Hang guard: an engine that starts instead of refusing is killed and reported.
    let status = integration_tests::wait_child(&mut child);
    let err = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    for want in [
        "UCX 1.13.1",
        "aborts it",
        "ucx.listen = 0.0.0.0:0",
        "scripts/install-deps",
        "ucx.allow-unsafe-runtime",
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "[ucx]\nallow-unsafe-runtime = true\n[sessions]\nlease-ms = 0\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(integration_tests::engine_binary())
        .arg("--config")
        .arg(cfg.path())
        .arg("--socket")
        .arg(cfg.path().with_extension("sock"))
        .args([
            "--cores",
            &integration_tests::engine_core().to_string(),
            "--hugepages",
            "off",
        ])
        .args(["--ucx-listen", "0.0.0.0:0", "--ucx-transports", "tcp"])
        .env(k, v.unwrap())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    while !log.contains("engine ready") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            break;
        }
        log.push_str(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("engine ready"), "{log}");
    assert!(
        log.contains("ERROR") && log.contains("starting anyway because ucx.allow-unsafe-runtime = true"),
        "{log}"
    );
}

#[test]
fn random_bytes_on_every_listening_port_do_not_stop_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let mut vol = VolumeWriter::create(dir.path(), "", 5, 3, 16).unwrap();
    let sizes = [1usize, 4096, 100_000, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        vol.write(&needle(i as u64 + 1, 0xabc0 + i as u32, &pattern(n, i as u64)))
            .unwrap();
    }
    let mut args = vec!["--seaweedfs-dir", dir.path().to_str().unwrap()];
    args.extend(UCX_LOOPBACK_TCP);
    args.extend(["--metrics-listen", "127.0.0.1:0", "--lease-ms", "0"]);
    let engine = Engine::start(&args);
    let listener: SocketAddr = engine.ucx_listen_addr().parse().unwrap();

    // The bystander: one session, READ_NEEDLE through the engine's own UCX listener, every
    // byte checked, until told to stop; then once more after the attack.
    let mut s = engine.connect();
    let peer = s.connect_peer(&listener.to_string()).unwrap();
    let read_all = move |s: &mut Session, next: &mut u64| -> Result<(), String> {
        for (i, &n) in sizes.iter().enumerate() {
            *next += 1;
            s.submit(&Sqe {
                opcode: opcode::READ_NEEDLE,
                peer,
                user_data: *next,
                buf_len: (2 << 20) as u32,
                aux: 5,
                args: [i as u64 + 1, 0xabc0 + i as u64, 0, 0],
                ..Default::default()
            })
            .map_err(|e| format!("submit: {e}"))?;
            let c: Cqe = s
                .wait_cqe(Duration::from_micros(50), Some(PATIENCE))
                .map_err(|e| format!("read {i} got no completion: {e}"))?;
            if c.user_data != *next || c.result != n as i32 {
                return Err(format!("read {i}: {c:?}, wanted {n} bytes for user_data {next}"));
            }
            let mut data = vec![0u8; n];
            s.buffer().read(NEEDLE_META_LEN, &mut data).unwrap();
            if data != pattern(n, i as u64) {
                return Err(format!("read {i}: bytes differ"));
            }
        }
        Ok(())
    };
    let mut next = 0u64;
    read_all(&mut s, &mut next).expect("bystander before the attack");

    let ports = listening_ports(engine.pid());
    assert!(
        ports.contains(&listener),
        "the UCX listener {listener} is among the engine's listening ports {ports:?}"
    );
    assert!(
        ports.len() >= 3,
        "listener, a tcp transport port and metrics are found: {ports:?}"
    );
    eprintln!("engine listens on {ports:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let bystander = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                read_all(&mut s, &mut next)?;
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            read_all(&mut s, &mut next).map(|()| s)
        })
    };

    let refused = attack(&ports);
    stop.store(true, Ordering::Relaxed);
    let s = bystander
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("bystander: {e}\nengine log:\n{}", engine.log()));
    eprintln!(
        "1000 hostile connections ({refused} refused), {} bystander rounds during them",
        rounds.load(Ordering::Relaxed)
    );

    // Still serving: control socket, new sessions, the listener itself.
    let st = engine.status_json();
    assert!(st["workers"].as_array().is_some_and(|w| !w.is_empty()), "{st}");
    assert!(
        listening_ports(engine.pid()).contains(&listener),
        "the UCX listener is still open"
    );
    let log = engine.log();
    assert!(!log.contains("Assertion"), "UCX asserted:\n{log}");
    drop(s);
    let (status, log) = engine.terminate();
    assert!(status.success(), "engine exit {status:?}:\n{log}");
}
