//! A volume's `.dat` mapped read-only, and the two questions a polling worker and an I/O
//! thread ask of it: are these bytes in memory now ([`DatMap::resident`], one `mincore`), and
//! bring them in ([`DatMap::populate`], `MADV_POPULATE_READ`).
//!
//! # Why mincore, and not another way to keep a worker off the disk
//!
//! A worker serves a needle straight from the mapping (UCX sends from it, zero copy), so what
//! it must know before it touches a byte is whether touching can wait for a disk. Measured
//! and weighed (bench/README.md, "Cold reads"):
//! - `mincore` over the needle's pages: one system call, no copy, answers for the whole
//!   needle (the header and the data are one contiguous range). A page evicted between the
//!   check and UCX's send still faults on the worker; that takes memory pressure at the very
//!   moment, and costs one read, not a stall per read.
//! - `preadv2(RWF_NOWAIT)`: a copy of every byte on every read, to learn the same thing.
//! - `MAP_POPULATE`/`MADV_WILLNEED` at open: volumes are far larger than memory; neither
//!   keeps pages resident.
//! - io_uring reads into registered buffers: a copy too, and a ring per worker.
//!
//! On the I/O thread, `MADV_POPULATE_READ` (Linux 5.14) faults the range in and answers
//! EFAULT instead of SIGBUS when the file was truncated below it; older kernels get a
//! `pread` of the range (same effect on the page cache, a short read instead of SIGBUS).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memmap2::{Advice, Mmap};

/// A read-only mapping of a `.dat` file, as long as the file was when it was mapped.
/// [`super::NeedleRead`] holds it in an `Arc`, so a remap or a reopen never unmaps bytes a
/// reader still uses.
#[derive(Debug)]
pub struct DatMap {
    mmap: Mmap,
}

/// Pages asked about per `mincore` call (the answer vector lives on the stack).
const MINCORE_CHUNK: usize = 512;

fn page_size() -> usize {
    // Safety: sysconf takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

impl DatMap {
    /// Maps the first `len` bytes of `file` (its length as `fstat` just reported it).
    pub(super) fn new(file: &File, len: u64) -> io::Result<Self> {
        // Safety: the mapping is read-only (PROT_READ, MAP_SHARED), so Rust never writes
        // through it. Its content may change under us only where the volume server writes,
        // and it writes bytes we do not read yet: it appends past needles the `.idx` already
        // names, and never rewrites a needle in place (an update is a new append). Pages
        // could go away only by truncation, which SeaweedFS applies to unindexed tails only
        // (volume.rs module docs); reads are limited to indexed needles below `len`.
        let mmap = unsafe { memmap2::MmapOptions::new().len(len as usize).map(file)? };
        Ok(Self { mmap })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }

    pub fn len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// Whether every page of `[start, start + len)` is in the page cache now, so touching
    /// them takes no disk read. An error (a range outside the mapping) answers false: the
    /// caller then takes the path that may wait, which reports the problem.
    pub(super) fn resident(&self, start: usize, len: usize) -> bool {
        let Some(end) = start.checked_add(len).filter(|&e| e <= self.mmap.len()) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        let page = page_size();
        let base = self.mmap.as_ptr() as usize;
        let mut at = (base + start) & !(page - 1);
        let stop = base + end;
        let mut vec = [0u8; MINCORE_CHUNK];
        while at < stop {
            let pages = (stop - at).div_ceil(page).min(MINCORE_CHUNK);
            // Safety: `at` is page-aligned and `[at, at + pages * page)` lies within our
            // mapping (the mapping starts page-aligned and its last page is whole in the
            // address space); `vec` has room for `pages` answers. mincore only writes `vec`.
            let r = unsafe { libc::mincore(at as *mut libc::c_void, pages * page, vec.as_mut_ptr()) };
            if r != 0 || vec[..pages].iter().any(|&v| v & 1 == 0) {
                return false;
            }
            at += pages * page;
        }
        true
    }

    /// Brings `[start, start + len)` into memory (blocking: I/O threads only). `file` is the
    /// mapped file, for kernels without `MADV_POPULATE_READ`.
    pub(super) fn populate(&self, file: &File, start: usize, len: usize) -> io::Result<()> {
        if start.checked_add(len).is_none_or(|e| e > self.mmap.len()) {
            return Err(io::Error::other("range outside the mapping"));
        }
        if len == 0 {
            return Ok(());
        }
        match self.mmap.advise_range(Advice::PopulateRead, start, len) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => Err(io::Error::other(
                "the file is shorter than the mapping there (truncated under the engine?)",
            )),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => read_through(file, start as u64, len),
            Err(e) => Err(e),
        }
    }
}

/// Reads `[start, start + len)` of `file` into a scratch buffer: the pages land in the page
/// cache, and a truncated file gives a short read rather than SIGBUS.
fn read_through(file: &File, start: u64, len: usize) -> io::Result<()> {
    let mut buf = vec![0u8; len.min(1 << 20)];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(buf.len());
        file.read_exact_at(&mut buf[..n], start + done as u64)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::seaweed::testvol::{drop_page_cache, TempDir};

    /// A file on a disk-backed filesystem, so its pages can be dropped.
    fn file_with(len: usize) -> (TempDir, File) {
        let dir = TempDir::on_disk("datmap");
        let path = dir.path().join("v.dat");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        f.sync_all().unwrap();
        (dir, File::open(&path).unwrap())
    }

    #[test]
    fn residency_follows_the_page_cache_and_populate_brings_pages_in() {
        let (_d, f) = file_with(3 << 20);
        drop_page_cache(&f);
        let m = DatMap::new(&f, 3 << 20).unwrap();
        assert!(!m.resident(100, 2 << 20), "pages dropped, yet reported resident");
        assert!(m.resident(5, 0));
        m.populate(&f, 100, 2 << 20).unwrap();
        assert!(m.resident(100, 2 << 20));
        assert!(!m.resident(0, (3 << 20) + 1), "beyond the mapping");
        assert!(m.populate(&f, 1, 3 << 20).is_err());
        assert_eq!(m.bytes()[(2 << 20) + 99], 7);
        // The fallback for old kernels warms the page cache the same way.
        drop(m);
        drop_page_cache(&f);
        let m = DatMap::new(&f, 3 << 20).unwrap();
        assert!(!m.resident(0, 1 << 20));
        read_through(&f, 0, 1 << 20).unwrap();
        assert!(m.resident(0, 1 << 20));
    }

    #[test]
    fn populate_reports_a_truncated_file_instead_of_faulting() {
        let (d, f) = file_with(1 << 20);
        let m = DatMap::new(&f, 1 << 20).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.path().join("v.dat"))
            .unwrap()
            .set_len(4096)
            .unwrap();
        let e = m.populate(&f, 8192, 100_000).unwrap_err();
        assert!(e.to_string().contains("shorter than the mapping"), "{e}");
        assert!(read_through(&f, 8192, 100).is_err());
    }
}
