//! A hostile client maps real sessions and scribbles on everything it can reach (entries,
//! ring indices, flags, header fields, its buffer) while a well-behaved client works beside
//! it: the well-behaved client must see no error and exactly its own results, and the engine
//! must survive.
//!
//! The garbage comes from a seed printed at the start (and on failure); `SWRING_TEST_SEED=N`
//! replays its choices ([`integration_tests::rng`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use integration_tests::rng::Seed;
use integration_tests::{nop, wait, Engine, StopOnDrop, PATIENCE};
use ring_client::SessionOptions;
use ring_proto::{opcode, Sqe};

#[test]
fn hostile_client_cannot_hurt_a_well_behaved_one() {
    let seed = Seed::from_env("hostile_client");
    let engine = Engine::start(&["--spin-forever", "--lease-ms", "0"]);
    let stop = AtomicBool::new(false);
    let hostile_sessions = AtomicU32::new(0);
    let good_ops = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut rng = seed.rng();
            // At least one session whose corruption the engine must catch, however fast the
            // good client is (the random garbage below is caught only now and then).
            while !stop.load(Ordering::Relaxed) || hostile_sessions.load(Ordering::Relaxed) == 0 {
                let Ok(mut s) = engine.try_connect(SessionOptions {
                    keepalive: false,
                    ..Default::default()
                }) else {
                    continue;
                };
                let n = hostile_sessions.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(4) {
                    break_cq_head(&mut s);
                    continue;
                }
                // Some legitimate traffic first, so the session is live in the worker.
                let _ = s.submit(&nop(1));
                // Safety: deliberately hostile writes into this process's own mapping of the
                // session (atomically, 8 bytes at a time, as another process could).
                let (base, len) = unsafe { s.region_raw() };
                for _ in 0..2000 {
                    let off = (rng.next_u64() as usize % (len / 8)) * 8;
                    // Bias towards the control blocks and entries at the front.
                    let off = if rng.below(4) == 0 { off } else { off % 65536 };
                    // Safety: off is a multiple of 8 below len, so the word lies inside the
                    // mapping (page-aligned, alive while `s` is) and is aligned; an atomic store
                    // races with nothing undefined, only with the engine's checks.
                    let word = unsafe { &*(base.add(off) as *const AtomicU64) };
                    word.store(rng.next_u64(), Ordering::Relaxed);
                }
                // Publish whatever is now in the SQ through the normal path, then, every other
                // session, move the ring heads themselves to random places.
                let _ = s.submit(&Sqe {
                    opcode: rng.next_u64() as u8,
                    user_data: 2,
                    ..Default::default()
                });
                if rng.below(2) == 0 {
                    let l = *s.layout();
                    for off in [l.sq_ctl_offset, l.cq_ctl_offset] {
                        // Safety: as above (the SQ head and the CQ head lines).
                        let idx = unsafe { &*(base.add(off) as *const AtomicU32) };
                        idx.store(rng.next_u64() as u32, Ordering::Relaxed);
                    }
                    // The engine loads the CQ head only when it needs more room than it last
                    // saw: fill the CQ (never reaping) so that it must, and finds the garbage.
                    let until = std::time::Instant::now() + Duration::from_secs(2);
                    let mut sent = 0;
                    while sent <= l.cq_entries && std::time::Instant::now() < until {
                        match s.submit(&nop(3)) {
                            Ok(()) => sent += 1,
                            Err(ring_client::SubmitError::Full) => std::thread::yield_now(),
                            Err(_) => break,
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        scope.spawn(|| {
            // A failed assertion below stops the hostile thread too (else the scope hangs).
            let _stop = StopOnDrop(&stop);
            let mut s = engine.connect();
            let len = s.buffer().len();
            for i in 0..100_000u64 {
                if i % 2 == 0 {
                    s.submit(&nop(i)).unwrap();
                    let c = wait(&mut s);
                    assert_eq!(
                        (c.user_data, c.result),
                        (i, 0),
                        "good client saw a wrong NOP completion"
                    );
                } else {
                    let off = (i as usize * 4096) % (len - 4096);
                    s.submit(&Sqe {
                        opcode: opcode::FILL,
                        user_data: i,
                        buf_offset: off as u64,
                        buf_len: 4096,
                        aux: (i % 251) as u32,
                        ..Default::default()
                    })
                    .unwrap();
                    let c = wait(&mut s);
                    assert_eq!(
                        (c.user_data, c.result),
                        (i, 4096),
                        "good client saw a wrong FILL completion"
                    );
                    let mut back = vec![0u8; 4096];
                    s.buffer().read(off, &mut back).unwrap();
                    assert!(
                        back.iter().all(|&b| b == (i % 251) as u8),
                        "good client's buffer was touched"
                    );
                }
                good_ops.fetch_add(1, Ordering::Relaxed);
            }
            assert_eq!(s.sq_invalid_count(), 0);
        });
    });
    assert_eq!(good_ops.load(Ordering::Relaxed), 100_000);
    assert!(hostile_sessions.load(Ordering::Relaxed) > 0);
    // The engine is alive and serves a new client.
    let mut s = engine.connect();
    s.submit(&nop(7)).unwrap();
    assert_eq!(
        s.wait_cqe(Duration::from_micros(50), Some(PATIENCE)).unwrap().user_data,
        7
    );
    let log = engine.log();
    assert!(!log.contains("panicked"), "{log}");
    // The garbage reached the engine's checks: sessions were cut off for corrupt indices.
    let cut = log.matches("broke the ring protocol").count();
    eprintln!(
        "hostile sessions: {}, cut off: {cut}",
        hostile_sessions.load(Ordering::Relaxed)
    );
    assert!(cut > 0, "no hostile session was ever cut off:\n{log}");
}

/// Breaks the protocol in one way the engine must catch whatever the timing: after one
/// legitimate round trip, a CQ head that no consumer could have written (half the index
/// space away), then NOPs without reaping. The engine loads the CQ head at the latest when
/// its cached room runs out (it last loaded it before that round trip, so within
/// `cq_entries` completions) and must cut the session off.
fn break_cq_head(s: &mut ring_client::Session) {
    let _ = s.submit(&nop(1));
    if s.wait_cqe(Duration::ZERO, Some(PATIENCE)).is_err() {
        return;
    }
    let l = *s.layout();
    // Safety: cq_ctl_offset is the CQ control block inside this process's own mapping of the
    // session (alive while `s` is); its first word, the head, is a 4-aligned u32.
    let head = unsafe {
        let (base, _) = s.region_raw();
        &*(base.add(l.cq_ctl_offset) as *const AtomicU32)
    };
    head.store(head.load(Ordering::Relaxed).wrapping_add(1 << 31), Ordering::Relaxed);
    let until = std::time::Instant::now() + PATIENCE;
    let mut sent = 0;
    while sent <= 2 * l.cq_entries && std::time::Instant::now() < until {
        match s.submit(&nop(3)) {
            Ok(()) => sent += 1,
            Err(ring_client::SubmitError::Full) => std::thread::yield_now(),
            Err(_) => return, // cut off
        }
    }
}
