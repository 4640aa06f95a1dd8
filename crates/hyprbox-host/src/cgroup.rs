//! Container limits read from the cgroup filesystem, so an agent inside a container reports its
//! memory and CPU against the container's limits, not the host's (which `/proc` shows).
//!
//! Only the files at the root of the mount are read: inside a container with a cgroup namespace
//! that root is the container's own group. On a host the root group has no limit files (v2) or an
//! "unlimited" value (v1), and the host figures are used.

use std::path::{Path, PathBuf};

/// v1 writes "unlimited" as a huge page-aligned number; anything at or above this is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// A memory limit and what is counted against it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    pub used: u64,
    pub limit: u64,
}

/// The CPU limit as a number of CPUs (`cpu.max` 150000 100000 → 1.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuLimit(pub f64);

/// Reads the cgroup files under one root (`/sys/fs/cgroup` in production, a fixture in tests).
#[derive(Clone, Debug)]
pub struct Cgroup {
    root: PathBuf,
}

impl Default for Cgroup {
    fn default() -> Self {
        Cgroup::at("/sys/fs/cgroup")
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// A `key value` line of `memory.stat`.
fn stat_value(path: &Path, key: &str) -> Option<u64> {
    read_trimmed(path)?.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroup {
    pub fn at(root: impl Into<PathBuf>) -> Cgroup {
        Cgroup { root: root.into() }
    }

    /// Memory used against the limit, when there is one. Like `docker stats`, the inactive page
    /// cache is not counted as used: the kernel drops it before it would OOM-kill anyone.
    pub fn memory(&self) -> Option<Memory> {
        let v2 = self.root.join("memory.max");
        if let Some(max) = read_trimmed(&v2) {
            let limit: u64 = max.parse().ok()?; // "max" → no limit
            let current = read_u64(&self.root.join("memory.current"))?;
            let cache = stat_value(&self.root.join("memory.stat"), "inactive_file").unwrap_or(0);
            return Some(Memory {
                used: current.saturating_sub(cache),
                limit,
            });
        }
        let v1 = self.root.join("memory");
        let limit = read_u64(&v1.join("memory.limit_in_bytes"))?;
        if limit >= V1_UNLIMITED {
            return None;
        }
        let usage = read_u64(&v1.join("memory.usage_in_bytes"))?;
        let cache = stat_value(&v1.join("memory.stat"), "total_inactive_file").unwrap_or(0);
        Some(Memory {
            used: usage.saturating_sub(cache),
            limit,
        })
    }

    /// The CPU quota, when there is one: v2 `cpu.max` ("max 100000" is none), v1
    /// `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 is none).
    pub fn cpu_limit(&self) -> Option<CpuLimit> {
        if let Some(max) = read_trimmed(&self.root.join("cpu.max")) {
            let mut parts = max.split_whitespace();
            let quota: f64 = parts.next()?.parse().ok()?;
            let period: f64 = parts.next().unwrap_or("100000").parse().ok()?;
            return (quota > 0.0 && period > 0.0).then(|| CpuLimit(quota / period));
        }
        let dir = ["cpu", "cpu,cpuacct"]
            .iter()
            .map(|d| self.root.join(d))
            .find(|d| d.join("cpu.cfs_quota_us").exists())?;
        let quota: i64 = read_trimmed(&dir.join("cpu.cfs_quota_us"))?.parse().ok()?;
        let period = read_u64(&dir.join("cpu.cfs_period_us"))?;
        (quota > 0 && period > 0).then(|| CpuLimit(quota as f64 / period as f64))
    }

    /// CPU time used by the group so far, in microseconds (v2 `cpu.stat usage_usec`, v1
    /// `cpuacct.usage` in nanoseconds).
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        if let Some(usec) = stat_value(&self.root.join("cpu.stat"), "usage_usec") {
            return Some(usec);
        }
        ["cpuacct", "cpu,cpuacct"]
            .iter()
            .find_map(|d| read_u64(&self.root.join(d).join("cpuacct.usage")))
            .map(|ns| ns / 1000)
    }
}

/// CPU % of the limit between two readings of [`Cgroup::cpu_usage_usec`] `elapsed_usec` apart.
pub fn cpu_percent(before_usec: u64, after_usec: u64, elapsed_usec: u64, limit: CpuLimit) -> f64 {
    if elapsed_usec == 0 || limit.0 <= 0.0 {
        return 0.0;
    }
    let used = after_usec.saturating_sub(before_usec) as f64;
    (used / (elapsed_usec as f64 * limit.0) * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str, files: &[(&str, &str)]) -> Cgroup {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "hyprbox-host-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (path, content) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        Cgroup::at(root)
    }

    #[test]
    fn a_v2_container_reports_memory_and_cpu_against_its_limits() {
        let cg = fixture(
            "cg-v2",
            &[
                ("memory.max", "536870912\n"),
                ("memory.current", "300000000\n"),
                (
                    "memory.stat",
                    "anon 200000000\nfile 100000000\ninactive_file 50000000\n",
                ),
                ("cpu.max", "150000 100000\n"),
                ("cpu.stat", "usage_usec 987654\nuser_usec 1\n"),
            ],
        );
        assert_eq!(
            cg.memory(),
            Some(Memory {
                used: 250_000_000,
                limit: 536_870_912
            })
        );
        assert_eq!(cg.cpu_limit(), Some(CpuLimit(1.5)));
        assert_eq!(cg.cpu_usage_usec(), Some(987_654));
    }

    #[test]
    fn a_v2_group_without_limits_falls_back_to_the_host() {
        let cg = fixture(
            "cg-v2-max",
            &[
                ("memory.max", "max\n"),
                ("memory.current", "1\n"),
                ("cpu.max", "max 100000\n"),
            ],
        );
        assert_eq!(cg.memory(), None);
        assert_eq!(cg.cpu_limit(), None);
    }

    #[test]
    fn a_v1_container_reports_its_limits_and_unlimited_means_none() {
        let cg = fixture(
            "cg-v1",
            &[
                ("memory/memory.limit_in_bytes", "1073741824\n"),
                ("memory/memory.usage_in_bytes", "536870912\n"),
                ("memory/memory.stat", "cache 10\ntotal_inactive_file 36870912\n"),
                ("cpu,cpuacct/cpu.cfs_quota_us", "50000\n"),
                ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
                ("cpu,cpuacct/cpuacct.usage", "5000000\n"),
            ],
        );
        assert_eq!(
            cg.memory(),
            Some(Memory {
                used: 500_000_000,
                limit: 1_073_741_824
            })
        );
        assert_eq!(cg.cpu_limit(), Some(CpuLimit(0.5)));
        assert_eq!(cg.cpu_usage_usec(), Some(5_000));

        let unlimited = fixture(
            "cg-v1-unlimited",
            &[
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory/memory.usage_in_bytes", "5\n"),
                ("cpu/cpu.cfs_quota_us", "-1\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(unlimited.memory(), None);
        assert_eq!(unlimited.cpu_limit(), None);
    }

    #[test]
    fn no_cgroup_files_means_no_limits() {
        let cg = fixture("cg-none", &[]);
        assert_eq!(cg.memory(), None);
        assert_eq!(cg.cpu_limit(), None);
        assert_eq!(cg.cpu_usage_usec(), None);
    }

    #[test]
    fn cpu_percent_is_measured_against_the_quota() {
        // One second of wall time, half a CPU used, a limit of two CPUs: 25 %.
        assert_eq!(cpu_percent(0, 500_000, 1_000_000, CpuLimit(2.0)), 25.0);
        assert_eq!(cpu_percent(0, 9_000_000, 1_000_000, CpuLimit(1.0)), 100.0);
        assert_eq!(cpu_percent(10, 5, 1_000_000, CpuLimit(1.0)), 0.0);
        assert_eq!(cpu_percent(0, 5, 0, CpuLimit(1.0)), 0.0);
    }
}
