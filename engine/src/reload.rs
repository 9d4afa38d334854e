//! Logging set-up and SIGHUP: the log filter sits behind a reload handle, so SIGHUP can
//! re-read the config file and apply a changed `log.level`; a changed `[seaweedfs]` section
//! is applied to the running volume store. Every other changed setting is named in a
//! warning: it takes effect at the next restart.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{Config, ConfigError};

/// Re-reads the configuration as at start: the same file, the same command-line overrides.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

struct Reloader {
    handle: reload::Handle<EnvFilter, Registry>,
    load: Loader,
    /// False when running on the embedded default: there is no file to re-read.
    has_file: bool,
    /// What fixes the log filter instead of `log.level` (RUST_LOG or --log-level), if anything.
    level_pinned_by: Option<&'static str>,
    /// The configuration in effect (log.level updated on reload; the rest as at start).
    current: Mutex<Config>,
}

static RELOADER: OnceLock<Reloader> = OnceLock::new();

/// Applies a changed `[seaweedfs]` section to the running volume store.
pub type SeaweedfsHook = Box<dyn Fn(&crate::config::SeaweedfsConfig) -> crate::seaweed::RefreshSummary + Send + Sync>;

static SEAWEEDFS_HOOK: OnceLock<SeaweedfsHook> = OnceLock::new();

/// Makes SIGHUP apply `[seaweedfs]` changes (directories, idx settings, refresh, CRC) through
/// `hook` instead of asking for a restart.
pub fn on_seaweedfs_change(hook: SeaweedfsHook) {
    let _ = SEAWEEDFS_HOOK.set(hook);
}

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`.
/// `level_flag`: whether `--log-level` was given (it pins the level as RUST_LOG does).
pub fn init_logging(cfg: &Config, has_file: bool, level_flag: bool, load: Loader) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let level_pinned_by = if from_env.is_some() {
        Some("RUST_LOG")
    } else if level_flag {
        Some("--log-level")
    } else {
        None
    };
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&cfg.log.level));
    let (filter, handle) = reload::Layer::new(filter);
    use std::io::IsTerminal;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let _ = RELOADER.set(Reloader {
        handle,
        load,
        has_file,
        level_pinned_by,
        current: Mutex::new(cfg.clone()),
    });
}

/// Control thread, on SIGHUP.
pub fn on_sighup() {
    let Some(r) = RELOADER.get() else {
        tracing::info!("SIGHUP: logging was not set up for reloading; nothing reloaded");
        return;
    };
    if !r.has_file {
        tracing::info!("SIGHUP: running on the embedded default config (no --config); nothing to reload");
        return;
    }
    let new = match (r.load)() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded; the engine keeps its current settings");
            return;
        }
    };
    let mut current = r.current.lock().unwrap_or_else(|p| p.into_inner());
    let changed = changed_keys(&current, &new);
    let mut restart = Vec::new();
    // A set security-toml is re-read on every SIGHUP, changed or not: the key in the file may
    // have been rotated (the volume server reloads its own on SIGHUP too).
    if changed.iter().any(|k| k.starts_with("seaweedfs.")) || new.seaweedfs.security_toml.is_some() {
        match SEAWEEDFS_HOOK.get() {
            Some(apply) => {
                let s = apply(&new.seaweedfs);
                for (file, why) in &s.failed {
                    tracing::warn!(file = %file.display(), %why, "SIGHUP: seaweedfs: not served");
                }
                tracing::info!(
                    directories = ?new.seaweedfs.directories,
                    volumes = s.volumes,
                    added = ?s.added,
                    removed = ?s.removed,
                    reopened = ?s.reopened,
                    "SIGHUP: seaweedfs settings reloaded"
                );
                current.seaweedfs = new.seaweedfs.clone();
            }
            None => restart.extend(
                changed
                    .iter()
                    .filter(|k| k.starts_with("seaweedfs."))
                    .map(String::as_str),
            ),
        }
    }
    for key in &changed {
        if key.starts_with("seaweedfs.") {
            continue;
        }
        if key != "log.level" {
            restart.push(key.as_str());
            continue;
        }
        if let Some(by) = r.level_pinned_by {
            tracing::warn!(
                file = %new.log.level,
                "SIGHUP: log.level changed but {by} sets the log filter; not applied (unset {by} to let the config decide)"
            );
            continue;
        }
        match r.handle.reload(EnvFilter::new(&new.log.level)) {
            Ok(()) => {
                tracing::info!(from = %current.log.level, to = %new.log.level, "SIGHUP: log level reloaded");
                tracing::debug!(level = %new.log.level, "log filter in effect");
                current.log.level = new.log.level.clone();
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: log level could not be changed"),
        }
    }
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "SIGHUP: these settings changed in the config file but only take effect after a restart"
        );
    }
    if changed.is_empty() {
        tracing::info!("SIGHUP: config re-read; nothing changed");
    }
}

/// Dotted keys whose values differ between two configurations (keys present in only one
/// count as changed).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let a = toml::Value::try_from(a).expect("config serializes");
    let b = toml::Value::try_from(b).expect("config serializes");
    let mut out = Vec::new();
    diff("", Some(&a), Some(&b), &mut out);
    out
}

fn diff(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff(&key, x.get(k), y.get(k), out);
            }
        }
        (x, y) if x != y => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_and_sorted() {
        let a = Config::default();
        let mut b = a.clone();
        b.log.level = "debug".into();
        b.workers.cores = Some(vec![1]);
        b.memory.sq_entries = 64;
        assert_eq!(
            changed_keys(&a, &b),
            ["log.level", "memory.sq-entries", "workers.cores"]
        );
        assert!(changed_keys(&a, &a.clone()).is_empty());
    }
}
