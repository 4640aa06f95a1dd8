//! Measurements of the machine for heartbeats: CPU, memory and root-disk usage, load and uptime
//! (every beat), and the inventory (hostname, OS, kernel, …; sent only when it changes).

use std::net::{IpAddr, UdpSocket};
use std::time::Instant;

use hyprbox_proto::Heartbeat;
use sysinfo::System;

use crate::cgroup::{self, Cgroup};

/// What the server keeps between beats: sent on first contact and when something changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub architecture: Option<String>,
    pub ip: Option<String>,
    pub agent_version: Option<String>,
    pub region: Option<String>,
    pub mem_total_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
}

/// One beat's measurements.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub load_avg: Option<[f64; 3]>,
    pub uptime_seconds: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
}

/// One decimal is all a dashboard shows; fewer digits make smaller heartbeats.
fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn percent(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| round1((used as f64 / total as f64 * 100.0).clamp(0.0, 100.0)))
}

/// Keeps the state CPU usage needs (it is a difference between two readings).
pub struct Collector {
    sys: Option<System>,
    cgroup: Cgroup,
    cgroup_cpu: Option<(Instant, u64)>,
}

impl Collector {
    /// Takes the first CPU reading now, so the first beat has a real value.
    pub fn new(cgroup: Cgroup) -> Collector {
        let mut sys = System::new().ok();
        if let Some(sys) = sys.as_mut() {
            sys.refresh_cpu_usage();
        }
        let cgroup_cpu = cgroup.cpu_usage_usec().map(|u| (Instant::now(), u));
        Collector {
            sys,
            cgroup,
            cgroup_cpu,
        }
    }

    /// Measures now. CPU is the average since the previous call (two samples at least
    /// [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] apart: the first call waits that long).
    pub async fn sample(&mut self) -> Sample {
        let mut sample = Sample::default();
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_memory();
            let host_total = sys.total_memory();
            match self.cgroup.memory().filter(|m| m.limit < host_total) {
                Some(limited) => {
                    sample.ram_percent = percent(limited.used, limited.limit);
                    sample.mem_total_bytes = Some(limited.limit);
                }
                None => {
                    sample.ram_percent =
                        percent(host_total - sys.available_memory().min(host_total), host_total);
                    sample.mem_total_bytes = (host_total > 0).then_some(host_total);
                }
            }
        }
        sample.cpu_percent = match self.cgroup.cpu_limit() {
            Some(limit) => self.cgroup_cpu_percent(limit).await,
            None => self.host_cpu_percent().await,
        };
        if let Ok(stat) = nix::sys::statvfs::statvfs("/") {
            // The field types are u32 on some 32-bit targets: the casts are not no-ops everywhere.
            #[allow(clippy::unnecessary_cast)]
            let (frsize, blocks, free, avail) = (
                stat.fragment_size() as u64,
                stat.blocks() as u64,
                stat.blocks_free() as u64,
                stat.blocks_available() as u64,
            );
            let total = blocks * frsize;
            // Like df: "used" is what is not free, measured against what non-root users can reach.
            let used = total.saturating_sub(free * frsize);
            let avail = avail * frsize;
            sample.disk_percent = percent(used, used + avail);
            sample.disk_total_bytes = (total > 0).then_some(total);
        }
        if let Ok(load) = System::load_average() {
            sample.load_avg = Some([load.one, load.five, load.fifteen].map(|v| (v * 100.0).round() / 100.0));
        }
        sample.uptime_seconds = System::uptime().ok();
        sample
    }

    async fn host_cpu_percent(&mut self) -> Option<f64> {
        let sys = self.sys.as_mut()?;
        sys.refresh_cpu_usage();
        if sys.global_cpu_usage() == 0.0 {
            // Too soon after the previous reading for a difference: take a second sample.
            tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
            sys.refresh_cpu_usage();
        }
        Some(round1(f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0)))
    }

    async fn cgroup_cpu_percent(&mut self, limit: cgroup::CpuLimit) -> Option<f64> {
        if self.cgroup_cpu.is_none() {
            self.cgroup_cpu = self.cgroup.cpu_usage_usec().map(|u| (Instant::now(), u));
            tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
        }
        let (at, before) = self.cgroup_cpu?;
        let now = self.cgroup.cpu_usage_usec()?;
        let elapsed = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.cgroup_cpu = Some((Instant::now(), now));
        Some(round1(cgroup::cpu_percent(before, now, elapsed, limit)))
    }
}

/// The inventory of this machine now. `server` is used only to find which local address faces it.
pub fn inventory(server_host: Option<(&str, u16)>, region: Option<&str>, sample: &Sample) -> Inventory {
    let non_empty = |s: String| {
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    Inventory {
        hostname: System::host_name().ok().and_then(non_empty),
        os: System::long_os_version().ok().and_then(non_empty),
        kernel: System::kernel_version().ok().and_then(non_empty),
        architecture: non_empty(System::cpu_arch()),
        ip: server_host
            .and_then(|(host, port)| local_ip_towards(host, port))
            .map(|ip| ip.to_string()),
        agent_version: Some(crate::VERSION.to_string()),
        region: region.map(str::to_string),
        mem_total_bytes: sample.mem_total_bytes,
        disk_total_bytes: sample.disk_total_bytes,
    }
}

/// The local address the kernel would use to reach the server: the one an operator can SSH to.
/// Connecting a UDP socket only picks a route; no packet is sent.
pub fn local_ip_towards(host: &str, port: u16) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let target = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The heartbeat body: metrics always, inventory fields only when `inventory` is given.
pub fn heartbeat(node_id: &str, status: &str, sample: &Sample, inventory: Option<&Inventory>) -> Heartbeat {
    let mut hb = Heartbeat {
        node_id: node_id.to_string(),
        cpu_percent: sample.cpu_percent,
        ram_percent: sample.ram_percent,
        disk_percent: sample.disk_percent,
        status: Some(status.to_string()),
        uptime_seconds: sample.uptime_seconds,
        load_avg: sample.load_avg,
        ..Heartbeat::default()
    };
    if let Some(inv) = inventory {
        hb.hostname = inv.hostname.clone();
        hb.os = inv.os.clone();
        hb.kernel = inv.kernel.clone();
        hb.architecture = inv.architecture.clone();
        hb.ip = inv.ip.clone();
        hb.agent_version = inv.agent_version.clone();
        hb.region = inv.region.clone();
        hb.mem_total_bytes = inv.mem_total_bytes;
        hb.disk_total_bytes = inv.disk_total_bytes;
    }
    hb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sample_of_this_machine_passes_the_servers_validation() {
        let mut collector = Collector::new(Cgroup::default());
        let sample = collector.sample().await;
        let inv = inventory(Some(("127.0.0.1", 4000)), Some("lab"), &sample);
        let hb = heartbeat("test-node", "ok", &sample, Some(&inv));
        hb.validate().unwrap();
        assert!(hb.cpu_percent.is_some() && hb.ram_percent.is_some() && hb.disk_percent.is_some());
        assert!(hb.mem_total_bytes.unwrap() > 0 && hb.disk_total_bytes.unwrap() > 0);
        assert_eq!(hb.ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(hb.agent_version.as_deref(), Some(crate::VERSION));
        let metrics_only = heartbeat("test-node", "ok", &sample, None);
        assert!(metrics_only.hostname.is_none() && metrics_only.mem_total_bytes.is_none());
    }
}
