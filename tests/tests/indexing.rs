//! Start-up at volume-server scale: a generated set of 10 million needles in SeaweedFS's
//! format (volume 1 small, then four volumes of 2.5 million `.idx` entries each). The engine
//! serves at once and indexes the volumes in the background, one by one in id order, each
//! served as soon as it is indexed:
//! - reads of volume 1 and of the largest volumes issued right after start succeed (a read of
//!   a volume still being indexed waits for it on an I/O thread rather than be answered
//!   `no-such-volume`; whether indexing is still under way when they arrive depends on the
//!   machine: the unit test `a_volume_being_indexed_is_waited_for_on_the_io_path` covers that
//!   wait deterministically);
//! - the last volume's `.idx` is a FIFO whose open blocks until the test writes to it (in
//!   production: an index on a hung disk): every other volume is served meanwhile, and
//!   `engine status` shows the indexing under way (5 of 6 volumes); once the FIFO opens, the
//!   indexing completes;
//! - `engine status` counts every needle; the needle maps take about 12 bytes per needle.

use integration_tests::{wait, Engine};
use ring_proto::needle::NEEDLE_META_LEN;
use ring_proto::{opcode, ResultCode, Sqe};
use seaweed_format::writer::{base_name, needle, pattern, VolumeWriter};
use seaweed_format::IdxEntry;

/// Synthetic `.idx` entries per large volume (their ids name no bytes of their own: they all
/// point at the volume's one real needle, whose id only that needle's entry carries).
const ENTRIES: u64 = 2_500_000;
const LARGE: [u32; 4] = [2, 3, 4, 5];

fn read(s: &mut ring_client::Session, peer: u32, vid: u32, id: u64, cookie: u32) -> Result<Vec<u8>, ResultCode> {
    s.submit(&Sqe {
        opcode: opcode::READ_NEEDLE,
        peer,
        user_data: id,
        buf_len: 1 << 20,
        aux: vid,
        args: [id, cookie as u64, 0, 0],
        ..Default::default()
    })
    .unwrap();
    let c = wait(s);
    assert_eq!(c.user_data, id);
    if c.result < 0 {
        return Err(ResultCode::from_result(c.result).expect("known code"));
    }
    let mut data = vec![0u8; c.result as usize];
    s.buffer().read(NEEDLE_META_LEN, &mut data).unwrap();
    Ok(data)
}

#[test]
fn ten_million_needles_are_served_volume_by_volume_as_each_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut small = VolumeWriter::create(dir.path(), "", 1, 3, 16).unwrap();
    for id in 1..=3u64 {
        small.write(&needle(id, 100 + id as u32, &pattern(1000, id))).unwrap();
    }
    for vid in LARGE {
        let mut v = VolumeWriter::create(dir.path(), "", vid, 3, 16).unwrap();
        let real = v.write(&needle(1, vid, &pattern(4096, vid as u64))).unwrap();
        let mut idx = Vec::with_capacity(ENTRIES as usize * 16);
        for id in 2..2 + ENTRIES {
            IdxEntry {
                id,
                offset: real.offset,
                size: real.size,
            }
            .encode_into(16, &mut idx)
            .unwrap();
        }
        v.append_idx_bytes(&idx).unwrap();
    }
    // Volume 6: its index cannot be opened until the test opens the FIFO's other end.
    let mut held = VolumeWriter::create(dir.path(), "", 6, 3, 16).unwrap();
    held.write(&needle(1, 6, b"held back")).unwrap();
    drop(held);
    let fifo = dir.path().join(format!("{}.idx", base_name("", 6)));
    std::fs::remove_file(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();

    let cfg = dir.path().join("engine.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ucx]\nlisten = \"127.0.0.1:0\"\ntransports = \"tcp\"\nnet-devices = \"lo\"\n\
             [seaweedfs]\ndirectories = [{:?}]\nidx-entry-size = 16\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let engine = Engine::start(&["--config", cfg.to_str().unwrap(), "--lease-ms", "0"]);
    let mut s = engine.connect();
    let peer = s.connect_peer(&engine.ucx_listen_addr()).unwrap();
    // At once: volume 1, and volume 5 (the last large one): both wait for their indexing if
    // it is not done, neither is refused.
    assert_eq!(read(&mut s, peer, 1, 2, 102).unwrap(), pattern(1000, 2));
    assert_eq!(read(&mut s, peer, 5, 1, 5).unwrap(), pattern(4096, 5));
    integration_tests::wait_until(
        "every volume but the held one indexed",
        || engine.status_json()["volume_indexing"]["volumes_indexed"] == 5,
        || engine.log(),
    );
    // Served while the last volume is not indexed.
    let st = engine.status_json();
    let ix = &st["volume_indexing"];
    assert_eq!(ix["done"], false, "{ix}");
    assert_eq!(ix["volumes_found"].as_u64(), Some(6), "{ix}");
    assert_eq!(ix["entries"].as_u64(), Some(3 + 4 * (ENTRIES + 1)), "{ix}");
    assert_eq!(read(&mut s, peer, 1, 3, 103).unwrap(), pattern(1000, 3));
    assert_eq!(read(&mut s, peer, 3, 1, 3).unwrap(), pattern(4096, 3));
    assert!(!engine.log().contains("every volume indexed"), "{}", engine.log());

    // The index opens (empty): volume 6 is indexed, the indexing done.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    integration_tests::wait_until(
        "the first indexing done",
        || engine.status_json()["volume_indexing"]["done"] == true,
        || engine.log(),
    );
    assert_eq!(read(&mut s, peer, 6, 1, 6), Err(ResultCode::NoSuchNeedle));
    let st = engine.status_json();
    let vols = st["volumes"].as_array().unwrap();
    let needles: u64 = vols.iter().map(|v| v["needles_live"].as_u64().unwrap()).sum();
    assert_eq!(needles, 3 + 4 * (ENTRIES + 1), "{st}");
    assert_eq!(st["volume_indexing"]["volumes_indexed"].as_u64(), Some(6), "{st}");
    assert!(needles >= 10_000_000);
    let map_bytes: u64 = vols.iter().map(|v| v["needle_map_bytes"].as_u64().unwrap()).sum();
    let per_needle = map_bytes as f64 / needles as f64;
    assert!(per_needle < 14.0, "{per_needle} bytes per needle in the needle maps");
    // A needle of the synthetic ones points at another needle's bytes: refused as corrupt.
    assert_eq!(read(&mut s, peer, 2, 77, 2), Err(ResultCode::Corrupt));
    assert!(
        engine.log().contains("seaweedfs: every volume indexed"),
        "{}",
        engine.log()
    );
    drop(s);
    let (status, log) = engine.terminate();
    assert!(status.success(), "engine exit {status:?}: {log}");
}
