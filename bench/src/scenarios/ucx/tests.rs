use super::*;

#[test]
fn headers_follow_the_wire_protocol() {
    let h = RequestHeader {
        req_id: 0x0102_0304_0506_0708,
        service: 1,
        resp_cap: 8,
    }
    .encode();
    assert_eq!(&h[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(&h[8..12], &[1, 0, 0, 0]);
    assert_eq!(&h[12..], &[8, 0, 0, 0]);
    assert_eq!(RequestHeader::parse(&h).map(|h| h.req_id), Some(0x0102_0304_0506_0708));
    assert_eq!(RequestHeader::parse(&h[..15]), None);
}

#[test]
fn send_entry_is_a_valid_echo_request() {
    let e = send_sqe(7, 42);
    assert_eq!(
        (e.opcode, e.peer, e.aux, e.user_data),
        (opcode::SEND, 7, service::ECHO, 42)
    );
    assert_eq!((e.buf_offset, e.buf_len), (0, 8));
    assert_eq!(e.args, [4096, 8, 0, 0]);
    assert_eq!((e.flags, e.reserved), (0, 0));
}

/// The raw ping-pong over tcp on loopback and over shared memory, a few hundred round
/// trips each, against the real libucp. Run in a process of its own (this test binary,
/// running only the ignored test below): UCX reads its environment and patches memory
/// functions when a context is created, which must not race with the other tests' threads.
#[test]
fn raw_pair_ping_pongs_over_tcp_and_shared_memory() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "scenarios::ucx::tests::raw_pair_in_this_process",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("UCX_MM_ERROR_HANDLING", "y")
        .env("UCX_WARN_UNUSED_ENV_VARS", "n")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run by raw_pair_ping_pongs_over_tcp_and_shared_memory in a process of its own"]
fn raw_pair_in_this_process() {
    for tls in [Tls::Tcp, Tls::Sm] {
        for ends in [Ends::TwoWorkers, Ends::OneWorker] {
            eprintln!("raw UCX pair over {}, {ends:?}", tls.name());
            let mut p = RawPair::new(tls, ends).unwrap_or_else(|e| panic!("UCX over {}, {ends:?}: {e}", tls.name()));
            // More round trips than send slots: every slot (request and reply tokens) is
            // reused, which waits for its send's completion.
            for _ in 0..300 {
                p.round_trip()
                    .unwrap_or_else(|e| panic!("{}, {ends:?}: {e}", tls.name()));
            }
            assert_eq!(p.seq, 300);
            let one = p.facts()["ends"] == "one worker";
            assert_eq!(one, ends == Ends::OneWorker);
        }
        // The raw READ baseline: set-up checks the first get's bytes; then a short block.
        let mut r = RawRead::new(tls).unwrap_or_else(|e| panic!("raw read over {}: {e}", tls.name()));
        let timing = Timing {
            warmup: Duration::from_millis(2),
            measure: Duration::from_millis(10),
        };
        let mut h = new_histogram();
        let run = r
            .block(timing, &mut h)
            .unwrap_or_else(|e| panic!("{}: {e}", tls.name()));
        assert!(run.samples > 0 && h.len() == run.samples);
        assert!(r.lanes.contains("lane["), "{}", r.lanes);
        // Every slot holds some piece of the export.
        for slot in 0..READ_DEPTH {
            let at = slot_offset(slot);
            let got = r.dst.area.read_vec(at, READ_BYTES).unwrap();
            let piece = (0..EXPORT_BYTES / READ_BYTES).find(|k| check_pattern(&got, k * READ_BYTES, "x").is_ok());
            assert!(piece.is_some(), "slot {slot} holds no piece of the export");
        }
    }
}

#[test]
fn reads_cycle_over_the_export_into_their_own_slots() {
    assert_eq!(remote_offset(0), 0);
    assert_eq!(remote_offset(1), 1 << 20);
    assert_eq!(remote_offset(16), 0);
    assert_eq!(remote_offset(17), 1 << 20);
    assert!((0..1000).all(|q| remote_offset(q) + READ_BYTES as u64 <= EXPORT_BYTES as u64));
    assert_eq!(slot_offset(READ_DEPTH - 1) + READ_BYTES, READ_DEPTH * READ_BYTES);
    let e = read_sqe(3, 15, 1234, (7, 0xdead_beef), 5 << 20);
    assert_eq!(
        (e.opcode, e.peer, e.buf_offset, e.buf_len),
        (opcode::READ, 3, 15 << 20, 1 << 20)
    );
    assert_eq!(e.args, [7, 0xdead_beef, 5 << 20, 0]);
    assert_eq!((e.flags, e.reserved, e.aux), (0, 0, 0));
    assert_eq!((slot_of(e.user_data), e.user_data >> 8), (15, 1234));
}

#[test]
fn the_export_pattern_tells_pieces_apart() {
    let mut a = vec![0u8; READ_BYTES];
    fill_pattern(&mut a, 2 * READ_BYTES);
    assert!(check_pattern(&a, 2 * READ_BYTES, "piece 2").is_ok());
    let e = check_pattern(&a, 3 * READ_BYTES, "piece 3").unwrap_err().to_string();
    assert!(e.contains("piece 3: wrong bytes: byte 0"), "{e}");
    assert!(check_pattern(&a[1..], 2 * READ_BYTES, "shifted").is_err());
    a[1000] ^= 1;
    let e = check_pattern(&a, 2 * READ_BYTES, "flipped").unwrap_err().to_string();
    assert!(e.contains("byte 1000 of 1048576"), "{e}");
}
