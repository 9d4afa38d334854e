//! Writes SeaweedFS volumes in the real on-disk format, the way the volume server does: a
//! needle appended to the `.dat` at an 8-byte aligned end, then its `.idx` entry; a deletion
//! as an empty needle plus an entry of size -1. For tests (here and in `tests/`) and for
//! anything that must produce a volume without a `weed` binary. The byte encodings are
//! this crate's.
//!
//! A module rather than a cargo feature: it needs nothing beyond std and the encoders the
//! parsers' tests and the fuzz target use anyway, so a feature would gate no dependency, and
//! cargo unifies features across the workspace (the tests crate would switch it on for the
//! engine's build all the same). The engine never calls it: it never writes volume files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ring_proto::needle::flags;

use crate::{encode_needle, IdxEntry, NeedleSpec, SuperBlock};

/// `[<collection>_]<vid>`, the base name of a volume's files.
pub fn base_name(collection: &str, vid: u32) -> String {
    if collection.is_empty() {
        vid.to_string()
    } else {
        format!("{collection}_{vid}")
    }
}

/// A volume being written (its files created or truncated).
pub struct VolumeWriter {
    pub dat_path: PathBuf,
    pub idx_path: PathBuf,
    pub version: u8,
    /// 16 (4-byte offsets) or 17 (5-byte offsets).
    pub entry_size: usize,
    dat: File,
    idx: File,
    dat_end: u64,
    idx_end: u64,
}

impl VolumeWriter {
    /// A new volume with its `.idx` beside the `.dat`.
    pub fn create(dir: &Path, collection: &str, vid: u32, version: u8, entry_size: usize) -> io::Result<Self> {
        Self::create_in(dir, dir, collection, vid, version, entry_size, &[])
    }

    /// A new volume, its `.idx` in `idx_dir`; `extra`: super block extra bytes (versions 2
    /// and 3).
    pub fn create_in(
        dir: &Path,
        idx_dir: &Path,
        collection: &str,
        vid: u32,
        version: u8,
        entry_size: usize,
        extra: &[u8],
    ) -> io::Result<Self> {
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
        };
        let mut v = Self {
            dat: open(&dat_path)?,
            idx: open(&idx_path)?,
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
        v.put_dat(&sb.encode())?;
        v.put_dat(extra)?;
        Ok(v)
    }

    /// Writes at the `.dat`'s end, as `WriteAt(bytes, end)`.
    fn put_dat(&mut self, b: &[u8]) -> io::Result<()> {
        self.dat.write_all_at(b, self.dat_end)?;
        self.dat_end += b.len() as u64;
        Ok(())
    }

    /// Appends a needle to the `.dat` only (what the volume server has done before it writes
    /// the `.idx` entry); returns the entry that names it.
    pub fn append_dat(&mut self, n: &NeedleSpec) -> io::Result<IdxEntry> {
        // `NewDiskFile` rounds the append position up to a multiple of 8.
        self.dat_end = self.dat_end.div_ceil(8) * 8;
        let offset = self.dat_end;
        let (bytes, size) = encode_needle(n, self.version);
        self.put_dat(&bytes)?;
        Ok(IdxEntry {
            id: n.id,
            offset,
            size: size as i32,
        })
    }

    pub fn append_idx(&mut self, e: &IdxEntry) -> io::Result<()> {
        let mut b = Vec::new();
        e.encode_into(self.entry_size, &mut b)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.append_idx_bytes(&b)
    }

    pub fn append_idx_bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.idx.write_all_at(b, self.idx_end)?;
        self.idx_end += b.len() as u64;
        Ok(())
    }

    /// Writes a needle the way the volume server does: `.dat`, then `.idx`.
    pub fn write(&mut self, n: &NeedleSpec) -> io::Result<IdxEntry> {
        let e = self.append_dat(n)?;
        self.append_idx(&e)?;
        Ok(e)
    }

    /// Deletes a needle as `doDeleteRequest` does: appends an empty needle with the same id
    /// and cookie, then an `.idx` entry with its offset and size -1.
    pub fn delete(&mut self, id: u64, cookie: u32) -> io::Result<IdxEntry> {
        let mut e = self.append_dat(&NeedleSpec {
            id,
            cookie,
            append_at_ns: 1,
            ..Default::default()
        })?;
        e.size = -1;
        self.append_idx(&e)?;
        Ok(e)
    }

    /// Writes the `.vif` beside the `.dat` as the volume server does (protojson of
    /// `VolumeInfo`, abridged): `bytes_offset` 4 (16-byte idx entries) or 5 (17).
    pub fn write_vif(&self, bytes_offset: u32) -> io::Result<()> {
        let text = format!(
            "{{\n  \"files\": [],\n  \"version\": {},\n  \"replication\": \"\",\n  \"bytesOffset\": {bytes_offset},\n  \"datFileSize\": \"0\"\n}}",
            self.version
        );
        std::fs::write(self.dat_path.with_extension("vif"), text)
    }

    pub fn dat_len(&self) -> u64 {
        self.dat_end
    }

    pub fn idx_len(&self) -> u64 {
        self.idx_end
    }

    /// Overwrites `.dat` bytes in place (to corrupt a needle in tests).
    pub fn poke_dat(&self, at: u64, b: &[u8]) -> io::Result<()> {
        self.dat.write_all_at(b, at)
    }
}

/// A needle with data only.
pub fn needle(id: u64, cookie: u32, data: &[u8]) -> NeedleSpec {
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
pub fn full_needle(id: u64, cookie: u32, data: &[u8]) -> NeedleSpec {
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

/// `n` bytes of deterministic, incompressible-looking data from `seed` (xorshift64): needle
/// contents for tests and benchmarks that must check every byte they read back.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
