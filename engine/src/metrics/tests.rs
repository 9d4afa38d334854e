//! The metrics endpoint's rendering and serving.
use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;
use crate::status::{EngineInfo, SessionStatus, WorkerStatus};

fn render(s: &Snapshot) -> String {
    let s = s.clone();
    Metrics::new(move || s.clone()).render()
}

fn snapshot() -> Snapshot {
    let c = Counters {
        submitted: 5,
        completed: 5,
        errors: 2,
        cq_full: 1,
        errors_by_kind: [("unknown-opcode".to_string(), 2), ("other".to_string(), 0)]
            .into_iter()
            .collect(),
    };
    Snapshot {
        engine: EngineInfo {
            pid: 9,
            version: "0.1.0".into(),
            uptime_ms: 1500,
            socket: "/s".into(),
            control_version: 1,
            layout_version: 1,
            max_sessions: 4,
            sessions_open: 1,
            exports: 0,
            export_queries_failed: 0,
            ucx_registrations: 0,
            regions_lost: 0,
            volume_io: Default::default(),
        },
        workers: vec![WorkerStatus {
            id: 0,
            core: 1,
            sessions: 1,
            counters: c.clone(),
            sleeps: 3,
            wakeups: 2,
            spins_preempted: 0,
            sessions_opened: 1,
            sessions_closed: 0,
        }],
        sessions: vec![SessionStatus {
            id: 3,
            client_pid: 77,
            worker: 0,
            state: "ready".into(),
            backing: "normal-pages".into(),
            sq_entries: 256,
            cq_entries: 512,
            buffer_bytes: 4096,
            sq_pending: 0,
            cq_used: 4,
            counters: c,
        }],
        volumes: vec![],
        volume_indexing: Default::default(),
        peers: vec![crate::status::PeerStatus {
            peer: 1,
            address: "127.0.0.1:13337".into(),
            connected_workers: 1,
            connects: 2,
            connection_failures: 1,
            requests: 9,
            failures: 1,
            timeouts: 0,
            replies_rendezvous: 3,
            latency: crate::status::LatencyStatus {
                le_ns: vec![1_000, 10_000],
                counts: vec![3, 4],
                overflow: 1,
                sum_ns: 2_000_000,
            },
        }],
    }
}

#[test]
fn renders_families_once_with_labels() {
    let t = render(&snapshot());
    for line in [
        "# TYPE seaweed_ring_worker_submitted_total counter",
        "seaweed_ring_worker_submitted_total{worker=\"0\"} 5",
        "seaweed_ring_worker_sleeps_total{worker=\"0\"} 3",
        "seaweed_ring_worker_info{worker=\"0\",core=\"1\"} 1",
        "seaweed_ring_worker_errors_by_kind_total{worker=\"0\",kind=\"unknown-opcode\"} 2",
        "seaweed_ring_session_cq_used{session=\"3\",worker=\"0\"} 4",
        "seaweed_ring_session_cq_full_total{session=\"3\",worker=\"0\"} 1",
        "seaweed_ring_sessions_open 1",
        "seaweed_ring_peer_requests_total{peer=\"1\",address=\"127.0.0.1:13337\"} 9",
        "seaweed_ring_peer_request_duration_seconds_bucket{peer=\"1\",address=\"127.0.0.1:13337\",le=\"1e-05\"} 7",
        "seaweed_ring_peer_request_duration_seconds_bucket{peer=\"1\",address=\"127.0.0.1:13337\",le=\"+Inf\"} 8",
        "seaweed_ring_peer_request_duration_seconds_count{peer=\"1\",address=\"127.0.0.1:13337\"} 8",
        "seaweed_ring_uptime_seconds 1.5",
    ] {
        assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
    }
    // Each family is declared exactly once.
    let types: Vec<&str> = t.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let unique: std::collections::HashSet<_> = types.iter().collect();
    assert_eq!(types.len(), unique.len());
}

#[test]
fn label_values_are_escaped() {
    let mut s = snapshot();
    s.sessions[0].state = "a\"b\\c\nd".into();
    let t = render(&s);
    assert!(
        t.lines()
            .any(|l| l.starts_with("seaweed_ring_session_info{") && l.contains(r#"state="a\"b\\c\nd""#)),
        "{t}"
    );
}

/// One request on a new connection; returns the status code and the body.
fn request(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    // A bound for a failing test, not a timing assertion.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").expect("a whole answer");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "{head}");
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

#[test]
fn serves_get_head_and_refuses_the_rest() {
    let s = snapshot();
    let addr = start("127.0.0.1:0", Metrics::new(move || s.clone())).unwrap();
    let (status, body) = request(
        addr,
        "GET /metrics?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (status, body.lines().any(|l| l == "seaweed_ring_sessions_open 1")),
        (200, true)
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"),
        "HEAD: no body: {r}"
    );
    assert!(
        r.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{r}"
    );
    let post = "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(request(addr, post).0, 405);
    assert_eq!(
        request(addr, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").0,
        404
    );
}

/// A client that sends half a request and stalls must not hold up anyone else's scrape (the
/// hand-written server read one connection at a time: every scrape waited for the stalled
/// client's 5 s read timeout). Asserted on completion, not timing: the second scrape is
/// answered in full while the stalled connection is still open and unanswered.
#[test]
fn a_stalled_client_does_not_hold_up_other_scrapes() {
    let s = snapshot();
    let addr = start("127.0.0.1:0", Metrics::new(move || s.clone())).unwrap();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n").unwrap();
    for _ in 0..3 {
        let (status, body) = request(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
        assert!(body.lines().any(|l| l == "seaweed_ring_sessions_open 1"), "{body}");
    }
    stalled.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    match stalled.read(&mut b) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the stalled connection was answered or closed before the other scrapes: {other:?}"),
    }
}
