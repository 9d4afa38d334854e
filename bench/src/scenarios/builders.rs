//! The constructors that keep the scenario table (`table.rs`) short: one per kind of
//! scenario, each filling in what that kind always needs.

use super::spec::{EngineUse, FrontEnd, Metric, Spec, Target, Tls};
use super::ucx;

pub(super) const fn spec_base(name: &'static str, about: &'static str) -> Spec {
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
        idle_cpu_bound: None,
        front_end: None,
        netns: false,
    }
}

/// The needle sizes of the `needle.read.<size>.<path>` scenarios (the weed host's size
/// names: k = KiB, m = MiB).
pub const NEEDLE_SIZES: &[&str] = &["4k", "64k", "1m", "8m"];

/// `needle.read.<size>.<path>`: a needle read from Go, over HTTP (the baseline) or the rings.
pub(super) const fn needle_spec(
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

/// `needle.read.4k.<path>.c<conc>` (issue 16): `conc` goroutines of one ringlat read the 4 KiB
/// needle at once, sharing one session (the ring paths) or one `http.Client` (`path: None`,
/// the HTTP baseline of the same concurrency). `baseline`: the HTTP read at the same
/// concurrency for a ring path (whose target is on reads/s), the HTTP read of one goroutine
/// for the HTTP path (no target: how HTTP scales); `also_vs`: the same path's one-goroutine
/// scenario (how the ring scales), all in the group of `needle.read.4k.http.c1`. With more
/// than one goroutine a sample is one read among others in flight: left out of the latency
/// charts, as the other pipelined scenarios are.
pub(super) const fn needle_conc_spec(
    name: &'static str,
    about: &'static str,
    conc: u32,
    baseline: Option<&'static str>,
    also_vs: &'static [&'static str],
    path: Option<(Tls, Target)>,
) -> Spec {
    let sample = "4 KiB read (one goroutine's)";
    let base = match path {
        None => Spec {
            baseline,
            ..needle_spec(name, about, sample, 4 << 10, None)
        },
        Some((tls, target)) => match baseline {
            Some(b) => needle_spec(name, about, sample, 4 << 10, Some((tls, b, Some(target)))),
            None => panic!("a ring path is compared with HTTP"),
        },
    };
    Spec {
        also_vs,
        pipelined: conc > 1,
        ..base
    }
}

/// Issue 16: at every concurrency, reads/s over shared memory at least 2x HTTP's, over tcp
/// at least HTTP's.
pub(super) const CONC_SM: Target = Target {
    metric: Metric::OpsRatio,
    bound: 2.0,
};
pub(super) const CONC_TCP: Target = Target {
    metric: Metric::OpsRatio,
    bound: 1.0,
};

/// `needle.read.<size>.netns[.http]`: the needle read across a veth pair (`crate::netns`):
/// the volume server in namespace -a, ringlat in -b, over HTTP (`ring: false`, the baseline)
/// or through the client engine in -b to the serving engine in -a (UCX over tcp). No target
/// (the issue names none).
pub(super) const fn netns_spec(
    name: &'static str,
    about: &'static str,
    sample: &'static str,
    bytes: u64,
    ring: Option<&'static str>,
) -> Spec {
    let base = Spec {
        netns: true,
        ..needle_spec(name, about, sample, bytes, None)
    };
    match ring {
        None => base,
        Some(baseline) => Spec {
            baseline: Some(baseline),
            engine: EngineUse::Netns,
            borrows_engine_core: false,
            ..base
        },
    }
}

/// `mount.*`, `s3.*`, `filer.*`: reads through a SeaweedFS front end from Go, with the
/// stock `weed` (`path: None`, the baseline) or the `weed` with the ring read path, whose
/// chunk reads go through the group's engine for that transport.
pub(super) const fn front_end_spec(
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

/// `ucx.raw_read_bw.*`, `ucx.read_bw.*`: 1 MiB reads, 16 in flight; a sample is one read among
/// the others in flight ([`super::pipelined_loop`]), and a block a third of the usual.
pub(super) const fn read_bw_spec(name: &'static str, about: &'static str, sample: &'static str) -> Spec {
    Spec {
        sample,
        bytes_per_sample: ucx::READ_BYTES as u64,
        measure_divisor: 3,
        pipelined: true,
        ..spec_base(name, about)
    }
}

/// `scale.nop.sessions.N`: N sessions on the run's engine (one worker), one NOP in flight
/// each, driven round robin by the client thread; compared with 1 session (no target: the
/// issue asks how throughput and p99 grow).
pub(super) const fn scale_sessions(name: &'static str, baseline: Option<&'static str>) -> Spec {
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
pub(super) const fn scale_workers(name: &'static str, baseline: Option<&'static str>) -> Spec {
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

/// Issue 17 ("idle means idle"): an idle engine uses less than 1% of a core.
pub const IDLE_CPU_BOUND: f64 = 0.01;

/// `ring.idle.full.<tls>`: a serving and a reader engine of its own, idle, then woken.
pub(super) const fn idle_full(name: &'static str, about: &'static str) -> Spec {
    Spec {
        sample: "first READ_NEEDLE after sleep",
        engine: EngineUse::Own,
        idle_cpu_bound: Some(IDLE_CPU_BOUND),
        ..spec_base(name, about)
    }
}
