//! The `needle.read.<size>.netns*` scenarios' network: two network namespaces joined by a
//! veth pair (scripts/netns), as two hosts joined by one link. Namespace -a holds a weed
//! master and volume server (`ringlat -weed -netns`, crate::weed) and the engine serving its
//! volume directory, listening on the veth address; namespace -b the client's engine and the
//! measuring ringlat, whose HTTP GETs and UCX (tcp) cross the veth.
//!
//! The bench makes the pair for the first group that needs it and removes it at the end of
//! the run, whatever happened ([`NetnsPair`]'s `Drop`); a watchdog process removes it too if
//! the bench dies without unwinding (a second Ctrl-C, SIGKILL): it waits for the end of its
//! input, a pipe only the bench holds. Needs root and iproute2.

use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::weed::{WeedHost, WeedInfo};
use crate::Result;

/// scripts/netns of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("netns")
}

/// Whether a namespace pair can be made here: `Ok`, or why not.
pub fn available() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not available here: the netns scenarios need root (network namespaces and a veth pair)".into());
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("not available here: `ip -V` exited with {s} (iproute2)")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err("not available here: no `ip` command (install iproute2)".into())
        }
        Err(e) => return Err(format!("not available here: running `ip -V`: {e}")),
    }
    let s = script();
    if !s.is_file() {
        return Err(format!("not available here: no {}", s.display()));
    }
    Ok(())
}

/// Two namespaces `NAME-a`, `NAME-b` joined by a veth pair; removed on drop.
pub struct NetnsPair {
    pub name: String,
    pub ns_a: String,
    pub ns_b: String,
    pub dev_a: String,
    pub dev_b: String,
    pub addr_a: String,
    pub addr_b: String,
    script: PathBuf,
    /// Runs `scripts/netns down NAME` once its input ends (the bench's exit, however).
    watchdog: Option<Child>,
}

impl NetnsPair {
    /// `scripts/netns up NAME` with a name of this run (`swrb<pid>`).
    pub fn up() -> Result<Self> {
        let script = script();
        let name = format!("swrb{}", std::process::id());
        // First the watchdog: the pair goes even if the bench dies while making it.
        let watchdog = Command::new("sh")
            .args(["-c", "cat >/dev/null; exec \"$0\" down \"$1\" >/dev/null 2>&1"])
            .arg(&script)
            .arg(&name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in the bench's process group: a terminal's Ctrl-C does not end it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the namespace pair's watchdog (sh): {e}"))?;
        let mut pair = Self {
            name: name.clone(),
            ns_a: String::new(),
            ns_b: String::new(),
            dev_a: String::new(),
            dev_b: String::new(),
            addr_a: String::new(),
            addr_b: String::new(),
            script: script.clone(),
            watchdog: Some(watchdog),
        };
        let out = Command::new(&script)
            .args(["up", &name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {} up {name}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} up {name}: {}: {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        for kv in text.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let field = match k {
                "NETNS_A" => &mut pair.ns_a,
                "NETNS_B" => &mut pair.ns_b,
                "DEV_A" => &mut pair.dev_a,
                "DEV_B" => &mut pair.dev_b,
                "ADDR_A" => &mut pair.addr_a,
                "ADDR_B" => &mut pair.addr_b,
                _ => continue,
            };
            *field = v.to_string();
        }
        if [&pair.ns_a, &pair.ns_b, &pair.dev_a, &pair.dev_b, &pair.addr_a]
            .iter()
            .any(|f| f.is_empty())
        {
            return Err(format!("{} up {name} printed {:?}", script.display(), text.trim()).into());
        }
        Ok(pair)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        match Command::new(&self.script)
            .args(["down", &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "bench: warning: {} down {}: {}: {}",
                self.script.display(),
                self.name,
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("bench: warning: {} down {}: {e}", self.script.display(), self.name),
        }
        if let Some(mut w) = self.watchdog.take() {
            // Its input ends: it runs `down` once more (a no-op now) and exits.
            drop(w.stdin.take());
            let _ = w.wait();
        }
    }
}

/// The namespace pair and the weed cluster in its namespace -a, for the whole run.
pub struct NetnsHost {
    // Dropped in this order: the cluster stops, then the pair goes.
    weed: WeedHost,
    pub pair: NetnsPair,
}

impl NetnsHost {
    /// Makes the pair and starts the weed cluster in -a (pinned to `cpu`) with a needle of
    /// each of `sizes`.
    pub fn start(ringlat: &Path, sizes: &[&str], cpu: usize) -> Result<Self> {
        let pair = NetnsPair::up()?;
        let weed =
            WeedHost::start_netns(ringlat, sizes, &pair.ns_a, &pair.addr_a, cpu).map_err(|e| -> crate::Error {
                if e.is::<crate::interrupt::Interrupted>() {
                    return e;
                }
                format!("the weed cluster in network namespace {}: {e}", pair.ns_a).into()
            })?;
        Ok(Self { weed, pair })
    }

    pub fn info(&self) -> &WeedInfo {
        &self.weed.info
    }
}
