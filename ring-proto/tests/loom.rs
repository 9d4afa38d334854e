//! loom models of the ring protocol and of the sleep/wake handshake.
//! Run with: RUSTFLAGS="--cfg loom" cargo test -p ring-proto --test loom --release
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use ring_proto::{Consumer, Cqe, HeapRing, Producer};

fn cqe(n: u64) -> Cqe {
    Cqe::new(n, n as i32)
}

/// What the consumer copied, without the ring's control byte.
fn body(mut e: Cqe) -> Cqe {
    e.ctl = 0;
    e
}

/// Entries arrive intact and in order through a 2-slot ring that wraps and fills, with the
/// consumer releasing slots while the producer reuses them.
#[test]
fn spsc_delivers_in_order_through_wraparound() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new::<Cqe>(2));
        let r2 = ring.clone();
        let producer = thread::spawn(move || {
            // Safety: the only producer of a fresh ring built for Cqe.
            let mut p = unsafe { Producer::<Cqe>::new(r2.raw()) };
            let mut n = 0;
            while n < 3 {
                if p.push(&cqe(n)).is_ok() {
                    p.publish();
                    n += 1;
                } else {
                    thread::yield_now();
                }
            }
        });
        // Safety: the only consumer of the same ring.
        let mut c = unsafe { Consumer::<Cqe>::new(ring.raw()) };
        let mut expect = 0;
        while expect < 3 {
            c.refresh();
            match c.pop() {
                Some(e) => {
                    // Every word of the slot must be the published one, never a stale value.
                    assert_eq!(body(e), cqe(expect));
                    c.release();
                    expect += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

/// A batch published at once: the entries after the first are written in full before the
/// first one's control word, and must still never be seen before it, nor stale after it.
#[test]
fn batch_is_seen_whole_and_in_order() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new::<Cqe>(4));
        let r2 = ring.clone();
        let producer = thread::spawn(move || {
            // Safety: the only producer of a fresh ring built for Cqe.
            let mut p = unsafe { Producer::<Cqe>::new(r2.raw()) };
            p.push(&cqe(0)).unwrap();
            p.push(&cqe(1)).unwrap();
            p.publish();
        });
        // Safety: the only consumer of the same ring.
        let mut c = unsafe { Consumer::<Cqe>::new(ring.raw()) };
        let mut expect = 0;
        while expect < 2 {
            let ready = c.refresh();
            assert!(expect > 0 || ready != 1, "the batch's second entry was visible alone");
            match c.pop() {
                Some(e) => {
                    assert_eq!(body(e), cqe(expect));
                    expect += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

/// No lost wakeup: if the consumer decides to sleep, the producer that published an entry
/// must have seen NEED_WAKEUP (and so signals), or the consumer must have seen the entry.
/// Publishing a batch of two checks that the first entry's late control word is what the
/// handshake is about.
#[test]
fn sleep_wake_handshake_loses_no_wakeup() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new::<Cqe>(4));
        let signalled = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (ring.clone(), signalled.clone());
        let producer = thread::spawn(move || {
            // Safety: the only producer of a fresh ring built for Cqe.
            let mut p = unsafe { Producer::<Cqe>::new(r2.raw()) };
            p.push(&cqe(1)).unwrap();
            p.push(&cqe(2)).unwrap();
            if p.publish() {
                s2.store(true, Ordering::SeqCst);
            }
        });
        // Safety: the only consumer of the same ring.
        let mut c = unsafe { Consumer::<Cqe>::new(ring.raw()) };
        let sleeps = c.prepare_sleep();
        producer.join().unwrap();
        if sleeps {
            assert!(
                signalled.load(Ordering::SeqCst),
                "consumer slept on an entry nobody signals"
            );
        } else {
            c.refresh();
            assert_eq!(c.pop().map(body), Some(cqe(1)));
        }
    });
}

/// No lost wakeup when the engine sleeps on a full CQ: the client reaping a completion must
/// either be seen by the engine's last look (CQ room) or see the engine's NEED_WAKEUP.
#[test]
fn stalled_engine_is_woken_by_cq_room() {
    loom::model(|| {
        let sq = Arc::new(HeapRing::new::<Cqe>(2));
        let cq = Arc::new(HeapRing::new::<Cqe>(2));
        // Set-up, single-threaded: the client submitted one entry; the engine filled the CQ.
        // Safety: one producer and one consumer per ring, all fresh, built for Cqe.
        let (mut sq_prod, mut sq_cons, mut cq_prod, mut cq_cons) = unsafe {
            (
                Producer::<Cqe>::new(sq.raw()),
                Consumer::<Cqe>::new(sq.raw()),
                Producer::<Cqe>::new(cq.raw()),
                Consumer::<Cqe>::new(cq.raw()),
            )
        };
        sq_prod.push(&cqe(9)).unwrap();
        sq_prod.publish();
        cq_prod.push(&cqe(1)).unwrap();
        cq_prod.push(&cqe(2)).unwrap();
        cq_prod.publish();
        cq_cons.refresh();

        let signalled = Arc::new(AtomicBool::new(false));
        let s2 = signalled.clone();
        let client = thread::spawn(move || {
            assert!(cq_cons.pop().is_some());
            cq_cons.release();
            // in flight (3) > CQ size (2): the engine may be waiting for this room.
            if sq_prod.consumer_needs_wakeup() {
                s2.store(true, Ordering::SeqCst);
            }
        });
        // Engine: announce, then look at both conditions (as ActiveSession::prepare_sleep).
        sq_cons.announce_sleep();
        let ready = sq_cons.refresh_up_to(1);
        let room = cq_prod.refresh().unwrap();
        let sleeps = !(ready > 0 && room > 0);
        client.join().unwrap();
        if sleeps {
            assert!(
                signalled.load(Ordering::SeqCst),
                "engine slept on a stalled entry nobody wakes it for"
            );
        }
    });
}
