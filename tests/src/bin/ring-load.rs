//! A client process for crash tests.
//!
//! `ring-load SOCKET`: opens a session, says "ready", then keeps NOPs in flight until it is
//! killed.
//!
//! `ring-load SOCKET --hold N`: opens N small sessions (no keepalive thread), leaves one NOP
//! in flight on each (never reaped), says "ready", then waits to be killed: the churn test's
//! cheap way to have many sessions end by SIGKILL with few processes.
//!
//! `ring-load SOCKET --ucx PEER [--foreign ID:KEY]`: opens a session, connects it to the peer
//! engine listening at PEER (the engine's own listener will do), exports part of its buffer,
//! and runs one round of every kind of remote request below; so the engine has registered the
//! session's region and the export with UCX. It then says "ready ID KEY" (its export) and keeps
//! them all in flight until it is killed: SENDs to the peer's ECHO service (every response
//! checked byte for byte), READs and WRITEs of its own export through the peer, and, with
//! `--foreign`, READs of another client's export (until that one is gone: not-exported or
//! peer-failed end them). Any other result makes it panic (exit 101, not death by SIGKILL).

use std::io::Write;
use std::time::Duration;

use integration_tests::{echo_send, export, rma_sqe, PATIENCE};
use ring_client::{Session, SessionOptions};
use ring_proto::{opcode, Cqe, ResultCode, Sqe};

const USAGE: &str = "usage: ring-load SOCKET [--hold N | --ucx PEER [--foreign ID:KEY]]";

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = args.next().expect(USAGE);
    let rest: Vec<String> = args.collect();
    match rest.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => load(&socket),
        ["--hold", n] => hold(&socket, n.parse().expect("--hold N: a number")),
        ["--ucx", peer] => ucx_load(&socket, peer, None),
        ["--ucx", peer, "--foreign", ticket] => {
            let (id, key) = ticket.split_once(':').expect("--foreign ID:KEY");
            let ticket = (id.parse().expect("export id"), key.parse().expect("export key"));
            ucx_load(&socket, peer, Some(ticket))
        }
        _ => panic!("{USAGE}"),
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

// Buffer layout of the --ucx session (1 MiB).
/// SEND slots: request at `slot * ECHO_SLOT`, response in the slot's second half.
const ECHO_SLOTS: u64 = 8;
const ECHO_SLOT: usize = 32 << 10;
const ECHO_LEN: usize = ECHO_SLOT / 2;
/// READ/WRITE slots of the own export: local memory at `RMA_AREA + slot * RMA_LEN`, remote
/// offset `slot * RMA_LEN` of the export.
const RMA_SLOTS: u64 = 4;
const RMA_LEN: usize = 64 << 10;
const RMA_AREA: usize = 256 << 10;
/// The exported range.
const EXPORT_OFF: usize = 512 << 10;
const EXPORT_LEN: usize = RMA_SLOTS as usize * RMA_LEN;
/// Where READs of the foreign export land.
const FOREIGN_AREA: usize = 768 << 10;
/// user_data: slot number plus a kind tag.
const SEND_TAG: u64 = 1 << 40;
const RMA_TAG: u64 = 2 << 40;
const FOREIGN_TAG: u64 = 3 << 40;

struct UcxLoad {
    s: Session,
    peer: u32,
    own: (u64, u64),
    foreign: Option<(u64, u64)>,
    /// Rounds started, for the byte each SEND carries.
    round: u64,
}

impl UcxLoad {
    fn start_send(&mut self, slot: u64) {
        self.round += 1;
        let off = slot as usize * ECHO_SLOT;
        let byte = (self.round % 251) as u8 + 1;
        let b = self.s.buffer();
        b.write(off, &[byte; ECHO_LEN]).unwrap();
        b.write(off + ECHO_LEN, &[0; ECHO_LEN]).unwrap();
        let sqe = echo_send(self.peer, SEND_TAG | slot, off, ECHO_LEN, off + ECHO_LEN, ECHO_LEN);
        self.s.submit(&sqe).expect("SQ has room for every slot");
    }

    fn start_rma(&mut self, slot: u64) {
        self.round += 1;
        let local = RMA_AREA + slot as usize * RMA_LEN;
        let write = self.round.is_multiple_of(2);
        let sqe = rma_sqe(
            write,
            self.peer,
            self.own,
            slot * RMA_LEN as u64,
            local,
            RMA_LEN,
            RMA_TAG | slot,
        );
        self.s.submit(&sqe).expect("SQ has room for every slot");
    }

    fn start_foreign(&mut self) {
        if let Some(f) = self.foreign {
            let sqe = rma_sqe(false, self.peer, f, 0, FOREIGN_AREA, RMA_LEN, FOREIGN_TAG);
            self.s.submit(&sqe).expect("SQ has room for every slot");
        }
    }

    /// Checks one completion and starts the next request of its slot.
    fn complete(&mut self, c: Cqe) {
        let slot = c.user_data & (SEND_TAG - 1);
        match c.user_data & !(SEND_TAG - 1) {
            SEND_TAG => {
                assert_eq!(c.result, ECHO_LEN as i32, "SEND {c:?}");
                let off = slot as usize * ECHO_SLOT;
                let (mut sent, mut back) = (vec![0; ECHO_LEN], vec![0; ECHO_LEN]);
                self.s.buffer().read(off, &mut sent).unwrap();
                self.s.buffer().read(off + ECHO_LEN, &mut back).unwrap();
                assert!(sent == back, "echo of slot {slot} came back different");
                self.start_send(slot);
            }
            RMA_TAG => {
                assert_eq!(c.result, RMA_LEN as i32, "READ/WRITE of own export {c:?}");
                self.start_rma(slot);
            }
            FOREIGN_TAG => {
                let gone = [ResultCode::NotExported as i32, ResultCode::PeerFailed as i32];
                if gone.contains(&c.result) {
                    // Its exporter was killed: reading on would only be throttled.
                    self.foreign = None;
                } else {
                    assert_eq!(c.result, RMA_LEN as i32, "READ of foreign export {c:?}");
                }
                self.start_foreign();
            }
            _ => panic!("unexpected completion {c:?}"),
        }
    }
}

fn ucx_load(socket: &str, peer_addr: &str, foreign: Option<(u64, u64)>) {
    let opts = SessionOptions {
        sq_entries: 32,
        cq_entries: 32,
        buf_size: 1 << 20,
        keepalive: true,
    };
    let mut s = Session::connect(socket.as_ref(), opts).expect("connect");
    let peer = s.connect_peer(peer_addr).expect("connect_peer");
    let own = export(&mut s, EXPORT_OFF, EXPORT_LEN, 3);
    let mut l = UcxLoad {
        s,
        peer,
        own,
        foreign,
        round: 0,
    };
    // One round of each, all answered: the session's region is registered now.
    let wait = |l: &mut UcxLoad| {
        l.s.wait_cqe(Duration::from_micros(50), Some(PATIENCE))
            .expect("completion")
    };
    l.start_send(0);
    let c = wait(&mut l);
    assert_eq!(c.result, ECHO_LEN as i32, "first SEND {c:?}");
    l.start_rma(0);
    let c = wait(&mut l);
    assert_eq!(c.result, RMA_LEN as i32, "first READ/WRITE {c:?}");
    println!("ready {} {}", own.0, own.1);
    std::io::stdout().flush().unwrap();
    for slot in 0..ECHO_SLOTS {
        l.start_send(slot);
    }
    for slot in 0..RMA_SLOTS {
        l.start_rma(slot);
    }
    l.start_foreign();
    loop {
        let c = wait(&mut l);
        l.complete(c);
    }
}
