//! A client process for crash tests: opens a session, says "ready", then keeps NOPs in
//! flight until it is killed.

use std::io::Write;

use ring_client::{Session, SessionOptions};
use ring_proto::{opcode, Sqe};

fn main() {
    let socket = std::env::args().nth(1).expect("usage: ring-load SOCKET");
    let mut s = Session::connect(socket.as_ref(), SessionOptions::default()).expect("connect");
    println!("ready");
    std::io::stdout().flush().unwrap();
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
