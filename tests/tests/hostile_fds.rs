//! Hostile clients attack what they hold besides the rings: the region memfd, the two doorbell
//! fds and the control socket (issue 13, items 1-4 and 10). Every attacker here is the
//! independent client of `spec_client` (written from SPEC.md alone). Each test runs an honest
//! bystander session that checks every completion and byte while the attack runs and after
//! it, asks `engine status` during the attack, and ends with the engine's fd count and
//! sessions back at their baseline.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use integration_tests::hugepages::{meminfo, set_pool, HugePool};
use integration_tests::spec_client::{self, bystander_round, kind, Conn, Session};
use integration_tests::{wait_until, Engine, PATIENCE};

/// Runs `attack` while a bystander session works beside it (and `engine status` is asked
/// twice meanwhile), then checks the bystander once more, closes it, and waits until the
/// engine's descriptors and sessions are back to what they were before.
fn with_bystander(engine: &Engine, attack: impl FnOnce() + Send) {
    engine.wait_live_sessions(0);
    let baseline = engine.fd_count();
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let by = Session::open(&engine.socket).expect("bystander session");
    let (stop_ref, rounds_ref) = (&stop, &rounds);
    let mut by = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let mut by = by;
            let mut i = 0u64;
            while !stop_ref.load(Ordering::Relaxed) {
                bystander_round(&mut by, i);
                i += 1;
                rounds_ref.store(i, Ordering::Relaxed);
            }
            by
        });
        let status = scope.spawn(|| {
            for _ in 0..2 {
                let s = engine.status_json();
                assert!(s["sessions"].is_array(), "engine status during the attack: {s}");
            }
        });
        // A failing attack must stop the bystander too, or the scope would wait for it forever.
        let attacked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(attack));
        // The bystander must have worked beside the attack (a hang guard, not a measurement).
        let deadline = Instant::now() + PATIENCE;
        while attacked.is_ok() && rounds.load(Ordering::Relaxed) < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        let status = status.join();
        let by = worker.join();
        if let Err(p) = attacked {
            std::panic::resume_unwind(p);
        }
        status.expect("status during the attack");
        by.expect("bystander during the attack")
    });
    assert!(
        rounds.load(Ordering::Relaxed) >= 20,
        "the bystander completed only {} rounds during the attack",
        rounds.load(Ordering::Relaxed)
    );
    for i in 0..200 {
        bystander_round(&mut by, 1_000_000 + i);
    }
    assert_eq!(
        by.u32_at(256 + 260).load(Ordering::Relaxed),
        0,
        "bystander's SQ invalid counter"
    );
    assert!(by.close(), "bystander's Close was not answered with Closed");
    engine.wait_live_sessions(0);
    wait_until(
        &format!("engine fd count back to {baseline}"),
        || engine.fd_count() == baseline,
        || format!("fds now {}\n{}", engine.fd_count(), engine.log()),
    );
    assert!(!engine.log().contains("panicked"), "{}", engine.log());
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Item 1: the region's size is sealed, so shrinking (or growing) the memfd the client holds
/// fails, and the engine serves on even when the client then makes it touch every page.
/// On hugetlb, sizes that are not a multiple of the huge page are refused (EINVAL) before the
/// seals are looked at; the 2 MiB-aligned ones must meet the seal (EPERM).
fn region_size_attack(engine: &Engine, huge: bool) {
    with_bystander(engine, || {
        for round in 0..20u64 {
            let mut a = Session::open(&engine.socket).expect("attacker session");
            let fd = a.region_fd.as_raw_fd();
            // Safety: plain syscalls on a descriptor this test owns.
            let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
            let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            assert_eq!(seals & want, want, "region memfd seals (SPEC §3)");
            let huge_page = 2i64 << 20;
            let sizes = [
                0,
                a.buf_offset as i64,
                a.len as i64 - 4096,
                a.len as i64 - huge_page,
                a.len as i64 * 2,
            ];
            for size in sizes {
                // Safety: as above.
                let r = unsafe { libc::ftruncate(fd, size) };
                let e = errno();
                let unaligned = huge && size % huge_page != 0;
                assert!(
                    r != 0 && (e == libc::EPERM || (unaligned && e == libc::EINVAL)),
                    "ftruncate({size}) on the region memfd was allowed (or failed otherwise: errno {e})"
                );
            }
            // Safety: as above.
            let r = unsafe { libc::fallocate(fd, 0, 0, a.len as i64 * 2) };
            assert!(r != 0, "growing the region memfd with fallocate was allowed");
            // Make the engine touch every page of the buffer area and the rings.
            let len = a.buf_size.min(1 << 30) as u32;
            let (ud, res, _) = a.call(Session::fill(round, 0, len, 0x5a), "attacker FILL");
            assert_eq!((ud, res), (round, len as i32));
            drop(a);
        }
    });
}

#[test]
fn shrinking_the_region_cannot_kill_the_engine_normal_pages() {
    let engine = Engine::start(&["--hugepages", "off", "--lease-ms", "0"]);
    region_size_attack(&engine, false);
}

#[test]
fn shrinking_the_region_cannot_kill_the_engine_huge_pages() {
    // Three 2 MiB pages per default session: bystander, attacker, the start-up probe.
    let Some(_pool) = HugePool::reserve(10) else { return };
    let engine = Engine::start(&["--hugepages", "require", "--lease-ms", "0"]);
    region_size_attack(&engine, true);
    assert!(engine.log().contains("hugetlb-2MiB"), "sessions did not get huge pages");
}

/// Item 2: a client that clears O_NONBLOCK on both doorbell fds, tries to fill them, keeps
/// NEED_WAKEUP set on its CQ and never reads its CQ doorbell (so every wake-up the engine
/// sends it piles up until the pipe is full) cannot make a worker block: the bystander on
/// the same worker keeps getting every completion.
#[test]
fn a_client_cannot_block_a_worker_through_its_doorbells() {
    let engine = Engine::start(&["--lease-ms", "0"]);
    with_bystander(&engine, || {
        let mut a = Session::open(&engine.socket).expect("attacker session");
        for fd in [a.sq_wake.as_raw_fd(), a.cq_wake.as_raw_fd()] {
            // Safety: plain syscalls on descriptors this test owns.
            unsafe {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                // Smallest pipe: fills after a page of wake-ups (fails harmlessly on others).
                libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096);
            }
        }
        // Try to fill the CQ doorbell's counter as one could with a shared eventfd (control
        // version 1); with a read-only pipe end this must fail.
        let max = (u64::MAX - 1).to_le_bytes();
        // Safety: writing 8 bytes from a live buffer.
        let w = unsafe { libc::write(a.cq_wake.as_raw_fd(), max.as_ptr() as *const libc::c_void, 8) };
        assert!(w < 0, "the CQ doorbell fd the client holds is writable");
        // The attacker's own completions: polled, never slept for, with NEED_WAKEUP forced on
        // so the engine rings (and fills) the attacker's CQ doorbell on every pass.
        for i in 0..6000u64 {
            a.announce_cq_sleep();
            a.submit(Session::nop(i));
            let deadline = Instant::now() + PATIENCE;
            while a.try_reap().is_none() {
                assert!(Instant::now() < deadline, "attacker NOP {i} never completed");
                std::hint::spin_loop();
            }
        }
        drop(a);
    });
}

/// Item 3: a client that reads (and writes huge values to) the wake-up fd it was given
/// cannot consume or block the wake-ups of another session on the same worker. The
/// bystander here sleeps between requests so the worker goes to sleep every time and only a
/// doorbell wakes it.
#[test]
fn a_client_cannot_steal_or_block_other_sessions_wakeups() {
    let engine = Engine::start(&["--lease-ms", "0", "--idle-spin-us", "0"]);
    let a = Session::open(&engine.socket).expect("attacker session");
    // Deterministically first: the SQ doorbell a client holds cannot be read (SPEC §2: write
    // end), and it is not the object another session on the same worker holds.
    let other = Session::open(&engine.socket).expect("second session");
    assert_eq!(a.worker, other.worker, "one worker in this test");
    let mut b = [0u8; 8];
    // Safety: reading into a live buffer from a descriptor this test owns.
    let r = unsafe { libc::read(a.sq_wake.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, 8) };
    assert!(
        r < 0 && errno() == libc::EBADF,
        "the SQ doorbell fd is readable by its client"
    );
    let ino = |fd: i32| {
        // Safety: libc::stat is plain data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // Safety: fd is open (owned by a live session of this test); st is a valid out-pointer.
        let rc = unsafe { libc::fstat(fd, &mut st) };
        assert_eq!(rc, 0);
        (st.st_dev, st.st_ino, st.st_mode & libc::S_IFMT)
    };
    let (ia, io) = (ino(a.sq_wake.as_raw_fd()), ino(other.sq_wake.as_raw_fd()));
    assert_eq!(ia.2, libc::S_IFIFO, "the SQ doorbell is not a pipe");
    assert_ne!(ia, io, "two sessions share one SQ doorbell");
    drop(other);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Only reads: with a shared wake-up fd (control version 1) this consumed the
            // wake-ups other sessions wrote, and their requests waited forever.
            let fd = a.sq_wake.as_raw_fd();
            let mut b = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                // Safety: reads into a live 8-byte buffer from a descriptor this test owns.
                unsafe { libc::read(fd, b.as_mut_ptr() as *mut libc::c_void, 8) };
                std::hint::spin_loop();
            }
        });
        // Stops the attacker also when the bystander fails, so the scope cannot hang.
        let _stop = StopOnDrop(&stop);
        let mut by = Session::open(&engine.socket).expect("bystander");
        for i in 0..40u64 {
            std::thread::sleep(Duration::from_millis(10));
            bystander_round(&mut by, i);
        }
        assert!(by.close());
        stop.store(true, Ordering::Relaxed);
    });
    drop(a);
    with_bystander(&engine, || {});
}

/// Item 4: descriptors sent to the engine (any count, before or after the handshake) are all
/// closed; connections that never say Hello are closed after the handshake timeout; at most
/// MAX_PENDING wait at once, and an honest client still gets a session meanwhile.
#[test]
fn control_socket_fds_and_idle_connections_do_not_pile_up() {
    let engine = Engine::start(&["--lease-ms", "0"]);
    assert!(engine.log().contains("open file limit"), "RLIMIT_NOFILE not logged");
    let devnull: Vec<OwnedFd> = (0..16)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    let raw: Vec<i32> = devnull.iter().map(|f| f.as_raw_fd()).collect();
    with_bystander(&engine, || {
        // Before the handshake: a Hello carrying 16 fds, and a garbage packet carrying 5.
        for i in 0..100 {
            let c = Conn::connect(&engine.socket).unwrap();
            if i % 2 == 0 {
                c.send(&spec_client::hello(0, 0, 0, 0), &raw).unwrap();
            } else {
                c.send(b"garbage", &raw[..5]).unwrap();
            }
            let _ = c.recv(PATIENCE);
        }
        // After the handshake: Pings carrying fds are answered, the fds closed.
        let s = Session::open(&engine.socket).unwrap();
        for n in 0..500 {
            let fds = &raw[..1 + n % 16];
            s.conn
                .send(&spec_client::packet(spec_client::CONTROL_VERSION, kind::PING, &[]), fds)
                .unwrap();
            let p = s.conn.recv(PATIENCE).unwrap().expect("Pong");
            assert_eq!(p.kind(), kind::PONG);
        }
        assert!(s.close());
        // 100 connections that never send anything: at most 64 stay, an honest client gets a
        // session meanwhile, and all are closed by the handshake timeout.
        let idle: Vec<Conn> = (0..100).map(|_| Conn::connect(&engine.socket).unwrap()).collect();
        let s = Session::open(&engine.socket).expect("a session while idle connections wait");
        assert!(s.close());
        let deadline = Instant::now() + PATIENCE;
        for c in &idle {
            // EOF (Ok(None)) within one overall guard: the engine closed it.
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                matches!(c.recv(left), Ok(None)),
                "idle connection not closed by the engine within {PATIENCE:?}"
            );
        }
        assert!(
            engine.log().contains("too many connections without Hello"),
            "pending connections were not bounded"
        );
    });
}

/// Item 4: with the engine's descriptor table full, new connections are turned away (EOF or
/// an Error, never a hang) and once sessions close the engine serves new ones without a
/// restart.
#[test]
fn an_exhausted_fd_table_recovers_without_restart() {
    let engine = Engine::start(&["--lease-ms", "0"]);
    engine.wait_live_sessions(0);
    let baseline = engine.fd_count();
    let limit = baseline + 40;
    let st = std::process::Command::new("prlimit")
        .args([format!("--nofile={limit}:{limit}"), format!("--pid={}", engine.pid())])
        .status()
        .expect("prlimit");
    assert!(st.success());
    let mut sessions = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match Session::open(&engine.socket) {
            Ok(s) => sessions.push(s),
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > 0,
        "the fd limit was never reached ({} sessions)",
        sessions.len()
    );
    // A connection beyond the limit is answered (EOF or Error) in time, not left hanging.
    let c = Conn::connect(&engine.socket).unwrap();
    c.send(&spec_client::hello(0, 0, 0, 0), &[]).unwrap();
    match c.recv(PATIENCE) {
        Ok(None) => {}
        Ok(Some(p)) => assert!(p.kind() == kind::ERROR || p.kind() == kind::WELCOME),
        Err(e) => panic!("connection at the fd limit hung: {e}"),
    }
    drop(c);
    for s in sessions.drain(..) {
        assert!(s.close());
    }
    with_bystander(&engine, || {});
}

/// Item 10: messages not allowed after the handshake (a second Hello, Status, an unknown
/// kind, a malformed packet) get `Error Malformed` and end the session as Closed /
/// ClientClosed; a Hello with a non-zero reserved field is refused as Malformed.
#[test]
fn control_protocol_violations_are_answered_as_spec_says() {
    let engine = Engine::start(&["--lease-ms", "0"]);
    with_bystander(&engine, || {
        let c = Conn::connect(&engine.socket).unwrap();
        c.send(&spec_client::hello(0, 0, 7, 0), &[]).unwrap();
        let p = c.recv(PATIENCE).unwrap().expect("an answer to a reserved Hello");
        assert_eq!(p.error().map(|e| e.0), Some(spec_client::error_code::MALFORMED));
        assert!(
            matches!(c.recv(PATIENCE), Ok(None)),
            "connection not closed after Error"
        );

        let v = spec_client::CONTROL_VERSION;
        let violations: [Vec<u8>; 5] = [
            spec_client::hello(0, 0, 0, 0),
            spec_client::packet(v, kind::STATUS, &[]),
            spec_client::packet(v, 99, &[]),
            spec_client::packet(v, kind::PING, &[1, 2, 3]),
            b"SWC".to_vec(),
        ];
        for bad in violations {
            let mut s = Session::open(&engine.socket).unwrap();
            let (ud, res, _) = s.call(Session::nop(5), "NOP before the violation");
            assert_eq!((ud, res), (5, 0));
            s.conn.send(&bad, &[]).unwrap();
            let p = s.conn.recv(PATIENCE).unwrap().expect("Error after a violation");
            assert_eq!(
                p.error().map(|e| e.0),
                Some(spec_client::error_code::MALFORMED),
                "{bad:?}"
            );
            assert!(
                matches!(s.conn.recv(PATIENCE), Ok(None)),
                "connection not closed: {bad:?}"
            );
            wait_until(
                "terminal state",
                || s.state() == spec_client::STATE_CLOSED,
                || engine.log(),
            );
            let reason = s.u32_at(spec_client::HDR_CLOSE_REASON).load(Ordering::Relaxed);
            assert_eq!(reason, 1, "close_reason after a violation (ClientClosed)");
        }
    });
}

/// Punches a hole in `[off, off + len)` of the region memfd (FALLOC_FL_PUNCH_HOLE): the pages
/// go back to the system, the file keeps its (sealed) size.
fn punch_hole(a: &Session, off: usize, len: usize) {
    // Safety: a plain syscall on a descriptor this test owns.
    let r = unsafe {
        libc::fallocate(
            a.region_fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        )
    };
    assert_eq!(
        r,
        0,
        "punching a hole in the region memfd: {}",
        std::io::Error::last_os_error()
    );
}

/// Item 1 (holes): with the huge-page pool exhausted, an attacker punches holes in its
/// hugetlb region and makes the engine touch them: in the buffer area under a FILL (the
/// worker faults), over the whole region with a doorbell (the worker faults on the SQ), and
/// over the whole region with nothing else (the control thread's heartbeat store faults).
/// Each costs the attacker its session (its control connection closes), never the engine;
/// the bystander stays exact throughout.
#[test]
fn punching_holes_in_a_huge_page_region_cannot_kill_the_engine() {
    // Three 2 MiB pages per default session: bystander, attacker, the start-up probe.
    let Some(pool) = HugePool::reserve(10) else { return };
    let engine = Engine::start(&["--hugepages", "require", "--lease-ms", "0"]);
    const HUGE: usize = 2 << 20;
    with_bystander(&engine, || {
        for round in 0..3u64 {
            let mut a = Session::open(&engine.socket).expect("attacker session");
            let (ud, res, _) = a.call(Session::nop(round), "attacker NOP before the attack");
            assert_eq!((ud, res), (round, 0));
            // Exhaust the pool: every page now in use becomes surplus, none is free, and a
            // punched page goes back to the system instead of to the pool.
            set_pool(0).expect("shrinking the huge-page pool");
            assert_eq!(meminfo("HugePages_Free:"), 0, "huge pages still free");
            let buf_page = a.buf_offset.next_multiple_of(HUGE);
            match round {
                0 => {
                    // Only the buffer area: the SQ and CQ (first page) stay usable.
                    punch_hole(&a, buf_page, a.len - buf_page);
                    let off = buf_page - a.buf_offset;
                    a.submit(Session::fill(77, off, 4096, 0x5a));
                }
                1 => {
                    punch_hole(&a, 0, a.len);
                    a.ring_sq_doorbell();
                }
                _ => punch_hole(&a, 0, a.len),
            }
            // The attacker must not touch its own mapping now: it would fault too.
            match a.conn.recv(PATIENCE) {
                Ok(None) => {}
                other => panic!(
                    "round {round}: the attacker's control connection did not close: {:?}\n{}",
                    other.map(|p| p.map(|p| p.kind())),
                    engine.log()
                ),
            }
            set_pool(pool.reserved).expect("restoring the huge-page pool");
            drop(a);
        }
    });
    assert_eq!(engine.status_json()["engine"]["regions_lost"], 3, "{}", engine.log());
    assert!(
        engine.log().contains("removed pages from its region"),
        "{}",
        engine.log()
    );
    assert!(engine.log().contains("hugetlb-2MiB"), "sessions did not get huge pages");
}

/// Item 1 (holes), normal pages: a punched page is refilled with a zero page on the next
/// touch, so the engine simply keeps serving, the attacker included.
#[test]
fn punching_holes_in_a_normal_page_region_is_harmless() {
    let engine = Engine::start(&["--hugepages", "off", "--lease-ms", "0"]);
    with_bystander(&engine, || {
        let mut a = Session::open(&engine.socket).expect("attacker session");
        for round in 0..20u64 {
            punch_hole(&a, a.buf_offset, a.len - a.buf_offset);
            let off = (round as usize * 8192) % (a.buf_size - 8192);
            let (ud, res, _) = a.call(Session::fill(round, off, 8192, 0x5a), "attacker FILL into the hole");
            assert_eq!((ud, res), (round, 8192));
            assert!(a.read_buf(off, 8192).iter().all(|&b| b == 0x5a), "FILL bytes");
        }
        assert!(a.close(), "attacker's Close was not answered");
        // Over the rings too: their indices read zero again, which the engine may take for a
        // broken ring protocol (this session's loss), never for its own.
        let a = Session::open(&engine.socket).expect("attacker session");
        punch_hole(&a, 0, a.len);
        a.ring_sq_doorbell();
        drop(a);
    });
    assert_eq!(engine.status_json()["engine"]["regions_lost"], 0);
}
