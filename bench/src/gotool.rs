//! Finding (and if needed building) the Go latency tool `ringlat` for the Go scenarios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::Result;

/// Where Go is installed when it is not on PATH (the official tarball's place).
const GO_FALLBACK: &str = "/usr/local/go/bin/go";

/// The ringlat binary to use.
///
/// * `explicit` (`--ringlat PATH`): that file; an error if it does not exist.
/// * Otherwise `ringlat` next to the bench executable, built with
///   `go build -o <that path> ./cmd/ringlat` in `go-client/` when it is missing or older than
///   any file of the Go module (the Go build cache makes an up-to-date build take about a
///   second).
///
/// `Ok(Err(reason))` means the Go scenarios cannot run here (no Go and no binary, or the
/// build failed); the bench then skips them with that reason.
pub fn ringlat(explicit: Option<&Path>, quiet: bool) -> Result<std::result::Result<PathBuf, String>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(format!("--ringlat {}: no such file", p.display()).into());
        }
        return Ok(Ok(p.to_owned()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating the bench executable: {e}"))?;
    let target = exe
        .parent()
        .ok_or("the bench executable has no parent directory")?
        .join("ringlat");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("go-client");
    let have_src = src.join("go.mod").is_file();
    let go = find_go();
    let Some(go) = go.filter(|_| have_src) else {
        if target.is_file() {
            return Ok(Ok(target));
        }
        let why = if have_src {
            format!(
                "Go is not installed (no `go` on PATH, no {GO_FALLBACK}, or SWRING_GO names none) and there is no {}; install Go 1.22+ or pass --ringlat PATH",
                target.display()
            )
        } else {
            format!(
                "no ringlat at {} and no Go sources at {} to build it from; pass --ringlat PATH",
                target.display(),
                src.display()
            )
        };
        return Ok(Err(why));
    };
    if target.is_file() && !older_than_sources(&target, &src) {
        return Ok(Ok(target));
    }
    let shown = format!(
        "{} build -buildvcs=false -o {} ./cmd/ringlat   (in {})",
        go.display(),
        target.display(),
        src.display()
    );
    if !quiet {
        eprintln!("bench: building ringlat: {shown}");
    }
    let out = Command::new(&go)
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&target)
        .arg("./cmd/ringlat")
        .current_dir(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(Ok(target)),
        Ok(o) => Ok(Err(format!(
            "building ringlat failed ({}): {shown}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim_end()
        ))),
        Err(e) => Ok(Err(format!("running {shown}: {e}"))),
    }
}

/// `SWRING_GO` if set (empty: act as if Go were not installed), else `go` on PATH, else the
/// usual install location.
fn find_go() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("SWRING_GO") {
        return Some(PathBuf::from(v)).filter(|p| is_executable(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("go"))
            .find(|p| is_executable(p))
    });
    on_path.or_else(|| Some(PathBuf::from(GO_FALLBACK)).filter(|p| is_executable(p)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether any `.go`, `go.mod` or `go.sum` file under `src` is newer than `target`.
fn older_than_sources(target: &Path, src: &Path) -> bool {
    let Ok(built) = target.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    newest_source(src).is_some_and(|t| t > built)
}

fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest: Option<SystemTime> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let t = if meta.is_dir() {
            newest_source(&path)
        } else {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let relevant = name.ends_with(".go") || name == "go.mod" || name == "go.sum";
            relevant.then(|| meta.modified().ok()).flatten()
        };
        newest = newest.max(t);
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_follows_the_newest_go_file() {
        let dir = std::env::temp_dir().join(format!("bench-gotool-{}", std::process::id()));
        let sub = dir.join("cmd");
        std::fs::create_dir_all(&sub).unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let new = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000);
        let set = |p: &Path, t: SystemTime| {
            std::fs::write(p, "x").unwrap();
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        set(&dir.join("go.mod"), old);
        set(&sub.join("main.go"), old);
        set(&sub.join("notes.txt"), new); // not a Go source
        let bin = dir.join("ringlat");
        set(&bin, old + std::time::Duration::from_secs(10));
        assert!(!older_than_sources(&bin, &dir));
        set(&sub.join("main.go"), new);
        assert!(older_than_sources(&bin, &dir));
        assert!(older_than_sources(&dir.join("missing"), &dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_explicit_path_must_exist() {
        let e = ringlat(Some(Path::new("/nonexistent/ringlat")), true).unwrap_err();
        assert!(e.to_string().contains("--ringlat /nonexistent/ringlat"), "{e}");
    }
}
