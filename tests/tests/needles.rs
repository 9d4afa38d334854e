//! READ_NEEDLE through the real engine: one engine serves a SeaweedFS volume directory (written
//! here in SeaweedFS's on-disk format while the engine runs, as a volume server would) and
//! reads through its own UCX listener, over tcp and shared memory. The Go end-to-end test
//! (go-client/needle/weed_e2e_test.go) does the same against a real `weed` volume server.

use integration_tests::{Engine, PATIENCE};
use ring_client::Session;
use ring_proto::entry::read_needle_flags;
use ring_proto::needle::{flags, NeedleMeta, NEEDLE_META_LEN};
use ring_proto::{opcode, Cqe, ResultCode, Sqe};
use seaweed_format::writer::pattern;
use seaweed_format::writer::{full_needle, needle, VolumeWriter};

/// Engine flags: serve `dir` and listen on loopback with these transports; with `local`,
/// reads naming the engine itself skip UCX (`ucx.local-reads`).
fn serving_engine(dir: &std::path::Path, tls: &str, local: bool) -> Engine {
    let dir = dir.to_str().unwrap().to_string();
    Engine::start(&[
        "--seaweedfs-dir",
        &dir,
        "--ucx-listen",
        "127.0.0.1:0",
        "--ucx-transports",
        tls,
        "--ucx-net-devices",
        "lo",
        "--ucx-local-reads",
        if local { "true" } else { "false" },
        "--lease-ms",
        "0",
    ])
}

struct Reader {
    s: Session,
    peer: u32,
    next: u64,
}

impl Reader {
    fn new(engine: &Engine) -> Self {
        let mut s = engine.connect();
        let peer = s.connect_peer(&engine.ucx_listen_addr()).unwrap();
        Self { s, peer, next: 1 }
    }

    /// One READ_NEEDLE into a buffer of `buf_len` bytes at offset 0; `range`: (offset, len).
    fn read(
        &mut self,
        vid: u32,
        id: u64,
        cookie: u32,
        range: Option<(u64, u64)>,
        buf_len: u32,
    ) -> Result<(NeedleMeta, Vec<u8>), ResultCode> {
        let user_data = self.next;
        self.next += 1;
        let (flags, off, len) = match range {
            Some((o, l)) => (read_needle_flags::RANGE, o, l),
            None => (0, 0, 0),
        };
        self.s
            .submit(&Sqe {
                opcode: opcode::READ_NEEDLE,
                flags,
                peer: self.peer,
                user_data,
                buf_offset: 0,
                buf_len,
                aux: vid,
                args: [id, cookie as u64, off, len],
                ..Default::default()
            })
            .unwrap();
        let c: Cqe = self
            .s
            .wait_cqe(std::time::Duration::from_micros(50), Some(PATIENCE))
            .unwrap();
        assert_eq!(c.user_data, user_data);
        if c.result < 0 {
            return Err(ResultCode::from_result(c.result).expect("known code"));
        }
        let mut meta = vec![0u8; NEEDLE_META_LEN];
        self.s.buffer().read(0, &mut meta).unwrap();
        let mut data = vec![0u8; c.result as usize];
        self.s.buffer().read(NEEDLE_META_LEN, &mut data).unwrap();
        Ok((NeedleMeta::decode(&meta).unwrap(), data))
    }
}

#[test]
fn needles_are_served_byte_exact_over_tcp_and_shared_memory() {
    // Through UCX (the engine reads through its own listener as it would from a peer's),
    // and through the shortcut for a peer that is the engine itself.
    for (tls, local) in [("tcp", false), ("sm,tcp", false), ("tcp", true)] {
        let dir = tempfile::tempdir().unwrap();
        // Volume 3 (version 3, 16-byte idx) and volume 7 of collection "pics_2026" (version 2,
        // 17-byte idx) exist before the engine starts.
        let mut v3 = VolumeWriter::create(dir.path(), "", 3, 3, 16).unwrap();
        let mut v7 = VolumeWriter::create(dir.path(), "pics_2026", 7, 2, 17).unwrap();
        let sizes = [0usize, 1, 100, 4096, 65_535, 1 << 20, (1 << 20) + 1, 3 << 20];
        for (i, &n) in sizes.iter().enumerate() {
            v3.write(&needle(i as u64 + 1, 0xc0de_0000 + i as u32, &pattern(n, i as u64)))
                .unwrap();
            v7.write(&needle(
                i as u64 + 1,
                0xbeef_0000 + i as u32,
                &pattern(n, 100 + i as u64),
            ))
            .unwrap();
        }
        v3.write(&full_needle(100, 77, b"\x1f\x8b compressed bytes as stored"))
            .unwrap();
        v3.write(&needle(200, 5, b"old")).unwrap();
        v3.write(&needle(200, 5, b"new bytes")).unwrap(); // overwrite: the last entry wins
        v3.write(&needle(300, 6, b"short-lived")).unwrap();
        v3.delete(300, 6).unwrap();

        let engine = serving_engine(dir.path(), tls, local);
        let mut r = Reader::new(&engine);
        let big = 4 << 20;
        for (i, &n) in sizes.iter().enumerate() {
            for (vid, cookie, seed) in [
                (3, 0xc0de_0000 + i as u32, i as u64),
                (7, 0xbeef_0000 + i as u32, 100 + i as u64),
            ] {
                let (meta, data) = r
                    .read(vid, i as u64 + 1, cookie, None, big)
                    .unwrap_or_else(|e| panic!("{tls}: {vid},{i}: {e}"));
                assert_eq!(data, pattern(n, seed), "{tls}: volume {vid} needle {i} ({n} bytes)");
                assert_eq!((meta.data_size, meta.range_offset), (n as u64, 0));
                assert_eq!(meta.version, if vid == 3 { 3 } else { 2 });
            }
        }
        // Metadata of a needle uploaded with every field.
        let (meta, data) = r.read(3, 100, 77, None, big).unwrap();
        assert_eq!(data, b"\x1f\x8b compressed bytes as stored");
        assert_eq!(meta.name, b"report.txt.gz");
        assert_eq!(meta.mime, b"text/plain");
        assert_eq!(meta.last_modified, 1_700_000_123);
        assert_ne!(meta.flags & flags::GZIP, 0);
        assert_eq!(r.read(3, 200, 5, None, big).unwrap().1, b"new bytes");

        // Ranges: cut at the end; starting past it is refused; a needle larger than the
        // buffer is refused whole and read range by range.
        let whole = pattern(3 << 20, 7);
        let (m, d) = r.read(3, 8, 0xc0de_0007, Some((1000, 5000)), 8192).unwrap();
        assert_eq!(
            (d.as_slice(), m.range_offset, m.data_size),
            (&whole[1000..6000], 1000, 3 << 20)
        );
        let (_, d) = r.read(3, 8, 0xc0de_0007, Some(((3 << 20) - 10, 4096)), 8192).unwrap();
        assert_eq!(d, &whole[(3 << 20) - 10..]);
        assert_eq!(
            r.read(3, 8, 0xc0de_0007, Some(((3 << 20) + 1, 10)), 8192).unwrap_err(),
            ResultCode::RangeNotSatisfiable
        );
        assert_eq!(
            r.read(3, 8, 0xc0de_0007, None, 8192).unwrap_err(),
            ResultCode::ResponseTooLarge
        );
        let mut pieced = Vec::new();
        while pieced.len() < whole.len() {
            let (_, d) = r
                .read(3, 8, 0xc0de_0007, Some((pieced.len() as u64, 7000)), 8192)
                .unwrap();
            pieced.extend_from_slice(&d);
        }
        assert_eq!(pieced, whole);

        // Precise answers; no bytes without the cookie.
        assert_eq!(r.read(3, 2, 0xdead, None, big).unwrap_err(), ResultCode::CookieMismatch);
        assert_eq!(r.read(3, 300, 6, None, big).unwrap_err(), ResultCode::NeedleDeleted);
        assert_eq!(r.read(3, 9999, 1, None, big).unwrap_err(), ResultCode::NoSuchNeedle);
        assert_eq!(r.read(42, 1, 1, None, big).unwrap_err(), ResultCode::NoSuchVolume);

        // The volume server keeps writing: a new needle is served at once (the engine
        // follows the .idx on a miss), a deletion within a refresh interval, and a volume
        // created later is picked up.
        v3.write(&needle(400, 9, b"written while serving")).unwrap();
        assert_eq!(r.read(3, 400, 9, None, big).unwrap().1, b"written while serving");
        let mut v9 = VolumeWriter::create(dir.path(), "", 9, 3, 16).unwrap();
        v9.write(&needle(1, 1, b"new volume")).unwrap();
        integration_tests::wait_until(
            "volume 9 served",
            || r.read(9, 1, 1, None, big).is_ok_and(|(_, d)| d == b"new volume"),
            || engine.log(),
        );
        // Read-your-writes: an overwrite or a deletion the volume server has indexed is what
        // the next read sees, without waiting for a refresh.
        v3.write(&needle(400, 9, b"overwritten while serving")).unwrap();
        assert_eq!(r.read(3, 400, 9, None, big).unwrap().1, b"overwritten while serving");
        v3.delete(400, 9).unwrap();
        assert_eq!(r.read(3, 400, 9, None, big).unwrap_err(), ResultCode::NeedleDeleted);

        // A corrupt needle (a flipped data byte) is refused, not served.
        let e = v3.write(&needle(500, 10, &pattern(5000, 3))).unwrap();
        v3.poke_dat(e.offset + 16 + 4 + 100, &[0xff]).unwrap();
        assert_eq!(r.read(3, 500, 10, None, big).unwrap_err(), ResultCode::Corrupt);

        // `engine status --json` lists the volumes.
        let st = engine.status_json();
        let vols = st["volumes"].as_array().unwrap();
        assert!(
            vols.iter().any(|v| v["id"] == 7 && v["collection"] == "pics_2026"),
            "{st}"
        );
        assert!(vols.iter().any(|v| v["id"] == 9), "{st}");
        let v3 = vols.iter().find(|v| v["id"] == 3).unwrap();
        // Counted reads: at least the successful and refused ones made above on volume 3.
        assert!(v3["reads_served"].as_u64().unwrap() >= 20, "{v3}");
        assert!(v3["reads_refused"].as_u64().unwrap() >= 5, "{v3}");
        assert!(v3["bytes_served"].as_u64().unwrap() >= 2 * (3 << 20), "{v3}");
        let (status, log) = engine.terminate();
        assert!(status.success(), "{tls}: engine exit {status:?}: {log}");
        assert_eq!(
            log.contains("peer is this engine"),
            local,
            "{tls}, local {local}: {log}"
        );
        // The UCX path connects to the listener; the shortcut never does.
        assert_eq!(
            log.contains("peer engine connected"),
            !local,
            "{tls}, local {local}: {log}"
        );
    }
}
