//! The needle scenarios' SeaweedFS: `ringlat -weed` (go-client/cmd/ringlat/weed.go) runs a
//! real `weed` master and volume server on loopback (go-client/internal/weedcluster), uploads
//! one needle per size, prints the volume directory, the volume server's address and the
//! needles' file ids, and keeps the cluster up until its input is closed. The bench starts it
//! once, for the first group that needs it, pinned to the engine core (the weed processes
//! inherit the mask: the volume server answers HTTP on the core the engine uses for the ring
//! path), and ends it after the last group.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::goproc::Ringlat;
use crate::Result;

/// How long the cluster may take to start and take the uploads (weedcluster waits up to
/// 90 s for the master to assign file ids).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// One uploaded needle.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WeedNeedle {
    /// The size name it was asked for (`"4k"`).
    pub size: String,
    pub bytes: u64,
    /// SeaweedFS file id (`"3,01637037d6"`).
    pub fid: String,
    /// SHA-256 (hex) of the uploaded bytes.
    pub sha256: String,
}

/// What the weed host printed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WeedInfo {
    /// The `weed` binary.
    pub weed: String,
    /// The volume server's HTTP address (host:port).
    pub volume: String,
    /// Its `-dir`: the engine serves this directory (`--seaweedfs-dir`).
    pub volume_dir: PathBuf,
    pub needles: Vec<WeedNeedle>,
    /// With a file for the front-end scenarios (`fs_mb > 0`): the master, the stock filer,
    /// the file written through it and its size, and the `weed` with the ring read path
    /// (`None`, and why in `weed_ring_error`, when there is none).
    #[serde(default)]
    pub master: Option<String>,
    /// The volume server's Prometheus address (its GET count).
    #[serde(default)]
    pub volume_metrics: Option<String>,
    #[serde(default)]
    pub filer: Option<String>,
    #[serde(default)]
    pub fs_file: Option<String>,
    #[serde(default)]
    pub fs_bytes: Option<u64>,
    #[serde(default)]
    pub weed_ring: Option<String>,
    #[serde(default)]
    pub weed_ring_error: Option<String>,
    /// With cold needles (`cold > 0`): their file ids, in upload order, and their length
    /// (the cold scenarios, `crate::scenarios::cold`; go-client/cmd/ringlat/cold.go).
    #[serde(default)]
    pub cold: Vec<String>,
    #[serde(default)]
    pub cold_bytes: u64,
}

/// A ready line: `info` when it names a cluster, `weed` the binary (also with `-check`).
#[derive(Debug)]
struct ReadyLine {
    ready: bool,
    error: Option<String>,
    info: Option<WeedInfo>,
    weed: Option<String>,
    weed_ring: Option<String>,
    weed_ring_error: Option<String>,
}

fn parse_ready(line: &str) -> std::result::Result<ReadyLine, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("ringlat -weed printed no JSON ({e}): {line}"))?;
    let info = if v.get("volume").is_some() {
        Some(
            serde_json::from_value(v.clone())
                .map_err(|e| format!("ringlat -weed's line is malformed ({e}): {line}"))?,
        )
    } else {
        None
    };
    Ok(ReadyLine {
        ready: v["ready"] == true,
        error: v["error"].as_str().map(str::to_owned),
        info,
        weed: v["weed"].as_str().map(str::to_owned),
        weed_ring: v["weed_ring"].as_str().map(str::to_owned),
        weed_ring_error: v["weed_ring_error"].as_str().map(str::to_owned),
    })
}

/// The `weed` binaries `ringlat -weed -check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeedBinaries {
    /// The stock `weed`.
    pub weed: String,
    /// The `weed` with the ring read path (scripts/weed --ring), or why there is none.
    pub weed_ring: std::result::Result<String, String>,
}

/// Whether a `weed` binary is there (`ringlat -weed -check`): `Ok`, or why not.
pub fn check(ringlat: &Path) -> std::result::Result<WeedBinaries, String> {
    let out = Command::new(ringlat)
        .args(["-weed", "-check"])
        .output()
        .map_err(|e| format!("running {} -weed -check: {e}", ringlat.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or("");
    match parse_ready(line) {
        Ok(r) if r.ready => {
            let weed = r
                .weed
                .ok_or_else(|| format!("ringlat -weed -check named no binary: {line}"))?;
            Ok(WeedBinaries {
                weed,
                weed_ring: r.weed_ring.ok_or_else(|| {
                    r.weed_ring_error
                        .unwrap_or_else(|| "no weed with the ring read path (scripts/weed --ring)".into())
                }),
            })
        }
        Ok(r) => Err(r.error.unwrap_or_else(|| line.to_string())),
        Err(e) => Err(format!(
            "{e} ({}; stderr: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A running `ringlat -weed`: the cluster lives as long as this value.
pub struct WeedHost {
    // Dropping it closes ringlat's input: it stops the cluster and removes its directory.
    _proc: Ringlat,
    pub info: WeedInfo,
}

impl WeedHost {
    /// Starts the cluster pinned to `cpu` and uploads a needle of each of `sizes`; with
    /// `fs_mb > 0` also a filer, and a file of that many MiB written through it; with
    /// `cold > 0` that many cold needles (1 MiB, each followed by a filler).
    pub fn start(ringlat: &Path, sizes: &[&str], fs_mb: u32, cold: u32, cpu: usize) -> Result<Self> {
        let mut args = vec!["-weed".to_string(), "-sizes".into(), sizes.join(",")];
        if fs_mb > 0 {
            args.extend(["-fs-mb".into(), fs_mb.to_string()]);
        }
        if cold > 0 {
            args.extend(["-cold".into(), cold.to_string()]);
        }
        let host = Self::start_with(ringlat, args, sizes, fs_mb, cpu)?;
        if host.info.cold.len() != cold as usize {
            return Err(format!(
                "the weed host uploaded {} cold needles, not {cold}",
                host.info.cold.len()
            )
            .into());
        }
        Ok(host)
    }

    /// Starts the cluster in network namespace `netns` (master and volume server listening
    /// on `ip` there; `ringlat -weed -netns`), pinned to `cpu`, with a needle of each of
    /// `sizes`. ringlat itself stays in this namespace (it dials into `netns`).
    pub fn start_netns(ringlat: &Path, sizes: &[&str], netns: &str, ip: &str, cpu: usize) -> Result<Self> {
        let args = vec![
            "-weed".to_string(),
            "-sizes".into(),
            sizes.join(","),
            "-netns".into(),
            netns.into(),
            "-ip".into(),
            ip.into(),
        ];
        Self::start_with(ringlat, args, sizes, 0, cpu)
    }

    fn start_with(ringlat: &Path, args: Vec<String>, sizes: &[&str], fs_mb: u32, cpu: usize) -> Result<Self> {
        let mut p = Ringlat::spawn(ringlat, &args, Some(cpu))?;
        // weedcluster stops each server with SIGTERM and waits up to 10 s for it.
        p.set_exit_grace(Duration::from_secs(25));
        let line = match p.read_line(READY_TIMEOUT) {
            Ok(l) => l,
            Err(e) if e.is::<crate::interrupt::Interrupted>() => {
                // Ctrl-C: end it now (it reads its input only once the cluster is up); on
                // SIGTERM it stops the servers and removes its directory.
                p.terminate(Duration::from_secs(25));
                return Err(e);
            }
            Err(e) => return Err(p.failure(&format!("waiting for the weed cluster to start: {e}"))),
        };
        let r = match parse_ready(&line) {
            Ok(r) => r,
            Err(e) => return Err(p.failure(&e)),
        };
        match r.info {
            Some(info) if r.ready => {
                for s in sizes {
                    if !info.needles.iter().any(|n| n.size == *s) {
                        return Err(p.failure(&format!("the weed host uploaded no {s} needle: {line}")));
                    }
                }
                if fs_mb > 0 && (info.filer.is_none() || info.fs_bytes != Some(u64::from(fs_mb) << 20)) {
                    return Err(p.failure(&format!(
                        "the weed host started no filer with a {fs_mb} MiB file: {line}"
                    )));
                }
                Ok(Self { _proc: p, info })
            }
            _ => Err(p.failure(&format!("the weed cluster did not start: {line}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_parsed() {
        let line = r#"{"ready":true,"weed":"/c/weed","volume":"127.0.0.1:20056","volume_dir":"/tmp/w/volume","needles":[{"size":"4k","bytes":4096,"fid":"5,029c300848","sha256":"45c1"}]}"#;
        let r = parse_ready(line).unwrap();
        assert!(r.ready);
        let info = r.info.unwrap();
        assert_eq!(info.volume, "127.0.0.1:20056");
        assert_eq!(info.volume_dir, PathBuf::from("/tmp/w/volume"));
        assert_eq!(
            info.needles,
            vec![WeedNeedle {
                size: "4k".into(),
                bytes: 4096,
                fid: "5,029c300848".into(),
                sha256: "45c1".into()
            }]
        );
        assert_eq!(info.filer, None);
        let line = r#"{"ready":true,"weed":"/c/weed","volume":"127.0.0.1:1","volume_dir":"/v","needles":[],"master":"127.0.0.1:2","filer":"127.0.0.1:3","fs_file":"/bench/data.bin","fs_bytes":67108864,"weed_ring_error":"no weed-ring"}"#;
        let info = parse_ready(line).unwrap().info.unwrap();
        assert_eq!(info.filer.as_deref(), Some("127.0.0.1:3"));
        assert_eq!(info.fs_bytes, Some(64 << 20));
        assert_eq!(
            (info.weed_ring, info.weed_ring_error.as_deref()),
            (None, Some("no weed-ring"))
        );
        let r = parse_ready(r#"{"ready":false,"error":"weedcluster: no weed binary","no_weed":true}"#).unwrap();
        assert!(!r.ready && r.info.is_none());
        assert_eq!(r.error.as_deref(), Some("weedcluster: no weed binary"));
        let r = parse_ready(r#"{"ready":true,"weed":"/c/weed"}"#).unwrap();
        assert!(r.ready && r.info.is_none());
        assert_eq!(r.weed.as_deref(), Some("/c/weed"));
        assert!(parse_ready("weed: not found").is_err());
    }
}
