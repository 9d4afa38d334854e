//! CPU placement (allowed CPUs, default cores, pinning) and the machine description every
//! result line carries.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde::Serialize;

use crate::Result;

/// CPUs this process may run on, ascending.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(core: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(core).map_err(|e| format!("cpu {core}: {e}"))?;
    // Pid 0 is the calling thread for sched_setaffinity.
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning to cpu {core}: {e}"))?;
    Ok(())
}

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may run on (what `nproc` prints).
    pub nproc: usize,
    /// CPUs online in the system.
    pub online_cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// The CPU reports running under a hypervisor (`hypervisor` flag).
    pub hypervisor: bool,
    /// Kernel release (uname -r).
    pub kernel: String,
    /// Current clocksource: `tsc` means `Instant::now()` is a vDSO read with no system call.
    pub clocksource: String,
    pub client_core: usize,
    pub engine_core: usize,
    /// Page kind of the engine's session regions as its log reported it ("huge", "normal"),
    /// null when no engine ran or the log did not say.
    pub engine_pages: Option<String>,
    /// Where client and engine core came from: "default", "flags", "--config FILE ...".
    pub core_source: String,
    /// Cores `scale.nop.workers.N` takes its N from (engine core first).
    pub worker_cores: Vec<usize>,
    /// /proc/loadavg (1, 5, 15 minutes) when the run started: how busy the machine was.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    pub fn probe(client_core: usize, engine_core: usize) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // SAFETY: sysconf has no memory-safety preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Machine {
            nproc: allowed_cpus().len(),
            online_cpus: usize::try_from(online).unwrap_or(0),
            cpu_model: cpuinfo_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            hypervisor: cpuinfo_field(&cpuinfo, "flags")
                .is_some_and(|f| f.split_whitespace().any(|w| w == "hypervisor")),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            clocksource: std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            client_core,
            engine_core,
            engine_pages: None,
            core_source: "default".into(),
            worker_cores: vec![engine_core],
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|t| load_average(&t)),
        }
    }
}

/// The three load averages of /proc/loadavg's text.
pub fn load_average(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_whitespace().map(str::parse::<f64>);
    Some([f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?])
}

/// The value of the first `key : value` line of /proc/cpuinfo.
pub fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_is_read() {
        assert_eq!(load_average("0.25 0.64 2.62 1/234 5678\n"), Some([0.25, 0.64, 2.62]));
        assert_eq!(load_average("0.25"), None);
    }

    #[test]
    fn cpuinfo_model_is_found() {
        let text =
            "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu hypervisor\n";
        assert_eq!(cpuinfo_field(text, "model name").as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpuinfo_field(text, "flags").as_deref(), Some("fpu hypervisor"));
        assert_eq!(cpuinfo_field(text, "cache size"), None);
    }
}
