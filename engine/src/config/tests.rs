//! Tests of the configuration: parsing, validation messages (golden files), defaults.

use super::*;

#[test]
fn embedded_default_equals_code_defaults() {
    assert_eq!(Config::embedded(), Config::default());
    Config::default().validate(&[0, 1]).unwrap();
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let e = Config::parse("[workers]\nidle-spin = 5\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("idle-spin"), "{e}");
    assert!(e.contains("idle-spin-us"), "should list the valid keys: {e}");
}

#[test]
fn missing_core_is_refused_with_key_and_fix() {
    let c = Config::parse("[workers]\ncores = [7]\n", "t.toml").unwrap();
    let e = c.validate(&[0, 1]).unwrap_err().to_string();
    assert_eq!(e, "config key workers.cores: core 7 does not exist or this process may not run on it (allowed: 0,1); list only allowed cores");
}

#[test]
fn ring_sizes_must_be_powers_of_two() {
    let c = Config::parse("[memory]\nsq-entries = 100\n", "t.toml").unwrap();
    let e = c.validate(&[0]).unwrap_err().to_string();
    assert!(
        e.starts_with("config key memory.sq-entries: 100 is not a power of two"),
        "{e}"
    );
}

#[test]
fn bad_hugepage_policy_names_choices() {
    let e = Config::parse("[memory]\nhugepages = \"always\"\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("require") && e.contains("prefer") && e.contains("off"),
        "{e}"
    );
}

#[test]
fn seaweedfs_section_parses_validates_and_round_trips() {
    let dir = std::env::temp_dir();
    let text = format!(
        "[seaweedfs]\ndirectories = [{d:?}]\nidx-directories = [{d:?}]\nidx-entry-size = 17\nrefresh-interval-ms = 250\nverify-crc = false\n",
        d = dir.display().to_string()
    );
    let c = Config::parse(&text, "t.toml").unwrap();
    assert_eq!(c.seaweedfs.directories.as_slice(), std::slice::from_ref(&dir));
    assert_eq!(c.seaweedfs.idx_entry_size, IdxEntrySize::Fixed(17));
    assert_eq!((c.seaweedfs.refresh_interval_ms, c.seaweedfs.verify_crc), (250, false));
    c.validate(&[0]).unwrap();
    let back = Config::parse(&toml::to_string(&c).unwrap(), "back.toml").unwrap();
    assert_eq!(back, c);
    let auto = Config::parse("[seaweedfs]\nidx-entry-size = \"auto\"\n", "t.toml").unwrap();
    assert_eq!(auto.seaweedfs.idx_entry_size, IdxEntrySize::Auto);
    assert_eq!(
        toml::Value::try_from(&auto).unwrap()["seaweedfs"]["idx-entry-size"].as_str(),
        Some("auto")
    );
    let e = Config::parse("[seaweedfs]\nrefresh-interval-ms = 0\n", "t.toml")
        .unwrap()
        .validate(&[0])
        .unwrap_err();
    assert!(
        e.to_string().starts_with("config key seaweedfs.refresh-interval-ms:"),
        "{e}"
    );
    let e = Config::parse(
        &format!("[seaweedfs]\nidx-directories = [{:?}]\n", dir.display().to_string()),
        "t.toml",
    )
    .unwrap()
    .validate(&[0])
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("config key seaweedfs.idx-directories: set while"),
        "{e}"
    );
}

#[test]
fn io_threads_and_cores_are_checked_and_default_to_cores_workers_leave() {
    let c = Config::parse("[seaweedfs]\nio-threads = 3\nio-cores = [0, 2]\n", "t.toml").unwrap();
    assert_eq!((c.seaweedfs.io_threads, c.io_cores(&[0, 1, 2])), (3, vec![0, 2]));
    c.validate(&[0, 1, 2]).unwrap();
    let e = c.validate(&[0, 1]).unwrap_err().to_string();
    assert!(
        e.starts_with("config key seaweedfs.io-cores: core 2 does not exist"),
        "{e}"
    );
    for (text, key) in [
        ("io-threads = 0", "seaweedfs.io-threads"),
        ("io-threads = 100000", "seaweedfs.io-threads"),
        ("io-cores = []", "seaweedfs.io-cores"),
    ] {
        let e = Config::parse(&format!("[seaweedfs]\n{text}\n"), "t.toml")
            .unwrap()
            .validate(&[0])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("config key {key}:")), "{text}: {e}");
    }
    // Unset: the cores no worker is pinned to; all of them when workers take every core.
    let d = Config::default();
    assert_eq!(d.io_cores(&[0, 1, 2, 3]), vec![0, 1, 2]);
    assert_eq!(d.io_cores(&[5]), vec![5]);
}

#[test]
fn default_core_is_last_allowed() {
    assert_eq!(Config::default().worker_cores(&[0, 1, 3]), vec![3]);
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Every example configuration shipped in the repository parses and validates (on a
/// machine with enough cores for the cores it lists).
#[test]
fn every_shipped_example_parses_and_validates() {
    let mut files = vec![repo_file("engine/engine.example.toml")];
    let mut deploy: Vec<PathBuf> = std::fs::read_dir(repo_file("deploy"))
        .expect("deploy/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    deploy.sort();
    assert!(!deploy.is_empty(), "deploy/ ships an example config");
    files.extend(deploy);
    let cpus: Vec<usize> = (0..64).collect();
    for f in files {
        let c = Config::load(&f).unwrap_or_else(|e| panic!("{e}"));
        c.validate(&cpus).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

/// Golden tests: each `testdata/config-golden/NAME.toml` is refused with exactly the
/// message in `NAME.err` (validated as on a machine whose allowed cores are 0 and 1).
/// `UPDATE_GOLDEN=1 cargo test -p engine golden` rewrites the .err files.
#[test]
fn golden_invalid_configs_give_their_documented_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config-golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing in {}", dir.display());
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&case).unwrap();
        let got = match Config::parse(&text, &name).and_then(|c| c.validate(&[0, 1])) {
            Ok(()) => format!("(accepted: {name} should be refused)"),
            Err(e) => e.to_string(),
        };
        let err_file = case.with_extension("err");
        if update {
            std::fs::write(&err_file, format!("{got}\n")).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&err_file).unwrap_or_default();
        if want.strip_suffix('\n').unwrap_or(&want) != got {
            failures.push(format!("{name}:\n  want: {want:?}\n  got:  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
