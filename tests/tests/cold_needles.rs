//! Large and cold needles through the real engine, over tcp and shared memory, while a
//! bystander session on the same (only) worker does NOPs, every one of which must complete:
//! - needles of 1 MiB, 8 MiB and 20 MiB + 1 whose pages were dropped from the page cache are
//!   read by several sessions at once, many in flight, every byte checked;
//! - then needles made cold one at a time (pages dropped, and seen gone with `mincore`, just
//!   before each read) must each be served by the volume I/O threads (`io_pool.rs`: the
//!   worker checks residency and hands them over), as the engine's counters show, and a warm
//!   re-read by the worker itself.
//!
//! Readahead makes the first part's coldness partial (reading one needle brings its
//! neighbours in: 8 MiB of readahead on this VM's disk), hence the second part, which counts.
//! No timing is asserted: that the bystander does not wait behind the disk is what
//! `ring.nop.beside_cold_reads` in the bench measures.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use integration_tests::{nop, wait, Engine};
use ring_client::{Session, SessionOptions};
use ring_proto::needle::NEEDLE_META_LEN;
use ring_proto::{opcode, Sqe};
use seaweed_format::writer::{base_name, needle, pattern, VolumeWriter};

const SIZES: [usize; 3] = [1 << 20, 8 << 20, (20 << 20) + 1];
/// Needles of each size.
const PER_SIZE: usize = 3;
/// Needles (1 MiB, after the others) read one at a time, each made cold just before.
const ONE_BY_ONE: u64 = 4;
const READERS: usize = 3;
/// READ_NEEDLEs each reader keeps in flight.
const IN_FLIGHT: usize = 2;
/// One slot of a reader's buffer: the largest needle and its metadata.
const SLOT: usize = (21 << 20) + 4096;

fn needles() -> Vec<(u64, usize)> {
    (0..SIZES.len() * PER_SIZE)
        .map(|i| (i as u64 + 1, SIZES[i % SIZES.len()]))
        .collect()
}

/// Drops the `.dat`'s pages from the page cache (pages some process maps stay).
fn drop_pages(dat: &std::fs::File) {
    // Safety: fadvise takes no pointers.
    let r = unsafe { libc::posix_fadvise(dat.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

/// Whether any page of `[at, at + len)` of the mapped `.dat` is in the page cache.
fn any_resident(map: &memmap2::Mmap, at: usize, len: usize) -> bool {
    let page = 4096;
    let start = at & !(page - 1);
    let pages = (at + len - start).div_ceil(page);
    let mut vec = vec![0u8; pages];
    // Safety: `[start, start + pages * page)` lies in the mapping (it maps the whole file,
    // and its last page is whole in the address space); mincore writes only `vec`.
    let r = unsafe {
        libc::mincore(
            map.as_ptr().add(start) as *mut libc::c_void,
            pages * page,
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().any(|&v| v & 1 != 0)
}

/// The volume directory on the build's disk (a tmpfs `TMPDIR` keeps every page resident).
fn disk_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fs = nix::sys::statfs::statfs(d.path()).unwrap();
    assert_ne!(
        fs.filesystem_type(),
        nix::sys::statfs::TMPFS_MAGIC,
        "{} is on tmpfs: this test needs a disk-backed target directory",
        d.path().display()
    );
    d
}

/// Reads `ids` through `s`, `IN_FLIGHT` at a time, and checks every byte.
fn read_all(s: &mut Session, peer: u32, ids: &[(u64, usize)], tls: &str) {
    let mut queue = ids.iter().copied();
    let mut in_flight: Vec<Option<(u64, usize)>> = vec![None; IN_FLIGHT];
    let mut left = ids.len();
    let submit = |s: &mut Session, slot: usize, (id, _): (u64, usize)| {
        s.submit(&Sqe {
            opcode: opcode::READ_NEEDLE,
            peer,
            user_data: slot as u64,
            buf_offset: (slot * SLOT) as u64,
            buf_len: SLOT as u32,
            aux: 3,
            args: [id, 0x5eed_0000 + id, 0, 0],
            ..Default::default()
        })
        .unwrap();
    };
    for (slot, f) in in_flight.iter_mut().enumerate() {
        if let Some(n) = queue.next() {
            submit(s, slot, n);
            *f = Some(n);
        }
    }
    while left > 0 {
        let c = wait(s);
        let slot = c.user_data as usize;
        let (id, size) = in_flight[slot].take().expect("a read in flight in that slot");
        assert_eq!(c.result, size as i32, "{tls}: needle {id} ({size} bytes)");
        let mut data = vec![0u8; size];
        s.buffer().read(slot * SLOT + NEEDLE_META_LEN, &mut data).unwrap();
        assert!(data == pattern(size, id), "{tls}: needle {id} ({size} bytes) differs");
        left -= 1;
        if let Some(n) = queue.next() {
            submit(s, slot, n);
            in_flight[slot] = Some(n);
        }
    }
}

fn volume3(engine: &Engine) -> serde_json::Value {
    let st = engine.status_json();
    st["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == 3)
        .unwrap()
        .clone()
}

#[test]
fn cold_large_needles_are_read_on_io_threads_while_a_bystander_is_served() {
    // Over UCX, and through the shortcut for a peer that is the engine itself.
    for (tls, local) in [("tcp", false), ("sm,tcp", false), ("tcp", true)] {
        let dir = disk_dir();
        let mut v = VolumeWriter::create(dir.path(), "", 3, 3, 16).unwrap();
        for (id, size) in needles() {
            v.write(&needle(id, 0x5eed_0000 + id as u32, &pattern(size, id)))
                .unwrap();
        }
        let first = needles().len() as u64 + 1;
        let mut one_by_one = Vec::new();
        for id in first..first + ONE_BY_ONE {
            // A needle never read before each: pages mapped by an earlier read cannot be
            // dropped, and a read maps more than its needle: the pages around its ends
            // (fault-around) and, through large folios, whole folios of up to 2 MiB.
            v.write(&needle(1000 + id, 1, &vec![0u8; 4 << 20])).unwrap();
            let e = v
                .write(&needle(id, 0x5eed_0000 + id as u32, &pattern(1 << 20, id)))
                .unwrap();
            one_by_one.push((id, e.offset as usize));
        }
        let dat = std::fs::File::open(dir.path().join(format!("{}.dat", base_name("", 3)))).unwrap();
        dat.sync_all().unwrap();
        // Safety: read-only view for mincore; nothing reads through it.
        let view = unsafe { memmap2::Mmap::map(&dat).unwrap() };
        drop_pages(&dat);
        assert!(
            !any_resident(&view, 0, view.len()),
            "{tls}: the pages did not leave the page cache"
        );
        // CRC checks off: a large needle's first CRC check goes to an I/O thread too; with it
        // off, cold pages are the only reason these reads leave the worker. The entry size
        // given: "auto" reads needle headers at open, which maps their pages for good.
        let cfg = dir.path().join("engine.toml");
        std::fs::write(
            &cfg,
            format!(
                "[ucx]\nlisten = \"127.0.0.1:0\"\ntransports = \"{tls}\"\nnet-devices = \"lo\"\nlocal-reads = {local}\n\
                 [seaweedfs]\ndirectories = [{:?}]\nverify-crc = false\nidx-entry-size = 16\n",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let engine = Engine::start(&["--config", cfg.to_str().unwrap(), "--lease-ms", "0"]);
        let addr = engine.ucx_listen_addr();
        let open = || {
            let mut s = engine
                .try_connect(SessionOptions {
                    buf_size: (IN_FLIGHT * SLOT) as u64,
                    ..Default::default()
                })
                .unwrap();
            let peer = s.connect_peer(&addr).unwrap();
            (s, peer)
        };

        let done = Arc::new(AtomicBool::new(false));
        // A failing assertion below stops the bystander too.
        let _stop = integration_tests::StopOnDrop(&done);
        let mut bystander = engine.connect();
        let bystander_done = done.clone();
        let nops = std::thread::spawn(move || {
            let mut n = 0u64;
            while !bystander_done.load(Ordering::Relaxed) {
                bystander.submit(&nop(n)).unwrap();
                assert_eq!(wait(&mut bystander).user_data, n);
                n += 1;
            }
            n
        });

        // Several sessions, many in flight, from a cold page cache.
        let all = needles();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (mut s, peer) = open();
                let mine: Vec<(u64, usize)> = all.iter().copied().skip(r).step_by(READERS).collect();
                std::thread::spawn(move || read_all(&mut s, peer, &mine, tls))
            })
            .collect();
        for r in readers {
            r.join()
                .unwrap_or_else(|_| panic!("{tls}: a reader failed\n{}", engine.log()));
        }
        let v3 = volume3(&engine);
        assert_eq!(v3["reads_served"].as_u64(), Some(all.len() as u64), "{tls}: {v3}");
        // At least the first read found nothing resident.
        let io_before = v3["reads_served_io"].as_u64().unwrap();
        assert!(io_before >= 1, "{tls}: no cold read went to the I/O threads: {v3}");

        // One at a time, each made cold just before it is read: each goes to an I/O thread.
        let (mut s, peer) = open();
        for (i, &(id, at)) in one_by_one.iter().enumerate() {
            // Readahead of an earlier read may still be landing: drop until it stays gone.
            integration_tests::wait_until(
                "the needle's pages out of the page cache",
                || {
                    drop_pages(&dat);
                    !any_resident(&view, at, (1 << 20) + 64)
                },
                || engine.log(),
            );
            read_all(&mut s, peer, &[(id, 1 << 20)], tls);
            let v3 = volume3(&engine);
            assert_eq!(
                v3["reads_served_io"].as_u64(),
                Some(io_before + i as u64 + 1),
                "{tls}: needle {id} was cold, yet not read on an I/O thread: {v3}"
            );
        }
        // Warm now (the engine maps them): the worker serves them itself.
        let warm: Vec<(u64, usize)> = one_by_one.iter().map(|&(id, _)| (id, 1 << 20)).collect();
        read_all(&mut s, peer, &warm, tls);
        let v3 = volume3(&engine);
        assert_eq!(
            v3["reads_served_io"].as_u64(),
            Some(io_before + ONE_BY_ONE),
            "{tls}: {v3}"
        );
        assert_eq!(
            v3["reads_served"].as_u64(),
            Some(all.len() as u64 + 2 * ONE_BY_ONE),
            "{tls}: {v3}"
        );

        done.store(true, Ordering::Relaxed);
        let nops = nops.join().expect("every bystander NOP completed");
        assert!(nops > 0, "{tls}: the bystander never ran");
        let st = engine.status_json();
        // Every needle here is over 256 KiB: over shared memory the engine sends each answer by
        // rendezvous (UCX_RNDV_THRESH stays "inf" there; per message), over tcp UCX's own
        // threshold does; the shortcut uses no UCX.
        // (The peers still registered: the one-by-one session's; the readers' went with them.)
        let sum = |field: &str| -> u64 {
            st["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .map(|p| p[field].as_u64().unwrap_or_else(|| panic!("{field}: {st}")))
                .sum()
        };
        let requests = sum("requests");
        assert_eq!(requests, 2 * ONE_BY_ONE, "{tls}: {st}");
        let want = if local { 0 } else { requests };
        assert_eq!(
            sum("replies_rendezvous"),
            want,
            "{tls} (local {local}): answers by rendezvous: {st}"
        );
        assert_eq!(st["engine"]["volume_io"]["refused"].as_u64(), Some(0), "{st}");
        drop(s);
        let (status, log) = engine.terminate();
        assert!(status.success(), "{tls}: engine exit {status:?}: {log}");
    }
}
