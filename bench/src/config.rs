//! `--config FILE`: the CPU placement of the operator's engine configuration (the TOML file
//! the engine reads with `engine --config FILE`).
//!
//! The bench takes only `[workers] cores` from it. Everything else in the file is the engine's
//! business and is not checked here (`engine check-config FILE` does that); the engines the
//! bench starts get their cores from it and nothing else (see bench/README.md, "Cores").

use std::path::{Path, PathBuf};

use crate::Result;

/// What the bench read from an engine configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    pub path: PathBuf,
    /// `workers.cores`, in the order the file lists them; `None` when the key is absent
    /// (the engine's default: one worker on the last core it may run on).
    pub cores: Option<Vec<usize>>,
}

/// Reads `workers.cores` from the engine configuration at `path`.
pub fn load(path: &Path) -> Result<OperatorConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let cores = worker_cores(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
    Ok(OperatorConfig {
        path: path.to_owned(),
        cores,
    })
}

/// `workers.cores` of a configuration's text. Errors name the key, as the engine's do.
pub fn worker_cores(text: &str) -> std::result::Result<Option<Vec<usize>>, String> {
    let doc: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let Some(workers) = doc.get("workers") else {
        return Ok(None);
    };
    let workers = workers
        .as_table()
        .ok_or("config key workers: expected a table ([workers])")?;
    let Some(cores) = workers.get("cores") else {
        return Ok(None);
    };
    const SHAPE: &str = "config key workers.cores: expected a list of CPU numbers, e.g. cores = [2, 3]";
    let list = cores.as_array().ok_or(SHAPE)?;
    if list.is_empty() {
        return Err("config key workers.cores: the list is empty; list at least one core, or remove the key".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let c = v.as_integer().and_then(|i| usize::try_from(i).ok()).ok_or(SHAPE)?;
        if out.contains(&c) {
            return Err(format!("config key workers.cores: core {c} is listed twice"));
        }
        out.push(c);
    }
    Ok(Some(out))
}

/// Where the bench runs its threads and its engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The measuring (client) thread.
    pub client: usize,
    /// The worker of every engine the bench starts (one worker each), and the floors' peer.
    pub engine: usize,
    /// Cores for `scale.nop.workers.N` (an engine with N workers takes the first N): the
    /// engine core first, then the configured worker cores (in the file's order) or, without
    /// a config, the other allowed CPUs from the highest down; never the client core.
    pub worker_cores: Vec<usize>,
    /// Where the choice came from, for the report.
    pub source: String,
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// Chooses the cores. `allowed`: the CPUs this process may use; `config`: `workers.cores` of
/// `--config` (`None` without one or without the key); `client_flag`/`engine_flag`:
/// `--client-core`/`--engine-core`, which override everything else.
///
/// Engine core: `--engine-core`, else the first core of `workers.cores`, else the highest
/// allowed CPU (the engine's own default), skipping the client core if `--client-core`
/// names it. Client core: `--client-core`, else the highest
/// allowed CPU that is neither the engine core nor in `workers.cores`.
pub fn place(
    allowed: &[usize],
    config: Option<(&Path, &[usize])>,
    client_flag: Option<usize>,
    engine_flag: Option<usize>,
) -> std::result::Result<Placement, String> {
    let mut allowed = allowed.to_vec();
    allowed.sort_unstable();
    allowed.dedup();
    let configured: &[usize] = config.map_or(&[], |(_, c)| c);
    if let Some((path, cores)) = config {
        if let Some(c) = cores.iter().find(|c| !allowed.contains(c)) {
            return Err(format!(
                "--config {}: config key workers.cores: core {c} does not exist or this process may not run on it (allowed: {}); list only allowed cores",
                path.display(),
                cpu_list(&allowed)
            ));
        }
    }
    for (flag, c) in [("--client-core", client_flag), ("--engine-core", engine_flag)] {
        if let Some(c) = c {
            if !allowed.contains(&c) {
                return Err(format!(
                    "{flag} {c}: this process may not run on CPU {c} (allowed: {})",
                    cpu_list(&allowed)
                ));
            }
        }
    }
    let not_client = |c: &&usize| Some(**c) != client_flag;
    let Some(engine) = engine_flag
        .or_else(|| configured.iter().find(not_client).copied())
        .or_else(|| allowed.iter().rev().find(not_client).copied())
    else {
        return Err("this process may run on no CPU at all".into());
    };
    let client = match client_flag {
        Some(c) => c,
        None => match allowed
            .iter()
            .rev()
            .find(|c| **c != engine && !configured.contains(c))
        {
            Some(&c) => c,
            None if config.is_some() => {
                return Err(format!(
                    "--config {}: config key workers.cores lists every CPU this process may use ({}): none is left for the bench's client thread; pass --client-core N (or run the bench on more CPUs)",
                    config.map_or(String::new(), |(p, _)| p.display().to_string()),
                    cpu_list(&allowed)
                ))
            }
            None => {
                return Err(format!(
                    "the bench needs two CPUs (allowed here: {}); pass --client-core and --engine-core",
                    cpu_list(&allowed)
                ))
            }
        },
    };
    if client == engine {
        return Err(format!(
            "--client-core and --engine-core are both {client}; they must differ"
        ));
    }
    let rest: Vec<usize> = if config.is_some() {
        configured.to_vec()
    } else {
        allowed.iter().rev().copied().collect()
    };
    let mut worker_cores = vec![engine];
    worker_cores.extend(rest.into_iter().filter(|c| *c != engine && *c != client));
    let source = match (config, client_flag.is_some() || engine_flag.is_some()) {
        (Some((p, _)), false) => format!("--config {} (workers.cores)", p.display()),
        (Some((p, _)), true) => format!("--config {} (workers.cores), overridden by flags", p.display()),
        (None, true) => "flags".to_string(),
        (None, false) => "default".to_string(),
    };
    Ok(Placement {
        client,
        engine,
        worker_cores,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_cores_are_read_and_checked() {
        let example = include_str!("../../engine/engine.example.toml");
        // The shipped example leaves the key commented out: the engine's default.
        assert_eq!(worker_cores(example), Ok(None));
        assert_eq!(worker_cores(""), Ok(None));
        assert_eq!(
            worker_cores("[workers]\ncores = [2, 3]\nidle-spin-us = 5\n[control]\nmax-sessions = 4\n"),
            Ok(Some(vec![2, 3]))
        );
        assert_eq!(worker_cores("[workers]\ncores = [3, 1]\n"), Ok(Some(vec![3, 1])));
        for bad in [
            "[workers]\ncores = 2\n",
            "[workers]\ncores = [\"2\"]\n",
            "[workers]\ncores = [-1]\n",
        ] {
            let e = worker_cores(bad).unwrap_err();
            assert!(e.starts_with("config key workers.cores: expected a list"), "{bad}: {e}");
        }
        assert!(worker_cores("[workers]\ncores = []\n")
            .unwrap_err()
            .contains("the list is empty"));
        assert!(worker_cores("[workers]\ncores = [1, 1]\n")
            .unwrap_err()
            .contains("listed twice"));
        assert!(worker_cores("workers = 3\n")
            .unwrap_err()
            .contains("config key workers:"));
        assert!(worker_cores("[workers\n").unwrap_err().starts_with("not valid TOML"));
    }

    #[test]
    fn load_names_the_file() {
        let e = load(Path::new("/nonexistent/engine.toml")).unwrap_err().to_string();
        assert!(e.starts_with("--config /nonexistent/engine.toml: "), "{e}");
        let dir = std::env::temp_dir().join(format!("bench-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("engine.toml");
        std::fs::write(&f, "[workers]\ncores = [1, \"x\"]\n").unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("engine.toml: config key workers.cores"), "{e}");
        std::fs::write(&f, "[workers]\ncores = [1]\n").unwrap();
        assert_eq!(load(&f).unwrap().cores, Some(vec![1]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placement_follows_config_then_flags() {
        let p = Path::new("e.toml");
        // No config, no flags: the two highest CPUs; workers from the engine core down.
        let d = place(&[0, 1], None, None, None).unwrap();
        assert_eq!((d.client, d.engine, d.worker_cores.clone()), (0, 1, vec![1]));
        assert_eq!(d.source, "default");
        let d = place(&[0, 1, 2, 3], None, None, None).unwrap();
        assert_eq!((d.client, d.engine, d.worker_cores), (2, 3, vec![3, 1, 0]));
        // Config: the engine on the first listed core, the client on the highest core not
        // listed; workers on the listed cores in their order.
        let c = place(&[0, 1, 2, 3], Some((p, &[2, 3])), None, None).unwrap();
        assert_eq!((c.client, c.engine, c.worker_cores.clone()), (1, 2, vec![2, 3]));
        assert_eq!(c.source, "--config e.toml (workers.cores)");
        let c = place(&[0, 1], Some((p, &[1])), None, None).unwrap();
        assert_eq!((c.client, c.engine, c.worker_cores), (0, 1, vec![1]));
        let c = place(&[0, 1, 2, 3], Some((p, &[0])), None, None).unwrap();
        assert_eq!((c.client, c.engine), (3, 0));
        // Flags override the file.
        let f = place(&[0, 1, 2, 3], Some((p, &[2, 3])), Some(0), Some(3)).unwrap();
        assert_eq!((f.client, f.engine, f.worker_cores.clone()), (0, 3, vec![3, 2]));
        assert!(f.source.ends_with("overridden by flags"), "{}", f.source);
        // A client flag on a listed core takes that core away from the workers.
        let f = place(&[0, 1, 2, 3], Some((p, &[2, 3])), Some(3), None).unwrap();
        assert_eq!((f.client, f.engine, f.worker_cores), (3, 2, vec![2]));
        // --engine-core alone: the client moves out of its way.
        let f = place(&[0, 1], None, None, Some(0)).unwrap();
        assert_eq!((f.client, f.engine), (1, 0));
    }

    #[test]
    fn placement_errors_name_the_key_or_flag() {
        let p = Path::new("e.toml");
        let e = place(&[0, 1], Some((p, &[7])), None, None).unwrap_err();
        assert_eq!(
            e,
            "--config e.toml: config key workers.cores: core 7 does not exist or this process may not run on it (allowed: 0,1); list only allowed cores"
        );
        let e = place(&[0, 1], Some((p, &[0, 1])), None, None).unwrap_err();
        assert!(
            e.contains("workers.cores lists every CPU") && e.contains("--client-core"),
            "{e}"
        );
        // ... which --client-core resolves.
        let ok = place(&[0, 1], Some((p, &[0, 1])), Some(0), None).unwrap();
        assert_eq!((ok.client, ok.engine, ok.worker_cores), (0, 1, vec![1]));
        assert!(place(&[0], None, None, None).unwrap_err().contains("needs two CPUs"));
        let e = place(&[0, 1], None, Some(5), None).unwrap_err();
        assert!(
            e.starts_with("--client-core 5: this process may not run on CPU 5"),
            "{e}"
        );
        let e = place(&[0, 1], None, Some(1), Some(1)).unwrap_err();
        assert!(e.contains("both 1"), "{e}");
    }
}
