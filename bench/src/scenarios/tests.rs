//! The registry and planner (every name, group and target the README and scripts rely on)
//! and the sampling loops.

use std::time::{Duration, Instant};

use super::*;

fn names(groups: &[Vec<&Spec>]) -> Vec<Vec<&'static str>> {
    groups.iter().map(|g| g.iter().map(|s| s.name).collect()).collect()
}

/// The UCX round-trip group over `tls` ("sm" or "tcp"): the raw pair, the one-worker raw
/// pair, the ring NOP reference, the ring round trip.
fn ucx_rtt_group(tls: &str) -> Vec<&'static str> {
    let names = [
        "ucx.raw_am_rtt.",
        "ucx.raw_am_rtt_one_worker.",
        "ucx.nop_ref.",
        "ucx.am_rtt.",
    ];
    names
        .iter()
        .map(|n| spec(&format!("{n}{tls}")).expect("registered").name)
        .collect()
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

fn conc_group() -> Vec<&'static str> {
    [1, 8, 64]
        .iter()
        .flat_map(|n| ["http", "tcp", "sm"].map(|p| format!("needle.read.4k.{p}.c{n}")))
        .map(|n| spec(&n).unwrap_or_else(|| panic!("{n}")).name)
        .collect()
}

#[test]
fn concurrent_needle_reads_run_next_to_http_at_the_same_concurrency() {
    // One group: each ring path with the HTTP read of its concurrency (its baseline) and its
    // own one-goroutine read (how it scales), HTTP with its one-goroutine read.
    let p = plan(&["needle.read.4k.sm.c64".into()]).unwrap();
    assert_eq!(
        names(&p.groups),
        vec![vec![
            "needle.read.4k.http.c1",
            "needle.read.4k.sm.c1",
            "needle.read.4k.http.c64",
            "needle.read.4k.sm.c64"
        ]]
    );
    // The one-goroutine scenarios stay as they were, in their own group.
    let p = plan(&["needle.read.4k.sm".into()]).unwrap();
    assert_eq!(names(&p.groups), vec![vec!["needle.read.4k.http", "needle.read.4k.sm"]]);
    // Issue 16: at every concurrency, sm at least 2x HTTP's reads/s, tcp at least 1x.
    for n in [1, 8, 64] {
        let s = |p: &str| spec(&format!("needle.read.4k.{p}.c{n}")).unwrap();
        for (p, bound) in [("sm", 2.0), ("tcp", 1.0)] {
            let t = s(p).target.unwrap();
            assert_eq!(
                (t.metric, t.bound, t.key()),
                (Metric::OpsRatio, bound, "ratio_ops_per_sec")
            );
            assert_eq!(s(p).baseline, Some(s("http").name));
            assert!(t.met(bound) && !t.met(bound * 0.99), "{p}");
        }
        assert_eq!(s("sm").engine, EngineUse::Needle(Tls::Sm));
        assert_eq!(s("tcp").engine, EngineUse::Needle(Tls::Tcp));
        // The volume server serves HTTP on the engine core: the engines sleep meanwhile.
        assert!(s("http").borrows_engine_core && s("http").target.is_none());
        for p in ["http", "tcp", "sm"] {
            assert_eq!(needle_concurrency(s(p).name), Some(n));
            assert_eq!(s(p).bytes_per_sample, 4096);
            // Several reads in flight: out of the latency charts.
            assert_eq!(s(p).pipelined, n > 1, "{}", s(p).name);
        }
        if n > 1 {
            assert_eq!(s("http").baseline, Some("needle.read.4k.http.c1"));
            assert_eq!(s("sm").also_vs, ["needle.read.4k.sm.c1"]);
            assert_eq!(s("tcp").also_vs, ["needle.read.4k.tcp.c1"]);
        }
    }
    assert_eq!(needle_parts("needle.read.4k.sm.c64"), Some(("4k", Some(Tls::Sm))));
    assert_eq!(needle_parts("needle.read.4k.http.c8"), Some(("4k", None)));
    assert_eq!(needle_parts("needle.read.1m.tcp.c2"), Some(("1m", Some(Tls::Tcp))));
    assert_eq!(needle_concurrency("needle.read.4k.sm"), None);
    assert_eq!(needle_concurrency("scale.nop.sessions.c4"), None);
    for bad in [
        "needle.read.4k.sm.c0",
        "needle.read.4k.sm.c",
        "needle.read.4k.sm.c+8",
        "needle.read.4k.sm.cx",
        "needle.read.4k.c8",
        "needle.read.4k.netns.c8",
        "needle.read.4k.netns.http.c8",
    ] {
        assert_eq!(needle_parts(bad), None, "{bad}");
        assert_eq!(needle_concurrency(bad), None, "{bad}");
    }
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

/// The cold scenarios run interleaved with ring.nop (the bystander's p99 against ring.nop's),
/// and the pool holds a part for each ring reader and the HTTP one.
#[test]
fn cold_reads_run_with_ring_nop_from_one_pool() {
    let p = plan(&["ring.nop.beside_cold_reads".into(), "needle.read.cold.1m.tcp".into()]).unwrap();
    assert_eq!(
        names(&p.groups),
        vec![vec![
            "floor.pingpong",
            "ring.nop",
            "needle.read.cold.1m.http",
            "needle.read.cold.1m.tcp",
            "ring.nop.beside_cold_reads"
        ]]
    );
    let t = spec("ring.nop.beside_cold_reads").unwrap().target.unwrap();
    assert_eq!(
        (t.metric, t.describe(), t.key()),
        (Metric::P99Ratio, "<= 2".to_string(), "ratio_p99")
    );
    assert!(t.met(2.0) && !t.met(2.01));
    assert!(is_cold("needle.read.cold.1m.http") && !is_cold("needle.read.1m.tcp"));
    assert_eq!(needle_parts("needle.read.cold.1m.tcp"), None);
    let all: Vec<String> = (0..cold_pool(3)).map(|i| i.to_string()).collect();
    let parts = [cold::Reader::Tcp, cold::Reader::Beside, cold::Reader::Http].map(|r| cold::cold_fids(&all, r));
    assert_eq!(parts.map(<[String]>::len), [96, 96, cold::COLD_HTTP_NEEDLES as usize]);
    assert_eq!(parts.concat(), all, "disjoint, in upload order");
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
                "ring.wake",
                "needle.read.cold.1m.http",
                "needle.read.cold.1m.tcp",
                "ring.nop.beside_cold_reads"
            ],
            vec!["floor.echo_batch32", "ring.nop_batch32", "ring.nop_batch32.go"],
            ucx_rtt_group("sm"),
            ucx_rtt_group("tcp"),
            vec!["ucx.raw_read_bw.sm", "ucx.read_bw.sm"],
            vec!["ucx.raw_read_bw.tcp", "ucx.read_bw.tcp"],
            scale_sessions_group(),
            scale_workers_group(),
            vec!["ring.idle.full.sm"],
            vec!["ring.idle.full.tcp"],
            vec!["store.open.10m"],
            vec![
                "needle.read.4k.http",
                "needle.read.4k.tcp",
                "needle.read.4k.sm",
                "needle.read.4k.local"
            ],
            vec!["needle.read.64k.http", "needle.read.64k.tcp", "needle.read.64k.sm"],
            vec![
                "needle.read.1m.http",
                "needle.read.1m.tcp",
                "needle.read.1m.sm",
                "needle.read.1m.local"
            ],
            vec![
                "needle.read.8m.http",
                "needle.read.8m.tcp",
                "needle.read.8m.sm",
                "needle.read.8m.local"
            ],
            conc_group(),
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
            vec!["needle.read.4k.netns.http", "needle.read.4k.netns"],
            vec!["needle.read.64k.netns.http", "needle.read.64k.netns"],
            vec!["needle.read.1m.netns.http", "needle.read.1m.netns"],
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
    // ucx.am_rtt.tcp: its raw baselines (two workers, one worker), and the NOP its excess is
    // measured in, interleaved.
    let g = plan(&["ucx.am_rtt.tcp".into()]).unwrap().groups;
    assert_eq!(names(&g), vec![ucx_rtt_group("tcp")]);
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
            ucx_rtt_group("sm"),
            ucx_rtt_group("tcp"),
            vec!["ucx.raw_read_bw.sm", "ucx.read_bw.sm"],
            vec!["ucx.raw_read_bw.tcp", "ucx.read_bw.tcp"],
            scale_sessions_group(),
            scale_workers_group(),
            vec!["ring.idle.full.sm"],
            vec!["ring.idle.full.tcp"],
        ]
    );
    let new: Vec<_> = p.skipped[before..].iter().map(|(n, w)| (*n, w.as_str())).collect();
    // The needle scenarios read from Go too; the cold ones run in the group of ring.nop.
    let go = "Go is not installed";
    let mut want = vec![("ring.nop.go", go)];
    want.extend(SPECS.iter().filter(|s| is_cold(s.name)).map(|s| (s.name, go)));
    want.push(("ring.nop_batch32.go", go));
    // It finds weed through ringlat.
    want.push(("store.open.10m", go));
    want.extend(
        SPECS
            .iter()
            .filter(|s| s.needs_weed && !is_cold(s.name))
            .map(|s| (s.name, go)),
    );
    assert_eq!(new, want);
    // Dropping a baseline drops what is compared with it (and runs with it), saying why.
    let mut p = plan(&["ucx.am_rtt.sm".into(), "ring.nop".into()]).unwrap();
    p.skip_where(|s| s.name == "ucx.raw_am_rtt.sm", "test");
    assert_eq!(names(&p.groups), vec![vec!["floor.pingpong", "ring.nop"]]);
    let gone: Vec<&str> = p.skipped.iter().map(|(n, _)| *n).collect();
    assert_eq!(gone, ucx_rtt_group("sm"));
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
        Some(("ratio_bytes_per_sec", ">= 1".to_string()))
    );
    assert_eq!(
        t("needle.read.8m.tcp"),
        Some(("ratio_bytes_per_sec", ">= 1".to_string()))
    );
    assert_eq!(
        t("needle.read.8m.sm"),
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
    assert_eq!(needle_parts("needle.read.4k.netns"), Some(("4k", Some(Tls::Tcp))));
    assert_eq!(needle_parts("needle.read.1m.netns.http"), Some(("1m", None)));
    // Across the namespace pair: the HTTP GET is the baseline, the ring path the subject.
    let g = plan(&["needle.read.64k.netns".into()]).unwrap().groups;
    assert_eq!(
        names(&g),
        vec![vec!["needle.read.64k.netns.http", "needle.read.64k.netns"]]
    );
    assert!(g[0].iter().all(|s| s.netns && s.needs_weed && s.needs_go));
    assert_eq!(
        g[0].iter().map(|s| s.engine).collect::<Vec<_>>(),
        [EngineUse::None, EngineUse::Netns]
    );
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
    // Only the pipelined bandwidth and scaling scenarios and the concurrent needle reads are
    // left out of the latency plot.
    let pipelined: Vec<&str> = SPECS.iter().filter(|s| s.pipelined).map(|s| s.name).collect();
    let mut want = vec![
        "ucx.raw_read_bw.sm",
        "ucx.read_bw.sm",
        "ucx.raw_read_bw.tcp",
        "ucx.read_bw.tcp",
    ];
    want.extend(scale_sessions_group());
    want.extend(scale_workers_group());
    want.extend(conc_group().into_iter().filter(|n| !n.ends_with(".c1")));
    assert_eq!(pipelined, want);
}

#[test]
fn idle_targets_are_one_percent_of_a_core() {
    let idle: Vec<(&str, f64)> = SPECS
        .iter()
        .filter_map(|s| s.idle_cpu_bound.map(|b| (s.name, b)))
        .collect();
    assert_eq!(
        idle,
        vec![
            ("ring.wake", 0.01),
            ("ring.idle.full.sm", 0.01),
            ("ring.idle.full.tcp", 0.01)
        ]
    );
    // The pair starts its own engines and runs in a group of its own.
    let p = plan(&["ring.idle.full.tcp".into()]).unwrap();
    assert_eq!(names(&p.groups), vec![vec!["ring.idle.full.tcp"]]);
    assert_eq!(p.groups[0][0].engine, EngineUse::Own);
}

#[test]
fn store_open_compares_memory_per_needle_with_weed() {
    // Issue 16: a group of its own (it starts its engines and weed itself), its target on the
    // ratio it computes in its details, not on blocks of another scenario.
    let p = plan(&["store.open.10m".into()]).unwrap();
    assert_eq!(names(&p.groups), vec![vec!["store.open.10m"]]);
    let s = spec("store.open.10m").unwrap();
    assert_eq!(s.engine, EngineUse::Own);
    assert!(s.baseline.is_none() && s.needs_go && !s.needs_weed);
    let t = s.target.unwrap();
    assert_eq!(t.metric, Metric::DetailAtMost("memory_per_needle_engine_over_weed"));
    assert_eq!(
        (t.key(), t.describe().as_str()),
        ("memory_per_needle_engine_over_weed", "<= 1")
    );
    assert!(t.met(0.4) && t.met(1.0) && !t.met(1.01));
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
        // A target compares with a baseline's blocks, or numbers the scenario measured itself.
        assert!(
            s.target.is_none() || s.baseline.is_some() || matches!(s.target.unwrap().metric, Metric::DetailAtMost(_)),
            "{}: a target needs a baseline",
            s.name
        );
        // A subject without a target: only the 64 KiB needle reads, the reads across the
        // namespace pair, the 1 MiB S3 GET, the scaling scenarios (the issue names none)
        // and the HTTP reads of several goroutines (compared with one goroutine's), and the
        // cold reads (the disk sets their pace on both paths).
        if s.baseline.is_some() && s.target.is_none() {
            assert!(
                s.name.starts_with("needle.read.64k.")
                    || s.name == "needle.read.cold.1m.tcp"
                    || s.name.starts_with("needle.read.4k.http.c")
                    || s.netns
                    || s.name.starts_with("scale.nop.")
                    || s.name == "s3.get.1m.ring",
                "{}: a subject needs a target",
                s.name
            );
        }
        assert_eq!(
            s.needs_weed,
            s.name.starts_with("needle.read.") || s.front_end.is_some() || is_cold(s.name),
            "{}",
            s.name
        );
        if s.needs_weed {
            assert!(s.needs_go, "{}: the needle scenarios read from Go", s.name);
            assert!(
                needle_parts(s.name).is_some() != (s.front_end.is_some() || is_cold(s.name)),
                "{}",
                s.name
            );
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

impl Fake {
    /// `depth` slots, none busy; the slots in `instant` complete as they start.
    fn new(delay: Duration, depth: usize, instant: Vec<usize>) -> Self {
        Fake {
            delay,
            started: vec![None; depth],
            instant,
            starts: 0,
            completions: 0,
            most_in_flight: 0,
        }
    }
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
    let mut f = Fake::new(Duration::from_micros(200), 4, vec![]);
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
    let mut f = Fake::new(Duration::from_micros(50), 3, vec![1]);
    let mut h = crate::stats::new_histogram();
    let run = pipelined_loop(timing, &mut h, 3, &mut f).unwrap();
    assert_eq!(f.starts, f.completions);
    assert_eq!(h.len(), run.samples);
    assert!(run.samples > 0);
}
