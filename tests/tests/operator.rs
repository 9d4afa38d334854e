//! Operator-facing surfaces of the real engine binary: the Prometheus endpoint (scraped and
//! parsed as the text exposition format), `engine status` against live sessions, and SIGHUP
//! reloading. Counters are compared exactly with the requests each test made; nothing here
//! depends on timing beyond the harness's generous wait-until bounds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use integration_tests::{engine_binary, nop, wait, wait_until, Engine, PATIENCE};
use nix::sys::signal::Signal;
use ring_client::Session;
use ring_proto::{opcode, Sqe};

/// Submits `n` NOPs one batch at a time and reaps all their completions.
fn nops(s: &mut Session, n: u64) {
    for i in 0..n {
        s.submit(&nop(i)).unwrap();
        assert_eq!(wait(s).result, 0);
    }
}

// ---- a small parser of the Prometheus text exposition format (version 0.0.4) ----

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses an exposition; panics (with the line) on anything the format does not allow,
/// including samples of a family whose `# TYPE` was not declared before them, and families
/// declared twice.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.splitn(2, ' ');
            let (name, kind) = (p.next().unwrap(), p.next().expect("TYPE has a kind"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} declared twice"
            );
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "bad comment line {line:?}");
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("sample without value: {line:?}"),
        };
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = chars.peek().expect("unterminated labels").0;
                let mut eq = None;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(i);
                        break;
                    }
                }
                let key = &r[start..eq.expect("label without =")];
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "label value not quoted: {line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value").1 {
                        '\\' => match chars.next().expect("dangling escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line:?}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key.to_string(), value);
                match chars.next().expect("unterminated labels") {
                    (_, ',') => continue,
                    (i, '}') => {
                        end = i + 1;
                        break;
                    }
                    (_, c) => panic!("unexpected {c:?} in labels of {line:?}"),
                }
            }
            rest = &r[end..];
        }
        let value = rest.trim();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let family = types
            .keys()
            .find(|f| {
                name == f.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("sample {name} before its # TYPE"));
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "counter {name} must end in _total");
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

#[test]
fn exposition_parser_reads_labels_escapes_and_rejects_undeclared_samples() {
    let s = parse_exposition(
        "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"w\",z=\"1\"} 3\n# TYPE g gauge\ng 1.5\n",
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].labels["k"], "v\"w");
    assert_eq!(s[0].labels["z"], "1");
    assert_eq!(s[1].value, 1.5);
    let undeclared = std::panic::catch_unwind(|| parse_exposition("x 1\n"));
    assert!(undeclared.is_err());
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one sample {name}{labels:?}, found {found:?}");
    found[0].value
}

/// The address the engine logged for its metrics endpoint (it was started on port 0).
fn metrics_addr(engine: &Engine) -> String {
    engine.wait_for_log("metrics endpoint listening");
    let log = engine.log();
    let line = log.lines().find(|l| l.contains("metrics endpoint listening")).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    addr.to_string()
}

/// One HTTP/1.1 GET; returns (status code, content type, body).
fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics endpoint");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("header end");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "Content-Length matches the body");
    (status, ctype, body.to_string())
}

fn scrape(addr: &str) -> Vec<Sample> {
    let (status, ctype, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    parse_exposition(&body)
}

#[test]
fn metrics_endpoint_counts_exactly_the_requests_made() {
    let engine = Engine::start(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&engine);
    let mut a = engine.connect();
    let mut b = engine.connect();
    let (ida, idb) = (a.session_id().to_string(), b.session_id().to_string());
    let worker = a.worker().to_string();
    assert_eq!(worker, b.worker().to_string(), "one worker serves both");
    // The harness's readiness probe opened and closed a session: wait until it is gone.
    wait_until(
        "2 open sessions in the metrics",
        || value(&scrape(&addr), "seaweed_ring_sessions_open", &[]) == 2.0,
        || engine.log(),
    );

    nops(&mut a, 100);
    nops(&mut b, 50);
    // Two bad entries on b: an unknown opcode and a FILL outside the buffer.
    b.submit(&Sqe {
        opcode: 200,
        user_data: 1,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(wait(&mut b).result, ring_proto::ResultCode::UnknownOpcode as i32);
    let past_end = b.buffer().len() as u64;
    b.submit(&Sqe {
        opcode: opcode::FILL,
        user_data: 2,
        buf_offset: past_end,
        buf_len: 4096,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(wait(&mut b).result, ring_proto::ResultCode::OutOfBounds as i32);
    // Three completions b leaves unreaped: the CQ occupancy shows them.
    {
        let mut q = b.submission();
        for i in 0..3 {
            q.push(&nop(1000 + i)).unwrap();
        }
    }
    wait_until(
        "the 3 unreaped completions to be posted",
        || {
            value(
                &scrape(&addr),
                "seaweed_ring_session_completed_total",
                &[("session", &idb)],
            ) == 55.0
        },
        || engine.log(),
    );

    let m = scrape(&addr);
    let w = [("worker", worker.as_str())];
    assert_eq!(value(&m, "seaweed_ring_worker_submitted_total", &w), 155.0);
    assert_eq!(value(&m, "seaweed_ring_worker_completed_total", &w), 155.0);
    assert_eq!(value(&m, "seaweed_ring_worker_errors_total", &w), 2.0);
    assert_eq!(value(&m, "seaweed_ring_worker_cq_full_total", &w), 0.0);
    assert_eq!(value(&m, "seaweed_ring_worker_sessions", &w), 2.0);
    let core = integration_tests::engine_core().to_string();
    assert_eq!(
        value(&m, "seaweed_ring_worker_info", &[("worker", &worker), ("core", &core)]),
        1.0
    );
    for (kind, n) in [
        ("unknown-opcode", 1.0),
        ("out-of-bounds", 1.0),
        ("invalid-entry", 0.0),
        ("other", 0.0),
    ] {
        assert_eq!(
            value(
                &m,
                "seaweed_ring_worker_errors_by_kind_total",
                &[("worker", &worker), ("kind", kind)]
            ),
            n,
            "{kind}"
        );
    }
    // Sleeps and wakeups exist per worker (their values depend on timing).
    let sleeps = value(&m, "seaweed_ring_worker_sleeps_total", &w);
    let wakeups = value(&m, "seaweed_ring_worker_wakeups_total", &w);
    assert!(wakeups <= sleeps, "wakeups {wakeups} <= sleeps {sleeps}");

    let sa = [("session", ida.as_str())];
    let sb = [("session", idb.as_str())];
    assert_eq!(value(&m, "seaweed_ring_session_submitted_total", &sa), 100.0);
    assert_eq!(value(&m, "seaweed_ring_session_completed_total", &sa), 100.0);
    assert_eq!(value(&m, "seaweed_ring_session_errors_total", &sa), 0.0);
    assert_eq!(value(&m, "seaweed_ring_session_submitted_total", &sb), 55.0);
    assert_eq!(value(&m, "seaweed_ring_session_errors_total", &sb), 2.0);
    assert_eq!(
        value(
            &m,
            "seaweed_ring_session_errors_by_kind_total",
            &[("session", &idb), ("kind", "out-of-bounds")]
        ),
        1.0
    );
    assert!(
        !m.iter()
            .any(|s| s.name == "seaweed_ring_session_errors_by_kind_total" && s.labels["session"] == ida),
        "a session without errors has no error series"
    );
    assert_eq!(value(&m, "seaweed_ring_session_cq_used", &sb), 3.0);
    assert_eq!(value(&m, "seaweed_ring_session_cq_used", &sa), 0.0);
    assert_eq!(value(&m, "seaweed_ring_session_sq_pending", &sb), 0.0);
    assert_eq!(
        value(&m, "seaweed_ring_session_cq_capacity", &sb),
        b.layout().cq_entries as f64
    );
    let pid = std::process::id().to_string();
    assert_eq!(
        value(
            &m,
            "seaweed_ring_session_info",
            &[("session", &ida), ("client_pid", &pid), ("state", "ready")]
        ),
        1.0
    );
    assert_eq!(value(&m, "seaweed_ring_sessions_open", &[]), 2.0);

    // Reaping the three empties the CQ; closing a session removes its series.
    for _ in 0..3 {
        wait(&mut b);
    }
    assert!(a.close().unwrap().is_empty());
    wait_until(
        "session a to leave the metrics",
        || {
            let m = scrape(&addr);
            !m.iter().any(|s| s.labels.get("session") == Some(&ida))
                && value(&m, "seaweed_ring_session_cq_used", &sb) == 0.0
        },
        || engine.log(),
    );
    let m = scrape(&addr);
    assert_eq!(value(&m, "seaweed_ring_sessions_open", &[]), 1.0);
    // Worker totals keep what closed sessions did.
    assert_eq!(value(&m, "seaweed_ring_worker_submitted_total", &w), 155.0);

    // Only GET /metrics is served.
    assert_eq!(http_get(&addr, "/").0, 404);
    assert_eq!(http_get(&addr, "/metrics/extra").0, 404);
    let (status, ..) = {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        // Connection: close, as every request here: HTTP/1.1 connections persist otherwise.
        write!(
            s,
            "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        (r.split_whitespace().nth(1).unwrap().to_string(), ())
    };
    assert_eq!(status, "405");
    drop(b);
    let (status, log) = engine.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn metrics_are_off_by_default() {
    let engine = Engine::start(&[]);
    let log = engine.log();
    assert!(!log.contains("metrics endpoint"), "{log}");
}

/// Runs `engine status` with `args`; returns stdout (panics with stderr on failure).
fn engine_status(engine: &Engine, args: &[&str]) -> String {
    let out = Command::new(engine_binary())
        .arg("status")
        .arg("--socket")
        .arg(&engine.socket)
        .args(args)
        .output()
        .expect("run engine status");
    assert!(
        out.status.success(),
        "engine status failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        engine.log()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The last two cores this process may use, or the one it has.
fn two_cores() -> String {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cores: Vec<String> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    cores[cores.len().saturating_sub(2)..].join(",")
}

#[test]
fn status_reports_workers_sessions_and_counters_of_a_running_engine() {
    let cores = two_cores();
    let engine = Engine::start(&["--cores", &cores]);
    let cores: Vec<u64> = cores.split(',').map(|c| c.parse().unwrap()).collect();
    let mut a = engine.connect();
    let mut b = engine.connect();
    engine.wait_live_sessions(2);
    nops(&mut a, 7);
    nops(&mut b, 11);

    let json: serde_json::Value = serde_json::from_str(&engine_status(&engine, &["--json"])).unwrap();
    let e = &json["engine"];
    assert_eq!(e["pid"], engine.pid());
    assert_eq!(e["sessions_open"], 2);
    assert_eq!(e["socket"], engine.socket.display().to_string());
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(
        workers.iter().map(|w| w["core"].as_u64().unwrap()).collect::<Vec<_>>(),
        cores,
        "one worker per configured core, in order"
    );
    let sessions = json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{json:#}");
    let me = std::process::id();
    for (s, n) in [(&a, 7), (&b, 11)] {
        let j = sessions
            .iter()
            .find(|j| j["id"] == s.session_id())
            .unwrap_or_else(|| panic!("session {} missing: {json:#}", s.session_id()));
        assert_eq!(j["client_pid"], me);
        assert_eq!(j["worker"], s.worker());
        assert_eq!(j["state"], "ready");
        assert_eq!(j["submitted"], n);
        assert_eq!(j["completed"], n);
        assert_eq!(j["errors"], 0);
        assert_eq!(j["sq_pending"], 0);
        assert_eq!(j["cq_used"], 0);
        assert_eq!(j["sq_entries"], s.layout().sq_entries);
        assert_eq!(j["backing"], "normal-pages");
    }
    // Worker totals are the sum of what their sessions did (the probe session did nothing).
    let total: u64 = workers.iter().map(|w| w["submitted"].as_u64().unwrap()).sum();
    assert_eq!(total, 18);
    let placed: u64 = workers.iter().map(|w| w["sessions"].as_u64().unwrap()).sum();
    assert_eq!(placed, 2);
    if cores.len() == 2 {
        assert_ne!(a.worker(), b.worker(), "sessions spread over both workers");
    }

    // The table names the same sessions.
    let table = engine_status(&engine, &[]);
    assert!(table.starts_with(&format!("engine pid {}", engine.pid())), "{table}");
    for (s, n) in [(&a, 7), (&b, 11)] {
        let row = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.len() == 13 && c[0] == s.session_id().to_string())
            .unwrap_or_else(|| panic!("no row for session {}:\n{table}", s.session_id()));
        assert_eq!(row[1], me.to_string());
        assert_eq!(row[3], "ready");
        assert_eq!(row[8], n.to_string());
    }

    // Status connections never become sessions.
    let opened = engine.log().matches("session opened").count();
    let again: serde_json::Value = serde_json::from_str(&engine_status(&engine, &["--json"])).unwrap();
    assert_eq!(again["engine"]["sessions_open"], 2);
    assert_eq!(engine.log().matches("session opened").count(), opened);
    let added: u64 = again["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["sessions_opened"].as_u64().unwrap())
        .sum();
    assert_eq!(added, 3, "the probe session and a, b");
}

#[test]
fn status_without_an_engine_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(engine_binary())
        .args(["status", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the engine at"), "{err}");
}

fn write_config(path: &std::path::Path, level: &str, lease_ms: u32) {
    std::fs::write(
        path,
        format!("[log]\nlevel = \"{level}\"\n\n[sessions]\nlease-ms = {lease_ms}\n"),
    )
    .unwrap();
}

#[test]
fn sighup_reloads_the_log_level_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("engine.toml");
    write_config(&cfg, "info", 15000);
    let engine = Engine::start_with_env(&["--config", cfg.to_str().unwrap()], &[("RUST_LOG", None)]);
    assert!(!engine.log().contains("log filter in effect"));

    write_config(&cfg, "debug", 30000);
    engine.signal(Signal::SIGHUP);
    engine.wait_for_log("SIGHUP: log level reloaded");
    // The debug line written right after the reload shows the new filter is in effect.
    engine.wait_for_log("log filter in effect");
    engine.wait_for_log("only take effect after a restart");
    let log = engine.log();
    let reload = log.lines().find(|l| l.contains("log level reloaded")).unwrap();
    assert!(reload.contains("from=info") && reload.contains("to=debug"), "{reload}");
    let restart = log.lines().find(|l| l.contains("after a restart")).unwrap();
    assert!(restart.contains("keys=sessions.lease-ms"), "{restart}");

    // A broken file is refused; the engine keeps serving with what it has.
    std::fs::write(&cfg, "[log]\nlevel = \"infoo\"\n").unwrap();
    engine.signal(Signal::SIGHUP);
    engine.wait_for_log("SIGHUP: config not reloaded");
    let log = engine.log();
    let refused = log.lines().find(|l| l.contains("config not reloaded")).unwrap();
    assert!(refused.contains("config key log.level"), "{refused}");
    let mut s = engine.connect();
    nops(&mut s, 1);
    drop(s);
    let (status, log) = engine.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn sighup_says_what_it_cannot_reload() {
    // Embedded default: no file to re-read.
    let engine = Engine::start(&[]);
    engine.signal(Signal::SIGHUP);
    engine.wait_for_log("nothing to reload");

    // RUST_LOG (set by the harness) fixes the filter: a changed log.level is not applied.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("engine.toml");
    write_config(&cfg, "info", 15000);
    let engine = Engine::start(&["--config", cfg.to_str().unwrap()]);
    write_config(&cfg, "debug", 15000);
    engine.signal(Signal::SIGHUP);
    engine.wait_for_log("RUST_LOG sets the log filter; not applied");
    assert!(!engine.log().contains("log level reloaded"));
}

#[test]
fn sighup_serves_new_seaweedfs_directories_and_status_and_metrics_show_their_volumes() {
    use seaweed_format::writer::{needle, VolumeWriter};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut v1 = VolumeWriter::create(&a, "", 1, 3, 16).unwrap();
    for i in 1..=5 {
        v1.write(&needle(i, 7, b"needle")).unwrap();
    }
    v1.delete(5, 7).unwrap();
    let mut v2 = VolumeWriter::create(&b, "photos", 2, 3, 16).unwrap();
    v2.write(&needle(1, 7, b"other")).unwrap();
    let cfg = dir.path().join("engine.toml");
    let write = |dirs: &[&std::path::Path]| {
        let list: Vec<String> = dirs.iter().map(|d| format!("{:?}", d.to_str().unwrap())).collect();
        std::fs::write(
            &cfg,
            format!(
                "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[seaweedfs]\ndirectories = [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
    };
    write(&[&a]);
    let engine = Engine::start(&["--config", cfg.to_str().unwrap()]);
    // Volumes are indexed in the background after start (and appear once indexed).
    wait_until(
        "the volume indexed",
        || engine.status_json()["volume_indexing"]["done"] == true,
        || engine.log(),
    );
    let addr = metrics_addr(&engine);
    let m = scrape(&addr);
    assert_eq!(
        value(
            &m,
            "seaweed_ring_volume_needles",
            &[("volume", "1"), ("collection", "")]
        ),
        4.0
    );
    assert_eq!(
        value(&m, "seaweed_ring_volume_deleted_needles", &[("volume", "1")]),
        1.0
    );
    assert!(m
        .iter()
        .all(|s| s.labels.get("volume").map(String::as_str) != Some("2")));

    // The operator adds a directory and sends SIGHUP: its volumes are served, no restart.
    write(&[&a, &b]);
    engine.signal(Signal::SIGHUP);
    engine.wait_for_log("SIGHUP: seaweedfs settings reloaded");
    let m = scrape(&addr);
    assert_eq!(
        value(
            &m,
            "seaweed_ring_volume_needles",
            &[("volume", "2"), ("collection", "photos")]
        ),
        1.0
    );
    let table = engine_status(&engine, &[]);
    assert!(
        table.contains("VOLUMES (SeaweedFS)") && table.contains("photos"),
        "{table}"
    );
    let st = engine.status_json();
    let vols = st["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 2, "{st}");
    // Removing it again stops serving it.
    write(&[&a]);
    engine.signal(Signal::SIGHUP);
    integration_tests::wait_until(
        "volume 2 dropped",
        || engine.status_json()["volumes"].as_array().unwrap().len() == 1,
        || engine.log(),
    );
    let (status, log) = engine.terminate();
    assert!(status.success(), "{log}");
}

/// An engine process killed when dropped (also when the test fails first).
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the engine binary from `cwd` with `args` (worker on the harness's core, normal pages),
/// its output into `log`.
fn spawn_engine_in(cwd: &std::path::Path, args: &[&str], log: &std::path::Path) -> Spawned {
    Spawned(
        Command::new(engine_binary())
            .current_dir(cwd)
            .args(args)
            .args([
                "--cores",
                &integration_tests::engine_core().to_string(),
                "--hugepages",
                "off",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits until an engine serves `socket`, then makes a NOP round trip there.
fn serves_at(socket: &std::path::Path, log: &std::path::Path) {
    let mut s = None;
    wait_until(
        &format!("an engine serving {}", socket.display()),
        || {
            s = Session::connect(socket, Default::default()).ok();
            s.is_some()
        },
        || std::fs::read_to_string(log).unwrap_or_default(),
    );
    nops(s.as_mut().unwrap(), 1);
}

/// A relative path in a config file names a file beside the config file, wherever the engine
/// is started from (it failed with "cannot create the control socket directory : ..."); a
/// relative `--socket` is relative to the working directory; `check-config` prints the paths
/// resolved.
#[test]
fn relative_paths_resolve_against_the_config_file_and_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("engine.toml");
    std::fs::write(&cfg, "[control]\nsocket = \"run/engine.sock\"\n").unwrap();
    let log = dir.path().join("engine.log");
    let beside = dir.path().join("run/engine.sock");
    let engine = spawn_engine_in(std::path::Path::new("/"), &["--config", cfg.to_str().unwrap()], &log);
    serves_at(&beside, &log);
    drop(engine);

    let engine = spawn_engine_in(dir.path(), &["--socket", "cli.sock"], &log);
    serves_at(&dir.path().join("cli.sock"), &log);
    drop(engine);

    let out = Command::new(engine_binary())
        .current_dir("/")
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("socket = {:?}", beside.to_str().unwrap())),
        "{text}"
    );
}

/// `check-config` checks a file away from the host it is for: what the host must offer (here
/// a core no machine has) is a warning naming the key, not an error; `--this-host` and the
/// engine itself still refuse it. The shipped production example checks anywhere.
#[test]
fn check_config_separates_the_file_from_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("engine.toml");
    std::fs::write(&cfg, "[workers]\ncores = [4095]\n").unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(engine_binary())
            .arg("check-config")
            .args(args)
            .arg(&cfg)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: on this host: config key workers.cores: core 4095"),
        "{err}"
    );
    let (code, err) = check(&["--this-host"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("error: on this host: config key workers.cores"), "{err}");
    // The engine refuses to start (no --cores here: the file's cores count).
    let log = dir.path().join("engine.log");
    let socket = dir.path().join("engine.sock");
    let mut engine = Command::new(engine_binary())
        .args(["--config", cfg.to_str().unwrap(), "--socket", socket.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(!integration_tests::wait_child(&mut engine).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("config key workers.cores: core 4095"), "{text}");
    // A mistake in the file itself is still an error.
    std::fs::write(&cfg, "[workers]\ncores = [1, 1]\n").unwrap();
    let (code, err) = check(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("core 1 is listed twice"), "{err}");

    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/engine.toml");
    let out = Command::new(engine_binary())
        .arg("check-config")
        .arg(&deploy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
