//! What a scenario is: its fixed description ([`Spec`]), the target it is held to, the
//! transports and engine it uses, and the front end it reads through.

/// What a target compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// subject p50 / baseline p50 must be at most the bound.
    P50Ratio,
    /// subject p99 / baseline p99 must be at most the bound (medians of block p99s).
    P99Ratio,
    /// subject ops/sec / baseline ops/sec must be at least the bound.
    OpsRatio,
    /// (subject p50 - baseline p50) / reference p50 must be at most the bound: what the
    /// subject adds over its baseline, in units of another scenario of the same run.
    P50ExcessOver(&'static str),
    /// subject bytes/sec / baseline bytes/sec must be at least the bound.
    BytesRatio,
    /// subject p50 / baseline p50 must be at least the bound: the subject is a design the
    /// baseline (the engine) must beat by this factor.
    P50RatioAtLeast,
    /// A number of the scenario's own `details` (by key) must be at most the bound: for
    /// scenarios that compare two things they measure themselves, not two scenarios' blocks
    /// (`store.open.10m`: engine memory per needle over weed's).
    DetailAtMost(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub metric: Metric,
    pub bound: f64,
}

impl Target {
    pub fn met(&self, ratio: f64) -> bool {
        match self.metric {
            Metric::P50Ratio | Metric::P99Ratio | Metric::P50ExcessOver(_) | Metric::DetailAtMost(_) => {
                ratio <= self.bound
            }
            Metric::OpsRatio | Metric::BytesRatio | Metric::P50RatioAtLeast => ratio >= self.bound,
        }
    }

    /// e.g. `"<= 1.3"` (at most 3 decimals: `">= 3.333"` for 1/0.3).
    pub fn describe(&self) -> String {
        let bound = short_number(self.bound);
        match self.metric {
            Metric::P50Ratio | Metric::P99Ratio | Metric::P50ExcessOver(_) | Metric::DetailAtMost(_) => {
                format!("<= {bound}")
            }
            Metric::OpsRatio | Metric::BytesRatio | Metric::P50RatioAtLeast => format!(">= {bound}"),
        }
    }

    /// The JSON key of the value the target is about.
    pub fn key(&self) -> &'static str {
        match self.metric {
            Metric::P50Ratio | Metric::P50RatioAtLeast => "ratio_p50",
            Metric::P99Ratio => "ratio_p99",
            Metric::OpsRatio => "ratio_ops_per_sec",
            Metric::P50ExcessOver(_) => "excess_vs_reference",
            Metric::BytesRatio => "ratio_bytes_per_sec",
            Metric::DetailAtMost(key) => key,
        }
    }
}

/// `x` with at most 3 decimals and no trailing zeros: 1.3, 50, 0.05, 3.333.
pub fn short_number(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The UCX transports a UCX scenario runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Shared memory (posix, cma; tcp for the connection set-up).
    Sm,
    /// TCP on loopback.
    Tcp,
    /// The needle scenarios only: the engine serving the volume is the reader's own, and
    /// reads it straight into the session's buffer (`ucx.local-reads`); UCX as for `Sm`.
    Local,
}

impl Tls {
    /// UCX_TLS syntax, as the engine's `--ucx-transports` takes it.
    pub fn transports(self) -> &'static str {
        match self {
            Tls::Sm | Tls::Local => "sm,tcp",
            Tls::Tcp => "tcp",
        }
    }

    /// UCX_NET_DEVICES syntax (`--ucx-net-devices`): loopback only, so that nothing goes
    /// over (or is split across) other interfaces. The same for sm: UCX_NET_DEVICES names
    /// network devices only (shared memory's `memory` device is not one; UCX 1.13 warns
    /// "network device 'memory' is not available" and ignores it), and tcp carries the
    /// connection set-up there.
    pub fn net_devices(self) -> &'static str {
        "lo"
    }

    pub fn name(self) -> &'static str {
        match self {
            Tls::Sm => "sm",
            Tls::Tcp => "tcp",
            Tls::Local => "local",
        }
    }
}

/// Which engine a scenario talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineUse {
    /// None.
    None,
    /// The run's engine (no UCX), started once for the whole run.
    Plain,
    /// An engine with a UCX listener on loopback over these transports, started for the
    /// scenario's group only; the bench's session has a peer handle for that listener.
    Ucx(Tls),
    /// An engine with a UCX listener on loopback over these transports that serves the weed
    /// volume server's directory (`--seaweedfs-dir`), started for the scenario's group only
    /// (a group may have one per transport); the scenario's client reads needles through it.
    Needle(Tls),
    /// Two engines across a real network (`needle.read.<size>.netns`): one serving the
    /// volume directory of the weed cluster in namespace -a of the run's namespace pair
    /// (`crate::netns`), listening on the veth address over tcp; one in namespace -b that the
    /// scenario's client (ringlat, run in -b) reads through. Started for the group only.
    Netns,
    /// Engines the scenario starts itself, from [`Ctx::engine_template`] (`scale.nop.workers.N`:
    /// an engine with N workers). The run's plain engine must sleep during its blocks.
    Own,
}

/// A scenario's fixed description. Names are stable: scripts and stored results use them.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub about: &'static str,
    /// What one latency sample is.
    pub sample: &'static str,
    /// Operations per sample (for ops/sec).
    pub ops_per_sample: u32,
    /// Bytes moved per sample (for bytes/sec); 0 for scenarios that move none worth counting.
    pub bytes_per_sample: u64,
    /// Blocks of this scenario measure `measure / measure_divisor` (bandwidth scenarios,
    /// whose samples are long and few, keep the run short this way); the warm-up is the same.
    pub measure_divisor: u32,
    /// The scenario this one is compared with, block by block, in the same run. It may
    /// itself have a baseline; a group is a root scenario with everything compared to it.
    pub baseline: Option<&'static str>,
    /// Without a baseline: run interleaved in the group of this scenario anyway (a reference
    /// other members are compared with).
    pub runs_with: Option<&'static str>,
    /// More scenarios of the same group this one is compared with (ratios, no target).
    pub also_vs: &'static [&'static str],
    /// Report how much the subject's p50 exceeds its baseline's, also in units of this
    /// scenario's p50 (a member of the same group, so that the blocks interleave).
    pub excess_reference: Option<&'static str>,
    pub target: Option<Target>,
    /// Which engine it talks to (the bench starts it).
    pub engine: EngineUse,
    /// Runs a thread of its own on the engine core: the engine must be asleep first.
    pub borrows_engine_core: bool,
    /// Runs the Go latency tool (`ringlat`); skipped with a message where there is none.
    pub needs_go: bool,
    /// Reads needles from the run's weed volume server (`crate::weed`); skipped with the
    /// reason where no `weed` binary is found.
    pub needs_weed: bool,
    /// Keeps several operations in flight ([`pipelined_loop`]): a sample is one transfer
    /// among others, not a latency; left out of the latency charts.
    pub pipelined: bool,
    /// The tail target: p99.9 at most this many times p50 (of the same histogram).
    pub tail_bound: Option<f64>,
    /// The idle target: the engines' CPU use while idle (`details.idle_cpu_fraction`, the
    /// busiest engine's, in cores) below this.
    pub idle_cpu_bound: Option<f64>,
    /// Reads through a SeaweedFS front end (a FUSE `weed mount`, `weed s3`, a filer) that
    /// its ringlat starts (go-client/cmd/ringlat/fsread.go).
    pub front_end: Option<FrontEnd>,
    /// Runs across the run's network-namespace pair (`crate::netns`): the weed cluster (and
    /// for [`EngineUse::Netns`] the serving engine) in namespace -a, the client in -b. Needs
    /// root and `ip`; skipped with the reason elsewhere.
    pub netns: bool,
}

/// The SeaweedFS front end of a `mount.*`, `s3.*` or `filer.*` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// 4 KiB preads at offsets never read before, through a FUSE `weed mount`.
    MountRandom,
    /// 1 MiB reads, sequentially through the weed host's file, through a FUSE `weed mount`.
    MountSequential,
    /// 4 KiB preads that reach the mount and hit its chunk cache (a floor).
    MountCacheHit,
    /// GETs of objects of this many bytes from `weed s3`.
    S3(u64),
    /// GETs of files of this many bytes from a filer's HTTP API.
    Filer(u64),
}

impl FrontEnd {
    /// ringlat's `-fs` word.
    pub fn word(self) -> &'static str {
        match self {
            FrontEnd::MountRandom => "mount-rand",
            FrontEnd::MountSequential => "mount-seq",
            FrontEnd::MountCacheHit => "mount-hit",
            FrontEnd::S3(_) => "s3",
            FrontEnd::Filer(_) => "filer",
        }
    }
}

/// Whether `s` runs the `weed` with the ring read path (a front end on the ring path).
pub fn needs_ring_weed(s: &Spec) -> bool {
    s.front_end.is_some() && matches!(s.engine, EngineUse::Needle(_))
}

/// MiB of the file the mount scenarios read (the weed host writes it through its filer):
/// 256 MiB, so that a full run never reads a page twice (about 20 x 300 ms of 4 KiB reads
/// at ~100 us or more take under 60 000 of its 63 487 eligible pages; past that the pages are
/// dropped and a new order starts); 64 MiB for short runs (--quick).
pub fn fs_file_mb(short: bool) -> u32 {
    if short {
        64
    } else {
        256
    }
}

impl Spec {
    /// Bytes per operation (0 when the scenario counts no bytes).
    pub fn bytes_per_op(&self) -> f64 {
        self.bytes_per_sample as f64 / f64::from(self.ops_per_sample.max(1))
    }
}
