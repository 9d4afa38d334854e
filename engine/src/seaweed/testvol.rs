//! Test-only: writes SeaweedFS volumes in the real on-disk format, the way the volume server
//! does (needle appended to the `.dat` at an 8-byte aligned end, then its `.idx` entry), so
//! the store can be tested against files it did not write itself: `seaweed_format::writer`,
//! with I/O errors turned into test failures.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use seaweed_format::writer::VolumeWriter;
pub(crate) use seaweed_format::writer::{full_needle, needle};

use super::format::{IdxEntry, NeedleSpec};

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    /// A directory beside the test binary, on the build's disk: page-cache tests need files
    /// whose pages can be dropped, which a tmpfs `TMPDIR` cannot give.
    pub(crate) fn on_disk(tag: &str) -> Self {
        let exe = std::env::current_exe().unwrap();
        let d = Self::new_in(exe.parent().unwrap(), tag);
        let fs = nix::sys::statfs::statfs(d.path()).unwrap();
        assert_ne!(
            fs.filesystem_type(),
            nix::sys::statfs::TMPFS_MAGIC,
            "{} is on tmpfs: page-cache tests need a disk-backed build directory",
            d.path().display()
        );
        d
    }

    fn new_in(parent: &Path, tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = parent.join(format!(
            "swring-seaweed-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn sub(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Drops `f`'s pages from the page cache (written back first: dirty pages stay; so do pages
/// some process maps).
pub(crate) fn drop_page_cache(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    f.sync_all().unwrap();
    // Safety: fadvise takes no pointers.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise(DONTNEED)");
}

/// A volume being written: [`VolumeWriter`] with I/O errors turned into test failures.
pub(crate) struct TestVolume(VolumeWriter);

impl Deref for TestVolume {
    type Target = VolumeWriter;
    fn deref(&self) -> &VolumeWriter {
        &self.0
    }
}

impl DerefMut for TestVolume {
    fn deref_mut(&mut self) -> &mut VolumeWriter {
        &mut self.0
    }
}

impl TestVolume {
    pub(crate) fn create(dir: &Path, collection: &str, vid: u32, version: u8, entry_size: usize) -> Self {
        Self(VolumeWriter::create(dir, collection, vid, version, entry_size).unwrap())
    }

    pub(crate) fn create_in(
        dir: &Path,
        idx_dir: &Path,
        collection: &str,
        vid: u32,
        version: u8,
        entry_size: usize,
        extra: &[u8],
    ) -> Self {
        Self(VolumeWriter::create_in(dir, idx_dir, collection, vid, version, entry_size, extra).unwrap())
    }

    pub(crate) fn append_dat(&mut self, n: &NeedleSpec) -> IdxEntry {
        self.0.append_dat(n).unwrap()
    }

    pub(crate) fn append_idx(&mut self, e: &IdxEntry) {
        self.0.append_idx(e).unwrap()
    }

    pub(crate) fn append_idx_bytes(&mut self, b: &[u8]) {
        self.0.append_idx_bytes(b).unwrap()
    }

    pub(crate) fn write(&mut self, n: &NeedleSpec) -> IdxEntry {
        self.0.write(n).unwrap()
    }

    pub(crate) fn delete(&mut self, id: u64, cookie: u32) -> IdxEntry {
        self.0.delete(id, cookie).unwrap()
    }

    pub(crate) fn write_vif(&self, bytes_offset: u32) {
        self.0.write_vif(bytes_offset).unwrap()
    }

    pub(crate) fn poke_dat(&self, at: u64, b: &[u8]) {
        self.0.poke_dat(at, b).unwrap()
    }
}

/// A read as a worker serves it: polling first, on an I/O thread's terms when that says it
/// could wait (`dataplane/server.rs`), here on the calling thread.
impl super::VolumeStore {
    pub(crate) fn read(
        &self,
        volume: u32,
        needle: u64,
        cookie: u32,
        range_offset: u64,
        max_len: u64,
        ranged: bool,
    ) -> Result<super::NeedleRead, super::ReadNeedleError> {
        let q = super::NeedleQuery {
            volume,
            needle,
            cookie,
            range_offset,
            max_len,
            ranged,
        };
        match self.read_polling(&q)? {
            super::Read::Ready(n) => Ok(n),
            super::Read::NeedsIo(_) => self.read_blocking(&q),
        }
    }
}
