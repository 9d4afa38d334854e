//! The scenario table: every [`Spec`] the bench knows, in registry order (baselines before
//! their subjects; the constructors are in `builders.rs`), and the parsing of the names that
//! carry a parameter (`needle.read.<size>.<path>[.c<N>]`, `scale.nop.workers.<N>`).

use super::builders::*;
use super::spec::{EngineUse, FrontEnd, Metric, Spec, Target, Tls};

pub use super::builders::{IDLE_CPU_BOUND, NEEDLE_SIZES};

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
        // Issue 17: the Go batch of 32 at two thirds of Rust's throughput (was 0.5, "within
        // 2x of the Rust client").
        target: Some(Target { metric: Metric::OpsRatio, bound: 0.67 }),
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
        borrows_engine_core: true,
        runs_with: Some("ucx.raw_am_rtt.sm"),
        ..spec_base(
            "ucx.raw_am_rtt_one_worker.sm",
            "the same raw ping-pong with both ends on one worker connected to its own listener (as the engine serves itself in ucx.am_rtt and the needle scenarios), one thread on the engine core, sm transports",
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
        also_vs: &["ucx.raw_am_rtt_one_worker.sm"],
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
        borrows_engine_core: true,
        runs_with: Some("ucx.raw_am_rtt.tcp"),
        ..spec_base(
            "ucx.raw_am_rtt_one_worker.tcp",
            "the same raw ping-pong with both ends on one worker connected to its own listener (as the engine serves itself in ucx.am_rtt and the needle scenarios), one thread on the engine core, tcp on loopback",
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
        also_vs: &["ucx.raw_am_rtt_one_worker.tcp"],
        target: Some(Target { metric: Metric::P50Ratio, bound: 1.1 }),
        engine: EngineUse::Ucx(Tls::Tcp),
        ..spec_base(
            "ucx.am_rtt.tcp",
            "SEND of 8 B (ECHO) through the rings to the engine's own UCX listener and back, tcp on loopback",
        )
    },
    Spec {
        borrows_engine_core: true,
        ..read_bw_spec(
            "ucx.raw_read_bw.sm",
            "raw UCX one-sided gets of 1 MiB, 16 in flight, between two workers, one thread on the engine core, sm transports",
            "1 MiB get",
        )
    },
    Spec {
        baseline: Some("ucx.raw_read_bw.sm"),
        target: Some(Target { metric: Metric::BytesRatio, bound: 0.9 }),
        engine: EngineUse::Ucx(Tls::Sm),
        ..read_bw_spec(
            "ucx.read_bw.sm",
            "READs of 1 MiB, 16 in flight, through the rings from another session's export via the engine's own UCX listener, sm transports",
            "1 MiB READ",
        )
    },
    Spec {
        borrows_engine_core: true,
        ..read_bw_spec(
            "ucx.raw_read_bw.tcp",
            "raw UCX one-sided gets of 1 MiB, 16 in flight, between two workers, one thread on the engine core, tcp on loopback",
            "1 MiB get",
        )
    },
    Spec {
        baseline: Some("ucx.raw_read_bw.tcp"),
        target: Some(Target { metric: Metric::BytesRatio, bound: 0.9 }),
        engine: EngineUse::Ucx(Tls::Tcp),
        ..read_bw_spec(
            "ucx.read_bw.tcp",
            "READs of 1 MiB, 16 in flight, through the rings from another session's export via the engine's own UCX listener, tcp on loopback",
            "1 MiB READ",
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
        idle_cpu_bound: Some(IDLE_CPU_BOUND),
        engine: EngineUse::Plain,
        ..spec_base(
            "ring.wake",
            "one NOP submitted once the engine worker is asleep (wake-up and round trip); details: the engine's CPU use while idle",
        )
    },
    // Cold reads (issue 16), in the group of ring.nop: the bystander's p99 is compared with
    // ring.nop's of the same run. No target on the cold reads themselves (the issue names
    // none): the disk sets their pace on both paths.
    Spec {
        runs_with: Some("ring.nop"),
        ..needle_spec(
            "needle.read.cold.1m.http",
            "a 1 MiB needle whose pages were dropped from the page cache just before (a fresh one each time, cycling), by a keep-alive Go HTTP GET to the weed volume server (ringlat cold-http)",
            "1 MiB cold read",
            1 << 20,
            None,
        )
    },
    needle_spec(
        "needle.read.cold.1m.tcp",
        "a 1 MiB needle the engine never read, pages dropped just before, through the rings (tcp): the engine serves it from its I/O threads (ringlat cold-ring; details: reads_served_io)",
        "1 MiB cold read",
        1 << 20,
        Some((Tls::Tcp, "needle.read.cold.1m.http", None)),
    ),
    Spec {
        baseline: Some("ring.nop"),
        target: Some(Target { metric: Metric::P99Ratio, bound: 2.0 }),
        engine: EngineUse::Needle(Tls::Tcp),
        needs_go: true,
        needs_weed: true,
        // Its cold reader spends the pool block by block: a third of the block, as the
        // needle reads.
        measure_divisor: 3,
        ..spec_base(
            "ring.nop.beside_cold_reads",
            "one NOP (as ring.nop) through the engine that serves the volume, while another session on the same worker reads cold 1 MiB needles without pause (ringlat cold-ring)",
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
    idle_full(
        "ring.idle.full.sm",
        "idle with everything on: a serving engine (UCX listener, 7 SeaweedFS volumes) and a reader engine connected to it (sm,tcp); both engines' CPU while idle, and the first 4 KiB READ_NEEDLE once both sleep",
    ),
    idle_full(
        "ring.idle.full.tcp",
        "the same over UCX tcp: both engines' CPU while idle, and the first 4 KiB READ_NEEDLE once both sleep",
    ),
    Spec {
        sample: "engine start to every volume served",
        engine: EngineUse::Own,
        // Finds the stock weed through ringlat (`ringlat -weed -check`); starts no cluster.
        needs_go: true,
        target: Some(Target { metric: Metric::DetailAtMost(super::store::MEMORY_RATIO), bound: 1.0 }),
        ..spec_base(
            "store.open.10m",
            "10 million needles in 10 SeaweedFS volumes (cached in the cache dir): an engine started on them until every volume is served, and its RSS per needle over an engine with no volumes; the same for the stock weed volume (-index=memory); target: engine bytes per needle <= weed's",
        )
    },
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
        "needle.read.4k.local",
        "the same 4 KiB needle read through the engine beside the volume server, which reads it from its own volume straight into the session's buffer (ucx.local-reads: its own listener is the peer), copied out to a reused buffer",
        "4 KiB read",
        4 << 10,
        Some((Tls::Local, "needle.read.4k.http", Some(Target { metric: Metric::P50Ratio, bound: 0.05 }))),
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
        Some((Tls::Tcp, "needle.read.1m.http", Some(Target { metric: Metric::BytesRatio, bound: 1.0 }))),
    ),
    needle_spec(
        "needle.read.1m.sm",
        "the same 1 MiB needle through the rings (sm,tcp), copied out to a reused buffer",
        "1 MiB read",
        1 << 20,
        Some((Tls::Sm, "needle.read.1m.http", Some(Target { metric: Metric::BytesRatio, bound: 2.0 }))),
    ),
    needle_spec(
        "needle.read.1m.local",
        "the same 1 MiB needle read through the engine beside the volume server, which reads it from its own volume straight into the session's buffer (ucx.local-reads: its own listener is the peer), copied out to a reused buffer",
        "1 MiB read",
        1 << 20,
        Some((Tls::Local, "needle.read.1m.http", Some(Target { metric: Metric::BytesRatio, bound: 2.0 }))),
    ),
    needle_spec(
        "needle.read.8m.http",
        "one 8 MiB needle from a real weed volume server: keep-alive Go HTTP GET, body into a reused buffer (ringlat)",
        "8 MiB read",
        8 << 20,
        None,
    ),
    needle_spec(
        "needle.read.8m.tcp",
        "the same 8 MiB needle through the rings (tcp), copied out to a reused buffer",
        "8 MiB read",
        8 << 20,
        Some((Tls::Tcp, "needle.read.8m.http", Some(Target { metric: Metric::BytesRatio, bound: 1.0 }))),
    ),
    needle_spec(
        "needle.read.8m.sm",
        "the same 8 MiB needle through the rings (sm,tcp), copied out to a reused buffer",
        "8 MiB read",
        8 << 20,
        Some((Tls::Sm, "needle.read.8m.http", Some(Target { metric: Metric::BytesRatio, bound: 2.0 }))),
    ),
    needle_spec(
        "needle.read.8m.local",
        "the same 8 MiB needle read through the engine beside the volume server, which reads it from its own volume straight into the session's buffer (ucx.local-reads: its own listener is the peer), copied out to a reused buffer",
        "8 MiB read",
        8 << 20,
        Some((Tls::Local, "needle.read.8m.http", Some(Target { metric: Metric::BytesRatio, bound: 2.0 }))),
    ),
    needle_conc_spec(
        "needle.read.4k.http.c1",
        "the 4 KiB needle over HTTP from one goroutine of the concurrent harness (ringlat -conc 1): keep-alive Go HTTP GET into a reused buffer",
        1,
        None,
        &[],
        None,
    ),
    needle_conc_spec(
        "needle.read.4k.tcp.c1",
        "the 4 KiB needle through the rings (tcp) from one goroutine of the concurrent harness (ringlat -conc 1)",
        1,
        Some("needle.read.4k.http.c1"),
        &[],
        Some((Tls::Tcp, CONC_TCP)),
    ),
    needle_conc_spec(
        "needle.read.4k.sm.c1",
        "the 4 KiB needle through the rings (sm,tcp) from one goroutine of the concurrent harness (ringlat -conc 1)",
        1,
        Some("needle.read.4k.http.c1"),
        &[],
        Some((Tls::Sm, CONC_SM)),
    ),
    needle_conc_spec(
        "needle.read.4k.http.c8",
        "8 goroutines of one ringlat GET the 4 KiB needle at once, on one http.Client keeping 8 idle connections to the volume server",
        8,
        Some("needle.read.4k.http.c1"),
        &[],
        None,
    ),
    needle_conc_spec(
        "needle.read.4k.tcp.c8",
        "8 goroutines of one ringlat read the 4 KiB needle at once through the rings (tcp), on one session, each with its own buffer",
        8,
        Some("needle.read.4k.http.c8"),
        &["needle.read.4k.tcp.c1"],
        Some((Tls::Tcp, CONC_TCP)),
    ),
    needle_conc_spec(
        "needle.read.4k.sm.c8",
        "8 goroutines of one ringlat read the 4 KiB needle at once through the rings (sm,tcp), on one session, each with its own buffer",
        8,
        Some("needle.read.4k.http.c8"),
        &["needle.read.4k.sm.c1"],
        Some((Tls::Sm, CONC_SM)),
    ),
    needle_conc_spec(
        "needle.read.4k.http.c64",
        "64 goroutines of one ringlat GET the 4 KiB needle at once, on one http.Client keeping 64 idle connections to the volume server",
        64,
        Some("needle.read.4k.http.c1"),
        &[],
        None,
    ),
    needle_conc_spec(
        "needle.read.4k.tcp.c64",
        "64 goroutines of one ringlat read the 4 KiB needle at once through the rings (tcp), on one session, each with its own buffer",
        64,
        Some("needle.read.4k.http.c64"),
        &["needle.read.4k.tcp.c1"],
        Some((Tls::Tcp, CONC_TCP)),
    ),
    needle_conc_spec(
        "needle.read.4k.sm.c64",
        "64 goroutines of one ringlat read the 4 KiB needle at once through the rings (sm,tcp), on one session, each with its own buffer",
        64,
        Some("needle.read.4k.http.c64"),
        &["needle.read.4k.sm.c1"],
        Some((Tls::Sm, CONC_SM)),
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
    netns_spec(
        "needle.read.4k.netns.http",
        "one 4 KiB needle across a veth pair: the volume server in network namespace -a, the keep-alive Go HTTP GET (ringlat) in -b",
        "4 KiB read",
        4 << 10,
        None,
    ),
    netns_spec(
        "needle.read.4k.netns",
        "the same 4 KiB needle through the rings across the veth: ringlat and its engine in -b, READ_NEEDLE over UCX tcp to the engine serving the volume in -a",
        "4 KiB read",
        4 << 10,
        Some("needle.read.4k.netns.http"),
    ),
    netns_spec(
        "needle.read.64k.netns.http",
        "one 64 KiB needle across a veth pair: volume server in namespace -a, Go HTTP GET in -b",
        "64 KiB read",
        64 << 10,
        None,
    ),
    netns_spec(
        "needle.read.64k.netns",
        "the same 64 KiB needle through the rings across the veth (engine in -b to engine in -a, UCX tcp)",
        "64 KiB read",
        64 << 10,
        Some("needle.read.64k.netns.http"),
    ),
    netns_spec(
        "needle.read.1m.netns.http",
        "one 1 MiB needle across a veth pair: volume server in namespace -a, Go HTTP GET in -b",
        "1 MiB read",
        1 << 20,
        None,
    ),
    netns_spec(
        "needle.read.1m.netns",
        "the same 1 MiB needle through the rings across the veth (engine in -b to engine in -a, UCX tcp)",
        "1 MiB read",
        1 << 20,
        Some("needle.read.1m.netns.http"),
    ),
];

/// Scenarios with a reserved name that cannot run yet, and why. Selecting one (or running
/// everything) reports it as skipped.
pub const NOT_AVAILABLE: &[(&str, &str)] = &[];

pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The size and transports of `needle.read.<size>.<path>[.c<N>]` (`None`: the HTTP path). The
/// `netns` paths (`.netns`: tcp, `.netns.http`) are across the namespace pair ([`Spec::netns`]);
/// `.c<N>` (N >= 1, not across the pair) reads from N goroutines ([`needle_concurrency`]).
pub fn needle_parts(name: &str) -> Option<(&'static str, Option<Tls>)> {
    let (name, conc) = split_concurrency(name)?;
    let rest = name.strip_prefix("needle.read.")?;
    let (size, path) = rest.split_once('.')?;
    let size = *NEEDLE_SIZES.iter().find(|s| **s == size)?;
    let tls = match (path, conc) {
        ("http", _) | ("netns.http", None) => None,
        ("tcp", _) | ("netns", None) => Some(Tls::Tcp),
        ("sm", _) => Some(Tls::Sm),
        ("local", None) => Some(Tls::Local),
        _ => return None,
    };
    Some((size, tls))
}

/// The N of `needle.read.<size>.<path>.c<N>`: how many goroutines of its ringlat read at once
/// (`None` for the scenarios of one measuring goroutine).
pub fn needle_concurrency(name: &str) -> Option<u32> {
    needle_parts(name)?;
    split_concurrency(name)?.1
}

/// `name` without a `.c<digits>` suffix and the number (`None` for `.c0`, which reads nothing).
fn split_concurrency(name: &str) -> Option<(&str, Option<u32>)> {
    match name.rsplit_once(".c") {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = n.parse().ok().filter(|n| *n > 0)?;
            Some((head, Some(n)))
        }
        _ => Some((name, None)),
    }
}
