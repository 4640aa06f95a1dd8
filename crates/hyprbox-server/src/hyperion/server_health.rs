//! The server's own health for the Hyperion dashboard: CPU and memory of the container it runs in
//! (cgroup v2, then v1, then the host's `/proc` figures), sampled once a minute in the background and
//! persisted, and the figures derived from that history. The answer is rendered once per sample,
//! so reading it costs no query.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyprbox_host::cgroup::Cgroup;
use hyprbox_store::metrics::{self, Sample};
use hyprbox_store::{StoreError, now_ms};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::http::time::rfc3339;
use crate::state::AppState;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// Where the figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    CgroupV2,
    CgroupV1,
    Host,
}

/// One reading of the machine: cumulative CPU time and the memory in use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub source: Source,
    /// Cumulative CPU time used and the capacity it is measured against, in the same unit.
    pub cpu_used: f64,
    pub cpu_capacity: f64,
    pub memory_used: u64,
    pub memory_limit: u64,
}

/// Reads the files under `cgroup_root` and `proc_root` (the real ones in production, fixtures in
/// tests). A cgroup counts only when it sets a limit; otherwise the host's figures are used.
pub fn read(
    cgroup_root: &std::path::Path,
    proc_root: &std::path::Path,
    at: Instant,
    start: Instant,
) -> Option<Reading> {
    let group = Cgroup::at(cgroup_root);
    let version = if cgroup_root.join("memory.max").exists() || cgroup_root.join("cpu.max").exists() {
        Source::CgroupV2
    } else {
        Source::CgroupV1
    };
    let memory = group.memory();
    let cpu_limit = group.cpu_limit();
    let host_memory = std::fs::read_to_string(proc_root.join("meminfo"))
        .ok()
        .and_then(|m| hyprbox_host::host::memory(&m));
    let host_cpu = || {
        let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
        hyprbox_host::host::cpu_times(&stat).map(|(busy, total)| (busy as f64, total as f64))
    };
    if memory.is_some() || cpu_limit.is_some() {
        let (memory_used, memory_limit) = match (memory, host_memory) {
            (Some(m), _) => (m.used, m.limit),
            (None, Some(host)) => host,
            (None, None) => (0, 0),
        };
        // The group's own CPU counter against its quota; without a counter, the host's figures.
        let (cpu_used, cpu_capacity) = match group.cpu_usage_usec() {
            Some(used_usec) => {
                let cpus = cpu_limit.map_or_else(host_cpus, |l| l.0);
                (
                    used_usec as f64,
                    at.duration_since(start).as_micros() as f64 * cpus,
                )
            }
            None => host_cpu()?,
        };
        return Some(Reading {
            source: version,
            cpu_used,
            cpu_capacity,
            memory_used,
            memory_limit,
        });
    }
    let (cpu_used, cpu_capacity) = host_cpu()?;
    let (memory_used, memory_limit) = host_memory?;
    Some(Reading {
        source: Source::Host,
        cpu_used,
        cpu_capacity,
        memory_used,
        memory_limit,
    })
}

fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// CPU % between two readings of the same source.
pub fn cpu_percent(before: &Reading, after: &Reading) -> f64 {
    let used = after.cpu_used - before.cpu_used;
    let capacity = after.cpu_capacity - before.cpu_capacity;
    if capacity <= 0.0 || used < 0.0 {
        return 0.0;
    }
    (used / capacity * 100.0).clamp(0.0, 100.0)
}

pub fn memory_percent(reading: &Reading) -> f64 {
    if reading.memory_limit == 0 {
        return 0.0;
    }
    (reading.memory_used as f64 / reading.memory_limit as f64 * 100.0).clamp(0.0, 100.0)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The average of max(cpu, memory) % for each of the seven UTC days ending today, oldest first;
/// a day without samples counts 0.
pub fn server_load(samples: &[Sample], now: i64) -> [f64; 7] {
    let today = now.div_euclid(DAY_MS);
    let mut sums = [(0.0f64, 0u32); 7];
    for sample in samples {
        let age = today - sample.at.div_euclid(DAY_MS);
        if (0..7).contains(&age) {
            let slot = &mut sums[6 - age as usize];
            slot.0 += sample.cpu_percent.max(sample.memory_percent);
            slot.1 += 1;
        }
    }
    sums.map(|(sum, n)| if n == 0 { 0.0 } else { round2(sum / f64::from(n)) })
}

/// Availability over the last 24 hours in percent: minutes with a sample out of the minutes of the
/// window, which starts no earlier than the first sample ever taken.
pub fn availability(samples: &[Sample], first_sample_at: Option<i64>, now: i64) -> f64 {
    let Some(first) = first_sample_at else {
        return 0.0;
    };
    let start = (now - DAY_MS).max(first);
    let minutes_in_window = ((now - start + MINUTE_MS - 1) / MINUTE_MS).max(1);
    let mut minutes: Vec<i64> = samples
        .iter()
        .filter(|s| s.at >= start && s.at <= now)
        .map(|s| s.at.div_euclid(MINUTE_MS))
        .collect();
    minutes.dedup();
    round2((minutes.len() as f64 / minutes_in_window as f64 * 100.0).min(100.0))
}

/// The dashboard word for a load (the larger of CPU and memory %).
pub fn status_word(load: f64) -> &'static str {
    if load > 95.0 {
        "STRESSED"
    } else if load > 80.0 {
        "HEAVY_LOAD"
    } else if load < 30.0 {
        "STABILIZED"
    } else {
        "ACTIVE"
    }
}

/// The answer of `GET /api/dashboard/system-health`.
#[derive(Serialize, Debug)]
pub struct SystemHealth {
    pub status: &'static str,
    pub environment: &'static str,
    pub uptime: f64,
    pub server_load: [f64; 7],
    pub last_updated: String,
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub uptime_seconds: u64,
    pub container: Source,
}

/// The sampler's state and the last rendered answer.
pub struct Health {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    start: Instant,
    rendered: RwLock<Option<Bytes>>,
    /// Held while a request takes the first sample, so concurrent ones wait for it.
    first: tokio::sync::Mutex<()>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            start: Instant::now(),
            rendered: RwLock::new(None),
            first: tokio::sync::Mutex::new(()),
        }
    }
}

impl Health {
    pub fn rendered(&self) -> Option<Bytes> {
        self.rendered.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reading(&self) -> Option<Reading> {
        read(&self.cgroup_root, &self.proc_root, Instant::now(), self.start)
    }
}

/// Stores the sample between two readings, prunes old ones and renders the answer.
async fn record(state: &AppState, before: &Reading, after: &Reading) -> Result<(), StoreError> {
    let now = now_ms();
    let sample = Sample {
        at: now,
        cpu_percent: round2(cpu_percent(before, after)),
        memory_percent: round2(memory_percent(after)),
    };
    {
        let mut writer = state.store.write_conn().await?;
        metrics::insert_sample(&mut writer, &sample).await?;
        metrics::prune_samples(&mut writer, now - 8 * DAY_MS, 1000).await?;
    }
    let mut conn = state.store.conn().await?;
    let history = metrics::samples_since(&mut conn, (now.div_euclid(DAY_MS) - 6) * DAY_MS).await?;
    let first = metrics::first_sample_at(&mut conn).await?;
    drop(conn);
    let body = SystemHealth {
        status: status_word(sample.cpu_percent.max(sample.memory_percent)),
        environment: if state.settings.is_production() {
            "PROD"
        } else {
            "DEV"
        },
        uptime: availability(&history, first, now),
        server_load: server_load(&history, now),
        last_updated: rfc3339(now),
        cpu_percent: sample.cpu_percent,
        memory_percent: sample.memory_percent,
        memory_used_bytes: after.memory_used,
        memory_limit_bytes: after.memory_limit,
        uptime_seconds: state.started_at.elapsed().as_secs(),
        container: after.source,
    };
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    *state
        .server_health
        .rendered
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(bytes);
    Ok(())
}

/// One sample with CPU measured over `window`, unless the background loop has rendered one first;
/// for a request that arrives before the first background sample. Requests that arrive together
/// share one sample.
pub async fn sample_now(state: &AppState, window: Duration) -> Result<(), StoreError> {
    let _only_one = state.server_health.first.lock().await;
    if state.server_health.rendered().is_some() {
        return Ok(());
    }
    let Some(before) = state.server_health.reading() else {
        return Ok(());
    };
    tokio::time::sleep(window).await;
    match state.server_health.reading() {
        Some(after) => record(state, &before, &after).await,
        None => Ok(()),
    }
}

/// Samples one second after start and then on a fixed one-minute beat (each sample's CPU covers
/// the time since the previous reading), so 24 hours hold 1,440 samples.
pub async fn sample_loop(state: AppState, shutdown: CancellationToken) {
    let mut previous = state.server_health.reading();
    let mut beat =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), SAMPLE_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = beat.tick() => {}
        }
        let current = state.server_health.reading();
        match (&previous, &current) {
            (Some(before), Some(after)) => {
                if let Err(err) = record(&state, before, after).await {
                    tracing::warn!(error = %err, "system health sample failed; will retry");
                }
            }
            _ if !warned => {
                tracing::warn!("cannot read CPU and memory figures; system health has no sample");
                warned = true;
            }
            _ => {}
        }
        previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, cpu: f64, memory: f64) -> Sample {
        Sample {
            at,
            cpu_percent: cpu,
            memory_percent: memory,
        }
    }

    #[test]
    fn server_load_averages_the_larger_figure_per_utc_day_oldest_first() {
        let now = 10 * DAY_MS + 3_600_000; // one hour into day 10
        let samples = [
            sample(10 * DAY_MS - 60_000, 10.0, 50.0), // day 9, a minute before midnight
            sample(10 * DAY_MS + 60_000, 90.0, 20.0), // day 10
            sample(10 * DAY_MS + 120_000, 10.0, 30.0), // day 10
            sample(4 * DAY_MS - 1, 80.0, 0.0),        // day 3: a week ago, left out
            sample(4 * DAY_MS, 40.0, 0.0),            // day 4: the oldest of the seven
        ];
        assert_eq!(server_load(&samples, now), [40.0, 0.0, 0.0, 0.0, 0.0, 50.0, 60.0]);
    }

    #[test]
    fn availability_counts_minutes_with_a_sample_since_the_first_one() {
        let now = 100 * DAY_MS;
        // Started 10 minutes ago: 10 minutes in the window, 4 of them sampled (a gap of five).
        let start = now - 10 * MINUTE_MS;
        let samples: Vec<Sample> = [0, 1, 2, 8]
            .iter()
            .map(|m| sample(start + m * MINUTE_MS, 1.0, 1.0))
            .collect();
        assert_eq!(availability(&samples, Some(start), now), 40.0);
        // One sample a minute over the whole window is 100 %, even when each came a little late.
        let late: Vec<Sample> = (0..10)
            .map(|m| sample(start + m * MINUTE_MS + 900, 1.0, 1.0))
            .collect();
        assert_eq!(availability(&late, Some(start), now), 100.0);
        // Older history caps the window at 24 hours.
        let every_minute: Vec<Sample> = (1..=1440)
            .map(|m| sample(now - m * MINUTE_MS + 1, 1.0, 1.0))
            .collect();
        assert_eq!(availability(&every_minute, Some(0), now), 100.0);
        assert_eq!(availability(&[], None, now), 0.0);
    }

    #[test]
    fn the_status_word_follows_the_larger_load() {
        assert_eq!(status_word(96.0), "STRESSED");
        assert_eq!(status_word(95.0), "HEAVY_LOAD");
        assert_eq!(status_word(81.0), "HEAVY_LOAD");
        assert_eq!(status_word(80.0), "ACTIVE");
        assert_eq!(status_word(30.0), "ACTIVE");
        assert_eq!(status_word(29.9), "STABILIZED");
    }

    fn fixture(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("hyprbox-health-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, content) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    const MEMINFO: &str = "MemTotal: 8000000 kB\nMemAvailable: 6000000 kB\n";

    #[test]
    fn a_v2_container_is_measured_against_its_own_limits() {
        let cg = fixture(
            "v2",
            &[
                ("memory.max", "1073741824\n"),
                ("memory.current", "536870912\n"),
                ("memory.stat", "inactive_file 0\n"),
                ("cpu.max", "50000 100000\n"),
                ("cpu.stat", "usage_usec 1000000\n"),
            ],
        );
        let proc_root = fixture("v2-proc", &[("meminfo", MEMINFO)]);
        let start = Instant::now();
        let reading = read(&cg, &proc_root, start + Duration::from_secs(4), start).unwrap();
        assert_eq!(reading.source, Source::CgroupV2);
        assert_eq!(memory_percent(&reading), 50.0);
        assert_eq!(reading.memory_limit, 1 << 30);
        std::fs::write(cg.join("cpu.stat"), "usage_usec 1500000\n").unwrap();
        let later = read(&cg, &proc_root, start + Duration::from_secs(5), start).unwrap();
        // 0.5 s of CPU in 1 s against a limit of half a CPU: fully used.
        assert_eq!(cpu_percent(&reading, &later), 100.0);
    }

    #[test]
    fn a_v1_container_is_measured_against_its_own_limits() {
        let cg = fixture(
            "v1",
            &[
                ("memory/memory.limit_in_bytes", "2147483648\n"),
                ("memory/memory.usage_in_bytes", "536870912\n"),
                ("memory/memory.stat", "total_inactive_file 0\n"),
                ("cpuacct/cpuacct.usage", "1000000000\n"),
            ],
        );
        let proc_root = fixture("v1-proc", &[("meminfo", MEMINFO)]);
        let start = Instant::now();
        let reading = read(&cg, &proc_root, start, start).unwrap();
        assert_eq!(reading.source, Source::CgroupV1);
        assert_eq!(memory_percent(&reading), 25.0);
    }

    #[test]
    fn without_cgroup_limits_the_host_figures_are_used() {
        let cg = fixture("none", &[]);
        let proc_root = fixture(
            "none-proc",
            &[("meminfo", MEMINFO), ("stat", "cpu  100 0 100 800 0 0 0 0 0 0\n")],
        );
        let start = Instant::now();
        let before = read(&cg, &proc_root, start, start).unwrap();
        assert_eq!(before.source, Source::Host);
        assert_eq!(memory_percent(&before), 25.0);
        std::fs::write(proc_root.join("stat"), "cpu  150 0 150 900 0 0 0 0 0 0\n").unwrap();
        let after = read(&cg, &proc_root, start, start).unwrap();
        assert_eq!(cpu_percent(&before, &after), 50.0);
    }
}
