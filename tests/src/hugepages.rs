//! The system's 2 MiB huge-page pool, for tests that need pages free or none at all: sized
//! through /proc/sys/vm/nr_hugepages (root), restored afterwards.

/// Serialises the tests of one test binary that change the pool.
static HUGE_POOL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A number field of /proc/meminfo (e.g. `"HugePages_Free:"`), 0 when absent.
pub fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
pub const NR_OVERCOMMIT_HUGEPAGES: &str = "/proc/sys/vm/nr_overcommit_hugepages";

/// Sets the pool's size. 0 leaves no page free: pages in use become surplus pages, freed to
/// the system when released.
pub fn set_pool(pages: u64) -> std::io::Result<()> {
    std::fs::write(NR_HUGEPAGES, pages.to_string())
}

/// How many surplus pages the kernel may add beyond the pool (0 unless an operator set it).
pub fn overcommit() -> u64 {
    std::fs::read_to_string(NR_OVERCOMMIT_HUGEPAGES)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The huge pages a test reserved itself (as root, through /proc/sys/vm/nr_hugepages); the
/// pool size found before is restored on drop. Holds `HUGE_POOL` meanwhile.
pub struct HugePool {
    original: u64,
    /// The pool size while the test holds it.
    pub reserved: u64,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl HugePool {
    /// At least `need` free 2 MiB pages, or None (the test is skipped) when they cannot be had
    /// and SWRING_REQUIRE_HUGEPAGES is not 1; with it set (scripts/test does), a failure.
    pub fn reserve(need: u64) -> Option<HugePool> {
        let lock = HUGE_POOL.lock().unwrap_or_else(|p| p.into_inner());
        let original: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let free = meminfo("HugePages_Free:");
        let want = original + need.saturating_sub(free);
        let result = if free >= need { Ok(()) } else { set_pool(want) };
        let got = meminfo("HugePages_Free:");
        if result.is_ok() && got >= need {
            return Some(HugePool {
                original,
                reserved: want,
                _lock: lock,
            });
        }
        let _ = set_pool(original);
        let why = format!(
            "cannot reserve {need} free huge pages (free {got}, write {want} to {NR_HUGEPAGES}: {result:?}); run as root, or echo {want} > {NR_HUGEPAGES}"
        );
        if std::env::var("SWRING_REQUIRE_HUGEPAGES").as_deref() == Ok("1") {
            panic!("SWRING_REQUIRE_HUGEPAGES=1: {why}");
        }
        eprintln!("SKIPPED: {why}");
        None
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = set_pool(self.original);
    }
}
