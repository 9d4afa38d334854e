//! A client process for crash tests.
//!
//! `ring-load SOCKET`: opens a session, says "ready", then keeps NOPs in flight until it is
//! killed.
//!
//! `ring-load SOCKET --hold N`: opens N small sessions (no keepalive thread), leaves one NOP
//! in flight on each (never reaped), says "ready", then waits to be killed: the churn test's
//! cheap way to have many sessions end by SIGKILL with few processes.

use std::io::Write;

use ring_client::{Session, SessionOptions};
use ring_proto::{opcode, Sqe};

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = args.next().expect("usage: ring-load SOCKET [--hold N]");
    match (args.next().as_deref(), args.next()) {
        (None, _) => load(&socket),
        (Some("--hold"), Some(n)) => hold(&socket, n.parse().expect("--hold N: a number")),
        _ => panic!("usage: ring-load SOCKET [--hold N]"),
    }
}

fn ready() {
    println!("ready");
    std::io::stdout().flush().unwrap();
}

fn load(socket: &str) {
    let mut s = Session::connect(socket.as_ref(), SessionOptions::default()).expect("connect");
    ready();
    let mut next = 0u64;
    loop {
        {
            let mut q = s.submission();
            for _ in 0..16 {
                if q.push(&Sqe {
                    opcode: opcode::NOP,
                    user_data: next,
                    ..Default::default()
                })
                .is_err()
                {
                    break;
                }
                next += 1;
            }
        }
        while let Ok(Some(_)) = s.try_cqe() {}
    }
}

fn hold(socket: &str, n: usize) {
    let opts = SessionOptions {
        sq_entries: 4,
        cq_entries: 4,
        buf_size: 4096,
        keepalive: false,
    };
    let sessions: Vec<Session> = (0..n)
        .map(|i| {
            let mut s = Session::connect(socket.as_ref(), opts.clone()).expect("connect");
            s.submit(&Sqe {
                opcode: opcode::NOP,
                user_data: i as u64,
                ..Default::default()
            })
            .expect("submit");
            s
        })
        .collect();
    ready();
    loop {
        std::thread::park();
        let _ = &sessions;
    }
}
