//! The host's own figures from `/proc`, for when no cgroup limit applies.

/// Cumulative CPU time of the whole machine from a `/proc/stat` text: (busy, total) in jiffies.
pub fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    let total: u64 = values.iter().sum();
    // idle + iowait are not busy.
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// CPU % between two [`cpu_times`] readings.
pub fn cpu_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1) as f64;
    if total <= 0.0 {
        return 0.0;
    }
    (busy / total * 100.0).clamp(0.0, 100.0)
}

/// (used, total) bytes of memory from a `/proc/meminfo` text; used is total minus available.
pub fn memory(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some((total.saturating_sub(available), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_use_is_busy_time_over_all_time_between_two_readings() {
        let before = cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let after = cpu_times("cpu  200 0 200 800 100 0 0 0 0 0\n").unwrap();
        assert_eq!(before, (200, 1000));
        assert_eq!(cpu_percent(before, after), 200.0 / 300.0 * 100.0);
        assert_eq!(cpu_percent(after, after), 0.0);
        assert_eq!(cpu_times("intr 5\n"), None);
    }

    #[test]
    fn memory_used_is_total_minus_available() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(memory(meminfo), Some((600 * 1024, 1000 * 1024)));
        assert_eq!(memory("MemTotal: 5 kB\n"), None);
    }
}
