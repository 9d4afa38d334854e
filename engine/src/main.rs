//! The seaweed ring engine: serves shared-memory submission/completion rings to local clients.

mod config;
mod control;
mod dataplane;
mod exports;
mod fdlimits;
mod idle;
mod io_pool;
mod lookup_throttle;
mod metrics;
mod ops;
mod region;
mod reload;
mod seaweed;
mod session;
mod sigbus;
mod stats;
mod status;
use engine::ucx;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use config::{Config, HugepagePolicy};

/// Shared-memory ring engine for SeaweedFS.
///
/// Clients (the Go library, the Rust client, the benchmark) connect to the engine's control
/// socket, receive a shared-memory region holding a submission and a completion ring, and from
/// then on exchange requests with no system call: the engine's worker threads, pinned to the
/// cores the config names, busy-poll the rings.
///
/// With no --config the engine runs on its embedded default (the shipped
/// engine.example.toml): one worker on the last allowed core, huge pages when available.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "engine",
    version,
    about,
    long_about,
    after_help = "Examples:\n  engine                              run with the embedded default config\n  engine --config /etc/seaweed-ring/engine.toml\n  engine --cores 2,3 --spin-forever   two pinned workers that never sleep\n  engine --seaweedfs-dir /data/volumes --ucx-listen 0.0.0.0:13337\n                                      serve a volume server's needles to peer engines\n  engine check-config engine.toml     print the effective configuration"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(long, short, value_name = "FILE", global = true, env = "SWRING_CONFIG")]
    config: Option<PathBuf>,

    /// Control socket path (overrides control.socket).
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,

    /// Worker cores, comma-separated (overrides workers.cores).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cores: Option<Vec<usize>>,

    /// Huge-page policy (overrides memory.hugepages).
    #[arg(long, value_enum)]
    hugepages: Option<HugepagePolicy>,

    /// Idle spin before sleeping, in microseconds (overrides workers.idle-spin-us).
    #[arg(long, value_name = "US")]
    idle_spin_us: Option<u64>,

    /// Workers never sleep (overrides workers.spin-forever).
    #[arg(long)]
    spin_forever: bool,

    /// Session lease in milliseconds, 0 for none (overrides sessions.lease-ms).
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u32>,

    /// UCX listener address, ip:port (overrides ucx.listen).
    #[arg(long, value_name = "ADDR")]
    ucx_listen: Option<String>,

    /// UCX transports, UCX_TLS syntax (overrides ucx.transports).
    #[arg(long, value_name = "LIST")]
    ucx_transports: Option<String>,

    /// UCX network devices, UCX_NET_DEVICES syntax (overrides ucx.net-devices).
    #[arg(long, value_name = "LIST")]
    ucx_net_devices: Option<String>,

    /// Whether a needle read whose peer is this engine itself skips UCX (overrides
    /// ucx.local-reads).
    #[arg(long, value_name = "BOOL")]
    ucx_local_reads: Option<bool>,

    /// Log level or tracing filter (overrides log.level; RUST_LOG wins over both).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Serve Prometheus metrics on ADDR:PORT (overrides metrics.listen; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,

    /// Serve the SeaweedFS volumes of DIR to peer engines (repeatable; overrides
    /// seaweedfs.directories).
    #[arg(long = "seaweedfs-dir", value_name = "DIR")]
    seaweedfs_dirs: Vec<PathBuf>,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug, Clone)]
enum Cmd {
    /// Run the engine (the default when no command is given).
    Run,
    /// Validate a configuration file and print the effective configuration. What the file
    /// asks of a host (its cores, users and groups) is checked against this one and reported
    /// as warnings, so a file can be checked away from the host it is for.
    CheckConfig {
        /// The file to check (default: --config, else the embedded default).
        file: Option<PathBuf>,
        /// Also fail when this host cannot run the file (as the engine refuses to start).
        #[arg(long)]
        this_host: bool,
    },
    /// Show a running engine's workers, sessions and counters (asks its control socket:
    /// --socket, else control.socket of --config, else the default path).
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// The flags over the config. Relative paths on the command line are relative to the
    /// working directory (made absolute here: the socket's directory is created from it).
    fn apply_overrides(&self, cfg: &mut Config) {
        let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        if let Some(s) = &self.socket {
            cfg.control.socket = Some(absolute(s));
        }
        if let Some(c) = &self.cores {
            cfg.workers.cores = Some(c.clone());
        }
        if let Some(h) = self.hugepages {
            cfg.memory.hugepages = h;
        }
        if let Some(us) = self.idle_spin_us {
            cfg.workers.idle_spin_us = us;
        }
        if self.spin_forever {
            cfg.workers.spin_forever = true;
        }
        if let Some(l) = self.lease_ms {
            cfg.sessions.lease_ms = l;
        }
        if let Some(l) = &self.ucx_listen {
            cfg.ucx.listen = Some(l.clone());
        }
        if let Some(t) = &self.ucx_transports {
            cfg.ucx.transports = Some(t.clone());
        }
        if let Some(d) = &self.ucx_net_devices {
            cfg.ucx.net_devices = Some(d.clone());
        }
        if let Some(l) = self.ucx_local_reads {
            cfg.ucx.local_reads = l;
        }
        if let Some(l) = &self.log_level {
            cfg.log.level = l.clone();
        }
        if let Some(m) = &self.metrics_listen {
            cfg.metrics.listen = Some(m.clone());
        }
        if !self.seaweedfs_dirs.is_empty() {
            cfg.seaweedfs.directories = self.seaweedfs_dirs.iter().map(absolute).collect();
        }
    }
}

/// The configuration from `file` (else --config, else the embedded default) with the flags
/// over it, not yet validated.
fn read_config(cli: &Cli, file: Option<&PathBuf>) -> Result<Config, config::ConfigError> {
    let mut cfg = match file.or(cli.config.as_ref()) {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    cli.apply_overrides(&mut cfg);
    Ok(cfg)
}

/// The configuration, validated for this host.
fn load_config(cli: &Cli, file: Option<&PathBuf>) -> Result<Config, config::ConfigError> {
    let cfg = read_config(cli, file)?;
    cfg.validate(&config::allowed_cpus())?;
    Ok(cfg)
}

/// `check-config`: the file's own errors fail (exit 2); this host's shortcomings are
/// warnings unless `this_host`.
fn check_config(cli: &Cli, file: Option<&PathBuf>, this_host: bool) -> ExitCode {
    let cfg = match read_config(cli, file).and_then(|c| c.validate_file().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.validate_host(&config::allowed_cpus()) {
        if this_host {
            eprintln!("error: on this host: {e}");
            return ExitCode::from(2);
        }
        eprintln!(
            "warning: on this host: {e} (the file is valid; the engine would refuse to start on this host: check it on its own host with check-config --this-host)"
        );
    }
    println!("# effective configuration (valid)");
    print!("{}", toml::to_string_pretty(&cfg).expect("config serializes"));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // The start-up check of the UCX runtime runs this binary once more as its probe.
    if std::env::args_os().nth(1).is_some_and(|a| a == ucx::runtime::PROBE_ARG) {
        return match ucx::runtime::run_probe() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("UCX probe: {e}");
                ExitCode::from(3)
            }
        };
    }
    let cli = Cli::parse();
    match &cli.command {
        Some(Cmd::CheckConfig { file, this_host }) => check_config(&cli, file.as_ref(), *this_host),
        Some(Cmd::Status { json }) => {
            let cfg = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match status::request(&cfg.socket_path()) {
                Ok(s) if *json => {
                    println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{}", status::render_table(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Cmd::Run) | None => {
            let cfg = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let reload_cli = cli.clone();
            reload::init_logging(
                &cfg,
                cli.config.is_some(),
                cli.log_level.is_some(),
                Box::new(move || load_config(&reload_cli, None)),
            );
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = ucx::runtime::loaded();
    let (major, minor, _) = runtime.version;
    // Before any region exists (the huge-page probe below makes the first): a client that
    // punches holes in its region memfd must cost its session, not the engine (sigbus.rs).
    sigbus::install()?;
    check_hugepages(&cfg)?;
    if let Some(why) = unsafe_segment_size((major, minor), |k| std::env::var(k).ok()) {
        return Err(why.into());
    }
    let needle_rendezvous = prepare_ucx_environment(&cfg.ucx, (major, minor));
    if let Some(above) = needle_rendezvous {
        tracing::info!(above_bytes = above, "needle answers larger than this go by UCX rendezvous (shared memory; UCX_RNDV_THRESH set by the operator turns this off)");
    }
    check_ucx_runtime(&cfg.ucx, &runtime)?;
    let peers = Arc::new(dataplane::PeerRegistry::default());

    // Signals are blocked before any thread exists, so every thread inherits the mask and
    // SIGTERM/SIGINT reach the engine only through the control thread's signalfd.
    let signals = control::block_signals()?;
    // Writing to a doorbell pipe whose client end is closed must be an EPIPE, never a fatal
    // SIGPIPE (Rust programs start with it ignored; stated here because the engine relies on it).
    // Safety: installing SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    fdlimits::raise_nofile_limit();
    // SeaweedFS volumes: listed now, indexed by the refresh thread while the engine already
    // serves (each volume once indexed; a read of one still being indexed waits for it on an
    // I/O thread); kept current by that thread and by SIGHUP (directories may be added later).
    let volumes = seaweed::VolumeStore::start(&cfg.seaweedfs)?;
    spawn_volume_refresh(volumes.clone())?;
    let store = volumes.clone();
    reload::on_seaweedfs_change(Box::new(move |section| store.reconfigure(section)));
    let io_cores = cfg.io_cores(&config::allowed_cpus());
    let io = Arc::new(io_pool::IoPool::start(
        cfg.seaweedfs.io_threads,
        &io_cores,
        IO_QUEUE_PER_THREAD * cfg.seaweedfs.io_threads,
    )?);
    tracing::info!(threads = cfg.seaweedfs.io_threads, cores = ?io_cores, "volume I/O threads started");
    let mut settings = dataplane::UcxSettings::new(&cfg.ucx, peers.clone(), io.clone());
    settings.volumes = Some(volumes.clone());
    settings.needle_rendezvous_above = needle_rendezvous;
    let ucx_settings = Arc::new(settings);
    let (listener, socket_path) = control::bind_socket(&cfg)?;
    let control_wake = Arc::new(ring_proto::control_io::new_eventfd()?);
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let idle = worker::IdlePolicy {
        spin: Duration::from_micros(cfg.workers.idle_spin_us),
        spin_forever: cfg.workers.spin_forever,
    };
    let cores = cfg.worker_cores(&config::allowed_cpus());
    let mut workers = Vec::new();
    for (id, &core) in cores.iter().enumerate() {
        workers.push(worker::spawn(
            id,
            core,
            idle,
            events_tx.clone(),
            control_wake.clone(),
            ucx_settings.clone(),
        )?);
    }
    tracing::info!(
        socket = %socket_path.display(),
        workers = ?cores,
        pid = std::process::id(),
        "engine ready"
    );
    let metrics_listen = cfg.metrics.listen.clone();
    let mut server =
        control::ControlServer::new(cfg, listener, socket_path, signals, control_wake, events_rx, workers)?;
    server.set_peers(peers);
    let settings = ucx_settings.clone();
    server.registry().set_export_counter(Box::new(move || {
        (settings.exports.len(), settings.exports.failed_queries())
    }));
    let store = volumes.clone();
    server
        .registry()
        .set_indexing_source(Box::new(move || store.indexing()));
    server.registry().set_volume_source(Box::new(move || volumes.volumes()));
    server.registry().set_io_pool(io);
    if let Some(listen) = metrics_listen {
        let addr = metrics::serve(&listen, server.registry())
            .map_err(|e| format!("metrics.listen = {listen:?}: cannot serve metrics there: {e}"))?;
        tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
    }
    server.run();
    Ok(())
}

/// Needle reads that may wait for an I/O thread, per thread; more are refused (`throttled`)
/// rather than queued without bound.
const IO_QUEUE_PER_THREAD: usize = 1024;

/// Indexes the volumes, then follows the volume server's appends, new and vanished volumes
/// and compactions every `seaweedfs.refresh-interval-ms` (reads also catch up on a miss, so
/// this bounds how stale the picture of deletions and new volumes can get).
fn spawn_volume_refresh(store: Arc<seaweed::VolumeStore>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("seaweed-refresh".into())
        .spawn(move || loop {
            // The first pass indexes every volume (the store serves each once it is, and logs
            // what changed); later passes follow the volume server.
            if store.is_configured() {
                store.refresh();
            }
            std::thread::sleep(store.refresh_interval());
        })
        .map(drop)
}

/// UCX reads some settings only from the environment; these defaults are set unless the
/// operator set them. Set before any thread exists.
/// - UCX_RNDV_THRESH: without RDMA in `ucx.transports`, UCX's default threshold sends small
///   needles by rendezvous, which only adds round trips (a 64 KiB needle: 50 µs by
///   rendezvous, 10 µs eagerly over shared memory; 100 vs 43 µs over tcp). So: shared memory
///   listed → "inf" (always eager), tcp only → "256k". With RDMA (or transports left to UCX)
///   UCX's own choice stands: there rendezvous is the zero-copy path.
///   Returned: above what size a needle answer is forced to rendezvous anyway, message by
///   message (`UCP_AM_SEND_FLAG_RNDV`): with shared memory on UCX newer than 1.13, where an
///   eager multi-fragment needle is reassembled by UCX and copied once more while a
///   rendezvous lands in the session's buffer (`needle_rendezvous_above`). Not through the
///   global threshold: with rendezvous enabled UCX picks tcp instead of cma for the
///   connection's one-sided lane, and READ/WRITE of exports would leave shared memory.
/// - UCX_TCP_TX_SEG_SIZE / UCX_TCP_RX_SEG_SIZE=256k: tcp without RDMA (`tcp_segment_size`).
/// - UCX_MM_ERROR_HANDLING=y: with peer error handling on (it always is: a dead peer must fail
///   its requests), shared-memory transports need it, else UCX silently falls back to tcp.
/// - UCX_CM_REUSEADDR=y: an engine restarted on its configured port can listen again at once
///   instead of failing while the old connections sit in TIME_WAIT (a minute on Linux).
/// - UCX_TCP_PORT_RANGE from `ucx.tcp-port-range`: UCX's tcp transport listens on ports of
///   its own (one per worker and device); a fixed range can be firewalled.
fn prepare_ucx_environment(ucx: &config::UcxConfig, version: (u32, u32)) -> Option<usize> {
    match (std::env::var("UCX_TCP_PORT_RANGE"), ucx.tcp_ports()) {
        (Ok(env), _) => {
            tracing::info!(UCX_TCP_PORT_RANGE = %env, "UCX tcp ports from the environment (ucx.tcp-port-range not used)")
        }
        (Err(_), Ok(Some((first, last)))) => std::env::set_var("UCX_TCP_PORT_RANGE", format!("{first}-{last}")),
        (Err(_), _) => {}
    }
    if ucx.listen.is_some() && std::env::var_os("UCX_CM_REUSEADDR").is_none() {
        std::env::set_var("UCX_CM_REUSEADDR", "y");
    }
    let shm = ucx.transports.as_deref().is_some_and(|t| {
        t.split(',')
            .any(|x| matches!(x.trim(), "sm" | "shm" | "posix" | "sysv" | "cma" | "all"))
    });
    if shm && std::env::var_os("UCX_MM_ERROR_HANDLING").is_none() {
        std::env::set_var("UCX_MM_ERROR_HANDLING", "y");
    }
    let operator_threshold = std::env::var_os("UCX_RNDV_THRESH").is_some();
    if !operator_threshold {
        if let Some(t) = rendezvous_threshold(ucx.transports.as_deref()) {
            std::env::set_var("UCX_RNDV_THRESH", t);
        }
    }
    let tx_rx = ["UCX_TCP_TX_SEG_SIZE", "UCX_TCP_RX_SEG_SIZE"];
    if let Some(seg) = tcp_segment_size(ucx.transports.as_deref(), version) {
        if tx_rx.iter().all(|k| std::env::var_os(k).is_none()) {
            tx_rx.iter().for_each(|k| std::env::set_var(k, seg));
        }
    }
    (!operator_threshold)
        .then(|| needle_rendezvous_above(ucx.transports.as_deref(), version))
        .flatten()
}

/// The UCX_TCP_{TX,RX}_SEG_SIZE default for these transports and this UCX (see
/// `prepare_ucx_environment`): with tcp and no RDMA, 256 KiB instead of UCX's 8 KiB send
/// segments. A 1 MiB needle then crosses in 4 active-message fragments instead of 128:
/// measured on loopback, same runs, `needle.read.1m.tcp` went from 0.60x to 1.00-1.10x the
/// HTTP GET's bytes/s and `8m.tcp` from 0.70x to 1.03-1.09x (bench/README.md, "Large
/// needles over tcp"). Only for UCX newer than 1.13, the runtime the tests run on.
fn tcp_segment_size(transports: Option<&str>, version: (u32, u32)) -> Option<&'static str> {
    let tcp = transports?.split(',').any(|x| x.trim() == "tcp");
    (tcp && version > (1, 13) && rendezvous_threshold(transports).is_some()).then_some("256k")
}

/// Logs the UCX runtime and, when the listener is configured, probes whether a malformed
/// connection request aborts it (`ucx::runtime`): beyond loopback an engine that a
/// stranger's bytes can stop is refused unless `ucx.allow-unsafe-runtime` says otherwise.
fn check_ucx_runtime(cfg: &config::UcxConfig, rt: &ucx::runtime::Runtime) -> Result<(), String> {
    use ucx::runtime::{ProbeOutcome, EXPECTED_DIR, KNOWN_SAFE, KNOWN_UNSAFE};
    tracing::info!(
        version = %rt.version_string(),
        library = %rt.library_string(),
        expected_dir = EXPECTED_DIR,
        known_safe = KNOWN_SAFE,
        "UCX runtime loaded"
    );
    let Some(listen) = cfg
        .listen
        .as_deref()
        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
    else {
        return Ok(());
    };
    let why = match ucx::runtime::probe_malformed_connection_request() {
        ProbeOutcome::Survives => {
            tracing::info!("UCX runtime survives a malformed connection request (start-up probe)");
            return Ok(());
        }
        ProbeOutcome::Aborts(how) => format!("a malformed connection request aborts it (start-up probe {how})"),
        ProbeOutcome::Unknown(what) => {
            format!("the start-up probe could not tell whether a malformed connection request aborts it ({what})")
        }
    };
    let problem = format!(
        "UCX {} ({}): {why}; anyone who can reach ucx.listen = {listen} could stop the engine (known unsafe: {KNOWN_UNSAFE})",
        rt.version_string(),
        rt.library_string()
    );
    if !ucx::runtime::beyond_loopback(&listen) {
        tracing::warn!("{problem}; tolerated because the listener is on loopback");
        Ok(())
    } else if cfg.allow_unsafe_runtime {
        tracing::error!("{problem}; starting anyway because ucx.allow-unsafe-runtime = true");
        Ok(())
    } else {
        Err(format!(
            "{problem}. Fix: run scripts/install-deps (installs UCX 1.22.0 into {}, where the engine binary looks first), or listen on loopback only, or set ucx.allow-unsafe-runtime = true to start anyway",
            EXPECTED_DIR.trim_end_matches("/lib")
        ))
    }
}

/// Shared-memory segment sizes above 8 KiB make UCX up to 1.13 abort (assertion in
/// `ucp_am_long_first_handler`) on the first active message that spans several segments:
/// every needle or SEND larger than a segment. Refused at start rather than crashing later.
fn unsafe_segment_size(version: (u32, u32), env: impl Fn(&str) -> Option<String>) -> Option<String> {
    if version > (1, 13) {
        return None;
    }
    for key in ["UCX_MM_SEG_SIZE", "UCX_SYSV_SEG_SIZE", "UCX_POSIX_SEG_SIZE"] {
        let Some(v) = env(key) else { continue };
        let t = v.trim().to_ascii_lowercase();
        let (num, mult) = match t.trim_end_matches('b').char_indices().last() {
            Some((i, 'k')) => (&t[..i], 1u64 << 10),
            Some((i, 'm')) => (&t[..i], 1 << 20),
            Some((i, 'g')) => (&t[..i], 1 << 30),
            _ => (t.trim_end_matches('b'), 1),
        };
        if num.parse::<u64>().is_ok_and(|n| n.saturating_mul(mult) > 8192) {
            return Some(format!(
                "{key}={v}: UCX {}.{} aborts on active messages spanning segments larger than 8 KiB; unset {key} (the engine picks eager/rendezvous itself, see UCX_RNDV_THRESH in the README)",
                version.0, version.1
            ));
        }
    }
    None
}

/// The UCX_RNDV_THRESH default for these transports (see `prepare_ucx_environment`).
fn rendezvous_threshold(transports: Option<&str>) -> Option<&'static str> {
    let names: Vec<&str> = transports?.split(',').map(str::trim).collect();
    if !names.iter().all(|&x| is_shm(x) || x == "tcp") {
        return None; // RDMA listed, or "all": UCX decides
    }
    Some(if names.iter().any(|&x| is_shm(x) && x != "self") {
        "inf"
    } else {
        "256k"
    })
}

/// Above what size the engine sends a needle answer by rendezvous although UCX_RNDV_THRESH
/// is "inf" (see `prepare_ucx_environment`): 256 KiB with shared memory and no RDMA on UCX
/// newer than 1.13. Measured on UCX 1.22.0 (bench/README.md, "Large needles over tcp and
/// shared memory"): eagerly `needle.read.1m.sm` p50 was 0.64-0.83x HTTP's and `8m.sm`
/// 0.62-0.70x; by rendezvous per message, UCX reading over the connection's `cma` lane,
/// 0.56x and 0.40x (8 MiB: 2.46x HTTP's bytes/s). On UCX 1.13.1 rendezvous was the slower
/// (1 MiB: 482 µs against 133 µs eagerly).
fn needle_rendezvous_above(transports: Option<&str>, version: (u32, u32)) -> Option<usize> {
    (rendezvous_threshold(transports) == Some("inf") && version > (1, 13)).then_some(256 << 10)
}

fn is_shm(x: &str) -> bool {
    matches!(x, "sm" | "shm" | "posix" | "sysv" | "cma" | "self")
}

/// Logs which pages sessions will get, and refuses to start under `require` without them.
fn check_hugepages(cfg: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let m = &cfg.memory;
    let layout = ring_proto::RegionLayout::new(m.sq_entries, m.cq_entries, m.buffer_bytes)?;
    match (m.hugepages, region::probe_hugepages(layout)) {
        (HugepagePolicy::Off, _) => tracing::info!("hugepages = off: session regions use normal pages"),
        (_, Ok(())) => tracing::info!(policy = ?m.hugepages, "session regions use 2 MiB huge pages"),
        (HugepagePolicy::Prefer, Err(e)) => tracing::warn!(
            error = %e,
            "no huge pages available: session regions fall back to normal pages (reserve some with: echo 64 > /proc/sys/vm/nr_hugepages)"
        ),
        (HugepagePolicy::Require, Err(e)) => {
            return Err(format!(
                "memory.hugepages = \"require\" but no huge page region of {} bytes can be created ({e}); reserve pages (echo 64 > /proc/sys/vm/nr_hugepages) or set hugepages = \"prefer\"",
                layout.min_region_size
            )
            .into())
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{needle_rendezvous_above, rendezvous_threshold, tcp_segment_size, unsafe_segment_size};

    #[test]
    fn large_shared_memory_segments_are_refused_on_ucx_1_13() {
        let env = |v: &'static str| move |k: &str| (k == "UCX_SYSV_SEG_SIZE").then(|| v.to_string());
        let refused = unsafe_segment_size((1, 13), env("64k")).expect("refused");
        assert!(
            refused.contains("UCX_SYSV_SEG_SIZE=64k") && refused.contains("unset"),
            "{refused}"
        );
        assert!(unsafe_segment_size((1, 13), env("65536")).is_some());
        assert!(unsafe_segment_size((1, 12), env("1m")).is_some());
        assert_eq!(unsafe_segment_size((1, 13), env("8k")), None);
        assert_eq!(unsafe_segment_size((1, 13), env("8192")), None);
        assert_eq!(unsafe_segment_size((1, 14), env("64k")), None);
        assert_eq!(unsafe_segment_size((1, 13), |_: &str| None), None);
    }

    #[test]
    fn rendezvous_threshold_follows_the_transports() {
        assert_eq!(rendezvous_threshold(Some("sm,tcp")), Some("inf"));
        assert_eq!(rendezvous_threshold(Some("posix, tcp")), Some("inf"));
        assert_eq!(rendezvous_threshold(Some("tcp")), Some("256k"));
        assert_eq!(rendezvous_threshold(Some("self,tcp")), Some("256k"));
        assert_eq!(rendezvous_threshold(Some("rc,sm,tcp")), None);
        assert_eq!(rendezvous_threshold(Some("all")), None);
        assert_eq!(rendezvous_threshold(None), None);
    }

    #[test]
    fn large_needles_go_by_rendezvous_over_shared_memory_on_a_new_ucx() {
        assert_eq!(needle_rendezvous_above(Some("sm,tcp"), (1, 22)), Some(256 << 10));
        assert_eq!(needle_rendezvous_above(Some("posix, tcp"), (1, 14)), Some(256 << 10));
        assert_eq!(needle_rendezvous_above(Some("sm,tcp"), (1, 13)), None);
        // tcp alone has UCX's own rendezvous above 256k; RDMA leaves it all to UCX.
        assert_eq!(needle_rendezvous_above(Some("tcp"), (1, 22)), None);
        assert_eq!(needle_rendezvous_above(Some("rc,sm,tcp"), (1, 22)), None);
        assert_eq!(needle_rendezvous_above(None, (1, 22)), None);
    }

    #[test]
    fn tcp_segments_grow_only_for_tcp_without_rdma_on_a_tested_ucx() {
        assert_eq!(tcp_segment_size(Some("tcp"), (1, 22)), Some("256k"));
        assert_eq!(tcp_segment_size(Some("sm, tcp"), (1, 22)), Some("256k"));
        assert_eq!(tcp_segment_size(Some("sm"), (1, 22)), None);
        assert_eq!(tcp_segment_size(Some("rc,tcp"), (1, 22)), None);
        assert_eq!(tcp_segment_size(Some("tcp"), (1, 13)), None);
        assert_eq!(tcp_segment_size(None, (1, 22)), None);
    }
}
