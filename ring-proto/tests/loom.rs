//! loom models of the ring protocol and of the sleep/wake handshake.
//! Run with: RUSTFLAGS="--cfg loom" cargo test -p ring-proto --test loom --release
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use ring_proto::{Consumer, Cqe, HeapRing, Producer};

fn cqe(n: u64) -> Cqe {
    Cqe {
        user_data: n,
        result: n as i32,
        flags: 0,
    }
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
                    p.publish_no_wakeup_check();
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
            c.refresh().expect("indices stay consistent");
            match c.pop() {
                Some(e) => {
                    // Every word of the slot must be the published one, never a stale value.
                    assert_eq!(e, cqe(expect));
                    c.release();
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
            if p.publish() {
                s2.store(true, Ordering::SeqCst);
            }
        });
        // Safety: the only consumer of the same ring.
        let mut c = unsafe { Consumer::<Cqe>::new(ring.raw()) };
        let sleeps = c.prepare_sleep().unwrap();
        producer.join().unwrap();
        if sleeps {
            assert!(
                signalled.load(Ordering::SeqCst),
                "consumer slept on an entry nobody signals"
            );
        } else {
            assert_eq!(c.pop(), Some(cqe(1)));
        }
    });
}
