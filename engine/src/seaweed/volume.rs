//! One SeaweedFS volume, read-only: its `.dat` mapped into memory, its `.idx` replayed into a
//! needle map and followed as the volume server appends to it.
//!
//! # Why touching the mapping cannot SIGBUS
//!
//! A read of a mapped page beyond the end of the file raises SIGBUS, and another process (the
//! volume server) owns these files. The reader therefore only touches bytes that (a) an `.idx`
//! entry references and (b) lie below the file length `fstat` reported when the mapping was
//! made (a needle beyond it makes us `fstat` and remap, or answer `corrupt` when the file is
//! still too short). That is safe because of how SeaweedFS changes its files:
//!
//! * It appends a needle to the `.dat` (`needle_write.go Needle.Append`) before it appends the
//!   `.idx` entry naming it (`volume_write.go`: `appendWriteRequest`, then
//!   `publishWriteRequest`), so bytes an entry names were written first. Both go through the
//!   page cache, which our shared mapping reads.
//! * It truncates a `.dat` only back to where a failed append started (`Append`'s deferred
//!   `Truncate(end)`, `WriteNeedleBlob`), and at load time it cuts an unindexed tail
//!   (`volume_checking.go`): in both cases bytes no `.idx` entry names.
//! * Compaction writes `.cpd`/`.cpx` and renames them over `.dat`/`.idx`
//!   (`volume_vacuum.go finishCompactSwap`); deleting a volume unlinks its files. Our open
//!   descriptor and mapping keep the old inode, whose bytes never change again, until we drop
//!   them; `refresh` notices the new inode and reopens the volume.
//!
//! Someone truncating a live `.dat` below needles its `.idx` names (by hand, or a tool that
//! rewrites files in place) is mostly survived: truncation drops the pages past the new end
//! from the page cache, so a worker's residency check sends the read to an I/O thread, whose
//! `MADV_POPULATE_READ` answers EFAULT (`corrupt`) where touching would SIGBUS
//! (`datmap.rs`). Only a truncation between a worker's check and its touch of the very pages
//! of that needle can still kill the engine; the volume server itself would serve errors too.
//!
//! # Concurrency
//!
//! Reads take two read locks for a lookup and a pointer copy each: the needle map and the
//! current mapping. Writers hold them briefly: the follower applies entries in batches of
//! [`APPLY_BATCH`], a remap swaps one `Arc`. The slow parts (reading the `.idx`, `mmap`,
//! verifying a large needle's CRC, faulting pages in) run with no lock a reader needs, and on
//! a volume I/O thread, never a busy-polling worker ([`ReadMode`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ring_proto::needle::flags;

use super::datmap::DatMap;
use super::format::{self, CrcCheck, IdxEntry, NeedleHeader, SuperBlock, IDX_ENTRY_SIZE_4, IDX_ENTRY_SIZE_5};
use super::needle_map::{Found, NeedleMap};
use super::{NeedleQuery, NeedleRead, NeedsIo, Read, ReadMode, ReadNeedleError};
use crate::config::IdxEntrySize;

/// Needle data a polling worker verifies the CRC-32C of itself; larger needles' first check
/// runs on an I/O thread (CRC-32C runs at several GB/s: 64 KiB is some 10 µs).
const INLINE_CRC_MAX: usize = 64 << 10;

/// Entries applied to the needle map per write-lock hold while following an `.idx`.
const APPLY_BATCH: usize = 4096;
/// Entries sampled from each end of an `.idx` to tell 16- from 17-byte entries.
const DETECT_SAMPLE: u64 = 32;

// Needle CRC states, kept per map slot: a slot is replaced when its needle is rewritten, and
// the whole map when the volume is reopened after compaction, so "verified" never outlives
// the bytes it was computed over.
const CRC_UNVERIFIED: u8 = 0; // what `needle_map.rs` starts every entry at
const CRC_VERIFIED: u8 = 1;
const CRC_VERIFIED_LEGACY: u8 = 2;

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a needle's bytes are, or why a polling read must move to an I/O thread.
enum Located {
    At(Arc<DatMap>, usize, NeedleHeader),
    NeedsIo(NeedsIo),
}

/// Identity of a file: a rename over the path gives a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdent {
    pub dev: u64,
    pub ino: u64,
}

impl FileIdent {
    pub(crate) fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Where a volume's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeFiles {
    pub id: u32,
    pub collection: String,
    pub dat: PathBuf,
    pub idx: PathBuf,
}

/// The `.idx` reader: where it stopped, and how entries are laid out.
struct Follower {
    file: File,
    /// Bytes consumed: whole entries only. A partial trailing entry is read next time.
    pos: u64,
    entry_size: usize,
    /// Whether `entry_size` is known (configured, or seen to match the `.dat`) rather than
    /// guessed; a guess is re-examined whenever the `.idx` grows.
    confirmed: bool,
    /// The last entry consumed, to notice an `.idx` rewritten behind us.
    last: [u8; IDX_ENTRY_SIZE_5],
    buf: Vec<u8>,
}

/// What following an `.idx` found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Followed {
    pub entries: u64,
    /// The `.idx` shrank or its last consumed entry changed: the volume must be reopened.
    pub stale: bool,
}

/// Why a volume could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub(crate) struct OpenVolumeError {
    pub path: PathBuf,
    pub reason: String,
}

fn open_err(path: &Path, reason: impl ToString) -> OpenVolumeError {
    OpenVolumeError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

pub(crate) struct Volume {
    pub(crate) files: VolumeFiles,
    pub(crate) superblock: SuperBlock,
    pub(crate) dat_ident: FileIdent,
    pub(crate) idx_ident: FileIdent,
    dat: File,
    current: RwLock<Arc<DatMap>>,
    remap: Mutex<()>,
    needles: RwLock<NeedleMap>,
    follower: Mutex<Follower>,
    /// `follower.entry_size`, readable without its lock.
    entry_size: AtomicUsize,
    entry_size_confirmed: AtomicBool,
    stale: AtomicBool,
    /// Reads answered with data, their data bytes, and reads refused (not found, deleted,
    /// cookie, corrupt, range): for status and metrics; they restart when a compaction
    /// reopens the volume.
    pub(crate) served: AtomicU64,
    /// A second descriptor of the `.idx`, for the length check every read makes (without
    /// the follower's lock), and the length the follower last saw.
    idx_probe: File,
    idx_len_seen: AtomicU64,
    pub(crate) served_bytes: AtomicU64,
    pub(crate) served_io: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl Volume {
    /// Opens both files read-only, reads the super block, maps the `.dat` and replays the whole
    /// `.idx`. `hint`: the entry size other volumes of this server turned out to use, for an
    /// `.idx` that does not show its own (empty, or nothing checkable in it).
    /// `vif`: the volume's `.vif`, whose `bytesOffset` (4 or 5) names the entry size when
    /// `setting` is auto.
    pub(crate) fn open(
        files: VolumeFiles,
        setting: IdxEntrySize,
        hint: Option<usize>,
        vif: Option<&Path>,
    ) -> Result<Self, OpenVolumeError> {
        // std opens read-only with O_CLOEXEC; no lock is taken, nothing is ever written.
        let dat = File::open(&files.dat).map_err(|e| open_err(&files.dat, e))?;
        let dat_meta = dat.metadata().map_err(|e| open_err(&files.dat, e))?;
        let dat_len = dat_meta.len();
        let mut sb = [0u8; format::SUPER_BLOCK_SIZE];
        if dat_len < sb.len() as u64 {
            return Err(open_err(
                &files.dat,
                format!("{dat_len} bytes, shorter than a super block (the volume server may be creating it)"),
            ));
        }
        dat.read_exact_at(&mut sb, 0).map_err(|e| open_err(&files.dat, e))?;
        let superblock = SuperBlock::parse(&sb).map_err(|e| open_err(&files.dat, format!("super block: {e}")))?;
        if superblock.block_size() > dat_len {
            return Err(open_err(
                &files.dat,
                format!(
                    "super block of {} bytes in a {dat_len}-byte file",
                    superblock.block_size()
                ),
            ));
        }
        let map = Arc::new(DatMap::new(&dat, dat_len).map_err(|e| open_err(&files.dat, format!("mmap: {e}")))?);

        let idx = File::open(&files.idx).map_err(|e| open_err(&files.idx, e))?;
        let idx_meta = idx.metadata().map_err(|e| open_err(&files.idx, e))?;
        let (entry_size, confirmed) = match setting {
            IdxEntrySize::Fixed(17) => (IDX_ENTRY_SIZE_5, true),
            IdxEntrySize::Fixed(_) => (IDX_ENTRY_SIZE_4, true),
            IdxEntrySize::Auto => match vif.and_then(entry_size_from_vif) {
                Some(es) => (es, true),
                None => {
                    detect_entry_size(&idx, idx_meta.len(), map.bytes(), hint).map_err(|e| open_err(&files.idx, e))?
                }
            },
        };
        let v = Self {
            dat_ident: FileIdent::of(&dat_meta),
            idx_ident: FileIdent::of(&idx_meta),
            superblock,
            dat,
            current: RwLock::new(map),
            remap: Mutex::new(()),
            needles: RwLock::new(NeedleMap::default()),
            idx_probe: idx.try_clone().map_err(|e| open_err(&files.idx, e))?,
            idx_len_seen: AtomicU64::new(0),
            follower: Mutex::new(Follower {
                file: idx,
                pos: 0,
                entry_size,
                confirmed,
                last: [0; IDX_ENTRY_SIZE_5],
                buf: Vec::new(),
            }),
            entry_size: AtomicUsize::new(entry_size),
            entry_size_confirmed: AtomicBool::new(confirmed),
            stale: AtomicBool::new(false),
            served: AtomicU64::new(0),
            served_bytes: AtomicU64::new(0),
            served_io: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            files,
        };
        v.follow_inner(false).map_err(|e| open_err(&v.files.idx, e))?;
        Ok(v)
    }

    pub(crate) fn version(&self) -> u8 {
        self.superblock.version
    }

    pub(crate) fn entry_size(&self) -> (usize, bool) {
        (
            self.entry_size.load(Ordering::Relaxed),
            self.entry_size_confirmed.load(Ordering::Relaxed),
        )
    }

    /// Whether the follower found the `.idx` rewritten: the store reopens such a volume.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Reads the `.idx` entries appended since the last call. `check_tail`: also re-read the
    /// last consumed entry to notice a truncated-and-rewritten `.idx` (one `pread`; the
    /// periodic refresh does it, the inline refresh of a read miss does not).
    pub(crate) fn follow(&self, check_tail: bool) -> Followed {
        match self.follow_inner(check_tail) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %self.files.idx.display(), error = %e, "seaweedfs: reading the index failed; the volume will be reopened");
                self.stale.store(true, Ordering::Relaxed);
                Followed {
                    entries: 0,
                    stale: true,
                }
            }
        }
    }

    fn follow_inner(&self, check_tail: bool) -> io::Result<Followed> {
        let mut guard = lock(&self.follower);
        let f = &mut *guard;
        let mut out = Followed::default();
        let len = f.file.metadata()?.len();
        // `idx_len_seen` says "every entry up to this length is in the map": a read that sees
        // the same length skips catching up. So it is stored only once the entries are in
        // (below, still under the follower lock), never before: a read racing this one would
        // otherwise skip the catch-up and miss a needle whose write had completed.
        let stale = |out: &mut Followed| {
            self.stale.store(true, Ordering::Relaxed);
            self.idx_len_seen.store(len, Ordering::Release);
            out.stale = true;
        };
        if len < f.pos {
            stale(&mut out);
            return Ok(out);
        }
        if check_tail && f.pos > 0 {
            let es = f.entry_size;
            let mut b = [0u8; IDX_ENTRY_SIZE_5];
            f.file.read_exact_at(&mut b[..es], f.pos - es as u64)?;
            if b[..es] != f.last[..es] {
                stale(&mut out);
                return Ok(out);
            }
        }
        if len - f.pos < f.entry_size as u64 && (f.confirmed || len == f.pos) {
            self.idx_len_seen.store(len, Ordering::Release);
            return Ok(out);
        }
        if !f.confirmed {
            self.redetect(f, len)?;
        }
        let es = f.entry_size;
        let version = self.version();
        let mut max_end = 0u64;
        while len - f.pos >= es as u64 {
            let n = ((len - f.pos) / es as u64).min(APPLY_BATCH as u64) as usize;
            f.buf.resize(n * es, 0);
            // A short read means the file shrank under us: read_exact_at fails, and the
            // caller marks the volume stale.
            f.file.read_exact_at(&mut f.buf, f.pos)?;
            {
                let mut m = write_lock(&self.needles);
                for b in f.buf.chunks_exact(es) {
                    let e = IdxEntry::parse(b, es).expect("chunks_exact gives whole entries");
                    if e.is_live() {
                        max_end = max_end.max(
                            e.offset
                                .saturating_add(format::needle_disk_size(e.size as u32, version)),
                        );
                    }
                    m.apply(&e);
                }
            }
            f.last[..es].copy_from_slice(&f.buf[(n - 1) * es..]);
            f.pos += (n * es) as u64;
            out.entries += n as u64;
        }
        if f.buf.capacity() > APPLY_BATCH * IDX_ENTRY_SIZE_5 {
            f.buf = Vec::new();
        }
        self.idx_len_seen.store(len, Ordering::Release);
        drop(guard);
        if max_end > read_lock(&self.current).len() {
            // Map the new needles now, off the read path; a needle still beyond the file is
            // answered `corrupt` when read.
            let _ = self.map_covering(max_end);
        }
        Ok(out)
    }

    /// For a guessed entry size: looks again at the whole `.idx` (it grew); when the evidence
    /// now names a size, that size is kept and, if the guess was wrong, the map is rebuilt
    /// from the start (only guessed, so small: a confirmed size never gets here).
    fn redetect(&self, f: &mut Follower, len: u64) -> io::Result<()> {
        let dat_len = self.dat.metadata()?.len();
        let map = match self.map_covering(dat_len) {
            Ok(m) => m,
            Err(_) => read_lock(&self.current).clone(),
        };
        let (es, confirmed) = detect_entry_size(&f.file, len, map.bytes(), Some(f.entry_size))?;
        if !confirmed {
            return Ok(());
        }
        if es != f.entry_size {
            tracing::info!(file = %self.files.idx.display(), entry_size = es, "seaweedfs: index entry size recognised; re-reading the index");
            *write_lock(&self.needles) = NeedleMap::default();
            f.pos = 0;
            f.entry_size = es;
            self.entry_size.store(es, Ordering::Relaxed);
        }
        f.confirmed = true;
        self.entry_size_confirmed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// A mapping that covers `[0, end)`: the current one, or a new one of the whole file when
    /// the file has grown that far. `Err(file length)` when it has not.
    fn map_covering(&self, end: u64) -> Result<Arc<DatMap>, ReadNeedleErrorKind> {
        if let Some(m) = self.mapped_covering(end) {
            return Ok(m);
        }
        let _g = lock(&self.remap);
        let m = read_lock(&self.current).clone();
        if m.len() >= end {
            return Ok(m);
        }
        let len = self
            .dat
            .metadata()
            .map_err(|e| ReadNeedleErrorKind::Io(e.to_string()))?
            .len();
        if len < end {
            return Err(ReadNeedleErrorKind::BeyondFile(len));
        }
        let m = Arc::new(DatMap::new(&self.dat, len).map_err(|e| ReadNeedleErrorKind::Io(e.to_string()))?);
        *write_lock(&self.current) = m.clone();
        Ok(m)
    }

    /// The current mapping if it covers `[0, end)` (no system call: a polling worker's way).
    fn mapped_covering(&self, end: u64) -> Option<Arc<DatMap>> {
        let m = read_lock(&self.current);
        (m.len() >= end).then(|| m.clone())
    }

    fn lookup(&self, needle: u64) -> Option<Found> {
        read_lock(&self.needles).get(needle)
    }

    /// Serves one `READ_NEEDLE` (see [`super::VolumeStore::read`]). In [`ReadMode::Polling`]
    /// it answers [`Read::NeedsIo`] rather than do anything that can wait for a disk.
    pub(crate) fn read(&self, q: &NeedleQuery, verify_crc: bool, mode: ReadMode) -> Result<Read, ReadNeedleError> {
        let NeedleQuery {
            needle,
            cookie,
            range_offset,
            max_len,
            ranged,
            ..
        } = *q;
        let polling = mode == ReadMode::Polling;
        let volume = self.files.id;
        // Read-your-writes: the volume server appends a needle's `.idx` entry (new,
        // overwritten or deleted) before it answers whoever wrote it, so an `.idx` longer than
        // what the map has seen may name a newer version of this very needle. Catch up first,
        // so a read issued after a write completed never gets the old bytes. One fstat per
        // read; the periodic refresh alone would leave a window of a refresh interval.
        let len_now = self.idx_probe.metadata().map_or(u64::MAX, |m| m.len());
        // SYNC POINT: Acquire pairs with the Release stores in `follow_inner`, made after the
        // entries went into the map: seeing the length means seeing them.
        if len_now != self.idx_len_seen.load(Ordering::Acquire) {
            if polling {
                return Ok(Read::NeedsIo(NeedsIo::IndexGrew));
            }
            self.follow(false);
        }
        let found = self
            .lookup(needle)
            .ok_or(ReadNeedleError::NoSuchNeedle { volume, needle })?;
        if found.offset == 0 || found.size < 0 {
            return Err(ReadNeedleError::NeedleDeleted { volume, needle });
        }
        let version = self.version();
        let disk = format::needle_disk_size(found.size as u32, version);
        let (map, at, header) = match self.locate(needle, found, disk, mode)? {
            Located::At(map, at, header) => (map, at, header),
            Located::NeedsIo(why) => return Ok(Read::NeedsIo(why)),
        };
        // An empty needle (size 0) is served whatever the cookie, as the volume server does:
        // it answers size 0 without reading the needle (`Volume.readNeedle`), and compaction
        // rewrites empty needles with a placeholder cookie (`makeupDiff`'s 0x12345678), so
        // checking it would refuse needles the volume server serves. No data can leak.
        if header.cookie != cookie && found.size != 0 {
            return Err(ReadNeedleError::CookieMismatch { volume, needle });
        }
        let bytes = &map.bytes()[at..at + disk as usize];
        let n = format::parse_needle(bytes, version).map_err(|e| self.corrupt(needle, at as u64, e.to_string()))?;
        if n.flags & flags::HAS_TTL != 0 && n.expired(now_unix_ns()) {
            // What the volume server answers for an expired needle: not found.
            return Err(ReadNeedleError::NoSuchNeedle { volume, needle });
        }
        let data_size = n.data.len() as u64;
        let (start, len) = if ranged {
            if range_offset > data_size {
                return Err(ReadNeedleError::RangeNotSatisfiable {
                    volume,
                    needle,
                    offset: range_offset,
                    data_size,
                });
            }
            (range_offset, max_len.min(data_size - range_offset))
        } else {
            if data_size > max_len {
                return Err(ReadNeedleError::ResponseTooLarge {
                    volume,
                    needle,
                    data_size,
                    max_len,
                });
            }
            (0, data_size)
        };
        let mut crc_state = found.crc;
        if verify_crc && crc_state == CRC_UNVERIFIED && !n.data.is_empty() {
            if polling && n.data.len() > INLINE_CRC_MAX {
                return Ok(Read::NeedsIo(NeedsIo::LargeCrc));
            }
            crc_state = match format::check_crc(n.data, n.stored_checksum) {
                CrcCheck::Match => CRC_VERIFIED,
                CrcCheck::LegacyMatch => CRC_VERIFIED_LEGACY,
                CrcCheck::Mismatch { computed } => {
                    return Err(self.corrupt(
                        needle,
                        at as u64,
                        format!(
                            "CRC-32C of the data is {computed:08x}, the needle says {:08x}",
                            n.stored_checksum
                        ),
                    ))
                }
            };
            // Remember it for this stored needle (same offset and size: a rewrite gets a new
            // slot, and its own check).
            read_lock(&self.needles).set_crc(needle, found.offset, found.size, crc_state);
        }
        let checksum = if crc_state == CRC_VERIFIED_LEGACY {
            format::crc_from_legacy(n.stored_checksum)
        } else {
            n.stored_checksum
        };
        let meta = n.meta(version, start, checksum);
        let data_start = at + n.data_start + start as usize;
        Ok(Read::Ready(NeedleRead::new(meta, map, data_start, len as usize)))
    }

    /// Finds the needle's bytes: at the entry's offset, or for a 16-byte `.idx` 32 GiB further
    /// when the header there does not match (a 4-byte offset wraps; Go's `ReadData` retries
    /// the same way). The header's id and size must equal the entry's. Polling, it touches no
    /// page that is not resident and maps nothing; blocking, it faults the needle in first.
    fn locate(&self, needle: u64, found: Found, disk: u64, mode: ReadMode) -> Result<Located, ReadNeedleError> {
        let mut why = String::new();
        let wraps =
            self.entry_size.load(Ordering::Relaxed) == IDX_ENTRY_SIZE_4 && found.offset < format::WRAP_4BYTE_OFFSET;
        for at in [found.offset, found.offset + format::WRAP_4BYTE_OFFSET] {
            if at != found.offset && !wraps {
                break;
            }
            let map = match mode {
                ReadMode::Polling => match self.mapped_covering(at + disk) {
                    Some(m) => m,
                    None => return Ok(Located::NeedsIo(NeedsIo::Remap)),
                },
                ReadMode::Blocking => match self.map_covering(at + disk) {
                    Ok(m) => m,
                    Err(e) if at == found.offset => return Err(self.corrupt(needle, at, e.describe(at + disk))),
                    Err(_) => break,
                },
            };
            match mode {
                ReadMode::Polling if !map.resident(at as usize, disk as usize) => {
                    return Ok(Located::NeedsIo(NeedsIo::ColdPages))
                }
                ReadMode::Polling => {}
                ReadMode::Blocking => {
                    if let Err(e) = map.populate(&self.dat, at as usize, disk as usize) {
                        return Err(self.corrupt(needle, at, format!("reading the needle failed: {e}")));
                    }
                }
            }
            let h = NeedleHeader::parse(&map.bytes()[at as usize..]).expect("the mapping covers the needle");
            if h.id == needle && h.size == found.size as u32 {
                return Ok(Located::At(map, at as usize, h));
            }
            if why.is_empty() {
                why = format!(
                    "the header there names needle {:x} of size {}, the index says size {}",
                    h.id, h.size as i32, found.size
                );
            }
        }
        Err(self.corrupt(needle, found.offset, why))
    }

    fn corrupt(&self, needle: u64, at: u64, why: String) -> ReadNeedleError {
        ReadNeedleError::Corrupt {
            volume: self.files.id,
            needle,
            reason: format!("at offset {at} of {}: {why}", self.files.dat.display()),
        }
    }

    /// Heap bytes of the needle map.
    pub(crate) fn map_bytes(&self) -> u64 {
        read_lock(&self.needles).heap_bytes()
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        read_lock(&self.needles).counts()
    }

    /// Length of the `.dat` now (`fstat`), or as last mapped if that fails.
    pub(crate) fn dat_len(&self) -> u64 {
        self.dat
            .metadata()
            .map(|m| m.len())
            .unwrap_or_else(|_| read_lock(&self.current).len())
    }

    pub(crate) fn idx_entries(&self) -> u64 {
        let f = lock(&self.follower);
        f.pos / f.entry_size as u64
    }
}

/// What kept a needle from being mapped.
#[derive(Debug)]
enum ReadNeedleErrorKind {
    BeyondFile(u64),
    Io(String),
}

impl ReadNeedleErrorKind {
    fn describe(&self, end: u64) -> String {
        match self {
            Self::BeyondFile(len) => format!("the needle ends at byte {end}, beyond the file's {len} bytes"),
            Self::Io(e) => format!("mapping the file failed: {e}"),
        }
    }
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The entry size a `.vif` (protobuf `VolumeInfo` as JSON, beside the `.dat`) records:
/// `bytesOffset` 4 or 5 (`volume_loading.go` writes `types.OffsetSize`; `volume_tier.go`
/// refuses to load a volume whose `.vif` names the other size, so a running volume server
/// agrees with it). Absent, 0 or unreadable: `None`, and the entries decide.
fn entry_size_from_vif(path: &Path) -> Option<usize> {
    use std::io::Read;
    let mut text = Vec::new();
    File::open(path).ok()?.take(1 << 16).read_to_end(&mut text).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    // protojson writes the lowerCamelCase name; it also reads the proto name, and the old
    // `OldVersionVolumeInfo` message spelled it `BytesOffset`.
    let n = ["bytesOffset", "bytes_offset", "BytesOffset"]
        .iter()
        .find_map(|k| v.get(k))
        .and_then(|n| n.as_u64().or_else(|| n.as_str()?.parse().ok()))?;
    match n {
        4 => Some(IDX_ENTRY_SIZE_4),
        5 => Some(IDX_ENTRY_SIZE_5),
        _ => None,
    }
}

/// Which entry size an `.idx` uses, and whether that is known or guessed. Samples entries
/// from both ends of the file under each reading and checks what they name in the `.dat`:
/// a live entry's needle header carries the same id and size, a deletion's (SeaweedFS
/// appends an empty needle and indexes it with size -1) the same id. Under the wrong size the
/// entries after the first are misaligned and the first one's size field is shifted by a
/// byte, so they do not match. Entries pointing past the mapped `.dat` say nothing (the file
/// may have grown since it was mapped).
///
/// One reading matching and the other not decides (confirmed). Otherwise the length decides
/// if it is a multiple of only one size, then `hint`, then 16 (the default SeaweedFS build),
/// all as a guess that is re-examined as the `.idx` grows.
fn detect_entry_size(idx: &File, len: u64, dat: &[u8], hint: Option<usize>) -> io::Result<(usize, bool)> {
    let mut valid = [false; 2];
    for (k, es) in [IDX_ENTRY_SIZE_4, IDX_ENTRY_SIZE_5].into_iter().enumerate() {
        let n = len / es as u64;
        let (mut good, mut bad) = (0u32, 0u32);
        let head = n.min(DETECT_SAMPLE);
        let tail_start = (n - n.min(DETECT_SAMPLE)).max(head);
        for range in [0..head, tail_start..n] {
            if range.is_empty() {
                continue;
            }
            let mut buf = vec![0u8; (range.end - range.start) as usize * es];
            idx.read_exact_at(&mut buf, range.start * es as u64)?;
            for b in buf.chunks_exact(es) {
                let e = IdxEntry::parse(b, es).expect("whole entry");
                match entry_matches(&e, dat, es) {
                    Some(true) => good += 1,
                    Some(false) => bad += 1,
                    None => {}
                }
            }
        }
        valid[k] = good > 0 && bad == 0;
    }
    Ok(match valid {
        [true, false] => (IDX_ENTRY_SIZE_4, true),
        [false, true] => (IDX_ENTRY_SIZE_5, true),
        _ => (
            format::entry_size_by_length(len).or(hint).unwrap_or(IDX_ENTRY_SIZE_4),
            false,
        ),
    })
}

fn entry_matches(e: &IdxEntry, dat: &[u8], es: usize) -> Option<bool> {
    if e.offset == 0 {
        return None;
    }
    let header_at = |at: u64| -> Option<NeedleHeader> {
        let end = at.checked_add(format::NEEDLE_HEADER_SIZE as u64)?;
        if end > dat.len() as u64 {
            return None;
        }
        NeedleHeader::parse(&dat[at as usize..]).ok()
    };
    let fits = |h: &NeedleHeader| {
        h.id == e.id
            && if e.size >= 0 {
                h.size == e.size as u32
            } else {
                h.size == 0
            }
    };
    let h = header_at(e.offset)?;
    if fits(&h) {
        return Some(true);
    }
    if es == IDX_ENTRY_SIZE_4 && e.offset < format::WRAP_4BYTE_OFFSET {
        if let Some(h) = header_at(e.offset + format::WRAP_4BYTE_OFFSET) {
            return Some(fits(&h));
        }
    }
    Some(false)
}
