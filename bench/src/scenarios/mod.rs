//! The scenario registry, the block interface every scenario implements, and the timed
//! sampling loop they share.
//!
//! Adding a scenario: add a [`Spec`] to [`SPECS`] (name, what a sample is, its baseline and
//! target if it has one), implement [`Scenario`] for it, and return it from [`build`]. The
//! runner interleaves it block by block with its baseline and computes the ratios; a scenario
//! without a baseline runs in blocks on its own.

mod floor;
mod go;
pub mod iceoryx;
mod iouring;
mod ring;
pub mod scale;
mod ucx;
pub mod uds;
mod wake;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ring_client::Session;

use crate::stats::record;
use crate::Result;

/// What a target compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// subject p50 / baseline p50 must be at most the bound.
    P50Ratio,
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
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub metric: Metric,
    pub bound: f64,
}

impl Target {
    pub fn met(&self, ratio: f64) -> bool {
        match self.metric {
            Metric::P50Ratio | Metric::P50ExcessOver(_) => ratio <= self.bound,
            Metric::OpsRatio | Metric::BytesRatio | Metric::P50RatioAtLeast => ratio >= self.bound,
        }
    }

    /// e.g. `"<= 1.3"` (at most 3 decimals: `">= 3.333"` for 1/0.3).
    pub fn describe(&self) -> String {
        let bound = short_number(self.bound);
        match self.metric {
            Metric::P50Ratio | Metric::P50ExcessOver(_) => format!("<= {bound}"),
            Metric::OpsRatio | Metric::BytesRatio | Metric::P50RatioAtLeast => format!(">= {bound}"),
        }
    }

    /// The JSON key of the value the target is about.
    pub fn key(&self) -> &'static str {
        match self.metric {
            Metric::P50Ratio | Metric::P50RatioAtLeast => "ratio_p50",
            Metric::OpsRatio => "ratio_ops_per_sec",
            Metric::P50ExcessOver(_) => "excess_vs_reference",
            Metric::BytesRatio => "ratio_bytes_per_sec",
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
}

impl Tls {
    /// UCX_TLS syntax, as the engine's `--ucx-transports` takes it.
    pub fn transports(self) -> &'static str {
        match self {
            Tls::Sm => "sm,tcp",
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
    /// among others, not a latency; left out of `latency.svg`.
    pub pipelined: bool,
    /// The tail target: p99.9 at most this many times p50 (of the same histogram).
    pub tail_bound: Option<f64>,
    /// Reads through a SeaweedFS front end (a FUSE `weed mount`, `weed s3`, a filer) that
    /// its ringlat starts (go-client/cmd/ringlat/fsread.go).
    pub front_end: Option<FrontEnd>,
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

const fn spec_base(name: &'static str, about: &'static str) -> Spec {
    Spec {
        name,
        about,
        sample: "round trip",
        ops_per_sample: 1,
        bytes_per_sample: 0,
        measure_divisor: 1,
        baseline: None,
        runs_with: None,
        also_vs: &[],
        excess_reference: None,
        target: None,
        engine: EngineUse::None,
        borrows_engine_core: false,
        needs_go: false,
        needs_weed: false,
        pipelined: false,
        tail_bound: None,
        front_end: None,
    }
}

/// The needle sizes of the `needle.read.<size>.<path>` scenarios (the weed host's size
/// names: k = KiB, m = MiB).
pub const NEEDLE_SIZES: &[&str] = &["4k", "64k", "1m"];

/// `needle.read.<size>.<path>`: a needle read from Go, over HTTP (the baseline) or the rings.
const fn needle_spec(
    name: &'static str,
    about: &'static str,
    sample: &'static str,
    bytes: u64,
    path: Option<(Tls, &'static str, Option<Target>)>,
) -> Spec {
    let base = Spec {
        sample,
        bytes_per_sample: bytes,
        // Reads of up to 1 MiB are long samples: a third of the block keeps the run short.
        measure_divisor: 3,
        needs_go: true,
        needs_weed: true,
        ..spec_base(name, about)
    };
    match path {
        // The volume server (pinned to the engine core) serves the GETs: the engines must
        // sleep during its blocks.
        None => Spec {
            borrows_engine_core: true,
            ..base
        },
        Some((tls, baseline, target)) => Spec {
            baseline: Some(baseline),
            target,
            engine: EngineUse::Needle(tls),
            ..base
        },
    }
}

/// `mount.*`, `s3.*`, `filer.*`: reads through a SeaweedFS front end from Go, with the
/// stock `weed` (`path: None`, the baseline) or the `weed` with the ring read path, whose
/// chunk reads go through the group's engine for that transport.
const fn front_end_spec(
    name: &'static str,
    about: &'static str,
    sample: &'static str,
    bytes: u64,
    front_end: FrontEnd,
    path: Option<(Tls, &'static str, Option<Target>)>,
) -> Spec {
    let base = Spec {
        front_end: Some(front_end),
        ..needle_spec(name, about, sample, bytes, path)
    };
    // Samples of a millisecond or more: whole blocks, not a third.
    Spec {
        measure_divisor: 1,
        ..base
    }
}

/// `scale.nop.sessions.N`: N sessions on the run's engine (one worker), one NOP in flight
/// each, driven round robin by the client thread; compared with 1 session (no target: the
/// issue asks how throughput and p99 grow).
const fn scale_sessions(name: &'static str, baseline: Option<&'static str>) -> Spec {
    Spec {
        sample: "NOP in flight",
        baseline,
        engine: EngineUse::Plain,
        pipelined: true,
        ..spec_base(
            name,
            "NOP throughput and latency with N sessions on one worker, one NOP in flight per session, one client thread driving them round robin",
        )
    }
}

/// `scale.nop.workers.N`: an engine of its own with N workers, 4 sessions per worker, one NOP
/// in flight per session, one client thread; compared with 1 worker. Needs N cores besides
/// the client's (skipped, with the reason, where there are fewer).
const fn scale_workers(name: &'static str, baseline: Option<&'static str>) -> Spec {
    Spec {
        sample: "NOP in flight",
        baseline,
        engine: EngineUse::Own,
        pipelined: true,
        ..spec_base(
            name,
            "NOP throughput and latency of an engine with N workers (N cores), 4 sessions per worker, one NOP in flight per session, one client thread",
        )
    }
}

/// The N of `scale.nop.workers.N`.
pub fn workers_of(name: &str) -> Option<usize> {
    name.strip_prefix("scale.nop.workers.")?.parse().ok()
}

/// Every scenario, baselines before their subjects.
pub const SPECS: &[Spec] = &[
    Spec {
        borrows_engine_core: true,
        ..spec_base(
            "floor.pingpong",
            "raw cache-line ping-pong between the client core and the engine core (the physical floor)",
        )
    },
    Spec {
        baseline: Some("floor.pingpong"),
        target: Some(Target { metric: Metric::P50Ratio, bound: 1.3 }),
        engine: EngineUse::Plain,
        // "p99.9 of ring.nop within 4x of its p50 on an otherwise idle machine".
        tail_bound: Some(4.0),
        ..spec_base("ring.nop", "one NOP through the real engine: Session::submit, spin on try_cqe")
    },
    Spec {
        sample: "batch of 32",
        ops_per_sample: 32,
        borrows_engine_core: true,
        ..spec_base(
            "floor.echo_batch32",
            "bare two-ring echo loop (ring_proto Producer/Consumer on a session-shaped region) between the two cores, 32 per batch",
        )
    },
    Spec {
        sample: "batch of 32",
        ops_per_sample: 32,
        baseline: Some("floor.echo_batch32"),
        target: Some(Target { metric: Metric::OpsRatio, bound: 0.5 }),
        engine: EngineUse::Plain,
        ..spec_base(
            "ring.nop_batch32",
            "32 NOPs through the real engine: submission() push x32, sync, reap 32 completions",
        )
    },
    Spec {
        baseline: Some("floor.pingpong"),
        also_vs: &["ring.nop"],
        target: Some(Target { metric: Metric::P50Ratio, bound: 1.6 }),
        engine: EngineUse::Plain,
        needs_go: true,
        ..spec_base(
            "ring.nop.go",
            "one NOP through the real engine from the Go client (ringlat -serve: Client.Do), its own session",
        )
    },
    Spec {
        sample: "batch of 32",
        ops_per_sample: 32,
        baseline: Some("ring.nop_batch32"),
        also_vs: &["floor.echo_batch32"],
        target: Some(Target { metric: Metric::OpsRatio, bound: 0.5 }),
        engine: EngineUse::Plain,
        needs_go: true,
        ..spec_base(
            "ring.nop_batch32.go",
            "32 NOPs from the Go client (ringlat -serve: SubmitBatch x32, Wait each), its own session",
        )
    },
    Spec {
        borrows_engine_core: true,
        ..spec_base(
            "ucx.raw_am_rtt.sm",
            "raw UCX active-message ping-pong (8 B, 16 B header) between two workers, one thread on the engine core, sm transports",
        )
    },
    Spec {
        runs_with: Some("ucx.raw_am_rtt.sm"),
        engine: EngineUse::Plain,
        ..spec_base(
            "ucx.nop_ref.sm",
            "ring.nop again (the run's plain engine, no UCX), interleaved with the ucx.*.sm blocks: the ring hop ucx.am_rtt.sm's excess is measured in",
        )
    },
    Spec {
        baseline: Some("ucx.raw_am_rtt.sm"),
        excess_reference: Some("ucx.nop_ref.sm"),
        target: Some(Target { metric: Metric::P50ExcessOver("ucx.nop_ref.sm"), bound: 1.2 }),
        engine: EngineUse::Ucx(Tls::Sm),
        ..spec_base(
            "ucx.am_rtt.sm",
            "SEND of 8 B (ECHO) through the rings to the engine's own UCX listener and back, sm transports",
        )
    },
    Spec {
        borrows_engine_core: true,
        ..spec_base(
            "ucx.raw_am_rtt.tcp",
            "raw UCX active-message ping-pong (8 B, 16 B header) between two workers, one thread on the engine core, tcp on loopback",
        )
    },
    Spec {
        runs_with: Some("ucx.raw_am_rtt.tcp"),
        engine: EngineUse::Plain,
        ..spec_base(
            "ucx.nop_ref.tcp",
            "ring.nop again (the run's plain engine, no UCX), interleaved with the ucx.*.tcp blocks: the ring hop ucx.am_rtt.tcp's excess is measured in",
        )
    },
    Spec {
        baseline: Some("ucx.raw_am_rtt.tcp"),
        excess_reference: Some("ucx.nop_ref.tcp"),
        target: Some(Target { metric: Metric::P50Ratio, bound: 1.1 }),
        engine: EngineUse::Ucx(Tls::Tcp),
        ..spec_base(
            "ucx.am_rtt.tcp",
            "SEND of 8 B (ECHO) through the rings to the engine's own UCX listener and back, tcp on loopback",
        )
    },
    Spec {
        sample: "1 MiB get",
        bytes_per_sample: ucx::READ_BYTES as u64,
        measure_divisor: 3,
        pipelined: true,
        borrows_engine_core: true,
        ..spec_base(
            "ucx.raw_read_bw.sm",
            "raw UCX one-sided gets of 1 MiB, 16 in flight, between two workers, one thread on the engine core, sm transports",
        )
    },
    Spec {
        sample: "1 MiB READ",
        bytes_per_sample: ucx::READ_BYTES as u64,
        measure_divisor: 3,
        pipelined: true,
        baseline: Some("ucx.raw_read_bw.sm"),
        target: Some(Target { metric: Metric::BytesRatio, bound: 0.9 }),
        engine: EngineUse::Ucx(Tls::Sm),
        ..spec_base(
            "ucx.read_bw.sm",
            "READs of 1 MiB, 16 in flight, through the rings from another session's export via the engine's own UCX listener, sm transports",
        )
    },
    Spec {
        sample: "1 MiB get",
        bytes_per_sample: ucx::READ_BYTES as u64,
        measure_divisor: 3,
        pipelined: true,
        borrows_engine_core: true,
        ..spec_base(
            "ucx.raw_read_bw.tcp",
            "raw UCX one-sided gets of 1 MiB, 16 in flight, between two workers, one thread on the engine core, tcp on loopback",
        )
    },
    Spec {
        sample: "1 MiB READ",
        bytes_per_sample: ucx::READ_BYTES as u64,
        measure_divisor: 3,
        pipelined: true,
        baseline: Some("ucx.raw_read_bw.tcp"),
        target: Some(Target { metric: Metric::BytesRatio, bound: 0.9 }),
        engine: EngineUse::Ucx(Tls::Tcp),
        ..spec_base(
            "ucx.read_bw.tcp",
            "READs of 1 MiB, 16 in flight, through the rings from another session's export via the engine's own UCX listener, tcp on loopback",
        )
    },
    Spec {
        baseline: Some("ring.nop"),
        target: Some(Target { metric: Metric::P50RatioAtLeast, bound: 50.0 }),
        borrows_engine_core: true,
        ..spec_base(
            "uds.msgpack",
            "the design this project replaces: length-prefixed MessagePack request/response over a Unix socket to an echo process on the engine core",
        )
    },
    Spec {
        baseline: Some("ring.nop"),
        target: Some(Target { metric: Metric::P50RatioAtLeast, bound: 3.0 }),
        ..spec_base(
            "io_uring.nop",
            "a kernel io_uring NOP: submit and wait for its completion (io-uring crate, no SQPOLL), on the client core",
        )
    },
    Spec {
        baseline: Some("ring.nop"),
        // "ring.nop p50 <= 0.3x iceoryx2.reqres p50": iceoryx2.reqres / ring.nop >= 1/0.3.
        target: Some(Target { metric: Metric::P50RatioAtLeast, bound: 1.0 / 0.3 }),
        borrows_engine_core: true,
        ..spec_base(
            "iceoryx2.reqres",
            "request-response round trip with the iceoryx2 crate (u64 each way, zero-copy loans, both sides busy-polling) to a server process on the engine core",
        )
    },
    Spec {
        sample: "wake round trip",
        baseline: Some("uds.msgpack"),
        target: Some(Target { metric: Metric::P50Ratio, bound: 1.0 }),
        engine: EngineUse::Plain,
        ..spec_base(
            "ring.wake",
            "one NOP submitted once the engine worker is asleep (wake-up and round trip); details: the engine's CPU use while idle",
        )
    },
    scale_sessions("scale.nop.sessions.1", None),
    scale_sessions("scale.nop.sessions.4", Some("scale.nop.sessions.1")),
    scale_sessions("scale.nop.sessions.16", Some("scale.nop.sessions.1")),
    scale_sessions("scale.nop.sessions.64", Some("scale.nop.sessions.1")),
    scale_workers("scale.nop.workers.1", None),
    scale_workers("scale.nop.workers.2", Some("scale.nop.workers.1")),
    scale_workers("scale.nop.workers.4", Some("scale.nop.workers.1")),
    scale_workers("scale.nop.workers.8", Some("scale.nop.workers.1")),
    scale_workers("scale.nop.workers.16", Some("scale.nop.workers.1")),
    scale_workers("scale.nop.workers.32", Some("scale.nop.workers.1")),
    needle_spec(
        "needle.read.4k.http",
        "one 4 KiB needle from a real weed volume server: keep-alive Go HTTP GET, body into a reused buffer (ringlat)",
        "4 KiB read",
        4 << 10,
        None,
    ),
    needle_spec(
        "needle.read.4k.tcp",
        "the same 4 KiB needle through the rings: Go READ_NEEDLE to the engine serving the volume, over its own UCX listener (tcp), copied out to a reused buffer",
        "4 KiB read",
        4 << 10,
        Some((Tls::Tcp, "needle.read.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 0.2 }))),
    ),
    needle_spec(
        "needle.read.4k.sm",
        "the same 4 KiB needle through the rings: Go READ_NEEDLE to the engine serving the volume, over its own UCX listener (sm,tcp), copied out to a reused buffer",
        "4 KiB read",
        4 << 10,
        Some((Tls::Sm, "needle.read.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 0.05 }))),
    ),
    needle_spec(
        "needle.read.64k.http",
        "one 64 KiB needle from a real weed volume server: keep-alive Go HTTP GET, body into a reused buffer (ringlat)",
        "64 KiB read",
        64 << 10,
        None,
    ),
    needle_spec(
        "needle.read.64k.tcp",
        "the same 64 KiB needle through the rings (tcp), copied out to a reused buffer",
        "64 KiB read",
        64 << 10,
        Some((Tls::Tcp, "needle.read.64k.http", None)),
    ),
    needle_spec(
        "needle.read.64k.sm",
        "the same 64 KiB needle through the rings (sm,tcp), copied out to a reused buffer",
        "64 KiB read",
        64 << 10,
        Some((Tls::Sm, "needle.read.64k.http", None)),
    ),
    needle_spec(
        "needle.read.1m.http",
        "one 1 MiB needle from a real weed volume server: keep-alive Go HTTP GET, body into a reused buffer (ringlat)",
        "1 MiB read",
        1 << 20,
        None,
    ),
    needle_spec(
        "needle.read.1m.tcp",
        "the same 1 MiB needle through the rings (tcp), copied out to a reused buffer",
        "1 MiB read",
        1 << 20,
        Some((Tls::Tcp, "needle.read.1m.http", Some(Target { metric: Metric::BytesRatio, bound: 2.0 }))),
    ),
    needle_spec(
        "needle.read.1m.sm",
        "the same 1 MiB needle through the rings (sm,tcp), copied out to a reused buffer",
        "1 MiB read",
        1 << 20,
        Some((Tls::Sm, "needle.read.1m.http", Some(Target { metric: Metric::BytesRatio, bound: 2.0 }))),
    ),
    front_end_spec(
        "mount.randread.4k.http",
        "4 KiB pread at an offset never read before through a FUSE weed mount (stock weed: the mount fetches the range with an HTTP GET from the volume server; page cache and chunk cache checked cold)",
        "4 KiB pread",
        4096,
        FrontEnd::MountRandom,
        None,
    ),
    front_end_spec(
        "mount.randread.4k.ring",
        "the same through a weed mount with the ring read path (SWRING_ENGINE_SOCKET): READ_NEEDLE through the engine serving the volume (sm,tcp)",
        "4 KiB pread",
        4096,
        FrontEnd::MountRandom,
        Some((Tls::Sm, "mount.randread.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 1.0 / 3.0 }))),
    ),
    front_end_spec(
        "mount.randread.4k.ring.tcp",
        "the same through a weed mount with the ring read path, the engine's UCX over tcp only",
        "4 KiB pread",
        4096,
        FrontEnd::MountRandom,
        Some((Tls::Tcp, "mount.randread.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 0.5 }))),
    ),
    Spec {
        runs_with: Some("mount.randread.4k.http"),
        ..front_end_spec(
            "mount.cached.4k.http",
            "floor of a FUSE read through weed mount: 4 KiB pread of a page dropped from the page cache whose chunk the mount holds in its chunk cache (stock weed, default cache; no volume read)",
            "4 KiB pread",
            4096,
            FrontEnd::MountCacheHit,
            None,
        )
    },
    front_end_spec(
        "mount.seqread.http",
        "1 MiB reads, sequentially through a 256 MiB file, through a FUSE weed mount (stock weed; the file's pages dropped at the end of each pass)",
        "1 MiB read",
        1 << 20,
        FrontEnd::MountSequential,
        None,
    ),
    front_end_spec(
        "mount.seqread.ring",
        "the same through a weed mount with the ring read path (sm,tcp)",
        "1 MiB read",
        1 << 20,
        FrontEnd::MountSequential,
        Some((Tls::Sm, "mount.seqread.http", Some(Target { metric: Metric::BytesRatio, bound: 1.0 }))),
    ),
    front_end_spec(
        "s3.get.4k.http",
        "keep-alive GET of a 4 KiB object from weed s3 to the last byte (stock weed)",
        "4 KiB GET",
        4096,
        FrontEnd::S3(4096),
        None,
    ),
    front_end_spec(
        "s3.get.4k.ring",
        "the same from weed s3 with the ring read path (sm,tcp)",
        "4 KiB GET",
        4096,
        FrontEnd::S3(4096),
        Some((Tls::Sm, "s3.get.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 1.0 / 1.3 }))),
    ),
    front_end_spec(
        "s3.get.1m.http",
        "keep-alive GET of a 1 MiB object from weed s3 to the last byte (stock weed)",
        "1 MiB GET",
        1 << 20,
        FrontEnd::S3(1 << 20),
        None,
    ),
    front_end_spec(
        "s3.get.1m.ring",
        "the same from weed s3 with the ring read path (sm,tcp)",
        "1 MiB GET",
        1 << 20,
        FrontEnd::S3(1 << 20),
        Some((Tls::Sm, "s3.get.1m.http", None)),
    ),
    front_end_spec(
        "filer.get.4k.http",
        "keep-alive GET of a 4 KiB file from a filer's HTTP API to the last byte (stock weed filer)",
        "4 KiB GET",
        4096,
        FrontEnd::Filer(4096),
        None,
    ),
    front_end_spec(
        "filer.get.4k.ring",
        "the same from a weed filer with the ring read path (sm,tcp)",
        "4 KiB GET",
        4096,
        FrontEnd::Filer(4096),
        Some((Tls::Sm, "filer.get.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 1.0 / 1.4 }))),
    ),
];

/// Scenarios with a reserved name that cannot run yet, and why. Selecting one (or running
/// everything) reports it as skipped.
pub const NOT_AVAILABLE: &[(&str, &str)] = &[];

pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The scenario at the end of `s`'s baseline chain (`s` itself when it has no baseline).
pub fn root_of(s: &'static Spec) -> &'static Spec {
    let mut s = s;
    while let Some(b) = s.baseline.or(s.runs_with).and_then(spec) {
        s = b;
    }
    s
}

/// The UCX engine a group needs, if any (the registry test checks that a group names at
/// most one).
pub fn group_ucx(group: &[&'static Spec]) -> Option<Tls> {
    group.iter().find_map(|s| match s.engine {
        EngineUse::Ucx(t) => Some(t),
        _ => None,
    })
}

/// What a run will do: interleaving groups, and the scenarios it was asked for that will not
/// run, with the reason.
#[derive(Debug, Default)]
pub struct Plan {
    pub groups: Vec<Vec<&'static Spec>>,
    pub skipped: Vec<(&'static str, String)>,
}

impl Plan {
    /// Every scenario that will run, in order.
    pub fn specs(&self) -> impl Iterator<Item = &'static Spec> + '_ {
        self.groups.iter().flatten().copied()
    }

    /// Takes out the scenarios `skip` selects (and those compared with one of them), noting
    /// `reason` for each.
    pub fn skip_where(&mut self, skip: impl Fn(&Spec) -> bool, reason: &str) {
        let mut gone: Vec<&'static str> = Vec::new();
        loop {
            let before = gone.len();
            for s in self.specs() {
                let depends = dependencies(s);
                if !gone.contains(&s.name) && (skip(s) || depends.iter().any(|d| gone.contains(d))) {
                    gone.push(s.name);
                }
            }
            if gone.len() == before {
                break;
            }
        }
        for g in &mut self.groups {
            g.retain(|s| !gone.contains(&s.name));
        }
        self.groups.retain(|g| !g.is_empty());
        for name in gone {
            let why = if spec(name).is_some_and(&skip) {
                reason.to_string()
            } else {
                format!("a scenario it is compared with does not run ({reason})")
            };
            self.skipped.push((name, why));
        }
    }
}

/// The scenarios `s` cannot run without: its baseline (or the group it runs with), and what
/// it is compared with.
fn dependencies(s: &Spec) -> Vec<&'static str> {
    s.baseline
        .into_iter()
        .chain(s.runs_with)
        .chain(s.also_vs.iter().copied())
        .chain(s.excess_reference)
        .collect()
}

/// Groups the selected scenarios (plus the baselines, comparisons and references they need)
/// into interleaving groups: each group is a root scenario followed by everything compared
/// with it, in registry order. Names from [`NOT_AVAILABLE`] are skipped with their reason
/// (all of them when nothing is selected); unknown names are an error.
pub fn plan(selected: &[String]) -> Result<Plan> {
    fn add(wanted: &mut Vec<&'static str>, s: &'static Spec) {
        if wanted.contains(&s.name) {
            return;
        }
        wanted.push(s.name);
        for d in dependencies(s) {
            add(wanted, spec(d).expect("the registry test checks every name"));
        }
    }
    let mut wanted: Vec<&'static str> = Vec::new();
    let mut skipped: Vec<(&'static str, String)> = Vec::new();
    if selected.is_empty() {
        for s in SPECS {
            add(&mut wanted, s);
        }
        skipped.extend(NOT_AVAILABLE.iter().map(|(n, why)| (*n, why.to_string())));
    }
    for name in selected {
        if let Some(s) = spec(name) {
            add(&mut wanted, s);
        } else if let Some((n, why)) = NOT_AVAILABLE.iter().find(|(n, _)| n == name) {
            if !skipped.iter().any(|(m, _)| m == n) {
                skipped.push((n, why.to_string()));
            }
        } else {
            let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
            return Err(format!("unknown scenario {name:?}; scenarios: {}", names.join(", ")).into());
        }
    }
    let mut groups: Vec<Vec<&'static Spec>> = Vec::new();
    for s in SPECS.iter().filter(|s| wanted.contains(&s.name)) {
        let root = root_of(s).name;
        match groups.iter_mut().find(|g| g[0].name == root) {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    Ok(Plan { groups, skipped })
}

/// Timing of one block.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Run but not recorded, at the start of every block.
    pub warmup: Duration,
    /// Recorded.
    pub measure: Duration,
}

/// What scenarios get to run a block.
pub struct Ctx {
    pub client_core: usize,
    pub engine_core: usize,
    /// The bench's session with the run's plain engine, when the group uses it.
    pub session: Option<Session>,
    /// That engine's control socket (for scenarios that open sessions of their own).
    pub socket: Option<PathBuf>,
    /// The bench's session with the group's UCX engine, when it has one.
    pub ucx_session: Option<Session>,
    /// Its peer handle for that engine's own UCX listener.
    pub ucx_peer: Option<u32>,
    /// That engine's control socket and UCX listen address (for scenarios that open sessions
    /// of their own on it).
    pub ucx_socket: Option<PathBuf>,
    pub ucx_address: Option<String>,
    /// The Go latency tool, for the Go scenarios.
    pub ringlat: Option<PathBuf>,
    /// The run's weed volume server and its needles, when the group reads needles.
    pub weed: Option<crate::weed::WeedInfo>,
    /// The group's engines serving the weed volume directory, one per transport.
    pub needle_engines: Vec<NeedleEngine>,
    /// The process id of the run's plain engine (for its CPU time in `ring.wake`).
    pub engine_pid: Option<u32>,
    pub timing: Timing,
    /// How engines are started (for scenarios that start their own); `None` when no
    /// scenario of the run needs an engine.
    pub engine_template: Option<crate::engine::EngineOptions>,
    /// Cores for `scale.nop.workers.N` ([`crate::config::Placement::worker_cores`]).
    pub worker_cores: Vec<usize>,
    /// `--out DIR`, for the logs of engines a scenario starts.
    pub out: Option<PathBuf>,
    /// How long an engine may take to go to sleep once idle.
    pub settle: Duration,
}

impl Ctx {
    pub fn session(&mut self) -> Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| "this scenario needs the engine, and none was started".into())
    }

    /// The session with the group's UCX engine and the peer handle of its own listener.
    pub fn ucx_session(&mut self) -> Result<(&mut Session, u32)> {
        match (self.ucx_session.as_mut(), self.ucx_peer) {
            (Some(s), Some(p)) => Ok((s, p)),
            _ => Err("this scenario needs an engine with a UCX listener, and none was started".into()),
        }
    }

    /// The sessions of every engine running for the group.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.session
            .iter()
            .chain(self.ucx_session.iter())
            .chain(self.needle_engines.iter().map(|e| &e.session))
    }

    /// The bench's session with the group's engine of `engine`, if it has one.
    pub fn session_of(&self, engine: EngineUse) -> Option<&Session> {
        match engine {
            EngineUse::None | EngineUse::Own => None,
            EngineUse::Plain => self.session.as_ref(),
            EngineUse::Ucx(_) => self.ucx_session.as_ref(),
            EngineUse::Needle(t) => self.needle_engines.iter().find(|e| e.tls == t).map(|e| &e.session),
        }
    }
}

/// An engine serving the weed volume directory over UCX, started for a needle group.
pub struct NeedleEngine {
    pub tls: Tls,
    /// The bench's session (to see when the engine sleeps); the scenario's client has its own.
    pub session: Session,
    pub socket: PathBuf,
    /// Its UCX listener (`127.0.0.1:PORT`): the peer the client's READ_NEEDLEs go to.
    pub address: String,
}

/// What a block measured, besides the histogram.
#[derive(Debug, Clone, Copy)]
pub struct BlockRun {
    pub samples: u64,
    /// Measured time, warm-up excluded.
    pub elapsed: Duration,
}

/// One scenario, ready to run blocks. Called on the measuring thread, already pinned to the
/// client core.
pub trait Scenario {
    /// Runs one block: `ctx.timing.warmup` unrecorded, then samples into `hist` (ns) until
    /// `ctx.timing.measure` has passed.
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun>;

    /// Scenario-specific facts for the result line (`details` in the JSON), e.g. the kind of
    /// memory a floor used.
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The command line of the engine the scenario started itself ([`EngineUse::Own`]).
    fn engine_command(&self) -> Option<String> {
        None
    }
}

/// Whether `io_uring.nop` can run here (`Err`: why not).
pub fn io_uring_probe() -> std::result::Result<(), String> {
    iouring::probe()
}

pub fn build(spec: &Spec) -> Box<dyn Scenario> {
    match spec.name {
        "floor.pingpong" => Box::new(floor::PingPong),
        "floor.echo_batch32" => Box::new(floor::EchoBatch {
            batch: 32,
            huge_pages: None,
        }),
        "ring.nop" => Box::new(ring::Nop::default()),
        "ring.nop_batch32" => Box::new(ring::NopBatch::new(32)),
        "ring.nop.go" => Box::new(go::GoRinglat::new(spec.name, go::Kind::Nop)),
        "ring.nop_batch32.go" => Box::new(go::GoRinglat::new(spec.name, go::Kind::Batch(32))),
        "ucx.raw_am_rtt.sm" => Box::new(ucx::RawUcx::new(Tls::Sm, ucx::RawKind::AmRtt)),
        "ucx.raw_am_rtt.tcp" => Box::new(ucx::RawUcx::new(Tls::Tcp, ucx::RawKind::AmRtt)),
        "ucx.raw_read_bw.sm" => Box::new(ucx::RawUcx::new(Tls::Sm, ucx::RawKind::ReadBw)),
        "ucx.raw_read_bw.tcp" => Box::new(ucx::RawUcx::new(Tls::Tcp, ucx::RawKind::ReadBw)),
        "ucx.read_bw.sm" | "ucx.read_bw.tcp" => Box::new(ucx::ReadBw::default()),
        "ucx.am_rtt.sm" | "ucx.am_rtt.tcp" => Box::new(ucx::AmRtt::default()),
        "ucx.nop_ref.sm" | "ucx.nop_ref.tcp" => Box::new(ring::Nop::default()),
        "uds.msgpack" => Box::new(uds::UdsMsgpack::default()),
        "io_uring.nop" => Box::new(iouring::IoUringNop::default()),
        "ring.wake" => Box::new(wake::Wake::default()),
        "iceoryx2.reqres" => Box::new(iceoryx::ReqRes::default()),
        name if name.starts_with("scale.nop.sessions.") => {
            let n = name["scale.nop.sessions.".len()..]
                .parse()
                .expect("scale.nop.sessions.<N>");
            Box::new(scale::Sessions::new(n))
        }
        name if name.starts_with("scale.nop.workers.") => {
            Box::new(scale::Workers::new(workers_of(name).expect("scale.nop.workers.<N>")))
        }
        name if name.starts_with("needle.read.") => {
            let (size, tls) = needle_parts(name).expect("needle.read.<size>.<path>");
            Box::new(go::GoRinglat::new(spec.name, go::Kind::Needle { size, tls }))
        }
        _ if spec.front_end.is_some() => {
            let tls = match spec.engine {
                EngineUse::Needle(t) => Some(t),
                _ => None,
            };
            let front_end = spec.front_end.expect("checked");
            Box::new(go::GoRinglat::new(spec.name, go::Kind::FrontEnd { front_end, tls }))
        }
        other => unreachable!("scenario {other} is in SPECS but has no implementation"),
    }
}

/// The size and transports of `needle.read.<size>.<path>` (`None`: the HTTP path).
pub fn needle_parts(name: &str) -> Option<(&'static str, Option<Tls>)> {
    let rest = name.strip_prefix("needle.read.")?;
    let (size, path) = rest.split_once('.')?;
    let size = *NEEDLE_SIZES.iter().find(|s| **s == size)?;
    let tls = match path {
        "http" => None,
        "tcp" => Some(Tls::Tcp),
        "sm" => Some(Tls::Sm),
        _ => return None,
    };
    Some((size, tls))
}

/// Runs `op` (one sample: a round trip or a batch) for the warm-up, then for the measured
/// time, recording each sample's duration.
///
/// One `Instant::now()` per sample: each sample is the time from the previous timestamp to
/// this one, so the loop's own overhead (one clock read, one histogram record) is inside every
/// sample, the same for every scenario.
pub fn sample_loop(timing: Timing, hist: &mut Histogram<u64>, mut op: impl FnMut() -> Result<()>) -> Result<BlockRun> {
    let warm_end = Instant::now() + timing.warmup;
    let mut n = 0u64;
    let mut prev = loop {
        op()?;
        let now = Instant::now();
        if now >= warm_end {
            break now;
        }
        n += 1;
        if n & 1023 == 0 {
            crate::interrupt::check()?;
        }
    };
    let start = prev;
    let end = start + timing.measure;
    n = 0;
    loop {
        op()?;
        let now = Instant::now();
        record(hist, now - prev);
        prev = now;
        n += 1;
        if now >= end {
            break;
        }
        if n & 1023 == 0 {
            crate::interrupt::check()?;
        }
    }
    Ok(BlockRun {
        samples: n,
        elapsed: prev - start,
    })
}

/// Operations kept in flight by [`pipelined_loop`], each in a slot of its own.
pub trait Pipeline {
    /// Starts the operation of `slot` (free until now). `Ok(true)`: it completed at once.
    fn start(&mut self, slot: usize) -> Result<bool>;
    /// Makes progress once and calls `done` with the slot of every operation that completed
    /// (successfully: a failed operation is an error).
    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()>;
    /// What is waited for, for a stall error.
    fn waiting_for(&self) -> String;
}

/// Keeps `depth` operations of `p` in flight: an unrecorded warm-up by time, then each
/// completion is one sample, the time from its start to the poll that reported it, and its
/// slot starts the next operation at once. The measured time runs from the first completion
/// after the warm-up to the completion that ends it (the first at or after `timing.measure`,
/// included, as in [`sample_loop`]); operations still in flight then are waited for (the
/// slots must be free when the block ends) but not recorded.
pub fn pipelined_loop(
    timing: Timing,
    hist: &mut Histogram<u64>,
    depth: usize,
    p: &mut dyn Pipeline,
) -> Result<BlockRun> {
    let mut started = vec![Instant::now(); depth];
    let mut ready: Vec<usize> = Vec::with_capacity(depth);
    let mut batch: Vec<usize> = Vec::with_capacity(depth);
    let warm_end = Instant::now() + timing.warmup;
    // (start, end) of the measured time once the warm-up is over.
    let mut window: Option<(Instant, Instant)> = None;
    let mut stopping = false;
    let (mut n, mut last) = (0u64, None::<Instant>);
    let mut in_flight = 0usize;
    for slot in 0..depth {
        started[slot] = Instant::now();
        in_flight += 1;
        if p.start(slot)? {
            ready.push(slot);
        }
    }
    let mut guard = SpinGuard::new();
    while in_flight > 0 {
        if ready.is_empty() {
            p.poll(&mut |slot| ready.push(slot))?;
        }
        if ready.is_empty() {
            guard.turn(|| p.waiting_for())?;
            continue;
        }
        guard = SpinGuard::new();
        let now = Instant::now();
        let counting = match window {
            Some((_, end)) => {
                let c = !stopping;
                stopping |= now >= end;
                c
            }
            None => {
                if now >= warm_end {
                    window = Some((now, now + timing.measure));
                }
                false
            }
        };
        std::mem::swap(&mut ready, &mut batch);
        for &slot in &batch {
            in_flight -= 1;
            if counting {
                record(hist, now - started[slot]);
                n += 1;
                last = Some(now);
                if n & 1023 == 0 {
                    crate::interrupt::check()?;
                }
            }
            if !stopping {
                started[slot] = Instant::now();
                in_flight += 1;
                if p.start(slot)? {
                    ready.push(slot);
                }
            }
        }
        batch.clear();
    }
    let start = window.map(|(s, _)| s).ok_or("the block ended before its warm-up")?;
    Ok(BlockRun {
        samples: n,
        elapsed: last.map_or(Duration::ZERO, |l| l - start),
    })
}

/// Spin-wait bookkeeping for one wait that should take nanoseconds: make one per wait and
/// call [`SpinGuard::turn`] on every empty turn. Every 65536 turns it checks for Ctrl-C and
/// for a stall (no answer for [`STALL_LIMIT`]); otherwise it costs a counter increment.
pub struct SpinGuard {
    turns: u32,
    since: Option<Instant>,
}

/// How long a single round trip may take before the bench calls it a stall.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

impl SpinGuard {
    #[inline]
    pub fn new() -> Self {
        Self { turns: 0, since: None }
    }

    /// `what` describes the wait, for the stall error.
    #[inline]
    pub fn turn(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        self.turns = self.turns.wrapping_add(1);
        if self.turns & 0xffff == 0 {
            self.slow_check(what)?;
        }
        std::hint::spin_loop();
        Ok(())
    }

    #[cold]
    fn slow_check(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        crate::interrupt::check()?;
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() > STALL_LIMIT {
            return Err(format!("stalled: {} for more than {STALL_LIMIT:?}", what()).into());
        }
        Ok(())
    }
}

impl Default for SpinGuard {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(groups: &[Vec<&Spec>]) -> Vec<Vec<&'static str>> {
        groups.iter().map(|g| g.iter().map(|s| s.name).collect()).collect()
    }

    fn scale_sessions_group() -> Vec<&'static str> {
        vec![
            "scale.nop.sessions.1",
            "scale.nop.sessions.4",
            "scale.nop.sessions.16",
            "scale.nop.sessions.64",
        ]
    }

    fn scale_workers_group() -> Vec<&'static str> {
        vec![
            "scale.nop.workers.1",
            "scale.nop.workers.2",
            "scale.nop.workers.4",
            "scale.nop.workers.8",
            "scale.nop.workers.16",
            "scale.nop.workers.32",
        ]
    }

    #[test]
    fn scaling_runs_by_session_and_worker_count() {
        // 1, 4, 16, 64 sessions on the plain engine, compared with 1 session, no target.
        let p = plan(&["scale.nop.sessions.16".into()]).unwrap();
        assert_eq!(
            names(&p.groups),
            vec![vec!["scale.nop.sessions.1", "scale.nop.sessions.16"]]
        );
        for n in scale_sessions_group() {
            let s = spec(n).unwrap();
            assert_eq!(s.engine, EngineUse::Plain, "{n}");
            assert!(s.target.is_none() && s.pipelined, "{n}");
        }
        // Workers: engines of their own; those without cores are skipped with the reason and
        // take nothing else with them.
        let mut p = plan(&["scale.nop.workers.4".into(), "scale.nop.workers.2".into()]).unwrap();
        assert_eq!(
            names(&p.groups),
            vec![vec![
                "scale.nop.workers.1",
                "scale.nop.workers.2",
                "scale.nop.workers.4"
            ]]
        );
        assert!(p.groups[0].iter().all(|s| s.engine == EngineUse::Own));
        p.skip_where(
            |s| workers_of(s.name).is_some_and(|n| n > 1),
            "not available here: 2 CPUs",
        );
        assert_eq!(names(&p.groups), vec![vec!["scale.nop.workers.1"]]);
        assert_eq!(p.skipped.len(), 2);
        assert_eq!(workers_of("scale.nop.workers.16"), Some(16));
        assert_eq!(workers_of("scale.nop.sessions.16"), None);
    }

    #[test]
    fn iceoryx2_runs_with_the_ring_nop_and_has_the_issue_target() {
        let p = plan(&["iceoryx2.reqres".into()]).unwrap();
        assert_eq!(
            names(&p.groups),
            vec![vec!["floor.pingpong", "ring.nop", "iceoryx2.reqres"]]
        );
        let s = spec("iceoryx2.reqres").unwrap();
        // Its server spins on the engine core: the engine must sleep during its blocks.
        assert!(s.borrows_engine_core);
        // "ring.nop p50 <= 0.3x iceoryx2.reqres p50".
        let t = s.target.unwrap();
        assert_eq!((t.key(), t.describe().as_str()), ("ratio_p50", ">= 3.333"));
        assert!(t.met(1.0 / 0.3) && t.met(3.4) && !t.met(3.3));
        // The tail target is ring.nop's only.
        let tails: Vec<_> = SPECS.iter().filter_map(|s| s.tail_bound.map(|b| (s.name, b))).collect();
        assert_eq!(tails, [("ring.nop", 4.0)]);
    }

    #[test]
    fn bounds_print_short() {
        assert_eq!(short_number(1.3), "1.3");
        assert_eq!(short_number(50.0), "50");
        assert_eq!(short_number(0.05), "0.05");
        assert_eq!(short_number(1.0 / 0.3), "3.333");
    }

    #[test]
    fn default_plan_pairs_each_subject_with_its_baseline() {
        let p = plan(&[]).unwrap();
        assert_eq!(
            names(&p.groups),
            vec![
                vec![
                    "floor.pingpong",
                    "ring.nop",
                    "ring.nop.go",
                    "uds.msgpack",
                    "io_uring.nop",
                    "iceoryx2.reqres",
                    "ring.wake"
                ],
                vec!["floor.echo_batch32", "ring.nop_batch32", "ring.nop_batch32.go"],
                vec!["ucx.raw_am_rtt.sm", "ucx.nop_ref.sm", "ucx.am_rtt.sm"],
                vec!["ucx.raw_am_rtt.tcp", "ucx.nop_ref.tcp", "ucx.am_rtt.tcp"],
                vec!["ucx.raw_read_bw.sm", "ucx.read_bw.sm"],
                vec!["ucx.raw_read_bw.tcp", "ucx.read_bw.tcp"],
                scale_sessions_group(),
                scale_workers_group(),
                vec!["needle.read.4k.http", "needle.read.4k.tcp", "needle.read.4k.sm"],
                vec!["needle.read.64k.http", "needle.read.64k.tcp", "needle.read.64k.sm"],
                vec!["needle.read.1m.http", "needle.read.1m.tcp", "needle.read.1m.sm"],
                vec![
                    "mount.randread.4k.http",
                    "mount.randread.4k.ring",
                    "mount.randread.4k.ring.tcp",
                    "mount.cached.4k.http"
                ],
                vec!["mount.seqread.http", "mount.seqread.ring"],
                vec!["s3.get.4k.http", "s3.get.4k.ring"],
                vec!["s3.get.1m.http", "s3.get.1m.ring"],
                vec!["filer.get.4k.http", "filer.get.4k.ring"],
            ]
        );
        // Everything that cannot run yet is reported as skipped.
        let skipped: Vec<&str> = p.skipped.iter().map(|(n, _)| *n).collect();
        assert_eq!(skipped, NOT_AVAILABLE.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    }

    #[test]
    fn subject_pulls_in_its_baseline() {
        let g = plan(&["ring.nop_batch32".into()]).unwrap().groups;
        assert_eq!(names(&g), vec![vec!["floor.echo_batch32", "ring.nop_batch32"]]);
        let g = plan(&["floor.pingpong".into()]).unwrap().groups;
        assert_eq!(names(&g), vec![vec!["floor.pingpong"]]);
        let g = plan(&["ring.nop".into(), "floor.pingpong".into(), "ring.nop".into()])
            .unwrap()
            .groups;
        assert_eq!(names(&g), vec![vec!["floor.pingpong", "ring.nop"]]);
    }

    #[test]
    fn baseline_chains_comparisons_and_references_are_pulled_in() {
        // ring.nop_batch32.go is compared with ring.nop_batch32, whose baseline is the echo floor.
        let g = plan(&["ring.nop_batch32.go".into()]).unwrap().groups;
        assert_eq!(
            names(&g),
            vec![vec!["floor.echo_batch32", "ring.nop_batch32", "ring.nop_batch32.go"]]
        );
        // ring.nop.go: baseline floor.pingpong, also compared with ring.nop.
        let g = plan(&["ring.nop.go".into()]).unwrap().groups;
        assert_eq!(names(&g), vec![vec!["floor.pingpong", "ring.nop", "ring.nop.go"]]);
        // ucx.am_rtt.tcp: its raw baseline, and the NOP its excess is measured in, interleaved.
        let g = plan(&["ucx.am_rtt.tcp".into()]).unwrap().groups;
        assert_eq!(
            names(&g),
            vec![vec!["ucx.raw_am_rtt.tcp", "ucx.nop_ref.tcp", "ucx.am_rtt.tcp"]]
        );
        assert_eq!(group_ucx(&g[0]), Some(Tls::Tcp));
        // A raw baseline alone needs no engine.
        let g = plan(&["ucx.raw_am_rtt.sm".into()]).unwrap().groups;
        assert_eq!(names(&g), vec![vec!["ucx.raw_am_rtt.sm"]]);
        assert_eq!(group_ucx(&g[0]), None);
        assert!(g[0].iter().all(|s| s.engine == EngineUse::None));
    }

    #[test]
    fn read_bandwidth_runs_next_to_its_raw_baseline() {
        let p = plan(&["ucx.read_bw.tcp".into(), "ring.nop".into()]).unwrap();
        assert_eq!(
            names(&p.groups),
            vec![
                vec!["floor.pingpong", "ring.nop"],
                vec!["ucx.raw_read_bw.tcp", "ucx.read_bw.tcp"]
            ]
        );
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        assert_eq!(group_ucx(&p.groups[1]), Some(Tls::Tcp));
        let s = spec("ucx.read_bw.sm").unwrap();
        assert_eq!(s.baseline, Some("ucx.raw_read_bw.sm"));
        assert_eq!(
            s.target.map(|t| (t.metric, t.key())),
            Some((Metric::BytesRatio, "ratio_bytes_per_sec"))
        );
        assert_eq!((s.bytes_per_sample, s.bytes_per_op()), (1 << 20, (1 << 20) as f64));
        assert_eq!(spec("ring.nop").unwrap().bytes_per_op(), 0.0);
        // A raw baseline alone needs no engine.
        let g = plan(&["ucx.raw_read_bw.sm".into()]).unwrap().groups;
        assert_eq!(names(&g), vec![vec!["ucx.raw_read_bw.sm"]]);
        assert_eq!(group_ucx(&g[0]), None);
    }

    #[test]
    fn skipping_go_keeps_the_rest() {
        let mut p = plan(&[]).unwrap();
        let before = p.skipped.len();
        p.skip_where(|s| s.needs_go, "Go is not installed");
        assert_eq!(
            names(&p.groups),
            vec![
                vec![
                    "floor.pingpong",
                    "ring.nop",
                    "uds.msgpack",
                    "io_uring.nop",
                    "iceoryx2.reqres",
                    "ring.wake"
                ],
                vec!["floor.echo_batch32", "ring.nop_batch32"],
                vec!["ucx.raw_am_rtt.sm", "ucx.nop_ref.sm", "ucx.am_rtt.sm"],
                vec!["ucx.raw_am_rtt.tcp", "ucx.nop_ref.tcp", "ucx.am_rtt.tcp"],
                vec!["ucx.raw_read_bw.sm", "ucx.read_bw.sm"],
                vec!["ucx.raw_read_bw.tcp", "ucx.read_bw.tcp"],
                scale_sessions_group(),
                scale_workers_group(),
            ]
        );
        let new: Vec<_> = p.skipped[before..].iter().map(|(n, w)| (*n, w.as_str())).collect();
        let mut want = vec![
            ("ring.nop.go", "Go is not installed"),
            ("ring.nop_batch32.go", "Go is not installed"),
        ];
        // The needle scenarios read from Go too.
        want.extend(
            SPECS
                .iter()
                .filter(|s| s.needs_weed)
                .map(|s| (s.name, "Go is not installed")),
        );
        assert_eq!(new, want);
        // Dropping a baseline drops what is compared with it (and runs with it), saying why.
        let mut p = plan(&["ucx.am_rtt.sm".into(), "ring.nop".into()]).unwrap();
        p.skip_where(|s| s.name == "ucx.raw_am_rtt.sm", "test");
        assert_eq!(names(&p.groups), vec![vec!["floor.pingpong", "ring.nop"]]);
        let gone: Vec<&str> = p.skipped.iter().map(|(n, _)| *n).collect();
        assert_eq!(gone, ["ucx.raw_am_rtt.sm", "ucx.nop_ref.sm", "ucx.am_rtt.sm"]);
        assert!(p.skipped[2].1.contains("compared with"), "{:?}", p.skipped);
    }

    #[test]
    fn the_designs_it_replaces_run_with_the_ring_nop() {
        // ring.wake is compared with uds.msgpack, which is compared with ring.nop.
        let p = plan(&["ring.wake".into()]).unwrap();
        assert_eq!(
            names(&p.groups),
            vec![vec!["floor.pingpong", "ring.nop", "uds.msgpack", "ring.wake"]]
        );
        let g = plan(&["io_uring.nop".into()]).unwrap().groups;
        assert_eq!(names(&g), vec![vec!["floor.pingpong", "ring.nop", "io_uring.nop"]]);
        // The UDS echo server takes the engine core: the engine must sleep during its blocks.
        assert!(spec("uds.msgpack").unwrap().borrows_engine_core);
        // "ring.nop p50 at least 50x lower than uds.msgpack": uds.msgpack / ring.nop >= 50.
        let t = spec("uds.msgpack").unwrap().target.unwrap();
        assert_eq!((t.key(), t.describe().as_str()), ("ratio_p50", ">= 50"));
        assert!(t.met(60.0) && !t.met(40.0));
        // Skipping io_uring (not permitted here) keeps the rest of the group.
        let mut p = plan(&["io_uring.nop".into(), "ring.wake".into()]).unwrap();
        p.skip_where(|s| s.name == "io_uring.nop", "io_uring is not usable here");
        assert_eq!(
            names(&p.groups),
            vec![vec!["floor.pingpong", "ring.nop", "uds.msgpack", "ring.wake"]]
        );
        assert_eq!(
            p.skipped,
            vec![("io_uring.nop", "io_uring is not usable here".to_string())]
        );
    }

    #[test]
    fn needle_reads_run_next_to_the_http_get() {
        let p = plan(&["needle.read.4k.sm".into()]).unwrap();
        assert_eq!(names(&p.groups), vec![vec!["needle.read.4k.http", "needle.read.4k.sm"]]);
        // The HTTP baseline alone needs no engine; each ring path its own, by transport.
        let p = plan(&["needle.read.1m.http".into()]).unwrap();
        assert_eq!(names(&p.groups), vec![vec!["needle.read.1m.http"]]);
        let g = plan(&["needle.read.64k.tcp".into(), "needle.read.64k.sm".into()])
            .unwrap()
            .groups;
        assert_eq!(
            g[0].iter().map(|s| s.engine).collect::<Vec<_>>(),
            [EngineUse::None, EngineUse::Needle(Tls::Tcp), EngineUse::Needle(Tls::Sm)]
        );
        assert_eq!(group_ucx(&g[0]), None);
        // The issue's targets.
        let t = |n: &str| spec(n).unwrap().target.map(|t| (t.key(), t.describe()));
        assert_eq!(t("needle.read.4k.tcp"), Some(("ratio_p50", "<= 0.2".to_string())));
        assert_eq!(t("needle.read.4k.sm"), Some(("ratio_p50", "<= 0.05".to_string())));
        assert_eq!(
            t("needle.read.1m.tcp"),
            Some(("ratio_bytes_per_sec", ">= 2".to_string()))
        );
        assert_eq!(
            t("needle.read.1m.sm"),
            Some(("ratio_bytes_per_sec", ">= 2".to_string()))
        );
        assert_eq!(t("needle.read.64k.sm"), None);
        assert_eq!(
            spec("needle.read.64k.sm").unwrap().baseline,
            Some("needle.read.64k.http")
        );
        assert_eq!(spec("needle.read.1m.http").unwrap().bytes_per_sample, 1 << 20);
        assert_eq!(needle_parts("needle.read.64k.http"), Some(("64k", None)));
        assert_eq!(needle_parts("needle.read.1m.sm"), Some(("1m", Some(Tls::Sm))));
        assert_eq!(needle_parts("needle.read.2k.sm"), None);
        assert_eq!(needle_parts("needle.read.4k.rdma"), None);
        // No weed: the needle scenarios go, with the reason; the rest stays.
        let mut p = plan(&["needle.read.4k.tcp".into(), "ring.nop".into()]).unwrap();
        p.skip_where(|s| s.needs_weed, "not available: no weed binary");
        assert_eq!(names(&p.groups), vec![vec!["floor.pingpong", "ring.nop"]]);
        assert_eq!(
            p.skipped,
            vec![
                ("needle.read.4k.http", "not available: no weed binary".to_string()),
                ("needle.read.4k.tcp", "not available: no weed binary".to_string())
            ]
        );
        // Only the pipelined bandwidth and scaling scenarios are left out of the latency plot.
        let pipelined: Vec<&str> = SPECS.iter().filter(|s| s.pipelined).map(|s| s.name).collect();
        let mut want = vec![
            "ucx.raw_read_bw.sm",
            "ucx.read_bw.sm",
            "ucx.raw_read_bw.tcp",
            "ucx.read_bw.tcp",
        ];
        want.extend(scale_sessions_group());
        want.extend(scale_workers_group());
        assert_eq!(pipelined, want);
    }

    #[test]
    fn unknown_scenario_lists_the_known_ones() {
        let e = plan(&["ring.nope".into()]).unwrap_err().to_string();
        assert!(e.contains("ring.nope") && e.contains("floor.pingpong"), "{e}");
    }

    #[test]
    fn registry_is_consistent() {
        let all: Vec<&str> = SPECS
            .iter()
            .map(|s| s.name)
            .chain(NOT_AVAILABLE.iter().map(|(n, _)| *n))
            .collect();
        for n in &all {
            assert_eq!(all.iter().filter(|m| *m == n).count(), 1, "{n} listed twice");
        }
        for (i, s) in SPECS.iter().enumerate() {
            if let Some(b) = s.baseline {
                let bi = SPECS.iter().position(|t| t.name == b).expect("baseline exists");
                assert!(bi < i, "{}: baseline {b} must come first", s.name);
            }
            assert!(
                s.target.is_none() || s.baseline.is_some(),
                "{}: a target needs a baseline",
                s.name
            );
            // A subject without a target: only the 64 KiB needle reads, the 1 MiB S3 GET and
            // the scaling scenarios (the issue names none).
            if s.baseline.is_some() && s.target.is_none() {
                assert!(
                    s.name.starts_with("needle.read.64k.")
                        || s.name.starts_with("scale.nop.")
                        || s.name == "s3.get.1m.ring",
                    "{}: a subject needs a target",
                    s.name
                );
            }
            assert_eq!(
                s.needs_weed,
                s.name.starts_with("needle.read.") || s.front_end.is_some(),
                "{}",
                s.name
            );
            if s.needs_weed {
                assert!(s.needs_go, "{}: the needle scenarios read from Go", s.name);
                assert!(needle_parts(s.name).is_some() != s.front_end.is_some(), "{}", s.name);
            }
            let root = root_of(s);
            assert!(root.baseline.is_none());
            for a in s.also_vs {
                let a = spec(a).unwrap_or_else(|| panic!("{}: also_vs {a} exists", s.name));
                assert_eq!(
                    root_of(a).name,
                    root.name,
                    "{}: also_vs {} runs in another group",
                    s.name,
                    a.name
                );
            }
            if let Some(r) = s.excess_reference {
                let r = spec(r).unwrap_or_else(|| panic!("{}: excess reference exists", s.name));
                assert_eq!(
                    root_of(r).name,
                    root.name,
                    "{}: excess reference {} runs in another group",
                    s.name,
                    r.name
                );
            }
            if let Some(w) = s.runs_with {
                assert!(
                    s.baseline.is_none(),
                    "{}: runs_with is for scenarios without a baseline",
                    s.name
                );
                assert!(spec(w).is_some(), "{}: runs_with {w} exists", s.name);
            }
            if let Some(Target {
                metric: Metric::P50ExcessOver(r),
                ..
            }) = s.target
            {
                assert_eq!(s.excess_reference, Some(r), "{}: the target's reference", s.name);
            }
            // Every spec has an implementation.
            let _ = build(s);
        }
        // A group needs one UCX engine at most.
        for g in plan(&[]).unwrap().groups {
            let mut tls: Vec<Tls> = g
                .iter()
                .filter_map(|s| match s.engine {
                    EngineUse::Ucx(t) => Some(t),
                    _ => None,
                })
                .collect();
            tls.dedup();
            assert!(tls.len() <= 1, "{:?}", names(std::slice::from_ref(&g)));
        }
    }

    #[test]
    fn targets_compare_in_the_right_direction() {
        let p = Target {
            metric: Metric::P50Ratio,
            bound: 1.3,
        };
        assert!(p.met(1.2) && !p.met(1.4));
        let o = Target {
            metric: Metric::OpsRatio,
            bound: 0.5,
        };
        assert!(o.met(0.6) && !o.met(0.4));
        let e = Target {
            metric: Metric::P50ExcessOver("ring.nop"),
            bound: 1.2,
        };
        assert!(e.met(1.1) && e.met(-0.5) && !e.met(1.3));
        let b = Target {
            metric: Metric::BytesRatio,
            bound: 0.9,
        };
        assert!(b.met(0.95) && b.met(0.9) && !b.met(0.89));
        assert_eq!((b.key(), b.describe().as_str()), ("ratio_bytes_per_sec", ">= 0.9"));
        assert_eq!((e.key(), e.describe().as_str()), ("excess_vs_reference", "<= 1.2"));
    }

    #[test]
    fn sample_loop_records_every_sample() {
        let mut h = crate::stats::new_histogram();
        let timing = Timing {
            warmup: Duration::from_millis(1),
            measure: Duration::from_millis(5),
        };
        let mut calls = 0u64;
        let run = sample_loop(timing, &mut h, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(h.len(), run.samples);
        assert!(calls > run.samples, "warm-up calls are not recorded");
        assert!(run.elapsed >= timing.measure);
    }

    /// A fake pipeline: each operation completes `delay` after it started (several may come
    /// in one poll), or at once for the slots in `instant`.
    struct Fake {
        delay: Duration,
        started: Vec<Option<Instant>>,
        instant: Vec<usize>,
        starts: u64,
        completions: u64,
        most_in_flight: usize,
    }

    impl Pipeline for Fake {
        fn start(&mut self, slot: usize) -> Result<bool> {
            assert!(self.started[slot].is_none(), "slot {slot} restarted while busy");
            self.starts += 1;
            if self.instant.contains(&slot) {
                self.completions += 1;
                return Ok(true);
            }
            self.started[slot] = Some(Instant::now());
            let busy = self.started.iter().filter(|s| s.is_some()).count();
            self.most_in_flight = self.most_in_flight.max(busy);
            Ok(false)
        }
        fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()> {
            for (slot, s) in self.started.iter_mut().enumerate() {
                if s.is_some_and(|t| t.elapsed() >= self.delay) {
                    *s = None;
                    self.completions += 1;
                    done(slot);
                }
            }
            Ok(())
        }
        fn waiting_for(&self) -> String {
            "fake".into()
        }
    }

    #[test]
    fn pipelined_loop_keeps_every_slot_busy_and_drains() {
        let timing = Timing {
            warmup: Duration::from_millis(2),
            measure: Duration::from_millis(20),
        };
        let mut f = Fake {
            delay: Duration::from_micros(200),
            started: vec![None; 4],
            instant: vec![],
            starts: 0,
            completions: 0,
            most_in_flight: 0,
        };
        let mut h = crate::stats::new_histogram();
        let run = pipelined_loop(timing, &mut h, 4, &mut f).unwrap();
        assert_eq!(h.len(), run.samples);
        // Everything started completed: nothing is left in flight when the block ends.
        assert_eq!(f.starts, f.completions);
        assert!(f.started.iter().all(Option::is_none));
        // Warm-up and drained operations are not samples.
        assert!(f.completions > run.samples);
        assert!(run.elapsed >= timing.measure, "{:?}", run.elapsed);
        // Each sample is one operation, start to completion: at least the fake's delay.
        assert!(h.min() >= 200_000, "{}", h.min());
        // All 4 slots were in flight at once, and never more.
        assert_eq!(f.most_in_flight, 4);
        let per_sec = run.samples as f64 / run.elapsed.as_secs_f64();
        assert!(per_sec <= 20_000.0, "{per_sec}");
    }

    #[test]
    fn pipelined_loop_takes_operations_that_complete_at_once() {
        let timing = Timing {
            warmup: Duration::from_millis(1),
            measure: Duration::from_millis(5),
        };
        let mut f = Fake {
            delay: Duration::from_micros(50),
            started: vec![None; 3],
            instant: vec![1],
            starts: 0,
            completions: 0,
            most_in_flight: 0,
        };
        let mut h = crate::stats::new_histogram();
        let run = pipelined_loop(timing, &mut h, 3, &mut f).unwrap();
        assert_eq!(f.starts, f.completions);
        assert_eq!(h.len(), run.samples);
        assert!(run.samples > 0);
    }
}
