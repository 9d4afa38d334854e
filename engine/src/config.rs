//! Operator configuration: TOML with kebab-case keys, defaults equal to the shipped
//! `engine.example.toml` (which is also the embedded default), validated with messages that
//! name the key and the fix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented example shipped in the repository; running with no `--config` uses it.
pub const EMBEDDED_DEFAULT: &str = include_str!("../engine.example.toml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
#[derive(Default)]
pub struct Config {
    pub control: ControlConfig,
    pub workers: WorkersConfig,
    pub memory: MemoryConfig,
    pub sessions: SessionsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub ucx: UcxConfig,
    pub seaweedfs: SeaweedfsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct UcxConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transports: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_devices: Option<String>,
    pub request_timeout_ms: u64,
    pub max_message_bytes: u64,
    /// Ports UCX's tcp transport listens on (UCX_TCP_PORT_RANGE), "FIRST-LAST"; "0": any.
    pub tcp_port_range: String,
    /// Start listening beyond loopback even on a UCX runtime that a malformed connection
    /// request aborts (logged as an error at start).
    pub allow_unsafe_runtime: bool,
    /// A READ_NEEDLE whose peer is this engine's own listener reads the volume straight into
    /// the session's buffer instead of going through UCX (`dataplane/local.rs`).
    pub local_reads: bool,
}

/// Default of `ucx.tcp-port-range`: next to the listener's conventional 13337.
pub const DEFAULT_TCP_PORT_RANGE: &str = "13338-13437";

impl Default for UcxConfig {
    fn default() -> Self {
        Self {
            listen: None,
            transports: None,
            net_devices: None,
            request_timeout_ms: 10_000,
            max_message_bytes: 64 << 20,
            tcp_port_range: DEFAULT_TCP_PORT_RANGE.to_string(),
            allow_unsafe_runtime: false,
            local_reads: true,
        }
    }
}

impl UcxConfig {
    /// `tcp-port-range` as (first, last); None for "0" (the OS picks).
    pub fn tcp_ports(&self) -> Result<Option<(u16, u16)>, String> {
        let r = self.tcp_port_range.trim();
        if r == "0" {
            return Ok(None);
        }
        let (a, b) = r.split_once('-').ok_or_else(|| format!("{r:?} is not FIRST-LAST"))?;
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0);
        match (port(a), port(b)) {
            (Some(a), Some(b)) if a <= b => Ok(Some((a, b))),
            _ => Err(format!("{r:?} is not FIRST-LAST with 1 <= FIRST <= LAST <= 65535")),
        }
    }
}

/// `[seaweedfs]`: the volume server whose files this engine serves (`src/seaweed/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SeaweedfsConfig {
    /// Volume data directories (the volume server's `-dir`); empty: not a volume server.
    pub directories: Vec<PathBuf>,
    /// Where `.idx` files live when they are not beside the `.dat` (the volume server's
    /// `-dir.idx`). An `.idx` beside its `.dat` wins, as in SeaweedFS.
    pub idx_directories: Vec<PathBuf>,
    pub idx_entry_size: IdxEntrySize,
    /// How often the engine looks for new needles, new, vanished and compacted volumes.
    pub refresh_interval_ms: u64,
    /// Check each needle's CRC-32C (once per stored needle) before serving it.
    pub verify_crc: bool,
    /// The volume server's `security.toml`: with a `[jwt.signing.read] key` in it, every
    /// READ_NEEDLE must carry a JWT signed with that key for its file id, as the volume
    /// server's GET must (`seaweed/jwt.rs`). None: reads need no token.
    pub security_toml: Option<PathBuf>,
    /// Threads that do the volume file work that can block (cold pages, large CRCs), so a
    /// busy-polling worker never waits for a disk (`io_pool.rs`).
    pub io_threads: usize,
    /// Cores the I/O threads may run on. None: every allowed core no worker is pinned to
    /// (all allowed cores when workers take them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_cores: Option<Vec<usize>>,
}

/// Most I/O threads `seaweedfs.io-threads` may ask for.
pub const MAX_IO_THREADS: usize = 256;

impl Default for SeaweedfsConfig {
    fn default() -> Self {
        Self {
            directories: Vec::new(),
            idx_directories: Vec::new(),
            idx_entry_size: IdxEntrySize::Auto,
            refresh_interval_ms: 1000,
            verify_crc: true,
            security_toml: None,
            io_threads: 2,
            io_cores: None,
        }
    }
}

/// `seaweedfs.idx-entry-size`: `"auto"` (per volume: its `.vif`, else what its entries point
/// at), 16 (SeaweedFS's default build, 4-byte offsets) or 17 (built with `-tags 5BytesOffset`).
/// Any integer parses, so that validation can name the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdxEntrySize {
    #[default]
    Auto,
    Fixed(i64),
}

impl Serialize for IdxEntrySize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Fixed(n) => s.serialize_i64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for IdxEntrySize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IdxEntrySize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", 16 or 17")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IdxEntrySize, E> {
                match v {
                    "auto" => Ok(IdxEntrySize::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IdxEntrySize, E> {
                Ok(IdxEntrySize::Fixed(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IdxEntrySize, E> {
                Ok(IdxEntrySize::Fixed(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ControlConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    pub max_sessions: u32,
    /// Peer registrations (ConnectPeer, distinct addresses) one session may hold.
    pub max_peers_per_session: u32,
    /// Users (names) allowed to open sessions; with `allow-groups`, a client must match one
    /// of the two lists. Both empty: anyone who can open the socket.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct WorkersConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<Vec<usize>>,
    pub idle_spin_us: u64,
    pub spin_forever: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HugepagePolicy {
    Require,
    Prefer,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MemoryConfig {
    pub hugepages: HugepagePolicy,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub buffer_bytes: u64,
    pub max_sq_entries: u32,
    pub max_cq_entries: u32,
    pub max_buffer_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SessionsConfig {
    pub lease_ms: u32,
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    pub level: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    /// Address:port of the Prometheus endpoint (`GET /metrics`); unset: no endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: None,
            socket_group: None,
            max_sessions: 1024,
            max_peers_per_session: 256,
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            cores: None,
            idle_spin_us: 20_000,
            spin_forever: false,
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            hugepages: HugepagePolicy::Prefer,
            sq_entries: 256,
            cq_entries: 512,
            buffer_bytes: 4 << 20,
            max_sq_entries: 4096,
            max_cq_entries: 8192,
            max_buffer_bytes: 1 << 30,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            lease_ms: 15_000,
            drain_timeout_ms: 5_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// Why a configuration cannot be used. The message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key {key}: {problem}; {fix}")]
    Invalid {
        key: &'static str,
        problem: String,
        fix: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
        fix: fix.into(),
    }
}

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string(),
        })
    }

    /// Reads a config file. Relative paths in it (`control.socket`, `seaweedfs.directories`,
    /// `seaweedfs.idx-directories`, `seaweedfs.security-toml`) name files beside the config
    /// file, wherever the engine is started from (as a unit file's `--config` expects).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        let base = std::path::absolute(path)
            .map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        cfg.resolve_paths(&base);
        Ok(cfg)
    }

    /// Makes every relative path of the config relative to `base` (absolute ones stay).
    pub fn resolve_paths(&mut self, base: &Path) {
        let at = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.control.socket.iter_mut().for_each(at);
        self.seaweedfs.directories.iter_mut().for_each(at);
        self.seaweedfs.idx_directories.iter_mut().for_each(at);
        self.seaweedfs.security_toml.iter_mut().for_each(at);
    }

    pub fn embedded() -> Self {
        Self::parse(EMBEDDED_DEFAULT, "<embedded default>").expect("the shipped example config parses")
    }

    /// The socket path: configured, or the same default the clients use.
    pub fn socket_path(&self) -> PathBuf {
        self.control.socket.clone().unwrap_or_else(default_socket_path)
    }

    /// Checks everything that parsing cannot: the file ([`Config::validate_file`]) and this
    /// host ([`Config::validate_host`]). `allowed_cpus` is the set this process may run on.
    pub fn validate(&self, allowed_cpus: &[usize]) -> Result<(), ConfigError> {
        self.validate_file()?;
        self.validate_host(allowed_cpus)
    }

    /// What this host must offer the configuration: its cores, users and groups. (`check-config`
    /// reports these as warnings, so that a file can be checked away from its host.)
    pub fn validate_host(&self, allowed_cpus: &[usize]) -> Result<(), ConfigError> {
        for &c in self.workers.cores.iter().flatten() {
            if !allowed_cpus.contains(&c) {
                return Err(invalid(
                    "workers.cores",
                    format!(
                        "core {c} does not exist or this process may not run on it (allowed: {})",
                        cpu_list(allowed_cpus)
                    ),
                    "list only allowed cores",
                ));
            }
        }
        for &c in self.seaweedfs.io_cores.iter().flatten() {
            if !allowed_cpus.contains(&c) {
                return Err(invalid(
                    "seaweedfs.io-cores",
                    format!(
                        "core {c} does not exist or this process may not run on it (allowed: {})",
                        cpu_list(allowed_cpus)
                    ),
                    "list only allowed cores",
                ));
            }
        }
        for u in &self.control.allow_users {
            if nix::unistd::User::from_name(u).ok().flatten().is_none() {
                return Err(invalid(
                    "control.allow-users",
                    format!("user {u:?} does not exist"),
                    "list existing user names",
                ));
            }
        }
        for g in &self.control.allow_groups {
            if nix::unistd::Group::from_name(g).ok().flatten().is_none() {
                return Err(invalid(
                    "control.allow-groups",
                    format!("group {g:?} does not exist"),
                    "list existing group names",
                ));
            }
        }
        Ok(())
    }

    /// Checks what the file says on its own, wherever it is checked.
    pub fn validate_file(&self) -> Result<(), ConfigError> {
        let m = &self.memory;
        for (key, v, max_key, max) in [
            (
                "memory.sq-entries",
                m.sq_entries,
                "memory.max-sq-entries",
                m.max_sq_entries,
            ),
            (
                "memory.cq-entries",
                m.cq_entries,
                "memory.max-cq-entries",
                m.max_cq_entries,
            ),
        ] {
            check_ring(key, v)?;
            check_ring(max_key, max)?;
            if v > max {
                return Err(invalid(
                    key,
                    format!("{v} is above {max_key} = {max}"),
                    format!("lower {key} or raise {max_key}"),
                ));
            }
        }
        for (key, v) in [
            ("memory.buffer-bytes", m.buffer_bytes),
            ("memory.max-buffer-bytes", m.max_buffer_bytes),
        ] {
            if v == 0 || v % 4096 != 0 || v > 1 << 40 {
                return Err(invalid(
                    key,
                    format!("{v} is not a positive multiple of 4096 up to 1 TiB"),
                    "use e.g. 4194304 (4 MiB)",
                ));
            }
        }
        if m.buffer_bytes > m.max_buffer_bytes {
            return Err(invalid(
                "memory.buffer-bytes",
                format!(
                    "{} is above memory.max-buffer-bytes = {}",
                    m.buffer_bytes, m.max_buffer_bytes
                ),
                "lower buffer-bytes or raise max-buffer-bytes",
            ));
        }
        if self.control.max_peers_per_session == 0 {
            return Err(invalid(
                "control.max-peers-per-session",
                "0 would refuse every ConnectPeer",
                "set at least 1 (the default is 256)",
            ));
        }
        if self.control.max_sessions == 0 {
            return Err(invalid(
                "control.max-sessions",
                "0 would refuse every client",
                "set at least 1",
            ));
        }
        // One guard slot per region (sigbus.rs), one kept for the start-up huge-page probe.
        let guardable = (crate::sigbus::SLOTS - 1) as u32;
        if self.control.max_sessions > guardable {
            return Err(invalid(
                "control.max-sessions",
                format!(
                    "{} is more regions than the engine can guard against clients punching holes in them",
                    self.control.max_sessions
                ),
                format!("set at most {guardable}"),
            ));
        }
        if let Some(cores) = &self.workers.cores {
            if cores.is_empty() {
                return Err(invalid(
                    "workers.cores",
                    "the list is empty",
                    "list at least one core, or remove the key for the default",
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for &c in cores {
                if !seen.insert(c) {
                    return Err(invalid(
                        "workers.cores",
                        format!("core {c} is listed twice"),
                        "list each core once",
                    ));
                }
            }
        }
        if let Some(p) = &self.control.socket {
            if p.as_os_str().len() >= 108 {
                return Err(invalid(
                    "control.socket",
                    "path is longer than a Unix socket path may be (107 bytes)",
                    "use a shorter path",
                ));
            }
        }
        if let Some(l) = &self.ucx.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "ucx.listen",
                    format!("{l:?} is not an ip:port address"),
                    "use e.g. \"0.0.0.0:13337\"",
                ));
            }
        }
        match self.ucx.tcp_ports() {
            Err(why) => {
                return Err(invalid(
                    "ucx.tcp-port-range",
                    why,
                    format!(
                    "use e.g. \"{DEFAULT_TCP_PORT_RANGE}\" (or \"0\" to let the OS pick, which cannot be firewalled)"
                ),
                ))
            }
            Ok(Some((first, last))) => {
                let listen_port = self
                    .ucx
                    .listen
                    .as_ref()
                    .and_then(|l| l.parse::<std::net::SocketAddr>().ok());
                if let Some(p) = listen_port.map(|a| a.port()).filter(|p| (first..=last).contains(p)) {
                    return Err(invalid(
                        "ucx.tcp-port-range",
                        format!("{first}-{last} contains the listener's port {p} (ucx.listen)"),
                        "move one of them",
                    ));
                }
            }
            Ok(None) => {}
        }
        if self.ucx.request_timeout_ms == 0 {
            return Err(invalid(
                "ucx.request-timeout-ms",
                "0 would fail every remote request",
                "use e.g. 10000",
            ));
        }
        if self.ucx.max_message_bytes == 0 || self.ucx.max_message_bytes > i32::MAX as u64 {
            return Err(invalid(
                "ucx.max-message-bytes",
                format!("{} is outside 1..=2147483647", self.ucx.max_message_bytes),
                "use e.g. 67108864 (64 MiB)",
            ));
        }
        // A bare word that is not a level ("infoo") parses as a target filter that silences
        // everything else: refuse it as the typo it almost certainly is.
        let bare_non_level = self.log.level.split(',').any(|d| {
            let d = d.trim();
            !d.is_empty()
                && !d.contains(['=', '['])
                && !["error", "warn", "info", "debug", "trace", "off"].contains(&d.to_ascii_lowercase().as_str())
        });
        if bare_non_level || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log level", self.log.level),
                "use error, warn, info, debug or trace, or directives such as \"info,engine=debug\"",
            ));
        }
        self.seaweedfs.validate()?;
        if let Some(l) = &self.metrics.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "metrics.listen",
                    format!("{l:?} is not an IP address and port"),
                    "use e.g. \"127.0.0.1:9464\", or remove the key to turn the endpoint off",
                ));
            }
        }
        Ok(())
    }

    /// The cores workers run on: configured, or the last allowed core.
    pub fn worker_cores(&self, allowed_cpus: &[usize]) -> Vec<usize> {
        match &self.workers.cores {
            Some(c) => c.clone(),
            None => allowed_cpus.iter().max().map(|&c| vec![c]).unwrap_or_else(|| vec![0]),
        }
    }
}

impl Config {
    /// The cores the I/O threads may run on: configured, else every allowed core no worker is
    /// pinned to, else (workers take them all) every allowed core.
    pub fn io_cores(&self, allowed_cpus: &[usize]) -> Vec<usize> {
        if let Some(c) = &self.seaweedfs.io_cores {
            return c.clone();
        }
        let workers = self.worker_cores(allowed_cpus);
        let free: Vec<usize> = allowed_cpus.iter().copied().filter(|c| !workers.contains(c)).collect();
        if free.is_empty() {
            allowed_cpus.to_vec()
        } else {
            free
        }
    }
}

impl SeaweedfsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, dirs) in [
            ("seaweedfs.directories", &self.directories),
            ("seaweedfs.idx-directories", &self.idx_directories),
        ] {
            let mut seen = std::collections::HashSet::new();
            for d in dirs {
                if !seen.insert(d) {
                    return Err(invalid(
                        key,
                        format!("{} is listed twice", d.display()),
                        "list each directory once",
                    ));
                }
                check_readable_dir(key, d)?;
            }
        }
        if self.directories.is_empty() && !self.idx_directories.is_empty() {
            return Err(invalid(
                "seaweedfs.idx-directories",
                "set while seaweedfs.directories is empty",
                "list the volume server's data directories (its -dir) in seaweedfs.directories, or remove idx-directories",
            ));
        }
        if let IdxEntrySize::Fixed(n) = self.idx_entry_size {
            if n != 16 && n != 17 {
                return Err(invalid(
                    "seaweedfs.idx-entry-size",
                    format!("{n} is not an index entry size SeaweedFS writes"),
                    "use \"auto\", 16 (the default SeaweedFS build) or 17 (a build with -tags 5BytesOffset)",
                ));
            }
        }
        if self.refresh_interval_ms == 0 {
            return Err(invalid(
                "seaweedfs.refresh-interval-ms",
                "0 would never pick up new volumes or compacted ones",
                "use e.g. 1000",
            ));
        }
        if !(1..=MAX_IO_THREADS).contains(&self.io_threads) {
            return Err(invalid(
                "seaweedfs.io-threads",
                format!("{} is outside 1..={MAX_IO_THREADS}", self.io_threads),
                "use e.g. 2 (more for volumes on many disks, whose reads can wait in parallel)",
            ));
        }
        if self.io_cores.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid(
                "seaweedfs.io-cores",
                "is empty: the I/O threads would have no core to run on",
                "list at least one core, or remove the key (every core no worker is pinned to)",
            ));
        }
        if let Some(path) = &self.security_toml {
            crate::seaweed::jwt::load_read_key(path)
                .map_err(|e| invalid("seaweedfs.security-toml", e.to_string(), e.fix()))?;
        }
        Ok(())
    }
}

/// A directory the engine must be able to list (the files in it are checked when opened).
fn check_readable_dir(key: &'static str, d: &Path) -> Result<(), ConfigError> {
    let fix = "create it or correct the path (the engine needs read access: run it as the volume server's user or in a group that may read its files)";
    match std::fs::metadata(d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(key, format!("{} does not exist", d.display()), fix))
        }
        Err(e) => return Err(invalid(key, format!("{} cannot be read: {e}", d.display()), fix)),
        Ok(m) if !m.is_dir() => {
            return Err(invalid(
                key,
                format!("{} is not a directory", d.display()),
                "list directories, not files",
            ))
        }
        Ok(_) => {}
    }
    std::fs::read_dir(d)
        .map(drop)
        .map_err(|e| invalid(key, format!("{} cannot be listed: {e}", d.display()), fix))
}

fn check_ring(key: &'static str, v: u32) -> Result<(), ConfigError> {
    if !(2..=ring_proto::layout::MAX_RING_ENTRIES).contains(&v) || !v.is_power_of_two() {
        return Err(invalid(
            key,
            format!(
                "{v} is not a power of two between 2 and {}",
                ring_proto::layout::MAX_RING_ENTRIES
            ),
            "use e.g. 256",
        ));
    }
    Ok(())
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

/// Same rule as `ring_client::default_socket_path` (and the Go client's).
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("seaweed-ring/engine.sock"),
        _ => PathBuf::from(format!("/tmp/seaweed-ring-{}/engine.sock", nix::unistd::getuid())),
    }
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

#[cfg(test)]
mod tests;
