//! CPU time and memory of this process, from `/proc` (Linux).

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds this process has used (all threads, live and exited).
pub fn cpu_seconds() -> f64 {
    stat_ticks(false)
}

/// [`cpu_seconds`] plus that of children that have exited and were waited for.
pub fn cpu_seconds_with_children() -> f64 {
    stat_ticks(true)
}

fn stat_ticks(children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut t = tick(11) + tick(12);
    if children {
        // cutime, cstime: fields 16 and 17.
        t += tick(13) + tick(14);
    }
    t as f64 / USER_HZ
}

/// CPU seconds the whole machine spent busy (all processes, all cores) since boot, from
/// `/proc/stat`: everything but idle and iowait.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is included in user).
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    busy as f64 / USER_HZ
}

/// Measures, over a window, how many cores the machine was busy and how many of those
/// were this process and a known other process (the serving node).
#[derive(Debug, Clone, Copy)]
pub struct BusyMeter {
    machine: f64,
    me: f64,
    at: std::time::Instant,
}

impl BusyMeter {
    pub fn start() -> Self {
        BusyMeter {
            machine: machine_busy_seconds(),
            me: cpu_seconds(),
            at: std::time::Instant::now(),
        }
    }

    /// `(machine cores, this process's cores)` averaged since `start`.
    pub fn cores(&self) -> (f64, f64) {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        (
            (machine_busy_seconds() - self.machine) / secs,
            (cpu_seconds() - self.me) / secs,
        )
    }
}

/// Waits (at most `limit`) until other processes use less than `cores` of the machine,
/// sampled over half-second windows, this process excluded. Returns the last sample.
pub async fn wait_quiet(limit: std::time::Duration, cores: f64) -> f64 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let m = BusyMeter::start();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (machine, me) = m.cores();
        let others = (machine - me).max(0.0);
        if others < cores || std::time::Instant::now() >= deadline {
            return others;
        }
    }
}

/// UDP datagrams the kernel dropped because a socket's receive buffer was full (this
/// network namespace, all processes): `RcvbufErrors` of `/proc/net/snmp`.
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    status_kb("VmRSS:") * 1024
}

/// Threads of this process.
pub fn threads() -> u64 {
    status_value("Threads:")
}

fn status_kb(key: &str) -> u64 {
    status_value(key)
}

fn status_value(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_gb: f64,
    pub kernel: String,
    pub rustc: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        mem_total_gb: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel,
        rustc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(rss_bytes() > 0);
        assert!(threads() >= 1);
        let a = cpu_seconds();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds() >= a);
    }
}
