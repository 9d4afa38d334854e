//! Store tests against volumes written in SeaweedFS's format by `testvol.rs`.

use std::path::Path;
use std::sync::Arc;

use ring_proto::needle::flags;
use ring_proto::ResultCode;

use super::format::{self, IdxEntry, NeedleSpec};
use super::store::parse_volume_name;
use super::testvol::{full_needle, needle, TempDir, TestVolume};
use super::*;
use crate::config::{IdxEntrySize, SeaweedfsConfig};

const MAX: u64 = 64 << 20;

fn cfg(dirs: &[&Path]) -> SeaweedfsConfig {
    SeaweedfsConfig {
        directories: dirs.iter().map(|d| d.to_path_buf()).collect(),
        ..Default::default()
    }
}

fn read_all(s: &VolumeStore, vol: u32, id: u64, cookie: u32) -> Result<NeedleRead, ReadNeedleError> {
    s.read(vol, id, cookie, 0, MAX, false)
}

fn code(r: Result<NeedleRead, ReadNeedleError>) -> ResultCode {
    r.expect_err("an error").code()
}

/// The file names a refresh could not serve, in its order.
fn failed_names(r: &RefreshSummary) -> Vec<String> {
    r.failed
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into())
        .collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn every_version_and_entry_size_reads_back_with_all_fields() {
    for version in [2u8, 3] {
        for es in [16usize, 17] {
            let d = TempDir::new("fields");
            let mut v = TestVolume::create(d.path(), "", 3, version, es);
            let full = full_needle(0x10, 0xaabb_ccdd, b"gzipped bytes");
            v.write(&full);
            v.write(&needle(0x11, 7, b"plain"));
            let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
            let r = read_all(&s, 3, 0x10, 0xaabb_ccdd).unwrap();
            assert_eq!(r.data(), b"gzipped bytes");
            let m = &r.meta;
            assert_eq!(m.data_size, 13);
            assert_eq!(m.range_offset, 0);
            assert_eq!(m.flags, full.flags);
            assert!(m.flags & flags::GZIP != 0);
            assert_eq!(m.name, b"report.txt.gz");
            assert_eq!(m.mime, b"text/plain");
            assert_eq!(m.last_modified, 1_700_000_123);
            assert_eq!(m.ttl, [255, 6]);
            assert_eq!(m.version, version);
            assert_eq!(m.checksum, format::crc32c(b"gzipped bytes"));
            assert_eq!(m.append_at_ns, if version == 3 { full.append_at_ns } else { 0 });
            let r = read_all(&s, 3, 0x11, 7).unwrap();
            assert_eq!(r.data(), b"plain");
            assert_eq!((r.meta.flags, &r.meta.name[..]), (0, &b""[..]));
            let info = &s.volumes()[0];
            assert_eq!(
                (
                    info.id,
                    info.version,
                    info.idx_entry_size,
                    info.needles_live,
                    info.idx_entries
                ),
                (3, version, es as u8, 2, 2)
            );
            assert!(
                info.idx_entry_size_confirmed,
                "v{version}/{es}: the content shows the entry size"
            );
            assert_eq!(info.dat_bytes, v.dat_len());
        }
    }
}

#[test]
fn answers_deleted_missing_cookie_and_unknown_volume() {
    let d = TempDir::new("answers");
    let mut v = TestVolume::create(d.path(), "pics", 9, 3, 16);
    v.write(&needle(1, 100, b"one"));
    v.write(&needle(2, 200, b"two"));
    v.delete(2, 200);
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(read_all(&s, 9, 1, 100).unwrap().data(), b"one");
    assert_eq!(code(read_all(&s, 9, 2, 200)), ResultCode::NeedleDeleted);
    assert_eq!(code(read_all(&s, 9, 3, 0)), ResultCode::NoSuchNeedle);
    assert_eq!(code(read_all(&s, 9, 1, 101)), ResultCode::CookieMismatch);
    assert_eq!(code(read_all(&s, 10, 1, 100)), ResultCode::NoSuchVolume);
    let i = &s.volumes()[0];
    assert_eq!(
        (i.collection.as_str(), i.needles_live, i.needles_deleted),
        ("pics", 1, 1)
    );
    // A deletion entry with offset 0 (as other SeaweedFS paths write) deletes too.
    v.append_idx(&IdxEntry {
        id: 1,
        offset: 0,
        size: 3,
    });
    s.refresh();
    assert_eq!(code(read_all(&s, 9, 1, 100)), ResultCode::NeedleDeleted);
}

#[test]
fn overwrite_last_entry_wins_and_rewrite_after_delete() {
    let d = TempDir::new("overwrite");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 16);
    v.write(&needle(5, 1, b"first"));
    v.write(&needle(5, 1, b"second version"));
    v.write(&needle(6, 1, b"x"));
    v.delete(6, 1);
    v.write(&needle(6, 1, b"back again"));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(read_all(&s, 1, 5, 1).unwrap().data(), b"second version");
    assert_eq!(read_all(&s, 1, 6, 1).unwrap().data(), b"back again");
    let i = &s.volumes()[0];
    assert_eq!((i.needles_live, i.needles_deleted, i.idx_entries), (2, 0, 5));
}

#[test]
fn empty_needle_reads_as_no_bytes() {
    let d = TempDir::new("empty");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 16);
    let e = v.write(&needle(7, 9, b""));
    assert_eq!(e.size, 0);
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let r = read_all(&s, 1, 7, 9).unwrap();
    assert!(r.data().is_empty());
    assert_eq!(r.meta.data_size, 0);
    assert_eq!(r.meta.append_at_ns, needle(7, 9, b"").append_at_ns);
    // Any cookie, as the volume server answers (see `Volume::read`).
    assert!(read_all(&s, 1, 7, 8).unwrap().data().is_empty());
    let r = s.read(1, 7, 9, 0, 10, true).unwrap();
    assert!(r.data().is_empty());
    assert_eq!(code(s.read(1, 7, 9, 1, 10, true)), ResultCode::RangeNotSatisfiable);
}

#[test]
fn large_needle_whole_and_by_ranges() {
    let d = TempDir::new("large");
    let mut v = TestVolume::create(d.path(), "", 2, 3, 17);
    let data = pattern(6 << 20 | 12345, 3);
    v.write(&full_needle(1, 1, &data));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let r = read_all(&s, 2, 1, 1).unwrap();
    assert_eq!(r.data(), &data[..]);
    assert_eq!(r.meta.data_size, data.len() as u64);
    assert!(r.keep.len() >= v.dat_len());
    let size = data.len() as u64;
    assert_eq!(code(s.read(2, 1, 1, 0, size - 1, false)), ResultCode::ResponseTooLarge);
    // Range by range, as a client with a 1 MiB buffer reads it.
    let mut got = Vec::new();
    let mut off = 0;
    while off < size {
        let r = s.read(2, 1, 1, off, 1 << 20, true).unwrap();
        assert_eq!(r.meta.range_offset, off);
        assert!(!r.data().is_empty());
        got.extend_from_slice(r.data());
        off += r.len() as u64;
    }
    assert_eq!(got, data);
    assert!(
        s.read(2, 1, 1, size, 100, true).unwrap().data().is_empty(),
        "a range at the end is empty"
    );
    assert_eq!(
        code(s.read(2, 1, 1, size + 1, 100, true)),
        ResultCode::RangeNotSatisfiable
    );
    let r = s.read(2, 1, 1, size - 10, 100, true).unwrap();
    assert_eq!(r.data(), &data[data.len() - 10..]);
}

#[test]
fn corrupt_crc_header_and_truncation_are_corrupt() {
    let d = TempDir::new("corrupt");
    let mut v = TestVolume::create(d.path(), "", 4, 3, 16);
    let a = v.write(&needle(1, 1, b"aaaaaaaaaaaaaaaa"));
    let b = v.write(&needle(2, 1, b"bbbbbbbbbbbbbbbb"));
    let c = v.write(&needle(3, 1, b"cccccccccccccccc"));
    // Flip a data byte of needle 1 (data starts after header + data size field).
    v.poke_dat(a.offset + 16 + 4 + 2, b"X");
    // Needle 2's idx entry points at needle 3's bytes.
    v.append_idx(&IdxEntry {
        id: 2,
        offset: c.offset,
        size: b.size,
    });
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let e = read_all(&s, 4, 1, 1).unwrap_err();
    assert_eq!(e.code(), ResultCode::Corrupt);
    assert!(e.to_string().contains("CRC-32C"), "{e}");
    let e = read_all(&s, 4, 2, 1).unwrap_err();
    assert_eq!(e.code(), ResultCode::Corrupt);
    assert!(e.to_string().contains("names needle 3"), "{e}");
    // A wrong cookie is answered as such even for a corrupt needle: nothing about it leaks.
    assert_eq!(code(read_all(&s, 4, 1, 2)), ResultCode::CookieMismatch);
    assert_eq!(read_all(&s, 4, 3, 1).unwrap().data(), b"cccccccccccccccc");
    // An entry naming bytes past the end of the .dat.
    v.append_idx(&IdxEntry {
        id: 9,
        offset: v.dat_len() + 8,
        size: 40,
    });
    let e = read_all(&s, 4, 9, 0).unwrap_err();
    assert_eq!(e.code(), ResultCode::Corrupt);
    assert!(e.to_string().contains("beyond the file"), "{e}");
    // With verify-crc off the damaged needle is served as stored.
    let s = VolumeStore::open(&SeaweedfsConfig {
        verify_crc: false,
        ..cfg(&[d.path()])
    })
    .unwrap();
    assert_eq!(read_all(&s, 4, 1, 1).unwrap().data(), b"aaXaaaaaaaaaaaaa");
}

#[test]
fn crc_is_verified_once_per_stored_needle() {
    let d = TempDir::new("crc-once");
    let mut v = TestVolume::create(d.path(), "", 4, 3, 16);
    let a = v.write(&needle(1, 1, b"0123456789"));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert!(read_all(&s, 4, 1, 1).is_ok());
    // The .dat never changes in place under SeaweedFS; if it did, the verified needle is not
    // checked again (this documents the cache, it is not a behaviour to rely on).
    v.poke_dat(a.offset + 20, b"Z");
    assert_eq!(read_all(&s, 4, 1, 1).unwrap().data(), b"Z123456789");
    // A rewrite of the needle is a new stored needle, checked anew.
    let b = v.write(&needle(1, 1, b"abcdefghij"));
    v.poke_dat(b.offset + 20, b"Z");
    s.refresh();
    assert_eq!(code(read_all(&s, 4, 1, 1)), ResultCode::Corrupt);
}

#[test]
fn legacy_checksums_verify_and_report_the_crc() {
    let d = TempDir::new("legacy");
    let mut v = TestVolume::create(d.path(), "", 4, 2, 16);
    let data = b"written by seaweedfs 3.08";
    let crc = format::crc32c(data);
    v.write(&NeedleSpec {
        checksum: Some(format::legacy_crc(crc)),
        ..needle(1, 1, data)
    });
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(read_all(&s, 4, 1, 1).unwrap().meta.checksum, crc);
    assert_eq!(read_all(&s, 4, 1, 1).unwrap().meta.checksum, crc, "also once cached");
}

#[test]
fn version_1_volume_reads_whole_body_as_data() {
    let d = TempDir::new("v1");
    let mut v = TestVolume::create(d.path(), "", 6, 1, 16);
    v.write(&needle(1, 5, b"old format"));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let r = read_all(&s, 6, 1, 5).unwrap();
    assert_eq!(r.data(), b"old format");
    assert_eq!((r.meta.version, r.meta.flags, r.meta.append_at_ns), (1, 0, 0));
}

#[test]
fn super_block_extra_and_unaligned_end() {
    let d = TempDir::new("extra");
    let mut v = TestVolume::create_in(d.path(), d.path(), "", 8, 3, 16, &[1, 2, 3, 4, 5]);
    let e = v.write(&needle(1, 1, b"after extra"));
    assert_eq!(
        e.offset, 16,
        "13 bytes of super block, the needle at the next multiple of 8"
    );
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(read_all(&s, 8, 1, 1).unwrap().data(), b"after extra");
}

#[test]
fn expired_ttl_is_no_such_needle() {
    let d = TempDir::new("ttl");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 16);
    v.write(&NeedleSpec {
        ttl: [1, 1], // one minute after 2023
        ..full_needle(1, 1, b"short-lived")
    });
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(code(read_all(&s, 1, 1, 1)), ResultCode::NoSuchNeedle);
}

#[test]
fn bad_volumes_are_skipped_and_others_served() {
    let d = TempDir::new("skip");
    let mut good = TestVolume::create(d.path(), "", 1, 3, 16);
    good.write(&needle(1, 1, b"good"));
    // Shorter than a super block.
    std::fs::write(d.path().join("2.dat"), [3u8, 0]).unwrap();
    std::fs::write(d.path().join("2.idx"), []).unwrap();
    // Unknown version.
    std::fs::write(d.path().join("3.dat"), [9u8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    std::fs::write(d.path().join("3.idx"), []).unwrap();
    // No .idx.
    std::fs::write(d.path().join("4.dat"), [3u8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    // Not volumes at all.
    for n in ["x.dat", "_5.dat", "007.dat", "+8.dat", "9.dat.tmp", "10.idx"] {
        std::fs::write(d.path().join(n), [3u8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    }
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(s.volumes().iter().map(|i| i.id).collect::<Vec<_>>(), [1]);
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"good");
    let r = s.refresh();
    assert_eq!(failed_names(&r), ["2.dat", "3.dat", "4.dat"], "{:?}", r.failed);
    assert!(r.failed[0].1.contains("shorter than a super block"), "{:?}", r.failed);
    assert!(r.failed[1].1.contains("version 9"), "{:?}", r.failed);
    assert!(r.failed[2].1.contains("no 4.idx"), "{:?}", r.failed);
    // Once fixed, the next refresh serves it.
    let mut v2 = TestVolume::create(d.path(), "", 2, 3, 16);
    v2.write(&needle(1, 1, b"now fine"));
    let r = s.refresh();
    assert_eq!(r.added, [2]);
    assert_eq!(read_all(&s, 2, 1, 1).unwrap().data(), b"now fine");
}

#[test]
fn truncated_dat_fails_only_the_needles_past_its_end() {
    let d = TempDir::new("trunc");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 16);
    v.write(&needle(1, 1, b"kept"));
    let lost = v.write(&needle(2, 1, b"lost in a crash"));
    let f = std::fs::OpenOptions::new().write(true).open(&v.dat_path).unwrap();
    f.set_len(lost.offset + 10).unwrap();
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"kept");
    assert_eq!(code(read_all(&s, 1, 2, 1)), ResultCode::Corrupt);
}

#[test]
fn follows_the_idx_as_another_writer_appends() {
    let d = TempDir::new("follow");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 17);
    v.write(&needle(1, 1, b"before"));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let before = read_all(&s, 1, 1, 1).unwrap();
    // Appended after open: picked up by refresh.
    for id in 2..50u64 {
        v.write(&needle(id, 1, &pattern(id as usize * 100, id as u8)));
    }
    let r = s.refresh();
    assert_eq!((r.new_entries, r.changed()), (48, false));
    for id in 2..50u64 {
        assert_eq!(
            read_all(&s, 1, id, 1).unwrap().data(),
            &pattern(id as usize * 100, id as u8)[..]
        );
    }
    // Appended, no refresh: the miss reads the new entries itself (and maps the grown .dat).
    v.write(&needle(50, 1, &pattern(1 << 20, 50)));
    assert_eq!(read_all(&s, 1, 50, 1).unwrap().data(), &pattern(1 << 20, 50)[..]);
    v.delete(1, 1);
    s.refresh();
    assert_eq!(code(read_all(&s, 1, 1, 1)), ResultCode::NeedleDeleted);
    // A read from before the remaps still sees its bytes.
    assert_eq!(before.data(), b"before");
}

#[test]
fn partial_trailing_idx_entry_is_read_when_complete() {
    for es in [16usize, 17] {
        let d = TempDir::new("partial");
        let mut v = TestVolume::create(d.path(), "", 1, 3, es);
        v.write(&needle(1, 1, b"one"));
        let e = v.append_dat(&needle(2, 1, b"two"));
        let mut b = Vec::new();
        e.encode_into(es, &mut b).unwrap();
        v.append_idx_bytes(&b[..7]);
        let s = VolumeStore::open(&SeaweedfsConfig {
            idx_entry_size: IdxEntrySize::Fixed(es as i64),
            ..cfg(&[d.path()])
        })
        .unwrap();
        assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"one");
        assert_eq!(code(read_all(&s, 1, 2, 1)), ResultCode::NoSuchNeedle);
        assert_eq!(s.refresh().new_entries, 0);
        v.append_idx_bytes(&b[7..]);
        assert_eq!(read_all(&s, 1, 2, 1).unwrap().data(), b"two");
        assert_eq!(s.volumes()[0].idx_entries, 2);
    }
}

#[test]
fn partial_entry_at_open_with_auto_detection() {
    let d = TempDir::new("partial-auto");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 17);
    for id in 1..=3 {
        v.write(&needle(id, 1, b"abc"));
    }
    v.append_idx_bytes(&[0, 0, 0]);
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(read_all(&s, 1, 3, 1).unwrap().data(), b"abc");
    assert_eq!(s.volumes()[0].idx_entry_size, 17);
}

/// Compaction as `CommitCompact` does it: `.cpd`/`.cpx` written, a `.cpc` marker, the two
/// renames, the marker removed.
#[test]
fn compaction_replacement_is_picked_up() {
    let d = TempDir::new("compact");
    let mut v = TestVolume::create(d.path(), "c", 1, 3, 16);
    v.write(&needle(1, 1, b"keep me"));
    v.write(&needle(2, 1, b"delete me"));
    v.delete(2, 1);
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let old_read = read_all(&s, 1, 1, 1).unwrap();

    let staging = TempDir::new("compact-stage");
    let mut nv = TestVolume::create(staging.path(), "c", 1, 3, 16);
    nv.write(&needle(1, 1, b"keep me"));
    nv.write(&needle(3, 1, b"written during compaction"));
    std::fs::write(d.path().join("c_1.cpc"), b"").unwrap();
    std::fs::rename(&nv.dat_path, d.path().join("c_1.dat")).unwrap();
    // Between the two renames, with the marker present: the old volume stays as it was.
    let r = s.refresh();
    assert!(!r.changed(), "{r:?}");
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"keep me");
    assert_eq!(code(read_all(&s, 1, 2, 1)), ResultCode::NeedleDeleted);
    std::fs::rename(&nv.idx_path, d.path().join("c_1.idx")).unwrap();
    std::fs::remove_file(d.path().join("c_1.cpc")).unwrap();
    let r = s.refresh();
    assert_eq!(r.reopened, [1]);
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"keep me");
    assert_eq!(read_all(&s, 1, 3, 1).unwrap().data(), b"written during compaction");
    assert_eq!(code(read_all(&s, 1, 2, 1)), ResultCode::NoSuchNeedle);
    // The read from the old file still holds its (now unlinked) bytes.
    assert_eq!(old_read.data(), b"keep me");
    // And the store follows the new files from here.
    let mut nv = nv;
    nv.dat_path = d.path().join("c_1.dat");
    nv.write(&needle(4, 1, b"after"));
    assert_eq!(read_all(&s, 1, 4, 1).unwrap().data(), b"after");
}

#[test]
fn idx_shrunk_or_rewritten_reopens_the_volume() {
    let d = TempDir::new("shrink");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 16);
    v.write(&needle(1, 1, b"one"));
    v.write(&needle(2, 1, b"two"));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert!(read_all(&s, 1, 2, 1).is_ok());
    // Shrink in place (same inode): the last entry is gone.
    let f = std::fs::OpenOptions::new().write(true).open(&v.idx_path).unwrap();
    f.set_len(16).unwrap();
    let r = s.refresh();
    assert_eq!(r.reopened, [1]);
    assert_eq!(code(read_all(&s, 1, 2, 1)), ResultCode::NoSuchNeedle);
    // Rewritten to the same length with other content: noticed by the tail check.
    let e = v.append_dat(&needle(3, 1, b"three"));
    let mut b = Vec::new();
    e.encode_into(16, &mut b).unwrap();
    f.set_len(0).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&b, 0).unwrap();
    let r = s.refresh();
    assert_eq!(r.reopened, [1]);
    assert_eq!(read_all(&s, 1, 3, 1).unwrap().data(), b"three");
    assert_eq!(code(read_all(&s, 1, 1, 1)), ResultCode::NoSuchNeedle);
}

#[test]
fn volumes_appear_and_vanish() {
    let d = TempDir::new("appear");
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert!(s.volumes().is_empty());
    let mut v = TestVolume::create(d.path(), "my_coll_x", 7, 3, 16);
    v.write(&needle(1, 1, b"new"));
    let r = s.refresh();
    assert_eq!((r.added.as_slice(), r.volumes), (&[7][..], 1));
    assert_eq!(read_all(&s, 7, 1, 1).unwrap().data(), b"new");
    assert_eq!(s.volumes()[0].collection, "my_coll_x");
    // A copy in progress (.note) is not served yet.
    let mut w = TestVolume::create(d.path(), "", 8, 3, 16);
    w.write(&needle(1, 1, b"copying"));
    std::fs::write(d.path().join("8.note"), b"copying from x").unwrap();
    assert!(s.refresh().added.is_empty());
    std::fs::remove_file(d.path().join("8.note")).unwrap();
    assert_eq!(s.refresh().added, [8]);
    let held = read_all(&s, 7, 1, 1).unwrap();
    std::fs::remove_file(&v.dat_path).unwrap();
    std::fs::remove_file(&v.idx_path).unwrap();
    let r = s.refresh();
    assert_eq!((r.removed.as_slice(), r.volumes), (&[7][..], 1));
    assert_eq!(code(read_all(&s, 7, 1, 1)), ResultCode::NoSuchVolume);
    assert_eq!(held.data(), b"new");
}

#[test]
fn volume_names_follow_seaweedfs() {
    assert_eq!(parse_volume_name("7"), Some(("", 7)));
    assert_eq!(parse_volume_name("pics_7"), Some(("pics", 7)));
    assert_eq!(parse_volume_name("my_coll_x_42"), Some(("my_coll_x", 42)));
    assert_eq!(parse_volume_name("_7"), None);
    assert_eq!(parse_volume_name("pics_"), None);
    assert_eq!(parse_volume_name("pics_07"), None);
    assert_eq!(parse_volume_name("pics_+7"), None);
    assert_eq!(parse_volume_name("4294967296"), None);
    assert_eq!(parse_volume_name("0"), Some(("", 0)));
}

#[test]
fn separate_idx_directory_and_beside_wins() {
    let d = TempDir::new("idxdir");
    let data = d.sub("data");
    let idx = d.sub("idx");
    let mut v = TestVolume::create_in(&data, &idx, "", 1, 3, 16, &[]);
    v.write(&needle(1, 1, b"idx elsewhere"));
    let s = VolumeStore::open(&SeaweedfsConfig {
        idx_directories: vec![idx.clone()],
        ..cfg(&[&data])
    })
    .unwrap();
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"idx elsewhere");
    assert_eq!(s.volumes()[0].idx_path, idx.join("1.idx"));
    // Without the idx directory it is not served.
    let s2 = VolumeStore::open(&cfg(&[&data])).unwrap();
    assert!(s2.volumes().is_empty());
    // An .idx beside the .dat wins (SeaweedFS's rule for volumes from before -dir.idx).
    std::fs::copy(&v.idx_path, data.join("1.idx")).unwrap();
    let r = s.refresh();
    assert_eq!(r.reopened, [1]);
    assert_eq!(s.volumes()[0].idx_path, data.join("1.idx"));
}

#[test]
fn auto_entry_size_by_content_when_the_length_is_ambiguous() {
    let d = TempDir::new("auto");
    // 16 entries of 17 bytes = 272 bytes, a multiple of 16 as well.
    let mut v = TestVolume::create(d.path(), "", 1, 3, 17);
    for id in 1..=16 {
        v.write(&needle(id, 1, b"x"));
    }
    assert_eq!(v.idx_len(), 272);
    let mut w = TestVolume::create(d.path(), "", 2, 2, 16);
    for id in 1..=17 {
        w.write(&needle(id, 1, b"y"));
    }
    assert_eq!(w.idx_len(), 272);
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let i = s.volumes();
    assert_eq!((i[0].idx_entry_size, i[0].idx_entry_size_confirmed), (17, true));
    assert_eq!((i[1].idx_entry_size, i[1].idx_entry_size_confirmed), (16, true));
    assert_eq!(read_all(&s, 1, 16, 1).unwrap().data(), b"x");
    assert_eq!(read_all(&s, 2, 17, 1).unwrap().data(), b"y");
}

#[test]
fn auto_entry_size_guess_is_corrected_when_the_idx_grows() {
    let d = TempDir::new("auto-grow");
    // A new, empty volume of a 5-byte-offset server: nothing shows the entry size yet.
    let mut v = TestVolume::create(d.path(), "", 1, 3, 17);
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    assert_eq!(
        (s.volumes()[0].idx_entry_size, s.volumes()[0].idx_entry_size_confirmed),
        (16, false)
    );
    // 16 entries: 272 bytes, which read as 16-byte entries would be 17 garbage ones.
    for id in 1..=16 {
        v.write(&needle(id, 1, &[id as u8; 5]));
    }
    s.refresh();
    assert_eq!(
        (s.volumes()[0].idx_entry_size, s.volumes()[0].idx_entry_size_confirmed),
        (17, true)
    );
    for id in 1..=16 {
        assert_eq!(read_all(&s, 1, id, 1).unwrap().data(), &[id as u8; 5]);
    }
    assert_eq!(s.volumes()[0].needles_live, 16);
    // A volume that appears later, empty, takes the size its neighbours showed.
    let _w = TestVolume::create(d.path(), "", 2, 3, 17);
    s.refresh();
    assert_eq!(s.volumes()[1].idx_entry_size, 17);
    // So does one opened in the same pass, after them.
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let i = s.volumes();
    assert_eq!((i[0].idx_entry_size, i[0].idx_entry_size_confirmed), (17, true));
    assert_eq!((i[1].idx_entry_size, i[1].idx_entry_size_confirmed), (17, false));
}

#[test]
fn vif_names_the_entry_size() {
    let d = TempDir::new("vif");
    // Empty volumes: only the .vif can tell.
    let v = TestVolume::create(d.path(), "", 1, 3, 17);
    v.write_vif(5);
    let w = TestVolume::create(d.path(), "", 2, 3, 16);
    w.write_vif(4);
    // bytesOffset 0 (a .vif from before the field) and an unreadable .vif say nothing.
    let mut x = TestVolume::create(d.path(), "", 3, 3, 17);
    x.write(&needle(1, 1, b"x"));
    x.write_vif(0);
    let mut y = TestVolume::create(d.path(), "", 4, 3, 17);
    y.write(&needle(1, 1, b"y"));
    std::fs::write(y.dat_path.with_extension("vif"), b"not json").unwrap();
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let sizes: Vec<(u8, bool)> = s
        .volumes()
        .iter()
        .map(|i| (i.idx_entry_size, i.idx_entry_size_confirmed))
        .collect();
    assert_eq!(sizes, [(17, true), (16, true), (17, true), (17, true)]);
    assert_eq!(read_all(&s, 4, 1, 1).unwrap().data(), b"y");
}

#[test]
fn configured_entry_size_is_used_as_is() {
    let d = TempDir::new("fixed");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 17);
    v.write(&needle(1, 1, b"z"));
    let s = VolumeStore::open(&SeaweedfsConfig {
        idx_entry_size: IdxEntrySize::Fixed(17),
        ..cfg(&[d.path()])
    })
    .unwrap();
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"z");
    // Reconfigured to the wrong size, the volume is reopened and its needles no longer match.
    let r = s.reconfigure(&SeaweedfsConfig {
        idx_entry_size: IdxEntrySize::Fixed(16),
        ..cfg(&[d.path()])
    });
    assert_eq!(r.reopened, [1]);
    assert_ne!(read_all(&s, 1, 1, 1).map(|r| r.data().to_vec()), Ok(b"z".to_vec()));
}

#[test]
fn reconfigure_changes_directories_and_crc_checking() {
    let d = TempDir::new("reconf");
    let a = d.sub("a");
    let b = d.sub("b");
    let mut va = TestVolume::create(&a, "", 1, 3, 16);
    let e = va.write(&needle(1, 1, b"in a"));
    va.poke_dat(e.offset + 20, b"!");
    TestVolume::create(&b, "", 2, 3, 16).write(&needle(1, 1, b"in b"));
    let s = VolumeStore::open(&cfg(&[&a])).unwrap();
    assert_eq!(code(read_all(&s, 1, 1, 1)), ResultCode::Corrupt);
    let r = s.reconfigure(&SeaweedfsConfig {
        verify_crc: false,
        refresh_interval_ms: 250,
        ..cfg(&[&b, &a])
    });
    assert_eq!((r.added.as_slice(), r.volumes), (&[2][..], 2));
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"!n a");
    assert_eq!(s.refresh_interval(), std::time::Duration::from_millis(250));
    let r = s.reconfigure(&cfg(&[&b]));
    assert_eq!(r.removed, [1]);
    assert_eq!(read_all(&s, 2, 1, 1).unwrap().data(), b"in b");
}

#[test]
fn duplicate_volume_ids_serve_the_first_directory() {
    let d = TempDir::new("dup");
    let a = d.sub("a");
    let b = d.sub("b");
    TestVolume::create(&a, "", 1, 3, 16).write(&needle(1, 1, b"first"));
    TestVolume::create(&b, "other", 1, 3, 16).write(&needle(1, 1, b"second"));
    let s = VolumeStore::open(&cfg(&[&a, &b])).unwrap();
    assert_eq!(read_all(&s, 1, 1, 1).unwrap().data(), b"first");
    let r = s.refresh();
    assert!(
        r.failed
            .iter()
            .any(|(p, why)| p.starts_with(&b) && why.contains("also at")),
        "{r:?}"
    );
}

#[test]
fn open_refuses_an_unlistable_directory() {
    let e = VolumeStore::open(&cfg(&[Path::new("/nonexistent/seaweed-ring-test")]))
        .err()
        .unwrap();
    let m = e.to_string();
    assert!(
        m.starts_with("config key seaweedfs.directories: /nonexistent/seaweed-ring-test cannot be listed"),
        "{m}"
    );
    let s = VolumeStore::open(&SeaweedfsConfig::default()).unwrap();
    assert!(!s.is_configured() && s.volumes().is_empty());
    assert_eq!(code(read_all(&s, 1, 1, 1)), ResultCode::NoSuchVolume);
}

#[test]
fn error_codes() {
    let (volume, needle) = (1, 2);
    let all = [
        (ReadNeedleError::NoSuchVolume { volume }, ResultCode::NoSuchVolume),
        (
            ReadNeedleError::NoSuchNeedle { volume, needle },
            ResultCode::NoSuchNeedle,
        ),
        (
            ReadNeedleError::NeedleDeleted { volume, needle },
            ResultCode::NeedleDeleted,
        ),
        (
            ReadNeedleError::CookieMismatch { volume, needle },
            ResultCode::CookieMismatch,
        ),
        (
            ReadNeedleError::Corrupt {
                volume,
                needle,
                reason: String::new(),
            },
            ResultCode::Corrupt,
        ),
        (
            ReadNeedleError::RangeNotSatisfiable {
                volume,
                needle,
                offset: 3,
                data_size: 2,
            },
            ResultCode::RangeNotSatisfiable,
        ),
        (
            ReadNeedleError::ResponseTooLarge {
                volume,
                needle,
                data_size: 3,
                max_len: 2,
            },
            ResultCode::ResponseTooLarge,
        ),
    ];
    for (e, c) in all {
        assert_eq!(e.code(), c);
    }
}

/// Readers on several threads while a writer appends and the store refreshes: every read
/// returns the bytes written, and every needle written before a read started is found.
#[test]
fn concurrent_reads_during_appends_and_refreshes() {
    let d = TempDir::new("concurrent");
    let mut v = TestVolume::create(d.path(), "", 1, 3, 16);
    v.write(&needle(1, 1, b"seed"));
    let s = VolumeStore::open(&cfg(&[d.path()])).unwrap();
    let written = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (s, written, stop) = (s.clone(), written.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut i = t as u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let hi = written.load(std::sync::atomic::Ordering::Acquire);
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let id = 2 + (i >> 33) % (hi + 5);
                    match read_all(&s, 1, id, 1) {
                        Ok(r) => {
                            // (It may have been written after `hi` was loaded.)
                            assert_eq!(r.data(), &pattern(id as usize * 37 % 5000, id as u8)[..]);
                            n += 1;
                        }
                        Err(e) => assert!(id > hi, "needle {id} (written up to {hi}): {e}"),
                    }
                }
                n
            })
        })
        .collect();
    for id in 2..400u64 {
        v.write(&needle(id, 1, &pattern(id as usize * 37 % 5000, id as u8)));
        written.store(id, std::sync::atomic::Ordering::Release);
        if id % 50 == 0 {
            s.refresh();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(reads > 0);
}
