//! The split between a busy-polling worker and the I/O threads: what a polling read hands
//! over ([`Read::NeedsIo`]) and that the blocking read then serves it, byte for byte.

use std::fs::File;
use std::path::{Path, PathBuf};

use ring_proto::ResultCode;

use super::testvol::{drop_page_cache, needle, TempDir, TestVolume};
use super::*;
use crate::config::SeaweedfsConfig;

fn store(dir: &Path) -> Arc<VolumeStore> {
    VolumeStore::open(&SeaweedfsConfig {
        directories: vec![dir.to_path_buf()],
        ..Default::default()
    })
    .unwrap()
}

fn query(needle: u64, cookie: u32) -> NeedleQuery {
    NeedleQuery {
        volume: 5,
        needle,
        cookie,
        range_offset: 0,
        max_len: 64 << 20,
        ranged: false,
    }
}

fn polling(s: &VolumeStore, q: &NeedleQuery) -> Result<Option<NeedsIo>, ReadNeedleError> {
    s.read_polling(q).map(|r| match r {
        Read::Ready(_) => None,
        Read::NeedsIo(why) => Some(why),
    })
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i >> 12) as u8)
        .collect()
}

fn dat_path(dir: &Path) -> PathBuf {
    dir.join(format!("{}.dat", seaweed_format::writer::base_name("", 5)))
}

fn served_io(s: &VolumeStore) -> u64 {
    s.volumes().iter().find(|v| v.id == 5).unwrap().reads_served_io
}

#[test]
fn cold_pages_go_to_the_io_path_and_are_served_from_there() {
    let d = TempDir::on_disk("cold");
    let mut v = TestVolume::create(d.path(), "", 5, 3, 16);
    let big = data(3 << 20, 1);
    v.write(&needle(1, 7, &data(100, 2)));
    v.write(&needle(2, 7, &big));
    let s = store(d.path());
    drop_page_cache(&File::open(dat_path(d.path())).unwrap());
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), Some(NeedsIo::ColdPages));
    let n = s.read_blocking(&query(2, 7)).unwrap();
    assert_eq!(n.data(), big.as_slice());
    // Now resident, and its CRC checked: a worker serves it itself.
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), None);
    assert_eq!(served_io(&s), 1);
    // A needle the map does not have needs no page: answered at once.
    drop(n);
    assert_eq!(polling(&s, &query(9, 7)).unwrap_err().code(), ResultCode::NoSuchNeedle);
}

#[test]
fn a_large_needles_first_crc_check_goes_to_the_io_path() {
    let d = TempDir::new("crc-io");
    let mut v = TestVolume::create(d.path(), "", 5, 3, 16);
    v.write(&needle(1, 7, &data(64 << 10, 3)));
    v.write(&needle(2, 7, &data((64 << 10) + 1, 4)));
    let s = store(d.path());
    // At the limit a worker checks it; one byte over, an I/O thread does, once.
    assert_eq!(polling(&s, &query(1, 7)).unwrap(), None);
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), Some(NeedsIo::LargeCrc));
    assert_eq!(s.read_blocking(&query(2, 7)).unwrap().data(), data((64 << 10) + 1, 4));
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), None);
    // Without verify-crc nothing is left to check.
    s.reconfigure(&SeaweedfsConfig {
        directories: vec![d.path().to_path_buf()],
        verify_crc: false,
        ..Default::default()
    });
    v.write(&needle(3, 7, &data(1 << 20, 5)));
    s.refresh();
    assert_eq!(polling(&s, &query(3, 7)).unwrap(), None);
}

#[test]
fn an_index_that_grew_is_caught_up_on_the_io_path() {
    let d = TempDir::new("idx-io");
    let mut v = TestVolume::create(d.path(), "", 5, 3, 16);
    v.write(&needle(1, 7, b"first"));
    let s = store(d.path());
    v.write(&needle(2, 7, b"written after open"));
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), Some(NeedsIo::IndexGrew));
    assert_eq!(s.read_blocking(&query(2, 7)).unwrap().data(), b"written after open");
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), None);
}

#[test]
fn a_dat_truncated_under_the_mapping_is_corrupt_not_a_crash() {
    let d = TempDir::on_disk("truncated");
    let mut v = TestVolume::create(d.path(), "", 5, 3, 16);
    v.write(&needle(1, 7, b"kept"));
    let e = v.write(&needle(2, 7, &data(1 << 20, 6)));
    let s = store(d.path());
    // Someone cuts the .dat inside needle 2 while the engine maps all of it (SeaweedFS never
    // does; a tool rewriting files in place might). Touching the cut pages would SIGBUS.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dat_path(d.path()))
        .unwrap()
        .set_len(e.offset + 8192)
        .unwrap();
    assert_eq!(polling(&s, &query(2, 7)).unwrap(), Some(NeedsIo::ColdPages));
    let err = s.read_blocking(&query(2, 7)).unwrap_err();
    assert_eq!(err.code(), ResultCode::Corrupt);
    assert!(err.to_string().contains("shorter than the mapping"), "{err}");
    assert_eq!(s.read_blocking(&query(1, 7)).unwrap().data(), b"kept");
}

#[test]
fn a_volume_being_indexed_is_waited_for_on_the_io_path() {
    let d = TempDir::new("indexing");
    let mut v = TestVolume::create(d.path(), "", 5, 3, 16);
    v.write(&needle(1, 7, b"indexed later"));
    let s = VolumeStore::start(&SeaweedfsConfig {
        directories: vec![d.path().to_path_buf()],
        ..Default::default()
    })
    .unwrap();
    let ix = s.indexing();
    assert_eq!((ix.volumes_found, ix.volumes_indexed, ix.done), (1, 0, false));
    // Found, not indexed yet: not "no such volume", but a wait on an I/O thread.
    assert_eq!(polling(&s, &query(1, 7)).unwrap(), Some(NeedsIo::Indexing));
    let q = NeedleQuery {
        volume: 6,
        ..query(1, 7)
    };
    assert_eq!(polling(&s, &q).unwrap_err().code(), ResultCode::NoSuchVolume);
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || s.read_blocking(&query(1, 7)).map(|n| n.data().to_vec()))
    };
    // One read waits at a time (it holds an I/O thread): once that one waits, another is
    // answered at once.
    while s.indexing_waiters() == 0 {
        std::thread::yield_now();
    }
    assert_eq!(s.read_blocking(&query(1, 7)).unwrap_err().code(), ResultCode::Throttled);
    s.refresh();
    assert_eq!(waiter.join().unwrap().unwrap(), b"indexed later");
    let ix = s.indexing();
    assert_eq!(
        (ix.volumes_found, ix.volumes_indexed, ix.entries, ix.done),
        (1, 1, 1, true)
    );
    assert_eq!(polling(&s, &query(1, 7)).unwrap(), None);
}
