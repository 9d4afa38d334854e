//! Test-only: writes SeaweedFS volumes in the real on-disk format, the way the volume server
//! does (needle appended to the `.dat` at an 8-byte aligned end, then its `.idx` entry), so
//! the store can be tested against files it did not write itself. The byte encodings are
//! `format::encode_needle` / `IdxEntry::encode_into` (public in `engine::seaweed_format`, for
//! integration tests outside this crate).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring_proto::needle::flags;

use super::format::{self, IdxEntry, NeedleSpec, SuperBlock};

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
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

/// A volume being written.
pub(crate) struct TestVolume {
    pub dat_path: PathBuf,
    pub idx_path: PathBuf,
    pub version: u8,
    pub entry_size: usize,
    dat: File,
    idx: File,
    dat_end: u64,
    idx_end: u64,
}

/// `[<collection>_]<vid>`.
pub(crate) fn base_name(collection: &str, vid: u32) -> String {
    if collection.is_empty() {
        vid.to_string()
    } else {
        format!("{collection}_{vid}")
    }
}

impl TestVolume {
    /// A new volume with its `.idx` beside the `.dat`.
    pub(crate) fn create(dir: &Path, collection: &str, vid: u32, version: u8, entry_size: usize) -> Self {
        Self::create_in(dir, dir, collection, vid, version, entry_size, &[])
    }

    /// A new volume; `extra`: super block extra bytes (versions 2 and 3).
    pub(crate) fn create_in(
        dir: &Path,
        idx_dir: &Path,
        collection: &str,
        vid: u32,
        version: u8,
        entry_size: usize,
        extra: &[u8],
    ) -> Self {
        let base = base_name(collection, vid);
        let dat_path = dir.join(format!("{base}.dat"));
        let idx_path = idx_dir.join(format!("{base}.idx"));
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .unwrap()
        };
        let mut v = Self {
            dat: open(&dat_path),
            idx: open(&idx_path),
            dat_path,
            idx_path,
            version,
            entry_size,
            dat_end: 0,
            idx_end: 0,
        };
        let sb = SuperBlock {
            version,
            replica_placement: 0x01,
            ttl: [0, 0],
            compaction_revision: 0,
            extra_size: extra.len() as u16,
        };
        v.put_dat(&sb.encode());
        v.put_dat(extra);
        v
    }

    /// Writes at the `.dat`'s end, as `WriteAt(bytes, end)`.
    fn put_dat(&mut self, b: &[u8]) {
        self.dat.write_all_at(b, self.dat_end).unwrap();
        self.dat_end += b.len() as u64;
    }

    /// Appends a needle to the `.dat` only (what the volume server has done before it writes
    /// the `.idx` entry); returns the entry that names it.
    pub(crate) fn append_dat(&mut self, n: &NeedleSpec) -> IdxEntry {
        // `NewDiskFile` rounds the append position up to a multiple of 8.
        self.dat_end = self.dat_end.div_ceil(8) * 8;
        let offset = self.dat_end;
        let (bytes, size) = format::encode_needle(n, self.version);
        self.put_dat(&bytes);
        IdxEntry {
            id: n.id,
            offset,
            size: size as i32,
        }
    }

    pub(crate) fn append_idx(&mut self, e: &IdxEntry) {
        let mut b = Vec::new();
        e.encode_into(self.entry_size, &mut b).unwrap();
        self.append_idx_bytes(&b);
    }

    pub(crate) fn append_idx_bytes(&mut self, b: &[u8]) {
        self.idx.write_all_at(b, self.idx_end).unwrap();
        self.idx_end += b.len() as u64;
    }

    /// Writes a needle the way the volume server does: `.dat`, then `.idx`.
    pub(crate) fn write(&mut self, n: &NeedleSpec) -> IdxEntry {
        let e = self.append_dat(n);
        self.append_idx(&e);
        e
    }

    /// Deletes a needle as `doDeleteRequest` does: appends an empty needle with the same id
    /// and cookie, then an `.idx` entry with its offset and size -1.
    pub(crate) fn delete(&mut self, id: u64, cookie: u32) -> IdxEntry {
        let mut e = self.append_dat(&NeedleSpec {
            id,
            cookie,
            append_at_ns: 1,
            ..Default::default()
        });
        e.size = -1;
        self.append_idx(&e);
        e
    }

    /// Writes the `.vif` beside the `.dat` as the volume server does (protojson of
    /// `VolumeInfo`, abridged).
    pub(crate) fn write_vif(&self, bytes_offset: u32) {
        let text = format!(
            "{{\n  \"files\": [],\n  \"version\": {},\n  \"replication\": \"\",\n  \"bytesOffset\": {bytes_offset},\n  \"datFileSize\": \"0\"\n}}",
            self.version
        );
        std::fs::write(self.dat_path.with_extension("vif"), text).unwrap();
    }

    pub(crate) fn dat_len(&self) -> u64 {
        self.dat_end
    }

    pub(crate) fn idx_len(&self) -> u64 {
        self.idx_end
    }

    /// Overwrites `.dat` bytes in place (to corrupt a needle).
    pub(crate) fn poke_dat(&self, at: u64, b: &[u8]) {
        self.dat.write_all_at(b, at).unwrap();
    }
}

/// A needle with data only.
pub(crate) fn needle(id: u64, cookie: u32, data: &[u8]) -> NeedleSpec {
    NeedleSpec {
        id,
        cookie,
        data: data.to_vec(),
        append_at_ns: 1_700_000_000_000_000_000 + id,
        pad_byte: 0x5a,
        ..Default::default()
    }
}

/// A needle with every optional field, as an upload through the HTTP API leaves it.
pub(crate) fn full_needle(id: u64, cookie: u32, data: &[u8]) -> NeedleSpec {
    NeedleSpec {
        flags: flags::GZIP
            | flags::HAS_NAME
            | flags::HAS_MIME
            | flags::HAS_LAST_MODIFIED
            | flags::HAS_TTL
            | flags::HAS_PAIRS,
        name: b"report.txt.gz".to_vec(),
        mime: b"text/plain".to_vec(),
        last_modified: 1_700_000_123,
        // 255 years: not expired at any time a test runs.
        ttl: [255, 6],
        pairs: br#"{"owner":"ops"}"#.to_vec(),
        ..needle(id, cookie, data)
    }
}
