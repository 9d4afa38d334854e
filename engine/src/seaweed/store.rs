//! All volumes of the configured directories.
//!
//! Volumes are found as SeaweedFS names them (`disk_location.go`, `volume.go
//! VolumeFileName`): `[<collection>_]<vid>.dat` in a data directory, its `.idx` beside it or,
//! failing that, in an index directory (`-dir.idx`; an `.idx` beside the `.dat` wins, as in
//! `volume_loading.go`). The collection may itself contain underscores: the volume id is what
//! follows the last one.
//!
//! [`VolumeStore::refresh`] keeps the set current: it follows each `.idx`, opens volumes that
//! appeared, drops those whose files vanished, and reopens a volume whose `.dat` or `.idx` is
//! a new file (compaction renames new files into place; a copy from another server does the
//! same) or whose `.idx` shrank or changed behind the follower. A volume in the middle of such
//! a change — a `.cpc` compaction-commit marker or a `.note` copy marker beside its `.dat` — is
//! left as it is until the marker is gone: its old files stay intact until then.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::jwt::{load_read_key, JwtError, LoadKeyError, ReadJwtVerifier};
use super::volume::{lock, read_lock, write_lock, FileIdent, Volume, VolumeFiles};
use super::{NeedleQuery, NeedleRead, NeedsIo, Read, ReadMode, ReadNeedleError, VolumeInfo};
use crate::config::SeaweedfsConfig;

/// Why the store cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error("config key {key}: {} cannot be listed: {source}; fix the path or the engine's permissions (it needs to read the volume server's files)", dir.display())]
    Directory {
        key: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("config key seaweedfs.security-toml: {0}; {fix}", fix = .0.fix())]
    SecurityToml(LoadKeyError),
}

/// What one refresh changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshSummary {
    /// Volumes open after the refresh.
    pub volumes: usize,
    pub added: Vec<u32>,
    pub removed: Vec<u32>,
    /// Reopened because their files were replaced (compaction, copy) or rewritten.
    pub reopened: Vec<u32>,
    /// Files not served (this time): the file and why. Each distinct problem is also logged
    /// once as a warning.
    pub failed: Vec<(PathBuf, String)>,
    /// `.idx` entries read from volumes that were already open.
    pub new_entries: u64,
}

impl RefreshSummary {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.reopened.is_empty())
    }
}

struct State {
    cfg: SeaweedfsConfig,
    /// Problems already logged, so that a refresh every second does not repeat them.
    warned: HashMap<PathBuf, String>,
}

/// The volumes this engine serves. Shared by the workers (reads) and the refresh thread.
pub struct VolumeStore {
    /// Held for a whole refresh or reconfiguration (one at a time); reads never take it.
    state: Mutex<State>,
    verify_crc: AtomicBool,
    refresh_interval_ms: AtomicU64,
    configured: AtomicBool,
    volumes: RwLock<HashMap<u32, Arc<Volume>>>,
    /// The volume server's read key (`seaweedfs.security-toml`); None: reads need no JWT.
    /// Workers take the read lock once per needle request; SIGHUP swaps it.
    read_jwt: RwLock<Option<Arc<ReadJwtVerifier>>>,
    /// Volumes found but not indexed yet, and the progress of the first indexing.
    indexing: Mutex<Indexing>,
    /// Signalled whenever a pending volume is indexed (or fails to open).
    indexed: Condvar,
}

/// Volumes in the directories whose `.idx` is being replayed: at start every volume, later
/// each new one. A read of one waits on an I/O thread until it is served (or fails to open)
/// rather than answer `no-such-volume` for a volume that exists.
#[derive(Default)]
struct Indexing {
    pending: HashSet<u32>,
    /// Reads waiting for a pending volume. At most one: a wait holds an I/O thread, and an
    /// index that takes long (a hung disk) must not take every I/O thread from the cold
    /// reads of the volumes already served. The others are answered `throttled` at once
    /// (the client reads over HTTP).
    waiting: usize,
    progress: IndexingStatus,
    started: Option<Instant>,
    logged: Option<Instant>,
}

/// The first indexing of the volumes (the engine's start), for `engine status`, metrics and
/// the log: volumes are served one by one as each is indexed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexingStatus {
    /// Volumes found in the directories when indexing started.
    pub volumes_found: u64,
    /// Of those, indexed and served (or failed to open) so far.
    pub volumes_indexed: u64,
    /// `.idx` entries replayed so far.
    pub entries: u64,
    /// Every volume found at the start is indexed.
    pub done: bool,
    /// How long it took (so far, while not done).
    pub millis: u64,
}

/// How long a read of a volume still being indexed waits for it on an I/O thread.
const INDEXING_WAIT: Duration = Duration::from_secs(10);

impl VolumeStore {
    fn create(cfg: &SeaweedfsConfig) -> Result<Arc<VolumeStore>, OpenStoreError> {
        for (key, dirs) in [
            ("seaweedfs.directories", &cfg.directories),
            ("seaweedfs.idx-directories", &cfg.idx_directories),
        ] {
            for d in dirs {
                std::fs::read_dir(d).map_err(|source| OpenStoreError::Directory {
                    key,
                    dir: d.clone(),
                    source,
                })?;
            }
        }
        let read_jwt = load_verifier(cfg).map_err(OpenStoreError::SecurityToml)?;
        if let Some(path) = &cfg.security_toml {
            tracing::info!(file = %path.display(), checks_read_jwt = read_jwt.is_some(), "seaweedfs: read JWT key from the volume server's security.toml");
        }
        let store = Arc::new(VolumeStore {
            state: Mutex::new(State {
                cfg: cfg.clone(),
                warned: HashMap::new(),
            }),
            verify_crc: AtomicBool::new(cfg.verify_crc),
            refresh_interval_ms: AtomicU64::new(cfg.refresh_interval_ms),
            configured: AtomicBool::new(!cfg.directories.is_empty()),
            volumes: RwLock::new(HashMap::new()),
            read_jwt: RwLock::new(read_jwt),
            indexing: Mutex::new(Indexing::default()),
            indexed: Condvar::new(),
        });
        Ok(store)
    }

    /// Opens every volume of `cfg.directories` before it returns (see [`Self::start`]).
    #[cfg(test)]
    pub(crate) fn open(cfg: &SeaweedfsConfig) -> Result<Arc<VolumeStore>, OpenStoreError> {
        let store = Self::start(cfg)?;
        store.refresh();
        Ok(store)
    }

    /// The store, with no volume indexed yet: [`refresh`](Self::refresh) indexes them (the
    /// engine's refresh thread, at once), serving each as soon as it is. The directories are
    /// listed now, so a read of a volume that exists waits for it on an I/O thread rather
    /// than find no such volume. A directory that cannot be listed is an error; a volume that
    /// cannot be opened is skipped with a warning naming its file (and tried again at each
    /// refresh). With no directories the store is empty (not a volume server).
    pub fn start(cfg: &SeaweedfsConfig) -> Result<Arc<VolumeStore>, OpenStoreError> {
        let store = Self::create(cfg)?;
        let found = scan(cfg).found;
        let mut ix = lock(&store.indexing);
        ix.pending = found.keys().copied().collect();
        ix.progress.volumes_found = found.len() as u64;
        ix.progress.done = found.is_empty();
        ix.started = Some(Instant::now());
        drop(ix);
        if !cfg.directories.is_empty() {
            tracing::info!(
                volumes = found.len(),
                directories = ?cfg.directories,
                "seaweedfs: indexing the volumes of these directories (each is served once indexed)"
            );
        }
        Ok(store)
    }

    /// The first indexing's progress.
    pub fn indexing(&self) -> IndexingStatus {
        let ix = lock(&self.indexing);
        let mut p = ix.progress;
        if !p.done {
            p.millis = ix.started.map_or(0, |t| t.elapsed().as_millis() as u64);
        }
        p
    }

    /// How often the owner should call [`refresh`](Self::refresh).
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms.load(Ordering::Relaxed))
    }

    /// Whether any directory is configured.
    pub fn is_configured(&self) -> bool {
        self.configured.load(Ordering::Relaxed)
    }

    /// Brings the set of volumes up to date with the directories (see the module docs).
    /// Takes as long as opening new or replaced volumes takes (replaying their `.idx`); reads
    /// go on meanwhile, on the old state.
    pub fn refresh(&self) -> RefreshSummary {
        let mut st = lock(&self.state);
        self.refresh_locked(&mut st, false)
    }

    /// Applies a changed `[seaweedfs]` section (SIGHUP) to this store in place: volumes of
    /// directories no longer listed are dropped, those of new directories opened, and a changed
    /// `idx-entry-size` reopens every volume. `verify-crc` and `refresh-interval-ms` take
    /// effect at once. The caller validates the section first (`Config::validate`); a
    /// directory that cannot be listed is reported in `failed` and its volumes kept.
    pub fn reconfigure(&self, cfg: &SeaweedfsConfig) -> RefreshSummary {
        let mut st = lock(&self.state);
        // The key is re-read on every reconfiguration (a rotated key in an unchanged file
        // path); a file that cannot be read keeps the old key: never fall back to no checks.
        match load_verifier(cfg) {
            Ok(v) => {
                tracing::info!(file = ?cfg.security_toml, checks_read_jwt = v.is_some(), "seaweedfs: read JWT key reloaded");
                *write_lock(&self.read_jwt) = v;
            }
            Err(e) => {
                tracing::error!(error = %e, fix = e.fix(), "seaweedfs: read JWT key not reloaded; the previous one stays in force")
            }
        }
        let reopen_all = st.cfg.idx_entry_size != cfg.idx_entry_size;
        st.cfg = cfg.clone();
        self.verify_crc.store(cfg.verify_crc, Ordering::Relaxed);
        self.configured.store(!cfg.directories.is_empty(), Ordering::Relaxed);
        self.refresh_interval_ms
            .store(cfg.refresh_interval_ms, Ordering::Relaxed);
        self.refresh_locked(&mut st, reopen_all)
    }

    fn refresh_locked(&self, st: &mut State, reopen_all: bool) -> RefreshSummary {
        let scan = scan(&st.cfg);
        let mut summary = RefreshSummary::default();
        let mut problems = scan.problems;
        let existing: Vec<(u32, Arc<Volume>)> = read_lock(&self.volumes).iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut sizes = EntrySizes::default();
        existing.iter().for_each(|(_, v)| sizes.count(v));
        let setting = st.cfg.idx_entry_size;
        let open = |found: &Found, problems: &mut Vec<(PathBuf, String)>, sizes: &mut EntrySizes| {
            let opened = Volume::open(found.files.clone(), setting, sizes.hint(), found.vif.as_deref());
            match opened {
                Ok(v) => {
                    sizes.count(&v);
                    Some(Arc::new(v))
                }
                Err(e) => {
                    problems.push((e.path.clone(), e.reason));
                    None
                }
            }
        };
        let mut insert = Vec::new();
        let mut remove = Vec::new();
        for (vid, v) in &existing {
            let keep_as_is = scan.busy.contains(vid) || scan.unreadable.iter().any(|d| v.files.dat.starts_with(d));
            let Some(found) = scan.found.get(vid) else {
                if !keep_as_is {
                    remove.push(*vid);
                }
                continue;
            };
            if keep_as_is {
                continue;
            }
            let replaced = reopen_all
                || v.is_stale()
                || found.files != v.files
                || found.dat_ident != v.dat_ident
                || found.idx_ident != v.idx_ident
                || {
                    let f = v.follow(true);
                    summary.new_entries += f.entries;
                    f.stale
                };
            if replaced {
                match open(found, &mut problems, &mut sizes) {
                    Some(nv) => {
                        tracing::debug!(volume = vid, dat = %found.files.dat.display(), "seaweedfs: volume reopened");
                        summary.reopened.push(*vid);
                        insert.push((*vid, nv));
                    }
                    None => remove.push(*vid),
                }
            }
        }
        let mut new: Vec<&Found> = scan
            .found
            .iter()
            .filter(|(vid, _)| !existing.iter().any(|(e, _)| e == *vid))
            .map(|(_, f)| f)
            .collect();
        new.sort_by_key(|f| f.files.id);
        lock(&self.indexing).pending.extend(new.iter().map(|f| f.files.id));
        for found in new {
            // Served at once, before the next one is indexed.
            let vid = found.files.id;
            let opened = open(found, &mut problems, &mut sizes);
            let entries = opened.as_ref().map_or(0, |v| v.idx_entries());
            if let Some(v) = opened {
                tracing::debug!(volume = vid, dat = %found.files.dat.display(), "seaweedfs: volume opened");
                summary.added.push(vid);
                write_lock(&self.volumes).insert(vid, v);
            }
            self.indexed_one(vid, entries);
        }
        self.indexing_finished();
        {
            let mut w = write_lock(&self.volumes);
            for vid in &remove {
                w.remove(vid);
            }
            for (vid, v) in insert {
                w.insert(vid, v);
            }
            summary.volumes = w.len();
        }
        remove.sort_unstable();
        summary.removed = remove;
        summary.reopened.sort_unstable();
        // Log each problem once, and forget those that went away.
        let mut warned = HashMap::new();
        for (path, why) in &problems {
            if st.warned.get(path) != Some(why) {
                tracing::warn!(file = %path.display(), error = %why, "seaweedfs: volume not served");
            }
            warned.insert(path.clone(), why.clone());
        }
        st.warned = warned;
        problems.sort();
        summary.failed = problems;
        if summary.changed() {
            tracing::info!(
                volumes = summary.volumes,
                added = ?summary.added,
                removed = ?summary.removed,
                reopened = ?summary.reopened,
                "seaweedfs: volumes changed"
            );
        }
        summary
    }

    /// Volume `vid` is indexed (and served) or failed to open: readers waiting for it go on.
    fn indexed_one(&self, vid: u32, entries: u64) {
        let mut ix = lock(&self.indexing);
        if ix.pending.remove(&vid) && !ix.progress.done {
            ix.progress.volumes_indexed += 1;
            ix.progress.entries += entries;
            let now = Instant::now();
            if ix
                .logged
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                ix.logged = Some(now);
                tracing::info!(
                    indexed = ix.progress.volumes_indexed,
                    of = ix.progress.volumes_found,
                    entries = ix.progress.entries,
                    "seaweedfs: indexing volumes"
                );
            }
        }
        drop(ix);
        self.indexed.notify_all();
    }

    fn indexing_finished(&self) {
        let mut ix = lock(&self.indexing);
        if ix.progress.done {
            return;
        }
        // Volumes found at the start that vanished before they were opened.
        ix.pending.clear();
        ix.progress.done = true;
        ix.progress.millis = ix.started.map_or(0, |t| t.elapsed().as_millis() as u64);
        tracing::info!(
            volumes = ix.progress.volumes_indexed,
            entries = ix.progress.entries,
            seconds = ix.progress.millis as f64 / 1000.0,
            "seaweedfs: every volume indexed"
        );
        drop(ix);
        self.indexed.notify_all();
    }

    /// Checks a read's JWT as the volume server does before it looks at the volume: with a
    /// read key configured `jwt` must verify for this file id; without one anything passes.
    pub fn check_read_jwt(&self, jwt: &[u8], volume: u32, needle: u64, cookie: u32) -> Result<(), JwtError> {
        let verifier = read_lock(&self.read_jwt).clone();
        match verifier {
            Some(v) => v.verify(jwt, volume, needle, cookie),
            None => Ok(()),
        }
    }

    /// Serves one `READ_NEEDLE` on a busy-polling worker, without waiting for a disk: the
    /// needle, or [`Read::NeedsIo`] when serving it could wait (pages not in the page cache,
    /// a large needle's first CRC check, an `.idx` that grew, a `.dat` to remap); then
    /// [`VolumeStore::read_blocking`] on an I/O thread serves it.
    ///
    /// Takes no lock for longer than a map lookup; system calls: one `fstat` of the `.idx`
    /// (read-your-writes) and one `mincore` of the needle's pages. No allocation but the
    /// metadata's name and mime.
    pub fn read_polling(&self, q: &NeedleQuery) -> Result<Read, ReadNeedleError> {
        let v = match self.volume(q.volume) {
            Ok(v) => v,
            Err(e) => match self.pending(q.volume) {
                true => return Ok(Read::NeedsIo(NeedsIo::Indexing)),
                // Indexed in the meantime, or no such volume.
                false => self.volume(q.volume).map_err(|_| e)?,
            },
        };
        let r = v.read(q, self.verify_crc.load(Ordering::Relaxed), ReadMode::Polling);
        match r {
            Ok(Read::Ready(n)) => Ok(Read::Ready(count(&v, Ok(n), false)?)),
            Ok(Read::NeedsIo(why)) => Ok(Read::NeedsIo(why)),
            Err(e) => count(&v, Err(e), false).map(Read::Ready),
        }
    }

    /// Serves one `READ_NEEDLE` on an I/O thread: faults the needle's pages in, verifies its
    /// CRC-32C (once per stored needle, when `verify-crc`), catches up on the volume's new
    /// `.idx` entries first when the `.idx` grew. Blocks for as long as the disk takes.
    pub fn read_blocking(&self, q: &NeedleQuery) -> Result<NeedleRead, ReadNeedleError> {
        let v = self.volume_indexed(q.volume)?;
        let r = match v.read(q, self.verify_crc.load(Ordering::Relaxed), ReadMode::Blocking) {
            Ok(Read::Ready(n)) => Ok(n),
            Ok(Read::NeedsIo(why)) => unreachable!("a blocking read never defers ({why:?})"),
            Err(e) => Err(e),
        };
        count(&v, r, true)
    }

    /// Counts a read refused before any volume work (the I/O queue was full).
    pub fn count_refused(&self, volume: u32) {
        if let Ok(v) = self.volume(volume) {
            v.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads waiting for a volume being indexed now (tests).
    #[cfg(test)]
    pub(crate) fn indexing_waiters(&self) -> usize {
        lock(&self.indexing).waiting
    }

    fn pending(&self, volume: u32) -> bool {
        lock(&self.indexing).pending.contains(&volume)
    }

    /// The volume, once indexed if it is being indexed (waiting at most [`INDEXING_WAIT`],
    /// one read at a time: see [`Indexing::waiting`]).
    fn volume_indexed(&self, volume: u32) -> Result<Arc<Volume>, ReadNeedleError> {
        let deadline = Instant::now() + INDEXING_WAIT;
        let mut ix = lock(&self.indexing);
        if !ix.pending.contains(&volume) {
            drop(ix);
            return self.volume(volume);
        }
        if ix.waiting >= 1 {
            return Err(ReadNeedleError::Indexing { volume });
        }
        ix.waiting += 1;
        while ix.pending.contains(&volume) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            ix = self.indexed.wait_timeout(ix, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        ix.waiting -= 1;
        drop(ix);
        // A volume leaves `pending` after it went into `volumes`: seen gone, it is there (or
        // it failed to open).
        self.volume(volume)
    }

    fn volume(&self, volume: u32) -> Result<Arc<Volume>, ReadNeedleError> {
        read_lock(&self.volumes)
            .get(&volume)
            .cloned()
            .ok_or(ReadNeedleError::NoSuchVolume { volume })
    }

    /// The open volumes, by id.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let vols: Vec<Arc<Volume>> = read_lock(&self.volumes).values().cloned().collect();
        let mut out: Vec<VolumeInfo> = vols
            .iter()
            .map(|v| {
                let (live, deleted) = v.counts();
                let (es, confirmed) = v.entry_size();
                VolumeInfo {
                    id: v.files.id,
                    collection: v.files.collection.clone(),
                    dat_path: v.files.dat.clone(),
                    idx_path: v.files.idx.clone(),
                    version: v.version(),
                    compaction_revision: v.superblock.compaction_revision,
                    needles_live: live,
                    needles_deleted: deleted,
                    idx_entries: v.idx_entries(),
                    dat_bytes: v.dat_len(),
                    idx_entry_size: es as u8,
                    idx_entry_size_confirmed: confirmed,
                    reads_served: v.served.load(Ordering::Relaxed),
                    bytes_served: v.served_bytes.load(Ordering::Relaxed),
                    reads_served_io: v.served_io.load(Ordering::Relaxed),
                    needle_map_bytes: v.map_bytes(),
                    reads_refused: v.refused.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by_key(|i| i.id);
        out
    }
}

/// How many volumes showed each entry size. All volumes of one SeaweedFS build use the same,
/// so the majority is the guess for a volume whose own `.idx` does not show it (yet).
#[derive(Default)]
struct EntrySizes([usize; 2]);

impl EntrySizes {
    fn count(&mut self, v: &Volume) {
        match v.entry_size() {
            (16, true) => self.0[0] += 1,
            (17, true) => self.0[1] += 1,
            _ => {}
        }
    }

    fn hint(&self) -> Option<usize> {
        match self.0 {
            [0, 0] => None,
            [a, b] if b > a => Some(17),
            _ => Some(16),
        }
    }
}

struct Found {
    files: VolumeFiles,
    dat_ident: FileIdent,
    idx_ident: FileIdent,
    /// The `.vif` beside the `.dat`, if there is one (it names the idx entry size).
    vif: Option<PathBuf>,
}

#[derive(Default)]
struct Scan {
    found: HashMap<u32, Found>,
    /// Volumes with a compaction commit (`.cpc`) or copy (`.note`) in progress.
    busy: HashSet<u32>,
    /// Directories that could not be listed this time.
    unreadable: Vec<PathBuf>,
    problems: Vec<(PathBuf, String)>,
}

fn scan(cfg: &SeaweedfsConfig) -> Scan {
    let mut s = Scan::default();
    for dir in &cfg.directories {
        let names: HashSet<String> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) => {
                s.problems
                    .push((dir.clone(), format!("cannot list the directory: {e}")));
                s.unreadable.push(dir.clone());
                continue;
            }
        };
        let mut dats: Vec<&String> = names.iter().filter(|n| n.ends_with(".dat")).collect();
        dats.sort();
        for name in dats {
            let base = &name[..name.len() - 4];
            let Some((collection, id)) = parse_volume_name(base) else {
                continue;
            };
            if names.contains(&format!("{base}.cpc")) || names.contains(&format!("{base}.note")) {
                s.busy.insert(id);
                continue;
            }
            let dat = dir.join(name);
            if let Some(other) = s.found.get(&id) {
                s.problems.push((
                    dat,
                    format!("volume {id} is also at {}; serving that one", other.files.dat.display()),
                ));
                continue;
            }
            let idx_name = format!("{base}.idx");
            let beside = dir.join(&idx_name);
            let idx = if names.contains(&idx_name) {
                Some(beside)
            } else {
                cfg.idx_directories
                    .iter()
                    .map(|d| d.join(&idx_name))
                    .find(|p| p.exists())
            };
            let Some(idx) = idx else {
                s.problems
                    .push((dat, format!("no {idx_name} beside it or in seaweedfs.idx-directories")));
                continue;
            };
            let (dat_meta, idx_meta) = match (std::fs::metadata(&dat), std::fs::metadata(&idx)) {
                (Ok(d), Ok(i)) => (d, i),
                (Err(e), _) => {
                    s.problems.push((dat, e.to_string()));
                    continue;
                }
                (_, Err(e)) => {
                    s.problems.push((idx, e.to_string()));
                    continue;
                }
            };
            s.found.insert(
                id,
                Found {
                    files: VolumeFiles {
                        id,
                        collection: collection.to_string(),
                        dat,
                        idx,
                    },
                    dat_ident: FileIdent::of(&dat_meta),
                    idx_ident: FileIdent::of(&idx_meta),
                    vif: names
                        .contains(&format!("{base}.vif"))
                        .then(|| dir.join(format!("{base}.vif"))),
                },
            );
        }
    }
    // A volume busy in one directory is not served from another one meanwhile.
    for id in &s.busy {
        s.found.remove(id);
    }
    s
}

/// `parseCollectionVolumeId` (`disk_location.go`): the id follows the last underscore, if that
/// is not the first character; it must be a canonical decimal `u32` (SeaweedFS writes
/// `strconv.Itoa`, so "007" or "+7" never name a volume).
pub(crate) fn parse_volume_name(base: &str) -> Option<(&str, u32)> {
    let (collection, vid) = match base.rfind('_') {
        Some(i) if i > 0 => (&base[..i], &base[i + 1..]),
        _ => ("", base),
    };
    if vid.is_empty() || !vid.bytes().all(|b| b.is_ascii_digit()) || (vid.len() > 1 && vid.starts_with('0')) {
        return None;
    }
    Some((collection, vid.parse().ok()?))
}

fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<VolumeStore>();
    is::<NeedleRead>();
}

/// The verifier for `cfg.security_toml`'s read key, if it has one.
fn load_verifier(cfg: &SeaweedfsConfig) -> Result<Option<Arc<ReadJwtVerifier>>, LoadKeyError> {
    let Some(path) = &cfg.security_toml else {
        return Ok(None);
    };
    Ok(load_read_key(path)?.map(|k| Arc::new(ReadJwtVerifier::new(&k))))
}

/// Counts a finished read for status/metrics (the volume's own cache lines, bumped once per
/// read); `io`: served by an I/O thread.
fn count(v: &Volume, r: Result<NeedleRead, ReadNeedleError>, io: bool) -> Result<NeedleRead, ReadNeedleError> {
    match &r {
        Ok(n) => {
            v.served.fetch_add(1, Ordering::Relaxed);
            v.served_bytes.fetch_add(n.len() as u64, Ordering::Relaxed);
            if io {
                v.served_io.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(_) => {
            v.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    r
}
